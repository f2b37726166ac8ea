/* Rescaling (keras.layers.Rescaling(scale, offset=0.0)): the Keras argument forms and their
 * refusals in the model text, config.json and the C API, the summary row, forwards against
 * Keras's float32 arithmetic (a product, then a sum), raw pixels through Rescaling(1./255) equal
 * to the loaders' x / 255 bit for bit (the model and training too), the whole-model gradient
 * through it, planned = unplanned, checkpoints, .keras round trips, bf16 stores, functional and
 * 2-D inputs, CK018 (a Rescaling(1./255) on data already in [0, 1]) in the API and the CLI's
 * --pixels, and the GPU against the CPU. Keras's own predictions: test_keras_io.c. */
#include "common.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ck_math.h"
#include "cnnkit/check.h"
#include "exec.h"
#include "keras_io.h"
#include "model_internal.h"
#include "ref.h"

static ck_model *from_text(ck_context *ctx, const char *layers, int max_batch) {
    char text[2048], msg[512];
    snprintf(text, sizeof text,
             "from keras import layers, models\nmodel = models.Sequential([%s])\n", layers);
    ck_model *m = NULL;
    ck_status st = ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg);
    cr_assert_eq(st, CK_STATUS_SUCCESS, "%s: %s", layers, msg);
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, max_batch));
    return m;
}

static ck_layer_desc layer_of(ck_model *m, int i) {
    ck_layer_desc d;
    cr_assert_eq(ck_model_layer_desc(m, i, &d), CK_STATUS_SUCCESS);
    return d;
}

/* Keras's float32 arithmetic, inputs * scale + offset: the product rounds, then the sum (in
 * double both are exact before their one rounding to float). */
static float keras_f32(float x, float s, float o) {
    return (float)((double)(float)((double)x * s) + o);
}

Test(rescale, keras_forms_and_default) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = from_text(ctx,
                            "layers.Rescaling(1./255, input_shape=(4, 4, 2)),"
                            "layers.Rescaling(scale=2.0, offset=-1.0), layers.Rescaling(0.5, 0.25),"
                            "layers.experimental.preprocessing.Rescaling(offset=3, scale=-2),"
                            "layers.Rescaling(1/127.5, name='to_unit', offset=-1),"
                            "layers.Flatten(), layers.Dense(3, activation='softmax')",
                            2);
    const float want[5][2] = {{(float)(1.0 / 255), 0.0f},
                              {2.0f, -1.0f},
                              {0.5f, 0.25f},
                              {-2.0f, 3.0f},
                              {(float)(1 / 127.5), -1.0f}};
    for (int i = 0; i < 5; ++i) {
        const ck_layer_desc d = layer_of(m, i);
        cr_assert_eq(d.type, CK_LAYER_RESCALING);
        cr_assert(d.scale == want[i][0] && d.offset == want[i][1], "layer %d: %.9g, %.9g", i,
                  (double)d.scale, (double)d.offset);
    }
    cr_assert_str_eq(layer_of(m, 4).name, "to_unit");
    ck_layer_desc d;
    CK_OK(ctx, ck_layer_desc_init(&d, CK_LAYER_RESCALING));
    cr_assert(d.scale == 1.0f && d.offset == 0.0f, "the C default is the identity");
    cr_assert_str_eq(ck_layer_type_name(CK_LAYER_RESCALING), "Rescaling");
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* A layer config.json of class Rescaling after an InputLayer; the status, the message in err. */
static ck_status parse_config(const char *config, char *err, size_t len) {
    char json[1024];
    snprintf(json, sizeof json,
             "{\"class_name\": \"Sequential\", \"config\": {\"layers\": ["
             "{\"class_name\": \"InputLayer\", \"config\": {\"batch_shape\": [null, 4, 4, 1]}},"
             "{\"class_name\": \"Rescaling\", \"config\": {\"name\": \"rs\", %s}}]}}",
             config);
    ck_keras_model km;
    memset(&km, 0, sizeof km);
    ck_status st = ck_kio_parse_config(json, strlen(json), NULL, &km, err, len);
    if (st == CK_STATUS_SUCCESS)
        ck_keras_model_free(&km);
    return st;
}

Test(rescale, keras_refusals_name_the_argument) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    /* the model text: line and column, the class and the argument */
    const char *bad[][2] = {{"", "scale"},
                            {"[0.5, 0.25]", "scale"},
                            {"(1./255,)", "scale"},
                            {"'1/255'", "scale"},
                            {"1e39", "scale"},
                            {"1./255, offset=[1.0, 2.0]", "offset"},
                            {"1./255, offset=None", "offset"},
                            {"2, 3, 4", "positional"},
                            {"1./255, data_format='channels_last'", "data_format"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        char text[512], msg[512] = "";
        snprintf(text, sizeof text,
                 "from keras import layers, models\nmodel = models.Sequential(["
                 "layers.Rescaling(%s), layers.Flatten()])\n",
                 bad[i][0]);
        ck_model *m = NULL;
        cr_assert_neq(ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg), CK_STATUS_SUCCESS,
                      "Rescaling(%s) was accepted", bad[i][0]);
        cr_assert_null(m);
        cr_assert(strstr(msg, bad[i][1]) && strstr(msg, "Rescaling") && strstr(msg, "line 2"),
                  "Rescaling(%s): %s", bad[i][0], msg);
    }
    /* config.json: the layer's name and class and the option; a per-channel list or a numpy
     * array as Keras 3 serializes them */
    const char *bad_cfg[][2] = {
        {"\"scale\": [0.5, 0.25], \"offset\": 0.0", "scale"},
        {"\"scale\": 0.5, \"offset\": {\"class_name\": \"__numpy__\", \"config\": {\"value\": "
         "[1.0, 2.0], \"dtype\": \"float32\"}}",
         "offset"},
        {"\"scale\": \"0.5\"", "scale"},
        {"\"offset\": 1.0", "scale is required"},
        {"\"scale\": 1e39", "scale"},
        {"\"scale\": 0.5, \"interpolation\": \"bilinear\"", "interpolation"}};
    for (size_t i = 0; i < sizeof bad_cfg / sizeof bad_cfg[0]; ++i) {
        char err[512] = "";
        cr_assert_neq(parse_config(bad_cfg[i][0], err, sizeof err), CK_STATUS_SUCCESS,
                      "{%s} was accepted", bad_cfg[i][0]);
        cr_assert(strstr(err, "layer 'rs' (Rescaling)") && strstr(err, bad_cfg[i][1]), "{%s}: %s",
                  bad_cfg[i][0], err);
    }
    char err[512];
    cr_assert_neq(parse_config(bad_cfg[0][0], err, sizeof err), CK_STATUS_SUCCESS);
    cr_assert(strstr(err, "scale=[0.5,0.25] is not supported"), "the value is shown: %s", err);
    CK_OK(ctx, parse_config("\"scale\": 2, \"offset\": -1, \"trainable\": true", err, sizeof err));
    /* the C API: a non-finite scale or offset is refused by ck_model_add, the model unchanged */
    ck_model *m = NULL;
    CK_OK(ctx, ck_model_create(ctx, &m));
    const float nonfinite[4][2] = {{NAN, 0}, {INFINITY, 0}, {1, NAN}, {1, -INFINITY}};
    for (int i = 0; i < 4; ++i) {
        ck_layer_desc d;
        ck_layer_desc_init(&d, CK_LAYER_RESCALING);
        d.scale = nonfinite[i][0];
        d.offset = nonfinite[i][1];
        cr_assert_eq(ck_model_add(m, &d), CK_STATUS_BAD_PARAM);
        cr_assert(strstr(ck_context_last_error(ctx), i < 2 ? "scale" : "offset"), "%s",
                  ck_context_last_error(ctx));
        cr_assert_eq(ck_model_num_layers(m), 0);
    }
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* Keras's summary prints Rescaling with its input's shape and 0 parameters, flat inputs too. */
Test(rescale, summary_rows_and_no_parameters) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = from_text(ctx,
                            "layers.Rescaling(1./255, input_shape=(3, 5, 2)),"
                            "layers.Conv2D(4, (2, 2)), layers.Flatten(), layers.Rescaling(2.0),"
                            "layers.Dense(3, activation='softmax')",
                            2);
    char buf[4096];
    CK_OK(ctx, ck_model_summary(m, buf, sizeof buf, NULL));
    cr_assert(strstr(buf, "rescaling (Rescaling)                        (None, 3, 5, 2)         0"),
              "%s", buf);
    cr_assert(strstr(buf, "rescaling_1 (Rescaling)                      (None, 32)              0"),
              "%s", buf);
    ck_param_counts pc;
    CK_OK(ctx, ck_model_param_counts(m, &pc));
    cr_assert_eq(pc.total, (2 * 2 * 2 * 4 + 4) + (32 * 3 + 3), "only Conv2D and Dense have any");
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* Every byte value through Rescaling(1./127.5, offset=-1) (Keras's [-1, 1] example): Keras's
 * float32 result, bit for bit; 0 -> -1 and 255 -> 1 up to the float of 1/127.5. */
Test(rescale, forward_is_keras_float32_arithmetic) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = from_text(ctx,
                            "layers.Rescaling(1./127.5, offset=-1, input_shape=(16, 16, 1)),"
                            "layers.Flatten(), layers.Dense(2, activation='softmax')",
                            1);
    float x[256], p[2];
    for (int b = 0; b < 256; ++b)
        x[b] = (float)b;
    CK_OK(ctx, ck_model_predict(m, x, 1, p));
    const float s = (float)(1 / 127.5), *y = m->nodes[0].out;
    cr_assert_eq(m->nodes[0].type, CK_NODE_OTHER);
    for (int b = 0; b < 256; ++b) {
        const float want = keras_f32(x[b], s, -1.0f);
        cr_assert(memcmp(&y[b], &want, sizeof want) == 0, "byte %d: %.9g, want %.9g", b,
                  (double)y[b], (double)want);
    }
    cr_assert_eq(y[0], -1.0f);
    cr_assert_float_eq(y[255], 1.0f, 2e-7f);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* The data question: stored bytes b through Rescaling(1./255) are the loaders' b * (1/255) bit for
 * bit, so a Keras model that starts with the layer, fed the bytes (--pixels raw), predicts and
 * trains with the same bits as the model without it on the loaders' images. */
Test(rescale, raw_pixels_through_1_255_equal_the_loaders_values) {
    enum { N = 6, PER = 6 * 6 * 1 };
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
#define RS_BODY                                                                                    \
    "layers.Conv2D(3, (3, 3), activation='relu'), layers.MaxPooling2D(),"                          \
    "layers.Flatten(), layers.Dense(3, activation='softmax')"
    ck_model *a = from_text(ctx, "layers.Rescaling(1./255, input_shape=(6, 6, 1))," RS_BODY, N);
    ck_model *b = from_text(ctx, "layers.InputLayer(input_shape=(6, 6, 1))," RS_BODY, N);
    size_t n;
    CK_OK(ctx, ck_model_get_weights(b, NULL, 0, &n));
    float *w = malloc(n * sizeof *w), *wa = malloc(n * sizeof *wa), *wb = malloc(n * sizeof *wb);
    CK_OK(ctx, ck_model_get_weights(b, w, n, NULL));
    CK_OK(ctx, ck_model_set_weights(a, w, n));
    float raw[N * PER], unit[N * PER], pa[N * 3], pb[N * 3];
    int32_t y[N];
    trng r = {11};
    for (int i = 0; i < N * PER; ++i) {
        raw[i] = (float)(trng_u32(&r) % 256);
        unit[i] = raw[i] * (1.0f / 255.0f); /* data.c's loaders */
    }
    for (int i = 0; i < N; ++i)
        y[i] = (int32_t)(trng_u32(&r) % 3);
    for (int v = 0; v < 256; ++v) { /* the layer alone */
        const float got = ck_rescale_fwd((float)v, layer_of(a, 0).scale, 0.0f);
        const float want = (float)v * (1.0f / 255.0f);
        cr_assert(memcmp(&got, &want, sizeof got) == 0, "byte %d", v);
    }
    CK_OK(ctx, ck_model_predict(a, raw, N, pa));
    CK_OK(ctx, ck_model_predict(b, unit, N, pb));
    cr_assert_eq(memcmp(pa, pb, sizeof pa), 0, "predictions differ");
    for (int s = 0; s < 3; ++s) {
        ck_step_result ra, rb;
        CK_OK(ctx, ck_model_train_step(a, raw, y, N, &ra));
        CK_OK(ctx, ck_model_train_step(b, unit, y, N, &rb));
        cr_assert(ra.loss == rb.loss, "step %d: loss %.9g vs %.9g", s, ra.loss, rb.loss);
    }
    CK_OK(ctx, ck_model_get_weights(a, wa, n, NULL));
    CK_OK(ctx, ck_model_get_weights(b, wb, n, NULL));
    cr_assert_eq(memcmp(wa, wb, n * sizeof *wa), 0, "weights differ after three steps");
    /* the same model on the loaders' images: everything 255 times fainter */
    CK_OK(ctx, ck_model_predict(a, unit, N, pa));
    cr_assert_neq(memcmp(pa, pb, sizeof pa), 0);
    free(w);
    free(wa);
    free(wb);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_context_destroy(ctx);
}

/* Conv2D -> Rescaling(-0.75, offset=0.3) -> Conv2D -> Flatten -> Dense: central differences of
 * the mean loss against backward; the first conv's gradient passes through dx = dy * scale. */
Test(rescale, gradcheck_through_the_layer) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = from_text(ctx,
                            "layers.Conv2D(3, (2, 2), activation='tanh', input_shape=(5, 4, 2)),"
                            "layers.Rescaling(-0.75, offset=0.3),"
                            "layers.Conv2D(2, (2, 2), activation='tanh'),"
                            "layers.Flatten(), layers.Dense(4, activation='softmax')",
                            6);
    enum { N = 6, PER = 5 * 4 * 2 };
    float x[N * PER];
    int32_t y[N];
    trng r = {3};
    trng_fill(&r, x, sizeof x / sizeof x[0], -1, 1);
    for (int i = 0; i < N; ++i)
        y[i] = (int32_t)(trng_u32(&r) % 4);
    int first_conv;
    const int checked = t_gradcheck_model(ctx, m, x, y, N, 5, 2 * 2 * 2 * 3 + 3, &first_conv);
    cr_assert_gt(checked, 20);
    cr_assert_gt(first_conv, 2, "the first conv's gradients must be checked and non-zero");
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* BN -> Rescaling -> ReLU -> MaxPool -> Dropout: the planner fuses nothing across the layer
 * (BN+ReLU needs them adjacent) and moves nothing over it; the same weights bit for bit. */
#define RS_TRAIN_MODEL                                                                             \
    "layers.Rescaling(1./255, input_shape=(6, 6, 1)), layers.Conv2D(4, (3, 3)),"                   \
    "layers.BatchNormalization(), layers.Rescaling(2.0, offset=-0.5), layers.Activation('relu'),"  \
    "layers.MaxPooling2D(), layers.Dropout(0.25), layers.Flatten(),"                               \
    "layers.Dense(3, activation='softmax')"

static float *train_weights(ck_context *ctx, ck_model *m, int steps, size_t *count) {
    enum { N = 8, PER = 36 };
    float x[N * PER];
    int32_t y[N];
    trng r = {19};
    for (int i = 0; i < N * PER; ++i)
        x[i] = (float)(trng_u32(&r) % 256);
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

Test(rescale, planned_equals_unplanned) {
    float *w[2];
    size_t n[2];
    for (int planned = 0; planned < 2; ++planned) {
        ck_context *ctx = t_ctx(CK_DEVICE_CPU);
        char text[1024], msg[256];
        snprintf(text, sizeof text,
                 "from keras import layers, models\nmodel = models.Sequential([" RS_TRAIN_MODEL
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

/* Scale and offset are the model's: a checkpoint loads into the same model, and one of a model
 * whose Rescaling differs only in its offset is refused with nothing changed. */
Test(rescale, checkpoint_round_trip_and_mismatch) {
    char dir[] = "/tmp/cnnkit-rs-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/m.ckpt", dir);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *a = from_text(ctx, RS_TRAIN_MODEL, 8);
    size_t n;
    float *wa = train_weights(ctx, a, 2, &n);
    CK_OK(ctx, ck_model_save(a, path));
    ck_model *b = from_text(ctx, RS_TRAIN_MODEL, 8);
    CK_OK(ctx, ck_model_load(b, path));
    float *wb = malloc(n * sizeof *wb);
    CK_OK(ctx, ck_model_get_weights(b, wb, n, NULL));
    cr_assert_eq(memcmp(wa, wb, n * sizeof *wa), 0);
    char other[1024];
    snprintf(other, sizeof other, "%s", RS_TRAIN_MODEL);
    char *at = strstr(other, "offset=-0.5");
    cr_assert_not_null(at);
    memcpy(at, "offset=-0.6", 11);
    ck_model *c = from_text(ctx, other, 8);
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

/* .keras: config.json carries scale and offset as numbers that read back as the same floats. */
Test(rescale, keras_file_round_trip) {
    char dir[] = "/tmp/cnnkit-rsk-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/m.keras", dir);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *a = from_text(ctx, RS_TRAIN_MODEL, 8);
    size_t n;
    float *wa = train_weights(ctx, a, 1, &n);
    ck_status st = ck_model_save_keras(a, path);
    if (st == CK_STATUS_NOT_SUPPORTED)
        cr_skip("built without the Keras file formats");
    CK_OK(ctx, st);
    char e[256];
    char *cfg = ck_kio_write_config(a, e, sizeof e);
    cr_assert_not_null(cfg, "%s", e);
    cr_assert(strstr(cfg, "\"scale\": 0.003921569, \"offset\": 0.0") &&
                  strstr(cfg, "\"scale\": 2.0, \"offset\": -0.5"),
              "%s", cfg);
    free(cfg);
    ck_model *b = NULL;
    CK_OK(ctx, ck_model_load_keras(ctx, path, 8, &b));
    for (int i = 0; i < ck_model_num_layers(a); ++i) {
        const ck_layer_desc da = layer_of(a, i), db = layer_of(b, i);
        cr_assert(da.scale == db.scale && da.offset == db.offset, "layer %d", i);
    }
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

/* bf16 (docs/precision.md): the layer reads the bf16 batch, computes in fp32 and its stored output
 * is rounded to bf16 like every node's; its input gradient too. */
Test(rescale, bf16_stores_are_rounded) {
    enum { N = 3, PER = 4 * 4 * 2 };
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    char text[512], msg[256];
    snprintf(
        text, sizeof text,
        "model = Sequential([Conv2D(2, (1, 1), input_shape=(4, 4, 2)), Rescaling(1./3, "
        "offset=0.1), Flatten(), Dense(3)])\n"
        "model.compile(loss=SparseCategoricalCrossentropy(from_logits=True), optimizer='sgd')\n");
    ck_model *m = NULL;
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_set_precision(m, CK_PRECISION_BF16));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, N));
    float x[N * PER];
    trng r = {5};
    trng_fill(&r, x, N * PER, -2, 2);
    CK_OK(ctx, ck_model_forward_nodes(m, x, N, 1, m->num_nodes));
    const ck_node *conv = &m->nodes[0], *rs = &m->nodes[1];
    cr_assert_str_eq(rs->kind->name, "rescaling");
    const size_t cnt = (size_t)N * rs->oh * rs->ow * rs->oc;
    float *want = malloc(cnt * sizeof *want), *f32 = malloc(cnt * sizeof *f32);
    int rounded = 0;
    for (size_t i = 0; i < cnt; ++i)
        f32[i] = keras_f32(conv->out[i], (float)(1.0 / 3), 0.1f);
    ref_bf16_round(f32, want, cnt);
    for (size_t i = 0; i < cnt; ++i) {
        cr_assert(memcmp(&rs->out[i], &want[i], sizeof *want) == 0, "%zu: %.9g, want %.9g", i,
                  (double)rs->out[i], (double)want[i]);
        rounded += want[i] != f32[i];
    }
    cr_assert_gt(rounded, (int)cnt / 2, "the rounding must show on most values");
    free(want);
    free(f32);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* The functional text (x = layers.Rescaling(...)(inp)) gives the Sequential model's predictions,
 * and a 2-D input shape reads as (h, w, 1) when only value-by-value layers come before the
 * Flatten (Keras's MNIST MLP: Input((28, 28)), Rescaling(1./255), Flatten()). */
Test(rescale, functional_and_2d_inputs) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    char msg[512];
    ck_model *f = NULL;
    CK_OK(ctx, ck_model_from_keras_text(ctx,
                                        "inp = keras.Input((6, 6))\n"
                                        "x = layers.Rescaling(1./255)(inp)\n"
                                        "x = layers.Dropout(0.2)(x)\n"
                                        "out = layers.Dense(3, activation='softmax')("
                                        "layers.Flatten()(x))\n"
                                        "model = keras.Model(inp, out)\n",
                                        &f, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(f, 0, 0, 0, 2));
    ck_model *s = from_text(ctx,
                            "layers.Input((6, 6)), layers.Rescaling(1./255), layers.Dropout(0.2),"
                            "layers.Flatten(), layers.Dense(3, activation='softmax')",
                            2);
    int h, w, c;
    CK_OK(ctx, ck_model_layer_shape(s, 0, &h, &w, &c));
    cr_assert(h == 6 && w == 6 && c == 1, "%dx%dx%d", h, w, c);
    size_t n;
    CK_OK(ctx, ck_model_get_weights(s, NULL, 0, &n));
    float *wt = malloc(n * sizeof *wt), x[2 * 36], pf[6], ps[6];
    CK_OK(ctx, ck_model_get_weights(s, wt, n, NULL));
    CK_OK(ctx, ck_model_set_weights(f, wt, n));
    for (int i = 0; i < 72; ++i)
        x[i] = (float)((i * 37) % 256);
    CK_OK(ctx, ck_model_predict(f, x, 2, pf));
    CK_OK(ctx, ck_model_predict(s, x, 2, ps));
    cr_assert_eq(memcmp(pf, ps, sizeof pf), 0);
    /* a softmax on (None, 6, 6) normalizes over the 6 columns in Keras, not over one channel */
    ck_keras_model km;
    cr_assert_neq(ck_keras_parse("model = Sequential([Input((6, 6)), Rescaling(0.5), "
                                 "Activation('softmax'), Flatten(), Dense(2)])\n",
                                 &km, msg, sizeof msg),
                  CK_STATUS_SUCCESS);
    cr_assert(strstr(msg, "2-D shape") && strstr(msg, "Activation"), "%s", msg);
    cr_assert_neq(ck_keras_parse("model = Sequential([Input((6, 6)), Rescaling(0.5), "
                                 "Conv2D(2, 3), Flatten(), Dense(2)])\n",
                                 &km, msg, sizeof msg),
                  CK_STATUS_SUCCESS);
    cr_assert(strstr(msg, "2-D shape") && strstr(msg, "Conv2D"), "%s", msg);
    free(wt);
    ck_model_destroy(f);
    ck_model_destroy(s);
    ck_context_destroy(ctx);
}

/* ---- CK018: a Rescaling(1./255) on data already in [0, 1] ---------------------------------- */

static int check_data(const char *text, float lo, float hi, ck_finding *f, int cap) {
    char err[512];
    ck_keras_model km;
    cr_assert_eq(ck_keras_parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    int n = -1;
    CK_OK(NULL, ck_model_check_data(km.layers, km.count, lo, hi, f, cap, &n));
    ck_keras_model_free(&km);
    for (int i = 0; i < n && i < cap; ++i) {
        cr_assert_str_eq(f[i].code, "CK018-rescale-on-scaled-data");
        cr_assert_eq(f[i].severity, CK_SEVERITY_WARNING);
        cr_assert(strstr(f[i].reason, "docs/derivations.md §8"), "%s", f[i].reason);
        cr_assert_lt(strlen(f[i].reason), sizeof f[i].reason - 1, "reason cut: %s", f[i].reason);
    }
    return n;
}

#define SEQ(first) "model = Sequential([" first ", Conv2D(4, 3), Flatten(), Dense(10)])\n"

Test(rescale, ck018_fires_on_scaled_data_only) {
    ck_finding f[4];
    /* Keras's two documented pixel scales, on the loaders' [0, 1] */
    cr_assert_eq(check_data(SEQ("Rescaling(1./255, input_shape=(28, 28, 1))"), 0, 1, f, 4), 1);
    cr_assert_eq(f[0].layers[0], 0);
    cr_assert_float_eq(f[0].value, 1.0 / 255, 1e-9);
    cr_assert(strstr(f[0].message, "Rescaling(1./255) (layer 0) expects 0..255 pixels"), "%s",
              f[0].message);
    cr_assert(strstr(f[0].message, "spans 0.00392 instead of 1"), "%s", f[0].message);
    cr_assert(strstr(f[0].fix, "--pixels raw") && strstr(f[0].fix, "remove layer 0"), "%s",
              f[0].fix);
    cr_assert_eq(check_data(SEQ("Rescaling(scale=1/127.5, offset=-1)"), 0, 1, f, 4), 1);
    cr_assert_float_eq(f[0].value, 2.0 / 255, 1e-9);
    cr_assert(strstr(f[0].fix, "replace layer 0 by Rescaling(2.0, offset=-1.0)"), "%s", f[0].fix);
    cr_assert_eq(check_data(SEQ("Rescaling(0.00392)"), 0, 1, f, 4), 1, "within 5%% of 1/255");
    /* data in [-1, 1]: the rewrite maps them as the bytes would have been */
    cr_assert_eq(check_data(SEQ("Rescaling(1./255)"), -1, 1, f, 4), 1);
    cr_assert(strstr(f[0].fix, "replace layer 0 by Rescaling(0.5, offset=0.5)"), "%s", f[0].fix);
    /* not: raw pixels, other scales, a Rescaling that does not read the input */
    cr_assert_eq(check_data(SEQ("Rescaling(1./255)"), 0, 255, f, 4), 0);
    cr_assert_eq(check_data(SEQ("Rescaling(0.5)"), 0, 1, f, 4), 0);
    cr_assert_eq(check_data(SEQ("Rescaling(1./1000)"), 0, 1, f, 4), 0);
    cr_assert_eq(check_data("model = Sequential([Conv2D(4, 3, input_shape=(8, 8, 1)), "
                            "Rescaling(1./255), Flatten(), Dense(10)])\n",
                            0, 1, f, 4),
                 0);
    /* a graph: every layer that reads the Input */
    cr_assert_eq(check_data("inp = keras.Input((8, 8, 1))\n"
                            "a = layers.Conv2D(2, 1)(inp)\n"
                            "b = layers.Rescaling(1./255)(inp)\n"
                            "b = layers.Conv2D(2, 1)(b)\n"
                            "out = layers.Dense(3)(layers.Flatten()(layers.Add()([a, b])))\n"
                            "model = keras.Model(inp, out)\n",
                            0, 1, f, 4),
                 1);
    cr_assert_eq(f[0].layers[0], 0); /* Keras's order: the Rescaling, deepest, comes first */
    cr_assert(strstr(f[0].message, "Rescaling(1./255) (layer 0)"), "%s", f[0].message);
    /* counting with cap 0, and the refusals */
    char err[256];
    ck_keras_model km;
    cr_assert_eq(ck_keras_parse(SEQ("Rescaling(1./255)"), &km, err, sizeof err), CK_STATUS_SUCCESS);
    int n = -1;
    CK_OK(NULL, ck_model_check_data(km.layers, km.count, 0, 1, NULL, 0, &n));
    cr_assert_eq(n, 1);
    cr_assert_eq(ck_model_check_data(km.layers, km.count, 1, 1, f, 4, &n), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_check_data(km.layers, km.count, NAN, 1, f, 4, &n), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_check_data(km.layers, km.count, 0, 1, NULL, 4, &n), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_check_data(km.layers, km.count, 0, 1, f, 4, NULL), CK_STATUS_BAD_PARAM);
    ck_keras_model_free(&km);
}

/* How the order rules read a Rescaling (docs/derivations.md §8): without offset it commutes with
 * a dropout's mask on the way to a BN (Eq. 8's value unchanged) and, for a positive scale, on the
 * way to a max pool; an offset or a negative scale stops them. */
static int finding(const char *layers, const char *code, ck_finding *out) {
    char text[1024], err[512];
    snprintf(text, sizeof text, "model = Sequential([%s])\n", layers);
    ck_keras_model km;
    cr_assert_eq(ck_keras_parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    ck_finding f[16];
    int n = 0;
    CK_OK(NULL, ck_model_check(km.layers, km.count, f, 16, &n));
    ck_keras_model_free(&km);
    for (int i = 0; i < n && i < 16; ++i)
        if (!strncmp(f[i].code, code, strlen(code))) {
            *out = f[i];
            return 1;
        }
    return 0;
}

Test(rescale, order_rules_read_through_it) {
    ck_finding f;
    cr_assert(finding("Conv2D(8,(3,3)), Dropout(0.2), Rescaling(-3.0), Flatten(), "
                      "BatchNormalization(), Dense(10)",
                      "CK001", &f));
    cr_assert_float_eq(f.value, 0.8, 1e-6);
    /* an offset changes no variance: Eq. 8 and its ceiling hold on the dropout's own input */
    cr_assert(finding("Conv2D(8,(3,3)), Dropout(0.2), Rescaling(2.0, offset=1.0), Flatten(), "
                      "BatchNormalization(), Dense(10)",
                      "CK001", &f));
    cr_assert_float_eq(f.value, 0.8, 1e-6);
    /* but a dropped value is o after it, not 0: a ReLU after it is nonlinear in the mask */
    cr_assert(finding("Conv2D(8,(3,3)), Dropout(0.2), Rescaling(2.0, offset=-1.0), "
                      "Activation('relu'), BatchNormalization(), Dense(10)",
                      "CK001", &f));
    cr_assert(isnan(f.value) && strstr(f.reason, "Activation (layer 3) between is nonlinear"),
              "%g: %s", f.value, f.reason);
    /* and zeros padded beside the shifted values can take Var_inference past the ceiling */
    cr_assert(finding("Conv2D(8,(3,3)), Dropout(0.2), Rescaling(2.0, offset=5.0), ZeroPadding2D(), "
                      "BatchNormalization(), Flatten(), Dense(10)",
                      "CK001", &f));
    cr_assert(isnan(f.value), "%g: %s", f.value, f.reason);
    cr_assert(finding("Conv2D(8,(3,3)), Activation('relu'), Dropout(0.2), Rescaling(0.5), "
                      "MaxPooling2D((2,2)), Flatten(), Dense(10)",
                      "CK003", &f));
    cr_assert_float_eq(f.value, 1.248, 0.001);
    cr_assert(strstr(f.message, "through Rescaling (layer 3)"), "%s", f.message);
    cr_assert(strstr(f.message, "dropped only when all positive inputs"), "%s", f.message);
    cr_assert(!finding("Conv2D(8,(3,3)), Dropout(0.2), Rescaling(-0.5), MaxPooling2D((2,2)), "
                       "Flatten(), Dense(10)",
                       "CK003", &f),
              "a negative scale turns the max into a min");
    cr_assert(finding("Conv2D(8,(3,3)), SpatialDropout2D(0.2), Rescaling(4.0), "
                      "Activation('relu'), MaxPooling2D((2,2)), Flatten(), Dense(10)",
                      "CK004", &f));
    cr_assert_eq(f.layers[1], 4);
}

/* ---- the CLI: --pixels ------------------------------------------------------------------- */

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(p, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* IDX files of n 6x6 images, split "train" or "t10k", in dir. */
static void write_split(const char *dir, const char *split, int n, uint64_t seed) {
    unsigned char buf[16 + 64 * 36];
    char path[256];
    trng r = {seed};
    put_be32(buf, 0x803);
    put_be32(buf + 4, (uint32_t)n);
    put_be32(buf + 8, 6);
    put_be32(buf + 12, 6);
    for (int i = 0; i < n * 36; ++i)
        buf[16 + i] = (unsigned char)(trng_u32(&r) % 256);
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, split);
    write_file(path, buf, 16 + (size_t)n * 36);
    put_be32(buf, 0x801);
    for (int i = 0; i < n; ++i)
        buf[8 + i] = (unsigned char)(trng_u32(&r) % 3);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, split);
    write_file(path, buf, 8 + (size_t)n);
}

/* The weights of a checkpoint, loaded into a model of the text in file. */
static float *ckpt_weights(ck_context *ctx, const char *file, const char *ckpt, size_t *n) {
    char *t = t_read_file(file, NULL);
    ck_model *m = t_model(ctx, t, 8);
    free(t);
    CK_OK(ctx, ck_model_load(m, ckpt));
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, n));
    float *w = malloc(*n * sizeof *w);
    CK_OK(ctx, ck_model_get_weights(m, w, *n, NULL));
    ck_model_destroy(m);
    return w;
}

/* The line of out that starts with prefix, into line. */
static void line_of(const char *out, const char *prefix, char *line, size_t len) {
    const char *p = strstr(out, prefix);
    cr_assert_not_null(p, "no '%s' in: %s", prefix, out);
    const char *e = strchr(p, '\n');
    snprintf(line, len, "%.*s", (int)(e ? e - p : (ptrdiff_t)strlen(p)), p);
}

/* A model that starts with Rescaling(1./255), given the stored bytes (--pixels raw), trains to
 * the same weights bit for bit as the model without it on the default images (the bytes must be
 * exactly the stored ones: x / 255 * 255 is off by an ulp for half of them), and evaluates to the
 * same accuracy and loss; without --pixels raw evaluate warns (CK018) and differs. cnnkit check
 * reports CK018 (exit 1) unless --pixels raw; a bad --pixels value is a usage error. */
Test(rescale, cli_pixels_raw, .timeout = 60) {
    char dir[] = "/tmp/cnnkit-rscli-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    write_split(dir, "train", 32, 29);
    write_split(dir, "t10k", 40, 23);
    char with[300], without[300], ca[300], cb[300];
    snprintf(with, sizeof with, "%s/with.py", dir);
    snprintf(without, sizeof without, "%s/without.py", dir);
    snprintf(ca, sizeof ca, "%s/with.ckpt", dir);
    snprintf(cb, sizeof cb, "%s/without.ckpt", dir);
    const char *body = "Conv2D(4, (3, 3), activation='relu'), Flatten(), Dense(3, "
                       "activation='softmax')])\n";
    char text[512];
    snprintf(text, sizeof text, "model = Sequential([Rescaling(1./255, input_shape=(6, 6, 1)), %s",
             body);
    write_file(with, text, strlen(text));
    snprintf(text, sizeof text, "model = Sequential([InputLayer(input_shape=(6, 6, 1)), %s", body);
    write_file(without, text, strlen(text));
    /* the same weights in both checkpoints */
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    char *ta = t_read_file(with, NULL), *tb = t_read_file(without, NULL);
    ck_model *a = t_model(ctx, ta, 8);
    ck_model *b = t_model(ctx, tb, 8);
    free(ta);
    free(tb);
    size_t n;
    CK_OK(ctx, ck_model_get_weights(b, NULL, 0, &n));
    float *w = malloc(n * sizeof *w);
    CK_OK(ctx, ck_model_get_weights(b, w, n, NULL));
    for (size_t i = 0; i < n; ++i)
        w[i] *= 8.0f; /* large enough for the loss to show the 255-fold difference */
    CK_OK(ctx, ck_model_set_weights(a, w, n));
    CK_OK(ctx, ck_model_set_weights(b, w, n));
    CK_OK(ctx, ck_model_save(a, ca));
    CK_OK(ctx, ck_model_save(b, cb));
    char args[1200], ra[512], rb[512], rc[512];
    static char out[65536];
    snprintf(args, sizeof args, "evaluate %s --weights %s --data %s --pixels raw 2>&1", with, ca,
             dir);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 0, "%s", out);
    cr_assert_null(strstr(out, "CK018"), "%s", out);
    line_of(out, "test accuracy", ra, sizeof ra);
    snprintf(args, sizeof args, "evaluate %s --weights %s --data %s 2>&1", without, cb, dir);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 0, "%s", out);
    line_of(out, "test accuracy", rb, sizeof rb);
    cr_assert_str_eq(ra, rb);
    snprintf(args, sizeof args, "evaluate %s --weights %s --data %s 2>&1", with, ca, dir);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "warning: CK018-rescale-on-scaled-data") && strstr(out, "--pixels raw"),
              "%s", out);
    line_of(out, "test accuracy", rc, sizeof rc);
    cr_assert_str_neq(rc, rb);
    /* training: the same weights, bit for bit */
    char ka[300], kb[300];
    snprintf(ka, sizeof ka, "%s/ta.ckpt", dir);
    snprintf(kb, sizeof kb, "%s/tb.ckpt", dir);
    snprintf(args, sizeof args,
             "train %s --data %s --pixels raw --epochs 2 --batch 8 --save %s --threads 1 2>&1",
             with, dir, ka);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 0, "%s", out);
    snprintf(args, sizeof args,
             "train %s --data %s --epochs 2 --batch 8 --save %s --threads 1 2>&1", without, dir,
             kb);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 0, "%s", out);
    size_t na, nb;
    float *wa = ckpt_weights(ctx, with, ka, &na), *wb = ckpt_weights(ctx, without, kb, &nb);
    cr_assert_eq(na, nb);
    cr_assert_eq(memcmp(wa, wb, na * sizeof *wa), 0, "trained weights differ");
    free(wa);
    free(wb);
    /* check: a finding unless the data are raw pixels */
    snprintf(args, sizeof args, "check %s 2>&1", with);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 1, "%s", out);
    cr_assert(strstr(out, "warning CK018-rescale-on-scaled-data, layer 0"), "%s", out);
    snprintf(args, sizeof args, "check %s --json 2>&1", with);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 1, "%s", out);
    cr_assert(strstr(out, "\"code\": \"CK018-rescale-on-scaled-data\", \"severity\": \"warning\", "
                          "\"layers\": [0]"),
              "%s", out);
    snprintf(args, sizeof args, "check %s --pixels raw 2>&1", with);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 0, "%s", out);
    snprintf(args, sizeof args, "check %s --pixels bytes 2>&1", with);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "--pixels must be unit or raw"), "%s", out);
    snprintf(args, sizeof args, "summary %s --pixels raw 2>&1", with);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 2, "summary feeds no data: %s", out);
    free(w);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_context_destroy(ctx);
    snprintf(args, sizeof args, "rm -rf '%s'", dir);
    cr_assert_eq(system(args), 0);
}

/* The GPU (ck_cuda_rescale forward and backward) against the CPU: predictions and weights after
 * one SGD step from the same weights. The layer is exact on both; the conv and dense layers
 * differ by cuDNN's and cuBLAS's summation order, ~1e-6 relative on these sizes, so 1e-4. */
Test(rescale, gpu_matches_cpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    ck_model *mg = from_text(g, RS_TRAIN_MODEL, 8), *mc = from_text(c, RS_TRAIN_MODEL, 8);
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
