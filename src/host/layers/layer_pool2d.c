/* MaxPooling2D and AveragePooling2D: pool_size 2 x 2, strides None (= the pool size). */
#include "bf16.h"
#include "exec.h"
#include "layer.h"
#include "model_internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"
#endif

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
    ck_lk_node(&nodes[0], &ck_nk_pool, in, out);
    ck_lk_window_geom(d, in, in->c, 0, &nodes[0].geom); /* fits: infer checked it */
    nodes[0].is_max = d->type == CK_LAYER_MAXPOOL2D;
    return 1;
}

static void pool2d_render(ck_sbuf *s, const ck_layer_desc *d) {
    ck_sbuf_printf(s, "%s((%d,%d)", pool2d_name(d), d->kernel_h, d->kernel_w);
    /* each axis's 0 is its pool size, as ck_lk_window_geom reads it */
    const int sh = d->stride_h > 0 ? d->stride_h : d->kernel_h;
    const int sw = d->stride_w > 0 ? d->stride_w : d->kernel_w;
    if (sh != d->kernel_h || sw != d->kernel_w)
        ck_sbuf_printf(s, ",strides=(%d,%d)", sh, sw);
    if (d->padding == CK_PADDING_SAME)
        ck_sbuf_printf(s, ",padding='same'");
    ck_sbuf_printf(s, ")");
}

static int pool2d_same(const ck_layer_desc *a, const ck_layer_desc *b) {
    return a->kernel_h == b->kernel_h && a->kernel_w == b->kernel_w && a->stride_h == b->stride_h &&
           a->stride_w == b->stride_w && a->padding == b->padding;
}

static const char *const pool2d_args[] = {"pool_size", "strides", "padding", "data_format", NULL};

/* strides=None (or absent) is the pool size. */
static int pool2d_bind(ck_kbind *b, ck_layer_desc *d) {
    if (b->get_pair(b, "pool_size", &d->kernel_h, &d->kernel_w) || b->get_padding(b, &d->padding) ||
        b->data_format(b))
        return -1;
    d->stride_h = d->kernel_h;
    d->stride_w = d->kernel_w;
    return b->has(b, "strides") ? b->get_pair(b, "strides", &d->stride_h, &d->stride_w) : 0;
}

static const ck_keras_class maxpool2d_classes[] = {
    {"MaxPooling2D", pool2d_args, 4, 0, pool2d_bind, NULL},
    {"MaxPool2D", pool2d_args, 4, 1, pool2d_bind, NULL},
    {0}};
static const ck_keras_class avgpool2d_classes[] = {
    {"AveragePooling2D", pool2d_args, 4, 0, pool2d_bind, NULL},
    {"AvgPool2D", pool2d_args, 4, 1, pool2d_bind, NULL},
    {0}};

static int pool2d_put(ck_kput *w, const ck_layer_desc *d) {
    const int ps[2] = {d->kernel_h, d->kernel_w};
    const int st[2] = {d->stride_h ? d->stride_h : d->kernel_h,
                       d->stride_w ? d->stride_w : d->kernel_w};
    return w->ints(w, "pool_size", ps, 2, 0) ||
           w->str(w, "padding", d->padding == CK_PADDING_SAME ? "same" : "valid") ||
           w->ints(w, "strides", st, 2, 0) || w->str(w, "data_format", "channels_last");
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
    .keras_classes = maxpool2d_classes,
    .keras_put = pool2d_put,
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
    .keras_classes = avgpool2d_classes,
    .keras_put = pool2d_put,
};

/* ---- node ops ---- */

/* F3 (plan.c): a dropout fused into the node runs in place on the pooled output. The CPU twin of
 * a bf16 model (docs/precision.md) rounds between the pool and the dropout, as the GPU path
 * stores twice (the pooled output, then it scaled in place). */
static ck_status pool_drop_fwd(const ck_exec *e, const ck_node *n, const ck_node_io *io) {
    ck_dropout_desc d;
    ck_drop_key key;
    if (!ck_exec_fused_dropout(e, io->i, io->training, &d, &key))
        return CK_STATUS_SUCCESS;
    const size_t count = (size_t)io->batch * n->oh * n->ow * n->oc;
    if (ck_exec_twin_rounds(e,
                            io->i)) /* the GPU stores the pooled output (rounded), then scales it */
        ck_bf16_round_buffer(io->out, count);
    ck_tensor ty =
        ck_exec_view_dt(e->ctx, io->out, io->batch, n->oh, n->ow, n->oc, ck_exec_out_dt(e, io->i));
    return ck_dropout_keyed(
        e->ctx, n->drop_type == CK_NODE_DROPOUT ? CK_DROPOUT_ELEMENT : CK_DROPOUT_SPATIAL, &d, key,
        &ty, "x", &ty, "y");
}

/* its backward: dy * mask in place (dy is a gradient buffer, not read again) */
static ck_status pool_drop_bwd(const ck_exec *e, const ck_node *n, const ck_node_io *io) {
    ck_dropout_desc d;
    ck_drop_key key;
    if (!ck_exec_fused_dropout(e, io->i, 1, &d, &key))
        return CK_STATUS_SUCCESS;
    ck_tensor tdy =
        ck_exec_view_dt(e->ctx, io->dy, io->batch, n->oh, n->ow, n->oc, ck_exec_dy_dt(e, io->i));
    CK_TRY(ck_dropout_keyed(
        e->ctx, n->drop_type == CK_NODE_DROPOUT ? CK_DROPOUT_ELEMENT : CK_DROPOUT_SPATIAL, &d, key,
        &tdy, "dy", &tdy, "dx"));
    if (ck_exec_twin_rounds(
            e, io->i)) /* the GPU stores the scaled dy (rounded) before the pool backward */
        ck_bf16_round_buffer(io->dy, (size_t)io->batch * n->oh * n->ow * n->oc);
    return CK_STATUS_SUCCESS;
}

static ck_status pool_fwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    ck_conv_geom g = ck_exec_geom(n, io->batch);
    ck_cpu_pool_forward(&g, n->is_max, io->in, io->out);
    return pool_drop_fwd(e, n, io);
}

static ck_status pool_bwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    if (!io->dx)
        return CK_STATUS_SUCCESS;
    CK_TRY(pool_drop_bwd(e, n, io));
    ck_conv_geom g = ck_exec_geom(n, io->batch);
    ck_cpu_pool_backward(&g, n->is_max, io->in, io->dy, io->dx);
    return CK_STATUS_SUCCESS;
}

#ifdef CNNKIT_HAVE_CUDA
static ck_status pool_fwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    CK_EXEC_CUDA(e->ctx,
                 ck_cuda_pool_forward(ck_exec_geom(n, io->batch), n->is_max, io->in, io->out,
                                      ck_exec_out_dt(e, io->i), e->ctx->stream),
                 "pool");
    return pool_drop_fwd(e, n, io);
}

static ck_status pool_bwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    if (!io->dx)
        return CK_STATUS_SUCCESS;
    CK_TRY(pool_drop_bwd(e, n, io));
    CK_EXEC_CUDA(e->ctx,
                 ck_cuda_pool_backward(ck_exec_geom(n, io->batch), n->is_max, io->in, io->dy,
                                       io->dx, ck_exec_out_dt(e, io->i), e->ctx->stream),
                 "pool backward");
    return CK_STATUS_SUCCESS;
}
#define POOL_CUDA                                                                                  \
    { pool_fwd_cuda, pool_bwd_cuda, NULL, NULL, NULL, 1 }
#else
#define POOL_CUDA                                                                                  \
    { 0 }
#endif

const ck_node_kind ck_nk_pool = {
    .type = CK_NODE_POOL,
    .name = "pool2d",
    .ops = {{pool_fwd_cpu, pool_bwd_cpu, NULL, NULL, NULL}, POOL_CUDA},
};
