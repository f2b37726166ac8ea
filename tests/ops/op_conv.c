/* Conv2D, forward and backward: iv = {n, h, w, cin, cout, k, s, same, force_nchw, oh, ow}.
 * ref_tol 1e-5: the CPU's im2col sgemm accumulates K = k*k*cin <= 27 products in float (K * 6e-8
 * ~ 1.6e-6 of the scale, plus cancellation), the reference in double. gpu_tol 1e-4 of the
 * output's scale: cuDNN sums in its own order (test_gpu_layers' bound). */
#include "ops.h"

#include "cpu_layers.h"
#include "ref.h"
#ifdef CNNKIT_HAVE_CUDA
#include "gpu_layers.h"
#endif

#include <stdlib.h>

#define CONV(nm, n, h, w, ci, co, k, s, same, nchw, oh, ow)                                        \
    {                                                                                              \
        nm, {n, h, w, ci, co, k, s, same, nchw, oh, ow}, {0}, 4, 4,                                \
            {{"x", n * h * w * ci, OP_UNIFORM, -1, 1},                                             \
             {"k", k * k * ci * co, OP_UNIFORM, -0.5f, 0.5f},                                      \
             {"b", co, OP_UNIFORM, -0.5f, 0.5f},                                                   \
             {"dy", n * oh * ow * co, OP_UNIFORM, -1, 1}},                                         \
        {                                                                                          \
            {"y", n * oh * ow * co, 0, 0, 0}, {"dx", n * h * w * ci, 0, 0, 0},                     \
                {"dk", k * k * ci * co, 0, 0, 0}, {                                                \
                "db", co, 0, 0, 0                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

/* same_s2 on an even size pads asymmetrically (the explicit pad copy on the GPU); nchw forces
 * cuDNN's NCHW path (layout conversions). */
static const op_variant k_variants[] = {
    CONV("3x3_same_s1", 2, 5, 5, 3, 4, 3, 1, 1, 0, 5, 5),
    CONV("3x3_same_s2_asym", 2, 6, 6, 3, 4, 3, 2, 1, 0, 3, 3),
    CONV("3x3_valid_nchw", 2, 5, 5, 3, 4, 3, 1, 0, 1, 3, 3),
    CONV("1x1", 2, 4, 4, 3, 4, 1, 1, 0, 0, 4, 4),
};

static ck_conv_geom geom(const op_variant *v) {
    const int *p = v->iv;
    ck_conv_geom g;
    ck_conv_geom_make(&g, p[0], p[1], p[2], p[3], p[4], p[5], p[5], p[6], p[6], p[7]);
    return g;
}

static void cpu(const op_variant *v, float *const *in, float *const *out) {
    const ck_conv_geom g = geom(v);
    float *ws = malloc((ck_cpu_conv2d_workspace_floats(&g) + 1) * sizeof(float));
    ck_cpu_conv2d_forward(&g, in[0], in[1], in[2], out[0], ws);
    ck_cpu_conv2d_backward(&g, in[0], in[1], in[3], out[1], out[2], out[3], ws);
    free(ws);
}

static void ref(const op_variant *v, float *const *in, float *const *out) {
    const ck_conv_geom g = geom(v);
    ref_conv2d_forward(&g, in[0], in[1], in[2], out[0]);
    ref_conv2d_backward(&g, in[0], in[1], in[3], out[1], out[2], out[3]);
}

#ifdef CNNKIT_HAVE_CUDA
static int gpu_run(ck_context *c, const op_variant *v, ck_tensor *const *in,
                   ck_tensor *const *out) {
    const ck_conv_geom g = geom(v);
    ck_gconv *cv = NULL;
    ck_workspace *ws = NULL;
    if (ck_gconv_create_layout(c, &g, v->iv[8], &cv) != CK_STATUS_SUCCESS)
        return -1;
    int e = ck_workspace_create(c, &ws, ck_gconv_workspace_bytes(cv) + 16);
    if (!e)
        e = ck_gconv_forward(c, cv, g.n, OP_D(in[0]), OP_D(in[1]), OP_D(in[2]), OP_D(out[0]),
                             ws->data);
    if (!e)
        e = ck_gconv_backward(c, cv, g.n, OP_D(in[0]), OP_D(in[1]), OP_D(in[3]), OP_D(out[1]),
                              OP_D(out[2]), OP_D(out[3]), ws->data);
    ck_context_synchronize(c);
    ck_workspace_destroy(ws);
    ck_gconv_destroy(cv);
    return e;
}
#else
#define gpu_run NULL
#endif

/* ck_gconv_* reach the kernel layout transposes, the pad copy (asymmetric variant), the layout
 * conversions (nchw variant), bias add and the bias gradient's column sums. */
/* the seed model's second and third convolutions at batch 16 */
static const op_variant k_bench[] = {
    CONV("3x3_valid_16x26x26x32x32", 16, 26, 26, 32, 32, 3, 1, 0, 0, 24, 24),
    CONV("3x3_valid_16x12x12x32x64", 16, 12, 12, 32, 64, 3, 1, 0, 0, 10, 10)};

const op_case op_conv = {
    .name = "conv",
    .launchers = "ck_cuda_conv_kernel_layout ck_cuda_pad_nhwc ck_cuda_convert_layout "
                 "ck_cuda_bias_add ck_cuda_colsum ck_cuda_colsum_workspace_bytes",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
    .bench_variants = k_bench,
    .nbench = sizeof k_bench / sizeof k_bench[0],
    .cpu = cpu,
    .ref = ref,
    .ref_tol = 1e-5,
    .gpu = gpu_run,
    .gpu_tol = 1e-4,
    .gpu_setup = "cuDNN plan, workspace and a sync per call",
    .grad_y = 0,
    .grad_dy = 3,
    .ngrad = 3,
    .grad = {{0, 1}, {1, 2}, {2, 3}},
    .grad_tol = 1e-3,
};
