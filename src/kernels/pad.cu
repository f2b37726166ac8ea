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
template <class T>
__global__ void k_pad(const T *src, T *dst, int n, int h, int w, int c, int pt, int pl, int hp,
                      int wp, int crop) {
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
                (a >= 0 && a < h && b >= 0 && b < w) ? src[((s * h + a) * w + b) * c + ch] : T(0);
        }
    }
}

/* a copy: bf16 words (dt CK_KDT_BF16) are moved as they are, +0 around */
extern "C" int ck_cuda_pad_nhwc(const void *src, void *dst, int n, int h, int w, int c, int pt,
                                int pl, int hp, int wp, int crop, int dt, void *stream) {
    const long long total = crop ? (long long)n * h * w * c : (long long)n * hp * wp * c;
    const unsigned grid = ck_grid_for(total, CK_BLOCK);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == CK_KDT_BF16)
        k_pad<uint16_t><<<grid, CK_BLOCK, 0, s>>>((const uint16_t *)src, (uint16_t *)dst, n, h, w,
                                                  c, pt, pl, hp, wp, crop);
    else
        k_pad<float><<<grid, CK_BLOCK, 0, s>>>((const float *)src, (float *)dst, n, h, w, c, pt, pl,
                                               hp, wp, crop);
    return ck_launch_status();
}
