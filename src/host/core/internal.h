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

#define CK_ERR_LEN 1024 /* room for a cuDNN algorithm choice that failed (cudnn_conv_plan.c) */

/* Every object made from a context (tensor, workspace, mask, model) starts with a link in its
 * context's list, so that ck_context_destroy can orphan the ones still alive: orphan() frees
 * what needs the context (device memory, counted host buffers) and sets the object's ctx to
 * NULL; later calls on the object then fail with CK_STATUS_BAD_PARAM instead of reading the
 * freed context, and its destroy call still frees it. */
typedef struct ck_handle {
    struct ck_handle *prev, *next;
    void (*orphan)(struct ck_handle *h);
} ck_handle;

/* ---- convolution algorithm choice (conv_algo.c: plain C, no CUDA, tested on the CPU) ---------
 * cudnn_conv_plan.c turns cuDNN's heuristic or timing results into ck_algo_cand entries and lets
 * ck_conv_algo_choose pick; the choices of CK_CONV_ALGO_FASTEST are cached in the context. */
typedef enum ck_cand_math {
    CK_CAND_MATH_DEFAULT = 0,        /* CUDNN_DEFAULT_MATH: TF32 allowed on Ampere and later */
    CK_CAND_MATH_TENSOR_OP = 1,      /* CUDNN_TENSOR_OP_MATH: TF32 tensor cores for fp32 data */
    CK_CAND_MATH_TENSOR_OP_CONV = 2, /* may convert to fp16/bf16: never allowed */
    CK_CAND_MATH_FMA = 3             /* CUDNN_FMA_MATH: strict fp32 */
} ck_cand_math;

typedef struct ck_algo_cand {
    int algo;
    int ok;            /* cuDNN's status for it was success */
    int deterministic; /* CUDNN_DETERMINISTIC */
    ck_cand_math math;
    size_t memory; /* workspace bytes */
    float time_ms; /* measured (cudnnFind*), or < 0 from the heuristics */
} ck_algo_cand;

/* The candidate to use, -1 when none is allowed: ok, memory <= max_bytes, a math the setting
 * allows (strict fp32: FMA only; TF32: FMA, default or tensor-op, never down-conversion) and,
 * under CK_CONV_ALGO_DETERMINISTIC, deterministic. Deterministic: the first allowed in list
 * order (cuDNN's heuristic order); fastest: the least time_ms among the timed allowed ones
 * (ties: the first), else the first allowed. */
int ck_conv_algo_choose(const ck_algo_cand *cands, int count, ck_conv_algo policy, ck_math math,
                        size_t max_bytes);

/* One cached choice: the convolution's geometry (batch included), the planning request and the
 * plan cuDNN got. */
typedef struct ck_conv_algo_key {
    int geom[13]; /* n, h, w, cin, cout, kh, kw, sh, sw, pad_top, pad_left, oh, ow */
    int force_nchw, policy, math;
} ck_conv_algo_key;

typedef struct ck_conv_algo_plan {
    int nchw;
    int algo[3]; /* forward, backward data, backward filter */
    int math[3]; /* cudnnMathType_t of each */
    float time_ms[3];
    size_t bytes;
    float layout_ms[2];  /* each layout's timed step (NHWC, NCHW), < 0: not measured */
    float transpose_ms;  /* the NCHW step's share spent transposing, < 0: not measured */
    int layout_compared; /* both layouts were planned (fastest, layout left to cnnkit) */
} ck_conv_algo_plan;

#define CK_CONV_ALGO_CACHE 32 /* shapes per context; more replace the oldest */
typedef struct ck_conv_algo_cache {
    ck_conv_algo_key key[CK_CONV_ALGO_CACHE];
    ck_conv_algo_plan plan[CK_CONV_ALGO_CACHE];
    int count, next; /* entries used; the slot the next insertion takes when full */
} ck_conv_algo_cache;

/* Layout by measurement (CK_CONV_ALGO_FASTEST): cnnkit's activations are NHWC, so a convolution
 * that cuDNN runs in NCHW pays for transposes around it. A layout's training-step time is the
 * sum of its three timed algorithms, plus transpose_ms for NCHW; < 0 when any part is untimed. */
float ck_conv_layout_step_ms(const float time_ms[3], float transpose_ms, int nchw);
/* NCHW must beat NHWC by more than this fraction: a near tie is timing noise, and NHWC needs no
 * transpose buffers in the workspace. */
#define CK_CONV_LAYOUT_MARGIN 0.05f
/* 1 when NCHW's step time is below (1 - CK_CONV_LAYOUT_MARGIN) x NHWC's; 0 when either is
 * unknown (< 0): NHWC, the layout of the activations, stays. */
int ck_conv_layout_prefers_nchw(float nhwc_ms, float nchw_ms);

/* The cached plan of key, or NULL. */
const ck_conv_algo_plan *ck_conv_algo_cache_find(const ck_conv_algo_cache *c,
                                                 const ck_conv_algo_key *key);
/* Stores (or replaces) key's plan; when full the oldest entry goes. */
void ck_conv_algo_cache_put(ck_conv_algo_cache *c, const ck_conv_algo_key *key,
                            const ck_conv_algo_plan *plan);

/* A CUDA device's peaks (device_peak.c): FLOP/s of fp32 FMA, of dense TF32 and BF16 tensor-core
 * math, and DRAM bytes/s; 0 where unknown (a CPU context, a compute capability not in the
 * table). Estimates from NVIDIA's published per-SM rates: the profile's roofline. */
typedef struct ck_device_peak {
    double fp32_flops, tf32_flops, bf16_flops, dram_bytes;
} ck_device_peak;
/* From the device attributes: compute capability, SM count, the SM and memory clocks (kHz) and
 * the memory bus width (bits). A pure function of its arguments. */
ck_device_peak ck_device_peak_of(int major, int minor, int sms, int clock_khz, int mem_clock_khz,
                                 int bus_bits);

struct ck_context {
    ck_device device; /* CPU or CUDA */
    int ordinal;
    int sm_count;        /* multiprocessors of the device (CUDA), for launch planning */
    ck_device_peak peak; /* the device's peaks (CUDA, at creation), all 0 on the CPU */
    uint64_t seed;
    void *stream; /* cudaStream_t */
    void *cudnn;  /* cudnnHandle_t, owned */
    void *cublas; /* cublasHandle_t, owned */
    /* cuBLAS's workspace, the context's own (owned): bound with every stream, so an eager step
     * and a CUDA graph's capture (which needs a user workspace) run the same GEMM algorithms */
    void *blas_ws;
    size_t blas_ws_bytes;
    int handles_astray; /* cuDNN/cuBLAS could not be moved back after a CUDA graph capture */
    int cpu_threads;
    ck_conv_algo conv_algo;        /* ck_context_set_conv_algo */
    ck_math math;                  /* ck_context_set_math */
    ck_conv_algo_cache algo_cache; /* CK_CONV_ALGO_FASTEST's timed choices, per shape */
    size_t host_limit;             /* ck_context_set_host_alloc_limit: 0 = unlimited */
    size_t host_live;              /* bytes of live ck_host_alloc allocations of this context */
    ck_handle *handles;            /* objects made from this context, most recent first */
    char err[CK_ERR_LEN];
};

/* Links h (the first member of an object) into ctx's list / takes it out (context.c). */
void ck_handle_link(ck_context *ctx, ck_handle *h, void (*orphan)(ck_handle *h));
void ck_handle_unlink(ck_context *ctx, ck_handle *h);

struct ck_tensor {
    ck_handle link;
    ck_context *ctx;
    ck_layout layout;
    int n, c, h, w;
    size_t count;
    float *data; /* host (CPU context) or device memory */
    /* ck_kdt: CK_KDT_BF16 only for the executor's views of a bf16 model's device activations
     * (16-bit words at data); public tensors are always fp32 (0) */
    int dtype;
};

/* The storage of x and y (internal tensors only: the executor's bf16 views; public ones are
 * fp32): one storage for both, and bf16 words only in a CUDA context's memory; else
 * CK_STATUS_BAD_PARAM naming the argument (BN and dropout). */
ck_status ck_tensor_check_storage(ck_context *ctx, const ck_tensor *x, const char *xn,
                                  const ck_tensor *y, const char *yn);

struct ck_workspace {
    ck_handle link;
    ck_context *ctx;
    size_t bytes;
    void *data;
};

struct ck_mask {
    ck_handle link;
    ck_context *ctx;
    ck_dropout_kind kind;
    int n, c, h, w;
    size_t units; /* N*C (spatial) or N*C*H*W (element) */
    size_t bytes; /* units bytes (spatial) or ceil(units/32)*4 bytes of bits (element) */
    uint8_t *data;
};

/* snprintf at buf + *at (buf holds len bytes), advancing *at; never overflows, stops at len - 1. */
void ck_appendf(char *buf, size_t len, size_t *at, const char *fmt, ...) CK_PRINTF(4, 5);
/* Bounded text builder: used counts every byte asked for (what the whole text needs); a text cut
 * short ends in "..." (errors.c). p may be NULL with len 0 to measure. */
typedef struct ck_sbuf {
    char *p;
    size_t len, used;
} ck_sbuf;
void ck_sbuf_printf(ck_sbuf *b, const char *fmt, ...) CK_PRINTF(2, 3);
static inline void ck_sbuf_init(ck_sbuf *b, char *p, size_t len) {
    b->p = p;
    b->len = p ? len : 0;
    b->used = 0;
    if (b->len)
        p[0] = '\0';
}
/* The message of a call that reports into a caller's buffer (err may be NULL or len 0). */
void ck_errbuf_printf(char *err, size_t len, const char *fmt, ...) CK_PRINTF(3, 4);
/* Records a formatted message in ctx (the per-thread creation message when ctx is NULL) and
 * returns status (errors.c). */
ck_status ck_fail(ck_context *ctx, ck_status status, const char *fmt, ...) CK_PRINTF(3, 4);
/* ctx's message followed by an earlier one it replaced: "now (before that: earlier)", or now
 * alone when the two are one message; status. */
ck_status ck_fail_after(ck_context *ctx, ck_status status, const char *earlier);
/* The per-thread message of a failure with no context (ck_fail(NULL, ...)), read by
 * ck_context_last_error(NULL): NULL when none; cleared by every ck_context_create (errors.c). */
void ck_create_error_clear(void);
const char *ck_create_error(void);
static inline void ck_clear_error(ck_context *ctx) {
    ctx->err[0] = '\0';
}
/* The current CUDA device is the calling thread's, and one process may hold contexts on several
 * GPUs or use a context from another thread: every public call on a CUDA context makes its GPU
 * current first (streams, cuDNN and cuBLAS handles and allocations belong to one device). A
 * failure shows in the call's first CUDA operation. No-op on the CPU (context.c). */
void ck_device_enter(const ck_context *ctx);
/* The start of every public call on ctx: its GPU current, its error cleared. */
static inline void ck_enter(ck_context *ctx) {
    ck_device_enter(ctx);
    ck_clear_error(ctx);
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

/* The file a save to path replaces (file_atomic.c): path itself, or the regular file a symlink
 * at path leads to (resolved into buf, PATH_MAX bytes); anything else that exists and is not a
 * regular file is refused. */
ck_status ck_save_target(ck_context *ctx, const char *path, char *buf, const char **target);
/* Writes len bytes to path atomically: a temp file beside the target (ck_save_target), locked
 * while it lives, fsync, rename, fsync of the directory; stale temp files of the target left by
 * a killed save are removed first (file_atomic.c). Messages name the argument "path". */
ck_status ck_write_file_atomic(ck_context *ctx, const char *path, const void *buf, size_t len);

/* Opens path read-only when it is a regular file (file_atomic.c): a FIFO would block the open
 * until a writer comes, a device would never end. The descriptor, or -1 with *why saying what
 * went wrong (strerror, or "not a regular file"). */
int ck_open_regular(const char *path, const char **why);

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

/* Where a dropout the executor runs on a CUDA context takes its RNG offset: with step (the
 * model's step packet, a ck_kstep in device memory) the kernel computes
 * ck_dropout_layer_offset(step->step, layer) as it runs, so that a training step captured as a
 * CUDA graph draws each replay's masks; step NULL (the CPU, the public calls): desc->offset. */
struct ck_kstep;
typedef struct ck_drop_key {
    const struct ck_kstep *step;
    int layer;
} ck_drop_key;
/* The executor's dropouts (ops/dropout.c, ops/batchnorm.c): the public training-mode calls
 * (ck_dropout_forward / _backward, ck_spatial_dropout_*, ck_batchnorm_forward_training,
 * ck_batchnorm_backward, same checks and messages) with the offset taken as key says. Forward
 * and backward of a dropout are the same map. */
ck_status ck_dropout_keyed(ck_context *ctx, ck_dropout_kind kind, const ck_dropout_desc *desc,
                           ck_drop_key key, const ck_tensor *x, const char *xn, ck_tensor *y,
                           const char *yn);
ck_status ck_batchnorm_forward_training_keyed(ck_context *ctx, const ck_bn_desc *desc,
                                              const ck_tensor *x, const ck_tensor *gamma,
                                              const ck_tensor *beta, ck_tensor *running_mean,
                                              ck_tensor *running_var, ck_tensor *saved_mean,
                                              ck_tensor *saved_invstd,
                                              const ck_dropout_desc *spatial_dropout,
                                              ck_drop_key key, ck_tensor *y, ck_workspace *ws);
ck_status ck_batchnorm_backward_keyed(ck_context *ctx, const ck_bn_desc *desc, const ck_tensor *x,
                                      const ck_tensor *dy, const ck_tensor *gamma,
                                      const ck_tensor *beta, const ck_tensor *saved_mean,
                                      const ck_tensor *saved_invstd,
                                      const ck_dropout_desc *spatial_dropout, ck_drop_key key,
                                      ck_tensor *dx, ck_tensor *dgamma, ck_tensor *dbeta,
                                      ck_workspace *ws);

/* ---- BN launch plan, shared by the workspace query and the CUDA launchers --------------------
 * The statistics reduction is split over `splits` chunks per channel (NCHW: chunks of samples;
 * NHWC: chunks of rows) so that even C = 32 fills the GPU; partials are merged in fixed order. */
typedef struct ck_bn_plan {
    int splits;         /* partials per channel */
    size_t ws_bytes;    /* workspace bytes */
    size_t part_offset; /* byte offset of the partials: 3 doubles per (c, split) */
    size_t coef_offset; /* byte offset of per-channel coefficients: 4 floats per channel */
    size_t sd_offset;   /* byte offset of the fused SpatialDropout scales: N*C floats */
} ck_bn_plan;
ck_bn_plan ck_bn_make_plan(const ck_context *ctx, const ck_tensor *x);
/* SyncBatchNormalization on a CUDA context (ops/batchnorm.c): the training kernels of the public
 * calls with each channel's moments (forward) and sums (backward) gathered from every rank of
 * comm between their phases (docs/distributed.md). The executor's buffers fit the node: no
 * argument checks; a batch of one value per channel on every rank together normalizes with the
 * running statistics. Device scratch: the communicator's (ck_comm_device_scratch). */
struct ck_comm;
ck_status ck_bn_cuda_forward_sync(ck_context *ctx, const ck_bn_desc *d, const ck_tensor *x,
                                  const float *gamma, const float *beta, float *running_mean,
                                  float *running_var, float *saved_mean, float *saved_invstd,
                                  const ck_dropout_desc *sd, ck_tensor *y, ck_workspace *ws,
                                  const struct ck_comm *comm);
ck_status ck_bn_cuda_backward_sync(ck_context *ctx, const ck_bn_desc *d, const ck_tensor *x,
                                   const ck_tensor *dy, const float *gamma, const float *beta,
                                   const float *saved_mean, const float *saved_invstd,
                                   const ck_dropout_desc *sd, ck_tensor *dx, float *dgamma,
                                   float *dbeta, ck_workspace *ws, const struct ck_comm *comm);

#ifdef CNNKIT_HAVE_CUDA
/* Converts a CUDA error code into a status with a message. */
ck_status ck_cuda_fail(ck_context *ctx, int cuda_err, const char *what);
/* cuda_handles.c: the context's cuDNN and cuBLAS handles (cudnn_internal.h lists the files that
 * call cuDNN). */
ck_status ck_cudnn_create(ck_context *ctx);
void ck_cudnn_destroy(ck_context *ctx);
ck_status ck_cudnn_set_stream(ck_context *ctx);
/* Sets the cuBLAS math mode of ctx->math (strict fp32 or TF32 tensor ops). */
ck_status ck_cublas_set_math(ck_context *ctx);
/* Gives cuBLAS the workspace ws of `bytes` device bytes for its calls on the current stream (a
 * CUDA graph capture needs one of the user's); ck_cudnn_set_stream binds the context's own
 * (ctx->blas_ws) with every stream. _bytes: cuBLAS's documented default pool size on the
 * context's device, the size of the context's workspace. */
ck_status ck_cublas_set_workspace(ck_context *ctx, void *ws, size_t bytes);
/* The handles back on the context's stream after a capture could not move them (handles_astray),
 * before any device work of the context: else a failure saying so. */
ck_status ck_cudnn_home(ck_context *ctx);
size_t ck_cublas_workspace_bytes(const ck_context *ctx);
/* Writes "cuDNN a.b.c loaded (built with x.y.z), cuBLAS ..." into buf (ck_cuda_describe). */
void ck_cudnn_versions(char *buf, size_t len);
#endif

/* ---- CPU reference (src/host/ops/cpu_ref.c); BN functions return -1 when out of host memory,
 * training forward 1 + c when channel c's batch statistics are not finite (nothing written)
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
/* sync (SyncBatchNormalization, NULL otherwise): the per-channel sums and the element count are
 * summed over its ranks between the statistics and the apply phases, so every rank normalizes
 * with the statistics of the global batch (frozen is then decided by the global count: 1 uses
 * the running statistics); a failed collective returns -2 (its message in sync's context). */
struct ck_comm;
int ck_cpu_bn_forward_training(int threads, const ck_bn_desc *d, int frozen, uint64_t seed,
                               const ck_tensor *x, const float *gamma, const float *beta,
                               float *running_mean, float *running_var, float *saved_mean,
                               float *saved_invstd, const ck_dropout_desc *sd, ck_tensor *y,
                               const struct ck_comm *sync);
int ck_cpu_bn_forward_inference(int threads, const ck_bn_desc *d, const ck_tensor *x,
                                const float *gamma, const float *beta, const float *running_mean,
                                const float *running_var, ck_tensor *y);
int ck_cpu_bn_backward(int threads, const ck_bn_desc *d, int frozen, uint64_t seed,
                       const ck_tensor *x, const ck_tensor *dy, const float *gamma,
                       const float *beta, const float *saved_mean, const float *saved_invstd,
                       const ck_dropout_desc *sd, ck_tensor *dx, float *dgamma, float *dbeta,
                       const struct ck_comm *sync);

#endif /* CNNKIT_INTERNAL_H */
