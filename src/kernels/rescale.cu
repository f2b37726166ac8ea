/*
 * Rescaling (keras.layers.Rescaling): y = x * scale + offset forward, dx = dy * scale backward.
 *
 * One thread per element in a grid-stride loop; the per-element math is ck_math.h's
 * ck_rescale_fwd / ck_rescale_bwd, the CPU op's own, so the two are bit-identical.
 */
#include "common.cuh"

/* no __restrict__: y may alias x (ck_kernels.h) */
__global__ void k_rescale(const float *x, float *y, long long count, float scale, float offset,
                          int backward) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = backward ? ck_rescale_bwd(x[i], scale) : ck_rescale_fwd(x[i], scale, offset);
}

extern "C" int ck_cuda_rescale(const float *x, float *y, size_t count, float scale, float offset,
                               int backward, void *stream) {
    if (count == 0)
        return 0;
    k_rescale<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        x, y, (long long)count, scale, offset, backward);
    return ck_launch_status();
}
