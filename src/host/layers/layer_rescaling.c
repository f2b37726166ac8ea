/* Rescaling: y = x * scale + offset on every value, as keras.layers.Rescaling with a scalar scale
 * and offset (the preprocessing layer Keras models start with: Rescaling(1./255) maps 0..255
 * pixels to [0, 1]). No weights, any input shape. The per-element math is ck_math.h's
 * ck_rescale_fwd / ck_rescale_bwd on both backends. */
#include "exec.h"
#include "layer.h"
#include "model_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ck_math.h"
#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"
#endif

#define RS_NAME "Rescaling"

static const ck_node_kind rs_node; /* its ops, at the end */

static void rs_defaults(ck_layer_desc *d) {
    d->scale = 1.0f;
    d->offset = 0.0f;
}

static ck_status rs_check(ck_context *ctx, const ck_layer_desc *d, int index) {
    const char *bad = !isfinite(d->scale) ? "scale" : !isfinite(d->offset) ? "offset" : NULL;
    if (bad)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "layer %d (" RS_NAME " '%s'): %s must be a finite number, got %g", index,
                       d->name, bad, (double)(bad[0] == 's' ? d->scale : d->offset));
    return CK_STATUS_SUCCESS;
}

static int rs_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                    const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    (void)spec;
    (void)at;
    ck_lk_node(&nodes[0], &rs_node, in, out);
    nodes[0].scale = d->scale;
    nodes[0].offset = d->offset;
    return 1;
}

/* Scale and offset are the layer's function: a checkpoint of another rescaling is another
 * model. They take the float slots; the ints after the type stay 0. */
static void rs_ckpt_record(const ck_layer_desc *d, int32_t iv[9], float fv[4]) {
    memset(iv, 0, 9 * sizeof *iv);
    iv[0] = d->type;
    fv[0] = d->scale;
    fv[1] = d->offset;
    fv[2] = fv[3] = 0.0f;
}

/* v as Python reads it back to the same float: the shortest decimal, or when that takes more
 * than 6 digits and v is the float nearest k / n (k = 1, 2), "1./255" as Keras users write it. */
static void rs_num(ck_sbuf *s, float v) {
    char buf[32];
    int prec = 6;
    for (; prec <= 9; ++prec) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v)
            break;
    }
    for (int k = 1; k <= 2 && prec > 6 && fabsf(v) < 1.0f; ++k) {
        const double n = nearbyint(k / (double)v);
        if (fabs(n) >= 2 && fabs(n) <= 1e6 && (float)(k / n) == v) {
            ck_sbuf_printf(s, "%s%d./%.0f", n < 0 ? "-" : "", k, fabs(n));
            return;
        }
    }
    ck_sbuf_printf(s, "%s%s", buf, strpbrk(buf, ".en") ? "" : ".0");
}

static void rs_render(ck_sbuf *s, const ck_layer_desc *d) {
    ck_sbuf_printf(s, RS_NAME "(");
    rs_num(s, d->scale);
    if (d->offset != 0.0f) {
        ck_sbuf_printf(s, ", offset=");
        rs_num(s, d->offset);
    }
    ck_sbuf_printf(s, ")");
}

static int rs_same(const ck_layer_desc *a, const ck_layer_desc *b) {
    return a->scale == b->scale && a->offset == b->offset;
}

/* ---- Keras: Rescaling(scale, offset=0.0) ---- */

static const char *const rs_args[] = {"scale", "offset", NULL};

/* A number float32 holds (Keras casts both to the layer's float32). A list or an array (a
 * per-channel scale) is refused by get_num, naming the argument. */
static int rs_bind(ck_kbind *b, ck_layer_desc *d) {
    double scale = 1.0, offset = 0.0;
    if (b->need(b, "scale") || b->get_num(b, "scale", -FLT_MAX, 0, FLT_MAX, 0, &scale) ||
        b->get_num(b, "offset", -FLT_MAX, 0, FLT_MAX, 0, &offset))
        return -1;
    d->scale = (float)scale;
    d->offset = (float)offset;
    return 0;
}

static const ck_keras_class rs_classes[] = {{RS_NAME, rs_args, 2, 0, rs_bind, NULL}, {0}};

/* As Keras's get_config: scale and offset, plain numbers. */
static int rs_put(ck_kput *w, const ck_layer_desc *d) {
    return w->num(w, "scale", d->scale) || w->num(w, "offset", d->offset);
}

const ck_layer_kind ck_lk_rescaling = {
    .type = CK_LAYER_RESCALING,
    .keras_name = RS_NAME,
    .base_name = "rescaling",
    .flags = CK_LK_ELEMENTWISE | CK_LK_KEEPS_CHANNELS,
    .defaults = rs_defaults,
    .check = rs_check,
    .infer = ck_lk_infer_same,
    .ckpt_record = rs_ckpt_record,
    .lower = rs_lower,
    .study_letter = '*',
    .render = rs_render,
    .same = rs_same,
    .keras_classes = rs_classes,
    .keras_put = rs_put,
};

/* ---- node ops ---- */

#define RS_PAR_MIN 16384 /* elements below which one thread is faster (cpu_layers.c's bound) */

static ck_status rs_fwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    (void)e;
    const float *x = io->in, s = n->scale, o = n->offset;
    float *y = io->out;
    const ptrdiff_t count = (ptrdiff_t)io->count_in;
#pragma omp parallel for schedule(static) if (count >= RS_PAR_MIN)
    for (ptrdiff_t i = 0; i < count; ++i)
        y[i] = ck_rescale_fwd(x[i], s, o);
    return CK_STATUS_SUCCESS;
}

static ck_status rs_bwd_cpu(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    (void)e;
    if (!io->dx)
        return CK_STATUS_SUCCESS;
    const float *dy = io->dy, s = n->scale;
    float *dx = io->dx;
    const ptrdiff_t count = (ptrdiff_t)io->count_in;
#pragma omp parallel for schedule(static) if (count >= RS_PAR_MIN)
    for (ptrdiff_t i = 0; i < count; ++i)
        dx[i] = ck_rescale_bwd(dy[i], s);
    return CK_STATUS_SUCCESS;
}

#ifdef CNNKIT_HAVE_CUDA
static ck_status rs_fwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    CK_EXEC_CUDA(e->ctx,
                 ck_cuda_rescale(io->in, io->out, io->count_in, n->scale, n->offset, 0,
                                 ck_exec_out_dt(e, io->i), e->ctx->stream),
                 "rescaling");
    return CK_STATUS_SUCCESS;
}

static ck_status rs_bwd_cuda(const ck_exec *e, ck_node *n, const ck_node_io *io) {
    if (io->dx)
        CK_EXEC_CUDA(e->ctx,
                     ck_cuda_rescale(io->dy, io->dx, io->count_in, n->scale, 0.0f, 1,
                                     ck_exec_out_dt(e, io->i), e->ctx->stream),
                     "rescaling backward");
    return CK_STATUS_SUCCESS;
}
#define RS_CUDA                                                                                    \
    { rs_fwd_cuda, rs_bwd_cuda, NULL, NULL, NULL, 1 }
#else
#define RS_CUDA                                                                                    \
    { 0 }
#endif

/* dx = dy * scale: the backward reads neither the input nor the output (memtab.c may give both
 * buffers to later tensors). */
static unsigned rs_skips(const ck_node *n) {
    (void)n;
    return CK_BWD_SKIPS_IN | CK_BWD_SKIPS_OUT;
}

static const ck_node_kind rs_node = {
    .type = CK_NODE_OTHER,
    .name = "rescaling",
    .ops = {{rs_fwd_cpu, rs_bwd_cpu, NULL, NULL, NULL}, RS_CUDA},
    .bwd_skips = rs_skips,
};
