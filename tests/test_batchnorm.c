/* BatchNorm (+ReLU, + fused SpatialDropout) on the CPU reference. */
#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A BN problem in logical NCHW order, with everything a call needs. */
typedef struct bn_case {
    int N, C, H, W;
    size_t cnt;
    float *x, *dy, *gamma, *beta, *rm, *rv;
} bn_case;

static bn_case make_case(int N, int C, int H, int W, uint64_t seed) {
    bn_case b = {N, C, H, W, (size_t)N * C * H * W, NULL, NULL, NULL, NULL, NULL, NULL};
    trng r = {seed};
    b.x = malloc(b.cnt * 4);
    b.dy = malloc(b.cnt * 4);
    b.gamma = malloc(C * 4);
    b.beta = malloc(C * 4);
    b.rm = malloc(C * 4);
    b.rv = malloc(C * 4);
    for (int c = 0; c < C; ++c) {
        b.gamma[c] = trng_uniform(&r, 0.5f, 1.5f);
        b.beta[c] = trng_uniform(&r, -0.5f, 0.5f);
        b.rm[c] = trng_uniform(&r, -0.2f, 0.2f);
        b.rv[c] = trng_uniform(&r, 0.5f, 2.0f);
    }
    for (size_t i = 0; i < b.cnt; ++i) {
        int c = (int)((i / ((size_t)H * W)) % C);
        b.x[i] = 0.3f * c - 0.5f + (1.0f + 0.2f * c) * trng_normal(&r);
        b.dy[i] = trng_uniform(&r, -1.0f, 1.0f);
    }
    return b;
}

static void free_case(bn_case *b) {
    free(b->x);
    free(b->dy);
    free(b->gamma);
    free(b->beta);
    free(b->rm);
    free(b->rv);
}

/* Outputs of one training forward + backward, NCHW order. */
typedef struct bn_out {
    float *y, *dx, *dgamma, *dbeta, *rm, *rv, *smean, *sinv;
} bn_out;

static bn_out alloc_out(const bn_case *b) {
    bn_out o;
    o.y = malloc(b->cnt * 4);
    o.dx = malloc(b->cnt * 4);
    o.dgamma = malloc(b->C * 4);
    o.dbeta = malloc(b->C * 4);
    o.rm = malloc(b->C * 4);
    o.rv = malloc(b->C * 4);
    o.smean = malloc(b->C * 4);
    o.sinv = malloc(b->C * 4);
    return o;
}

static void free_out(bn_out *o) {
    free(o->y);
    free(o->dx);
    free(o->dgamma);
    free(o->dbeta);
    free(o->rm);
    free(o->rv);
    free(o->smean);
    free(o->sinv);
}

/* Runs training forward (and backward when o->dx) on ctx with layout l. x_override replaces b->x
 * when given (for finite differences). */
static void run_bn(ck_context *ctx, ck_layout l, const ck_bn_desc *d, const bn_case *b,
                   const float *x_override, const float *gamma_override, const float *beta_override,
                   const ck_dropout_desc *sd, bn_out *o, int backward) {
    const float *x = x_override ? x_override : b->x;
    ck_tensor *tx = t_tensor_from_nchw(ctx, l, b->N, b->C, b->H, b->W, x);
    ck_tensor *ty = t_tensor_from_nchw(ctx, l, b->N, b->C, b->H, b->W, NULL);
    ck_tensor *g = t_param(ctx, b->C, gamma_override ? gamma_override : b->gamma);
    ck_tensor *be = t_param(ctx, b->C, beta_override ? beta_override : b->beta);
    ck_tensor *rm = t_param(ctx, b->C, b->rm), *rv = t_param(ctx, b->C, b->rv);
    ck_tensor *sm = t_param(ctx, b->C, NULL), *si = t_param(ctx, b->C, NULL);
    size_t wsb = 0;
    CK_OK(ctx, ck_batchnorm_workspace_size(ctx, tx, &wsb));
    ck_workspace *ws = NULL;
    if (wsb)
        CK_OK(ctx, ck_workspace_create(ctx, &ws, wsb));
    CK_OK(ctx, ck_batchnorm_forward_training(ctx, d, tx, g, be, rm, rv, sm, si, sd, ty, ws));
    t_tensor_to_nchw(ctx, ty, o->y);
    t_param_get(ctx, rm, o->rm);
    t_param_get(ctx, rv, o->rv);
    t_param_get(ctx, sm, o->smean);
    t_param_get(ctx, si, o->sinv);
    if (backward) {
        ck_tensor *tdy = t_tensor_from_nchw(ctx, l, b->N, b->C, b->H, b->W, b->dy);
        ck_tensor *tdx = t_tensor_from_nchw(ctx, l, b->N, b->C, b->H, b->W, NULL);
        ck_tensor *dg = t_param(ctx, b->C, NULL), *db = t_param(ctx, b->C, NULL);
        CK_OK(ctx, ck_batchnorm_backward(ctx, d, tx, tdy, g, be, sm, si, sd, tdx, dg, db, ws));
        t_tensor_to_nchw(ctx, tdx, o->dx);
        t_param_get(ctx, dg, o->dgamma);
        t_param_get(ctx, db, o->dbeta);
        ck_tensor_destroy(tdy);
        ck_tensor_destroy(tdx);
        ck_tensor_destroy(dg);
        ck_tensor_destroy(db);
    }
    ck_workspace_destroy(ws);
    ck_tensor_destroy(tx);
    ck_tensor_destroy(ty);
    ck_tensor_destroy(g);
    ck_tensor_destroy(be);
    ck_tensor_destroy(rm);
    ck_tensor_destroy(rv);
    ck_tensor_destroy(sm);
    ck_tensor_destroy(si);
}

static double loss_of(const bn_case *b, const float *y) {
    double L = 0.0;
    for (size_t i = 0; i < b->cnt; ++i)
        L += (double)y[i] * b->dy[i];
    return L;
}

/* Forward against a double-precision evaluation of the definition. */
static void check_forward_vs_double(const ck_bn_desc *d, const bn_case *b, const bn_out *o,
                                    const ck_dropout_desc *sd, uint64_t seed, double ytol) {
    const int HW = b->H * b->W;
    const double M = (double)b->N * HW;
    uint8_t *keep = malloc((size_t)b->N * b->C);
    if (sd)
        CK_OK(NULL, ck_dropout_mask_host(CK_DROPOUT_SPATIAL, seed, sd, b->N, b->C, b->H, b->W, keep,
                                         (size_t)b->N * b->C));
    for (int c = 0; c < b->C; ++c) {
        double s = 0, q = 0;
        for (int n = 0; n < b->N; ++n)
            for (int p = 0; p < HW; ++p)
                s += b->x[((size_t)n * b->C + c) * HW + p];
        double mu = s / M;
        for (int n = 0; n < b->N; ++n)
            for (int p = 0; p < HW; ++p) {
                double v = b->x[((size_t)n * b->C + c) * HW + p] - mu;
                q += v * v;
            }
        double var = q / M, inv = 1.0 / sqrt(var + d->epsilon);
        double vrun = d->unbiased_running_var ? q / (M - 1) : var;
        double rm = b->rm[c] + d->average_factor * (mu - b->rm[c]);
        double rv = b->rv[c] + d->average_factor * (vrun - b->rv[c]);
        cr_assert(fabs(o->smean[c] - mu) <= 1e-5 * fmax(1, fabs(mu)), "saved mean c%d", c);
        cr_assert(fabs(o->sinv[c] - inv) <= 1e-5 * fmax(1, inv), "saved invstd c%d", c);
        cr_assert(fabs(o->rm[c] - rm) <= 1e-5 * fmax(1, fabs(rm)), "running mean c%d", c);
        cr_assert(fabs(o->rv[c] - rv) <= 1e-5 * fmax(1, rv), "running var c%d: %f vs %f", c,
                  o->rv[c], rv);
        for (int n = 0; n < b->N; ++n) {
            double m = sd ? (keep[n * b->C + c] ? 1.0 / (1.0 - sd->rate) : 0.0) : 1.0;
            for (int p = 0; p < HW; ++p) {
                size_t i = ((size_t)n * b->C + c) * HW + p;
                double pre = b->gamma[c] * (b->x[i] - mu) * inv + b->beta[c];
                double y = (d->activation == CK_ACT_RELU && pre < 0 ? 0 : pre) * m;
                cr_assert(fabs(o->y[i] - y) <= ytol * fmax(1, fabs(y)), "y[%zu] %f vs %f", i,
                          o->y[i], y);
            }
        }
    }
    free(keep);
}

/* Central finite differences of L = sum(y * dy) against dx, dgamma, dbeta. Points whose
 * pre-activation is within 0.05 of the ReLU kink are skipped (the derivative jumps there).
 * Error budget: float forward (~1e-6 relative per term, summed over M terms) divided by 2h:
 * tolerance 2e-3 * max(1, |grad|). */
static void check_gradients(ck_layout l, const ck_bn_desc *d, const bn_case *b,
                            const ck_dropout_desc *sd) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    bn_out o = alloc_out(b), t = alloc_out(b);
    run_bn(ctx, l, d, b, NULL, NULL, NULL, sd, &o, 1);
    check_forward_vs_double(d, b, &o, sd, ck_context_seed(ctx), 1e-5);
    const float h = 2e-3f;
    float *xp = malloc(b->cnt * 4);
    const int HW = b->H * b->W;
    int checked = 0;
    for (size_t i = 0; i < b->cnt; i += 5) {
        int c = (int)((i / HW) % b->C);
        float pre = b->gamma[c] * (b->x[i] - o.smean[c]) * o.sinv[c] + b->beta[c];
        if (d->activation == CK_ACT_RELU && fabsf(pre) < 0.05f)
            continue;
        memcpy(xp, b->x, b->cnt * 4);
        xp[i] = b->x[i] + h;
        run_bn(ctx, l, d, b, xp, NULL, NULL, sd, &t, 0);
        double lp = loss_of(b, t.y);
        xp[i] = b->x[i] - h;
        run_bn(ctx, l, d, b, xp, NULL, NULL, sd, &t, 0);
        double lm = loss_of(b, t.y);
        double fd = (lp - lm) / (2.0 * (double)h);
        cr_assert(fabs(fd - o.dx[i]) <= 2e-3 * fmax(1.0, fabs(fd)), "dx[%zu] = %g, fd %g", i,
                  o.dx[i], fd);
        ++checked;
    }
    cr_assert(checked > 10, "too few points checked (%d)", checked);
    float *gp = malloc(b->C * 4);
    for (int c = 0; c < b->C; ++c) {
        for (int which = 0; which < 2; ++which) {
            const float *base = which ? b->beta : b->gamma;
            memcpy(gp, base, b->C * 4);
            gp[c] = base[c] + h;
            run_bn(ctx, l, d, b, NULL, which ? NULL : gp, which ? gp : NULL, sd, &t, 0);
            double lp = loss_of(b, t.y);
            gp[c] = base[c] - h;
            run_bn(ctx, l, d, b, NULL, which ? NULL : gp, which ? gp : NULL, sd, &t, 0);
            double lm = loss_of(b, t.y);
            double fd = (lp - lm) / (2.0 * (double)h);
            float an = which ? o.dbeta[c] : o.dgamma[c];
            cr_assert(fabs(fd - an) <= 2e-3 * fmax(1.0, fabs(fd)), "d%s[%d] = %g, fd %g",
                      which ? "beta" : "gamma", c, an, fd);
        }
    }
    free(gp);
    free(xp);
    free_out(&o);
    free_out(&t);
    ck_context_destroy(ctx);
}

Test(batchnorm, gradcheck_plain_nchw) {
    bn_case b = make_case(3, 4, 3, 5, 21);
    ck_bn_desc d;
    ck_bn_desc_init(&d, CK_BN_KERAS);
    check_gradients(CK_LAYOUT_NCHW, &d, &b, NULL);
    free_case(&b);
}

Test(batchnorm, gradcheck_relu_nhwc_pytorch) {
    bn_case b = make_case(4, 3, 4, 3, 22);
    ck_bn_desc d;
    ck_bn_desc_init(&d, CK_BN_PYTORCH);
    d.activation = CK_ACT_RELU;
    check_gradients(CK_LAYOUT_NHWC, &d, &b, NULL);
    free_case(&b);
}

Test(batchnorm, gradcheck_relu_spatial_dropout_nchw) {
    bn_case b = make_case(6, 3, 3, 3, 23);
    ck_bn_desc d;
    ck_bn_desc_init(&d, CK_BN_KERAS);
    d.activation = CK_ACT_RELU;
    ck_dropout_desc sd = {0.4f, 9, 0};
    check_gradients(CK_LAYOUT_NCHW, &d, &b, &sd);
    free_case(&b);
}

/* Running statistics after k identical batches, from zero mean / unit variance, against the
 * hand-derived closed forms (shared/research/evidence.md, item 9):
 *   Keras:   mean = mu (1 - 0.99^k),  var = 0.99^k + (1 - 0.99^k) s2
 *   PyTorch: mean = mu (1 - 0.9^k),   var = 0.9^k + (1 - 0.9^k) s2 M / (M - 1)
 * with mu, s2 the batch mean and biased variance. */
static void check_running(ck_bn_convention conv, ck_layout l) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    bn_case b = make_case(5, 3, 4, 4, 31);
    for (int c = 0; c < b.C; ++c) {
        b.rm[c] = 0.0f;
        b.rv[c] = 1.0f;
    }
    ck_bn_desc d;
    ck_bn_desc_init(&d, conv);
    const int K = 5;
    bn_out o = alloc_out(&b);
    for (int k = 0; k < K; ++k) {
        run_bn(ctx, l, &d, &b, NULL, NULL, NULL, NULL, &o, 0);
        memcpy(b.rm, o.rm, b.C * 4);
        memcpy(b.rv, o.rv, b.C * 4);
    }
    const double mom = conv == CK_BN_KERAS ? 0.99 : 0.9;
    const int HW = b.H * b.W;
    const double M = (double)b.N * HW;
    for (int c = 0; c < b.C; ++c) {
        double s = 0, q = 0;
        for (int n = 0; n < b.N; ++n)
            for (int p = 0; p < HW; ++p)
                s += b.x[((size_t)n * b.C + c) * HW + p];
        double mu = s / M;
        for (int n = 0; n < b.N; ++n)
            for (int p = 0; p < HW; ++p) {
                double v = b.x[((size_t)n * b.C + c) * HW + p] - mu;
                q += v * v;
            }
        double s2 = q / M;
        double mk = pow(mom, K);
        double em = mu * (1 - mk);
        double ev = mk + (1 - mk) * s2 * (conv == CK_BN_PYTORCH ? M / (M - 1) : 1.0);
        cr_assert(fabs(o.rm[c] - em) <= 1e-5 * fmax(1, fabs(em)), "mean c%d: %.8f vs %.8f", c,
                  o.rm[c], em);
        cr_assert(fabs(o.rv[c] - ev) <= 1e-5 * fmax(1, ev), "var c%d: %.8f vs %.8f", c, o.rv[c],
                  ev);
    }
    free_out(&o);
    free_case(&b);
    ck_context_destroy(ctx);
}

Test(batchnorm, running_stats_keras_nchw) {
    check_running(CK_BN_KERAS, CK_LAYOUT_NCHW);
}
Test(batchnorm, running_stats_pytorch_nhwc) {
    check_running(CK_BN_PYTORCH, CK_LAYOUT_NHWC);
}

Test(batchnorm, presets) {
    ck_bn_desc d;
    CK_OK(NULL, ck_bn_desc_init(&d, CK_BN_KERAS));
    cr_assert_float_eq(d.epsilon, 1e-3f, 0.0f);
    cr_assert_float_eq(d.average_factor, 0.01f, 0.0f);
    cr_assert_eq(d.unbiased_running_var, 0);
    CK_OK(NULL, ck_bn_desc_init(&d, CK_BN_PYTORCH));
    cr_assert_float_eq(d.epsilon, 1e-5f, 0.0f);
    cr_assert_float_eq(d.average_factor, 0.1f, 0.0f);
    cr_assert_eq(d.unbiased_running_var, 1);
    cr_assert_eq(ck_bn_desc_init(&d, (ck_bn_convention)7), CK_STATUS_BAD_PARAM);
}

/* The fused BN -> ReLU -> SpatialDropout pass equals the three ops run one after the other,
 * bit for bit, forward and backward (the same float operations in the same order). */
Test(batchnorm, fused_spatial_dropout_equals_separate_ops) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    for (int li = 0; li < 2; ++li) {
        ck_layout l = li ? CK_LAYOUT_NHWC : CK_LAYOUT_NCHW;
        bn_case b = make_case(9, 5, 4, 3, 41);
        ck_bn_desc d;
        ck_bn_desc_init(&d, CK_BN_KERAS);
        d.activation = CK_ACT_RELU;
        ck_dropout_desc sd = {0.3f, 1234, 0};
        bn_out fused = alloc_out(&b), plain = alloc_out(&b);
        run_bn(ctx, l, &d, &b, NULL, NULL, NULL, &sd, &fused, 1);
        /* separate: BN+ReLU, then dropout forward on y; dropout backward on dy, then BN bwd */
        float *dy_orig = b.dy, *dy_sd = malloc(b.cnt * 4), *y_sd = malloc(b.cnt * 4);
        ck_tensor *t = t_tensor_from_nchw(ctx, l, b.N, b.C, b.H, b.W, b.dy);
        CK_OK(ctx, ck_spatial_dropout_backward(ctx, &sd, CK_MODE_TRAINING, t, t, NULL));
        t_tensor_to_nchw(ctx, t, dy_sd);
        b.dy = dy_sd;
        run_bn(ctx, l, &d, &b, NULL, NULL, NULL, NULL, &plain, 1);
        b.dy = dy_orig;
        ck_tensor_destroy(t);
        t = t_tensor_from_nchw(ctx, l, b.N, b.C, b.H, b.W, plain.y);
        CK_OK(ctx, ck_spatial_dropout_forward(ctx, &sd, CK_MODE_TRAINING, t, t, NULL));
        t_tensor_to_nchw(ctx, t, y_sd);
        ck_tensor_destroy(t);
        cr_assert_eq(memcmp(fused.y, y_sd, b.cnt * 4), 0, "fused forward differs (layout %d)", li);
        cr_assert_eq(memcmp(fused.dx, plain.dx, b.cnt * 4), 0, "fused dx differs (layout %d)", li);
        cr_assert_eq(memcmp(fused.dgamma, plain.dgamma, b.C * 4), 0, "fused dgamma differs");
        cr_assert_eq(memcmp(fused.dbeta, plain.dbeta, b.C * 4), 0, "fused dbeta differs");
        free(dy_sd);
        free(y_sd);
        free_out(&fused);
        free_out(&plain);
        free_case(&b);
    }
    ck_context_destroy(ctx);
}

Test(batchnorm, inference_matches_definition) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    bn_case b = make_case(3, 6, 5, 5, 51);
    ck_bn_desc d;
    ck_bn_desc_init(&d, CK_BN_KERAS);
    d.activation = CK_ACT_RELU;
    float *y = malloc(b.cnt * 4);
    for (int li = 0; li < 2; ++li) {
        ck_layout l = li ? CK_LAYOUT_NHWC : CK_LAYOUT_NCHW;
        ck_tensor *tx = t_tensor_from_nchw(ctx, l, b.N, b.C, b.H, b.W, b.x);
        ck_tensor *g = t_param(ctx, b.C, b.gamma), *be = t_param(ctx, b.C, b.beta);
        ck_tensor *rm = t_param(ctx, b.C, b.rm), *rv = t_param(ctx, b.C, b.rv);
        CK_OK(ctx, ck_batchnorm_forward_inference(ctx, &d, tx, g, be, rm, rv, tx)); /* in place */
        t_tensor_to_nchw(ctx, tx, y);
        for (size_t i = 0; i < b.cnt; ++i) {
            int c = (int)((i / (b.H * b.W)) % b.C);
            double pre = b.gamma[c] * (b.x[i] - b.rm[c]) / sqrt(b.rv[c] + 1e-3) + b.beta[c];
            double e = pre > 0 ? pre : 0;
            cr_assert(fabs(y[i] - e) <= 1e-5 * fmax(1, fabs(e)), "y[%zu] %f vs %f", i, y[i], e);
        }
        ck_tensor_destroy(tx);
        ck_tensor_destroy(g);
        ck_tensor_destroy(be);
        ck_tensor_destroy(rm);
        ck_tensor_destroy(rv);
    }
    free(y);
    free_case(&b);
    ck_context_destroy(ctx);
}

/* Large offset, small spread: the statistics must still be right to 1e-5 (a naive fp32
 * E[x^2] - E[x]^2 would lose every digit here). y itself can only be as exact as the fp32 mean:
 * ulp(1000) = 6.1e-5 against std ~0.01 gives |y error| up to ~0.5 ulp * gamma * invstd ~ 5e-3. */
Test(batchnorm, stable_statistics_with_large_mean) {
    bn_case b = make_case(8, 2, 16, 16, 61);
    for (size_t i = 0; i < b.cnt; ++i)
        b.x[i] = 1000.0f + 0.01f * b.x[i];
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_bn_desc d;
    ck_bn_desc_init(&d, CK_BN_PYTORCH);
    bn_out o = alloc_out(&b);
    run_bn(ctx, CK_LAYOUT_NHWC, &d, &b, NULL, NULL, NULL, NULL, &o, 0);
    check_forward_vs_double(&d, &b, &o, NULL, 0, 5e-3);
    free_out(&o);
    free_case(&b);
    ck_context_destroy(ctx);
}

/* The tensors of a one-sample (1 x 4 x 1 x 1) BN case b in layout l: input, output, parameters,
 * running and saved statistics, and for the backward pass dy, dx, dgamma, dbeta. */
typedef struct one_sample {
    ck_tensor *x, *y, *g, *be, *rm, *rv, *sm, *si, *dy, *dx, *dg, *db;
} one_sample;

static one_sample one_sample_open(ck_context *ctx, ck_layout l, const bn_case *b) {
    one_sample t = {t_tensor_from_nchw(ctx, l, 1, 4, 1, 1, b->x),
                    t_tensor_from_nchw(ctx, l, 1, 4, 1, 1, NULL),
                    t_param(ctx, 4, b->gamma),
                    t_param(ctx, 4, b->beta),
                    t_param(ctx, 4, b->rm),
                    t_param(ctx, 4, b->rv),
                    t_param(ctx, 4, NULL),
                    t_param(ctx, 4, NULL),
                    t_tensor_from_nchw(ctx, l, 1, 4, 1, 1, b->dy),
                    t_tensor_from_nchw(ctx, l, 1, 4, 1, 1, NULL),
                    t_param(ctx, 4, NULL),
                    t_param(ctx, 4, NULL)};
    return t;
}

static void one_sample_close(one_sample *t) {
    ck_tensor *list[] = {t->x,  t->y,  t->g,  t->be, t->rm, t->rv,
                         t->sm, t->si, t->dy, t->dx, t->dg, t->db};
    for (size_t i = 0; i < sizeof list / sizeof *list; ++i)
        ck_tensor_destroy(list[i]);
}

/* N*H*W == 1: an error status by default, the running statistics when asked (then the
 * forward equals inference, the running stats stay, and dx = dy * relu' * gamma * invstd). */
Test(batchnorm, single_value_batch) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    bn_case b = make_case(1, 4, 1, 1, 71);
    ck_bn_desc d;
    ck_bn_desc_init(&d, CK_BN_KERAS);
    d.activation = CK_ACT_RELU;
    one_sample t = one_sample_open(ctx, CK_LAYOUT_NCHW, &b);
    ck_status st = ck_batchnorm_forward_training(ctx, &d, t.x, t.g, t.be, t.rm, t.rv, t.sm, t.si,
                                                 NULL, t.y, NULL);
    cr_assert_eq(st, CK_STATUS_SINGLE_VALUE_BATCH);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "x:"), NULL, "message: %s",
                  ck_context_last_error(ctx));
    d.single_value_use_running = 1;
    CK_OK(ctx, ck_batchnorm_forward_training(ctx, &d, t.x, t.g, t.be, t.rm, t.rv, t.sm, t.si, NULL,
                                             t.y, NULL));
    float y[4], rmo[4], rvo[4];
    t_tensor_to_nchw(ctx, t.y, y);
    t_param_get(ctx, t.rm, rmo);
    t_param_get(ctx, t.rv, rvo);
    for (int c = 0; c < 4; ++c) {
        cr_assert_eq(rmo[c], b.rm[c], "running mean changed");
        cr_assert_eq(rvo[c], b.rv[c], "running var changed");
        double pre = b.gamma[c] * (b.x[c] - b.rm[c]) / sqrt(b.rv[c] + 1e-3) + b.beta[c];
        cr_assert(fabs(y[c] - (pre > 0 ? pre : 0)) <= 1e-5, "y[%d]", c);
    }
    /* dx written over dy, in place */
    CK_OK(ctx, ck_batchnorm_backward(ctx, &d, t.x, t.dy, t.g, t.be, t.sm, t.si, NULL, t.dy, t.dg,
                                     t.db, NULL));
    float dx[4];
    t_tensor_to_nchw(ctx, t.dy, dx);
    for (int c = 0; c < 4; ++c) {
        double pre = b.gamma[c] * (b.x[c] - b.rm[c]) / sqrt(b.rv[c] + 1e-3) + b.beta[c];
        double e = pre > 0 ? b.dy[c] * b.gamma[c] / sqrt(b.rv[c] + 1e-3) : 0.0;
        cr_assert(fabs(dx[c] - e) <= 1e-5, "dx[%d] %f vs %f", c, dx[c], e);
    }
    one_sample_close(&t);
    free_case(&b);
    ck_context_destroy(ctx);
}

/* N*H*W == 1 with the batch's statistics (single_value_use_running 2, Keras): mean x, variance
 * 0, so x-hat is 0 and y = act(beta); the running mean moves toward x and the running variance
 * toward 0 (0.99 v for Keras's momentum); dx = 0 and dgamma = 0 (x-hat is 0), dbeta = dy * act'.
 * An unbiased running variance (PyTorch) has no value for one sample: refused. */
Test(batchnorm, single_value_batch_statistics) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    bn_case b = make_case(1, 4, 1, 1, 72);
    ck_bn_desc d;
    ck_bn_desc_init(&d, CK_BN_KERAS);
    d.activation = CK_ACT_RELU;
    d.single_value_use_running = 2;
    for (int c = 0; c < 4; ++c)
        b.beta[c] = c % 2 ? 0.25f : -0.25f; /* both sides of the ReLU */
    one_sample t = one_sample_open(ctx, CK_LAYOUT_NHWC, &b);
    CK_OK(ctx, ck_batchnorm_forward_training(ctx, &d, t.x, t.g, t.be, t.rm, t.rv, t.sm, t.si, NULL,
                                             t.y, NULL));
    float y[4], rmo[4], rvo[4];
    t_tensor_to_nchw(ctx, t.y, y);
    t_param_get(ctx, t.rm, rmo);
    t_param_get(ctx, t.rv, rvo);
    for (int c = 0; c < 4; ++c) {
        cr_assert_eq(y[c], b.beta[c] > 0 ? b.beta[c] : 0.0f, "y[%d] = %g", c, y[c]);
        cr_assert_float_eq(rmo[c], 0.99f * b.rm[c] + 0.01f * b.x[c], 1e-6);
        cr_assert_float_eq(rvo[c], 0.99f * b.rv[c], 1e-6);
    }
    CK_OK(ctx, ck_batchnorm_backward(ctx, &d, t.x, t.dy, t.g, t.be, t.sm, t.si, NULL, t.dx, t.dg,
                                     t.db, NULL));
    float dx[4], dgo[4], dbo[4];
    t_tensor_to_nchw(ctx, t.dx, dx);
    t_param_get(ctx, t.dg, dgo);
    t_param_get(ctx, t.db, dbo);
    for (int c = 0; c < 4; ++c) {
        cr_assert_eq(dx[c], 0.0f, "dx[%d] = %g", c, dx[c]);
        cr_assert_eq(dgo[c], 0.0f, "dgamma[%d] = %g", c, dgo[c]);
        cr_assert_float_eq(dbo[c], b.beta[c] > 0 ? b.dy[c] : 0.0f, 1e-7);
    }
    ck_bn_desc pt;
    ck_bn_desc_init(&pt, CK_BN_PYTORCH);
    pt.single_value_use_running = 2;
    cr_assert_eq(ck_batchnorm_forward_training(ctx, &pt, t.x, t.g, t.be, t.rm, t.rv, t.sm, t.si,
                                               NULL, t.y, NULL),
                 CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "single_value_use_running"), "%s",
              ck_context_last_error(ctx));
    one_sample_close(&t);
    free_case(&b);
    ck_context_destroy(ctx);
}

/* Results do not depend on the CPU thread count (fixed per-channel order). */
Test(batchnorm, deterministic_across_thread_counts) {
    bn_case b = make_case(7, 9, 6, 6, 81);
    ck_bn_desc d;
    ck_bn_desc_init(&d, CK_BN_KERAS);
    d.activation = CK_ACT_RELU;
    ck_context *c1 = t_ctx(CK_DEVICE_CPU), *c2 = t_ctx(CK_DEVICE_CPU);
    CK_OK(c2, ck_context_set_cpu_threads(c2, 1));
    bn_out a = alloc_out(&b), o = alloc_out(&b);
    ck_dropout_desc sd = {0.2f, 5, 0};
    run_bn(c1, CK_LAYOUT_NHWC, &d, &b, NULL, NULL, NULL, &sd, &a, 1);
    run_bn(c2, CK_LAYOUT_NHWC, &d, &b, NULL, NULL, NULL, &sd, &o, 1);
    cr_assert_eq(memcmp(a.y, o.y, b.cnt * 4), 0);
    cr_assert_eq(memcmp(a.dx, o.dx, b.cnt * 4), 0);
    cr_assert_eq(memcmp(a.dgamma, o.dgamma, b.C * 4), 0);
    free_out(&a);
    free_out(&o);
    free_case(&b);
    ck_context_destroy(c1);
    ck_context_destroy(c2);
}

/* The CPU BN loops exist twice: baseline x86-64 and AVX2+FMA (picked at run time). Both must give
 * the same bits in every layout, activation and dropout setting (fmaf is exactly rounded either
 * way; the library is built with -ffp-contract=off). CNNKIT_CPU_ISA=generic forces the baseline;
 * on a CPU without FMA both runs take it and the test compares the baseline with itself. */
Test(batchnorm, instruction_set_paths_bit_identical) {
    bn_case b = make_case(5, 11, 7, 6, 99);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const ck_dropout_desc sd = {0.3f, 17, 0};
    for (int l = 0; l < 2; ++l)
        for (int act = 0; act < 2; ++act)
            for (int drop = 0; drop < 2; ++drop) {
                const ck_layout lay = l ? CK_LAYOUT_NHWC : CK_LAYOUT_NCHW;
                ck_bn_desc d;
                ck_bn_desc_init(&d, CK_BN_KERAS);
                d.activation = act ? CK_ACT_RELU : CK_ACT_NONE;
                bn_out a = alloc_out(&b), g = alloc_out(&b);
                cr_assert_eq(unsetenv("CNNKIT_CPU_ISA"), 0);
                run_bn(ctx, lay, &d, &b, NULL, NULL, NULL, drop ? &sd : NULL, &a, 1);
                cr_assert_eq(setenv("CNNKIT_CPU_ISA", "generic", 1), 0);
                run_bn(ctx, lay, &d, &b, NULL, NULL, NULL, drop ? &sd : NULL, &g, 1);
                cr_assert_eq(unsetenv("CNNKIT_CPU_ISA"), 0);
                const char *what = l ? "nhwc" : "nchw";
                cr_assert_eq(memcmp(a.y, g.y, b.cnt * 4), 0, "%s act %d drop %d: y", what, act,
                             drop);
                cr_assert_eq(memcmp(a.dx, g.dx, b.cnt * 4), 0, "%s: dx", what);
                cr_assert_eq(memcmp(a.dgamma, g.dgamma, b.C * 4), 0, "%s: dgamma", what);
                cr_assert_eq(memcmp(a.dbeta, g.dbeta, b.C * 4), 0, "%s: dbeta", what);
                cr_assert_eq(memcmp(a.rm, g.rm, b.C * 4), 0, "%s: moving mean", what);
                cr_assert_eq(memcmp(a.rv, g.rv, b.C * 4), 0, "%s: moving variance", what);
                free_out(&a);
                free_out(&g);
            }
    free_case(&b);
    ck_context_destroy(ctx);
}
