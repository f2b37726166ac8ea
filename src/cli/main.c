/* cnnkit: command-line front end. Exit codes: 0 ok, 1 runtime failure, 2 usage or model file. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnnkit/check.h"
#include "cnnkit/cnnkit.h"
#include "cnnkit/data.h"
#include "cnnkit/model.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

static void usage(FILE *f) {
    fprintf(f, "usage: cnnkit <command> MODEL [options]\n"
               "\n"
               "commands:\n"
               "  summary  MODEL [--input HxWxC]\n"
               "  train    MODEL [--data fashion-mnist|DIR] [--epochs N] [--batch B] [--limit N]\n"
               "           [--device auto|cpu|cuda] [--seed S] [--save FILE] [--log FILE.csv]\n"
               "           [--plot FILE.svg] [--input HxWxC]\n"
               "  evaluate MODEL --weights FILE [--data fashion-mnist|DIR] [--input HxWxC]\n"
               "  predict  MODEL --weights FILE [--data ...] [--count N] [--input HxWxC]\n"
               "  check    MODEL [--json]   layer-order diagnostics; exit 0 clean, 1 warnings or\n"
               "           errors, 2 bad model file\n"
               "\n"
               "MODEL is a Keras Sequential model in Python syntax (see examples/seed_cnn.py).\n"
               "DIR holds MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...); the default\n"
               "is $CNNKIT_DATA or /usr/share/datasets/fashion-mnist.\n");
}

typedef struct opts {
    const char *cmd, *model, *data, *save, *log, *plot, *weights, *device;
    int epochs, batch, limit, count, in_h, in_w, in_c;
    unsigned long long seed;
} opts;

static int parse_int(const char *s, int *out, int min) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > 1000000000L)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    o->epochs = -1;
    o->batch = 128;
    o->count = 5;
    o->device = "auto";
    o->seed = 1;
    if (argc < 3)
        return -1;
    o->cmd = argv[1];
    o->model = argv[2];
    for (int i = 3; i < argc; ++i) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE                                                                                 \
    if (!v) {                                                                                      \
        fprintf(stderr, "cnnkit: %s needs a value\n", a);                                          \
        return -1;                                                                                 \
    }                                                                                              \
    ++i
        if (!strcmp(a, "--data")) {
            NEED_VALUE;
            o->data = v;
        } else if (!strcmp(a, "--save")) {
            NEED_VALUE;
            o->save = v;
        } else if (!strcmp(a, "--log")) {
            NEED_VALUE;
            o->log = v;
        } else if (!strcmp(a, "--plot")) {
            NEED_VALUE;
            o->plot = v;
        } else if (!strcmp(a, "--weights")) {
            NEED_VALUE;
            o->weights = v;
        } else if (!strcmp(a, "--device")) {
            NEED_VALUE;
            o->device = v;
            if (strcmp(v, "auto") && strcmp(v, "cpu") && strcmp(v, "cuda")) {
                fprintf(stderr, "cnnkit: --device must be auto, cpu or cuda, got '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--epochs") || !strcmp(a, "--batch") || !strcmp(a, "--limit") ||
                   !strcmp(a, "--count")) {
            NEED_VALUE;
            int *dst = !strcmp(a, "--epochs")  ? &o->epochs
                       : !strcmp(a, "--batch") ? &o->batch
                       : !strcmp(a, "--limit") ? &o->limit
                                               : &o->count;
            if (parse_int(v, dst, 1)) {
                fprintf(stderr, "cnnkit: %s needs a positive integer, got '%s'\n", a, v);
                return -1;
            }
        } else if (!strcmp(a, "--seed")) {
            NEED_VALUE;
            char *end;
            o->seed = strtoull(v, &end, 10);
            if (*end) {
                fprintf(stderr, "cnnkit: --seed needs an integer, got '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--input")) {
            NEED_VALUE;
            if (sscanf(v, "%dx%dx%d", &o->in_h, &o->in_w, &o->in_c) != 3 || o->in_h < 1 ||
                o->in_w < 1 || o->in_c < 1) {
                fprintf(stderr, "cnnkit: --input needs HxWxC (e.g. 28x28x1), got '%s'\n", v);
                return -1;
            }
        } else {
            fprintf(stderr, "cnnkit: unknown option '%s'\n", a);
            return -1;
        }
#undef NEED_VALUE
    }
    return 0;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = (char *)malloc(cap);
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (len + 1 < cap)
            break;
        cap *= 2;
        char *nb = (char *)realloc(buf, cap);
        if (!nb) {
            free(buf);
            buf = NULL;
        }
        buf = nb;
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* Loads the model text and builds it; returns an exit code (0 ok). */
static int load_model(ck_context *ctx, const opts *o, int max_batch, ck_model **out) {
    char *text = read_file(o->model);
    if (!text) {
        fprintf(stderr, "cnnkit: cannot read model file %s: %s\n", o->model, strerror(errno));
        return EXIT_USAGE;
    }
    char msg[2048];
    ck_model *m = NULL;
    ck_status st = ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg);
    free(text);
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: %s: %s\n", o->model, msg[0] ? msg : ck_context_last_error(ctx));
        return EXIT_USAGE;
    }
    if (msg[0]) { /* warnings, one per line */
        char *line = strtok(msg, "\n");
        while (line) {
            fprintf(stderr, "cnnkit: warning: %s: %s\n", o->model, line);
            line = strtok(NULL, "\n");
        }
    }
    st = ck_model_build(m, o->in_h, o->in_w, o->in_c, max_batch);
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: %s: %s\n", o->model, ck_context_last_error(ctx));
        ck_model_destroy(m);
        return st == CK_STATUS_ALLOC_FAILED ? EXIT_RUNTIME : EXIT_USAGE;
    }
    *out = m;
    return 0;
}

/* auto: the GPU when this build has the CUDA backend and a device is present, else the CPU. */
static int make_context(const opts *o, ck_context **ctx) {
    ck_device dev = !strcmp(o->device, "cuda") ? CK_DEVICE_CUDA : CK_DEVICE_CPU;
    if (!strcmp(o->device, "auto"))
        dev = ck_cuda_available() ? CK_DEVICE_CUDA : CK_DEVICE_CPU;
    if (dev == CK_DEVICE_CUDA && !ck_cuda_available()) {
        fprintf(stderr, "cnnkit: --device cuda: no usable CUDA device in this build/machine\n");
        return EXIT_RUNTIME;
    }
    ck_status st = ck_context_create(ctx, dev, 0, (uint64_t)o->seed);
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: cannot create a context: %s\n", ck_status_string(st));
        return EXIT_RUNTIME;
    }
    return 0;
}

static int load_data(const opts *o, int train, ck_dataset *ds) {
    char err[512];
    const char *dir = o->data && strcmp(o->data, "fashion-mnist") ? o->data : NULL;
    ck_status st = ck_fashion_mnist_load(dir, train, ds, err, sizeof err);
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: data: %s\n", err);
        if (!dir)
            fprintf(stderr, "cnnkit: install it with: apt-get install dataset-fashion-mnist\n");
        return EXIT_RUNTIME;
    }
    return 0;
}

/* ---- train ------------------------------------------------------------------------------- */

typedef struct train_ui {
    int tty;
    FILE *log;
} train_ui;

static int on_step(void *u, const ck_fit_progress *p) {
    train_ui *ui = (train_ui *)u;
    if (!ui->tty)
        return 0;
    const int width = 24;
    int done = (int)((double)p->step / p->steps * width);
    char bar[32];
    for (int i = 0; i < width; ++i)
        bar[i] = i < done ? '=' : (i == done ? '>' : '.');
    bar[width] = '\0';
    printf("\rEpoch %d/%d %5d/%-5d [%s] loss %.4f  accuracy %.4f  %7.0f img/s  ETA %4.0fs ",
           p->epoch, p->epochs, p->step, p->steps, bar, p->loss, p->accuracy, p->images_per_s,
           p->eta_s);
    fflush(stdout);
    return 0;
}

static int on_epoch(void *u, const ck_epoch_result *r) {
    train_ui *ui = (train_ui *)u;
    if (ui->tty)
        printf("\r");
    printf("epoch %d: loss %.4f  accuracy %.4f  val_loss %.4f  val_accuracy %.4f  %.1fs  %.0f "
           "img/s%s\n",
           r->epoch, r->loss, r->accuracy, r->val_loss, r->val_accuracy, r->seconds,
           r->images_per_s, ui->tty ? "                    " : "");
    fflush(stdout);
    if (ui->log) {
        fprintf(ui->log, "%d,%.6f,%.6f,%.6f,%.6f,%.3f,%.1f\n", r->epoch, r->loss, r->accuracy,
                r->val_loss, r->val_accuracy, r->seconds, r->images_per_s);
        fflush(ui->log);
    }
    return 0;
}

/* Two panels (loss, accuracy), train and validation per epoch. */
static int write_svg(const char *path, const ck_epoch_result *h, int n) {
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    const int W = 900, H = 360, pw = 400, ph = 260, top = 50, left[2] = {60, 510};
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" "
            "height=\"100%%\" fill=\"white\"/>\n",
            W, H);
    for (int panel = 0; panel < 2; ++panel) {
        double lo = 1e30, hi = -1e30;
        for (int i = 0; i < n; ++i) {
            double a = panel ? h[i].accuracy : h[i].loss;
            double b = panel ? h[i].val_accuracy : h[i].val_loss;
            lo = fmin(lo, fmin(a, isnan(b) ? a : b));
            hi = fmax(hi, fmax(a, isnan(b) ? a : b));
        }
        if (hi - lo < 1e-9) {
            hi += 0.5;
            lo -= 0.5;
        }
        double pad = 0.05 * (hi - lo);
        lo -= pad;
        hi += pad;
        const int x0 = left[panel];
        fprintf(f, "<text x=\"%d\" y=\"30\" font-size=\"15\">%s</text>\n", x0,
                panel ? "accuracy" : "loss");
        fprintf(f,
                "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
                "stroke=\"#888\"/>\n",
                x0, top, pw, ph);
        for (int k = 0; k <= 4; ++k) {
            double v = lo + (hi - lo) * k / 4.0;
            int y = top + ph - (int)(ph * k / 4.0);
            fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.3f</text>\n", x0 - 4, y + 4,
                    v);
        }
        for (int s = 0; s < 2; ++s) {
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                    s ? "#d62728" : "#1f77b4");
            for (int i = 0; i < n; ++i) {
                double v = s ? (panel ? h[i].val_accuracy : h[i].val_loss)
                             : (panel ? h[i].accuracy : h[i].loss);
                if (isnan(v))
                    continue;
                double x = x0 + (n > 1 ? (double)pw * i / (n - 1) : pw / 2.0);
                double y = top + ph - ph * (v - lo) / (hi - lo);
                fprintf(f, "%.1f,%.1f ", x, y);
            }
            fprintf(f, "\"/>\n");
        }
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">epoch (1..%d)</text>\n",
                x0 + pw / 2, top + ph + 20, n);
    }
    fprintf(f,
            "<text x=\"60\" y=\"%d\" fill=\"#1f77b4\">train</text><text x=\"110\" y=\"%d\" "
            "fill=\"#d62728\">validation</text>\n</svg>\n",
            H - 15, H - 15);
    return fclose(f);
}

static int cmd_train(const opts *o) {
    ck_context *ctx = NULL;
    int rc = make_context(o, &ctx);
    if (rc)
        return rc;
    ck_model *m = NULL;
    ck_dataset train = {0}, test = {0};
    ck_epoch_result *hist = NULL;
    FILE *log = NULL;
    rc = load_model(ctx, o, o->batch, &m);
    if (!rc)
        rc = load_data(o, 1, &train);
    if (!rc)
        rc = load_data(o, 0, &test);
    if (!rc && o->limit && o->limit < train.count) {
        ck_dataset sub = {0};
        if (ck_dataset_subset(&train, 0, o->limit, &sub) != CK_STATUS_SUCCESS) {
            fprintf(stderr, "cnnkit: out of memory for --limit\n");
            rc = EXIT_RUNTIME;
        } else {
            ck_dataset_free(&train);
            train = sub;
        }
    }
    const int epochs = o->epochs > 0 ? o->epochs : 1;
    if (!rc && o->log) {
        log = fopen(o->log, "w");
        if (!log) {
            fprintf(stderr, "cnnkit: --log %s: %s\n", o->log, strerror(errno));
            rc = EXIT_RUNTIME;
        } else {
            fprintf(log, "epoch,loss,accuracy,val_loss,val_accuracy,seconds,images_per_s\n");
        }
    }
    if (!rc) {
        hist = (ck_epoch_result *)calloc((size_t)epochs, sizeof *hist);
        ck_param_counts pc;
        ck_model_param_counts(m, &pc);
        printf("cnnkit %d.%d.%d: %s, %lld params, device %s, %d train / %d test images, "
               "batch %d, %d epoch%s, seed %llu\n",
               CNNKIT_VERSION_MAJOR, CNNKIT_VERSION_MINOR, CNNKIT_VERSION_PATCH, o->model, pc.total,
               ck_context_device(ctx) == CK_DEVICE_CUDA ? "cuda" : "cpu", train.count, test.count,
               o->batch, epochs, epochs > 1 ? "s" : "", o->seed);
        fflush(stdout);
        train_ui ui = {isatty(STDOUT_FILENO), log};
        ck_fit_options fo = {epochs, o->batch, o->seed, on_step, on_epoch, &ui};
        ck_status st = ck_model_fit(m, &train, &test, &fo, hist);
        if (st != CK_STATUS_SUCCESS) {
            fprintf(stderr, "cnnkit: training failed: %s\n", ck_context_last_error(ctx));
            rc = EXIT_RUNTIME;
        } else {
            /* the last epoch's validation ran on the test set: that is the final figure */
            const ck_epoch_result *last = &hist[epochs - 1];
            printf("test accuracy: %.4f (%d/%d), test loss %.4f\n", last->val_accuracy,
                   (int)lround(last->val_accuracy * test.count), test.count, last->val_loss);
            if (o->save) {
                st = ck_model_save(m, o->save);
                if (st != CK_STATUS_SUCCESS) {
                    fprintf(stderr, "cnnkit: --save: %s\n", ck_context_last_error(ctx));
                    rc = EXIT_RUNTIME;
                } else {
                    printf("saved %s\n", o->save);
                }
            }
            if (o->plot) {
                if (write_svg(o->plot, hist, epochs) != 0) {
                    fprintf(stderr, "cnnkit: --plot %s: cannot write\n", o->plot);
                    rc = EXIT_RUNTIME;
                } else {
                    printf("plot %s\n", o->plot);
                }
            }
        }
    }
    if (log)
        fclose(log);
    free(hist);
    ck_dataset_free(&train);
    ck_dataset_free(&test);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return rc;
}

static int cmd_summary(const opts *o) {
    ck_context *ctx = NULL;
    if (ck_context_create(&ctx, CK_DEVICE_CPU, 0, o->seed) != CK_STATUS_SUCCESS)
        return EXIT_RUNTIME;
    ck_model *m = NULL;
    int rc = load_model(ctx, o, 1, &m);
    if (!rc) {
        size_t need = 0;
        ck_model_summary(m, NULL, 0, &need);
        char *buf = (char *)malloc(need);
        if (buf && ck_model_summary(m, buf, need, NULL) == CK_STATUS_SUCCESS)
            fputs(buf, stdout);
        else
            rc = EXIT_RUNTIME;
        free(buf);
    }
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return rc;
}

static int cmd_eval_predict(const opts *o, int predict) {
    if (!o->weights) {
        fprintf(stderr, "cnnkit: %s needs --weights FILE (from cnnkit train --save)\n", o->cmd);
        return EXIT_USAGE;
    }
    ck_context *ctx = NULL;
    int rc = make_context(o, &ctx);
    if (rc)
        return rc;
    ck_model *m = NULL;
    ck_dataset test = {0};
    rc = load_model(ctx, o, o->batch, &m);
    if (!rc && ck_model_load(m, o->weights) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: --weights: %s\n", ck_context_last_error(ctx));
        rc = EXIT_RUNTIME;
    }
    if (!rc)
        rc = load_data(o, 0, &test);
    if (!rc && !predict) {
        ck_step_result r;
        if (ck_model_evaluate(m, test.images, test.labels, test.count, &r) != CK_STATUS_SUCCESS) {
            fprintf(stderr, "cnnkit: evaluate: %s\n", ck_context_last_error(ctx));
            rc = EXIT_RUNTIME;
        } else {
            printf("test accuracy: %.4f (%d/%d), test loss %.4f\n", (double)r.correct / r.count,
                   r.correct, r.count, r.loss);
        }
    } else if (!rc) {
        int n = o->count < test.count ? o->count : test.count;
        int k = ck_model_num_classes(m);
        float *p = (float *)malloc(sizeof(float) * (size_t)n * k);
        if (!p || ck_model_predict(m, test.images, n, p) != CK_STATUS_SUCCESS) {
            fprintf(stderr, "cnnkit: predict: %s\n", ck_context_last_error(ctx));
            rc = EXIT_RUNTIME;
        } else {
            for (int i = 0; i < n; ++i) {
                int best = 0;
                for (int j = 1; j < k; ++j)
                    if (p[i * k + j] > p[i * k + best])
                        best = j;
                printf("image %d: predicted %d (p = %.3f), label %d\n", i, best, p[i * k + best],
                       (int)test.labels[i]);
            }
        }
        free(p);
    }
    ck_dataset_free(&test);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return rc;
}

/* ---- check ------------------------------------------------------------------------------- */

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; ++s) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

/* cnnkit check MODEL [--json]: exit 0 no warnings or errors, 1 some, 2 bad model file. */
static int cmd_check(int argc, char **argv) {
    const char *path = NULL;
    int json = 0;
    for (int i = 2; i < argc; ++i) {
        if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!path && argv[i][0] != '-') {
            path = argv[i];
        } else {
            fprintf(stderr, "cnnkit: check: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (!path) {
        usage(stderr);
        return EXIT_USAGE;
    }
    char *text = read_file(path);
    if (!text) {
        fprintf(stderr, "cnnkit: cannot read model file %s: %s\n", path, strerror(errno));
        return EXIT_USAGE;
    }
    char err[512];
    ck_keras_model km;
    ck_status st = ck_keras_parse(text, &km, err, sizeof err);
    free(text);
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: %s: %s\n", path, err[0] ? err : ck_status_string(st));
        return EXIT_USAGE;
    }
    if (km.warnings[0]) {
        char *line = strtok(km.warnings, "\n");
        while (line) {
            fprintf(stderr, "cnnkit: warning: %s: %s\n", path, line);
            line = strtok(NULL, "\n");
        }
    }
    int total = 0;
    ck_finding *fs = NULL;
    st = ck_model_check(km.layers, km.count, NULL, 0, &total);
    if (st == CK_STATUS_SUCCESS && total > 0) {
        fs = (ck_finding *)calloc((size_t)total, sizeof *fs);
        st = fs ? ck_model_check(km.layers, km.count, fs, total, &total) : CK_STATUS_ALLOC_FAILED;
    }
    ck_keras_model_free(&km);
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: check: %s\n", ck_status_string(st));
        free(fs);
        return st == CK_STATUS_BAD_PARAM ? EXIT_USAGE : EXIT_RUNTIME;
    }
    int count[3] = {0, 0, 0};
    for (int i = 0; i < total; ++i)
        if (fs[i].severity >= 0 && fs[i].severity <= 2)
            count[fs[i].severity]++;
    if (json) {
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
            printf(", \"value\": %.6g}", isfinite(f->value) ? f->value : 0.0);
        }
        printf("%s], \"errors\": %d, \"warnings\": %d, \"infos\": %d}\n", total ? "\n" : "",
               count[CK_SEVERITY_ERROR], count[CK_SEVERITY_WARNING], count[CK_SEVERITY_INFO]);
    } else {
        for (int i = 0; i < total; ++i) {
            const ck_finding *f = &fs[i];
            printf("%s %s, layer%s", ck_severity_name(f->severity), f->code,
                   f->nlayers > 1 ? "s" : "");
            for (int k = 0; k < f->nlayers; ++k)
                printf("%s%d", k ? ", " : " ", f->layers[k]);
            printf(": %s\n  reason: %s\n  fix:    %s\n\n", f->message, f->reason, f->fix);
        }
        printf("%s: %d error%s, %d warning%s, %d info%s\n", path, count[CK_SEVERITY_ERROR],
               count[CK_SEVERITY_ERROR] == 1 ? "" : "s", count[CK_SEVERITY_WARNING],
               count[CK_SEVERITY_WARNING] == 1 ? "" : "s", count[CK_SEVERITY_INFO],
               count[CK_SEVERITY_INFO] == 1 ? "" : "s");
    }
    free(fs);
    return count[CK_SEVERITY_ERROR] + count[CK_SEVERITY_WARNING] > 0 ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 &&
        (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "check"))
        return cmd_check(argc, argv);
    opts o;
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(o.cmd, "summary"))
        return cmd_summary(&o);
    if (!strcmp(o.cmd, "train"))
        return cmd_train(&o);
    if (!strcmp(o.cmd, "evaluate"))
        return cmd_eval_predict(&o, 0);
    if (!strcmp(o.cmd, "predict"))
        return cmd_eval_predict(&o, 1);
    fprintf(stderr, "cnnkit: unknown command '%s'\n", o.cmd);
    usage(stderr);
    return EXIT_USAGE;
}
