/* The only file of the library that calls cuDNN and cuBLAS: handle lifetime and stream binding.
 * (cuDNN 9 deprecates the legacy conv/pool/BN calls; keeping every call here keeps a move to the
 * graph API local.) */
#include "internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"
#include "gpu_layers.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <stdio.h>
#include <stdlib.h>

/* The legacy convolution API is marked deprecated in cuDNN 9 (the graph API replaces it); it is
 * used here on purpose, in this file only. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

void ck_cudnn_versions(char *buf, size_t len) {
    /* the device may load an older cuDNN 9.x (a pip wheel) than the headers of the build */
    const size_t v = cudnnGetVersion();
    int maj = 0, min = 0, pat = 0;
    const int ok = cublasGetProperty(MAJOR_VERSION, &maj) == CUBLAS_STATUS_SUCCESS &&
                   cublasGetProperty(MINOR_VERSION, &min) == CUBLAS_STATUS_SUCCESS &&
                   cublasGetProperty(PATCH_LEVEL, &pat) == CUBLAS_STATUS_SUCCESS;
    snprintf(buf, len,
             "cuDNN %zu.%zu.%zu loaded (built with %d.%d.%d, cudart %zu), cuBLAS %d.%d.%d",
             v / 10000, v / 100 % 100, v % 100, CUDNN_MAJOR, CUDNN_MINOR, CUDNN_PATCHLEVEL,
             cudnnGetCudartVersion(), ok ? maj : 0, ok ? min : 0, ok ? pat : 0);
}

ck_status ck_cudnn_create(ck_context *ctx) {
    cudnnHandle_t dnn = NULL;
    cublasHandle_t blas = NULL;
    cudnnStatus_t ds = cudnnCreate(&dnn);
    if (ds != CUDNN_STATUS_SUCCESS)
        return ck_fail(ctx, CK_STATUS_CUDA_ERROR, "cudnnCreate: %s", cudnnGetErrorString(ds));
    cublasStatus_t bs = cublasCreate(&blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        cudnnDestroy(dnn);
        return ck_fail(ctx, CK_STATUS_CUDA_ERROR, "cublasCreate: status %d", (int)bs);
    }
    /* strict fp32: no TF32 tensor-core math in the GEMMs (cuDNN convs: CUDNN_FMA_MATH below) */
    bs = cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(blas);
        cudnnDestroy(dnn);
        return ck_fail(ctx, CK_STATUS_CUDA_ERROR, "cublasSetMathMode: status %d", (int)bs);
    }
    ctx->cudnn = dnn;
    ctx->cublas = blas;
    ck_status st = ck_cudnn_set_stream(ctx);
    if (st != CK_STATUS_SUCCESS)
        ck_cudnn_destroy(ctx); /* the caller frees only the context */
    return st;
}

void ck_cudnn_destroy(ck_context *ctx) {
    if (ctx->cublas)
        cublasDestroy((cublasHandle_t)ctx->cublas);
    if (ctx->cudnn)
        cudnnDestroy((cudnnHandle_t)ctx->cudnn);
    ctx->cublas = NULL;
    ctx->cudnn = NULL;
}

ck_status ck_cudnn_set_stream(ck_context *ctx) {
    cudaStream_t s = (cudaStream_t)ctx->stream;
    cudnnStatus_t ds = cudnnSetStream((cudnnHandle_t)ctx->cudnn, s);
    if (ds != CUDNN_STATUS_SUCCESS)
        return ck_fail(ctx, CK_STATUS_CUDA_ERROR, "cudnnSetStream: %s", cudnnGetErrorString(ds));
    cublasStatus_t bs = cublasSetStream((cublasHandle_t)ctx->cublas, s);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return ck_fail(ctx, CK_STATUS_CUDA_ERROR, "cublasSetStream: status %d", (int)bs);
    return CK_STATUS_SUCCESS;
}
/* ---- Conv2D (cuDNN, NHWC activations, KRSC filters, strict fp32) ---------------------------- */

struct ck_gconv {
    ck_conv_geom g;   /* n = the largest batch */
    int explicit_pad; /* asymmetric 'same' padding: x is zero-padded into the workspace first */
    int hp, wp;       /* input extent cuDNN sees */
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    size_t algo_bytes; /* cuDNN workspace: the largest of the three algorithms at the largest n */
    int cur_n;         /* batch the tensor descriptors are set for */
    int algo_ready;    /* algorithms chosen (gconv_pick_algos): later batch changes check sizes */
};

#define CK_CONV_ALGO_MAX_BYTES ((size_t)1 << 30)

static ck_status dnn_fail(ck_context *ctx, cudnnStatus_t st, const char *what) {
    return ck_fail(ctx, CK_STATUS_CUDA_ERROR, "%s: %s", what, cudnnGetErrorString(st));
}

#define DNN_TRY(ctx, call)                                                                         \
    do {                                                                                           \
        cudnnStatus_t s_ = (call);                                                                 \
        if (s_ != CUDNN_STATUS_SUCCESS)                                                            \
            return dnn_fail((ctx), s_, #call);                                                     \
    } while (0)

static ck_status gconv_set_n(ck_context *ctx, ck_gconv *c, int n) {
    if (c->cur_n == n)
        return CK_STATUS_SUCCESS;
    DNN_TRY(ctx, cudnnSetTensor4dDescriptor(c->xd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, n, c->g.cin,
                                            c->hp, c->wp));
    DNN_TRY(ctx, cudnnSetTensor4dDescriptor(c->yd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, n,
                                            c->g.cout, c->g.oh, c->g.ow));
    c->cur_n = n;
    /* the algorithms were chosen, and the workspace sized, at the build batch: a smaller batch
     * must fit in that workspace too (checked once per batch size, not per call) */
    if (c->algo_ready) {
        cudnnHandle_t h = (cudnnHandle_t)ctx->cudnn;
        size_t b[3] = {0, 0, 0};
        DNN_TRY(ctx, cudnnGetConvolutionForwardWorkspaceSize(h, c->xd, c->wd, c->cd, c->yd, c->fwd,
                                                             &b[0]));
        DNN_TRY(ctx, cudnnGetConvolutionBackwardDataWorkspaceSize(h, c->wd, c->yd, c->cd, c->xd,
                                                                  c->bwd_data, &b[1]));
        DNN_TRY(ctx, cudnnGetConvolutionBackwardFilterWorkspaceSize(h, c->xd, c->yd, c->cd, c->wd,
                                                                    c->bwd_filter, &b[2]));
        for (int i = 0; i < 3; ++i)
            if (b[i] > c->algo_bytes) {
                c->cur_n = 0; /* query again next time */
                return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                               "conv: batch %d needs %zu workspace bytes, the plan for batch %d "
                               "has %zu",
                               n, b[i], c->g.n, c->algo_bytes);
            }
    }
    return CK_STATUS_SUCCESS;
}

/* An algorithm result usable under strict fp32: not a Tensor Core (TF32 / conversion) entry.
 * The convolution descriptor is set to CUDNN_FMA_MATH, which restricts the kernels that run; a
 * result that reports Tensor Core math is skipped rather than trusted to be restricted. */
static int strict_fp32(cudnnMathType_t t) {
    return t != CUDNN_TENSOR_OP_MATH && t != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

static ck_status gconv_pick_algos(ck_context *ctx, ck_gconv *c) {
    cudnnHandle_t h = (cudnnHandle_t)ctx->cudnn;
    int got = 0;
    size_t b = 0;
    cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    DNN_TRY(ctx, cudnnGetConvolutionForwardAlgorithm_v7(
                     h, c->xd, c->wd, c->cd, c->yd, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, fp));
    int found = 0;
    for (int i = 0; i < got && !found; ++i)
        if (fp[i].status == CUDNN_STATUS_SUCCESS && fp[i].memory <= CK_CONV_ALGO_MAX_BYTES &&
            fp[i].determinism == CUDNN_DETERMINISTIC && strict_fp32(fp[i].mathType)) {
            c->fwd = fp[i].algo;
            found = 1;
        }
    if (!found)
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "conv: cuDNN offers no deterministic forward algorithm for this shape");
    DNN_TRY(ctx,
            cudnnGetConvolutionForwardWorkspaceSize(h, c->xd, c->wd, c->cd, c->yd, c->fwd, &b));
    c->algo_bytes = b;

    cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    DNN_TRY(ctx, cudnnGetConvolutionBackwardDataAlgorithm_v7(h, c->wd, c->yd, c->cd, c->xd,
                                                             CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                             &got, dp));
    found = 0;
    for (int i = 0; i < got && !found; ++i)
        if (dp[i].status == CUDNN_STATUS_SUCCESS && dp[i].memory <= CK_CONV_ALGO_MAX_BYTES &&
            dp[i].determinism == CUDNN_DETERMINISTIC && strict_fp32(dp[i].mathType)) {
            c->bwd_data = dp[i].algo;
            found = 1;
        }
    if (!found)
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "conv: cuDNN offers no deterministic backward-data algorithm");
    DNN_TRY(ctx, cudnnGetConvolutionBackwardDataWorkspaceSize(h, c->wd, c->yd, c->cd, c->xd,
                                                              c->bwd_data, &b));
    if (b > c->algo_bytes)
        c->algo_bytes = b;

    cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    DNN_TRY(ctx,
            cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                h, c->xd, c->yd, c->cd, c->wd, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, wp));
    found = 0;
    for (int i = 0; i < got && !found; ++i)
        if (wp[i].status == CUDNN_STATUS_SUCCESS && wp[i].memory <= CK_CONV_ALGO_MAX_BYTES &&
            wp[i].determinism == CUDNN_DETERMINISTIC && strict_fp32(wp[i].mathType)) {
            c->bwd_filter = wp[i].algo;
            found = 1;
        }
    if (!found)
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "conv: cuDNN offers no deterministic backward-filter algorithm");
    DNN_TRY(ctx, cudnnGetConvolutionBackwardFilterWorkspaceSize(h, c->xd, c->yd, c->cd, c->wd,
                                                                c->bwd_filter, &b));
    if (b > c->algo_bytes)
        c->algo_bytes = b;
    c->algo_ready = 1;
    return CK_STATUS_SUCCESS;
}

static ck_status gconv_init(ck_context *ctx, ck_gconv *c) {
    const ck_conv_geom *g = &c->g;
    DNN_TRY(ctx, cudnnCreateTensorDescriptor(&c->xd));
    DNN_TRY(ctx, cudnnCreateTensorDescriptor(&c->yd));
    DNN_TRY(ctx, cudnnCreateFilterDescriptor(&c->wd));
    DNN_TRY(ctx, cudnnCreateConvolutionDescriptor(&c->cd));
    DNN_TRY(ctx, cudnnSetFilter4dDescriptor(c->wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, g->cout,
                                            g->cin, g->kh, g->kw));
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
    DNN_TRY(ctx, cudnnSetConvolutionMathType(c->cd, CUDNN_FMA_MATH));
    c->cur_n = 0;
    CK_TRY(gconv_set_n(ctx, c, g->n));
    int on = 0, oc = 0, oh = 0, ow = 0;
    DNN_TRY(ctx, cudnnGetConvolution2dForwardOutputDim(c->cd, c->xd, c->wd, &on, &oc, &oh, &ow));
    if (oh != g->oh || ow != g->ow || oc != g->cout)
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "conv: cuDNN output %dx%dx%d differs from the layer's %dx%dx%d", oh, ow, oc,
                       g->oh, g->ow, g->cout);
    return gconv_pick_algos(ctx, c);
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
    free(c);
}

ck_status ck_gconv_create(ck_context *ctx, const ck_conv_geom *g, ck_gconv **out) {
    *out = NULL;
    ck_gconv *c = (ck_gconv *)calloc(1, sizeof *c);
    if (!c)
        return ck_fail(ctx, CK_STATUS_ALLOC_FAILED, "conv: out of host memory");
    c->g = *g;
    ck_status st = gconv_init(ctx, c);
    if (st != CK_STATUS_SUCCESS) {
        ck_gconv_destroy(c);
        return st;
    }
    *out = c;
    return CK_STATUS_SUCCESS;
}

/* Workspace layout (each part 256-byte aligned): KRSC kernel, KRSC kernel gradient, padded x,
 * padded dx (explicit padding only), cuDNN algorithm workspace, bias column-sum partials. */
typedef struct gconv_ws {
    float *k, *dk, *xp, *dxp;
    void *algo, *colsum;
} gconv_ws;

static size_t al256(size_t b) {
    return (b + 255u) & ~(size_t)255u;
}

static size_t gconv_ws_layout(const ck_gconv *c, void *base, gconv_ws *w) {
    const ck_conv_geom *g = &c->g;
    const size_t kb = al256((size_t)g->kh * g->kw * g->cin * g->cout * sizeof(float));
    const size_t pb =
        c->explicit_pad ? al256((size_t)g->n * c->hp * c->wp * g->cin * sizeof(float)) : 0;
    const size_t ab = al256(c->algo_bytes), cb = al256(ck_cuda_colsum_workspace_bytes(g->cout));
    char *p = (char *)base;
    if (w) {
        w->k = (float *)p;
        w->dk = (float *)(p + kb);
        w->xp = c->explicit_pad ? (float *)(p + 2 * kb) : NULL;
        w->dxp = c->explicit_pad ? (float *)(p + 2 * kb + pb) : NULL;
        w->algo = p + 2 * kb + 2 * pb;
        w->colsum = p + 2 * kb + 2 * pb + ab;
    }
    return 2 * kb + 2 * pb + ab + cb;
}

size_t ck_gconv_workspace_bytes(const ck_gconv *c) {
    return gconv_ws_layout(c, NULL, NULL);
}

#define CUDA_TRY(ctx, err, what)                                                                   \
    do {                                                                                           \
        int e_ = (err);                                                                            \
        if (e_ != 0)                                                                               \
            return ck_cuda_fail((ctx), e_, (what));                                                \
    } while (0)

static ck_kgeom to_kgeom(const ck_conv_geom *g) {
    ck_kgeom k = {g->n,  g->h,  g->w,       g->cin,      g->cout, g->kh, g->kw,
                  g->sh, g->sw, g->pad_top, g->pad_left, g->oh,   g->ow};
    return k;
}

ck_kgeom ck_kgeom_of(const ck_conv_geom *g) {
    return to_kgeom(g);
}

static ck_status gconv_check_ws(ck_context *ctx, ck_gconv *c, int n) {
    if (n < 1 || n > c->g.n)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "n: batch %d outside [1, %d] planned for conv", n,
                       c->g.n);
    return gconv_set_n(ctx, c, n);
}

ck_status ck_gconv_forward(ck_context *ctx, ck_gconv *c, int n, const float *x, const float *k,
                           const float *bias, float *y, void *ws) {
    CK_TRY(gconv_check_ws(ctx, c, n));
    const ck_conv_geom *g = &c->g;
    gconv_ws w;
    gconv_ws_layout(c, ws, &w);
    void *s = ctx->stream;
    CUDA_TRY(ctx, ck_cuda_conv_kernel_layout(k, w.k, g->kh * g->kw, g->cin, g->cout, 1, s),
             "conv: kernel layout");
    const float *xin = x;
    if (c->explicit_pad) {
        CUDA_TRY(ctx,
                 ck_cuda_pad_nhwc(x, w.xp, n, g->h, g->w, g->cin, g->pad_top, g->pad_left, c->hp,
                                  c->wp, 0, s),
                 "conv: pad");
        xin = w.xp;
    }
    const float one = 1.0f, zero = 0.0f;
    DNN_TRY(ctx, cudnnConvolutionForward((cudnnHandle_t)ctx->cudnn, &one, c->xd, xin, c->wd, w.k,
                                         c->cd, c->fwd, w.algo, c->algo_bytes, &zero, c->yd, y));
    if (bias)
        CUDA_TRY(ctx, ck_cuda_bias_add(y, bias, (long long)n * g->oh * g->ow, g->cout, s),
                 "conv: bias add");
    return CK_STATUS_SUCCESS;
}

ck_status ck_gconv_backward(ck_context *ctx, ck_gconv *c, int n, const float *x, const float *k,
                            const float *dy, float *dx, float *dk, float *dbias, void *ws) {
    CK_TRY(gconv_check_ws(ctx, c, n));
    const ck_conv_geom *g = &c->g;
    gconv_ws w;
    gconv_ws_layout(c, ws, &w);
    void *s = ctx->stream;
    cudnnHandle_t h = (cudnnHandle_t)ctx->cudnn;
    const float one = 1.0f, zero = 0.0f;
    const float *xin = x;
    if (c->explicit_pad) {
        CUDA_TRY(ctx,
                 ck_cuda_pad_nhwc(x, w.xp, n, g->h, g->w, g->cin, g->pad_top, g->pad_left, c->hp,
                                  c->wp, 0, s),
                 "conv: pad");
        xin = w.xp;
    }
    DNN_TRY(ctx,
            cudnnConvolutionBackwardFilter(h, &one, c->xd, xin, c->yd, dy, c->cd, c->bwd_filter,
                                           w.algo, c->algo_bytes, &zero, c->wd, w.dk));
    CUDA_TRY(ctx, ck_cuda_conv_kernel_layout(w.dk, dk, g->kh * g->kw, g->cin, g->cout, 0, s),
             "conv: kernel gradient layout");
    if (dbias)
        CUDA_TRY(ctx, ck_cuda_colsum(dy, (long long)n * g->oh * g->ow, g->cout, dbias, w.colsum, s),
                 "conv: bias gradient");
    if (dx) {
        CUDA_TRY(ctx, ck_cuda_conv_kernel_layout(k, w.k, g->kh * g->kw, g->cin, g->cout, 1, s),
                 "conv: kernel layout");
        float *dxo = c->explicit_pad ? w.dxp : dx;
        DNN_TRY(ctx,
                cudnnConvolutionBackwardData(h, &one, c->wd, w.k, c->yd, dy, c->cd, c->bwd_data,
                                             w.algo, c->algo_bytes, &zero, c->xd, dxo));
        if (c->explicit_pad)
            CUDA_TRY(ctx,
                     ck_cuda_pad_nhwc(w.dxp, dx, n, g->h, g->w, g->cin, g->pad_top, g->pad_left,
                                      c->hp, c->wp, 1, s),
                     "conv: crop");
    }
    return CK_STATUS_SUCCESS;
}

/* ---- Dense (cuBLAS, strict fp32). Row-major x (n, in), k (in, out), y (n, out) are the
 *      column-major transposes cuBLAS sees: y^T = k^T x^T. ------------------------------------ */

static ck_status blas_fail(ck_context *ctx, cublasStatus_t st, const char *what) {
    return ck_fail(ctx, CK_STATUS_CUDA_ERROR, "%s: cuBLAS status %d", what, (int)st);
}

size_t ck_gdense_workspace_bytes(int out) {
    return ck_cuda_colsum_workspace_bytes(out);
}

ck_status ck_gdense_forward(ck_context *ctx, int n, int in, int out, const float *x, const float *k,
                            const float *bias, float *y) {
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = cublasSgemm((cublasHandle_t)ctx->cublas, CUBLAS_OP_N, CUBLAS_OP_N, out, n,
                                    in, &one, k, out, x, in, &zero, y, out);
    if (st != CUBLAS_STATUS_SUCCESS)
        return blas_fail(ctx, st, "dense: cublasSgemm (forward)");
    if (bias)
        CUDA_TRY(ctx, ck_cuda_bias_add(y, bias, n, out, ctx->stream), "dense: bias add");
    return CK_STATUS_SUCCESS;
}

ck_status ck_gdense_backward(ck_context *ctx, int n, int in, int out, const float *x,
                             const float *k, const float *dy, float *dx, float *dk, float *dbias,
                             void *ws) {
    const float one = 1.0f, zero = 0.0f;
    cublasHandle_t h = (cublasHandle_t)ctx->cublas;
    /* dk^T (out x in) = dy^T (out x n) * x (n x in) */
    cublasStatus_t st =
        cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, out, in, n, &one, dy, out, x, in, &zero, dk, out);
    if (st != CUBLAS_STATUS_SUCCESS)
        return blas_fail(ctx, st, "dense: cublasSgemm (kernel gradient)");
    if (dx) {
        /* dx^T (in x n) = k (in x out) * dy^T (out x n) */
        st = cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, in, n, out, &one, k, out, dy, out, &zero, dx,
                         in);
        if (st != CUBLAS_STATUS_SUCCESS)
            return blas_fail(ctx, st, "dense: cublasSgemm (input gradient)");
    }
    if (dbias)
        CUDA_TRY(ctx, ck_cuda_colsum(dy, n, out, dbias, ws, ctx->stream), "dense: bias gradient");
    return CK_STATUS_SUCCESS;
}
/* ---- pooling (cuDNN): the reference the pooling kernels of layers.cu are tested and benched
 *      against. cuDNN pads symmetrically, so windows with asymmetric 'same' padding are refused
 *      (the model uses the kernels of layers.cu, which handle them). Max pooling is
 *      CUDNN_POOLING_MAX_DETERMINISTIC; average excludes the padding, as TensorFlow does. ----- */

ck_status ck_gpool_cudnn(ck_context *ctx, const ck_conv_geom *g, int is_max, int backward,
                         const float *x, const float *y, const float *dy, float *out) {
    const int need_h = (g->oh - 1) * g->sh + g->kh, need_w = (g->ow - 1) * g->sw + g->kw;
    if (need_h - g->h - g->pad_top > g->pad_top || need_w - g->w - g->pad_left > g->pad_left)
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "pool: asymmetric padding (cuDNN pads both sides alike)");
    cudnnPoolingDescriptor_t pd = NULL;
    cudnnTensorDescriptor_t xd = NULL, yd = NULL;
    cudnnStatus_t s = cudnnCreatePoolingDescriptor(&pd);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnCreateTensorDescriptor(&xd);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnCreateTensorDescriptor(&yd);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnSetPooling2dDescriptor(
            pd,
            is_max ? CUDNN_POOLING_MAX_DETERMINISTIC : CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING,
            CUDNN_NOT_PROPAGATE_NAN, g->kh, g->kw, g->pad_top, g->pad_left, g->sh, g->sw);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, g->n, g->cin, g->h,
                                       g->w);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, g->n, g->cin, g->oh,
                                       g->ow);
    const float one = 1.0f, zero = 0.0f;
    if (s == CUDNN_STATUS_SUCCESS)
        s = backward
                ? cudnnPoolingBackward((cudnnHandle_t)ctx->cudnn, pd, &one, yd, y, yd, dy, xd, x,
                                       &zero, xd, out)
                : cudnnPoolingForward((cudnnHandle_t)ctx->cudnn, pd, &one, xd, x, &zero, yd, out);
    if (pd)
        cudnnDestroyPoolingDescriptor(pd);
    if (xd)
        cudnnDestroyTensorDescriptor(xd);
    if (yd)
        cudnnDestroyTensorDescriptor(yd);
    return s == CUDNN_STATUS_SUCCESS
               ? CK_STATUS_SUCCESS
               : dnn_fail(ctx, s, backward ? "cudnnPoolingBackward" : "cudnnPoolingForward");
}
#else
typedef int ck_cudnn_ops_unused; /* ISO C wants at least one declaration per file */
#endif
