/* Keras-text parser (ck_keras_parse) and layer descriptors: the seed model, the syntax people
 * paste, errors with line and column, recovery warnings, defaults and names. */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnkit/model.h"

/* The seed model text: t_seed_cnn_text (tests/common.c). */
#define k_seed t_seed_cnn_text

/* Parses text, asserting success. */
static ck_keras_model parse_ok(const char *text) {
    ck_keras_model m;
    char err[512];
    ck_status st = ck_keras_parse(text, &m, err, sizeof err);
    cr_assert_eq(st, CK_STATUS_SUCCESS, "parse failed: %s\n---\n%s", err, text);
    return m;
}

/* Parses text, asserting failure with a message that starts with `prefix` and contains
 * `needle` (optional); *out is checked to be untouched. */
static void parse_err(const char *text, const char *prefix, const char *needle) {
    ck_keras_model m;
    memset(&m, 0xA5, sizeof m);
    ck_keras_model before = m;
    char err[512];
    ck_status st = ck_keras_parse(text, &m, err, sizeof err);
    cr_assert_eq(st, CK_STATUS_BAD_PARAM, "expected an error, got %d for\n%s", st, text);
    cr_assert_eq(strncmp(err, prefix, strlen(prefix)), 0, "message '%s' does not start with '%s'",
                 err, prefix);
    if (needle)
        cr_assert_neq(strstr(err, needle), NULL, "message '%s' does not name '%s'", err, needle);
    cr_assert_eq(memcmp(&m, &before, sizeof m), 0, "out was modified on failure");
}

/* The same layer; the Keras class it was written as (ReLU() for Activation('relu')) aside. */
static int same_desc(const ck_layer_desc *a, const ck_layer_desc *b) {
    ck_layer_desc x = *a, y = *b;
    memset(x.keras_class, 0, sizeof x.keras_class);
    memset(y.keras_class, 0, sizeof y.keras_class);
    return memcmp(&x, &y, sizeof x) == 0;
}

typedef struct want {
    ck_layer_type type;
    int units, k, stride;
    ck_activation act;
    float rate;
} want;

static void check_seed_layers(const ck_keras_model *m) {
    const want w[] = {
        {CK_LAYER_CONV2D, 32, 3, 1, CK_ACT_NONE, 0},
        {CK_LAYER_BATCHNORM, 0, 0, 0, 0, 0},
        {CK_LAYER_ACTIVATION, 0, 0, 0, CK_ACT_RELU, 0},
        {CK_LAYER_CONV2D, 32, 3, 1, CK_ACT_NONE, 0},
        {CK_LAYER_BATCHNORM, 0, 0, 0, 0, 0},
        {CK_LAYER_ACTIVATION, 0, 0, 0, CK_ACT_RELU, 0},
        {CK_LAYER_MAXPOOL2D, 0, 2, 2, CK_ACT_NONE, 0},
        {CK_LAYER_DROPOUT, 0, 0, 0, 0, 0.2f},
        {CK_LAYER_CONV2D, 64, 3, 1, CK_ACT_NONE, 0},
        {CK_LAYER_BATCHNORM, 0, 0, 0, 0, 0},
        {CK_LAYER_ACTIVATION, 0, 0, 0, CK_ACT_RELU, 0},
        {CK_LAYER_CONV2D, 64, 3, 1, CK_ACT_NONE, 0},
        {CK_LAYER_BATCHNORM, 0, 0, 0, 0, 0},
        {CK_LAYER_ACTIVATION, 0, 0, 0, CK_ACT_RELU, 0},
        {CK_LAYER_MAXPOOL2D, 0, 2, 2, CK_ACT_NONE, 0},
        {CK_LAYER_DROPOUT, 0, 0, 0, 0, 0.2f},
        {CK_LAYER_FLATTEN, 0, 0, 0, 0, 0},
        {CK_LAYER_DENSE, 512, 0, 0, CK_ACT_NONE, 0},
        {CK_LAYER_BATCHNORM, 0, 0, 0, 0, 0},
        {CK_LAYER_ACTIVATION, 0, 0, 0, CK_ACT_RELU, 0},
        {CK_LAYER_DROPOUT, 0, 0, 0, 0, 0.4f},
        {CK_LAYER_DENSE, 10, 0, 0, CK_ACT_NONE, 0},
        {CK_LAYER_ACTIVATION, 0, 0, 0, CK_ACT_SOFTMAX, 0},
    };
    const int n = (int)(sizeof w / sizeof *w);
    cr_assert_eq(m->count, n, "layers: %d, expected %d", m->count, n);
    for (int i = 0; i < n; ++i) {
        const ck_layer_desc *d = &m->layers[i];
        cr_assert_eq(d->type, w[i].type, "layer %d: type %s, expected %s", i,
                     ck_layer_type_name(d->type), ck_layer_type_name(w[i].type));
        cr_assert_str_empty(d->name, "layer %d: name '%s'", i, d->name);
        switch (d->type) {
        case CK_LAYER_CONV2D:
            cr_assert_eq(d->units, w[i].units, "layer %d filters %d", i, d->units);
            cr_assert(d->kernel_h == 3 && d->kernel_w == 3, "layer %d kernel", i);
            cr_assert(d->stride_h == 1 && d->stride_w == 1, "layer %d strides", i);
            cr_assert_eq(d->padding, CK_PADDING_VALID);
            cr_assert_eq(d->use_bias, 1);
            cr_assert_eq(d->activation, CK_ACT_NONE);
            break;
        case CK_LAYER_DENSE:
            cr_assert_eq(d->units, w[i].units, "layer %d units %d", i, d->units);
            cr_assert_eq(d->use_bias, 1);
            cr_assert_eq(d->activation, CK_ACT_NONE);
            break;
        case CK_LAYER_MAXPOOL2D:
            cr_assert(d->kernel_h == 2 && d->kernel_w == 2 && d->stride_h == 2 && d->stride_w == 2,
                      "layer %d pool %dx%d / %dx%d", i, d->kernel_h, d->kernel_w, d->stride_h,
                      d->stride_w);
            cr_assert_eq(d->padding, CK_PADDING_VALID);
            break;
        case CK_LAYER_BATCHNORM:
            cr_assert_float_eq(d->momentum, 0.99f, 1e-7f);
            cr_assert_float_eq(d->epsilon, 1e-3f, 1e-10f);
            break;
        case CK_LAYER_ACTIVATION:
            cr_assert_eq(d->activation, w[i].act, "layer %d activation %s", i,
                         ck_activation_name(d->activation));
            break;
        case CK_LAYER_DROPOUT:
            cr_assert_float_eq(d->rate, w[i].rate, 1e-7f, "layer %d rate %g", i, d->rate);
            break;
        default:
            break;
        }
        if (i == 0)
            cr_assert(d->input_h == 28 && d->input_w == 28 && d->input_c == 1,
                      "input_shape %dx%dx%d", d->input_h, d->input_w, d->input_c);
        else
            cr_assert(d->input_h == 0 && d->input_w == 0 && d->input_c == 0,
                      "layer %d has an input shape", i);
    }
    cr_assert_eq(m->has_compile, 1);
    cr_assert_str_eq(m->loss, "sparse_categorical_crossentropy");
    cr_assert_eq(m->optimizer.type, CK_OPT_ADAM);
    cr_assert_float_eq(m->optimizer.learning_rate, 1e-3f, 1e-10f);
    cr_assert_float_eq(m->optimizer.beta1, 0.9f, 1e-7f);
    cr_assert_float_eq(m->optimizer.beta2, 0.999f, 1e-7f);
    cr_assert_float_eq(m->optimizer.epsilon, 1e-7f, 1e-12f);
    /* the asker's unbalanced parentheses: recovered, with a warning naming each line */
    const char *lines[] = {"line 5: ", "line 8: ", "line 14: ", "line 17: "};
    for (int i = 0; i < 4; ++i)
        cr_assert_neq(strstr(m->warnings, lines[i]), NULL, "warnings lack '%s': %s", lines[i],
                      m->warnings);
    cr_assert_neq(strstr(m->warnings, "line 5: unbalanced parentheses, statement closed at end "
                                      "of line"),
                  NULL, "%s", m->warnings);
    cr_assert_eq(strstr(m->warnings, "line 6"), NULL, "%s", m->warnings);
}

Test(keras_parse, seed_text) {
    ck_keras_model m = parse_ok(k_seed);
    check_seed_layers(&m);
    ck_keras_model_free(&m);
    cr_assert_null(m.layers);
    cr_assert_eq(m.count, 0);
}

/* examples/seed_cnn.py: found next to this source file, or from the repo root / build dirs. */
static char *read_seed_file(void) {
    char here[1024];
    snprintf(here, sizeof here, "%s", __FILE__);
    char *slash = strrchr(here, '/');
    if (slash)
        strcpy(slash + 1, "../examples/seed_cnn.py");
    const char *paths[] = {slash ? here : "examples/seed_cnn.py", "examples/seed_cnn.py",
                           "../examples/seed_cnn.py", "../../examples/seed_cnn.py"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; ++i) {
        FILE *f = fopen(paths[i], "rb");
        if (!f)
            continue;
        char *buf = (char *)calloc(1, 1 << 16);
        size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
        fclose(f);
        if (buf && n > 0)
            return buf;
        free(buf);
    }
    return NULL;
}

Test(keras_parse, seed_example_file) {
    char *text = read_seed_file();
    cr_assert_not_null(text, "examples/seed_cnn.py not found (run from the repository root)");
    cr_assert_str_eq(text, k_seed, "examples/seed_cnn.py differs from the seed text of this test");
    ck_keras_model m = parse_ok(text);
    check_seed_layers(&m);
    ck_keras_model_free(&m);
    free(text);
}

Test(keras_parse, sequential_list_form) {
    const char *text =
        "import tensorflow as tf\n"
        "from tensorflow import keras\n"
        "from tensorflow.keras import layers\n"
        "\n"
        "num_classes = 10\n"
        "model = keras.Sequential(\n"
        "    [\n"
        "        keras.Input(shape=(28, 28, 1)),\n"
        "        layers.Conv2D(32, kernel_size=(3, 3), activation=\"relu\", padding='same'),\n"
        "        layers.MaxPooling2D(pool_size=(2, 2)),\n"
        "        tf.keras.layers.Conv2D(64, 3,\n"
        "                               strides=2, use_bias=False, name='conv_b'),\n"
        "        layers.BatchNormalization(),\n"
        "        layers.LeakyReLU(alpha=0.1),\n"
        "        layers.SpatialDropout2D(0.1),\n"
        "        layers.GlobalAveragePooling2D(),\n"
        "        layers.Dropout(0.5),\n"
        "        layers.Dense(num_classes, activation=\"softmax\"),\n"
        "    ],\n"
        "    name='mnist',\n"
        ")\n";
    ck_keras_model m = parse_ok(text);
    cr_assert_eq(m.count, 9);
    cr_assert_str_empty(m.warnings, "%s", m.warnings);
    const ck_layer_desc *L = m.layers;
    cr_assert_eq(L[0].type, CK_LAYER_CONV2D);
    cr_assert(L[0].input_h == 28 && L[0].input_w == 28 && L[0].input_c == 1);
    cr_assert_eq(L[0].padding, CK_PADDING_SAME);
    cr_assert_eq(L[0].activation, CK_ACT_RELU);
    cr_assert_eq(L[1].type, CK_LAYER_MAXPOOL2D);
    cr_assert(L[1].stride_h == 2 && L[1].stride_w == 2);
    cr_assert_eq(L[2].units, 64);
    cr_assert(L[2].kernel_h == 3 && L[2].kernel_w == 3 && L[2].stride_h == 2 && L[2].stride_w == 2);
    cr_assert_eq(L[2].use_bias, 0);
    cr_assert_str_eq(L[2].name, "conv_b");
    cr_assert_eq(L[3].type, CK_LAYER_BATCHNORM);
    cr_assert_eq(L[4].type, CK_LAYER_ACTIVATION);
    cr_assert_eq(L[4].activation, CK_ACT_LEAKY_RELU);
    cr_assert_float_eq(L[4].alpha, 0.1f, 1e-7f);
    cr_assert_eq(L[5].type, CK_LAYER_SPATIAL_DROPOUT2D);
    cr_assert_float_eq(L[5].rate, 0.1f, 1e-7f);
    cr_assert_eq(L[6].type, CK_LAYER_GLOBALAVGPOOL2D);
    cr_assert_eq(L[7].type, CK_LAYER_DROPOUT);
    cr_assert_eq(L[8].type, CK_LAYER_DENSE);
    cr_assert_eq(L[8].units, 10);
    cr_assert_eq(L[8].activation, CK_ACT_SOFTMAX);
    cr_assert_eq(m.has_compile, 0);
    cr_assert_eq(m.optimizer.type, CK_OPT_ADAM); /* defaults without compile */
    cr_assert_float_eq(m.optimizer.learning_rate, 1e-3f, 1e-10f);
    cr_assert_str_empty(m.loss);
    ck_keras_model_free(&m);

    /* layers= keyword, a one-line list, a tuple, class-style activations */
    m = parse_ok("model = Sequential(layers=[Flatten(input_shape=(28, 28)), Dense(64), ReLU(), "
                 "ELU(alpha=0.5), Dense(10), Softmax()])\n");
    cr_assert_eq(m.count, 6);
    cr_assert(m.layers[0].input_h == 28 && m.layers[0].input_w == 28 && m.layers[0].input_c == 1,
              "Flatten(input_shape=(28, 28)) reads as 28 x 28 x 1");
    cr_assert_eq(m.layers[2].activation, CK_ACT_RELU);
    cr_assert_eq(m.layers[3].activation, CK_ACT_ELU);
    cr_assert_float_eq(m.layers[3].alpha, 0.5f, 1e-7f);
    cr_assert_eq(m.layers[5].activation, CK_ACT_SOFTMAX);
    ck_keras_model_free(&m);
}

Test(keras_parse, keyword_and_positional_variants) {
    /* each pair must give identical descriptors */
    const char *pairs[][2] = {
        {"Conv2D(32, (3, 3), (2, 2), 'same')",
         "Conv2D(filters=32, kernel_size=3, strides=2, padding=\"same\")"},
        {"Conv2D(16, 5, activation='relu', use_bias=True, kernel_initializer='glorot_uniform', "
         "bias_initializer='zeros', name='c', trainable=True)",
         "layers.Conv2D(kernel_size=[5, 5], filters=16, activation=\"relu\", name=\"c\", "
         "strides=(1, 1), padding='valid', data_format='channels_last', dilation_rate=1, "
         "kernel_regularizer=None,)"},
        {"Dense(10, 'relu')", "Dense(units=10, activation='relu')"},
        {"Dense(10, activation=None)", "keras.layers.Dense(10, activation='linear')"},
        {"Dense(10, activation=tf.nn.relu)", "Dense(10, activation='relu')"},
        {"Dropout(0.3)", "Dropout(rate=0.3)"},
        {"SpatialDropout2D(0.25)", "SpatialDropout2D(rate=0.25, data_format=None)"},
        {"MaxPooling2D()", "MaxPooling2D(pool_size=(2, 2), strides=None, padding='valid')"},
        {"MaxPooling2D((3, 3), None, 'same')", "MaxPool2D(pool_size=3, strides=3, padding='same')"},
        {"MaxPooling2D(3, 2)", "MaxPooling2D(pool_size=(3, 3), strides=(2, 2))"},
        {"AveragePooling2D()", "AvgPool2D(2)"},
        {"BatchNormalization()", "BatchNormalization(axis=-1, momentum=0.99, epsilon=0.001, "
                                 "center=True, scale=True)"},
        {"BatchNormalization(momentum=0.9, epsilon=1e-5)", "BatchNormalization(-1, 0.9, 1e-5)"},
        {"Activation('relu')", "ReLU()"},
        {"Activation('leaky_relu')", "LeakyReLU(negative_slope=0.2)"},
        {"LeakyReLU()", "LeakyReLU(alpha=0.3)"},
        {"LeakyReLU(0.1)", "ReLU(negative_slope=0.1)"},
        {"Activation('elu')", "ELU()"},
        {"Activation(activation='softmax')", "Softmax(axis=-1)"},
        {"Activation('silu')", "Activation('swish')"},
        {"GlobalAveragePooling2D()", "GlobalAvgPool2D(keepdims=False)"},
        {"Flatten()", "Flatten(data_format='channels_last')"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; ++i) {
        char a[512], b[512];
        snprintf(a, sizeof a, "model = Sequential()\nmodel.add(%s)\n", pairs[i][0]);
        snprintf(b, sizeof b, "model = Sequential()\nmodel.add(%s)\n", pairs[i][1]);
        ck_keras_model ma = parse_ok(a), mb = parse_ok(b);
        cr_assert_eq(ma.count, 1);
        cr_assert_eq(mb.count, 1);
        cr_assert(same_desc(&ma.layers[0], &mb.layers[0]), "%s and %s differ", pairs[i][0],
                  pairs[i][1]);
        ck_keras_model_free(&ma);
        ck_keras_model_free(&mb);
    }
    /* values of a few of them */
    ck_keras_model m = parse_ok("model = Sequential()\nmodel.add(MaxPooling2D((3, 3), None, "
                                "'same'))\nmodel.add(Conv2D(32, (3, 5), (2, 1), 'same'))\n"
                                "model.add(Activation('leaky_relu'))\n");
    cr_assert(m.layers[0].kernel_h == 3 && m.layers[0].stride_h == 3 && m.layers[0].stride_w == 3);
    cr_assert_eq(m.layers[0].padding, CK_PADDING_SAME);
    cr_assert(m.layers[1].kernel_h == 3 && m.layers[1].kernel_w == 5);
    cr_assert(m.layers[1].stride_h == 2 && m.layers[1].stride_w == 1);
    cr_assert_float_eq(m.layers[2].alpha, 0.2f, 1e-7f); /* keras.activations.leaky_relu */
    ck_keras_model_free(&m);
}

Test(keras_parse, compile_optimizers) {
    ck_keras_model m = parse_ok("model = Sequential()\nmodel.add(Dense(10, activation='softmax'))\n"
                                "model.compile(optimizer=Adam(learning_rate=5e-4, beta_1=0.8), "
                                "loss='categorical_crossentropy', metrics=['accuracy'])\n");
    cr_assert_eq(m.has_compile, 1);
    cr_assert_eq(m.optimizer.type, CK_OPT_ADAM);
    cr_assert_float_eq(m.optimizer.learning_rate, 5e-4f, 1e-10f);
    cr_assert_float_eq(m.optimizer.beta1, 0.8f, 1e-7f);
    cr_assert_float_eq(m.optimizer.beta2, 0.999f, 1e-7f);
    cr_assert_float_eq(m.optimizer.epsilon, 1e-7f, 1e-12f);
    cr_assert_str_eq(m.loss, "categorical_crossentropy");
    ck_keras_model_free(&m);

    m = parse_ok("model = Sequential()\nmodel.add(Dense(10, activation='softmax'))\n"
                 "model.compile(loss=\"sparse_categorical_crossentropy\",\n"
                 "              optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9,\n"
                 "                                             nesterov=True))\n");
    cr_assert_eq(m.optimizer.type, CK_OPT_SGD);
    cr_assert_float_eq(m.optimizer.learning_rate, 0.01f, 1e-9f);
    cr_assert_float_eq(m.optimizer.momentum, 0.9f, 1e-7f);
    cr_assert_eq(m.optimizer.nesterov, 1);
    cr_assert_str_eq(m.loss, "sparse_categorical_crossentropy");
    cr_assert_str_empty(m.warnings, "%s", m.warnings);
    ck_keras_model_free(&m);

    /* lr= (old Keras), a variable, positional arguments, string optimizers */
    m = parse_ok("lr = 0.002\nopt = SGD(lr=lr / 2)\nmodel = Sequential()\nmodel.add(Dense(10, "
                 "activation='softmax'))\n"
                 "model.compile(opt, 'sparse_categorical_crossentropy', ['acc'])\n");
    cr_assert_eq(m.optimizer.type, CK_OPT_SGD);
    cr_assert_float_eq(m.optimizer.learning_rate, 0.001f, 1e-9f);
    cr_assert_float_eq(m.optimizer.momentum, 0.0f, 0);
    cr_assert_eq(m.optimizer.nesterov, 0);
    ck_keras_model_free(&m);

    m = parse_ok("model = Sequential()\nmodel.add(Dense(10, "
                 "activation='softmax'))\nmodel.compile(optimizer='sgd', "
                 "loss=keras.losses.SparseCategoricalCrossentropy())\n");
    cr_assert_eq(m.optimizer.type, CK_OPT_SGD);
    cr_assert_float_eq(m.optimizer.learning_rate, 0.01f, 1e-9f);
    cr_assert_str_eq(m.loss, "sparse_categorical_crossentropy");
    ck_keras_model_free(&m);

    m = parse_ok("model = Sequential()\nmodel.add(Dense(10, activation='softmax'))\n"
                 "model.compile(optimizer=Adam(1e-4), loss='sparse_categorical_crossentropy')\n");
    cr_assert_float_eq(m.optimizer.learning_rate, 1e-4f, 1e-11f);
    ck_keras_model_free(&m);

    /* RMSprop: by name, by class, and as compile's default (Keras's) */
    const char *rms_texts[] = {"model.compile(optimizer='rmsprop')\n", "model.compile()\n",
                               "model.compile(loss='sparse_categorical_crossentropy')\n"};
    for (int k = 0; k < 3; ++k) {
        char t[256];
        snprintf(t, sizeof t,
                 "model = Sequential()\nmodel.add(Dense(10, activation='softmax'))\n%s",
                 rms_texts[k]);
        m = parse_ok(t);
        cr_assert_eq(m.optimizer.type, CK_OPT_RMSPROP, "%s", rms_texts[k]);
        cr_assert(m.optimizer.learning_rate == 1e-3f && m.optimizer.rho == 0.9f &&
                      m.optimizer.momentum == 0.0f && m.optimizer.epsilon == 1e-7f &&
                      !m.optimizer.centered,
                  "Keras's RMSprop defaults: %s", rms_texts[k]);
        ck_keras_model_free(&m);
    }
    m = parse_ok("from keras.optimizers import RMSprop\nmodel = Sequential()\n"
                 "model.add(Dense(10, activation='softmax'))\n"
                 "model.compile(optimizer=RMSprop(0.01, 0.8, 0.5, 1e-6, weight_decay=0.1))\n");
    cr_assert(m.optimizer.type == CK_OPT_RMSPROP && m.optimizer.learning_rate == 0.01f &&
              m.optimizer.rho == 0.8f && m.optimizer.momentum == 0.5f &&
              m.optimizer.epsilon == 1e-6f && m.optimizer.weight_decay == 0.1f &&
              !m.optimizer.centered);
    ck_keras_model_free(&m);
    m = parse_ok("model = Sequential()\nmodel.add(Dense(10, activation='softmax'))\n"
                 "model.compile(optimizer=keras.optimizers.RMSprop(centered=True, rho=0.95))\n");
    cr_assert(m.optimizer.type == CK_OPT_RMSPROP && m.optimizer.centered &&
              m.optimizer.rho == 0.95f);
    ck_keras_model_free(&m);
    parse_err("model = Sequential()\nmodel.add(Dense(10, activation='softmax'))\n"
              "model.compile(optimizer=RMSprop(momentum=0.9, centered=True))\n",
              "line 3, column 47: ", "centered");
    parse_err("model = Sequential()\nmodel.add(Dense(10, activation='softmax'))\n"
              "model.compile(optimizer=RMSprop(rho=1.0))\n",
              "line 3, column 37: ", "rho");
    m = parse_ok("model = Sequential()\nmodel.add(Dense(10, activation='softmax'))\n"
                 "model.compile(optimizer='adadelta')\n");
    cr_assert(m.optimizer.type == CK_OPT_ADADELTA && m.optimizer.learning_rate == 1e-3f &&
              m.optimizer.rho == 0.95f && m.optimizer.epsilon == 1e-7f);
    ck_keras_model_free(&m);
    m = parse_ok("model = Sequential()\nmodel.add(Dense(10, activation='softmax'))\n"
                 "model.compile(optimizer=keras.optimizers.Adadelta(1.0, 0.9, epsilon=1e-6))\n");
    cr_assert(m.optimizer.type == CK_OPT_ADADELTA && m.optimizer.learning_rate == 1.0f &&
              m.optimizer.rho == 0.9f && m.optimizer.epsilon == 1e-6f);
    ck_keras_model_free(&m);
    parse_err("model = Sequential()\nmodel.add(Dense(10, "
              "activation='softmax'))\nmodel.compile(optimizer='adagrad')\n",
              "line 3, column 25: ", "adagrad");
    parse_err("model = Sequential()\nmodel.add(Dense(10, "
              "activation='softmax'))\nmodel.compile(loss='mse', "
              "optimizer='adam')\n",
              "line 3, column 20: ", "mse");
    parse_err("model = Sequential()\nmodel.add(Dense(10, activation='softmax'))\n"
              "model.compile(optimizer=Adam(learning_rate=0.1, clipnorm=1.0))\n",
              "line 3, column 49: ", "clipnorm");
    parse_err("model = Sequential()\nmodel.add(Dense(10, activation='softmax'))\n"
              "model.compile(optimizer=SGD(0.1, momentum=2))\n",
              "line 3, column 43: ", "momentum");
    /* the loss against the last layer: logits need from_logits=True, a softmax must not get it */
    m = parse_ok("model = Sequential([Dense(10)])\n"
                 "model.compile(optimizer='adam', "
                 "loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))\n");
    cr_assert_eq(m.from_logits, 1);
    ck_keras_model_free(&m);
    parse_err("model = Sequential([Dense(10)])\n"
              "model.compile(optimizer='adam', loss='sparse_categorical_crossentropy')\n",
              "line 2, column 38: ", "from_logits=True");
    parse_err("model = Sequential([Dense(10, activation='softmax')])\n"
              "model.compile(optimizer='adam', "
              "loss=SparseCategoricalCrossentropy(from_logits=True))\n",
              "line 2, column 38: ", "second softmax");
    /* from_logits=None is Keras's falsy default; reduction=None is no reduction: refused */
    m = parse_ok("model = Sequential([Dense(10, activation='softmax')])\n"
                 "model.compile(optimizer='adam', "
                 "loss=SparseCategoricalCrossentropy(from_logits=None))\n");
    cr_assert_eq(m.from_logits, 0);
    ck_keras_model_free(&m);
    parse_err("model = Sequential([Dense(10, activation='softmax')])\n"
              "model.compile(optimizer='adam', "
              "loss=SparseCategoricalCrossentropy(reduction=None))\n",
              "line 2, column ", "reduction");
    /* no compile: nothing to contradict (cnnkit reads outputs without a softmax as logits) */
    m = parse_ok("model = Sequential([Dense(10)])\n");
    cr_assert_eq(m.from_logits, 0);
    ck_keras_model_free(&m);
}

Test(keras_parse, comments_imports_and_other_statements) {
    const char *text =
        "# A CNN for Fashion-MNIST\n"
        "import numpy as np\n"
        "from tensorflow.keras.models import Sequential  # the model\n"
        "from tensorflow.keras.layers import (Conv2D,\n"
        "                                     Dense, Flatten)\n"
        "\n"
        "\"\"\"A docstring with model.add(Dense(3)) inside\n"
        "   over two lines.\"\"\"\n"
        "batch_size = 128\n"
        "epochs = 10; verbose = 1\n"
        "(x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()\n"
        "x_train = x_train.reshape(-1, 28, 28, 1).astype('float32') / 255.0\n"
        "print('train', x_train.shape, {'a': 1})\n"
        "def build():\n"
        "    model = Sequential()  # inside a function\n"
        "    model.add(Conv2D(8, 3, input_shape=(28, 28, 1)))\n"
        "    model.add(Flatten())\n"
        "    model.add(Dense(10, activation='softmax'))\n"
        "    return model\n"
        "\n"
        "if __name__ == '__main__':\n"
        "    model = build()\n"
        "    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy')\n"
        "    model.summary()\n"
        "    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs,\n"
        "                        validation_data=(x_test, y_test))\n"
        "    model.evaluate(x_test, y_test, verbose=0)\n"
        "    model.save('m.h5')\n";
    ck_keras_model m = parse_ok(text);
    cr_assert_eq(m.count, 3);
    cr_assert_eq(m.layers[0].type, CK_LAYER_CONV2D);
    cr_assert_eq(m.layers[1].type, CK_LAYER_FLATTEN);
    cr_assert_eq(m.layers[2].type, CK_LAYER_DENSE);
    cr_assert_eq(m.has_compile, 1);
    cr_assert_str_empty(m.warnings, "%s", m.warnings);
    ck_keras_model_free(&m);
}

Test(keras_parse, variables_and_arithmetic) {
    ck_keras_model m = parse_ok("img_rows, img_cols = 28, 28\n"
                                "input_shape = (img_rows, img_cols, 1)\n"
                                "num_classes = 10\n"
                                "model = Sequential()\n"
                                "model.add(Conv2D(2 ** 5, kernel_size=(3, 3), "
                                "input_shape=input_shape))\n"
                                "model.add(Dropout(1 / 4))\n"
                                "model.add(Dense(num_classes * 2 - 1))\n");
    cr_assert(m.layers[0].units == 32 && m.layers[0].input_h == 28 && m.layers[0].input_c == 1);
    cr_assert_float_eq(m.layers[1].rate, 0.25f, 1e-7f);
    cr_assert_eq(m.layers[2].units, 19);
    ck_keras_model_free(&m);
    /* a variable that cannot be evaluated is named in the error */
    parse_err("n = x_train.shape[1]\nmodel = Sequential()\nmodel.add(Dense(n))\n",
              "line 3, column 17: ", "'n' (set at line 1");
    /* augmented assignments were skipped: filters *= 2 left Conv2D at 16 (Keras: 32) */
    m = parse_ok("filters = 16\nfilters *= 2\nrate = 0.5\nrate -= 0.25\nk = 7\nk //= 2\n"
                 "k **= 1\nmodel = Sequential()\n"
                 "model.add(Conv2D(filters, k, input_shape=(8, 8, 1)))\n"
                 "model.add(Dropout(rate))\n");
    cr_assert(m.layers[0].units == 32 && m.layers[0].kernel_h == 3, "%d %d", m.layers[0].units,
              m.layers[0].kernel_h);
    cr_assert_float_eq(m.layers[1].rate, 0.25f, 1e-7f);
    ck_keras_model_free(&m);
    parse_err("n = 4\nn /= 0\nmodel = Sequential()\nmodel.add(Dense(n))\n",
              "line 4, column 17: ", "'n' (set at line 2 to a division by zero)");
    /* on a tensor Keras adds an operation layer: refused where it stands, not dropped */
    parse_err("inputs = keras.Input(shape=(8, 8, 1))\nx = layers.Conv2D(4, 3)(inputs)\n"
              "y = layers.Conv2D(4, 3)(inputs)\nx += y\noutputs = layers.Dense(2)("
              "layers.Flatten()(x))\nmodel = keras.Model(inputs, outputs)\n",
              "line 4, column 3: 'x += ...' on a tensor", "layers.Add()");
    /* a def's body is read at each call, with the arguments bound; its names are its own: an
     * unused def block(x) rebinding x made the model read its layer (239 parameters, Keras 91) */
    m = parse_ok("inputs = keras.Input(shape=(8, 8, 1))\nx = layers.Conv2D(4, 3)(inputs)\n"
                 "def block(x):\n    x = layers.Conv2D(4, 3)(x)\n    return x\n"
                 "outputs = layers.Dense(2)(layers.Flatten()(x))\nmodel = keras.Model(inputs, "
                 "outputs)\n");
    cr_assert_eq(m.count, 3, "%d layers", m.count);
    ck_keras_model_free(&m);
    /* a parameter takes the argument, never the global of its name (build_model(num_classes=
     * 100) built Dense(10) from the global: the real-model-files audit) */
    m = parse_ok("num_classes = 10\ndef build_model(num_classes, width=8):\n"
                 "    model = Sequential()\n    model.add(Dense(width, input_shape=(4,)))\n"
                 "    model.add(Dense(num_classes))\n    return model\n"
                 "net = build_model(num_classes=100)\nnet.compile(optimizer='sgd')\n");
    cr_assert(m.count == 2 && m.layers[0].units == 8 && m.layers[1].units == 100);
    cr_assert(m.has_compile && m.optimizer.type == CK_OPT_SGD, "net is the model");
    ck_keras_model_free(&m);
    /* a helper that adds layers runs at each call: twice, in a loop, never */
    m = parse_ok("model = Sequential()\nmodel.add(Dense(8, input_shape=(4,)))\n"
                 "def block(m, units=8):\n    m.add(Dense(units))\nblock(model)\n"
                 "block(model, units=3)\nfor i in range(2):\n    block(model, 5 + i)\n"
                 "def unused():\n    model.add(Dense(99))\n");
    cr_assert(m.count == 5 && m.layers[1].units == 8 && m.layers[2].units == 3 &&
                  m.layers[3].units == 5 && m.layers[4].units == 6,
              "%d layers", m.count);
    ck_keras_model_free(&m);
    /* calls with the wrong arguments are Python's TypeErrors, named where they are */
    parse_err("def block(x, f):\n    return x\ny = block(1)\n",
              "line 3, column 5: ", "expected argument f of 'block' (line 1)");
    parse_err("def block(x):\n    return x\ny = block(1, 2)\n",
              "line 3, column 14: ", "positional arguments for 'block'");
    parse_err("def block(x):\n    return x\ny = block(1, g=2)\n",
              "line 3, column 14: ", "unknown argument g for 'block'");
    parse_err("def f(n):\n    return f(n - 1)\nm = f(3)\n", "line 2, column 12: ", "recursion");
    /* a name assigned in a branch or loop: which assignment Python's run leaves, the text does
     * not say when the condition is not a constant (the else branch's shape was taken where the
     * if branch runs) */
    parse_err(
        "import numpy as np\nif np.random.rand() > 0.5:\n    input_shape = (28, 28, 1)\n"
        "else:\n    input_shape = (32, 32, 3)\nmodel = Sequential()\n"
        "model.add(Conv2D(4, 3, input_shape=input_shape))\n",
        "line 7, column 36: ", "changed inside the 'else' at line 4, which cnnkit does not run");
    /* ... and when it is one, the branch Python runs is read and the others are not: constants
     * compared with == / !=, K.image_data_format() is 'channels_last' (Keras-2's mnist_cnn.py) */
    m = parse_ok("DATASET = 'mnist'\nif DATASET == 'mnist':\n    input_shape = (28, 28, 1)\n"
                 "elif DATASET == 'cifar':\n    input_shape = (32, 32, 3)\nelse:\n"
                 "    input_shape = (64, 64, 3)\nmodel = Sequential()\n"
                 "model.add(Conv2D(4, 3, input_shape=input_shape))\n");
    cr_assert(m.layers[0].input_h == 28 && m.layers[0].input_c == 1);
    ck_keras_model_free(&m);
    m = parse_ok("from keras import backend as K\nif K.image_data_format() == 'channels_first':\n"
                 "    input_shape = (1, 28, 28)\nelse:\n    input_shape = (28, 28, 1)\n"
                 "model = Sequential()\nif K.image_data_format() != 'channels_last':\n"
                 "    model.add(Conv2D(8, 3, input_shape=input_shape))\nelse:\n"
                 "    model.add(Conv2D(4, 3, input_shape=input_shape))\n"
                 "USE_BN = False\nif USE_BN:\n    model.add(BatchNormalization())\n");
    cr_assert(m.count == 1 && m.layers[0].units == 4 && m.layers[0].input_h == 28 &&
              m.layers[0].input_c == 1);
    ck_keras_model_free(&m);
    /* from ... import A as B: B(...) is A(...) */
    m = parse_ok("from keras.layers import BatchNormalization as BN, MaxPooling2D as Pool\n"
                 "from keras.optimizers import SGD as Opt\nmodel = Sequential()\n"
                 "model.add(Conv2D(4, 3, input_shape=(8, 8, 1)))\nmodel.add(BN(momentum=0.9))\n"
                 "model.add(Pool(2))\nmodel.compile(optimizer=Opt(momentum=0.5))\n");
    cr_assert(m.count == 3 && m.layers[1].type == CK_LAYER_BATCHNORM &&
              m.layers[1].momentum == 0.9f && m.layers[2].type == CK_LAYER_MAXPOOL2D);
    cr_assert(m.optimizer.type == CK_OPT_SGD && m.optimizer.momentum == 0.5f);
    ck_keras_model_free(&m);
    /* Keras 3 refuses a negative slope (ValueError): so does the reader */
    parse_err("model = Sequential([Dense(4, input_shape=(3,)), LeakyReLU(negative_slope=-0.5)])\n",
              "line 1, column 74: expected a number >= 0 for negative_slope of LeakyReLU", NULL);
}

/* What of Python the reader runs: each case against what Python's run makes (worked by hand). */
Test(keras_parse, runs_calls_loops_and_conditions) {
    /* continue, zip, a return inside a loop, and / or returning an operand, a conditional
     * expression, a statement that only calls */
    ck_keras_model m = parse_ok(
        "def widths(base, n):\n    out = []\n    for i in range(n):\n        out = out + [base * 2 "
        "** i]\n"
        "    return out\n"
        "def first_over(xs, t):\n    for x in xs:\n        if x > t:\n            return x\n"
        "    return None\n"
        "def add_block(m, units, act=None):\n    m.add(Dense(units, activation=act or 'relu'))\n"
        "model = Sequential()\nmodel.add(Dense(4, input_shape=(3,)))\n"
        "for w, skip in zip(widths(2, 4), [False, True, False]):\n    if skip:\n        continue\n"
        "    add_block(model, w)\n"
        "add_block(model, first_over([1, 5, 9], 4), act='tanh' if 2 >= 3 else 'sigmoid')\n"
        "print(add_block(model, 7))\n");
    cr_assert_eq(m.count, 5, "%d layers", m.count);
    const int units[5] = {4, 2, 8, 5, 7};
    const ck_activation acts[5] = {CK_ACT_NONE, CK_ACT_RELU, CK_ACT_RELU, CK_ACT_SIGMOID,
                                   CK_ACT_RELU};
    for (int i = 0; i < 5; ++i)
        cr_assert(m.layers[i].units == units[i] && m.layers[i].activation == acts[i],
                  "layer %d: %d units, activation %d", i, m.layers[i].units,
                  (int)m.layers[i].activation);
    ck_keras_model_free(&m);
    /* what the reader cannot know is not run, and what depends on it is refused */
    parse_err("def build(n):\n    model = Sequential()\n    for i in range(n):\n"
              "        model.add(Dense(4))\n    return model\nmodel = build(len(x_train))\n",
              "line 4, column 9: ", "'for' at line 3");
    parse_err(
        "def block(x):\n    if x.shape[1] > 4:\n        return 1\n    return 2\ny = block(3)\n",
        "line 3, column 9: expected return outside conditionals and loops that cnnkit cannot "
        "run",
        "'if' at line 2");
    parse_err("model = Sequential()\nfor i in range(3):\n    if x_train.ndim == 4:\n        break\n"
              "    model.add(Dense(4))\n",
              "line 4, column 9: expected break outside", "'if' at line 3");
    /* the text's size bound: runs of many statements end with an error, not a hang */
    parse_err("for i in range(4096):\n    for j in range(4096):\n        x = i\n",
              "line 3, column 9: ", "statements read");
}

/* The running reader's audit (each case against real Keras 3.15.1 run on the same file): Python's
 * semantics where the reader runs the text, a refusal where it cannot know, never a different
 * model. units(m) lists the Dense units of a parse. */
static void dense_units(const char *text, const int *want, int n) {
    ck_keras_model m = parse_ok(text);
    int k = 0;
    for (int i = 0; i < m.count; ++i)
        if (m.layers[i].type == CK_LAYER_DENSE) {
            cr_assert(k < n && m.layers[i].units == want[k], "Dense %d: %d units\n%s", k,
                      m.layers[i].units, text);
            ++k;
        }
    cr_assert_eq(k, n, "%d Dense layers, %d expected\n%s", k, n, text);
    ck_keras_model_free(&m);
}

#define SEQ20 "m = keras.Sequential([keras.Input(shape=(20,))])\n"

Test(keras_parse, runs_as_python_or_refuses) {
    /* a call in an if's condition runs there; the else of a loop that ends in break does not */
    dense_units("def pick(sizes):\n    for s in sizes:\n        if s > 100:\n            break\n"
                "    else:\n        return 8\n    return 64\n" SEQ20
                "if pick([1, 200]) > 10:\n    m.add(layers.Dense(64))\nm.add(layers.Dense(10))\n",
                (const int[]){64, 10}, 2);
    /* a function reads the module's names, not its caller's (filters = 8 here) */
    dense_units("units = 8\ndef head():\n    return layers.Dense(units)\n"
                "def build(units):\n    return keras.Sequential([keras.Input(shape=(4,)), head(), "
                "layers.Dense(units)])\nm = build(3)\n",
                (const int[]){8, 3}, 2);
    /* a parameter named like a function is what is called; a nested def stays in its call */
    dense_units(
        "def narrow():\n    return layers.Dense(2)\ndef wide():\n    return layers.Dense(9)\n"
        "def build(make=narrow):\n    def narrow():\n        return layers.Dense(5)\n"
        "    return keras.Sequential([keras.Input(shape=(4,)), make(), narrow()])\n"
        "m = build(make=wide)\nm2 = narrow\n",
        (const int[]){9, 5}, 2);
    /* only the branch a conditional expression picks runs; a comprehension's item only with
     * its name bound */
    dense_units(
        "def big(m):\n    m.add(layers.Dense(256))\ndef small(m):\n    m.add(layers.Dense(8))\n"
        "def dense(m, n):\n    m.add(layers.Dense(n))\n"
        "n = 128\n" SEQ20 "big(m) if False else small(m)\n"
        "[dense(m, n) for n in (16, 32)]\n",
        (const int[]){8, 16, 32}, 3);
    /* the model under another name; a list built by append; an annotated and an item assignment;
     * a mutable default changed by += (Python keeps the object) */
    dense_units("def hidden(model):\n    model.add(layers.Dense(64))\n    return model\n" SEQ20
                "net = hidden(m)\nnet.add(layers.Dense(7))\nm.add(layers.Dense(10))\n",
                (const int[]){64, 7, 10}, 3);
    dense_units("stack = [keras.Input(shape=(20,))]\nfor u in (64, 32):\n"
                "    stack.append(layers.Dense(u))\nunits: int = 5\n"
                "m = keras.Sequential(stack + [layers.Dense(units)])\n",
                (const int[]){64, 32, 5}, 3);
    dense_units("def width(extra=[4]):\n    extra += [4]\n    return extra\nwidth()\n"
                "m = keras.Sequential([keras.Input(shape=(3,))] + [layers.Dense(u) for u in "
                "width()])\n",
                (const int[]){4, 4, 4}, 3);
    /* integers compare exactly; __name__ is '__main__' */
    dense_units(
        SEQ20 "if 2 ** 53 + 1 == 2 ** 53:\n    m.add(layers.Dense(64))\n"
              "if __name__ != '__main__':\n    m.add(layers.Dense(32))\nm.add(layers.Dense(10))\n",
        (const int[]){10}, 1);
    /* the second audit: a list is one object under all its names and parameters; the model
     * under a tuple's or a loop's name; a nested def is seen only from where it is in scope */
    dense_units("stack = [keras.Input(shape=(20,)), layers.Dense(64)]\nbody = stack\n"
                "def grow(ls, u):\n    ls.append(layers.Dense(u))\n"
                "body.append(layers.Dense(32))\ngrow(stack, 16)\n"
                "m = keras.Sequential(stack)\nsizes = [64, 32]\nsizes.reverse()\n",
                (const int[]){64, 32, 16}, 3);
    dense_units(SEQ20 "net, n_classes = m, 10\nfor x in [m]:\n    x.add(layers.Dense(7))\n"
                      "net.add(layers.Dense(n_classes))\n",
                (const int[]){7, 10}, 2);
    dense_units("def dense():\n    return layers.Dense(8)\ndef stem():\n    return dense()\n"
                "def build():\n    def dense():\n        return layers.Dense(64)\n"
                "    return keras.Sequential([keras.Input(shape=(4,)), stem(), dense()])\n"
                "m = build()\n",
                (const int[]){8, 64}, 2);
    parse_err("def build():\n    m = keras.Sequential([keras.Input(shape=(4,))])\n    try:\n"
              "        return m\n    finally:\n        m.add(layers.Dense(2))\nm = build()\n",
              "line 4, column 9: expected return outside a try with a finally", NULL);
    parse_err(SEQ20 "models = [m]\nmodels[0].add(layers.Dense(3))\n",
              "line 3, column 11: expected add(...) on the model", NULL);
    /* refused: what the reader cannot know or does not run */
    parse_err(SEQ20 "n = 0\nwhile n < 3:\n    n += 1\nelse:\n    m.add(layers.Dense(64))\n",
              "line 6, column 5: expected model statements outside loops", "'else' at line 5");
    parse_err("units = 16\ndef widen():\n    global units\n    units = 64\nwiden()\n",
              "line 3, column 5: expected no global statement", NULL);
    parse_err("m = keras.Sequential([keras.Input(shape=(64,))] + [layers.Dense(64)] * 3)\n",
              "line 1, column ", "repeated with *");
    parse_err("add = lambda m, n: m.add(layers.Dense(n))\n" SEQ20 "add(m, 64)\n",
              "line 3, column 5: expected the model passed only to functions cnnkit runs",
              "add(...)");
    parse_err("units = 16\nif True: units = 128\n"
              "m = keras.Sequential([keras.Input(shape=(3,)), layers.Dense(units)])\n",
              "line 3, column ", "one-line 'if' at line 2");
    parse_err("sizes = [8, 16]\nsizes[0] = 64\n"
              "m = keras.Sequential([keras.Input(shape=(3,)), layers.Dense(sizes[1])])\n",
              "line 3, column ", NULL);
    parse_err("try:\n    def block(f):\n        return layers.Dense(f)\nexcept ImportError:\n"
              "    def block(f):\n        return layers.Dense(2 * f)\n"
              "m = keras.Sequential([keras.Input(shape=(3,)), block(4)])\n",
              "line 7, column ", "defined in a block cnnkit does not run");
    parse_err("def dense(n): return layers.Dense(n)\n"
              "m = keras.Sequential([keras.Input(shape=(3,)), dense(4)])\n",
              "line 2, column ", "a one-line def");
}

/* kernel_initializer / bias_initializer: Keras's names, classes (a seed ignored, said), None. */
Test(keras_parse, initializers) {
    ck_keras_model m = parse_ok(
        "model = Sequential()\n"
        "model.add(Conv2D(4, 3, kernel_initializer='he_normal', input_shape=(8, 8, 1)))\n"
        "model.add(Conv2D(4, 3, kernel_initializer=keras.initializers.HeUniform(seed=7), "
        "bias_initializer='ones'))\n"
        "model.add(Flatten())\n"
        "model.add(Dense(4, kernel_initializer=initializers.LecunNormal(), "
        "bias_initializer=None))\n"
        "model.add(Dense(2, kernel_initializer='zeros', bias_initializer='glorot_normal'))\n");
    cr_assert(m.layers[0].kernel_initializer == CK_INIT_HE_NORMAL &&
              m.layers[0].bias_initializer == CK_INIT_DEFAULT);
    cr_assert(m.layers[1].kernel_initializer == CK_INIT_HE_UNIFORM &&
              m.layers[1].bias_initializer == CK_INIT_ONES);
    cr_assert(m.layers[3].kernel_initializer == CK_INIT_LECUN_NORMAL &&
              m.layers[3].bias_initializer == CK_INIT_DEFAULT);
    cr_assert(m.layers[4].kernel_initializer == CK_INIT_ZEROS &&
              m.layers[4].bias_initializer == CK_INIT_GLOROT_NORMAL);
    cr_assert_neq(strstr(m.warnings, "line 3: HeUniform seed ignored"), NULL, "%s", m.warnings);
    ck_keras_model_free(&m);
    parse_err("model = Sequential()\nmodel.add(Dense(4, input_shape=(3,), "
              "kernel_initializer='random_normal'))\n",
              "line 2, column 38: ", "'he_normal'");
    parse_err("model = Sequential()\nmodel.add(Dense(4, input_shape=(3,), "
              "kernel_initializer=HeNormal(2.0)))\n",
              "line 2, column 66: ", "seed");
    cr_assert_eq(ck_initializer_from_name("HeNormal"), CK_INIT_HE_NORMAL);
    cr_assert_eq(ck_initializer_from_name("he_normal"), CK_INIT_HE_NORMAL);
    cr_assert_eq(ck_initializer_from_name("random_normal"), -1);
    cr_assert_null(ck_initializer_name(CK_INIT_DEFAULT));
}

Test(keras_parse, recovery_only_at_line_ends) {
    /* a call continued on the next line is not "recovered" */
    ck_keras_model m = parse_ok("model = Sequential()\n"
                                "model.add(Dense(10,\n"
                                "                activation='relu'))\n"
                                "model.add(Dense(10,\n"
                                "activation='relu'))\n"
                                "model.add(Dense(3)\n"
                                "model.add(Dense(2))\n");
    cr_assert_eq(m.count, 4);
    cr_assert_eq(m.layers[1].activation, CK_ACT_RELU);
    cr_assert_str_eq(m.warnings, "line 6: unbalanced parentheses, statement closed at end of line");
    ck_keras_model_free(&m);
    /* the last line of the text may be closed too; two missing parentheses */
    m = parse_ok("model = Sequential()\nmodel.add(Conv2D(32,(3,3)\nmodel.add(Dense(2)");
    cr_assert_eq(m.count, 2);
    cr_assert_str_eq(m.warnings, "line 2: unbalanced parentheses, statement closed at end of line\n"
                                 "line 3: unbalanced parentheses, statement closed at end of line");
    ck_keras_model_free(&m);
}

Test(keras_parse, errors_name_line_and_column) {
    /* unknown layer class */
    parse_err("model = Sequential()\nmodel.add(Conv3D(32, 3))\n", "line 2, column 11: ", "Conv3D");
    parse_err("model = Sequential([\n    layers.RandomFlip('horizontal'),\n])\n",
              "line 2, column 5: ", "RandomFlip");
    /* unknown keyword argument, and known ones with values cnnkit does not implement */
    parse_err("model = Sequential()\nmodel.add(Conv2D(32, 3, kernel_regulariser=None))\n",
              "line 2, column 25: ", "kernel_regulariser");
    parse_err("model = Sequential()\nmodel.add(Conv2D(32, 3, kernel_regularizer=l2(0.01)))\n",
              "line 2, column 25: ", "kernel_regularizer");
    parse_err("model = Sequential()\nmodel.add(Conv2D(32, 3, data_format='channels_first'))\n",
              "line 2, column 25: ", "data_format");
    parse_err("model = Sequential()\nmodel.add(Dense(10, kernel_initializer='orthogonal'))\n",
              "line 2, column 21: ", "kernel_initializer");
    parse_err("model = Sequential()\nmodel.add(BatchNormalization(center=False))\n",
              "line 2, column 30: ", "center");
    /* bad value types */
    parse_err("model = Sequential()\nmodel.add(Conv2D('32', 3))\n",
              "line 2, column 18: ", "filters");
    parse_err("model = Sequential()\nmodel.add(Conv2D(32, 3, padding=1))\n",
              "line 2, column 33: ", "padding");
    parse_err("model = Sequential()\nmodel.add(Dropout(1.5))\n", "line 2, column 19: ", "rate");
    parse_err("model = Sequential()\nmodel.add(Dense(10, activation='selu'))\n",
              "line 2, column 32: ", "selu");
    parse_err("model = Sequential()\nmodel.add(Dropout())\n", "line 2, column 11: ", "rate");
    /* unterminated strings */
    parse_err("model = Sequential()\nmodel.add(Activation('relu))\n",
              "line 2, column 22: ", "unterminated string");
    parse_err("model = Sequential()\nx = \"\"\"never closed\nmodel.add(Dense(1))\n",
              "line 2, column 5: ", "unterminated string");
    /* missing closing parenthesis in a multi-line Sequential list: where it belongs */
    parse_err("model = Sequential([\n"
              "    Conv2D(32, (3,3), input_shape=(28,28,1),\n"
              "    MaxPooling2D(),\n"
              "    Flatten(),\n"
              "])\n",
              "line 2, column 44: expected ')' to close 'Conv2D(' opened at line 2, column 11",
              "MaxPooling2D");
    parse_err("model = Sequential([\n"
              "    Flatten(),\n"
              "    Dense(10,\n"
              "])\n",
              "line 4, column 1: expected ',' or ')' to close 'Dense(' opened at line 3, column 10",
              "found ']'");
    parse_err("model = Sequential([\n    Flatten(),\n    Dense(10)\n",
              "line 3, column 14: ", "end of the text");
    /* other syntax */
    parse_err("model = Sequential()\nmodel.add(Dense(10)))\n", "line 2, column 21: ", NULL);
    parse_err("model = Sequential()\nmodel.add(Dense(units=10, 20))\n",
              "line 2, column 27: ", "positional");
    parse_err(
        "model = Sequential()\nmodel.add(Dense(10, activation=\xe2\x80\x98relu\xe2\x80\x99))\n",
        "line 2, column 32: ", "typographic quote");
    parse_err("model = Sequential()\nmodel.add(Dense(10, input_shape=(28, 28, 1)))\n"
              "model.add(Dense(10, input_shape=(28, 28, 1)))\n",
              "line 3, column 21: ", "input_shape");
    /* Python control flow is not run */
    parse_err("model = Sequential()\nfor i in range(len(x_train)):\n    model.add(Dense(10))\n",
              "line 3, column 5: ", "'for' at line 2");
    parse_err("model = Sequential()\nwhile True:\n    model.add(Dense(10))\n",
              "line 3, column 5: ", "'while' at line 2");
    parse_err("model = Sequential()\nmodel.add(Dense(10))\nmodel.layers[0].trainable = False\n",
              "line 3, column 1: ", "model.layers");
}

Test(keras_parse, empty_model_is_an_error) {
    parse_err("", "line 1, column 1: ", "no layers");
    parse_err("# only a comment\nimport keras\n\n", "line 1, column 1: ", "no layers");
    parse_err("model = Sequential()\nmodel.compile(optimizer='adam')\n",
              "line 1, column 9: ", "at least one layer");
    parse_err("model = Sequential([Input(shape=(28, 28, 1))])\n",
              "line 1, column 9: ", "at least one layer");
    parse_err("model = Sequential()\nmodel.add(Dense(3))\nmodel.pop()\n",
              "line 1, column 9: ", "at least one layer");
}

Test(keras_parse, bad_arguments) {
    ck_keras_model m;
    char err[64] = "x";
    cr_assert_eq(ck_keras_parse(NULL, &m, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert_str_eq(err, "text: NULL");
    cr_assert_eq(ck_keras_parse("model = Sequential([Dense(1)])", NULL, err, sizeof err),
                 CK_STATUS_BAD_PARAM);
    /* err may be NULL or short; the message is cut, never overrun */
    cr_assert_eq(ck_keras_parse("model.add(Conv3D(1))", &m, NULL, 0), CK_STATUS_BAD_PARAM);
    char small[8];
    memset(small, 'z', sizeof small);
    cr_assert_eq(ck_keras_parse("model.add(Conv3D(1))", &m, small, 5), CK_STATUS_BAD_PARAM);
    cr_assert_str_eq(small, "line");
    cr_assert_eq(small[5], 'z');
    ck_keras_model_free(NULL);
}

Test(keras_parse, layer_desc_defaults) {
    ck_layer_desc d;
    cr_assert_eq(ck_layer_desc_init(&d, CK_LAYER_CONV2D), CK_STATUS_SUCCESS);
    cr_assert_eq(d.type, CK_LAYER_CONV2D);
    cr_assert_str_empty(d.name);
    cr_assert(d.stride_h == 1 && d.stride_w == 1);
    cr_assert_eq(d.padding, CK_PADDING_VALID);
    cr_assert_eq(d.use_bias, 1);
    cr_assert_eq(d.activation, CK_ACT_NONE);
    cr_assert(d.input_h == 0 && d.input_w == 0 && d.input_c == 0);
    cr_assert_eq(ck_layer_desc_init(&d, CK_LAYER_DENSE), CK_STATUS_SUCCESS);
    cr_assert_eq(d.use_bias, 1);
    cr_assert_eq(d.activation, CK_ACT_NONE);
    for (int t = CK_LAYER_MAXPOOL2D; t <= CK_LAYER_AVGPOOL2D; ++t) {
        cr_assert_eq(ck_layer_desc_init(&d, (ck_layer_type)t), CK_STATUS_SUCCESS);
        cr_assert(d.kernel_h == 2 && d.kernel_w == 2);
        cr_assert(d.stride_h == 0 && d.stride_w == 0, "strides=None is stored as 0");
        cr_assert_eq(d.padding, CK_PADDING_VALID);
    }
    cr_assert_eq(ck_layer_desc_init(&d, CK_LAYER_BATCHNORM), CK_STATUS_SUCCESS);
    cr_assert_float_eq(d.momentum, 0.99f, 0);
    cr_assert_float_eq(d.epsilon, 1e-3f, 0);
    cr_assert_eq(ck_layer_desc_init(&d, CK_LAYER_ACTIVATION), CK_STATUS_SUCCESS);
    cr_assert_float_eq(d.alpha, 0.3f, 0);
    cr_assert_eq(ck_layer_desc_init(&d, CK_LAYER_DROPOUT), CK_STATUS_SUCCESS);
    cr_assert_float_eq(d.rate, 0.0f, 0);
    cr_assert_eq(ck_layer_desc_init(&d, CK_LAYER_TYPE_COUNT), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_layer_desc_init(&d, (ck_layer_type)-1), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_layer_desc_init(NULL, CK_LAYER_DENSE), CK_STATUS_BAD_PARAM);

    ck_optimizer_desc o;
    cr_assert_eq(ck_optimizer_desc_init(&o, CK_OPT_ADAM), CK_STATUS_SUCCESS);
    cr_assert(o.learning_rate == 1e-3f && o.beta1 == 0.9f && o.beta2 == 0.999f &&
              o.epsilon == 1e-7f && o.weight_decay == 0.0f);
    cr_assert_eq(ck_optimizer_desc_init(&o, CK_OPT_SGD), CK_STATUS_SUCCESS);
    cr_assert(o.learning_rate == 1e-2f && o.momentum == 0.0f && o.nesterov == 0);
    cr_assert_eq(ck_optimizer_desc_init(&o, (ck_optimizer_type)7), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_optimizer_desc_init(NULL, CK_OPT_SGD), CK_STATUS_BAD_PARAM);
}

Test(keras_parse, names) {
    for (int a = CK_ACT_NONE; a <= CK_ACT_SWISH; ++a) {
        const char *n = ck_activation_name((ck_activation)a);
        cr_assert_not_null(n, "activation %d has no name", a);
        cr_assert_eq(ck_activation_from_name(n), a, "%s does not map back to %d", n, a);
    }
    cr_assert_str_eq(ck_activation_name(CK_ACT_NONE), "linear");
    cr_assert_str_eq(ck_activation_name(CK_ACT_LEAKY_RELU), "leaky_relu");
    cr_assert_eq(ck_activation_from_name("silu"), CK_ACT_SWISH);
    cr_assert_eq(ck_activation_from_name("gelu"), CK_ACT_GELU);
    cr_assert_eq(ck_activation_from_name("selu"), -1);
    cr_assert_eq(ck_activation_from_name("ReLU"), -1);
    cr_assert_eq(ck_activation_from_name(NULL), -1);
    cr_assert_null(ck_activation_name((ck_activation)99));

    const char *types[] = {
        "Conv2D",      "MaxPooling2D",     "AveragePooling2D",   "GlobalAveragePooling2D",
        "Dense",       "Flatten",          "BatchNormalization", "Activation",
        "Dropout",     "SpatialDropout2D", "ZeroPadding2D",      "Add",
        "Concatenate", "Rescaling",        "GlobalMaxPooling2D"};
    for (int t = 0; t < CK_LAYER_TYPE_COUNT; ++t)
        cr_assert_str_eq(ck_layer_type_name((ck_layer_type)t), types[t]);
    cr_assert_null(ck_layer_type_name(CK_LAYER_TYPE_COUNT));
}

/* Keras's meaning, where cnnkit's inside differs (an audit of the reader): a vector input (n,)
 * is 1 x 1 x n inside, but Keras refuses an image layer on it; a 1 x 1 x c image is an image,
 * so axis=1 is its height (refused), not its channels; a layer object added twice is one shared
 * layer to Keras (which refuses it), two layers here. */
Test(keras_parse, vector_inputs_one_by_one_images_and_reused_layers) {
    static const char *const image_layers[] = {"Conv2D(4, 1)", "MaxPooling2D(1)",
                                               "ZeroPadding2D(1)", "GlobalAveragePooling2D()"};
    char text[512];
    for (int i = 0; i < 4; ++i) {
        snprintf(text, sizeof text,
                 "model = Sequential()\nmodel.add(Input(shape=(8,)))\nmodel.add(%s)\n"
                 "model.add(Flatten())\nmodel.add(Dense(3))\n",
                 image_layers[i]);
        parse_err(text, "line 3", "found the flat input (None, 8)");
    }
    ck_keras_model ok = parse_ok("inputs = Input(shape=(8,))\nx = Dense(4)(inputs)\n"
                                 "x = Flatten()(x)\noutputs = Dense(3)(x)\n"
                                 "model = Model(inputs, outputs)\n");
    ck_keras_model_free(&ok);
    parse_err("inputs = Input(shape=(8,))\nx = Conv2D(4, 1)(inputs)\nx = Flatten()(x)\n"
              "outputs = Dense(3)(x)\nmodel = Model(inputs, outputs)\n",
              "line 2", "found the flat input");
    /* (1, 1, 8) is an image: axis=1 is the height, which cnnkit does not normalize over */
    parse_err("model = Sequential()\nmodel.add(Input(shape=(1, 1, 8)))\n"
              "model.add(BatchNormalization(axis=1))\nmodel.add(Flatten())\nmodel.add(Dense(3))\n",
              "line 3", "axis");
    parse_err(
        "model = Sequential()\nmodel.add(Input(shape=(1, 1, 8)))\nmodel.add(Softmax(axis=1))\n",
        "line 3", "axis");
    ok = parse_ok("model = Sequential()\nmodel.add(Input(shape=(1, 1, 8)))\n"
                  "model.add(BatchNormalization(axis=-1))\nmodel.add(Flatten())\n"
                  "model.add(Dense(3))\n");
    ck_keras_model_free(&ok);
    /* one layer object added twice; two separate Flatten() calls are two layers */
    parse_err("model = Sequential()\nd = Conv2D(1, 3, padding='same', input_shape=(8, 8, 1))\n"
              "model.add(d)\nmodel.add(d)\nmodel.add(Flatten())\nmodel.add(Dense(3))\n",
              "line 4", "already added");
    ok = parse_ok("model = Sequential()\nmodel.add(Conv2D(1, 3, input_shape=(8, 8, 1)))\n"
                  "model.add(Flatten())\nmodel.add(Flatten())\nmodel.add(Dense(3))\n");
    cr_assert_eq(ok.count, 4);
    ck_keras_model_free(&ok);
}
