/*
 * Fused softmax cross-entropy from logits: ck_cpu_softmax_xent's operations.
 *
 * One family of the model's small GPU kernels (launchers declared in ck_kernels.h). Every kernel
 * writes each output element from one thread in a fixed order: no atomics, so results are
 * bit-identical run to run; per-element math comes from ck_math.h, shared with the CPU ops.
 */
#include "common.cuh"

/* ---- softmax cross-entropy (fused, from logits): ck_cpu_softmax_xent's operations ----------- */

__global__ void k_softmax_xent(int n, int classes, const float *logits, const int32_t *labels,
                               float *dlogits, double *loss, int *hit) {
    const double invn = 1.0 / n;
    for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < n; s += gridDim.x * blockDim.x) {
        int h;
        loss[s] = ck_xent_row(logits + (long long)s * classes, classes, labels[s], invn,
                              dlogits ? dlogits + (long long)s * classes : NULL, &h);
        hit[s] = h;
    }
}

/* The batch totals in one block: thread t sums samples t, t + T, t + 2T, ... in order, then a
 * fixed binary tree in shared memory merges the T partials. The order depends on n alone, so
 * every run gives the same bits (no atomics); it differs from the CPU's sample-order sum only by
 * double rounding. */
#define CK_XENT_THREADS 256

__global__ void __launch_bounds__(CK_XENT_THREADS)
    k_xent_total(int n, const double *loss, const int *hit, ck_kloss *out) {
    __shared__ double sl[CK_XENT_THREADS];
    __shared__ int sh[CK_XENT_THREADS];
    const int t = threadIdx.x;
    double l = 0.0;
    int h = 0;
    for (int s = t; s < n; s += CK_XENT_THREADS) {
        l += loss[s];
        h += hit[s];
    }
    sl[t] = l;
    sh[t] = h;
    __syncthreads();
    for (int w = CK_XENT_THREADS / 2; w > 0; w >>= 1) {
        if (t < w) {
            sl[t] += sl[t + w];
            sh[t] += sh[t + w];
        }
        __syncthreads();
    }
    if (t == 0) {
        out->loss_sum = sl[0];
        out->correct = sh[0];
    }
}

extern "C" size_t ck_cuda_xent_workspace_bytes(int n) {
    return (size_t)n * (sizeof(double) + sizeof(int));
}

extern "C" int ck_cuda_softmax_xent(int n, int classes, const float *logits, const int32_t *labels,
                                    float *dlogits, ck_kloss *out, void *ws, void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    double *loss = (double *)ws;
    int *hit = (int *)(loss + n);
    k_softmax_xent<<<ck_grid_for(n, 128), 128, 0, s>>>(n, classes, logits, labels, dlogits, loss,
                                                       hit);
    k_xent_total<<<1, CK_XENT_THREADS, 0, s>>>(n, loss, hit, out);
    return ck_launch_status();
}
