/* Dense layers on the GPU through cuBLAS (ck_gdense_* of gpu_layers.h). */
#include "internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "cudnn_internal.h"

/* ---- Dense (cuBLAS; strict fp32, or TF32 under CK_MATH_TF32: ck_cublas_set_math). Row-major
 *      x (n, in), k (in, out), y (n, out) are the column-major transposes cuBLAS sees:
 *      y^T = k^T x^T. ------------------------------------------------------------------------- */

size_t ck_gdense_workspace_bytes(int out) {
    return ck_cuda_colsum_workspace_bytes(out);
}

ck_status ck_gdense_forward(ck_context *ctx, int n, int in, int out, const float *x, const float *k,
                            const float *bias, float *y) {
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = cublasSgemm((cublasHandle_t)ctx->cublas, CUBLAS_OP_N, CUBLAS_OP_N, out, n,
                                    in, &one, k, out, x, in, &zero, y, out);
    if (st != CUBLAS_STATUS_SUCCESS)
        return ck_blas_fail(ctx, st, "dense: cublasSgemm (forward)");
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
        return ck_blas_fail(ctx, st, "dense: cublasSgemm (kernel gradient)");
    if (dx) {
        /* dx^T (in x n) = k (in x out) * dy^T (out x n) */
        st = cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, in, n, out, &one, k, out, dy, out, &zero, dx,
                         in);
        if (st != CUBLAS_STATUS_SUCCESS)
            return ck_blas_fail(ctx, st, "dense: cublasSgemm (input gradient)");
    }
    if (dbias)
        CUDA_TRY(ctx, ck_cuda_colsum(dy, n, out, dbias, ws, ctx->stream), "dense: bias gradient");
    return CK_STATUS_SUCCESS;
}
#else
typedef int ck_cublas_dense_unused; /* ISO C wants at least one declaration per file */
#endif
