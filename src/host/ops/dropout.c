/* Dropout and SpatialDropout: argument checks and dispatch to the CPU or CUDA path. */
#include "ck_kernels.h" /* ck_kdt */
#include "ck_math.h"
#include "internal.h"

static ck_status check_mask(ck_context *ctx, const ck_mask *m, const char *name,
                            ck_dropout_kind kind, const ck_tensor *x) {
    if (!m)
        return CK_STATUS_SUCCESS;
    if (m->ctx != ctx)
        return ck_fail(ctx, CK_STATUS_DEVICE_MISMATCH, "%s: belongs to another context", name);
    if (m->kind != kind)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "%s: is a %s mask, this op needs a %s mask", name,
                       m->kind == CK_DROPOUT_SPATIAL ? "spatial" : "element",
                       kind == CK_DROPOUT_SPATIAL ? "spatial" : "element");
    int same = m->n == x->n && m->c == x->c &&
               (kind == CK_DROPOUT_SPATIAL || (m->h == x->h && m->w == x->w));
    if (!same)
        return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                       "%s: made for %dx%dx%dx%d, the tensor is %dx%dx%dx%d", name, m->n, m->c,
                       m->h, m->w, x->n, x->c, x->h, x->w);
    return CK_STATUS_SUCCESS;
}

/* One implementation for the four public entry points: forward and backward are the same map. */
static ck_status dropout_apply(ck_context *ctx, ck_dropout_kind kind, const ck_dropout_desc *desc,
                               ck_drop_key key, ck_mode mode, const ck_tensor *x, const char *xn,
                               ck_tensor *y, const char *yn, ck_mask *mask_out,
                               const ck_mask *mask_in) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    ck_status st = ck_check_dropout_desc(ctx, desc, "desc");
    if (st == CK_STATUS_SUCCESS && mode != CK_MODE_TRAINING && mode != CK_MODE_INFERENCE)
        st = ck_fail(ctx, CK_STATUS_BAD_PARAM, "mode: must be CK_MODE_TRAINING or _INFERENCE");
    if (st == CK_STATUS_SUCCESS)
        st = ck_check_tensor(ctx, x, xn);
    if (st == CK_STATUS_SUCCESS)
        st = ck_check_tensor(ctx, y, yn);
    if (st == CK_STATUS_SUCCESS)
        st = ck_check_same_shape(ctx, x, xn, y, yn);
    if (st == CK_STATUS_SUCCESS)
        st = ck_tensor_check_storage(ctx, x, xn, y, yn);
    if (st == CK_STATUS_SUCCESS)
        st = check_mask(ctx, mask_out, "mask_out", kind, x);
    if (st == CK_STATUS_SUCCESS)
        st = check_mask(ctx, mask_in, "mask_in", kind, x);
    if (st != CK_STATUS_SUCCESS)
        return st;
    if (mode == CK_MODE_INFERENCE) {
        /* identity; a requested mask records "all kept" */
        if (mask_out) {
            ck_dropout_desc keep_all = {0.0f, desc->offset, desc->sample0};
            desc = &keep_all;
            mode = CK_MODE_TRAINING; /* rate 0 keeps every unit with scale 1: y = x exactly */
            return dropout_apply(ctx, kind, desc, key, mode, x, xn, y, yn, mask_out, NULL);
        }
        return ck_tensor_copy(ctx, x, y);
    }
#ifdef CNNKIT_HAVE_CUDA
    if (ctx->device == CK_DEVICE_CUDA) {
        ck_kshape s = {x->n, x->c, x->h, x->w, x->layout == CK_LAYOUT_NHWC, x->dtype};
        const ck_koffset off = {desc->offset, key.step, key.layer};
        int e = ck_cuda_dropout(kind == CK_DROPOUT_ELEMENT, x->data, y->data, s, ctx->seed, off,
                                desc->sample0, ck_dropout_threshold(desc->rate),
                                ck_dropout_scale(desc->rate), mask_in ? mask_in->data : NULL,
                                mask_out ? mask_out->data : NULL, ctx->stream);
        return e ? ck_cuda_fail(ctx, e, "dropout kernel") : CK_STATUS_SUCCESS;
    }
#endif
    ck_cpu_dropout(ctx->cpu_threads, kind, ctx->seed, desc, mode, x, y, mask_out, mask_in);
    return CK_STATUS_SUCCESS;
}

static const ck_drop_key NO_KEY = {NULL, 0};

ck_status ck_dropout_keyed(ck_context *ctx, ck_dropout_kind kind, const ck_dropout_desc *desc,
                           ck_drop_key key, const ck_tensor *x, const char *xn, ck_tensor *y,
                           const char *yn) {
    return dropout_apply(ctx, kind, desc, key, CK_MODE_TRAINING, x, xn, y, yn, NULL, NULL);
}

CK_API ck_status ck_spatial_dropout_forward(ck_context *ctx, const ck_dropout_desc *desc,
                                            ck_mode mode, const ck_tensor *x, ck_tensor *y,
                                            ck_mask *mask_out) {
    return dropout_apply(ctx, CK_DROPOUT_SPATIAL, desc, NO_KEY, mode, x, "x", y, "y", mask_out,
                         NULL);
}

CK_API ck_status ck_spatial_dropout_backward(ck_context *ctx, const ck_dropout_desc *desc,
                                             ck_mode mode, const ck_tensor *dy, ck_tensor *dx,
                                             const ck_mask *mask_in) {
    return dropout_apply(ctx, CK_DROPOUT_SPATIAL, desc, NO_KEY, mode, dy, "dy", dx, "dx", NULL,
                         mask_in);
}

CK_API ck_status ck_dropout_forward(ck_context *ctx, const ck_dropout_desc *desc, ck_mode mode,
                                    const ck_tensor *x, ck_tensor *y, ck_mask *mask_out) {
    return dropout_apply(ctx, CK_DROPOUT_ELEMENT, desc, NO_KEY, mode, x, "x", y, "y", mask_out,
                         NULL);
}

CK_API ck_status ck_dropout_backward(ck_context *ctx, const ck_dropout_desc *desc, ck_mode mode,
                                     const ck_tensor *dy, ck_tensor *dx, const ck_mask *mask_in) {
    return dropout_apply(ctx, CK_DROPOUT_ELEMENT, desc, NO_KEY, mode, dy, "dy", dx, "dx", NULL,
                         mask_in);
}

CK_API ck_status ck_dropout_mask_host(ck_dropout_kind kind, uint64_t seed,
                                      const ck_dropout_desc *desc, int n, int c, int h, int w,
                                      uint8_t *keep, size_t count) {
    if (kind != CK_DROPOUT_SPATIAL && kind != CK_DROPOUT_ELEMENT)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "kind: %d is not a ck_dropout_kind", (int)kind);
    if (!desc || !keep)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "%s: is NULL", desc ? "keep" : "desc");
    if (!(desc->rate >= 0.0f && desc->rate < 1.0f))
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "desc->rate: %g (must be in [0, 1))",
                       (double)desc->rate);
    if (n < 1 || c < 1 || h < 1 || w < 1)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "shape: N=%d C=%d H=%d W=%d (each must be >= 1)",
                       n, c, h, w);
    /* a tensor's limit (INT32_MAX elements): beyond it no mask exists, and the product of four
     * ints could wrap to a count that matches */
    const uint64_t lim = INT32_MAX;
    uint64_t units = (uint64_t)n * (uint64_t)c;
    if (units > lim)
        return ck_fail(NULL, CK_STATUS_OVERFLOW, "shape: N x C over 2^31 - 1 units");
    const uint64_t hw = (uint64_t)h * (uint64_t)w; /* each factor <= 2^31: no wrap */
    if (kind == CK_DROPOUT_ELEMENT && (hw > lim || (units *= hw) > lim))
        return ck_fail(NULL, CK_STATUS_OVERFLOW, "shape: N x C x H x W over 2^31 - 1 units");
    if (count != units)
        return ck_fail(NULL, CK_STATUS_SHAPE_MISMATCH, "count: %zu, the mask has %llu units", count,
                       (unsigned long long)units);
    uint32_t thr = ck_dropout_threshold(desc->rate);
    if (kind == CK_DROPOUT_SPATIAL) {
        const uint64_t u0 = ck_spatial_unit0(desc->sample0, c);
        for (size_t g = 0; g < units; ++g)
            keep[g] = (uint8_t)ck_spatial_keep(seed, desc->offset, thr, u0 + g);
        return CK_STATUS_SUCCESS;
    }
    const uint64_t call0 = ck_element_call0(desc->sample0, c, h, w);
    size_t i = 0;
    for (int in = 0; in < n; ++in)
        for (int ic = 0; ic < c; ++ic)
            for (int ih = 0; ih < h; ++ih)
                for (int iw = 0; iw < w; ++iw) {
                    const uint64_t call = call0 + ck_element_call(in, ic, ih, iw, c, h, w);
                    keep[i++] =
                        (uint8_t)(ck_dropout_call(seed, desc->offset, call).v[iw & 3] >= thr);
                }
    return CK_STATUS_SUCCESS;
}
