/* bf16.cu against its host twin (src/host/bf16.c): rounding in place, packing to 16-bit storage
 * and unpacking must be bit-identical (both run ck_math.h's integer rounding). The bf16 conv
 * (cuDNN) and dense (cuBLAS) layers against their CPU twin (layer_conv2d.c, layer_dense.c's bf16
 * rule) within the derived tolerance below. Skipped without a CUDA device. */
#include "common.h"

/* a hung device call (a kernel that spins, a collective that waits) fails its test after five
 * minutes instead of holding the whole GPU run */
TestSuite(gpu_bf16, .timeout = 300);

#ifdef CNNKIT_HAVE_CUDA
#include "bf16.h"
#include "ck_kernels.h"
#include "ck_math.h"
#include "gpu_layers.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnnkit/model.h"
#include "exec.h"
#include "model_internal.h"

/* A CUDA context on a GPU with bf16 tensor cores (compute capability 8.0 or later, which
 * ck_model_build asks of a bf16 model), else the test is skipped as GPU tests are. */
static ck_context *bf16_ctx_or_skip(void) {
    ck_context *g = t_cuda_ctx_or_skip();
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) == cudaSuccess &&
        major >= 8)
        return g;
    ck_context_destroy(g);
    t_gpu_unavailable("bf16 needs compute capability 8.0 or later");
    return NULL;
}

/* Random values over many binades plus every special class: ties both ways, the overflow edge,
 * subnormals, signed zeros, Inf and NaN (signalling and quiet). */
static float *bf16_inputs(size_t n) {
    static const uint32_t special[] = {
        0x3F800000u, 0x3F808000u, 0x3F818000u, 0x3F80C000u, 0x7F7F7FFFu, 0x7F7F8000u, 0x7F7FFFFFu,
        0xFF7F8000u, 0x00008000u, 0x00008001u, 0x00018000u, 0x007FFFFFu, 0x80000000u, 0x00000000u,
        0x7F800000u, 0xFF800000u, 0x7FC00000u, 0x7F800001u, 0x7FFFFFFFu, 0xFF800001u};
    const size_t ns = sizeof special / sizeof *special;
    float *x = malloc(n * sizeof *x);
    trng r = {16};
    for (size_t i = 0; i < n; ++i) {
        uint32_t u;
        if (i < ns)
            u = special[i];
        else {
            /* random bit patterns: every exponent and every dropped-half value occurs */
            const float a = trng_uniform(&r, 0.0f, 65536.0f), b = trng_uniform(&r, 0.0f, 65536.0f);
            u = ((uint32_t)a << 16) | (uint32_t)b;
        }
        memcpy(&x[i], &u, sizeof u);
    }
    return x;
}

/* Without host data the buffer is zeroed: an odd count of bf16 words leaves the last half of
 * its final float unwritten, and compute-sanitizer's initcheck reports a download of it. */
static ck_tensor *dbuf(ck_context *ctx, size_t count, const float *host) {
    ck_tensor *t = NULL;
    CK_OK(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NCHW, (int)count, 1, 1, 1));
    if (host)
        CK_OK(ctx, ck_tensor_upload(ctx, t, host, count));
    else
        CK_OK(ctx, ck_tensor_fill(ctx, t, 0.0f));
    return t;
}

Test(gpu_bf16, kernels_match_cpu_bits) {
    ck_context *g = t_cuda_ctx_or_skip();
    const size_t n = 1000003; /* odd: the grid-stride tails */
    float *x = bf16_inputs(n), *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    uint16_t *hw = malloc(n * sizeof *hw), *hg = malloc((n + 1) * sizeof *hg);
    memcpy(want, x, n * sizeof *x);
    ck_bf16_round_buffer(want, n);
    ck_bf16_pack_buffer(x, hw, n);

    ck_tensor *tx = dbuf(g, n, x), *th = dbuf(g, (n + 1) / 2, NULL), *ty = dbuf(g, n, NULL);
    void *s = ck_context_stream(g);
    cr_assert_eq(ck_cuda_bf16_pack(ck_tensor_data(tx), (uint16_t *)ck_tensor_data(th), n, s), 0);
    cr_assert_eq(
        ck_cuda_bf16_unpack((const uint16_t *)ck_tensor_data(th), ck_tensor_data(ty), n, s), 0);
    cr_assert_eq(ck_cuda_bf16_round(ck_tensor_data(tx), n, s), 0);
    CK_OK(g, ck_context_synchronize(g));

    CK_OK(g, ck_tensor_download(g, tx, got, n));
    cr_assert(memcmp(got, want, n * sizeof *got) == 0, "ck_cuda_bf16_round differs from the CPU");
    CK_OK(g, ck_tensor_download(g, th, (float *)hg, (n + 1) / 2));
    cr_assert(memcmp(hg, hw, n * sizeof *hw) == 0, "ck_cuda_bf16_pack differs from the CPU");
    CK_OK(g, ck_tensor_download(g, ty, got, n));
    cr_assert(memcmp(got, want, n * sizeof *got) == 0, "pack then unpack differs from rounding");

    ck_tensor_destroy(tx), ck_tensor_destroy(th), ck_tensor_destroy(ty);
    free(x), free(want), free(got), free(hw), free(hg);
    ck_context_destroy(g);
}

/* ---- the 8-word (16-byte) bf16 paths against the one-word kernels ----
 *
 * Every kernel with a bf16 vector path takes it when its pointers are 16-byte aligned and the
 * layout allows, and the one-word kernel otherwise. The same launch on the same words placed one
 * word past an aligned address (never 16-byte aligned) must give the same output bits: the vector
 * path does the scalar path's fp32 operations per element and rounds once per store. */

/* A device buffer of n bf16 words starting `off` words into an aligned allocation. */
typedef struct wbuf {
    ck_tensor *t;
    uint16_t *p;
    size_t n;
} wbuf;

static wbuf wbuf_make(ck_context *g, const uint16_t *host, size_t n, int off) {
    wbuf b = {dbuf(g, n / 2 + 8, NULL), NULL, n};
    b.p = (uint16_t *)ck_tensor_data(b.t) + off;
    cr_assert_eq(((uintptr_t)b.p & 15u) == 0, off == 0, "offset %d: alignment not as planned", off);
    float *tmp = calloc(n / 2 + 8, sizeof *tmp);
    if (host)
        memcpy((uint16_t *)tmp + off, host, n * sizeof *host);
    CK_OK(g, ck_tensor_upload(g, b.t, tmp, n / 2 + 8));
    free(tmp);
    return b;
}

static void wbuf_get(ck_context *g, const wbuf *b, uint16_t *host) {
    float *tmp = malloc((b->n / 2 + 8) * sizeof *tmp);
    CK_OK(g, ck_context_synchronize(g));
    CK_OK(g, ck_tensor_download(g, b->t, tmp, b->n / 2 + 8));
    memcpy(host, (uint16_t *)tmp + (b->p - (uint16_t *)ck_tensor_data(b->t)), b->n * sizeof *host);
    free(tmp);
}

static uint16_t *bf16_words(size_t n, float lo, float hi, uint64_t seed) {
    float *f = malloc(n * sizeof *f);
    uint16_t *w = malloc(n * sizeof *w);
    trng r = {seed};
    trng_fill(&r, f, n, lo, hi);
    ck_bf16_pack_buffer(f, w, n);
    free(f);
    return w;
}

/* One op run on 1..3 word inputs into one word output at offset off; returns the output. */
typedef int (*vec_fn)(const uint16_t *const *in, uint16_t *out, void *stream, const void *arg);

static uint16_t *vec_run(ck_context *g, vec_fn f, const void *arg, int nin, uint16_t *const *in,
                         size_t n, int off) {
    wbuf bi[3], bo = wbuf_make(g, NULL, n, off);
    const uint16_t *pi[3] = {NULL, NULL, NULL};
    for (int i = 0; i < nin; ++i) {
        bi[i] = wbuf_make(g, in[i], n, off);
        pi[i] = bi[i].p;
    }
    cr_assert_eq(f(pi, bo.p, ck_context_stream(g), arg), 0);
    uint16_t *out = malloc(n * sizeof *out);
    wbuf_get(g, &bo, out);
    for (int i = 0; i < nin; ++i)
        ck_tensor_destroy(bi[i].t);
    ck_tensor_destroy(bo.t);
    return out;
}

static void vec_check(ck_context *g, const char *what, vec_fn f, const void *arg, int nin,
                      size_t n) {
    uint16_t *in[3];
    for (int i = 0; i < nin; ++i)
        in[i] = bf16_words(n, -2.0f, 3.0f, 100 + (uint64_t)i);
    uint16_t *vec = vec_run(g, f, arg, nin, in, n, 0), *one = vec_run(g, f, arg, nin, in, n, 1);
    size_t bad = 0;
    while (bad < n && vec[bad] == one[bad])
        ++bad;
    cr_expect_eq(bad, n, "%s: the 8-word path differs at %zu: 0x%04x vs 0x%04x", what, bad,
                 bad < n ? vec[bad] : 0, bad < n ? one[bad] : 0);
    for (int i = 0; i < nin; ++i)
        free(in[i]);
    free(vec), free(one);
}

typedef struct vec_arg {
    ck_kshape s;
    int act, kind;
    size_t count;
    void *mask;       /* dropout: NULL (draws in the apply) or room for the stored mask */
    const float *par; /* BN inference: gamma, beta, mean, var (4 * C, device) */
} vec_arg;

static int tw_act_fwd(const uint16_t *const *in, uint16_t *out, void *st, const void *arg) {
    const vec_arg *a = arg;
    return ck_cuda_activation_forward(a->act, 0.3f, in[0], out, a->count, 1, CK_KDT_BF16, st);
}
/* in: x, y, dy (x and y need not be an activation's pair: the formula is what is compared) */
static int tw_act_bwd(const uint16_t *const *in, uint16_t *out, void *st, const void *arg) {
    const vec_arg *a = arg;
    return ck_cuda_activation_backward(a->act, 0.3f, in[0], in[1], in[2], out, a->count, 1,
                                       CK_KDT_BF16, st);
}
static int tw_add(const uint16_t *const *in, uint16_t *out, void *st, const void *arg) {
    const vec_arg *a = arg;
    return ck_cuda_add(out, in[0], in[1], a->count, CK_KDT_BF16, st);
}
static int tw_dropout(const uint16_t *const *in, uint16_t *out, void *st, const void *arg) {
    const vec_arg *a = arg;
    const ck_koffset off = {5, NULL, 0};
    return ck_cuda_dropout(a->kind, in[0], out, a->s, 77, off, 3, ck_dropout_threshold(0.4f),
                           1.0f / 0.6f, NULL, (uint8_t *)a->mask, st);
}
static int tw_bn_inference(const uint16_t *const *in, uint16_t *out, void *st, const void *arg) {
    const vec_arg *a = arg;
    const int c = a->s.c;
    return ck_cuda_bn_forward_inference(a->s, a->act, 1e-3f, in[0], a->par, a->par + c,
                                        a->par + 2 * c, a->par + 3 * c, out, st);
}

Test(gpu_bf16, vector_paths_match_one_word_bits) {
    ck_context *g = bf16_ctx_or_skip();
    /* NHWC C % 8 == 0 (vector), NHWC C % 8 != 0 (scalar either way), NCHW HW % 8 == 0 with
     * W % 8 == 0 (vector, element dropout too) and HW % 8 == 0 with W 4 (element: scalar) */
    const ck_kshape shapes[] = {{3, 16, 3, 7, 1, CK_KDT_BF16},
                                {2, 5, 3, 4, 1, CK_KDT_BF16},
                                {2, 3, 2, 8, 0, CK_KDT_BF16},
                                {2, 3, 4, 4, 0, CK_KDT_BF16}};
    const int acts[] = {CK_ACT_RELU,       CK_ACT_SIGMOID, CK_ACT_TANH, CK_ACT_ELU,
                        CK_ACT_LEAKY_RELU, CK_ACT_GELU,    CK_ACT_SWISH};
    char what[96];
    for (size_t n = 1; n <= 70001; n = n * 7 + 3) { /* 1, 10, 73, 514, 3601, 25210: tails */
        vec_arg a = {{(int)n, 1, 1, 1, 0, CK_KDT_BF16}, 0, 0, n, NULL, NULL};
        for (size_t k = 0; k < sizeof acts / sizeof *acts; ++k) {
            a.act = acts[k];
            snprintf(what, sizeof what, "activation %d forward, %zu", acts[k], n);
            vec_check(g, what, tw_act_fwd, &a, 1, n);
            snprintf(what, sizeof what, "activation %d backward, %zu", acts[k], n);
            vec_check(g, what, tw_act_bwd, &a, 3, n);
        }
        snprintf(what, sizeof what, "add, %zu", n);
        vec_check(g, what, tw_add, &a, 2, n);
    }
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; ++k) {
        const ck_kshape s = shapes[k];
        const size_t n = (size_t)s.n * s.c * s.h * s.w;
        float *par = malloc(4 * (size_t)s.c * sizeof *par);
        trng r = {7};
        trng_fill(&r, par, 2 * (size_t)s.c, 0.5f, 1.5f);        /* gamma, beta */
        trng_fill(&r, par + 2 * s.c, (size_t)s.c, -0.2f, 0.2f); /* mean */
        trng_fill(&r, par + 3 * s.c, (size_t)s.c, 0.5f, 2.0f);  /* var */
        ck_tensor *tp = dbuf(g, 4 * (size_t)s.c, par), *tm = dbuf(g, n, NULL);
        vec_arg a = {s, CK_ACT_RELU, 0, n, NULL, ck_tensor_data(tp)};
        for (int kind = 0; kind < 2; ++kind)
            for (int stored = 0; stored < 2; ++stored) { /* the apply from a stored mask too */
                a.kind = kind;
                a.mask = stored ? ck_tensor_data(tm) : NULL;
                snprintf(what, sizeof what, "%s dropout%s, shape %zu", kind ? "element" : "spatial",
                         stored ? " (stored mask)" : "", k);
                vec_check(g, what, tw_dropout, &a, 1, n);
            }
        a.mask = NULL;
        const int bn_acts[] = {CK_ACT_NONE, CK_ACT_RELU};
        for (int ai = 0; ai < 2; ++ai) {
            const int act = bn_acts[ai];
            a.act = act;
            snprintf(what, sizeof what, "BN inference act %d, shape %zu", act, k);
            vec_check(g, what, tw_bn_inference, &a, 1, n);
        }
        ck_tensor_destroy(tp), ck_tensor_destroy(tm);
        free(par);
    }
    ck_context_destroy(g);
}

/* ---- the bf16 model on the GPU against its CPU twin (docs/precision.md) ----
 *
 * How close must they be? Both store the same roundings of the same fp32 values; they differ only
 * where cuDNN / cuBLAS sum in another order than the CPU (the fp32 GPU tests' differences, about
 * 1e-6 relative) and, through that, in the few stored values whose fp32 sums straddle a bf16
 * rounding boundary: those move by one bf16 ulp (2^-8 relative), as every value does between
 * the twin and fp32, but in a fraction of about 1e-6 / 2^-8 = 2.6e-4 of the elements instead of
 * all of them. So the GPU's distance from its twin is bounded by the fp32 tests' bars (1e-4
 * relative for the loss and probabilities, 1e-3 of the largest change for an SGD step) plus a
 * small part of the distance bf16 itself puts between the twin and fp32 (the same step run by an
 * fp32 CPU model from the same state): a quarter, with room for a step where a few flipped
 * values weigh more than their share. Masks are identical (the RNG does not depend on the
 * precision): were they not, the loss would differ by far more. */
static ck_model *text_model(ck_context *ctx, const char *text, ck_precision p, int max_batch) {
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_set_precision(m, p));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, max_batch));
    return m;
}

static void twin_batch(float *x, int32_t *y, int n, size_t per, int classes, uint64_t seed) {
    trng r = {seed};
    for (int i = 0; i < n; ++i) {
        y[i] = (int32_t)(trng_u32(&r) % (uint32_t)classes);
        for (size_t p = 0; p < per; ++p) /* class-dependent, so that the loss moves */
            x[(size_t)i * per + p] = 0.5f + 0.4f * sinf(0.2f * (float)(y[i] + 1) * (float)p) +
                                     0.1f * trng_uniform(&r, -1.0f, 1.0f);
    }
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0.0;
    for (size_t i = 0; i < n; ++i)
        d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* Lockstep: before each of 4 Adam steps the twin's state goes into the GPU model and an fp32 CPU
 * model; the losses, then the probabilities, then one SGD step's weight changes (every gradient)
 * are compared with the bounds above. */
static void twin_check(const char *text, size_t per, int classes, int B) {
    ck_context *g = bf16_ctx_or_skip();
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    char path[] = "/tmp/cnnkit_gpu_bf16_XXXXXX";
    const int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    float *x = malloc(sizeof(float) * per * B);
    int32_t *y = malloc(sizeof(int32_t) * B);
    ck_model *mg = text_model(g, text, CK_PRECISION_BF16, B);
    ck_model *mc = text_model(c, text, CK_PRECISION_BF16, B);
    ck_model *mf = text_model(c, text, CK_PRECISION_FP32, B);
    for (int step = 0; step < 4; ++step) {
        twin_batch(x, y, B, per, classes, 500 + step);
        t_sync_state(c, mc, g, mg, path);
        t_sync_state(c, mc, c, mf, path);
        ck_step_result rg, rc, rf;
        CK_OK(g, ck_model_train_step(mg, x, y, B, &rg));
        CK_OK(c, ck_model_train_step(mc, x, y, B, &rc));
        CK_OK(c, ck_model_train_step(mf, x, y, B, &rf));
        const double gap = fabs(rg.loss - rc.loss), bf = fabs(rf.loss - rc.loss);
        cr_log_info("step %d: GPU bf16 %.8f, CPU twin %.8f, CPU fp32 %.8f", step, rg.loss, rc.loss,
                    rf.loss);
        cr_expect_leq(gap, 1e-4 * fabs(rc.loss) + 0.25 * bf,
                      "step %d: GPU bf16 loss %.8f, twin %.8f (fp32 %.8f)", step, rg.loss, rc.loss,
                      rf.loss);
    }
    t_sync_state(c, mc, g, mg, path);
    t_sync_state(c, mc, c, mf, path);
    float *pg = malloc(sizeof(float) * classes * B), *pc = malloc(sizeof(float) * classes * B),
          *pf = malloc(sizeof(float) * classes * B);
    CK_OK(g, ck_model_predict(mg, x, B, pg));
    CK_OK(c, ck_model_predict(mc, x, B, pc));
    CK_OK(c, ck_model_predict(mf, x, B, pf));
    const size_t np = (size_t)classes * B;
    const double pgap = max_abs_diff(pg, pc, np), pbf = max_abs_diff(pf, pc, np);
    cr_log_info("probabilities: GPU vs twin %.3g, fp32 vs twin %.3g", pgap, pbf);
    cr_expect_gt(pbf, 0.0, "bf16 changes the probabilities (else this compares nothing)");
    cr_expect_leq(pgap, 1e-4 + 0.25 * pbf, "probabilities: GPU vs twin %g, fp32 vs twin %g", pgap,
                  pbf);

    /* one SGD step from the same state: the weight changes are lr * every gradient */
    ck_optimizer_desc sgd;
    CK_OK(c, ck_optimizer_desc_init(&sgd, CK_OPT_SGD));
    sgd.learning_rate = 0.1f;
    CK_OK(g, ck_model_set_optimizer(mg, &sgd));
    CK_OK(c, ck_model_set_optimizer(mc, &sgd));
    CK_OK(c, ck_model_set_optimizer(mf, &sgd));
    twin_batch(x, y, B, per, classes, 900);
    size_t n0 = 0, ng = 0, nc = 0, nf = 0;
    float *w0 = t_weights_of(c, mc, &n0);
    t_sync_state(c, mc, g, mg, path);
    t_sync_state(c, mc, c, mf, path);
    CK_OK(g, ck_model_train_step(mg, x, y, B, NULL));
    CK_OK(c, ck_model_train_step(mc, x, y, B, NULL));
    CK_OK(c, ck_model_train_step(mf, x, y, B, NULL));
    float *wg = t_weights_of(g, mg, &ng), *wc = t_weights_of(c, mc, &nc),
          *wf = t_weights_of(c, mf, &nf);
    cr_assert(ng == n0 && nc == n0 && nf == n0);
    double dmax = 0.0, err = 0.0, errf = 0.0;
    for (size_t i = 0; i < n0; ++i) {
        const double dc = (double)wc[i] - w0[i];
        dmax = fmax(dmax, fabs(dc));
        err = fmax(err, fabs((double)wg[i] - w0[i] - dc));
        errf = fmax(errf, fabs((double)wf[i] - w0[i] - dc));
    }
    cr_log_info("SGD step: largest change %.3g, GPU vs twin %.3g, fp32 vs twin %.3g", dmax, err,
                errf);
    cr_assert_gt(dmax, 0.0);
    cr_expect_leq(err, 1e-3 * dmax + 0.25 * errf,
                  "SGD step: weight changes GPU vs twin %g, fp32 vs twin %g (largest %g)", err,
                  errf, dmax);
    unlink(path);
    free(w0), free(wg), free(wc), free(wf), free(pg), free(pc), free(pf), free(x), free(y);
    ck_model_destroy(mg), ck_model_destroy(mc), ck_model_destroy(mf);
    ck_context_destroy(g), ck_context_destroy(c);
}

extern const char t_graph_func_text[]; /* test_gpu_graph.c */

/* ---- per-node replay: each GPU node against its twin on the same inputs ----
 *
 * The model-level comparison above is bounded by the model's sensitivity and so cannot see a
 * rounding put in the wrong place (one bf16 ulp on some elements). Here every node runs on the
 * GPU as in a training forward (node by node, the step's dropout masks), its output is
 * downloaded, and the CPU twin runs the same node on the GPU's inputs (ck_model_node_out_set):
 * the two outputs see identical inputs, so an elementwise node (pooling, dropout, Add, ...) must
 * match bit for bit, and a node that sums in another order (conv, dense, BN's statistics, the
 * activations' transcendental functions) may differ only where a sum straddles a rounding
 * boundary: by at most one bf16 ulp of the value plus the fp32 bound (1e-4 of the node's largest
 * value), and in few elements. How few: the fp32 sums differ by about 1e-6 relative, a bf16 ulp
 * is 2^-7, so about 1e-6 / 2^-8 = 3e-4 of the elements straddle; a twin rule the GPU does not
 * follow (a rounding missing or added) moves a large share of them (tests/test_bf16_exec.c:
 * round-then-bias differs from one rounding in most elements). The bar is 1%. */
/* CK_NODE_OTHER: Add, Concatenate, ZeroPadding2D, Rescaling, each bit-exact in the op table */
static int exact_kind(ck_node_type t) {
    return t == CK_NODE_POOL || t == CK_NODE_DROPOUT || t == CK_NODE_SDROPOUT || t == CK_NODE_GAP ||
           t == CK_NODE_OTHER;
}

static double bf16_ulp_of(double v) {
    int e = 0;
    (void)frexp(fabs(v) > 0x1p-126 ? fabs(v) : 0x1p-126, &e); /* v in [2^(e-1), 2^e) */
    return ldexp(1.0, e - 1 - 7);
}

/* How many of n bf16 values may straddle a rounding boundary: 1%, and at least 8 (a small
 * tensor of long sums: conv1's 288 kernel gradients each sum 21,632 products of mixed sign,
 * where cancellation makes 1e-5 relative differences, and so about one flip, likely). */
static size_t flips_allowed(size_t n) {
    return n / 100 > 8 ? n / 100 : 8;
}

/* |g - w| within the bound above: 1e-4 of the range's largest |w| plus, for bf16 values, one
 * bf16 ulp; returns the number of elements that differ at all, *bad the first beyond the bound
 * (or -1). */
static size_t compare_range(const float *g, const float *w, size_t n, int bf16, long long *bad) {
    double big = 1e-3;
    for (size_t j = 0; j < n; ++j)
        big = fmax(big, fabs((double)w[j]));
    size_t differ = 0;
    *bad = -1;
    for (size_t j = 0; j < n; ++j) {
        differ += g[j] != w[j];
        const double bound = 1e-4 * big + (bf16 ? bf16_ulp_of(fabs(w[j]) + 1e-4 * big) : 0.0);
        if (*bad < 0 && fabs((double)g[j] - w[j]) > bound)
            *bad = (long long)j;
    }
    return differ;
}

/* The backward half, for a Sequential model after the forward replay: from the logits down, each
 * node's backward runs alone on the GPU and in the twin on the same dy (a bf16-valued synthetic
 * loss gradient, then the GPU's dx), with the node's input and output the GPU's forward values:
 * dx as the forward's outputs (bit for bit for elementwise nodes, else the bound in at most 1% of
 * the elements), and the node's parameter gradients within the bound (the conv's kernel gradient
 * is bf16: also in at most 1% of its elements; the others are fp32 sums). */
static void replay_backward(ck_model *mg, ck_model *mc, const float *x, int B, float **out) {
    ck_context *g = mg->ctx, *c = mc->ctx;
    const int nn = mc->num_nodes, ln = nn - 1 - mc->softmax_last;
    size_t big = 0;
    for (int i = 0; i < nn; ++i) {
        const ck_node *n = &mc->nodes[i];
        const size_t a = (size_t)B * n->oh * n->ow * n->oc, b = (size_t)B * n->ih * n->iw * n->ic;
        big = a > big ? a : big;
        big = b > big ? b : big;
    }
    float *dy = malloc(big * sizeof *dy), *dxg = malloc(big * sizeof *dxg),
          *dxc = malloc(big * sizeof *dxc);
    float *gg = malloc(mc->num_params * sizeof *gg), *gc = malloc(mc->num_params * sizeof *gc);
    trng r = {77};
    const size_t nl = (size_t)B * mc->classes;
    for (size_t j = 0; j < nl; ++j) /* a loss gradient's size, bf16 values */
        dy[j] = ck_bf16_round(trng_uniform(&r, -1.0f, 1.0f) / (float)B);
    int checked = 0;
    for (int i = ln; i >= 0; --i) {
        const ck_node *n = &mc->nodes[i];
        if (n->kind->alias)
            continue;
        if (i > 0 && mc->nodes[i - 1].out)
            CK_OK(c, ck_model_node_out_set(mc, i - 1, B, out[i - 1]));
        CK_OK(c, ck_model_node_out_set(mc, i, B, out[i]));
        CK_OK(g, ck_model_backward_node(mg, x, i, B, dy, i > 0 ? dxg : NULL));
        CK_OK(c, ck_model_backward_node(mc, x, i, B, dy, i > 0 ? dxc : NULL));
        long long bad = -1;
        if (i > 0) {
            const size_t cnt = (size_t)B * n->ih * n->iw * n->ic;
            const size_t differ = compare_range(dxg, dxc, cnt, 1, &bad);
            cr_log_info("node %d (%s) backward: dx %zu of %zu elements differ", i, n->kind->name,
                        differ, cnt);
            if (exact_kind(n->type))
                cr_expect_eq(differ, 0, "node %d (%s): dx differs in %zu of %zu elements", i,
                             n->kind->name, differ, cnt);
            else
                cr_expect(bad < 0 && differ <= flips_allowed(cnt),
                          "node %d (%s): dx element %lld beyond the bound, %zu of %zu differ", i,
                          n->kind->name, bad, differ, cnt);
        }
        CK_OK(g, ck_model_grads_out(mg, gg));
        CK_OK(c, ck_model_grads_out(mc, gc));
        const size_t starts[4] = {n->p_kernel, n->p_bias, n->p_gamma, n->p_beta};
        const size_t counts[4] = {n->n_kernel, n->n_bias, n->type == CK_NODE_BN ? (size_t)n->oc : 0,
                                  n->type == CK_NODE_BN ? (size_t)n->oc : 0};
        for (int q = 0; q < 4; ++q) {
            if (!counts[q])
                continue;
            const int bf = q == 0 && n->type == CK_NODE_CONV; /* cuDNN writes it in bf16 */
            const size_t differ =
                compare_range(gg + starts[q], gc + starts[q], counts[q], bf, &bad);
            cr_expect(bad < 0 && (!bf || differ <= flips_allowed(counts[q])),
                      "node %d (%s): parameter gradient %d, element %lld beyond the bound (%zu of "
                      "%zu differ)",
                      i, n->kind->name, q, bad, differ, counts[q]);
        }
        float *t = dy; /* the GPU's dx feeds the node below on both sides */
        dy = dxg, dxg = t;
        ++checked;
    }
    cr_assert_geq(checked, 5);
    free(dy), free(dxg), free(dxc), free(gg), free(gc);
}

static void replay_check(const char *text, size_t per, int classes, int B) {
    ck_context *g = bf16_ctx_or_skip();
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    char path[] = "/tmp/cnnkit_gpu_bf16_replay_XXXXXX";
    const int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    ck_model *mg = text_model(g, text, CK_PRECISION_BF16, B);
    ck_model *mc = text_model(c, text, CK_PRECISION_BF16, B);
    float *x = malloc(sizeof(float) * per * B);
    int32_t *y = malloc(sizeof(int32_t) * B);
    twin_batch(x, y, B, per, classes, 41);
    CK_OK(g, ck_model_train_step(mg, x, y, B, NULL)); /* away from the initial weights */
    t_sync_state(g, mg, c, mc, path);
    twin_batch(x, y, B, per, classes, 42);
    const int nn = mg->num_nodes, ln = nn - 1 - mg->softmax_last;
    float **out = calloc((size_t)nn, sizeof(float *));
    int checked = 0;
    for (int i = 0; i < nn; ++i) {
        const ck_node *n = &mc->nodes[i];
        const size_t cnt = (size_t)B * n->oh * n->ow * n->oc;
        out[i] = malloc(cnt * sizeof(float));
        CK_OK(g, ck_model_forward_range(mg, x, B, 1, i, i + 1));
        CK_OK(g, ck_model_node_out(mg, i, B, out[i]));
        if (n->kind->alias)
            continue;
        /* the twin's node i on the GPU's inputs (Sequential: node i - 1's output) */
        const int nin = mc->graph ? n->nin : 1;
        for (int k = 0; k < nin; ++k) {
            const int src = mc->graph ? n->in[k] : i - 1;
            if (src >= 0 && mc->nodes[src].out) /* (a Flatten of the input has no buffer) */
                CK_OK(c, ck_model_node_out_set(mc, src, B, out[src]));
        }
        CK_OK(c, ck_model_forward_range(mc, x, B, 1, i, i + 1));
        float *want = malloc(cnt * sizeof(float));
        CK_OK(c, ck_model_node_out(mc, i, B, want));
        double big = 1e-3;
        for (size_t j = 0; j < cnt; ++j)
            big = fmax(big, fabs((double)want[j]));
        const int two_stage = (n->type == CK_NODE_CONV || n->type == CK_NODE_DENSE) && n->n_bias;
        size_t differ = 0, worst = 0;
        double excess = 0.0;
        for (size_t j = 0; j < cnt; ++j) {
            const double d = fabs((double)out[i][j] - want[j]);
            differ += out[i][j] != want[j];
            /* a conv or hidden dense with a bias rounds twice (product, then + bias): an ulp
             * for each stage */
            const double ulp = i < ln ? bf16_ulp_of(fabs(want[j]) + 1e-4 * big) : 0;
            const double bound = 1e-4 * big + (two_stage ? 2 : 1) * ulp;
            if (d - bound > excess) {
                excess = d - bound;
                worst = j;
            }
        }
        cr_log_info("node %d (%s): %zu of %zu elements differ", i, n->kind->name, differ, cnt);
        if (exact_kind(n->type))
            cr_expect_eq(differ, 0,
                         "node %d (%s): %zu of %zu elements differ from the twin (first "
                         "worst at %zu: GPU %.9g, twin %.9g)",
                         i, n->kind->name, differ, cnt, worst, out[i][worst], want[worst]);
        else {
            cr_expect_leq(excess, 0.0,
                          "node %d (%s): element %zu: GPU %.9g, twin %.9g beyond the "
                          "bound",
                          i, n->kind->name, worst, out[i][worst], want[worst]);
            /* fp32 outputs (the logits, what follows) differ in their last bits anywhere: the
             * bound alone */
            if (i < ln)
                cr_expect_leq(differ, flips_allowed(cnt),
                              "node %d (%s): %zu of %zu elements differ (1%% allowed)", i,
                              n->kind->name, differ, cnt);
        }
        free(want);
        ++checked;
    }
    cr_assert_geq(checked, 5);
    if (!mc->graph)
        replay_backward(mg, mc, x, B, out);
    for (int i = 0; i < nn; ++i)
        free(out[i]);
    unlink(path);
    free(out), free(x), free(y);
    ck_model_destroy(mg), ck_model_destroy(mc);
    ck_context_destroy(g), ck_context_destroy(c);
}

Test(gpu_bf16, seed_model_nodes_match_the_twin_on_the_same_inputs) {
    replay_check(t_seed_cnn_text, 28 * 28, 10, 32);
}

/* The fused BN+ReLU+SpatialDropout and BN+SpatialDropout nodes (plan F2), forward and backward:
 * the seed model has no SpatialDropout. */
static const char k_bn_sdrop_text[] = "model = Sequential()\n"
                                      "model.add(Conv2D(8, (3, 3), input_shape=(10, 10, 2)))\n"
                                      "model.add(BatchNormalization())\n"
                                      "model.add(Activation('relu'))\n"
                                      "model.add(SpatialDropout2D(0.3))\n"
                                      "model.add(Conv2D(8, (3, 3)))\n"
                                      "model.add(BatchNormalization())\n"
                                      "model.add(SpatialDropout2D(0.2))\n"
                                      "model.add(Flatten())\n"
                                      "model.add(Dense(4, activation='softmax'))\n"
                                      "model.compile(loss='sparse_categorical_crossentropy', "
                                      "optimizer='adam')\n";

Test(gpu_bf16, bn_spatial_dropout_nodes_match_the_twin_on_the_same_inputs) {
    replay_check(k_bn_sdrop_text, 10 * 10 * 2, 4, 16);
}

/* An Add of three: each partial sum stored in bf16 on both sides (layer_add.c). */
static const char k_add3_text[] = "import keras\nfrom keras import layers\n\n"
                                  "inputs = keras.Input(shape=(8, 8, 3))\n"
                                  "a = layers.Conv2D(8, 3, padding=\"same\")(inputs)\n"
                                  "b = layers.Conv2D(8, 1)(a)\n"
                                  "c = layers.Activation(\"tanh\")(a)\n"
                                  "s = layers.Add()([a, b, c])\n"
                                  "g = layers.GlobalAveragePooling2D()(s)\n"
                                  "outputs = layers.Dense(4, activation=\"softmax\")(g)\n"
                                  "model = keras.Model(inputs=inputs, outputs=outputs)\n";

Test(gpu_bf16, add_of_three_nodes_match_the_twin_on_the_same_inputs) {
    replay_check(k_add3_text, 8 * 8 * 3, 4, 16);
}

Test(gpu_bf16, functional_model_nodes_match_the_twin_on_the_same_inputs) {
    replay_check(t_graph_func_text, 12 * 12 * 3, 5, 16);
}

/* The seed model planned as it trains: conv (bias, bf16 tensor cores), fused BN+ReLU, max pooling
 * with a fused Dropout, Dense hidden and logits. */
Test(gpu_bf16, seed_model_matches_cpu_twin) {
    twin_check(t_seed_cnn_text, 28 * 28, 10, 64);
}

/* A functional model: 'same' convolutions, BN, SpatialDropout, an Add whose input has two readers
 * (the bf16 gradient sum), ReLU, pooling, Dropout, Flatten, Dense. */
Test(gpu_bf16, functional_model_matches_cpu_twin) {
    twin_check(t_graph_func_text, 12 * 12 * 3, 5, 24);
}

/* A bf16 step captured as a CUDA graph replays the eager step's bits: the packing of the batch
 * and of the loss gradient, and the dense layers' per-call weight packing, are kernels on the
 * step's stream like the rest. */
Test(gpu_bf16, graph_steps_equal_eager_steps) {
    enum { B = 32, STEPS = 6 };
    ck_context *g = bf16_ctx_or_skip();
    ck_model *a = text_model(g, t_seed_cnn_text, CK_PRECISION_BF16, B);
    ck_model *b = text_model(g, t_seed_cnn_text, CK_PRECISION_BF16, B);
    CK_OK(g, ck_model_set_cuda_graph(a, CK_CUDA_GRAPH_AUTO));
    CK_OK(g, ck_model_set_cuda_graph(b, CK_CUDA_GRAPH_OFF));
    float *x = malloc(sizeof(float) * 784 * B);
    int32_t y[B];
    for (int s = 0; s < STEPS; ++s) {
        twin_batch(x, y, B, 784, 10, 700 + s);
        ck_step_result ra, rb;
        CK_OK(g, ck_model_train_step(a, x, y, B, &ra));
        CK_OK(g, ck_model_train_step(b, x, y, B, &rb));
        cr_assert(memcmp(&ra.loss, &rb.loss, sizeof ra.loss) == 0, "step %d: %.9g vs %.9g", s,
                  ra.loss, rb.loss);
    }
    ck_cuda_graph_info gi;
    CK_OK(g, ck_model_cuda_graph_info(a, &gi));
    cr_assert_gt(gi.replays, 0, "no graph replayed: %s", gi.note);
    size_t na = 0, nb = 0;
    float *wa = t_weights_of(g, a, &na), *wb = t_weights_of(g, b, &nb);
    cr_assert_eq(na, nb);
    cr_assert(memcmp(wa, wb, na * sizeof *wa) == 0, "weights differ after %d steps", STEPS);
    free(wa), free(wb), free(x);
    ck_model_destroy(a), ck_model_destroy(b);
    ck_context_destroy(g);
}

/* ck_model_memory_usage reports the device plan: a bf16 model's activations take 2 bytes an
 * element (every stored node output before the logits), so at most half the fp32 model's plus
 * each slot's 256-byte alignment and the fp32 logits and softmax (128 x 10 each). */
Test(gpu_bf16, activation_bytes_halve) {
    ck_context *g = bf16_ctx_or_skip();
    ck_model *a = text_model(g, t_seed_cnn_text, CK_PRECISION_FP32, 128);
    ck_model *b = text_model(g, t_seed_cnn_text, CK_PRECISION_BF16, 128);
    ck_model_memory mf, mb;
    CK_OK(g, ck_model_memory_usage(a, &mf));
    CK_OK(g, ck_model_memory_usage(b, &mb));
    cr_log_info("activation bytes at batch 128: fp32 %zu, bf16 %zu", mf.activation_bytes,
                mb.activation_bytes);
    cr_expect_gt(mb.activation_bytes, 0);
    cr_expect_leq(mb.activation_bytes, mf.activation_bytes / 2 +
                                           256 * (size_t)ck_model_num_nodes(b) +
                                           2 * 128 * 10 * sizeof(float));
    /* the whole arena also holds cuDNN's workspaces, which the bf16 plans choose for
     * themselves: logged, not compared */
    cr_log_info("device arena at batch 128: fp32 %zu, bf16 %zu", mf.device_bytes, mb.device_bytes);
    ck_model_destroy(a), ck_model_destroy(b);
    ck_context_destroy(g);
}

/* What a bf16 GPU model cannot be is refused at build, naming why, nothing built. */
Test(gpu_bf16, refused_without_dense_logits) {
    ck_context *g = bf16_ctx_or_skip();
    static const char text[] = "model = Sequential()\n"
                               "model.add(Conv2D(10, (3, 3), input_shape=(8, 8, 1)))\n"
                               "model.add(GlobalAveragePooling2D())\n"
                               "model.add(Activation('softmax'))\n"
                               "model.compile(loss='sparse_categorical_crossentropy', "
                               "optimizer='adam')\n";
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(g, ck_model_from_keras_text(g, text, &m, msg, sizeof msg));
    CK_OK(g, ck_model_set_precision(m, CK_PRECISION_BF16));
    cr_assert_eq(ck_model_build(m, 0, 0, 0, 8), CK_STATUS_NOT_SUPPORTED);
    cr_assert(strstr(ck_context_last_error(g), "logits must come from a Dense layer"), "%s",
              ck_context_last_error(g));
    /* the same model in fp32 builds */
    ck_model_destroy(m);
    CK_OK(g, ck_model_from_keras_text(g, text, &m, msg, sizeof msg));
    CK_OK(g, ck_model_build(m, 0, 0, 0, 8));
    ck_model_destroy(m);
    ck_context_destroy(g);
}

/* ---- bf16 conv and dense against the CPU twin ---------------------------------------------
 * Tolerance, derived. Both sides read the same bf16 inputs and the same bf16-rounded kernel, so
 * every product is the same fp32 value; only the order of the fp32 sums differs (cuDNN / cuBLAS
 * reassociate). Before any rounding the two sums differ by at most the fp32 bound of
 * test_gpu_layers.c: TOL = 1e-4 of the output's scale M (max |reference|, at least 1e-3). Rounding
 * to nearest bf16 is monotone and moves a value by at most half a bf16 ulp, so two values within
 * d of each other round to values within d + ulp(v) (ulp(v) = 2^(e - 7) for |v| in [2^e,
 * 2^(e+1)): bf16 keeps 8 significant bits, half an ulp is 2^-8 of the binade); v is taken as
 * |reference| + d to cover the other side landing in the next binade. A stage that adds the
 * bias to a rounded value and rounds again (conv, hidden dense) adds one more such ulp. fp32
 * results (the logits, the dense's dk) keep the fp32 bound; the bias gradient is a double sum of
 * the same bf16 dy in a fixed order on both sides (1e-6, as fp32). */
#define BF16_TOL 1e-4

static float *D(ck_tensor *t) {
    return ck_tensor_data(t);
}

static double bf16_ulp(double v) {
    int e = 0;
    (void)frexp(fabs(v) > 0x1p-126 ? fabs(v) : 0x1p-126, &e); /* |v| = m * 2^e, m in [0.5, 1) */
    return ldexp(1.0, e - 1 - 7);
}

static double scale_of(const float *ref, size_t n) {
    double m = 1e-3;
    for (size_t i = 0; i < n; ++i)
        if (fabs(ref[i]) > m)
            m = fabs(ref[i]);
    return m;
}

/* The bound above lets a kernel round once where the rule rounds twice: round(s + b) is within
 * one ulp of round(round(s) + b), so it passes it although a quarter of its elements differ
 * from the twin. Over the elements where the twin and that single rounding alt differ, a kernel
 * that rounds twice lands nearer alt only where reassociation moved its sum across a rounding
 * boundary: at most 2 TOL M / ulp of the elements (about 0.1 at |v| = M / 2; measured far less),
 * one that rounds once nearly always. Returns the fraction nearer alt (NaN when fewer than 100
 * differ: too few to tell, said in the log), *differ how many differ. */
static double nearer_single_rounding(const float *got, const float *twin, const float *alt,
                                     size_t n, size_t *differ) {
    size_t d = 0, nearer = 0;
    for (size_t i = 0; i < n; ++i)
        if (twin[i] != alt[i]) {
            ++d;
            nearer += fabsf(got[i] - alt[i]) < fabsf(got[i] - twin[i]);
        }
    *differ = d;
    return d >= 100 ? (double)nearer / (double)d : NAN;
}

/* alt = round(mid + b): the conv's or hidden dense's output rounded once (mid unrounded). */
static float *single_rounding(const float *mid, size_t rows, int cols, const float *b) {
    float *alt = malloc(rows * (size_t)cols * sizeof *alt);
    memcpy(alt, mid, rows * (size_t)cols * sizeof *alt);
    ck_cpu_bias_add(rows, cols, b, alt);
    ck_bf16_round_buffer(alt, rows * (size_t)cols);
    return alt;
}

/* Elements beyond the bound: |got - ref| <= TOL * M + sum over the rounding stages of
 * ulp(|stage value| + bound so far); mid (may be NULL) is the reference before the bias. */
static size_t bf16_outside(const float *got, const float *ref, const float *mid, size_t n,
                           int rounded, double *worst) {
    const double m = scale_of(ref, n);
    size_t bad = 0;
    *worst = 0.0;
    for (size_t i = 0; i < n; ++i) {
        double b = BF16_TOL * m;
        if (mid)
            b += bf16_ulp(fabs(mid[i]) + b);
        if (rounded)
            b += bf16_ulp(fabs(ref[i]) + b);
        const double d = fabs((double)got[i] - ref[i]);
        if (d / b > *worst)
            *worst = d / b;
        bad += !(d <= b);
    }
    return bad;
}

static float *rndf(size_t n, uint64_t seed, float lo, float hi) {
    float *p = malloc(n * sizeof *p);
    trng r = {seed};
    trng_fill(&r, p, n, lo, hi);
    return p;
}

static float *rounded(const float *x, size_t n) {
    float *r = malloc(n * sizeof *r);
    memcpy(r, x, n * sizeof *r);
    ck_bf16_round_buffer(r, n);
    return r;
}

/* Device buffers: bf16 words (n elements) uploaded from / downloaded to fp32 host values. */
static ck_tensor *dwords(ck_context *g, size_t n, const float *host) {
    ck_tensor *t = dbuf(g, (n + 1) / 2, NULL);
    if (host) {
        uint16_t *w = calloc(n + 1, sizeof *w);
        ck_bf16_pack_buffer(host, w, n);
        CK_OK(g, ck_tensor_upload(g, t, (const float *)w, (n + 1) / 2));
        free(w);
    }
    return t;
}

static void down_words(ck_context *g, ck_tensor *t, float *host, size_t n) {
    uint16_t *w = calloc(n + 1, sizeof *w);
    CK_OK(g, ck_context_synchronize(g));
    CK_OK(g, ck_tensor_download(g, t, (float *)w, (n + 1) / 2));
    ck_bf16_unpack_buffer(w, host, n);
    free(w);
}

static void down_f(ck_context *g, ck_tensor *t, float *host, size_t n) {
    CK_OK(g, ck_context_synchronize(g));
    CK_OK(g, ck_tensor_download(g, t, host, n));
}

/* One bf16 convolution (geometry, NCHW forced or not) on the GPU against the twin:
 * y = round(round(conv(x, round(k))) + b), dx = round(conv_bwd(dy, round(k))),
 * dk = round(x^T dy), db = colsum(dy), x and dy bf16. */
static void conv_bf16_case(ck_context *g, int n, int h, int w, int cin, int cout, int kk, int st,
                           int same, int force_nchw, int wide, const char *what) {
    ck_conv_geom geo;
    cr_assert_eq(ck_conv_geom_make(&geo, n, h, w, cin, cout, kk, kk, st, st, same), 0);
    const size_t nx = (size_t)n * h * w * cin, nk = (size_t)kk * kk * cin * cout;
    const size_t ny = (size_t)n * geo.oh * geo.ow * cout, rows = (size_t)n * geo.oh * geo.ow;
    float *x0 = rndf(nx, 51, -1, 1), *k = rndf(nk, 52, -0.5f, 0.5f), *b = rndf(cout, 53, -1, 1);
    float *dy0 = rndf(ny, 54, -1, 1);
    float *x = rounded(x0, nx), *kr = rounded(k, nk), *dy = rounded(dy0, ny);
    float *mid = malloc(ny * 4), *y = malloc(ny * 4), *dx = malloc(nx * 4), *dk = malloc(nk * 4);
    float *db = malloc(cout * 4);
    const size_t wsf = ck_cpu_conv2d_workspace_floats(&geo);
    float *ws = malloc((wsf ? wsf : 1) * 4);
    ck_cpu_conv2d_forward(&geo, x, kr, NULL, mid, ws);
    float *alt = single_rounding(mid, rows, cout, b);
    ck_bf16_round_buffer(mid, ny);
    memcpy(y, mid, ny * 4);
    ck_cpu_bias_add(rows, cout, b, y);
    ck_bf16_round_buffer(y, ny);
    ck_cpu_conv2d_backward(&geo, x, kr, dy, dx, dk, db, ws);
    ck_bf16_round_buffer(dx, nx);
    ck_bf16_round_buffer(dk, nk);

    ck_gconv *cv = NULL;
    if (wide)
        CK_OK(g, ck_gconv_create_wide(g, &geo, force_nchw, &cv));
    else
        CK_OK(g, ck_gconv_create_dt(g, &geo, force_nchw, CK_KDT_BF16, &cv));
    char plan[512];
    ck_gconv_describe(cv, plan, sizeof plan);
    cr_log_info("bf16 conv %s: %s", what, plan);
    cr_assert(strstr(plan, "bf16") != NULL, "%s", plan);
    cr_assert(!force_nchw || strncmp(plan, "NCHW", 4) == 0, "%s", plan);
    /* NHWC with channels a multiple of 8 has bf16 tensor-core algorithms on sm_80 and later: a
     * wide plan there would be a silent fallback (right values, lost speed) */
    if (!wide && !force_nchw && cin % 8 == 0 && cout % 8 == 0)
        cr_expect_null(strstr(plan, "fp32 plan"), "%s: %s", what, plan);
    /* a fallback names cuDNN's refusal whole, without its candidate list */
    const char *why = strstr(plan, "no bf16 plan: ");
    if (why && strstr(why, "offers no"))
        cr_expect(strstr(why, " bytes") && !strstr(why, "candidates") &&
                      strcmp(plan + strlen(plan) - 6, " bytes") == 0,
                  "%s: %s", what, plan);
    ck_workspace *gw = NULL;
    CK_OK(g, ck_workspace_create(g, &gw, ck_gconv_workspace_bytes(cv)));
    ck_tensor *tx = dwords(g, nx, x), *tdy = dwords(g, ny, dy), *ty = dwords(g, ny, NULL);
    ck_tensor *tdx = dwords(g, nx, NULL), *tk = dbuf(g, nk, k), *tb = dbuf(g, cout, b);
    ck_tensor *tdk = dbuf(g, nk, NULL), *tdb = dbuf(g, cout, NULL);
    CK_OK(g, ck_gconv_forward(g, cv, n, D(tx), D(tk), D(tb), D(ty), gw->data));
    CK_OK(g, ck_gconv_backward(g, cv, n, D(tx), D(tk), D(tdy), D(tdx), D(tdk), D(tdb), gw->data));
    float *gy = malloc(ny * 4), *gdx = malloc(nx * 4), *gdk = malloc(nk * 4),
          *gdb = malloc(cout * 4);
    down_words(g, ty, gy, ny);
    down_words(g, tdx, gdx, nx);
    down_f(g, tdk, gdk, nk);
    down_f(g, tdb, gdb, cout);
    double wy, wdx, wdk, wdb;
    cr_expect_eq(bf16_outside(gy, y, mid, ny, 1, &wy), 0, "%s: y (worst %g of the bound)", what,
                 wy);
    size_t differ;
    const double nearer = nearer_single_rounding(gy, y, alt, ny, &differ);
    cr_log_info("bf16 conv %s: %zu of %zu outputs differ from one rounding, %.4f of them nearer it",
                what, differ, ny, nearer);
    cr_expect(!(nearer > 0.5), "%s: y rounds once where the rule rounds twice (%.3f of %zu)", what,
              nearer, differ);
    cr_expect_eq(bf16_outside(gdx, dx, NULL, nx, 1, &wdx), 0, "%s: dx (worst %g)", what, wdx);
    cr_expect_eq(bf16_outside(gdk, dk, NULL, nk, 1, &wdk), 0, "%s: dk (worst %g)", what, wdk);
    cr_expect_eq(bf16_outside(gdb, db, NULL, cout, 0, &wdb), 0, "%s: db (worst %g)", what, wdb);
    /* the filter gradient comes back as bf16 values (widened exactly) */
    float *gdkr = rounded(gdk, nk);
    cr_expect(memcmp(gdkr, gdk, nk * 4) == 0, "%s: dk is not bf16", what);
    cr_log_info("bf16 conv %s: worst/bound y %.3g dx %.3g dk %.3g db %.3g", what, wy, wdx, wdk,
                wdb);
    ck_tensor *all[] = {tx, tdy, ty, tdx, tk, tb, tdk, tdb};
    for (size_t i = 0; i < 8; ++i)
        ck_tensor_destroy(all[i]);
    ck_workspace_destroy(gw);
    ck_gconv_destroy(cv);
    free(x0), free(k), free(b), free(dy0), free(x), free(kr), free(dy), free(mid), free(y);
    free(dx), free(dk), free(db), free(ws), free(gy), free(gdx), free(gdk), free(gdb), free(gdkr);
    free(alt);
}

Test(gpu_bf16, conv_matches_cpu_twin) {
    ck_context *g = bf16_ctx_or_skip();
    conv_bf16_case(g, 4, 12, 12, 8, 16, 3, 1, 0, 0, 0, "NHWC 3x3 valid");
    conv_bf16_case(g, 3, 8, 8, 8, 8, 3, 2, 1, 0, 0, "explicit padding (3x3 s2 same, even size)");
    conv_bf16_case(g, 2, 9, 7, 3, 8, 3, 1, 1, 1, 0, "NCHW fallback (forced)");
    /* channels a multiple of 8 in NCHW: bf16 words through the layout conversions both ways */
    conv_bf16_case(g, 2, 6, 5, 8, 8, 3, 1, 1, 1, 0, "NCHW, C and K multiples of 8 (forced)");
    /* the seed model's conv1 shape: a bf16 plan, or the wide one when cuDNN has none (the log
     * line says which) */
    conv_bf16_case(g, 8, 28, 28, 1, 32, 3, 1, 0, 0, 0, "one input channel (conv1)");
    /* bf16 storage on an fp32 plan, the fallback when cuDNN has no bf16 plan for a shape: the
     * same roundings, so the same bounds */
    conv_bf16_case(g, 4, 12, 12, 1, 16, 3, 1, 0, 0, 1, "wide, one input channel (conv1)");
    conv_bf16_case(g, 3, 8, 8, 8, 8, 3, 2, 1, 0, 1, "wide, explicit padding");
    conv_bf16_case(g, 2, 9, 7, 3, 8, 3, 1, 1, 1, 1, "wide, NCHW (forced)");
    ck_context_destroy(g);
}

/* One bf16 dense on the GPU against the twin: x and dy bf16; hidden: y = round(round(x round(k))
 * + b) bf16, logits: y = x round(k) + b fp32; dx = round(dy round(k)^T); dk = x^T dy fp32. */
static void dense_bf16_case(ck_context *g, int n, int in, int out, int logits) {
    const char *what = logits ? "logits" : "hidden";
    const size_t nx = (size_t)n * in, nk = (size_t)in * out, ny = (size_t)n * out;
    float *x0 = rndf(nx, 61, -1, 1), *k = rndf(nk, 62, -0.3f, 0.3f), *b = rndf(out, 63, -1, 1);
    float *dy0 = rndf(ny, 64, -1, 1);
    float *x = rounded(x0, nx), *kr = rounded(k, nk), *dy = rounded(dy0, ny);
    float *mid = malloc(ny * 4), *y = malloc(ny * 4), *dx = malloc(nx * 4), *dk = malloc(nk * 4);
    float *db = malloc(out * 4), *alt = NULL;
    if (logits) {
        ck_cpu_dense_forward(n, in, out, x, kr, b, y);
    } else {
        ck_cpu_dense_forward(n, in, out, x, kr, NULL, mid);
        alt = single_rounding(mid, (size_t)n, out, b);
        ck_bf16_round_buffer(mid, ny);
        memcpy(y, mid, ny * 4);
        ck_cpu_bias_add(n, out, b, y);
        ck_bf16_round_buffer(y, ny);
    }
    ck_cpu_dense_backward(n, in, out, x, kr, dy, dx, dk, db);
    ck_bf16_round_buffer(dx, nx);

    const int ydt = logits ? CK_KDT_F32 : CK_KDT_BF16;
    ck_workspace *gw = NULL;
    CK_OK(g, ck_workspace_create(g, &gw, ck_gdense_workspace_bytes_dt(in, out, CK_KDT_BF16)));
    ck_tensor *tx = dwords(g, nx, x), *tdy = dwords(g, ny, dy), *tdx = dwords(g, nx, NULL);
    ck_tensor *ty = logits ? dbuf(g, ny, NULL) : dwords(g, ny, NULL);
    ck_tensor *tk = dbuf(g, nk, k), *tb = dbuf(g, out, b), *tdk = dbuf(g, nk, NULL),
              *tdb = dbuf(g, out, NULL);
    CK_OK(g, ck_gdense_forward_dt(g, n, in, out, D(tx), CK_KDT_BF16, D(tk), D(tb), D(ty), ydt,
                                  gw->data));
    CK_OK(g, ck_gdense_backward_dt(g, n, in, out, D(tx), D(tk), D(tdy), D(tdx), D(tdk), D(tdb),
                                   CK_KDT_BF16, gw->data));
    float *gy = malloc(ny * 4), *gdx = malloc(nx * 4), *gdk = malloc(nk * 4),
          *gdb = malloc(out * 4);
    if (logits)
        down_f(g, ty, gy, ny);
    else
        down_words(g, ty, gy, ny);
    down_words(g, tdx, gdx, nx);
    down_f(g, tdk, gdk, nk);
    down_f(g, tdb, gdb, out);
    double wy, wdx, wdk, wdb;
    cr_expect_eq(bf16_outside(gy, y, logits ? NULL : mid, ny, !logits, &wy), 0,
                 "dense %s: y (worst %g of the bound)", what, wy);
    if (alt) {
        size_t differ;
        const double nearer = nearer_single_rounding(gy, y, alt, ny, &differ);
        cr_log_info("bf16 dense %s: %zu of %zu outputs differ from one rounding, %.4f of them "
                    "nearer it",
                    what, differ, ny, nearer);
        cr_expect(!(nearer > 0.5), "dense %s: y rounds once where the rule rounds twice (%.3f)",
                  what, nearer);
        free(alt);
    }
    cr_expect_eq(bf16_outside(gdx, dx, NULL, nx, 1, &wdx), 0, "dense %s: dx (worst %g)", what, wdx);
    cr_expect_eq(bf16_outside(gdk, dk, NULL, nk, 0, &wdk), 0, "dense %s: dk (worst %g)", what, wdk);
    cr_expect_eq(bf16_outside(gdb, db, NULL, out, 0, &wdb), 0, "dense %s: db (worst %g)", what,
                 wdb);
    cr_log_info("bf16 dense %s: worst/bound y %.3g dx %.3g dk %.3g db %.3g", what, wy, wdx, wdk,
                wdb);
    ck_tensor *all[] = {tx, tdy, tdx, ty, tk, tb, tdk, tdb};
    for (size_t i = 0; i < 8; ++i)
        ck_tensor_destroy(all[i]);
    ck_workspace_destroy(gw);
    free(x0), free(k), free(b), free(dy0), free(x), free(kr), free(dy), free(mid), free(y);
    free(dx), free(dk), free(db), free(gy), free(gdx), free(gdk), free(gdb);
}

Test(gpu_bf16, dense_matches_cpu_twin) {
    ck_context *g = bf16_ctx_or_skip();
    dense_bf16_case(g, 16, 72, 24, 0);
    dense_bf16_case(g, 16, 24, 10, 1);
    dense_bf16_case(g, 5, 33, 7, 0); /* odd sizes: no leading dimension a multiple of 8 */
    /* the seed model's Dense(512) at batch 32: few output tiles over a long sum, where cuBLAS
     * may split K; its partial sums must add in fp32 (DISALLOW_REDUCED_PRECISION_REDUCTION) */
    dense_bf16_case(g, 32, 1600, 512, 0);
    dense_bf16_case(g, 32, 512, 10, 1);
    ck_context_destroy(g);
}

#else
Test(gpu_bf16, skipped_without_cuda_build) {
    t_gpu_unavailable("built without the CUDA backend");
}
#endif
