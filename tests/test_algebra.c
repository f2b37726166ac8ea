/* The layer algebra (src/host/algebra/algebra.c): every rule's exactness level, that no text claims
 * more than its level, ck_alg_swap's answers for the pairs test_equiv.c measures, the one lowering,
 * and how the study labels what it merges. */
#include "common.h"

#include <string.h>

#include "algebra.h"
#include "cnnkit/study.h"

static ck_alg_op op(ck_layer_type t, ck_activation a) {
    ck_alg_op o;
    memset(&o, 0, sizeof o);
    o.type = t;
    o.act = a;
    o.rate = t == CK_LAYER_DROPOUT || t == CK_LAYER_SPATIAL_DROPOUT2D ? 0.25f : 0.0f;
    return o;
}

#define OP(t) op(CK_LAYER_##t, CK_ACT_NONE)
#define ACT(a) op(CK_LAYER_ACTIVATION, CK_ACT_##a)

/* The levels of docs/plan-issue20.md §f, derived in plan.c and measured in test_equiv.c. */
Test(algebra, every_rule_has_its_level) {
    static const struct {
        const char *id;
        int swap;
        ck_exactness level;
    } want[] = {
        {"C1", CK_ALG_PLAN, CK_EXACT_BITS},
        {"C2", CK_ALG_PLAN, CK_EXACT_VALUES},
        {"C3", CK_ALG_PLAN, CK_EXACT_BITS},
        {"C4", CK_ALG_PLAN, CK_EXACT_VALUES},
        {"F1", 0, CK_EXACT_BITS},
        {"F2", 0, CK_EXACT_VALUES},
        {"F3", 0, CK_EXACT_BITS},
        {"SD-POOL", CK_ALG_CANON, CK_EXACT_MATH},
        {"DROP-RELU", CK_ALG_CANON, CK_EXACT_VALUES},
        {"NOOP", 0, CK_EXACT_BITS},
        {"INLINE", 0, CK_EXACT_BITS},
    };
    const int n = (int)(sizeof want / sizeof *want);
    cr_assert_eq(ck_alg_rule_count(), n);
    for (int i = 0; i < n; ++i) {
        const ck_alg_rule *r = ck_alg_rule_by_id(want[i].id);
        cr_assert_not_null(r, "%s", want[i].id);
        cr_expect_eq(r->level, want[i].level, "%s", r->id);
        cr_expect_eq(r->swap, want[i].swap, "%s", r->id);
        cr_expect(r->what && r->what[0] && r->why && r->why[0], "%s: no text", r->id);
    }
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < i; ++j)
            cr_expect_str_neq(ck_alg_rule_at(i)->id, ck_alg_rule_at(j)->id);
    cr_expect_null(ck_alg_rule_at(n));
    cr_expect_null(ck_alg_rule_by_id("C5"));
    /* the planner applies exactly its reorders that keep the values: all of C1..C4 */
    for (int i = 0; i < n; ++i) {
        const ck_alg_rule *r = ck_alg_rule_at(i);
        if (r->swap == CK_ALG_PLAN)
            cr_expect_leq(r->level, CK_ALG_PLANNER_MAX, "%s", r->id);
    }
    cr_expect_gt(ck_alg_rule_by_id("SD-POOL")->level, CK_ALG_PLANNER_MAX);
}

/* A claim of identical bits in s that is not negated ("not bit-exact"). */
static const char *bits_claim(const char *s) {
    static const char *const claims[] = {"bit-exact", "bit for bit", "same bits", "bit-identical"};
    for (size_t k = 0; k < sizeof claims / sizeof *claims; ++k)
        for (const char *p = strstr(s, claims[k]); p; p = strstr(p + 1, claims[k]))
            if (!(p - s >= 4 && !strncmp(p - 4, "not ", 4)))
                return p;
    return NULL;
}

Test(algebra, no_text_claims_more_than_its_level) {
    cr_assert_not_null(bits_claim("forward and backward: the same bits"));
    cr_assert_null(bits_claim("equal in exact arithmetic, not bit-exact"));
    for (int i = 0; i < ck_alg_rule_count(); ++i) {
        const ck_alg_rule *r = ck_alg_rule_at(i);
        if (r->level > CK_EXACT_BITS) {
            cr_expect_null(bits_claim(r->what), "%s claims bits: %s", r->id, r->what);
            cr_expect_null(bits_claim(r->why), "%s claims bits: %s", r->id, r->why);
        } else {
            cr_expect_not_null(bits_claim(r->why), "%s says no level: %s", r->id, r->why);
        }
    }
    cr_expect_not_null(
        strstr(ck_alg_rule_by_id("SD-POOL")->why, "equal in exact arithmetic, not bit-exact"));
}

Test(algebra, swap_answers_the_pairs_of_test_equiv) {
    const unsigned any = CK_ALG_PLAN | CK_ALG_CANON;
    const ck_alg_op conv = OP(CONV2D), bn = OP(BATCHNORM), maxp = OP(MAXPOOL2D),
                    avgp = OP(AVGPOOL2D), sd = OP(SPATIAL_DROPOUT2D), drop = OP(DROPOUT),
                    relu = ACT(RELU), leaky = ACT(LEAKY_RELU), tanh_ = ACT(TANH);
    const ck_alg_rule *r;
    /* SpatialDropout <-> MaxPool / AvgPool: forward exact, backward differs at ties; average
     * within ulps: equal in exact arithmetic only, in the study's direction only */
    r = ck_alg_swap(any, &conv, &sd, &maxp);
    cr_assert_not_null(r);
    cr_expect_str_eq(r->id, "SD-POOL");
    cr_expect_eq(r->level, CK_EXACT_MATH);
    r = ck_alg_swap(any, &conv, &sd, &avgp);
    cr_assert_not_null(r);
    cr_expect_str_eq(r->id, "SD-POOL");
    cr_expect_null(ck_alg_swap(any, &conv, &maxp, &sd));
    cr_expect_null(ck_alg_swap(CK_ALG_PLAN, &conv, &sd, &maxp), "the planner never moves it");
    /* Dropout / SpatialDropout <-> ReLU: equal values */
    const ck_alg_op *drops[2] = {&drop, &sd};
    for (int k = 0; k < 2; ++k) {
        r = ck_alg_swap(CK_ALG_CANON, NULL, drops[k], &relu);
        cr_assert_not_null(r);
        cr_expect_str_eq(r->id, "DROP-RELU");
        cr_expect_eq(r->level, CK_EXACT_VALUES);
        r = ck_alg_swap(CK_ALG_PLAN, &bn, drops[k], &relu);
        cr_assert_not_null(r);
        cr_expect_str_eq(r->id, "C2");
        r = ck_alg_swap(CK_ALG_PLAN, &maxp, &relu, drops[k]);
        cr_assert_not_null(r);
        cr_expect_str_eq(r->id, "C4");
        cr_expect_eq(r->level, CK_EXACT_VALUES);
        cr_expect_null(ck_alg_swap(CK_ALG_PLAN, &conv, drops[k], &relu), "C2 needs the BN");
        cr_expect_null(ck_alg_swap(any, NULL, drops[k], &tanh_), "tanh is not homogeneous");
    }
    /* ReLU <-> MaxPool: the same bits (C3, or C1 after a BN) */
    r = ck_alg_swap(any, &conv, &relu, &maxp);
    cr_assert_not_null(r);
    cr_expect_str_eq(r->id, "C3");
    cr_expect_eq(r->level, CK_EXACT_BITS);
    cr_expect_null(ck_alg_swap(any, &bn, &relu, &maxp), "after a BN the ReLU stays to fuse");
    r = ck_alg_swap(any, &bn, &maxp, &relu);
    cr_assert_not_null(r);
    cr_expect_str_eq(r->id, "C1");
    cr_expect_eq(r->level, CK_EXACT_BITS);
    ck_alg_op fused_bn = bn;
    fused_bn.fused = 1;
    cr_expect_null(ck_alg_swap(any, &fused_bn, &maxp, &relu), "C1 needs a plain BN");
    /* LeakyReLU / tanh <-> MaxPool, ReLU <-> AvgPool: the backward can differ, no rule */
    cr_expect_null(ck_alg_swap(any, &conv, &leaky, &maxp));
    cr_expect_null(ck_alg_swap(any, &conv, &tanh_, &maxp));
    cr_expect_null(ck_alg_swap(any, &conv, &relu, &avgp));
    /* BN (trained with batch statistics) <-> MaxPool: never moved */
    cr_expect_null(ck_alg_swap(any, &conv, &bn, &maxp));
    cr_expect_null(ck_alg_swap(any, &conv, &maxp, &bn));
    /* element Dropout <-> MaxPool: not an equivalence */
    cr_expect_null(ck_alg_swap(any, &conv, &drop, &maxp));
    cr_expect_null(ck_alg_swap(any, &conv, &maxp, &drop));
}

Test(algebra, expand_is_the_one_lowering) {
    ck_layer_desc L[4];
    ck_layer_desc_init(&L[0], CK_LAYER_CONV2D);
    L[0].activation = CK_ACT_RELU;
    ck_layer_desc_init(&L[1], CK_LAYER_SPATIAL_DROPOUT2D);
    L[1].rate = 0.5f;
    ck_layer_desc_init(&L[2], CK_LAYER_FLATTEN);
    ck_layer_desc_init(&L[3], CK_LAYER_DENSE);
    L[3].activation = CK_ACT_SOFTMAX;
    ck_alg_op o[8];
    cr_assert_eq(ck_alg_expand(L, 4, 0, o), 6);
    const int layer[6] = {0, 0, 1, 2, 3, 3}, is_inline[6] = {0, 1, 0, 0, 0, 1};
    for (int i = 0; i < 6; ++i) {
        cr_expect_eq(o[i].layer, layer[i], "op %d", i);
        cr_expect_eq(o[i].is_inline, is_inline[i], "op %d", i);
    }
    cr_expect_eq(o[0].type, CK_LAYER_CONV2D);
    cr_expect_eq(o[0].act, CK_ACT_NONE);
    cr_expect_eq(o[1].type, CK_LAYER_ACTIVATION);
    cr_expect_eq(o[1].act, CK_ACT_RELU);
    cr_expect_float_eq(o[2].rate, 0.5f, 0.0f);
    cr_expect_eq(o[5].act, CK_ACT_SOFTMAX);
    /* the study's variants keep a Dense's activation inline */
    cr_assert_eq(ck_alg_expand(L, 4, 1, o), 5);
    cr_expect_eq(o[4].type, CK_LAYER_DENSE);
    cr_expect_eq(o[4].is_inline, 0);
}

/* The study merges equal-in-exact-arithmetic variants but labels them so: the SpatialDropout2D
 * of the original sits before the pool, dropout-before-pool gives the same canonical form. */
Test(algebra, study_labels_the_level_it_merges) {
    ck_layer_desc L[6];
    ck_layer_desc_init(&L[0], CK_LAYER_CONV2D);
    L[0].units = 4;
    L[0].kernel_h = L[0].kernel_w = 3;
    L[0].input_h = L[0].input_w = 8;
    L[0].input_c = 1;
    ck_layer_desc_init(&L[1], CK_LAYER_ACTIVATION);
    L[1].activation = CK_ACT_RELU;
    ck_layer_desc_init(&L[2], CK_LAYER_MAXPOOL2D);
    L[2].kernel_h = L[2].kernel_w = 2;
    ck_layer_desc_init(&L[3], CK_LAYER_SPATIAL_DROPOUT2D);
    L[3].rate = 0.25f;
    ck_layer_desc_init(&L[4], CK_LAYER_FLATTEN);
    ck_layer_desc_init(&L[5], CK_LAYER_DENSE);
    L[5].units = 2;
    int kinds[2] = {CK_STUDY_ORIGINAL, CK_STUDY_DROPOUT_BEFORE_POOL};
    ck_study_variant v[2];
    char err[256];
    cr_assert_eq(ck_study_variants(L, 6, kinds, 2, v, err, sizeof err), CK_STATUS_SUCCESS, "%s",
                 err);
    cr_expect_eq(v[0].exactness, CK_EXACT_NONE);
    const ck_study_variant w = v[1];
    cr_assert_eq(w.equivalent_to, 0, "%s", w.order);
    cr_expect_eq(w.exactness, CK_EXACT_MATH);
    cr_expect_not_null(strstr(w.equivalence, "equal in exact arithmetic, not bit-exact"), "%s",
                       w.equivalence);
    cr_expect_null(bits_claim(w.equivalence), "%s", w.equivalence);
    ck_study_variants_free(v, 2);

    /* a Dropout moved across a ReLU: equal values, not bits */
    L[3].type = CK_LAYER_DROPOUT;
    int eq = 0;
    char why[256];
    cr_assert_eq(ck_study_equivalent(L, 6, L, 6, &eq, why, sizeof why), CK_STATUS_SUCCESS);
    cr_expect_eq(eq, 1);
    cr_expect_str_eq(why, "the same layer list");
    ck_layer_desc N[6] = {L[0], L[1], L[3], L[2], L[4], L[5]}; /* C, R, D, P */
    ck_layer_desc P[6] = {L[0], L[3], L[1], L[2], L[4], L[5]}; /* C, D, R, P */
    cr_assert_eq(ck_study_equivalent(N, 6, P, 6, &eq, why, sizeof why), CK_STATUS_SUCCESS);
    cr_expect_eq(eq, 1);
    cr_expect_not_null(strstr(why, "dropout moved across ReLU"), "%s", why);
    cr_expect_null(bits_claim(why), "%s", why);
}
