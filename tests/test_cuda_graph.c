/* The host side of the CUDA graphs of the training step (src/host/exec/cuda_graph.c): the
 * switch's argument checks, the switch on a CPU context (accepted, no effect), and the step
 * packet's host twin: what a CUDA step writes to the device before its kernels run (the dropout
 * masks' step, Adam's alpha) must be, bit for bit, what the step computed on the host before
 * the packet existed. The device side is test_gpu_graph.c (suite gpu_graph). */
#include "common.h"

#include <math.h>
#include <string.h>

#include "ck_math.h"
#include "cnnkit/model.h"
#include "exec.h"

extern const char t_graph_func_text[]; /* test_gpu_graph.c */

static ck_model *text_on(ck_context *ctx, const char *text, int max_batch) {
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, max_batch));
    return m;
}

Test(cuda_graph, arguments_are_checked) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = text_on(ctx, t_seed_cnn_text, 4);
    cr_assert_eq(ck_model_set_cuda_graph(NULL, CK_CUDA_GRAPH_OFF), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_cuda_graph_info(NULL, NULL), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_set_cuda_graph(m, (ck_cuda_graph_mode)7), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "mode") &&
                  strstr(ck_context_last_error(ctx), "got 7"),
              "%s", ck_context_last_error(ctx));
    cr_assert_eq(ck_model_set_cuda_graph(m, (ck_cuda_graph_mode)-1), CK_STATUS_BAD_PARAM);
    ck_cuda_graph_info gi;
    CK_OK(ctx, ck_model_cuda_graph_info(m, &gi));
    cr_assert_eq(gi.mode, CK_CUDA_GRAPH_AUTO, "a refused mode changes nothing");
    cr_assert_eq(ck_model_cuda_graph_info(m, NULL), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "info"), "%s", ck_context_last_error(ctx));
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* A CPU context takes the setting (the same program runs on either device) and it changes
 * nothing: the same bits with AUTO and OFF, no graph, a note that says why. Unbuilt models take
 * it too. */
Test(cuda_graph, cpu_context_accepts_the_switch) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *u = NULL;
    CK_OK(ctx, ck_model_create(ctx, &u));
    CK_OK(ctx, ck_model_set_cuda_graph(u, CK_CUDA_GRAPH_OFF));
    ck_model_destroy(u);
    ck_model *m[2] = {text_on(ctx, t_seed_cnn_text, 8), text_on(ctx, t_seed_cnn_text, 8)};
    CK_OK(ctx, ck_model_set_cuda_graph(m[1], CK_CUDA_GRAPH_OFF));
    float x[8 * 784];
    int32_t y[8];
    for (int i = 0; i < 8 * 784; ++i)
        x[i] = (float)((i * 37) % 101) / 101.0f;
    for (int i = 0; i < 8; ++i)
        y[i] = i % 10;
    ck_step_result r[2];
    for (int s = 0; s < 3; ++s)
        for (int k = 0; k < 2; ++k)
            CK_OK(ctx, ck_model_train_step(m[k], x, y, s == 2 ? 5 : 8, &r[k]));
    cr_assert(memcmp(&r[0].loss, &r[1].loss, sizeof r[0].loss) == 0);
    size_t n = 0;
    CK_OK(ctx, ck_model_get_weights(m[0], NULL, 0, &n));
    float *w0 = malloc(n * sizeof *w0), *w1 = malloc(n * sizeof *w1);
    CK_OK(ctx, ck_model_get_weights(m[0], w0, n, NULL));
    CK_OK(ctx, ck_model_get_weights(m[1], w1, n, NULL));
    cr_assert_eq(memcmp(w0, w1, n * sizeof *w0), 0);
    for (int k = 0; k < 2; ++k) {
        ck_cuda_graph_info gi;
        CK_OK(ctx, ck_model_cuda_graph_info(m[k], &gi));
        cr_assert_eq(gi.mode, k ? CK_CUDA_GRAPH_OFF : CK_CUDA_GRAPH_AUTO);
        cr_assert_eq(gi.last_step_graph, 0);
        cr_assert_eq(gi.graphs + gi.captures + gi.replays, 0);
        cr_assert_neq(strstr(gi.note, "CPU context"), NULL, "%s", gi.note);
    }
    free(w0), free(w1);
    ck_model_destroy(m[0]), ck_model_destroy(m[1]);
    ck_context_destroy(ctx);
}

/* The step packet's host twin against the computations it replaced, over 10,000 steps and a few
 * optimizer settings: Adam's alpha as cuda_update formed it (ck_adam_alpha of step + 1) and as
 * written out in double (the formula ck_cpu_adam_update uses); each dropout node's offset as
 * ck_model_dropout_offset gives it and as step * 4096 + layer; the packet's step is m->step. */
Test(cuda_graph, step_packet_matches_the_host_computation) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = text_on(ctx, t_seed_cnn_text, 4);
    const float opts[3][3] = {{1e-3f, 0.9f, 0.999f}, {1e-2f, 0.8f, 0.98f}, {3e-4f, 0.0f, 0.5f}};
    int drops = 0;
    for (int i = 0; i < m->num_nodes; ++i)
        drops += m->nodes[i].drop_layer >= 0 || m->nodes[i].type == CK_NODE_DROPOUT ||
                 m->nodes[i].type == CK_NODE_SDROPOUT;
    cr_assert_geq(drops, 3, "the seed model's three dropouts");
    long long mismatches = 0;
    for (int o = 0; o < 3; ++o) {
        m->opt.learning_rate = opts[o][0];
        m->opt.beta1 = opts[o][1];
        m->opt.beta2 = opts[o][2];
        for (long long step = 0; step < 10000; ++step) {
            m->step = step;
            const ck_kstep k = ck_exec_step_packet(m);
            const float old = ck_adam_alpha(opts[o][0], opts[o][1], opts[o][2], step + 1);
            const double t = (double)(step + 1);
            const float spelled =
                (float)((double)opts[o][0] * sqrt(1.0 - pow((double)opts[o][2], t)) /
                        (1.0 - pow((double)opts[o][1], t)));
            mismatches += memcmp(&k.adam_alpha, &old, sizeof old) != 0;
            mismatches += memcmp(&k.adam_alpha, &spelled, sizeof old) != 0;
            mismatches += k.step != step;
            if (o > 0)
                continue;
            for (int i = 0; i < m->num_nodes; ++i) {
                const int layer = ck_model_dropout_layer(m, i);
                const uint64_t dev = ck_dropout_layer_offset(k.step, layer);
                mismatches += dev != ck_model_dropout_offset(m, i);
                mismatches += dev != (uint64_t)step * 4096u + (uint64_t)layer;
            }
        }
    }
    cr_assert_eq(mismatches, 0);
    /* far steps: the 64-bit offset wraps as the host's did */
    const long long far[3] = {1LL << 40, (1LL << 52) + 3, 9007199254740993LL};
    for (int f = 0; f < 3; ++f) {
        m->step = far[f];
        const ck_kstep k = ck_exec_step_packet(m);
        cr_assert_eq(k.step, far[f]);
        cr_assert_eq(ck_dropout_layer_offset(k.step, 25), (uint64_t)far[f] * 4096u + 25u);
    }
    m->step = 0;
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* The functional model of test_gpu_graph.c builds and trains here, so the GPU test fails only
 * for what it checks. */
Test(cuda_graph, gpu_test_model_trains_on_the_cpu) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = text_on(ctx, t_graph_func_text, 4);
    cr_assert(m->graph, "a graph model");
    float x[4 * 12 * 12 * 3];
    for (int i = 0; i < 4 * 12 * 12 * 3; ++i)
        x[i] = (float)(i % 13) / 13.0f;
    const int32_t y[4] = {0, 1, 2, 4};
    ck_step_result r;
    CK_OK(ctx, ck_model_train_step(m, x, y, 4, &r));
    cr_assert(isfinite(r.loss));
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}
