/* Helpers the layer kinds share (layer.h): argument checks, window geometry, node setup. */
#include "exec.h"
#include "layer.h"
#include "model_internal.h"

#include <stdio.h>
#include <string.h>

int ck_lk_valid_activation(ck_activation a) {
    return a >= CK_ACT_NONE && a <= CK_ACT_SWISH;
}

ck_status ck_lk_check_units(ck_context *ctx, const ck_layer_desc *d, int index, const char *tn) {
    if (d->units < 1)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "layer %d (%s): units/filters must be >= 1", index,
                       tn);
    if (!ck_lk_valid_activation(d->activation))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "layer %d (%s): unknown activation %d", index, tn,
                       (int)d->activation);
    return CK_STATUS_SUCCESS;
}

ck_status ck_lk_check_window(ck_context *ctx, const ck_layer_desc *d, int index, const char *tn) {
    if (d->kernel_h < 1 || d->kernel_w < 1 || d->stride_h < 0 || d->stride_w < 0)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "layer %d (%s): kernel/pool size must be >= 1 and strides >= 0", index, tn);
    if (d->padding != CK_PADDING_VALID && d->padding != CK_PADDING_SAME)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "layer %d (%s): padding must be valid or same",
                       index, tn);
    return CK_STATUS_SUCCESS;
}

int ck_lk_window_geom(const ck_layer_desc *d, const ck_shape3 *in, int cout, int is_conv,
                      ck_conv_geom *g) {
    const int sh = d->stride_h > 0 ? d->stride_h : (is_conv ? 1 : d->kernel_h);
    const int sw = d->stride_w > 0 ? d->stride_w : (is_conv ? 1 : d->kernel_w);
    return ck_conv_geom_make(g, 1, in->h, in->w, in->c, cout, d->kernel_h, d->kernel_w, sh, sw,
                             d->padding == CK_PADDING_SAME) != 0
               ? -1
               : 0;
}

ck_status ck_lk_fail_flat(ck_context *ctx, const ck_layer_desc *d, int index, const char *tn,
                          const ck_shape3 *in) {
    return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                   "layer %d (%s '%s'): needs a 4-D input (N, H, W, C), got (None, %d)", index, tn,
                   d->name, in->c);
}

ck_status ck_lk_infer_window(ck_context *ctx, const ck_layer_desc *d, int index, const char *tn,
                             const ck_shape3 *in, int cout, int is_conv, ck_shape3 *out) {
    if (in->flat)
        return ck_lk_fail_flat(ctx, d, index, tn, in);
    ck_conv_geom g;
    if (ck_lk_window_geom(d, in, cout, is_conv, &g) != 0)
        return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                       "layer %d (%s '%s'): window %dx%d does not fit the input %dx%d with '%s' "
                       "padding",
                       index, tn, d->name, d->kernel_h, d->kernel_w, in->h, in->w,
                       d->padding == CK_PADDING_SAME ? "same" : "valid");
    out->h = g.oh;
    out->w = g.ow;
    out->c = cout;
    out->flat = 0;
    return CK_STATUS_SUCCESS;
}

ck_status ck_lk_infer_same(ck_context *ctx, const ck_layer_desc *d, int index, const ck_shape3 *in,
                           ck_shape3 *out) {
    (void)ctx;
    (void)d;
    (void)index;
    *out = *in;
    return CK_STATUS_SUCCESS;
}

void ck_lk_shape_str(char *buf, size_t n, const ck_shape3 *s) {
    if (s->flat)
        snprintf(buf, n, "(None, %d)", s->c);
    else
        snprintf(buf, n, "(None, %d, %d, %d)", s->h, s->w, s->c);
}

void ck_lk_node(ck_node *n, const ck_node_kind *k, const ck_shape3 *in, const ck_shape3 *out) {
    n->type = k->type;
    n->kind = k;
    n->ih = in->h;
    n->iw = in->w;
    n->ic = in->c;
    n->oh = out->h;
    n->ow = out->w;
    n->oc = out->c;
}

void ck_lk_place_weights(const ck_layer_desc *d, const ck_param_spec *spec,
                         const ck_layer_place *at, ck_node *n) {
    n->p_kernel = at->off[0];
    n->n_kernel = spec[0].count;
    if (d->use_bias) {
        n->p_bias = at->off[1];
        n->n_bias = spec[1].count;
    }
}

const char *ck_lk_act_name(ck_activation a) {
    const char *n = ck_activation_name(a);
    return n ? n : "?";
}

void ck_lk_render_weighted_tail(ck_sbuf *s, const ck_layer_desc *d) {
    if (d->padding == CK_PADDING_SAME)
        ck_sbuf_printf(s, ",padding='same'");
    if (d->activation != CK_ACT_NONE)
        ck_sbuf_printf(s, ",activation='%s'", ck_lk_act_name(d->activation));
    if (!d->use_bias)
        ck_sbuf_printf(s, ",use_bias=False");
    ck_sbuf_printf(s, ")");
}

int ck_lk_same_weighted(const ck_layer_desc *a, const ck_layer_desc *b) {
    return a->units == b->units && a->kernel_h == b->kernel_h && a->kernel_w == b->kernel_w &&
           a->stride_h == b->stride_h && a->stride_w == b->stride_w && a->padding == b->padding &&
           a->use_bias == b->use_bias && a->activation == b->activation;
}

ck_param_spec ck_lk_bias_spec(const ck_layer_desc *d, int units) {
    return (ck_param_spec){"bias",
                           (size_t)units,
                           (double)units,
                           1,
                           ck_lk_init(d->bias_initializer, CK_INIT_ZEROS),
                           units,
                           units,
                           1,
                           {units}};
}

int ck_lk_keras_bind_weighted(ck_kbind *b, ck_layer_desc *d) {
    if (b->get_activation(b, "activation", &d->activation, &d->alpha) ||
        b->get_bool(b, "use_bias", &d->use_bias) ||
        b->get_initializer(b, "kernel_initializer", &d->kernel_initializer) ||
        b->get_initializer(b, "bias_initializer", &d->bias_initializer) ||
        b->only_none(b, "kernel_regularizer") || b->only_none(b, "bias_regularizer") ||
        b->only_none(b, "activity_regularizer") || b->only_none(b, "kernel_constraint") ||
        b->only_none(b, "bias_constraint"))
        return -1;
    /* the defaults said out loud are the defaults: one layer, one description */
    if (d->kernel_initializer == CK_INIT_GLOROT_UNIFORM)
        d->kernel_initializer = CK_INIT_DEFAULT;
    if (d->bias_initializer == CK_INIT_ZEROS)
        d->bias_initializer = CK_INIT_DEFAULT;
    return 0;
}

int ck_lk_keras_put_weighted(ck_kput *w, const ck_layer_desc *d) {
    return w->activation(w, "activation", d) || w->boolean(w, "use_bias", d->use_bias) ||
           w->initializer(
               w, "kernel_initializer",
               ck_initializer_class(ck_lk_init(d->kernel_initializer, CK_INIT_GLOROT_UNIFORM))) ||
           w->initializer(w, "bias_initializer",
                          ck_initializer_class(ck_lk_init(d->bias_initializer, CK_INIT_ZEROS)));
}
