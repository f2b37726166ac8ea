/* BatchNorm (+ReLU, + fused SpatialDropout scale): presets, checks, launch plan and dispatch. */
#include "ck_kernels.h" /* ck_kdt */
#include "ck_math.h"
#include "internal.h"

#include <math.h>
#include <string.h>

#ifdef CNNKIT_HAVE_CUDA
#include "comm_internal.h"
#endif

CK_API ck_status ck_bn_desc_init(ck_bn_desc *d, ck_bn_convention convention) {
    if (!d)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "desc: is NULL");
    switch (convention) {
    case CK_BN_KERAS:
        d->epsilon = 1e-3f;
        d->average_factor = 0.01f; /* Keras momentum 0.99 */
        d->unbiased_running_var = 0;
        break;
    case CK_BN_PYTORCH:
        d->epsilon = 1e-5f;
        d->average_factor = 0.1f; /* PyTorch momentum 0.1 */
        d->unbiased_running_var = 1;
        break;
    default:
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "convention: %d is not a ck_bn_convention",
                       (int)convention);
    }
    d->activation = CK_ACT_NONE;
    d->single_value_use_running = 0;
    return CK_STATUS_SUCCESS;
}

ck_bn_plan ck_bn_make_plan(const ck_context *ctx, const ck_tensor *x) {
    ck_bn_plan p = {1, 0, 0, 0, 0};
    if (ctx->device != CK_DEVICE_CUDA)
        return p; /* the CPU path needs no workspace */
    /* Aim at 4 blocks per SM in total, split evenly over channels (or channel tiles of 32 for
     * NHWC), never more splits than units to split (samples for NCHW, rows for NHWC). */
    const long target = 4L * (ctx->sm_count > 0 ? ctx->sm_count : 1);
    long groups, units;
    if (x->layout == CK_LAYOUT_NCHW) {
        groups = x->c;
        units = x->n;
    } else {
        groups = (x->c + 31) / 32;
        units = ((long)x->n * x->h * x->w + 7) / 8;
    }
    long splits = (target + groups - 1) / groups;
    if (splits > units)
        splits = units;
    if (splits > 1024)
        splits = 1024;
    if (splits < 1)
        splits = 1;
    p.splits = (int)splits;
    p.part_offset = 0;
    p.coef_offset =
        ((size_t)3 * (size_t)x->c * (size_t)splits * sizeof(double) + 255) & ~(size_t)255;
    p.sd_offset = (p.coef_offset + (size_t)4 * (size_t)x->c * sizeof(float) + 255) & ~(size_t)255;
    p.ws_bytes = p.sd_offset + (size_t)x->n * (size_t)x->c * sizeof(float);
    return p;
}

CK_API ck_status ck_batchnorm_workspace_size(ck_context *ctx, const ck_tensor *x, size_t *bytes) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    ck_status st = ck_check_tensor(ctx, x, "x");
    if (st != CK_STATUS_SUCCESS)
        return st;
    if (!bytes)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "bytes: is NULL");
    *bytes = ck_bn_make_plan(ctx, x).ws_bytes;
    return CK_STATUS_SUCCESS;
}

/* The CPU path's per-channel scratch could not be allocated. */
static ck_status scratch_oom(ck_context *ctx, const ck_tensor *x) {
    if (ctx->host_limit)
        return ck_fail(ctx, CK_STATUS_ALLOC_FAILED,
                       "x: out of host memory for the per-channel scratch of %d channels (host "
                       "allocation limit %zu bytes, %zu in use)",
                       x->c, ctx->host_limit, ctx->host_live);
    return ck_fail(ctx, CK_STATUS_ALLOC_FAILED,
                   "x: out of host memory for the per-channel scratch of %d channels", x->c);
}

static ck_status check_desc(ck_context *ctx, const ck_bn_desc *d) {
    if (!d)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "desc: is NULL");
    if (!(d->epsilon > 0.0f) || isinf(d->epsilon))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "desc->epsilon: must be > 0 and finite, got %g",
                       (double)d->epsilon);
    if (!(d->average_factor >= 0.0f && d->average_factor <= 1.0f))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "desc->average_factor: must be in [0, 1], got %g",
                       (double)d->average_factor);
    if (d->activation != CK_ACT_NONE && d->activation != CK_ACT_RELU)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "desc->activation: must be CK_ACT_NONE or CK_ACT_RELU, got %d",
                       (int)d->activation);
    if (d->single_value_use_running < 0 || d->single_value_use_running > 2)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "desc->single_value_use_running: must be 0, 1 or 2, got %d",
                       d->single_value_use_running);
    /* one value has no unbiased variance (M / (M - 1)) */
    if (d->single_value_use_running == 2 && d->unbiased_running_var)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "desc->single_value_use_running: 2 (batch statistics) needs a biased "
                       "running variance (unbiased_running_var 0, CK_BN_KERAS)");
    return CK_STATUS_SUCCESS;
}

/* Training needs more than one value per channel, unless the desc asks to fall back to the
 * running statistics (frozen) or to take the batch's (variance 0, as Keras). */
static ck_status check_single_value(ck_context *ctx, const ck_bn_desc *d, const ck_tensor *x,
                                    int *frozen) {
    *frozen = 0;
    if ((long)x->n * x->h * x->w > 1)
        return CK_STATUS_SUCCESS;
    if (d->single_value_use_running) {
        *frozen = ck_bn_single_value_frozen(d, 1.0);
        return CK_STATUS_SUCCESS;
    }
    return ck_fail(ctx, CK_STATUS_SINGLE_VALUE_BATCH,
                   "x: shape %dx%dx%dx%d has N*H*W == 1, one value per channel: batch statistics "
                   "are undefined (set desc->single_value_use_running to use the running stats)",
                   x->n, x->c, x->h, x->w);
}

static ck_status check_ws(ck_context *ctx, const ck_tensor *x, ck_workspace *ws, ck_bn_plan *p) {
    *p = ck_bn_make_plan(ctx, x);
    if (p->ws_bytes == 0)
        return CK_STATUS_SUCCESS;
    if (!ws)
        return ck_fail(ctx, CK_STATUS_WORKSPACE_TOO_SMALL,
                       "ws: is NULL, %zu bytes needed (ck_batchnorm_workspace_size)", p->ws_bytes);
    if (!ws->ctx)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "ws: its context was destroyed");
    if (ws->ctx != ctx)
        return ck_fail(ctx, CK_STATUS_DEVICE_MISMATCH, "ws: belongs to another context");
    if (ws->bytes < p->ws_bytes)
        return ck_fail(ctx, CK_STATUS_WORKSPACE_TOO_SMALL, "ws: has %zu bytes, %zu needed",
                       ws->bytes, p->ws_bytes);
    return CK_STATUS_SUCCESS;
}

#ifdef CNNKIT_HAVE_CUDA
static ck_kbn make_kbn(const ck_context *ctx, const ck_bn_desc *d, const ck_tensor *x,
                       const ck_bn_plan *p, int frozen, const ck_dropout_desc *sd, ck_drop_key key,
                       ck_workspace *ws) {
    ck_kbn k;
    memset(&k, 0, sizeof k);
    k.s.n = x->n;
    k.s.c = x->c;
    k.s.h = x->h;
    k.s.w = x->w;
    k.s.nhwc = x->layout == CK_LAYOUT_NHWC;
    k.s.dt = x->dtype; /* y, dy and dx: checked to match */
    k.splits = p->splits;
    k.bn = *d;
    k.frozen = frozen;
    k.sd_enabled = sd != NULL;
    k.seed = ctx->seed;
    k.sd_offset = sd ? sd->offset : 0;
    k.sd_sample0 = sd ? sd->sample0 : 0;
    k.sd_step = sd ? key.step : NULL;
    k.sd_layer = key.layer;
    k.sd_threshold = sd ? ck_dropout_threshold(sd->rate) : 0;
    k.sd_scale = sd ? ck_dropout_scale(sd->rate) : 1.0f;
    k.partials = (double *)((char *)ws->data + p->part_offset);
    k.coef = (float *)((char *)ws->data + p->coef_offset);
    k.sd_scales = (float *)((char *)ws->data + p->sd_offset);
    return k;
}
#endif

static const ck_drop_key NO_KEY = {NULL, 0};

CK_API ck_status ck_batchnorm_forward_training(ck_context *ctx, const ck_bn_desc *desc,
                                               const ck_tensor *x, const ck_tensor *gamma,
                                               const ck_tensor *beta, ck_tensor *running_mean,
                                               ck_tensor *running_var, ck_tensor *saved_mean,
                                               ck_tensor *saved_invstd,
                                               const ck_dropout_desc *spatial_dropout, ck_tensor *y,
                                               ck_workspace *ws) {
    return ck_batchnorm_forward_training_keyed(ctx, desc, x, gamma, beta, running_mean, running_var,
                                               saved_mean, saved_invstd, spatial_dropout, NO_KEY, y,
                                               ws);
}

ck_status ck_batchnorm_forward_training_keyed(ck_context *ctx, const ck_bn_desc *desc,
                                              const ck_tensor *x, const ck_tensor *gamma,
                                              const ck_tensor *beta, ck_tensor *running_mean,
                                              ck_tensor *running_var, ck_tensor *saved_mean,
                                              ck_tensor *saved_invstd,
                                              const ck_dropout_desc *spatial_dropout,
                                              ck_drop_key key, ck_tensor *y, ck_workspace *ws) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    CK_TRY(check_desc(ctx, desc));
    CK_TRY(ck_check_tensor(ctx, x, "x"));
    CK_TRY(ck_check_tensor(ctx, y, "y"));
    CK_TRY(ck_check_same_shape(ctx, x, "x", y, "y"));
    CK_TRY(ck_tensor_check_storage(ctx, x, "x", y, "y"));
    const int c = x->c;
    CK_TRY(ck_check_param_tensor(ctx, gamma, "gamma", c));
    CK_TRY(ck_check_param_tensor(ctx, beta, "beta", c));
    CK_TRY(ck_check_param_tensor(ctx, running_mean, "running_mean", c));
    CK_TRY(ck_check_param_tensor(ctx, running_var, "running_var", c));
    CK_TRY(ck_check_param_tensor(ctx, saved_mean, "saved_mean", c));
    CK_TRY(ck_check_param_tensor(ctx, saved_invstd, "saved_invstd", c));
    if (spatial_dropout)
        CK_TRY(ck_check_dropout_desc(ctx, spatial_dropout, "spatial_dropout"));
    int frozen = 0;
    CK_TRY(check_single_value(ctx, desc, x, &frozen));
    ck_bn_plan plan;
    CK_TRY(check_ws(ctx, x, ws, &plan));
#ifdef CNNKIT_HAVE_CUDA
    if (ctx->device == CK_DEVICE_CUDA) {
        ck_kbn k = make_kbn(ctx, desc, x, &plan, frozen, spatial_dropout, key, ws);
        int e = ck_cuda_bn_forward_training(&k, x->data, gamma->data, beta->data,
                                            running_mean->data, running_var->data, saved_mean->data,
                                            saved_invstd->data, y->data, ctx->stream);
        return e ? ck_cuda_fail(ctx, e, "batchnorm forward training kernels") : CK_STATUS_SUCCESS;
    }
#endif
    const int r = ck_cpu_bn_forward_training(
        ctx->cpu_threads, desc, frozen, ctx->seed, x, gamma->data, beta->data, running_mean->data,
        running_var->data, saved_mean->data, saved_invstd->data, spatial_dropout, y, NULL);
    if (r > 0)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "x: channel %d holds NaN or Inf (its batch mean or variance is not "
                       "finite); nothing was written, the running statistics are unchanged",
                       r - 1);
    if (r < 0)
        return scratch_oom(ctx, x);
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_batchnorm_forward_inference(ck_context *ctx, const ck_bn_desc *desc,
                                                const ck_tensor *x, const ck_tensor *gamma,
                                                const ck_tensor *beta,
                                                const ck_tensor *running_mean,
                                                const ck_tensor *running_var, ck_tensor *y) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    CK_TRY(check_desc(ctx, desc));
    CK_TRY(ck_check_tensor(ctx, x, "x"));
    CK_TRY(ck_check_tensor(ctx, y, "y"));
    CK_TRY(ck_check_same_shape(ctx, x, "x", y, "y"));
    CK_TRY(ck_tensor_check_storage(ctx, x, "x", y, "y"));
    const int c = x->c;
    CK_TRY(ck_check_param_tensor(ctx, gamma, "gamma", c));
    CK_TRY(ck_check_param_tensor(ctx, beta, "beta", c));
    CK_TRY(ck_check_param_tensor(ctx, running_mean, "running_mean", c));
    CK_TRY(ck_check_param_tensor(ctx, running_var, "running_var", c));
#ifdef CNNKIT_HAVE_CUDA
    if (ctx->device == CK_DEVICE_CUDA) {
        ck_kshape s = {x->n, x->c, x->h, x->w, x->layout == CK_LAYOUT_NHWC, x->dtype};
        int e = ck_cuda_bn_forward_inference(s, (int)desc->activation, desc->epsilon, x->data,
                                             gamma->data, beta->data, running_mean->data,
                                             running_var->data, y->data, ctx->stream);
        return e ? ck_cuda_fail(ctx, e, "batchnorm inference kernel") : CK_STATUS_SUCCESS;
    }
#endif
    if (ck_cpu_bn_forward_inference(ctx->cpu_threads, desc, x, gamma->data, beta->data,
                                    running_mean->data, running_var->data, y))
        return scratch_oom(ctx, x);
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_batchnorm_backward(ck_context *ctx, const ck_bn_desc *desc, const ck_tensor *x,
                                       const ck_tensor *dy, const ck_tensor *gamma,
                                       const ck_tensor *beta, const ck_tensor *saved_mean,
                                       const ck_tensor *saved_invstd,
                                       const ck_dropout_desc *spatial_dropout, ck_tensor *dx,
                                       ck_tensor *dgamma, ck_tensor *dbeta, ck_workspace *ws) {
    return ck_batchnorm_backward_keyed(ctx, desc, x, dy, gamma, beta, saved_mean, saved_invstd,
                                       spatial_dropout, NO_KEY, dx, dgamma, dbeta, ws);
}

ck_status ck_batchnorm_backward_keyed(ck_context *ctx, const ck_bn_desc *desc, const ck_tensor *x,
                                      const ck_tensor *dy, const ck_tensor *gamma,
                                      const ck_tensor *beta, const ck_tensor *saved_mean,
                                      const ck_tensor *saved_invstd,
                                      const ck_dropout_desc *spatial_dropout, ck_drop_key key,
                                      ck_tensor *dx, ck_tensor *dgamma, ck_tensor *dbeta,
                                      ck_workspace *ws) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    CK_TRY(check_desc(ctx, desc));
    CK_TRY(ck_check_tensor(ctx, x, "x"));
    CK_TRY(ck_check_tensor(ctx, dy, "dy"));
    CK_TRY(ck_check_tensor(ctx, dx, "dx"));
    CK_TRY(ck_check_same_shape(ctx, x, "x", dy, "dy"));
    CK_TRY(ck_check_same_shape(ctx, x, "x", dx, "dx"));
    CK_TRY(ck_tensor_check_storage(ctx, x, "x", dy, "dy"));
    CK_TRY(ck_tensor_check_storage(ctx, x, "x", dx, "dx"));
    const int c = x->c;
    CK_TRY(ck_check_param_tensor(ctx, gamma, "gamma", c));
    CK_TRY(ck_check_param_tensor(ctx, beta, "beta", c));
    CK_TRY(ck_check_param_tensor(ctx, saved_mean, "saved_mean", c));
    CK_TRY(ck_check_param_tensor(ctx, saved_invstd, "saved_invstd", c));
    CK_TRY(ck_check_param_tensor(ctx, dgamma, "dgamma", c));
    CK_TRY(ck_check_param_tensor(ctx, dbeta, "dbeta", c));
    if (spatial_dropout)
        CK_TRY(ck_check_dropout_desc(ctx, spatial_dropout, "spatial_dropout"));
    int frozen = 0;
    CK_TRY(check_single_value(ctx, desc, x, &frozen));
    ck_bn_plan plan;
    CK_TRY(check_ws(ctx, x, ws, &plan));
#ifdef CNNKIT_HAVE_CUDA
    if (ctx->device == CK_DEVICE_CUDA) {
        ck_kbn k = make_kbn(ctx, desc, x, &plan, frozen, spatial_dropout, key, ws);
        int e = ck_cuda_bn_backward(&k, x->data, dy->data, gamma->data, beta->data,
                                    saved_mean->data, saved_invstd->data, dx->data, dgamma->data,
                                    dbeta->data, ctx->stream);
        return e ? ck_cuda_fail(ctx, e, "batchnorm backward kernels") : CK_STATUS_SUCCESS;
    }
#endif
    if (ck_cpu_bn_backward(ctx->cpu_threads, desc, frozen, ctx->seed, x, dy, gamma->data,
                           beta->data, saved_mean->data, saved_invstd->data, spatial_dropout, dx,
                           dgamma->data, dbeta->data, NULL))
        return scratch_oom(ctx, x);
    return CK_STATUS_SUCCESS;
}

#ifdef CNNKIT_HAVE_CUDA
/* The kernels' exchange (ck_kbn.exchange): every rank's 3 * C doubles, gathered on the stream. */
static int bn_gather(void *user, const double *local, double *all, size_t count) {
    return ck_comm_device_allgather_f64((const ck_comm *)user, local, all, count,
                                        "ncclAllGather (SyncBatchNormalization)") !=
           CK_STATUS_SUCCESS;
}

/* The kernel parameters of a synchronized BN: the plan's, the communicator's scratch for this
 * rank's 3 * C doubles and every rank's after them. */
static ck_status sync_kbn(ck_context *ctx, const ck_bn_desc *d, const ck_tensor *x,
                          const ck_dropout_desc *sd, ck_workspace *ws, const ck_comm *comm,
                          ck_kbn *k) {
    const ck_bn_plan plan = ck_bn_make_plan(ctx, x);
    *k = make_kbn(ctx, d, x, &plan, 0, sd, NO_KEY, ws);
    const int ranks = ck_comm_size(comm);
    void *scratch = NULL;
    CK_TRY(ck_comm_device_scratch(comm, ck_bn_sync_scratch_bytes(x->c, ranks), &scratch));
    k->exchange = bn_gather;
    k->exchange_user = (void *)comm;
    k->ranks = ranks;
    k->sync_local = (double *)scratch;
    k->sync_all = k->sync_local + (size_t)3 * x->c;
    return CK_STATUS_SUCCESS;
}

static ck_status sync_status(ck_context *ctx, int e, const char *what) {
    if (e == CK_KBN_EXCHANGE_FAILED)
        return CK_STATUS_INTERNAL; /* the communicator's message is the context's */
    return e ? ck_cuda_fail(ctx, e, what) : CK_STATUS_SUCCESS;
}

ck_status ck_bn_cuda_forward_sync(ck_context *ctx, const ck_bn_desc *d, const ck_tensor *x,
                                  const float *gamma, const float *beta, float *running_mean,
                                  float *running_var, float *saved_mean, float *saved_invstd,
                                  const ck_dropout_desc *sd, ck_tensor *y, ck_workspace *ws,
                                  const ck_comm *comm) {
    ck_kbn k;
    CK_TRY(sync_kbn(ctx, d, x, sd, ws, comm, &k));
    return sync_status(ctx,
                       ck_cuda_bn_forward_training(&k, x->data, gamma, beta, running_mean,
                                                   running_var, saved_mean, saved_invstd, y->data,
                                                   ctx->stream),
                       "SyncBatchNormalization forward kernels");
}

ck_status ck_bn_cuda_backward_sync(ck_context *ctx, const ck_bn_desc *d, const ck_tensor *x,
                                   const ck_tensor *dy, const float *gamma, const float *beta,
                                   const float *saved_mean, const float *saved_invstd,
                                   const ck_dropout_desc *sd, ck_tensor *dx, float *dgamma,
                                   float *dbeta, ck_workspace *ws, const ck_comm *comm) {
    ck_kbn k;
    CK_TRY(sync_kbn(ctx, d, x, sd, ws, comm, &k));
    return sync_status(ctx,
                       ck_cuda_bn_backward(&k, x->data, dy->data, gamma, beta, saved_mean,
                                           saved_invstd, dx->data, dgamma, dbeta, ctx->stream),
                       "SyncBatchNormalization backward kernels");
}
#endif
