/*
 * cnnkit — CNN layers in C over CUDA, with a CPU reference for every kernel.
 *
 * Conventions of this API (in the spirit of cuDNN's C API):
 *  - Every call returns a ck_status. On failure nothing the call was asked to write has been
 *    changed, and ck_context_last_error() holds a message naming the offending argument (calls
 *    that take no context, such as the descriptor initializers, the data set helpers, the checker
 *    and the statistics, leave it in ck_context_last_error(NULL), the calling thread's). The
 *    exceptions are ck_context_create, ck_tensor_create, ck_workspace_create and ck_mask_create:
 *    on failure they set the handle to NULL (when it is not NULL itself), so that destroying it
 *    afterwards is safe.
 *  - A ck_context owns the device choice, the CUDA stream, the cuDNN/cuBLAS handles and the RNG
 *    seed. There is no global mutable state: everything takes its context. One context must not be
 *    used from two threads at once; distinct contexts are independent, on one GPU or several, and
 *    a context may be used from any thread: every call on a CUDA context first makes its GPU the
 *    calling thread's current device (and leaves it so).
 *  - Tensors are 4-D fp32 with an explicit logical shape (N, C, H, W) and a memory layout (NCHW or
 *    NHWC). Their memory lives on the context's device.
 *  - Buffers are owned by the caller or come from an explicit create/destroy pair.
 */
#ifndef CNNKIT_CNNKIT_H
#define CNNKIT_CNNKIT_H

#include <stddef.h>
#include <stdint.h>

#define CNNKIT_VERSION_MAJOR 0
#define CNNKIT_VERSION_MINOR 1
#define CNNKIT_VERSION_PATCH 0
#define CNNKIT_VERSION                                                                             \
    (CNNKIT_VERSION_MAJOR * 10000 + CNNKIT_VERSION_MINOR * 100 + CNNKIT_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Status
 * ------------------------------------------------------------------------------------------- */
typedef enum ck_status {
    CK_STATUS_SUCCESS = 0,
    CK_STATUS_BAD_PARAM = 1,          /* NULL pointer, value out of range, bad enum */
    CK_STATUS_SHAPE_MISMATCH = 2,     /* tensors whose shapes do not fit together */
    CK_STATUS_LAYOUT_MISMATCH = 3,    /* tensors whose layouts must agree but do not */
    CK_STATUS_DEVICE_MISMATCH = 4,    /* tensor or buffer of another context or device */
    CK_STATUS_OVERFLOW = 5,           /* a size that overflows the supported index range */
    CK_STATUS_ALLOC_FAILED = 6,       /* host or device allocation failed */
    CK_STATUS_NOT_SUPPORTED = 7,      /* request valid but not available in this build/device */
    CK_STATUS_CUDA_ERROR = 8,         /* CUDA runtime, cuDNN or cuBLAS reported an error */
    CK_STATUS_SINGLE_VALUE_BATCH = 9, /* BN training with one value per channel (N*H*W == 1) */
    CK_STATUS_WORKSPACE_TOO_SMALL = 10,
    CK_STATUS_INTERNAL = 11
} ck_status;

/* A static English description of a status code. Never NULL. */
const char *ck_status_string(ck_status status);

/* Library version at run time, CNNKIT_VERSION encoding. */
int ck_version(void);

/* ---------------------------------------------------------------------------------------------
 * Context
 * ------------------------------------------------------------------------------------------- */
typedef enum ck_device {
    CK_DEVICE_AUTO = 0, /* CUDA when a device is usable, else CPU */
    CK_DEVICE_CPU = 1,
    CK_DEVICE_CUDA = 2
} ck_device;

typedef struct ck_context ck_context;

/* Creates a context. device: CK_DEVICE_*; cuda_ordinal: which GPU for CUDA (ignored for CPU).
 * CK_DEVICE_CUDA when no GPU is usable (or the build has no CUDA) gives CK_STATUS_NOT_SUPPORTED.
 * seed: the RNG seed for dropout masks (see ck_context_set_seed). */
ck_status ck_context_create(ck_context **ctx, ck_device device, int cuda_ordinal, uint64_t seed);
/* Destroys the context; NULL is accepted. Tensors, workspaces, masks and models of it that are
 * still alive are orphaned: their memory is freed with the context, every later call on them
 * fails with CK_STATUS_BAD_PARAM (a call that takes a live context names the orphan in its
 * message), and their destroy call is still needed and safe. */
void ck_context_destroy(ck_context *ctx);

/* The device the context actually runs on (CPU or CUDA, never AUTO). */
ck_device ck_context_device(const ck_context *ctx);
/* 1 when this build and machine can run CUDA, else 0. Cheap after the first call. */
int ck_cuda_available(void);
/* Last error message of this context ("" when none). Valid until the next call on ctx.
 * ctx NULL: the calling thread's last error that had no context to hold it: why its last
 * ck_context_create failed (a failed creation leaves no context to ask), why a call with a NULL
 * context or model, or on an orphaned handle (its context destroyed), was refused; "ctx is NULL"
 * when there is none. */
const char *ck_context_last_error(const ck_context *ctx);
/* One line on the CUDA setup, for logs: the CUDA runtime and driver versions, the cuDNN library
 * actually loaded (cudnnGetVersion) and the one this build was compiled against, cuBLAS, and
 * device cuda_ordinal (name, compute capability, multiprocessors, memory). Needs no context and
 * works without a GPU (the line then says why the device is unusable). Returns SUCCESS when the
 * device could be queried, NOT_SUPPORTED otherwise (no device, CPU-only build); buf (len bytes,
 * 512 is enough) holds the line either way. */
ck_status ck_cuda_describe(int cuda_ordinal, char *buf, size_t len);

ck_status ck_context_set_seed(ck_context *ctx, uint64_t seed);
uint64_t ck_context_seed(const ck_context *ctx);
/* Sets the CUDA stream (a cudaStream_t passed as void*; NULL is the default stream). All kernels of
 * the context run on it. CPU contexts accept only NULL. */
ck_status ck_context_set_stream(ck_context *ctx, void *cuda_stream);
/* The stream set by ck_context_set_stream (NULL = default stream). */
void *ck_context_stream(const ck_context *ctx);
/* Waits until all work queued on the context's stream is finished (no-op on CPU). */
ck_status ck_context_synchronize(ck_context *ctx);
/* Number of CPU threads of every call of this context (the layer calls, and the model calls'
 * loops and OpenBLAS GEMMs: the calling thread's OpenMP team size is set for the call and
 * restored on return); 0 = the OpenMP default (OMP_NUM_THREADS, else every core). At most 4 per
 * online core (at least 64): CK_STATUS_BAD_PARAM beyond, as OpenMP would print and exit, or
 * fault, when it cannot start a team. On a machine other work keeps busy see README, "Busy
 * machines". */
ck_status ck_context_set_cpu_threads(ck_context *ctx, int threads);
/* Caps the host memory the library keeps allocated through this context (tensors and masks of a
 * CPU context, model buffers, per-call scratch, checkpoint buffers), in bytes; 0 = unlimited
 * (the default). A call that would go over the cap fails with CK_STATUS_ALLOC_FAILED and a
 * message, exactly as when the system is out of memory, and changes nothing it was asked to
 * write: use it to bound memory or to test out-of-memory handling. Lowering the cap below what is
 * already allocated frees nothing; later allocations fail until enough is released. Device
 * (cudaMalloc) memory and the context itself are not counted. */
ck_status ck_context_set_host_alloc_limit(ck_context *ctx, size_t bytes);
/* Bytes of host memory the library currently holds through this context (0 for NULL). */
size_t ck_context_host_alloc_bytes(const ck_context *ctx);
/* Device memory a CUDA context holds of its own beside its models' arenas: cuBLAS's workspace
 * (32 MiB from Hopper on, else 4 MiB), which a peer's allocator counts in its peak. 0 for a CPU
 * context or NULL. Not counted: the CUDA context itself and cuDNN's and cuBLAS's handles. */
size_t ck_context_device_bytes(const ck_context *ctx);

/* How a CUDA context picks its cuDNN convolution algorithms (README, "Speed settings"):
 *  - CK_CONV_ALGO_DETERMINISTIC (the default): cuDNN's heuristics, the first deterministic
 *    algorithm of the allowed math; two runs with the same seed give the same bits.
 *  - CK_CONV_ALGO_FASTEST: each direction of each convolution shape is timed once
 *    (cudnnFind*AlgorithmEx, at the largest batch) when the convolution is planned, i.e. at
 *    ck_model_build, and the fastest allowed algorithm is kept, deterministic or not (atomics:
 *    two runs may differ in the last bits). The layout is measured too: each convolution is
 *    timed in NHWC (the layout of cnnkit's device activations) and in NCHW plus the transposes
 *    NCHW needs around it, and NCHW is kept only when that step is more than 5% faster. The
 *    choice is cached in the context: a second model with the same shapes reuses it without
 *    timing again.
 * Takes effect for the convolutions planned after the call: a built model keeps its algorithms.
 * Either way the algorithm's workspace (at most 1 GiB) is part of the model's device arena. A
 * CPU context accepts and stores the setting; it has no effect there (the CPU path is always
 * deterministic). A value outside the enum: CK_STATUS_BAD_PARAM naming "algo". */
typedef enum ck_conv_algo { CK_CONV_ALGO_DETERMINISTIC = 0, CK_CONV_ALGO_FASTEST = 1 } ck_conv_algo;
ck_status ck_context_set_conv_algo(ck_context *ctx, ck_conv_algo algo);
/* The setting (CK_CONV_ALGO_DETERMINISTIC for NULL). */
ck_conv_algo ck_context_conv_algo(const ck_context *ctx);

/* The floating-point math of a CUDA context's convolutions and dense layers:
 *  - CK_MATH_STRICT_FP32 (the default): fp32 FMA only (cuDNN CUDNN_FMA_MATH, cuBLAS
 *    CUBLAS_DEFAULT_MATH): results agree with the CPU within fp32 rounding.
 *  - CK_MATH_TF32: tensor-core TF32 allowed (inputs rounded to a 10-bit mantissa, fp32
 *    accumulation): cuDNN CUDNN_TENSOR_OP_MATH algorithms for the convolutions planned after the
 *    call, cuBLAS CUBLAS_TF32_TENSOR_OP_MATH for every dense GEMM from the next call on.
 *    Expect differences of about 1e-3 relative to strict fp32.
 * A CPU context accepts and stores the setting; it has no effect there (always strict fp32). A
 * value outside the enum: CK_STATUS_BAD_PARAM naming "math". */
typedef enum ck_math { CK_MATH_STRICT_FP32 = 0, CK_MATH_TF32 = 1 } ck_math;
ck_status ck_context_set_math(ck_context *ctx, ck_math math);
/* The setting (CK_MATH_STRICT_FP32 for NULL). */
ck_math ck_context_math(const ck_context *ctx);

/* ---------------------------------------------------------------------------------------------
 * Tensors: 4-D fp32, logical shape (N, C, H, W), memory layout NCHW or NHWC.
 * ------------------------------------------------------------------------------------------- */
typedef enum ck_layout { CK_LAYOUT_NCHW = 0, CK_LAYOUT_NHWC = 1 } ck_layout;

typedef struct ck_tensor ck_tensor;

/* Allocates an uninitialized tensor on the context's device. All dimensions must be >= 1 and the
 * element count must fit in 31 bits (CK_STATUS_OVERFLOW otherwise). */
ck_status ck_tensor_create(ck_context *ctx, ck_tensor **t, ck_layout layout, int n, int c, int h,
                           int w);
void ck_tensor_destroy(ck_tensor *t);

/* Copies host memory (count floats, in the tensor's own layout) into the tensor. The values are
 * not checked (NaN and Inf are copied as they are): see ck_tensor_check_finite. */
ck_status ck_tensor_upload(ck_context *ctx, ck_tensor *t, const float *host, size_t count);
/* Copies the tensor into host memory (count floats, the tensor's layout). Synchronizes. */
ck_status ck_tensor_download(ck_context *ctx, const ck_tensor *t, float *host, size_t count);
/* Sets every element to value. */
ck_status ck_tensor_fill(ck_context *ctx, ck_tensor *t, float value);
/* Copies src into dst; same logical shape; layouts may differ (converts). */
ck_status ck_tensor_copy(ck_context *ctx, const ck_tensor *src, ck_tensor *dst);

/* CK_STATUS_SUCCESS when every element is finite, else CK_STATUS_BAD_PARAM with the index of the
 * first NaN or Inf (in the tensor's layout) in *index (optional) and the message. The layer calls
 * do not check their tensor inputs (README, Guarantees); this is the check to run where data
 * may be bad. On a CUDA context it reads the tensor through a bounded host buffer
 * (synchronizes). */
ck_status ck_tensor_check_finite(ck_context *ctx, const ck_tensor *t, size_t *index);

ck_layout ck_tensor_layout(const ck_tensor *t);
/* Logical shape; any output pointer may be NULL. */
void ck_tensor_shape(const ck_tensor *t, int *n, int *c, int *h, int *w);
size_t ck_tensor_count(const ck_tensor *t);
/* Raw device (or host, for CPU contexts) pointer to the data, for interop. */
float *ck_tensor_data(ck_tensor *t);
const float *ck_tensor_data_const(const ck_tensor *t);

/* ---------------------------------------------------------------------------------------------
 * Workspaces: scratch memory on the context's device, sized by the *_workspace_size queries.
 * ------------------------------------------------------------------------------------------- */
typedef struct ck_workspace ck_workspace;
ck_status ck_workspace_create(ck_context *ctx, ck_workspace **ws, size_t bytes);
void ck_workspace_destroy(ck_workspace *ws);
size_t ck_workspace_size(const ck_workspace *ws);

/* ---------------------------------------------------------------------------------------------
 * Dropout (element-wise) and SpatialDropout (one draw per sample and channel).
 *
 * Masks come from Philox4x32-10 keyed by the context seed and counted by (offset, position):
 *  - spatial: draw index g = n*C + c; word g % 4 of philox(counter = {g/4, offset}).
 *  - element: draw index over (n, c, h, w/4); word w % 4 of that call (see docs in ck_math.h).
 * A unit is kept when its 32-bit word u satisfies u >= threshold(rate) = round(rate * 2^32),
 * and kept values are scaled by 1/(1 - rate) (Keras/PyTorch inverted dropout). Exactly:
 * y = x * (keep ? s : 0.0f) with s = 1.0f / (1.0f - rate) evaluated in fp32, one multiply per
 * element (so a dropped negative x gives -0.0f and a dropped NaN stays NaN, as in PyTorch). The
 * mask depends on neither layout, device nor launch shape: it is bit-identical on CPU and GPU, NCHW
 * and NHWC. The caller picks offset (e.g. the training step); backward with the same (seed, offset,
 * rate) regenerates the forward mask, or reads a stored ck_mask.
 * sample0: the tensor's first sample is sample sample0 of a larger batch (a data-parallel rank's
 * shard), and its sample n draws the mask of that batch's sample sample0 + n (0: a whole batch).
 * ------------------------------------------------------------------------------------------- */
typedef enum ck_dropout_kind { CK_DROPOUT_SPATIAL = 0, CK_DROPOUT_ELEMENT = 1 } ck_dropout_kind;

typedef struct ck_dropout_desc {
    float rate;       /* probability of dropping, in [0, 1) */
    uint64_t offset;  /* RNG counter offset: use a new one for every training step */
    uint64_t sample0; /* the first sample's index in the whole batch (0 unless sharded) */
} ck_dropout_desc;

typedef enum ck_mode { CK_MODE_INFERENCE = 0, CK_MODE_TRAINING = 1 } ck_mode;

/* A stored mask: N*C bytes (spatial) or N*C*H*W bits (element), on the context's device. */
typedef struct ck_mask ck_mask;
ck_status ck_mask_create(ck_context *ctx, ck_mask **mask, ck_dropout_kind kind, int n, int c, int h,
                         int w);
void ck_mask_destroy(ck_mask *mask);
/* Copies the mask to host as one byte (0 dropped, 1 kept) per unit: N*C bytes for spatial
 * (index n*C + c), N*C*H*W bytes for element (NCHW order whatever the tensor layout). */
ck_status ck_mask_download(ck_context *ctx, const ck_mask *mask, uint8_t *host, size_t count);

/* The mask as a pure function, computed on the host without a context: keep[] receives N*C
 * (spatial) or N*C*H*W (element, NCHW order) bytes. The same function the kernels use. Errors
 * (the message in ck_context_last_error(NULL)): CK_STATUS_BAD_PARAM (kind, desc, keep, rate, a
 * dimension < 1), CK_STATUS_OVERFLOW (more units than a tensor may hold, INT32_MAX),
 * CK_STATUS_SHAPE_MISMATCH (count is not the number of units). */
ck_status ck_dropout_mask_host(ck_dropout_kind kind, uint64_t seed, const ck_dropout_desc *desc,
                               int n, int c, int h, int w, uint8_t *keep, size_t count);

/* y = x * mask / (1 - rate) in training, y = x in inference. x and y: same shape and layout;
 * y may alias x. mask_out: optional, receives the mask (must match kind and shape). */
ck_status ck_spatial_dropout_forward(ck_context *ctx, const ck_dropout_desc *desc, ck_mode mode,
                                     const ck_tensor *x, ck_tensor *y, ck_mask *mask_out);
/* dx = dy * mask / (1 - rate) (training) or dy (inference). mask_in: optional stored mask; NULL
 * regenerates it from (seed, offset). dx may alias dy. */
ck_status ck_spatial_dropout_backward(ck_context *ctx, const ck_dropout_desc *desc, ck_mode mode,
                                      const ck_tensor *dy, ck_tensor *dx, const ck_mask *mask_in);
ck_status ck_dropout_forward(ck_context *ctx, const ck_dropout_desc *desc, ck_mode mode,
                             const ck_tensor *x, ck_tensor *y, ck_mask *mask_out);
ck_status ck_dropout_backward(ck_context *ctx, const ck_dropout_desc *desc, ck_mode mode,
                              const ck_tensor *dy, ck_tensor *dx, const ck_mask *mask_in);

/* ---------------------------------------------------------------------------------------------
 * BatchNorm with fused activation and optional SpatialDropout channel scale.
 *
 * Training forward (per channel c, statistics over N*H*W values):
 *   mean, var_biased = batch statistics;   invstd = 1 / sqrt(var_biased + epsilon)
 *   y = act(gamma * (x - mean) * invstd + beta) [* spatial dropout scale s(n, c)]
 *   running_mean += average_factor * (mean - running_mean)
 *   running_var  += average_factor * (v - running_var),  v = var_biased or var_unbiased
 * Inference: the same with running_mean/running_var in place of the batch statistics.
 * Backward recomputes the pre-activation from x and the saved mean/invstd: no stored copy.
 * ------------------------------------------------------------------------------------------- */
/* Activations. BatchNorm fuses NONE and RELU; the layer API (model.h) accepts all of them. */
typedef enum ck_activation {
    CK_ACT_NONE = 0, /* Keras 'linear' */
    CK_ACT_RELU = 1,
    CK_ACT_SIGMOID = 2,
    CK_ACT_TANH = 3,
    CK_ACT_SOFTMAX = 4,    /* over channels (the last axis in Keras) */
    CK_ACT_ELU = 5,        /* alpha 1 */
    CK_ACT_LEAKY_RELU = 6, /* alpha 0.3 (Keras LeakyReLU default) unless given */
    CK_ACT_GELU = 7,       /* exact (erf) form, Keras approximate=False */
    CK_ACT_SWISH = 8       /* x * sigmoid(x) */
} ck_activation;

typedef enum ck_bn_convention {
    CK_BN_KERAS = 0,  /* momentum 0.99 (moving = 0.99 moving + 0.01 batch), eps 1e-3, biased var */
    CK_BN_PYTORCH = 1 /* momentum 0.1 (running = 0.9 running + 0.1 batch), eps 1e-5, unbiased */
} ck_bn_convention;

typedef struct ck_bn_desc {
    float epsilon;                /* > 0 */
    float average_factor;         /* weight of the batch statistic in the running update, [0, 1] */
    int unbiased_running_var;     /* 1: running_var takes var * M / (M - 1) (PyTorch) */
    ck_activation activation;     /* applied after the affine transform */
    int single_value_use_running; /* N*H*W == 1 in training: 0 = CK_STATUS_SINGLE_VALUE_BATCH,
                                     1 = normalize with the running stats and leave them as is,
                                     2 = the batch statistics as Keras: variance 0, so the output
                                     is beta (then the activation), dx 0, the running variance
                                     moves toward 0 (biased running variance only) */
} ck_bn_desc;

/* Fills desc with a convention's defaults (activation NONE, single_value_use_running 0).
 * To set a momentum by hand: Keras momentum m gives average_factor = 1 - m; PyTorch momentum m
 * gives average_factor = m. */
ck_status ck_bn_desc_init(ck_bn_desc *desc, ck_bn_convention convention);

/* Scratch bytes needed by training forward/backward for x's shape (0 on CPU). When it is 0,
 * ws may be NULL. */
ck_status ck_batchnorm_workspace_size(ck_context *ctx, const ck_tensor *x, size_t *bytes);

/* Parameter tensors (gamma, beta, running_mean, running_var, saved_mean, saved_invstd, dgamma,
 * dbeta) have shape (1, C, 1, 1), any layout. spatial_dropout: optional (NULL = none), applies
 * SpatialDropout after the activation in the same pass, with the mask of
 * ck_spatial_dropout_forward for the same (seed, offset, rate). y may alias x. */
ck_status ck_batchnorm_forward_training(ck_context *ctx, const ck_bn_desc *desc, const ck_tensor *x,
                                        const ck_tensor *gamma, const ck_tensor *beta,
                                        ck_tensor *running_mean, ck_tensor *running_var,
                                        ck_tensor *saved_mean, ck_tensor *saved_invstd,
                                        const ck_dropout_desc *spatial_dropout, ck_tensor *y,
                                        ck_workspace *ws);
ck_status ck_batchnorm_forward_inference(ck_context *ctx, const ck_bn_desc *desc,
                                         const ck_tensor *x, const ck_tensor *gamma,
                                         const ck_tensor *beta, const ck_tensor *running_mean,
                                         const ck_tensor *running_var, ck_tensor *y);
/* Gradients of the training forward (same desc, x, gamma, beta, saved stats, spatial_dropout).
 * dy is the gradient of y; dx may alias x or dy. */
ck_status ck_batchnorm_backward(ck_context *ctx, const ck_bn_desc *desc, const ck_tensor *x,
                                const ck_tensor *dy, const ck_tensor *gamma, const ck_tensor *beta,
                                const ck_tensor *saved_mean, const ck_tensor *saved_invstd,
                                const ck_dropout_desc *spatial_dropout, ck_tensor *dx,
                                ck_tensor *dgamma, ck_tensor *dbeta, ck_workspace *ws);

#ifdef __cplusplus
}
#endif
#endif /* CNNKIT_CNNKIT_H */
