/*
 * Rescaling (keras.layers.Rescaling): y = x * scale + offset forward, dx = dy * scale backward.
 *
 * One thread per element in a grid-stride loop; the per-element math is ck_math.h's
 * ck_rescale_fwd / ck_rescale_bwd, the CPU op's own, so the two are bit-identical.
 */
#include "common.cuh"

/* no __restrict__: y may alias x (ck_kernels.h). Templated on the storage (ck_st_f32 /
 * ck_st_bf16): one rounding per bf16 store; scalar bf16 loads (a faster path: two per word). */
template <class S>
__global__ void k_rescale(const typename S::T *x, typename S::T *y, long long count, float scale,
                          float offset, int backward) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x) {
        const float v = S::ld(x, i);
        S::st(y, i, backward ? ck_rescale_bwd(v, scale) : ck_rescale_fwd(v, scale, offset));
    }
}

extern "C" int ck_cuda_rescale(const void *x, void *y, size_t count, float scale, float offset,
                               int backward, int dt, void *stream) {
    if (count == 0)
        return 0;
    const unsigned grid = ck_grid_for((long long)count, CK_BLOCK);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == CK_KDT_BF16)
        k_rescale<ck_st_bf16><<<grid, CK_BLOCK, 0, s>>>((const uint16_t *)x, (uint16_t *)y,
                                                        (long long)count, scale, offset, backward);
    else
        k_rescale<ck_st_f32><<<grid, CK_BLOCK, 0, s>>>((const float *)x, (float *)y,
                                                       (long long)count, scale, offset, backward);
    return ck_launch_status();
}
