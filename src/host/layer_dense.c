/* Dense: units outputs of a flat input (a 1 x 1 x c input counts as flat). */
#include "layer.h"
#include "model_internal.h"

static ck_status dense_check(ck_context *ctx, const ck_layer_desc *d, int index) {
    return ck_lk_check_units(ctx, d, index, ck_lk_dense.keras_name);
}

static ck_status dense_infer(ck_context *ctx, const ck_layer_desc *d, int index,
                             const ck_shape3 *in, ck_shape3 *out) {
    if (!in->flat && (in->h != 1 || in->w != 1))
        return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                       "layer %d (Dense '%s'): input (None, %d, %d, %d) is not flat; add "
                       "Flatten() or GlobalAveragePooling2D() before it",
                       index, d->name, in->h, in->w, in->c);
    *out = (ck_shape3){1, 1, d->units, 1};
    return CK_STATUS_SUCCESS;
}

/* kernel (in, units), glorot_uniform; bias */
static int dense_params(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                        ck_param_spec *spec) {
    spec[0] = (ck_param_spec){
        "kernel", (size_t)in->c * out->c, (double)in->c * out->c, 1, 1, CK_PARAM_INIT_GLOROT, in->c,
        out->c};
    if (!d->use_bias)
        return 1;
    spec[1] =
        (ck_param_spec){"bias", (size_t)out->c, (double)out->c, 1, 0, CK_PARAM_INIT_ZERO, 0, 0};
    return 2;
}

static int dense_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                       const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    ck_node *n = &nodes[0];
    ck_lk_node(n, CK_NODE_DENSE, in, out);
    ck_lk_place_weights(d, spec, at, n);
    return 1 + ck_lk_inline_act(d, out, &nodes[1]);
}

static void dense_render(ck_sbuf *s, const ck_layer_desc *d) {
    ck_sbuf_printf(s, "Dense(%d", d->units);
    ck_lk_render_weighted_tail(s, d);
}

const ck_layer_kind ck_lk_dense = {
    .type = CK_LAYER_DENSE,
    .keras_name = "Dense",
    .base_name = "dense",
    .flags = CK_LK_FLATTENS,
    .check = dense_check,
    .infer = dense_infer,
    .params = dense_params,
    .lower = dense_lower,
    .render = dense_render,
    .same = ck_lk_same_weighted,
};
