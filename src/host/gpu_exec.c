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
#include "exec.h"
#include "model_internal.h"

#ifdef CNNKIT_HAVE_CUDA
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
    int32_t *labels;
    ck_kloss *loss;
    void *ws; /* shared workspace: conv, dense bias gradients, BN, loss partials */
    size_t ws_bytes;
    float **out;  /* device output of each node (Flatten aliases its input) */
    void **state; /* per node: its CUDA ops' prepared state (a cuDNN plan), or NULL */
};

static size_t al256(size_t b) {
    return (b + 255u) & ~(size_t)255u;
}

void ck_gpu_model_free(ck_model *m) {
    ck_gpu_model *g = m->gpu;
    if (!g)
        return;
    if (g->state)
        for (int i = 0; i < m->num_nodes; ++i)
            if (g->state[i])
                m->nodes[i].kind->ops[CK_BE_CUDA].release(g->state[i]);
    if (g->arena)
        cudaFree(g->arena);
    free(g->state);
    free(g->out);
    free(g);
    m->gpu = NULL;
}

size_t ck_gpu_model_arena_bytes(const ck_model *m) {
    return m->gpu ? m->gpu->arena_bytes : 0;
}

int ck_gpu_model_conv_describe(const ck_model *m, int i, char *buf, size_t len) {
    if (!m->gpu || !m->gpu->state || i < 0 || i >= m->num_nodes ||
        m->nodes[i].type != CK_NODE_CONV || !m->gpu->state[i])
        return -1;
    ck_gconv_describe((const ck_gconv *)m->gpu->state[i], buf, len);
    return 0;
}

static ck_status cuda_copy(ck_context *ctx, float *dst, const float *src, size_t count) {
    CK_EXEC_CUDA(ctx,
                 cudaMemcpyAsync(dst, src, count * sizeof(float), cudaMemcpyDeviceToDevice,
                                 (cudaStream_t)ctx->stream),
                 "device copy");
    return CK_STATUS_SUCCESS;
}

static const ck_backend backend_cuda = {CK_BE_CUDA, "cuda", cuda_copy};

/* Plans the device arena for the model built on the host (m->nodes, sizes, max_batch). */
ck_status ck_gpu_model_build(ck_model *m) {
    ck_context *ctx = m->ctx;
    ck_gpu_model *g = (ck_gpu_model *)calloc(1, sizeof *g);
    if (!g)
        return ck_fail(ctx, CK_STATUS_ALLOC_FAILED, "model: out of host memory");
    m->gpu = g;
    g->out = (float **)calloc((size_t)m->num_nodes, sizeof *g->out);
    g->state = (void **)calloc((size_t)m->num_nodes, sizeof *g->state);
    if (!g->out || !g->state) {
        ck_gpu_model_free(m);
        return ck_fail(ctx, CK_STATUS_ALLOC_FAILED, "model: out of host memory");
    }
    const int B = m->max_batch;
    /* activation buffers: each starts on a 256-byte boundary (the host plan's act_offset packs
     * them): cuDNN and the float4 paths of the kernels want aligned pointers */
    size_t *act_at = (size_t *)calloc((size_t)m->num_nodes, sizeof *act_at);
    if (!act_at) {
        ck_gpu_model_free(m);
        return ck_fail(ctx, CK_STATUS_ALLOC_FAILED, "model: out of host memory");
    }
    size_t ws = ck_cuda_xent_workspace_bytes(B), nact = 0,
           maxact = (size_t)m->in_h * m->in_w * m->in_c;
    for (int i = 0; i < m->num_nodes; ++i) {
        const ck_node *n = &m->nodes[i];
        size_t need = 0;
        act_at[i] = nact;
        if (!n->kind->alias)
            nact += al256(sizeof(float) * n->oh * n->ow * n->oc * (size_t)B);
        const size_t o = (size_t)n->oh * n->ow * n->oc;
        if (o > maxact)
            maxact = o;
        const ck_node_ops *op = &n->kind->ops[CK_BE_CUDA];
        if (!n->kind->alias && !op->fwd) {
            free(act_at);
            ck_gpu_model_free(m);
            return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                           "model: node %d (layer %d) has no GPU implementation yet", i, n->layer);
        }
        if (op->prepare) {
            ck_status st = op->prepare(ctx, n, B, &g->state[i]);
            if (st != CK_STATUS_SUCCESS) {
                free(act_at);
                ck_gpu_model_free(m);
                return st;
            }
        }
        if (op->ws_bytes)
            need = op->ws_bytes(ctx, n, B, g->state[i]);
        if (need > ws)
            ws = need;
    }
    const size_t P = m->num_params ? m->num_params : 1, F = m->num_fixed ? m->num_fixed : 1;
    const size_t nstats = m->num_stats;
    const size_t sizes[] = {4 * P,
                            4 * P,
                            4 * P,
                            4 * P,
                            4 * F,
                            4 * F,
                            4 * (nstats ? nstats : 1),
                            nact ? nact : 4,
                            4 * maxact * B,
                            4 * maxact * B,
                            4 * (size_t)m->classes * B,
                            4 * (size_t)m->in_h * m->in_w * m->in_c * B,
                            4 * (size_t)B,
                            sizeof(ck_kloss),
                            ws};
    const int parts = (int)(sizeof sizes / sizeof *sizes);
    size_t total = 0;
    for (int k = 0; k < parts; ++k)
        total += al256(sizes[k]);
    cudaError_t e = cudaMalloc(&g->arena, total);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        g->arena = NULL;
        free(act_at);
        ck_gpu_model_free(m);
        return ck_fail(ctx, CK_STATUS_ALLOC_FAILED,
                       "model: cudaMalloc of %zu bytes for max_batch %d failed: %s", total, B,
                       cudaGetErrorString(e));
    }
    g->arena_bytes = total;
    char *p = (char *)g->arena;
    void *ptrs[15];
    for (int k = 0; k < parts; ++k) {
        ptrs[k] = p;
        p += al256(sizes[k]);
    }
    g->params = (float *)ptrs[0];
    g->grads = (float *)ptrs[1];
    g->opt_m = (float *)ptrs[2];
    g->opt_v = (float *)ptrs[3];
    g->fixed = (float *)ptrs[4];
    g->fixed_backup = (float *)ptrs[5];
    g->stats = (float *)ptrs[6];
    g->acts = (float *)ptrs[7];
    g->gbuf[0] = (float *)ptrs[8];
    g->gbuf[1] = (float *)ptrs[9];
    g->logits_grad = (float *)ptrs[10];
    g->x = (float *)ptrs[11];
    g->labels = (int32_t *)ptrs[12];
    g->loss = (ck_kloss *)ptrs[13];
    g->ws = ptrs[14];
    g->ws_bytes = ws;
    for (int i = 0; i < m->num_nodes; ++i) {
        const ck_node *n = &m->nodes[i];
        g->out[i] =
            n->kind->alias ? (i ? g->out[i - 1] : g->x) : (float *)((char *)g->acts + act_at[i]);
    }
    free(act_at);
    e = cudaMemsetAsync(g->arena, 0, total, (cudaStream_t)ctx->stream);
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

/* The executor over the device arena; the batch is the staged g->x. */
static ck_exec cuda_exec(ck_model *m) {
    ck_gpu_model *g = m->gpu;
    ck_exec e;
    memset(&e, 0, sizeof e);
    e.m = m;
    e.ctx = m->ctx;
    e.be = &backend_cuda;
    e.params = g->params;
    e.grads = g->grads;
    e.fixed = g->fixed;
    e.stats = g->stats;
    e.x = g->x;
    e.outs = g->out;
    e.state = g->state;
    e.gbuf[0] = g->gbuf[0];
    e.gbuf[1] = g->gbuf[1];
    e.ws = g->ws;
    e.ws_bytes = g->ws_bytes;
    e.bn_relu_fused = 1; /* F1: the ReLU in the BN kernel, one pass */
    return e;
}

static ck_status gforward(ck_model *m, int batch, int training, int upto) {
    const ck_exec e = cuda_exec(m);
    return ck_exec_forward(&e, batch, training, upto);
}

static ck_status gbackward(ck_model *m, int batch, int from, float *dy0) {
    const ck_exec e = cuda_exec(m);
    return ck_exec_backward(&e, batch, from, dy0);
}

static int glogits_node(const ck_model *m) {
    return m->num_nodes - 1 - (m->softmax_last ? 1 : 0);
}

static const float *glogits(const ck_model *m) {
    const int li = glogits_node(m);
    return li < 0 ? m->gpu->x : m->gpu->out[li];
}

static ck_status stage(ck_model *m, const float *x, const int32_t *labels, int n) {
    ck_gpu_model *g = m->gpu;
    cudaStream_t s = (cudaStream_t)m->ctx->stream;
    CK_EXEC_CUDA(m->ctx,
                 cudaMemcpyAsync(g->x, x, sizeof(float) * (size_t)n * m->in_h * m->in_w * m->in_c,
                                 cudaMemcpyHostToDevice, s),
                 "model: batch upload");
    if (labels)
        CK_EXEC_CUDA(m->ctx,
                     cudaMemcpyAsync(g->labels, labels, sizeof(int32_t) * (size_t)n,
                                     cudaMemcpyHostToDevice, s),
                     "model: label upload");
    return CK_STATUS_SUCCESS;
}

/* Enqueues a training step's forward, loss, backward and gradient check on the stream (after a
 * copy of the BN state; *backed_up says whether that copy was enqueued); nothing waits. */
static ck_status genqueue_grads(ck_model *m, const float *x, const int32_t *labels, int n,
                                int *backed_up) {
    ck_gpu_model *g = m->gpu;
    ck_context *ctx = m->ctx;
    cudaStream_t s = (cudaStream_t)ctx->stream;
    const size_t fb = sizeof(float) * m->num_fixed;
    *backed_up = 0;
    if (fb)
        CK_EXEC_CUDA(ctx,
                     cudaMemcpyAsync(g->fixed_backup, g->fixed, fb, cudaMemcpyDeviceToDevice, s),
                     "model: BN state backup");
    *backed_up = 1;
    CK_TRY(stage(m, x, labels, n));
    const int ln = glogits_node(m);
    CK_TRY(gforward(m, n, 1, ln + 1));
    CK_EXEC_CUDA(ctx,
                 ck_cuda_softmax_xent(n, m->classes, glogits(m), g->labels, g->logits_grad, g->loss,
                                      g->ws, s),
                 "softmax cross-entropy");
    if (ln >= 0)
        CK_TRY(gbackward(m, n, ln, g->logits_grad));
    /* as the CPU step: a non-finite gradient fails the step before any parameter changes */
    CK_EXEC_CUDA(ctx, cudaMemsetAsync(&g->loss->nonfinite, 0, sizeof(int), s),
                 "model: gradient check");
    CK_EXEC_CUDA(ctx, ck_cuda_flag_nonfinite(g->grads, m->num_params, &g->loss->nonfinite, s),
                 "model: gradient check");
    return CK_STATUS_SUCCESS;
}

/* Waits for the step enqueued before (st: how enqueuing went), reads the loss and judges the
 * step; a failed step gets its BN state back (when the backup was taken). */
static ck_status gfinish_step(ck_model *m, ck_status st, int backed_up, double *loss_sum,
                              int *correct) {
    ck_gpu_model *g = m->gpu;
    ck_context *ctx = m->ctx;
    cudaStream_t s = (cudaStream_t)ctx->stream;
    const size_t fb = sizeof(float) * m->num_fixed;
    ck_kloss l = {0.0, 0, 0};
    if (st == CK_STATUS_SUCCESS) {
        cudaError_t e = cudaMemcpyAsync(&l, g->loss, sizeof l, cudaMemcpyDeviceToHost, s);
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(s);
        if (e != cudaSuccess)
            st = ck_cuda_fail(ctx, e, "model: training step");
    }
    if (st == CK_STATUS_SUCCESS && !isfinite(l.loss_sum))
        st = ck_fail(ctx, CK_STATUS_BAD_PARAM,
                     "x: the loss is not finite at step %lld (NaN/Inf in the inputs or diverged "
                     "training); the model was not changed",
                     m->step);
    if (st == CK_STATUS_SUCCESS && l.nonfinite)
        st = ck_fail(ctx, CK_STATUS_BAD_PARAM,
                     "model: a gradient is not finite at step %lld (diverged training); the model "
                     "was not changed",
                     m->step);
    if (st != CK_STATUS_SUCCESS) {
        if (fb && backed_up) { /* best effort: the BN state of before the step */
            (void)cudaMemcpyAsync(g->fixed, g->fixed_backup, fb, cudaMemcpyDeviceToDevice, s);
            (void)cudaStreamSynchronize(s);
        }
        return st;
    }
    if (loss_sum)
        *loss_sum = l.loss_sum;
    if (correct)
        *correct = l.correct;
    return CK_STATUS_SUCCESS;
}

ck_status ck_gpu_loss_and_grads(ck_model *m, const float *x, const int32_t *labels, int n,
                                double *loss_sum, int *correct) {
    int backed_up = 0;
    const ck_status st = genqueue_grads(m, x, labels, n, &backed_up);
    return gfinish_step(m, st, backed_up, loss_sum, correct);
}

static ck_status genqueue_optimizer(ck_model *m, const ck_kloss *guard);

/* A whole training step with one wait: forward, loss, backward, gradient check and the optimizer
 * update are enqueued together; the update kernels read the step's verdict on the device (a
 * non-finite loss or gradient: they change nothing), then the host waits once for the loss. */
ck_status ck_gpu_train_step(ck_model *m, const float *x, const int32_t *labels, int n,
                            double *loss_sum, int *correct) {
    int backed_up = 0;
    ck_status st = genqueue_grads(m, x, labels, n, &backed_up);
    if (st == CK_STATUS_SUCCESS)
        st = genqueue_optimizer(m, m->gpu->loss);
    return gfinish_step(m, st, backed_up, loss_sum, correct);
}

/* One optimizer update of every parameter group, as the CPU's optimizer_step (train.c); guard:
 * see ck_cuda_adam (NULL: unconditional). */
static ck_status genqueue_optimizer(ck_model *m, const ck_kloss *guard) {
    ck_gpu_model *g = m->gpu;
    const ck_optimizer_desc *o = &m->opt;
    void *s = m->ctx->stream;
    const float alpha = ck_adam_alpha(o->learning_rate, o->beta1, o->beta2, m->step + 1);
    size_t off, cnt;
    float wd;
    for (int cur = 0; ck_model_next_update_range(m, &cur, &off, &cnt, &wd);) {
        const float decay = wd > 0.0f ? o->learning_rate * wd : 0.0f;
        const int e =
            o->type == CK_OPT_ADAM
                ? ck_cuda_adam(g->params + off, g->grads + off, g->opt_m + off, g->opt_v + off, cnt,
                               alpha, o->beta1, o->beta2, o->epsilon, decay, guard, s)
                : ck_cuda_sgd(g->params + off, g->grads + off, g->opt_m + off, cnt,
                              o->learning_rate, o->momentum, o->nesterov, decay, guard, s);
        if (e)
            return ck_cuda_fail(m->ctx, e, "optimizer update");
    }
    return CK_STATUS_SUCCESS;
}

ck_status ck_gpu_optimizer_step(ck_model *m) {
    return genqueue_optimizer(m, NULL);
}

/* Inference-mode logits of n samples into host memory (n x classes). */
ck_status ck_gpu_infer(ck_model *m, const float *x, int n, float *logits_host) {
    ck_context *ctx = m->ctx;
    cudaStream_t s = (cudaStream_t)ctx->stream;
    CK_TRY(stage(m, x, NULL, n));
    CK_TRY(gforward(m, n, 0, glogits_node(m) + 1));
    CK_EXEC_CUDA(ctx,
                 cudaMemcpyAsync(logits_host, glogits(m), sizeof(float) * (size_t)n * m->classes,
                                 cudaMemcpyDeviceToHost, s),
                 "model: logits download");
    CK_EXEC_CUDA(ctx, cudaStreamSynchronize(s), "model: inference");
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
ck_status ck_gpu_model_push(ck_model *m) {
    return no_cuda(m);
}
ck_status ck_gpu_model_pull(ck_model *m) {
    return no_cuda(m);
}
ck_status ck_gpu_loss_and_grads(ck_model *m, const float *x, const int32_t *labels, int n,
                                double *loss_sum, int *correct) {
    (void)x, (void)labels, (void)n, (void)loss_sum, (void)correct;
    return no_cuda(m);
}
ck_status ck_gpu_optimizer_step(ck_model *m) {
    return no_cuda(m);
}
ck_status ck_gpu_train_step(ck_model *m, const float *x, const int32_t *labels, int n,
                            double *loss_sum, int *correct) {
    (void)x, (void)labels, (void)n, (void)loss_sum, (void)correct;
    return no_cuda(m);
}
ck_status ck_gpu_infer(ck_model *m, const float *x, int n, float *logits_host) {
    (void)x, (void)n, (void)logits_host;
    return no_cuda(m);
}
#endif
