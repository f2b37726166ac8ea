/* bf16.cu against its host twin (src/host/bf16.c): rounding in place, packing to 16-bit storage
 * and unpacking must be bit-identical (both run ck_math.h's integer rounding). Skipped without a
 * CUDA device. */
#include "common.h"

#ifdef CNNKIT_HAVE_CUDA
#include "bf16.h"
#include "ck_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnnkit/model.h"

/* Random values over many binades plus every special class: ties both ways, the overflow edge,
 * subnormals, signed zeros, Inf and NaN (signalling and quiet). */
static float *bf16_inputs(size_t n) {
    static const uint32_t special[] = {
        0x3F800000u, 0x3F808000u, 0x3F818000u, 0x3F80C000u, 0x7F7F7FFFu, 0x7F7F8000u, 0x7F7FFFFFu,
        0xFF7F8000u, 0x00008000u, 0x00008001u, 0x00018000u, 0x007FFFFFu, 0x80000000u, 0x00000000u,
        0x7F800000u, 0xFF800000u, 0x7FC00000u, 0x7F800001u, 0x7FFFFFFFu, 0xFF800001u};
    const size_t ns = sizeof special / sizeof *special;
    float *x = malloc(n * sizeof *x);
    trng r = {16};
    for (size_t i = 0; i < n; ++i) {
        uint32_t u;
        if (i < ns)
            u = special[i];
        else {
            /* random bit patterns: every exponent and every dropped-half value occurs */
            const float a = trng_uniform(&r, 0.0f, 65536.0f), b = trng_uniform(&r, 0.0f, 65536.0f);
            u = ((uint32_t)a << 16) | (uint32_t)b;
        }
        memcpy(&x[i], &u, sizeof u);
    }
    return x;
}

static ck_tensor *dbuf(ck_context *ctx, size_t count, const float *host) {
    ck_tensor *t = NULL;
    CK_OK(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NCHW, (int)count, 1, 1, 1));
    if (host)
        CK_OK(ctx, ck_tensor_upload(ctx, t, host, count));
    return t;
}

Test(gpu_bf16, kernels_match_cpu_bits) {
    ck_context *g = t_cuda_ctx_or_skip();
    const size_t n = 1000003; /* odd: the grid-stride tails */
    float *x = bf16_inputs(n), *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    uint16_t *hw = malloc(n * sizeof *hw), *hg = malloc((n + 1) * sizeof *hg);
    memcpy(want, x, n * sizeof *x);
    ck_bf16_round_buffer(want, n);
    ck_bf16_pack_buffer(x, hw, n);

    ck_tensor *tx = dbuf(g, n, x), *th = dbuf(g, (n + 1) / 2, NULL), *ty = dbuf(g, n, NULL);
    void *s = ck_context_stream(g);
    cr_assert_eq(ck_cuda_bf16_pack(ck_tensor_data(tx), (uint16_t *)ck_tensor_data(th), n, s), 0);
    cr_assert_eq(
        ck_cuda_bf16_unpack((const uint16_t *)ck_tensor_data(th), ck_tensor_data(ty), n, s), 0);
    cr_assert_eq(ck_cuda_bf16_round(ck_tensor_data(tx), n, s), 0);
    CK_OK(g, ck_context_synchronize(g));

    CK_OK(g, ck_tensor_download(g, tx, got, n));
    cr_assert(memcmp(got, want, n * sizeof *got) == 0, "ck_cuda_bf16_round differs from the CPU");
    CK_OK(g, ck_tensor_download(g, th, (float *)hg, (n + 1) / 2));
    cr_assert(memcmp(hg, hw, n * sizeof *hw) == 0, "ck_cuda_bf16_pack differs from the CPU");
    CK_OK(g, ck_tensor_download(g, ty, got, n));
    cr_assert(memcmp(got, want, n * sizeof *got) == 0, "pack then unpack differs from rounding");

    ck_tensor_destroy(tx), ck_tensor_destroy(th), ck_tensor_destroy(ty);
    free(x), free(want), free(got), free(hw), free(hg);
    ck_context_destroy(g);
}

/* ---- the bf16 model on the GPU against its CPU twin (docs/precision.md) ----
 *
 * How close must they be? Both store the same roundings of the same fp32 values; they differ only
 * where cuDNN / cuBLAS sum in another order than the CPU (the fp32 GPU tests' differences, about
 * 1e-6 relative) and, through that, in the few stored values whose fp32 sums straddle a bf16
 * rounding boundary: those move by one bf16 ulp (2^-8 relative), as every value does between
 * the twin and fp32, but in a fraction of about 1e-6 / 2^-8 = 2.6e-4 of the elements instead of
 * all of them. So the GPU's distance from its twin is bounded by the fp32 tests' bars (1e-4
 * relative for the loss and probabilities, 1e-3 of the largest change for an SGD step) plus a
 * small part of the distance bf16 itself puts between the twin and fp32 (the same step run by an
 * fp32 CPU model from the same state): a quarter, with room for a step where a few flipped
 * values weigh more than their share. Masks are identical (the RNG does not depend on the
 * precision): were they not, the loss would differ by far more. */
static ck_model *text_model(ck_context *ctx, const char *text, ck_precision p, int max_batch) {
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_set_precision(m, p));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, max_batch));
    return m;
}

static void twin_batch(float *x, int32_t *y, int n, size_t per, int classes, uint64_t seed) {
    trng r = {seed};
    for (int i = 0; i < n; ++i) {
        y[i] = (int32_t)(trng_u32(&r) % (uint32_t)classes);
        for (size_t p = 0; p < per; ++p) /* class-dependent, so that the loss moves */
            x[(size_t)i * per + p] = 0.5f + 0.4f * sinf(0.2f * (float)(y[i] + 1) * (float)p) +
                                     0.1f * trng_uniform(&r, -1.0f, 1.0f);
    }
}

/* to's whole state (weights, Adam moments, BN statistics, step) from `from`, through a
 * checkpoint: checkpoints are fp32 whatever the precision and device */
static void twin_sync(ck_context *cf, ck_model *from, ck_context *ct, ck_model *to,
                      const char *path) {
    CK_OK(cf, ck_model_save(from, path));
    CK_OK(ct, ck_model_load(to, path));
}

static float *twin_weights(ck_context *ctx, ck_model *m, size_t *count) {
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, count));
    float *w = malloc(*count * sizeof *w);
    CK_OK(ctx, ck_model_get_weights(m, w, *count, NULL));
    return w;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0.0;
    for (size_t i = 0; i < n; ++i)
        d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* Lockstep: before each of 4 Adam steps the twin's state goes into the GPU model and an fp32 CPU
 * model; the losses, then the probabilities, then one SGD step's weight changes (every gradient)
 * are compared with the bounds above. */
static void twin_check(const char *text, size_t per, int classes, int B) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    char path[] = "/tmp/cnnkit_gpu_bf16_XXXXXX";
    const int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    float *x = malloc(sizeof(float) * per * B);
    int32_t *y = malloc(sizeof(int32_t) * B);
    ck_model *mg = text_model(g, text, CK_PRECISION_BF16, B);
    ck_model *mc = text_model(c, text, CK_PRECISION_BF16, B);
    ck_model *mf = text_model(c, text, CK_PRECISION_FP32, B);
    for (int step = 0; step < 4; ++step) {
        twin_batch(x, y, B, per, classes, 500 + step);
        twin_sync(c, mc, g, mg, path);
        twin_sync(c, mc, c, mf, path);
        ck_step_result rg, rc, rf;
        CK_OK(g, ck_model_train_step(mg, x, y, B, &rg));
        CK_OK(c, ck_model_train_step(mc, x, y, B, &rc));
        CK_OK(c, ck_model_train_step(mf, x, y, B, &rf));
        const double gap = fabs(rg.loss - rc.loss), bf = fabs(rf.loss - rc.loss);
        cr_log_info("step %d: GPU bf16 %.8f, CPU twin %.8f, CPU fp32 %.8f", step, rg.loss, rc.loss,
                    rf.loss);
        cr_expect_leq(gap, 1e-4 * fabs(rc.loss) + 0.25 * bf,
                      "step %d: GPU bf16 loss %.8f, twin %.8f (fp32 %.8f)", step, rg.loss, rc.loss,
                      rf.loss);
    }
    twin_sync(c, mc, g, mg, path);
    twin_sync(c, mc, c, mf, path);
    float *pg = malloc(sizeof(float) * classes * B), *pc = malloc(sizeof(float) * classes * B),
          *pf = malloc(sizeof(float) * classes * B);
    CK_OK(g, ck_model_predict(mg, x, B, pg));
    CK_OK(c, ck_model_predict(mc, x, B, pc));
    CK_OK(c, ck_model_predict(mf, x, B, pf));
    const size_t np = (size_t)classes * B;
    const double pgap = max_abs_diff(pg, pc, np), pbf = max_abs_diff(pf, pc, np);
    cr_log_info("probabilities: GPU vs twin %.3g, fp32 vs twin %.3g", pgap, pbf);
    cr_expect_gt(pbf, 0.0, "bf16 changes the probabilities (else this compares nothing)");
    cr_expect_leq(pgap, 1e-4 + 0.25 * pbf, "probabilities: GPU vs twin %g, fp32 vs twin %g", pgap,
                  pbf);

    /* one SGD step from the same state: the weight changes are lr * every gradient */
    ck_optimizer_desc sgd;
    CK_OK(c, ck_optimizer_desc_init(&sgd, CK_OPT_SGD));
    sgd.learning_rate = 0.1f;
    CK_OK(g, ck_model_set_optimizer(mg, &sgd));
    CK_OK(c, ck_model_set_optimizer(mc, &sgd));
    CK_OK(c, ck_model_set_optimizer(mf, &sgd));
    twin_batch(x, y, B, per, classes, 900);
    size_t n0 = 0, ng = 0, nc = 0, nf = 0;
    float *w0 = twin_weights(c, mc, &n0);
    twin_sync(c, mc, g, mg, path);
    twin_sync(c, mc, c, mf, path);
    CK_OK(g, ck_model_train_step(mg, x, y, B, NULL));
    CK_OK(c, ck_model_train_step(mc, x, y, B, NULL));
    CK_OK(c, ck_model_train_step(mf, x, y, B, NULL));
    float *wg = twin_weights(g, mg, &ng), *wc = twin_weights(c, mc, &nc),
          *wf = twin_weights(c, mf, &nf);
    cr_assert(ng == n0 && nc == n0 && nf == n0);
    double dmax = 0.0, err = 0.0, errf = 0.0;
    for (size_t i = 0; i < n0; ++i) {
        const double dc = (double)wc[i] - w0[i];
        dmax = fmax(dmax, fabs(dc));
        err = fmax(err, fabs((double)wg[i] - w0[i] - dc));
        errf = fmax(errf, fabs((double)wf[i] - w0[i] - dc));
    }
    cr_log_info("SGD step: largest change %.3g, GPU vs twin %.3g, fp32 vs twin %.3g", dmax, err,
                errf);
    cr_assert_gt(dmax, 0.0);
    cr_expect_leq(err, 1e-3 * dmax + 0.25 * errf,
                  "SGD step: weight changes GPU vs twin %g, fp32 vs twin %g (largest %g)", err,
                  errf, dmax);
    unlink(path);
    free(w0), free(wg), free(wc), free(wf), free(pg), free(pc), free(pf), free(x), free(y);
    ck_model_destroy(mg), ck_model_destroy(mc), ck_model_destroy(mf);
    ck_context_destroy(g), ck_context_destroy(c);
}

/* The seed model planned as it trains: conv (bias, bf16 tensor cores), fused BN+ReLU, max pooling
 * with a fused Dropout, Dense hidden and logits. */
Test(gpu_bf16, seed_model_matches_cpu_twin) {
    twin_check(t_seed_cnn_text, 28 * 28, 10, 64);
}

extern const char t_graph_func_text[]; /* test_gpu_graph.c */

/* A functional model: 'same' convolutions, BN, SpatialDropout, an Add whose input has two readers
 * (the bf16 gradient sum), ReLU, pooling, Dropout, Flatten, Dense. */
Test(gpu_bf16, functional_model_matches_cpu_twin) {
    twin_check(t_graph_func_text, 12 * 12 * 3, 5, 24);
}

/* A bf16 step captured as a CUDA graph replays the eager step's bits: the packing of the batch
 * and of the loss gradient, and the dense layers' per-call weight packing, are kernels on the
 * step's stream like the rest. */
Test(gpu_bf16, graph_steps_equal_eager_steps) {
    enum { B = 32, STEPS = 6 };
    ck_context *g = t_cuda_ctx_or_skip();
    ck_model *a = text_model(g, t_seed_cnn_text, CK_PRECISION_BF16, B);
    ck_model *b = text_model(g, t_seed_cnn_text, CK_PRECISION_BF16, B);
    CK_OK(g, ck_model_set_cuda_graph(a, CK_CUDA_GRAPH_AUTO));
    CK_OK(g, ck_model_set_cuda_graph(b, CK_CUDA_GRAPH_OFF));
    float *x = malloc(sizeof(float) * 784 * B);
    int32_t y[B];
    for (int s = 0; s < STEPS; ++s) {
        twin_batch(x, y, B, 784, 10, 700 + s);
        ck_step_result ra, rb;
        CK_OK(g, ck_model_train_step(a, x, y, B, &ra));
        CK_OK(g, ck_model_train_step(b, x, y, B, &rb));
        cr_assert(memcmp(&ra.loss, &rb.loss, sizeof ra.loss) == 0, "step %d: %.9g vs %.9g", s,
                  ra.loss, rb.loss);
    }
    ck_cuda_graph_info gi;
    CK_OK(g, ck_model_cuda_graph_info(a, &gi));
    cr_assert_gt(gi.replays, 0, "no graph replayed: %s", gi.note);
    size_t na = 0, nb = 0;
    float *wa = twin_weights(g, a, &na), *wb = twin_weights(g, b, &nb);
    cr_assert_eq(na, nb);
    cr_assert(memcmp(wa, wb, na * sizeof *wa) == 0, "weights differ after %d steps", STEPS);
    free(wa), free(wb), free(x);
    ck_model_destroy(a), ck_model_destroy(b);
    ck_context_destroy(g);
}

/* What a bf16 GPU model cannot be is refused at build, naming why, nothing built. */
Test(gpu_bf16, refused_without_dense_logits) {
    ck_context *g = t_cuda_ctx_or_skip();
    static const char text[] = "model = Sequential()\n"
                               "model.add(Conv2D(10, (3, 3), input_shape=(8, 8, 1)))\n"
                               "model.add(GlobalAveragePooling2D())\n"
                               "model.add(Activation('softmax'))\n"
                               "model.compile(loss='sparse_categorical_crossentropy', "
                               "optimizer='adam')\n";
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(g, ck_model_from_keras_text(g, text, &m, msg, sizeof msg));
    CK_OK(g, ck_model_set_precision(m, CK_PRECISION_BF16));
    cr_assert_eq(ck_model_build(m, 0, 0, 0, 8), CK_STATUS_NOT_SUPPORTED);
    cr_assert(strstr(ck_context_last_error(g), "logits must come from a Dense layer"), "%s",
              ck_context_last_error(g));
    /* the same model in fp32 builds */
    ck_model_destroy(m);
    CK_OK(g, ck_model_from_keras_text(g, text, &m, msg, sizeof msg));
    CK_OK(g, ck_model_build(m, 0, 0, 0, 8));
    ck_model_destroy(m);
    ck_context_destroy(g);
}

#else
Test(gpu_bf16, skipped_without_cuda_build) {
    t_gpu_unavailable("built without the CUDA backend");
}
#endif
