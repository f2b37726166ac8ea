/* CPU reference of every kernel: the oracle the CUDA path is tested against.
 * Per-element math comes from ck_math.h, shared with the kernels. Statistics are accumulated in
 * double, per channel, in a fixed order: results do not depend on the number of threads. */
#include "ck_math.h"
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

void ck_cpu_convert_layout(const ck_tensor *src, ck_tensor *dst) {
    strides a = strides_of(src), b = strides_of(dst);
    for (int n = 0; n < a.n; ++n)
        for (int c = 0; c < a.c; ++c)
            for (int p = 0; p < a.hw; ++p)
                dst->data[n * b.sn + c * b.sc + p * b.sp] =
                    src->data[n * a.sn + c * a.sc + p * a.sp];
}

/* ---- dropout ------------------------------------------------------------------------------- */

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
                    const int keep = mask_in ? mask_in->data[g] != 0
                                             : ck_spatial_keep(seed, d->offset, thr, (uint64_t)g);
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
                                        : ck_spatial_keep(seed, d->offset, thr, (uint64_t)g))
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
    const uint32_t *bits_in = mask_in ? (const uint32_t *)mask_in->data : NULL;
    uint32_t *bits_out = mask_out ? (uint32_t *)mask_out->data : NULL;
    if (bits_out)
        memset(bits_out, 0, mask_out->bytes);
    const int rows = planes * H;
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
                    words = ck_dropout_call(seed, d->offset, ck_element_call(n, c, h, w, C, H, W));
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
                           int g) {
    if (!sd)
        return 1.0f;
    return ck_spatial_keep(seed, sd->offset, thr, (uint64_t)g) ? scale : 0.0f;
}

/* Per-channel arithmetic of one BN call, filled once per call. */
typedef struct bn_chan {
    float mean, invstd, a, beta, mean_g, mean_gx;
} bn_chan;

/* The element passes of BN, written once for both layouts. */
enum bn_pass {
    PASS_SUM,     /* acc0 += x */
    PASS_SQ,      /* acc0 += (x - mean)^2, mean in acc_mu */
    PASS_BWD_SUM, /* acc0 += g, acc1 += g * xhat */
    PASS_FWD,     /* y = act(pre) * s */
    PASS_BWD      /* dx = ... */
};

typedef struct bn_job {
    enum bn_pass pass;
    ck_context *ctx; /* scratch allocations are counted here */
    strides s;
    const float *x, *dy;
    float *out;
    const bn_chan *ch;
    const double *mu; /* PASS_SQ */
    int act;
    uint64_t seed;
    const ck_dropout_desc *sd;
    uint32_t thr;
    float sdscale;
} bn_job;

/* One element of a pass; acc points at the two accumulators of channel c. */
#if defined(__GNUC__)
#define CK_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define CK_ALWAYS_INLINE static inline
#endif

/* pass is a compile-time constant at every call site (see bn_run), so the switch folds away. */
CK_ALWAYS_INLINE void bn_elem(const bn_job *j, enum bn_pass pass, size_t i, int c, float sc,
                              double *acc) {
    const float xi = j->x[i];
    const bn_chan *k = &j->ch[c];
    switch (pass) {
    case PASS_SUM:
        acc[0] += xi;
        break;
    case PASS_SQ: {
        const double dv = xi - j->mu[c];
        acc[0] += dv * dv;
        break;
    }
    case PASS_BWD_SUM: {
        const float g =
            ck_act_backward(j->dy[i] * sc, ck_bn_preact(xi, k->mean, k->a, k->beta), j->act);
        acc[0] += g;
        acc[1] += (double)g * (double)((xi - k->mean) * k->invstd);
        break;
    }
    case PASS_FWD:
        j->out[i] = ck_act_forward(ck_bn_preact(xi, k->mean, k->a, k->beta), j->act) * sc;
        break;
    case PASS_BWD: {
        const float g =
            ck_act_backward(j->dy[i] * sc, ck_bn_preact(xi, k->mean, k->a, k->beta), j->act);
        j->out[i] = ck_bn_backward_dx(g, (xi - k->mean) * k->invstd, k->a, k->mean_g, k->mean_gx);
        break;
    }
    }
}

/* Runs a pass. acc (2 doubles per channel) receives per-channel sums for the reducing passes.
 * NCHW: parallel over channels, each channel summed in (n, p) order. NHWC: the samples are cut
 * into a fixed number of chunks (independent of the thread count), each chunk sums every channel
 * in (n, p) order into its own row of partials, and the rows are added in chunk order. Either way
 * the result does not depend on the number of threads. */
#define CK_BN_CHUNKS 16
CK_ALWAYS_INLINE void bn_run_pass(const bn_job *j, const enum bn_pass pass, double *acc,
                                  int threads) {
    const strides s = j->s;
    const int reduce = pass == PASS_SUM || pass == PASS_SQ || pass == PASS_BWD_SUM;
    if (reduce)
        memset(acc, 0, sizeof(double) * 2 * (size_t)s.c);
    if (s.sp == 1) { /* NCHW */
#pragma omp parallel for num_threads(CK_NT(threads)) schedule(static)
        for (int c = 0; c < s.c; ++c) {
            double a2[2] = {0.0, 0.0};
            for (int n = 0; n < s.n; ++n) {
                const float sc = spatial_scale(j->seed, j->sd, j->thr, j->sdscale, n * s.c + c);
                const size_t base = n * s.sn + c * s.sc;
                for (int p = 0; p < s.hw; ++p)
                    bn_elem(j, pass, base + p, c, sc, a2);
            }
            if (reduce) {
                acc[2 * c] = a2[0];
                acc[2 * c + 1] = a2[1];
            }
        }
        return;
    }
    const int chunks = s.n < CK_BN_CHUNKS ? s.n : CK_BN_CHUNKS;
    ck_context *ctx = j->ctx;
    double *part =
        reduce ? (double *)ck_host_calloc(ctx, (size_t)chunks * 2 * (size_t)s.c, sizeof(double))
               : NULL;
    float *scs = (float *)ck_host_alloc(ctx, sizeof(float) * (size_t)chunks * (size_t)s.c);
    const int serial = (reduce && !part) || !scs; /* out of memory: one chunk, no scratch */
#pragma omp parallel for num_threads(serial ? 1 : CK_NT(threads)) schedule(static)
    for (int k = 0; k < (serial ? 1 : chunks); ++k) {
        const int n0 = serial ? 0 : (int)((long)s.n * k / chunks);
        const int n1 = serial ? s.n : (int)((long)s.n * (k + 1) / chunks);
        double *pa = !reduce ? NULL : serial ? acc : part + (size_t)k * 2 * s.c;
        for (int n = n0; n < n1; ++n) {
            float *sc = scs ? scs + (size_t)k * s.c : NULL;
            if (sc)
                for (int c = 0; c < s.c; ++c)
                    sc[c] = spatial_scale(j->seed, j->sd, j->thr, j->sdscale, n * s.c + c);
            for (int p = 0; p < s.hw; ++p) {
                const size_t base = n * s.sn + p * s.sp;
                for (int c = 0; c < s.c; ++c)
                    bn_elem(j, pass, base + c, c,
                            sc ? sc[c]
                               : spatial_scale(j->seed, j->sd, j->thr, j->sdscale, n * s.c + c),
                            pa ? pa + 2 * c : NULL);
            }
        }
    }
    if (reduce && !serial)
        for (int k = 0; k < chunks; ++k)
            for (int i = 0; i < 2 * s.c; ++i)
                acc[i] += part[(size_t)k * 2 * s.c + i];
    ck_host_free(ctx, part);
    ck_host_free(ctx, scs);
}

/* One specialized copy of the loops per pass. */
static void bn_run(const bn_job *j, double *acc, int threads) {
    switch (j->pass) {
    case PASS_SUM:
        bn_run_pass(j, PASS_SUM, acc, threads);
        break;
    case PASS_SQ:
        bn_run_pass(j, PASS_SQ, acc, threads);
        break;
    case PASS_BWD_SUM:
        bn_run_pass(j, PASS_BWD_SUM, acc, threads);
        break;
    case PASS_FWD:
        bn_run_pass(j, PASS_FWD, acc, threads);
        break;
    case PASS_BWD:
        bn_run_pass(j, PASS_BWD, acc, threads);
        break;
    }
}

/* Scratch for one call: per-channel constants and accumulators. */
typedef struct bn_scratch {
    ck_context *ctx;
    bn_chan *ch;
    double *acc, *mu;
} bn_scratch;

static int bn_scratch_alloc(bn_scratch *b, ck_context *ctx, int c) {
    b->ctx = ctx;
    b->ch = (bn_chan *)ck_host_calloc(ctx, (size_t)c, sizeof *b->ch);
    b->acc = (double *)ck_host_calloc(ctx, (size_t)c * 2, sizeof *b->acc);
    b->mu = (double *)ck_host_calloc(ctx, (size_t)c, sizeof *b->mu);
    return b->ch && b->acc && b->mu;
}

static void bn_scratch_free(bn_scratch *b) {
    ck_host_free(b->ctx, b->ch);
    ck_host_free(b->ctx, b->acc);
    ck_host_free(b->ctx, b->mu);
}

static bn_job bn_job_make(enum bn_pass pass, const ck_tensor *x, const ck_tensor *dy, float *out,
                          const bn_scratch *b, int act, uint64_t seed, const ck_dropout_desc *sd) {
    bn_job j;
    j.pass = pass;
    j.ctx = x->ctx;
    j.s = strides_of(x);
    j.x = x->data;
    j.dy = dy ? dy->data : NULL;
    j.out = out;
    j.ch = b->ch;
    j.mu = b->mu;
    j.act = act;
    j.seed = seed;
    j.sd = sd;
    j.thr = sd ? ck_dropout_threshold(sd->rate) : 0;
    j.sdscale = sd ? ck_dropout_scale(sd->rate) : 1.0f;
    return j;
}

int ck_cpu_bn_forward_training(int threads, const ck_bn_desc *d, int frozen, uint64_t seed,
                               const ck_tensor *x, const float *gamma, const float *beta,
                               float *running_mean, float *running_var, float *saved_mean,
                               float *saved_invstd, const ck_dropout_desc *sd, ck_tensor *y) {
    const int C = x->c;
    const double m = (double)x->n * (double)x->h * (double)x->w;
    bn_scratch b;
    if (!bn_scratch_alloc(&b, x->ctx, C)) {
        bn_scratch_free(&b);
        return -1;
    }
    if (!frozen) {
        bn_job j = bn_job_make(PASS_SUM, x, NULL, NULL, &b, 0, seed, NULL);
        bn_run(&j, b.acc, threads);
        for (int c = 0; c < C; ++c)
            b.mu[c] = b.acc[2 * c] / m;
        j.pass = PASS_SQ;
        bn_run(&j, b.acc, threads);
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
        b.ch[c].mean = mean;
        b.ch[c].invstd = invstd;
        b.ch[c].a = ck_bn_scale(gamma[c], invstd);
        b.ch[c].beta = beta[c];
    }
    bn_job j = bn_job_make(PASS_FWD, x, NULL, y->data, &b, (int)d->activation, seed, sd);
    bn_run(&j, NULL, threads);
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
    for (int c = 0; c < x->c; ++c) {
        b.ch[c].mean = running_mean[c];
        b.ch[c].invstd = ck_bn_invstd(running_var[c], d->epsilon);
        b.ch[c].a = ck_bn_scale(gamma[c], b.ch[c].invstd);
        b.ch[c].beta = beta[c];
    }
    bn_job j = bn_job_make(PASS_FWD, x, NULL, y->data, &b, (int)d->activation, 0, NULL);
    bn_run(&j, NULL, threads);
    bn_scratch_free(&b);
    return 0;
}

int ck_cpu_bn_backward(int threads, const ck_bn_desc *d, int frozen, uint64_t seed,
                       const ck_tensor *x, const ck_tensor *dy, const float *gamma,
                       const float *beta, const float *saved_mean, const float *saved_invstd,
                       const ck_dropout_desc *sd, ck_tensor *dx, float *dgamma, float *dbeta) {
    const int C = x->c;
    const double m = (double)x->n * (double)x->h * (double)x->w;
    bn_scratch b;
    if (!bn_scratch_alloc(&b, x->ctx, C)) {
        bn_scratch_free(&b);
        return -1;
    }
    for (int c = 0; c < C; ++c) {
        b.ch[c].mean = saved_mean[c];
        b.ch[c].invstd = saved_invstd[c];
        b.ch[c].a = ck_bn_scale(gamma[c], saved_invstd[c]);
        b.ch[c].beta = beta[c];
    }
    bn_job j = bn_job_make(PASS_BWD_SUM, x, dy, NULL, &b, (int)d->activation, seed, sd);
    bn_run(&j, b.acc, threads);
    for (int c = 0; c < C; ++c) {
        const double sg = b.acc[2 * c], sgx = b.acc[2 * c + 1];
        b.ch[c].mean_g = frozen ? 0.0f : (float)(sg / m);
        b.ch[c].mean_gx = frozen ? 0.0f : (float)(sgx / m);
        dgamma[c] = (float)sgx;
        dbeta[c] = (float)sg;
    }
    j.pass = PASS_BWD;
    j.out = dx->data;
    bn_run(&j, NULL, threads);
    bn_scratch_free(&b);
    return 0;
}
