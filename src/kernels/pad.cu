/*
 * Explicit zero padding and its crop (the backward).
 *
 * One family of the model's small GPU kernels (launchers declared in ck_kernels.h). Every kernel
 * writes each output element from one thread in a fixed order: no atomics, so results are
 * bit-identical run to run; per-element math comes from ck_math.h, shared with the CPU ops.
 */
#include "common.cuh"

/* ---- explicit zero padding (asymmetric 'same' padding cuDNN cannot express) ----------------- */

/* pad: dst (n, h + pt + pb, w + pl + pr, c) = src placed at (pt, pl), zeros around.
 * crop (the backward): dst (n, h, w, c) = the (pt, pl) window of src. */
__global__ void k_pad(const float *src, float *dst, int n, int h, int w, int c, int pt, int pl,
                      int hp, int wp, int crop) {
    const long long total = crop ? (long long)n * h * w * c : (long long)n * hp * wp * c;
    const int oh = crop ? h : hp, ow = crop ? w : wp;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int ch = (int)(t % c);
        long long q = t / c;
        const int j = (int)(q % ow);
        q /= ow;
        const int i = (int)(q % oh);
        const long long s = q / oh;
        if (crop) {
            dst[t] = src[((s * hp + i + pt) * wp + j + pl) * c + ch];
        } else {
            const int a = i - pt, b = j - pl;
            dst[t] =
                (a >= 0 && a < h && b >= 0 && b < w) ? src[((s * h + a) * w + b) * c + ch] : 0.0f;
        }
    }
}

extern "C" int ck_cuda_pad_nhwc(const float *src, float *dst, int n, int h, int w, int c, int pt,
                                int pl, int hp, int wp, int crop, void *stream) {
    const long long total = crop ? (long long)n * h * w * c : (long long)n * hp * wp * c;
    k_pad<<<ck_grid_for(total, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        src, dst, n, h, w, c, pt, pl, hp, wp, crop);
    return ck_launch_status();
}
