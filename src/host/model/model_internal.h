/* Internal model structures shared by model.c, train.c and checkpoint.c. */
#ifndef CNNKIT_MODEL_INTERNAL_H
#define CNNKIT_MODEL_INTERNAL_H

#include "cnnkit/model.h"
#include "cpu_layers.h"
#include "internal.h"
#include "layer.h"

#define CK_MAX_LAYERS 256
/* A user layer lowers to one op, a Conv2D/Dense with an inline activation to two. */
#define CK_MAX_OPS (2 * CK_MAX_LAYERS)
#define CK_NODE_MAX_OPS 4

typedef enum ck_node_type {
    CK_NODE_CONV,
    CK_NODE_DENSE,
    CK_NODE_POOL,
    CK_NODE_GAP,
    CK_NODE_FLATTEN,
    CK_NODE_BN,
    CK_NODE_ACT,
    CK_NODE_DROPOUT,
    CK_NODE_SDROPOUT,
    CK_NODE_OTHER /* a kind no planner rule or backend query names (ZeroPadding2D, Rescaling) */
} ck_node_type;

/* One executable step of the model; per-sample shapes ih x iw x ic -> oh x ow x oc (NHWC). */
typedef struct ck_node_kind ck_node_kind; /* exec.h */

struct ck_node {
    ck_node_type type;
    const ck_node_kind *kind; /* how each backend runs it (exec.h) */
    int layer;                /* index of the user's layer */
    int ih, iw, ic, oh, ow, oc;
    ck_conv_geom geom;                         /* conv / pool, for n = 1 (n is set per batch) */
    size_t p_kernel, n_kernel, p_bias, n_bias; /* offsets into params (floats) */
    size_t p_gamma, p_beta;                    /* BN, into params */
    size_t p_mm, p_mv;                         /* BN moving statistics, into fixed */
    size_t p_stats;                            /* BN saved mean / invstd, into stats */
    ck_bn_desc bn;
    int bn_sync; /* BN: SyncBatchNormalization (its sums over the comm's ranks, cpu_ref.c) */
    ck_activation act;
    float alpha;
    int is_max;
    float rate;
    float scale, offset; /* Rescaling: y = x * scale + offset */
    size_t act_offset;
    float *out; /* max_batch * oh * ow * oc floats */
    /* A CUDA bf16 model's node (its device tensors are bf16 words, ck_exec_out_dt): set by
     * ck_gpu_model_build before the CUDA ops prepare, so that a plan (cuDNN descriptors, the
     * workspace) is made for that storage. 0 otherwise. */
    unsigned char dev_bf16;
    /* Set by the planner (plan.c); a node of the unplanned lowering has drop_layer -1, one op.
     * BN: bn.activation may be CK_ACT_RELU (a fused ReLU layer) and drop_layer a SpatialDropout
     * layer fused as a per-(n, c) channel scale after the activation (drop_type SDROPOUT).
     * POOL: drop_layer a Dropout or SpatialDropout layer applied in place to the pooled output in
     * the same node (drop_type DROPOUT or SDROPOUT). */
    int drop_layer;         /* user layer of the fused dropout, -1 none */
    ck_node_type drop_type; /* CK_NODE_DROPOUT or CK_NODE_SDROPOUT */
    float drop_rate;
    int nops;                 /* lowered ops this node runs, in execution order */
    int ops[CK_NODE_MAX_OPS]; /* ids into ck_model.op_layer / op_inline */
    /* Graph models only (ck_model.graph; a Sequential model's node i reads node i - 1): the
     * nodes this node reads (-1: the model input), and per input whether its gradient is added
     * to one an earlier backward step already wrote there (the tensor has several readers; the
     * reader that runs backward first writes, the others add). g_offset: the node's
     * gradient buffer, bytes into the executor's gnode, shared with nodes whose gradients are
     * never live at the same time (memtab.c). */
    int nin;
    int in[CK_MAX_LAYER_INPUTS];
    unsigned char in_acc[CK_MAX_LAYER_INPUTS];
    size_t g_offset;
    /* Planned graph models: the last time of the step (memtab.c's timeline: forward of node i at
     * i, its backward at 2 * num_nodes - i) at which the node's output is read; the buffer at
     * act_offset is another node's after that. */
    int act_end;
};

/* One trainable array: offset and count in params. */
typedef struct ck_update_range {
    size_t off, cnt;
} ck_update_range;

/* The device side of a model on a CUDA context (backend_cuda.c); NULL on the CPU. */
typedef struct ck_gpu_model ck_gpu_model;

struct ck_model {
    ck_handle link; /* in the context's list (internal.h) */
    ck_context *ctx;
    ck_gpu_model *gpu;
    ck_layer_desc *layers;
    int num_layers, cap_layers;
    ck_shape3 lshape[CK_MAX_LAYERS]; /* per user layer: its output shape (ck_model_build) */
    ck_shape3 lin[CK_MAX_LAYERS];    /* per user layer: the shape of its (first) input */
    /* A graph model: some layer names its inputs (ck_layer_desc.num_inputs). Its nodes read the
     * nodes in n->in, backward writes per-node gradient buffers (gnode) and adds where a tensor
     * has several readers; the planner leaves it alone (plan.c). 0: the Sequential executor,
     * node i reading node i - 1, gradients in the two ping-pong buffers. */
    int graph;
    float *gnode;           /* graph models on the CPU: the nodes' gradient buffers */
    float *gscratch;        /* and CK_MAX_LAYER_INPUTS scratch gradients of the largest tensor */
    size_t gscratch_stride; /* bytes between the scratch gradients (host) */
    /* per user layer: where its first trainable / fixed array starts in params / fixed; the
     * kind's specs give the rest (ck_model_layer_specs) */
    size_t lparam_off[CK_MAX_LAYERS], lfixed_off[CK_MAX_LAYERS];
    /* the trainable arrays in the layers' order (ck_model_build, from the specs), which the
     * executors' updates read through ck_model_next_update_range */
    ck_update_range upd[CK_MAX_LAYERS * CK_LAYER_MAX_PARAMS];
    int num_upd;
    int built;
    int in_h, in_w, in_c;
    int in_flat; /* the input is a vector (ck_layer_desc.input_flat of the first layer) */
    char name[48], input_name[48]; /* ck_model_set_name, "" Keras's defaults */
    char input_auto[48]; /* the default input name at build: "input_layer" unless a layer has it */
    int max_batch, classes, softmax_last;
    ck_node *nodes;
    int num_nodes;
    size_t num_params, num_fixed, num_stats; /* floats in params, fixed, stats */
    float *params, *grads, *opt_m, *opt_v;   /* trainable parameters, their gradients, state */
    float *fixed;                            /* BN moving mean / variance */
    float *fixed_backup;                     /* copy taken at the start of a step */
    float *acts;                             /* node outputs */
    float *gbuf[2];                          /* gradient ping-pong buffers */
    float *stats;                            /* BN saved mean / invstd */
    float *ws;                               /* conv im2col workspace */
    float *logits_grad;
    float *xbf;    /* bf16 on the CPU: the batch rounded to bf16 (exec.c), else NULL */
    float *wround; /* bf16 on the CPU: the parameters rounded to bf16 (exec.c), else NULL */
    size_t mem_act_bytes, mem_host_bytes; /* ck_model_memory_usage, set by ck_model_build */
    ck_optimizer_desc opt;
    long long step;
    ck_fit_state fit; /* where ck_model_fit stands (fit.c); saved in checkpoints */
    /* execution plan (plan.c) */
    int planning_off;       /* ck_model_set_planning(m, 0) before build */
    int planned;            /* the planner ran on this build (planning on; CPU and CUDA) */
    int acts_private;       /* tests: a planned graph keeps one activation buffer per node */
    int fit_host_data;      /* tests: ck_model_fit stages every batch from the host on a GPU too */
    long long staged_steps; /* tests: steps run on batches gathered on the device (fit) */
    /* How a BN node with a fused ReLU runs on the CPU. 1: ck_batchnorm_* with activation RELU,
     * one kernel (the CPU twin of the device kernel). 0 (default): the BN kernel (with any fused
     * SpatialDropout scale) and then the ReLU in place on the node's output (backward: dReLU in
     * place on dy, then dBN), the same floats: the CPU twin's per-element activation branch is
     * measured slower than the separate vectorized ReLU pass (plan.c). May be changed any time. */
    int relu_in_bn_kernel;
    int num_ops; /* lowered ops: op i is layer op_layer[i], its inline activation when
                    op_inline[i] */
    int op_layer[CK_MAX_OPS];
    unsigned char op_inline[CK_MAX_OPS];
    /* per user layer: the node whose output holds the layer's output, resp. its input;
     * CK_PLAN_MODEL_INPUT for the model input x, CK_PLAN_NOT_MATERIALIZED when the plan never
     * stores that tensor (fused into a later kernel or reordered past) */
    int layer_out_node[CK_MAX_LAYERS];
    int layer_in_node[CK_MAX_LAYERS];
    /* training-step profile (ck_model_set_profiling): seconds per node of the step in progress
     * (cur_*), added to the totals when the step succeeds */
    int profiling;
    long long prof_steps;
    double prof_samples; /* samples of the profiled steps (this rank's): the mean batch */
    /* the step clock (ck_model_last_step_time): the call's start, when its one wait for the
     * device began (0: no wait, a synchronous backend), and the last successful step's */
    double step_t0, step_wait_t, last_step_s, last_host_s;
    long long timed_steps;
    double prof_fwd[CK_MAX_OPS], prof_bwd[CK_MAX_OPS], prof_opt, prof_step;
    double prof_cur_fwd[CK_MAX_OPS], prof_cur_bwd[CK_MAX_OPS];
    ck_precision precision;
    struct ck_comm *comm; /* ck_model_set_comm (model_comm.c): data-parallel steps; NULL: alone */
    /* CUDA graphs of the training step (ck_model_set_cuda_graph; exec/cuda_graph.c): the mode,
     * a capture that failed on this model (its later steps run eager until the mode is set
     * again), what ck_model_cuda_graph_info reports, and a test knob: cuda_graph_fault 1 makes
     * the next capture fail (a stream wait inside it), 2 its instantiation, 3 its launch */
    int cuda_graph_mode;
    int cuda_graph_failed;
    int cuda_graph_last;
    long long cuda_graph_captures, cuda_graph_replays;
    char cuda_graph_note[256];
    int cuda_graph_fault;
};

/* The entry check of every public call on a model: NULL, or a model whose context was destroyed
 * (ck_context_destroy orphans its models: their calls fail instead of reading freed memory). */
ck_status ck_model_orphaned(void);
/* The optimizer settings ck_model_set_optimizer accepts; the message names the field. */
ck_status ck_optimizer_check(ck_context *ctx, const ck_optimizer_desc *opt);
#define CK_MODEL_ENTRY(m)                                                                          \
    do {                                                                                           \
        if (!(m))                                                                                  \
            return ck_fail(NULL, CK_STATUS_BAD_PARAM, "model: is NULL");                           \
        if (!(m)->ctx)                                                                             \
            return ck_model_orphaned();                                                            \
    } while (0)

/* The context's CPU thread count (ck_context_set_cpu_threads) for the duration of one model
 * call (train.c): the calling thread's OpenMP team size, which every loop of cpu_layers.c and
 * the OpenMP OpenBLAS follow, is set on entry and restored on return, so no state outlives the
 * call. enter returns what leave restores (0: nothing was changed). */
int ck_threads_enter(const ck_context *ctx);
void ck_threads_leave(int old);

/* CRC-32 (zlib) of n more bytes after crc (start with 0), any n (checkpoint.c). */
uint32_t ck_crc32(uint32_t crc, const void *p, size_t n);

/* Profiling of a training step (profile.c): ck_prof_begin returns the time (s) after draining the
 * device, or 0 when the model is not profiling; ck_prof_end adds the time since t0 (device
 * drained) to *acc. Both cost nothing when profiling is off. */
double ck_prof_begin(ck_model *m);
void ck_prof_end(ck_model *m, double t0, double *acc);
/* CLOCK_MONOTONIC in seconds (profile.c). */
double ck_now_s(void);

#define CK_PLAN_MODEL_INPUT (-2)
#define CK_PLAN_NOT_MATERIALIZED (-1)

void ck_model_init_params(ck_model *m);
/* Forward (training mode) + loss + backward into m->grads, without an optimizer step.
 * loss_sum: summed over the n samples. On failure the model is unchanged. */
ck_status ck_model_loss_and_grads(ck_model *m, const float *x, const int32_t *labels, int n,
                                  double *loss_sum, int *correct);
/* Runs nodes [0, upto) forward on a batch of n <= max_batch samples (NHWC, host memory);
 * training != 0 uses batch statistics, updates the BN moving statistics and draws dropout masks.
 * Node i's output is then in m->nodes[i].out. No argument checks: internal callers only.
 * The nodes are the PLANNED list (plan.c): a node may run several user layers (BN+ReLU
 * (+SpatialDropout), pooling+dropout) and ReLU/dropout nodes may be reordered. A BN node's input
 * is always node i-1's output (or x for i = 0): the planner never moves anything across a BN and
 * never fuses into a BN's input side. To find a user layer's tensors use the functions below. */
ck_status ck_model_forward_nodes(ck_model *m, const float *x, int n, int training, int upto);
/* For tests, on any device: nodes [from, upto) forward on the node outputs as they are (the
 * batch x staged first; the step packet written from m->step, so dropout masks are the next
 * training step's); node i's output of n samples into host floats (a bf16 model's device words
 * widened exactly), or (ck_model_node_out_set) written from host floats (rounded to the node's
 * storage). An alias node (Flatten) is its input's buffer. */
ck_status ck_model_forward_range(ck_model *m, const float *x, int n, int training, int from,
                                 int upto);
ck_status ck_model_node_out(ck_model *m, int i, int n, float *host);
/* Node i's backward alone on what the last forward left (a Sequential model's node that stores
 * an output; x: the batch of that forward): dy (node i's output gradient, host floats, put into
 * the node's storage: bf16 words rounded on a bf16 device) in, dx (host floats, may be NULL for
 * node 0) out; the parameter gradients of node i in the model's gradients, all of them read by
 * ck_model_grads_out (num_params floats). For tests. */
ck_status ck_model_backward_node(ck_model *m, const float *x, int i, int n, const float *dy,
                                 float *dx);
ck_status ck_model_grads_out(ck_model *m, float *host);
ck_status ck_model_node_out_set(ck_model *m, int i, int n, const float *host);
/* For user layer `layer` of a built model: the node whose output holds that layer's output
 * (run ck_model_forward_nodes with upto > that index first), CK_PLAN_NOT_MATERIALIZED when the
 * plan never stores it or (a planned graph) gives its buffer to a later node in the forward pass
 * because no backward reads it, or -3 for a bad layer index. */
int ck_model_layer_output_node(const ck_model *m, int layer);
/* The layer's output after a forward pass: NULL when not materialized (see above) or bad index.
 * With planning off (ck_model_set_planning(m, 0)) every layer's output is materialized. */
const float *ck_model_layer_output(const ck_model *m, int layer);
/* The layer's input after a forward pass on x (x itself for the first layer); NULL when not
 * materialized. For a BatchNormalization layer this is always available: the BN input. */
const float *ck_model_layer_input(const ck_model *m, int layer, const float *x);
/* How a dropout's mask reaches a BatchNormalization (check.c, docs/derivations.md §1-3). */
enum {
    CK_DROP_PATH_COMMUTES = 0, /* the mask commutes with every layer between: Eq. 8 exactly */
    CK_DROP_PATH_LINEAR = 1,   /* only linear layers after the last commuting one (§2) */
    CK_DROP_PATH_NONLINEAR = 2 /* a layer nonlinear in the dropped values (§3) */
};
/* A BatchNormalization layer that a dropout reaches (the walk of CK001/CK002): kind a
 * CK_DROP_PATH_*, weights the Conv2D/Dense layers between, shifted 1 when a Rescaling with an
 * offset is between (the BN input's mean is then not the one Eq. 8 takes). */
typedef struct ck_drop_reach {
    int bn, kind, weights, shifted;
} ck_drop_reach;
/* The BNs the dropout at layer dl reaches, in its chain or along the layer graph's paths past
 * it: how many went to out[0 .. cap) (0: none, rate 0, not a dropout, out of memory). */
int ck_check_dropout_reach(const ck_layer_desc *layers, int count, int dl, ck_drop_reach *out,
                           int cap);

/* The node that runs user layer `layer` (for a fused node, the node whose ops include it);
 * -1 for a bad index. */
int ck_model_layer_node(const ck_model *m, int layer);
/* The dropout RNG offset of the dropout that node i runs at the current step (the same on CPU
 * and GPU): keyed by the user layer (step * 4096 + layer), so planning (reordering, fusing)
 * keeps every mask identical. For a node with a fused dropout, its drop_layer. */
uint64_t ck_model_dropout_offset(const ck_model *m, int node);
/* The user layer whose dropout node i runs (its own, or a fused dropout's): the offset's key. */
int ck_model_dropout_layer(const ck_model *m, int node);
uint64_t ck_model_layer_dropout_offset(const ck_model *m, int layer);
/* Fills m->upd from the layers' specs (ck_model_build). */
void ck_model_plan_updates(ck_model *m);
/* The parameter ranges the optimizer updates, in order, for the CPU and GPU steps alike: the
 * trainable arrays of the layers' specs (model_params.c), contiguous neighbours merged, each with
 * m->opt.weight_decay. Start with *cursor = 0; returns 0 after the last range. */
static inline int ck_model_next_update_range(const ck_model *m, int *cursor, size_t *off,
                                             size_t *cnt, float *wd) {
    int r = *cursor;
    if (r >= m->num_upd)
        return 0;
    *off = m->upd[r].off;
    *cnt = m->upd[r].cnt;
    *wd = m->opt.weight_decay;       /* Keras 3 decays every trainable variable */
    for (++r; r < m->num_upd; ++r) { /* merge the next ranges while contiguous */
        if (m->upd[r].off != *off + *cnt)
            break;
        *cnt += m->upd[r].cnt;
    }
    *cursor = r;
    return 1;
}

/* ---- planner (plan.c) ---- */
/* Rewrites m->nodes (the lowering, one op per node) into the executed plan: exact
 * canonicalizations, then fusions. Runs before buffers are assigned. Never fails. */
void ck_model_plan(ck_model *m);
/* The planner of a graph model: BN + its only reader, a ReLU, as one node (F1); n->in follow. */
void ck_model_plan_graph(ck_model *m);
/* Fills layer_out_node / layer_in_node from the node list (planned or not). */
void ck_model_plan_index(ck_model *m);
/* One line describing what node i runs as one kernel, e.g. "batch_normalization + activation
 * (BN+ReLU fused)"; writes at most len bytes (NUL-terminated). */
void ck_model_plan_describe_node(const ck_model *m, int i, char *buf, size_t len);

/* ---- GPU backend (backend_cuda.c; CUDA contexts only). The host arrays params / fixed / opt_m /
 * opt_v stay the state of record for init, checkpoints and get/set_weights: _push copies them
 * to the device, _pull back. ------------------------------------------------------------------ */
ck_status ck_gpu_model_build(ck_model *m);
void ck_gpu_model_free(ck_model *m);
size_t ck_gpu_model_arena_bytes(const ck_model *m); /* 0 without a device side */
/* ck_gconv_describe of conv node i (0), or -1 when it has no device plan. */
int ck_gpu_model_conv_describe(const ck_model *m, int i, char *buf, size_t len);
ck_status ck_gpu_model_push(ck_model *m);
ck_status ck_gpu_model_pull(ck_model *m);
/* The model's CUDA graphs (exec/cuda_graph.c): frees them all / how many are held (0 without a
 * device side). */
void ck_gpu_model_drop_graphs(ck_model *m);
int ck_gpu_model_graph_count(const ck_model *m);
/* The executor over the device buffers: ck_exec_cuda (exec.h). */
/* A training set resident on the model's device for ck_model_fit (issue 14): images and labels
 * uploaded once, the epoch's order once per epoch, each batch gathered on the device into the
 * executor's batch buffers (a copy of what the host would stage: the same bits). create fails
 * with CK_STATUS_ALLOC_FAILED when the device lacks the memory (fit then stages from the host)
 * or CK_STATUS_NOT_SUPPORTED without a device side. */
typedef struct ck_gpu_data ck_gpu_data;
ck_status ck_gpu_data_create(ck_model *m, const float *images, const int32_t *labels, int count,
                             ck_gpu_data **out);
ck_status ck_gpu_data_order(ck_model *m, ck_gpu_data *d, const int32_t *perm);
ck_status ck_gpu_data_stage(ck_model *m, const ck_gpu_data *d, int start, int n);
/* ck_model_node_out (upload 0) and _set (1) of a model with a device side (backend_cuda.c). */
ck_status ck_gpu_node_io(ck_model *m, int i, int n, float *host, int upload);
/* count elements of storage dt at device address dev to (upload 0) or from (1) host floats. */
ck_status ck_gpu_buf_io(ck_model *m, void *dev, int dt, size_t count, float *host, int upload);
void ck_gpu_data_free(ck_gpu_data *d);
/* One training step on the batch ck_gpu_data_stage put on the device (n samples, checked when the
 * data were uploaded), as ck_model_train_step otherwise. */
ck_status ck_model_train_step_staged(ck_model *m, int n, ck_step_result *result);
/* Data-parallel: this rank's step failed before it could run (st, its message in the context):
 * joins the step's collectives as a failed rank, so every rank fails the step with it. */
ck_status ck_model_step_failed(ck_model *m, ck_status st);

/* ---- parameters by layer (model_params.c), from the layer kinds' specs ---- */
/* The weight arrays of user layer li of a built model (or of the layers before li, during the
 * build), in Keras get_weights() order: fills spec and off (into params when trainable, else into
 * fixed) and returns their count (at most CK_LAYER_MAX_PARAMS). */
int ck_model_layer_specs(const ck_model *m, int li, ck_param_spec *spec, size_t *off);
int ck_model_layer_params(const ck_model *m, int li, long long *trainable, long long *fixed);
int ck_model_layer_is_flat(const ck_model *m, int li);

/* ---- roofline of the training profile (roofline.c) ---- */
/* Node i's work in one training step of `batch` samples (a mean over steps may be fractional):
 * FLOPs and minimum DRAM bytes per direction, what is counted per kind in roofline.c.
 * bf16_storage: activations before the logits stored as bf16 words (a bf16 model on CUDA). */
typedef struct ck_node_work {
    double fwd_flops, bwd_flops, fwd_bytes, bwd_bytes;
} ck_node_work;
ck_node_work ck_node_work_of(const ck_model *m, int i, double batch, int bf16_storage);
/* The time (ms) of flops and bytes at the peaks: the larger of compute and memory time; 0 when a
 * peak the work needs is 0 (unknown). Pure. */
double ck_roofline_ms(double flops, double bytes, double peak_flops, double peak_bytes);
/* The compute peak the model's conv and dense nodes run at on its context: BF16 tensor cores
 * for a bf16 model, TF32 under CK_MATH_TF32, else fp32 FMA; 0 on the CPU or when unknown. */
double ck_model_peak_flops(const ck_model *m);

#endif
