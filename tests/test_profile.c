/* Training-step profile (ck_model_set_profiling, ck_model_profile, cnnkit train --profile). */
#include "common.h"

#include "cnnkit/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char MODEL[] = "model = Sequential()\n"
                            "model.add(Conv2D(4, (3, 3), input_shape=(8, 8, 1)))\n"
                            "model.add(BatchNormalization())\n"
                            "model.add(Activation('relu'))\n"
                            "model.add(MaxPooling2D((2, 2)))\n"
                            "model.add(SpatialDropout2D(0.25))\n"
                            "model.add(Flatten())\n"
                            "model.add(Dense(3, activation='softmax'))\n";

static ck_model *small_model(ck_context *ctx) {
    ck_model *m = NULL;
    char msg[256];
    CK_OK(ctx, ck_model_from_keras_text(ctx, MODEL, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 16));
    return m;
}

static void batch(float *x, int32_t *y, int n, uint64_t seed) {
    trng r = {seed};
    for (int i = 0; i < n; ++i) {
        y[i] = (int32_t)(trng_u32(&r) % 3u);
        for (int p = 0; p < 64; ++p)
            x[i * 64 + p] = (float)y[i] * 0.3f + trng_uniform(&r, -0.5f, 0.5f);
    }
}

/* Trains `steps` steps (profiling on or off) and returns the weights. */
static float *train(int profile, int steps, ck_profile_row *rows, int *count, long long *nsteps,
                    double *step_ms) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    CK_OK(ctx, ck_context_set_seed(ctx, 7));
    ck_model *m = small_model(ctx);
    if (profile)
        CK_OK(ctx, ck_model_set_profiling(m, 1));
    float x[16 * 64];
    int32_t y[16];
    for (int s = 0; s < steps; ++s) {
        batch(x, y, 16, 100 + (uint64_t)s);
        ck_step_result r;
        CK_OK(ctx, ck_model_train_step(m, x, y, 16, &r));
        /* evaluate and a failed step are not counted */
        CK_OK(ctx, ck_model_evaluate(m, x, y, 16, &r));
        int32_t bad[16];
        memcpy(bad, y, sizeof bad);
        bad[3] = 9;
        cr_assert_eq(ck_model_train_step(m, x, bad, 16, &r), CK_STATUS_BAD_PARAM);
    }
    if (rows)
        CK_OK(ctx, ck_model_profile(m, rows, 32, count, nsteps, step_ms));
    size_t nw = 0;
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, &nw));
    float *w = malloc(nw * sizeof *w);
    cr_assert_not_null(w);
    CK_OK(ctx, ck_model_get_weights(m, w, nw, NULL));
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return w;
}

Test(profile, rows_steps_and_sums) {
    ck_profile_row rows[32];
    int count = 0;
    long long steps = 0;
    double step_ms = 0.0;
    float *w = train(1, 5, rows, &count, &steps, &step_ms);
    free(w);
    /* the plan: conv, BN+ReLU, pool+spatial dropout, flatten, dense, softmax: 6 nodes */
    cr_assert_eq(count, 6 + 2);
    cr_assert_eq(steps, 5, "evaluate and failed steps must not count");
    cr_assert_gt(step_ms, 0.0);
    cr_assert_neq(strstr(rows[0].what, "conv2d"), NULL, "%s", rows[0].what);
    cr_assert_neq(strstr(rows[1].what, "batch_normalization + activation"), NULL, "%s",
                  rows[1].what);
    cr_assert_neq(strstr(rows[count - 2].what, "optimizer (adam)"), NULL, "%s",
                  rows[count - 2].what);
    cr_assert_neq(strstr(rows[count - 1].what, "other"), NULL, "%s", rows[count - 1].what);
    double sum = 0.0;
    for (int i = 0; i < count; ++i) {
        cr_assert_eq(rows[i].node, i < count - 2 ? i : -1);
        cr_assert(rows[i].forward_ms >= 0.0 && rows[i].backward_ms >= 0.0, "row %d", i);
        if (i >= count - 2)
            cr_assert_eq(rows[i].backward_ms, 0.0);
        sum += rows[i].forward_ms + rows[i].backward_ms;
    }
    /* the conv and BN nodes run real work in both directions */
    cr_assert_gt(rows[0].forward_ms, 0.0);
    cr_assert_gt(rows[0].backward_ms, 0.0);
    cr_assert_gt(rows[1].forward_ms, 0.0);
    cr_assert_gt(rows[1].backward_ms, 0.0);
    /* the rows add up to the step: "other" is the rest (clamped at 0 against clock jitter) */
    cr_assert(fabs(sum - step_ms) <= 1e-6 * step_ms + 1e-6, "rows %g ms vs step %g ms", sum,
              step_ms);
}

Test(profile, changes_no_result) {
    float *a = train(0, 4, NULL, NULL, NULL, NULL);
    float *b = train(1, 4, NULL, NULL, NULL, NULL);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = small_model(ctx);
    size_t nw = 0;
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, &nw));
    cr_assert_eq(memcmp(a, b, nw * sizeof *a), 0, "profiling changed the weights");
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    free(a);
    free(b);
}

Test(profile, start_stop_reset_and_errors) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    cr_assert_eq(ck_model_set_profiling(NULL, 1), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_profile(NULL, NULL, 0, NULL, NULL, NULL), CK_STATUS_BAD_PARAM);
    ck_model *m = NULL;
    char msg[256];
    CK_OK(ctx, ck_model_from_keras_text(ctx, MODEL, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_set_profiling(m, 1)); /* before build: allowed */
    int count = -1;
    cr_assert_eq(ck_model_profile(m, NULL, 0, &count, NULL, NULL), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "not built"), NULL);
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 16));
    cr_assert_eq(ck_model_profile(m, NULL, 3, &count, NULL, NULL), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "rows"), NULL);
    cr_assert_eq(ck_model_profile(m, NULL, -1, &count, NULL, NULL), CK_STATUS_BAD_PARAM);

    float x[16 * 64];
    int32_t y[16];
    batch(x, y, 16, 1);
    ck_step_result r;
    long long steps = -1;
    CK_OK(ctx, ck_model_train_step(m, x, y, 16, &r));
    CK_OK(ctx, ck_model_profile(m, NULL, 0, &count, &steps, NULL));
    cr_assert_eq(count, 8);
    cr_assert_eq(steps, 1);
    /* off: figures kept, later steps not counted */
    CK_OK(ctx, ck_model_set_profiling(m, 0));
    CK_OK(ctx, ck_model_train_step(m, x, y, 16, &r));
    CK_OK(ctx, ck_model_profile(m, NULL, 0, &count, &steps, NULL));
    cr_assert_eq(steps, 1);
    /* on again: a new profile */
    CK_OK(ctx, ck_model_set_profiling(m, 1));
    double ms = -1.0;
    CK_OK(ctx, ck_model_profile(m, NULL, 0, &count, &steps, &ms));
    cr_assert_eq(steps, 0);
    cr_assert_eq(ms, 0.0);
    /* fewer rows than there are: the first cap rows, count says how many there are */
    ck_profile_row two[2];
    CK_OK(ctx, ck_model_train_step(m, x, y, 16, &r));
    CK_OK(ctx, ck_model_profile(m, two, 2, &count, &steps, NULL));
    cr_assert_eq(count, 8);
    cr_assert_eq(steps, 1);
    cr_assert_eq(two[1].node, 1);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* ---- cnnkit train --profile on a tiny IDX data set ------------------------------------------ */

static void put_be32(FILE *f, uint32_t v) {
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    fwrite(b, 1, 4, f);
}

static void write_idx(const char *dir, const char *prefix, int n, uint64_t seed) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    FILE *fi = fopen(path, "wb");
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    FILE *fl = fopen(path, "wb");
    cr_assert(fi && fl);
    put_be32(fi, 0x00000803);
    put_be32(fi, (uint32_t)n);
    put_be32(fi, 8);
    put_be32(fi, 8);
    put_be32(fl, 0x00000801);
    put_be32(fl, (uint32_t)n);
    trng r = {seed};
    for (int i = 0; i < n; ++i) {
        unsigned char label = (unsigned char)(trng_u32(&r) % 3u);
        fputc(label, fl);
        for (int p = 0; p < 64; ++p)
            fputc((int)(label * 60 + trng_u32(&r) % 60u), fi);
    }
    fclose(fi);
    fclose(fl);
}

Test(profile, cli_train_profile, .timeout = 60) {
    if (access(CNNKIT_CLI_PATH, X_OK) != 0)
        cr_skip("the cnnkit binary is not here (a relocated test bundle)");
    char dir[] = "/tmp/cnnkit-profile-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    write_idx(dir, "train", 64, 1);
    write_idx(dir, "t10k", 32, 2);
    char model[600];
    snprintf(model, sizeof model, "%s/model.py", dir);
    FILE *f = fopen(model, "w");
    cr_assert_not_null(f);
    fputs(MODEL, f);
    fclose(f);
    static char out[1 << 15];
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "'%s' train '%s' --data '%s' --epochs 1 --batch 16 --device cpu --profile 2>&1",
             CNNKIT_CLI_PATH, model, dir);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", out);
    cr_assert_neq(strstr(out, "profile: 4 training steps"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "forward ms"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "conv2d"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "optimizer (adam)"), NULL, "%s", out);
    /* --profile belongs to train only */
    snprintf(cmd, sizeof cmd, "'%s' summary '%s' --profile >/dev/null 2>&1", CNNKIT_CLI_PATH,
             model);
    st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    const char *names[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "model.py"};
    for (int i = 0; i < 5; ++i) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* ck_model_last_step_time: nothing before a step, the arguments named; after a CPU step the
 * host part is the whole step (no device to wait for), positive and no longer than the wall
 * time the caller measured around the call; a refused step keeps the last successful one's. */
Test(profile, last_step_time) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = small_model(ctx);
    double host = -1.0, step = -1.0;
    cr_assert_eq(ck_model_last_step_time(m, &host, &step), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "no training step"), "%s",
              ck_context_last_error(ctx));
    cr_assert_eq(ck_model_last_step_time(m, NULL, &step), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "host_s"), "%s", ck_context_last_error(ctx));
    cr_assert_eq(ck_model_last_step_time(m, &host, NULL), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "step_s"), "%s", ck_context_last_error(ctx));
    enum { N = 8 };
    float x[N * 64];
    int32_t y[N];
    for (int i = 0; i < N * 64; ++i)
        x[i] = (float)(i % 13) / 13.0f;
    for (int i = 0; i < N; ++i)
        y[i] = i % 3;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    CK_OK(ctx, ck_model_train_step(m, x, y, N, NULL));
    clock_gettime(CLOCK_MONOTONIC, &b);
    const double outside = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    CK_OK(ctx, ck_model_last_step_time(m, &host, &step));
    cr_assert(step > 0.0 && step <= outside, "step %g s, measured around the call %g s", step,
              outside);
    cr_assert_eq(host, step, "the CPU waits for no device: host %g, step %g", host, step);
    y[0] = 7; /* refused: the figures stay the last successful step's */
    cr_assert_eq(ck_model_train_step(m, x, y, N, NULL), CK_STATUS_BAD_PARAM);
    double h2 = 0.0, s2 = 0.0;
    CK_OK(ctx, ck_model_last_step_time(m, &h2, &s2));
    cr_assert(h2 == host && s2 == step);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}
