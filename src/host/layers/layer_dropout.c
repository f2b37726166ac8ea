/* Dropout (one mask value per element) and SpatialDropout2D (one per sample and channel). */
#include "exec.h"
#include "layer.h"
#include "model_internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"
#endif

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
    ck_lk_node(&nodes[0], d->type == CK_LAYER_DROPOUT ? &ck_nk_dropout : &ck_nk_sdropout, in, out);
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

static const char *const dropout_args[] = {"rate", "noise_shape", "seed", NULL};
static const char *const sdropout_args[] = {"rate", "data_format", "seed", NULL};

/* Keras has no default rate: it must be given. */
static int dropout_rate(ck_kbind *b, ck_layer_desc *d) {
    double x;
    if (b->need(b, "rate") || b->get_num(b, "rate", 0, 0, 1, 1, &x))
        return -1;
    d->rate = (float)x;
    return 0;
}

static int dropout_bind(ck_kbind *b, ck_layer_desc *d) {
    return dropout_rate(b, d) || b->only_none(b, "noise_shape") || b->seed(b, "seed");
}

static int sdropout_bind(ck_kbind *b, ck_layer_desc *d) {
    return dropout_rate(b, d) || b->data_format(b) || b->seed(b, "seed");
}

static const ck_keras_class dropout_classes[] = {
    {"Dropout", dropout_args, 3, 0, dropout_bind, NULL}, {0}};
static const ck_keras_class sdropout_classes[] = {
    {"SpatialDropout2D", sdropout_args, 2, 0, sdropout_bind, NULL}, {0}};

static int dropout_put(ck_kput *w, const ck_layer_desc *d) {
    return w->num(w, "rate", d->rate);
}

/* Keras's SpatialDropout2D.from_config takes no trainable. */
static int sdropout_put(ck_kput *w, const ck_layer_desc *d) {
    return w->num(w, "rate", d->rate) || w->str(w, "data_format", "channels_last") ||
           w->drop(w, "trainable");
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
    .keras_classes = dropout_classes,
    .keras_put = dropout_put,
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
    .keras_classes = sdropout_classes,
    .keras_put = sdropout_put,
};

/* ---- node ops: the public dropout calls run on the context's device, so both backends share
 * them; only the copy of an inactive dropout is the backend's ---- */

static ck_dropout_kind drop_kind(ck_node_type t) {
    return t == CK_NODE_DROPOUT ? CK_DROPOUT_ELEMENT : CK_DROPOUT_SPATIAL;
}

static ck_status drop_fwd(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    if (!io->training || !(n->rate > 0.0f))
        return e->be->copy(e->ctx, io->out, io->in, io->count_in, ck_exec_out_dt(e, io->i));
    ck_dropout_desc d = {n->rate, ck_model_dropout_offset(e->m, io->i), e->sample0};
    ck_tensor tx =
        ck_exec_view_dt(e->ctx, io->in, io->batch, n->ih, n->iw, n->ic, ck_exec_in_dt(e, io->i, 0));
    ck_tensor ty =
        ck_exec_view_dt(e->ctx, io->out, io->batch, n->oh, n->ow, n->oc, ck_exec_out_dt(e, io->i));
    return ck_dropout_keyed(e->ctx, drop_kind(n->type), &d,
                            ck_exec_drop_key(e, ck_model_dropout_layer(e->m, io->i)), &tx, "x", &ty,
                            "y");
}

static ck_status drop_bwd(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    if (!io->dx)
        return CK_STATUS_SUCCESS;
    if (!(n->rate > 0.0f))
        return e->be->copy(e->ctx, io->dx, io->dy, io->count_in, ck_exec_in_dt(e, io->i, 0));
    ck_dropout_desc d = {n->rate, ck_model_dropout_offset(e->m, io->i), e->sample0};
    ck_tensor tdy =
        ck_exec_view_dt(e->ctx, io->dy, io->batch, n->oh, n->ow, n->oc, ck_exec_dy_dt(e, io->i));
    ck_tensor tdx =
        ck_exec_view_dt(e->ctx, io->dx, io->batch, n->ih, n->iw, n->ic, ck_exec_in_dt(e, io->i, 0));
    return ck_dropout_keyed(e->ctx, drop_kind(n->type), &d,
                            ck_exec_drop_key(e, ck_model_dropout_layer(e->m, io->i)), &tdy, "dy",
                            &tdx, "dx");
}

#define DROP_OPS                                                                                   \
    { drop_fwd, drop_bwd, NULL, NULL, NULL }
/* CUDA: the same ops, which honour the views' storage (ck_cuda_dropout) */
#define DROP_OPS_CUDA                                                                              \
    { drop_fwd, drop_bwd, NULL, NULL, NULL, 1 }

const ck_node_kind ck_nk_dropout = {
    .type = CK_NODE_DROPOUT,
    .name = "dropout",
    .ops = {DROP_OPS, DROP_OPS_CUDA},
};

const ck_node_kind ck_nk_sdropout = {
    .type = CK_NODE_SDROPOUT,
    .name = "spatial_dropout2d",
    .ops = {DROP_OPS, DROP_OPS_CUDA},
};
