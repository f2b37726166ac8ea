/* Measurements (ck_model_measure) and the order study (ck_study_*): variant generation and exact
 * equivalences, the measured variance shift and zeroed fractions on tiny models where the answer
 * is known, the t interval, and the CLI's exit codes for check --measure and study. */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cnnkit/check.h"
#include "cnnkit/data.h"
#include "cnnkit/model.h"
#include "cnnkit/study.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static ck_keras_model parse(const char *text) {
    ck_keras_model km;
    char err[512];
    ck_status st = ck_keras_parse(text, &km, err, sizeof err);
    cr_assert_eq(st, CK_STATUS_SUCCESS, "parse: %s", err);
    return km;
}

static ck_keras_model parse_layers(const char *layers) {
    char text[4096];
    snprintf(text, sizeof text, "model = Sequential([%s])\n", layers);
    return parse(text);
}

/* n samples of h x w x c: N(0,1) (positive = 0) or uniform [0.5, 1) (positive = 1), 2 classes. */
static ck_dataset synth(int n, int h, int w, int c, int positive, uint64_t seed) {
    ck_dataset ds = {n, h, w, c, 2, NULL, NULL};
    const size_t count = (size_t)n * h * w * c;
    ds.images = (float *)malloc(sizeof(float) * count);
    ds.labels = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
    cr_assert(ds.images && ds.labels);
    trng r = {seed};
    for (size_t i = 0; i < count; ++i)
        ds.images[i] = positive ? trng_uniform(&r, 0.5f, 1.0f) : trng_normal(&r);
    for (int i = 0; i < n; ++i)
        ds.labels[i] = (int32_t)(trng_u32(&r) & 1u);
    return ds;
}

/* Builds `layers` (Keras syntax inside Sequential([...])) on ctx for h x w x c, max_batch. */
static ck_model *build(ck_context *ctx, const char *layers, int h, int w, int c, int max_batch) {
    ck_keras_model km = parse_layers(layers);
    ck_model *m = NULL;
    CK_OK(ctx, ck_model_create(ctx, &m));
    for (int i = 0; i < km.count; ++i)
        CK_OK(ctx, ck_model_add(m, &km.layers[i]));
    ck_keras_model_free(&km);
    CK_OK(ctx, ck_model_build(m, h, w, c, max_batch));
    return m;
}

/* ---- variants ------------------------------------------------------------------------------ */

Test(study, variants_of_the_seed_model_are_distinct) {
    ck_keras_model km = parse(t_seed_cnn_text);
    ck_study_variant v[CK_STUDY_KIND_COUNT];
    char err[256];
    cr_assert_eq(ck_study_variants(km.layers, km.count, NULL, 0, v, err, sizeof err),
                 CK_STATUS_SUCCESS, "%s", err);
    static const char *const want[CK_STUDY_STACK_KIND_COUNT] = {
        "2x C-B-R-C-B-R-P-D", "2x C-B-R-C-S-B-R-P", "2x C-R-B-C-R-B-P-D",
        "2x C-B-R-C-B-R-D-P", "2x C-B-R-C-B-R-P-S", "2x C-B-R-C-B-R-P"};
    for (int i = 0; i < CK_STUDY_STACK_KIND_COUNT; ++i) {
        cr_assert_str_eq(v[i].name, ck_study_kind_name(i));
        cr_assert_str_eq(v[i].order, want[i], "%s: %s", v[i].name, v[i].order);
        cr_assert_eq(v[i].equivalent_to, -1, "%s marked equivalent to %d", v[i].name,
                     v[i].equivalent_to);
        /* the dense head is untouched: Dense(512) - BN - ReLU - Dropout(0.4) - Dense(10) - softmax
         */
        cr_assert_eq(v[i].layers[v[i].count - 1].type, CK_LAYER_ACTIVATION);
        cr_assert_eq(v[i].layers[0].input_h, 28, "%s lost the input shape", v[i].name);
    }
    /* dropout-after-last-bn keeps only the head's dropout */
    int drops = 0;
    for (int k = 0; k < v[5].count; ++k)
        drops += v[5].layers[k].type == CK_LAYER_DROPOUT;
    cr_assert_eq(drops, 1);
    ck_study_variants_free(v, CK_STUDY_STACK_KIND_COUNT);
    ck_keras_model_free(&km);
}

Test(study, equivalent_variants_are_marked) {
    /* the asker's model: asker and spatial-dropout are the original itself */
    ck_keras_model km = parse_layers(
        "Conv2D(32,(3,3),input_shape=(28,28,1)), SpatialDropout2D(0.2), BatchNormalization(), "
        "Activation('relu'), MaxPooling2D((2,2)), Conv2D(64,(3,3)), SpatialDropout2D(0.2), "
        "BatchNormalization(), Activation('relu'), MaxPooling2D((2,2)), Flatten(), Dense(10), "
        "Activation('softmax')");
    ck_study_variant v[CK_STUDY_KIND_COUNT];
    char err[256];
    cr_assert_eq(ck_study_variants(km.layers, km.count, NULL, 0, v, err, sizeof err),
                 CK_STATUS_SUCCESS, "%s", err);
    cr_assert_eq(v[CK_STUDY_ASKER].equivalent_to, CK_STUDY_ORIGINAL);
    cr_assert_eq(v[CK_STUDY_SPATIAL_DROPOUT].equivalent_to, CK_STUDY_ORIGINAL);
    cr_assert_str_eq(v[CK_STUDY_ASKER].equivalence, "the same layer list");
    cr_assert_eq(v[CK_STUDY_BN_AFTER_RELU].equivalent_to, -1);
    cr_assert_str_eq(v[CK_STUDY_DROPOUT_BEFORE_POOL].order, "2x C-B-R-S-P");
    /* dropout-after-last-bn: both spatial dropouts removed, one Dropout(0.2) before Dense(10) */
    const ck_study_variant *d = &v[CK_STUDY_DROPOUT_AFTER_LAST_BN];
    cr_assert_eq(d->equivalent_to, -1);
    cr_assert_eq(d->layers[d->count - 3].type, CK_LAYER_DROPOUT);
    cr_assert_float_eq(d->layers[d->count - 3].rate, 0.2f, 1e-6);
    ck_study_variants_free(v, CK_STUDY_STACK_KIND_COUNT);

    /* with spatial dropout after the pool, dropout-before-pool is an exact reordering */
    int kinds[2] = {CK_STUDY_SPATIAL_DROPOUT, CK_STUDY_DROPOUT_BEFORE_POOL};
    ck_keras_model k2 = parse_layers(
        "Conv2D(8,(3,3),input_shape=(12,12,1)), BatchNormalization(), Activation('relu'), "
        "MaxPooling2D((2,2)), Dropout(0.3), Flatten(), Dense(2), Activation('softmax')");
    ck_study_variant w[2];
    cr_assert_eq(ck_study_variants(k2.layers, k2.count, kinds, 2, w, err, sizeof err),
                 CK_STATUS_SUCCESS, "%s", err);
    cr_assert_eq(w[1].equivalent_to, -1, "element Dropout before a max pool is not the same");
    ck_study_variants_free(w, 2);
    ck_keras_model_free(&k2);
    ck_keras_model_free(&km);
}

Test(study, canonical_forms) {
    const char *pairs[][3] = {
        /* a, b, equal? */
        {"Conv2D(4,(3,3)), SpatialDropout2D(0.2), MaxPooling2D((2,2)), Flatten(), Dense(2)",
         "Conv2D(4,(3,3)), MaxPooling2D((2,2)), SpatialDropout2D(0.2), Flatten(), Dense(2)", "1"},
        {"Conv2D(4,(3,3)), SpatialDropout2D(0.2), AveragePooling2D((2,2)), Flatten(), Dense(2)",
         "Conv2D(4,(3,3)), AveragePooling2D((2,2)), SpatialDropout2D(0.2), Flatten(), Dense(2)",
         "1"},
        {"Conv2D(4,(3,3)), Dropout(0.2), MaxPooling2D((2,2)), Flatten(), Dense(2)",
         "Conv2D(4,(3,3)), MaxPooling2D((2,2)), Dropout(0.2), Flatten(), Dense(2)", "0"},
        {"Conv2D(4,(3,3)), Dropout(0.2), Activation('relu'), Flatten(), Dense(2)",
         "Conv2D(4,(3,3),activation='relu'), Dropout(0.2), Flatten(), Dense(2)", "1"},
        {"Conv2D(4,(3,3)), Dropout(0.2), Activation('tanh'), Flatten(), Dense(2)",
         "Conv2D(4,(3,3)), Activation('tanh'), Dropout(0.2), Flatten(), Dense(2)", "0"},
        {"Conv2D(4,(3,3)), Dropout(0.0), Flatten(), Dense(2)",
         "Conv2D(4,(3,3)), Flatten(), "
         "Dense(2)",
         "1"},
        {"Conv2D(4,(3,3)), Dropout(0.2), Flatten(), Dense(2)",
         "Conv2D(4,(3,3)), Dropout(0.3), Flatten(), Dense(2)", "0"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; ++i) {
        ck_keras_model a = parse_layers(pairs[i][0]), b = parse_layers(pairs[i][1]);
        int eq = -1;
        char why[256];
        cr_assert_eq(
            ck_study_equivalent(a.layers, a.count, b.layers, b.count, &eq, why, sizeof why),
            CK_STATUS_SUCCESS);
        cr_assert_eq(eq, pairs[i][2][0] == '1', "pair %zu: %s vs %s", i, pairs[i][0], pairs[i][1]);
        if (eq)
            cr_assert(why[0], "pair %zu: no reason given", i);
        ck_keras_model_free(&a);
        ck_keras_model_free(&b);
    }
}

Test(study, variant_errors) {
    ck_keras_model km = parse_layers("Conv2D(4,(3,3)), Flatten(), Dense(2)");
    ck_study_variant v[2];
    char err[256];
    int bad[2] = {0, 99}, twice[2] = {1, 1};
    cr_assert_eq(ck_study_variants(km.layers, km.count, bad, 2, v, err, sizeof err),
                 CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(err, "kinds[1]"), NULL, "%s", err);
    cr_assert_eq(ck_study_variants(km.layers, km.count, twice, 2, v, err, sizeof err),
                 CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(err, "twice"), NULL, "%s", err);
    cr_assert_eq(ck_study_variants(NULL, 3, NULL, 0, v, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(err, "layers"), NULL, "%s", err);
    cr_assert_eq(ck_study_kind_from_name("asker"), CK_STUDY_ASKER);
    cr_assert_eq(ck_study_kind_from_name("nope"), -1);
    cr_assert_null(ck_study_kind_name(CK_STUDY_KIND_COUNT));
    cr_assert_eq(ck_study_kind_from_name("full-preact"), CK_STUDY_FULL_PREACT);
    /* a residual placement needs Adds to move around */
    const int place = CK_STUDY_BN_AFTER_ADD;
    cr_assert_eq(ck_study_variants(km.layers, km.count, &place, 1, v, err, sizeof err),
                 CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(err, "no residual unit"), NULL, "%s", err);
    ck_keras_model_free(&km);
}

/* The kernels of the weighted layers (Conv2D, Dense) of a model built on ctx, in layer order:
 * pointers into w (get_weights, Keras order), their lengths in len; returns how many. */
static int weighted_kernels(ck_context *ctx, ck_model *m, float **w, const float **k, size_t *len,
                            int max) {
    size_t nw = 0;
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, &nw));
    *w = (float *)malloc(sizeof(float) * nw);
    cr_assert_not_null(*w);
    CK_OK(ctx, ck_model_get_weights(m, *w, nw, NULL));
    size_t at = 0;
    int nk = 0, cin = 0;
    for (int i = 0; i < ck_model_num_layers(m); ++i) {
        ck_layer_desc d;
        int h, wd, c;
        CK_OK(ctx, ck_model_layer_desc(m, i, &d));
        CK_OK(ctx, ck_model_layer_shape(m, i, &h, &wd, &c));
        if (i == 0)
            cin = d.input_c;
        if (d.type == CK_LAYER_CONV2D || d.type == CK_LAYER_DENSE) {
            const size_t n = (size_t)(d.type == CK_LAYER_CONV2D ? d.kernel_h * d.kernel_w : 1) *
                             (size_t)cin * (size_t)d.units;
            cr_assert_lt(nk, max);
            k[nk] = *w + at;
            len[nk++] = n;
            at += n + (d.use_bias ? (size_t)d.units : 0);
        } else if (d.type == CK_LAYER_BATCHNORM) {
            at += 4 * (size_t)c;
        }
        cin = c;
    }
    cr_assert_eq(at, nw, "layout: %zu of %zu weights accounted for", at, nw);
    return nk;
}

/* Same seed, same initial weights: every variant's k-th weighted layer starts from the bits of
 * the original's k-th (the kernels are keyed by the weighted layer's ordinal, not by the layer
 * index, which dropout-after-last-bn shifts by removing the block dropouts). */
Test(study, variants_start_from_the_same_weights) {
    char asker[1024];
    snprintf(asker, sizeof asker, "model = Sequential([%s])\n",
             "Conv2D(32,(3,3),input_shape=(28,28,1)), SpatialDropout2D(0.2), "
             "BatchNormalization(), Activation('relu'), MaxPooling2D((2,2)), Conv2D(64,(3,3)), "
             "SpatialDropout2D(0.2), BatchNormalization(), Activation('relu'), "
             "MaxPooling2D((2,2)), Flatten(), Dense(10), Activation('softmax')");
    const char *models[2] = {t_seed_cnn_text, asker};
    for (int mi = 0; mi < 2; ++mi) {
        ck_keras_model km = parse(models[mi]);
        ck_study_variant v[CK_STUDY_KIND_COUNT];
        char err[256];
        cr_assert_eq(ck_study_variants(km.layers, km.count, NULL, 0, v, err, sizeof err),
                     CK_STATUS_SUCCESS, "%s", err);
        float *w[CK_STUDY_KIND_COUNT];
        const float *k[CK_STUDY_KIND_COUNT][16];
        size_t len[CK_STUDY_KIND_COUNT][16];
        int nk[CK_STUDY_KIND_COUNT];
        for (int i = 0; i < CK_STUDY_STACK_KIND_COUNT; ++i) {
            ck_context *ctx = NULL;
            cr_assert_eq(ck_context_create(&ctx, CK_DEVICE_CPU, 0, 7), CK_STATUS_SUCCESS);
            ck_model *m = NULL;
            CK_OK(ctx, ck_model_create(ctx, &m));
            for (int j = 0; j < v[i].count; ++j)
                CK_OK(ctx, ck_model_add(m, &v[i].layers[j]));
            CK_OK(ctx, ck_model_build(m, 0, 0, 0, 1));
            nk[i] = weighted_kernels(ctx, m, &w[i], k[i], len[i], 16);
            ck_model_destroy(m);
            ck_context_destroy(ctx);
        }
        cr_assert_geq(nk[0], 3);
        for (int i = 1; i < CK_STUDY_STACK_KIND_COUNT; ++i) {
            cr_assert_eq(nk[i], nk[0], "%s: %d weighted layers, not %d", v[i].name, nk[i], nk[0]);
            for (int j = 0; j < nk[0]; ++j) {
                cr_assert_eq(len[i][j], len[0][j], "%s: weighted layer %d has %zu weights, not %zu",
                             v[i].name, j, len[i][j], len[0][j]);
                cr_assert_eq(memcmp(k[i][j], k[0][j], sizeof(float) * len[0][j]), 0,
                             "%s: weighted layer %d starts from other weights", v[i].name, j);
            }
        }
        for (int i = 0; i < CK_STUDY_STACK_KIND_COUNT; ++i)
            free(w[i]);
        ck_study_variants_free(v, CK_STUDY_STACK_KIND_COUNT);
        ck_keras_model_free(&km);
    }
}

/* ---- statistics ---------------------------------------------------------------------------- */

Test(study, t_interval) {
    cr_assert_float_eq(ck_student_t975(1), 12.7062, 1e-4);
    cr_assert_float_eq(ck_student_t975(4), 2.7764, 1e-4);
    cr_assert_float_eq(ck_student_t975(30), 2.0423, 1e-4);
    cr_assert_float_eq(ck_student_t975(60), 2.0003, 1e-4);
    cr_assert_float_eq(ck_student_t975(120), 1.9799, 1e-4);
    cr_assert(isnan(ck_student_t975(0)));
    const double x[5] = {1, 2, 3, 4, 5};
    double mean, half, sd;
    cr_assert_eq(ck_mean_ci95(x, 5, &mean, &half, &sd), CK_STATUS_SUCCESS);
    cr_assert_float_eq(mean, 3.0, 1e-12);
    cr_assert_float_eq(sd, sqrt(2.5), 1e-12);
    cr_assert_float_eq(half, 2.7764451 * sqrt(2.5) / sqrt(5.0), 1e-6); /* 1.9632 */
    cr_assert_eq(ck_mean_ci95(x, 1, &mean, &half, NULL), CK_STATUS_SUCCESS);
    cr_assert(isnan(half));
    cr_assert_eq(ck_mean_ci95(x, 0, &mean, &half, NULL), CK_STATUS_BAD_PARAM);

    ck_study_result r[3];
    memset(r, 0, sizeof r);
    const double acc[3] = {0.90, 0.92, 0.91};
    for (int i = 0; i < 3; ++i) {
        r[i].variant = i < 2 ? 0 : 1;
        r[i].test_accuracy = acc[i];
        r[i].gap = 0.01;
        r[i].images_per_s = 100;
    }
    ck_study_summary s;
    cr_assert_eq(ck_study_summarize(r, 3, 0, &s), CK_STATUS_SUCCESS);
    cr_assert_eq(s.runs, 2);
    cr_assert_float_eq(s.acc_mean, 0.91, 1e-12);
    cr_assert_float_eq(s.acc_ci95, 12.7062047 * sqrt(0.0002) / sqrt(2.0), 1e-9);
    cr_assert_eq(ck_study_summarize(r, 3, 5, &s), CK_STATUS_SUCCESS);
    cr_assert_eq(s.runs, 0);
    cr_assert(isnan(s.acc_mean));
}

/* Paired differences, by hand: baseline 0 and variant 1 on seeds 1..3 (listed out of order, and
 * a seed 4 only the variant ran): differences +0.01, +0.02, +0.03 -> mean 0.02, sd 0.01, half
 * t(2) * 0.01 / sqrt(3) = 4.3027 * 0.005774 = 0.02484; variant 2 ran no common seed. */
Test(study, paired_differences) {
    ck_study_result r[8];
    memset(r, 0, sizeof r);
    const int var[8] = {0, 0, 0, 1, 1, 1, 1, 2};
    const uint64_t seed[8] = {1, 2, 3, 3, 1, 2, 4, 9};
    const double acc[8] = {0.80, 0.85, 0.90, 0.93, 0.81, 0.87, 0.50, 0.7};
    for (int i = 0; i < 8; ++i) {
        r[i].variant = var[i];
        r[i].seed = seed[i];
        r[i].test_accuracy = acc[i];
    }
    double m, h;
    int np;
    cr_assert_eq(ck_study_paired_diff(r, 8, 1, 0, &m, &h, &np), CK_STATUS_SUCCESS);
    cr_assert_eq(np, 3);
    cr_assert_float_eq(m, 0.02, 1e-12);
    cr_assert_float_eq(h, 4.3026527 * 0.01 / sqrt(3.0), 1e-6);
    cr_assert_eq(ck_study_paired_diff(r, 8, 2, 0, &m, &h, &np), CK_STATUS_SUCCESS);
    cr_assert_eq(np, 0);
    cr_assert(isnan(m) && isnan(h));
    cr_assert_eq(ck_study_paired_diff(r, 8, 1, 0, NULL, &h, &np), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_study_paired_diff(NULL, 8, 1, 0, &m, &h, &np), CK_STATUS_BAD_PARAM);
}

/* Tail probabilities by hand: t with 1 dof is Cauchy, P(|T| >= t) = 1 - (2/pi) atan(t); with 2
 * dof P(|T| >= t) = 1 - t / sqrt(2 + t^2); the tabled 0.975 quantiles give 0.05. */
Test(study, t_test_p_values) {
    cr_assert_float_eq(ck_student_t_p(1.0, 1), 0.5, 1e-12);
    cr_assert_float_eq(ck_student_t_p(-3.0, 1), 1.0 - 2.0 / M_PI * atan(3.0), 1e-12);
    cr_assert_float_eq(ck_student_t_p(2.0, 2), 1.0 - 2.0 / sqrt(6.0), 1e-12);
    cr_assert_float_eq(ck_student_t_p(12.7062047, 1), 0.05, 1e-8);
    cr_assert_float_eq(ck_student_t_p(2.7764451, 4), 0.05, 1e-8);
    cr_assert_float_eq(ck_student_t_p(2.0422725, 30), 0.05, 1e-8);
    cr_assert_float_eq(ck_student_t_p(0.0, 5), 1.0, 1e-12);
    cr_assert_float_eq(ck_student_t_p(INFINITY, 5), 0.0, 0.0);
    cr_assert(isnan(ck_student_t_p(1.0, 0)));
}

/* Exact tests by counting sign patterns. Sign test: 3 of 3 positive 2/8; 5 of 5 2/32; 4 of 5
 * 2 (1 + 5) / 32; zeros dropped. Wilcoxon, ranks 1..5: W+ = 10 for {1,2,3,4,-5}; of the 32
 * subsets of {1..5}, 10 have sum <= 5 and 10 sum >= 10, so P(|W+ - 7.5| >= 2.5) = 20/32. Ties
 * {1,1,1}: mid-rank 2 each, W+ in {0,2,4,6} with 1,3,3,1 patterns: all positive 2/8. */
Test(study, exact_sign_and_wilcoxon_tests) {
    const double three[3] = {0.1, 0.2, 0.3}, five[5] = {1, 2, 3, 4, 5};
    const double four_of_five[5] = {1, 2, 3, 4, -5}, zeros[3] = {0, 1, 2}, none[2] = {0, 0};
    const double tied[3] = {1, 1, 1}, tied_mixed[3] = {1, 1, -2};
    cr_assert_float_eq(ck_sign_test_p(three, 3), 0.25, 1e-15);
    cr_assert_float_eq(ck_sign_test_p(five, 5), 0.0625, 1e-15);
    cr_assert_float_eq(ck_sign_test_p(four_of_five, 5), 12.0 / 32.0, 1e-15);
    cr_assert_float_eq(ck_sign_test_p(zeros, 3), 0.5, 1e-15);
    cr_assert_float_eq(ck_sign_test_p(none, 2), 1.0, 1e-15);
    cr_assert_float_eq(ck_wilcoxon_p(three, 3), 0.25, 1e-15);
    cr_assert_float_eq(ck_wilcoxon_p(five, 5), 0.0625, 1e-15);
    cr_assert_float_eq(ck_wilcoxon_p(four_of_five, 5), 20.0 / 32.0, 1e-15);
    cr_assert_float_eq(ck_wilcoxon_p(tied, 3), 0.25, 1e-15);
    cr_assert_float_eq(ck_wilcoxon_p(tied_mixed, 3), 1.0, 1e-15, "W+ at its mean");
    cr_assert_float_eq(ck_wilcoxon_p(none, 2), 1.0, 1e-15);
    /* six of six positive: 2/64, the fewest seeds for which p < 0.05 is possible */
    const double six[6] = {6, 5, 4, 3, 2, 1};
    cr_assert_float_eq(ck_wilcoxon_p(six, 6), 2.0 / 64.0, 1e-15);
    cr_assert(isnan(ck_sign_test_p(NULL, 2)));
    /* past CK_WILCOXON_MAX_N nonzero differences: NaN (65536 wrapped the table's size and wrote
     * past it); at the limit, all positive, p is 2^(1-n), below the smallest double: 0 */
    static double many[65536];
    for (int i = 0; i < 65536; ++i)
        many[i] = 1.0 + i;
    cr_assert(isnan(ck_wilcoxon_p(many, 65536)));
    cr_assert(isnan(ck_wilcoxon_p(many, CK_WILCOXON_MAX_N + 1)));
    cr_assert_float_eq(ck_wilcoxon_p(many, CK_WILCOXON_MAX_N), 0.0, 1e-300);
    /* ties as the study computes them: a variant 11 test images (of 10,000) better on six seeds
     * and 11 worse on one, from different accuracies: the differences are 11/10000 in their
     * last bits apart (0.0011000000000001009 vs 0.0010999999999999899), one tie of 7 mid-ranks
     * 4: W+ = 24, |24 - 14| >= 10 for 0, 1, 6 or 7 positive signs, p = 16/128 (ranking them
     * apart gave 0.03125) */
    const int base[7] = {0, 997, 1994, 2991, 5982, 3988, 4985};
    double d[7];
    for (int i = 0; i < 7; ++i)
        d[i] = (double)(base[i] + (i < 6 ? 11 : -11)) / 10000.0 - (double)base[i] / 10000.0;
    cr_assert_float_eq(ck_wilcoxon_p(d, 7), 16.0 / 128.0, 1e-15);
    /* a NaN difference: no test */
    const double with_nan[3] = {0.1, NAN, 0.2};
    cr_assert(isnan(ck_wilcoxon_p(with_nan, 3)) && isnan(ck_sign_test_p(with_nan, 3)));
}

/* Holm by hand: p (0.01, 0.04, 0.03, NaN), m = 3: 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, then
 * max(0.06, 1 x 0.04) = 0.06. */
Test(study, holm_adjustment) {
    const double p[4] = {0.01, 0.04, 0.03, NAN};
    double a[4];
    cr_assert_eq(ck_holm(p, 4, a), CK_STATUS_SUCCESS);
    cr_assert_float_eq(a[0], 0.03, 1e-15);
    cr_assert_float_eq(a[1], 0.06, 1e-15);
    cr_assert_float_eq(a[2], 0.06, 1e-15);
    cr_assert(isnan(a[3]));
    const double big[2] = {0.6, 0.7};
    cr_assert_eq(ck_holm(big, 2, a), CK_STATUS_SUCCESS);
    cr_assert_float_eq(a[0], 1.0, 0.0, "capped at 1");
    cr_assert_float_eq(a[1], 1.0, 0.0);
    cr_assert_eq(ck_holm(NULL, 2, a), CK_STATUS_BAD_PARAM);
}

/* Two variants against a baseline on seeds 1..3 (t with 2 dof, by hand):
 *   variant 1: differences .01 .02 .03: t = .02 / (.01 / sqrt 3) = 3.4641, p = 1 - t / sqrt(2 +
 *     t^2) = 0.074180; interval .02 +- .02484 includes 0: no verdict;
 *   variant 2: .010 .011 .012: t = 19.053, p = 0.0027434; Holm over the two: 0.0054868 and
 *     max(0.0054868, 0.074180); the exact tests cannot go below 2/8 with three pairs (Holm:
 *     0.5): the interval excludes 0 but the result is fragile.
 * Six seeds all in favour: Wilcoxon 2/64 = 0.031 and a tiny t p: different. */
Test(study, paired_tests_holm_and_verdicts) {
    ck_study_result r[9];
    memset(r, 0, sizeof r);
    const double base[3] = {0.80, 0.85, 0.90}, d1[3] = {0.01, 0.02, 0.03},
                 d2[3] = {0.010, 0.011, 0.012};
    for (int s = 0; s < 3; ++s) {
        r[s] = (ck_study_result){.variant = 0, .seed = (uint64_t)s + 1, .test_accuracy = base[s]};
        r[3 + s] = (ck_study_result){
            .variant = 1, .seed = (uint64_t)s + 1, .test_accuracy = base[s] + d1[s]};
        r[6 + s] = (ck_study_result){
            .variant = 2, .seed = (uint64_t)s + 1, .test_accuracy = base[s] + d2[s]};
    }
    const int vars[2] = {1, 2};
    ck_paired_test t[2];
    cr_assert_eq(ck_study_paired_tests(r, 9, vars, 2, 0, t), CK_STATUS_SUCCESS);
    const double t1 = 0.02 / (0.01 / sqrt(3.0)), p1 = 1.0 - t1 / sqrt(2.0 + t1 * t1);
    const double t2 = 0.011 / (0.001 / sqrt(3.0)), p2 = 1.0 - t2 / sqrt(2.0 + t2 * t2);
    cr_assert_eq(t[0].pairs, 3);
    cr_assert_float_eq(t[0].mean, 0.02, 1e-12);
    cr_assert_float_eq(t[0].p_t, p1, 1e-6, "%g", t[0].p_t);
    cr_assert_float_eq(t[1].p_t, p2, 1e-6, "%g", t[1].p_t);
    cr_assert_float_eq(t[1].p_t_holm, 2.0 * p2, 1e-6);
    cr_assert_float_eq(t[0].p_t_holm, p1, 1e-6);
    cr_assert_float_eq(t[0].p_sign, 0.25, 1e-15);
    cr_assert_float_eq(t[1].p_wilcoxon, 0.25, 1e-15);
    cr_assert_float_eq(t[1].p_wilcoxon_holm, 0.5, 1e-15);
    cr_assert_eq(t[0].verdict, CK_PAIRED_NONE);
    cr_assert_eq(t[1].verdict, CK_PAIRED_FRAGILE);

    ck_study_result six[12];
    for (int s = 0; s < 6; ++s) {
        six[s] = (ck_study_result){.variant = 0, .seed = (uint64_t)s + 1, .test_accuracy = 0.8};
        six[6 + s] = (ck_study_result){
            .variant = 1, .seed = (uint64_t)s + 1, .test_accuracy = 0.81 + 0.001 * s};
    }
    cr_assert_eq(ck_study_paired_tests(six, 12, vars, 1, 0, t), CK_STATUS_SUCCESS);
    cr_assert_float_eq(t[0].p_wilcoxon_holm, 2.0 / 64.0, 1e-12);
    cr_assert_lt(t[0].p_t_holm, 1e-4);
    cr_assert_eq(t[0].verdict, CK_PAIRED_DIFFERENT);
    /* one pair: no test */
    cr_assert_eq(ck_study_paired_tests(six, 7, vars, 1, 0, t), CK_STATUS_SUCCESS);
    cr_assert_eq(t[0].pairs, 1);
    cr_assert(isnan(t[0].p_t) && isnan(t[0].p_t_holm));
    cr_assert_eq(t[0].verdict, CK_PAIRED_NONE);
    cr_assert_eq(ck_study_paired_tests(six, 12, NULL, 1, 0, t), CK_STATUS_BAD_PARAM);
    /* a NaN accuracy (an API caller's): every p NaN, not p = 0 for the t test, and out of Holm */
    six[7].test_accuracy = NAN;
    cr_assert_eq(ck_study_paired_tests(six, 12, vars, 1, 0, t), CK_STATUS_SUCCESS);
    cr_assert(isnan(t[0].p_t) && isnan(t[0].p_sign) && isnan(t[0].p_wilcoxon) &&
                  isnan(t[0].p_t_holm),
              "%g %g %g", t[0].p_t, t[0].p_sign, t[0].p_wilcoxon);
    cr_assert_eq(t[0].verdict, CK_PAIRED_NONE);
}

/* ---- measurements -------------------------------------------------------------------------- */

Test(study, measured_shift_of_dropout_before_bn) {
    /* Dropout(0.5) -> BN on N(0,1) data: Var_train = 2 Var_inference, ratio = p = 0.5 */
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = build(ctx,
                        "Dropout(0.5), BatchNormalization(), Flatten(), Dense(2), "
                        "Activation('softmax')",
                        8, 8, 4, 64);
    ck_dataset ds = synth(512, 8, 8, 4, 0, 7);
    ck_measurement r;
    ck_measure_options mo = {0, 4, 64, 3};
    CK_OK(ctx, ck_model_measure(m, &ds, &mo, &r));
    cr_assert_eq(r.n_bn, 1);
    cr_assert_eq(r.bn[0].layer, 1);
    cr_assert_eq(r.bn[0].channels, 4);
    /* 4 batches x 4096 values per channel: the ratio's sampling error is ~2% */
    cr_assert_float_eq(r.bn[0].ratio, 0.5, 0.05, "ratio %g", r.bn[0].ratio);
    cr_assert_float_eq(r.bn[0].var_train, 2.0, 0.15, "Var_train %g", r.bn[0].var_train);
    /* no training yet: the stored moving variance is its init 1 = Var_inference */
    cr_assert_float_eq(r.bn[0].ratio_moving, 1.0, 0.05);
    cr_assert_float_eq(r.bn[0].moving_init_weight, 1.0, 1e-12);
    cr_assert_eq(r.bn[0].dropout_layer, 0);
    cr_assert_eq(r.bn[0].direct, 1);
    /* CK001 through nothing: the ceiling p, and Eq. 8 on the measured moments (c ~ 0) ~ p */
    cr_assert_float_eq(r.bn[0].ceiling, 0.5, 1e-6);
    cr_assert_eq(r.bn[0].path, 0);
    cr_assert_eq(r.bn[0].compounded, 0);
    cr_assert_float_eq(r.bn[0].predicted, 0.5, 0.01, "predicted %g", r.bn[0].predicted);
    cr_assert_eq(r.n_dropout, 1);
    cr_assert_eq(r.dropout[0].pool_layer, -1);
    cr_assert_float_eq(r.dropout[0].zeroed, 0.5, 0.02);

    /* 20 training steps: moving var = 0.99^20 * 1 + (1 - 0.99^20) * 2 = 1.182 -> as-stored
     * ratio 1 / 1.182 = 0.846, while the converged ratio stays 0.5 */
    ck_measure_options mt = {20, 4, 64, 3};
    CK_OK(ctx, ck_model_measure(m, &ds, &mt, &r));
    cr_assert_eq(r.train_steps, 20);
    cr_assert_eq(ck_model_step(m), 20);
    cr_assert_float_eq(r.bn[0].moving_init_weight, pow(0.99, 20), 1e-6);
    cr_assert_float_eq(r.bn[0].ratio_moving, 1.0 / (pow(0.99, 20) + (1 - pow(0.99, 20)) * 2.0),
                       0.03, "as stored %g", r.bn[0].ratio_moving);
    cr_assert_float_eq(r.bn[0].ratio, 0.5, 0.05);
    ck_dataset_free(&ds);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

Test(study, measured_zeroed_fraction_after_pooling) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_dataset ds = synth(256, 8, 8, 8, 1, 11);
    ck_measure_options mo = {0, 4, 64, 5};
    ck_measurement r;
    /* element Dropout(0.5) before a 2x2 max pool of positive values: 0.5^4 = 0.0625 */
    ck_model *m = build(ctx, "Dropout(0.5), MaxPooling2D((2,2)), Flatten(), Dense(2)", 8, 8, 8, 64);
    CK_OK(ctx, ck_model_measure(m, &ds, &mo, &r));
    cr_assert_eq(r.n_dropout, 1);
    cr_assert_eq(r.dropout[0].pool_layer, 1);
    cr_assert_eq(r.dropout[0].pool_window, 4);
    cr_assert_float_eq(r.dropout[0].expected, 0.0625, 1e-12);
    cr_assert_eq(r.dropout[0].counted, 4LL * 64 * 4 * 4 * 8);
    /* 32768 pooled outputs: binomial sd 0.0013 */
    cr_assert_float_eq(r.dropout[0].zeroed, 0.0625, 0.01, "zeroed %g", r.dropout[0].zeroed);
    ck_model_destroy(m);
    /* SpatialDropout2D(0.5) through a ReLU: whole channels, 0.5 */
    m = build(ctx,
              "SpatialDropout2D(0.5), Activation('relu'), MaxPooling2D((2,2)), Flatten(), "
              "Dense(2)",
              8, 8, 8, 64);
    CK_OK(ctx, ck_model_measure(m, &ds, &mo, &r));
    cr_assert_eq(r.dropout[0].pool_layer, 2);
    cr_assert_float_eq(r.dropout[0].expected, 0.5, 1e-12);
    /* 2048 channel draws: sd 0.011 */
    cr_assert_float_eq(r.dropout[0].zeroed, 0.5, 0.05, "zeroed %g", r.dropout[0].zeroed);
    ck_model_destroy(m);
    /* through a positive Rescaling without offset (docs/derivations.md §8): counted after the
     * pool, with the same expectation; a negative one turns the max into a min: at its output */
    m = build(ctx, "Dropout(0.5), Rescaling(3.0), MaxPooling2D((2,2)), Flatten(), Dense(2)", 8, 8,
              8, 64);
    CK_OK(ctx, ck_model_measure(m, &ds, &mo, &r));
    cr_assert_eq(r.dropout[0].pool_layer, 2);
    cr_assert_float_eq(r.dropout[0].expected, 0.0625, 1e-12);
    cr_assert_float_eq(r.dropout[0].zeroed, 0.0625, 0.01, "zeroed %g", r.dropout[0].zeroed);
    ck_model_destroy(m);
    m = build(ctx, "Dropout(0.5), Rescaling(-3.0), MaxPooling2D((2,2)), Flatten(), Dense(2)", 8, 8,
              8, 64);
    CK_OK(ctx, ck_model_measure(m, &ds, &mo, &r));
    cr_assert_eq(r.dropout[0].pool_layer, -1);
    ck_model_destroy(m);
    /* after the pool: counted at the dropout's output */
    m = build(ctx, "MaxPooling2D((2,2)), Dropout(0.25), Flatten(), Dense(2)", 8, 8, 8, 64);
    CK_OK(ctx, ck_model_measure(m, &ds, &mo, &r));
    cr_assert_eq(r.dropout[0].pool_layer, -1);
    cr_assert_float_eq(r.dropout[0].zeroed, 0.25, 0.02);
    ck_model_destroy(m);
    ck_dataset_free(&ds);
    ck_context_destroy(ctx);
}

/* ---- the check's statements against measurements (docs/derivations.md §1, §2, §4) --------- */

/* n samples of h x w x c, two classes: x = mean + shared * z + own * e with z ~ N(0,1) per sample
 * (shared by all its values: positively correlated inputs) and e ~ N(0,1) per value. */
static ck_dataset synth_corr(int n, int h, int w, int c, float mean, float shared, float own,
                             uint64_t seed) {
    ck_dataset ds = synth(n, h, w, c, 0, seed);
    trng r = {seed ^ 0x5eedull};
    const size_t per = (size_t)h * w * c;
    for (int s = 0; s < n; ++s) {
        const float z = trng_normal(&r);
        for (size_t i = 0; i < per; ++i)
            ds.images[(size_t)s * per + i] = mean + shared * z + own * trng_normal(&r);
    }
    return ds;
}

/* Builds `layers` for hw x hw x 1 (max_batch 64) and measures it on ds: 16 batches of 64, no
 * training. The caller destroys the model. */
static ck_model *measured(ck_context *ctx, const char *layers, int hw, const ck_dataset *ds,
                          ck_measurement *r) {
    ck_model *m = build(ctx, layers, hw, hw, 1, 64);
    ck_measure_options mo = {0, 16, 64, 5};
    CK_OK(ctx, ck_model_measure(m, ds, &mo, r));
    return m;
}

/* CK001 through layers that commute with the mask (§1): Eq. 8 from the BN input's inference-mode
 * moments predicts the measured Var_inference/Var_train, and 1 - rate bounds it.
 *  - Conv -> ReLU -> Dropout(0.3) -> BN: ReLU outputs have c > 0, so the shift lies clearly below
 *    the ceiling 0.7. 16 x 64 samples x 64 positions per channel: over 8 channels the sampling
 *    error is well under 1% (10 draws of data, weights and masks: |ratio - predicted| <= 0.0031).
 *  - the same with Flatten before the BN: per unit, 1024 samples each, 512 units; a unit's ratio
 *    has a sampling sd of about 0.025 here and the largest of 512 lies about 3 sd above the
 *    mean, so the per-unit ceiling check gets 0.1 instead of 0.02.
 *  - SpatialDropout2D -> GlobalAveragePooling2D -> BN (a missed order): Eq. 8 on the channel
 *    means, whose c^2/v is large, so the shift is far below 1 - rate = 0.8; 1024 mask draws per
 *    channel, about 5% per channel and 2% over 8 (10 draws: |ratio - predicted| <= 0.0045).
 * Tolerance 0.02 absolute for the mean ratio in all three. */
Test(study, ck001_ceiling_and_eq8_against_measurement) {
    static const struct {
        const char *layers;
        double ceiling, below, max_tol; /* the measured ratio must be under `below` */
    } cases[3] = {
        {"Conv2D(8,(3,3)), Activation('relu'), Dropout(0.3), BatchNormalization(), Flatten(), "
         "Dense(2)",
         0.7, 0.65, 0.02},
        {"Conv2D(8,(3,3)), Activation('relu'), Dropout(0.3), Flatten(), BatchNormalization(), "
         "Dense(2)",
         0.7, 0.65, 0.1},
        {"Conv2D(8,(3,3)), Activation('relu'), SpatialDropout2D(0.2), GlobalAveragePooling2D(), "
         "BatchNormalization(), Dense(2)",
         0.8, 0.6, 0.02}};
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_dataset ds = synth(1024, 10, 10, 1, 0, 21);
    ck_measurement r;
    const ck_bn_shift *b = &r.bn[0];
    for (int k = 0; k < 3; ++k) {
        ck_model *m = measured(ctx, cases[k].layers, 10, &ds, &r);
        cr_log_info("%s: measured %.4f [%.4f, %.4f], predicted %.4f", cases[k].layers, b->ratio,
                    b->ratio_min, b->ratio_max, b->predicted);
        cr_assert_eq(b->dropout_layer, 2);
        cr_assert_eq(b->direct, 1);
        cr_assert_eq(b->path, 0);
        cr_assert_float_eq(b->ceiling, cases[k].ceiling, 1e-6);
        cr_assert_float_eq(b->ratio, b->predicted, 0.02, "%s: measured %g, Eq. 8 %g",
                           cases[k].layers, b->ratio, b->predicted);
        cr_assert_leq(b->ratio_max, b->ceiling + cases[k].max_tol,
                      "a channel above the ceiling: %g", b->ratio_max);
        cr_assert_lt(b->ratio, cases[k].below, "%s: c > 0, below the ceiling: %g", cases[k].layers,
                     b->ratio);
        ck_model_destroy(m);
    }
    /* element Dropout averaged by a pool: linear (§2), no prediction, below 1 */
    ck_model *m = measured(ctx,
                           "Conv2D(8,(3,3)), Activation('relu'), Dropout(0.3), "
                           "AveragePooling2D((2,2)), BatchNormalization(), Flatten(), Dense(2)",
                           10, &ds, &r);
    cr_log_info("ReLU -> Dropout(0.3) -> AveragePooling -> BN: measured %.4f", b->ratio);
    cr_assert_eq(b->path, 1);
    cr_assert(isnan(b->predicted) && isnan(b->ceiling));
    cr_assert(b->ratio > 0.0 && b->ratio_max < 1.0, "§2: 0 < ratio < 1, %g", b->ratio_max);
    ck_dataset_free(&ds);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* A functional model's BN measured by ck_model_measure (batch 64, 16 batches after 5 steps). */
static ck_measurement measure_text(const char *text) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_dataset ds = synth(1024, 10, 10, 1, 0, 21);
    ck_keras_model km = parse(text);
    ck_model *m = NULL;
    CK_OK(ctx, ck_model_create(ctx, &m));
    for (int i = 0; i < km.count; ++i)
        CK_OK(ctx, ck_model_add(m, &km.layers[i]));
    ck_keras_model_free(&km);
    CK_OK(ctx, ck_model_build(m, 10, 10, 1, 64));
    ck_measurement r;
    ck_measure_options mo = {0, 16, 64, 5};
    CK_OK(ctx, ck_model_measure(m, &ds, &mo, &r));
    ck_dataset_free(&ds);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return r;
}

/* --measure links a BN to the dropout the check finds past the dropout's chain: a Dropout read
 * by a BN and by a shortcut Add still feeds the BN directly (§1), so Eq. 8 predicts the measured
 * shift as in the Sequential case above (same data and tolerance). */
Test(study, measure_follows_the_graph_past_a_chain) {
    const ck_measurement r =
        measure_text("import keras\nfrom keras import layers\n"
                     "inputs = keras.Input(shape=(10, 10, 1))\n"
                     "x = layers.Conv2D(8, (3, 3), activation='relu')(inputs)\n"
                     "d = layers.Dropout(0.3)(x)\n"
                     "y = layers.BatchNormalization()(d)\n"
                     "z = layers.Add()([y, d])\n"
                     "outputs = layers.Dense(2)(layers.Flatten()(z))\n"
                     "model = keras.Model(inputs, outputs)\n");
    const ck_bn_shift *b = &r.bn[0];
    cr_log_info("graph: measured %.4f, predicted %.4f", b->ratio, b->predicted);
    cr_assert_eq(b->layer, 2);
    cr_assert_eq(b->dropout_layer, 1);
    cr_assert(b->direct && b->path == 0);
    cr_assert_float_eq(b->ceiling, 0.7, 1e-6);
    cr_assert_float_eq(b->ratio, b->predicted, 0.02, "measured %g, Eq. 8 %g", b->ratio,
                       b->predicted);
}

#define GRAPH_HEAD                                                                                 \
    "import keras\nfrom keras import layers\ninputs = keras.Input(shape=(10, 10, 1))\n"            \
    "x = layers.Conv2D(8, (3, 3), activation='relu')(inputs)\n"

/* A Concatenate places unmasked channels (ratio 1) beside the dropout's: Eq. 8 and its ceiling
 * speak of the dropout's channels, and the means run over those (over all 16 the ratio was 0.70
 * against the ceiling 0.5). A dropout on the other side of the Concatenate does not compound. */
Test(study, measure_runs_over_the_channels_the_dropout_reaches) {
    const ck_measurement r =
        measure_text(GRAPH_HEAD "d = layers.Dropout(0.5)(x)\n"
                                "y = layers.Concatenate()([d, x])\n"
                                "y = layers.BatchNormalization()(y)\n"
                                "outputs = layers.Dense(2)(layers.Flatten()(y))\n"
                                "model = keras.Model(inputs, outputs)\n");
    const ck_bn_shift *b = &r.bn[0];
    cr_log_info("concatenate: measured %.4f, predicted %.4f", b->ratio, b->predicted);
    cr_assert_eq(b->dropout_layer, 1);
    cr_assert(b->channels == 16 && b->reached == 8, "%d of %d", b->reached, b->channels);
    cr_assert(!b->compounded && b->path == 0);
    cr_assert_float_eq(b->ceiling, 0.5, 1e-6);
    cr_assert_float_eq(b->ratio, b->predicted, 0.02, "measured %g, Eq. 8 %g", b->ratio,
                       b->predicted);
    cr_assert_leq(b->ratio_max, 0.5 + 0.02);

    const ck_measurement two =
        measure_text(GRAPH_HEAD "a = layers.Dropout(0.1)(x)\n"
                                "d = layers.Dropout(0.5)(x)\n"
                                "y = layers.Concatenate()([a, d])\n"
                                "y = layers.BatchNormalization()(y)\n"
                                "outputs = layers.Dense(2)(layers.Flatten()(y))\n"
                                "model = keras.Model(inputs, outputs)\n");
    /* both dropouts are linked, each channel with its own rate: the means run over all 16, the
     * ceiling is the mean keep probability (0.9 and 0.5), and Eq. 8 per channel still predicts */
    b = &two.bn[0];
    cr_log_info("two dropouts: measured %.4f, predicted %.4f, ceiling %.4f", b->ratio, b->predicted,
                b->ceiling);
    cr_assert_eq(b->n_dropouts, 2);
    cr_assert(b->dropout_layers[0] == 1 && b->dropout_layers[1] == 2 && b->dropout_layer == 1);
    cr_assert(b->reached == 16 && !b->compounded && b->direct && b->path == 0);
    cr_assert_float_eq(b->ceiling, 0.7, 1e-6);
    cr_assert_float_eq(b->ratio, b->predicted, 0.02);
    cr_assert_leq(b->ratio, b->ceiling + 0.02);
    cr_assert_leq(b->ratio_min, 0.5 + 0.02); /* the Dropout(0.5) channels */
    cr_assert_geq(b->ratio_max, 0.5); /* the Dropout(0.1) channels: Eq. 8 near 0.9 for small c */
}

/* Compounding follows the layer graph, not the layer order: a dropout on a parallel branch
 * (earlier in the file) leaves the prediction; one whose channels the linked dropout reads
 * removes it, even when a Concatenate put them beside unmasked ones. */
Test(study, measure_compounds_along_the_graph) {
    const ck_measurement par =
        measure_text(GRAPH_HEAD "a = layers.Dropout(0.3)(x)\n"
                                "a = layers.Conv2D(4, (3, 3))(a)\n"
                                "d = layers.Dropout(0.5)(x)\n"
                                "y = layers.BatchNormalization()(d)\n"
                                "y = layers.Concatenate()([layers.Flatten()(a), "
                                "layers.Flatten()(y)])\n"
                                "outputs = layers.Dense(2)(y)\n"
                                "model = keras.Model(inputs, outputs)\n");
    const ck_bn_shift *b = &par.bn[0];
    cr_log_info("parallel: measured %.4f, predicted %.4f", b->ratio, b->predicted);
    int linked = -1; /* the layers are in Keras's order: find the dropout by its rate */
    for (int k = 0; k < par.n_dropout; ++k)
        if (par.dropout[k].layer == b->dropout_layer)
            linked = k;
    cr_assert(linked >= 0 && par.dropout[linked].rate == 0.5, "linked to layer %d",
              b->dropout_layer);
    cr_assert(!b->compounded && b->reached == 8);
    cr_assert_float_eq(b->ceiling, 0.5, 1e-6);
    cr_assert_float_eq(b->ratio, b->predicted, 0.02);

    const ck_measurement up =
        measure_text(GRAPH_HEAD "a = layers.Dropout(0.3)(x)\n"
                                "y = layers.Concatenate()([a, x])\n"
                                "d = layers.Dropout(0.5)(y)\n"
                                "y = layers.BatchNormalization()(d)\n"
                                "outputs = layers.Dense(2)(layers.Flatten()(y))\n"
                                "model = keras.Model(inputs, outputs)\n");
    b = &up.bn[0];
    cr_assert_eq(b->dropout_layer, 3);
    cr_assert(b->compounded && b->reached == 16);
    cr_assert(isnan(b->ceiling) && isnan(b->predicted));
}

/* §2 on a Dense without bias between Dropout(0.5) and BN: per unit j, with W its weights and x
 * the 16 inputs, Var_inference/Var_train = V_j / (V_j + (1/p - 1) E[sum_i W_ij^2 x_i^2]), V_j =
 * Var(sum_i W_ij x_i); computed here from the data and the weights, measured by ck_model_measure
 * (the 1024 samples once). The inputs are positively correlated (shared z) with mean 1, so units
 * whose weights mix signs have negative cross-covariance and a shift below the direct value
 * r = p v / (v + (1 - p) c^2) of a single input (v = 1.25, c = 1: 0.357): the old "between the
 * direct value and 1" is false, and CK002 no longer claims it. Tolerance: 16 x 64 samples per
 * unit, about 4% per unit and 1-2% over 16 (10 draws: |measured - §2| <= 0.013): 0.04. */
Test(study, dense_without_bias_against_measurement) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_dataset ds = synth_corr(1024, 4, 4, 1, 1.0f, 1.0f, 0.5f, 23);
    ck_measurement r;
    ck_model *m = measured(ctx,
                           "Flatten(), Dropout(0.5), Dense(16,use_bias=False), "
                           "BatchNormalization(), Dense(2)",
                           4, &ds, &r);
    const ck_bn_shift *b = &r.bn[0];
    cr_assert_eq(b->dropout_layer, 1);
    cr_assert_eq(b->direct, 0);
    cr_assert_eq(b->path, 1);
    cr_assert(isnan(b->ceiling) && isnan(b->predicted), "no Eq. 8 prediction through a Dense");
    size_t nw = 0;
    CK_OK(ctx, ck_model_get_weights(m, NULL, 0, &nw));
    float *w = (float *)malloc(sizeof(float) * nw);
    cr_assert_not_null(w);
    CK_OK(ctx, ck_model_get_weights(m, w, nw, NULL)); /* Dense kernel first: 16 x 16, [in][out] */
    const double p = 0.5, direct = p * 1.25 / (1.25 + (1 - p) * 1.0);
    double pred_mean = 0.0, pred_min = 1.0;
    for (int j = 0; j < 16; ++j) {
        double sum = 0.0, sum2 = 0.0, extra = 0.0;
        for (int s = 0; s < ds.count; ++s) {
            const float *x = ds.images + (size_t)s * 16;
            double y = 0.0;
            for (int i = 0; i < 16; ++i) {
                y += (double)w[i * 16 + j] * x[i];
                extra += (double)w[i * 16 + j] * w[i * 16 + j] * x[i] * x[i];
            }
            sum += y;
            sum2 += y * y;
        }
        const double V = sum2 / ds.count - (sum / ds.count) * (sum / ds.count);
        const double pj = V / (V + (1.0 / p - 1.0) * extra / ds.count);
        pred_mean += pj / 16;
        pred_min = fmin(pred_min, pj);
    }
    cr_log_info("Dropout -> Dense(no bias) -> BN: measured %.4f [%.4f, %.4f], predicted %.4f "
                "(min %.4f), direct %.4f",
                b->ratio, b->ratio_min, b->ratio_max, pred_mean, pred_min, direct);
    cr_assert_float_eq(b->ratio, pred_mean, 0.04, "measured %g, §2 %g", b->ratio, pred_mean);
    cr_assert_lt(b->ratio_max, 1.0);
    cr_assert_lt(pred_min, direct - 0.1, "a unit below the direct value: %g vs %g", pred_min,
                 direct);
    cr_assert_lt(b->ratio_min, direct - 0.1, "measured: %g vs %g", b->ratio_min, direct);
    free(w);
    ck_dataset_free(&ds);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* §4: the zeroed fraction after a max pool follows the window signs, not rate^n. After a ReLU
 * (Dropout -> ReLU -> MaxPooling2D, the missed order) windows hold zeros, so it is far above
 * 0.2^4 = 0.0016; on signed input (BN -> Dropout -> MaxPooling2D) whose neighbours share their
 * sign, the all-negative windows (zeroed with 1 - 0.8^4 = 0.59) lift it above the rate 0.2. The
 * measured fraction (real masks) must match the expectation from the inputs within 5 standard
 * deviations of the binomial bound sqrt(P(1-P)/N) (non-overlapping windows: independent masks). */
Test(study, zeroed_fraction_follows_window_signs) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_measure_options mo = {0, 4, 64, 5};
    const char *models[2] = {"Conv2D(8,(3,3)), Dropout(0.2), Activation('relu'), "
                             "MaxPooling2D((2,2)), Flatten(), Dense(2)",
                             "BatchNormalization(), Dropout(0.2), MaxPooling2D((2,2)), Flatten(), "
                             "Dense(2)"};
    for (int k = 0; k < 2; ++k) {
        /* k = 1: x = 0.3 e + z, z shared by the sample: windows mostly of one sign */
        ck_dataset ds =
            k == 0 ? synth(256, 10, 10, 1, 0, 24) : synth_corr(256, 8, 8, 1, 0.0f, 1.0f, 0.3f, 25);
        ck_model *m = build(ctx, models[k], k == 0 ? 10 : 8, k == 0 ? 10 : 8, 1, 64);
        ck_measurement r;
        CK_OK(ctx, ck_model_measure(m, &ds, &mo, &r));
        const ck_dropout_effect *e = &r.dropout[0];
        const double P = e->expected, sd = sqrt(P * (1.0 - P) / (double)e->counted);
        cr_log_info("%s: zeroed %.4f, expected %.4f (sd %.4f, %lld windows), rate^4 = 0.0016",
                    models[k], e->zeroed, P, sd, e->counted);
        cr_assert_eq(e->pool_layer, k == 0 ? 3 : 2);
        cr_assert_float_eq(e->zeroed, P, 5.0 * sd, "zeroed %g, expected %g", e->zeroed, P);
        cr_assert_gt(P, 10.0 * pow(0.2, 4), "rate^4 would be 0.0016: %g", P);
        if (k == 1)
            cr_assert_gt(P, 0.2, "signed input: more than the rate, %g", P);
        ck_model_destroy(m);
        ck_dataset_free(&ds);
    }
    ck_context_destroy(ctx);
}

Test(study, measure_errors_name_the_argument) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m =
        build(ctx, "Dropout(0.5), BatchNormalization(), Flatten(), Dense(2)", 4, 4, 2, 16);
    ck_dataset ds = synth(32, 4, 4, 2, 0, 1), other = synth(32, 5, 4, 2, 0, 1);
    ck_measurement r;
    cr_assert_eq(ck_model_measure(m, NULL, NULL, &r), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "data"), NULL);
    cr_assert_eq(ck_model_measure(m, &other, NULL, &r), CK_STATUS_SHAPE_MISMATCH);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "5x4x2"), NULL, "%s",
                  ck_context_last_error(ctx));
    ck_measure_options big = {0, 1, 17, 0};
    cr_assert_eq(ck_model_measure(m, &ds, &big, &r), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(ck_context_last_error(ctx), "opts->batch"), NULL);
    CK_OK(ctx, ck_model_measure(m, &ds, NULL, &r));
    cr_assert_eq(r.batch, 16);
    cr_assert_eq(r.batches, 4);
    ck_dataset_free(&ds);
    ck_dataset_free(&other);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* ---- CLI ------------------------------------------------------------------------------------ */

static int have_fashion(void) {
    return access(CK_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) == 0 ||
           access(CK_FASHION_MNIST_DIR "/train-images-idx3-ubyte", R_OK) == 0;
}

static char out[1 << 16];

Test(study, cli_usage_errors_exit_2) {
    cr_assert_eq(t_run_cli("study examples/seed_cnn.py --variants bogus", out, sizeof out), 2, "%s",
                 out);
    cr_assert_neq(strstr(out, "bogus"), NULL, "%s", out);
    /* an empty list is not "all", a variant is not trained twice */
    cr_assert_eq(t_run_cli("study examples/seed_cnn.py --variants ''", out, sizeof out), 2);
    cr_assert_eq(
        t_run_cli("study examples/seed_cnn.py --variants asker,original,asker", out, sizeof out), 2,
        "%s", out);
    cr_assert_neq(strstr(out, "'asker' is listed twice"), NULL, "%s", out);
    /* --seed 0 ran seeds 1.. while the header said 0..: refused */
    cr_assert_eq(t_run_cli("study examples/seed_cnn.py --seed 0", out, sizeof out), 2);
    cr_assert_neq(strstr(out, "--seed is the first of the seeds, 1 or more"), NULL, "%s", out);
    /* an output on the model file or on the other output: refused before anything is written
     * (--csv MODEL replaced the model with the CSV, exit 0) */
    char dir[] = "/tmp/cnnkit-study-out-XXXXXX", model[96], args[320];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(model, sizeof model, "%s/m.py", dir);
    size_t n;
    char *text = t_read_file(t_src("examples/seed_cnn.py"), &n);
    FILE *f = fopen(model, "wb");
    cr_assert(f && fwrite(text, 1, n, f) == n);
    fclose(f);
    snprintf(args, sizeof args, "study %s --csv %s", model, model);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 2, "%s", out);
    cr_assert_neq(strstr(out, "MODEL and --csv are the same file"), NULL, "%s", out);
    size_t n2;
    char *after = t_read_file(model, &n2);
    cr_assert(n2 == n && memcmp(after, text, n) == 0, "the model file changed");
    snprintf(args, sizeof args, "study %s --csv %s/o --svg %s/o", model, dir, dir);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 2, "%s", out);
    cr_assert_neq(strstr(out, "--csv and --svg are the same file"), NULL, "%s", out);
    free(text);
    free(after);
    unlink(model);
    rmdir(dir);
    cr_assert_eq(t_run_cli("study /nonexistent/model.py", out, sizeof out), 2, "%s", out);
    cr_assert_eq(t_run_cli("study examples/seed_cnn.py --seeds 0", out, sizeof out), 2);
    cr_assert_eq(t_run_cli("check examples/seed_cnn.py --seeds 3", out, sizeof out), 2, "%s", out);
    cr_assert_eq(t_run_cli("train examples/seed_cnn.py --measure", out, sizeof out), 2, "%s", out);
    cr_assert_eq(t_run_cli("study", out, sizeof out), 2);
    cr_assert_eq(t_run_cli("check --measure /nonexistent/model.py", out, sizeof out), 2);
}

Test(study, cli_runtime_errors_exit_1) {
    cr_assert_eq(
        t_run_cli("check --measure examples/seed_cnn.py --data /nonexistent", out, sizeof out), 1,
        "%s", out);
    cr_assert_neq(strstr(out, "/nonexistent"), NULL, "%s", out);
    cr_assert_eq(t_run_cli("study examples/seed_cnn.py --data /nonexistent", out, sizeof out), 1,
                 "%s", out);
}

Test(study, cli_check_measure, .timeout = 120) {
    if (!have_fashion())
        cr_skip("Fashion-MNIST is not installed (dataset-fashion-mnist)");
    cr_assert_eq(
        t_run_cli("check --measure examples/seed_cnn.py --batches 2 --batch 32 --limit 256", out,
                  sizeof out),
        0, "%s", out);
    cr_assert_neq(strstr(out, "converged"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "zeroed"), NULL, "%s", out);
    cr_assert_eq(
        t_run_cli("check examples/asker_proposal.py --measure --json --batches 1 --batch 32 "
                  "--limit 128",
                  out, sizeof out),
        1, "%s", out);
    cr_assert_neq(strstr(out, "\"measurement\": {"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "\"ratio_moving\""), NULL, "%s", out);
}

/* A Concatenate of two dropped branches: the text names both dropouts, the JSON lists them. */
Test(study, cli_check_measure_names_every_dropout, .timeout = 120) {
    if (!have_fashion())
        cr_skip("Fashion-MNIST is not installed (dataset-fashion-mnist)");
    char path[] = "/tmp/cnnkit-two-drops-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    const char *text = "import keras\nfrom keras import layers\n"
                       "inputs = keras.Input(shape=(28, 28, 1))\n"
                       "x = layers.Conv2D(4, (3, 3), activation='relu')(inputs)\n"
                       "a = layers.Dropout(0.1)(x)\nd = layers.Dropout(0.5)(x)\n"
                       "y = layers.BatchNormalization()(layers.Concatenate()([a, d]))\n"
                       "outputs = layers.Dense(10, activation='softmax')(layers.Flatten()(y))\n"
                       "model = keras.Model(inputs, outputs)\n";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char args[256];
    snprintf(args, sizeof args, "check --measure %s --batches 1 --batch 32 --limit 128", path);
    const int rc = t_run_cli(args, out, sizeof out);
    cr_assert_neq(strstr(out, "CK001: dropout layers 1 and 2 reach it"), NULL, "%s", out);
    snprintf(args, sizeof args, "check --measure --json %s --batches 1 --batch 32 --limit 128",
             path);
    cr_assert_eq(t_run_cli(args, out, sizeof out), rc, "%s", out);
    unlink(path);
    cr_assert_neq(strstr(out, "\"dropout_layer\": 1, \"dropout_layers\": [1, 2]"), NULL, "%s", out);
}

Test(study, cli_study_tiny, .timeout = 180) {
    if (!have_fashion())
        cr_skip("Fashion-MNIST is not installed (dataset-fashion-mnist)");
    char csv[] = "/tmp/cnnkit-study-XXXXXX";
    int fd = mkstemp(csv);
    cr_assert_geq(fd, 0);
    close(fd);
    char svg[64];
    snprintf(svg, sizeof svg, "%s.svg", csv);
    char args[512];
    snprintf(args, sizeof args,
             "study examples/asker_proposal.py --variants original,asker --seeds 2 --limit 128 "
             "--test-limit 64 --batch 32 --epochs 1 --measure-batches 1 --device cpu --csv %s "
             "--svg %s",
             csv, svg);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 0, "%s", out);
    cr_assert_neq(strstr(out, "= original exactly"), NULL, "equivalence not reported: %s", out);
    cr_assert_neq(strstr(out, "| original |"), NULL, "%s", out);
    /* one trained variant: nothing to pair it with, so no paired table */
    cr_assert_eq(strstr(out, "Paired with"), NULL, "%s", out);
    FILE *f = fopen(csv, "r");
    cr_assert_not_null(f);
    char line[1024];
    int lines = 0;
    while (fgets(line, sizeof line, f))
        ++lines;
    fclose(f);
    cr_assert_eq(lines, 3, "header + 2 seeds of one trained variant, got %d lines", lines);
    f = fopen(svg, "r");
    cr_assert_not_null(f);
    size_t n = fread(line, 1, sizeof line - 1, f);
    line[n] = '\0';
    fclose(f);
    cr_assert_neq(strstr(line, "<svg"), NULL);
    unlink(csv);
    unlink(svg);
}

/* Two trained variants over two seeds: the paired table (with Holm-adjusted and exact p-values)
 * follows the summary, one row for the second variant with its two pairs. */
Test(study, cli_study_paired_table, .timeout = 180) {
    if (!have_fashion())
        cr_skip("Fashion-MNIST is not installed (dataset-fashion-mnist)");
    cr_assert_eq(t_run_cli("study examples/seed_cnn.py --variants original,spatial-dropout "
                           "--seeds 2 --limit 64 --test-limit 32 --batch 32 --epochs 1 "
                           "--measure-batches 1 --device cpu",
                           out, sizeof out),
                 0, "%s", out);
    const char *p = strstr(out, "Paired with original (same seed");
    cr_assert_not_null(p, "%s", out);
    cr_assert_neq(strstr(p, "| spatial-dropout | 2 | "), NULL, "%s", out);
    cr_assert_neq(strstr(p, "| Holm t p |"), NULL, "%s", out);
    /* two seeds: the exact tests cannot go below 2^(1-2) = 0.5, so no verdict is "different" */
    cr_assert_eq(strstr(p, "| different |"), NULL, "%s", out);
}

/* A post-activation ResNet is studied by its residual placements: named ones run with their
 * unit written out; a stack variant is a usage error naming the graph. */
Test(study, cli_study_residual_placements, .timeout = 180) {
    if (!have_fashion())
        cr_skip("Fashion-MNIST is not installed (dataset-fashion-mnist)");
    cr_assert_eq(t_run_cli("study examples/resnet20_v1.py --variants original,full-preact "
                           "--seeds 1 --limit 32 --test-limit 16 --batch 16 --epochs 1 "
                           "--measure-batches 1 --device cpu",
                           out, sizeof out),
                 0, "%s", out);
    cr_assert_neq(strstr(out, "| full-preact | 9x B-R-C-B-R-C + x | 1 |"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "| original | 9x C-B-R-C-B + x, R | 1 |"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "residual units"), NULL, "%s", out);
    cr_assert_eq(t_run_cli("study examples/resnet20_v1.py --variants original,asker --seeds 1 "
                           "--limit 32 --test-limit 16",
                           out, sizeof out),
                 2, "%s", out);
    cr_assert_neq(strstr(out, "'asker'"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "graph"), NULL, "%s", out);
}
