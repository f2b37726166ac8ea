/* Internal definitions shared by the host sources. Not installed. */
#ifndef CNNKIT_INTERNAL_H
#define CNNKIT_INTERNAL_H

#include "cnnkit/cnnkit.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define CK_API __attribute__((visibility("default")))
#define CK_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CK_API
#define CK_PRINTF(a, b)
#endif

#define CK_ERR_LEN 512

struct ck_context {
    ck_device device; /* CPU or CUDA */
    int ordinal;
    int sm_count; /* multiprocessors of the device (CUDA), for launch planning */
    uint64_t seed;
    void *stream; /* cudaStream_t */
    void *cudnn;  /* cudnnHandle_t, owned */
    void *cublas; /* cublasHandle_t, owned */
    int cpu_threads;
    size_t host_limit; /* ck_context_set_host_alloc_limit: 0 = unlimited */
    size_t host_live;  /* bytes of live ck_host_alloc allocations of this context */
    char err[CK_ERR_LEN];
};

struct ck_tensor {
    ck_context *ctx;
    ck_layout layout;
    int n, c, h, w;
    size_t count;
    float *data; /* host (CPU context) or device memory */
};

struct ck_workspace {
    ck_context *ctx;
    size_t bytes;
    void *data;
};

struct ck_mask {
    ck_context *ctx;
    ck_dropout_kind kind;
    int n, c, h, w;
    size_t units; /* N*C (spatial) or N*C*H*W (element) */
    size_t bytes; /* units bytes (spatial) or ceil(units/32)*4 bytes of bits (element) */
    uint8_t *data;
};

/* Records a formatted message in ctx (when ctx != NULL) and returns status. */
ck_status ck_fail(ck_context *ctx, ck_status status, const char *fmt, ...) CK_PRINTF(3, 4);
static inline void ck_clear_error(ck_context *ctx) {
    ctx->err[0] = '\0';
}
/* Waits for the context's stream (CUDA) without touching the error state; a no-op on the CPU.
 * For measurements (profiling): a failed kernel reports itself at its own call. */
void ck_stream_drain(ck_context *ctx);
/* An activation in double precision (check.c), for the diagnostics and the measurements:
 * softmax and unknown values give x. */
double ck_act_eval_ref(ck_activation a, double x, double alpha);

/* ---- host allocations, counted against the context's limit (context.c) ----------------------
 * Every host allocation of the library that has a context goes through these, so that
 * ck_context_set_host_alloc_limit can simulate running out of memory. ctx may be NULL (counted
 * nowhere). A block must be freed (and reallocated) with the context it was allocated with, and
 * never with free(). They return NULL when the limit would be exceeded or the system allocator
 * fails; they record no message (the caller names the argument). Sizes are overflow-checked. */
void *ck_host_alloc(ck_context *ctx, size_t bytes);
void *ck_host_calloc(ck_context *ctx, size_t count, size_t size);
/* realloc: on failure returns NULL and p is untouched (still allocated). */
void *ck_host_realloc(ck_context *ctx, void *p, size_t bytes);
void ck_host_free(ck_context *ctx, void *p);
/* strdup through ck_host_alloc. */
char *ck_host_strdup(ck_context *ctx, const char *s);
/* Records "<what>: out of host memory allocating <bytes> bytes" (naming the context's limit when
 * one is set) and returns CK_STATUS_ALLOC_FAILED. */
ck_status ck_host_oom(ck_context *ctx, const char *what, size_t bytes);

/* Writes len bytes to path atomically: a temp file beside it, fsync, rename, fsync of the
 * directory (file_atomic.c). Messages name the argument "path". */
ck_status ck_write_file_atomic(ck_context *ctx, const char *path, const void *buf, size_t len);

/* Returns from the calling function when expr is not CK_STATUS_SUCCESS. */
#define CK_TRY(expr)                                                                               \
    do {                                                                                           \
        ck_status st_ = (expr);                                                                    \
        if (st_ != CK_STATUS_SUCCESS)                                                              \
            return st_;                                                                            \
    } while (0)

/* Argument checks: each returns SUCCESS or records a message naming `name`. */
ck_status ck_check_tensor(ck_context *ctx, const ck_tensor *t, const char *name);
ck_status ck_check_same_shape(ck_context *ctx, const ck_tensor *a, const char *an,
                              const ck_tensor *b, const char *bn);
ck_status ck_check_param_tensor(ck_context *ctx, const ck_tensor *t, const char *name, int c);
ck_status ck_check_dropout_desc(ck_context *ctx, const ck_dropout_desc *d, const char *name);

/* ---- BN launch plan, shared by the workspace query and the CUDA launchers --------------------
 * The statistics reduction is split over `splits` chunks per channel (NCHW: chunks of samples;
 * NHWC: chunks of rows) so that even C = 32 fills the GPU; partials are merged in fixed order. */
typedef struct ck_bn_plan {
    int splits;         /* partials per channel */
    size_t ws_bytes;    /* workspace bytes */
    size_t part_offset; /* byte offset of the partials: 3 floats per (c, split) */
    size_t coef_offset; /* byte offset of per-channel coefficients: 4 floats per channel */
    size_t sd_offset;   /* byte offset of the fused SpatialDropout scales: N*C floats */
} ck_bn_plan;
ck_bn_plan ck_bn_make_plan(const ck_context *ctx, const ck_tensor *x);

#ifdef CNNKIT_HAVE_CUDA
/* Converts a CUDA error code into a status with a message. */
ck_status ck_cuda_fail(ck_context *ctx, int cuda_err, const char *what);
/* cudnn_ops.c: the only file that calls cuDNN. */
ck_status ck_cudnn_create(ck_context *ctx);
void ck_cudnn_destroy(ck_context *ctx);
ck_status ck_cudnn_set_stream(ck_context *ctx);
#endif

/* ---- CPU reference (src/host/cpu_ref.c); BN functions return -1 when out of host memory
 * ----------------------------------------------------- */
/* threads: OpenMP threads (0 = default). Results never depend on it. */
void ck_cpu_dropout(int threads, ck_dropout_kind kind, uint64_t seed, const ck_dropout_desc *d,
                    ck_mode mode, const ck_tensor *x, ck_tensor *y, ck_mask *mask_out,
                    const ck_mask *mask_in);
/* words[4 i .. 4 i + 3] = ck_dropout_call(seed, offset, call0 + i) for i < count: the batched
 * Philox of the CPU element dropout (vectorized where the CPU has AVX2; CNNKIT_CPU_ISA=generic
 * forces the baseline). */
void ck_cpu_philox_block(uint64_t seed, uint64_t offset, uint64_t call0, int count,
                         uint32_t *words);
int ck_cpu_bn_forward_training(int threads, const ck_bn_desc *d, int frozen, uint64_t seed,
                               const ck_tensor *x, const float *gamma, const float *beta,
                               float *running_mean, float *running_var, float *saved_mean,
                               float *saved_invstd, const ck_dropout_desc *sd, ck_tensor *y);
int ck_cpu_bn_forward_inference(int threads, const ck_bn_desc *d, const ck_tensor *x,
                                const float *gamma, const float *beta, const float *running_mean,
                                const float *running_var, ck_tensor *y);
int ck_cpu_bn_backward(int threads, const ck_bn_desc *d, int frozen, uint64_t seed,
                       const ck_tensor *x, const ck_tensor *dy, const float *gamma,
                       const float *beta, const float *saved_mean, const float *saved_invstd,
                       const ck_dropout_desc *sd, ck_tensor *dx, float *dgamma, float *dbeta);
void ck_cpu_convert_layout(const ck_tensor *src, ck_tensor *dst);

#endif /* CNNKIT_INTERNAL_H */
