/* Status strings and error recording. Everything in the library may call these; they call
 * nothing of the library, so the error path forms no circle (context.c -> cuda_handles.c -> here).
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

ck_status ck_fail_after(ck_context *ctx, ck_status status, const char *earlier) {
    if (!strcmp(ctx->err, earlier)) /* one failure said twice (a broken comm repeats its own) */
        return status;
    char now[CK_ERR_LEN];
    snprintf(now, sizeof now, "%s", ctx->err);
    return ck_fail(ctx, status, "%s (before that: %s)", now, earlier);
}

#ifdef CNNKIT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

CK_API const char *ck_status_string(ck_status status) {
    switch (status) {
    case CK_STATUS_SUCCESS:
        return "success";
    case CK_STATUS_BAD_PARAM:
        return "bad parameter";
    case CK_STATUS_SHAPE_MISMATCH:
        return "shape mismatch";
    case CK_STATUS_LAYOUT_MISMATCH:
        return "layout mismatch";
    case CK_STATUS_DEVICE_MISMATCH:
        return "device or context mismatch";
    case CK_STATUS_OVERFLOW:
        return "size overflows the supported index range";
    case CK_STATUS_ALLOC_FAILED:
        return "allocation failed";
    case CK_STATUS_NOT_SUPPORTED:
        return "not supported";
    case CK_STATUS_CUDA_ERROR:
        return "CUDA error";
    case CK_STATUS_SINGLE_VALUE_BATCH:
        return "batch statistics need more than one value per channel";
    case CK_STATUS_WORKSPACE_TOO_SMALL:
        return "workspace too small";
    case CK_STATUS_INTERNAL:
        return "internal error";
    }
    return "unknown status";
}

/* Errors with no context to hold them (a failed ck_context_create, a handle whose context was
 * destroyed) are kept per thread (never shared between threads) and read with
 * ck_context_last_error(NULL). Cleared by every ck_context_create. */
static __thread char create_err[CK_ERR_LEN];

ck_status ck_fail(ck_context *ctx, ck_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx ? ctx->err : create_err, ctx ? sizeof ctx->err : sizeof create_err, fmt, ap);
    va_end(ap);
    return status;
}

#ifdef CNNKIT_HAVE_CUDA
ck_status ck_cuda_fail(ck_context *ctx, int cuda_err, const char *what) {
    return ck_fail(ctx, CK_STATUS_CUDA_ERROR, "%s: %s (%s)", what,
                   cudaGetErrorString((cudaError_t)cuda_err),
                   cudaGetErrorName((cudaError_t)cuda_err));
}
#endif

void ck_create_error_clear(void) {
    create_err[0] = '\0';
}

const char *ck_create_error(void) {
    return create_err[0] ? create_err : NULL;
}

void ck_sbuf_printf(ck_sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *dst = b->p && b->used + 1 < b->len ? b->p + b->used : NULL;
    const int n = vsnprintf(dst, dst ? b->len - b->used : 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    b->used += (size_t)n;
    if (dst && b->used >= b->len && b->len > 4) /* cut short: say so */
        memcpy(b->p + b->len - 4, "...", 4);
}

void ck_errbuf_printf(char *err, size_t len, const char *fmt, ...) {
    if (!err || !len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

void ck_appendf(char *buf, size_t len, size_t *at, const char *fmt, ...) {
    if (*at + 1 >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(buf + *at, len - *at, fmt, ap);
    va_end(ap);
    if (n > 0)
        *at = *at + (size_t)n < len ? *at + (size_t)n : len - 1;
}
