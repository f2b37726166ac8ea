/* Activation: one element-wise function (ck_activation; alpha for LeakyReLU / ELU). */
#include "exec.h"
#include "layer.h"
#include "model_internal.h"

#include <string.h>

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

static const char *activation_class_of(const ck_layer_desc *d);

/* The slope (ReLU, LeakyReLU) or alpha (ELU) its layer class is written with: 0 where the
 * activation is a plain ReLU. */
static double class_arg(const ck_layer_desc *d) {
    return d->activation == CK_ACT_RELU ? 0.0 : (double)d->alpha;
}

/* A slope or alpha that the activation's name does not imply is written with its layer class,
 * and so is a layer written as one (ReLU(), Softmax()). */
static void activation_render(ck_sbuf *s, const ck_layer_desc *d) {
    const char *cls = activation_class_of(d);
    if (!strcmp(cls, "ReLU"))
        ck_sbuf_printf(s, class_arg(d) != 0.0 ? "ReLU(negative_slope=%g)" : "ReLU()", class_arg(d));
    else if (!strcmp(cls, "Softmax"))
        ck_sbuf_printf(s, "Softmax()");
    else if (cls[0] == 'L')
        ck_sbuf_printf(s, "LeakyReLU(negative_slope=%g)", class_arg(d));
    else if (cls[0] == 'E')
        ck_sbuf_printf(s, "ELU(alpha=%g)", class_arg(d));
    else
        ck_sbuf_printf(s, "Activation('%s')", ck_lk_act_name(d->activation));
}

/* alpha only matters to the functions that read it */
static int activation_same(const ck_layer_desc *a, const ck_layer_desc *b) {
    return a->activation == b->activation &&
           ((a->activation != CK_ACT_LEAKY_RELU && a->activation != CK_ACT_ELU) ||
            a->alpha == b->alpha);
}

/* ---- Keras: Activation(name) and the activation layers ReLU, LeakyReLU, ELU, Softmax ---- */
static const char *const activation_args[] = {"activation", NULL};
static const char *const relu_args[] = {"max_value", "negative_slope", "threshold", NULL};
static const char *const lrelu_args[] = {"alpha", "negative_slope", NULL};
static const char *const elu_args[] = {"alpha", NULL};
static const char *const softmax_args[] = {"axis", NULL};

static int activation_bind(ck_kbind *b, ck_layer_desc *d) {
    return b->need(b, "activation") ||
           b->get_activation(b, "activation", &d->activation, &d->alpha);
}

/* ReLU(negative_slope > 0) is a leaky ReLU; a capped or shifted ReLU is refused. */
static int relu_bind(ck_kbind *b, ck_layer_desc *d) {
    double th = 0, x = 0;
    if (b->only_none(b, "max_value") || b->get_num(b, "threshold", -1e308, 0, 1e308, 0, &th))
        return -1;
    if (th != 0)
        return b->refuse(b, "threshold", "0");
    if (b->get_num(b, "negative_slope", 0, 0, 1e308, 0, &x))
        return -1;
    d->activation = x > 0 ? CK_ACT_LEAKY_RELU : CK_ACT_RELU;
    if (x > 0)
        d->alpha = (float)x;
    return 0;
}

/* Keras 2's alpha or Keras 3's negative_slope (default 0.3); a slope of 0 is a plain ReLU, a
 * negative one Keras 3 refuses. */
static int lrelu_bind(ck_kbind *b, ck_layer_desc *d) {
    double x = 0.3;
    if (b->has(b, "alpha") && b->has(b, "negative_slope"))
        return b->conflict(b, "alpha", "negative_slope");
    if (b->get_num(b, b->has(b, "alpha") ? "alpha" : "negative_slope", 0, 0, 1e308, 0, &x))
        return -1;
    d->activation = x == 0 ? CK_ACT_RELU : CK_ACT_LEAKY_RELU;
    d->alpha = (float)x;
    return 0;
}

static int elu_bind(ck_kbind *b, ck_layer_desc *d) {
    double x = 1.0;
    if (b->get_num(b, "alpha", -1e308, 0, 1e308, 0, &x))
        return -1;
    d->activation = x == 0 ? CK_ACT_RELU : CK_ACT_ELU;
    d->alpha = (float)x;
    return 0;
}

/* Over the channels only: -1 or the input's last axis. */
static int softmax_bind(ck_kbind *b, ck_layer_desc *d) {
    int ax[4], rows, cols;
    if (b->ints(b, "axis", "-1 (the channels axis)", ax, &rows, &cols))
        return -1;
    if (rows != -1 && !(rows == 0 && (ax[0] == -1 || ax[0] == b->rank - 1)))
        return b->refuse(b, "axis", "-1 (the channels axis)");
    d->activation = CK_ACT_SOFTMAX;
    return 0;
}

/* base_name: Keras names a ReLU() layer re_lu, and so on */
static const ck_keras_class activation_classes[] = {
    {"Activation", activation_args, 1, 0, activation_bind, NULL},
    {"ReLU", relu_args, 3, 0, relu_bind, "re_lu"},
    {"LeakyReLU", lrelu_args, 1, 0, lrelu_bind, "leaky_re_lu"},
    {"ELU", elu_args, 1, 0, elu_bind, "elu"},
    {"Softmax", softmax_args, 1, 0, softmax_bind, "softmax"},
    {0}};

/* The class d was written as (keras_class), when it can say d's activation; else NULL (the
 * registry's ck_layer_base_name finds the class by name alone: ck_model_add checks both agree). */
static const char *written_class(const ck_layer_desc *d) {
    const char *c = d->keras_class;
    const int relu = d->activation == CK_ACT_RELU, leaky = d->activation == CK_ACT_LEAKY_RELU;
    if ((!strcmp(c, "ReLU") || !strcmp(c, "LeakyReLU")) && (relu || leaky))
        return !strcmp(c, "ReLU") ? "ReLU" : "LeakyReLU";
    if (!strcmp(c, "ELU") && (relu || d->activation == CK_ACT_ELU))
        return "ELU";
    if (!strcmp(c, "Softmax") && d->activation == CK_ACT_SOFTMAX)
        return "Softmax";
    return NULL;
}

/* The class written as, else a slope the activation names of Keras cannot say as its class. */
static const char *activation_class_of(const ck_layer_desc *d) {
    const char *kept = written_class(d);
    if (kept)
        return kept;
    if (d->activation == CK_ACT_LEAKY_RELU && d->alpha != 0.2f)
        return "LeakyReLU";
    if (d->activation == CK_ACT_ELU && d->alpha != 1.0f)
        return "ELU";
    return "Activation";
}

static int activation_put(ck_kput *w, const ck_layer_desc *d) {
    const char *cls = activation_class_of(d);
    if (!strcmp(cls, "Softmax")) {
        const int axis = -1;
        return w->ints(w, "axis", &axis, 0, 0);
    }
    if (cls[0] == 'R' || cls[0] == 'L')
        return w->num(w, "negative_slope", (float)class_arg(d));
    if (cls[0] == 'E')
        return w->num(w, "alpha", (float)class_arg(d));
    return w->activation(w, "activation", d);
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
    .keras_classes = activation_classes,
    .keras_class_of = activation_class_of,
    .keras_put = activation_put,
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
                                            n->oc, ck_exec_out_dt(e, io->i), e->ctx->stream),
                 "activation");
    return CK_STATUS_SUCCESS;
}

static ck_status act_bwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    if (io->dx)
        CK_EXEC_CUDA(e->ctx,
                     ck_cuda_activation_backward((int)n->act, n->alpha, io->in, io->out, io->dy,
                                                 io->dx, io->count_in, n->oc,
                                                 ck_exec_out_dt(e, io->i), e->ctx->stream),
                     "activation backward");
    return CK_STATUS_SUCCESS;
}
#define ACT_CUDA                                                                                   \
    { act_fwd_cuda, act_bwd_cuda, NULL, NULL, NULL, 1 }
#else
#define ACT_CUDA                                                                                   \
    { 0 }
#endif

const ck_node_kind ck_nk_act = {
    .type = CK_NODE_ACT,
    .name = "activation",
    .ops = {{act_fwd_cpu, act_bwd_cpu, NULL, NULL, NULL}, ACT_CUDA},
};
