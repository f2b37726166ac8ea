/* Layer kinds: one const descriptor per ck_layer_type (layer_registry.c, layer_*.c) holding what
 * the core needs to know about a layer: its defaults, argument check, shape inference, weight
 * arrays and lowering to executor nodes. The model build (model.c), parameter layout
 * (model_params.c) and checkpoints ask the descriptor instead of switching on the type.
 * check's text (render) and the study (study_letter, same) ask it too, and so do the Keras
 * front ends for a kind with keras_bind (the older kinds still have their branches there). */
#ifndef CNNKIT_LAYER_H
#define CNNKIT_LAYER_H

#include "ck_geom.h"
#include "cnnkit/model.h"
#include "internal.h"

/* Per-sample shape, NHWC; flat: the Keras shape is (None, c) (after Flatten, Dense, GAP). */
typedef struct ck_shape3 {
    int h, w, c, flat;
} ck_shape3;

enum { CK_PARAM_INIT_ZERO, CK_PARAM_INIT_ONE, CK_PARAM_INIT_GLOROT };
#define CK_LAYER_MAX_PARAMS 4

/* One weight array of a layer, in Keras get_weights() order. Trainable arrays live in the
 * model's params (and get gradients and optimizer state), the others in its fixed array. */
typedef struct ck_param_spec {
    const char *name; /* "kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance" */
    size_t count;
    double dcount; /* count in double: a product too large for size_t is refused, not wrapped */
    unsigned char trainable, decay, init; /* decay: the optimizer's weight decay applies */
    long long fan_in,
        fan_out; /* CK_PARAM_INIT_GLOROT; long long: no int overflow in a refused model */
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
 * (keras_config.c). Each call returns 0, or -1 after the front end recorded a message that names
 * the argument, the layer and where it was written. */
typedef struct ck_kbind ck_kbind;
struct ck_kbind {
    /* Argument `key` as integers: *rows = -1 when absent (or None); 0 for a plain int in v[0];
     * else a sequence of *rows items, which are ints (*cols = 0) or sequences of *cols ints,
     * row-major in v (at most 4 ints). Anything else is a type error that names `want`. */
    int (*ints)(ck_kbind *b, const char *key, const char *want, int v[4], int *rows, int *cols);
    /* Refuses argument `key` with "expected `want`" (a value the kind cannot use). */
    int (*refuse)(ck_kbind *b, const char *key, const char *want);
    /* Refuses data_format='channels_first' (cnnkit is channels_last). */
    int (*data_format)(ck_kbind *b);
};

/* The Keras writer's view (config.json): each call returns 0, or -1 when out of memory. */
typedef struct ck_kput ck_kput;
struct ck_kput {
    /* Argument `key` as ints, in the shape ck_kbind.ints reads. */
    int (*ints)(ck_kput *w, const char *key, const int *v, int rows, int cols);
    int (*str)(ck_kput *w, const char *key, const char *v);
};

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
    /* Its own Keras arguments in Keras's positional order (the common ones, name, trainable,
     * dtype, input_shape..., are the front ends'); how many may be given by position. */
    const char *const *keras_args;
    int keras_npos;
    /* Fills d (already ck_layer_desc_init'ed) from the arguments; NULL: the front ends' own
     * branch binds the kind. */
    int (*keras_bind)(ck_kbind *b, ck_layer_desc *d);
    /* Writes the kind's own arguments for config.json. */
    int (*keras_put)(ck_kput *w, const ck_layer_desc *d);
} ck_layer_kind;

/* The descriptor of type t; NULL for a value outside ck_layer_type (layer_registry.c). */
const ck_layer_kind *ck_layer_kind_of(ck_layer_type t);
/* The kind with keras_bind whose keras_name is cls; NULL when none (layer_registry.c). */
const ck_layer_kind *ck_layer_kind_keras(const char *cls);
/* Writes ", Name" for each kind with keras_bind into buf (the "expected one of" lists). */
void ck_layer_kind_keras_names(char *buf, size_t n);
/* The checkpoint record of a layer (the kind's, or the v1 fields). */
void ck_layer_ckpt_record(const ck_layer_desc *d, int32_t iv[9], float fv[4]);

/* The descriptors (layer_*.c). */
extern const ck_layer_kind ck_lk_conv2d, ck_lk_maxpool2d, ck_lk_avgpool2d, ck_lk_gap2d, ck_lk_dense,
    ck_lk_flatten, ck_lk_batchnorm, ck_lk_activation, ck_lk_dropout, ck_lk_spatial_dropout2d,
    ck_lk_zeropad2d;

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
/* Conv2D/Dense same: units, window, strides, padding, bias and inline activation. */
int ck_lk_same_weighted(const ck_layer_desc *a, const ck_layer_desc *b);

#endif
