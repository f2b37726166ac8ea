/* Keras text front end: a class's arguments bound to its parameter names and the readers of
 * their values (ints, pairs, shapes, padding, activations); model.compile's optimizer and
 * loss. See keras_internal.h. */
#include "keras_internal.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Arguments of a class: positional and keyword arguments bound to parameter names
 * ------------------------------------------------------------------------------------------- */
int ck_kp_bind(kp *P, const value *call, const char *cls, const char *const *names, int npos,
               kargs *a) {
    memset(a, 0, sizeof *a);
    a->cls = cls;
    a->names = names;
    while (names[a->n])
        a->n++;
    a->cl = call->line;
    a->cc = call->col;
    int posi = 0;
    for (int i = 0; i < call->n; ++i) {
        const karg *g = &call->args[i];
        int idx = -1;
        if (!g->kw) {
            if (posi >= npos)
                return ck_kp_fail(P, g->line, g->col,
                                  "expected at most %d positional argument%s for %s, found more",
                                  npos, npos == 1 ? "" : "s", cls);
            idx = posi++;
        } else {
            for (int k = 0; k < a->n; ++k)
                if (strcmp(names[k], g->kw) == 0)
                    idx = k;
            if (idx < 0)
                return ck_kp_fail(P, g->line, g->col, "unknown argument '%s' of %s", g->kw, cls);
        }
        if (a->v[idx])
            return ck_kp_fail(P, g->line, g->col, "expected one value for %s of %s, found two",
                              names[idx], cls);
        a->v[idx] = g->v;
        a->line[idx] = g->line;
        a->col[idx] = g->col;
    }
    return 0;
}

int ck_kp_aidx(const kargs *a, const char *name) {
    for (int i = 0; i < a->n; ++i)
        if (strcmp(a->names[i], name) == 0)
            return i;
    return -1;
}
value *ck_kp_aval(const kargs *a, const char *name) {
    int i = ck_kp_aidx(a, name);
    return i >= 0 ? a->v[i] : NULL;
}

int ck_kp_type_err(kp *P, const kargs *a, const value *v, const char *param, const char *exp) {
    char b[160];
    return ck_kp_fail(P, v->line, v->col, "expected %s for %s of %s, found %s", exp, param, a->cls,
                      ck_kp_vdesc(v, b, sizeof b));
}
int ck_kp_unsupported(kp *P, const kargs *a, const char *param, const char *exp) {
    int i = ck_kp_aidx(a, param);
    char b[160];
    return ck_kp_fail(P, a->line[i], a->col[i],
                      "unsupported argument %s of %s: expected %s, found %s", param, a->cls, exp,
                      ck_kp_vdesc(a->v[i], b, sizeof b));
}
int ck_kp_need(kp *P, const kargs *a, const char *param) {
    if (ck_kp_aval(a, param))
        return 0;
    return ck_kp_fail(P, a->cl, a->cc, "expected the argument %s of %s", param, a->cls);
}

int ck_kp_get_int(kp *P, const kargs *a, const char *param, int lo, int *out) {
    value *v = ck_kp_aval(a, param);
    if (!v)
        return 0;
    if (v->kind != V_INT)
        return ck_kp_type_err(P, a, v, param, lo == 1 ? "a positive integer" : "an integer");
    if (v->i < lo || v->i > INT_MAX)
        return ck_kp_fail(P, v->line, v->col, "expected an integer >= %d for %s of %s, found %lld",
                          lo, param, a->cls, v->i);
    *out = (int)v->i;
    return 0;
}

static int pos_int(const value *v) {
    return v->kind == V_INT && v->i >= 1 && v->i <= INT_MAX;
}

/* An integer or a pair of integers, all >= 1 (kernel_size, strides, pool_size). */
int ck_kp_get_pair(kp *P, const kargs *a, const char *param, int *h, int *w) {
    value *v = ck_kp_aval(a, param);
    if (!v)
        return 0;
    if (pos_int(v)) {
        *h = *w = (int)v->i;
        return 0;
    }
    if ((v->kind == V_TUPLE || v->kind == V_LIST) && v->n == 2 && pos_int(v->items[0]) &&
        pos_int(v->items[1])) {
        *h = (int)v->items[0]->i;
        *w = (int)v->items[1]->i;
        return 0;
    }
    return ck_kp_type_err(P, a, v, param, "a positive integer or a pair of positive integers");
}

/* A number in [lo, hi] (hi_open: [lo, hi)); lo_open: (lo, ...). */
int ck_kp_get_num(kp *P, const kargs *a, const char *param, double lo, int lo_open, double hi,
                  int hi_open, double *out) {
    value *v = ck_kp_aval(a, param);
    if (!v)
        return 0;
    if (!ck_kp_is_num(v))
        return ck_kp_type_err(P, a, v, param, "a number");
    double x = v->f;
    if (!(x == x) || (lo_open ? x <= lo : x < lo) || (hi_open ? x >= hi : x > hi)) {
        char range[96];
        if (hi > 1e300)
            snprintf(range, sizeof range, "%s %g", lo_open ? ">" : ">=", lo);
        else
            snprintf(range, sizeof range, "in %c%g, %g%c", lo_open ? '(' : '[', lo, hi,
                     hi_open ? ')' : ']');
        return ck_kp_fail(P, v->line, v->col, "expected a number %s for %s of %s, found %g", range,
                          param, a->cls, x);
    }
    *out = x;
    return 0;
}

int ck_kp_get_bool(kp *P, const kargs *a, const char *param, int *out) {
    value *v = ck_kp_aval(a, param);
    if (!v)
        return 0;
    if (v->kind == V_BOOL || (v->kind == V_INT && (v->i == 0 || v->i == 1))) {
        *out = (int)v->i;
        return 0;
    }
    return ck_kp_type_err(P, a, v, param, "True or False");
}

int ck_kp_only_none(kp *P, const kargs *a, const char *param) {
    value *v = ck_kp_aval(a, param);
    return v && v->kind != V_NONE ? ck_kp_unsupported(P, a, param, "None") : 0;
}
int ck_kp_only_bool(kp *P, const kargs *a, const char *param, int want) {
    int b = want;
    if (ck_kp_get_bool(P, a, param, &b))
        return -1;
    return b != want ? ck_kp_unsupported(P, a, param, want ? "True" : "False") : 0;
}
/* None or False */
int ck_kp_only_falsy(kp *P, const kargs *a, const char *param) {
    value *v = ck_kp_aval(a, param);
    return v && v->kind != V_NONE ? ck_kp_only_bool(P, a, param, 0) : 0;
}
int ck_kp_only_int(kp *P, const kargs *a, const char *param, int want) {
    value *v = ck_kp_aval(a, param);
    if (v && !(v->kind == V_INT && v->i == want)) {
        char e[32];
        snprintf(e, sizeof e, "%d", want);
        return ck_kp_unsupported(P, a, param, e);
    }
    return 0;
}
/* 1 or (1, 1): dilation_rate */
int ck_kp_only_ones(kp *P, const kargs *a, const char *param) {
    int h = 1, w = 1;
    if (ck_kp_get_pair(P, a, param, &h, &w))
        return -1;
    return h != 1 || w != 1 ? ck_kp_unsupported(P, a, param, "1 or (1, 1)") : 0;
}
int ck_kp_check_data_format(kp *P, const kargs *a) {
    value *v = ck_kp_aval(a, "data_format");
    if (!v || v->kind == V_NONE || (v->kind == V_STR && strcmp(v->s, "channels_last") == 0))
        return 0;
    return ck_kp_unsupported(P, a, "data_format",
                             "'channels_last' or None (cnnkit is channels-last)");
}
/* An initializer that is the one cnnkit uses: 'glorot_uniform', GlorotUniform(), ... */
int ck_kp_check_init(kp *P, const kargs *a, const char *param, const char *want) {
    value *v = ck_kp_aval(a, param);
    if (!v)
        return 0;
    if ((v->kind == V_STR && ck_kp_loose_eq(v->s, want)) ||
        ((v->kind == V_CALL || v->kind == V_NAME) &&
         ck_kp_loose_eq(ck_kp_last_component(v->s), want) && v->n == 0))
        return 0;
    char e[64];
    snprintf(e, sizeof e, "'%s' (the initializer cnnkit uses)", want);
    return ck_kp_unsupported(P, a, param, e);
}
int ck_kp_check_dtype(kp *P, const kargs *a) {
    value *v = ck_kp_aval(a, "dtype");
    if (!v || v->kind == V_NONE || (v->kind == V_STR && strcmp(v->s, "float32") == 0) ||
        (v->kind == V_NAME && strcmp(ck_kp_last_component(v->s), "float32") == 0))
        return 0;
    return ck_kp_unsupported(P, a, "dtype", "'float32' or None");
}

int ck_kp_get_padding(kp *P, const kargs *a, ck_padding *out) {
    value *v = ck_kp_aval(a, "padding");
    if (!v)
        return 0;
    if (v->kind == V_STR && ck_kp_ieq(v->s, "valid"))
        *out = CK_PADDING_VALID;
    else if (v->kind == V_STR && ck_kp_ieq(v->s, "same"))
        *out = CK_PADDING_SAME;
    else
        return ck_kp_type_err(P, a, v, "padding", "'valid' or 'same'");
    return 0;
}

/* Shape (h, w, c) or (n,) -> 1 x 1 x n. skip_batch: the first item is the batch size. */
int ck_kp_shape_of(kp *P, const kargs *a, const char *param, int skip_batch, int *h, int *w,
                   int *c) {
    value *v = ck_kp_aval(a, param);
    const char *exp = skip_batch ? "a shape (batch, height, width, channels)"
                                 : "a shape (height, width, channels)";
    if (!skip_batch && pos_int(v)) {
        *h = *w = 1;
        *c = (int)v->i;
        P->shape_dims = 1;
        return 0;
    }
    if (v->kind != V_TUPLE && v->kind != V_LIST)
        return ck_kp_type_err(P, a, v, param, exp);
    int k = skip_batch ? 1 : 0, m = v->n - k;
    if (skip_batch && (v->n < 1 || (v->items[0]->kind != V_NONE && !pos_int(v->items[0]))))
        return ck_kp_type_err(P, a, v, param, exp);
    if (m < 1 || m > 3)
        return ck_kp_type_err(P, a, v, param, exp);
    for (int i = k; i < v->n; ++i) {
        value *it = v->items[i];
        if (it->kind == V_NONE)
            return ck_kp_fail(P, it->line, it->col,
                              "expected a known size in %s of %s, found None (variable sizes are "
                              "not supported)",
                              param, a->cls);
        if (!pos_int(it))
            return ck_kp_type_err(P, a, it, param, "positive integer sizes");
    }
    P->shape_dims = m;
    if (m >= 2) {
        *h = (int)v->items[k]->i;
        *w = (int)v->items[k + 1]->i;
        *c = m == 3 ? (int)v->items[k + 2]->i : 1;
        if (m == 2) { /* (28, 28) before Flatten: the same as (28, 28, 1) */
            P->shape2d = 1;
            P->shape2d_line = v->line;
            P->shape2d_col = v->col;
        }
    } else {
        *h = *w = 1;
        *c = (int)v->items[k]->i;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * model.compile: optimizer and loss
 * ------------------------------------------------------------------------------------------- */
static const char *const compile_p[] = {"optimizer",
                                        "loss",
                                        "metrics",
                                        "loss_weights",
                                        "weighted_metrics",
                                        "run_eagerly",
                                        "steps_per_execution",
                                        "jit_compile",
                                        "auto_scale_loss",
                                        "pss_evaluation_shards",
                                        NULL};
#define OPT_COMMON                                                                                 \
    "clipnorm", "clipvalue", "global_clipnorm", "use_ema", "ema_momentum",                         \
        "ema_overwrite_frequency", "lr", "decay", "name", "jit_compile", "loss_scale_factor",      \
        "gradient_accumulation_steps"
static const char *const adam_p[] = {"learning_rate", "beta_1",       "beta_2",   "epsilon",
                                     "amsgrad",       "weight_decay", OPT_COMMON, NULL};
static const char *const adamw_p[] = {"learning_rate", "weight_decay", "beta_1",   "beta_2",
                                      "epsilon",       "amsgrad",      OPT_COMMON, NULL};
static const char *const sgd_p[] = {"learning_rate", "momentum", "nesterov",
                                    "weight_decay",  OPT_COMMON, NULL};
static const char *const adadelta_p[] = {"learning_rate", "rho",      "epsilon",
                                         "weight_decay",  OPT_COMMON, NULL};
static const char *const rmsprop_p[] = {"learning_rate", "rho",          "momentum", "epsilon",
                                        "centered",      "weight_decay", OPT_COMMON, NULL};
static const char *const xent_p[] = {"from_logits", "label_smoothing", "axis",  "reduction",
                                     "name",        "ignore_class",    "dtype", NULL};

#define K_OPT_LIST                                                                                 \
    "'adam', 'adamw', 'sgd', 'rmsprop', 'adadelta', Adam(...), AdamW(...), SGD(...), "             \
    "RMSprop(...) "                                                                                \
    "or Adadelta(...)"

/* epsilon > 0; None: the Keras backend epsilon, 1e-7 (the desc's default) */
static int get_epsilon(kp *P, const kargs *a, ck_optimizer_desc *o) {
    value *eps = ck_kp_aval(a, "epsilon");
    if (!eps || eps->kind == V_NONE)
        return 0;
    double x = o->epsilon;
    if (ck_kp_get_num(P, a, "epsilon", 0, 1, 1e308, 0, &x))
        return -1;
    o->epsilon = (float)x;
    return 0;
}

static int get_optimizer(kp *P, const value *v, ck_optimizer_desc *o) {
    char b[160];
    if (v->kind == V_STR) {
        if (ck_kp_ieq(v->s, "adam") || ck_kp_ieq(v->s, "adamw")) {
            ck_optimizer_desc_init(o, CK_OPT_ADAM);
            if (ck_kp_ieq(v->s, "adamw"))
                o->weight_decay = 0.004f;
        } else if (ck_kp_ieq(v->s, "sgd"))
            ck_optimizer_desc_init(o, CK_OPT_SGD);
        else if (ck_kp_ieq(v->s, "rmsprop"))
            ck_optimizer_desc_init(o, CK_OPT_RMSPROP);
        else if (ck_kp_ieq(v->s, "adadelta"))
            ck_optimizer_desc_init(o, CK_OPT_ADADELTA);
        else
            return ck_kp_fail(P, v->line, v->col,
                              "unsupported optimizer '%.40s': expected " K_OPT_LIST, v->s);
        return 0;
    }
    const char *cls = v->kind == V_CALL ? ck_kp_last_component(v->s) : "";
    int adam = !strcmp(cls, "Adam"), adamw = !strcmp(cls, "AdamW"), sgd = !strcmp(cls, "SGD"),
        rms = !strcmp(cls, "RMSprop"), ada = !strcmp(cls, "Adadelta");
    if (!adam && !adamw && !sgd && !rms && !ada) {
        if (v->kind == V_CALL)
            return ck_kp_fail(P, v->line, v->col,
                              "unsupported optimizer %.60s(...): expected " K_OPT_LIST, v->s);
        return ck_kp_fail(P, v->line, v->col, "expected an optimizer (" K_OPT_LIST "), found %s",
                          ck_kp_vdesc(v, b, sizeof b));
    }
    kargs a;
    if (ck_kp_bind(P, v, cls,
                   adam    ? adam_p
                   : adamw ? adamw_p
                   : rms   ? rmsprop_p
                   : ada   ? adadelta_p
                           : sgd_p,
                   sgd || ada ? 4 : 6, &a))
        return -1;
    ck_optimizer_desc_init(o, sgd   ? CK_OPT_SGD
                              : rms ? CK_OPT_RMSPROP
                              : ada ? CK_OPT_ADADELTA
                                    : CK_OPT_ADAM);
    if (adamw)
        o->weight_decay = 0.004f;
    double x;
    if (ck_kp_aval(&a, "learning_rate") && ck_kp_aval(&a, "lr")) {
        int i = ck_kp_aidx(&a, "lr");
        return ck_kp_fail(P, a.line[i], a.col[i],
                          "expected one of learning_rate and lr for %s, found both", cls);
    }
    const char *lr = ck_kp_aval(&a, "lr") ? "lr" : "learning_rate";
    x = o->learning_rate;
    if (ck_kp_get_num(P, &a, lr, 0, 0, 1e308, 0, &x)) /* 0: frozen, as Keras allows */
        return -1;
    o->learning_rate = (float)x;
    value *wd = ck_kp_aval(&a, "weight_decay");
    if (wd && wd->kind != V_NONE) {
        if (ck_kp_get_num(P, &a, "weight_decay", 0, 0, 1e308, 0, &x))
            return -1;
        o->weight_decay = (float)x;
    }
    if (sgd) {
        x = 0;
        if (ck_kp_get_num(P, &a, "momentum", 0, 0, 1, 0, &x) ||
            ck_kp_get_bool(P, &a, "nesterov", &o->nesterov))
            return -1;
        o->momentum = (float)x;
    } else if (ada) {
        x = o->rho;
        if (ck_kp_get_num(P, &a, "rho", 0, 0, 1, 1, &x) || get_epsilon(P, &a, o))
            return -1;
        o->rho = (float)x;
    } else if (rms) {
        x = o->rho;
        if (ck_kp_get_num(P, &a, "rho", 0, 0, 1, 1, &x))
            return -1;
        o->rho = (float)x;
        x = 0;
        if (ck_kp_get_num(P, &a, "momentum", 0, 0, 1, 1, &x) ||
            ck_kp_get_bool(P, &a, "centered", &o->centered))
            return -1;
        o->momentum = (float)x;
        if (get_epsilon(P, &a, o))
            return -1;
        if (o->centered && o->momentum > 0.0f)
            return ck_kp_unsupported(P, &a, "centered",
                                     "False with momentum > 0 (cnnkit keeps two state arrays per "
                                     "parameter; this needs three)");
    } else {
        x = o->beta1;
        if (ck_kp_get_num(P, &a, "beta_1", 0, 0, 1, 1, &x))
            return -1;
        o->beta1 = (float)x;
        x = o->beta2;
        if (ck_kp_get_num(P, &a, "beta_2", 0, 0, 1, 1, &x))
            return -1;
        o->beta2 = (float)x;
        if (get_epsilon(P, &a, o))
            return -1;
        if (ck_kp_only_bool(P, &a, "amsgrad", 0))
            return -1;
    }
    value *dec = ck_kp_aval(&a, "decay");
    if (dec && !(ck_kp_is_num(dec) && dec->f == 0.0))
        return ck_kp_unsupported(P, &a, "decay", "0 (learning-rate decay is not supported)");
    value *nm = ck_kp_aval(&a, "name");
    if (nm && nm->kind != V_STR && nm->kind != V_NONE)
        return ck_kp_type_err(P, &a, nm, "name", "a string");
    if (ck_kp_only_none(P, &a, "clipnorm") || ck_kp_only_none(P, &a, "clipvalue") ||
        ck_kp_only_none(P, &a, "global_clipnorm") || ck_kp_only_falsy(P, &a, "use_ema") ||
        ck_kp_only_none(P, &a, "loss_scale_factor") ||
        ck_kp_only_none(P, &a, "gradient_accumulation_steps"))
        return -1;
    return 0; /* ema_momentum / ema_overwrite_frequency only matter with use_ema; jit_compile
                 is an implementation hint */
}

static int get_loss(kp *P, const value *v, char *loss, size_t len, int *from_logits) {
    static const char *const names[] = {"sparse_categorical_crossentropy",
                                        "categorical_crossentropy"};
    char b[160];
    if (v->kind == V_NONE) {
        loss[0] = '\0';
        return 0;
    }
    const char *nm = v->kind == V_STR                           ? v->s
                     : (v->kind == V_NAME || v->kind == V_CALL) ? ck_kp_last_component(v->s)
                                                                : NULL;
    for (int i = 0; nm && i < 2; ++i) {
        if (!ck_kp_loose_eq(nm, names[i]))
            continue;
        if (v->kind == V_CALL) {
            kargs a;
            if (ck_kp_bind(P, v, ck_kp_last_component(v->s), xent_p, 0, &a))
                return -1;
            value *fl = ck_kp_aval(&a, "from_logits"); /* None: Keras's falsy default */
            if ((fl && fl->kind != V_NONE && ck_kp_get_bool(P, &a, "from_logits", from_logits)) ||
                ck_kp_only_none(P, &a, "ignore_class") || ck_kp_check_dtype(P, &a))
                return -1;
            value *ax = ck_kp_aval(&a, "axis");
            if (ax && !(ax->kind == V_INT && ax->i == -1))
                return ck_kp_unsupported(P, &a, "axis", "-1");
            value *ls = ck_kp_aval(&a, "label_smoothing");
            if (ls && !(ck_kp_is_num(ls) && ls->f == 0.0))
                return ck_kp_unsupported(P, &a, "label_smoothing", "0");
            value *r = ck_kp_aval(&a, "reduction"); /* None: no reduction in Keras 3 */
            if (r && !(r->kind == V_STR &&
                       (!strcmp(r->s, "auto") || !strcmp(r->s, "sum_over_batch_size"))))
                return ck_kp_unsupported(P, &a, "reduction", "'sum_over_batch_size' (the mean)");
        }
        snprintf(loss, len, "%s", names[i]);
        return 0;
    }
    return ck_kp_fail(P, v->line, v->col,
                      "unsupported loss: expected 'sparse_categorical_crossentropy' or "
                      "'categorical_crossentropy', found %s",
                      ck_kp_vdesc(v, b, sizeof b));
}

int ck_kp_do_compile(kp *P, const value *call) {
    kargs a;
    if (ck_kp_bind(P, call, "compile", compile_p, 3, &a))
        return -1;
    value *ov = ck_kp_aval(&a, "optimizer");
    ck_optimizer_desc o;
    char loss[64] = "";
    ck_optimizer_desc_init(&o, CK_OPT_RMSPROP); /* compile's default, as Keras */
    if (ov && get_optimizer(P, ov, &o))
        return -1;
    value *lv = ck_kp_aval(&a, "loss");
    int from_logits = 0;
    if (lv && get_loss(P, lv, loss, sizeof loss, &from_logits))
        return -1;
    if (ck_kp_only_none(P, &a, "loss_weights"))
        return -1;
    /* metrics / weighted_metrics only report; run_eagerly, steps_per_execution, jit_compile,
       auto_scale_loss, pss_evaluation_shards are execution settings */
    P->has_compile = 1;
    P->opt = o;
    memcpy(P->loss, loss, sizeof loss);
    P->from_logits = from_logits;
    P->loss_line = lv ? lv->line : call->line;
    P->loss_col = lv ? lv->col : call->col;
    return 0;
}
