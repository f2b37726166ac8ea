/* Model check: static diagnostics on the order of layers (see include/cnnkit/check.h).
 *
 * The layer list is expanded into nodes: every layer is a node, and a Conv2D/Dense with an inline
 * activation is followed by an activation node that belongs to the same layer index. The rules
 * then look at neighbouring nodes. Numbers and sources: the project's research notes
 * (Li et al. 2019, arXiv:1801.05134, Eq. 8 and 14; derivations G.17-G.19). */
#include "internal.h"

#include "cnnkit/check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K_PI 3.14159265358979323846
#define K_MAX_WINDOW 24

typedef struct node {
    int layer; /* index into the layer list */
    ck_layer_type type;
    int is_act;        /* an Activation layer or an inline activation */
    ck_activation act; /* when is_act */
} node;

typedef struct chk {
    const ck_layer_desc *L;
    int count;
    const node *nd;
    int nn;
    ck_finding *out;
    int cap;
    int total;
    ck_finding scratch; /* findings past cap are built here and dropped */
} chk;

/* ---- small string builder (truncates, always NUL-terminated) ------------------------------ */
typedef struct sbuf {
    char *p;
    size_t len, pos;
} sbuf;

static void sb_init(sbuf *s, char *p, size_t len) {
    s->p = p;
    s->len = len;
    s->pos = 0;
    if (len)
        p[0] = '\0';
}

static void sb_printf(sbuf *s, const char *fmt, ...) CK_PRINTF(2, 3);
static void sb_printf(sbuf *s, const char *fmt, ...) {
    if (s->pos + 1 >= s->len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s->p + s->pos, s->len - s->pos, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    s->pos += (size_t)n;
    if (s->pos >= s->len) { /* truncated: mark it */
        s->pos = s->len - 1;
        if (s->len > 4)
            memcpy(s->p + s->len - 4, "...", 4);
    }
}

/* ---- layer rendering in Keras syntax ---------------------------------------------------- */
static const char *act_name(ck_activation a) {
    const char *n = ck_activation_name(a);
    return n ? n : "?";
}

static void render_layer(sbuf *s, const ck_layer_desc *d) {
    const char *name = ck_layer_type_name(d->type);
    switch (d->type) {
    case CK_LAYER_CONV2D:
    case CK_LAYER_DENSE:
        if (d->type == CK_LAYER_CONV2D)
            sb_printf(s, "Conv2D(%d,(%d,%d)", d->units, d->kernel_h, d->kernel_w);
        else
            sb_printf(s, "Dense(%d", d->units);
        if (d->padding == CK_PADDING_SAME)
            sb_printf(s, ",padding='same'");
        if (d->activation != CK_ACT_NONE)
            sb_printf(s, ",activation='%s'", act_name(d->activation));
        if (!d->use_bias)
            sb_printf(s, ",use_bias=False");
        sb_printf(s, ")");
        break;
    case CK_LAYER_MAXPOOL2D:
    case CK_LAYER_AVGPOOL2D:
        sb_printf(s, "%s((%d,%d))", name, d->kernel_h, d->kernel_w);
        break;
    case CK_LAYER_ACTIVATION:
        sb_printf(s, "Activation('%s')", act_name(d->activation));
        break;
    case CK_LAYER_DROPOUT:
    case CK_LAYER_SPATIAL_DROPOUT2D:
        sb_printf(s, "%s(%g)", name, (double)d->rate);
        break;
    default:
        sb_printf(s, "%s()", name ? name : "?");
        break;
    }
}

static void render_seq(sbuf *s, const ck_layer_desc *seq, int n) {
    for (int i = 0; i < n; ++i) {
        if (i)
            sb_printf(s, " -> ");
        render_layer(s, &seq[i]);
    }
}

/* Writes "A -> B -> C (layers lo-hi)" for layers [lo, hi] with layer `from` moved to just after
 * layer `after` (from < after). */
static void fix_move(sbuf *s, const chk *c, int lo, int hi, int from, int after) {
    ck_layer_desc seq[K_MAX_WINDOW];
    int n = 0;
    if (hi - lo + 1 > K_MAX_WINDOW)
        hi = lo + K_MAX_WINDOW - 2;
    for (int i = lo; i <= hi; ++i) {
        if (i == from)
            continue;
        seq[n++] = c->L[i];
        if (i == after)
            seq[n++] = c->L[from];
    }
    render_seq(s, seq, n);
    sb_printf(s, " (layers %d-%d)", lo, hi);
}

/* Moves layer `from` to just before layer `before` (before < from). */
static void fix_move_before(sbuf *s, const chk *c, int lo, int hi, int from, int before) {
    ck_layer_desc seq[K_MAX_WINDOW];
    int n = 0;
    if (hi - lo + 1 > K_MAX_WINDOW)
        hi = lo + K_MAX_WINDOW - 1;
    for (int i = lo; i <= hi; ++i) {
        if (i == before)
            seq[n++] = c->L[from];
        if (i != from)
            seq[n++] = c->L[i];
    }
    render_seq(s, seq, n);
    sb_printf(s, " (layers %d-%d)", lo, hi);
}

/* ---- findings ------------------------------------------------------------------------------ */
static ck_finding *emit(chk *c, const char *code, ck_severity sev, double value, int nl, int l0,
                        int l1, int l2) {
    ck_finding *f = c->total < c->cap ? &c->out[c->total] : &c->scratch;
    c->total++;
    memset(f, 0, sizeof *f);
    snprintf(f->code, sizeof f->code, "%s", code);
    f->severity = (int)sev;
    f->value = value;
    f->nlayers = nl;
    f->layers[0] = l0;
    f->layers[1] = l1;
    f->layers[2] = l2;
    for (int i = nl; i < 4; ++i)
        f->layers[i] = -1;
    return f;
}

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
/* Layers that keep every channel separate (the variance shift passes through them). */
static int keeps_channels(const node *n) {
    if (n->is_act)
        return n->act != CK_ACT_SOFTMAX;
    return is_pool(n) || n->type == CK_LAYER_FLATTEN || is_drop(n);
}

static float drop_rate(const chk *c, const node *n) {
    return c->L[n->layer].rate;
}

/* ---- numbers ------------------------------------------------------------------------------- */
/* Li et al. 2019 Eq. 8: Var_test / Var_train for dropout (retain p) fed straight into BN. */
static double li_delta(double p, double mean, double var) {
    return var / ((mean * mean + var) / p - mean * mean);
}

/* Moments of the dropout input: ReLU(N(0,1)) when a ReLU comes right before the dropout (through
 * pooling or other dropouts), else zero mean. Writes which one into `what`. */
static double variance_ratio(const chk *c, int di, double p, char *what, size_t len) {
    int j = di - 1;
    while (j >= 0 && (is_pool(&c->nd[j]) || is_drop(&c->nd[j])))
        --j;
    if (j >= 0 && c->nd[j].is_act && c->nd[j].act == CK_ACT_RELU) {
        double m = 1.0 / sqrt(2.0 * K_PI), v = 0.5 - 1.0 / (2.0 * K_PI);
        snprintf(what, len,
                 "the dropout input is a ReLU output, moments of ReLU(N(0,1)): c = %.4f, "
                 "v = %.4f, Delta = v/((c^2+v)/p - c^2)",
                 m, v);
        return li_delta(p, m, v);
    }
    snprintf(what, len, "zero-mean dropout input assumed (no ReLU before it): Delta = p");
    return p;
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

/* ---- rules --------------------------------------------------------------------------------- */

/* Where a dropout moved after BN at layer `bn` goes: after the BN, then after any following
 * non-softmax Activation and pooling layers. */
static int insertion_after(const chk *c, int bn) {
    int t = bn;
    while (t + 1 < c->count) {
        const ck_layer_desc *d = &c->L[t + 1];
        if ((d->type == CK_LAYER_ACTIVATION && d->activation != CK_ACT_SOFTMAX) ||
            d->type == CK_LAYER_MAXPOOL2D || d->type == CK_LAYER_AVGPOOL2D)
            ++t;
        else
            break;
    }
    return t;
}

/* CK001 / CK002: dropout feeding BN. */
static void rule_dropout_bn(chk *c, int i) {
    const node *d = &c->nd[i];
    const double q = drop_rate(c, d), p = 1.0 - q;
    int weights = 0, k = i + 1;
    for (; k < c->nn; ++k) {
        const node *n = &c->nd[k];
        if (is_bn(n) || is_drop(n) || is_softmax(n))
            break;
        if (is_weight(n))
            ++weights;
        else if (!keeps_channels(n) && weights == 0)
            break; /* GlobalAveragePooling2D etc. before any weight layer: stop */
    }
    if (k >= c->nn || !is_bn(&c->nd[k]))
        return;
    const int dl = d->layer, bl = c->nd[k].layer;
    char what[200];
    const double delta = variance_ratio(c, i, p, what, sizeof what);
    const int after = insertion_after(c, bl);
    const int lo = dl > 0 ? dl - 1 : 0;
    const char *dname = ck_layer_type_name(c->L[dl].type);
    ck_finding *f;
    sbuf s;
    if (weights == 0) {
        f = emit(c, "CK001-dropout-before-bn", CK_SEVERITY_WARNING, delta, 2, dl, bl, -1);
        snprintf(f->message, sizeof f->message,
                 "%s(%g) feeds BatchNormalization (layer %d): variance shift between training "
                 "and inference",
                 dname, q, bl);
        snprintf(f->reason, sizeof f->reason,
                 "BN learns the variance of dropout-scaled activations in training but sees "
                 "unscaled ones at inference: Var_inference/Var_train = %.3f at rate %g (Li et "
                 "al. 2019, arXiv:1801.05134, Eq. 8; %s); dropped positions also become one "
                 "batch-dependent constant, not 0",
                 delta, q, what);
        sb_init(&s, f->fix, sizeof f->fix);
        sb_printf(&s, "move the dropout after the BatchNormalization (and its activation): ");
    } else {
        f = emit(c, "CK002-dropout-weight-bn", CK_SEVERITY_INFO, delta, 2, dl, bl, -1);
        snprintf(f->message, sizeof f->message,
                 "%s(%g) reaches BatchNormalization (layer %d) through %d weight layer%s: small "
                 "variance shift",
                 dname, q, bl, weights, weights > 1 ? "s" : "");
        snprintf(f->reason, sizeof f->reason,
                 "with a weight layer of width d between, the ratio lies between the direct "
                 "%.3f and 1 and tends to 1 as d*cos^2(theta) grows (Li et al. 2019 Eq. 14; "
                 "measured d*cos^2 = 2.6-53): smaller but not zero (%s)",
                 delta, what);
        sb_init(&s, f->fix, sizeof f->fix);
        if (after + 1 < c->count && (c->L[after + 1].type == CK_LAYER_DROPOUT ||
                                     c->L[after + 1].type == CK_LAYER_SPATIAL_DROPOUT2D)) {
            sb_printf(&s, "optional: remove layer %d (layer %d already drops after the BN)", dl,
                      after + 1);
            return;
        }
        sb_printf(&s, "optional (Li et al. fix (i), dropout after the last BN): ");
    }
    fix_move(&s, c, lo, after, dl, after);
}

/* CK003 / CK004: dropout right before pooling. */
static void rule_dropout_pool(chk *c, int i) {
    if (i + 1 >= c->nn || !is_pool(&c->nd[i + 1]))
        return;
    const node *d = &c->nd[i];
    const int dl = d->layer, pl = c->nd[i + 1].layer;
    const ck_layer_desc *pd = &c->L[pl];
    const double q = drop_rate(c, d);
    ck_finding *f;
    sbuf s;
    if (d->type == CK_LAYER_DROPOUT && pd->type == CK_LAYER_MAXPOOL2D) {
        const int n = pd->kernel_h * pd->kernel_w;
        const double pz = pow(q, n), infl = (1.0 - pz) / (1.0 - q);
        f = emit(c, "CK003-dropout-before-maxpool", CK_SEVERITY_WARNING, infl, 2, dl, pl, -1);
        snprintf(f->message, sizeof f->message,
                 "Dropout(%g) right before MaxPooling2D((%d,%d)): pooled outputs are almost never "
                 "dropped",
                 q, pd->kernel_h, pd->kernel_w);
        snprintf(f->reason, sizeof f->reason,
                 "a pooled output is zeroed only when all %d inputs are: probability "
                 "rate^%d = %.4g instead of %g; the max of the survivors scaled by 1/(1-rate) "
                 "inflates the training mean up to (1-rate^%d)/(1-rate) = %.3f times the "
                 "inference output",
                 n, n, pz, q, n, infl);
        sb_init(&s, f->fix, sizeof f->fix);
        sb_printf(&s, "pool first: ");
        ck_layer_desc seq[2] = {*pd, c->L[dl]};
        render_seq(&s, seq, 2);
        sb_printf(&s, "; or drop whole channels: ");
        seq[0] = c->L[dl];
        seq[0].type = CK_LAYER_SPATIAL_DROPOUT2D;
        seq[1] = *pd;
        render_seq(&s, seq, 2);
        sb_printf(&s, " (layers %d-%d)", dl, pl);
    } else if (d->type == CK_LAYER_SPATIAL_DROPOUT2D) {
        const int sh = pd->stride_h > 0 ? pd->stride_h : pd->kernel_h;
        const int sw = pd->stride_w > 0 ? pd->stride_w : pd->kernel_w;
        const double fewer = (double)sh * sw;
        f = emit(c, "CK004-spatialdrop-before-pool", CK_SEVERITY_INFO, fewer, 2, dl, pl, -1);
        snprintf(f->message, sizeof f->message,
                 "SpatialDropout2D(%g) before %s: the same result after the pool, cheaper", q,
                 ck_layer_type_name(pd->type));
        snprintf(f->reason, sizeof f->reason,
                 "one scale s in {0, 1/(1-rate)} per channel commutes with pooling: max(s*x) = "
                 "s*max(x) bit-exactly, average equal up to float rounding; after the pool the "
                 "mask touches %g times fewer elements",
                 fewer);
        sb_init(&s, f->fix, sizeof f->fix);
        ck_layer_desc seq[2] = {*pd, c->L[dl]};
        render_seq(&s, seq, 2);
        sb_printf(&s, " (layers %d-%d)", dl, pl);
    }
}

/* CK005 / CK006 / CK007: dropout next to an activation. */
static void rule_dropout_act(chk *c, int i) {
    const node *d = &c->nd[i];
    const int dl = d->layer;
    const double q = drop_rate(c, d), p = 1.0 - q;
    ck_finding *f;
    sbuf s;
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
            f = emit(c, "CK005-dropout-relu-order", CK_SEVERITY_INFO, relu ? 0.0 : 1.0 / p, 2, l0,
                     l1, -1);
            snprintf(f->message, sizeof f->message, "%s next to %s: the order does not matter%s",
                     ck_layer_type_name(d->type), relu ? "ReLU" : "LeakyReLU",
                     relu ? " (bit-exact)" : " (up to rounding)");
            if (relu)
                snprintf(f->reason, sizeof f->reason,
                         "relu(m*x) = m*relu(x) for any mask value m >= 0, and float rounding "
                         "of a product does not depend on the sign test: maximum difference 0");
            else
                snprintf(f->reason, sizeof f->reason,
                         "leaky_relu(m*x) = m*leaky_relu(x) mathematically, but the negative "
                         "branch rounds alpha*x*(1/p) in another order: last-bit differences "
                         "unless 1/p = %.4g is a power of two",
                         1.0 / p);
            sb_init(&s, f->fix, sizeof f->fix);
            sb_printf(&s, "none needed; either order is fine");
        } else if (side > 0 && a->act == CK_ACT_SIGMOID) {
            f = emit(c, "CK006-dropout-before-sigmoid", CK_SEVERITY_WARNING, 0.5, 2, dl, al, -1);
            snprintf(f->message, sizeof f->message,
                     "%s(%g) right before sigmoid: dropped units become 0.5, not 0",
                     ck_layer_type_name(d->type), q);
            snprintf(f->reason, sizeof f->reason,
                     "a dropped pre-activation is 0 and sigmoid(0) = 0.5, so %g of the units "
                     "carry 0.5 in training and the kept ones sigmoid(x/%g), which is not the "
                     "inference output rescaled",
                     q, p);
            sb_init(&s, f->fix, sizeof f->fix);
            fix_move(&s, c, dl, al, dl, al);
        } else if (side > 0 && (a->act == CK_ACT_TANH || a->act == CK_ACT_ELU ||
                                a->act == CK_ACT_GELU || a->act == CK_ACT_SWISH)) {
            const double x = a->act == CK_ACT_ELU ? -1.0 : 1.0;
            const double alpha_e = a->act == CK_ACT_ELU ? 1.0 : alpha;
            const double ratio =
                p * ck_act_eval_ref(a->act, x / p, alpha_e) / ck_act_eval_ref(a->act, x, alpha_e);
            f = emit(c, "CK007-dropout-before-nonlinear", CK_SEVERITY_WARNING, ratio, 2, dl, al,
                     -1);
            snprintf(f->message, sizeof f->message,
                     "%s(%g) right before %s: the 1/(1-rate) scaling is distorted",
                     ck_layer_type_name(d->type), q, act_name(a->act));
            snprintf(f->reason, sizeof f->reason,
                     "%s is not positively homogeneous, so %s(x/p) != %s(x)/p: at x = %g the "
                     "training-time expected output p*f(x/p) is %.3f times the inference output "
                     "f(x) (rate %g)",
                     act_name(a->act), act_name(a->act), act_name(a->act), x, ratio, q);
            sb_init(&s, f->fix, sizeof f->fix);
            fix_move(&s, c, dl, al, dl, al);
        }
    }
}

/* CK010 / CK011 / CK012 on a dropout node; returns nonzero when CK010 fired. */
static int rule_dropout_misc(chk *c, int i, int seen_flat, int seen_softmax, int last_weight) {
    const node *d = &c->nd[i];
    const int dl = d->layer;
    const double q = drop_rate(c, d);
    ck_finding *f;
    sbuf s;
    int fired = 0;
    if (last_weight < dl) { /* no weight layer after the dropout */
        fired = 1;
        f = emit(c, "CK010-dropout-on-output", CK_SEVERITY_ERROR, q, 1, dl, -1, -1);
        if (seen_softmax) {
            snprintf(f->message, sizeof f->message, "%s(%g) after the output softmax",
                     ck_layer_type_name(d->type), q);
            snprintf(f->reason, sizeof f->reason,
                     "in training %g of the class probabilities are set to 0 (log 0 in the "
                     "loss) and the rest scaled by %.4g, so outputs no longer sum to 1",
                     q, 1.0 / (1.0 - q));
        } else {
            snprintf(f->message, sizeof f->message,
                     "%s(%g) after the last weight layer: dropout on the logits",
                     ck_layer_type_name(d->type), q);
            snprintf(f->reason, sizeof f->reason,
                     "%g of the logits are set to 0 (softmax still gives them exp(0) of the "
                     "mass) and the rest are scaled by %.4g, i.e. a softmax temperature of %g: "
                     "the prediction itself is perturbed",
                     q, 1.0 / (1.0 - q), 1.0 - q);
        }
        sb_init(&s, f->fix, sizeof f->fix);
        if (last_weight >= 0) {
            sb_printf(&s, "drop before the last weight layer: ");
            fix_move_before(&s, c, last_weight > 0 ? last_weight - 1 : 0, dl, dl, last_weight);
        } else {
            sb_printf(&s, "remove layer %d", dl);
        }
    }
    if (d->type == CK_LAYER_SPATIAL_DROPOUT2D && seen_flat >= 0) {
        f = emit(c, "CK011-spatial-dropout-flat", CK_SEVERITY_ERROR, q, 2, seen_flat, dl, -1);
        snprintf(f->message, sizeof f->message,
                 "SpatialDropout2D(%g) on a non-spatial tensor (after %s, layer %d)", q,
                 ck_layer_type_name(c->L[seen_flat].type), seen_flat);
        snprintf(f->reason, sizeof f->reason,
                 "SpatialDropout2D drops whole feature maps of an N x H x W x C tensor; after "
                 "%s there are no feature maps (Keras requires ndim = 4)",
                 ck_layer_type_name(c->L[seen_flat].type));
        sb_init(&s, f->fix, sizeof f->fix);
        ck_layer_desc rep = c->L[dl];
        rep.type = CK_LAYER_DROPOUT;
        render_layer(&s, &rep);
        sb_printf(&s, " (layer %d)", dl);
    }
    if (i + 1 < c->nn && is_drop(&c->nd[i + 1]) && drop_rate(c, &c->nd[i + 1]) > 0.0f) {
        const int el = c->nd[i + 1].layer;
        const double q2 = drop_rate(c, &c->nd[i + 1]);
        const double comb = 1.0 - (1.0 - q) * (1.0 - q2);
        f = emit(c, "CK012-double-dropout", CK_SEVERITY_WARNING, comb, 2, dl, el, -1);
        snprintf(f->message, sizeof f->message, "two dropouts in a row (rates %g and %g)", q, q2);
        snprintf(f->reason, sizeof f->reason,
                 "two independent masks act as one with rate 1-(1-%g)(1-%g) = %.4g; the second "
                 "layer only hides the real rate and costs a pass",
                 q, q2, comb);
        sb_init(&s, f->fix, sizeof f->fix);
        ck_layer_desc one = c->L[dl];
        if (c->L[el].type == one.type) {
            one.rate = (float)comb;
            sb_printf(&s, "one layer: ");
        } else {
            sb_printf(&s, "keep one: ");
        }
        render_layer(&s, &one);
        sb_printf(&s, " (layers %d-%d)", dl, el);
    }
    return fired;
}

/* CK013: the same activation twice in a row (node i and i+1 both activations). */
static void rule_double_act(chk *c, int i) {
    const node *a = &c->nd[i], *b = &c->nd[i + 1];
    if (a->act != b->act || a->act == CK_ACT_NONE)
        return;
    const double alpha = c->L[a->layer].alpha;
    double v;
    char why[200];
    switch (a->act) {
    case CK_ACT_RELU:
        v = 0.0;
        snprintf(why, sizeof why, "ReLU is idempotent: the second one changes nothing (effect 0)");
        break;
    case CK_ACT_LEAKY_RELU:
        v = alpha * alpha;
        snprintf(why, sizeof why, "the negative slope becomes alpha^2 = %.4g instead of %.4g", v,
                 alpha);
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
    default:
        v = ck_act_eval_ref(a->act, ck_act_eval_ref(a->act, 1.0, alpha), alpha);
        snprintf(why, sizeof why, "f(f(x)) != f(x): f(f(1)) = %.4g vs f(1) = %.4g", v,
                 ck_act_eval_ref(a->act, 1.0, alpha));
        break;
    }
    ck_finding *f =
        emit(c, "CK013-double-activation", CK_SEVERITY_WARNING, v, 2, a->layer, b->layer, -1);
    snprintf(f->message, sizeof f->message, "activation '%s' applied twice in a row",
             act_name(a->act));
    snprintf(f->reason, sizeof f->reason, "%s", why);
    sbuf s;
    sb_init(&s, f->fix, sizeof f->fix);
    if (b->layer != a->layer && c->L[b->layer].type == CK_LAYER_ACTIVATION) {
        sb_printf(&s, "remove layer %d: ", b->layer);
        render_layer(&s, &c->L[a->layer]);
    } else {
        sb_printf(&s, "remove one of layers %d and %d", a->layer, b->layer);
    }
}

/* CK008: bias before BN. */
static void rule_bias_bn(chk *c, int i) {
    const node *w = &c->nd[i];
    const ck_layer_desc *d = &c->L[w->layer];
    if (!d->use_bias || d->activation != CK_ACT_NONE || i + 1 >= c->nn || !is_bn(&c->nd[i + 1]))
        return;
    const int bl = c->nd[i + 1].layer;
    ck_finding *f =
        emit(c, "CK008-bias-before-bn", CK_SEVERITY_INFO, (double)d->units, 2, w->layer, bl, -1);
    snprintf(f->message, sizeof f->message, "%s bias before BatchNormalization is redundant",
             ck_layer_type_name(d->type));
    snprintf(f->reason, sizeof f->reason,
             "BN subtracts the per-channel batch mean, which removes any constant bias; its "
             "beta plays that role (Ioffe & Szegedy 2015, Sec. 3.2): %d wasted parameters",
             d->units);
    sbuf s;
    sb_init(&s, f->fix, sizeof f->fix);
    ck_layer_desc seq[2] = {*d, c->L[bl]};
    seq[0].use_bias = 0;
    render_seq(&s, seq, 2);
    sb_printf(&s, " (layers %d-%d)", w->layer, bl);
}

/* CK009: BN after the softmax, or as the model output. */
static void rule_bn_output(chk *c, int i, int softmax_layer) {
    const int bl = c->nd[i].layer;
    const int last = bl == c->count - 1;
    if (softmax_layer < 0 && !last)
        return;
    ck_finding *f =
        emit(c, "CK009-bn-after-output", CK_SEVERITY_ERROR, 0.0, softmax_layer >= 0 ? 2 : 1,
             softmax_layer >= 0 ? softmax_layer : bl, bl, -1);
    if (softmax_layer >= 0) {
        snprintf(f->message, sizeof f->message, "BatchNormalization after the softmax (layer %d)",
                 softmax_layer);
        snprintf(f->reason, sizeof f->reason,
                 "BN shifts and rescales the class probabilities: the outputs no longer sum to "
                 "1 and can be negative (mean 0 per class in training)");
    } else {
        snprintf(f->message, sizeof f->message, "BatchNormalization is the model output");
        snprintf(f->reason, sizeof f->reason,
                 "the output is normalized to mean 0 / variance 1 per unit over each batch "
                 "(then beta/gamma), so predictions depend on the batch in training");
    }
    sbuf s;
    sb_init(&s, f->fix, sizeof f->fix);
    sb_printf(&s, "remove layer %d (BatchNormalization)", bl);
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

CK_API ck_status ck_model_check(const ck_layer_desc *layers, int count, ck_finding *out, int cap,
                                int *n_found) {
    if (!n_found || count < 0 || (count > 0 && !layers) || cap < 0 || (cap > 0 && !out))
        return CK_STATUS_BAD_PARAM;
    for (int i = 0; i < count; ++i)
        if ((int)layers[i].type < 0 || layers[i].type >= CK_LAYER_TYPE_COUNT)
            return CK_STATUS_BAD_PARAM;
    *n_found = 0;
    if (count == 0)
        return CK_STATUS_SUCCESS;
    node *nd = (node *)malloc(sizeof *nd * (size_t)count * 2);
    if (!nd)
        return CK_STATUS_ALLOC_FAILED;
    int nn = 0, last_weight = -1;
    for (int i = 0; i < count; ++i) {
        const ck_layer_desc *d = &layers[i];
        node n = {i, d->type, d->type == CK_LAYER_ACTIVATION, d->activation};
        if (!n.is_act)
            n.act = CK_ACT_NONE;
        nd[nn++] = n;
        if (d->type == CK_LAYER_CONV2D || d->type == CK_LAYER_DENSE) {
            last_weight = i;
            if (d->activation != CK_ACT_NONE) {
                node a = {i, CK_LAYER_ACTIVATION, 1, d->activation};
                nd[nn++] = a;
            }
        }
    }
    chk c;
    memset(&c, 0, sizeof c);
    c.L = layers;
    c.count = count;
    c.nd = nd;
    c.nn = nn;
    c.out = out;
    c.cap = cap;
    int seen_flat = -1, softmax_layer = -1;
    for (int i = 0; i < nn; ++i) {
        const node *n = &nd[i];
        if (is_drop(n) && drop_rate(&c, n) > 0.0f) {
            rule_dropout_misc(&c, i, seen_flat, softmax_layer >= 0, last_weight);
            rule_dropout_bn(&c, i);
            rule_dropout_pool(&c, i);
            rule_dropout_act(&c, i);
        } else if (is_weight(n)) {
            rule_bias_bn(&c, i);
        } else if (is_bn(n)) {
            rule_bn_output(&c, i, softmax_layer);
        }
        if (n->is_act && i + 1 < nn && nd[i + 1].is_act)
            rule_double_act(&c, i);
        if (!n->is_act && (n->type == CK_LAYER_FLATTEN || n->type == CK_LAYER_DENSE ||
                           n->type == CK_LAYER_GLOBALAVGPOOL2D))
            seen_flat = n->layer;
        if (is_softmax(n))
            softmax_layer = n->layer;
    }
    free(nd);
    *n_found = c.total;
    return CK_STATUS_SUCCESS;
}
