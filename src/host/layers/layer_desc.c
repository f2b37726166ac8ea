/* Activation names and optimizer defaults (the layer defaults and type names: layer_registry.c). */
#include "internal.h"

#include "cnnkit/model.h"

#include <string.h>

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

static const char *const k_init_names[] = {NULL,           "glorot_uniform", "glorot_normal",
                                           "he_uniform",   "he_normal",      "lecun_uniform",
                                           "lecun_normal", "zeros",          "ones"};
static const char *const k_init_classes[] = {NULL,          "GlorotUniform", "GlorotNormal",
                                             "HeUniform",   "HeNormal",      "LecunUniform",
                                             "LecunNormal", "Zeros",         "Ones"};
#define K_INIT_COUNT ((int)(sizeof k_init_names / sizeof *k_init_names))

CK_API const char *ck_initializer_name(ck_initializer init) {
    return (int)init > 0 && (int)init < K_INIT_COUNT ? k_init_names[init] : NULL;
}

const char *ck_initializer_class(ck_initializer init) {
    return (int)init > 0 && (int)init < K_INIT_COUNT ? k_init_classes[init] : NULL;
}

CK_API int ck_initializer_from_name(const char *name) {
    for (int i = 1; name && i < K_INIT_COUNT; ++i)
        if (!strcmp(name, k_init_names[i]) || !strcmp(name, k_init_classes[i]))
            return i;
    return -1;
}

const char *ck_optimizer_name(ck_optimizer_type t) {
    static const char *const names[] = {"adam", "sgd", "rmsprop", "adadelta"};
    return (unsigned)t < sizeof names / sizeof *names ? names[t] : NULL;
}

/* Keras's defaults. Adam: lr 1e-3, beta1 0.9, beta2 0.999, epsilon 1e-7. SGD: lr 1e-2, momentum
 * 0, no Nesterov. RMSprop: lr 1e-3, rho 0.9, momentum 0, epsilon 1e-7, not centered. Adadelta: lr
 * 1e-3, rho 0.95, epsilon 1e-7. Fields the type does not use are 0. */
CK_API ck_status ck_optimizer_desc_init(ck_optimizer_desc *desc, ck_optimizer_type type) {
    if (!desc)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "desc: is NULL");
    if (!ck_optimizer_name(type))
        return ck_fail(NULL, CK_STATUS_BAD_PARAM,
                       "type: %d is not CK_OPT_ADAM, CK_OPT_SGD, CK_OPT_RMSPROP or CK_OPT_ADADELTA",
                       (int)type);
    memset(desc, 0, sizeof *desc);
    desc->type = type;
    if (type == CK_OPT_ADAM) {
        desc->learning_rate = 1e-3f;
        desc->beta1 = 0.9f;
        desc->beta2 = 0.999f;
        desc->epsilon = 1e-7f;
    } else if (type == CK_OPT_RMSPROP || type == CK_OPT_ADADELTA) {
        desc->learning_rate = 1e-3f;
        desc->rho = type == CK_OPT_RMSPROP ? 0.9f : 0.95f;
        desc->epsilon = 1e-7f;
    } else {
        desc->learning_rate = 1e-2f;
    }
    return CK_STATUS_SUCCESS;
}
