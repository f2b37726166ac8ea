/* ZeroPadding2D (keras.layers.ZeroPadding2D, channels_last): the Keras argument forms and their
 * refusals, the summary row, exact forwards (Keras's documented example and an asymmetric one
 * checked by hand), the whole-model gradient through it, checkpoints, .keras round trips,
 * planned = unplanned, and the GPU against the CPU. */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model_internal.h"

static ck_model *from_text(ck_context *ctx, const char *layers, int max_batch) {
    char text[1024], msg[512];
    snprintf(text, sizeof text,
             "from keras import layers, models\nmodel = models.Sequential([%s])\n", layers);
    ck_model *m = NULL;
    ck_status st = ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg);
    cr_assert_eq(st, CK_STATUS_SUCCESS, "%s: %s", layers, msg);
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, max_batch));
    return m;
}

static void pads_of(ck_model *m, int i, int p[4]) {
    ck_layer_desc d;
    cr_assert_eq(ck_model_layer_desc(m, i, &d), CK_STATUS_SUCCESS);
    cr_assert_eq(d.type, CK_LAYER_ZEROPADDING2D);
    p[0] = d.pad_top, p[1] = d.pad_bottom, p[2] = d.pad_left, p[3] = d.pad_right;
}

Test(zeropad, keras_forms_and_default) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = from_text(ctx,
                            "layers.ZeroPadding2D(input_shape=(5, 6, 2)),"
                            "layers.ZeroPadding2D(2), layers.ZeroPadding2D((1, 3)),"
                            "layers.ZeroPadding2D(padding=((1, 0), (2, 3))),"
                            "layers.ZeroPadding2D([[0, 4], [0, 0]], data_format='channels_last'),"
                            "layers.Flatten(), layers.Dense(3, activation='softmax')",
                            4);
    const int want[5][4] = {{1, 1, 1, 1}, {2, 2, 2, 2}, {1, 1, 3, 3}, {1, 0, 2, 3}, {0, 4, 0, 0}};
    int h = 5, w = 6;
    for (int i = 0; i < 5; ++i) {
        int p[4], oh, ow, oc;
        pads_of(m, i, p);
        cr_assert_arr_eq(p, want[i], sizeof p, "layer %d: ((%d,%d),(%d,%d))", i, p[0], p[1], p[2],
                         p[3]);
        h += p[0] + p[1];
        w += p[2] + p[3];
        CK_OK(ctx, ck_model_layer_shape(m, i, &oh, &ow, &oc));
        cr_assert(oh == h && ow == w && oc == 2, "layer %d: %dx%dx%d, want %dx%dx2", i, oh, ow, oc,
                  h, w);
    }
    ck_layer_desc d;
    ck_layer_desc_init(&d, CK_LAYER_ZEROPADDING2D);
    cr_assert(d.pad_top == 1 && d.pad_bottom == 1 && d.pad_left == 1 && d.pad_right == 1);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

Test(zeropad, keras_refusals_name_the_argument) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const char *bad[][2] = {{"-1", "padding"},
                            {"(1, 2, 3)", "padding"},
                            {"((1, 2), (3, -1))", "padding"},
                            {"((1, 2), 3)", "padding"},
                            {"'same'", "padding"},
                            {"1.5", "padding"},
                            {"1, data_format='channels_first'", "data_format"},
                            {"1, dilation=2", "dilation"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        char text[512], msg[512] = "";
        snprintf(text, sizeof text,
                 "from keras import layers, models\nmodel = models.Sequential(["
                 "layers.ZeroPadding2D(%s, input_shape=(4, 4, 1)), layers.Flatten()])\n",
                 bad[i][0]);
        ck_model *m = NULL;
        cr_assert_neq(ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg), CK_STATUS_SUCCESS,
                      "%s was accepted", bad[i][0]);
        cr_assert_null(m);
        cr_assert(strstr(msg, bad[i][1]) && strstr(msg, "ZeroPadding2D"), "%s: %s", bad[i][0], msg);
    }
    /* the C API: negative pads are refused by ck_model_add, the model unchanged */
    ck_model *m = NULL;
    CK_OK(ctx, ck_model_create(ctx, &m));
    ck_layer_desc d;
    ck_layer_desc_init(&d, CK_LAYER_ZEROPADDING2D);
    d.pad_left = -2;
    cr_assert_eq(ck_model_add(m, &d), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "padding"), "%s", ck_context_last_error(ctx));
    cr_assert_eq(ck_model_num_layers(m), 0);
    /* a flat input: the pooling layers' message */
    ck_layer_desc_init(&d, CK_LAYER_FLATTEN);
    CK_OK(ctx, ck_model_add(m, &d));
    ck_layer_desc_init(&d, CK_LAYER_ZEROPADDING2D);
    CK_OK(ctx, ck_model_add(m, &d));
    cr_assert_eq(ck_model_build(m, 4, 4, 1, 2), CK_STATUS_SHAPE_MISMATCH);
    cr_assert(strstr(ck_context_last_error(ctx), "needs a 4-D input"), "%s",
              ck_context_last_error(ctx));
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

Test(zeropad, summary_rows_and_names) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = from_text(ctx,
                            "layers.ZeroPadding2D(1, input_shape=(1, 2, 2)),"
                            "layers.ZeroPadding2D(((0, 1), (2, 0))), layers.Flatten(),"
                            "layers.Dense(2, activation='softmax')",
                            2);
    char buf[4096];
    CK_OK(ctx, ck_model_summary(m, buf, sizeof buf, NULL));
    cr_assert(strstr(buf, "zero_padding2d (ZeroPadding2D)"), "%s", buf);
    cr_assert(strstr(buf, "zero_padding2d_1 (ZeroPadding2D)"), "%s", buf);
    cr_assert(strstr(buf, "(None, 3, 4, 2)"), "%s", buf);
    cr_assert(strstr(buf, "(None, 4, 6, 2)"), "%s", buf);
    ck_param_counts pc;
    CK_OK(ctx, ck_model_param_counts(m, &pc));
    cr_assert_eq(pc.total, 4 * 6 * 2 * 2 + 2, "only the Dense has parameters");
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* The node's output after a predict: the executor keeps every node's activations. */
static const float *zp_output(ck_model *m, int node) {
    cr_assert_eq(m->nodes[node].type, CK_NODE_OTHER);
    return m->nodes[node].out;
}

/* keras.layers.ZeroPadding2D's documented example: x = arange(4).reshape(1, 1, 2, 2),
 * padding=1 -> shape (1, 3, 4, 2), x in the middle row at columns 1 and 2, zeros elsewhere. */
Test(zeropad, forward_keras_doc_example) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = from_text(ctx,
                            "layers.ZeroPadding2D(padding=1, input_shape=(1, 2, 2)),"
                            "layers.Flatten(), layers.Dense(2, activation='softmax')",
                            1);
    const float x[4] = {0, 1, 2, 3};
    float probs[2];
    CK_OK(ctx, ck_model_predict(m, x, 1, probs));
    const float want[3][4][2] = {{{0, 0}, {0, 0}, {0, 0}, {0, 0}},
                                 {{0, 0}, {0, 1}, {2, 3}, {0, 0}},
                                 {{0, 0}, {0, 0}, {0, 0}, {0, 0}}};
    cr_assert_eq(memcmp(zp_output(m, 0), want, sizeof want), 0);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* ((1, 0), (2, 3)) on a batch of 2 random 3x2x3 images against the definition, every cell; the
 * values are copied, so the comparison is exact. */
Test(zeropad, forward_asymmetric_exact) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = from_text(ctx,
                            "layers.ZeroPadding2D(((1, 0), (2, 3)), input_shape=(3, 2, 3)),"
                            "layers.Flatten(), layers.Dense(2, activation='softmax')",
                            2);
    enum { N = 2, H = 3, W = 2, C = 3, OH = 4, OW = 7 };
    float x[N * H * W * C], probs[N * 2];
    trng r = {7};
    trng_fill(&r, x, sizeof x / sizeof x[0], -1, 1);
    CK_OK(ctx, ck_model_predict(m, x, N, probs));
    const float *y = zp_output(m, 0);
    for (int n = 0; n < N; ++n)
        for (int i = 0; i < OH; ++i)
            for (int j = 0; j < OW; ++j)
                for (int c = 0; c < C; ++c) {
                    const int si = i - 1, sj = j - 2;
                    const float want = si >= 0 && si < H && sj >= 0 && sj < W
                                           ? x[((n * H + si) * W + sj) * C + c]
                                           : 0.0f;
                    cr_assert_eq(y[((n * OH + i) * OW + j) * C + c], want, "(%d,%d,%d,%d)", n, i, j,
                                 c);
                }
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* Conv2D -> ZeroPadding2D -> Conv2D -> Flatten -> Dense: central differences of the mean loss
 * against backward for every 5th parameter; the first conv's gradient passes through the crop.
 * (t_gradcheck_model's step and tolerance). */
Test(zeropad, gradcheck_through_the_padding) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = from_text(ctx,
                            "layers.Conv2D(3, (2, 2), activation='tanh', input_shape=(5, 4, 2)),"
                            "layers.ZeroPadding2D(((1, 0), (2, 1))),"
                            "layers.Conv2D(2, (3, 3), activation='tanh'),"
                            "layers.Flatten(), layers.Dense(4, activation='softmax')",
                            6);
    enum { N = 6, PER = 5 * 4 * 2 };
    float x[N * PER];
    int32_t y[N];
    trng r = {3};
    trng_fill(&r, x, sizeof x / sizeof x[0], -1, 1);
    for (int i = 0; i < N; ++i)
        y[i] = (int32_t)(trng_u32(&r) % 4);
    int first_conv; /* its kernel and bias come first in params */
    const int checked = t_gradcheck_model(ctx, m, x, y, N, 5, 2 * 2 * 2 * 3 + 3, &first_conv);
    cr_assert_gt(checked, 20);
    cr_assert_gt(first_conv, 2, "the first conv's gradients must be checked and non-zero");
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

#define ZP_TRAIN_MODEL                                                                             \
    "layers.Conv2D(4, (3, 3), activation='relu', input_shape=(6, 6, 1)),"                          \
    "layers.ZeroPadding2D(((1, 2), (0, 1))), layers.MaxPooling2D(),"                               \
    "layers.Flatten(), layers.Dense(3, activation='softmax')"

static float *train_weights(ck_context *ctx, ck_model *m, int steps, size_t *count) {
    enum { N = 8, PER = 36 };
    float x[N * PER];
    int32_t y[N];
    trng r = {19};
    trng_fill(&r, x, sizeof x / sizeof x[0], 0, 1);
    for (int i = 0; i < N; ++i)
        y[i] = (int32_t)(trng_u32(&r) % 3);
    for (int s = 0; s < steps; ++s) {
        ck_step_result res;
        CK_OK(ctx, ck_model_train_step(m, x, y, N, &res));
    }
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, count));
    float *w = malloc(*count * sizeof *w);
    CK_OK(ctx, ck_model_get_weights(m, w, *count, NULL));
    return w;
}

/* Planning never moves or fuses a ZeroPadding2D: the same weights, bit for bit. */
Test(zeropad, planned_equals_unplanned) {
    float *w[2];
    size_t n[2];
    for (int planned = 0; planned < 2; ++planned) {
        ck_context *ctx = t_ctx(CK_DEVICE_CPU);
        char text[1024], msg[256];
        snprintf(text, sizeof text,
                 "from keras import layers, models\nmodel = models.Sequential([" ZP_TRAIN_MODEL
                 "])\n");
        ck_model *m = NULL;
        CK_OK(ctx, ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg));
        CK_OK(ctx, ck_model_set_planning(m, planned));
        CK_OK(ctx, ck_model_build(m, 0, 0, 0, 8));
        w[planned] = train_weights(ctx, m, 5, &n[planned]);
        ck_model_destroy(m);
        ck_context_destroy(ctx);
    }
    cr_assert_eq(n[0], n[1]);
    cr_assert_eq(memcmp(w[0], w[1], n[0] * sizeof(float)), 0);
    free(w[0]);
    free(w[1]);
}

/* The pads are part of the model's structure: a checkpoint loads into the same model, and one
 * with other pads (whose shapes still fit) is refused with nothing changed. */
Test(zeropad, checkpoint_round_trip_and_mismatch) {
    char dir[] = "/tmp/cnnkit-zp-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/m.ckpt", dir);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *a = from_text(ctx, ZP_TRAIN_MODEL, 8);
    size_t n;
    float *wa = train_weights(ctx, a, 2, &n);
    CK_OK(ctx, ck_model_save(a, path));
    ck_model *b = from_text(ctx, ZP_TRAIN_MODEL, 8);
    CK_OK(ctx, ck_model_load(b, path));
    float *wb = malloc(n * sizeof *wb);
    CK_OK(ctx, ck_model_get_weights(b, wb, n, NULL));
    cr_assert_eq(memcmp(wa, wb, n * sizeof *wa), 0);
    /* ((2, 1), (1, 0)): the same output shape, other pads */
    ck_model *c = from_text(ctx,
                            "layers.Conv2D(4, (3, 3), activation='relu', input_shape=(6, 6, 1)),"
                            "layers.ZeroPadding2D(((2, 1), (1, 0))), layers.MaxPooling2D(),"
                            "layers.Flatten(), layers.Dense(3, activation='softmax')",
                            8);
    float *before = malloc(n * sizeof *before), *after = malloc(n * sizeof *after);
    CK_OK(ctx, ck_model_get_weights(c, before, n, NULL));
    cr_assert_eq(ck_model_load(c, path), CK_STATUS_SHAPE_MISMATCH);
    CK_OK(ctx, ck_model_get_weights(c, after, n, NULL));
    cr_assert_eq(memcmp(before, after, n * sizeof *after), 0, "a refused load changed the model");
    free(wa);
    free(wb);
    free(before);
    free(after);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_model_destroy(c);
    ck_context_destroy(ctx);
    unlink(path);
    rmdir(dir);
}

/* .keras: the config carries padding as Keras writes it, ((top, bottom), (left, right)), and the
 * model comes back with the same pads and weights. */
Test(zeropad, keras_file_round_trip) {
    char dir[] = "/tmp/cnnkit-zpk-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/m.keras", dir);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *a = from_text(ctx, ZP_TRAIN_MODEL, 8);
    size_t n;
    float *wa = train_weights(ctx, a, 1, &n);
    ck_status st = ck_model_save_keras(a, path);
    if (st == CK_STATUS_NOT_SUPPORTED)
        cr_skip("built without the Keras file formats");
    CK_OK(ctx, st);
    ck_model *b = NULL;
    CK_OK(ctx, ck_model_load_keras(ctx, path, 8, &b));
    int p[4];
    pads_of(b, 1, p);
    cr_assert(p[0] == 1 && p[1] == 2 && p[2] == 0 && p[3] == 1, "((%d,%d),(%d,%d))", p[0], p[1],
              p[2], p[3]);
    float *wb = malloc(n * sizeof *wb);
    CK_OK(ctx, ck_model_get_weights(b, wb, n, NULL));
    cr_assert_eq(memcmp(wa, wb, n * sizeof *wa), 0);
    free(wa);
    free(wb);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_context_destroy(ctx);
    unlink(path);
    rmdir(dir);
}

/* The GPU (ck_cuda_pad_nhwc forward, its crop backward) against the CPU: predictions after one
 * SGD step from the same weights. The padding is exact; the conv and dense layers differ by
 * cuDNN's and cuBLAS's summation order, ~1e-6 relative on these sizes, so 1e-4. */
Test(zeropad, gpu_matches_cpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    ck_model *mg = from_text(g, ZP_TRAIN_MODEL, 8), *mc = from_text(c, ZP_TRAIN_MODEL, 8);
    size_t n;
    CK_OK(c, ck_model_get_weights(mc, NULL, 0, &n));
    float *w = malloc(n * sizeof *w);
    CK_OK(c, ck_model_get_weights(mc, w, n, NULL));
    CK_OK(g, ck_model_set_weights(mg, w, n));
    ck_optimizer_desc o;
    ck_optimizer_desc_init(&o, CK_OPT_SGD);
    o.learning_rate = 0.1f;
    CK_OK(c, ck_model_set_optimizer(mc, &o));
    CK_OK(g, ck_model_set_optimizer(mg, &o));
    size_t nc, ng;
    float *wc = train_weights(c, mc, 1, &nc), *wg = train_weights(g, mg, 1, &ng);
    cr_assert_eq(nc, ng);
    double err = t_max_rel_err(wg, wc, nc);
    cr_assert_leq(err, 1e-4, "weights after one step: max rel err %g", err);
    free(w);
    free(wc);
    free(wg);
    ck_model_destroy(mg);
    ck_model_destroy(mc);
    ck_context_destroy(g);
    ck_context_destroy(c);
}
