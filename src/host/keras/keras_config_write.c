/* Cnnkit layer descriptors -> a Keras 3 config.json, with jansson (the reader is
 * keras_config.c). */
#include "keras_io.h"
#include "layer.h"
#include "model_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The shortest decimal that reads back as the same float (0.1f is written 0.1, not 0.100000001). */
static json_t *jfloat(float f) {
    char buf[32];
    for (int prec = 6; prec <= 9; ++prec) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f)
            break;
    }
    return json_real(strtod(buf, NULL));
}

static json_t *initializer(const char *cls) {
    return json_pack("{s:s, s:s, s:{}, s:n}", "module", "keras.initializers", "class_name", cls,
                     "config", "registered_name");
}

static json_t *shape4(int h, int w, int c) {
    return json_pack("[niii]", h, w, c);
}

/* The activation as a Keras name; NULL when Keras has no name for it (a slope it can't say). */
static const char *act_name(const ck_layer_desc *d) {
    if (d->activation == CK_ACT_LEAKY_RELU && d->alpha != 0.2f)
        return NULL;
    if (d->activation == CK_ACT_ELU && d->alpha != 1.0f)
        return NULL;
    return ck_activation_name(d->activation);
}

/* A kind's own arguments (layer.h ck_kput) into the layer's config object o. */
typedef struct json_put {
    ck_kput w;
    json_t *o;
    const char *cls;
    char *err;
    size_t err_len;
    int said; /* err holds the message (else: out of memory) */
} json_put;

#define JP(w) ((json_put *)(w))

static int jp_set(ck_kput *w, const char *key, json_t *v) {
    return v && !json_object_set_new(JP(w)->o, key, v) ? 0 : -1;
}

static int jp_ints(ck_kput *w, const char *key, const int *v, int rows, int cols) {
    json_t *a = rows ? json_array() : json_integer(v[0]);
    for (int r = 0; a && r < rows; ++r) {
        json_t *it = cols ? json_array() : json_integer(v[r]);
        for (int c = 0; it && c < cols; ++c)
            json_array_append_new(it, json_integer(v[r * cols + c]));
        if (!it || json_array_append_new(a, it))
            return json_decref(a), -1;
    }
    return jp_set(w, key, a);
}

static int jp_str(ck_kput *w, const char *key, const char *v) {
    return jp_set(w, key, json_string(v));
}
static int jp_num(ck_kput *w, const char *key, float v) {
    return jp_set(w, key, jfloat(v));
}
static int jp_bool(ck_kput *w, const char *key, int v) {
    return jp_set(w, key, json_boolean(v));
}
static int jp_init(ck_kput *w, const char *key, const char *keras_class) {
    return jp_set(w, key, initializer(keras_class));
}

static int jp_act(ck_kput *w, const char *key, const ck_layer_desc *d) {
    const char *an = act_name(d);
    if (an)
        return jp_set(w, key, json_string(an));
    snprintf(JP(w)->err, JP(w)->err_len,
             "layer '%s' (%s): activation %s with alpha %g has no Keras name (use a separate "
             "LeakyReLU/ELU layer)",
             d->name, JP(w)->cls, ck_activation_name(d->activation), (double)d->alpha);
    JP(w)->said = 1;
    return -1;
}

static int jp_drop(ck_kput *w, const char *key) {
    json_object_del(JP(w)->o, key);
    return 0;
}

/* Whether layer i computes the logits or the softmax after them: cnnkit keeps those in fp32 under
 * bf16 (docs/precision.md), which Keras says with a float32 policy on those layers (as its guide
 * advises for the output). */
static int fp32_output_layer(const ck_model *m, int i) {
    const int last = ck_model_num_layers(m) - 1;
    if (i == last)
        return 1;
    ck_layer_desc d;
    if (ck_model_layer_desc(m, last, &d) != CK_STATUS_SUCCESS || d.type != CK_LAYER_ACTIVATION ||
        d.activation != CK_ACT_SOFTMAX)
        return 0;
    return d.num_inputs > 0 ? d.inputs[0] == i : i == last - 1;
}

/* A layer's (i >= 0) or a Sequential's (i = -1) dtype as Keras 3 saves it: "float32", or under
 * bf16 the mixed_bfloat16 policy (cnnkit's bf16 is Keras's mixed_bfloat16: bf16 activations,
 * fp32 variables; docs/precision.md). */
static json_t *dtype_of(const ck_model *m, int i) {
    if (ck_model_precision(m) != CK_PRECISION_BF16 || (i >= 0 && fp32_output_layer(m, i)))
        return json_string("float32");
    return json_pack("{s:s, s:s, s:{s:s}, s:n}", "module", "keras", "class_name", "DTypePolicy",
                     "config", "name", "mixed_bfloat16", "registered_name");
}

/* Layer i's entry without its build_config: module, class_name, config, registered_name. */
static json_t *layer_entry(ck_model *m, int i, char *err, size_t err_len) {
    ck_layer_desc d;
    ck_model_layer_desc(m, i, &d);
    const char *cls = ck_keras_class_of(&d);
    json_t *o =
        json_pack("{s:s, s:o, s:b}", "name", d.name, "dtype", dtype_of(m, i), "trainable", 1);
    const ck_layer_kind *k = ck_layer_kind_of(d.type);
    json_put jp = {
        {jp_ints, jp_str, jp_num, jp_bool, jp_init, jp_act, jp_drop}, o, cls, err, err_len, 0};
    if (!o || (k && k->keras_put && k->keras_put(&jp.w, &d))) {
        if (!jp.said)
            snprintf(err, err_len, "config.json: out of memory");
        json_decref(o);
        return NULL;
    }
    return json_pack("{s:s, s:s, s:o, s:n}", "module", "keras.layers", "class_name", cls, "config",
                     o, "registered_name");
}

/* A tensor's shape as Keras writes it: [null, h, w, c], or [null, c] once flattened. */
static json_t *tensor_shape(int flat, int h, int w, int c) {
    return flat ? json_pack("[ni]", c) : shape4(h, w, c);
}

static json_t *input_layer(const char *name, int flat, int h, int w, int c) {
    return json_pack("{s:s, s:s, s:{s:o, s:s, s:b, s:b, s:s}, s:n}", "module", "keras.layers",
                     "class_name", "InputLayer", "config", "batch_shape",
                     tensor_shape(flat, h, w, c), "dtype", "float32", "sparse", 0, "ragged", 0,
                     "name", name, "registered_name");
}

/* Sequential: the layers in order, each built on the previous one's shape. */
static json_t *sequential_layers(ck_model *m, const char *in_name, char *err, size_t err_len) {
    const int n = ck_model_num_layers(m);
    int h, w, c, in_h = 0, in_w = 0, in_c = 0, in_flat = 0;
    ck_kio_model_input(m, &in_h, &in_w, &in_c, &in_flat);
    json_t *layers = json_array();
    if (layers)
        json_array_append_new(layers, input_layer(in_name, in_flat, in_h, in_w, in_c));
    int ph = in_h, pw = in_w, pc = in_c, pflat = in_flat;
    for (int i = 0; i < n && layers; ++i) {
        json_t *e = layer_entry(m, i, err, err_len);
        if (!e) {
            json_decref(layers);
            return NULL;
        }
        json_object_set_new(e, "build_config",
                            json_pack("{s:o}", "input_shape", tensor_shape(pflat, ph, pw, pc)));
        json_array_append_new(layers, e);
        ck_model_layer_shape(m, i, &h, &w, &c);
        ph = h, pw = w, pc = c;
        pflat = ck_model_layer_is_flat(m, i);
    }
    return layers;
}

/* Functional: the layers in Keras's order (ck_kio_keras_order: the weights groups follow it),
 * each with the tensors it is called on (inbound_nodes) and their shapes (build_config). */
static json_t *functional_layers(ck_model *m, const char *in_name, char *err, size_t err_len) {
    const int n = ck_model_num_layers(m);
    int in_h = 0, in_w = 0, in_c = 0, in_flat = 0;
    ck_kio_model_input(m, &in_h, &in_w, &in_c, &in_flat);
    int order[CK_MAX_LAYERS];
    ck_kio_keras_order(m, order);
    json_t *layers = json_array();
    json_t *in = input_layer(in_name, in_flat, in_h, in_w, in_c);
    if (in) {
        json_object_set_new(in, "name", json_string(in_name));
        json_object_set_new(in, "inbound_nodes", json_array());
    }
    if (layers)
        json_array_append_new(layers, in);
    for (int j = 0; j < n && layers; ++j) {
        const int i = order[j];
        ck_layer_desc d;
        ck_model_layer_desc(m, i, &d);
        const ck_layer_kind *k = ck_layer_kind_of(d.type);
        int ins[CK_MAX_LAYER_INPUTS];
        const int nin = ck_kio_layer_inputs(&d, i, ins);
        json_t *e = layer_entry(m, i, err, err_len);
        json_t *args = k && k->min_inputs >= 2 ? json_array() : NULL; /* Add([a, b]) */
        json_t *shapes = args ? json_array() : NULL;
        json_t *one = NULL, *one_shape = NULL;
        for (int t = 0; e && t < nin; ++t) {
            int h = in_h, w = in_w, c = in_c, fl = in_flat;
            char src[64];
            snprintf(src, sizeof src, "%s", in_name);
            if (ins[t] >= 0) {
                ck_layer_desc s;
                ck_model_layer_desc(m, ins[t], &s);
                snprintf(src, sizeof src, "%s", s.name);
                ck_model_layer_shape(m, ins[t], &h, &w, &c);
                fl = ck_model_layer_is_flat(m, ins[t]);
            }
            /* a layer's output is bf16 under mixed_bfloat16; the model's input and the output
             * layers' stay float32 */
            const int bf = ins[t] >= 0 && ck_model_precision(m) == CK_PRECISION_BF16 &&
                           !fp32_output_layer(m, ins[t]);
            json_t *ten =
                json_pack("{s:s, s:{s:o, s:s, s:[sii]}}", "class_name", "__keras_tensor__",
                          "config", "shape", tensor_shape(fl, h, w, c), "dtype",
                          bf ? "bfloat16" : "float32", "keras_history", src, 0, 0);
            if (args) {
                json_array_append_new(args, ten);
                json_array_append_new(shapes, tensor_shape(fl, h, w, c));
            } else {
                one = ten;
                one_shape = tensor_shape(fl, h, w, c);
            }
        }
        if (!e) {
            json_decref(args), json_decref(shapes), json_decref(one), json_decref(one_shape);
            json_decref(layers);
            return NULL;
        }
        json_object_set_new(e, "build_config",
                            json_pack("{s:o}", "input_shape", args ? shapes : one_shape));
        json_object_set_new(e, "name", json_string(d.name));
        json_object_set_new(e, "inbound_nodes",
                            json_pack("[{s:[o], s:{}}]", "args", args ? args : one, "kwargs"));
        json_array_append_new(layers, e);
    }
    return layers;
}

char *ck_kio_write_config(ck_model *m, char *err, size_t err_len) {
    const int n = ck_model_num_layers(m);
    int in_h = 0, in_w = 0, in_c = 0, in_flat = 0;
    ck_kio_model_input(m, &in_h, &in_w, &in_c, &in_flat);
    const int graph = ck_kio_model_is_graph(m);
    char in_name[64], out_name[64] = "";
    snprintf(in_name, sizeof in_name, "%s", ck_model_input_name(m));
    if (n > 0) {
        ck_layer_desc d;
        ck_model_layer_desc(m, n - 1, &d);
        snprintf(out_name, sizeof out_name, "%s", d.name);
    }
    json_t *layers = graph ? functional_layers(m, in_name, err, err_len)
                           : sequential_layers(m, in_name, err, err_len);
    if (!layers)
        return NULL;
    ck_optimizer_desc od;
    ck_kio_model_optimizer(m, &od);
    json_t *oc;
    if (od.type == CK_OPT_ADAM)
        oc = json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:b}", "name", "adam", "learning_rate",
                       jfloat(od.learning_rate), "weight_decay",
                       od.weight_decay > 0 ? jfloat(od.weight_decay) : json_null(), "beta_1",
                       jfloat(od.beta1), "beta_2", jfloat(od.beta2), "epsilon", jfloat(od.epsilon),
                       "amsgrad", 0);
    else if (od.type == CK_OPT_ADADELTA)
        oc = json_pack("{s:s, s:o, s:o, s:o, s:o}", "name", "adadelta", "learning_rate",
                       jfloat(od.learning_rate), "weight_decay",
                       od.weight_decay > 0 ? jfloat(od.weight_decay) : json_null(), "rho",
                       jfloat(od.rho), "epsilon", jfloat(od.epsilon));
    else if (od.type == CK_OPT_RMSPROP)
        oc = json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:b}", "name", "rmsprop", "learning_rate",
                       jfloat(od.learning_rate), "weight_decay",
                       od.weight_decay > 0 ? jfloat(od.weight_decay) : json_null(), "rho",
                       jfloat(od.rho), "momentum", jfloat(od.momentum), "epsilon",
                       jfloat(od.epsilon), "centered", od.centered != 0);
    else
        oc = json_pack("{s:s, s:o, s:o, s:o, s:b}", "name", "sgd", "learning_rate",
                       jfloat(od.learning_rate), "weight_decay",
                       od.weight_decay > 0 ? jfloat(od.weight_decay) : json_null(), "momentum",
                       jfloat(od.momentum), "nesterov", od.nesterov);
    /* cnnkit's loss is the cross-entropy of softmax(logits): a model that does not end in a
     * softmax has logits for outputs (from_logits=True) */
    ck_layer_desc last;
    const int has_last =
        ck_model_layer_desc(m, ck_model_num_layers(m) - 1, &last) == CK_STATUS_SUCCESS;
    json_t *loss =
        !has_last || ck_kio_ends_in_softmax(&last, 1)
            ? json_string("sparse_categorical_crossentropy")
            : json_pack("{s:s, s:s, s:{s:s, s:s, s:b, s:n}, s:n}", "module", "keras.losses",
                        "class_name", "SparseCategoricalCrossentropy", "config", "name",
                        "sparse_categorical_crossentropy", "reduction", "sum_over_batch_size",
                        "from_logits", 1, "ignore_class", "registered_name");
    json_t *cc = json_pack("{s:{s:s, s:s, s:o, s:n}, s:o, s:[s]}", "optimizer", "module",
                           "keras.optimizers", "class_name", ck_kio_optimizer_class(od.type),
                           "config", oc, "registered_name", "loss", loss, "metrics", "accuracy");
    json_t *root =
        graph ? json_pack("{s:s, s:s, s:{s:s, s:b, s:o, s:[sii], s:[sii]}, s:s, s:{s:n}, s:o}",
                          "module", "keras.src.models.functional", "class_name", "Functional",
                          "config", "name", ck_model_name(m), "trainable", 1, "layers", layers,
                          "input_layers", in_name, 0, 0, "output_layers", out_name, 0, 0,
                          "registered_name", "Functional", "build_config", "input_shape",
                          "compile_config", cc)
              : json_pack("{s:s, s:s, s:{s:s, s:b, s:o, s:o, s:o}, s:n, s:{s:o}, s:o}", "module",
                          "keras", "class_name", "Sequential", "config", "name", ck_model_name(m),
                          "trainable", 1, "dtype", dtype_of(m, -1), "layers", layers,
                          "build_input_shape", tensor_shape(in_flat, in_h, in_w, in_c),
                          "registered_name", "build_config", "input_shape",
                          tensor_shape(in_flat, in_h, in_w, in_c), "compile_config", cc);
    char *s = root ? json_dumps(root, JSON_REAL_PRECISION(9)) : NULL;
    json_decref(root);
    if (!s)
        snprintf(err, err_len, "config.json: out of memory");
    return s;
}
