/* The executor: one loop over the model's node list for every device (exec.c). Each node points
 * at its kind (ck_node_kind), whose ops per backend run the node: the CPU ops and the CUDA ops of
 * a layer live in its layer_*.c file, as darknet keeps forward and forward_gpu side by side. The
 * loop knows no node type; a backend brings its buffers (ck_exec) and one device copy. */
#ifndef CNNKIT_EXEC_H
#define CNNKIT_EXEC_H

#include "ck_kernels.h"
#include "model_internal.h"

enum { CK_BE_CPU, CK_BE_CUDA, CK_BE_COUNT };

typedef struct ck_exec ck_exec;

/* What one node sees when it runs: its input, output and, backward, the gradients. */
typedef struct ck_node_io {
    int i;           /* node index */
    int batch;       /* samples in this call (<= max_batch) */
    int training;    /* forward: batch statistics, dropout masks; backward: always 1 */
    const float *in; /* node input (the batch for node 0) */
    float *out;      /* node output */
    float *dy;       /* backward: gradient at the output; a node may scale it in place */
    float *dx;       /* backward: gradient at the input, NULL for node 0 (not needed) */
    float *dx_buf;   /* backward: the buffer dx would use (BN needs one even for node 0) */
    size_t count_in; /* batch * ih * iw * ic */
    /* Every input of the node (ins[0] = in, dxs[0] = dx): nin > 1 only for the nodes of a
     * graph model's multi-input layers (Add). A dxs[k] of NULL: no gradient wanted there. */
    int nin;
    const float *ins[CK_MAX_LAYER_INPUTS];
    float *dxs[CK_MAX_LAYER_INPUTS];
} ck_node_io;

typedef ck_status (*ck_node_fn)(const ck_exec *e, ck_node *n, const ck_node_io *io);

/* A node kind's operations on one backend. fwd NULL: the backend cannot run the kind (refused
 * at build). prepare/release: per-node state built once per model (a cuDNN plan); ws_bytes: the
 * shared workspace the node needs at max_batch (after prepare). */
typedef struct ck_node_ops {
    ck_node_fn fwd, bwd;
    ck_status (*prepare)(ck_context *ctx, const ck_node *n, int max_batch, void **state);
    void (*release)(void *state);
    size_t (*ws_bytes)(ck_context *ctx, const ck_node *n, int max_batch, const void *state);
    /* CUDA: fwd and bwd read and write bf16 storage where ck_exec_out_dt / ck_exec_in_dt say so
     * (a bf16 model); 0: the kind has no bf16 device path and a bf16 model with it is refused */
    unsigned char bf16;
} ck_node_ops;

struct ck_node_kind {
    ck_node_type type; /* what the planner's patterns match on */
    const char *name;
    unsigned char alias; /* output = input (Flatten): nothing runs, the gradient passes */
    ck_node_ops ops[CK_BE_COUNT];
    /* The kind that runs this one and then a ReLU in place (the planner fuses a ReLU that is the
     * node's only reader into it), or NULL. Its output is the ReLU's. */
    const struct ck_node_kind *with_relu;
    /* What node n's backward never reads on any backend (CK_BWD_SKIPS_*), so that memtab.c can
     * give a tensor no backward reads to a later one; NULL: it may read its inputs and output. */
    unsigned (*bwd_skips)(const ck_node *n);
};

enum { CK_BWD_SKIPS_IN = 1, CK_BWD_SKIPS_OUT = 2 };

/* What differs between devices around the nodes: copies, the batch, the loss, the gradient check
 * and the optimizer update. A synchronous backend (the CPU) judges the loss before backward and
 * the step before the update; an asynchronous one (CUDA) enqueues the whole step, the update
 * guarded on the device by the step's verdict, and waits once. */
typedef struct ck_backend {
    int id; /* CK_BE_* */
    const char *name;
    unsigned char synchronous;
    /* count elements of storage dt (ck_kdt; bf16 only on CUDA) */
    ck_status (*copy)(ck_context *ctx, void *dst, const void *src, size_t count, int dt);
    /* Puts the batch where node 0 and the loss read it (e->x, e->labels). */
    ck_status (*stage)(ck_exec *e, const float *x, const int32_t *labels, int n);
    /* Softmax cross-entropy of the logits against e->labels into *out (the backend's memory);
     * dlogits into e->logits_grad. */
    ck_status (*loss)(const ck_exec *e, int n, const float *logits, ck_kloss *out);
    /* Sets out->nonfinite when a gradient is NaN/Inf; *bad_index: the first such, or -1 when the
     * backend cannot tell. */
    ck_status (*flag_nonfinite)(const ck_exec *e, ck_kloss *out, long long *bad_index);
    /* One optimizer update of every parameter range; guard (the backend's memory, may be NULL):
     * a failed step's verdict, read by the device (see ck_cuda_adam). */
    ck_status (*update)(const ck_exec *e, const ck_kloss *guard);
    /* Waits for what was enqueued and copies the step's loss to the host. */
    ck_status (*read_loss)(const ck_exec *e, const ck_kloss *src, ck_kloss *host);
    /* Logits of n samples into host memory; NULL: the backend's memory is the host's. */
    ck_status (*download)(const ck_exec *e, float *host, const float *src, size_t count);
    /* Best effort: the BN moving statistics of before the step (a failed step). */
    void (*restore)(const ck_exec *e);
    /* dst = a + b elementwise, count elements of storage dt in the backend's memory (dst may be
     * a or b): the Add layer and the gradient sums of graph models. */
    ck_status (*add)(const ck_exec *e, void *dst, const void *a, const void *b, size_t count,
                     int dt);
    /* dst = src as bf16 words (ck_cuda_bf16_pack), count elements: the staged batch and the loss
     * gradient of a bf16 model's device step. NULL on the CPU (its twin rounds in place). */
    ck_status (*pack_bf16)(const ck_exec *e, void *dst, const float *src, size_t count);
    /* x *= s elementwise, count floats in the backend's memory (a data-parallel rank's share of
     * the loss gradient). */
    ck_status (*scale)(const ck_exec *e, float *x, size_t count, float s);
    /* Asynchronous backends: this rank's step failed; says so in the backend's loss packet
     * (out->nonfinite >= CK_KLOSS_RANK_FAILED), which the ranks reduce by maximum before the
     * guarded update (exec_comm.c). NULL on synchronous ones. */
    ck_status (*mark_failed)(const ck_exec *e, ck_kloss *out);
    /* After the batch is staged, before the nodes run: CUDA writes the step packet (e->step,
     * ck_exec_step_packet) that its kernels read. NULL: nothing to do. */
    ck_status (*begin_step)(ck_exec *e);
    /* Runs a training step's device part, body(e, arg) (forward to update, exec.c). CUDA: with
     * capturable (no communicator, the update enqueued with the step, no profiling) it may
     * capture body once per batch size as a CUDA graph and replay it (cuda_graph.c). NULL:
     * body is called. */
    ck_status (*run_step)(ck_exec *e, int n, int capturable, ck_status (*body)(ck_exec *, void *),
                          void *arg);
} ck_backend;

/* ck_kloss.nonfinite of a data-parallel device step that some rank could not finish. */
#define CK_KLOSS_RANK_FAILED 2

extern const ck_backend ck_backend_cpu;

/* One model's buffers on one backend: the executor runs the nodes over them. */
struct ck_exec {
    ck_model *m;
    ck_context *ctx;
    const ck_backend *be;
    float *params, *grads, *opt_m, *opt_v, *fixed, *fixed_backup, *stats;
    const float *x;        /* the batch (host x on the CPU, its staged copy on CUDA) */
    const int32_t *labels; /* its labels, the same way */
    float *logits_grad;    /* the loss gradient at the logits */
    ck_kloss *loss;        /* where the loss goes (NULL on the CPU: the step's own) */
    ck_kstep *step;        /* CUDA: the step packet the kernels read (ck_kstep); NULL on the CPU */
    int staged;     /* the batch is in e->x, e->labels already (fit's device-resident data) */
    float **outs;   /* per-node outputs when the backend keeps its own (CUDA); NULL: n->out */
    void **state;   /* per-node state from ops.prepare, or NULL */
    float *gbuf[2]; /* gradient ping-pong buffers */
    void *ws;       /* shared workspace: the CPU conv's im2col; CUDA conv, dense, BN */
    size_t ws_bytes;
    /* graph models (m->graph): the nodes' gradient buffers (n->g_offset bytes in) and the
     * scratch gradients, gscratch_stride bytes apart; NULL for Sequential models */
    char *gnode, *gscratch;
    size_t gscratch_stride;
    int bn_relu_fused; /* a BN node's fused ReLU runs inside the BN kernel (else after it) */
    /* bf16 models (docs/precision.md). CPU twin: wround, the parameters rounded to bf16 (what
     * conv and dense layers multiply by; refreshed by every forward). CUDA: xbf, the staged
     * batch as bf16 words (node 0's input), and dlogits_bf, the loss gradient as bf16 words (the
     * logits node's dy). NULL otherwise. */
    float *wround;
    void *xbf, *dlogits_bf;
    const struct ck_comm *comm; /* data-parallel: the step sums over its ranks (exec_comm.c) */
    /* the batch's first sample in the global batch (data-parallel: the shard's offset), which
     * keys the dropout masks so that N ranks draw the masks of one process; 0 otherwise */
    uint64_t sample0;
    /* data-parallel device step whose gradient sum overlaps the backward pass (exec_comm.c):
     * &ov while a step's buckets are being launched, else NULL */
    struct ck_exec_overlap {
        int next; /* buckets [0, next) of the gradients are not launched yet */
    } ov, *overlap;
};

/* The dropout fused into node i by the planner (BN: SpatialDropout as the kernel's channel scale;
 * pooling: a dropout in place on the pooled output), when it is active (training, rate > 0):
 * fills *d (keyed by e->sample0) and *key (ck_exec_drop_key) and returns 1, else 0. */
int ck_exec_fused_dropout(const ck_exec *e, int i, int training, ck_dropout_desc *d,
                          ck_drop_key *key);
/* Where the dropout of user layer `layer` takes its RNG offset on e's backend: from the device
 * step packet (e->step) on CUDA, from the descriptor on the CPU. */
ck_drop_key ck_exec_drop_key(const ck_exec *e, int layer);

/* The executor over a model's device buffers (backend_cuda.c; the model has a device side). */
ck_exec ck_exec_cuda(ck_model *m);
/* A training step's forward, loss and backward on a checked batch, and with update != 0 the
 * optimizer update; on failure the model is as before (but for a CUDA launch error part-way
 * through the per-range updates). With e->comm, n is this rank's shard and *loss_sum, *correct
 * and *count (may be NULL) are the global batch's; every rank fails or succeeds together. */
ck_status ck_exec_train(ck_exec *e, const float *x, const int32_t *labels, int n, int update,
                        double *loss_sum, int *correct, int *count);
/* The data-parallel parts of the step (exec_comm.c, e->comm set), joined by every rank whatever
 * its own status st.
 * Synchronous backends (the CPU, an MPI communicator): _loss, after the loss, sums the loss, the
 * correct count and the sample count (*total) over the ranks and scales this rank's loss
 * gradient by n / total (the global mean's share); fails on every rank when any rank's st
 * failed. _grads, after backward, sums the gradients over the ranks, flags a non-finite sum into
 * kl->nonfinite (*bad: its index) and agrees on the verdict, so every rank updates or none does.
 * Asynchronous backends (CUDA, an NCCL communicator) keep the step's one wait: *total comes from
 * _begin (a packet before forward); _loss and _grads only enqueue device all-reduces (the loss
 * packet, the gradients, and the verdict by maximum of kl->nonfinite, where a rank that failed
 * puts CK_KLOSS_RANK_FAILED), return this rank's own status, and the update the device guards
 * makes every rank update or none; _verdict, after the wait, turns another rank's failure into
 * this rank's error. */
ck_status ck_exec_comm_loss(ck_exec *e, ck_status st, int n, ck_kloss *kl, int *total);
/* Before forward; every rank joins, st its own status so far (a rank whose batch was refused
 * joins with that failure). When the model draws dropout masks: e->sample0 = the shards of the
 * ranks below this one (shards are contiguous in rank order, ck_comm_shard), so the ranks'
 * samples draw the masks of the same samples of one process's global batch. Asynchronous
 * backends, and any model with SyncBatchNormalization: a packet sums the batch (*total) and the
 * failures, and when any rank failed every rank returns a failure here, before the forward
 * pass's collectives, and must join no more of the step's. Otherwise returns st. */
ck_status ck_exec_comm_begin(ck_exec *e, ck_status st, int n, int *total);
/* Whether ck_exec_comm_begin agrees on failures (asynchronous backends, SyncBatchNormalization). */
int ck_exec_comm_agrees_at_begin(const ck_exec *e);
ck_status ck_exec_comm_grads(ck_exec *e, ck_status st, ck_kloss *kl, long long *bad);
ck_status ck_exec_comm_verdict(const ck_exec *e, const ck_kloss *host);
/* After node i's backward (e->overlap set): launches the gradient buckets that no node below i
 * writes, on the communicator's second stream, highest first (every rank the same order). */
ck_status ck_exec_comm_grads_ready(const ck_exec *e, int i);
/* How many gradient buckets (CK_COMM_DEVICE_BUCKET floats, counted from the top) no node below
 * node i writes: those are final once node i's backward has run. From the nodes' kernel, bias
 * and BN gamma/beta ranges, which cover every trainable parameter (tests/test_comm.c checks). */
int ck_exec_comm_buckets_final(const ck_model *m, int i);
/* The step packet of m's next training step (ck_kstep), computed on the host with the values
 * the CPU step uses: m->step (ck_model_layer_dropout_offset) and Adam's alpha of update
 * m->step + 1 (ck_cpu_adam_update). The CUDA step uploads it before its kernels read it. */
ck_kstep ck_exec_step_packet(const ck_model *m);
/* Inference-mode logits of n samples: *logits points at host memory. */
ck_status ck_exec_infer(ck_exec *e, const float *x, int n, const float **logits);
/* The node whose output holds the logits (-1: the input). */
int ck_exec_logits_node(const ck_model *m);

/* The CPU executor of a built model (backend_cpu.c). */
ck_exec ck_exec_cpu(ck_model *m, const float *x);
/* Node i's output buffer. */
float *ck_exec_out(const ck_exec *e, int i);
/* Runs nodes [0, upto) forward; node i's output is then ck_exec_out(e, i). */
ck_status ck_exec_forward(const ck_exec *e, int batch, int training, int upto);
/* Runs nodes [from, upto) forward on the node outputs as they are (node from reads what the
 * nodes before it left): the per-node replay of the GPU tests. */
ck_status ck_exec_forward_range(const ck_exec *e, int batch, int training, int from, int upto);
/* Backward from node `from` (inclusive) down to 0, dy0 in the backend's memory (a node may scale
 * its dy in place: it is not read again); gradients into e->grads. */
ck_status ck_exec_backward(const ck_exec *e, int batch, int from, float *dy0);
/* Node i's backward alone (a Sequential model's non-alias node), dy and dx in the backend's
 * memory, on what the last forward left: the per-node replay of the GPU tests. */
ck_status ck_exec_backward_node(const ck_exec *e, int batch, int i, float *dy, float *dx);

/* bf16 storage (docs/precision.md): a CUDA executor of a bf16 model keeps every node output
 * before the logits, their gradients, the staged batch node 0 reads and the loss gradient the
 * logits node reads as 16-bit bf16 words (ck_kdt); the CPU twin keeps fp32 buffers and rounds
 * each store. _store_bf16: this executor stores bf16 words. _out_dt: how node i's output and its
 * gradient are stored (the logits and the nodes after them: fp32). _in_dt: how input k of node
 * i is stored (the model's input: bf16 words on such an executor). _dy_dt: how node i's
 * backward reads dy (the logits node: the packed loss gradient). */
int ck_exec_store_bf16(const ck_exec *e);
int ck_exec_out_dt(const ck_exec *e, int i);
int ck_exec_in_dt(const ck_exec *e, int i, int k);
int ck_exec_dy_dt(const ck_exec *e, int i);
/* The same rule without an executor, for what sizes or counts the tensors (memtab.c,
 * roofline.c): _stores_bf16, whether m on backend be stores bf16 words; with that as bf16,
 * _out_dt, node j's output and gradient (j < 0: the model's input, stored as the nodes before
 * the logits), _dy_dt, the dy node i's backward reads. */
int ck_model_stores_bf16(const ck_model *m, int be);
int ck_node_out_dt(const ck_model *m, int bf16, int j);
int ck_node_dy_dt(const ck_model *m, int bf16, int i);
/* Whether the CPU twin of a bf16 model rounds what node i stores (i < 0: any store before the
 * logits): a node whose op stores an intermediate the GPU stores in bf16 rounds it too. */
int ck_exec_twin_rounds(const ck_exec *e, int i);
/* The parameters as convolutions and dense layers multiply by them: e->params, or on the CPU twin
 * of a bf16 model their bf16 rounding (a GPU bf16 layer rounds its weights as it converts them). */
const float *ck_exec_weights(const ck_exec *e);

/* Tensor headers over backend memory for the public single-op API (which dispatches on the
 * context's device): NHWC activations, and 1 x C x 1 x 1 per-channel parameters. */
ck_tensor ck_exec_view(ck_context *ctx, const float *p, int n, int h, int w, int c);
/* The same with storage dt (ck_kdt; bf16 only over a CUDA executor's bf16 buffers). */
ck_tensor ck_exec_view_dt(ck_context *ctx, const void *p, int n, int h, int w, int c, int dt);
ck_tensor ck_exec_pview(ck_context *ctx, const float *p, int c);
/* The conv / pool geometry of node n for a batch. */
ck_conv_geom ck_exec_geom(const ck_node *n, int batch);

/* The node kinds (layer_*.c). */
#ifdef CNNKIT_HAVE_CUDA
/* A CUDA launch's error code into a status (the CUDA node ops). */
#define CK_EXEC_CUDA(ctx, err, what)                                                               \
    do {                                                                                           \
        int e_ = (err);                                                                            \
        if (e_ != 0)                                                                               \
            return ck_cuda_fail((ctx), e_, (what));                                                \
    } while (0)
#endif

/* CUDA graphs of the training step (cuda_graph.c; the model's device side owns one set, NULL
 * until the first capturable step). ck_cuda_graph_run runs body as ck_backend.run_step says,
 * writing m->cuda_graph_last / _note / counters; a failed capture or instantiation ends cleanly,
 * leaves a note, and the step (and the model's later ones) run body eagerly. _drop frees every
 * graph (the set stays); _count: graphs held. */
typedef struct ck_cuda_graphs ck_cuda_graphs;
ck_status ck_cuda_graph_run(ck_cuda_graphs **set, ck_exec *e, int n, int capturable,
                            ck_status (*body)(ck_exec *, void *), void *arg);
void ck_cuda_graphs_drop(ck_cuda_graphs *set);
void ck_cuda_graphs_free(ck_cuda_graphs *set);
int ck_cuda_graphs_count(const ck_cuda_graphs *set);

extern const ck_node_kind ck_nk_conv, ck_nk_dense, ck_nk_pool, ck_nk_gap, ck_nk_flatten, ck_nk_bn,
    ck_nk_act, ck_nk_dropout, ck_nk_sdropout;

#endif
