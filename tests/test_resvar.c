/* Residual placements (He et al. 2016, Fig. 4) of examples/resnet20_v1.py
 * (ck_study_residual_variant). */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnkit/model.h"
#include "cnnkit/study.h"

static ck_keras_model v1_layers(void) {
    char *text = t_read_file(t_src("examples/resnet20_v1.py"), NULL);
    ck_keras_model km;
    char err[512];
    cr_assert_eq(ck_keras_parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    free(text);
    return km;
}

/* the placement p of km's layers; the test fails when it is refused */
static ck_layer_desc *placed(const ck_keras_model *km, int p, int *n) {
    ck_layer_desc *o = NULL;
    char err[256];
    cr_assert_eq(ck_study_residual_variant(km->layers, km->count, p, &o, n, err, sizeof err),
                 CK_STATUS_SUCCESS, "%s", err);
    return o;
}

/* the readers of layer j in L[0..n) (explicit or implicit inputs) */
static int readers(const ck_layer_desc *L, int n, int j, int *who) {
    int c = 0;
    for (int i = j + 1; i < n; i++) {
        int hit = L[i].num_inputs == 0 ? j == i - 1 : 0;
        for (int k = 0; k < L[i].num_inputs; k++)
            hit |= L[i].inputs[k] == j;
        if (hit)
            who[c++] = i;
    }
    return c;
}

static int is_relu(const ck_layer_desc *d) {
    return d->type == CK_LAYER_ACTIVATION && d->activation == CK_ACT_RELU;
}

/* a CPU model of L[0..n) built for batches of max_batch (h, w, c 0: the first layer's shape) */
static ck_model *built(ck_context *ctx, const ck_layer_desc *L, int n, int h, int w, int c,
                       int max_batch) {
    ck_model *m = NULL;
    CK_OK(ctx, ck_model_create(ctx, &m));
    for (int i = 0; i < n; i++)
        CK_OK(ctx, ck_model_add(m, &L[i]));
    CK_OK(ctx, ck_model_build(m, h, w, c, max_batch));
    return m;
}

/* builds the list, checks layer-type counts and the Keras totals, runs one training step */
static void build_and_step(const ck_layer_desc *L, int n, long long total, long long nontrain) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = built(ctx, L, n, 28, 28, 1, 4);
    ck_param_counts pc;
    CK_OK(ctx, ck_model_param_counts(m, &pc));
    cr_assert_eq(pc.total, total);
    cr_assert_eq(pc.non_trainable, nontrain);
    enum { N = 4, PER = 28 * 28 };
    float *x = malloc(sizeof(float) * N * PER);
    int32_t y[N];
    for (int i = 0; i < N * PER; i++)
        x[i] = (float)((i * 37) % 101) / 101.0f;
    for (int i = 0; i < N; i++)
        y[i] = i % 10;
    ck_step_result r;
    CK_OK(ctx, ck_model_train_step(m, x, y, N, &r));
    cr_assert(isfinite(r.loss) && r.loss > 0.0, "loss %g", r.loss);
    free(x);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

static void type_counts(const ck_layer_desc *L, int n, int *conv, int *bn, int *act, int *add) {
    *conv = *bn = *act = *add = 0;
    for (int i = 0; i < n; i++) {
        *conv += L[i].type == CK_LAYER_CONV2D;
        *bn += L[i].type == CK_LAYER_BATCHNORM;
        *act += L[i].type == CK_LAYER_ACTIVATION;
        *add += L[i].type == CK_LAYER_ADD;
    }
}

/* 21 Conv2D, 19 BN, 19 ReLU and 9 Add, as resnet20_v1 itself */
static void same_layer_counts(const ck_layer_desc *L, int n) {
    int conv, bn, act, add;
    type_counts(L, n, &conv, &bn, &act, &add);
    cr_assert(conv == 21 && bn == 19 && act == 19 && add == 9, "%d %d %d %d", conv, bn, act, add);
}

/* Keras's totals of resnet20_v1 (tests/test_graph.c works them out: 274,154, 1,376 BN moving)
 * and one training step; frees o and km */
static void builds_and_steps(ck_layer_desc *o, int n, ck_keras_model *km) {
    build_and_step(o, n, 274154, 1376);
    ck_study_residual_free(o);
    ck_keras_model_free(km);
}

/* (a) the list is the input's, layer for layer (inputs written explicitly, names cleared) */
Test(resvar, original_is_the_input) {
    ck_keras_model km = v1_layers();
    int n = 0;
    ck_layer_desc *o = placed(&km, CK_RESID_ORIGINAL, &n);
    cr_assert_eq(n, km.count);
    for (int i = 0; i < n; i++) {
        ck_layer_desc a = km.layers[i], b = o[i];
        if (a.num_inputs == 0) {
            a.num_inputs = 1;
            a.inputs[0] = i - 1;
        }
        a.name[0] = b.name[0] = 0;
        cr_assert(memcmp(&a, &b, sizeof a) == 0, "layer %d differs", i);
    }
    builds_and_steps(o, n, &km);
}

/* (b) the branch's last BN moves after the Add: the same layers (21 Conv2D, 19 BN, 19 ReLU, 9
 * Add) and the same totals, since the moved BN keeps its channel count (the Add's output has
 * the branch's channels); every Add is read by exactly one BN, which one ReLU reads. */
Test(resvar, bn_after_add) {
    ck_keras_model km = v1_layers();
    int n = 0, who[16];
    ck_layer_desc *o = placed(&km, CK_RESID_BN_AFTER_ADD, &n);
    same_layer_counts(o, n);
    for (int i = 0; i < n; i++) {
        if (o[i].type != CK_LAYER_ADD)
            continue;
        cr_assert_eq(readers(o, n, i, who), 1);
        cr_assert_eq(o[who[0]].type, CK_LAYER_BATCHNORM, "layer %d", i);
        int b = who[0];
        cr_assert_eq(readers(o, n, b, who), 1);
        cr_assert(is_relu(&o[who[0]]), "layer %d", b);
        /* the branch input is now a Conv2D */
        int branch = 0;
        for (int k = 0; k < o[i].num_inputs; k++)
            branch |= o[o[i].inputs[k]].type == CK_LAYER_CONV2D;
        cr_assert(branch, "Add %d", i);
    }
    builds_and_steps(o, n, &km);
}

/* (c) the ReLU after the Add moves onto the branch: same counts and totals; no Add is read by a
 * ReLU and every Add reads one ReLU that reads a BN. */
Test(resvar, relu_before_add) {
    ck_keras_model km = v1_layers();
    int n = 0, who[16];
    ck_layer_desc *o = placed(&km, CK_RESID_RELU_BEFORE_ADD, &n);
    same_layer_counts(o, n);
    int first = 1;
    for (int i = 0; i < n; i++) {
        if (o[i].type != CK_LAYER_ADD)
            continue;
        int c = readers(o, n, i, who);
        for (int k = 0; k < c; k++)
            cr_assert(!is_relu(&o[who[k]]), "Add %d is read by ReLU %d", i, who[k]);
        int relus = 0;
        for (int k = 0; k < o[i].num_inputs; k++) {
            const ck_layer_desc *s = &o[o[i].inputs[k]];
            if (is_relu(s) && o[s->inputs[0]].type == CK_LAYER_BATCHNORM)
                relus++;
        }
        /* the first unit's shortcut is the stem's ReLU (after its BN) */
        cr_assert(relus == 1 || (relus == 2 && first), "Add %d: %d", i, relus);
        first = 0;
    }
    builds_and_steps(o, n, &km);
}

/* a graph that is not a v1 ResNet (an Add not read by a ReLU) is refused, naming the layer */
Test(resvar, refuses_other_graphs) {
    ck_layer_desc L[4];
    ck_layer_desc_init(&L[0], CK_LAYER_CONV2D);
    L[0].units = 4;
    L[0].kernel_h = L[0].kernel_w = 3;
    L[0].padding = CK_PADDING_SAME;
    L[0].input_h = L[0].input_w = 8;
    L[0].input_c = 4;
    ck_layer_desc_init(&L[1], CK_LAYER_BATCHNORM);
    ck_layer_desc_init(&L[2], CK_LAYER_ADD);
    L[2].num_inputs = 2;
    L[2].inputs[0] = 1;
    L[2].inputs[1] = CK_LAYER_INPUT_MODEL;
    ck_layer_desc_init(&L[3], CK_LAYER_FLATTEN);
    ck_layer_desc *o = (ck_layer_desc *)1;
    int n = 7;
    char err[256];
    cr_assert_eq(ck_study_residual_variant(L, 4, CK_RESID_BN_AFTER_ADD, &o, &n, err, sizeof err),
                 CK_STATUS_BAD_PARAM);
    cr_assert_null(o);
    cr_assert(strstr(err, "layers[2]"), "%s", err);
    /* a Sequential stack has no unit */
    cr_assert_eq(ck_study_residual_variant(L, 2, CK_RESID_ORIGINAL, &o, &n, err, sizeof err),
                 CK_STATUS_BAD_PARAM);
    cr_assert(strstr(err, "no residual unit"), "%s", err);
    cr_assert_eq(ck_study_residual_variant(L, 4, 99, &o, &n, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(err, "placement"), "%s", err);
}

/* (d) ReLU-only pre-activation: the ReLU after each Add goes before the branch's first Conv2D,
 * so the counts (19 ReLU: 9 removed, 9 added) and totals stay; no Add is read by a ReLU, every
 * unit's first Conv2D reads a ReLU, and the model ends Add -> GAP. */
Test(resvar, relu_preact) {
    ck_keras_model km = v1_layers();
    int n = 0, who[16];
    ck_layer_desc *o = placed(&km, CK_RESID_RELU_PREACT, &n);
    same_layer_counts(o, n);
    int relu_after_add = 0;
    for (int i = 0; i < n; i++) {
        if (o[i].type != CK_LAYER_ADD)
            continue;
        int c = readers(o, n, i, who);
        /* a ReLU reading an Add is the next unit's branch pre-activation: one Conv2D reads it */
        for (int k = 0; k < c; k++)
            if (is_relu(&o[who[k]])) {
                int w2[16];
                cr_assert_eq(readers(o, n, who[k], w2), 1);
                cr_assert_eq(o[w2[0]].type, CK_LAYER_CONV2D, "ReLU %d", who[k]);
                relu_after_add++;
            }
        /* branch: Add <- BN <- Conv <- ReLU <- BN <- Conv <- ReLU */
        int b = -1;
        for (int k = 0; k < o[i].num_inputs; k++)
            if (o[o[i].inputs[k]].type == CK_LAYER_BATCHNORM)
                b = o[i].inputs[k];
        cr_assert(b >= 0, "Add %d", i);
        int c2 = o[b].inputs[0], r1 = o[c2].inputs[0], b1 = o[r1].inputs[0];
        int c1 = o[b1].inputs[0], r0 = o[c1].inputs[0];
        cr_assert(o[c2].type == CK_LAYER_CONV2D && is_relu(&o[r1]) &&
                      o[b1].type == CK_LAYER_BATCHNORM && o[c1].type == CK_LAYER_CONV2D &&
                      is_relu(&o[r0]),
                  "Add %d", i);
    }
    cr_assert_eq(relu_after_add, 8); /* units 2..9 pre-activate the previous unit's sum */
    cr_assert_eq(o[n - 2].type, CK_LAYER_GLOBALAVGPOOL2D);
    cr_assert_eq(o[o[n - 2].inputs[0]].type, CK_LAYER_ADD);
    builds_and_steps(o, n, &km);
}

/* (e) full pre-activation of examples/resnet20_v1.py is examples/resnet20_v2.py layer for layer:
 * each unit's last BN and the ReLU after its Add become one BN-ReLU before its first Conv2D
 * (read by the projection too), and the stem's BN-ReLU goes after the last Add. */
Test(resvar, full_preact_of_v1_is_v2) {
    ck_keras_model km = v1_layers();
    char *text = t_read_file(t_src("examples/resnet20_v2.py"), NULL);
    ck_keras_model k2;
    char err[512];
    cr_assert_eq(ck_keras_parse(text, &k2, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    free(text);
    int n = 0, nw = 0;
    ck_layer_desc *o = placed(&km, CK_RESID_FULL_PREACT, &n), *w = NULL;
    /* v2 itself is not a post-activation ResNet: no placement of it is made */
    cr_assert_eq(
        ck_study_residual_variant(k2.layers, k2.count, CK_RESID_ORIGINAL, &w, &nw, err, sizeof err),
        CK_STATUS_BAD_PARAM);
    cr_assert(strstr(err, "post-activation"), "%s", err);
    cr_assert_eq(n, k2.count);
    for (int i = 0; i < n; i++) {
        /* explicit inputs, the unused input slots and names cleared */
        ck_layer_desc ab[2] = {k2.layers[i], o[i]};
        for (int s = 0; s < 2; s++) {
            if (ab[s].num_inputs == 0) {
                ab[s].num_inputs = 1;
                ab[s].inputs[0] = i - 1;
            }
            for (int k = ab[s].num_inputs; k < CK_MAX_LAYER_INPUTS; k++)
                ab[s].inputs[k] = 0;
            memset(ab[s].name, 0, sizeof ab[s].name);
        }
        cr_assert(memcmp(&ab[0], &ab[1], sizeof ab[0]) == 0, "layer %d (%s) differs", i,
                  ck_layer_type_name(ab[0].type));
    }
    build_and_step(o, n, 274154, 1376);
    ck_study_residual_free(o);
    ck_keras_model_free(&k2);
    ck_keras_model_free(&km);
}

/* the study's default for a v1 ResNet: 'original' and the four placements, none equivalent,
 * each order one unit; every list builds with Keras's totals */
Test(resvar, study_variants_of_v1) {
    ck_keras_model km = v1_layers();
    int kinds[CK_STUDY_KIND_COUNT];
    cr_assert_eq(ck_study_default_kinds(km.layers, km.count, kinds), 5);
    ck_study_variant v[CK_STUDY_KIND_COUNT];
    char err[256];
    cr_assert_eq(ck_study_variants(km.layers, km.count, NULL, 0, v, err, sizeof err),
                 CK_STATUS_SUCCESS, "%s", err);
    static const char *const want[5][2] = {{"original", "9x C-B-R-C-B + x, R"},
                                           {"bn-after-add", "9x C-B-R-C + x, B-R"},
                                           {"relu-before-add", "9x C-B-R-C-B-R + x"},
                                           {"relu-preact", "9x R-C-B-R-C-B + x"},
                                           {"full-preact", "9x B-R-C-B-R-C + x"}};
    for (int i = 0; i < 5; i++) {
        cr_assert_str_eq(v[i].name, want[i][0]);
        cr_assert_str_eq(v[i].order, want[i][1], "%s", v[i].name);
        cr_assert_eq(v[i].equivalent_to, -1, "%s", v[i].name);
        cr_assert_eq(v[i].layers[0].input_h, 28, "%s lost the input shape", v[i].name);
    }
    cr_assert_null(v[5].layers);
    for (int i = 1; i < 5; i++)
        build_and_step(v[i].layers, v[i].count, 274154, 1376);
    ck_study_variants_free(v, 5);
    /* a stack variant is refused on the graph, naming the layer that makes it one */
    const int mixed[2] = {CK_STUDY_FULL_PREACT, CK_STUDY_BN_AFTER_RELU};
    cr_assert_eq(ck_study_variants(km.layers, km.count, mixed, 2, v, err, sizeof err),
                 CK_STATUS_BAD_PARAM);
    cr_assert(strstr(err, "kinds[1]") && strstr(err, "graph"), "%s", err);
    ck_keras_model_free(&km);
}

/* A unit right after a stem BN-ReLU that reads the model input: full pre-activation moves the
 * stem after the Add, so the unit's BN-ReLU reads the model input and the input shape moves to
 * it; the list builds and trains. */
Test(resvar, full_preact_of_a_stem_on_the_input) {
    ck_layer_desc L[10];
    for (int i = 0; i < 10; i++)
        ck_layer_desc_init(&L[i], CK_LAYER_BATCHNORM);
    ck_layer_desc_init(&L[1], CK_LAYER_ACTIVATION);
    ck_layer_desc_init(&L[2], CK_LAYER_CONV2D);
    ck_layer_desc_init(&L[4], CK_LAYER_ACTIVATION);
    ck_layer_desc_init(&L[5], CK_LAYER_CONV2D);
    ck_layer_desc_init(&L[7], CK_LAYER_ADD);
    ck_layer_desc_init(&L[8], CK_LAYER_ACTIVATION);
    ck_layer_desc_init(&L[9], CK_LAYER_GLOBALAVGPOOL2D);
    L[0].input_h = L[0].input_w = 6;
    L[0].input_c = 4;
    L[1].activation = L[4].activation = L[8].activation = CK_ACT_RELU;
    L[2].units = L[5].units = 4;
    L[2].kernel_h = L[2].kernel_w = L[5].kernel_h = L[5].kernel_w = 3;
    L[2].padding = L[5].padding = CK_PADDING_SAME;
    L[7].num_inputs = 2;
    L[7].inputs[0] = 6; /* the branch BN */
    L[7].inputs[1] = 1; /* the stem ReLU */
    ck_layer_desc last;
    ck_layer_desc_init(&last, CK_LAYER_DENSE);
    last.units = 3;
    ck_layer_desc M[11];
    memcpy(M, L, sizeof L);
    M[10] = last;
    ck_layer_desc *o = NULL;
    int n = 0;
    char err[256];
    cr_assert_eq(ck_study_residual_variant(M, 11, CK_RESID_FULL_PREACT, &o, &n, err, sizeof err),
                 CK_STATUS_SUCCESS, "%s", err);
    /* BN ReLU Conv BN ReLU Conv Add(conv, input) BN ReLU GAP Dense */
    static const ck_layer_type want[11] = {
        CK_LAYER_BATCHNORM,  CK_LAYER_ACTIVATION,      CK_LAYER_CONV2D, CK_LAYER_BATCHNORM,
        CK_LAYER_ACTIVATION, CK_LAYER_CONV2D,          CK_LAYER_ADD,    CK_LAYER_BATCHNORM,
        CK_LAYER_ACTIVATION, CK_LAYER_GLOBALAVGPOOL2D, CK_LAYER_DENSE};
    cr_assert_eq(n, 11);
    for (int i = 0; i < n; i++)
        cr_assert_eq(o[i].type, want[i], "layer %d", i);
    cr_assert_eq(o[0].inputs[0], CK_LAYER_INPUT_MODEL);
    cr_assert(o[6].inputs[0] == 5 && o[6].inputs[1] == CK_LAYER_INPUT_MODEL, "Add reads %d, %d",
              o[6].inputs[0], o[6].inputs[1]);
    cr_assert(o[0].input_h == 6 && o[0].input_c == 4 && o[7].input_h == 0);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model_destroy(built(ctx, o, n, 0, 0, 0, 2));
    ck_context_destroy(ctx);
    ck_study_residual_free(o);
}
