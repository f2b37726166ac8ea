/* CPU layer reference (src/host/backend/cpu/cpu_layers.c): finite-difference gradient checks,
 * PyTorch golden values (tools/gen_layer_golden.py -> tests/golden/layers_golden.h), optimizer
 * formulas, initializer statistics and thread-count independence.
 *
 * Tolerances
 *  - Golden (float64 results rounded to float32; the library computes in float32):
 *      |got - exp| <= G_TOL * max(1, max_i |exp_i|)  with G_TOL = 2e-6 (forward and gradients)
 *    optimizers: |got - exp| <= 1e-6 * max(1, |exp|) per element.
 *  - Finite differences: the loss is L = sum_i w_i y_i accumulated in double with fixed random
 *    weights w (so the analytic gradient is the backward pass with dy = w), differentiated by
 *    central differences with step FD_H = 1e-2 (the actual float step is used). Linear layers
 *    (conv, pooling between switches, GAP, dense) are exact up to float rounding of y; smooth
 *    activations have a truncation error ~h^2/6 |f'''|. Check: |fd - an| <= FD_ATOL + FD_RTOL |an|
 *    with FD_ATOL = 2e-3, FD_RTOL = 2e-3. Inputs avoid kinks (|x| >= 0.05 for relu-like
 *    activations) and max-pool inputs are distinct by >= 2.5 h so no window switches.
 */
#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ck_math.h"
#include "cpu_layers.h"
#include "golden/keras_optimizers_golden.h"
#include "golden/layers_golden.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#include <cblas.h> /* openblas_set_num_threads */

#define G_TOL 2e-6
#define FD_H 1e-2f
#define FD_ATOL 2e-3
#define FD_RTOL 2e-3

/* ---- helpers ------------------------------------------------------------------------------- */

static float *falloc(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    cr_assert_not_null(p);
    return p;
}

static float *frand(trng *r, size_t n, float lo, float hi) {
    float *p = falloc(n);
    trng_fill(r, p, n, lo, hi);
    return p;
}

static double wsum(const float *y, const float *w, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; ++i)
        s += (double)w[i] * (double)y[i];
    return s;
}

/* |got - exp| <= tol * max(1, max |exp|) */
static void expect_close(const char *what, const float *got, const float *exp, size_t n,
                         double tol) {
    double scale = 1.0;
    for (size_t i = 0; i < n; ++i)
        scale = fabs(exp[i]) > scale ? fabs(exp[i]) : scale;
    for (size_t i = 0; i < n; ++i) {
        const double d = fabs((double)got[i] - (double)exp[i]);
        cr_assert(d <= tol * scale, "%s[%zu]: got %.9g expected %.9g (|d| %.3g > %.3g)", what, i,
                  got[i], exp[i], d, tol * scale);
    }
}

typedef double (*loss_fn)(void *ud);

/* Central differences of f with respect to every p[i], compared with the analytic an[i]. */
static void fd_check(const char *what, loss_fn f, void *ud, float *p, size_t n, const float *an) {
    for (size_t i = 0; i < n; ++i) {
        const float save = p[i];
        const float up = save + FD_H, dn = save - FD_H;
        p[i] = up;
        const double lp = f(ud);
        p[i] = dn;
        const double lm = f(ud);
        p[i] = save;
        const double fd = (lp - lm) / ((double)up - (double)dn);
        const double err = fabs(fd - an[i]), tol = FD_ATOL + FD_RTOL * fabs(an[i]);
        cr_assert(err <= tol, "%s[%zu]: finite difference %.7g, analytic %.7g (|d| %.3g > %.3g)",
                  what, i, fd, an[i], err, tol);
    }
}

/* ---- geometry ------------------------------------------------------------------------------ */

Test(layers, geometry) {
    ck_conv_geom g;
    /* valid */
    cr_assert_eq(ck_conv_geom_make(&g, 2, 7, 6, 3, 4, 3, 2, 1, 1, 0), 0);
    cr_assert(g.oh == 5 && g.ow == 5 && g.pad_top == 0 && g.pad_left == 0);
    cr_assert_eq(ck_conv_geom_make(&g, 1, 9, 7, 1, 1, 3, 3, 2, 3, 0), 0);
    cr_assert(g.oh == 4 && g.ow == 2);
    cr_assert_eq(ck_conv_geom_make(&g, 1, 2, 5, 1, 1, 3, 1, 2, 1, 0), -1, "h < kh: empty");
    cr_assert_eq(ck_conv_geom_make(&g, 1, 5, 5, 1, 1, 6, 1, 1, 1, 0), -1);
    /* same: oh = ceil(h / s), pad_top = pad_total / 2 */
    cr_assert_eq(ck_conv_geom_make(&g, 1, 7, 8, 1, 1, 3, 3, 2, 2, 1), 0);
    cr_assert(g.oh == 4 && g.ow == 4 && g.pad_top == 1 && g.pad_left == 0);
    cr_assert_eq(ck_conv_geom_make(&g, 1, 5, 6, 1, 1, 2, 4, 1, 1, 1), 0);
    cr_assert(g.oh == 5 && g.ow == 6 && g.pad_top == 0 && g.pad_left == 1);
    cr_assert_eq(ck_conv_geom_make(&g, 1, 4, 5, 1, 1, 5, 5, 3, 3, 1), 0);
    cr_assert(g.oh == 2 && g.ow == 2 && g.pad_top == 2 && g.pad_left == 1);
    cr_assert_eq(ck_conv_geom_make(&g, 1, 8, 8, 1, 1, 1, 1, 3, 3, 1), 0);
    cr_assert(g.oh == 3 && g.pad_top == 0, "pad_total clamps at 0");
    cr_assert_eq(ck_conv_geom_make(&g, 1, 1, 1, 1, 1, 7, 7, 2, 2, 1), 0);
    cr_assert(g.oh == 1 && g.pad_top == 3);
    /* bad arguments */
    cr_assert_eq(ck_conv_geom_make(&g, 0, 5, 5, 1, 1, 1, 1, 1, 1, 0), -1);
    cr_assert_eq(ck_conv_geom_make(&g, 1, 5, 5, 1, 1, 1, 1, 0, 1, 0), -1);
    cr_assert_eq(ck_conv_geom_make(NULL, 1, 5, 5, 1, 1, 1, 1, 1, 1, 0), -1);
    /* workspace: 0 for 1x1 stride 1; tiled: per group one tile's im2col + a kernel gradient;
     * chunked (im2col of a sample > CK_CONV_SAMPLE_MAX_FLOATS): one chunk of im2col rows */
    cr_assert_eq(ck_conv_geom_make(&g, 3, 5, 5, 4, 2, 1, 1, 1, 1, 1), 0);
    cr_assert_eq(ck_cpu_conv2d_workspace_floats(&g), 0u);
    cr_assert_eq(ck_conv_geom_make(&g, 3, 5, 5, 4, 2, 3, 3, 1, 1, 1), 0); /* 3 tiles of 1 */
    cr_assert_eq(ck_cpu_conv2d_workspace_floats(&g), (size_t)3 * (25 * 36 + 36 * 2));
    cr_assert_eq(ck_conv_geom_make(&g, 40, 5, 5, 4, 2, 3, 3, 1, 1, 1), 0); /* 20 tiles of 2 */
    cr_assert_eq(ck_cpu_conv2d_workspace_floats(&g), (size_t)16 * (2 * 25 * 36 + 36 * 2));
    cr_assert_eq(ck_conv_geom_make(&g, 400, 5, 5, 4, 2, 3, 3, 1, 1, 1), 0); /* 16 groups */
    cr_assert_eq(ck_cpu_conv2d_workspace_floats(&g), (size_t)16 * (25 * 25 * 36 + 36 * 2));
    cr_assert_eq(ck_conv_geom_make(&g, 3, 64, 64, 32, 2, 3, 3, 1, 1, 1), 0); /* chunked */
    cr_assert_eq(ck_cpu_conv2d_workspace_floats(&g), (size_t)3 * 4096 * 288);
}

/* ---- golden -------------------------------------------------------------------------------- */

Test(layers, golden_conv2d) {
    for (int ci = 0; ci < LG_CONV_CASES; ++ci) {
        const lg_conv_case *c = &lg_conv_cases[ci];
        ck_conv_geom g;
        cr_assert_eq(ck_conv_geom_make(&g, c->n, c->h, c->w, c->cin, c->cout, c->kh, c->kw, c->sh,
                                       c->sw, c->same),
                     0, "%s", c->name);
        cr_assert(g.oh == c->oh && g.ow == c->ow && g.pad_top == c->pad_top &&
                      g.pad_left == c->pad_left,
                  "%s: geometry", c->name);
        const size_t ny = (size_t)c->n * c->oh * c->ow * c->cout;
        const size_t nx = (size_t)c->n * c->h * c->w * c->cin;
        const size_t nk = (size_t)c->kh * c->kw * c->cin * c->cout;
        float *ws = falloc(ck_cpu_conv2d_workspace_floats(&g));
        float *y = falloc(ny), *dx = falloc(nx), *dk = falloc(nk), *db = falloc(c->cout);
        memset(y, 0x7f, ny * sizeof *y); /* garbage: must be overwritten */
        memset(dk, 0x7f, nk * sizeof *dk);
        ck_cpu_conv2d_forward(&g, c->x, c->k, c->use_bias ? c->bias : NULL, y, ws);
        expect_close(c->name, y, c->y, ny, G_TOL);
        ck_cpu_conv2d_backward(&g, c->x, c->k, c->dy, dx, dk, c->use_bias ? db : NULL, ws);
        expect_close(c->name, dx, c->dx, nx, G_TOL);
        expect_close(c->name, dk, c->dk, nk, G_TOL);
        if (c->use_bias)
            expect_close(c->name, db, c->dbias, c->cout, G_TOL);
        /* dx = NULL computes the same dk */
        float *dk2 = falloc(nk);
        ck_cpu_conv2d_backward(&g, c->x, c->k, c->dy, NULL, dk2, NULL, ws);
        cr_assert_eq(memcmp(dk, dk2, nk * sizeof *dk), 0, "%s: dk without dx", c->name);
        free(ws), free(y), free(dx), free(dk), free(db), free(dk2);
    }
}

Test(layers, golden_pool) {
    for (int pi = 0; pi < LG_POOL_CASES; ++pi) {
        const lg_pool_case *c = &lg_pool_cases[pi];
        ck_conv_geom g;
        cr_assert_eq(ck_conv_geom_make(&g, c->n, c->h, c->w, c->c, c->c, c->kh, c->kw, c->sh, c->sw,
                                       c->same),
                     0, "%s", c->name);
        cr_assert(g.oh == c->oh && g.ow == c->ow, "%s: geometry", c->name);
        const size_t ny = (size_t)c->n * c->oh * c->ow * c->c;
        const size_t nx = (size_t)c->n * c->h * c->w * c->c;
        float *y = falloc(ny), *dx = falloc(nx);
        memset(dx, 0x7f, nx * sizeof *dx);
        ck_cpu_pool_forward(&g, c->is_max, c->x, y);
        expect_close(c->name, y, c->y, ny, G_TOL);
        ck_cpu_pool_backward(&g, c->is_max, c->x, c->dy, dx);
        expect_close(c->name, dx, c->dx, nx, G_TOL);
        free(y), free(dx);
    }
}

Test(layers, golden_activations) {
    const size_t n = (size_t)LG_ACT_ROWS * LG_ACT_C;
    float *y = falloc(n), *dx = falloc(n), *buf = falloc(n);
    for (int ai = 0; ai < LG_ACT_CASES; ++ai) {
        const lg_act_case *c = &lg_act_cases[ai];
        ck_cpu_activation_forward(c->act, c->alpha, lg_act_x, y, n, LG_ACT_C);
        expect_close("act forward", y, c->y, n, G_TOL);
        ck_cpu_activation_backward(c->act, c->alpha, lg_act_x, y, lg_act_dy, dx, n, LG_ACT_C);
        expect_close("act backward", dx, c->dx, n, G_TOL);
        /* in place forward, then backward from the documented array only (other one NULL),
         * dx aliasing dy */
        memcpy(buf, lg_act_x, n * sizeof *buf);
        ck_cpu_activation_forward(c->act, c->alpha, buf, buf, n, LG_ACT_C);
        cr_assert_eq(memcmp(buf, y, n * sizeof *y), 0, "act %d: in-place forward", (int)c->act);
        const int ux = ck_act_bwd_uses_x((int)c->act), uy = ck_act_bwd_uses_y((int)c->act);
        memcpy(dx, lg_act_dy, n * sizeof *dx);
        ck_cpu_activation_backward(c->act, c->alpha, ux ? lg_act_x : NULL, uy ? y : NULL, dx, dx, n,
                                   LG_ACT_C);
        expect_close("act backward (aliased)", dx, c->dx, n, G_TOL);
    }
    free(y), free(dx), free(buf);
}

Test(layers, golden_softmax_xent) {
    const size_t n = (size_t)LG_XENT_N * LG_XENT_CLASSES;
    float *d = falloc(n);
    double loss = 0.0;
    int correct = -1;
    ck_cpu_softmax_xent(LG_XENT_N, LG_XENT_CLASSES, lg_xent_logits, lg_xent_labels, d, &loss,
                        &correct);
    cr_assert(fabs(loss - LG_XENT_LOSS_SUM) <= 1e-9 * LG_XENT_LOSS_SUM, "loss %.12g vs %.12g", loss,
              LG_XENT_LOSS_SUM);
    cr_assert_eq(correct, LG_XENT_CORRECT);
    expect_close("dlogits", d, lg_xent_dlogits, n, G_TOL);
    /* NULL outputs, and dlogits aliasing logits */
    memcpy(d, lg_xent_logits, n * sizeof *d);
    ck_cpu_softmax_xent(LG_XENT_N, LG_XENT_CLASSES, d, lg_xent_labels, d, NULL, NULL);
    expect_close("dlogits in place", d, lg_xent_dlogits, n, G_TOL);
    free(d);
}

Test(layers, golden_adam) {
    float p[LG_OPT_COUNT], m[LG_OPT_COUNT] = {0}, v[LG_OPT_COUNT] = {0};
    memcpy(p, lg_opt_p0, sizeof p);
    for (int t = 1; t <= LG_OPT_STEPS; ++t) {
        ck_cpu_adam_update(p, lg_opt_g + (size_t)(t - 1) * LG_OPT_COUNT, m, v, LG_OPT_COUNT,
                           LG_ADAM_LR, LG_ADAM_B1, LG_ADAM_B2, LG_ADAM_EPS, 0.0f, t);
        const float *e = lg_adam_p + (size_t)(t - 1) * LG_OPT_COUNT;
        for (int i = 0; i < LG_OPT_COUNT; ++i)
            cr_assert(fabs(p[i] - e[i]) <= 1e-6 * fmax(1.0, fabs(e[i])),
                      "step %d p[%d] %.9g vs %.9g", t, i, p[i], e[i]);
    }
}

Test(layers, golden_sgd_nesterov) {
    float p[LG_OPT_COUNT], vel[LG_OPT_COUNT] = {0};
    memcpy(p, lg_opt_p0, sizeof p);
    for (int t = 1; t <= LG_OPT_STEPS; ++t) {
        ck_cpu_sgd_update(p, lg_opt_g + (size_t)(t - 1) * LG_OPT_COUNT, vel, LG_OPT_COUNT,
                          LG_SGD_LR, LG_SGD_MOMENTUM, 1, 0.0f);
        const float *e = lg_sgd_p + (size_t)(t - 1) * LG_OPT_COUNT;
        for (int i = 0; i < LG_OPT_COUNT; ++i)
            cr_assert(fabs(p[i] - e[i]) <= 1e-6 * fmax(1.0, fabs(e[i])),
                      "step %d p[%d] %.9g vs %.9g", t, i, p[i], e[i]);
    }
}

/* Keras 3.15's RMSprop.apply_gradients on the same vector and gradients
 * (tools/gen_keras_optimizers.py): plain, momentum, centered, and rho 0.8 with momentum, epsilon
 * 1e-3 and weight decay. */
Test(layers, golden_rmsprop_keras) {
    static const struct {
        const char *name;
        float lr, rho, momentum, eps, wd;
        int centered;
        const float *want;
    } cases[] = {{"plain", 0.01f, 0.9f, 0.0f, 1e-7f, 0.0f, 0, kr_plain_p},
                 {"momentum", 0.01f, 0.9f, 0.5f, 1e-7f, 0.0f, 0, kr_momentum_p},
                 {"centered", 0.01f, 0.9f, 0.0f, 1e-7f, 0.0f, 1, kr_centered_p},
                 {"decay", 0.02f, 0.8f, 0.9f, 1e-3f, 0.1f, 0, kr_decay_p}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        float p[KR_N], vel[KR_N] = {0}, aux[KR_N] = {0};
        memcpy(p, kr_p0, sizeof p);
        for (int t = 0; t < KR_STEPS; ++t) {
            ck_cpu_rmsprop_update(p, kr_grads + t * KR_N, vel, aux, KR_N, cases[c].lr, cases[c].rho,
                                  cases[c].eps, cases[c].momentum, cases[c].centered, cases[c].wd);
            const float *e = cases[c].want + t * KR_N;
            for (int i = 0; i < KR_N; ++i)
                cr_assert(fabsf(p[i] - e[i]) <= 4e-7f * fmaxf(1.0f, fabsf(e[i])),
                          "%s step %d p[%d] %.9g, Keras %.9g", cases[c].name, t + 1, i, p[i], e[i]);
        }
    }
}

/* Keras's variance-scaling initializers (keras/src/initializers/random_initializers.py): uniform
 * in [-limit, limit), limit = sqrt(3 scale / fan), variance limit^2 / 3 = scale / fan; normal
 * truncated at 2 sigma with sigma = sqrt(scale / fan) / 0.8796..., whose own standard deviation is
 * sqrt(scale / fan). 200,000 draws: the sample standard deviation within 1% (its own spread is
 * ~0.2%), the mean within 4 standard errors, every value inside the bounds. */
Test(layers, initializers_draw_keras_distributions) {
    enum { N = 200000 };
    const long long fi = 300, fo = 100;
    static const struct {
        ck_initializer init;
        double scale, fan;
        int normal;
    } cases[] = {{CK_INIT_GLOROT_UNIFORM, 1, 200, 0}, {CK_INIT_GLOROT_NORMAL, 1, 200, 1},
                 {CK_INIT_HE_UNIFORM, 2, 300, 0},     {CK_INIT_HE_NORMAL, 2, 300, 1},
                 {CK_INIT_LECUN_UNIFORM, 1, 300, 0},  {CK_INIT_LECUN_NORMAL, 1, 300, 1}};
    float *w = malloc(N * sizeof *w), *w2 = malloc(N * sizeof *w2);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        ck_init_random(w, N, cases[c].init, fi, fo, 1234, 7);
        const double sd = sqrt(cases[c].scale / cases[c].fan);
        const double bound = cases[c].normal ? 2.0 * sd / 0.87962566103423978 : sqrt(3.0) * sd;
        double sum = 0, sq = 0, worst = 0;
        for (int i = 0; i < N; ++i) {
            sum += w[i];
            sq += (double)w[i] * w[i];
            worst = fmax(worst, fabs(w[i]));
        }
        const double mean = sum / N, s = sqrt(sq / N - mean * mean);
        cr_assert(fabs(s / sd - 1.0) < 0.01, "%s: standard deviation %.6f, Keras's %.6f",
                  ck_initializer_name(cases[c].init), s, sd);
        cr_assert(fabs(mean) < 4.0 * sd / sqrt((double)N), "%s: mean %.6f",
                  ck_initializer_name(cases[c].init), mean);
        cr_assert(worst <= bound, "%s: |w| up to %.6f, bound %.6f",
                  ck_initializer_name(cases[c].init), worst, bound);
        if (cases[c].normal) /* a truncated normal reaches near its bound; a wider one past it */
            cr_assert(worst > 0.98 * bound, "%s: |w| only up to %.6f of %.6f",
                      ck_initializer_name(cases[c].init), worst, bound);
        ck_init_random(w2, N, cases[c].init, fi, fo, 1234, 7); /* counter-based: the same */
        cr_assert(!memcmp(w, w2, N * sizeof *w));
        ck_init_random(w2, N, cases[c].init, fi, fo, 1234, 8); /* another stream: others */
        cr_assert(memcmp(w, w2, N * sizeof *w));
    }
    /* glorot_uniform is the default's draw, bit for bit */
    ck_init_random(w, N, CK_INIT_GLOROT_UNIFORM, fi, fo, 99, 3);
    ck_glorot_uniform(w2, N, (int)fi, (int)fo, 99, 3);
    cr_assert(!memcmp(w, w2, N * sizeof *w));
    free(w);
    free(w2);
}

/* Keras 3.15's Adadelta.apply_gradients (tools/gen_keras_optimizers.py): its defaults (lr 1e-3,
 * rho 0.95, epsilon 1e-7), and lr 1.0 (Keras 2's) with rho 0.8, epsilon 1e-3, weight decay 0.1. */
Test(layers, golden_adadelta_keras) {
    static const struct {
        const char *name;
        float lr, rho, eps, wd;
        const float *want;
    } cases[] = {{"defaults", 1e-3f, 0.95f, 1e-7f, 0.0f, kr_adadelta_p},
                 {"decay", 1.0f, 0.8f, 1e-3f, 0.1f, kr_adadelta_decay_p}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        float p[KR_N], ag[KR_N] = {0}, ad[KR_N] = {0};
        memcpy(p, kr_p0, sizeof p);
        for (int t = 0; t < KR_STEPS; ++t) {
            ck_cpu_adadelta_update(p, kr_grads + t * KR_N, ag, ad, KR_N, cases[c].lr, cases[c].rho,
                                   cases[c].eps, cases[c].wd);
            const float *e = cases[c].want + t * KR_N;
            for (int i = 0; i < KR_N; ++i)
                cr_assert(fabsf(p[i] - e[i]) <= 4e-7f * fmaxf(1.0f, fabsf(e[i])),
                          "%s step %d p[%d] %.9g, Keras %.9g", cases[c].name, t + 1, i, p[i], e[i]);
        }
    }
}

/* ---- optimizers: hand formulas (double) ---------------------------------------------------- */

Test(layers, adam_weight_decay_and_sgd_variants) {
    enum { N = 9 };
    trng r = {77};
    float p[N], g[N], m[N] = {0}, v[N] = {0}, vel[N] = {0};
    double pe[N], me[N] = {0}, ve[N] = {0}, vele[N] = {0};
    trng_fill(&r, p, N, -1.0f, 1.0f);
    for (int i = 0; i < N; ++i)
        pe[i] = p[i];
    const float lr = 0.02f, b1 = 0.8f, b2 = 0.99f, eps = 1e-7f, wd = 0.1f;
    for (long t = 1; t <= 4; ++t) {
        trng_fill(&r, g, N, -2.0f, 2.0f);
        ck_cpu_adam_update(p, g, m, v, N, lr, b1, b2, eps, wd, t);
        const double alpha = lr * sqrt(1.0 - pow(b2, (double)t)) / (1.0 - pow(b1, (double)t));
        for (int i = 0; i < N; ++i) {
            pe[i] -= (double)lr * wd * pe[i]; /* decoupled decay first (Keras) */
            me[i] = b1 * me[i] + (1.0 - b1) * g[i];
            ve[i] = b2 * ve[i] + (1.0 - b2) * (double)g[i] * g[i];
            pe[i] -= alpha * me[i] / (sqrt(ve[i]) + eps);
            cr_assert(fabs(p[i] - pe[i]) <= 2e-6 * fmax(1.0, fabs(pe[i])), "adam t=%ld i=%d", t, i);
            cr_assert(fabs(m[i] - me[i]) <= 1e-6 && fabs(v[i] - ve[i]) <= 1e-6);
        }
    }
    /* SGD momentum (not nesterov) with weight decay */
    trng_fill(&r, p, N, -1.0f, 1.0f);
    for (int i = 0; i < N; ++i)
        pe[i] = p[i];
    for (int t = 0; t < 3; ++t) {
        trng_fill(&r, g, N, -2.0f, 2.0f);
        ck_cpu_sgd_update(p, g, vel, N, 0.1f, 0.5f, 0, 0.01f);
        for (int i = 0; i < N; ++i) {
            pe[i] -= 0.1 * 0.01 * pe[i];
            vele[i] = 0.5 * vele[i] - 0.1 * g[i];
            pe[i] += vele[i];
            cr_assert(fabs(p[i] - pe[i]) <= 1e-6 * fmax(1.0, fabs(pe[i])), "sgd t=%d i=%d", t, i);
        }
    }
    /* plain SGD: momentum 0 and no velocity buffer */
    for (int i = 0; i < N; ++i)
        pe[i] = p[i];
    ck_cpu_sgd_update(p, g, NULL, N, 0.25f, 0.0f, 0, 0.0f);
    for (int i = 0; i < N; ++i)
        cr_assert(fabs(p[i] - (pe[i] - 0.25 * g[i])) <= 1e-6);
}

/* Keras 3 decays every trainable variable (base_optimizer._apply_weight_decay: kernels, biases,
 * BN gamma and beta; checked with keras 3.15: one AdamW or SGD step of lr 0.1, weight_decay 0.5
 * on zero gradients takes each of them from 1 to 0.95), before the update, from the gradient at
 * the old weights. So one plain SGD step with decay differs from one without by exactly
 * -lr * wd * p_old on every trainable array and by nothing on the BN moving statistics. */
Test(layers, weight_decay_reaches_every_trainable_array) {
    static const char text[] = "model = Sequential([Conv2D(4,(3,3),input_shape=(6,6,1)),"
                               "BatchNormalization(), Activation('relu'), Flatten(), Dense(5),"
                               "BatchNormalization(), Dense(3, activation='softmax')])\n";
    const float lr = 0.1f, wd = 0.5f;
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m[2];
    char msg[1024];
    for (int k = 0; k < 2; ++k) {
        CK_OK(ctx, ck_model_from_keras_text(ctx, text, &m[k], msg, sizeof msg));
        ck_optimizer_desc o;
        CK_OK(ctx, ck_optimizer_desc_init(&o, CK_OPT_SGD));
        o.learning_rate = lr;
        o.weight_decay = k ? wd : 0.0f;
        CK_OK(ctx, ck_model_set_optimizer(m[k], &o));
        CK_OK(ctx, ck_model_build(m[k], 0, 0, 0, 4));
    }
    size_t n = 0;
    CK_OK(ctx, ck_model_get_weights(m[0], NULL, 0, &n));
    float *before = malloc(sizeof(float) * n), *a = malloc(sizeof(float) * n),
          *b = malloc(sizeof(float) * n);
    CK_OK(ctx, ck_model_get_weights(m[0], before, n, NULL));
    /* BN gamma and beta start at 1 and 0: give every weight a value the decay moves */
    trng r = {5};
    for (size_t i = 0; i < n; ++i)
        before[i] = trng_uniform(&r, 0.5f, 1.5f);
    CK_OK(ctx, ck_model_set_weights(m[0], before, n));
    CK_OK(ctx, ck_model_set_weights(m[1], before, n));
    float x[4 * 36];
    int32_t y[4] = {0, 1, 2, 1};
    trng_fill(&r, x, 4 * 36, 0.0f, 1.0f);
    ck_step_result res;
    CK_OK(ctx, ck_model_train_step(m[0], x, y, 4, &res));
    CK_OK(ctx, ck_model_train_step(m[1], x, y, 4, &res));
    CK_OK(ctx, ck_model_get_weights(m[0], a, n, NULL));
    CK_OK(ctx, ck_model_get_weights(m[1], b, n, NULL));
    ck_param_counts pc;
    CK_OK(ctx, ck_model_param_counts(m[0], &pc));
    long long decayed = 0, same = 0;
    for (size_t i = 0; i < n; ++i) {
        const double d = (double)b[i] - a[i], want = -(double)lr * wd * before[i];
        if (fabs(d - want) <= 1e-5)
            ++decayed;
        else if (d == 0.0)
            ++same;
        else
            cr_assert_fail("weight %zu: %.7g with decay, %.7g without (was %.7g)", i, b[i], a[i],
                           before[i]);
    }
    cr_assert_eq(decayed, pc.trainable, "%lld of %lld trainable weights decayed", decayed,
                 pc.trainable);
    cr_assert_eq(same, pc.non_trainable);
    free(before), free(a), free(b);
    ck_model_destroy(m[0]), ck_model_destroy(m[1]);
    ck_context_destroy(ctx);
}

/* A training batch of one sample through Dense -> BN, as Keras 3.15 computes it (the helper's
 * audit: loss 2.302585 = ln 10, moving_variance 0.99, the Dense before the BN unchanged): BN takes
 * the batch's statistics, mean x and variance 0, so its output is beta = 0 and the softmax after
 * the last Dense (zero bias) is uniform; no gradient reaches the layers before the BN. */
Test(layers, batch_of_one_takes_its_own_statistics_as_keras) {
    static const char text[] = "model = Sequential([Dense(4, input_shape=(6,)), "
                               "BatchNormalization(), Dense(10, activation='softmax')])\n";
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg));
    ck_optimizer_desc o;
    CK_OK(ctx, ck_optimizer_desc_init(&o, CK_OPT_SGD));
    CK_OK(ctx, ck_model_set_optimizer(m, &o));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 4));
    size_t n = 0;
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, &n));
    float *w0 = malloc(sizeof(float) * n), *w1 = malloc(sizeof(float) * n);
    CK_OK(ctx, ck_model_get_weights(m, w0, n, NULL));
    const float x[6] = {0.5f, -1.0f, 2.0f, 0.25f, 1.5f, -0.75f};
    const int32_t y[1] = {3};
    ck_step_result r;
    CK_OK(ctx, ck_model_train_step(m, x, y, 1, &r));
    cr_assert_float_eq(r.loss, log(10.0), 1e-6, "loss %.9g", r.loss);
    CK_OK(ctx, ck_model_get_weights(m, w1, n, NULL));
    /* Keras order: dense kernel (6x4), bias (4); BN gamma, beta, moving mean, moving variance (4
     * each); dense_1 kernel, bias */
    for (int i = 0; i < 6 * 4 + 4; ++i)
        cr_assert_eq(w1[i], w0[i], "the Dense before the BN moved: weight %d", i);
    for (int c = 0; c < 4; ++c) {
        double pre = w0[24 + c];
        for (int k = 0; k < 6; ++k)
            pre += (double)x[k] * w0[k * 4 + c];
        cr_assert_float_eq(w1[28 + 8 + c], 0.01 * pre, 1e-6, "moving mean %d", c);
        cr_assert_float_eq(w1[28 + 12 + c], 0.99f, 1e-7, "moving variance %d", c);
    }
    free(w0), free(w1);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* ---- finite-difference gradient checks ----------------------------------------------------- */

typedef struct conv_ud {
    ck_conv_geom g;
    float *x, *k, *b, *y, *w, *ws;
    size_t ny;
} conv_ud;

static double conv_loss(void *p) {
    conv_ud *u = p;
    ck_cpu_conv2d_forward(&u->g, u->x, u->k, u->b, u->y, u->ws);
    return wsum(u->y, u->w, u->ny);
}

static void conv_fd(int n, int h, int w, int cin, int cout, int kh, int kw, int sh, int sw,
                    int same, uint64_t seed) {
    conv_ud u;
    trng r = {seed};
    cr_assert_eq(ck_conv_geom_make(&u.g, n, h, w, cin, cout, kh, kw, sh, sw, same), 0);
    const size_t nx = (size_t)n * h * w * cin, nk = (size_t)kh * kw * cin * cout;
    u.ny = (size_t)n * u.g.oh * u.g.ow * cout;
    u.x = frand(&r, nx, -1.0f, 1.0f);
    u.k = frand(&r, nk, -0.5f, 0.5f);
    u.b = frand(&r, cout, -0.5f, 0.5f);
    u.w = frand(&r, u.ny, -1.0f, 1.0f);
    u.y = falloc(u.ny);
    u.ws = falloc(ck_cpu_conv2d_workspace_floats(&u.g));
    float *dx = falloc(nx), *dk = falloc(nk), *db = falloc(cout);
    ck_cpu_conv2d_backward(&u.g, u.x, u.k, u.w, dx, dk, db, u.ws);
    fd_check("conv dx", conv_loss, &u, u.x, nx, dx);
    fd_check("conv dk", conv_loss, &u, u.k, nk, dk);
    fd_check("conv dbias", conv_loss, &u, u.b, cout, db);
    free(u.x), free(u.k), free(u.b), free(u.w), free(u.y), free(u.ws);
    free(dx), free(dk), free(db);
}

Test(layers, fd_conv2d) {
    conv_fd(2, 5, 4, 3, 2, 3, 2, 1, 1, 0, 1); /* valid, stride 1, odd sizes */
    conv_fd(1, 5, 6, 2, 3, 3, 3, 1, 1, 1, 2); /* same, stride 1 */
    conv_fd(2, 7, 5, 2, 2, 3, 3, 2, 2, 1, 3); /* same, stride 2, odd sizes */
    conv_fd(1, 7, 6, 3, 2, 2, 3, 2, 2, 0, 4); /* valid, stride 2 */
    conv_fd(1, 6, 7, 2, 2, 4, 2, 2, 1, 1, 5); /* same, even kernel: asymmetric padding */
    conv_fd(2, 3, 3, 4, 3, 1, 1, 1, 1, 0, 6); /* 1x1 (no im2col) */
}

/* The tiled and chunked Conv2D paths (several groups, tiles of several samples with a short last
 * one, one-sample batches, a sample too large to tile) against a direct double-precision
 * evaluation of the definitions in cpu_layers.h: |got - exp| <= 1e-5 * max(1, max |exp|)
 * (float32 GEMM sums of <= 288 products of values in [-1, 1] x [-0.3, 0.3]). */
static void conv_direct(const ck_conv_geom *g, const float *x, const float *k, const float *bias,
                        const float *dy, float *y, float *dx, float *dk, float *db) {
    const int H = g->h, W = g->w, C = g->cin, CO = g->cout, OH = g->oh, OW = g->ow;
    const size_t nx = (size_t)g->n * H * W * C, nk = (size_t)g->kh * g->kw * C * CO;
    double *ax = calloc(nx, sizeof *ax), *ak = calloc(nk, sizeof *ak), *ab = calloc(CO, 8);
    cr_assert(ax && ak && ab);
    for (int s = 0; s < g->n; ++s)
        for (int i = 0; i < OH; ++i)
            for (int j = 0; j < OW; ++j)
                for (int o = 0; o < CO; ++o) {
                    const size_t yi = (((size_t)s * OH + i) * OW + j) * CO + o;
                    double acc = bias ? bias[o] : 0.0;
                    ab[o] += dy[yi];
                    for (int a = 0; a < g->kh; ++a)
                        for (int b = 0; b < g->kw; ++b) {
                            const int ih = i * g->sh - g->pad_top + a,
                                      iw = j * g->sw - g->pad_left + b;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                continue;
                            for (int c = 0; c < C; ++c) {
                                const size_t xi = (((size_t)s * H + ih) * W + iw) * C + c;
                                const size_t ki = (((size_t)a * g->kw + b) * C + c) * CO + o;
                                acc += (double)x[xi] * k[ki];
                                ax[xi] += (double)dy[yi] * k[ki];
                                ak[ki] += (double)dy[yi] * x[xi];
                            }
                        }
                    y[yi] = (float)acc;
                }
    for (size_t i = 0; i < nx; ++i)
        dx[i] = (float)ax[i];
    for (size_t i = 0; i < nk; ++i)
        dk[i] = (float)ak[i];
    for (int o = 0; o < CO; ++o)
        db[o] = (float)ab[o];
    free(ax), free(ak), free(ab);
}

static void conv_paths_case(int n, int h, int w, int cin, int cout, int kh, int kw, int s, int same,
                            uint64_t seed) {
    ck_conv_geom g;
    cr_assert_eq(ck_conv_geom_make(&g, n, h, w, cin, cout, kh, kw, s, s, same), 0);
    trng r = {seed};
    const size_t nx = (size_t)n * h * w * cin, ny = (size_t)n * g.oh * g.ow * cout;
    const size_t nk = (size_t)kh * kw * cin * cout;
    float *x = frand(&r, nx, -1.0f, 1.0f), *k = frand(&r, nk, -0.3f, 0.3f);
    float *b = frand(&r, cout, -1.0f, 1.0f), *dy = frand(&r, ny, -1.0f, 1.0f);
    float *y = falloc(ny), *dx = falloc(nx), *dk = falloc(nk), *db = falloc(cout);
    float *ey = falloc(ny), *edx = falloc(nx), *edk = falloc(nk), *edb = falloc(cout);
    float *dk2 = falloc(nk), *ws = falloc(ck_cpu_conv2d_workspace_floats(&g));
    conv_direct(&g, x, k, b, dy, ey, edx, edk, edb);
    ck_cpu_conv2d_forward(&g, x, k, b, y, ws);
    ck_cpu_conv2d_backward(&g, x, k, dy, dx, dk, db, ws);
    expect_close("conv y", y, ey, ny, 1e-5);
    expect_close("conv dx", dx, edx, nx, 1e-5);
    expect_close("conv dk", dk, edk, nk, 1e-5);
    expect_close("conv db", db, edb, cout, 1e-5);
    /* without dx (first layer) the kernel gradient is the same, bit for bit */
    ck_cpu_conv2d_backward(&g, x, k, dy, NULL, dk2, NULL, ws);
    cr_assert_eq(memcmp(dk, dk2, nk * sizeof *dk), 0, "conv dk without dx differs");
    free(x), free(k), free(b), free(dy), free(y), free(dx), free(dk), free(db);
    free(ey), free(edx), free(edk), free(edb), free(dk2), free(ws);
}

Test(layers, conv2d_tiled_and_chunked_paths) {
    conv_paths_case(20, 16, 16, 16, 4, 3, 3, 1, 1, 11); /* 20 tiles of 1, 16 groups (uneven) */
    conv_paths_case(40, 10, 10, 8, 3, 3, 3, 2, 1, 12);  /* 20 tiles of 2, 16 groups */
    conv_paths_case(37, 6, 6, 1, 5, 3, 3, 1, 1, 13);    /* C = 1: 19 tiles of 2, the last of 1 */
    conv_paths_case(1, 12, 9, 4, 3, 3, 2, 1, 1, 14);    /* one sample: one group */
    conv_paths_case(2, 64, 64, 32, 2, 3, 3, 1, 1, 15);  /* im2col 1.18 M floats: chunked */
    conv_paths_case(3, 9, 9, 5, 4, 1, 1, 1, 0, 16);     /* 1x1: the input is the im2col */
}

/* The seed model's second Conv2D kernel gradient under BN's cancellation (x >= 0, dy zero-mean per
 * channel) vs float64: measured 5e-7 (float32 Keras reaches 5.5e-5 on this layer in the model). */
Test(layers, conv2d_kernel_gradient_under_bn_cancellation) {
    ck_conv_geom g;
    const int n = 32, co = 32;
    cr_assert_eq(ck_conv_geom_make(&g, n, 26, 26, 32, co, 3, 3, 1, 1, 0), 0);
    trng r = {21};
    const size_t nx = (size_t)n * 26 * 26 * 32, ny = (size_t)n * g.oh * g.ow * co;
    const size_t nk = (size_t)3 * 3 * 32 * co;
    float *x = frand(&r, nx, -0.5f, 1.5f), *k = frand(&r, nk, -0.1f, 0.1f);
    float *dy = frand(&r, ny, -1e-3f, 1e-3f);
    for (size_t i = 0; i < nx; ++i)
        x[i] = x[i] > 0.0f ? x[i] : 0.0f;
    for (int o = 0; o < co; ++o) { /* zero mean per channel, as after BN backward */
        double m = 0.0;
        for (size_t i = (size_t)o; i < ny; i += (size_t)co)
            m += dy[i];
        m /= (double)(ny / co);
        for (size_t i = (size_t)o; i < ny; i += (size_t)co)
            dy[i] = (float)(dy[i] - m);
    }
    float *y = falloc(ny), *dx = falloc(nx), *dk = falloc(nk), *db = falloc(co);
    float *ey = falloc(ny), *edx = falloc(nx), *edk = falloc(nk), *edb = falloc(co);
    float *ws = falloc(ck_cpu_conv2d_workspace_floats(&g));
    conv_direct(&g, x, k, NULL, dy, ey, edx, edk, edb);
    ck_cpu_conv2d_backward(&g, x, k, dy, dx, dk, NULL, ws);
    double scale = 0.0, err = 0.0;
    for (size_t i = 0; i < nk; ++i) {
        scale = fmax(scale, fabs(edk[i]));
        err = fmax(err, fabs((double)dk[i] - edk[i]));
    }
    cr_assert(err <= 5e-6 * scale, "conv dk: max |d| %.3g > 5e-6 * max |dk| %.3g (rel %.3g)", err,
              scale, err / scale);
    free(x), free(k), free(dy), free(y), free(dx), free(dk), free(db);
    free(ey), free(edx), free(edk), free(edb), free(ws);
}

/* The model plans one conv workspace for max_batch and runs smaller batches in it (the last
 * batch of an epoch, evaluation): the workspace must never shrink as n grows. Checked for every
 * n <= 300 on shapes of early and late layers (a tile of one sample, of several, the cap of 16
 * groups), then a batch of 16 run in the workspace of 20 for a late-layer shape that needed more
 * at 16 than at 20 before this was fixed (ASan in CI sees any overrun). */
Test(layers, conv2d_workspace_never_shrinks) {
    const int geos[5][6] = {/* h, w, cin, cout, k, same */
                            {7, 7, 64, 128, 3, 0},
                            {5, 5, 64, 64, 3, 0},
                            {28, 28, 1, 32, 3, 0},
                            {26, 26, 32, 32, 3, 0},
                            {9, 9, 5, 4, 3, 1}};
    for (int gi = 0; gi < 5; ++gi) {
        size_t prev = 0;
        for (int n = 1; n <= 300; ++n) {
            ck_conv_geom g;
            cr_assert_eq(ck_conv_geom_make(&g, n, geos[gi][0], geos[gi][1], geos[gi][2],
                                           geos[gi][3], geos[gi][4], geos[gi][4], 1, 1,
                                           geos[gi][5]),
                         0);
            const size_t ws = ck_cpu_conv2d_workspace_floats(&g);
            cr_assert_geq(ws, prev, "geometry %d: workspace %zu at n = %d < %zu at n = %d", gi, ws,
                          n, prev, n - 1);
            prev = ws;
        }
    }
    ck_conv_geom big, small;
    cr_assert_eq(ck_conv_geom_make(&big, 20, 7, 7, 64, 128, 3, 3, 1, 1, 0), 0);
    cr_assert_eq(ck_conv_geom_make(&small, 16, 7, 7, 64, 128, 3, 3, 1, 1, 0), 0);
    trng r = {77};
    const size_t nx = (size_t)16 * 7 * 7 * 64, ny = (size_t)16 * 5 * 5 * 128, nk = 9 * 64 * 128;
    float *x = frand(&r, nx, -1, 1), *k = frand(&r, nk, -0.1f, 0.1f), *dy = frand(&r, ny, -1, 1);
    float *y = falloc(ny), *dx = falloc(nx), *dk = falloc(nk), *db = falloc(128);
    float *ws = falloc(ck_cpu_conv2d_workspace_floats(&big));
    ck_cpu_conv2d_forward(&small, x, k, NULL, y, ws);
    ck_cpu_conv2d_backward(&small, x, k, dy, dx, dk, db, ws);
    free(x), free(k), free(dy), free(y), free(dx), free(dk), free(db), free(ws);
}

typedef struct pool_ud {
    ck_conv_geom g;
    int is_max;
    float *x, *y, *w;
    size_t ny;
} pool_ud;

static double pool_loss(void *p) {
    pool_ud *u = p;
    ck_cpu_pool_forward(&u->g, u->is_max, u->x, u->y);
    return wsum(u->y, u->w, u->ny);
}

static void pool_fd(int is_max, int n, int h, int w, int c, int kh, int kw, int sh, int sw,
                    int same, uint64_t seed) {
    pool_ud u;
    trng r = {seed};
    u.is_max = is_max;
    cr_assert_eq(ck_conv_geom_make(&u.g, n, h, w, c, c, kh, kw, sh, sw, same), 0);
    const size_t nx = (size_t)n * h * w * c;
    u.ny = (size_t)n * u.g.oh * u.g.ow * c;
    /* distinct values 2.5 h apart, shuffled */
    u.x = falloc(nx);
    for (size_t i = 0; i < nx; ++i)
        u.x[i] = ((float)i - 0.5f * (float)nx) * 2.5f * FD_H;
    for (size_t i = nx - 1; i > 0; --i) {
        const size_t j = trng_u32(&r) % (i + 1);
        const float t = u.x[i];
        u.x[i] = u.x[j];
        u.x[j] = t;
    }
    u.w = frand(&r, u.ny, -1.0f, 1.0f);
    u.y = falloc(u.ny);
    float *dx = falloc(nx);
    ck_cpu_pool_backward(&u.g, is_max, u.x, u.w, dx);
    fd_check(is_max ? "maxpool dx" : "avgpool dx", pool_loss, &u, u.x, nx, dx);
    free(u.x), free(u.w), free(u.y), free(dx);
}

Test(layers, fd_pool) {
    for (int is_max = 0; is_max < 2; ++is_max) {
        pool_fd(is_max, 2, 7, 5, 3, 2, 2, 2, 2, 0, 11); /* valid 2x2 */
        pool_fd(is_max, 2, 7, 5, 3, 2, 2, 2, 2, 1, 12); /* same 2x2, odd sizes */
        pool_fd(is_max, 1, 9, 8, 2, 3, 3, 2, 2, 0, 13); /* valid 3x3 stride 2 (overlapping) */
        pool_fd(is_max, 1, 8, 7, 2, 3, 3, 2, 2, 1, 14); /* same 3x3 stride 2 */
        pool_fd(is_max, 1, 5, 5, 2, 3, 3, 1, 1, 1, 15); /* same 3x3 stride 1 */
    }
}

typedef struct gap_ud {
    int n, hw, c;
    float *x, *y, *w;
} gap_ud;

static double gap_loss(void *p) {
    gap_ud *u = p;
    ck_cpu_gap_forward(u->n, u->hw, u->c, u->x, u->y);
    return wsum(u->y, u->w, (size_t)u->n * u->c);
}

Test(layers, fd_gap) {
    gap_ud u = {2, 15, 70, NULL, NULL, NULL}; /* 70 channels: two channel blocks */
    trng r = {21};
    const size_t nx = (size_t)u.n * u.hw * u.c, ny = (size_t)u.n * u.c;
    u.x = frand(&r, nx, -2.0f, 2.0f);
    u.w = frand(&r, ny, -1.0f, 1.0f);
    u.y = falloc(ny);
    float *dx = falloc(nx);
    ck_cpu_gap_backward(u.n, u.hw, u.c, u.w, dx);
    fd_check("gap dx", gap_loss, &u, u.x, nx, dx);
    /* forward against a direct double mean */
    ck_cpu_gap_forward(u.n, u.hw, u.c, u.x, u.y);
    for (int s = 0; s < u.n; ++s)
        for (int c = 0; c < u.c; ++c) {
            double m = 0.0;
            for (int p = 0; p < u.hw; ++p)
                m += u.x[((size_t)s * u.hw + p) * u.c + c];
            cr_assert(fabs(u.y[s * u.c + c] - m / u.hw) <= 1e-7);
        }
    free(u.x), free(u.w), free(u.y), free(dx);
}

typedef struct dense_ud {
    int n, in, out;
    float *x, *k, *b, *y, *w;
} dense_ud;

static double dense_loss(void *p) {
    dense_ud *u = p;
    ck_cpu_dense_forward(u->n, u->in, u->out, u->x, u->k, u->b, u->y);
    return wsum(u->y, u->w, (size_t)u->n * u->out);
}

Test(layers, fd_dense) {
    dense_ud u = {3, 7, 5, NULL, NULL, NULL, NULL, NULL};
    trng r = {31};
    const size_t nx = (size_t)u.n * u.in, nk = (size_t)u.in * u.out, ny = (size_t)u.n * u.out;
    u.x = frand(&r, nx, -1.0f, 1.0f);
    u.k = frand(&r, nk, -1.0f, 1.0f);
    u.b = frand(&r, u.out, -1.0f, 1.0f);
    u.w = frand(&r, ny, -1.0f, 1.0f);
    u.y = falloc(ny);
    float *dx = falloc(nx), *dk = falloc(nk), *db = falloc(u.out);
    ck_cpu_dense_backward(u.n, u.in, u.out, u.x, u.k, u.w, dx, dk, db);
    fd_check("dense dx", dense_loss, &u, u.x, nx, dx);
    fd_check("dense dk", dense_loss, &u, u.k, nk, dk);
    fd_check("dense dbias", dense_loss, &u, u.b, u.out, db);
    /* no bias: y = x k exactly as with a zero bias */
    float *y0 = falloc(ny);
    ck_cpu_dense_forward(u.n, u.in, u.out, u.x, u.k, NULL, y0);
    for (size_t i = 0; i < ny; ++i) {
        double e = 0.0;
        for (int j = 0; j < u.in; ++j)
            e += (double)u.x[(i / u.out) * u.in + j] * u.k[(size_t)j * u.out + i % u.out];
        cr_assert(fabs(y0[i] - e) <= 1e-6);
    }
    free(u.x), free(u.k), free(u.b), free(u.w), free(u.y), free(dx), free(dk), free(db), free(y0);
}

typedef struct act_ud {
    ck_activation act;
    float alpha;
    int c;
    size_t n;
    float *x, *y, *w;
} act_ud;

static double act_loss(void *p) {
    act_ud *u = p;
    ck_cpu_activation_forward(u->act, u->alpha, u->x, u->y, u->n, u->c);
    return wsum(u->y, u->w, u->n);
}

Test(layers, fd_activations) {
    static const ck_activation acts[] = {
        CK_ACT_NONE, CK_ACT_RELU, CK_ACT_SIGMOID,    CK_ACT_TANH, CK_ACT_SOFTMAX,
        CK_ACT_ELU,  CK_ACT_ELU,  CK_ACT_LEAKY_RELU, CK_ACT_GELU, CK_ACT_SWISH};
    static const float alphas[] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.5f, 0.3f, 0.0f, 0.0f};
    trng r = {41};
    act_ud u;
    u.c = 6;
    u.n = 5 * 6;
    u.x = falloc(u.n);
    u.y = falloc(u.n);
    u.w = frand(&r, u.n, -1.0f, 1.0f);
    float *dx = falloc(u.n);
    for (size_t i = 0; i < u.n; ++i) { /* |x| in [0.05, 3]: away from the kinks */
        const float m = trng_uniform(&r, 0.05f, 3.0f);
        u.x[i] = (trng_u32(&r) & 1) ? m : -m;
    }
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; ++a) {
        u.act = acts[a];
        u.alpha = alphas[a];
        ck_cpu_activation_forward(u.act, u.alpha, u.x, u.y, u.n, u.c);
        ck_cpu_activation_backward(u.act, u.alpha, u.x, u.y, u.w, dx, u.n, u.c);
        fd_check("activation dx", act_loss, &u, u.x, u.n, dx);
    }
    free(u.x), free(u.y), free(u.w), free(dx);
}

typedef struct xent_ud {
    int n, classes, probs;
    float *x;
    const int32_t *labels;
} xent_ud;

static double xent_loss(void *p) {
    xent_ud *u = p;
    double loss;
    if (u->probs)
        ck_cpu_xent_from_probs(u->n, u->classes, u->x, u->labels, NULL, &loss, NULL);
    else
        ck_cpu_softmax_xent(u->n, u->classes, u->x, u->labels, NULL, &loss, NULL);
    return loss / u->n; /* the gradients are those of the mean loss */
}

Test(layers, fd_softmax_xent) {
    static const int32_t labels[4] = {2, 0, 4, 4};
    xent_ud u = {4, 5, 0, NULL, labels};
    trng r = {51};
    u.x = frand(&r, 20, -3.0f, 3.0f);
    float *d = falloc(20);
    ck_cpu_softmax_xent(u.n, u.classes, u.x, labels, d, NULL, NULL);
    fd_check("softmax xent dlogits", xent_loss, &u, u.x, 20, d);
    /* from probabilities (away from the clip bounds) */
    u.probs = 1;
    float *p = falloc(20);
    for (int i = 0; i < 20; ++i)
        p[i] = trng_uniform(&r, 0.2f, 0.9f);
    memcpy(u.x, p, sizeof(float) * 20);
    ck_cpu_xent_from_probs(u.n, u.classes, u.x, labels, d, NULL, NULL);
    fd_check("xent_from_probs dprobs", xent_loss, &u, u.x, 20, d);
    free(u.x), free(d), free(p);
}

/* ---- losses: stability, clipping, agreement -------------------------------------------------- */

Test(layers, xent_stability_and_clipping) {
    /* huge logits: finite loss, exact gradient */
    const float lg[6] = {1000.0f, -1000.0f, 999.0f, -50.0f, -50.0f, -50.0f};
    const int32_t lab[2] = {2, 0};
    float d[6];
    double loss;
    int correct;
    ck_cpu_softmax_xent(2, 3, lg, lab, d, &loss, &correct);
    const double l0 = log1p(exp(-1.0)) + 1.0 + 0.0; /* -log softmax[2] of (1000, -1000, 999) */
    cr_assert(fabs(loss - (l0 + log(3.0))) <= 1e-9, "loss %.12g", loss);
    cr_assert_eq(correct, 1, "row 2 is a tie: its first index (0) is the label");
    cr_assert(fabs(d[0] - (1.0 / (1.0 + exp(-1.0))) / 2) <= 1e-7);
    cr_assert(fabs(d[3] - (1.0 / 3.0 - 1.0) / 2) <= 1e-7);
    /* ties: the first maximal index wins */
    const float tie[3] = {0.5f, 0.5f, 0.1f};
    const int32_t l1[1] = {1}, l0i[1] = {0};
    ck_cpu_softmax_xent(1, 3, tie, l1, NULL, NULL, &correct);
    cr_assert_eq(correct, 0);
    ck_cpu_softmax_xent(1, 3, tie, l0i, NULL, NULL, &correct);
    cr_assert_eq(correct, 1);
    /* probs: a zero probability at the label is clipped to 1e-7 */
    const float pr[3] = {0.0f, 0.5f, 0.5f};
    ck_cpu_xent_from_probs(1, 3, pr, l0i, d, &loss, &correct);
    const double q0 = (float)1e-7;
    cr_assert(fabs(loss - (log(q0 + 1.0) - log(q0))) <= 1e-9, "clipped loss %.12g", loss);
    cr_assert(d[0] == 0.0f, "no gradient through the clipped entry");
    cr_assert_eq(correct, 0);
    /* fused and unfused agree when the probabilities are a softmax */
    const float lz[8] = {0.3f, -1.2f, 2.0f, 0.1f, 1.5f, 1.4f, -0.7f, 0.0f};
    const int32_t lb[2] = {2, 0};
    float pz[8];
    double lf, lu;
    int cf, cu;
    ck_cpu_activation_forward(CK_ACT_SOFTMAX, 0.0f, lz, pz, 8, 4);
    ck_cpu_softmax_xent(2, 4, lz, lb, NULL, &lf, &cf);
    ck_cpu_xent_from_probs(2, 4, pz, lb, NULL, &lu, &cu);
    cr_assert(fabs(lf - lu) <= 1e-6 && cf == cu && cf == 2, "%.9g %.9g %d %d", lf, lu, cf, cu);
}

/* ---- Conv2D batch chunking ----------------------------------------------------------------- */

/* 3 samples whose im2col needs ~6M floats each: chunks of 2 + 1 samples. Compared with
 * per-sample calls (no chunking): y and dx within 1e-6 (array scale); dk, a float GEMM sum over
 * 49152 rows per chunk, within 1e-4 * max(1, |dk|) of the double sum of per-sample dk. */
Test(layers, conv2d_batch_chunks) {
    const int n = 3, h = 128, w = 128, cin = 41, cout = 2;
    ck_conv_geom g, g1;
    cr_assert_eq(ck_conv_geom_make(&g, n, h, w, cin, cout, 3, 3, 1, 1, 1), 0);
    cr_assert_eq(ck_conv_geom_make(&g1, 1, h, w, cin, cout, 3, 3, 1, 1, 1), 0);
    const size_t per = (size_t)h * w * 9 * cin;
    cr_assert(per <= CK_CONV_WS_MAX_FLOATS / 2 && per > CK_CONV_WS_MAX_FLOATS / 3);
    cr_assert_eq(ck_cpu_conv2d_workspace_floats(&g), 2 * per);
    cr_assert_eq(ck_cpu_conv2d_workspace_floats(&g1), per);
    trng r = {61};
    const size_t sx = (size_t)h * w * cin, sy = (size_t)h * w * cout, nk = 9 * (size_t)cin * cout;
    float *x = frand(&r, n * sx, -1.0f, 1.0f), *k = frand(&r, nk, -0.2f, 0.2f);
    float *b = frand(&r, cout, -1.0f, 1.0f), *dy = frand(&r, n * sy, -1.0f, 1.0f);
    float *ws = falloc(2 * per), *y = falloc(n * sy), *y1 = falloc(sy);
    float *dx = falloc(n * sx), *dx1 = falloc(sx), *dk = falloc(nk), *dk1 = falloc(nk);
    float *db = falloc(cout), *db1 = falloc(cout);
    double *dks = calloc(nk, sizeof *dks);
    ck_cpu_conv2d_forward(&g, x, k, b, y, ws);
    ck_cpu_conv2d_backward(&g, x, k, dy, dx, dk, db, ws);
    for (int s = 0; s < n; ++s) {
        ck_cpu_conv2d_forward(&g1, x + s * sx, k, b, y1, ws);
        expect_close("chunked y", y + s * sy, y1, sy, 1e-6);
        ck_cpu_conv2d_backward(&g1, x + s * sx, k, dy + s * sy, dx1, dk1, db1, ws);
        expect_close("chunked dx", dx + s * sx, dx1, sx, 1e-6);
        for (size_t i = 0; i < nk; ++i)
            dks[i] += dk1[i];
    }
    for (size_t i = 0; i < nk; ++i)
        cr_assert(fabs(dk[i] - dks[i]) <= 1e-4 * fmax(1.0, fabs(dks[i])), "dk[%zu] %.9g vs %.9g", i,
                  dk[i], dks[i]);
    free(x), free(k), free(b), free(dy), free(ws), free(y), free(y1), free(dx), free(dx1);
    free(dk), free(dk1), free(db), free(db1), free(dks);
}

/* ---- initializer --------------------------------------------------------------------------- */

Test(layers, glorot_uniform) {
    const size_t n = 60000;
    float *a = falloc(n), *b = falloc(n), *c = falloc(13);
    const int fin = 3 * 3 * 16, fout = 3 * 3 * 32;
    const double limit = sqrt(6.0 / (fin + fout));
    ck_glorot_uniform(a, n, fin, fout, 1234, 7);
    ck_glorot_uniform(b, n, fin, fout, 1234, 7);
    cr_assert_eq(memcmp(a, b, n * sizeof *a), 0, "deterministic");
    ck_glorot_uniform(c, 13, fin, fout, 1234, 7);
    cr_assert_eq(memcmp(a, c, 13 * sizeof *a), 0, "value i does not depend on count");
    /* the documented counter layout */
    const ck_u32x4 w1 = ck_philox4x32_10(1, 0, 7, 0, 1234, 0);
    cr_assert_eq(a[6], ck_uniform_sym(w1.v[2], (float)limit));
    double s = 0.0, s2 = 0.0, mx = 0.0;
    for (size_t i = 0; i < n; ++i) {
        s += a[i];
        s2 += (double)a[i] * a[i];
        mx = fmax(mx, fabs(a[i]));
    }
    const double mean = s / n, var = s2 / n - mean * mean;
    cr_assert(mx <= limit, "max %.6g > limit %.6g", mx, limit);
    cr_assert(mx > 0.999 * limit);
    /* U(-l, l): mean 0 (sd l/sqrt(3n)), variance l^2/3 */
    cr_assert(fabs(mean) < 5.0 * limit / sqrt(3.0 * n), "mean %.6g", mean);
    cr_assert(fabs(var / (limit * limit / 3.0) - 1.0) < 0.02, "var %.6g", var);
    ck_glorot_uniform(b, n, fin, fout, 1234, 8);
    size_t same = 0;
    for (size_t i = 0; i < n; ++i)
        same += a[i] == b[i];
    cr_assert(same < 10, "another stream gives other values");
    ck_glorot_uniform(b, n, fin, fout, 1235, 7);
    same = 0;
    for (size_t i = 0; i < n; ++i)
        same += a[i] == b[i];
    cr_assert(same < 10, "another seed gives other values");
    free(a), free(b), free(c);
}

/* ---- thread-count independence ------------------------------------------------------------- */

typedef struct run_out {
    float *y, *dx, *dk, *db, *py, *pdx, *gy, *gdx, *dy2, *ddx, *ddk, *ddb, *ay, *adx;
} run_out;

enum { TN = 4, TH = 20, TW = 20, TC = 16, TCO = 32, TD = 300, TO = 64 };

static void run_all(const float *x, const float *k, const float *b, const float *dy,
                    const float *dk_in, run_out *o) {
    ck_conv_geom g, pg;
    cr_assert_eq(ck_conv_geom_make(&g, TN, TH, TW, TC, TCO, 3, 3, 2, 2, 1), 0);
    cr_assert_eq(ck_conv_geom_make(&pg, TN, TH, TW, TC, TC, 3, 3, 2, 2, 1), 0);
    const size_t nx = (size_t)TN * TH * TW * TC;
    float *ws = falloc(ck_cpu_conv2d_workspace_floats(&g));
    ck_cpu_conv2d_forward(&g, x, k, b, o->y, ws);
    ck_cpu_conv2d_backward(&g, x, k, dy, o->dx, o->dk, o->db, ws);
    ck_cpu_pool_forward(&pg, 1, x, o->py);
    ck_cpu_pool_backward(&pg, 1, x, dy, o->pdx);
    ck_cpu_gap_forward(TN, TH * TW, TC, x, o->gy);
    ck_cpu_gap_backward(TN, TH * TW, TC, dy, o->gdx);
    /* dense on the first TN * 4 x TD values of x */
    ck_cpu_dense_forward(TN * 4, TD, TO, x, dk_in, b, o->dy2);
    ck_cpu_dense_backward(TN * 4, TD, TO, x, dk_in, dy, o->ddx, o->ddk, o->ddb);
    ck_cpu_activation_forward(CK_ACT_GELU, 0.0f, x, o->ay, nx, TC);
    ck_cpu_activation_backward(CK_ACT_SOFTMAX, 0.0f, NULL, x, dy, o->adx, nx, TC);
    free(ws);
}

static run_out run_alloc(void) {
    const size_t nx = (size_t)TN * TH * TW * TC;
    run_out o;
    o.y = falloc(nx * 2), o.dx = falloc(nx), o.dk = falloc(9 * TC * TCO), o.db = falloc(TCO);
    o.py = falloc(nx), o.pdx = falloc(nx), o.gy = falloc(TN * TC), o.gdx = falloc(nx);
    o.dy2 = falloc(TN * 4 * TO), o.ddx = falloc(TN * 4 * TD), o.ddk = falloc(TD * TO);
    o.ddb = falloc(TO), o.ay = falloc(nx), o.adx = falloc(nx);
    return o;
}

static void run_free(run_out *o) {
    free(o->y), free(o->dx), free(o->dk), free(o->db), free(o->py), free(o->pdx), free(o->gy);
    free(o->gdx), free(o->dy2), free(o->ddx), free(o->ddk), free(o->ddb), free(o->ay);
    free(o->adx);
}

/* gemm_tol < 0: all outputs bit-identical; else GEMM outputs within gemm_tol (array scale). */
static void run_cmp_tol(const char *cfg, const run_out *a, const run_out *b, double gemm_tol) {
    const size_t nx = (size_t)TN * TH * TW * TC;
    const size_t nyc = (size_t)TN * 10 * 10 * TCO, nyp = (size_t)TN * 10 * 10 * TC;
    struct {
        const char *name;
        const float *p, *q;
        size_t n;
        int gemm;
    } t[] = {{"conv y", a->y, b->y, nyc, 2},
             {"conv dx", a->dx, b->dx, nx, 2},
             {"conv dk", a->dk, b->dk, 9 * TC * TCO, 2},
             {"conv db", a->db, b->db, TCO, 0},
             {"pool y", a->py, b->py, nyp, 0},
             {"pool dx", a->pdx, b->pdx, nx, 0},
             {"gap y", a->gy, b->gy, TN * TC, 0},
             {"gap dx", a->gdx, b->gdx, nx, 0},
             {"dense y", a->dy2, b->dy2, TN * 4 * TO, 1},
             {"dense dx", a->ddx, b->ddx, TN * 4 * TD, 1},
             {"dense dk", a->ddk, b->ddk, TD * TO, 1},
             {"dense db", a->ddb, b->ddb, TO, 0},
             {"gelu y", a->ay, b->ay, nx, 0},
             {"softmax dx", a->adx, b->adx, nx, 0}};
    /* Conv2D GEMMs run single-threaded per tile inside the OpenMP region: with the OpenMP build
     * of OpenBLAS their bits do not depend on any thread count either (batch TN >= 2). */
    const int conv_exact = openblas_get_parallel() == 2;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; ++i) {
        if ((t[i].gemm == 1 || (t[i].gemm == 2 && !conv_exact)) && gemm_tol >= 0.0) {
            expect_close(t[i].name, t[i].p, t[i].q, t[i].n, gemm_tol);
            continue;
        }
        cr_assert_eq(memcmp(t[i].p, t[i].q, t[i].n * sizeof(float)), 0,
                     "%s: %s differs from the reference run", cfg, t[i].name);
    }
}

static void run_cmp(const char *cfg, const run_out *a, const run_out *b) {
    run_cmp_tol(cfg, a, b, -1.0);
}

static void run_cmp_blas(const char *cfg, const run_out *a, const run_out *b) {
    run_cmp_tol(cfg, a, b, 1e-6);
}

Test(layers, thread_count_independence) {
    const size_t nx = (size_t)TN * TH * TW * TC;
    trng r = {71};
    float *x = frand(&r, nx, -1.0f, 1.0f), *k = frand(&r, 9 * TC * TCO, -0.3f, 0.3f);
    float *b = frand(&r, TO, -1.0f, 1.0f), *dy = frand(&r, nx * 2, -1.0f, 1.0f);
    float *dk = frand(&r, TD * TO, -0.3f, 0.3f);
    run_out ref = run_alloc(), o = run_alloc();
    run_all(x, k, b, dy, dk, &ref); /* default threads (OpenMP and OpenBLAS) */
    run_all(x, k, b, dy, dk, &o);
    run_cmp("same configuration twice", &ref, &o);
    /* OpenBLAS partitions a GEMM by its thread count: the GEMM outputs (dense y, dx, dk; conv
     * y, dx, dk with the pthreads build) may differ in the last bits between thread counts,
     * everything else must be
     * identical. The OpenMP build of OpenBLAS (openblas_get_parallel() == 2, what cnnkit links
     * when it is installed) takes its thread count from OpenMP; the pthreads build has its own. */
    const int blas_openmp = openblas_get_parallel() == 2;
#ifdef _OPENMP
    omp_set_num_threads(1);
    run_all(x, k, b, dy, dk, &o);
    if (blas_openmp)
        run_cmp_blas("1 OpenMP thread", &ref, &o);
    else
        run_cmp("1 OpenMP thread", &ref, &o);
    omp_set_num_threads(5);
    run_all(x, k, b, dy, dk, &o);
    if (blas_openmp)
        run_cmp_blas("5 OpenMP threads", &ref, &o);
    else
        run_cmp("5 OpenMP threads", &ref, &o);
    if (blas_openmp) { /* a fixed OpenMP thread count gives identical bits */
        run_out o1 = run_alloc();
        run_all(x, k, b, dy, dk, &o1);
        run_cmp("5 OpenMP threads twice", &o1, &o);
        run_free(&o1);
    }
#endif
    /* pthreads OpenBLAS: with a fixed OpenBLAS thread count any OpenMP thread count gives
     * identical bits */
    for (int bt = 1; bt <= 4 && !blas_openmp; bt += 3) {
        run_out o1 = run_alloc();
        openblas_set_num_threads(bt);
#ifdef _OPENMP
        omp_set_num_threads(1);
#endif
        run_all(x, k, b, dy, dk, &o1);
#ifdef _OPENMP
        omp_set_num_threads(5);
#endif
        run_all(x, k, b, dy, dk, &o);
        run_cmp(bt == 1 ? "1 OpenBLAS thread, OpenMP 1 vs 5" : "4 OpenBLAS threads, OpenMP 1 vs 5",
                &o1, &o);
        run_cmp_blas(bt == 1 ? "1 OpenBLAS thread" : "4 OpenBLAS threads", &ref, &o);
        run_free(&o1);
    }
    run_free(&ref), run_free(&o);
    free(x), free(k), free(b), free(dy), free(dk);
}
