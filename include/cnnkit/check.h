/*
 * cnnkit model check: static diagnostics on the order of layers in a model (Sequential, or a
 * layer graph: CK015-CK017 are the residual rules)
 * (Dropout / SpatialDropout2D / BatchNormalization / activation / pooling placement).
 *
 * Each finding has a stable code ("CK001-dropout-before-bn", ...), a severity, the 0-based
 * indices of the layers involved, a one-line message, the reason with the number behind it
 * (value) and a concrete fix: the reordered layer sequence, in Keras syntax.
 *
 * Codes (the number part never changes meaning). Every reason cites its source: a paper, or the
 * derivation in docs/derivations.md by section (§).
 *   CK001-dropout-before-bn         warning  (Spatial)Dropout reaches BatchNormalization through no
 *                                            weight layer (activations, pooling, Flatten,
 *                                            GlobalAveragePooling2D, ZeroPadding2D, Rescaling,
 *                                            Add, Concatenate between, any number, along every
 *                                            path of a layer graph; §1, §2, §8): variance
 *                                            shift. value = 1 - rate, the ceiling of
 *                                            Var_inference/Var_train (Li et al. 2019 Eq. 8, §1)
 *                                            when the mask commutes with every layer between and
 *                                            no earlier dropout shifts the dropout's input; NaN
 *                                            otherwise (element dropout averaged or max-pooled,
 *                                            non-homogeneous activations, an activation after a
 *                                            Rescaling offset: §2, §3, §8; compounding, an
 *                                            earlier dropout on any path of the graph: §1)
 *   CK002-dropout-weight-bn         info     the same through Conv2D/Dense layers: the shift stays
 *                                            below 1 through linear layers and has no bound
 *                                            towards the direct value (§2, §3); value = the weight
 *                                            layers between. The fix moves the dropout after the
 *                                            model's last BN (Li et al. fix (i))
 *   CK003-dropout-before-maxpool    warning  element Dropout before MaxPooling2D, directly or
 *                                            through activations with f(0) = 0 (and Rescalings by
 *                                            a positive scale, no offset: §8; zero padding): zeroed
 *                                            fraction rate^J per window with J positive inputs,
 *                                            all-negative windows zeroed with 1-(1-rate)^n (§4);
 *                                            value = the largest training-mean inflation
 *                                            (1-q^n)/(1-q) of a window of non-negative inputs, NaN
 *                                            through tanh/ELU/GELU/swish (no bound there, §4)
 *   CK004-spatialdrop-before-pool   info     SpatialDropout2D before pooling (directly or through
 *                                            ReLU/LeakyReLU, zero padding): equivalent after (§5),
 *                                            value = the pool's stride product, about how many
 *                                            times fewer elements after
 *   CK005-dropout-relu-order        info     Dropout next to ReLU / LeakyReLU: order does not
 *                                            matter, value = max difference (ReLU) or 1/p (§6);
 *                                            bit-exact when alpha or 1/p is a power of two
 *   CK006-dropout-before-sigmoid    warning  dropped units become sigmoid(0) = 0.5 (value; §6)
 *   CK007-dropout-before-nonlinear  warning  tanh / ELU / GELU / swish after Dropout: the 1/p
 *                                            scaling is distorted, value = train/eval mean ratio
 *                                            p*f(x/p)/f(x) at x = 1 (x = -1 for ELU; §6)
 *   CK008-bias-before-bn            info     Conv2D/Dense bias followed by BN is redundant,
 *                                            value = wasted parameters (Ioffe & Szegedy 2015)
 *   CK009-bn-after-output           error    BatchNormalization after the softmax (no weight layer
 *                                            between) / as the output
 *   CK010-dropout-on-output         error    Dropout after the last Conv2D/Dense (on logits or
 *                                            probabilities, softmax or sigmoid), value = rate (§7)
 *   CK011-spatial-dropout-flat      error    SpatialDropout2D on a non-spatial tensor (after
 *                                            Flatten / Dense / GlobalAveragePooling2D)
 *   CK012-double-dropout            warning  two dropouts in a row, value = combined rate (§7)
 *   CK013-double-activation         warning  the same activation twice in a row, value = ReLU 0
 *                                            (no-op), LeakyReLU alpha1*alpha2, sigmoid/tanh the
 *                                            new output bound f(1), ELU f(f(-1)), others f(f(1))
 *                                            (§7)
 *   CK014-shape-error               error    (ck_model_check_shapes only) the model does not build
 *                                            for its input shape: ck_model_build's own message,
 *                                            value = build's ck_status
 * Residual units (an Add; He et al. 2016, arXiv:1603.05027, Table 2):
 *   CK015-bn-after-add              warning  a BN right after an Add whose result is the next
 *                                            unit's shortcut (8.17% vs 6.61% test error)
 *   CK016-relu-before-add           warning  a residual branch ending in a ReLU read by the Add
 *                                            alone, the Add's other input its shortcut (identity,
 *                                            or a projection without activation): the branch can
 *                                            only add (7.84% vs 6.61%)
 *   CK017-dropout-on-shortcut       warning  a (Spatial)Dropout on the shortcut, read by the Add
 *                                            alone, value = rate
 * Dropout layers with rate <= 0 are no-ops: the rules read through them as if absent.
 */
#ifndef CNNKIT_CHECK_H
#define CNNKIT_CHECK_H

#include "cnnkit/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ck_severity {
    CK_SEVERITY_INFO = 0,
    CK_SEVERITY_WARNING = 1,
    CK_SEVERITY_ERROR = 2
} ck_severity;

typedef struct ck_finding {
    char code[32]; /* stable code, e.g. "CK001-dropout-before-bn" */
    int severity;  /* ck_severity */
    int layers[4]; /* 0-based layer indices involved, nlayers of them */
    int nlayers;
    char message[256]; /* one line */
    char reason[768];  /* why, with the number behind it and its source */
    char fix[512];     /* the reordered sequence, Keras syntax */
    double value;      /* the number behind the finding (see the code list above) */
} ck_finding;

/* Checks count layers. Writes the first min(cap, total) findings to out (ordered by layer) and
 * the total into *n_found; out may be NULL when cap is 0 (a count query).
 * CK_STATUS_BAD_PARAM: n_found NULL, count < 0, layers NULL with count > 0, cap < 0, out NULL
 * with cap > 0, or a layer with an unknown type. CK_STATUS_ALLOC_FAILED when out of memory. */
ck_status ck_model_check(const ck_layer_desc *layers, int count, ck_finding *out, int cap,
                         int *n_found);

/* The shape inference of ck_model_build (the one `cnnkit summary` and `train` run), without
 * allocating the model's buffers: for input h x w x c (all 0: the first layer's input_shape),
 * *n_found = 1 and one CK014-shape-error finding in *out (its message is build's, layers[0] the
 * layer named in it) when the model does not build for that shape, else *n_found = 0.
 * CK_STATUS_BAD_PARAM: NULL arguments, count < 1, a negative or partly zero shape, or no shape
 * at all (0 x 0 x 0 and no input_shape). CK_STATUS_ALLOC_FAILED when out of memory. */
ck_status ck_model_check_shapes(const ck_layer_desc *layers, int count, int h, int w, int c,
                                ck_finding *out, int *n_found);

/* The rule that needs the data the model will be given, values in [lo, hi] (cnnkit's loaders:
 * [0, 1]; 0..255 pixels as stored: [0, 255]):
 *   CK018-rescale-on-scaled-data    warning  a Rescaling that reads the model input with scale
 *                                            about 1/255 or 2/255 (Keras's documented scales for
 *                                            0..255 pixels: 1./255 to [0, 1], 1./127.5 with
 *                                            offset -1 to [-1, 1]; within 5%) while the data are
 *                                            already in a unit range (lo >= -1, hi <= 1): the
 *                                            values are scaled twice. value = |scale| * (hi - lo),
 *                                            the span of the layer's output on these data (1 or 2
 *                                            intended). The fix: 0..255 pixels (the CLI's --pixels
 *                                            raw), or the layer rewritten (or removed) for the data
 * Writes the first min(cap, total) findings to out and the total into *n_found, as
 * ck_model_check. CK_STATUS_BAD_PARAM as ck_model_check, and for lo or hi not finite or
 * lo >= hi. */
ck_status ck_model_check_data(const ck_layer_desc *layers, int count, float lo, float hi,
                              ck_finding *out, int cap, int *n_found);

/* "info", "warning", "error"; NULL for anything else. */
const char *ck_severity_name(int severity);

/* ---------------------------------------------------------------------------------------------
 * Measurements on a model trained on data (ck_model_measure): what the static rules above
 * predict, as it comes out.
 *
 * BN variance shift: for each BatchNormalization layer, per channel of its input (Li et al.
 * 2019's Delta = Var_inference / Var_train), two ways:
 *   ratio_moving = Var_inference / the BN's stored moving variance, with the model as it is:
 *                  every BN in inference mode on its stored moving statistics. This is the shift
 *                  the model applies now. With Keras' momentum 0.99 a moving statistic still gives
 *                  its initial value (variance 1) the weight momentum^steps (moving_init_weight):
 *                  after a few steps this number is dominated by unconverged moving statistics
 *                  (of this BN and of every BN before it), not by dropout.
 *   ratio        = the same at convergence, momentum-free: the training-mode statistics of every
 *                  BN input are measured on the batches (weights fixed; batch means and biased
 *                  batch variances, averaged over the batches: what the moving averages converge
 *                  to), the copy's moving statistics are set to them, and Var_inference is
 *                  measured again: ratio = Var_inference / Var_train. This is the shift dropout
 *                  (and nothing else) causes; 1 for a BN no dropout reaches.
 *   predicted    = where a dropout reaches the BN through layers that commute with its mask and
 *                  no earlier dropout shifts the dropout's input (CK001 with a value): Li et al.'s
 *                  Eq. 8 per channel, v / ((c^2 + v)/p - c^2), from the inference-mode mean c
 *                  and variance v of the BN input (the converged pass) and p = 1 - rate of the
 *                  dropout reaching that channel; the expected ratio (docs/derivations.md §1). NaN
 * elsewhere: through averaging or weight layers (§2), nonlinear layers (§3) or after an earlier
 * dropout (§1) no prediction is made and only the measurement holds. Variances are biased
 * (population) variances over N*H*W values per channel and batch, averaged over the batches; the
 * report gives the mean, min and max over channels (channels whose training-mode variance is 0 are
 * skipped): over the channels the linked dropouts reach when any is linked (a Concatenate places
 * others, with ratio 1, beside them), else over all. The shift is "compounded" when two dropouts
 * reach one of those channels, on any path.
 *
 * Dropout effect: for each Dropout / SpatialDropout2D layer, in training mode, the fraction of
 * values the mask actually zeroes where the tensor is consumed. When the dropout reaches a
 * MaxPooling2D / AveragePooling2D through nothing but activations with f(0) = 0, it is counted
 * after that pooling: pooled outputs that are 0 with the mask and nonzero without it, over the
 * pooled outputs that are nonzero without it. Otherwise at the dropout's output: values zeroed
 * over nonzero inputs. Next to it, the expected fraction from the same inputs without the mask
 * (docs/derivations.md §4, §5): SpatialDropout2D and the no-pool case rate; element Dropout
 * before a max pool rate^J for a window with J > 0 positive inputs and 1 - (1-rate)^n for a
 * window of n negative ones; before an average pool rate^J for J nonzero inputs.
 * ------------------------------------------------------------------------------------------- */
struct ck_dataset; /* cnnkit/data.h */

#define CK_MEASURE_MAX 64
#define CK_BN_DROPOUTS_MAX 8 /* the dropouts a ck_bn_shift lists */

typedef struct ck_bn_shift {
    int layer;    /* the BatchNormalization layer */
    int channels; /* of its input */
    int reached;  /* the channels the means run over: those the linked dropouts reach, else all */
    /* converged (momentum-free): Var_inference / Var_train, mean, min, max over channels */
    double ratio, ratio_min, ratio_max;
    /* as stored: Var_inference on the stored statistics / the stored moving variance */
    double ratio_moving, ratio_moving_min, ratio_moving_max;
    /* momentum^(model steps): the weight the moving statistics still give their initial values */
    double moving_init_weight;
    /* means over channels: training-mode variance, inference-mode variance at convergence, the
     * same on the stored statistics, the stored moving variance */
    double var_train, var_inference, var_inference_stored, var_moving;
    int dropout_layer; /* the first dropout ck_model_check links to this BN (CK001/CK002), -1
                          none */
    int n_dropouts;    /* the dropouts linked to it (several when a Concatenate joins dropped
                          branches): their layers in dropout_layers[0 .. CK_BN_DROPOUTS_MAX) */
    int dropout_layers[CK_BN_DROPOUTS_MAX];
    int direct;       /* 1: CK001 (no weight layer between, for every linked dropout), 0: CK002
                         or none */
    int path;         /* how the masks reach the BN: 0 commute with every layer between, 1
                         linear layers (§2), 2 nonlinear (§3) (the largest over the linked
                         dropouts); -1 no dropout */
    int compounded;   /* two dropouts reach one of its channels (an earlier one on any path, or
                         one summed in by an Add): the shifts multiply (§1) */
    double ceiling;   /* for path 0 without compounding, the mean over the measured channels
                         of 1 - rate of the dropout reaching each (1 - rate for one dropout; Eq.
                         8: ratio <= ceiling up to sampling error), else NaN */
    double predicted; /* Eq. 8 from this BN input's inference-mode moments (see above), NaN
                         where no prediction is made */
} ck_bn_shift;

typedef struct ck_dropout_effect {
    int layer;       /* the Dropout / SpatialDropout2D layer */
    int spatial;     /* 1 for SpatialDropout2D */
    double rate;     /* its rate */
    int pool_layer;  /* the pooling layer it is counted after, -1: counted at the dropout output */
    int pool_window; /* kh * kw of that pooling (1 when none) */
    double zeroed;   /* measured fraction (see above) */
    double expected; /* the expected zeroed fraction given the inputs (see above) */
    long long counted; /* the denominator: values nonzero without the mask */
} ck_dropout_effect;

typedef struct ck_measurement {
    int n_bn, n_dropout; /* totals; only the first CK_MEASURE_MAX of each are stored */
    ck_bn_shift bn[CK_MEASURE_MAX];
    ck_dropout_effect dropout[CK_MEASURE_MAX];
    int train_steps;      /* training steps ck_model_measure took first (opts->train_batches) */
    long long model_step; /* the model's step counter when measured */
    int batches, batch;   /* measured on batches x batch samples */
} ck_measurement;

typedef struct ck_measure_options {
    int train_batches; /* training steps (ck_model_train_step) on data before measuring: 0 */
    int batches;       /* measurement batches: 0 = 4 */
    int batch;         /* samples per batch: 0 = the model's max_batch (at most max_batch) */
    uint64_t seed;     /* sample order (ck_dataset_shuffle): 0 = the context seed */
} ck_measure_options;

/* Measures model (built) on data (images of the model's input shape, labels < classes): takes
 * opts->train_batches training steps on model (they change it, as ck_model_train_step does),
 * then measures on an unplanned CPU copy of it (same layers, weights, moving statistics, step),
 * which leaves model untouched. opts NULL: defaults. On success *out is overwritten.
 * CK_STATUS_BAD_PARAM / SHAPE_MISMATCH name the argument in ck_context_last_error of the model's
 * context; nothing is written to out on failure. */
ck_status ck_model_measure(ck_model *model, const struct ck_dataset *data,
                           const ck_measure_options *opts, ck_measurement *out);

#ifdef __cplusplus
}
#endif
#endif /* CNNKIT_CHECK_H */
