/* `cnnkit check` on layer graphs: the chains the Sequential rules walk, and the rules for
 * residual blocks: where BN, ReLU and dropout sit around an Add, after He et al. 2016, "Identity
 * Mappings in Deep Residual Networks" (arXiv:1603.05027): Table 1 for the shortcut, Table 2
 * (ResNet-110 on CIFAR-10) for the activations. */
#include "check_internal.h"
#include <stdio.h>

/* A layer predicate over every layer l reads from: the first that holds, or -1. */
static int first_ancestor(const chk *c, int l, int (*pred)(const ck_layer_desc *)) {
    if (l < 0 || l >= c->count)
        return -1;
    ck_chk_ancestors(c, l);
    for (int j = 0; j < l; ++j)
        if (c->anc[j] && pred(&c->L[j]))
            return j;
    return -1;
}

static int is_live_dropout(const ck_layer_desc *d) {
    return (d->type == CK_LAYER_DROPOUT || d->type == CK_LAYER_SPATIAL_DROPOUT2D) && d->rate > 0.0f;
}

int ck_chk_earlier_dropout(const chk *c, int l) {
    return first_ancestor(c, l, is_live_dropout);
}

static int is_weighted(const ck_layer_desc *d) {
    return d->type == CK_LAYER_CONV2D || d->type == CK_LAYER_DENSE;
}

int ck_chk_weight_reach(const chk *c, int l, int *up) {
    *up = -1;
    if (l < 0 || l >= c->count)
        return 0;
    ck_chk_ancestors(c, l);
    for (int j = 0; j < l; ++j)
        if (c->anc[j] && is_weighted(&c->L[j]))
            *up = j;
    memset(c->anc, 0, (size_t)c->count); /* now: the layers that read l, directly or not */
    c->anc[l] = 1;
    for (int j = l + 1; j < c->count; ++j) {
        for (int k = 0; k < ck_chk_n_inputs(c->L, j) && !c->anc[j]; ++k) {
            const int i = ck_chk_input_of(c->L, j, k);
            c->anc[j] = i >= 0 && i < j && c->anc[i];
        }
        if (c->anc[j] && is_weighted(&c->L[j]))
            return 1;
    }
    return 0;
}

/* How many of layers i+1..count-1 read layer i (each reader once); *one the first (-1: none). */
static int layer_readers(const ck_layer_desc *L, int count, int i, int *one) {
    int n = 0;
    *one = -1;
    for (int j = i + 1; j < count; ++j)
        for (int k = 0; k < ck_chk_n_inputs(L, j); ++k)
            if (ck_chk_input_of(L, j, k) == i) {
                if (n++ == 0)
                    *one = j;
                break;
            }
    return n;
}
static int readers(const chk *c, int i, int *one) {
    return layer_readers(c->L, c->count, i, one);
}

/* The layer layers[i + 1] reads when it reads exactly one tensor (-2 otherwise): the rules walk
 * chains, so a layer graph is checked chain by chain. */
static int sole_input(const ck_layer_desc *layers, int i) {
    const ck_layer_desc *d = &layers[i + 1];
    return d->num_inputs == 0 ? i : d->num_inputs == 1 ? d->inputs[0] : -2;
}

/* The end of the chain that starts at layer s: the longest run s..e in which every layer reads the
 * one before it and is that layer's only reader. Index order is the rules' order, so a link
 * to a non-adjacent layer ends the chain (a Sequential model is one chain). */
int ck_chk_chain_end(const ck_layer_desc *layers, int count, int s) {
    int e = s;
    while (e + 1 < count && sole_input(layers, e) == e) {
        int next;
        if (layer_readers(layers, count, e, &next) != 1)
            break;
        ++e;
    }
    return e;
}

static int ends_in_relu(const ck_layer_desc *d) {
    return (d->type == CK_LAYER_ACTIVATION || d->type == CK_LAYER_CONV2D ||
            d->type == CK_LAYER_DENSE) &&
           d->activation == CK_ACT_RELU;
}

static int is_add_input(const chk *c, int i) {
    for (int j = i + 1; j < c->count; ++j)
        if (c->L[j].type == CK_LAYER_ADD)
            for (int k = 0; k < ck_chk_n_inputs(c->L, j); ++k)
                if (ck_chk_input_of(c->L, j, k) == i)
                    return j;
    return -1;
}

/* CK015: an Add whose only reader is a BN whose result (after an optional ReLU) is the next
 * unit's shortcut. The final BN-ReLU of a pre-activation net reads the last Add but feeds no
 * Add, and a pre-activation unit's BN shares the Add with the next shortcut: neither fires. */
static void rule_bn_after_add(chk *c, int a) {
    int bn = -1;
    if (readers(c, a, &bn) != 1 || c->L[bn].type != CK_LAYER_BATCHNORM)
        return;
    int out = bn, next = -1;
    if (readers(c, bn, &next) == 1 && c->L[next].type == CK_LAYER_ACTIVATION)
        out = next;
    const int add2 = is_add_input(c, out);
    if (add2 < 0)
        return;
    ck_finding *f = ck_chk_emit(c, "CK015-bn-after-add", CK_SEVERITY_WARNING, 0.0, 3, a, bn, add2);
    snprintf(f->message, sizeof f->message,
             "BatchNormalization (layer %d) right after the Add (layer %d), on the shortcut of the "
             "Add at layer %d",
             bn, a, add2);
    snprintf(f->reason, sizeof f->reason,
             "the BN normalizes the sum, so the shortcut is no longer an identity path: He et al. "
             "2016 (arXiv:1603.05027, Table 2, ResNet-110 on CIFAR-10) measured 8.17%% test error "
             "with BN after the addition against 6.61%% for the original unit");
    snprintf(f->fix, sizeof f->fix,
             "move the BN onto the residual branch, before the Add (Conv-BN, Add, ReLU: the "
             "original unit), or use full pre-activation (BN-ReLU-Conv on the branch, 6.37%%)");
}

/* Whether Add input s is a shortcut of the branch that ends at layer r: s is a layer the branch
 * reads from (an identity shortcut), or reaches one, or the model input, through layers without
 * an activation (a projection: Conv2D or Dense without activation, BN, pooling, padding,
 * Rescaling). Two towers that each end in an activation are not a residual block. */
static int is_shortcut_of(const chk *c, int s, int r) {
    ck_chk_ancestors(c, r);
    while (s >= 0 && s < c->count && !c->anc[s]) {
        const ck_layer_desc *d = &c->L[s];
        const int weighted = d->type == CK_LAYER_CONV2D || d->type == CK_LAYER_DENSE;
        const int passes = (weighted && d->activation == CK_ACT_NONE) ||
                           d->type == CK_LAYER_BATCHNORM || d->type == CK_LAYER_MAXPOOL2D ||
                           d->type == CK_LAYER_AVGPOOL2D || d->type == CK_LAYER_ZEROPADDING2D ||
                           d->type == CK_LAYER_RESCALING;
        const int next = ck_chk_input_of(c->L, s, 0);
        if (!passes || ck_chk_n_inputs(c->L, s) != 1 || next >= s)
            return 0;
        s = next;
    }
    return 1;
}

/* CK016: an Add input that is a ReLU read by the Add alone, whose other input is its shortcut:
 * the end of a residual branch, which can only add. */
static void rule_relu_before_add(chk *c, int a) {
    for (int k = 0; k < ck_chk_n_inputs(c->L, a); ++k) {
        const int r = ck_chk_input_of(c->L, a, k);
        int only = -1;
        if (r < 0 || !ends_in_relu(&c->L[r]) || readers(c, r, &only) != 1)
            continue;
        int shortcut = 0;
        for (int t = 0; t < ck_chk_n_inputs(c->L, a) && !shortcut; ++t)
            shortcut = t != k && is_shortcut_of(c, ck_chk_input_of(c->L, a, t), r);
        if (!shortcut)
            continue;
        ck_finding *f =
            ck_chk_emit(c, "CK016-relu-before-add", CK_SEVERITY_WARNING, 0.0, 2, r, a, -1);
        snprintf(f->message, sizeof f->message,
                 "the residual branch ends in a ReLU (layer %d) before the Add (layer %d)", r, a);
        snprintf(f->reason, sizeof f->reason,
                 "the branch output is >= 0, so each unit can only increase the signal: He et "
                 "al. 2016 (arXiv:1603.05027, Table 2, ResNet-110 on CIFAR-10) measured 7.84%% "
                 "test error with ReLU before the addition against 6.61%% for ReLU after it");
        ck_sbuf s;
        ck_sbuf_init(&s, f->fix, sizeof f->fix);
        ck_sbuf_printf(&s,
                       "end the branch without the activation and apply it after the Add (layer "
                       "%d), or use full pre-activation (BN-ReLU-Conv on the branch)",
                       a);
    }
}

/* CK017: a dropout on the shortcut: it reads the unit's input, which the branch reads too, and
 * only the Add reads it. */
static void rule_dropout_shortcut(chk *c, int a) {
    for (int k = 0; k < ck_chk_n_inputs(c->L, a); ++k) {
        const int d = ck_chk_input_of(c->L, a, k);
        int only = -1;
        if (d < 0 ||
            (c->L[d].type != CK_LAYER_DROPOUT && c->L[d].type != CK_LAYER_SPATIAL_DROPOUT2D) ||
            !(c->L[d].rate > 0.0f) || readers(c, d, &only) != 1)
            continue;
        const int x = ck_chk_input_of(c->L, d, 0);
        if (readers(c, x, &only) < 2) /* x -1: the model input */
            continue;
        ck_finding *f = ck_chk_emit(c, "CK017-dropout-on-shortcut", CK_SEVERITY_WARNING,
                                    (double)c->L[d].rate, 2, d, a, -1);
        snprintf(f->message, sizeof f->message, "%s(%g) on the shortcut of the Add (layer %d)",
                 c->L[d].type == CK_LAYER_DROPOUT ? "Dropout" : "SpatialDropout2D",
                 (double)c->L[d].rate, a);
        snprintf(f->reason, sizeof f->reason,
                 "the shortcut is the path the signal and its gradient take through the whole "
                 "net; dropping on it scales that path at random: He et al. 2016 "
                 "(arXiv:1603.05027, Table 1, Fig. 2f) found the dropout shortcut fails to "
                 "converge to a good solution");
        snprintf(f->fix, sizeof f->fix,
                 "remove layer %d, or put the dropout on the residual branch (between its "
                 "convolutions)",
                 d);
    }
}

void ck_chk_graph_rules(chk *c) {
    for (int a = 0; a < c->count; ++a)
        if (c->L[a].type == CK_LAYER_ADD) {
            rule_bn_after_add(c, a);
            rule_relu_before_add(c, a);
            rule_dropout_shortcut(c, a);
        }
}
