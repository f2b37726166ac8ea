/*
 * The merge layers of graph models: the elementwise sum (Add's forward and the gradient sums of a
 * tensor read by several layers) and the channel slices of Concatenate.
 *
 * One thread per element in a grid-stride loop, one rounding per sum (the CPU's a[i] + b[i]) and
 * plain copies otherwise: bit-identical to the CPU and run to run.
 */
#include "common.cuh"

template <class S>
__global__ void k_add(typename S::T *dst, const typename S::T *a, const typename S::T *b,
                      long long count) {
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < count;
         t += (long long)gridDim.x * blockDim.x)
        S::st(dst, t, __fadd_rn(S::ld(a, t), S::ld(b, t)));
}

extern "C" int ck_cuda_add(void *dst, const void *a, const void *b, size_t count, int dt,
                           void *stream) {
    if (count == 0)
        return 0;
    const unsigned grid = ck_grid_for((long long)count, CK_BLOCK);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == CK_KDT_BF16)
        k_add<ck_st_bf16><<<grid, CK_BLOCK, 0, s>>>((uint16_t *)dst, (const uint16_t *)a,
                                                    (const uint16_t *)b, (long long)count);
    else
        k_add<ck_st_f32><<<grid, CK_BLOCK, 0, s>>>((float *)dst, (const float *)a, (const float *)b,
                                                   (long long)count);
    return ck_launch_status();
}

/* to_wide: wide[p][off + c] = narrow[p][c]; else narrow[p][c] = wide[p][off + c]. A pure move:
 * T is the storage word (float or the bf16 word), no widening needed. */
template <class T>
__global__ void k_channel_slice(T *wide, int wc, int off, T *narrow, int nc, long long count,
                                int to_wide) {
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < count;
         t += (long long)gridDim.x * blockDim.x) {
        const long long p = t / nc, w = p * wc + off + t % nc;
        if (to_wide)
            wide[w] = narrow[t];
        else
            narrow[t] = wide[w];
    }
}

extern "C" int ck_cuda_channel_slice(void *wide, int wc, int off, void *narrow, int nc,
                                     size_t pixels, int to_wide, int dt, void *stream) {
    const long long count = (long long)pixels * nc;
    if (count == 0)
        return 0;
    const unsigned grid = ck_grid_for(count, CK_BLOCK);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == CK_KDT_BF16)
        k_channel_slice<uint16_t><<<grid, CK_BLOCK, 0, s>>>((uint16_t *)wide, wc, off,
                                                            (uint16_t *)narrow, nc, count, to_wide);
    else
        k_channel_slice<float>
            <<<grid, CK_BLOCK, 0, s>>>((float *)wide, wc, off, (float *)narrow, nc, count, to_wide);
    return ck_launch_status();
}
