/* Keras text front end: the parameters of each layer class and the layer descriptor a layer
 * call makes (ck_kp_add_layer). See keras_internal.h. */
#include "keras_internal.h"
#include "layer.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Layers
 * ------------------------------------------------------------------------------------------- */
/* Conv2D and Dense, in Keras' positional order: the activation and the weights' options. */
#define WEIGHTED_P                                                                                 \
    "activation", "use_bias", "kernel_initializer", "bias_initializer", "kernel_regularizer",      \
        "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint"
static const char *const conv_p[] = {
    "filters",       "kernel_size", "strides",  "padding",    "data_format",
    "dilation_rate", "groups",      WEIGHTED_P, LAYER_COMMON, NULL};
static const char *const dense_p[] = {"units", WEIGHTED_P, "input_dim", LAYER_COMMON, NULL};
static const char *const pool_p[] = {"pool_size",   "strides",    "padding",
                                     "data_format", LAYER_COMMON, NULL};
static const char *const gap_p[] = {"data_format", "keepdims", LAYER_COMMON, NULL};
static const char *const flatten_p[] = {"data_format", LAYER_COMMON, NULL};
static const char *const bn_p[] = {"axis",
                                   "momentum",
                                   "epsilon",
                                   "center",
                                   "scale",
                                   "beta_initializer",
                                   "gamma_initializer",
                                   "moving_mean_initializer",
                                   "moving_variance_initializer",
                                   "beta_regularizer",
                                   "gamma_regularizer",
                                   "beta_constraint",
                                   "gamma_constraint",
                                   "synchronized",
                                   "renorm",
                                   "renorm_clipping",
                                   "renorm_momentum",
                                   "fused",
                                   "virtual_batch_size",
                                   "adjustment",
                                   LAYER_COMMON,
                                   NULL};
static const char *const act_p[] = {"activation", LAYER_COMMON, NULL};
static const char *const dropout_p[] = {"rate", "noise_shape", "seed", LAYER_COMMON, NULL};
static const char *const sdropout_p[] = {"rate", "data_format", "seed", LAYER_COMMON, NULL};
static const char *const input_p[] = {"shape",     "batch_size",  "name",   "dtype",
                                      "sparse",    "batch_shape", "tensor", "ragged",
                                      "type_spec", "optional",    NULL};
static const char *const inputlayer_p[] = {
    "input_shape", "batch_size", "dtype",       "input_tensor",      "sparse",   "name", "ragged",
    "type_spec",   "shape",      "batch_shape", "batch_input_shape", "optional", NULL};

/* Keyword arguments every layer takes (LAYER_COMMON). */
static int layer_common(kp *P, const kargs *a, ck_layer_desc *d) {
    value *v = ck_kp_aval(a, "name");
    if (v && v->kind != V_NONE) {
        if (v->kind != V_STR)
            return ck_kp_type_err(P, a, v, "name", "a string");
        if (strlen(v->s) >= sizeof d->name)
            return ck_kp_fail(P, v->line, v->col,
                              "expected a name of at most %d characters for %s, found %d",
                              (int)sizeof d->name - 1, a->cls, (int)strlen(v->s));
        strcpy(d->name, v->s);
    }
    if (ck_kp_only_bool(P, a, "trainable", 1) || ck_kp_check_dtype(P, a))
        return -1;
    int bs = 0;
    v = ck_kp_aval(a, "batch_size");
    if (v && v->kind != V_NONE && ck_kp_get_int(P, a, "batch_size", 1, &bs))
        return -1;
    const char *shape_param = ck_kp_aval(a, "input_shape")         ? "input_shape"
                              : ck_kp_aval(a, "batch_input_shape") ? "batch_input_shape"
                                                                   : NULL;
    if (shape_param) {
        int i = ck_kp_aidx(a, shape_param);
        if (ck_kp_aval(a, "input_shape") && ck_kp_aval(a, "batch_input_shape"))
            return ck_kp_fail(P, a->line[i], a->col[i],
                              "expected one of input_shape and batch_input_shape for %s, found "
                              "both",
                              a->cls);
        if (P->count > 0)
            return ck_kp_fail(P, a->line[i], a->col[i],
                              "expected %s only on the first layer, found it on layer %d (%s)",
                              shape_param, P->count + 1, a->cls);
        if (ck_kp_shape_of(P, a, shape_param, shape_param[0] == 'b', &d->input_h, &d->input_w,
                           &d->input_c))
            return -1;
    }
    return 0;
}

static int append_layer(kp *P, ck_layer_desc *d, const value *v) {
    if (P->count == 0 && P->pending_input) {
        if (d->input_c && (d->input_h != P->in_h || d->input_w != P->in_w || d->input_c != P->in_c))
            return ck_kp_fail(P, v->line, v->col,
                              "expected the input shape of Input(...) at line %d (%d, %d, %d), "
                              "found input_shape (%d, %d, %d)",
                              P->in_line, P->in_h, P->in_w, P->in_c, d->input_h, d->input_w,
                              d->input_c);
        d->input_h = P->in_h;
        d->input_w = P->in_w;
        d->input_c = P->in_c;
    }
    if (P->count == 0 && P->shape2d && d->type != CK_LAYER_FLATTEN)
        return ck_kp_fail(P, P->shape2d_line, P->shape2d_col,
                          "expected an input shape (height, width, channels): a 2-D shape is only "
                          "read when the first layer is Flatten, found %s",
                          ck_layer_type_name(d->type));
    if (d->name[0])
        for (int i = 0; i < P->count; ++i)
            if (strcmp(P->layers[i].name, d->name) == 0)
                return ck_kp_fail(P, v->line, v->col,
                                  "expected unique layer names, found '%s' again (layer %d has it)",
                                  d->name, i + 1);
    if (P->count == P->cap) {
        int cap = P->cap ? P->cap * 2 : 16;
        ck_layer_desc *l =
            (ck_layer_desc *)ck_host_realloc(P->ctx, P->layers, (size_t)cap * sizeof *l);
        if (!l)
            return ck_kp_oom(P);
        P->layers = l;
        P->cap = cap;
    }
    if (P->count == 0 && d->input_c && d->input_h == 1 && d->input_w == 1)
        P->rank = 2;
    P->layers[P->count++] = *d;
    if (d->type == CK_LAYER_FLATTEN || d->type == CK_LAYER_GLOBALAVGPOOL2D)
        P->rank = 2;
    return 0;
}

static int input_item(kp *P, const value *v, const char *cls) {
    kargs a;
    int is_layer = !strcmp(cls, "InputLayer");
    if (ck_kp_bind(P, v, cls, is_layer ? inputlayer_p : input_p, 1, &a))
        return -1;
    if (P->count > 0 || P->pending_input)
        return ck_kp_fail(P, v->line, v->col, "expected %s(...) only before the first layer", cls);
    const char *shapes[] = {"shape", "input_shape", "batch_shape", "batch_input_shape"};
    const char *given = NULL;
    for (int i = 0; i < 4; ++i) {
        int k = ck_kp_aidx(&a, shapes[i]);
        if (k < 0 || !a.v[k])
            continue;
        if (given)
            return ck_kp_fail(P, a.line[k], a.col[k],
                              "expected one of %s and %s for %s, found both", given, shapes[i],
                              cls);
        given = shapes[i];
    }
    if (!given)
        return ck_kp_fail(P, v->line, v->col, "expected the argument shape of %s", cls);
    if (ck_kp_shape_of(P, &a, given, strstr(given, "batch") != NULL, &P->in_h, &P->in_w, &P->in_c))
        return -1;
    value *nm = ck_kp_aval(&a, "name");
    if (nm && nm->kind != V_NONE && nm->kind != V_STR)
        return ck_kp_type_err(P, &a, nm, "name", "a string");
    int bs = 0;
    value *b = ck_kp_aval(&a, "batch_size");
    if ((b && b->kind != V_NONE && ck_kp_get_int(P, &a, "batch_size", 1, &bs)) ||
        ck_kp_check_dtype(P, &a) || ck_kp_only_falsy(P, &a, "sparse") ||
        ck_kp_only_falsy(P, &a, "ragged") || ck_kp_only_none(P, &a, "tensor") ||
        ck_kp_only_none(P, &a, "input_tensor") || ck_kp_only_none(P, &a, "type_spec") ||
        ck_kp_only_falsy(P, &a, "optional"))
        return -1;
    P->pending_input = 1;
    P->in_line = v->line;
    P->in_col = v->col;
    if (P->in_h == 1 && P->in_w == 1)
        P->rank = 2;
    return 0;
}

/* Conv2D and Dense: the default initializers and no regularizer or constraint (in this order,
 * so the first offending argument is the one named). */
static int plain_weights(kp *P, const kargs *a) {
    return ck_kp_check_init(P, a, "kernel_initializer", "glorot_uniform") ||
           ck_kp_check_init(P, a, "bias_initializer", "zeros") ||
           ck_kp_only_none(P, a, "kernel_regularizer") ||
           ck_kp_only_none(P, a, "bias_regularizer") ||
           ck_kp_only_none(P, a, "activity_regularizer") ||
           ck_kp_only_none(P, a, "kernel_constraint") || ck_kp_only_none(P, a, "bias_constraint");
}

/* ---- the kinds that bind their own arguments (layer.h ck_kbind) ---- */
typedef struct text_bind {
    ck_kbind b;
    kp *P;
    const kargs *a;
} text_bind;

/* An int that fits in int (a Python int may not). */
static int is_int(const value *v) {
    return v->kind == V_INT && v->i >= -0x7fffffffLL && v->i <= 0x7fffffffLL;
}
static int is_seq(const value *v) {
    return v->kind == V_TUPLE || v->kind == V_LIST;
}

static int tb_ints(ck_kbind *b, const char *key, const char *want, int out[4], int *rows,
                   int *cols) {
    text_bind *t = (text_bind *)b;
    value *v = ck_kp_aval(t->a, key);
    *rows = -1;
    *cols = 0;
    if (!v || v->kind == V_NONE)
        return 0;
    int ok = 1, n = 0;
    if (is_int(v)) {
        out[n++] = (int)v->i;
        *rows = 0;
    } else if (is_seq(v) && v->n >= 1 && v->n <= 4) {
        *rows = v->n;
        *cols = is_seq(v->items[0]) ? v->items[0]->n : 0;
        ok = *cols <= 4 && *rows * (*cols ? *cols : 1) <= 4;
        for (int r = 0; ok && r < v->n; ++r) {
            const value *it = v->items[r];
            if (*cols == 0) {
                ok = is_int(it);
                out[n++] = ok ? (int)it->i : 0;
                continue;
            }
            ok = is_seq(it) && it->n == *cols;
            for (int c = 0; ok && c < *cols; ++c)
                if ((ok = is_int(it->items[c])))
                    out[n++] = (int)it->items[c]->i;
        }
    } else {
        ok = 0;
    }
    return ok ? 0 : ck_kp_type_err(t->P, t->a, v, key, want);
}

static int tb_refuse(ck_kbind *b, const char *key, const char *want) {
    text_bind *t = (text_bind *)b;
    return ck_kp_unsupported(t->P, t->a, key, want);
}

static int tb_data_format(ck_kbind *b) {
    text_bind *t = (text_bind *)b;
    return ck_kp_check_data_format(t->P, t->a);
}

/* Binds a kind's own arguments plus the common ones (names: room for both) and fills d. */
static int bind_kind(kp *P, const value *v, const char *cls, const ck_layer_kind *k,
                     const char **names, kargs *a, ck_layer_desc *d) {
    static const char *const common[] = {LAYER_COMMON, NULL};
    int n = 0;
    for (int i = 0; k->keras_args[i] && n < KP_MAX_PARAMS - 8; ++i)
        names[n++] = k->keras_args[i];
    for (int i = 0; common[i]; ++i)
        names[n++] = common[i];
    names[n] = NULL;
    ck_layer_desc_init(d, k->type);
    if (ck_kp_bind(P, v, cls, names, k->keras_npos, a))
        return -1;
    text_bind t = {{tb_ints, tb_refuse, tb_data_format}, P, a};
    return k->keras_bind(&t.b, d);
}

int ck_kp_add_layer(kp *P, const value *v) {
    char b[160];
    if (v->kind != V_CALL)
        return ck_kp_fail(P, v->line, v->col, "expected a layer such as Conv2D(...), found %s",
                          ck_kp_vdesc(v, b, sizeof b));
    const char *cls = ck_kp_last_component(v->s);
    if (!strcmp(cls, "Input") || !strcmp(cls, "InputLayer"))
        return input_item(P, v, cls);
    ck_layer_desc d;
    kargs a;
    double x;
    const char *names[KP_MAX_PARAMS + 1];
    const ck_layer_kind *kind;
    if (!strcmp(cls, "Conv2D")) {
        ck_layer_desc_init(&d, CK_LAYER_CONV2D);
        if (ck_kp_bind(P, v, cls, conv_p, 16, &a) || ck_kp_need(P, &a, "filters") ||
            ck_kp_need(P, &a, "kernel_size") || ck_kp_get_int(P, &a, "filters", 1, &d.units) ||
            ck_kp_get_pair(P, &a, "kernel_size", &d.kernel_h, &d.kernel_w) ||
            ck_kp_get_pair(P, &a, "strides", &d.stride_h, &d.stride_w) ||
            ck_kp_get_padding(P, &a, &d.padding) || ck_kp_check_data_format(P, &a) ||
            ck_kp_only_ones(P, &a, "dilation_rate") || ck_kp_only_int(P, &a, "groups", 1) ||
            ck_kp_get_activation(P, &a, "activation", &d.activation, &d.alpha) ||
            ck_kp_get_bool(P, &a, "use_bias", &d.use_bias) || plain_weights(P, &a))
            return -1;
    } else if (!strcmp(cls, "Dense")) {
        ck_layer_desc_init(&d, CK_LAYER_DENSE);
        if (ck_kp_bind(P, v, cls, dense_p, 10, &a) || ck_kp_need(P, &a, "units") ||
            ck_kp_get_int(P, &a, "units", 1, &d.units) ||
            ck_kp_get_activation(P, &a, "activation", &d.activation, &d.alpha) ||
            ck_kp_get_bool(P, &a, "use_bias", &d.use_bias) || plain_weights(P, &a))
            return -1;
        value *dim = ck_kp_aval(&a, "input_dim");
        if (dim && dim->kind != V_NONE) {
            int k = ck_kp_aidx(&a, "input_dim");
            if (ck_kp_aval(&a, "input_shape") || ck_kp_aval(&a, "batch_input_shape"))
                return ck_kp_fail(
                    P, a.line[k], a.col[k],
                    "expected one of input_dim and input_shape for Dense, found both");
            if (P->count > 0)
                return ck_kp_fail(
                    P, a.line[k], a.col[k],
                    "expected input_dim only on the first layer, found it on layer %d",
                    P->count + 1);
            if (ck_kp_get_int(P, &a, "input_dim", 1, &d.input_c))
                return -1;
            d.input_h = d.input_w = 1;
        }
    } else if (!strcmp(cls, "MaxPooling2D") || !strcmp(cls, "MaxPool2D") ||
               !strcmp(cls, "AveragePooling2D") || !strcmp(cls, "AvgPool2D")) {
        ck_layer_desc_init(&d, cls[0] == 'M' ? CK_LAYER_MAXPOOL2D : CK_LAYER_AVGPOOL2D);
        if (ck_kp_bind(P, v, cls, pool_p, 4, &a) ||
            ck_kp_get_pair(P, &a, "pool_size", &d.kernel_h, &d.kernel_w) ||
            ck_kp_get_padding(P, &a, &d.padding) || ck_kp_check_data_format(P, &a))
            return -1;
        d.stride_h = d.kernel_h;
        d.stride_w = d.kernel_w;
        value *s = ck_kp_aval(&a, "strides");
        if (s && s->kind != V_NONE && ck_kp_get_pair(P, &a, "strides", &d.stride_h, &d.stride_w))
            return -1;
    } else if (!strcmp(cls, "GlobalAveragePooling2D") || !strcmp(cls, "GlobalAvgPool2D")) {
        ck_layer_desc_init(&d, CK_LAYER_GLOBALAVGPOOL2D);
        if (ck_kp_bind(P, v, cls, gap_p, 2, &a) || ck_kp_check_data_format(P, &a) ||
            ck_kp_only_bool(P, &a, "keepdims", 0))
            return -1;
    } else if (!strcmp(cls, "Flatten")) {
        ck_layer_desc_init(&d, CK_LAYER_FLATTEN);
        if (ck_kp_bind(P, v, cls, flatten_p, 1, &a) || ck_kp_check_data_format(P, &a))
            return -1;
    } else if (!strcmp(cls, "BatchNormalization")) {
        ck_layer_desc_init(&d, CK_LAYER_BATCHNORM);
        if (ck_kp_bind(P, v, cls, bn_p, 13, &a))
            return -1;
        value *ax = ck_kp_aval(&a, "axis");
        if (ax && !(ax->kind == V_INT && (ax->i == -1 || ax->i == P->rank - 1)))
            return ck_kp_unsupported(P, &a, "axis", "-1 (the channels axis)");
        x = d.momentum;
        if (ck_kp_get_num(P, &a, "momentum", 0, 0, 1, 0, &x))
            return -1;
        d.momentum = (float)x;
        x = d.epsilon;
        if (ck_kp_get_num(P, &a, "epsilon", 0, 1, 1e308, 0, &x))
            return -1;
        d.epsilon = (float)x;
        if (ck_kp_only_bool(P, &a, "center", 1) || ck_kp_only_bool(P, &a, "scale", 1) ||
            ck_kp_check_init(P, &a, "beta_initializer", "zeros") ||
            ck_kp_check_init(P, &a, "gamma_initializer", "ones") ||
            ck_kp_check_init(P, &a, "moving_mean_initializer", "zeros") ||
            ck_kp_check_init(P, &a, "moving_variance_initializer", "ones") ||
            ck_kp_only_none(P, &a, "beta_regularizer") ||
            ck_kp_only_none(P, &a, "gamma_regularizer") ||
            ck_kp_only_none(P, &a, "beta_constraint") ||
            ck_kp_only_none(P, &a, "gamma_constraint") ||
            ck_kp_only_bool(P, &a, "synchronized", 0) || ck_kp_only_bool(P, &a, "renorm", 0) ||
            ck_kp_only_none(P, &a, "renorm_clipping") ||
            ck_kp_only_none(P, &a, "virtual_batch_size") || ck_kp_only_none(P, &a, "adjustment"))
            return -1;
        x = 0; /* renorm_momentum only matters with renorm=True; fused is an implementation hint */
        if (ck_kp_get_num(P, &a, "renorm_momentum", 0, 0, 1, 0, &x))
            return -1;
        value *f = ck_kp_aval(&a, "fused");
        int fb;
        if (f && f->kind != V_NONE && ck_kp_get_bool(P, &a, "fused", &fb))
            return -1;
    } else if (!strcmp(cls, "Activation")) {
        ck_layer_desc_init(&d, CK_LAYER_ACTIVATION);
        if (ck_kp_bind(P, v, cls, act_p, 1, &a) || ck_kp_need(P, &a, "activation") ||
            ck_kp_get_activation(P, &a, "activation", &d.activation, &d.alpha))
            return -1;
    } else if (ck_kp_is_act_class(cls)) {
        ck_layer_desc_init(&d, CK_LAYER_ACTIVATION);
        if (ck_kp_act_class(P, v, cls, &d.activation, &d.alpha, &a))
            return -1;
    } else if (!strcmp(cls, "Dropout") || !strcmp(cls, "SpatialDropout2D")) {
        int spatial = cls[0] == 'S';
        ck_layer_desc_init(&d, spatial ? CK_LAYER_SPATIAL_DROPOUT2D : CK_LAYER_DROPOUT);
        if (ck_kp_bind(P, v, cls, spatial ? sdropout_p : dropout_p, spatial ? 2 : 3, &a) ||
            ck_kp_need(P, &a, "rate") || ck_kp_get_num(P, &a, "rate", 0, 0, 1, 1, &x))
            return -1;
        d.rate = (float)x;
        if (spatial ? ck_kp_check_data_format(P, &a) : ck_kp_only_none(P, &a, "noise_shape"))
            return -1;
        value *s = ck_kp_aval(&a, "seed");
        if (s && s->kind != V_NONE) {
            if (s->kind != V_INT)
                return ck_kp_type_err(P, &a, s, "seed", "an integer or None");
            ck_kp_warn(P,
                       "line %d: %s seed=%lld ignored (cnnkit draws dropout masks from the "
                       "context seed)",
                       s->line, cls, s->i);
        }
    } else if ((kind = ck_layer_kind_keras(cls))) {
        if (bind_kind(P, v, cls, kind, names, &a, &d))
            return -1;
    } else {
        char more[256];
        ck_layer_kind_keras_names(more, sizeof more);
        return ck_kp_fail(P, v->line, v->col,
                          "unknown layer class '%.60s': expected one of " K_SUPPORTED_LIST
                          "%s, Input",
                          cls, more);
    }
    if (layer_common(P, &a, &d))
        return -1;
    return append_layer(P, &d, v);
}
