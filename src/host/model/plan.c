/* Execution planner: maps the lowered layer list of a model onto fewer passes.
 *
 * ck_model_build lowers every user layer to one node (a Conv2D/Dense with an inline activation to
 * two) and, with planning on (ck_model_set_planning; CPU and CUDA contexts), calls ck_model_plan
 * before any buffer is assigned. The planner only applies rewrites whose forward AND backward give
 * the same floats as the unplanned model, with the same dropout masks (masks are keyed by the user
 * layer, ck_model_layer_dropout_offset, so moving a dropout node does not change its mask).
 * "Same floats": equal values everywhere; the bits can differ only in the sign of a zero
 * gradient of a dropped unit (+0 vs -0, see below), which compares equal and vanishes in the
 * sums that follow (tests/test_equiv.c trains planned and unplanned models and finds identical
 * weight bits):
 *
 * The rules below are the planner's rows of the layer algebra (algebra.c: id, exactness level,
 * why); the planner asks ck_alg_swap which reorder applies and takes only those of level
 * CK_EXACT_VALUES or better. The derivations:
 *
 * Canonicalizations (reorders of adjacent nodes; shapes of the moved element-wise node follow):
 *  C1  BN, MaxPool, ReLU   -> BN, ReLU, MaxPool      (the ReLU then fuses into the BN kernel)
 *  C2  BN, Dropout|SpatialDropout, ReLU -> BN, ReLU, Dropout|SpatialDropout   (idem)
 *  C3  X, ReLU, MaxPool    -> X, MaxPool, ReLU       (X not a BN: the ReLU runs on the pooled,
 *                                                    k^2 times smaller tensor)
 *  C4  Pool, ReLU, Dropout|SpatialDropout -> Pool, Dropout|SpatialDropout, ReLU  (the dropout
 *                                                    then fuses into the pooling node)
 * Why exact:
 *  - ReLU and max-pooling: max_i relu(x_i) = relu(max_i x_i) (relu is monotone and returns one of
 *    its arguments or 0). Backward: if max x > 0 both orders route dy to the first position of
 *    the window holding the maximum (relu is the identity on the positive candidates, so the
 *    first-maximum scan sees the same ties); if max x <= 0 both give 0 everywhere. Not done for
 *    LeakyReLU/ELU/sigmoid/tanh: alpha*x or a saturating function can map two different inputs
 *    to one float, and then the first-maximum scan can pick another position (a backward
 *    difference), nor for average pooling (relu is not affine).
 *  - ReLU and a dropout scale m in {0, 1/(1-rate)}: relu(m x) = m relu(x) bit for bit (m >= 0,
 *    one rounding either way; m x > 0 iff x > 0 for m > 0). Backward: dy*m where x > 0, else 0,
 *    in both orders; for a dropped unit (m = 0) both give a zero, whose sign may differ (+0 vs
 *    -0 when dy < 0): values compare equal. Not done for other activations (LeakyReLU's
 *    negative branch rounds differently, sigmoid(0) = 0.5, tanh/ELU/GELU are not homogeneous).
 *  - A SpatialDropout is NOT moved across a pooling layer: forward max_i(s x_i) = s max_i x_i is
 *    exact, but s = 1/(1-rate) > 1 can round two different x_i to one value, so the max-pool
 *    backward could route the gradient to another position (and average pooling differs by
 *    rounding). The same pass count is reached by fusing it into the neighbouring kernel instead
 *    (F2 or F3), which keeps the user's order.
 *  - An inference-mode BN with gamma > 0 commutes with max-pooling, but a model trains with
 *    batch statistics (which do not commute with pooling), so the planner never moves a BN.
 *
 * Fusions (the ops of one node run in one kernel call, or one node with an in-place epilogue):
 *  F1  BN + ReLU            -> one node, bn.activation = RELU. With m->relu_in_bn_kernel the
 *                              node is one ck_batchnorm_* call (relu(pre) in the normalize pass;
 *                              backward recomputes pre and folds dReLU into dBN): the same
 *                              expressions as the two nodes, bit-exact. By default on the CPU the
 *                              BN kernel runs without the activation and the ReLU runs in place
 *                              on the node's output (backward: dReLU in place on dy): the
 *                              unplanned arithmetic, without the ReLU node's buffer. Reason,
 *                              measured with perf on the seed model (1 thread, batch 128): the
 *                              CPU twin's per-element loop (ck_act_forward/backward branch on the
 *                              sign of pre, fmaf through a libm call, three passes) grew from 22%
 *                              to 29% of the step while the two ReLU passes it replaces cost 8%:
 *                              no gain on the CPU. The device kernel is the point of the fusion.
 *  F2  BN(+ReLU) + SpatialDropout -> the same call with the spatial_dropout desc (the channel
 *                              scale multiplies the activation output; backward folds dy*mask
 *                              into dBN): same products; a dropped channel's gradient may be a
 *                              zero of the other sign (with the in-place ReLU, relu(s pre) is
 *                              0 for s = 0 so dReLU gives +0 where the unplanned order gives
 *                              dy * 0).
 *  F3  Pool + Dropout|SpatialDropout -> the pooling node applies the dropout in place to its
 *                              output (no extra buffer); backward scales dy in place before the
 *                              pooling backward: same products, bit-exact.
 * Graph models (ck_model.graph: a layer reads named inputs, a tensor may have several readers)
 * get F1 only (ck_model_plan_graph): a BN node whose one reader is a ReLU node right after it
 * runs that ReLU, as in a chain, the same floats; so does an Add (its kind's with_relu: the
 * post-activation residual unit's relu(branch + shortcut)), bit-exact since ReLU's derivative
 * reads only y. The reorders C1..C4 and the dropout fusions
 * F2, F3 are not applied: they move or fuse neighbours of a chain, and a fusion that stops
 * storing a tensor another layer also reads would be wrong; a BN read by two layers (its output
 * and the ReLU's both needed) stays unfused.
 *
 * Not applied: dropping the bias of a conv/dense followed by BN. In training the BN output is
 * mathematically independent of that bias, but not in floats ((x+b) - mean(x+b) rounds
 * differently from x - mean(x)), the bias still gets a gradient of rounding noise (0 in exact
 * arithmetic) which Adam, normalizing by its own magnitude, can turn into steps of order lr,
 * and the moving mean (inference) absorbs the bias: removing it changes the trajectory. The bias
 * stays (it is a Keras parameter, and checkpoints keep it).
 */
#include "algebra.h"
#include "exec.h"
#include "model_internal.h"

#include <stdio.h>
#include <string.h>

static int is_relu(const ck_node *n) {
    return n->type == CK_NODE_ACT && n->act == CK_ACT_RELU;
}

static int is_drop(const ck_node *n) {
    return n->type == CK_NODE_DROPOUT || n->type == CK_NODE_SDROPOUT;
}

/* A node as the algebra sees it: its user layer's type (an activation node, inline or not, is an
 * activation), fused when the planner already put an activation or a dropout into it. */
static ck_alg_op node_op(const ck_model *m, const ck_node *n) {
    ck_alg_op o;
    memset(&o, 0, sizeof o);
    o.type = n->type == CK_NODE_ACT ? CK_LAYER_ACTIVATION : m->layers[n->layer].type;
    o.act = n->type == CK_NODE_ACT ? n->act : CK_ACT_NONE;
    o.rate = is_drop(n) ? n->rate : 0.0f;
    o.layer = n->layer;
    o.is_inline = n->type == CK_NODE_ACT && m->layers[n->layer].type != CK_LAYER_ACTIVATION;
    o.fused = n->drop_layer >= 0 || (n->type == CK_NODE_BN && n->bn.activation != CK_ACT_NONE);
    return o;
}

/* Swaps nodes i and i+1, one of which is element-wise (ACT, DROPOUT, SDROPOUT: output shape =
 * input shape); the element-wise node takes the shape at its new place. */
static void swap_nodes(ck_model *m, int i) {
    ck_node a = m->nodes[i], b = m->nodes[i + 1];
    /* input shape of position i, output shape of position i + 1: unchanged by the swap */
    const int ih = a.ih, iw = a.iw, ic = a.ic, oh = b.oh, ow = b.ow, oc = b.oc;
    if (b.type == CK_NODE_ACT || b.type == CK_NODE_DROPOUT || b.type == CK_NODE_SDROPOUT) {
        /* b moves first: it sees a's input shape */
        b.ih = b.oh = ih;
        b.iw = b.ow = iw;
        b.ic = b.oc = ic;
        a.ih = ih;
        a.iw = iw;
        a.ic = ic;
    } else {
        /* a (element-wise) moves after b: it sees b's output shape */
        a.ih = a.oh = oh;
        a.iw = a.ow = ow;
        a.ic = a.oc = oc;
        b.oh = oh;
        b.ow = ow;
        b.oc = oc;
    }
    m->nodes[i] = b;
    m->nodes[i + 1] = a;
}

/* One canonicalization step (the first reorder of the algebra's planner rules, C1..C4, in node
 * order); 1 when it changed. */
static int canonicalize_once(ck_model *m) {
    for (int i = 0; i + 1 < m->num_nodes; ++i) {
        const ck_alg_op prev = i > 0 ? node_op(m, &m->nodes[i - 1]) : (ck_alg_op){0};
        const ck_alg_op a = node_op(m, &m->nodes[i]), b = node_op(m, &m->nodes[i + 1]);
        const ck_alg_rule *r = ck_alg_swap(CK_ALG_PLAN, i > 0 ? &prev : NULL, &a, &b);
        if (r && r->level <= CK_ALG_PLANNER_MAX) {
            swap_nodes(m, i);
            return 1;
        }
    }
    return 0;
}

static void add_ops(ck_node *dst, const ck_node *src) {
    for (int k = 0; k < src->nops && dst->nops < CK_NODE_MAX_OPS; ++k)
        dst->ops[dst->nops++] = src->ops[k];
}

void ck_model_plan(ck_model *m) {
    /* C1..C4 until nothing applies; each rule strictly improves a finite measure (a ReLU moves
     * next to a BN, or after a pool, or after a dropout that follows a pool), the cap is a guard */
    for (int guard = 0; guard < 4 * m->num_nodes + 4 && canonicalize_once(m); ++guard)
        ;
    /* F1..F3 */
    int out = 0;
    for (int i = 0; i < m->num_nodes; ++i) {
        ck_node cur = m->nodes[i];
        if (cur.type == CK_NODE_BN) {
            if (i + 1 < m->num_nodes && is_relu(&m->nodes[i + 1])) {
                cur.bn.activation = CK_ACT_RELU;
                add_ops(&cur, &m->nodes[++i]);
            }
            if (i + 1 < m->num_nodes && m->nodes[i + 1].type == CK_NODE_SDROPOUT) {
                const ck_node *d = &m->nodes[++i];
                cur.drop_layer = d->layer;
                cur.drop_type = CK_NODE_SDROPOUT;
                cur.drop_rate = d->rate;
                add_ops(&cur, d);
            }
        } else if (cur.type == CK_NODE_POOL) {
            if (i + 1 < m->num_nodes && is_drop(&m->nodes[i + 1])) {
                const ck_node *d = &m->nodes[++i];
                cur.drop_layer = d->layer;
                cur.drop_type = d->type;
                cur.drop_rate = d->rate;
                add_ops(&cur, d);
            }
        }
        m->nodes[out++] = cur;
    }
    m->num_nodes = out;
    m->planned = 1;
}

void ck_model_plan_graph(ck_model *m) {
    int readers[CK_MAX_OPS] = {0}, map[CK_MAX_OPS];
    for (int i = 0; i < m->num_nodes; ++i)
        for (int j = 0; j < m->nodes[i].nin; ++j)
            if (m->nodes[i].in[j] >= 0)
                readers[m->nodes[i].in[j]]++;
    int out = 0;
    for (int i = 0; i < m->num_nodes; ++i) {
        ck_node cur = m->nodes[i];
        map[i] = out;
        const int relu_next = readers[i] == 1 && i + 1 < m->num_nodes &&
                              is_relu(&m->nodes[i + 1]) && m->nodes[i + 1].nin == 1 &&
                              m->nodes[i + 1].in[0] == i;
        if (relu_next && (cur.type == CK_NODE_BN || cur.kind->with_relu)) {
            if (cur.type == CK_NODE_BN) {
                cur.bn.activation = CK_ACT_RELU;
            } else {
                cur.kind = cur.kind->with_relu;
                cur.act = CK_ACT_RELU; /* what the fused kind's ReLU reads */
            }
            add_ops(&cur, &m->nodes[++i]);
            map[i] = out; /* the ReLU's readers read the fused node */
        }
        m->nodes[out++] = cur;
    }
    for (int i = 0; i < out; ++i)
        for (int j = 0; j < m->nodes[i].nin; ++j)
            if (m->nodes[i].in[j] >= 0)
                m->nodes[i].in[j] = map[m->nodes[i].in[j]];
    m->num_nodes = out;
    m->planned = 1;
}

void ck_model_plan_index(ck_model *m) {
    /* prefix_node[p]: the node after which exactly ops 0..p have run (-1: no such node). Planned
     * reorders only permute ops that commute exactly, so such a node holds the output of op p. */
    static const int none = CK_PLAN_NOT_MATERIALIZED;
    int prefix_node[CK_MAX_OPS];
    for (int p = 0; p < m->num_ops; ++p)
        prefix_node[p] = none;
    int count = 0, maxop = -1;
    for (int i = 0; i < m->num_nodes; ++i) {
        const ck_node *n = &m->nodes[i];
        for (int k = 0; k < n->nops; ++k) {
            ++count;
            if (n->ops[k] > maxop)
                maxop = n->ops[k];
        }
        if (maxop >= 0 && count == maxop + 1)
            prefix_node[maxop] = i;
    }
    for (int li = 0; li < m->num_layers; ++li) {
        int first = -1, last = -1;
        for (int p = 0; p < m->num_ops; ++p)
            if (m->op_layer[p] == li) {
                if (first < 0)
                    first = p;
                last = p;
            }
        m->layer_out_node[li] = last >= 0 ? prefix_node[last] : none;
        m->layer_in_node[li] = first == 0  ? CK_PLAN_MODEL_INPUT
                               : first > 0 ? prefix_node[first - 1]
                                           : none;
    }
    /* a graph model (unplanned): a layer's input is its first input layer's output */
    for (int li = 0; m->graph && li < m->num_layers; ++li) {
        const ck_layer_desc *d = &m->layers[li];
        const int src = d->num_inputs > 0 ? d->inputs[0] : li - 1;
        m->layer_in_node[li] = src < 0 ? CK_PLAN_MODEL_INPUT : m->layer_out_node[src];
    }
}

/* Node k, or CK_PLAN_NOT_MATERIALIZED when a planned graph gives its buffer to a later node
 * during the forward pass (no backward reads it: memtab.c). */
static int kept(const ck_model *m, int k) {
    int r = k;
    while (r >= 0 && m->nodes[r].kind->alias)
        r = m->nodes[r].in[0];
    if (r >= 0 && m->graph && m->planned && !m->acts_private && m->nodes[r].act_end < m->num_nodes)
        return CK_PLAN_NOT_MATERIALIZED;
    return k;
}

int ck_model_layer_output_node(const ck_model *m, int layer) {
    if (!m || !m->built || layer < 0 || layer >= m->num_layers)
        return -3;
    return kept(m, m->layer_out_node[layer]);
}

const float *ck_model_layer_output(const ck_model *m, int layer) {
    const int k = ck_model_layer_output_node(m, layer);
    return k >= 0 ? m->nodes[k].out : NULL;
}

const float *ck_model_layer_input(const ck_model *m, int layer, const float *x) {
    if (!m || !m->built || layer < 0 || layer >= m->num_layers)
        return NULL;
    const int k = m->layer_in_node[layer];
    return k == CK_PLAN_MODEL_INPUT ? x : k >= 0 && kept(m, k) >= 0 ? m->nodes[k].out : NULL;
}

int ck_model_layer_node(const ck_model *m, int layer) {
    if (!m || layer < 0 || layer >= m->num_layers)
        return -1;
    for (int i = 0; i < m->num_nodes; ++i)
        for (int k = 0; k < m->nodes[i].nops; ++k)
            if (m->op_layer[m->nodes[i].ops[k]] == layer)
                return i;
    return -1;
}

void ck_model_plan_describe_node(const ck_model *m, int i, char *buf, size_t len) {
    const ck_node *n = &m->nodes[i];
    size_t used = 0;
    buf[0] = '\0';
    int prev_op = -1;
    for (int k = 0; k < n->nops; ++k) {
        const int op = n->ops[k];
        const ck_layer_desc *d = &m->layers[m->op_layer[op]];
        int moved =
            0; /* ran out of the user's order: an op before it in the plan has a larger id */
        for (int j = 0; j <= i && !moved; ++j)
            for (int q = 0; q < m->nodes[j].nops; ++q) {
                if (j == i && q >= k)
                    break;
                if (m->nodes[j].ops[q] > op) {
                    moved = 1;
                    break;
                }
            }
        char one[128];
        if (m->op_inline[op])
            snprintf(one, sizeof one, "%s's %s", d->name, ck_activation_name(d->activation));
        else
            snprintf(one, sizeof one, "%s", d->name);
        int w = snprintf(buf + used, used < len ? len - used : 0, "%s%s%s", k ? " + " : "", one,
                         moved ? " (moved)" : "");
        if (w > 0)
            used += (size_t)w;
        prev_op = op;
    }
    (void)prev_op;
    const char *note = NULL;
    /* the device kernel always runs the ReLU itself; the CPU by default in a separate pass */
    const int one = m->relu_in_bn_kernel || m->ctx->device != CK_DEVICE_CPU;
    if (n->type == CK_NODE_BN && n->bn.activation == CK_ACT_RELU && n->drop_layer >= 0)
        note = one ? "BN+ReLU+SpatialDropout, one kernel"
                   : "BN+ReLU+SpatialDropout, one node: BN kernel with the channel scale, "
                     "ReLU in place";
    else if (n->type == CK_NODE_BN && n->bn.activation == CK_ACT_RELU)
        note = one ? "BN+ReLU, one kernel" : "BN+ReLU, one node: BN kernel, ReLU in place";
    else if (n->type == CK_NODE_BN && n->drop_layer >= 0)
        note = "BN+SpatialDropout, one kernel";
    else if (n->type == CK_NODE_POOL && n->drop_layer >= 0)
        note = "dropout in place on the pooled output";
    else if (!strcmp(n->kind->name, "add+relu"))
        note = "Add+ReLU, one node: ReLU in place";
    if (note && used < len)
        snprintf(buf + used, len - used, "  [%s]", note);
}
