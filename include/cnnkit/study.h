/*
 * cnnkit order study: the orders of Conv2D / BatchNormalization / Activation / MaxPooling2D /
 * (Spatial)Dropout in each Conv block of a model, trained side by side over several seeds.
 *
 * Conv blocks: the layer list is cut before every Conv2D that follows a pooling layer (or starts
 * the model); a block runs up to the next such Conv2D or to the first Flatten /
 * GlobalAveragePooling2D / Dense. The dense head is never changed. Inline activations of the
 * block's Conv2D layers are written as Activation layers (the same computation).
 *
 * Variant kinds (what each does to every Conv block; a block without the layers involved is left
 * as it is):
 *   original               the model as given
 *   asker                  the block's dropouts become one SpatialDropout2D (the largest rate)
 *                          right after the block's last Conv2D: Conv-SpatialDropout-BN-Act-Pool
 *                          (Stack Overflow q/59634780)
 *   bn-after-relu          every BatchNormalization directly before an Activation moves after it
 *   dropout-before-pool    the block's dropouts move to just before its pooling layer
 *   spatial-dropout        element Dropout becomes SpatialDropout2D (same place, same rate)
 *   dropout-after-last-bn  every dropout followed (anywhere later) by a BatchNormalization is
 *                          removed (Li et al. 2019 fix (i)); when none then remains after the
 *                          last BN, one Dropout of the largest removed rate goes before the last
 *                          weight layer
 * Exact equivalences: two variants are equivalent when their canonical forms are equal: inline
 * activations written as layers, dropouts of rate 0 and linear activations removed, then
 * adjacent pairs swapped into one order until none applies: SpatialDropout2D before
 * MaxPooling2D / AveragePooling2D -> after it (one scale per channel commutes with pooling:
 * equal in exact arithmetic, not bit-exact), Dropout / SpatialDropout2D before ReLU -> after it
 * (relu(m x) = m relu(x) for m >= 0: equal values). An equivalence is as exact as the weakest
 * rule it needs (ck_study_variant.exactness).
 *
 * Conventions: statuses; err (err_len bytes, may be 0) gets a message naming the argument on
 * failure and "" on success; nothing prints; progress through a callback.
 */
#ifndef CNNKIT_STUDY_H
#define CNNKIT_STUDY_H

#include "cnnkit/check.h"
#include "cnnkit/data.h"
#include "cnnkit/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ck_study_kind {
    CK_STUDY_ORIGINAL = 0,
    CK_STUDY_ASKER = 1,
    CK_STUDY_BN_AFTER_RELU = 2,
    CK_STUDY_DROPOUT_BEFORE_POOL = 3,
    CK_STUDY_SPATIAL_DROPOUT = 4,
    CK_STUDY_DROPOUT_AFTER_LAST_BN = 5,
    CK_STUDY_STACK_KIND_COUNT = 6, /* kinds 0 .. 5 reorder the Conv blocks of a stack */
    /* the residual placements (ck_resid_placement, below) of a post-activation ResNet graph:
     * kind CK_STUDY_BN_AFTER_ADD + p - 1 is placement p */
    CK_STUDY_BN_AFTER_ADD = 6,
    CK_STUDY_RELU_BEFORE_ADD = 7,
    CK_STUDY_RELU_PREACT = 8,
    CK_STUDY_FULL_PREACT = 9,
    CK_STUDY_KIND_COUNT = 10
} ck_study_kind;

/* "original", "asker", "bn-after-relu", "dropout-before-pool", "spatial-dropout",
 * "dropout-after-last-bn", "bn-after-add", "relu-before-add", "relu-preact", "full-preact";
 * NULL for anything else. */
const char *ck_study_kind_name(int kind);
/* The kind of a name above, -1 when unknown. */
int ck_study_kind_from_name(const char *name);
/* The kinds studied when none are named (kinds[], CK_STUDY_KIND_COUNT entries; returns how many):
 * a stack gets the six stack kinds; a layer graph whose every Add ends a post-activation
 * residual unit gets 'original' and the four placements; any other graph 'original' only. */
int ck_study_default_kinds(const ck_layer_desc *layers, int count, int *kinds);

typedef struct ck_study_variant {
    int kind;              /* ck_study_kind */
    char name[32];         /* ck_study_kind_name */
    char order[256];       /* the Conv blocks, e.g. "C-B-R-P-D ; C-S-B-R-P", or "2x C-B-R-P-D" when
                              the blocks agree (C Conv2D,
                              B BN, R/A activation, P pooling, D Dropout, S SpatialDropout2D);
                              on a residual graph one unit, e.g. "9x B-R-C-B-R-C + x" (x: the
                              shortcut) */
    ck_layer_desc *layers; /* count layers, owned (ck_study_variants_free); names cleared */
    int count;
    int equivalent_to;      /* index of an earlier variant with the same canonical form, -1 none */
    char equivalence[256];  /* how, when equivalent_to >= 0 */
    ck_exactness exactness; /* of that equivalence: the weakest rule it needs (CK_EXACT_BITS for
                               the same list); CK_EXACT_NONE when equivalent_to < 0 */
} ck_study_variant;

/* Makes the variants of kinds[0..nkinds) (kinds NULL: ck_study_default_kinds, out then needs
 * CK_STUDY_KIND_COUNT entries and the unused ones are zeroed) of the model `layers` into out,
 * and marks each one that is exactly equivalent to an earlier one (on a graph: only the same
 * list). CK_STATUS_BAD_PARAM: NULL layers or out, count < 1, an unknown kind or layer type, a
 * kind listed twice, a stack kind other than CK_STUDY_ORIGINAL on a layer graph (a layer
 * reading anything but the layer before it: those variants reorder stacks), or a residual
 * placement on a model whose Adds are not all post-activation units (err names the layer). On
 * failure out is left with no allocations. */
ck_status ck_study_variants(const ck_layer_desc *layers, int count, const int *kinds, int nkinds,
                            ck_study_variant *out, char *err, size_t err_len);
void ck_study_variants_free(ck_study_variant *v, int n);

/* Residual placements of He et al. 2016 ("Identity Mappings in Deep Residual Networks", Fig. 4)
 * for a post-activation (v1) ResNet in graph form, whose every Add reads a branch
 * Conv2D-BN-ReLU-Conv2D-BN and a shortcut and is read by exactly one ReLU Activation:
 *   CK_RESID_ORIGINAL         (a) y = relu(bn(conv(..)) + s(x)): the model as given
 *   CK_RESID_BN_AFTER_ADD     (b) the branch's last BN moves after the Add: relu(bn(.. + s(x)))
 *   CK_RESID_RELU_BEFORE_ADD  (c) the ReLU after the Add moves onto the branch: relu(bn(..)) + s(x)
 *   CK_RESID_RELU_PREACT      (d) the ReLU after the Add is removed and a ReLU goes before the
 *                             branch's first Conv2D: bn(conv(relu(bn(conv(relu(x)))))) + s(x)
 *                             (the shortcut, identity or projection, reads x itself)
 *   CK_RESID_FULL_PREACT      (e) the branch's last BN and the ReLU after the Add become one
 *                             BN-ReLU before the branch's first Conv2D: conv(relu(bn(conv(
 *                             relu(bn(x)))))) + s(x); a 1x1 projection shortcut reads that
 *                             BN-ReLU too, an identity one x. A stem BN-ReLU right before the
 *                             first unit moves after the last Add (He et al. Sec. 4.1: the
 *                             extra activation after the last unit); without one, a copy of the
 *                             last unit's BN and ReLU goes there. On examples/resnet20_v1.py
 *                             this gives examples/resnet20_v2.py layer for layer.
 * (b)-(d) keep every layer's parameter count (a moved BN keeps its channel count); (e) moves BNs
 * across channel changes, which on ResNets like resnet20_v1 nets out (274,154 either way). These
 * change the model (they are not equivalences). */
typedef enum ck_resid_placement {
    CK_RESID_ORIGINAL = 0,
    CK_RESID_BN_AFTER_ADD = 1,
    CK_RESID_RELU_BEFORE_ADD = 2,
    CK_RESID_RELU_PREACT = 3,
    CK_RESID_FULL_PREACT = 4
} ck_resid_placement;

/* *out (*out_count layers, free with ck_study_residual_free) gets the placement of `layers`,
 * every layer in explicit graph form (num_inputs >= 1), names cleared. CK_STATUS_BAD_PARAM (err
 * names the layer) when an Add is not such a unit or there is none; *out NULL on failure. */
ck_status ck_study_residual_variant(const ck_layer_desc *layers, int count, int placement,
                                    ck_layer_desc **out, int *out_count, char *err, size_t err_len);
void ck_study_residual_free(ck_layer_desc *layers);

/* *equal = 1 when the canonical forms of a and b are equal (see above); why (optional) names
 * the rewrites used. CK_STATUS_BAD_PARAM (why says which) when a or b is a layer graph. */
ck_status ck_study_equivalent(const ck_layer_desc *a, int na, const ck_layer_desc *b, int nb,
                              int *equal, char *why, size_t why_len);

/* ---- statistics --------------------------------------------------------------------------- */
/* The 0.975 quantile of Student's t with dof degrees of freedom (dof >= 1; NaN otherwise). */
double ck_student_t975(int dof);
/* Mean and 95% interval half-width (t quantile with n-1 dof times sd/sqrt(n)) of x[0..n):
 * n >= 1; half = NaN when n == 1. sd (optional): the sample standard deviation (NaN for n = 1). */
ck_status ck_mean_ci95(const double *x, int n, double *mean, double *half, double *sd);

/* ---- the runner -------------------------------------------------------------------------- */
#define CK_STUDY_MAX_MEASURE 16

typedef struct ck_study_result {
    int variant;                     /* index into the variant list */
    uint64_t seed;                   /* context and shuffling seed */
    double test_accuracy, test_loss; /* inference mode, the whole test set */
    double train_accuracy;           /* inference mode on the first train_eval training samples */
    double gap;                      /* train_accuracy - test_accuracy */
    double train_running_accuracy;   /* training mode (dropout on), the last epoch's running mean */
    double images_per_s;             /* training throughput, over all epochs */
    double seconds;                  /* fit, evaluations and measurement */
    int n_bn;                        /* BN layers measured (at most CK_STUDY_MAX_MEASURE) */
    int bn_layer[CK_STUDY_MAX_MEASURE];
    double bn_shift[CK_STUDY_MAX_MEASURE];        /* ck_bn_shift.ratio */
    double bn_shift_moving[CK_STUDY_MAX_MEASURE]; /* ck_bn_shift.ratio_moving */
    int n_dropout;
    int dropout_layer[CK_STUDY_MAX_MEASURE];
    double dropout_zeroed[CK_STUDY_MAX_MEASURE]; /* ck_dropout_effect.zeroed */
} ck_study_result;

typedef struct ck_study_progress {
    int variant; /* index into the variant list */
    uint64_t seed;
    int run, runs;                   /* 1-based run, runs in the study */
    const ck_fit_progress *fit;      /* during training, else NULL */
    const ck_study_result *finished; /* once the run is done, else NULL */
} ck_study_progress;

typedef struct ck_study_options {
    ck_device device;                   /* CK_DEVICE_CPU or CK_DEVICE_CUDA */
    int seeds;                          /* default 5 */
    uint64_t first_seed;                /* seeds first_seed, first_seed + 1, ...; default 1 */
    int epochs;                         /* default 1 */
    int batch;                          /* default 128 */
    const ck_optimizer_desc *optimizer; /* NULL: Adam, Keras defaults */
    int measure_batches; /* ck_model_measure batches after training; 0 = 4, -1 = none */
    float bn_momentum;   /* > 0: every BatchNormalization's momentum (Keras meaning) becomes this;
                            0: as in the model. It changes only how fast the moving statistics
                            follow the batch statistics (training itself is the same): short runs
                            with Keras' 0.99 are evaluated on unconverged moving statistics */
    int train_eval;      /* training samples evaluated for the gap; 0 = min(train, test count),
                            -1 = none (gap NaN) */
    /* optional; nonzero return stops the study after the current step (status success, fewer
     * results) */
    int (*on_progress)(void *user, const ck_study_progress *p);
    void *user;
} ck_study_options;

/* Trains every variant that is not equivalent to an earlier one, for each seed, on train, and
 * evaluates it on test: results[0..*n_results) in variant-major order (cap entries at most;
 * nv * seeds suffice). opts NULL: defaults. */
ck_status ck_study_run(const ck_study_variant *variants, int nv, const ck_dataset *train,
                       const ck_dataset *test, const ck_study_options *opts,
                       ck_study_result *results, int cap, int *n_results, char *err,
                       size_t err_len);

typedef struct ck_study_summary {
    int variant, runs;
    double acc_mean, acc_ci95, acc_sd; /* test accuracy over seeds (ci95: half-width) */
    double gap_mean, gap_ci95;
    double images_per_s;
    int n_bn;
    int bn_layer[CK_STUDY_MAX_MEASURE];
    double bn_shift[CK_STUDY_MAX_MEASURE]; /* means over seeds */
    double bn_shift_moving[CK_STUDY_MAX_MEASURE];
    int n_dropout;
    int dropout_layer[CK_STUDY_MAX_MEASURE];
    double dropout_zeroed[CK_STUDY_MAX_MEASURE];
} ck_study_summary;

/* Summarizes the results of variant `variant` (runs = 0 and NaNs when it has none). */
ck_status ck_study_summarize(const ck_study_result *results, int n, int variant,
                             ck_study_summary *out);

/* Paired comparison of two variants: runs with the same seed start from the same initial weights
 * and see the data in the same order, so the per-seed differences of test accuracy (variant minus
 * baseline) remove most of the seed-to-seed spread that the per-variant intervals carry. *mean:
 * their mean; *half: the 95% Student-t half-width (NaN with fewer than 2 pairs); *pairs: the
 * seeds both variants ran (0: mean and half NaN). CK_STATUS_BAD_PARAM for NULL outputs. */
ck_status ck_study_paired_diff(const ck_study_result *results, int n, int variant, int baseline,
                               double *mean, double *half, int *pairs);

/* ---- tests on paired differences ---------------------------------------------------------- */
/* Two-sided p of Student's t statistic t with dof degrees of freedom (dof >= 1; NaN otherwise). */
double ck_student_t_p(double t, int dof);
/* Exact two-sided sign test of d[0..n): zero differences are dropped; p = min(1, 2 P(X <= k))
 * with X ~ Binomial(n', 1/2), k the smaller count of positive and negative signs (1 when n' = 0).
 * With n' nonzero differences p is at least 2^(1-n'): 0.25 for 3, 0.0625 for 5. NaN when a d is
 * NaN. */
double ck_sign_test_p(const double *d, int n);
/* Exact two-sided Wilcoxon signed-rank test of d[0..n): zeros dropped, tied |d| (equal to a
 * relative 1e-9: accuracy differences k / N computed in floating point) get their mean rank; p =
 * P(|W+ - E W+| >= |observed - E W+|) under the 2^n' equally likely sign patterns (computed by
 * convolution, exact). Same floor as the sign test: 2^(1-n'). NaN for d NULL, n < 0, a NaN d, out
 * of memory, or more than CK_WILCOXON_MAX_N nonzero differences (the convolution takes n'^2 cells
 * and n'^3 steps: 0.4 s at the limit on one core). */
#define CK_WILCOXON_MAX_N 1000
double ck_wilcoxon_p(const double *d, int n);
/* Holm's step-down adjustment of m p-values (NaN stays NaN and is not counted in m). */
ck_status ck_holm(const double *p, int m, double *adjusted);

typedef enum ck_paired_verdict {
    CK_PAIRED_NONE = 0,     /* the 95% t interval of the differences includes 0 */
    CK_PAIRED_FRAGILE = 1,  /* the interval excludes 0, but the Holm-adjusted t test or the
                               Holm-adjusted exact Wilcoxon test does not reach 0.05 */
    CK_PAIRED_DIFFERENT = 2 /* both Holm-adjusted p < 0.05 */
} ck_paired_verdict;

typedef struct ck_paired_test {
    int variant, pairs;   /* pairs: seeds both variants ran */
    double mean, half;    /* ck_study_paired_diff */
    double p_t, p_t_holm; /* paired t test, raw and Holm-adjusted over the comparisons */
    double p_sign;        /* exact sign test (not adjusted) */
    double p_wilcoxon, p_wilcoxon_holm;
    int verdict; /* ck_paired_verdict */
} ck_paired_test;

/* Paired comparisons of variants[0..nv) with baseline (runs paired by seed, test accuracy,
 * variant minus baseline), the family for Holm's adjustment being these nv comparisons (those
 * with fewer than 2 pairs get NaN p-values and are left out of it). out: nv entries.
 * CK_STATUS_BAD_PARAM for NULL arguments or nv < 1; CK_STATUS_ALLOC_FAILED. */
ck_status ck_study_paired_tests(const ck_study_result *results, int n, const int *variants, int nv,
                                int baseline, ck_paired_test *out);

#ifdef __cplusplus
}
#endif
#endif /* CNNKIT_STUDY_H */
