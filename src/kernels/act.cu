/*
 * Activations and softmax (forward and backward): per-element math from ck_math.h.
 *
 * One family of the model's small GPU kernels (launchers declared in ck_kernels.h). Every kernel
 * writes each output element from one thread in a fixed order: no atomics, so results are
 * bit-identical run to run; per-element math comes from ck_math.h, shared with the CPU ops.
 */
#include "common.cuh"

/* ---- activations ------------------------------------------------------------------------- */

/* no __restrict__: y may alias x (ck_kernels.h) */
__global__ void k_act_fwd(const float *x, float *y, long long count, int act, float alpha) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = ck_act_fwd_any(x[i], act, alpha);
}

__global__ void k_act_bwd(const float *x, const float *y, const float *dy, float *dx,
                          long long count, int act, float alpha) {
    const int ux = ck_act_bwd_uses_x(act), uy = ck_act_bwd_uses_y(act);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x)
        dx[i] = ck_act_bwd_any(dy[i], ux ? x[i] : 0.0f, uy ? y[i] : 0.0f, act, alpha);
}

/* Softmax over rows of c (one thread per row, the CPU loop's operations in its order). */
__global__ void k_softmax_fwd(const float *x, float *y, long long rows, int c) {
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows;
         r += (long long)gridDim.x * blockDim.x) {
        ck_softmax_row_fwd(x + r * c, y + r * c, c);
    }
}

__global__ void k_softmax_bwd(const float *y, const float *dy, float *dx, long long rows, int c) {
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows;
         r += (long long)gridDim.x * blockDim.x) {
        ck_softmax_row_bwd(y + r * c, dy + r * c, dx + r * c, c);
    }
}

extern "C" int ck_cuda_activation_forward(int act, float alpha, const float *x, float *y,
                                          size_t count, int c, void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    if (act == CK_ACT_SOFTMAX) {
        const long long rows = (long long)(count / (size_t)c);
        k_softmax_fwd<<<ck_grid_for(rows, CK_BLOCK), CK_BLOCK, 0, s>>>(x, y, rows, c);
    } else if (act == CK_ACT_NONE) {
        if (x != y)
            return (int)cudaMemcpyAsync(y, x, count * sizeof(float), cudaMemcpyDeviceToDevice, s);
        return 0;
    } else {
        k_act_fwd<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, s>>>(
            x, y, (long long)count, act, alpha);
    }
    return ck_launch_status();
}

extern "C" int ck_cuda_activation_backward(int act, float alpha, const float *x, const float *y,
                                           const float *dy, float *dx, size_t count, int c,
                                           void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    if (act == CK_ACT_SOFTMAX) {
        const long long rows = (long long)(count / (size_t)c);
        k_softmax_bwd<<<ck_grid_for(rows, CK_BLOCK), CK_BLOCK, 0, s>>>(y, dy, dx, rows, c);
    } else if (act == CK_ACT_NONE) {
        if (dx != dy)
            return (int)cudaMemcpyAsync(dx, dy, count * sizeof(float), cudaMemcpyDeviceToDevice, s);
        return 0;
    } else {
        k_act_bwd<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, s>>>(
            x, y, dy, dx, (long long)count, act, alpha);
    }
    return ck_launch_status();
}
