/* The order in which Keras lists a functional model's layers (model.layers, config.json's
 * layers, the weights groups conv2d, conv2d_1, ... and the optimizer's variables all follow it):
 * keras.src.ops.function.map_graph. A depth-first walk from the output, inputs in call order,
 * numbers the layers as it first meets them; a layer's depth is its longest path to the output;
 * layers go by depth, deepest first, and by that number within a depth. */
#include "keras_io.h"
#include "model_internal.h"

#include <stdio.h>
#include <string.h>

int ck_kio_layer_inputs(const ck_layer_desc *d, int i, int *ins) {
    if (d->num_inputs == 0) {
        ins[0] = i > 0 ? i - 1 : CK_LAYER_INPUT_MODEL;
        return 1;
    }
    memcpy(ins, d->inputs, (size_t)d->num_inputs * sizeof *ins);
    return d->num_inputs;
}

typedef struct walk {
    int n;                  /* layers; node n is the model input */
    int nin[CK_MAX_LAYERS]; /* each layer's inputs */
    int in[CK_MAX_LAYERS][CK_MAX_LAYER_INPUTS];
    int seen[CK_MAX_LAYERS + 1]; /* first-met number, -1 not met */
    unsigned char done[CK_MAX_LAYERS + 1];
    int post[CK_MAX_LAYERS + 1], npost; /* finished nodes, inputs before readers */
    int counter;
} walk;

static int node_of(const walk *W, int input) {
    return input == CK_LAYER_INPUT_MODEL ? W->n : input;
}

/* Recursion depth is at most the number of layers (CK_MAX_LAYERS). */
static void visit(walk *W, int v) {
    if (W->done[v])
        return;
    if (W->seen[v] < 0)
        W->seen[v] = W->counter++;
    for (int j = 0; v < W->n && j < W->nin[v]; ++j)
        visit(W, node_of(W, W->in[v][j]));
    W->done[v] = 1;
    W->post[W->npost++] = v;
}

void ck_kio_keras_order(const ck_model *m, int *order) {
    if (ck_kio_model_is_graph(m)) {
        ck_kio_layers_keras_order(m->layers, m->num_layers, order);
        return;
    }
    for (int i = 0; i < m->num_layers; ++i)
        order[i] = i; /* Sequential: the layers as added */
}

void ck_kio_layers_keras_order(const ck_layer_desc *layers, int n, int *order) {
    static const walk zero;
    walk W = zero;
    W.n = n;
    for (int i = 0; i < W.n; ++i)
        order[i] = i;
    if (W.n == 0)
        return;
    for (int i = 0; i < W.n; ++i)
        W.nin[i] = ck_kio_layer_inputs(&layers[i], i, W.in[i]);
    for (int v = 0; v <= W.n; ++v)
        W.seen[v] = -1;
    visit(&W, W.n - 1);
    int depth[CK_MAX_LAYERS + 1] = {0};
    for (int p = W.npost - 1; p >= 0; --p) { /* readers before their inputs */
        const int v = W.post[p];
        for (int j = 0; v < W.n && j < W.nin[v]; ++j) {
            const int u = node_of(&W, W.in[v][j]);
            if (depth[u] < depth[v] + 1)
                depth[u] = depth[v] + 1;
        }
    }
    /* insertion sort of the layers (not the input) by depth down, then first-met number up; a
     * layer the walk never met (ck_model_build refuses those) goes last */
    for (int i = 0; i < W.n; ++i)
        if (W.seen[i] < 0)
            W.seen[i] = W.n + 1 + i, depth[i] = -1;
    for (int i = 0; i < W.n; ++i) {
        int j = i;
        while (j > 0 && (depth[order[j - 1]] < depth[i] ||
                         (depth[order[j - 1]] == depth[i] && W.seen[order[j - 1]] > W.seen[i]))) {
            order[j] = order[j - 1];
            --j;
        }
        order[j] = i;
    }
}

int ck_kio_ends_in_softmax(const ck_layer_desc *layers, int count) {
    if (count < 1)
        return 0;
    const ck_layer_desc *d = &layers[count - 1];
    return (d->type == CK_LAYER_ACTIVATION || d->type == CK_LAYER_CONV2D ||
            d->type == CK_LAYER_DENSE) &&
           d->activation == CK_ACT_SOFTMAX;
}

int ck_kio_check_loss(const ck_layer_desc *layers, int count, const char *loss, int from_logits,
                      char *err, size_t err_len) {
    if (!loss[0] || count < 1)
        return 0;
    const int sm = ck_kio_ends_in_softmax(layers, count);
    if (sm == !from_logits)
        return 0;
    const ck_layer_desc *d = &layers[count - 1];
    char last[96]; /* a text model's layers get their automatic names at build */
    if (d->name[0])
        snprintf(last, sizeof last, "'%s', %s", d->name, ck_layer_type_name(d->type));
    else
        snprintf(last, sizeof last, "%s", ck_layer_type_name(d->type));
    if (sm)
        snprintf(err, err_len,
                 "compile: loss %s with from_logits=True, but the model ends in a softmax (layer "
                 "%s): Keras would apply a second softmax; drop from_logits=True",
                 loss, last);
    else
        snprintf(err, err_len,
                 "compile: loss %s reads the model's outputs as probabilities (from_logits=False), "
                 "but the last layer (%s) is no softmax; end the model with "
                 "activation='softmax', or compile the loss with from_logits=True (logits)",
                 loss, last);
    return -1;
}
