/*
 * GlobalAveragePooling2D forward and backward.
 *
 * One family of the model's small GPU kernels (launchers declared in ck_kernels.h). Every kernel
 * writes each output element from one thread in a fixed order: no atomics, so results are
 * bit-identical run to run; per-element math comes from ck_math.h, shared with the CPU ops.
 */
#include "common.cuh"

/* ---- GlobalAveragePooling2D ---------------------------------------------------------------- */

__global__ void k_gap_fwd(int n, int hw, int c, const float *x, float *y) {
    const long long total = (long long)n * c;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long s = t / c;
        const int ch = (int)(t % c);
        const float *xs = x + s * hw * c + ch;
        double acc = 0.0;
        for (int p = 0; p < hw; ++p)
            acc += xs[(long long)p * c];
        y[t] = (float)(acc / hw);
    }
}

__global__ void k_gap_bwd(int n, int hw, int c, const float *dy, float *dx) {
    const long long total = (long long)n * hw * c;
    const float den = (float)hw;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x)
        dx[t] = dy[(t / ((long long)hw * c)) * c + t % c] / den;
}

extern "C" int ck_cuda_gap_forward(int n, int hw, int c, const float *x, float *y, void *stream) {
    k_gap_fwd<<<ck_grid_for((long long)n * c, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        n, hw, c, x, y);
    return ck_launch_status();
}

extern "C" int ck_cuda_gap_backward(int n, int hw, int c, const float *dy, float *dx,
                                    void *stream) {
    k_gap_bwd<<<ck_grid_for((long long)n * hw * c, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        n, hw, c, dy, dx);
    return ck_launch_status();
}
