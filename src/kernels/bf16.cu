/* bf16 storage kernels (issue 16): round in place, pack to 16-bit storage and unpack. The
 * per-element math is ck_math.h's integer rounding, so results equal src/host/bf16.c bit for bit.
 */
#include "common.cuh"

__global__ void ck_bf16_round_kernel(float *x, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        x[i] = ck_bf16_round(x[i]);
}

__global__ void ck_bf16_pack_kernel(const float *src, uint16_t *dst, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        dst[i] = ck_bf16_bits(src[i]);
}

__global__ void ck_bf16_unpack_kernel(const uint16_t *src, float *dst, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        dst[i] = ck_bf16_to_float(src[i]);
}

extern "C" int ck_cuda_bf16_round(float *x, size_t count, void *stream) {
    if (count == 0)
        return 0;
    ck_bf16_round_kernel<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0,
                           (cudaStream_t)stream>>>(x, (long long)count);
    return ck_launch_status();
}

extern "C" int ck_cuda_bf16_pack(const float *src, uint16_t *dst, size_t count, void *stream) {
    if (count == 0)
        return 0;
    ck_bf16_pack_kernel<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0,
                          (cudaStream_t)stream>>>(src, dst, (long long)count);
    return ck_launch_status();
}

extern "C" int ck_cuda_bf16_unpack(const uint16_t *src, float *dst, size_t count, void *stream) {
    if (count == 0)
        return 0;
    ck_bf16_unpack_kernel<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0,
                            (cudaStream_t)stream>>>(src, dst, (long long)count);
    return ck_launch_status();
}
