/* Suite `bench`: bench/bench_ops run as a program. Its CSV must parse, cover every variant of the
 * op table once per device, carry the table's byte counts, a GB/s that follows from them, and
 * checks within the cases' tolerances; GPU rows run or skip as the machine allows. */
#include "common.h"
#include "ops/ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef CNNKIT_BENCH_OPS_PATH

#define NF                                                                                         \
    14 /* op,variant,device,impl,bytes,repeats,median_us,gbps,copy_us,ratio,err,tol,status,note */
enum {
    F_OP,
    F_VAR,
    F_DEV,
    F_IMPL,
    F_BYTES,
    F_REP,
    F_US,
    F_GBPS,
    F_COPY,
    F_RATIO,
    F_ERR,
    F_TOL,
    F_STATUS,
    F_NOTE
};

static char g_out[1 << 17];

/* Splits one CSV line (no quoting: bench_ops writes none) in place; returns the field count. */
static int split(char *line, char **f) {
    int n = 0;
    f[n++] = line;
    for (char *p = line; *p; p++)
        if (*p == ',') {
            *p = '\0';
            if (n == NF + 1)
                return n;
            f[n++] = p + 1;
        }
    return n;
}

static const op_variant *find_variant(const char *op, const char *var, int bench,
                                      const op_case **cp) {
    for (int ci = 0; ci < op_ncases; ci++) {
        const op_case *c = op_cases[ci];
        if (strcmp(c->name, op))
            continue;
        const op_variant *vs = bench ? c->bench_variants : c->variants;
        for (int k = 0; k < (bench ? c->nbench : c->nvariants); k++)
            if (!strcmp(vs[k].name, var)) {
                *cp = c;
                return &vs[k];
            }
    }
    return NULL;
}

static double num(const char *s, const char *what, const char *row) {
    char *end = NULL;
    const double v = strtod(s, &end);
    cr_assert(end != s && *end == '\0', "%s: '%s' is not a number (row %s)", what, s, row);
    return v;
}

/* Runs bench_ops with args and checks every row; counts[dev][case][variant] gets the rows seen.
 * Returns the number of rows. */
static int run_and_check(const char *args, int bench, int counts[2][32][16]) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --csv 2>/dev/null", args);
    const int rc = t_run_prog(CNNKIT_BENCH_OPS_PATH, cmd, g_out, sizeof g_out);
    cr_assert_eq(rc, 0, "bench_ops %s exited %d:\n%s", cmd, rc, g_out);
    char *save = NULL, *line = strtok_r(g_out, "\n", &save);
    cr_assert_not_null(line);
    cr_assert_str_eq(line, "op,variant,device,impl,bytes,repeats,median_us,gbps,copy_us,ratio,err,"
                           "tol,status,note");
    int rows = 0;
    while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
        char copy[512], *f[NF + 1];
        snprintf(copy, sizeof copy, "%s", line);
        cr_assert_eq(split(line, f), NF, "row with the wrong field count: %s", copy);
        const op_case *c = NULL;
        const op_variant *v = find_variant(f[F_OP], f[F_VAR], bench, &c);
        cr_assert_not_null(v, "row names no variant of the table: %s", copy);
        const int gpu = !strcmp(f[F_DEV], "gpu");
        cr_assert(gpu || !strcmp(f[F_DEV], "cpu"), "device: %s", copy);
        int ci = 0;
        while (op_cases[ci] != c)
            ci++;
        counts[gpu][ci][v - (bench ? c->bench_variants : c->variants)]++;
        cr_assert_eq((size_t)num(f[F_BYTES], "bytes", copy), op_bytes(v), "%s", copy);
        const char *st = f[F_STATUS];
        if (!strcmp(st, "skip")) {
            cr_assert(gpu, "only GPU rows may skip: %s", copy);
            cr_assert(strlen(f[F_NOTE]) > 0, "a skip says why: %s", copy);
            cr_assert_eq(strlen(f[F_US]), 0, "a skipped row has no time: %s", copy);
            rows++;
            continue;
        }
        cr_assert_str_eq(st, "ok", "%s", copy);
        const double us = num(f[F_US], "median_us", copy), gbps = num(f[F_GBPS], "gbps", copy);
        cr_assert(us > 0 && isfinite(us), "%s", copy);
        /* GB/s = bytes / ns; both printed to 6 significant digits */
        const double want = (double)op_bytes(v) / (us * 1e3);
        cr_assert(fabs(gbps - want) <= 1e-4 * want, "gbps %g, bytes/time %g: %s", gbps, want, copy);
        if (gpu) {
            cr_assert(num(f[F_COPY], "copy_us", copy) > 0, "%s", copy);
            cr_assert(num(f[F_TOL], "tol", copy) == c->gpu_tol, "%s", copy);
        }
        /* the CPU op is checked against the reference; a data move has no CPU op to check */
        if (gpu || c->cpu) {
            const double err = num(f[F_ERR], "err", copy), tol = num(f[F_TOL], "tol", copy);
            cr_assert(err <= tol, "%s", copy);
            if (!gpu)
                cr_assert_eq(tol, c->ref_tol, "%s", copy);
        } else {
            cr_assert_eq(strlen(f[F_ERR]), 0, "%s", copy);
            cr_assert_str_eq(f[F_IMPL], "ref", "%s", copy);
        }
        cr_assert_eq((int)num(f[F_REP], "repeats", copy) > 0, 1);
        rows++;
    }
    return rows;
}

Test(bench, ops_cpu_csv_covers_the_table) {
    static int counts[2][32][16];
    cr_assert_leq(op_ncases, 32);
    const int rows = run_and_check("--cpu-only --repeats 3", 0, counts);
    int want = 0;
    for (int ci = 0; ci < op_ncases; ci++)
        for (int k = 0; k < op_cases[ci]->nvariants; k++) {
            cr_expect_eq(counts[0][ci][k], 1, "%s/%s: %d CPU rows", op_cases[ci]->name,
                         op_cases[ci]->variants[k].name, counts[0][ci][k]);
            cr_expect_eq(counts[1][ci][k], 0, "--cpu-only printed a GPU row");
            want++;
        }
    cr_assert_eq(rows, want);
}

/* Without --cpu-only every variant gets a GPU row too: run and checked on a device, a skip with
 * its reason without one. */
Test(bench, ops_filter_and_gpu_rows) {
    static int counts[2][32][16];
    run_and_check("--repeats 2 --filter fill/", 0, counts);
    for (int ci = 0; ci < op_ncases; ci++)
        for (int k = 0; k < op_cases[ci]->nvariants; k++) {
            const int fill = !strcmp(op_cases[ci]->name, "fill");
            cr_expect_eq(counts[0][ci][k], fill, "%s/%s", op_cases[ci]->name,
                         op_cases[ci]->variants[k].name);
            cr_expect_eq(counts[1][ci][k], fill, "%s/%s", op_cases[ci]->name,
                         op_cases[ci]->variants[k].name);
        }
#ifdef CNNKIT_HAVE_CUDA
    /* with a device the GPU rows must have run (run_and_check lets them skip) */
    if (ck_cuda_available())
        cr_assert_null(strstr(g_out, ",skip,"), "a device is here but GPU rows skipped");
#endif
}

/* --bench-sizes runs the cases' bench_variants (tests/test_ops.c: bigger than the test shapes). */
Test(bench, ops_bench_sizes) {
    static int counts[2][32][16];
    cr_assert_eq(run_and_check("--cpu-only --bench-sizes --repeats 1 --filter fill/", 1, counts),
                 1);
    for (int ci = 0; ci < op_ncases; ci++)
        for (int k = 0; k < op_cases[ci]->nbench; k++)
            cr_expect_eq(counts[0][ci][k], !strcmp(op_cases[ci]->name, "fill"), "%s/%s",
                         op_cases[ci]->name, op_cases[ci]->bench_variants[k].name);
}

Test(bench, ops_bad_arguments) {
    cr_assert_eq(t_run_prog(CNNKIT_BENCH_OPS_PATH, "--repeats 0", g_out, sizeof g_out), 2);
    cr_assert_not_null(strstr(g_out, "--repeats"), "%s", g_out);
    cr_assert_eq(t_run_prog(CNNKIT_BENCH_OPS_PATH, "--frobnicate", g_out, sizeof g_out), 2);
    cr_assert_not_null(strstr(g_out, "--frobnicate"), "%s", g_out);
}

#endif

#ifdef CNNKIT_PYTHON3_PATH
/* bench/compare.py: cnnkit's figures against the peers' from one run. The ratios follow from the
 * figures (64,000 / 80,000 images/s = 0.80x), the target verdicts from the ratios. */
static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

static char g_dir[64];

static void fixtures(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/cnnkit-compare-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
    char p[128];
    snprintf(p, sizeof p, "%s/bt.json", g_dir);
    write_text(p, "{\"device\": \"cuda\", \"conv_algo\": \"deterministic\", \"results\": ["
                  "{\"batch\": 128, \"ms_per_step\": 2.0, \"images_per_s\": 64000.0, "
                  "\"model_bytes\": 104857600},"
                  "{\"batch\": 512, \"ms_per_step\": 4.0, \"images_per_s\": 128000.0, "
                  "\"model_bytes\": 209715200}]}\n");
    snprintf(p, sizeof p, "%s/pt.json", g_dir);
    write_text(p, "{\"device\": \"cuda\", \"results\": ["
                  "{\"batch\": 128, \"mode\": \"eager\", \"images_per_s\": 32000.0, "
                  "\"peak_mib\": 50.0},"
                  "{\"batch\": 128, \"mode\": \"reduce-overhead\", \"images_per_s\": 80000.0, "
                  "\"peak_mib\": 80.0},"
                  "{\"batch\": 512, \"mode\": \"eager\", \"images_per_s\": 100000.0, "
                  "\"peak_mib\": 300.0}]}\n");
    snprintf(p, sizeof p, "%s/pk.jsonl", g_dir);
    write_text(p, "{\"backend\": \"jax\", \"batch\": 512, \"images_per_s\": 160000.0, "
                  "\"device\": \"gpu\", \"math\": \"fp32\"}\n");
}

static void remove_fixtures(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    cr_assert_eq(system(cmd), 0);
}

static int compare(const char *args) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bench/compare.py %s", args);
    return t_run_prog(CNNKIT_PYTHON3_PATH, cmd, g_out, sizeof g_out);
}

Test(bench, compare_gives_the_ratios_and_verdicts) {
    fixtures();
    char args[512];
    snprintf(args, sizeof args,
             "--cnnkit %s/bt.json --torch %s/pt.json --keras %s/pk.jsonl "
             "--json %s/out.json --markdown %s/out.md",
             g_dir, g_dir, g_dir, g_dir, g_dir);
    cr_assert_eq(compare(args), 0, "%s", g_out);
    /* batch 128: the best PyTorch mode is the compiled one; memory against the smaller peak */
    cr_assert_not_null(strstr(g_out, "batch 128, cnnkit deterministic: 0.80x the best PyTorch "
                                     "mode (reduce-overhead) - target >= 1.0x: NOT met; memory "
                                     "100 MiB vs PyTorch's smallest peak 50 MiB - target <=: NOT "
                                     "met"),
                       "%s", g_out);
    /* batch 512: 1.28x PyTorch, 0.80x Keras (the best peer), memory 200 <= 300 MiB */
    cr_assert_not_null(strstr(g_out, "batch 512, cnnkit deterministic: 1.28x the best PyTorch "
                                     "mode (eager) - target >= 1.0x: met; memory 200 MiB vs "
                                     "PyTorch's smallest peak 300 MiB - target <=: met"),
                       "%s", g_out);
    cr_assert_null(strstr(g_out, "different devices"), "JAX's gpu is cuda: %s", g_out);
    /* a GPU run of bench_train --cuda-graph both: its rows are told apart */
    char p2[128];
    snprintf(p2, sizeof p2, "%s/graph.json", g_dir);
    write_text(p2, "{\"device\": \"cuda\", \"results\": ["
                   "{\"batch\": 128, \"cuda_graph\": \"off\", \"images_per_s\": 40000.0, "
                   "\"host_fraction\": 0.3},"
                   "{\"batch\": 128, \"cuda_graph\": \"on\", \"images_per_s\": 96000.0, "
                   "\"host_fraction\": 0.02}]}\n");
    snprintf(args, sizeof args, "--cnnkit det=%s --torch %s/pt.json", p2, g_dir);
    cr_assert_eq(compare(args), 0, "%s", g_out);
    cr_assert_not_null(strstr(g_out, "cnnkit det eager: 0.50x the best PyTorch mode"), "%s", g_out);
    cr_assert_not_null(strstr(g_out, "cnnkit det graph: 1.20x the best PyTorch mode"), "%s", g_out);
    /* the step's host part against issue 14's 5% at batch 128 */
    cr_assert_not_null(strstr(g_out, "host part 30.0% of the step - target <= 5%: NOT met"), "%s",
                       g_out);
    cr_assert_not_null(strstr(g_out, "host part 2.0% of the step - target <= 5%: met"), "%s",
                       g_out);
    char p[128];
    snprintf(p, sizeof p, "%s/out.md", g_dir);
    char *md = t_read_file(p, NULL);
    cr_assert_not_null(md);
    cr_assert_not_null(strstr(md, "| 512 | deterministic | 128000 | 100000 (eager) | 1.28x | "
                                  "160000 (keras jax) | 0.80x | 200 / 300 |"),
                       "%s", md);
    free(md);
    /* JAX and TensorFlow run TF32 on a GPU by default: a Keras row without "math" (before
     * peer_keras --math) is no strict-fp32 peer; with "math": "tf32" neither */
    for (int k = 0; k < 2; ++k) {
        snprintf(p, sizeof p, "%s/pk32.jsonl", g_dir);
        write_text(p, k ? "{\"backend\": \"jax\", \"batch\": 512, \"images_per_s\": "
                          "160000.0, \"device\": \"gpu\", \"math\": \"tf32\"}\n"
                        : "{\"backend\": \"jax\", \"batch\": 512, \"images_per_s\": "
                          "160000.0, \"device\": \"gpu\"}\n");
        snprintf(args, sizeof args,
                 "--cnnkit %s/bt.json --torch %s/pt.json --keras %s "
                 "--markdown %s/tf.md",
                 g_dir, g_dir, p, g_dir);
        cr_assert_eq(compare(args), 0, "%s", g_out);
        snprintf(p, sizeof p, "%s/tf.md", g_dir);
        md = t_read_file(p, NULL);
        cr_assert_not_null(md);
        cr_assert_null(strstr(md, "160000 (keras jax) | 0.80x"), "a TF32 row as an fp32 peer: %s",
                       md);
        free(md);
    }
    remove_fixtures();
}

/* issue 16: a bf16 cnnkit figure is compared with PyTorch's bf16 (autocast) modes only, an fp32
 * one with the fp32 modes, each with its own class's memory peak */
Test(bench, compare_pairs_bf16_with_bf16) {
    fixtures();
    char p[128], q[128], args[512];
    snprintf(p, sizeof p, "%s/bf.json", g_dir);
    write_text(p, "{\"device\": \"cuda\", \"conv_algo\": \"deterministic\", \"precision\": "
                  "\"bf16\", \"results\": ["
                  "{\"batch\": 128, \"images_per_s\": 90000.0, \"model_bytes\": 41943040}]}\n");
    snprintf(q, sizeof q, "%s/pt16.json", g_dir);
    write_text(q, "{\"device\": \"cuda\", \"results\": ["
                  "{\"batch\": 128, \"mode\": \"reduce-overhead\", \"images_per_s\": 80000.0, "
                  "\"peak_mib\": 80.0},"
                  "{\"batch\": 128, \"mode\": \"bf16 channels_last\", \"images_per_s\": 60000.0, "
                  "\"peak_mib\": 30.0},"
                  "{\"batch\": 128, \"mode\": \"bf16 reduce-overhead\", \"images_per_s\": "
                  "120000.0, \"peak_mib\": 60.0}]}\n");
    snprintf(args, sizeof args, "--cnnkit %s --cnnkit %s/bt.json --torch %s --markdown %s/b.md", p,
             g_dir, q, g_dir);
    cr_assert_eq(compare(args), 0, "%s", g_out);
    /* bf16: 90,000 / 120,000 = 0.75x the best bf16 mode, 40 MiB against bf16's 30 MiB */
    cr_assert_not_null(strstr(g_out, "batch 128, cnnkit deterministic bf16: 0.75x the best "
                                     "PyTorch mode (bf16 reduce-overhead) - target >= 1.0x: NOT "
                                     "met; memory 40 MiB vs PyTorch's smallest peak 30 MiB"),
                       "%s", g_out);
    /* fp32: 64,000 / 80,000 against the fp32 modes only, the fp32 peak */
    cr_assert_not_null(strstr(g_out, "batch 128, cnnkit deterministic: 0.80x the best PyTorch "
                                     "mode (reduce-overhead) - target >= 1.0x: NOT met; memory "
                                     "100 MiB vs PyTorch's smallest peak 80 MiB"),
                       "%s", g_out);
    snprintf(p, sizeof p, "%s/b.md", g_dir);
    char *md = t_read_file(p, NULL);
    cr_assert_not_null(md);
    cr_assert_not_null(strstr(md, "| 128 | deterministic bf16 | 90000 | 120000 (bf16 "
                                  "reduce-overhead) | 0.75x |"),
                       "%s", md);
    free(md);
    remove_fixtures();
}

Test(bench, compare_refuses_bad_input) {
    fixtures();
    char args[512], p[128];
    snprintf(args, sizeof args, "--cnnkit %s/none.json", g_dir);
    cr_assert_eq(compare(args), 2, "%s", g_out);
    cr_assert_not_null(strstr(g_out, "none.json: No such file"), "%s", g_out);
    snprintf(p, sizeof p, "%s/bad.json", g_dir);
    write_text(p, "{\"results\": [{\"batch\": 128, \"images_per_s\": -5}]}");
    snprintf(args, sizeof args, "--cnnkit %s", p);
    cr_assert_eq(compare(args), 2, "%s", g_out);
    cr_assert_not_null(strstr(g_out, "'images_per_s' is -5"), "%s", g_out);
    write_text(p, "{\"results\": [{\"batch\": 128, \"images_");
    cr_assert_eq(compare(args), 2, "%s", g_out);
    cr_assert_not_null(strstr(g_out, "bad.json: not JSON"), "%s", g_out);
    /* cut between rows, as bench_train leaves it when its timeout stops it: read up to there */
    write_text(p, "{\"device\": \"cuda\", \"conv_algo\": \"deterministic\", \"results\": "
                  "[{\"batch\": 128, \"images_per_s\": "
                  "64000.0}, {\"batch\": 512, \"images_per_s\": 128000.0}");
    snprintf(args, sizeof args, "--cnnkit %s --torch %s/pt.json", p, g_dir);
    cr_assert_eq(compare(args), 0, "%s", g_out);
    cr_assert_not_null(strstr(g_out, "bad.json is cut (its run was stopped): 2 complete row(s)"),
                       "%s", g_out);
    cr_assert_not_null(strstr(g_out, "batch 512, cnnkit deterministic: 1.28x"), "%s", g_out);
    write_text(p, "{\"results\": [");
    snprintf(args, sizeof args, "--cnnkit %s", p);
    cr_assert_eq(compare(args), 1, "a cut file without rows is no figure: %s", g_out);
    /* only bench_train's files may be cut: a peer's must be whole */
    snprintf(args, sizeof args, "--cnnkit %s/bt.json --torch %s", g_dir, p);
    cr_assert_eq(compare(args), 2, "%s", g_out);
    cr_assert_not_null(strstr(g_out, "bad.json: not JSON"), "%s", g_out);
    snprintf(args, sizeof args, "--torch %s/pt.json", g_dir);
    cr_assert_eq(compare(args), 1, "no cnnkit figure: %s", g_out);
    cr_assert_eq(compare("--frobnicate"), 2, "%s", g_out);
    snprintf(p, sizeof p, "%s/bad.jsonl", g_dir);
    write_text(p, "[1, 2]\n");
    snprintf(args, sizeof args, "--cnnkit %s/bt.json --keras %s", g_dir, p);
    cr_assert_eq(compare(args), 2, "%s", g_out);
    cr_assert_not_null(strstr(g_out, "bad.jsonl:1: not a JSON object"), "%s", g_out);
    snprintf(args, sizeof args, "--cnnkit %s/bt.json --json %s/none/out.json", g_dir, g_dir);
    cr_assert_eq(compare(args), 2, "%s", g_out);
    cr_assert_not_null(strstr(g_out, "--json"), "%s", g_out);
    remove_fixtures();
}

/* --run measures on this machine (the CPU here) and compares what it has: peers it cannot run
 * are named and left out. */
Test(bench, compare_runs_bench_train, .timeout = 120) {
    if (access(CNNKIT_BENCH_TRAIN_PATH, X_OK) != 0)
        cr_skip("%s is not here (a relocated test bundle)", CNNKIT_BENCH_TRAIN_PATH);
    cr_assert_eq(compare("--run --bench-train " CNNKIT_BENCH_TRAIN_PATH
                         " --batches 16 --steps 1 --device cpu --python /bin/false"),
                 0, "%s", g_out);
    cr_assert_not_null(strstr(g_out, "PyTorch skipped"), "%s", g_out);
    cr_assert_not_null(strstr(g_out, "Keras skipped"), "%s", g_out);
    /* its row, and with no PyTorch figure the verdict line says so */
    cr_assert_not_null(strstr(g_out, "compare: batch 16, cnnkit deterministic: no PyTorch figure "
                                     "at batch 16"),
                       "%s", g_out);
}

/* bench_train's options: a bad value is exit 2 naming the option (--steps abc ran one step,
 * --batches 2,x dropped x, an unwritable --json wrote nothing, all with exit 0), TF32 is one
 * setting under two names (--math tf32 ran strict fp32 while saying tf32), and each row
 * re-checks the training: the losses it records fall. */
Test(bench, bench_train_options_and_its_check, .timeout = 120) {
    if (access(CNNKIT_BENCH_TRAIN_PATH, X_OK) != 0)
        cr_skip("%s is not here (a relocated test bundle)", CNNKIT_BENCH_TRAIN_PATH);
    static const char *const bad[][2] = {
        {"--steps abc", "--steps must be"},
        {"--steps 0", "--steps must be"},
        {"--batches 2,x", "--batches must be"},
        {"--batches 0", "--batches must be"},
        {"--json /nonexistent/dir/x.json", "--json /nonexistent/dir/x.json: cannot write"},
        {"--math tf32 --precision bf16", "--math tf32 is --precision tf32"}};
    for (int i = 0; i < 6; ++i) {
        char args[128];
        snprintf(args, sizeof args, "--device cpu %s", bad[i][0]);
        cr_assert_eq(t_run_prog(CNNKIT_BENCH_TRAIN_PATH, args, g_out, sizeof g_out), 2, "%s: %s",
                     args, g_out);
        cr_assert_not_null(strstr(g_out, bad[i][1]), "%s: %s", args, g_out);
    }
    fixtures();
    char args[256], path[200];
    snprintf(path, sizeof path, "%s/bt_math.json", g_dir);
    snprintf(args, sizeof args, "--device cpu --batches 8 --steps 2 --math tf32 --json %s", path);
    cr_assert_eq(t_run_prog(CNNKIT_BENCH_TRAIN_PATH, args, g_out, sizeof g_out), 0, "%s", g_out);
    char *js = t_read_file(path, NULL);
    cr_assert(strstr(js, "\"math\": \"tf32\"") && strstr(js, "\"precision\": \"tf32\""), "%s", js);
    double first = 0, last = 0;
    const char *at = strstr(js, "\"loss_first\": ");
    cr_assert(at && sscanf(at, "\"loss_first\": %lf, \"loss_last\": %lf", &first, &last) == 2, "%s",
              js);
    cr_assert(isfinite(first) && last < first, "%g -> %g", first, last);
    free(js);
    /* a TF32 row is not ranked against strict fp32 PyTorch (pt.json's batch 128 runs are) */
    char tf[200], cargs[512];
    snprintf(tf, sizeof tf, "%s/tf32.json", g_dir);
    write_text(tf, "{\"device\": \"cuda\", \"conv_algo\": \"fastest\", \"math\": \"tf32\", "
                   "\"precision\": \"tf32\", \"results\": [{\"batch\": 128, \"ms_per_step\": 1.0, "
                   "\"images_per_s\": 128000.0}]}\n");
    snprintf(cargs, sizeof cargs, "--cnnkit %s --torch %s/pt.json", tf, g_dir);
    cr_assert_eq(compare(cargs), 0, "%s", g_out);
    cr_assert_not_null(strstr(g_out, "no PyTorch figure at batch 128 in tf32"), "%s", g_out);
    remove_fixtures();
}
#endif
