/*
 * Activations and softmax (forward and backward): per-element math from ck_math.h.
 *
 * One family of the model's small GPU kernels (launchers declared in ck_kernels.h). Every kernel
 * writes each output element from one thread in a fixed order: no atomics, so results are
 * bit-identical run to run; per-element math comes from ck_math.h, shared with the CPU ops.
 * Templated on the storage (ck_st_f32 / ck_st_bf16): the math is fp32 either way, a bf16 store
 * rounds once. The bf16 activations (not softmax) move 8 words per 16-byte access when the
 * pointers allow, with the scalar kernels' per-element arithmetic.
 */
#include "common.cuh"

/* ---- activations ------------------------------------------------------------------------- */

/* no __restrict__: y may alias x (ck_kernels.h) */
template <class S>
__global__ void k_act_fwd(const typename S::T *x, typename S::T *y, long long count, int act,
                          float alpha) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x)
        S::st(y, i, ck_act_fwd_any(S::ld(x, i), act, alpha));
}

template <class S>
__global__ void k_act_bwd(const typename S::T *x, const typename S::T *y, const typename S::T *dy,
                          typename S::T *dx, long long count, int act, float alpha) {
    const int ux = ck_act_bwd_uses_x(act), uy = ck_act_bwd_uses_y(act);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x)
        S::st(dx, i,
              ck_act_bwd_any(S::ld(dy, i), ux ? S::ld(x, i) : 0.0f, uy ? S::ld(y, i) : 0.0f, act,
                             alpha));
}

/* bf16, 8 words per 16-byte access (every pointer used 16-byte aligned), the count % 8 tail one
 * by one; each element as k_act_fwd / k_act_bwd. */
__global__ void k_act_fwd_vec8(const uint16_t *x, uint16_t *y, long long count, int act,
                               float alpha) {
    const long long octs = count / 8, tid = blockIdx.x * (long long)blockDim.x + threadIdx.x,
                    stride = (long long)gridDim.x * blockDim.x;
    for (long long o = tid; o < octs; o += stride) {
        float v[8];
        ck_bf16x8_ld(x, o * 8, v);
#pragma unroll
        for (int j = 0; j < 8; ++j)
            v[j] = ck_act_fwd_any(v[j], act, alpha);
        ck_bf16x8_st(y, o * 8, v);
    }
    for (long long i = octs * 8 + tid; i < count; i += stride)
        ck_st_bf16::st(y, i, ck_act_fwd_any(ck_st_bf16::ld(x, i), act, alpha));
}

__global__ void k_act_bwd_vec8(const uint16_t *x, const uint16_t *y, const uint16_t *dy,
                               uint16_t *dx, long long count, int act, float alpha) {
    typedef ck_st_bf16 S;
    const int ux = ck_act_bwd_uses_x(act), uy = ck_act_bwd_uses_y(act);
    const long long octs = count / 8, tid = blockIdx.x * (long long)blockDim.x + threadIdx.x,
                    stride = (long long)gridDim.x * blockDim.x;
    for (long long o = tid; o < octs; o += stride) {
        float xv[8] = {0}, yv[8] = {0}, dv[8];
        if (ux)
            ck_bf16x8_ld(x, o * 8, xv);
        if (uy)
            ck_bf16x8_ld(y, o * 8, yv);
        ck_bf16x8_ld(dy, o * 8, dv);
#pragma unroll
        for (int j = 0; j < 8; ++j)
            dv[j] = ck_act_bwd_any(dv[j], xv[j], yv[j], act, alpha);
        ck_bf16x8_st(dx, o * 8, dv);
    }
    for (long long i = octs * 8 + tid; i < count; i += stride)
        S::st(dx, i,
              ck_act_bwd_any(S::ld(dy, i), ux ? S::ld(x, i) : 0.0f, uy ? S::ld(y, i) : 0.0f, act,
                             alpha));
}

/* Softmax over rows of c (one thread per row, the CPU loop's operations in its order). */
__global__ void k_softmax_fwd(const float *x, float *y, long long rows, int c) {
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows;
         r += (long long)gridDim.x * blockDim.x) {
        ck_softmax_row_fwd(x + r * c, y + r * c, c);
    }
}

/* bf16 rows: ck_softmax_row_fwd keeps the fp32 exponentials in y between its passes; here they
 * are computed again in the last pass (expf is deterministic: the same bits), so the only store
 * is the rounded result. */
__global__ void k_softmax_fwd_bf16(const uint16_t *x, uint16_t *y, long long rows, int c) {
    typedef ck_st_bf16 S;
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows;
         r += (long long)gridDim.x * blockDim.x) {
        const uint16_t *xr = x + r * c;
        uint16_t *yr = y + r * c;
        float m = S::ld(xr, 0);
        for (int j = 1; j < c; ++j) {
            const float v = S::ld(xr, j);
            m = v > m ? v : m;
        }
        double sum = 0.0;
        for (int j = 0; j < c; ++j)
            sum += expf(S::ld(xr, j) - m);
        const float inv = (float)(1.0 / sum);
        for (int j = 0; j < c; ++j)
            S::st(yr, j, ck_mul_rn(expf(S::ld(xr, j) - m), inv));
    }
}

__global__ void k_softmax_bwd(const float *y, const float *dy, float *dx, long long rows, int c) {
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows;
         r += (long long)gridDim.x * blockDim.x) {
        ck_softmax_row_bwd(y + r * c, dy + r * c, dx + r * c, c);
    }
}

/* ck_softmax_row_bwd over bf16 rows (dx may alias dy: each dx[j] is written after the dot). */
__global__ void k_softmax_bwd_bf16(const uint16_t *y, const uint16_t *dy, uint16_t *dx,
                                   long long rows, int c) {
    typedef ck_st_bf16 S;
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows;
         r += (long long)gridDim.x * blockDim.x) {
        const long long o = r * c;
        double dot = 0.0;
        for (int j = 0; j < c; ++j)
            dot += ck_dmul_rn(S::ld(dy, o + j), S::ld(y, o + j));
        const float d = (float)dot;
        for (int j = 0; j < c; ++j)
            S::st(dx, o + j, ck_mul_rn(S::ld(y, o + j), S::ld(dy, o + j) - d));
    }
}

extern "C" int ck_cuda_activation_forward(int act, float alpha, const void *x, void *y,
                                          size_t count, int c, int dt, void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    const bool bf = dt == CK_KDT_BF16;
    if (act == CK_ACT_SOFTMAX) {
        const long long rows = (long long)(count / (size_t)c);
        if (bf)
            k_softmax_fwd_bf16<<<ck_grid_for(rows, CK_BLOCK), CK_BLOCK, 0, s>>>(
                (const uint16_t *)x, (uint16_t *)y, rows, c);
        else
            k_softmax_fwd<<<ck_grid_for(rows, CK_BLOCK), CK_BLOCK, 0, s>>>((const float *)x,
                                                                           (float *)y, rows, c);
    } else if (act == CK_ACT_NONE) {
        if (x != y)
            return (int)cudaMemcpyAsync(y, x, ck_kdt_bytes(dt, count), cudaMemcpyDeviceToDevice, s);
        return 0;
    } else if (bf && ck_aligned16(x, y)) {
        k_act_fwd_vec8<<<ck_grid_for((long long)count / 8 + 1, CK_BLOCK), CK_BLOCK, 0, s>>>(
            (const uint16_t *)x, (uint16_t *)y, (long long)count, act, alpha);
    } else if (bf) {
        k_act_fwd<ck_st_bf16><<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, s>>>(
            (const uint16_t *)x, (uint16_t *)y, (long long)count, act, alpha);
    } else {
        k_act_fwd<ck_st_f32><<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, s>>>(
            (const float *)x, (float *)y, (long long)count, act, alpha);
    }
    return ck_launch_status();
}

extern "C" int ck_cuda_activation_backward(int act, float alpha, const void *x, const void *y,
                                           const void *dy, void *dx, size_t count, int c, int dt,
                                           void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    const bool bf = dt == CK_KDT_BF16;
    if (act == CK_ACT_SOFTMAX) {
        const long long rows = (long long)(count / (size_t)c);
        if (bf)
            k_softmax_bwd_bf16<<<ck_grid_for(rows, CK_BLOCK), CK_BLOCK, 0, s>>>(
                (const uint16_t *)y, (const uint16_t *)dy, (uint16_t *)dx, rows, c);
        else
            k_softmax_bwd<<<ck_grid_for(rows, CK_BLOCK), CK_BLOCK, 0, s>>>(
                (const float *)y, (const float *)dy, (float *)dx, rows, c);
    } else if (act == CK_ACT_NONE) {
        if (dx != dy)
            return (int)cudaMemcpyAsync(dx, dy, ck_kdt_bytes(dt, count), cudaMemcpyDeviceToDevice,
                                        s);
        return 0;
    } else if (bf && ck_aligned16(dy, dx) && (!ck_act_bwd_uses_x(act) || ck_aligned16(x, x)) &&
               (!ck_act_bwd_uses_y(act) || ck_aligned16(y, y))) {
        k_act_bwd_vec8<<<ck_grid_for((long long)count / 8 + 1, CK_BLOCK), CK_BLOCK, 0, s>>>(
            (const uint16_t *)x, (const uint16_t *)y, (const uint16_t *)dy, (uint16_t *)dx,
            (long long)count, act, alpha);
    } else if (bf) {
        k_act_bwd<ck_st_bf16><<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, s>>>(
            (const uint16_t *)x, (const uint16_t *)y, (const uint16_t *)dy, (uint16_t *)dx,
            (long long)count, act, alpha);
    } else {
        k_act_bwd<ck_st_f32><<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, s>>>(
            (const float *)x, (const float *)y, (const float *)dy, (float *)dx, (long long)count,
            act, alpha);
    }
    return ck_launch_status();
}
