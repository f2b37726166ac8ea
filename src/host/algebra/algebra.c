/* The layer algebra (algebra.h): the rewrites of a layer order, how exact each one is, and the
 * one lowering of a layer list that the planner's model build, the checker and the study share.
 * The derivations are in plan.c's header comment and tests/test_equiv.c shows each level:
 * SpatialDropout2D across a max pool is exact forward, but s = 1/(1-rate) can round two inputs to
 * one value so the backward may pick another cell, and an average rounds differently (MATH); an
 * element Dropout across pooling is not an equivalence at all (no rule). */
#include "algebra.h"

#include <string.h>

/* why: one clause, quoted in one-line summaries (the study's equivalence text). A rule below
 * CK_EXACT_BITS never claims the same bits (tests/test_algebra.c). */
static const ck_alg_rule k_rules[] = {
    {"C1", CK_ALG_PLAN, CK_EXACT_BITS, "BN, MaxPool, ReLU -> BN, ReLU, MaxPool",
     "relu is monotone and returns an input or 0, so max-pool picks the same cell: the same bits"},
    {"C2", CK_ALG_PLAN, CK_EXACT_VALUES, "BN, dropout, ReLU -> BN, ReLU, dropout",
     "relu(m*x) = m*relu(x) for m >= 0; equal values, a zero gradient may change sign"},
    {"C3", CK_ALG_PLAN, CK_EXACT_BITS, "X, ReLU, MaxPool -> X, MaxPool, ReLU (X not a BN)",
     "relu is monotone and returns an input or 0, so max-pool picks the same cell: the same bits"},
    {"C4", CK_ALG_PLAN, CK_EXACT_VALUES, "Pool, ReLU, dropout -> Pool, dropout, ReLU",
     "relu(m*x) = m*relu(x) for m >= 0; equal values, a zero gradient may change sign"},
    {"F1", 0, CK_EXACT_BITS, "BN + ReLU as one node",
     "the node evaluates the expressions of the two: the same bits"},
    {"F2", 0, CK_EXACT_VALUES, "BN(+ReLU) + SpatialDropout2D as one node",
     "the same products; equal values, a dropped channel's zero gradient may change sign"},
    {"F3", 0, CK_EXACT_BITS, "Pool + dropout as one node",
     "the mask scales the pooled output and dy with the same products: the same bits"},
    {"SD-POOL", CK_ALG_CANON, CK_EXACT_MATH, "SpatialDropout2D moved across pooling",
     "one scale per channel commutes with pooling; equal in exact arithmetic, not bit-exact"},
    {"DROP-RELU", CK_ALG_CANON, CK_EXACT_VALUES, "dropout moved across ReLU",
     "relu(m*x) = m*relu(x) for m >= 0; equal values, a zero gradient may change sign"},
    {"NOOP", 0, CK_EXACT_BITS, "no-op layers (rate 0, linear) removed",
     "they return their input: the same bits"},
    {"INLINE", 0, CK_EXACT_BITS, "inline activations written as layers",
     "the layer runs its activation as a separate op either way: the same bits"},
};

enum { R_C1, R_C2, R_C3, R_C4, R_F1, R_F2, R_F3, R_SD_POOL, R_DROP_RELU, R_NOOP, R_INLINE };

int ck_alg_rule_count(void) {
    return (int)(sizeof k_rules / sizeof *k_rules);
}

const ck_alg_rule *ck_alg_rule_at(int i) {
    return i >= 0 && i < ck_alg_rule_count() ? &k_rules[i] : NULL;
}

const ck_alg_rule *ck_alg_rule_by_id(const char *id) {
    for (int i = 0; id && i < ck_alg_rule_count(); ++i)
        if (!strcmp(k_rules[i].id, id))
            return &k_rules[i];
    return NULL;
}

int ck_alg_expand(const ck_layer_desc *L, int n, int keep_dense_inline, ck_alg_op *out) {
    int k = 0;
    for (int i = 0; i < n; ++i) {
        const ck_layer_desc *d = &L[i];
        const int drop = d->type == CK_LAYER_DROPOUT || d->type == CK_LAYER_SPATIAL_DROPOUT2D;
        const ck_alg_op o = {d->type,
                             d->type == CK_LAYER_ACTIVATION ? d->activation : CK_ACT_NONE,
                             drop ? d->rate : 0.0f,
                             i,
                             0,
                             0};
        out[k++] = o;
        const int weights =
            d->type == CK_LAYER_CONV2D || (d->type == CK_LAYER_DENSE && !keep_dense_inline);
        if (weights && d->activation != CK_ACT_NONE) {
            const ck_alg_op a = {CK_LAYER_ACTIVATION, d->activation, 0.0f, i, 1, 0};
            out[k++] = a;
        }
    }
    return k;
}

static int is_relu(const ck_alg_op *o) {
    return o->type == CK_LAYER_ACTIVATION && o->act == CK_ACT_RELU;
}
static int is_drop(const ck_alg_op *o) {
    return o->type == CK_LAYER_DROPOUT || o->type == CK_LAYER_SPATIAL_DROPOUT2D;
}
static int is_pool(const ck_alg_op *o) {
    return o->type == CK_LAYER_MAXPOOL2D || o->type == CK_LAYER_AVGPOOL2D;
}
static int is_plain_bn(const ck_alg_op *o) {
    return o->type == CK_LAYER_BATCHNORM && !o->fused;
}
static int is_plain_pool(const ck_alg_op *o) {
    return is_pool(o) && !o->fused;
}
static int is_plain_maxpool(const ck_alg_op *o) {
    return is_plain_pool(o) && o->type == CK_LAYER_MAXPOOL2D;
}

const ck_alg_rule *ck_alg_swap(unsigned use, const ck_alg_op *prev, const ck_alg_op *a,
                               const ck_alg_op *b) {
    if (use & CK_ALG_PLAN) {
        /* each moves a ReLU next to a BN, after a pool, or after a dropout that follows a pool:
         * a measure that only grows, so the planner's loop ends */
        if (prev && is_plain_bn(prev) && is_plain_maxpool(a) && is_relu(b))
            return &k_rules[R_C1];
        if (prev && is_plain_bn(prev) && is_drop(a) && is_relu(b))
            return &k_rules[R_C2];
        if (is_relu(a) && is_plain_maxpool(b) && !(prev && prev->type == CK_LAYER_BATCHNORM))
            return &k_rules[R_C3];
        if (prev && is_plain_pool(prev) && is_relu(a) && is_drop(b))
            return &k_rules[R_C4];
    }
    if (use & CK_ALG_CANON) {
        if (a->type == CK_LAYER_SPATIAL_DROPOUT2D && is_pool(b))
            return &k_rules[R_SD_POOL];
        if (is_drop(a) && is_relu(b))
            return &k_rules[R_DROP_RELU];
    }
    return NULL;
}
