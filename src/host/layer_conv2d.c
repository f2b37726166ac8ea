/* Conv2D: filters (units) of kernel_h x kernel_w over NHWC, stride 1 by default. */
#include "layer.h"
#include "model_internal.h"

static void conv2d_defaults(ck_layer_desc *d) {
    d->stride_h = d->stride_w = 1;
}

static ck_status conv2d_check(ck_context *ctx, const ck_layer_desc *d, int index) {
    CK_TRY(ck_lk_check_units(ctx, d, index, ck_lk_conv2d.keras_name));
    return ck_lk_check_window(ctx, d, index, ck_lk_conv2d.keras_name);
}

static ck_status conv2d_infer(ck_context *ctx, const ck_layer_desc *d, int index,
                              const ck_shape3 *in, ck_shape3 *out) {
    return ck_lk_infer_window(ctx, d, index, ck_lk_conv2d.keras_name, in, d->units, 1, out);
}

/* kernel (kh, kw, cin, filters), glorot_uniform with the receptive field in both fans; bias */
static int conv2d_params(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                         ck_param_spec *spec) {
    const long long rf = (long long)d->kernel_h * d->kernel_w;
    spec[0] = (ck_param_spec){"kernel",
                              (size_t)d->kernel_h * d->kernel_w * in->c * out->c,
                              (double)d->kernel_h * d->kernel_w * in->c * out->c,
                              1,
                              1,
                              CK_PARAM_INIT_GLOROT,
                              rf * in->c,
                              rf * out->c};
    if (!d->use_bias)
        return 1;
    spec[1] =
        (ck_param_spec){"bias", (size_t)out->c, (double)out->c, 1, 0, CK_PARAM_INIT_ZERO, 0, 0};
    return 2;
}

static int conv2d_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                        const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    ck_node *n = &nodes[0];
    ck_lk_node(n, CK_NODE_CONV, in, out);
    ck_lk_window_geom(d, in, out->c, 1, &n->geom); /* fits: infer checked it */
    ck_lk_place_weights(d, spec, at, n);
    return 1 + ck_lk_inline_act(d, out, &nodes[1]);
}

static void conv2d_render(ck_sbuf *s, const ck_layer_desc *d) {
    ck_sbuf_printf(s, "Conv2D(%d,(%d,%d)", d->units, d->kernel_h, d->kernel_w);
    ck_lk_render_weighted_tail(s, d);
}

const ck_layer_kind ck_lk_conv2d = {
    .type = CK_LAYER_CONV2D,
    .keras_name = "Conv2D",
    .base_name = "conv2d",
    .flags = CK_LK_NEEDS_4D,
    .defaults = conv2d_defaults,
    .check = conv2d_check,
    .infer = conv2d_infer,
    .params = conv2d_params,
    .lower = conv2d_lower,
    .study_letter = 'C',
    .render = conv2d_render,
    .same = ck_lk_same_weighted,
};
