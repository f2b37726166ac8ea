/* The per-node roofline of the training profile (ck_model_profile): each planned node's work in
 * one training step, and the time that work takes at the device's peaks (context.c,
 * device_peak.c). One function over every node kind here, not one per layer file: the counts
 * are a model of minimum DRAM traffic, which follows the node's tensors and the plan's fusions
 * (ops, bf16 storage), not how a backend runs the kind. */
#include "exec.h"
#include "model_internal.h"

/* Elements per sample of the tensor node i reads from src (-1: the model input). */
static double elems_of(const ck_model *m, int src) {
    if (src < 0)
        return (double)m->in_h * m->in_w * m->in_c;
    const ck_node *s = &m->nodes[src];
    return (double)s->oh * s->ow * s->oc;
}

/* The node's k-th input (-1: the model input). */
static int input_of(const ck_model *m, int i, int k) {
    return m->graph ? m->nodes[i].in[k] : i - 1;
}

/* Another op in the node is an activation (a ReLU fused into a conv, dense or add): its backward
 * reads the node's output once more (the ReLU's mask). BN nodes recompute theirs from x. */
static int fused_activation(const ck_model *m, const ck_node *n) {
    for (int q = 1; q < n->nops; ++q) {
        const int op = n->ops[q];
        if (m->op_inline[op] || m->layers[m->op_layer[op]].type == CK_LAYER_ACTIVATION)
            return 1;
    }
    return 0;
}

/* What is counted, per sample T_x, T_y (input, output elements x their storage bytes):
 *  FLOPs: the multiply-adds of conv and dense, 2 per MAC (conv forward 2*N*OH*OW*Cout*KH*KW*Cin,
 *  dense 2*N*in*out; backward the filter gradient and, when the input wants one, the data
 *  gradient, as much again each; the bias is not counted). Every other kind counts 0 FLOPs: at
 *  well under 2 FLOPs per byte they sit far below any GPU's ridge point, bound by their bytes.
 *  Bytes: each tensor a direction needs read once and each result written once (fp32 weights,
 *  gradients and BN statistics included), with these exceptions:
 *  - BN (+ReLU, + fused SpatialDropout) forward 3T: the kernel (src/kernels/batchnorm.cu) reads
 *    x twice, in its statistics pass and in the apply pass, which a tensor larger than L2 cannot
 *    avoid; backward 3T (read dy, x; write dx) although the kernel reads x and dy twice (5T):
 *    its backward row shows up to 1.67x from that alone. The ReLU mask is recomputed from x,
 *    the SpatialDropout scales (N*C) are not counted.
 *  - max pooling backward reads x (the argmax) besides dy; average pooling does not.
 *  - zero padding backward reads only the interior of dy.
 *  - dropout masks are regenerated from the step's key (no mask bytes).
 *  - a node whose input is the model input writes no input gradient.
 * Storage: as the executor stores each tensor (ck_node_out_dt, ck_node_dy_dt; bf16_storage: a bf16
 * model on a GPU), 2 or 4 bytes per element. */
ck_node_work ck_node_work_of(const ck_model *m, int i, double batch, int bf16_storage) {
    ck_node_work w = {0.0, 0.0, 0.0, 0.0};
    const ck_node *n = &m->nodes[i];
    const int ln = ck_exec_logits_node(m);
    if (i > ln || n->kind->alias || !(batch > 0.0))
        return w; /* the softmax after the logits does not run in training; Flatten is a view */
    const double es_y = (double)ck_kdt_bytes(ck_node_out_dt(m, bf16_storage, i), 1);
    const double es_dy = (double)ck_kdt_bytes(ck_node_dy_dt(m, bf16_storage, i), 1);
    const int src0 = input_of(m, i, 0);
    const double es_x = (double)ck_kdt_bytes(ck_node_out_dt(m, bf16_storage, src0), 1);
    const int dx = src0 >= 0;
    const double X = batch * elems_of(m, src0), Y = batch * (double)n->oh * n->ow * n->oc;
    const double x = X * es_x, y = Y * es_y, dy = Y * es_dy;
    switch (n->type) {
    case CK_NODE_CONV:
    case CK_NODE_DENSE: {
        /* n_kernel = KH*KW*Cin*Cout (conv) or in*out (dense): the MACs per output pixel */
        const double pix = n->type == CK_NODE_CONV ? (double)n->oh * n->ow : 1.0;
        const double macs = batch * pix * (double)n->n_kernel;
        const double wb = 4.0 * (double)n->n_kernel, bb = 4.0 * (double)n->n_bias;
        w.fwd_flops = 2.0 * macs;
        w.fwd_bytes = x + wb + bb + y;
        w.bwd_flops = 2.0 * macs * (dx ? 2.0 : 1.0);
        /* read dy, x (filter gradient), W (data gradient); write dW, db, dx */
        w.bwd_bytes = dy + x + wb + bb + (dx ? wb + x : 0.0);
        if (fused_activation(m, n))
            w.bwd_bytes += y;
        break;
    }
    case CK_NODE_BN: {
        const double pb = 4.0 * 2.0 * (double)n->oc; /* gamma, beta (and their gradients) */
        w.fwd_bytes = 2.0 * x + y + pb;
        w.bwd_bytes = dy + x + pb + pb + (dx ? x : 0.0);
        break;
    }
    case CK_NODE_POOL:
        w.fwd_bytes = x + y;
        if (dx)
            w.bwd_bytes = dy + x + (n->is_max ? x : 0.0);
        break;
    case CK_NODE_ACT: /* backward reads the output for the derivative */
        w.fwd_bytes = x + y;
        if (dx)
            w.bwd_bytes = dy + y + x;
        break;
    case CK_NODE_GAP:
    case CK_NODE_DROPOUT:
    case CK_NODE_SDROPOUT:
        w.fwd_bytes = x + y;
        if (dx)
            w.bwd_bytes = dy + x;
        break;
    default: {
        /* Add, Concatenate, Rescaling, ZeroPadding2D: every input read, the output written;
         * backward dy read and every wanted input gradient written */
        const int type = m->layers[n->layer].type;
        const int nin = m->graph && n->nin > 0 ? n->nin : 1;
        double xs = 0.0, dxs = 0.0;
        for (int k = 0; k < nin; ++k) {
            const int s = input_of(m, i, k);
            const double b = batch * elems_of(m, s) *
                             (double)ck_kdt_bytes(ck_node_out_dt(m, bf16_storage, s), 1);
            xs += b;
            if (s >= 0)
                dxs += b;
        }
        w.fwd_bytes = xs + y;
        if (dxs > 0.0) {
            /* zero padding: only dy's interior (the input's size) is read */
            w.bwd_bytes = (type == CK_LAYER_ZEROPADDING2D ? X * es_dy : dy) + dxs;
            if (fused_activation(m, n))
                w.bwd_bytes += y;
        }
        break;
    }
    }
    return w;
}

double ck_roofline_ms(double flops, double bytes, double peak_flops, double peak_bytes) {
    if ((flops > 0.0 && !(peak_flops > 0.0)) || (bytes > 0.0 && !(peak_bytes > 0.0)))
        return 0.0; /* a peak this work needs is unknown */
    const double tc = flops > 0.0 ? flops / peak_flops : 0.0;
    const double tm = bytes > 0.0 ? bytes / peak_bytes : 0.0;
    return 1e3 * (tc > tm ? tc : tm);
}

double ck_model_peak_flops(const ck_model *m) {
    const ck_context *ctx = m->ctx;
    if (ctx->device != CK_DEVICE_CUDA)
        return 0.0;
    if (m->precision == CK_PRECISION_BF16)
        return ctx->peak.bf16_flops;
    /* CK_PRECISION_TF32 sets the context's math (model.h) */
    return ctx->math == CK_MATH_TF32 ? ctx->peak.tf32_flops : ctx->peak.fp32_flops;
}
