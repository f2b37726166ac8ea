/* Naive reference of the layer math (see ref.h). */
#include "ref.h"

#include <math.h>
#include <string.h>

#include "ck_math.h"
#include "cnnkit/cnnkit.h"

/* Input cell of output (i, j) and window offset (a, b), or -1 when it is padding. */
static long in_cell(const ck_conv_geom *g, int s, int i, int j, int a, int b) {
    const int y = i * g->sh - g->pad_top + a, x = j * g->sw - g->pad_left + b;
    if (y < 0 || y >= g->h || x < 0 || x >= g->w)
        return -1;
    return ((long)s * g->h + y) * g->w + x;
}

void ref_conv2d_forward(const ck_conv_geom *g, const float *x, const float *k, const float *bias,
                        float *y) {
    for (int s = 0; s < g->n; s++)
        for (int i = 0; i < g->oh; i++)
            for (int j = 0; j < g->ow; j++)
                for (int o = 0; o < g->cout; o++) {
                    double acc = bias ? bias[o] : 0.0;
                    for (int a = 0; a < g->kh; a++)
                        for (int b = 0; b < g->kw; b++) {
                            const long cell = in_cell(g, s, i, j, a, b);
                            if (cell < 0)
                                continue;
                            for (int c = 0; c < g->cin; c++)
                                acc += (double)x[cell * g->cin + c] *
                                       k[(((long)a * g->kw + b) * g->cin + c) * g->cout + o];
                        }
                    y[(((long)s * g->oh + i) * g->ow + j) * g->cout + o] = (float)acc;
                }
}

void ref_conv2d_backward(const ck_conv_geom *g, const float *x, const float *k, const float *dy,
                         float *dx, float *dk, float *dbias) {
    const long nx = (long)g->n * g->h * g->w * g->cin, nk = (long)g->kh * g->kw * g->cin * g->cout;
    for (long q = 0; q < nk; q++) {
        const int o = (int)(q % g->cout), c = (int)(q / g->cout % g->cin);
        const int b = (int)(q / g->cout / g->cin % g->kw), a = (int)(q / g->cout / g->cin / g->kw);
        double acc = 0.0;
        for (int s = 0; s < g->n; s++)
            for (int i = 0; i < g->oh; i++)
                for (int j = 0; j < g->ow; j++) {
                    const long cell = in_cell(g, s, i, j, a, b);
                    if (cell >= 0)
                        acc += (double)x[cell * g->cin + c] *
                               dy[(((long)s * g->oh + i) * g->ow + j) * g->cout + o];
                }
        dk[q] = (float)acc;
    }
    if (dbias)
        for (int o = 0; o < g->cout; o++) {
            double acc = 0.0;
            for (long p = 0; p < (long)g->n * g->oh * g->ow; p++)
                acc += dy[p * g->cout + o];
            dbias[o] = (float)acc;
        }
    if (!dx)
        return;
    /* Gathered per input cell so each dx is one double sum. */
    for (long e = 0; e < nx; e++) {
        const int c = (int)(e % g->cin), xx = (int)(e / g->cin % g->w);
        const int yy = (int)(e / g->cin / g->w % g->h), s = (int)(e / g->cin / g->w / g->h);
        double acc = 0.0;
        for (int i = 0; i < g->oh; i++)
            for (int j = 0; j < g->ow; j++) {
                const int a = yy - (i * g->sh - g->pad_top), b = xx - (j * g->sw - g->pad_left);
                if (a < 0 || a >= g->kh || b < 0 || b >= g->kw)
                    continue;
                for (int o = 0; o < g->cout; o++)
                    acc += (double)dy[(((long)s * g->oh + i) * g->ow + j) * g->cout + o] *
                           k[(((long)a * g->kw + b) * g->cin + c) * g->cout + o];
            }
        dx[e] = (float)acc;
    }
}

void ref_pool_forward(const ck_conv_geom *g, int is_max, const float *x, float *y) {
    const int C = g->cin;
    for (int s = 0; s < g->n; s++)
        for (int i = 0; i < g->oh; i++)
            for (int j = 0; j < g->ow; j++)
                for (int c = 0; c < C; c++) {
                    double acc = is_max ? -INFINITY : 0.0;
                    int cells = 0;
                    for (int a = 0; a < g->kh; a++)
                        for (int b = 0; b < g->kw; b++) {
                            const long cell = in_cell(g, s, i, j, a, b);
                            if (cell < 0)
                                continue;
                            const double v = x[cell * C + c];
                            acc = is_max ? (v > acc ? v : acc) : acc + v;
                            cells++;
                        }
                    y[(((long)s * g->oh + i) * g->ow + j) * C + c] =
                        (float)(is_max ? acc : acc / cells);
                }
}

void ref_pool_backward(const ck_conv_geom *g, int is_max, const float *x, const float *dy,
                       float *dx) {
    const int C = g->cin;
    memset(dx, 0, sizeof(float) * (size_t)g->n * g->h * g->w * C);
    for (int s = 0; s < g->n; s++)
        for (int i = 0; i < g->oh; i++)
            for (int j = 0; j < g->ow; j++)
                for (int c = 0; c < C; c++) {
                    const float d = dy[(((long)s * g->oh + i) * g->ow + j) * C + c];
                    long best = -1;
                    int cells = 0;
                    for (int a = 0; a < g->kh; a++)
                        for (int b = 0; b < g->kw; b++) {
                            const long cell = in_cell(g, s, i, j, a, b);
                            if (cell < 0)
                                continue;
                            cells++;
                            if (best < 0 || x[cell * C + c] > x[best * C + c])
                                best = cell;
                        }
                    if (is_max) {
                        dx[best * C + c] += d;
                        continue;
                    }
                    for (int a = 0; a < g->kh; a++)
                        for (int b = 0; b < g->kw; b++) {
                            const long cell = in_cell(g, s, i, j, a, b);
                            if (cell >= 0)
                                dx[cell * C + c] += d / cells;
                        }
                }
}

void ref_gap_forward(int n, int hw, int c, const float *x, float *y) {
    for (int s = 0; s < n; s++)
        for (int ch = 0; ch < c; ch++) {
            double acc = 0.0;
            for (int p = 0; p < hw; p++)
                acc += x[((long)s * hw + p) * c + ch];
            y[(long)s * c + ch] = (float)(acc / hw);
        }
}

void ref_gap_backward(int n, int hw, int c, const float *dy, float *dx) {
    for (int s = 0; s < n; s++)
        for (int p = 0; p < hw; p++)
            for (int ch = 0; ch < c; ch++)
                dx[((long)s * hw + p) * c + ch] = (float)((double)dy[(long)s * c + ch] / hw);
}

void ref_dense_forward(int n, int in, int out, const float *x, const float *k, const float *bias,
                       float *y) {
    for (int s = 0; s < n; s++)
        for (int o = 0; o < out; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (int i = 0; i < in; i++)
                acc += (double)x[(long)s * in + i] * k[(long)i * out + o];
            y[(long)s * out + o] = (float)acc;
        }
}

void ref_dense_backward(int n, int in, int out, const float *x, const float *k, const float *dy,
                        float *dx, float *dk, float *dbias) {
    for (int i = 0; i < in; i++)
        for (int o = 0; o < out; o++) {
            double acc = 0.0;
            for (int s = 0; s < n; s++)
                acc += (double)x[(long)s * in + i] * dy[(long)s * out + o];
            dk[(long)i * out + o] = (float)acc;
        }
    if (dbias)
        for (int o = 0; o < out; o++) {
            double acc = 0.0;
            for (int s = 0; s < n; s++)
                acc += dy[(long)s * out + o];
            dbias[o] = (float)acc;
        }
    if (dx)
        for (int s = 0; s < n; s++)
            for (int i = 0; i < in; i++) {
                double acc = 0.0;
                for (int o = 0; o < out; o++)
                    acc += (double)dy[(long)s * out + o] * k[(long)i * out + o];
                dx[(long)s * in + i] = (float)acc;
            }
}

static double act1(int act, double a, double x) {
    switch (act) {
    case CK_ACT_RELU:
        return x > 0 ? x : 0;
    case CK_ACT_SIGMOID:
        return 1 / (1 + exp(-x));
    case CK_ACT_TANH:
        return tanh(x);
    case CK_ACT_ELU:
        return x > 0 ? x : a * (exp(x) - 1);
    case CK_ACT_LEAKY_RELU:
        return x > 0 ? x : a * x;
    case CK_ACT_GELU:
        return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    case CK_ACT_SWISH:
        return x / (1 + exp(-x));
    default:
        return x;
    }
}

/* Derivatives from the definitions (left derivative at the kinks, as TF). */
static double dact1(int act, double a, double x) {
    const double sg = 1 / (1 + exp(-x));
    switch (act) {
    case CK_ACT_RELU:
        return x > 0 ? 1 : 0;
    case CK_ACT_SIGMOID:
        return sg * (1 - sg);
    case CK_ACT_TANH:
        return 1 - tanh(x) * tanh(x);
    case CK_ACT_ELU:
        return x > 0 ? 1 : a * exp(x);
    case CK_ACT_LEAKY_RELU:
        return x > 0 ? 1 : a;
    case CK_ACT_GELU:
        return 0.5 * (1 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2 * M_PI);
    case CK_ACT_SWISH:
        return sg + x * sg * (1 - sg);
    default:
        return 1;
    }
}

static void softmax_row(const float *x, double *p, int c) {
    double mx = x[0], sum = 0;
    for (int j = 1; j < c; j++)
        mx = x[j] > mx ? x[j] : mx;
    for (int j = 0; j < c; j++)
        sum += p[j] = exp((double)x[j] - mx);
    for (int j = 0; j < c; j++)
        p[j] /= sum;
}

#define REF_MAX_C 1024

void ref_activation_forward(int act, float alpha, const float *x, float *y, size_t count, int c) {
    if (act == CK_ACT_SOFTMAX) {
        double p[REF_MAX_C];
        for (size_t r = 0; r < count / c; r++) {
            softmax_row(x + r * c, p, c);
            for (int j = 0; j < c; j++)
                y[r * c + j] = (float)p[j];
        }
        return;
    }
    for (size_t i = 0; i < count; i++)
        y[i] = (float)act1(act, alpha, x[i]);
}

void ref_activation_backward(int act, float alpha, const float *x, const float *dy, float *dx,
                             size_t count, int c) {
    if (act == CK_ACT_SOFTMAX) {
        double p[REF_MAX_C];
        for (size_t r = 0; r < count / c; r++) {
            double dot = 0;
            softmax_row(x + r * c, p, c);
            for (int j = 0; j < c; j++)
                dot += p[j] * dy[r * c + j];
            for (int j = 0; j < c; j++)
                dx[r * c + j] = (float)(p[j] * (dy[r * c + j] - dot));
        }
        return;
    }
    for (size_t i = 0; i < count; i++)
        dx[i] = (float)(dy[i] * dact1(act, alpha, x[i]));
}

void ref_softmax_xent(int n, int classes, const float *logits, const int32_t *labels,
                      float *dlogits, double *loss_sum, int *correct) {
    double p[REF_MAX_C], total = 0;
    int hits = 0;
    for (int s = 0; s < n; s++) {
        const float *r = logits + (long)s * classes;
        int best = 0;
        softmax_row(r, p, classes);
        for (int j = 1; j < classes; j++)
            best = r[j] > r[best] ? j : best;
        hits += best == labels[s];
        total += -log(p[labels[s]]);
        if (dlogits)
            for (int j = 0; j < classes; j++)
                dlogits[(long)s * classes + j] = (float)((p[j] - (j == labels[s])) / n);
    }
    *loss_sum = total;
    *correct = hits;
}

void ref_adam(float *p, const float *g, float *m, float *v, size_t count, float lr, float b1,
              float b2, float eps, float weight_decay, long step) {
    const double alpha = lr * sqrt(1 - pow(b2, (double)step)) / (1 - pow(b1, (double)step));
    for (size_t i = 0; i < count; i++) {
        double pi = p[i] - (double)lr * weight_decay * p[i];
        const double mi = b1 * (double)m[i] + (1 - (double)b1) * g[i];
        const double vi = b2 * (double)v[i] + (1 - (double)b2) * g[i] * (double)g[i];
        m[i] = (float)mi;
        v[i] = (float)vi;
        p[i] = (float)(pi - alpha * mi / (sqrt(vi) + eps));
    }
}

void ref_sgd(float *p, const float *g, float *vel, size_t count, float lr, float momentum,
             int nesterov, float weight_decay) {
    for (size_t i = 0; i < count; i++) {
        const double pi = p[i] - (double)lr * weight_decay * p[i];
        const double vi = (vel ? momentum * (double)vel[i] : 0.0) - (double)lr * g[i];
        if (vel)
            vel[i] = (float)vi;
        p[i] = (float)(pi + (nesterov ? momentum * vi - (double)lr * g[i] : vi));
    }
}

void ref_adadelta(float *p, const float *g, float *ag, float *ad, size_t count, float lr, float rho,
                  float eps, float weight_decay) {
    for (size_t i = 0; i < count; i++) {
        const double gi = g[i], pi = p[i] - (double)lr * weight_decay * p[i];
        const double a = rho * (double)ag[i] + (1.0 - rho) * gi * gi;
        const double delta = -sqrt((double)ad[i] + eps) * gi / sqrt(a + eps);
        ag[i] = (float)a;
        ad[i] = (float)(rho * (double)ad[i] + (1.0 - rho) * delta * delta);
        p[i] = (float)(pi + lr * delta);
    }
}

void ref_rmsprop(float *p, const float *g, float *vel, float *aux, size_t count, float lr,
                 float rho, float eps, float momentum, int centered, float weight_decay) {
    for (size_t i = 0; i < count; i++) {
        const double gi = g[i], pi = p[i] - (double)lr * weight_decay * p[i];
        const double vi = rho * (double)vel[i] + (1.0 - rho) * gi * gi;
        double den = vi + eps;
        vel[i] = (float)vi;
        if (centered) {
            const double ai = rho * (double)aux[i] + (1.0 - rho) * gi;
            aux[i] = (float)ai;
            den = vi - ai * ai + eps;
        }
        const double inc = lr * gi / sqrt(den);
        if (momentum > 0.0f) {
            const double mi = momentum * (double)aux[i] + inc;
            aux[i] = (float)mi;
            p[i] = (float)(pi - mi);
        } else {
            p[i] = (float)(pi - inc);
        }
    }
}

void ref_rescale(const float *x, const float *dy, float *y, float *dx, size_t count, float scale,
                 float offset) {
    for (size_t i = 0; i < count; i++) {
        y[i] = (float)((double)x[i] * scale + offset);
        dx[i] = (float)((double)dy[i] * scale);
    }
}

void ref_pad(const float *src, float *dst, int n, int h, int w, int c, int pt, int pl, int hp,
             int wp) {
    for (int s = 0; s < n; s++)
        for (int y = 0; y < hp; y++)
            for (int x = 0; x < wp; x++)
                for (int ch = 0; ch < c; ch++) {
                    const int sy = y - pt, sx = x - pl;
                    const int in = sy >= 0 && sy < h && sx >= 0 && sx < w;
                    dst[(((long)s * hp + y) * wp + x) * c + ch] =
                        in ? src[(((long)s * h + sy) * w + sx) * c + ch] : 0.0f;
                }
}

void ref_bn_forward_training(long rows, int c, const float *x, const float *gamma,
                             const float *beta, float eps, float factor, int unbiased, int act,
                             float *y, float *running_mean, float *running_var, float *saved_mean,
                             float *saved_invstd) {
    for (int ch = 0; ch < c; ch++) {
        double mean = 0, var = 0;
        for (long r = 0; r < rows; r++)
            mean += x[r * c + ch];
        mean /= rows;
        for (long r = 0; r < rows; r++)
            var += (x[r * c + ch] - mean) * (x[r * c + ch] - mean);
        var /= rows;
        const double invstd = 1 / sqrt(var + eps);
        for (long r = 0; r < rows; r++) {
            const double pre = gamma[ch] * (x[r * c + ch] - mean) * invstd + beta[ch];
            y[r * c + ch] = (float)(act == CK_ACT_RELU && pre < 0 ? 0 : pre);
        }
        const double v = unbiased && rows > 1 ? var * rows / (rows - 1) : var;
        running_mean[ch] = (float)(running_mean[ch] + factor * (mean - running_mean[ch]));
        running_var[ch] = (float)(running_var[ch] + factor * (v - running_var[ch]));
        saved_mean[ch] = (float)mean;
        saved_invstd[ch] = (float)invstd;
    }
}

void ref_bn_forward_inference(long rows, int c, const float *x, const float *gamma,
                              const float *beta, const float *running_mean,
                              const float *running_var, float eps, int act, float *y) {
    for (int ch = 0; ch < c; ch++) {
        const double invstd = 1 / sqrt((double)running_var[ch] + eps);
        for (long r = 0; r < rows; r++) {
            const double pre =
                gamma[ch] * (x[r * c + ch] - (double)running_mean[ch]) * invstd + beta[ch];
            y[r * c + ch] = (float)(act == CK_ACT_RELU && pre < 0 ? 0 : pre);
        }
    }
}

/* With g = dy * act'(pre) and xhat = (x - mean) invstd: dbeta = sum g, dgamma = sum g xhat,
 * dx = gamma invstd (g - dbeta / M - xhat dgamma / M). */
void ref_bn_backward(long rows, int c, const float *x, const float *dy, const float *gamma,
                     const float *beta, const float *saved_mean, const float *saved_invstd, int act,
                     float *dx, float *dgamma, float *dbeta) {
    for (int ch = 0; ch < c; ch++) {
        const double mean = saved_mean[ch], invstd = saved_invstd[ch];
        double sg = 0, sgx = 0;
        for (long r = 0; r < rows; r++) {
            const double xh = (x[r * c + ch] - mean) * invstd, pre = gamma[ch] * xh + beta[ch];
            const double g = act == CK_ACT_RELU && pre <= 0 ? 0 : dy[r * c + ch];
            sg += g;
            sgx += g * xh;
        }
        for (long r = 0; r < rows; r++) {
            const double xh = (x[r * c + ch] - mean) * invstd, pre = gamma[ch] * xh + beta[ch];
            const double g = act == CK_ACT_RELU && pre <= 0 ? 0 : dy[r * c + ch];
            dx[r * c + ch] = (float)(gamma[ch] * invstd * (g - sg / rows - xh * sgx / rows));
        }
        dgamma[ch] = (float)sgx;
        dbeta[ch] = (float)sg;
    }
}

void ref_kernel_layout(const float *hwio, float *dst, int khw, int cin, int cout, int kcrs) {
    for (int p = 0; p < khw; p++)
        for (int c = 0; c < cin; c++)
            for (int o = 0; o < cout; o++)
                dst[kcrs ? ((long)o * cin + c) * khw + p : ((long)o * khw + p) * cin + c] =
                    hwio[((long)p * cin + c) * cout + o];
}

void ref_dropout_mask(int spatial, uint64_t seed, uint64_t offset, float rate, int n, int c, int h,
                      int w, uint8_t *keep) {
    const uint32_t t = ck_dropout_threshold(rate);
    if (spatial) {
        for (long g = 0; g < (long)n * c; g++)
            keep[g] = (uint8_t)ck_spatial_keep(seed, offset, t, (uint64_t)g);
        return;
    }
    for (int s = 0; s < n; s++)
        for (int ch = 0; ch < c; ch++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    keep[(((long)s * c + ch) * h + y) * w + x] =
                        (uint8_t)ck_element_keep(seed, offset, t, s, ch, y, x, c, h, w);
}

void ref_dropout_apply(int spatial, const uint8_t *keep, float rate, int n, int c, int h, int w,
                       const float *x, float *y) {
    const float scale = 1.0f / (1.0f - rate);
    for (int s = 0; s < n; s++)
        for (int y0 = 0; y0 < h; y0++)
            for (int x0 = 0; x0 < w; x0++)
                for (int ch = 0; ch < c; ch++) {
                    const long e = (((long)s * h + y0) * w + x0) * c + ch;
                    const int k = spatial ? keep[(long)s * c + ch]
                                          : keep[(((long)s * c + ch) * h + y0) * w + x0];
                    y[e] = x[e] * (k ? scale : 0.0f);
                }
}

void ref_bf16_round(const float *x, float *y, size_t count) {
    for (size_t i = 0; i < count; ++i) {
        if (isnan(x[i])) {
            uint32_t u;
            memcpy(&u, &x[i], sizeof u);
            u = (u & 0xFFFF0000u) | 0x00400000u;
            memcpy(&y[i], &u, sizeof u);
            continue;
        }
        if (isinf(x[i]) || x[i] == 0.0f) {
            y[i] = x[i];
            continue;
        }
        int e;
        (void)frexp((double)x[i], &e); /* |x| in [2^(e-1), 2^e) */
        /* 8 significant bits: quantum 2^(e-8); below the normal range bf16's fixed 2^-133 */
        const double q = ldexp(1.0, (e < -125 ? -125 : e) - 8);
        const double r = nearbyint((double)x[i] / q) * q; /* x / q is exact: a 24-bit integer */
        y[i] = fabs(r) >= ldexp(1.0, 128) ? copysignf(INFINITY, x[i]) : (float)r;
    }
}
