/* Add: the elementwise sum of two or more tensors of one shape, as keras.layers.Add (the merge of
 * a residual block). No weights. Forward out = ((a + b) + c) + ..., one rounding per sum, the
 * same on every backend (the backend's add: a loop on the CPU, ck_cuda_add on the GPU); backward
 * passes dy unchanged to every input. It reads several layers, so it exists only in graph models
 * (ck_layer_desc.num_inputs). */
#include "exec.h"
#include "layer.h"
#include "model_internal.h"

#define ADD_NAME "Add"

static const ck_node_kind add_node; /* its ops, at the end */

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

static const ck_keras_class add_classes[] = {{ADD_NAME, add_args, 0, 0, add_bind}, {0}};

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
    CK_TRY(e->be->add(e, io->out, io->ins[0], io->ins[1], io->count_in));
    for (int k = 2; k < io->nin; ++k)
        CK_TRY(e->be->add(e, io->out, io->out, io->ins[k], io->count_in));
    return CK_STATUS_SUCCESS;
}

static ck_status add_bwd(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    (void)n;
    for (int k = 0; k < io->nin; ++k)
        if (io->dxs[k])
            CK_TRY(e->be->copy(e->ctx, io->dxs[k], io->dy, io->count_in));
    return CK_STATUS_SUCCESS;
}

static const ck_node_kind add_node = {
    .type = CK_NODE_OTHER,
    .name = "add",
    .ops = {{add_fwd, add_bwd, NULL, NULL, NULL}, {add_fwd, add_bwd, NULL, NULL, NULL}},
};
