/*
 * Bias add and the bias gradient's column sums (double partials merged in a fixed order).
 *
 * One family of the model's small GPU kernels (launchers declared in ck_kernels.h). Every kernel
 * writes each output element from one thread in a fixed order: no atomics, so results are
 * bit-identical run to run; per-element math comes from ck_math.h, shared with the CPU ops.
 */
#include "common.cuh"

/* ---- bias add and bias gradient (rows x c, row-major: NHWC activations, dense outputs) ----- */

/* y = y + bias in fp32, stored as S (bf16: rounded once, as the CPU twin's round after its
 * ck_cpu_bias_add) */
template <class S>
__global__ void k_bias_add(typename S::T *y, const float *bias, long long count, int c) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x)
        S::st(y, i, __fadd_rn(S::ld(y, i), bias[i % c]));
}

extern "C" int ck_cuda_bias_add(void *y, const float *bias, long long rows, int c, int dt,
                                void *stream) {
    const long long count = rows * c;
    const unsigned grid = ck_grid_for(count, CK_BLOCK);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == CK_KDT_BF16)
        k_bias_add<ck_st_bf16><<<grid, CK_BLOCK, 0, s>>>((uint16_t *)y, bias, count, c);
    else
        k_bias_add<ck_st_f32><<<grid, CK_BLOCK, 0, s>>>((float *)y, bias, count, c);
    return ck_launch_status();
}

/* Stage 1: partial column sums in double over row chunk y of `splits` chunks; block (32, 8): x
 * indexes 32 consecutive columns (coalesced), the 8 row phases are merged in a fixed order in
 * shared memory. Stage 2: one thread per column sums the chunk partials in order.
 * splits: about CK_COLSUM_BLOCKS blocks in all (enough loads in flight to stream a large
 * activation, e.g. batch 2048 x 26 x 26 x 32, at memory speed), at least 64 rows per chunk; a
 * function of (rows, c) only, so the sums are reproducible. */
#define CK_COLSUM_BLOCKS 1024

static long long colsum_max_splits(int c) {
    const long long tiles = (c + 31) / 32, s = CK_COLSUM_BLOCKS / tiles;
    return s < 1 ? 1 : s;
}

static int colsum_splits(long long rows, int c) {
    long long s = rows / 64;
    const long long most = colsum_max_splits(c);
    if (s > most)
        s = most;
    return (int)(s < 1 ? 1 : s);
}

template <class S>
__global__ void k_colsum_partial(const typename S::T *a, long long rows, int c, double *partials) {
    __shared__ double sh[8][32];
    const int col = blockIdx.x * 32 + threadIdx.x;
    const long long per = (rows + gridDim.y - 1) / gridDim.y;
    const long long r0 = blockIdx.y * per;
    long long r1 = r0 + per;
    if (r1 > rows)
        r1 = rows;
    double acc = 0.0;
    if (col < c)
        for (long long r = r0 + threadIdx.y; r < r1; r += 8)
            acc += S::ld(a, r * c + col);
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && col < c) {
        double t = 0.0;
        for (int k = 0; k < 8; ++k)
            t += sh[k][threadIdx.x];
        partials[(long long)blockIdx.y * c + col] = t;
    }
}

__global__ void k_colsum_final(const double *partials, int splits, int c, float *out) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= c)
        return;
    double t = 0.0;
    for (int k = 0; k < splits; ++k)
        t += partials[(long long)k * c + col];
    out[col] = (float)t;
}

extern "C" size_t ck_cuda_colsum_workspace_bytes(int c) {
    return (size_t)colsum_max_splits(c) * (size_t)c * sizeof(double);
}

extern "C" int ck_cuda_colsum(const void *a, long long rows, int c, int dt, float *out, void *ws,
                              void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    const int splits = colsum_splits(rows, c);
    dim3 block(32, 8), grid((unsigned)((c + 31) / 32), (unsigned)splits);
    if (dt == CK_KDT_BF16)
        k_colsum_partial<ck_st_bf16>
            <<<grid, block, 0, s>>>((const uint16_t *)a, rows, c, (double *)ws);
    else
        k_colsum_partial<ck_st_f32><<<grid, block, 0, s>>>((const float *)a, rows, c, (double *)ws);
    k_colsum_final<<<(unsigned)((c + 127) / 128), 128, 0, s>>>((const double *)ws, splits, c, out);
    return ck_launch_status();
}
