/* Planning a cuDNN convolution (ck_gconv_create): descriptors, the layout (NHWC, else the NCHW
 * fallback), explicit padding where cuDNN's symmetric padding differs from Keras's, and the three
 * algorithms of the context's settings (heuristics, or cudnnFind timing cached per shape). */
#include "internal.h"

#include <stdio.h>

#ifdef CNNKIT_HAVE_CUDA
#include "cudnn_internal.h"

#include <cuda_runtime_api.h>
#include <string.h>

/* The legacy convolution and pooling API is marked deprecated in cuDNN 9 (the graph API replaces
 * it); it is used on purpose, in the cuDNN files only (cudnn_internal.h lists them). */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#define CK_CONV_ALGO_MAX_BYTES ((size_t)1 << 30)

static const char *const k_dir_name[3] = {"forward", "backward-data", "backward-filter"};
static const int k_algo_count[3] = {CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                    CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT};

/* The descriptor's math type, set only when it changes: strict fp32 plans never change it. */
cudnnStatus_t ck_gconv_math(ck_gconv *c, cudnnMathType_t m) {
    if (c->cur_math == (int)m)
        return CUDNN_STATUS_SUCCESS;
    const cudnnStatus_t s = cudnnSetConvolutionMathType(c->cd, m);
    c->cur_math = s == CUDNN_STATUS_SUCCESS ? (int)m : -1;
    return s;
}

/* cuDNN's workspace bytes for algorithm `algo` of direction `dir` at the descriptors' batch
 * (and the descriptor's current math type). */
static cudnnStatus_t gconv_ws_query(cudnnHandle_t h, const ck_gconv *c, int dir, int algo,
                                    size_t *bytes) {
    *bytes = 0;
    switch (dir) {
    case CK_FWD:
        return cudnnGetConvolutionForwardWorkspaceSize(h, c->xd, c->wd, c->cd, c->yd,
                                                       (cudnnConvolutionFwdAlgo_t)algo, bytes);
    case CK_BWD_DATA:
        return cudnnGetConvolutionBackwardDataWorkspaceSize(
            h, c->wd, c->yd, c->cd, c->xd, (cudnnConvolutionBwdDataAlgo_t)algo, bytes);
    default:
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(
            h, c->xd, c->yd, c->cd, c->wd, (cudnnConvolutionBwdFilterAlgo_t)algo, bytes);
    }
}

/* x, y and the filter in bf16 with fp32 compute (the conv descriptor's CUDNN_DATA_FLOAT): cuDNN's
 * "pseudo bf16" configuration, tensor-op math; else all fp32. */
static cudnnDataType_t gconv_data_type(const ck_gconv *c) {
    return c->dt == CK_KDT_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
}

/* The math the candidates are filtered by: bf16 data may run on tensor cores (bf16 products,
 * fp32 accumulation: not a conversion) as TF32 may, and so may a wide plan's fp32 copies of bf16
 * values (exact in TF32: the same products); CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION never. */
static ck_math gconv_filter_math(const ck_gconv *c) {
    return c->dt == CK_KDT_BF16 || c->wide ? CK_MATH_TF32 : c->mathset;
}

/* The math type cuDNN is asked with: tensor-op for bf16 and TF32, strict FMA otherwise. */
static cudnnMathType_t gconv_search_math(const ck_gconv *c) {
    return gconv_filter_math(c) == CK_MATH_TF32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
}

ck_status ck_gconv_set_n(ck_context *ctx, ck_gconv *c, int n) {
    if (c->cur_n == n)
        return CK_STATUS_SUCCESS;
    /* the descriptors change below: cur_n names a batch only once every step has succeeded, so a
     * failed query is repeated on the next call instead of being taken for checked */
    c->cur_n = 0;
    const cudnnTensorFormat_t f = c->nchw ? CUDNN_TENSOR_NCHW : CUDNN_TENSOR_NHWC;
    const cudnnDataType_t t = gconv_data_type(c);
    DNN_TRY(ctx, cudnnSetTensor4dDescriptor(c->xd, f, t, n, c->g.cin, c->hp, c->wp));
    DNN_TRY(ctx, cudnnSetTensor4dDescriptor(c->yd, f, t, n, c->g.cout, c->g.oh, c->g.ow));
    /* the algorithms were chosen, and the workspace sized, at the build batch: a smaller batch
     * must fit in that workspace too (checked once per batch size, not per call) */
    if (c->algo_ready) {
        cudnnHandle_t h = (cudnnHandle_t)ctx->cudnn;
        for (int d = 0; d < 3; ++d) {
            size_t b = 0;
            DNN_TRY(ctx, ck_gconv_math(c, (cudnnMathType_t)c->math[d]));
            const cudnnStatus_t qs = gconv_ws_query(h, c, d, c->algo[d], &b);
            if (qs != CUDNN_STATUS_SUCCESS)
                return ck_fail(ctx, CK_STATUS_CUDA_ERROR,
                               "conv: batch %d: %s workspace size of algorithm %d: %s", n,
                               k_dir_name[d], c->algo[d], cudnnGetErrorString(qs));
            if (b > c->algo_bytes)
                return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                               "conv: batch %d needs %zu workspace bytes (%s), the plan for batch "
                               "%d has %zu",
                               n, b, k_dir_name[d], c->g.n, c->algo_bytes);
        }
    }
    c->cur_n = n;
    return CK_STATUS_SUCCESS;
}

#define CK_ALGO_CANDS 16

static ck_cand_math cand_math(cudnnMathType_t m) {
    switch (m) {
    case CUDNN_DEFAULT_MATH:
        return CK_CAND_MATH_DEFAULT;
    case CUDNN_TENSOR_OP_MATH:
        return CK_CAND_MATH_TENSOR_OP;
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION:
        return CK_CAND_MATH_TENSOR_OP_CONV;
    case CUDNN_FMA_MATH:
        return CK_CAND_MATH_FMA;
    }
    return CK_CAND_MATH_TENSOR_OP_CONV; /* unknown: never allowed */
}

static cudnnMathType_t dnn_math(ck_cand_math m) {
    switch (m) {
    case CK_CAND_MATH_DEFAULT:
        return CUDNN_DEFAULT_MATH;
    case CK_CAND_MATH_TENSOR_OP:
        return CUDNN_TENSOR_OP_MATH;
    case CK_CAND_MATH_TENSOR_OP_CONV:
        return CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
    case CK_CAND_MATH_FMA:
        break;
    }
    return CUDNN_FMA_MATH;
}

/* The results of one direction's heuristics or timing as ck_algo_cand entries (and cuDNN's
 * status of each, for the log). */
#define CK_TAKE_CANDS(p, timed)                                                                    \
    for (int i = 0; s == CUDNN_STATUS_SUCCESS && i < got && i < CK_ALGO_CANDS; ++i) {              \
        const ck_algo_cand a = {(int)p[i].algo,                                                    \
                                p[i].status == CUDNN_STATUS_SUCCESS,                               \
                                p[i].determinism == CUDNN_DETERMINISTIC,                           \
                                cand_math(p[i].mathType),                                          \
                                p[i].memory,                                                       \
                                (timed) ? p[i].time : -1.0f};                                      \
        st[*count] = p[i].status;                                                                  \
        out[(*count)++] = a;                                                                       \
    }

static cudnnStatus_t gconv_candidates(cudnnHandle_t h, const ck_gconv *c, int dir,
                                      ck_algo_cand *out, cudnnStatus_t *st, int *count) {
    int got = 0;
    cudnnStatus_t s;
    *count = 0;
    if (dir == CK_FWD) {
        cudnnConvolutionFwdAlgoPerf_t p[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        s = cudnnGetConvolutionForwardAlgorithm_v7(h, c->xd, c->wd, c->cd, c->yd,
                                                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, p);
        CK_TAKE_CANDS(p, 0)
    } else if (dir == CK_BWD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t p[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        s = cudnnGetConvolutionBackwardDataAlgorithm_v7(
            h, c->wd, c->yd, c->cd, c->xd, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, p);
        CK_TAKE_CANDS(p, 0)
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t p[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        s = cudnnGetConvolutionBackwardFilterAlgorithm_v7(
            h, c->xd, c->yd, c->cd, c->wd, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, p);
        CK_TAKE_CANDS(p, 0)
    }
    return s;
}

/* Scratch device buffers for cudnnFind*AlgorithmEx: x (also dx), w (also dw), y (also dy) at
 * the largest batch, and a workspace as large as the largest algorithm wants (<= the cap). */
typedef struct find_bufs {
    void *x, *w, *y, *ws;
    size_t ws_bytes;
} find_bufs;

static void find_bufs_free(find_bufs *b) {
    cudaFree(b->x);
    cudaFree(b->w);
    cudaFree(b->y);
    cudaFree(b->ws);
    memset(b, 0, sizeof *b);
}

/* 0 with the buffers, -1 when the device has no room for them (timing is then skipped). */
static int find_bufs_alloc(cudnnHandle_t h, cudaStream_t stream, ck_gconv *c, cudnnMathType_t m,
                           find_bufs *b) {
    const ck_conv_geom *g = &c->g;
    memset(b, 0, sizeof *b);
    const size_t nx = ck_kdt_bytes(c->dt, (size_t)g->n * c->hp * c->wp * g->cin);
    const size_t ny = ck_kdt_bytes(c->dt, (size_t)g->n * g->oh * g->ow * g->cout);
    const size_t nw = ck_kdt_bytes(c->dt, (size_t)g->kh * g->kw * g->cin * g->cout);
    size_t want = 0;
    if (ck_gconv_math(c, m) == CUDNN_STATUS_SUCCESS)
        for (int d = 0; d < 3; ++d)
            for (int a = 0; a < k_algo_count[d]; ++a) {
                size_t bytes = 0;
                if (gconv_ws_query(h, c, d, a, &bytes) == CUDNN_STATUS_SUCCESS &&
                    bytes <= CK_CONV_ALGO_MAX_BYTES && bytes > want)
                    want = bytes;
            }
    if (cudaMalloc(&b->x, nx) != cudaSuccess || cudaMalloc(&b->w, nw) != cudaSuccess ||
        cudaMalloc(&b->y, ny) != cudaSuccess) {
        (void)cudaGetLastError();
        find_bufs_free(b);
        return -1;
    }
    /* zeros: uninitialized memory could hold NaN patterns that no real step sees; on the
     * handle's stream, which cudnnFind runs on (it may not synchronize with the default one) */
    if (cudaMemsetAsync(b->x, 0, nx, stream) != cudaSuccess ||
        cudaMemsetAsync(b->w, 0, nw, stream) != cudaSuccess ||
        cudaMemsetAsync(b->y, 0, ny, stream) != cudaSuccess) {
        (void)cudaGetLastError();
        find_bufs_free(b);
        return -1;
    }
    /* a smaller workspace when the largest does not fit: the algorithms needing more are then
     * reported as failed by cudnnFind and not chosen */
    for (size_t ws = want; ws > 0; ws /= 4) {
        if (cudaMalloc(&b->ws, ws) == cudaSuccess) {
            b->ws_bytes = ws;
            break;
        }
        (void)cudaGetLastError();
        b->ws = NULL;
    }
    return 0;
}

/* cudnnFind*AlgorithmEx of direction dir: every algorithm timed on the buffers, fastest first. */
static cudnnStatus_t gconv_find(cudnnHandle_t h, const ck_gconv *c, int dir, const find_bufs *b,
                                ck_algo_cand *out, cudnnStatus_t *st, int *count) {
    int got = 0;
    cudnnStatus_t s;
    *count = 0;
    if (dir == CK_FWD) {
        cudnnConvolutionFwdAlgoPerf_t p[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        s = cudnnFindConvolutionForwardAlgorithmEx(h, c->xd, b->x, c->wd, b->w, c->cd, c->yd, b->y,
                                                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, p, b->ws,
                                                   b->ws_bytes);
        CK_TAKE_CANDS(p, 1)
    } else if (dir == CK_BWD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t p[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        s = cudnnFindConvolutionBackwardDataAlgorithmEx(h, c->wd, b->w, c->yd, b->y, c->cd, c->xd,
                                                        b->x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                        &got, p, b->ws, b->ws_bytes);
        CK_TAKE_CANDS(p, 1)
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t p[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        s = cudnnFindConvolutionBackwardFilterAlgorithmEx(
            h, c->xd, b->x, c->yd, b->y, c->cd, c->wd, b->w,
            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, p, b->ws, b->ws_bytes);
        CK_TAKE_CANDS(p, 1)
    }
    return s;
}

/* One conversion of a (NHWC) tensor to NCHW on the stream, timed: one warm-up, the best of
 * three; < 0 when it could not be timed. */
static float time_convert(cudaStream_t s, cudaEvent_t e0, cudaEvent_t e1, const void *src,
                          void *dst, ck_kshape sh) {
    float best = -1.0f;
    for (int r = 0; r < 4; ++r) {
        float ms = 0.0f;
        if (cudaEventRecord(e0, s) != cudaSuccess || ck_cuda_convert_layout(src, dst, sh, s) != 0 ||
            cudaEventRecord(e1, s) != cudaSuccess || cudaEventSynchronize(e1) != cudaSuccess ||
            cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess) {
            (void)cudaGetLastError();
            return -1.0f;
        }
        if (r > 0 && (best < 0.0f || ms < best))
            best = ms;
    }
    return best;
}

/* The transposes an NCHW plan adds to a training step (cudnn_conv.c), timed on the find
 * buffers: x to NCHW in the forward and again in the backward, dx back, y back, dy to NCHW
 * (3 of x's size, 2 of y's; a first layer has no dx but is counted as if it had). < 0 when
 * they could not be timed. */
static float time_transposes(cudaStream_t s, const ck_gconv *c, const find_bufs *fb) {
    const ck_conv_geom *g = &c->g;
    const size_t nx = ck_kdt_bytes(c->dt, (size_t)g->n * c->hp * c->wp * g->cin);
    const size_t ny = ck_kdt_bytes(c->dt, (size_t)g->n * g->oh * g->ow * g->cout);
    void *t = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    float ms = -1.0f;
    if (cudaMalloc(&t, nx > ny ? nx : ny) == cudaSuccess && cudaEventCreate(&e0) == cudaSuccess &&
        cudaEventCreate(&e1) == cudaSuccess) {
        const ck_kshape shx = {g->n, g->cin, c->hp, c->wp, 1, c->dt};
        const ck_kshape shy = {g->n, g->cout, g->oh, g->ow, 1, c->dt};
        const float tx = time_convert(s, e0, e1, fb->x, t, shx);
        const float ty = tx < 0.0f ? -1.0f : time_convert(s, e0, e1, fb->y, t, shy);
        if (ty >= 0.0f)
            ms = 3.0f * tx + 2.0f * ty;
    }
    (void)cudaGetLastError();
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    cudaFree(t);
    return ms;
}

static const char *math_name(int m) {
    switch ((cudnnMathType_t)m) {
    case CUDNN_DEFAULT_MATH:
        return "default";
    case CUDNN_TENSOR_OP_MATH:
        return "tensor-op";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION:
        return "tensor-op-conv";
    case CUDNN_FMA_MATH:
        return "fma";
    }
    return "?";
}

/* The deterministic algorithms PyTorch uses when asked for determinism (no heuristics): tried
 * when no heuristic result qualifies. */
static const int k_default_algo[3] = {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                                      CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
                                      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1};

/* FFT and Winograd multiply transformed values, which are not the bf16 values the CPU twin
 * multiplies: a bf16 or wide plan takes only the GEMM-like and direct algorithms. */
static int gconv_transform_algo(int dir, int algo) {
    switch (dir) {
    case CK_FWD:
        return algo == CUDNN_CONVOLUTION_FWD_ALGO_FFT ||
               algo == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING ||
               algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD ||
               algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
    case CK_BWD_DATA:
        return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT ||
               algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING ||
               algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD ||
               algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
    default:
        return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT ||
               algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING ||
               algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
    }
}

/* The candidate ck_conv_algo_choose allows whose workspace query (at its math type) succeeds
 * within CK_CONV_ALGO_MAX_BYTES; one refused by the query is passed over. 0 with the choice in
 * c->algo / math / time_ms[dir] and *bytes, else -1. */
static int gconv_take(cudnnHandle_t h, ck_gconv *c, int dir, ck_algo_cand *cand, int n,
                      size_t *bytes) {
    if (c->dt == CK_KDT_BF16 || c->wide)
        for (int i = 0; i < n; ++i)
            if (gconv_transform_algo(dir, cand[i].algo))
                cand[i].ok = 0;
    for (;;) {
        const int i =
            ck_conv_algo_choose(cand, n, c->policy, gconv_filter_math(c), CK_CONV_ALGO_MAX_BYTES);
        if (i < 0)
            return -1;
        const cudnnMathType_t m = dnn_math(cand[i].math);
        if (ck_gconv_math(c, m) == CUDNN_STATUS_SUCCESS &&
            gconv_ws_query(h, c, dir, cand[i].algo, bytes) == CUDNN_STATUS_SUCCESS &&
            *bytes <= CK_CONV_ALGO_MAX_BYTES) {
            c->algo[dir] = cand[i].algo;
            c->math[dir] = (int)m;
            c->time_ms[dir] = cand[i].time_ms;
            return 0;
        }
        cand[i].ok = 0;
    }
}

static void log_cands(char *log, size_t loglen, size_t *at, const ck_algo_cand *cand,
                      const cudnnStatus_t *cst, int n) {
    for (int i = 0; i < n; ++i) {
        const char *st = cudnnGetErrorString(cst[i]);
        if (!strncmp(st, "CUDNN_STATUS_", 13))
            st += 13;
        ck_appendf(log, loglen, at, " [%d %s %s %s %zuB", cand[i].algo, st,
                   cand[i].deterministic ? "det" : "nondet", math_name((int)dnn_math(cand[i].math)),
                   cand[i].memory);
        if (cand[i].time_ms >= 0.0f)
            ck_appendf(log, loglen, at, " %.3fms", (double)cand[i].time_ms);
        ck_appendf(log, loglen, at, "]");
    }
}

/* Chooses direction dir's algorithm under the context's settings (c->policy, c->mathset).
 * CK_CONV_ALGO_FASTEST with find buffers: the fastest allowed of cudnnFind's timings first.
 * Then cuDNN's heuristics (asked with CUDNN_FMA_MATH for strict fp32, CUDNN_TENSOR_OP_MATH for
 * TF32): the first allowed result (strict: deterministic and CUDNN_FMA_MATH, as CUDNN_DEFAULT_MATH
 * lets Ampere and later run TF32 on tensor cores) within CK_CONV_ALGO_MAX_BYTES; else the fixed
 * default above in FMA math. Returns 0 with c->algo[dir] and *bytes, or -1 with every candidate
 * (status, determinism, math type, memory, time) logged. */
static int gconv_pick(cudnnHandle_t h, ck_gconv *c, int dir, const find_bufs *fb, size_t *bytes,
                      char *log, size_t loglen, size_t *at) {
    const cudnnMathType_t search = gconv_search_math(c);
    ck_algo_cand fcand[CK_ALGO_CANDS], cand[CK_ALGO_CANDS];
    cudnnStatus_t fst[CK_ALGO_CANDS], cst[CK_ALGO_CANDS];
    int fn = 0, n = 0;
    cudnnStatus_t fs = CUDNN_STATUS_SUCCESS;
    c->time_ms[dir] = -1.0f;
    if (fb) {
        fs = ck_gconv_math(c, search);
        if (fs == CUDNN_STATUS_SUCCESS)
            fs = gconv_find(h, c, dir, fb, fcand, fst, &fn);
        if (fs == CUDNN_STATUS_SUCCESS && gconv_take(h, c, dir, fcand, fn, bytes) == 0)
            return 0;
    }
    cudnnStatus_t hs = ck_gconv_math(c, search);
    if (hs == CUDNN_STATUS_SUCCESS)
        hs = gconv_candidates(h, c, dir, cand, cst, &n);
    if (hs == CUDNN_STATUS_SUCCESS && gconv_take(h, c, dir, cand, n, bytes) == 0)
        return 0;
    /* the fixed default: FMA math for fp32, tensor-op for bf16 (it has no FMA path) and for a
     * wide plan (bf16 values, exact in TF32). A bf16 plan does not take it when the heuristics
     * listed it only as unsupported: the size query alone may pass, and the first step would
     * fail where the conv should have taken the wide plan (fp32 plans keep the rule they have
     * run with on a GPU) */
    int listed = 0, supported = 0;
    for (int i = 0; c->dt == CK_KDT_BF16 && hs == CUDNN_STATUS_SUCCESS && i < n; ++i)
        if (cand[i].algo == k_default_algo[dir]) {
            listed = 1;
            supported |= cst[i] == CUDNN_STATUS_SUCCESS;
        }
    const cudnnMathType_t dm =
        c->dt == CK_KDT_BF16 || c->wide ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
    if ((!listed || supported) && ck_gconv_math(c, dm) == CUDNN_STATUS_SUCCESS &&
        gconv_ws_query(h, c, dir, k_default_algo[dir], bytes) == CUDNN_STATUS_SUCCESS &&
        *bytes <= CK_CONV_ALGO_MAX_BYTES) {
        c->algo[dir] = k_default_algo[dir];
        c->math[dir] = (int)dm;
        return 0;
    }
    ck_appendf(log, loglen, at, " %s %s:", c->nchw ? "NCHW" : "NHWC", k_dir_name[dir]);
    if (fb) {
        if (fs != CUDNN_STATUS_SUCCESS)
            ck_appendf(log, loglen, at, " timing failed (%s)", cudnnGetErrorString(fs));
        log_cands(log, loglen, at, fcand, fst, fn);
        ck_appendf(log, loglen, at, ", heuristics:");
    }
    if (hs != CUDNN_STATUS_SUCCESS)
        ck_appendf(log, loglen, at, " heuristics failed (%s)", cudnnGetErrorString(hs));
    log_cands(log, loglen, at, cand, cst, n);
    ck_appendf(log, loglen, at, " default %d refused;", k_default_algo[dir]);
    return -1;
}

/* Describes the tensors and filter in the current layout (c->nchw) and picks the three
 * algorithms; -1 (with the log) when a direction has none. */
static int gconv_try_layout(ck_context *ctx, ck_gconv *c, int time_tr, char *log, size_t loglen,
                            size_t *at, ck_status *err) {
    const ck_conv_geom *g = &c->g;
    cudnnHandle_t h = (cudnnHandle_t)ctx->cudnn;
    *err = CK_STATUS_SUCCESS;
    c->algo_ready = 0;
    cudnnStatus_t s = cudnnSetFilter4dDescriptor(c->wd, gconv_data_type(c),
                                                 c->nchw ? CUDNN_TENSOR_NCHW : CUDNN_TENSOR_NHWC,
                                                 g->cout, g->cin, g->kh, g->kw);
    if (s != CUDNN_STATUS_SUCCESS) {
        *err = ck_dnn_fail(ctx, s, "cudnnSetFilter4dDescriptor");
        return -1;
    }
    c->cur_n = 0;
    *err = ck_gconv_set_n(ctx, c, g->n);
    if (*err != CK_STATUS_SUCCESS)
        return -1;
    int on = 0, oc = 0, oh = 0, ow = 0;
    s = cudnnGetConvolution2dForwardOutputDim(c->cd, c->xd, c->wd, &on, &oc, &oh, &ow);
    if (s != CUDNN_STATUS_SUCCESS) {
        *err = ck_dnn_fail(ctx, s, "cudnnGetConvolution2dForwardOutputDim");
        return -1;
    }
    if (oh != g->oh || ow != g->ow || oc != g->cout) {
        *err = ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "conv: cuDNN output %dx%dx%d differs from the layer's %dx%dx%d", oh, ow, oc,
                       g->oh, g->ow, g->cout);
        return -1;
    }
    /* fastest: timed on scratch buffers freed before the model's arena is allocated */
    find_bufs fb;
    const int timed =
        c->policy == CK_CONV_ALGO_FASTEST &&
        find_bufs_alloc(h, (cudaStream_t)ctx->stream, c, gconv_search_math(c), &fb) == 0;
    c->algo_bytes = 0;
    int rc = 0;
    for (int d = 0; d < 3 && rc == 0; ++d) {
        size_t b = 0;
        rc = gconv_pick(h, c, d, timed ? &fb : NULL, &b, log, loglen, at);
        if (b > c->algo_bytes)
            c->algo_bytes = b;
    }
    if (timed && rc == 0 && c->nchw && time_tr)
        c->transpose_ms = time_transposes((cudaStream_t)ctx->stream, c, &fb);
    if (timed)
        find_bufs_free(&fb);
    if (rc != 0)
        return -1;
    /* a smaller batch (an epoch's last, an evaluation's tail) must fit the workspace too: take
     * batch 1's sizes as well, in case an algorithm needs more there than at the largest */
    if (g->n > 1 && ck_gconv_set_n(ctx, c, 1) == CK_STATUS_SUCCESS) {
        for (int d = 0; d < 3; ++d) {
            size_t b = 0;
            if (ck_gconv_math(c, (cudnnMathType_t)c->math[d]) == CUDNN_STATUS_SUCCESS &&
                gconv_ws_query(h, c, d, c->algo[d], &b) == CUDNN_STATUS_SUCCESS &&
                b > c->algo_bytes && b <= CK_CONV_ALGO_MAX_BYTES)
                c->algo_bytes = b;
        }
    }
    ck_clear_error(ctx);
    *err = ck_gconv_set_n(ctx, c, g->n);
    if (*err != CK_STATUS_SUCCESS)
        return -1;
    /* the forward's math stays on the descriptor; each call sets its own direction's */
    s = ck_gconv_math(c, (cudnnMathType_t)c->math[CK_FWD]);
    if (s != CUDNN_STATUS_SUCCESS) {
        *err = ck_dnn_fail(ctx, s, "cudnnSetConvolutionMathType");
        return -1;
    }
    c->algo_ready = 1;
    return 0;
}

static ck_conv_algo_key gconv_key(const ck_gconv *c, int force_nchw) {
    ck_conv_algo_key k;
    memset(&k, 0, sizeof k);
    const ck_conv_geom *g = &c->g;
    const int v[13] = {g->n,  g->h,  g->w,       g->cin,      g->cout, g->kh, g->kw,
                       g->sh, g->sw, g->pad_top, g->pad_left, g->oh,   g->ow};
    memcpy(k.geom, v, sizeof v);
    k.force_nchw = force_nchw;
    k.policy = (int)c->policy;
    /* a bf16 plan, and a wide one (tensor-op math on fp32), are other entries than fp32's */
    k.math = (int)c->mathset | c->dt << 8 | c->wide << 9;
    return k;
}

static ck_conv_algo_plan gconv_plan_of(const ck_gconv *c) {
    ck_conv_algo_plan p;
    memset(&p, 0, sizeof p);
    p.nchw = c->nchw;
    p.bytes = c->algo_bytes;
    for (int d = 0; d < 3; ++d) {
        p.algo[d] = c->algo[d];
        p.math[d] = c->math[d];
        p.time_ms[d] = c->time_ms[d];
    }
    p.layout_ms[0] = c->layout_ms[0];
    p.layout_ms[1] = c->layout_ms[1];
    p.transpose_ms = c->transpose_ms;
    p.layout_compared = c->layout_compared;
    return p;
}

/* A plan (the context's cache entry for this shape and setting, or one timed before in the
 * other layout): descriptors for its layout, its algorithms checked again by the workspace
 * query (a stale entry is dropped, 0 = not used). */
static int gconv_apply(ck_context *ctx, ck_gconv *c, const ck_conv_algo_plan *p) {
    cudnnHandle_t h = (cudnnHandle_t)ctx->cudnn;
    c->nchw = p->nchw;
    if (cudnnSetFilter4dDescriptor(c->wd, gconv_data_type(c),
                                   c->nchw ? CUDNN_TENSOR_NCHW : CUDNN_TENSOR_NHWC, c->g.cout,
                                   c->g.cin, c->g.kh, c->g.kw) != CUDNN_STATUS_SUCCESS)
        return 0;
    c->cur_n = 0;
    c->algo_ready = 0;
    if (ck_gconv_set_n(ctx, c, c->g.n) != CK_STATUS_SUCCESS) {
        ck_clear_error(ctx);
        return 0;
    }
    for (int d = 0; d < 3; ++d) {
        size_t b = 0;
        if (ck_gconv_math(c, (cudnnMathType_t)p->math[d]) != CUDNN_STATUS_SUCCESS ||
            gconv_ws_query(h, c, d, p->algo[d], &b) != CUDNN_STATUS_SUCCESS || b > p->bytes)
            return 0;
        c->algo[d] = p->algo[d];
        c->math[d] = p->math[d];
        c->time_ms[d] = p->time_ms[d];
    }
    c->algo_bytes = p->bytes;
    c->layout_ms[0] = p->layout_ms[0];
    c->layout_ms[1] = p->layout_ms[1];
    c->transpose_ms = p->transpose_ms;
    c->layout_compared = p->layout_compared;
    if (ck_gconv_math(c, (cudnnMathType_t)c->math[CK_FWD]) != CUDNN_STATUS_SUCCESS)
        return 0;
    c->algo_ready = 1;
    return 1;
}

static ck_status gconv_init(ck_context *ctx, ck_gconv *c, int force_nchw) {
    if (c->dt != CK_KDT_F32 && c->dt != CK_KDT_BF16)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "dt: storage %d is neither fp32 nor bf16", c->dt);
    const ck_conv_geom *g = &c->g;
    c->cur_math = -1;
    c->policy = ctx->conv_algo;
    c->mathset = ctx->math;
    DNN_TRY(ctx, cudnnCreateTensorDescriptor(&c->xd));
    DNN_TRY(ctx, cudnnCreateTensorDescriptor(&c->yd));
    DNN_TRY(ctx, cudnnCreateFilterDescriptor(&c->wd));
    DNN_TRY(ctx, cudnnCreateConvolutionDescriptor(&c->cd));
    /* cuDNN pads symmetrically: when that reproduces Keras's geometry use it, else pad x
     * explicitly to the extent the windows cover ((oh - 1) * sh + kh rows) and convolve with 0 */
    int pt = g->pad_top, pl = g->pad_left;
    const int need_h = (g->oh - 1) * g->sh + g->kh, need_w = (g->ow - 1) * g->sw + g->kw;
    const int sym_h =
        pt == 0 ? need_h <= g->h
                : (g->h + 2 * pt - g->kh) / g->sh + 1 == g->oh && need_h - pt - g->h == pt;
    const int sym_w =
        pl == 0 ? need_w <= g->w
                : (g->w + 2 * pl - g->kw) / g->sw + 1 == g->ow && need_w - pl - g->w == pl;
    c->explicit_pad = !(sym_h && sym_w);
    if (c->explicit_pad) {
        /* at least the input itself: on an axis without padding the windows may end before the
         * input does (kernel < stride), and the backward crop reads rows pt .. pt + h - 1 */
        c->hp = need_h > pt + g->h ? need_h : pt + g->h;
        c->wp = need_w > pl + g->w ? need_w : pl + g->w;
        pt = pl = 0;
    } else {
        c->hp = g->h;
        c->wp = g->w;
    }
    DNN_TRY(ctx, cudnnSetConvolution2dDescriptor(c->cd, pt, pl, g->sh, g->sw, 1, 1,
                                                 CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    DNN_TRY(ctx, ck_gconv_math(c, CUDNN_FMA_MATH));
    /* fastest: a shape timed before on this context is not timed again */
    const ck_conv_algo_key key = gconv_key(c, force_nchw);
    const ck_conv_algo_plan *hit =
        c->policy == CK_CONV_ALGO_FASTEST ? ck_conv_algo_cache_find(&ctx->algo_cache, &key) : NULL;
    if (hit && gconv_apply(ctx, c, hit)) {
        c->cached = 1;
        return CK_STATUS_SUCCESS;
    }
    c->layout_ms[0] = c->layout_ms[1] = c->transpose_ms = -1.0f; /* (a failed apply set them) */
    c->layout_compared = 0;
    char log[640];
    size_t at = 0;
    log[0] = '\0';
    ck_status err = CK_STATUS_SUCCESS;
    /* fastest, layout left to cnnkit: both layouts are timed and the faster step kept */
    const int measure = c->policy == CK_CONV_ALGO_FASTEST && !force_nchw;
    ck_conv_algo_plan nhwc = {0};
    int have_nhwc = 0, ok = 0;
    for (c->nchw = force_nchw ? 1 : 0; c->nchw <= 1 && !ok; ++c->nchw) {
        if (gconv_try_layout(ctx, c, have_nhwc, log, sizeof log, &at, &err) == 0) {
            c->layout_ms[c->nchw] = ck_conv_layout_step_ms(c->time_ms, c->transpose_ms, c->nchw);
            if (measure && !c->nchw) {
                nhwc = gconv_plan_of(c);
                have_nhwc = 1;
            } else {
                ok = 1;
                break;
            }
        } else if (err != CK_STATUS_SUCCESS) {
            if (!have_nhwc)
                return err;
            ck_clear_error(ctx); /* NCHW failed to plan: the NHWC plan stands */
            err = CK_STATUS_SUCCESS;
            break;
        }
    }
    if (have_nhwc) {
        nhwc.layout_compared = 1;
        c->layout_compared = 1;
        nhwc.layout_ms[1] = ok ? c->layout_ms[1] : -1.0f;
        nhwc.transpose_ms = ok ? c->transpose_ms : -1.0f;
        if (ok && ck_conv_layout_prefers_nchw(nhwc.layout_ms[0], nhwc.layout_ms[1])) {
            c->layout_ms[0] = nhwc.layout_ms[0];
        } else if (!gconv_apply(ctx, c, &nhwc)) { /* back to NHWC; if that fails, plan again */
            c->nchw = 0;
            c->layout_ms[0] = c->layout_ms[1] = c->transpose_ms = -1.0f;
            c->layout_compared = 0;
            if (gconv_try_layout(ctx, c, 0, log, sizeof log, &at, &err) != 0)
                return err != CK_STATUS_SUCCESS
                           ? err
                           : ck_fail(ctx, CK_STATUS_CUDA_ERROR,
                                     "conv: NHWC, planned once, has no algorithm again:%s", log);
        }
        ok = 1;
    }
    if (ok) {
        if (c->policy == CK_CONV_ALGO_FASTEST) {
            const ck_conv_algo_plan p = gconv_plan_of(c);
            ck_conv_algo_cache_put(&ctx->algo_cache, &key, &p);
        }
        return CK_STATUS_SUCCESS;
    }
    c->nchw = 1;
    return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                   "conv %dx%dx%d -> %d, kernel %dx%d, stride %dx%d, batch %d: cuDNN %zu offers "
                   "no %s %s algorithm within %zu bytes; candidates [algo status determinism "
                   "math memory time]:%s",
                   g->h, g->w, g->cin, g->cout, g->kh, g->kw, g->sh, g->sw, g->n, cudnnGetVersion(),
                   c->policy == CK_CONV_ALGO_FASTEST ? "usable" : "deterministic",
                   c->dt == CK_KDT_BF16         ? "bf16 tensor-op"
                   : c->mathset == CK_MATH_TF32 ? "FMA/TF32-math"
                                                : "FMA-math",
                   CK_CONV_ALGO_MAX_BYTES, log);
}

void ck_gconv_destroy(ck_gconv *c) {
    if (!c)
        return;
    if (c->xd)
        cudnnDestroyTensorDescriptor(c->xd);
    if (c->yd)
        cudnnDestroyTensorDescriptor(c->yd);
    if (c->wd)
        cudnnDestroyFilterDescriptor(c->wd);
    if (c->cd)
        cudnnDestroyConvolutionDescriptor(c->cd);
    ck_host_free(c->ctx, c);
}

static ck_status gconv_create(ck_context *ctx, const ck_conv_geom *g, int force_nchw, int dt,
                              int wide, ck_gconv **out) {
    *out = NULL;
    ck_gconv *c = (ck_gconv *)ck_host_calloc(ctx, 1, sizeof *c);
    if (!c)
        return ck_fail(ctx, CK_STATUS_ALLOC_FAILED, "conv: out of host memory");
    c->ctx = ctx;
    c->g = *g;
    c->dt = dt;
    c->wide = wide;
    ck_status st = gconv_init(ctx, c, force_nchw);
    if (st != CK_STATUS_SUCCESS) {
        ck_gconv_destroy(c);
        return st;
    }
    *out = c;
    return CK_STATUS_SUCCESS;
}

ck_status ck_gconv_create_dt(ck_context *ctx, const ck_conv_geom *g, int force_nchw, int dt,
                             ck_gconv **out) {
    const ck_status st = gconv_create(ctx, g, force_nchw, dt, 0, out);
    if (st == CK_STATUS_SUCCESS || dt != CK_KDT_BF16 || st == CK_STATUS_ALLOC_FAILED ||
        st == CK_STATUS_BAD_PARAM)
        return st;
    /* no bf16 algorithm for this shape: the same roundings on an fp32 plan; the log line keeps
     * the refusal's sentence, not its candidate list */
    char why[200];
    snprintf(why, sizeof why, "%.*s", (int)strcspn(ctx->err, ";"), ctx->err);
    const ck_status wst = gconv_create(ctx, g, force_nchw, CK_KDT_F32, 1, out);
    if (wst != CK_STATUS_SUCCESS)
        return ck_fail_after(ctx, wst, why);
    snprintf((*out)->why, sizeof(*out)->why, "%.199s", why);
    ck_clear_error(ctx);
    return CK_STATUS_SUCCESS;
}

ck_status ck_gconv_create_wide(ck_context *ctx, const ck_conv_geom *g, int force_nchw,
                               ck_gconv **out) {
    return gconv_create(ctx, g, force_nchw, CK_KDT_F32, 1, out);
}

ck_status ck_gconv_create_layout(ck_context *ctx, const ck_conv_geom *g, int force_nchw,
                                 ck_gconv **out) {
    return ck_gconv_create_dt(ctx, g, force_nchw, CK_KDT_F32, out);
}

ck_status ck_gconv_create(ck_context *ctx, const ck_conv_geom *g, ck_gconv **out) {
    return ck_gconv_create_dt(ctx, g, 0, CK_KDT_F32, out);
}

int ck_gconv_dt(const ck_gconv *c) {
    return c->wide ? CK_KDT_BF16 : c->dt;
}

void ck_gconv_describe(const ck_gconv *c, char *buf, size_t len) {
    if (!buf || len == 0)
        return;
    size_t at = 0;
    buf[0] = '\0';
    const int timed_layouts = c->layout_ms[0] >= 0.0f && c->layout_ms[1] >= 0.0f;
    ck_appendf(buf, len, &at, "%s, algorithms forward %d, backward-data %d, backward-filter %d, ",
               !c->nchw        ? "NHWC"
               : timed_layouts ? "NCHW (timed faster)"
                               : "NCHW (fallback)",
               c->algo[CK_FWD], c->algo[CK_BWD_DATA], c->algo[CK_BWD_FILTER]);
    /* the default plan's line is unchanged: "fma math" */
    if (c->math[0] == c->math[1] && c->math[1] == c->math[2])
        ck_appendf(buf, len, &at, "%s math", math_name(c->math[0]));
    else
        ck_appendf(buf, len, &at, "math %s/%s/%s", math_name(c->math[0]), math_name(c->math[1]),
                   math_name(c->math[2]));
    ck_appendf(buf, len, &at, ", %zu workspace bytes%s", c->algo_bytes,
               c->explicit_pad ? ", explicit padding" : "");
    if (c->policy == CK_CONV_ALGO_FASTEST) {
        ck_appendf(buf, len, &at, ", fastest");
        if (c->time_ms[0] >= 0.0f || c->time_ms[1] >= 0.0f || c->time_ms[2] >= 0.0f)
            ck_appendf(buf, len, &at, " (timed %.3f/%.3f/%.3f ms%s)", (double)c->time_ms[0],
                       (double)c->time_ms[1], (double)c->time_ms[2], c->cached ? ", cached" : "");
        else
            ck_appendf(buf, len, &at, " (not timed: heuristics)");
    }
    if (timed_layouts)
        ck_appendf(buf, len, &at, ", step NHWC %.3f ms vs NCHW %.3f ms (%.3f of it transposes)",
                   (double)c->layout_ms[0], (double)c->layout_ms[1], (double)c->transpose_ms);
    else if (c->layout_compared)
        ck_appendf(buf, len, &at, ", layouts not compared: %s has no timed step",
                   c->layout_ms[0] < 0.0f ? "NHWC" : "NCHW");
    if (c->mathset == CK_MATH_TF32)
        ck_appendf(buf, len, &at, ", tf32 allowed");
    if (c->dt == CK_KDT_BF16)
        ck_appendf(buf, len, &at, ", bf16 data");
    if (c->wide)
        ck_appendf(buf, len, &at, ", bf16 storage on an fp32 plan (the same roundings)%s%s",
                   c->why[0] ? ": no bf16 plan: " : "", c->why);
}
#else
typedef int ck_cudnn_conv_plan_unused; /* ISO C wants at least one declaration per file */
#endif
