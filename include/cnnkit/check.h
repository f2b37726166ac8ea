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

#ifdef __cplusplus
}
#endif
#endif /* CNNKIT_CHECK_H */
