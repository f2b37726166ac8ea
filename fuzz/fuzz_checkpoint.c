/* libFuzzer target: the checkpoint loader (ck_model_load) on a small built model. A failed load
 * must leave the weights, the optimizer state and the step unchanged; a successful one must give
 * a model that still trains (one step). CNNKIT_FUZZ_SAVE_SEED=path writes a valid checkpoint of
 * the model (how fuzz/corpus/checkpoint/ was made) and exits. fuzz_keras_h5.c compiles this file
 * with FUZZ_LOAD / FUZZ_SAVE set to the .weights.h5 reader and writer. */
#include "cnnkit/model.h"
#include "fuzz_util.h"

#ifndef FUZZ_LOAD
#define FUZZ_LOAD ck_model_load
#define FUZZ_SAVE ck_model_save
#define FUZZ_TAG "ckpt"
#endif

static const char MODEL[] = "model = Sequential()\n"
                            "model.add(Conv2D(2, (3, 3), input_shape=(5, 5, 1)))\n"
                            "model.add(BatchNormalization())\n"
                            "model.add(Activation('relu'))\n"
                            "model.add(SpatialDropout2D(0.5))\n"
                            "model.add(Flatten())\n"
                            "model.add(Dense(3, activation='softmax'))\n";

static ck_context *ctx;
static ck_model *model;
static float *w0, *w1;
static size_t nw;
static float x[2 * 25];
static const int32_t y[2] = {0, 2};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char err[256];
    if (ck_context_create(&ctx, CK_DEVICE_CPU, 0, 7) != CK_STATUS_SUCCESS ||
        ck_model_from_keras_text(ctx, MODEL, &model, err, sizeof err) != CK_STATUS_SUCCESS ||
        ck_model_build(model, 0, 0, 0, 2) != CK_STATUS_SUCCESS)
        abort();
    ck_context_set_cpu_threads(ctx, 1);
    for (int i = 0; i < 50; ++i)
        x[i] = (float)(i % 7) / 7.0f;
    ck_step_result r;
    if (ck_model_train_step(model, x, y, 2, &r) != CK_STATUS_SUCCESS)
        abort();
    const char *seed = getenv("CNNKIT_FUZZ_SAVE_SEED");
    if (seed && *seed) {
        if (FUZZ_SAVE(model, seed) != CK_STATUS_SUCCESS)
            abort();
        exit(0);
    }
    if (ck_model_get_weights(model, NULL, 0, &nw) != CK_STATUS_SUCCESS)
        abort();
    w0 = (float *)malloc(nw * sizeof *w0);
    w1 = (float *)malloc(nw * sizeof *w1);
    if (!w0 || !w1 || ck_model_get_weights(model, w0, nw, NULL) != CK_STATUS_SUCCESS)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(0, FUZZ_TAG, data, size, 0);
    if (!path)
        return 0;
    const long long step = ck_model_step(model);
    ck_status st = FUZZ_LOAD(model, path);
    if (ck_model_get_weights(model, w1, nw, NULL) != CK_STATUS_SUCCESS)
        __builtin_trap();
    if (st != CK_STATUS_SUCCESS) {
        if (memcmp(w0, w1, nw * sizeof *w0) != 0 || ck_model_step(model) != step)
            __builtin_trap(); /* a failed load changed the model */
        return 0;
    }
    /* a load that passed the CRC: the model must still run (NaN weights give a status) */
    ck_step_result r;
    (void)ck_model_train_step(model, x, y, 2, &r);
    ck_model_get_weights(model, w0, nw, NULL);
    return 0;
}
