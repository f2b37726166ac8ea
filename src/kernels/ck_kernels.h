/* C-linkage launchers of the CUDA kernels (src/kernels, the .cu files), called by the host code.
 * Every launcher queues work on `stream` and returns a cudaError_t as int (0 = success).
 * Arguments are validated by the host code before these are called. */
#ifndef CNNKIT_CK_KERNELS_H
#define CNNKIT_CK_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "ck_geom.h"
#include "cnnkit/cnnkit.h" /* ck_bn_desc */

#ifdef __cplusplus
extern "C" {
#endif

/* How a kernel stores its activation tensors (docs/precision.md): fp32, or bf16 as 16-bit words
 * rounded to nearest even by ck_bf16_bits (ck_math.h), so a bf16 store equals the CPU twin's
 * ck_bf16_round of the same fp32 value. Parameters, statistics and the loss are always fp32. */
typedef enum ck_kdt { CK_KDT_F32 = 0, CK_KDT_BF16 = 1 } ck_kdt;
/* Bytes of count elements of storage dt. */
static inline size_t ck_kdt_bytes(int dt, size_t count) {
    return count * (dt == CK_KDT_BF16 ? sizeof(uint16_t) : sizeof(float));
}

/* Launchers that take a storage (a ck_kshape's dt or an `int dt` before the stream) type their
 * activation pointers const void * / void *: fp32 arrays (float *, what C callers pass for
 * CK_KDT_F32) or bf16 words (uint16_t *, CK_KDT_BF16). Every activation value read is widened
 * exactly, every value stored is rounded once; the math between is the fp32 kernel's. */

/* A 4-D shape with its layout (0 = NCHW, 1 = NHWC) and the storage of the tensors it describes
 * (ck_kdt; 0, fp32, when left out of an initializer). */
typedef struct ck_kshape {
    int n, c, h, w;
    int nhwc;
    int dt;
} ck_kshape;

int ck_cuda_fill(float *p, size_t count, float value, void *stream);
/* Rows perm[start .. start + n) of src (per floats each) into x, their labels into labels (may be
 * NULL): ck_dataset_gather on the device (a device-resident dataset's batch). */
int ck_cuda_gather_rows(const float *src, const int32_t *src_labels, const int32_t *perm, int start,
                        int n, size_t per, float *x, int32_t *labels, void *stream);
/* x *= s elementwise (fp32, rounded as the CPU's multiply) */
int ck_cuda_scale(float *x, size_t count, float s, void *stream);
/* bf16 storage (bf16.cu; the host twin is src/host/bf16.c): x rounded in place to nearest even
 * bf16; src packed to 16-bit bf16 storage; 16-bit storage widened back to float (exact). */
int ck_cuda_bf16_round(float *x, size_t count, void *stream);
int ck_cuda_bf16_pack(const float *src, uint16_t *dst, size_t count, void *stream);
int ck_cuda_bf16_unpack(const uint16_t *src, float *dst, size_t count, void *stream);
/* dst = src converted between layouts (src_nhwc -> !src_nhwc). Same logical shape; both stored
 * as src_shape.dt (ck_kdt; a copy). */
int ck_cuda_convert_layout(const void *src, void *dst, ck_kshape src_shape, void *stream);

/* What changes from one training step to the next, in device memory (the model arena's "step"
 * part): a CUDA training step's kernels read it when they run, so a step captured once as a CUDA
 * graph replays with each step's values. The host writes it before every step (ck_cuda_step_set)
 * with the values the CPU step computes: m->step, and Adam's alpha from ck_adam_alpha on the host
 * (glibc's pow and CUDA's may differ in the last bit, and the masks' and weights' bits must not).
 */
typedef struct ck_kstep {
    long long step;   /* training steps taken before this one: the dropout masks' key */
    float adam_alpha; /* ck_adam_alpha(lr, beta1, beta2, step + 1) */
    int pad;
} ck_kstep;
int ck_cuda_step_set(ck_kstep *dev, long long step, float adam_alpha, void *stream);

/* A dropout's RNG offset: `value`, or when step is not NULL (device memory)
 * ck_dropout_layer_offset(step->step, layer), read by the kernel as it runs. */
typedef struct ck_koffset {
    uint64_t value;
    const ck_kstep *step;
    int layer;
} ck_koffset;

/* Dropout forward or backward (the same map): y = x * keep * scale.
 * kind: 0 spatial, 1 element. mask_in: stored mask to use instead of regenerating (may be NULL);
 * mask_out: where to store the mask (may be NULL; element masks are bit-packed, NCHW order).
 * x, y: storage s.dt; the masks do not depend on it. */
int ck_cuda_dropout(int kind, const void *x, void *y, ck_kshape s, uint64_t seed, ck_koffset offset,
                    uint64_t sample0, uint32_t threshold, float scale, const uint8_t *mask_in,
                    uint8_t *mask_out, void *stream);

/* BN training forward. ws: workspace laid out as in ck_bn_plan (partials then coefficients).
 * frozen: normalize with the running statistics and leave them unchanged.
 * sd_*: fused spatial dropout after the activation (sd_enabled 0 = none). */
typedef struct ck_kbn {
    ck_kshape s;
    int splits;
    ck_bn_desc bn; /* the caller's descriptor (SyncBN's kernels read single_value_use_running) */
    int frozen;
    int sd_enabled;
    uint64_t seed, sd_offset, sd_sample0;
    const ck_kstep *sd_step; /* not NULL: the offset is ck_dropout_layer_offset(*, sd_layer) */
    int sd_layer;
    uint32_t sd_threshold;
    float sd_scale;
    double *partials; /* 3 * C * splits doubles: fixed-order merges in double */
    float *coef;      /* 4 * C floats */
    float *sd_scales; /* N * C floats: the fused SpatialDropout scale per (n, c) */
    /* SyncBatchNormalization (exchange NULL: the statistics of this batch alone). Between the
     * statistics and the finalize (forward: each channel's n, mean, m2; backward: sum g,
     * sum g*xhat, n) the launcher calls exchange(user, sync_local, sync_all, 3 * C), which
     * enqueues on the stream the gathering of every rank's 3 * C doubles into sync_all in rank
     * order (ranks * 3 * C doubles, device memory) and returns nonzero on failure (the
     * launcher then returns CK_KBN_EXCHANGE_FAILED: the caller's context has the message). */
    int (*exchange)(void *user, const double *local, double *all, size_t count);
    void *exchange_user;
    int ranks;
    double *sync_local, *sync_all;
} ck_kbn;
#define CK_KBN_EXCHANGE_FAILED (-1)

/* x, y, dy, dx: storage p->s.dt (s.dt); gamma, beta, statistics, coefficients, partials and the
 * SpatialDropout scales are fp32 / double whatever it is. */
int ck_cuda_bn_forward_training(const ck_kbn *p, const void *x, const float *gamma,
                                const float *beta, float *running_mean, float *running_var,
                                float *saved_mean, float *saved_invstd, void *y, void *stream);
int ck_cuda_bn_forward_inference(ck_kshape s, int act, float eps, const void *x, const float *gamma,
                                 const float *beta, const float *running_mean,
                                 const float *running_var, void *y, void *stream);
int ck_cuda_bn_backward(const ck_kbn *p, const void *x, const void *dy, const float *gamma,
                        const float *beta, const float *saved_mean, const float *saved_invstd,
                        void *dx, float *dgamma, float *dbeta, void *stream);

/* ---- layers of the model's GPU backend (layers.cu); NHWC activations --------------------- */

/* Loss of a batch, summed on the device in sample order. */
typedef struct ck_kloss {
    double loss_sum;
    int correct;
    /* set by ck_cuda_flag_nonfinite (the gradients), not by the loss kernel; a data-parallel
     * step whose rank failed puts CK_KLOSS_RANK_FAILED or more (exec.h); non-zero: no update */
    int nonfinite;
} ck_kloss;

/* act: ck_activation values (CK_ACT_*); softmax over rows of c. y may alias x. dt: the storage
 * of x, y, dy, dx (ck_kdt). */
int ck_cuda_activation_forward(int act, float alpha, const void *x, void *y, size_t count, int c,
                               int dt, void *stream);
int ck_cuda_activation_backward(int act, float alpha, const void *x, const void *y, const void *dy,
                                void *dx, size_t count, int c, int dt, void *stream);
/* y (rows x c) += bias (c): the sum in fp32, stored as dt (ck_kdt; bf16: rounded once). */
int ck_cuda_bias_add(void *y, const float *bias, long long rows, int c, int dt, void *stream);
/* out (c, fp32) = column sums of a (rows x c, stored as dt) in double, fixed order. ws: the bytes
 * below. */
size_t ck_cuda_colsum_workspace_bytes(int c);
int ck_cuda_colsum(const void *a, long long rows, int c, int dt, float *out, void *ws,
                   void *stream);
/* Max / average pooling, padded cells excluded: the CPU twin's results bit for bit. dt: the
 * storage of x, y, dy, dx (ck_kdt); so for GlobalAveragePooling2D. */
int ck_cuda_pool_forward(ck_conv_geom g, int is_max, const void *x, void *y, int dt, void *stream);
int ck_cuda_pool_backward(ck_conv_geom g, int is_max, const void *x, const void *dy, void *dx,
                          int dt, void *stream);
int ck_cuda_gap_forward(int n, int hw, int c, const void *x, void *y, int dt, void *stream);
int ck_cuda_gap_backward(int n, int hw, int c, const void *dy, void *dx, int dt, void *stream);
/* Fused softmax + sparse categorical cross-entropy from logits; dlogits may be NULL; out: device
 * memory. ws: the bytes below. */
size_t ck_cuda_xent_workspace_bytes(int n);
int ck_cuda_softmax_xent(int n, int classes, const float *logits, const int32_t *labels,
                         float *dlogits, ck_kloss *out, void *ws, void *stream);
/* Optimizer updates (ck_adam_elem / ck_sgd_elem / ck_rmsprop_elem); alpha: Adam's bias-corrected
 * step, or step->adam_alpha read on the device when step (device memory) is not NULL; decay = lr *
 * weight_decay; vel may be NULL (plain SGD). guard (device memory, may be NULL): when
 * guard->nonfinite is set or guard->loss_sum is not finite the kernel changes nothing, so a
 * training step can enqueue its update before the host has looked at the loss (one wait per
 * step, and a failed step still leaves parameters and optimizer state as they were). */
int ck_cuda_adam(float *p, const float *g, float *m, float *v, size_t count, float alpha,
                 const ck_kstep *step, float beta1, float beta2, float eps, float decay,
                 const ck_kloss *guard, void *stream);
/* Sets *flag = 1 when any of p[0 .. count) is NaN or Inf; leaves it alone otherwise (clear it
 * first). Every writer stores the same value: the result does not depend on the order. */
int ck_cuda_flag_nonfinite(const float *p, size_t count, int *flag, void *stream);
int ck_cuda_sgd(float *p, const float *g, float *vel, size_t count, float lr, float momentum,
                int nesterov, float decay, const ck_kloss *guard, void *stream);
/* RMSprop (ck_rmsprop_elem): vel the squared-gradient average, aux the momentum or the centered
 * average gradient (NULL when neither); guard and decay as for ck_cuda_adam. */
int ck_cuda_rmsprop(float *p, const float *g, float *vel, float *aux, size_t count, float lr,
                    float rho, float eps, float momentum, int centered, float decay,
                    const ck_kloss *guard, void *stream);
/* Adadelta (ck_adadelta_elem): ag the accumulated squared gradients, ad the squared updates. */
int ck_cuda_adadelta(float *p, const float *g, float *ag, float *ad, size_t count, float lr,
                     float rho, float eps, float decay, const ck_kloss *guard, void *stream);
/* Conv kernel HWIO (khw = kh*kw positions) -> cuDNN's filter layout (to_cudnn = 1) or back (0):
 * KRSC for NHWC convolutions (kcrs = 0), KCRS for NCHW ones (kcrs = 1). dt (ck_kdt): the storage
 * of cuDNN's copy (bf16: rounded to nearest even going there, widened back exactly); the HWIO
 * side is always fp32. */
int ck_cuda_conv_kernel_layout(const void *src, void *dst, int khw, int cin, int cout, int to_cudnn,
                               int kcrs, int dt, void *stream);
/* Zero padding of NHWC images to (hp, wp) with the image at (pt, pl); crop = 1: the inverse
 * (dst (n, h, w, c) from src (n, hp, wp, c)). dt (ck_kdt): the storage of both (a copy). */
int ck_cuda_pad_nhwc(const void *src, void *dst, int n, int h, int w, int c, int pt, int pl, int hp,
                     int wp, int crop, int dt, void *stream);
/* dst = a + b elementwise (dst may be a or b): the Add layer, gradient sums of graph models.
 * dt (ck_kdt): the storage of all three; the sum is fp32, rounded once to the storage. */
int ck_cuda_add(void *dst, const void *a, const void *b, size_t count, int dt, void *stream);
/* Rescaling: y = x * scale + offset (ck_rescale_fwd), or with backward = 1 the gradient
 * y = x * scale (ck_rescale_bwd; offset unused). y may alias x. dt: the storage of both. */
int ck_cuda_rescale(const void *x, void *y, size_t count, float scale, float offset, int backward,
                    int dt, void *stream);
/* Concatenate's channel slice of `pixels` NHWC pixels: to_wide = 1 copies narrow (nc channels)
 * into channels [off, off + nc) of wide (wc channels); 0 copies them back. dt: the storage of
 * both (a move: no rounding). */
int ck_cuda_channel_slice(void *wide, int wc, int off, void *narrow, int nc, size_t pixels,
                          int to_wide, int dt, void *stream);

#ifdef __cplusplus
}
#endif
#endif
