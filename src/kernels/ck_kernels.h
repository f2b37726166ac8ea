/* C-linkage launchers of the CUDA kernels (src/kernels, the .cu files), called by the host code.
 * Every launcher queues work on `stream` and returns a cudaError_t as int (0 = success).
 * Arguments are validated by the host code before these are called. */
#ifndef CNNKIT_CK_KERNELS_H
#define CNNKIT_CK_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A 4-D shape with its layout (0 = NCHW, 1 = NHWC). */
typedef struct ck_kshape {
    int n, c, h, w;
    int nhwc;
} ck_kshape;

int ck_cuda_fill(float *p, size_t count, float value, void *stream);
/* dst = src converted between layouts (src_nhwc -> !src_nhwc). Same logical shape. */
int ck_cuda_convert_layout(const float *src, float *dst, ck_kshape src_shape, void *stream);

/* Dropout forward or backward (the same map): y = x * keep * scale.
 * kind: 0 spatial, 1 element. mask_in: stored mask to use instead of regenerating (may be NULL);
 * mask_out: where to store the mask (may be NULL; element masks are bit-packed, NCHW order). */
int ck_cuda_dropout(int kind, const float *x, float *y, ck_kshape s, uint64_t seed,
                    uint64_t offset, uint32_t threshold, float scale, const uint8_t *mask_in,
                    uint8_t *mask_out, void *stream);

/* BN training forward. ws: workspace laid out as in ck_bn_plan (partials then coefficients).
 * frozen: normalize with the running statistics and leave them unchanged.
 * sd_*: fused spatial dropout after the activation (sd_enabled 0 = none). */
typedef struct ck_kbn {
    ck_kshape s;
    int splits;
    float eps, factor;
    int unbiased, act, frozen;
    int sd_enabled;
    uint64_t seed, sd_offset;
    uint32_t sd_threshold;
    float sd_scale;
    float *partials; /* 3 * C * splits floats */
    float *coef;     /* 4 * C floats */
    float *sd_scales; /* N * C floats: the fused SpatialDropout scale per (n, c) */
} ck_kbn;

int ck_cuda_bn_forward_training(const ck_kbn *p, const float *x, const float *gamma,
                                const float *beta, float *running_mean, float *running_var,
                                float *saved_mean, float *saved_invstd, float *y, void *stream);
int ck_cuda_bn_forward_inference(ck_kshape s, int act, float eps, const float *x,
                                 const float *gamma, const float *beta, const float *running_mean,
                                 const float *running_var, float *y, void *stream);
int ck_cuda_bn_backward(const ck_kbn *p, const float *x, const float *dy, const float *gamma,
                        const float *beta, const float *saved_mean, const float *saved_invstd,
                        float *dx, float *dgamma, float *dbeta, void *stream);

#ifdef __cplusplus
}
#endif
#endif
