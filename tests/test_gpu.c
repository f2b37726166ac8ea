/* GPU vs the CPU oracle: every op on odd shapes, both layouts. Skipped without a CUDA device.
 * Dropout outputs and masks must be bit-identical; BN within the stated tolerances. */
#include "common.h"

/* a hung device call (a kernel that spins, a collective that waits) fails its test after five
 * minutes instead of holding the whole GPU run */
TestSuite(gpu, .timeout = 300);

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct shape {
    int n, c, h, w;
} shape;

/* N = 1..257, C = 1..130, H*W = 1..4096; vector and scalar kernel paths in both layouts. */
static const shape SHAPES[] = {
    {1, 1, 1, 2},
    {1, 3, 1, 2},
    {2, 1, 64, 64},
    {257, 5, 3, 3},
    {7, 130, 5, 5},
    {3, 32, 26, 26},
    {16, 64, 8, 8},
    {257, 13, 1, 1},
    {5, 4, 7, 9},
    {2, 130, 1, 3},
    {33, 8, 4, 4},
    {4, 3, 2, 1},
    /* enough rows per block (> 64 per split) for the NHWC kernels' batched loads, with tails */
    {67, 8, 23, 23},
    {40, 40, 30, 30},
};
#define NSHAPES (sizeof SHAPES / sizeof *SHAPES)

static const ck_layout LAYOUTS[2] = {CK_LAYOUT_NCHW, CK_LAYOUT_NHWC};

static float *random_buf(size_t n, uint64_t seed, float lo, float hi) {
    float *p = malloc(n * sizeof *p);
    trng r = {seed};
    trng_fill(&r, p, n, lo, hi);
    return p;
}

/* Runs a dropout op (forward or backward, optionally with a stored mask) on ctx. */
static void dropout_on(ck_context *ctx, ck_dropout_kind kind, int backward, ck_layout l, shape s,
                       const float *x, const ck_dropout_desc *d, float *y, uint8_t *mask) {
    ck_tensor *tx = t_tensor_from_nchw(ctx, l, s.n, s.c, s.h, s.w, x);
    ck_tensor *ty = t_tensor_from_nchw(ctx, l, s.n, s.c, s.h, s.w, NULL);
    ck_mask *m = NULL;
    if (mask)
        CK_OK(ctx, ck_mask_create(ctx, &m, kind, s.n, s.c, s.h, s.w));
    if (!backward && kind == CK_DROPOUT_SPATIAL)
        CK_OK(ctx, ck_spatial_dropout_forward(ctx, d, CK_MODE_TRAINING, tx, ty, m));
    else if (!backward)
        CK_OK(ctx, ck_dropout_forward(ctx, d, CK_MODE_TRAINING, tx, ty, m));
    else if (kind == CK_DROPOUT_SPATIAL)
        CK_OK(ctx, ck_spatial_dropout_backward(ctx, d, CK_MODE_TRAINING, tx, ty, NULL));
    else
        CK_OK(ctx, ck_dropout_backward(ctx, d, CK_MODE_TRAINING, tx, ty, NULL));
    t_tensor_to_nchw(ctx, ty, y);
    if (m) {
        size_t units = (size_t)s.n * s.c * (kind == CK_DROPOUT_SPATIAL ? 1 : (size_t)s.h * s.w);
        CK_OK(ctx, ck_mask_download(ctx, m, mask, units));
        ck_mask_destroy(m);
    }
    ck_tensor_destroy(tx);
    ck_tensor_destroy(ty);
}

static void gpu_dropout_matches_cpu(ck_dropout_kind kind) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    for (size_t si = 0; si < NSHAPES; ++si) {
        shape s = SHAPES[si];
        size_t cnt = (size_t)s.n * s.c * s.h * s.w;
        size_t units = kind == CK_DROPOUT_SPATIAL ? (size_t)s.n * s.c : cnt;
        float *x = random_buf(cnt, 100 + si, -2.0f, 2.0f);
        float *yg = malloc(cnt * 4), *yc = malloc(cnt * 4);
        uint8_t *mg = malloc(units), *mc = malloc(units);
        for (int li = 0; li < 2; ++li) {
            /* sample0 > 0: a shard keyed by its samples' places in the whole batch */
            ck_dropout_desc d = {0.3f, 1000 + si, (uint64_t)(si % 3) * 5};
            for (int bwd = 0; bwd < 2; ++bwd) {
                dropout_on(g, kind, bwd, LAYOUTS[li], s, x, &d, yg, bwd ? NULL : mg);
                dropout_on(c, kind, bwd, LAYOUTS[li], s, x, &d, yc, bwd ? NULL : mc);
                cr_assert_eq(memcmp(yg, yc, cnt * 4), 0,
                             "kind %d %s shape %dx%dx%dx%d layout %d: GPU output differs", kind,
                             bwd ? "bwd" : "fwd", s.n, s.c, s.h, s.w, li);
                if (!bwd)
                    cr_assert_eq(memcmp(mg, mc, units), 0,
                                 "kind %d shape %dx%dx%dx%d layout %d: GPU mask differs", kind, s.n,
                                 s.c, s.h, s.w, li);
            }
        }
        free(x);
        free(yg);
        free(yc);
        free(mg);
        free(mc);
    }
    ck_context_destroy(g);
    ck_context_destroy(c);
}

Test(gpu, spatial_dropout_bit_identical_to_cpu) {
    gpu_dropout_matches_cpu(CK_DROPOUT_SPATIAL);
}
Test(gpu, dropout_bit_identical_to_cpu) {
    gpu_dropout_matches_cpu(CK_DROPOUT_ELEMENT);
}

Test(gpu, layout_conversion_and_fill) {
    ck_context *g = t_cuda_ctx_or_skip();
    for (size_t si = 0; si < NSHAPES; ++si) {
        shape s = SHAPES[si];
        size_t cnt = (size_t)s.n * s.c * s.h * s.w;
        float *x = random_buf(cnt, 200 + si, -1.0f, 1.0f), *y = malloc(cnt * 4);
        ck_tensor *a = t_tensor_from_nchw(g, CK_LAYOUT_NCHW, s.n, s.c, s.h, s.w, x);
        ck_tensor *b = t_tensor_from_nchw(g, CK_LAYOUT_NHWC, s.n, s.c, s.h, s.w, NULL);
        CK_OK(g, ck_tensor_copy(g, a, b));
        t_tensor_to_nchw(g, b, y);
        cr_assert_eq(memcmp(x, y, cnt * 4), 0, "NCHW->NHWC shape %zu", si);
        CK_OK(g, ck_tensor_fill(g, a, 0.0f));
        CK_OK(g, ck_tensor_copy(g, b, a));
        t_tensor_to_nchw(g, a, y);
        cr_assert_eq(memcmp(x, y, cnt * 4), 0, "NHWC->NCHW shape %zu", si);
        CK_OK(g, ck_tensor_fill(g, a, 2.5f));
        t_tensor_to_nchw(g, a, y);
        for (size_t i = 0; i < cnt; ++i)
            cr_assert_eq(y[i], 2.5f);
        ck_tensor_destroy(a);
        ck_tensor_destroy(b);
        free(x);
        free(y);
    }
    ck_context_destroy(g);
}

/* One BN training forward + backward (+ inference) on ctx; outputs in NCHW order. */
typedef struct bn_res {
    float *y, *dx, *yi, p[6][130];
} bn_res; /* p: running mean, running var, saved mean, saved invstd, dgamma, dbeta */

static void bn_on(ck_context *ctx, ck_layout l, shape s, const ck_bn_desc *d,
                  const ck_dropout_desc *sd, const float *x, const float *dy, const float *gm,
                  const float *bt, const float *rm0, const float *rv0, bn_res *r) {
    ck_tensor *tx = t_tensor_from_nchw(ctx, l, s.n, s.c, s.h, s.w, x);
    ck_tensor *ty = t_tensor_from_nchw(ctx, l, s.n, s.c, s.h, s.w, NULL);
    ck_tensor *tdy = t_tensor_from_nchw(ctx, l, s.n, s.c, s.h, s.w, dy);
    ck_tensor *tdx = t_tensor_from_nchw(ctx, l, s.n, s.c, s.h, s.w, NULL);
    ck_tensor *g = t_param(ctx, s.c, gm), *b = t_param(ctx, s.c, bt);
    ck_tensor *rm = t_param(ctx, s.c, rm0), *rv = t_param(ctx, s.c, rv0);
    ck_tensor *sm = t_param(ctx, s.c, NULL), *si = t_param(ctx, s.c, NULL);
    ck_tensor *dg = t_param(ctx, s.c, NULL), *db = t_param(ctx, s.c, NULL);
    size_t wsb = 0;
    ck_workspace *ws = NULL;
    CK_OK(ctx, ck_batchnorm_workspace_size(ctx, tx, &wsb));
    if (wsb)
        CK_OK(ctx, ck_workspace_create(ctx, &ws, wsb));
    CK_OK(ctx, ck_batchnorm_forward_training(ctx, d, tx, g, b, rm, rv, sm, si, sd, ty, ws));
    CK_OK(ctx, ck_batchnorm_backward(ctx, d, tx, tdy, g, b, sm, si, sd, tdx, dg, db, ws));
    t_tensor_to_nchw(ctx, ty, r->y);
    t_tensor_to_nchw(ctx, tdx, r->dx);
    ck_tensor *ps[6] = {rm, rv, sm, si, dg, db};
    for (int k = 0; k < 6; ++k)
        t_param_get(ctx, ps[k], r->p[k]);
    CK_OK(ctx, ck_batchnorm_forward_inference(ctx, d, tx, g, b, rm, rv, ty));
    t_tensor_to_nchw(ctx, ty, r->yi);
    ck_tensor *all[] = {tx, ty, tdy, tdx, g, b, rm, rv, sm, si, dg, db};
    for (size_t k = 0; k < sizeof all / sizeof *all; ++k)
        ck_tensor_destroy(all[k]);
    ck_workspace_destroy(ws);
}

/* max |a - b| <= tol * max(1, max |b|) */
static void expect_close(const float *a, const float *b, size_t n, double tol, const char *what,
                         shape s, int li) {
    double scale = fmax(1.0, t_max_abs(b, n)), worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; ++i) {
        double e = fabs((double)a[i] - b[i]);
        if (e > worst || isnan(e)) {
            worst = isnan(e) ? INFINITY : e;
            at = i;
        }
    }
    cr_assert(worst <= tol * scale, "%s shape %dx%dx%dx%d layout %d: |err| %g at %zu (%g vs %g)",
              what, s.n, s.c, s.h, s.w, li, worst, at, a[at], b[at]);
}

static void gpu_bn_matches_cpu(ck_bn_convention conv, int with_sd) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    ck_bn_desc d;
    ck_bn_desc_init(&d, conv);
    d.activation = CK_ACT_RELU;
    for (size_t si = 0; si < NSHAPES; ++si) {
        shape s = SHAPES[si];
        if ((long)s.n * s.h * s.w == 1)
            continue; /* single-value batches: batchnorm_single_value_matches_cpu */
        size_t cnt = (size_t)s.n * s.c * s.h * s.w;
        float *x = random_buf(cnt, 300 + si, -1.0f, 3.0f);
        float *dy = random_buf(cnt, 400 + si, -1.0f, 1.0f);
        float *gm = random_buf(s.c, 500 + si, 0.5f, 1.5f), *bt = random_buf(s.c, 600, -.5f, .5f);
        float *rm = random_buf(s.c, 700 + si, -0.1f, 0.1f), *rv = random_buf(s.c, 800, 0.5f, 2.f);
        bn_res rg, rc;
        rg.y = malloc(cnt * 4);
        rg.dx = malloc(cnt * 4);
        rg.yi = malloc(cnt * 4);
        rc.y = malloc(cnt * 4);
        rc.dx = malloc(cnt * 4);
        rc.yi = malloc(cnt * 4);
        ck_dropout_desc sd = {0.25f, 77 + si, (uint64_t)(si % 2) * 3};
        for (int li = 0; li < 2; ++li) {
            bn_on(g, LAYOUTS[li], s, &d, with_sd ? &sd : NULL, x, dy, gm, bt, rm, rv, &rg);
            bn_on(c, LAYOUTS[li], s, &d, with_sd ? &sd : NULL, x, dy, gm, bt, rm, rv, &rc);
            /* Tolerances: forward and statistics 2e-5 (fp32 Welford vs double two-pass);
             * gradients 1e-4 of their largest magnitude (fp32 partial sums over N*H*W). */
            expect_close(rg.y, rc.y, cnt, 2e-5, "y", s, li);
            expect_close(rg.yi, rc.yi, cnt, 2e-5, "y inference", s, li);
            const char *names[6] = {"running_mean", "running_var", "saved_mean",
                                    "saved_invstd", "dgamma",      "dbeta"};
            for (int k = 0; k < 6; ++k)
                expect_close(rg.p[k], rc.p[k], s.c, k < 4 ? 2e-5 : 1e-4, names[k], s, li);
            expect_close(rg.dx, rc.dx, cnt, 1e-4, "dx", s, li);
        }
        free(rg.y);
        free(rg.dx);
        free(rg.yi);
        free(rc.y);
        free(rc.dx);
        free(rc.yi);
        free(x);
        free(dy);
        free(gm);
        free(bt);
        free(rm);
        free(rv);
    }
    ck_context_destroy(g);
    ck_context_destroy(c);
}

/* One value per channel (N*H*W == 1): the running statistics (1) or the batch's (2, Keras's
 * variance 0) give the same results on the GPU as on the CPU. */
Test(gpu, batchnorm_single_value_matches_cpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    const shape s = {1, 6, 1, 1};
    float *x = random_buf(6, 901, -1.0f, 3.0f), *dy = random_buf(6, 902, -1.0f, 1.0f);
    float *gm = random_buf(6, 903, 0.5f, 1.5f), *bt = random_buf(6, 904, -.5f, .5f);
    float *rm = random_buf(6, 905, -0.1f, 0.1f), *rv = random_buf(6, 906, 0.5f, 2.f);
    for (int mode = 1; mode <= 2; ++mode) {
        ck_bn_desc d;
        ck_bn_desc_init(&d, CK_BN_KERAS);
        d.activation = CK_ACT_RELU;
        d.single_value_use_running = mode;
        float yg[6], dxg[6], yig[6], yc[6], dxc[6], yic[6];
        bn_res rg = {yg, dxg, yig, {{0}}}, rc = {yc, dxc, yic, {{0}}};
        for (int li = 0; li < 2; ++li) {
            bn_on(g, LAYOUTS[li], s, &d, NULL, x, dy, gm, bt, rm, rv, &rg);
            bn_on(c, LAYOUTS[li], s, &d, NULL, x, dy, gm, bt, rm, rv, &rc);
            expect_close(rg.y, rc.y, 6, 2e-5, mode == 1 ? "y (running)" : "y (batch)", s, li);
            expect_close(rg.dx, rc.dx, 6, 1e-5, "dx", s, li);
            for (int k = 0; k < 6; ++k)
                expect_close(rg.p[k], rc.p[k], 6, 2e-5, "statistics and gradients", s, li);
        }
    }
    free(x), free(dy), free(gm), free(bt), free(rm), free(rv);
    ck_context_destroy(g);
    ck_context_destroy(c);
}

Test(gpu, batchnorm_relu_keras_matches_cpu) {
    gpu_bn_matches_cpu(CK_BN_KERAS, 0);
}
Test(gpu, batchnorm_relu_pytorch_matches_cpu) {
    gpu_bn_matches_cpu(CK_BN_PYTORCH, 0);
}
Test(gpu, batchnorm_relu_spatial_dropout_matches_cpu) {
    gpu_bn_matches_cpu(CK_BN_KERAS, 1);
}

/* Large offset, small spread, many values per thread (batch 256 x 28 x 28): the device's
 * per-thread Welford sums run in double, so the statistics match the CPU's double two-pass ones
 * (a float Welford stops moving its mean once |x - mean| / n < ulp(mean) / 2, here after a few
 * hundred values: m2 then sums squares around a stale mean). mean to 1e-7 of 1000 (two float
 * ulps), invstd (~150 with eps 1e-5) to 1e-4 relative. */
Test(gpu, batchnorm_statistics_with_large_mean) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    const shape s = {256, 8, 28, 28};
    const size_t cnt = (size_t)s.n * s.c * s.h * s.w;
    float *x = random_buf(cnt, 901, -1.0f, 1.0f), *dy = random_buf(cnt, 902, -1.0f, 1.0f);
    for (size_t i = 0; i < cnt; ++i)
        x[i] = 1000.0f + 0.01f * x[i];
    float gm[8], bt[8], rm[8], rv[8];
    for (int k = 0; k < 8; ++k)
        gm[k] = 1.0f, bt[k] = 0.0f, rm[k] = 0.0f, rv[k] = 1.0f;
    ck_bn_desc d;
    ck_bn_desc_init(&d, CK_BN_PYTORCH);
    bn_res rg, rc;
    rg.y = malloc(cnt * 4), rg.dx = malloc(cnt * 4), rg.yi = malloc(cnt * 4);
    rc.y = malloc(cnt * 4), rc.dx = malloc(cnt * 4), rc.yi = malloc(cnt * 4);
    for (int li = 0; li < 2; ++li) {
        bn_on(g, LAYOUTS[li], s, &d, NULL, x, dy, gm, bt, rm, rv, &rg);
        bn_on(c, LAYOUTS[li], s, &d, NULL, x, dy, gm, bt, rm, rv, &rc);
        expect_close(rg.p[2], rc.p[2], 8, 1e-7, "saved_mean", s, li);
        for (int k = 0; k < 8; ++k) {
            cr_assert(fabs(rg.p[3][k] - rc.p[3][k]) <= 1e-4 * fabs(rc.p[3][k]),
                      "layout %d channel %d: saved_invstd %.9g vs %.9g", li, k, rg.p[3][k],
                      rc.p[3][k]);
        }
    }
    free(rg.y), free(rg.dx), free(rg.yi), free(rc.y), free(rc.dx), free(rc.yi), free(x), free(dy);
    ck_context_destroy(g);
    ck_context_destroy(c);
}

/* Same inputs twice on the GPU: bit-identical results (no order-dependent atomics). */
Test(gpu, batchnorm_deterministic) {
    ck_context *g = t_cuda_ctx_or_skip();
    shape s = {64, 32, 26, 26};
    size_t cnt = (size_t)s.n * s.c * s.h * s.w;
    float *x = random_buf(cnt, 1, -1.0f, 3.0f), *dy = random_buf(cnt, 2, -1.0f, 1.0f);
    float *gm = random_buf(s.c, 3, 0.5f, 1.5f), *bt = random_buf(s.c, 4, -.5f, .5f);
    float *rm = random_buf(s.c, 5, -0.1f, 0.1f), *rv = random_buf(s.c, 6, 0.5f, 2.f);
    ck_bn_desc d;
    ck_bn_desc_init(&d, CK_BN_KERAS);
    d.activation = CK_ACT_RELU;
    for (int li = 0; li < 2; ++li) {
        bn_res a, b;
        a.y = malloc(cnt * 4);
        a.dx = malloc(cnt * 4);
        a.yi = malloc(cnt * 4);
        b.y = malloc(cnt * 4);
        b.dx = malloc(cnt * 4);
        b.yi = malloc(cnt * 4);
        bn_on(g, LAYOUTS[li], s, &d, NULL, x, dy, gm, bt, rm, rv, &a);
        bn_on(g, LAYOUTS[li], s, &d, NULL, x, dy, gm, bt, rm, rv, &b);
        cr_assert_eq(memcmp(a.y, b.y, cnt * 4), 0, "y differs between runs");
        cr_assert_eq(memcmp(a.dx, b.dx, cnt * 4), 0, "dx differs between runs");
        for (int k = 0; k < 6; ++k) /* rows hold s.c values; the rest is never written */
            cr_assert_eq(memcmp(a.p[k], b.p[k], (size_t)s.c * 4), 0,
                         "statistic %d differs between runs", k);
        free(a.y);
        free(a.dx);
        free(a.yi);
        free(b.y);
        free(b.dx);
        free(b.yi);
    }
    free(x);
    free(dy);
    free(gm);
    free(bt);
    free(rm);
    free(rv);
    ck_context_destroy(g);
}

Test(gpu, context_reports_cuda) {
    ck_context *g = t_cuda_ctx_or_skip();
    cr_assert_eq(ck_context_device(g), CK_DEVICE_CUDA);
    CK_OK(g, ck_context_synchronize(g));
    ck_context_destroy(g);
}
