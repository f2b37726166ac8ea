/* CUDA graphs of the training step (issue 14; src/host/exec/cuda_graph.c). The eager step is the
 * oracle: a model with graphs (CK_CUDA_GRAPH_AUTO) and one without (CK_CUDA_GRAPH_OFF) on the
 * same context, the same data, must give the same bits: every step's loss and correct count,
 * and the checkpoint (weights, Adam moments, BN statistics, step) byte for byte. Each test also
 * checks from ck_model_cuda_graph_info that graphs really ran (a comparison of two eager runs
 * would pass vacuously), and logs the note when they did not. GPU suite gpu_graph (skipped
 * without a device); the host-side parts are in test_cuda_graph.c. */
#include "common.h"

/* a hung device call (a kernel that spins, a collective that waits) fails its test after five
 * minutes instead of holding the whole GPU run */
TestSuite(gpu_graph, .timeout = 300);

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnnkit/data.h"
#include "cnnkit/model.h"
#include "model_internal.h"
#ifdef CNNKIT_HAVE_CUDA
#include "cudnn_internal.h"
#endif

static ck_model *text_on(ck_context *ctx, const char *text, int max_batch,
                         ck_cuda_graph_mode mode) {
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, max_batch));
    CK_OK(ctx, ck_model_set_cuda_graph(m, mode));
    return m;
}

/* Smooth class-dependent images of h x w x c (the loss moves), labels < classes. */
static void make_batch(float *x, int32_t *y, int n, size_t per, int classes, uint64_t seed) {
    trng r = {seed};
    for (int i = 0; i < n; ++i) {
        y[i] = (int32_t)(trng_u32(&r) % (uint32_t)classes);
        for (size_t p = 0; p < per; ++p) {
            const float base = 0.5f + 0.4f * sinf(0.2f * (float)(y[i] + 1) * (float)(p % 41));
            x[(size_t)i * per + p] = base + 0.1f * trng_uniform(&r, -1, 1);
        }
    }
}

static ck_cuda_graph_info info_of(ck_context *ctx, ck_model *m) {
    ck_cuda_graph_info gi;
    CK_OK(ctx, ck_model_cuda_graph_info(m, &gi));
    return gi;
}

/* The two models' checkpoints are the same bytes. */
static void same_checkpoints(ck_context *ctx, ck_model *a, ck_model *b, const char *what) {
    char pa[64], pb[64];
    snprintf(pa, sizeof pa, "/tmp/ck_graph_a_%d.ckpt", (int)getpid());
    snprintf(pb, sizeof pb, "/tmp/ck_graph_b_%d.ckpt", (int)getpid());
    CK_OK(ctx, ck_model_save(a, pa));
    CK_OK(ctx, ck_model_save(b, pb));
    size_t la = 0, lb = 0;
    char *ca = t_read_file(pa, &la), *cb = t_read_file(pb, &lb);
    unlink(pa);
    unlink(pb);
    cr_assert(la == lb && memcmp(ca, cb, la) == 0, "%s: the checkpoints differ", what);
    free(ca);
    free(cb);
}

/* The two models' weights (Keras order: each layer's arrays, BN moving statistics included) are
 * the same bits; else the first difference names its user layer, so that a failure on the GPU
 * says where graph and eager part (a dense layer: look at cuBLAS's workspace first). */
static void same_weights(ck_context *ctx, ck_model *a, ck_model *b, int step) {
    size_t n = 0, nb = 0;
    CK_OK(ctx, ck_model_get_weights(a, NULL, 0, &n));
    CK_OK(ctx, ck_model_get_weights(b, NULL, 0, &nb));
    cr_assert_eq(n, nb);
    float *wa = malloc(n * sizeof *wa), *wb = malloc(n * sizeof *wb);
    CK_OK(ctx, ck_model_get_weights(a, wa, n, NULL));
    CK_OK(ctx, ck_model_get_weights(b, wb, n, NULL));
    size_t i = 0;
    while (i < n && memcmp(&wa[i], &wb[i], sizeof *wa) == 0)
        ++i;
    if (i < n) {
        int layer = 0;
        long long end = 0;
        for (; layer < ck_model_num_layers(a); ++layer) {
            long long tr = 0, fx = 0;
            ck_model_layer_params(a, layer, &tr, &fx);
            end += tr + fx;
            if ((long long)i < end)
                break;
        }
        ck_layer_desc d;
        ck_model_layer_desc(a, layer, &d);
        cr_assert_fail("after step %d: weight %zu of %zu (layer %d, type %d '%s') differs: graph "
                       "%.9g, eager %.9g",
                       step, i, n, layer, (int)d.type, d.name, (double)wa[i], (double)wb[i]);
    }
    free(wa), free(wb);
}

/* One step of both models on the same batch: the same loss and correct count, bit for bit. */
static void step_both(ck_context *ctx, ck_model *a, ck_model *b, const float *x, const int32_t *y,
                      int n, int step) {
    ck_step_result ra, rb;
    CK_OK(ctx, ck_model_train_step(a, x, y, n, &ra));
    /* a fallback to eager is no error: a successful step leaves no message */
    cr_assert_str_eq(ck_context_last_error(ctx), "", "step %d after a graph step", step);
    CK_OK(ctx, ck_model_train_step(b, x, y, n, &rb));
    cr_assert(memcmp(&ra.loss, &rb.loss, sizeof ra.loss) == 0 && ra.correct == rb.correct,
              "step %d (batch %d): graph loss %.17g (%d correct), eager %.17g (%d)", step, n,
              ra.loss, ra.correct, rb.loss, rb.correct);
}

/* Issue 14's bar: 20 steps of the seed model (dropout, SpatialDropout-free BN+ReLU, Adam) with a
 * short batch every fifth step: each batch size runs eagerly once, is captured at its second
 * step and replayed after, and every step equals the eager model's. */
Test(gpu_graph, graph_matches_eager_with_short_batch) {
    ck_context *g = t_cuda_ctx_or_skip();
    const int B = T_EMU ? 16 : 64, S = T_EMU ? 9 : 37;
    ck_model *a = text_on(g, t_seed_cnn_text, B, CK_CUDA_GRAPH_AUTO);
    ck_model *b = text_on(g, t_seed_cnn_text, B, CK_CUDA_GRAPH_OFF);
    float *x = malloc(sizeof(float) * 784 * B);
    int32_t y[64];
    for (int s = 0; s < 20; ++s) {
        const int n = s % 5 == 4 ? S : B;
        make_batch(x, y, n, 784, 10, 100 + (uint64_t)s);
        step_both(g, a, b, x, y, n, s);
        const ck_cuda_graph_info gi = info_of(g, a);
        cr_log_info("step %d batch %d: graph %d, note '%s'", s, n, gi.last_step_graph, gi.note);
        same_weights(g, a, b, s);
        /* the first step of each size is the warm-up, every later one a replay */
        const int want = !(s == 0 || s == 4);
        cr_assert_eq(gi.last_step_graph, want, "step %d (batch %d): %s", s, n, gi.note);
    }
    const ck_cuda_graph_info ga = info_of(g, a), gb = info_of(g, b);
    cr_expect_eq(ga.captures, 2, "%s", ga.note);
    cr_expect_eq(ga.replays, 18, "%s", ga.note);
    cr_expect_eq(ga.graphs, 2);
    cr_expect_eq(gb.replays, 0);
    cr_expect_eq(gb.graphs, 0);
    cr_expect_neq(strstr(gb.note, "off"), NULL, "%s", gb.note);
    same_checkpoints(g, a, b, "20 steps");
    /* inference reads the trained state: the same probabilities */
    float *pa = malloc(sizeof(float) * 10 * B), *pb = malloc(sizeof(float) * 10 * B);
    CK_OK(g, ck_model_predict(a, x, B, pa));
    CK_OK(g, ck_model_predict(b, x, B, pb));
    cr_assert_eq(memcmp(pa, pb, sizeof(float) * 10 * B), 0, "inference probabilities");
    free(pa), free(pb), free(x);
    ck_model_destroy(a), ck_model_destroy(b);
    ck_context_destroy(g);
}

/* ck_model_fit with the training set on the device (each batch gathered there before the
 * launch) under graphs equals the eager fit, and the host-staged fit with graphs too: 3 epochs
 * of 300 samples at batch 64 (a last batch of 44, captured in epoch 2, replayed in epoch 3;
 * kemu: 60 at 16, a last batch of 12). The validation set ends in a batch of 3: each epoch's
 * validation leaves the conv plans at batch 3, so the capture of the last batch must set them
 * back before it begins (their cuDNN queries must not run under capture; kemu refuses them). */
Test(gpu_graph, fit_device_data_graph_matches_eager) {
    ck_context *g = t_cuda_ctx_or_skip();
    const int B = T_EMU ? 16 : 64, N = 5 * B - 20, full = N / B;
    ck_model *a = text_on(g, t_seed_cnn_text, B, CK_CUDA_GRAPH_AUTO);
    ck_model *b = text_on(g, t_seed_cnn_text, B, CK_CUDA_GRAPH_OFF);
    ck_model *c = text_on(g, t_seed_cnn_text, B, CK_CUDA_GRAPH_AUTO);
    c->fit_host_data = 1;
    ck_dataset d = {.count = N, .h = 28, .w = 28, .c = 1, .classes = 10};
    d.images = malloc(sizeof(float) * N * 784);
    d.labels = malloc(sizeof(int32_t) * N);
    make_batch(d.images, d.labels, N, 784, 10, 4242);
    ck_fit_options o;
    memset(&o, 0, sizeof o);
    o.epochs = 3;
    o.batch = B;
    ck_epoch_result h[3][3];
    ck_model *ms[3] = {a, b, c};
    ck_dataset v = d;
    v.count = B + 3;
    for (int k = 0; k < 3; ++k)
        CK_OK(g, ck_model_fit(ms[k], &d, &v, &o, h[k]));
    for (int k = 0; k < 3; k += 2)
        for (int e = 0; e < 3; ++e) {
            const double va[3] = {h[k][e].loss, h[k][e].accuracy, h[k][e].val_loss};
            const double vb[3] = {h[1][e].loss, h[1][e].accuracy, h[1][e].val_loss};
            cr_assert(memcmp(va, vb, sizeof va) == 0,
                      "model %d, epoch %d: loss %.17g vs eager %.17g", k, e + 1, va[0], vb[0]);
        }
    for (int k = 0; k < 3; k += 2) {
        const ck_cuda_graph_info gi = info_of(g, ms[k]);
        cr_log_info("fit model %d: %lld captures, %lld replays, note '%s'", k, gi.captures,
                    gi.replays, gi.note);
        cr_expect_eq(gi.captures, 2, "model %d: %s", k, gi.note);
        /* 15 steps: 64 x 12 (1 warm-up, 11 replays), 44 x 3 (1 warm-up, 2 replays) */
        cr_expect_eq(gi.replays, (3 * full - 1) + 2, "model %d: %s", k, gi.note);
        cr_expect_eq(gi.last_step_graph, 1, "model %d: %s", k, gi.note);
    }
    same_checkpoints(g, a, b, "fit, device data");
    same_checkpoints(g, c, b, "fit, host staging");
    free(d.images), free(d.labels);
    ck_model_destroy(a), ck_model_destroy(b), ck_model_destroy(c);
    ck_context_destroy(g);
}

/* A capture that fails (a stream wait inside it: a real CUDA capture error), an instantiation
 * and a launch that fail (simulated by the model's test knob): the step runs eagerly and
 * succeeds, the model's graphs are given up with a note naming what failed, its later steps run
 * eagerly, all with the eager model's bits; setting the mode again captures anew. */
Test(gpu_graph, failures_fall_back_to_eager) {
    ck_context *g = t_cuda_ctx_or_skip();
    const int B = T_EMU ? 8 : 32;
    const char *const calls[3] = {"capture", "cudaGraphInstantiate", "cudaGraphLaunch"};
    char what[3][48];
    for (int k = 0; k < 3; ++k)
        snprintf(what[k], sizeof what[k], "%s of batch %d", calls[k], B);
    float *x = malloc(sizeof(float) * 784 * 32);
    int32_t y[32];
    for (int fault = 1; fault <= 3; ++fault) {
        ck_model *a = text_on(g, t_seed_cnn_text, B, CK_CUDA_GRAPH_AUTO);
        ck_model *b = text_on(g, t_seed_cnn_text, B, CK_CUDA_GRAPH_OFF);
        a->cuda_graph_fault = fault;
        for (int s = 0; s < 5; ++s) {
            make_batch(x, y, B, 784, 10, 700 + (uint64_t)s);
            step_both(g, a, b, x, y, B, s);
            const ck_cuda_graph_info gi = info_of(g, a);
            cr_assert_eq(gi.last_step_graph, 0, "fault %d, step %d", fault, s);
            if (s >= 1) {
                cr_assert_neq(strstr(gi.note, "CUDA graphs off for this model"), NULL,
                              "fault %d: %s", fault, gi.note);
                cr_assert_neq(strstr(gi.note, what[fault - 1]), NULL, "fault %d: %s", fault,
                              gi.note);
                cr_assert_eq(gi.graphs, 0);
            }
        }
        cr_log_info("fault %d: %s", fault, info_of(g, a).note);
        cr_assert_eq(a->cuda_graph_fault, 0, "the knob was used");
        /* again: warm-up, capture, replay */
        CK_OK(g, ck_model_set_cuda_graph(a, CK_CUDA_GRAPH_AUTO));
        for (int s = 5; s < 8; ++s) {
            make_batch(x, y, B, 784, 10, 700 + (uint64_t)s);
            step_both(g, a, b, x, y, B, s);
        }
        const ck_cuda_graph_info gi = info_of(g, a);
        cr_assert_eq(gi.last_step_graph, 1, "fault %d, after setting AUTO again: %s", fault,
                     gi.note);
        cr_expect_eq(gi.replays, 2);
        same_checkpoints(g, a, b, what[fault - 1]);
        ck_model_destroy(a), ck_model_destroy(b);
    }
    free(x);
    ck_context_destroy(g);
}

/* What the captured launches hold by value is the graphs' key: a new context seed (dropout
 * masks), a new optimizer (SGD with Nesterov momentum and weight decay: its rates by value) and a
 * new math mode (cuBLAS TF32) each drop the graphs and capture again; every step equals eager. */
Test(gpu_graph, settings_changes_capture_again) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_model *a = text_on(g, t_seed_cnn_text, 32, CK_CUDA_GRAPH_AUTO);
    ck_model *b = text_on(g, t_seed_cnn_text, 32, CK_CUDA_GRAPH_OFF);
    float *x = malloc(sizeof(float) * 784 * 32);
    int32_t y[32];
    ck_optimizer_desc sgd;
    CK_OK(g, ck_optimizer_desc_init(&sgd, CK_OPT_SGD));
    sgd.momentum = 0.9f;
    sgd.nesterov = 1;
    sgd.weight_decay = 1e-4f;
    int s = 0;
    for (int phase = 0; phase < 4; ++phase) {
        if (phase == 1)
            CK_OK(g, ck_context_set_seed(g, 99));
        if (phase == 2) {
            CK_OK(g, ck_model_set_optimizer(a, &sgd));
            CK_OK(g, ck_model_set_optimizer(b, &sgd));
        }
        if (phase == 3)
            CK_OK(g, ck_context_set_math(g, CK_MATH_TF32));
        for (int k = 0; k < 3; ++k, ++s) {
            make_batch(x, y, 32, 784, 10, 900 + (uint64_t)s);
            step_both(g, a, b, x, y, 32, s);
            const ck_cuda_graph_info gi = info_of(g, a);
            cr_assert_eq(gi.last_step_graph, k > 0, "phase %d, step %d: %s", phase, k, gi.note);
        }
    }
    const ck_cuda_graph_info gi = info_of(g, a);
    cr_expect_eq(gi.captures, 4, "%s", gi.note);
    cr_expect_eq(gi.replays, 8, "%s", gi.note);
    same_checkpoints(g, a, b, "after the changes");
    free(x);
    ck_model_destroy(a), ck_model_destroy(b);
    ck_context_destroy(g);
}

/* Profiling times each node with the stream drained around it: no graph, and the note says so;
 * after it the model captures as usual. */
Test(gpu_graph, profiling_runs_eagerly) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_model *a = text_on(g, t_seed_cnn_text, 16, CK_CUDA_GRAPH_AUTO);
    ck_model *b = text_on(g, t_seed_cnn_text, 16, CK_CUDA_GRAPH_OFF);
    float *x = malloc(sizeof(float) * 784 * 16);
    int32_t y[16];
    CK_OK(g, ck_model_set_profiling(a, 1));
    for (int s = 0; s < 5; ++s) {
        if (s == 3)
            CK_OK(g, ck_model_set_profiling(a, 0));
        make_batch(x, y, 16, 784, 10, 50 + (uint64_t)s);
        step_both(g, a, b, x, y, 16, s);
        const ck_cuda_graph_info gi = info_of(g, a);
        if (s < 3)
            cr_assert_neq(strstr(gi.note, "profiling"), NULL, "%s", gi.note);
        cr_assert_eq(gi.last_step_graph, s == 4, "step %d: %s", s, gi.note);
    }
    same_checkpoints(g, a, b, "profiling");
    free(x);
    ck_model_destroy(a), ck_model_destroy(b);
    ck_context_destroy(g);
}

/* A functional model (the graph executor: per-node gradient buffers, an Add whose input has two
 * readers, SpatialDropout before it, Dropout after a pooling) and five batch sizes cycling
 * through four graph slots (the least recently used is dropped): the same bits as eager. */
/* the text is built on the CPU too (test_cuda_graph.c): it parses and trains everywhere */
const char t_graph_func_text[] =
    "import keras\nfrom keras import layers\n\n"
    "inputs = keras.Input(shape=(12, 12, 3))\n"
    "x = layers.Conv2D(8, 3, padding=\"same\", activation=\"relu\")(inputs)\n"
    "y = layers.Conv2D(8, 3, padding=\"same\")(x)\n"
    "y = layers.BatchNormalization()(y)\n"
    "y = layers.SpatialDropout2D(0.2)(y)\n"
    "y = layers.Add()([y, x])\n"
    "y = layers.Activation(\"relu\")(y)\n"
    "y = layers.MaxPooling2D(2)(y)\n"
    "y = layers.Dropout(0.3)(y)\n"
    "y = layers.Flatten()(y)\n"
    "outputs = layers.Dense(5, activation=\"softmax\")(y)\n"
    "model = keras.Model(inputs=inputs, outputs=outputs)\n";

Test(gpu_graph, functional_model_and_slot_eviction) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_model *a = text_on(g, t_graph_func_text, 24, CK_CUDA_GRAPH_AUTO);
    ck_model *b = text_on(g, t_graph_func_text, 24, CK_CUDA_GRAPH_OFF);
    const size_t per = 12 * 12 * 3;
    float *x = malloc(sizeof(float) * per * 24);
    int32_t y[24];
    int s = 0;
    for (int k = 0; k < 6; ++k, ++s) { /* one size: warm-up, capture, replays */
        make_batch(x, y, 24, per, 5, 10 + (uint64_t)s);
        step_both(g, a, b, x, y, 24, s);
    }
    ck_cuda_graph_info gi = info_of(g, a);
    cr_assert_eq(gi.last_step_graph, 1, "functional model: %s", gi.note);
    cr_assert_eq(gi.replays, 5, "%s", gi.note);
    const int sizes[5] = {4, 8, 12, 16, 20};
    for (int r = 0; r < 3; ++r)
        for (int k = 0; k < 5; ++k, ++s) {
            make_batch(x, y, sizes[k], per, 5, 10 + (uint64_t)s);
            step_both(g, a, b, x, y, sizes[k], s);
        }
    /* each size comes back after 4 others: dropped from the 4 slots before its second step,
     * so never captured, and batch 24's graph went too */
    gi = info_of(g, a);
    cr_assert_eq(gi.captures, 1, "%s", gi.note);
    cr_assert_eq(gi.graphs, 0, "%s", gi.note);
    /* the last 4 sizes stay in the slots: each captured at its next step, then replayed */
    for (int r = 0; r < 3; ++r)
        for (int k = 1; k < 5; ++k, ++s) {
            make_batch(x, y, sizes[k], per, 5, 10 + (uint64_t)s);
            step_both(g, a, b, x, y, sizes[k], s);
            gi = info_of(g, a);
            cr_assert_eq(gi.last_step_graph, 1, "batch %d, round %d: %s", sizes[k], r, gi.note);
        }
    cr_expect_eq(gi.captures, 5, "%s", gi.note);
    cr_expect_eq(gi.graphs, 4);
    same_checkpoints(g, a, b, "functional model");
    free(x);
    ck_model_destroy(a), ck_model_destroy(b);
    ck_context_destroy(g);
}

/* At the large batch (512, kemu 128; cuBLAS and cuDNN may pick other algorithms there than
 * at 64, some of them workspace-dependent) graph and eager agree too; and after the captures the
 * context's cuDNN and cuBLAS handles are bound to its stream again (a handle left on the
 * capture stream would race the next eager call, which a bit comparison sees only sometimes). */
Test(gpu_graph, large_batch_matches_eager_and_handles_come_back) {
    ck_context *g = t_cuda_ctx_or_skip();
    const int B = T_EMU ? 128 : 512;
    ck_model *a = text_on(g, t_seed_cnn_text, B, CK_CUDA_GRAPH_AUTO);
    ck_model *b = text_on(g, t_seed_cnn_text, B, CK_CUDA_GRAPH_OFF);
    float *x = malloc(sizeof(float) * 784 * B);
    int32_t *y = malloc(sizeof(int32_t) * B);
    for (int s = 0; s < 4; ++s) {
        make_batch(x, y, B, 784, 10, 900 + (uint64_t)s);
        step_both(g, a, b, x, y, B, s);
        same_weights(g, a, b, s);
    }
    const ck_cuda_graph_info gi = info_of(g, a);
    /* step 0 warms up eagerly, step 1 is captured and launched, steps 2 and 3 replay */
    cr_assert_eq(gi.captures, 1, "%s", gi.note);
    cr_assert_eq(gi.replays, 3, "%s", gi.note);
    cr_assert_eq(gi.last_step_graph, 1, "%s", gi.note);
    /* the step's host part (checks, upload, launches: one launch for a replay) ends where its
     * wait begins: inside the step, logged for both modes */
    for (int k = 0; k < 2; ++k) {
        double host = 0.0, step = 0.0;
        CK_OK(g, ck_model_last_step_time(k ? b : a, &host, &step));
        cr_assert(host > 0.0 && host <= step, "host %g s of a %g s step", host, step);
        cr_log_info("batch %d, %s: host %.3f ms of a %.3f ms step", B, k ? "eager" : "graph",
                    host * 1e3, step * 1e3);
    }
#ifdef CNNKIT_HAVE_CUDA
    cudaStream_t sd = NULL, sb = NULL;
    cr_assert_eq(cudnnGetStream((cudnnHandle_t)g->cudnn, &sd), CUDNN_STATUS_SUCCESS);
    cr_assert_eq(cublasGetStream((cublasHandle_t)g->cublas, &sb), CUBLAS_STATUS_SUCCESS);
    cr_assert(sd == (cudaStream_t)g->stream && sb == (cudaStream_t)g->stream,
              "the handles are not on the context's stream after a capture");
#endif
    same_checkpoints(g, a, b, "4 steps at the large batch");
    free(x), free(y);
    ck_model_destroy(a), ck_model_destroy(b);
    ck_context_destroy(g);
}
