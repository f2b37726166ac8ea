/*
 * bench_ops — times every case of the op table (tests/ops, the cases tests/test_ops.c checks) on
 * the CPU and, with a CUDA device, on the GPU; then re-checks each op's result.
 *
 *   bench_ops [--repeats R] [--csv] [--filter TEXT] [--cpu-only] [--bench-sizes]
 *
 * A row is one variant of one case on one device: the case's single call (forward and backward,
 * or the update, or the data move), its median time over R repeats after a warm-up call, and
 * GB/s from op_bytes (the least traffic of the call: inputs read and outputs written once).
 *   CPU: the case's CPU op, CLOCK_MONOTONIC; a public-API op (BatchNorm, dropout) through its
 *        tensor runner on one CPU context, so the time leaves out the context's set-up; a GPU data
 *        move with no CPU op times the reference, its CPU side. Checked: the CPU op against the
 *        reference within ref_tol.
 *   GPU: the case's GPU runner on tensors made once, a cudaEvent pair around each call with L2
 *        flushed before it; copy_us is a device-to-device copy moving the same bytes (bytes / 2
 *        read and written), ratio = median / copy_us. A runner that sets up per call (the case's
 *        gpu_setup: conv's cuDNN plan, workspaces) is timed with it, and the note says so.
 *        Checked: the GPU against the CPU op within gpu_tol (0: identical bits).
 * Each check runs the op once more on fresh inputs after the timing (in-place updates have moved
 * their state by then). --bench-sizes uses each case's bench_variants instead of the test shapes.
 * --filter keeps the rows whose "op/variant" contains TEXT. Without a device (or a CUDA build) the
 * GPU rows say skip and why; --cpu-only leaves them out.
 *
 * --csv: the header and rows on stdout (op,variant,device,impl,bytes,repeats,median_us,gbps,
 * copy_us,ratio,err,tol,status,note), the rest on stderr. status: ok, FAIL (check), error (the
 * call failed), skip. Exit status: 0 no FAIL or error, 1 otherwise, 2 bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <cnnkit/cnnkit.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"

#include "ops.h"

#ifdef CNNKIT_HAVE_CUDA
#include <cuda_runtime.h>

#include "gpu_layers.h" /* the context's stream */
#endif

typedef struct options {
    int repeats, csv, cpu_only, bench_sizes;
    const char *filter;
} options;

typedef struct row {
    const char *op, *variant, *device, *impl;
    size_t bytes;
    int repeats;
    double median_us, copy_us; /* copy_us < 0: none */
    double err, tol;           /* err < 0: not checked */
    const char *status;
    char note[320];
} row;

static void print_row(const options *o, const row *r) {
    const double gbps = r->median_us > 0 ? (double)r->bytes / (r->median_us * 1e3) : 0.0;
    char us[32] = "", gb[32] = "", cp[32] = "", ra[32] = "", er[32] = "", tl[32] = "";
    if (r->median_us > 0) {
        snprintf(us, sizeof us, "%.6g", r->median_us);
        snprintf(gb, sizeof gb, "%.6g", gbps);
    }
    if (r->copy_us > 0) {
        snprintf(cp, sizeof cp, "%.6g", r->copy_us);
        snprintf(ra, sizeof ra, "%.2f", r->median_us / r->copy_us);
    }
    if (r->err >= 0) {
        snprintf(er, sizeof er, "%.3g", r->err);
        snprintf(tl, sizeof tl, "%.3g", r->tol);
    }
    if (o->csv) {
        char note[sizeof r->note];
        snprintf(note, sizeof note, "%s", r->note);
        for (char *p = note; *p; p++)
            *p = *p == ',' || *p == '\n' ? ';' : *p; /* one field */
        printf("%s,%s,%s,%s,%zu,%d,%s,%s,%s,%s,%s,%s,%s,%s\n", r->op, r->variant, r->device,
               r->impl, r->bytes, r->repeats, us, gb, cp, ra, er, tl, r->status, note);
    } else {
        printf("%-8s %-28s %-4s %-4s %11zu %10s %9s %10s %6s %9s %7s %-5s %s\n", r->op, r->variant,
               r->device, r->impl, r->bytes, us, gb, cp, ra, er, tl, r->status, r->note);
    }
    fflush(stdout);
}

/* Sets the row's check from an error against a tolerance (0: identical bits). */
static void set_check(row *r, double err, double tol) {
    r->err = isfinite(err) ? err : INFINITY;
    r->tol = tol;
    r->status = err <= tol ? "ok" : "FAIL";
    if (!(err <= tol))
        snprintf(r->note, sizeof r->note, tol == 0 ? "bits differ" : "err above tol");
}

/* Fresh arrays for a check: the result (got) and what it must match (want). On failure the row
 * says so and nothing stays allocated; returns 1 then. */
static int check_bufs(const op_variant *v, uint64_t seed, op_bufs *got, op_bufs *want, row *r) {
    if (op_bufs_alloc(v, seed, got) == 0) {
        if (op_bufs_alloc(v, seed, want) == 0)
            return 0;
        op_bufs_free(v, got);
    }
    r->status = "error";
    snprintf(r->note, sizeof r->note, "out of host memory");
    return 1;
}

/* The CPU side of a check: the CPU op, or the reference for a data move without one. */
static op_host_fn cpu_side(const op_case *c) {
    return c->cpu ? c->cpu : c->ref;
}

/* ---- CPU ---- */

/* Times a tensor runner on a CPU context: tensors made once, each call then synchronized. */
static int time_api_cpu(ck_context *ctx, const op_case *c, const op_variant *v, op_bufs *b,
                        double *t, int repeats) {
    ck_tensor *ti[OP_MAX_IO] = {0}, *to[OP_MAX_IO] = {0};
    int e = 0;
    for (int i = 0; i < v->nin && !e; i++)
        e = !(ti[i] = op_tensor(ctx, &v->in[i], b->in[i]));
    for (int i = 0; i < v->nout && !e; i++)
        e = !(to[i] = op_tensor(ctx, &v->out[i], v->out[i].from ? b->out[i] : NULL));
    for (int r = -1; r < repeats && !e; r++) {
        const double t0 = bench_now_us();
        e = c->api(ctx, v, ti, to);
        if (!e)
            e = ck_context_synchronize(ctx);
        if (r >= 0)
            t[r] = bench_now_us() - t0;
    }
    for (int i = 0; i < OP_MAX_IO; i++) {
        ck_tensor_destroy(ti[i]);
        ck_tensor_destroy(to[i]);
    }
    return e;
}

static int bench_cpu(const options *o, const op_case *c, const op_variant *v, uint64_t seed,
                     ck_context *cpu_ctx, row *r) {
    r->device = "cpu";
    r->impl = c->api ? "api" : c->cpu ? "cpu" : "ref";
    op_bufs b, got, want;
    if (op_bufs_alloc(v, seed, &b)) {
        r->status = "error";
        snprintf(r->note, sizeof r->note, "out of host memory");
        return 1;
    }
    double *t = calloc((size_t)o->repeats, sizeof *t);
    int e = !t;
    if (!e && c->api) {
        e = time_api_cpu(cpu_ctx, c, v, &b, t, o->repeats);
    } else if (!e) {
        const op_host_fn fn = cpu_side(c);
        for (int k = -1; k < o->repeats; k++) {
            const double t0 = bench_now_us();
            fn(v, b.in, b.out);
            if (k >= 0)
                t[k] = bench_now_us() - t0;
        }
    }
    op_bufs_free(v, &b);
    if (e) {
        free(t);
        r->status = "error";
        snprintf(r->note, sizeof r->note, "run failed: %s", ck_context_last_error(cpu_ctx));
        return 1;
    }
    r->median_us = bench_median(t, o->repeats);
    free(t);
    if (!c->cpu) { /* the reference is the CPU side: nothing to check it against */
        r->status = "ok";
        snprintf(r->note, sizeof r->note, "no CPU op: the reference timed");
        return 0;
    }
    if (check_bufs(v, seed, &got, &want, r))
        return 1;
    c->cpu(v, got.in, got.out);
    c->ref(v, want.in, want.out);
    set_check(r, op_outputs_err(v, got.out, want.out, c->ref_tol, NULL), c->ref_tol);
    op_bufs_free(v, &got);
    op_bufs_free(v, &want);
    return strcmp(r->status, "ok") != 0;
}

/* ---- GPU ---- */

#ifdef CNNKIT_HAVE_CUDA
typedef struct gpu_env {
    ck_context *g;
    cudaStream_t stream;
    cudaEvent_t start, stop;
    void *flush; /* 2x the L2: written before every timed call */
    size_t flush_bytes;
} gpu_env;

static void gpu_env_destroy(gpu_env *env) {
    if (env->flush)
        cudaFree(env->flush);
    if (env->start)
        cudaEventDestroy(env->start);
    if (env->stop)
        cudaEventDestroy(env->stop);
    ck_context_destroy(env->g);
}

static int gpu_env_create(gpu_env *env, char *why, size_t nwhy) {
    memset(env, 0, sizeof *env);
    if (ck_context_create(&env->g, CK_DEVICE_CUDA, 0, OP_SEED) != CK_STATUS_SUCCESS) {
        snprintf(why, nwhy, "%s", ck_context_last_error(NULL));
        return -1;
    }
    env->stream = (cudaStream_t)env->g->stream;
    int dev = 0, l2 = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev);
    env->flush_bytes = 2 * (size_t)(l2 > 0 ? l2 : 64 << 20);
    if (cudaEventCreate(&env->start) != cudaSuccess || cudaEventCreate(&env->stop) != cudaSuccess ||
        cudaMalloc(&env->flush, env->flush_bytes) != cudaSuccess) {
        snprintf(why, nwhy, "CUDA events or the L2 flush buffer could not be made");
        gpu_env_destroy(env);
        return -1;
    }
    return 0;
}

/* One timed call: L2 flushed, events around fn (kind 0: the runner, 1: the copy). */
static int gpu_time_one(gpu_env *env, const op_case *c, const op_variant *v, ck_tensor *const *ti,
                        ck_tensor *const *to, void *dst, const void *src, size_t copy_bytes,
                        float *ms) {
    int e = cudaMemsetAsync(env->flush, 0, env->flush_bytes, env->stream) != cudaSuccess;
    e = e || cudaEventRecord(env->start, env->stream) != cudaSuccess;
    if (!e)
        e = c ? c->gpu(env->g, v, ti, to)
              : cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, env->stream) !=
                    cudaSuccess;
    e = e || cudaEventRecord(env->stop, env->stream) != cudaSuccess;
    e = e || cudaEventSynchronize(env->stop) != cudaSuccess;
    e = e || cudaEventElapsedTime(ms, env->start, env->stop) != cudaSuccess;
    return e;
}

static int bench_gpu(const options *o, gpu_env *env, const op_case *c, const op_variant *v,
                     uint64_t seed, row *r) {
    r->device = "gpu";
    r->impl = "gpu";
    op_bufs b, got, want;
    if (op_bufs_alloc(v, seed, &b)) {
        r->status = "error";
        snprintf(r->note, sizeof r->note, "out of host memory");
        return 1;
    }
    ck_tensor *ti[OP_MAX_IO] = {0}, *to[OP_MAX_IO] = {0};
    double *t = calloc((size_t)o->repeats, sizeof *t), *tc = calloc((size_t)o->repeats, sizeof *tc);
    const size_t half = op_bytes(v) / 2;
    void *src = NULL, *dst = NULL;
    int e = !t || !tc;
    for (int i = 0; i < v->nin && !e; i++)
        e = !(ti[i] = op_tensor(env->g, &v->in[i], b.in[i]));
    for (int i = 0; i < v->nout && !e; i++)
        e = !(to[i] = op_tensor(env->g, &v->out[i], v->out[i].from ? b.out[i] : NULL));
    e = e || cudaMalloc(&src, half ? half : 1) != cudaSuccess ||
        cudaMalloc(&dst, half ? half : 1) != cudaSuccess;
    for (int k = -2; k < o->repeats && !e; k++) {
        float ms = 0, cms = 0;
        e = gpu_time_one(env, c, v, ti, to, NULL, NULL, 0, &ms) ||
            gpu_time_one(env, NULL, v, NULL, NULL, dst, src, half, &cms);
        if (k >= 0) {
            t[k] = 1e3 * ms;
            tc[k] = 1e3 * cms;
        }
    }
    for (int i = 0; i < OP_MAX_IO; i++) {
        ck_tensor_destroy(ti[i]);
        ck_tensor_destroy(to[i]);
    }
    cudaFree(src);
    cudaFree(dst);
    op_bufs_free(v, &b);
    if (!e) {
        r->median_us = bench_median(t, o->repeats);
        r->copy_us = bench_median(tc, o->repeats);
    }
    free(t);
    free(tc);
    if (e) {
        r->status = "error";
        snprintf(r->note, sizeof r->note, "run failed: %s", ck_context_last_error(env->g));
        return 1;
    }
    if (check_bufs(v, seed, &got, &want, r))
        return 1;
    cpu_side(c)(v, want.in, want.out);
    if (op_run_on(env->g, c->gpu, v, got.in, got.out)) {
        r->status = "error";
        snprintf(r->note, sizeof r->note, "check run failed: %s", ck_context_last_error(env->g));
    } else {
        set_check(r, op_outputs_err(v, got.out, want.out, c->gpu_tol, NULL), c->gpu_tol);
        if (!strcmp(r->status, "ok") && c->gpu_setup)
            snprintf(r->note, sizeof r->note, "timed with its %s", c->gpu_setup);
    }
    op_bufs_free(v, &got);
    op_bufs_free(v, &want);
    return strcmp(r->status, "ok") != 0;
}
#endif

/* ---- main ---- */

static void usage(FILE *f) {
    fprintf(f, "usage: bench_ops [--repeats R] [--csv] [--filter TEXT] [--cpu-only] "
               "[--bench-sizes]\n");
}

static int parse_args(int argc, char **argv, options *o) {
    *o = (options){.repeats = 20};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--csv")) {
            o->csv = 1;
        } else if (!strcmp(a, "--cpu-only")) {
            o->cpu_only = 1;
        } else if (!strcmp(a, "--bench-sizes")) {
            o->bench_sizes = 1;
        } else if (!strcmp(a, "--repeats") && i + 1 < argc) {
            char *end = NULL;
            const long r = strtol(argv[++i], &end, 10);
            if (!end || *end || r < 1 || r > 100000) {
                fprintf(stderr, "bench_ops: --repeats wants an integer in [1, 100000], not '%s'\n",
                        argv[i]);
                return -1;
            }
            o->repeats = (int)r;
        } else if (!strcmp(a, "--filter") && i + 1 < argc) {
            o->filter = argv[++i];
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "bench_ops: unknown or incomplete argument '%s'\n", a);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    options o;
    if (parse_args(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    ck_context *cpu_ctx = NULL;
    if (ck_context_create(&cpu_ctx, CK_DEVICE_CPU, 0, OP_SEED) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "bench_ops: CPU context: %s\n", ck_context_last_error(NULL));
        return 1;
    }
    char gpu_why[256] = "--cpu-only";
    int have_gpu = 0;
#ifdef CNNKIT_HAVE_CUDA
    gpu_env env;
    if (!o.cpu_only)
        have_gpu = gpu_env_create(&env, gpu_why, sizeof gpu_why) == 0;
#else
    snprintf(gpu_why, sizeof gpu_why, "a CPU-only build");
#endif
    FILE *info = o.csv ? stderr : stdout;
    fprintf(info, "bench_ops: %s shapes, median of %d, GPU: %s\n", o.bench_sizes ? "bench" : "test",
            o.repeats, have_gpu ? "yes" : gpu_why);
    if (o.csv)
        printf("op,variant,device,impl,bytes,repeats,median_us,gbps,copy_us,ratio,err,tol,status,"
               "note\n");
    else
        printf("%-8s %-28s %-4s %-4s %11s %10s %9s %10s %6s %9s %7s %-5s %s\n", "op", "variant",
               "dev", "impl", "bytes", "median_us", "GB/s", "copy_us", "ratio", "err", "tol",
               "stat", "note");
    int failed = 0, rows = 0;
    for (int ci = 0; ci < op_ncases; ci++) {
        const op_case *c = op_cases[ci];
        const op_variant *vs = o.bench_sizes ? c->bench_variants : c->variants;
        const int nv = o.bench_sizes ? c->nbench : c->nvariants;
        for (int k = 0; k < nv; k++) {
            const op_variant *v = &vs[k];
            char full[160];
            snprintf(full, sizeof full, "%s/%s", c->name, v->name);
            if (o.filter && !strstr(full, o.filter))
                continue;
            const uint64_t seed = op_seed(c, o.bench_sizes ? c->nvariants + k : k);
            row r = {c->name, v->name, "cpu", "", op_bytes(v), o.repeats, 0, -1, -1, 0, "", ""};
            failed += bench_cpu(&o, c, v, seed, cpu_ctx, &r);
            print_row(&o, &r);
            rows++;
            if (o.cpu_only)
                continue;
            row g = {c->name, v->name, "gpu", "gpu", op_bytes(v), o.repeats,
                     0,       -1,      -1,    0,     "skip",      ""};
            if (!have_gpu)
                snprintf(g.note, sizeof g.note, "%s", gpu_why);
            else if (!c->gpu)
                snprintf(g.note, sizeof g.note, "no GPU runner");
#ifdef CNNKIT_HAVE_CUDA
            else
                failed += bench_gpu(&o, &env, c, v, seed, &g);
#endif
            print_row(&o, &g);
            rows++;
        }
    }
#ifdef CNNKIT_HAVE_CUDA
    if (have_gpu)
        gpu_env_destroy(&env);
#endif
    ck_context_destroy(cpu_ctx);
    fprintf(info, "bench_ops: %d rows, %d failed\n", rows, failed);
    if (o.filter && rows == 0)
        fprintf(stderr, "bench_ops: no case matches --filter '%s'\n", o.filter);
    return failed ? 1 : 0;
}
