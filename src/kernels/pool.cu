/*
 * Max and average pooling: the exact twin of ck_cpu_pool_forward / ck_cpu_pool_backward.
 *
 * One family of the model's small GPU kernels (launchers declared in ck_kernels.h). Every kernel
 * writes each output element from one thread in a fixed order: no atomics, so results are
 * bit-identical run to run; per-element math comes from ck_math.h, shared with the CPU ops.
 * Templated on the storage (ck_st_f32 / ck_st_bf16): fp32 math, one rounding per bf16 store
 * (max pooling of bf16 values is exact; the average is rounded). Scalar loads: a faster bf16
 * path would take two channels per 32-bit load.
 */
#include "common.cuh"

/* ---- pooling: the exact twin of ck_cpu_pool_forward / ck_cpu_pool_backward (NHWC) ---------- */

/* ck_pool_argmax over storage S. */
template <class S>
__device__ __forceinline__ void k_pool_argmax(const typename S::T *x, int w, int c, int a0, int a1,
                                              int b0, int b1, int *ba, int *bb) {
    float bv = S::ld(x, ((long long)a0 * w + b0) * c);
    *ba = a0;
    *bb = b0;
    for (int u = a0; u < a1; ++u)
        for (int v = b0; v < b1; ++v)
            ck_pool_argmax_step(S::ld(x, ((long long)u * w + v) * c), u, v, &bv, ba, bb);
}

template <class S>
__global__ void k_pool_fwd(ck_conv_geom g, int is_max, const typename S::T *x, typename S::T *y) {
    const long long total = (long long)g.n * g.oh * g.ow * g.cin;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int c = (int)(t % g.cin);
        long long q = t / g.cin;
        const int j = (int)(q % g.ow);
        q /= g.ow;
        const int i = (int)(q % g.oh);
        const long long s = q / g.oh;
        int a0, a1, b0, b1;
        ck_pool_range(i, g.sh, g.kh, g.pad_top, g.h, &a0, &a1);
        ck_pool_range(j, g.sw, g.kw, g.pad_left, g.w, &b0, &b1);
        const typename S::T *xs = x + s * g.h * g.w * g.cin + c;
        float acc = S::ld(xs, ((long long)a0 * g.w + b0) * g.cin);
        for (int a = a0; a < a1; ++a)
            for (int b = (a == a0 ? b0 + 1 : b0); b < b1; ++b) {
                const float v = S::ld(xs, ((long long)a * g.w + b) * g.cin);
                acc = ck_pool_acc(acc, v, is_max);
            }
        if (!is_max)
            acc /= ck_pool_cells(a0, a1, b0, b1);
        S::st(y, t, acc);
    }
}

/* One thread per input cell gathers the windows that contain it, in the CPU's (i, j) order. */
template <class S>
__global__ void k_pool_bwd(ck_conv_geom g, int is_max, const typename S::T *x,
                           const typename S::T *dy, typename S::T *dx) {
    const long long total = (long long)g.n * g.h * g.w * g.cin;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int c = (int)(t % g.cin);
        long long q = t / g.cin;
        const int b = (int)(q % g.w);
        q /= g.w;
        const int a = (int)(q % g.h);
        const long long s = q / g.h;
        /* windows i with i*sh - pad_top <= a < i*sh - pad_top + kh */
        int i0 = a + g.pad_top - g.kh + 1;
        i0 = i0 <= 0 ? 0 : (i0 + g.sh - 1) / g.sh;
        int i1 = (a + g.pad_top) / g.sh;
        if (i1 > g.oh - 1)
            i1 = g.oh - 1;
        int j0 = b + g.pad_left - g.kw + 1;
        j0 = j0 <= 0 ? 0 : (j0 + g.sw - 1) / g.sw;
        int j1 = (b + g.pad_left) / g.sw;
        if (j1 > g.ow - 1)
            j1 = g.ow - 1;
        const typename S::T *xs = x + s * g.h * g.w * g.cin + c;
        const typename S::T *ds = dy + s * g.oh * g.ow * g.cin + c;
        float acc = 0.0f;
        for (int i = i0; i <= i1; ++i)
            for (int j = j0; j <= j1; ++j) {
                int a0, a1, b0, b1;
                ck_pool_range(i, g.sh, g.kh, g.pad_top, g.h, &a0, &a1);
                ck_pool_range(j, g.sw, g.kw, g.pad_left, g.w, &b0, &b1);
                const float d = S::ld(ds, ((long long)i * g.ow + j) * g.cin);
                if (is_max) {
                    int ba, bb;
                    k_pool_argmax<S>(xs, g.w, g.cin, a0, a1, b0, b1, &ba, &bb);
                    if (ba == a && bb == b)
                        acc += d;
                } else {
                    acc += d / ck_pool_cells(a0, a1, b0, b1);
                }
            }
        S::st(dx, t, acc);
    }
}

extern "C" int ck_cuda_pool_forward(ck_conv_geom g, int is_max, const void *x, void *y, int dt,
                                    void *stream) {
    const long long total = (long long)g.n * g.oh * g.ow * g.cin;
    const unsigned grid = ck_grid_for(total, CK_BLOCK);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == CK_KDT_BF16)
        k_pool_fwd<ck_st_bf16>
            <<<grid, CK_BLOCK, 0, s>>>(g, is_max, (const uint16_t *)x, (uint16_t *)y);
    else
        k_pool_fwd<ck_st_f32><<<grid, CK_BLOCK, 0, s>>>(g, is_max, (const float *)x, (float *)y);
    return ck_launch_status();
}

extern "C" int ck_cuda_pool_backward(ck_conv_geom g, int is_max, const void *x, const void *dy,
                                     void *dx, int dt, void *stream) {
    const long long total = (long long)g.n * g.h * g.w * g.cin;
    const unsigned grid = ck_grid_for(total, CK_BLOCK);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == CK_KDT_BF16)
        k_pool_bwd<ck_st_bf16><<<grid, CK_BLOCK, 0, s>>>(g, is_max, (const uint16_t *)x,
                                                         (const uint16_t *)dy, (uint16_t *)dx);
    else
        k_pool_bwd<ck_st_f32>
            <<<grid, CK_BLOCK, 0, s>>>(g, is_max, (const float *)x, (const float *)dy, (float *)dx);
    return ck_launch_status();
}
