/* What the commands share: reading the model file, the Keras-file helpers, the context and the
 * data. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnnkit/check.h"

/* Reads a model file into a NUL-terminated string; NULL after printing why (unreadable, or a
 * NUL byte, which would silently end the text there: its line and column are named). */
char *read_model(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cnnkit: cannot read model file %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = (char *)malloc(cap);
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (len + 1 < cap)
            break;
        cap *= 2;
        char *nb = (char *)realloc(buf, cap);
        if (!nb)
            free(buf);
        buf = nb;
    }
    const int err = ferror(f);
    fclose(f);
    if (!buf || err) {
        fprintf(stderr, "cnnkit: cannot read model file %s: %s\n", path,
                buf ? "read error" : "out of memory");
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    const char *nul = (const char *)memchr(buf, '\0', len);
    if (nul) {
        int line = 1, col = 1;
        for (const char *p = buf; p < nul; ++p, ++col)
            if (*p == '\n') {
                ++line;
                col = 0;
            }
        fprintf(stderr,
                "cnnkit: %s: line %d, column %d: a NUL byte (a model file is text; nothing "
                "after it would be read)\n",
                path, line, col);
        free(buf);
        return NULL;
    }
    return buf;
}

int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

int is_keras_file(const char *path) {
    return ends_with(path, ".keras") || ends_with(path, ".h5");
}

ck_status keras_file_model(const char *path, ck_keras_model *km, char *err, size_t len) {
    memset(km, 0, sizeof *km);
    err[0] = '\0';
    ck_context *ctx = NULL;
    ck_status st = ck_context_create(&ctx, CK_DEVICE_CPU, 0, 1);
    if (st == CK_STATUS_SUCCESS && (st = ck_keras_file_parse(ctx, path, km)) != CK_STATUS_SUCCESS)
        snprintf(err, len, "%s", ck_context_last_error(ctx));
    ck_context_destroy(ctx);
    return st;
}

int data_fits(const opts *o, const ck_model *m, const ck_dataset *ds, const char *what) {
    int h = 0, w = 0, c = 0;
    if (ck_model_input_shape(m, &h, &w, &c) != CK_STATUS_SUCCESS || h != ds->h || w != ds->w ||
        c != ds->c) {
        fprintf(stderr, "cnnkit: %s: the %s images are %dx%dx%d, the model input is %dx%dx%d\n",
                o->cmd, what, ds->h, ds->w, ds->c, h, w, c);
        return EXIT_USAGE;
    }
    const int k = ck_model_num_classes(m);
    for (int i = 0; i < ds->count; ++i)
        if (ds->labels[i] < 0 || ds->labels[i] >= k) {
            fprintf(stderr,
                    "cnnkit: %s: the %s labels hold %d (sample %d), the model has %d classes "
                    "(0..%d)\n",
                    o->cmd, what, (int)ds->labels[i], i, k, k - 1);
            return EXIT_USAGE;
        }
    return 0;
}

ck_status save_model_file(ck_model *m, const char *path) {
    return is_keras_file(path) ? ck_model_save_keras(m, path) : ck_model_save(m, path);
}

ck_status load_weights_file(ck_model *m, const char *path) {
    return is_keras_file(path) ? ck_model_load_keras_weights(m, path) : ck_model_load(m, path);
}

void print_warnings(const char *path, char *warnings) {
    for (char *line = strtok(warnings, "\n"); line; line = strtok(NULL, "\n"))
        fprintf(stderr, "cnnkit: warning: %s: %s\n", path, line);
}

/* Loads the model (text, or a Keras file with its weights) and builds it; returns an exit code
 * (0 ok). */
static int load_built(ck_context *ctx, const opts *o, int max_batch, ck_model **out) {
    if (is_keras_file(o->model)) { /* architecture and weights from the file */
        /* the option overrides the file's dtype policy, as it does a model file's */
        const ck_status st = o->precision
                                 ? ck_model_load_keras_as(ctx, o->model, max_batch,
                                                          (ck_precision)(o->precision - 1), out)
                                 : ck_model_load_keras(ctx, o->model, max_batch, out);
        if (st != CK_STATUS_SUCCESS) {
            fprintf(stderr, "cnnkit: %s\n", ck_context_last_error(ctx));
            /* as for model text: a precision this device cannot run is a runtime failure, the
             * file's own faults (a refused dtype among them) are usage errors */
            return st == CK_STATUS_NOT_SUPPORTED && o->precision &&
                           strstr(ck_context_last_error(ctx), "model: precision ")
                       ? EXIT_RUNTIME
                       : EXIT_USAGE;
        }
        return 0;
    }
    char *text = read_model(o->model);
    if (!text)
        return EXIT_USAGE;
    char msg[2048];
    ck_model *m = NULL;
    ck_status st = ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg);
    free(text);
    if (st == CK_STATUS_SUCCESS && o->precision) { /* the option overrides the file's policy */
        st = ck_model_set_precision(m, (ck_precision)(o->precision - 1));
        if (st != CK_STATUS_SUCCESS) {
            fprintf(stderr, "cnnkit: --precision: %s\n", ck_context_last_error(ctx));
            ck_model_destroy(m);
            return st == CK_STATUS_NOT_SUPPORTED ? EXIT_RUNTIME : EXIT_USAGE;
        }
    }
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: %s: %s\n", o->model, msg[0] ? msg : ck_context_last_error(ctx));
        return EXIT_USAGE;
    }
    if (o->rank == 0) /* --distributed: once, not once per rank */
        print_warnings(o->model, msg);
    ck_layer_desc d0;
    const int have_d0 = ck_model_layer_desc(m, 0, &d0) == CK_STATUS_SUCCESS;
    /* --input gives a shape the model lacks; it never replaces the one the model declares */
    if (o->in_h && have_d0 && d0.input_h &&
        (d0.input_h != o->in_h || d0.input_w != o->in_w || d0.input_c != o->in_c)) {
        fprintf(stderr,
                "cnnkit: %s: --input %dx%dx%d, but the model's input shape is %dx%dx%d (--input "
                "is for a model without one)\n",
                o->model, o->in_h, o->in_w, o->in_c, d0.input_h, d0.input_w, d0.input_c);
        ck_model_destroy(m);
        return EXIT_USAGE;
    }
    if (!o->in_h && have_d0 && !d0.input_h) {
        /* Keras builds such a model on its first batch; cnnkit builds before reading data */
        fprintf(stderr,
                "cnnkit: %s: the model has no input shape: give keras.Input(shape=...) or "
                "input_shape=... on its first layer, or --input HxWxC (Fashion-MNIST: 28x28x1)\n",
                o->model);
        ck_model_destroy(m);
        return EXIT_USAGE;
    }
    st = ck_model_build(m, o->in_h, o->in_w, o->in_c, max_batch);
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: %s: %s\n", o->model, ck_context_last_error(ctx));
        /* a precision this device cannot run is a runtime failure (a model the precision cannot
         * take, e.g. logits not from a Dense, stays a model fault) */
        const int device = st == CK_STATUS_ALLOC_FAILED ||
                           (st == CK_STATUS_NOT_SUPPORTED &&
                            strstr(ck_context_last_error(ctx), "compute capability") != NULL);
        ck_model_destroy(m);
        return device ? EXIT_RUNTIME : EXIT_USAGE;
    }
    *out = m;
    return 0;
}

int load_model(ck_context *ctx, const opts *o, int max_batch, ck_model **out) {
    const int rc = load_built(ctx, o, max_batch, out);
    const int n = rc ? 0 : ck_model_num_layers(*out);
    ck_layer_desc *layers = n > 0 ? (ck_layer_desc *)calloc((size_t)n, sizeof *layers) : NULL;
    for (int i = 0; layers && i < n; ++i)
        ck_model_layer_desc(*out, i, &layers[i]);
    /* the commands that feed the model data (check reports it as a finding) */
    const int feeds =
        !strcmp(o->cmd, "train") || !strcmp(o->cmd, "evaluate") || !strcmp(o->cmd, "predict");
    if (layers && feeds)
        warn_data_range(o, layers, n);
    free(layers);
    return rc;
}

/* auto: the GPU when this build has the CUDA backend and a device is present, else the CPU. */
int make_context(const opts *o, ck_context **ctx) {
    ck_device dev = !strcmp(o->device, "cuda") ? CK_DEVICE_CUDA : CK_DEVICE_CPU;
    if (!strcmp(o->device, "auto"))
        dev = ck_cuda_available() ? CK_DEVICE_CUDA : CK_DEVICE_CPU;
    /* --distributed on GPUs: device i for the host's i-th rank */
    const int ordinal = o->distributed && dev == CK_DEVICE_CUDA ? o->local_rank : 0;
    ck_status st = ck_context_create(ctx, dev, ordinal, (uint64_t)o->seed);
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: --device %s: cannot create a context%s: %s: %s\n", o->device,
                ordinal ? " (--distributed: one GPU per rank of a host, this rank's is its local "
                          "rank)"
                        : "",
                ck_status_string(st), ck_context_last_error(NULL));
        return EXIT_RUNTIME;
    }
    if (dev == CK_DEVICE_CUDA) { /* the versions actually loaded, once per run */
        char info[640];
        (void)ck_cuda_describe(ordinal, info, sizeof info);
        /* with --json, stdout is the JSON document alone */
        fprintf(o->json ? stderr : stdout, "cnnkit: %s\n", info);
    }
    ck_context_set_cpu_threads(*ctx, o->threads);
    st = ck_context_set_conv_algo(*ctx, (ck_conv_algo)o->conv_algo);
    if (st == CK_STATUS_SUCCESS)
        st = ck_context_set_math(*ctx, (ck_math)o->math);
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: --conv-algo / --math: %s: %s\n", ck_status_string(st),
                ck_context_last_error(*ctx));
        ck_context_destroy(*ctx);
        *ctx = NULL;
        return EXIT_RUNTIME;
    }
    return 0;
}

const char *data_dir(const opts *o) {
    if (!o->data)
        return NULL;
    return strcmp(o->data, "fashion-mnist") ? o->data : CK_FASHION_MNIST_DIR;
}

const char *data_dir_resolved(const opts *o) {
    const char *dir = data_dir(o), *env = getenv(CK_DATA_ENV);
    return dir ? dir : env && *env ? env : CK_FASHION_MNIST_DIR;
}

/* dir NULL: --data (or the default); train: the train-* files, else t10k-*. */
int load_data(const opts *o, const char *dir, int train, ck_dataset *ds) {
    char err[512];
    if (!dir)
        dir = data_dir(o);
    ck_status st = ck_fashion_mnist_load(dir, train, ds, err, sizeof err);
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: data: %s\n", err);
        if (!dir)
            fprintf(stderr, "cnnkit: install it with: apt-get install dataset-fashion-mnist\n");
        return EXIT_RUNTIME;
    }
    /* --pixels raw: the loaders' x / 255 undone, rounded back to the stored byte (x / 255 * 255
     * in float is within an ulp of it, and off by one for half of the 256 values) */
    const size_t count = (size_t)ds->count * ds->h * ds->w * ds->c;
    for (size_t i = 0; o->raw_pixels && i < count; ++i)
        ds->images[i] = nearbyintf(ds->images[i] * 255.0f);
    return 0;
}

void data_range(const opts *o, float *lo, float *hi) {
    *lo = 0.0f;
    *hi = o->raw_pixels ? 255.0f : 1.0f;
}

void warn_data_range(const opts *o, const ck_layer_desc *layers, int count) {
    float lo, hi;
    data_range(o, &lo, &hi);
    ck_finding f[4];
    int n = 0;
    if (o->rank != 0 || ck_model_check_data(layers, count, lo, hi, f, 4, &n) != CK_STATUS_SUCCESS)
        return;
    for (int i = 0; i < n && i < 4; ++i)
        fprintf(stderr, "cnnkit: warning: %s: %s\n  fix: %s\n", f[i].code, f[i].message, f[i].fix);
}

/* Takes the first n training images (--limit) or test images (--test-limit); more than there
 * are takes them all, and says so. */
int limit_data(ck_dataset *ds, int n, const char *what) {
    if (n <= 0 || n == ds->count)
        return 0;
    if (n > ds->count) {
        fprintf(stderr, "cnnkit: note: %s %d: the data set has %d images, all of them are used\n",
                what, n, ds->count);
        return 0;
    }
    ck_dataset sub = {0};
    if (ck_dataset_subset(ds, 0, n, &sub) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: out of memory for %s\n", what);
        return EXIT_RUNTIME;
    }
    ck_dataset_free(ds);
    *ds = sub;
    return 0;
}
