/*
 * Conv kernel layout transposes between Keras HWIO and cuDNN's filter layouts.
 *
 * One family of the model's small GPU kernels (launchers declared in ck_kernels.h). Every kernel
 * writes each output element from one thread in a fixed order: no atomics, so results are
 * bit-identical run to run; per-element math comes from ck_math.h, shared with the CPU ops.
 */
#include "common.cuh"

/* ---- conv kernel layouts: Keras HWIO (kh, kw, cin, cout) <-> cuDNN's filter layouts: KRSC
 *      (cout, kh, kw, cin; NHWC convolutions) or KCRS (cout, cin, kh, kw; the NCHW fallback) -- */

__global__ void k_hwio_filter(const float *src, float *dst, int khw, int cin, int cout,
                              int to_cudnn, int kcrs) {
    const long long total = (long long)khw * cin * cout;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        /* t indexes HWIO: ((r * cin) + ci) * cout + co */
        const int co = (int)(t % cout);
        const long long q = t / cout;
        const int ci = (int)(q % cin);
        const int r = (int)(q / cin);
        const long long f =
            kcrs ? ((long long)co * cin + ci) * khw + r : ((long long)co * khw + r) * cin + ci;
        if (to_cudnn)
            dst[f] = src[t];
        else
            dst[t] = src[f];
    }
}

extern "C" int ck_cuda_conv_kernel_layout(const float *src, float *dst, int khw, int cin, int cout,
                                          int to_cudnn, int kcrs, void *stream) {
    const long long total = (long long)khw * cin * cout;
    k_hwio_filter<<<ck_grid_for(total, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        src, dst, khw, cin, cout, to_cudnn, kcrs);
    return ck_launch_status();
}
