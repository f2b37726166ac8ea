/* Suite `bf16_exec`: the CPU executor's bf16 emulation (docs/precision.md). Every stored node
 * output but the logits, the model input and every input gradient are bf16 values; a bf16
 * forward and backward equal, bit for bit, a reference that runs the CPU ops one by one and
 * rounds after each (conv and dense multiply by bf16-rounded kernels, a conv rounds its product
 * and again after its bias, its kernel gradient is bf16); master weights stay fp32; fp32 models are
 * untouched (no extra memory, the bit gate tools/bitcheck.sh for their numbers); bf16 gradients
 * stay within the bound that the rounding allows of the fp32 ones, and bf16 training learns. */
#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "ck_math.h"
#include "cpu_layers.h"
#include "exec.h"
#include "model_internal.h"

/* conv -> relu -> max pool -> flatten -> dense: one node per layer with planning off */
static const char k_small[] = "model = Sequential()\n"
                              "model.add(Conv2D(4, (3, 3), input_shape=(6, 6, 2)))\n"
                              "model.add(Activation('relu'))\n"
                              "model.add(MaxPooling2D(pool_size=(2, 2)))\n"
                              "model.add(Flatten())\n"
                              "model.add(Dense(5))\n"
                              "model.compile(loss=SparseCategoricalCrossentropy(from_logits=True), "
                              "optimizer='adam')\n";

static ck_model *model_at(ck_context *ctx, const char *text, ck_precision p, int planning,
                          int max_batch) {
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_set_precision(m, p));
    CK_OK(ctx, ck_model_set_planning(m, planning));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, max_batch));
    return m;
}

static int is_bf16(float v) {
    const float r = ck_bf16_round(v);
    return memcmp(&r, &v, sizeof v) == 0;
}

/* How many of the n values are not bf16 values. */
static size_t not_bf16(const float *p, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; ++i)
        k += !is_bf16(p[i]);
    return k;
}

static void batch(float *x, int32_t *y, int n, size_t per, int classes, uint64_t seed) {
    trng r = {seed};
    trng_fill(&r, x, (size_t)n * per, -1.0f, 1.0f);
    for (int i = 0; i < n; ++i)
        y[i] = (int32_t)(trng_u32(&r) % (uint32_t)classes);
}

static size_t node_out_count(const ck_node *nd, int n) {
    return (size_t)n * nd->oh * nd->ow * nd->oc;
}

/* The seed model (BN, fused BN+ReLU, dropout in the pooling nodes), planned: after a training
 * forward every node output before the logits and the staged input are bf16 values, the logits
 * are not rounded, and the master weights stay fp32. */
Test(bf16_exec, stored_outputs_are_bf16) {
    enum { N = 6 };
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = model_at(ctx, t_seed_cnn_text, CK_PRECISION_BF16, 1, N);
    const size_t per = 28 * 28;
    float *x = malloc(N * per * sizeof *x);
    int32_t y[N];
    batch(x, y, N, per, 10, 3);
    CK_OK(ctx, ck_model_forward_nodes(m, x, N, 1, m->num_nodes));
    cr_assert(m->xbf, "a bf16 model keeps a bf16 copy of the batch");
    cr_assert_eq(not_bf16(m->xbf, N * per), 0);
    cr_assert_gt(not_bf16(x, N * per), N * per / 2, "the caller's batch is left as it was");
    const int ln = m->num_nodes - 1 - m->softmax_last;
    for (int i = 0; i < ln; ++i)
        cr_assert_eq(not_bf16(m->nodes[i].out, node_out_count(&m->nodes[i], N)), 0,
                     "node %d (type %d) stores non-bf16 values", i, (int)m->nodes[i].type);
    cr_assert_gt(not_bf16(m->nodes[ln].out, node_out_count(&m->nodes[ln], N)), 0,
                 "the logits stay fp32");
    cr_assert_gt(not_bf16(m->params, m->num_params), m->num_params / 2, "weights stay fp32");
    /* and a training step keeps the weights and the BN moving statistics fp32 */
    CK_OK(ctx, ck_model_train_step(m, x, y, N, NULL));
    cr_assert_gt(not_bf16(m->params, m->num_params), m->num_params / 2);
    cr_assert_gt(not_bf16(m->fixed, m->num_fixed), 0, "BN moving statistics stay fp32");
    free(x);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* An fp32 model allocates no bf16 batch and its outputs are not rounded; a bf16 one costs one
 * batch of inputs more and a rounded copy of the parameters (what conv and dense multiply by). */
Test(bf16_exec, fp32_untouched) {
    enum { N = 4 };
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *f = model_at(ctx, t_seed_cnn_text, CK_PRECISION_FP32, 1, N);
    ck_model *b = model_at(ctx, t_seed_cnn_text, CK_PRECISION_BF16, 1, N);
    cr_assert_null(f->xbf);
    ck_model_memory mf, mb;
    CK_OK(ctx, ck_model_memory_usage(f, &mf));
    CK_OK(ctx, ck_model_memory_usage(b, &mb));
    cr_assert_null(f->wround);
    cr_assert_eq(mb.host_bytes, mf.host_bytes + (N * 28 * 28 + b->num_params) * sizeof(float),
                 "%zu vs %zu", mb.host_bytes, mf.host_bytes);
    float x[N * 28 * 28];
    int32_t y[N];
    batch(x, y, N, 28 * 28, 10, 5);
    CK_OK(ctx, ck_model_forward_nodes(f, x, N, 1, f->num_nodes));
    cr_assert_gt(not_bf16(f->nodes[0].out, node_out_count(&f->nodes[0], N)), 0);
    ck_model_destroy(f);
    ck_model_destroy(b);
    ck_context_destroy(ctx);
}

/* The reference: the CPU ops of the small model one by one on the same weights, rounding the
 * input and every stored output but the logits, then backward rounding every input gradient.
 * Conv and Dense multiply by the kernels rounded to bf16 (as a tensor-core GEMM reads them); the
 * conv rounds its product before adding the bias and the executor rounds that sum (two roundings,
 * as cuDNN's bf16 output then the bias kernel); the logits Dense computes in fp32; the loss
 * gradient is rounded before the Dense's backward reads it; the conv's kernel gradient is rounded
 * (cuDNN writes it in bf16), the Dense's is not (cuBLAS writes it in fp32).
 * The model must give the same bits: node outputs, logits, loss and every weight gradient. */
Test(bf16_exec, equals_reference_rounding_after_each_op) {
    enum { N = 3, H = 6, W = 6, C = 2, K = 4, P = 2, CLS = 5 };
    const int OH = H - 2, OW = W - 2, FL = P * P * K;
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = model_at(ctx, k_small, CK_PRECISION_BF16, 0, N);
    cr_assert_eq(m->num_nodes, 5);
    float x[N * H * W * C];
    int32_t y[N];
    batch(x, y, N, H * W * C, CLS, 11);
    double loss = 0.0;
    int correct = 0;
    CK_OK(ctx, ck_model_loss_and_grads(m, x, y, N, &loss, &correct));

    const ck_node *cv = &m->nodes[0], *dn = &m->nodes[4];
    const float *kc = m->params + cv->p_kernel, *bc = m->params + cv->p_bias;
    const float *kd = m->params + dn->p_kernel, *bd = m->params + dn->p_bias;
    ck_conv_geom gc, gp;
    cr_assert_eq(ck_conv_geom_make(&gc, N, H, W, C, K, 3, 3, 1, 1, 0), 0);
    cr_assert_eq(ck_conv_geom_make(&gp, N, OH, OW, K, K, 2, 2, 2, 2, 0), 0);
    float *ws = malloc((ck_cpu_conv2d_workspace_floats(&gc) + 1) * sizeof *ws);
    float xr[N * H * W * C], conv[N * 16 * K], relu[N * 16 * K], pool[N * FL], logits[N * CLS];
    float kcr[9 * C * K], kdr[FL * CLS];
    memcpy(kcr, kc, sizeof kcr);
    memcpy(kdr, kd, sizeof kdr);
    ck_bf16_round_buffer(kcr, 9 * C * K);
    ck_bf16_round_buffer(kdr, FL * CLS);
    memcpy(xr, x, sizeof x);
    ck_bf16_round_buffer(xr, N * H * W * C);
    ck_cpu_conv2d_forward(&gc, xr, kcr, NULL, conv, ws);
    ck_bf16_round_buffer(conv, N * OH * OW * K);
    ck_cpu_bias_add((size_t)N * OH * OW, K, bc, conv);
    ck_bf16_round_buffer(conv, N * OH * OW * K);
    ck_cpu_activation_forward(CK_ACT_RELU, 0.0f, conv, relu, (size_t)N * OH * OW * K, K);
    ck_bf16_round_buffer(relu, N * OH * OW * K);
    ck_cpu_pool_forward(&gp, 1, relu, pool);
    ck_bf16_round_buffer(pool, N * FL);
    ck_cpu_dense_forward(N, FL, CLS, pool, kdr, bd, logits); /* the logits: not rounded */
    const float *want[5] = {conv, relu, pool, pool, logits};
    for (int i = 0; i < 5; ++i)
        cr_assert(memcmp(m->nodes[i].out, want[i], node_out_count(&m->nodes[i], N) * 4) == 0,
                  "node %d differs from the reference", i);
    cr_assert(memcmp(m->xbf, xr, sizeof xr) == 0);

    float dl[N * CLS], dpool[N * FL], drelu[N * 16 * K], dconv[N * 16 * K];
    float gkd[FL * CLS], gbd[CLS], gkc[9 * C * K], gbc[K];
    double rl = 0.0;
    int rc = 0;
    ck_cpu_softmax_xent(N, CLS, logits, y, dl, &rl, &rc);
    cr_assert_eq(loss, rl);
    cr_assert_eq(correct, rc);
    ck_bf16_round_buffer(dl, N * CLS);
    ck_cpu_dense_backward(N, FL, CLS, pool, kdr, dl, dpool, gkd, gbd);
    ck_bf16_round_buffer(dpool, N * FL);
    ck_cpu_pool_backward(&gp, 1, relu, dpool, drelu);
    ck_bf16_round_buffer(drelu, N * OH * OW * K);
    ck_cpu_activation_backward(CK_ACT_RELU, 0.0f, conv, relu, drelu, dconv, (size_t)N * OH * OW * K,
                               K);
    ck_bf16_round_buffer(dconv, N * OH * OW * K);
    ck_cpu_conv2d_backward(&gc, xr, kcr, dconv, NULL, gkc, gbc, ws);
    ck_bf16_round_buffer(gkc, 9 * C * K);
    cr_assert_gt(not_bf16(gkd, FL * CLS), 0, "the dense kernel gradient is an fp32 sum");
    cr_assert_eq(not_bf16(m->grads + cv->p_kernel, 9 * C * K), 0, "the conv's is bf16");
    cr_assert_gt(not_bf16(m->grads + cv->p_bias, K), 0, "the conv's bias gradient is fp32");
    cr_assert(memcmp(m->grads + dn->p_kernel, gkd, sizeof gkd) == 0, "dense kernel gradient");
    cr_assert(memcmp(m->grads + dn->p_bias, gbd, sizeof gbd) == 0, "dense bias gradient");
    cr_assert(memcmp(m->grads + cv->p_kernel, gkc, sizeof gkc) == 0, "conv kernel gradient");
    cr_assert(memcmp(m->grads + cv->p_bias, gbc, sizeof gbc) == 0, "conv bias gradient");
    free(ws);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* conv -> flatten -> dense (hidden) -> dense (logits), for the layer rules of bf16 */
static const char k_conv_dense[] =
    "model = Sequential()\n"
    "model.add(Conv2D(4, (3, 3), input_shape=(6, 6, 2)))\n"
    "model.add(Flatten())\n"
    "model.add(Dense(6))\n"
    "model.add(Dense(5))\n"
    "model.compile(loss=SparseCategoricalCrossentropy(from_logits=True), "
    "optimizer='adam')\n";

/* How many of the n values differ in their bits. */
static size_t bits_differ(const float *a, const float *b, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; ++i)
        k += memcmp(&a[i], &b[i], sizeof *a) != 0;
    return k;
}

/* The layer rule of bf16 conv and dense, as the GPU's cuDNN / cuBLAS calls then the bias kernel
 * compute it: y = round(round(x * round(w)) + b). With nonzero biases that double rounding is
 * seen: it differs from rounding x * round(w) + b once, somewhere. And the rounding of the
 * kernel itself is seen: x * w differs from x * round(w). */
Test(bf16_exec, conv_and_dense_round_product_then_bias) {
    enum { N = 3, H = 6, W = 6, C = 2, K = 4, U = 6, CLS = 5 };
    const int FL = 4 * 4 * K;
    const size_t Y = (size_t)N * FL;
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = model_at(ctx, k_conv_dense, CK_PRECISION_BF16, 0, N);
    cr_assert_eq(m->num_nodes, 4);
    const ck_node *cv = &m->nodes[0], *dh = &m->nodes[2];
    trng r = {31};
    trng_fill(&r, m->params + cv->p_bias, K, -1.0f, 1.0f);
    trng_fill(&r, m->params + dh->p_bias, U, -1.0f, 1.0f);
    float x[N * H * W * C];
    int32_t y[N];
    batch(x, y, N, H * W * C, CLS, 37);
    CK_OK(ctx, ck_model_forward_nodes(m, x, N, 1, m->num_nodes));

    ck_conv_geom gc;
    cr_assert_eq(ck_conv_geom_make(&gc, N, H, W, C, K, 3, 3, 1, 1, 0), 0);
    float *ws = malloc((ck_cpu_conv2d_workspace_floats(&gc) + 1) * sizeof *ws);
    float xr[N * H * W * C], kcr[9 * C * K], kdr[FL * U];
    float twice[N * 16 * K], once[N * 16 * K], fullw[N * 16 * K], dtw[N * U];
    const float *bc = m->params + cv->p_bias, *bd = m->params + dh->p_bias;
    memcpy(xr, x, sizeof x);
    ck_bf16_round_buffer(xr, N * H * W * C);
    memcpy(kcr, m->params + cv->p_kernel, sizeof kcr);
    ck_bf16_round_buffer(kcr, 9 * C * K);
    memcpy(kdr, m->params + dh->p_kernel, sizeof kdr);
    ck_bf16_round_buffer(kdr, FL * U);
    ck_cpu_conv2d_forward(&gc, xr, kcr, NULL, twice, ws);
    ck_bf16_round_buffer(twice, Y);
    ck_cpu_bias_add((size_t)N * 16, K, bc, twice);
    ck_bf16_round_buffer(twice, Y);
    ck_cpu_conv2d_forward(&gc, xr, kcr, bc, once, ws);
    ck_bf16_round_buffer(once, Y);
    ck_cpu_conv2d_forward(&gc, xr, m->params + cv->p_kernel, bc, fullw, ws);
    ck_bf16_round_buffer(fullw, Y);
    cr_assert(memcmp(cv->out, twice, sizeof twice) == 0, "conv: round(round(x * round(w)) + b)");
    cr_assert_gt(bits_differ(twice, once, Y), 0, "the double rounding is visible");
    cr_assert_gt(bits_differ(twice, fullw, Y), 0, "the kernel's rounding is visible");

    ck_cpu_dense_forward(N, FL, U, twice, kdr, NULL, dtw);
    ck_bf16_round_buffer(dtw, N * U);
    ck_cpu_bias_add(N, U, bd, dtw);
    ck_bf16_round_buffer(dtw, N * U);
    cr_assert(memcmp(dh->out, dtw, sizeof dtw) == 0,
              "hidden dense: round(round(x * round(w)) + b)");
    cr_assert_gt(not_bf16(m->nodes[3].out, N * CLS), 0, "the logits are fp32");
    free(ws);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* The weight gradients: the conv's kernel gradient is bf16 (cuDNN writes it in bf16), its bias
 * gradient and both dense layers' are fp32 sums (not all bf16 values). */
Test(bf16_exec, conv_kernel_gradient_is_bf16_dense_is_not) {
    enum { N = 4, PER = 6 * 6 * 2, CLS = 5 };
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = model_at(ctx, k_conv_dense, CK_PRECISION_BF16, 0, N);
    float x[N * PER];
    int32_t y[N];
    batch(x, y, N, PER, CLS, 41);
    double loss = 0.0;
    CK_OK(ctx, ck_model_loss_and_grads(m, x, y, N, &loss, NULL));
    const ck_node *cv = &m->nodes[0], *d1 = &m->nodes[2], *d2 = &m->nodes[3];
    cr_assert_eq(not_bf16(m->grads + cv->p_kernel, cv->n_kernel), 0);
    cr_assert_gt(not_bf16(m->grads + cv->p_bias, cv->n_bias), 0);
    cr_assert_gt(not_bf16(m->grads + d1->p_kernel, d1->n_kernel), 0);
    cr_assert_gt(not_bf16(m->grads + d2->p_kernel, d2->n_kernel), 0);
    /* the fp32 model's conv kernel gradient is not rounded: the rule is bf16's */
    ck_model *f = model_at(ctx, k_conv_dense, CK_PRECISION_FP32, 0, N);
    CK_OK(ctx, ck_model_loss_and_grads(f, x, y, N, &loss, NULL));
    cr_assert_gt(not_bf16(f->grads + f->nodes[0].p_kernel, cv->n_kernel), 0);
    ck_model_destroy(f);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* How far the bf16 weight gradients are from the fp32 ones of the same weights and batch (BN in
 * training mode; dropout masks do not depend on precision), against how far the fp32 gradients
 * move when only the input is rounded to bf16: one store's worth of perturbation. */
typedef struct grad_gap {
    double rel;      /* |g_bf16 - g_fp32| / |g_fp32| */
    double rel_in;   /* |g_fp32(round(x)) - g_fp32(x)| / |g_fp32(x)| */
    double cosine;   /* of g_bf16 and g_fp32 */
    double loss_rel; /* |loss_bf16 - loss_fp32| / loss_fp32 */
    int stores;      /* rounded stores of a step: the input, node outputs, input gradients, the loss
                      * gradient, the conv and dense kernels */
} grad_gap;

static double rel_diff(const float *a, const float *b, size_t n) {
    double d = 0.0, s = 0.0;
    for (size_t i = 0; i < n; ++i) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return sqrt(d / s);
}

static grad_gap grad_vs_fp32(const char *text, int n, size_t per, int classes) {
    grad_gap r;
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *f = model_at(ctx, text, CK_PRECISION_FP32, 1, n);
    ck_model *b = model_at(ctx, text, CK_PRECISION_BF16, 1, n);
    const size_t np = f->num_params, nx = (size_t)n * per;
    cr_assert_eq(np, b->num_params);
    memcpy(b->params, f->params, np * sizeof(float));
    float *x = malloc(nx * sizeof *x), *xr = malloc(nx * sizeof *xr), *g = malloc(np * 4);
    int32_t *y = malloc((size_t)n * sizeof *y);
    batch(x, y, n, per, classes, 7);
    memcpy(xr, x, nx * sizeof *x);
    ck_bf16_round_buffer(xr, nx);
    double lf = 0.0, lb = 0.0, l2 = 0.0;
    CK_OK(ctx, ck_model_loss_and_grads(f, xr, y, n, &l2, NULL));
    memcpy(g, f->grads, np * sizeof *g);
    CK_OK(ctx, ck_model_loss_and_grads(f, x, y, n, &lf, NULL));
    CK_OK(ctx, ck_model_loss_and_grads(b, x, y, n, &lb, NULL));
    r.rel = rel_diff(b->grads, f->grads, np);
    r.rel_in = rel_diff(g, f->grads, np);
    double dot = 0.0, nf = 0.0, nb = 0.0;
    for (size_t i = 0; i < np; ++i) {
        dot += (double)f->grads[i] * b->grads[i];
        nf += (double)f->grads[i] * f->grads[i];
        nb += (double)b->grads[i] * b->grads[i];
    }
    r.cosine = dot / sqrt(nf * nb);
    r.loss_rel = fabs(lf - lb) / lf;
    const int ln = b->num_nodes - 1 - b->softmax_last;
    r.stores = 2; /* the input and the loss gradient */
    for (int i = 0; i < ln; ++i)
        r.stores += b->nodes[i].type != CK_NODE_FLATTEN; /* its output, and its dx backward */
    for (int i = 1; i <= ln; ++i)
        r.stores += b->nodes[i].type != CK_NODE_FLATTEN;
    for (int i = 0; i <= ln; ++i) /* the kernels conv and dense multiply by, rounded */
        r.stores += b->nodes[i].type == CK_NODE_CONV || b->nodes[i].type == CK_NODE_DENSE;
    free(x), free(xr), free(g), free(y);
    ck_model_destroy(f);
    ck_model_destroy(b);
    ck_context_destroy(ctx);
    return r;
}

/* Gradient sanity. Rounding the input alone (2^-8 relative at most) already moves the seed
 * model's fp32 gradient at initialization by ~7% (0.069), with max or average pooling alike: it is
 * that sensitive to small changes (the small conv-dense model: ~0.1%). A bf16 step rounds S
 * tensors; if each perturbs the gradient about as much as the input's rounding and independently,
 * the errors add in quadrature: sqrt(S) * rel_in (S counts the input, node outputs, input
 * gradients, the loss gradient and the conv / dense kernels). The conv kernel gradient is then
 * itself rounded (as cuDNN writes it in bf16): at most 2^-8 of its value, so of the gradient's
 * norm, more: |g_bf16 - g_fp32| <= sqrt(S) * rel_in + 2^-8 (measured: small model 0.0024, seed
 * model about 2 * rel_in). The loss moves by at most the logits' error, S * 2^-8 relative. The
 * rounding did happen (the gradients differ) and the direction is kept (cosine > 0.99, measured
 * 0.991). */
Test(bf16_exec, gradients_close_to_fp32) {
    const grad_gap small = grad_vs_fp32(k_small, 16, 72, 5);
    const grad_gap seed = grad_vs_fp32(t_seed_cnn_text, 16, 28 * 28, 10);
    const grad_gap *gg[2] = {&small, &seed};
    for (int k = 0; k < 2; ++k) {
        const grad_gap *r = gg[k];
        cr_log_info("model %d: gradient error %g, input rounding alone %g, %d stores, loss %g, "
                    "cosine %g",
                    k, r->rel, r->rel_in, r->stores, r->loss_rel, r->cosine);
        cr_assert(r->rel > 0.0 && r->rel <= sqrt((double)r->stores) * r->rel_in + 0x1p-8,
                  "model %d: gradient error %g, input rounding alone %g, %d stores", k, r->rel,
                  r->rel_in, r->stores);
        cr_assert(r->loss_rel <= r->stores * 0x1p-8, "model %d: loss error %g", k, r->loss_rel);
        cr_assert(r->cosine > 0.99, "model %d: cosine %g", k, r->cosine);
    }
}

/* bf16 training learns: on a toy problem (the class is the signs of two input means) the mean
 * loss of the last steps falls as far as fp32's does. */
Test(bf16_exec, trains_like_fp32) {
    enum { N = 32, STEPS = 160, LAST = 10 };
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    double first[2] = {0.0, 0.0}, last[2] = {0.0, 0.0};
    for (int p = 0; p < 2; ++p) {
        ck_model *m = model_at(ctx, k_small, p ? CK_PRECISION_BF16 : CK_PRECISION_FP32, 1, N);
        trng r = {99};
        float x[N * 72];
        int32_t y[N];
        for (int s = 0; s < STEPS; ++s) {
            for (int i = 0; i < N; ++i) {
                const int cls = (int)(trng_u32(&r) % 4u);
                y[i] = cls;
                for (int j = 0; j < 72; ++j)
                    x[i * 72 + j] =
                        trng_normal(&r) * 0.5f + ((j % 2 ? cls & 1 : cls >> 1) ? 1.0f : -1.0f);
            }
            ck_step_result res = {0};
            CK_OK(ctx, ck_model_train_step(m, x, y, N, &res));
            if (s < LAST)
                first[p] += res.loss / LAST;
            if (s >= STEPS - LAST)
                last[p] += res.loss / LAST;
        }
        ck_model_destroy(m);
    }
    cr_assert_lt(last[0], 0.5 * first[0], "fp32 learns the toy problem: %g -> %g", first[0],
                 last[0]);
    cr_assert_lt(fabs(last[1] - last[0]), 0.02 * last[0], "bf16 %g vs fp32 %g", last[1], last[0]);
    ck_context_destroy(ctx);
}

/* A graph model rounds its gradient stores as the Sequential loop does: the same layers written
 * as a functional chain give the Sequential model's bits (outputs, loss, every weight gradient)
 * in bf16, unplanned (one node per layer in both). */
Test(bf16_exec, graph_executor_rounds_like_the_sequential_one) {
    enum { N = 3, PER = 6 * 6 * 2, CLS = 5 };
    static const char chain[] = "inp = keras.Input((6, 6, 2))\n"
                                "x = layers.Conv2D(4, (3, 3))(inp)\n"
                                "x = layers.Activation('relu')(x)\n"
                                "x = layers.MaxPooling2D(pool_size=(2, 2))(x)\n"
                                "x = layers.Flatten()(x)\n"
                                "out = layers.Dense(5)(x)\n"
                                "model = keras.Model(inp, out)\n";
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *s = model_at(ctx, k_small, CK_PRECISION_BF16, 0, N);
    ck_model *g = model_at(ctx, chain, CK_PRECISION_BF16, 0, N);
    cr_assert(g->graph && !s->graph);
    float x[N * PER];
    int32_t y[N];
    batch(x, y, N, PER, CLS, 17);
    double ls = 0.0, lg = 0.0;
    int cs = 0, cg = 0;
    CK_OK(ctx, ck_model_loss_and_grads(s, x, y, N, &ls, &cs));
    CK_OK(ctx, ck_model_loss_and_grads(g, x, y, N, &lg, &cg));
    cr_assert_eq(ls, lg);
    cr_assert_eq(s->num_params, g->num_params);
    cr_assert(memcmp(s->grads, g->grads, s->num_params * sizeof(float)) == 0,
              "bf16 weight gradients differ between the executors");
    ck_model_destroy(s);
    ck_model_destroy(g);
    ck_context_destroy(ctx);
}

/* A tensor with two readers: its gradient is the rounded sum of the rounded contributions.
 * conv -> a; b = relu(a); s = Add(a, b); GAP; Dense. By hand with the CPU ops: ds from the
 * Dense (rounded kernel, rounded loss gradient) and GAP, rounded; Add passes ds to both inputs
 * (rounded copies); dReLU(ds) through b, rounded; da = round(ds + dReLU(ds)); the conv's weight
 * gradient from da, rounded. Forward, the conv rounds its product, adds the bias and rounds. */
Test(bf16_exec, graph_gradient_sum_rounded) {
    enum { N = 2, H = 5, W = 5, C = 1, K = 3, CLS = 4 };
    static const char text[] = "inp = keras.Input((5, 5, 1))\n"
                               "a = layers.Conv2D(3, (3, 3), padding='same')(inp)\n"
                               "b = layers.Activation('relu')(a)\n"
                               "s = layers.Add()([a, b])\n"
                               "g = layers.GlobalAveragePooling2D()(s)\n"
                               "out = layers.Dense(4)(g)\n"
                               "model = keras.Model(inp, out)\n";
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = model_at(ctx, text, CK_PRECISION_BF16, 0, N);
    cr_assert_eq(m->num_nodes, 5);
    float x[N * H * W * C];
    int32_t y[N];
    batch(x, y, N, H * W * C, CLS, 23);
    double loss = 0.0;
    int correct = 0;
    CK_OK(ctx, ck_model_loss_and_grads(m, x, y, N, &loss, &correct));
    const ck_node *cv = &m->nodes[0], *dn = &m->nodes[4];
    const size_t T = (size_t)N * H * W * K;
    ck_conv_geom gc;
    cr_assert_eq(ck_conv_geom_make(&gc, N, H, W, C, K, 3, 3, 1, 1, 1), 0);
    float *ws = malloc((ck_cpu_conv2d_workspace_floats(&gc) + 1) * sizeof *ws);
    float xr[N * H * W * C], a[N * H * W * K], b[N * H * W * K], sm[N * H * W * K], gp[N * K],
        lg[N * CLS];
    float kcr[9 * C * K], kdr[K * CLS];
    memcpy(kcr, m->params + cv->p_kernel, sizeof kcr);
    memcpy(kdr, m->params + dn->p_kernel, sizeof kdr);
    ck_bf16_round_buffer(kcr, 9 * C * K);
    ck_bf16_round_buffer(kdr, K * CLS);
    memcpy(xr, x, sizeof x);
    ck_bf16_round_buffer(xr, N * H * W * C);
    ck_cpu_conv2d_forward(&gc, xr, kcr, NULL, a, ws);
    ck_bf16_round_buffer(a, T);
    ck_cpu_bias_add((size_t)N * H * W, K, m->params + cv->p_bias, a);
    ck_bf16_round_buffer(a, T);
    ck_cpu_activation_forward(CK_ACT_RELU, 0.0f, a, b, T, K);
    ck_bf16_round_buffer(b, T);
    for (size_t i = 0; i < T; ++i)
        sm[i] = a[i] + b[i];
    ck_bf16_round_buffer(sm, T);
    for (int n = 0; n < N; ++n) /* GAP */
        for (int k = 0; k < K; ++k) {
            float acc = 0.0f;
            for (int p = 0; p < H * W; ++p)
                acc += sm[((size_t)n * H * W + p) * K + k];
            gp[n * K + k] = acc / (float)(H * W);
        }
    ck_bf16_round_buffer(gp, N * K);
    cr_assert(memcmp(m->nodes[3].out, gp, sizeof gp) == 0, "the pooled tensor differs");
    ck_cpu_dense_forward(N, K, CLS, gp, kdr, m->params + dn->p_bias, lg);
    float dl[N * CLS], dgp[N * K], gkd[K * CLS], gbd[CLS];
    double rl = 0.0;
    int rc = 0;
    ck_cpu_softmax_xent(N, CLS, lg, y, dl, &rl, &rc);
    cr_assert_eq(loss, rl);
    ck_bf16_round_buffer(dl, N * CLS);
    ck_cpu_dense_backward(N, K, CLS, gp, kdr, dl, dgp, gkd, gbd);
    ck_bf16_round_buffer(dgp, N * K);
    float ds[N * H * W * K], db[N * H * W * K], da[N * H * W * K], gkc[9 * C * K], gbc[K];
    for (int n = 0; n < N; ++n) /* GAP backward */
        for (int p = 0; p < H * W; ++p)
            for (int k = 0; k < K; ++k)
                ds[((size_t)n * H * W + p) * K + k] = dgp[n * K + k] / (float)(H * W);
    ck_bf16_round_buffer(ds, T);
    ck_cpu_activation_backward(CK_ACT_RELU, 0.0f, a, b, ds, db, T, K);
    ck_bf16_round_buffer(db, T);
    for (size_t i = 0; i < T; ++i)
        da[i] = ds[i] + db[i];
    ck_bf16_round_buffer(da, T);
    ck_cpu_conv2d_backward(&gc, xr, kcr, da, NULL, gkc, gbc, ws);
    ck_bf16_round_buffer(gkc, 9 * C * K);
    cr_assert(memcmp(m->grads + dn->p_kernel, gkd, sizeof gkd) == 0, "dense kernel gradient");
    cr_assert(memcmp(m->grads + cv->p_kernel, gkc, sizeof gkc) == 0, "conv kernel gradient");
    cr_assert(memcmp(m->grads + cv->p_bias, gbc, sizeof gbc) == 0, "conv bias gradient");
    free(ws);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* An Add of three: a bf16 GPU adds pairwise and stores each partial sum (ck_cuda_add per extra
 * input), so the twin gives round(round(a + b) + c), which for some element differs from one
 * rounding of a + b + c. */
Test(bf16_exec, add_of_three_rounds_each_partial_sum) {
    enum { N = 2, H = 5, W = 5, K = 4 };
    static const char text[] = "inp = keras.Input((5, 5, 1))\n"
                               "a = layers.Conv2D(4, (3, 3), padding='same')(inp)\n"
                               "b = layers.Activation('tanh')(a)\n"
                               "c = layers.Activation('sigmoid')(a)\n"
                               "s = layers.Add()([a, b, c])\n"
                               "g = layers.GlobalAveragePooling2D()(s)\n"
                               "out = layers.Dense(3)(g)\n"
                               "model = keras.Model(inp, out)\n";
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = model_at(ctx, text, CK_PRECISION_BF16, 1, N);
    cr_assert_eq(m->num_nodes, 6);
    float x[N * H * W];
    int32_t y[N];
    batch(x, y, N, H * W, 3, 29);
    CK_OK(ctx, ck_model_forward_nodes(m, x, N, 1, m->num_nodes));
    const size_t T = (size_t)N * H * W * K;
    const float *a = m->nodes[0].out, *b = m->nodes[1].out, *c = m->nodes[2].out,
                *s = m->nodes[3].out;
    size_t apart = 0;
    for (size_t i = 0; i < T; ++i) {
        const float want = ck_bf16_round(ck_bf16_round(a[i] + b[i]) + c[i]);
        cr_assert(memcmp(&s[i], &want, sizeof want) == 0, "element %zu: %a, want %a", i,
                  (double)s[i], (double)want);
        apart += ck_bf16_round((a[i] + b[i]) + c[i]) != want;
    }
    cr_assert_gt(apart, 0, "no element tells the pairwise rounding from a single one");
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* The pooling node with a fused dropout (plan F3) under bf16: the GPU stores the pooled output
 * (rounded) and scales it in place (rounded again), so the CPU twin rounds twice as well:
 * out = round(round(avgpool(x)) * scale) where kept, 0 where dropped. A single rounding of
 * avgpool(x) * scale differs for some element (3x3 averages have more bits than bf16 keeps). */
Test(bf16_exec, pool_dropout_rounds_twice) {
    enum { N = 4, H = 6, W = 6, C = 3 };
    static const char text[] =
        "model = Sequential()\n"
        "model.add(AveragePooling2D(pool_size=(3, 3), strides=(1, 1), "
        "input_shape=(6, 6, 3)))\n"
        "model.add(Dropout(0.3))\n"
        "model.add(Flatten())\n"
        "model.add(Dense(5))\n"
        "model.compile(loss=SparseCategoricalCrossentropy(from_logits=True), "
        "optimizer='sgd')\n";
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = model_at(ctx, text, CK_PRECISION_BF16, 1, N);
    const ck_node *p = &m->nodes[0];
    cr_assert_eq(p->drop_type, CK_NODE_DROPOUT, "the dropout is fused into the pooling node");
    float x[N * H * W * C];
    int32_t y[N];
    batch(x, y, N, H * W * C, 5, 21);
    CK_OK(ctx, ck_model_forward_nodes(m, x, N, 1, m->num_nodes));
    const size_t cnt = node_out_count(p, N);
    float *pool = malloc(cnt * sizeof *pool);
    cr_assert(pool);
    ck_conv_geom g = ck_exec_geom(p, N);
    ck_cpu_pool_forward(&g, 0, m->xbf, pool);
    const float s = ck_dropout_scale(0.3f);
    size_t kept = 0, dropped = 0, apart = 0;
    for (size_t i = 0; i < cnt; ++i) {
        const float v = p->out[i];
        if (v == 0.0f) {
            dropped++;
            continue;
        }
        kept++;
        const float twice = ck_bf16_round(ck_bf16_round(pool[i]) * s);
        cr_assert(memcmp(&v, &twice, sizeof v) == 0, "element %zu: %a, want %a", i, (double)v,
                  (double)twice);
        apart += ck_bf16_round(pool[i] * s) != twice;
    }
    cr_assert_gt(kept, cnt / 2);
    cr_assert_gt(dropped, 0);
    cr_assert_gt(apart, 0, "no element tells the double rounding from a single one");
    free(pool);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* The per-node replay the GPU tests use (ck_model_forward_range, ck_model_node_out / _set): on
 * the CPU, running node i alone on node i - 1's output as the full forward left it gives the full
 * forward's output of node i bit for bit (same step, so the same dropout masks; the same rounded
 * weights), for every node of the planned seed model in bf16. */
Test(bf16_exec, node_replay_equals_the_full_forward) {
    enum { N = 6 };
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = model_at(ctx, t_seed_cnn_text, CK_PRECISION_BF16, 1, N);
    const size_t per = 28 * 28;
    float *x = malloc(N * per * sizeof *x);
    int32_t y[N];
    batch(x, y, N, per, 10, 11);
    CK_OK(ctx, ck_model_train_step(m, x, y, N, NULL)); /* step 1: masks of a later step */
    CK_OK(ctx, ck_model_forward_range(m, x, N, 1, 0, m->num_nodes));
    size_t big = 0;
    for (int i = 0; i < m->num_nodes; ++i)
        if (node_out_count(&m->nodes[i], N) > big)
            big = node_out_count(&m->nodes[i], N);
    const int nn = m->num_nodes;
    float **full = malloc(sizeof(float *) * nn), *got = malloc(big * sizeof *got);
    for (int i = 0; i < nn; ++i) {
        full[i] = malloc(node_out_count(&m->nodes[i], N) * sizeof(float));
        CK_OK(ctx, ck_model_node_out(m, i, N, full[i]));
    }
    int replayed = 0;
    for (int i = 0; i < nn; ++i) {
        if (m->nodes[i].kind->alias)
            continue;
        if (i > 0)
            CK_OK(ctx, ck_model_node_out_set(m, i - 1, N, full[i - 1]));
        CK_OK(ctx, ck_model_forward_range(m, x, N, 1, i, i + 1));
        CK_OK(ctx, ck_model_node_out(m, i, N, got));
        cr_assert(memcmp(got, full[i], node_out_count(&m->nodes[i], N) * sizeof *got) == 0,
                  "node %d (%s) replayed differs", i, m->nodes[i].kind->name);
        ++replayed;
    }
    cr_assert_geq(replayed, 10);
    /* bad arguments are refused, naming them */
    cr_assert_eq(ck_model_node_out(m, nn, N, got), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "i: node"), "%s", ck_context_last_error(ctx));
    cr_assert_eq(ck_model_forward_range(m, x, N, 1, 3, 2), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_node_out(m, 0, N + 1, got), CK_STATUS_BAD_PARAM);
    for (int i = 0; i < nn; ++i)
        free(full[i]);
    free(full), free(got), free(x);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

extern const char t_graph_func_text[]; /* test_gpu_graph.c */

/* The backward half of the replay (ck_model_backward_node, ck_model_grads_out): after a training
 * forward and backward, running each node's backward alone, from the logits down, on the loss
 * gradient and then on each node's own dx, leaves every parameter gradient of the full backward
 * bit for bit (planned seed model, bf16: BN+ReLU, pooling with dropout, dense). */
Test(bf16_exec, node_backward_replay_equals_the_full_backward) {
    enum { N = 6 };
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = model_at(ctx, t_seed_cnn_text, CK_PRECISION_BF16, 1, N);
    const size_t per = 28 * 28;
    float *x = malloc(N * per * sizeof *x);
    int32_t y[N];
    batch(x, y, N, per, 10, 13);
    CK_OK(ctx, ck_model_train_step(m, x, y, N, NULL));
    double ls = 0.0;
    int correct = 0;
    CK_OK(ctx, ck_model_loss_and_grads(m, x, y, N, &ls, &correct));
    float *full = malloc(m->num_params * sizeof *full), *got = malloc(m->num_params * sizeof *got);
    CK_OK(ctx, ck_model_grads_out(m, full));
    memset(m->grads, 0, m->num_params * sizeof(float)); /* every range must be written again */
    const int ln = m->num_nodes - 1 - m->softmax_last;
    size_t big = 0;
    for (int i = 0; i < m->num_nodes; ++i) {
        const size_t a = node_out_count(&m->nodes[i], N),
                     b = (size_t)N * m->nodes[i].ih * m->nodes[i].iw * m->nodes[i].ic;
        big = a > big ? a : big;
        big = b > big ? b : big;
    }
    float *dy = malloc(big * sizeof *dy), *dx = malloc(big * sizeof *dx);
    memcpy(dy, m->logits_grad, (size_t)N * m->classes * sizeof *dy); /* rounded by the step */
    for (int i = ln; i >= 0; --i) {
        if (m->nodes[i].kind->alias) /* the same gradient, the same memory */
            continue;
        CK_OK(ctx, ck_model_backward_node(m, x, i, N, dy, i > 0 ? dx : NULL));
        float *t = dy;
        dy = dx, dx = t;
    }
    CK_OK(ctx, ck_model_grads_out(m, got));
    size_t first = m->num_params;
    for (size_t k = 0; k < m->num_params && first == m->num_params; ++k)
        if (memcmp(&got[k], &full[k], sizeof *got))
            first = k;
    cr_assert_eq(first, m->num_params, "gradient %zu: replay %.9g, full %.9g", first, got[first],
                 full[first]);
    /* no batch, an alias node, a graph model's node: refused, naming the argument */
    cr_assert_eq(ck_model_backward_node(m, NULL, 1, N, dy, dx), CK_STATUS_BAD_PARAM);
    int flat = -1;
    for (int i = 0; i < m->num_nodes && flat < 0; ++i)
        if (m->nodes[i].kind->alias)
            flat = i;
    cr_assert_geq(flat, 0);
    cr_assert_eq(ck_model_backward_node(m, x, flat, N, dy, dx), CK_STATUS_NOT_SUPPORTED);
    cr_assert(strstr(ck_context_last_error(ctx), "i: node"), "%s", ck_context_last_error(ctx));
    ck_model *gm = model_at(ctx, t_graph_func_text, CK_PRECISION_BF16, 1, N);
    cr_assert_eq(ck_model_backward_node(gm, x, 1, N, dy, dx), CK_STATUS_NOT_SUPPORTED);
    ck_model_destroy(gm);
    free(full), free(got), free(dy), free(dx), free(x);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}
