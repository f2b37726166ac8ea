/*
 * Naive reference of the layer math, for the op table (tests/ops): plain loops straight from the
 * definitions in cpu_layers.h, sums in double, no BLAS, no OpenMP, no calls into the library's
 * ops. Only the dropout masks come from src (ck_math.h's Philox): they are a definition, not math
 * to check. NHWC images, HWIO conv kernels, (in, out) dense kernels; outputs are overwritten.
 */
#ifndef CNNKIT_TESTS_REF_H
#define CNNKIT_TESTS_REF_H

#include <stddef.h>
#include <stdint.h>

#include "ck_geom.h"

/* y (n, oh, ow, cout) = bias + sum x * k over the window (padded cells 0); bias may be NULL. */
void ref_conv2d_forward(const ck_conv_geom *g, const float *x, const float *k, const float *bias,
                        float *y);
/* dx (NULL = skip), dk, dbias (NULL = skip) of the forward. */
void ref_conv2d_backward(const ck_conv_geom *g, const float *x, const float *k, const float *dy,
                         float *dx, float *dk, float *dbias);
/* Max / average over the real cells of each window (padding excluded). */
void ref_pool_forward(const ck_conv_geom *g, int is_max, const float *x, float *y);
/* Max: dy to the first maximal real cell in row-major order; average: dy / cells to each. */
void ref_pool_backward(const ck_conv_geom *g, int is_max, const float *x, const float *dy,
                       float *dx);
void ref_gap_forward(int n, int hw, int c, const float *x, float *y);
void ref_gap_backward(int n, int hw, int c, const float *dy, float *dx);
void ref_dense_forward(int n, int in, int out, const float *x, const float *k, const float *bias,
                       float *y);
void ref_dense_backward(int n, int in, int out, const float *x, const float *k, const float *dy,
                        float *dx, float *dk, float *dbias);
/* act: CK_ACT_* values; softmax over rows of c. */
void ref_activation_forward(int act, float alpha, const float *x, float *y, size_t count, int c);
/* dx = dy * f'(x), from the definition of f (x only; y is recomputed). */
void ref_activation_backward(int act, float alpha, const float *x, const float *dy, float *dx,
                             size_t count, int c);
/* Sum of -log softmax(logits)[label], correct count, dlogits = (softmax - onehot) / n. */
void ref_softmax_xent(int n, int classes, const float *logits, const int32_t *labels,
                      float *dlogits, double *loss_sum, int *correct);
/* Keras Adam / SGD / RMSprop, one step, decoupled weight decay first; everything in double. */
void ref_adam(float *p, const float *g, float *m, float *v, size_t count, float lr, float b1,
              float b2, float eps, float weight_decay, long step);
void ref_sgd(float *p, const float *g, float *vel, size_t count, float lr, float momentum,
             int nesterov, float weight_decay);
/* Keras RMSprop, one step (aux: the momentum or the centered average, NULL when neither). */
void ref_adadelta(float *p, const float *g, float *ag, float *ad, size_t count, float lr, float rho,
                  float eps, float weight_decay);
void ref_rmsprop(float *p, const float *g, float *vel, float *aux, size_t count, float lr,
                 float rho, float eps, float momentum, int centered, float weight_decay);
/* dst (n, h + pt + pb, w + pl + pr, c): src at (pt, pl), zeros around. */
void ref_pad(const float *src, float *dst, int n, int h, int w, int c, int pt, int pl, int hp,
             int wp);
/* Rescaling: y = x * scale + offset and dx = dy * scale, each in double, rounded once. */
void ref_rescale(const float *x, const float *dy, float *y, float *dx, size_t count, float scale,
                 float offset);
/* BatchNorm over rows = N*H*W rows of c channels (NHWC), act NONE or RELU after the affine map.
 * Training: batch mean and biased variance, invstd = 1 / sqrt(var + eps), running stats move by
 * factor toward the batch's (unbiased variance when unbiased); inference uses the running ones. */
void ref_bn_forward_training(long rows, int c, const float *x, const float *gamma,
                             const float *beta, float eps, float factor, int unbiased, int act,
                             float *y, float *running_mean, float *running_var, float *saved_mean,
                             float *saved_invstd);
void ref_bn_forward_inference(long rows, int c, const float *x, const float *gamma,
                              const float *beta, const float *running_mean,
                              const float *running_var, float eps, int act, float *y);
void ref_bn_backward(long rows, int c, const float *x, const float *dy, const float *gamma,
                     const float *beta, const float *saved_mean, const float *saved_invstd, int act,
                     float *dx, float *dgamma, float *dbeta);
/* HWIO (khw positions) -> KRSC (kcrs 0: cout, khw, cin) or KCRS (kcrs 1: cout, cin, khw). */
void ref_kernel_layout(const float *hwio, float *dst, int khw, int cin, int cout, int kcrs);
/* y = x * keep / (1 - rate); keep: one byte per unit (spatial: n*C + c; element: NCHW index),
 * from ck_math.h's Philox. x, y NHWC (n, h, w, c). */
void ref_dropout_mask(int spatial, uint64_t seed, uint64_t offset, float rate, int n, int c, int h,
                      int w, uint8_t *keep);
void ref_dropout_apply(int spatial, const uint8_t *keep, float rate, int n, int c, int h, int w,
                       const float *x, float *y);
/* y = x rounded to the nearest bfloat16 (8 significant bits, fp32's exponent range, subnormals
 * down to 2^-133), ties to even, from the definition: a multiple of the bf16 quantum of x's
 * binade chosen by nearbyint in double; beyond the largest bf16 plus half an ulp: Inf. A NaN
 * becomes the quiet NaN with x's sign and top payload bits (ck_math.h's convention). */
void ref_bf16_round(const float *x, float *y, size_t count);

#endif
