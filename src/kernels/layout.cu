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

/* S: the storage of cuDNN's copy (bf16: rounded to nearest even going there, widened exactly
 * coming back); the HWIO side is the fp32 parameters or their gradient */
template <class S>
__global__ void k_hwio_filter(const void *src, void *dst, int khw, int cin, int cout, int to_cudnn,
                              int kcrs) {
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
            S::st((typename S::T *)dst, f, ((const float *)src)[t]);
        else
            ((float *)dst)[t] = S::ld((const typename S::T *)src, f);
    }
}

extern "C" int ck_cuda_conv_kernel_layout(const void *src, void *dst, int khw, int cin, int cout,
                                          int to_cudnn, int kcrs, int dt, void *stream) {
    const long long total = (long long)khw * cin * cout;
    const unsigned grid = ck_grid_for(total, CK_BLOCK);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == CK_KDT_BF16)
        k_hwio_filter<ck_st_bf16>
            <<<grid, CK_BLOCK, 0, s>>>(src, dst, khw, cin, cout, to_cudnn, kcrs);
    else
        k_hwio_filter<ck_st_f32>
            <<<grid, CK_BLOCK, 0, s>>>(src, dst, khw, cin, cout, to_cudnn, kcrs);
    return ck_launch_status();
}
