/* Dense: units outputs of a flat input (a 1 x 1 x c input counts as flat). */
#include "bf16.h"
#include "exec.h"
#include "layer.h"
#include "model_internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "gpu_layers.h"
#endif

static ck_status dense_check(ck_context *ctx, const ck_layer_desc *d, int index) {
    return ck_lk_check_units(ctx, d, index, ck_lk_dense.keras_name);
}

static ck_status dense_infer(ck_context *ctx, const ck_layer_desc *d, int index,
                             const ck_shape3 *in, ck_shape3 *out) {
    if (!in->flat && (in->h != 1 || in->w != 1))
        return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                       "layer %d (Dense '%s'): input (None, %d, %d, %d) is not flat; add "
                       "Flatten() or GlobalAveragePooling2D() before it",
                       index, d->name, in->h, in->w, in->c);
    *out = (ck_shape3){1, 1, d->units, 1};
    return CK_STATUS_SUCCESS;
}

/* kernel (in, units), glorot_uniform unless given; bias (Keras's fans of a vector: its size) */
static int dense_params(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                        ck_param_spec *spec) {
    spec[0] = (ck_param_spec){"kernel",
                              (size_t)in->c * out->c,
                              (double)in->c * out->c,
                              1,
                              ck_lk_init(d->kernel_initializer, CK_INIT_GLOROT_UNIFORM),
                              in->c,
                              out->c,
                              2,
                              {in->c, out->c}};
    if (!d->use_bias)
        return 1;
    spec[1] = ck_lk_bias_spec(d, out->c);
    return 2;
}

static int dense_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                       const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    ck_node *n = &nodes[0];
    ck_lk_node(n, &ck_nk_dense, in, out);
    ck_lk_place_weights(d, spec, at, n);
    return 1 + ck_lk_inline_act(d, out, &nodes[1]);
}

static void dense_render(ck_sbuf *s, const ck_layer_desc *d) {
    ck_sbuf_printf(s, "Dense(%d", d->units);
    ck_lk_render_weighted_tail(s, d);
}

/* input_dim (Keras 2's first-layer shape) is the text front end's. */
static const char *const dense_args[] = {"units", CK_KERAS_WEIGHTED_ARGS, "input_dim", NULL};

static int dense_bind(ck_kbind *b, ck_layer_desc *d) {
    return b->need(b, "units") || b->get_int(b, "units", 1, &d->units) ||
           ck_lk_keras_bind_weighted(b, d);
}

static const ck_keras_class dense_classes[] = {{"Dense", dense_args, 10, 0, dense_bind, NULL}, {0}};

static int dense_put(ck_kput *w, const ck_layer_desc *d) {
    return w->ints(w, "units", &d->units, 0, 0) || ck_lk_keras_put_weighted(w, d);
}

const ck_layer_kind ck_lk_dense = {
    .type = CK_LAYER_DENSE,
    .keras_name = "Dense",
    .base_name = "dense",
    .flags = CK_LK_FLATTENS,
    .check = dense_check,
    .infer = dense_infer,
    .params = dense_params,
    .lower = dense_lower,
    .render = dense_render,
    .same = ck_lk_same_weighted,
    .keras_classes = dense_classes,
    .keras_put = dense_put,
};

/* ---- node ops ---- */

/* bf16 (docs/precision.md), as a bf16 GEMM on the GPU: the kernel rounded to bf16
 * (ck_exec_weights); a hidden layer's product is rounded as cuBLAS stores it, then the bias is
 * added (the executor rounds the sum as it stores it); the logits are computed in fp32. */
static ck_status dense_fwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    const float *bias = n->n_bias ? e->params + n->p_bias : NULL;
    const float *k = ck_exec_weights(e) + n->p_kernel;
    if (!ck_exec_twin_rounds(e, io->i)) {
        ck_cpu_dense_forward(io->batch, n->ic, n->oc, io->in, k, bias, io->out);
        return CK_STATUS_SUCCESS;
    }
    ck_cpu_dense_forward(io->batch, n->ic, n->oc, io->in, k, NULL, io->out);
    ck_bf16_round_buffer(io->out, (size_t)io->batch * n->oc);
    if (bias)
        ck_cpu_bias_add((size_t)io->batch, n->oc, bias, io->out);
    return CK_STATUS_SUCCESS;
}

/* bf16: dx from the rounded kernel (the executor rounds dx); the kernel gradient stays fp32. */
static ck_status dense_bwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    ck_cpu_dense_backward(io->batch, n->ic, n->oc, io->in, ck_exec_weights(e) + n->p_kernel, io->dy,
                          io->dx, e->grads + n->p_kernel, n->n_bias ? e->grads + n->p_bias : NULL);
    return CK_STATUS_SUCCESS;
}

#ifdef CNNKIT_HAVE_CUDA
/* bf16: x and dy bf16 words (the logits node too: its dy is the packed loss gradient); a hidden
 * layer's y bf16, the logits' fp32 (ck_exec_out_dt). */
static ck_status dense_fwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    if (ck_exec_in_dt(e, io->i, 0) == CK_KDT_BF16 && !n->dev_bf16) /* its workspace is too small */
        return ck_fail(e->ctx, CK_STATUS_NOT_SUPPORTED,
                       "dense: node %d reads bf16 but was not planned for it", io->i);
    return ck_gdense_forward_dt(e->ctx, io->batch, n->ic, n->oc, io->in, ck_exec_in_dt(e, io->i, 0),
                                e->params + n->p_kernel, n->n_bias ? e->params + n->p_bias : NULL,
                                io->out, ck_exec_out_dt(e, io->i), e->ws);
}

static ck_status dense_bwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    const int dt = ck_exec_in_dt(e, io->i, 0);
    if (ck_exec_dy_dt(e, io->i) != dt)
        return ck_fail(e->ctx, CK_STATUS_NOT_SUPPORTED,
                       "dense: node %d reads dy as %s and its input as %s", io->i,
                       ck_exec_dy_dt(e, io->i) ? "bf16" : "fp32", dt ? "bf16" : "fp32");
    return ck_gdense_backward_dt(e->ctx, io->batch, n->ic, n->oc, io->in, e->params + n->p_kernel,
                                 io->dy, io->dx, e->grads + n->p_kernel,
                                 n->n_bias ? e->grads + n->p_bias : NULL, dt, e->ws);
}

/* the bias gradient's column sums; a bf16 model's dense also packs its kernel to bf16 there */
static size_t dense_ws_cuda(ck_context *ctx, const ck_node *n, int max_batch, const void *state) {
    (void)ctx;
    (void)max_batch;
    (void)state;
    return ck_gdense_workspace_bytes_dt(n->ic, n->oc, n->dev_bf16 ? CK_KDT_BF16 : CK_KDT_F32);
}
#define DENSE_CUDA                                                                                 \
    { dense_fwd_cuda, dense_bwd_cuda, NULL, NULL, dense_ws_cuda, 1 }
#else
#define DENSE_CUDA                                                                                 \
    { 0 }
#endif

const ck_node_kind ck_nk_dense = {
    .type = CK_NODE_DENSE,
    .name = "dense",
    .ops = {{dense_fwd_cpu, dense_bwd_cpu, NULL, NULL, NULL}, DENSE_CUDA},
};
