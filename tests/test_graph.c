/* Graph models (ck_layer_desc.num_inputs, issue 15): the Add and Concatenate layers, the DAG
 * executor against the Sequential one, finite-difference gradients through residual blocks (a
 * tensor with two readers, strided projection shortcuts), the refusals of bad graphs, the GPU
 * against the CPU, checkpoints, the functional model text and its errors, ResNet-20 v1. */
#include "cnnkit/check.h"
#include "cnnkit/study.h"
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"
#include "model_internal.h"

/* A layer of a graph model: type, filters/units, kernel, stride, and its inputs (n of them;
 * n = 0: the previous layer). */
static ck_layer_desc L(ck_layer_type t, int units, int k, int s, int n, int a, int b) {
    ck_layer_desc d;
    ck_layer_desc_init(&d, t);
    d.units = units;
    d.kernel_h = d.kernel_w = k;
    if (t == CK_LAYER_CONV2D) {
        d.stride_h = d.stride_w = s;
        d.padding = CK_PADDING_SAME;
    }
    d.num_inputs = n;
    d.inputs[0] = a;
    d.inputs[1] = b;
    return d;
}

static ck_layer_desc act(ck_activation a, int n, int in) {
    ck_layer_desc d = L(CK_LAYER_ACTIVATION, 0, 0, 0, n, in, 0);
    d.activation = a;
    return d;
}

static ck_model *graph_model(ck_context *ctx, const ck_layer_desc *ls, int count) {
    ck_model *m = NULL;
    CK_OK(ctx, ck_model_create(ctx, &m));
    for (int i = 0; i < count; ++i)
        CK_OK(ctx, ck_model_add(m, &ls[i]));
    return m;
}

/* Two residual blocks with tanh (smooth: no kinks for the finite differences): an identity
 * shortcut (layer 1 is read by the conv of layer 2 and by the Add of layer 4: its gradient is a
 * sum) and a strided block whose shortcut is a 1x1 projection with stride 2. */
static int residual_layers(ck_layer_desc *ls, ck_activation a) {
    int n = 0;
    ls[n++] = L(CK_LAYER_CONV2D, 3, 3, 1, 0, 0, 0);          /* 0 */
    ls[n++] = act(a, 0, 0);                                  /* 1 */
    ls[n++] = L(CK_LAYER_CONV2D, 3, 3, 1, 0, 0, 0);          /* 2 */
    ls[n++] = L(CK_LAYER_BATCHNORM, 0, 0, 0, 0, 0, 0);       /* 3 */
    ls[n++] = L(CK_LAYER_ADD, 0, 0, 0, 2, 3, 1);             /* 4: bn + act */
    ls[n++] = act(a, 0, 0);                                  /* 5 */
    ls[n++] = L(CK_LAYER_CONV2D, 4, 3, 2, 0, 0, 0);          /* 6: strided branch */
    ls[n++] = act(a, 0, 0);                                  /* 7 */
    ls[n++] = L(CK_LAYER_CONV2D, 4, 1, 2, 1, 5, 0);          /* 8: projection of 5 */
    ls[n++] = L(CK_LAYER_ADD, 0, 0, 0, 2, 7, 8);             /* 9 */
    ls[n++] = L(CK_LAYER_GLOBALAVGPOOL2D, 0, 0, 0, 0, 0, 0); /* 10 */
    ls[n++] = L(CK_LAYER_DENSE, 3, 0, 0, 0, 0, 0);           /* 11 */
    ls[n - 1].activation = CK_ACT_SOFTMAX;
    return n;
}

static void batch(float *x, int32_t *y, int n, int per, int classes, uint64_t seed) {
    trng r = {seed};
    trng_fill(&r, x, (size_t)n * per, -1, 1);
    for (int i = 0; i < n; ++i)
        y[i] = (int32_t)(trng_u32(&r) % (uint32_t)classes);
}

Test(graph, shapes_over_the_graph) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_layer_desc ls[16];
    const int n = residual_layers(ls, CK_ACT_TANH);
    ck_model *m = graph_model(ctx, ls, n);
    CK_OK(ctx, ck_model_build(m, 6, 6, 2, 4));
    cr_assert(m->graph);
    int h, w, c;
    CK_OK(ctx, ck_model_layer_shape(m, 4, &h, &w, &c));
    cr_assert(h == 6 && w == 6 && c == 3);
    CK_OK(ctx, ck_model_layer_shape(m, 8, &h, &w, &c)); /* the projection: 6 -> 3, 4 filters */
    cr_assert(h == 3 && w == 3 && c == 4, "%dx%dx%d", h, w, c);
    CK_OK(ctx, ck_model_layer_shape(m, 9, &h, &w, &c));
    cr_assert(h == 3 && w == 3 && c == 4);
    /* parameters: conv 2*9*3+3, conv 3*9*3+3, BN 4*3, conv 3*9*4+4, conv 3*4+4, dense 4*3+3 */
    ck_param_counts pc;
    CK_OK(ctx, ck_model_param_counts(m, &pc));
    cr_assert_eq(pc.total, (2 * 9 * 3 + 3) + (3 * 9 * 3 + 3) + 12 + (3 * 9 * 4 + 4) + (3 * 4 + 4) +
                               (4 * 3 + 3));
    cr_assert_eq(pc.non_trainable, 6);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* Add's forward is a + b exactly, and its output feeds the next layer (unplanned: planned, the
 * first Add runs its ReLU in the same node, checked below). */
Test(graph, add_forward_is_the_sum) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_layer_desc ls[16];
    const int n = residual_layers(ls, CK_ACT_RELU);
    ck_model *m = graph_model(ctx, ls, n);
    CK_OK(ctx, ck_model_set_planning(m, 0));
    CK_OK(ctx, ck_model_build(m, 6, 6, 2, 4));
    enum { N = 4, PER = 6 * 6 * 2 };
    float x[N * PER];
    int32_t y[N];
    batch(x, y, N, PER, 3, 5);
    CK_OK(ctx, ck_model_forward_nodes(m, x, N, 1, m->num_nodes));
    const int adds[2][3] = {{4, 3, 1}, {9, 7, 8}};
    for (int k = 0; k < 2; ++k) {
        const float *s = ck_model_layer_output(m, adds[k][0]);
        const float *a = ck_model_layer_output(m, adds[k][1]);
        const float *b = ck_model_layer_output(m, adds[k][2]);
        cr_assert(s && a && b);
        cr_assert_eq(ck_model_layer_input(m, adds[k][0], x), a, "the Add's first input");
        const size_t cnt =
            (size_t)N * m->lshape[adds[k][0]].h * m->lshape[adds[k][0]].w * m->lshape[adds[k][0]].c;
        double mag = 0.0;
        for (size_t i = 0; i < cnt; ++i) {
            cr_assert_eq(s[i], a[i] + b[i], "add %d element %zu", k, i);
            mag += fabs(b[i]);
        }
        cr_assert_gt(mag, 0.0, "the shortcut is not all zeros");
    }
    ck_model_destroy(m);
    /* planned: Add 4 and ReLU 5 are one node whose output is relu(a + b); the sum is not kept,
     * nor is the BN output 3 (no backward reads it: a later node takes its buffer) */
    m = graph_model(ctx, ls, n);
    CK_OK(ctx, ck_model_build(m, 6, 6, 2, 4));
    CK_OK(ctx, ck_model_forward_nodes(m, x, N, 1, m->num_nodes));
    cr_assert_null(ck_model_layer_output(m, 4));
    cr_assert_null(ck_model_layer_output(m, 3));
    cr_assert_not_null(ck_model_layer_output(m, 1), "the shortcut: ReLU 5's backward reads it");
    ck_model_destroy(m);
    m = graph_model(ctx, ls, n);
    m->acts_private = 1; /* every node's output kept, to check the fused node's values */
    CK_OK(ctx, ck_model_build(m, 6, 6, 2, 4));
    CK_OK(ctx, ck_model_forward_nodes(m, x, N, 1, m->num_nodes));
    const float *r = ck_model_layer_output(m, 5), *a = ck_model_layer_output(m, 3),
                *b = ck_model_layer_output(m, 1);
    cr_assert(r && a && b);
    int pos = 0, zero = 0;
    for (size_t i = 0; i < (size_t)N * 6 * 6 * 2; ++i) {
        const float s = a[i] + b[i];
        cr_assert_eq(r[i], s > 0.0f ? s : 0.0f, "element %zu", i);
        pos += r[i] > 0.0f;
        zero += r[i] == 0.0f;
    }
    cr_assert(pos > 0 && zero > 0, "%d positive, %d zero", pos, zero);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* Finite differences of the loss against the DAG backward, for every parameter: through both
 * Adds, the gradient sum at layer 1 (two readers), BN and the strided 1x1 projection. */
Test(graph, gradcheck_through_residual_blocks) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_layer_desc ls[16];
    const int n = residual_layers(ls, CK_ACT_TANH);
    ck_model *m = graph_model(ctx, ls, n);
    CK_OK(ctx, ck_model_build(m, 6, 6, 2, 6));
    enum { N = 6, PER = 6 * 6 * 2 };
    float x[N * PER];
    int32_t y[N];
    batch(x, y, N, PER, 3, 11);
    int first_conv; /* layer 0's kernel and bias: reached through both paths of block 1 */
    const int checked = t_gradcheck_model(ctx, m, x, y, N, 1, 2 * 9 * 3 + 3, &first_conv);
    cr_assert_eq(checked, (int)m->num_params);
    cr_assert_gt(first_conv, 20, "the first conv's gradients must be checked and non-zero");
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* A chain written as a graph (every layer names the one before) runs the DAG executor and gives
 * the bits of the Sequential executor without planning: same nodes, same order. */
Test(graph, chain_as_graph_equals_sequential_bits) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_layer_desc ls[8];
    int n = 0;
    ls[n++] = L(CK_LAYER_CONV2D, 4, 3, 1, 0, 0, 0);
    ls[n - 1].activation = CK_ACT_RELU;
    ls[n++] = L(CK_LAYER_BATCHNORM, 0, 0, 0, 0, 0, 0);
    ls[n++] = L(CK_LAYER_MAXPOOL2D, 0, 2, 0, 0, 0, 0);
    ls[n++] = L(CK_LAYER_FLATTEN, 0, 0, 0, 0, 0, 0);
    ls[n++] = L(CK_LAYER_DENSE, 5, 0, 0, 0, 0, 0);
    ls[n - 1].activation = CK_ACT_SOFTMAX;
    ck_model *seq = graph_model(ctx, ls, n);
    for (int i = 0; i < n; ++i) {
        ls[i].num_inputs = 1;
        ls[i].inputs[0] = i - 1;
    }
    ck_model *gr = graph_model(ctx, ls, n);
    CK_OK(ctx, ck_model_set_planning(seq, 0));
    CK_OK(ctx, ck_model_build(seq, 8, 8, 2, 8));
    CK_OK(ctx, ck_model_build(gr, 8, 8, 2, 8));
    cr_assert(!seq->graph && gr->graph);
    enum { N = 8, PER = 8 * 8 * 2 };
    float x[N * PER];
    int32_t y[N];
    for (int s = 0; s < 3; ++s) {
        batch(x, y, N, PER, 5, 100 + (uint64_t)s);
        ck_step_result a, b;
        CK_OK(ctx, ck_model_train_step(seq, x, y, N, &a));
        CK_OK(ctx, ck_model_train_step(gr, x, y, N, &b));
        cr_assert_eq(a.loss, b.loss, "step %d", s);
    }
    cr_assert_eq(seq->num_params, gr->num_params);
    cr_assert_eq(memcmp(seq->params, gr->params, sizeof(float) * seq->num_params), 0);
    cr_assert_eq(memcmp(seq->fixed, gr->fixed, sizeof(float) * seq->num_fixed), 0);
    /* inference (moving statistics) too */
    float pa[N * 5], pb[N * 5];
    CK_OK(ctx, ck_model_predict(seq, x, N, pa));
    CK_OK(ctx, ck_model_predict(gr, x, N, pb));
    cr_assert_eq(memcmp(pa, pb, sizeof pa), 0);
    ck_model_destroy(seq);
    ck_model_destroy(gr);
    ck_context_destroy(ctx);
}

static void refused(ck_context *ctx, const ck_layer_desc *ls, int count, int at_add,
                    const char *const *want) {
    ck_model *m = NULL;
    CK_OK(ctx, ck_model_create(ctx, &m));
    ck_status st = CK_STATUS_SUCCESS;
    for (int i = 0; i < count && st == CK_STATUS_SUCCESS; ++i)
        st = ck_model_add(m, &ls[i]);
    if (!at_add) {
        cr_assert_eq(st, CK_STATUS_SUCCESS, "%s", ck_context_last_error(ctx));
        st = ck_model_build(m, 6, 6, 2, 2);
    }
    cr_assert_neq(st, CK_STATUS_SUCCESS);
    const char *msg = ck_context_last_error(ctx);
    for (int k = 0; want[k]; ++k)
        cr_assert(strstr(msg, want[k]), "'%s' not in: %s", want[k], msg);
    cr_assert_eq(ck_model_num_nodes(m), 0);
    ck_model_destroy(m);
}

Test(graph, bad_graphs_are_refused_naming_the_layer) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_layer_desc ls[8];
    /* a layer reading a later layer (or itself): refused when it is added */
    ls[0] = L(CK_LAYER_CONV2D, 3, 3, 1, 1, 1, 0);
    refused(ctx, ls, 1, 1, (const char *const[]){"layer 0 (Conv2D", "input 1 is layer 1", NULL});
    ls[0] = L(CK_LAYER_CONV2D, 3, 3, 1, 0, 0, 0);
    ls[1] = L(CK_LAYER_ADD, 0, 0, 0, 2, 0, 1);
    refused(ctx, ls, 2, 1, (const char *const[]){"layer 1 (Add", "input 2 is layer 1", NULL});
    ls[1] = L(CK_LAYER_ADD, 0, 0, 0, 2, 0, -2);
    refused(ctx, ls, 2, 1, (const char *const[]){"input 2 is layer -2", NULL});
    ls[1] = L(CK_LAYER_ADD, 0, 0, 0, 5, 0, 0);
    refused(ctx, ls, 2, 1, (const char *const[]){"num_inputs 5", NULL});
    /* Add of mismatched shapes names both */
    ls[0] = L(CK_LAYER_CONV2D, 3, 3, 1, 0, 0, 0);
    ls[1] = L(CK_LAYER_CONV2D, 3, 3, 2, 0, 0, 0);
    ls[2] = L(CK_LAYER_ADD, 0, 0, 0, 2, 0, 1);
    ls[3] = L(CK_LAYER_FLATTEN, 0, 0, 0, 0, 0, 0);
    ls[4] = L(CK_LAYER_DENSE, 2, 0, 0, 0, 0, 0);
    refused(
        ctx, ls, 5, 0,
        (const char *const[]){"layer 2 (Add 'add')", "(None, 6, 6, 3)", "(None, 3, 3, 3)", NULL});
    ls[2] = L(CK_LAYER_ADD, 0, 0, 0, 2, -1, 1);
    refused(ctx, ls, 5, 0, (const char *const[]){"(None, 6, 6, 2)", "(None, 3, 3, 3)", NULL});
    /* Add with one input; a Conv2D with two */
    ls[1] = L(CK_LAYER_CONV2D, 3, 3, 1, 0, 0, 0);
    ls[2] = L(CK_LAYER_ADD, 0, 0, 0, 0, 0, 0);
    refused(ctx, ls, 5, 0, (const char *const[]){"layer 2 (Add 'add')", "at least 2", NULL});
    ls[2] = L(CK_LAYER_CONV2D, 3, 3, 1, 2, 0, 1);
    refused(ctx, ls, 5, 0,
            (const char *const[]){"layer 2 (Conv2D 'conv2d_2')", "reads 2 inputs", NULL});
    /* a layer nothing reads (layer 0: the Add reads 1 and the input) */
    ls[2] = L(CK_LAYER_ADD, 0, 0, 0, 2, 1, 1);
    ls[1] = L(CK_LAYER_CONV2D, 2, 3, 1, 1, -1, 0);
    refused(ctx, ls, 5, 0,
            (const char *const[]){"layer 0 (Conv2D 'conv2d')", "no later layer reads", NULL});
    ck_context_destroy(ctx);
}

/* One tensor read twice by the same Add: its gradient is twice the Add's. */
Test(graph, same_tensor_twice_gets_both_gradients) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_layer_desc ls[4];
    ls[0] = L(CK_LAYER_CONV2D, 2, 3, 1, 0, 0, 0);
    ls[0].activation = CK_ACT_TANH;
    ls[1] = L(CK_LAYER_ADD, 0, 0, 0, 2, 0, 0);
    ls[2] = L(CK_LAYER_FLATTEN, 0, 0, 0, 0, 0, 0);
    ls[3] = L(CK_LAYER_DENSE, 3, 0, 0, 0, 0, 0);
    ck_model *m = graph_model(ctx, ls, 4);
    CK_OK(ctx, ck_model_build(m, 4, 4, 1, 4));
    enum { N = 4, PER = 16 };
    float x[N * PER];
    int32_t y[N];
    batch(x, y, N, PER, 3, 21);
    const int checked = t_gradcheck_model(ctx, m, x, y, N, 1, 0, NULL);
    cr_assert_eq(checked, (int)m->num_params);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* Two SGD steps (learning rate lr) of graph model ls on ih x iw x ic inputs on the GPU and on the
 * CPU from the same weights: the weights (and, with check_loss, each step's loss) agree to tol;
 * convolutions differ by cuDNN's summation order (~1e-6 per layer). upd_tol > 0: the two steps'
 * weight updates, as vectors, also agree to upd_tol in relative L2 norm. */
static void gpu_matches_cpu_on(const ck_layer_desc *ls, int n, int ih, int iw, int ic, int classes,
                               uint64_t seed, int check_loss, double tol, float lr,
                               double upd_tol) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    ck_model *mg = graph_model(g, ls, n), *mc = graph_model(c, ls, n);
    CK_OK(c, ck_model_build(mc, ih, iw, ic, 8));
    CK_OK(g, ck_model_build(mg, ih, iw, ic, 8));
    size_t cnt;
    CK_OK(c, ck_model_get_weights(mc, NULL, 0, &cnt));
    float *w = malloc(cnt * sizeof *w), *wg = malloc(cnt * sizeof *wg),
          *w0 = malloc(cnt * sizeof *w0);
    cr_assert(w && wg && w0);
    CK_OK(c, ck_model_get_weights(mc, w, cnt, NULL));
    CK_OK(g, ck_model_set_weights(mg, w, cnt));
    memcpy(w0, w, cnt * sizeof *w);
    ck_optimizer_desc o;
    ck_optimizer_desc_init(&o, CK_OPT_SGD);
    o.learning_rate = lr;
    CK_OK(c, ck_model_set_optimizer(mc, &o));
    CK_OK(g, ck_model_set_optimizer(mg, &o));
    enum { N = 8 };
    const int per = ih * iw * ic;
    float *x = malloc(sizeof(float) * N * per);
    int32_t y[N];
    cr_assert(x);
    for (int s = 0; s < 2; ++s) {
        batch(x, y, N, per, classes, seed + (uint64_t)s);
        ck_step_result rc, rg;
        CK_OK(c, ck_model_train_step(mc, x, y, N, &rc));
        CK_OK(g, ck_model_train_step(mg, x, y, N, &rg));
        if (check_loss)
            cr_assert_leq(fabs(rc.loss - rg.loss), tol * fmax(1.0, fabs(rc.loss)), "step %d", s);
    }
    CK_OK(c, ck_model_get_weights(mc, w, cnt, NULL));
    CK_OK(g, ck_model_get_weights(mg, wg, cnt, NULL));
    const double err = t_max_rel_err(wg, w, cnt);
    cr_assert_leq(err, tol, "weights after two steps: max rel err %g", err);
    if (upd_tol > 0) {
        double dd = 0, nn = 0;
        for (size_t i = 0; i < cnt; ++i) {
            const double uc = (double)w[i] - w0[i], ug = (double)wg[i] - w0[i];
            dd += (ug - uc) * (ug - uc);
            nn += uc * uc;
        }
        const double rel = nn > 0 ? sqrt(dd / nn) : sqrt(dd);
        cr_log_info("weight updates: relative L2 difference %g, max rel weight err %g", rel, err);
        cr_assert_leq(rel, upd_tol, "the two steps' updates differ by %g (relative L2)", rel);
    }
    free(x);
    free(w);
    free(wg);
    free(w0);
    ck_model_destroy(mg);
    ck_model_destroy(mc);
    ck_context_destroy(g);
    ck_context_destroy(c);
}

static void gpu_matches_cpu_steps(const ck_layer_desc *ls, int n, uint64_t seed, int check_loss) {
    gpu_matches_cpu_on(ls, n, 6, 6, 2, 3, seed, check_loss, 1e-4, 0.1f, 0.0);
}

/* ck_cuda_add forward, and the gradient sums with it, against the CPU. */
Test(graph, gpu_matches_cpu, .timeout = 300) {
    ck_layer_desc ls[16];
    const int n = residual_layers(ls, CK_ACT_RELU);
    gpu_matches_cpu_steps(ls, n, 40, 1);
}

/* Both ResNet-20 examples, planned (BN+ReLU and Add+ReLU fused, liveness-shared gradients), on
 * the GPU against the CPU. Twenty layers deep, a pre-activation within a few ulps of zero can land
 * on either side of a ReLU, and at lr 0.1 one such flip moves a stem kernel weight by more than
 * 1e-3 (measured on the CPU with 1-ulp noise on the weights: 1 to 3 of 12 draws over): at lr 1e-3
 * the updates themselves are compared, as vectors, within 1e-3 relative L2 (noise draws: 1e-5). */
Test(graph, gpu_resnet20_matches_cpu, .timeout = 120) {
    ck_context_destroy(t_cuda_ctx_or_skip()); /* skip before anything is allocated */
    for (int v = 0; v < 2; ++v) {
        char path[256];
        snprintf(path, sizeof path, "%s/examples/resnet20_v%d.py", t_source_dir(), v + 1);
        char *text = t_read_file(path, NULL);
        ck_keras_model km;
        char err[512];
        cr_assert_eq(ck_keras_parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
        free(text);
        gpu_matches_cpu_on(km.layers, km.count, 28, 28, 1, 10, 70 + (uint64_t)v, 1, 1e-3, 1e-3f,
                           1e-3);
        ck_keras_model_free(&km);
    }
}

/* ---- the functional model text (src/host/keras/keras_func.c) ---- */

#define FN_HEAD                                                                                    \
    "import keras\nfrom keras import layers\n\n"                                                   \
    "inputs = keras.Input(shape=(8, 8, 1))\n"
#define FN_BODY                                                                                    \
    "x = layers.Conv2D(4, 3, padding=\"same\", activation=\"relu\")(inputs)\n"                     \
    "y = layers.Conv2D(4, 3, padding=\"same\")(x)\n"                                               \
    "y = layers.BatchNormalization()(y)\n"                                                         \
    "y = layers.Add()([y, x])\n"                                                                   \
    "y = layers.Activation(\"relu\")(y)\n"                                                         \
    "y = layers.GlobalAveragePooling2D()(y)\n"                                                     \
    "outputs = layers.Dense(10, activation=\"softmax\")(y)\n"

static ck_status parse(const char *text, ck_keras_model *km, char *err, size_t len) {
    return ck_keras_parse(text, km, err, len);
}

/* A name assigned a tensor keeps that tensor when its source name is assigned again, as in
 * Python: the residual idiom `shortcut = x` lost its skip connection (the Add read the latest x
 * twice; 0.0054 off Keras's predictions), and so did tensors kept in a list or swapped. */
Test(graph, aliases_keep_the_tensor_they_were_given) {
    static const struct {
        const char *body;
        const char *in0, *in1; /* the layers the Add must read, by their names */
    } cases[] = {
        {"x = layers.Conv2D(4, 3, padding='same')(inputs)\n" /* conv2d */
         "shortcut = x\n"
         "x = layers.Conv2D(4, 3, padding='same')(x)\n" /* conv2d_1 */
         "x = layers.Add()([x, shortcut])\n",
         "conv2d_1", "conv2d"},
        {"x = layers.Conv2D(4, 3, padding='same')(inputs)\n" /* conv2d */
         "y = layers.Conv2D(4, 1)(inputs)\n"                 /* conv2d_1 */
         "pair = [x, y]\n"
         "x = layers.Conv2D(4, 3, padding='same')(x)\n" /* conv2d_2 */
         "z = layers.Add()(pair)\n"
         "x = layers.Concatenate()([z, x])\n",
         "conv2d", "conv2d_1"},
        {"x = layers.Conv2D(4, 3, padding='same')(inputs)\n" /* conv2d */
         "y = layers.Conv2D(4, 1)(inputs)\n"                 /* conv2d_1 */
         "x, y = y, x\n"
         "x = layers.Add()([x, y])\n",
         "conv2d_1", "conv2d"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; ++k) {
        char text[2048], err[512];
        snprintf(text, sizeof text,
                 "%s%sx = layers.GlobalAveragePooling2D()(x)\noutputs = layers.Dense(3)(x)\n"
                 "model = keras.Model(inputs, outputs)\n",
                 FN_HEAD, cases[k].body);
        ck_keras_model km;
        cr_assert_eq(parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
        int add = 0;
        while (add < km.count && km.layers[add].type != CK_LAYER_ADD)
            ++add;
        cr_assert_lt(add, km.count);
        const ck_layer_desc *a = &km.layers[add];
        cr_assert(a->num_inputs == 2 && a->inputs[0] >= 0 && a->inputs[1] >= 0);
        cr_assert(!strcmp(km.layers[a->inputs[0]].name, cases[k].in0) &&
                      !strcmp(km.layers[a->inputs[1]].name, cases[k].in1),
                  "case %zu: the Add reads %s, %s", k, km.layers[a->inputs[0]].name,
                  km.layers[a->inputs[1]].name);
        ck_keras_model_free(&km);
    }
}

Test(graph, functional_text_reads_the_graph) {
    const char *forms[] = {"model = keras.Model(inputs=inputs, outputs=outputs)\n",
                           "model = keras.Model(inputs, outputs, name='res')\n",
                           "model = keras.models.Model([inputs], [outputs])\n"};
    for (size_t f = 0; f < sizeof forms / sizeof forms[0]; ++f) {
        char text[2048], err[512];
        snprintf(text, sizeof text,
                 "%s%s%smodel.compile(optimizer='sgd', loss="
                 "'sparse_categorical_crossentropy')\nmodel.summary()\n",
                 FN_HEAD, FN_BODY, forms[f]);
        ck_keras_model km;
        cr_assert_eq(parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
        cr_assert_eq(km.count, 7);
        cr_assert(km.has_compile && km.optimizer.type == CK_OPT_SGD);
        /* the inputs of each layer: the Input (-1), then the tensors named */
        const int want[7][3] = {{1, -1, 0}, {1, 0, 0}, {1, 1, 0}, {2, 2, 0},
                                {1, 3, 0},  {1, 4, 0}, {1, 5, 0}};
        for (int i = 0; i < 7; ++i) {
            cr_assert_eq(km.layers[i].num_inputs, want[i][0], "layer %d", i);
            for (int j = 0; j < want[i][0]; ++j)
                cr_assert_eq(km.layers[i].inputs[j], want[i][1 + j], "layer %d input %d", i, j);
        }
        cr_assert_eq(km.layers[3].type, CK_LAYER_ADD);
        cr_assert(km.layers[0].input_h == 8 && km.layers[0].input_c == 1);
        ck_keras_model_free(&km);
    }
}

/* Nested calls are layers too; a Sequential model given an Input tensor stays Sequential. */
Test(graph, functional_nested_calls_and_sequential_input) {
    char err[512];
    ck_keras_model km;
    const char *nested = FN_HEAD
        "x = layers.Activation('relu')(layers.BatchNormalization()(layers.Conv2D(4, 3)(inputs)))\n"
        "outputs = layers.Dense(3)(layers.Flatten()(x))\n"
        "model = keras.Model(inputs, outputs)\n";
    cr_assert_eq(parse(nested, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    cr_assert_eq(km.count, 5);
    for (int i = 1; i < 5; ++i)
        cr_assert(km.layers[i].num_inputs == 1 && km.layers[i].inputs[0] == i - 1);
    ck_keras_model_free(&km);
    const char *seq = FN_HEAD "model = keras.Sequential([inputs, layers.Flatten(), "
                              "layers.Dense(3)])\n";
    cr_assert_eq(parse(seq, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    cr_assert(km.count == 2 && km.layers[0].num_inputs == 0 && km.layers[0].input_h == 8);
    ck_keras_model_free(&km);
}

/* layer(x, training=False), as Keras 3 writes it into its configs: read (fit and predict pass their
 * own flag in Keras too); training=True (a dropout on outside training) and other call arguments
 * are refused where they are written. */
Test(graph, functional_call_takes_training_false) {
    char err[512];
    ck_keras_model km;
    const char *off =
        FN_HEAD "x = layers.Dropout(0.5)(layers.Conv2D(4, 3)(inputs), training=False)\n"
                "outputs = layers.Dense(3)(layers.Flatten()(x))\n"
                "model = keras.Model(inputs, outputs)\n";
    cr_assert_eq(parse(off, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    cr_assert(km.count == 4 && km.layers[1].type == CK_LAYER_DROPOUT && km.layers[1].rate == 0.5f);
    ck_keras_model_free(&km);
    const char *on = FN_HEAD "x = layers.Dropout(0.5)(inputs, training=True)\n"
                             "outputs = layers.Dense(3)(layers.Flatten()(x))\n"
                             "model = keras.Model(inputs, outputs)\n";
    cr_assert_neq(parse(on, &km, err, sizeof err), CK_STATUS_SUCCESS);
    cr_assert(strstr(err, "line 5, column 33") && strstr(err, "training=True"), "%s", err);
    const char *mask = FN_HEAD "x = layers.Dropout(0.5)(inputs, mask=None)\n"
                               "outputs = layers.Dense(3)(layers.Flatten()(x))\n"
                               "model = keras.Model(inputs, outputs)\n";
    cr_assert_neq(parse(mask, &km, err, sizeof err), CK_STATUS_SUCCESS);
    cr_assert(strstr(err, "found mask"), "%s", err);
}

/* keras.layers.add([a, b]) and concatenate([a, b], axis=-1), the functions Keras's guides and
 * Keras-2 ResNets use: the same layers as Add()([a, b]) and Concatenate(axis=-1)([a, b]). */
Test(graph, add_and_concatenate_functions_are_their_layers) {
    char err[512];
    ck_keras_model f, c;
    const char *fn = FN_HEAD "a = layers.Conv2D(4, 3, padding='same')(inputs)\n"
                             "s = layers.add([a, layers.Conv2D(4, 1)(inputs)])\n"
                             "x = keras.layers.concatenate([s, a], axis=-1, name='cat')\n"
                             "outputs = layers.Dense(3)(layers.Flatten()(x))\n"
                             "model = keras.Model(inputs, outputs)\n";
    const char *cls = FN_HEAD "a = layers.Conv2D(4, 3, padding='same')(inputs)\n"
                              "s = layers.Add()([a, layers.Conv2D(4, 1)(inputs)])\n"
                              "x = keras.layers.Concatenate(axis=-1, name='cat')([s, a])\n"
                              "outputs = layers.Dense(3)(layers.Flatten()(x))\n"
                              "model = keras.Model(inputs, outputs)\n";
    cr_assert_eq(parse(fn, &f, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    cr_assert_eq(parse(cls, &c, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    cr_assert_eq(f.count, c.count);
    for (int i = 0; i < f.count; ++i)
        cr_assert(memcmp(&f.layers[i], &c.layers[i], sizeof f.layers[i]) == 0, "layer %d", i);
    int adds = 0;
    for (int i = 0; i < f.count; ++i)
        adds += f.layers[i].type == CK_LAYER_ADD;
    cr_assert_eq(adds, 1);
    ck_keras_model_free(&f);
    ck_keras_model_free(&c);
}

/* The functional model text builds and trains: its loss goes down on a fixed batch. */
Test(graph, functional_text_trains) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = NULL;
    char err[512];
    CK_OK(ctx, ck_model_from_keras_text(ctx,
                                        FN_HEAD FN_BODY
                                        "model = keras.Model(inputs, outputs)\n"
                                        "model.compile(optimizer=keras.optimizers.Adam(0.02), "
                                        "loss='sparse_categorical_crossentropy')\n",
                                        &m, err, sizeof err));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 16));
    enum { N = 16, PER = 64 };
    float x[N * PER];
    int32_t y[N];
    batch(x, y, N, PER, 10, 77);
    ck_step_result first, r;
    CK_OK(ctx, ck_model_train_step(m, x, y, N, &first));
    for (int s = 0; s < 15; ++s)
        CK_OK(ctx, ck_model_train_step(m, x, y, N, &r));
    cr_assert_lt(r.loss, 0.85 * first.loss, "loss %g -> %g", first.loss, r.loss);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* `cnnkit check` on a graph follows its edges: branch a ends in a Dropout and the next layer in
 * file order is branch b's BatchNormalization, which reads x, not the dropout (walked as one
 * chain this was CK001, dropout before BN); a finding inside a chain keeps the file's indices. */
Test(graph, check_follows_the_edges) {
    const char *text =
        FN_HEAD "x = layers.Conv2D(4, 3, padding=\"same\", activation=\"relu\")(inputs)\n" /* 0 */
                "a = layers.Conv2D(4, 3, padding=\"same\")(x)\n"                           /* 1 */
                "a = layers.Dropout(0.3)(a)\n"                                             /* 2 */
                "b = layers.BatchNormalization()(x)\n"                                     /* 3 */
                "y = layers.Add()([a, b])\n"                                               /* 4 */
                "y = layers.Conv2D(4, 3, padding=\"same\")(y)\n"                           /* 5 */
                "y = layers.BatchNormalization()(y)\n"                                     /* 6 */
                "y = layers.Activation(\"relu\")(y)\n"
                "y = layers.GlobalAveragePooling2D()(y)\n"
                "outputs = layers.Dense(10, activation=\"softmax\")(y)\n"
                "model = keras.Model(inputs, outputs)\n";
    char err[512];
    ck_keras_model km;
    cr_assert_eq(parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    cr_assert_eq(km.layers[3].inputs[0], 0);
    ck_finding f[16];
    int n = 0;
    cr_assert_eq(ck_model_check(km.layers, km.count, f, 16, &n), CK_STATUS_SUCCESS);
    int bias_bn = 0;
    for (int i = 0; i < n; ++i) {
        cr_assert(strncmp(f[i].code, "CK001", 5) != 0, "false finding: %s", f[i].message);
        if (strncmp(f[i].code, "CK008", 5) == 0) {
            cr_assert(f[i].layers[0] == 5 && f[i].layers[1] == 6, "CK008 on layers %d, %d",
                      f[i].layers[0], f[i].layers[1]);
            cr_assert(strstr(f[i].fix, "(layers 5-6)"), "%s", f[i].fix);
            ++bias_bn;
        }
    }
    cr_assert_eq(bias_bn, 1);
    /* the same layers as a Sequential chain: the dropout does sit before the BN there */
    for (int i = 0; i < km.count; ++i)
        km.layers[i].num_inputs = 0;
    km.layers[4].type = CK_LAYER_ACTIVATION; /* Add has two inputs; a linear Activation stands in */
    km.layers[4].activation = CK_ACT_NONE;
    cr_assert_eq(ck_model_check(km.layers, km.count, f, 16, &n), CK_STATUS_SUCCESS);
    int cd = 0;
    for (int i = 0; i < n; ++i)
        cd += strncmp(f[i].code, "CK001", 5) == 0;
    cr_assert_eq(cd, 1, "the chain's CK001 did not fire");
    ck_keras_model_free(&km);
}

/* The findings of ck_model_check on a model text (at most cap, asserted to fit). */
static int check_text(const char *text, ck_finding *f, int cap) {
    char err[512];
    ck_keras_model km;
    cr_assert_eq(parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    int n = 0;
    cr_assert_eq(ck_model_check(km.layers, km.count, f, cap, &n), CK_STATUS_SUCCESS);
    ck_keras_model_free(&km);
    cr_assert_leq(n, cap);
    return n;
}

/* The one CK001 finding of ck_model_check on a model text (asserted to be one). */
static ck_finding the_ck001(const char *text) {
    ck_finding f[16], one;
    int seen = 0;
    const int n = check_text(text, f, 16);
    for (int i = 0; i < n; ++i)
        if (strncmp(f[i].code, "CK001", 5) == 0)
            one = f[i], ++seen;
    cr_assert_eq(seen, 1);
    return one;
}

/* An earlier dropout on another path of the graph compounds too: the tanh the second dropout
 * reads comes from a Dropout(0.5), so no ceiling is claimed (§1, "Earlier dropouts"). */
Test(graph, check_compounding_across_chains) {
    const char *text = "import keras\nfrom keras import layers\n\n"
                       "inputs = keras.Input(shape=(20,))\n"
                       "h = layers.Dense(64)(inputs)\n"
                       "h = layers.Dropout(0.5)(h)\n"
                       "t = layers.Activation(\"tanh\")(h)\n"
                       "d = layers.Dropout(0.2)(t)\n"
                       "b = layers.BatchNormalization()(d)\n"
                       "o = layers.Dense(64)(t)\n"
                       "z = layers.Add()([b, o])\n"
                       "outputs = layers.Dense(10, activation=\"softmax\")(z)\n"
                       "model = keras.Model(inputs, outputs)\n";
    const ck_finding f = the_ck001(text);
    cr_assert(isnan(f.value) && strstr(f.reason, "the dropout at layer 1"), "%g: %s", f.value,
              f.reason);
}

/* Through a Concatenate Eq. 8's ceiling holds for the dropout's channels only (the others have
 * no mask): CK001 keeps its value and says so. */
Test(graph, check_names_the_concatenate_beside_the_dropout) {
    const char *text = "import keras\nfrom keras import layers\n\n"
                       "inputs = keras.Input(shape=(10, 10, 1))\n"
                       "x = layers.Conv2D(8, 3)(inputs)\n"
                       "d = layers.Dropout(0.5)(x)\n"
                       "y = layers.Concatenate()([d, x])\n"
                       "y = layers.BatchNormalization()(y)\n"
                       "outputs = layers.Dense(10)(layers.Flatten()(y))\n"
                       "model = keras.Model(inputs, outputs)\n";
    const ck_finding f = the_ck001(text);
    cr_assert(f.value == 0.5 &&
                  strstr(f.reason, "per channel the dropout reaches: Concatenate (layer 2)"),
              "%g: %s", f.value, f.reason);
}

/* A dropout's path does not end with its chain: read by a BN and by a shortcut, it still feeds
 * the BN (CK001, Eq. 8's ceiling); through an Add (a sum with the unmasked shortcut, §2) it
 * reaches the next BN without a ceiling; in a pre-activation wide ResNet block (Dropout between
 * the branch's convolutions) it reaches the next block's BN through one weight layer (CK002). */
Test(graph, check_walks_past_the_chain) {
    static const char *const bodies[4] = {
        "x = layers.Conv2D(4, 3, padding=\"same\", activation=\"relu\")(inputs)\n" /* 0 */
        "x = layers.Dropout(0.2)(x)\n"                                             /* 1 */
        "y = layers.BatchNormalization()(x)\n"                                     /* 2 */
        "y = layers.Conv2D(4, 3, padding=\"same\")(y)\n"                           /* 3 */
        "x = layers.Add()([y, x])\n",
        "x = layers.Conv2D(4, 3, padding=\"same\", activation=\"relu\")(inputs)\n" /* 0 */
        "y = layers.Conv2D(4, 3, padding=\"same\")(x)\n"                           /* 1 */
        "y = layers.Dropout(0.3)(y)\n"                                             /* 2 */
        "x = layers.Add()([y, x])\n"                                               /* 3 */
        "x = layers.BatchNormalization()(x)\n",                                    /* 4 */
        "x = layers.Conv2D(4, 3, padding=\"same\", use_bias=False)(inputs)\n"      /* 0 */
        "y = layers.BatchNormalization()(x)\n"                                     /* 1 */
        "y = layers.Activation(\"relu\")(y)\n"                                     /* 2 */
        "y = layers.Dropout(0.3)(y)\n"                                             /* 3 */
        "y = layers.Conv2D(4, 3, padding=\"same\", use_bias=False)(y)\n"           /* 4 */
        "x = layers.Add()([y, x])\n"                                               /* 5 */
        "x = layers.BatchNormalization()(x)\n",                                    /* 6 */
        /* two paths to one BN, through a weight layer and straight to the Add: merged */
        "x = layers.Conv2D(4, 3, padding=\"same\", activation=\"relu\")(inputs)\n" /* 0 */
        "d = layers.Dropout(0.3)(x)\n"                                             /* 1 */
        "y = layers.Conv2D(4, 3, padding=\"same\")(d)\n"                           /* 2 */
        "x = layers.Add()([y, d])\n"                                               /* 3 */
        "x = layers.BatchNormalization()(x)\n"};                                   /* 4 */
    const char *codes[4] = {"CK001", "CK001", "CK002", "CK001"};
    const int dl[4] = {1, 2, 3, 1}, bl[4] = {2, 4, 6, 4};
    for (int t = 0; t < 4; ++t) {
        char text[4096];
        snprintf(text, sizeof text,
                 "%s%sx = layers.GlobalAveragePooling2D()(x)\n"
                 "outputs = layers.Dense(10, activation=\"softmax\")(x)\n"
                 "model = keras.Model(inputs, outputs)\n",
                 FN_HEAD, bodies[t]);
        ck_finding f[16];
        int hits = 0;
        const int n = check_text(text, f, 16);
        for (int i = 0; i < n; ++i)
            if (strncmp(f[i].code, codes[t], 5) == 0) {
                ++hits;
                cr_assert(f[i].layers[0] == dl[t] && f[i].layers[1] == bl[t],
                          "case %d: layers %d, %d", t, f[i].layers[0], f[i].layers[1]);
                if (t == 0)
                    cr_assert_float_eq(f[i].value, 0.8, 1e-6);
                if (t == 1 || t == 3)
                    cr_assert(isnan(f[i].value) && strstr(f[i].reason, "Add (layer 3)"), "%s",
                              f[i].reason);
                if (t == 2)
                    cr_assert_float_eq(f[i].value, 1.0, 1e-9);
            }
        cr_assert_eq(hits, 1, "case %d: %s found %d times", t, codes[t], hits);
    }
}

/* CK010 asks whether a weight layer reads the dropout, on any path, not whether one comes later
 * in the file: a dropout on one logit branch of an Add is on the logits though another branch's
 * Dense follows it in index order. */
Test(graph, check_dropout_on_a_logit_branch) {
    const char *text = "import keras\nfrom keras import layers\n\n"
                       "inputs = keras.Input(shape=(20,))\n"
                       "h = layers.Dense(64, activation=\"relu\")(inputs)\n" /* 0 */
                       "b = layers.Dense(10)(h)\n"                           /* 1 */
                       "b = layers.Dropout(0.5)(b)\n"                        /* 2 */
                       "a = layers.Dense(10)(h)\n"                           /* 3 */
                       "z = layers.Add()([b, a])\n"
                       "outputs = layers.Activation(\"softmax\")(z)\n"
                       "model = keras.Model(inputs, outputs)\n";
    ck_finding f[16];
    int hits = 0;
    const int n = check_text(text, f, 16);
    for (int i = 0; i < n; ++i)
        if (strncmp(f[i].code, "CK010", 5) == 0) {
            ++hits;
            cr_assert(f[i].layers[0] == 2 && strstr(f[i].fix, "layer 2 before layer 1"), "%s",
                      f[i].fix);
        }
    cr_assert_eq(hits, 1);
}

/* Checks a functional text of FN_HEAD + body + Model(inputs, outputs): the number of findings
 * with the code prefix, and the first one's layers in *f. */
static int graph_findings(const char *body, const char *code, ck_finding *first) {
    char text[4096], err[512];
    snprintf(text, sizeof text, "%s%smodel = keras.Model(inputs, outputs)\n", FN_HEAD, body);
    ck_keras_model km;
    cr_assert_eq(parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s\n%s", err, text);
    ck_finding f[32];
    int n = 0, hits = 0;
    cr_assert_eq(ck_model_check(km.layers, km.count, f, 32, &n), CK_STATUS_SUCCESS);
    ck_keras_model_free(&km);
    for (int i = 0; i < n && i < 32; ++i)
        if (strncmp(f[i].code, code, strlen(code)) == 0) {
            cr_assert(strstr(f[i].reason, "arXiv:1603.05027") && f[i].message[0] && f[i].fix[0],
                      "%s: %s", f[i].code, f[i].reason);
            if (hits++ == 0 && first)
                *first = f[i];
        }
    return hits;
}

#define RB_STEM "x = layers.Conv2D(4, 3, padding=\"same\")(inputs)\n" /* 0 */
#define RB_TAIL                                                                                    \
    "y = layers.GlobalAveragePooling2D()(x)\n"                                                     \
    "outputs = layers.Dense(10, activation=\"softmax\")(y)\n"

/* He et al. 2016's units (Fig. 4): (b) BN after addition, (c) ReLU before addition and Fig. 2's
 * (f) dropout shortcut are found, naming their layers; (a) the original unit and (e) full
 * pre-activation (with its final BN-ReLU after the last Add) are clean. */
Test(graph, check_residual_placements) {
    ck_finding f;
    /* (b): Add -> BN -> ReLU is the next unit's shortcut */
    const char *b = RB_STEM "y = layers.Conv2D(4, 3, padding=\"same\")(x)\n" /* 1 */
                            "x = layers.Add()([y, x])\n"                     /* 2 */
                            "x = layers.BatchNormalization()(x)\n"           /* 3 */
                            "x = layers.Activation(\"relu\")(x)\n"           /* 4 */
                            "y = layers.Conv2D(4, 3, padding=\"same\")(x)\n" /* 5 */
                            "x = layers.Add()([y, x])\n" RB_TAIL;            /* 6 */
    cr_assert_eq(graph_findings(b, "CK015", &f), 1);
    cr_assert(f.layers[0] == 2 && f.layers[1] == 3 && f.layers[2] == 6, "%d %d %d", f.layers[0],
              f.layers[1], f.layers[2]);
    /* (c): the branch ends in a ReLU; the shortcut x is a ReLU too (read twice): not it */
    const char *c = RB_STEM "x = layers.Activation(\"relu\")(x)\n"           /* 1 */
                            "y = layers.Conv2D(4, 3, padding=\"same\")(x)\n" /* 2 */
                            "y = layers.BatchNormalization()(y)\n"           /* 3 */
                            "y = layers.Activation(\"relu\")(y)\n"           /* 4 */
                            "x = layers.Add()([y, x])\n" RB_TAIL;            /* 5 */
    cr_assert_eq(graph_findings(c, "CK016", &f), 1);
    cr_assert(f.layers[0] == 4 && f.layers[1] == 5, "%d %d", f.layers[0], f.layers[1]);
    /* inline activation='relu' on the branch's last Conv2D is the same */
    const char *c2 = RB_STEM "y = layers.Conv2D(4, 3, padding=\"same\", activation=\"relu\")(x)\n"
                             "x = layers.Add()([y, x])\n" RB_TAIL;
    cr_assert_eq(graph_findings(c2, "CK016", NULL), 1);
    /* (f): dropout on the shortcut; a dropout at the end of the branch is not */
    const char *fsc = RB_STEM "y = layers.Conv2D(4, 3, padding=\"same\")(x)\n" /* 1 */
                              "s = layers.Dropout(0.3)(x)\n"                   /* 2 */
                              "x = layers.Add()([y, s])\n" RB_TAIL;            /* 3 */
    cr_assert_eq(graph_findings(fsc, "CK017", &f), 1);
    cr_assert(f.layers[0] == 2 && f.layers[1] == 3 && f.value > 0.29, "%d %d", f.layers[0],
              f.layers[1]);
    const char *fbr = RB_STEM "y = layers.Conv2D(4, 3, padding=\"same\")(x)\n"
                              "y = layers.Dropout(0.3)(y)\n"
                              "x = layers.Add()([y, x])\n" RB_TAIL;
    cr_assert_eq(graph_findings(fbr, "CK017", NULL), 0);
    /* (a) and (e): clean */
    const char *a = RB_STEM "x = layers.BatchNormalization()(x)\n"
                            "x = layers.Activation(\"relu\")(x)\n"
                            "y = layers.Conv2D(4, 3, padding=\"same\")(x)\n"
                            "y = layers.BatchNormalization()(y)\n"
                            "y = layers.Activation(\"relu\")(y)\n"
                            "y = layers.Conv2D(4, 3, padding=\"same\")(y)\n"
                            "y = layers.BatchNormalization()(y)\n"
                            "x = layers.Add()([y, x])\n"
                            "x = layers.Activation(\"relu\")(x)\n" RB_TAIL;
    const char *e = RB_STEM "y = layers.BatchNormalization()(x)\n"
                            "y = layers.Activation(\"relu\")(y)\n"
                            "y = layers.Conv2D(4, 3, padding=\"same\")(y)\n"
                            "y = layers.BatchNormalization()(y)\n"
                            "y = layers.Activation(\"relu\")(y)\n"
                            "y = layers.Conv2D(4, 3, padding=\"same\")(y)\n"
                            "x = layers.Add()([y, x])\n"
                            "y = layers.BatchNormalization()(x)\n"
                            "y = layers.Activation(\"relu\")(y)\n"
                            "y = layers.Conv2D(4, 3, padding=\"same\")(y)\n"
                            "x = layers.Add()([y, x])\n"
                            "x = layers.BatchNormalization()(x)\n"
                            "x = layers.Activation(\"relu\")(x)\n" RB_TAIL;
    /* two towers summed (no shortcut: each input ends in an activation) are not a residual unit */
    const char *towers = "a = layers.Conv2D(4, 3, padding=\"same\", activation=\"relu\")(inputs)\n"
                         "b = layers.Conv2D(4, 5, padding=\"same\", activation=\"relu\")(inputs)\n"
                         "x = layers.Add()([a, b])\n" RB_TAIL;
    cr_assert_eq(graph_findings(towers, "CK016", &f), 0, "%s", f.message);
    /* a projection shortcut (Conv2D 1x1 + BN, no activation) is one */
    const char *proj = RB_STEM "y = layers.Conv2D(4, 3, padding=\"same\", activation=\"relu\")(x)\n"
                               "s = layers.Conv2D(4, 1)(x)\n"
                               "s = layers.BatchNormalization()(s)\n"
                               "x = layers.Add()([y, s])\n" RB_TAIL;
    cr_assert_eq(graph_findings(proj, "CK016", NULL), 1);
    const char *clean[] = {a, e};
    for (int i = 0; i < 2; ++i)
        for (int r = 0; r < 3; ++r) {
            const char *codes[] = {"CK015", "CK016", "CK017"};
            cr_assert_eq(graph_findings(clean[i], codes[r], &f), 0, "%s on %s: %s", codes[r],
                         i ? "(e)" : "(a)", f.message);
        }
}

/* The study's stack variants reorder stacks: on a graph they are refused and equivalence is not
 * decided (both with a message naming the layer that makes the graph); a graph that is not a
 * post-activation ResNet gets 'original' only by default and no residual placement. */
Test(graph, study_refuses_reordering_a_graph) {
    ck_layer_desc ls[16];
    const int n = residual_layers(ls, CK_ACT_RELU);
    ck_study_variant v[CK_STUDY_KIND_COUNT];
    char err[256];
    const int asker[2] = {CK_STUDY_ORIGINAL, CK_STUDY_ASKER};
    cr_assert_eq(ck_study_variants(ls, n, asker, 2, v, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(err, "layer 4 (Add)") && strstr(err, "graph"), "%s", err);
    int kinds[CK_STUDY_KIND_COUNT];
    cr_assert_eq(ck_study_default_kinds(ls, n, kinds), 1);
    cr_assert_eq(kinds[0], CK_STUDY_ORIGINAL);
    cr_assert_eq(ck_study_variants(ls, n, NULL, 0, v, err, sizeof err), CK_STATUS_SUCCESS, "%s",
                 err);
    cr_assert(v[0].count == n && !v[1].layers);
    ck_study_variants_free(v, 1);
    const int full = CK_STUDY_FULL_PREACT; /* Add 4 reads no Conv-BN-ReLU-Conv-BN branch */
    cr_assert_eq(ck_study_variants(ls, n, &full, 1, v, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(err, "layers[4]") && strstr(err, "post-activation"), "%s", err);
    const int orig = CK_STUDY_ORIGINAL;
    cr_assert_eq(ck_study_variants(ls, n, &orig, 1, v, err, sizeof err), CK_STATUS_SUCCESS, "%s",
                 err);
    cr_assert_eq(v[0].count, n);
    ck_study_variants_free(v, 1);
    int equal = -1;
    cr_assert_eq(ck_study_equivalent(ls, n, ls, n, &equal, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(err, "layer 4") && equal == -1, "%s", err);
    /* a functional chain (each layer names the one before it) is a stack */
    ck_layer_desc chain[3] = {L(CK_LAYER_CONV2D, 3, 3, 1, 0, 0, 0), act(CK_ACT_RELU, 1, 0),
                              L(CK_LAYER_DENSE, 3, 0, 0, 1, 1, 0)};
    chain[0].input_h = chain[0].input_w = 6;
    chain[0].input_c = 1;
    chain[2].activation = CK_ACT_SOFTMAX;
    cr_assert_eq(ck_study_equivalent(chain, 3, chain, 3, &equal, err, sizeof err),
                 CK_STATUS_SUCCESS, "%s", err);
    cr_assert_eq(equal, 1);
}

/* Bad functional texts: each a message with the line and column of the culprit. */
Test(graph, functional_errors_name_line_and_column) {
    static const char *const cases[][3] = {
        /* replace, by, expected message */
        {"([y, x])", "([y, z])", "line 8, column 22: unknown tensor name 'z'"},
        {"y = layers.Add()([y, x])", "y = layers.Add()([y, w])\nw = layers.Conv2D(4, 1)(x)",
         "line 8, column 22: tensor 'w' is used before it is defined (at line 9)"},
        /* a cycle can only be written as a use before the definition */
        {"x = layers.Conv2D(4, 3, padding=\"same\", activation=\"relu\")(inputs)\n"
         "y = layers.Conv2D(4, 3, padding=\"same\")(x)",
         "x = layers.Conv2D(4, 3, padding=\"same\")(y)\ny = layers.Conv2D(4, 3, "
         "padding=\"same\")(x)",
         "line 5, column 41: tensor 'y' is used before it is defined (at line 6)"},
        {"([y, x])", "([y, inputs])",
         "line 8, column 5: layer 3 (Add 'add'): inputs of different shapes, (None, 8, 8, 4) "
         "(input 1) and (None, 8, 8, 1) (input 2)"},
        {"outputs = layers", "z = layers.Conv2D(2, 1)(x)\noutputs = layers",
         "line 11, column 5: expected every layer to lead to the model's output (outputs at line "
         "13), found Conv2D (layer 6)"},
        {"Model(inputs, outputs)", "Model(inputs, inputs)",
         "line 12, column 29: expected outputs computed from the input by at least one layer"},
        {"Model(inputs, outputs)", "Model(x, outputs)",
         "expected the keras.Input(...) tensor for inputs"},
        {"([y, x])", "(y)", "line 8, column 18: expected a list of at least 2 tensors for Add"},
        {"Activation(\"relu\")(y)", "Activation(\"relu\")([y, x])",
         "line 9, column 31: expected one tensor for Activation, found a list of 2"},
        {"model = keras.Model(inputs, outputs)", "",
         "line 4, column 10: expected model = keras.Model(inputs, outputs)"},
        {"model = keras.Model(inputs, outputs)",
         "model = keras.Model(inputs, outputs)\nmodel.add(layers.Dense(2))",
         "line 13, column 7: expected compile(...) on a functional model"},
        {"inputs = keras.Input(shape=(8, 8, 1))\n",
         "inputs = keras.Input(shape=(8, 8, 1))\nother = keras.Input(shape=(8, 8, 1))\n",
         "line 5, column 9: expected one keras.Input(...)"},
        {"x = layers.Conv2D", "for i in range(len(sizes)):\n    x = layers.Conv2D",
         "line 6, column 5: expected model statements outside loops and conditionals"},
        {"y = layers.GlobalAveragePooling2D()(y)", "y = layers.Dense(3)(y)",
         "line 10, column 5: layer 5 (Dense 'dense'): input (None, 8, 8, 4) is not flat"},
    };
    const char *good = FN_HEAD FN_BODY "model = keras.Model(inputs, outputs)\n";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        char text[2048], err[512] = "";
        const char *at = strstr(good, cases[i][0]);
        cr_assert(at, "case %zu: '%s' not in the text", i, cases[i][0]);
        snprintf(text, sizeof text, "%.*s%s%s", (int)(at - good), good, cases[i][1],
                 at + strlen(cases[i][0]));
        ck_keras_model km;
        cr_assert_neq(parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "case %zu accepted", i);
        cr_assert(strstr(err, cases[i][2]), "case %zu: '%s' not in: %s", i, cases[i][2], err);
    }
}

/* examples/<file> read and built for 28x28x1 at batch 4, and held to the Keras totals both
 * ResNet-20 examples share (worked out below); counts[type] gets how many layers have each type. */
static ck_model *resnet20_example(ck_context *ctx, const char *file,
                                  int counts[CK_LAYER_TYPE_COUNT]) {
    char path[512];
    snprintf(path, sizeof path, "%s/examples/%s", t_source_dir(), file);
    char *text = t_read_file(path, NULL);
    ck_model *m = NULL;
    char err[512];
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, &m, err, sizeof err));
    free(text);
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 4));
    ck_param_counts pc;
    CK_OK(ctx, ck_model_param_counts(m, &pc));
    cr_assert_eq(pc.total, 274154, "%s", file);
    cr_assert_eq(pc.trainable, 272778, "%s", file);
    cr_assert_eq(pc.non_trainable, 1376, "%s", file);
    memset(counts, 0, sizeof(int) * CK_LAYER_TYPE_COUNT);
    for (int i = 0; i < m->num_layers; ++i)
        counts[m->layers[i].type]++;
    cr_assert(counts[CK_LAYER_ADD] == 9 && counts[CK_LAYER_CONV2D] == 21 &&
                  counts[CK_LAYER_BATCHNORM] == 19,
              "%s", file);
    return m;
}

/* ResNet-20 v1 as people write it, with a block function, loops and conditions, reads as the
 * same layers, in the same order and wiring, as the flat examples/resnet20_v1.py. */
static const char resnet20_loops[] =
    "import keras\nfrom keras import layers\n\n"
    "def block(x, filters, first_of_stage):\n"
    "    strides = 2 if first_of_stage else 1\n"
    "    y = layers.Conv2D(filters, 3, strides=strides, padding='same')(x)\n"
    "    y = layers.BatchNormalization()(y)\n"
    "    y = layers.Activation('relu')(y)\n"
    "    y = layers.Conv2D(filters, 3, padding='same')(y)\n"
    "    y = layers.BatchNormalization()(y)\n"
    "    if strides != 1 or not first_of_stage is False:\n"
    "        x = layers.Conv2D(filters, 1, strides=strides)(x) if strides > 1 else x\n"
    "    x = layers.Add()([y, x])\n"
    "    return layers.Activation('relu')(x)\n\n"
    "def resnet(input_shape, depth=20, num_classes=10, *, name='resnet20_v1'):\n"
    "    n = (depth - 2) // 6\n"
    "    inputs = keras.Input(shape=input_shape)\n"
    "    x = layers.Conv2D(16, 3, padding='same')(inputs)\n"
    "    x = layers.BatchNormalization()(x)\n"
    "    x = layers.Activation('relu')(x)\n"
    "    for stage, filters in enumerate([16, 32, 64, 128]):\n"
    "        if filters > 64:\n"
    "            break\n"
    "        for i in range(n):\n"
    "            x = block(x, filters, stage > 0 and i == 0)\n"
    "    else:\n"
    "        x = layers.Dense(1)(x)  # not run: the loop left by break\n"
    "    x = layers.GlobalAveragePooling2D()(x)\n"
    "    outputs = layers.Dense(num_classes, activation='softmax')(x)\n"
    "    return keras.Model(inputs=inputs, outputs=outputs, name=name)\n\n"
    "model = resnet((28,) * 1 + (28, 1))\n"
    "model.compile(optimizer='adam', loss='sparse_categorical_crossentropy')\n";

Test(graph, resnet20_with_functions_and_loops_reads_as_the_flat_file) {
    char *text = t_read_file(t_src("examples/resnet20_v1.py"), NULL);
    ck_keras_model flat, loops;
    char err[512] = "";
    cr_assert_eq(ck_keras_parse(text, &flat, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    free(text);
    cr_assert_eq(ck_keras_parse(resnet20_loops, &loops, err, sizeof err), CK_STATUS_SUCCESS, "%s",
                 err);
    cr_assert_eq(loops.count, flat.count);
    for (int i = 0; i < flat.count; ++i)
        cr_assert_eq(memcmp(&loops.layers[i], &flat.layers[i], sizeof flat.layers[i]), 0,
                     "layer %d (%s vs %s)", i, loops.layers[i].name, flat.layers[i].name);
    cr_assert_str_eq(loops.name, "resnet20_v1");
    cr_assert(loops.has_compile && loops.optimizer.type == CK_OPT_ADAM);
    ck_keras_model_free(&flat);
    ck_keras_model_free(&loops);
}

/* Model files of the reader's audit of real-world code (tutorial and Kaggle patterns): a residual
 * block function called in a loop over (filters, stride) pairs, a Sequential helper that adds a
 * block per call, a width computed in a loop. Each builds with the parameter total real Keras
 * 3.15.1 gives for the same file (model.count_params()). */
static const struct {
    const char *text;
    long long keras_total;
} real_files[] = {
    {"import keras\n"
     "from keras import layers\n"
     "\n"
     "\n"
     "def residual_block(x, filters, stride=1):\n"
     "    shortcut = x\n"
     "    y = layers.Conv2D(filters, 3, strides=stride, padding=\"same\")(x)\n"
     "    y = layers.BatchNormalization()(y)\n"
     "    y = layers.Activation(\"relu\")(y)\n"
     "    y = layers.Conv2D(filters, 3, padding=\"same\")(y)\n"
     "    y = layers.BatchNormalization()(y)\n"
     "    if stride != 1:\n"
     "        shortcut = layers.Conv2D(filters, 1, strides=stride)(x)\n"
     "    y = layers.Add()([y, shortcut])\n"
     "    return layers.Activation(\"relu\")(y)\n"
     "\n"
     "\n"
     "inputs = keras.Input(shape=(32, 32, 3))\n"
     "x = layers.Conv2D(16, 3, padding=\"same\")(inputs)\n"
     "x = layers.BatchNormalization()(x)\n"
     "x = layers.Activation(\"relu\")(x)\n"
     "for filters, stride in [(16, 1), (32, 2), (64, 2)]:\n"
     "    x = residual_block(x, filters, stride)\n"
     "x = layers.GlobalAveragePooling2D()(x)\n"
     "outputs = layers.Dense(10, activation=\"softmax\")(x)\n"
     "model = keras.Model(inputs, outputs, name=\"resnet_mini\")\n"
     "model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),\n"
     "              loss=\"sparse_categorical_crossentropy\", metrics=[\"accuracy\"])\n",
     78666},
    {"from tensorflow.keras.models import Sequential\n"
     "from tensorflow.keras.layers import Input, Conv2D, MaxPooling2D, Flatten, Dense, Dropout\n"
     "\n"
     "num_classes = 10\n"
     "filters = 32\n"
     "\n"
     "model = Sequential()\n"
     "model.add(Input(shape=(32, 32, 3)))\n"
     "\n"
     "\n"
     "def conv_block(model, filters):\n"
     "    model.add(Conv2D(filters, (3, 3), padding='same', activation='relu'))\n"
     "    model.add(Conv2D(filters, (3, 3), padding='same', activation='relu'))\n"
     "    model.add(MaxPooling2D((2, 2)))\n"
     "\n"
     "\n"
     "conv_block(model, filters)\n"
     "conv_block(model, filters * 2)\n"
     "conv_block(model, filters * 4)\n"
     "\n"
     "model.add(Flatten())\n"
     "model.add(Dropout(0.5))\n"
     "model.add(Dense(num_classes, activation='softmax'))\n"
     "model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', "
     "metrics=['accuracy'])\n",
     307498},
    {"from keras.models import Sequential\n"
     "from keras.layers import Conv2D, MaxPooling2D, Flatten, Dense\n"
     "\n"
     "num_pools = 3\n"
     "base_filters = 16\n"
     "for i in range(num_pools):\n"
     "    base_filters = base_filters * 2   # widest layer: 16 * 2**num_pools\n"
     "\n"
     "model = Sequential()\n"
     "model.add(Conv2D(base_filters, (3, 3), padding=\"same\", activation=\"relu\", "
     "input_shape=(28, 28, 1)))\n"
     "model.add(MaxPooling2D())\n"
     "model.add(Flatten())\n"
     "model.add(Dense(10, activation=\"softmax\"))\n"
     "model.compile(optimizer=\"adam\", loss=\"sparse_categorical_crossentropy\", "
     "metrics=[\"accuracy\"])\n",
     252170},
};

Test(graph, real_files_with_functions_and_loops_give_keras_totals) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    for (size_t i = 0; i < sizeof real_files / sizeof real_files[0]; ++i) {
        ck_model *m = NULL;
        char err[512] = "";
        CK_OK(ctx, ck_model_from_keras_text(ctx, real_files[i].text, &m, err, sizeof err));
        CK_OK(ctx, ck_model_build(m, 0, 0, 0, 2));
        ck_param_counts pc;
        CK_OK(ctx, ck_model_param_counts(m, &pc));
        cr_expect_eq(pc.total, real_files[i].keras_total, "file %zu: %lld parameters, Keras %lld",
                     i, pc.total, real_files[i].keras_total);
        ck_model_destroy(m);
    }
    ck_context_destroy(ctx);
}

/* examples/resnet20_v1.py builds, with Keras's parameter totals, worked out here (Keras counts a
 * Conv2D as kh*kw*cin*f + f with its bias, a BatchNormalization as 4 per channel of which the
 * moving mean and variance, 2 per channel, are non-trainable, a Dense as in*out + out):
 *   stem   Conv2D(16, 3) on 1 channel: 9*1*16 + 16 = 160; BN(16) = 64
 *   stage 1, 3 blocks of Conv(16,3)+BN+Conv(16,3)+BN: 3 * (2*(9*16*16 + 16) + 2*64) = 14,304
 *   stage 2, block 1: Conv 9*16*32+32 = 4,640, Conv 9*32*32+32 = 9,248, 2 BN(32) = 256,
 *            projection Conv(32, 1): 16*32+32 = 544 -> 14,688; blocks 2-3: 2*(2*9,248+256)
 *            = 37,504 -> 52,192
 *   stage 3, block 1: 9*32*64+64 = 18,496, 9*64*64+64 = 36,928, 2 BN(64) = 512, projection
 *            32*64+64 = 2,112 -> 58,048; blocks 2-3: 2*(2*36,928+512) = 148,736 -> 206,784
 *   GAP 0; Dense(10): 64*10+10 = 650
 *   total 160 + 64 + 14,304 + 52,192 + 206,784 + 650 = 274,154;
 *   non-trainable 2 * (16 + 6*16 + 6*32 + 6*64) = 1,376 (19 BN layers); trainable 272,778.
 * (With a 3-channel input the stem has 448 and the total is 274,442, the count of Keras's
 * CIFAR-10 ResNet-20 v1 example, which has the same layers.) */
Test(graph, resnet20_v1_builds_with_keras_counts) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    int counts[CK_LAYER_TYPE_COUNT];
    ck_model *m = resnet20_example(ctx, "resnet20_v1.py", counts);
    /* 1 + 3 stages * 3 blocks * 7 layers + 2 projections + GAP + Dense */
    cr_assert_eq(ck_model_num_layers(m), 1 * 3 + 9 * 7 + 2 + 2);
    int h, w, c;
    CK_OK(ctx, ck_model_layer_shape(m, m->num_layers - 2, &h, &w, &c));
    cr_assert(h == 1 && w == 1 && c == 64, "GAP: %dx%dx%d", h, w, c);
    /* the stage 3 output before pooling: 28 -> 14 -> 7 */
    CK_OK(ctx, ck_model_layer_shape(m, m->num_layers - 3, &h, &w, &c));
    cr_assert(h == 7 && w == 7 && c == 64, "%dx%dx%d", h, w, c);
    /* the summary: Keras's functional table with "Connected to", the Add reading two */
    size_t need;
    cr_assert_eq(ck_model_summary(m, NULL, 0, &need), CK_STATUS_BAD_PARAM);
    char *sum = malloc(need);
    CK_OK(ctx, ck_model_summary(m, sum, need, NULL));
    cr_assert(strstr(sum, "Connected to"), "%s", sum);
    cr_assert(strstr(sum, "Model: \"resnet20_v1\"\n"), "%s", sum); /* its name=, as Keras shows */
    cr_assert(strstr(sum, " input_layer (InputLayer)                     (None, 28, 28, 1)       0"
                          "           -\n"),
              "%s", sum);
    cr_assert(strstr(sum, "  batch_normalization_2[0][0],\n"), "%s", sum);
    cr_assert(strstr(sum, "  activation[0][0]\n"), "%s", sum);
    cr_assert(strstr(sum, "Total params: 274,154\nTrainable params: 272,778\n"), "%s", sum);
    free(sum);
    /* one training step runs (the residual sums make the first logits large: ~5, not ln 10) */
    enum { N = 4, PER = 28 * 28 };
    float *x = malloc(sizeof(float) * N * PER);
    int32_t y[N];
    batch(x, y, N, PER, 10, 3);
    ck_step_result r;
    CK_OK(ctx, ck_model_train_step(m, x, y, N, &r));
    cr_assert(isfinite(r.loss) && r.loss > 0.5 && r.loss < 50.0, "mean loss %g", r.loss);
    free(x);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* The layers reading layer i: those naming it, or the next one when that names none. */
static int readers(const ck_model *m, int i, int *out, int cap) {
    int n = 0;
    for (int j = i + 1; j < m->num_layers; ++j) {
        const ck_layer_desc *d = &m->layers[j];
        int reads = d->num_inputs == 0 && j == i + 1;
        for (int k = 0; k < d->num_inputs; ++k)
            reads |= d->inputs[k] == i;
        if (reads && n < cap)
            out[n++] = j;
    }
    return n;
}

/* The layer a one-input layer reads. */
static int source(const ck_model *m, int j) {
    return m->layers[j].num_inputs == 0 ? j - 1 : m->layers[j].inputs[0];
}

/* The gradient buffers of a graph model are shared by liveness (memtab.c): node j's gradient is
 * live from its last reader's backward step down to j's own, so any two nodes whose live
 * intervals meet must own disjoint bytes, and the buffers take a fraction of the activations
 * (ResNet-20: about 3 tensors' worth at once, not one per node). */
static void check_grad_liveness(const char *file) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    int counts[CK_LAYER_TYPE_COUNT];
    ck_model *m = resnet20_example(ctx, file, counts);
    const int nn = m->num_nodes;
    int hi[CK_MAX_OPS];
    for (int j = 0; j < nn; ++j)
        hi[j] = j;
    for (int i = 0; i < nn; ++i)
        for (int k = 0; k < m->nodes[i].nin; ++k)
            if (m->nodes[i].in[k] >= 0 && hi[m->nodes[i].in[k]] < i)
                hi[m->nodes[i].in[k]] = i;
    size_t end = 0, largest = 0;
    for (int a = 0; a < nn; ++a) {
        const ck_node *na = &m->nodes[a];
        const size_t sa = sizeof(float) * na->oh * na->ow * na->oc * m->max_batch;
        end = sa + na->g_offset > end ? sa + na->g_offset : end;
        largest = sa > largest ? sa : largest;
        for (int b = a + 1; b < nn; ++b) {
            const ck_node *nb = &m->nodes[b];
            const size_t sb = sizeof(float) * nb->oh * nb->ow * nb->oc * m->max_batch;
            if (hi[a] < b) /* a's gradient is dead before b's is written */
                continue;
            cr_assert(na->g_offset + sa <= nb->g_offset || nb->g_offset + sb <= na->g_offset,
                      "%s: nodes %d [%d, %d] and %d [%d, %d] share gradient bytes", file, a, a,
                      hi[a], b, b, hi[b]);
        }
    }
    cr_assert(end <= 4 * largest && end * 8 < m->mem_act_bytes,
              "%s: gradients %zu bytes, largest tensor %zu, activations %zu", file, end, largest,
              m->mem_act_bytes);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

Test(graph, gradient_buffers_shared_by_liveness) {
    check_grad_liveness("resnet20_v1.py");
    check_grad_liveness("resnet20_v2.py");
}

/* examples/resnet20_v2.py (full pre-activation, He et al. 2016) builds, with Keras's parameter
 * totals, worked out here as for v1 above:
 *   stem   Conv2D(16, 3) on 1 channel: 9*1*16 + 16 = 160 (no BN: the first block's comes next)
 *   stage 1, 3 blocks of BN(16)+Conv(16,3)+BN(16)+Conv(16,3): 3 * (2*64 + 2*2,320) = 14,304
 *   stage 2, block 1: BN(16) 64, Conv 9*16*32+32 = 4,640, BN(32) 128, Conv 9*32*32+32 = 9,248,
 *            projection Conv(32, 1) 16*32+32 = 544 -> 14,624; blocks 2-3: 2*(2*128 + 2*9,248)
 *            = 37,504 -> 52,128
 *   stage 3, block 1: BN(32) 128, 9*32*64+64 = 18,496, BN(64) 256, 9*64*64+64 = 36,928,
 *            projection 32*64+64 = 2,112 -> 57,920; blocks 2-3: 2*(2*256 + 2*36,928) = 148,736
 *            -> 206,656
 *   final BN(64) 256; GAP 0; Dense(10): 64*10+10 = 650
 *   total 160 + 14,304 + 52,128 + 206,656 + 256 + 650 = 274,154;
 *   non-trainable 2 * (6*16 + (16 + 5*32) + (32 + 5*64) + 64) = 1,376 (19 BN layers);
 *   trainable 272,778.
 * The same totals as v1: the 19 BN layers move, and over them the channels sum to 688 in both.
 * Real Keras 3.15.1 prints count_params 274,154, trainable 272,778, non-trainable 1,376 for the
 * file itself. */
Test(graph, resnet20_v2_builds_with_keras_counts) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    int counts[CK_LAYER_TYPE_COUNT];
    ck_model *m = resnet20_example(ctx, "resnet20_v2.py", counts);
    /* stem + 3 stages * 3 blocks * 7 layers + 2 projections + BN, ReLU, GAP, Dense */
    cr_assert_eq(ck_model_num_layers(m), 1 + 9 * 7 + 2 + 4);
    cr_assert_eq(counts[CK_LAYER_ACTIVATION], 19);
    /* Pre-activation: every Add is read by BatchNormalization layers only, never by a ReLU (no
     * activation after the addition); each projection reads the ReLU of a BN of the block's
     * input, the tensor its 3x3 branch also reads. */
    int adds = 0, projections = 0;
    for (int i = 0; i < m->num_layers; ++i) {
        const ck_layer_desc *d = &m->layers[i];
        if (d->type == CK_LAYER_ADD) {
            int r[4];
            const int nr = readers(m, i, r, 4);
            cr_assert(nr >= 1 && nr <= 2, "Add %d has %d readers", i, nr);
            for (int k = 0; k < nr; ++k)
                cr_assert(m->layers[r[k]].type == CK_LAYER_BATCHNORM ||
                              (m->layers[r[k]].type == CK_LAYER_ADD && nr == 2),
                          "Add %d read by layer %d (type %d)", i, r[k], m->layers[r[k]].type);
            adds++;
        } else if (d->type == CK_LAYER_CONV2D && d->kernel_h == 1) {
            const int a = source(m, i);
            cr_assert(d->stride_h == 2 && m->layers[a].type == CK_LAYER_ACTIVATION &&
                          m->layers[a].activation == CK_ACT_RELU &&
                          m->layers[source(m, a)].type == CK_LAYER_BATCHNORM,
                      "projection %d reads layer %d", i, a);
            int r[4];
            cr_assert_eq(readers(m, a, r, 4), 2, "the pre-activation %d feeds both paths", a);
            projections++;
        }
    }
    cr_assert(adds == 9 && projections == 2);
    int h, w, c;
    CK_OK(ctx, ck_model_layer_shape(m, m->num_layers - 2, &h, &w, &c));
    cr_assert(h == 1 && w == 1 && c == 64, "GAP: %dx%dx%d", h, w, c);
    /* the final BN-ReLU before pooling, on stage 3's 7x7x64 */
    cr_assert(m->layers[m->num_layers - 4].type == CK_LAYER_BATCHNORM &&
              m->layers[m->num_layers - 3].type == CK_LAYER_ACTIVATION);
    CK_OK(ctx, ck_model_layer_shape(m, m->num_layers - 3, &h, &w, &c));
    cr_assert(h == 7 && w == 7 && c == 64, "%dx%dx%d", h, w, c);
    size_t need;
    cr_assert_eq(ck_model_summary(m, NULL, 0, &need), CK_STATUS_BAD_PARAM);
    char *sum = malloc(need);
    CK_OK(ctx, ck_model_summary(m, sum, need, NULL));
    cr_assert(strstr(sum,
                     " conv2d_9 (Conv2D)                            (None, 14, 14, 32)      544"
                     "         activation_6[0][0]\n"),
              "%s", sum);
    cr_assert(strstr(sum, "Total params: 274,154\nTrainable params: 272,778\n"), "%s", sum);
    free(sum);
    /* Training steps on one fixed batch: finite, and the loss falls (2.83 -> 0.63 here). The
     * final BN-ReLU keeps the first logits small: the first loss is near ln 10, not v1's ~5. */
    enum { N = 4, PER = 28 * 28, STEPS = 6 };
    float *x = malloc(sizeof(float) * N * PER);
    int32_t y[N];
    batch(x, y, N, PER, 10, 3);
    ck_step_result first, r;
    CK_OK(ctx, ck_model_train_step(m, x, y, N, &first));
    cr_assert(isfinite(first.loss) && first.loss > 1.5 && first.loss < 4.0, "mean loss %g",
              first.loss);
    for (int s = 1; s < STEPS; ++s) {
        CK_OK(ctx, ck_model_train_step(m, x, y, N, &r));
        cr_assert(isfinite(r.loss), "step %d: loss %g", s, r.loss);
    }
    cr_assert_lt(r.loss, 0.8 * first.loss, "loss %g -> %g", first.loss, r.loss);
    free(x);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* ---- Concatenate (channel axis) ---- */

/* Two branches from the input (3x3 conv to 2 channels, 1x1 strided-free conv to 3) joined on
 * channels, then a conv reading the 5 channels and a Concatenate of that with one branch again:
 * branch 1 has two readers. */
static int concat_layers(ck_layer_desc *ls) {
    int n = 0;
    ls[n++] = L(CK_LAYER_CONV2D, 2, 3, 1, 1, -1, 0); /* 0 */
    ls[n - 1].activation = CK_ACT_TANH;
    ls[n++] = L(CK_LAYER_CONV2D, 3, 1, 1, 1, -1, 0); /* 1 */
    ls[n - 1].activation = CK_ACT_TANH;
    ls[n++] = L(CK_LAYER_CONCATENATE, 0, 0, 0, 2, 0, 1); /* 2: 5 channels */
    ls[n++] = L(CK_LAYER_CONV2D, 4, 3, 2, 0, 0, 0);      /* 3: strided, 4 channels */
    ls[n - 1].activation = CK_ACT_TANH;
    ls[n++] = L(CK_LAYER_CONV2D, 3, 1, 2, 1, 1, 0);          /* 4: branch 1 again, strided */
    ls[n++] = L(CK_LAYER_CONCATENATE, 0, 0, 0, 2, 4, 3);     /* 5: 7 channels */
    ls[n++] = L(CK_LAYER_GLOBALAVGPOOL2D, 0, 0, 0, 0, 0, 0); /* 6 */
    ls[n++] = L(CK_LAYER_DENSE, 3, 0, 0, 0, 0, 0);           /* 7 */
    return n;
}

Test(graph, concatenate_forward_and_gradients) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_layer_desc ls[8];
    const int n = concat_layers(ls);
    ck_model *m = graph_model(ctx, ls, n);
    CK_OK(ctx, ck_model_build(m, 6, 6, 2, 6));
    int h, w, c;
    CK_OK(ctx, ck_model_layer_shape(m, 2, &h, &w, &c));
    cr_assert(h == 6 && w == 6 && c == 5);
    CK_OK(ctx, ck_model_layer_shape(m, 5, &h, &w, &c));
    cr_assert(h == 3 && w == 3 && c == 7);
    enum { N = 6, PER = 6 * 6 * 2 };
    float x[N * PER];
    int32_t y[N];
    batch(x, y, N, PER, 3, 31);
    /* forward: each pixel's channels are input 1's, then input 2's */
    CK_OK(ctx, ck_model_forward_nodes(m, x, N, 1, m->num_nodes));
    const float *cat = ck_model_layer_output(m, 2), *a = ck_model_layer_output(m, 0),
                *b = ck_model_layer_output(m, 1);
    for (int p = 0; p < N * 36; ++p)
        for (int k = 0; k < 5; ++k)
            cr_assert_eq(cat[p * 5 + k], k < 2 ? a[p * 2 + k] : b[p * 3 + k - 2]);
    const int checked = t_gradcheck_model(ctx, m, x, y, N, 1, 0, NULL);
    cr_assert_eq(checked, (int)m->num_params);
    ck_model_destroy(m);
    /* channels may differ, height and width may not */
    ls[5] = L(CK_LAYER_CONCATENATE, 0, 0, 0, 2, 1, 3);
    m = graph_model(ctx, ls, n);
    cr_assert_eq(ck_model_build(m, 6, 6, 2, 2), CK_STATUS_SHAPE_MISMATCH);
    const char *msg = ck_context_last_error(ctx);
    cr_assert(strstr(msg, "layer 5 (Concatenate 'concatenate_1')") &&
                  strstr(msg, "(None, 6, 6, 3) (input 1) and (None, 3, 3, 4) (input 2)"),
              "%s", msg);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

Test(graph, concatenate_in_the_text) {
    char err[512];
    ck_keras_model km;
    const char *text = FN_HEAD "a = layers.Conv2D(2, 3, padding='same')(inputs)\n"
                               "b = layers.Conv2D(3, 1)(inputs)\n"
                               "x = layers.Concatenate(axis=-1)([a, b, inputs])\n"
                               "outputs = layers.Dense(3)(layers.GlobalAveragePooling2D()(x))\n"
                               "model = keras.Model(inputs, outputs)\n";
    cr_assert_eq(parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    cr_assert(km.layers[2].type == CK_LAYER_CONCATENATE && km.layers[2].num_inputs == 3 &&
              km.layers[2].inputs[0] == 0 && km.layers[2].inputs[1] == 1 &&
              km.layers[2].inputs[2] == -1);
    ck_keras_model_free(&km);
    const char *bad = FN_HEAD "a = layers.Conv2D(2, 3)(inputs)\n"
                              "x = layers.Concatenate()([a, inputs])\n"
                              "outputs = layers.Dense(3)(layers.Flatten()(x))\n"
                              "model = keras.Model(inputs, outputs)\n";
    cr_assert_neq(parse(bad, &km, err, sizeof err), CK_STATUS_SUCCESS);
    cr_assert(strstr(err, "line 6, column 5: layer 1 (Concatenate 'concatenate')") &&
                  strstr(err, "(None, 6, 6, 2) (input 1) and (None, 8, 8, 1) (input 2)"),
              "%s", err);
    const char *axis = FN_HEAD "x = layers.Concatenate(axis=1)([inputs, inputs])\n"
                               "outputs = layers.Dense(3)(layers.Flatten()(x))\n"
                               "model = keras.Model(inputs, outputs)\n";
    cr_assert_neq(parse(axis, &km, err, sizeof err), CK_STATUS_SUCCESS);
    cr_assert(strstr(err, "line 5") && strstr(err, "axis"), "%s", err);
}

/* The GPU's channel slices against the CPU's: two SGD steps from the same weights. */
Test(graph, gpu_concatenate_matches_cpu, .timeout = 300) {
    ck_layer_desc ls[8];
    const int n = concat_layers(ls);
    gpu_matches_cpu_steps(ls, n, 60, 0);
}

/* A checkpoint of a graph model records its wiring: the same layers connected otherwise are
 * another model and are refused; the same graph loads its weights back. */
Test(graph, checkpoint_records_the_wiring) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_layer_desc ls[16];
    const int n = residual_layers(ls, CK_ACT_RELU);
    ck_model *a = graph_model(ctx, ls, n), *b = graph_model(ctx, ls, n);
    ls[4].inputs[0] = 1, ls[4].inputs[1] = 3; /* Add(act, bn) instead of Add(bn, act) */
    ck_model *c = graph_model(ctx, ls, n);
    CK_OK(ctx, ck_model_build(a, 6, 6, 2, 4));
    CK_OK(ctx, ck_model_build(b, 6, 6, 2, 4));
    CK_OK(ctx, ck_model_build(c, 6, 6, 2, 4));
    char path[] = "/tmp/cnnkit-graph-ckpt-XXXXXX";
    const int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    for (size_t i = 0; i < a->num_params; ++i)
        a->params[i] = 0.001f * (float)(i % 97);
    CK_OK(ctx, ck_model_save(a, path));
    CK_OK(ctx, ck_model_load(b, path));
    cr_assert_eq(memcmp(a->params, b->params, sizeof(float) * a->num_params), 0);
    cr_assert_eq(ck_model_load(c, path), CK_STATUS_SHAPE_MISMATCH);
    cr_assert(strstr(ck_context_last_error(ctx), "different model"), "%s",
              ck_context_last_error(ctx));
    unlink(path);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_model_destroy(c);
    ck_context_destroy(ctx);
}

/* The graph planner (F1 only): ResNet-20's BN+ReLU pairs run as one node each, with the bits of
 * the unplanned model (weights after two Adam steps, predictions); a BN read by two layers stays
 * a node of its own. */
static void planned_equals_unplanned(ck_context *ctx, ck_model *a, ck_model *b, int h, int w, int c,
                                     int classes, int fused) {
    CK_OK(ctx, ck_model_set_planning(b, 0));
    CK_OK(ctx, ck_model_build(a, h, w, c, 4));
    CK_OK(ctx, ck_model_build(b, h, w, c, 4));
    cr_assert_eq(ck_model_num_nodes(a) + fused, ck_model_num_nodes(b));
    enum { N = 4 };
    const int per = h * w * c;
    float *x = malloc(sizeof(float) * N * per), *pa = malloc(sizeof(float) * N * classes),
          *pb = malloc(sizeof(float) * N * classes);
    int32_t y[N];
    for (int s = 0; s < 2; ++s) {
        batch(x, y, N, per, classes, 90 + (uint64_t)s);
        ck_step_result ra, rb;
        CK_OK(ctx, ck_model_train_step(a, x, y, N, &ra));
        CK_OK(ctx, ck_model_train_step(b, x, y, N, &rb));
        cr_assert_eq(ra.loss, rb.loss, "step %d", s);
    }
    cr_assert_eq(memcmp(a->params, b->params, sizeof(float) * a->num_params), 0);
    cr_assert_eq(memcmp(a->fixed, b->fixed, sizeof(float) * a->num_fixed), 0);
    CK_OK(ctx, ck_model_predict(a, x, N, pa));
    CK_OK(ctx, ck_model_predict(b, x, N, pb));
    cr_assert_eq(memcmp(pa, pb, sizeof(float) * N * classes), 0);
    free(x);
    free(pa);
    free(pb);
}

Test(graph, planner_fuses_bn_relu_with_the_same_bits) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    char *text = t_read_file(t_src("examples/resnet20_v1.py"), NULL);
    ck_model *a = NULL, *b = NULL;
    char err[512];
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, &a, err, sizeof err));
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, &b, err, sizeof err));
    free(text);
    /* the stem and the first half of each of the 9 blocks: BN then ReLU, the BN read once (10);
     * each block's Add then its ReLU (9) */
    planned_equals_unplanned(ctx, a, b, 28, 28, 1, 10, 19);
    size_t need;
    ck_model_summary(a, NULL, 0, &need);
    char *sum = malloc(need);
    CK_OK(ctx, ck_model_summary(a, sum, need, NULL));
    cr_assert(strstr(sum, "Execution plan: 52 nodes for 70 layers (planning on: BN+ReLU and "
                          "Add+ReLU only"),
              "%s", sum);
    cr_assert(strstr(sum, "batch_normalization + activation  [BN+ReLU"), "%s", sum);
    cr_assert(strstr(sum, "add + activation_2  [Add+ReLU, one node"), "%s", sum);
    /* a name wider than its column on a line of its own, the columns under their heads */
    cr_assert(strstr(sum, " global_average_pooling2d (GlobalAveragePooling2D)\n"
                          "                                              (None, 64)   "),
              "%s", sum);
    free(sum);
    ck_model_destroy(a);
    ck_model_destroy(b);
    /* a BN read by the ReLU and by the Add: not fused */
    ck_layer_desc ls[6];
    ls[0] = L(CK_LAYER_CONV2D, 3, 3, 1, 0, 0, 0);
    ls[1] = L(CK_LAYER_BATCHNORM, 0, 0, 0, 0, 0, 0);
    ls[2] = act(CK_ACT_RELU, 0, 0);
    ls[3] = L(CK_LAYER_ADD, 0, 0, 0, 2, 2, 1);
    ls[4] = L(CK_LAYER_GLOBALAVGPOOL2D, 0, 0, 0, 0, 0, 0);
    ls[5] = L(CK_LAYER_DENSE, 3, 0, 0, 0, 0, 0);
    a = graph_model(ctx, ls, 6);
    b = graph_model(ctx, ls, 6);
    planned_equals_unplanned(ctx, a, b, 6, 6, 2, 3, 0);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_context_destroy(ctx);
}

/* ---- activations shared by liveness (memtab.c) --------------------------------------------- */
/* One forward + loss + backward of a built CPU model on x, y; poison: every tensor the plan says
 * no backward reads (act_end before the backward starts) is set to NaN between forward and
 * backward. The parameter gradients go to g. */
static int grads_of_step(ck_model *m, const float *x, const int32_t *y, int n, int poison,
                         float *g) {
    ck_exec e = ck_exec_cpu(m, x);
    const int ln = ck_exec_logits_node(m);
    ck_kloss kl = {0.0, 0, 0};
    CK_OK(m->ctx, e.be->stage(&e, x, y, n));
    CK_OK(m->ctx, ck_exec_forward(&e, n, 1, ln + 1));
    CK_OK(m->ctx, e.be->loss(&e, n, ck_exec_out(&e, ln), &kl));
    int poisoned = 0;
    for (int j = 0; poison && j < m->num_nodes; ++j) {
        const ck_node *nd = &m->nodes[j];
        if (nd->kind->alias || nd->act_end >= m->num_nodes)
            continue;
        float *o = ck_exec_out(&e, j);
        for (size_t i = 0; i < (size_t)n * nd->oh * nd->ow * nd->oc; ++i)
            o[i] = NAN;
        ++poisoned;
    }
    CK_OK(m->ctx, ck_exec_backward(&e, n, ln, e.logits_grad));
    memcpy(g, m->grads, m->num_params * sizeof *g);
    return poisoned;
}

/* What the plan calls dead after the forward pass is read by no backward: with every such tensor
 * NaN (each node keeping its own buffer), the gradients are the same bits. */
static void dead_tensors_are_not_read(ck_context *ctx, ck_model *a, ck_model *b, int h, int w,
                                      int c, int want_dead) {
    a->acts_private = b->acts_private = 1;
    CK_OK(ctx, ck_model_build(a, h, w, c, 4));
    CK_OK(ctx, ck_model_build(b, h, w, c, 4));
    enum { N = 4 };
    const int per = h * w * c;
    float *x = malloc(sizeof(float) * N * per);
    int32_t y[N];
    batch(x, y, N, per, ck_model_num_classes(a), 21);
    float *ga = malloc(a->num_params * sizeof *ga), *gb = malloc(b->num_params * sizeof *gb);
    const int dead = grads_of_step(a, x, y, N, 1, ga);
    cr_assert_eq(dead, want_dead, "tensors dead after the forward pass: %d", dead);
    grads_of_step(b, x, y, N, 0, gb);
    cr_assert_eq(a->num_params, b->num_params);
    for (size_t i = 0; i < a->num_params; ++i)
        cr_assert(memcmp(&ga[i], &gb[i], sizeof *ga) == 0, "gradient %zu: %g poisoned, %g", i,
                  (double)ga[i], (double)gb[i]);
    free(x);
    free(ga);
    free(gb);
}

static void text_pair(ck_context *ctx, const char *text, ck_model **a, ck_model **b) {
    char err[512];
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, a, err, sizeof err));
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, b, err, sizeof err));
}

Test(graph, tensors_no_backward_reads_are_dead_after_forward) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *a, *b;
    const char *files[2] = {t_src("examples/resnet20_v1.py"), t_src("examples/resnet20_v2.py")};
    for (int f = 0; f < 2; ++f) {
        char *text = t_read_file(files[f], NULL);
        text_pair(ctx, text, &a, &b);
        free(text);
        /* v1: the BN before each of the 9 Adds; v2 (pre-activation): none */
        dead_tensors_are_not_read(ctx, a, b, 28, 28, 1, f == 0 ? 9 : 0);
        ck_model_destroy(a);
        ck_model_destroy(b);
    }
    /* Concatenate, an Add of three, a BN after the merge (BN+ReLU), a Flatten (an alias of its
     * input's buffer) before the Dense */
    static const char cat[] =
        "inp = keras.Input((8, 8, 2))\n"
        "p = layers.Conv2D(4, 3, strides=2, padding='same')(inp)\n"
        "x = layers.Conv2D(4, 3, strides=2, padding='same')(inp)\n"
        "x = layers.BatchNormalization()(x)\n"
        "y = layers.Activation('relu')(x)\n"
        "y = layers.Conv2D(4, 3, padding='same')(y)\n"
        "s = layers.Add()([p, y, x])\n"
        "b = layers.MaxPooling2D(2)(layers.Conv2D(3, 2, padding='same')(inp))\n"
        "c = layers.Concatenate()([s, b])\n"
        "c = layers.BatchNormalization()(c)\n"
        "c = layers.Activation('relu')(c)\n"
        "out = layers.Dense(3, activation='softmax')(layers.Flatten()(c))\n"
        "model = keras.Model(inp, out)\n";
    text_pair(ctx, cat, &a, &b);
    dead_tensors_are_not_read(ctx, a, b, 8, 8, 2, 1); /* the sum: only Concatenate reads it */
    ck_model_destroy(a);
    ck_model_destroy(b);
    /* each fused node read only by nodes whose backward skips their inputs, so that each kind's
     * claim about its own output decides: BN+ReLU and Add+ReLU read theirs (kept), a plain BN
     * and a Concatenate do not (dead) */
    static const char skippers[] =
        "inp = keras.Input((8, 8, 2))\n"
        "a = layers.Conv2D(4, 3, padding='same')(inp)\n"
        "a = layers.BatchNormalization()(a)\n"
        "a = layers.Activation('relu')(a)\n"
        "s = layers.Add()([a, layers.Conv2D(4, 1)(inp)])\n"
        "s = layers.Activation('relu')(s)\n"
        "c = layers.BatchNormalization()(layers.Conv2D(4, 1)(inp))\n"
        "m = layers.Concatenate()([s, c])\n"
        "t = layers.Add()([m, layers.Conv2D(8, 1)(inp)])\n"
        "t = layers.BatchNormalization()(t)\n"
        "out = layers.Dense(3, activation='softmax')(layers.GlobalAveragePooling2D()(t))\n"
        "model = keras.Model(inp, out)\n";
    text_pair(ctx, skippers, &a, &b);
    dead_tensors_are_not_read(ctx, a, b, 8, 8, 2, 2);
    ck_model_destroy(a);
    ck_model_destroy(b);
    /* a Rescaling's backward (dx = dy * scale) reads neither side: the BN output it alone reads
     * and its own output, which only an Add reads, are both dead */
    static const char rescale[] =
        "inp = keras.Input((8, 8, 2))\n"
        "a = layers.BatchNormalization()(layers.Conv2D(4, 3, padding='same')(inp))\n"
        "r = layers.Rescaling(0.5, offset=0.1)(a)\n"
        "s = layers.Add()([r, layers.Conv2D(4, 1)(inp)])\n"
        "out = layers.Dense(3, activation='softmax')(layers.GlobalAveragePooling2D()(s))\n"
        "model = keras.Model(inp, out)\n";
    text_pair(ctx, rescale, &a, &b);
    dead_tensors_are_not_read(ctx, a, b, 8, 8, 2, 2);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_layer_desc ls[16];
    const int n = residual_layers(ls, CK_ACT_RELU);
    a = graph_model(ctx, ls, n);
    b = graph_model(ctx, ls, n);
    dead_tensors_are_not_read(ctx, a, b, 6, 6, 2, 1); /* BN 3, read by Add 4 only */
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_context_destroy(ctx);
}

/* Shared buffers never hold two live tensors: the intervals [i, act_end] of nodes whose bytes
 * overlap are disjoint, and ResNet-20 v1 (whose BN outputs before each Add die in the forward
 * pass) needs less than one buffer per node. */
Test(graph, shared_activation_buffers_hold_one_live_tensor) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const char *files[2] = {t_src("examples/resnet20_v1.py"), t_src("examples/resnet20_v2.py")};
    for (int f = 0; f < 2; ++f) {
        char *text = t_read_file(files[f], NULL);
        ck_model *m, *own;
        text_pair(ctx, text, &m, &own);
        free(text);
        own->acts_private = 1;
        CK_OK(ctx, ck_model_build(m, 0, 0, 0, 16));
        CK_OK(ctx, ck_model_build(own, 0, 0, 0, 16));
        int shared = 0;
        for (int i = 0; i < m->num_nodes; ++i)
            for (int j = i + 1; j < m->num_nodes; ++j) {
                const ck_node *p = &m->nodes[i], *q = &m->nodes[j];
                if (p->kind->alias || q->kind->alias)
                    continue;
                const size_t pe = p->act_offset + sizeof(float) * 16 * p->oh * p->ow * p->oc,
                             qe = q->act_offset + sizeof(float) * 16 * q->oh * q->ow * q->oc;
                if (p->act_offset >= qe || q->act_offset >= pe)
                    continue;
                ++shared;
                cr_assert(p->act_end < j, "%s: nodes %d (live to %d) and %d share bytes", files[f],
                          i, p->act_end, j);
            }
        if (f == 0) {
            cr_assert_gt(shared, 0);
            cr_assert_lt(m->mem_act_bytes, own->mem_act_bytes * 0.9, "%zu vs %zu bytes",
                         m->mem_act_bytes, own->mem_act_bytes);
        }
        ck_model_destroy(m);
        ck_model_destroy(own);
    }
    ck_context_destroy(ctx);
}
