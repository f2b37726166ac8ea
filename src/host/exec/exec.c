/* The executor (exec.h): one forward and one backward loop over the planned node list, for the
 * CPU and CUDA alike; each node runs through its kind's ops for the backend. */
#include "exec.h"

#include "bf16.h"
#include "ck_math.h"
#include "comm_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

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
    t.dtype = CK_KDT_F32;
    return t;
}

ck_tensor ck_exec_view_dt(ck_context *ctx, const void *p, int n, int h, int w, int c, int dt) {
    ck_tensor t = ck_exec_view(ctx, (const float *)p, n, h, w, c);
    t.dtype = dt;
    return t;
}

int ck_model_stores_bf16(const ck_model *m, int be) {
    return be == CK_BE_CUDA && m->precision == CK_PRECISION_BF16;
}

int ck_node_out_dt(const ck_model *m, int bf16, int j) {
    return bf16 && j < ck_exec_logits_node(m) ? CK_KDT_BF16 : CK_KDT_F32;
}

int ck_node_dy_dt(const ck_model *m, int bf16, int i) {
    return ck_node_out_dt(m, bf16, i == ck_exec_logits_node(m) ? -1 : i);
}

int ck_exec_store_bf16(const ck_exec *e) {
    return ck_model_stores_bf16(e->m, e->be->id);
}

int ck_exec_out_dt(const ck_exec *e, int i) {
    return ck_node_out_dt(e->m, ck_exec_store_bf16(e), i);
}

int ck_exec_in_dt(const ck_exec *e, int i, int k) {
    const ck_node *n = &e->m->nodes[i];
    return ck_exec_out_dt(e, e->m->graph ? n->in[k] : i - 1);
}

int ck_exec_dy_dt(const ck_exec *e, int i) {
    return ck_node_dy_dt(e->m, ck_exec_store_bf16(e), i);
}

int ck_exec_twin_rounds(const ck_exec *e, int i) {
    return e->m->precision == CK_PRECISION_BF16 && !ck_exec_store_bf16(e) &&
           i < ck_exec_logits_node(e->m);
}

const float *ck_exec_weights(const ck_exec *e) {
    return e->wround ? e->wround : e->params;
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
    return ck_dropout_layer_offset(m->step, layer);
}

int ck_model_dropout_layer(const ck_model *m, int i) {
    const ck_node *n = &m->nodes[i];
    return n->drop_layer >= 0 ? n->drop_layer : n->layer;
}

/* The offset of the dropout node i runs: its own layer, or the layer of a fused dropout. */
uint64_t ck_model_dropout_offset(const ck_model *m, int i) {
    return ck_model_layer_dropout_offset(m, ck_model_dropout_layer(m, i));
}

ck_drop_key ck_exec_drop_key(const ck_exec *e, int layer) {
    ck_drop_key k = {e->step, layer};
    return k;
}

int ck_exec_fused_dropout(const ck_exec *e, int i, int training, ck_dropout_desc *d,
                          ck_drop_key *key) {
    const ck_node *n = &e->m->nodes[i];
    if (!training || n->drop_layer < 0 || !(n->drop_rate > 0.0f))
        return 0;
    d->rate = n->drop_rate;
    d->offset = ck_model_layer_dropout_offset(e->m, n->drop_layer);
    d->sample0 = e->sample0;
    *key = ck_exec_drop_key(e, n->drop_layer);
    return 1;
}

/* bf16 (docs/precision.md): node 0 reads the batch rounded to bf16 (the CPU twin's m->xbf, the
 * device's bf16 words e->xbf), filled by the forward of the same step. */
static const float *model_input(const ck_exec *e) {
    if (e->xbf)
        return (const float *)e->xbf;
    return e->m->xbf ? e->m->xbf : e->x;
}
static const float *node_input(const ck_exec *e, int i) {
    return i > 0 ? ck_exec_out(e, i - 1) : model_input(e);
}

/* bf16: what a node stores is rounded to nearest-even bf16 (the logits are not: the loss and
 * softmax read them in fp32). The CPU twin rounds its fp32 buffers here; a device that stores
 * bf16 words rounded as it stored them. */
static ck_status bf16_store(const ck_exec *e, float *p, size_t count) {
    if (ck_exec_twin_rounds(e, -1)) /* the callers store before the logits only */
        ck_bf16_round_buffer(p, count);
    return CK_STATUS_SUCCESS;
}

/* bf16, at the start of a forward pass: the CPU twin's rounded weights (ck_exec_weights) and the
 * batch node 0 reads, rounded (CPU) or packed to bf16 words (device). */
static ck_status bf16_begin_forward(const ck_exec *e, int batch) {
    ck_model *m = e->m;
    const size_t cx = (size_t)batch * m->in_h * m->in_w * m->in_c;
    if (e->wround) {
        memcpy(e->wround, e->params, sizeof(float) * m->num_params);
        ck_bf16_round_buffer(e->wround, m->num_params);
    }
    if (e->xbf)
        return e->be->pack_bf16(e, e->xbf, e->x, cx);
    if (m->xbf) {
        memcpy(m->xbf, e->x, sizeof(float) * cx);
        CK_TRY(bf16_store(e, m->xbf, cx));
    }
    return CK_STATUS_SUCCESS;
}

/* bf16, after the loss: the logits node's backward reads the loss gradient as bf16 (a tensor-core
 * GEMM takes both operands in bf16): packed on the device, rounded in place by the twin. */
static ck_status bf16_loss_grad(const ck_exec *e, int n, float **dy0) {
    const size_t count = (size_t)n * e->m->classes;
    *dy0 = e->logits_grad;
    if (e->m->precision != CK_PRECISION_BF16)
        return CK_STATUS_SUCCESS;
    if (e->dlogits_bf) {
        *dy0 = (float *)e->dlogits_bf;
        return e->be->pack_bf16(e, e->dlogits_bf, e->logits_grad, count);
    }
    return bf16_store(e, e->logits_grad, count);
}

/* Input k of node i of a graph model. */
static const float *graph_input(const ck_exec *e, const ck_node *n, int k) {
    return n->in[k] < 0 ? model_input(e) : ck_exec_out(e, n->in[k]);
}

/* A graph model's gradient buffer of node i, and scratch gradient k. */
static float *node_grad(const ck_exec *e, int i) {
    return (float *)(e->gnode + e->m->nodes[i].g_offset);
}
static float *scratch_grad(const ck_exec *e, int k) {
    return (float *)(e->gscratch + (size_t)k * e->gscratch_stride);
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
    return ck_exec_forward_range(e, batch, training, 0, upto);
}

ck_status ck_exec_forward_range(const ck_exec *e, int batch, int training, int from, int upto) {
    ck_model *m = e->m;
    const int ln = ck_exec_logits_node(m);
    if (upto > from && m->precision == CK_PRECISION_BF16)
        CK_TRY(bf16_begin_forward(e, batch));
    for (int i = from; i < upto; ++i) {
        ck_node *n = &m->nodes[i];
        const ck_node_kind *k = n->kind;
        ck_node_io io;
        memset(&io, 0, sizeof io);
        io.i = i;
        io.batch = batch;
        io.training = training;
        if (m->graph) {
            io.nin = n->nin;
            for (int j = 0; j < n->nin; ++j)
                io.ins[j] = graph_input(e, n, j);
            io.in = io.ins[0];
        } else {
            io.in = io.ins[0] = node_input(e, i);
            io.nin = 1;
        }
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
        if (i < ln)
            CK_TRY(bf16_store(e, io.out, (size_t)batch * n->oh * n->ow * n->oc));
    }
    return CK_STATUS_SUCCESS;
}

/* Backward over a graph model's DAG, from node `from` down to 0: node i reads its gradient from
 * its own buffer (dy0 for `from`) and writes the gradient of each input into that input's
 * buffer, or, where a later reader of the same tensor already wrote it (n->in_acc), into a
 * scratch buffer that is then added there: every node's gradient is complete before it runs,
 * since all its readers have higher indices. */
static ck_status graph_backward(const ck_exec *e, int batch, int from, float *dy0) {
    ck_model *m = e->m;
    for (int i = from; i >= 0; --i) {
        ck_node *n = &m->nodes[i];
        const ck_node_kind *k = n->kind;
        ck_node_io io;
        memset(&io, 0, sizeof io);
        io.i = i;
        io.batch = batch;
        io.training = 1;
        io.nin = n->nin;
        for (int j = 0; j < n->nin; ++j) {
            io.ins[j] = graph_input(e, n, j);
            io.dxs[j] = n->in[j] < 0   ? NULL /* no gradient for the input */
                        : n->in_acc[j] ? scratch_grad(e, j)
                                       : node_grad(e, n->in[j]);
        }
        io.in = io.ins[0];
        io.out = ck_exec_out(e, i);
        io.count_in = (size_t)batch * n->ih * n->iw * n->ic;
        io.dy = i == from ? dy0 : node_grad(e, i);
        io.dx = io.dxs[0];
        io.dx_buf = io.dx ? io.dx : scratch_grad(e, 0);
        ck_status st = CK_STATUS_SUCCESS;
        if (k->alias) { /* the same gradient, in the input's buffer */
            if (io.dx)
                st = e->be->copy(e->ctx, io.dx, io.dy, io.count_in, ck_exec_out_dt(e, n->in[0]));
        } else {
            const double t0 = ck_prof_begin(m);
            st = k->ops[e->be->id].bwd(e, n, &io);
            ck_prof_end(m, t0, &m->prof_cur_bwd[i]);
        }
        /* bf16: every gradient store is rounded, as in the Sequential loop: each input's gradient
         * as written and, where a tensor has several readers, the sum */
        for (int j = 0; j < n->nin && st == CK_STATUS_SUCCESS; ++j) {
            if (n->in[j] < 0)
                continue;
            const ck_node *src = &m->nodes[n->in[j]];
            const size_t cnt = (size_t)batch * src->oh * src->ow * src->oc;
            st = bf16_store(e, io.dxs[j], cnt);
            if (st == CK_STATUS_SUCCESS && n->in_acc[j]) {
                float *g = node_grad(e, n->in[j]);
                st = e->be->add(e, g, g, io.dxs[j], cnt, ck_exec_out_dt(e, n->in[j]));
                if (st == CK_STATUS_SUCCESS)
                    st = bf16_store(e, g, cnt);
            }
        }
        if (st == CK_STATUS_SUCCESS && e->overlap) /* data-parallel: buckets now complete */
            st = ck_exec_comm_grads_ready(e, i);
        if (st != CK_STATUS_SUCCESS)
            return st;
    }
    return CK_STATUS_SUCCESS;
}

/* What node i of a Sequential model sees backward: dy at its output, dx_buf for its input's
 * gradient (node 0: none, but BN still needs the buffer). */
static ck_node_io seq_bwd_io(const ck_exec *e, int batch, int i, float *dy, float *dx_buf) {
    const ck_node *n = &e->m->nodes[i];
    ck_node_io io;
    memset(&io, 0, sizeof io);
    io.i = i;
    io.batch = batch;
    io.training = 1;
    io.in = io.ins[0] = node_input(e, i);
    io.nin = 1;
    io.out = ck_exec_out(e, i);
    io.count_in = (size_t)batch * n->ih * n->iw * n->ic;
    io.dy = dy;
    io.dx_buf = dx_buf;
    io.dx = io.dxs[0] = i > 0 ? dx_buf : NULL; /* no gradient for the input */
    return io;
}

ck_status ck_exec_backward(const ck_exec *e, int batch, int from, float *dy0) {
    ck_model *m = e->m;
    if (m->graph)
        return graph_backward(e, batch, from, dy0);
    float *dy = dy0;
    int cur = 0; /* gbuf index the next dx goes to */
    for (int i = from; i >= 0; --i) {
        ck_node *n = &m->nodes[i];
        const ck_node_kind *k = n->kind;
        if (k->alias)
            continue; /* same memory, same gradient */
        const ck_node_io io = seq_bwd_io(e, batch, i, dy, e->gbuf[cur]);
        const double t0 = ck_prof_begin(m);
        const ck_status st = k->ops[e->be->id].bwd(e, n, &io);
        ck_prof_end(m, t0, &m->prof_cur_bwd[i]);
        if (st != CK_STATUS_SUCCESS)
            return st;
        if (e->overlap) /* data-parallel: buckets now complete */
            CK_TRY(ck_exec_comm_grads_ready(e, i));
        if (!io.dx)
            break;
        CK_TRY(bf16_store(e, io.dx, io.count_in));
        dy = io.dx;
        cur ^= 1;
    }
    return CK_STATUS_SUCCESS;
}

ck_status ck_exec_backward_node(const ck_exec *e, int batch, int i, float *dy, float *dx) {
    ck_model *m = e->m;
    ck_node *n = &m->nodes[i];
    const ck_node_io io = seq_bwd_io(e, batch, i, dy, dx);
    CK_TRY(n->kind->ops[e->be->id].bwd(e, n, &io));
    return io.dx ? bf16_store(e, io.dx, io.count_in) : CK_STATUS_SUCCESS;
}

int ck_exec_logits_node(const ck_model *m) {
    return m->num_nodes - 1 - (m->softmax_last ? 1 : 0);
}

static const float *logits_of(const ck_exec *e) {
    const int li = ck_exec_logits_node(e->m);
    return li < 0 ? e->x : ck_exec_out(e, li);
}

static ck_status loss_not_finite(const ck_model *m) {
    return ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                   "x: the loss is not finite at step %lld (NaN/Inf in the inputs or diverged "
                   "training); the model was not changed",
                   m->step);
}

ck_kstep ck_exec_step_packet(const ck_model *m) {
    ck_kstep k;
    memset(&k, 0, sizeof k);
    k.step = m->step;
    /* Adam's alpha of update m->step + 1, as ck_cpu_adam_update computes it (SGD reads none) */
    k.adam_alpha = ck_adam_alpha(m->opt.learning_rate, m->opt.beta1, m->opt.beta2, m->step + 1);
    return k;
}

/* What a training step's device part reads and leaves: the status on entry (a failure still
 * joins a data-parallel step's collectives; never written, so that the part can run again after
 * a failed capture), the loss packet, the first non-finite gradient, the global batch. */
typedef struct step_part {
    ck_status st;
    int n, update, total;
    ck_kloss *kl;
    long long bad;
} step_part;

/* Forward, loss, backward, the gradient check and, on an asynchronous backend, the update: the
 * part of a step that a CUDA graph captures (ck_backend.run_step). */
static ck_status step_body(ck_exec *e, void *arg) {
    step_part *p = (step_part *)arg;
    ck_model *m = e->m;
    const ck_backend *be = e->be;
    const int ln = ck_exec_logits_node(m), n = p->n;
    ck_status st = p->st;
    if (st == CK_STATUS_SUCCESS)
        st = ck_exec_forward(e, n, 1, ln + 1);
    if (st == CK_STATUS_SUCCESS)
        st = be->loss(e, n, logits_of(e), p->kl);
    if (e->comm) /* every rank joins, then all pass or all fail */
        st = ck_exec_comm_loss(e, st, n, p->kl, &p->total);
    /* synchronous: a non-finite loss fails before backward */
    if (st == CK_STATUS_SUCCESS && be->synchronous && !isfinite(p->kl->loss_sum))
        st = loss_not_finite(m);
    /* the same on every rank: synchronous backends agreed above; a device step's ranks all join
     * the gradients' collectives and agree on the device */
    const int joined = st == CK_STATUS_SUCCESS || (e->comm && !be->synchronous);
    float *dy0 = e->logits_grad;
    if (st == CK_STATUS_SUCCESS && ln >= 0)
        st = bf16_loss_grad(e, n, &dy0);
    if (st == CK_STATUS_SUCCESS && ln >= 0)
        st = ck_exec_backward(e, n, ln, dy0);
    /* a non-finite gradient fails the step before any parameter changes */
    if (e->comm && joined)
        st = ck_exec_comm_grads(e, st, p->kl, &p->bad);
    else if (st == CK_STATUS_SUCCESS)
        st = be->flag_nonfinite(e, p->kl, &p->bad);
    if (st == CK_STATUS_SUCCESS && p->update && !be->synchronous)
        st = be->update(e, p->kl);
    return st;
}

ck_status ck_exec_train(ck_exec *e, const float *x, const int32_t *labels, int n, int update,
                        double *loss_sum, int *correct, int *count) {
    ck_model *m = e->m;
    const ck_backend *be = e->be;
    ck_kloss own = {0.0, 0, 0}, hl = {0.0, 0, 0};
    step_part p;
    p.kl = e->loss ? e->loss : &own; /* the backend's memory */
    p.bad = -1;
    p.total = n; /* the global batch (data-parallel: the sum of the ranks' shards) */
    p.n = n;
    p.update = update;
    /* the BN moving statistics are restored if the step fails: no half-changed model */
    ck_status st = m->num_fixed
                       ? be->copy(e->ctx, e->fixed_backup, e->fixed, m->num_fixed, CK_KDT_F32)
                       : CK_STATUS_SUCCESS;
    const int backed_up = st == CK_STATUS_SUCCESS;
    /* staged before the begin packet: a rank whose upload failed says so there */
    if (st == CK_STATUS_SUCCESS && !e->staged)
        st = be->stage(e, x, labels, n);
    if (e->comm) { /* every rank joins, whatever its status */
        st = ck_exec_comm_begin(e, st, n, &p.total);
        if (st != CK_STATUS_SUCCESS && ck_exec_comm_agrees_at_begin(e)) {
            if (backed_up && m->num_fixed)
                be->restore(e);
            return st;
        }
    }
    if (st == CK_STATUS_SUCCESS && be->begin_step)
        st = be->begin_step(e);
    p.st = st;
    /* a CUDA graph replays what it captured: no collectives, the update enqueued with the step,
     * no profiling's per-node waits */
    const int capturable = st == CK_STATUS_SUCCESS && !e->comm && update && !m->profiling;
    st = be->run_step ? be->run_step(e, n, capturable, step_body, &p) : step_body(e, &p);
    if (!be->synchronous) /* the host's part of the step ends where its one wait begins */
        m->step_wait_t = ck_now_s();
    if (st == CK_STATUS_SUCCESS)
        st = be->read_loss(e, p.kl, &hl);
    if (st == CK_STATUS_SUCCESS && e->comm && !be->synchronous)
        st = ck_exec_comm_verdict(e, &hl);
    if (st == CK_STATUS_SUCCESS && !isfinite(hl.loss_sum))
        st = loss_not_finite(m);
    if (st == CK_STATUS_SUCCESS && hl.nonfinite)
        st = p.bad >= 0 ? ck_fail(e->ctx, CK_STATUS_BAD_PARAM,
                                  "model: gradient %lld is not finite at step %lld (diverged "
                                  "training); the model was not changed",
                                  p.bad, m->step)
                        : ck_fail(e->ctx, CK_STATUS_BAD_PARAM,
                                  "model: a gradient is not finite at step %lld (diverged "
                                  "training); the model was not changed",
                                  m->step);
    if (st != CK_STATUS_SUCCESS) {
        /* a device step's collectives may still be in flight: they end (or time out) under the
         * deadline here, not in a later call that would wait for them without one */
        if (e->comm && !be->synchronous) {
            char own[CK_ERR_LEN];
            snprintf(own, sizeof own, "%s", e->ctx->err);
            const ck_status sst = ck_comm_sync(e->comm, "the failed step's collectives");
            if (sst != CK_STATUS_SUCCESS) /* both: the wait's failure, and why the step failed */
                st = ck_fail_after(e->ctx, sst, own);
        }
        if (backed_up && m->num_fixed)
            be->restore(e);
        return st;
    }
    if (update && be->synchronous)
        CK_TRY(be->update(e, NULL));
    if (loss_sum)
        *loss_sum = hl.loss_sum;
    if (correct)
        *correct = hl.correct;
    if (count)
        *count = p.total;
    return CK_STATUS_SUCCESS;
}

ck_status ck_exec_infer(ck_exec *e, const float *x, int n, const float **logits) {
    ck_model *m = e->m;
    CK_TRY(e->be->stage(e, x, NULL, n));
    CK_TRY(ck_exec_forward(e, n, 0, ck_exec_logits_node(m) + 1));
    *logits = logits_of(e);
    if (!e->be->download)
        return CK_STATUS_SUCCESS;
    /* the host buffer of the loss gradient holds a batch of logits */
    CK_TRY(e->be->download(e, m->logits_grad, *logits, (size_t)n * m->classes));
    *logits = m->logits_grad;
    return CK_STATUS_SUCCESS;
}
