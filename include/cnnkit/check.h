/*
 * cnnkit model check: static diagnostics on the order of layers in a Sequential model
 * (Dropout / SpatialDropout2D / BatchNormalization / activation / pooling placement).
 *
 * Each finding has a stable code ("CK001-dropout-before-bn", ...), a severity, the 0-based
 * indices of the layers involved, a one-line message, the reason with the number behind it
 * (value) and a concrete fix: the reordered layer sequence, in Keras syntax.
 *
 * Codes (the number part never changes meaning):
 *   CK001-dropout-before-bn         warning  (Spatial)Dropout feeds BatchNormalization directly or
 *                                            through Activation / pooling / Flatten: variance
 *                                            shift, value = Li et al. 2019 Eq. 8 ratio
 *   CK002-dropout-weight-bn         info     the same with Conv2D/Dense in between (Eq. 14:
 *                                            smaller shift, not zero), value = the direct ratio
 *   CK003-dropout-before-maxpool    warning  element-wise Dropout right before MaxPooling2D,
 *                                            value = training mean inflation (1-q^n)/(1-q)
 *   CK004-spatialdrop-before-pool   info     SpatialDropout2D before pooling: equivalent after,
 *                                            value = how many times fewer elements after
 *   CK005-dropout-relu-order        info     Dropout next to ReLU / LeakyReLU: order does not
 *                                            matter, value = max difference (ReLU) or 1/p
 *   CK006-dropout-before-sigmoid    warning  dropped units become sigmoid(0) = 0.5 (value)
 *   CK007-dropout-before-nonlinear  warning  tanh / ELU / GELU / swish after Dropout: the 1/p
 *                                            scaling is distorted, value = train/eval mean ratio
 *                                            p*f(x/p)/f(x) at x = 1 (x = -1 for ELU)
 *   CK008-bias-before-bn            info     Conv2D/Dense bias followed by BN is redundant,
 *                                            value = wasted parameters
 *   CK009-bn-after-output           error    BatchNormalization after the softmax / as the output
 *   CK010-dropout-on-output         error    Dropout after the last Conv2D/Dense (on logits or
 *                                            probabilities), value = rate
 *   CK011-spatial-dropout-flat      error    SpatialDropout2D on a non-spatial tensor (after
 *                                            Flatten / Dense / GlobalAveragePooling2D)
 *   CK012-double-dropout            warning  two dropouts in a row, value = combined rate
 *   CK013-double-activation         warning  the same activation twice in a row, value = ReLU 0
 *                                            (no-op), LeakyReLU alpha^2, sigmoid/tanh the new
 *                                            output bound f(1), others f(f(1))
 * Dropout layers with rate <= 0 are no-ops and are ignored.
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
    char reason[512];  /* why, with the number behind it */
    char fix[512];     /* the reordered sequence, Keras syntax */
    double value;      /* the number behind the finding (see the code list above) */
} ck_finding;

/* Checks count layers. Writes the first min(cap, total) findings to out (ordered by layer) and
 * the total into *n_found; out may be NULL when cap is 0 (a count query).
 * CK_STATUS_BAD_PARAM: n_found NULL, count < 0, layers NULL with count > 0, cap < 0, out NULL
 * with cap > 0, or a layer with an unknown type. CK_STATUS_ALLOC_FAILED when out of memory. */
ck_status ck_model_check(const ck_layer_desc *layers, int count, ck_finding *out, int cap,
                         int *n_found);

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
 * Variances are biased (population) variances over N*H*W values per channel and batch, averaged
 * over the batches; the report gives the mean, min and max over channels (channels whose
 * training-mode variance is 0 are skipped).
 *
 * Dropout effect: for each Dropout / SpatialDropout2D layer, in training mode, the fraction of
 * values the mask actually zeroes where the tensor is consumed. When the dropout reaches a
 * MaxPooling2D / AveragePooling2D through nothing but activations with f(0) = 0, it is counted
 * after that pooling: pooled outputs that are 0 with the mask and nonzero without it, over the
 * pooled outputs that are nonzero without it (element Dropout before a k x k max pool on
 * positive inputs: rate^(k*k); SpatialDropout2D: rate). Otherwise at the dropout's output: values
 * zeroed over nonzero inputs (rate).
 * ------------------------------------------------------------------------------------------- */
struct ck_dataset; /* cnnkit/data.h */

#define CK_MEASURE_MAX 64

typedef struct ck_bn_shift {
    int layer;    /* the BatchNormalization layer */
    int channels; /* of its input */
    /* converged (momentum-free): Var_inference / Var_train, mean, min, max over channels */
    double ratio, ratio_min, ratio_max;
    /* as stored: Var_inference on the stored statistics / the stored moving variance */
    double ratio_moving, ratio_moving_min, ratio_moving_max;
    /* momentum^(model steps): the weight the moving statistics still give their initial values */
    double moving_init_weight;
    /* means over channels: training-mode variance, inference-mode variance at convergence, the
     * same on the stored statistics, the stored moving variance */
    double var_train, var_inference, var_inference_stored, var_moving;
    int dropout_layer; /* the dropout ck_model_check links to this BN (CK001/CK002), -1 none */
    int direct;        /* 1: CK001 (dropout feeds the BN directly), 0: CK002 or none */
    double expected;   /* the check's value: CK001 the predicted ratio (Li et al. Eq. 8); CK002
                          the direct ratio, a lower bound (the real one lies between it and 1);
                          NaN when no dropout reaches this BN */
} ck_bn_shift;

typedef struct ck_dropout_effect {
    int layer;       /* the Dropout / SpatialDropout2D layer */
    int spatial;     /* 1 for SpatialDropout2D */
    double rate;     /* its rate */
    int pool_layer;  /* the pooling layer it is counted after, -1: counted at the dropout output */
    int pool_window; /* kh * kw of that pooling (1 when none) */
    double zeroed;   /* measured fraction (see above) */
    double expected; /* rate^(kh*kw) for element Dropout before a pool, else rate */
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
