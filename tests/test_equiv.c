/* Exact equivalences of layer orders, used by the planner (src/host/model/plan.c), and their
 * limits.
 *
 * Part 1 proves each equivalence numerically on the CPU functions with the SAME masks (a mask
 * depends on (seed, offset, rate, shape) only): bit-exact where the math is exact, within a
 * stated bound otherwise; negative tests show the non-equivalences. Part 2 reproduces the
 * derivations of docs/evidence (Li et al. 2019 variance shift, q^(k^2), the BN constant) in
 * miniature. Part 3 checks the planner: the plan of the seed model, the fused-vs-unfused
 * training comparison, layer-output lookup and checkpoints across plans. */
#include "common.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ck_math.h"
#include "cnnkit/model.h"
#include "cpu_layers.h"
#include "model_internal.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static ck_tensor *nhwc(ck_context *ctx, int n, int h, int w, int c) {
    ck_tensor *t = NULL;
    CK_OK(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NHWC, n, c, h, w));
    return t;
}

static void fill_normal(float *p, size_t n, uint64_t seed) {
    trng r = {seed};
    for (size_t i = 0; i < n; ++i)
        p[i] = trng_normal(&r);
}

static ck_conv_geom pool_geom(int n, int h, int w, int c, int k, int s, int same) {
    ck_conv_geom g;
    cr_assert_eq(ck_conv_geom_make(&g, n, h, w, c, c, k, k, s, s, same), 0);
    return g;
}

/* Number of positions where a and b differ bitwise, and where they differ as values. */
static size_t bit_diffs(const float *a, const float *b, size_t n) {
    size_t d = 0;
    for (size_t i = 0; i < n; ++i)
        d += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return d;
}

static size_t value_diffs(const float *a, const float *b, size_t n) {
    size_t d = 0;
    for (size_t i = 0; i < n; ++i)
        d += !(a[i] == b[i]);
    return d;
}

/* Spatial dropout / element dropout through the public API on NHWC host tensors (CPU). */
static void sdrop(ck_context *ctx, float rate, uint64_t offset, ck_tensor *x, ck_tensor *y) {
    ck_dropout_desc d = {rate, offset, 0};
    CK_OK(ctx, ck_spatial_dropout_forward(ctx, &d, CK_MODE_TRAINING, x, y, NULL));
}
static void sdrop_bwd(ck_context *ctx, float rate, uint64_t offset, ck_tensor *dy, ck_tensor *dx) {
    ck_dropout_desc d = {rate, offset, 0};
    CK_OK(ctx, ck_spatial_dropout_backward(ctx, &d, CK_MODE_TRAINING, dy, dx, NULL));
}
static void edrop(ck_context *ctx, float rate, uint64_t offset, ck_tensor *x, ck_tensor *y) {
    ck_dropout_desc d = {rate, offset, 0};
    CK_OK(ctx, ck_dropout_forward(ctx, &d, CK_MODE_TRAINING, x, y, NULL));
}
static void edrop_bwd(ck_context *ctx, float rate, uint64_t offset, ck_tensor *dy, ck_tensor *dx) {
    ck_dropout_desc d = {rate, offset, 0};
    CK_OK(ctx, ck_dropout_backward(ctx, &d, CK_MODE_TRAINING, dy, dx, NULL));
}

#define D(t) ck_tensor_data(t)

/* ---- Part 1: equivalences on the CPU functions --------------------------------------------- */

/* SpatialDropout <-> MaxPool, forward: max_i(s x_i) = s max_i(x_i), s in {0, 1/p} (rounding is
 * monotone), for valid and 'same' windows, overlapping or not: equal values, and equal bits
 * except the sign of a zero (a dropped channel: max(-0, +0) may keep -0 where s * max x = +0). */
Test(equiv, spatial_dropout_commutes_with_maxpool_bit_exact) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 8, H = 13, W = 11, C = 12;
    const int cfg[][3] = {{2, 2, 0}, {3, 2, 1}, {3, 1, 0}, {2, 1, 1}}; /* k, stride, same */
    for (int k = 0; k < 4; ++k) {
        ck_conv_geom g = pool_geom(N, H, W, C, cfg[k][0], cfg[k][1], cfg[k][2]);
        ck_tensor *x = nhwc(ctx, N, H, W, C), *xs = nhwc(ctx, N, H, W, C);
        ck_tensor *a = nhwc(ctx, N, g.oh, g.ow, C), *b = nhwc(ctx, N, g.oh, g.ow, C);
        fill_normal(D(x), ck_tensor_count(x), 11 + k);
        for (int r = 0; r < 3; ++r) {
            const float rate = (float[]){0.2f, 0.5f, 0.7f}[r];
            sdrop(ctx, rate, 7, x, xs); /* SD -> pool */
            ck_cpu_pool_forward(&g, 1, D(xs), D(a));
            ck_cpu_pool_forward(&g, 1, D(x), D(b)); /* pool -> SD: the same (n, c) mask */
            sdrop(ctx, rate, 7, b, b);
            cr_assert_eq(value_diffs(D(a), D(b), ck_tensor_count(a)), 0, "k %d rate %g", cfg[k][0],
                         (double)rate);
            for (size_t i = 0; i < ck_tensor_count(a); ++i) /* bits: all but the zero's sign */
                cr_assert(D(a)[i] == 0.0f || memcmp(&D(a)[i], &D(b)[i], 4) == 0);
        }
        ck_tensor_destroy(x);
        ck_tensor_destroy(xs);
        ck_tensor_destroy(a);
        ck_tensor_destroy(b);
    }
    ck_context_destroy(ctx);
}

/* ... and backward on data without rounding ties: the gradients agree bit for bit. */
Test(equiv, spatial_dropout_maxpool_backward_equal_without_ties) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 6, H = 8, W = 8, C = 10;
    ck_conv_geom g = pool_geom(N, H, W, C, 2, 2, 0);
    ck_tensor *x = nhwc(ctx, N, H, W, C), *xs = nhwc(ctx, N, H, W, C);
    ck_tensor *dy = nhwc(ctx, N, g.oh, g.ow, C), *t = nhwc(ctx, N, g.oh, g.ow, C);
    ck_tensor *da = nhwc(ctx, N, H, W, C), *db = nhwc(ctx, N, H, W, C);
    fill_normal(D(x), ck_tensor_count(x), 3);
    fill_normal(D(dy), ck_tensor_count(dy), 4);
    sdrop(ctx, 0.3f, 9, x, xs);
    /* order SD -> pool: pool backward on xs, then SD backward */
    ck_cpu_pool_backward(&g, 1, D(xs), D(dy), D(da));
    sdrop_bwd(ctx, 0.3f, 9, da, da);
    /* order pool -> SD: SD backward on dy, then pool backward on x */
    sdrop_bwd(ctx, 0.3f, 9, dy, t);
    ck_cpu_pool_backward(&g, 1, D(x), D(t), D(db));
    cr_assert_eq(value_diffs(D(da), D(db), ck_tensor_count(da)), 0);
    ck_tensor_destroy(x);
    ck_tensor_destroy(xs);
    ck_tensor_destroy(dy);
    ck_tensor_destroy(t);
    ck_tensor_destroy(da);
    ck_tensor_destroy(db);
    ck_context_destroy(ctx);
}

/* Why the planner does not MOVE a SpatialDropout across a max-pool: s = 1/(1-rate) > 1 can round
 * two different floats to one (here s = 1.25: y1 < y2 but s*y1 == s*y2), and then the
 * first-maximum scan of the pool backward picks another position. Forward stays exact. */
Test(equiv, spatial_dropout_maxpool_backward_differs_at_rounding_ties) {
    const float s = ck_dropout_scale(0.2f);
    float y1 = 1.6f, y2 = 0.0f;
    int found = 0;
    for (int i = 0; i < 1000000 && !found; ++i) {
        y2 = nextafterf(y1, 3.0f);
        if (s * y1 == s * y2)
            found = 1;
        else
            y1 = y2;
    }
    cr_assert(found, "no rounding tie found");
    /* one 1x2 window [y1, y2], one channel, kept */
    ck_conv_geom g = pool_geom(1, 1, 2, 1, 2, 2, 1); /* 'same': one window over both cells */
    const float x[2] = {y1, y2}, xs[2] = {s * y1, s * y2}, dy = 1.0f;
    float fa, fb, da[2], db[2];
    ck_cpu_pool_forward(&g, 1, xs, &fa);
    ck_cpu_pool_forward(&g, 1, x, &fb);
    cr_assert(fa == s * fb, "forward stays exact");
    ck_cpu_pool_backward(&g, 1, xs, &dy, da); /* SD before the pool: the tie goes to y1 */
    ck_cpu_pool_backward(&g, 1, x, &dy, db);  /* pool before SD: y2 is the maximum */
    cr_assert(da[0] == 1.0f && da[1] == 0.0f && db[0] == 0.0f && db[1] == 1.0f,
              "routing: SD-first %g %g, pool-first %g %g", da[0], da[1], db[0], db[1]);
}

/* SpatialDropout <-> AvgPool: equal mathematically; in fp32 the two orders round differently.
 * Bound: |a - b| <= 4 eps * s * max|x_i| of the window (measured here, stated in the assert). */
Test(equiv, spatial_dropout_avgpool_within_ulps) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 8, H = 12, W = 12, C = 16;
    ck_conv_geom g = pool_geom(N, H, W, C, 2, 2, 0);
    ck_tensor *x = nhwc(ctx, N, H, W, C), *xs = nhwc(ctx, N, H, W, C);
    ck_tensor *a = nhwc(ctx, N, g.oh, g.ow, C), *b = nhwc(ctx, N, g.oh, g.ow, C);
    ck_tensor *mx = nhwc(ctx, N, g.oh, g.ow, C), *ax = nhwc(ctx, N, H, W, C);
    fill_normal(D(x), ck_tensor_count(x), 21);
    const float rate = 0.3f, s = ck_dropout_scale(rate);
    sdrop(ctx, rate, 5, x, xs);
    ck_cpu_pool_forward(&g, 0, D(xs), D(a));
    ck_cpu_pool_forward(&g, 0, D(x), D(b));
    sdrop(ctx, rate, 5, b, b);
    for (size_t i = 0; i < ck_tensor_count(x); ++i)
        D(ax)[i] = fabsf(D(x)[i]);
    ck_cpu_pool_forward(&g, 1, D(ax), D(mx)); /* max |x_i| per window */
    size_t differ = 0;
    for (size_t i = 0; i < ck_tensor_count(a); ++i) {
        const double bound = 4.0 * FLT_EPSILON * s * D(mx)[i];
        cr_assert_leq(fabs((double)D(a)[i] - D(b)[i]), bound, "window %zu", i);
        differ += D(a)[i] != D(b)[i];
    }
    cr_assert_gt(differ, 0, "expected some rounding differences (not bit-exact)");
    ck_tensor_destroy(x);
    ck_tensor_destroy(xs);
    ck_tensor_destroy(a);
    ck_tensor_destroy(b);
    ck_tensor_destroy(mx);
    ck_tensor_destroy(ax);
    ck_context_destroy(ctx);
}

/* Dropout <-> ReLU (element and spatial masks): relu(m x) == m relu(x) bit for bit; backward
 * equal as values (a dropped unit gives +0 in one order and -0 in the other when dy < 0). */
Test(equiv, dropout_commutes_with_relu) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 4, H = 9, W = 7, C = 6;
    const size_t cnt = (size_t)N * H * W * C;
    ck_tensor *x = nhwc(ctx, N, H, W, C), *t = nhwc(ctx, N, H, W, C);
    ck_tensor *a = nhwc(ctx, N, H, W, C), *b = nhwc(ctx, N, H, W, C);
    ck_tensor *dy = nhwc(ctx, N, H, W, C), *ga = nhwc(ctx, N, H, W, C), *gb = nhwc(ctx, N, H, W, C);
    fill_normal(D(x), cnt, 31);
    fill_normal(D(dy), cnt, 32);
    for (int spatial = 0; spatial < 2; ++spatial) {
        void (*fw)(ck_context *, float, uint64_t, ck_tensor *, ck_tensor *) =
            spatial ? sdrop : edrop;
        void (*bw)(ck_context *, float, uint64_t, ck_tensor *, ck_tensor *) =
            spatial ? sdrop_bwd : edrop_bwd;
        /* dropout -> relu */
        fw(ctx, 0.3f, 4, x, t);
        ck_cpu_activation_forward(CK_ACT_RELU, 0, D(t), D(a), cnt, C);
        ck_cpu_activation_backward(CK_ACT_RELU, 0, D(t), D(a), D(dy), D(ga), cnt, C);
        bw(ctx, 0.3f, 4, ga, ga);
        /* relu -> dropout */
        ck_cpu_activation_forward(CK_ACT_RELU, 0, D(x), D(t), cnt, C);
        fw(ctx, 0.3f, 4, t, b);
        bw(ctx, 0.3f, 4, dy, gb);
        ck_cpu_activation_backward(CK_ACT_RELU, 0, D(x), D(t), D(gb), D(gb), cnt, C);
        cr_assert_eq(bit_diffs(D(a), D(b), cnt), 0, "forward, spatial %d", spatial);
        cr_assert_eq(value_diffs(D(ga), D(gb), cnt), 0, "backward, spatial %d", spatial);
    }
    /* the golden vector of the evidence file (Raschka): [-1,-2,-3,4,5,6], 50% dropout hitting
     * units 2, 4, 6 -> [0,0,0,0,10,0] in either order */
    const float v[6] = {-1, -2, -3, 4, 5, 6}, m[6] = {2, 0, 2, 0, 2, 0},
                want[6] = {0, 0, 0, 0, 10, 0};
    for (int i = 0; i < 6; ++i) {
        const float r1 = ck_act_fwd_any(v[i] * m[i], CK_ACT_RELU, 0);
        const float r2 = ck_act_fwd_any(v[i], CK_ACT_RELU, 0) * m[i];
        cr_assert(r1 == want[i] && r2 == want[i], "unit %d: %g %g", i, r1, r2);
    }
    ck_tensor_destroy(x);
    ck_tensor_destroy(t);
    ck_tensor_destroy(a);
    ck_tensor_destroy(b);
    ck_tensor_destroy(dy);
    ck_tensor_destroy(ga);
    ck_tensor_destroy(gb);
    ck_context_destroy(ctx);
}

/* Monotone activation <-> MaxPool. ReLU: forward bit-exact and backward equal (the planner's
 * C1/C3). LeakyReLU, sigmoid, tanh: forward exact (monotone, correctly rounded), backward not:
 * negative test with saturated sigmoid (ties). AvgPool: not equivalent (negative test). */
Test(equiv, monotone_activation_commutes_with_maxpool) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 6, H = 10, W = 10, C = 8;
    const size_t cin = (size_t)N * H * W * C;
    ck_conv_geom g = pool_geom(N, H, W, C, 2, 2, 0);
    const size_t cout = (size_t)N * g.oh * g.ow * C;
    float *x = malloc(cin * 4), *ax = malloc(cin * 4), *pa = malloc(cout * 4),
          *pb = malloc(cout * 4), *px = malloc(cout * 4), *dy = malloc(cout * 4),
          *t = malloc(cout * 4), *ga = malloc(cin * 4), *gb = malloc(cin * 4);
    fill_normal(x, cin, 41);
    fill_normal(dy, cout, 42);
    const ck_activation acts[] = {CK_ACT_RELU, CK_ACT_LEAKY_RELU, CK_ACT_SIGMOID, CK_ACT_TANH};
    for (int k = 0; k < 4; ++k) {
        const ck_activation act = acts[k];
        ck_cpu_activation_forward(act, 0.3f, x, ax, cin, C);
        ck_cpu_pool_forward(&g, 1, ax, pa); /* act -> pool */
        ck_cpu_pool_forward(&g, 1, x, px);
        ck_cpu_activation_forward(act, 0.3f, px, pb, cout, C); /* pool -> act */
        cr_assert_eq(bit_diffs(pa, pb, cout), 0, "forward, activation %d", (int)act);
        if (act == CK_ACT_RELU) {
            ck_cpu_pool_backward(&g, 1, ax, dy, ga);
            ck_cpu_activation_backward(act, 0, x, ax, ga, ga, cin, C);
            ck_cpu_activation_backward(act, 0, px, pb, dy, t, cout, C);
            ck_cpu_pool_backward(&g, 1, x, t, gb);
            cr_assert_eq(bit_diffs(ga, gb, cin), 0, "ReLU backward");
        }
    }
    /* negative: sigmoid saturates, sigmoid(20) == sigmoid(30) == 1 in fp32: the gradient goes to
     * the first cell in one order and to the true maximum in the other */
    {
        ck_conv_geom g2 = pool_geom(1, 1, 2, 1, 2, 2, 1);
        const float xx[2] = {20.0f, 30.0f}, d1 = 1.0f;
        float sx[2], sp, gx[2], gp[2], tp;
        ck_cpu_activation_forward(CK_ACT_SIGMOID, 0, xx, sx, 2, 1);
        cr_assert(sx[0] == sx[1], "sigmoid saturates in fp32");
        ck_cpu_pool_backward(&g2, 1, sx, &d1, gx); /* sigmoid -> pool: routes to cell 0 */
        ck_cpu_pool_forward(&g2, 1, xx, &tp);
        ck_cpu_activation_forward(CK_ACT_SIGMOID, 0, &tp, &sp, 1, 1);
        float dd;
        ck_cpu_activation_backward(CK_ACT_SIGMOID, 0, &tp, &sp, &d1, &dd, 1, 1);
        ck_cpu_pool_backward(&g2, 1, xx, &dd, gp); /* pool -> sigmoid: routes to cell 1 */
        cr_assert(gx[1] == 0.0f && gp[0] == 0.0f, "different cells receive the gradient");
    }
    /* negative: ReLU does not commute with average pooling */
    ck_cpu_activation_forward(CK_ACT_RELU, 0, x, ax, cin, C);
    ck_cpu_pool_forward(&g, 0, ax, pa);
    ck_cpu_pool_forward(&g, 0, x, px);
    ck_cpu_activation_forward(CK_ACT_RELU, 0, px, pb, cout, C);
    cr_assert_gt(value_diffs(pa, pb, cout), cout / 4, "avg-pool and ReLU must not commute");
    free(x);
    free(ax);
    free(pa);
    free(pb);
    free(px);
    free(dy);
    free(t);
    free(ga);
    free(gb);
    ck_context_destroy(ctx);
}

/* Inference BN (per channel a x + b with a = gamma * invstd) and MaxPool: gamma > 0 commutes bit
 * for bit (fma(x - mean, a, beta) is monotone in x); gamma < 0 turns max into min (negative);
 * training-mode BN does not commute (statistics over N*H*W vs N*OH*OW values: negative). */
Test(equiv, inference_batchnorm_commutes_with_maxpool_when_gamma_positive) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 6, H = 8, W = 8, C = 5;
    ck_conv_geom g = pool_geom(N, H, W, C, 2, 2, 0);
    ck_tensor *x = nhwc(ctx, N, H, W, C), *bx = nhwc(ctx, N, H, W, C);
    ck_tensor *pa = nhwc(ctx, N, g.oh, g.ow, C), *px = nhwc(ctx, N, g.oh, g.ow, C),
              *pb = nhwc(ctx, N, g.oh, g.ow, C);
    fill_normal(D(x), ck_tensor_count(x), 51);
    float gm[5], bt[5], rm[5], rv[5], sm[5], si[5];
    trng r = {52};
    for (int c = 0; c < C; ++c) {
        gm[c] = trng_uniform(&r, 0.1f, 2.0f);
        bt[c] = trng_uniform(&r, -1, 1);
        rm[c] = trng_uniform(&r, -0.5f, 0.5f);
        rv[c] = trng_uniform(&r, 0.5f, 2.0f);
    }
    ck_bn_desc bn;
    ck_bn_desc_init(&bn, CK_BN_KERAS);
    for (int sign = 1; sign >= -1; sign -= 2) {
        float gs[5];
        for (int c = 0; c < C; ++c)
            gs[c] = sign * gm[c];
        ck_tensor *tg = t_param(ctx, C, gs), *tb = t_param(ctx, C, bt), *trm = t_param(ctx, C, rm),
                  *trv = t_param(ctx, C, rv);
        CK_OK(ctx, ck_batchnorm_forward_inference(ctx, &bn, x, tg, tb, trm, trv, bx));
        ck_cpu_pool_forward(&g, 1, D(bx), D(pa));
        ck_cpu_pool_forward(&g, 1, D(x), D(px));
        CK_OK(ctx, ck_batchnorm_forward_inference(ctx, &bn, px, tg, tb, trm, trv, pb));
        const size_t d = bit_diffs(D(pa), D(pb), ck_tensor_count(pa));
        if (sign > 0)
            cr_assert_eq(d, 0, "gamma > 0 must commute bit for bit");
        else
            cr_assert_gt(d, ck_tensor_count(pa) / 2, "gamma < 0 must not commute");
        if (sign > 0) { /* training mode: batch statistics differ between the two orders */
            ck_tensor *tsm = t_param(ctx, C, NULL), *tsi = t_param(ctx, C, NULL);
            float rm2[5], rv2[5];
            memcpy(rm2, rm, sizeof rm2);
            memcpy(rv2, rv, sizeof rv2);
            ck_tensor *m1 = t_param(ctx, C, rm2), *v1 = t_param(ctx, C, rv2);
            CK_OK(ctx, ck_batchnorm_forward_training(ctx, &bn, x, tg, tb, m1, v1, tsm, tsi, NULL,
                                                     bx, NULL));
            ck_cpu_pool_forward(&g, 1, D(bx), D(pa));
            CK_OK(ctx, ck_batchnorm_forward_training(ctx, &bn, px, tg, tb, m1, v1, tsm, tsi, NULL,
                                                     pb, NULL));
            double e = 0;
            for (size_t i = 0; i < ck_tensor_count(pa); ++i)
                e = fmax(e, fabs((double)D(pa)[i] - D(pb)[i]));
            cr_assert_gt(e, 0.1, "training-mode BN must not commute with pooling (max diff %g)", e);
            (void)sm;
            (void)si;
            ck_tensor_destroy(tsm);
            ck_tensor_destroy(tsi);
            ck_tensor_destroy(m1);
            ck_tensor_destroy(v1);
        }
        ck_tensor_destroy(tg);
        ck_tensor_destroy(tb);
        ck_tensor_destroy(trm);
        ck_tensor_destroy(trv);
    }
    ck_tensor_destroy(x);
    ck_tensor_destroy(bx);
    ck_tensor_destroy(pa);
    ck_tensor_destroy(px);
    ck_tensor_destroy(pb);
    ck_context_destroy(ctx);
}

/* The fused kernel covers Keras's Conv -> BN -> ReLU -> MaxPool -> SpatialDropout: the fused
 * BN+ReLU+SpatialDropout kernel followed by the pool gives the same forward bits as BN, ReLU,
 * pool, SpatialDropout (and the same backward on data without rounding ties, see above). */
Test(equiv, fused_bn_relu_sdropout_covers_keras_block) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 8, H = 10, W = 10, C = 6;
    ck_conv_geom g = pool_geom(N, H, W, C, 2, 2, 0);
    ck_tensor *x = nhwc(ctx, N, H, W, C), *y1 = nhwc(ctx, N, H, W, C), *y2 = nhwc(ctx, N, H, W, C);
    ck_tensor *pa = nhwc(ctx, N, g.oh, g.ow, C), *pb = nhwc(ctx, N, g.oh, g.ow, C);
    fill_normal(D(x), ck_tensor_count(x), 61);
    float gm[6], bt[6], z[6] = {0}, o[6] = {1, 1, 1, 1, 1, 1};
    trng r = {62};
    for (int c = 0; c < C; ++c) {
        gm[c] = trng_uniform(&r, 0.5f, 1.5f);
        bt[c] = trng_uniform(&r, -0.5f, 0.5f);
    }
    ck_tensor *tg = t_param(ctx, C, gm), *tb = t_param(ctx, C, bt);
    ck_tensor *rm = t_param(ctx, C, z), *rv = t_param(ctx, C, o), *sm = t_param(ctx, C, NULL),
              *si = t_param(ctx, C, NULL);
    ck_bn_desc bn;
    ck_bn_desc_init(&bn, CK_BN_KERAS);
    ck_dropout_desc sd = {0.25f, 77, 0};
    bn.activation = CK_ACT_RELU; /* fused: BN+ReLU+SD, then pool */
    CK_OK(ctx, ck_batchnorm_forward_training(ctx, &bn, x, tg, tb, rm, rv, sm, si, &sd, y1, NULL));
    ck_cpu_pool_forward(&g, 1, D(y1), D(pa));
    bn.activation = CK_ACT_NONE; /* Keras order, one layer at a time */
    CK_OK(ctx, ck_batchnorm_forward_training(ctx, &bn, x, tg, tb, rm, rv, sm, si, NULL, y2, NULL));
    ck_cpu_activation_forward(CK_ACT_RELU, 0, D(y2), D(y2), ck_tensor_count(y2), C);
    ck_cpu_pool_forward(&g, 1, D(y2), D(pb));
    sdrop(ctx, sd.rate, sd.offset, pb, pb);
    cr_assert_eq(bit_diffs(D(pa), D(pb), ck_tensor_count(pa)), 0);
    ck_tensor *ts[] = {x, y1, y2, pa, pb, tg, tb, rm, rv, sm, si};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; ++i)
        ck_tensor_destroy(ts[i]);
    ck_context_destroy(ctx);
}

/* Negative: element Dropout does not commute with MaxPool (a dropped maximum lets the second
 * largest through; the pooled tensor has another mask shape anyway). */
Test(equiv, element_dropout_does_not_commute_with_maxpool) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 4, H = 8, W = 8, C = 4;
    ck_conv_geom g = pool_geom(N, H, W, C, 2, 2, 0);
    ck_tensor *x = nhwc(ctx, N, H, W, C), *xd = nhwc(ctx, N, H, W, C);
    ck_tensor *pa = nhwc(ctx, N, g.oh, g.ow, C), *pb = nhwc(ctx, N, g.oh, g.ow, C);
    fill_normal(D(x), ck_tensor_count(x), 71);
    edrop(ctx, 0.5f, 3, x, xd);
    ck_cpu_pool_forward(&g, 1, D(xd), D(pa));
    ck_cpu_pool_forward(&g, 1, D(x), D(pb));
    edrop(ctx, 0.5f, 3, pb, pb);
    cr_assert_gt(value_diffs(D(pa), D(pb), ck_tensor_count(pa)), ck_tensor_count(pa) / 4);
    ck_tensor_destroy(x);
    ck_tensor_destroy(xd);
    ck_tensor_destroy(pa);
    ck_tensor_destroy(pb);
    ck_context_destroy(ctx);
}

/* ---- Part 2: the derivations in miniature --------------------------------------------------- */

/* Element Dropout(q) -> k x k MaxPool on a constant positive input: P(output = 0) = q^(k^2)
 * (all k^2 units dropped), and E[output] / x = (1 - q^(k^2)) / (1 - q). With W windows the
 * frequency is a binomial proportion: asserted within 4 sigma = 4 sqrt(P (1-P) / W) (the masks
 * are deterministic Philox draws, so the test is deterministic). */
Test(equiv, dropout_then_maxpool_zero_probability_is_q_to_k_squared) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 32, C = 16;
    const struct {
        float q;
        int k;
    } cases[] = {{0.2f, 2}, {0.5f, 2}, {0.5f, 3}};
    for (int t = 0; t < 3; ++t) {
        const int k = cases[t].k, H = k == 2 ? 32 : 33, W = H; /* multiples of k */
        ck_conv_geom g = pool_geom(N, H, W, C, k, k, 0);
        ck_tensor *x = nhwc(ctx, N, H, W, C), *p = nhwc(ctx, N, g.oh, g.ow, C);
        CK_OK(ctx, ck_tensor_fill(ctx, x, 1.5f));
        edrop(ctx, cases[t].q, 100 + t, x, x);
        ck_cpu_pool_forward(&g, 1, D(x), D(p));
        const size_t nw = ck_tensor_count(p);
        size_t zeros = 0;
        double sum = 0;
        for (size_t i = 0; i < nw; ++i) {
            zeros += D(p)[i] == 0.0f;
            sum += D(p)[i];
        }
        const double P = pow(cases[t].q, k * k), f = (double)zeros / nw;
        const double sig = sqrt(P * (1 - P) / nw);
        cr_assert_leq(fabs(f - P), 4 * sig,
                      "q %g k %d: zero frequency %g, q^(k^2) = %g (4 sigma %g)", (double)cases[t].q,
                      k, f, P, 4 * sig);
        /* mean ratio: output is x/p or 0 -> E = (1 - P) x / p; its sampling sigma is
         * (x/p) sig */
        const double ratio = sum / nw / 1.5, want = (1 - P) / (1 - cases[t].q);
        cr_assert_leq(fabs(ratio - want), 4 * sig / (1 - cases[t].q) + 1e-6,
                      "mean ratio %g, want %g", ratio, want);
        ck_tensor_destroy(x);
        ck_tensor_destroy(p);
    }
    ck_context_destroy(ctx);
}

/* Li et al. (CVPR 2019), case (a): Dropout(q) -> BN(train) on inputs of mean c and variance v.
 * In training the dropout output has variance (c^2 + v)/p - c^2 (p = 1 - q, inverted dropout),
 * at test time v: Var_test / Var_train = Delta = v / ((c^2 + v)/p - c^2) (= p for c = 0).
 * Compared: the BN moving variance stored after 800 training steps of fresh batches (Keras
 * momentum 0.99: the initial 1 has weight 0.99^800 = 3e-4), averaged over the channels, divided
 * by the test-time variance v of the input (1 for N(0,1); 1/2 - 1/(2 pi) for ReLU(N(0,1)), whose
 * mean is c = 1/sqrt(2 pi)), against 1/Delta: within 1%. */
Test(equiv, dropout_before_bn_moving_variance_is_one_over_delta) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 16, H = 8, W = 8, C = 4, steps = 800;
    const size_t cnt = (size_t)N * H * W * C;
    ck_tensor *x = nhwc(ctx, N, H, W, C), *xr = nhwc(ctx, N, H, W, C), *d = nhwc(ctx, N, H, W, C),
              *y = nhwc(ctx, N, H, W, C);
    float one[4] = {1, 1, 1, 1}, zero[4] = {0, 0, 0, 0};
    ck_bn_desc bn;
    ck_bn_desc_init(&bn, CK_BN_KERAS);
    const float rates[2] = {0.2f, 0.5f};
    const double c_relu = 1.0 / sqrt(2 * M_PI), v_relu = 0.5 - 1.0 / (2 * M_PI);
    ck_tensor *g = t_param(ctx, C, one), *b = t_param(ctx, C, zero), *sm = t_param(ctx, C, NULL),
              *si = t_param(ctx, C, NULL);
    for (int ri = 0; ri < 2; ++ri) {
        const double p = 1.0 - rates[ri];
        ck_tensor *rm[2], *rv[2];
        for (int k = 0; k < 2; ++k) {
            rm[k] = t_param(ctx, C, zero);
            rv[k] = t_param(ctx, C, one);
        }
        trng r = {1000 + ri};
        for (int s = 0; s < steps; ++s) {
            for (size_t i = 0; i < cnt; ++i) {
                D(x)[i] = trng_normal(&r);
                D(xr)[i] = D(x)[i] > 0 ? D(x)[i] : 0.0f;
            }
            for (int k = 0; k < 2; ++k) {
                edrop(ctx, rates[ri], (uint64_t)s * 2 + k, k ? xr : x, d);
                CK_OK(ctx, ck_batchnorm_forward_training(ctx, &bn, d, g, b, rm[k], rv[k], sm, si,
                                                         NULL, y, NULL));
            }
        }
        for (int k = 0; k < 2; ++k) {
            float v[4];
            t_param_get(ctx, rv[k], v);
            double mv = 0;
            for (int c = 0; c < C; ++c)
                mv += v[c] / C;
            const double cm = k ? c_relu : 0.0, vv = k ? v_relu : 1.0;
            const double delta = vv / ((cm * cm + vv) / p - cm * cm);
            const double got = mv / vv;
            cr_assert_leq(fabs(got * delta - 1.0), 0.01,
                          "%s input, q %g: moving_var / v = %g, 1/Delta = %g (Delta %g)",
                          k ? "ReLU(N(0,1))" : "N(0,1)", (double)rates[ri], got, 1 / delta, delta);
            ck_tensor_destroy(rm[k]);
            ck_tensor_destroy(rv[k]);
        }
    }
    ck_tensor *ts[] = {x, xr, d, y, g, b, sm, si};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; ++i)
        ck_tensor_destroy(ts[i]);
    ck_context_destroy(ctx);
}

/* Dropout -> BN(train): every dropped position of a channel becomes one value,
 * fma(0 - mean_B, gamma * invstd_B, beta) - the same bits everywhere in the channel - and that
 * constant depends on the batch (it is not 0). */
Test(equiv, dropout_then_bn_dropped_positions_share_a_batch_constant) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 8, H = 6, W = 6, C = 3;
    const size_t cnt = (size_t)N * H * W * C;
    ck_tensor *x = nhwc(ctx, N, H, W, C), *d = nhwc(ctx, N, H, W, C), *y = nhwc(ctx, N, H, W, C);
    ck_mask *mask = NULL;
    CK_OK(ctx, ck_mask_create(ctx, &mask, CK_DROPOUT_ELEMENT, N, C, H, W));
    uint8_t *keep = malloc(cnt);
    float gm[3] = {1.3f, 0.7f, 1.0f}, bt[3] = {0.1f, -0.2f, 0.3f}, z[3] = {0}, o[3] = {1, 1, 1};
    ck_tensor *g = t_param(ctx, C, gm), *b = t_param(ctx, C, bt), *rm = t_param(ctx, C, z),
              *rv = t_param(ctx, C, o), *sm = t_param(ctx, C, NULL), *si = t_param(ctx, C, NULL);
    ck_bn_desc bn;
    ck_bn_desc_init(&bn, CK_BN_KERAS);
    float konst[2][3];
    for (int batch = 0; batch < 2; ++batch) {
        fill_normal(D(x), cnt, 80 + batch);
        for (size_t i = 0; i < cnt; ++i)
            D(x)[i] += 2.0f; /* mean far from 0: the constant is far from beta */
        ck_dropout_desc dd = {0.3f, (uint64_t)batch, 0};
        CK_OK(ctx, ck_dropout_forward(ctx, &dd, CK_MODE_TRAINING, x, d, mask));
        CK_OK(ctx, ck_mask_download(ctx, mask, keep, cnt));
        CK_OK(ctx, ck_batchnorm_forward_training(ctx, &bn, d, g, b, rm, rv, sm, si, NULL, y, NULL));
        for (int c = 0; c < C; ++c) {
            int seen = 0, dropped = 0;
            float k0 = 0;
            for (int n = 0; n < N; ++n)
                for (int h = 0; h < H; ++h)
                    for (int w = 0; w < W; ++w) {
                        if (keep[t_index(CK_LAYOUT_NCHW, N, C, H, W, n, c, h, w)])
                            continue;
                        const float v = D(y)[t_index(CK_LAYOUT_NHWC, N, C, H, W, n, c, h, w)];
                        if (!seen) {
                            k0 = v;
                            seen = 1;
                        }
                        cr_assert(memcmp(&v, &k0, sizeof v) == 0, "channel %d: %a vs %a", c, v, k0);
                        ++dropped;
                    }
            cr_assert_gt(dropped, 10);
            konst[batch][c] = k0;
            cr_assert_gt(fabsf(k0 - bt[c]), 0.5f, "the dropped value is not beta (nor 0)");
        }
    }
    for (int c = 0; c < C; ++c)
        cr_assert_neq(konst[0][c], konst[1][c], "channel %d: the constant depends on the batch", c);
    free(keep);
    ck_mask_destroy(mask);
    ck_tensor *ts[] = {x, d, y, g, b, rm, rv, sm, si};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; ++i)
        ck_tensor_destroy(ts[i]);
    ck_context_destroy(ctx);
}

/* ---- Part 3: the planner --------------------------------------------------------------------- */

static ck_model *seed_model(ck_context *ctx, int planning, int max_batch) {
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(ctx, ck_model_from_keras_text(ctx, t_seed_cnn_text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_set_planning(m, planning));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, max_batch));
    return m;
}

static char *summary_of(ck_context *ctx, const ck_model *m) {
    size_t need = 0;
    ck_model_summary(m, NULL, 0, &need);
    char *buf = malloc(need);
    CK_OK(ctx, ck_model_summary(m, buf, need, NULL));
    return buf;
}

Test(equiv, seed_model_plan_in_summary) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *a = seed_model(ctx, 1, 4), *b = seed_model(ctx, 0, 4);
    cr_assert_eq(ck_model_num_nodes(a), 16);
    cr_assert_eq(ck_model_num_nodes(b), 23);
    char *sa = summary_of(ctx, a), *sb = summary_of(ctx, b);
    /* the Keras table is the same text with and without planning */
    const char *pa = strstr(sa, "Execution plan:"), *pb = strstr(sb, "Execution plan:");
    cr_assert(pa && pb, "%s", sa);
    cr_assert_eq(pa - sa, pb - sb);
    cr_assert_eq(memcmp(sa, sb, (size_t)(pa - sa)), 0);
    cr_assert_neq(strstr(sa, "Total params: 597,738"), NULL);
    cr_assert_neq(strstr(sa, "Trainable params: 596,330"), NULL);
    cr_assert_neq(strstr(sa, "Non-trainable params: 1,408"), NULL);
    cr_assert_neq(strstr(sa, "Execution plan: 16 nodes for 23 layers (planning on)"), NULL, "%s",
                  sa);
    cr_assert_neq(strstr(sa, "batch_normalization + activation  [BN+ReLU, one"), NULL, "%s", sa);
    cr_assert_neq(strstr(sa, "max_pooling2d + dropout  [dropout in place"), NULL, "%s", sa);
    cr_assert_neq(strstr(sb, "Execution plan: 23 nodes for 23 layers (planning off)"), NULL, "%s",
                  sb);
    cr_assert_eq(ck_model_set_planning(a, 0), CK_STATUS_BAD_PARAM, "only before build");
    free(sa);
    free(sb);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_context_destroy(ctx);
}

/* Activation memory of the seed model at max_batch 128, by hand (floats per sample; 3x3 valid
 * convolutions: 28 -> 26 -> 24, pool 12 -> 10 -> 8, pool 4). Unplanned, one buffer per layer:
 * 3 x 26*26*32 (conv, BN, ReLU) + 3 x 24*24*32 + 2 x 12*12*32 (pool, dropout) + 3 x 10*10*64 +
 * 3 x 8*8*64 + 2 x 4*4*64 + 4 x 512 (dense, BN, ReLU, dropout) + 2 x 10 (dense, softmax),
 * Flatten aliases its input: 165,012. Planned: BN+ReLU one buffer, the dropouts after the pools
 * in place: 2 x 21,632 + 2 x 18,432 + 4,608 + 2 x 6,400 + 2 x 4,096 + 1,024 + 3 x 512 + 2 x 10
 * = 108,308 (52.9 MiB at batch 128 instead of 80.6). */
Test(equiv, seed_model_activation_memory) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *a = seed_model(ctx, 1, 128), *b = seed_model(ctx, 0, 128);
    ck_model_memory ma, mb;
    CK_OK(ctx, ck_model_memory_usage(a, &ma));
    CK_OK(ctx, ck_model_memory_usage(b, &mb));
    cr_assert_eq(ma.activation_bytes, (size_t)108308 * 128 * 4);
    cr_assert_eq(mb.activation_bytes, (size_t)165012 * 128 * 4);
    cr_assert_eq(ma.device_bytes, 0u);
    /* host: the activations plus at least params, grads and two Adam moments */
    cr_assert_geq(ma.host_bytes, ma.activation_bytes + (size_t)4 * 596330 * 4);
    cr_assert_eq(mb.host_bytes - ma.host_bytes, mb.activation_bytes - ma.activation_bytes,
                 "the plan changes only the activations");
    char *sa = summary_of(ctx, a);
    cr_assert_neq(strstr(sa, "Memory for batches of up to 128: activations 52.9 MiB, host "), NULL,
                  "%s", sa);
    free(sa);
    cr_assert_eq(ck_model_memory_usage(a, NULL), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "mem"), NULL);
    ck_model *u = NULL;
    CK_OK(ctx, ck_model_create(ctx, &u));
    cr_assert_eq(ck_model_memory_usage(u, &ma), CK_STATUS_BAD_PARAM, "not built");
    cr_assert_eq(ck_model_memory_usage(NULL, &ma), CK_STATUS_BAD_PARAM);
    ck_model_destroy(u);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_context_destroy(ctx);
}

/* A model that exercises every rewrite: C3 + C4 + F3 (Conv(relu) -> MaxPool -> Dropout),
 * C1 + F1 + F3 (BN -> MaxPool -> ReLU -> SpatialDropout), C2 + F1 + F2 (BN -> SpatialDropout ->
 * ReLU), C2 + F1 (BN -> Dropout -> ReLU). */
static ck_model *rewrite_model(ck_context *ctx, int planning) {
    ck_model *m = NULL;
    CK_OK(ctx, ck_model_create(ctx, &m));
    ck_layer_desc d;
#define ADD(type, ...)                                                                             \
    do {                                                                                           \
        ck_layer_desc_init(&d, type);                                                              \
        __VA_ARGS__;                                                                               \
        CK_OK(ctx, ck_model_add(m, &d));                                                           \
    } while (0)
    ADD(CK_LAYER_CONV2D, d.units = 6; d.kernel_h = d.kernel_w = 3; d.padding = CK_PADDING_SAME;
        d.activation = CK_ACT_RELU);                      /* 0 */
    ADD(CK_LAYER_MAXPOOL2D, d.kernel_h = d.kernel_w = 2); /* 1 */
    ADD(CK_LAYER_DROPOUT, d.rate = 0.3f);                 /* 2 */
    ADD(CK_LAYER_CONV2D, d.units = 8; d.kernel_h = d.kernel_w = 3; d.padding = CK_PADDING_SAME);
    ADD(CK_LAYER_BATCHNORM, (void)0);                     /* 4 */
    ADD(CK_LAYER_MAXPOOL2D, d.kernel_h = d.kernel_w = 2); /* 5 */
    ADD(CK_LAYER_ACTIVATION, d.activation = CK_ACT_RELU); /* 6 */
    ADD(CK_LAYER_SPATIAL_DROPOUT2D, d.rate = 0.25f);      /* 7 */
    ADD(CK_LAYER_CONV2D, d.units = 8; d.kernel_h = d.kernel_w = 3; d.padding = CK_PADDING_SAME);
    ADD(CK_LAYER_BATCHNORM, (void)0);                     /* 9 */
    ADD(CK_LAYER_SPATIAL_DROPOUT2D, d.rate = 0.5f);       /* 10 */
    ADD(CK_LAYER_ACTIVATION, d.activation = CK_ACT_RELU); /* 11 */
    ADD(CK_LAYER_CONV2D, d.units = 4; d.kernel_h = d.kernel_w = 1);
    ADD(CK_LAYER_BATCHNORM, (void)0);                     /* 13 */
    ADD(CK_LAYER_DROPOUT, d.rate = 0.2f);                 /* 14 */
    ADD(CK_LAYER_ACTIVATION, d.activation = CK_ACT_RELU); /* 15 */
    ADD(CK_LAYER_FLATTEN, (void)0);
    ADD(CK_LAYER_DENSE, d.units = 5; d.activation = CK_ACT_SOFTMAX);
#undef ADD
    CK_OK(ctx, ck_model_set_planning(m, planning));
    CK_OK(ctx, ck_model_build(m, 12, 12, 3, 16));
    return m;
}

static void make_data(float *x, int32_t *y, int n, size_t per, int classes, uint64_t seed) {
    trng r = {seed};
    for (size_t i = 0; i < (size_t)n * per; ++i)
        x[i] = trng_uniform(&r, 0.0f, 1.0f);
    for (int i = 0; i < n; ++i)
        y[i] = (int32_t)(trng_u32(&r) % (uint32_t)classes);
}

/* Trains a planned and an unplanned copy of a model (same context seed, same batches) and
 * compares the loss of every step and all weights (incl. BN moving statistics) after each
 * step, then the inference probabilities. Every rewrite of the planner is exact, so the
 * comparison is bit for bit: losses with ==, weights with memcmp (bits_exact) or, for models
 * whose rewrites move a ReLU across a dropout, as values (== : a dropped unit's gradient can be
 * +0 in one order and -0 in the other; no weight or loss may differ in value). */
static void fused_vs_unfused(ck_model *(*make)(ck_context *, int), int h, int w, int c, int classes,
                             int n, int steps, int bits_exact, int want_kernels,
                             int relu_in_bn_kernel) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *a = make(ctx, 1), *b = make(ctx, 0);
    a->relu_in_bn_kernel = relu_in_bn_kernel; /* the fused kernel, or BN kernel + ReLU in place */
    cr_assert_lt(ck_model_num_nodes(a), ck_model_num_nodes(b));
    if (want_kernels)
        cr_assert_eq(ck_model_num_nodes(a), want_kernels, "plan has %d nodes",
                     ck_model_num_nodes(a));
    const size_t per = (size_t)h * w * c;
    float *x = malloc(sizeof(float) * per * n);
    int32_t *y = malloc(sizeof(int32_t) * n);
    for (int s = 0; s < steps; ++s) {
        make_data(x, y, n, per, classes, 900 + s);
        ck_step_result ra, rb;
        CK_OK(ctx, ck_model_train_step(a, x, y, n, &ra));
        CK_OK(ctx, ck_model_train_step(b, x, y, n, &rb));
        cr_assert(ra.loss == rb.loss, "step %d: loss %.17g planned vs %.17g unplanned", s, ra.loss,
                  rb.loss);
        size_t na, nb;
        float *wa = t_weights_of(ctx, a, &na), *wb = t_weights_of(ctx, b, &nb);
        cr_assert_eq(na, nb);
        cr_assert_eq(value_diffs(wa, wb, na), 0, "step %d: weights differ", s);
        if (bits_exact)
            cr_assert_eq(bit_diffs(wa, wb, na), 0, "step %d: weights differ in bits", s);
        free(wa);
        free(wb);
    }
    float *pa = malloc(sizeof(float) * n * classes), *pb = malloc(sizeof(float) * n * classes);
    CK_OK(ctx, ck_model_predict(a, x, n, pa));
    CK_OK(ctx, ck_model_predict(b, x, n, pb));
    cr_assert_eq(bit_diffs(pa, pb, (size_t)n * classes), 0, "inference probabilities");
    free(pa);
    free(pb);
    free(x);
    free(y);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_context_destroy(ctx);
}

static ck_model *seed_16(ck_context *ctx, int planning) {
    return seed_model(ctx, planning, 16);
}

/* The seed model: F1 x5 (BN+ReLU) and F3 x2 (pool+dropout); bit-exact, with the ReLU inside
 * the BN kernel and as the default in-place pass. */
Test(equiv, fused_vs_unfused_training_seed_model_bit_exact, .timeout = 120) {
    fused_vs_unfused(seed_16, 28, 28, 1, 10, 16, 3, 1, 16, 1);
    fused_vs_unfused(seed_16, 28, 28, 1, 10, 16, 3, 1, 16, 0);
}

/* Every rewrite (C1-C4, F1-F3). The contract is equal values (a dropped unit's gradient may be
 * -0 in one order and +0 in the other, see plan.c); on this data the weights also agree bit for
 * bit after 6 Adam steps (the zeros' sign does not survive into the weights), so bits are
 * asserted too. */
Test(equiv, fused_vs_unfused_training_all_rewrites) {
    fused_vs_unfused(rewrite_model, 12, 12, 3, 5, 16, 6, 1, 14, 1);
    fused_vs_unfused(rewrite_model, 12, 12, 3, 5, 16, 6, 1, 14, 0);
}

Test(equiv, rewrite_model_plan) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = rewrite_model(ctx, 1);
    char *s = summary_of(ctx, m);
    /* conv2d's relu after the pool and after the dropout, dropout in the pool node */
    /* "(moved)": runs after a layer that follows it in the user's order */
    cr_assert_neq(strstr(s, "   2  max_pooling2d + dropout  [dropout in place"), NULL, "%s", s);
    cr_assert_neq(strstr(s, "   3  conv2d's relu (moved)\n"), NULL, "%s", s);
    cr_assert_neq(strstr(s, "   5  batch_normalization + activation  [BN+ReLU, one"), NULL, "%s",
                  s);
    cr_assert_neq(strstr(s, "   6  max_pooling2d_1 (moved) + spatial_dropout2d  [dropout in place"),
                  NULL, "%s", s);
    cr_assert_neq(strstr(s, "   8  batch_normalization_1 + activation_1 + spatial_dropout2d_1 "
                            "(moved)  [BN+ReLU+SpatialDropout, one"),
                  NULL, "%s", s);
    cr_assert_neq(strstr(s, "  10  batch_normalization_2 + activation_2  [BN+ReLU"), NULL, "%s", s);
    cr_assert_neq(strstr(s, "  11  dropout_1 (moved)\n"), NULL, "%s", s);
    cr_assert_neq(strstr(s, "Execution plan: 14 nodes for 18 layers (planning on)"), NULL, "%s", s);
    /* masks are keyed by the user layer: the fused SpatialDropout of layer 10 */
    const int k = ck_model_layer_node(m, 10);
    cr_assert_eq(m->nodes[k].type, CK_NODE_BN);
    cr_assert_eq(m->nodes[k].drop_layer, 10);
    cr_assert_eq(ck_model_dropout_offset(m, k), ck_model_layer_dropout_offset(m, 10));
    cr_assert_eq(ck_model_layer_dropout_offset(m, 10), (uint64_t)m->step * 4096u + 10u);
    free(s);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* ck_model_layer_output / _input: a BN layer's input is the same tensor with and without the
 * plan (what variance measurements read); a fused layer's own output is not materialized. */
Test(equiv, layer_output_lookup_across_plans) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *a = seed_model(ctx, 1, 8), *b = seed_model(ctx, 0, 8);
    const size_t per = 28 * 28;
    float *x = malloc(sizeof(float) * per * 8);
    int32_t y[8];
    make_data(x, y, 8, per, 10, 5);
    CK_OK(ctx, ck_model_forward_nodes(a, x, 8, 1, a->num_nodes));
    CK_OK(ctx, ck_model_forward_nodes(b, x, 8, 1, b->num_nodes));
    int bns = 0;
    for (int li = 0; li < ck_model_num_layers(a); ++li) {
        ck_layer_desc d;
        CK_OK(ctx, ck_model_layer_desc(a, li, &d));
        int h, w, c;
        CK_OK(ctx, ck_model_layer_shape(a, li, &h, &w, &c));
        const float *ob = ck_model_layer_output(b, li);
        cr_assert_not_null(ob, "unplanned: layer %d's output is materialized", li);
        const float *oa = ck_model_layer_output(a, li);
        if (oa) /* materialized in the plan too: the same values */
            cr_assert_eq(bit_diffs(oa, ob, (size_t)8 * h * w * c), 0, "layer %d output", li);
        if (d.type == CK_LAYER_BATCHNORM) {
            ++bns;
            cr_assert_null(oa, "BN %d fuses its ReLU: its own output is not stored", li);
            const int k = ck_model_layer_node(a, li);
            cr_assert_eq(a->nodes[k].type, CK_NODE_BN);
            const float *ia = ck_model_layer_input(a, li, x), *ib = ck_model_layer_input(b, li, x);
            cr_assert_eq(ia, a->nodes[k - 1].out, "the BN input is the previous node's output");
            int ph, pw, pc;
            CK_OK(ctx, ck_model_layer_shape(a, li - 1, &ph, &pw, &pc));
            cr_assert_eq(bit_diffs(ia, ib, (size_t)8 * ph * pw * pc), 0, "BN %d input", li);
        }
        if (d.type == CK_LAYER_ACTIVATION && d.activation == CK_ACT_RELU)
            cr_assert_eq(oa, a->nodes[ck_model_layer_node(a, li)].out,
                         "the fused ReLU's output is the BN node's output");
    }
    cr_assert_eq(bns, 5);
    cr_assert_eq(ck_model_layer_input(a, 0, x), x);
    cr_assert_null(ck_model_layer_output(a, 99));
    free(x);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_context_destroy(ctx);
}

/* Parameters are stored per user layer, independent of the plan: a checkpoint written by a
 * planned model loads into an unplanned one, and both continue identically. */
Test(equiv, checkpoint_across_plans) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *a = rewrite_model(ctx, 1), *b = rewrite_model(ctx, 0);
    const size_t per = 12 * 12 * 3;
    float x[16 * 12 * 12 * 3];
    int32_t y[16];
    make_data(x, y, 16, per, 5, 77);
    CK_OK(ctx, ck_model_train_step(a, x, y, 16, NULL));
    char path[] = "/tmp/cnnkit-equiv-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    CK_OK(ctx, ck_model_save(a, path));
    CK_OK(ctx, ck_model_load(b, path));
    unlink(path);
    cr_assert_eq(ck_model_step(b), 1);
    make_data(x, y, 16, per, 5, 78);
    ck_step_result ra, rb;
    CK_OK(ctx, ck_model_train_step(a, x, y, 16, &ra));
    CK_OK(ctx, ck_model_train_step(b, x, y, 16, &rb));
    cr_assert(ra.loss == rb.loss, "%.17g vs %.17g", ra.loss, rb.loss);
    size_t na, nb;
    float *wa = t_weights_of(ctx, a, &na), *wb = t_weights_of(ctx, b, &nb);
    cr_assert_eq(value_diffs(wa, wb, na), 0);
    free(wa);
    free(wb);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_context_destroy(ctx);
}
