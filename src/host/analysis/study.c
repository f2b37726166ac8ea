/* The order study (include/cnnkit/study.h): variants of the Conv blocks and their exact
 * equivalences. The runner is study_run.c, the statistics study_stats.c. */
#include "cnnkit/study.h"

#include "algebra.h"
#include "internal.h"
#include "layer.h"
#include "study_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[CK_STUDY_KIND_COUNT] = {
    "original",        "asker",
    "bn-after-relu",   "dropout-before-pool",
    "spatial-dropout", "dropout-after-last-bn",
    "bn-after-add",    "relu-before-add",
    "relu-preact",     "full-preact"};

CK_API const char *ck_study_kind_name(int kind) {
    return kind >= 0 && kind < CK_STUDY_KIND_COUNT ? kind_names[kind] : NULL;
}

CK_API int ck_study_kind_from_name(const char *name) {
    for (int k = 0; name && k < CK_STUDY_KIND_COUNT; ++k)
        if (!strcmp(name, kind_names[k]))
            return k;
    return -1;
}

CK_API int ck_study_default_kinds(const ck_layer_desc *layers, int count, int *kinds) {
    int n = 0;
    if (!kinds)
        return 0;
    const int graph = ck_layers_graph_layer(layers, count) >= 0;
    if (!graph)
        for (int k = 0; k < CK_STUDY_STACK_KIND_COUNT; ++k)
            kinds[n++] = k;
    else if (ck_study_resid_units(layers, count) > 0)
        for (int k = CK_STUDY_STACK_KIND_COUNT - 1; k < CK_STUDY_KIND_COUNT; ++k)
            kinds[n++] = k == CK_STUDY_STACK_KIND_COUNT - 1 ? CK_STUDY_ORIGINAL : k;
    else
        kinds[n++] = CK_STUDY_ORIGINAL;
    return n;
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

static int is_resid_kind(int kind) {
    return kind >= CK_STUDY_BN_AFTER_ADD && kind < CK_STUDY_KIND_COUNT;
}

/* The residual variant of a graph (kind original or a placement) into l. */
static ck_status resid_variant(const ck_layer_desc *layers, int count, int kind, llist *l,
                               char *err, size_t err_len) {
    const int placement =
        kind == CK_STUDY_ORIGINAL ? CK_RESID_ORIGINAL : kind - CK_STUDY_BN_AFTER_ADD + 1;
    ck_layer_desc *d = NULL;
    int n = 0;
    const ck_status st = ck_study_residual_variant(layers, count, placement, &d, &n, err, err_len);
    l->d = d;
    l->n = l->cap = n;
    return st;
}

/* Same layers, same edges (names aside; both in explicit graph form). */
static int same_list(const llist *a, const llist *b) {
    if (a->n != b->n)
        return 0;
    for (int i = 0; i < a->n; ++i) {
        ck_layer_desc x = a->d[i], y = b->d[i];
        memset(x.name, 0, sizeof x.name);
        memset(y.name, 0, sizeof y.name);
        if (memcmp(&x, &y, sizeof x))
            return 0;
    }
    return 1;
}

static int is_drop_t(ck_layer_type t) {
    return t == CK_LAYER_DROPOUT || t == CK_LAYER_SPATIAL_DROPOUT2D;
}
static int is_pool_t(ck_layer_type t) {
    return t == CK_LAYER_MAXPOOL2D || t == CK_LAYER_AVGPOOL2D;
}

/* Copy with names cleared and Conv2D inline activations written as Activation layers (Dense too
 * when all_inline): the algebra's lowering (ck_alg_expand). The first layer's input shape stays
 * on whatever layer ends up first (fixed by move_input_shape). */
static int expand(const ck_layer_desc *L, int n, int all_inline, llist *out) {
    ck_alg_op *ops = (ck_alg_op *)ck_host_alloc(NULL, sizeof *ops * (size_t)n * 2);
    if (!ops)
        return -1;
    const int nops = ck_alg_expand(L, n, !all_inline, ops);
    int rc = 0;
    for (int k = 0; k < nops && !rc; ++k) {
        ck_layer_desc d;
        if (ops[k].is_inline) {
            ck_layer_desc_init(&d, CK_LAYER_ACTIVATION);
            d.activation = ops[k].act;
            d.alpha = L[ops[k].layer].alpha;
        } else {
            d = L[ops[k].layer];
            d.name[0] = '\0';
            if (k + 1 < nops && ops[k + 1].is_inline)
                d.activation = CK_ACT_NONE;
        }
        rc = ll_push(out, &d);
    }
    ck_host_free(NULL, ops);
    return rc;
}

/* The input shape given on the first layer of the original (first) goes on the first layer of
 * l. */
static void move_input_shape(llist *l, const ck_layer_desc *first) {
    for (int i = 0; i < l->n; ++i)
        l->d[i].input_h = l->d[i].input_w = l->d[i].input_c = l->d[i].input_flat = 0;
    if (l->n) {
        l->d[0].input_h = first->input_h;
        l->d[0].input_w = first->input_w;
        l->d[0].input_c = first->input_c;
        l->d[0].input_flat = first->input_flat;
    }
}

/* Conv blocks of l: starts[k] .. starts[k + 1] (the last ends at *head). Returns the count. */
static int find_blocks(const llist *l, int *starts, int max, int *head) {
    int h = l->n;
    for (int i = 0; i < l->n; ++i)
        if (ck_lk_flattens(l->d[i].type) || l->d[i].type == CK_LAYER_DENSE) {
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

/* The kind's letter; an Activation that is a ReLU reads 'R' (the C-B-R-P-D orders). */
static char letter(const ck_layer_desc *d) {
    const ck_layer_kind *k = ck_layer_kind_of(d->type);
    if (!k || !k->study_letter)
        return '?';
    return k->study_letter == 'A' && d->activation == CK_ACT_RELU ? 'R' : k->study_letter;
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

/* The algebra's rules a canonical form may use, as bits of *flags (in this order in the why
 * text). */
static const char *const k_eq_rules[] = {"INLINE", "NOOP", "SD-POOL", "DROP-RELU"};
enum { EQ_INLINE = 1, EQ_NOOP = 2 };

static int rule_flag(const ck_alg_rule *r) {
    for (int k = 0; k < (int)(sizeof k_eq_rules / sizeof *k_eq_rules); ++k)
        if (!strcmp(r->id, k_eq_rules[k]))
            return 1 << k;
    return 0;
}

static ck_alg_op desc_op(const ck_layer_desc *d) {
    ck_alg_op o;
    ck_alg_expand(d, 1, 1, &o); /* the layer itself: a Dense keeps its activation inline */
    return o;
}

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
        d.input_h = d.input_w = d.input_c = d.input_flat = 0; /* compared separately */
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
            const ck_alg_op oa = desc_op(a), ob = desc_op(b);
            const ck_alg_rule *r = ck_alg_swap(CK_ALG_CANON, NULL, &oa, &ob);
            if (r && r->level <= CK_ALG_STUDY_MAX) {
                ck_layer_desc t = *a;
                *a = *b;
                *b = t;
                *flags |= rule_flag(r);
                changed = 1;
            }
        }
    }
    return 0;
}

/* Same type and the same function: the kind compares its own arguments (layer_*.c). */
static int same_layer(const ck_layer_desc *a, const ck_layer_desc *b) {
    if (a->type != b->type)
        return 0;
    const ck_layer_kind *k = ck_layer_kind_of(a->type);
    return !k || !k->same || k->same(a, b);
}

/* The weakest level of the rules in flags (CK_EXACT_BITS for none). */
static ck_exactness flags_level(int flags) {
    ck_exactness level = CK_EXACT_BITS;
    for (int k = 0; k < (int)(sizeof k_eq_rules / sizeof *k_eq_rules); ++k) {
        const ck_alg_rule *r = ck_alg_rule_by_id(k_eq_rules[k]);
        if ((flags & (1 << k)) && r->level > level)
            level = r->level;
    }
    return level;
}

/* The rules used, each as "<what> (<why>)" from the algebra's table. */
static void why_text(int flags, int identical, char *why, size_t len) {
    if (!why || !len)
        return;
    if (identical) {
        snprintf(why, len, "the same layer list");
        return;
    }
    size_t pos = 0;
    why[0] = '\0';
    for (int k = 0; k < (int)(sizeof k_eq_rules / sizeof *k_eq_rules); ++k)
        if (flags & (1 << k)) {
            const ck_alg_rule *r = ck_alg_rule_by_id(k_eq_rules[k]);
            /* the inline and no-op rules need no reason in a one-line summary */
            const int reason = r->level > CK_EXACT_BITS;
            int w = snprintf(why + pos, pos < len ? len - pos : 0, "%s%s%s%s%s", pos ? "; " : "",
                             r->what, reason ? " (" : "", reason ? r->why : "", reason ? ")" : "");
            pos += w > 0 ? (size_t)w : 0;
        }
}

static int input_shape_equal(const ck_layer_desc *a, int na, const ck_layer_desc *b, int nb) {
    return a[0].input_h == b[0].input_h && a[0].input_w == b[0].input_w &&
           a[0].input_c == b[0].input_c && a[0].input_flat == b[0].input_flat && na > 0 && nb > 0;
}

/* ck_study_equivalent, with the level of the equivalence (CK_EXACT_NONE when not equal). */
static ck_status study_equivalent(const ck_layer_desc *a, int na, const ck_layer_desc *b, int nb,
                                  int *equal, ck_exactness *level, char *why, size_t why_len) {
    *level = CK_EXACT_NONE;
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
    if (eq) {
        why_text(fa | fb, identical, why, why_len);
        *level = identical ? CK_EXACT_BITS : flags_level(fa | fb);
    }
    ck_host_free(NULL, ca.d);
    ck_host_free(NULL, cb.d);
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_study_equivalent(const ck_layer_desc *a, int na, const ck_layer_desc *b, int nb,
                                     int *equal, char *why, size_t why_len) {
    if (!a || !b || !equal || na < 1 || nb < 1) {
        if (!a || !b || !equal)
            ck_fail(NULL, CK_STATUS_BAD_PARAM, "%s: is NULL", !a ? "a" : !b ? "b" : "equal");
        else
            ck_fail(NULL, CK_STATUS_BAD_PARAM, "%s: must be >= 1, got %d", na < 1 ? "na" : "nb",
                    na < 1 ? na : nb);
        ck_errbuf_printf(why, why_len, "%s", ck_context_last_error(NULL));
        return CK_STATUS_BAD_PARAM;
    }
    /* The canonical forms are those of stacks: a graph's edges are not in them. */
    const int ga = ck_layers_graph_layer(a, na), gb = ga >= 0 ? ga : ck_layers_graph_layer(b, nb);
    if (gb >= 0) {
        ck_fail(NULL, CK_STATUS_BAD_PARAM,
                "%s: layer %d makes it a graph; equivalence is decided for Sequential stacks "
                "only",
                ga >= 0 ? "a" : "b", gb);
        ck_errbuf_printf(why, why_len, "%s", ck_context_last_error(NULL));
        return CK_STATUS_BAD_PARAM;
    }
    ck_exactness level;
    return study_equivalent(a, na, b, nb, equal, &level, why, why_len);
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
    ck_errbuf_printf(err, err_len, "%s", "");
    if (!layers || !out || count < 1) {
        ck_errbuf_printf(err, err_len, "%s",
                         !layers ? "layers: is NULL"
                         : !out  ? "out: is NULL"
                                 : "count: must be >= 1");
        return CK_STATUS_BAD_PARAM;
    }
    int all[CK_STUDY_KIND_COUNT];
    if (!kinds) {
        nkinds = ck_study_default_kinds(layers, count, all);
        kinds = all;
        memset(out, 0, sizeof *out * CK_STUDY_KIND_COUNT);
    }
    if (nkinds < 1) {
        ck_errbuf_printf(err, err_len, "nkinds: must be >= 1, got %d", nkinds);
        return CK_STATUS_BAD_PARAM;
    }
    for (int i = 0; i < count; ++i)
        if (!ck_layer_kind_of(layers[i].type)) {
            ck_errbuf_printf(err, err_len, "layers[%d]: unknown type %d", i, (int)layers[i].type);
            return CK_STATUS_BAD_PARAM;
        }
    int any_resid = 0;
    for (int i = 0; i < nkinds; ++i) {
        if (!ck_study_kind_name(kinds[i])) {
            ck_errbuf_printf(err, err_len, "kinds[%d]: unknown variant kind %d", i, kinds[i]);
            return CK_STATUS_BAD_PARAM;
        }
        for (int j = 0; j < i; ++j)
            if (kinds[j] == kinds[i]) {
                ck_errbuf_printf(err, err_len, "kinds[%d]: '%s' is listed twice", i,
                                 ck_study_kind_name(kinds[i]));
                return CK_STATUS_BAD_PARAM;
            }
        any_resid |= is_resid_kind(kinds[i]);
    }
    /* The stack variants move layers within a stack; in a layer graph that would rewire its
     * edges. */
    const int gl = ck_layers_graph_layer(layers, count);
    if (gl >= 0) {
        const ck_layer_desc *d = &layers[gl];
        const int i = gl;
        for (int k = 0; k < nkinds; ++k)
            if (kinds[k] != CK_STUDY_ORIGINAL && !is_resid_kind(kinds[k])) {
                ck_errbuf_printf(
                    err, err_len,
                    "kinds[%d]: the '%s' variant reorders a Sequential stack, and layer "
                    "%d (%s) makes this model a graph: only 'original' and the residual "
                    "placements are studied on graphs",
                    k, ck_study_kind_name(kinds[k]), i, ck_layer_type_name(d->type));
                return CK_STATUS_BAD_PARAM;
            }
    }
    /* a residual graph: every variant (original too) is a placement of its units */
    const int units = gl >= 0 ? ck_study_resid_units(layers, count) : 0;
    const int resid = any_resid || units > 0;
    llist base = {0};
    ck_status st = CK_STATUS_SUCCESS;
    if (!resid && expand(layers, count, 0, &base))
        st = CK_STATUS_ALLOC_FAILED;
    memset(out, 0, sizeof *out * (size_t)nkinds);
    int said = 0; /* err already names the failure */
    for (int i = 0; i < nkinds && st == CK_STATUS_SUCCESS; ++i) {
        ck_study_variant *v = &out[i];
        llist l = {0};
        v->kind = kinds[i];
        v->equivalent_to = -1;
        v->exactness = CK_EXACT_NONE;
        snprintf(v->name, sizeof v->name, "%s", ck_study_kind_name(kinds[i]));
        if (resid) {
            st = resid_variant(layers, count, kinds[i], &l, err, err_len);
            said = st != CK_STATUS_SUCCESS;
            if (st != CK_STATUS_SUCCESS)
                break;
            const int placement = kinds[i] == CK_STUDY_ORIGINAL
                                      ? CK_RESID_ORIGINAL
                                      : kinds[i] - CK_STUDY_BN_AFTER_ADD + 1;
            snprintf(v->order, sizeof v->order, "%dx %s", units,
                     ck_study_resid_unit_text(placement));
        } else if (make_variant(kinds[i], &base, &l)) {
            ck_host_free(NULL, l.d);
            st = CK_STATUS_ALLOC_FAILED;
            break;
        } else {
            move_input_shape(&l, &layers[0]);
            render_order(&l, v->order, sizeof v->order);
        }
        v->layers = l.d;
        v->count = l.n;
        for (int j = 0; j < i && st == CK_STATUS_SUCCESS; ++j) {
            int eq = 0;
            ck_exactness level = CK_EXACT_NONE;
            char why[sizeof v->equivalence];
            if (resid) { /* no rewrite rules for graphs: only the same list */
                const llist lj = {out[j].layers, out[j].count, out[j].count};
                eq = same_list(&lj, &l);
                level = CK_EXACT_BITS;
                snprintf(why, sizeof why, "%s", "the same layers");
            } else {
                st = study_equivalent(out[j].layers, out[j].count, v->layers, v->count, &eq, &level,
                                      why, sizeof why);
            }
            if (st == CK_STATUS_SUCCESS && eq) {
                v->equivalent_to = j;
                v->exactness = level;
                snprintf(v->equivalence, sizeof v->equivalence, "%s", why);
                break;
            }
        }
    }
    ck_host_free(NULL, base.d);
    if (st != CK_STATUS_SUCCESS) {
        ck_study_variants_free(out, nkinds);
        if (!said)
            ck_errbuf_printf(err, err_len, "out of memory for the variants");
    }
    return st;
}
