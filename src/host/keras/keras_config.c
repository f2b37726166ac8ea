/* Keras config.json -> cnnkit layer descriptors, with jansson. Reads Keras 3 configs and the
 * Keras 2 / legacy .h5 model_config of a Sequential model (keras_config_write.c writes Keras 3
 * configs). Every option of
 * a layer is either understood, ignored because the weights come from the file (initializers,
 * seeds), or refused with the layer's name and class: an unknown option is accepted only when it
 * is null or false (an option a newer Keras added, switched off). */
#include "keras_io.h"
#include "layer.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cfg {
    char *err;
    size_t err_len;
    const char *lname, *cls; /* the layer being read, for messages */
} cfg;

static int fail(cfg *C, const char *fmt, ...) CK_PRINTF(2, 3);
static int fail(cfg *C, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (C->err && C->err_len) {
        if (C->cls)
            snprintf(C->err, C->err_len, "layer '%s' (%s): %s", C->lname ? C->lname : "?", C->cls,
                     msg);
        else
            snprintf(C->err, C->err_len, "%s", msg);
    }
    return -1;
}

static int unsupported(cfg *C, const char *key, const json_t *v, const char *want) {
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    int r = fail(C, "option %s=%.80s is not supported by cnnkit%s%s", key, s ? s : "?",
                 want ? " (supported: " : "", want ? want : "");
    if (want && C->err && strlen(C->err) + 2 < C->err_len)
        strcat(C->err, ")");
    free(s); /* jansson's json_dumps: its allocator, not ours */
    return r;
}

/* ---- typed getters ---------------------------------------------------------------------- */
static int get_int(cfg *C, json_t *o, const char *key, int lo, int hi, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return fail(C, "option %s must be an integer in [%d, %d]", key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_num(cfg *C, json_t *o, const char *key, double lo, double hi, float *out) {
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_number(v) || !(json_number_value(v) >= lo && json_number_value(v) <= hi))
        return fail(C, "option %s must be a number in [%g, %g]", key, lo, hi);
    *out = (float)json_number_value(v);
    return 0;
}

static int get_bool(cfg *C, json_t *o, const char *key, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return fail(C, "option %s must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

/* An int or a list of two ints (kernel_size, strides, pool_size); null leaves *a, *b alone. */
static int get_pair(cfg *C, json_t *o, const char *key, int *a, int *b) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v) && json_integer_value(v) >= 1 && json_integer_value(v) <= 1 << 20) {
        *a = *b = (int)json_integer_value(v);
        return 0;
    }
    if (json_is_array(v) && json_array_size(v) == 2) {
        json_t *x = json_array_get(v, 0), *y = json_array_get(v, 1);
        if (json_is_integer(x) && json_is_integer(y) && json_integer_value(x) >= 1 &&
            json_integer_value(y) >= 1 && json_integer_value(x) <= 1 << 20 &&
            json_integer_value(y) <= 1 << 20) {
            *a = (int)json_integer_value(x);
            *b = (int)json_integer_value(y);
            return 0;
        }
    }
    return fail(C, "option %s must be a positive integer or a list of two", key);
}

static int is_one_pair(json_t *v) {
    if (json_is_integer(v))
        return json_integer_value(v) == 1;
    return json_is_array(v) && json_array_size(v) == 2 &&
           json_integer_value(json_array_get(v, 0)) == 1 &&
           json_integer_value(json_array_get(v, 1)) == 1 && json_is_integer(json_array_get(v, 0)) &&
           json_is_integer(json_array_get(v, 1));
}

static int str_is(json_t *v, const char *s) {
    return json_is_string(v) && !strcmp(json_string_value(v), s);
}

/* An activation: a Keras name, or a serialized one ({"class_name": "function", "config":
 * "relu"} in some versions). */
static int get_activation(cfg *C, json_t *o, const char *key, ck_activation *act, float *alpha) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    json_t *name = v;
    if (json_is_object(v)) {
        json_t *c = json_object_get(v, "config");
        name = json_is_string(c) ? c : json_object_get(v, "class_name");
    }
    int k = json_is_string(name) ? ck_activation_from_name(json_string_value(name)) : -1;
    if (k < 0)
        return unsupported(C, key, v,
                           "linear, relu, sigmoid, tanh, softmax, elu, leaky_relu, gelu, swish");
    *act = (ck_activation)k;
    if (k == CK_ACT_LEAKY_RELU)
        *alpha = 0.2f; /* keras.activations.leaky_relu's default negative_slope */
    else if (k == CK_ACT_ELU)
        *alpha = 1.0f;
    return 0;
}

/* "float32" or a DTypePolicy dict naming float32; other dtypes (mixed precision) are refused. */
static int check_dtype(cfg *C, json_t *v) {
    if (!v || json_is_null(v) || str_is(v, "float32"))
        return 0;
    if (json_is_object(v)) {
        json_t *c = json_object_get(v, "config");
        if (str_is(json_object_get(c, "name"), "float32"))
            return 0;
    }
    return unsupported(C, "dtype", v, "float32");
}

/* A batch shape [null, h, w, c] (or [null, features] is refused: cnnkit's inputs are images). */
static int get_batch_shape(cfg *C, json_t *v, ck_layer_desc *d) {
    if (!json_is_array(v) || json_array_size(v) != 4)
        return unsupported(C, "batch_shape", v, "[null, height, width, channels]");
    int s[3];
    for (int k = 0; k < 3; ++k) {
        json_t *x = json_array_get(v, (size_t)k + 1);
        if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > 1 << 20)
            return unsupported(C, "batch_shape", v, "[null, height, width, channels]");
        s[k] = (int)json_integer_value(x);
    }
    d->input_h = s[0];
    d->input_w = s[1];
    d->input_c = s[2];
    return 0;
}

/* ---- per-class options -------------------------------------------------------------------- */
/* Keys every layer may have, and keys read (or ignored: initializers, seeds) by each class. */
static const char *const k_common[] = {"name",        "trainable",   "dtype", "batch_input_shape",
                                       "batch_shape", "input_shape", NULL};
static const char *const k_conv[] = {
    "filters",     "kernel_size",        "strides",          "padding",
    "data_format", "dilation_rate",      "groups",           "activation",
    "use_bias",    "kernel_initializer", "bias_initializer", NULL};
static const char *const k_dense[] = {
    "units", "activation", "use_bias", "kernel_initializer", "bias_initializer", NULL};
static const char *const k_pool[] = {"pool_size", "strides", "padding", "data_format", NULL};
static const char *const k_fmt[] = {"data_format", NULL};
static const char *const k_bn[] = {"axis",
                                   "momentum",
                                   "epsilon",
                                   "center",
                                   "scale",
                                   "beta_initializer",
                                   "gamma_initializer",
                                   "moving_mean_initializer",
                                   "moving_variance_initializer",
                                   "renorm_momentum",
                                   NULL};
static const char *const k_act[] = {"activation", NULL};
static const char *const k_relu[] = {"max_value", "negative_slope", "threshold", NULL};
static const char *const k_lrelu[] = {"negative_slope", "alpha", NULL};
static const char *const k_elu[] = {"alpha", NULL};
static const char *const k_softmax[] = {"axis", NULL};
static const char *const k_drop[] = {"rate", "seed", "noise_shape", NULL};
static const char *const k_sdrop[] = {"rate", "seed", "data_format", NULL};

static int in_list(const char *const *l, const char *k) {
    for (; l && *l; ++l)
        if (!strcmp(*l, k))
            return 1;
    return 0;
}

/* Every key must be known, or null / false. */
static int check_keys(cfg *C, json_t *o, const char *const *known) {
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        if (in_list(k_common, k) || in_list(known, k) || json_is_null(v) || json_is_false(v))
            continue;
        return unsupported(C, k, v, NULL);
    }
    return 0;
}

static int check_format(cfg *C, json_t *o) {
    json_t *v = json_object_get(o, "data_format");
    if (v && !json_is_null(v) && !str_is(v, "channels_last"))
        return unsupported(C, "data_format", v, "channels_last");
    return 0;
}

static int get_padding(cfg *C, json_t *o, ck_layer_desc *d) {
    json_t *v = json_object_get(o, "padding");
    if (!v || str_is(v, "valid"))
        d->padding = CK_PADDING_VALID;
    else if (str_is(v, "same"))
        d->padding = CK_PADDING_SAME;
    else
        return unsupported(C, "padding", v, "valid, same");
    return 0;
}

/* ---- the kinds that bind their own arguments (layer.h ck_kbind) ---- */
typedef struct json_bind {
    ck_kbind b;
    cfg *C;
    json_t *o;
} json_bind;

static int jb_int(json_t *v, int *out) {
    if (!json_is_integer(v) || json_integer_value(v) < -0x7fffffffLL ||
        json_integer_value(v) > 0x7fffffffLL)
        return 0;
    *out = (int)json_integer_value(v);
    return 1;
}

static int jb_ints(ck_kbind *b, const char *key, const char *want, int out[4], int *rows,
                   int *cols) {
    json_bind *j = (json_bind *)b;
    json_t *v = json_object_get(j->o, key);
    *rows = -1;
    *cols = 0;
    if (!v || json_is_null(v))
        return 0;
    int ok = 1, n = 0;
    if (json_is_integer(v)) {
        ok = jb_int(v, &out[n++]);
        *rows = 0;
    } else if (json_is_array(v) && json_array_size(v) >= 1 && json_array_size(v) <= 4) {
        *rows = (int)json_array_size(v);
        json_t *first = json_array_get(v, 0);
        *cols = json_is_array(first) ? (int)json_array_size(first) : 0;
        ok = *cols <= 4 && *rows * (*cols ? *cols : 1) <= 4;
        for (int r = 0; ok && r < *rows; ++r) {
            json_t *it = json_array_get(v, (size_t)r);
            if (*cols == 0) {
                ok = jb_int(it, &out[n++]);
                continue;
            }
            ok = json_is_array(it) && (int)json_array_size(it) == *cols;
            for (int c = 0; ok && c < *cols; ++c)
                ok = jb_int(json_array_get(it, (size_t)c), &out[n++]);
        }
    } else {
        ok = 0;
    }
    return ok ? 0 : unsupported(j->C, key, v, want);
}

static int jb_refuse(ck_kbind *b, const char *key, const char *want) {
    json_bind *j = (json_bind *)b;
    return unsupported(j->C, key, json_object_get(j->o, key), want);
}

static int check_format(cfg *C, json_t *o);
static int jb_data_format(ck_kbind *b) {
    json_bind *j = (json_bind *)b;
    return check_format(j->C, j->o);
}

/* One layer's config into d; *skip = 1 for an InputLayer (its shape goes to *pending). */
static int read_layer(cfg *C, json_t *entry, ck_layer_desc *d, int *skip, ck_layer_desc *pending) {
    json_t *cls_v = json_object_get(entry, "class_name");
    json_t *o = json_object_get(entry, "config");
    if (!json_is_string(cls_v) || !json_is_object(o))
        return fail(C, "a layer entry has no class_name or config object");
    const char *cls = json_string_value(cls_v);
    json_t *nm = json_object_get(o, "name");
    C->cls = cls;
    C->lname = json_is_string(nm) ? json_string_value(nm) : "?";
    if (json_is_string(nm) && strlen(json_string_value(nm)) >= sizeof d->name)
        return fail(C, "name is longer than %d characters", (int)sizeof d->name - 1);
    json_t *mod = json_object_get(entry, "module");
    if (mod && !json_is_null(mod) &&
        !(json_is_string(mod) && !strncmp(json_string_value(mod), "keras", 5)))
        return fail(C, "a layer from module %.60s is not supported (Keras's own layers only)",
                    json_is_string(mod) ? json_string_value(mod) : "?");
    json_t *reg = json_object_get(entry, "registered_name");
    if (reg && !json_is_null(reg) && !str_is(reg, cls))
        return fail(C, "custom layer '%s' is not supported",
                    json_string_value(reg) ? json_string_value(reg) : "?");
    int trainable = 1;
    if (get_bool(C, o, "trainable", &trainable))
        return -1;
    if (!trainable)
        return unsupported(C, "trainable", json_false(), "true: cnnkit trains every layer");
    if (check_dtype(C, json_object_get(o, "dtype")))
        return -1;
    *skip = 0;
    if (!strcmp(cls, "InputLayer")) {
        json_t *bs = json_object_get(o, "batch_shape");
        if (!bs)
            bs = json_object_get(o, "batch_input_shape");
        static const char *const k_in[] = {"sparse", "ragged", "optional", NULL};
        if (check_keys(C, o, k_in) || get_batch_shape(C, bs, pending))
            return -1;
        *skip = 1;
        C->cls = NULL;
        return 0;
    }
    const char *const *known = NULL;
    const ck_layer_kind *kind = NULL;
    ck_layer_type t;
    if (!strcmp(cls, "Conv2D") || !strcmp(cls, "Convolution2D"))
        t = CK_LAYER_CONV2D, known = k_conv;
    else if (!strcmp(cls, "Dense"))
        t = CK_LAYER_DENSE, known = k_dense;
    else if (!strcmp(cls, "MaxPooling2D") || !strcmp(cls, "MaxPool2D"))
        t = CK_LAYER_MAXPOOL2D, known = k_pool;
    else if (!strcmp(cls, "AveragePooling2D") || !strcmp(cls, "AvgPool2D"))
        t = CK_LAYER_AVGPOOL2D, known = k_pool;
    else if (!strcmp(cls, "GlobalAveragePooling2D") || !strcmp(cls, "GlobalAvgPool2D"))
        t = CK_LAYER_GLOBALAVGPOOL2D, known = k_fmt;
    else if (!strcmp(cls, "Flatten"))
        t = CK_LAYER_FLATTEN, known = k_fmt;
    else if (!strcmp(cls, "BatchNormalization"))
        t = CK_LAYER_BATCHNORM, known = k_bn;
    else if (!strcmp(cls, "Activation"))
        t = CK_LAYER_ACTIVATION, known = k_act;
    else if (!strcmp(cls, "ReLU"))
        t = CK_LAYER_ACTIVATION, known = k_relu;
    else if (!strcmp(cls, "LeakyReLU"))
        t = CK_LAYER_ACTIVATION, known = k_lrelu;
    else if (!strcmp(cls, "ELU"))
        t = CK_LAYER_ACTIVATION, known = k_elu;
    else if (!strcmp(cls, "Softmax"))
        t = CK_LAYER_ACTIVATION, known = k_softmax;
    else if (!strcmp(cls, "Dropout"))
        t = CK_LAYER_DROPOUT, known = k_drop;
    else if (!strcmp(cls, "SpatialDropout2D"))
        t = CK_LAYER_SPATIAL_DROPOUT2D, known = k_sdrop;
    else if ((kind = ck_layer_kind_keras(cls)))
        t = kind->type, known = kind->keras_args;
    else {
        char more[256];
        ck_layer_kind_keras_names(more, sizeof more);
        return fail(C,
                    "layer class is not supported by cnnkit (supported: Conv2D, Dense, "
                    "MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, Flatten, "
                    "BatchNormalization, Activation, ReLU, LeakyReLU, ELU, Softmax, Dropout, "
                    "SpatialDropout2D%s, InputLayer)",
                    more);
    }
    if (check_keys(C, o, known) || check_format(C, o))
        return -1;
    ck_layer_desc_init(d, t);
    if (json_is_string(nm))
        snprintf(d->name, sizeof d->name, "%s", json_string_value(nm));
    json_t *bs = json_object_get(o, "batch_shape");
    if (!bs || json_is_null(bs))
        bs = json_object_get(o, "batch_input_shape");
    if (bs && !json_is_null(bs) && get_batch_shape(C, bs, d))
        return -1;
    json_t *v;
    switch (t) {
    case CK_LAYER_CONV2D:
        if (get_int(C, o, "filters", 1, 1 << 20, &d->units) ||
            get_pair(C, o, "kernel_size", &d->kernel_h, &d->kernel_w) ||
            get_pair(C, o, "strides", &d->stride_h, &d->stride_w) || get_padding(C, o, d))
            return -1;
        if (d->units < 1 || d->kernel_h < 1)
            return fail(C, "filters and kernel_size are required");
        if ((v = json_object_get(o, "dilation_rate")) && !is_one_pair(v))
            return unsupported(C, "dilation_rate", v, "1");
        if ((v = json_object_get(o, "groups")) &&
            !(json_is_integer(v) && json_integer_value(v) == 1))
            return unsupported(C, "groups", v, "1");
        /* fall through */
        __attribute__((fallthrough));
    case CK_LAYER_DENSE:
        if (t == CK_LAYER_DENSE && get_int(C, o, "units", 1, 1 << 28, &d->units))
            return -1;
        if (d->units < 1)
            return fail(C, "units is required");
        if (get_bool(C, o, "use_bias", &d->use_bias) ||
            get_activation(C, o, "activation", &d->activation, &d->alpha))
            return -1;
        break;
    case CK_LAYER_MAXPOOL2D:
    case CK_LAYER_AVGPOOL2D:
        if (get_pair(C, o, "pool_size", &d->kernel_h, &d->kernel_w) || get_padding(C, o, d))
            return -1;
        d->stride_h = d->kernel_h;
        d->stride_w = d->kernel_w;
        if (get_pair(C, o, "strides", &d->stride_h, &d->stride_w))
            return -1;
        break;
    case CK_LAYER_BATCHNORM: {
        v = json_object_get(o, "axis");
        if (json_is_array(v) && json_array_size(v) == 1)
            v = json_array_get(v, 0);
        if (v &&
            !(json_is_integer(v) && (json_integer_value(v) == -1 || json_integer_value(v) == 3)))
            return unsupported(C, "axis", json_object_get(o, "axis"), "-1 (channels)");
        int center = 1, scale = 1;
        if (get_num(C, o, "momentum", 0, 1, &d->momentum) ||
            get_num(C, o, "epsilon", 1e-30, 1e30, &d->epsilon) ||
            get_bool(C, o, "center", &center) || get_bool(C, o, "scale", &scale))
            return -1;
        if (!center || !scale)
            return unsupported(C, center ? "scale" : "center", json_false(), "true");
        break;
    }
    case CK_LAYER_ACTIVATION:
        if (!strcmp(cls, "Activation")) {
            if (!json_object_get(o, "activation"))
                return fail(C, "activation is required");
            if (get_activation(C, o, "activation", &d->activation, &d->alpha))
                return -1;
        } else if (!strcmp(cls, "ReLU")) {
            float slope = 0, th = 0;
            if ((v = json_object_get(o, "max_value")) && !json_is_null(v))
                return unsupported(C, "max_value", v, "null");
            if (get_num(C, o, "negative_slope", 0, 1e30, &slope) ||
                get_num(C, o, "threshold", -1e30, 1e30, &th))
                return -1;
            if (th != 0)
                return unsupported(C, "threshold", json_object_get(o, "threshold"), "0");
            d->activation = slope > 0 ? CK_ACT_LEAKY_RELU : CK_ACT_RELU;
            if (slope > 0)
                d->alpha = slope;
        } else if (!strcmp(cls, "LeakyReLU")) {
            d->alpha = 0.3f;
            if (get_num(C, o, json_object_get(o, "negative_slope") ? "negative_slope" : "alpha",
                        -1e30, 1e30, &d->alpha))
                return -1;
            d->activation = CK_ACT_LEAKY_RELU;
        } else if (!strcmp(cls, "ELU")) {
            d->alpha = 1.0f;
            if (get_num(C, o, "alpha", -1e30, 1e30, &d->alpha))
                return -1;
            d->activation = CK_ACT_ELU;
        } else {
            v = json_object_get(o, "axis");
            if (v && !(json_is_integer(v) && (json_integer_value(v) == -1)))
                return unsupported(C, "axis", v, "-1");
            d->activation = CK_ACT_SOFTMAX;
        }
        break;
    case CK_LAYER_DROPOUT:
    case CK_LAYER_SPATIAL_DROPOUT2D:
        if (!json_object_get(o, "rate"))
            return fail(C, "rate is required");
        if (get_num(C, o, "rate", 0, 0.999999, &d->rate))
            return -1;
        break;
    default: {
        json_bind j = {{jb_ints, jb_refuse, jb_data_format}, C, o};
        if (kind && kind->keras_bind(&j.b, d))
            return -1;
        break;
    }
    }
    if (pending->input_h) { /* the shape of a preceding InputLayer */
        d->input_h = pending->input_h;
        d->input_w = pending->input_w;
        d->input_c = pending->input_c;
        pending->input_h = 0;
    }
    C->cls = NULL;
    return 0;
}

/* compile_config's optimizer (Adam, AdamW, SGD) and loss into km. */
static int read_compile(cfg *C, json_t *cc, ck_keras_model *km) {
    if (!json_is_object(cc))
        return 0;
    json_t *opt = json_object_get(cc, "optimizer");
    if (opt && !json_is_null(opt)) {
        json_t *oc = json_object_get(opt, "config");
        json_t *cls_v = json_object_get(opt, "class_name");
        const char *cls = json_is_string(cls_v) ? json_string_value(cls_v) : "";
        if (json_is_string(opt)) { /* "adam" */
            cls = json_string_value(opt);
            oc = NULL;
        }
        const int adam = !strcasecmp(cls, "Adam"), adamw = !strcasecmp(cls, "AdamW"),
                  sgd = !strcasecmp(cls, "SGD");
        if (!adam && !adamw && !sgd)
            return fail(C, "compile: optimizer '%s' is not supported (Adam, AdamW, SGD)", cls);
        ck_optimizer_desc_init(&km->optimizer, sgd ? CK_OPT_SGD : CK_OPT_ADAM);
        if (adamw)
            km->optimizer.weight_decay = 0.004f;
        C->cls = cls;
        C->lname = "optimizer";
        if (json_is_object(oc)) {
            static const char *const k_opt[] = {
                "name",     "learning_rate", "lr",           "beta_1", "beta_2",       "epsilon",
                "momentum", "nesterov",      "weight_decay", "decay",  "ema_momentum", NULL};
            const char *k;
            json_t *v;
            json_object_foreach(oc, k, v) {
                if (!in_list(k_opt, k) && !json_is_null(v) && !json_is_false(v))
                    return unsupported(C, k, v, NULL);
            }
            json_t *lr = json_object_get(oc, "learning_rate");
            if (!lr)
                lr = json_object_get(oc, "lr");
            if (lr && !json_is_number(lr))
                return unsupported(C, "learning_rate", lr, "a number (no schedules)");
            if ((v = json_object_get(oc, "decay")) &&
                !(json_is_number(v) && json_number_value(v) == 0))
                return unsupported(C, "decay", v, "0");
            if (lr)
                km->optimizer.learning_rate = (float)json_number_value(lr);
            if (get_num(C, oc, "beta_1", 0, 0.999999999, &km->optimizer.beta1) ||
                get_num(C, oc, "beta_2", 0, 0.999999999, &km->optimizer.beta2) ||
                get_num(C, oc, "epsilon", 1e-30, 1, &km->optimizer.epsilon) ||
                get_num(C, oc, "momentum", 0, 0.999999, &km->optimizer.momentum) ||
                get_bool(C, oc, "nesterov", &km->optimizer.nesterov))
                return -1;
            if ((v = json_object_get(oc, "weight_decay")) && !json_is_null(v) &&
                get_num(C, oc, "weight_decay", 0, 1, &km->optimizer.weight_decay))
                return -1;
            if (!sgd)
                km->optimizer.momentum = 0, km->optimizer.nesterov = 0;
        }
        C->cls = NULL;
        km->has_compile = 1;
    }
    json_t *loss = json_object_get(cc, "loss");
    if (json_is_object(loss)) {
        json_t *lc = json_object_get(loss, "config");
        if (json_is_true(json_object_get(lc, "from_logits")))
            return fail(C, "compile: loss with from_logits=True is not supported");
        json_t *cls_v = json_object_get(loss, "class_name");
        loss = cls_v;
        if (str_is(cls_v, "SparseCategoricalCrossentropy"))
            snprintf(km->loss, sizeof km->loss, "sparse_categorical_crossentropy");
        else if (str_is(cls_v, "CategoricalCrossentropy"))
            snprintf(km->loss, sizeof km->loss, "categorical_crossentropy");
        else
            return fail(C, "compile: loss %s is not supported",
                        json_is_string(cls_v) ? json_string_value(cls_v) : "?");
    } else if (json_is_string(loss)) {
        const char *l = json_string_value(loss);
        if (strcmp(l, "sparse_categorical_crossentropy") && strcmp(l, "categorical_crossentropy"))
            return fail(C,
                        "compile: loss '%.60s' is not supported (sparse_categorical_"
                        "crossentropy or categorical_crossentropy)",
                        l);
        snprintf(km->loss, sizeof km->loss, "%s", l);
    } else if (loss && !json_is_null(loss)) {
        return fail(C, "compile: this loss is not supported");
    }
    return 0;
}

ck_status ck_kio_parse_config(const char *json, size_t len, const char *training_config,
                              ck_keras_model *out, char *err, size_t err_len) {
    cfg C = {err, err_len, NULL, NULL};
    if (err && err_len)
        err[0] = '\0';
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        fail(&C, "config.json: line %d, column %d: %s", je.line, je.column, je.text);
        return CK_STATUS_BAD_PARAM;
    }
    json_t *tc_root = NULL;
    ck_keras_model km;
    memset(&km, 0, sizeof km);
    ck_optimizer_desc_init(&km.optimizer, CK_OPT_ADAM);
    ck_status st = CK_STATUS_BAD_PARAM;
    json_t *cls = json_object_get(root, "class_name");
    json_t *conf = json_object_get(root, "config");
    json_t *layers = json_is_array(conf) ? conf : json_object_get(conf, "layers");
    if (!json_is_string(cls)) {
        fail(&C, "config.json: no class_name at the top level");
    } else if (strcmp(json_string_value(cls), "Sequential")) {
        fail(&C, "config.json: a %.40s model is not supported (cnnkit reads Sequential models)",
             json_string_value(cls));
        st = CK_STATUS_NOT_SUPPORTED;
    } else if (!json_is_array(layers) || json_array_size(layers) == 0) {
        fail(&C, "config.json: the Sequential model has no layers list");
    } else if (json_array_size(layers) > 256) {
        fail(&C, "config.json: %zu layers, cnnkit takes at most 256", json_array_size(layers));
        st = CK_STATUS_NOT_SUPPORTED;
    } else if (!(km.layers = (ck_layer_desc *)ck_host_calloc(NULL, json_array_size(layers),
                                                             sizeof *km.layers))) {
        fail(&C, "config.json: out of memory");
        st = CK_STATUS_ALLOC_FAILED;
    } else {
        ck_layer_desc pending;
        memset(&pending, 0, sizeof pending);
        size_t i;
        json_t *e;
        int bad = 0;
        json_array_foreach(layers, i, e) {
            int skip = 0;
            if (read_layer(&C, e, &km.layers[km.count], &skip, &pending)) {
                bad = 1;
                st = strstr(err ? err : "", "not supported") ? CK_STATUS_NOT_SUPPORTED
                                                             : CK_STATUS_BAD_PARAM;
                break;
            }
            km.count += !skip;
        }
        json_t *cc = json_object_get(root, "compile_config");
        if (!bad && !cc && training_config) {
            tc_root = json_loads(training_config, JSON_REJECT_DUPLICATES, &je);
            if (!tc_root) {
                fail(&C, "training_config: line %d, column %d: %s", je.line, je.column, je.text);
                bad = 1;
            }
            cc = json_object_get(tc_root, "optimizer_config") ? tc_root : NULL;
            if (cc) { /* legacy: optimizer_config holds the optimizer */
                json_object_set(tc_root, "optimizer", json_object_get(tc_root, "optimizer_config"));
            }
        }
        if (!bad && km.count == 0) {
            fail(&C, "config.json: the model has no layers besides its input");
            bad = 1;
        }
        if (!bad && read_compile(&C, cc, &km)) {
            bad = 1;
            st = CK_STATUS_NOT_SUPPORTED;
        }
        if (!bad)
            st = CK_STATUS_SUCCESS;
    }
    json_decref(tc_root);
    json_decref(root);
    if (st != CK_STATUS_SUCCESS) {
        ck_host_free(NULL, km.layers);
        return st;
    }
    *out = km;
    return CK_STATUS_SUCCESS;
}

/* ---- writing -------------------------------------------------------------------------------- */
const char *ck_kio_keras_class(const ck_layer_desc *d) {
    if (d->type == CK_LAYER_ACTIVATION && d->activation == CK_ACT_LEAKY_RELU && d->alpha != 0.2f)
        return "LeakyReLU";
    if (d->type == CK_LAYER_ACTIVATION && d->activation == CK_ACT_ELU && d->alpha != 1.0f)
        return "ELU";
    return ck_layer_type_name(d->type);
}

void ck_kio_snake_case(const char *cls, char *out, size_t len) {
    /* re.sub("(.)([A-Z][a-z]+)", r"\1_\2") then re.sub("([a-z])([A-Z])", r"\1_\2"), lower */
    char a[128];
    size_t n = 0;
    for (size_t i = 0; cls[i] && n + 2 < sizeof a; ++i) {
        if (i > 0 && isupper((unsigned char)cls[i]) && islower((unsigned char)cls[i + 1]))
            a[n++] = '_';
        a[n++] = cls[i];
    }
    a[n] = '\0';
    size_t k = 0;
    for (size_t i = 0; a[i] && k + 2 < len; ++i) {
        if (i > 0 && islower((unsigned char)a[i - 1]) && isupper((unsigned char)a[i]))
            out[k++] = '_';
        out[k++] = (char)tolower((unsigned char)a[i]);
    }
    if (len)
        out[k < len ? k : len - 1] = '\0';
}
