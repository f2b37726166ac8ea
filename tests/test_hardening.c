/* Hardening (issue 6): out-of-memory through the context's host allocation limit, a bad-input
 * matrix beyond test_errors.c (model, data, masks, 32-bit overflow, NaN/Inf), bit-identical
 * training for a seed (CPU; GPU when present), and checkpoints that survive a SIGKILL during save.
 * Every failure must be a status with a message, no crash, nothing written, and the objects stay
 * usable afterwards. */
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cnnkit/data.h"
#include "cnnkit/model.h"

#define CK_MSG_LEN 512

#define EXPECT_ST(ctx, expr, status, needle)                                                       \
    do {                                                                                           \
        ck_status st_ = (expr);                                                                    \
        cr_assert_eq(st_, status, "%s -> %s (%s), expected %s", #expr, ck_status_string(st_),      \
                     ck_context_last_error(ctx), ck_status_string(status));                        \
        if (needle)                                                                                \
            cr_assert_neq(strstr(ck_context_last_error(ctx), needle), NULL,                        \
                          "message '%s' does not name '%s'", ck_context_last_error(ctx), needle);  \
    } while (0)

/* A small classifier on 6x6x1 images (conv, BN, relu, spatial dropout, dense softmax). */
static const char SMALL_MODEL[] = "model = Sequential()\n"
                                  "model.add(Conv2D(3, (3, 3), input_shape=(6, 6, 1)))\n"
                                  "model.add(BatchNormalization())\n"
                                  "model.add(Activation('relu'))\n"
                                  "model.add(SpatialDropout2D(0.3))\n"
                                  "model.add(Flatten())\n"
                                  "model.add(Dense(4, activation='softmax'))\n";

static ck_model *from_text(ck_context *ctx, const char *text) {
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg));
    return m;
}

static void make_batch(float *x, int32_t *y, int n, int pixels, int classes, uint64_t seed) {
    trng r = {seed};
    for (int i = 0; i < n; ++i) {
        y[i] = (int32_t)(trng_u32(&r) % (uint32_t)classes);
        for (int p = 0; p < pixels; ++p)
            x[(size_t)i * pixels + p] =
                0.5f + 0.3f * sinf(0.3f * (float)(y[i] + 1) * (float)p) + 0.05f * trng_normal(&r);
    }
}

/* ---- out of memory: the allocation limit hook ---------------------------------------------- */

Test(hardening, alloc_limit_tensors_masks_workspaces) {
    cr_assert_eq(ck_context_set_host_alloc_limit(NULL, 1), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_context_host_alloc_bytes(NULL), 0);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    cr_assert_eq(ck_context_host_alloc_bytes(ctx), 0);
    ck_tensor *a = NULL;
    CK_OK(ctx, ck_tensor_create(ctx, &a, CK_LAYOUT_NCHW, 2, 3, 4, 4));
    const size_t used = ck_context_host_alloc_bytes(ctx);
    cr_assert_geq(used, 96 * sizeof(float), "the tensor's data is counted");

    CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, used + 64));
    ck_tensor *t = (ck_tensor *)0x1;
    EXPECT_ST(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NHWC, 2, 3, 4, 4), CK_STATUS_ALLOC_FAILED,
              "limit");
    cr_assert_null(t, "a failed create must set *t = NULL");
    cr_assert_neq(strstr(ck_context_last_error(ctx), "t:"), NULL, "%s", ck_context_last_error(ctx));
    cr_assert_eq(ck_context_host_alloc_bytes(ctx), used, "a failed create leaked");
    ck_mask *m = (ck_mask *)0x1;
    EXPECT_ST(ctx, ck_mask_create(ctx, &m, CK_DROPOUT_ELEMENT, 64, 64, 8, 8),
              CK_STATUS_ALLOC_FAILED, "mask");
    cr_assert_null(m);
    ck_workspace *ws = (ck_workspace *)0x1;
    EXPECT_ST(ctx, ck_workspace_create(ctx, &ws, 1 << 20), CK_STATUS_ALLOC_FAILED, "ws");
    cr_assert_null(ws);
    cr_assert_eq(ck_context_host_alloc_bytes(ctx), used);
    /* the existing tensor still works under the limit (no allocation needed) */
    float v[96];
    CK_OK(ctx, ck_tensor_fill(ctx, a, 2.0f));
    CK_OK(ctx, ck_tensor_download(ctx, a, v, 96));
    cr_assert_eq(v[95], 2.0f);

    /* element-mask download needs a host scratch: fails cleanly and writes nothing */
    CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, 0));
    CK_OK(ctx, ck_mask_create(ctx, &m, CK_DROPOUT_ELEMENT, 2, 3, 4, 4));
    ck_dropout_desc d = {0.5f, 3, 0};
    CK_OK(ctx, ck_dropout_forward(ctx, &d, CK_MODE_TRAINING, a, a, m));
    CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, ck_context_host_alloc_bytes(ctx)));
    uint8_t keep[96];
    memset(keep, 7, sizeof keep);
    EXPECT_ST(ctx, ck_mask_download(ctx, m, keep, 96), CK_STATUS_ALLOC_FAILED, "mask");
    for (int i = 0; i < 96; ++i)
        cr_assert_eq(keep[i], 7, "a failed download wrote host[%d]", i);
    /* lifting the limit: everything works again */
    CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, 0));
    CK_OK(ctx, ck_mask_download(ctx, m, keep, 96));
    CK_OK(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NHWC, 2, 3, 4, 4));
    CK_OK(ctx, ck_workspace_create(ctx, &ws, 1 << 20));
    ck_workspace_destroy(ws);
    ck_tensor_destroy(t);
    ck_mask_destroy(m);
    ck_tensor_destroy(a);
    cr_assert_eq(ck_context_host_alloc_bytes(ctx), 0, "everything was given back");
    ck_context_destroy(ctx);
}

Test(hardening, alloc_limit_batchnorm_and_dropout) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    float xv[2 * 5 * 3 * 3];
    trng r = {5};
    trng_fill(&r, xv, 90, -1, 1);
    ck_tensor *x = t_tensor_from_nchw(ctx, CK_LAYOUT_NHWC, 2, 5, 3, 3, xv);
    ck_tensor *y = t_tensor_from_nchw(ctx, CK_LAYOUT_NHWC, 2, 5, 3, 3, NULL);
    const float ones[5] = {1, 1, 1, 1, 1};
    ck_tensor *g = t_param(ctx, 5, ones), *b = t_param(ctx, 5, ones), *rm = t_param(ctx, 5, ones),
              *rv = t_param(ctx, 5, ones), *sm = t_param(ctx, 5, ones), *si = t_param(ctx, 5, ones);
    CK_OK(ctx, ck_tensor_fill(ctx, y, -7.0f));
    ck_bn_desc bn;
    CK_OK(ctx, ck_bn_desc_init(&bn, CK_BN_KERAS));
    bn.activation = CK_ACT_RELU;
    ck_dropout_desc sd = {0.4f, 9, 0};

    /* no room for the per-channel scratch: a status, and y / running stats untouched */
    CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, ck_context_host_alloc_bytes(ctx)));
    EXPECT_ST(ctx, ck_batchnorm_forward_training(ctx, &bn, x, g, b, rm, rv, sm, si, &sd, y, NULL),
              CK_STATUS_ALLOC_FAILED, "x:");
    cr_assert_neq(strstr(ck_context_last_error(ctx), "limit"), NULL);
    float yv[90], rmv[5];
    t_tensor_to_nchw(ctx, y, yv);
    t_param_get(ctx, rm, rmv);
    for (int i = 0; i < 90; ++i)
        cr_assert_eq(yv[i], -7.0f, "a failed BN forward wrote y[%d]", i);
    cr_assert_eq(memcmp(rmv, ones, sizeof ones), 0, "a failed BN forward moved running_mean");
    EXPECT_ST(ctx, ck_batchnorm_forward_inference(ctx, &bn, x, g, b, rm, rv, y),
              CK_STATUS_ALLOC_FAILED, "x:");
    EXPECT_ST(ctx, ck_batchnorm_backward(ctx, &bn, x, y, g, b, sm, si, &sd, y, rm, rv, NULL),
              CK_STATUS_ALLOC_FAILED, "x:");

    /* dropout's scratch is optional: under the limit it gives the same bits */
    float y1[90], y2[90];
    CK_OK(ctx, ck_spatial_dropout_forward(ctx, &sd, CK_MODE_TRAINING, x, y, NULL));
    t_tensor_to_nchw(ctx, y, y1);
    CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, 0));
    CK_OK(ctx, ck_spatial_dropout_forward(ctx, &sd, CK_MODE_TRAINING, x, y, NULL));
    t_tensor_to_nchw(ctx, y, y2);
    cr_assert_eq(memcmp(y1, y2, sizeof y1), 0, "dropout under the limit differs");
    /* lifted: BN runs */
    CK_OK(ctx, ck_batchnorm_forward_training(ctx, &bn, x, g, b, rm, rv, sm, si, &sd, y, NULL));
    ck_tensor *all[] = {x, y, g, b, rm, rv, sm, si};
    for (int i = 0; i < 8; ++i)
        ck_tensor_destroy(all[i]);
    cr_assert_eq(ck_context_host_alloc_bytes(ctx), 0);
    ck_context_destroy(ctx);
}

/* Every limit from 0 up to what the build needs: the build fails with a status and gives back
 * every byte, or succeeds; after each failure, lifting the limit and building again works. */
Test(hardening, alloc_limit_model_build_sweep) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *probe = from_text(ctx, t_seed_cnn_text);
    const size_t base0 = ck_context_host_alloc_bytes(ctx);
    CK_OK(ctx, ck_model_build(probe, 0, 0, 0, 4));
    const size_t need = ck_context_host_alloc_bytes(ctx) - base0;
    cr_assert_gt(need, 1000000, "the seed model's buffers are counted (%zu bytes)", need);
    size_t nw = 0;
    float *w_ref = t_weights_of(ctx, probe, &nw);
    ck_model_destroy(probe);
    cr_assert_eq(ck_context_host_alloc_bytes(ctx), 0);

    int failures = 0;
    for (int k = 0; k <= 16; ++k) {
        ck_model *m = from_text(ctx, t_seed_cnn_text);
        const size_t base = ck_context_host_alloc_bytes(ctx);
        const size_t limit = base + (k == 16 ? need : need / 16 * (size_t)k) + 1;
        CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, limit));
        ck_status st = ck_model_build(m, 0, 0, 0, 4);
        char msg[CK_MSG_LEN];
        snprintf(msg, sizeof msg, "%s", ck_context_last_error(ctx));
        CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, 0));
        if (st != CK_STATUS_SUCCESS) {
            ++failures;
            cr_assert_eq(st, CK_STATUS_ALLOC_FAILED, "limit %zu: %s (%s)", limit,
                         ck_status_string(st), msg);
            cr_assert_neq(strstr(msg, "model"), NULL, "limit %zu: '%s'", limit, msg);
            cr_assert_eq(ck_context_host_alloc_bytes(ctx), base,
                         "limit %zu: the failed build kept %zu bytes", limit,
                         ck_context_host_alloc_bytes(ctx) - base);
            size_t tmp;
            cr_assert_neq(ck_model_get_weights(m, NULL, 0, &tmp), CK_STATUS_SUCCESS,
                          "a failed build left the model marked built");
            CK_OK(ctx, ck_model_build(m, 0, 0, 0, 4)); /* lifted: the same model builds */
        }
        /* and it is the model a clean build gives, and it trains */
        size_t n2 = 0;
        float *w = t_weights_of(ctx, m, &n2);
        cr_assert_eq(n2, nw);
        cr_assert_eq(memcmp(w, w_ref, nw * sizeof *w), 0, "limit %zu: other initial weights",
                     limit);
        free(w);
        float x[4 * 784];
        int32_t y[4];
        make_batch(x, y, 4, 784, 10, 1);
        ck_step_result r;
        CK_OK(ctx, ck_model_train_step(m, x, y, 4, &r));
        ck_model_destroy(m);
        cr_assert_eq(ck_context_host_alloc_bytes(ctx), 0);
    }
    cr_assert_geq(failures, 16, "the limit did not bite (%d failures)", failures);
    free(w_ref);
    ck_context_destroy(ctx);
}

Test(hardening, alloc_limit_model_add_step_checkpoint) {
    char dir[] = "/tmp/cnnkit-hard-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof path, "%s/m.ckpt", dir);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);

    /* ck_model_add grows its layer table: under the limit it fails and keeps the layers */
    ck_model *m = NULL;
    CK_OK(ctx, ck_model_create(ctx, &m));
    ck_layer_desc d;
    CK_OK(ctx, ck_layer_desc_init(&d, CK_LAYER_FLATTEN));
    CK_OK(ctx, ck_model_add(m, &d));
    CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, ck_context_host_alloc_bytes(ctx)));
    for (int i = 1; i < 16; ++i) /* the first growth holds 16 layers */
        CK_OK(ctx, ck_model_add(m, &d));
    EXPECT_ST(ctx, ck_model_add(m, &d), CK_STATUS_ALLOC_FAILED, "model");
    cr_assert_eq(ck_model_num_layers(m), 16);
    CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, 0));
    CK_OK(ctx, ck_model_add(m, &d));
    cr_assert_eq(ck_model_num_layers(m), 17);
    ck_model_destroy(m);

    m = from_text(ctx, SMALL_MODEL);
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 8));
    float x[8 * 36];
    int32_t y[8];
    make_batch(x, y, 8, 36, 4, 2);
    ck_step_result r;
    CK_OK(ctx, ck_model_train_step(m, x, y, 8, &r));
    CK_OK(ctx, ck_model_save(m, path));
    struct stat st0;
    cr_assert_eq(stat(path, &st0), 0);
    size_t nw = 0;
    float *w_saved = t_weights_of(ctx, m, &nw);

    /* no room for a training step's per-call scratch: it fails and the model is unchanged */
    CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, ck_context_host_alloc_bytes(ctx)));
    ck_status sst = ck_model_train_step(m, x, y, 8, &r);
    if (sst != CK_STATUS_SUCCESS) {
        cr_assert_eq(sst, CK_STATUS_ALLOC_FAILED, "%s", ck_context_last_error(ctx));
        cr_assert_neq(strstr(ck_context_last_error(ctx), "limit"), NULL, "%s",
                      ck_context_last_error(ctx));
        size_t nx;
        float *wx = t_weights_of(ctx, m, &nx);
        cr_assert_eq(memcmp(wx, w_saved, nx * sizeof *wx), 0, "a failed step changed the model");
        free(wx);
        cr_assert_eq(ck_model_step(m), 1);
    }
    float probs[8 * 4];
    (void)ck_model_predict(m, x, 8, probs); /* a status either way, never a crash */
    /* save needs a serialization buffer: fails, the old checkpoint is intact, no temp left */
    EXPECT_ST(ctx, ck_model_save(m, path), CK_STATUS_ALLOC_FAILED, "limit");
    struct stat st1;
    cr_assert_eq(stat(path, &st1), 0);
    cr_assert_eq(st1.st_size, st0.st_size);
    cr_assert_eq(st1.st_mtime, st0.st_mtime);
    DIR *dd = opendir(dir);
    int entries = 0;
    for (struct dirent *e; (e = readdir(dd));)
        entries += e->d_name[0] != '.';
    closedir(dd);
    cr_assert_eq(entries, 1, "a failed save left a file behind");
    /* load needs a read buffer: fails, the model is unchanged */
    size_t n1;
    float *w_before = t_weights_of(ctx, m, &n1);
    const long long step = ck_model_step(m);
    EXPECT_ST(ctx, ck_model_load(m, path), CK_STATUS_ALLOC_FAILED, "limit");
    float *w_after = t_weights_of(ctx, m, &n1);
    cr_assert_eq(memcmp(w_before, w_after, n1 * sizeof(float)), 0, "a failed load changed weights");
    cr_assert_eq(ck_model_step(m), step);
    /* lifted: load gives back the saved state */
    CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, 0));
    CK_OK(ctx, ck_model_load(m, path));
    free(w_after);
    w_after = t_weights_of(ctx, m, &n1);
    cr_assert_eq(memcmp(w_saved, w_after, n1 * sizeof(float)), 0);
    cr_assert_eq(ck_model_step(m), 1);
    CK_OK(ctx, ck_model_train_step(m, x, y, 8, &r));
    CK_OK(ctx, ck_model_save(m, path));
    free(w_saved);
    free(w_before);
    free(w_after);
    ck_model_destroy(m);
    cr_assert_eq(ck_context_host_alloc_bytes(ctx), 0);
    ck_context_destroy(ctx);
    unlink(path);
    rmdir(dir);
}

/* ---- bad inputs beyond test_errors.c ------------------------------------------------------- */

Test(hardening, null_and_foreign_arguments) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU), *other = t_ctx(CK_DEVICE_CPU);
    ck_tensor *t = NULL, *o = NULL;
    CK_OK(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NCHW, 1, 2, 3, 4));
    CK_OK(other, ck_tensor_create(other, &o, CK_LAYOUT_NCHW, 1, 2, 3, 4));
    /* NULL context everywhere */
    float buf[24] = {0};
    cr_assert_eq(ck_tensor_upload(NULL, t, buf, 24), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_tensor_fill(NULL, t, 1.0f), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_tensor_copy(NULL, t, t), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_workspace_create(NULL, NULL, 1), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_mask_create(NULL, NULL, CK_DROPOUT_SPATIAL, 1, 1, 1, 1), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_context_set_seed(NULL, 1), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_context_synchronize(NULL), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_batchnorm_workspace_size(NULL, t, NULL), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_bn_desc_init(NULL, CK_BN_KERAS), CK_STATUS_BAD_PARAM);
    ck_bn_desc bd;
    cr_assert_eq(ck_bn_desc_init(&bd, (ck_bn_convention)7), CK_STATUS_BAD_PARAM);
    /* getters accept NULL */
    cr_assert_eq(ck_tensor_count(NULL), 0);
    cr_assert_null(ck_tensor_data(NULL));
    int n = -1;
    ck_tensor_shape(NULL, &n, NULL, NULL, NULL);
    cr_assert_eq(n, 0);
    ck_tensor_destroy(NULL);
    ck_mask_destroy(NULL);
    ck_workspace_destroy(NULL);
    ck_context_destroy(NULL);
    /* NULL and foreign tensors */
    EXPECT_ST(ctx, ck_tensor_fill(ctx, NULL, 1.0f), CK_STATUS_BAD_PARAM, "t:");
    EXPECT_ST(ctx, ck_tensor_fill(ctx, o, 1.0f), CK_STATUS_DEVICE_MISMATCH, "t:");
    EXPECT_ST(ctx, ck_tensor_copy(ctx, o, t), CK_STATUS_DEVICE_MISMATCH, "src");
    EXPECT_ST(ctx, ck_tensor_copy(ctx, t, NULL), CK_STATUS_BAD_PARAM, "dst");
    ck_mask *m = NULL;
    CK_OK(other, ck_mask_create(other, &m, CK_DROPOUT_SPATIAL, 1, 2, 3, 4));
    uint8_t keep[2];
    EXPECT_ST(ctx, ck_mask_download(ctx, m, keep, 2), CK_STATUS_DEVICE_MISMATCH, "mask");
    EXPECT_ST(other, ck_mask_download(other, m, NULL, 2), CK_STATUS_BAD_PARAM, "host");
    EXPECT_ST(other, ck_mask_download(other, m, keep, 3), CK_STATUS_SHAPE_MISMATCH, "count");
    EXPECT_ST(other, ck_mask_download(other, NULL, keep, 2), CK_STATUS_BAD_PARAM, "mask");
    ck_dropout_desc d = {0.5f, 0, 0};
    EXPECT_ST(ctx, ck_spatial_dropout_forward(ctx, &d, CK_MODE_TRAINING, t, t, m),
              CK_STATUS_DEVICE_MISMATCH, "mask_out");
    ck_mask_destroy(m);
    ck_tensor_destroy(t);
    ck_tensor_destroy(o);
    ck_context_destroy(other);
    ck_context_destroy(ctx);
}

Test(hardening, sizes_zero_negative_and_overflowing) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_mask *m = (ck_mask *)0x1;
    EXPECT_ST(ctx, ck_mask_create(ctx, &m, CK_DROPOUT_SPATIAL, 0, 1, 1, 1), CK_STATUS_BAD_PARAM,
              "shape");
    cr_assert_null(m);
    EXPECT_ST(ctx, ck_mask_create(ctx, &m, CK_DROPOUT_ELEMENT, 65536, 65536, 1, 2),
              CK_STATUS_OVERFLOW, "2^31");
    ck_tensor *t = NULL;
    EXPECT_ST(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NHWC, 1, 1, 46341, 46341),
              CK_STATUS_OVERFLOW, "2^31");
    EXPECT_ST(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NHWC, INT32_MAX, INT32_MAX, INT32_MAX, 2),
              CK_STATUS_OVERFLOW, "2^31");
    EXPECT_ST(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NHWC, 1, 1, 1, INT32_MIN),
              CK_STATUS_BAD_PARAM, "shape");
    /* 2^31 - 1 elements exactly is allowed by the check (not allocated here: a 1-element probe) */
    uint8_t keep[4];
    ck_dropout_desc d = {0.5f, 0, 0};
    cr_assert_eq(ck_dropout_mask_host(CK_DROPOUT_SPATIAL, 0, &d, -1, 2, 1, 1, keep, 4),
                 CK_STATUS_BAD_PARAM);
    cr_assert_eq(
        ck_dropout_mask_host(CK_DROPOUT_ELEMENT, 0, &d, 65536, 65536, 65536, 65536, keep, 4),
        CK_STATUS_OVERFLOW);
    cr_assert_eq(ck_dropout_mask_host((ck_dropout_kind)3, 0, &d, 1, 1, 1, 1, keep, 1),
                 CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_dropout_mask_host(CK_DROPOUT_SPATIAL, 0, &d, 1, 1, 1, 1, NULL, 1),
                 CK_STATUS_BAD_PARAM);

    /* models: zero / negative / absurd input shapes and batches give a status */
    ck_model *mod = from_text(ctx, SMALL_MODEL);
    EXPECT_ST(ctx, ck_model_build(mod, 6, 6, 1, 0), CK_STATUS_BAD_PARAM, "max_batch");
    EXPECT_ST(ctx, ck_model_build(mod, 6, -6, 1, 2), CK_STATUS_BAD_PARAM, "h, w, c");
    EXPECT_ST(ctx, ck_model_build(mod, 0, 6, 1, 2), CK_STATUS_BAD_PARAM, "h, w, c");
    /* activations of 2^16 x 2^16 images x 2^10 samples: far past memory and 32-bit indices */
    CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, (size_t)1 << 30));
    ck_status st = ck_model_build(mod, 65536, 65536, 1, 1024);
    cr_assert(st == CK_STATUS_OVERFLOW || st == CK_STATUS_ALLOC_FAILED ||
                  st == CK_STATUS_BAD_PARAM || st == CK_STATUS_NOT_SUPPORTED,
              "huge build -> %s (%s)", ck_status_string(st), ck_context_last_error(ctx));
    cr_assert_neq(ck_context_last_error(ctx)[0], '\0');
    CK_OK(ctx, ck_context_set_host_alloc_limit(ctx, 0));
    CK_OK(ctx, ck_model_build(mod, 0, 0, 0, 4)); /* still usable */
    float x[4 * 36] = {0};
    int32_t y[4] = {0, 1, 2, 3};
    EXPECT_ST(ctx, ck_model_train_step(mod, x, y, 0, NULL), CK_STATUS_BAD_PARAM, "n:");
    EXPECT_ST(ctx, ck_model_train_step(mod, x, y, -3, NULL), CK_STATUS_BAD_PARAM, "n:");
    cr_assert_eq(ck_model_train_step(mod, x, NULL, 4, NULL), CK_STATUS_BAD_PARAM);
    y[2] = -1;
    EXPECT_ST(ctx, ck_model_train_step(mod, x, y, 4, NULL), CK_STATUS_BAD_PARAM, "labels[2]");
    y[2] = 2;
    ck_step_result r;
    cr_assert_neq(ck_model_evaluate(mod, x, y, 0, &r), CK_STATUS_SUCCESS);
    cr_assert_neq(ck_model_predict(mod, x, 4, NULL), CK_STATUS_SUCCESS);
    cr_assert_neq(ck_model_predict(mod, NULL, 4, x), CK_STATUS_SUCCESS);
    size_t need = 0;
    CK_OK(ctx, ck_model_get_weights(mod, NULL, 0, &need));
    float *w = malloc(need * sizeof *w);
    EXPECT_ST(ctx, ck_model_get_weights(mod, w, need - 1, NULL), CK_STATUS_SHAPE_MISMATCH, "count");
    EXPECT_ST(ctx, ck_model_set_weights(mod, w, need + 1), CK_STATUS_SHAPE_MISMATCH, "count");
    EXPECT_ST(ctx, ck_model_set_weights(mod, NULL, need), CK_STATUS_BAD_PARAM, "host");
    EXPECT_ST(ctx, ck_model_get_weights(mod, NULL, need, NULL), CK_STATUS_BAD_PARAM, "host");
    EXPECT_ST(ctx, ck_model_save(mod, NULL), CK_STATUS_BAD_PARAM, "path");
    EXPECT_ST(ctx, ck_model_save(mod, ""), CK_STATUS_BAD_PARAM, "path");
    EXPECT_ST(ctx, ck_model_save(mod, "/nonexistent-dir/x.ckpt"), CK_STATUS_BAD_PARAM, "path");
    EXPECT_ST(ctx, ck_model_load(mod, NULL), CK_STATUS_BAD_PARAM, "path");
    cr_assert_eq(ck_model_save(NULL, "x"), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_load(NULL, "x"), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_train_step(NULL, x, y, 4, NULL), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_build(NULL, 1, 1, 1, 1), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_create(NULL, &mod), CK_STATUS_BAD_PARAM);
    EXPECT_ST(ctx, ck_model_from_keras_text(ctx, NULL, &mod, NULL, 0), CK_STATUS_BAD_PARAM, "text");
    ck_keras_model km;
    char err[128];
    cr_assert_eq(ck_keras_parse(NULL, &km, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_keras_parse("model = Sequential()\n", NULL, err, sizeof err),
                 CK_STATUS_BAD_PARAM);
    ck_keras_model_free(NULL);
    ck_model_destroy(NULL);
    free(w);
    ck_model_destroy(mod);
    ck_context_destroy(ctx);
}

Test(hardening, data_bad_inputs) {
    ck_dataset ds;
    memset(&ds, 0x5a, sizeof ds);
    const ck_dataset before = ds;
    char err[256];
    cr_assert_eq(ck_idx_load(NULL, "x", &ds, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(err, "images_path"), NULL, "%s", err);
    cr_assert_eq(ck_idx_load("/nonexistent/a", "/nonexistent/b", &ds, err, sizeof err),
                 CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(err, "/nonexistent/a"), NULL, "%s", err);
    cr_assert_eq(ck_idx_load("x", "y", NULL, err, 0), CK_STATUS_BAD_PARAM); /* err_len 0: ok */
    const char *paths[1] = {NULL};
    cr_assert_eq(ck_cifar10_load(paths, 1, &ds, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(err, "paths[0]"), NULL, "%s", err);
    cr_assert_eq(ck_cifar10_load(paths, 0, &ds, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_cifar10_load(paths, -5, &ds, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert_eq(memcmp(&ds, &before, sizeof ds), 0, "a failed load wrote *out");
    int32_t perm[4];
    cr_assert_eq(ck_dataset_shuffle(0, 1, 0, perm), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_dataset_shuffle(-4, 1, 0, perm), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_dataset_shuffle(4, 1, 0, NULL), CK_STATUS_BAD_PARAM);
    /* a tiny data set to break one argument at a time */
    float img[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    int32_t lab[4] = {0, 1, 0, 1};
    ck_dataset small = {4, 1, 1, 1, 2, img, lab};
    cr_assert_eq(ck_dataset_normalize(&small, NAN, 1.0f), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_dataset_normalize(&small, 0.0f, INFINITY), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_dataset_normalize(&small, 0.0f, 0.0f), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_dataset_normalize(&small, 0.0f, -1.0f), CK_STATUS_BAD_PARAM);
    cr_assert_eq(img[2], 0.3f, "a failed normalize changed the data");
    float xo[2] = {-1, -1};
    int32_t yo[2] = {-1, -1};
    cr_assert_eq(ck_dataset_gather(&small, NULL, 3, 2, xo, yo), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_dataset_gather(&small, NULL, -1, 2, xo, yo), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_dataset_gather(&small, NULL, 0, 0, xo, yo), CK_STATUS_BAD_PARAM);
    const int32_t bad_perm[4] = {0, 1, 7, 2};
    cr_assert_eq(ck_dataset_gather(&small, bad_perm, 1, 2, xo, yo), CK_STATUS_BAD_PARAM);
    cr_assert_eq(xo[0], -1.0f, "a failed gather wrote x_out");
    cr_assert_eq(yo[0], -1, "a failed gather wrote y_out");
    ck_dataset sub;
    cr_assert_eq(ck_dataset_subset(&small, 2, 3, &sub), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_dataset_subset(&small, 0, 2, &small), CK_STATUS_BAD_PARAM);
    ck_dataset_free(NULL);
}

/* NaN/Inf inputs: training reports a non-finite loss with a status instead of continuing, the
 * model (weights, BN statistics, step) is unchanged, and training on finite data goes on. */
/* No activation between the input and the loss that could mask a NaN (ReLU maps NaN to 0). */
static const char LINEAR_MODEL[] = "model = Sequential()\n"
                                   "model.add(Conv2D(3, (3, 3), input_shape=(6, 6, 1)))\n"
                                   "model.add(BatchNormalization())\n"
                                   "model.add(Flatten())\n"
                                   "model.add(Dense(4, activation='softmax'))\n";

Test(hardening, non_finite_inputs) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = from_text(ctx, LINEAR_MODEL);
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 8));
    float x[8 * 36];
    int32_t y[8];
    make_batch(x, y, 8, 36, 4, 4);
    ck_step_result r;
    CK_OK(ctx, ck_model_train_step(m, x, y, 8, &r));
    size_t nw;
    float *w0 = t_weights_of(ctx, m, &nw);
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; ++i) {
        float xb[8 * 36];
        memcpy(xb, x, sizeof xb);
        xb[5 * 36 + 7] = bad[i];
        EXPECT_ST(ctx, ck_model_train_step(m, xb, y, 8, &r), CK_STATUS_BAD_PARAM, "not finite");
        float *w = t_weights_of(ctx, m, &nw);
        cr_assert_eq(memcmp(w, w0, nw * sizeof *w), 0,
                     "input %g: a failed step changed weights or BN statistics", (double)bad[i]);
        free(w);
        cr_assert_eq(ck_model_step(m), 1);
    }
    /* the model is not poisoned: a finite step works and its loss is finite */
    CK_OK(ctx, ck_model_train_step(m, x, y, 8, &r));
    cr_assert(isfinite(r.loss));
    /* evaluation reports a non-finite loss (it is a value, not an error); predict stays finite
     * for finite inputs */
    float probs[8 * 4];
    CK_OK(ctx, ck_model_predict(m, x, 8, probs));
    for (int i = 0; i < 32; ++i)
        cr_assert(isfinite(probs[i]));
    /* kernels propagate NaN (no silent repair): BN inference of a NaN is NaN */
    ck_tensor *t = NULL, *g = t_param(ctx, 1, (float[]){1}), *b = t_param(ctx, 1, (float[]){0});
    ck_tensor *mu = t_param(ctx, 1, (float[]){0}), *var = t_param(ctx, 1, (float[]){1});
    CK_OK(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NCHW, 1, 1, 1, 2));
    CK_OK(ctx, ck_tensor_upload(ctx, t, (float[]){NAN, 1.0f}, 2));
    ck_bn_desc bd;
    CK_OK(ctx, ck_bn_desc_init(&bd, CK_BN_KERAS));
    CK_OK(ctx, ck_batchnorm_forward_inference(ctx, &bd, t, g, b, mu, var, t));
    float out[2];
    CK_OK(ctx, ck_tensor_download(ctx, t, out, 2));
    cr_assert(isnan(out[0]) && isfinite(out[1]));
    ck_tensor *all[] = {t, g, b, mu, var};
    for (int i = 0; i < 5; ++i)
        ck_tensor_destroy(all[i]);
    free(w0);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* With Conv -> BN -> ReLU a NaN pixel is masked to 0 by the ReLU in the forward pass, so the
 * loss stays finite while BN's backward multiplies 0 by NaN: before the input check this step
 * returned SUCCESS and left NaN weights. Now the step refuses x (naming the element) and leaves
 * every weight as it was; predict refuses it too. */
Test(hardening, non_finite_input_masked_by_relu) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = from_text(ctx, SMALL_MODEL);
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 8));
    float x[8 * 36];
    int32_t y[8];
    make_batch(x, y, 8, 36, 4, 4);
    size_t nw0;
    float *w0 = t_weights_of(ctx, m, &nw0);
    const float bad_values[] = {NAN, INFINITY, -INFINITY};
    for (int b = 0; b < 3; ++b) {
        x[5 * 36 + 7] = bad_values[b];
        ck_step_result r;
        ck_status st = ck_model_train_step(m, x, y, 8, &r);
        cr_assert_eq(st, CK_STATUS_BAD_PARAM, "value %g: status %s", (double)bad_values[b],
                     ck_status_string(st));
        cr_assert_neq(strstr(ck_context_last_error(ctx), "x[187]"), NULL, "message '%s'",
                      ck_context_last_error(ctx));
        size_t nw;
        float *w = t_weights_of(ctx, m, &nw);
        cr_assert_eq(nw, nw0);
        cr_assert_eq(memcmp(w, w0, nw * sizeof *w), 0, "a refused step changed the weights");
        free(w);
        float probs[8 * 4];
        cr_assert_eq(ck_model_predict(m, x, 8, probs), CK_STATUS_BAD_PARAM);
        cr_assert_neq(strstr(ck_context_last_error(ctx), "x[187]"), NULL, "message '%s'",
                      ck_context_last_error(ctx));
    }
    make_batch(x, y, 8, 36, 4, 4);
    ck_step_result r;
    CK_OK(ctx, ck_model_train_step(m, x, y, 8, &r)); /* the model still trains */
    cr_assert(isfinite(r.loss));
    free(w0);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* ---- determinism ---------------------------------------------------------------------------- */

/* The seed model (BN, Dropout), seed 42, 4 steps of batch 16: weights after the run, or NULL
 * (with *skip_reason set) when the device cannot train models. */
static float *seed_run(ck_device dev, size_t *count, const char **skip_reason) {
    ck_context *ctx = dev == CK_DEVICE_CUDA ? t_cuda_ctx_or_skip() : t_ctx(CK_DEVICE_CPU);
    CK_OK(ctx, ck_context_set_seed(ctx, 42));
    ck_model *m = from_text(ctx, t_seed_cnn_text);
    ck_status st = ck_model_build(m, 0, 0, 0, 16);
    float *w = NULL;
    float *x = malloc(sizeof(float) * 16 * 784);
    int32_t y[16];
    for (int s = 0; st == CK_STATUS_SUCCESS && s < 4; ++s) {
        make_batch(x, y, 16, 784, 10, 100 + (uint64_t)s);
        ck_step_result r;
        st = ck_model_train_step(m, x, y, 16, &r);
    }
    if (st == CK_STATUS_NOT_SUPPORTED) {
        *skip_reason = "model training is not supported on this device in this version";
    } else {
        CK_OK(ctx, st);
        w = t_weights_of(ctx, m, count);
    }
    free(x);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return w;
}

static void same_seed_same_bits(ck_device dev) {
    size_t n1 = 0, n2 = 0;
    const char *why = NULL;
    float *a = seed_run(dev, &n1, &why);
    if (!a && dev == CK_DEVICE_CUDA)
        t_gpu_unavailable(why);
    if (!a)
        cr_skip("%s", why);
    float *b = seed_run(dev, &n2, &why);
    cr_assert_not_null(b);
    cr_assert_eq(n1, n2);
    size_t diff = 0;
    for (size_t i = 0; i < n1; ++i)
        diff += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    cr_assert_eq(diff, 0, "%zu of %zu weights differ between two runs with the same seed", diff,
                 n1);
    free(a);
    free(b);
}

Test(hardening, same_seed_bit_identical_weights_cpu) {
    same_seed_same_bits(CK_DEVICE_CPU);
}

Test(hardening, same_seed_bit_identical_weights_gpu) {
    same_seed_same_bits(CK_DEVICE_CUDA);
}

/* A diverged step (finite inputs, non-finite loss: every weight 1e30, so the logits overflow)
 * fails with a status and changes nothing: weights, BN moving statistics and the step count are
 * the same bits afterwards (on CUDA the optimizer update is enqueued before the host sees the
 * loss and skips itself on the device), and the model still trains once repaired. */
static void diverged_step_changes_nothing(ck_device dev) {
    ck_context *ctx = dev == CK_DEVICE_CUDA ? t_cuda_ctx_or_skip() : t_ctx(CK_DEVICE_CPU);
    ck_model *m = from_text(ctx, t_seed_cnn_text);
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 16));
    float *x = malloc(sizeof(float) * 16 * 784);
    int32_t y[16];
    make_batch(x, y, 16, 784, 10, 7);
    CK_OK(ctx, ck_model_train_step(m, x, y, 16, NULL)); /* optimizer state in use */
    size_t n = 0;
    float *good = t_weights_of(ctx, m, &n), *bad = malloc(n * sizeof *bad);
    for (size_t i = 0; i < n; ++i)
        bad[i] = 1e30f;
    CK_OK(ctx, ck_model_set_weights(m, bad, n));
    const long long step = ck_model_step(m);
    ck_step_result r;
    cr_assert_eq(ck_model_train_step(m, x, y, 16, &r), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "not finite"), NULL, "%s",
                  ck_context_last_error(ctx));
    cr_assert_eq(ck_model_step(m), step);
    size_t n2 = 0;
    float *after = t_weights_of(ctx, m, &n2);
    cr_assert_eq(n2, n);
    cr_assert_eq(memcmp(after, bad, n * sizeof *bad), 0, "a failed step changed the weights");
    CK_OK(ctx, ck_model_set_weights(m, good, n));
    CK_OK(ctx, ck_model_train_step(m, x, y, 16, &r));
    cr_assert(isfinite(r.loss));
    cr_assert_eq(ck_model_step(m), step + 1);
    free(x), free(good), free(bad), free(after);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

Test(hardening, diverged_step_changes_nothing_cpu) {
    diverged_step_changes_nothing(CK_DEVICE_CPU);
}

Test(hardening, diverged_step_changes_nothing_gpu) {
    diverged_step_changes_nothing(CK_DEVICE_CUDA);
}

/* ---- checkpoints and SIGKILL ---------------------------------------------------------------- */

/* The child: resumes from the checkpoint when there is one, then trains and saves forever. */
static void saver_child(const char *path) {
    ck_context *ctx = NULL;
    if (ck_context_create(&ctx, CK_DEVICE_CPU, 0, 3) != CK_STATUS_SUCCESS)
        _exit(3);
    ck_context_set_cpu_threads(ctx, 1);
    ck_model *m = NULL;
    char msg[256];
    if (ck_model_from_keras_text(ctx, SMALL_MODEL, &m, msg, sizeof msg) != CK_STATUS_SUCCESS ||
        ck_model_build(m, 0, 0, 0, 8) != CK_STATUS_SUCCESS)
        _exit(4);
    if (access(path, F_OK) == 0 && ck_model_load(m, path) != CK_STATUS_SUCCESS)
        _exit(5); /* the last checkpoint must always load */
    float x[8 * 36];
    int32_t y[8];
    for (;;) {
        make_batch(x, y, 8, 36, 4, (uint64_t)ck_model_step(m));
        ck_step_result r;
        if (ck_model_train_step(m, x, y, 8, &r) != CK_STATUS_SUCCESS)
            _exit(6);
        if (ck_model_save(m, path) != CK_STATUS_SUCCESS)
            _exit(7);
    }
}

static int count_temps(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strstr(e->d_name, ".cnnkit-tmp.") != NULL;
    if (d)
        closedir(d);
    return n;
}

Test(hardening, checkpoint_survives_sigkill_during_save, .timeout = 120) {
    char dir[] = "/tmp/cnnkit-kill-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof path, "%s/m.ckpt", dir);
    /* a stray temp file from an earlier crash, named like the real ones, full of junk */
    char junk[320];
    snprintf(junk, sizeof junk, "%s/.m.ckpt.cnnkit-tmp.AbC123", dir);
    FILE *f = fopen(junk, "wb");
    cr_assert_not_null(f);
    fputs("CNNKITCK torn", f);
    fclose(f);

    long long last_step = 0;
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    const int rounds = 8;
    for (int round = 0; round < rounds; ++round) {
        pid_t pid = fork();
        cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
        if (pid == 0)
            saver_child(path);
        /* wait until this child has saved at least once past the last step, then kill it at a
         * random moment: 0..20 ms later, mostly inside a save (saving is most of its loop) */
        for (int i = 0; i < 5000; ++i) {
            struct stat sb;
            if (stat(path, &sb) == 0 && round == 0)
                break;
            if (round > 0 && i > 20)
                break;
            usleep(1000);
        }
        usleep((useconds_t)(rand() % 20000));
        kill(pid, SIGKILL);
        int status = 0;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "round %d: the saver exited by itself (status %d: %s)", round, status,
                  WIFEXITED(status) && WEXITSTATUS(status) == 5 ? "the checkpoint did not load"
                                                                : "see saver_child");
        /* the checkpoint loads intact, and it is the newest or an older one, never torn */
        ck_context *ctx = t_ctx(CK_DEVICE_CPU);
        ck_model *m = from_text(ctx, SMALL_MODEL);
        CK_OK(ctx, ck_model_build(m, 0, 0, 0, 8));
        CK_OK(ctx, ck_model_load(m, path));
        const long long step = ck_model_step(m);
        cr_assert_geq(step, last_step, "round %d: step went back from %lld to %lld", round,
                      last_step, step);
        cr_assert_geq(step, 1);
        last_step = step;
        size_t nw;
        float *w = t_weights_of(ctx, m, &nw);
        for (size_t i = 0; i < nw; ++i)
            cr_assert(isfinite(w[i]));
        free(w);
        ck_model_destroy(m);
        ck_context_destroy(ctx);
    }
    /* temp files left by the kills (the last one's, and a junk one made again here) break
     * nothing: the junk one is not a checkpoint, and the next save removes them all, but not
     * the temp file of a save still running (one that holds its lock) */
    const int temps = count_temps(dir);
    f = fopen(junk, "wb");
    cr_assert_not_null(f);
    fputs("CNNKITCK torn", f);
    fclose(f);
    char live[320];
    snprintf(live, sizeof live, "%s/.m.ckpt.cnnkit-tmp.LiVe12", dir);
    int live_fd = open(live, O_RDWR | O_CREAT, 0600);
    cr_assert_geq(live_fd, 0);
    cr_assert_eq(flock(live_fd, LOCK_EX | LOCK_NB), 0);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = from_text(ctx, SMALL_MODEL);
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 8));
    cr_assert_neq(ck_model_load(m, junk), CK_STATUS_SUCCESS);
    cr_assert_neq(strstr(ck_context_last_error(ctx), junk), NULL, "%s", ck_context_last_error(ctx));
    CK_OK(ctx, ck_model_load(m, path));
    CK_OK(ctx, ck_model_save(m, path));
    CK_OK(ctx, ck_model_load(m, path));
    cr_assert_eq(access(junk, F_OK), -1, "the stale temp file %s is still there", junk);
    cr_assert_eq(access(live, F_OK), 0, "a locked (live) temp file was removed");
    cr_assert_eq(count_temps(dir), 1, "temp files left: %d", count_temps(dir));
    close(live_fd);
    unlink(live);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    cr_log_info("checkpoint kill test: %d rounds, last step %lld, %d stray temp files removed",
                rounds, last_step, temps);
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

/* A save loses none of the user's files: files named like an older cnnkit's temp files
 * ("<base>.tmp.XXXXXX") are the user's and stay; a replaced file keeps its permissions and a new
 * one gets the umask's (not a fixed 0644, which would widen a private 0600 checkpoint). A loader
 * given a FIFO fails at once instead of waiting for a writer. */
Test(hardening, saves_keep_user_files_and_modes_loaders_refuse_fifos, .timeout = 60) {
    char dir[] = "/tmp/cnnkit-files-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[300], user[2][320], fifo[320];
    snprintf(path, sizeof path, "%s/m.ckpt", dir);
    snprintf(user[0], sizeof user[0], "%s.tmp.backup", path);
    snprintf(user[1], sizeof user[1], "%s.tmp.AbC123", path);
    for (int i = 0; i < 2; ++i) {
        FILE *f = fopen(user[i], "wb");
        cr_assert_not_null(f);
        fputs("USERDATA", f);
        fclose(f);
    }
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = from_text(ctx, SMALL_MODEL);
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 8));
    const mode_t old_mask = umask(077);
    CK_OK(ctx, ck_model_save(m, path));
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600, "a new file under umask 077: mode %o", sb.st_mode & 0777);
    umask(022);
    cr_assert_eq(chmod(path, 0640), 0);
    CK_OK(ctx, ck_model_save(m, path));
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0640, "the replaced file's mode: %o", sb.st_mode & 0777);
    umask(old_mask);
    for (int i = 0; i < 2; ++i) {
        char got[16] = {0};
        FILE *f = fopen(user[i], "rb");
        cr_assert_not_null(f, "the user's file %s was removed", user[i]);
        cr_assert_eq(fread(got, 1, sizeof got - 1, f), 8);
        fclose(f);
        cr_assert_str_eq(got, "USERDATA");
        unlink(user[i]);
    }
    cr_assert_eq(count_temps(dir), 0);
    /* FIFOs: each loader refuses at once (the test's timeout catches a wait) */
    snprintf(fifo, sizeof fifo, "%s/pipe", dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    EXPECT_ST(ctx, ck_model_load(m, fifo), CK_STATUS_BAD_PARAM, "not a regular file");
    EXPECT_ST(ctx, ck_model_load_keras_weights(m, fifo), CK_STATUS_BAD_PARAM, "not a regular file");
    ck_model *k = NULL;
    EXPECT_ST(ctx, ck_model_load_keras(ctx, fifo, 8, &k), CK_STATUS_BAD_PARAM,
              "not a regular file");
    cr_assert_null(k);
    ck_dataset ds;
    char err[CK_MSG_LEN];
    cr_assert_eq(ck_idx_load(fifo, fifo, &ds, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(err, "not a regular file"), "%s", err);
    const char *paths[1] = {fifo};
    cr_assert_eq(ck_cifar10_load(paths, 1, &ds, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(err, "not a regular file"), "%s", err);
    unlink(fifo);
    unlink(path);
    rmdir(dir);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}
