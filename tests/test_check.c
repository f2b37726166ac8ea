/* Model check (ck_model_check, cnnkit check): each rule fires on a minimal model and not on its
 * corrected version, the numbers behind the findings, the seed model of the question (no
 * warnings or errors), the asker's proposal (the variance-shift warning), cap and NULL handling,
 * and the CLI's exit codes and JSON. */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cnnkit/check.h"
#include "cnnkit/model.h"

#define MAXF 64

typedef struct result {
    ck_finding f[MAXF];
    int n;
    int count[3];
} result;

/* A reason cites the derivation in the repository or a paper. */
static int cites_source(const char *reason) {
    return strstr(reason, "docs/derivations.md §") || strstr(reason, "arXiv:") ||
           strstr(reason, "Ioffe & Szegedy");
}

/* Parses `layers` (the inside of Sequential([...])) and checks it. */
static void check_layers(const char *layers, result *r) {
    char text[4096], err[512];
    snprintf(text, sizeof text, "model = Sequential([%s])\n", layers);
    ck_keras_model km;
    ck_status st = ck_keras_parse(text, &km, err, sizeof err);
    cr_assert_eq(st, CK_STATUS_SUCCESS, "parse %s: %s", layers, err);
    memset(r, 0, sizeof *r);
    st = ck_model_check(km.layers, km.count, r->f, MAXF, &r->n);
    ck_keras_model_free(&km);
    cr_assert_eq(st, CK_STATUS_SUCCESS);
    cr_assert_leq(r->n, MAXF);
    for (int i = 0; i < r->n; ++i) {
        cr_assert(r->f[i].severity >= 0 && r->f[i].severity <= 2);
        r->count[r->f[i].severity]++;
        cr_assert(r->f[i].message[0] && r->f[i].reason[0] && r->f[i].fix[0], "%s empty text",
                  r->f[i].code);
        cr_assert(cites_source(r->f[i].reason), "%s: the reason cites no source: %s", r->f[i].code,
                  r->f[i].reason);
        cr_assert_lt(strlen(r->f[i].reason), sizeof r->f[i].reason - 1, "%s: reason cut: %s",
                     r->f[i].code, r->f[i].reason);
    }
}

/* Index of the first finding whose code starts with `code` ("CK001"), or -1. */
static int find(const result *r, const char *code) {
    for (int i = 0; i < r->n; ++i)
        if (strncmp(r->f[i].code, code, strlen(code)) == 0)
            return i;
    return -1;
}

/* Asserts `code` fires on `bad` with `sev` and not on `good`; returns the finding on bad. */
static ck_finding fires(const char *code, int sev, const char *bad, const char *good) {
    result r;
    check_layers(bad, &r);
    int i = find(&r, code);
    cr_assert_geq(i, 0, "%s does not fire on %s", code, bad);
    cr_assert_eq(r.f[i].severity, sev, "%s severity %d", code, r.f[i].severity);
    ck_finding f = r.f[i];
    if (good) {
        check_layers(good, &r);
        int j = find(&r, code);
        cr_assert_eq(j, -1, "%s fires on the corrected %s: %s", code, good,
                     j >= 0 ? r.f[j].message : "");
    }
    return f;
}

Test(check, bad_params) {
    ck_layer_desc d[2];
    ck_layer_desc_init(&d[0], CK_LAYER_DENSE);
    ck_layer_desc_init(&d[1], CK_LAYER_DROPOUT);
    ck_finding f[2];
    int n = 7;
    cr_assert_eq(ck_model_check(NULL, 2, f, 2, &n), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_check(d, -1, f, 2, &n), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_check(d, 2, f, 2, NULL), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_check(d, 2, NULL, 2, &n), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_check(d, 2, f, -1, &n), CK_STATUS_BAD_PARAM);
    d[1].type = (ck_layer_type)99;
    cr_assert_eq(ck_model_check(d, 2, f, 2, &n), CK_STATUS_BAD_PARAM);
    cr_assert_eq(n, 7, "n_found untouched on failure");
    /* a layer graph's links, which the graph walks follow: earlier layers only, as build's */
    d[1].type = CK_LAYER_DROPOUT;
    d[1].num_inputs = 1;
    const int bad_in[3] = {1, 100000, -2};
    for (int k = 0; k < 3; ++k) {
        d[1].inputs[0] = bad_in[k];
        cr_assert_eq(ck_model_check(d, 2, f, 2, &n), CK_STATUS_BAD_PARAM, "input %d", bad_in[k]);
        cr_assert(strstr(ck_context_last_error(NULL), "layers[1].inputs[0]"), "%s",
                  ck_context_last_error(NULL));
    }
    d[1].num_inputs = CK_MAX_LAYER_INPUTS + 1;
    cr_assert_eq(ck_model_check(d, 2, f, 2, &n), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(NULL), "num_inputs"), "%s", ck_context_last_error(NULL));
    d[1].num_inputs = 0;
    cr_assert_eq(ck_model_check(NULL, 0, NULL, 0, &n), CK_STATUS_SUCCESS);
    cr_assert_eq(n, 0);
    cr_assert_str_eq(ck_severity_name(CK_SEVERITY_INFO), "info");
    cr_assert_str_eq(ck_severity_name(CK_SEVERITY_WARNING), "warning");
    cr_assert_str_eq(ck_severity_name(CK_SEVERITY_ERROR), "error");
    cr_assert_null(ck_severity_name(3));
    cr_assert_null(ck_severity_name(-1));
}

/* CK001's value is the ceiling 1 - rate of Eq. 8 (docs/derivations.md §1), not the expected
 * shift: the reason gives the formula, and after a ReLU the lower Eq. 8 value of ReLU(N(0,1)). */
Test(check, dropout_before_bn_variance_shift) {
    ck_finding f = fires("CK001", CK_SEVERITY_WARNING,
                         "Conv2D(8,(3,3)), Activation('relu'), Dropout(0.2), BatchNormalization(),"
                         "Flatten(), Dense(10)",
                         "Conv2D(8,(3,3)), BatchNormalization(), Activation('relu'), Dropout(0.2),"
                         "Flatten(), Dense(10)");
    cr_assert_float_eq(f.value, 0.8, 1e-6, "%f", f.value);
    cr_assert_eq(f.nlayers, 2);
    cr_assert_eq(f.layers[0], 2);
    cr_assert_eq(f.layers[1], 3);
    cr_assert_neq(strstr(f.reason, "<= 1-rate = 0.800"), NULL, "%s", f.reason);
    /* ReLU(N(0,1)): c = 0.3989, v = 0.3408: 0.8 v / (v + 0.2 c^2) = 0.7317 */
    cr_assert_neq(strstr(f.reason, "0.732 for ReLU(N(0,1))"), NULL, "%s", f.reason);
    cr_assert_neq(strstr(f.fix, "BatchNormalization() -> Dropout(0.2)"), NULL, "%s", f.fix);
    f = fires("CK001", CK_SEVERITY_WARNING,
              "Conv2D(8,(3,3)), SpatialDropout2D(0.3), BatchNormalization(), Flatten(), Dense(10)",
              NULL);
    cr_assert_float_eq(f.value, 0.7, 1e-6);
    cr_assert_eq(strstr(f.reason, "ReLU(N(0,1))"), NULL, "no ReLU before it: %s", f.reason);
    /* the Conv2D's inline ReLU counts as the ReLU */
    f = fires("CK001", CK_SEVERITY_WARNING,
              "Conv2D(8,(3,3),activation='relu'), Dropout(0.2), BatchNormalization(), Flatten(),"
              "Dense(10)",
              NULL);
    cr_assert_neq(strstr(f.reason, "ReLU(N(0,1))"), NULL, "%s", f.reason);
}

/* Every layer without weights between a dropout and a BN is followed (§1-3): the orders the
 * check used to miss or misjudge, each with the kind of path it is. */
Test(check, dropout_reaches_bn_through_any_layer_without_weights) {
    /* SpatialDropout2D -> GlobalAveragePooling2D -> BN: one scale per channel commutes with the
     * average, so Eq. 8 holds on the channel means and 1 - rate is its ceiling */
    ck_finding f = fires("CK001", CK_SEVERITY_WARNING,
                         "Conv2D(8,(3,3)), SpatialDropout2D(0.2), GlobalAveragePooling2D(), "
                         "BatchNormalization(), Dense(10)",
                         "Conv2D(8,(3,3)), GlobalAveragePooling2D(), BatchNormalization(), "
                         "Dropout(0.2), Dense(10)");
    cr_assert_eq(f.layers[0], 1);
    cr_assert_eq(f.layers[1], 3);
    cr_assert_float_eq(f.value, 0.8, 1e-6);
    /* Flatten only renames units: Eq. 8 */
    f = fires("CK001", CK_SEVERITY_WARNING,
              "Conv2D(8,(3,3)), Dropout(0.2), Flatten(), BatchNormalization(), Dense(10)", NULL);
    cr_assert_float_eq(f.value, 0.8, 1e-6);
    /* SpatialDropout2D through ReLU, max and average pooling: still Eq. 8 */
    f = fires("CK001", CK_SEVERITY_WARNING,
              "Conv2D(8,(3,3)), SpatialDropout2D(0.25), Activation('relu'), MaxPooling2D((2,2)), "
              "AveragePooling2D((2,2)), BatchNormalization(), Flatten(), Dense(10)",
              NULL);
    cr_assert_float_eq(f.value, 0.75, 1e-6);
    /* element Dropout averaged by a pool or GAP: linear (§2), no ceiling */
    const char *linear[] = {
        "Conv2D(8,(3,3)), Dropout(0.2), AveragePooling2D((2,2)), BatchNormalization(), Flatten(), "
        "Dense(10)",
        "Conv2D(8,(3,3)), Dropout(0.2), GlobalAveragePooling2D(), BatchNormalization(), Dense(10)"};
    for (int i = 0; i < 2; ++i) {
        f = fires("CK001", CK_SEVERITY_WARNING, linear[i], NULL);
        cr_assert(isnan(f.value), "%s: value %g", linear[i], f.value);
        cr_assert_neq(strstr(f.reason, "§2"), NULL, "%s", f.reason);
        cr_assert_neq(strstr(f.reason, "do not apply"), NULL, "%s", f.reason);
    }
    /* element Dropout max-pooled, or a non-homogeneous activation: nonlinear (§3) */
    const char *nonlinear[] = {"Conv2D(8,(3,3)), Dropout(0.2), MaxPooling2D((2,2)), Flatten(), "
                               "BatchNormalization(), Dense(10)",
                               "Dense(8), Dropout(0.2), Activation('tanh'), BatchNormalization(), "
                               "Dense(10)"};
    for (int i = 0; i < 2; ++i) {
        f = fires("CK001", CK_SEVERITY_WARNING, nonlinear[i], NULL);
        cr_assert(isnan(f.value), "%s: value %g", nonlinear[i], f.value);
        cr_assert_neq(strstr(f.reason, "§3"), NULL, "%s", f.reason);
    }
    /* a softmax or another dropout ends the walk; a rate-0 dropout does not */
    result r;
    check_layers("Dense(8), Dropout(0.2), Activation('softmax'), BatchNormalization(), Dense(10)",
                 &r);
    cr_assert_eq(find(&r, "CK001"), -1);
    f = fires("CK001", CK_SEVERITY_WARNING,
              "Dense(8), Dropout(0.2), Dropout(0.0), BatchNormalization(), Dense(10)", NULL);
    cr_assert_eq(f.layers[0], 1);
}

/* An earlier dropout shifts the next dropout's input: the ceiling does not hold (§1), so the
 * asker's second block gets no value. */
Test(check, compounding_dropouts_have_no_ceiling) {
    result r;
    check_layers("Conv2D(8,(3,3)), SpatialDropout2D(0.2), BatchNormalization(), Activation('relu'),"
                 "Conv2D(8,(3,3)), SpatialDropout2D(0.2), BatchNormalization(), Flatten(), "
                 "Dense(10)",
                 &r);
    int n = 0;
    for (int i = 0; i < r.n; ++i) {
        if (strncmp(r.f[i].code, "CK001", 5))
            continue;
        ++n;
        if (r.f[i].layers[0] == 1) {
            cr_assert_float_eq(r.f[i].value, 0.8, 1e-6);
        } else {
            cr_assert(isnan(r.f[i].value), "value %g", r.f[i].value);
            cr_assert_neq(strstr(r.f[i].reason, "the dropout at layer 1 already shifts"), NULL,
                          "%s", r.f[i].reason);
        }
    }
    cr_assert_eq(n, 2);
}

/* CK002 states no bound: through linear layers the formula of §2 (a Dense without bias, too),
 * through a nonlinear layer none. Its value is the number of weight layers between. */
Test(check, dropout_weight_bn_is_info) {
    const char *m = "Conv2D(8,(3,3)), Activation('relu'), Dropout(0.2), Conv2D(8,(3,3)),"
                    "BatchNormalization(), Activation('relu'), Flatten(), Dense(10)";
    ck_finding f = fires("CK002", CK_SEVERITY_INFO, m, NULL);
    cr_assert_float_eq(f.value, 1.0, 0.0);
    cr_assert_eq(strstr(f.message, "small"), NULL, "%s", f.message);
    cr_assert_neq(strstr(f.reason, "no bound"), NULL, "%s", f.reason);
    cr_assert_neq(strstr(f.reason, "§2"), NULL, "%s", f.reason);
    result r;
    check_layers(m, &r);
    cr_assert_eq(find(&r, "CK001"), -1);
    cr_assert_eq(r.count[CK_SEVERITY_WARNING] + r.count[CK_SEVERITY_ERROR], 0);
    f = fires("CK002", CK_SEVERITY_INFO,
              "Flatten(), Dropout(0.2), Dense(16,use_bias=False), BatchNormalization(), Dense(10)",
              NULL);
    cr_assert_neq(strstr(f.reason, "through linear layers only"), NULL, "%s", f.reason);
    f = fires("CK002", CK_SEVERITY_INFO,
              "Flatten(), Dropout(0.2), Dense(16), Activation('relu'), Dense(16), "
              "BatchNormalization(), Dense(10)",
              NULL);
    cr_assert_float_eq(f.value, 2.0, 0.0);
    cr_assert_neq(strstr(f.reason, "Activation (layer 3) between is nonlinear"), NULL, "%s",
                  f.reason);
}

/* Applies a CK001/CK002 fix of the form "remove layer D" or "move layer D (...) after ...
 * (layer A)" to the layer list (in place); returns 0 when the text has neither form. */
static int apply_fix(const char *fix, ck_layer_desc *L, int *count) {
    const char *p = strstr(fix, "remove layer ");
    int d = -1, a = -1;
    if (p && sscanf(p, "remove layer %d", &d) == 1) {
        memmove(&L[d], &L[d + 1], sizeof *L * (size_t)(*count - d - 1));
        --*count;
        return 1;
    }
    p = strstr(fix, "move layer ");
    const char *q = p ? strrchr(fix, '(') : NULL;
    if (!p || !q || sscanf(p, "move layer %d", &d) != 1 || sscanf(q, "(layer %d)", &a) != 1)
        return 0;
    ck_layer_desc moved = L[d];
    memmove(&L[d], &L[d + 1], sizeof *L * (size_t)(a - d));
    L[a] = moved;
    return 1;
}

/* Li et al.'s fix (i), as CK002 words it, removes every CK001/CK002 when applied and re-checked:
 * on the seed model (a dropout already follows the last BN: remove the block dropouts) and on a
 * model without one (move the dropout after the last BN and its activation). */
Test(check, ck002_fix_removes_the_shift) {
    char err[512];
    const char *texts[2] = {t_seed_cnn_text,
                            "model = Sequential([Conv2D(8,(3,3),input_shape=(12,12,1)), "
                            "Activation('relu'), Dropout(0.2), Conv2D(8,(3,3)), "
                            "BatchNormalization(), Activation('relu'), Flatten(), Dense(10)])\n"};
    for (int t = 0; t < 2; ++t) {
        ck_keras_model km;
        cr_assert_eq(ck_keras_parse(texts[t], &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
        ck_layer_desc L[64];
        int n = km.count, fixes = 0;
        memcpy(L, km.layers, sizeof *L * (size_t)n);
        ck_keras_model_free(&km);
        for (int round = 0; round < 8; ++round) {
            ck_finding f[MAXF];
            int nf = 0, applied = 0;
            cr_assert_eq(ck_model_check(L, n, f, MAXF, &nf), CK_STATUS_SUCCESS);
            for (int i = 0; i < nf && !applied; ++i)
                if (!strncmp(f[i].code, "CK002", 5)) {
                    cr_assert(apply_fix(f[i].fix, L, &n), "fix not applicable: %s", f[i].fix);
                    applied = 1;
                    ++fixes;
                }
            if (!applied) {
                for (int i = 0; i < nf; ++i)
                    cr_assert(strncmp(f[i].code, "CK001", 5) && strncmp(f[i].code, "CK002", 5),
                              "model %d after %d fixes: %s %s", t, fixes, f[i].code, f[i].message);
                break;
            }
        }
        cr_assert_eq(fixes, t == 0 ? 2 : 1, "model %d: %d fixes", t, fixes);
    }
}

Test(check, dropout_before_maxpool) {
    ck_finding f = fires("CK003", CK_SEVERITY_WARNING,
                         "Conv2D(8,(3,3)), Activation('relu'), Dropout(0.2), MaxPooling2D((2,2)),"
                         "Flatten(), Dense(10)",
                         "Conv2D(8,(3,3)), Activation('relu'), MaxPooling2D((2,2)), Dropout(0.2),"
                         "Flatten(), Dense(10)");
    cr_assert_float_eq(f.value, 1.248, 0.001, "%f", f.value);
    cr_assert_neq(strstr(f.reason, "0.0016"), NULL, "%s", f.reason);
    cr_assert_neq(strstr(f.fix, "SpatialDropout2D(0.2) -> MaxPooling2D((2,2))"), NULL, "%s", f.fix);
    f = fires("CK003", CK_SEVERITY_WARNING,
              "Conv2D(8,(3,3)), Dropout(0.5), MaxPooling2D((3,3)), Flatten(), Dense(10)", NULL);
    cr_assert_float_eq(f.value, 1.99609375, 1e-6);
}

/* The orders of the same kind the check used to miss: Dropout -> ReLU -> MaxPooling2D is
 * Dropout -> MaxPooling2D (CK005: the two commute); on signed input the reason names the
 * all-negative windows (1 - 0.8^4 = 0.590 at rate 0.2, §4). */
Test(check, dropout_before_maxpool_through_activations) {
    ck_finding f = fires("CK003", CK_SEVERITY_WARNING,
                         "Conv2D(8,(3,3)), Dropout(0.2), Activation('relu'), MaxPooling2D((2,2)),"
                         "Flatten(), Dense(10)",
                         "Conv2D(8,(3,3)), Activation('relu'), MaxPooling2D((2,2)), Dropout(0.2),"
                         "Flatten(), Dense(10)");
    cr_assert_float_eq(f.value, 1.248, 0.001);
    cr_assert_eq(f.layers[1], 3);
    cr_assert_neq(strstr(f.message, "through relu (layer 2)"), NULL, "%s", f.message);
    cr_assert_neq(strstr(f.reason, "rate^4 = 0.0016 only when all 4 are"), NULL, "%s", f.reason);
    f = fires("CK003", CK_SEVERITY_WARNING,
              "Conv2D(8,(3,3)), Dropout(0.2), Activation('tanh'), MaxPooling2D((2,2)), Flatten(), "
              "Dense(10)",
              NULL);
    f = fires("CK003", CK_SEVERITY_WARNING,
              "Conv2D(8,(3,3)), BatchNormalization(), Dropout(0.2), MaxPooling2D((2,2)), "
              "Flatten(), Dense(10)",
              NULL);
    cr_assert_neq(strstr(f.reason, "all negative"), NULL, "%s", f.reason);
    cr_assert_neq(strstr(f.reason, "1-(1-rate)^4 = 0.590"), NULL, "%s", f.reason);
    /* sigmoid(0) = 0.5: a dropped unit is not 0 after it, so it is not this rule */
    result r;
    check_layers("Conv2D(8,(3,3)), Dropout(0.2), Activation('sigmoid'), MaxPooling2D((2,2)), "
                 "Flatten(), Dense(10)",
                 &r);
    cr_assert_eq(find(&r, "CK003"), -1);
    /* SpatialDropout2D through a ReLU commutes with the pool too */
    f = fires("CK004", CK_SEVERITY_INFO,
              "Conv2D(8,(3,3)), SpatialDropout2D(0.2), Activation('relu'), MaxPooling2D((2,2)), "
              "Flatten(), Dense(10)",
              NULL);
    cr_assert_eq(f.layers[1], 3);
}

Test(check, spatial_dropout_before_pool_is_info) {
    ck_finding f = fires("CK004", CK_SEVERITY_INFO,
                         "Conv2D(8,(3,3)), SpatialDropout2D(0.2), AveragePooling2D((2,2)),"
                         "Flatten(), Dense(10)",
                         "Conv2D(8,(3,3)), AveragePooling2D((2,2)), SpatialDropout2D(0.2),"
                         "Flatten(), Dense(10)");
    cr_assert_float_eq(f.value, 4.0, 1e-9);
}

Test(check, dropout_and_activations) {
    fires("CK005", CK_SEVERITY_INFO, "Dense(8), Activation('relu'), Dropout(0.2), Dense(10)",
          "Dense(8), Activation('sigmoid'), Dropout(0.2), Dense(10)");
    fires("CK005", CK_SEVERITY_INFO, "Dense(8), Dropout(0.2), Activation('relu'), Dense(10)", NULL);
    fires("CK005", CK_SEVERITY_INFO, "Dense(8,activation='relu'), Dropout(0.2), Dense(10)", NULL);
    ck_finding f =
        fires("CK005", CK_SEVERITY_INFO, "Dense(8), LeakyReLU(), Dropout(0.3), Dense(10)", NULL);
    cr_assert_neq(strstr(f.message, "LeakyReLU"), NULL);
    f = fires("CK006", CK_SEVERITY_WARNING,
              "Dense(8), Dropout(0.2), Activation('sigmoid'), "
              "Dense(10)",
              "Dense(8), Activation('sigmoid'), Dropout(0.2), Dense(10)");
    cr_assert_float_eq(f.value, 0.5, 1e-12);
    const char *acts[] = {"tanh", "elu", "gelu", "swish"};
    for (int i = 0; i < 4; ++i) {
        char bad[256], good[256];
        snprintf(bad, sizeof bad, "Dense(8), Dropout(0.2), Activation('%s'), Dense(10)", acts[i]);
        snprintf(good, sizeof good, "Dense(8), Activation('%s'), Dropout(0.2), Dense(10)", acts[i]);
        f = fires("CK007", CK_SEVERITY_WARNING, bad, good);
        cr_assert(fabs(f.value - 1.0) > 0.01, "%s ratio %f", acts[i], f.value);
    }
    /* tanh at x = 1: 0.8 * tanh(1.25) / tanh(1) */
    f = fires("CK007", CK_SEVERITY_WARNING, "Dense(8), Dropout(0.2), Activation('tanh'), Dense(4)",
              NULL);
    cr_assert_float_eq(f.value, 0.8 * tanh(1.25) / tanh(1.0), 1e-6);
}

Test(check, bias_before_bn) {
    ck_finding f = fires("CK008", CK_SEVERITY_INFO,
                         "Conv2D(32,(3,3)), BatchNormalization(), Activation('relu'), Flatten(),"
                         "Dense(10)",
                         "Conv2D(32,(3,3),use_bias=False), BatchNormalization(),"
                         "Activation('relu'), Flatten(), Dense(10)");
    cr_assert_float_eq(f.value, 32.0, 1e-9);
    cr_assert_neq(strstr(f.fix, "use_bias=False"), NULL, "%s", f.fix);
}

Test(check, output_errors) {
    fires("CK009", CK_SEVERITY_ERROR,
          "Flatten(), Dense(10), Activation('softmax'), BatchNormalization()",
          "Flatten(), Dense(10), Activation('softmax')");
    fires("CK010", CK_SEVERITY_ERROR,
          "Flatten(), Dense(64), Dense(10), Dropout(0.3), "
          "Activation('softmax')",
          "Flatten(), Dense(64), Dropout(0.3), Dense(10), Activation('softmax')");
    ck_finding f = fires("CK010", CK_SEVERITY_ERROR,
                         "Flatten(), Dense(10), Activation('softmax'), Dropout(0.3)", NULL);
    cr_assert_neq(strstr(f.message, "softmax"), NULL, "%s", f.message);
    cr_assert_float_eq(f.value, 0.3, 1e-6);
    fires("CK011", CK_SEVERITY_ERROR,
          "Conv2D(8,(3,3)), Flatten(), SpatialDropout2D(0.2), Dense(10)",
          "Conv2D(8,(3,3)), Flatten(), Dropout(0.2), Dense(10)");
    fires("CK011", CK_SEVERITY_ERROR,
          "Conv2D(8,(3,3)), GlobalAveragePooling2D(), SpatialDropout2D(0.2), Dense(10)", NULL);
}

Test(check, doubles) {
    ck_finding f = fires("CK012", CK_SEVERITY_WARNING,
                         "Flatten(), Dense(64), Dropout(0.2), Dropout(0.2), Dense(10)",
                         "Flatten(), Dense(64), Dropout(0.36), Dense(10)");
    cr_assert_float_eq(f.value, 0.36, 1e-6);
    cr_assert_neq(strstr(f.fix, "Dropout(0.36)"), NULL, "%s", f.fix);
    fires("CK013", CK_SEVERITY_WARNING,
          "Conv2D(8,(3,3),activation='relu'), Activation('relu'), Flatten(), Dense(10)",
          "Conv2D(8,(3,3),activation='relu'), Flatten(), Dense(10)");
    fires("CK013", CK_SEVERITY_WARNING,
          "Flatten(), Dense(10), Activation('softmax'), Activation('softmax')",
          "Flatten(), Dense(10), Activation('softmax')");
}

/* ZeroPadding2D adds zeros that stay 0 under any mask: pad(m x) = m' pad(x), so Eq. 8 and its
 * ceiling hold through it, a weight layer after it makes the path linear (not nonlinear), and
 * the pooling rules read through it (docs/derivations.md §1, §4); a ReLU before the padding
 * still makes the dropout's input non-negative. */
Test(check, zero_padding_commutes_with_the_mask) {
    ck_finding f = fires("CK001", CK_SEVERITY_WARNING,
                         "Conv2D(8,(3,3)), Dropout(0.2), ZeroPadding2D(), BatchNormalization(), "
                         "Flatten(), Dense(10)",
                         NULL);
    cr_assert_float_eq(f.value, 0.8, 1e-6);
    f = fires("CK002", CK_SEVERITY_INFO,
              "Conv2D(8,(3,3)), Dropout(0.2), ZeroPadding2D(), Conv2D(8,(3,3)), "
              "BatchNormalization(), Flatten(), Dense(10)",
              NULL);
    cr_assert(strstr(f.reason, "through linear layers only"), "%s", f.reason);
    f = fires("CK003", CK_SEVERITY_WARNING,
              "Conv2D(8,(3,3),activation='relu'), ZeroPadding2D(), Dropout(0.3), "
              "MaxPooling2D((2,2)), Flatten(), Dense(10)",
              NULL);
    cr_assert(strstr(f.message, "dropped only when all positive inputs"), "%s", f.message);
    f = fires("CK003", CK_SEVERITY_WARNING,
              "Conv2D(8,(3,3),activation='relu'), Dropout(0.3), ZeroPadding2D(), "
              "MaxPooling2D((2,2)), Flatten(), Dense(10)",
              NULL);
    cr_assert_eq(f.layers[1], 3);
    f = fires("CK004", CK_SEVERITY_INFO,
              "Conv2D(8,(3,3)), SpatialDropout2D(0.3), ZeroPadding2D(), MaxPooling2D((2,2)), "
              "Flatten(), Dense(10)",
              NULL);
    cr_assert_eq(f.layers[1], 3);
}

/* A Dropout(0) is the identity: the rules read through it (check.h). */
Test(check, rate_zero_dropouts_are_not_there) {
    ck_finding f =
        fires("CK012", CK_SEVERITY_WARNING,
              "Flatten(), Dense(64), Dropout(0.5), Dropout(0), Dropout(0.5), Dense(10)", NULL);
    cr_assert_float_eq(f.value, 0.75, 1e-6);
    fires("CK003", CK_SEVERITY_WARNING,
          "Conv2D(8,(3,3),activation='relu'), Dropout(0.5), Dropout(0), MaxPooling2D((2,2)), "
          "Flatten(), Dense(10)",
          NULL);
    fires("CK006", CK_SEVERITY_WARNING,
          "Dense(8), Dropout(0.5), Dropout(0), Activation('sigmoid'), Dense(10)", NULL);
}

/* §4's inflation bound (1-q^n)/(1-q) needs f(x/p) = f(x)/p between the dropout and the pool.
 * Through swish it fails: a window of four equal inputs x = 3 at q = 0.5 has training mean
 * (1-q^4) swish(6) against swish(3) at inference, 1.964 > 1.875. No number is given then, and
 * the fix keeps the activation. */
Test(check, maxpool_inflation_needs_a_homogeneous_activation) {
    const double q = 0.5, sw3 = 3.0 / (1.0 + exp(-3.0)), sw6 = 6.0 / (1.0 + exp(-6.0));
    cr_assert_gt((1.0 - pow(q, 4)) * sw6 / sw3, (1.0 - pow(q, 4)) / (1.0 - q));
    ck_finding f = fires("CK003", CK_SEVERITY_WARNING,
                         "Conv2D(8,(3,3),activation='relu'), Dropout(0.5), Activation('swish'), "
                         "MaxPooling2D((2,2)), Flatten(), Dense(10)",
                         NULL);
    cr_assert(isnan(f.value), "%g", f.value);
    cr_assert(strstr(f.reason, "no bound"), "%s", f.reason);
    cr_assert(strstr(f.fix, "Activation('swish') -> MaxPooling2D((2,2)) -> Dropout(0.5)") &&
                  strstr(f.fix, "SpatialDropout2D(0.5) -> Activation('swish') -> MaxPooling2D"),
              "%s", f.fix);
    f = fires("CK003", CK_SEVERITY_WARNING,
              "Conv2D(8,(3,3)), Dropout(0.5), LeakyReLU(), MaxPooling2D((2,2)), Flatten(), "
              "Dense(10)",
              NULL);
    cr_assert_float_eq(f.value, 1.875, 1e-9);
}

/* CK013's numbers: ELU is the identity above 0, so its example is at -1; two LeakyReLUs multiply
 * their slopes; the fix names the layer it removes. */
Test(check, double_activation_numbers) {
    ck_finding f = fires("CK013", CK_SEVERITY_WARNING,
                         "Dense(8), Activation('elu'), Activation('elu'), Dense(10)", NULL);
    const double e1 = exp(-1.0) - 1.0, e2 = exp(e1) - 1.0;
    cr_assert_float_eq(f.value, e2, 1e-9);
    cr_assert(strstr(f.reason, "f(f(-1)) = -0.4685 vs f(-1) = -0.6321"), "%s", f.reason);
    f = fires("CK013", CK_SEVERITY_WARNING,
              "Dense(8), LeakyReLU(negative_slope=0.1), LeakyReLU(negative_slope=0.3), Dense(10)",
              NULL);
    cr_assert_float_eq(f.value, 0.1 * 0.3, 1e-6);
    cr_assert(strstr(f.fix, "remove layer 2 (LeakyReLU(negative_slope=0.3))"), "%s", f.fix);
}

/* Sigmoid heads: a dropout after the output sigmoid drops probabilities; one before it turns a
 * dropped logit into sigmoid(0) = 0.5 (not softmax's exp(0)); the fix of a dropout next to the
 * output activation moves it before the last weight layer, never after the activation. */
Test(check, sigmoid_heads) {
    ck_finding f = fires("CK010", CK_SEVERITY_ERROR,
                         "Dense(64,activation='relu'), Dense(5), Activation('sigmoid'), "
                         "Dropout(0.3)",
                         NULL);
    cr_assert(strstr(f.message, "after the output sigmoid"), "%s", f.message);
    cr_assert(!strstr(f.reason, "softmax"), "%s", f.reason);
    f = fires("CK010", CK_SEVERITY_ERROR,
              "Dense(64,activation='relu'), Dense(5), Dropout(0.3), Activation('sigmoid')",
              "Dense(64,activation='relu'), Dropout(0.3), Dense(5), Activation('sigmoid')");
    cr_assert(strstr(f.reason, "0.5") && !strstr(f.reason, "softmax"), "%s", f.reason);
    f = fires("CK006", CK_SEVERITY_WARNING,
              "Dense(64,activation='relu'), Dense(5), Dropout(0.3), Activation('sigmoid')", NULL);
    cr_assert(strstr(f.fix, "drop before the last weight layer") &&
                  !strstr(f.fix, "Activation('sigmoid') -> Dropout"),
              "%s", f.fix);
    f = fires("CK007", CK_SEVERITY_WARNING,
              "Dense(64,activation='relu'), Dense(5), Dropout(0.3), Activation('tanh')", NULL);
    cr_assert(strstr(f.fix, "drop before the last weight layer"), "%s", f.fix);
    /* a softmax read by a weight layer is a feature, not the output: no CK009 */
    result r;
    check_layers("Flatten(), Dense(16,activation='softmax'), Dense(32,use_bias=False), "
                 "BatchNormalization(), Dense(10)",
                 &r);
    cr_assert_eq(find(&r, "CK009"), -1);
}

/* A dropout far after the last weight layer: the fix's window is cut, and the moved dropout
 * still fits in it (it used to write one layer past the window). */
Test(check, long_output_tail_fix_fits) {
    char layers[2048] = "Dense(8)";
    for (int i = 0; i < 25; ++i)
        strcat(layers, ", Activation('linear')");
    strcat(layers, ", Dropout(0.3)");
    ck_finding f = fires("CK010", CK_SEVERITY_ERROR, layers, NULL);
    cr_assert(strstr(f.fix, "Dropout(0.3) -> Dense(8)"), "%s", f.fix);
}

/* A channel mask times an element mask is neither kind of dropout (CK012). */
Test(check, mixed_double_dropout) {
    ck_finding f = fires("CK012", CK_SEVERITY_WARNING,
                         "Conv2D(8,(3,3)), SpatialDropout2D(0.2), Dropout(0.5), Flatten(), "
                         "Dense(10)",
                         NULL);
    cr_assert_float_eq(f.value, 0.6, 1e-6);
    cr_assert(strstr(f.reason, "neither kind"), "%s", f.reason);
    cr_assert(strstr(f.fix, "SpatialDropout2D(0.6) or Dropout(0.6)"), "%s", f.fix);
}

/* CK004's saving is the pool's stride product; a pool of stride 1 saves nothing. */
Test(check, spatial_dropout_saving_follows_the_strides) {
    ck_finding f = fires("CK004", CK_SEVERITY_INFO,
                         "Conv2D(8,(3,3)), SpatialDropout2D(0.2), "
                         "MaxPooling2D((3,3),strides=(1,1)), Flatten(), Dense(10)",
                         NULL);
    cr_assert_float_eq(f.value, 1.0, 1e-9);
    cr_assert(!strstr(f.message, "cheaper") && strstr(f.reason, "saves nothing"), "%s / %s",
              f.message, f.reason);
    f = fires("CK004", CK_SEVERITY_INFO,
              "Conv2D(8,(3,3)), SpatialDropout2D(0.2), MaxPooling2D((3,3),strides=(2,2)), "
              "Flatten(), Dense(10)",
              NULL);
    cr_assert_float_eq(f.value, 4.0, 1e-9);
    cr_assert(strstr(f.fix, "MaxPooling2D((3,3),strides=(2,2))"), "%s", f.fix);
}

/* Fixes write layers as the model has them: a SpatialDropout2D moved onto a flat tensor becomes
 * a Dropout; pooling keeps its strides and padding, a LeakyReLU its slope, BN its momentum. */
Test(check, fixes_are_valid_models) {
    ck_finding f = fires("CK001", CK_SEVERITY_WARNING,
                         "Conv2D(8,(3,3),activation='relu'), SpatialDropout2D(0.2), "
                         "GlobalAveragePooling2D(), BatchNormalization(), Dense(10)",
                         NULL);
    cr_assert(strstr(f.fix, "BatchNormalization() -> Dropout(0.2)") &&
                  !strstr(f.fix, "-> SpatialDropout2D"),
              "%s", f.fix);
    f = fires("CK001", CK_SEVERITY_WARNING,
              "Conv2D(8,(3,3),use_bias=False), Dropout(0.2), BatchNormalization(momentum=0.9), "
              "LeakyReLU(negative_slope=0.1), MaxPooling2D((3,3),strides=(2,2),padding='same'), "
              "Flatten(), Dense(10)",
              NULL);
    cr_assert(strstr(f.fix, "BatchNormalization(momentum=0.9) -> LeakyReLU(negative_slope=0.1) "
                            "-> MaxPooling2D((3,3),strides=(2,2),padding='same') -> Dropout(0.2)"),
              "%s", f.fix);
}

/* A bias before BN is removed through pooling, GlobalAveragePooling2D and Flatten too (max and
 * mean of x + b are max and mean of x plus b); zero padding's zeros get no bias: not there. */
Test(check, bias_before_bn_through_pooling) {
    ck_finding f = fires("CK008", CK_SEVERITY_INFO,
                         "Conv2D(32,(3,3)), MaxPooling2D((2,2)), BatchNormalization(), Flatten(), "
                         "Dense(10)",
                         "Conv2D(32,(3,3)), ZeroPadding2D(), BatchNormalization(), Flatten(), "
                         "Dense(10)");
    cr_assert(strstr(f.fix, "Conv2D(32,(3,3),use_bias=False) -> MaxPooling2D((2,2)) -> "
                            "BatchNormalization()"),
              "%s", f.fix);
    fires("CK008", CK_SEVERITY_INFO,
          "Conv2D(32,(3,3)), GlobalAveragePooling2D(), BatchNormalization(), Dense(10)", NULL);
}

/* CK005 with LeakyReLU: bit-exact when alpha or 1/p is a power of two (a product by a power of two
 * is exact), checked on the float products of both orders: alpha * (x * scale) and
 * (alpha * x) * scale. */
Test(check, leaky_relu_order_is_exact_for_powers_of_two) {
    ck_finding f = fires("CK005", CK_SEVERITY_INFO,
                         "Dense(8), Dropout(0.3), LeakyReLU(negative_slope=0.5), Dense(10)", NULL);
    cr_assert(strstr(f.message, "(bit-exact)"), "%s", f.message);
    f = fires("CK005", CK_SEVERITY_INFO,
              "Dense(8), Dropout(0.3), LeakyReLU(negative_slope=0.3), Dense(10)", NULL);
    cr_assert(strstr(f.message, "(up to rounding)"), "%s", f.message);
    const float s = 1.0f / (1.0f - 0.3f);
    int diff05 = 0, diff03 = 0;
    trng r = {77};
    for (int i = 0; i < 200000; ++i) {
        const float x = trng_uniform(&r, -4.0f, 0.0f);
        diff05 += (0.5f * (x * s)) != ((0.5f * x) * s);
        diff03 += (0.3f * (x * s)) != ((0.3f * x) * s);
    }
    cr_assert_eq(diff05, 0);
    cr_assert_gt(diff03, 0, "alpha 0.3 should round differently somewhere");
}

#define k_seed t_seed_cnn_text /* tests/common.c */

static const char k_asker[] = "model = Sequential()\n"
                              "model.add(Conv2D(32,(3,3), input_shape=(28,28,1)))\n"
                              "model.add(SpatialDropout2D(0.2))\n"
                              "model.add(BatchNormalization())\n"
                              "model.add(Activation('relu'))\n"
                              "model.add(MaxPooling2D(pool_size=(2,2)))\n"
                              "model.add(Flatten())\n"
                              "model.add(Dense(10))\n"
                              "model.add(Activation('softmax'))\n";

static void check_text(const char *text, result *r) {
    char err[512];
    ck_keras_model km;
    cr_assert_eq(ck_keras_parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    memset(r, 0, sizeof *r);
    cr_assert_eq(ck_model_check(km.layers, km.count, r->f, MAXF, &r->n), CK_STATUS_SUCCESS);
    ck_keras_model_free(&km);
    for (int i = 0; i < r->n; ++i) {
        r->count[r->f[i].severity]++;
        cr_assert(cites_source(r->f[i].reason), "%s: no source: %s", r->f[i].code, r->f[i].reason);
    }
}

Test(check, seed_model_is_clean) {
    result r;
    check_text(k_seed, &r);
    for (int i = 0; i < r.n; ++i)
        cr_assert_eq(r.f[i].severity, CK_SEVERITY_INFO, "%s: %s", r.f[i].code, r.f[i].message);
    cr_assert_eq(r.count[CK_SEVERITY_ERROR], 0);
    cr_assert_eq(r.count[CK_SEVERITY_WARNING], 0);
    /* the expected infos: Eq. 14 for the two block dropouts, conv/dense bias before BN */
    int eq14 = 0;
    double bias = 0;
    for (int i = 0; i < r.n; ++i) {
        eq14 += !strncmp(r.f[i].code, "CK002", 5);
        if (!strncmp(r.f[i].code, "CK008", 5))
            bias += r.f[i].value;
    }
    cr_assert_eq(eq14, 2);
    cr_assert_float_eq(bias, 704.0, 1e-9, "redundant biases %f", bias);
}

Test(check, asker_proposal_gets_the_variance_shift_warning) {
    result r;
    check_text(k_asker, &r);
    int i = find(&r, "CK001-dropout-before-bn");
    cr_assert_geq(i, 0);
    cr_assert_eq(r.f[i].severity, CK_SEVERITY_WARNING);
    cr_assert_eq(r.f[i].layers[0], 1);
    cr_assert_eq(r.f[i].layers[1], 2);
    cr_assert_float_eq(r.f[i].value, 0.8, 1e-6);
    cr_assert_neq(strstr(r.f[i].fix, "Conv2D(32,(3,3)) -> BatchNormalization() -> "
                                     "Activation('relu') -> MaxPooling2D((2,2)) -> "
                                     "SpatialDropout2D(0.2)"),
                  NULL, "%s", r.f[i].fix);
}

Test(check, cap_smaller_than_findings) {
    char err[512];
    ck_keras_model km;
    cr_assert_eq(ck_keras_parse(k_seed, &km, err, sizeof err), CK_STATUS_SUCCESS);
    int total = -1, n = -1;
    cr_assert_eq(ck_model_check(km.layers, km.count, NULL, 0, &total), CK_STATUS_SUCCESS);
    cr_assert_gt(total, 2);
    ck_finding all[MAXF], two[3];
    memset(two, 0x5a, sizeof two);
    cr_assert_eq(ck_model_check(km.layers, km.count, all, MAXF, &n), CK_STATUS_SUCCESS);
    cr_assert_eq(n, total);
    cr_assert_eq(ck_model_check(km.layers, km.count, two, 2, &n), CK_STATUS_SUCCESS);
    cr_assert_eq(n, total, "the total, not the number written");
    cr_assert_eq(memcmp(&two[0], &all[0], sizeof two[0]), 0);
    cr_assert_eq(memcmp(&two[1], &all[1], sizeof two[1]), 0);
    unsigned char pat[sizeof two[2]];
    memset(pat, 0x5a, sizeof pat);
    cr_assert_eq(memcmp(&two[2], pat, sizeof pat), 0, "nothing written past cap");
    ck_keras_model_free(&km);
}

/* ---- shapes (CK014) ------------------------------------------------------------------------- */

static int shapes_of(const char *layers, int h, int w, int c, ck_finding *f) {
    char text[2048], err[512];
    snprintf(text, sizeof text, "model = Sequential([%s])\n", layers);
    ck_keras_model km;
    cr_assert_eq(ck_keras_parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    int n = -1;
    cr_assert_eq(ck_model_check_shapes(km.layers, km.count, h, w, c, f, &n), CK_STATUS_SUCCESS);
    ck_keras_model_free(&km);
    return n;
}

/* The shape inference of ck_model_build itself: the models summary and train reject get one
 * error with build's message and layer; a right one none, without allocating its buffers (a
 * Conv2D of 10^9 filters with valid shapes would need tens of GB). */
Test(check, shapes_are_build_s) {
    ck_finding f;
    cr_assert_eq(
        shapes_of("Conv2D(8,(30,30),input_shape=(28,28,1)), Flatten(), Dense(10)", 0, 0, 0, &f), 1);
    cr_assert_str_eq(f.code, "CK014-shape-error");
    cr_assert_eq(f.severity, CK_SEVERITY_ERROR);
    cr_assert_eq(f.layers[0], 0);
    cr_assert_neq(strstr(f.message, "window 30x30 does not fit the input 28x28"), NULL, "%s",
                  f.message);
    cr_assert_eq(shapes_of("Conv2D(8,(3,3),input_shape=(28,28,1)), MaxPooling2D((27,27)), "
                           "Flatten(), Dense(10)",
                           0, 0, 0, &f),
                 1);
    cr_assert_eq(f.layers[0], 1);
    cr_assert_eq(
        shapes_of("Conv2D(10**9,(3,3),input_shape=(28,28,1)), Flatten(), Dense(10)", 0, 0, 0, &f),
        1);
    cr_assert_eq(f.layers[0], 1);
    cr_assert_neq(strstr(f.message, "do not fit in 32 bits"), NULL, "%s", f.message);
    cr_assert_eq(shapes_of("Conv2D(10**9,(3,3),input_shape=(28,28,1)), "
                           "GlobalAveragePooling2D(), Dense(10)",
                           0, 0, 0, &f),
                 0, "valid shapes: no finding, and nothing allocated");
    /* the model output must be class scores, as build requires */
    cr_assert_eq(shapes_of("Conv2D(8,(3,3),input_shape=(28,28,1))", 0, 0, 0, &f), 1);
    cr_assert_neq(strstr(f.message, "class scores"), NULL, "%s", f.message);
    /* an explicit input shape wins over input_shape */
    cr_assert_eq(
        shapes_of("Conv2D(8,(3,3),input_shape=(28,28,1)), Flatten(), Dense(10)", 2, 2, 1, &f), 1);
    char err[512];
    ck_keras_model km;
    cr_assert_eq(ck_keras_parse(t_seed_cnn_text, &km, err, sizeof err), CK_STATUS_SUCCESS);
    int n = -1;
    cr_assert_eq(ck_model_check_shapes(km.layers, km.count, 0, 0, 0, &f, &n), CK_STATUS_SUCCESS);
    cr_assert_eq(n, 0);
    cr_assert_eq(ck_model_check_shapes(km.layers, km.count, 28, 0, 1, &f, &n), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_check_shapes(NULL, 2, 0, 0, 0, &f, &n), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_model_check_shapes(km.layers, km.count, 0, 0, 0, NULL, &n),
                 CK_STATUS_BAD_PARAM);
    km.layers[0].input_h = km.layers[0].input_w = km.layers[0].input_c = 0;
    cr_assert_eq(ck_model_check_shapes(km.layers, km.count, 0, 0, 0, &f, &n), CK_STATUS_BAD_PARAM,
                 "no shape at all");
    ck_keras_model_free(&km);
}

/* ---- CLI ---------------------------------------------------------------------------------- */
static int run_cli(const char *args, char *out, size_t len) {
#if defined(CNNKIT_CLI_PATH) && defined(CNNKIT_SOURCE_DIR)
    if (access(CNNKIT_CLI_PATH, X_OK) != 0 || access(t_src("examples"), R_OK) != 0)
        cr_skip("the cnnkit binary or the source tree is not here (a relocated test bundle)");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s 2>/dev/null", t_source_dir(), CNNKIT_CLI_PATH,
             args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    cr_assert(WIFEXITED(st));
    return WEXITSTATUS(st);
#else
    cr_skip("no CLI path");
    return -1;
#endif
}

static char out[65536];

Test(check, cli_exit_codes_and_json) {
    cr_assert_eq(run_cli("check examples/seed_cnn.py", out, sizeof out), 0, "%s", out);
    cr_assert_neq(strstr(out, "0 errors, 0 warnings"), NULL, "%s", out);
    cr_assert_eq(run_cli("check examples/asker_proposal.py", out, sizeof out), 1, "%s", out);
    cr_assert_neq(strstr(out, "warning CK001-dropout-before-bn"), NULL, "%s", out);
    cr_assert_eq(run_cli("check examples/asker_proposal.py --json", out, sizeof out), 1);
    cr_assert_neq(strstr(out, "\"model\": \"examples/asker_proposal.py\""), NULL, "%s", out);
    cr_assert_neq(strstr(out, "\"code\": \"CK001-dropout-before-bn\", \"severity\": "
                              "\"warning\", \"layers\": [1, 2]"),
                  NULL, "%s", out);
    cr_assert_neq(strstr(out, "\"value\": 0.8}"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "\"errors\": 0, \"warnings\": 2, \"infos\": 0}"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "\"shapes_checked\": true"), NULL, "%s", out);
    cr_assert_eq(run_cli("check /nonexistent/model.py", out, sizeof out), 2);
    cr_assert_eq(run_cli("check", out, sizeof out), 2);
    cr_assert_eq(run_cli("check examples/seed_cnn.py --bogus", out, sizeof out), 2);
}

/* --json stays valid JSON (RFC 8259: UTF-8) for a path that is not UTF-8: each stray byte
 * becomes U+FFFD; well-formed UTF-8 passes unchanged. */
Test(check, cli_json_is_utf8) {
    static const char *const names[2] = {"/tmp/cnnkit-caf\xe9-XXXXXX",
                                         "/tmp/cnnkit-caf\xc3\xa9-XXXXXX"};
    for (int k = 0; k < 2; ++k) {
        char path[64], args[128];
        snprintf(path, sizeof path, "%s", names[k]);
        const int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        FILE *f = fdopen(fd, "w");
        cr_assert_not_null(f);
        fputs("model = Sequential()\nmodel.add(Flatten(input_shape=(2,2,1)))\n", f);
        fclose(f);
        snprintf(args, sizeof args, "check '%s' --json", path);
        cr_assert_eq(run_cli(args, out, sizeof out), 0, "%s", out);
        cr_assert_neq(strstr(out, k ? "caf\xc3\xa9-" : "caf\\ufffd-"), NULL, "%s", out);
        cr_assert_null(strchr(out, '\xe9'), "%s", out);
        unlink(path);
    }
}

/* A model file in a temporary directory; returns its path (static storage). */
static const char *model_file(const char *layers) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/cnnkit-check-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    cr_assert_not_null(f);
    fprintf(f, "model = Sequential()\n");
    for (const char *p = layers; *p;) {
        const char *e = strchr(p, ';');
        const size_t n = e ? (size_t)(e - p) : strlen(p);
        fprintf(f, "model.add(%.*s)\n", (int)n, p);
        p += n + (e ? 1 : 0);
    }
    fclose(f);
    return path;
}

/* The three models summary and train reject, through the binary: each an error (exit 1) with
 * build's message, and the same shape error from summary (exit 2). */
Test(check, cli_shape_errors) {
    static const char *models[3][2] = {
        {"Conv2D(8,(30,30),input_shape=(28,28,1));Flatten();Dense(10)",
         "layer 0 (Conv2D 'conv2d'): window 30x30 does not fit the input 28x28"},
        {"Conv2D(8,(3,3),input_shape=(28,28,1));MaxPooling2D(pool_size=(27,27));Flatten();"
         "Dense(10)",
         "layer 1 (MaxPooling2D 'max_pooling2d'): window 27x27 does not fit the input 26x26"},
        {"Conv2D(10**9,(3,3),input_shape=(28,28,1));Flatten();Dense(10)",
         "layer 1 (Flatten 'flatten'): 26 x 26 x 1000000000 values per sample do not fit"}};
    for (int i = 0; i < 3; ++i) {
        const char *path = model_file(models[i][0]);
        char args[128];
        snprintf(args, sizeof args, "check %s", path);
        cr_assert_eq(run_cli(args, out, sizeof out), 1, "%s: %s", models[i][0], out);
        cr_assert_neq(strstr(out, "error CK014-shape-error"), NULL, "%s", out);
        cr_assert_neq(strstr(out, models[i][1]), NULL, "%s", out);
        cr_assert_neq(strstr(out, "1 error,"), NULL, "%s", out);
        snprintf(args, sizeof args, "check %s --json", path);
        cr_assert_eq(run_cli(args, out, sizeof out), 1, "%s", out);
        cr_assert_neq(strstr(out, "\"code\": \"CK014-shape-error\", \"severity\": \"error\""), NULL,
                      "%s", out);
        snprintf(args, sizeof args, "summary %s", path);
        cr_assert_neq(run_cli(args, out, sizeof out), 0, "summary rejects it too: %s", out);
        unlink(path);
    }
    /* no input shape: not checked, said so */
    const char *path = model_file("Conv2D(8,(3,3));Flatten();Dense(10)");
    char args[128];
    snprintf(args, sizeof args, "check %s", path);
    cr_assert_eq(run_cli(args, out, sizeof out), 0, "%s", out);
    cr_assert_neq(strstr(out, "shapes not checked"), NULL, "%s", out);
    snprintf(args, sizeof args, "check %s --input 2x2x1", path);
    cr_assert_eq(run_cli(args, out, sizeof out), 1, "%s", out);
    cr_assert_neq(strstr(out, "CK014"), NULL, "%s", out);
    unlink(path);
}
