/*
 * kemu's cuBLAS: the handle, stream, math-mode and workspace calls, cublasSgemm and cublasGemmEx
 * (fp32 and bf16 data, fp32 compute) on the CPU. Column-major as documented: C (m x n, ldc) =
 * alpha op(A) op(B) + beta C, op(A) m x k, op(B) k x n; sums in double rounded to fp32 (bf16 C
 * then rounded to nearest even). fp32 inputs are rounded to TF32 (nearest) where cuBLAS may use
 * TF32 tensor cores: CUBLAS_TF32_TENSOR_OP_MATH, or CUBLAS_COMPUTE_32F_FAST_TF32.
 * Workspace: cublasSetStream drops a user workspace (the documented reset to the default pool);
 * the default pool of a stream is allocated at the handle's first GEMM there, which a stream
 * capture refuses (CUBLAS_STATUS_ALLOC_FAILED), as cudaMalloc under capture would fail.
 */
#include <cublas_v2.h>

#include <stdint.h>
#include <string.h>

#include <set>

#include "ck_math.h"
#include "kemu.h"

struct cublasContext {
    cudaStream_t stream;
    int device; /* current at cublasCreate */
    cublasMath_t math;
    void *ws;
    size_t ws_bytes;
    std::set<cudaStream_t> pools; /* streams whose default workspace pool exists */
};

namespace {

float tf32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0x7F800000u)
        return f;
    u = (u + 0xFFFu + ((u >> 13) & 1u)) & ~0x1FFFu;
    memcpy(&f, &u, 4);
    return f;
}

float ld(const void *p, cudaDataType t, size_t i) {
    return t == CUDA_R_16BF ? ck_bf16_to_float(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

size_t tsize(cudaDataType t) {
    return t == CUDA_R_16BF ? 2 : 4;
}

bool valid_op(cublasOperation_t o) {
    return o == CUBLAS_OP_N || o == CUBLAS_OP_T || o == CUBLAS_OP_C;
}

/* Bytes spanned by a rows x cols column-major matrix with leading dimension ld. */
size_t span(int rows, int cols, int ld, size_t es) {
    return rows > 0 && cols > 0 ? ((size_t)(cols - 1) * ld + rows) * es : 0;
}

struct Gemm {
    cublasOperation_t ta, tb;
    int m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const void *A, *B;
    void *C;
    cudaDataType at, bt, ct;
    bool tf;
};

void run(const Gemm &g) {
    for (int j = 0; j < g.n; ++j)
        for (int i = 0; i < g.m; ++i) {
            double acc = 0.0;
            for (int p = 0; p < g.k && g.alpha != 0.0f; ++p) {
                /* real operands: CUBLAS_OP_C is CUBLAS_OP_T */
                float a = ld(g.A, g.at,
                             g.ta == CUBLAS_OP_N ? i + (size_t)p * g.lda : p + (size_t)i * g.lda);
                float b = ld(g.B, g.bt,
                             g.tb == CUBLAS_OP_N ? p + (size_t)j * g.ldb : j + (size_t)p * g.ldb);
                if (g.tf) {
                    a = tf32(a);
                    b = tf32(b);
                }
                acc += (double)a * b;
            }
            const size_t o = i + (size_t)j * g.ldc;
            float v = g.alpha * (float)acc;
            if (g.beta != 0.0f) /* beta 0: C is not read (it may hold NaN) */
                v += g.beta * ld(g.C, g.ct, o);
            if (g.ct == CUDA_R_16BF)
                ((uint16_t *)g.C)[o] = ck_bf16_bits(v);
            else
                ((float *)g.C)[o] = v;
        }
}

cublasStatus_t gemm(cublasHandle_t h, const char *fn, Gemm g, const float *alpha,
                    const float *beta) {
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    const int arows = g.ta == CUBLAS_OP_N ? g.m : g.k, brows = g.tb == CUBLAS_OP_N ? g.k : g.n;
    if (!valid_op(g.ta) || !valid_op(g.tb) || g.m < 0 || g.n < 0 || g.k < 0 ||
        g.lda < (arows > 1 ? arows : 1) || g.ldb < (brows > 1 ? brows : 1) ||
        g.ldc < (g.m > 1 ? g.m : 1) || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (g.m == 0 || g.n == 0)
        return CUBLAS_STATUS_SUCCESS;
    if (kemu::capturing(h->stream) && !h->ws && !h->pools.count(h->stream))
        return CUBLAS_STATUS_ALLOC_FAILED;
    h->pools.insert(h->stream);
    g.alpha = *alpha; /* host pointer mode (the default): read at the call */
    g.beta = *beta;
    const bool uses_ab = g.k > 0 && g.alpha != 0.0f;
    const size_t ab =
        uses_ab ? span(arows, g.ta == CUBLAS_OP_N ? g.k : g.m, g.lda, tsize(g.at)) : 0;
    const size_t bb =
        uses_ab ? span(brows, g.tb == CUBLAS_OP_N ? g.n : g.k, g.ldb, tsize(g.bt)) : 0;
    const size_t cb = span(g.m, g.n, g.ldc, tsize(g.ct));
    if (ab && !kemu::is_device(g.A, ab))
        kemu::fault("%s: A (%p, %zu bytes) is not device memory", fn, g.A, ab);
    if (bb && !kemu::is_device(g.B, bb))
        kemu::fault("%s: B (%p, %zu bytes) is not device memory", fn, g.B, bb);
    if (!kemu::is_device(g.C, cb))
        kemu::fault("%s: C (%p, %zu bytes) is not device memory", fn, g.C, cb);
    if (h->ws && !kemu::is_device(h->ws, h->ws_bytes))
        kemu::fault("%s: the workspace set by cublasSetWorkspace (%p, %zu bytes) is not live "
                    "device memory",
                    fn, h->ws, h->ws_bytes);
    kemu::check_handle(fn, h->device, h->stream);
    return kemu::submit(h->stream, [g]() { run(g); }) == cudaSuccess
               ? CUBLAS_STATUS_SUCCESS
               : CUBLAS_STATUS_EXECUTION_FAILED;
}

} // namespace

extern "C" {

cublasStatus_t cublasCreate(cublasHandle_t *h) {
    if (!h)
        return CUBLAS_STATUS_INVALID_VALUE;
    *h = new cublasContext{nullptr, kemu::current_device(), CUBLAS_DEFAULT_MATH, nullptr, 0, {}};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    h->ws = nullptr; /* "unconditionally resets the workspace back to the default pool" */
    h->ws_bytes = 0;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetStream(cublasHandle_t h, cudaStream_t *s) {
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!s)
        return CUBLAS_STATUS_INVALID_VALUE;
    *s = h->stream;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes) {
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((bytes > 0 && !ws) || ((uintptr_t)ws & 255u))
        return CUBLAS_STATUS_INVALID_VALUE; /* at least 256-byte aligned */
    if (bytes > 0 && !kemu::is_device(ws, bytes))
        kemu::fault("cublasSetWorkspace: %p (%zu bytes) is not device memory", ws, bytes);
    h->ws = bytes > 0 ? ws : nullptr;
    h->ws_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    const unsigned m = (unsigned)mode;
    if ((m & 0xFu) > (unsigned)CUBLAS_TF32_TENSOR_OP_MATH ||
        (m & ~0xFu & ~(unsigned)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION))
        return CUBLAS_STATUS_INVALID_VALUE;
    h->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetMathMode(cublasHandle_t h, cublasMath_t *mode) {
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode)
        return CUBLAS_STATUS_INVALID_VALUE;
    *mode = h->math;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetProperty(libraryPropertyType type, int *value) {
    if (!value)
        return CUBLAS_STATUS_INVALID_VALUE;
    switch (type) {
    case MAJOR_VERSION:
        *value = CUBLAS_VER_MAJOR;
        return CUBLAS_STATUS_SUCCESS;
    case MINOR_VERSION:
        *value = CUBLAS_VER_MINOR;
        return CUBLAS_STATUS_SUCCESS;
    case PATCH_LEVEL:
        *value = CUBLAS_VER_PATCH;
        return CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float *alpha, const float *A, int lda,
                           const float *B, int ldb, const float *beta, float *C, int ldc) {
    const bool tf = h && ((unsigned)h->math & 0xFu) == CUBLAS_TF32_TENSOR_OP_MATH;
    const Gemm g{ta,   tb, m, n, k,          lda,        ldb,        ldc, 0.0f,
                 0.0f, A,  B, C, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, tf};
    return gemm(h, "cublasSgemm", g, alpha, beta);
}

/* The fp32-compute rows of cublasGemmEx's table that cnnkit can use: A and B both fp32 or both
 * bf16, C fp32 (or bf16 with bf16 A and B); other types are refused as unsupported. */
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType at,
                            int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
                            void *C, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo) {
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_PEDANTIC &&
        compute != CUBLAS_COMPUTE_32F_FAST_TF32)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    const bool f32 = at == CUDA_R_32F && bt == CUDA_R_32F && ct == CUDA_R_32F;
    const bool b16 =
        at == CUDA_R_16BF && bt == CUDA_R_16BF && (ct == CUDA_R_16BF || ct == CUDA_R_32F);
    if (!f32 && !b16)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (!(algo == CUBLAS_GEMM_DEFAULT ||
          (algo >= CUBLAS_GEMM_ALGO0 && algo <= CUBLAS_GEMM_ALGO23) ||
          (algo >= CUBLAS_GEMM_DEFAULT_TENSOR_OP && algo <= CUBLAS_GEMM_ALGO15_TENSOR_OP)))
        return CUBLAS_STATUS_INVALID_VALUE;
    const bool pedantic = compute == CUBLAS_COMPUTE_32F_PEDANTIC ||
                          ((unsigned)h->math & 0xFu) == CUBLAS_PEDANTIC_MATH;
    const bool tf = f32 && !pedantic &&
                    (compute == CUBLAS_COMPUTE_32F_FAST_TF32 ||
                     ((unsigned)h->math & 0xFu) == CUBLAS_TF32_TENSOR_OP_MATH);
    const Gemm g{ta, tb, m, n, k, lda, ldb, ldc, 0.0f, 0.0f, A, B, C, at, bt, ct, tf};
    return gemm(h, "cublasGemmEx", g, (const float *)alpha, (const float *)beta);
}

} // extern "C"
