/* Tensor utility kernels: fill and layout conversion. */
#include "common.cuh"

__global__ void ck_fill_kernel(float *p, long long count, float value) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x)
        p[i] = value;
}

/* dst[n, p, c] (NHWC) <-> src[n, c, p] (NCHW), p = h * W + w, via 32x32 tiles in shared memory
 * so that both reads and writes are coalesced. blockIdx.z = n; the tile covers rows of the
 * source (a) and columns (b): NCHW->NHWC has a = c, b = p; NHWC->NCHW has a = p, b = c. */
template <class T> __global__ void ck_transpose_kernel(const T *src, T *dst, int rows, int cols) {
    __shared__ T tile[32][33];
    const long long plane = (long long)rows * cols;
    const T *s = src + blockIdx.z * plane;
    T *d = dst + blockIdx.z * plane;
    const int b0 = blockIdx.x * 32, a0 = blockIdx.y * 32;
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        int a = a0 + i, b = b0 + threadIdx.x;
        if (a < rows && b < cols)
            tile[i][threadIdx.x] = s[(long long)a * cols + b];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        int b = b0 + i, a = a0 + threadIdx.x;
        if (a < rows && b < cols)
            d[(long long)b * rows + a] = tile[threadIdx.x][i];
    }
}

extern "C" int ck_cuda_fill(float *p, size_t count, float value, void *stream) {
    ck_fill_kernel<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        p, (long long)count, value);
    return ck_launch_status();
}

/* x *= s: one fp32 multiply per element, as the CPU's loop (no FMA to contract) */
__global__ void ck_scale_kernel(float *x, long long count, float s) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(x[i], s);
}

extern "C" int ck_cuda_scale(float *x, size_t count, float s, void *stream) {
    if (!count)
        return 0;
    ck_scale_kernel<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        x, (long long)count, s);
    return ck_launch_status();
}

/* x[i] = src[perm[start + i]] row by row (per floats a row), labels the same way: the batch of
 * a device-resident dataset, as ck_dataset_gather builds it on the host (a copy: same bits) */
__global__ void ck_gather_rows_kernel(const float *src, const int32_t *src_labels,
                                      const int32_t *perm, int start, int n, long long per,
                                      float *x, int32_t *labels) {
    const long long total = (long long)n * per;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long row = i / per, k = perm[start + row];
        x[i] = src[k * per + (i - row * per)];
        if (labels && i - row * per == 0)
            labels[row] = src_labels[k];
    }
}

extern "C" int ck_cuda_gather_rows(const float *src, const int32_t *src_labels, const int32_t *perm,
                                   int start, int n, size_t per, float *x, int32_t *labels,
                                   void *stream) {
    const long long total = (long long)n * (long long)per;
    if (total <= 0)
        return 0;
    ck_gather_rows_kernel<<<ck_grid_for(total, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        src, src_labels, perm, start, n, (long long)per, x, labels);
    return ck_launch_status();
}

/* a copy: bf16 words (s.dt CK_KDT_BF16) are moved as they are */
extern "C" int ck_cuda_convert_layout(const void *src, void *dst, ck_kshape s, void *stream) {
    const int hw = s.h * s.w;
    /* source viewed per sample as a rows x cols matrix */
    const int rows = s.nhwc ? hw : s.c;
    const int cols = s.nhwc ? s.c : hw;
    dim3 block(32, 8);
    dim3 grid((cols + 31) / 32, (rows + 31) / 32, s.n);
    if (grid.y > 65535 || grid.z > 65535)
        return (int)cudaErrorInvalidConfiguration;
    if (s.dt == CK_KDT_BF16)
        ck_transpose_kernel<uint16_t><<<grid, block, 0, (cudaStream_t)stream>>>(
            (const uint16_t *)src, (uint16_t *)dst, rows, cols);
    else
        ck_transpose_kernel<float><<<grid, block, 0, (cudaStream_t)stream>>>(
            (const float *)src, (float *)dst, rows, cols);
    return ck_launch_status();
}
