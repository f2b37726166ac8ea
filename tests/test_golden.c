/* BatchNorm + ReLU against golden vectors computed once with PyTorch (tools/gen_golden.py, data
 * in tests/golden/bn_golden.h), through the public API only, in both layouts, on the CPU and (when
 * a device is usable) on CUDA.
 *
 * Tolerances (the golden values are float64 results rounded to float32; the library computes in
 * float32):
 *   forward y, running/moving stats, saved mean/invstd:  |got - exp| <= 1e-5 * max(1, |exp|)
 *   gradients dx, dgamma, dbeta:                         |got - exp| <= 1e-4 * max_i |exp_i|
 *                                                        (relative to the array's largest value)
 * The golden inputs keep every pre-activation at least 1e-3 away from the ReLU kink, so rounding
 * cannot flip a ReLU decision. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cnnkit/cnnkit.h"
#include "common.h"
#include "golden/bn_golden.h"

#define GN BN_GOLDEN_N
#define GC BN_GOLDEN_C
#define GH BN_GOLDEN_H
#define GW BN_GOLDEN_W
#define GCOUNT ((size_t)BN_GOLDEN_COUNT)

#define G_FWD_TOL 1e-5
#define G_GRAD_TOL 1e-4

#define G_OK(ctx, expr)                                                                            \
    do {                                                                                           \
        ck_status st_ = (expr);                                                                    \
        cr_assert_eq(st_, CK_STATUS_SUCCESS, "%s -> %s: %s", #expr, ck_status_string(st_),         \
                     ck_context_last_error(ctx));                                                  \
    } while (0)

/* Expected values of one convention. */
typedef struct g_expect {
    const float *y, *running_mean, *running_var, *saved_mean, *saved_invstd;
    const float *dx, *dgamma, *dbeta;
    const float *infer_y;
    const float *steps_mean, *steps_var;
} g_expect;

static const g_expect *g_expected(ck_bn_convention conv) {
    static const g_expect pt = {bn_golden_pt_y,
                                bn_golden_pt_running_mean,
                                bn_golden_pt_running_var,
                                bn_golden_pt_saved_mean,
                                bn_golden_pt_saved_invstd,
                                bn_golden_pt_dx,
                                bn_golden_pt_dgamma,
                                bn_golden_pt_dbeta,
                                bn_golden_pt_infer_y,
                                bn_golden_pt_steps_running_mean,
                                bn_golden_pt_steps_running_var};
    static const g_expect keras = {bn_golden_keras_y,
                                   bn_golden_keras_moving_mean,
                                   bn_golden_keras_moving_var,
                                   bn_golden_keras_saved_mean,
                                   bn_golden_keras_saved_invstd,
                                   bn_golden_keras_dx,
                                   bn_golden_keras_dgamma,
                                   bn_golden_keras_dbeta,
                                   bn_golden_keras_infer_y,
                                   bn_golden_keras_steps_moving_mean,
                                   bn_golden_keras_steps_moving_var};
    return conv == CK_BN_PYTORCH ? &pt : &keras;
}

static const char *g_layout_name(ck_layout l) {
    return l == CK_LAYOUT_NCHW ? "NCHW" : "NHWC";
}

/* ---- host helpers */

static size_t g_index(ck_layout l, int n, int c, int h, int w) {
    if (l == CK_LAYOUT_NCHW)
        return (((size_t)n * GC + c) * GH + h) * GW + w;
    return (((size_t)n * GH + h) * GW + w) * GC + c;
}

static ck_context *g_context(ck_device dev) {
    if (dev == CK_DEVICE_CUDA) /* skipped without a device (failed under CNNKIT_REQUIRE_GPU=1) */
        return t_cuda_ctx_or_skip();
    ck_context *ctx = NULL;
    ck_status st = ck_context_create(&ctx, dev, 0, 1234);
    cr_assert_eq(st, CK_STATUS_SUCCESS, "ck_context_create: %s", ck_status_string(st));
    return ctx;
}

/* An x-shaped tensor of layout l; nchw (logical NCHW order) is converted and uploaded when not
 * NULL, else the tensor is filled with a sentinel so that unwritten outputs show. */
static ck_tensor *g_tensor(ck_context *ctx, ck_layout l, const float *nchw) {
    ck_tensor *t = NULL;
    G_OK(ctx, ck_tensor_create(ctx, &t, l, GN, GC, GH, GW));
    if (!nchw) {
        G_OK(ctx, ck_tensor_fill(ctx, t, -12345.0f));
        return t;
    }
    float buf[BN_GOLDEN_COUNT];
    for (int n = 0; n < GN; ++n)
        for (int c = 0; c < GC; ++c)
            for (int h = 0; h < GH; ++h)
                for (int w = 0; w < GW; ++w)
                    buf[g_index(l, n, c, h, w)] = nchw[g_index(CK_LAYOUT_NCHW, n, c, h, w)];
    G_OK(ctx, ck_tensor_upload(ctx, t, buf, GCOUNT));
    return t;
}

/* Downloads an x-shaped tensor into logical NCHW order. */
static void g_download(ck_context *ctx, const ck_tensor *t, float *nchw) {
    float buf[BN_GOLDEN_COUNT];
    ck_layout l = ck_tensor_layout(t);
    G_OK(ctx, ck_tensor_download(ctx, t, buf, GCOUNT));
    for (int n = 0; n < GN; ++n)
        for (int c = 0; c < GC; ++c)
            for (int h = 0; h < GH; ++h)
                for (int w = 0; w < GW; ++w)
                    nchw[g_index(CK_LAYOUT_NCHW, n, c, h, w)] = buf[g_index(l, n, c, h, w)];
}

/* A (1, C, 1, 1) parameter tensor; values NULL: filled with a sentinel. */
static ck_tensor *g_param(ck_context *ctx, ck_layout l, const float *values) {
    ck_tensor *t = NULL;
    G_OK(ctx, ck_tensor_create(ctx, &t, l, 1, GC, 1, 1));
    if (values)
        G_OK(ctx, ck_tensor_upload(ctx, t, values, GC));
    else
        G_OK(ctx, ck_tensor_fill(ctx, t, -12345.0f));
    return t;
}

static void g_param_get(ck_context *ctx, const ck_tensor *t, float *values) {
    G_OK(ctx, ck_tensor_download(ctx, t, values, GC));
}

/* |got - exp| <= 1e-5 * max(1, |exp|) for every element. */
static void g_check_fwd(const char *what, const float *got, const float *exp, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        double tol = G_FWD_TOL * fmax(1.0, fabs((double)exp[i]));
        double err = fabs((double)got[i] - (double)exp[i]);
        cr_assert(err <= tol, "%s[%zu]: got %.9g, expected %.9g (|err| %.3g > tol %.3g)", what, i,
                  (double)got[i], (double)exp[i], err, tol);
    }
}

/* |got - exp| <= 1e-4 * max_i |exp_i| for every element. */
static void g_check_grad(const char *what, const float *got, const float *exp, size_t n) {
    double maxabs = 0.0;
    for (size_t i = 0; i < n; ++i)
        maxabs = fmax(maxabs, fabs((double)exp[i]));
    double tol = G_GRAD_TOL * maxabs;
    for (size_t i = 0; i < n; ++i) {
        double err = fabs((double)got[i] - (double)exp[i]);
        cr_assert(err <= tol, "%s[%zu]: got %.9g, expected %.9g (|err| %.3g > tol %.3g)", what, i,
                  (double)got[i], (double)exp[i], err, tol);
    }
}

/* ---- a BN+ReLU setup */

typedef struct g_bn {
    ck_context *ctx;
    ck_bn_desc desc;
    ck_layout layout;
    ck_tensor *x, *gamma, *beta, *running_mean, *running_var, *saved_mean, *saved_invstd, *y;
    ck_workspace *ws; /* NULL when the size query says 0 bytes */
} g_bn;

/* Context, descriptor (convention defaults + ReLU) and tensors; running stats = the golden initial
 * ones. Parameter tensors take the layout of x (any layout is allowed for (1, C, 1, 1)). */
static void g_bn_setup(g_bn *b, ck_device dev, ck_bn_convention conv, ck_layout l) {
    b->ctx = g_context(dev);
    b->layout = l;
    G_OK(b->ctx, ck_bn_desc_init(&b->desc, conv));
    b->desc.activation = CK_ACT_RELU;
    b->x = g_tensor(b->ctx, l, bn_golden_x);
    b->y = g_tensor(b->ctx, l, NULL);
    b->gamma = g_param(b->ctx, l, bn_golden_gamma);
    b->beta = g_param(b->ctx, l, bn_golden_beta);
    b->running_mean = g_param(b->ctx, l, bn_golden_running_mean0);
    b->running_var = g_param(b->ctx, l, bn_golden_running_var0);
    b->saved_mean = g_param(b->ctx, l, NULL);
    b->saved_invstd = g_param(b->ctx, l, NULL);
    size_t bytes = 0;
    G_OK(b->ctx, ck_batchnorm_workspace_size(b->ctx, b->x, &bytes));
    b->ws = NULL;
    if (bytes > 0)
        G_OK(b->ctx, ck_workspace_create(b->ctx, &b->ws, bytes));
}

static void g_bn_teardown(g_bn *b) {
    ck_workspace_destroy(b->ws);
    ck_tensor_destroy(b->x);
    ck_tensor_destroy(b->y);
    ck_tensor_destroy(b->gamma);
    ck_tensor_destroy(b->beta);
    ck_tensor_destroy(b->running_mean);
    ck_tensor_destroy(b->running_var);
    ck_tensor_destroy(b->saved_mean);
    ck_tensor_destroy(b->saved_invstd);
    ck_context_destroy(b->ctx);
}

static void g_bn_train(g_bn *b) {
    G_OK(b->ctx, ck_batchnorm_forward_training(b->ctx, &b->desc, b->x, b->gamma, b->beta,
                                               b->running_mean, b->running_var, b->saved_mean,
                                               b->saved_invstd, NULL, b->y, b->ws));
}

/* ---- test bodies */

/* a/b: one training step from the golden initial running stats. */
static void g_run_forward(ck_device dev, ck_bn_convention conv, ck_layout l) {
    const g_expect *e = g_expected(conv);
    g_bn b;
    g_bn_setup(&b, dev, conv, l);
    g_bn_train(&b);
    float y[BN_GOLDEN_COUNT], rm[GC], rv[GC], sm[GC], si[GC];
    g_download(b.ctx, b.y, y);
    g_param_get(b.ctx, b.running_mean, rm);
    g_param_get(b.ctx, b.running_var, rv);
    g_param_get(b.ctx, b.saved_mean, sm);
    g_param_get(b.ctx, b.saved_invstd, si);
    cr_log_info("golden forward %s %s", conv == CK_BN_PYTORCH ? "pytorch" : "keras",
                g_layout_name(l));
    g_check_fwd("y", y, e->y, GCOUNT);
    g_check_fwd("running_mean", rm, e->running_mean, GC);
    g_check_fwd("running_var", rv, e->running_var, GC);
    g_check_fwd("saved_mean", sm, e->saved_mean, GC);
    g_check_fwd("saved_invstd", si, e->saved_invstd, GC);
    g_bn_teardown(&b);
}

/* c: training forward (for the saved stats), then backward with the golden dy. */
static void g_run_backward(ck_device dev, ck_bn_convention conv, ck_layout l) {
    const g_expect *e = g_expected(conv);
    g_bn b;
    g_bn_setup(&b, dev, conv, l);
    g_bn_train(&b);
    ck_tensor *dy = g_tensor(b.ctx, l, bn_golden_dy);
    ck_tensor *dx = g_tensor(b.ctx, l, NULL);
    ck_tensor *dgamma = g_param(b.ctx, l, NULL);
    ck_tensor *dbeta = g_param(b.ctx, l, NULL);
    G_OK(b.ctx, ck_batchnorm_backward(b.ctx, &b.desc, b.x, dy, b.gamma, b.beta, b.saved_mean,
                                      b.saved_invstd, NULL, dx, dgamma, dbeta, b.ws));
    float hdx[BN_GOLDEN_COUNT], hdg[GC], hdb[GC];
    g_download(b.ctx, dx, hdx);
    g_param_get(b.ctx, dgamma, hdg);
    g_param_get(b.ctx, dbeta, hdb);
    g_check_grad("dx", hdx, e->dx, GCOUNT);
    g_check_grad("dgamma", hdg, e->dgamma, GC);
    g_check_grad("dbeta", hdb, e->dbeta, GC);
    ck_tensor_destroy(dy);
    ck_tensor_destroy(dx);
    ck_tensor_destroy(dgamma);
    ck_tensor_destroy(dbeta);
    g_bn_teardown(&b);
}

/* d: inference with the golden initial running stats, which must stay untouched. */
static void g_run_inference(ck_device dev, ck_bn_convention conv, ck_layout l) {
    const g_expect *e = g_expected(conv);
    g_bn b;
    g_bn_setup(&b, dev, conv, l);
    G_OK(b.ctx, ck_batchnorm_forward_inference(b.ctx, &b.desc, b.x, b.gamma, b.beta, b.running_mean,
                                               b.running_var, b.y));
    float y[BN_GOLDEN_COUNT], rm[GC], rv[GC];
    g_download(b.ctx, b.y, y);
    g_param_get(b.ctx, b.running_mean, rm);
    g_param_get(b.ctx, b.running_var, rv);
    g_check_fwd("inference y", y, e->infer_y, GCOUNT);
    for (int c = 0; c < GC; ++c) {
        cr_assert_eq(rm[c], bn_golden_running_mean0[c], "running_mean[%d] changed", c);
        cr_assert_eq(rv[c], bn_golden_running_var0[c], "running_var[%d] changed", c);
    }
    g_bn_teardown(&b);
}

/* e: BN_GOLDEN_STEPS training steps on the same batch from running mean 0 / var 1. */
static void g_run_steps(ck_device dev, ck_bn_convention conv, ck_layout l) {
    const g_expect *e = g_expected(conv);
    g_bn b;
    g_bn_setup(&b, dev, conv, l);
    G_OK(b.ctx, ck_tensor_fill(b.ctx, b.running_mean, 0.0f));
    G_OK(b.ctx, ck_tensor_fill(b.ctx, b.running_var, 1.0f));
    float y[BN_GOLDEN_COUNT], rm[GC], rv[GC];
    for (int k = 0; k < BN_GOLDEN_STEPS; ++k) {
        g_bn_train(&b);
        g_download(b.ctx, b.y, y);
        g_check_fwd("y (every step)", y, e->y, GCOUNT);
    }
    g_param_get(b.ctx, b.running_mean, rm);
    g_param_get(b.ctx, b.running_var, rv);
    g_check_fwd("running_mean after steps", rm, e->steps_mean, GC);
    g_check_fwd("running_var after steps", rv, e->steps_var, GC);
    g_bn_teardown(&b);
}

/* ---- tests */

/* The conventions the golden data assume. */
Test(golden, bn_desc_conventions) {
    ck_bn_desc d;
    cr_assert_eq(ck_bn_desc_init(&d, CK_BN_PYTORCH), CK_STATUS_SUCCESS);
    cr_assert_eq(d.epsilon, (float)BN_GOLDEN_PT_EPS);
    cr_assert_eq(d.average_factor, (float)BN_GOLDEN_PT_MOMENTUM);
    cr_assert_eq(d.unbiased_running_var, 1);
    cr_assert_eq(ck_bn_desc_init(&d, CK_BN_KERAS), CK_STATUS_SUCCESS);
    cr_assert_eq(d.epsilon, (float)BN_GOLDEN_KERAS_EPS);
    cr_assert_float_eq(d.average_factor, (float)(1.0 - BN_GOLDEN_KERAS_MOMENTUM), 1e-7);
    cr_assert_eq(d.unbiased_running_var, 0);
}

#define G_TEST(name, body, dev, conv, layout)                                                      \
    Test(golden, name) {                                                                           \
        body(dev, conv, layout);                                                                   \
    }

/* CPU */
G_TEST(bn_pytorch_forward_nchw, g_run_forward, CK_DEVICE_CPU, CK_BN_PYTORCH, CK_LAYOUT_NCHW)
G_TEST(bn_pytorch_forward_nhwc, g_run_forward, CK_DEVICE_CPU, CK_BN_PYTORCH, CK_LAYOUT_NHWC)
G_TEST(bn_keras_forward_nchw, g_run_forward, CK_DEVICE_CPU, CK_BN_KERAS, CK_LAYOUT_NCHW)
G_TEST(bn_keras_forward_nhwc, g_run_forward, CK_DEVICE_CPU, CK_BN_KERAS, CK_LAYOUT_NHWC)
G_TEST(bn_pytorch_backward_nchw, g_run_backward, CK_DEVICE_CPU, CK_BN_PYTORCH, CK_LAYOUT_NCHW)
G_TEST(bn_pytorch_backward_nhwc, g_run_backward, CK_DEVICE_CPU, CK_BN_PYTORCH, CK_LAYOUT_NHWC)
G_TEST(bn_keras_backward_nchw, g_run_backward, CK_DEVICE_CPU, CK_BN_KERAS, CK_LAYOUT_NCHW)
G_TEST(bn_keras_backward_nhwc, g_run_backward, CK_DEVICE_CPU, CK_BN_KERAS, CK_LAYOUT_NHWC)
G_TEST(bn_pytorch_inference_nchw, g_run_inference, CK_DEVICE_CPU, CK_BN_PYTORCH, CK_LAYOUT_NCHW)
G_TEST(bn_pytorch_inference_nhwc, g_run_inference, CK_DEVICE_CPU, CK_BN_PYTORCH, CK_LAYOUT_NHWC)
G_TEST(bn_keras_inference_nchw, g_run_inference, CK_DEVICE_CPU, CK_BN_KERAS, CK_LAYOUT_NCHW)
G_TEST(bn_keras_inference_nhwc, g_run_inference, CK_DEVICE_CPU, CK_BN_KERAS, CK_LAYOUT_NHWC)
G_TEST(bn_pytorch_steps3_nchw, g_run_steps, CK_DEVICE_CPU, CK_BN_PYTORCH, CK_LAYOUT_NCHW)
G_TEST(bn_pytorch_steps3_nhwc, g_run_steps, CK_DEVICE_CPU, CK_BN_PYTORCH, CK_LAYOUT_NHWC)
G_TEST(bn_keras_steps3_nchw, g_run_steps, CK_DEVICE_CPU, CK_BN_KERAS, CK_LAYOUT_NCHW)
G_TEST(bn_keras_steps3_nhwc, g_run_steps, CK_DEVICE_CPU, CK_BN_KERAS, CK_LAYOUT_NHWC)

/* CUDA (skipped when ck_cuda_available() is 0) */
G_TEST(bn_pytorch_forward_nchw_cuda, g_run_forward, CK_DEVICE_CUDA, CK_BN_PYTORCH, CK_LAYOUT_NCHW)
G_TEST(bn_pytorch_forward_nhwc_cuda, g_run_forward, CK_DEVICE_CUDA, CK_BN_PYTORCH, CK_LAYOUT_NHWC)
G_TEST(bn_keras_forward_nchw_cuda, g_run_forward, CK_DEVICE_CUDA, CK_BN_KERAS, CK_LAYOUT_NCHW)
G_TEST(bn_keras_forward_nhwc_cuda, g_run_forward, CK_DEVICE_CUDA, CK_BN_KERAS, CK_LAYOUT_NHWC)
G_TEST(bn_pytorch_backward_nchw_cuda, g_run_backward, CK_DEVICE_CUDA, CK_BN_PYTORCH, CK_LAYOUT_NCHW)
G_TEST(bn_pytorch_backward_nhwc_cuda, g_run_backward, CK_DEVICE_CUDA, CK_BN_PYTORCH, CK_LAYOUT_NHWC)
G_TEST(bn_keras_backward_nchw_cuda, g_run_backward, CK_DEVICE_CUDA, CK_BN_KERAS, CK_LAYOUT_NCHW)
G_TEST(bn_keras_backward_nhwc_cuda, g_run_backward, CK_DEVICE_CUDA, CK_BN_KERAS, CK_LAYOUT_NHWC)
G_TEST(bn_pytorch_inference_nchw_cuda, g_run_inference, CK_DEVICE_CUDA, CK_BN_PYTORCH,
       CK_LAYOUT_NCHW)
G_TEST(bn_pytorch_inference_nhwc_cuda, g_run_inference, CK_DEVICE_CUDA, CK_BN_PYTORCH,
       CK_LAYOUT_NHWC)
G_TEST(bn_keras_inference_nchw_cuda, g_run_inference, CK_DEVICE_CUDA, CK_BN_KERAS, CK_LAYOUT_NCHW)
G_TEST(bn_keras_inference_nhwc_cuda, g_run_inference, CK_DEVICE_CUDA, CK_BN_KERAS, CK_LAYOUT_NHWC)
G_TEST(bn_pytorch_steps3_nchw_cuda, g_run_steps, CK_DEVICE_CUDA, CK_BN_PYTORCH, CK_LAYOUT_NCHW)
G_TEST(bn_pytorch_steps3_nhwc_cuda, g_run_steps, CK_DEVICE_CUDA, CK_BN_PYTORCH, CK_LAYOUT_NHWC)
G_TEST(bn_keras_steps3_nchw_cuda, g_run_steps, CK_DEVICE_CUDA, CK_BN_KERAS, CK_LAYOUT_NCHW)
G_TEST(bn_keras_steps3_nhwc_cuda, g_run_steps, CK_DEVICE_CUDA, CK_BN_KERAS, CK_LAYOUT_NHWC)
