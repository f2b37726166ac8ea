/* Out of host memory in the front ends (issue 20): ck_model_fit and ck_model_measure under a sweep
 * of host allocation limits. Every failure is CK_STATUS_ALLOC_FAILED with a message, gives back
 * every counted byte (ASan checks the rest), and loses nothing: lifting the limit and calling
 * again ends where an unlimited call does, bit for bit. */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnnkit/check.h"
#include "cnnkit/data.h"
#include "cnnkit/model.h"

#define N 12
#define PIX 36
#define CLASSES 4

/* conv, BN, relu, spatial dropout, pooling, dense softmax on 6x6x1: measure finds a BN and a
 * dropout to measure */
static const char MODEL[] = "model = Sequential()\n"
                            "model.add(Conv2D(3, (3, 3), padding='same', input_shape=(6, 6, 1)))\n"
                            "model.add(BatchNormalization())\n"
                            "model.add(Activation('relu'))\n"
                            "model.add(SpatialDropout2D(0.3))\n"
                            "model.add(MaxPooling2D((2, 2)))\n"
                            "model.add(Flatten())\n"
                            "model.add(Dense(4, activation='softmax'))\n";

static float images[N * PIX];
static int32_t labels[N];

static ck_dataset data(void) {
    trng r = {7};
    for (int i = 0; i < N; ++i) {
        labels[i] = (int32_t)(trng_u32(&r) % CLASSES);
        for (int p = 0; p < PIX; ++p)
            images[i * PIX + p] = (float)((p + labels[i]) % 3) + trng_uniform(&r, -0.5f, 0.5f);
    }
    ck_dataset d = {N, 6, 6, 1, CLASSES, images, labels};
    return d;
}

static ck_model *fresh(ck_context *ctx) {
    ck_model *m = NULL;
    char msg[512];
    CK_OK(ctx, ck_model_from_keras_text(ctx, MODEL, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 4));
    return m;
}

static float *weights(ck_context *ctx, ck_model *m, size_t *n) {
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, n));
    float *w = (float *)malloc(*n * sizeof *w);
    cr_assert_not_null(w);
    CK_OK(ctx, ck_model_get_weights(m, w, *n, NULL));
    return w;
}

/* A call under test: with_model gives it a fresh built model (made before the limit is set);
 * judge (optional) checks each outcome; out (out_size bytes, 0xA5 before each call) is its
 * result. */
typedef struct sweep_job {
    ck_status (*call)(ck_context *ctx, ck_model *m, void *out);
    void (*judge)(ck_context *ctx, ck_model *m, ck_status st, void *out, size_t limit);
    int with_model;
    size_t out_size;
} sweep_job;

/* Runs the call under limits live + extra: extra doubles from 1 (a limit of 0 means none) until
 * the call succeeds, then steps linearly below that. Each failure is ALLOC_FAILED naming the
 * memory, and no call keeps a counted byte. Returns the failures (at least min_failures). */
static int sweep(ck_context *ctx, const sweep_job *j, int min_failures) {
    CK_OK(ctx, ck_context_set_cpu_threads(ctx, 1)); /* tiny calls: threads would only wait */
    union {
        ck_measurement m;
        ck_epoch_result h[2];
    } out;
    cr_assert_leq(j->out_size, sizeof out);
    size_t first_ok = 0;
    int failures = 0;
    for (int phase = 0; phase < 2; ++phase) {
        for (int k = 0; k < (phase == 0 ? 40 : 16); ++k) {
            const size_t extra =
                phase == 0 ? (size_t)1 << k : first_ok / 16 * (size_t)k + (size_t)k;
            ck_model *m = j->with_model ? fresh(ctx) : NULL;
            const size_t base = ck_context_host_alloc_bytes(ctx);
            CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, base + extra));
            memset(&out, 0xA5, j->out_size);
            const ck_status st = j->call(ctx, m, &out);
            char msg[512];
            snprintf(msg, sizeof msg, "%s", ck_context_last_error(ctx));
            CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, 0));
            if (st != CK_STATUS_SUCCESS) {
                ++failures;
                cr_assert_eq(st, CK_STATUS_ALLOC_FAILED, "extra %zu: %s (%s)", extra,
                             ck_status_string(st), msg);
                cr_assert_neq(strstr(msg, "memory"), NULL, "extra %zu: message '%s'", extra, msg);
            }
            cr_assert_eq(ck_context_host_alloc_bytes(ctx), base,
                         "extra %zu: the call kept %zu bytes", extra,
                         ck_context_host_alloc_bytes(ctx) - base);
            if (j->judge)
                j->judge(ctx, m, st, &out, base + extra);
            ck_model_destroy(m);
            if (phase == 0 && st == CK_STATUS_SUCCESS) {
                first_ok = extra;
                break;
            }
        }
        if (phase == 0)
            cr_assert_gt(first_ok, 0, "the call never succeeded");
    }
    cr_assert_geq(failures, min_failures, "the limit did not bite (%d failures)", failures);
    return failures;
}

/* ---- fit ------------------------------------------------------------------------------------- */

static ck_dataset g_train;
static float *g_fit_ref; /* the weights after an unlimited fit */
static size_t g_nw;

static const ck_fit_options g_fit_opts = {.epochs = 2, .batch = 4};

static ck_status fit_call(ck_context *ctx, ck_model *m, void *out) {
    (void)ctx;
    return ck_model_fit(m, &g_train, &g_train, &g_fit_opts, (ck_epoch_result *)out);
}

static void fit_judge(ck_context *ctx, ck_model *m, ck_status st, void *out, size_t limit) {
    (void)out;
    if (st != CK_STATUS_SUCCESS) {
        /* the steps before the failure are kept in the fit state: resuming finishes the fit */
        ck_fit_state fs;
        CK_OK(ctx, ck_model_fit_state(m, &fs));
        ck_fit_options o = g_fit_opts;
        o.resume = fs.valid;
        if (!fs.valid) { /* it failed before any step: the model is the fresh one */
            ck_model *f = fresh(ctx);
            size_t n0, n1;
            float *w0 = weights(ctx, f, &n0), *w1 = weights(ctx, m, &n1);
            cr_assert_eq(memcmp(w0, w1, n0 * sizeof *w0), 0, "limit %zu: changed the model", limit);
            free(w0);
            free(w1);
            ck_model_destroy(f);
        }
        ck_epoch_result h[2];
        CK_OK(ctx, ck_model_fit(m, &g_train, &g_train, &o, h));
    }
    size_t n;
    float *w = weights(ctx, m, &n);
    cr_assert_eq(n, g_nw);
    cr_assert_eq(memcmp(w, g_fit_ref, n * sizeof *w), 0, "limit %zu: other weights after the fit",
                 limit);
    free(w);
}

Test(oom, fit_under_host_limit_sweep) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    g_train = data();
    ck_model *ref = fresh(ctx);
    ck_epoch_result h[2];
    CK_OK(ctx, fit_call(ctx, ref, h));
    g_fit_ref = weights(ctx, ref, &g_nw);
    ck_model_destroy(ref);
    const sweep_job j = {fit_call, fit_judge, 1, sizeof(ck_epoch_result) * 2};
    sweep(ctx, &j, 10);
    free(g_fit_ref);
    ck_context_destroy(ctx);
}

/* ---- measure --------------------------------------------------------------------------------- */

static ck_measurement g_meas_ref;

static const ck_measure_options g_measure_opts = {.batches = 2, .batch = 4};

static ck_status measure_call(ck_context *ctx, ck_model *m, void *out) {
    (void)ctx;
    return ck_model_measure(m, &g_train, &g_measure_opts, (ck_measurement *)out);
}

static void measure_judge(ck_context *ctx, ck_model *m, ck_status st, void *out, size_t limit) {
    ck_measurement *r = (ck_measurement *)out;
    if (st != CK_STATUS_SUCCESS) {
        const unsigned char *b = (const unsigned char *)out;
        for (size_t i = 0; i < sizeof *r; ++i)
            cr_assert_eq(b[i], 0xA5, "limit %zu: a failed measure wrote out", limit);
        /* the model is untouched: lifted, the same call measures the same */
        CK_OK(ctx, measure_call(ctx, m, r));
    }
    cr_assert_eq(r->n_bn, g_meas_ref.n_bn);
    cr_assert_eq(r->n_dropout, g_meas_ref.n_dropout);
    cr_assert_eq(r->model_step, g_meas_ref.model_step);
    for (int i = 0; i < r->n_bn && i < CK_MEASURE_MAX; ++i)
        cr_assert_eq(memcmp(&r->bn[i], &g_meas_ref.bn[i], sizeof r->bn[i]), 0,
                     "limit %zu: BN %d measured differently", limit, i);
    for (int i = 0; i < r->n_dropout && i < CK_MEASURE_MAX; ++i)
        cr_assert_eq(r->dropout[i].zeroed, g_meas_ref.dropout[i].zeroed,
                     "limit %zu: dropout %d measured differently", limit, i);
}

Test(oom, measure_under_host_limit_sweep) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    g_train = data();
    ck_model *ref = fresh(ctx);
    memset(&g_meas_ref, 0, sizeof g_meas_ref);
    CK_OK(ctx, measure_call(ctx, ref, &g_meas_ref));
    cr_assert_eq(g_meas_ref.n_bn, 1);
    cr_assert_eq(g_meas_ref.n_dropout, 1);
    ck_model_destroy(ref);
    const sweep_job j = {measure_call, measure_judge, 1, sizeof(ck_measurement)};
    sweep(ctx, &j, 10);
    ck_context_destroy(ctx);
}

/* ---- Keras text and files -------------------------------------------------------------------- */

/* a text parse that builds, then frees what it made (the count must come back to base) */
static ck_status text_call(ck_context *ctx, ck_model *unused, void *out) {
    (void)unused;
    (void)out;
    ck_model *m = NULL;
    char msg[512];
    const ck_status st = ck_model_from_keras_text(ctx, MODEL, &m, msg, sizeof msg);
    cr_assert((st == CK_STATUS_SUCCESS) == (m != NULL), "a model without success or vice versa");
    ck_model_destroy(m);
    return st;
}

Test(oom, keras_text_under_host_limit_sweep) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const sweep_job j = {text_call, NULL, 0, 0};
    sweep(ctx, &j, 10);
    ck_context_destroy(ctx);
}

static const char *g_path; /* the .keras file */
static ck_model *g_src;    /* the model saved there */

static ck_status load_call(ck_context *ctx, ck_model *unused, void *out) {
    (void)unused;
    (void)out;
    ck_model *m = NULL;
    const ck_status st = ck_model_load_keras(ctx, g_path, 4, &m);
    if (st == CK_STATUS_SUCCESS) { /* the weights made it: the same as the saved model's */
        size_t n0, n1;
        float *w0 = weights(ctx, g_src, &n0), *w1 = weights(ctx, m, &n1);
        cr_assert_eq(n0, n1);
        cr_assert_eq(memcmp(w0, w1, n0 * sizeof *w0), 0, "the loaded weights differ");
        free(w0);
        free(w1);
    }
    ck_model_destroy(m);
    return st;
}

static ck_status save_call(ck_context *ctx, ck_model *unused, void *out) {
    (void)ctx;
    (void)unused;
    (void)out;
    return ck_model_save_keras(g_src, g_path);
}

Test(oom, keras_file_save_and_load_under_host_limit_sweep) {
    char dir[] = "/tmp/cnnkit-oom-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof path, "%s/m.keras", dir);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    g_path = path;
    g_src = fresh(ctx);
    /* a failed save leaves no file behind; the first success writes it */
    const sweep_job save = {save_call, NULL, 0, 0}, load = {load_call, NULL, 0, 0};
    sweep(ctx, &save, 5);
    sweep(ctx, &load, 10);
    ck_model_destroy(g_src);
    ck_context_destroy(ctx);
    unlink(path);
    cr_assert_eq(rmdir(dir), 0, "a failed save left a file behind");
}

static ck_status load_legacy_call(ck_context *ctx, ck_model *unused, void *out) {
    (void)unused;
    (void)out;
    ck_model *m = NULL;
    const ck_status st = ck_model_load_keras(ctx, g_path, 4, &m);
    ck_model_destroy(m);
    return st;
}

/* a legacy whole-model .h5: model_config, training_config and weight_names attributes */
Test(oom, keras_legacy_h5_load_under_host_limit_sweep) {
    g_path = t_src("tests/data/keras/small_legacy.h5");
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const sweep_job load = {load_legacy_call, NULL, 0, 0};
    sweep(ctx, &load, 10);
    ck_context_destroy(ctx);
}
