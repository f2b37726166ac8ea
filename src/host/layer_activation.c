/* Activation: one element-wise function (ck_activation; alpha for LeakyReLU / ELU). */
#include "layer.h"
#include "model_internal.h"

static ck_status activation_check(ck_context *ctx, const ck_layer_desc *d, int index) {
    if (!ck_lk_valid_activation(d->activation))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "layer %d (Activation): unknown activation %d",
                       index, (int)d->activation);
    return CK_STATUS_SUCCESS;
}

static int activation_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                            const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    (void)spec;
    (void)at;
    ck_lk_node(&nodes[0], CK_NODE_ACT, in, out);
    nodes[0].act = d->activation;
    nodes[0].alpha = d->alpha;
    return 1;
}

static void activation_render(ck_sbuf *s, const ck_layer_desc *d) {
    ck_sbuf_printf(s, "Activation('%s')", ck_lk_act_name(d->activation));
}

/* alpha only matters to the functions that read it */
static int activation_same(const ck_layer_desc *a, const ck_layer_desc *b) {
    return a->activation == b->activation &&
           ((a->activation != CK_ACT_LEAKY_RELU && a->activation != CK_ACT_ELU) ||
            a->alpha == b->alpha);
}

const ck_layer_kind ck_lk_activation = {
    .type = CK_LAYER_ACTIVATION,
    .keras_name = "Activation",
    .base_name = "activation",
    .flags = CK_LK_ELEMENTWISE | CK_LK_KEEPS_CHANNELS,
    .check = activation_check,
    .infer = ck_lk_infer_same,
    .lower = activation_lower,
    .study_letter = 'A',
    .render = activation_render,
    .same = activation_same,
};
