/* The layer kinds (src/host/layers/layer.h): one descriptor per type, and the parameter layout the
 * build, the initializer, get_weights and the optimizer read from their specs. */
#include "common.h"
#include "trng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnnkit/model.h"
#include "exec.h"
#include "model_internal.h"

Test(layer_kinds, one_descriptor_per_type) {
    for (int t = 0; t < CK_LAYER_TYPE_COUNT; ++t) {
        const ck_layer_kind *k = ck_layer_kind_of((ck_layer_type)t);
        cr_assert_not_null(k, "type %d has no kind", t);
        cr_assert_eq((int)k->type, t);
        cr_assert_str_eq(k->keras_name, ck_layer_type_name((ck_layer_type)t));
        cr_assert(k->base_name && k->base_name[0], "type %d: no base name", t);
        cr_assert(k->infer && k->lower, "type %d: no infer or lower", t);
        /* an element-wise kind keeps the shape, so it cannot flatten */
        cr_assert(!((k->flags & CK_LK_ELEMENTWISE) && (k->flags & CK_LK_FLATTENS)));
    }
    cr_assert_null(ck_layer_kind_of(CK_LAYER_TYPE_COUNT));
    cr_assert_null(ck_layer_kind_of((ck_layer_type)-1));
}

/* The specs of the seed model: Keras names and order, counts that add up to the model's, arrays
 * laid out back to back in params and fixed, glorot only on kernels. */
Test(layer_kinds, specs_lay_out_the_parameters) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(ctx, ck_model_from_keras_text(ctx, t_seed_cnn_text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 2));
    size_t p = 0, f = 0;
    for (int li = 0; li < m->num_layers; ++li) {
        ck_param_spec spec[CK_LAYER_MAX_PARAMS];
        size_t off[CK_LAYER_MAX_PARAMS];
        const int n = ck_model_layer_specs(m, li, spec, off);
        const ck_layer_type t = m->layers[li].type;
        if (t == CK_LAYER_CONV2D || t == CK_LAYER_DENSE) {
            cr_assert_eq(n, m->layers[li].use_bias ? 2 : 1);
            cr_assert_str_eq(spec[0].name, "kernel");
            cr_assert(spec[0].trainable && spec[0].init == CK_INIT_GLOROT_UNIFORM); /* decayed */
        } else if (t == CK_LAYER_BATCHNORM) {
            const char *names[] = {"gamma", "beta", "moving_mean", "moving_variance"};
            cr_assert_eq(n, 4);
            for (int i = 0; i < 4; ++i)
                cr_assert_str_eq(spec[i].name, names[i]);
        } else {
            cr_assert_eq(n, 0, "layer %d has weights", li);
        }
        for (int i = 0; i < n; ++i) {
            size_t *at = spec[i].trainable ? &p : &f;
            cr_assert_eq(off[i], *at, "layer %d array %d", li, i);
            *at += spec[i].count;
        }
    }
    cr_assert_eq(p, m->num_params);
    cr_assert_eq(f, m->num_fixed);
    size_t total = 0;
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, &total));
    cr_assert_eq(total, p + f);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* The optimizer's ranges: the whole trainable array in order, decayed everywhere (Keras 3's
 * optimizers decay every trainable variable: kernels, biases, BN gamma and beta), and one range
 * without weight decay. */
Test(layer_kinds, update_ranges_follow_the_specs) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(ctx, ck_model_from_keras_text(ctx, t_seed_cnn_text, &m, msg, sizeof msg));
    ck_optimizer_desc o;
    ck_optimizer_desc_init(&o, CK_OPT_SGD);
    o.weight_decay = 1e-4f;
    CK_OK(ctx, ck_model_set_optimizer(m, &o));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 2));
    size_t off, cnt, next = 0, decayed = 0;
    float wd;
    int ranges = 0;
    for (int cur = 0; ck_model_next_update_range(m, &cur, &off, &cnt, &wd); ++ranges) {
        cr_assert_eq(off, next, "range %d starts at %zu, not %zu", ranges, off, next);
        next = off + cnt;
        if (wd != 0.0f)
            decayed += cnt;
    }
    cr_assert_eq(next, m->num_params);
    cr_assert_eq(decayed, m->num_params);
    cr_assert_eq(ranges, 1, "contiguous ranges of one decay merge");
    ck_model_destroy(m);

    CK_OK(ctx, ck_model_from_keras_text(ctx, t_seed_cnn_text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 2));
    int cur = 0;
    cr_assert(ck_model_next_update_range(m, &cur, &off, &cnt, &wd));
    cr_assert(off == 0 && cnt == m->num_params && wd == 0.0f);
    cr_assert(!ck_model_next_update_range(m, &cur, &off, &cnt, &wd));
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* Every node of a plan, planned or not, runs through its kind's ops (exec.h): one executor for
 * the CPU and CUDA, no node type it does not know. Each layer type appears; CUDA ops exist for
 * every kind in a CUDA build (the GPU tests run them against the CPU). */
static const char all_kinds_text[] =
    "from keras.models import Sequential\n"
    "from keras.layers import Conv2D, MaxPooling2D, AveragePooling2D, Dense, Flatten, Dropout, "
    "BatchNormalization, Activation, SpatialDropout2D, GlobalAveragePooling2D\n"
    "model = Sequential()\n"
    "model.add(Conv2D(4, (3,3), activation='relu', input_shape=(12,12,2)))\n"
    "model.add(BatchNormalization())\n"
    "model.add(Activation('relu'))\n"
    "model.add(SpatialDropout2D(0.2))\n"
    "model.add(MaxPooling2D())\n"
    "model.add(Dropout(0.1))\n"
    "model.add(Conv2D(4, (3,3), padding='same'))\n"
    "model.add(AveragePooling2D())\n"
    "model.add(GlobalAveragePooling2D())\n"
    "model.add(Flatten())\n"
    "model.add(Dense(3, activation='softmax'))\n";

Test(layer_kinds, every_node_runs_through_its_kind) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    for (int planned = 0; planned < 2; ++planned) {
        ck_model *m = NULL;
        char msg[1024];
        CK_OK(ctx, ck_model_from_keras_text(ctx, all_kinds_text, &m, msg, sizeof msg));
        CK_OK(ctx, ck_model_set_planning(m, planned));
        CK_OK(ctx, ck_model_build(m, 0, 0, 0, 4));
        int seen[CK_NODE_SDROPOUT + 1] = {0};
        for (int i = 0; i < m->num_nodes; ++i) {
            const ck_node *n = &m->nodes[i];
            cr_assert_not_null(n->kind, "node %d has no kind", i);
            cr_assert_eq(n->kind->type, n->type, "node %d: kind %s", i, n->kind->name);
            seen[n->type] = 1;
            if (n->kind->alias)
                continue;
            for (int be = 0; be < CK_BE_COUNT; ++be) {
#ifndef CNNKIT_HAVE_CUDA
                if (be == CK_BE_CUDA)
                    continue;
#endif
                cr_assert(n->kind->ops[be].fwd && n->kind->ops[be].bwd, "node %d (%s): backend %d",
                          i, n->kind->name, be);
            }
        }
        if (!planned) /* the unplanned lowering has one node of every type */
            for (int t = 0; t <= CK_NODE_SDROPOUT; ++t)
                cr_assert(seen[t], "node type %d missing from the lowering", t);
        ck_model_destroy(m);
    }
    ck_context_destroy(ctx);
}

/* ---- the Keras classes: one binding serves the model text and config.json ---- */
#include "keras_io.h"

#include <stdio.h>

/* Layer 1 of a parse (after a Conv2D that gives an image input). */
static void bind_text(const char *layer, ck_layer_desc *d) {
    char text[512], err[512];
    snprintf(text, sizeof text,
             "from keras import layers, models\nmodel = models.Sequential([layers.Conv2D(2, 1, "
             "input_shape=(8, 8, 3)), layers.%s])\n",
             layer);
    ck_keras_model km;
    cr_assert_eq(ck_keras_parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s: %s", layer,
                 err);
    cr_assert_eq(km.count, 2);
    *d = km.layers[1];
    ck_keras_model_free(&km);
}

static void bind_json(const char *cls, const char *config, ck_layer_desc *d) {
    char json[1024], err[512];
    snprintf(json, sizeof json,
             "{\"class_name\": \"Sequential\", \"config\": {\"layers\": ["
             "{\"class_name\": \"InputLayer\", \"config\": {\"batch_shape\": [null, 8, 8, 3]}},"
             "{\"class_name\": \"Conv2D\", \"config\": {\"filters\": 2, \"kernel_size\": 1}},"
             "{\"class_name\": \"%s\", \"config\": {%s}}]}}",
             cls, config);
    ck_keras_model km;
    cr_assert_eq(ck_kio_parse_config(json, strlen(json), NULL, &km, err, sizeof err),
                 CK_STATUS_SUCCESS, "%s {%s}: %s", cls, config, err);
    cr_assert_eq(km.count, 2);
    *d = km.layers[1];
    ck_keras_model_free(&km);
}

/* The same arguments written as Python and as Keras's JSON give the same descriptor, for every
 * kind's classes; the names (automatic vs the file's) are left out of the comparison. */
Test(layer_kinds, keras_text_and_config_bind_alike) {
    static const char *const cases[][3] = {
        {"Conv2D(8, (3, 2), strides=2, padding='same', activation='relu', use_bias=False)",
         "Conv2D",
         "\"filters\": 8, \"kernel_size\": [3, 2], \"strides\": [2, 2], \"padding\": \"same\", "
         "\"activation\": \"relu\", \"use_bias\": false"},
        {"MaxPooling2D((3, 3), strides=(1, 2), padding='same')", "MaxPooling2D",
         "\"pool_size\": [3, 3], \"strides\": [1, 2], \"padding\": \"same\""},
        {"AvgPool2D(2)", "AveragePooling2D", "\"pool_size\": 2, \"strides\": null"},
        {"GlobalAveragePooling2D()", "GlobalAveragePooling2D",
         "\"data_format\": \"channels_last\""},
        {"BatchNormalization(momentum=0.9, epsilon=1e-5)", "BatchNormalization",
         "\"axis\": -1, \"momentum\": 0.9, \"epsilon\": 1e-5"},
        {"Activation('swish')", "Activation", "\"activation\": \"swish\""},
        {"ReLU(negative_slope=0.2)", "ReLU", "\"negative_slope\": 0.2"},
        {"LeakyReLU(negative_slope=0.1)", "LeakyReLU", "\"negative_slope\": 0.1"},
        {"ELU(alpha=0.5)", "ELU", "\"alpha\": 0.5"},
        {"Softmax()", "Softmax", "\"axis\": -1"},
        {"Dropout(0.3)", "Dropout", "\"rate\": 0.3, \"seed\": 7"},
        {"SpatialDropout2D(0.25)", "SpatialDropout2D", "\"rate\": 0.25"},
        {"ZeroPadding2D(((1, 2), (3, 4)))", "ZeroPadding2D", "\"padding\": [[1, 2], [3, 4]]"},
        {"Flatten()", "Flatten", "\"data_format\": \"channels_last\""},
        {"Add()", "Add", "\"trainable\": true"},
        {"Concatenate(axis=-1)", "Concatenate", "\"axis\": -1"},
        {"Rescaling(1./255, offset=-1)", "Rescaling",
         "\"scale\": 0.00392156862745098, \"offset\": -1.0"},
        {"Dense(5, activation='tanh')", "Dense", "\"units\": 5, \"activation\": \"tanh\""},
        {"Dense(5, kernel_initializer='he_normal', bias_initializer=keras.initializers.Ones())",
         "Dense",
         "\"units\": 5, \"kernel_initializer\": {\"module\": \"keras.initializers\", "
         "\"class_name\": \"HeNormal\", \"config\": {\"seed\": null}}, "
         "\"bias_initializer\": \"ones\""},
        {"GlobalMaxPool2D()", "GlobalMaxPooling2D", "\"data_format\": \"channels_last\""},
    };
    int seen[CK_LAYER_TYPE_COUNT] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        ck_layer_desc a, b;
        bind_text(cases[i][0], &a);
        bind_json(cases[i][1], cases[i][2], &b);
        memset(a.name, 0, sizeof a.name);
        memset(b.name, 0, sizeof b.name);
        cr_assert_eq(memcmp(&a, &b, sizeof a), 0, "%s: text and config.json differ", cases[i][0]);
        seen[a.type] = 1;
    }
    for (int t = 0; t < CK_LAYER_TYPE_COUNT; ++t)
        cr_assert(seen[t], "type %d (%s) has no case", t, ck_layer_type_name((ck_layer_type)t));
}

/* Every class a kind lists is found by its name, and belongs to that kind. */
Test(layer_kinds, keras_classes_are_found) {
    for (int t = 0; t < CK_LAYER_TYPE_COUNT; ++t) {
        const ck_layer_kind *k = ck_layer_kind_of((ck_layer_type)t);
        cr_assert_not_null(k->keras_classes, "%s has no Keras class", k->keras_name);
        cr_assert_str_eq(k->keras_classes[0].name, k->keras_name);
        for (const ck_keras_class *c = k->keras_classes; c->name; ++c) {
            const ck_layer_kind *found = NULL;
            cr_assert_eq(ck_keras_class_find(c->name, &found), c);
            cr_assert_eq(found, k);
        }
    }
    cr_assert_null(ck_keras_class_find("Lambda", NULL));
}

/* GlobalMaxPooling2D: each channel's maximum (the first one on a tie), its gradient to that cell
 * only; read from Keras text (both class names), a vector output, checked by hand and by finite
 * differences, and on the GPU against the CPU twin (bit-exact: one max, the same cell). */
static const char gmp_text[] = "model = Sequential()\n"
                               "model.add(Conv2D(3, 2, input_shape=(5, 4, 2)))\n"
                               "model.add(GlobalMaxPooling2D())\n"
                               "model.add(Dense(4, activation='softmax'))\n";

Test(layer_kinds, global_max_pooling2d_by_hand) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = t_model(ctx,
                          "model = Sequential()\n"
                          "model.add(layers.GlobalMaxPool2D(input_shape=(3, 2, 2)))\n"
                          "model.add(Dense(2))\n",
                          2);
    char sum[4096];
    CK_OK(ctx, ck_model_summary(m, sum, sizeof sum, NULL));
    cr_assert(strstr(sum, "global_max_pooling2d (GlobalMaxPooling2D)") && strstr(sum, "(None, 2)"),
              "%s", sum);
    /* Dense = identity, no bias: the outputs are the maxima */
    const float w[6] = {1, 0, 0, 1, 0, 0};
    CK_OK(ctx, ck_model_set_weights(m, w, 6));
    const float x[2 * 12] = {1,  -5, 3,  2,  -1, 7,  3,  0,  2,  2,  0,  1, /* sample 0 */
                             -4, -3, -2, -9, -7, -1, -6, -8, -3, -3, -5, -6};
    float p[4];
    CK_OK(ctx, ck_model_predict(m, x, 2, p)); /* softmax of the logits, the maxima */
    const double mx[4] = {3, 7, -2, -1};
    for (int s = 0; s < 2; ++s)
        for (int j = 0; j < 2; ++j) {
            const double want = 1.0 / (1.0 + exp(mx[2 * s + 1 - j] - mx[2 * s + j]));
            cr_assert(fabs(p[2 * s + j] - want) < 1e-6, "sample %d class %d: %g, want %g", s, j,
                      p[2 * s + j], want);
        }
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

Test(layer_kinds, global_max_pooling2d_gradcheck) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = t_model(ctx, gmp_text, 4);
    float x[4 * 40];
    int32_t y[4] = {0, 1, 2, 3};
    trng r = {17};
    trng_fill(&r, x, 4 * 40, -1.0f, 1.0f); /* distinct values: no ties at the maxima */
    cr_assert_gt(t_gradcheck_model(ctx, m, x, y, 4, 1, 0, NULL), 20);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

Test(layer_kinds, global_max_pooling2d_matches_cpu_cuda) {
    ck_context *g = t_cuda_ctx_or_skip(), *c = t_ctx(CK_DEVICE_CPU);
    ck_model *mg = t_model(g, gmp_text, 8), *mc = t_model(c, gmp_text, 8);
    char path[] = "/tmp/cnnkit_gmp_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    t_sync_state(c, mc, g, mg, path);
    float x[8 * 40], pg[32], pc[32];
    int32_t y[8] = {0, 1, 2, 3, 0, 1, 2, 3};
    trng r = {5};
    trng_fill(&r, x, 8 * 40, -1.0f, 1.0f);
    ck_step_result rg, rc;
    CK_OK(g, ck_model_train_step(mg, x, y, 8, &rg));
    CK_OK(c, ck_model_train_step(mc, x, y, 8, &rc));
    cr_assert(fabs(rg.loss - rc.loss) <= 1e-5 * fabs(rc.loss), "GPU %.8f CPU %.8f", rg.loss,
              rc.loss);
    CK_OK(g, ck_model_predict(mg, x, 8, pg));
    CK_OK(c, ck_model_predict(mc, x, 8, pc));
    cr_assert_lt(t_max_rel_err(pg, pc, 32), 1e-5);
    unlink(path);
    ck_model_destroy(mg), ck_model_destroy(mc);
    ck_context_destroy(g), ck_context_destroy(c);
}
