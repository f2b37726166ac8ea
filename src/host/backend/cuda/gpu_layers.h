/* The cuDNN / cuBLAS layers of the model's GPU backend (implemented in cudnn_conv_plan.c,
 * cudnn_conv.c, cublas_dense.c and cudnn_pool.c; cudnn_internal.h lists the files that call cuDNN
 * and cuBLAS). Activations are NHWC device arrays on the context's stream; conv
 * kernels are Keras HWIO (the cuDNN KRSC copy lives in the workspace), dense kernels (in, out).
 * Results follow the CPU twins in cpu_layers.h (same conventions: gradients overwritten, bias /
 * dx NULL = skipped); the sums run in cuDNN/cuBLAS order, so they agree with the CPU within
 * float rounding, not bit for bit. Internal, not installed. */
#ifndef CNNKIT_GPU_LAYERS_H
#define CNNKIT_GPU_LAYERS_H

#include "cpu_layers.h"
#include "internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"

typedef struct ck_gconv ck_gconv;

/* Plans a convolution for batches up to g->n: descriptors and cuDNN algorithms of the context's
 * settings (default: deterministic, strict fp32 CUDNN_FMA_MATH, from cuDNN's heuristics;
 * CK_CONV_ALGO_FASTEST: timed by cudnnFind*AlgorithmEx, cached in the context per shape;
 * CK_MATH_TF32: tensor-op math allowed), NHWC when cuDNN offers them, else NCHW; under
 * CK_CONV_ALGO_FASTEST both layouts are timed (NCHW with its transposes) and NCHW is kept only
 * when clearly faster. Asymmetric 'same' padding is done by an explicit zero-padded copy. On
 * failure the message lists every candidate cuDNN offered. */
ck_status ck_gconv_create(ck_context *ctx, const ck_conv_geom *g, ck_gconv **out);
/* The same with force_nchw = 1: cuDNN runs in NCHW (the fallback when it offers no NHWC
 * algorithm), for the tests of that path. */
ck_status ck_gconv_create_layout(ck_context *ctx, const ck_conv_geom *g, int force_nchw,
                                 ck_gconv **out);
/* The same with the storage dt (ck_kdt) of x, y and their gradients: CK_KDT_BF16 plans cuDNN's
 * bf16 data with fp32 compute (tensor-op math); the filter is rounded to bf16 as it is
 * transposed, the filter gradient comes back rounded to bf16 (widened exactly to fp32). */
ck_status ck_gconv_create_dt(ck_context *ctx, const ck_conv_geom *g, int force_nchw, int dt,
                             ck_gconv **out);
/* bf16 storage on an fp32 cuDNN plan: x, y and their gradients bf16 words widened into fp32 in
 * the workspace, the filter and its gradient rounded to bf16 values, the results rounded back
 * (the same roundings as a bf16 plan). ck_gconv_create_dt takes it by itself when cuDNN has no
 * bf16 plan for the shape (its describe line says why); here forced, for the tests. */
ck_status ck_gconv_create_wide(ck_context *ctx, const ck_conv_geom *g, int force_nchw,
                               ck_gconv **out);
/* The storage the plan was made for (bf16 for a wide plan). */
int ck_gconv_dt(const ck_gconv *c);
/* Layout, algorithms, math, workspace and (fastest) the timings chosen, for logs: 512 bytes are
 * enough. */
void ck_gconv_describe(const ck_gconv *c, char *buf, size_t len);
void ck_gconv_destroy(ck_gconv *c);
/* Device workspace bytes both directions need for any batch n <= g->n. */
size_t ck_gconv_workspace_bytes(const ck_gconv *c);
/* The plan's descriptors set for batch n (in [1, the planned batch]) and its workspace checked
 * for it, now: forward and backward do it when n changes, with cuDNN queries that must not run
 * under a stream capture, so the CUDA graph of a step calls this first. */
ck_status ck_gconv_use_batch(ck_context *ctx, ck_gconv *c, int n);
/* x, y, dy, dx stored as the plan's dt; k, bias, dk, dbias fp32. bf16: y = round(conv(x,
 * round(k))), then y = round(y + bias); dx = round(...); dk = the bf16 rounding of cuDNN's sum. */
ck_status ck_gconv_forward(ck_context *ctx, ck_gconv *c, int n, const void *x, const float *k,
                           const float *bias, void *y, void *ws);
ck_status ck_gconv_backward(ck_context *ctx, ck_gconv *c, int n, const void *x, const float *k,
                            const void *dy, void *dx, float *dk, float *dbias, void *ws);

size_t ck_gdense_workspace_bytes(int out);
ck_status ck_gdense_forward(ck_context *ctx, int n, int in, int out, const float *x, const float *k,
                            const float *bias, float *y);
ck_status ck_gdense_backward(ck_context *ctx, int n, int in, int out, const float *x,
                             const float *k, const float *dy, float *dx, float *dk, float *dbias,
                             void *ws);
/* bf16 (xdt / dt CK_KDT_BF16; else the fp32 calls above): x, dy, dx bf16 words, the kernel packed
 * to bf16 in ws (ck_gdense_workspace_bytes_dt) each call, cublasGemmEx with fp32 accumulation.
 * Forward: y stored as ydt (a hidden layer bf16: round(round(x k) + bias); the logits fp32:
 * x k + bias); backward: dx = round(dy k^T), dk = x^T dy and dbias in fp32. */
size_t ck_gdense_workspace_bytes_dt(int in, int out, int dt);
ck_status ck_gdense_forward_dt(ck_context *ctx, int n, int in, int out, const void *x, int xdt,
                               const float *k, const float *bias, void *y, int ydt, void *ws);
ck_status ck_gdense_backward_dt(ck_context *ctx, int n, int in, int out, const void *x,
                                const float *k, const void *dy, void *dx, float *dk, float *dbias,
                                int dt, void *ws);

/* cuDNN pooling (forward: x -> out; backward: x, y, dy -> out = dx), the reference for the
 * pooling kernels of layers.cu. NOT_SUPPORTED for asymmetric padding. */
ck_status ck_gpool_cudnn(ck_context *ctx, const ck_conv_geom *g, int is_max, int backward,
                         const float *x, const float *y, const float *dy, float *out);
#endif

#endif
