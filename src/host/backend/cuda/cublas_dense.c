/* Dense layers on the GPU through cuBLAS (ck_gdense_* of gpu_layers.h). */
#include "internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "cudnn_internal.h"

/* ---- Dense (cuBLAS; strict fp32, or TF32 under CK_MATH_TF32: ck_cublas_set_math). Row-major
 *      x (n, in), k (in, out), y (n, out) are the column-major transposes cuBLAS sees:
 *      y^T = k^T x^T. ------------------------------------------------------------------------- */

/* Workspace: the bias gradient's column-sum partials, then (bf16) the kernel packed to bf16 words
 * for the tensor-core GEMMs, 256-byte aligned. */
static size_t colsum_part(int out) {
    return (ck_cuda_colsum_workspace_bytes(out) + 255u) & ~(size_t)255u;
}

size_t ck_gdense_workspace_bytes(int out) {
    return ck_cuda_colsum_workspace_bytes(out);
}

size_t ck_gdense_workspace_bytes_dt(int in, int out, int dt) {
    if (dt != CK_KDT_BF16)
        return ck_gdense_workspace_bytes(out);
    return colsum_part(out) + ck_kdt_bytes(CK_KDT_BF16, (size_t)in * out);
}

ck_status ck_gdense_forward(ck_context *ctx, int n, int in, int out, const float *x, const float *k,
                            const float *bias, float *y) {
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = cublasSgemm((cublasHandle_t)ctx->cublas, CUBLAS_OP_N, CUBLAS_OP_N, out, n,
                                    in, &one, k, out, x, in, &zero, y, out);
    if (st != CUBLAS_STATUS_SUCCESS)
        return ck_blas_fail(ctx, st, "dense: cublasSgemm (forward)");
    if (bias)
        CUDA_TRY(ctx, ck_cuda_bias_add(y, bias, n, out, CK_KDT_F32, ctx->stream),
                 "dense: bias add");
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
        CUDA_TRY(ctx, ck_cuda_colsum(dy, n, out, CK_KDT_F32, dbias, ws, ctx->stream),
                 "dense: bias gradient");
    return CK_STATUS_SUCCESS;
}

/* ---- bf16 (docs/precision.md): cublasGemmEx with bf16 A and B, fp32 accumulation
 *      (CUBLAS_COMPUTE_32F: tensor cores under the context's default or TF32 math mode, never
 *      pedantic), the kernel packed to bf16 in the workspace each call. ---------------------- */

static uint16_t *packed_kernel(void *ws, int out) {
    return (uint16_t *)((char *)ws + colsum_part(out));
}

static cudaDataType_t blas_type(int dt) {
    return dt == CK_KDT_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

ck_status ck_gdense_forward_dt(ck_context *ctx, int n, int in, int out, const void *x, int xdt,
                               const float *k, const float *bias, void *y, int ydt, void *ws) {
    if (xdt != CK_KDT_BF16)
        return ck_gdense_forward(ctx, n, in, out, (const float *)x, k, bias, (float *)y);
    uint16_t *kb = packed_kernel(ws, out);
    CUDA_TRY(ctx, ck_cuda_bf16_pack(k, kb, (size_t)in * out, ctx->stream), "dense: kernel to bf16");
    const float one = 1.0f, zero = 0.0f;
    /* y^T (out x n) = k^T x^T; a hidden layer's y in bf16 (rounded once), the logits in fp32 */
    const cublasStatus_t st =
        cublasGemmEx((cublasHandle_t)ctx->cublas, CUBLAS_OP_N, CUBLAS_OP_N, out, n, in, &one, kb,
                     CUDA_R_16BF, out, x, CUDA_R_16BF, in, &zero, y, blas_type(ydt), out,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        return ck_blas_fail(ctx, st, "dense: cublasGemmEx bf16 (forward)");
    if (bias)
        CUDA_TRY(ctx, ck_cuda_bias_add(y, bias, n, out, ydt, ctx->stream), "dense: bias add");
    return CK_STATUS_SUCCESS;
}

ck_status ck_gdense_backward_dt(ck_context *ctx, int n, int in, int out, const void *x,
                                const float *k, const void *dy, void *dx, float *dk, float *dbias,
                                int dt, void *ws) {
    if (dt != CK_KDT_BF16)
        return ck_gdense_backward(ctx, n, in, out, (const float *)x, k, (const float *)dy,
                                  (float *)dx, dk, dbias, ws);
    const float one = 1.0f, zero = 0.0f;
    cublasHandle_t h = (cublasHandle_t)ctx->cublas;
    /* dk^T (out x in, fp32: not rounded) = dy^T (out x n) * x (n x in) */
    cublasStatus_t st = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, out, in, n, &one, dy, CUDA_R_16BF,
                                     out, x, CUDA_R_16BF, in, &zero, dk, CUDA_R_32F, out,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        return ck_blas_fail(ctx, st, "dense: cublasGemmEx bf16 (kernel gradient)");
    if (dx) {
        /* the kernel packed again: the forward's copy is not kept between the calls */
        uint16_t *kb = packed_kernel(ws, out);
        CUDA_TRY(ctx, ck_cuda_bf16_pack(k, kb, (size_t)in * out, ctx->stream),
                 "dense: kernel to bf16");
        /* dx^T (in x n, bf16) = k (in x out) * dy^T (out x n) */
        st = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, in, n, out, &one, kb, CUDA_R_16BF, out, dy,
                          CUDA_R_16BF, out, &zero, dx, CUDA_R_16BF, in, CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT);
        if (st != CUBLAS_STATUS_SUCCESS)
            return ck_blas_fail(ctx, st, "dense: cublasGemmEx bf16 (input gradient)");
    }
    if (dbias)
        CUDA_TRY(ctx, ck_cuda_colsum(dy, n, out, CK_KDT_BF16, dbias, ws, ctx->stream),
                 "dense: bias gradient");
    return CK_STATUS_SUCCESS;
}
#else
typedef int ck_cublas_dense_unused; /* ISO C wants at least one declaration per file */
#endif
