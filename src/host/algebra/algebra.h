/* The layer algebra: the one lowering of a layer list into ops, and the table of rewrites the
 * planner (plan.c), the order study (study.c) and the checker (check.c) reason with, each with
 * how exact it is (ck_exactness, cnnkit/model.h) and why. Internal, not installed. */
#ifndef CK_ALGEBRA_H
#define CK_ALGEBRA_H

#include "internal.h"

#include "cnnkit/model.h"

/* One op of a lowered layer list: a layer, or the inline activation of a Conv2D/Dense. */
typedef struct ck_alg_op {
    ck_layer_type type; /* CK_LAYER_ACTIVATION also for an inline activation */
    ck_activation act;  /* activations; CK_ACT_NONE for every other type */
    float rate;         /* dropouts; 0 for every other type */
    int layer;          /* index in the layer list */
    int is_inline;      /* the activation of the Conv2D/Dense `layer` */
    int fused;          /* planner: a BN or pool node that already runs a fused op */
} ck_alg_op;

/* Who applies a reorder (ck_alg_rule.swap): the planner moves a ReLU toward the node it fuses
 * with; the study swaps into one canonical order. 0: not a reorder (a fusion or a removal). */
enum { CK_ALG_PLAN = 1, CK_ALG_CANON = 2 };

typedef struct ck_alg_rule {
    const char *id;     /* C1..C4 F1..F3 SD-POOL DROP-RELU NOOP INLINE */
    int swap;           /* CK_ALG_PLAN, CK_ALG_CANON or 0 */
    ck_exactness level; /* forward and backward, in float arithmetic */
    const char *what;   /* the rewrite, e.g. "dropout moved across ReLU" */
    const char *why;    /* why it holds at that level, and what breaks below it */
} ck_alg_rule;

/* The planner applies only rules this exact or better; the study merges up to MATH and names
 * the level. */
#define CK_ALG_PLANNER_MAX CK_EXACT_VALUES
#define CK_ALG_STUDY_MAX CK_EXACT_MATH

/* Lowers layers[0..n) into out (room for 2 n): one op per layer, plus an activation op after a
 * Conv2D (and a Dense unless keep_dense_inline) with an inline activation. Returns the count. */
int ck_alg_expand(const ck_layer_desc *layers, int n, int keep_dense_inline, ck_alg_op *out);

/* The rule that lets `a, b` (after prev, NULL at the start) become `b, a`, among those of the
 * users in `use` (CK_ALG_PLAN | CK_ALG_CANON); NULL when none does. Directed: a canonical
 * reorder is answered in its own direction only (SpatialDropout2D before a pool, a dropout
 * before a ReLU), so repeated application ends. */
const ck_alg_rule *ck_alg_swap(unsigned use, const ck_alg_op *prev, const ck_alg_op *a,
                               const ck_alg_op *b);

/* The table: ck_alg_rule_count() entries; ck_alg_rule_by_id: NULL for an unknown id. */
int ck_alg_rule_count(void);
const ck_alg_rule *ck_alg_rule_at(int i);
const ck_alg_rule *ck_alg_rule_by_id(const char *id);

#endif
