/* Whole-model cross-check against PyTorch: the same weights and input give the same training
 * loss, gradients of every trainable array, BN moving statistics after a step, and inference
 * probabilities. Golden data: tests/golden/model_golden.h, written by tools/gen_model_golden.py
 * (see there for the model, the weight draws and the script's own checks).
 *
 * Tolerance: per array, max |got - expected| / max(1, max |expected|) <= 1e-4 (the expected
 * values are float64 results rounded to float32; the script measured float32 PyTorch within
 * ~1e-6 of them). Every failure prints the error of every array. */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnkit/model.h"
#include "golden/model_golden.h"
#include "model_internal.h"

#define MG_TOL 1e-4

/* The generator's model, layer for layer (tools/gen_model_golden.py LAYERS). */
static ck_model *mg_model(ck_context *ctx) {
    ck_model *m = NULL;
    CK_OK(ctx, ck_model_create(ctx, &m));
    ck_layer_desc d;
    const int conv_filters[3] = {4, 4, 6};
    for (int k = 0; k < 3; ++k) {
        ck_layer_desc_init(&d, CK_LAYER_CONV2D);
        d.units = conv_filters[k];
        d.kernel_h = d.kernel_w = 3;
        d.padding = k == 2 ? CK_PADDING_SAME : CK_PADDING_VALID;
        CK_OK(ctx, ck_model_add(m, &d));
        ck_layer_desc_init(&d, CK_LAYER_BATCHNORM);
        CK_OK(ctx, ck_model_add(m, &d));
        cr_assert_float_eq(d.epsilon, 1e-3f, 0.0f);
        cr_assert_float_eq(d.momentum, 0.99f, 0.0f);
        ck_layer_desc_init(&d, CK_LAYER_ACTIVATION);
        d.activation = CK_ACT_RELU;
        CK_OK(ctx, ck_model_add(m, &d));
        if (k == 1) {
            ck_layer_desc_init(&d, CK_LAYER_MAXPOOL2D);
            d.kernel_h = d.kernel_w = 2;
            CK_OK(ctx, ck_model_add(m, &d));
        }
    }
    ck_layer_desc_init(&d, CK_LAYER_FLATTEN);
    CK_OK(ctx, ck_model_add(m, &d));
    ck_layer_desc_init(&d, CK_LAYER_DENSE);
    d.units = 16;
    CK_OK(ctx, ck_model_add(m, &d));
    ck_layer_desc_init(&d, CK_LAYER_BATCHNORM);
    CK_OK(ctx, ck_model_add(m, &d));
    ck_layer_desc_init(&d, CK_LAYER_ACTIVATION);
    d.activation = CK_ACT_RELU;
    CK_OK(ctx, ck_model_add(m, &d));
    ck_layer_desc_init(&d, CK_LAYER_DENSE);
    d.units = MG_CLASSES;
    CK_OK(ctx, ck_model_add(m, &d));
    ck_layer_desc_init(&d, CK_LAYER_ACTIVATION);
    d.activation = CK_ACT_SOFTMAX;
    CK_OK(ctx, ck_model_add(m, &d));
    CK_OK(ctx, ck_model_build(m, MG_H, MG_W, MG_C, MG_N));
    cr_assert_eq(ck_model_num_layers(m), MG_NUM_LAYERS);
    cr_assert_eq(ck_model_num_classes(m), MG_CLASSES);

    size_t need = 0;
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, &need));
    cr_assert_eq(need, (size_t)MG_WEIGHT_COUNT, "model has %zu weights, golden %d", need,
                 MG_WEIGHT_COUNT);
    ck_param_counts pc;
    CK_OK(ctx, ck_model_param_counts(m, &pc));
    cr_assert_eq(pc.trainable, MG_TRAINABLE_COUNT);
    cr_assert_eq(pc.non_trainable, MG_MOVING_COUNT);
    CK_OK(ctx, ck_model_set_weights(m, mg_weights, MG_WEIGHT_COUNT));
    return m;
}

/* The model's gradients laid out like the trainable arrays of get_weights(): per node, kernel
 * then bias (Conv2D, Dense), gamma then beta (BN). Returns the count written. */
static size_t keras_order_grads(const ck_model *m, float *out) {
    size_t k = 0;
    for (int i = 0; i < m->num_nodes; ++i) {
        const ck_node *n = &m->nodes[i];
        if (n->type == CK_NODE_CONV || n->type == CK_NODE_DENSE) {
            memcpy(out + k, m->grads + n->p_kernel, n->n_kernel * sizeof(float));
            k += n->n_kernel;
            if (n->n_bias) {
                memcpy(out + k, m->grads + n->p_bias, n->n_bias * sizeof(float));
                k += n->n_bias;
            }
        } else if (n->type == CK_NODE_BN) {
            memcpy(out + k, m->grads + n->p_gamma, (size_t)n->oc * sizeof(float));
            k += (size_t)n->oc;
            memcpy(out + k, m->grads + n->p_beta, (size_t)n->oc * sizeof(float));
            k += (size_t)n->oc;
        }
    }
    return k;
}

/* max |got - exp| / max(1, max |exp|) */
static double arr_err(const float *got, const float *exp, size_t n, size_t *worst) {
    double scale = 1.0, e = 0.0;
    for (size_t i = 0; i < n; ++i)
        scale = fmax(scale, fabs((double)exp[i]));
    *worst = 0;
    for (size_t i = 0; i < n; ++i) {
        double d = fabs((double)got[i] - (double)exp[i]);
        if (!(d <= e)) { /* NaN counts as the worst */
            e = isnan(d) ? INFINITY : d;
            *worst = i;
        }
    }
    return e / scale;
}

/* A table of per-array errors, printed in full when any array exceeds the tolerance (or when
 * CK_TEST_VERBOSE is set). */
typedef struct err_report {
    char text[8192];
    size_t len;
    int failed;
    double max_err;
} err_report;

static void report_array(err_report *r, const char *what, const float *got, const float *exp,
                         size_t n) {
    size_t w;
    double e = arr_err(got, exp, n, &w);
    int bad = !(e <= MG_TOL);
    r->failed |= bad;
    if (e > r->max_err || isnan(e))
        r->max_err = e;
    if (r->len < sizeof r->text)
        r->len +=
            (size_t)snprintf(r->text + r->len, sizeof r->text - r->len,
                             "  %-42s %5zu values  max err %.3e%s  (worst [%zu]: got %.9g, "
                             "expected %.9g)\n",
                             what, n, e, bad ? " FAIL" : "", w, (double)got[w], (double)exp[w]);
}

static void finish_report(err_report *r, const char *title) {
    if (r->failed || getenv("CK_TEST_VERBOSE"))
        fprintf(stderr, "model_torch %s (tolerance %.0e relative to max(1, max|expected|)):\n%s",
                title, MG_TOL, r->text);
    cr_assert(!r->failed,
              "%s: an array differs from PyTorch by more than %g (max %.3e); "
              "the table is on stderr",
              title, MG_TOL, r->max_err);
}

static void report_scalar(err_report *r, const char *what, double got, double exp) {
    double e = fabs(got - exp) / fmax(1.0, fabs(exp));
    int bad = !(e <= MG_TOL);
    r->failed |= bad;
    if (e > r->max_err || isnan(e))
        r->max_err = e;
    if (r->len < sizeof r->text)
        r->len += (size_t)snprintf(r->text + r->len, sizeof r->text - r->len,
                                   "  %-42s     1 value   max err %.3e%s  (got %.9g, expected "
                                   "%.9g)\n",
                                   what, e, bad ? " FAIL" : "", got, exp);
}

Test(model_torch, weights_round_trip) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = mg_model(ctx);
    float *w = malloc(sizeof(float) * MG_WEIGHT_COUNT);
    CK_OK(ctx, ck_model_get_weights(m, w, MG_WEIGHT_COUNT, NULL));
    cr_assert_eq(memcmp(w, mg_weights, sizeof(float) * MG_WEIGHT_COUNT), 0);
    /* the gradient walk visits exactly the trainable arrays, with the golden sizes */
    float *g = malloc(sizeof(float) * m->num_params);
    cr_assert_eq(keras_order_grads(m, g), (size_t)MG_TRAINABLE_COUNT);
    cr_assert_eq(m->num_params, (size_t)MG_TRAINABLE_COUNT);
    free(g);
    free(w);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* (1) training-mode mean loss and (2) the gradient of every trainable array. */
Test(model_torch, training_loss_and_gradients) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = mg_model(ctx);
    double loss_sum = 0.0;
    CK_OK(ctx, ck_model_loss_and_grads(m, mg_x, mg_labels, MG_N, &loss_sum, NULL));
    float *g = malloc(sizeof(float) * MG_TRAINABLE_COUNT);
    cr_assert_eq(keras_order_grads(m, g), (size_t)MG_TRAINABLE_COUNT);
    err_report r = {{0}, 0, 0, 0.0};
    report_scalar(&r, "training loss (mean)", loss_sum / MG_N, MG_LOSS_TRAIN);
    for (int a = 0; a < MG_NUM_ARRAYS; ++a)
        if (mg_arrays[a].trainable)
            report_array(&r, mg_arrays[a].name, g + mg_arrays[a].at, mg_grads + mg_arrays[a].at,
                         mg_arrays[a].count);
    finish_report(&r, "training loss and gradients");
    free(g);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* (4) moving statistics after one training forward pass; trainable arrays untouched. */
Test(model_torch, moving_statistics_after_one_step) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = mg_model(ctx);
    CK_OK(ctx, ck_model_loss_and_grads(m, mg_x, mg_labels, MG_N, NULL, NULL));
    float *w = malloc(sizeof(float) * MG_WEIGHT_COUNT);
    CK_OK(ctx, ck_model_get_weights(m, w, MG_WEIGHT_COUNT, NULL));
    err_report r = {{0}, 0, 0, 0.0};
    for (int a = 0; a < MG_NUM_ARRAYS; ++a) {
        const mg_array *A = &mg_arrays[a];
        if (A->trainable)
            cr_assert_eq(memcmp(w + A->off, mg_weights + A->off, A->count * sizeof(float)), 0,
                         "%s changed without an optimizer step", A->name);
        else
            report_array(&r, A->name, w + A->off, mg_moving_after + A->at, A->count);
    }
    finish_report(&r, "moving statistics");
    free(w);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* (3) inference-mode probabilities (moving statistics) and loss. */
Test(model_torch, inference_probabilities) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = mg_model(ctx);
    float probs[MG_N * MG_CLASSES];
    CK_OK(ctx, ck_model_predict(m, mg_x, MG_N, probs));
    err_report r = {{0}, 0, 0, 0.0};
    report_array(&r, "probabilities (N x classes, ck_model_predict)", probs, mg_probs,
                 MG_N * MG_CLASSES);
    ck_step_result res;
    CK_OK(ctx, ck_model_evaluate(m, mg_x, mg_labels, MG_N, &res));
    report_scalar(&r, "inference loss (mean, ck_model_evaluate)", res.loss, MG_LOSS_INFER);
    finish_report(&r, "inference");
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}
