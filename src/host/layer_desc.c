/* Layer and optimizer descriptors: Keras defaults, type and activation names. */
#include "internal.h"

#include "cnnkit/model.h"

#include <string.h>

/*
 * Defaults by type (Keras 2/3):
 *  - every type: name "" (automatic), use_bias 1, padding valid, activation linear, alpha 0.3
 *    (the LeakyReLU default; a caller that sets CK_ACT_ELU by hand sets alpha = 1 itself),
 *    input_h/w/c 0 (no input_shape), rate 0.
 *  - Conv2D: stride 1 x 1; filters (units) and kernel_size are 0 and must be set.
 *  - Dense: units 0, must be set.
 *  - MaxPooling2D / AveragePooling2D: pool_size 2 x 2 and stride 0 x 0, which means
 *    "strides=None", i.e. the pool size (so it follows a pool size changed later).
 *    ck_keras_parse always stores the resolved strides, never 0.
 *  - BatchNormalization: momentum 0.99, epsilon 1e-3.
 *  - Dropout / SpatialDropout2D: rate 0 (Keras has no default: set it).
 */
CK_API ck_status ck_layer_desc_init(ck_layer_desc *desc, ck_layer_type type) {
    if (!desc || (int)type < 0 || type >= CK_LAYER_TYPE_COUNT)
        return CK_STATUS_BAD_PARAM;
    memset(desc, 0, sizeof *desc);
    desc->type = type;
    desc->padding = CK_PADDING_VALID;
    desc->use_bias = 1;
    desc->activation = CK_ACT_NONE;
    desc->alpha = 0.3f;
    switch (type) {
    case CK_LAYER_CONV2D:
        desc->stride_h = desc->stride_w = 1;
        break;
    case CK_LAYER_MAXPOOL2D:
    case CK_LAYER_AVGPOOL2D:
        desc->kernel_h = desc->kernel_w = 2;
        desc->stride_h = desc->stride_w = 0; /* strides=None: the pool size */
        break;
    case CK_LAYER_BATCHNORM:
        desc->momentum = 0.99f;
        desc->epsilon = 1e-3f;
        break;
    default:
        break;
    }
    return CK_STATUS_SUCCESS;
}

CK_API const char *ck_layer_type_name(ck_layer_type type) {
    switch (type) {
    case CK_LAYER_CONV2D:
        return "Conv2D";
    case CK_LAYER_MAXPOOL2D:
        return "MaxPooling2D";
    case CK_LAYER_AVGPOOL2D:
        return "AveragePooling2D";
    case CK_LAYER_GLOBALAVGPOOL2D:
        return "GlobalAveragePooling2D";
    case CK_LAYER_DENSE:
        return "Dense";
    case CK_LAYER_FLATTEN:
        return "Flatten";
    case CK_LAYER_BATCHNORM:
        return "BatchNormalization";
    case CK_LAYER_ACTIVATION:
        return "Activation";
    case CK_LAYER_DROPOUT:
        return "Dropout";
    case CK_LAYER_SPATIAL_DROPOUT2D:
        return "SpatialDropout2D";
    default:
        return NULL;
    }
}

static const char *const k_act_names[] = {"linear", "relu",       "sigmoid", "tanh", "softmax",
                                          "elu",    "leaky_relu", "gelu",    "swish"};
#define K_ACT_COUNT ((int)(sizeof k_act_names / sizeof *k_act_names))

CK_API const char *ck_activation_name(ck_activation act) {
    if ((int)act < 0 || (int)act >= K_ACT_COUNT)
        return NULL;
    return k_act_names[act];
}

/* Exact (case-sensitive) Keras names; "silu" is the Keras 3 name of swish. */
CK_API int ck_activation_from_name(const char *name) {
    if (!name)
        return -1;
    for (int i = 0; i < K_ACT_COUNT; ++i)
        if (strcmp(name, k_act_names[i]) == 0)
            return i;
    if (strcmp(name, "silu") == 0)
        return CK_ACT_SWISH;
    return -1;
}

/* Adam: lr 1e-3, beta1 0.9, beta2 0.999, epsilon 1e-7. SGD: lr 1e-2, momentum 0, no Nesterov.
 * Fields the type does not use are 0. */
CK_API ck_status ck_optimizer_desc_init(ck_optimizer_desc *desc, ck_optimizer_type type) {
    if (!desc || (type != CK_OPT_ADAM && type != CK_OPT_SGD))
        return CK_STATUS_BAD_PARAM;
    memset(desc, 0, sizeof *desc);
    desc->type = type;
    if (type == CK_OPT_ADAM) {
        desc->learning_rate = 1e-3f;
        desc->beta1 = 0.9f;
        desc->beta2 = 0.999f;
        desc->epsilon = 1e-7f;
    } else {
        desc->learning_rate = 1e-2f;
    }
    return CK_STATUS_SUCCESS;
}
