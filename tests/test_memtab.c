/* The model's named memory table (src/host/exec/memtab.h): one sizing for the CPU's host parts and
 * the CUDA arena, checked against the model's reported memory and hand-counted sizes of the seed
 * model. */
#include "common.h"

#include <string.h>

#include "cnnkit/model.h"
#include "exec.h"
#include "memtab.h"

static ck_model *seed(ck_context *ctx, int batch) {
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(ctx, ck_model_from_keras_text(ctx, t_seed_cnn_text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, batch));
    return m;
}

Test(memtab, cpu_table_is_what_the_model_reports) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = seed(ctx, 128);
    ck_model_memory mem;
    CK_OK(ctx, ck_model_memory_usage(m, &mem));
    ck_memtab t;
    ck_memtab_plan(m, CK_BE_CPU, NULL, &t);
    cr_assert_eq(t.total, mem.host_bytes);
    cr_assert_eq(t.bytes[CK_MEM_ACTS], mem.activation_bytes);
    /* 596,330 trainable parameters: params, grads and both Adam moments */
    for (int k = CK_MEM_PARAMS; k <= CK_MEM_OPT_V; ++k)
        cr_assert_eq(t.bytes[k], (size_t)4 * 596330, "%s", ck_mem_name((ck_mem_id)k));
    /* the largest activation is 26 x 26 x 32 per sample */
    cr_assert_eq(t.bytes[CK_MEM_GBUF0], (size_t)4 * 26 * 26 * 32 * 128);
    cr_assert_eq(t.bytes[CK_MEM_LOGITS_GRAD], (size_t)4 * 10 * 128);
    /* the CPU reads the caller's batch: no staging, and no device step packet */
    cr_assert_eq(t.bytes[CK_MEM_X] + t.bytes[CK_MEM_LABELS] + t.bytes[CK_MEM_LOSS] +
                     t.bytes[CK_MEM_STEP],
                 0);
    /* the parts are back to back; each node's output inside the activations, in node order */
    for (int k = 1; k < CK_MEM_COUNT; ++k)
        cr_assert_eq(t.off[k], t.off[k - 1] + t.bytes[k - 1]);
    for (int i = 1; i < m->num_nodes; ++i)
        cr_assert_geq(m->nodes[i].act_offset, m->nodes[i - 1].act_offset);
    cr_assert_str_eq(ck_mem_name(CK_MEM_FIXED_BACKUP), "fixed_backup");
    cr_assert_str_eq(ck_mem_name(CK_MEM_COUNT), "?");
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* The device arena's plan (sized here on a CPU model; the GPU tests run it on a device): every
 * part and every activation on a 256-byte boundary, the batch staged, one loss record. */
Test(memtab, cuda_table_aligns_every_part) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = seed(ctx, 100);
    ck_memtab t;
    ck_memtab_plan(m, CK_BE_CUDA, NULL, &t);
    cr_assert_eq(t.align, 256);
    size_t end = 0;
    for (int k = 0; k < CK_MEM_COUNT; ++k) {
        cr_assert_eq(t.off[k] % 256, 0, "%s", ck_mem_name((ck_mem_id)k));
        cr_assert_eq(t.off[k], end);
        end += (t.bytes[k] + 255) / 256 * 256;
    }
    cr_assert_eq(t.total, end);
    for (int i = 0; i < m->num_nodes; ++i)
        cr_assert_eq(m->nodes[i].act_offset % 256, 0, "node %d", i);
    cr_assert_eq(t.bytes[CK_MEM_X], (size_t)4 * 28 * 28 * 100);
    cr_assert_eq(t.bytes[CK_MEM_LABELS], (size_t)4 * 100);
#ifdef CNNKIT_HAVE_CUDA
    cr_assert_eq(t.bytes[CK_MEM_LOSS], sizeof(ck_kloss));
    cr_assert_eq(t.bytes[CK_MEM_STEP], sizeof(ck_kstep));
    cr_assert_str_eq(ck_mem_name(CK_MEM_STEP), "step");
    cr_assert_gt(t.bytes[CK_MEM_WS], 0); /* the loss partials at least */
#endif
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* A bf16 model's device arena: the activations before the logits and the gradient buffers as
 * bf16 words (half of fp32's, counted node by node with the arena's 256-byte alignment), the
 * logits fp32; the staged batch and the loss gradient once more as bf16 words; no rounded
 * parameter copy (the CPU twin's). */
Test(memtab, cuda_bf16_table_halves_the_activations) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = NULL;
    char msg[1024];
    CK_OK(ctx, ck_model_from_keras_text(ctx, t_seed_cnn_text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_set_precision(m, CK_PRECISION_BF16));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 100));
    ck_memtab t;
    ck_memtab_plan(m, CK_BE_CUDA, NULL, &t);
    const int ln = ck_exec_logits_node(m);
    size_t want = 0, fp32 = 0;
    for (int i = 0; i < m->num_nodes; ++i) {
        const ck_node *n = &m->nodes[i];
        if (n->kind->alias)
            continue;
        const size_t o = (size_t)n->oh * n->ow * n->oc * 100;
        want += ((i < ln ? 2 : 4) * o + 255) / 256 * 256;
        fp32 += (4 * o + 255) / 256 * 256;
    }
    cr_assert_eq(t.bytes[CK_MEM_ACTS], want, "%zu vs %zu", t.bytes[CK_MEM_ACTS], want);
    cr_assert_lt(t.bytes[CK_MEM_ACTS], fp32 * 51 / 100, "about half of fp32's %zu", fp32);
    /* the gradient ping-pong buffers: bf16 words of the largest activation (26 x 26 x 32) */
    cr_assert_eq(t.bytes[CK_MEM_GBUF0], (size_t)2 * 26 * 26 * 32 * 100);
    cr_assert_eq(t.bytes[CK_MEM_GBUF1], t.bytes[CK_MEM_GBUF0]);
    cr_assert_eq(t.bytes[CK_MEM_XBF], (size_t)2 * 28 * 28 * 100);
    cr_assert_eq(t.bytes[CK_MEM_DLOGITS_BF], (size_t)2 * 10 * 100);
    cr_assert_eq(t.bytes[CK_MEM_WROUND], 0);
    cr_assert_str_eq(ck_mem_name(CK_MEM_WROUND), "wround");
    /* the CPU twin: fp32 buffers, a rounded batch and a rounded parameter copy */
    ck_memtab_plan(m, CK_BE_CPU, NULL, &t);
    cr_assert_eq(t.bytes[CK_MEM_XBF] + t.bytes[CK_MEM_DLOGITS_BF], 0);
    cr_assert_eq(t.bytes[CK_MEM_WROUND], (size_t)4 * 596330);
    cr_assert_eq(t.bytes[CK_MEM_GBUF0], (size_t)4 * 26 * 26 * 32 * 100);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

extern const char t_graph_func_text[]; /* test_gpu_graph.c */

/* A functional model's device gradients (per-node buffers by liveness, the scratch gradients) in
 * bf16 take about half the bytes of fp32's. */
Test(memtab, cuda_bf16_graph_gradients_are_bf16_words) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_memtab t[2];
    for (int p = 0; p < 2; ++p) {
        ck_model *m = NULL;
        char msg[1024];
        CK_OK(ctx, ck_model_from_keras_text(ctx, t_graph_func_text, &m, msg, sizeof msg));
        CK_OK(ctx, ck_model_set_precision(m, p ? CK_PRECISION_BF16 : CK_PRECISION_FP32));
        CK_OK(ctx, ck_model_build(m, 0, 0, 0, 64));
        ck_memtab_plan(m, CK_BE_CUDA, NULL, &t[p]);
        ck_model_destroy(m);
    }
    cr_assert_gt(t[0].bytes[CK_MEM_GNODE], 0);
    cr_assert_leq(t[1].bytes[CK_MEM_GNODE] * 100, t[0].bytes[CK_MEM_GNODE] * 55, "%zu vs %zu",
                  t[1].bytes[CK_MEM_GNODE], t[0].bytes[CK_MEM_GNODE]);
    cr_assert_eq(t[1].gscratch_stride * 2, t[0].gscratch_stride);
    cr_assert_leq(t[1].bytes[CK_MEM_ACTS] * 100, t[0].bytes[CK_MEM_ACTS] * 55);
    ck_context_destroy(ctx);
}
