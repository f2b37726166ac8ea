/* Training-step profile (ck_model_set_profiling, ck_model_profile, cnnkit train --profile). */
#include "common.h"

#include "cnnkit/model.h"
#include "model_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char MODEL[] = "model = Sequential()\n"
                            "model.add(Conv2D(4, (3, 3), input_shape=(8, 8, 1)))\n"
                            "model.add(BatchNormalization())\n"
                            "model.add(Activation('relu'))\n"
                            "model.add(MaxPooling2D((2, 2)))\n"
                            "model.add(SpatialDropout2D(0.25))\n"
                            "model.add(Flatten())\n"
                            "model.add(Dense(3, activation='softmax'))\n";

static ck_model *small_model(ck_context *ctx) {
    ck_model *m = NULL;
    char msg[256];
    CK_OK(ctx, ck_model_from_keras_text(ctx, MODEL, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 16));
    return m;
}

static void batch(float *x, int32_t *y, int n, uint64_t seed) {
    trng r = {seed};
    for (int i = 0; i < n; ++i) {
        y[i] = (int32_t)(trng_u32(&r) % 3u);
        for (int p = 0; p < 64; ++p)
            x[i * 64 + p] = (float)y[i] * 0.3f + trng_uniform(&r, -0.5f, 0.5f);
    }
}

/* Trains `steps` steps (profiling on or off) and returns the weights. */
static float *train(int profile, int steps, ck_profile_row *rows, int *count, long long *nsteps,
                    double *step_ms) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    CK_OK(ctx, ck_context_set_seed(ctx, 7));
    ck_model *m = small_model(ctx);
    if (profile)
        CK_OK(ctx, ck_model_set_profiling(m, 1));
    float x[16 * 64];
    int32_t y[16];
    for (int s = 0; s < steps; ++s) {
        batch(x, y, 16, 100 + (uint64_t)s);
        ck_step_result r;
        CK_OK(ctx, ck_model_train_step(m, x, y, 16, &r));
        /* evaluate and a failed step are not counted */
        CK_OK(ctx, ck_model_evaluate(m, x, y, 16, &r));
        int32_t bad[16];
        memcpy(bad, y, sizeof bad);
        bad[3] = 9;
        cr_assert_eq(ck_model_train_step(m, x, bad, 16, &r), CK_STATUS_BAD_PARAM);
    }
    if (rows)
        CK_OK(ctx, ck_model_profile(m, rows, 32, count, nsteps, step_ms));
    size_t nw = 0;
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, &nw));
    float *w = malloc(nw * sizeof *w);
    cr_assert_not_null(w);
    CK_OK(ctx, ck_model_get_weights(m, w, nw, NULL));
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return w;
}

Test(profile, rows_steps_and_sums) {
    ck_profile_row rows[32];
    int count = 0;
    long long steps = 0;
    double step_ms = 0.0;
    float *w = train(1, 5, rows, &count, &steps, &step_ms);
    free(w);
    /* the plan: conv, BN+ReLU, pool+spatial dropout, flatten, dense, softmax: 6 nodes */
    cr_assert_eq(count, 6 + 2);
    cr_assert_eq(steps, 5, "evaluate and failed steps must not count");
    cr_assert_gt(step_ms, 0.0);
    cr_assert_neq(strstr(rows[0].what, "conv2d"), NULL, "%s", rows[0].what);
    cr_assert_neq(strstr(rows[1].what, "batch_normalization + activation"), NULL, "%s",
                  rows[1].what);
    cr_assert_neq(strstr(rows[count - 2].what, "optimizer (adam)"), NULL, "%s",
                  rows[count - 2].what);
    cr_assert_neq(strstr(rows[count - 1].what, "other"), NULL, "%s", rows[count - 1].what);
    double sum = 0.0;
    for (int i = 0; i < count; ++i) {
        cr_assert_eq(rows[i].node, i < count - 2 ? i : -1);
        cr_assert(rows[i].forward_ms >= 0.0 && rows[i].backward_ms >= 0.0, "row %d", i);
        if (i >= count - 2)
            cr_assert_eq(rows[i].backward_ms, 0.0);
        sum += rows[i].forward_ms + rows[i].backward_ms;
    }
    /* the conv and BN nodes run real work in both directions */
    cr_assert_gt(rows[0].forward_ms, 0.0);
    cr_assert_gt(rows[0].backward_ms, 0.0);
    cr_assert_gt(rows[1].forward_ms, 0.0);
    cr_assert_gt(rows[1].backward_ms, 0.0);
    /* the rows add up to the step: "other" is the rest (clamped at 0 against clock jitter) */
    cr_assert(fabs(sum - step_ms) <= 1e-6 * step_ms + 1e-6, "rows %g ms vs step %g ms", sum,
              step_ms);
}

Test(profile, changes_no_result) {
    float *a = train(0, 4, NULL, NULL, NULL, NULL);
    float *b = train(1, 4, NULL, NULL, NULL, NULL);
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = small_model(ctx);
    size_t nw = 0;
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, &nw));
    cr_assert_eq(memcmp(a, b, nw * sizeof *a), 0, "profiling changed the weights");
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    free(a);
    free(b);
}

Test(profile, start_stop_reset_and_errors) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    cr_assert_eq(ck_model_set_profiling(NULL, 1), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_profile(NULL, NULL, 0, NULL, NULL, NULL), CK_STATUS_BAD_PARAM);
    ck_model *m = NULL;
    char msg[256];
    CK_OK(ctx, ck_model_from_keras_text(ctx, MODEL, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_set_profiling(m, 1)); /* before build: allowed */
    int count = -1;
    cr_assert_eq(ck_model_profile(m, NULL, 0, &count, NULL, NULL), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "not built"), NULL);
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 16));
    cr_assert_eq(ck_model_profile(m, NULL, 3, &count, NULL, NULL), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "rows"), NULL);
    ck_profile_row one;
    cr_assert_eq(ck_model_profile(m, &one, -1, &count, NULL, NULL), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "cap: -1"), "%s", ck_context_last_error(ctx));

    float x[16 * 64];
    int32_t y[16];
    batch(x, y, 16, 1);
    ck_step_result r;
    long long steps = -1;
    CK_OK(ctx, ck_model_train_step(m, x, y, 16, &r));
    CK_OK(ctx, ck_model_profile(m, NULL, 0, &count, &steps, NULL));
    cr_assert_eq(count, 8);
    cr_assert_eq(steps, 1);
    /* off: figures kept, later steps not counted */
    CK_OK(ctx, ck_model_set_profiling(m, 0));
    CK_OK(ctx, ck_model_train_step(m, x, y, 16, &r));
    CK_OK(ctx, ck_model_profile(m, NULL, 0, &count, &steps, NULL));
    cr_assert_eq(steps, 1);
    /* on again: a new profile */
    CK_OK(ctx, ck_model_set_profiling(m, 1));
    double ms = -1.0;
    CK_OK(ctx, ck_model_profile(m, NULL, 0, &count, &steps, &ms));
    cr_assert_eq(steps, 0);
    cr_assert_eq(ms, 0.0);
    /* fewer rows than there are: the first cap rows, count says how many there are */
    ck_profile_row two[2];
    CK_OK(ctx, ck_model_train_step(m, x, y, 16, &r));
    CK_OK(ctx, ck_model_profile(m, two, 2, &count, &steps, NULL));
    cr_assert_eq(count, 8);
    cr_assert_eq(steps, 1);
    cr_assert_eq(two[1].node, 1);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* ---- the roofline: each node's work, the device peaks --------------------------------------- */

/* The first node row whose description starts with `what`. */
static int row_of(const ck_profile_row *rows, int count, const char *what) {
    for (int i = 0; i < count; ++i)
        if (rows[i].node >= 0 && strncmp(rows[i].what, what, strlen(what)) == 0)
            return i;
    cr_assert_fail("no row starts with %s", what);
    return -1;
}

/* The seed model (examples/seed_cnn.py) profiled on the CPU for two steps of 4 and 6 samples: a
 * mean batch of 5. Hand counts at N = 5, T = elements x 4 bytes:
 *  conv 1, 28x28x1 -> 26x26x32, 3x3: forward 2*5*26*26*32*3*3*1 = 1946880 FLOPs; bytes x 15680 +
 *    W 1152 + b 128 + y 432640 = 449600. Backward: the input is the model's, so the filter
 *    gradient only: 1946880 FLOPs; dy 432640 + x 15680 + dW 1152 + db 128 = 449600.
 *  BN+ReLU on it (T = 432640): forward 3T (statistics pass and apply pass read x) + gamma, beta
 *    256 = 1298176; backward 3T + 512 (gamma, beta read, their gradients written) = 1298432.
 *  dense 1024 -> 512: forward 2*5*1024*512 = 5242880 FLOPs; x 20480 + W 2097152 + b 2048 +
 *    y 10240 = 2129920. Backward twice the FLOPs, 10485760; dy 10240 + x 20480 + W 2097152 +
 *    dW 2097152 + db 2048 + dx 20480 = 4247552.
 * On the CPU there is no peak: every roofline is 0. */
Test(profile, roofline_work_of_the_seed_model) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = NULL;
    char msg[256];
    CK_OK(ctx, ck_model_from_keras_text(ctx, t_seed_cnn_text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 8));
    ck_profile_row rows[40];
    int count = 0;
    /* no profiled step yet: no work either */
    CK_OK(ctx, ck_model_profile(m, rows, 40, &count, NULL, NULL));
    cr_assert_eq(rows[0].forward_flops, 0.0);
    CK_OK(ctx, ck_model_set_profiling(m, 1));
    float x[6 * 784];
    int32_t y[6];
    for (int i = 0; i < 6 * 784; ++i)
        x[i] = (float)(i % 17) / 17.0f;
    for (int i = 0; i < 6; ++i)
        y[i] = i;
    CK_OK(ctx, ck_model_train_step(m, x, y, 4, NULL));
    CK_OK(ctx, ck_model_train_step(m, x, y, 6, NULL));
    CK_OK(ctx, ck_model_profile(m, rows, 40, &count, NULL, NULL));
    cr_assert_leq(count, 40);
    const int conv = row_of(rows, count, "conv2d"), bn = row_of(rows, count, "batch_norm");
    const int dense = row_of(rows, count, "dense");
    cr_assert_eq(conv, 0);
    cr_assert_eq(bn, 1);
    cr_assert_eq(rows[conv].forward_flops, 1946880.0);
    cr_assert_eq(rows[conv].forward_bytes, 449600.0);
    cr_assert_eq(rows[conv].backward_flops, 1946880.0);
    cr_assert_eq(rows[conv].backward_bytes, 449600.0);
    cr_assert_eq(rows[bn].forward_flops, 0.0);
    cr_assert_eq(rows[bn].forward_bytes, 1298176.0);
    cr_assert_eq(rows[bn].backward_bytes, 1298432.0);
    cr_assert_eq(rows[dense].forward_flops, 5242880.0);
    cr_assert_eq(rows[dense].forward_bytes, 2129920.0);
    cr_assert_eq(rows[dense].backward_flops, 10485760.0);
    cr_assert_eq(rows[dense].backward_bytes, 4247552.0);
    /* the second conv reads a gradient-wanting input: the data gradient doubles its FLOPs */
    cr_assert_eq(rows[2].backward_flops, 2.0 * rows[2].forward_flops, "%s", rows[2].what);
    for (int i = 0; i < count; ++i) {
        cr_assert_eq(rows[i].roofline_fwd_ms, 0.0, "row %d: no peaks on the CPU", i);
        cr_assert_eq(rows[i].roofline_bwd_ms, 0.0, "row %d", i);
        if (rows[i].node < 0) /* the optimizer and other rows */
            cr_assert_eq(rows[i].forward_bytes + rows[i].backward_bytes, 0.0);
    }
    /* the softmax after the logits does not run in a training step: no work */
    const ck_profile_row *last = &rows[count - 3];
    cr_assert_neq(strstr(last->what, "activation"), NULL, "%s", last->what);
    cr_assert_eq(last->forward_bytes + last->backward_bytes, 0.0, "%s", last->what);
    /* bf16 storage (a bf16 model on a GPU): activations are 2 bytes, the weights stay 4 */
    const ck_node_work w = ck_node_work_of(m, 0, 5.0, 1);
    cr_assert_eq(w.fwd_bytes, 7840.0 + 1152.0 + 128.0 + 216320.0);
    cr_assert_eq(w.fwd_flops, 1946880.0);
    /* the logits node's output stays fp32, its input (a bf16 activation) does not */
    const int logits = count - 4; /* ..., dense 10, softmax, optimizer, other */
    cr_assert_neq(strstr(rows[logits].what, "dense"), NULL, "%s", rows[logits].what);
    const ck_node_work wl = ck_node_work_of(m, logits, 5.0, 1);
    cr_assert_eq(wl.fwd_bytes, 5.0 * 512 * 2 + 4.0 * (512 * 10 + 10) + 5.0 * 10 * 4);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* A graph model's multi-input and padding nodes, one step of N = 2, fp32, E = 8*8*4 elements:
 * Add (two inputs of E, output E): forward 3E x 4 x 2 = 6144 bytes, backward dy + both input
 * gradients, 6144. Concatenate (E + E -> 2E): 8192 each way. ZeroPadding2D(1) (2E = 8x8x8 ->
 * 10x10x8): forward (512 + 800) x 4 x 2 = 10496; backward reads only dy's interior: 8192. */
Test(profile, roofline_work_of_graph_nodes) {
    const char *text = "import keras\nfrom keras import layers\n\n"
                       "inputs = keras.Input(shape=(8, 8, 1))\n"
                       "x = layers.Conv2D(4, 3, padding=\"same\")(inputs)\n"
                       "a = layers.Activation(\"relu\")(x)\n"
                       "y = layers.Add()([a, x])\n"
                       "c = layers.Concatenate()([y, x])\n"
                       "p = layers.ZeroPadding2D(1)(c)\n"
                       "g = layers.GlobalAveragePooling2D()(p)\n"
                       "outputs = layers.Dense(3)(g)\n"
                       "model = keras.Model(inputs, outputs)\n";
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = NULL;
    char msg[256];
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 2));
    CK_OK(ctx, ck_model_set_profiling(m, 1));
    float x[2 * 64];
    for (int i = 0; i < 2 * 64; ++i)
        x[i] = (float)(i % 7) / 7.0f;
    const int32_t y[2] = {0, 2};
    CK_OK(ctx, ck_model_train_step(m, x, y, 2, NULL));
    ck_profile_row rows[16];
    int count = 0;
    CK_OK(ctx, ck_model_profile(m, rows, 16, &count, NULL, NULL));
    cr_assert_leq(count, 16);
    const int add = row_of(rows, count, "add"), cat = row_of(rows, count, "concatenate");
    const int pad = row_of(rows, count, "zero_padding2d");
    cr_assert_eq(rows[add].forward_bytes, 6144.0);
    cr_assert_eq(rows[add].backward_bytes, 6144.0);
    cr_assert_eq(rows[cat].forward_bytes, 8192.0);
    cr_assert_eq(rows[cat].backward_bytes, 8192.0);
    cr_assert_eq(rows[pad].forward_bytes, 10496.0);
    cr_assert_eq(rows[pad].backward_bytes, 8192.0);
    cr_assert_eq(rows[add].forward_flops + rows[cat].forward_flops + rows[pad].forward_flops, 0.0);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* The peaks from the device attributes against NVIDIA's published figures (within 1%):
 * A100 SXM4 40GB (sm_80, 108 SMs, 1410 MHz, HBM2 1215 MHz x 5120 bits): FP32 19.5 TFLOPS, TF32
 * 156, BF16 312, 1555 GB/s. H100 SXM (sm_90, 132 SMs, 1980 MHz, HBM3 2619 MHz x 5120 bits):
 * FP32 67 TFLOPS, 3.35 TB/s, and BF16 989 TFLOPS at the 1830 MHz NVIDIA quotes it at. */
static void near(double got, double want, const char *what) {
    cr_assert(fabs(got - want) <= 0.01 * want, "%s: %g, published %g", what, got, want);
}

Test(profile, device_peaks_match_published_figures) {
    ck_device_peak a = ck_device_peak_of(8, 0, 108, 1410000, 1215000, 5120);
    near(a.fp32_flops, 19.5e12, "A100 fp32");
    near(a.tf32_flops, 156e12, "A100 tf32");
    near(a.bf16_flops, 312e12, "A100 bf16");
    near(a.dram_bytes, 1555e9, "A100 DRAM");
    ck_device_peak h = ck_device_peak_of(9, 0, 132, 1980000, 2619000, 5120);
    near(h.fp32_flops, 67e12, "H100 fp32");
    near(h.dram_bytes, 3.35e12, "H100 DRAM");
    near(ck_device_peak_of(9, 0, 132, 1830000, 2619000, 5120).bf16_flops, 989e12, "H100 bf16");
    /* a compute capability not in the table: compute unknown, the bandwidth still known (V100
     * 877 MHz x 4096 bits: 900 GB/s) */
    ck_device_peak v = ck_device_peak_of(7, 0, 80, 1530000, 877000, 4096);
    cr_assert_eq(v.fp32_flops, 0.0);
    cr_assert_eq(v.bf16_flops, 0.0);
    near(v.dram_bytes, 900e9, "V100 DRAM");
    /* attributes the driver did not give: nothing known */
    ck_device_peak z = ck_device_peak_of(9, 0, 0, 0, 0, 0);
    cr_assert_eq(z.fp32_flops + z.dram_bytes, 0.0);
    /* the roofline time: the larger of compute and memory time, 0 when a needed peak is 0 */
    cr_assert_eq(ck_roofline_ms(2e9, 1e6, 1e12, 1e12), 2.0); /* compute bound: 2 ms */
    cr_assert_eq(ck_roofline_ms(1e6, 3e9, 1e12, 1e12), 3.0); /* memory bound: 3 ms */
    cr_assert_eq(ck_roofline_ms(0.0, 3e9, 0.0, 1e12), 3.0);  /* no FLOPs: no compute peak needed */
    cr_assert_eq(ck_roofline_ms(1e6, 3e9, 0.0, 1e12), 0.0);  /* compute peak unknown */
    cr_assert_eq(ck_roofline_ms(0.0, 0.0, 1e12, 1e12), 0.0); /* no work */
}

/* On a GPU every node that runs in the step has work, and a roofline above 0 (sm_80 and later:
 * the devices in the peak table). */
Test(profile, gpu_roofline_every_node) {
    ck_context *ctx = t_cuda_ctx_or_skip();
    ck_model *m = NULL;
    char msg[256];
    CK_OK(ctx, ck_model_from_keras_text(ctx, t_seed_cnn_text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, 64));
    CK_OK(ctx, ck_model_set_profiling(m, 1));
    float *x = calloc(64 * 784, sizeof *x);
    int32_t y[64];
    cr_assert_not_null(x);
    for (int i = 0; i < 64 * 784; ++i)
        x[i] = (float)(i % 29) / 29.0f;
    for (int i = 0; i < 64; ++i)
        y[i] = i % 10;
    for (int s = 0; s < 3; ++s)
        CK_OK(ctx, ck_model_train_step(m, x, y, 64, NULL));
    free(x);
    ck_profile_row rows[40];
    int count = 0;
    CK_OK(ctx, ck_model_profile(m, rows, 40, &count, NULL, NULL));
    for (int i = 0; i < count - 2; ++i) {
        const ck_profile_row *r = &rows[i];
        cr_log_info("node %d %-50s fwd %.4f ms (roofline %.4f) bwd %.4f ms (roofline %.4f)", i + 1,
                    r->what, r->forward_ms, r->roofline_fwd_ms, r->backward_ms, r->roofline_bwd_ms);
        const int runs = strncmp(r->what, "flatten", 7) != 0 && i != count - 3; /* softmax */
        if (!runs)
            continue;
        cr_assert_gt(r->roofline_fwd_ms, 0.0, "node %d %s", i + 1, r->what);
        /* node 0's backward too: the conv's filter gradient */
        cr_assert_gt(r->roofline_bwd_ms, 0.0, "node %d %s", i + 1, r->what);
    }
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* ---- cnnkit train --profile on a tiny IDX data set ------------------------------------------ */

static void put_be32(FILE *f, uint32_t v) {
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    fwrite(b, 1, 4, f);
}

static void write_idx(const char *dir, const char *prefix, int n, uint64_t seed) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    FILE *fi = fopen(path, "wb");
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    FILE *fl = fopen(path, "wb");
    cr_assert(fi && fl);
    put_be32(fi, 0x00000803);
    put_be32(fi, (uint32_t)n);
    put_be32(fi, 8);
    put_be32(fi, 8);
    put_be32(fl, 0x00000801);
    put_be32(fl, (uint32_t)n);
    trng r = {seed};
    for (int i = 0; i < n; ++i) {
        unsigned char label = (unsigned char)(trng_u32(&r) % 3u);
        fputc(label, fl);
        for (int p = 0; p < 64; ++p)
            fputc((int)(label * 60 + trng_u32(&r) % 60u), fi);
    }
    fclose(fi);
    fclose(fl);
}

Test(profile, cli_train_profile, .timeout = 60) {
    if (access(CNNKIT_CLI_PATH, X_OK) != 0)
        cr_skip("the cnnkit binary is not here (a relocated test bundle)");
    char dir[] = "/tmp/cnnkit-profile-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    write_idx(dir, "train", 64, 1);
    write_idx(dir, "t10k", 32, 2);
    char model[600];
    snprintf(model, sizeof model, "%s/model.py", dir);
    FILE *f = fopen(model, "w");
    cr_assert_not_null(f);
    fputs(MODEL, f);
    fclose(f);
    static char out[1 << 15];
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "'%s' train '%s' --data '%s' --epochs 1 --batch 16 --device cpu --profile 2>&1",
             CNNKIT_CLI_PATH, model, dir);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", out);
    cr_assert_neq(strstr(out, "profile: 4 training steps"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "forward ms"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "conv2d"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "optimizer (adam)"), NULL, "%s", out);
    /* the roofline columns, "-" on the CPU (no peaks), and the legend that says why */
    cr_assert_neq(strstr(out, "roofline ms"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "x roofline"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "roofline: - on the CPU"), NULL, "%s", out);
    const char *line = strstr(out, "   1  conv2d");
    cr_assert_not_null(line, "%s", out);
    char row[256];
    const size_t len = strcspn(line, "\n");
    snprintf(row, sizeof row, "%.*s", (int)len, line);
    char *tok[16];
    int nt = 0;
    for (char *t = strtok(row, " "); t && nt < 16; t = strtok(NULL, " "))
        tok[nt++] = t;
    cr_assert_geq(nt, 9, "%s", line);
    for (int k = nt - 4; k < nt; ++k)
        cr_assert_str_eq(tok[k], "-", "column %d of: %.*s", k, (int)len, line);
    /* --profile belongs to train only */
    snprintf(cmd, sizeof cmd, "'%s' summary '%s' --profile >/dev/null 2>&1", CNNKIT_CLI_PATH,
             model);
    st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    const char *names[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "model.py"};
    for (int i = 0; i < 5; ++i) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* ck_model_last_step_time: nothing before a step, the arguments named; after a CPU step the
 * host part is the whole step (no device to wait for), positive and no longer than the wall
 * time the caller measured around the call; a refused step keeps the last successful one's. */
Test(profile, last_step_time) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = small_model(ctx);
    double host = -1.0, step = -1.0;
    cr_assert_eq(ck_model_last_step_time(m, &host, &step), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "no training step"), "%s",
              ck_context_last_error(ctx));
    cr_assert_eq(ck_model_last_step_time(m, NULL, &step), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "host_s"), "%s", ck_context_last_error(ctx));
    cr_assert_eq(ck_model_last_step_time(m, &host, NULL), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "step_s"), "%s", ck_context_last_error(ctx));
    enum { N = 8 };
    float x[N * 64];
    int32_t y[N];
    for (int i = 0; i < N * 64; ++i)
        x[i] = (float)(i % 13) / 13.0f;
    for (int i = 0; i < N; ++i)
        y[i] = i % 3;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    CK_OK(ctx, ck_model_train_step(m, x, y, N, NULL));
    clock_gettime(CLOCK_MONOTONIC, &b);
    const double outside = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    CK_OK(ctx, ck_model_last_step_time(m, &host, &step));
    cr_assert(step > 0.0 && step <= outside, "step %g s, measured around the call %g s", step,
              outside);
    cr_assert_eq(host, step, "the CPU waits for no device: host %g, step %g", host, step);
    y[0] = 7; /* refused: the figures stay the last successful step's */
    cr_assert_eq(ck_model_train_step(m, x, y, N, NULL), CK_STATUS_BAD_PARAM);
    double h2 = 0.0, s2 = 0.0;
    CK_OK(ctx, ck_model_last_step_time(m, &h2, &s2));
    cr_assert(h2 == host && s2 == step);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}
