/*
 * The small kernels of the model's GPU backend: activations, bias add and bias gradients,
 * pooling (the exact twin of ck_cpu_pool_*), global average pooling, softmax cross-entropy,
 * optimizer updates, conv-kernel layout transposes and zero padding. Convolutions run in cuDNN
 * and dense GEMMs in cuBLAS (src/host/cudnn_conv*.c, cublas_dense.c).
 *
 * Every kernel writes each output element from one thread in a fixed order: no atomics, so every
 * result is bit-identical run to run. The per-element math comes from ck_math.h, shared with the
 * CPU reference (src/host/cpu_layers.c); where a kernel mirrors a CPU loop operation by operation
 * (pooling, GAP, softmax cross-entropy, optimizers) the results are the CPU's bits.
 */
#include "common.cuh"

/* ---- activations ------------------------------------------------------------------------- */

/* no __restrict__: y may alias x (ck_kernels.h) */
__global__ void k_act_fwd(const float *x, float *y, long long count, int act, float alpha) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = ck_act_fwd_any(x[i], act, alpha);
}

__global__ void k_act_bwd(const float *x, const float *y, const float *dy, float *dx,
                          long long count, int act, float alpha) {
    const int ux = ck_act_bwd_uses_x(act), uy = ck_act_bwd_uses_y(act);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x)
        dx[i] = ck_act_bwd_any(dy[i], ux ? x[i] : 0.0f, uy ? y[i] : 0.0f, act, alpha);
}

/* Softmax over rows of c (one thread per row, the CPU loop's operations in its order). */
__global__ void k_softmax_fwd(const float *x, float *y, long long rows, int c) {
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows;
         r += (long long)gridDim.x * blockDim.x) {
        ck_softmax_row_fwd(x + r * c, y + r * c, c);
    }
}

__global__ void k_softmax_bwd(const float *y, const float *dy, float *dx, long long rows, int c) {
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows;
         r += (long long)gridDim.x * blockDim.x) {
        ck_softmax_row_bwd(y + r * c, dy + r * c, dx + r * c, c);
    }
}

extern "C" int ck_cuda_activation_forward(int act, float alpha, const float *x, float *y,
                                          size_t count, int c, void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    if (act == CK_ACT_SOFTMAX) {
        const long long rows = (long long)(count / (size_t)c);
        k_softmax_fwd<<<ck_grid_for(rows, CK_BLOCK), CK_BLOCK, 0, s>>>(x, y, rows, c);
    } else if (act == CK_ACT_NONE) {
        if (x != y)
            return (int)cudaMemcpyAsync(y, x, count * sizeof(float), cudaMemcpyDeviceToDevice, s);
        return 0;
    } else {
        k_act_fwd<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, s>>>(
            x, y, (long long)count, act, alpha);
    }
    return ck_launch_status();
}

extern "C" int ck_cuda_activation_backward(int act, float alpha, const float *x, const float *y,
                                           const float *dy, float *dx, size_t count, int c,
                                           void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    if (act == CK_ACT_SOFTMAX) {
        const long long rows = (long long)(count / (size_t)c);
        k_softmax_bwd<<<ck_grid_for(rows, CK_BLOCK), CK_BLOCK, 0, s>>>(y, dy, dx, rows, c);
    } else if (act == CK_ACT_NONE) {
        if (dx != dy)
            return (int)cudaMemcpyAsync(dx, dy, count * sizeof(float), cudaMemcpyDeviceToDevice, s);
        return 0;
    } else {
        k_act_bwd<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, s>>>(
            x, y, dy, dx, (long long)count, act, alpha);
    }
    return ck_launch_status();
}

/* ---- bias add and bias gradient (rows x c, row-major: NHWC activations, dense outputs) ----- */

__global__ void k_bias_add(float *y, const float *bias, long long count, int c) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x)
        y[i] += bias[i % c];
}

extern "C" int ck_cuda_bias_add(float *y, const float *bias, long long rows, int c, void *stream) {
    const long long count = rows * c;
    k_bias_add<<<ck_grid_for(count, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(y, bias, count,
                                                                                    c);
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

__global__ void k_colsum_partial(const float *a, long long rows, int c, double *partials) {
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
            acc += a[r * c + col];
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

extern "C" int ck_cuda_colsum(const float *a, long long rows, int c, float *out, void *ws,
                              void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    const int splits = colsum_splits(rows, c);
    dim3 block(32, 8), grid((unsigned)((c + 31) / 32), (unsigned)splits);
    k_colsum_partial<<<grid, block, 0, s>>>(a, rows, c, (double *)ws);
    k_colsum_final<<<(unsigned)((c + 127) / 128), 128, 0, s>>>((const double *)ws, splits, c, out);
    return ck_launch_status();
}

/* ---- pooling: the exact twin of ck_cpu_pool_forward / ck_cpu_pool_backward (NHWC) ---------- */

__global__ void k_pool_fwd(ck_conv_geom g, int is_max, const float *x, float *y) {
    const long long total = (long long)g.n * g.oh * g.ow * g.cin;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int c = (int)(t % g.cin);
        long long q = t / g.cin;
        const int j = (int)(q % g.ow);
        q /= g.ow;
        const int i = (int)(q % g.oh);
        const long long s = q / g.oh;
        int a0, a1, b0, b1;
        ck_pool_range(i, g.sh, g.kh, g.pad_top, g.h, &a0, &a1);
        ck_pool_range(j, g.sw, g.kw, g.pad_left, g.w, &b0, &b1);
        const float *xs = x + s * g.h * g.w * g.cin + c;
        float acc = xs[((long long)a0 * g.w + b0) * g.cin];
        for (int a = a0; a < a1; ++a)
            for (int b = (a == a0 ? b0 + 1 : b0); b < b1; ++b) {
                const float v = xs[((long long)a * g.w + b) * g.cin];
                acc = ck_pool_acc(acc, v, is_max);
            }
        if (!is_max)
            acc /= ck_pool_cells(a0, a1, b0, b1);
        y[t] = acc;
    }
}

/* One thread per input cell gathers the windows that contain it, in the CPU's (i, j) order. */
__global__ void k_pool_bwd(ck_conv_geom g, int is_max, const float *x, const float *dy, float *dx) {
    const long long total = (long long)g.n * g.h * g.w * g.cin;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int c = (int)(t % g.cin);
        long long q = t / g.cin;
        const int b = (int)(q % g.w);
        q /= g.w;
        const int a = (int)(q % g.h);
        const long long s = q / g.h;
        /* windows i with i*sh - pad_top <= a < i*sh - pad_top + kh */
        int i0 = a + g.pad_top - g.kh + 1;
        i0 = i0 <= 0 ? 0 : (i0 + g.sh - 1) / g.sh;
        int i1 = (a + g.pad_top) / g.sh;
        if (i1 > g.oh - 1)
            i1 = g.oh - 1;
        int j0 = b + g.pad_left - g.kw + 1;
        j0 = j0 <= 0 ? 0 : (j0 + g.sw - 1) / g.sw;
        int j1 = (b + g.pad_left) / g.sw;
        if (j1 > g.ow - 1)
            j1 = g.ow - 1;
        const float *xs = x + s * g.h * g.w * g.cin + c;
        const float *ds = dy + s * g.oh * g.ow * g.cin + c;
        float acc = 0.0f;
        for (int i = i0; i <= i1; ++i)
            for (int j = j0; j <= j1; ++j) {
                int a0, a1, b0, b1;
                ck_pool_range(i, g.sh, g.kh, g.pad_top, g.h, &a0, &a1);
                ck_pool_range(j, g.sw, g.kw, g.pad_left, g.w, &b0, &b1);
                const float d = ds[((long long)i * g.ow + j) * g.cin];
                if (is_max) {
                    int ba, bb;
                    ck_pool_argmax(xs, g.w, g.cin, a0, a1, b0, b1, &ba, &bb);
                    if (ba == a && bb == b)
                        acc += d;
                } else {
                    acc += d / ck_pool_cells(a0, a1, b0, b1);
                }
            }
        dx[t] = acc;
    }
}

extern "C" int ck_cuda_pool_forward(ck_conv_geom g, int is_max, const float *x, float *y,
                                    void *stream) {
    const long long total = (long long)g.n * g.oh * g.ow * g.cin;
    k_pool_fwd<<<ck_grid_for(total, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(g, is_max, x,
                                                                                    y);
    return ck_launch_status();
}

extern "C" int ck_cuda_pool_backward(ck_conv_geom g, int is_max, const float *x, const float *dy,
                                     float *dx, void *stream) {
    const long long total = (long long)g.n * g.h * g.w * g.cin;
    k_pool_bwd<<<ck_grid_for(total, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(g, is_max, x,
                                                                                    dy, dx);
    return ck_launch_status();
}

/* ---- GlobalAveragePooling2D ---------------------------------------------------------------- */

__global__ void k_gap_fwd(int n, int hw, int c, const float *x, float *y) {
    const long long total = (long long)n * c;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long s = t / c;
        const int ch = (int)(t % c);
        const float *xs = x + s * hw * c + ch;
        double acc = 0.0;
        for (int p = 0; p < hw; ++p)
            acc += xs[(long long)p * c];
        y[t] = (float)(acc / hw);
    }
}

__global__ void k_gap_bwd(int n, int hw, int c, const float *dy, float *dx) {
    const long long total = (long long)n * hw * c;
    const float den = (float)hw;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x)
        dx[t] = dy[(t / ((long long)hw * c)) * c + t % c] / den;
}

extern "C" int ck_cuda_gap_forward(int n, int hw, int c, const float *x, float *y, void *stream) {
    k_gap_fwd<<<ck_grid_for((long long)n * c, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        n, hw, c, x, y);
    return ck_launch_status();
}

extern "C" int ck_cuda_gap_backward(int n, int hw, int c, const float *dy, float *dx,
                                    void *stream) {
    k_gap_bwd<<<ck_grid_for((long long)n * hw * c, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        n, hw, c, dy, dx);
    return ck_launch_status();
}

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

/* ---- optimizers ------------------------------------------------------------------------------ */

/* A failed step (non-finite gradients or loss, see ck_kernels.h) updates nothing. */
__device__ __forceinline__ bool ck_step_failed(const ck_kloss *guard) {
    return guard && (guard->nonfinite || !isfinite(guard->loss_sum));
}

__global__ void k_adam(float *p, const float *g, float *m, float *v, long long count, float alpha,
                       float b1, float b2, float c1, float c2, float eps, float decay,
                       const ck_kloss *guard) {
    if (ck_step_failed(guard))
        return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x) {
        float mi = m[i], vi = v[i];
        p[i] = ck_adam_elem(p[i], g[i], &mi, &vi, alpha, b1, b2, c1, c2, eps, decay);
        m[i] = mi;
        v[i] = vi;
    }
}

__global__ void k_sgd(float *p, const float *g, float *vel, long long count, float lr,
                      float momentum, int nesterov, float decay, const ck_kloss *guard) {
    if (ck_step_failed(guard))
        return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x) {
        if (vel) {
            float vi = vel[i];
            p[i] = ck_sgd_elem(p[i], g[i], &vi, lr, momentum, nesterov, decay);
            vel[i] = vi;
        } else {
            p[i] = ck_sgd_elem(p[i], g[i], NULL, lr, momentum, nesterov, decay);
        }
    }
}

extern "C" int ck_cuda_adam(float *p, const float *g, float *m, float *v, size_t count, float alpha,
                            float beta1, float beta2, float eps, float decay, const ck_kloss *guard,
                            void *stream) {
    k_adam<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        p, g, m, v, (long long)count, alpha, beta1, beta2, 1.0f - beta1, 1.0f - beta2, eps, decay,
        guard);
    return ck_launch_status();
}

extern "C" int ck_cuda_sgd(float *p, const float *g, float *vel, size_t count, float lr,
                           float momentum, int nesterov, float decay, const ck_kloss *guard,
                           void *stream) {
    k_sgd<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        p, g, vel, (long long)count, lr, momentum, nesterov, decay, guard);
    return ck_launch_status();
}

__global__ void k_flag_nonfinite(const float *p, long long count, int *flag) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x)
        if (!isfinite(p[i]))
            *flag = 1;
}

extern "C" int ck_cuda_flag_nonfinite(const float *p, size_t count, int *flag, void *stream) {
    if (count == 0)
        return 0;
    k_flag_nonfinite<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0,
                       (cudaStream_t)stream>>>(p, (long long)count, flag);
    return ck_launch_status();
}

/* ---- conv kernel layouts: Keras HWIO (kh, kw, cin, cout) <-> cuDNN's filter layouts: KRSC
 *      (cout, kh, kw, cin; NHWC convolutions) or KCRS (cout, cin, kh, kw; the NCHW fallback) -- */

__global__ void k_hwio_filter(const float *src, float *dst, int khw, int cin, int cout,
                              int to_cudnn, int kcrs) {
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
            dst[f] = src[t];
        else
            dst[t] = src[f];
    }
}

extern "C" int ck_cuda_conv_kernel_layout(const float *src, float *dst, int khw, int cin, int cout,
                                          int to_cudnn, int kcrs, void *stream) {
    const long long total = (long long)khw * cin * cout;
    k_hwio_filter<<<ck_grid_for(total, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        src, dst, khw, cin, cout, to_cudnn, kcrs);
    return ck_launch_status();
}

/* ---- explicit zero padding (asymmetric 'same' padding cuDNN cannot express) ----------------- */

/* pad: dst (n, h + pt + pb, w + pl + pr, c) = src placed at (pt, pl), zeros around.
 * crop (the backward): dst (n, h, w, c) = the (pt, pl) window of src. */
__global__ void k_pad(const float *src, float *dst, int n, int h, int w, int c, int pt, int pl,
                      int hp, int wp, int crop) {
    const long long total = crop ? (long long)n * h * w * c : (long long)n * hp * wp * c;
    const int oh = crop ? h : hp, ow = crop ? w : wp;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int ch = (int)(t % c);
        long long q = t / c;
        const int j = (int)(q % ow);
        q /= ow;
        const int i = (int)(q % oh);
        const long long s = q / oh;
        if (crop) {
            dst[t] = src[((s * hp + i + pt) * wp + j + pl) * c + ch];
        } else {
            const int a = i - pt, b = j - pl;
            dst[t] =
                (a >= 0 && a < h && b >= 0 && b < w) ? src[((s * h + a) * w + b) * c + ch] : 0.0f;
        }
    }
}

extern "C" int ck_cuda_pad_nhwc(const float *src, float *dst, int n, int h, int w, int c, int pt,
                                int pl, int hp, int wp, int crop, void *stream) {
    const long long total = crop ? (long long)n * h * w * c : (long long)n * hp * wp * c;
    k_pad<<<ck_grid_for(total, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        src, dst, n, h, w, c, pt, pl, hp, wp, crop);
    return ck_launch_status();
}
