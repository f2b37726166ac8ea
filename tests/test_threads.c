/* The thread contract (README "Guarantees"): different contexts may be used from different threads
 * at once. Four threads, each with its own context and model, train concurrently (the CPU backend:
 * OpenMP loops and OpenBLAS GEMMs inside every thread) and must end with the same bits as the
 * same runs one after the other. */
#include "common.h"

#include "cnnkit/model.h"

#include "cnnkit/data.h"

#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define T_THREADS 4
#define T_STEPS 6
#define T_BATCH 16

static const char MODEL[] =
    "model = Sequential()\n"
    "model.add(Conv2D(8, (3, 3), padding='same', input_shape=(12, 12, 1)))\n"
    "model.add(BatchNormalization())\n"
    "model.add(Activation('relu'))\n"
    "model.add(MaxPooling2D((2, 2)))\n"
    "model.add(Dropout(0.2))\n"
    "model.add(Flatten())\n"
    "model.add(Dense(32, activation='relu'))\n"
    "model.add(Dense(4, activation='softmax'))\n";

typedef struct job {
    uint64_t seed;
    float *weights;
    size_t count;
    ck_status status;
    int threads; /* ck_context_set_cpu_threads, 0: the default */
} job;

/* No Criterion asserts here: they are not meant to run off the test's own thread. */
static void *run_job(void *arg) {
    job *j = (job *)arg;
    ck_context *ctx = NULL;
    ck_model *m = NULL;
    char msg[256];
    j->status = ck_context_create(&ctx, CK_DEVICE_CPU, 0, j->seed);
    if (j->status == CK_STATUS_SUCCESS)
        j->status = ck_context_set_cpu_threads(ctx, j->threads);
    if (j->status == CK_STATUS_SUCCESS)
        j->status = ck_model_from_keras_text(ctx, MODEL, &m, msg, sizeof msg);
    if (j->status == CK_STATUS_SUCCESS)
        j->status = ck_model_build(m, 0, 0, 0, T_BATCH);
    float x[T_BATCH * 144];
    int32_t y[T_BATCH];
    trng r = {j->seed * 7919u + 1u};
    for (int s = 0; s < T_STEPS && j->status == CK_STATUS_SUCCESS; ++s) {
        for (int i = 0; i < T_BATCH; ++i) {
            y[i] = (int32_t)(trng_u32(&r) % 4u);
            for (int p = 0; p < 144; ++p)
                x[i * 144 + p] = 0.2f * (float)y[i] + trng_uniform(&r, -0.5f, 0.5f);
        }
        ck_step_result res;
        j->status = ck_model_train_step(m, x, y, T_BATCH, &res);
    }
    if (j->status == CK_STATUS_SUCCESS)
        j->status = ck_model_get_weights(m, NULL, 0, &j->count);
    if (j->status == CK_STATUS_SUCCESS) {
        j->weights = (float *)malloc(j->count * sizeof(float));
        j->status = j->weights ? ck_model_get_weights(m, j->weights, j->count, NULL)
                               : CK_STATUS_ALLOC_FAILED;
    }
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return NULL;
}

Test(threads, contexts_train_concurrently_with_sequential_bits, .timeout = 120) {
    job seq[T_THREADS], par[T_THREADS];
    memset(seq, 0, sizeof seq);
    memset(par, 0, sizeof par);
    for (int t = 0; t < T_THREADS; ++t) {
        seq[t].seed = par[t].seed = 100u + (uint64_t)t;
        run_job(&seq[t]);
        cr_assert_eq(seq[t].status, CK_STATUS_SUCCESS, "sequential run %d: %s", t,
                     ck_status_string(seq[t].status));
    }
    pthread_t th[T_THREADS];
    for (int t = 0; t < T_THREADS; ++t)
        cr_assert_eq(pthread_create(&th[t], NULL, run_job, &par[t]), 0);
    for (int t = 0; t < T_THREADS; ++t)
        cr_assert_eq(pthread_join(th[t], NULL), 0);
    for (int t = 0; t < T_THREADS; ++t) {
        cr_assert_eq(par[t].status, CK_STATUS_SUCCESS, "concurrent run %d: %s", t,
                     ck_status_string(par[t].status));
        cr_assert_eq(par[t].count, seq[t].count);
        cr_assert_eq(memcmp(par[t].weights, seq[t].weights, seq[t].count * sizeof(float)), 0,
                     "thread %d: concurrent training gave other bits than the sequential run", t);
        /* different seeds gave different models: the runs were not all the same one */
        if (t > 0)
            cr_assert_neq(memcmp(par[t].weights, par[0].weights, seq[t].count * sizeof(float)), 0);
    }
    for (int t = 0; t < T_THREADS; ++t) {
        free(seq[t].weights);
        free(par[t].weights);
    }
}

/* ck_context_set_cpu_threads governs a model call for the call only: inside a fit (its step
 * callback) the calling thread's OpenMP team size is the context's, after it the caller's again;
 * one thread trains to the same weights as the default (cnnkit's loops and the tiled
 * convolutions do not depend on the thread count; these Dense GEMMs are small). */
static int team_size(void *u, const ck_fit_progress *p) {
    (void)p;
    *(int *)u = omp_get_max_threads();
    return 0;
}

Test(threads, context_thread_count_is_scoped_to_the_call) {
    job a = {11, NULL, 0, CK_STATUS_SUCCESS, 0}, b = {11, NULL, 0, CK_STATUS_SUCCESS, 1};
    run_job(&a);
    const int before = omp_get_max_threads();
    run_job(&b);
    cr_assert_eq(a.status, CK_STATUS_SUCCESS);
    cr_assert_eq(b.status, CK_STATUS_SUCCESS);
    cr_assert_eq(omp_get_max_threads(), before, "the caller's OpenMP team size was changed");
    cr_assert_eq(a.count, b.count);
    cr_assert_eq(memcmp(a.weights, b.weights, a.count * sizeof(float)), 0,
                 "one thread gives other weights");
    free(a.weights);
    free(b.weights);
    /* inside a fit: the context's count */
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    CK_OK(ctx, ck_context_set_cpu_threads(ctx, 1));
    ck_model *m = NULL;
    char msg[256];
    CK_OK(ctx, ck_model_from_keras_text(ctx, MODEL, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, T_BATCH));
    ck_dataset d = {T_BATCH, 12, 12, 1, 4, NULL, NULL};
    d.images = (float *)calloc(T_BATCH * 144, sizeof(float));
    d.labels = (int32_t *)calloc(T_BATCH, sizeof(int32_t));
    int inside = -1;
    ck_fit_options fo = {1, T_BATCH, 1, team_size, NULL, &inside, 0};
    CK_OK(ctx, ck_model_fit(m, &d, NULL, &fo, NULL));
    cr_assert_eq(inside, 1, "team size inside the fit: %d", inside);
    cr_assert_eq(omp_get_max_threads(), before);
    free(d.images);
    free(d.labels);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}
