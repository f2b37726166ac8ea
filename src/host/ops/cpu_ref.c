/* CPU reference of every kernel: the oracle the CUDA path is tested against.
 * Per-element math comes from ck_math.h, shared with the kernels. Statistics are accumulated in
 * double, per channel, in a fixed order: results do not depend on the number of threads. */
#include "ck_math.h"
#include "comm_internal.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#define CK_NT(t) ((t) > 0 ? (t) : omp_get_max_threads())
#define CK_TID() omp_get_thread_num()
#else
#define CK_NT(t) 1
#define CK_TID() 0
#endif

/* Element (n, c, p) with p = h * W + w lives at n * sn + c * sc + p * sp in either layout. */
typedef struct strides {
    size_t sn, sc, sp;
    int n, c, hw;
} strides;

static strides strides_of(const ck_tensor *t) {
    strides s;
    s.n = t->n;
    s.c = t->c;
    s.hw = t->h * t->w;
    s.sn = (size_t)t->c * (size_t)s.hw;
    if (t->layout == CK_LAYOUT_NCHW) {
        s.sc = (size_t)s.hw;
        s.sp = 1;
    } else {
        s.sc = 1;
        s.sp = (size_t)t->c;
    }
    return s;
}

/* Whether to run the clones compiled for CPU features this CPU has (feature_present, from
 * __builtin_cpu_supports): never when CNNKIT_CPU_ISA=generic, which forces the baseline loops
 * (the tests compare both paths bit for bit). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
static inline int cpu_has(int feature_present) {
    const char *isa = getenv("CNNKIT_CPU_ISA");
    return feature_present && !(isa && !strcmp(isa, "generic"));
}
#endif

/* ---- dropout ------------------------------------------------------------------------------- */

/* Element dropout draws one Philox call per four units of a row, and the calls of consecutive
 * rows are consecutive (ck_element_call: row r = (n * C + c) * H + h takes calls r * ceil(W/4) +
 * q). Without a stored mask the CPU therefore draws blocks of consecutive calls with a batched
 * Philox4x32-10: eight calls side by side, one array per counter word, so that the rounds
 * vectorize (32x32->64-bit multiplies, four per AVX2 instruction). The words are those of
 * ck_dropout_call bit for bit (same rounds, same key schedule; tests/test_dropout.c compares them
 * with ck_dropout_call and the outputs with ck_element_keep). */
#define CK_PHILOX_LANES 8
#define CK_DROP_BLOCK 256 /* calls per block: 1024 words on the stack */

#define CK_PHILOX_BLOCK_BODY                                                                       \
    const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);                               \
    const uint32_t o0 = (uint32_t)offset, o1 = (uint32_t)(offset >> 32);                           \
    for (int base = 0; base < count; base += CK_PHILOX_LANES) {                                    \
        uint32_t a[CK_PHILOX_LANES], b[CK_PHILOX_LANES], c[CK_PHILOX_LANES], d[CK_PHILOX_LANES];   \
        for (int l = 0; l < CK_PHILOX_LANES; ++l) {                                                \
            const uint64_t call = call0 + (uint64_t)(base + l);                                    \
            a[l] = (uint32_t)call;                                                                 \
            b[l] = (uint32_t)(call >> 32);                                                         \
            c[l] = o0;                                                                             \
            d[l] = o1;                                                                             \
        }                                                                                          \
        uint32_t kk0 = k0, kk1 = k1;                                                               \
        for (int r = 0; r < 10; ++r) {                                                             \
            _Pragma("omp simd") for (int l = 0; l < CK_PHILOX_LANES; ++l) {                        \
                const uint64_t p0 = (uint64_t)CK_PHILOX_M0 * a[l];                                 \
                const uint64_t p1 = (uint64_t)CK_PHILOX_M1 * c[l];                                 \
                const uint32_t na = (uint32_t)(p1 >> 32) ^ b[l] ^ kk0;                             \
                const uint32_t nc = (uint32_t)(p0 >> 32) ^ d[l] ^ kk1;                             \
                b[l] = (uint32_t)p1;                                                               \
                d[l] = (uint32_t)p0;                                                               \
                a[l] = na;                                                                         \
                c[l] = nc;                                                                         \
            }                                                                                      \
            kk0 += CK_PHILOX_W0;                                                                   \
            kk1 += CK_PHILOX_W1;                                                                   \
        }                                                                                          \
        const int nl = count - base < CK_PHILOX_LANES ? count - base : CK_PHILOX_LANES;            \
        for (int l = 0; l < nl; ++l) {                                                             \
            uint32_t *w = words + 4 * (size_t)(base + l);                                          \
            w[0] = a[l];                                                                           \
            w[1] = b[l];                                                                           \
            w[2] = c[l];                                                                           \
            w[3] = d[l];                                                                           \
        }                                                                                          \
    }

/* words[4 i .. 4 i + 3] = ck_dropout_call(seed, offset, call0 + i), i < count. (The key bump
 * after the tenth round is never used.) */
static void philox_block_generic(uint64_t seed, uint64_t offset, uint64_t call0, int count,
                                 uint32_t *words) {
    CK_PHILOX_BLOCK_BODY
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(__AVX2__)
#define CK_PHILOX_AVX2_CLONE 1
__attribute__((target("avx2"))) static void
philox_block_avx2(uint64_t seed, uint64_t offset, uint64_t call0, int count, uint32_t *words) {
    CK_PHILOX_BLOCK_BODY
}
#endif

typedef void (*philox_block_fn)(uint64_t, uint64_t, uint64_t, int, uint32_t *);

/* The batched Philox for this CPU (CNNKIT_CPU_ISA=generic: the baseline, as for BN). */
static philox_block_fn philox_block_pick(void) {
#ifdef CK_PHILOX_AVX2_CLONE
    if (cpu_has(__builtin_cpu_supports("avx2")))
        return philox_block_avx2;
#endif
    return philox_block_generic;
}

void ck_cpu_philox_block(uint64_t seed, uint64_t offset, uint64_t call0, int count,
                         uint32_t *words) {
    philox_block_pick()(seed, offset, call0, count, words);
}

/* Element dropout without masks in or out: blocks of consecutive calls, each drawn at once and
 * applied to its units; every element is written by one thread. */
static void element_dropout_blocks(int threads, uint64_t seed, const ck_dropout_desc *d,
                                   const strides s, int H, int W, const float *xs, float *ys) {
    const uint32_t thr = ck_dropout_threshold(d->rate);
    const float scale = ck_dropout_scale(d->rate);
    const uint64_t wq = (uint64_t)((W + 3) >> 2);
    const uint64_t calls = (uint64_t)s.n * (uint64_t)s.c * (uint64_t)H * wq;
    const uint64_t call0 = ck_element_call0(d->sample0, s.c, H, W);
    const long long blocks = (long long)((calls + CK_DROP_BLOCK - 1) / CK_DROP_BLOCK);
    const philox_block_fn draw = philox_block_pick();
    const int C = s.c;
#pragma omp parallel for num_threads(CK_NT(threads)) schedule(static) if (blocks > 1)
    for (long long bi = 0; bi < blocks; ++bi) {
        uint32_t words[4 * CK_DROP_BLOCK];
        const uint64_t c0 = (uint64_t)bi * CK_DROP_BLOCK;
        const int count = (int)(calls - c0 < CK_DROP_BLOCK ? calls - c0 : CK_DROP_BLOCK);
        draw(seed, d->offset, call0 + c0, count, words);
        /* (n, c, h, q) of the block's first call, then stepped call by call */
        const uint64_t r0 = c0 / wq, g0 = r0 / (uint64_t)H; /* row, n * C + c */
        int q = (int)(c0 % wq), h = (int)(r0 % (uint64_t)H);
        int c = (int)(g0 % (uint64_t)C), n = (int)(g0 / (uint64_t)C);
        for (int i = 0; i < count; ++i) {
            const size_t base = (size_t)n * s.sn + (size_t)c * s.sc + (size_t)h * W * s.sp;
            const int w1 = 4 * q + 4 < W ? 4 * q + 4 : W;
            for (int w = 4 * q; w < w1; ++w) {
                const size_t e = base + (size_t)w * s.sp;
                ys[e] = xs[e] * (words[4 * i + (w & 3)] >= thr ? scale : 0.0f);
            }
            if (++q == (int)wq) {
                q = 0;
                if (++h == H) {
                    h = 0;
                    if (++c == C) {
                        c = 0;
                        ++n;
                    }
                }
            }
        }
    }
}

void ck_cpu_dropout(int threads, ck_dropout_kind kind, uint64_t seed, const ck_dropout_desc *d,
                    ck_mode mode, const ck_tensor *x, ck_tensor *y, ck_mask *mask_out,
                    const ck_mask *mask_in) {
    (void)mode; /* inference is handled by the caller */
    const strides s = strides_of(x);
    const uint32_t thr = ck_dropout_threshold(d->rate);
    const float scale = ck_dropout_scale(d->rate);
    const float *xs = x->data;
    float *ys = y->data;
    const int planes = s.n * s.c;

    if (kind == CK_DROPOUT_SPATIAL) {
        const uint64_t u0 = ck_spatial_unit0(d->sample0, s.c);
        /* per sample: the C factors first (into a per-thread row), then the elements */
        /* one row of factors per thread, allocated before the parallel region (the context's
         * allocation count is not thread-safe); NULL: recompute the factor per element */
        const int nt = CK_NT(threads);
        float *facs = (float *)ck_host_calloc(x->ctx, (size_t)nt, sizeof(float) * (size_t)s.c);
#pragma omp parallel num_threads(nt)
        {
            float *fac = facs ? facs + (size_t)CK_TID() * (size_t)s.c : NULL;
#pragma omp for schedule(static)
            for (int n = 0; n < s.n; ++n) {
                for (int c = 0; c < s.c; ++c) {
                    const int g = n * s.c + c;
                    const int keep = mask_in
                                         ? mask_in->data[g] != 0
                                         : ck_spatial_keep(seed, d->offset, thr, u0 + (uint64_t)g);
                    if (mask_out)
                        mask_out->data[g] = (uint8_t)keep;
                    if (fac)
                        fac[c] = keep ? scale : 0.0f;
                }
                if (fac && s.sp != 1) { /* NHWC: contiguous rows of C */
                    for (int p = 0; p < s.hw; ++p) {
                        const size_t base = (size_t)n * s.sn + (size_t)p * s.sp;
                        for (int c = 0; c < s.c; ++c)
                            ys[base + c] = xs[base + c] * fac[c];
                    }
                    continue;
                }
                for (int c = 0; c < s.c; ++c) {
                    const int g = n * s.c + c;
                    const float m =
                        fac ? fac[c]
                            : ((mask_in ? mask_in->data[g] != 0
                                        : ck_spatial_keep(seed, d->offset, thr, u0 + (uint64_t)g))
                                   ? scale
                                   : 0.0f);
                    const size_t base = (size_t)n * s.sn + (size_t)c * s.sc;
                    for (int p = 0; p < s.hw; ++p)
                        ys[base + p * s.sp] = xs[base + p * s.sp] * m;
                }
            }
        }
        ck_host_free(x->ctx, facs);
        return;
    }

    /* element dropout: one Philox call per four neighbours along W of a row */
    const int H = x->h, W = x->w, C = x->c;
    if (!mask_in && !mask_out) {
        element_dropout_blocks(threads, seed, d, s, H, W, xs, ys);
        return;
    }
    const uint32_t *bits_in = mask_in ? (const uint32_t *)mask_in->data : NULL;
    uint32_t *bits_out = mask_out ? (uint32_t *)mask_out->data : NULL;
    if (bits_out)
        memset(bits_out, 0, mask_out->bytes);
    const int rows = planes * H;
    const uint64_t call0 = ck_element_call0(d->sample0, C, H, W);
    /* bit writes of neighbouring rows may share a word: write masks from one thread */
    const int nt = bits_out ? 1 : CK_NT(threads);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int r = 0; r < rows; ++r) {
        const int h = r % H, g = r / H;
        const int n = g / C, c = g % C;
        const size_t base = (size_t)n * s.sn + (size_t)c * s.sc + (size_t)h * W * s.sp;
        const size_t flat0 = (size_t)r * (size_t)W; /* NCHW flat index of (n, c, h, 0) */
        ck_u32x4 words = {{0, 0, 0, 0}};
        for (int w = 0; w < W; ++w) {
            const size_t flat = flat0 + (size_t)w;
            int keep;
            if (bits_in) {
                keep = (bits_in[flat >> 5] >> (flat & 31)) & 1u;
            } else {
                if ((w & 3) == 0)
                    words = ck_dropout_call(seed, d->offset,
                                            call0 + ck_element_call(n, c, h, w, C, H, W));
                keep = words.v[w & 3] >= thr;
            }
            if (bits_out && keep)
                bits_out[flat >> 5] |= 1u << (flat & 31);
            ys[base + w * s.sp] = xs[base + w * s.sp] * (keep ? scale : 0.0f);
        }
    }
}

/* ---- batch norm ---------------------------------------------------------------------------- */

static float spatial_scale(uint64_t seed, const ck_dropout_desc *sd, uint32_t thr, float scale,
                           int n, int C, int c) {
    if (!sd)
        return 1.0f;
    const uint64_t g = ck_spatial_unit0(sd->sample0, C) + (uint64_t)n * (uint64_t)C + (uint64_t)c;
    return ck_spatial_keep(seed, sd->offset, thr, g) ? scale : 0.0f;
}

/* Per-channel arithmetic of one BN call, filled once per call (one array per quantity, so that
 * the NHWC inner loop over channels reads each with unit stride). */
typedef struct bn_chan {
    float *mean, *invstd, *a, *beta, *mean_g, *mean_gx;
} bn_chan;

/* The element passes of BN, written once for both layouts. */
enum bn_pass {
    PASS_SUM,     /* acc0 += x */
    PASS_SQ,      /* acc0 += (x - mean)^2, mean in mu */
    PASS_BWD_SUM, /* acc0 += g, acc1 += g * xhat */
    PASS_FWD,     /* y = act(pre) * s */
    PASS_BWD      /* dx = ... */
};

#define CK_BN_CHUNKS 16

typedef struct bn_job {
    strides s;
    const float *x, *dy;
    float *out;
    bn_chan ch;
    const double *mu; /* PASS_SQ */
    int act;
    uint64_t seed;
    const ck_dropout_desc *sd;
    uint32_t thr;
    float sdscale;
    double *part; /* NHWC: CK_BN_CHUNKS rows of 2 x C partial sums (acc0 row, acc1 row) */
    float *scs;   /* NHWC: CK_BN_CHUNKS rows of C channel scales */
} bn_job;

#if defined(__GNUC__)
#define CK_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define CK_ALWAYS_INLINE static inline
#endif

/* One element of a pass: x index i, channel c, channel scale sc; a0 / a1: the two accumulators of
 * channel c (reducing passes). pass is a literal at every call site, so the switch folds away. */
CK_ALWAYS_INLINE void bn_elem(const bn_job *j, enum bn_pass pass, size_t i, int c, float sc,
                              double *a0, double *a1) {
    const float xi = j->x[i];
    switch (pass) {
    case PASS_SUM:
        *a0 += xi;
        break;
    case PASS_SQ: {
        const double dv = xi - j->mu[c];
        *a0 += dv * dv;
        break;
    }
    case PASS_BWD_SUM: {
        const float g = ck_act_backward(
            j->dy[i] * sc, ck_bn_preact(xi, j->ch.mean[c], j->ch.a[c], j->ch.beta[c]), j->act);
        *a0 += g;
        *a1 += (double)g * (double)((xi - j->ch.mean[c]) * j->ch.invstd[c]);
        break;
    }
    case PASS_FWD:
        j->out[i] =
            ck_act_forward(ck_bn_preact(xi, j->ch.mean[c], j->ch.a[c], j->ch.beta[c]), j->act) * sc;
        break;
    case PASS_BWD: {
        const float g = ck_act_backward(
            j->dy[i] * sc, ck_bn_preact(xi, j->ch.mean[c], j->ch.a[c], j->ch.beta[c]), j->act);
        j->out[i] = ck_bn_backward_dx(g, (xi - j->ch.mean[c]) * j->ch.invstd[c], j->ch.a[c],
                                      j->ch.mean_g[c], j->ch.mean_gx[c]);
        break;
    }
    }
}

static int bn_reduces(enum bn_pass pass) {
    return pass == PASS_SUM || pass == PASS_SQ || pass == PASS_BWD_SUM;
}

/* NCHW: channels [c0, c1), each summed in (n, p) order into acc[2c], acc[2c + 1]. */
CK_ALWAYS_INLINE void bn_nchw_range(const bn_job *j, const enum bn_pass pass, double *acc, int c0,
                                    int c1) {
    const strides s = j->s;
    for (int c = c0; c < c1; ++c) {
        double a0 = 0.0, a1 = 0.0;
        for (int n = 0; n < s.n; ++n) {
            const float sc = spatial_scale(j->seed, j->sd, j->thr, j->sdscale, n, s.c, c);
            const size_t base = n * s.sn + c * s.sc;
            for (int p = 0; p < s.hw; ++p)
                bn_elem(j, pass, base + p, c, sc, &a0, &a1);
        }
        if (bn_reduces(pass)) {
            acc[2 * c] = a0;
            acc[2 * c + 1] = a1;
        }
    }
}

/* NHWC: sample chunks [k0, k1) of `chunks`; chunk k sums every channel in (n, p) order into its
 * own rows of partials (j->part), with its channel scales in j->scs. */
CK_ALWAYS_INLINE void bn_nhwc_range(const bn_job *j, const enum bn_pass pass, int chunks, int k0,
                                    int k1) {
    const strides s = j->s;
    const int C = s.c;
    for (int k = k0; k < k1; ++k) {
        const int n0 = (int)((long)s.n * k / chunks), n1 = (int)((long)s.n * (k + 1) / chunks);
        double *p0 = j->part + (size_t)k * 2 * C, *p1 = p0 + C;
        float *sc = j->scs + (size_t)k * C;
        if (bn_reduces(pass))
            for (int c = 0; c < 2 * C; ++c)
                p0[c] = 0.0;
        for (int n = n0; n < n1; ++n) {
            for (int c = 0; c < C; ++c)
                sc[c] = spatial_scale(j->seed, j->sd, j->thr, j->sdscale, n, C, c);
            for (int p = 0; p < s.hw; ++p) {
                const size_t base = n * s.sn + p * s.sp;
                for (int c = 0; c < C; ++c)
                    bn_elem(j, pass, base + c, c, sc[c], &p0[c], &p1[c]);
            }
        }
    }
}

/* The slice [*lo, *hi) of `count` items that thread t of nt runs (static partition). */
static void bn_slice(int count, int t, int nt, int *lo, int *hi) {
    *lo = (int)((long)count * t / nt);
    *hi = (int)((long)count * (t + 1) / nt);
}

#define CK_BN_CASE(P)                                                                              \
    case P:                                                                                        \
        if (nchw)                                                                                  \
            bn_nchw_range(j, P, acc, lo, hi);                                                      \
        else                                                                                       \
            bn_nhwc_range(j, P, chunks, lo, hi);                                                   \
        break;

/* The body of bn_run, once per instruction set (below): the OpenMP region must be written inside
 * each function so that its outlined threads are compiled for that function's target. */
#ifdef _OPENMP
#define CK_BN_THREAD_ID() const int t = omp_get_thread_num(), tn = omp_get_num_threads()
#else
#define CK_BN_THREAD_ID() const int t = 0, tn = 1
#endif
#define CK_BN_RUN_BODY                                                                             \
    const strides s = j->s;                                                                        \
    const int nchw = s.sp == 1;                                                                    \
    const int chunks = s.n < CK_BN_CHUNKS ? s.n : CK_BN_CHUNKS;                                    \
    const int items = nchw ? s.c : chunks;                                                         \
    const int nt0 = CK_NT(threads);                                                                \
    const int nt = nt0 < items ? nt0 : (items > 0 ? items : 1);                                    \
    _Pragma("omp parallel num_threads(nt)") {                                                      \
        CK_BN_THREAD_ID();                                                                         \
        int lo, hi;                                                                                \
        bn_slice(items, t, tn, &lo, &hi);                                                          \
        switch (pass) {                                                                            \
            CK_BN_CASE(PASS_SUM)                                                                   \
            CK_BN_CASE(PASS_SQ)                                                                    \
            CK_BN_CASE(PASS_BWD_SUM)                                                               \
            CK_BN_CASE(PASS_FWD)                                                                   \
            CK_BN_CASE(PASS_BWD)                                                                   \
        }                                                                                          \
    }

static void bn_run_generic(const bn_job *j, enum bn_pass pass, double *acc, int threads) {
    CK_BN_RUN_BODY
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(__FMA__)
#define CK_BN_FMA_CLONE 1
/* The same loops for CPUs with FMA and AVX2: fmaf (ck_bn_preact) becomes one instruction instead
 * of a libm call, and the NHWC channel loops vectorize. The floats are the same: fmaf is exactly
 * rounded either way and vectorizing across channels reorders no sum. */
__attribute__((target("avx2,fma"))) static void bn_run_fma(const bn_job *j, enum bn_pass pass,
                                                           double *acc, int threads) {
    CK_BN_RUN_BODY
}
#endif

/* Runs a pass; acc (2 doubles per channel, interleaved) receives the per-channel sums of the
 * reducing passes. NCHW: parallel over channels, each channel summed in (n, p) order. NHWC: the
 * samples are cut into a fixed number of chunks (independent of the thread count), each chunk
 * sums every channel in (n, p) order into its own partials, and the partials are added in chunk
 * order. Either way the result does not depend on the number of threads. The OpenMP region is
 * outlined before inlining, so the pass is dispatched once per thread (the switch in the body),
 * not per element: every case runs loops specialized for its literal pass. */
static void bn_run(const bn_job *j, enum bn_pass pass, double *acc, int threads) {
#ifdef CK_BN_FMA_CLONE
    if (cpu_has(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
        bn_run_fma(j, pass, acc, threads);
    else
        bn_run_generic(j, pass, acc, threads);
#else
    bn_run_generic(j, pass, acc, threads);
#endif
    const strides s = j->s;
    if (s.sp != 1 && bn_reduces(pass)) {
        memset(acc, 0, sizeof(double) * 2 * (size_t)s.c);
        const int chunks = s.n < CK_BN_CHUNKS ? s.n : CK_BN_CHUNKS;
        for (int k = 0; k < chunks; ++k) {
            const double *p0 = j->part + (size_t)k * 2 * s.c, *p1 = p0 + s.c;
            for (int c = 0; c < s.c; ++c) {
                acc[2 * c] += p0[c];
                acc[2 * c + 1] += p1[c];
            }
        }
    }
}

/* Scratch for one call: per-channel constants, accumulators and the NHWC partials. */
typedef struct bn_scratch {
    ck_context *ctx;
    float *chan; /* 6 x C: the bn_chan arrays */
    double *acc, *mu, *part;
    float *scs;
} bn_scratch;

static int bn_scratch_alloc(bn_scratch *b, ck_context *ctx, int c) {
    b->ctx = ctx;
    b->chan = (float *)ck_host_calloc(ctx, (size_t)c * 6, sizeof *b->chan);
    b->acc = (double *)ck_host_calloc(ctx, (size_t)c * 2, sizeof *b->acc);
    b->mu = (double *)ck_host_calloc(ctx, (size_t)c, sizeof *b->mu);
    b->part = (double *)ck_host_alloc(ctx, sizeof(double) * CK_BN_CHUNKS * 2 * (size_t)c);
    b->scs = (float *)ck_host_alloc(ctx, sizeof(float) * CK_BN_CHUNKS * (size_t)c);
    return b->chan && b->acc && b->mu && b->part && b->scs;
}

static void bn_scratch_free(bn_scratch *b) {
    ck_host_free(b->ctx, b->chan);
    ck_host_free(b->ctx, b->acc);
    ck_host_free(b->ctx, b->mu);
    ck_host_free(b->ctx, b->part);
    ck_host_free(b->ctx, b->scs);
}

static bn_job bn_job_make(const ck_tensor *x, const ck_tensor *dy, float *out, const bn_scratch *b,
                          int act, uint64_t seed, const ck_dropout_desc *sd) {
    bn_job j;
    const size_t C = (size_t)x->c;
    j.s = strides_of(x);
    j.x = x->data;
    j.dy = dy ? dy->data : NULL;
    j.out = out;
    j.ch.mean = b->chan;
    j.ch.invstd = b->chan + C;
    j.ch.a = b->chan + 2 * C;
    j.ch.beta = b->chan + 3 * C;
    j.ch.mean_g = b->chan + 4 * C;
    j.ch.mean_gx = b->chan + 5 * C;
    j.mu = b->mu;
    j.act = act;
    j.seed = seed;
    j.sd = sd;
    j.thr = sd ? ck_dropout_threshold(sd->rate) : 0;
    j.sdscale = sd ? ck_dropout_scale(sd->rate) : 1.0f;
    j.part = b->part;
    j.scs = b->scs;
    return j;
}

/* SyncBatchNormalization: the per-channel sums acc[2c] (and acc[2c + 1] when both) and the
 * element count *m summed over the ranks, in place. A rank that failed before an exchange joins
 * it all the same (bn_sync_failed), with NaN: every rank then sees a NaN count and returns -3,
 * so all leave the node at the same exchange. */
static int bn_sync_failed(const struct ck_comm *sync, int C, int both) {
    return ck_comm_sum_f64_failed(sync, (both ? 2 * C : C) + 1) == CK_STATUS_SUCCESS ? -1 : -2;
}

static int bn_sync_sum(const struct ck_comm *sync, ck_context *ctx, double *acc, int C, int both,
                       double *m) {
    const int k = both ? 2 * C : C;
    double *t = (double *)ck_host_alloc(ctx, sizeof(double) * ((size_t)k + 1));
    if (!t)
        return bn_sync_failed(sync, C, both);
    for (int c = 0; c < C; ++c) {
        t[c] = acc[2 * c];
        if (both)
            t[C + c] = acc[2 * c + 1];
    }
    t[k] = *m;
    const int bad = ck_comm_sum_f64(sync, t, k + 1) != CK_STATUS_SUCCESS;
    if (!bad && isnan(t[k])) { /* another rank failed before this exchange */
        ck_host_free(ctx, t);
        return -3;
    }
    for (int c = 0; c < C && !bad; ++c) {
        acc[2 * c] = t[c];
        if (both)
            acc[2 * c + 1] = t[C + c];
    }
    *m = t[k];
    ck_host_free(ctx, t);
    return bad ? -2 : 0;
}

int ck_cpu_bn_forward_training(int threads, const ck_bn_desc *d, int frozen, uint64_t seed,
                               const ck_tensor *x, const float *gamma, const float *beta,
                               float *running_mean, float *running_var, float *saved_mean,
                               float *saved_invstd, const ck_dropout_desc *sd, ck_tensor *y,
                               const struct ck_comm *sync) {
    const int C = x->c;
    double m = (double)x->n * (double)x->h * (double)x->w;
    bn_scratch b;
    if (!bn_scratch_alloc(&b, x->ctx, C)) {
        bn_scratch_free(&b);
        return sync ? bn_sync_failed(sync, C, 0) : -1; /* the others are in its first exchange */
    }
    bn_job j = bn_job_make(x, NULL, y->data, &b, (int)d->activation, seed, sd);
    if (sync)
        frozen = 0; /* decided by the global count, the same on every rank */
    if (!frozen) {
        bn_run(&j, PASS_SUM, b.acc, threads);
        if (sync) {
            const int r = bn_sync_sum(sync, x->ctx, b.acc, C, 0, &m);
            if (r) {
                bn_scratch_free(&b);
                return r;
            }
            frozen = ck_bn_single_value_frozen(d, m); /* the whole batch's count */
        }
    }
    if (!frozen) {
        for (int c = 0; c < C; ++c)
            b.mu[c] = b.acc[2 * c] / m;
        bn_run(&j, PASS_SQ, b.acc, threads);
        if (sync) {
            double mm = m;
            const int r = bn_sync_sum(sync, x->ctx, b.acc, C, 0, &mm);
            if (r) {
                bn_scratch_free(&b);
                return r;
            }
        }
        /* NaN/Inf in x: refused before the running statistics (or anything) are written */
        for (int c = 0; c < C; ++c)
            if (!isfinite(b.mu[c]) || !isfinite(b.acc[2 * c])) {
                bn_scratch_free(&b);
                return 1 + c;
            }
    }
    for (int c = 0; c < C; ++c) {
        float mean, invstd;
        if (frozen) {
            mean = running_mean[c];
            invstd = ck_bn_invstd(running_var[c], d->epsilon);
        } else {
            const double sq = b.acc[2 * c], var = sq / m;
            mean = (float)b.mu[c];
            invstd = ck_bn_invstd((float)var, d->epsilon);
            const float v_run = d->unbiased_running_var ? (float)(sq / (m - 1.0)) : (float)var;
            running_mean[c] = ck_running_update(running_mean[c], mean, d->average_factor);
            running_var[c] = ck_running_update(running_var[c], v_run, d->average_factor);
        }
        saved_mean[c] = mean;
        saved_invstd[c] = invstd;
        j.ch.mean[c] = mean;
        j.ch.invstd[c] = invstd;
        j.ch.a[c] = ck_bn_scale(gamma[c], invstd);
        j.ch.beta[c] = beta[c];
    }
    bn_run(&j, PASS_FWD, NULL, threads);
    bn_scratch_free(&b);
    return 0;
}

int ck_cpu_bn_forward_inference(int threads, const ck_bn_desc *d, const ck_tensor *x,
                                const float *gamma, const float *beta, const float *running_mean,
                                const float *running_var, ck_tensor *y) {
    bn_scratch b;
    if (!bn_scratch_alloc(&b, x->ctx, x->c)) {
        bn_scratch_free(&b);
        return -1;
    }
    bn_job j = bn_job_make(x, NULL, y->data, &b, (int)d->activation, 0, NULL);
    for (int c = 0; c < x->c; ++c) {
        j.ch.mean[c] = running_mean[c];
        j.ch.invstd[c] = ck_bn_invstd(running_var[c], d->epsilon);
        j.ch.a[c] = ck_bn_scale(gamma[c], j.ch.invstd[c]);
        j.ch.beta[c] = beta[c];
    }
    bn_run(&j, PASS_FWD, NULL, threads);
    bn_scratch_free(&b);
    return 0;
}

int ck_cpu_bn_backward(int threads, const ck_bn_desc *d, int frozen, uint64_t seed,
                       const ck_tensor *x, const ck_tensor *dy, const float *gamma,
                       const float *beta, const float *saved_mean, const float *saved_invstd,
                       const ck_dropout_desc *sd, ck_tensor *dx, float *dgamma, float *dbeta,
                       const struct ck_comm *sync) {
    const int C = x->c;
    double m = (double)x->n * (double)x->h * (double)x->w;
    bn_scratch b;
    if (!bn_scratch_alloc(&b, x->ctx, C)) {
        bn_scratch_free(&b);
        return sync ? bn_sync_failed(sync, C, 1) : -1;
    }
    bn_job j = bn_job_make(x, dy, dx->data, &b, (int)d->activation, seed, sd);
    for (int c = 0; c < C; ++c) {
        j.ch.mean[c] = saved_mean[c];
        j.ch.invstd[c] = saved_invstd[c];
        j.ch.a[c] = ck_bn_scale(gamma[c], saved_invstd[c]);
        j.ch.beta[c] = beta[c];
    }
    bn_run(&j, PASS_BWD_SUM, b.acc, threads);
    /* this rank's sums are its part of dgamma and dbeta (the gradients are summed over the ranks
     * after backward); the means of dx are the global batch's */
    for (int c = 0; c < C; ++c) {
        dgamma[c] = (float)b.acc[2 * c + 1];
        dbeta[c] = (float)b.acc[2 * c];
    }
    if (sync) {
        const int r = bn_sync_sum(sync, x->ctx, b.acc, C, 1, &m);
        if (r) {
            bn_scratch_free(&b);
            return r;
        }
        frozen = ck_bn_single_value_frozen(d, m);
    }
    for (int c = 0; c < C; ++c) {
        const double sg = b.acc[2 * c], sgx = b.acc[2 * c + 1];
        j.ch.mean_g[c] = frozen ? 0.0f : (float)(sg / m);
        j.ch.mean_gx[c] = frozen ? 0.0f : (float)(sgx / m);
    }
    bn_run(&j, PASS_BWD, NULL, threads);
    bn_scratch_free(&b);
    return 0;
}
