/* Concatenate: the channels of two or more tensors of one height and width, side by side in the
 * order given, as keras.layers.Concatenate(axis=-1) (the channel axis of channels_last; the only
 * axis cnnkit joins). No weights. Exact on every backend: forward copies each input's channels
 * into its slice of the output, backward copies each slice of dy back. It reads several layers,
 * so it exists only in graph models (ck_layer_desc.num_inputs). */
#include "exec.h"
#include "layer.h"
#include "model_internal.h"

#include <string.h>

#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"
#endif

#define CAT_NAME "Concatenate"

static const ck_node_kind cat_node; /* its ops, at the end */

static ck_status cat_infer(ck_context *ctx, const ck_layer_desc *d, int index, const ck_shape3 *in,
                           ck_shape3 *out) {
    (void)ctx, (void)d, (void)index;
    *out = *in;
    return CK_STATUS_SUCCESS;
}

static ck_status cat_infer_n(ck_context *ctx, const ck_layer_desc *d, int index,
                             const ck_shape3 *in, int nin, ck_shape3 *out) {
    long long c = in[0].c;
    for (int k = 1; k < nin; ++k) {
        if (in[k].h != in[0].h || in[k].w != in[0].w || in[k].flat != in[0].flat) {
            char a[64], b[64];
            ck_lk_shape_str(a, sizeof a, &in[0]);
            ck_lk_shape_str(b, sizeof b, &in[k]);
            return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                           "layer %d (" CAT_NAME " '%s'): inputs of different shapes apart from "
                           "the channels, %s (input 1) and %s (input %d); Concatenate joins the "
                           "channels of one height and width",
                           index, d->name, a, b, k + 1);
        }
        c += in[k].c;
    }
    if (c * in[0].h * in[0].w > 0x7fffffffLL)
        return ck_fail(ctx, CK_STATUS_OVERFLOW,
                       "layer %d (" CAT_NAME " '%s'): %lld channels of %d x %d do not fit in 32 "
                       "bits",
                       index, d->name, c, in[0].h, in[0].w);
    *out = (ck_shape3){in[0].h, in[0].w, (int)c, in[0].flat};
    return CK_STATUS_SUCCESS;
}

static int cat_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                     const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    (void)d, (void)spec, (void)at;
    ck_lk_node(&nodes[0], &cat_node, in, out);
    return 1;
}

static const char *const cat_args[] = {"axis", NULL};

#define CAT_WANT "-1 (the channel axis)"

static int cat_bind(ck_kbind *b, ck_layer_desc *d) {
    (void)d;
    int v[4], rows, cols;
    if (b->ints(b, "axis", CAT_WANT, v, &rows, &cols))
        return -1;
    if (rows == -1 || (rows == 0 && (v[0] == -1 || v[0] == b->rank - 1)))
        return 0;
    return b->refuse(b, "axis", CAT_WANT);
}

static const ck_keras_class cat_classes[] = {{CAT_NAME, cat_args, 1, 0, cat_bind, NULL}, {0}};

static int cat_put(ck_kput *w, const ck_layer_desc *d) {
    (void)d;
    const int axis = -1;
    return w->ints(w, "axis", &axis, 0, 0);
}

const ck_layer_kind ck_lk_concat = {
    .type = CK_LAYER_CONCATENATE,
    .keras_name = CAT_NAME,
    .base_name = "concatenate",
    .infer = cat_infer,
    .min_inputs = 2,
    .infer_n = cat_infer_n,
    .lower = cat_lower,
    .study_letter = '|',
    .keras_classes = cat_classes,
    .keras_put = cat_put,
};

/* ---- node ops ---- */

/* Channels of input k of node n (a graph model's node: its inputs are nodes or the model input). */
static int in_channels(const ck_exec *e, const ck_node *n, int k) {
    return n->in[k] < 0 ? e->m->in_c : e->m->nodes[n->in[k]].oc;
}

/* to_wide: wide[p][off + c] = narrow[p][c]; else the reverse, for p < pixels, c < nc */
static void slice_cpu(float *wide, int wc, int off, float *narrow, int nc, size_t pixels,
                      int to_wide) {
    for (size_t p = 0; p < pixels; ++p) {
        float *w = wide + p * (size_t)wc + off, *s = narrow + p * (size_t)nc;
        memcpy(to_wide ? w : s, to_wide ? s : w, (size_t)nc * sizeof *w);
    }
}

static ck_status cat_fwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    const size_t pixels = (size_t)io->batch * n->oh * n->ow;
    for (int k = 0, off = 0; k < io->nin; off += in_channels(e, n, k), ++k)
        slice_cpu(io->out, n->oc, off, (float *)io->ins[k], in_channels(e, n, k), pixels, 1);
    return CK_STATUS_SUCCESS;
}

static ck_status cat_bwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    const size_t pixels = (size_t)io->batch * n->oh * n->ow;
    for (int k = 0, off = 0; k < io->nin; off += in_channels(e, n, k), ++k)
        if (io->dxs[k])
            slice_cpu(io->dy, n->oc, off, io->dxs[k], in_channels(e, n, k), pixels, 0);
    return CK_STATUS_SUCCESS;
}

#ifdef CNNKIT_HAVE_CUDA
static ck_status cat_fwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    const size_t pixels = (size_t)io->batch * n->oh * n->ow;
    for (int k = 0, off = 0; k < io->nin; off += in_channels(e, n, k), ++k)
        CK_EXEC_CUDA(e->ctx,
                     ck_cuda_channel_slice(io->out, n->oc, off, (float *)io->ins[k],
                                           in_channels(e, n, k), pixels, 1,
                                           ck_exec_out_dt(e, io->i), e->ctx->stream),
                     "concatenate");
    return CK_STATUS_SUCCESS;
}

static ck_status cat_bwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    const size_t pixels = (size_t)io->batch * n->oh * n->ow;
    for (int k = 0, off = 0; k < io->nin; off += in_channels(e, n, k), ++k)
        if (io->dxs[k])
            CK_EXEC_CUDA(e->ctx,
                         ck_cuda_channel_slice(io->dy, n->oc, off, io->dxs[k], in_channels(e, n, k),
                                               pixels, 0, ck_exec_out_dt(e, io->i), e->ctx->stream),
                         "concatenate backward");
    return CK_STATUS_SUCCESS;
}
#define CAT_CUDA                                                                                   \
    { cat_fwd_cuda, cat_bwd_cuda, NULL, NULL, NULL, 1 }
#else
#define CAT_CUDA                                                                                   \
    { 0 }
#endif

/* Backward slices dy: neither the inputs nor the output are read. */
static unsigned cat_skips(const ck_node *n) {
    (void)n;
    return CK_BWD_SKIPS_IN | CK_BWD_SKIPS_OUT;
}

static const ck_node_kind cat_node = {
    .type = CK_NODE_OTHER,
    .name = "concatenate",
    .ops = {{cat_fwd_cpu, cat_bwd_cpu, NULL, NULL, NULL}, CAT_CUDA},
    .bwd_skips = cat_skips,
};
