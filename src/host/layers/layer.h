/* Layer kinds: one const descriptor per ck_layer_type (layer_registry.c, layer_*.c) holding what
 * the core needs to know about a layer: its defaults, argument check, shape inference, weight
 * arrays and lowering to executor nodes. The model build (model.c), parameter layout
 * (model_params.c) and checkpoints ask the descriptor instead of switching on the type.
 * check's text (render), the study (study_letter, same) and the Keras front ends (keras_classes,
 * keras_put) ask it too. */
#ifndef CNNKIT_LAYER_H
#define CNNKIT_LAYER_H

#include "ck_geom.h"
#include "cnnkit/model.h"
#include "internal.h"

/* Per-sample shape, NHWC; flat: the Keras shape is (None, c) (after Flatten, Dense, GAP). */
typedef struct ck_shape3 {
    int h, w, c, flat;
} ck_shape3;

/* ck_param_spec.init: a ck_initializer, never CK_INIT_DEFAULT (ck_lk_init resolves it). */
static inline unsigned char ck_lk_init(ck_initializer given, ck_initializer dflt) {
    return (unsigned char)(given == CK_INIT_DEFAULT ? dflt : given);
}
/* An optimizer type's Keras name ("adam", "sgd", "rmsprop", "adadelta"); NULL for no type. */
const char *ck_optimizer_name(ck_optimizer_type t);
/* Keras's class name of an initializer ("HeNormal"); NULL for CK_INIT_DEFAULT. */
const char *ck_initializer_class(ck_initializer init);
#define CK_LAYER_MAX_PARAMS 4

/* One weight array of a layer, in Keras get_weights() order. Trainable arrays live in the
 * model's params (and get gradients and optimizer state), the others in its fixed array. */
typedef struct ck_param_spec {
    const char *name; /* "kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance" */
    size_t count;
    double dcount; /* count in double: a product too large for size_t is refused, not wrapped */
    unsigned char trainable, init; /* trainable: updated, and decayed as Keras 3 decays every
                                      trainable variable */
    long long fan_in, fan_out; /* the variance-scaling initializers'; long long: no int overflow in
                                  a refused model */
    int ndim; /* its Keras shape: Conv2D kernel (kh, kw, in, out), Dense (in, out), ... */
    long long dims[4];
} ck_param_spec;

/* Where the build put a layer's arrays: spec k at off[k] in params (trainable) or fixed; the
 * statistics saved from forward for backward at stats in the model's stats array. */
typedef struct ck_layer_place {
    size_t off[CK_LAYER_MAX_PARAMS];
    size_t stats;
} ck_layer_place;

/* What a kind is, for rules that do not care which kind it is (algebra, checks). */
enum {
    CK_LK_NEEDS_4D = 1,      /* refuses a flat input */
    CK_LK_FLATTENS = 2,      /* its output is flat */
    CK_LK_ELEMENTWISE = 4,   /* output shape = input shape, one value from one value */
    CK_LK_KEEPS_CHANNELS = 8 /* output channels = input channels */
};

/* The Keras front ends' view of one layer call's arguments, so that a kind binds its Keras
 * arguments once for the model text (keras/keras_layers.c) and a .keras config.json
 * (keras/keras_config.c). Each reader returns 0 (an absent argument leaves *out as it is), or -1
 * after the front end recorded its message naming the argument, the class and where it was
 * written. The text front end checks what the user wrote; the config reader accepts what only
 * matters before the weights exist (initializers, seeds). */
typedef struct ck_kbind ck_kbind;
struct ck_kbind {
    const char *cls; /* the Keras class being bound ("ReLU" for the Activation kind) */
    int rank;        /* rank of the layer's input with the batch: 4 (images) or 2 (vectors) */
    /* Whether the argument was given (None counts as given). */
    int (*has)(ck_kbind *b, const char *key);
    /* Refuses a missing required argument. */
    int (*need)(ck_kbind *b, const char *key);
    /* Argument `key` as integers: *rows = -1 when absent (or None); 0 for a plain int in v[0];
     * else a sequence of *rows items, which are ints (*cols = 0) or sequences of *cols ints,
     * row-major in v (at most 4 ints). Anything else is a type error that names `want`. */
    int (*ints)(ck_kbind *b, const char *key, const char *want, int v[4], int *rows, int *cols);
    int (*get_int)(ck_kbind *b, const char *key, int lo, int *out); /* an int >= lo */
    int (*get_pair)(ck_kbind *b, const char *key, int *h, int *w);  /* n or (h, w), all >= 1 */
    /* A number in [lo, hi] (lo_open: (lo, ...; hi_open: ..., hi)). */
    int (*get_num)(ck_kbind *b, const char *key, double lo, int lo_open, double hi, int hi_open,
                   double *out);
    int (*get_bool)(ck_kbind *b, const char *key, int *out);
    int (*get_padding)(ck_kbind *b, ck_padding *out); /* 'valid' or 'same' */
    /* An activation (a name; in the text also a function or an activation layer). */
    int (*get_activation)(ck_kbind *b, const char *key, ck_activation *act, float *alpha);
    int (*only_none)(ck_kbind *b, const char *key);
    int (*only_bool)(ck_kbind *b, const char *key, int want);
    int (*only_int)(ck_kbind *b, const char *key, int want);
    int (*only_ones)(ck_kbind *b, const char *key); /* 1 or (1, 1) */
    int (*initializer)(ck_kbind *b, const char *key, const char *want);
    /* A Conv2D / Dense weight's initializer: a Keras name or class (glorot, he, lecun, zeros,
     * ones); None leaves *out. The config reader leaves *out for one it does not know (the
     * weights come from the file). */
    int (*get_initializer)(ck_kbind *b, const char *key, ck_initializer *out);
    int (*data_format)(ck_kbind *b); /* refuses channels_first (cnnkit is channels_last) */
    int (*seed)(ck_kbind *b, const char *key); /* an int or None, ignored: masks use the context */
    /* Refuses argument `key` with "expected `want`" (a value the kind cannot use). */
    int (*refuse)(ck_kbind *b, const char *key, const char *want);
    /* Refuses two arguments that say the same thing (LeakyReLU's alpha and negative_slope). */
    int (*conflict)(ck_kbind *b, const char *key1, const char *key2);
};

/* The Keras writer's view (config.json): each call returns 0, or -1 after the writer recorded
 * its message (out of memory, or a value Keras has no name for). */
typedef struct ck_kput ck_kput;
struct ck_kput {
    /* Argument `key` as ints, in the shape ck_kbind.ints reads. */
    int (*ints)(ck_kput *w, const char *key, const int *v, int rows, int cols);
    int (*str)(ck_kput *w, const char *key, const char *v);
    int (*num)(ck_kput *w, const char *key, float v); /* the shortest decimal that reads back */
    int (*boolean)(ck_kput *w, const char *key, int v);
    int (*initializer)(ck_kput *w, const char *key, const char *keras_class);
    /* The activation's Keras name, or the writer's message when Keras has none for it. */
    int (*activation)(ck_kput *w, const char *key, const ck_layer_desc *d);
    int (*drop)(ck_kput *w, const char *key); /* removes a common key the class does not take */
};

/* One Keras class of a kind: the Activation kind has Activation, ReLU, LeakyReLU, ELU and
 * Softmax; a pooling kind its alias (MaxPool2D). A list ends with name NULL. */
typedef struct ck_keras_class {
    const char *name;
    /* Its own arguments in Keras's positional order (the common ones, name, trainable, dtype,
     * input_shape..., are the front ends'); how many may be given by position. */
    const char *const *args;
    int npos;
    int alias; /* another name of the previous class (not listed in messages) */
    /* Fills d (already ck_layer_desc_init'ed) from the arguments. */
    int (*bind)(ck_kbind *b, ck_layer_desc *d);
    /* A class of its own in Keras (not the kind's first) whose layers Keras names after it
     * ("re_lu"): kept in ck_layer_desc.keras_class. NULL: named and shown as the kind. */
    const char *base_name;
} ck_keras_class;

typedef struct ck_node ck_node;           /* model_internal.h */
typedef struct ck_node_kind ck_node_kind; /* exec.h */

typedef struct ck_layer_kind {
    ck_layer_type type;
    const char *keras_name;          /* "Conv2D": ck_layer_type_name, messages, summary */
    const char *base_name;           /* "conv2d": automatic names conv2d, conv2d_1, ... */
    unsigned flags;                  /* CK_LK_* */
    unsigned char stats_per_channel; /* floats per output channel kept from forward to backward */
    /* Type-specific defaults over the common ones of ck_layer_desc_init; NULL: none. */
    void (*defaults)(ck_layer_desc *d);
    /* The arguments of a layer given to ck_model_add (layer `index`); a message names the bad
     * one. NULL: nothing to check. */
    ck_status (*check)(ck_context *ctx, const ck_layer_desc *d, int index);
    /* The output shape for input `in`, or a status and message (d->name is set). */
    ck_status (*infer)(ck_context *ctx, const ck_layer_desc *d, int index, const ck_shape3 *in,
                       ck_shape3 *out);
    /* Multi-input kinds (Add): the fewest inputs the layer reads (0: a single-input kind, which
     * reads exactly one) and the output shape for in[0 .. nin), which the build calls instead of
     * infer. */
    unsigned char min_inputs;
    ck_status (*infer_n)(ck_context *ctx, const ck_layer_desc *d, int index, const ck_shape3 *in,
                         int nin, ck_shape3 *out);
    /* Fills the layer's weight arrays (at most CK_LAYER_MAX_PARAMS); returns how many. NULL: 0. */
    int (*params)(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                  ck_param_spec *spec);
    /* The 9 integer and 4 float fields a checkpoint records for the layer; NULL: the v1 fields
     * (ck_layer_ckpt_record). */
    void (*ckpt_record)(const ck_layer_desc *d, int32_t iv[9], float fv[4]);
    /* Writes the layer's nodes into nodes[0..1] (zeroed by the caller) and returns how many;
     * nodes after the first run the layer's inline activation. */
    int (*lower)(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                 const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes);
    /* ---- front ends (S6b): check's text and the study ask the kind, not the type ---- */
    char
        study_letter; /* the study's order letter ('C', 'B', ...; Activation: 'R' for relu); 0: ? */
    /* Appends the layer in Keras syntax (check's text); NULL: "Name()". */
    void (*render)(ck_sbuf *s, const ck_layer_desc *d);
    /* Whether two layers of this kind compute the same function (the study); NULL: always. */
    int (*same)(const ck_layer_desc *a, const ck_layer_desc *b);
    /* Its Keras classes; NULL: not in the Keras front ends. */
    const ck_keras_class *keras_classes;
    /* The class a layer is written as (LeakyReLU for a leaky Activation); NULL: keras_name. */
    const char *(*keras_class_of)(const ck_layer_desc *d);
    /* Writes the kind's own arguments for config.json. */
    int (*keras_put)(ck_kput *w, const ck_layer_desc *d);
} ck_layer_kind;

/* The descriptor of type t; NULL for a value outside ck_layer_type (layer_registry.c). */
const ck_layer_kind *ck_layer_kind_of(ck_layer_type t);
/* Whether type t turns (H, W, C) into a vector (Flatten, the global poolings). */
int ck_lk_flattens(ck_layer_type t);
/* The Keras class named cls (and its kind in *kind); NULL when no kind has it. */
const ck_keras_class *ck_keras_class_find(const char *cls, const ck_layer_kind **kind);
/* The Keras classes in registry order, ", "-separated, into buf (the "expected one of" lists);
 * with_aliases 0: one class per kind and its activation classes, not MaxPool2D-style aliases. */
void ck_keras_class_names(char *buf, size_t n, int with_aliases);
/* The Keras class a layer is written as. */
const char *ck_keras_class_of(const ck_layer_desc *d);
/* The class a layer written as Keras class kc keeps in d->keras_class (one with a base name of
 * its own: ReLU, Softmax, ...), else "" (ck_layer_desc_init's). */
void ck_keras_class_keep(const ck_keras_class *kc, ck_layer_desc *d);
/* Keras's automatic name stem of d ("conv2d", "re_lu"). */
const char *ck_layer_base_name(const ck_layer_desc *d);
/* Keras's automatic names (conv2d, conv2d_1, ...) for the layers of layers[0 .. n) without one,
 * in list order, skipping names a layer already has (names must be unique). */
void ck_layers_auto_name(ck_layer_desc *layers, int n);
/* The checkpoint record of a layer (the kind's, or the v1 fields). */
void ck_layer_ckpt_record(const ck_layer_desc *d, int32_t iv[9], float fv[4]);

/* The descriptors (layer_*.c). */
extern const ck_layer_kind ck_lk_gmp2d;
extern const ck_layer_kind ck_lk_conv2d, ck_lk_maxpool2d, ck_lk_avgpool2d, ck_lk_gap2d, ck_lk_dense,
    ck_lk_flatten, ck_lk_batchnorm, ck_lk_activation, ck_lk_dropout, ck_lk_spatial_dropout2d,
    ck_lk_zeropad2d, ck_lk_add, ck_lk_concat, ck_lk_rescaling;

/* ---- helpers the kinds share (layer_util.c) ---- */
int ck_lk_valid_activation(ck_activation a);
/* Conv2D/Dense: units >= 1 and a known activation. */
ck_status ck_lk_check_units(ck_context *ctx, const ck_layer_desc *d, int index, const char *tn);
/* Conv2D and pooling: window >= 1, strides >= 0 (0: the pool size), padding valid or same. */
ck_status ck_lk_check_window(ck_context *ctx, const ck_layer_desc *d, int index, const char *tn);
/* The window geometry of a Conv2D (cout filters, default stride 1) or a pooling layer (cout = the
 * input channels, default stride the pool size) for one sample; 0, or -1 when it does not fit. */
int ck_lk_window_geom(const ck_layer_desc *d, const ck_shape3 *in, int cout, int is_conv,
                      ck_conv_geom *g);
/* Conv2D and pooling infer: a 4-D input the window fits; out gets the window's output shape. */
ck_status ck_lk_infer_window(ck_context *ctx, const ck_layer_desc *d, int index, const char *tn,
                             const ck_shape3 *in, int cout, int is_conv, ck_shape3 *out);
/* infer's shared refusal: the layer needs an (N, H, W, C) input. */
ck_status ck_lk_fail_flat(ck_context *ctx, const ck_layer_desc *d, int index, const char *tn,
                          const ck_shape3 *in);
/* A shape as Keras prints it: "(None, 28, 28, 16)" or "(None, 10)". */
void ck_lk_shape_str(char *buf, size_t n, const ck_shape3 *s);
/* infer of the kinds whose output shape is their input's. */
ck_status ck_lk_infer_same(ck_context *ctx, const ck_layer_desc *d, int index, const ck_shape3 *in,
                           ck_shape3 *out);
/* A node of kind k from in to out. */
void ck_lk_node(ck_node *n, const ck_node_kind *k, const ck_shape3 *in, const ck_shape3 *out);
/* Points a Conv2D/Dense node at its kernel (spec 0) and, with use_bias, its bias (spec 1). */
void ck_lk_place_weights(const ck_layer_desc *d, const ck_param_spec *spec,
                         const ck_layer_place *at, ck_node *n);
/* The inline activation of a Conv2D/Dense as a node of its own: 1, or 0 for linear. */
int ck_lk_inline_act(const ck_layer_desc *d, const ck_shape3 *out, ck_node *n);
/* The Keras name of an activation, "?" for an unknown value (rendering). */
const char *ck_lk_act_name(ck_activation a);
/* Conv2D/Dense render after "Conv2D(f,(kh,kw)" / "Dense(u": padding, activation, use_bias, ")". */
void ck_lk_render_weighted_tail(ck_sbuf *s, const ck_layer_desc *d);
/* Conv2D and Dense, in Keras' positional order: the activation and the weights' options. */
#define CK_KERAS_WEIGHTED_ARGS                                                                     \
    "activation", "use_bias", "kernel_initializer", "bias_initializer", "kernel_regularizer",      \
        "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint"
/* Conv2D/Dense Keras binding after their own arguments: activation, use_bias, the default
 * initializers and no regularizer or constraint (in this order: the first bad one is named). */
/* A Conv2D / Dense bias of units values: trainable, its initializer (Keras's fans of a vector:
 * its size). */
ck_param_spec ck_lk_bias_spec(const ck_layer_desc *d, int units);
int ck_lk_keras_bind_weighted(ck_kbind *b, ck_layer_desc *d);
/* Their config.json: activation, use_bias, GlorotUniform and Zeros initializers. */
int ck_lk_keras_put_weighted(ck_kput *w, const ck_layer_desc *d);
/* Conv2D/Dense same: units, window, strides, padding, bias and inline activation. */
int ck_lk_same_weighted(const ck_layer_desc *a, const ck_layer_desc *b);

#endif
