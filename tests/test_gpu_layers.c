/* The model's GPU layers (cuDNN conv, cuBLAS dense, the kernels of layers.cu) against their CPU
 * twins (cpu_layers.h). Skipped without a CUDA device.
 * Exact (memcmp) where the kernel repeats the CPU's operations in its order: pooling, GAP,
 * optimizer updates. Within float rounding where the summation order is cuDNN's or cuBLAS's
 * (conv, dense: 1e-4 of the output's scale) or the device math library's (expf, tanhf, erff:
 * 4e-6 relative). */
#include "common.h"

/* a hung device call (a kernel that spins, a collective that waits) fails its test after five
 * minutes instead of holding the whole GPU run */
TestSuite(gpu_layers, .timeout = 300);

#ifdef CNNKIT_HAVE_CUDA
#include "cnnkit/model.h"
#include "gpu_layers.h"
#include "internal.h" /* ck_conv_layout_prefers_nchw */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Device buffer of count floats (a 1-D tensor of ctx), optionally uploaded from host. */
static ck_tensor *dbuf(ck_context *ctx, size_t count, const float *host) {
    ck_tensor *t = NULL;
    CK_OK(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NCHW, (int)count, 1, 1, 1));
    if (host)
        CK_OK(ctx, ck_tensor_upload(ctx, t, host, count));
    else
        CK_OK(ctx, ck_tensor_fill(ctx, t, 0.0f));
    return t;
}

static float *D(ck_tensor *t) {
    return ck_tensor_data(t);
}

static void down(ck_context *ctx, ck_tensor *t, float *host, size_t count) {
    CK_OK(ctx, ck_context_synchronize(ctx));
    CK_OK(ctx, ck_tensor_download(ctx, t, host, count));
}

static float *rnd(size_t n, uint64_t seed, float lo, float hi) {
    float *p = malloc(n * sizeof *p);
    trng r = {seed};
    trng_fill(&r, p, n, lo, hi);
    return p;
}

/* max |a - b| / max(1e-3, max |b|): error relative to the array's scale */
static double scaled_err(const float *a, const float *b, size_t n) {
    double m = 1e-3, e = 0.0;
    for (size_t i = 0; i < n; ++i) {
        if (fabs(b[i]) > m)
            m = fabs(b[i]);
        if (fabs((double)a[i] - b[i]) > e)
            e = fabs((double)a[i] - b[i]);
    }
    return e / m;
}

typedef struct cshape {
    int n, h, w, cin, cout, kh, kw, sh, sw, same;
} cshape;

/* The seed's first conv, 'same' paddings cuDNN can express, and asymmetric ones it cannot
 * (3x3 stride 2 on an even size, 2x2 stride 1: the odd padding row goes to the bottom). */
static const cshape CONVS[] = {
    {5, 28, 28, 1, 32, 3, 3, 1, 1, 0},
    {3, 9, 7, 3, 8, 3, 3, 1, 1, 1},
    {4, 8, 8, 5, 6, 3, 3, 2, 2, 1},
    {2, 5, 6, 4, 3, 2, 2, 1, 1, 1},
    {3, 6, 6, 7, 5, 1, 1, 1, 1, 0},
    {2, 11, 9, 3, 4, 5, 5, 2, 2, 0},
    /* kernel < stride on one axis, asymmetric 'same' on the other: the explicitly padded copy
     * must still cover the whole input (review of 2026-11-29) */
    {3, 10, 10, 2, 4, 1, 3, 2, 2, 1},
};

/* One convolution on the GPU (cuDNN in NHWC, or forced to the NCHW fallback) against the CPU,
 * within tol of the output's scale (dbias, a plain column sum, within 1e-6). */
static void conv_case_tol(ck_context *g, size_t ci, int force_nchw, double tol) {
    const cshape s = CONVS[ci];
    ck_conv_geom geo;
    cr_assert_eq(
        ck_conv_geom_make(&geo, s.n, s.h, s.w, s.cin, s.cout, s.kh, s.kw, s.sh, s.sw, s.same), 0);
    const size_t nx = (size_t)s.n * s.h * s.w * s.cin, nk = (size_t)s.kh * s.kw * s.cin * s.cout;
    const size_t ny = (size_t)s.n * geo.oh * geo.ow * s.cout;
    float *x = rnd(nx, 10 + ci, -1, 1), *k = rnd(nk, 20 + ci, -0.5f, 0.5f);
    float *b = rnd(s.cout, 30 + ci, -0.2f, 0.2f), *dy = rnd(ny, 40 + ci, -1, 1);
    float *y_c = malloc(ny * 4), *dx_c = malloc(nx * 4), *dk_c = malloc(nk * 4),
          *db_c = malloc(s.cout * 4);
    float *y_g = malloc(ny * 4), *dx_g = malloc(nx * 4), *dk_g = malloc(nk * 4),
          *db_g = malloc(s.cout * 4);
    size_t wsf = ck_cpu_conv2d_workspace_floats(&geo);
    float *ws = malloc((wsf ? wsf : 1) * 4);
    ck_cpu_conv2d_forward(&geo, x, k, b, y_c, ws);
    ck_cpu_conv2d_backward(&geo, x, k, dy, dx_c, dk_c, db_c, ws);

    ck_gconv *cv = NULL;
    CK_OK(g, ck_gconv_create_layout(g, &geo, force_nchw, &cv));
    char plan[512];
    ck_gconv_describe(cv, plan, sizeof plan);
    cr_log_info("conv %zu%s: %s", ci, force_nchw ? " (NCHW forced)" : "", plan);
    cr_assert_eq(strncmp(plan, "NCHW", 4) == 0 || !force_nchw, 1, "%s", plan);
    ck_workspace *gw = NULL;
    CK_OK(g, ck_workspace_create(g, &gw, ck_gconv_workspace_bytes(cv)));
    ck_tensor *tx = dbuf(g, nx, x), *tk = dbuf(g, nk, k), *tb = dbuf(g, s.cout, b);
    ck_tensor *tdy = dbuf(g, ny, dy), *ty = dbuf(g, ny, NULL), *tdx = dbuf(g, nx, NULL);
    ck_tensor *tdk = dbuf(g, nk, NULL), *tdb = dbuf(g, s.cout, NULL);
    CK_OK(g, ck_gconv_forward(g, cv, s.n, D(tx), D(tk), D(tb), D(ty), gw->data));
    CK_OK(g, ck_gconv_backward(g, cv, s.n, D(tx), D(tk), D(tdy), D(tdx), D(tdk), D(tdb), gw->data));
    down(g, ty, y_g, ny);
    down(g, tdx, dx_g, nx);
    down(g, tdk, dk_g, nk);
    down(g, tdb, db_g, s.cout);
    cr_expect_lt(scaled_err(y_g, y_c, ny), tol, "conv %zu nchw %d: y", ci, force_nchw);
    cr_expect_lt(scaled_err(dx_g, dx_c, nx), tol, "conv %zu nchw %d: dx", ci, force_nchw);
    cr_expect_lt(scaled_err(dk_g, dk_c, nk), tol, "conv %zu nchw %d: dk", ci, force_nchw);
    cr_expect_lt(scaled_err(db_g, db_c, s.cout), 1e-6, "conv %zu nchw %d: dbias", ci, force_nchw);
    /* a smaller batch through the same plan */
    if (s.n > 1) {
        ck_conv_geom g1 = geo;
        g1.n = 1;
        ck_cpu_conv2d_forward(&g1, x, k, NULL, y_c, ws);
        CK_OK(g, ck_gconv_forward(g, cv, 1, D(tx), D(tk), NULL, D(ty), gw->data));
        down(g, ty, y_g, ny); /* the whole tensor; sample 0 is compared */
        cr_expect_lt(scaled_err(y_g, y_c, ny / s.n), tol, "conv %zu nchw %d: batch 1", ci,
                     force_nchw);
    }
    ck_tensor *all[] = {tx, tk, tb, tdy, ty, tdx, tdk, tdb};
    for (size_t i = 0; i < 8; ++i)
        ck_tensor_destroy(all[i]);
    ck_workspace_destroy(gw);
    ck_gconv_destroy(cv);
    free(x), free(k), free(b), free(dy), free(y_c), free(dx_c), free(dk_c), free(db_c);
    free(y_g), free(dx_g), free(dk_g), free(db_g), free(ws);
}

static void conv_case(ck_context *g, size_t ci, int force_nchw) {
    conv_case_tol(g, ci, force_nchw, 1e-4);
}

Test(gpu_layers, conv_matches_cpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    for (size_t ci = 0; ci < sizeof CONVS / sizeof *CONVS; ++ci)
        conv_case(g, ci, 0);
    ck_context_destroy(g);
}

/* The NCHW fallback (taken when cuDNN offers no deterministic FMA-math NHWC algorithm): the same
 * results through the transposes in the workspace. */
Test(gpu_layers, conv_nchw_fallback_matches_cpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    for (size_t ci = 0; ci < sizeof CONVS / sizeof *CONVS; ++ci)
        conv_case(g, ci, 1);
    ck_context_destroy(g);
}

/* A convolution plan's host memory comes from its context (ck_host_calloc): counted while it
 * lives, returned by destroy, and refused under the context's limit with ALLOC_FAILED and no
 * plan. */
Test(gpu_layers, conv_plan_counts_host_memory) {
    ck_context *g = t_cuda_ctx_or_skip();
    const cshape s = CONVS[1];
    ck_conv_geom geo;
    cr_assert_eq(
        ck_conv_geom_make(&geo, s.n, s.h, s.w, s.cin, s.cout, s.kh, s.kw, s.sh, s.sw, s.same), 0);
    const size_t live0 = ck_context_host_alloc_bytes(g);
    ck_gconv *cv = NULL;
    CK_OK(g, ck_gconv_create(g, &geo, &cv));
    cr_expect_gt(ck_context_host_alloc_bytes(g), live0, "the plan is counted by its context");
    ck_gconv_destroy(cv);
    cr_expect_eq(ck_context_host_alloc_bytes(g), live0, "destroy returns the plan's bytes");
    /* no room for one more byte: the plan is refused before any cuDNN descriptor is made */
    CK_OK(g, ck_context_set_host_alloc_limit(g, live0 + 1));
    cv = (ck_gconv *)&geo; /* overwritten with NULL on failure */
    cr_expect_eq(ck_gconv_create(g, &geo, &cv), CK_STATUS_ALLOC_FAILED);
    cr_expect_null(cv);
    cr_expect_neq(strstr(ck_context_last_error(g), "conv: out of host memory"), NULL, "%s",
                  ck_context_last_error(g));
    cr_expect_eq(ck_context_host_alloc_bytes(g), live0);
    CK_OK(g, ck_context_set_host_alloc_limit(g, 0));
    CK_OK(g, ck_gconv_create(g, &geo, &cv));
    ck_gconv_destroy(cv);
    ck_context_destroy(g);
}

/* The cases the speed settings run (the seed's first conv, a stride-2 and a 2x2 asymmetric
 * 'same'): cudnnFind runs every algorithm, slow under the sanitizers (SANITIZER_FILTER). */
static const size_t SPEED_CONVS[] = {0, 2, 3};

/* CK_CONV_ALGO_FASTEST, strict fp32: algorithms timed by cudnnFind (non-deterministic ones
 * allowed), still fp32 FMA math: the same 1e-4 as the deterministic plans; a shape planned again
 * on the context comes from its cache. */
Test(gpu_layers, conv_fastest_matches_cpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    CK_OK(g, ck_context_set_conv_algo(g, CK_CONV_ALGO_FASTEST));
    for (size_t i = 0; i < sizeof SPEED_CONVS / sizeof *SPEED_CONVS; ++i) {
        conv_case_tol(g, SPEED_CONVS[i], 0, 1e-4);
        conv_case_tol(g, SPEED_CONVS[i], 1, 1e-4);
    }
    ck_conv_geom geo;
    const cshape s = CONVS[0];
    cr_assert_eq(
        ck_conv_geom_make(&geo, s.n, s.h, s.w, s.cin, s.cout, s.kh, s.kw, s.sh, s.sw, s.same), 0);
    ck_gconv *a = NULL, *b = NULL;
    CK_OK(g, ck_gconv_create(g, &geo, &a));
    CK_OK(g, ck_gconv_create(g, &geo, &b));
    char pa[512], pb[512];
    ck_gconv_describe(a, pa, sizeof pa);
    ck_gconv_describe(b, pb, sizeof pb);
    cr_log_info("fastest: %s | again: %s", pa, pb);
    cr_expect_neq(strstr(pa, "fastest"), NULL, "%s", pa);
    cr_expect_neq(strstr(pa, "fma math"), NULL, "strict fp32 keeps FMA math: %s", pa);
    cr_expect_neq(strstr(pb, ", cached)"), NULL, "the second plan is the cached one: %s", pb);
    cr_expect_eq(strncmp(pa, pb, (size_t)(strstr(pa, "fastest") - pa)), 0, "%s | %s", pa, pb);
    cr_expect_eq(ck_gconv_workspace_bytes(a), ck_gconv_workspace_bytes(b));
    ck_gconv_destroy(a);
    ck_gconv_destroy(b);
    ck_context_destroy(g);
}

/* Layout by measurement (issue 14 item 4): under CK_CONV_ALGO_FASTEST each shape is timed in
 * NHWC and in NCHW, the NCHW step with its transposes (timed too), and the faster kept, NCHW only
 * past CK_CONV_LAYOUT_MARGIN; the describe line shows both steps. Forced NCHW is not measured. */
Test(gpu_layers, conv_fastest_measures_layouts) {
    ck_context *g = t_cuda_ctx_or_skip();
    CK_OK(g, ck_context_set_conv_algo(g, CK_CONV_ALGO_FASTEST));
    int compared = 0;
    for (size_t i = 0; i < sizeof SPEED_CONVS / sizeof *SPEED_CONVS; ++i) {
        const cshape s = CONVS[SPEED_CONVS[i]];
        ck_conv_geom geo;
        cr_assert_eq(
            ck_conv_geom_make(&geo, s.n, s.h, s.w, s.cin, s.cout, s.kh, s.kw, s.sh, s.sw, s.same),
            0);
        ck_gconv *a = NULL, *f = NULL;
        CK_OK(g, ck_gconv_create(g, &geo, &a));
        char pa[512], pf[512];
        ck_gconv_describe(a, pa, sizeof pa);
        cr_log_info("conv case %zu: %s", SPEED_CONVS[i], pa);
        const char *st = strstr(pa, "step NHWC ");
        /* a direction cudnnFind could not time (no strict-fp32 candidate in a layout) leaves
         * NHWC and says so, no NHWC plan at all leaves the NCHW fallback; at least one shape
         * must compare */
        const int fallback = !strncmp(pa, "NCHW (fallback)", 15);
        cr_assert(st || strstr(pa, "layouts not compared: ") || fallback, "%s", pa);
        CK_OK(g, ck_gconv_create_layout(g, &geo, 1, &f));
        ck_gconv_describe(f, pf, sizeof pf);
        cr_expect_eq(strncmp(pf, "NCHW (fallback)", 15), 0, "%s", pf);
        cr_expect_null(strstr(pf, "step NHWC"), "%s", pf);
        cr_expect_null(strstr(pf, "layouts not compared"), "forced NCHW compares nothing: %s", pf);
        ck_gconv_destroy(f);
        if (!st) {
            cr_expect(fallback || !strncmp(pa, "NHWC,", 5), "%s", pa);
            ck_gconv_destroy(a);
            continue;
        }
        ++compared;
        float nhwc = -1, nchw = -1, tr = -1;
        cr_assert_eq(
            sscanf(st, "step NHWC %f ms vs NCHW %f ms (%f of it transposes)", &nhwc, &nchw, &tr), 3,
            "%s", pa);
        cr_expect_gt(tr, 0.0f, "%s", pa);
        cr_expect_geq(nchw, tr, "%s", pa);
        const int took_nchw = !strncmp(pa, "NCHW (timed faster)", 19);
        cr_expect(took_nchw || !strncmp(pa, "NHWC,", 5), "%s", pa);
        /* the printed 3 decimals decide unless they sit at the margin */
        if (fabsf(nchw - (1.0f - CK_CONV_LAYOUT_MARGIN) * nhwc) > 2e-3f)
            cr_expect_eq(took_nchw, ck_conv_layout_prefers_nchw(nhwc, nchw), "%s", pa);
        ck_gconv_destroy(a);
    }
    cr_expect_geq(compared, 1, "no shape had both layouts timed");
    ck_context_destroy(g);
}

/* CK_MATH_TF32 (fastest and deterministic): inputs rounded to TF32's 10-bit mantissa, fp32
 * accumulation: within 5e-3 of the output's scale (about 10x the expected 2^-11). */
Test(gpu_layers, conv_tf32_matches_cpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    CK_OK(g, ck_context_set_math(g, CK_MATH_TF32));
    for (int fastest = 0; fastest < 2; ++fastest) {
        CK_OK(g, ck_context_set_conv_algo(g, fastest ? CK_CONV_ALGO_FASTEST
                                                     : CK_CONV_ALGO_DETERMINISTIC));
        for (size_t i = 0; i < sizeof SPEED_CONVS / sizeof *SPEED_CONVS; ++i) {
            conv_case_tol(g, SPEED_CONVS[i], 0, 5e-3);
            conv_case_tol(g, SPEED_CONVS[i], 1, 5e-3);
        }
    }
    ck_context_destroy(g);
}

/* The setters on a CUDA context: bad values refused naming the argument, the cuBLAS math mode
 * follows. */
Test(gpu_layers, settings_on_cuda_context) {
    ck_context *g = t_cuda_ctx_or_skip();
    /* the context's own device memory is its cuBLAS workspace (bench_train's context_bytes) */
    cr_expect_eq(ck_context_device_bytes(g), ck_cublas_workspace_bytes(g));
    cr_expect_gt(ck_context_device_bytes(g), 0);
    cr_expect_eq(ck_context_set_conv_algo(g, (ck_conv_algo)5), CK_STATUS_BAD_PARAM);
    cr_expect_neq(strstr(ck_context_last_error(g), "algo:"), NULL, "%s", ck_context_last_error(g));
    cr_expect_eq(ck_context_set_math(g, (ck_math)5), CK_STATUS_BAD_PARAM);
    cr_expect_neq(strstr(ck_context_last_error(g), "math:"), NULL, "%s", ck_context_last_error(g));
    CK_OK(g, ck_context_set_math(g, CK_MATH_TF32));
    cr_expect_eq(ck_context_math(g), CK_MATH_TF32);
    CK_OK(g, ck_context_set_math(g, CK_MATH_STRICT_FP32));
    cr_expect_eq(ck_context_math(g), CK_MATH_STRICT_FP32);
    ck_context_destroy(g);
}

/* Dense under CK_MATH_TF32 (cuBLAS CUBLAS_TF32_TENSOR_OP_MATH), at a size where cuBLAS uses
 * tensor cores: within 5e-3 of the output's scale; back to strict fp32: 1e-5 again. */
Test(gpu_layers, dense_tf32_matches_cpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    const int n = 64, in = 256, out = 128;
    const size_t nx = (size_t)n * in, nk = (size_t)in * out, ny = (size_t)n * out;
    float *x = rnd(nx, 5, -1, 1), *k = rnd(nk, 6, -0.3f, 0.3f), *b = rnd(out, 7, -0.1f, 0.1f);
    float *dy = rnd(ny, 8, -1, 1);
    float *y_c = malloc(ny * 4), *dx_c = malloc(nx * 4), *dk_c = malloc(nk * 4),
          *db_c = malloc(out * 4);
    float *y_g = malloc(ny * 4), *dx_g = malloc(nx * 4), *dk_g = malloc(nk * 4),
          *db_g = malloc(out * 4);
    ck_cpu_dense_forward(n, in, out, x, k, b, y_c);
    ck_cpu_dense_backward(n, in, out, x, k, dy, dx_c, dk_c, db_c);
    ck_workspace *gw = NULL;
    CK_OK(g, ck_workspace_create(g, &gw, ck_gdense_workspace_bytes(out)));
    ck_tensor *tx = dbuf(g, nx, x), *tk = dbuf(g, nk, k), *tb = dbuf(g, out, b);
    ck_tensor *tdy = dbuf(g, ny, dy), *ty = dbuf(g, ny, NULL), *tdx = dbuf(g, nx, NULL);
    ck_tensor *tdk = dbuf(g, nk, NULL), *tdb = dbuf(g, out, NULL);
    for (int tf32 = 1; tf32 >= 0; --tf32) {
        const double tol = tf32 ? 5e-3 : 1e-5;
        CK_OK(g, ck_context_set_math(g, tf32 ? CK_MATH_TF32 : CK_MATH_STRICT_FP32));
        CK_OK(g, ck_gdense_forward(g, n, in, out, D(tx), D(tk), D(tb), D(ty)));
        CK_OK(g, ck_gdense_backward(g, n, in, out, D(tx), D(tk), D(tdy), D(tdx), D(tdk), D(tdb),
                                    gw->data));
        down(g, ty, y_g, ny);
        down(g, tdx, dx_g, nx);
        down(g, tdk, dk_g, nk);
        down(g, tdb, db_g, out);
        cr_log_info("dense tf32 %d: y %.2e dx %.2e dk %.2e", tf32, scaled_err(y_g, y_c, ny),
                    scaled_err(dx_g, dx_c, nx), scaled_err(dk_g, dk_c, nk));
        cr_expect_lt(scaled_err(y_g, y_c, ny), tol, "dense tf32 %d: y", tf32);
        cr_expect_lt(scaled_err(dx_g, dx_c, nx), tol, "dense tf32 %d: dx", tf32);
        cr_expect_lt(scaled_err(dk_g, dk_c, nk), tol, "dense tf32 %d: dk", tf32);
        cr_expect_lt(scaled_err(db_g, db_c, out), 1e-6, "dense tf32 %d: dbias", tf32);
    }
    ck_tensor *all[] = {tx, tk, tb, tdy, ty, tdx, tdk, tdb};
    for (size_t i = 0; i < 8; ++i)
        ck_tensor_destroy(all[i]);
    ck_workspace_destroy(gw);
    free(x), free(k), free(b), free(dy), free(y_c), free(dx_c), free(dk_c), free(db_c);
    free(y_g), free(dx_g), free(dk_g), free(db_g);
    ck_context_destroy(g);
}

Test(gpu_layers, dense_matches_cpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    const int n = 7, in = 33, out = 10;
    float *x = rnd((size_t)n * in, 1, -1, 1), *k = rnd((size_t)in * out, 2, -0.3f, 0.3f);
    float *b = rnd(out, 3, -0.1f, 0.1f), *dy = rnd((size_t)n * out, 4, -1, 1);
    float y_c[70], dx_c[231], dk_c[330], db_c[10], y_g[70], dx_g[231], dk_g[330], db_g[10];
    ck_cpu_dense_forward(n, in, out, x, k, b, y_c);
    ck_cpu_dense_backward(n, in, out, x, k, dy, dx_c, dk_c, db_c);
    ck_workspace *gw = NULL;
    CK_OK(g, ck_workspace_create(g, &gw, ck_gdense_workspace_bytes(out)));
    ck_tensor *tx = dbuf(g, 231, x), *tk = dbuf(g, 330, k), *tb = dbuf(g, 10, b);
    ck_tensor *tdy = dbuf(g, 70, dy), *ty = dbuf(g, 70, NULL), *tdx = dbuf(g, 231, NULL);
    ck_tensor *tdk = dbuf(g, 330, NULL), *tdb = dbuf(g, 10, NULL);
    CK_OK(g, ck_gdense_forward(g, n, in, out, D(tx), D(tk), D(tb), D(ty)));
    CK_OK(g, ck_gdense_backward(g, n, in, out, D(tx), D(tk), D(tdy), D(tdx), D(tdk), D(tdb),
                                gw->data));
    down(g, ty, y_g, 70);
    down(g, tdx, dx_g, 231);
    down(g, tdk, dk_g, 330);
    down(g, tdb, db_g, 10);
    cr_expect_lt(scaled_err(y_g, y_c, 70), 1e-5, "dense y");
    cr_expect_lt(scaled_err(dx_g, dx_c, 231), 1e-5, "dense dx");
    cr_expect_lt(scaled_err(dk_g, dk_c, 330), 1e-5, "dense dk");
    cr_expect_lt(scaled_err(db_g, db_c, 10), 1e-6, "dense dbias");
    ck_tensor *all[] = {tx, tk, tb, tdy, ty, tdx, tdk, tdb};
    for (size_t i = 0; i < 8; ++i)
        ck_tensor_destroy(all[i]);
    ck_workspace_destroy(gw);
    free(x), free(k), free(b), free(dy);
    ck_context_destroy(g);
}

/* Pooling and GAP repeat the CPU's operations: bit-identical, including ties (inputs rounded to
 * a coarse grid so windows hold equal maxima) and overlapping windows. */
Test(gpu_layers, pool_and_gap_bit_identical) {
    ck_context *g = t_cuda_ctx_or_skip();
    const cshape P[] = {{3, 8, 8, 5, 5, 2, 2, 2, 2, 0},
                        {2, 7, 9, 4, 4, 3, 3, 2, 2, 1},
                        {2, 7, 7, 3, 3, 3, 3, 1, 1, 1},
                        {4, 5, 6, 2, 2, 2, 3, 2, 1, 0},
                        {1, 1, 1, 3, 3, 2, 2, 2, 2, 1}};
    for (size_t pi = 0; pi < sizeof P / sizeof *P; ++pi)
        for (int is_max = 0; is_max < 2; ++is_max) {
            const cshape s = P[pi];
            ck_conv_geom geo;
            cr_assert_eq(ck_conv_geom_make(&geo, s.n, s.h, s.w, s.cin, s.cin, s.kh, s.kw, s.sh,
                                           s.sw, s.same),
                         0);
            const size_t nx = (size_t)s.n * s.h * s.w * s.cin;
            const size_t ny = (size_t)s.n * geo.oh * geo.ow * s.cin;
            float *x = rnd(nx, 50 + pi, -2, 2), *dy = rnd(ny, 60 + pi, -1, 1);
            for (size_t i = 0; i < nx; ++i)
                x[i] = roundf(x[i] * 2.0f) / 2.0f; /* ties */
            float *y_c = malloc(ny * 4), *y_g = malloc(ny * 4), *dx_c = malloc(nx * 4),
                  *dx_g = malloc(nx * 4);
            ck_cpu_pool_forward(&geo, is_max, x, y_c);
            ck_cpu_pool_backward(&geo, is_max, x, dy, dx_c);
            ck_tensor *tx = dbuf(g, nx, x), *tdy = dbuf(g, ny, dy), *ty = dbuf(g, ny, NULL),
                      *tdx = dbuf(g, nx, NULL);
            cr_assert_eq(ck_cuda_pool_forward(geo, is_max, D(tx), D(ty), CK_KDT_F32, g->stream), 0);
            cr_assert_eq(
                ck_cuda_pool_backward(geo, is_max, D(tx), D(tdy), D(tdx), CK_KDT_F32, g->stream),
                0);
            down(g, ty, y_g, ny);
            down(g, tdx, dx_g, nx);
            cr_expect_eq(memcmp(y_g, y_c, ny * 4), 0, "pool %zu max %d: y", pi, is_max);
            cr_expect_eq(memcmp(dx_g, dx_c, nx * 4), 0, "pool %zu max %d: dx", pi, is_max);
            if (is_max) { /* GAP on the same input */
                const int hw = s.h * s.w;
                float *gy_c = malloc((size_t)s.n * s.cin * 4),
                      *gy_g = malloc((size_t)s.n * s.cin * 4);
                ck_cpu_gap_forward(s.n, hw, s.cin, x, gy_c);
                ck_cpu_gap_backward(s.n, hw, s.cin, gy_c, dx_c);
                ck_tensor *tgy = dbuf(g, (size_t)s.n * s.cin, NULL);
                cr_assert_eq(
                    ck_cuda_gap_forward(s.n, hw, s.cin, D(tx), D(tgy), CK_KDT_F32, g->stream), 0);
                cr_assert_eq(
                    ck_cuda_gap_backward(s.n, hw, s.cin, D(tgy), D(tdx), CK_KDT_F32, g->stream), 0);
                down(g, tgy, gy_g, (size_t)s.n * s.cin);
                down(g, tdx, dx_g, nx);
                cr_expect_eq(memcmp(gy_g, gy_c, (size_t)s.n * s.cin * 4), 0, "gap %zu: y", pi);
                cr_expect_eq(memcmp(dx_g, dx_c, nx * 4), 0, "gap %zu: dx", pi);
                ck_tensor_destroy(tgy);
                free(gy_c), free(gy_g);
            }
            ck_tensor_destroy(tx), ck_tensor_destroy(tdy), ck_tensor_destroy(ty),
                ck_tensor_destroy(tdx);
            free(x), free(dy), free(y_c), free(y_g), free(dx_c), free(dx_g);
        }
    ck_context_destroy(g);
}

Test(gpu_layers, activations_match_cpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    const size_t cnt = 4096;
    const int c = 16;
    float *x = rnd(cnt, 7, -6, 6), *dy = rnd(cnt, 8, -1, 1);
    float *y_c = malloc(cnt * 4), *y_g = malloc(cnt * 4), *dx_c = malloc(cnt * 4),
          *dx_g = malloc(cnt * 4);
    ck_tensor *tx = dbuf(g, cnt, x), *tdy = dbuf(g, cnt, dy), *ty = dbuf(g, cnt, NULL),
              *tdx = dbuf(g, cnt, NULL);
    for (int a = CK_ACT_NONE; a <= CK_ACT_SWISH; ++a) {
        const float alpha = a == CK_ACT_ELU ? 1.0f : 0.3f;
        ck_cpu_activation_forward((ck_activation)a, alpha, x, y_c, cnt, c);
        ck_cpu_activation_backward((ck_activation)a, alpha, x, y_c, dy, dx_c, cnt, c);
        cr_assert_eq(
            ck_cuda_activation_forward(a, alpha, D(tx), D(ty), cnt, c, CK_KDT_F32, g->stream), 0);
        cr_assert_eq(ck_cuda_activation_backward(a, alpha, D(tx), D(ty), D(tdy), D(tdx), cnt, c,
                                                 CK_KDT_F32, g->stream),
                     0);
        down(g, ty, y_g, cnt);
        down(g, tdx, dx_g, cnt);
        cr_expect_lt(t_max_rel_err(y_g, y_c, cnt), 4e-6, "activation %s: y",
                     ck_activation_name((ck_activation)a));
        cr_expect_lt(t_max_rel_err(dx_g, dx_c, cnt), 4e-6, "activation %s: dx",
                     ck_activation_name((ck_activation)a));
    }
    ck_tensor_destroy(tx), ck_tensor_destroy(tdy), ck_tensor_destroy(ty), ck_tensor_destroy(tdx);
    free(x), free(dy), free(y_c), free(y_g), free(dx_c), free(dx_g);
    ck_context_destroy(g);
}

Test(gpu_layers, softmax_xent_matches_cpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    const int n = 37, classes = 10;
    float *z = rnd((size_t)n * classes, 9, -8, 8);
    int32_t lab[37];
    for (int i = 0; i < n; ++i)
        lab[i] = (i * 7) % classes;
    float dz_c[370], dz_g[370];
    double loss_c = 0;
    int ok_c = 0;
    ck_cpu_softmax_xent(n, classes, z, lab, dz_c, &loss_c, &ok_c);
    ck_tensor *tz = dbuf(g, 370, z), *tdz = dbuf(g, 370, NULL);
    /* int32 labels and the ck_kloss result travel as raw bytes in float tensors */
    float lab_bits[37], out_bits[sizeof(ck_kloss) / 4];
    memcpy(lab_bits, lab, sizeof lab);
    ck_tensor *tlab = dbuf(g, 37, lab_bits), *tout = dbuf(g, sizeof(ck_kloss) / 4, NULL);
    ck_workspace *ws = NULL;
    CK_OK(g, ck_workspace_create(g, &ws, ck_cuda_xent_workspace_bytes(n)));
    cr_assert_eq(ck_cuda_softmax_xent(n, classes, D(tz), (const int32_t *)D(tlab), D(tdz),
                                      (ck_kloss *)D(tout), ws->data, g->stream),
                 0);
    ck_kloss out;
    down(g, tout, out_bits, sizeof(ck_kloss) / 4);
    memcpy(&out, out_bits, sizeof out);
    down(g, tdz, dz_g, 370);
    cr_expect_lt(fabs(out.loss_sum - loss_c), 1e-9 * fabs(loss_c), "loss %g vs %g", out.loss_sum,
                 loss_c);
    cr_expect_eq(out.correct, ok_c);
    cr_expect_lt(t_max_rel_err(dz_g, dz_c, 370), 1e-7, "dlogits");
    ck_tensor_destroy(tz), ck_tensor_destroy(tdz), ck_tensor_destroy(tlab), ck_tensor_destroy(tout);
    ck_workspace_destroy(ws);
    free(z);
    ck_context_destroy(g);
}

/* The batch totals of the loss kernel (a one-block tree reduction): the CPU's sums within double
 * rounding, the exact count of correct samples, and the same bits on every run, for batches
 * around the block size and far above it. */
Test(gpu_layers, xent_totals_deterministic_and_match_cpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    const int sizes[] = {1, 255, 256, 257, 5003};
    const int classes = 7;
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; ++k) {
        const int n = sizes[k];
        const size_t nz = (size_t)n * classes;
        float *z = rnd(nz, 90 + k, -6, 6), *lab_bits = malloc((size_t)n * 4);
        int32_t *lab = malloc((size_t)n * sizeof *lab);
        trng r = {77 + k};
        for (int i = 0; i < n; ++i)
            lab[i] = (int32_t)(trng_u32(&r) % classes);
        memcpy(lab_bits, lab, (size_t)n * 4);
        double loss_c = 0.0;
        int ok_c = 0;
        ck_cpu_softmax_xent(n, classes, z, lab, NULL, &loss_c, &ok_c);
        ck_tensor *tz = dbuf(g, nz, z), *tlab = dbuf(g, (size_t)n, lab_bits);
        ck_tensor *tout = dbuf(g, sizeof(ck_kloss) / 4, NULL);
        ck_workspace *ws = NULL;
        CK_OK(g, ck_workspace_create(g, &ws, ck_cuda_xent_workspace_bytes(n)));
        ck_kloss out[2];
        for (int run = 0; run < 2; ++run) {
            float bits[sizeof(ck_kloss) / 4];
            cr_assert_eq(ck_cuda_softmax_xent(n, classes, D(tz), (const int32_t *)D(tlab), NULL,
                                              (ck_kloss *)D(tout), ws->data, g->stream),
                         0);
            down(g, tout, bits, sizeof(ck_kloss) / 4);
            memcpy(&out[run], bits, sizeof out[run]);
        }
        cr_expect_eq(memcmp(&out[0].loss_sum, &out[1].loss_sum, sizeof(double)), 0,
                     "n %d: loss sum differs between runs", n);
        cr_expect_lt(fabs(out[0].loss_sum - loss_c), 1e-12 * fabs(loss_c) + 1e-300,
                     "n %d: loss %.17g vs CPU %.17g", n, out[0].loss_sum, loss_c);
        cr_expect_eq(out[0].correct, ok_c, "n %d: correct %d vs CPU %d", n, out[0].correct, ok_c);
        ck_tensor_destroy(tz), ck_tensor_destroy(tlab), ck_tensor_destroy(tout);
        ck_workspace_destroy(ws);
        free(z), free(lab_bits), free(lab);
    }
    ck_context_destroy(g);
}

/* The optimizers compute each element with the same float operations (ck_math.h): bit-exact. */
Test(gpu_layers, optimizers_bit_identical) {
    ck_context *g = t_cuda_ctx_or_skip();
    const size_t cnt = 1000;
    float *p = rnd(cnt, 11, -1, 1), *gr = rnd(cnt, 12, -0.1f, 0.1f);
    float *m = calloc(cnt, 4), *v = calloc(cnt, 4), *r_g = malloc(cnt * 4);
    ck_tensor *tp = dbuf(g, cnt, p), *tg = dbuf(g, cnt, gr), *tm = dbuf(g, cnt, NULL),
              *tv = dbuf(g, cnt, NULL);
    for (long step = 1; step <= 3; ++step) {
        ck_cpu_adam_update(p, gr, m, v, cnt, 1e-3f, 0.9f, 0.999f, 1e-7f, 0.01f, step);
        const double t = (double)step;
        /* the step size exactly as ck_cpu_adam_update forms it: from the float arguments */
        const float alpha = (float)((double)1e-3f * sqrt(1.0 - pow((double)0.999f, t)) /
                                    (1.0 - pow((double)0.9f, t)));
        cr_assert_eq(ck_cuda_adam(D(tp), D(tg), D(tm), D(tv), cnt, alpha, NULL, 0.9f, 0.999f, 1e-7f,
                                  1e-3f * 0.01f, NULL, g->stream),
                     0);
    }
    down(g, tp, r_g, cnt);
    cr_expect_eq(memcmp(r_g, p, cnt * 4), 0, "adam parameters differ from the CPU's");
    /* SGD with nesterov momentum */
    for (int step = 0; step < 3; ++step) {
        ck_cpu_sgd_update(p, gr, v, cnt, 0.01f, 0.9f, 1, 0.0f);
        cr_assert_eq(ck_cuda_sgd(D(tp), D(tg), D(tv), cnt, 0.01f, 0.9f, 1, 0.0f, NULL, g->stream),
                     0);
    }
    down(g, tp, r_g, cnt);
    cr_expect_eq(memcmp(r_g, p, cnt * 4), 0, "sgd parameters differ from the CPU's");
    ck_tensor_destroy(tp), ck_tensor_destroy(tg), ck_tensor_destroy(tm), ck_tensor_destroy(tv);
    free(p), free(gr), free(m), free(v), free(r_g);
    ck_context_destroy(g);
}

/* The optimizer kernels' guard: a failed step (the non-finite-gradient flag, or a non-finite
 * loss) changes neither the parameters nor the optimizer state; a good step updates them. */
Test(gpu_layers, optimizer_guard_skips_failed_steps) {
    ck_context *g = t_cuda_ctx_or_skip();
    const size_t cnt = 300;
    float *p = rnd(cnt, 21, -1, 1), *gr = rnd(cnt, 22, -0.1f, 0.1f), *r = malloc(cnt * 4);
    float *zeros = calloc(cnt, 4);
    const ck_kloss cases[3] = {{1.0, 0, 1}, {NAN, 0, 0}, {2.5, 3, 0}};
    _Static_assert(sizeof(ck_kloss) == 4 * sizeof(float), "ck_kloss in a 4-float buffer");
    for (int k = 0; k < 3; ++k)
        for (int opt = 0; opt < 2; ++opt) {
            float host[4];
            memcpy(host, &cases[k], sizeof host);
            ck_tensor *tl = dbuf(g, 4, host), *tp = dbuf(g, cnt, p), *tg = dbuf(g, cnt, gr);
            ck_tensor *tm = dbuf(g, cnt, NULL), *tv = dbuf(g, cnt, NULL);
            const ck_kloss *guard = (const ck_kloss *)(void *)D(tl);
            const int e = opt == 0 ? ck_cuda_adam(D(tp), D(tg), D(tm), D(tv), cnt, 1e-3f, NULL,
                                                  0.9f, 0.999f, 1e-7f, 0.0f, guard, g->stream)
                                   : ck_cuda_sgd(D(tp), D(tg), D(tv), cnt, 0.01f, 0.9f, 0, 0.0f,
                                                 guard, g->stream);
            cr_assert_eq(e, 0);
            down(g, tp, r, cnt);
            const int same = memcmp(r, p, cnt * 4) == 0;
            down(g, tv, r, cnt);
            const int state_same = memcmp(r, zeros, cnt * 4) == 0;
            if (k < 2)
                cr_expect(same && state_same, "case %d, %s: a failed step changed the model", k,
                          opt ? "sgd" : "adam");
            else
                cr_expect(!same && !state_same, "%s: a good step must update",
                          opt ? "sgd" : "adam");
            ck_tensor_destroy(tl), ck_tensor_destroy(tp), ck_tensor_destroy(tg);
            ck_tensor_destroy(tm), ck_tensor_destroy(tv);
        }
    free(p), free(gr), free(r), free(zeros);
    ck_context_destroy(g);
}

/* The pooling kernels against cuDNN's pooling, the library reference (symmetric padding only):
 * identical results, on data without ties (cuDNN's choice among equal maxima is its own). */
Test(gpu_layers, pool_matches_cudnn) {
    ck_context *g = t_cuda_ctx_or_skip();
    const cshape P[] = {{16, 24, 24, 32, 32, 2, 2, 2, 2, 0},
                        {8, 10, 10, 64, 64, 2, 2, 2, 2, 0},
                        {4, 9, 9, 5, 5, 3, 3, 2, 2, 1},
                        {3, 7, 7, 3, 3, 3, 3, 1, 1, 1}};
    for (size_t pi = 0; pi < sizeof P / sizeof *P; ++pi)
        for (int is_max = 0; is_max < 2; ++is_max) {
            const cshape s = P[pi];
            ck_conv_geom geo;
            cr_assert_eq(ck_conv_geom_make(&geo, s.n, s.h, s.w, s.cin, s.cin, s.kh, s.kw, s.sh,
                                           s.sw, s.same),
                         0);
            const size_t nx = (size_t)s.n * s.h * s.w * s.cin;
            const size_t ny = (size_t)s.n * geo.oh * geo.ow * s.cin;
            float *x = rnd(nx, 70 + pi, -2, 2), *dy = rnd(ny, 80 + pi, -1, 1);
            float *a = malloc(nx * 4), *b = malloc(nx * 4);
            ck_tensor *tx = dbuf(g, nx, x), *tdy = dbuf(g, ny, dy), *ty = dbuf(g, ny, NULL),
                      *ty2 = dbuf(g, ny, NULL), *tdx = dbuf(g, nx, NULL), *tdx2 = dbuf(g, nx, NULL);
            cr_assert_eq(ck_cuda_pool_forward(geo, is_max, D(tx), D(ty), CK_KDT_F32, g->stream), 0);
            CK_OK(g, ck_gpool_cudnn(g, &geo, is_max, 0, D(tx), NULL, NULL, D(ty2)));
            cr_assert_eq(
                ck_cuda_pool_backward(geo, is_max, D(tx), D(tdy), D(tdx), CK_KDT_F32, g->stream),
                0);
            CK_OK(g, ck_gpool_cudnn(g, &geo, is_max, 1, D(tx), D(ty2), D(tdy), D(tdx2)));
            down(g, ty, a, ny);
            down(g, ty2, b, ny);
            cr_expect_lt(t_max_rel_err(a, b, ny), is_max ? 0.0 + 1e-30 : 1e-6,
                         "pool %zu max %d: forward differs from cuDNN", pi, is_max);
            down(g, tdx, a, nx);
            down(g, tdx2, b, nx);
            cr_expect_lt(t_max_rel_err(a, b, nx), 1e-6,
                         "pool %zu max %d: backward differs from cuDNN", pi, is_max);
            ck_tensor *all[] = {tx, tdy, ty, ty2, tdx, tdx2};
            for (size_t i = 0; i < 6; ++i)
                ck_tensor_destroy(all[i]);
            free(x), free(dy), free(a), free(b);
        }
    ck_context_destroy(g);
}

#else
Test(gpu_layers, skipped_without_cuda_build) {
    t_gpu_unavailable("built without the CUDA backend");
}
#endif
