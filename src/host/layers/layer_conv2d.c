/* Conv2D: filters (units) of kernel_h x kernel_w over NHWC, stride 1 by default. */
#include "bf16.h"
#include "exec.h"
#include "layer.h"
#include "model_internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "gpu_layers.h"
#endif

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

/* kernel (kh, kw, cin, filters), glorot_uniform unless given, the receptive field in both fans;
 * bias (Keras's fans of a vector: its size) */
static int conv2d_params(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                         ck_param_spec *spec) {
    const long long rf = (long long)d->kernel_h * d->kernel_w;
    spec[0] = (ck_param_spec){"kernel",
                              (size_t)d->kernel_h * d->kernel_w * in->c * out->c,
                              (double)d->kernel_h * d->kernel_w * in->c * out->c,
                              1,
                              ck_lk_init(d->kernel_initializer, CK_INIT_GLOROT_UNIFORM),
                              rf * in->c,
                              rf * out->c,
                              4,
                              {d->kernel_h, d->kernel_w, in->c, out->c}};
    if (!d->use_bias)
        return 1;
    spec[1] = ck_lk_bias_spec(d, out->c);
    return 2;
}

static int conv2d_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                        const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    ck_node *n = &nodes[0];
    ck_lk_node(n, &ck_nk_conv, in, out);
    ck_lk_window_geom(d, in, out->c, 1, &n->geom); /* fits: infer checked it */
    ck_lk_place_weights(d, spec, at, n);
    return 1 + ck_lk_inline_act(d, out, &nodes[1]);
}

static void conv2d_render(ck_sbuf *s, const ck_layer_desc *d) {
    ck_sbuf_printf(s, "Conv2D(%d,(%d,%d)", d->units, d->kernel_h, d->kernel_w);
    if (d->stride_h > 1 || d->stride_w > 1)
        ck_sbuf_printf(s, ",strides=(%d,%d)", d->stride_h > 0 ? d->stride_h : 1,
                       d->stride_w > 0 ? d->stride_w : 1);
    ck_lk_render_weighted_tail(s, d);
}

static const char *const conv2d_args[] = {"filters", "kernel_size",          "strides",
                                          "padding", "data_format",          "dilation_rate",
                                          "groups",  CK_KERAS_WEIGHTED_ARGS, NULL};

static int conv2d_bind(ck_kbind *b, ck_layer_desc *d) {
    return b->need(b, "filters") || b->need(b, "kernel_size") ||
           b->get_int(b, "filters", 1, &d->units) ||
           b->get_pair(b, "kernel_size", &d->kernel_h, &d->kernel_w) ||
           b->get_pair(b, "strides", &d->stride_h, &d->stride_w) ||
           b->get_padding(b, &d->padding) || b->data_format(b) ||
           b->only_ones(b, "dilation_rate") || b->only_int(b, "groups", 1) ||
           ck_lk_keras_bind_weighted(b, d);
}

static const ck_keras_class conv2d_classes[] = {
    {"Conv2D", conv2d_args, 16, 0, conv2d_bind, NULL},
    {"Convolution2D", conv2d_args, 16, 1, conv2d_bind, NULL},
    {0}};

static int conv2d_put(ck_kput *w, const ck_layer_desc *d) {
    const int ks[2] = {d->kernel_h, d->kernel_w}, st[2] = {d->stride_h, d->stride_w};
    const int ones[2] = {1, 1}, one = 1;
    return w->ints(w, "filters", &d->units, 0, 0) || w->ints(w, "kernel_size", ks, 2, 0) ||
           w->ints(w, "strides", st, 2, 0) ||
           w->str(w, "padding", d->padding == CK_PADDING_SAME ? "same" : "valid") ||
           w->str(w, "data_format", "channels_last") || w->ints(w, "dilation_rate", ones, 2, 0) ||
           w->ints(w, "groups", &one, 0, 0) || ck_lk_keras_put_weighted(w, d);
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
    .keras_classes = conv2d_classes,
    .keras_put = conv2d_put,
};

/* ---- node ops ---- */

/* bf16 (docs/precision.md), as a bf16 convolution on the GPU: the kernel rounded to bf16
 * (ck_exec_weights), the product rounded as cuDNN stores it, then the bias added (the executor
 * rounds that sum as it stores the output: a conv with bias rounds twice). */
static ck_status conv_fwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    ck_conv_geom g = ck_exec_geom(n, io->batch);
    const float *bias = n->n_bias ? e->params + n->p_bias : NULL;
    const float *k = ck_exec_weights(e) + n->p_kernel;
    if (!ck_exec_twin_rounds(e, io->i)) {
        ck_cpu_conv2d_forward(&g, io->in, k, bias, io->out, (float *)e->ws);
        return CK_STATUS_SUCCESS;
    }
    const size_t rows = (size_t)g.n * g.oh * g.ow;
    ck_cpu_conv2d_forward(&g, io->in, k, NULL, io->out, (float *)e->ws);
    ck_bf16_round_buffer(io->out, rows * g.cout);
    if (bias)
        ck_cpu_bias_add(rows, g.cout, bias, io->out);
    return CK_STATUS_SUCCESS;
}

/* bf16: cuDNN writes the kernel gradient in bf16, so the twin rounds it (not the bias's). */
static ck_status conv_bwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    ck_conv_geom g = ck_exec_geom(n, io->batch);
    ck_cpu_conv2d_backward(&g, io->in, ck_exec_weights(e) + n->p_kernel, io->dy, io->dx,
                           e->grads + n->p_kernel, n->n_bias ? e->grads + n->p_bias : NULL,
                           (float *)e->ws);
    if (ck_exec_twin_rounds(e, io->i))
        ck_bf16_round_buffer(e->grads + n->p_kernel, n->n_kernel);
    return CK_STATUS_SUCCESS;
}

/* the im2col workspace of the largest batch */
static size_t conv_ws_cpu(ck_context *ctx, const ck_node *n, int max_batch, const void *state) {
    (void)ctx;
    (void)state;
    ck_conv_geom g = ck_exec_geom(n, max_batch);
    return sizeof(float) * ck_cpu_conv2d_workspace_floats(&g);
}

#ifdef CNNKIT_HAVE_CUDA
/* The plan was made for the storage the executor gives the node (input, output and dy alike: a
 * conv is never the logits node of a bf16 GPU model). */
static ck_status conv_check_dt(const ck_exec *e, const ck_node_io *io, const ck_gconv *c) {
    const int dt = ck_gconv_dt(c);
    if (ck_exec_in_dt(e, io->i, 0) != dt || ck_exec_out_dt(e, io->i) != dt)
        return ck_fail(e->ctx, CK_STATUS_NOT_SUPPORTED,
                       "conv: node %d was planned for %s storage, the executor stores %s / %s",
                       io->i, dt ? "bf16" : "fp32", ck_exec_in_dt(e, io->i, 0) ? "bf16" : "fp32",
                       ck_exec_out_dt(e, io->i) ? "bf16" : "fp32");
    return CK_STATUS_SUCCESS;
}

static ck_status conv_fwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    ck_gconv *c = (ck_gconv *)e->state[io->i];
    CK_TRY(conv_check_dt(e, io, c));
    return ck_gconv_forward(e->ctx, c, io->batch, io->in, e->params + n->p_kernel,
                            n->n_bias ? e->params + n->p_bias : NULL, io->out, e->ws);
}

static ck_status conv_bwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    ck_gconv *c = (ck_gconv *)e->state[io->i];
    CK_TRY(conv_check_dt(e, io, c));
    return ck_gconv_backward(e->ctx, c, io->batch, io->in, e->params + n->p_kernel, io->dy, io->dx,
                             e->grads + n->p_kernel, n->n_bias ? e->grads + n->p_bias : NULL,
                             e->ws);
}

/* the cuDNN plan (algorithms, descriptors) for the largest batch, in bf16 for a bf16 model */
static ck_status conv_prepare_cuda(ck_context *ctx, const ck_node *n, int max_batch, void **state) {
    ck_conv_geom g = ck_exec_geom(n, max_batch);
    return ck_gconv_create_dt(ctx, &g, 0, n->dev_bf16 ? CK_KDT_BF16 : CK_KDT_F32,
                              (ck_gconv **)state);
}

static void conv_release_cuda(void *state) {
    ck_gconv_destroy((ck_gconv *)state);
}

static size_t conv_ws_cuda(ck_context *ctx, const ck_node *n, int max_batch, const void *state) {
    (void)ctx;
    (void)n;
    (void)max_batch;
    return state ? ck_gconv_workspace_bytes((const ck_gconv *)state) : 0; /* not prepared */
}
#define CONV_CUDA                                                                                  \
    { conv_fwd_cuda, conv_bwd_cuda, conv_prepare_cuda, conv_release_cuda, conv_ws_cuda, 1 }
#else
#define CONV_CUDA                                                                                  \
    { 0 }
#endif

const ck_node_kind ck_nk_conv = {
    .type = CK_NODE_CONV,
    .name = "conv2d",
    .ops = {{conv_fwd_cpu, conv_bwd_cpu, NULL, NULL, conv_ws_cpu}, CONV_CUDA},
};
