/* MaxPooling2D and AveragePooling2D: pool_size 2 x 2, strides None (= the pool size). */
#include "layer.h"
#include "model_internal.h"

static void pool2d_defaults(ck_layer_desc *d) {
    d->kernel_h = d->kernel_w = 2;
    d->stride_h = d->stride_w = 0; /* strides=None: follows a pool size changed later */
}

static const char *pool2d_name(const ck_layer_desc *d) {
    return d->type == CK_LAYER_MAXPOOL2D ? ck_lk_maxpool2d.keras_name : ck_lk_avgpool2d.keras_name;
}

static ck_status pool2d_check(ck_context *ctx, const ck_layer_desc *d, int index) {
    return ck_lk_check_window(ctx, d, index, pool2d_name(d));
}

static ck_status pool2d_infer(ck_context *ctx, const ck_layer_desc *d, int index,
                              const ck_shape3 *in, ck_shape3 *out) {
    return ck_lk_infer_window(ctx, d, index, pool2d_name(d), in, in->c, 0, out);
}

static int pool2d_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                        const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    (void)spec;
    (void)at;
    ck_lk_node(&nodes[0], CK_NODE_POOL, in, out);
    ck_lk_window_geom(d, in, in->c, 0, &nodes[0].geom); /* fits: infer checked it */
    nodes[0].is_max = d->type == CK_LAYER_MAXPOOL2D;
    return 1;
}

static void pool2d_render(ck_sbuf *s, const ck_layer_desc *d) {
    ck_sbuf_printf(s, "%s((%d,%d))", pool2d_name(d), d->kernel_h, d->kernel_w);
}

static int pool2d_same(const ck_layer_desc *a, const ck_layer_desc *b) {
    return a->kernel_h == b->kernel_h && a->kernel_w == b->kernel_w && a->stride_h == b->stride_h &&
           a->stride_w == b->stride_w && a->padding == b->padding;
}

const ck_layer_kind ck_lk_maxpool2d = {
    .type = CK_LAYER_MAXPOOL2D,
    .keras_name = "MaxPooling2D",
    .base_name = "max_pooling2d",
    .flags = CK_LK_NEEDS_4D | CK_LK_KEEPS_CHANNELS,
    .defaults = pool2d_defaults,
    .check = pool2d_check,
    .infer = pool2d_infer,
    .lower = pool2d_lower,
    .study_letter = 'P',
    .render = pool2d_render,
    .same = pool2d_same,
};

const ck_layer_kind ck_lk_avgpool2d = {
    .type = CK_LAYER_AVGPOOL2D,
    .keras_name = "AveragePooling2D",
    .base_name = "average_pooling2d",
    .flags = CK_LK_NEEDS_4D | CK_LK_KEEPS_CHANNELS,
    .defaults = pool2d_defaults,
    .check = pool2d_check,
    .infer = pool2d_infer,
    .lower = pool2d_lower,
    .study_letter = 'P',
    .render = pool2d_render,
    .same = pool2d_same,
};
