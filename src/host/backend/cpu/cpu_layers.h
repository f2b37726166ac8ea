/*
 * CPU reference of the layers of a Keras Sequential CNN, forward and backward, on raw host float
 * arrays. Internal header (not installed): used by the model code and the tests.
 *
 * Conventions
 *  - Images are NHWC (channels last, Keras order): element (n, h, w, c) of an (N, H, W, C) array
 *    is at ((n * H + h) * W + w) * C + c. Conv kernels are Keras HWIO (kh, kw, cin, cout), Dense
 *    kernels are (in, out), row-major.
 *  - Gradient outputs (dx, dk, dbias, ...) are OVERWRITTEN, never accumulated into.
 *  - Preconditions (non-NULL pointers unless said otherwise, sizes >= 1, geometry from
 *    ck_conv_geom_make, labels in [0, classes)) are the caller's job: nothing here validates or
 *    reports errors. No function allocates, prints or keeps state between calls.
 *  - Outputs must not overlap inputs unless a function says they may.
 *
 * Threads and determinism
 *  - Loops run with OpenMP using the calling thread's default team size (omp_set_num_threads /
 *    OMP_NUM_THREADS). Work is split so that every output element is computed by one thread in a
 *    fixed order and every reduction (bias gradients, GAP, losses) runs in a fixed order in
 *    double: results are bit-identical for any OpenMP thread count.
 *  - Conv2D cuts the batch into cache-sized tiles of whole samples dealt to a fixed number of
 *    groups (a function of the shapes only); each group runs on one thread of the OpenMP team and
 *    calls cblas_sgemm from inside the region, where the OpenMP build of OpenBLAS (the one the
 *    build links) runs single-threaded; the kernel gradient is summed per group in tile order,
 *    then over groups in group order. Conv2D results of batches of two or more samples are
 *    therefore bit-identical for any OpenMP and OpenBLAS thread count. (One-sample batches, 1x1
 *    stride-1 kernels and samples whose im2col exceeds CK_CONV_SAMPLE_MAX_FLOATS call
 *    multi-threaded GEMMs from the calling thread instead, like Dense.)
 *  - Dense uses one cblas_sgemm from the calling thread, with a call sequence that depends only
 *    on the shapes: bit-identical run to run for a fixed OpenBLAS thread count. A GEMM split over
 *    a different number of threads can differ in the last bits (measured: ~1e-7 relative). The
 *    library never changes the OpenBLAS thread count (process-wide state): an application that
 *    needs bit-identical results across machines/thread counts sets OPENBLAS_NUM_THREADS (or
 *    calls openblas_set_num_threads) itself; 1 is the portable choice.
 */
#ifndef CNNKIT_CPU_LAYERS_H
#define CNNKIT_CPU_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "ck_geom.h"
#include "cnnkit/cnnkit.h" /* ck_activation */
#include "cnnkit/model.h"  /* ck_initializer */

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Geometry of a Conv2D or a pooling layer: ck_conv_geom (ck_geom.h, shared with the kernels).
 * ------------------------------------------------------------------------------------------- */
/* Fills g with the Keras/TensorFlow geometry:
 *   valid: oh = floor((h - kh) / sh) + 1 (empty when h < kh), no padding;
 *   same:  oh = ceil(h / sh), pad_total = max((oh - 1) * sh + kh - h, 0),
 *          pad_top = pad_total / 2 (the odd extra row goes to the bottom), likewise for w.
 * Returns 0 on success, -1 (g untouched) when a size or stride is < 1 or the output would be
 * empty. Padding is always < kernel size, so every window holds at least one real cell. */
int ck_conv_geom_make(ck_conv_geom *g, int n, int h, int w, int cin, int cout, int kh, int kw,
                      int sh, int sw, int same_padding);

/* ---------------------------------------------------------------------------------------------
 * Conv2D: x (n, h, w, cin), kernel k (kh, kw, cin, cout) HWIO, bias (cout), y (n, oh, ow, cout).
 *   y[n, i, j, o] = bias[o] + sum_{a, b, c} x[n, i*sh - pad_top + a, j*sw - pad_left + b, c]
 *                                          * k[a, b, c, o]        (padded cells read as 0)
 * Implementation: im2col + cblas_sgemm. Samples whose im2col has at most
 * CK_CONV_SAMPLE_MAX_FLOATS floats run tiled: tiles of whole samples with an im2col of about
 * CK_CONV_TILE_FLOATS floats (cache-sized; at least one sample, and at least
 * min(n, CK_CONV_GROUPS) tiles), built, multiplied and (backward)
 * scattered back while in cache, in up to CK_CONV_GROUPS groups run in parallel (see "Threads and
 * determinism" above). Larger samples run in chunks of whole samples under CK_CONV_WS_MAX_FLOATS
 * floats (never less than one sample), one multi-threaded GEMM per chunk.
 * 1x1 stride-1 kernels use x as the im2col: one GEMM, no workspace.
 * ------------------------------------------------------------------------------------------- */
#define CK_CONV_WS_MAX_FLOATS ((size_t)1 << 24)     /* 64 MiB: chunk cap of large samples */
#define CK_CONV_SAMPLE_MAX_FLOATS ((size_t)1 << 20) /* 4 MiB: largest im2col sample tiled */
#define CK_CONV_TILE_FLOATS ((size_t)1 << 16)       /* 256 KiB: target im2col tile */
#define CK_CONV_GROUPS 16                           /* parallel groups (and slots) at most */

/* Floats of workspace needed by forward and backward (the same buffer size serves both):
 * groups * (tile im2col + kh*kw*cin*cout kernel-gradient partial), without the partial when there
 * is one group (a one-sample batch, or samples larger than CK_CONV_SAMPLE_MAX_FLOATS: one chunk's
 * im2col). 0 for 1x1 kernels with stride 1 (x is used in place; ws may then be NULL).
 * Non-decreasing in g->n: the size for the largest batch serves every smaller one. */
size_t ck_cpu_conv2d_workspace_floats(const ck_conv_geom *g);

/* y[r, j] += bias[j] in fp32 for r < rows, j < c: the bias a bf16 layer adds after rounding its
 * product (docs/precision.md), as the GPU's ck_cuda_bias_add does. */
void ck_cpu_bias_add(size_t rows, int c, const float *bias, float *y);

/* bias may be NULL (use_bias=False). */
void ck_cpu_conv2d_forward(const ck_conv_geom *g, const float *x, const float *k, const float *bias,
                           float *y, float *ws);

/* Gradients of the forward, given dy (n, oh, ow, cout):
 *   dx (n, h, w, cin): NULL = not computed (first layer);
 *   dk (kh, kw, cin, cout): always computed;
 *   dbias (cout): NULL = not computed (no bias). Summed in double over n*oh*ow.
 * All are overwritten. */
void ck_cpu_conv2d_backward(const ck_conv_geom *g, const float *x, const float *k, const float *dy,
                            float *dx, float *dk, float *dbias, float *ws);

/* ---------------------------------------------------------------------------------------------
 * MaxPooling2D / AveragePooling2D: x (n, h, w, c), y (n, oh, ow, c) with c = g->cin.
 * Padded cells are excluded: max takes the maximum of the real cells; average divides by the
 * number of real cells of the window (TensorFlow's 'same' average pooling).
 * ------------------------------------------------------------------------------------------- */
void ck_cpu_pool_forward(const ck_conv_geom *g, int is_max, const float *x, float *y);

/* dx (overwritten) from x and dy. Max: each dy goes to the first maximal real cell of its window
 * in row-major scan order, recomputed from x; overlapping windows add up. Average: dy / count to
 * every real cell of the window. */
void ck_cpu_pool_backward(const ck_conv_geom *g, int is_max, const float *x, const float *dy,
                          float *dx);

/* ---------------------------------------------------------------------------------------------
 * GlobalAveragePooling2D: x (n, hw, c) -> y (n, c), mean over hw summed in double.
 * ------------------------------------------------------------------------------------------- */
void ck_cpu_gap_forward(int n, int hw, int c, const float *x, float *y);
/* dx (n, hw, c) = dy (n, c) / hw, overwritten. */
void ck_cpu_gap_backward(int n, int hw, int c, const float *dy, float *dx);

/* ---------------------------------------------------------------------------------------------
 * Dense: x (n, in), kernel k (in, out), bias (out) or NULL, y (n, out) = x k + bias.
 * Flatten needs no code: an NHWC (n, h, w, c) array already is (n, h*w*c) in Keras order.
 * ------------------------------------------------------------------------------------------- */
void ck_cpu_dense_forward(int n, int in, int out, const float *x, const float *k, const float *bias,
                          float *y);
/* dx (n, in) = dy k^T (NULL = skip), dk (in, out) = x^T dy, dbias (out) = column sums of dy in
 * double (NULL = skip). All overwritten. */
void ck_cpu_dense_backward(int n, int in, int out, const float *x, const float *k, const float *dy,
                           float *dx, float *dk, float *dbias);

/* ---------------------------------------------------------------------------------------------
 * Activations, element-wise over count values (softmax: over each run of c consecutive values,
 * i.e. the last axis; count must be a multiple of c. c is ignored by the other activations).
 *   NONE (linear)  y = x
 *   RELU           y = max(x, 0)
 *   SIGMOID        y = 1 / (1 + exp(-x))
 *   TANH           y = tanh(x)
 *   SOFTMAX        y = exp(x - max) / sum exp(x - max)      (per row of c)
 *   ELU            y = x > 0 ? x : alpha * (exp(x) - 1)     (alpha > 0; Keras default 1)
 *   LEAKY_RELU     y = x > 0 ? x : alpha * x                (Keras LeakyReLU default 0.3)
 *   GELU           y = x/2 * (1 + erf(x / sqrt(2)))         (exact, approximate=False)
 *   SWISH          y = x * sigmoid(x)
 * alpha is read by ELU and LEAKY_RELU only. The per-element math is ck_act_fwd_any /
 * ck_act_bwd_any in ck_math.h, shared with the CUDA kernels.
 * ------------------------------------------------------------------------------------------- */

/* y may alias x (in place). */
void ck_cpu_activation_forward(ck_activation act, float alpha, const float *x, float *y,
                               size_t count, int c);

/* dx = dy * f'(x). Which saved array each activation reads (the other may be NULL, or may have
 * been overwritten by an in-place forward):
 *   needs y only: RELU (y > 0), SIGMOID y(1-y), TANH 1-y^2, SOFTMAX y*(dy - <dy, y>),
 *                 ELU (y > 0 ? 1 : y + alpha; needs alpha > 0)
 *   needs x only: LEAKY_RELU, GELU, SWISH
 *   needs neither: NONE
 * (ck_act_bwd_uses_x / ck_act_bwd_uses_y in ck_math.h tell which.) dx may alias dy, x or y.
 * At the kinks (x = 0) RELU and LEAKY_RELU take the left derivative (0 resp. alpha) as TF. */
void ck_cpu_activation_backward(ck_activation act, float alpha, const float *x, const float *y,
                                const float *dy, float *dx, size_t count, int c);

/* ---------------------------------------------------------------------------------------------
 * Losses: sparse categorical cross-entropy of n samples with integer labels in [0, classes).
 *
 * When the last layer is a softmax (Dense(activation='softmax') or Activation('softmax')) the
 * model should NOT run the softmax forward/backward: it should pass the pre-softmax logits to
 * ck_cpu_softmax_xent (fused), which is exact and stable, and gives dlogits = (p - onehot) / n.
 * This is also what Keras does (it recovers the logits of a softmax output, `_keras_logits`).
 * ck_cpu_xent_from_probs is for outputs that are probabilities from elsewhere.
 * Losses are summed (not averaged) in double, over samples in order; the mean loss of the batch
 * is *loss_sum / n. Any of dlogits/dprobs, loss_sum, correct may be NULL.
 * ------------------------------------------------------------------------------------------- */

/* logits (n, classes). loss_sum = sum_i -log softmax(logits_i)[label_i] (max-subtracted
 * log-sum-exp); correct = number of samples whose first maximal logit is at the label;
 * dlogits (n, classes) = (softmax - onehot) / n (gradient of the mean loss). dlogits may alias
 * logits. */
void ck_cpu_softmax_xent(int n, int classes, const float *logits, const int32_t *labels,
                         float *dlogits, double *loss_sum, int *correct);

/* probs (n, classes) as Keras sparse_categorical_crossentropy(from_logits=False):
 *   q = clip(p, eps, 1 - eps) with eps = CK_XENT_EPS, loss_i = -log(q[label] / sum_j q[j])
 * (Keras clips, takes log(q) as logits). dprobs (NULL ok) = d(mean loss)/dp, zero where p was
 * clipped away. correct as above (argmax of p). */
#define CK_XENT_EPS 1e-7
void ck_cpu_xent_from_probs(int n, int classes, const float *probs, const int32_t *labels,
                            float *dprobs, double *loss_sum, int *correct);

/* ---------------------------------------------------------------------------------------------
 * Optimizers: one update of count parameters p with gradient g (Keras semantics).
 * Decoupled weight decay (weight_decay > 0; the caller passes 0 for biases if it wants) is
 * applied first, as Keras' optimizers do: p -= lr * weight_decay * p, then the update.
 * ------------------------------------------------------------------------------------------- */

/* Adam, Keras: step t >= 1 (1-based count of updates, including this one);
 *   m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2,
 *   alpha = lr sqrt(1 - b2^t) / (1 - b1^t) (computed in double),
 *   p -= alpha m / (sqrt(v) + eps).
 * m and v (count each) start at zero and are updated in place. */
void ck_cpu_adam_update(float *p, const float *g, float *m, float *v, size_t count, float lr,
                        float beta1, float beta2, float eps, float weight_decay, long step);

/* SGD, Keras: vel = momentum vel - lr g;  p += nesterov ? momentum vel - lr g : vel.
 * vel (count, starts at zero) may be NULL when momentum == 0 (then p -= lr g). */
void ck_cpu_sgd_update(float *p, const float *g, float *vel, size_t count, float lr, float momentum,
                       int nesterov, float weight_decay);

/* RMSprop, Keras: vel = rho vel + (1 - rho) g^2; inc = lr g / sqrt(vel + eps) (centered:
 * sqrt(vel - avg^2 + eps), avg = rho avg + (1 - rho) g); p -= inc, or with momentum
 * mom = momentum mom + inc, p -= mom. vel (count, starts at zero); aux (count, starts at zero)
 * holds the momentum or the centered average (not both), NULL when neither is used. */
void ck_cpu_rmsprop_update(float *p, const float *g, float *vel, float *aux, size_t count, float lr,
                           float rho, float eps, float momentum, int centered, float weight_decay);

/* Adadelta, Keras: ag = rho ag + (1 - rho) g^2; delta = -sqrt(ad + eps) g / sqrt(ag + eps);
 * ad = rho ad + (1 - rho) delta^2; p += lr delta. ag and ad (count each) start at zero. */
void ck_cpu_adadelta_update(float *p, const float *g, float *ag, float *ad, size_t count, float lr,
                            float rho, float eps, float weight_decay);

/* ---------------------------------------------------------------------------------------------
 * Initialization
 * ------------------------------------------------------------------------------------------- */

/* A Keras variance-scaling initializer (ck_initializer: glorot, he or lecun, uniform or normal;
 * cnnkit/model.h) for fans fan_in, fan_out: glorot_uniform is ck_glorot_uniform's values; the
 * other uniforms draw the same way with their limit; the normals are truncated at two standard
 * deviations (each value redrawn until it falls inside), the standard deviation before the
 * truncation being sqrt(scale / fan) / 0.87962566103423978 as in Keras, so that the values' own
 * is sqrt(scale / fan). Counter-based: value i depends on (seed, stream, i) only. */
void ck_init_random(float *w, size_t count, ck_initializer init, long long fan_in,
                    long long fan_out, uint64_t seed, uint64_t stream);

/* Keras GlorotUniform: w[i] ~ U[-limit, limit), limit = sqrt(6 / (fan_in + fan_out)).
 * Conv2D: fan_in = kh*kw*cin, fan_out = kh*kw*cout; Dense: fan_in = in, fan_out = out.
 * Counter-based and deterministic: value i uses word i % 4 of
 * ck_philox4x32_10(counter = {i/4 lo, i/4 hi, stream lo, stream hi}, key = {seed lo, seed hi}),
 * u = (word >> 8) * 2^-24, w = limit * (2u - 1). Pick a distinct stream per tensor. */
void ck_glorot_uniform(float *w, size_t count, int fan_in, int fan_out, uint64_t seed,
                       uint64_t stream);

#ifdef __cplusplus
}
#endif
#endif /* CNNKIT_CPU_LAYERS_H */
