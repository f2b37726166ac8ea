/*
 * Per-element math shared by the CPU reference (src/host, compiled as C) and the CUDA kernels
 * (src/kernels, compiled by nvcc). Everything here is a static inline function usable on both
 * sides, so the two paths cannot drift apart: the dropout masks in particular are computed by
 * these functions only, in integers, and are therefore bit-identical on CPU and GPU.
 */
#ifndef CNNKIT_CK_MATH_H
#define CNNKIT_CK_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h> /* memcpy: bit casts on the host */

#include "cnnkit/cnnkit.h" /* ck_activation */

#if defined(__CUDACC__)
#define CK_HD __host__ __device__ __forceinline__
#else
#define CK_HD static inline
#endif

/* Code compiled for the device: nvcc's device pass, or the kernels under kemu (tests/kemu), which
 * take the same intrinsics. */
#if defined(__CUDA_ARCH__) || defined(KEMU_DEVICE)
#define CK_DEVICE_CODE 1
#endif

/* a * b rounded on its own: nvcc would otherwise fuse it with a following add (the C files build
 * with -ffp-contract=off). */
CK_HD float ck_mul_rn(float a, float b) {
#ifdef CK_DEVICE_CODE
    return __fmul_rn(a, b); /* never contracted into an FMA */
#else
    return a * b;
#endif
}
CK_HD double ck_dmul_rn(double a, double b) {
#ifdef CK_DEVICE_CODE
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}

/* ------------------------------------------------------------------------------------------
 * Philox4x32-10 (Salmon et al., SC'11): counter-based, 128-bit counter, 64-bit key.
 * ---------------------------------------------------------------------------------------- */
#define CK_PHILOX_M0 0xD2511F53u
#define CK_PHILOX_M1 0xCD9E8D57u
#define CK_PHILOX_W0 0x9E3779B9u
#define CK_PHILOX_W1 0xBB67AE85u

typedef struct ck_u32x4 {
    uint32_t v[4];
} ck_u32x4;

CK_HD void ck_philox_round(uint32_t c[4], uint32_t k0, uint32_t k1) {
    uint64_t p0 = (uint64_t)CK_PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)CK_PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c[1] ^ k0;
    uint32_t n2 = hi0 ^ c[3] ^ k1;
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
}

/* philox4x32_10(counter = {c0, c1, c2, c3}, key = {k0, k1}) */
CK_HD ck_u32x4 ck_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                uint32_t k1) {
    uint32_t c[4] = {c0, c1, c2, c3};
    for (int r = 0; r < 9; ++r) {
        ck_philox_round(c, k0, k1);
        k0 += CK_PHILOX_W0;
        k1 += CK_PHILOX_W1;
    }
    ck_philox_round(c, k0, k1);
    ck_u32x4 out;
    out.v[0] = c[0];
    out.v[1] = c[1];
    out.v[2] = c[2];
    out.v[3] = c[3];
    return out;
}

/* The four words of draw call `call` of stream (seed, offset): counter = {call, offset}. */
CK_HD ck_u32x4 ck_dropout_call(uint64_t seed, uint64_t offset, uint64_t call) {
    return ck_philox4x32_10((uint32_t)call, (uint32_t)(call >> 32), (uint32_t)offset,
                            (uint32_t)(offset >> 32), (uint32_t)seed, (uint32_t)(seed >> 32));
}

/* The RNG offset of the dropout of user layer `layer` (< 4096) at training step `step` (the steps
 * taken before it): unique per (step, layer). The host computes it for the CPU step and for the
 * by-value descriptors; the CUDA training step's kernels compute it from the step packet in device
 * memory (ck_kstep), so that a step captured as a CUDA graph draws each replay's masks. */
CK_HD uint64_t ck_dropout_layer_offset(long long step, int layer) {
    return (uint64_t)step * 4096u + (uint64_t)layer;
}

/* Drop threshold: a unit with word u is kept when u >= threshold, so P(drop) = threshold / 2^32.
 * rate is validated to [0, 1) by the caller. Computed once on the host. */
CK_HD uint32_t ck_dropout_threshold(float rate) {
    double t = (double)rate * 4294967296.0 + 0.5;
    if (!(t > 0.0))
        return 0u;
    if (t >= 4294967295.0)
        return 0xFFFFFFFFu;
    return (uint32_t)t;
}

/* Scale applied to kept units, computed once on the host: 1 / (1 - rate) in fp32. */
CK_HD float ck_dropout_scale(float rate) {
    return 1.0f / (1.0f - rate);
}

/* SpatialDropout: unit g = n * C + c, word g % 4 of call g / 4. */
CK_HD int ck_spatial_keep(uint64_t seed, uint64_t offset, uint32_t threshold, uint64_t g) {
    ck_u32x4 r = ck_dropout_call(seed, offset, g >> 2);
    return r.v[g & 3u] >= threshold;
}

/* Element dropout: the call for the four units (n, c, h, 4q .. 4q+3) of a row is
 *   call = ((n * C + c) * H + h) * ceil(W / 4) + q,   word = w % 4.
 * Rows never share a call, so a kernel can take four neighbours along W in either layout. */
CK_HD uint64_t ck_element_call(int n, int c, int h, int w, int C, int H, int W) {
    uint64_t wq = (uint64_t)((W + 3) >> 2);
    return (((uint64_t)n * (uint64_t)C + (uint64_t)c) * (uint64_t)H + (uint64_t)h) * wq +
           (uint64_t)(w >> 2);
}

CK_HD int ck_element_keep(uint64_t seed, uint64_t offset, uint32_t threshold, int n, int c, int h,
                          int w, int C, int H, int W) {
    ck_u32x4 r = ck_dropout_call(seed, offset, ck_element_call(n, c, h, w, C, H, W));
    return r.v[w & 3] >= threshold;
}

/* A shard of a larger batch whose sample 0 is the batch's sample sample0 (ck_dropout_desc):
 * its sample n draws sample0 + n's mask, so its spatial units g and its element calls are the
 * whole batch's shifted by these bases (element rows never share a call, so whole calls shift). */
CK_HD uint64_t ck_spatial_unit0(uint64_t sample0, int C) {
    return sample0 * (uint64_t)C;
}
CK_HD uint64_t ck_element_call0(uint64_t sample0, int C, int H, int W) {
    return sample0 * (uint64_t)C * (uint64_t)H * (uint64_t)((W + 3) >> 2);
}

/* ------------------------------------------------------------------------------------------
 * BatchNorm + activation.
 * Forward applies y = act(fma(x - mean, a, beta)) with a = gamma * invstd, and the backward pass
 * recomputes exactly the same pre-activation to decide the ReLU mask. Centering before the
 * multiply (rather than folding into x * a + (beta - mean * a)) keeps full precision when
 * |mean| >> std.
 * ---------------------------------------------------------------------------------------- */
CK_HD float ck_bn_scale(float gamma, float invstd) {
    return gamma * invstd;
}
CK_HD float ck_bn_preact(float x, float mean, float a, float beta) {
    return fmaf(x - mean, a, beta);
}
/* act: CK_ACT_NONE or CK_ACT_RELU */
CK_HD float ck_act_forward(float pre, int act) {
    return (act == CK_ACT_RELU && !(pre > 0.0f)) ? 0.0f : pre;
}
/* Gradient through the activation given the pre-activation. */
CK_HD float ck_act_backward(float dy, float pre, int act) {
    return (act == CK_ACT_RELU && !(pre > 0.0f)) ? 0.0f : dy;
}
CK_HD float ck_bn_invstd(float var, float eps) {
    return 1.0f / sqrtf(var + eps);
}
/* Running statistic update: r + f * (batch - r). A non-finite batch statistic (NaN/Inf in x)
 * leaves r as it is: the CPU refuses such a batch, the device kernel cannot report it without a
 * synchronization but must not poison the moving statistics either. */
CK_HD float ck_running_update(float running, float batch, float factor) {
    return isfinite(batch) ? running + ck_mul_rn(factor, batch - running) : running;
}

/* Whether a BN in training normalizes with its running statistics (and leaves them) for a batch
 * of m values per channel: only one value, and the desc does not ask for the batch's (mode 2,
 * variance 0, as Keras). The single-device host check and SyncBN's global count (CPU and CUDA)
 * all decide by this. */
CK_HD int ck_bn_single_value_frozen(const ck_bn_desc *d, double m) {
    return m == 1.0 && d->single_value_use_running != 2;
}

/* Backward, per element: dx = k * (g - mean_g - xhat * mean_gx), where g = dL/d(pre) and
 * k = gamma * invstd, mean_g = sum(g)/M, mean_gx = sum(g * xhat)/M (both 0 when the statistics
 * are frozen running statistics). */
CK_HD float ck_bn_backward_dx(float g, float xhat, float k, float mean_g, float mean_gx) {
    return k * (g - mean_g - xhat * mean_gx);
}

/* Chan et al. merge of two (count, mean, M2) partials; counts in float. */
CK_HD void ck_welford_merge(float *n, float *mean, float *m2, float nb, float meanb, float m2b) {
    float na = *n;
    float nt = na + nb;
    if (nb == 0.0f)
        return;
    if (na == 0.0f) {
        *n = nb;
        *mean = meanb;
        *m2 = m2b;
        return;
    }
    float delta = meanb - *mean;
    float fb = nb / nt;
    *mean = *mean + delta * fb;
    *m2 = *m2 + m2b + delta * delta * na * fb;
    *n = nt;
}

/* ------------------------------------------------------------------------------------------
 * Layer activations (act: ck_activation values). Softmax is not per element: callers handle it
 * over the channel axis; here it is treated like NONE by the forward and needs y in backward.
 * ---------------------------------------------------------------------------------------- */

/* Logistic function without overflow for large |x|. */
CK_HD float ck_sigmoidf(float x) {
    if (x >= 0.0f)
        return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}

/* y = act(x); alpha: ELU alpha, LeakyReLU slope. */
CK_HD float ck_act_fwd_any(float x, int act, float alpha) {
    switch (act) {
    case CK_ACT_RELU:
        return x > 0.0f ? x : 0.0f;
    case CK_ACT_SIGMOID:
        return ck_sigmoidf(x);
    case CK_ACT_TANH:
        return tanhf(x);
    case CK_ACT_ELU:
        return x > 0.0f ? x : alpha * expm1f(x);
    case CK_ACT_LEAKY_RELU:
        return x > 0.0f ? x : alpha * x;
    case CK_ACT_GELU:
        return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case CK_ACT_SWISH:
        return x * ck_sigmoidf(x);
    default:
        return x;
    }
}

/* Whether ck_act_bwd_any reads x (LeakyReLU, GELU, swish) resp. y (ReLU, sigmoid, tanh, ELU,
 * softmax). An unused argument may be anything. */
CK_HD int ck_act_bwd_uses_x(int act) {
    return act == CK_ACT_LEAKY_RELU || act == CK_ACT_GELU || act == CK_ACT_SWISH;
}
CK_HD int ck_act_bwd_uses_y(int act) {
    return act == CK_ACT_RELU || act == CK_ACT_SIGMOID || act == CK_ACT_TANH || act == CK_ACT_ELU ||
           act == CK_ACT_SOFTMAX;
}

/* dx = dy * act'(x), from x or y = act(x) as ck_act_bwd_uses_x/y say. ELU uses y (alpha > 0):
 * y > 0 ? 1 : y + alpha. Softmax is not handled here (returns dy). */
CK_HD float ck_act_bwd_any(float dy, float x, float y, int act, float alpha) {
    switch (act) {
    case CK_ACT_RELU:
        return y > 0.0f ? dy : 0.0f;
    case CK_ACT_SIGMOID:
        return dy * (y * (1.0f - y));
    case CK_ACT_TANH:
        return dy * (1.0f - y * y);
    case CK_ACT_ELU:
        return y > 0.0f ? dy : dy * (y + alpha);
    case CK_ACT_LEAKY_RELU:
        return x > 0.0f ? dy : dy * alpha;
    case CK_ACT_GELU: {
        const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        return dy * (cdf + x * pdf);
    }
    case CK_ACT_SWISH: {
        const float s = ck_sigmoidf(x);
        return dy * (s * (1.0f + x * (1.0f - s)));
    }
    default:
        return dy;
    }
}

/* Rescaling (keras.layers.Rescaling): Keras computes inputs * scale + offset in float32, so the
 * product and the sum round separately (ck_mul_rn: nvcc may not fuse them into one FMA). The
 * backward is dy * scale, with no sum: its zeros keep their sign. */
CK_HD float ck_rescale_fwd(float x, float scale, float offset) {
    return ck_mul_rn(x, scale) + offset;
}
CK_HD float ck_rescale_bwd(float dy, float scale) {
    return ck_mul_rn(dy, scale);
}

/* ------------------------------------------------------------------------------------------
 * Softmax and sparse categorical cross-entropy, one row of c values at a time (the CPU loops and
 * the CUDA kernels run one row per thread). Sums run in double in index order.
 * ---------------------------------------------------------------------------------------- */

/* y = softmax(x) over c values; y may alias x. */
CK_HD void ck_softmax_row_fwd(const float *x, float *y, int c) {
    float m = x[0];
    for (int j = 1; j < c; ++j)
        m = x[j] > m ? x[j] : m;
    double sum = 0.0;
    for (int j = 0; j < c; ++j) {
        y[j] = expf(x[j] - m);
        sum += y[j];
    }
    const float inv = (float)(1.0 / sum);
    for (int j = 0; j < c; ++j)
        y[j] = ck_mul_rn(y[j], inv);
}

/* dx = y * (dy - <dy, y>) over c values. */
CK_HD void ck_softmax_row_bwd(const float *y, const float *dy, float *dx, int c) {
    double dot = 0.0;
    for (int j = 0; j < c; ++j)
        dot += ck_dmul_rn(dy[j], y[j]);
    const float d = (float)dot;
    for (int j = 0; j < c; ++j)
        dx[j] = ck_mul_rn(y[j], dy[j] - d);
}

/* Index of the first largest of r[0 .. n). */
CK_HD int ck_argmax_first(const float *r, int n) {
    int best = 0;
    for (int j = 1; j < n; ++j)
        if (r[j] > r[best])
            best = j;
    return best;
}

/* Cross-entropy of softmax(x) against label lab, from the logits x (classes values): returns the
 * loss lse(x) - x[lab], sets *hit = (argmax == lab) and, when d is not NULL, writes
 * d = (softmax(x) - onehot(lab)) * invn (invn = 1 / batch size). */
CK_HD double ck_xent_row(const float *x, int classes, int lab, double invn, float *d, int *hit) {
    const int am = ck_argmax_first(x, classes);
    const double m = x[am];
    double sum = 0.0;
    for (int j = 0; j < classes; ++j)
        sum += exp(x[j] - m);
    const double lse = m + log(sum);
    *hit = am == lab;
    if (d)
        for (int j = 0; j < classes; ++j)
            d[j] = (float)((exp(x[j] - lse) - (j == lab ? 1.0 : 0.0)) * invn);
    return lse - x[lab];
}

/* Keras-style initializer value: 24 high bits of a Philox word -> limit * (2u - 1), u in [0,1). */
CK_HD float ck_uniform_sym(uint32_t word, float limit) {
    const float u = (float)(word >> 8) * (1.0f / 16777216.0f);
    return limit * (2.0f * u - 1.0f);
}

/* ------------------------------------------------------------------------------------------
 * Optimizer updates of one parameter (Keras semantics; see ck_cpu_adam_update,
 * ck_cpu_sgd_update, ck_cpu_rmsprop_update and ck_cpu_adadelta_update in
 * src/host/backend/cpu/cpu_layers.h). The float
 * operations are written out one by one (fmaf nowhere, no expression nvcc could contract
 * differently from the C compiler), so the CPU and the GPU compute the same bits. decay = lr *
 * weight_decay (0 = none); alpha is the bias-corrected step of Adam, computed once per update in
 * double by the caller.
 * ---------------------------------------------------------------------------------------- */
/* Adam's bias-corrected step size of update number step (>= 1; less counts as 1), in double:
 * lr * sqrt(1 - beta2^t) / (1 - beta1^t). Computed once per update on the host. */
CK_HD float ck_adam_alpha(float lr, float beta1, float beta2, long long step) {
    const double t = (double)(step < 1 ? 1 : step);
    return (float)((double)lr * sqrt(1.0 - pow((double)beta2, t)) / (1.0 - pow((double)beta1, t)));
}

CK_HD float ck_adam_elem(float p, float g, float *m, float *v, float alpha, float b1, float b2,
                         float c1, float c2, float eps, float decay) {
    if (decay > 0.0f)
        p -= ck_mul_rn(decay, p);
    const float mi = ck_mul_rn(b1, *m) + ck_mul_rn(c1, g);
    const float vi = ck_mul_rn(b2, *v) + ck_mul_rn(c2, ck_mul_rn(g, g));
    *m = mi;
    *v = vi;
    return p - ck_mul_rn(alpha, mi) / (sqrtf(vi) + eps);
}

/* SGD; vel == NULL: plain p -= lr g. */
CK_HD float ck_sgd_elem(float p, float g, float *vel, float lr, float momentum, int nesterov,
                        float decay) {
    if (decay > 0.0f)
        p -= ck_mul_rn(decay, p);
    const float step = ck_mul_rn(lr, g);
    if (vel) {
        const float vi = ck_mul_rn(momentum, *vel) - step;
        *vel = vi;
        return p + (nesterov ? ck_mul_rn(momentum, vi) - step : vi);
    }
    return p - step;
}

/* RMSprop (Keras 3): vel = rho vel + (1 - rho) g^2; centered: avg = rho avg + (1 - rho) g and
 * the denominator vel - avg^2 + eps, else vel + eps (eps inside the square root, unlike Adam);
 * increment = lr g / sqrt(denominator); momentum > 0: mom = momentum mom + increment, p -= mom.
 * aux is the momentum, or the average gradient when centered (never both); crho = 1 - rho. */
CK_HD float ck_rmsprop_elem(float p, float g, float *vel, float *aux, float lr, float rho,
                            float crho, float eps, float momentum, int centered, float decay) {
    if (decay > 0.0f)
        p -= ck_mul_rn(decay, p);
    const float vi = ck_mul_rn(rho, *vel) + ck_mul_rn(crho, ck_mul_rn(g, g));
    *vel = vi;
    float den = vi + eps;
    if (centered) {
        const float ai = ck_mul_rn(rho, *aux) + ck_mul_rn(crho, g);
        *aux = ai;
        den = (vi - ck_mul_rn(ai, ai)) + eps;
    }
    const float inc = ck_mul_rn(lr, g) / sqrtf(den);
    if (momentum > 0.0f) {
        const float mi = ck_mul_rn(momentum, *aux) + inc;
        *aux = mi;
        return p - mi;
    }
    return p - inc;
}

/* Adadelta (Keras 3): ag = rho ag + (1 - rho) g^2; delta = -(sqrt(ad + eps) g) / sqrt(ag + eps);
 * ad = rho ad + (1 - rho) delta^2; p += lr delta. ag the accumulated squared gradients, ad the
 * accumulated squared updates; crho = 1 - rho. */
CK_HD float ck_adadelta_elem(float p, float g, float *ag, float *ad, float lr, float rho,
                             float crho, float eps, float decay) {
    if (decay > 0.0f)
        p -= ck_mul_rn(decay, p);
    const float a = ck_mul_rn(rho, *ag) + ck_mul_rn(crho, ck_mul_rn(g, g));
    *ag = a;
    const float delta = -(ck_mul_rn(sqrtf(*ad + eps), g) / sqrtf(a + eps));
    *ad = ck_mul_rn(rho, *ad) + ck_mul_rn(crho, ck_mul_rn(delta, delta));
    return p + ck_mul_rn(lr, delta);
}

/* The real (non-padded) cells [*a0, *a1) of a pooling window along one axis: output index i,
 * stride s, kernel k, padding before pad, input extent n. */
CK_HD void ck_pool_range(int i, int s, int k, int pad, int n, int *a0, int *a1) {
    int lo = i * s - pad, hi = i * s - pad + k;
    *a0 = lo < 0 ? 0 : lo;
    *a1 = hi > n ? n : hi;
}

/* One more real cell v into a pooling accumulator (max, or the sum of average pooling). */
CK_HD float ck_pool_acc(float acc, float v, int is_max) {
    return is_max ? (v > acc ? v : acc) : acc + v;
}

/* One cell (u, v), of value xv, of the argmax scan below: the best so far (*bv at (*ba, *bb))
 * changes only on a strictly larger value, so a tie keeps the first cell. The GPU's storage-typed
 * scan (pool.cu) steps through the same rule. */
CK_HD void ck_pool_argmax_step(float xv, int u, int v, float *bv, int *ba, int *bb) {
    if (xv > *bv) {
        *bv = xv;
        *ba = u;
        *bb = v;
    }
}

/* The first largest cell (*ba, *bb) of the window [a0, a1) x [b0, b1), scanned row-major, of one
 * channel of an NHWC image: x points at the channel's value of cell (0, 0); w: image width,
 * c: channels. Max pooling's backward sends the gradient there. */
CK_HD void ck_pool_argmax(const float *x, int w, int c, int a0, int a1, int b0, int b1, int *ba,
                          int *bb) {
    float bv = x[((long long)a0 * w + b0) * c];
    *ba = a0;
    *bb = b0;
    for (int u = a0; u < a1; ++u)
        for (int v = b0; v < b1; ++v)
            ck_pool_argmax_step(x[((long long)u * w + v) * c], u, v, &bv, ba, bb);
}

/* The divisor of average pooling: the real cells of the window [a0, a1) x [b0, b1). */
CK_HD float ck_pool_cells(int a0, int a1, int b0, int b1) {
    return (float)((a1 - a0) * (b1 - b0));
}

/* ------------------------------------------------------------------------------------------
 * bfloat16 storage (issue 16): the top 16 bits of an fp32, rounded to nearest even. Done in
 * integers on both sides (no __float2bfloat16) so host and device agree by construction.
 * ---------------------------------------------------------------------------------------- */
CK_HD uint32_t ck_f32_bits(float x) {
#ifdef CK_DEVICE_CODE
    return __float_as_uint(x);
#else
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
#endif
}
CK_HD float ck_f32_from_bits(uint32_t u) {
#ifdef CK_DEVICE_CODE
    return __uint_as_float(u);
#else
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
#endif
}

/* x rounded to nearest even bf16, as its 16 bits. NaN becomes a quiet NaN of the same sign
 * (plain rounding could carry a signalling NaN's payload into Inf); overflow rounds to Inf. */
CK_HD uint16_t ck_bf16_bits(float x) {
    const uint32_t u = ck_f32_bits(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        return (uint16_t)((u >> 16) | 0x0040u);
    /* Adding 0x7FFF plus the kept lsb carries into the kept bits exactly when the dropped half
     * is above a tie, or a tie with an odd lsb; a carry out of the mantissa bumps the exponent. */
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
CK_HD float ck_bf16_to_float(uint16_t h) {
    return ck_f32_from_bits((uint32_t)h << 16);
}
/* The bf16 value nearest to x (ties to even), as a float: what a bf16 store keeps. */
CK_HD float ck_bf16_round(float x) {
    return ck_bf16_to_float(ck_bf16_bits(x));
}

#endif /* CNNKIT_CK_MATH_H */
