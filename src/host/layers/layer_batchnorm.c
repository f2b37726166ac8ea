/* BatchNormalization over the channels (Keras: momentum 0.99, epsilon 1e-3). */
#include "cnnkit/comm.h"
#include "exec.h"
#include "layer.h"
#include "model_internal.h"

static void bn_defaults(ck_layer_desc *d) {
    d->momentum = 0.99f;
    d->epsilon = 1e-3f;
}

static ck_status bn_check(ck_context *ctx, const ck_layer_desc *d, int index) {
    if (!(d->momentum >= 0.0f && d->momentum <= 1.0f) || !(d->epsilon > 0.0f))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "layer %d (BatchNormalization): momentum must be in [0, 1] and epsilon > 0",
                       index);
    return CK_STATUS_SUCCESS;
}

/* gamma 1, beta 0 (trainable); moving mean 0 and variance 1 (fixed) */
static int bn_params(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                     ck_param_spec *spec) {
    (void)d;
    (void)in;
    const size_t c = (size_t)out->c;
    spec[0] = (ck_param_spec){"gamma", c, (double)c, 1, CK_INIT_ONES, 0, 0, 1, {(long long)c}};
    spec[1] = (ck_param_spec){"beta", c, (double)c, 1, CK_INIT_ZEROS, 0, 0, 1, {(long long)c}};
    spec[2] =
        (ck_param_spec){"moving_mean", c, (double)c, 0, CK_INIT_ZEROS, 0, 0, 1, {(long long)c}};
    spec[3] =
        (ck_param_spec){"moving_variance", c, (double)c, 0, CK_INIT_ONES, 0, 0, 1, {(long long)c}};
    return 4;
}

static int bn_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                    const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    (void)spec;
    ck_node *n = &nodes[0];
    ck_lk_node(n, &ck_nk_bn, in, out);
    ck_bn_desc_init(&n->bn, CK_BN_KERAS);
    n->bn.epsilon = d->epsilon;
    n->bn.average_factor = 1.0f - d->momentum;
    /* a batch of one sample on a Dense (or 1x1) output: Keras takes its statistics too, variance
     * 0, so the output is beta */
    n->bn.single_value_use_running = 2;
    n->p_gamma = at->off[0];
    n->p_beta = at->off[1];
    n->p_mm = at->off[2];
    n->p_mv = at->off[3];
    n->p_stats = at->stats;
    n->bn_sync = d->synchronized != 0;
    return 1;
}

/* Keras's defaults are left out. */
static void bn_render(ck_sbuf *s, const ck_layer_desc *d) {
    const char *sep = "";
    ck_sbuf_printf(s, "BatchNormalization(");
    if (d->momentum != 0.99f)
        ck_sbuf_printf(s, "momentum=%g", (double)d->momentum), sep = ",";
    if (d->epsilon != 1e-3f)
        ck_sbuf_printf(s, "%sepsilon=%g", sep, (double)d->epsilon), sep = ",";
    if (d->synchronized)
        ck_sbuf_printf(s, "%ssynchronized=True", sep);
    ck_sbuf_printf(s, ")");
}

static int bn_same(const ck_layer_desc *a, const ck_layer_desc *b) {
    return a->momentum == b->momentum && a->epsilon == b->epsilon &&
           a->synchronized == b->synchronized;
}

static const char *const bn_args[] = {"axis",
                                      "momentum",
                                      "epsilon",
                                      "center",
                                      "scale",
                                      "beta_initializer",
                                      "gamma_initializer",
                                      "moving_mean_initializer",
                                      "moving_variance_initializer",
                                      "beta_regularizer",
                                      "gamma_regularizer",
                                      "beta_constraint",
                                      "gamma_constraint",
                                      "synchronized",
                                      "renorm",
                                      "renorm_clipping",
                                      "renorm_momentum",
                                      "fused",
                                      "virtual_batch_size",
                                      "adjustment",
                                      NULL};

#define BN_AXIS "-1 (the channels axis)"

/* axis: -1 or the last axis of the input (3 for images), also as a list of one. */
static int bn_bind(ck_kbind *b, ck_layer_desc *d) {
    int ax[4], rows, cols;
    if (b->ints(b, "axis", BN_AXIS, ax, &rows, &cols))
        return -1;
    if (rows != -1 &&
        !((rows == 0 || (rows == 1 && cols == 0)) && (ax[0] == -1 || ax[0] == b->rank - 1)))
        return b->refuse(b, "axis", BN_AXIS);
    double x = d->momentum;
    if (b->get_num(b, "momentum", 0, 0, 1, 0, &x))
        return -1;
    d->momentum = (float)x;
    x = d->epsilon;
    if (b->get_num(b, "epsilon", 0, 1, 1e308, 0, &x))
        return -1;
    d->epsilon = (float)x;
    if (b->only_bool(b, "center", 1) || b->only_bool(b, "scale", 1) ||
        b->initializer(b, "beta_initializer", "zeros") ||
        b->initializer(b, "gamma_initializer", "ones") ||
        b->initializer(b, "moving_mean_initializer", "zeros") ||
        b->initializer(b, "moving_variance_initializer", "ones") ||
        b->only_none(b, "beta_regularizer") || b->only_none(b, "gamma_regularizer") ||
        b->only_none(b, "beta_constraint") || b->only_none(b, "gamma_constraint") ||
        b->only_bool(b, "renorm", 0) || b->only_none(b, "renorm_clipping") ||
        b->only_none(b, "virtual_batch_size") || b->only_none(b, "adjustment"))
        return -1;
    x = 0; /* renorm_momentum only matters with renorm=True; fused is an implementation hint */
    if (b->get_num(b, "renorm_momentum", 0, 0, 1, 0, &x))
        return -1;
    if (b->has(b, "synchronized") && b->get_bool(b, "synchronized", &d->synchronized))
        return -1;
    int fused;
    return b->has(b, "fused") ? b->get_bool(b, "fused", &fused) : 0;
}

/* tf.keras's SyncBatchNormalization: BatchNormalization(synchronized=True) of Keras 3 */
static int sync_bn_bind(ck_kbind *b, ck_layer_desc *d) {
    d->synchronized = 1;
    return bn_bind(b, d);
}

static const ck_keras_class bn_classes[] = {
    {"BatchNormalization", bn_args, 13, 0, bn_bind, NULL},
    {"SyncBatchNormalization", bn_args, 13, 1, sync_bn_bind, NULL},
    {0}};

static int bn_put(ck_kput *w, const ck_layer_desc *d) {
    const int axis = -1;
    return w->ints(w, "axis", &axis, 0, 0) || w->num(w, "momentum", d->momentum) ||
           w->num(w, "epsilon", d->epsilon) || w->boolean(w, "center", 1) ||
           w->boolean(w, "scale", 1) || (d->synchronized && w->boolean(w, "synchronized", 1));
}

const ck_layer_kind ck_lk_batchnorm = {
    .type = CK_LAYER_BATCHNORM,
    .keras_name = "BatchNormalization",
    .base_name = "batch_normalization",
    .flags = CK_LK_KEEPS_CHANNELS,
    .stats_per_channel = 2, /* the batch mean and inverse deviation */
    .defaults = bn_defaults,
    .check = bn_check,
    .infer = ck_lk_infer_same,
    .params = bn_params,
    .lower = bn_lower,
    .study_letter = 'B',
    .render = bn_render,
    .same = bn_same,
    .keras_classes = bn_classes,
    .keras_put = bn_put,
};

/* ---- node ops: the public BN calls run on the context's device; the backends differ in the
 * workspace (the CPU call allocates its own) and in where a fused ReLU runs ---- */

/* The BN desc the kernel runs with: a fused ReLU (F1, plan.c) stays in the kernel when the
 * backend fuses it, else it runs as a pass after the kernel (*relu_after). */
static ck_bn_desc bn_kernel_desc(const ck_exec *e, const ck_node *n, int *relu_after) {
    ck_bn_desc d = n->bn;
    *relu_after = d.activation == CK_ACT_RELU && !e->bn_relu_fused;
    if (*relu_after)
        d.activation = CK_ACT_NONE;
    return d;
}

/* The node's input x, and an output-shaped (y, dy) or input-shaped (dx) view over p, each in its
 * storage as the executor keeps it. */
static ck_tensor bn_x(const ck_exec *e, const ck_node *n, const ck_node_io *io) {
    return ck_exec_view_dt(e->ctx, io->in, io->batch, n->ih, n->iw, n->ic,
                           ck_exec_in_dt(e, io->i, 0));
}
static ck_tensor bn_outv(const ck_exec *e, const ck_node *n, const ck_node_io *io, const float *p,
                         int dt) {
    return ck_exec_view_dt(e->ctx, p, io->batch, n->oh, n->ow, n->oc, dt);
}

static ck_status bn_fwd(const ck_exec *e, ck_node *n, const ck_node_io *io, ck_workspace *w,
                        int *relu_after) {
    ck_context *ctx = e->ctx;
    ck_tensor tx, ty;
    tx = bn_x(e, n, io);
    ty = bn_outv(e, n, io, io->out, ck_exec_out_dt(e, io->i));
    ck_tensor g = ck_exec_pview(ctx, e->params + n->p_gamma, n->oc);
    ck_tensor b = ck_exec_pview(ctx, e->params + n->p_beta, n->oc);
    ck_tensor rm = ck_exec_pview(ctx, e->fixed + n->p_mm, n->oc);
    ck_tensor rv = ck_exec_pview(ctx, e->fixed + n->p_mv, n->oc);
    const ck_bn_desc bd = bn_kernel_desc(e, n, relu_after);
    if (!io->training)
        return ck_batchnorm_forward_inference(ctx, &bd, &tx, &g, &b, &rm, &rv, &ty);
    ck_tensor sm = ck_exec_pview(ctx, e->stats + n->p_stats, n->oc);
    ck_tensor si = ck_exec_pview(ctx, e->stats + n->p_stats + n->oc, n->oc);
    ck_dropout_desc sd; /* F2: a SpatialDropout as the kernel's channel scale */
    ck_drop_key key = {NULL, 0};
    const int has_sd = ck_exec_fused_dropout(e, io->i, 1, &sd, &key);
    return ck_batchnorm_forward_training_keyed(ctx, &bd, &tx, &g, &b, &rm, &rv, &sm, &si,
                                               has_sd ? &sd : NULL, key, &ty, w);
}

static ck_status bn_bwd(const ck_exec *e, ck_node *n, const ck_node_io *io, ck_workspace *w) {
    ck_context *ctx = e->ctx;
    ck_tensor tx, tdy, tdx;
    tx = bn_x(e, n, io);
    tdy = bn_outv(e, n, io, io->dy, ck_exec_dy_dt(e, io->i));
    tdx = ck_exec_view_dt(ctx, io->dx ? io->dx : io->dx_buf, io->batch, n->ih, n->iw, n->ic,
                          ck_exec_in_dt(e, io->i, 0));
    ck_tensor g = ck_exec_pview(ctx, e->params + n->p_gamma, n->oc);
    ck_tensor b = ck_exec_pview(ctx, e->params + n->p_beta, n->oc);
    ck_tensor sm = ck_exec_pview(ctx, e->stats + n->p_stats, n->oc);
    ck_tensor si = ck_exec_pview(ctx, e->stats + n->p_stats + n->oc, n->oc);
    ck_tensor dg = ck_exec_pview(ctx, e->grads + n->p_gamma, n->oc);
    ck_tensor db = ck_exec_pview(ctx, e->grads + n->p_beta, n->oc);
    ck_dropout_desc sd; /* F2: dy * mask (and a fused dReLU) folded into dBN */
    ck_drop_key key = {NULL, 0};
    const int has_sd = ck_exec_fused_dropout(e, io->i, 1, &sd, &key);
    int relu_after;
    const ck_bn_desc bd = bn_kernel_desc(e, n, &relu_after);
    return ck_batchnorm_backward_keyed(ctx, &bd, &tx, &tdy, &g, &b, &sm, &si, has_sd ? &sd : NULL,
                                       key, &tdx, &dg, &db, w);
}

/* SyncBatchNormalization in a data-parallel step (a CPU model with a communicator): the CPU
 * kernels with their per-channel sums summed over the ranks. No argument checks: the executor's
 * buffers fit the node. */
static ck_status bn_sync_status(const ck_exec *e, int r) {
    if (r > 0)
        return ck_fail(e->ctx, CK_STATUS_BAD_PARAM,
                       "x: channel %d of a SyncBatchNormalization holds NaN or Inf on some rank; "
                       "nothing was written",
                       r - 1);
    if (r == -1)
        return ck_host_oom(e->ctx, "SyncBatchNormalization scratch", 0);
    if (r == -3)
        return ck_fail(e->ctx, CK_STATUS_INTERNAL,
                       "comm: another of the %d ranks failed before this SyncBatchNormalization's "
                       "exchange (its message says why); the model was not changed",
                       ck_comm_size(e->comm));
    return r ? CK_STATUS_INTERNAL : CK_STATUS_SUCCESS; /* -2: the collective's message */
}

static ck_status bn_fwd_sync(const ck_exec *e, ck_node *n, const ck_node_io *io, int *relu_after) {
    ck_context *ctx = e->ctx;
    ck_tensor tx, ty;
    tx = bn_x(e, n, io);
    ty = bn_outv(e, n, io, io->out, ck_exec_out_dt(e, io->i));
    const ck_bn_desc bd = bn_kernel_desc(e, n, relu_after);
    ck_dropout_desc sd;
    ck_drop_key unused; /* by value: a data-parallel step is never captured */
    const int has_sd = ck_exec_fused_dropout(e, io->i, 1, &sd, &unused);
    float *st = e->stats + n->p_stats;
    return bn_sync_status(e, ck_cpu_bn_forward_training(
                                 ctx->cpu_threads, &bd, 0, ctx->seed, &tx, e->params + n->p_gamma,
                                 e->params + n->p_beta, e->fixed + n->p_mm, e->fixed + n->p_mv, st,
                                 st + n->oc, has_sd ? &sd : NULL, &ty, e->comm));
}

static ck_status bn_bwd_sync(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    ck_context *ctx = e->ctx;
    ck_tensor tx, tdy, tdx;
    tx = bn_x(e, n, io);
    tdy = bn_outv(e, n, io, io->dy, ck_exec_dy_dt(e, io->i));
    tdx = ck_exec_view_dt(ctx, io->dx ? io->dx : io->dx_buf, io->batch, n->ih, n->iw, n->ic,
                          ck_exec_in_dt(e, io->i, 0));
    int relu_after;
    const ck_bn_desc bd = bn_kernel_desc(e, n, &relu_after);
    ck_dropout_desc sd;
    ck_drop_key unused; /* by value: a data-parallel step is never captured */
    const int has_sd = ck_exec_fused_dropout(e, io->i, 1, &sd, &unused);
    const float *st = e->stats + n->p_stats;
    return bn_sync_status(e,
                          ck_cpu_bn_backward(ctx->cpu_threads, &bd, 0, ctx->seed, &tx, &tdy,
                                             e->params + n->p_gamma, e->params + n->p_beta, st,
                                             st + n->oc, has_sd ? &sd : NULL, &tdx,
                                             e->grads + n->p_gamma, e->grads + n->p_beta, e->comm));
}

static ck_status bn_fwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    int relu_after;
    const ck_status st = n->bn_sync && e->comm && io->training
                             ? bn_fwd_sync(e, n, io, &relu_after)
                             : bn_fwd(e, n, io, NULL, &relu_after);
    /* relu(s * pre) == s * relu(pre) bit for bit (s >= 0): the same as the kernel's */
    if (st == CK_STATUS_SUCCESS && relu_after)
        ck_cpu_activation_forward(CK_ACT_RELU, 0.0f, io->out, io->out, io->count_in, n->oc);
    return st;
}

static ck_status bn_bwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    int relu_after;
    (void)bn_kernel_desc(e, n, &relu_after);
    /* dReLU in place on dy, from the node's output (> 0 iff kept and pre > 0) */
    if (relu_after)
        ck_cpu_activation_backward(CK_ACT_RELU, 0.0f, NULL, io->out, io->dy, io->dy, io->count_in,
                                   n->oc);
    return n->bn_sync && e->comm ? bn_bwd_sync(e, n, io) : bn_bwd(e, n, io, NULL);
}

#ifdef CNNKIT_HAVE_CUDA
static ck_workspace bn_ws(const ck_exec *e) {
    ck_workspace w;
    w.ctx = e->ctx;
    w.bytes = e->ws_bytes;
    w.data = e->ws;
    return w;
}

/* SyncBatchNormalization in a data-parallel step on GPUs (an NCCL communicator): the CUDA
 * kernels with each channel's moments and sums gathered from every rank between their phases. */
static ck_status bn_fwd_sync_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    ck_context *ctx = e->ctx;
    ck_workspace w = bn_ws(e);
    ck_tensor tx, ty;
    tx = bn_x(e, n, io);
    ty = bn_outv(e, n, io, io->out, ck_exec_out_dt(e, io->i));
    int relu_after; /* never: the CUDA backend fuses the ReLU (ck_gpu_model_build) */
    const ck_bn_desc bd = bn_kernel_desc(e, n, &relu_after);
    ck_dropout_desc sd;
    ck_drop_key unused; /* by value: a data-parallel step is never captured */
    const int has_sd = ck_exec_fused_dropout(e, io->i, 1, &sd, &unused);
    float *st = e->stats + n->p_stats;
    return ck_bn_cuda_forward_sync(ctx, &bd, &tx, e->params + n->p_gamma, e->params + n->p_beta,
                                   e->fixed + n->p_mm, e->fixed + n->p_mv, st, st + n->oc,
                                   has_sd ? &sd : NULL, &ty, &w, e->comm);
}

static ck_status bn_bwd_sync_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    ck_context *ctx = e->ctx;
    ck_workspace w = bn_ws(e);
    ck_tensor tx, tdy, tdx;
    tx = bn_x(e, n, io);
    tdy = bn_outv(e, n, io, io->dy, ck_exec_dy_dt(e, io->i));
    tdx = ck_exec_view_dt(ctx, io->dx ? io->dx : io->dx_buf, io->batch, n->ih, n->iw, n->ic,
                          ck_exec_in_dt(e, io->i, 0));
    int relu_after;
    const ck_bn_desc bd = bn_kernel_desc(e, n, &relu_after);
    ck_dropout_desc sd;
    ck_drop_key unused; /* by value: a data-parallel step is never captured */
    const int has_sd = ck_exec_fused_dropout(e, io->i, 1, &sd, &unused);
    const float *st = e->stats + n->p_stats;
    return ck_bn_cuda_backward_sync(ctx, &bd, &tx, &tdy, e->params + n->p_gamma,
                                    e->params + n->p_beta, st, st + n->oc, has_sd ? &sd : NULL,
                                    &tdx, e->grads + n->p_gamma, e->grads + n->p_beta, &w, e->comm);
}

static ck_status bn_fwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    if (n->bn_sync && e->comm && io->training)
        return bn_fwd_sync_cuda(e, n, io);
    ck_workspace w = bn_ws(e);
    int relu_after; /* never: the CUDA backend fuses the ReLU (ck_gpu_model_build) */
    return bn_fwd(e, n, io, &w, &relu_after);
}

static ck_status bn_bwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    if (n->bn_sync && e->comm)
        return bn_bwd_sync_cuda(e, n, io);
    ck_workspace w = bn_ws(e);
    return bn_bwd(e, n, io, &w);
}

/* the statistics partials, coefficients and SpatialDropout scales of the largest batch */
static size_t bn_ws_cuda(ck_context *ctx, const ck_node *n, int max_batch, const void *state) {
    (void)state;
    ck_tensor tx = ck_exec_view(ctx, NULL, max_batch, n->ih, n->iw, n->ic);
    return ck_bn_make_plan(ctx, &tx).ws_bytes;
}
#define BN_CUDA                                                                                    \
    { bn_fwd_cuda, bn_bwd_cuda, NULL, NULL, bn_ws_cuda, 1 }
#else
#define BN_CUDA                                                                                    \
    { 0 }
#endif

/* The kernels' backward reads x (x-hat from the saved statistics), never y; a fused ReLU run
 * after the kernel (the CPU's) takes its mask from y. */
static unsigned bn_skips(const ck_node *n) {
    return n->bn.activation == CK_ACT_NONE ? CK_BWD_SKIPS_OUT : 0;
}

const ck_node_kind ck_nk_bn = {
    .type = CK_NODE_BN,
    .name = "batch_normalization",
    .ops = {{bn_fwd_cpu, bn_bwd_cpu, NULL, NULL, NULL}, BN_CUDA},
    .bwd_skips = bn_skips,
};
