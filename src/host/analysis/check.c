/* Model check: static diagnostics on the order of layers (see include/cnnkit/check.h).
 *
 * The layer list is expanded into nodes: every layer is a node, and a Conv2D/Dense with an inline
 * activation is followed by an activation node that belongs to the same layer index. The rules
 * then look at neighbouring nodes, or walk from a dropout to the next BN or pooling layer. Every
 * number and claim in a finding is derived in docs/derivations.md (cited by section) or cited
 * from its paper (Li et al. 2019, arXiv:1801.05134; Ioffe & Szegedy 2015, arXiv:1502.03167;
 * Tompson et al. 2015, arXiv:1411.4280). */
#include "algebra.h"
#include "check_internal.h"
#include "model_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K_PI 3.14159265358979323846

/* ---- node predicates ----------------------------------------------------------------------- */
static int is_drop(const node *n) {
    return !n->is_act && (n->type == CK_LAYER_DROPOUT || n->type == CK_LAYER_SPATIAL_DROPOUT2D);
}
static int is_weight(const node *n) {
    return !n->is_act && (n->type == CK_LAYER_CONV2D || n->type == CK_LAYER_DENSE);
}
static int is_bn(const node *n) {
    return !n->is_act && n->type == CK_LAYER_BATCHNORM;
}
static int is_pool(const node *n) {
    return !n->is_act && (n->type == CK_LAYER_MAXPOOL2D || n->type == CK_LAYER_AVGPOOL2D);
}
static int is_softmax(const node *n) {
    return n->is_act && n->act == CK_ACT_SOFTMAX;
}
static int is_rescale(const node *n) {
    return !n->is_act && n->type == CK_LAYER_RESCALING;
}
/* ZeroPadding2D adds positions that are 0 with or without the mask: pad(m x) = m' pad(x) for a
 * mask m' that extends m, so the rules read through it (docs/derivations.md §1, §4). */
static int is_zeropad(const node *n) {
    return !n->is_act && n->type == CK_LAYER_ZEROPADDING2D;
}
/* A Rescaling by s > 0 without offset keeps zeros, signs and order (max(s x) = s max(x)): a
 * dropout mask and the pooling rules read through it (docs/derivations.md §8). */
static int is_pos_scale(const chk *c, const node *n) {
    const ck_layer_desc *d = &c->L[n->layer];
    return is_rescale(n) && d->scale > 0.0f && d->offset == 0.0f;
}
static float drop_rate(const chk *c, const node *n) {
    return c->L[n->layer].rate;
}

/* ---- numbers ------------------------------------------------------------------------------- */
/* Li et al. 2019 Eq. 8: Var_test / Var_train for dropout (retain p) fed straight into BN
 * (docs/derivations.md §1). */
static double li_delta(double p, double mean, double var) {
    return var / ((mean * mean + var) / p - mean * mean);
}

/* Mean and variance of sigmoid(Z), Z ~ N(0,1), by Simpson's rule on [-12, 12] (no closed form;
 * 0.5 and 0.0434). */
static void sigmoid_normal_moments(double *mean, double *var) {
    const int n = 2400;
    const double a = -12.0, h = 24.0 / n;
    double m1 = 0.0, m2 = 0.0;
    for (int k = 0; k <= n; ++k) {
        const double z = a + h * k, w = (k == 0 || k == n) ? 1.0 : (k % 2 ? 4.0 : 2.0);
        const double phi = exp(-0.5 * z * z) / sqrt(2.0 * K_PI), sg = 1.0 / (1.0 + exp(-z));
        m1 += w * phi * sg;
        m2 += w * phi * sg * sg;
    }
    m1 *= h / 3.0;
    m2 *= h / 3.0;
    *mean = m1;
    *var = m2 - m1 * m1;
}

static int pow2(float x) {
    int e;
    return x > 0.0f && frexpf(x, &e) == 0.5f;
}

/* Activations that commute with a mask value m >= 0: f(m x) = m f(x). */
static int homogeneous(ck_activation a) {
    return a == CK_ACT_NONE || a == CK_ACT_RELU || a == CK_ACT_LEAKY_RELU;
}
/* Activations with f(0) = 0 that keep the sign (a dropped unit stays 0, a kept one stays signed
 * as before): every one but sigmoid and softmax. */
static int zero_keeping(ck_activation a) {
    return a != CK_ACT_SIGMOID && a != CK_ACT_SOFTMAX;
}

/* The activation whose non-negative output the dropout at node di sees (ReLU, sigmoid or
 * softmax right before it, through pooling, zero padding, positive Rescalings and other
 * dropouts), or CK_ACT_NONE. */
static ck_activation nonneg_input(const chk *c, int di) {
    int j = di - 1;
    while (j >= 0 && (is_pool(&c->nd[j]) || is_drop(&c->nd[j]) || is_zeropad(&c->nd[j]) ||
                      is_pos_scale(c, &c->nd[j])))
        --j;
    if (j >= 0 && c->nd[j].is_act &&
        (c->nd[j].act == CK_ACT_RELU || c->nd[j].act == CK_ACT_SIGMOID ||
         c->nd[j].act == CK_ACT_SOFTMAX))
        return c->nd[j].act;
    return CK_ACT_NONE;
}

double ck_act_eval_ref(ck_activation a, double x, double alpha) {
    switch (a) {
    case CK_ACT_RELU:
        return x > 0 ? x : 0;
    case CK_ACT_LEAKY_RELU:
        return x > 0 ? x : alpha * x;
    case CK_ACT_SIGMOID:
        return 1.0 / (1.0 + exp(-x));
    case CK_ACT_TANH:
        return tanh(x);
    case CK_ACT_ELU:
        return x > 0 ? x : alpha * (exp(x) - 1.0);
    case CK_ACT_GELU:
        return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case CK_ACT_SWISH:
        return x / (1.0 + exp(-x));
    default:
        return x;
    }
}

/* ---- the path from a dropout to the BatchNormalization it reaches -------------------------- */
typedef struct bn_path {
    int bn;      /* node of the BN reached, -1 none */
    int weights; /* Conv2D / Dense layers between */
    int kind;    /* CK_DROP_PATH_* (model_internal.h) */
    int layer;   /* the first layer that makes the path linear (mixing) or nonlinear, -1 */
    int shifted; /* a Rescaling with an offset between */
    int concat;  /* the first Concatenate between (the BN reads other channels too), -1 */
} bn_path;

/* The walk from a dropout to the next BN follows activations, pooling,
 * Flatten, GlobalAveragePooling2D, ZeroPadding2D, Rescaling, Conv2D and Dense; stops at another
 * dropout, a softmax or the end. The mask (element: one per unit; SpatialDropout2D: one per
 * channel and sample) commutes with ReLU/LeakyReLU, Flatten and zero padding, and a channel's
 * mask with its pooling; a layer that sums differently masked values (Conv2D, Dense, element-wise
 * pooling by averaging) makes the path linear (§2), a max pool of differently masked values, a
 * ReLU after such a sum or a non-homogeneous activation makes it nonlinear (§3). A Rescaling
 * commutes with the mask (s m x = m s x) and leaves Eq. 8 as it is; an offset adds a constant,
 * which changes no variance but moves a dropped value off 0, so an activation after it is
 * nonlinear in the mask, and zero padding after it leaves the ceiling (§8); r.shifted says one
 * was passed (the BN input's mean is not the dropout output's then). The walk's state along one
 * path, one node at a time: */
typedef struct walk {
    int spatial, mixed, closed, mix_layer, open_layer;
    bn_path r;
} walk;

static walk walk_start(const chk *c, int dl) {
    walk w = {c->L[dl].type == CK_LAYER_SPATIAL_DROPOUT2D, 0, 1, -1, -1,
              {-1, 0, CK_DROP_PATH_COMMUTES, -1, 0, -1}};
    return w;
}

/* One node of the path: 1 at a BN (w->r complete but for r.bn), -1 where the walk stops, 0 on. */
static int walk_step(const chk *c, const node *n, walk *w) {
    bn_path *r = &w->r;
    if (is_bn(n)) {
        r->kind = !w->closed ? CK_DROP_PATH_NONLINEAR
                  : w->mixed ? CK_DROP_PATH_LINEAR
                             : CK_DROP_PATH_COMMUTES;
        r->layer = !w->closed ? w->open_layer : w->mixed ? w->mix_layer : -1;
        return 1;
    }
    if (is_softmax(n) || is_drop(n))
        return -1;
    int mixes = 0, breaks = 0;
    if (n->is_act)
        breaks = !(homogeneous(n->act) && ((!w->mixed && !r->shifted) || n->act == CK_ACT_NONE));
    else if (n->type == CK_LAYER_MAXPOOL2D || n->type == CK_LAYER_GLOBALMAXPOOL2D)
        breaks = !(w->spatial && !w->mixed);
    else if (n->type == CK_LAYER_AVGPOOL2D || n->type == CK_LAYER_GLOBALAVGPOOL2D)
        mixes = !(w->spatial && !w->mixed);
    else if (is_weight(n))
        mixes = 1, r->weights++;
    else if (n->type == CK_LAYER_ADD) /* the masked tensor plus another: a sum (§2) */
        mixes = 1;
    else if (is_rescale(n))
        r->shifted |= c->L[n->layer].offset != 0.0f;
    else if (is_zeropad(n))
        mixes = r->shifted; /* zeros beside shifted values: Var_inference may pass the ceiling */
    else if (n->type == CK_LAYER_CONCATENATE && r->concat < 0)
        r->concat = n->layer; /* it only places the masked channels beside others */
    else if (n->type != CK_LAYER_FLATTEN && n->type != CK_LAYER_CONCATENATE)
        breaks = 1;
    if (mixes && !w->mixed) {
        w->mixed = 1;
        w->mix_layer = n->layer;
    }
    if (breaks && w->closed) {
        w->closed = 0;
        w->open_layer = n->layer;
    }
    return 0;
}

/* Within the dropout's chain; *left: the walk reached the chain's end (the path goes on in the
 * layer graph, graph_walk). */
static bn_path walk_to_bn_left(const chk *c, int i, int *left) {
    walk w = walk_start(c, c->nd[i].layer);
    *left = 0;
    for (int k = i + 1; k < c->nn; ++k) {
        const int st = walk_step(c, &c->nd[k], &w);
        if (st < 0)
            return w.r;
        if (st > 0) {
            w.r.bn = k;
            return w.r;
        }
    }
    *left = 1;
    return w.r;
}

/* A node of the algebra's lowering (ck_alg_expand) of layer `layer`. */
static node node_of(const ck_alg_op *o, int layer) {
    return (node){layer, o->type, o->type == CK_LAYER_ACTIVATION, o->act};
}

/* The nodes of layer l, as the chains' expansion makes them. */
static int layer_nodes(const chk *c, int l, node out[2]) {
    ck_alg_op ops[2];
    const int n = ck_alg_expand(&c->L[l], 1, 0, ops);
    for (int k = 0; k < n; ++k)
        out[k] = node_of(&ops[k], l);
    return n;
}

/* Two paths to the same BN: the BN input holds both, so the finding takes the fewest weight
 * layers and the least closed kind (a nonlinear or averaging path spoils a commuting one). */
static void merge_paths(bn_path *a, const bn_path *b) {
    const int fewer = b->weights < a->weights;
    const bn_path keep = fewer ? *b : *a, other = fewer ? *a : *b;
    *a = keep; /* the kind and layer named are the shortest path's unless another's is worse */
    if (other.kind > a->kind) {
        a->kind = other.kind;
        a->layer = other.layer;
    }
    a->shifted |= other.shifted;
    if (a->concat < 0)
        a->concat = other.concat;
}

/* The layer graph's paths from layer l on (the walk's state w so far): each first BN reached goes
 * to found[] (its layer in r.bn, at most cap; paths to one BN merged). depth bounds the recursion
 * and *c->budget the work of one ck_model_check (paths multiply at every branch): past it the
 * walk stops, finding less, never more. */
static void graph_walk(const chk *c, int l, walk w, bn_path *found, int *nfound, int cap,
                       int depth) {
    if (depth > 256 || !c->budget || *c->budget <= 0)
        return;
    for (int j = l + 1; j < c->count && --*c->budget > 0; ++j) {
        const ck_layer_desc *d = &c->L[j];
        int reads = 0;
        for (int k = 0; k < ck_chk_n_inputs(c->L, j) && !reads; ++k)
            reads = ck_chk_input_of(c->L, j, k) == l;
        if (!reads)
            continue;
        if ((d->type == CK_LAYER_DROPOUT || d->type == CK_LAYER_SPATIAL_DROPOUT2D) &&
            !(d->rate > 0.0f)) {
            graph_walk(c, j, w, found, nfound, cap, depth + 1); /* rate 0: not there */
            continue;
        }
        walk v = w;
        node nd[2];
        const int nn = layer_nodes(c, j, nd);
        int st = 0;
        for (int k = 0; k < nn && st == 0; ++k)
            st = walk_step(c, &nd[k], &v);
        if (st > 0) {
            int seen = -1;
            for (int f = 0; f < *nfound; ++f)
                if (found[f].bn == j)
                    seen = f;
            v.r.bn = j;
            if (seen >= 0)
                merge_paths(&found[seen], &v.r);
            else if (*nfound < cap)
                found[(*nfound)++] = v.r;
        } else if (st == 0) {
            graph_walk(c, j, v, found, nfound, cap, depth + 1);
        }
    }
}

/* The BNs the dropout at node i reaches (r.bn their layers; at most cap): the first in its chain
 * or, when the walk leaves the chain, every first BN on the layer graph's paths past it (a
 * dropout also read by a shortcut, Dropout -> Add -> BN); *graph says which. */
static int dropout_bns(const chk *c, int i, bn_path *found, int cap, int *graph) {
    int left, nf = 0;
    const bn_path p = walk_to_bn_left(c, i, &left);
    *graph = p.bn < 0 && left;
    if (p.bn >= 0) {
        found[nf] = p;
        found[nf++].bn = c->nd[p.bn].layer;
    } else if (left) {
        const int dl = c->nd[i].layer;
        graph_walk(c, dl, walk_start(c, dl), found, &nf, cap, 0);
    }
    return nf;
}

/* ---- rules --------------------------------------------------------------------------------- */

/* CK001 / CK002 for the dropout at layer dl reaching the BN at layer bl along path; graph: the path
 * leaves the dropout's chain (the fix names layers instead of rewriting a sequence). */
static void emit_dropout_bn(chk *c, int i, const bn_path *pp, int bl, int graph) {
    const node *d = &c->nd[i];
    const double q = drop_rate(c, d), p = 1.0 - q;
    const bn_path path = *pp;
    const int dl = d->layer, weights = path.weights;
    const int earlier = ck_chk_earlier_dropout(c, dl);
    const char *dname = ck_layer_type_name(c->L[dl].type);
    const char *via = path.layer >= 0 ? ck_layer_type_name(c->L[path.layer].type) : "";
    ck_finding *f;
    ck_sbuf s;
    if (weights == 0) {
        const int commutes = path.kind == CK_DROP_PATH_COMMUTES;
        f = ck_chk_emit(c, "CK001-dropout-before-bn", CK_SEVERITY_WARNING,
                        commutes && earlier < 0 ? p : NAN, 2, dl, bl, -1);
        snprintf(f->message, sizeof f->message,
                 "%s(%g) feeds BatchNormalization (layer %d): variance shift between training "
                 "and inference",
                 dname, q, bl);
        ck_sbuf_init(&s, f->reason, sizeof f->reason);
        if (commutes) {
            ck_sbuf_printf(
                &s,
                "BN learns the variance of dropped and rescaled values in training and sees "
                "undropped ones at inference: Var_inference/Var_train = "
                "(1-rate)*v/(v + rate*c^2) <= 1-rate = %.3f for any mean c and variance v "
                "of its input without dropout, equal only for c = 0",
                p);
            const ck_activation before = nonneg_input(c, i);
            if (before == CK_ACT_RELU)
                ck_sbuf_printf(&s, " (after a ReLU c > 0: %.3f for ReLU(N(0,1)))",
                               li_delta(p, 1.0 / sqrt(2.0 * K_PI), 0.5 - 1.0 / (2.0 * K_PI)));
            else if (before == CK_ACT_SIGMOID) {
                double mc, mv;
                sigmoid_normal_moments(&mc, &mv);
                ck_sbuf_printf(&s, " (after a sigmoid c > 0: %.3f for sigmoid(N(0,1)))",
                               li_delta(p, mc, mv));
            } else if (before == CK_ACT_SOFTMAX)
                ck_sbuf_printf(&s, " (after a softmax c > 0)");
            ck_sbuf_printf(&s,
                           " (Li et al. 2019, arXiv:1801.05134, Eq. 8; docs/derivations.md §1)");
            if (path.concat >= 0)
                ck_sbuf_printf(&s,
                               "; per channel the dropout reaches: Concatenate (layer %d) places "
                               "other channels beside them",
                               path.concat);
            if (earlier >= 0)
                ck_sbuf_printf(
                    &s,
                    "; the dropout at layer %d already shifts this dropout's input, which "
                    "multiplies in: the ceiling does not hold (§1)",
                    earlier);
            ck_sbuf_printf(&s,
                           "; dropped positions become one batch-dependent constant, not 0 (§1)");
        } else if (path.kind == CK_DROP_PATH_LINEAR) {
            ck_sbuf_printf(
                &s,
                "%s (layer %d) between %s, so Eq. 8 and its ceiling 1-rate do not apply: "
                "Var_inference/Var_train = V/(V + (1/p-1)*sum_g E[u_g^2]) < 1 (V: variance "
                "without dropout, u_g: the part of the BN input from mask group g; "
                "docs/derivations.md §2); measure it with --measure",
                via, path.layer,
                c->L[path.layer].type == CK_LAYER_ADD
                    ? "adds the dropped values to unmasked ones"
                    : "sums or averages independently dropped values");
        } else {
            ck_sbuf_printf(&s,
                           "%s (layer %d) between is nonlinear in the dropped values, so Eq. 8 and "
                           "its ceiling 1-rate do not apply and there is no closed form: the ratio "
                           "can even exceed 1 (docs/derivations.md §3); measure it with --measure",
                           via, path.layer);
        }
        const int after = ck_chk_insertion_after(c, bl), lo = dl > 0 ? dl - 1 : 0;
        ck_sbuf_init(&s, f->fix, sizeof f->fix);
        ck_sbuf_printf(&s, "move the dropout after the BatchNormalization (and its activation): ");
        if (graph)
            ck_sbuf_printf(&s, "layer %d after layer %d, on every path of the graph it reaches", dl,
                           after);
        else
            ck_chk_fix_move(&s, c, lo, after, dl, after);
        const int last = ck_chk_last_bn_layer(c);
        if (last > after)
            ck_sbuf_printf(
                &s,
                "; it then still reaches a later BatchNormalization through weight layers "
                "(CK002): no shift only after the last one (layer %d)",
                last);
    } else {
        f = ck_chk_emit(c, "CK002-dropout-weight-bn", CK_SEVERITY_INFO, (double)weights, 2, dl, bl,
                        -1);
        snprintf(f->message, sizeof f->message,
                 "%s(%g) reaches BatchNormalization (layer %d) through %d weight layer%s: a "
                 "variance shift remains",
                 dname, q, bl, weights, weights > 1 ? "s" : "");
        ck_sbuf_init(&s, f->reason, sizeof f->reason);
        if (path.kind == CK_DROP_PATH_LINEAR)
            ck_sbuf_printf(
                &s, "through linear layers only, Var_inference/Var_train = "
                    "V/(V + (1/p-1)*sum_g E[u_g^2]) (V: variance without dropout, u_g: the part "
                    "of the BN input from mask group g): below 1 for any width, and closer to 1 "
                    "than the direct value only when the parts are non-negatively correlated; "
                    "no bound follows (docs/derivations.md §2; Li et al. 2019 Eq. 14 is a "
                    "special case); measure it with --measure");
        else
            ck_sbuf_printf(
                &s,
                "%s (layer %d) between is nonlinear in the dropped values: no closed form, "
                "no bound (the ratio is not between the direct value and 1 in general and "
                "can exceed 1; docs/derivations.md §2-3); measure it with --measure",
                via, path.layer);
        ck_sbuf_init(&s, f->fix, sizeof f->fix);
        ck_sbuf_printf(&s, "optional: ");
        ck_chk_fix_after_last_bn(&s, c, dl);
    }
}

/* CK001 / CK002: dropout reaching BN. */
static void rule_dropout_bn(chk *c, int i) {
    bn_path found[8];
    int graph;
    const int nf = dropout_bns(c, i, found, 8, &graph);
    for (int f = 0; f < nf; ++f)
        emit_dropout_bn(c, i, &found[f], found[f].bn, graph);
}

/* CK003 / CK004: dropout before pooling, directly or through activations that keep a dropped
 * unit at 0 (CK003) or commute with the mask (CK004), positive Rescalings (§8) and zero
 * padding (§4). */
static void rule_dropout_pool(chk *c, int i) {
    const node *d = &c->nd[i];
    const int spatial = d->type == CK_LAYER_SPATIAL_DROPOUT2D;
    int k = i + 1, relu_between = 0, via = -1, odd = -1;
    while (k < c->nn &&
           (c->nd[k].is_act ? (spatial ? homogeneous(c->nd[k].act) : zero_keeping(c->nd[k].act))
                            : is_pos_scale(c, &c->nd[k]) || is_zeropad(&c->nd[k]))) {
        relu_between |= c->nd[k].is_act && c->nd[k].act == CK_ACT_RELU;
        if (c->nd[k].is_act && !homogeneous(c->nd[k].act) && odd < 0)
            odd = k; /* f(x/p) != f(x)/p: the inflation bound of §4 does not hold */
        if (via < 0)
            via = k;
        ++k;
    }
    if (k >= c->nn || !is_pool(&c->nd[k]))
        return;
    const int dl = d->layer, pl = c->nd[k].layer;
    const ck_layer_desc *pd = &c->L[pl];
    const double q = drop_rate(c, d);
    char through[96] = "";
    if (via >= 0)
        snprintf(through, sizeof through, " through %s (layer %d)",
                 c->nd[via].is_act ? ck_chk_act_name(c->nd[via].act)
                                   : ck_layer_type_name(c->nd[via].type),
                 c->nd[via].layer);
    ck_finding *f;
    ck_sbuf s;
    if (!spatial && pd->type == CK_LAYER_MAXPOOL2D) {
        const int n = pd->kernel_h * pd->kernel_w;
        const double pz = pow(q, n), infl = (1.0 - pz) / (1.0 - q);
        const int nonneg = relu_between || nonneg_input(c, i) != CK_ACT_NONE;
        f = ck_chk_emit(c, "CK003-dropout-before-maxpool", CK_SEVERITY_WARNING,
                        odd < 0 ? infl : NAN, 2, dl, pl, -1);
        snprintf(f->message, sizeof f->message, "Dropout(%g) before MaxPooling2D((%d,%d))%s: %s", q,
                 pd->kernel_h, pd->kernel_w, through,
                 nonneg ? "a pooled output is dropped only when all positive inputs of its "
                          "window are"
                        : "on signed input a dropped unit's 0 becomes the max");
        ck_sbuf_init(&s, f->reason, sizeof f->reason);
        if (nonneg) {
            ck_sbuf_printf(
                &s,
                "a pooled output is zeroed only when every positive input of its window is "
                "dropped: rate^J for J positive inputs, rate^%d = %.4g only when all %d are; "
                "after a ReLU windows hold zeros, so the zeroed fraction lies between that "
                "and rate; ",
                n, pz, n);
            if (odd < 0)
                ck_sbuf_printf(&s,
                               "the max of the survivors scaled by 1/(1-rate) inflates the "
                               "training mean up to (1-rate^%d)/(1-rate) = %.3f times the "
                               "inference output (docs/derivations.md §4)",
                               n, infl);
            else
                ck_sbuf_printf(&s,
                               "the survivors pass %s (layer %d) as f(x/(1-rate)), not "
                               "f(x)/(1-rate), so the training mean's inflation has no bound "
                               "here: the ReLU bound (1-rate^%d)/(1-rate) = %.3f does not hold "
                               "(docs/derivations.md §4, §6)",
                               ck_chk_act_name(c->nd[odd].act), c->nd[odd].layer, n, infl);
        } else
            ck_sbuf_printf(
                &s,
                "the input can be negative: a window whose %d inputs are all negative "
                "becomes 0 whenever one of them is dropped (probability 1-(1-rate)^%d = "
                "%.3f), one with J positive inputs when all J are (rate^J; rate^%d = %.4g "
                "only for all-positive windows): the pool raises outputs to 0 more often "
                "than it drops them (docs/derivations.md §4)",
                n, n, 1.0 - pow(1.0 - q, n), n, pz);
        ck_sbuf_init(&s, f->fix, sizeof f->fix);
        ck_sbuf_printf(&s, "pool first: ");
        ck_chk_fix_move(&s, c, dl, pl, dl, pl);
        ck_sbuf_printf(&s, "; or drop whole channels: ");
        ck_layer_desc seq[K_MAX_WINDOW];
        int ns = 0;
        for (int l = dl; l <= pl && ns < K_MAX_WINDOW; ++l)
            seq[ns++] = c->L[l];
        seq[0].type = CK_LAYER_SPATIAL_DROPOUT2D;
        ck_chk_render_seq(&s, seq, ns);
        ck_sbuf_printf(&s, " (layers %d-%d)", dl, pl);
    } else if (spatial) {
        const int sh = pd->stride_h > 0 ? pd->stride_h : pd->kernel_h;
        const int sw = pd->stride_w > 0 ? pd->stride_w : pd->kernel_w;
        const double fewer = (double)sh * sw;
        f = ck_chk_emit(c, "CK004-spatialdrop-before-pool", CK_SEVERITY_INFO, fewer, 2, dl, pl, -1);
        snprintf(f->message, sizeof f->message,
                 "SpatialDropout2D(%g) before %s%s: the same result after the pool%s", q,
                 ck_layer_type_name(pd->type), through, fewer > 1 ? ", cheaper" : "");
        ck_sbuf_init(&s, f->reason, sizeof f->reason);
        ck_sbuf_printf(&s,
                       "one scale s in {0, 1/(1-rate)} per channel commutes with ReLU, zero "
                       "padding and pooling: max(s*x) = s*max(x) bit-exactly, average equal up to "
                       "float rounding; ");
        if (fewer > 1)
            ck_sbuf_printf(&s,
                           "after the pool (strides %dx%d) the mask touches about %g times fewer "
                           "elements: H*W/(ceil(H/%d)*ceil(W/%d)) with 'same' padding, a little "
                           "more with 'valid' (docs/derivations.md §5)",
                           sh, sw, fewer, sh, sw);
        else
            ck_sbuf_printf(&s,
                           "with strides 1x1 the pool's output is as large as its input (or "
                           "nearly): moving the dropout saves nothing (docs/derivations.md §5)");
        ck_sbuf_init(&s, f->fix, sizeof f->fix);
        ck_sbuf_printf(&s, "move layer %d (", dl);
        ck_chk_render_layer(&s, &c->L[dl]);
        ck_sbuf_printf(&s, ") after ");
        ck_chk_name_layer(&s, c, pl);
    }
}

/* The fix of a dropout after the last weight layer (CK010, and CK006/CK007 there: moving it
 * after the output activation would drop class scores): before that weight layer. */
static void fix_drop_before_last_weight(ck_sbuf *s, const chk *c, int dl, int last_weight) {
    const int lo = last_weight > 0 ? last_weight - 1 : 0;
    if (last_weight >= 0 && ck_chk_chain_end(c->L, c->count, lo) < dl) { /* another branch */
        ck_sbuf_printf(s, "drop before the last weight layer on its path: layer %d before layer %d",
                       dl, last_weight);
    } else if (last_weight >= 0) {
        ck_sbuf_printf(s, "drop before the last weight layer: ");
        ck_chk_fix_move_before(s, c, lo, dl, dl, last_weight);
    } else {
        ck_sbuf_printf(s, "remove layer %d", dl);
    }
}

/* CK006 / CK007's fix: the dropout after the activation, or, where no weight layer follows
 * (the output activation), before the last weight layer. */
static void fix_drop_after_act(ck_finding *f, const chk *c, int dl, int al, int last_weight) {
    ck_sbuf s;
    ck_sbuf_init(&s, f->fix, sizeof f->fix);
    if (dl > last_weight)
        fix_drop_before_last_weight(&s, c, dl, last_weight);
    else
        ck_chk_fix_move(&s, c, dl, al, dl, al);
}

/* CK005 / CK006 / CK007: dropout next to an activation. */
static void rule_dropout_act(chk *c, int i, int last_weight) {
    const node *d = &c->nd[i];
    const int dl = d->layer;
    const double q = drop_rate(c, d), p = 1.0 - q;
    ck_finding *f;
    ck_sbuf s;
    for (int side = -1; side <= 1; side += 2) {
        const int j = i + side;
        if (j < 0 || j >= c->nn || !c->nd[j].is_act)
            continue;
        const node *a = &c->nd[j];
        const int al = a->layer;
        const int l0 = side < 0 ? al : dl, l1 = side < 0 ? dl : al;
        const double alpha = c->L[al].alpha;
        if (a->act == CK_ACT_RELU || a->act == CK_ACT_LEAKY_RELU) {
            const int relu = a->act == CK_ACT_RELU;
            /* a product by a power of two is exact (short of underflow), so the two orders of
             * alpha * x * scale round alike when alpha or the dropout's float scale is one */
            const int exact = relu || pow2((float)alpha) || pow2(1.0f / (1.0f - (float)q));
            f = ck_chk_emit(c, "CK005-dropout-relu-order", CK_SEVERITY_INFO, relu ? 0.0 : 1.0 / p,
                            2, l0, l1, -1);
            snprintf(f->message, sizeof f->message, "%s next to %s: the order does not matter%s",
                     ck_layer_type_name(d->type), relu ? "ReLU" : "LeakyReLU",
                     exact ? " (bit-exact)" : " (up to rounding)");
            if (relu)
                snprintf(f->reason, sizeof f->reason,
                         "relu(m*x) = m*relu(x) for any mask value m >= 0, and float rounding "
                         "of a product does not depend on the sign test: maximum difference 0 "
                         "(docs/derivations.md §6)");
            else
                snprintf(f->reason, sizeof f->reason,
                         "leaky_relu(m*x) = m*leaky_relu(x) mathematically, but the negative "
                         "branch rounds alpha*x*(1/p) in another order: last-bit differences "
                         "unless alpha = %.4g or 1/p = %.4g is a power of two (a product by a "
                         "power of two is exact; docs/derivations.md §6)",
                         alpha, 1.0 / p);
            ck_sbuf_init(&s, f->fix, sizeof f->fix);
            ck_sbuf_printf(&s, "none needed; either order is fine");
        } else if (side > 0 && a->act == CK_ACT_SIGMOID) {
            f = ck_chk_emit(c, "CK006-dropout-before-sigmoid", CK_SEVERITY_WARNING, 0.5, 2, dl, al,
                            -1);
            snprintf(f->message, sizeof f->message,
                     "%s(%g) right before sigmoid: dropped units become 0.5, not 0",
                     ck_layer_type_name(d->type), q);
            snprintf(f->reason, sizeof f->reason,
                     "a dropped pre-activation is 0 and sigmoid(0) = 0.5, so %g of the units "
                     "carry 0.5 in training and the kept ones sigmoid(x/%g), which is not the "
                     "inference output rescaled (docs/derivations.md §6)",
                     q, p);
            fix_drop_after_act(f, c, dl, al, last_weight);
        } else if (side > 0 && (a->act == CK_ACT_TANH || a->act == CK_ACT_ELU ||
                                a->act == CK_ACT_GELU || a->act == CK_ACT_SWISH)) {
            const double x = a->act == CK_ACT_ELU ? -1.0 : 1.0;
            const double alpha_e = a->act == CK_ACT_ELU ? 1.0 : alpha;
            const double ratio =
                p * ck_act_eval_ref(a->act, x / p, alpha_e) / ck_act_eval_ref(a->act, x, alpha_e);
            f = ck_chk_emit(c, "CK007-dropout-before-nonlinear", CK_SEVERITY_WARNING, ratio, 2, dl,
                            al, -1);
            snprintf(f->message, sizeof f->message,
                     "%s(%g) right before %s: the 1/(1-rate) scaling is distorted",
                     ck_layer_type_name(d->type), q, ck_chk_act_name(a->act));
            snprintf(f->reason, sizeof f->reason,
                     "%s is not positively homogeneous, so %s(x/p) != %s(x)/p: at x = %g the "
                     "training-time expected output p*f(x/p) is %.3f times the inference output "
                     "f(x) (rate %g; docs/derivations.md §6)",
                     ck_chk_act_name(a->act), ck_chk_act_name(a->act), ck_chk_act_name(a->act), x,
                     ratio, q);
            fix_drop_after_act(f, c, dl, al, last_weight);
        }
    }
}

/* CK010 / CK011 / CK012 on a dropout node; returns nonzero when CK010 fired. */
static int rule_dropout_misc(chk *c, int i, int seen_flat, int last_weight) {
    const node *d = &c->nd[i];
    const int dl = d->layer;
    const double q = drop_rate(c, d);
    ck_finding *f;
    ck_sbuf s;
    int fired = 0;
    if (last_weight < dl) { /* no weight layer after the dropout */
        fired = 1;
        /* the output activation before the dropout (back to the last weight layer), and after */
        ck_activation before = CK_ACT_NONE, after = CK_ACT_NONE;
        for (int j = i - 1; j >= 0 && !is_weight(&c->nd[j]); --j)
            if (c->nd[j].is_act &&
                (c->nd[j].act == CK_ACT_SOFTMAX || c->nd[j].act == CK_ACT_SIGMOID))
                before = c->nd[j].act;
        for (int j = i + 1; j < c->nn; ++j)
            if (c->nd[j].is_act &&
                (c->nd[j].act == CK_ACT_SOFTMAX || c->nd[j].act == CK_ACT_SIGMOID)) {
                after = c->nd[j].act;
                break;
            }
        f = ck_chk_emit(c, "CK010-dropout-on-output", CK_SEVERITY_ERROR, q, 1, dl, -1, -1);
        if (before == CK_ACT_SOFTMAX) {
            snprintf(f->message, sizeof f->message, "%s(%g) after the output softmax",
                     ck_layer_type_name(d->type), q);
            snprintf(f->reason, sizeof f->reason,
                     "in training %g of the class probabilities are set to 0 (log 0 in the "
                     "loss) and the rest scaled by %.4g, so outputs no longer sum to 1 "
                     "(docs/derivations.md §7)",
                     q, 1.0 / (1.0 - q));
        } else if (before == CK_ACT_SIGMOID) {
            snprintf(f->message, sizeof f->message, "%s(%g) after the output sigmoid",
                     ck_layer_type_name(d->type), q);
            snprintf(f->reason, sizeof f->reason,
                     "in training %g of the probabilities are set to 0 and the rest scaled by "
                     "%.4g, which takes them past 1 (docs/derivations.md §7)",
                     q, 1.0 / (1.0 - q));
        } else if (after == CK_ACT_SIGMOID) {
            snprintf(f->message, sizeof f->message,
                     "%s(%g) after the last weight layer: dropout on the logits",
                     ck_layer_type_name(d->type), q);
            snprintf(f->reason, sizeof f->reason,
                     "%g of the logits are set to 0, which the sigmoid turns into 0.5, and the "
                     "rest are scaled by %.4g: the prediction itself is perturbed "
                     "(docs/derivations.md §7)",
                     q, 1.0 / (1.0 - q));
        } else {
            snprintf(f->message, sizeof f->message,
                     "%s(%g) after the last weight layer: dropout on the logits",
                     ck_layer_type_name(d->type), q);
            snprintf(f->reason, sizeof f->reason,
                     "%g of the logits are set to 0 (softmax still gives them exp(0) of the "
                     "mass) and the rest are scaled by %.4g, i.e. a softmax temperature of %g: "
                     "the prediction itself is perturbed (docs/derivations.md §7)",
                     q, 1.0 / (1.0 - q), 1.0 - q);
        }
        ck_sbuf_init(&s, f->fix, sizeof f->fix);
        fix_drop_before_last_weight(&s, c, dl, last_weight);
    }
    if (d->type == CK_LAYER_SPATIAL_DROPOUT2D && seen_flat >= 0) {
        f = ck_chk_emit(c, "CK011-spatial-dropout-flat", CK_SEVERITY_ERROR, q, 2, seen_flat, dl,
                        -1);
        snprintf(f->message, sizeof f->message,
                 "SpatialDropout2D(%g) on a non-spatial tensor (after %s, layer %d)", q,
                 ck_layer_type_name(c->L[seen_flat].type), seen_flat);
        snprintf(f->reason, sizeof f->reason,
                 "SpatialDropout2D drops whole feature maps of an N x H x W x C tensor (Tompson "
                 "et al. 2015, arXiv:1411.4280); after %s there are no feature maps (Keras' "
                 "SpatialDropout2D takes 4-D input only)",
                 ck_layer_type_name(c->L[seen_flat].type));
        ck_sbuf_init(&s, f->fix, sizeof f->fix);
        ck_layer_desc rep = c->L[dl];
        rep.type = CK_LAYER_DROPOUT;
        ck_chk_render_layer(&s, &rep);
        ck_sbuf_printf(&s, " (layer %d)", dl);
    }
    if (i + 1 < c->nn && is_drop(&c->nd[i + 1]) && drop_rate(c, &c->nd[i + 1]) > 0.0f) {
        const int el = c->nd[i + 1].layer;
        const double q2 = drop_rate(c, &c->nd[i + 1]);
        const double comb = 1.0 - (1.0 - q) * (1.0 - q2);
        f = ck_chk_emit(c, "CK012-double-dropout", CK_SEVERITY_WARNING, comb, 2, dl, el, -1);
        const int same = c->L[el].type == d->type;
        snprintf(f->message, sizeof f->message, "two dropouts in a row (rates %g and %g)", q, q2);
        if (same)
            snprintf(f->reason, sizeof f->reason,
                     "two independent masks act as one with rate 1-(1-%g)(1-%g) = %.4g; the "
                     "second layer only hides the real rate and costs a pass "
                     "(docs/derivations.md §7)",
                     q, q2, comb);
        else
            snprintf(f->reason, sizeof f->reason,
                     "a unit is kept with probability (1-%g)(1-%g), i.e. dropped with %.4g, but "
                     "a channel mask times an element mask is neither kind of dropout: whole "
                     "feature maps and single units are dropped together, and the real rate is "
                     "hidden in two layers (docs/derivations.md §7)",
                     q, q2, comb);
        ck_sbuf_init(&s, f->fix, sizeof f->fix);
        ck_layer_desc one = c->L[dl];
        one.rate = (float)comb;
        if (same) {
            ck_sbuf_printf(&s, "one layer: ");
            ck_chk_render_layer(&s, &one);
        } else {
            ck_sbuf_printf(&s, "one layer of one kind, the same rate per unit: ");
            ck_chk_render_layer(&s, &one);
            ck_sbuf_printf(&s, " or ");
            one.type = c->L[el].type;
            ck_chk_render_layer(&s, &one);
        }
        ck_sbuf_printf(&s, " (layers %d-%d)", dl, el);
    }
    return fired;
}

/* CK013: the same activation twice in a row (node i and i+1 both activations). */
static void rule_double_act(chk *c, int i) {
    const node *a = &c->nd[i], *b = &c->nd[i + 1];
    if (a->act != b->act || a->act == CK_ACT_NONE)
        return;
    const double alpha = c->L[a->layer].alpha, alpha2 = c->L[b->layer].alpha;
    double v;
    char why[200];
    switch (a->act) {
    case CK_ACT_RELU:
        v = 0.0;
        snprintf(why, sizeof why, "ReLU is idempotent: the second one changes nothing (effect 0)");
        break;
    case CK_ACT_LEAKY_RELU:
        v = alpha * alpha2;
        snprintf(why, sizeof why,
                 "the negative slope becomes %.4g * %.4g = %.4g instead of one of them", alpha,
                 alpha2, v);
        break;
    case CK_ACT_SIGMOID:
    case CK_ACT_TANH:
        v = ck_act_eval_ref(a->act, 1.0, alpha);
        snprintf(why, sizeof why, "the output is squashed into (%g, %.3f)",
                 a->act == CK_ACT_SIGMOID ? 0.5 : -v, v);
        break;
    case CK_ACT_SOFTMAX:
        v = 0.0;
        snprintf(why, sizeof why,
                 "softmax of probabilities in [0, 1] flattens them: with K classes the top "
                 "probability is at most e/(e+K-1) (0.232 for K = 10)");
        break;
    default: {
        /* ELU is the identity above 0: its difference shows below */
        const double x = a->act == CK_ACT_ELU ? -1.0 : 1.0;
        const double once = ck_act_eval_ref(a->act, x, alpha);
        v = ck_act_eval_ref(b->act, once, alpha2);
        snprintf(why, sizeof why, "f(f(x)) != f(x): f(f(%g)) = %.4g vs f(%g) = %.4g", x, v, x,
                 once);
        break;
    }
    }
    ck_finding *f = ck_chk_emit(c, "CK013-double-activation", CK_SEVERITY_WARNING, v, 2, a->layer,
                                b->layer, -1);
    snprintf(f->message, sizeof f->message, "activation '%s' applied twice in a row",
             ck_chk_act_name(a->act));
    snprintf(f->reason, sizeof f->reason, "%s (docs/derivations.md §7)", why);
    ck_sbuf s;
    ck_sbuf_init(&s, f->fix, sizeof f->fix);
    if (b->layer != a->layer && c->L[b->layer].type == CK_LAYER_ACTIVATION) {
        ck_sbuf_printf(&s, "remove layer %d (", b->layer);
        ck_chk_render_layer(&s, &c->L[b->layer]);
        ck_sbuf_printf(&s, ")");
    } else {
        ck_sbuf_printf(&s, "remove one of layers %d and %d", a->layer, b->layer);
    }
}

/* CK008: bias before BN, directly or through layers that carry a per-channel constant through
 * unchanged: max(x + b) = max(x) + b, mean(x + b) = mean(x) + b ('same' pooling ignores the
 * padding), Flatten. Zero padding does not (its zeros get no bias). */
static void rule_bias_bn(chk *c, int i) {
    const node *w = &c->nd[i];
    const ck_layer_desc *d = &c->L[w->layer];
    if (!d->use_bias || d->activation != CK_ACT_NONE)
        return;
    int k = i + 1;
    while (k < c->nn && !c->nd[k].is_act && (is_pool(&c->nd[k]) || ck_lk_flattens(c->nd[k].type)))
        ++k;
    if (k >= c->nn || !is_bn(&c->nd[k]))
        return;
    const int bl = c->nd[k].layer;
    ck_finding *f = ck_chk_emit(c, "CK008-bias-before-bn", CK_SEVERITY_INFO, (double)d->units, 2,
                                w->layer, bl, -1);
    snprintf(f->message, sizeof f->message, "%s bias before BatchNormalization is redundant",
             ck_layer_type_name(d->type));
    snprintf(f->reason, sizeof f->reason,
             "BN subtracts the per-channel batch mean, which removes any constant bias; its "
             "beta plays that role (Ioffe & Szegedy 2015, Sec. 3.2): %d wasted parameters",
             d->units);
    ck_sbuf s;
    ck_sbuf_init(&s, f->fix, sizeof f->fix);
    ck_layer_desc seq[K_MAX_WINDOW];
    int ns = 0;
    for (int l = w->layer; l <= bl && ns < K_MAX_WINDOW; ++l)
        seq[ns++] = c->L[l];
    seq[0].use_bias = 0;
    ck_chk_render_seq(&s, seq, ns);
    ck_sbuf_printf(&s, " (layers %d-%d)", w->layer, bl);
}

/* CK009: BN after the softmax, or as the model output. */
static void rule_bn_output(chk *c, int i, int softmax_layer) {
    const int bl = c->nd[i].layer;
    const int last = bl == c->count - 1;
    if (softmax_layer < 0 && !last)
        return;
    ck_finding *f =
        ck_chk_emit(c, "CK009-bn-after-output", CK_SEVERITY_ERROR, 0.0, softmax_layer >= 0 ? 2 : 1,
                    softmax_layer >= 0 ? softmax_layer : bl, bl, -1);
    if (softmax_layer >= 0) {
        snprintf(f->message, sizeof f->message, "BatchNormalization after the softmax (layer %d)",
                 softmax_layer);
        snprintf(f->reason, sizeof f->reason,
                 "BN shifts and rescales the class probabilities: the outputs no longer sum to "
                 "1 and can be negative (mean 0 per class in training; docs/derivations.md §7)");
    } else {
        snprintf(f->message, sizeof f->message, "BatchNormalization is the model output");
        snprintf(f->reason, sizeof f->reason,
                 "the output is normalized to mean 0 / variance 1 per unit over each batch "
                 "(then beta/gamma), so predictions depend on the batch in training "
                 "(docs/derivations.md §7)");
    }
    ck_sbuf s;
    ck_sbuf_init(&s, f->fix, sizeof f->fix);
    ck_sbuf_printf(&s, "remove layer %d (BatchNormalization)", bl);
}

CK_API const char *ck_severity_name(int severity) {
    switch (severity) {
    case CK_SEVERITY_INFO:
        return "info";
    case CK_SEVERITY_WARNING:
        return "warning";
    case CK_SEVERITY_ERROR:
        return "error";
    default:
        return NULL;
    }
}

/* A checker over the nodes of layers first..last (one chain: the algebra's lowering, with each
 * node's layer index in the whole list; c->L is the whole list), nothing to write to; 0, or -1 out
 * of memory. Close it with chk_close. */
static int chk_open(chk *c, const ck_layer_desc *layers, int count, int first, int last) {
    memset(c, 0, sizeof *c);
    const int n = last - first + 1;
    node *nd = (node *)ck_host_alloc(NULL, sizeof *nd * 2 * (size_t)n);
    ck_alg_op *ops = (ck_alg_op *)ck_host_alloc(NULL, sizeof *ops * 2 * (size_t)n);
    c->anc = (unsigned char *)ck_host_alloc(NULL, (size_t)count);
    if (!nd || !ops || !c->anc) {
        ck_host_free(NULL, nd);
        ck_host_free(NULL, ops);
        ck_host_free(NULL, c->anc);
        return -1;
    }
    const int nops = ck_alg_expand(layers + first, n, 0, ops);
    /* a dropout of rate 0 is the identity: the rules read through it as if it were not there */
    int kept = 0;
    for (int i = 0; i < nops; ++i) {
        nd[kept] = node_of(&ops[i], first + ops[i].layer);
        if (!is_drop(&nd[kept]) || layers[nd[kept].layer].rate > 0.0f)
            ++kept;
    }
    ck_host_free(NULL, ops);
    c->L = layers;
    c->count = count;
    c->nd = nd;
    c->nn = kept;
    return 0;
}

static void chk_close(chk *c) {
    ck_host_free(NULL, (void *)c->nd);
    ck_host_free(NULL, c->anc);
}

int ck_check_dropout_reach(const ck_layer_desc *layers, int count, int dl, ck_drop_reach *out,
                           int cap) {
    int n = 0, first = 0;
    if (dl < 0 || dl >= count || cap < 1)
        return 0;
    while (ck_chk_chain_end(layers, count, first) < dl)
        first = ck_chk_chain_end(layers, count, first) + 1;
    chk c;
    if (chk_open(&c, layers, count, first, ck_chk_chain_end(layers, count, first)))
        return 0;
    long budget = 4000000;
    c.budget = &budget;
    const node *nd = c.nd;
    for (int i = 0; i < c.nn; ++i)
        if (nd[i].layer == dl && is_drop(&nd[i]) && drop_rate(&c, &nd[i]) > 0.0f) {
            bn_path found[8]; /* the BNs CK001/CK002 name */
            int graph;
            const int nf = dropout_bns(&c, i, found, 8, &graph);
            for (int f = 0; f < nf && n < cap; ++f, ++n)
                out[n] =
                    (ck_drop_reach){found[f].bn, found[f].kind, found[f].weights, found[f].shifted};
            break;
        }
    chk_close(&c);
    return n;
}

/* CK014: the shape inference of ck_model_build, run by ck_model_build itself on a CPU model whose
 * context may allocate the node table and nothing more: build checks every shape before it
 * allocates the model's buffers, so a model whose shapes are right fails with ALLOC_FAILED (no
 * finding) and one whose shapes are wrong with build's own error. */
CK_API ck_status ck_model_check_shapes(const ck_layer_desc *layers, int count, int h, int w, int c,
                                       ck_finding *out, int *n_found) {
    if (!layers || !out || !n_found)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "%s: is NULL",
                       !layers ? "layers"
                       : !out  ? "out"
                               : "n_found");
    if (count < 1)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "count: must be >= 1, got %d", count);
    if (h < 0 || w < 0 || c < 0 || (h == 0) != (w == 0) || (h == 0) != (c == 0))
        return ck_fail(NULL, CK_STATUS_BAD_PARAM,
                       "h, w, c: %dx%dx%d is neither a shape (all >= 1) nor 0x0x0 (the first "
                       "layer's input_shape)",
                       h, w, c);
    if (h == 0 && layers[0].input_h < 1)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM,
                       "h, w, c: are 0 and the first layer has no input_shape");
    ck_context *ctx = NULL;
    ck_model *m = NULL;
    ck_status st = ck_context_create(&ctx, CK_DEVICE_CPU, 0, 1);
    if (st == CK_STATUS_SUCCESS)
        st = ck_model_create(ctx, &m);
    for (int i = 0; st == CK_STATUS_SUCCESS && i < count; ++i)
        st = ck_model_add(m, &layers[i]);
    if (st == CK_STATUS_SUCCESS)
        st = ck_model_set_planning(m, 0);
    if (st == CK_STATUS_SUCCESS)
        st = ck_context_set_host_alloc_limit(ctx, ck_context_host_alloc_bytes(ctx) +
                                                      sizeof(ck_node) * 2 * (size_t)count);
    int building = 0;
    if (st == CK_STATUS_SUCCESS) {
        building = 1;
        st = ck_model_build(m, h, w, c, 1);
    }
    *n_found = 0;
    if (st == CK_STATUS_ALLOC_FAILED && building) { /* past the shape checks */
        st = CK_STATUS_SUCCESS;
    } else if (st != CK_STATUS_SUCCESS && st != CK_STATUS_ALLOC_FAILED && m) {
        const char *msg = ck_context_last_error(ctx);
        int layer = count - 1;
        if (sscanf(msg, "layer %d", &layer) != 1 || layer < 0 || layer >= count)
            layer = count - 1;
        memset(out, 0, sizeof *out);
        snprintf(out->code, sizeof out->code, "CK014-shape-error");
        out->severity = CK_SEVERITY_ERROR;
        out->nlayers = 1;
        out->layers[0] = layer;
        out->layers[1] = out->layers[2] = out->layers[3] = -1;
        out->value = (double)st;
        snprintf(out->message, sizeof out->message, "the model does not build: %s", msg);
        snprintf(out->reason, sizeof out->reason,
                 "the shape inference of ck_model_build (the one summary and train run) rejects "
                 "it with status %s",
                 ck_status_string(st));
        snprintf(out->fix, sizeof out->fix,
                 "change layer %d (or the input shape) so that every window fits its input and "
                 "the model ends in a vector of class scores",
                 layer);
        *n_found = 1;
        st = CK_STATUS_SUCCESS;
    }
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return st;
}

/* The rules over one chain of nodes (c->nd); findings go on after c->total. */
static void check_chain(chk *c) {
    const node *nd = c->nd;
    const int nn = c->nn;
    int seen_flat = -1, softmax_layer = -1;
    for (int i = 0; i < nn; ++i) {
        const node *n = &nd[i];
        if (is_drop(n) && drop_rate(c, n) > 0.0f) {
            /* the weight layers on the dropout's own paths, not by index: in a layer graph a
             * later index may be another branch */
            int up;
            const int after = ck_chk_weight_reach(c, n->layer, &up);
            const int last_weight = after ? c->count : up;
            rule_dropout_misc(c, i, seen_flat, last_weight);
            rule_dropout_bn(c, i);
            rule_dropout_pool(c, i);
            rule_dropout_act(c, i, last_weight);
        } else if (is_weight(n)) {
            rule_bias_bn(c, i);
        } else if (is_bn(n)) {
            rule_bn_output(c, i, softmax_layer);
        }
        if (n->is_act && i + 1 < nn && nd[i + 1].is_act)
            rule_double_act(c, i);
        if (!n->is_act && (n->type == CK_LAYER_DENSE || ck_lk_flattens(n->type)))
            seen_flat = n->layer;
        if (is_weight(n))
            softmax_layer = -1; /* a weight layer after a softmax reads it as features */
        if (is_softmax(n))
            softmax_layer = n->layer;
    }
}

ck_status ck_chk_args(const ck_layer_desc *layers, int count, const ck_finding *out, int cap,
                      const int *n_found) {
    if (!n_found)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "n_found: is NULL");
    if (count < 0 || (count > 0 && !layers))
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "layers: %s (count %d)",
                       count < 0 ? "a negative count" : "is NULL", count);
    if (cap < 0 || (cap > 0 && !out))
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "out: %s (cap %d)",
                       cap < 0 ? "a negative cap" : "is NULL", cap);
    for (int i = 0; i < count; ++i) {
        const ck_layer_desc *d = &layers[i];
        if (!ck_layer_kind_of(d->type))
            return ck_fail(NULL, CK_STATUS_BAD_PARAM, "layers[%d]: unknown type %d", i,
                           (int)d->type);
        /* the graph walks index layers by their inputs: ck_model_build's rule, checked here */
        if (d->num_inputs < 0 || d->num_inputs > CK_MAX_LAYER_INPUTS)
            return ck_fail(NULL, CK_STATUS_BAD_PARAM,
                           "layers[%d].num_inputs: %d is not in [0, %d] (0: the previous layer)", i,
                           d->num_inputs, CK_MAX_LAYER_INPUTS);
        for (int j = 0; j < d->num_inputs; ++j)
            if (d->inputs[j] < CK_LAYER_INPUT_MODEL || d->inputs[j] >= i)
                return ck_fail(NULL, CK_STATUS_BAD_PARAM,
                               "layers[%d].inputs[%d]: %d is not an earlier layer or the model "
                               "input (%d)",
                               i, j, d->inputs[j], CK_LAYER_INPUT_MODEL);
    }
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_check(const ck_layer_desc *layers, int count, ck_finding *out, int cap,
                                int *n_found) {
    CK_TRY(ck_chk_args(layers, count, out, cap, n_found));
    *n_found = 0;
    if (count == 0)
        return CK_STATUS_SUCCESS;
    int total = 0;
    long budget = 4000000; /* layer visits of the graph walks: bounded work on any graph */
    for (int first = 0; first < count;) {
        const int last = ck_chk_chain_end(layers, count, first);
        chk c;
        if (chk_open(&c, layers, count, first, last))
            return ck_fail(NULL, CK_STATUS_ALLOC_FAILED, "layers: out of memory checking them");
        c.out = out;
        c.cap = cap;
        c.total = total;
        c.budget = &budget;
        check_chain(&c);
        total = c.total;
        chk_close(&c);
        first = last + 1;
    }
    chk g = {.L = layers, .count = count, .out = out, .cap = cap, .total = total};
    g.anc = (unsigned char *)ck_host_alloc(NULL, (size_t)count);
    if (!g.anc)
        return ck_fail(NULL, CK_STATUS_ALLOC_FAILED, "layers: out of memory checking them");
    ck_chk_graph_rules(&g);
    ck_host_free(NULL, g.anc);
    *n_found = g.total;
    return CK_STATUS_SUCCESS;
}
