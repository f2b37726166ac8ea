/* Sequential model: shape inference, parameters, Keras summary, training step, inference.
 *
 * The user's Keras layers are lowered to nodes: a Conv2D or Dense with an inline activation
 * becomes two nodes (the layer, then an activation), so every node has one simple forward and
 * backward. Activations are NHWC (channels last, Keras order; Flatten is then free). Buffers are
 * planned once at build for max_batch samples: nothing is allocated inside a training step. */
#include "exec.h"
#include "memtab.h"
#include "model_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- creation ------------------------------------------------------------------------------ */

static void model_orphan(ck_handle *h);

CK_API ck_status ck_model_create(ck_context *ctx, ck_model **out) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    if (!out)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "model: is NULL");
    ck_model *m = (ck_model *)ck_host_calloc(ctx, 1, sizeof *m);
    if (!m)
        return ck_host_oom(ctx, "model", sizeof *m);
    m->ctx = ctx;
    ck_handle_link(ctx, &m->link, model_orphan);
    ck_optimizer_desc_init(&m->opt, CK_OPT_ADAM);
    *out = m;
    return CK_STATUS_SUCCESS;
}

ck_status ck_model_orphaned(void) {
    return ck_fail(NULL, CK_STATUS_BAD_PARAM,
                   "model: its context was destroyed (ck_context_destroy before "
                   "ck_model_destroy)");
}

static void free_buffers(ck_model *m) {
    ck_gpu_model_free(m);
    ck_host_free(m->ctx, m->nodes);
    ck_host_free(m->ctx, m->params);
    ck_host_free(m->ctx, m->grads);
    ck_host_free(m->ctx, m->opt_m);
    ck_host_free(m->ctx, m->opt_v);
    ck_host_free(m->ctx, m->fixed);
    ck_host_free(m->ctx, m->fixed_backup);
    ck_host_free(m->ctx, m->acts);
    ck_host_free(m->ctx, m->gbuf[0]);
    ck_host_free(m->ctx, m->gbuf[1]);
    ck_host_free(m->ctx, m->stats);
    ck_host_free(m->ctx, m->ws);
    ck_host_free(m->ctx, m->logits_grad);
    ck_host_free(m->ctx, m->gnode);
    ck_host_free(m->ctx, m->gscratch);
    m->gnode = m->gscratch = NULL;
    ck_host_free(m->ctx, m->xbf);
    ck_host_free(m->ctx, m->wround);
    m->nodes = NULL;
    m->params = m->grads = m->opt_m = m->opt_v = m->fixed = m->fixed_backup = m->acts = NULL;
    m->gbuf[0] = m->gbuf[1] = m->stats = m->ws = m->logits_grad = m->xbf = m->wround = NULL;
    m->num_nodes = 0;
    m->num_ops = 0;
    m->planned = 0;
    m->built = 0;
}

/* ck_context_destroy with the model alive: its buffers go with the context (internal.h) */
static void model_orphan(ck_handle *h) {
    ck_model *m = (ck_model *)h;
    free_buffers(m);
    ck_host_free(m->ctx, m->layers);
    m->layers = NULL;
    m->num_layers = m->cap_layers = 0;
    m->ctx = NULL;
}

CK_API void ck_model_destroy(ck_model *m) {
    if (!m)
        return;
    if (m->ctx) {
        ck_device_enter(m->ctx);
        ck_handle_unlink(m->ctx, &m->link);
    }
    free_buffers(m);
    ck_host_free(m->ctx, m->layers);
    ck_host_free(m->ctx, m);
}

/* The checks every layer gets at ck_model_add, then its kind's (layer.h). A layer names its
 * inputs by the index of an earlier layer (or the model input): the graph has no cycles by
 * construction. */
static ck_status check_layer(ck_context *ctx, const ck_layer_desc *d, int index) {
    const ck_layer_kind *k = ck_layer_kind_of(d->type);
    if (!k)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "layer %d: unknown type %d", index, (int)d->type);
    /* a name is a file's group path in .keras / .h5 files: one part, ended within its array */
    if (!memchr(d->name, '\0', sizeof d->name))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "layer %d (%s): name is not NUL-terminated", index,
                       k->keras_name);
    if (strchr(d->name, '/'))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "layer %d (%s): name '%s' has a '/' (Keras refuses it)", index,
                       k->keras_name, d->name);
    /* a Keras class the layer was written as must say the layer (ReLU() is a relu) */
    if (!memchr(d->keras_class, '\0', sizeof d->keras_class) ||
        (d->keras_class[0] && strcmp(ck_keras_class_of(d), d->keras_class)))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "layer %d (%s '%s'): keras_class '%.23s' is not a class this layer can be "
                       "written as (it is %s)",
                       index, k->keras_name, d->name, d->keras_class, ck_keras_class_of(d));
    if (d->num_inputs < 0 || d->num_inputs > CK_MAX_LAYER_INPUTS)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "layer %d (%s '%s'): num_inputs %d is not in [0, %d] (0: the previous "
                       "layer)",
                       index, k->keras_name, d->name, d->num_inputs, CK_MAX_LAYER_INPUTS);
    for (int j = 0; j < d->num_inputs; ++j)
        if (d->inputs[j] < CK_LAYER_INPUT_MODEL || d->inputs[j] >= index)
            return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                           "layer %d (%s '%s'): input %d is layer %d, not an earlier layer (a "
                           "layer reads layers added before it, or the model input, %d)",
                           index, k->keras_name, d->name, j + 1, d->inputs[j],
                           CK_LAYER_INPUT_MODEL);
    return k->check ? k->check(ctx, d, index) : CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_add(ck_model *m, const ck_layer_desc *layer) {
    CK_MODEL_ENTRY(m);
    ck_context *ctx = m->ctx;
    ck_enter(ctx);
    if (!layer)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "layer: is NULL");
    if (m->built)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "model: already built, layers can't be added");
    CK_TRY(check_layer(ctx, layer, m->num_layers));
    if (m->num_layers >= CK_MAX_LAYERS)
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED, "model: at most %d layers", CK_MAX_LAYERS);
    if (m->num_layers == m->cap_layers) {
        int cap = m->cap_layers ? 2 * m->cap_layers : 16;
        ck_layer_desc *nl =
            (ck_layer_desc *)ck_host_realloc(ctx, m->layers, sizeof *nl * (size_t)cap);
        if (!nl)
            return ck_host_oom(ctx, "model (its layer table)", sizeof *nl * (size_t)cap);
        m->layers = nl;
        m->cap_layers = cap;
    }
    m->layers[m->num_layers++] = *layer;
    return CK_STATUS_SUCCESS;
}

/* ---- build ----------------------------------------------------------------------------------- */

/* Appends the nodes a layer lowered to (the first runs the layer, the others its inline
 * activation), each as one op of that layer. The table holds two nodes per layer, so it never
 * fills. */
static void push_nodes(ck_model *m, int layer, const ck_node *nodes, int count) {
    for (int j = 0; j < count; ++j) {
        ck_node *n = &m->nodes[m->num_nodes++];
        *n = nodes[j];
        n->layer = layer;
        n->drop_layer = -1;
        n->nops = 1;
        n->ops[0] = m->num_ops;
        m->op_layer[m->num_ops] = layer;
        m->op_inline[m->num_ops] = (unsigned char)(j > 0);
        m->num_ops++;
    }
}

CK_API ck_status ck_model_build(ck_model *m, int h, int w, int c, int max_batch) {
    CK_MODEL_ENTRY(m);
    ck_context *ctx = m->ctx;
    ck_enter(ctx);
    if (m->built)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "model: already built");
    if (m->num_layers == 0)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "model: has no layers");
#ifndef CNNKIT_HAVE_CUDA
    if (ctx->device != CK_DEVICE_CPU)
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED, "model: this build has no CUDA backend");
#endif
    if (h == 0 && w == 0 && c == 0) {
        h = m->layers[0].input_h;
        w = m->layers[0].input_w;
        c = m->layers[0].input_c;
        if (h == 0)
            return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                           "h, w, c: are 0 and the first layer has no input_shape");
    }
    if (h < 1 || w < 1 || c < 1)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "h, w, c: input shape %dx%dx%d must be >= 1", h, w,
                       c);
    if (max_batch < 1)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "max_batch: must be >= 1, got %d", max_batch);

    /* Keras's naming, skipping names a layer already has: a functional model's tensors name
     * their layers, so names must be unique */
    ck_layers_auto_name(m->layers, m->num_layers);
    for (int k = 0; !m->input_name[0]; ++k) { /* Keras's "input_layer", unless a layer has it */
        if (k)
            snprintf(m->input_auto, sizeof m->input_auto, "input_layer_%d", k);
        else
            snprintf(m->input_auto, sizeof m->input_auto, "input_layer");
        int taken = 0;
        for (int li = 0; li < m->num_layers && !taken; ++li)
            taken = !strcmp(m->layers[li].name, m->input_auto);
        if (!taken)
            break;
    }
    for (int li = 0; li < m->num_layers && m->input_name[0]; ++li)
        if (!strcmp(m->layers[li].name, m->input_name))
            return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                           "model: its input and layer %d are both named '%s' (names are unique "
                           "in a model)",
                           li, m->input_name);
    const int cap = 2 * m->num_layers;
    m->nodes = (ck_node *)ck_host_calloc(ctx, (size_t)cap, sizeof *m->nodes);
    m->num_nodes = m->num_ops = 0;
    m->planned = 0;
    /* a new node list: the profile restarts (ck_model_set_profiling) */
    memset(m->prof_fwd, 0, sizeof m->prof_fwd);
    memset(m->prof_bwd, 0, sizeof m->prof_bwd);
    m->prof_opt = m->prof_step = 0.0;
    m->prof_steps = 0;
    m->prof_samples = 0.0;
    if (!m->nodes)
        return ck_host_oom(ctx, "model (its node table)", (size_t)cap * sizeof *m->nodes);
    /* a vector input (n,) is 1 x 1 x n inside, flat to the layers and in the summary */
    m->in_flat = m->layers[0].input_flat && h == 1 && w == 1;
    const ck_shape3 in0 = {h, w, c, m->in_flat};
    size_t nparams = 0, nfixed = 0, maxact = (size_t)h * w * c, nstats = 0, ws = 0;
    double nparams_d = 0.0; /* nparams in double: a model too large for size_t is refused below */
    /* graph models: the node holding each layer's output, and whether a later layer reads it */
    int last_node[CK_MAX_LAYERS];
    unsigned char is_read[CK_MAX_LAYERS] = {0};
    m->in_h = h;
    m->in_w = w;
    m->in_c = c;
    m->graph = 0;
    for (int li = 0; li < m->num_layers; ++li)
        if (m->layers[li].num_inputs > 0)
            m->graph = 1;
    for (int li = 0; li < m->num_layers; ++li) {
        ck_layer_desc *d = &m->layers[li];
        const ck_layer_kind *k = ck_layer_kind_of(d->type); /* ck_model_add checked the type */
        /* its inputs (ck_model_add checked they are earlier layers) and their shapes */
        int nin = d->num_inputs > 0 ? d->num_inputs : 1, src[CK_MAX_LAYER_INPUTS];
        ck_shape3 ins[CK_MAX_LAYER_INPUTS];
        src[0] = li - 1;
        for (int j = 0; j < d->num_inputs; ++j)
            src[j] = d->inputs[j];
        for (int j = 0; j < nin; ++j) {
            ins[j] = src[j] < 0 ? in0 : m->lshape[src[j]];
            if (src[j] >= 0)
                is_read[src[j]] = 1;
        }
        ck_status st = CK_STATUS_SUCCESS;
        if (!k->min_inputs && nin != 1)
            st = ck_fail(ctx, CK_STATUS_BAD_PARAM,
                         "layer %d (%s '%s'): reads %d inputs; a %s layer reads one", li,
                         k->keras_name, d->name, nin, k->keras_name);
        else if (nin < k->min_inputs)
            st = ck_fail(ctx, CK_STATUS_BAD_PARAM,
                         "layer %d (%s '%s'): reads %d input; %s needs at least %d (name them in "
                         "num_inputs and inputs: a graph model)",
                         li, k->keras_name, d->name, nin, k->keras_name, k->min_inputs);
        ck_shape3 out;
        if (st == CK_STATUS_SUCCESS)
            st = k->infer_n ? k->infer_n(ctx, d, li, ins, nin, &out)
                            : k->infer(ctx, d, li, &ins[0], &out);
        if (st != CK_STATUS_SUCCESS) {
            free_buffers(m);
            return st;
        }
        m->lshape[li] = out;
        m->lin[li] = ins[0];
        m->lparam_off[li] = nparams;
        m->lfixed_off[li] = nfixed;
        ck_param_spec spec[CK_LAYER_MAX_PARAMS];
        ck_layer_place at = {{0}, nstats};
        const int np = ck_model_layer_specs(m, li, spec, at.off);
        for (int i = 0; i < np; ++i) {
            if (spec[i].trainable) {
                nparams += spec[i].count;
                nparams_d += spec[i].dcount;
            } else {
                nfixed += spec[i].count;
            }
        }
        nstats += (size_t)k->stats_per_channel * (size_t)out.c;
        ck_node nodes[2];
        memset(nodes, 0, sizeof nodes);
        const int first = m->num_nodes;
        push_nodes(m, li, nodes, k->lower(d, &ins[0], &out, spec, &at, nodes));
        for (int i = first; i < m->num_nodes; ++i) {
            /* graph models: the layer's first node reads its inputs' nodes, the inline
             * activation the node before it */
            ck_node *n = &m->nodes[i];
            n->nin = i == first ? nin : 1;
            for (int j = 0; j < n->nin; ++j)
                n->in[j] = i > first ? i - 1 : src[j] < 0 ? -1 : last_node[src[j]];
            /* the shared CPU workspace: the largest any node needs (the conv's im2col) */
            const ck_node_ops *op = &n->kind->ops[CK_BE_CPU];
            const size_t wsf = op->ws_bytes ? (op->ws_bytes(ctx, n, max_batch, NULL) + 3) / 4 : 0;
            if (wsf > ws)
                ws = wsf;
        }
        last_node[li] = m->num_nodes - 1;
        size_t o = (size_t)out.h * out.w * out.c;
        if (o > maxact)
            maxact = o;
    }
    /* a graph's output is its last layer: a layer nothing reads would get no gradient */
    for (int li = 0; m->graph && li + 1 < m->num_layers; ++li)
        if (!is_read[li]) {
            const ck_layer_desc *d = &m->layers[li];
            const ck_status st = ck_fail(
                ctx, CK_STATUS_BAD_PARAM,
                "layer %d (%s '%s'): no later layer reads its output; a graph model's output is "
                "its last layer, and every other layer must lead to it",
                li, ck_layer_type_name(d->type), d->name);
            free_buffers(m);
            return st;
        }
    /* the execution plan (plan.c), run by train.c on the CPU and backend_cuda.c on CUDA */
    if (!m->planning_off)
        (m->graph ? ck_model_plan_graph : ck_model_plan)(m);
    ck_model_plan_index(m);
    const ck_node *last = &m->nodes[m->num_nodes - 1];
    if (last->oh != 1 || last->ow != 1 || last->oc < 2) {
        /* the shape is copied out before free_buffers releases the nodes */
        const int oh = last->oh, ow = last->ow, oc = last->oc;
        free_buffers(m);
        return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                       "model: output (None, %d, %d, %d) is not a vector of >= 2 class scores; a "
                       "classifier ends with Dense(classes) (and softmax)",
                       oh, ow, oc);
    }
    m->classes = last->oc;
    m->softmax_last = last->type == CK_NODE_ACT && last->act == CK_ACT_SOFTMAX;
    if (m->graph) {
        /* backward runs from the logits node down: the first reader of a tensor it meets writes
         * the tensor's gradient, every later one adds to it */
        unsigned char written[CK_MAX_OPS] = {0};
        for (int i = ck_exec_logits_node(m); i >= 0; --i) {
            ck_node *n = &m->nodes[i];
            for (int j = 0; j < n->nin; ++j)
                if (n->in[j] >= 0) {
                    n->in_acc[j] = written[n->in[j]];
                    written[n->in[j]] = 1;
                }
        }
    }

    /* the same total in double: sizes past what size_t holds would wrap in the sums below */
    double nact_d = 0.0;
    for (int i = 0; i < m->num_nodes; ++i)
        if (!m->nodes[i].kind->alias)
            nact_d += (double)m->nodes[i].oh * m->nodes[i].ow * m->nodes[i].oc * max_batch;
    const double graph_d = m->graph ? nact_d + (double)CK_MAX_LAYER_INPUTS * maxact * max_batch : 0;
    const double host_d =
        4.0 * (4.0 * nparams_d + 2.0 * (double)nfixed + nact_d + 2.0 * (double)maxact * max_batch +
               (double)nstats + (double)ws + (double)m->classes * max_batch + graph_d);
    if (!(host_d < 0x1p62)) {
        free_buffers(m);
        return ck_fail(ctx, CK_STATUS_ALLOC_FAILED,
                       "model: needs %.3g bytes of host memory for batches of %d, more than this "
                       "machine can address",
                       host_d, max_batch);
    }
    m->num_params = nparams;
    m->num_fixed = nfixed;
    m->num_stats = nstats;
    m->max_batch = max_batch;
    ck_memtab host;
    ck_memtab_plan(m, CK_BE_CPU, NULL, &host);
    m->mem_act_bytes = host.bytes[CK_MEM_ACTS];
    /* on a CUDA context the activations, gradients and workspace live on the device
     * (backend_cuda.c): the host keeps the parameters, optimizer state and a logits buffer only */
    const int on_gpu = ctx->device == CK_DEVICE_CUDA;
    if (on_gpu) {
        ck_memtab_shrink(&host, CK_MEM_ACTS);
        ck_memtab_shrink(&host, CK_MEM_GBUF0);
        ck_memtab_shrink(&host, CK_MEM_GBUF1);
        ck_memtab_shrink(&host, CK_MEM_WS);
        /* the bf16 twin's rounded batch and weights: the device packs its own */
        ck_memtab_drop(&host, CK_MEM_X);
        ck_memtab_drop(&host, CK_MEM_WROUND);
        if (m->graph) {
            ck_memtab_shrink(&host, CK_MEM_GNODE);
            ck_memtab_shrink(&host, CK_MEM_GSCRATCH);
        }
    }
    m->gscratch_stride = host.gscratch_stride;
    m->mem_host_bytes = host.total;
    float **slot[CK_MEM_COUNT] = {0};
    slot[CK_MEM_PARAMS] = &m->params;
    slot[CK_MEM_GRADS] = &m->grads;
    slot[CK_MEM_OPT_M] = &m->opt_m;
    slot[CK_MEM_OPT_V] = &m->opt_v;
    slot[CK_MEM_FIXED] = &m->fixed;
    slot[CK_MEM_FIXED_BACKUP] = &m->fixed_backup;
    slot[CK_MEM_STATS] = &m->stats;
    slot[CK_MEM_ACTS] = &m->acts;
    slot[CK_MEM_GBUF0] = &m->gbuf[0];
    slot[CK_MEM_GBUF1] = &m->gbuf[1];
    slot[CK_MEM_LOGITS_GRAD] = &m->logits_grad;
    slot[CK_MEM_X] = &m->xbf;
    slot[CK_MEM_WROUND] = &m->wround;
    slot[CK_MEM_WS] = &m->ws;
    slot[CK_MEM_GNODE] = &m->gnode;
    slot[CK_MEM_GSCRATCH] = &m->gscratch;
    for (int k = 0; k < CK_MEM_COUNT; ++k) {
        if (!host.bytes[k])
            continue;
        /* what a step reads before writing starts at zero (the optimizer state, the statistics) */
        const int zero = k <= CK_MEM_STATS;
        *slot[k] =
            (float *)(zero ? ck_host_calloc(ctx, host.bytes[k] / sizeof(float), sizeof(float))
                           : ck_host_alloc(ctx, host.bytes[k]));
        if (!*slot[k]) {
            free_buffers(m);
            return ck_host_oom(ctx, "model (parameters, optimizer state and activations)",
                               host.total);
        }
    }
    for (int i = 0; i < m->num_nodes; ++i) {
        ck_node *n = &m->nodes[i];
        const int src = m->graph ? n->in[0] : i - 1; /* the planner keeps n->in of graphs only */
        n->out = on_gpu           ? NULL
                 : n->kind->alias ? (src >= 0 ? m->nodes[src].out : NULL)
                                  : (float *)((char *)m->acts + n->act_offset);
    }
    ck_model_init_params(m);
    ck_model_plan_updates(m);
    if (on_gpu) {
        ck_status st = ck_gpu_model_build(m);
        if (st == CK_STATUS_SUCCESS)
            st = ck_gpu_model_push(m);
        if (st != CK_STATUS_SUCCESS) {
            free_buffers(m);
            return st;
        }
    }
    m->built = 1;
    return CK_STATUS_SUCCESS;
}

/* ---- queries and summary -----------------------------------------------------------------------
 */

CK_API ck_status ck_model_param_counts(const ck_model *m, ck_param_counts *counts) {
    CK_MODEL_ENTRY(m);
    if (!counts)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "counts: is NULL");
    if (!m->built)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    counts->trainable = (long long)m->num_params;
    counts->non_trainable = (long long)m->num_fixed;
    counts->total = counts->trainable + counts->non_trainable;
    return CK_STATUS_SUCCESS;
}

static void fmt_count(char *buf, size_t len, long long v) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lld", v);
    size_t n = strlen(tmp), o = 0;
    for (size_t i = 0; i < n && o + 1 < len; ++i) {
        if (i > 0 && (n - i) % 3 == 0 && o + 2 < len)
            buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
}

static void shape_str(char *buf, size_t len, int h, int w, int c, int is_flat) {
    if (is_flat)
        snprintf(buf, len, "(None, %d)", c);
    else
        snprintf(buf, len, "(None, %d, %d, %d)", h, w, c);
}

/* The end of a call that writes text into the caller's buf: the size it needs, and BAD_PARAM
 * when buf was NULL or too small. */
static ck_status text_done(const ck_model *m, const ck_sbuf *b, size_t *needed) {
    if (needed)
        *needed = b->used + 1;
    if (!b->p || b->used + 1 > b->len)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "buf: %zu bytes needed, %zu given", b->used + 1,
                       b->len);
    return CK_STATUS_SUCCESS;
}

/* A table row; a "name (Class)" wider than its column goes on a line of its own, so the columns
 * stay apart ("global_average_pooling2d (GlobalAveragePooling2D)" is 48 characters). */
static void summary_row(ck_sbuf *b, const char *name, const char *shape, const char *cnt,
                        const char *tail) {
    if (strlen(name) >= 45) {
        ck_sbuf_printf(b, " %s\n", name);
        name = "";
    }
    ck_sbuf_printf(b, " %-45s%-24s%-10s%s%s\n", name, shape, cnt, tail[0] ? "  " : "", tail);
}

/* Keras's test for the "Connected to" column: a functional model is shown like a Sequential one
 * when each layer reads one tensor and no tensor is read twice. */
static int sequential_like(const ck_model *m) {
    for (int li = 0; li < m->num_layers; ++li) {
        const ck_layer_desc *d = &m->layers[li];
        if (d->num_inputs > 1)
            return 0;
        const int src = d->num_inputs > 0 ? d->inputs[0] : li - 1;
        for (int lj = li + 1; lj < m->num_layers; ++lj)
            if ((m->layers[lj].num_inputs > 0 ? m->layers[lj].inputs[0] : lj - 1) == src)
                return 0;
    }
    return 1;
}

/* The table of a graph model in the layout of the Sequential one with Keras 3's names (model
 * "functional", its input "input_layer", as the .keras writer names them): the input layer
 * first ("-"), then each layer with the tensors it reads, one per line ("conv2d[0][0],"). */
static void summary_graph(const ck_model *m, ck_sbuf *b, const char *rule, const char *dbl,
                          int connected) {
    const char *in_name = ck_model_input_name(m);
    char shape[80], cell[80];
    ck_sbuf_printf(b, "Model: \"%s\"\n%s\n", ck_model_name(m), rule);
    ck_sbuf_printf(b, " %-45s%-24s%-10s%s%s\n%s\n", "Layer (type)", "Output Shape", "Param #",
                   connected ? "  " : "", connected ? "Connected to" : "", dbl);
    shape_str(shape, sizeof shape, m->in_h, m->in_w, m->in_c, m->in_flat);
    snprintf(cell, sizeof cell, "%s (InputLayer)", in_name);
    ck_sbuf_printf(b, " %-45s%-24s%-10s%s\n\n", cell, shape, "0", connected ? "  -" : "");
    for (int li = 0; li < m->num_layers; ++li) {
        const ck_layer_desc *d = &m->layers[li];
        char name[96], cnt[32];
        long long t, f;
        ck_model_layer_params(m, li, &t, &f);
        snprintf(name, sizeof name, "%s (%s)", d->name, ck_keras_class_of(d));
        shape_str(shape, sizeof shape, m->lshape[li].h, m->lshape[li].w, m->lshape[li].c,
                  ck_model_layer_is_flat(m, li));
        fmt_count(cnt, sizeof cnt, t + f);
        const int nin = d->num_inputs > 0 ? d->num_inputs : 1;
        for (int j = 0; j < nin; ++j) {
            const int src = d->num_inputs > 0 ? d->inputs[j] : li - 1;
            snprintf(cell, sizeof cell, "%s[0][0]%s", src < 0 ? in_name : m->layers[src].name,
                     j + 1 < nin ? "," : "");
            if (j == 0)
                summary_row(b, name, shape, cnt, connected ? cell : "");
            else
                ck_sbuf_printf(b, " %-45s%-24s%-10s  %s\n", "", "", "", cell);
        }
        if (li + 1 < m->num_layers)
            ck_sbuf_printf(b, "\n");
    }
}

CK_API ck_status ck_model_summary(const ck_model *m, char *buf, size_t len, size_t *needed) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    if (!m->built)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    ck_sbuf b;
    ck_sbuf_init(&b, buf, len);
    /* Keras 2 layout, with a first column wide enough for the longest Keras layer names */
    const char *rule =
        "_____________________________________________________________________________"
        "___";
    const char *dbl =
        "============================================================================="
        "===";
    const int connected = m->graph && !sequential_like(m);
    if (connected) { /* room for the "Connected to" column */
        rule = "___________________________________________________________________________"
               "_______________________________________";
        dbl = "============================================================================"
              "======================================";
    }
    if (m->graph) { /* Keras 2's functional table: an input row (and "Connected to") */
        summary_graph(m, &b, rule, dbl, connected);
    } else {
        ck_sbuf_printf(&b, "Model: \"%s\"\n%s\n", ck_model_name(m), rule);
        ck_sbuf_printf(&b, " %-45s%-24s%-10s\n%s\n", "Layer (type)", "Output Shape", "Param #",
                       dbl);
        for (int li = 0; li < m->num_layers; ++li) {
            const ck_layer_desc *d = &m->layers[li];
            char name[96], shape[64], cnt[32];
            long long t, f;
            ck_model_layer_params(m, li, &t, &f);
            snprintf(name, sizeof name, "%s (%s)", d->name, ck_keras_class_of(d));
            shape_str(shape, sizeof shape, m->lshape[li].h, m->lshape[li].w, m->lshape[li].c,
                      ck_model_layer_is_flat(m, li));
            fmt_count(cnt, sizeof cnt, t + f);
            summary_row(&b, name, shape, cnt, "");
            if (li + 1 < m->num_layers)
                ck_sbuf_printf(&b, "\n");
        }
    }
    char tot[32], tr[32], nt[32];
    fmt_count(tot, sizeof tot, (long long)(m->num_params + m->num_fixed));
    fmt_count(tr, sizeof tr, (long long)m->num_params);
    fmt_count(nt, sizeof nt, (long long)m->num_fixed);
    ck_sbuf_printf(&b, "%s\nTotal params: %s\nTrainable params: %s\nNon-trainable params: %s\n%s\n",
                   dbl, tot, tr, nt, rule);
    /* the execution plan (plan.c), after the Keras table */
    const char *why = !m->planned ? "planning off"
                      : m->graph  ? "planning on: BN+ReLU and Add+ReLU only in a graph model"
                                  : "planning on";
    ck_sbuf_printf(&b, "Execution plan: %d nodes for %d layers (%s)\n", m->num_nodes, m->num_layers,
                   why);
    for (int i = 0; i < m->num_nodes; ++i) {
        char line[512];
        ck_model_plan_describe_node(m, i, line, sizeof line);
        ck_sbuf_printf(&b, " %3d  %s\n", i + 1, line);
    }
    const size_t dev_bytes = ck_gpu_model_arena_bytes(m);
    ck_sbuf_printf(&b, "Memory for batches of up to %d: activations %.1f MiB, host %.1f MiB",
                   m->max_batch, m->mem_act_bytes / 1048576.0, m->mem_host_bytes / 1048576.0);
    if (dev_bytes)
        ck_sbuf_printf(&b, ", device arena %.1f MiB", dev_bytes / 1048576.0);
    ck_sbuf_printf(&b, "\n");
    return text_done(m, &b, needed);
}

CK_API ck_status ck_model_conv_algorithms(const ck_model *m, char *buf, size_t len,
                                          size_t *needed) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    if (!m->built)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    ck_sbuf b;
    ck_sbuf_init(&b, buf, len);
    for (int i = 0; i < m->num_nodes; ++i) {
        const ck_node *n = &m->nodes[i];
        if (n->type != CK_NODE_CONV)
            continue;
        char line[512];
        if (!m->gpu || ck_gpu_model_conv_describe(m, i, line, sizeof line) != 0)
            snprintf(line, sizeof line, "CPU im2col + OpenBLAS GEMM, strict fp32, deterministic");
        ck_sbuf_printf(&b, "%s: %s\n", m->layers[n->layer].name, line);
    }
    return text_done(m, &b, needed);
}

CK_API ck_status ck_model_memory_usage(const ck_model *m, ck_model_memory *mem) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    if (!mem)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "mem: NULL");
    if (!m->built)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "model: not built (call ck_model_build)");
    mem->activation_bytes = m->mem_act_bytes;
    mem->host_bytes = m->mem_host_bytes;
    mem->device_bytes = ck_gpu_model_arena_bytes(m);
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_set_planning(ck_model *m, int enable) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    if (m->built)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                       "model: already built, planning is chosen before ck_model_build");
    m->planning_off = !enable;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_set_precision(ck_model *m, ck_precision precision) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    if ((int)precision < CK_PRECISION_FP32 || (int)precision > CK_PRECISION_BF16)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                       "model: precision %d is not CK_PRECISION_FP32, _TF32 or _BF16",
                       (int)precision);
    if (m->built)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                       "model: already built, precision is chosen before ck_model_build");
    const int cuda = m->ctx->device == CK_DEVICE_CUDA;
    /* TF32 is the context's cuDNN/cuBLAS math mode, read when the model's GPU plans are made;
     * the CPU always computes strict fp32 and leaves the context's setting alone. */
    if (cuda) {
        const ck_status st = ck_context_set_math(
            m->ctx, precision == CK_PRECISION_TF32 ? CK_MATH_TF32 : CK_MATH_STRICT_FP32);
        if (st != CK_STATUS_SUCCESS)
            return st;
    }
    m->precision = precision;
    return CK_STATUS_SUCCESS;
}

static ck_status check_name(ck_context *ctx, const char *arg, const char *name) {
    if (!name)
        return CK_STATUS_SUCCESS;
    const size_t n = strnlen(name, 48);
    if (n >= 48)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "%s: longer than 47 bytes (UTF-8)", arg);
    if (memchr(name, '/', n))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "%s: '%s' has a '/' (Keras refuses it)", arg,
                       name);
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_set_name(ck_model *m, const char *name, const char *input_name) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    CK_TRY(check_name(m->ctx, "name", name));
    CK_TRY(check_name(m->ctx, "input_name", input_name));
    if (name)
        snprintf(m->name, sizeof m->name, "%s", name);
    if (input_name)
        snprintf(m->input_name, sizeof m->input_name, "%s", input_name);
    return CK_STATUS_SUCCESS;
}

CK_API const char *ck_model_name(const ck_model *m) {
    if (!m || !m->ctx)
        return "";
    if (m->name[0])
        return m->name;
    for (int li = 0; li < m->num_layers; ++li)
        if (m->layers[li].num_inputs > 0)
            return "functional";
    return "sequential";
}

CK_API const char *ck_model_input_name(const ck_model *m) {
    if (!m || !m->ctx)
        return "";
    return m->input_name[0] ? m->input_name : m->input_auto[0] ? m->input_auto : "input_layer";
}

CK_API ck_precision ck_model_precision(const ck_model *m) {
    return m && m->ctx ? m->precision : CK_PRECISION_FP32;
}

CK_API const char *ck_precision_name(ck_precision p) {
    return p == CK_PRECISION_FP32   ? "fp32"
           : p == CK_PRECISION_TF32 ? "tf32"
           : p == CK_PRECISION_BF16 ? "bf16"
                                    : "?";
}

CK_API int ck_model_num_nodes(const ck_model *m) {
    return m && m->ctx && m->built ? m->num_nodes : 0;
}

CK_API int ck_model_num_layers(const ck_model *m) {
    return m && m->ctx ? m->num_layers : 0;
}

CK_API int ck_model_num_classes(const ck_model *m) {
    return m && m->ctx && m->built ? m->classes : 0;
}

CK_API ck_status ck_model_input_shape(const ck_model *m, int *h, int *w, int *c) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    if (!m->built)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    if (!h || !w || !c)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "%s: NULL", !h ? "h" : !w ? "w" : "c");
    *h = m->in_h;
    *w = m->in_w;
    *c = m->in_c;
    return CK_STATUS_SUCCESS;
}

CK_API long long ck_model_step(const ck_model *m) {
    return m && m->ctx ? m->step : 0;
}

CK_API ck_status ck_model_layer_shape(const ck_model *m, int i, int *h, int *w, int *c) {
    CK_MODEL_ENTRY(m);
    if (!m->built || i < 0 || i >= m->num_layers)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "i: layer %d of %d (model built: %d)", i,
                       m->num_layers, m->built);
    if (h)
        *h = m->lshape[i].h;
    if (w)
        *w = m->lshape[i].w;
    if (c)
        *c = m->lshape[i].c;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_layer_desc(const ck_model *m, int i, ck_layer_desc *desc) {
    CK_MODEL_ENTRY(m);
    if (!desc)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "desc: is NULL");
    if (i < 0 || i >= m->num_layers)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "i: layer %d of %d", i, m->num_layers);
    *desc = m->layers[i];
    return CK_STATUS_SUCCESS;
}

/* The settings ck_model_set_optimizer accepts (and a checkpoint's optimizer must have). */
ck_status ck_optimizer_check(ck_context *ctx, const ck_optimizer_desc *opt) {
    if (!ck_optimizer_name(opt->type))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "opt->type: unknown optimizer %d", (int)opt->type);
    /* learning rate 0 is a frozen model, as Keras allows: its steps change nothing */
    if (!(opt->learning_rate >= 0.0f) || !isfinite(opt->learning_rate) ||
        !(opt->weight_decay >= 0.0f))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "opt: learning_rate must be finite and >= 0, weight_decay >= 0");
    if (opt->type == CK_OPT_ADAM &&
        (!(opt->beta1 >= 0.0f && opt->beta1 < 1.0f) || !(opt->beta2 >= 0.0f && opt->beta2 < 1.0f) ||
         !(opt->epsilon > 0.0f)))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "opt: Adam needs beta1, beta2 in [0, 1) and epsilon > 0");
    if (opt->type != CK_OPT_ADAM && !(opt->momentum >= 0.0f && opt->momentum < 1.0f))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "opt->momentum: must be in [0, 1)");
    if (opt->type == CK_OPT_ADADELTA &&
        (!(opt->rho >= 0.0f && opt->rho < 1.0f) || !(opt->epsilon > 0.0f) ||
         !isfinite(opt->epsilon) || opt->momentum != 0.0f))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "opt: Adadelta needs rho in [0, 1), a finite epsilon > 0 and momentum 0");
    if (opt->type == CK_OPT_RMSPROP) {
        if (!(opt->rho >= 0.0f && opt->rho < 1.0f) || !(opt->epsilon > 0.0f) ||
            !isfinite(opt->epsilon))
            return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                           "opt: RMSprop needs rho in [0, 1) and a finite epsilon > 0");
        if (opt->centered && opt->momentum > 0.0f)
            return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                           "opt: RMSprop with centered and momentum > 0 together is not supported "
                           "(it needs three state arrays per parameter; cnnkit keeps two)");
    }
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_set_optimizer(ck_model *m, const ck_optimizer_desc *opt) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    if (!opt)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "opt: is NULL");
    CK_TRY(ck_optimizer_check(m->ctx, opt));
    /* on a CUDA context the device holds the live state: bring it back first, so that the push
     * below (zeroed moments) does not overwrite trained weights with stale host copies */
    if (m->built && m->gpu) {
        ck_status st = ck_gpu_model_pull(m);
        if (st != CK_STATUS_SUCCESS)
            return st;
    }
    m->opt = *opt;
    if (m->built) {
        memset(m->opt_m, 0, sizeof(float) * m->num_params);
        memset(m->opt_v, 0, sizeof(float) * m->num_params);
        if (m->gpu)
            return ck_gpu_model_push(m);
    }
    return CK_STATUS_SUCCESS;
}
