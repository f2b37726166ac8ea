/* Keras file formats (.keras archives, .weights.h5, legacy .h5): the internal interface between
 * the archive front end (keras_io.c), the config.json reader/writer (keras_config.c, jansson) and
 * the HDF5 weights reader/writer (keras_h5.c, libhdf5). The model is built through the public
 * ck_model_* API; weights travel as one flat array in ck_model_get_weights order. */
#ifndef CNNKIT_KERAS_IO_H
#define CNNKIT_KERAS_IO_H

#include "cnnkit/model.h"
#include "internal.h"
#include "layer.h"

/* ---- config.json (keras_config.c) ------------------------------------------------------------
 * Parses a Keras Sequential config (Keras 3 config.json, or a legacy model_config / Keras 2
 * config) into *out: layers (names from the file, input shape on layer 0), the optimizer and loss
 * of compile_config (training_config: the legacy JSON of the same, may be NULL). Unsupported
 * layers or options fail with "layer 'NAME' (CLASS): option ..." in err; out is untouched on
 * failure and freed with ck_keras_model_free on success. */
ck_status ck_kio_parse_config(const char *json, size_t len, const char *training_config,
                              ck_keras_model *out, char *err, size_t err_len);
/* The same for a file whose metadata.json says cnnkit saved it (by_cnnkit 1): its bare loss
 * name on a model without a final softmax means logits (cnnkit's writer before it wrote
 * from_logits). */
ck_status ck_kio_parse_config_by(const char *json, size_t len, const char *training_config,
                                 int by_cnnkit, ck_keras_model *out, char *err, size_t err_len);
/* A new model (not built) with km's layers and compile optimizer; *out is set (to be destroyed by
 * the caller) even on failure, when the model could be created. */
/* precision: a ck_precision for the model, or -1 for km's (the file's dtype policy) */
ck_status ck_kio_model_from_config(ck_context *ctx, const ck_keras_model *km, int precision,
                                   ck_model **out);
/* Whether the model's last layer ends in a softmax (Activation, Softmax, or a Conv2D/Dense with
 * activation='softmax'). */
int ck_kio_ends_in_softmax(const ck_layer_desc *layers, int count);
/* A compiled loss that cnnkit's, the cross-entropy of softmax(logits), would not compute:
 * from_logits=True on a model that ends in softmax (Keras would apply a second one), or
 * from_logits=False (the default) on one that does not (Keras would read its outputs as
 * probabilities). 0, or -1 with the message, naming the last layer, in err. No loss: 0. */
int ck_kio_check_loss(const ck_layer_desc *layers, int count, const char *loss, int from_logits,
                      char *err, size_t err_len);
/* Keras's snake_case of a class name ("LeakyReLU" -> "leaky_re_lu"), as keras.src.utils.naming. */
void ck_kio_snake_case(const char *cls, char *out, size_t len);
/* config.json of a built model (Keras 3 layout, with compile_config); malloc'd, NULL when out of
 * memory or an activation cannot be written (message in err). */
char *ck_kio_write_config(ck_model *m, char *err, size_t err_len);

/* ---- the model's weights, as the files lay them out --------------------------------------- */
#define CK_KIO_MAX_VARS 4
typedef struct ck_kio_var {
    int rank;
    long long dims[4];
    size_t count;
    size_t offset;       /* into the flat ck_model_get_weights array */
    long long param_off; /* into the trainable parameters (optimizer state), -1 non-trainable */
    const char *role;    /* "kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance" */
} ck_kio_var;
typedef struct ck_kio_layer {
    int layer;      /* the model's layer index */
    char name[48];  /* the model's layer name */
    char group[64]; /* the Keras 3 weights group: snake_case(class) + _k per class */
    const char *cls;
    int nvars;
    ck_kio_var vars[CK_KIO_MAX_VARS];
} ck_kio_layer;
typedef struct ck_kio_plan {
    ck_kio_layer *layers; /* one per model layer, in Keras's order (ck_kio_keras_order), malloc'd */
    int count;
    size_t total;     /* floats of ck_model_get_weights */
    size_t trainable; /* floats of the trainable parameters (optimizer state) */
} ck_kio_plan;
/* plan->layers is allocated with the model's context: ck_host_free(ctx, plan->layers). */
ck_status ck_kio_plan_make(ck_model *m, ck_kio_plan *plan);

/* Optimizer state in the order of the trainable parameters: the Adam moments (SGD: velocity in
 * m, v unused; RMSprop: the squared-gradient average in v, the momentum or centered average
 * gradient in m), the step. ck_kio_opt_get fills caller arrays of plan->trainable floats;
 * ck_kio_opt_set replaces the state (after every check passed). */
typedef struct ck_kio_opt {
    ck_optimizer_type type;
    int has_m, has_v;
    float *m, *v;
    long long step;
    float lr; /* the learning rate (Keras keeps it as a variable too) */
} ck_kio_opt;
ck_status ck_kio_opt_get(ck_model *m, ck_kio_opt *o);
ck_status ck_kio_opt_set(ck_model *m, const ck_kio_opt *o);
/* Keras's class of an optimizer type ("Adam", "SGD", "RMSprop", "Adadelta"). */
const char *ck_kio_optimizer_class(ck_optimizer_type t);
/* Keras 3 lists the optimizer's variables after iterations (0) and the learning rate (1): Adam
 * per trainable variable its momentum and velocity, SGD its momentum (when momentum > 0),
 * RMSprop every velocity, then every momentum (momentum > 0) or average gradient (centered),
 * Adadelta per trainable variable its accumulated gradient (in v) and accumulated update (m).
 * ck_kio_opt_per: the state arrays per trainable variable; ck_kio_opt_var: the index of slot r
 * (< per) of trainable variable j (of ntrain) among the optimizer's variables, and in *arr the
 * array (o->m or o->v) that holds it. */
int ck_kio_opt_per(const ck_kio_opt *o);
int ck_kio_opt_var(const ck_kio_opt *o, int ntrain, int j, int r, float **arr);

/* The model's input shape and optimizer (keras_model_view.c: the model internals this code reads).
 */
void ck_kio_model_input(const ck_model *m, int *h, int *w, int *c, int *flat);
void ck_kio_model_optimizer(const ck_model *m, ck_optimizer_desc *o);
/* A built model whose layers name their inputs (a Functional config), not a Sequential stack. */
int ck_kio_model_is_graph(const ck_model *m);
/* Layer i's weight arrays in Keras order, with their Keras shapes (layer.h); returns how many. */
int ck_kio_layer_specs(const ck_model *m, int i, ck_param_spec *spec);

/* ---- functional models (keras_graph.c) ----------------------------------------------------
 * Layer i's inputs (layer indices, CK_LAYER_INPUT_MODEL for the model input) into ins; returns
 * how many (num_inputs 0: the previous layer). */
int ck_kio_layer_inputs(const ck_layer_desc *d, int i, int *ins);
/* The model's layer indices in the order Keras lists them (model.layers): the order added for a
 * Sequential model, keras.src.ops.function.map_graph's for a graph. order holds
 * ck_model_num_layers(m) ints. */
void ck_kio_keras_order(const ck_model *m, int *order);
/* The same for a layer graph layers[0 .. n) whose last layer is the output (the text reader's
 * functional models, put in this order as Keras's model.layers are). */
void ck_kio_layers_keras_order(const ck_layer_desc *layers, int n, int *order);

/* ---- HDF5 (keras_h5.c) -----------------------------------------------------------------------
 * An HDF5 file in memory (image, len) or on disk (path, image NULL). what names it in messages.
 * Reads every weight of plan into w (plan->total floats): the Keras 3 layout (layers/<group>/vars/
 * <i>), or the legacy one (model_weights/<layer name>/weight_names, or the same at the root).
 * opt (may be NULL): the optimizer state when the file holds one for the model's optimizer type
 * (*found = 1), else left alone (*found = 0). Messages name the layer and both shapes. */
ck_status ck_kio_h5_read(ck_context *ctx, const void *image, size_t len, const char *path,
                         const char *what, const ck_kio_plan *plan, float *w, ck_kio_opt *opt,
                         int *found);
/* Legacy whole-model .h5: its model_config and training_config root attributes (on ctx:
 * ck_host_free(ctx, ...); the latter NULL when absent). CK_STATUS_NOT_SUPPORTED when the file has
 * no model_config. */
ck_status ck_kio_h5_model_config(ck_context *ctx, const char *path, char **config,
                                 char **training_config);
/* Writes the Keras 3 weights layout into a new HDF5 image (*image, *len; on ctx:
 * ck_host_free(ctx, *image)). */
ck_status ck_kio_h5_write(ck_context *ctx, const ck_kio_plan *plan, const float *w,
                          const ck_kio_opt *opt, const char *model_name, void **image, size_t *len);

#endif
