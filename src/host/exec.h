/* The executor: one loop over the model's node list for every device (exec.c). Each node points
 * at its kind (ck_node_kind), whose ops per backend run the node: the CPU ops and the CUDA ops of
 * a layer live in its layer_*.c file, as darknet keeps forward and forward_gpu side by side. The
 * loop knows no node type; a backend brings its buffers (ck_exec) and one device copy. */
#ifndef CNNKIT_EXEC_H
#define CNNKIT_EXEC_H

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
} ck_node_ops;

struct ck_node_kind {
    ck_node_type type; /* what the planner's patterns match on */
    const char *name;
    unsigned char alias; /* output = input (Flatten): nothing runs, the gradient passes */
    ck_node_ops ops[CK_BE_COUNT];
};

/* What differs between devices below the nodes: where a device copy goes. */
typedef struct ck_backend {
    int id; /* CK_BE_* */
    const char *name;
    ck_status (*copy)(ck_context *ctx, float *dst, const float *src, size_t count);
} ck_backend;

extern const ck_backend ck_backend_cpu;

/* One model's buffers on one backend: the executor runs the nodes over them. */
struct ck_exec {
    ck_model *m;
    ck_context *ctx;
    const ck_backend *be;
    float *params, *grads, *fixed, *stats;
    const float *x; /* the batch (host x on the CPU, its staged copy on CUDA) */
    float **outs;   /* per-node outputs when the backend keeps its own (CUDA); NULL: n->out */
    void **state;   /* per-node state from ops.prepare, or NULL */
    float *gbuf[2]; /* gradient ping-pong buffers */
    void *ws;       /* shared workspace: the CPU conv's im2col; CUDA conv, dense, BN */
    size_t ws_bytes;
    int bn_relu_fused; /* a BN node's fused ReLU runs inside the BN kernel (else after it) */
};

/* The CPU executor of a built model. */
ck_exec ck_exec_cpu(ck_model *m, const float *x);
/* Node i's output buffer. */
float *ck_exec_out(const ck_exec *e, int i);
/* Runs nodes [0, upto) forward; node i's output is then ck_exec_out(e, i). */
ck_status ck_exec_forward(const ck_exec *e, int batch, int training, int upto);
/* Backward from node `from` (inclusive) down to 0, dy0 in the backend's memory (a node may scale
 * its dy in place: it is not read again); gradients into e->grads. */
ck_status ck_exec_backward(const ck_exec *e, int batch, int from, float *dy0);

/* Tensor headers over backend memory for the public single-op API (which dispatches on the
 * context's device): NHWC activations, and 1 x C x 1 x 1 per-channel parameters. */
ck_tensor ck_exec_view(ck_context *ctx, const float *p, int n, int h, int w, int c);
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

extern const ck_node_kind ck_nk_conv, ck_nk_dense, ck_nk_pool, ck_nk_gap, ck_nk_flatten, ck_nk_bn,
    ck_nk_act, ck_nk_dropout, ck_nk_sdropout;

#endif
