/* cnnkit check: the shape inference of build, the layer-order rules and --measure, as text or
 * JSON. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnnkit/check.h"

/* The length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong forms, surrogates or
 * code points past U+10FFFF), 0 if there is none. */
static int utf8_len(const unsigned char *s) {
    const unsigned c = s[0];
    const int n = c < 0x80                 ? 1
                  : c >= 0xc2 && c <= 0xdf ? 2
                  : c >= 0xe0 && c <= 0xef ? 3
                  : c >= 0xf0 && c <= 0xf4 ? 4
                                           : 0;
    for (int k = 1; k < n; ++k)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
        (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return n;
}

/* A JSON string: a path or a layer name may hold bytes that are not UTF-8 and a finding's text
 * may be cut inside a character; each such byte becomes U+FFFD so the output stays valid JSON. */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    while (*s) {
        const unsigned char ch = (unsigned char)*s;
        const int n = utf8_len((const unsigned char *)s);
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else if (n == 0)
            fputs("\\ufffd", f);
        else
            fwrite(s, 1, (size_t)n, f);
        s += n ? n : 1;
    }
    fputc('"', f);
}

/* A JSON number, null for NaN / infinity. */
static void json_num(FILE *f, double v) {
    if (isfinite(v))
        fprintf(f, "%.6g", v);
    else
        fputs("null", f);
}

/* Appends , "key": value (null unless finite) to the JSON object on stdout. */
static void json_field(const char *key, double v) {
    printf(", \"%s\": ", key);
    json_num(stdout, v);
}

static void print_measurement_text(const ck_model *m, const ck_measurement *r, const char *dev) {
    printf("measurement: after %d training step%s (model step %lld), %d batches x %d training "
           "images, %s\n",
           r->train_steps, r->train_steps == 1 ? "" : "s", r->model_step, r->batches, r->batch,
           dev);
    printf("BN variance shift Var_inference / Var_train of the BN input, mean [min, max] over "
           "channels:\n  converged: moving statistics set to their converged values (momentum-"
           "free: the shift dropout causes)\n  as stored: on the stored moving statistics, over "
           "the stored moving variance (its init 1 still\n  weighs momentum^steps = 'init')\n");
    for (int k = 0; k < r->n_bn && k < CK_MEASURE_MAX; ++k) {
        const ck_bn_shift *s = &r->bn[k];
        ck_layer_desc d;
        ck_model_layer_desc(m, s->layer, &d);
        printf("  layer %2d %-22s %4d ch  converged %.3f [%.3f, %.3f]  as stored %.3f "
               "[%.3f, %.3f] (init %.3f)",
               s->layer, d.name, s->channels, s->ratio, s->ratio_min, s->ratio_max, s->ratio_moving,
               s->ratio_moving_min, s->ratio_moving_max, s->moving_init_weight);
        if (s->dropout_layer >= 0) {
            if (s->n_dropouts == 1) {
                printf("\n      %s: dropout layer %d reaches it", s->direct ? "CK001" : "CK002",
                       s->dropout_layer);
            } else {
                printf("\n      %s: dropout layers", s->direct ? "CK001" : "CK002");
                for (int j = 0; j < s->n_dropouts && j < CK_BN_DROPOUTS_MAX; ++j)
                    printf("%s %d",
                           j == 0                   ? ""
                           : j + 1 == s->n_dropouts ? " and"
                                                    : ",",
                           s->dropout_layers[j]);
                printf("%s reach it", s->n_dropouts > CK_BN_DROPOUTS_MAX ? " and more" : "");
            }
            if (s->reached < s->channels)
                printf(" (%d of its %d channels, the ones the numbers above are over)", s->reached,
                       s->channels);
            if (isfinite(s->predicted))
                printf("; Eq. 8 from its inference mean and variance predicts %.3f, ceiling %.3f "
                       "(docs/derivations.md §1)",
                       s->predicted, s->ceiling);
            else if (s->compounded && s->path == 0)
                printf(" after an earlier dropout, whose shift multiplies in: no prediction, no "
                       "ceiling (docs/derivations.md §1)");
            else
                printf(" through %s layers: no prediction, no bound; measured only "
                       "(docs/derivations.md §%d)",
                       s->path == 1 ? "linear" : "nonlinear", s->path == 1 ? 2 : 3);
        }
        printf("\n");
    }
    if (r->n_bn == 0)
        printf("  (no BatchNormalization layers)\n");
    printf("Dropout: fraction of values zeroed where the tensor is consumed (after the next "
           "pooling when only activations lie between)\n");
    for (int k = 0; k < r->n_dropout && k < CK_MEASURE_MAX; ++k) {
        const ck_dropout_effect *e = &r->dropout[k];
        ck_layer_desc d;
        ck_model_layer_desc(m, e->layer, &d);
        char where[96];
        if (e->pool_layer >= 0) {
            ck_layer_desc pd;
            ck_model_layer_desc(m, e->pool_layer, &pd);
            snprintf(where, sizeof where, "after %s (layer %d)", pd.name, e->pool_layer);
        } else {
            snprintf(where, sizeof where, "at its output");
        }
        const int windows = e->pool_layer >= 0 && !e->spatial;
        printf("  layer %2d %-22s %s(%g)  zeroed %.4f %s  expected %.4f %s\n", e->layer, d.name,
               e->spatial ? "SpatialDropout2D" : "Dropout", e->rate, e->zeroed, where, e->expected,
               windows ? "from the signs of each window's inputs (docs/derivations.md §4)"
                       : "(the rate; docs/derivations.md §5)");
    }
    if (r->n_dropout == 0)
        printf("  (no dropout layers)\n");
}

static void print_measurement_json(const ck_model *m, const ck_measurement *r) {
    printf(", \"measurement\": {\"train_steps\": %d, \"model_step\": %lld, \"batches\": %d, "
           "\"batch\": %d, \"bn\": [",
           r->train_steps, r->model_step, r->batches, r->batch);
    for (int k = 0; k < r->n_bn && k < CK_MEASURE_MAX; ++k) {
        const ck_bn_shift *s = &r->bn[k];
        ck_layer_desc d;
        ck_model_layer_desc(m, s->layer, &d);
        printf("%s\n  {\"layer\": %d, \"name\": ", k ? "," : "", s->layer);
        json_str(stdout, d.name);
        printf(", \"channels\": %d, \"reached\": %d", s->channels, s->reached);
        json_field("ratio", s->ratio);
        json_field("ratio_min", s->ratio_min);
        json_field("ratio_max", s->ratio_max);
        json_field("ratio_moving", s->ratio_moving);
        json_field("moving_init_weight", s->moving_init_weight);
        json_field("var_train", s->var_train);
        json_field("var_inference", s->var_inference);
        json_field("var_inference_stored", s->var_inference_stored);
        json_field("var_moving", s->var_moving);
        printf(", \"dropout_layer\": %d, \"dropout_layers\": [", s->dropout_layer);
        for (int j = 0; j < s->n_dropouts && j < CK_BN_DROPOUTS_MAX; ++j)
            printf("%s%d", j ? ", " : "", s->dropout_layers[j]);
        printf("], \"direct\": %d, \"path\": %d, \"compounded\": %d", s->direct, s->path,
               s->compounded);
        json_field("ceiling", s->ceiling);
        json_field("predicted", s->predicted);
        printf("}");
    }
    printf("], \"dropout\": [");
    for (int k = 0; k < r->n_dropout && k < CK_MEASURE_MAX; ++k) {
        const ck_dropout_effect *e = &r->dropout[k];
        printf("%s\n  {\"layer\": %d, \"spatial\": %d", k ? "," : "", e->layer, e->spatial);
        json_field("rate", e->rate);
        printf(", \"pool_layer\": %d, \"pool_window\": %d", e->pool_layer, e->pool_window);
        json_field("zeroed", e->zeroed);
        json_field("expected", e->expected);
        printf(", \"counted\": %lld}", e->counted);
    }
    printf("]}");
}

/* Runs the measurement of check --measure; returns an exit code, *out the model (to name its
 * layers). */
static int run_measure(const opts *o, ck_context **ctx, ck_model **m, ck_measurement *r) {
    int rc = make_context(o, ctx);
    if (rc)
        return rc;
    ck_dataset train = {0};
    rc = load_model(*ctx, o, o->batch, m);
    if (!rc)
        rc = load_data(o, NULL, 1, &train);
    if (!rc)
        rc = limit_data(&train, o->limit, "--limit");
    if (!rc) {
        ck_measure_options mo = {o->batches, 4, o->batch, o->seed};
        if (ck_model_measure(*m, &train, &mo, r) != CK_STATUS_SUCCESS) {
            fprintf(stderr, "cnnkit: check --measure: %s\n", ck_context_last_error(*ctx));
            rc = EXIT_RUNTIME;
        }
    }
    ck_dataset_free(&train);
    return rc;
}

/* cnnkit check MODEL [--json] [--measure ...]: exit 0 no warnings or errors, 1 some (or a
 * runtime failure of the measurement), 2 bad model file. */
int cmd_check(const opts *o) {
    const char *path = o->model;
    char err[512];
    ck_keras_model km;
    ck_status st;
    if (is_keras_file(path)) {
        st = keras_file_model(path, &km, err, sizeof err);
    } else {
        char *text = read_model(path);
        if (!text)
            return EXIT_USAGE;
        st = ck_keras_parse(text, &km, err, sizeof err);
        free(text);
    }
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: %s: %s\n", path, err[0] ? err : ck_status_string(st));
        return EXIT_USAGE;
    }
    if (km.warnings[0] && !o->measure) { /* with --measure, loading the model prints them */
        print_warnings(path, km.warnings);
    }
    /* the shape inference of build first (CK014, one finding at most), then the static rules */
    int total = 0, nshape = 0;
    ck_finding shape;
    const int shapes = km.count > 0 && (o->in_h > 0 || km.layers[0].input_h > 0);
    st = shapes ? ck_model_check_shapes(km.layers, km.count, o->in_h, o->in_w, o->in_c, &shape,
                                        &nshape)
                : CK_STATUS_SUCCESS;
    if (st == CK_STATUS_SUCCESS)
        st = ck_model_check(km.layers, km.count, NULL, 0, &total);
    /* and the rule on the data the commands feed (CK018: --pixels) */
    float lo, hi;
    int ndata = 0;
    data_range(o, &lo, &hi);
    if (st == CK_STATUS_SUCCESS)
        st = ck_model_check_data(km.layers, km.count, lo, hi, NULL, 0, &ndata);
    ck_finding *fs = (ck_finding *)calloc((size_t)total + ndata + 1, sizeof *fs);
    if (st == CK_STATUS_SUCCESS && !fs)
        st = CK_STATUS_ALLOC_FAILED;
    if (st == CK_STATUS_SUCCESS && total > 0)
        st = ck_model_check(km.layers, km.count, fs + nshape, total, &total);
    if (st == CK_STATUS_SUCCESS && ndata > 0)
        st = ck_model_check_data(km.layers, km.count, lo, hi, fs + nshape + total, ndata, &ndata);
    if (nshape)
        fs[0] = shape;
    total += nshape + ndata;
    ck_keras_model_free(&km);
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: check: %s\n", ck_status_string(st));
        free(fs);
        return st == CK_STATUS_BAD_PARAM ? EXIT_USAGE : EXIT_RUNTIME;
    }
    ck_context *ctx = NULL;
    ck_model *m = NULL;
    ck_measurement *meas = NULL;
    if (o->measure && nshape)
        fprintf(stderr, "cnnkit: check: --measure skipped: the model does not build\n");
    if (o->measure && !nshape) {
        meas = (ck_measurement *)calloc(1, sizeof *meas);
        int rc = meas ? run_measure(o, &ctx, &m, meas) : EXIT_RUNTIME;
        if (rc) {
            free(meas);
            free(fs);
            ck_model_destroy(m);
            ck_context_destroy(ctx);
            return rc;
        }
    }
    int count[3] = {0, 0, 0};
    for (int i = 0; i < total; ++i)
        if (fs[i].severity >= 0 && fs[i].severity <= 2)
            count[fs[i].severity]++;
    if (o->json) {
        printf("{\"model\": ");
        json_str(stdout, path);
        printf(", \"findings\": [");
        for (int i = 0; i < total; ++i) {
            const ck_finding *f = &fs[i];
            printf("%s\n  {\"code\": ", i ? "," : "");
            json_str(stdout, f->code);
            printf(", \"severity\": \"%s\", \"layers\": [", ck_severity_name(f->severity));
            for (int k = 0; k < f->nlayers; ++k)
                printf("%s%d", k ? ", " : "", f->layers[k]);
            printf("], \"message\": ");
            json_str(stdout, f->message);
            printf(", \"reason\": ");
            json_str(stdout, f->reason);
            printf(", \"fix\": ");
            json_str(stdout, f->fix);
            json_field("value", f->value);
            printf("}");
        }
        printf("%s], \"shapes_checked\": %s, \"errors\": %d, \"warnings\": %d, \"infos\": %d",
               total ? "\n" : "", shapes ? "true" : "false", count[CK_SEVERITY_ERROR],
               count[CK_SEVERITY_WARNING], count[CK_SEVERITY_INFO]);
        if (meas)
            print_measurement_json(m, meas);
        printf("}\n");
    } else {
        for (int i = 0; i < total; ++i) {
            const ck_finding *f = &fs[i];
            printf("%s %s, layer%s", ck_severity_name(f->severity), f->code,
                   f->nlayers > 1 ? "s" : "");
            for (int k = 0; k < f->nlayers; ++k)
                printf("%s%d", k ? ", " : " ", f->layers[k]);
            printf(": %s\n  reason: %s\n  fix:    %s\n\n", f->message, f->reason, f->fix);
        }
        if (!shapes)
            printf("shapes not checked: the first layer has no input_shape (give --input "
                   "HxWxC)\n\n");
        if (meas) {
            print_measurement_text(m, meas,
                                   ck_context_device(ctx) == CK_DEVICE_CUDA ? "cuda" : "cpu");
            printf("\n");
        }
        printf("%s: %d error%s, %d warning%s, %d info%s\n", path, count[CK_SEVERITY_ERROR],
               count[CK_SEVERITY_ERROR] == 1 ? "" : "s", count[CK_SEVERITY_WARNING],
               count[CK_SEVERITY_WARNING] == 1 ? "" : "s", count[CK_SEVERITY_INFO],
               count[CK_SEVERITY_INFO] == 1 ? "" : "s");
    }
    free(fs);
    free(meas);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return count[CK_SEVERITY_ERROR] + count[CK_SEVERITY_WARNING] > 0 ? 1 : 0;
}
