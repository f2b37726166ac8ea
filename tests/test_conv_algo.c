/* The convolution algorithm settings (ck_context_set_conv_algo / _set_math) and the choice logic
 * behind them (conv_algo.c), on the CPU: argument checks, which cuDNN candidate each setting
 * allows, the per-context cache of timed choices, and the model's per-conv description. The
 * same settings on a GPU: test_gpu_layers.c and test_gpu_model.c. */
#include "common.h"

#include <string.h>

#include "internal.h"

Test(conv_algo, setters_check_arguments_on_cpu) {
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    cr_expect_eq(ck_context_conv_algo(c), CK_CONV_ALGO_DETERMINISTIC, "default policy");
    cr_expect_eq(ck_context_math(c), CK_MATH_STRICT_FP32, "default math");
    cr_expect_eq(ck_context_set_conv_algo(NULL, CK_CONV_ALGO_FASTEST), CK_STATUS_BAD_PARAM);
    cr_expect_eq(ck_context_set_math(NULL, CK_MATH_TF32), CK_STATUS_BAD_PARAM);
    cr_expect_str_eq(ck_context_last_error(NULL), "ctx: is NULL");
    cr_expect_eq(ck_context_conv_algo(NULL), CK_CONV_ALGO_DETERMINISTIC);
    cr_expect_eq(ck_context_math(NULL), CK_MATH_STRICT_FP32);

    cr_expect_eq(ck_context_set_conv_algo(c, (ck_conv_algo)2), CK_STATUS_BAD_PARAM);
    cr_expect_neq(strstr(ck_context_last_error(c), "algo:"), NULL, "%s", ck_context_last_error(c));
    cr_expect_eq(ck_context_set_conv_algo(c, (ck_conv_algo)-1), CK_STATUS_BAD_PARAM);
    cr_expect_eq(ck_context_conv_algo(c), CK_CONV_ALGO_DETERMINISTIC, "a refused value is kept");
    cr_expect_eq(ck_context_set_math(c, (ck_math)7), CK_STATUS_BAD_PARAM);
    cr_expect_neq(strstr(ck_context_last_error(c), "math:"), NULL, "%s", ck_context_last_error(c));
    cr_expect_eq(ck_context_math(c), CK_MATH_STRICT_FP32, "a refused value is kept");

    /* a CPU context stores the settings (they have no effect there) */
    CK_OK(c, ck_context_set_conv_algo(c, CK_CONV_ALGO_FASTEST));
    cr_expect_str_eq(ck_context_last_error(c), "", "success clears the message");
    CK_OK(c, ck_context_set_math(c, CK_MATH_TF32));
    cr_expect_eq(ck_context_conv_algo(c), CK_CONV_ALGO_FASTEST);
    cr_expect_eq(ck_context_math(c), CK_MATH_TF32);
    CK_OK(c, ck_context_set_conv_algo(c, CK_CONV_ALGO_DETERMINISTIC));
    CK_OK(c, ck_context_set_math(c, CK_MATH_STRICT_FP32));
    cr_expect_eq(ck_context_conv_algo(c), CK_CONV_ALGO_DETERMINISTIC);
    cr_expect_eq(ck_context_math(c), CK_MATH_STRICT_FP32);
    ck_context_destroy(c);
}

/* A CPU model trains the same bits whatever the settings: the CPU path ignores them. */
Test(conv_algo, cpu_results_ignore_settings) {
    const int B = 4;
    float x[4 * 784];
    int32_t y[4];
    trng r = {11};
    trng_fill(&r, x, sizeof x / sizeof *x, 0, 1);
    for (int i = 0; i < B; ++i)
        y[i] = i;
    float *w[2] = {NULL, NULL};
    size_t n[2] = {0, 0};
    for (int run = 0; run < 2; ++run) {
        ck_context *c = t_ctx(CK_DEVICE_CPU);
        if (run) {
            CK_OK(c, ck_context_set_conv_algo(c, CK_CONV_ALGO_FASTEST));
            CK_OK(c, ck_context_set_math(c, CK_MATH_TF32));
        }
        ck_model *m = t_model(c, t_seed_cnn_text, B);
        CK_OK(c, ck_model_train_step(m, x, y, B, NULL));
        CK_OK(c, ck_model_get_weights(m, NULL, 0, &n[run]));
        w[run] = malloc(n[run] * sizeof(float));
        CK_OK(c, ck_model_get_weights(m, w[run], n[run], NULL));
        char buf[1024];
        size_t need = 0;
        CK_OK(c, ck_model_conv_algorithms(m, buf, sizeof buf, &need));
        cr_expect_eq(need, strlen(buf) + 1);
        cr_expect_neq(strstr(buf, "conv2d: CPU im2col"), NULL, "%s", buf);
        cr_expect_eq(ck_model_conv_algorithms(m, buf, 8, &need), CK_STATUS_BAD_PARAM);
        cr_expect_neq(strstr(ck_context_last_error(c), "buf:"), NULL);
        ck_model_destroy(m);
        ck_context_destroy(c);
    }
    cr_assert_eq(n[0], n[1]);
    cr_expect_eq(memcmp(w[0], w[1], n[0] * sizeof(float)), 0);
    free(w[0]), free(w[1]);
}

static ck_algo_cand cand(int algo, int ok, int det, ck_cand_math m, size_t mem, float t) {
    const ck_algo_cand a = {algo, ok, det, m, mem, t};
    return a;
}

/* Deterministic keeps today's rule: the first ok, deterministic, allowed-math candidate within
 * the cap, in cuDNN's heuristic order. */
Test(conv_algo, deterministic_takes_first_allowed_in_order) {
    const ck_algo_cand c[] = {
        cand(0, 0, 1, CK_CAND_MATH_FMA, 0, -1),           /* failed */
        cand(1, 1, 0, CK_CAND_MATH_FMA, 0, -1),           /* not deterministic */
        cand(2, 1, 1, CK_CAND_MATH_DEFAULT, 0, -1),       /* may use TF32 */
        cand(3, 1, 1, CK_CAND_MATH_TENSOR_OP, 0, -1),     /* TF32 */
        cand(4, 1, 1, CK_CAND_MATH_FMA, 2000, -1),        /* over the cap */
        cand(5, 1, 1, CK_CAND_MATH_FMA, 1000, -1),        /* the one */
        cand(6, 1, 1, CK_CAND_MATH_FMA, 0, -1),           /* later */
        cand(7, 1, 1, CK_CAND_MATH_TENSOR_OP_CONV, 0, -1) /* down-conversion */
    };
    const int n = (int)(sizeof c / sizeof *c);
    cr_expect_eq(ck_conv_algo_choose(c, n, CK_CONV_ALGO_DETERMINISTIC, CK_MATH_STRICT_FP32, 1000),
                 5);
    /* TF32 allows the default and tensor-op math: index 2 comes first */
    cr_expect_eq(ck_conv_algo_choose(c, n, CK_CONV_ALGO_DETERMINISTIC, CK_MATH_TF32, 1000), 2);
    cr_expect_eq(ck_conv_algo_choose(c, 2, CK_CONV_ALGO_DETERMINISTIC, CK_MATH_STRICT_FP32, 1000),
                 -1, "nothing allowed");
    cr_expect_eq(ck_conv_algo_choose(c, 0, CK_CONV_ALGO_FASTEST, CK_MATH_TF32, 1000), -1);
    /* down-conversion (fp16/bf16) is never allowed */
    cr_expect_eq(ck_conv_algo_choose(c + 7, 1, CK_CONV_ALGO_FASTEST, CK_MATH_TF32, 1000), -1);
}

/* Fastest takes the least measured time among the allowed, deterministic or not. */
Test(conv_algo, fastest_takes_least_time) {
    const ck_algo_cand c[] = {
        cand(0, 1, 1, CK_CAND_MATH_FMA, 0, 0.50f),
        cand(1, 1, 0, CK_CAND_MATH_FMA, 0, 0.20f),       /* nondeterministic, fastest fp32 */
        cand(2, 1, 1, CK_CAND_MATH_TENSOR_OP, 0, 0.05f), /* TF32, fastest of all */
        cand(3, 0, 1, CK_CAND_MATH_FMA, 0, 0.01f),       /* failed */
        cand(4, 1, 1, CK_CAND_MATH_FMA, 5000, 0.02f),    /* over the cap */
        cand(5, 1, 1, CK_CAND_MATH_FMA, 0, 0.20f),       /* ties with 1: the first wins */
    };
    const int n = (int)(sizeof c / sizeof *c);
    cr_expect_eq(ck_conv_algo_choose(c, n, CK_CONV_ALGO_FASTEST, CK_MATH_STRICT_FP32, 1000), 1);
    cr_expect_eq(ck_conv_algo_choose(c, n, CK_CONV_ALGO_FASTEST, CK_MATH_TF32, 1000), 2);
    cr_expect_eq(ck_conv_algo_choose(c, n, CK_CONV_ALGO_DETERMINISTIC, CK_MATH_STRICT_FP32, 1000),
                 0, "deterministic ignores the times");
    /* heuristic results (no time): fastest takes the first allowed, nondeterministic included */
    const ck_algo_cand h[] = {cand(9, 1, 0, CK_CAND_MATH_FMA, 0, -1),
                              cand(8, 1, 1, CK_CAND_MATH_FMA, 0, -1)};
    cr_expect_eq(ck_conv_algo_choose(h, 2, CK_CONV_ALGO_FASTEST, CK_MATH_STRICT_FP32, 1000), 0);
    cr_expect_eq(ck_conv_algo_choose(h, 2, CK_CONV_ALGO_DETERMINISTIC, CK_MATH_STRICT_FP32, 1000),
                 1);
}

static ck_conv_algo_key key_of(int n, int cin, int policy, int math) {
    ck_conv_algo_key k;
    memset(&k, 0, sizeof k);
    const int g[13] = {n, 28, 28, cin, 32, 3, 3, 1, 1, 0, 0, 26, 26};
    memcpy(k.geom, g, sizeof g);
    k.policy = policy;
    k.math = math;
    return k;
}

Test(conv_algo, cache_by_shape_and_setting) {
    ck_conv_algo_cache *c = calloc(1, sizeof *c);
    ck_conv_algo_plan p;
    memset(&p, 0, sizeof p);
    p.algo[0] = 6;
    p.bytes = 4096;
    const ck_conv_algo_key k = key_of(512, 1, CK_CONV_ALGO_FASTEST, CK_MATH_STRICT_FP32);
    cr_expect_null(ck_conv_algo_cache_find(c, &k));
    ck_conv_algo_cache_put(c, &k, &p);
    const ck_conv_algo_plan *got = ck_conv_algo_cache_find(c, &k);
    cr_assert_not_null(got);
    cr_expect_eq(got->algo[0], 6);
    cr_expect_eq(got->bytes, 4096);
    /* another batch, channel count or setting is another entry */
    ck_conv_algo_key o = key_of(128, 1, CK_CONV_ALGO_FASTEST, CK_MATH_STRICT_FP32);
    cr_expect_null(ck_conv_algo_cache_find(c, &o));
    o = key_of(512, 3, CK_CONV_ALGO_FASTEST, CK_MATH_STRICT_FP32);
    cr_expect_null(ck_conv_algo_cache_find(c, &o));
    o = key_of(512, 1, CK_CONV_ALGO_FASTEST, CK_MATH_TF32);
    cr_expect_null(ck_conv_algo_cache_find(c, &o));
    o = k;
    o.force_nchw = 1;
    cr_expect_null(ck_conv_algo_cache_find(c, &o));
    /* the same key again replaces, not adds */
    p.algo[0] = 1;
    ck_conv_algo_cache_put(c, &k, &p);
    cr_expect_eq(c->count, 1);
    cr_expect_eq(ck_conv_algo_cache_find(c, &k)->algo[0], 1);
    /* full: the oldest goes first, the rest stay */
    for (int i = 0; i < CK_CONV_ALGO_CACHE; ++i) {
        const ck_conv_algo_key ki = key_of(1000 + i, 1, CK_CONV_ALGO_FASTEST, CK_MATH_TF32);
        p.algo[0] = i;
        ck_conv_algo_cache_put(c, &ki, &p);
    }
    cr_expect_eq(c->count, CK_CONV_ALGO_CACHE);
    cr_expect_null(ck_conv_algo_cache_find(c, &k), "the oldest entry was replaced");
    for (int i = 0; i < CK_CONV_ALGO_CACHE; ++i) {
        const ck_conv_algo_key ki = key_of(1000 + i, 1, CK_CONV_ALGO_FASTEST, CK_MATH_TF32);
        got = ck_conv_algo_cache_find(c, &ki);
        cr_assert_not_null(got, "entry %d", i);
        cr_expect_eq(got->algo[0], i);
    }
    free(c);
}

/* Layout by measurement (fastest): a layout's step is its three timed algorithms, plus the
 * transposes for NCHW; any untimed part makes the step unknown, and an unknown step keeps NHWC. */
Test(conv_algo, layout_step_and_choice) {
    const float t[3] = {0.25f, 0.5f, 1.0f}, part[3] = {0.25f, -1.0f, 1.0f};
    cr_expect_float_eq(ck_conv_layout_step_ms(t, -1.0f, 0), 1.75f, 1e-6, "NHWC: no transposes");
    cr_expect_float_eq(ck_conv_layout_step_ms(t, 0.5f, 1), 2.25f, 1e-6, "NCHW pays its transposes");
    cr_expect_lt(ck_conv_layout_step_ms(t, -1.0f, 1), 0.0f, "NCHW without timed transposes");
    cr_expect_lt(ck_conv_layout_step_ms(part, 0.5f, 1), 0.0f, "an untimed direction");
    cr_expect_lt(ck_conv_layout_step_ms(part, 0.0f, 0), 0.0f);
    /* NCHW only when faster by more than the margin */
    cr_expect_eq(ck_conv_layout_prefers_nchw(1.0f, 0.5f), 1);
    cr_expect_eq(ck_conv_layout_prefers_nchw(1.0f, 0.94f), 1);
    cr_expect_eq(ck_conv_layout_prefers_nchw(1.0f, 0.96f), 0, "within the margin: NHWC");
    cr_expect_eq(ck_conv_layout_prefers_nchw(1.0f, 1.5f), 0);
    cr_expect_eq(ck_conv_layout_prefers_nchw(-1.0f, 0.1f), 0, "NHWC untimed: NHWC");
    cr_expect_eq(ck_conv_layout_prefers_nchw(1.0f, -1.0f), 0, "NCHW untimed: NHWC");
    /* the plan keeps both steps for the cached describe line */
    ck_conv_algo_cache *c = calloc(1, sizeof *c);
    ck_conv_algo_plan p;
    memset(&p, 0, sizeof p);
    p.nchw = 1;
    p.layout_ms[0] = 2.0f;
    p.layout_ms[1] = 1.0f;
    p.transpose_ms = 0.25f;
    const ck_conv_algo_key k = key_of(128, 1, CK_CONV_ALGO_FASTEST, CK_MATH_STRICT_FP32);
    ck_conv_algo_cache_put(c, &k, &p);
    const ck_conv_algo_plan *got = ck_conv_algo_cache_find(c, &k);
    cr_assert_not_null(got);
    cr_expect(got->nchw == 1 && got->layout_ms[0] == 2.0f && got->layout_ms[1] == 1.0f &&
              got->transpose_ms == 0.25f);
    free(c);
}

/* ck_context_device_bytes: the context's own device memory (cuBLAS's workspace) is 0 off the GPU;
 * on a GPU, gpu_layers/settings_on_cuda_context checks it against the workspace size. */
Test(conv_algo, context_device_bytes_on_cpu) {
    ck_context *c = t_ctx(CK_DEVICE_CPU);
    cr_expect_eq(ck_context_device_bytes(c), 0);
    cr_expect_eq(ck_context_device_bytes(NULL), 0);
    ck_context_destroy(c);
}
