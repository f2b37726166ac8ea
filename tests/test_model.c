/* Sequential model: summary, shapes, whole-model gradients, training, checkpoints. */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnnkit/model.h"
#include "model_internal.h"

#define SEED t_seed_cnn_text /* tests/common.c */

static ck_model *seed_model(ck_context *ctx, int max_batch) {
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(ctx, ck_model_from_keras_text(ctx, SEED, &m, msg, sizeof msg));
    cr_assert_neq(strstr(msg, "line 5"), NULL, "expected a recovery warning for line 5: %s", msg);
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, max_batch));
    return m;
}

Test(model, seed_summary_matches_keras) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = seed_model(ctx, 4);
    ck_param_counts pc;
    CK_OK(ctx, ck_model_param_counts(m, &pc));
    cr_assert_eq(pc.total, 597738);
    cr_assert_eq(pc.trainable, 596330);
    cr_assert_eq(pc.non_trainable, 1408);
    cr_assert_eq(ck_model_num_layers(m), 23);
    const int shapes[][3] = {{26, 26, 32}, {24, 24, 32}, {12, 12, 32}, {10, 10, 64}, {8, 8, 64},
                             {4, 4, 64},   {1, 1, 1024}, {1, 1, 512},  {1, 1, 10}};
    const int at[] = {0, 3, 6, 8, 11, 14, 16, 17, 22};
    for (int k = 0; k < 9; ++k) {
        int h, w, c;
        CK_OK(ctx, ck_model_layer_shape(m, at[k], &h, &w, &c));
        cr_assert(h == shapes[k][0] && w == shapes[k][1] && c == shapes[k][2], "layer %d: %dx%dx%d",
                  at[k], h, w, c);
    }
    size_t need = 0;
    cr_assert_eq(ck_model_summary(m, NULL, 0, &need), CK_STATUS_BAD_PARAM);
    char *buf = malloc(need);
    CK_OK(ctx, ck_model_summary(m, buf, need, NULL));
    cr_assert_neq(strstr(buf, "Total params: 597,738"), NULL, "%s", buf);
    cr_assert_neq(strstr(buf, "Trainable params: 596,330"), NULL);
    cr_assert_neq(strstr(buf, "Non-trainable params: 1,408"), NULL);
    cr_assert_neq(strstr(buf, "conv2d_1 (Conv2D)"), NULL, "%s", buf);
    cr_assert_neq(strstr(buf, "(None, 26, 26, 32)"), NULL);
    cr_assert_neq(strstr(buf, "(None, 1024)"), NULL);
    cr_assert_neq(strstr(buf, "batch_normalization_4 (BatchNormalization)"), NULL, "%s", buf);
    free(buf);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* A small model touching every node kind, for gradient checks. */
static ck_model *small_model(ck_context *ctx, int with_dropout) {
    ck_model *m = NULL;
    CK_OK(ctx, ck_model_create(ctx, &m));
    ck_layer_desc d;
    ck_layer_desc_init(&d, CK_LAYER_CONV2D);
    d.units = 3;
    d.kernel_h = d.kernel_w = 3;
    d.padding = CK_PADDING_SAME;
    CK_OK(ctx, ck_model_add(m, &d));
    ck_layer_desc_init(&d, CK_LAYER_BATCHNORM);
    CK_OK(ctx, ck_model_add(m, &d));
    ck_layer_desc_init(&d, CK_LAYER_ACTIVATION);
    d.activation = CK_ACT_TANH;
    CK_OK(ctx, ck_model_add(m, &d));
    /* average pooling: max pooling's kinks would trip the finite differences (its gradient is
     * checked on its own in test_layers.c) */
    ck_layer_desc_init(&d, CK_LAYER_AVGPOOL2D);
    CK_OK(ctx, ck_model_add(m, &d));
    if (with_dropout) {
        ck_layer_desc_init(&d, CK_LAYER_SPATIAL_DROPOUT2D);
        d.rate = 0.3f;
        CK_OK(ctx, ck_model_add(m, &d));
    }
    ck_layer_desc_init(&d, CK_LAYER_CONV2D);
    d.units = 4;
    d.kernel_h = d.kernel_w = 2;
    d.activation = CK_ACT_SWISH;
    CK_OK(ctx, ck_model_add(m, &d));
    ck_layer_desc_init(&d, CK_LAYER_FLATTEN);
    CK_OK(ctx, ck_model_add(m, &d));
    ck_layer_desc_init(&d, CK_LAYER_DENSE);
    d.units = 6;
    CK_OK(ctx, ck_model_add(m, &d));
    ck_layer_desc_init(&d, CK_LAYER_BATCHNORM);
    CK_OK(ctx, ck_model_add(m, &d));
    if (with_dropout) {
        ck_layer_desc_init(&d, CK_LAYER_DROPOUT);
        d.rate = 0.25f;
        CK_OK(ctx, ck_model_add(m, &d));
    }
    ck_layer_desc_init(&d, CK_LAYER_DENSE);
    d.units = 4;
    d.activation = CK_ACT_SOFTMAX;
    CK_OK(ctx, ck_model_add(m, &d));
    CK_OK(ctx, ck_model_build(m, 7, 6, 2, 8));
    return m;
}

static void make_batch(int n, size_t per, float *x, int32_t *y, uint64_t seed) {
    trng r = {seed};
    for (size_t i = 0; i < (size_t)n * per; ++i)
        x[i] = trng_uniform(&r, -1.0f, 1.0f);
    for (int i = 0; i < n; ++i)
        y[i] = (int32_t)(trng_u32(&r) % 4);
}

/* Whole-model gradient: every 7th trainable parameter by t_gradcheck_model (dropout masks fixed:
 * the step counter does not move). */
static void gradcheck_model(int with_dropout) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = small_model(ctx, with_dropout);
    const int n = 8;
    const size_t per = 7 * 6 * 2;
    float x[8 * 84];
    int32_t y[8];
    make_batch(n, per, x, y, 5);
    const int checked = t_gradcheck_model(ctx, m, x, y, n, 7, 0, NULL);
    cr_assert_gt(checked, 20);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

Test(model, gradcheck_whole_model) {
    gradcheck_model(0);
}
Test(model, gradcheck_whole_model_with_dropouts) {
    gradcheck_model(1);
}

/* Training lowers the loss on a fixed batch; the same seed gives bit-identical weights. */
Test(model, training_is_deterministic_and_learns) {
    float w1[4096], w2[4096];
    double first = 0, last = 0;
    for (int run = 0; run < 2; ++run) {
        ck_context *ctx = t_ctx(CK_DEVICE_CPU);
        ck_model *m = small_model(ctx, 1);
        ck_optimizer_desc o;
        CK_OK(ctx, ck_optimizer_desc_init(&o, CK_OPT_ADAM));
        o.learning_rate = 1e-2f;
        CK_OK(ctx, ck_model_set_optimizer(m, &o));
        float x[8 * 84];
        int32_t y[8];
        make_batch(8, 84, x, y, 11);
        for (int s = 0; s < 30; ++s) {
            ck_step_result r;
            CK_OK(ctx, ck_model_train_step(m, x, y, 8, &r));
            if (s == 0)
                first = r.loss;
            last = r.loss;
        }
        size_t need;
        CK_OK(ctx, ck_model_get_weights(m, NULL, 0, &need));
        cr_assert_leq(need, 4096);
        CK_OK(ctx, ck_model_get_weights(m, run ? w2 : w1, need, NULL));
        if (run)
            cr_assert_eq(memcmp(w1, w2, need * sizeof(float)), 0, "two runs differ");
        cr_assert_eq(ck_model_step(m), 30);
        ck_model_destroy(m);
        ck_context_destroy(ctx);
    }
    cr_assert_lt(last, 0.5 * first, "loss %f -> %f did not drop", first, last);
}

Test(model, checkpoint_round_trip_and_corruption) {
    char dir[] = "/tmp/cnnkit-ckpt-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/m.ckpt", dir);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *a = small_model(ctx, 1), *b = small_model(ctx, 1);
    float x[8 * 84];
    int32_t y[8];
    make_batch(8, 84, x, y, 3);
    ck_step_result r;
    for (int s = 0; s < 3; ++s)
        CK_OK(ctx, ck_model_train_step(a, x, y, 8, &r));
    CK_OK(ctx, ck_model_save(a, path));
    CK_OK(ctx, ck_model_load(b, path));
    cr_assert_eq(ck_model_step(b), 3);
    /* both continue identically: weights, BN statistics and Adam state came back */
    ck_step_result ra, rb;
    CK_OK(ctx, ck_model_train_step(a, x, y, 8, &ra));
    CK_OK(ctx, ck_model_train_step(b, x, y, 8, &rb));
    cr_assert_eq(ra.loss, rb.loss, "resumed loss differs: %f vs %f", ra.loss, rb.loss);
    size_t need;
    CK_OK(ctx, ck_model_get_weights(a, NULL, 0, &need));
    float *wa = malloc(need * 4), *wb = malloc(need * 4), *wc = malloc(need * 4);
    CK_OK(ctx, ck_model_get_weights(a, wa, need, NULL));
    CK_OK(ctx, ck_model_get_weights(b, wb, need, NULL));
    cr_assert_eq(memcmp(wa, wb, need * 4), 0);

    /* corrupt one byte in the middle: rejected, b unchanged */
    FILE *f = fopen(path, "r+b");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size / 2, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, size / 2, SEEK_SET);
    fputc(ch ^ 0x5a, f);
    fclose(f);
    cr_assert_eq(ck_model_load(b, path), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "corrupt"), NULL, "%s",
                  ck_context_last_error(ctx));
    CK_OK(ctx, ck_model_get_weights(b, wc, need, NULL));
    cr_assert_eq(memcmp(wb, wc, need * 4), 0, "a rejected load changed the model");
    /* truncated */
    CK_OK(ctx, ck_model_save(a, path));
    cr_assert_eq(truncate(path, size - 10), 0);
    cr_assert_eq(ck_model_load(b, path), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "truncated"), NULL, "%s",
                  ck_context_last_error(ctx));
    /* another model */
    CK_OK(ctx, ck_model_save(a, path));
    ck_model *c = small_model(ctx, 0);
    cr_assert_eq(ck_model_load(c, path), CK_STATUS_SHAPE_MISMATCH);
    /* not a checkpoint; missing */
    f = fopen(path, "wb");
    fputs("hello", f);
    fclose(f);
    cr_assert_eq(ck_model_load(b, path), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_load(b, "/nonexistent/x.ckpt"), CK_STATUS_BAD_PARAM);
    unlink(path);
    rmdir(dir);
    free(wa);
    free(wb);
    free(wc);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_model_destroy(c);
    ck_context_destroy(ctx);
}

Test(model, bad_inputs) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = small_model(ctx, 0);
    float x[8 * 84] = {0};
    int32_t y[8] = {0, 1, 2, 3, 4, 0, 0, 0};
    cr_assert_eq(ck_model_train_step(m, x, y, 8, NULL), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "labels[4]"), NULL);
    y[4] = 0;
    cr_assert_eq(ck_model_train_step(m, x, y, 9, NULL), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_train_step(m, NULL, y, 8, NULL), CK_STATUS_BAD_PARAM);
    x[3] = NAN;
    cr_assert_eq(ck_model_train_step(m, x, y, 8, NULL), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "not finite"), NULL);
    cr_assert_eq(ck_model_step(m), 0, "a failed step advanced the counter");
    ck_layer_desc d;
    ck_layer_desc_init(&d, CK_LAYER_DENSE);
    d.units = 3;
    cr_assert_eq(ck_model_add(m, &d), CK_STATUS_BAD_PARAM, "add after build");
    ck_model_destroy(m);

    /* shape errors at build */
    CK_OK(ctx, ck_model_create(ctx, &m));
    ck_layer_desc_init(&d, CK_LAYER_CONV2D);
    d.units = 2;
    d.kernel_h = d.kernel_w = 5;
    CK_OK(ctx, ck_model_add(m, &d));
    cr_assert_eq(ck_model_build(m, 4, 4, 1, 2), CK_STATUS_SHAPE_MISMATCH);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "conv2d"), NULL, "%s",
                  ck_context_last_error(ctx));
    ck_model_destroy(m);
    CK_OK(ctx, ck_model_create(ctx, &m));
    ck_layer_desc_init(&d, CK_LAYER_DENSE);
    d.units = 2;
    CK_OK(ctx, ck_model_add(m, &d));
    cr_assert_eq(ck_model_build(m, 4, 4, 1, 2), CK_STATUS_SHAPE_MISMATCH);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "Flatten"), NULL, "%s",
                  ck_context_last_error(ctx));
    ck_layer_desc_init(&d, CK_LAYER_DROPOUT);
    d.rate = 1.0f;
    cr_assert_eq(ck_model_add(m, &d), CK_STATUS_BAD_PARAM);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* ck_model_input_shape: the built model's input, what the CLI checks a data set against; before
 * the build and with a NULL output it refuses, naming why. */
Test(model, input_shape) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = NULL;
    char msg[512];
    CK_OK(ctx, ck_model_from_keras_text(ctx, t_seed_cnn_text, &m, msg, sizeof msg));
    int h = -1, w = -1, c = -1;
    cr_expect_eq(ck_model_input_shape(m, &h, &w, &c), CK_STATUS_BAD_PARAM);
    cr_expect_not_null(strstr(ck_context_last_error(ctx), "not built"));
    cr_expect(h == -1 && w == -1 && c == -1, "nothing written when refused");
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 8));
    CK_OK(ctx, ck_model_input_shape(m, &h, &w, &c));
    cr_expect(h == 28 && w == 28 && c == 1, "%dx%dx%d", h, w, c);
    cr_expect_eq(ck_model_input_shape(m, &h, NULL, &c), CK_STATUS_BAD_PARAM);
    cr_expect_not_null(strstr(ck_context_last_error(ctx), "w: NULL"));
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* Keras accepts a learning rate of 0 (a frozen model, evaluated or trained without change);
 * cnnkit refused such a file even for evaluate, predict and convert. Its steps change no weight
 * and no optimizer state's effect: the weights are the same bits after a step; a negative one
 * is refused. */
/* RMSprop's and Adadelta's settings (rho, centered) and state survive a checkpoint: the resumed
 * model takes the same steps bit for bit; settings the optimizer cannot run are refused, the
 * model unchanged. */
Test(model, rmsprop_checkpoint_resumes_and_bad_settings_are_refused) {
    char path[] = "/tmp/cnnkit-rmsprop-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    float x[8 * 84];
    int32_t y[8];
    make_batch(8, 84, x, y, 5);
    for (int centered = 0; centered < 3; ++centered) { /* 2: Adadelta */
        ck_model *a = small_model(ctx, 1), *b = small_model(ctx, 1);
        ck_optimizer_desc o;
        CK_OK(ctx, ck_optimizer_desc_init(&o, centered == 2 ? CK_OPT_ADADELTA : CK_OPT_RMSPROP));
        o.rho = 0.8f;
        o.learning_rate = centered == 2 ? 1.0f : 0.01f;
        o.centered = centered == 1;
        o.momentum = centered ? 0.0f : 0.7f;
        o.weight_decay = 0.01f;
        CK_OK(ctx, ck_model_set_optimizer(a, &o));
        for (int s = 0; s < 3; ++s)
            CK_OK(ctx, ck_model_train_step(a, x, y, 8, NULL));
        CK_OK(ctx, ck_model_save(a, path));
        CK_OK(ctx, ck_model_load(b, path)); /* b was Adam: the file's optimizer replaces it */
        cr_assert(b->opt.type == o.type && b->opt.rho == 0.8f && b->opt.centered == o.centered &&
                  b->opt.momentum == o.momentum && b->opt.weight_decay == 0.01f &&
                  b->opt.beta1 == 0.0f && !b->opt.nesterov);
        cr_assert(!memcmp(a->opt_m, b->opt_m, a->num_params * 4) &&
                  !memcmp(a->opt_v, b->opt_v, a->num_params * 4));
        int nonzero = 0;
        for (size_t i = 0; i < a->num_params; ++i)
            nonzero += a->opt_m[i] != 0.0f;
        cr_assert_gt(nonzero, 0, "the momentum or centered average is kept");
        ck_step_result ra, rb;
        for (int s = 0; s < 2; ++s) {
            CK_OK(ctx, ck_model_train_step(a, x, y, 8, &ra));
            CK_OK(ctx, ck_model_train_step(b, x, y, 8, &rb));
            cr_assert_eq(ra.loss, rb.loss);
        }
        cr_assert(!memcmp(a->params, b->params, a->num_params * 4));
        if (centered == 2) { /* Adadelta: no momentum */
            ck_optimizer_desc bad = o;
            bad.momentum = 0.5f;
            cr_assert_eq(ck_model_set_optimizer(a, &bad), CK_STATUS_BAD_PARAM);
            cr_assert(a->opt.type == CK_OPT_ADADELTA);
        } else {
            /* refused: centered with momentum (a third state array), rho 1, epsilon 0 */
            const float before = a->params[0];
            ck_optimizer_desc bad = o;
            bad.centered = 1, bad.momentum = 0.5f;
            cr_assert_eq(ck_model_set_optimizer(a, &bad), CK_STATUS_NOT_SUPPORTED);
            cr_assert_neq(strstr(ck_context_last_error(ctx), "centered"), NULL);
            bad = o, bad.rho = 1.0f;
            cr_assert_eq(ck_model_set_optimizer(a, &bad), CK_STATUS_BAD_PARAM);
            cr_assert_neq(strstr(ck_context_last_error(ctx), "rho"), NULL);
            bad = o, bad.epsilon = 0.0f;
            cr_assert_eq(ck_model_set_optimizer(a, &bad), CK_STATUS_BAD_PARAM);
            cr_assert(a->opt.type == CK_OPT_RMSPROP && a->opt.rho == 0.8f &&
                      a->params[0] == before);
        }
        ck_model_destroy(a);
        ck_model_destroy(b);
    }
    unlink(path);
    ck_context_destroy(ctx);
}

Test(model, learning_rate_zero_is_a_frozen_model) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = t_model(ctx,
                          "model = Sequential()\n"
                          "model.add(Conv2D(2, (3, 3), input_shape=(5, 5, 1)))\n"
                          "model.add(Flatten())\n"
                          "model.add(Dense(3, activation='softmax'))\n"
                          "model.compile(optimizer=SGD(learning_rate=0.0, momentum=0.9), "
                          "loss='sparse_categorical_crossentropy')\n",
                          4);
    size_t n = 0;
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, &n));
    float *before = malloc(n * sizeof *before), *after = malloc(n * sizeof *after);
    cr_assert(before && after);
    CK_OK(ctx, ck_model_get_weights(m, before, n, NULL));
    float x[4 * 25];
    for (int i = 0; i < 100; ++i)
        x[i] = (float)((i * 7) % 11) / 11.0f;
    const int32_t y[4] = {0, 1, 2, 1};
    ck_step_result r;
    CK_OK(ctx, ck_model_train_step(m, x, y, 4, &r));
    CK_OK(ctx, ck_model_train_step(m, x, y, 4, &r));
    CK_OK(ctx, ck_model_get_weights(m, after, n, NULL));
    cr_assert_eq(memcmp(before, after, n * sizeof *before), 0, "a step with learning rate 0 moved");
    ck_optimizer_desc o;
    CK_OK(ctx, ck_optimizer_desc_init(&o, CK_OPT_ADAM));
    o.learning_rate = -1e-3f;
    cr_assert_eq(ck_model_set_optimizer(m, &o), CK_STATUS_BAD_PARAM);
    o.learning_rate = 0.0f;
    CK_OK(ctx, ck_model_set_optimizer(m, &o));
    free(before);
    free(after);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}
