/* The README's guarantees that did not hold (issue 12, items 10-12): non-finite values (which
 * calls check, ck_tensor_check_finite, BN running statistics, set_weights, checkpoints, model
 * outputs), ALLOC_FAILED for a model over the host allocation limit, and objects used after
 * their context was destroyed. */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "ck_math.h"
#include "cnnkit/model.h"

#define EXPECT(ctx, expr, status, needle)                                                          \
    do {                                                                                           \
        ck_status st_ = (expr);                                                                    \
        cr_assert_eq(st_, status, "%s -> %s (%s), expected %s", #expr, ck_status_string(st_),      \
                     ck_context_last_error(ctx), ck_status_string(status));                        \
        cr_assert_neq(strstr(ck_context_last_error(ctx), needle), NULL,                            \
                      "message '%s' does not name '%s'", ck_context_last_error(ctx), needle);      \
    } while (0)

static const char DENSE_MODEL[] = "model = Sequential()\n"
                                  "model.add(Flatten(input_shape=(4, 4, 1)))\n"
                                  "model.add(Dense(3, activation='softmax'))\n";

static ck_model *dense_model(ck_context *ctx) {
    return t_model(ctx, DENSE_MODEL, 4);
}

static float *weights(ck_context *ctx, ck_model *m, size_t *n) {
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, n));
    float *w = (float *)malloc(*n * sizeof *w);
    CK_OK(ctx, ck_model_get_weights(m, w, *n, NULL));
    return w;
}

Test(guarantees, tensor_check_finite_names_the_first_bad_element) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_tensor *t = NULL;
    CK_OK(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NHWC, 2, 3, 2, 2));
    float v[24];
    for (int i = 0; i < 24; ++i)
        v[i] = (float)i - 12.0f;
    CK_OK(ctx, ck_tensor_upload(ctx, t, v, 24)); /* upload does not check (documented) */
    size_t idx = 99;
    CK_OK(ctx, ck_tensor_check_finite(ctx, t, &idx));
    cr_assert_eq(idx, 99, "index written on success");
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    for (int b = 0; b < 3; ++b) {
        v[17] = bad[b];
        v[20] = NAN;
        CK_OK(ctx, ck_tensor_upload(ctx, t, v, 24));
        EXPECT(ctx, ck_tensor_check_finite(ctx, t, &idx), CK_STATUS_BAD_PARAM, "t[17]");
        cr_assert_eq(idx, 17);
    }
    cr_assert_eq(ck_tensor_check_finite(ctx, NULL, NULL), CK_STATUS_BAD_PARAM);
    ck_tensor_destroy(t);
    ck_context_destroy(ctx);
}

/* A NaN in x used to poison running_mean/var with SUCCESS: now the CPU call refuses it and
 * writes nothing; the shared running-update (the device kernel's too) keeps a non-finite batch
 * statistic out of the moving statistics. */
Test(guarantees, batchnorm_nan_input_leaves_running_statistics) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int C = 3;
    float xv[2 * 3 * 2 * 2];
    for (int i = 0; i < 24; ++i)
        xv[i] = 0.1f * (float)(i % 7);
    xv[2 * 4 + 1] = NAN; /* NCHW: sample 0, channel 2 */
    ck_tensor *x = t_tensor_from_nchw(ctx, CK_LAYOUT_NCHW, 2, C, 2, 2, xv);
    ck_tensor *y = t_tensor_from_nchw(ctx, CK_LAYOUT_NCHW, 2, C, 2, 2, xv);
    const float ones[3] = {1, 1, 1}, zeros[3] = {0, 0, 0}, sent[3] = {7, 7, 7};
    ck_tensor *g = t_param(ctx, C, ones), *b = t_param(ctx, C, zeros);
    ck_tensor *rm = t_param(ctx, C, zeros), *rv = t_param(ctx, C, ones);
    ck_tensor *sm = t_param(ctx, C, sent), *si = t_param(ctx, C, sent);
    ck_bn_desc d;
    CK_OK(ctx, ck_bn_desc_init(&d, CK_BN_KERAS));
    float yv0[24];
    CK_OK(ctx, ck_tensor_download(ctx, y, yv0, 24));
    EXPECT(ctx, ck_batchnorm_forward_training(ctx, &d, x, g, b, rm, rv, sm, si, NULL, y, NULL),
           CK_STATUS_BAD_PARAM, "channel 2");
    float got[3], yv[24];
    t_param_get(ctx, rm, got);
    cr_assert(got[0] == 0 && got[1] == 0 && got[2] == 0, "running_mean changed");
    t_param_get(ctx, rv, got);
    cr_assert(got[0] == 1 && got[1] == 1 && got[2] == 1, "running_var changed");
    t_param_get(ctx, sm, got);
    cr_assert(got[0] == 7 && got[2] == 7, "saved_mean changed");
    CK_OK(ctx, ck_tensor_download(ctx, y, yv, 24));
    cr_assert_eq(memcmp(yv, yv0, sizeof yv), 0, "y changed");
    /* the update itself */
    cr_assert_eq(ck_running_update(2.0f, NAN, 0.5f), 2.0f);
    cr_assert_eq(ck_running_update(2.0f, INFINITY, 0.5f), 2.0f);
    cr_assert_eq(ck_running_update(2.0f, 4.0f, 0.5f), 3.0f);
    ck_tensor *all[] = {x, y, g, b, rm, rv, sm, si};
    for (int i = 0; i < 8; ++i)
        ck_tensor_destroy(all[i]);
    ck_context_destroy(ctx);
}

Test(guarantees, set_weights_refuses_non_finite_with_the_index) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = dense_model(ctx);
    size_t n;
    float *w0 = weights(ctx, m, &n), *w = (float *)malloc(n * sizeof *w);
    memcpy(w, w0, n * sizeof *w);
    for (size_t i = 0; i < n; ++i)
        w[i] += 0.5f;
    w[n - 2] = NAN; /* a bias */
    EXPECT(ctx, ck_model_set_weights(m, w, n), CK_STATUS_BAD_PARAM, "host[49]");
    float *w1 = weights(ctx, m, &n);
    cr_assert_eq(memcmp(w0, w1, n * sizeof *w0), 0, "a refused set_weights changed weights");
    free(w0);
    free(w1);
    free(w);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* Finite weights can still overflow: biases of -3e38 and one Adam step of learning rate 1e38
 * push some to -Inf (the update is not checked, the next calls are): predict and evaluate refuse
 * the non-finite output, save refuses to write the state, and a checkpoint file holding NaN
 * (with a valid CRC) is refused by load. */
Test(guarantees, no_success_with_non_finite_outputs_or_state) {
    char path[] = "/tmp/cnnkit-nan-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = dense_model(ctx);
    CK_OK(ctx, ck_model_save(m, path)); /* a good file, corrupted below */
    ck_optimizer_desc opt;
    CK_OK(ctx, ck_optimizer_desc_init(&opt, CK_OPT_ADAM));
    opt.learning_rate = 1e38f;
    CK_OK(ctx, ck_model_set_optimizer(m, &opt));
    size_t n;
    float *w = weights(ctx, m, &n);
    for (size_t i = 48; i < 51; ++i)
        w[i] = -3e38f;
    CK_OK(ctx, ck_model_set_weights(m, w, n));
    float x[4 * 16], probs[4 * 3];
    int32_t y[4] = {0, 1, 2, 0};
    for (int i = 0; i < 64; ++i)
        x[i] = 0.01f * (float)(i % 5);
    ck_step_result r;
    CK_OK(ctx, ck_model_train_step(m, x, y, 4, &r)); /* finite loss: logits are shifted */
    free(w);
    w = weights(ctx, m, &n);
    int infs = 0;
    for (size_t i = 0; i < n; ++i)
        infs += isinf(w[i]) != 0;
    cr_assert_gt(infs, 0, "the step did not overflow a bias: the test is not testing");
    EXPECT(ctx, ck_model_predict(m, x, 4, probs), CK_STATUS_BAD_PARAM, "is not finite");
    EXPECT(ctx, ck_model_evaluate(m, x, y, 4, &r), CK_STATUS_BAD_PARAM, "is not finite");
    EXPECT(ctx, ck_model_save(m, "/tmp/cnnkit-never-written.ckpt"), CK_STATUS_BAD_PARAM,
           "parameter 48");
    cr_assert_eq(access("/tmp/cnnkit-never-written.ckpt", F_OK), -1);
    ck_model_destroy(m);
    /* a file with NaN in its weights and a correct CRC */
    FILE *f = fopen(path, "r+b");
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    unsigned char *buf = (unsigned char *)malloc((size_t)size);
    fseek(f, 0, SEEK_SET);
    cr_assert_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
    /* the params start after structure + optimizer/step/seed/fit; the first 51 floats before
     * the fixed/m/v arrays are the parameters: put NaN in the last parameter */
    const size_t arrays = 3 * 51 * sizeof(float); /* params, m, v (no BN: no fixed) */
    const size_t p_last = (size_t)size - 4 - arrays + 50 * sizeof(float);
    const float nan = NAN;
    memcpy(buf + p_last, &nan, 4);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, buf, (uInt)(size - 4));
    const uint32_t c32 = (uint32_t)crc;
    memcpy(buf + size - 4, &c32, 4);
    fseek(f, 0, SEEK_SET);
    cr_assert_eq(fwrite(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    free(buf);
    m = dense_model(ctx);
    float *before = weights(ctx, m, &n);
    EXPECT(ctx, ck_model_load(m, path), CK_STATUS_BAD_PARAM, "non-finite parameter (index 50)");
    free(w);
    w = weights(ctx, m, &n);
    cr_assert_eq(memcmp(w, before, n * sizeof *w), 0, "a refused load changed the model");
    free(w);
    free(before);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    unlink(path);
}

/* Over the host allocation limit the build fails with ALLOC_FAILED and names the limit; sizes
 * past what the machine can address fail the same way instead of wrapping around. */
Test(guarantees, model_build_over_the_limit_is_alloc_failed) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = NULL;
    char err[256];
    CK_OK(ctx, ck_model_from_keras_text(ctx, DENSE_MODEL, &m, err, sizeof err));
    CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, ck_context_host_alloc_bytes(ctx) + 100));
    EXPECT(ctx, ck_model_build(m, 0, 0, 0, 4), CK_STATUS_ALLOC_FAILED, "host allocation limit");
    CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, 0));
    ck_model_destroy(m);
    CK_OK(ctx, ck_model_from_keras_text(ctx,
                                        "model = Sequential()\n"
                                        "model.add(Conv2D(2000000000, (3, 3), input_shape=(1000, "
                                        "1000, 1)))\n"
                                        "model.add(GlobalAveragePooling2D())\n"
                                        "model.add(Dense(10))\n",
                                        &m, err, sizeof err));
    const size_t base = ck_context_host_alloc_bytes(ctx);
    EXPECT(ctx, ck_model_build(m, 0, 0, 0, 1 << 30), CK_STATUS_ALLOC_FAILED,
           "more than this machine can address");
    cr_assert_eq(ck_context_host_alloc_bytes(ctx), base, "the failed build kept memory");
    ck_model_destroy(m);
    cr_assert_eq(ck_context_host_alloc_bytes(ctx), 0);
    ck_context_destroy(ctx);
}

/* Objects used after their context was destroyed: refused, and destroying them later is safe
 * (under ASan: no read of the freed context). */
Test(guarantees, use_after_context_destroy_is_refused) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = dense_model(ctx);
    ck_tensor *t = NULL;
    ck_workspace *ws = NULL;
    ck_mask *mask = NULL;
    CK_OK(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NCHW, 1, 1, 2, 2));
    CK_OK(ctx, ck_workspace_create(ctx, &ws, 64));
    CK_OK(ctx, ck_mask_create(ctx, &mask, CK_DROPOUT_SPATIAL, 1, 2, 2, 2));
    ck_context_destroy(ctx);
    float x[16] = {0}, probs[3];
    int32_t y[1] = {0};
    ck_step_result r;
    size_t n;
    cr_assert_eq(ck_model_train_step(m, x, y, 1, &r), CK_STATUS_BAD_PARAM);
    /* no context to hold the message: it is the thread's, as for a failed creation */
    cr_assert(strstr(ck_context_last_error(NULL), "context was destroyed"), "%s",
              ck_context_last_error(NULL));
    cr_assert_eq(ck_model_predict(m, x, 1, probs), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_save(m, "/tmp/cnnkit-orphan.ckpt"), CK_STATUS_BAD_PARAM);
    cr_assert_eq(access("/tmp/cnnkit-orphan.ckpt", F_OK), -1);
    cr_assert_eq(ck_model_save_keras(m, "/tmp/cnnkit-orphan.keras"), CK_STATUS_BAD_PARAM);
    cr_assert_eq(access("/tmp/cnnkit-orphan.keras", F_OK), -1);
    cr_assert_eq(ck_model_load_keras_weights(m, "/tmp/cnnkit-orphan.weights.h5"),
                 CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_get_weights(m, NULL, 0, &n), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_summary(m, NULL, 0, &n), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_num_layers(m), 0);
    cr_assert_eq(ck_model_num_classes(m), 0);
    /* a tensor of the dead context with a live one: refused by name */
    ck_context *c2 = t_ctx(CK_DEVICE_CPU);
    float v[4];
    EXPECT(c2, ck_tensor_download(c2, t, v, 4), CK_STATUS_BAD_PARAM,
           "t: its context was destroyed");
    EXPECT(c2, ck_tensor_fill(c2, t, 1.0f), CK_STATUS_BAD_PARAM, "context was destroyed");
    uint8_t mv[4];
    EXPECT(c2, ck_mask_download(c2, mask, mv, 4), CK_STATUS_BAD_PARAM, "context was destroyed");
    cr_assert_eq(ck_tensor_data(t), NULL);
    ck_model_destroy(m);
    ck_tensor_destroy(t);
    ck_workspace_destroy(ws);
    ck_mask_destroy(mask);
    /* the other order still works and accounts every byte */
    ck_tensor *t2 = NULL;
    CK_OK(c2, ck_tensor_create(c2, &t2, CK_LAYOUT_NCHW, 1, 1, 2, 2));
    ck_model *m2 = dense_model(c2);
    ck_model_destroy(m2);
    ck_tensor_destroy(t2);
    cr_assert_eq(ck_context_host_alloc_bytes(c2), 0);
    ck_context_destroy(c2);
}
