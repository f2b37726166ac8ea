/* The model's CUDA backend: the device arena, the batch staging, the loss and the optimizer
 * update around the one executor (exec.c), whose node ops run cuDNN conv, cuBLAS dense, the BN /
 * dropout kernels through the public API and the small kernels of layers.cu.
 *
 * The host arrays of the model (params, fixed, opt_m, opt_v) stay the model's state of record
 * for initialization, checkpoints and get/set_weights: ck_gpu_model_pull / _push move them.
 * Everything a training step touches lives in one device arena planned at build: parameters,
 * gradients, optimizer state, activations, gradient ping-pong buffers, BN statistics, the batch
 * staging area and one shared workspace. A step allocates nothing; it uploads the batch, runs on
 * the context's stream and waits once, for the loss. */
#include "comm_internal.h"
#include "exec.h"
#include "memtab.h"
#include "model_internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "bf16.h"
#include "ck_kernels.h"
#include "ck_math.h"
#include "gpu_layers.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct ck_gpu_model {
    void *arena;
    size_t arena_bytes;
    float *params, *grads, *opt_m, *opt_v, *fixed, *fixed_backup, *stats;
    float *acts, *gbuf[2], *logits_grad, *x;
    void *xbf, *dlogits_bf; /* bf16 models: the staged batch and the loss gradient as bf16 */
    int32_t *labels;
    ck_kloss *loss;
    ck_kstep *step; /* the step packet (ck_kstep): what a captured step reads per replay */
    void *ws;       /* shared workspace: conv, dense bias gradients, BN, loss partials */
    size_t ws_bytes;
    char *gnode, *gscratch; /* graph models: per-node and scratch gradients (memtab.h) */
    size_t gscratch_stride;
    float **out;            /* device output of each node (Flatten aliases its input) */
    void **state;           /* per node: its CUDA ops' prepared state (a cuDNN plan), or NULL */
    ck_cuda_graphs *graphs; /* the captured training steps (cuda_graph.c), NULL until needed */
};

void ck_gpu_model_free(ck_model *m) {
    ck_gpu_model *g = m->gpu;
    if (!g)
        return;
    ck_cuda_graphs_free(g->graphs); /* before the arena its graphs point into */
    if (g->state)
        for (int i = 0; i < m->num_nodes; ++i)
            if (g->state[i])
                m->nodes[i].kind->ops[CK_BE_CUDA].release(g->state[i]);
    if (g->arena)
        cudaFree(g->arena);
    ck_host_free(m->ctx, g->state);
    ck_host_free(m->ctx, g->out);
    ck_host_free(m->ctx, g);
    m->gpu = NULL;
}

size_t ck_gpu_model_arena_bytes(const ck_model *m) {
    return m->gpu ? m->gpu->arena_bytes : 0;
}

void ck_gpu_model_drop_graphs(ck_model *m) {
    if (m->gpu)
        ck_cuda_graphs_drop(m->gpu->graphs);
}

int ck_gpu_model_graph_count(const ck_model *m) {
    return m->gpu ? ck_cuda_graphs_count(m->gpu->graphs) : 0;
}

int ck_gpu_model_conv_describe(const ck_model *m, int i, char *buf, size_t len) {
    if (!m->gpu || !m->gpu->state || i < 0 || i >= m->num_nodes ||
        m->nodes[i].type != CK_NODE_CONV || !m->gpu->state[i])
        return -1;
    ck_gconv_describe((const ck_gconv *)m->gpu->state[i], buf, len);
    return 0;
}

/* A bf16 model on this GPU: bf16 tensor-core convolutions and GEMMs need compute capability 8.0
 * (Ampere) or later; every node kind must have a bf16 device path; the logits come from a Dense
 * layer, which writes them in fp32 from bf16 inputs (the loss reads fp32). */
static ck_status bf16_supported(const ck_model *m) {
    if (m->precision != CK_PRECISION_BF16)
        return CK_STATUS_SUCCESS;
    ck_context *ctx = m->ctx;
    int major = 0;
    const cudaError_t e =
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, ctx->ordinal);
    if (e != cudaSuccess)
        return ck_cuda_fail(ctx, e, "cudaDeviceGetAttribute(compute capability)");
    if (major < 8)
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "model: precision bf16 needs a GPU of compute capability 8.0 or later "
                       "(bf16 tensor cores); device %d is %d.x: use fp32 or tf32",
                       ctx->ordinal, major);
    for (int i = 0; i < m->num_nodes; ++i) {
        const ck_node *n = &m->nodes[i];
        if (!n->kind->alias && !n->kind->ops[CK_BE_CUDA].bf16)
            return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                           "model: precision bf16 on the GPU: layer %d (%s) has no bf16 device "
                           "path yet; use fp32 or tf32, or bf16 on the CPU",
                           n->layer, n->kind->name);
    }
    const int ln = ck_exec_logits_node(m);
    if (ln < 0 || m->nodes[ln].kind->type != CK_NODE_DENSE)
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "model: precision bf16 on the GPU: the logits must come from a Dense layer "
                       "(it writes them in fp32 for the loss); this model's last layer is %s",
                       ln < 0 ? "the input" : m->nodes[ln].kind->name);
    return CK_STATUS_SUCCESS;
}

/* Plans the device arena for the model built on the host (m->nodes, sizes, max_batch): the
 * nodes' CUDA ops prepare their state, then the memory table (memtab.c) places every part. */
ck_status ck_gpu_model_build(ck_model *m) {
    ck_context *ctx = m->ctx;
    ck_gpu_model *g = (ck_gpu_model *)ck_host_calloc(ctx, 1, sizeof *g);
    if (!g)
        return ck_host_oom(ctx, "model (its device plan)", sizeof *g);
    m->gpu = g;
    g->out = (float **)ck_host_calloc(ctx, (size_t)m->num_nodes, sizeof *g->out);
    g->state = (void **)ck_host_calloc(ctx, (size_t)m->num_nodes, sizeof *g->state);
    if (!g->out || !g->state) {
        ck_gpu_model_free(m);
        return ck_host_oom(ctx, "model (its device plan)", 2 * sizeof(void *) * m->num_nodes);
    }
    const ck_status bst = bf16_supported(m);
    if (bst != CK_STATUS_SUCCESS) {
        ck_gpu_model_free(m);
        return bst;
    }
    for (int i = 0; i < m->num_nodes; ++i) {
        /* a node's prepare and ws_bytes see the node only: they plan bf16 storage from this */
        m->nodes[i].dev_bf16 = m->precision == CK_PRECISION_BF16;
        const ck_node *n = &m->nodes[i];
        const ck_node_ops *op = &n->kind->ops[CK_BE_CUDA];
        if (!n->kind->alias && !op->fwd) {
            ck_gpu_model_free(m);
            return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                           "model: node %d (layer %d) has no GPU implementation yet", i, n->layer);
        }
        if (op->prepare) {
            ck_status st = op->prepare(ctx, n, m->max_batch, &g->state[i]);
            if (st != CK_STATUS_SUCCESS) {
                ck_gpu_model_free(m);
                return st;
            }
        }
    }
    ck_memtab t;
    ck_memtab_plan(m, CK_BE_CUDA, g->state, &t);
    cudaError_t e = cudaMalloc(&g->arena, t.total);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        g->arena = NULL;
        ck_gpu_model_free(m);
        return ck_fail(ctx, CK_STATUS_ALLOC_FAILED,
                       "model: cudaMalloc of %zu bytes for max_batch %d failed: %s", t.total,
                       m->max_batch, cudaGetErrorString(e));
    }
    g->arena_bytes = t.total;
    m->mem_act_bytes = t.bytes[CK_MEM_ACTS]; /* the device plan's (bf16: 2 bytes an element) */
    char *p = (char *)g->arena;
    g->params = (float *)(p + t.off[CK_MEM_PARAMS]);
    g->grads = (float *)(p + t.off[CK_MEM_GRADS]);
    g->opt_m = (float *)(p + t.off[CK_MEM_OPT_M]);
    g->opt_v = (float *)(p + t.off[CK_MEM_OPT_V]);
    g->fixed = (float *)(p + t.off[CK_MEM_FIXED]);
    g->fixed_backup = (float *)(p + t.off[CK_MEM_FIXED_BACKUP]);
    g->stats = (float *)(p + t.off[CK_MEM_STATS]);
    g->acts = (float *)(p + t.off[CK_MEM_ACTS]);
    g->gbuf[0] = (float *)(p + t.off[CK_MEM_GBUF0]);
    g->gbuf[1] = (float *)(p + t.off[CK_MEM_GBUF1]);
    g->logits_grad = (float *)(p + t.off[CK_MEM_LOGITS_GRAD]);
    g->x = (float *)(p + t.off[CK_MEM_X]);
    g->labels = (int32_t *)(p + t.off[CK_MEM_LABELS]);
    g->loss = (ck_kloss *)(p + t.off[CK_MEM_LOSS]);
    g->step = (ck_kstep *)(p + t.off[CK_MEM_STEP]);
    g->ws = p + t.off[CK_MEM_WS];
    g->ws_bytes = t.bytes[CK_MEM_WS];
    g->gnode = t.bytes[CK_MEM_GNODE] ? p + t.off[CK_MEM_GNODE] : NULL;
    g->gscratch = t.bytes[CK_MEM_GSCRATCH] ? p + t.off[CK_MEM_GSCRATCH] : NULL;
    g->gscratch_stride = t.gscratch_stride;
    g->xbf = t.bytes[CK_MEM_XBF] ? p + t.off[CK_MEM_XBF] : NULL;
    g->dlogits_bf = t.bytes[CK_MEM_DLOGITS_BF] ? p + t.off[CK_MEM_DLOGITS_BF] : NULL;
    for (int i = 0; i < m->num_nodes; ++i) {
        const ck_node *n = &m->nodes[i];
        const int src = m->graph ? n->in[0] : i - 1; /* an alias is set again per call */
        g->out[i] = n->kind->alias ? (src >= 0 ? g->out[src] : g->x)
                                   : (float *)((char *)g->acts + n->act_offset);
    }
    e = cudaMemsetAsync(g->arena, 0, t.total, (cudaStream_t)ctx->stream);
    if (e != cudaSuccess) {
        ck_gpu_model_free(m);
        return ck_cuda_fail(ctx, e, "model: clearing the device arena");
    }
    return CK_STATUS_SUCCESS;
}

/* Host state of record -> device (after init, set_weights, load). */
ck_status ck_gpu_model_push(ck_model *m) {
    ck_gpu_model *g = m->gpu;
    cudaStream_t s = (cudaStream_t)m->ctx->stream;
    const size_t pb = sizeof(float) * m->num_params, fb = sizeof(float) * m->num_fixed;
    CK_EXEC_CUDA(m->ctx, cudaMemcpyAsync(g->params, m->params, pb, cudaMemcpyHostToDevice, s),
                 "model: upload");
    CK_EXEC_CUDA(m->ctx, cudaMemcpyAsync(g->opt_m, m->opt_m, pb, cudaMemcpyHostToDevice, s),
                 "model: upload");
    CK_EXEC_CUDA(m->ctx, cudaMemcpyAsync(g->opt_v, m->opt_v, pb, cudaMemcpyHostToDevice, s),
                 "model: upload");
    if (fb)
        CK_EXEC_CUDA(m->ctx, cudaMemcpyAsync(g->fixed, m->fixed, fb, cudaMemcpyHostToDevice, s),
                     "model: upload");
    CK_EXEC_CUDA(m->ctx, cudaStreamSynchronize(s), "model: upload");
    return CK_STATUS_SUCCESS;
}

/* Device -> host state of record (before get_weights, save). */
ck_status ck_gpu_model_pull(ck_model *m) {
    ck_gpu_model *g = m->gpu;
    cudaStream_t s = (cudaStream_t)m->ctx->stream;
    const size_t pb = sizeof(float) * m->num_params, fb = sizeof(float) * m->num_fixed;
    CK_EXEC_CUDA(m->ctx, cudaMemcpyAsync(m->params, g->params, pb, cudaMemcpyDeviceToHost, s),
                 "model: download");
    CK_EXEC_CUDA(m->ctx, cudaMemcpyAsync(m->opt_m, g->opt_m, pb, cudaMemcpyDeviceToHost, s),
                 "model: download");
    CK_EXEC_CUDA(m->ctx, cudaMemcpyAsync(m->opt_v, g->opt_v, pb, cudaMemcpyDeviceToHost, s),
                 "model: download");
    if (fb)
        CK_EXEC_CUDA(m->ctx, cudaMemcpyAsync(m->fixed, g->fixed, fb, cudaMemcpyDeviceToHost, s),
                     "model: download");
    CK_EXEC_CUDA(m->ctx, cudaStreamSynchronize(s), "model: download");
    return CK_STATUS_SUCCESS;
}

/* ---- the CUDA backend of the executor (exec.h) ---- */

static ck_status cuda_copy(ck_context *ctx, void *dst, const void *src, size_t count, int dt) {
    CK_EXEC_CUDA(ctx,
                 cudaMemcpyAsync(dst, src, ck_kdt_bytes(dt, count), cudaMemcpyDeviceToDevice,
                                 (cudaStream_t)ctx->stream),
                 "device copy");
    return CK_STATUS_SUCCESS;
}

/* the batch to the staging area that e->x and e->labels point at */
static ck_status cuda_stage(ck_exec *e, const float *x, const int32_t *labels, int n) {
    const ck_model *m = e->m;
    CK_TRY(ck_cudnn_home(e->ctx)); /* inference and eager steps after a failed capture */
    cudaStream_t s = (cudaStream_t)e->ctx->stream;
    CK_EXEC_CUDA(e->ctx,
                 cudaMemcpyAsync((float *)e->x, x,
                                 sizeof(float) * (size_t)n * m->in_h * m->in_w * m->in_c,
                                 cudaMemcpyHostToDevice, s),
                 "model: batch upload");
    if (labels)
        CK_EXEC_CUDA(e->ctx,
                     cudaMemcpyAsync((int32_t *)e->labels, labels, sizeof(int32_t) * (size_t)n,
                                     cudaMemcpyHostToDevice, s),
                     "model: label upload");
    return CK_STATUS_SUCCESS;
}

static ck_status cuda_loss(const ck_exec *e, int n, const float *logits, ck_kloss *out) {
    CK_EXEC_CUDA(e->ctx,
                 ck_cuda_softmax_xent(n, e->m->classes, logits, e->labels, e->logits_grad, out,
                                      e->ws, e->ctx->stream),
                 "softmax cross-entropy");
    return CK_STATUS_SUCCESS;
}

/* a flag on the device: the update kernels read it, the host after its one wait */
static ck_status cuda_flag_nonfinite(const ck_exec *e, ck_kloss *out, long long *bad_index) {
    *bad_index = -1;
    CK_EXEC_CUDA(e->ctx, cudaMemsetAsync(&out->nonfinite, 0, sizeof(int), e->ctx->stream),
                 "model: gradient check");
    CK_EXEC_CUDA(
        e->ctx, ck_cuda_flag_nonfinite(e->grads, e->m->num_params, &out->nonfinite, e->ctx->stream),
        "model: gradient check");
    return CK_STATUS_SUCCESS;
}

/* One optimizer update of every parameter range, as the CPU's; guard: see ck_cuda_adam. Adam's
 * alpha is read from the step packet (the same value as the one computed here). */
static ck_status cuda_update(const ck_exec *e, const ck_kloss *guard) {
    const ck_model *m = e->m;
    const ck_optimizer_desc *o = &m->opt;
    void *s = e->ctx->stream;
    /* Adam's alpha is the step packet's (e->step), computed on the host once per step by
     * ck_exec_step_packet; the argument is only the kernel's value without a packet */
    const float alpha =
        e->step ? 0.0f : ck_adam_alpha(o->learning_rate, o->beta1, o->beta2, m->step + 1);
    size_t off, cnt;
    float wd;
    for (int cur = 0; ck_model_next_update_range(m, &cur, &off, &cnt, &wd);) {
        const float decay = wd > 0.0f ? o->learning_rate * wd : 0.0f;
        const int err =
            o->type == CK_OPT_ADAM
                ? ck_cuda_adam(e->params + off, e->grads + off, e->opt_m + off, e->opt_v + off, cnt,
                               alpha, e->step, o->beta1, o->beta2, o->epsilon, decay, guard, s)
            : o->type == CK_OPT_ADADELTA
                ? ck_cuda_adadelta(e->params + off, e->grads + off, e->opt_v + off, e->opt_m + off,
                                   cnt, o->learning_rate, o->rho, o->epsilon, decay, guard, s)
            : o->type == CK_OPT_RMSPROP
                ? ck_cuda_rmsprop(e->params + off, e->grads + off, e->opt_v + off, e->opt_m + off,
                                  cnt, o->learning_rate, o->rho, o->epsilon, o->momentum,
                                  o->centered, decay, guard, s)
                : ck_cuda_sgd(e->params + off, e->grads + off, e->opt_m + off, cnt,
                              o->learning_rate, o->momentum, o->nesterov, decay, guard, s);
        if (err)
            return ck_cuda_fail(e->ctx, err, "optimizer update");
    }
    return CK_STATUS_SUCCESS;
}

static ck_status cuda_read_loss(const ck_exec *e, const ck_kloss *src, ck_kloss *host) {
    cudaStream_t s = (cudaStream_t)e->ctx->stream;
    /* a data-parallel step waits on the other ranks' collectives under the deadline */
    if (e->comm)
        CK_TRY(ck_comm_sync(e->comm, "training step"));
    cudaError_t err = cudaMemcpyAsync(host, src, sizeof *host, cudaMemcpyDeviceToHost, s);
    if (err == cudaSuccess)
        err = cudaStreamSynchronize(s);
    if (err != cudaSuccess)
        return ck_cuda_fail(e->ctx, err, "model: training step");
    return CK_STATUS_SUCCESS;
}

static ck_status cuda_download(const ck_exec *e, float *host, const float *src, size_t count) {
    cudaStream_t s = (cudaStream_t)e->ctx->stream;
    CK_EXEC_CUDA(e->ctx,
                 cudaMemcpyAsync(host, src, sizeof(float) * count, cudaMemcpyDeviceToHost, s),
                 "model: logits download");
    CK_EXEC_CUDA(e->ctx, cudaStreamSynchronize(s), "model: inference");
    return CK_STATUS_SUCCESS;
}

/* best effort: the step already failed */
static void cuda_restore(const ck_exec *e) {
    cudaStream_t s = (cudaStream_t)e->ctx->stream;
    (void)cudaMemcpyAsync(e->fixed, e->fixed_backup, sizeof(float) * e->m->num_fixed,
                          cudaMemcpyDeviceToDevice, s);
    (void)cudaStreamSynchronize(s);
}

static ck_status cuda_add(const ck_exec *e, void *dst, const void *a, const void *b, size_t count,
                          int dt) {
    CK_EXEC_CUDA(e->ctx, ck_cuda_add(dst, a, b, count, dt, e->ctx->stream), "add");
    return CK_STATUS_SUCCESS;
}

static ck_status cuda_pack_bf16(const ck_exec *e, void *dst, const float *src, size_t count) {
    CK_EXEC_CUDA(e->ctx, ck_cuda_bf16_pack(src, (uint16_t *)dst, count, e->ctx->stream),
                 "bf16 pack");
    return CK_STATUS_SUCCESS;
}

static ck_status cuda_scale(const ck_exec *e, float *x, size_t count, float sc) {
    CK_EXEC_CUDA(e->ctx, ck_cuda_scale(x, count, sc, e->ctx->stream), "scale");
    return CK_STATUS_SUCCESS;
}

_Static_assert(CK_KLOSS_RANK_FAILED > 0 && CK_KLOSS_RANK_FAILED < 0x80,
               "the verdict's memset byte must give a positive int >= CK_KLOSS_RANK_FAILED");

static ck_status cuda_mark_failed(const ck_exec *e, ck_kloss *out) {
    /* every byte 0x02: CK_KLOSS_RANK_FAILED or more, and no pageable copy that could wait for
     * the stream (and so for the other ranks) without a deadline */
    CK_EXEC_CUDA(e->ctx,
                 cudaMemsetAsync(&out->nonfinite, CK_KLOSS_RANK_FAILED, sizeof out->nonfinite,
                                 (cudaStream_t)e->ctx->stream),
                 "model: step verdict");
    return CK_STATUS_SUCCESS;
}

/* A kernel with the values as arguments: nothing on the host has to outlive the call. */
static ck_status cuda_begin_step(ck_exec *e) {
    const ck_kstep k = ck_exec_step_packet(e->m);
    CK_EXEC_CUDA(e->ctx, ck_cuda_step_set(e->step, k.step, k.adam_alpha, e->ctx->stream),
                 "model: step packet");
    return CK_STATUS_SUCCESS;
}

/* The device part, replayed as a CUDA graph where cuda_graph.c can. */
static ck_status cuda_run_step(ck_exec *e, int n, int capturable,
                               ck_status (*body)(ck_exec *, void *), void *arg) {
    return ck_cuda_graph_run(&e->m->gpu->graphs, e, n, capturable, body, arg);
}

static const ck_backend backend_cuda = {
    .id = CK_BE_CUDA,
    .name = "cuda",
    .synchronous = 0,
    .copy = cuda_copy,
    .pack_bf16 = cuda_pack_bf16,
    .stage = cuda_stage,
    .loss = cuda_loss,
    .flag_nonfinite = cuda_flag_nonfinite,
    .update = cuda_update,
    .read_loss = cuda_read_loss,
    .download = cuda_download,
    .restore = cuda_restore,
    .add = cuda_add,
    .scale = cuda_scale,
    .mark_failed = cuda_mark_failed,
    .begin_step = cuda_begin_step,
    .run_step = cuda_run_step,
};

/* The executor over the device arena; the batch is staged into g->x. */
ck_exec ck_exec_cuda(ck_model *m) {
    ck_gpu_model *g = m->gpu;
    ck_exec e;
    memset(&e, 0, sizeof e);
    e.m = m;
    e.ctx = m->ctx;
    e.be = &backend_cuda;
    e.params = g->params;
    e.grads = g->grads;
    e.opt_m = g->opt_m;
    e.opt_v = g->opt_v;
    e.fixed = g->fixed;
    e.fixed_backup = g->fixed_backup;
    e.stats = g->stats;
    e.x = g->x;
    e.labels = g->labels;
    e.logits_grad = g->logits_grad;
    e.loss = g->loss;
    e.step = g->step;
    e.outs = g->out;
    e.state = g->state;
    e.gbuf[0] = g->gbuf[0];
    e.gbuf[1] = g->gbuf[1];
    e.ws = g->ws;
    e.ws_bytes = g->ws_bytes;
    e.bn_relu_fused = 1; /* F1: the ReLU in the BN kernel, one pass */
    e.comm = m->comm;
    e.gnode = g->gnode;
    e.gscratch = g->gscratch;
    e.gscratch_stride = g->gscratch_stride;
    e.xbf = g->xbf;
    e.dlogits_bf = g->dlogits_bf;
    return e;
}

/* ---- a device-resident training set (model_internal.h) ---- */

struct ck_gpu_data {
    ck_context *ctx;
    float *images;
    int32_t *labels, *perm;
    int count;
    size_t per;
};

void ck_gpu_data_free(ck_gpu_data *d) {
    if (!d)
        return;
    /* cudaFree waits for the kernels that still read the data */
    (void)cudaFree(d->images);
    (void)cudaFree(d->labels);
    (void)cudaFree(d->perm);
    ck_host_free(d->ctx, d);
}

ck_status ck_gpu_data_create(ck_model *m, const float *images, const int32_t *labels, int count,
                             ck_gpu_data **out) {
    ck_context *ctx = m->ctx;
    ck_gpu_data *d = (ck_gpu_data *)ck_host_calloc(ctx, 1, sizeof *d);
    if (!d)
        return ck_host_oom(ctx, "fit: device data", sizeof *d);
    d->ctx = ctx;
    d->count = count;
    d->per = (size_t)m->in_h * m->in_w * m->in_c;
    const size_t xb = sizeof(float) * d->per * (size_t)count, yb = sizeof(int32_t) * count;
    cudaError_t e = cudaMalloc((void **)&d->images, xb);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&d->labels, yb);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&d->perm, yb);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        ck_gpu_data_free(d);
        return ck_fail(ctx, CK_STATUS_ALLOC_FAILED,
                       "fit: cudaMalloc of %zu bytes for the training set failed: %s", xb + 2 * yb,
                       cudaGetErrorString(e));
    }
    cudaStream_t s = (cudaStream_t)ctx->stream;
    e = cudaMemcpyAsync(d->images, images, xb, cudaMemcpyHostToDevice, s);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(d->labels, labels, yb, cudaMemcpyHostToDevice, s);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(s);
    if (e != cudaSuccess) {
        ck_gpu_data_free(d);
        return ck_cuda_fail(ctx, e, "fit: training set upload");
    }
    *out = d;
    return CK_STATUS_SUCCESS;
}

ck_status ck_gpu_data_order(ck_model *m, ck_gpu_data *d, const int32_t *perm) {
    /* in stream order: after the previous epoch's last gather */
    CK_EXEC_CUDA(m->ctx,
                 cudaMemcpyAsync(d->perm, perm, sizeof(int32_t) * d->count, cudaMemcpyHostToDevice,
                                 (cudaStream_t)m->ctx->stream),
                 "fit: epoch order upload");
    return CK_STATUS_SUCCESS;
}

ck_status ck_gpu_data_stage(ck_model *m, const ck_gpu_data *d, int start, int n) {
    ck_gpu_model *g = m->gpu;
    CK_EXEC_CUDA(m->ctx,
                 ck_cuda_gather_rows(d->images, d->labels, d->perm, start, n, d->per, g->x,
                                     g->labels, m->ctx->stream),
                 "fit: batch gather");
    return CK_STATUS_SUCCESS;
}

/* ck_model_node_out / _set on the device: node i's output through a host stage, bf16 words
 * widened exactly (or rounded on the way in). */
ck_status ck_gpu_node_io(ck_model *m, int i, int n, float *host, int upload) {
    ck_exec e = ck_exec_cuda(m);
    const ck_node *nd = &m->nodes[i];
    return ck_gpu_buf_io(m, ck_exec_out(&e, i), ck_exec_out_dt(&e, i),
                         (size_t)n * nd->oh * nd->ow * nd->oc, host, upload);
}

ck_status ck_gpu_buf_io(ck_model *m, void *dev, int dt, size_t count, float *host, int upload) {
    ck_context *ctx = m->ctx;
    const size_t bytes = ck_kdt_bytes(dt, count);
    uint16_t *w = dt == CK_KDT_BF16 ? (uint16_t *)ck_host_alloc(ctx, bytes) : NULL;
    if (dt == CK_KDT_BF16 && !w)
        return ck_host_oom(ctx, "node output stage", bytes);
    void *stage = w ? (void *)w : (void *)host;
    /* on the context's stream, then waited for: a pageable copy may return before its DMA
     * lands, and a non-blocking stream would not wait for the legacy one */
    cudaStream_t s = (cudaStream_t)ctx->stream;
    cudaError_t err = cudaStreamSynchronize(s);
    if (err == cudaSuccess && upload) {
        if (w)
            ck_bf16_pack_buffer(host, w, count);
        err = cudaMemcpyAsync(dev, stage, bytes, cudaMemcpyHostToDevice, s);
        if (err == cudaSuccess)
            err = cudaStreamSynchronize(s);
    } else if (err == cudaSuccess) {
        err = cudaMemcpyAsync(stage, dev, bytes, cudaMemcpyDeviceToHost, s);
        if (err == cudaSuccess)
            err = cudaStreamSynchronize(s);
        if (err == cudaSuccess && w)
            ck_bf16_unpack_buffer(w, host, count);
    }
    ck_host_free(ctx, w);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return ck_cuda_fail(ctx, err, upload ? "node output upload" : "node output download");
    }
    return CK_STATUS_SUCCESS;
}

#else
/* CPU-only build: a model never has a device side (ck_model_build refuses CUDA contexts). */
void ck_gpu_model_free(ck_model *m) {
    (void)m;
}
size_t ck_gpu_model_arena_bytes(const ck_model *m) {
    (void)m;
    return 0;
}
int ck_gpu_model_conv_describe(const ck_model *m, int i, char *buf, size_t len) {
    (void)m, (void)i, (void)buf, (void)len;
    return -1;
}
static ck_status no_cuda(ck_model *m) {
    return ck_fail(m->ctx, CK_STATUS_NOT_SUPPORTED, "model: this build has no CUDA backend");
}
ck_status ck_gpu_model_build(ck_model *m) {
    return no_cuda(m);
}
void ck_gpu_model_drop_graphs(ck_model *m) {
    (void)m;
}
int ck_gpu_model_graph_count(const ck_model *m) {
    (void)m;
    return 0;
}
ck_status ck_gpu_model_push(ck_model *m) {
    return no_cuda(m);
}
ck_status ck_gpu_model_pull(ck_model *m) {
    return no_cuda(m);
}
/* never reached: without CUDA no model has a device side */
ck_exec ck_exec_cuda(ck_model *m) {
    return ck_exec_cpu(m, NULL);
}
ck_status ck_gpu_data_create(ck_model *m, const float *images, const int32_t *labels, int count,
                             ck_gpu_data **out) {
    (void)images, (void)labels, (void)count, (void)out;
    return no_cuda(m);
}
ck_status ck_gpu_data_order(ck_model *m, ck_gpu_data *d, const int32_t *perm) {
    (void)d, (void)perm;
    return no_cuda(m);
}
ck_status ck_gpu_data_stage(ck_model *m, const ck_gpu_data *d, int start, int n) {
    (void)d, (void)start, (void)n;
    return no_cuda(m);
}
ck_status ck_gpu_node_io(ck_model *m, int i, int n, float *host, int upload) {
    (void)i, (void)n, (void)host, (void)upload;
    return no_cuda(m);
}
ck_status ck_gpu_buf_io(ck_model *m, void *dev, int dt, size_t count, float *host, int upload) {
    (void)dev, (void)dt, (void)count, (void)host, (void)upload;
    return no_cuda(m);
}
void ck_gpu_data_free(ck_gpu_data *d) {
    (void)d;
}
#endif
