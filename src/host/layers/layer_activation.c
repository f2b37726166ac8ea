/* Activation: one element-wise function (ck_activation; alpha for LeakyReLU / ELU). */
#include "exec.h"
#include "layer.h"
#include "model_internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"
#endif

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
    ck_lk_node(&nodes[0], &ck_nk_act, in, out);
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

int ck_lk_inline_act(const ck_layer_desc *d, const ck_shape3 *out, ck_node *n) {
    if (d->activation == CK_ACT_NONE)
        return 0;
    ck_lk_node(n, &ck_nk_act, out, out);
    n->act = d->activation;
    n->alpha = d->alpha;
    return 1;
}

/* ---- node ops ---- */

static ck_status act_fwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    (void)e;
    ck_cpu_activation_forward(n->act, n->alpha, io->in, io->out, io->count_in, n->oc);
    return CK_STATUS_SUCCESS;
}

static ck_status act_bwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    (void)e;
    if (io->dx)
        ck_cpu_activation_backward(n->act, n->alpha, io->in, io->out, io->dy, io->dx, io->count_in,
                                   n->oc);
    return CK_STATUS_SUCCESS;
}

#ifdef CNNKIT_HAVE_CUDA
static ck_status act_fwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    CK_EXEC_CUDA(e->ctx,
                 ck_cuda_activation_forward((int)n->act, n->alpha, io->in, io->out, io->count_in,
                                            n->oc, e->ctx->stream),
                 "activation");
    return CK_STATUS_SUCCESS;
}

static ck_status act_bwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    if (io->dx)
        CK_EXEC_CUDA(e->ctx,
                     ck_cuda_activation_backward((int)n->act, n->alpha, io->in, io->out, io->dy,
                                                 io->dx, io->count_in, n->oc, e->ctx->stream),
                     "activation backward");
    return CK_STATUS_SUCCESS;
}
#define ACT_CUDA                                                                                   \
    { act_fwd_cuda, act_bwd_cuda, NULL, NULL, NULL }
#else
#define ACT_CUDA                                                                                   \
    { 0 }
#endif

const ck_node_kind ck_nk_act = {
    .type = CK_NODE_ACT,
    .name = "activation",
    .ops = {{act_fwd_cpu, act_bwd_cpu, NULL, NULL, NULL}, ACT_CUDA},
};
