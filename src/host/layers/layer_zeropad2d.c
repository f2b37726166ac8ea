/* ZeroPadding2D: zero rows above and below and zero columns left and right of each image, as
 * keras.layers.ZeroPadding2D (channels_last). Exact on every backend: forward copies, backward
 * crops. */
#include "exec.h"
#include "layer.h"
#include "model_internal.h"

#include <string.h>

#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"
#endif

#define ZP_NAME "ZeroPadding2D"

static const ck_node_kind zp_node; /* its ops, at the end */

static void zp_defaults(ck_layer_desc *d) {
    d->pad_top = d->pad_bottom = d->pad_left = d->pad_right = 1;
}

static ck_status zp_check(ck_context *ctx, const ck_layer_desc *d, int index) {
    if (d->pad_top < 0 || d->pad_bottom < 0 || d->pad_left < 0 || d->pad_right < 0)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "layer %d (" ZP_NAME " '%s'): padding ((%d, %d), (%d, %d)) must not be "
                       "negative",
                       index, d->name, d->pad_top, d->pad_bottom, d->pad_left, d->pad_right);
    return CK_STATUS_SUCCESS;
}

static ck_status zp_infer(ck_context *ctx, const ck_layer_desc *d, int index, const ck_shape3 *in,
                          ck_shape3 *out) {
    if (in->flat)
        return ck_lk_fail_flat(ctx, d, index, ZP_NAME, in);
    long long h = (long long)in->h + d->pad_top + d->pad_bottom;
    long long w = (long long)in->w + d->pad_left + d->pad_right;
    if (h > 0x7fffffffLL || w > 0x7fffffffLL || h * w * in->c > 0x7fffffffLL)
        return ck_fail(ctx, CK_STATUS_OVERFLOW,
                       "layer %d (" ZP_NAME " '%s'): %lld x %lld x %d values per sample do not "
                       "fit in 32 bits",
                       index, d->name, h, w, in->c);
    *out = (ck_shape3){(int)h, (int)w, in->c, 0};
    return CK_STATUS_SUCCESS;
}

static int zp_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                    const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    (void)spec;
    (void)at;
    ck_lk_node(&nodes[0], &zp_node, in, out);
    nodes[0].geom = (ck_conv_geom){.n = 1,
                                   .h = in->h,
                                   .w = in->w,
                                   .cin = in->c,
                                   .cout = in->c,
                                   .pad_top = d->pad_top,
                                   .pad_left = d->pad_left,
                                   .oh = out->h,
                                   .ow = out->w};
    return 1;
}

/* The pads take the v1 geometry slots, so an old reader sees a layer it does not know. */
static void zp_ckpt_record(const ck_layer_desc *d, int32_t iv[9], float fv[4]) {
    const int32_t v[9] = {
        d->type, d->pad_top, d->pad_bottom, d->pad_left, d->pad_right, 0 /* padding */, 1, 0, 0};
    memcpy(iv, v, sizeof v);
    memset(fv, 0, 4 * sizeof *fv);
}

static void zp_render(ck_sbuf *s, const ck_layer_desc *d) {
    ck_sbuf_printf(s, ZP_NAME "(((%d,%d),(%d,%d)))", d->pad_top, d->pad_bottom, d->pad_left,
                   d->pad_right);
}

static int zp_same(const ck_layer_desc *a, const ck_layer_desc *b) {
    return a->pad_top == b->pad_top && a->pad_bottom == b->pad_bottom &&
           a->pad_left == b->pad_left && a->pad_right == b->pad_right;
}

/* ---- Keras ---- */

#define ZP_WANT "an int, a tuple of 2 ints or a tuple of 2 tuples of 2 ints, none negative"

static const char *const zp_args[] = {"padding", "data_format", NULL};

/* Keras: n -> ((n, n), (n, n)); (a, b) -> ((a, a), (b, b)); ((t, b), (l, r)) as written. */
static int zp_bind(ck_kbind *b, ck_layer_desc *d) {
    int v[4], rows, cols;
    if (b->ints(b, "padding", ZP_WANT, v, &rows, &cols) || b->data_format(b))
        return -1;
    if (rows == -1)
        return 0; /* the default, ((1, 1), (1, 1)) */
    if (rows == 0)
        v[1] = v[2] = v[3] = v[0];
    else if (rows == 2 && cols == 0)
        v[3] = v[2] = v[1], v[1] = v[0];
    else if (!(rows == 2 && cols == 2))
        return b->refuse(b, "padding", ZP_WANT);
    for (int k = 0; k < 4; ++k)
        if (v[k] < 0)
            return b->refuse(b, "padding", ZP_WANT);
    d->pad_top = v[0];
    d->pad_bottom = v[1];
    d->pad_left = v[2];
    d->pad_right = v[3];
    return 0;
}

static const ck_keras_class zp_classes[] = {{ZP_NAME, zp_args, 1, 0, zp_bind, NULL}, {0}};

/* As Keras's get_config: padding as ((top, bottom), (left, right)). */
static int zp_put(ck_kput *w, const ck_layer_desc *d) {
    const int v[4] = {d->pad_top, d->pad_bottom, d->pad_left, d->pad_right};
    return w->ints(w, "padding", v, 2, 2) || w->str(w, "data_format", "channels_last");
}

const ck_layer_kind ck_lk_zeropad2d = {
    .type = CK_LAYER_ZEROPADDING2D,
    .keras_name = ZP_NAME,
    .base_name = "zero_padding2d",
    .flags = CK_LK_NEEDS_4D | CK_LK_KEEPS_CHANNELS,
    .defaults = zp_defaults,
    .check = zp_check,
    .infer = zp_infer,
    .ckpt_record = zp_ckpt_record,
    .lower = zp_lower,
    .study_letter = 'Z',
    .render = zp_render,
    .same = zp_same,
    .keras_classes = zp_classes,
    .keras_put = zp_put,
};

/* ---- node ops ---- */

/* dst (n, oh, ow, c) = src (n, h, w, c) placed at (pt, pl), zeros around it */
static void zp_pad_cpu(const ck_node *n, int batch, const float *src, float *dst) {
    const size_t row = (size_t)n->iw * n->ic;
    const size_t orow = (size_t)n->ow * n->oc;
    memset(dst, 0, (size_t)batch * n->oh * orow * sizeof *dst);
    for (int b = 0; b < batch; ++b)
        for (int y = 0; y < n->ih; ++y)
            memcpy(dst + ((size_t)b * n->oh + y + n->geom.pad_top) * orow +
                       (size_t)n->geom.pad_left * n->oc,
                   src + ((size_t)b * n->ih + y) * row, row * sizeof *dst);
}

/* dx = the image part of dy: the padded cells have no input to send their gradient to */
static void zp_crop_cpu(const ck_node *n, int batch, const float *dy, float *dx) {
    const size_t row = (size_t)n->iw * n->ic;
    const size_t orow = (size_t)n->ow * n->oc;
    for (int b = 0; b < batch; ++b)
        for (int y = 0; y < n->ih; ++y)
            memcpy(dx + ((size_t)b * n->ih + y) * row,
                   dy + ((size_t)b * n->oh + y + n->geom.pad_top) * orow +
                       (size_t)n->geom.pad_left * n->oc,
                   row * sizeof *dx);
}

static ck_status zp_fwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    (void)e;
    zp_pad_cpu(n, io->batch, io->in, io->out);
    return CK_STATUS_SUCCESS;
}

static ck_status zp_bwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    (void)e;
    if (io->dx)
        zp_crop_cpu(n, io->batch, io->dy, io->dx);
    return CK_STATUS_SUCCESS;
}

#ifdef CNNKIT_HAVE_CUDA
static ck_status zp_fwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    CK_EXEC_CUDA(e->ctx,
                 ck_cuda_pad_nhwc(io->in, io->out, io->batch, n->ih, n->iw, n->ic, n->geom.pad_top,
                                  n->geom.pad_left, n->oh, n->ow, 0, ck_exec_out_dt(e, io->i),
                                  e->ctx->stream),
                 "zero padding");
    return CK_STATUS_SUCCESS;
}

static ck_status zp_bwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    if (io->dx)
        CK_EXEC_CUDA(e->ctx,
                     ck_cuda_pad_nhwc(io->dy, io->dx, io->batch, n->ih, n->iw, n->ic,
                                      n->geom.pad_top, n->geom.pad_left, n->oh, n->ow, 1,
                                      ck_exec_dy_dt(e, io->i), e->ctx->stream),
                     "zero padding backward");
    return CK_STATUS_SUCCESS;
}
/* bf16: a copy of the words either way (never the logits node of a bf16 GPU model) */
#define ZP_CUDA                                                                                    \
    { zp_fwd_cuda, zp_bwd_cuda, NULL, NULL, NULL, 1 }
#else
#define ZP_CUDA                                                                                    \
    { 0 }
#endif

static const ck_node_kind zp_node = {
    .type = CK_NODE_OTHER,
    .name = "zero_padding2d",
    .ops = {{zp_fwd_cpu, zp_bwd_cpu, NULL, NULL, NULL}, ZP_CUDA},
};
