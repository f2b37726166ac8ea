/*
 * bench_cudnn — cnnkit's GPU batch norm and dropout against their cuDNN peers and a plain
 * device-to-device copy of the same tensor, at the seed model's shapes in both layouts; and the
 * dense probe: the model's Dense layers (ck_gdense_forward / _backward) at the seed model's
 * shapes against a raw cublasSgemm on the same buffers, the bias add alone, the first call, the
 * host-synchronized time (as a profiled step sees it) and TF32. A CUDA build and device only.
 *
 *   bench_cudnn [--quick] [--repeats R] [--json FILE] [--layout nchw|nhwc|both]
 *
 * bf16 rows (issue 16): the same cnnkit ops on bf16 words (a bf16 model's device storage), each
 * against a device copy of the same bf16 bytes (impl cnnkit_bf16 / copy_bf16; targets as fp32:
 * SpatialDropout <= 1.1x copy, BN+ReLU forward <= 1.5x, backward <= 3x).
 *
 * Timing: one cudaEvent pair around each single call, L2 flushed (memset of >= 2x L2) before
 * every repeat, 3 warm-up calls, median of the repeats. Correctness is bench_ops' part: it times
 * every op of the table (tests/ops) and re-checks the GPU against the CPU.
 *
 * Exit status: 0 done, 1 a call failed, 2 bad usage / no device.
 */
#define _POSIX_C_SOURCE 200809L

#include <cnnkit/cnnkit.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "bf16.h"       /* ck_bf16_pack_buffer: the bf16 rows' inputs */
#include "gpu_layers.h" /* ck_gdense_* and ck_cuda_bias_add: the dense probe; struct ck_tensor */
/* The legacy BN/dropout API used for the cuDNN peers is deprecated in cuDNN 9: with
 * CUDNN_WARN_DEPRECATED even the header warns, so the warning is off for it and for the peers. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include <cudnn.h>
#pragma GCC diagnostic pop

#define BENCH_SEED 0x5eedc0ffeeULL
#define BENCH_RATE 0.2f
#define TIMING_OFFSET 1000u /* dropout offset of the first timed call; +1 per call */

/* ---------------------------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------------------------- */

static void ck_check(const ck_context *ctx, ck_status st, const char *what, const char *file,
                     int line) {
    if (st == CK_STATUS_SUCCESS)
        return;
    fprintf(stderr, "bench_cudnn: %s:%d: %s failed: %s: %s\n", file, line, what,
            ck_status_string(st), ctx ? ck_context_last_error(ctx) : "(no context)");
    exit(1);
}
#define CK_CHECK(ctx, call) ck_check((ctx), (call), #call, __FILE__, __LINE__)

static void cuda_check(cudaError_t e, const char *what, const char *file, int line) {
    if (e == cudaSuccess)
        return;
    fprintf(stderr, "bench_cudnn: %s:%d: %s failed: %s\n", file, line, what, cudaGetErrorString(e));
    exit(1);
}
#define CUDA_CHECK(call) cuda_check((call), #call, __FILE__, __LINE__)

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "bench_cudnn: out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

static void *xrealloc(void *p, size_t bytes) {
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) {
        fprintf(stderr, "bench_cudnn: out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return q;
}

static uint32_t lcg_next(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*s >> 32);
}

/* uniform in [lo, hi) with 24 random bits */
static float lcg_uniform(uint64_t *s, float lo, float hi) {
    return lo + (hi - lo) * ((float)(lcg_next(s) >> 8) * (1.0f / 16777216.0f));
}

/* ---------------------------------------------------------------------------------------------
 * Shapes, ops, results
 * ------------------------------------------------------------------------------------------- */

typedef struct shape4 {
    int n, c, h, w;
} shape4;

static const shape4 k_gpu_shapes[] = {{256, 32, 26, 26}, {256, 32, 24, 24}, {256, 64, 10, 10},
                                      {256, 64, 8, 8},   {256, 512, 1, 1},  {1024, 32, 26, 26}};
static const shape4 k_gpu_quick_shapes[] = {{256, 32, 26, 26}, {256, 64, 10, 10}, {256, 512, 1, 1}};

typedef enum op_id {
    OP_COPY = 0, /* reference: cudaMemcpyAsync device to device (GPU only) */
    OP_SDROP_FWD,
    OP_SDROP_BWD,
    OP_DROP_FWD,
    OP_BN_FWD_TRAIN,
    OP_BN_FWD_TRAIN_SDROP,
    OP_BN_FWD_INFER,
    OP_BN_BWD,
    OP_COUNT
} op_id;

#define OP_FIRST_CK OP_SDROP_FWD

typedef struct op_info {
    const char *name;
    int traffic; /* minimum memory traffic in multiples of the tensor size T */
} op_info;

static const op_info k_ops[OP_COUNT] = {
    {"copy", 2},
    {"spatial_dropout_fwd", 2},
    {"spatial_dropout_bwd", 2},
    {"dropout_fwd", 2},
    {"bn_fwd_train_relu", 2},
    {"bn_fwd_train_relu_sdrop", 2},
    {"bn_fwd_infer_relu", 2},
    {"bn_bwd_relu", 3},
};

typedef struct result {
    op_id op;
    shape4 s;
    ck_layout layout;
    const char *impl; /* "cnnkit", "copy", "cudnn", "cudnn_spatial", ... */
    int na;           /* 1: the implementation refused the shape/layout */
    double median_us;
    double ratio; /* to the copy; < 0 when there is no copy reference */
    double gbps;
    char note[96];
} result;

typedef struct report {
    result *res;
    size_t nres, capres;
} report;

static result *report_add_result(report *r) {
    if (r->nres == r->capres) {
        r->capres = r->capres ? 2 * r->capres : 64;
        r->res = (result *)xrealloc(r->res, r->capres * sizeof *r->res);
    }
    result *x = &r->res[r->nres++];
    memset(x, 0, sizeof *x);
    return x;
}

static const char *layout_name(ck_layout l) {
    return l == CK_LAYOUT_NHWC ? "nhwc" : "nchw";
}

/* ---------------------------------------------------------------------------------------------
 * Host data: deterministic inputs in the tensor's layout
 * ------------------------------------------------------------------------------------------- */

typedef struct host_data {
    shape4 s;
    ck_layout layout;
    size_t count;
    float *x, *dy;         /* count floats, in `layout` */
    float *gamma, *beta;   /* C */
    float *rmean0, *rvar0; /* running stats before training: 0 and 1 */
} host_data;

static size_t offset_of(shape4 s, ck_layout l, int n, int c, int h, int w) {
    if (l == CK_LAYOUT_NCHW)
        return (((size_t)n * s.c + c) * s.h + h) * s.w + w;
    return (((size_t)n * s.h + h) * s.w + w) * s.c + c;
}

static void host_data_init(host_data *h, shape4 s, ck_layout layout) {
    memset(h, 0, sizeof *h);
    h->s = s;
    h->layout = layout;
    h->count = (size_t)s.n * s.c * s.h * s.w;
    h->x = (float *)xmalloc(h->count * sizeof(float));
    h->dy = (float *)xmalloc(h->count * sizeof(float));
    float *chan = (float *)xmalloc(6 * (size_t)s.c * sizeof(float));
    h->gamma = chan;
    h->beta = chan + s.c;
    h->rmean0 = chan + 2 * s.c;
    h->rvar0 = chan + 3 * s.c;
    float *shift = chan + 4 * s.c, *scale = chan + 5 * s.c;

    uint64_t st = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)s.n << 40) ^ ((uint64_t)s.c << 24) ^
                  ((uint64_t)s.h << 12) ^ (uint64_t)s.w;
    for (int c = 0; c < s.c; ++c) {
        h->gamma[c] = lcg_uniform(&st, 0.5f, 1.5f);
        h->beta[c] = lcg_uniform(&st, -0.5f, 0.5f);
        h->rmean0[c] = 0.0f;
        h->rvar0[c] = 1.0f;
        shift[c] = lcg_uniform(&st, -1.0f, 1.0f);
        scale[c] = lcg_uniform(&st, 0.25f, 2.0f);
    }
    /* logical order, so that both layouts hold the same logical tensor */
    for (int n = 0; n < s.n; ++n)
        for (int c = 0; c < s.c; ++c)
            for (int y = 0; y < s.h; ++y)
                for (int x = 0; x < s.w; ++x) {
                    size_t o = offset_of(s, layout, n, c, y, x);
                    h->x[o] = shift[c] + scale[c] * lcg_uniform(&st, -1.0f, 1.0f);
                    h->dy[o] = lcg_uniform(&st, -1.0f, 1.0f);
                }
}

static void host_data_free(host_data *h) {
    free(h->x);
    free(h->dy);
    free(h->gamma); /* owns all the per-channel arrays */
    memset(h, 0, sizeof *h);
}

/* ---------------------------------------------------------------------------------------------
 * cnnkit tensors of one shape/layout on one context, and the ops
 * ------------------------------------------------------------------------------------------- */

typedef struct bench_tensors {
    ck_context *ctx;
    shape4 s;
    size_t count;
    ck_tensor *x, *y, *dy, *dx;
    ck_tensor *gamma, *beta, *rmean, *rvar, *smean, *sinv, *dgamma, *dbeta;
    ck_workspace *ws;
    ck_bn_desc bn;
} bench_tensors;

static void bt_create(ck_context *ctx, bench_tensors *bt, const host_data *h) {
    memset(bt, 0, sizeof *bt);
    const shape4 s = h->s;
    bt->ctx = ctx;
    bt->s = s;
    bt->count = h->count;
    ck_tensor **big[] = {&bt->x, &bt->y, &bt->dy, &bt->dx};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; ++i)
        CK_CHECK(ctx, ck_tensor_create(ctx, big[i], h->layout, s.n, s.c, s.h, s.w));
    ck_tensor **par[] = {&bt->gamma, &bt->beta, &bt->rmean,  &bt->rvar,
                         &bt->smean, &bt->sinv, &bt->dgamma, &bt->dbeta};
    for (size_t i = 0; i < sizeof par / sizeof par[0]; ++i)
        CK_CHECK(ctx, ck_tensor_create(ctx, par[i], CK_LAYOUT_NCHW, 1, s.c, 1, 1));
    CK_CHECK(ctx, ck_tensor_upload(ctx, bt->x, h->x, h->count));
    CK_CHECK(ctx, ck_tensor_upload(ctx, bt->dy, h->dy, h->count));
    CK_CHECK(ctx, ck_tensor_upload(ctx, bt->gamma, h->gamma, (size_t)s.c));
    CK_CHECK(ctx, ck_tensor_upload(ctx, bt->beta, h->beta, (size_t)s.c));
    CK_CHECK(ctx, ck_tensor_upload(ctx, bt->rmean, h->rmean0, (size_t)s.c));
    CK_CHECK(ctx, ck_tensor_upload(ctx, bt->rvar, h->rvar0, (size_t)s.c));
    CK_CHECK(ctx, ck_tensor_fill(ctx, bt->y, 0.0f));
    CK_CHECK(ctx, ck_tensor_fill(ctx, bt->dx, 0.0f));
    size_t ws_bytes = 0;
    CK_CHECK(ctx, ck_batchnorm_workspace_size(ctx, bt->x, &ws_bytes));
    CK_CHECK(ctx, ck_workspace_create(ctx, &bt->ws, ws_bytes));
    CK_CHECK(ctx, ck_bn_desc_init(&bt->bn, CK_BN_KERAS));
    bt->bn.activation = CK_ACT_RELU;
}

static void bt_destroy(bench_tensors *bt) {
    ck_tensor *all[] = {bt->x,     bt->y,    bt->dy,    bt->dx,   bt->gamma,  bt->beta,
                        bt->rmean, bt->rvar, bt->smean, bt->sinv, bt->dgamma, bt->dbeta};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        ck_tensor_destroy(all[i]);
    ck_workspace_destroy(bt->ws);
    memset(bt, 0, sizeof *bt);
}

/* Runs one cnnkit op; exits on failure. */
static void run_ck_op(bench_tensors *bt, op_id op, uint64_t offset) {
    ck_context *ctx = bt->ctx;
    ck_dropout_desc dd;
    dd.rate = BENCH_RATE;
    dd.offset = offset;
    dd.sample0 = 0;
    switch (op) {
    case OP_SDROP_FWD:
        CK_CHECK(ctx, ck_spatial_dropout_forward(ctx, &dd, CK_MODE_TRAINING, bt->x, bt->y, NULL));
        break;
    case OP_SDROP_BWD:
        CK_CHECK(ctx,
                 ck_spatial_dropout_backward(ctx, &dd, CK_MODE_TRAINING, bt->dy, bt->dx, NULL));
        break;
    case OP_DROP_FWD:
        CK_CHECK(ctx, ck_dropout_forward(ctx, &dd, CK_MODE_TRAINING, bt->x, bt->y, NULL));
        break;
    case OP_BN_FWD_TRAIN:
    case OP_BN_FWD_TRAIN_SDROP:
        CK_CHECK(ctx, ck_batchnorm_forward_training(
                          ctx, &bt->bn, bt->x, bt->gamma, bt->beta, bt->rmean, bt->rvar, bt->smean,
                          bt->sinv, op == OP_BN_FWD_TRAIN_SDROP ? &dd : NULL, bt->y, bt->ws));
        break;
    case OP_BN_FWD_INFER:
        CK_CHECK(ctx, ck_batchnorm_forward_inference(ctx, &bt->bn, bt->x, bt->gamma, bt->beta,
                                                     bt->rmean, bt->rvar, bt->y));
        break;
    case OP_BN_BWD:
        CK_CHECK(ctx,
                 ck_batchnorm_backward(ctx, &bt->bn, bt->x, bt->dy, bt->gamma, bt->beta, bt->smean,
                                       bt->sinv, NULL, bt->dx, bt->dgamma, bt->dbeta, bt->ws));
        break;
    default:
        fprintf(stderr, "bench_cudnn: internal error: op %d is not a cnnkit op\n", (int)op);
        exit(1);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Timing
 * ------------------------------------------------------------------------------------------- */

typedef struct gpu_env {
    int ordinal;
    cudaStream_t stream;
    cudaEvent_t start, stop;
    void *flush;
    size_t flush_bytes;
    char name[256];
    int l2_bytes;
} gpu_env;

typedef struct timer {
    int warmup, repeats;
    double *samples; /* repeats doubles */
    gpu_env *g;
} timer;

/* One call of the timed operation; call counts up across warm-up and repeats. 0 on success. */
typedef int (*bench_fn)(void *user, int call);

/* Median time of fn in microseconds; returns fn's first non-zero result, else 0. */
static int time_fn(const timer *t, bench_fn fn, void *user, double *median_us) {
    int call = 0, rc;
    for (int i = 0; i < t->warmup; ++i)
        if ((rc = fn(user, call++)) != 0)
            return rc;
    gpu_env *g = t->g;
    CUDA_CHECK(cudaStreamSynchronize(g->stream));
    for (int r = 0; r < t->repeats; ++r) {
        CUDA_CHECK(cudaMemsetAsync(g->flush, r & 0xff, g->flush_bytes, g->stream));
        CUDA_CHECK(cudaEventRecord(g->start, g->stream));
        rc = fn(user, call++);
        CUDA_CHECK(cudaEventRecord(g->stop, g->stream));
        CUDA_CHECK(cudaEventSynchronize(g->stop));
        if (rc != 0)
            return rc;
        float ms = 0.0f;
        CUDA_CHECK(cudaEventElapsedTime(&ms, g->start, g->stop));
        t->samples[r] = (double)ms * 1e3;
    }
    *median_us = bench_median(t->samples, t->repeats);
    return 0;
}

typedef struct ck_call {
    bench_tensors *bt;
    op_id op;
} ck_call;

static int ck_call_fn(void *user, int call) {
    ck_call *c = (ck_call *)user;
    run_ck_op(c->bt, c->op, TIMING_OFFSET + (uint64_t)call);
    return 0;
}

static void record(report *rep, const host_data *h, op_id op, const char *impl, int na, double us,
                   double copy_us, const char *note) {
    result *r = report_add_result(rep);
    r->op = op;
    r->s = h->s;
    r->layout = h->layout;
    r->impl = impl;
    r->na = na;
    r->median_us = na ? 0.0 : us;
    r->ratio = (!na && copy_us > 0.0) ? us / copy_us : -1.0;
    const double elem = strstr(impl, "bf16") ? 2.0 : (double)sizeof(float);
    double bytes = (double)k_ops[op].traffic * (double)h->count * elem;
    r->gbps = (!na && us > 0.0) ? bytes / (us * 1e3) : 0.0;
    if (note)
        snprintf(r->note, sizeof r->note, "%s", note);
}

/* ---------------------------------------------------------------------------------------------
 * cuDNN peers (deprecated-in-9 legacy BN/dropout API; warnings silenced here on purpose)
 * ------------------------------------------------------------------------------------------- */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

typedef struct cudnn_env {
    int ok; /* handle usable */
    int drop_ok;
    cudnnHandle_t handle;
    cudnnActivationDescriptor_t act;
    cudnnDropoutDescriptor_t drop;
    void *drop_states;
    size_t drop_states_bytes;
    size_t version;
} cudnn_env;

static int cudnn_warn(cudnnStatus_t st, const char *what) {
    if (st == CUDNN_STATUS_SUCCESS)
        return 1;
    fprintf(stderr, "bench_cudnn: warning: %s: %s (cuDNN peers n/a)\n", what,
            cudnnGetErrorString(st));
    return 0;
}

static void cudnn_env_create(cudnn_env *e, cudaStream_t stream) {
    memset(e, 0, sizeof *e);
    e->version = cudnnGetVersion();
    if (!cudnn_warn(cudnnCreate(&e->handle), "cudnnCreate"))
        return;
    if (!cudnn_warn(cudnnSetStream(e->handle, stream), "cudnnSetStream") ||
        !cudnn_warn(cudnnCreateActivationDescriptor(&e->act), "cudnnCreateActivationDescriptor") ||
        !cudnn_warn(
            cudnnSetActivationDescriptor(e->act, CUDNN_ACTIVATION_RELU, CUDNN_PROPAGATE_NAN, 0.0),
            "cudnnSetActivationDescriptor"))
        return;
    e->ok = 1;
    /* dropout states: set up once, outside any timing */
    if (!cudnn_warn(cudnnCreateDropoutDescriptor(&e->drop), "cudnnCreateDropoutDescriptor") ||
        !cudnn_warn(cudnnDropoutGetStatesSize(e->handle, &e->drop_states_bytes),
                    "cudnnDropoutGetStatesSize"))
        return;
    CUDA_CHECK(cudaMalloc(&e->drop_states, e->drop_states_bytes ? e->drop_states_bytes : 1));
    if (!cudnn_warn(cudnnSetDropoutDescriptor(e->drop, e->handle, BENCH_RATE, e->drop_states,
                                              e->drop_states_bytes, 1234ULL),
                    "cudnnSetDropoutDescriptor"))
        return;
    CUDA_CHECK(cudaStreamSynchronize(stream));
    e->drop_ok = 1;
}

static void cudnn_env_destroy(cudnn_env *e) {
    if (e->drop)
        cudnnDestroyDropoutDescriptor(e->drop);
    if (e->act)
        cudnnDestroyActivationDescriptor(e->act);
    if (e->handle)
        cudnnDestroy(e->handle);
    cudaFree(e->drop_states);
    memset(e, 0, sizeof *e);
}

typedef enum cudnn_kind {
    CD_DROPOUT = 0,
    CD_BN_FWD_SPATIAL,
    CD_BN_FWD_PERSISTENT,
    CD_BN_FWD_EX,
    CD_BN_INFER,
    CD_BN_BWD_SPATIAL,
    CD_BN_BWD_EX,
    CD_COUNT
} cudnn_kind;

typedef struct cudnn_peer_info {
    op_id op;
    const char *impl;
} cudnn_peer_info;

static const cudnn_peer_info k_cudnn_peers[CD_COUNT] = {
    {OP_DROP_FWD, "cudnn"},
    {OP_BN_FWD_TRAIN, "cudnn_spatial"},
    {OP_BN_FWD_TRAIN, "cudnn_persistent"},
    {OP_BN_FWD_TRAIN, "cudnn_ex_bn_act"},
    {OP_BN_FWD_INFER, "cudnn_spatial"},
    {OP_BN_BWD, "cudnn_spatial"},
    {OP_BN_BWD, "cudnn_ex_bn_act"},
};

typedef struct cudnn_shape {
    cudnn_env *e;
    cudnnTensorDescriptor_t xd, bnd;
    int desc_ok;
    const float *x, *dy, *gamma, *beta; /* borrowed from the cnnkit tensors */
    float *y, *dx;                      /* borrowed: cuDNN writes the cnnkit outputs */
    float *stats; /* owned: running mean, running var, saved mean, saved invstd, dgamma, dbeta */
    float *rmean, *rvar, *smean, *sinv, *dgamma, *dbeta;
    void *drop_reserve;
    size_t drop_reserve_bytes;
    int drop_ok;
    int ex_ok; /* the BN_ACTIVATION size queries succeeded for ex_mode */
    cudnnBatchNormMode_t ex_mode;
    char ex_note[96];
    void *ex_ws, *ex_reserve;
    size_t ex_ws_bytes, ex_reserve_bytes;
    double eps, factor;
    cudnnStatus_t last;
} cudnn_shape;

static void cudnn_shape_create(cudnn_shape *cs, cudnn_env *e, bench_tensors *bt,
                               const host_data *h) {
    memset(cs, 0, sizeof *cs);
    cs->e = e;
    cs->eps = bt->bn.epsilon;
    cs->factor = bt->bn.average_factor;
    cs->x = ck_tensor_data(bt->x);
    cs->dy = ck_tensor_data(bt->dy);
    cs->gamma = ck_tensor_data(bt->gamma);
    cs->beta = ck_tensor_data(bt->beta);
    cs->y = ck_tensor_data(bt->y);
    cs->dx = ck_tensor_data(bt->dx);
    const size_t C = (size_t)h->s.c;
    CUDA_CHECK(cudaMalloc((void **)&cs->stats, 6 * C * sizeof(float)));
    cs->rmean = cs->stats;
    cs->rvar = cs->stats + C;
    cs->smean = cs->stats + 2 * C;
    cs->sinv = cs->stats + 3 * C;
    cs->dgamma = cs->stats + 4 * C;
    cs->dbeta = cs->stats + 5 * C;
    CUDA_CHECK(cudaMemcpy(cs->rmean, h->rmean0, C * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(cs->rvar, h->rvar0, C * sizeof(float), cudaMemcpyHostToDevice));
    snprintf(cs->ex_note, sizeof cs->ex_note, "n/a: cuDNN unavailable");
    if (!e->ok)
        return;

    cudnnTensorFormat_t fmt = h->layout == CK_LAYOUT_NHWC ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    if (!cudnn_warn(cudnnCreateTensorDescriptor(&cs->xd), "cudnnCreateTensorDescriptor") ||
        !cudnn_warn(cudnnCreateTensorDescriptor(&cs->bnd), "cudnnCreateTensorDescriptor") ||
        !cudnn_warn(cudnnSetTensor4dDescriptor(cs->xd, fmt, CUDNN_DATA_FLOAT, h->s.n, h->s.c,
                                               h->s.h, h->s.w),
                    "cudnnSetTensor4dDescriptor") ||
        !cudnn_warn(cudnnDeriveBNTensorDescriptor(cs->bnd, cs->xd, CUDNN_BATCHNORM_SPATIAL),
                    "cudnnDeriveBNTensorDescriptor"))
        return;
    cs->desc_ok = 1;

    if (e->drop_ok &&
        cudnnDropoutGetReserveSpaceSize(cs->xd, &cs->drop_reserve_bytes) == CUDNN_STATUS_SUCCESS) {
        CUDA_CHECK(
            cudaMalloc(&cs->drop_reserve, cs->drop_reserve_bytes ? cs->drop_reserve_bytes : 1));
        cs->drop_ok = 1;
    }

    /* Fused BN+ReLU: the persistent mode first (the one cuDNN fuses), then plain spatial. */
    const cudnnBatchNormMode_t modes[2] = {CUDNN_BATCHNORM_SPATIAL_PERSISTENT,
                                           CUDNN_BATCHNORM_SPATIAL};
    const char *mode_names[2] = {"SPATIAL_PERSISTENT", "SPATIAL"};
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    for (int m = 0; m < 2 && !cs->ex_ok; ++m) {
        size_t fws = 0, bws = 0, rs = 0;
        const cudnnBatchNormOps_t ops = CUDNN_BATCHNORM_OPS_BN_ACTIVATION;
        st = cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(
            e->handle, modes[m], ops, cs->xd, NULL, cs->xd, cs->bnd, e->act, &fws);
        if (st == CUDNN_STATUS_SUCCESS)
            st = cudnnGetBatchNormalizationBackwardExWorkspaceSize(e->handle, modes[m], ops, cs->xd,
                                                                   cs->xd, cs->xd, NULL, cs->xd,
                                                                   cs->bnd, e->act, &bws);
        if (st == CUDNN_STATUS_SUCCESS)
            st = cudnnGetBatchNormalizationTrainingExReserveSpaceSize(e->handle, modes[m], ops,
                                                                      e->act, cs->xd, &rs);
        if (st != CUDNN_STATUS_SUCCESS)
            continue;
        cs->ex_ok = 1;
        cs->ex_mode = modes[m];
        cs->ex_ws_bytes = fws > bws ? fws : bws;
        cs->ex_reserve_bytes = rs;
        snprintf(cs->ex_note, sizeof cs->ex_note, "mode %s", mode_names[m]);
    }
    if (!cs->ex_ok) {
        snprintf(cs->ex_note, sizeof cs->ex_note, "n/a: %s", cudnnGetErrorString(st));
        return;
    }
    if (cs->ex_ws_bytes)
        CUDA_CHECK(cudaMalloc(&cs->ex_ws, cs->ex_ws_bytes));
    if (cs->ex_reserve_bytes)
        CUDA_CHECK(cudaMalloc(&cs->ex_reserve, cs->ex_reserve_bytes));
}

static void cudnn_shape_destroy(cudnn_shape *cs) {
    if (cs->xd)
        cudnnDestroyTensorDescriptor(cs->xd);
    if (cs->bnd)
        cudnnDestroyTensorDescriptor(cs->bnd);
    cudaFree(cs->stats);
    cudaFree(cs->drop_reserve);
    cudaFree(cs->ex_ws);
    cudaFree(cs->ex_reserve);
    memset(cs, 0, sizeof *cs);
}

static cudnnStatus_t cudnn_run(cudnn_shape *cs, cudnn_kind k) {
    const float one = 1.0f, zero = 0.0f;
    cudnnHandle_t h = cs->e->handle;
    const cudnnBatchNormOps_t act = CUDNN_BATCHNORM_OPS_BN_ACTIVATION;
    switch (k) {
    case CD_DROPOUT:
        return cudnnDropoutForward(h, cs->e->drop, cs->xd, cs->x, cs->xd, cs->y, cs->drop_reserve,
                                   cs->drop_reserve_bytes);
    case CD_BN_FWD_SPATIAL:
    case CD_BN_FWD_PERSISTENT: {
        const cudnnBatchNormMode_t mode =
            k == CD_BN_FWD_SPATIAL ? CUDNN_BATCHNORM_SPATIAL : CUDNN_BATCHNORM_SPATIAL_PERSISTENT;
        return cudnnBatchNormalizationForwardTraining(
            h, mode, &one, &zero, cs->xd, cs->x, cs->xd, cs->y, cs->bnd, cs->gamma, cs->beta,
            cs->factor, cs->rmean, cs->rvar, cs->eps, cs->smean, cs->sinv);
    }
    case CD_BN_FWD_EX:
        return cudnnBatchNormalizationForwardTrainingEx(
            h, cs->ex_mode, act, &one, &zero, cs->xd, cs->x, NULL, NULL, cs->xd, cs->y, cs->bnd,
            cs->gamma, cs->beta, cs->factor, cs->rmean, cs->rvar, cs->eps, cs->smean, cs->sinv,
            cs->e->act, cs->ex_ws, cs->ex_ws_bytes, cs->ex_reserve, cs->ex_reserve_bytes);
    case CD_BN_INFER:
        return cudnnBatchNormalizationForwardInference(
            h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, cs->xd, cs->x, cs->xd, cs->y, cs->bnd,
            cs->gamma, cs->beta, cs->rmean, cs->rvar, cs->eps);
    case CD_BN_BWD_SPATIAL:
        return cudnnBatchNormalizationBackward(h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero,
                                               cs->xd, cs->x, cs->xd, cs->dy, cs->xd, cs->dx,
                                               cs->bnd, cs->gamma, cs->dgamma, cs->dbeta, cs->eps,
                                               cs->smean, cs->sinv);
    case CD_BN_BWD_EX:
        return cudnnBatchNormalizationBackwardEx(
            h, cs->ex_mode, act, &one, &zero, &one, &zero, cs->xd, cs->x, cs->xd, cs->y, cs->xd,
            cs->dy, NULL, NULL, cs->xd, cs->dx, cs->bnd, cs->gamma, cs->beta, cs->dgamma, cs->dbeta,
            cs->eps, cs->smean, cs->sinv, cs->e->act, cs->ex_ws, cs->ex_ws_bytes, cs->ex_reserve,
            cs->ex_reserve_bytes);
    default:
        return CUDNN_STATUS_BAD_PARAM;
    }
}

typedef struct cudnn_call {
    cudnn_shape *cs;
    cudnn_kind kind;
} cudnn_call;

static int cudnn_call_fn(void *user, int call) {
    (void)call;
    cudnn_call *c = (cudnn_call *)user;
    c->cs->last = cudnn_run(c->cs, c->kind);
    return c->cs->last != CUDNN_STATUS_SUCCESS;
}

/* Times every cuDNN peer of the shape; refusals are recorded as n/a. */
static void time_cudnn_peers(const timer *t, cudnn_shape *cs, const host_data *h, report *rep,
                             double copy_us) {
    int ex_fwd_ok = 0;
    for (int k = 0; k < CD_COUNT; ++k) {
        const cudnn_kind kind = (cudnn_kind)k;
        const cudnn_peer_info *pi = &k_cudnn_peers[k];
        char note[96] = "";
        int avail = cs->desc_ok;
        if (kind == CD_DROPOUT) {
            avail = avail && cs->drop_ok;
            if (!avail)
                snprintf(note, sizeof note, "n/a: dropout descriptor unavailable");
        } else if (kind == CD_BN_FWD_EX || kind == CD_BN_BWD_EX) {
            avail = avail && cs->ex_ok && (kind == CD_BN_FWD_EX || ex_fwd_ok);
            snprintf(note, sizeof note, "%s",
                     cs->ex_ok && kind == CD_BN_BWD_EX && !ex_fwd_ok ? "n/a: forward Ex refused"
                                                                     : cs->ex_note);
        } else if (!avail) {
            snprintf(note, sizeof note, "n/a: cuDNN unavailable");
        }
        if (!avail) {
            record(rep, h, pi->op, pi->impl, 1, 0.0, copy_us, note);
            continue;
        }
        /* backward needs the saved stats (and, for Ex, the reserve space and y) of its forward */
        cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
        if (kind == CD_BN_BWD_SPATIAL)
            st = cudnn_run(cs, CD_BN_FWD_SPATIAL);
        else if (kind == CD_BN_BWD_EX)
            st = cudnn_run(cs, CD_BN_FWD_EX);
        double us = 0.0;
        cudnn_call call = {cs, kind};
        if (st == CUDNN_STATUS_SUCCESS && time_fn(t, cudnn_call_fn, &call, &us) == 0) {
            record(rep, h, pi->op, pi->impl, 0, us, copy_us, note[0] ? note : NULL);
            if (kind == CD_BN_FWD_EX)
                ex_fwd_ok = 1;
        } else {
            if (st == CUDNN_STATUS_SUCCESS)
                st = cs->last;
            snprintf(note, sizeof note, "n/a: %s", cudnnGetErrorString(st));
            (void)cudaGetLastError(); /* a refused call must not poison later ones */
            CUDA_CHECK(cudaStreamSynchronize(t->g->stream));
            record(rep, h, pi->op, pi->impl, 1, 0.0, copy_us, note);
        }
    }
}

typedef struct copy_call {
    void *dst;
    const void *src;
    size_t bytes;
    cudaStream_t stream;
} copy_call;

static int copy_call_fn(void *user, int call) {
    (void)call;
    copy_call *c = (copy_call *)user;
    CUDA_CHECK(cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice, c->stream));
    return 0;
}

static void gpu_env_create(gpu_env *g, int ordinal) {
    memset(g, 0, sizeof *g);
    g->ordinal = ordinal;
    CUDA_CHECK(cudaSetDevice(ordinal));
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, ordinal));
    snprintf(g->name, sizeof g->name, "%s", prop.name);
    CUDA_CHECK(cudaDeviceGetAttribute(&g->l2_bytes, cudaDevAttrL2CacheSize, ordinal));
    g->flush_bytes = 2 * (size_t)(g->l2_bytes > 0 ? g->l2_bytes : 32 << 20);
    if (g->flush_bytes < ((size_t)8 << 20))
        g->flush_bytes = (size_t)8 << 20;
    CUDA_CHECK(cudaMalloc(&g->flush, g->flush_bytes));
    CUDA_CHECK(cudaStreamCreate(&g->stream));
    CUDA_CHECK(cudaEventCreate(&g->start));
    CUDA_CHECK(cudaEventCreate(&g->stop));
}

static void gpu_env_destroy(gpu_env *g) {
    cudaEventDestroy(g->start);
    cudaEventDestroy(g->stop);
    cudaStreamDestroy(g->stream);
    cudaFree(g->flush);
    memset(g, 0, sizeof *g);
}

#pragma GCC diagnostic pop

/* ---------------------------------------------------------------------------------------------
 * Dense probe: the model's Dense layers (ck_gdense_forward / _backward: cuBLAS GEMM + bias
 * kernel) against a raw cublasSgemm on the same buffers, to tell the GEMM, the bias add, the
 * first-call cost and the host-synchronized (profiler-style) time apart.
 * ------------------------------------------------------------------------------------------- */
typedef struct dense_shape {
    int n, in, out;
} dense_shape;

/* the seed model's Dense layers (1024 -> 512, 512 -> 10) at the bench_train batch sizes */
static const dense_shape k_dense_shapes[] = {{128, 1024, 512}, {512, 1024, 512}, {2048, 1024, 512},
                                             {128, 512, 10},   {512, 512, 10},   {2048, 512, 10}};
static const dense_shape k_dense_quick_shapes[] = {{512, 1024, 512}, {512, 512, 10}};

typedef enum dense_col {
    DC_GEMM_FWD,    /* raw cublasSgemm, the forward's product */
    DC_BIAS,        /* the bias-add kernel alone */
    DC_CK_FWD,      /* ck_gdense_forward: GEMM + bias */
    DC_CK_FWD_WALL, /* the same on the host clock, stream drained before and after (as --profile) */
    DC_CK_FWD_FIRST, /* its first call for the shape in this process, host clock, drained */
    DC_GEMM_BWD,     /* raw: the kernel-gradient and input-gradient GEMMs */
    DC_CK_BWD,       /* ck_gdense_backward: both GEMMs + bias gradient */
    DC_TF32_FWD,     /* ck_gdense_forward with ck_context_set_math(CK_MATH_TF32) */
    DC_TF32_BWD,
    DC_COUNT
} dense_col;

static const char *const k_dense_col[DC_COUNT] = {
    "gemm_fwd_us", "bias_us",   "ck_fwd_us",   "ck_fwd_wall_us", "ck_fwd_first_us",
    "gemm_bwd_us", "ck_bwd_us", "tf32_fwd_us", "tf32_bwd_us"};

typedef struct dense_row {
    dense_shape s;
    double us[DC_COUNT];
} dense_row;

typedef struct dense_call {
    ck_context *ctx;
    cublasHandle_t blas;
    dense_shape s;
    float *x, *k, *b, *y, *dy, *dx, *dk, *db;
    void *ws;
    dense_col what;
} dense_call;

static void blas_check(cublasStatus_t st, const char *what) {
    if (st == CUBLAS_STATUS_SUCCESS)
        return;
    fprintf(stderr, "bench_cudnn: %s failed: cuBLAS status %d\n", what, (int)st);
    exit(1);
}

static int dense_call_fn(void *user, int call) {
    (void)call;
    dense_call *d = (dense_call *)user;
    const dense_shape s = d->s;
    const float one = 1.0f, zero = 0.0f;
    switch (d->what) {
    case DC_GEMM_FWD: /* the same product ck_gdense_forward asks for */
        blas_check(cublasSgemm(d->blas, CUBLAS_OP_N, CUBLAS_OP_N, s.out, s.n, s.in, &one, d->k,
                               s.out, d->x, s.in, &zero, d->y, s.out),
                   "cublasSgemm (forward)");
        break;
    case DC_BIAS:
        CUDA_CHECK((cudaError_t)ck_cuda_bias_add(d->y, d->b, s.n, s.out, CK_KDT_F32,
                                                 ck_context_stream(d->ctx)));
        break;
    case DC_GEMM_BWD:
        blas_check(cublasSgemm(d->blas, CUBLAS_OP_N, CUBLAS_OP_T, s.out, s.in, s.n, &one, d->dy,
                               s.out, d->x, s.in, &zero, d->dk, s.out),
                   "cublasSgemm (kernel gradient)");
        blas_check(cublasSgemm(d->blas, CUBLAS_OP_T, CUBLAS_OP_N, s.in, s.n, s.out, &one, d->k,
                               s.out, d->dy, s.out, &zero, d->dx, s.in),
                   "cublasSgemm (input gradient)");
        break;
    case DC_CK_BWD:
    case DC_TF32_BWD:
        CK_CHECK(d->ctx, ck_gdense_backward(d->ctx, s.n, s.in, s.out, d->x, d->k, d->dy, d->dx,
                                            d->dk, d->db, d->ws));
        break;
    default:
        CK_CHECK(d->ctx, ck_gdense_forward(d->ctx, s.n, s.in, s.out, d->x, d->k, d->b, d->y));
        break;
    }
    return 0;
}

/* Median host time of fn with the stream drained before and after each call (what a profiled
 * step measures per node). */
static double wall_us(const timer *t, dense_call *d) {
    cudaStream_t st = t->g->stream;
    for (int i = 0; i < t->warmup; ++i)
        dense_call_fn(d, i);
    for (int r = 0; r < t->repeats; ++r) {
        CUDA_CHECK(cudaStreamSynchronize(st));
        const double t0 = bench_now_us();
        dense_call_fn(d, r);
        CUDA_CHECK(cudaStreamSynchronize(st));
        t->samples[r] = bench_now_us() - t0;
    }
    return bench_median(t->samples, t->repeats);
}

static float *dev_floats(size_t n, uint64_t seed) {
    float *h = (float *)xmalloc(n * sizeof(float)), *d = NULL;
    uint64_t st = seed;
    for (size_t i = 0; i < n; ++i)
        h[i] = lcg_uniform(&st, -1.0f, 1.0f);
    CUDA_CHECK(cudaMalloc((void **)&d, n * sizeof(float)));
    CUDA_CHECK(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice));
    free(h);
    return d;
}

/* Times every column for each shape; returns the rows (nrows of them). */
static dense_row *dense_probe(const timer *t, ck_context *ctx, int quick, size_t *nrows) {
    const dense_shape *shapes = quick ? k_dense_quick_shapes : k_dense_shapes;
    const size_t ns = quick ? sizeof k_dense_quick_shapes / sizeof *shapes
                            : sizeof k_dense_shapes / sizeof *shapes;
    dense_row *rows = (dense_row *)xmalloc(ns * sizeof *rows);
    cublasHandle_t blas = NULL;
    /* a handle of its own, set up as the context's (strict fp32, the same stream) */
    blas_check(cublasCreate(&blas), "cublasCreate");
    blas_check(
        cublasSetMathMode(blas, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
                                               CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
        "cublasSetMathMode");
    blas_check(cublasSetStream(blas, t->g->stream), "cublasSetStream");
    for (size_t i = 0; i < ns; ++i) {
        const dense_shape s = shapes[i];
        dense_call d;
        memset(&d, 0, sizeof d);
        d.ctx = ctx;
        d.blas = blas;
        d.s = s;
        d.x = dev_floats((size_t)s.n * s.in, 1 + i);
        d.k = dev_floats((size_t)s.in * s.out, 2 + i);
        d.b = dev_floats((size_t)s.out, 3 + i);
        d.dy = dev_floats((size_t)s.n * s.out, 4 + i);
        CUDA_CHECK(cudaMalloc((void **)&d.y, (size_t)s.n * s.out * sizeof(float)));
        CUDA_CHECK(cudaMalloc((void **)&d.dx, (size_t)s.n * s.in * sizeof(float)));
        CUDA_CHECK(cudaMalloc((void **)&d.dk, (size_t)s.in * s.out * sizeof(float)));
        CUDA_CHECK(cudaMalloc((void **)&d.db, (size_t)s.out * sizeof(float)));
        CUDA_CHECK(cudaMalloc(&d.ws, ck_gdense_workspace_bytes(s.out)));
        dense_row *r = &rows[i];
        r->s = s;
        /* first: nothing has run this shape through ck_gdense_forward in this process */
        CUDA_CHECK(cudaStreamSynchronize(t->g->stream));
        double t0 = bench_now_us();
        d.what = DC_CK_FWD;
        dense_call_fn(&d, 0);
        CUDA_CHECK(cudaStreamSynchronize(t->g->stream));
        r->us[DC_CK_FWD_FIRST] = bench_now_us() - t0;
        r->us[DC_CK_FWD_WALL] = wall_us(t, &d);
        const dense_col timed[] = {DC_GEMM_FWD, DC_BIAS, DC_CK_FWD, DC_GEMM_BWD, DC_CK_BWD};
        for (size_t c = 0; c < sizeof timed / sizeof *timed; ++c) {
            d.what = timed[c];
            time_fn(t, dense_call_fn, &d, &r->us[timed[c]]);
        }
        CK_CHECK(ctx, ck_context_set_math(ctx, CK_MATH_TF32));
        d.what = DC_TF32_FWD;
        time_fn(t, dense_call_fn, &d, &r->us[DC_TF32_FWD]);
        d.what = DC_TF32_BWD;
        time_fn(t, dense_call_fn, &d, &r->us[DC_TF32_BWD]);
        CK_CHECK(ctx, ck_context_set_math(ctx, CK_MATH_STRICT_FP32));
        CUDA_CHECK(cudaStreamSynchronize(t->g->stream));
        float *all[] = {d.x, d.k, d.b, d.dy, d.y, d.dx, d.dk, d.db};
        for (size_t k = 0; k < sizeof all / sizeof *all; ++k)
            cudaFree(all[k]);
        cudaFree(d.ws);
    }
    cublasDestroy(blas);
    *nrows = ns;
    return rows;
}

static void print_dense(const dense_row *rows, size_t n, int repeats) {
    printf("\n== dense probe: ck_gdense_* vs raw cublasSgemm, same buffers, median of %d ==\n",
           repeats);
    printf("(us; GPU columns cudaEvent per call with L2 flushed; wall: host clock with the stream "
           "drained around each call, as --profile; first: the shape's first call)\n");
    printf("%-16s %8s %8s %8s %8s %9s %8s %8s %8s %8s %8s\n", "n x in -> out", "gemm", "bias",
           "ck fwd", "fwd wall", "fwd first", "TFLOP/s", "gemm bwd", "ck bwd", "tf32 fwd",
           "tf32 bwd");
    for (size_t i = 0; i < n; ++i) {
        const dense_row *r = &rows[i];
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%d->%d", r->s.n, r->s.in, r->s.out);
        const double flop = 2.0 * r->s.n * r->s.in * r->s.out;
        printf("%-16s %8.1f %8.1f %8.1f %8.1f %9.1f %8.2f %8.1f %8.1f %8.1f %8.1f\n", shape,
               r->us[DC_GEMM_FWD], r->us[DC_BIAS], r->us[DC_CK_FWD], r->us[DC_CK_FWD_WALL],
               r->us[DC_CK_FWD_FIRST], flop / (r->us[DC_CK_FWD] * 1e6), r->us[DC_GEMM_BWD],
               r->us[DC_CK_BWD], r->us[DC_TF32_FWD], r->us[DC_TF32_BWD]);
    }
}
/* ---------------------------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------------------------- */

static void fmt_us(char *buf, size_t n, const result *r) {
    if (!r)
        snprintf(buf, n, "-");
    else if (r->na)
        snprintf(buf, n, "n/a");
    else
        snprintf(buf, n, "%.1f", r->median_us);
}

static void fmt_ratio(char *buf, size_t n, const result *r) {
    if (!r || r->na || r->ratio < 0.0)
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, "%.2f", r->ratio);
}

static void fmt_gbps(char *buf, size_t n, const result *r) {
    if (!r || r->na)
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, r->gbps < 100.0 ? "%.1f" : "%.0f", r->gbps);
}

static void print_table(const report *rep, size_t first, const host_data *h, int repeats) {
    printf("\n== %dx%dx%dx%d %s   T = %.1f MB   median of %d ==\n", h->s.n, h->s.c, h->s.h, h->s.w,
           layout_name(h->layout), (double)h->count * sizeof(float) / 1e6, repeats);
    printf("%-24s %10s %7s %7s | %-17s %10s %7s %7s\n", "op", "us", "x copy", "GB/s", "cuDNN peer",
           "us", "x copy", "GB/s");
    for (int o = 0; o < OP_COUNT; ++o) {
        const result *mine = NULL;
        const result *peers[8];
        int np = 0;
        for (size_t i = first; i < rep->nres; ++i) {
            const result *r = &rep->res[i];
            if (r->op != (op_id)o)
                continue;
            if (!strcmp(r->impl, "cnnkit") || !strcmp(r->impl, "copy"))
                mine = r;
            else if (strstr(r->impl, "bf16")) /* their own table: print_bf16 */
                continue;
            else if (np < 8)
                peers[np++] = r;
        }
        if (!mine && np == 0)
            continue;
        for (int line = 0; line < (np > 0 ? np : 1); ++line) {
            char a[32], b[32], c[32], d[32], e[32], f[32];
            const result *p = np ? peers[line] : NULL;
            fmt_us(a, sizeof a, mine);
            fmt_ratio(b, sizeof b, mine);
            fmt_gbps(c, sizeof c, mine);
            fmt_us(d, sizeof d, p);
            fmt_ratio(e, sizeof e, p);
            fmt_gbps(f, sizeof f, p);
            if (line == 0)
                printf("%-24s %10s %7s %7s | ", k_ops[o].name, a, b, c);
            else
                printf("%-24s %10s %7s %7s | ", "", "", "", "");
            printf("%-17s %10s %7s %7s", p ? p->impl : "-", d, e, f);
            if (p && p->note[0])
                printf("  (%s)", p->note);
            printf("\n");
        }
    }
    printf("(GB/s counts 2T for copy/dropout/BN fwd, 3T for BN bwd; cudnn_spatial and "
           "cudnn_persistent apply no ReLU)\n");
}

/* The bf16 rows of one shape: each op on bf16 words against a copy of the same bf16 bytes. */
static void print_bf16(const report *rep, size_t first) {
    printf("bf16 storage (T/2 bytes):\n%-24s %10s %7s %7s\n", "op", "us", "x copy", "GB/s");
    for (size_t i = first; i < rep->nres; ++i) {
        const result *r = &rep->res[i];
        if (!strstr(r->impl, "bf16"))
            continue;
        char a[32], b[32], c[32];
        fmt_us(a, sizeof a, r);
        fmt_ratio(b, sizeof b, r);
        fmt_gbps(c, sizeof c, r);
        printf("%-24s %10s %7s %7s\n", k_ops[r->op].name, a, b, c);
    }
}

/* Stores the shape's inputs as bf16 words in the tensors the cnnkit ops read (x, dy) and marks
 * the four activation tensors bf16 (internal: a bf16 model's executor views), or back to fp32
 * (on = 0; the fp32 inputs uploaded again). */
static void bt_set_bf16(bench_tensors *bt, const host_data *h, int on) {
    ck_tensor *acts[] = {bt->x, bt->y, bt->dy, bt->dx};
    for (size_t i = 0; i < sizeof acts / sizeof *acts; ++i)
        acts[i]->dtype = on ? CK_KDT_BF16 : CK_KDT_F32;
    if (!on) {
        CK_CHECK(bt->ctx, ck_tensor_upload(bt->ctx, bt->x, h->x, h->count));
        CK_CHECK(bt->ctx, ck_tensor_upload(bt->ctx, bt->dy, h->dy, h->count));
        return;
    }
    const size_t words = (h->count + 1) / 2; /* floats holding the bf16 words */
    uint16_t *w = (uint16_t *)xmalloc(words * 2 * sizeof *w);
    w[2 * words - 1] = 0;
    const float *src[] = {h->x, h->dy};
    ck_tensor *dst[] = {bt->x, bt->dy};
    for (int k = 0; k < 2; ++k) {
        ck_bf16_pack_buffer(src[k], w, h->count);
        CUDA_CHECK(
            cudaMemcpy(ck_tensor_data(dst[k]), w, words * sizeof(float), cudaMemcpyHostToDevice));
    }
    free(w);
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; ++s) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static int write_json(const char *path, const report *rep, const char *device, long cudnn_version,
                      const dense_row *dense, size_t ndense) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench_cudnn: cannot open %s for writing\n", path);
        return 0;
    }
    fprintf(f, "{\n  \"device\": ");
    json_string(f, device);
    if (cudnn_version > 0)
        fprintf(f, ",\n  \"cudnn_version\": %ld,\n  \"results\": [", cudnn_version);
    else
        fprintf(f, ",\n  \"cudnn_version\": null,\n  \"results\": [");
    for (size_t i = 0; i < rep->nres; ++i) {
        const result *r = &rep->res[i];
        fprintf(f,
                "%s\n    {\"op\": \"%s\", \"shape\": [%d, %d, %d, %d], \"layout\": \"%s\", "
                "\"impl\": \"%s\", ",
                i ? "," : "", k_ops[r->op].name, r->s.n, r->s.c, r->s.h, r->s.w,
                layout_name(r->layout), r->impl);
        if (r->na)
            fprintf(f, "\"median_us\": null, \"ratio_to_copy\": null, \"gbps\": null, "
                       "\"status\": \"n/a\"");
        else if (r->ratio >= 0.0)
            fprintf(f, "\"median_us\": %.3f, \"ratio_to_copy\": %.4f, \"gbps\": %.2f", r->median_us,
                    r->ratio, r->gbps);
        else
            fprintf(f, "\"median_us\": %.3f, \"ratio_to_copy\": null, \"gbps\": %.2f", r->median_us,
                    r->gbps);
        if (r->note[0]) {
            fprintf(f, ", \"note\": ");
            json_string(f, r->note);
        }
        fprintf(f, "}");
    }
    fprintf(f, "\n  ],\n  \"dense_probe\": [");
    for (size_t i = 0; i < ndense; ++i) {
        fprintf(f, "%s\n    {\"n\": %d, \"in\": %d, \"out\": %d", i ? "," : "", dense[i].s.n,
                dense[i].s.in, dense[i].s.out);
        for (int c = 0; c < DC_COUNT; ++c)
            fprintf(f, ", \"%s\": %.3f", k_dense_col[c], dense[i].us[c]);
        fprintf(f, "}");
    }
    fprintf(f, "\n  ]\n}\n");
    int ok = !ferror(f);
    if (fclose(f) != 0)
        ok = 0;
    if (!ok)
        fprintf(stderr, "bench_cudnn: error writing %s\n", path);
    return ok;
}

/* ---------------------------------------------------------------------------------------------
 * main
 * ------------------------------------------------------------------------------------------- */

typedef struct options {
    int quick;
    int repeats; /* 0: default */
    const char *json;
    int nchw, nhwc;
} options;

static void usage(FILE *f) {
    fprintf(f, "usage: bench_cudnn [--quick] [--repeats R] [--json FILE] "
               "[--layout nchw|nhwc|both]\n");
}

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->nchw = o->nhwc = 1;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--quick")) {
            o->quick = 1;
        } else if (!strcmp(a, "--repeats") && v) {
            ++i;
            char *end = NULL;
            long r = strtol(v, &end, 10);
            if (!end || *end || end == v || r < 1 || r > 100000) {
                fprintf(stderr,
                        "bench_cudnn: --repeats must be an integer in [1, 100000], got "
                        "'%s'\n",
                        v);
                return 0;
            }
            o->repeats = (int)r;
        } else if (!strcmp(a, "--json") && v) {
            ++i;
            o->json = v;
        } else if (!strcmp(a, "--layout") && v) {
            ++i;
            o->nchw = !strcmp(v, "nchw") || !strcmp(v, "both");
            o->nhwc = !strcmp(v, "nhwc") || !strcmp(v, "both");
            if (!o->nchw && !o->nhwc) {
                fprintf(stderr, "bench_cudnn: --layout must be nchw, nhwc or both, got '%s'\n", v);
                return 0;
            }
        } else {
            fprintf(stderr, "bench_cudnn: unknown option or missing value: '%s'\n", a);
            return 0;
        }
    }
    return 1;
}

int main(int argc, char **argv) {
    options opt;
    if (!parse_args(argc, argv, &opt)) {
        usage(stderr);
        return 2;
    }
    if (!ck_cuda_available()) {
        char info[640];
        (void)ck_cuda_describe(0, info, sizeof info);
        fprintf(stderr, "bench_cudnn: no usable CUDA device: %s\n", info);
        return 2;
    }
    const shape4 *shapes = opt.quick ? k_gpu_quick_shapes : k_gpu_shapes;
    const size_t nshapes = opt.quick ? sizeof k_gpu_quick_shapes / sizeof *shapes
                                     : sizeof k_gpu_shapes / sizeof *shapes;

    timer tm;
    memset(&tm, 0, sizeof tm);
    tm.warmup = 3;
    tm.repeats = opt.repeats ? opt.repeats : (opt.quick ? 10 : 20);
    tm.samples = (double *)xmalloc((size_t)tm.repeats * sizeof(double));

    ck_context *ctx = NULL;
    ck_status st = ck_context_create(&ctx, CK_DEVICE_CUDA, 0, BENCH_SEED);
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "bench_cudnn: ck_context_create failed: %s: %s\n", ck_status_string(st),
                ck_context_last_error(NULL));
        return 1;
    }
    gpu_env genv;
    cudnn_env cenv;
    gpu_env_create(&genv, 0);
    tm.g = &genv;
    CK_CHECK(ctx, ck_context_set_stream(ctx, (void *)genv.stream));
    cudnn_env_create(&cenv, genv.stream);
    const long cudnn_version = (long)cenv.version;

    char info[640];
    (void)ck_cuda_describe(0, info, sizeof info);
    printf("bench_cudnn: cnnkit %d.%d.%d, device %s", ck_version() / 10000,
           ck_version() / 100 % 100, ck_version() % 100, genv.name);
    if (cudnn_version > 0)
        printf(", cuDNN %ld.%ld.%ld (%ld)", cudnn_version / 10000, cudnn_version / 100 % 100,
               cudnn_version % 100, cudnn_version);
    printf("\nbench_cudnn: %s", info);
    printf("\nGPU timing: %d warm-up, median of %d, cudaEvent per call, L2 flushed before each "
           "repeat\nL2 %d bytes, flush buffer %zu bytes\n",
           tm.warmup, tm.repeats, genv.l2_bytes, genv.flush_bytes);
    fflush(stdout);

    report rep;
    memset(&rep, 0, sizeof rep);
    for (size_t si = 0; si < nshapes; ++si) {
        for (int li = 0; li < 2; ++li) {
            const ck_layout layout = li ? CK_LAYOUT_NHWC : CK_LAYOUT_NCHW;
            if ((layout == CK_LAYOUT_NCHW && !opt.nchw) || (layout == CK_LAYOUT_NHWC && !opt.nhwc))
                continue;
            host_data h;
            host_data_init(&h, shapes[si], layout);
            bench_tensors bt;
            bt_create(ctx, &bt, &h);
            const size_t first = rep.nres;
            double copy_us = 0.0;
            copy_call cc = {ck_tensor_data(bt.y), ck_tensor_data(bt.x), h.count * sizeof(float),
                            genv.stream};
            time_fn(&tm, copy_call_fn, &cc, &copy_us);
            record(&rep, &h, OP_COPY, "copy", 0, copy_us, copy_us, NULL);
            for (int o = OP_FIRST_CK; o < OP_COUNT; ++o) {
                ck_call call = {&bt, (op_id)o};
                double us = 0.0;
                if (o == OP_BN_BWD) /* saved statistics for the backward */
                    run_ck_op(&bt, OP_BN_FWD_TRAIN, TIMING_OFFSET);
                time_fn(&tm, ck_call_fn, &call, &us);
                record(&rep, &h, (op_id)o, "cnnkit", 0, us, copy_us, NULL);
            }
            cudnn_shape cs;
            cudnn_shape_create(&cs, &cenv, &bt, &h);
            time_cudnn_peers(&tm, &cs, &h, &rep, copy_us);
            CUDA_CHECK(cudaStreamSynchronize(genv.stream));
            cudnn_shape_destroy(&cs);
            /* the same ops on bf16 words, against a copy of the same bf16 bytes */
            const size_t first_bf16 = rep.nres;
            bt_set_bf16(&bt, &h, 1);
            double copy16_us = 0.0;
            copy_call c16 = {ck_tensor_data(bt.y), ck_tensor_data(bt.x), h.count * sizeof(uint16_t),
                             genv.stream};
            time_fn(&tm, copy_call_fn, &c16, &copy16_us);
            record(&rep, &h, OP_COPY, "copy_bf16", 0, copy16_us, copy16_us, NULL);
            for (int o = OP_FIRST_CK; o < OP_COUNT; ++o) {
                ck_call call = {&bt, (op_id)o};
                double us = 0.0;
                if (o == OP_BN_BWD)
                    run_ck_op(&bt, OP_BN_FWD_TRAIN, TIMING_OFFSET);
                time_fn(&tm, ck_call_fn, &call, &us);
                record(&rep, &h, (op_id)o, "cnnkit_bf16", 0, us, copy16_us, NULL);
            }
            CUDA_CHECK(cudaStreamSynchronize(genv.stream));
            bt_set_bf16(&bt, &h, 0);
            print_table(&rep, first, &h, tm.repeats);
            print_bf16(&rep, first_bf16);
            fflush(stdout);
            bt_destroy(&bt);
            host_data_free(&h);
        }
    }

    size_t ndense = 0;
    dense_row *dense = dense_probe(&tm, ctx, opt.quick, &ndense);
    print_dense(dense, ndense, tm.repeats);

    int json_ok = 1;
    if (opt.json) {
        json_ok = write_json(opt.json, &rep, genv.name, cudnn_version, dense, ndense);
        if (json_ok)
            printf("results written to %s\n", opt.json);
    }
    cudnn_env_destroy(&cenv);
    ck_context_destroy(ctx); /* before its stream goes away */
    gpu_env_destroy(&genv);
    free(dense);
    free(rep.res);
    free(tm.samples);
    return json_ok ? 0 : 1;
}
