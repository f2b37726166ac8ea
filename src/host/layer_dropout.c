/* Dropout (one mask value per element) and SpatialDropout2D (one per sample and channel). */
#include "layer.h"
#include "model_internal.h"

static ck_status dropout_check(ck_context *ctx, const ck_layer_desc *d, int index) {
    if (!(d->rate >= 0.0f && d->rate < 1.0f))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "layer %d (%s): rate must be in [0, 1), got %g",
                       index,
                       d->type == CK_LAYER_DROPOUT ? ck_lk_dropout.keras_name
                                                   : ck_lk_spatial_dropout2d.keras_name,
                       (double)d->rate);
    return CK_STATUS_SUCCESS;
}

static ck_status sdropout_infer(ck_context *ctx, const ck_layer_desc *d, int index,
                                const ck_shape3 *in, ck_shape3 *out) {
    if (in->flat)
        return ck_lk_fail_flat(ctx, d, index, ck_lk_spatial_dropout2d.keras_name, in);
    *out = *in;
    return CK_STATUS_SUCCESS;
}

static int dropout_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                         const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    (void)spec;
    (void)at;
    ck_lk_node(&nodes[0], d->type == CK_LAYER_DROPOUT ? CK_NODE_DROPOUT : CK_NODE_SDROPOUT, in,
               out);
    nodes[0].rate = d->rate;
    return 1;
}

static void dropout_render(ck_sbuf *s, const ck_layer_desc *d) {
    ck_sbuf_printf(s, "%s(%g)",
                   d->type == CK_LAYER_DROPOUT ? ck_lk_dropout.keras_name
                                               : ck_lk_spatial_dropout2d.keras_name,
                   (double)d->rate);
}

static int dropout_same(const ck_layer_desc *a, const ck_layer_desc *b) {
    return a->rate == b->rate;
}

const ck_layer_kind ck_lk_dropout = {
    .type = CK_LAYER_DROPOUT,
    .keras_name = "Dropout",
    .base_name = "dropout",
    .flags = CK_LK_ELEMENTWISE | CK_LK_KEEPS_CHANNELS,
    .check = dropout_check,
    .infer = ck_lk_infer_same,
    .lower = dropout_lower,
    .study_letter = 'D',
    .render = dropout_render,
    .same = dropout_same,
};

const ck_layer_kind ck_lk_spatial_dropout2d = {
    .type = CK_LAYER_SPATIAL_DROPOUT2D,
    .keras_name = "SpatialDropout2D",
    .base_name = "spatial_dropout2d",
    .flags = CK_LK_NEEDS_4D | CK_LK_ELEMENTWISE | CK_LK_KEEPS_CHANNELS,
    .check = dropout_check,
    .infer = sdropout_infer,
    .lower = dropout_lower,
    .study_letter = 'S',
    .render = dropout_render,
    .same = dropout_same,
};
