/* Tensors, workspaces and stored dropout masks: memory on the context's device. */
#include "internal.h"

#include "ck_kernels.h" /* ck_kdt */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef CNNKIT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#define CK_MAX_ELEMS ((size_t)INT32_MAX) /* kernels index with 32-bit ints */

/* Allocates bytes on the context's device; *p stays NULL on failure. */
static ck_status dev_alloc(ck_context *ctx, void **p, size_t bytes, const char *what) {
    *p = NULL;
    if (bytes == 0)
        bytes = 1;
#ifdef CNNKIT_HAVE_CUDA
    if (ctx->device == CK_DEVICE_CUDA) {
        cudaError_t e = cudaMalloc(p, bytes);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            *p = NULL;
            return ck_fail(ctx, CK_STATUS_ALLOC_FAILED, "%s: cudaMalloc of %zu bytes failed: %s",
                           what, bytes, cudaGetErrorString(e));
        }
        return CK_STATUS_SUCCESS;
    }
#endif
    *p = ck_host_alloc(ctx, bytes);
    if (!*p)
        return ck_host_oom(ctx, what, bytes);
    return CK_STATUS_SUCCESS;
}

static void dev_free(ck_context *ctx, void *p) {
    if (!p)
        return;
#ifdef CNNKIT_HAVE_CUDA
    if (ctx->device == CK_DEVICE_CUDA) {
        cudaFree(p);
        return;
    }
#endif
    ck_host_free(ctx, p);
}

/* Copies between host memory and the context's device (kind: 0 host->dev, 1 dev->host,
 * 2 dev->dev). Synchronous for device->host. */
static ck_status dev_copy(ck_context *ctx, void *dst, const void *src, size_t bytes, int kind) {
#ifdef CNNKIT_HAVE_CUDA
    if (ctx->device == CK_DEVICE_CUDA) {
        static const enum cudaMemcpyKind kinds[3] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                                                     cudaMemcpyDeviceToDevice};
        cudaStream_t s = (cudaStream_t)ctx->stream;
        cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kinds[kind], s);
        if (e == cudaSuccess && kind != 2)
            e = cudaStreamSynchronize(s);
        if (e != cudaSuccess)
            return ck_cuda_fail(ctx, e, "cudaMemcpyAsync");
        return CK_STATUS_SUCCESS;
    }
#endif
    (void)kind;
    memmove(dst, src, bytes);
    return CK_STATUS_SUCCESS;
}

/* Strides of (n, c, pixel) in a host tensor of either layout. */
static void host_strides(const ck_tensor *t, size_t *sn, size_t *sc, size_t *sp) {
    const size_t hw = (size_t)t->h * (size_t)t->w;
    *sn = (size_t)t->c * hw;
    *sc = t->layout == CK_LAYOUT_NCHW ? hw : 1;
    *sp = t->layout == CK_LAYOUT_NCHW ? 1 : (size_t)t->c;
}

/* A copy between layouts on the host: values only move. */
static void host_convert_layout(const ck_tensor *src, ck_tensor *dst) {
    size_t an, ac, ap, bn, bc, bp;
    host_strides(src, &an, &ac, &ap);
    host_strides(dst, &bn, &bc, &bp);
    const size_t hw = (size_t)src->h * (size_t)src->w;
    for (int n = 0; n < src->n; ++n)
        for (int c = 0; c < src->c; ++c)
            for (size_t p = 0; p < hw; ++p)
                dst->data[n * bn + c * bc + p * bp] = src->data[n * an + c * ac + p * ap];
}

static ck_status check_dims(ck_context *ctx, int n, int c, int h, int w, size_t *count) {
    if (n < 1 || c < 1 || h < 1 || w < 1)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "shape: every dimension must be >= 1, got N=%d C=%d H=%d W=%d", n, c, h, w);
    size_t cnt = (size_t)n;
    const int dims[3] = {c, h, w};
    for (int i = 0; i < 3; ++i) {
        if (cnt > CK_MAX_ELEMS / (size_t)dims[i])
            return ck_fail(ctx, CK_STATUS_OVERFLOW,
                           "shape: %dx%dx%dx%d has more than 2^31-1 elements", n, c, h, w);
        cnt *= (size_t)dims[i];
    }
    *count = cnt;
    return CK_STATUS_SUCCESS;
}

/* ck_context_destroy on a context whose tensors, workspaces or masks are alive: their memory
 * goes with the context, the headers stay for their destroy calls (internal.h). */
static void tensor_orphan(ck_handle *h) {
    ck_tensor *t = (ck_tensor *)h;
    dev_free(t->ctx, t->data);
    t->data = NULL;
    t->ctx = NULL;
}

static void workspace_orphan(ck_handle *h) {
    ck_workspace *ws = (ck_workspace *)h;
    dev_free(ws->ctx, ws->data);
    ws->data = NULL;
    ws->ctx = NULL;
}

static void mask_orphan(ck_handle *h) {
    ck_mask *m = (ck_mask *)h;
    dev_free(m->ctx, m->data);
    m->data = NULL;
    m->ctx = NULL;
}

CK_API ck_status ck_tensor_create(ck_context *ctx, ck_tensor **out, ck_layout layout, int n, int c,
                                  int h, int w) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    if (!out)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "t: is NULL");
    *out = NULL;
    if (layout != CK_LAYOUT_NCHW && layout != CK_LAYOUT_NHWC)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "layout: must be CK_LAYOUT_NCHW or _NHWC, got %d",
                       (int)layout);
    size_t count = 0;
    ck_status st = check_dims(ctx, n, c, h, w, &count);
    if (st != CK_STATUS_SUCCESS)
        return st;
    ck_tensor *t = (ck_tensor *)ck_host_calloc(ctx, 1, sizeof *t);
    if (!t)
        return ck_host_oom(ctx, "t", sizeof *t);
    st = dev_alloc(ctx, (void **)&t->data, count * sizeof(float), "t");
    if (st != CK_STATUS_SUCCESS) {
        ck_host_free(ctx, t);
        return st;
    }
    t->ctx = ctx;
    ck_handle_link(ctx, &t->link, tensor_orphan);
    t->layout = layout;
    t->n = n;
    t->c = c;
    t->h = h;
    t->w = w;
    t->count = count;
    *out = t;
    return CK_STATUS_SUCCESS;
}

CK_API void ck_tensor_destroy(ck_tensor *t) {
    if (!t)
        return;
    if (t->ctx) {
        ck_device_enter(t->ctx);
        ck_handle_unlink(t->ctx, &t->link);
        dev_free(t->ctx, t->data);
    }
    ck_host_free(t->ctx, t);
}

static ck_status check_host_transfer(ck_context *ctx, const ck_tensor *t, const void *host,
                                     size_t count) {
    ck_status st = ck_check_tensor(ctx, t, "t");
    if (st != CK_STATUS_SUCCESS)
        return st;
    if (!host)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "host: is NULL");
    if (count != t->count)
        return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                       "count: %zu floats given, the tensor holds %zu (%dx%dx%dx%d)", count,
                       t->count, t->n, t->c, t->h, t->w);
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_tensor_upload(ck_context *ctx, ck_tensor *t, const float *host, size_t count) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    ck_status st = check_host_transfer(ctx, t, host, count);
    if (st != CK_STATUS_SUCCESS)
        return st;
    return dev_copy(ctx, t->data, host, count * sizeof(float), 0);
}

CK_API ck_status ck_tensor_download(ck_context *ctx, const ck_tensor *t, float *host,
                                    size_t count) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    ck_status st = check_host_transfer(ctx, t, host, count);
    if (st != CK_STATUS_SUCCESS)
        return st;
    return dev_copy(ctx, host, t->data, count * sizeof(float), 1);
}

CK_API ck_status ck_tensor_fill(ck_context *ctx, ck_tensor *t, float value) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    ck_status st = ck_check_tensor(ctx, t, "t");
    if (st != CK_STATUS_SUCCESS)
        return st;
#ifdef CNNKIT_HAVE_CUDA
    if (ctx->device == CK_DEVICE_CUDA) {
        int e = ck_cuda_fill(t->data, t->count, value, ctx->stream);
        return e ? ck_cuda_fail(ctx, e, "fill kernel") : CK_STATUS_SUCCESS;
    }
#endif
    for (size_t i = 0; i < t->count; ++i)
        t->data[i] = value;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_tensor_copy(ck_context *ctx, const ck_tensor *src, ck_tensor *dst) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    ck_status st = ck_check_tensor(ctx, src, "src");
    if (st == CK_STATUS_SUCCESS)
        st = ck_check_tensor(ctx, dst, "dst");
    if (st != CK_STATUS_SUCCESS)
        return st;
    if (src->n != dst->n || src->c != dst->c || src->h != dst->h || src->w != dst->w)
        return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                       "dst: shape %dx%dx%dx%d differs from src shape %dx%dx%dx%d", dst->n, dst->c,
                       dst->h, dst->w, src->n, src->c, src->h, src->w);
    st = ck_tensor_check_storage(ctx, src, "src", dst, "dst"); /* the executor's bf16 views */
    if (st != CK_STATUS_SUCCESS)
        return st;
    if (src == dst)
        return CK_STATUS_SUCCESS;
    if (src->layout == dst->layout)
        return dev_copy(ctx, dst->data, src->data, ck_kdt_bytes(src->dtype, src->count), 2);
#ifdef CNNKIT_HAVE_CUDA
    if (ctx->device == CK_DEVICE_CUDA) {
        ck_kshape s = {src->n, src->c, src->h, src->w, src->layout == CK_LAYOUT_NHWC, src->dtype};
        int e = ck_cuda_convert_layout(src->data, dst->data, s, ctx->stream);
        return e ? ck_cuda_fail(ctx, e, "layout conversion kernel") : CK_STATUS_SUCCESS;
    }
#endif
    host_convert_layout(src, dst);
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_tensor_check_finite(ck_context *ctx, const ck_tensor *t, size_t *index) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    CK_TRY(ck_check_tensor(ctx, t, "t"));
    float *buf = NULL;
    size_t chunk = t->count;
    if (ctx->device != CK_DEVICE_CPU) { /* device data comes through a bounded host buffer */
        chunk = t->count < ((size_t)1 << 20) ? t->count : ((size_t)1 << 20);
        buf = (float *)ck_host_alloc(ctx, chunk * sizeof(float));
        if (!buf)
            return ck_host_oom(ctx, "t (checking its values)", chunk * sizeof(float));
    }
    ck_status st = CK_STATUS_SUCCESS;
    for (size_t off = 0; off < t->count && st == CK_STATUS_SUCCESS; off += chunk) {
        const size_t n = t->count - off < chunk ? t->count - off : chunk;
        const float *p = t->data + off;
        if (buf) {
            st = dev_copy(ctx, buf, p, n * sizeof(float), 1);
            p = buf;
        }
        for (size_t i = 0; st == CK_STATUS_SUCCESS && i < n; ++i)
            if (!isfinite(p[i])) {
                if (index)
                    *index = off + i;
                st = ck_fail(ctx, CK_STATUS_BAD_PARAM,
                             "t[%zu]: %g is not finite (of %zu elements, in the tensor's %s "
                             "layout)",
                             off + i, (double)p[i], t->count,
                             t->layout == CK_LAYOUT_NHWC ? "NHWC" : "NCHW");
            }
    }
    ck_host_free(ctx, buf);
    return st;
}

CK_API ck_layout ck_tensor_layout(const ck_tensor *t) {
    return t ? t->layout : CK_LAYOUT_NCHW;
}

CK_API void ck_tensor_shape(const ck_tensor *t, int *n, int *c, int *h, int *w) {
    if (n)
        *n = t ? t->n : 0;
    if (c)
        *c = t ? t->c : 0;
    if (h)
        *h = t ? t->h : 0;
    if (w)
        *w = t ? t->w : 0;
}

CK_API size_t ck_tensor_count(const ck_tensor *t) {
    return t ? t->count : 0;
}

CK_API float *ck_tensor_data(ck_tensor *t) {
    return t ? t->data : NULL;
}

CK_API const float *ck_tensor_data_const(const ck_tensor *t) {
    return t ? t->data : NULL;
}

/* ---- workspaces ---------------------------------------------------------------------------- */

CK_API ck_status ck_workspace_create(ck_context *ctx, ck_workspace **out, size_t bytes) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    if (!out)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "ws: is NULL");
    *out = NULL;
    ck_workspace *ws = (ck_workspace *)ck_host_calloc(ctx, 1, sizeof *ws);
    if (!ws)
        return ck_host_oom(ctx, "ws", sizeof *ws);
    ck_status st = dev_alloc(ctx, &ws->data, bytes, "ws");
    if (st != CK_STATUS_SUCCESS) {
        ck_host_free(ctx, ws);
        return st;
    }
    ws->ctx = ctx;
    ck_handle_link(ctx, &ws->link, workspace_orphan);
    ws->bytes = bytes;
    *out = ws;
    return CK_STATUS_SUCCESS;
}

CK_API void ck_workspace_destroy(ck_workspace *ws) {
    if (!ws)
        return;
    if (ws->ctx) {
        ck_device_enter(ws->ctx);
        ck_handle_unlink(ws->ctx, &ws->link);
        dev_free(ws->ctx, ws->data);
    }
    ck_host_free(ws->ctx, ws);
}

CK_API size_t ck_workspace_size(const ck_workspace *ws) {
    return ws ? ws->bytes : 0;
}

/* ---- stored masks -------------------------------------------------------------------------- */

CK_API ck_status ck_mask_create(ck_context *ctx, ck_mask **out, ck_dropout_kind kind, int n, int c,
                                int h, int w) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    if (!out)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "mask: is NULL");
    *out = NULL;
    if (kind != CK_DROPOUT_SPATIAL && kind != CK_DROPOUT_ELEMENT)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "kind: must be CK_DROPOUT_SPATIAL or _ELEMENT");
    size_t count = 0;
    ck_status st = check_dims(ctx, n, c, h, w, &count);
    if (st != CK_STATUS_SUCCESS)
        return st;
    ck_mask *m = (ck_mask *)ck_host_calloc(ctx, 1, sizeof *m);
    if (!m)
        return ck_host_oom(ctx, "mask", sizeof *m);
    m->ctx = ctx;
    m->kind = kind;
    m->n = n;
    m->c = c;
    m->h = h;
    m->w = w;
    m->units = kind == CK_DROPOUT_SPATIAL ? (size_t)n * (size_t)c : count;
    m->bytes = kind == CK_DROPOUT_SPATIAL ? m->units : ((m->units + 31) / 32) * 4;
    st = dev_alloc(ctx, (void **)&m->data, m->bytes, "mask");
    if (st != CK_STATUS_SUCCESS) {
        ck_host_free(ctx, m);
        return st;
    }
    ck_handle_link(ctx, &m->link, mask_orphan);
    *out = m;
    return CK_STATUS_SUCCESS;
}

CK_API void ck_mask_destroy(ck_mask *m) {
    if (!m)
        return;
    if (m->ctx) {
        ck_device_enter(m->ctx);
        ck_handle_unlink(m->ctx, &m->link);
        dev_free(m->ctx, m->data);
    }
    ck_host_free(m->ctx, m);
}

CK_API ck_status ck_mask_download(ck_context *ctx, const ck_mask *m, uint8_t *host, size_t count) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    if (!m)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "mask: is NULL");
    if (!m->ctx)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "mask: its context was destroyed");
    if (m->ctx != ctx)
        return ck_fail(ctx, CK_STATUS_DEVICE_MISMATCH, "mask: belongs to another context");
    if (!host)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "host: is NULL");
    if (count != m->units)
        return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH, "count: %zu given, the mask has %zu units",
                       count, m->units);
    if (m->kind == CK_DROPOUT_SPATIAL)
        return dev_copy(ctx, host, m->data, m->bytes, 1);
    uint8_t *bits = (uint8_t *)ck_host_alloc(ctx, m->bytes);
    if (!bits)
        return ck_host_oom(ctx, "mask", m->bytes);
    ck_status st = dev_copy(ctx, bits, m->data, m->bytes, 1);
    if (st == CK_STATUS_SUCCESS) {
        const uint32_t *words = (const uint32_t *)bits;
        for (size_t i = 0; i < m->units; ++i)
            host[i] = (uint8_t)((words[i >> 5] >> (i & 31)) & 1u);
    }
    ck_host_free(ctx, bits);
    return st;
}

/* The storage of x and y (internal tensors only: the executor's bf16 views; public ones are fp32):
 * one storage for both, and bf16 words only in a CUDA context's memory. */
ck_status ck_tensor_check_storage(ck_context *ctx, const ck_tensor *x, const char *xn,
                                  const ck_tensor *y, const char *yn) {
    if (x->dtype != y->dtype)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "%s: stored as %s while %s is stored as %s; both must have one storage", yn,
                       y->dtype == CK_KDT_BF16 ? "bf16" : "fp32", xn,
                       x->dtype == CK_KDT_BF16 ? "bf16" : "fp32");
    if (x->dtype == CK_KDT_BF16 && ctx->device != CK_DEVICE_CUDA)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "%s: bf16 storage exists only on a CUDA context (the CPU stores fp32)", xn);
    return CK_STATUS_SUCCESS;
}
