/* BatchNorm (Keras convention) with fused NONE / ReLU, through the public API: training forward
 * (y, running stats, saved stats), backward (dx, dgamma, dbeta) and inference on the running
 * stats. iv = {n, c, h, w, act, nchw}; NHWC images (NCHW when nchw), (1, C, 1, 1) parameters.
 * ref_tol 1e-5: the CPU merges statistics in float Welford steps and applies the affine map in
 * float (fmaf), ~10 roundings of 6e-8 relative each plus the cancellation in x - mean; the
 * reference works in double. gpu_tol 1e-4: the device merges the same statistics in another
 * fixed order (test_gpu's bounds: 2e-5 on y, 1e-4 on gradients). */
#include "ops.h"

#include <math.h>
#include <stdlib.h>

#include "ref.h"

#define P(c)                                                                                       \
    { 1, c, 1, 1 }
#define I(n, c, h, w)                                                                              \
    { n, c, h, w }
#define BN_L(nm, n, c, h, w, act, nchw)                                                            \
    {                                                                                              \
        nm, {n, c, h, w, act, nchw}, {0}, 6, 9,                                                    \
            {{"x", n * c * h * w, OP_UNIFORM, -2, 3, 0, I(n, c, h, w), nchw},                      \
             {"gamma", c, OP_UNIFORM, 0.5f, 1.5f, 0, P(c)},                                        \
             {"beta", c, OP_UNIFORM, -0.5f, 0.5f, 0, P(c)},                                        \
             {"running_mean", c, OP_UNIFORM, -0.2f, 0.2f, 0, P(c)},                                \
             {"running_var", c, OP_UNIFORM, 0.5f, 2, 0, P(c)},                                     \
             {"dy", n * c * h * w, OP_UNIFORM, -1, 1, 0, I(n, c, h, w), nchw}},                    \
        {                                                                                          \
            {"y", n * c * h * w, 0, 0, 0, 0, I(n, c, h, w), nchw},                                 \
                {"running_mean", c, 0, 0, 0, 4, P(c)}, {"running_var", c, 0, 0, 0, 5, P(c)},       \
                {"saved_mean", c, 0, 0, 0, 0, P(c)}, {"saved_invstd", c, 0, 0, 0, 0, P(c)},        \
                {"dx", n * c * h * w, 0, 0, 0, 0, I(n, c, h, w), nchw},                            \
                {"dgamma", c, 0, 0, 0, 0, P(c)}, {"dbeta", c, 0, 0, 0, 0, P(c)}, {                 \
                "y_inference", n *c *h *w, 0, 0, 0, 0, I(n, c, h, w), nchw                         \
            }                                                                                      \
        }                                                                                          \
    }
#define BN(nm, n, c, h, w, act) BN_L(nm, n, c, h, w, act, 0)

static const op_variant k_variants[] = {BN("linear_3x4x3x5", 3, 4, 3, 5, CK_ACT_NONE),
                                        BN("relu_2x3x4x4", 2, 3, 4, 4, CK_ACT_RELU),
                                        BN("relu_5x7x1x2", 5, 7, 1, 2, CK_ACT_RELU),
                                        BN_L("relu_nchw_3x4x3x5", 3, 4, 3, 5, CK_ACT_RELU, 1)};

static int api(ck_context *ctx, const op_variant *v, ck_tensor *const *in, ck_tensor *const *out) {
    ck_bn_desc d;
    size_t bytes = 0;
    ck_workspace *ws = NULL;
    int e = ck_bn_desc_init(&d, CK_BN_KERAS);
    d.activation = (ck_activation)v->iv[4];
    if (!e)
        e = ck_batchnorm_workspace_size(ctx, in[0], &bytes);
    if (!e && bytes)
        e = ck_workspace_create(ctx, &ws, bytes);
    if (!e)
        e = ck_batchnorm_forward_training(ctx, &d, in[0], in[1], in[2], out[1], out[2], out[3],
                                          out[4], NULL, out[0], ws);
    if (!e)
        e = ck_batchnorm_backward(ctx, &d, in[0], in[5], in[1], in[2], out[3], out[4], NULL, out[5],
                                  out[6], out[7], ws);
    if (!e)
        e = ck_batchnorm_forward_inference(ctx, &d, in[0], in[1], in[2], in[3], in[4], out[8]);
    ck_workspace_destroy(ws);
    return e;
}

/* A failed run leaves NaN in y, which every comparison reports. */
static void cpu(const op_variant *v, float *const *in, float *const *out) {
    if (op_run_cpu(api, v, in, out))
        out[0][0] = NAN;
}

/* a (n, c, h, w) image between NCHW and NHWC: to_nhwc 1 reads NCHW src, 0 reads NHWC src */
static void relayout(const op_variant *v, const float *src, float *dst, int to_nhwc) {
    const int n = v->iv[0], c = v->iv[1], hw = v->iv[2] * v->iv[3];
    for (int s = 0; s < n; ++s)
        for (int k = 0; k < c; ++k)
            for (int p = 0; p < hw; ++p) {
                const size_t a = ((size_t)s * c + k) * hw + p, b = ((size_t)s * hw + p) * c + k;
                dst[to_nhwc ? b : a] = src[to_nhwc ? a : b];
            }
}

/* The reference works on rows of channels (NHWC): an NCHW variant's images go through it in NHWC
 * and come back. */
static void ref(const op_variant *v, float *const *in, float *const *out) {
    const long rows = (long)v->iv[0] * v->iv[2] * v->iv[3];
    const int c = v->iv[1], act = v->iv[4], nchw = v->iv[5];
    const size_t count = (size_t)rows * c;
    float *tmp[5] = {0};
    for (int k = 0; nchw && k < 5; ++k)
        if (!(tmp[k] = malloc(count * sizeof(float)))) {
            for (int j = 0; j < k; ++j)
                free(tmp[j]);
            out[0][0] = NAN;
            return;
        }
    const float *x = in[0], *dy = in[5];
    float *y = out[0], *dx = out[5], *yi = out[8];
    if (nchw) {
        relayout(v, in[0], tmp[0], 1);
        relayout(v, in[5], tmp[1], 1);
        x = tmp[0], dy = tmp[1], y = tmp[2], dx = tmp[3], yi = tmp[4];
    }
    ck_bn_desc d;
    ck_bn_desc_init(&d, CK_BN_KERAS);
    ref_bn_forward_training(rows, c, x, in[1], in[2], d.epsilon, d.average_factor,
                            d.unbiased_running_var, act, y, out[1], out[2], out[3], out[4]);
    ref_bn_backward(rows, c, x, dy, in[1], in[2], out[3], out[4], act, dx, out[6], out[7]);
    ref_bn_forward_inference(rows, c, x, in[1], in[2], in[3], in[4], d.epsilon, act, yi);
    if (nchw) {
        relayout(v, y, out[0], 0);
        relayout(v, dx, out[5], 0);
        relayout(v, yi, out[8], 0);
        for (int k = 0; k < 5; ++k)
            free(tmp[k]);
    }
}

/* the seed model's first BatchNorm+ReLU at batch 32 */
static const op_variant k_bench[] = {BN("relu_32x32x26x26", 32, 32, 26, 26, CK_ACT_RELU)};

const op_case op_bn = {
    .name = "bn",
    .launchers = "ck_cuda_bn_forward_training ck_cuda_bn_backward ck_cuda_bn_forward_inference",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
    .bench_variants = k_bench,
    .nbench = sizeof k_bench / sizeof k_bench[0],
    .api = api,
    .cpu = cpu,
    .ref = ref,
    .ref_tol = 1e-5,
#ifdef CNNKIT_HAVE_CUDA
    .gpu = api,
#endif
    .gpu_tol = 1e-4,
    .gpu_setup = "workspace per call",
    .grad_y = 0,
    .grad_dy = 5,
    .ngrad = 3,
    .grad = {{0, 5}, {1, 6}, {2, 7}},
    .grad_tol = 1e-3,
};

/* ---- bf16 storage (x, dy in, y, dx, y_inference out; the parameters and statistics stay fp32. The
 * public API takes the bf16 views (dtype) on the GPU; the CPU side is the fp32 op on rounded data)
 * ---- */

OP_BF16_HOST(cpu_bf16, cpu, (1u | 1u << 5), (1u | 1u << 5 | 1u << 8))
OP_BF16_HOST(ref_bf16, ref, (1u | 1u << 5), (1u | 1u << 5 | 1u << 8))

/* the fp32 shapes (C % 8 != 0: the scalar kernels), channel counts that take the 8-word
 * paths (NHWC C % 8 == 0) and NCHW (its own statistics and backward reductions) */
static const op_variant k_variants_bf16[] = {BN("linear_3x4x3x5", 3, 4, 3, 5, CK_ACT_NONE),
                                             BN("relu_2x3x4x4", 2, 3, 4, 4, CK_ACT_RELU),
                                             BN("relu_5x7x1x2", 5, 7, 1, 2, CK_ACT_RELU),
                                             BN("relu_c8_3x8x3x5", 3, 8, 3, 5, CK_ACT_RELU),
                                             BN("linear_c16_2x16x2x3", 2, 16, 2, 3, CK_ACT_NONE),
                                             BN_L("relu_nchw_3x4x3x5", 3, 4, 3, 5, CK_ACT_RELU, 1)};

OP_BF16_GPU(gpu_bf16, api, (1u | 1u << 5), (1u | 1u << 5 | 1u << 8))

const op_case op_bn_bf16 = {
    .name = "bn_bf16",
    .launchers = "ck_cuda_bn_forward_training ck_cuda_bn_backward ck_cuda_bn_forward_inference "
                 "ck_cuda_bf16_pack ck_cuda_bf16_unpack",
    .variants = k_variants_bf16,
    .nvariants = sizeof k_variants_bf16 / sizeof k_variants_bf16[0],
    .bench_variants = k_bench,
    .nbench = sizeof k_bench / sizeof k_bench[0],
    .cpu = cpu_bf16,
    .ref = ref_bf16,
    .ref_tol = OP_BF16_TOL,
    .gpu = OP_GPU(gpu_bf16),
    .gpu_tol = OP_BF16_TOL,
    .gpu_setup = OP_BF16_SETUP,
};
