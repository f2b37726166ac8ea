/* GlobalAveragePooling2D, GlobalMaxPooling2D and Flatten: the layers that turn (H, W, C) into a
 * vector. */
#include "exec.h"
#include "layer.h"
#include "model_internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"
#endif

static ck_status gap2d_infer(ck_context *ctx, const ck_layer_desc *d, int index,
                             const ck_shape3 *in, ck_shape3 *out) {
    if (in->flat)
        return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                       "layer %d (%s '%s'): needs a 4-D input, got (None, %d)", index,
                       d->type == CK_LAYER_GLOBALMAXPOOL2D ? ck_lk_gmp2d.keras_name
                                                           : ck_lk_gap2d.keras_name,
                       d->name, in->c);
    *out = (ck_shape3){1, 1, in->c, 1};
    return CK_STATUS_SUCCESS;
}

static int gap2d_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                       const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    (void)d;
    (void)spec;
    (void)at;
    ck_lk_node(&nodes[0], &ck_nk_gap, in, out);
    return 1;
}

/* the max over the whole map: the pooling node with one H x W window (first maximum, its
 * gradient to that cell, as MaxPooling2D), its (1, 1, C) output read as the vector (C) */
static int gmp2d_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                       const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    (void)spec;
    (void)at;
    ck_layer_desc w = *d;
    w.kernel_h = w.stride_h = in->h;
    w.kernel_w = w.stride_w = in->w;
    w.padding = CK_PADDING_VALID;
    ck_lk_node(&nodes[0], &ck_nk_pool, in, out);
    ck_lk_window_geom(&w, in, in->c, 0, &nodes[0].geom); /* one window: always fits */
    nodes[0].is_max = 1;
    return 1;
}

static const char *const gap2d_args[] = {"data_format", "keepdims", NULL};

static int gap2d_bind(ck_kbind *b, ck_layer_desc *d) {
    (void)d;
    return b->data_format(b) || b->only_bool(b, "keepdims", 0);
}

static const ck_keras_class gap2d_classes[] = {
    {"GlobalAveragePooling2D", gap2d_args, 2, 0, gap2d_bind, NULL},
    {"GlobalAvgPool2D", gap2d_args, 2, 1, gap2d_bind, NULL},
    {0}};

static const ck_keras_class gmp2d_classes[] = {
    {"GlobalMaxPooling2D", gap2d_args, 2, 0, gap2d_bind, NULL},
    {"GlobalMaxPool2D", gap2d_args, 2, 1, gap2d_bind, NULL},
    {0}};

/* GlobalAveragePooling2D, GlobalMaxPooling2D and Flatten write only their data format. */
static int reshape_put(ck_kput *w, const ck_layer_desc *d) {
    (void)d;
    return w->str(w, "data_format", "channels_last");
}

const ck_layer_kind ck_lk_gap2d = {
    .type = CK_LAYER_GLOBALAVGPOOL2D,
    .keras_name = "GlobalAveragePooling2D",
    .base_name = "global_average_pooling2d",
    .flags = CK_LK_NEEDS_4D | CK_LK_FLATTENS | CK_LK_KEEPS_CHANNELS,
    .infer = gap2d_infer,
    .lower = gap2d_lower,
    .keras_classes = gap2d_classes,
    .keras_put = reshape_put,
};

const ck_layer_kind ck_lk_gmp2d = {
    .type = CK_LAYER_GLOBALMAXPOOL2D,
    .keras_name = "GlobalMaxPooling2D",
    .base_name = "global_max_pooling2d",
    .flags = CK_LK_NEEDS_4D | CK_LK_FLATTENS | CK_LK_KEEPS_CHANNELS,
    .infer = gap2d_infer,
    .lower = gmp2d_lower,
    .keras_classes = gmp2d_classes,
    .keras_put = reshape_put,
};

/* A flat input passes (Keras allows Flatten on a vector); the count must fit the int shapes. */
static ck_status flatten_infer(ck_context *ctx, const ck_layer_desc *d, int index,
                               const ck_shape3 *in, ck_shape3 *out) {
    if ((long long)in->h * in->w * in->c > 0x7fffffffLL)
        return ck_fail(ctx, CK_STATUS_OVERFLOW,
                       "layer %d (Flatten '%s'): %d x %d x %d values per sample do not fit in 32 "
                       "bits",
                       index, d->name, in->h, in->w, in->c);
    *out = (ck_shape3){1, 1, in->h * in->w * in->c, 1};
    return CK_STATUS_SUCCESS;
}

static int flatten_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                         const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    (void)d;
    (void)spec;
    (void)at;
    ck_lk_node(&nodes[0], &ck_nk_flatten, in, out);
    return 1;
}

static const char *const flatten_args[] = {"data_format", NULL};

static int flatten_bind(ck_kbind *b, ck_layer_desc *d) {
    (void)d;
    return b->data_format(b);
}

static const ck_keras_class flatten_classes[] = {
    {"Flatten", flatten_args, 1, 0, flatten_bind, NULL}, {0}};

const ck_layer_kind ck_lk_flatten = {
    .type = CK_LAYER_FLATTEN,
    .keras_name = "Flatten",
    .base_name = "flatten",
    .flags = CK_LK_FLATTENS,
    .infer = flatten_infer,
    .lower = flatten_lower,
    .keras_classes = flatten_classes,
    .keras_put = reshape_put,
};

/* ---- node ops ---- */

static ck_status gap_fwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    (void)e;
    ck_cpu_gap_forward(io->batch, n->ih * n->iw, n->ic, io->in, io->out);
    return CK_STATUS_SUCCESS;
}

static ck_status gap_bwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    (void)e;
    if (io->dx)
        ck_cpu_gap_backward(io->batch, n->ih * n->iw, n->ic, io->dy, io->dx);
    return CK_STATUS_SUCCESS;
}

#ifdef CNNKIT_HAVE_CUDA
static ck_status gap_fwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    CK_EXEC_CUDA(e->ctx,
                 ck_cuda_gap_forward(io->batch, n->ih * n->iw, n->ic, io->in, io->out,
                                     ck_exec_out_dt(e, io->i), e->ctx->stream),
                 "gap");
    return CK_STATUS_SUCCESS;
}

static ck_status gap_bwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    if (io->dx)
        CK_EXEC_CUDA(e->ctx,
                     ck_cuda_gap_backward(io->batch, n->ih * n->iw, n->ic, io->dy, io->dx,
                                          ck_exec_out_dt(e, io->i), e->ctx->stream),
                     "gap backward");
    return CK_STATUS_SUCCESS;
}
#define GAP_CUDA                                                                                   \
    { gap_fwd_cuda, gap_bwd_cuda, NULL, NULL, NULL, 1 }
#else
#define GAP_CUDA                                                                                   \
    { 0 }
#endif

const ck_node_kind ck_nk_gap = {
    .type = CK_NODE_GAP,
    .name = "global_average_pooling2d",
    .ops = {{gap_fwd_cpu, gap_bwd_cpu, NULL, NULL, NULL}, GAP_CUDA},
};

/* Flatten of NHWC memory is the same memory: the executor aliases it on every backend. */
const ck_node_kind ck_nk_flatten = {
    .type = CK_NODE_FLATTEN,
    .name = "flatten",
    .alias = 1,
};
