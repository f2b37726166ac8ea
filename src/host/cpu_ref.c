/* CPU reference of every kernel: the oracle the CUDA path is tested against.
 * Per-element math comes from ck_math.h, shared with the kernels. Statistics are accumulated in
 * double, per channel, in a fixed order: results do not depend on the number of threads. */
#include "ck_math.h"
#include "internal.h"

#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#define CK_NT(t) ((t) > 0 ? (t) : omp_get_max_threads())
#else
#define CK_NT(t) 1
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
                dst->data[n * b.sn + c * b.sc + p * b.sp] = src->data[n * a.sn + c * a.sc + p * a.sp];
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
#pragma omp parallel for num_threads(CK_NT(threads)) schedule(static)
        for (int g = 0; g < planes; ++g) {
            int keep = mask_in ? mask_in->data[g] != 0 : ck_spatial_keep(seed, d->offset, thr, g);
            if (mask_out)
                mask_out->data[g] = (uint8_t)keep;
            float m = keep ? scale : 0.0f;
            size_t base = (size_t)(g / s.c) * s.sn + (size_t)(g % s.c) * s.sc;
            for (int p = 0; p < s.hw; ++p)
                ys[base + p * s.sp] = xs[base + p * s.sp] * m;
        }
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

void ck_cpu_bn_forward_training(int threads, const ck_bn_desc *d, int frozen, uint64_t seed,
                                const ck_tensor *x, const float *gamma, const float *beta,
                                float *running_mean, float *running_var, float *saved_mean,
                                float *saved_invstd, const ck_dropout_desc *sd, ck_tensor *y) {
    const strides s = strides_of(x);
    const double m = (double)s.n * (double)s.hw;
    const uint32_t thr = sd ? ck_dropout_threshold(sd->rate) : 0;
    const float sdscale = sd ? ck_dropout_scale(sd->rate) : 1.0f;
    const float *xs = x->data;
    float *ys = y->data;
#pragma omp parallel for num_threads(CK_NT(threads)) schedule(static)
    for (int c = 0; c < s.c; ++c) {
        float mean, invstd;
        if (frozen) {
            mean = running_mean[c];
            invstd = ck_bn_invstd(running_var[c], d->epsilon);
        } else {
            double sum = 0.0, sq = 0.0;
            for (int n = 0; n < s.n; ++n)
                for (int p = 0; p < s.hw; ++p)
                    sum += xs[n * s.sn + c * s.sc + p * s.sp];
            const double mu = sum / m;
            for (int n = 0; n < s.n; ++n)
                for (int p = 0; p < s.hw; ++p) {
                    double dv = xs[n * s.sn + c * s.sc + p * s.sp] - mu;
                    sq += dv * dv;
                }
            const double var = sq / m;
            mean = (float)mu;
            invstd = ck_bn_invstd((float)var, d->epsilon);
            const float v_run = d->unbiased_running_var ? (float)(sq / (m - 1.0)) : (float)var;
            running_mean[c] = ck_running_update(running_mean[c], mean, d->average_factor);
            running_var[c] = ck_running_update(running_var[c], v_run, d->average_factor);
        }
        saved_mean[c] = mean;
        saved_invstd[c] = invstd;
        const float a = ck_bn_scale(gamma[c], invstd), b = beta[c];
        for (int n = 0; n < s.n; ++n) {
            const float sc = spatial_scale(seed, sd, thr, sdscale, n * s.c + c);
            for (int p = 0; p < s.hw; ++p) {
                const size_t i = n * s.sn + c * s.sc + p * s.sp;
                ys[i] = ck_act_forward(ck_bn_preact(xs[i], mean, a, b), (int)d->activation) * sc;
            }
        }
    }
}

void ck_cpu_bn_forward_inference(int threads, const ck_bn_desc *d, const ck_tensor *x,
                                 const float *gamma, const float *beta, const float *running_mean,
                                 const float *running_var, ck_tensor *y) {
    const strides s = strides_of(x);
    const float *xs = x->data;
    float *ys = y->data;
#pragma omp parallel for num_threads(CK_NT(threads)) schedule(static)
    for (int c = 0; c < s.c; ++c) {
        const float a = ck_bn_scale(gamma[c], ck_bn_invstd(running_var[c], d->epsilon));
        const float mean = running_mean[c], b = beta[c];
        for (int n = 0; n < s.n; ++n)
            for (int p = 0; p < s.hw; ++p) {
                const size_t i = n * s.sn + c * s.sc + p * s.sp;
                ys[i] = ck_act_forward(ck_bn_preact(xs[i], mean, a, b), (int)d->activation);
            }
    }
}

void ck_cpu_bn_backward(int threads, const ck_bn_desc *d, int frozen, uint64_t seed,
                        const ck_tensor *x, const ck_tensor *dy, const float *gamma,
                        const float *beta, const float *saved_mean, const float *saved_invstd,
                        const ck_dropout_desc *sd, ck_tensor *dx, float *dgamma, float *dbeta) {
    const strides s = strides_of(x);
    const double m = (double)s.n * (double)s.hw;
    const uint32_t thr = sd ? ck_dropout_threshold(sd->rate) : 0;
    const float sdscale = sd ? ck_dropout_scale(sd->rate) : 1.0f;
    const float *xs = x->data, *dys = dy->data;
    float *dxs = dx->data;
    const int act = (int)d->activation;
#pragma omp parallel for num_threads(CK_NT(threads)) schedule(static)
    for (int c = 0; c < s.c; ++c) {
        const float mean = saved_mean[c], invstd = saved_invstd[c];
        const float a = ck_bn_scale(gamma[c], invstd), b = beta[c];
        double sg = 0.0, sgx = 0.0;
        for (int n = 0; n < s.n; ++n) {
            const float sc = spatial_scale(seed, sd, thr, sdscale, n * s.c + c);
            for (int p = 0; p < s.hw; ++p) {
                const size_t i = n * s.sn + c * s.sc + p * s.sp;
                const float g = ck_act_backward(dys[i] * sc, ck_bn_preact(xs[i], mean, a, b), act);
                sg += g;
                sgx += (double)g * (double)((xs[i] - mean) * invstd);
            }
        }
        const float mean_g = frozen ? 0.0f : (float)(sg / m);
        const float mean_gx = frozen ? 0.0f : (float)(sgx / m);
        for (int n = 0; n < s.n; ++n) {
            const float sc = spatial_scale(seed, sd, thr, sdscale, n * s.c + c);
            for (int p = 0; p < s.hw; ++p) {
                const size_t i = n * s.sn + c * s.sc + p * s.sp;
                const float xi = xs[i];
                const float g = ck_act_backward(dys[i] * sc, ck_bn_preact(xi, mean, a, b), act);
                dxs[i] = ck_bn_backward_dx(g, (xi - mean) * invstd, a, mean_g, mean_gx);
            }
        }
        dgamma[c] = (float)sgx;
        dbeta[c] = (float)sg;
    }
}
