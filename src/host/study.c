/* The order study (include/cnnkit/study.h): variants of the Conv blocks, their exact
 * equivalences, and a runner that trains each variant for several seeds. */
#include "cnnkit/study.h"

#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const kind_names[CK_STUDY_KIND_COUNT] = {
    "original",        "asker",
    "bn-after-relu",   "dropout-before-pool",
    "spatial-dropout", "dropout-after-last-bn"};

CK_API const char *ck_study_kind_name(int kind) {
    return kind >= 0 && kind < CK_STUDY_KIND_COUNT ? kind_names[kind] : NULL;
}

CK_API int ck_study_kind_from_name(const char *name) {
    for (int k = 0; name && k < CK_STUDY_KIND_COUNT; ++k)
        if (!strcmp(name, kind_names[k]))
            return k;
    return -1;
}

static void set_err(char *err, size_t len, const char *fmt, ...) CK_PRINTF(3, 4);
static void set_err(char *err, size_t len, const char *fmt, ...) {
    if (!err || !len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

/* ---- layer lists ---------------------------------------------------------------------------- */

typedef struct llist {
    ck_layer_desc *d;
    int n, cap;
} llist;

static int ll_reserve(llist *l, int cap) {
    if (cap <= l->cap)
        return 0;
    ck_layer_desc *p = (ck_layer_desc *)ck_host_realloc(NULL, l->d, sizeof *p * (size_t)cap);
    if (!p)
        return -1;
    l->d = p;
    l->cap = cap;
    return 0;
}

static int ll_push(llist *l, const ck_layer_desc *d) {
    if (l->n == l->cap && ll_reserve(l, l->cap ? 2 * l->cap : 16))
        return -1;
    l->d[l->n++] = *d;
    return 0;
}

static int is_drop_t(ck_layer_type t) {
    return t == CK_LAYER_DROPOUT || t == CK_LAYER_SPATIAL_DROPOUT2D;
}
static int is_pool_t(ck_layer_type t) {
    return t == CK_LAYER_MAXPOOL2D || t == CK_LAYER_AVGPOOL2D;
}

/* Copy with names cleared and Conv2D inline activations written as Activation layers (Dense too
 * when all_inline). The first layer's input shape stays on whatever layer ends up first (fixed
 * by move_input_shape). */
static int expand(const ck_layer_desc *L, int n, int all_inline, llist *out) {
    for (int i = 0; i < n; ++i) {
        ck_layer_desc d = L[i];
        d.name[0] = '\0';
        const int split = d.activation != CK_ACT_NONE &&
                          (d.type == CK_LAYER_CONV2D || (all_inline && d.type == CK_LAYER_DENSE));
        ck_activation act = d.activation;
        float alpha = d.alpha;
        if (split)
            d.activation = CK_ACT_NONE;
        if (ll_push(out, &d))
            return -1;
        if (split) {
            ck_layer_desc a;
            ck_layer_desc_init(&a, CK_LAYER_ACTIVATION);
            a.activation = act;
            a.alpha = alpha;
            if (ll_push(out, &a))
                return -1;
        }
    }
    return 0;
}

/* The input shape given on the first layer of the original goes on the first layer of l. */
static void move_input_shape(llist *l, int h, int w, int c) {
    for (int i = 0; i < l->n; ++i)
        l->d[i].input_h = l->d[i].input_w = l->d[i].input_c = 0;
    if (l->n) {
        l->d[0].input_h = h;
        l->d[0].input_w = w;
        l->d[0].input_c = c;
    }
}

/* Conv blocks of l: starts[k] .. starts[k + 1] (the last ends at *head). Returns the count. */
static int find_blocks(const llist *l, int *starts, int max, int *head) {
    int h = l->n;
    for (int i = 0; i < l->n; ++i)
        if (l->d[i].type == CK_LAYER_FLATTEN || l->d[i].type == CK_LAYER_GLOBALAVGPOOL2D ||
            l->d[i].type == CK_LAYER_DENSE) {
            h = i;
            break;
        }
    *head = h;
    int nb = 0, pool_seen = 1;
    for (int i = 0; i < h; ++i) {
        if (l->d[i].type == CK_LAYER_CONV2D && pool_seen && nb < max) {
            starts[nb++] = i;
            pool_seen = 0;
        }
        if (is_pool_t(l->d[i].type))
            pool_seen = 1;
    }
    return nb;
}

/* ---- the transforms, on one block [s, e) of src, appended to dst ----------------------------- */

static int tf_block(int kind, const ck_layer_desc *b, int n, llist *dst) {
    llist t = {0};
    int rc = 0;
    switch (kind) {
    case CK_STUDY_ASKER: {
        float rate = 0.0f;
        int last_conv = -1, ndrop = 0;
        for (int i = 0; i < n; ++i) {
            if (is_drop_t(b[i].type)) {
                ++ndrop;
                rate = b[i].rate > rate ? b[i].rate : rate;
            }
            if (b[i].type == CK_LAYER_CONV2D)
                last_conv = i;
        }
        for (int i = 0; i < n && !rc; ++i) {
            if (ndrop && is_drop_t(b[i].type))
                continue;
            rc |= ll_push(&t, &b[i]);
            if (ndrop && i == last_conv) {
                ck_layer_desc sd;
                ck_layer_desc_init(&sd, CK_LAYER_SPATIAL_DROPOUT2D);
                sd.rate = rate;
                rc |= ll_push(&t, &sd);
            }
        }
        break;
    }
    case CK_STUDY_BN_AFTER_RELU:
        for (int i = 0; i < n && !rc; ++i) {
            if (b[i].type == CK_LAYER_BATCHNORM && i + 1 < n &&
                b[i + 1].type == CK_LAYER_ACTIVATION) {
                rc |= ll_push(&t, &b[i + 1]);
                rc |= ll_push(&t, &b[i]);
                ++i;
            } else {
                rc |= ll_push(&t, &b[i]);
            }
        }
        break;
    case CK_STUDY_DROPOUT_BEFORE_POOL: {
        int pool = -1;
        for (int i = 0; i < n && pool < 0; ++i)
            if (is_pool_t(b[i].type))
                pool = i;
        for (int i = 0; i < n && !rc; ++i) {
            if (pool >= 0 && is_drop_t(b[i].type))
                continue;
            if (i == pool)
                for (int j = 0; j < n; ++j)
                    if (is_drop_t(b[j].type))
                        rc |= ll_push(&t, &b[j]);
            rc |= ll_push(&t, &b[i]);
        }
        break;
    }
    case CK_STUDY_SPATIAL_DROPOUT:
        for (int i = 0; i < n && !rc; ++i) {
            ck_layer_desc d = b[i];
            if (d.type == CK_LAYER_DROPOUT)
                d.type = CK_LAYER_SPATIAL_DROPOUT2D;
            rc |= ll_push(&t, &d);
        }
        break;
    default:
        for (int i = 0; i < n && !rc; ++i)
            rc |= ll_push(&t, &b[i]);
        break;
    }
    for (int i = 0; i < t.n && !rc; ++i)
        rc |= ll_push(dst, &t.d[i]);
    ck_host_free(NULL, t.d);
    return rc ? -1 : 0;
}

/* dropout-after-last-bn, on the whole list */
static int tf_after_last_bn(const llist *src, llist *dst) {
    int last_bn = -1, last_weight = -1;
    for (int i = 0; i < src->n; ++i) {
        if (src->d[i].type == CK_LAYER_BATCHNORM)
            last_bn = i;
        if (src->d[i].type == CK_LAYER_CONV2D || src->d[i].type == CK_LAYER_DENSE)
            last_weight = i;
    }
    float removed = 0.0f;
    int kept_after = 0;
    for (int i = 0; i < src->n; ++i)
        if (is_drop_t(src->d[i].type)) {
            if (i < last_bn)
                removed = src->d[i].rate > removed ? src->d[i].rate : removed;
            else
                kept_after = 1;
        }
    const int add = removed > 0.0f && !kept_after && last_weight > last_bn;
    for (int i = 0; i < src->n; ++i) {
        if (is_drop_t(src->d[i].type) && i < last_bn)
            continue;
        if (add && i == last_weight) {
            ck_layer_desc d;
            ck_layer_desc_init(&d, CK_LAYER_DROPOUT);
            d.rate = removed;
            if (ll_push(dst, &d))
                return -1;
        }
        if (ll_push(dst, &src->d[i]))
            return -1;
    }
    return 0;
}

static char letter(const ck_layer_desc *d) {
    switch (d->type) {
    case CK_LAYER_CONV2D:
        return 'C';
    case CK_LAYER_BATCHNORM:
        return 'B';
    case CK_LAYER_ACTIVATION:
        return d->activation == CK_ACT_RELU ? 'R' : 'A';
    case CK_LAYER_MAXPOOL2D:
    case CK_LAYER_AVGPOOL2D:
        return 'P';
    case CK_LAYER_DROPOUT:
        return 'D';
    case CK_LAYER_SPATIAL_DROPOUT2D:
        return 'S';
    default:
        return '?';
    }
}

/* "C-B-R-P-D ; C-B-R-P-D", or "2x C-B-R-P-D" when every block has the same order. */
static void render_order(const llist *l, char *buf, size_t len) {
    int starts[CK_STUDY_MAX_MEASURE * 4], head;
    const int nb = find_blocks(l, starts, (int)(sizeof starts / sizeof *starts), &head);
    char blk[CK_STUDY_MAX_MEASURE * 4][64];
    int same = 1;
    for (int k = 0; k < nb; ++k) {
        const int e = k + 1 < nb ? starts[k + 1] : head;
        size_t p = 0;
        for (int i = starts[k]; i < e && p + 3 < sizeof blk[k]; ++i) {
            if (i > starts[k])
                blk[k][p++] = '-';
            blk[k][p++] = letter(&l->d[i]);
        }
        blk[k][p] = '\0';
        same = same && !strcmp(blk[k], blk[0]);
    }
    buf[0] = '\0';
    if (nb > 1 && same) {
        snprintf(buf, len, "%dx %s", nb, blk[0]);
        return;
    }
    size_t pos = 0;
    for (int k = 0; k < nb && pos < len; ++k) {
        int w = snprintf(buf + pos, len - pos, "%s%s", k ? " ; " : "", blk[k]);
        pos += w > 0 ? (size_t)w : 0;
    }
}

/* Builds variant `kind` of the (expanded) list src into dst. */
static int make_variant(int kind, const llist *src, llist *dst) {
    if (kind == CK_STUDY_DROPOUT_AFTER_LAST_BN)
        return tf_after_last_bn(src, dst);
    int starts[256], head;
    const int nb = find_blocks(src, starts, 256, &head);
    const int first = nb ? starts[0] : head;
    for (int i = 0; i < first; ++i)
        if (ll_push(dst, &src->d[i]))
            return -1;
    for (int k = 0; k < nb; ++k) {
        const int e = k + 1 < nb ? starts[k + 1] : head;
        if (tf_block(kind, src->d + starts[k], e - starts[k], dst))
            return -1;
    }
    for (int i = head; i < src->n; ++i)
        if (ll_push(dst, &src->d[i]))
            return -1;
    return 0;
}

/* ---- canonical forms ------------------------------------------------------------------------ */

enum { EQ_INLINE = 1, EQ_NOOP = 2, EQ_SD_POOL = 4, EQ_DROP_RELU = 8 };

static int canonical(const ck_layer_desc *L, int n, llist *out, int *flags) {
    llist e = {0};
    *flags = 0;
    for (int i = 0; i < n; ++i)
        if (L[i].activation != CK_ACT_NONE &&
            (L[i].type == CK_LAYER_CONV2D || L[i].type == CK_LAYER_DENSE))
            *flags |= EQ_INLINE;
    if (expand(L, n, 1, &e)) {
        ck_host_free(NULL, e.d);
        return -1;
    }
    for (int i = 0; i < e.n; ++i) {
        ck_layer_desc d = e.d[i];
        if ((is_drop_t(d.type) && !(d.rate > 0.0f)) ||
            (d.type == CK_LAYER_ACTIVATION && d.activation == CK_ACT_NONE)) {
            *flags |= EQ_NOOP;
            continue;
        }
        d.input_h = d.input_w = d.input_c = 0; /* compared separately */
        if (d.type != CK_LAYER_DROPOUT && d.type != CK_LAYER_SPATIAL_DROPOUT2D)
            d.rate = 0.0f;
        if (d.type == CK_LAYER_CONV2D || is_pool_t(d.type)) {
            if (d.stride_h == 0)
                d.stride_h = d.type == CK_LAYER_CONV2D ? 1 : d.kernel_h;
            if (d.stride_w == 0)
                d.stride_w = d.type == CK_LAYER_CONV2D ? 1 : d.kernel_w;
        }
        if (ll_push(out, &d)) {
            ck_host_free(NULL, e.d);
            return -1;
        }
    }
    ck_host_free(NULL, e.d);
    for (int changed = 1, guard = 0; changed && guard < 4 * out->n * out->n + 4; ++guard) {
        changed = 0;
        for (int i = 0; i + 1 < out->n; ++i) {
            ck_layer_desc *a = &out->d[i], *b = &out->d[i + 1];
            int f = 0;
            if (a->type == CK_LAYER_SPATIAL_DROPOUT2D && is_pool_t(b->type))
                f = EQ_SD_POOL;
            else if (is_drop_t(a->type) && b->type == CK_LAYER_ACTIVATION &&
                     b->activation == CK_ACT_RELU)
                f = EQ_DROP_RELU;
            if (f) {
                ck_layer_desc t = *a;
                *a = *b;
                *b = t;
                *flags |= f;
                changed = 1;
            }
        }
    }
    return 0;
}

static int same_layer(const ck_layer_desc *a, const ck_layer_desc *b) {
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case CK_LAYER_CONV2D:
    case CK_LAYER_DENSE:
        return a->units == b->units && a->kernel_h == b->kernel_h && a->kernel_w == b->kernel_w &&
               a->stride_h == b->stride_h && a->stride_w == b->stride_w &&
               a->padding == b->padding && a->use_bias == b->use_bias &&
               a->activation == b->activation;
    case CK_LAYER_MAXPOOL2D:
    case CK_LAYER_AVGPOOL2D:
        return a->kernel_h == b->kernel_h && a->kernel_w == b->kernel_w &&
               a->stride_h == b->stride_h && a->stride_w == b->stride_w && a->padding == b->padding;
    case CK_LAYER_ACTIVATION:
        return a->activation == b->activation &&
               ((a->activation != CK_ACT_LEAKY_RELU && a->activation != CK_ACT_ELU) ||
                a->alpha == b->alpha);
    case CK_LAYER_DROPOUT:
    case CK_LAYER_SPATIAL_DROPOUT2D:
        return a->rate == b->rate;
    case CK_LAYER_BATCHNORM:
        return a->momentum == b->momentum && a->epsilon == b->epsilon;
    default:
        return 1;
    }
}

static void why_text(int flags, int identical, char *why, size_t len) {
    if (!why || !len)
        return;
    if (identical) {
        snprintf(why, len, "the same layer list");
        return;
    }
    size_t pos = 0;
    why[0] = '\0';
    const char *parts[4] = {
        "inline activations written as layers", "no-op layers (rate 0, linear) removed",
        "SpatialDropout2D moved across pooling (one scale per channel commutes with max/average "
        "pooling)",
        "dropout moved across ReLU (relu(m*x) = m*relu(x) for m >= 0, bit-exact)"};
    for (int k = 0; k < 4; ++k)
        if (flags & (1 << k)) {
            int w =
                snprintf(why + pos, pos < len ? len - pos : 0, "%s%s", pos ? "; " : "", parts[k]);
            pos += w > 0 ? (size_t)w : 0;
        }
}

static int input_shape_equal(const ck_layer_desc *a, int na, const ck_layer_desc *b, int nb) {
    return a[0].input_h == b[0].input_h && a[0].input_w == b[0].input_w &&
           a[0].input_c == b[0].input_c && na > 0 && nb > 0;
}

CK_API ck_status ck_study_equivalent(const ck_layer_desc *a, int na, const ck_layer_desc *b, int nb,
                                     int *equal, char *why, size_t why_len) {
    if (!a || !b || !equal || na < 1 || nb < 1)
        return CK_STATUS_BAD_PARAM;
    if (why && why_len)
        why[0] = '\0';
    llist ca = {0}, cb = {0};
    int fa, fb;
    if (canonical(a, na, &ca, &fa) || canonical(b, nb, &cb, &fb)) {
        ck_host_free(NULL, ca.d);
        ck_host_free(NULL, cb.d);
        return CK_STATUS_ALLOC_FAILED;
    }
    int eq = ca.n == cb.n && input_shape_equal(a, na, b, nb);
    for (int i = 0; eq && i < ca.n; ++i)
        eq = same_layer(&ca.d[i], &cb.d[i]);
    int identical = na == nb && eq;
    for (int i = 0; identical && i < na; ++i) {
        ck_layer_desc x = a[i], y = b[i];
        identical = same_layer(&x, &y) && x.activation == y.activation;
    }
    *equal = eq;
    if (eq)
        why_text(fa | fb, identical, why, why_len);
    ck_host_free(NULL, ca.d);
    ck_host_free(NULL, cb.d);
    return CK_STATUS_SUCCESS;
}

CK_API void ck_study_variants_free(ck_study_variant *v, int n) {
    for (int i = 0; v && i < n; ++i) {
        ck_host_free(NULL, v[i].layers);
        v[i].layers = NULL;
        v[i].count = 0;
    }
}

CK_API ck_status ck_study_variants(const ck_layer_desc *layers, int count, const int *kinds,
                                   int nkinds, ck_study_variant *out, char *err, size_t err_len) {
    set_err(err, err_len, "%s", "");
    if (!layers || !out || count < 1) {
        set_err(err, err_len, "%s",
                !layers ? "layers: is NULL"
                : !out  ? "out: is NULL"
                        : "count: must be >= 1");
        return CK_STATUS_BAD_PARAM;
    }
    int all[CK_STUDY_KIND_COUNT];
    if (!kinds) {
        for (int k = 0; k < CK_STUDY_KIND_COUNT; ++k)
            all[k] = k;
        kinds = all;
        nkinds = CK_STUDY_KIND_COUNT;
    }
    if (nkinds < 1) {
        set_err(err, err_len, "nkinds: must be >= 1, got %d", nkinds);
        return CK_STATUS_BAD_PARAM;
    }
    for (int i = 0; i < count; ++i)
        if ((int)layers[i].type < 0 || layers[i].type >= CK_LAYER_TYPE_COUNT) {
            set_err(err, err_len, "layers[%d]: unknown type %d", i, (int)layers[i].type);
            return CK_STATUS_BAD_PARAM;
        }
    for (int i = 0; i < nkinds; ++i) {
        if (!ck_study_kind_name(kinds[i])) {
            set_err(err, err_len, "kinds[%d]: unknown variant kind %d", i, kinds[i]);
            return CK_STATUS_BAD_PARAM;
        }
        for (int j = 0; j < i; ++j)
            if (kinds[j] == kinds[i]) {
                set_err(err, err_len, "kinds[%d]: '%s' is listed twice", i,
                        ck_study_kind_name(kinds[i]));
                return CK_STATUS_BAD_PARAM;
            }
    }
    llist base = {0};
    ck_status st = CK_STATUS_SUCCESS;
    if (expand(layers, count, 0, &base))
        st = CK_STATUS_ALLOC_FAILED;
    memset(out, 0, sizeof *out * (size_t)nkinds);
    for (int i = 0; i < nkinds && st == CK_STATUS_SUCCESS; ++i) {
        ck_study_variant *v = &out[i];
        llist l = {0};
        v->kind = kinds[i];
        v->equivalent_to = -1;
        snprintf(v->name, sizeof v->name, "%s", ck_study_kind_name(kinds[i]));
        if (make_variant(kinds[i], &base, &l)) {
            ck_host_free(NULL, l.d);
            st = CK_STATUS_ALLOC_FAILED;
            break;
        }
        move_input_shape(&l, layers[0].input_h, layers[0].input_w, layers[0].input_c);
        v->layers = l.d;
        v->count = l.n;
        render_order(&l, v->order, sizeof v->order);
        for (int j = 0; j < i && st == CK_STATUS_SUCCESS; ++j) {
            int eq = 0;
            char why[sizeof v->equivalence];
            st = ck_study_equivalent(out[j].layers, out[j].count, v->layers, v->count, &eq, why,
                                     sizeof why);
            if (st == CK_STATUS_SUCCESS && eq) {
                v->equivalent_to = j;
                snprintf(v->equivalence, sizeof v->equivalence, "%s", why);
                break;
            }
        }
    }
    ck_host_free(NULL, base.d);
    if (st != CK_STATUS_SUCCESS) {
        ck_study_variants_free(out, nkinds);
        set_err(err, err_len, "out of memory for the variants");
    }
    return st;
}

/* ---- statistics -------------------------------------------------------------------------- */

CK_API double ck_student_t975(int dof) {
    static const double t[30] = {12.7062047, 4.3026527, 3.1824463, 2.7764451, 2.5705818, 2.4469119,
                                 2.3646243,  2.3060041, 2.2621572, 2.2281389, 2.2009852, 2.1788128,
                                 2.1603687,  2.1447867, 2.1314495, 2.1199053, 2.1098155, 2.1009220,
                                 2.0930241,  2.0859634, 2.0796138, 2.0738731, 2.0686576, 2.0638986,
                                 2.0595386,  2.0555294, 2.0518305, 2.0484071, 2.0452296, 2.0422725};
    if (dof < 1)
        return NAN;
    if (dof <= 30)
        return t[dof - 1];
    /* Cornish-Fisher expansion around the normal quantile (error < 1e-6 for dof > 30) */
    const double z = 1.959963984540054, v = dof;
    const double z3 = z * z * z, z5 = z3 * z * z, z7 = z5 * z * z;
    return z + (z3 + z) / (4 * v) + (5 * z5 + 16 * z3 + 3 * z) / (96 * v * v) +
           (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * v * v * v);
}

CK_API ck_status ck_mean_ci95(const double *x, int n, double *mean, double *half, double *sd) {
    if (!x || n < 1 || !mean || !half)
        return CK_STATUS_BAD_PARAM;
    double s = 0.0;
    for (int i = 0; i < n; ++i)
        s += x[i];
    const double m = s / n;
    double ss = 0.0;
    for (int i = 0; i < n; ++i)
        ss += (x[i] - m) * (x[i] - m);
    const double dev = n > 1 ? sqrt(ss / (n - 1)) : NAN;
    *mean = m;
    *half = n > 1 ? ck_student_t975(n - 1) * dev / sqrt((double)n) : NAN;
    if (sd)
        *sd = dev;
    return CK_STATUS_SUCCESS;
}

/* ---- the runner -------------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct run_ctx {
    const ck_study_options *o;
    ck_study_progress p;
    int stop;
} run_ctx;

static int fit_step(void *user, const ck_fit_progress *fp) {
    run_ctx *rc = (run_ctx *)user;
    if (!rc->o->on_progress)
        return 0;
    rc->p.fit = fp;
    rc->p.finished = NULL;
    if (rc->o->on_progress(rc->o->user, &rc->p))
        rc->stop = 1;
    rc->p.fit = NULL;
    return rc->stop;
}

/* One variant x seed. */
static ck_status one_run(const ck_study_variant *v, const ck_dataset *train, const ck_dataset *test,
                         const ck_study_options *o, run_ctx *rc, ck_study_result *r, char *err,
                         size_t err_len) {
    const double t0 = now_s();
    ck_context *ctx = NULL;
    ck_model *m = NULL;
    ck_epoch_result *hist =
        (ck_epoch_result *)ck_host_calloc(NULL, (size_t)o->epochs, sizeof *hist);
    ck_measurement *ms = (ck_measurement *)ck_host_calloc(NULL, 1, sizeof *ms);
    ck_status st = hist && ms ? CK_STATUS_SUCCESS : CK_STATUS_ALLOC_FAILED;
    const char *what = "out of memory";
    if (st == CK_STATUS_SUCCESS) {
        st = ck_context_create(&ctx, o->device, 0, r->seed);
        what = "context";
    }
    if (st == CK_STATUS_SUCCESS) {
        st = ck_model_create(ctx, &m);
        for (int i = 0; st == CK_STATUS_SUCCESS && i < v->count; ++i) {
            ck_layer_desc d = v->layers[i];
            if (d.type == CK_LAYER_BATCHNORM && o->bn_momentum > 0.0f)
                d.momentum = o->bn_momentum;
            st = ck_model_add(m, &d);
        }
        if (st == CK_STATUS_SUCCESS && o->optimizer)
            st = ck_model_set_optimizer(m, o->optimizer);
        if (st == CK_STATUS_SUCCESS)
            st = ck_model_build(m, train->h, train->w, train->c, o->batch);
        what = "model";
    }
    if (st == CK_STATUS_SUCCESS) {
        ck_fit_options fo = {o->epochs, o->batch, r->seed, fit_step, NULL, rc, 0};
        st = ck_model_fit(m, train, NULL, &fo, hist);
        what = "training";
    }
    int epochs_done = 0;
    for (int e = 0; st == CK_STATUS_SUCCESS && e < o->epochs; ++e)
        if (hist[e].epoch > 0)
            epochs_done = e + 1;
    if (st == CK_STATUS_SUCCESS && !rc->stop && epochs_done == 0) {
        rc->stop = 1; /* stopped inside the first epoch */
    }
    if (st == CK_STATUS_SUCCESS && !rc->stop) {
        double seen = 0.0, secs = 0.0;
        for (int e = 0; e < epochs_done; ++e) {
            seen += hist[e].images_per_s * hist[e].seconds;
            secs += hist[e].seconds;
        }
        r->images_per_s = secs > 0 ? seen / secs : NAN;
        r->train_running_accuracy = hist[epochs_done - 1].accuracy;
        ck_step_result sr;
        st = ck_model_evaluate(m, test->images, test->labels, test->count, &sr);
        what = "evaluation on the test set";
        if (st == CK_STATUS_SUCCESS) {
            r->test_accuracy = (double)sr.correct / sr.count;
            r->test_loss = sr.loss;
        }
        int ne = o->train_eval;
        if (ne == 0)
            ne = train->count < test->count ? train->count : test->count;
        if (ne > train->count)
            ne = train->count;
        r->train_accuracy = NAN;
        if (st == CK_STATUS_SUCCESS && ne > 0) {
            st = ck_model_evaluate(m, train->images, train->labels, ne, &sr);
            what = "evaluation on the training set";
            if (st == CK_STATUS_SUCCESS)
                r->train_accuracy = (double)sr.correct / sr.count;
        }
        r->gap = r->train_accuracy - r->test_accuracy;
        if (st == CK_STATUS_SUCCESS && o->measure_batches >= 0) {
            ck_measure_options mo = {0, o->measure_batches, o->batch, r->seed};
            st = ck_model_measure(m, train, &mo, ms);
            what = "measurement";
        }
        if (st == CK_STATUS_SUCCESS && o->measure_batches >= 0) {
            r->n_bn = ms->n_bn < CK_STUDY_MAX_MEASURE ? ms->n_bn : CK_STUDY_MAX_MEASURE;
            for (int k = 0; k < r->n_bn; ++k) {
                r->bn_layer[k] = ms->bn[k].layer;
                r->bn_shift[k] = ms->bn[k].ratio;
                r->bn_shift_moving[k] = ms->bn[k].ratio_moving;
            }
            r->n_dropout =
                ms->n_dropout < CK_STUDY_MAX_MEASURE ? ms->n_dropout : CK_STUDY_MAX_MEASURE;
            for (int k = 0; k < r->n_dropout; ++k) {
                r->dropout_layer[k] = ms->dropout[k].layer;
                r->dropout_zeroed[k] = ms->dropout[k].zeroed;
            }
        }
    }
    if (st != CK_STATUS_SUCCESS)
        set_err(err, err_len, "variant %s, seed %llu: %s: %s", v->name, (unsigned long long)r->seed,
                what, ctx ? ck_context_last_error(ctx) : ck_status_string(st));
    r->seconds = now_s() - t0;
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    ck_host_free(NULL, hist);
    ck_host_free(NULL, ms);
    return st;
}

CK_API ck_status ck_study_run(const ck_study_variant *variants, int nv, const ck_dataset *train,
                              const ck_dataset *test, const ck_study_options *opts,
                              ck_study_result *results, int cap, int *n_results, char *err,
                              size_t err_len) {
    set_err(err, err_len, "%s", "");
    if (!variants || nv < 1 || !train || !test || !results || !n_results || cap < 1) {
        set_err(err, err_len, "%s",
                !variants    ? "variants: is NULL"
                : nv < 1     ? "nv: must be >= 1"
                : !train     ? "train: is NULL"
                : !test      ? "test: is NULL"
                : !results   ? "results: is NULL"
                : !n_results ? "n_results: is NULL"
                             : "cap: must be >= 1");
        return CK_STATUS_BAD_PARAM;
    }
    ck_study_options o = {CK_DEVICE_CPU, 5, 1, 1, 128, NULL, 0, 0.0f, 0, NULL, NULL};
    if (opts)
        o = *opts;
    if (o.seeds == 0)
        o.seeds = 5;
    if (o.first_seed == 0)
        o.first_seed = 1;
    if (o.epochs == 0)
        o.epochs = 1;
    if (o.batch == 0)
        o.batch = 128;
    if (o.measure_batches == 0)
        o.measure_batches = 4;
    if (o.seeds < 1 || o.epochs < 1 || o.batch < 1 || o.measure_batches < -1 || o.train_eval < -1) {
        set_err(err, err_len,
                "opts: seeds (%d), epochs (%d), batch (%d) must be >= 1, measure_batches (%d) "
                "and train_eval (%d) >= -1, bn_momentum (%g) in [0, 1)",
                o.seeds, o.epochs, o.batch, o.measure_batches, o.train_eval, (double)o.bn_momentum);
        return CK_STATUS_BAD_PARAM;
    }
    if (o.device != CK_DEVICE_CPU && o.device != CK_DEVICE_CUDA) {
        set_err(err, err_len, "opts->device: must be CK_DEVICE_CPU or CK_DEVICE_CUDA");
        return CK_STATUS_BAD_PARAM;
    }
    int runs = 0;
    for (int i = 0; i < nv; ++i) {
        if (!variants[i].layers || variants[i].count < 1) {
            set_err(err, err_len, "variants[%d]: has no layers", i);
            return CK_STATUS_BAD_PARAM;
        }
        if (variants[i].equivalent_to < 0)
            runs += o.seeds;
    }
    if (cap < runs) {
        set_err(err, err_len, "cap: %d results do not fit %d runs", cap, runs);
        return CK_STATUS_BAD_PARAM;
    }
    if (train->count < 1 || test->count < 1 || !train->images || !test->images) {
        set_err(err, err_len, "%s: is empty",
                train->count < 1 || !train->images ? "train" : "test");
        return CK_STATUS_BAD_PARAM;
    }
    *n_results = 0;
    run_ctx rc;
    memset(&rc, 0, sizeof rc);
    rc.o = &o;
    rc.p.runs = runs;
    ck_status st = CK_STATUS_SUCCESS;
    for (int i = 0; i < nv && st == CK_STATUS_SUCCESS && !rc.stop; ++i) {
        if (variants[i].equivalent_to >= 0)
            continue;
        for (int s = 0; s < o.seeds && st == CK_STATUS_SUCCESS && !rc.stop; ++s) {
            ck_study_result r;
            memset(&r, 0, sizeof r);
            r.variant = i;
            r.seed = o.first_seed + (uint64_t)s;
            rc.p.variant = i;
            rc.p.seed = r.seed;
            rc.p.run = *n_results + 1;
            st = one_run(&variants[i], train, test, &o, &rc, &r, err, err_len);
            if (st != CK_STATUS_SUCCESS || rc.stop)
                break;
            results[(*n_results)++] = r;
            if (o.on_progress) {
                rc.p.fit = NULL;
                rc.p.finished = &r;
                if (o.on_progress(o.user, &rc.p))
                    rc.stop = 1;
                rc.p.finished = NULL;
            }
        }
    }
    return st;
}

CK_API ck_status ck_study_summarize(const ck_study_result *results, int n, int variant,
                                    ck_study_summary *out) {
    if ((!results && n > 0) || n < 0 || !out)
        return CK_STATUS_BAD_PARAM;
    ck_study_summary s;
    memset(&s, 0, sizeof s);
    s.variant = variant;
    double *acc = (double *)ck_host_alloc(NULL, sizeof(double) * (size_t)(n ? n : 1));
    double *gap = (double *)ck_host_alloc(NULL, sizeof(double) * (size_t)(n ? n : 1));
    if (!acc || !gap) {
        ck_host_free(NULL, acc);
        ck_host_free(NULL, gap);
        return CK_STATUS_ALLOC_FAILED;
    }
    double ips = 0.0;
    int ngap = 0;
    for (int i = 0; i < n; ++i) {
        const ck_study_result *r = &results[i];
        if (r->variant != variant)
            continue;
        if (s.runs == 0) {
            s.n_bn = r->n_bn;
            s.n_dropout = r->n_dropout;
            memcpy(s.bn_layer, r->bn_layer, sizeof s.bn_layer);
            memcpy(s.dropout_layer, r->dropout_layer, sizeof s.dropout_layer);
        }
        acc[s.runs] = r->test_accuracy;
        if (!isnan(r->gap))
            gap[ngap++] = r->gap;
        ips += r->images_per_s;
        for (int k = 0; k < s.n_bn && k < r->n_bn; ++k) {
            s.bn_shift[k] += r->bn_shift[k];
            s.bn_shift_moving[k] += r->bn_shift_moving[k];
        }
        for (int k = 0; k < s.n_dropout && k < r->n_dropout; ++k)
            s.dropout_zeroed[k] += r->dropout_zeroed[k];
        s.runs++;
    }
    if (s.runs == 0) {
        s.acc_mean = s.acc_ci95 = s.acc_sd = s.gap_mean = s.gap_ci95 = s.images_per_s = NAN;
    } else {
        ck_mean_ci95(acc, s.runs, &s.acc_mean, &s.acc_ci95, &s.acc_sd);
        if (ngap)
            ck_mean_ci95(gap, ngap, &s.gap_mean, &s.gap_ci95, NULL);
        else
            s.gap_mean = s.gap_ci95 = NAN;
        s.images_per_s = ips / s.runs;
        for (int k = 0; k < s.n_bn; ++k) {
            s.bn_shift[k] /= s.runs;
            s.bn_shift_moving[k] /= s.runs;
        }
        for (int k = 0; k < s.n_dropout; ++k)
            s.dropout_zeroed[k] /= s.runs;
    }
    ck_host_free(NULL, acc);
    ck_host_free(NULL, gap);
    *out = s;
    return CK_STATUS_SUCCESS;
}

/* The per-seed differences variant - baseline (test accuracy) into d (n entries of room); returns
 * how many. */
static int paired_diffs(const ck_study_result *results, int n, int variant, int baseline,
                        double *d) {
    int k = 0;
    for (int i = 0; i < n; ++i) {
        if (results[i].variant != variant)
            continue;
        for (int j = 0; j < n; ++j) /* the baseline's run with the same seed */
            if (results[j].variant == baseline && results[j].seed == results[i].seed) {
                d[k++] = results[i].test_accuracy - results[j].test_accuracy;
                break;
            }
    }
    return k;
}

CK_API ck_status ck_study_paired_diff(const ck_study_result *results, int n, int variant,
                                      int baseline, double *mean, double *half, int *pairs) {
    if ((!results && n > 0) || n < 0 || !mean || !half || !pairs)
        return CK_STATUS_BAD_PARAM;
    *mean = *half = NAN;
    *pairs = 0;
    double *d = (double *)ck_host_alloc(NULL, sizeof(double) * (size_t)(n ? n : 1));
    if (!d)
        return CK_STATUS_ALLOC_FAILED;
    const int k = paired_diffs(results, n, variant, baseline, d);
    *pairs = k;
    if (k > 0)
        ck_mean_ci95(d, k, mean, half, NULL);
    ck_host_free(NULL, d);
    return CK_STATUS_SUCCESS;
}

/* ---- tests on paired differences ------------------------------------------------------------ */

/* log Gamma(k / 2) for k >= 1, from Gamma(1/2) = sqrt(pi), Gamma(1) = 1 and Gamma(x + 1) =
 * x Gamma(x) (the t distribution only needs half-integers; libm's lgamma sets a global). */
static double log_gamma_half(int k) {
    double r = k % 2 ? 0.5 * log(3.14159265358979323846) : 0.0;
    for (int j = k % 2 ? 1 : 2; j < k; j += 2)
        r += log(0.5 * j);
    return r;
}

/* The continued fraction of the regularized incomplete beta function (modified Lentz). */
static double beta_cf(double a, double b, double x) {
    const double tiny = 1e-300;
    double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0);
    d = 1.0 / (fabs(d) < tiny ? tiny : d);
    double h = d;
    for (int m = 1; m <= 500; ++m) {
        const double m2 = 2.0 * m;
        double aa = m * (b - m) * x / ((a - 1.0 + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = 1.0 / (fabs(d) < tiny ? tiny : d);
        c = 1.0 + aa / c;
        c = fabs(c) < tiny ? tiny : c;
        h *= d * c;
        aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2));
        d = 1.0 + aa * d;
        d = 1.0 / (fabs(d) < tiny ? tiny : d);
        c = 1.0 + aa / c;
        c = fabs(c) < tiny ? tiny : c;
        const double del = d * c;
        h *= del;
        if (fabs(del - 1.0) < 1e-15)
            break;
    }
    return h;
}

/* I_x(ka / 2, kb / 2), the regularized incomplete beta function at half-integer parameters. */
static double beta_inc_half(int ka, int kb, double x) {
    if (x <= 0.0)
        return 0.0;
    if (x >= 1.0)
        return 1.0;
    const double a = 0.5 * ka, b = 0.5 * kb;
    const double front = exp(log_gamma_half(ka + kb) - log_gamma_half(ka) - log_gamma_half(kb) +
                             a * log(x) + b * log1p(-x));
    if (x < (a + 1.0) / (a + b + 2.0))
        return front * beta_cf(a, b, x) / a;
    return 1.0 - front * beta_cf(b, a, 1.0 - x) / b;
}

CK_API double ck_student_t_p(double t, int dof) {
    if (dof < 1 || isnan(t))
        return NAN;
    if (isinf(t))
        return 0.0;
    /* P(|T| >= |t|) = I_{dof / (dof + t^2)}(dof / 2, 1 / 2) */
    return beta_inc_half(dof, 1, dof / (dof + t * t));
}

CK_API double ck_sign_test_p(const double *d, int n) {
    if (!d || n < 0)
        return NAN;
    int pos = 0, neg = 0;
    for (int i = 0; i < n; ++i) {
        pos += d[i] > 0.0;
        neg += d[i] < 0.0;
    }
    const int m = pos + neg, k = pos < neg ? pos : neg;
    double term = ldexp(1.0, -m), tail = 0.0; /* C(m, i) / 2^m for i = 0, 1, ... */
    for (int i = 0; i <= k; ++i) {
        tail += term;
        term = term * (m - i) / (i + 1);
    }
    return fmin(1.0, 2.0 * tail);
}

static int cmp_abs(const void *a, const void *b) {
    const double x = fabs(*(const double *)a), y = fabs(*(const double *)b);
    return (x > y) - (x < y);
}

CK_API double ck_wilcoxon_p(const double *d, int n) {
    if (!d || n < 0)
        return NAN;
    double *a = (double *)ck_host_alloc(NULL, sizeof(double) * (size_t)(n ? n : 1));
    if (!a)
        return NAN;
    int m = 0;
    for (int i = 0; i < n; ++i)
        if (d[i] != 0.0)
            a[m++] = d[i];
    if (m == 0) {
        ck_host_free(NULL, a);
        return 1.0;
    }
    qsort(a, (size_t)m, sizeof *a, cmp_abs);
    /* twice the mid-ranks: integers (first + last position of a tie group, 1-based) */
    const int total = m * (m + 1); /* sum of the doubled ranks */
    double *dist = (double *)ck_host_calloc(NULL, (size_t)total + 1, sizeof(double));
    double *next = (double *)ck_host_calloc(NULL, (size_t)total + 1, sizeof(double));
    if (!dist || !next) {
        ck_host_free(NULL, a);
        ck_host_free(NULL, dist);
        ck_host_free(NULL, next);
        return NAN;
    }
    int observed = 0, top = 0;
    dist[0] = 1.0;
    for (int i = 0; i < m;) {
        int j = i;
        while (j + 1 < m && fabs(a[j + 1]) == fabs(a[i]))
            ++j;
        const int r2 = (i + 1) + (j + 1);
        for (int k = i; k <= j; ++k) {
            if (a[k] > 0.0)
                observed += r2;
            /* one more rank, + or - with probability 1/2 each */
            for (int s = 0; s <= top + r2; ++s)
                next[s] = 0.5 * ((s <= top ? dist[s] : 0.0) + (s >= r2 ? dist[s - r2] : 0.0));
            top += r2;
            double *t = dist;
            dist = next;
            next = t;
        }
        i = j + 1;
    }
    const int dev = abs(2 * observed - total);
    double p = 0.0;
    for (int s = 0; s <= total; ++s)
        if (abs(2 * s - total) >= dev)
            p += dist[s];
    ck_host_free(NULL, a);
    ck_host_free(NULL, dist);
    ck_host_free(NULL, next);
    return fmin(1.0, p);
}

CK_API ck_status ck_holm(const double *p, int m, double *adjusted) {
    if (!p || !adjusted || m < 0)
        return CK_STATUS_BAD_PARAM;
    int *idx = (int *)ck_host_alloc(NULL, sizeof(int) * (size_t)(m ? m : 1));
    if (!idx)
        return CK_STATUS_ALLOC_FAILED;
    int k = 0;
    for (int i = 0; i < m; ++i) {
        adjusted[i] = NAN;
        if (!isnan(p[i]))
            idx[k++] = i;
    }
    for (int i = 1; i < k; ++i) /* insertion sort by p, ascending (k is a handful) */
        for (int j = i; j > 0 && p[idx[j]] < p[idx[j - 1]]; --j) {
            const int t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
    double run = 0.0;
    for (int j = 0; j < k; ++j) {
        run = fmax(run, fmin(1.0, (double)(k - j) * p[idx[j]]));
        adjusted[idx[j]] = run;
    }
    ck_host_free(NULL, idx);
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_study_paired_tests(const ck_study_result *results, int n, const int *variants,
                                       int nv, int baseline, ck_paired_test *out) {
    if ((!results && n > 0) || n < 0 || !variants || nv < 1 || !out)
        return CK_STATUS_BAD_PARAM;
    double *d = (double *)ck_host_alloc(NULL, sizeof(double) * (size_t)(n ? n : 1));
    double *pt = (double *)ck_host_alloc(NULL, sizeof(double) * 4 * (size_t)nv);
    if (!d || !pt) {
        ck_host_free(NULL, d);
        ck_host_free(NULL, pt);
        return CK_STATUS_ALLOC_FAILED;
    }
    double *pw = pt + nv, *ht = pt + 2 * nv, *hw = pt + 3 * nv;
    for (int v = 0; v < nv; ++v) {
        ck_paired_test *o = &out[v];
        memset(o, 0, sizeof *o);
        o->variant = variants[v];
        o->mean = o->half = o->p_t = o->p_sign = o->p_wilcoxon = NAN;
        const int k = paired_diffs(results, n, variants[v], baseline, d);
        o->pairs = k;
        if (k > 0)
            ck_mean_ci95(d, k, &o->mean, &o->half, NULL);
        if (k >= 2) {
            double sd, mean, half;
            ck_mean_ci95(d, k, &mean, &half, &sd);
            o->p_t = sd > 0.0 ? ck_student_t_p(mean / (sd / sqrt((double)k)), k - 1)
                              : (mean != 0.0 ? 0.0 : 1.0);
            o->p_sign = ck_sign_test_p(d, k);
            o->p_wilcoxon = ck_wilcoxon_p(d, k);
        }
        pt[v] = o->p_t;
        pw[v] = o->p_wilcoxon;
    }
    ck_status st = ck_holm(pt, nv, ht);
    if (st == CK_STATUS_SUCCESS)
        st = ck_holm(pw, nv, hw);
    for (int v = 0; st == CK_STATUS_SUCCESS && v < nv; ++v) {
        ck_paired_test *o = &out[v];
        o->p_t_holm = ht[v];
        o->p_wilcoxon_holm = hw[v];
        const int excludes = o->pairs >= 2 && (o->mean - o->half > 0.0 || o->mean + o->half < 0.0);
        o->verdict = excludes && ht[v] < 0.05 && hw[v] < 0.05 ? CK_PAIRED_DIFFERENT
                     : excludes                               ? CK_PAIRED_FRAGILE
                                                              : CK_PAIRED_NONE;
    }
    ck_host_free(NULL, d);
    ck_host_free(NULL, pt);
    return st;
}
