/*
 * cnnkit model API: Keras-style layers, Sequential and functional models (a layer graph),
 * training and checkpoints.
 * Shapes follow Keras: an image is H x W x C (channels last); Flatten uses Keras (NHWC) order so
 * weights are comparable with Keras. Kernels are stored as Keras does: conv HWIO, dense (in, out).
 */
#ifndef CNNKIT_MODEL_H
#define CNNKIT_MODEL_H

#include "cnnkit/cnnkit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Layer descriptors
 * ------------------------------------------------------------------------------------------- */
typedef enum ck_layer_type {
    CK_LAYER_CONV2D = 0,
    CK_LAYER_MAXPOOL2D = 1,
    CK_LAYER_AVGPOOL2D = 2,
    CK_LAYER_GLOBALAVGPOOL2D = 3,
    CK_LAYER_DENSE = 4,
    CK_LAYER_FLATTEN = 5,
    CK_LAYER_BATCHNORM = 6,
    CK_LAYER_ACTIVATION = 7,
    CK_LAYER_DROPOUT = 8,
    CK_LAYER_SPATIAL_DROPOUT2D = 9,
    CK_LAYER_ZEROPADDING2D = 10,
    CK_LAYER_ADD = 11,
    CK_LAYER_CONCATENATE = 12,
    CK_LAYER_RESCALING = 13,
    CK_LAYER_GLOBALMAXPOOL2D = 14, /* the max of each channel: (H, W, C) -> (C) */
    CK_LAYER_TYPE_COUNT = 15
} ck_layer_type;

typedef enum ck_padding { CK_PADDING_VALID = 0, CK_PADDING_SAME = 1 } ck_padding;

/* The most tensors one layer reads (Add, Concatenate), and the model input as a layer input. */
#define CK_MAX_LAYER_INPUTS 4
#define CK_LAYER_INPUT_MODEL (-1)

/* One layer. ck_layer_desc_init fills Keras defaults for a type; set what differs.
 * Fields a type does not use are ignored. */
/* Keras initializers of Conv2D and Dense weights (Keras's VarianceScaling family: a uniform in
 * [-limit, limit) with limit = sqrt(3 scale / fan), or a normal truncated at two standard
 * deviations whose standard deviation is sqrt(scale / fan); glorot: scale 1, fan the mean of
 * fan_in and fan_out; he: scale 2, fan_in; lecun: scale 1, fan_in). Drawn from the context seed,
 * so a model starts from the same weights run to run; not Keras's random numbers. */
typedef enum ck_initializer {
    CK_INIT_DEFAULT = 0, /* the weight's Keras default: glorot_uniform kernel, zeros bias */
    CK_INIT_GLOROT_UNIFORM = 1,
    CK_INIT_GLOROT_NORMAL = 2,
    CK_INIT_HE_UNIFORM = 3,
    CK_INIT_HE_NORMAL = 4,
    CK_INIT_LECUN_UNIFORM = 5,
    CK_INIT_LECUN_NORMAL = 6,
    CK_INIT_ZEROS = 7,
    CK_INIT_ONES = 8
} ck_initializer;

typedef struct ck_layer_desc {
    ck_layer_type type;
    char name[48]; /* "" = automatic Keras-style name (conv2d, conv2d_1, ...); at most 47 bytes */
    int units;     /* Conv2D filters, Dense units */
    int kernel_h, kernel_w;        /* Conv2D kernel_size; MaxPooling/AveragePooling pool_size */
    int stride_h, stride_w;        /* strides; 0 = default (1 for conv, pool_size for pooling) */
    ck_padding padding;            /* default valid */
    int use_bias;                  /* default 1 */
    ck_activation activation;      /* Conv2D/Dense inline activation, Activation layer */
    float alpha;                   /* LeakyReLU slope / ELU alpha. ck_layer_desc_init sets 0.3 (the
                                      LeakyReLU default): set 1.0 yourself for ELU */
    float rate;                    /* Dropout, SpatialDropout2D */
    float momentum;                /* BatchNormalization, Keras meaning (default 0.99) */
    float epsilon;                 /* BatchNormalization (default 1e-3) */
    int input_h, input_w, input_c; /* optional input_shape of the first layer (0 = none) */
    int input_flat; /* with it: the input is a vector (n,), Keras's Input(shape=(n,)), held as
                       input_h = input_w = 1, input_c = n (0: an image, H x W x C) */
    int pad_top, pad_bottom; /* ZeroPadding2D rows added above and below (default 1) */
    int pad_left, pad_right; /* ZeroPadding2D columns added left and right (default 1) */
    int synchronized;        /* BatchNormalization: statistics over all ranks of a model
                                with a communicator (cnnkit/comm.h); Keras
                                SyncBatchNormalization or synchronized=True (default 0) */
    /* The layer graph (Keras functional models). num_inputs 0 (the default): the layer reads the
     * previous layer's output (layer 0: the model input), as in a Sequential model. Otherwise it
     * reads inputs[0 .. num_inputs), each the index of an EARLIER layer or CK_LAYER_INPUT_MODEL;
     * Add and Concatenate (channel axis) read two or more, every other type one. The model's output
     * is its last layer, and every other layer must be read by a later one (ck_model_build says
     * which is not). */
    int num_inputs;
    int inputs[CK_MAX_LAYER_INPUTS];
    float scale, offset; /* Rescaling: y = x * scale + offset (default 1 and 0), Keras's float32 */
    /* The Keras class the layer was written as, where Keras has several for one type: "ReLU",
     * "LeakyReLU", "ELU" or "Softmax" for an Activation layer ("": the type's own). It names
     * the layer (re_lu, re_lu_1, ...), its summary row and its class in .keras files; the
     * computation is the type's. A class that cannot say the layer's settings (a Softmax
     * class on a ReLU) is refused by ck_model_add. */
    char keras_class[24];
    /* Conv2D and Dense: how the build draws the kernel and the bias (CK_INIT_DEFAULT: Keras's
     * defaults, glorot_uniform kernels and zero biases) */
    ck_initializer kernel_initializer, bias_initializer;
} ck_layer_desc;

ck_status ck_layer_desc_init(ck_layer_desc *desc, ck_layer_type type);
/* The first of layers[0 .. count) that reads anything but the layer before it (the list is a
 * layer graph, not a Sequential stack), or -1; -1 also for a NULL list. */
int ck_layers_graph_layer(const ck_layer_desc *layers, int count);
/* Keras class name of a type ("Conv2D", "MaxPooling2D", ...); NULL when unknown. */
const char *ck_layer_type_name(ck_layer_type type);
/* Keras activation name ("relu", "linear", ...) and the reverse; NULL / -1 when unknown. */
const char *ck_activation_name(ck_activation act);
int ck_activation_from_name(const char *name);
/* Keras initializer name ("he_normal", "zeros", ...; CK_INIT_DEFAULT: NULL) and the reverse,
 * which also takes Keras's class names ("HeNormal"); -1 when unknown. */
const char *ck_initializer_name(ck_initializer init);
int ck_initializer_from_name(const char *name);

/* ---------------------------------------------------------------------------------------------
 * Compile options: optimizer and loss (Keras defaults)
 * ------------------------------------------------------------------------------------------- */
typedef enum ck_optimizer_type {
    CK_OPT_ADAM = 0,
    CK_OPT_SGD = 1,
    CK_OPT_RMSPROP = 2, /* Keras's RMSprop, the default optimizer of Keras's compile() */
    CK_OPT_ADADELTA = 3 /* Keras's Adadelta (the optimizer of Keras-2's mnist_cnn.py) */
} ck_optimizer_type;

typedef struct ck_optimizer_desc {
    ck_optimizer_type type;
    float learning_rate; /* Adam 1e-3, SGD 1e-2, RMSprop 1e-3, Adadelta 1e-3 (Keras 3's) */
    float beta1, beta2;  /* Adam 0.9, 0.999 */
    float epsilon;       /* Adam 1e-7, RMSprop and Adadelta 1e-7 (inside the square roots) */
    float momentum;      /* SGD 0, RMSprop 0 (plain momentum on the increment) */
    int nesterov;        /* SGD 0 */
    float weight_decay;  /* decoupled, on every trainable array (kernels, biases, BN gamma and
                            beta), as Keras 3: p -= lr * wd * p before the update; 0 = none */
    float rho;           /* RMSprop 0.9, Adadelta 0.95: the moving averages' decay */
    int centered;        /* RMSprop 0: 1 divides by the gradients' estimated variance (Keras
                            centered=True); not with momentum > 0 (cnnkit keeps two state arrays
                            per parameter, Keras three) */
} ck_optimizer_desc;

ck_status ck_optimizer_desc_init(ck_optimizer_desc *desc, ck_optimizer_type type);

/* ---------------------------------------------------------------------------------------------
 * Keras-syntax model text (the subset people paste): see docs in README.
 * ------------------------------------------------------------------------------------------- */
typedef struct ck_keras_model {
    ck_layer_desc *layers; /* count entries, owned: free with ck_keras_model_free */
    int count;
    int has_compile;             /* model.compile(...) was seen */
    ck_optimizer_desc optimizer; /* from compile, else Adam defaults */
    char loss[64];               /* loss name from compile, "" when none */
    char warnings[2048];         /* recoveries made (e.g. unbalanced parentheses), one per line */
    /* mixed_precision.set_global_policy(...) was seen: precision is a ck_precision (FP32 for
     * 'float32', BF16 for 'mixed_bfloat16') */
    int has_precision, precision;
    /* the loss's from_logits (1: the model's outputs are logits; Keras's default 0: they are
     * probabilities, so the model must end in softmax: cnnkit's loss is the cross-entropy of the
     * softmax of what precedes the model's final softmax, or of its outputs when it has none) */
    int from_logits;
    /* name= of the model (Model / Sequential) and of its Input, "" when not given */
    char name[48], input_name[48];
} ck_keras_model;

/* Parses text. On failure returns CK_STATUS_BAD_PARAM (or CK_STATUS_ALLOC_FAILED) and writes
 * "line L, column C: what was expected" into err (err_len bytes, may be 0); out is untouched on
 * failure. On success *out is overwritten: free an earlier result first. warnings holds one line
 * per recovery, '\n'-separated, ending in "..." when it fills up. A functional model's layers
 * come in Keras's order (its model.layers, the output last), named as Keras names them in the
 * order they were created; a Sequential model's in the order added, named at build. */
ck_status ck_keras_parse(const char *text, ck_keras_model *out, char *err, size_t err_len);
void ck_keras_model_free(ck_keras_model *m);
/* The same from a Keras file's architecture (a .keras archive's config.json, a legacy .h5's
 * model_config; weights are not read): the layers, the input shape on layer 0, the optimizer and
 * loss of its compile config. Errors go to ctx's last error (naming the layer and option as
 * ck_model_load_keras does); out is untouched on failure, freed with ck_keras_model_free. */
ck_status ck_keras_file_parse(ck_context *ctx, const char *path, ck_keras_model *out);

/* ---------------------------------------------------------------------------------------------
 * Model: a Sequential stack, or a layer graph (ck_layer_desc.num_inputs)
 * ------------------------------------------------------------------------------------------- */
typedef struct ck_model ck_model;

/* A model belongs to a context; its parameters and activations live on the context's device
 * (the CPU, or a GPU on a CUDA context of a build with CUDA). */
ck_status ck_model_create(ck_context *ctx, ck_model **model);
void ck_model_destroy(ck_model *model);
/* Appends a layer (copied). Only before ck_model_build. */
ck_status ck_model_add(ck_model *model, const ck_layer_desc *layer);
/* Builds the model from the text of a Keras Sequential or functional model (ck_keras_parse +
 * add + compile options, its dtype policy and names). err receives parse errors ("line L, column C:
 * ...") and warnings. */
ck_status ck_model_from_keras_text(ck_context *ctx, const char *text, ck_model **model, char *err,
                                   size_t err_len);

/* Infers every shape for inputs of h x w x c (0s: take the first layer's input_shape), allocates
 * parameters (each Conv2D / Dense layer's initializers, by default glorot_uniform kernels and zero
 * biases; BN gamma 1 / beta 0 / moving 0 and 1; random ones from the context seed) and plans
 * buffers for batches of up to max_batch samples. */
ck_status ck_model_build(ck_model *model, int h, int w, int c, int max_batch);

typedef struct ck_param_counts {
    long long total, trainable, non_trainable;
} ck_param_counts;
ck_status ck_model_param_counts(const ck_model *model, ck_param_counts *counts);
/* Writes the Keras summary table (NUL-terminated) into buf, followed by the execution plan
 * ("Execution plan: K nodes for L layers", then one line per node naming the layers it runs
 * together, e.g. "batch_normalization + activation  [BN+ReLU, one node: ...]"; "(moved)" marks
 * a layer run after a layer that follows it in the user's order, by an exact reordering);
 * *needed (optional) gets the size including the NUL. A too-small buf gives CK_STATUS_BAD_PARAM
 * and *needed. */
ck_status ck_model_summary(const ck_model *model, char *buf, size_t len, size_t *needed);
int ck_model_num_layers(const ck_model *model);
/* Execution planning (default on), chosen before ck_model_build: the planner maps the layers
 * onto fewer nodes with rewrites that give the same floats forward and backward, with the same
 * dropout masks: BatchNormalization + ReLU (+ SpatialDropout2D as the BN kernel's channel scale)
 * run as one node, a Dropout/SpatialDropout2D after a pooling layer runs in place inside the
 * pooling node, and a ReLU is moved across an adjacent MaxPooling2D or Dropout where that lets
 * it fuse (or run on the pooled tensor). The fused layers' own outputs are not stored (less
 * activation memory). Parameters, checkpoints, get/set_weights, dropout masks and the summary
 * table do not depend on it. enable = 0 runs one node per layer (per inline activation), e.g.
 * to compare. CPU and CUDA contexts run the same plan (on CUDA the BN+ReLU(+SpatialDropout)
 * node is one device kernel). After build: CK_STATUS_BAD_PARAM. */
ck_status ck_model_set_planning(ck_model *model, int enable);
/* Numeric precision of training and inference (issue 16; docs/precision.md), chosen before
 * ck_model_build (after it: CK_STATUS_BAD_PARAM):
 *  - CK_PRECISION_FP32 (the default): fp32 everywhere.
 *  - CK_PRECISION_TF32: fp32 storage, TF32 tensor-core convolutions and dense GEMMs. On a CUDA
 *    context it sets the context's math (ck_context_set_math, CK_MATH_TF32; FP32 sets it back to
 *    CK_MATH_STRICT_FP32), which every model of that context shares. A CPU context stores it
 *    without effect, as ck_context_set_math does there.
 *  - CK_PRECISION_BF16: activations and gradients stored rounded to bfloat16 (nearest even),
 *    fp32 math, master weights, optimizer state, BN statistics and loss. On a CUDA context the
 *    activations are bf16 words and convolutions and dense layers run on the bf16 tensor cores
 *    (it sets the context's math to CK_MATH_STRICT_FP32, as FP32 does); ck_model_build refuses
 *    it (CK_STATUS_NOT_SUPPORTED) on a GPU below compute capability 8.0 or when the logits do not
 *    come from a Dense layer. On the CPU an exact emulation (docs/precision.md).
 * A value outside the enum: CK_STATUS_BAD_PARAM naming "precision". */
typedef enum ck_precision {
    CK_PRECISION_FP32 = 0,
    CK_PRECISION_TF32 = 1,
    CK_PRECISION_BF16 = 2
} ck_precision;
ck_status ck_model_set_precision(ck_model *model, ck_precision precision);
/* The setting (CK_PRECISION_FP32 for NULL). */
ck_precision ck_model_precision(const ck_model *model);
/* The model's name and its input's (Keras's name= of Model / Sequential and of Input), shown by
 * ck_model_summary and written to .keras files. NULL leaves one as it is, "" restores Keras's
 * default ("sequential" or "functional"; "input_layer"). A name has at most 47 bytes (UTF-8) and
 * no '/' (CK_STATUS_BAD_PARAM naming the argument); ck_model_build refuses an input name that a
 * layer has too. */
ck_status ck_model_set_name(ck_model *model, const char *name, const char *input_name);
/* The names in effect, defaults filled in ("" for NULL); valid while the model lives and its
 * names are not set again. The default model name follows the layers (a layer reading named
 * inputs makes a "functional" model). */
const char *ck_model_name(const ck_model *model);
const char *ck_model_input_name(const ck_model *model);
/* "fp32", "tf32" or "bf16" (the CLI's --precision words); "?" outside the enum. */
const char *ck_precision_name(ck_precision precision);
/* How exact a rewrite of a layer order is, weakest last (the rewrites and their levels are
 * listed in src/host/algebra/algebra.c). The planner applies only CK_EXACT_VALUES or better; the
 * order study names the level of the equivalences it finds (ck_study_variant.exactness). */
typedef enum ck_exactness {
    CK_EXACT_BITS = 0,    /* forward and backward give the same bits */
    CK_EXACT_VALUES = 1,  /* the same values; a zero gradient may change its sign */
    CK_EXACT_FORWARD = 2, /* the forward is equal; the backward may differ */
    CK_EXACT_MATH = 3,    /* equal in exact arithmetic only: float rounding differs */
    CK_EXACT_NONE = 4     /* not equal */
} ck_exactness;
/* Number of executed nodes of a built model (a node runs one layer, or several fused ones;
 * 0 when not built). */
int ck_model_num_nodes(const ck_model *model);

/* How each Conv2D of a built model runs, one line per convolution node: "<layer name>: <plan>".
 * On a CUDA context the plan names cuDNN's layout (NHWC, or NCHW as the fallback), the
 * algorithm number of each direction (forward, backward-data, backward-filter; cuDNN's enum
 * values), their math type (fma: strict fp32; tensor-op / default: TF32 allowed), the algorithm
 * workspace, and under CK_CONV_ALGO_FASTEST the timed milliseconds of each; the settings are the
 * context's at ck_model_build (ck_context_set_conv_algo, ck_context_set_math). On the CPU:
 * "CPU im2col + OpenBLAS GEMM, strict fp32, deterministic". buf, len and *needed as in
 * ck_model_summary (a model without convolutions gives ""). */
ck_status ck_model_conv_algorithms(const ck_model *model, char *buf, size_t len, size_t *needed);

/* Memory a built model holds, planned once at ck_model_build for max_batch samples (a CPU
 * training step adds only small per-channel scratch in its BatchNorm and SpatialDropout calls). */
typedef struct ck_model_memory {
    size_t activation_bytes; /* node outputs kept for the backward pass (the plan's nodes; a
                                fused layer's own output is not stored): on the device for a
                                CUDA model, else on the host */
    size_t host_bytes;       /* host buffers: parameters, gradients, optimizer moments, BN
                                statistics, and on the CPU activations, gradient buffers and the
                                convolution workspace */
    size_t device_bytes;     /* the device arena of a CUDA model (parameters, gradients,
                                optimizer state, activations, gradient buffers, batch staging,
                                workspace: everything a step touches), 0 on the CPU; the
                                context holds more: cuDNN's and cuBLAS's handles, and cuBLAS's
                                workspace (32 MiB from Hopper on, else 4 MiB), which
                                PyTorch's peak memory counts */
} ck_model_memory;
/* Fills *mem; CK_STATUS_BAD_PARAM when the model is not built or mem is NULL. */
ck_status ck_model_memory_usage(const ck_model *model, ck_model_memory *mem);

/* Training-step profile. ck_model_set_profiling(m, 1) starts a new profile (figures reset):
 * every later successful ck_model_train_step times each planned node's forward and backward
 * pass, the optimizer update and the whole step (failed steps, evaluate and predict are not
 * counted). On a CUDA context the stream is drained around every node, so a profiled step is
 * slower than a plain one: the profile says where the time goes, bench_train how fast a step
 * is. ck_model_set_profiling(m, 0) stops timing and keeps the figures. Any time, built or not;
 * profiling changes no result. */
ck_status ck_model_set_profiling(ck_model *model, int enable);
typedef struct ck_profile_row {
    char what[160];     /* the node as in the summary's plan ("batch_normalization + activation
                           [BN+ReLU, ...]"), "optimizer (adam)" or "other (loss, input checks,
                           copies)" */
    int node;           /* plan index, -1 for the optimizer and other rows */
    double forward_ms;  /* mean per profiled step (optimizer and other: their whole time) */
    double backward_ms; /* mean per profiled step (0 for the optimizer and other rows) */
    /* The roofline (docs/performance.md), node rows only, else 0. ABI: these fields were added
     * at the end; a caller built against the older, shorter struct must be rebuilt.
     * The node's work in a profiled step at its mean batch: FLOPs (conv and dense multiply-adds,
     * 2 per MAC; other kinds 0) and minimum DRAM bytes (each tensor read once, each result
     * written once; src/host/model/roofline.c says what each kind counts). Known on any device,
     * 0 before the first profiled step. */
    double forward_flops, backward_flops, forward_bytes, backward_bytes;
    /* The time that work takes at the device's peak compute (fp32 FMA, or the TF32 / BF16 tensor
     * cores the model's math uses) or peak DRAM bandwidth, whichever is longer: estimates from
     * the CUDA device attributes. 0 when unknown: a CPU context, a GPU not in the peak table. */
    double roofline_fwd_ms, roofline_bwd_ms;
} ck_profile_row;
/* The profile of a built model: one row per planned node, then the optimizer row, then the
 * other row (step time minus the rows above; >= 0 up to clock resolution). rows may be NULL
 * with cap 0 to ask for *count (the number of rows). *steps (optional): profiled steps;
 * *step_ms (optional): mean wall time of a profiled step (the sum of all rows). */
ck_status ck_model_profile(const ck_model *model, ck_profile_row *rows, int cap, int *count,
                           long long *steps, double *step_ms);
/* CUDA graphs of the training step (issue 14). On a CUDA context, CK_CUDA_GRAPH_AUTO (the
 * default) captures a ck_model_train_step's device part (forward, loss, backward, gradient check,
 * optimizer update) once per batch size as a CUDA graph, after one eager step at that size, and
 * replays it with one launch per step: the staged batch and a small per-step packet (the step
 * counter that keys the dropout masks, Adam's alpha) are written to the device before each
 * launch, so a replayed step computes the same bits as an eager one. At most 4 batch sizes are
 * held (the least recently used goes first). Steps run eagerly, as with CK_CUDA_GRAPH_OFF, when a
 * graph cannot apply: a data-parallel step (a communicator), profiling, ck_model_loss_and_grads;
 * graphs are dropped and captured again when the context seed, the context math or the optimizer
 * changes. When a capture or an instantiation fails, the model's graphs are dropped, the step and
 * the model's later steps run eagerly, and ck_model_cuda_graph_info's note says why (setting the
 * mode again tries anew). Any time, built or not; a CPU context accepts the setting and has no
 * graphs. A mode outside the enum: CK_STATUS_BAD_PARAM naming "mode". */
typedef enum ck_cuda_graph_mode {
    CK_CUDA_GRAPH_AUTO = 0,
    CK_CUDA_GRAPH_OFF = 1
} ck_cuda_graph_mode;
ck_status ck_model_set_cuda_graph(ck_model *model, ck_cuda_graph_mode mode);
typedef struct ck_cuda_graph_info {
    ck_cuda_graph_mode mode;
    int last_step_graph; /* 1: the last training step's device part ran as a graph replay */
    int graphs;          /* graphs held now (one per batch size) */
    long long captures;  /* graphs captured since the mode was last set */
    long long replays;   /* training steps run as a graph replay since then */
    char note[256];      /* why the last step ran eagerly (warm-up, off, profiling, a failed
                            capture with CUDA's message), "" when it was a replay */
} ck_cuda_graph_info;
/* Fills *info; CK_STATUS_BAD_PARAM naming "info" when it is NULL. */
ck_status ck_model_cuda_graph_info(const ck_model *model, ck_cuda_graph_info *info);
/* The last successful ck_model_train_step's wall time (*step_s) and its host part (*host_s):
 * from the call until the step's one wait for the device began, i.e. the checks, the batch's
 * upload and every launch (issue 14 asks it to be <= 5% of the step at batch 128); on the CPU
 * the two are equal. A data-parallel step's packets and profiling's drains wait inside the host
 * part. Seconds. CK_STATUS_BAD_PARAM when an argument is NULL or no step ran. */
ck_status ck_model_last_step_time(const ck_model *model, double *host_s, double *step_s);
/* Output shape of layer i (h, w, c; Dense/Flatten outputs have h = w = 1). */
ck_status ck_model_layer_shape(const ck_model *model, int i, int *h, int *w, int *c);
ck_status ck_model_layer_desc(const ck_model *model, int i, ck_layer_desc *desc);
int ck_model_num_classes(const ck_model *model);
/* The built model's input shape (h, w, c): what every sample handed to train, evaluate and
 * predict must be (h*w*c floats each). CK_STATUS_BAD_PARAM when the model is not built or an
 * output pointer is NULL. */
ck_status ck_model_input_shape(const ck_model *model, int *h, int *w, int *c);

/* Optimizer (default: Adam with Keras defaults). Resets the optimizer state. */
ck_status ck_model_set_optimizer(ck_model *model, const ck_optimizer_desc *opt);

typedef struct ck_step_result {
    double loss; /* mean sparse categorical cross-entropy over the batch */
    int correct; /* samples whose argmax equals the label */
    int count;   /* samples */
} ck_step_result;

/* One training step on n samples (n <= max_batch): x is n*h*w*c floats, channels last, in host
 * memory; labels in [0, classes). Dropout masks use the context seed and the step counter. */
ck_status ck_model_train_step(ck_model *model, const float *x, const int32_t *labels, int n,
                              ck_step_result *result);
/* Inference-mode loss and accuracy over count samples, in batches of max_batch. Non-finite
 * inputs, and outputs that overflow, are refused (CK_STATUS_BAD_PARAM naming the sample). */
ck_status ck_model_evaluate(ck_model *model, const float *x, const int32_t *labels, int count,
                            ck_step_result *result);
/* Inference-mode class probabilities: probs gets count * classes floats. Non-finite inputs or
 * outputs: CK_STATUS_BAD_PARAM, as evaluate. */
ck_status ck_model_predict(ck_model *model, const float *x, int count, float *probs);
/* Training steps taken so far. */
long long ck_model_step(const ck_model *model);

/* Checkpoints: parameters, BN moving statistics, optimizer state, step and fit position
 * (ck_fit_state), with the layer list, in a versioned file with a CRC-32 (version 3, which
 * records the run's precision; versions 2 and 1 still load, version 1 without a fit position),
 * written atomically (temp file, fsync, rename; the temp files of a killed save are removed by the
 * next save). save refuses a non-finite state and a path that is not a regular file (a device,
 * directory, FIFO, dangling link); a symlink to a regular file replaces that file. Loading checks
 * that the file matches this model's layers and shapes and holds finite values; on any error the
 * model is left unchanged. */
ck_status ck_model_save(ck_model *model, const char *path);
ck_status ck_model_load(ck_model *model, const char *path);

/* Keras files (Keras 3 .keras archives, .weights.h5, and legacy whole-model .h5 to read).
 * ck_model_load_keras builds a new model from a .keras or legacy .h5 file (the Sequential or
 * functional model of its config, its weights, BN moving statistics, its compile optimizer and,
 * when present, the optimizer state) for batches of up to max_batch samples. Unsupported layers or
 * options fail with CK_STATUS_NOT_SUPPORTED and a message naming the layer, its class and the
 * option; a missing or misshaped weight names the layer and both shapes; *model is set only on
 * success. ck_model_load_keras_weights reads a .weights.h5 (or the weights of a .keras) into a
 * built model whose layers match (Keras names the weights by layer class and order); the optimizer
 * state is read when the file holds one for the model's optimizer. On failure the model is
 * unchanged. ck_model_save_keras writes path ending in .keras (config, weights, optimizer state)
 * or .weights.h5 (weights and optimizer state), atomically like ck_model_save. */
ck_status ck_model_load_keras(ck_context *ctx, const char *path, int max_batch, ck_model **model);
/* The same with the model's precision chosen by the caller instead of the file's dtype policy
 * (a mixed_bfloat16 policy on any layer loads as CK_PRECISION_BF16, docs/precision.md);
 * ck_model_set_precision's checks apply; ck_model_build refuses bf16 on a GPU below compute
 * capability 8.0 (CK_STATUS_NOT_SUPPORTED). */
ck_status ck_model_load_keras_as(ck_context *ctx, const char *path, int max_batch,
                                 ck_precision precision, ck_model **model);
ck_status ck_model_load_keras_weights(ck_model *model, const char *path);
ck_status ck_model_save_keras(ck_model *model, const char *path);

/* Parameter access, in Keras get_weights() order (layer by layer in the model's order, which is
 * Keras's model.layers for models from text or Keras files; within a layer kernel, bias; gamma,
 * beta, moving mean, moving variance): count queries, then copies. set_weights refuses a NaN or Inf
 * (naming its index) and then changes nothing. */
ck_status ck_model_get_weights(ck_model *model, float *host, size_t count, size_t *needed);
ck_status ck_model_set_weights(ck_model *model, const float *host, size_t count);

/* ---------------------------------------------------------------------------------------------
 * fit: epochs of shuffled mini-batches with validation after each epoch (Keras model.fit)
 * ------------------------------------------------------------------------------------------- */
struct ck_dataset; /* cnnkit/data.h */

typedef struct ck_fit_progress {
    int epoch, epochs;     /* 1-based epoch */
    int step, steps;       /* 1-based step within the epoch */
    double loss, accuracy; /* running means over the epoch so far */
    double images_per_s, eta_s;
} ck_fit_progress;

typedef struct ck_epoch_result {
    int epoch;
    double loss, accuracy;         /* training, running means over the epoch */
    double val_loss, val_accuracy; /* NaN when there is no validation set */
    double seconds, images_per_s;
} ck_epoch_result;

typedef struct ck_fit_options {
    int epochs;    /* 0: 1; with resume, the total (Keras: epochs with initial_epoch) */
    int batch;     /* 0: the model's max_batch (data-parallel: the global batch, 0: max_batch x
                      ranks; cnnkit/comm.h) */
    uint64_t seed; /* shuffling seed (default 0: the context seed) */
    /* Optional callbacks. on_step returning nonzero stops the fit after this step: the model's
     * fit state (ck_model_fit_state) then records the position, and an epoch stopped before its
     * last step gets no validation, no history entry and no on_epoch call. on_epoch returning
     * nonzero stops after that epoch. Either way ck_model_fit returns CK_STATUS_SUCCESS. */
    int (*on_step)(void *user, const ck_fit_progress *p);
    int (*on_epoch)(void *user, const ck_epoch_result *r);
    void *user;
    /* 1: continue from the model's fit state (see ck_fit_state) instead of starting at epoch 1 */
    int resume;
} ck_fit_options;

/* Where a fit stands. ck_model_fit updates it after every training step and at the end of every
 * epoch (after validation, before on_epoch), ck_model_save writes it into the checkpoint and
 * ck_model_load restores it; a direct ck_model_train_step clears it (valid = 0). Resuming from it
 * (opts->resume) continues with the next batch of the same data order and gives the same bits
 * as a fit that was never stopped. */
typedef struct ck_fit_state {
    int valid;             /* 0: the model's state does not come from ck_model_fit */
    int epoch;             /* epochs finished */
    int epoch_step;        /* steps done in epoch `epoch + 1` (0 at an epoch boundary) */
    int batch;             /* the fit's batch size */
    int count;             /* training samples */
    uint32_t data_crc;     /* CRC-32 (zlib) of the training images and labels */
    uint64_t shuffle_seed; /* the fit's shuffling seed (after the default was applied) */
    uint64_t context_seed; /* the context seed of the run (dropout masks) */
    double loss_sum;       /* the unfinished epoch's summed loss, correct predictions and */
    long long correct;     /* samples so far (its running means continue from them) */
    long long seen;
    int precision; /* the run's ck_precision; -1 not recorded (checkpoint version 2) */
} ck_fit_state;
ck_status ck_model_fit_state(const ck_model *model, ck_fit_state *state);

/* Trains on train (images h x w x c must match the model input) and evaluates val (optional)
 * after each epoch. history (optional) receives one entry per finished epoch at its index
 * (epoch - 1; capacity opts->epochs); with resume, entries of the epochs finished before are not
 * written. A model without trainable parameters is refused (CK_STATUS_BAD_PARAM), and so is,
 * before the first step, a sample of train or val with a label outside the model's classes or
 * a pixel that is not finite (the message names the set and the index). opts NULL: all
 * defaults; fields left 0 take theirs.
 * With opts->resume: the fit state must be valid, and the batch, the training set (count and
 * CRC-32), the shuffling seed (opts->seed 0: the saved one), the context seed and the model's
 * precision (where recorded) must be the saved ones, else CK_STATUS_BAD_PARAM naming the
 * difference; a state already at epochs
 * finished epochs trains nothing and returns CK_STATUS_SUCCESS. */
ck_status ck_model_fit(ck_model *model, const struct ck_dataset *train,
                       const struct ck_dataset *val, const ck_fit_options *opts,
                       ck_epoch_result *history);

#ifdef __cplusplus
}
#endif
#endif /* CNNKIT_MODEL_H */
