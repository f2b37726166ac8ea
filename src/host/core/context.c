/* Context, host allocator and argument checks (status strings and errors: errors.c). */
#include "internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef CNNKIT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

CK_API int ck_version(void) {
    return CNNKIT_VERSION;
}

CK_API int ck_cuda_available(void) {
#ifdef CNNKIT_HAVE_CUDA
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* clear the sticky-free error so later calls start clean */
        return 0;
    }
    return count > 0;
#else
    return 0;
#endif
}

/* A creation that failed after the context was allocated: its message outlives it. */
static ck_status create_fail_ctx(ck_context *ctx, ck_status status) {
    (void)ck_fail(NULL, status, "%s", ctx->err[0] ? ctx->err : ck_status_string(status));
    free(ctx);
    return status;
}

CK_API ck_status ck_cuda_describe(int cuda_ordinal, char *buf, size_t len) {
    if (!buf || len == 0)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "%s", !buf ? "buf: is NULL" : "len: is 0");
    buf[0] = '\0';
    size_t at = 0;
#ifdef CNNKIT_HAVE_CUDA
    ck_status st = CK_STATUS_SUCCESS;
    int rt = 0, drv = 0;
    if (cudaRuntimeGetVersion(&rt) != cudaSuccess)
        rt = 0;
    if (cudaDriverGetVersion(&drv) != cudaSuccess)
        drv = 0;
    ck_appendf(buf, len, &at, "CUDA runtime %d.%d (built with %d.%d), ", rt / 1000, rt % 1000 / 10,
               CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    if (drv > 0)
        ck_appendf(buf, len, &at, "driver supports CUDA %d.%d; ", drv / 1000, drv % 1000 / 10);
    else
        ck_appendf(buf, len, &at, "no CUDA driver; ");
    ck_cudnn_versions(buf + at, len - at);
    at += strlen(buf + at);
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    struct cudaDeviceProp p;
    if (e == cudaSuccess && (cuda_ordinal < 0 || cuda_ordinal >= count))
        e = cudaErrorInvalidDevice;
    if (e == cudaSuccess)
        e = cudaGetDeviceProperties(&p, cuda_ordinal);
    if (e == cudaSuccess) {
        ck_appendf(buf, len, &at, "; device %d of %d: %s, sm_%d%d, %d SMs, %.1f GiB", cuda_ordinal,
                   count, p.name, p.major, p.minor, p.multiProcessorCount,
                   (double)p.totalGlobalMem / 1073741824.0);
    } else {
        (void)cudaGetLastError();
        ck_appendf(buf, len, &at, "; device %d: %s (%s)", cuda_ordinal, cudaGetErrorString(e),
                   cudaGetErrorName(e));
        st = CK_STATUS_NOT_SUPPORTED;
    }
    return st;
#else
    (void)cuda_ordinal;
    ck_appendf(buf, len, &at, "CPU only: built without the CUDA backend");
    return CK_STATUS_NOT_SUPPORTED;
#endif
}

#ifdef CNNKIT_HAVE_CUDA
/* The device's peaks for the profile's roofline (device_peak.c). Best effort: an attribute the
 * driver does not report leaves that peak 0 ("unknown"), never a failed context. cudaDeviceProp's
 * clockRate and memoryClockRate are gone from CUDA 13: the attributes are not. */
static ck_device_peak query_peak(int ordinal) {
    const enum cudaDeviceAttr attr[6] = {
        cudaDevAttrComputeCapabilityMajor, cudaDevAttrComputeCapabilityMinor,
        cudaDevAttrMultiProcessorCount,    cudaDevAttrClockRate,
        cudaDevAttrMemoryClockRate,        cudaDevAttrGlobalMemoryBusWidth};
    int v[6] = {0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 6; ++i)
        if (cudaDeviceGetAttribute(&v[i], attr[i], ordinal) != cudaSuccess) {
            (void)cudaGetLastError();
            v[i] = 0;
        }
    return ck_device_peak_of(v[0], v[1], v[2], v[3], v[4], v[5]);
}
#endif

CK_API ck_status ck_context_create(ck_context **out, ck_device device, int cuda_ordinal,
                                   uint64_t seed) {
    ck_create_error_clear();
    if (!out)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL (where the context goes)");
    *out = NULL;
    if (device != CK_DEVICE_AUTO && device != CK_DEVICE_CPU && device != CK_DEVICE_CUDA)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM,
                       "device: must be CK_DEVICE_AUTO, _CPU or _CUDA, got %d", (int)device);
    if (cuda_ordinal < 0)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "cuda_ordinal: must be >= 0, got %d",
                       cuda_ordinal);
    /* the one host allocation outside the counted allocator: a context cannot count itself */
    ck_context *ctx = (ck_context *)calloc(1, sizeof *ctx);
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_ALLOC_FAILED, "ctx: out of host memory");
    ctx->seed = seed;
    ctx->ordinal = cuda_ordinal;
    ctx->device = CK_DEVICE_CPU;
    if (device == CK_DEVICE_CPU || (device == CK_DEVICE_AUTO && !ck_cuda_available())) {
        *out = ctx;
        return CK_STATUS_SUCCESS;
    }
#ifdef CNNKIT_HAVE_CUDA
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        (void)ck_cuda_fail(ctx, e, "no CUDA device: cudaGetDeviceCount");
        return create_fail_ctx(ctx, CK_STATUS_NOT_SUPPORTED);
    }
    if (cuda_ordinal >= count) {
        (void)ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                      "cuda_ordinal: %d, but this machine has %d CUDA device(s)", cuda_ordinal,
                      count);
        return create_fail_ctx(ctx, CK_STATUS_NOT_SUPPORTED);
    }
    e = cudaSetDevice(cuda_ordinal);
    if (e != cudaSuccess) {
        (void)ck_cuda_fail(ctx, e, "cudaSetDevice");
        return create_fail_ctx(ctx, CK_STATUS_CUDA_ERROR);
    }
    e = cudaDeviceGetAttribute(&ctx->sm_count, cudaDevAttrMultiProcessorCount, cuda_ordinal);
    if (e != cudaSuccess) {
        (void)ck_cuda_fail(ctx, e, "cudaDeviceGetAttribute(multiprocessor count)");
        return create_fail_ctx(ctx, CK_STATUS_CUDA_ERROR);
    }
    ctx->peak = query_peak(cuda_ordinal);
    ctx->device = CK_DEVICE_CUDA;
    ck_status st = ck_cudnn_create(ctx);
    if (st != CK_STATUS_SUCCESS)
        return create_fail_ctx(ctx, st);
    *out = ctx;
    return CK_STATUS_SUCCESS;
#else
    (void)ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                  "device: CK_DEVICE_CUDA, but this build has no CUDA backend (built with "
                  "CNNKIT_CUDA=OFF or without the CUDA toolkit and cuDNN)");
    return create_fail_ctx(ctx, CK_STATUS_NOT_SUPPORTED);
#endif
}

void ck_handle_link(ck_context *ctx, ck_handle *h, void (*orphan)(ck_handle *h)) {
    h->orphan = orphan;
    h->prev = NULL;
    h->next = ctx->handles;
    if (ctx->handles)
        ctx->handles->prev = h;
    ctx->handles = h;
}

void ck_handle_unlink(ck_context *ctx, ck_handle *h) {
    if (h->prev)
        h->prev->next = h->next;
    else if (ctx->handles == h)
        ctx->handles = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
}

CK_API void ck_context_destroy(ck_context *ctx) {
    if (!ctx)
        return;
    ck_device_enter(ctx); /* the orphans' memory and the handles are its GPU's */
    /* objects still alive are orphaned, not freed: their owner destroys them later */
    while (ctx->handles) {
        ck_handle *h = ctx->handles;
        ck_handle_unlink(ctx, h);
        h->orphan(h);
    }
#ifdef CNNKIT_HAVE_CUDA
    if (ctx->device == CK_DEVICE_CUDA)
        ck_cudnn_destroy(ctx);
#endif
    free(ctx);
}

void ck_device_enter(const ck_context *ctx) {
#ifdef CNNKIT_HAVE_CUDA
    int current = -1;
    if (ctx->device == CK_DEVICE_CUDA &&
        (cudaGetDevice(&current) != cudaSuccess || current != ctx->ordinal))
        (void)cudaSetDevice(ctx->ordinal);
#else
    (void)ctx;
#endif
}

CK_API ck_device ck_context_device(const ck_context *ctx) {
    return ctx ? ctx->device : CK_DEVICE_CPU;
}

CK_API const char *ck_context_last_error(const ck_context *ctx) {
    if (ctx)
        return ctx->err;
    const char *e = ck_create_error();
    return e ? e : "ctx is NULL";
}

CK_API ck_status ck_context_set_seed(ck_context *ctx, uint64_t seed) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    ctx->seed = seed;
    return CK_STATUS_SUCCESS;
}

CK_API uint64_t ck_context_seed(const ck_context *ctx) {
    return ctx ? ctx->seed : 0;
}

CK_API ck_status ck_context_set_stream(ck_context *ctx, void *stream) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    if (ctx->device == CK_DEVICE_CPU) {
        if (stream)
            return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                           "stream: a CPU context accepts only a NULL stream");
        return CK_STATUS_SUCCESS;
    }
#ifdef CNNKIT_HAVE_CUDA
    void *old = ctx->stream;
    ctx->stream = stream;
    ck_status st = ck_cudnn_set_stream(ctx);
    if (st != CK_STATUS_SUCCESS) {
        ctx->stream = old;
        (void)ck_cudnn_set_stream(ctx);
    }
    return st;
#else
    return CK_STATUS_NOT_SUPPORTED;
#endif
}

CK_API void *ck_context_stream(const ck_context *ctx) {
    return ctx ? ctx->stream : NULL;
}

void ck_stream_drain(ck_context *ctx) {
#ifdef CNNKIT_HAVE_CUDA
    if (ctx->device == CK_DEVICE_CUDA)
        (void)cudaStreamSynchronize((cudaStream_t)ctx->stream);
#else
    (void)ctx;
#endif
}

CK_API ck_status ck_context_synchronize(ck_context *ctx) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
#ifdef CNNKIT_HAVE_CUDA
    if (ctx->device == CK_DEVICE_CUDA) {
        cudaError_t e = cudaStreamSynchronize((cudaStream_t)ctx->stream);
        if (e != cudaSuccess)
            return ck_cuda_fail(ctx, e, "cudaStreamSynchronize");
    }
#endif
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_context_set_cpu_threads(ck_context *ctx, int threads) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    /* OpenMP cannot report a team it failed to start: libgomp prints and exits, or faults.
     * Oversubscribing a little is the user's call; thousands of threads per core is a mistake. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    const long most = 4 * (cores > 16 ? cores : 16);
    if (threads < 0 || threads > most)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "threads: must be in [0, %ld] (4 per core, at least 64), got %d", most,
                       threads);
    ctx->cpu_threads = threads;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_context_set_host_alloc_limit(ck_context *ctx, size_t bytes) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    ctx->host_limit = bytes;
    return CK_STATUS_SUCCESS;
}

CK_API size_t ck_context_host_alloc_bytes(const ck_context *ctx) {
    return ctx ? ctx->host_live : 0;
}

CK_API size_t ck_context_device_bytes(const ck_context *ctx) {
#ifdef CNNKIT_HAVE_CUDA
    return ctx && ctx->device == CK_DEVICE_CUDA ? ctx->blas_ws_bytes : 0;
#else
    (void)ctx;
    return 0;
#endif
}

CK_API ck_status ck_context_set_conv_algo(ck_context *ctx, ck_conv_algo algo) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    if (algo != CK_CONV_ALGO_DETERMINISTIC && algo != CK_CONV_ALGO_FASTEST)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "algo: must be CK_CONV_ALGO_DETERMINISTIC or CK_CONV_ALGO_FASTEST, got %d",
                       (int)algo);
    /* read when a convolution is planned (cudnn_conv_plan.c): nothing to redo now */
    ctx->conv_algo = algo;
    return CK_STATUS_SUCCESS;
}

CK_API ck_conv_algo ck_context_conv_algo(const ck_context *ctx) {
    return ctx ? ctx->conv_algo : CK_CONV_ALGO_DETERMINISTIC;
}

CK_API ck_status ck_context_set_math(ck_context *ctx, ck_math math) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    if (math != CK_MATH_STRICT_FP32 && math != CK_MATH_TF32)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "math: must be CK_MATH_STRICT_FP32 or CK_MATH_TF32, got %d", (int)math);
#ifdef CNNKIT_HAVE_CUDA
    if (ctx->device == CK_DEVICE_CUDA) {
        const ck_math old = ctx->math;
        ctx->math = math;
        const ck_status st = ck_cublas_set_math(ctx);
        if (st != CK_STATUS_SUCCESS)
            ctx->math = old; /* the handle keeps the old mode: so does the setting */
        return st;
    }
#endif
    ctx->math = math; /* a CPU context: stored, no effect (always strict fp32) */
    return CK_STATUS_SUCCESS;
}

CK_API ck_math ck_context_math(const ck_context *ctx) {
    return ctx ? ctx->math : CK_MATH_STRICT_FP32;
}

/* ---- counted host allocations ----------------------------------------------------------------
 * Each block carries a header with its size, so that free and realloc can give the bytes back to
 * the context's count. The header is as large as the strictest fundamental alignment. */
typedef union ck_host_hdr {
    size_t bytes;
    long double align_ld;
    long long align_ll;
    void *align_p;
} ck_host_hdr;
#define CK_HDR_SIZE (((sizeof(ck_host_hdr) + 15) / 16) * 16)

static int host_fits(const ck_context *ctx, size_t add) {
    if (!ctx || ctx->host_limit == 0)
        return 1;
    return ctx->host_live <= ctx->host_limit && add <= ctx->host_limit - ctx->host_live;
}

void *ck_host_alloc(ck_context *ctx, size_t bytes) {
    if (bytes > SIZE_MAX - CK_HDR_SIZE || !host_fits(ctx, bytes))
        return NULL;
    unsigned char *b = (unsigned char *)malloc(CK_HDR_SIZE + bytes);
    if (!b)
        return NULL;
    ((ck_host_hdr *)b)->bytes = bytes;
    if (ctx)
        ctx->host_live += bytes;
    return b + CK_HDR_SIZE;
}

void *ck_host_calloc(ck_context *ctx, size_t count, size_t size) {
    if (size && count > SIZE_MAX / size)
        return NULL;
    void *p = ck_host_alloc(ctx, count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

void *ck_host_realloc(ck_context *ctx, void *p, size_t bytes) {
    if (!p)
        return ck_host_alloc(ctx, bytes);
    unsigned char *b = (unsigned char *)p - CK_HDR_SIZE;
    const size_t old = ((ck_host_hdr *)b)->bytes;
    if (bytes > SIZE_MAX - CK_HDR_SIZE || (bytes > old && !host_fits(ctx, bytes - old)))
        return NULL;
    unsigned char *nb = (unsigned char *)realloc(b, CK_HDR_SIZE + bytes);
    if (!nb)
        return NULL;
    ((ck_host_hdr *)nb)->bytes = bytes;
    if (ctx)
        ctx->host_live = ctx->host_live - old + bytes;
    return nb + CK_HDR_SIZE;
}

void ck_host_free(ck_context *ctx, void *p) {
    if (!p)
        return;
    unsigned char *b = (unsigned char *)p - CK_HDR_SIZE;
    if (ctx)
        ctx->host_live -= ((ck_host_hdr *)b)->bytes;
    free(b);
}

char *ck_host_strdup(ck_context *ctx, const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)ck_host_alloc(ctx, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

ck_status ck_host_oom(ck_context *ctx, const char *what, size_t bytes) {
    if (ctx && ctx->host_limit)
        return ck_fail(ctx, CK_STATUS_ALLOC_FAILED,
                       "%s: out of host memory allocating %zu bytes (host allocation limit %zu "
                       "bytes, %zu in use)",
                       what, bytes, ctx->host_limit, ctx->host_live);
    return ck_fail(ctx, CK_STATUS_ALLOC_FAILED, "%s: out of host memory allocating %zu bytes", what,
                   bytes);
}

/* ---- argument checks ------------------------------------------------------------------------ */

static const char *layout_name(ck_layout l) {
    return l == CK_LAYOUT_NHWC ? "NHWC" : "NCHW";
}

ck_status ck_check_tensor(ck_context *ctx, const ck_tensor *t, const char *name) {
    if (!t)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "%s: is NULL", name);
    if (!t->ctx)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "%s: its context was destroyed", name);
    if (t->ctx != ctx)
        return ck_fail(ctx, CK_STATUS_DEVICE_MISMATCH,
                       "%s: belongs to another context (%s), not this one (%s)", name,
                       t->ctx && t->ctx->device == CK_DEVICE_CUDA ? "CUDA" : "CPU",
                       ctx->device == CK_DEVICE_CUDA ? "CUDA" : "CPU");
    return CK_STATUS_SUCCESS;
}

ck_status ck_check_same_shape(ck_context *ctx, const ck_tensor *a, const char *an,
                              const ck_tensor *b, const char *bn) {
    if (a->n != b->n || a->c != b->c || a->h != b->h || a->w != b->w)
        return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                       "%s: shape %dx%dx%dx%d differs from %s shape %dx%dx%dx%d (N x C x H x W)",
                       bn, b->n, b->c, b->h, b->w, an, a->n, a->c, a->h, a->w);
    if (a->layout != b->layout)
        return ck_fail(ctx, CK_STATUS_LAYOUT_MISMATCH, "%s: layout %s differs from %s layout %s",
                       bn, layout_name(b->layout), an, layout_name(a->layout));
    return CK_STATUS_SUCCESS;
}

ck_status ck_check_param_tensor(ck_context *ctx, const ck_tensor *t, const char *name, int c) {
    ck_status st = ck_check_tensor(ctx, t, name);
    if (st != CK_STATUS_SUCCESS)
        return st;
    if (t->n != 1 || t->c != c || t->h != 1 || t->w != 1)
        return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                       "%s: shape must be 1x%dx1x1 (one value per channel of x), got %dx%dx%dx%d",
                       name, c, t->n, t->c, t->h, t->w);
    return CK_STATUS_SUCCESS;
}

ck_status ck_check_dropout_desc(ck_context *ctx, const ck_dropout_desc *d, const char *name) {
    if (!d)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "%s: is NULL", name);
    if (!(d->rate >= 0.0f && d->rate < 1.0f))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "%s->rate: must be in [0, 1), got %g", name,
                       (double)d->rate);
    return CK_STATUS_SUCCESS;
}
