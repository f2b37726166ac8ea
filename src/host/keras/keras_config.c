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
    const char *lname, *cls;   /* the layer being read, for messages */
    int bf16;                  /* a layer's dtype policy was mixed_bfloat16 */
    int by_cnnkit, plain_loss; /* the file says cnnkit saved it; the loss is a bare name */
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

/* A layer's dtype: "float32", "mixed_bfloat16", or a DTypePolicy dict naming one (Keras 3 saves
 * the dict). mixed_bfloat16 on any layer makes the model bf16 (docs/precision.md): cnnkit's
 * precision is the model's, and layers a Keras user keeps in float32 under that policy (the final
 * softmax, as Keras's guide advises) are computed in fp32 by cnnkit anyway. mixed_float16 would
 * need loss scaling, which cnnkit does not do; other dtypes are refused too. */
static int check_dtype(cfg *C, json_t *v) {
    if (!v || json_is_null(v))
        return 0;
    json_t *name = json_is_object(v) ? json_object_get(json_object_get(v, "config"), "name") : v;
    if (str_is(name, "float32"))
        return 0;
    if (str_is(name, "mixed_bfloat16")) {
        C->bf16 = 1;
        return 0;
    }
    /* the policy's name, not its dict (which a message would cut short) */
    const json_t *said = json_is_string(name) ? name : v;
    if (str_is(name, "mixed_float16"))
        return unsupported(C, "dtype", said,
                           "float32, mixed_bfloat16; mixed_float16 needs loss scaling, which "
                           "cnnkit does not do");
    return unsupported(C, "dtype", said, "float32, mixed_bfloat16");
}

/* A batch shape [null, h, w, c], or [null, n]: a vector input, 1 x 1 x n inside. */
static int get_batch_shape(cfg *C, json_t *v, ck_layer_desc *d) {
    const size_t n = json_is_array(v) ? json_array_size(v) : 0;
    if (n != 4 && n != 2)
        return unsupported(C, "batch_shape", v, "[null, height, width, channels] or [null, n]");
    int s[3] = {1, 1, 1};
    for (size_t k = 1; k < n; ++k) {
        json_t *x = json_array_get(v, k);
        if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > 1 << 20)
            return unsupported(C, "batch_shape", v, "[null, height, width, channels] or [null, n]");
        s[n == 4 ? k - 1 : 2] = (int)json_integer_value(x);
    }
    d->input_h = s[0];
    d->input_w = s[1];
    d->input_c = s[2];
    d->input_flat = n == 2;
    return 0;
}

/* ---- per-class options -------------------------------------------------------------------- */
/* Keys every layer may have; each class's own are its kind's (layer.h ck_keras_class). */
static const char *const k_common[] = {"name",        "trainable",   "dtype", "batch_input_shape",
                                       "batch_shape", "input_shape", NULL};
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

static int get_padding(cfg *C, json_t *o, ck_padding *out) {
    json_t *v = json_object_get(o, "padding");
    if (!v)
        return 0;
    if (str_is(v, "valid"))
        *out = CK_PADDING_VALID;
    else if (str_is(v, "same"))
        *out = CK_PADDING_SAME;
    else
        return unsupported(C, "padding", v, "valid, same");
    return 0;
}

/* ---- the kinds' Keras classes (layer.h ck_kbind) over config.json ---- */
typedef struct json_bind {
    ck_kbind b;
    cfg *C;
    json_t *o;
} json_bind;

#define JB(b) ((json_bind *)(b))
#define JV(b, key) json_object_get(JB(b)->o, key)

static int jb_int(json_t *v, int *out) {
    if (!json_is_integer(v) || json_integer_value(v) < -0x7fffffffLL ||
        json_integer_value(v) > 0x7fffffffLL)
        return 0;
    *out = (int)json_integer_value(v);
    return 1;
}

static int jb_has(ck_kbind *b, const char *key) {
    json_t *v = JV(b, key);
    return v && !json_is_null(v);
}
static int jb_need(ck_kbind *b, const char *key) {
    return jb_has(b, key) ? 0 : fail(JB(b)->C, "%s is required", key);
}

static int jb_ints(ck_kbind *b, const char *key, const char *want, int out[4], int *rows,
                   int *cols) {
    json_t *v = JV(b, key);
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
    return ok ? 0 : unsupported(JB(b)->C, key, v, want);
}

static int jb_get_int(ck_kbind *b, const char *key, int lo, int *out) {
    return get_int(JB(b)->C, JB(b)->o, key, lo, 1 << 28, out);
}
static int jb_get_pair(ck_kbind *b, const char *key, int *h, int *w) {
    return get_pair(JB(b)->C, JB(b)->o, key, h, w);
}

static int jb_get_num(ck_kbind *b, const char *key, double lo, int lo_open, double hi, int hi_open,
                      double *out) {
    json_t *v = JV(b, key);
    if (!v)
        return 0;
    if (!json_is_number(v)) /* a list, an array ({"class_name": "__numpy__", ...}), a string */
        return unsupported(JB(b)->C, key, v, "a number");
    double x = json_number_value(v);
    if (!(x == x) || (lo_open ? x <= lo : x < lo) || (hi_open ? x >= hi : x > hi))
        return fail(JB(b)->C, "option %s must be a number in %c%g, %g%c", key, lo_open ? '(' : '[',
                    lo, hi, hi_open ? ')' : ']');
    *out = x;
    return 0;
}

static int jb_get_bool(ck_kbind *b, const char *key, int *out) {
    return get_bool(JB(b)->C, JB(b)->o, key, out);
}

static int jb_get_padding(ck_kbind *b, ck_padding *out) {
    return get_padding(JB(b)->C, JB(b)->o, out);
}

static int jb_get_activation(ck_kbind *b, const char *key, ck_activation *act, float *alpha) {
    return get_activation(JB(b)->C, JB(b)->o, key, act, alpha);
}

static int jb_only_none(ck_kbind *b, const char *key) {
    json_t *v = JV(b, key);
    return v && !json_is_null(v) ? unsupported(JB(b)->C, key, v, "null") : 0;
}

static int jb_only_bool(ck_kbind *b, const char *key, int want) {
    int x = want;
    if (get_bool(JB(b)->C, JB(b)->o, key, &x))
        return -1;
    return x != want ? unsupported(JB(b)->C, key, JV(b, key), want ? "true" : "false") : 0;
}

static int jb_only_int(ck_kbind *b, const char *key, int want) {
    json_t *v = JV(b, key);
    if (v && !(json_is_integer(v) && json_integer_value(v) == want)) {
        char e[32];
        snprintf(e, sizeof e, "%d", want);
        return unsupported(JB(b)->C, key, v, e);
    }
    return 0;
}

static int jb_only_ones(ck_kbind *b, const char *key) {
    json_t *v = JV(b, key);
    return v && !is_one_pair(v) ? unsupported(JB(b)->C, key, v, "1") : 0;
}

/* The weights come from the file: initializers and seeds do not matter here. */
static int jb_ignore(ck_kbind *b, const char *key, const char *want) {
    (void)b;
    (void)key;
    (void)want;
    return 0;
}
/* A known initializer is kept (a save writes it back); another one is left: the weights come
 * from the file. */
static int jb_get_initializer(ck_kbind *b, const char *key, ck_initializer *out) {
    json_t *v = JV(b, key);
    const char *name = json_is_string(v)   ? json_string_value(v)
                       : json_is_object(v) ? json_string_value(json_object_get(v, "class_name"))
                                           : NULL;
    const int id = name ? ck_initializer_from_name(name) : -1;
    if (id > 0)
        *out = (ck_initializer)id;
    return 0;
}
static int jb_seed(ck_kbind *b, const char *key) {
    (void)b;
    (void)key;
    return 0;
}

static int jb_refuse(ck_kbind *b, const char *key, const char *want) {
    return unsupported(JB(b)->C, key, JV(b, key), want);
}

static int jb_conflict(ck_kbind *b, const char *key1, const char *key2) {
    return fail(JB(b)->C, "options %s and %s both given (one of them)", key1, key2);
}

static int check_format(cfg *C, json_t *o);
static int jb_data_format(ck_kbind *b) {
    return check_format(JB(b)->C, JB(b)->o);
}

/* The class's own keys (and the common ones) only, then its binding. */
static int bind_class(cfg *C, json_t *o, const char *cls, const ck_keras_class *kc,
                      ck_layer_desc *d) {
    json_bind j = {{cls,
                    4,
                    jb_has,
                    jb_need,
                    jb_ints,
                    jb_get_int,
                    jb_get_pair,
                    jb_get_num,
                    jb_get_bool,
                    jb_get_padding,
                    jb_get_activation,
                    jb_only_none,
                    jb_only_bool,
                    jb_only_int,
                    jb_only_ones,
                    jb_ignore,
                    jb_get_initializer,
                    jb_data_format,
                    jb_seed,
                    jb_refuse,
                    jb_conflict},
                   C,
                   o};
    if (kc->bind(&j.b, d))
        return -1;
    ck_keras_class_keep(kc, d); /* ReLU, Softmax: named and shown as Keras does */
    return 0;
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
        return fail(C, "name is longer than %d bytes (UTF-8)", (int)sizeof d->name - 1);
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
    const ck_layer_kind *kind = NULL;
    const ck_keras_class *kc = ck_keras_class_find(cls, &kind);
    if (!kc) {
        char known[512];
        ck_keras_class_names(known, sizeof known, 0);
        return fail(C, "layer class is not supported by cnnkit (supported: %s, InputLayer)", known);
    }
    const char *const *known = kc->args;
    const ck_layer_type t = kind->type;
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
    if (bind_class(C, o, cls, kc, d))
        return -1;
    if (pending->input_h) { /* the shape of a preceding InputLayer */
        d->input_h = pending->input_h;
        d->input_w = pending->input_w;
        d->input_c = pending->input_c;
        d->input_flat = pending->input_flat;
        pending->input_h = 0;
    }
    C->cls = NULL;
    return 0;
}

/* ---- functional models: who reads whom ------------------------------------------------------ */
/* The layer a tensor comes from: index of km->layers[0 .. self), CK_LAYER_INPUT_MODEL for the
 * InputLayer in_name. hist is Keras's [layer name, node index, tensor index]. */
static int resolve(cfg *C, json_t *hist, const ck_keras_model *km, int self, const char *in_name,
                   json_t *layers, int *out) {
    json_t *nm = json_array_get(hist, 0), *ni = json_array_get(hist, 1),
           *ti = json_array_get(hist, 2);
    if (!json_is_array(hist) || json_array_size(hist) < 3 || !json_is_string(nm) ||
        !json_is_integer(ni) || !json_is_integer(ti))
        return fail(C, "an input tensor has no keras_history [layer name, node, tensor]");
    const char *name = json_string_value(nm);
    if (json_integer_value(ni) != 0 || json_integer_value(ti) != 0)
        return fail(C,
                    "reads output %lld of call %lld of layer '%.60s': shared layers and layers "
                    "with several outputs are not supported by cnnkit",
                    (long long)json_integer_value(ti), (long long)json_integer_value(ni), name);
    if (in_name[0] && !strcmp(name, in_name)) {
        *out = CK_LAYER_INPUT_MODEL;
        return 0;
    }
    for (int k = 0; k < self; ++k)
        if (!strcmp(km->layers[k].name, name)) {
            *out = k;
            return 0;
        }
    size_t i;
    json_t *e;
    json_array_foreach(layers, i, e) {
        json_t *o = json_object_get(e, "config");
        if (str_is(json_object_get(o, "name"), name))
            return fail(C,
                        "reads layer '%.60s', which config.json lists after it (layers must come "
                        "after the layers they read)",
                        name);
    }
    return fail(C, "reads layer '%.60s', which the model does not have", name);
}

/* An inbound node's keyword arguments: none, or only nulls (a mask not given), or training=false:
 * Keras 3 records it for Dropout / SpatialDropout2D / BN calls in a functional model, and fit,
 * evaluate and predict replace it with their own training flag (functional.py operation_fn), as
 * cnnkit's do. training=true would keep a dropout on in a direct model(x) call: refused. */
static int check_call_kwargs(cfg *C, json_t *kw) {
    const char *k;
    json_t *v;
    if (kw && !json_is_null(kw) && !json_is_object(kw))
        return fail(C, "the call's kwargs are not an object");
    json_object_foreach(kw, k, v) {
        if (!json_is_null(v) && !(!strcmp(k, "training") && json_is_false(v)))
            return unsupported(C, k, v, "none: a layer is called on its inputs only");
    }
    return 0;
}

/* d's inputs from the entry's inbound_nodes: Keras 3's [{"args": [tensor or [tensors]],
 * "kwargs": {}}] or Keras 2's [[[name, node, tensor, kwargs], ...]]. */
static int read_inbound(cfg *C, json_t *entry, const ck_keras_model *km, int self,
                        const char *in_name, json_t *layers, ck_layer_desc *d) {
    json_t *nodes = json_object_get(entry, "inbound_nodes");
    if (!json_is_array(nodes))
        return fail(C, "no inbound_nodes list (a functional model's layers say what they read)");
    if (json_array_size(nodes) == 0)
        return fail(C, "the layer is never called on a tensor (inbound_nodes is empty)");
    if (json_array_size(nodes) > 1)
        return fail(C, "the layer is called %zu times: shared layers are not supported by cnnkit",
                    json_array_size(nodes));
    json_t *node = json_array_get(nodes, 0), *ts[CK_MAX_LAYER_INPUTS];
    size_t nt = 0;
    int keras2 = 0;
    if (json_is_object(node)) {
        json_t *args = json_object_get(node, "args");
        if (!json_is_array(args) || json_array_size(args) != 1)
            return fail(C, "inbound node: expected one argument, a tensor or a list of tensors");
        if (check_call_kwargs(C, json_object_get(node, "kwargs")))
            return -1;
        json_t *a = json_array_get(args, 0);
        nt = json_is_array(a) ? json_array_size(a) : 1;
        for (size_t j = 0; j < nt && j < CK_MAX_LAYER_INPUTS; ++j)
            ts[j] = json_is_array(a) ? json_array_get(a, j) : a;
    } else if (json_is_array(node)) {
        keras2 = 1;
        nt = json_array_size(node);
        for (size_t j = 0; j < nt && j < CK_MAX_LAYER_INPUTS; ++j)
            ts[j] = json_array_get(node, j);
    } else {
        return fail(C, "inbound node: expected an object or a list");
    }
    if (nt == 0 || nt > CK_MAX_LAYER_INPUTS)
        return fail(C, "reads %zu tensors (cnnkit: 1 to %d)", nt, CK_MAX_LAYER_INPUTS);
    d->num_inputs = (int)nt;
    for (size_t j = 0; j < nt; ++j) {
        json_t *hist = ts[j];
        if (keras2) {
            if (json_array_size(hist) == 4 && check_call_kwargs(C, json_array_get(hist, 3)))
                return -1;
        } else {
            json_t *tc = json_object_get(ts[j], "config");
            if (!str_is(json_object_get(ts[j], "class_name"), "__keras_tensor__"))
                return fail(C, "inbound node: argument %zu is not a Keras tensor", j + 1);
            hist = json_object_get(tc, "keras_history");
        }
        if (resolve(C, hist, km, self, in_name, layers, &d->inputs[j]))
            return -1;
    }
    return 0;
}

/* input_layers / output_layers: Keras 3's [name, 0, 0] or a list of those; one only. */
static int endpoint(cfg *C, json_t *conf, const char *key, const char **name) {
    json_t *v = json_object_get(conf, key);
    if (json_is_array(v) && json_array_size(v) == 1 && json_is_array(json_array_get(v, 0)))
        v = json_array_get(v, 0);
    else if (json_is_array(v) && json_array_size(v) > 1 && json_is_array(json_array_get(v, 0)))
        return fail(C,
                    "config.json: the model has %zu %s; cnnkit models have one input and one "
                    "output",
                    json_array_size(v), key);
    json_t *nm = json_array_get(v, 0);
    if (!json_is_array(v) || !json_is_string(nm))
        return fail(C, "config.json: %s is missing or not [layer name, 0, 0]", key);
    *name = json_string_value(nm);
    return 0;
}

/* A functional model's layer entry: the InputLayer's name into in_name (one only), or d's
 * inputs. Layer names must be unique: Keras's tensors name the layer that made them. */
static int connect_layer(cfg *C, json_t *e, const ck_keras_model *km, int is_input, char *in_name,
                         json_t *layers, ck_layer_desc *d) {
    json_t *o = json_object_get(e, "config");
    const char *name = json_string_value(json_object_get(o, "name"));
    C->cls = json_string_value(json_object_get(e, "class_name"));
    C->lname = name ? name : "?";
    if (!name || !name[0])
        return fail(C, "the layer has no name (a functional model's tensors name their layer)");
    int taken = in_name[0] && !strcmp(in_name, name);
    for (int k = 0; k < km->count; ++k)
        taken |= !strcmp(km->layers[k].name, name);
    if (taken)
        return fail(C, "a second layer with this name (layer names must be unique)");
    if (is_input) {
        if (in_name[0])
            return fail(C,
                        "a second InputLayer (the first is '%s'): cnnkit models have one input, "
                        "not supported",
                        in_name);
        if (strlen(name) >= sizeof km->layers->name)
            return fail(C, "name is longer than %d bytes (UTF-8)",
                        (int)sizeof km->layers->name - 1);
        snprintf(in_name, sizeof km->layers->name, "%s", name);
        return 0;
    }
    return read_inbound(C, e, km, km->count, in_name, layers, d);
}

/* An InputLayer entry's name into in_name (cap bytes): a string without '/', or none. */
static int input_name_of(cfg *C, json_t *e, char *in_name, size_t cap) {
    json_t *nm = json_object_get(json_object_get(e, "config"), "name");
    if (!nm || json_is_null(nm))
        return 0;
    const char *s = json_string_value(nm);
    if (!s || strlen(s) >= cap || strchr(s, '/'))
        return fail(C, "InputLayer: name is not a string of at most %d bytes (UTF-8) without '/'",
                    (int)cap - 1);
    snprintf(in_name, cap, "%s", s);
    return 0;
}

/* One input, the InputLayer; one output, the last layer (every other one leads to it). */
static int check_endpoints(cfg *C, json_t *conf, const ck_keras_model *km, const char *in_name) {
    const char *iname, *oname;
    C->cls = NULL;
    if (endpoint(C, conf, "input_layers", &iname) || endpoint(C, conf, "output_layers", &oname))
        return -1;
    if (!in_name[0] || strcmp(iname, in_name))
        return fail(C,
                    "config.json: input_layers names '%.60s', which is not the model's "
                    "InputLayer",
                    iname);
    const char *last = km->layers[km->count - 1].name;
    if (strcmp(oname, last))
        return fail(C,
                    "config.json: output_layers names '%.60s', but the last layer is '%s' (the "
                    "output must be the last layer, every other one leading to it)",
                    oname, last);
    return 0;
}

/* compile_config's optimizer (Adam, AdamW, SGD, RMSprop) and loss into km. */
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
                  sgd = !strcasecmp(cls, "SGD"), rms = !strcasecmp(cls, "RMSprop"),
                  ada = !strcasecmp(cls, "Adadelta");
        if (!adam && !adamw && !sgd && !rms && !ada)
            return fail(C,
                        "compile: optimizer '%s' is not supported (Adam, AdamW, SGD, RMSprop, "
                        "Adadelta)",
                        cls);
        ck_optimizer_desc_init(&km->optimizer, sgd   ? CK_OPT_SGD
                                               : rms ? CK_OPT_RMSPROP
                                               : ada ? CK_OPT_ADADELTA
                                                     : CK_OPT_ADAM);
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
            static const char *const k_rms[] = {"rho", "centered", NULL};
            json_object_foreach(oc, k, v) {
                if (!in_list(k_opt, k) &&
                    !((rms || (ada && !strcmp(k, "rho"))) && in_list(k_rms, k)) &&
                    !json_is_null(v) && !json_is_false(v))
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
            if ((rms || ada) && get_num(C, oc, "rho", 0, 0.999999, &km->optimizer.rho))
                return -1;
            if (rms && get_bool(C, oc, "centered", &km->optimizer.centered))
                return -1;
            if (rms && km->optimizer.centered && km->optimizer.momentum > 0.0f)
                return unsupported(C, "centered", json_object_get(oc, "centered"),
                                   "false with momentum > 0 (cnnkit keeps two state arrays per "
                                   "parameter; this needs three)");
            if (!sgd)
                km->optimizer.nesterov = 0;
            if (!sgd && !rms)
                km->optimizer.momentum = 0;
            if (rms || ada)
                km->optimizer.beta1 = km->optimizer.beta2 = 0;
        }
        C->cls = NULL;
        km->has_compile = 1;
    }
    json_t *loss = json_object_get(cc, "loss");
    if (json_is_object(loss)) {
        json_t *lc = json_object_get(loss, "config");
        json_t *cls_v = json_object_get(loss, "class_name");
        loss = cls_v;
        if (str_is(cls_v, "SparseCategoricalCrossentropy"))
            snprintf(km->loss, sizeof km->loss, "sparse_categorical_crossentropy");
        else if (str_is(cls_v, "CategoricalCrossentropy"))
            snprintf(km->loss, sizeof km->loss, "categorical_crossentropy");
        else
            return fail(C, "compile: loss %s is not supported",
                        json_is_string(cls_v) ? json_string_value(cls_v) : "?");
        /* every option that changes the numbers is the default or refused, never dropped */
        C->cls = json_string_value(cls_v);
        C->lname = "loss";
        const char *k;
        json_t *v;
        if (lc && !json_is_object(lc))
            return fail(C, "config: expected an object");
        json_object_foreach(lc, k, v) {
            if (!strcmp(k, "name") ||
                (!strcmp(k, "dtype") && (json_is_null(v) || str_is(v, "float32"))))
                continue;
            if (!strcmp(k, "from_logits") && (json_is_boolean(v) || json_is_null(v))) {
                km->from_logits = json_is_true(v);
                continue;
            }
            /* None is no reduction in Keras 3 (per-sample losses), not the mean */
            if (!strcmp(k, "reduction") && (str_is(v, "sum_over_batch_size") || str_is(v, "auto")))
                continue;
            if ((!strcmp(k, "ignore_class") && json_is_null(v)) ||
                (!strcmp(k, "label_smoothing") && json_is_number(v) &&
                 json_number_value(v) == 0.0) ||
                (!strcmp(k, "axis") && json_is_integer(v) && json_integer_value(v) == -1))
                continue;
            return unsupported(C, k, v,
                               !strcmp(k, "reduction")         ? "'sum_over_batch_size' (the mean)"
                               : !strcmp(k, "ignore_class")    ? "None"
                               : !strcmp(k, "label_smoothing") ? "0"
                               : !strcmp(k, "axis")            ? "-1"
                                                               : NULL);
        }
        C->cls = NULL;
    } else if (json_is_string(loss)) {
        const char *l = json_string_value(loss);
        C->plain_loss = 1;
        if (strcmp(l, "sparse_categorical_crossentropy") && strcmp(l, "categorical_crossentropy"))
            return fail(C,
                        "compile: loss '%.60s' is not supported (sparse_categorical_"
                        "crossentropy or categorical_crossentropy)",
                        l);
        snprintf(km->loss, sizeof km->loss, "%s", l);
    } else if (loss && !json_is_null(loss)) {
        return fail(C, "compile: this loss is not supported");
    }
    /* one output: a weight of 1 is the plain loss, any other scales it */
    json_t *lw = json_object_get(cc, "loss_weights");
    if (json_is_array(lw) && json_array_size(lw) == 1)
        lw = json_array_get(lw, 0);
    else if (json_is_object(lw) && json_object_size(lw) == 1)
        lw = json_object_iter_value(json_object_iter(lw));
    if (lw && !json_is_null(lw) && !(json_is_number(lw) && json_number_value(lw) == 1.0)) {
        char *s = json_dumps(json_object_get(cc, "loss_weights"), JSON_ENCODE_ANY | JSON_COMPACT);
        fail(C, "compile: option loss_weights=%.80s is not supported by cnnkit (supported: None)",
             s ? s : "?");
        free(s); /* jansson's allocator */
        return -1;
    }
    return 0;
}

ck_status ck_kio_parse_config(const char *json, size_t len, const char *training_config,
                              ck_keras_model *out, char *err, size_t err_len) {
    return ck_kio_parse_config_by(json, len, training_config, 0, out, err, err_len);
}

ck_status ck_kio_parse_config_by(const char *json, size_t len, const char *training_config,
                                 int by_cnnkit, ck_keras_model *out, char *err, size_t err_len) {
    cfg C = {err, err_len, NULL, NULL, 0, by_cnnkit, 0};
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
    /* Keras 3 says Functional, Keras 2 Functional or Model */
    const int functional = str_is(cls, "Functional") || str_is(cls, "Model");
    if (!json_is_string(cls)) {
        fail(&C, "config.json: no class_name at the top level");
    } else if (strcmp(json_string_value(cls), "Sequential") && !functional) {
        fail(&C,
             "config.json: a %.40s model is not supported (cnnkit reads Sequential and "
             "Functional models)",
             json_string_value(cls));
        st = CK_STATUS_NOT_SUPPORTED;
    } else if (!json_is_array(layers) || json_array_size(layers) == 0) {
        fail(&C, "config.json: the %s model has no layers list", json_string_value(cls));
    } else if (json_array_size(layers) > 256 + (size_t)functional) {
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
        char in_name[sizeof km.layers->name] = "";
        /* a Sequential's own dtype (Keras 3 saves it; a Functional's is null) is checked, but
         * only the layers' policies say how Keras computes: it does not make the model bf16 */
        if (json_is_object(conf) && check_dtype(&C, json_object_get(conf, "dtype"))) {
            bad = 1;
            st = CK_STATUS_NOT_SUPPORTED;
            if (err && err_len) {
                char msg[512];
                snprintf(msg, sizeof msg, "%s", err);
                snprintf(err, err_len, "the %s model: %s", json_string_value(cls), msg);
            }
        }
        C.bf16 = 0;
        json_array_foreach(layers, i, e) {
            if (bad)
                break;
            int skip = 0;
            ck_layer_desc *d = &km.layers[km.count];
            int r = read_layer(&C, e, d, &skip, &pending);
            if (!r && functional)
                r = connect_layer(&C, e, &km, skip, in_name, layers, d);
            else if (!r && skip) /* a Sequential's InputLayer: its name, when it has one */
                r = input_name_of(&C, e, in_name, sizeof in_name);
            C.cls = NULL;
            if (r) {
                bad = 1;
                st = strstr(err ? err : "", "not supported") ? CK_STATUS_NOT_SUPPORTED
                                                             : CK_STATUS_BAD_PARAM;
                break;
            }
            km.count += !skip;
        }
        if (!bad && functional && km.count > 0 && check_endpoints(&C, conf, &km, in_name))
            bad = 1;
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
        /* cnnkit's writer before from_logits was written: a bare loss name on a model without
         * a final softmax meant logits, as cnnkit trained it */
        if (!bad && C.by_cnnkit && C.plain_loss && !ck_kio_ends_in_softmax(km.layers, km.count))
            km.from_logits = 1;
        if (!bad &&
            ck_kio_check_loss(km.layers, km.count, km.loss, km.from_logits, C.err, C.err_len)) {
            bad = 1;
            st = CK_STATUS_NOT_SUPPORTED;
        }
        if (!bad)
            st = CK_STATUS_SUCCESS;
        json_t *mname = json_is_object(conf) ? json_object_get(conf, "name") : NULL;
        /* the model's name: one cnnkit cannot hold (47 bytes, no '/') gives the default,
         * which changes nothing computed */
        if (!bad && json_is_string(mname)) {
            const char *s = json_string_value(mname);
            if (strlen(s) < sizeof km.name && !strchr(s, '/'))
                snprintf(km.name, sizeof km.name, "%s", s);
        }
        if (!bad)
            snprintf(km.input_name, sizeof km.input_name, "%s", in_name);
        if (C.bf16) { /* the policy, as set_global_policy('mixed_bfloat16') in a model file */
            km.has_precision = 1;
            km.precision = CK_PRECISION_BF16;
        }
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
