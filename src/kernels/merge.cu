/*
 * The merge layers of graph models: the elementwise sum (Add's forward and the gradient sums of a
 * tensor read by several layers) and the channel slices of Concatenate.
 *
 * One thread per element in a grid-stride loop, one rounding per sum (the CPU's a[i] + b[i]) and
 * plain copies otherwise: bit-identical to the CPU and run to run. The bf16 sum moves 8 words
 * per 16-byte access when the three pointers allow (the count % 8 tail one by one).
 */
#include "common.cuh"

template <class S>
__global__ void k_add(typename S::T *dst, const typename S::T *a, const typename S::T *b,
                      long long count) {
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < count;
         t += (long long)gridDim.x * blockDim.x)
        S::st(dst, t, __fadd_rn(S::ld(a, t), S::ld(b, t)));
}

/* bf16, 8 words per access; each element as k_add. dst may alias a or b. */
__global__ void k_add_vec8(uint16_t *dst, const uint16_t *a, const uint16_t *b, long long count) {
    const long long octs = count / 8, tid = blockIdx.x * (long long)blockDim.x + threadIdx.x,
                    stride = (long long)gridDim.x * blockDim.x;
    for (long long o = tid; o < octs; o += stride) {
        float va[8], vb[8];
        ck_bf16x8_ld(a, o * 8, va);
        ck_bf16x8_ld(b, o * 8, vb);
#pragma unroll
        for (int j = 0; j < 8; ++j)
            va[j] = __fadd_rn(va[j], vb[j]);
        ck_bf16x8_st(dst, o * 8, va);
    }
    for (long long t = octs * 8 + tid; t < count; t += stride)
        ck_st_bf16::st(dst, t, __fadd_rn(ck_st_bf16::ld(a, t), ck_st_bf16::ld(b, t)));
}

extern "C" int ck_cuda_add(void *dst, const void *a, const void *b, size_t count, int dt,
                           void *stream) {
    if (count == 0)
        return 0;
    const unsigned grid = ck_grid_for((long long)count, CK_BLOCK);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == CK_KDT_BF16 && ck_aligned16(dst, a) && ck_aligned16(b, b))
        k_add_vec8<<<ck_grid_for((long long)count / 8 + 1, CK_BLOCK), CK_BLOCK, 0, s>>>(
            (uint16_t *)dst, (const uint16_t *)a, (const uint16_t *)b, (long long)count);
    else if (dt == CK_KDT_BF16)
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
