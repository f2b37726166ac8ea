/*
 * The merge layers of graph models: the elementwise sum (Add's forward and the gradient sums of a
 * tensor read by several layers) and the channel slices of Concatenate.
 *
 * One thread per element in a grid-stride loop, one rounding per sum (the CPU's a[i] + b[i]) and
 * plain copies otherwise: bit-identical to the CPU and run to run.
 */
#include "common.cuh"

__global__ void k_add(float *dst, const float *a, const float *b, long long count) {
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < count;
         t += (long long)gridDim.x * blockDim.x)
        dst[t] = __fadd_rn(a[t], b[t]);
}

extern "C" int ck_cuda_add(float *dst, const float *a, const float *b, size_t count, void *stream) {
    if (count == 0)
        return 0;
    k_add<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        dst, a, b, (long long)count);
    return ck_launch_status();
}

/* to_wide: wide[p][off + c] = narrow[p][c]; else narrow[p][c] = wide[p][off + c]. */
__global__ void k_channel_slice(float *wide, int wc, int off, float *narrow, int nc,
                                long long count, int to_wide) {
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < count;
         t += (long long)gridDim.x * blockDim.x) {
        const long long p = t / nc, w = p * wc + off + t % nc;
        if (to_wide)
            wide[w] = narrow[t];
        else
            narrow[t] = wide[w];
    }
}

extern "C" int ck_cuda_channel_slice(float *wide, int wc, int off, float *narrow, int nc,
                                     size_t pixels, int to_wide, void *stream) {
    const long long count = (long long)pixels * nc;
    if (count == 0)
        return 0;
    k_channel_slice<<<ck_grid_for(count, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        wide, wc, off, narrow, nc, count, to_wide);
    return ck_launch_status();
}
