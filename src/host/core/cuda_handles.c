/* cuDNN and cuBLAS handles of a context: creation, stream binding, math mode, versions; and the
 * mapping of their error codes to statuses, shared by the cuDNN / cuBLAS files. */
#include "internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "cudnn_internal.h"

#include <cuda_runtime_api.h>
#include <stdio.h>

ck_status ck_dnn_fail(ck_context *ctx, cudnnStatus_t st, const char *what) {
    return ck_fail(ctx, CK_STATUS_CUDA_ERROR, "%s: %s", what, cudnnGetErrorString(st));
}

ck_status ck_blas_fail(ck_context *ctx, cublasStatus_t st, const char *what) {
    return ck_fail(ctx, CK_STATUS_CUDA_ERROR, "%s: cuBLAS status %d", what, (int)st);
}

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
    ctx->cudnn = dnn;
    ctx->cublas = blas;
    ctx->blas_ws_bytes = ck_cublas_workspace_bytes(ctx);
    if (cudaMalloc(&ctx->blas_ws, ctx->blas_ws_bytes) != cudaSuccess) {
        /* a device short of memory: cuBLAS keeps its own pool, and CUDA graphs (which need a
         * user workspace) stay off for the context's models, with a note */
        (void)cudaGetLastError();
        ctx->blas_ws = NULL;
        ctx->blas_ws_bytes = 0;
    }
    /* strict fp32 unless the context asks for TF32 (cuDNN convs: the math of gconv_pick) */
    ck_status st = ck_cublas_set_math(ctx);
    if (st == CK_STATUS_SUCCESS)
        st = ck_cudnn_set_stream(ctx);
    if (st != CK_STATUS_SUCCESS)
        ck_cudnn_destroy(ctx); /* the caller frees only the context */
    return st;
}

ck_status ck_cublas_set_math(ck_context *ctx) {
    /* a split-K GEMM writing bf16 (a bf16 model's hidden Dense and its dx) would otherwise add
     * its partial sums in bf16, rounding more often than the CPU twin; no effect on fp32 output */
    const cublasMath_t m = (cublasMath_t)((ctx->math == CK_MATH_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                     : CUBLAS_DEFAULT_MATH) |
                                          CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
    const cublasStatus_t bs = cublasSetMathMode((cublasHandle_t)ctx->cublas, m);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return ck_fail(ctx, CK_STATUS_CUDA_ERROR, "math: cublasSetMathMode(%s): status %d",
                       ctx->math == CK_MATH_TF32 ? "CUBLAS_TF32_TENSOR_OP_MATH"
                                                 : "CUBLAS_DEFAULT_MATH",
                       (int)bs);
    return CK_STATUS_SUCCESS;
}

void ck_cudnn_destroy(ck_context *ctx) {
    if (ctx->cublas)
        cublasDestroy((cublasHandle_t)ctx->cublas);
    if (ctx->blas_ws)
        (void)cudaFree(ctx->blas_ws);
    ctx->blas_ws = NULL;
    ctx->blas_ws_bytes = 0;
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
    /* cublasSetStream drops a user workspace: the context's again, on every stream */
    return ctx->blas_ws ? ck_cublas_set_workspace(ctx, ctx->blas_ws, ctx->blas_ws_bytes)
                        : CK_STATUS_SUCCESS;
}
ck_status ck_cublas_set_workspace(ck_context *ctx, void *ws, size_t bytes) {
    const cublasStatus_t bs = cublasSetWorkspace((cublasHandle_t)ctx->cublas, ws, bytes);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return ck_fail(ctx, CK_STATUS_CUDA_ERROR, "cublasSetWorkspace(%zu bytes): status %d", bytes,
                       (int)bs);
    return CK_STATUS_SUCCESS;
}

ck_status ck_cudnn_home(ck_context *ctx) {
    if (!ctx->handles_astray)
        return CK_STATUS_SUCCESS;
    if (ck_cudnn_set_stream(ctx) != CK_STATUS_SUCCESS) {
        char why[CK_ERR_LEN];
        snprintf(why, sizeof why, "%s", ctx->err);
        return ck_fail(ctx, CK_STATUS_CUDA_ERROR,
                       "cuDNN/cuBLAS cannot be bound to the context's stream again after a CUDA "
                       "graph capture: %.400s",
                       why);
    }
    ctx->handles_astray = 0;
    return CK_STATUS_SUCCESS;
}

size_t ck_cublas_workspace_bytes(const ck_context *ctx) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, ctx->ordinal) !=
        cudaSuccess) {
        (void)cudaGetLastError();
        major = 0;
    }
    /* cuBLAS's recommended workspace (cublasSetWorkspace): 32 MiB from Hopper (9.x) on, else
     * 4 MiB; PyTorch uses the same split (major >= 9) */
    return (size_t)(major >= 9 ? 32 : 4) << 20;
}
#else
typedef int ck_cuda_handles_unused; /* ISO C wants at least one declaration per file */
#endif
