/* Keras text front end: a layer call (ck_kp_add_layer) bound through its kind's Keras class
 * (layer.h), Input items and the arguments every layer takes. See keras_internal.h. */
#include "keras_internal.h"
#include "layer.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Layers
 * ------------------------------------------------------------------------------------------- */
static const char *const input_p[] = {"shape",     "batch_size",  "name",   "dtype",
                                      "sparse",    "batch_shape", "tensor", "ragged",
                                      "type_spec", "optional",    NULL};
static const char *const inputlayer_p[] = {
    "input_shape", "batch_size", "dtype",       "input_tensor",      "sparse",   "name", "ragged",
    "type_spec",   "shape",      "batch_shape", "batch_input_shape", "optional", NULL};

int ck_kp_name_arg(kp *P, const kargs *a, char *dst, size_t cap) {
    const value *v = ck_kp_aval(a, "name");
    if (!v || v->kind == V_NONE)
        return 0;
    if (v->kind != V_STR)
        return ck_kp_type_err(P, a, v, "name", "a string");
    if (strlen(v->s) >= cap)
        return ck_kp_fail(P, v->line, v->col,
                          "expected a name of at most %d bytes (UTF-8) for %s, found %d",
                          (int)cap - 1, a->cls, (int)strlen(v->s));
    if (!v->s[0] || strchr(v->s, '/'))
        return ck_kp_fail(P, v->line, v->col,
                          "expected a name without '/' for %s (Keras refuses it), found '%s'",
                          a->cls, v->s);
    strcpy(dst, v->s);
    return 0;
}

/* Keyword arguments every layer takes (LAYER_COMMON). */
static int layer_common(kp *P, const kargs *a, ck_layer_desc *d) {
    if (ck_kp_name_arg(P, a, d->name, sizeof d->name) || ck_kp_only_bool(P, a, "trainable", 1) ||
        ck_kp_check_dtype(P, a))
        return -1;
    int bs = 0;
    value *v = ck_kp_aval(a, "batch_size");
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
    if (P->count == 0) {
        P->made_precision = P->precision;
        P->made_has_precision = P->has_precision;
    } else if (P->precision != P->made_precision) {
        return ck_kp_fail(P, v->line, v->col,
                          "expected every layer under one dtype policy, found this one made under "
                          "'%s' (set_global_policy at line %d) and the layers before it under "
                          "'%s': Keras gives them different policies, a cnnkit model has one "
                          "precision",
                          P->precision == CK_PRECISION_BF16 ? "mixed_bfloat16" : "float32",
                          P->policy_after_line,
                          P->made_precision == CK_PRECISION_BF16 ? "mixed_bfloat16" : "float32");
    }
    P->policy_after_line = 0;
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
        d->input_flat = P->flat_input;
    }
    /* (h, w) is read as h x w x 1, which only layers that map value to value cannot tell from
     * Keras's (None, h, w) before the Flatten (a softmax would normalize over w in Keras) */
    if (P->shape2d && !P->shape2d_flat) {
        const ck_layer_kind *k = ck_layer_kind_of(d->type);
        const int by_value = k && (k->flags & CK_LK_ELEMENTWISE) && !(k->flags & CK_LK_NEEDS_4D) &&
                             !(d->type == CK_LAYER_ACTIVATION && d->activation == CK_ACT_SOFTMAX);
        if (d->type == CK_LAYER_FLATTEN)
            P->shape2d_flat = 1;
        else if (!by_value)
            return ck_kp_fail(P, P->shape2d_line, P->shape2d_col,
                              "expected an input shape (height, width, channels): a 2-D shape is "
                              "only read when Flatten comes first or after value-by-value layers "
                              "(Rescaling, Dropout, Activation), found %s",
                              ck_layer_type_name(d->type));
    }
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
    /* a vector input (n,) is 1 x 1 x n inside, but flat to Keras: its axis= and a layer that
     * needs an image are read as Keras reads them (a 1 x 1 x c image stays an image) */
    if (P->count == 0 && d->input_c && !P->pending_input && P->shape_dims == 1)
        P->rank = 2, P->flat_input = d->input_flat = 1;
    const ck_layer_kind *kk = ck_layer_kind_of(d->type);
    if (P->flat_input && kk && (kk->flags & CK_LK_NEEDS_4D))
        return ck_kp_fail(P, v->line, v->col,
                          "expected a 4-D input (N, H, W, C) for %s, found the flat input (None, "
                          "%d)",
                          ck_layer_type_name(d->type), d->input_c ? d->input_c : P->in_c);
    if (d->type == CK_LAYER_DENSE || ck_lk_flattens(d->type))
        P->flat_input = 0; /* build sees a flat tensor from here */
    if (P->functional) {   /* the tensors it is called on (keras_func.c) */
        d->num_inputs = P->fn_nin;
        memcpy(d->inputs, P->fn_inputs, sizeof d->inputs);
    }
    P->layers[P->count++] = *d;
    if (ck_lk_flattens(d->type))
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
    if (ck_kp_name_arg(P, &a, P->input_name, sizeof P->input_name))
        return -1;
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
    P->rank = P->shape_dims == 1 ? 2 : 4; /* (n,) is a vector, (1, 1, c) an image */
    P->flat_input = P->shape_dims == 1;
    return 0;
}

/* ---- the kinds' Keras classes (layer.h ck_kbind) over this parser's readers ---- */
typedef struct text_bind {
    ck_kbind b;
    kp *P;
    const kargs *a;
} text_bind;

static int bind_class(kp *P, const value *call, const char *cls, const ck_layer_kind *k,
                      const ck_keras_class *kc, const char **names, kargs *a, ck_layer_desc *d);

/* An int that fits in int (a Python int may not). */
static int is_int(const value *v) {
    return v->kind == V_INT && v->i >= -0x7fffffffLL && v->i <= 0x7fffffffLL;
}
static int is_seq(const value *v) {
    return v->kind == V_TUPLE || v->kind == V_LIST;
}

#define TB(b) ((text_bind *)(b))

static int tb_has(ck_kbind *b, const char *key) {
    value *v = ck_kp_aval(TB(b)->a, key);
    return v && v->kind != V_NONE;
}
static int tb_need(ck_kbind *b, const char *key) {
    return ck_kp_need(TB(b)->P, TB(b)->a, key);
}

static int tb_ints(ck_kbind *b, const char *key, const char *want, int out[4], int *rows,
                   int *cols) {
    text_bind *t = TB(b);
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

static int tb_get_int(ck_kbind *b, const char *key, int lo, int *out) {
    return ck_kp_get_int(TB(b)->P, TB(b)->a, key, lo, out);
}
static int tb_get_pair(ck_kbind *b, const char *key, int *h, int *w) {
    return ck_kp_get_pair(TB(b)->P, TB(b)->a, key, h, w);
}
static int tb_get_num(ck_kbind *b, const char *key, double lo, int lo_open, double hi, int hi_open,
                      double *out) {
    return ck_kp_get_num(TB(b)->P, TB(b)->a, key, lo, lo_open, hi, hi_open, out);
}
static int tb_get_bool(ck_kbind *b, const char *key, int *out) {
    return ck_kp_get_bool(TB(b)->P, TB(b)->a, key, out);
}
static int tb_get_padding(ck_kbind *b, ck_padding *out) {
    return ck_kp_get_padding(TB(b)->P, TB(b)->a, out);
}

#define K_ACT_LIST "relu, sigmoid, tanh, softmax, linear, elu, leaky_relu, gelu, swish, silu"

/* activation= of Conv2D/Dense/Activation: a name string, None, a function name
 * (tf.nn.relu, keras.activations.relu) or an activation layer (LeakyReLU(0.1)). */
static int tb_get_activation(ck_kbind *b, const char *param, ck_activation *act, float *alpha) {
    kp *P = TB(b)->P;
    const kargs *a = TB(b)->a;
    value *v = ck_kp_aval(a, param);
    if (!v)
        return 0;
    if (v->kind == V_NONE) {
        *act = CK_ACT_NONE;
        return 0;
    }
    if (v->kind == V_STR || v->kind == V_NAME) {
        const char *nm = v->kind == V_STR ? v->s : ck_kp_last_component(v->s);
        int k = ck_activation_from_name(nm);
        if (k < 0)
            return ck_kp_fail(
                P, v->line, v->col,
                "unknown activation '%.60s' for %s of %s: expected one of " K_ACT_LIST,
                v->kind == V_STR ? v->s : nm, param, a->cls);
        *act = (ck_activation)k;
        if (k == CK_ACT_LEAKY_RELU)
            *alpha = 0.2f; /* keras.activations.leaky_relu / tf.nn.leaky_relu default */
        else if (k == CK_ACT_ELU)
            *alpha = 1.0f;
        return 0;
    }
    if (v->kind == V_CALL) { /* an activation layer: the Activation kind's other classes */
        const char *cls = ck_kp_last_component(v->s);
        const ck_layer_kind *k = NULL;
        const ck_keras_class *kc = ck_keras_class_find(cls, &k);
        if (kc && k->type == CK_LAYER_ACTIVATION && strcmp(cls, "Activation") != 0) {
            const char *names[KP_MAX_PARAMS + 1];
            kargs inner;
            ck_layer_desc d;
            if (bind_class(P, v, cls, k, kc, names, &inner, &d))
                return -1;
            *act = d.activation;
            *alpha = d.alpha;
            return 0;
        }
    }
    return ck_kp_type_err(P, a, v, param, "an activation name such as 'relu'");
}

static int tb_only_none(ck_kbind *b, const char *key) {
    return ck_kp_only_none(TB(b)->P, TB(b)->a, key);
}
static int tb_only_bool(ck_kbind *b, const char *key, int want) {
    return ck_kp_only_bool(TB(b)->P, TB(b)->a, key, want);
}
static int tb_only_int(ck_kbind *b, const char *key, int want) {
    return ck_kp_only_int(TB(b)->P, TB(b)->a, key, want);
}
static int tb_only_ones(ck_kbind *b, const char *key) {
    return ck_kp_only_ones(TB(b)->P, TB(b)->a, key);
}
static int tb_initializer(ck_kbind *b, const char *key, const char *want) {
    return ck_kp_check_init(TB(b)->P, TB(b)->a, key, want);
}
static int tb_get_initializer(ck_kbind *b, const char *key, ck_initializer *out) {
    kp *P = TB(b)->P;
    const kargs *a = TB(b)->a;
    value *v = ck_kp_aval(a, key);
    if (!v || v->kind == V_NONE) /* None: the default, as Keras's add_weight takes it */
        return 0;
    const char *name = v->kind == V_STR                           ? v->s
                       : (v->kind == V_CALL || v->kind == V_NAME) ? ck_kp_last_component(v->s)
                                                                  : NULL;
    int id = -1;
    for (int i = 1; name && id < 0 && i <= CK_INIT_ONES; ++i)
        if (ck_kp_loose_eq(name, ck_initializer_name((ck_initializer)i)))
            id = i;
    if (id < 0)
        return ck_kp_unsupported(P, a, key,
                                 "'glorot_uniform', 'glorot_normal', 'he_uniform', 'he_normal', "
                                 "'lecun_uniform', 'lecun_normal', 'zeros' or 'ones'");
    for (int i = 0; v->kind == V_CALL && i < v->n; ++i) { /* HeNormal(seed=1) */
        const karg *g = &v->args[i];
        if (!g->kw || strcmp(g->kw, "seed"))
            return ck_kp_fail(P, g->line, g->col,
                              "unsupported argument %s of %s for %s: expected none but seed",
                              g->kw ? g->kw : "(positional)", name, key);
        if (g->v->kind != V_NONE)
            ck_kp_warn(P,
                       "line %d: %s seed ignored (cnnkit draws initial weights from the context "
                       "seed)",
                       g->line, name);
    }
    *out = (ck_initializer)id;
    return 0;
}
static int tb_data_format(ck_kbind *b) {
    return ck_kp_check_data_format(TB(b)->P, TB(b)->a);
}

static int tb_seed(ck_kbind *b, const char *key) {
    value *s = ck_kp_aval(TB(b)->a, key);
    if (!s || s->kind == V_NONE)
        return 0;
    if (s->kind != V_INT)
        return ck_kp_type_err(TB(b)->P, TB(b)->a, s, key, "an integer or None");
    ck_kp_warn(TB(b)->P,
               "line %d: %s %s=%lld ignored (cnnkit draws dropout masks from the context seed)",
               s->line, b->cls, key, s->i);
    return 0;
}

static int tb_refuse(ck_kbind *b, const char *key, const char *want) {
    return ck_kp_unsupported(TB(b)->P, TB(b)->a, key, want);
}

static int tb_conflict(ck_kbind *b, const char *key1, const char *key2) {
    const kargs *a = TB(b)->a;
    int i = ck_kp_aidx(a, key2);
    return ck_kp_fail(TB(b)->P, a->line[i], a->col[i],
                      "expected one of %s and %s for %s, found both", key1, key2, a->cls);
}

/* Binds a class's own arguments plus the common ones (names: room for both) and fills d. */
static int bind_class(kp *P, const value *call, const char *cls, const ck_layer_kind *k,
                      const ck_keras_class *kc, const char **names, kargs *a, ck_layer_desc *d) {
    static const char *const common[] = {LAYER_COMMON, NULL};
    int n = 0;
    for (int i = 0; kc->args[i] && n < KP_MAX_PARAMS - 8; ++i)
        names[n++] = kc->args[i];
    for (int i = 0; common[i]; ++i)
        names[n++] = common[i];
    names[n] = NULL;
    ck_layer_desc_init(d, k->type);
    if (ck_kp_bind(P, call, cls, names, kc->npos, a))
        return -1;
    text_bind t = {{cls,
                    P->rank,
                    tb_has,
                    tb_need,
                    tb_ints,
                    tb_get_int,
                    tb_get_pair,
                    tb_get_num,
                    tb_get_bool,
                    tb_get_padding,
                    tb_get_activation,
                    tb_only_none,
                    tb_only_bool,
                    tb_only_int,
                    tb_only_ones,
                    tb_initializer,
                    tb_get_initializer,
                    tb_data_format,
                    tb_seed,
                    tb_refuse,
                    tb_conflict},
                   P,
                   a};
    if (kc->bind(&t.b, d))
        return -1;
    ck_keras_class_keep(kc, d); /* ReLU(), Softmax(): named and shown as Keras does */
    return 0;
}

/* Keras 2's Dense(input_dim=n): the first layer's input shape 1 x 1 x n. */
static int input_dim(kp *P, const kargs *a, ck_layer_desc *d) {
    value *dim = ck_kp_aval(a, "input_dim");
    if (!dim || dim->kind == V_NONE)
        return 0;
    int k = ck_kp_aidx(a, "input_dim");
    if (ck_kp_aval(a, "input_shape") || ck_kp_aval(a, "batch_input_shape"))
        return ck_kp_fail(P, a->line[k], a->col[k],
                          "expected one of input_dim and input_shape for %s, found both", a->cls);
    if (P->count > 0)
        return ck_kp_fail(P, a->line[k], a->col[k],
                          "expected input_dim only on the first layer, found it on layer %d",
                          P->count + 1);
    if (ck_kp_get_int(P, a, "input_dim", 1, &d->input_c))
        return -1;
    d->input_h = d->input_w = 1;
    return 0;
}

int ck_kp_add_layer(kp *P, const value *v) {
    char b[160];
    if (v->kind != V_CALL)
        return ck_kp_fail(P, v->line, v->col, "expected a layer such as Conv2D(...), found %s",
                          ck_kp_vdesc(v, b, sizeof b));
    const char *cls = ck_kp_last_component(v->s);
    if (!strcmp(cls, "Input") || !strcmp(cls, "InputLayer"))
        return input_item(P, v, cls);
    const ck_layer_kind *kind = NULL;
    const ck_keras_class *kc = ck_keras_class_find(cls, &kind);
    if (!kc) {
        char known[512];
        ck_keras_class_names(known, sizeof known, 0);
        return ck_kp_fail(P, v->line, v->col,
                          "unknown layer class '%.60s': expected one of %s, Input", cls, known);
    }
    const char *names[KP_MAX_PARAMS + 1];
    ck_layer_desc d;
    kargs a;
    if (bind_class(P, v, cls, kind, kc, names, &a, &d) || input_dim(P, &a, &d) ||
        layer_common(P, &a, &d))
        return -1;
    return append_layer(P, &d, v);
}
