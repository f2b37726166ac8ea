/* Internal model structures shared by model.c, train.c and checkpoint.c. */
#ifndef CNNKIT_MODEL_INTERNAL_H
#define CNNKIT_MODEL_INTERNAL_H

#include "cnnkit/model.h"
#include "cpu_layers.h"
#include "internal.h"

#define CK_MAX_LAYERS 256

typedef enum ck_node_type {
    CK_NODE_CONV,
    CK_NODE_DENSE,
    CK_NODE_POOL,
    CK_NODE_GAP,
    CK_NODE_FLATTEN,
    CK_NODE_BN,
    CK_NODE_ACT,
    CK_NODE_DROPOUT,
    CK_NODE_SDROPOUT
} ck_node_type;

/* One executable step of the model; per-sample shapes ih x iw x ic -> oh x ow x oc (NHWC). */
typedef struct ck_node {
    ck_node_type type;
    int layer; /* index of the user's layer */
    int ih, iw, ic, oh, ow, oc;
    ck_conv_geom geom;                         /* conv / pool, for n = 1 (n is set per batch) */
    size_t p_kernel, n_kernel, p_bias, n_bias; /* offsets into params (floats) */
    size_t p_gamma, p_beta;                    /* BN, into params */
    size_t p_mm, p_mv;                         /* BN moving statistics, into fixed */
    size_t p_stats;                            /* BN saved mean / invstd, into stats */
    ck_bn_desc bn;
    ck_activation act;
    float alpha;
    int is_max;
    float rate;
    size_t act_offset;
    float *out; /* max_batch * oh * ow * oc floats */
} ck_node;

/* The device side of a model on a CUDA context (gpu_exec.c); NULL on the CPU. */
typedef struct ck_gpu_model ck_gpu_model;

struct ck_model {
    ck_context *ctx;
    ck_gpu_model *gpu;
    ck_layer_desc *layers;
    int num_layers, cap_layers;
    int lshape_store[CK_MAX_LAYERS][3];
    int built;
    int in_h, in_w, in_c;
    int max_batch, classes, softmax_last;
    ck_node *nodes;
    int num_nodes;
    size_t num_params, num_fixed;
    float *params, *grads, *opt_m, *opt_v; /* trainable parameters, their gradients, state */
    float *fixed;                          /* BN moving mean / variance */
    float *fixed_backup;                   /* copy taken at the start of a step */
    float *acts;                           /* node outputs */
    float *gbuf[2];                        /* gradient ping-pong buffers */
    float *stats;                          /* BN saved mean / invstd */
    float *ws;                             /* conv im2col workspace */
    float *logits_grad;
    ck_optimizer_desc opt;
    long long step;
};

void ck_model_init_params(ck_model *m);
/* Forward (training mode) + loss + backward into m->grads, without an optimizer step.
 * loss_sum: summed over the n samples. On failure the model is unchanged. */
ck_status ck_model_loss_and_grads(ck_model *m, const float *x, const int32_t *labels, int n,
                                  double *loss_sum, int *correct);
/* Runs nodes [0, upto) forward on a batch of n <= max_batch samples (NHWC, host memory);
 * training != 0 uses batch statistics, updates the BN moving statistics and draws dropout masks.
 * Node i's output is then in m->nodes[i].out. No argument checks: internal callers only. */
ck_status ck_model_forward_nodes(ck_model *m, const float *x, int n, int training, int upto);
/* The dropout RNG offset of node i at the current step (the same on CPU and GPU). */
uint64_t ck_model_dropout_offset(const ck_model *m, int node);

/* ---- GPU backend (gpu_exec.c; CUDA contexts only). The host arrays params / fixed / opt_m /
 * opt_v stay the state of record for init, checkpoints and get/set_weights: _push copies them
 * to the device, _pull back. ------------------------------------------------------------------ */
ck_status ck_gpu_model_build(ck_model *m);
void ck_gpu_model_free(ck_model *m);
ck_status ck_gpu_model_push(ck_model *m);
ck_status ck_gpu_model_pull(ck_model *m);
ck_status ck_gpu_loss_and_grads(ck_model *m, const float *x, const int32_t *labels, int n,
                                double *loss_sum, int *correct);
ck_status ck_gpu_optimizer_step(ck_model *m);
/* Inference-mode logits of n samples into host memory (n x classes). */
ck_status ck_gpu_infer(ck_model *m, const float *x, int n, float *logits_host);

int ck_model_layer_params(const ck_model *m, int li, long long *trainable, long long *fixed);
int ck_model_layer_is_flat(const ck_model *m, int li);

#endif
