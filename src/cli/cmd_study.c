/* cnnkit study: the Conv-block orders trained over several seeds, their table, the paired tests,
 * the CSV of the runs and the plot. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cnnkit/study.h"

typedef struct study_ui {
    int tty;
    const ck_study_variant *v;
    /* --csv: rewritten after every finished run, so a study cut short keeps its runs */
    const char *csv;
    const ck_study_result *res;
    int done;
} study_ui;

static int write_study_csv(const char *path, const ck_study_variant *v, const ck_study_result *res,
                           int n);

static int on_study_progress(void *u, const ck_study_progress *p) {
    study_ui *ui = (study_ui *)u;
    const char *name = ui->v[p->variant].name;
    if (p->fit && ui->tty) {
        printf("\r[%d/%d] %-22s seed %llu  epoch %d/%d step %4d/%-4d loss %.4f  acc %.4f  "
               "%5.0f img/s  ETA %4.0fs ",
               p->run, p->runs, name, (unsigned long long)p->seed, p->fit->epoch, p->fit->epochs,
               p->fit->step, p->fit->steps, p->fit->loss, p->fit->accuracy, p->fit->images_per_s,
               p->fit->eta_s);
        fflush(stdout);
    } else if (p->finished) {
        const ck_study_result *r = p->finished;
        ui->done++;
        if (ui->csv) /* a failure here is reported by the final write */
            (void)write_study_csv(ui->csv, ui->v, ui->res, ui->done);
        printf("%s[%d/%d] %-22s seed %llu  test %.4f  train %.4f  gap %+.4f  %.0f img/s  %.1fs"
               "%s\n",
               ui->tty ? "\r" : "", p->run, p->runs, name, (unsigned long long)r->seed,
               r->test_accuracy, r->train_accuracy, r->gap, r->images_per_s, r->seconds,
               ui->tty ? "                    " : "");
        fflush(stdout);
    }
    return 0;
}

/* "a/b/c" of n numbers with `digits` decimals ("-" when n == 0). */
static void join_nums(char *buf, size_t len, const double *x, int n, int digits) {
    size_t pos = 0;
    buf[0] = '\0';
    if (n == 0)
        snprintf(buf, len, "-");
    for (int k = 0; k < n && pos + 1 < len; ++k) {
        int w = snprintf(buf + pos, len - pos, "%s%.*f", k ? "/" : "", digits, x[k]);
        pos += w > 0 ? (size_t)w : 0;
    }
}

/* The runs so far, replacing path whole: a reader never sees half. */
static int write_study_csv(const char *path, const ck_study_variant *v, const ck_study_result *res,
                           int n) {
    char tmp[4096];
    FILE *f = open_replacing(path, tmp, sizeof tmp);
    if (!f)
        return -1;
    fprintf(f, "variant,order,seed,test_accuracy,test_loss,train_accuracy,gap,"
               "train_running_accuracy,images_per_s,seconds,bn_layers,bn_shift,bn_shift_moving,"
               "dropout_layers,dropout_zeroed\n");
    for (int i = 0; i < n; ++i) {
        const ck_study_result *r = &res[i];
        char a[512], b[512], c[512], dl[256], bl[256];
        double lay[CK_STUDY_MAX_MEASURE];
        for (int k = 0; k < r->n_bn; ++k)
            lay[k] = r->bn_layer[k];
        join_nums(bl, sizeof bl, lay, r->n_bn, 0);
        for (int k = 0; k < r->n_dropout; ++k)
            lay[k] = r->dropout_layer[k];
        join_nums(dl, sizeof dl, lay, r->n_dropout, 0);
        join_nums(a, sizeof a, r->bn_shift, r->n_bn, 4);
        join_nums(b, sizeof b, r->bn_shift_moving, r->n_bn, 4);
        join_nums(c, sizeof c, r->dropout_zeroed, r->n_dropout, 4);
        fprintf(f, "%s,\"%s\",%llu,%.4f,%.4f,%.4f,%.4f,%.4f,%.1f,%.1f,%s,%s,%s,%s,%s\n",
                v[r->variant].name, v[r->variant].order, (unsigned long long)r->seed,
                r->test_accuracy, r->test_loss, r->train_accuracy, r->gap,
                r->train_running_accuracy, r->images_per_s, r->seconds, bl, a, b, dl, c);
    }
    return close_replacing(f, tmp);
}

/* cnnkit study MODEL [...]: 0 ok, 1 runtime failure, 2 usage or model file. */
int cmd_study(const opts *oin) {
    opts o = *oin;
    if (o.quick) { /* the CPU setting (docs/order-study.md); explicit options win */
        if (!o.seeds)
            o.seeds = 3;
        if (o.epochs < 1)
            o.epochs = 1;
        if (!o.limit)
            o.limit = 4000;
        if (!o.test_limit)
            o.test_limit = 2000;
        if (!o.batch_given)
            o.batch = 16; /* 250 steps: Keras' BN momentum 0.99 needs steps, not images */
        if (!o.measure_batches)
            o.measure_batches = 8;
        if (!(o.bn_momentum > 0.0f))
            o.bn_momentum = 0.9f; /* 250 steps: 0.99^250 = 0.08 of the init 1 would remain */
    }
    if (!o.seeds)
        o.seeds = 5;
    if (o.seed == 0) { /* ck_study_run reads first_seed 0 as its default, 1 */
        fprintf(stderr, "cnnkit: study: --seed is the first of the seeds, 1 or more\n");
        return EXIT_USAGE;
    }
    if (o.epochs < 1)
        o.epochs = 3;
    int kinds[CK_STUDY_KIND_COUNT], nk = 0;
    if (o.variants) {
        char list[512];
        snprintf(list, sizeof list, "%s", o.variants);
        for (char *t = strtok(list, ","); t; t = strtok(NULL, ",")) {
            const int k = ck_study_kind_from_name(t);
            if (k < 0 || nk == CK_STUDY_KIND_COUNT) {
                fprintf(stderr,
                        "cnnkit: study: --variants: unknown variant '%s' (stacks: original, "
                        "asker, bn-after-relu, dropout-before-pool, spatial-dropout, "
                        "dropout-after-last-bn; residual graphs: original, bn-after-add, "
                        "relu-before-add, relu-preact, full-preact)\n",
                        t);
                return EXIT_USAGE;
            }
            for (int j = 0; j < nk; ++j)
                if (kinds[j] == k) {
                    fprintf(stderr, "cnnkit: study: --variants: '%s' is listed twice\n", t);
                    return EXIT_USAGE;
                }
            kinds[nk++] = k;
        }
        if (nk == 0) {
            fprintf(stderr,
                    "cnnkit: study: --variants: no variant named in '%s' (leave the "
                    "option out for all)\n",
                    o.variants);
            return EXIT_USAGE;
        }
    }
    char err[1024];
    ck_keras_model km;
    ck_status st;
    if (is_keras_file(o.model)) {
        st = keras_file_model(o.model, &km, err, sizeof err);
    } else {
        char *text = read_model(o.model);
        if (!text)
            return EXIT_USAGE;
        st = ck_keras_parse(text, &km, err, sizeof err);
        free(text);
    }
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: %s: %s\n", o.model, err[0] ? err : ck_status_string(st));
        return EXIT_USAGE;
    }
    if (km.warnings[0]) {
        print_warnings(o.model, km.warnings);
    }
    /* the study trains every variant in fp32: a file's other policy is said, not dropped */
    if ((km.has_precision && km.precision != CK_PRECISION_FP32) ||
        (o.precision && o.precision - 1 != CK_PRECISION_FP32))
        fprintf(stderr,
                "cnnkit: warning: %s: the study trains its variants in fp32; the %s precision is "
                "not applied\n",
                o.model, o.precision ? "--precision" : "file's");
    if (o.in_h && km.count > 0) {
        km.layers[0].input_h = o.in_h;
        km.layers[0].input_w = o.in_w;
        km.layers[0].input_c = o.in_c;
    }
    if (!nk) {
        nk = ck_study_default_kinds(km.layers, km.count, kinds);
        const int gl = ck_layers_graph_layer(km.layers, km.count);
        if (gl >= 0 && nk == 1)
            fprintf(stderr,
                    "cnnkit: study: %s is a layer graph (layer %d) without post-activation "
                    "residual units: only the 'original' variant is run\n",
                    o.model, gl);
    }
    warn_data_range(&o, km.layers, km.count);
    ck_study_variant v[CK_STUDY_KIND_COUNT];
    st = ck_study_variants(km.layers, km.count, kinds, nk, v, err, sizeof err);
    ck_optimizer_desc opt = km.optimizer;
    const int has_opt = km.has_compile;
    ck_keras_model_free(&km);
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: study: %s: %s\n", o.model, err);
        return st == CK_STATUS_BAD_PARAM ? EXIT_USAGE : EXIT_RUNTIME;
    }
    ck_device dev = !strcmp(o.device, "cuda") ? CK_DEVICE_CUDA : CK_DEVICE_CPU;
    if (!strcmp(o.device, "auto"))
        dev = ck_cuda_available() ? CK_DEVICE_CUDA : CK_DEVICE_CPU;
    if (dev == CK_DEVICE_CUDA && !ck_cuda_available()) {
        ck_context *probe = NULL; /* its failure says why */
        (void)ck_context_create(&probe, CK_DEVICE_CUDA, 0, 1);
        fprintf(stderr, "cnnkit: --device cuda: no usable CUDA device: %s\n",
                probe ? "(device lost)" : ck_context_last_error(NULL));
        ck_context_destroy(probe);
        ck_study_variants_free(v, nk);
        return EXIT_RUNTIME;
    }
    ck_dataset train = {0}, test = {0};
    int rc = load_data(&o, NULL, 1, &train);
    if (!rc)
        rc = load_data(&o, NULL, 0, &test);
    if (!rc)
        rc = limit_data(&train, o.limit, "--limit");
    if (!rc)
        rc = limit_data(&test, o.test_limit, "--test-limit");
    /* the variants must build: a model-file error is a usage error, checked with the data shape */
    for (int i = 0; !rc && i < nk; ++i) {
        ck_context *c = NULL;
        ck_model *m = NULL;
        st = ck_context_create(&c, CK_DEVICE_CPU, 0, 1);
        if (st == CK_STATUS_SUCCESS)
            st = ck_model_create(c, &m);
        for (int k = 0; st == CK_STATUS_SUCCESS && k < v[i].count; ++k)
            st = ck_model_add(m, &v[i].layers[k]);
        if (st == CK_STATUS_SUCCESS)
            st = ck_model_build(m, train.h, train.w, train.c, 1);
        if (st != CK_STATUS_SUCCESS)
            fprintf(stderr, "cnnkit: study: %s: variant %s: %s\n", o.model, v[i].name,
                    c ? ck_context_last_error(c) : ck_status_string(st));
        ck_model_destroy(m);
        ck_context_destroy(c);
        if (st != CK_STATUS_SUCCESS)
            rc = st == CK_STATUS_ALLOC_FAILED ? EXIT_RUNTIME : EXIT_USAGE;
    }
    /* the orders of a residual graph are its units' (study.h) */
    const int residual = !rc && strstr(v[0].order, "+ x") != NULL;
    ck_study_result *res = NULL;
    ck_study_summary *sm = NULL;
    int nres = 0;
    if (!rc) {
        printf("cnnkit study: %s, device %s, %d train / %d test images, batch %d, %d epoch%s, "
               "seeds %llu..%llu\n",
               o.model, dev == CK_DEVICE_CUDA ? "cuda" : "cpu", train.count, test.count, o.batch,
               o.epochs, o.epochs > 1 ? "s" : "", o.seed, o.seed + (unsigned long long)o.seeds - 1);
        if (o.bn_momentum > 0.0f)
            printf("BN momentum %g in every variant (moving statistics only; training is the "
                   "same)\n",
                   (double)o.bn_momentum);
        if (residual)
            printf("variants (residual units, He et al. 2016 Fig. 4: C conv, B BN, R relu, "
                   "+ x the shortcut's addition):\n");
        else
            printf("variants (Conv blocks: C conv, B BN, R relu, P pool, D dropout, S spatial "
                   "dropout):\n");
        for (int i = 0; i < nk; ++i) {
            printf("  %-22s %s\n", v[i].name, v[i].order);
            /* "exactly" only where the floats agree too (CK_EXACT_VALUES or better) */
            if (v[i].equivalent_to >= 0)
                printf("  %-22s = %s %s (%s): not trained\n", "", v[v[i].equivalent_to].name,
                       v[i].exactness <= CK_EXACT_VALUES ? "exactly" : "in exact arithmetic",
                       v[i].equivalence);
        }
        fflush(stdout);
        res = (ck_study_result *)calloc((size_t)nk * o.seeds, sizeof *res);
        sm = (ck_study_summary *)calloc((size_t)nk, sizeof *sm);
        if (!res || !sm) {
            fprintf(stderr, "cnnkit: study: out of memory\n");
            rc = EXIT_RUNTIME;
        }
    }
    const char *const names[3] = {"MODEL", "--csv", "--svg"};
    const char *const paths[3] = {o.model, o.csv, o.svg};
    if (!rc)
        rc = distinct_files("study", names, paths, 3);
    const char *const in_names[1] = {"--data"};
    const char *const in_paths[1] = {data_dir_resolved(&o)};
    for (int k = 1; k < 3 && !rc; ++k)
        rc = output_not_input("study", names[k], paths[k], in_names, in_paths, 1);
    if (!rc && ((o.csv && check_output_path("--csv", o.csv, 1)) ||
                (o.svg && check_output_path("--svg", o.svg, 1))))
        rc = EXIT_RUNTIME;
    int failed = 0;
    if (!rc) {
        study_ui ui = {isatty(STDOUT_FILENO), v, o.csv, res, 0};
        ck_study_options so;
        memset(&so, 0, sizeof so);
        so.device = dev;
        so.seeds = o.seeds;
        so.first_seed = o.seed;
        so.epochs = o.epochs;
        so.batch = o.batch;
        so.optimizer = has_opt ? &opt : NULL;
        so.measure_batches = o.measure_batches;
        so.bn_momentum = o.bn_momentum;
        so.on_progress = on_study_progress;
        so.user = &ui;
        st = ck_study_run(v, nk, &train, &test, &so, res, nk * o.seeds, &nres, err, sizeof err);
        if (st != CK_STATUS_SUCCESS) {
            fprintf(stderr, "cnnkit: study: %s\n", err);
            failed = 1;
            if (nres > 0)
                printf("cnnkit: study: the %d run%s finished before it:\n", nres,
                       nres > 1 ? "s" : "");
            else
                rc = EXIT_RUNTIME;
        }
    }
    if (!rc) {
        printf("\n| variant | %s | runs | test accuracy (mean +- 95%% CI) | train-test gap "
               "| BN shift per BN (Var_inf/Var_train) | dropout zeroed | img/s |\n"
               "|---|---|---|---|---|---|---|---|\n",
               residual ? "residual units" : "Conv blocks");
        for (int i = 0; i < nk; ++i) {
            ck_study_summarize(res, nres, i, &sm[i]);
            if (v[i].equivalent_to >= 0) {
                printf("| %s | %s | - | = %s (%s, not trained) | | | | |\n", v[i].name, v[i].order,
                       v[v[i].equivalent_to].name,
                       v[i].exactness <= CK_EXACT_VALUES ? "exactly equivalent"
                                                         : "equivalent in exact arithmetic");
                continue;
            }
            char bn[256], dz[256];
            join_nums(bn, sizeof bn, sm[i].bn_shift, sm[i].n_bn, 2);
            join_nums(dz, sizeof dz, sm[i].dropout_zeroed, sm[i].n_dropout, 3);
            /* one seed has no interval: say so rather than "+- nan" */
            char acc_ci[32] = "(one run)", gap_ci[32] = "(one run)";
            if (!isnan(sm[i].acc_ci95))
                snprintf(acc_ci, sizeof acc_ci, "+- %.4f", sm[i].acc_ci95);
            if (!isnan(sm[i].gap_ci95))
                snprintf(gap_ci, sizeof gap_ci, "+- %.4f", sm[i].gap_ci95);
            printf("| %s | %s | %d | %.4f %s | %+.4f %s | %s | %s | %.0f |\n", v[i].name,
                   v[i].order, sm[i].runs, sm[i].acc_mean, acc_ci, sm[i].gap_mean, gap_ci, bn, dz,
                   sm[i].images_per_s);
        }
        /* the same seeds pair the runs: differences against the first trained variant, with
         * Holm's correction over the comparisons and the exact tests (few seeds) */
        int base = -1, vars[CK_STUDY_KIND_COUNT], nvars = 0;
        for (int i = 0; i < nk && base < 0; ++i)
            if (v[i].equivalent_to < 0 && sm[i].runs > 0)
                base = i;
        for (int i = 0; base >= 0 && o.seeds > 1 && i < nk; ++i)
            if (i != base && v[i].equivalent_to < 0 && sm[i].runs > 0)
                vars[nvars++] = i;
        ck_paired_test pt[CK_STUDY_KIND_COUNT];
        if (nvars > 0 &&
            ck_study_paired_tests(res, nres, vars, nvars, base, pt) == CK_STATUS_SUCCESS) {
            printf("\nPaired with %s (same seed: same initial weights and data order): test "
                   "accuracy difference per seed, mean +- 95%% t interval; p: two-sided paired t "
                   "test, Holm-adjusted over the %d comparisons, exact sign and Wilcoxon "
                   "signed-rank tests (with n seeds neither can go below 2^(1-n)). different: "
                   "both Holm-adjusted p < 0.05; fragile: the interval excludes 0 but that does "
                   "not survive\n| variant | pairs | difference | t p | Holm t p | sign p | "
                   "Wilcoxon p | Holm Wilcoxon p | verdict |\n|---|---|---|---|---|---|---|---|---|"
                   "\n",
                   v[base].name, nvars);
            for (int k = 0; k < nvars; ++k) {
                const ck_paired_test *t = &pt[k];
                if (t->pairs == 0)
                    continue;
                printf("| %s | %d | %+.4f +- %.4f | %.3g | %.3g | %.3g | %.3g | %.3g | %s |\n",
                       v[t->variant].name, t->pairs, t->mean, t->half, t->p_t, t->p_t_holm,
                       t->p_sign, t->p_wilcoxon, t->p_wilcoxon_holm,
                       t->verdict == CK_PAIRED_DIFFERENT ? "different"
                       : t->verdict == CK_PAIRED_FRAGILE ? "fragile"
                                                         : "-");
            }
        }
        if (o.csv) {
            if (write_study_csv(o.csv, v, res, nres) != 0) {
                fprintf(stderr, "cnnkit: --csv %s: cannot write\n", o.csv);
                rc = EXIT_RUNTIME;
            } else {
                printf("csv %s\n", o.csv);
            }
        }
        if (o.svg) {
            if (write_study_svg(o.svg, v, nk, sm, res, nres, o.seeds) != 0) {
                fprintf(stderr, "cnnkit: --svg %s: cannot write\n", o.svg);
                rc = EXIT_RUNTIME;
            } else {
                printf("svg %s\n", o.svg);
            }
        }
    }
    if (failed)
        rc = EXIT_RUNTIME;
    free(res);
    free(sm);
    ck_dataset_free(&train);
    ck_dataset_free(&test);
    ck_study_variants_free(v, nk);
    return rc;
}
