/*
 * GlobalAveragePooling2D forward and backward.
 *
 * One family of the model's small GPU kernels (launchers declared in ck_kernels.h). Every kernel
 * writes each output element from one thread in a fixed order: no atomics, so results are
 * bit-identical run to run; per-element math comes from ck_math.h, shared with the CPU ops.
 * Templated on the storage (ck_st_f32 / ck_st_bf16): fp32 math, one rounding per bf16 store.
 * Scalar bf16 loads (a faster path would take two channels per 32-bit load).
 */
#include "common.cuh"

/* ---- GlobalAveragePooling2D ---------------------------------------------------------------- */

template <class S>
__global__ void k_gap_fwd(int n, int hw, int c, const typename S::T *x, typename S::T *y) {
    const long long total = (long long)n * c;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long s = t / c;
        const int ch = (int)(t % c);
        const typename S::T *xs = x + s * hw * c + ch;
        double acc = 0.0;
        for (int p = 0; p < hw; ++p)
            acc += S::ld(xs, (long long)p * c);
        S::st(y, t, (float)(acc / hw));
    }
}

template <class S>
__global__ void k_gap_bwd(int n, int hw, int c, const typename S::T *dy, typename S::T *dx) {
    const long long total = (long long)n * hw * c;
    const float den = (float)hw;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x)
        S::st(dx, t, S::ld(dy, (t / ((long long)hw * c)) * c + t % c) / den);
}

extern "C" int ck_cuda_gap_forward(int n, int hw, int c, const void *x, void *y, int dt,
                                   void *stream) {
    const unsigned grid = ck_grid_for((long long)n * c, CK_BLOCK);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == CK_KDT_BF16)
        k_gap_fwd<ck_st_bf16>
            <<<grid, CK_BLOCK, 0, s>>>(n, hw, c, (const uint16_t *)x, (uint16_t *)y);
    else
        k_gap_fwd<ck_st_f32><<<grid, CK_BLOCK, 0, s>>>(n, hw, c, (const float *)x, (float *)y);
    return ck_launch_status();
}

extern "C" int ck_cuda_gap_backward(int n, int hw, int c, const void *dy, void *dx, int dt,
                                    void *stream) {
    const unsigned grid = ck_grid_for((long long)n * hw * c, CK_BLOCK);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == CK_KDT_BF16)
        k_gap_bwd<ck_st_bf16>
            <<<grid, CK_BLOCK, 0, s>>>(n, hw, c, (const uint16_t *)dy, (uint16_t *)dx);
    else
        k_gap_bwd<ck_st_f32><<<grid, CK_BLOCK, 0, s>>>(n, hw, c, (const float *)dy, (float *)dx);
    return ck_launch_status();
}
