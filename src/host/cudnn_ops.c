/* The only file of the library that calls cuDNN and cuBLAS: handle lifetime and stream binding.
 * (cuDNN 9 deprecates the legacy conv/pool/BN calls; keeping every call here keeps a move to the
 * graph API local.) */
#include "internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

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
    return ck_cudnn_set_stream(ctx);
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
#else
typedef int ck_cudnn_ops_unused; /* ISO C wants at least one declaration per file */
#endif
