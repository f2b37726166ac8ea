/* bench_bits: the bit gate of a refactor. Trains each model file for 10 CPU steps of batch 32
 * (context seed 1, 2 CPU threads, synthetic splitmix64 data), planned and unplanned, with Adam and
 * with SGD (momentum 0.9, nesterov, weight decay 1e-4), and writes into OUT, per run NAME =
 * <model>-<plan|noplan>-<adam|sgd>:
 *   NAME.ckpt  the checkpoint after the last step (ck_model_save)
 *   NAME.loss  each step's loss (hex float) and correct count
 *   NAME.pred  the raw predict() floats of 64 samples
 * A refactor that keeps the bits leaves every file byte-identical (tools/bitcheck.sh).
 *
 *   bench_bits OUT [MODEL.py ...]    (default: examples/seed_cnn.py tests/data/rewrites.py)
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "cnnkit/cnnkit.h"
#include "cnnkit/model.h"

enum { STEPS = 10, BATCH = 32, PREDICT = 64, THREADS = 2 };

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* n samples in [0, 1) and labels in [0, classes), a pure function of seed */
static void fill(float *x, int32_t *y, int n, size_t per, int classes, uint64_t seed) {
    for (size_t i = 0; i < (size_t)n * per; ++i)
        x[i] = (float)(splitmix64(&seed) >> 40) * (1.0f / 16777216.0f);
    for (int i = 0; i < n; ++i)
        y[i] = (int32_t)(splitmix64(&seed) % (uint64_t)classes);
}

static int write_all(const char *path, const void *p, size_t bytes) {
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(p, 1, bytes, f) == bytes;
    if (f && fclose(f) != 0)
        ok = 0;
    return ok;
}

/* One run; 0 on success, else a message on stderr. */
static int run(const char *out, const char *tag, const char *text, int planning, int sgd) {
    char name[512], path[600], err[1024];
    snprintf(name, sizeof name, "%s/%s-%s-%s", out, tag, planning ? "plan" : "noplan",
             sgd ? "sgd" : "adam");
    ck_context *ctx = NULL;
    ck_model *m = NULL;
    ck_optimizer_desc opt;
    ck_optimizer_desc_init(&opt, sgd ? CK_OPT_SGD : CK_OPT_ADAM);
    if (sgd) {
        opt.momentum = 0.9f;
        opt.nesterov = 1;
        opt.weight_decay = 1e-4f;
    }
    float *x = NULL, *probs = NULL;
    int32_t *y = NULL;
    FILE *lf = NULL;
    int rc = 1;
    err[0] = '\0';
    if (ck_context_create(&ctx, CK_DEVICE_CPU, 0, 1) != CK_STATUS_SUCCESS ||
        ck_context_set_cpu_threads(ctx, THREADS) != CK_STATUS_SUCCESS ||
        ck_model_from_keras_text(ctx, text, &m, err, sizeof err) != CK_STATUS_SUCCESS ||
        ck_model_set_planning(m, planning) != CK_STATUS_SUCCESS ||
        ck_model_set_optimizer(m, &opt) != CK_STATUS_SUCCESS ||
        ck_model_build(m, 0, 0, 0, BATCH) != CK_STATUS_SUCCESS)
        goto done;
    ck_layer_desc d0;
    if (ck_model_layer_desc(m, 0, &d0) != CK_STATUS_SUCCESS)
        goto done;
    const size_t per = (size_t)d0.input_h * d0.input_w * d0.input_c;
    const int classes = ck_model_num_classes(m);
    x = malloc(sizeof(float) * per * PREDICT);
    y = malloc(sizeof(int32_t) * PREDICT);
    probs = malloc(sizeof(float) * (size_t)classes * PREDICT);
    snprintf(path, sizeof path, "%s.loss", name);
    lf = fopen(path, "w");
    if (!x || !y || !probs || !lf) {
        snprintf(err, sizeof err, "out of memory or cannot write %s", path);
        goto done;
    }
    for (int s = 0; s < STEPS; ++s) {
        ck_step_result r;
        fill(x, y, BATCH, per, classes, 1000 + (uint64_t)s);
        if (ck_model_train_step(m, x, y, BATCH, &r) != CK_STATUS_SUCCESS)
            goto done;
        fprintf(lf, "%d %a %d\n", s, r.loss, r.correct);
    }
    snprintf(path, sizeof path, "%s.ckpt", name);
    if (ck_model_save(m, path) != CK_STATUS_SUCCESS)
        goto done;
    fill(x, y, PREDICT, per, classes, 7);
    if (ck_model_predict(m, x, PREDICT, probs) != CK_STATUS_SUCCESS)
        goto done;
    snprintf(path, sizeof path, "%s.pred", name);
    if (!write_all(path, probs, sizeof(float) * (size_t)classes * PREDICT)) {
        snprintf(err, sizeof err, "cannot write %s", path);
        goto done;
    }
    rc = 0;
done:
    if (lf && fclose(lf) != 0 && rc == 0) {
        snprintf(err, sizeof err, "cannot write %s.loss", name);
        rc = 1;
    }
    if (rc)
        fprintf(stderr, "bench_bits: %s: %s\n", name,
                err[0] ? err
                : ctx  ? ck_context_last_error(ctx)
                       : "cannot create a CPU context");
    free(x);
    free(y);
    free(probs);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return rc;
}

int main(int argc, char **argv) {
    static const char *defaults[] = {"examples/seed_cnn.py", "tests/data/rewrites.py"};
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: %s OUT [MODEL.py ...]\n", argv[0]);
        return 2;
    }
    const char *out = argv[1];
    const int n = argc > 2 ? argc - 2 : 2;
    const char *const *models = argc > 2 ? (const char *const *)argv + 2 : defaults;
    int rc = 0;
    for (int i = 0; i < n && !rc; ++i) {
        char *text = bench_read_file(models[i]);
        if (!text) {
            fprintf(stderr, "bench_bits: cannot read %s (run from the repository root)\n",
                    models[i]);
            return 2;
        }
        /* the tag: the file name without folder and extension */
        const char *base = strrchr(models[i], '/');
        base = base ? base + 1 : models[i];
        char tag[256];
        snprintf(tag, sizeof tag, "%.*s", (int)strcspn(base, "."), base);
        for (int planning = 1; planning >= 0 && !rc; --planning)
            for (int sgd = 0; sgd <= 1 && !rc; ++sgd)
                rc = run(out, tag, text, planning, sgd);
        free(text);
    }
    return rc;
}
