/* The model on the GPU against the same model on the CPU (the oracle). Skipped without a device.
 * Bars: the first 10 training steps of the question's model agree with the CPU (issue 3; see
 * first_10_losses_match_cpu for what is compared and why); GPU training is bit-reproducible (two
 * runs, same seed: identical weights); checkpoints move between devices. */
#include "common.h"

/* a hung device call (a kernel that spins, a collective that waits) fails its test after five
 * minutes instead of holding the whole GPU run */
TestSuite(gpu_model, .timeout = 300);

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnnkit/data.h"
#include "cnnkit/model.h"
#include "model_internal.h"

static ck_model *seed_on(ck_context *ctx, int max_batch) {
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(ctx, ck_model_from_keras_text(ctx, t_seed_cnn_text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, max_batch));
    return m;
}

/* Smooth, class-dependent synthetic images (28x28x1) so the loss moves in 10 steps. */
static void make_batch(float *x, int32_t *y, int n, uint64_t seed) {
    trng r = {seed};
    for (int i = 0; i < n; ++i) {
        y[i] = (int32_t)(trng_u32(&r) % 10);
        for (int p = 0; p < 28 * 28; ++p) {
            const int a = p / 28, b = p % 28;
            const float base = 0.5f + 0.4f * sinf(0.2f * (float)(y[i] + 1) * (float)(a + b));
            x[(size_t)i * 784 + p] = base + 0.1f * trng_uniform(&r, -1, 1);
        }
    }
}

/* Issue 3's bar, "the losses of the first 10 steps agree to 1e-3", in three parts.
 * (1) Lockstep, Adam: before every step the CPU model's whole state is copied into the GPU model,
 *     so each step compares one computation from identical state: losses to 1e-4 relative, and
 *     inference probabilities after the 10 steps to 1e-4.
 * (2) Lockstep, plain SGD: one step from identical weights; the weight change is lr * gradient,
 *     so this compares every gradient: GPU and CPU changes agree to 1e-3 of the largest change.
 * (3) Free-running, Adam (the literal bar): each device trains on its own. Adam's first updates
 *     are about lr * sign(g), and the biases of convs that feed a BN get gradients of pure
 *     rounding noise, so rounding differences grow: on the CPU alone, inputs perturbed by one
 *     ulp moved the loss by 5e-8, 1.8e-5, 3e-4, then 3.5e-3 at step 4 and 2.6e-2 at step 9
 *     (review of 2026-11-29). Steps 0 and 1 must agree to 1e-3; all 10 are logged. */
Test(gpu_model, first_10_losses_match_cpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    const int B = 64;
    char path[] = "/tmp/cnnkit_gpu_lockstep_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    float *x = malloc(sizeof(float) * 784 * B);
    int32_t y[64];

    /* (1) lockstep, Adam */
    ck_model *mg = seed_on(g, B), *mc = seed_on(c, B);
    for (int step = 0; step < 10; ++step) {
        make_batch(x, y, B, 100 + step);
        t_sync_state(c, mc, g, mg, path);
        ck_step_result rg, rc;
        CK_OK(g, ck_model_train_step(mg, x, y, B, &rg));
        CK_OK(c, ck_model_train_step(mc, x, y, B, &rc));
        cr_expect_lt(fabs(rg.loss - rc.loss), 1e-4 * fabs(rc.loss),
                     "lockstep step %d: GPU loss %.8f, CPU loss %.8f", step, rg.loss, rc.loss);
    }
    t_sync_state(c, mc, g, mg, path);
    float *pg = malloc(sizeof(float) * 10 * B), *pc = malloc(sizeof(float) * 10 * B);
    CK_OK(g, ck_model_predict(mg, x, B, pg));
    CK_OK(c, ck_model_predict(mc, x, B, pc));
    cr_expect_lt(t_max_rel_err(pg, pc, (size_t)10 * B), 1e-4, "inference probabilities");
    ck_model_destroy(mg), ck_model_destroy(mc);

    /* (2) lockstep, SGD: the gradients */
    mg = seed_on(g, B), mc = seed_on(c, B);
    ck_optimizer_desc sgd;
    CK_OK(c, ck_optimizer_desc_init(&sgd, CK_OPT_SGD));
    sgd.learning_rate = 0.1f;
    CK_OK(g, ck_model_set_optimizer(mg, &sgd));
    CK_OK(c, ck_model_set_optimizer(mc, &sgd));
    make_batch(x, y, B, 300);
    CK_OK(c, ck_model_train_step(mc, x, y, B, NULL)); /* away from the initial weights */
    t_sync_state(c, mc, g, mg, path);
    size_t n0 = 0, ng = 0, nc = 0;
    float *w0 = t_weights_of(c, mc, &n0);
    make_batch(x, y, B, 301);
    CK_OK(g, ck_model_train_step(mg, x, y, B, NULL));
    CK_OK(c, ck_model_train_step(mc, x, y, B, NULL));
    float *wg = t_weights_of(g, mg, &ng), *wc = t_weights_of(c, mc, &nc);
    cr_assert(ng == n0 && nc == n0);
    double dmax = 0.0, err = 0.0;
    size_t worst = 0;
    for (size_t i = 0; i < n0; ++i) {
        const double dc = (double)wc[i] - w0[i], dg = (double)wg[i] - w0[i];
        dmax = fmax(dmax, fabs(dc));
        if (fabs(dg - dc) > err) {
            err = fabs(dg - dc);
            worst = i;
        }
    }
    cr_assert_gt(dmax, 0.0);
    cr_expect_lt(err, 1e-3 * dmax,
                 "SGD step from identical weights: weight change differs by %g at %zu (largest "
                 "change %g)",
                 err, worst, dmax);
    free(w0), free(wg), free(wc);
    ck_model_destroy(mg), ck_model_destroy(mc);

    /* (3) free-running, Adam, same seed */
    mg = seed_on(g, B), mc = seed_on(c, B);
    for (int step = 0; step < 10; ++step) {
        make_batch(x, y, B, 100 + step);
        ck_step_result rg, rc;
        CK_OK(g, ck_model_train_step(mg, x, y, B, &rg));
        CK_OK(c, ck_model_train_step(mc, x, y, B, &rc));
        const double rel = fabs(rg.loss - rc.loss) / fabs(rc.loss);
        cr_log_info("free-running step %d: GPU loss %.7f, CPU loss %.7f, relative %.2e", step,
                    rg.loss, rc.loss, rel);
        if (step < 2)
            cr_expect_lt(rel, 1e-3, "free-running step %d: GPU %.7f, CPU %.7f", step, rg.loss,
                         rc.loss);
    }
    unlink(path);
    free(pg), free(pc), free(x);
    ck_model_destroy(mg), ck_model_destroy(mc);
    ck_context_destroy(g), ck_context_destroy(c);
}

Test(gpu_model, training_is_bit_reproducible) {
    ck_context *g = t_cuda_ctx_or_skip();
    const int B = 32;
    float *x = malloc(sizeof(float) * 784 * B);
    int32_t y[32];
    float *w[2] = {NULL, NULL};
    size_t n[2] = {0, 0};
    for (int run = 0; run < 2; ++run) {
        ck_model *m = seed_on(g, B);
        for (int step = 0; step < 5; ++step) {
            make_batch(x, y, B, 7 + step);
            CK_OK(g, ck_model_train_step(m, x, y, B, NULL));
        }
        w[run] = t_weights_of(g, m, &n[run]);
        ck_model_destroy(m);
    }
    cr_assert_eq(n[0], n[1]);
    cr_expect_eq(memcmp(w[0], w[1], n[0] * sizeof(float)), 0,
                 "two GPU runs with the same seed give different weights");
    free(w[0]), free(w[1]), free(x);
    ck_context_destroy(g);
}

/* The weights after 5 steps of the seed model at batch 32 on g (its settings). */
static float *train_5(ck_context *g, size_t *n) {
    const int B = 32;
    float *x = malloc(sizeof(float) * 784 * B);
    int32_t y[32];
    ck_model *m = seed_on(g, B);
    for (int step = 0; step < 5; ++step) {
        make_batch(x, y, B, 7 + step);
        CK_OK(g, ck_model_train_step(m, x, y, B, NULL));
    }
    float *w = t_weights_of(g, m, n);
    ck_model_destroy(m);
    free(x);
    return w;
}

/* Deterministic algorithms with TF32 math are still bit-reproducible (TF32 rounds, it does not
 * reorder); the default settings are what training_is_bit_reproducible checks. */
Test(gpu_model, deterministic_tf32_is_bit_reproducible) {
    ck_context *g = t_cuda_ctx_or_skip();
    CK_OK(g, ck_context_set_math(g, CK_MATH_TF32));
    size_t n0 = 0, n1 = 0;
    float *w0 = train_5(g, &n0), *w1 = train_5(g, &n1);
    cr_assert_eq(n0, n1);
    cr_expect_eq(memcmp(w0, w1, n0 * sizeof(float)), 0,
                 "two deterministic TF32 runs with the same seed give different weights");
    free(w0), free(w1);
    ck_context_destroy(g);
}

/* The seed model under the speed settings against the CPU: each step from the CPU model's state
 * (lockstep, as first_10_losses_match_cpu part 1), losses within 1e-4 relative for fastest fp32
 * and 5e-3 for fastest TF32; inference probabilities after the steps likewise. The plans name
 * the settings; a second model on the same context reuses the timed choices. */
static void speed_settings_case(ck_math math, double tol) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    CK_OK(g, ck_context_set_conv_algo(g, CK_CONV_ALGO_FASTEST));
    CK_OK(g, ck_context_set_math(g, math));
    const int B = 64;
    char path[] = "/tmp/cnnkit_gpu_speed_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    float *x = malloc(sizeof(float) * 784 * B);
    int32_t y[64];
    ck_model *mg = seed_on(g, B), *mc = seed_on(c, B);
    char plans[4096];
    CK_OK(g, ck_model_conv_algorithms(mg, plans, sizeof plans, NULL));
    cr_log_info("fastest, math %s:\n%s", math == CK_MATH_TF32 ? "tf32" : "fp32", plans);
    for (const char *p = plans; *p; p = strchr(p, '\n') + 1) {
        const size_t len = strcspn(p, "\n");
        char line[600];
        snprintf(line, sizeof line, "%.*s", (int)len, p);
        cr_expect_neq(strstr(line, "fastest"), NULL, "%s", line);
        if (math == CK_MATH_TF32)
            cr_expect_neq(strstr(line, "tf32 allowed"), NULL, "%s", line);
        else
            cr_expect_neq(strstr(line, "fma math"), NULL, "%s", line);
        if (!p[len])
            break;
    }
    for (int step = 0; step < 5; ++step) {
        make_batch(x, y, B, 100 + step);
        t_sync_state(c, mc, g, mg, path);
        ck_step_result rg, rc;
        CK_OK(g, ck_model_train_step(mg, x, y, B, &rg));
        CK_OK(c, ck_model_train_step(mc, x, y, B, &rc));
        cr_expect_lt(fabs(rg.loss - rc.loss), tol * fabs(rc.loss),
                     "lockstep step %d: GPU loss %.8f, CPU loss %.8f", step, rg.loss, rc.loss);
    }
    t_sync_state(c, mc, g, mg, path);
    float *pg = malloc(sizeof(float) * 10 * B), *pc = malloc(sizeof(float) * 10 * B);
    CK_OK(g, ck_model_predict(mg, x, B, pg));
    CK_OK(c, ck_model_predict(mc, x, B, pc));
    cr_expect_lt(t_max_rel_err(pg, pc, (size_t)10 * B), tol, "inference probabilities");
    /* the same shapes again on this context: no new timing */
    ck_model *m2 = seed_on(g, B);
    char plans2[4096];
    CK_OK(g, ck_model_conv_algorithms(m2, plans2, sizeof plans2, NULL));
    cr_expect_neq(strstr(plans2, ", cached)"), NULL, "%s", plans2);
    ck_model_destroy(m2);
    unlink(path);
    free(pg), free(pc), free(x);
    ck_model_destroy(mg), ck_model_destroy(mc);
    ck_context_destroy(g), ck_context_destroy(c);
}

Test(gpu_model, fastest_fp32_matches_cpu) {
    speed_settings_case(CK_MATH_STRICT_FP32, 1e-4);
}

Test(gpu_model, fastest_tf32_matches_cpu) {
    speed_settings_case(CK_MATH_TF32, 5e-3);
}

/* Saved on the GPU, loaded on the CPU and back: the same weights, and a smaller last batch. */
Test(gpu_model, checkpoint_moves_between_devices) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    const int B = 16;
    ck_model *mg = seed_on(g, B), *mc = seed_on(c, B);
    float *x = malloc(sizeof(float) * 784 * B);
    int32_t y[16];
    make_batch(x, y, B, 3);
    CK_OK(g, ck_model_train_step(mg, x, y, B, NULL));
    CK_OK(g, ck_model_train_step(mg, x, y, 5, NULL)); /* a partial batch */
    char path[] = "/tmp/cnnkit_gpu_ckpt_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    CK_OK(g, ck_model_save(mg, path));
    CK_OK(c, ck_model_load(mc, path));
    size_t n1 = 0, n2 = 0;
    float *w1 = t_weights_of(g, mg, &n1), *w2 = t_weights_of(c, mc, &n2);
    cr_assert_eq(n1, n2);
    cr_expect_eq(memcmp(w1, w2, n1 * sizeof(float)), 0, "weights differ after GPU save, CPU load");
    cr_expect_eq(ck_model_step(mc), 2);
    /* and back: set_weights on the GPU model takes the CPU model's weights */
    CK_OK(g, ck_model_set_weights(mg, w2, n2));
    float *w3 = t_weights_of(g, mg, &n1);
    cr_expect_eq(memcmp(w3, w2, n1 * sizeof(float)), 0);
    unlink(path);
    free(w1), free(w2), free(w3), free(x);
    ck_model_destroy(mg), ck_model_destroy(mc);
    ck_context_destroy(g), ck_context_destroy(c);
}

/* The execution plan on the GPU (issue 5): the planned model (BN+ReLU and BN+ReLU+SpatialDropout
 * as one BN kernel, dropout in place in the pooling node, ReLU moved across a dropout) trains
 * exactly like the unplanned one on the same device: equal losses, equal weight values after
 * every step (a dropped unit's gradient may be -0 in one order and +0 in the other, plan.c),
 * bit-identical inference. */
static const char *const plan_gpu_text =
    "model = Sequential()\n"
    "model.add(Conv2D(8, (3,3), padding='same', input_shape=(12,12,3)))\n"
    "model.add(BatchNormalization())\n"
    "model.add(SpatialDropout2D(0.3))\n"
    "model.add(Activation('relu'))\n"
    "model.add(MaxPooling2D(pool_size=(2,2)))\n"
    "model.add(Dropout(0.25))\n"
    "model.add(Conv2D(6, (3,3), activation='relu'))\n"
    "model.add(Flatten())\n"
    "model.add(Dense(5, activation='softmax'))\n";

static void planned_vs_unplanned_gpu(const char *text, int h, int w, int c, int classes,
                                     int want_nodes) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_model *m[2] = {NULL, NULL};
    char msg[1024];
    const int B = 16;
    for (int k = 0; k < 2; ++k) {
        CK_OK(g, ck_model_from_keras_text(g, text, &m[k], msg, sizeof msg));
        CK_OK(g, ck_model_set_planning(m[k], k == 0));
        CK_OK(g, ck_model_build(m[k], 0, 0, 0, B));
    }
    cr_assert_eq(ck_model_num_nodes(m[0]), want_nodes, "planned: %d nodes",
                 ck_model_num_nodes(m[0]));
    cr_assert_lt(ck_model_num_nodes(m[0]), ck_model_num_nodes(m[1]));
    const size_t per = (size_t)h * w * c;
    float *x = malloc(sizeof(float) * per * B);
    int32_t y[16];
    for (int step = 0; step < 3; ++step) {
        trng r = {500 + (uint64_t)step};
        for (size_t i = 0; i < per * B; ++i)
            x[i] = trng_uniform(&r, 0.0f, 1.0f);
        for (int i = 0; i < B; ++i)
            y[i] = (int32_t)(trng_u32(&r) % (uint32_t)classes);
        ck_step_result ra, rb;
        CK_OK(g, ck_model_train_step(m[0], x, y, B, &ra));
        CK_OK(g, ck_model_train_step(m[1], x, y, B, &rb));
        cr_assert(ra.loss == rb.loss, "step %d: loss %.17g planned vs %.17g unplanned", step,
                  ra.loss, rb.loss);
        size_t na = 0, nb = 0;
        float *wa = t_weights_of(g, m[0], &na), *wb = t_weights_of(g, m[1], &nb);
        cr_assert_eq(na, nb);
        for (size_t i = 0; i < na; ++i)
            cr_assert(wa[i] == wb[i], "step %d: weight %zu: %.9g planned vs %.9g unplanned", step,
                      i, wa[i], wb[i]);
        free(wa), free(wb);
    }
    float *pa = malloc(sizeof(float) * B * classes), *pb = malloc(sizeof(float) * B * classes);
    CK_OK(g, ck_model_predict(m[0], x, B, pa));
    CK_OK(g, ck_model_predict(m[1], x, B, pb));
    cr_assert_eq(memcmp(pa, pb, sizeof(float) * B * classes), 0, "inference probabilities");
    free(pa), free(pb), free(x);
    ck_model_destroy(m[0]), ck_model_destroy(m[1]);
    ck_context_destroy(g);
}

Test(gpu_model, planned_equals_unplanned_seed_model) {
    planned_vs_unplanned_gpu(t_seed_cnn_text, 28, 28, 1, 10, 16);
}

Test(gpu_model, planned_equals_unplanned_fused_spatial_dropout) {
    /* conv, BN+ReLU+SpatialDropout, pool+dropout, conv, relu, flatten, dense, softmax */
    planned_vs_unplanned_gpu(plan_gpu_text, 12, 12, 3, 5, 8);
}

/* ck_model_fit keeps the training set on the device and gathers each batch there (issue 14);
 * the host-staged fit (the test knob fit_host_data) is the oracle: 2 epochs of 300 samples at
 * batch 64 (a short last batch) give the same history and a byte-identical checkpoint. A set with a
 * NaN keeps the host path and fails at its step. */
Test(gpu_model, fit_with_device_data_matches_host_staging) {
    ck_context *ctx = t_cuda_ctx_or_skip();
    ck_model *a = seed_on(ctx, 64), *b = seed_on(ctx, 64);
    b->fit_host_data = 1;
    ck_dataset d = {.count = 300, .h = 28, .w = 28, .c = 1, .classes = 10};
    d.images = malloc(sizeof(float) * 300 * 784);
    d.labels = malloc(sizeof(int32_t) * 300);
    make_batch(d.images, d.labels, 300, 4242);
    ck_fit_options o;
    memset(&o, 0, sizeof o);
    o.epochs = 2;
    o.batch = 64;
    ck_epoch_result ha[2], hb[2];
    CK_OK(ctx, ck_model_fit(a, &d, &d, &o, ha));
    CK_OK(ctx, ck_model_fit(b, &d, &d, &o, hb));
    /* a took the device path (a fallback to host staging would compare the oracle with itself):
     * 300 samples at batch 64 are 5 steps an epoch */
    cr_assert_eq(a->staged_steps, 10, "%lld steps on device-gathered batches", a->staged_steps);
    cr_assert_eq(b->staged_steps, 0);
    for (int e = 0; e < 2; ++e) {
        const double va[3] = {ha[e].loss, ha[e].accuracy, ha[e].val_loss};
        const double vb[3] = {hb[e].loss, hb[e].accuracy, hb[e].val_loss};
        cr_assert(memcmp(va, vb, sizeof va) == 0, "epoch %d: loss %.9g vs %.9g", e + 1, va[0],
                  vb[0]);
    }
    char pa[64], pb[64];
    snprintf(pa, sizeof pa, "/tmp/ck_fitdev_a_%d.ckpt", (int)getpid());
    snprintf(pb, sizeof pb, "/tmp/ck_fitdev_b_%d.ckpt", (int)getpid());
    CK_OK(ctx, ck_model_save(a, pa));
    CK_OK(ctx, ck_model_save(b, pb));
    FILE *fa = fopen(pa, "rb"), *fb = fopen(pb, "rb");
    cr_assert(fa && fb);
    int same = 1, ca, cb;
    do {
        ca = fgetc(fa);
        cb = fgetc(fb);
        same &= ca == cb;
    } while (ca != EOF && cb != EOF);
    fclose(fa);
    fclose(fb);
    unlink(pa);
    unlink(pb);
    cr_assert(same, "the checkpoints differ");
    d.images[5 * 784 + 3] = NAN; /* host staging again: the step with sample 5 fails */
    cr_assert_eq(ck_model_fit(a, &d, NULL, &o, NULL), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "is not finite"), "%s",
              ck_context_last_error(ctx));
    free(d.images);
    free(d.labels);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_context_destroy(ctx);
}

#ifdef CNNKIT_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <pthread.h>

typedef struct {
    ck_context *ctx;
    ck_model *m;
    int first, steps;
    ck_status st;
} steps_job;

/* steps of m from batch `first`, as the thread that runs it */
static void *run_steps(void *arg) {
    steps_job *j = (steps_job *)arg;
    const int B = 16;
    float *x = malloc(sizeof(float) * 784 * B);
    int32_t y[16];
    j->st = CK_STATUS_SUCCESS;
    for (int s = 0; s < j->steps && j->st == CK_STATUS_SUCCESS; ++s) {
        make_batch(x, y, B, 40 + (uint64_t)(j->first + s));
        j->st = ck_model_train_step(j->m, x, y, B, NULL);
    }
    free(x);
    return NULL;
}

/* The current CUDA device is the calling thread's. Two contexts on two GPUs in one process,
 * their calls interleaved on one thread, then one of them driven from a thread that did not
 * create it (whose current device is 0): every call runs on its own context's GPU, so both
 * models train exactly as one does alone (same seed, same batches: bit-identical weights). On
 * kemu (KEMU_DEVICES=2) a kernel launched on another device's stream fails and one that reads
 * another device's memory stops the test, as on a GPU without peer access. Needs two GPUs. */
Test(gpu_model, two_gpus_in_one_process) {
    setenv("KEMU_DEVICES", "2", 0); /* read by kemu only */
    ck_context *g0 = t_cuda_ctx_or_skip(), *g1 = NULL;
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 2)
        cr_skip("two GPUs needed, %d here", devices);
    CK_OK(NULL, ck_context_create(&g1, CK_DEVICE_CUDA, 1, 1234)); /* makes device 1 current */
    ck_model *a = seed_on(g0, 16), *b = seed_on(g1, 16);
    steps_job ja = {g0, a, 0, 1, CK_STATUS_SUCCESS}, jb = {g1, b, 0, 1, CK_STATUS_SUCCESS};
    for (int s = 0; s < 3; ++s) { /* interleaved on this thread */
        ja.first = jb.first = s;
        run_steps(&ja);
        CK_OK(g0, ja.st);
        run_steps(&jb);
        CK_OK(g1, jb.st);
    }
    /* b from a new thread (its current device: 0), a from this one (current: whichever) */
    jb.first = 3;
    jb.steps = 2;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, run_steps, &jb), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    CK_OK(g1, jb.st);
    ja.first = 3;
    ja.steps = 2;
    run_steps(&ja);
    CK_OK(g0, ja.st);
    size_t na, nb;
    float *wa = t_weights_of(g0, a, &na), *wb = t_weights_of(g1, b, &nb);
    cr_assert_eq(na, nb);
    cr_assert(memcmp(wa, wb, na * sizeof *wa) == 0, "the two GPUs' models differ");
    free(wa);
    free(wb);
    ck_model_destroy(a);
    ck_context_destroy(g0); /* while device 1 may be current: its memory is device 0's */
    ck_model_destroy(b);
    ck_context_destroy(g1);
}
#endif
