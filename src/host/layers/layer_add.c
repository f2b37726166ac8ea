/* Add: the elementwise sum of two or more tensors of one shape, as keras.layers.Add (the merge of
 * a residual block). No weights. Forward out = ((a + b) + c) + ..., one rounding per sum, the
 * same on every backend (the backend's add: a loop on the CPU, ck_cuda_add on the GPU); backward
 * passes dy unchanged to every input. It reads several layers, so it exists only in graph models
 * (ck_layer_desc.num_inputs). */
#include "bf16.h"
#include "exec.h"
#include "layer.h"
#include "model_internal.h"

#define ADD_NAME "Add"

static const ck_node_kind add_node, add_relu_node; /* their ops, at the end */

static ck_status add_infer(ck_context *ctx, const ck_layer_desc *d, int index, const ck_shape3 *in,
                           ck_shape3 *out) {
    (void)ctx, (void)d, (void)index;
    *out = *in;
    return CK_STATUS_SUCCESS;
}

/* Keras's Add refuses inputs of different shapes; so does cnnkit (no broadcasting). */
static ck_status add_infer_n(ck_context *ctx, const ck_layer_desc *d, int index,
                             const ck_shape3 *in, int nin, ck_shape3 *out) {
    for (int k = 1; k < nin; ++k)
        if (in[k].h != in[0].h || in[k].w != in[0].w || in[k].c != in[0].c ||
            in[k].flat != in[0].flat) {
            char a[64], b[64];
            ck_lk_shape_str(a, sizeof a, &in[0]);
            ck_lk_shape_str(b, sizeof b, &in[k]);
            return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                           "layer %d (" ADD_NAME " '%s'): inputs of different shapes, %s (input 1) "
                           "and %s (input %d); Add needs one shape (a projection shortcut, "
                           "Conv2D(filters, 1, strides=...), makes them match)",
                           index, d->name, a, b, k + 1);
        }
    *out = in[0];
    return CK_STATUS_SUCCESS;
}

static int add_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                     const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    (void)d, (void)spec, (void)at;
    ck_lk_node(&nodes[0], &add_node, in, out);
    return 1;
}

static const char *const add_args[] = {NULL};

static int add_bind(ck_kbind *b, ck_layer_desc *d) {
    (void)b, (void)d;
    return 0;
}

static const ck_keras_class add_classes[] = {{ADD_NAME, add_args, 0, 0, add_bind, NULL}, {0}};

static int add_put(ck_kput *w, const ck_layer_desc *d) {
    (void)w, (void)d;
    return 0;
}

const ck_layer_kind ck_lk_add = {
    .type = CK_LAYER_ADD,
    .keras_name = ADD_NAME,
    .base_name = "add",
    .flags = CK_LK_KEEPS_CHANNELS,
    .infer = add_infer,
    .min_inputs = 2,
    .infer_n = add_infer_n,
    .lower = add_lower,
    .study_letter = '+',
    .keras_classes = add_classes,
    .keras_put = add_put,
};

/* ---- node ops: one function for both backends, over the backend's add and copy ---- */

static ck_status add_fwd(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    (void)n;
    const int dt = ck_exec_out_dt(e, io->i); /* every input is stored as the sum is */
    CK_TRY(e->be->add(e, io->out, io->ins[0], io->ins[1], io->count_in, dt));
    for (int k = 2; k < io->nin; ++k) {
        /* a bf16 GPU stores each partial sum: the twin rounds it as well */
        if (ck_exec_twin_rounds(e, io->i))
            ck_bf16_round_buffer(io->out, io->count_in);
        CK_TRY(e->be->add(e, io->out, io->out, io->ins[k], io->count_in, dt));
    }
    return CK_STATUS_SUCCESS;
}

static ck_status add_bwd(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    (void)n;
    for (int k = 0; k < io->nin; ++k)
        if (io->dxs[k])
            CK_TRY(
                e->be->copy(e->ctx, io->dxs[k], io->dy, io->count_in, ck_exec_in_dt(e, io->i, k)));
    return CK_STATUS_SUCCESS;
}

/* Add then ReLU in place (plan.c fuses the ReLU that is an Add's only reader): the sum and the
 * ReLU round as the two nodes did, and ReLU's derivative reads y only, so the fusion is
 * bit-exact; the sum is not stored. The ReLU runs as the activation node's own op. */
static ck_node_io relu_io(const ck_node_io *io, float *dx) {
    ck_node_io a = *io;
    a.in = a.ins[0] = a.out;
    a.nin = 1;
    a.dx = a.dxs[0] = dx;
    return a;
}

static ck_status add_relu_fwd(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    CK_TRY(add_fwd(e, n, io));
    const ck_node_io a = relu_io(io, NULL);
    return ck_nk_act.ops[e->be->id].fwd(e, n, &a);
}

static ck_status add_relu_bwd(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    int first = -1;
    for (int k = 0; k < io->nin && first < 0; ++k)
        if (io->dxs[k])
            first = k;
    if (first < 0)
        return CK_STATUS_SUCCESS;
    const ck_node_io a = relu_io(io, io->dxs[first]);
    CK_TRY(ck_nk_act.ops[e->be->id].bwd(e, n, &a));
    for (int k = first + 1; k < io->nin; ++k)
        if (io->dxs[k])
            CK_TRY(e->be->copy(e->ctx, io->dxs[k], io->dxs[first], io->count_in,
                               ck_exec_in_dt(e, io->i, k)));
    return CK_STATUS_SUCCESS;
}

/* The sum's gradient is dy for every input: neither the inputs nor the sum are read; the fused
 * ReLU's derivative reads the output. */
static unsigned add_skips(const ck_node *n) {
    (void)n;
    return CK_BWD_SKIPS_IN | CK_BWD_SKIPS_OUT;
}
static unsigned add_relu_skips(const ck_node *n) {
    (void)n;
    return CK_BWD_SKIPS_IN;
}

static const ck_node_kind add_node = {
    .type = CK_NODE_OTHER,
    .name = "add",
    .ops = {{add_fwd, add_bwd, NULL, NULL, NULL}, {add_fwd, add_bwd, NULL, NULL, NULL, 1}},
    .with_relu = &add_relu_node,
    .bwd_skips = add_skips,
};

static const ck_node_kind add_relu_node = {
    .type = CK_NODE_OTHER,
    .name = "add+relu",
    .ops = {{add_relu_fwd, add_relu_bwd, NULL, NULL, NULL},
            {add_relu_fwd, add_relu_bwd, NULL, NULL, NULL, 1}},
    .bwd_skips = add_relu_skips,
};
