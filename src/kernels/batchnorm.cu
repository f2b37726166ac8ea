/* BatchNorm + ReLU (+ fused SpatialDropout scale), training forward, inference and backward.
 *
 * Training forward = 3 passes: (1) partial Welford statistics per (channel, split) — the reduction
 * over N*H*W is split so that even C = 32 fills the GPU; (2) one warp per channel merges the
 * partials with Chan's formula in a fixed order (deterministic: no float atomics), updates the
 * running statistics and writes the per-channel affine coefficients; (3) the element-wise apply.
 * Backward mirrors it: partial sums of g and g*xhat, fixed-order merge, element-wise dx.
 * Per-element math comes from ck_math.h, shared with the CPU reference.
 * x, y, dy and dx are templated on the storage (ck_st_f32 / ck_st_bf16): widened on load, one
 * rounding per bf16 store; gamma, beta, statistics and partials stay fp32 / double. The bf16
 * element-wise passes (forward and backward apply) move 8 words per 16-byte access where the
 * layout allows, with the scalar kernels' per-element arithmetic; the reductions load one word
 * at a time (their summation order is tied to one element per thread). */
#include "common.cuh"

/* A read-only load through the texture path, widened to float. */
template <class S> __device__ __forceinline__ float ck_bn_ldg(const typename S::T *p, long long i);
template <> __device__ __forceinline__ float ck_bn_ldg<ck_st_f32>(const float *p, long long i) {
    return __ldg(p + i);
}
template <> __device__ __forceinline__ float ck_bn_ldg<ck_st_bf16>(const uint16_t *p, long long i) {
    return ck_bf16_to_float(__ldg(p + i));
}

#define CK_WARPS (CK_BLOCK / 32)

/* ---- block-level reductions in a fixed order ------------------------------------------------- */

/* Chan's merge in double: partial means rounded to float would lose the spread when
 * |mean| / std is large (1000 + 0.01 * U: 1e-4 relative error in invstd). */
__device__ __forceinline__ void ck_welford_merge_d(double &n, double &mean, double &m2, double nb,
                                                   double meanb, double m2b) {
    if (nb == 0.0)
        return;
    if (n == 0.0) {
        n = nb, mean = meanb, m2 = m2b;
        return;
    }
    const double nt = n + nb, delta = meanb - mean, fb = nb / nt;
    mean += delta * fb;
    m2 += m2b + delta * delta * n * fb;
    n = nt;
}

__device__ __forceinline__ void ck_warp_welford(double &n, double &mean, double &m2) {
    for (int o = 16; o > 0; o >>= 1) {
        double nb = __shfl_down_sync(0xffffffffu, n, o);
        double mb = __shfl_down_sync(0xffffffffu, mean, o);
        double m2b = __shfl_down_sync(0xffffffffu, m2, o);
        ck_welford_merge_d(n, mean, m2, nb, mb, m2b);
    }
}

template <typename T> __device__ __forceinline__ void ck_warp_sum2(T &a, T &b) {
    for (int o = 16; o > 0; o >>= 1) {
        a += __shfl_down_sync(0xffffffffu, a, o);
        b += __shfl_down_sync(0xffffffffu, b, o);
    }
}

/* A thread's own values accumulate in double: in float, once |v - mean| / n drops below half an
 * ulp of mean the mean stops moving (|mean| / std above ~2^23 / values per thread, e.g. ~2e4 at
 * batch 2048 x 28 x 28), and m2 then sums squares around a stale mean. The merges stay in double
 * too (see ck_welford_merge_d). */
__device__ __forceinline__ void ck_welford_add(double &n, double &mean, double &m2, float v) {
    n += 1.0;
    const double d = (double)v - mean;
    mean += d / n;
    m2 += d * ((double)v - mean);
}

/* ---- per-(n, c) SpatialDropout scales (fused path) ------------------------------------------ */

__global__ void ck_sd_scales_kernel(float *scales, long long units, uint64_t seed, ck_koffset ko,
                                    uint64_t u0, uint32_t thr, float scale) {
    const uint64_t offset = ck_koffset_get(ko);
    for (long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x; g < units;
         g += (long long)gridDim.x * blockDim.x)
        scales[g] = ck_spatial_keep(seed, offset, thr, u0 + (uint64_t)g) ? scale : 0.0f;
}

/* ---- statistics partials --------------------------------------------------------------------- */

/* NCHW: block (split s, channel c) takes samples [n0, n1) of channel c. */
template <class S>
__global__ void ck_bn_stats_nchw(const typename S::T *x, ck_kshape s, int splits, int vec,
                                 double *partials) {
    const int c = blockIdx.y, sp = blockIdx.x;
    const int per = (s.n + splits - 1) / splits;
    const int n0 = sp * per, n1 = min(s.n, n0 + per);
    const int hw = s.h * s.w;
    double nd = 0.0, md = 0.0, m2d = 0.0;
    if (n0 < n1) {
        if (vec && (hw & 3) == 0) { /* vec: x 16-byte aligned */
            const int hw4 = hw >> 2;
            const long long total = (long long)(n1 - n0) * hw4;
            for (long long j = threadIdx.x; j < total; j += blockDim.x) {
                const int ns = n0 + (int)(j / hw4), p4 = (int)(j % hw4);
                const float4 v = reinterpret_cast<const float4 *>(
                    reinterpret_cast<const float *>(x) + ((long long)ns * s.c + c) * hw)[p4];
                ck_welford_add(nd, md, m2d, v.x);
                ck_welford_add(nd, md, m2d, v.y);
                ck_welford_add(nd, md, m2d, v.z);
                ck_welford_add(nd, md, m2d, v.w);
            }
        } else {
            const long long total = (long long)(n1 - n0) * hw;
            for (long long j = threadIdx.x; j < total; j += blockDim.x) {
                const int ns = n0 + (int)(j / hw), p = (int)(j % hw);
                ck_welford_add(nd, md, m2d, S::ld(x, ((long long)ns * s.c + c) * hw + p));
            }
        }
    }
    double n = nd, mean = md, m2 = m2d;
    __shared__ double sh[3][CK_WARPS];
    ck_warp_welford(n, mean, m2);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sh[0][warp] = n;
        sh[1][warp] = mean;
        sh[2][warp] = m2;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double bn = sh[0][0], bm = sh[1][0], bm2 = sh[2][0];
        for (int wi = 1; wi < CK_WARPS; ++wi)
            ck_welford_merge_d(bn, bm, bm2, sh[0][wi], sh[1][wi], sh[2][wi]);
        double *p = partials + 3 * ((long long)c * splits + sp);
        p[0] = bn;
        p[1] = bm;
        p[2] = bm2;
    }
}

/* NHWC: block (channel tile, split) with threads (32 channels) x (8 rows); rows = pixels. */
template <class S>
__global__ void ck_bn_stats_nhwc(const typename S::T *x, ck_kshape s, int splits,
                                 double *partials) {
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * 32 + tx, sp = blockIdx.y;
    const long long rows = (long long)s.n * s.h * s.w;
    const long long per = (rows + splits - 1) / splits;
    const long long r0 = sp * per, r1 = min(rows, r0 + per);
    double nd = 0.0, md = 0.0, m2d = 0.0;
    if (c < s.c) {
        const long long step = blockDim.y;
        long long r = r0 + ty;
        /* 8 loads in flight before the serial updates (one 4-byte load per thread at a time
         * cannot keep HBM busy); the values are taken in the same order as one by one */
        for (; r + 7 * step < r1; r += 8 * step) {
            float v[8];
#pragma unroll
            for (int u = 0; u < 8; ++u)
                v[u] = ck_bn_ldg<S>(x, (r + u * step) * s.c + c);
#pragma unroll
            for (int u = 0; u < 8; ++u)
                ck_welford_add(nd, md, m2d, v[u]);
        }
        for (; r < r1; r += step)
            ck_welford_add(nd, md, m2d, ck_bn_ldg<S>(x, r * s.c + c));
    }
    double n = nd, mean = md, m2 = m2d;
    __shared__ double sh[3][8][33];
    sh[0][ty][tx] = n;
    sh[1][ty][tx] = mean;
    sh[2][ty][tx] = m2;
    __syncthreads();
    if (ty == 0 && c < s.c) {
        for (int k = 1; k < (int)blockDim.y; ++k)
            ck_welford_merge_d(n, mean, m2, sh[0][k][tx], sh[1][k][tx], sh[2][k][tx]);
        double *p = partials + 3 * ((long long)c * splits + sp);
        p[0] = n;
        p[1] = mean;
        p[2] = m2;
    }
}

/* Channel c's saved statistics, running statistics (unless frozen) and the coefficients a, b of
 * y = act(x * a + b), from its moments (n, mean, m2). One thread. */
__device__ __forceinline__ void ck_bn_finalize_channel(const ck_kbn &p, int c, bool frozen,
                                                       double n, double mean, double m2,
                                                       const float *gamma, const float *beta,
                                                       float *running_mean, float *running_var,
                                                       float *saved_mean, float *saved_invstd) {
    float mean_f, invstd;
    if (frozen) {
        mean_f = running_mean[c];
        invstd = ck_bn_invstd(running_var[c], p.bn.epsilon);
    } else {
        const float var = (float)(m2 / n);
        mean_f = (float)mean;
        invstd = ck_bn_invstd(var, p.bn.epsilon);
        const float vrun = p.bn.unbiased_running_var ? (float)(m2 / (n - 1.0)) : var;
        running_mean[c] = ck_running_update(running_mean[c], mean_f, p.bn.average_factor);
        running_var[c] = ck_running_update(running_var[c], vrun, p.bn.average_factor);
    }
    saved_mean[c] = mean_f;
    saved_invstd[c] = invstd;
    const float a = ck_bn_scale(gamma[c], invstd);
    p.coef[4 * c + 0] = a;
    p.coef[4 * c + 1] = mean_f;
    p.coef[4 * c + 2] = beta[c];
    /* unused, but the apply kernels load the four as one float4: an unwritten lane is an
     * uninitialized read (compute-sanitizer initcheck) */
    p.coef[4 * c + 3] = 0.0f;
}

/* One warp: channel c's partials merged in a fixed order (lanes, then the warp). */
__device__ __forceinline__ void ck_bn_merge_partials(const ck_kbn &p, int c, int lane, double &n,
                                                     double &mean, double &m2) {
    n = 0.0, mean = 0.0, m2 = 0.0;
    const double *part = p.partials + 3 * (long long)c * p.splits;
    for (int k = lane; k < p.splits; k += 32)
        ck_welford_merge_d(n, mean, m2, part[3 * k], part[3 * k + 1], part[3 * k + 2]);
    ck_warp_welford(n, mean, m2);
}

/* One warp per channel: merge the partials in a fixed order, update running stats, write the
 * saved statistics and the coefficients. */
__global__ void ck_bn_finalize_forward(ck_kbn p, const float *gamma, const float *beta,
                                       float *running_mean, float *running_var, float *saved_mean,
                                       float *saved_invstd) {
    const int c = blockIdx.x, lane = threadIdx.x;
    double n = 0.0, mean = 0.0, m2 = 0.0;
    if (!p.frozen)
        ck_bn_merge_partials(p, c, lane, n, mean, m2);
    if (lane == 0)
        ck_bn_finalize_channel(p, c, p.frozen != 0, n, mean, m2, gamma, beta, running_mean,
                               running_var, saved_mean, saved_invstd);
}

/* SyncBatchNormalization, forward: this rank's moments per channel (n, mean, m2), merged as the
 * finalize above merges them, for the exchange between the ranks. */
__global__ void ck_bn_local_moments(ck_kbn p, double *local) {
    const int c = blockIdx.x, lane = threadIdx.x;
    double n, mean, m2;
    ck_bn_merge_partials(p, c, lane, n, mean, m2);
    if (lane == 0) {
        local[3 * c + 0] = n;
        local[3 * c + 1] = mean;
        local[3 * c + 2] = m2;
    }
}

/* ... then every rank's moments merged in rank order (Chan's formula: the same bits on every
 * rank; one rank gives its own moments unchanged, so the finalize equals the local one). A
 * global batch of one value per channel normalizes as the desc says, as the CPU's. */
__global__ void ck_bn_finalize_forward_sync(ck_kbn p, const double *all, const float *gamma,
                                            const float *beta, float *running_mean,
                                            float *running_var, float *saved_mean,
                                            float *saved_invstd) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= p.s.c)
        return;
    double n = 0.0, mean = 0.0, m2 = 0.0;
    for (int r = 0; r < p.ranks; ++r) {
        const double *m = all + 3 * ((long long)r * p.s.c + c);
        ck_welford_merge_d(n, mean, m2, m[0], m[1], m[2]);
    }
    const bool frozen = p.frozen != 0 || ck_bn_single_value_frozen(&p.bn, n);
    ck_bn_finalize_channel(p, c, frozen, n, mean, m2, gamma, beta, running_mean, running_var,
                           saved_mean, saved_invstd);
}

/* ---- element-wise forward ------------------------------------------------------------------ */

/* y = act((x - mean[c]) * a[c] + beta[c]) * sd[n, c]; coef: 4 floats per channel
 * (a, mean, beta, 0);
 * sd may be NULL. Vector path when 4 consecutive elements share (n, c) (NCHW, HW % 4 == 0) or
 * are 4 consecutive channels of one pixel (NHWC, C % 4 == 0). */
__global__ void ck_bn_apply_vec(const float4 *x, float4 *y, long long quads, ck_kshape s,
                                const float *coef, const float *sd, int act) {
    const long long hw = (long long)s.h * s.w;
    for (long long q = blockIdx.x * (long long)blockDim.x + threadIdx.x; q < quads;
         q += (long long)gridDim.x * blockDim.x) {
        const long long e = q * 4;
        float4 v = x[q];
        if (!s.nhwc) {
            const long long plane = e / hw;
            const int c = (int)(plane % s.c);
            const float4 k = reinterpret_cast<const float4 *>(coef)[c];
            const float m = sd ? sd[plane] : 1.0f;
            v.x = ck_act_forward(ck_bn_preact(v.x, k.y, k.x, k.z), act) * m;
            v.y = ck_act_forward(ck_bn_preact(v.y, k.y, k.x, k.z), act) * m;
            v.z = ck_act_forward(ck_bn_preact(v.z, k.y, k.x, k.z), act) * m;
            v.w = ck_act_forward(ck_bn_preact(v.w, k.y, k.x, k.z), act) * m;
        } else {
            const int c = (int)(e % s.c);
            const long long g = (e / (hw * s.c)) * s.c + c;
            const float4 ab0 = reinterpret_cast<const float4 *>(coef)[c];
            const float4 ab1 = reinterpret_cast<const float4 *>(coef)[c + 1];
            const float4 ab2 = reinterpret_cast<const float4 *>(coef)[c + 2];
            const float4 ab3 = reinterpret_cast<const float4 *>(coef)[c + 3];
            float4 m = make_float4(1.0f, 1.0f, 1.0f, 1.0f);
            if (sd)
                m = reinterpret_cast<const float4 *>(sd)[g >> 2];
            v.x = ck_act_forward(ck_bn_preact(v.x, ab0.y, ab0.x, ab0.z), act) * m.x;
            v.y = ck_act_forward(ck_bn_preact(v.y, ab1.y, ab1.x, ab1.z), act) * m.y;
            v.z = ck_act_forward(ck_bn_preact(v.z, ab2.y, ab2.x, ab2.z), act) * m.z;
            v.w = ck_act_forward(ck_bn_preact(v.w, ab3.y, ab3.x, ab3.z), act) * m.w;
        }
        y[q] = v;
    }
}

/* bf16, 8 words per 16-byte access: 8 elements of one (n, c) plane (NCHW, HW % 8 == 0) or 8
 * consecutive channels of one pixel (NHWC, C % 8 == 0); each element as ck_bn_apply_scalar. */
__global__ void ck_bn_apply_vec8(const uint16_t *x, uint16_t *y, long long octs, ck_kshape s,
                                 const float *coef, const float *sd, int act) {
    const long long hw = (long long)s.h * s.w;
    for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < octs;
         o += (long long)gridDim.x * blockDim.x) {
        const long long e = o * 8;
        float v[8];
        ck_bf16x8_ld(x, e, v);
        if (!s.nhwc) {
            const long long plane = e / hw;
            const int c = (int)(plane % s.c);
            const float4 k = reinterpret_cast<const float4 *>(coef)[c];
            const float m = sd ? sd[plane] : 1.0f;
#pragma unroll
            for (int j = 0; j < 8; ++j)
                v[j] = ck_act_forward(ck_bn_preact(v[j], k.y, k.x, k.z), act) * m;
        } else {
            const int c = (int)(e % s.c);
            const long long g = (e / (hw * s.c)) * s.c + c;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const float4 k = reinterpret_cast<const float4 *>(coef)[c + j];
                const float m = sd ? sd[g + j] : 1.0f;
                v[j] = ck_act_forward(ck_bn_preact(v[j], k.y, k.x, k.z), act) * m;
            }
        }
        ck_bf16x8_st(y, e, v);
    }
}

template <class S>
__global__ void ck_bn_apply_scalar(const typename S::T *x, typename S::T *y, long long count,
                                   ck_kshape s, const float *coef, const float *sd, int act) {
    const long long hw = (long long)s.h * s.w;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < count;
         e += (long long)gridDim.x * blockDim.x) {
        int c;
        long long g;
        if (s.nhwc) {
            c = (int)(e % s.c);
            g = (e / (hw * s.c)) * s.c + c;
        } else {
            g = e / hw;
            c = (int)(g % s.c);
        }
        const float m = sd ? sd[g] : 1.0f;
        const float4 k = reinterpret_cast<const float4 *>(coef)[c];
        S::st(y, e, ck_act_forward(ck_bn_preact(S::ld(x, e), k.y, k.x, k.z), act) * m);
    }
}

static bool ck_bn_vec_ok(ck_kshape s, const void *a, const void *b) {
    const long long hw = (long long)s.h * s.w;
    return ck_aligned16(a, b) && (s.nhwc ? (s.c % 4 == 0) : (hw % 4 == 0));
}

/* bf16: 8 words per access, each group of 8 within one plane (NCHW) or one pixel (NHWC). */
static bool ck_bn_vec8_ok(ck_kshape s, const void *a, const void *b) {
    const long long hw = (long long)s.h * s.w;
    return ck_aligned16(a, b) && (s.nhwc ? (s.c % 8 == 0) : (hw % 8 == 0));
}

static void ck_bn_launch_apply(const void *x, void *y, ck_kshape s, const float *coef,
                               const float *sd, int act, cudaStream_t st) {
    const long long count = (long long)s.n * s.c * s.h * s.w;
    if (s.dt == CK_KDT_BF16 && ck_bn_vec8_ok(s, x, y)) {
        ck_bn_apply_vec8<<<ck_grid_for(count / 8, CK_BLOCK), CK_BLOCK, 0, st>>>(
            (const uint16_t *)x, (uint16_t *)y, count / 8, s, coef, sd, act);
    } else if (s.dt == CK_KDT_BF16) {
        ck_bn_apply_scalar<ck_st_bf16><<<ck_grid_for(count, CK_BLOCK), CK_BLOCK, 0, st>>>(
            (const uint16_t *)x, (uint16_t *)y, count, s, coef, sd, act);
    } else if (ck_bn_vec_ok(s, x, y)) {
        ck_bn_apply_vec<<<ck_grid_for(count / 4, CK_BLOCK), CK_BLOCK, 0, st>>>(
            (const float4 *)x, (float4 *)y, count / 4, s, coef, sd, act);
    } else {
        ck_bn_apply_scalar<ck_st_f32><<<ck_grid_for(count, CK_BLOCK), CK_BLOCK, 0, st>>>(
            (const float *)x, (float *)y, count, s, coef, sd, act);
    }
}

static void ck_bn_launch_stats(const ck_kbn *p, const void *x, cudaStream_t st) {
    const bool bf = p->s.dt == CK_KDT_BF16;
    if (!p->s.nhwc) {
        dim3 grid(p->splits, p->s.c);
        if (bf) /* vec 0: the float4 path is fp32 storage's */
            ck_bn_stats_nchw<ck_st_bf16>
                <<<grid, CK_BLOCK, 0, st>>>((const uint16_t *)x, p->s, p->splits, 0, p->partials);
        else
            ck_bn_stats_nchw<ck_st_f32><<<grid, CK_BLOCK, 0, st>>>(
                (const float *)x, p->s, p->splits, ck_aligned16(x, x), p->partials);
    } else {
        dim3 grid((p->s.c + 31) / 32, p->splits);
        if (bf)
            ck_bn_stats_nhwc<ck_st_bf16>
                <<<grid, dim3(32, 8), 0, st>>>((const uint16_t *)x, p->s, p->splits, p->partials);
        else
            ck_bn_stats_nhwc<ck_st_f32>
                <<<grid, dim3(32, 8), 0, st>>>((const float *)x, p->s, p->splits, p->partials);
    }
}

static void ck_bn_launch_sd_scales(const ck_kbn *p, cudaStream_t st) {
    const long long units = (long long)p->s.n * p->s.c;
    const ck_koffset ko = {p->sd_offset, p->sd_step, p->sd_layer};
    ck_sd_scales_kernel<<<ck_grid_for(units, CK_BLOCK), CK_BLOCK, 0, st>>>(
        p->sd_scales, units, p->seed, ko, ck_spatial_unit0(p->sd_sample0, p->s.c), p->sd_threshold,
        p->sd_scale);
}

extern "C" int ck_cuda_bn_forward_training(const ck_kbn *p, const void *x, const float *gamma,
                                           const float *beta, float *running_mean,
                                           float *running_var, float *saved_mean,
                                           float *saved_invstd, void *y, void *stream) {
    cudaStream_t st = (cudaStream_t)stream;
    if (p->s.c > 65535 && !p->s.nhwc)
        return (int)cudaErrorInvalidConfiguration;
    if (!p->frozen)
        ck_bn_launch_stats(p, x, st);
    if (p->exchange) { /* SyncBatchNormalization: every rank's moments before the finalize */
        ck_bn_local_moments<<<p->s.c, 32, 0, st>>>(*p, p->sync_local);
        const int e = ck_launch_status();
        if (e)
            return e;
        if (p->exchange(p->exchange_user, p->sync_local, p->sync_all, (size_t)3 * p->s.c))
            return CK_KBN_EXCHANGE_FAILED;
        ck_bn_finalize_forward_sync<<<(p->s.c + 127) / 128, 128, 0, st>>>(
            *p, p->sync_all, gamma, beta, running_mean, running_var, saved_mean, saved_invstd);
    } else {
        ck_bn_finalize_forward<<<p->s.c, 32, 0, st>>>(*p, gamma, beta, running_mean, running_var,
                                                      saved_mean, saved_invstd);
    }
    if (p->sd_enabled)
        ck_bn_launch_sd_scales(p, st);
    ck_bn_launch_apply(x, y, p->s, p->coef, p->sd_enabled ? p->sd_scales : NULL, p->bn.activation,
                       st);
    return ck_launch_status();
}

/* ---- inference ----------------------------------------------------------------------------- */

template <class S>
__global__ void ck_bn_inference_kernel(long long count, ck_kshape s, int act, float eps,
                                       const typename S::T *x, const float *gamma,
                                       const float *beta, const float *rmean, const float *rvar,
                                       typename S::T *y) {
    const long long hw = (long long)s.h * s.w;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < count;
         e += (long long)gridDim.x * blockDim.x) {
        const int c = s.nhwc ? (int)(e % s.c) : (int)((e / hw) % s.c);
        const float a = ck_bn_scale(gamma[c], ck_bn_invstd(rvar[c], eps));
        S::st(y, e, ck_act_forward(ck_bn_preact(S::ld(x, e), rmean[c], a, beta[c]), act));
    }
}

/* bf16, 8 words per 16-byte access (ck_bn_vec8_ok's layouts); each element as above. */
__global__ void ck_bn_inference_vec8(long long octs, ck_kshape s, int act, float eps,
                                     const uint16_t *x, const float *gamma, const float *beta,
                                     const float *rmean, const float *rvar, uint16_t *y) {
    const long long hw = (long long)s.h * s.w;
    for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < octs;
         o += (long long)gridDim.x * blockDim.x) {
        const long long e = o * 8;
        float v[8];
        ck_bf16x8_ld(x, e, v);
        const int c0 = s.nhwc ? (int)(e % s.c) : (int)((e / hw) % s.c);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int c = s.nhwc ? c0 + j : c0;
            const float a = ck_bn_scale(gamma[c], ck_bn_invstd(rvar[c], eps));
            v[j] = ck_act_forward(ck_bn_preact(v[j], rmean[c], a, beta[c]), act);
        }
        ck_bf16x8_st(y, e, v);
    }
}

extern "C" int ck_cuda_bn_forward_inference(ck_kshape s, int act, float eps, const void *x,
                                            const float *gamma, const float *beta,
                                            const float *running_mean, const float *running_var,
                                            void *y, void *stream) {
    const long long count = (long long)s.n * s.c * s.h * s.w;
    const unsigned grid = ck_grid_for(count, CK_BLOCK);
    cudaStream_t st = (cudaStream_t)stream;
    if (s.dt == CK_KDT_BF16 && ck_bn_vec8_ok(s, x, y))
        ck_bn_inference_vec8<<<ck_grid_for(count / 8, CK_BLOCK), CK_BLOCK, 0, st>>>(
            count / 8, s, act, eps, (const uint16_t *)x, gamma, beta, running_mean, running_var,
            (uint16_t *)y);
    else if (s.dt == CK_KDT_BF16)
        ck_bn_inference_kernel<ck_st_bf16>
            <<<grid, CK_BLOCK, 0, st>>>(count, s, act, eps, (const uint16_t *)x, gamma, beta,
                                        running_mean, running_var, (uint16_t *)y);
    else
        ck_bn_inference_kernel<ck_st_f32>
            <<<grid, CK_BLOCK, 0, st>>>(count, s, act, eps, (const float *)x, gamma, beta,
                                        running_mean, running_var, (float *)y);
    return ck_launch_status();
}

/* ---- backward ------------------------------------------------------------------------------ */

struct ck_bn_chan {
    float a, beta, mean, invstd;
};

__device__ __forceinline__ ck_bn_chan ck_bn_chan_of(int c, const float *gamma, const float *beta,
                                                    const float *smean, const float *sinvstd) {
    ck_bn_chan r;
    r.mean = smean[c];
    r.invstd = sinvstd[c];
    r.a = ck_bn_scale(gamma[c], r.invstd);
    r.beta = beta[c];
    return r;
}

/* Accumulates g = dL/d(pre) and g * xhat for one element. */
__device__ __forceinline__ void ck_bn_bwd_acc(float xv, float dyv, float m, const ck_bn_chan &k,
                                              int act, float &sg, float &sgx) {
    const float g = ck_act_backward(dyv * m, ck_bn_preact(xv, k.mean, k.a, k.beta), act);
    sg += g;
    sgx += g * ((xv - k.mean) * k.invstd);
}

template <class S>
__global__ void ck_bn_bwd_reduce_nchw(const typename S::T *x, const typename S::T *dy, ck_kbn p,
                                      const float *gamma, const float *beta, const float *smean,
                                      const float *sinvstd, const float *sd) {
    const ck_kshape s = p.s;
    const int c = blockIdx.y, sp = blockIdx.x;
    const int per = (s.n + p.splits - 1) / p.splits;
    const int n0 = sp * per, n1 = min(s.n, n0 + per);
    const int hw = s.h * s.w;
    const ck_bn_chan k = ck_bn_chan_of(c, gamma, beta, smean, sinvstd);
    float sg = 0.0f, sgx = 0.0f;
    if (n0 < n1) {
        const long long total = (long long)(n1 - n0) * hw;
        for (long long j = threadIdx.x; j < total; j += blockDim.x) {
            const int ns = n0 + (int)(j / hw), pp = (int)(j % hw);
            const long long i = ((long long)ns * s.c + c) * hw + pp;
            const float m = sd ? sd[(long long)ns * s.c + c] : 1.0f;
            ck_bn_bwd_acc(S::ld(x, i), S::ld(dy, i), m, k, p.bn.activation, sg, sgx);
        }
    }
    __shared__ float sh[2][CK_WARPS];
    ck_warp_sum2(sg, sgx);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sh[0][warp] = sg;
        sh[1][warp] = sgx;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float a = 0.0f, b = 0.0f;
        for (int wi = 0; wi < CK_WARPS; ++wi) {
            a += sh[0][wi];
            b += sh[1][wi];
        }
        double *out = p.partials + 3 * ((long long)c * p.splits + sp);
        out[0] = a;
        out[1] = b;
    }
}

template <class S>
__global__ void ck_bn_bwd_reduce_nhwc(const typename S::T *x, const typename S::T *dy, ck_kbn p,
                                      const float *gamma, const float *beta, const float *smean,
                                      const float *sinvstd, const float *sd) {
    const ck_kshape s = p.s;
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * 32 + tx, sp = blockIdx.y;
    const long long hw = (long long)s.h * s.w;
    const long long rows = (long long)s.n * hw;
    const long long per = (rows + p.splits - 1) / p.splits;
    const long long r0 = sp * per, r1 = min(rows, r0 + per);
    float sg = 0.0f, sgx = 0.0f;
    if (c < s.c) {
        const ck_bn_chan k = ck_bn_chan_of(c, gamma, beta, smean, sinvstd);
        const long long step = blockDim.y;
        long long r = r0 + ty;
        /* loads of 4 rows first, then the sums in the same order (see ck_bn_stats_nhwc) */
        for (; r + 3 * step < r1; r += 4 * step) {
            float xv[4], dv[4], mv[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                const long long ru = r + u * step, i = ru * s.c + c;
                xv[u] = ck_bn_ldg<S>(x, i);
                dv[u] = ck_bn_ldg<S>(dy, i);
                mv[u] = sd ? __ldg(sd + (ru / hw) * s.c + c) : 1.0f;
            }
#pragma unroll
            for (int u = 0; u < 4; ++u)
                ck_bn_bwd_acc(xv[u], dv[u], mv[u], k, p.bn.activation, sg, sgx);
        }
        for (; r < r1; r += step) {
            const long long i = r * s.c + c;
            const float m = sd ? sd[(r / hw) * s.c + c] : 1.0f;
            ck_bn_bwd_acc(S::ld(x, i), S::ld(dy, i), m, k, p.bn.activation, sg, sgx);
        }
    }
    __shared__ float sh[2][8][33];
    sh[0][ty][tx] = sg;
    sh[1][ty][tx] = sgx;
    __syncthreads();
    if (ty == 0 && c < s.c) {
        for (int k2 = 1; k2 < (int)blockDim.y; ++k2) {
            sg += sh[0][k2][tx];
            sgx += sh[1][k2][tx];
        }
        double *out = p.partials + 3 * ((long long)c * p.splits + sp);
        out[0] = sg;
        out[1] = sgx;
    }
}

/* SyncBatchNormalization, backward: this rank's sums per channel (sum g, sum g*xhat, its count)
 * for the exchange, and its dgamma, dbeta (the gradients are summed over the ranks after
 * backward, as every parameter's). */
__global__ void ck_bn_bwd_local_sums(ck_kbn p, double *local, float *dgamma, float *dbeta) {
    const int c = blockIdx.x, lane = threadIdx.x;
    const double *part = p.partials + 3 * (long long)c * p.splits;
    double sg = 0.0, sgx = 0.0;
    for (int k = lane; k < p.splits; k += 32) {
        sg += part[3 * k];
        sgx += part[3 * k + 1];
    }
    ck_warp_sum2(sg, sgx);
    if (lane == 0) {
        dbeta[c] = (float)sg;
        dgamma[c] = (float)sgx;
        local[3 * c + 0] = sg;
        local[3 * c + 1] = sgx;
        local[3 * c + 2] = (double)p.s.n * p.s.h * p.s.w;
    }
}

/* ... then the dx coefficients from the sums of every rank, added in rank order. */
__global__ void ck_bn_bwd_finalize_sync(ck_kbn p, const double *all) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= p.s.c)
        return;
    double sg = 0.0, sgx = 0.0, m = 0.0;
    for (int r = 0; r < p.ranks; ++r) {
        const double *v = all + 3 * ((long long)r * p.s.c + c);
        sg += v[0];
        sgx += v[1];
        m += v[2];
    }
    const bool frozen = p.frozen || ck_bn_single_value_frozen(&p.bn, m);
    p.coef[4 * c + 2] = frozen ? 0.0f : (float)(sg / m);
    p.coef[4 * c + 3] = frozen ? 0.0f : (float)(sgx / m);
}

/* One warp per channel: dbeta = sum g, dgamma = sum g*xhat, and the dx coefficients. */
__global__ void ck_bn_finalize_backward(ck_kbn p, float *dgamma, float *dbeta) {
    const int c = blockIdx.x, lane = threadIdx.x;
    const double *part = p.partials + 3 * (long long)c * p.splits;
    double sg = 0.0, sgx = 0.0;
    for (int k = lane; k < p.splits; k += 32) {
        sg += part[3 * k];
        sgx += part[3 * k + 1];
    }
    ck_warp_sum2(sg, sgx);
    if (lane == 0) {
        const double m = (double)p.s.n * p.s.h * p.s.w;
        dbeta[c] = (float)sg;
        dgamma[c] = (float)sgx;
        p.coef[4 * c + 2] = p.frozen ? 0.0f : (float)(sg / m);
        p.coef[4 * c + 3] = p.frozen ? 0.0f : (float)(sgx / m);
    }
}

/* dx of one element of channel c (SpatialDropout scale m): the one definition both apply
 * kernels use. */
__device__ __forceinline__ float ck_bn_dx_of(float xv, float dyv, float m, const ck_bn_chan &k,
                                             const float *coef, int c, int act) {
    const float gr = ck_act_backward(dyv * m, ck_bn_preact(xv, k.mean, k.a, k.beta), act);
    return ck_bn_backward_dx(gr, (xv - k.mean) * k.invstd, k.a, coef[4 * c + 2], coef[4 * c + 3]);
}

template <class S>
__global__ void ck_bn_bwd_apply(const typename S::T *x, const typename S::T *dy, typename S::T *dx,
                                long long count, ck_kbn p, const float *gamma, const float *beta,
                                const float *smean, const float *sinvstd, const float *sd) {
    const ck_kshape s = p.s;
    const long long hw = (long long)s.h * s.w;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < count;
         e += (long long)gridDim.x * blockDim.x) {
        int c;
        long long g;
        if (s.nhwc) {
            c = (int)(e % s.c);
            g = (e / (hw * s.c)) * s.c + c;
        } else {
            g = e / hw;
            c = (int)(g % s.c);
        }
        const ck_bn_chan k = ck_bn_chan_of(c, gamma, beta, smean, sinvstd);
        const float m = sd ? sd[g] : 1.0f;
        S::st(dx, e, ck_bn_dx_of(S::ld(x, e), S::ld(dy, e), m, k, p.coef, c, p.bn.activation));
    }
}

/* bf16, 8 words per 16-byte access of x, dy and dx (ck_bn_vec8_ok's layouts); each element as
 * ck_bn_bwd_apply. dx may alias dy: a thread loads its 8 before it stores them. */
__global__ void ck_bn_bwd_apply_vec8(const uint16_t *x, const uint16_t *dy, uint16_t *dx,
                                     long long octs, ck_kbn p, const float *gamma,
                                     const float *beta, const float *smean, const float *sinvstd,
                                     const float *sd) {
    const ck_kshape s = p.s;
    const long long hw = (long long)s.h * s.w;
    for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < octs;
         o += (long long)gridDim.x * blockDim.x) {
        const long long e = o * 8;
        float xv[8], dv[8];
        ck_bf16x8_ld(x, e, xv);
        ck_bf16x8_ld(dy, e, dv);
        if (!s.nhwc) {
            const long long g = e / hw;
            const int c = (int)(g % s.c);
            const ck_bn_chan k = ck_bn_chan_of(c, gamma, beta, smean, sinvstd);
            const float m = sd ? sd[g] : 1.0f;
#pragma unroll
            for (int j = 0; j < 8; ++j)
                xv[j] = ck_bn_dx_of(xv[j], dv[j], m, k, p.coef, c, p.bn.activation);
        } else {
            const int c = (int)(e % s.c);
            const long long g = (e / (hw * s.c)) * s.c + c;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const ck_bn_chan k = ck_bn_chan_of(c + j, gamma, beta, smean, sinvstd);
                const float m = sd ? sd[g + j] : 1.0f;
                xv[j] = ck_bn_dx_of(xv[j], dv[j], m, k, p.coef, c + j, p.bn.activation);
            }
        }
        ck_bf16x8_st(dx, e, xv);
    }
}

extern "C" int ck_cuda_bn_backward(const ck_kbn *p, const void *x, const void *dy,
                                   const float *gamma, const float *beta, const float *saved_mean,
                                   const float *saved_invstd, void *dx, float *dgamma, float *dbeta,
                                   void *stream) {
    const bool bf = p->s.dt == CK_KDT_BF16;
    cudaStream_t st = (cudaStream_t)stream;
    if (p->s.c > 65535 && !p->s.nhwc)
        return (int)cudaErrorInvalidConfiguration;
    const float *sd = NULL;
    if (p->sd_enabled) {
        ck_bn_launch_sd_scales(p, st);
        sd = p->sd_scales;
    }
    if (!p->s.nhwc) {
        dim3 grid(p->splits, p->s.c);
        if (bf)
            ck_bn_bwd_reduce_nchw<ck_st_bf16>
                <<<grid, CK_BLOCK, 0, st>>>((const uint16_t *)x, (const uint16_t *)dy, *p, gamma,
                                            beta, saved_mean, saved_invstd, sd);
        else
            ck_bn_bwd_reduce_nchw<ck_st_f32><<<grid, CK_BLOCK, 0, st>>>(
                (const float *)x, (const float *)dy, *p, gamma, beta, saved_mean, saved_invstd, sd);
    } else {
        dim3 grid((p->s.c + 31) / 32, p->splits);
        if (bf)
            ck_bn_bwd_reduce_nhwc<ck_st_bf16>
                <<<grid, dim3(32, 8), 0, st>>>((const uint16_t *)x, (const uint16_t *)dy, *p, gamma,
                                               beta, saved_mean, saved_invstd, sd);
        else
            ck_bn_bwd_reduce_nhwc<ck_st_f32><<<grid, dim3(32, 8), 0, st>>>(
                (const float *)x, (const float *)dy, *p, gamma, beta, saved_mean, saved_invstd, sd);
    }
    if (p->exchange) { /* SyncBatchNormalization: the means of dx are the global batch's */
        ck_bn_bwd_local_sums<<<p->s.c, 32, 0, st>>>(*p, p->sync_local, dgamma, dbeta);
        const int e = ck_launch_status();
        if (e)
            return e;
        if (p->exchange(p->exchange_user, p->sync_local, p->sync_all, (size_t)3 * p->s.c))
            return CK_KBN_EXCHANGE_FAILED;
        ck_bn_bwd_finalize_sync<<<(p->s.c + 127) / 128, 128, 0, st>>>(*p, p->sync_all);
    } else {
        ck_bn_finalize_backward<<<p->s.c, 32, 0, st>>>(*p, dgamma, dbeta);
    }
    const long long count = (long long)p->s.n * p->s.c * p->s.h * p->s.w;
    if (bf && ck_bn_vec8_ok(p->s, x, dx) && ck_aligned16(dy, dy))
        ck_bn_bwd_apply_vec8<<<ck_grid_for(count / 8, CK_BLOCK), CK_BLOCK, 0, st>>>(
            (const uint16_t *)x, (const uint16_t *)dy, (uint16_t *)dx, count / 8, *p, gamma, beta,
            saved_mean, saved_invstd, sd);
    else if (bf)
        ck_bn_bwd_apply<ck_st_bf16><<<ck_grid_for(count, CK_BLOCK), CK_BLOCK, 0, st>>>(
            (const uint16_t *)x, (const uint16_t *)dy, (uint16_t *)dx, count, *p, gamma, beta,
            saved_mean, saved_invstd, sd);
    else
        ck_bn_bwd_apply<ck_st_f32><<<ck_grid_for(count, CK_BLOCK), CK_BLOCK, 0, st>>>(
            (const float *)x, (const float *)dy, (float *)dx, count, *p, gamma, beta, saved_mean,
            saved_invstd, sd);
    return ck_launch_status();
}
