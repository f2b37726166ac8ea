/* The executor (exec.h): one forward and one backward loop over the planned node list, for the
 * CPU and CUDA alike; each node runs through its kind's ops for the backend. */
#include "exec.h"

#include <string.h>

static ck_status cpu_copy(ck_context *ctx, float *dst, const float *src, size_t count) {
    (void)ctx;
    memcpy(dst, src, count * sizeof(float));
    return CK_STATUS_SUCCESS;
}

const ck_backend ck_backend_cpu = {CK_BE_CPU, "cpu", cpu_copy};

ck_exec ck_exec_cpu(ck_model *m, const float *x) {
    ck_exec e;
    memset(&e, 0, sizeof e);
    e.m = m;
    e.ctx = m->ctx;
    e.be = &ck_backend_cpu;
    e.params = m->params;
    e.grads = m->grads;
    e.fixed = m->fixed;
    e.stats = m->stats;
    e.x = x;
    e.gbuf[0] = m->gbuf[0];
    e.gbuf[1] = m->gbuf[1];
    e.ws = m->ws;
    e.bn_relu_fused = m->relu_in_bn_kernel;
    return e;
}

float *ck_exec_out(const ck_exec *e, int i) {
    return e->outs ? e->outs[i] : e->m->nodes[i].out;
}

ck_tensor ck_exec_view(ck_context *ctx, const float *p, int n, int h, int w, int c) {
    ck_tensor t;
    t.ctx = ctx;
    t.layout = CK_LAYOUT_NHWC;
    t.n = n;
    t.c = c;
    t.h = h;
    t.w = w;
    t.count = (size_t)n * c * h * w;
    t.data = (float *)p;
    return t;
}

ck_tensor ck_exec_pview(ck_context *ctx, const float *p, int c) {
    ck_tensor t = ck_exec_view(ctx, p, 1, 1, 1, c);
    t.layout = CK_LAYOUT_NCHW;
    return t;
}

ck_conv_geom ck_exec_geom(const ck_node *n, int batch) {
    ck_conv_geom g = n->geom;
    g.n = batch;
    return g;
}

/* ---- what a node asks of the model while it runs: dropout RNG offsets, fused dropouts ---- */

/* The dropout RNG offset of user layer `layer` at the current step: unique per (step, layer)
 * (layers < CK_MAX_LAYERS <= 4096). Keyed by the user's layer, not the node, so that the plan
 * (reordered or fused nodes) and the unplanned lowering draw identical masks. */
uint64_t ck_model_layer_dropout_offset(const ck_model *m, int layer) {
    return (uint64_t)m->step * 4096u + (uint64_t)layer;
}

/* The offset of the dropout node i runs: its own layer, or the layer of a fused dropout. */
uint64_t ck_model_dropout_offset(const ck_model *m, int i) {
    const ck_node *n = &m->nodes[i];
    return ck_model_layer_dropout_offset(m, n->drop_layer >= 0 ? n->drop_layer : n->layer);
}

int ck_model_fused_dropout(const ck_model *m, int i, int training, ck_dropout_desc *d) {
    const ck_node *n = &m->nodes[i];
    if (!training || n->drop_layer < 0 || !(n->drop_rate > 0.0f))
        return 0;
    d->rate = n->drop_rate;
    d->offset = ck_model_layer_dropout_offset(m, n->drop_layer);
    return 1;
}

static const float *node_input(const ck_exec *e, int i) {
    return i == 0 ? e->x : ck_exec_out(e, i - 1);
}

/* An aliasing node (Flatten) shares its input's memory, decided per call: the input of node 0
 * is the caller's batch. */
static void set_alias(const ck_exec *e, int i, const float *in) {
    if (e->outs)
        e->outs[i] = (float *)in;
    else
        e->m->nodes[i].out = (float *)in;
}

ck_status ck_exec_forward(const ck_exec *e, int batch, int training, int upto) {
    ck_model *m = e->m;
    for (int i = 0; i < upto; ++i) {
        ck_node *n = &m->nodes[i];
        const ck_node_kind *k = n->kind;
        ck_node_io io;
        memset(&io, 0, sizeof io);
        io.i = i;
        io.batch = batch;
        io.training = training;
        io.in = node_input(e, i);
        io.count_in = (size_t)batch * n->ih * n->iw * n->ic;
        if (k->alias) {
            set_alias(e, i, io.in);
            continue;
        }
        io.out = ck_exec_out(e, i);
        const double t0 = training ? ck_prof_begin(m) : 0.0;
        const ck_status st = k->ops[e->be->id].fwd(e, n, &io);
        if (training)
            ck_prof_end(m, t0, &m->prof_cur_fwd[i]);
        if (st != CK_STATUS_SUCCESS)
            return st;
    }
    return CK_STATUS_SUCCESS;
}

ck_status ck_exec_backward(const ck_exec *e, int batch, int from, float *dy0) {
    ck_model *m = e->m;
    float *dy = dy0;
    int cur = 0; /* gbuf index the next dx goes to */
    for (int i = from; i >= 0; --i) {
        ck_node *n = &m->nodes[i];
        const ck_node_kind *k = n->kind;
        if (k->alias)
            continue; /* same memory, same gradient */
        ck_node_io io;
        memset(&io, 0, sizeof io);
        io.i = i;
        io.batch = batch;
        io.training = 1;
        io.in = node_input(e, i);
        io.out = ck_exec_out(e, i);
        io.count_in = (size_t)batch * n->ih * n->iw * n->ic;
        io.dy = dy;
        io.dx_buf = e->gbuf[cur];
        io.dx = i > 0 ? io.dx_buf : NULL; /* no gradient for the input */
        const double t0 = ck_prof_begin(m);
        const ck_status st = k->ops[e->be->id].bwd(e, n, &io);
        ck_prof_end(m, t0, &m->prof_cur_bwd[i]);
        if (st != CK_STATUS_SUCCESS)
            return st;
        if (!io.dx)
            break;
        dy = io.dx;
        cur ^= 1;
    }
    return CK_STATUS_SUCCESS;
}
