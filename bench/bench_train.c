/* bench_train: training images/s of a Keras-syntax model (default: examples/seed_cnn.py) at
 * several batch sizes, on synthetic data of the model's input shape. Median of timed steps after
 * warm-up. Run bench/peer_torch.py on the same machine for the PyTorch figure of the same model.
 *
 *   bench_train [--model FILE] [--batches 128,512] [--steps N] [--device auto|cpu|cuda]
 *               [--conv-algo deterministic|fastest] [--math fp32|tf32]
 *               [--precision fp32|tf32|bf16] [--json FILE]
 * auto: the GPU when one is present, else the CPU. --precision: ck_model_set_precision (bf16:
 * bf16 activations with fp32 master weights, docs/precision.md; on the CPU an emulation, not a
 * speed-up). --conv-algo / --math: the context settings
 * (ck_context_set_conv_algo / _set_math; no effect on the CPU); the cuDNN plan of each conv
 * (ck_model_conv_algorithms) is printed and written to the JSON per batch size. On a GPU the
 * batch sits in page-locked host memory (JSON pinned_input), as PyTorch's peer keeps its batch on
 * the device: the upload does not hold the host.
 * Correctness is checked after the timing, per row: the steps' losses are finite and the last is
 * below the first (the same batch trained 2 + N times), and on a GPU the first step's loss is the
 * CPU twin's (the same weights, batch and dropout masks; 1e-3 relative in fp32, 2e-2 with TF32
 * or bf16 arithmetic): a wrong kernel moves either by far more. A failed check fails the run
 * (so does a model with learning rate 0, whose loss cannot fall: benchmark one that trains).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "cnnkit/cnnkit.h"
#include "cnnkit/model.h"

#ifdef CNNKIT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

/* The batch on the host as a user who cares would keep it for a GPU: page-locked, so each step's
 * upload is an asynchronous DMA and the step's host part is its checks and launches (PyTorch's
 * peer keeps its batch on the device). Pageable memory where that cannot be had. */
static void *host_buf(int gpu, size_t bytes, int *pinned) {
    *pinned = 0;
#ifdef CNNKIT_HAVE_CUDA
    void *p = NULL;
    if (gpu && cudaMallocHost(&p, bytes) == cudaSuccess) {
        *pinned = 1;
        return p;
    }
    (void)cudaGetLastError();
#else
    (void)gpu;
#endif
    return malloc(bytes);
}

static void host_free(void *p, int pinned) {
#ifdef CNNKIT_HAVE_CUDA
    if (pinned) {
        (void)cudaFreeHost(p);
        return;
    }
#else
    (void)pinned;
#endif
    free(p);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* s as a JSON string (quotes and backslashes escaped, control characters dropped). */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; ++s) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        if ((unsigned char)*s >= 0x20)
            fputc(*s, f);
    }
    fputc('"', f);
}

/* What every run of one batch size shares. */
typedef struct bench_cfg {
    const char *text;
    ck_device dev;
    ck_conv_algo algo;
    ck_math math;
    ck_precision precision;
    int steps;
    FILE *js;
    int first; /* no JSON result written yet */
    /* the CPU twin's first loss per batch size, made once (graph modes share it) */
    int cpu_b[64], ncpu;
    double cpu_loss[64];
} bench_cfg;

/* The first training step's loss of the model on the CPU (the oracle) for batch x, y of b. */
static int cpu_first_loss(bench_cfg *c, int b, const float *x, const int32_t *y, double *loss) {
    for (int k = 0; k < c->ncpu; ++k)
        if (c->cpu_b[k] == b) {
            *loss = c->cpu_loss[k];
            return 1;
        }
    ck_context *ctx = NULL;
    ck_model *m = NULL;
    char err[512] = "";
    ck_step_result r;
    int ok = ck_context_create(&ctx, CK_DEVICE_CPU, 0, 1) == CK_STATUS_SUCCESS &&
             ck_model_from_keras_text(ctx, c->text, &m, err, sizeof err) == CK_STATUS_SUCCESS &&
             ck_model_set_precision(m, c->precision) == CK_STATUS_SUCCESS &&
             ck_model_build(m, 0, 0, 0, b) == CK_STATUS_SUCCESS &&
             ck_model_train_step(m, x, y, b, &r) == CK_STATUS_SUCCESS;
    if (!ok)
        fprintf(stderr, "bench_train: batch %d: the CPU check: %s\n", b,
                err[0] ? err : ck_context_last_error(ctx));
    *loss = ok ? r.loss : NAN;
    if (ok && c->ncpu < 64) {
        c->cpu_b[c->ncpu] = b;
        c->cpu_loss[c->ncpu++] = *loss;
    }
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return ok;
}

/* One batch size with one graph mode: a fresh context and model, 2 warm-up steps (with graphs:
 * the eager warm-up and the capture), then the median of the timed steps. Fills *ips (images/s);
 * eager_ips > 0: the same size's eager figure, for the ratio. Returns 0, or 1 after printing why.
 */
static int bench_one(bench_cfg *c, int b, ck_cuda_graph_mode mode, double eager_ips, double *ips) {
    ck_context *ctx = NULL;
    ck_model *m = NULL;
    char err[1024];
    const ck_status cst = ck_context_create(&ctx, c->dev, 0, 1);
    if (cst != CK_STATUS_SUCCESS) {
        fprintf(stderr, "bench_train: context: %s: %s\n", ck_status_string(cst),
                ck_context_last_error(NULL));
        return 1;
    }
    if (ck_context_set_conv_algo(ctx, c->algo) != CK_STATUS_SUCCESS ||
        ck_context_set_math(ctx, c->math) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "bench_train: settings: %s\n", ck_context_last_error(ctx));
        ck_context_destroy(ctx);
        return 1;
    }
    err[0] = '\0';
    /* the build times the convolutions under fastest: reported, not part of ms/step */
    const double tb = now_s();
    if (ck_model_from_keras_text(ctx, c->text, &m, err, sizeof err) != CK_STATUS_SUCCESS ||
        ck_model_set_precision(m, c->precision) != CK_STATUS_SUCCESS ||
        ck_model_build(m, 0, 0, 0, b) != CK_STATUS_SUCCESS ||
        ck_model_set_cuda_graph(m, mode) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "bench_train: batch %d: %s\n", b,
                err[0] ? err : ck_context_last_error(ctx));
        ck_model_destroy(m);
        ck_context_destroy(ctx);
        return 1;
    }
    const double build_s = now_s() - tb;
    /* each conv's cuDNN plan at this batch size (the algorithms depend on it) */
    size_t plans_len = 0;
    (void)ck_model_conv_algorithms(m, NULL, 0, &plans_len); /* a ResNet's lines pass 4 KB */
    char fallback[512] = "", *plans = (char *)malloc(plans_len + 1);
    if (!plans || ck_model_conv_algorithms(m, plans, plans_len + 1, NULL) != CK_STATUS_SUCCESS) {
        snprintf(fallback, sizeof fallback, "(%s)\n",
                 plans ? ck_context_last_error(ctx) : "out of host memory for the conv plans");
        free(plans);
        plans = fallback;
    }
    ck_layer_desc d0;
    ck_model_layer_desc(m, 0, &d0);
    const size_t per = (size_t)d0.input_h * d0.input_w * d0.input_c;
    const int gpu = c->dev == CK_DEVICE_CUDA;
    int xpin = 0, ypin = 0;
    float *x = (float *)host_buf(gpu, sizeof(float) * per * b, &xpin);
    int32_t *y = (int32_t *)host_buf(gpu, sizeof(int32_t) * b, &ypin);
    double *t = (double *)malloc(sizeof(double) * c->steps);
    double *th = (double *)malloc(sizeof(double) * c->steps); /* the steps' host parts */
    int ok = x && y && t && th;
    const int classes = ck_model_num_classes(m);
    unsigned s = 12345;
    for (size_t i = 0; ok && i < per * (size_t)b; ++i) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / 16777216.0f;
    }
    for (int i = 0; ok && i < b; ++i)
        y[i] = i % classes;
    ck_step_result r;
    double loss0 = NAN, loss1 = NAN, cpu_loss = NAN; /* the first and last steps' losses */
    long long replays0 = 0;
    ck_cuda_graph_info gi;
    memset(&gi, 0, sizeof gi);
    for (int k = 0; k < 2 + c->steps && ok; ++k) { /* 2 warm-up steps, then timed */
        if (k == 2 && ck_model_cuda_graph_info(m, &gi) == CK_STATUS_SUCCESS)
            replays0 = gi.replays;
        const double t0 = now_s();
        if (ck_model_train_step(m, x, y, b, &r) != CK_STATUS_SUCCESS) {
            fprintf(stderr, "bench_train: batch %d: %s\n", b, ck_context_last_error(ctx));
            ok = 0;
        } else if (k == 0) {
            loss0 = r.loss;
        }
        if (ok && k >= 2) {
            t[k - 2] = now_s() - t0;
            loss1 = r.loss;
            double host = 0.0, step = 0.0;
            th[k - 2] = ck_model_last_step_time(m, &host, &step) == CK_STATUS_SUCCESS ? host : NAN;
        }
    }
    ck_model_memory mem = {0, 0, 0};
    if (ok && (ck_model_memory_usage(m, &mem) != CK_STATUS_SUCCESS ||
               ck_model_cuda_graph_info(m, &gi) != CK_STATUS_SUCCESS))
        ok = 0;
    if (ok && !(isfinite(loss0) && isfinite(loss1) && loss1 < loss0)) {
        fprintf(stderr,
                "bench_train: batch %d: CHECK FAILED: the loss went from %g to %g over %d steps "
                "on one batch (it must fall)\n",
                b, loss0, loss1, 2 + c->steps);
        ok = 0;
    }
    if (ok && c->dev == CK_DEVICE_CUDA) {
        const double tol = c->precision == CK_PRECISION_FP32 ? 1e-3 : 2e-2;
        ok = cpu_first_loss(c, b, x, y, &cpu_loss);
        if (ok && !(fabs(loss0 - cpu_loss) <= tol * fabs(cpu_loss))) {
            fprintf(stderr,
                    "bench_train: batch %d: CHECK FAILED: the first step's loss is %.6g on the "
                    "GPU, %.6g on the CPU (more than %g relative apart)\n",
                    b, loss0, cpu_loss, tol);
            ok = 0;
        }
    }
    if (ok) {
        const double med = bench_median(t, c->steps), host = bench_median(th, c->steps);
        *ips = b / med;
        const size_t model_bytes = c->dev == CK_DEVICE_CUDA ? mem.device_bytes : mem.host_bytes;
        /* graph: how many of the timed steps were replays (on: all of them, unless the note says
         * why not) */
        const long long timed_replays = gi.replays - replays0;
        char graph[32];
        if (c->dev != CK_DEVICE_CUDA)
            snprintf(graph, sizeof graph, "-");
        else if (mode == CK_CUDA_GRAPH_OFF)
            snprintf(graph, sizeof graph, "off");
        else
            snprintf(graph, sizeof graph, "on %lld/%d", timed_replays, c->steps);
        printf("%8d %12.1f %10.2f %12.0f %10.1f %10.1f %10s", b, med * 1e3, host * 1e3, *ips,
               model_bytes / 1048576.0, mem.activation_bytes / 1048576.0, graph);
        if (eager_ips > 0.0)
            printf("  x%.2f vs eager", *ips / eager_ips);
        printf("\n");
        if (gi.note[0] && c->dev == CK_DEVICE_CUDA && mode != CK_CUDA_GRAPH_OFF)
            printf("%8s cuda graph: %s\n", "", gi.note);
        printf("%8s build %.3f s; conv plans:\n", "", build_s);
        for (const char *line = plans; *line;) {
            const size_t l = strcspn(line, "\n");
            printf("%8s   %.*s\n", "", (int)l, line);
            line += l + (line[l] == '\n');
        }
        fflush(stdout); /* a run stopped by its timeout keeps its rows in the log */
        if (c->js) {
            fprintf(c->js,
                    "%s{\"batch\": %d, \"cuda_graph\": \"%s\", \"graph_replays\": %lld, "
                    "\"timed_steps\": %d, \"ms_per_step\": %.3f, \"host_ms_per_step\": %.4f, "
                    "\"host_fraction\": %.4f, \"images_per_s\": %.1f, \"pinned_input\": %s, "
                    "\"loss_first\": %.6g, \"loss_last\": %.6g, ",
                    c->first ? "" : ", ", b,
                    c->dev != CK_DEVICE_CUDA    ? "n/a"
                    : mode == CK_CUDA_GRAPH_OFF ? "off"
                                                : "on",
                    timed_replays, c->steps, med * 1e3, host * 1e3, host / med, *ips,
                    xpin && ypin ? "true" : "false", loss0, loss1);
            if (isfinite(cpu_loss))
                fprintf(c->js, "\"cpu_loss_first\": %.6g, ", cpu_loss);
            if (eager_ips > 0.0)
                fprintf(c->js, "\"speedup_vs_eager\": %.3f, ", *ips / eager_ips);
            fprintf(c->js, "\"graph_note\": ");
            json_str(c->js, gi.note);
            fprintf(c->js,
                    ", \"model_bytes\": %zu, \"context_bytes\": %zu, \"activation_bytes\": %zu, "
                    "\"build_s\": %.3f, \"conv_plans\": [",
                    model_bytes, ck_context_device_bytes(ctx), mem.activation_bytes, build_s);
            int k = 0;
            for (char *line = plans; *line;) {
                const size_t l = strcspn(line, "\n");
                const char keep = line[l];
                line[l] = '\0';
                fprintf(c->js, "%s", k++ ? ", " : "");
                json_str(c->js, line);
                line += l + (keep == '\n');
            }
            fprintf(c->js, "]}");
            fflush(c->js); /* whole rows on disk: a run stopped later keeps them */
        }
        c->first = 0;
    }
    free(t);
    free(th);
    host_free(x, xpin);
    host_free(y, ypin);
    if (plans != fallback)
        free(plans);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return !ok;
}

int main(int argc, char **argv) {
    const char *model_path = "examples/seed_cnn.py", *json = NULL, *batches = NULL;
    const char *device = "auto", *conv_algo = "deterministic", *math = "fp32", *graph = "on";
    const char *precision = "fp32", *steps_arg = "10";
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model_path = argv[++i];
        else if (!strcmp(argv[i], "--batches") && i + 1 < argc)
            batches = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps_arg = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc)
            device = argv[++i];
        else if (!strcmp(argv[i], "--json") && i + 1 < argc)
            json = argv[++i];
        else if (!strcmp(argv[i], "--conv-algo") && i + 1 < argc)
            conv_algo = argv[++i];
        else if (!strcmp(argv[i], "--math") && i + 1 < argc)
            math = argv[++i];
        else if (!strcmp(argv[i], "--cuda-graph") && i + 1 < argc)
            graph = argv[++i];
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc)
            precision = argv[++i];
        else {
            fprintf(stderr,
                    "usage: %s [--model FILE] [--batches 128,512] [--steps N] "
                    "[--device auto|cpu|cuda] [--conv-algo deterministic|fastest] "
                    "[--math fp32|tf32] [--cuda-graph on|off|both] [--precision fp32|tf32|bf16] "
                    "[--json FILE]\n",
                    argv[0]);
            return 2;
        }
    }
    if (strcmp(conv_algo, "deterministic") && strcmp(conv_algo, "fastest")) {
        fprintf(stderr, "bench_train: --conv-algo must be deterministic or fastest, got '%s'\n",
                conv_algo);
        return 2;
    }
    if (strcmp(math, "fp32") && strcmp(math, "tf32")) {
        fprintf(stderr, "bench_train: --math must be fp32 or tf32, got '%s'\n", math);
        return 2;
    }
    if (strcmp(precision, "fp32") && strcmp(precision, "tf32") && strcmp(precision, "bf16")) {
        fprintf(stderr, "bench_train: --precision must be fp32, tf32 or bf16, got '%s'\n",
                precision);
        return 2;
    }
    if (strcmp(graph, "on") && strcmp(graph, "off") && strcmp(graph, "both")) {
        fprintf(stderr, "bench_train: --cuda-graph must be on, off or both, got '%s'\n", graph);
        return 2;
    }
    char *end;
    const long steps = strtol(steps_arg, &end, 10);
    if (*end || end == steps_arg || steps < 1 || steps > 100000) {
        fprintf(stderr, "bench_train: --steps must be an integer in [1, 100000], got '%s'\n",
                steps_arg);
        return 2;
    }
    /* TF32 is one setting with two names: --math tf32 is --precision tf32 (ck_model_set_precision
     * sets the context's math), which bf16 has no use for */
    if (!strcmp(math, "tf32") && !strcmp(precision, "bf16")) {
        fprintf(stderr, "bench_train: --math tf32 is --precision tf32; with --precision bf16 it "
                        "has no effect: give one of them\n");
        return 2;
    }
    if (!strcmp(math, "tf32") || !strcmp(precision, "tf32"))
        math = precision = "tf32";
    bench_cfg c;
    memset(&c, 0, sizeof c);
    c.algo = !strcmp(conv_algo, "fastest") ? CK_CONV_ALGO_FASTEST : CK_CONV_ALGO_DETERMINISTIC;
    c.math = !strcmp(math, "tf32") ? CK_MATH_TF32 : CK_MATH_STRICT_FP32;
    c.precision = !strcmp(precision, "bf16")   ? CK_PRECISION_BF16
                  : !strcmp(precision, "tf32") ? CK_PRECISION_TF32
                                               : CK_PRECISION_FP32;
    c.steps = (int)steps;
    c.first = 1;
    if (!strcmp(device, "cpu"))
        c.dev = CK_DEVICE_CPU;
    else if (!strcmp(device, "cuda"))
        c.dev = CK_DEVICE_CUDA;
    else if (!strcmp(device, "auto"))
        c.dev = ck_cuda_available() ? CK_DEVICE_CUDA : CK_DEVICE_CPU;
    else {
        fprintf(stderr, "bench_train: --device must be auto, cpu or cuda, got '%s'\n", device);
        return 2;
    }
    const char *dev_name = c.dev == CK_DEVICE_CUDA ? "cuda" : "cpu";
    if (!batches) /* the batch sizes: 2048 only where it takes seconds, on a GPU */
        batches = c.dev == CK_DEVICE_CUDA ? "128,512,2048" : "128,512";
    int sizes[64], nsizes = 0;
    for (const char *p = batches;;) {
        const long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 1 << 20 || (*end && *end != ',') || nsizes == 64) {
            fprintf(stderr,
                    "bench_train: --batches must be a comma-separated list of batch sizes in [1, "
                    "1048576], got '%s'\n",
                    batches);
            return 2;
        }
        sizes[nsizes++] = (int)v;
        if (!*end)
            break;
        p = end + 1;
    }
    char *text = bench_read_file(model_path);
    if (!text) {
        fprintf(stderr, "bench_train: cannot read %s (run from the repository root)\n", model_path);
        return 2;
    }
    c.text = text;
    /* graphs exist on a GPU only: the CPU runs one mode, whatever was asked */
    const int both = !strcmp(graph, "both") && c.dev == CK_DEVICE_CUDA;
    const ck_cuda_graph_mode mode = !strcmp(graph, "off") ? CK_CUDA_GRAPH_OFF : CK_CUDA_GRAPH_AUTO;
    c.js = json ? fopen(json, "w") : NULL;
    if (json && !c.js) {
        fprintf(stderr, "bench_train: --json %s: cannot write: %s\n", json, strerror(errno));
        free(text);
        return 2;
    }
    /* a buffer larger than any row (a ResNet's conv plans pass 4 KB) and a flush after the header
     * and after each row: a run killed at its timeout leaves a file cut between rows, which
     * compare.py reads up to its last row */
    if (c.js) {
        (void)setvbuf(c.js, NULL, _IOFBF, 1 << 16);
        fprintf(c.js, "{\"model\": ");
        json_str(c.js, model_path);
        fprintf(c.js,
                ", \"device\": \"%s\", \"conv_algo\": \"%s\", \"math\": \"%s\", "
                "\"precision\": \"%s\", \"cuda_graph\": \"%s\", \"results\": [",
                dev_name, conv_algo, math, precision, c.dev == CK_DEVICE_CUDA ? graph : "n/a");
        fflush(c.js);
    }
    printf("bench_train: %s, device %s, median of %d steps, conv algorithms %s, math %s%s, "
           "precision %s, cuda graph %s\n",
           model_path, dev_name, c.steps, conv_algo, math,
           c.dev == CK_DEVICE_CUDA ? "" : " (no effect on the CPU)", precision,
           c.dev == CK_DEVICE_CUDA ? graph : "n/a");
    if (c.dev == CK_DEVICE_CUDA) {
        char info[640];
        (void)ck_cuda_describe(0, info, sizeof info);
        printf("bench_train: %s\n", info);
    }
    /* model MiB: what the model holds, planned at build (ck_model_memory_usage): the device arena
     * on CUDA, host buffers on the CPU (the JSON adds context_bytes, the context's cuBLAS
     * workspace: compare.py sets the two against PyTorch's torch.cuda.max_memory_allocated);
     * act MiB: the activations kept for the backward pass, within it; graph: off, or on with the
     * timed steps that were graph replays; host ms: the median step's host part, until its one
     * wait for the device (ck_model_last_step_time: checks, upload, launches; the whole step on
     * the CPU) */
    printf("%8s %12s %10s %12s %10s %10s %10s\n", "batch", "ms/step", "host ms", "images/s",
           "model MiB", "act MiB", "graph");
    fflush(stdout);
    int rc = 0;
    for (int k = 0; k < nsizes && !rc; ++k) {
        const int b = sizes[k];
        double eager = 0.0, ips = 0.0;
        if (both)
            rc = bench_one(&c, b, CK_CUDA_GRAPH_OFF, 0.0, &eager);
        if (!rc)
            rc = bench_one(&c, b, both ? CK_CUDA_GRAPH_AUTO : mode, both ? eager : 0.0, &ips);
    }
    if (c.js) {
        fprintf(c.js, "]}\n");
        fclose(c.js);
    }
    free(text);
    return rc;
}
