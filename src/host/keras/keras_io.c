/* Keras files: .keras archives (a zip, with libzip: config.json, model.weights.h5,
 * metadata.json), .weights.h5 and legacy whole-model .h5 files. The model is built through the
 * public API from the config; the weights go through ck_model_get/set_weights. Nothing is changed
 * until every part of a file has been read and checked. */
#include "keras_io.h"
#include "model_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zip.h>

#define CK_KIO_CONFIG_MAX ((zip_uint64_t)64 << 20)

/* ---- the model internals this file reads: its optimizer and the optimizer state ---------- */
static void opt_shape(const ck_model *m, ck_kio_opt *o) {
    const ck_optimizer_desc *d = &m->opt;
    o->type = d->type;
    o->has_v = d->type != CK_OPT_SGD;
    o->has_m = d->type == CK_OPT_ADAM || d->type == CK_OPT_ADADELTA || d->momentum > 0.0f ||
               (d->type == CK_OPT_RMSPROP && d->centered);
    o->lr = d->learning_rate;
}

ck_status ck_kio_opt_get(ck_model *m, ck_kio_opt *o) {
    if (m->gpu)
        CK_TRY(ck_gpu_model_pull(m));
    opt_shape(m, o);
    memcpy(o->m, m->opt_m, m->num_params * sizeof(float));
    memcpy(o->v, m->opt_v, m->num_params * sizeof(float));
    o->step = m->step;
    return CK_STATUS_SUCCESS;
}

ck_status ck_kio_opt_set(ck_model *m, const ck_kio_opt *o) {
    if (m->gpu)
        CK_TRY(ck_gpu_model_pull(m));
    memcpy(m->opt_m, o->m, m->num_params * sizeof(float));
    memcpy(m->opt_v, o->v, m->num_params * sizeof(float));
    m->step = o->step;
    return m->gpu ? ck_gpu_model_push(m) : CK_STATUS_SUCCESS;
}

/* ---- the weights plan --------------------------------------------------------------------- */
static void add_var(ck_kio_layer *L, const char *role, int rank, const long long *dims,
                    int trainable, size_t *off, size_t *toff) {
    ck_kio_var *v = &L->vars[L->nvars++];
    v->role = role;
    v->rank = rank;
    v->count = 1;
    for (int k = 0; k < rank; ++k) {
        v->dims[k] = dims[k];
        v->count *= (size_t)dims[k];
    }
    v->offset = *off;
    *off += v->count;
    v->param_off = trainable ? (long long)*toff : -1;
    if (trainable)
        *toff += v->count;
}

ck_status ck_kio_plan_make(ck_model *m, ck_kio_plan *P) {
    memset(P, 0, sizeof *P);
    const int n = ck_model_num_layers(m);
    P->layers = (ck_kio_layer *)ck_host_calloc(m->ctx, (size_t)n, sizeof *P->layers);
    if (!P->layers)
        return ck_host_oom(m->ctx, "model (the weights plan)", (size_t)n * sizeof *P->layers);
    P->count = n;
    char seen[CK_MAX_LAYERS][48];
    int seen_n[CK_MAX_LAYERS], nseen = 0;
    size_t off = 0, toff = 0;
    int order[CK_MAX_LAYERS];
    ck_kio_keras_order(m, order);
    size_t offs[CK_MAX_LAYERS + 1], toffs[CK_MAX_LAYERS + 1]; /* each layer's first weight */
    for (int i = 0; i < n; ++i) {
        offs[i] = off;
        toffs[i] = toff;
        ck_param_spec spec[CK_LAYER_MAX_PARAMS];
        const int np = ck_kio_layer_specs(m, i, spec);
        for (int k = 0; k < np; ++k) {
            size_t cnt = 1;
            for (int r = 0; r < spec[k].ndim; ++r)
                cnt *= (size_t)spec[k].dims[r];
            off += cnt;
            toff += spec[k].trainable ? cnt : 0;
        }
    }
    P->total = off;
    P->trainable = toff;
    for (int j = 0; j < n; ++j) {
        const int i = order[j]; /* Keras numbers the groups, and the optimizer its variables, so */
        ck_layer_desc d;
        ck_model_layer_desc(m, i, &d);
        ck_kio_layer *L = &P->layers[j];
        L->layer = i;
        off = offs[i];
        toff = toffs[i];
        snprintf(L->name, sizeof L->name, "%s", d.name);
        L->cls = ck_keras_class_of(&d);
        /* Keras names each layer's weights group after its class: conv2d, conv2d_1, ... */
        char base[48];
        ck_kio_snake_case(L->cls, base, sizeof base);
        int k = 0;
        while (k < nseen && strcmp(seen[k], base))
            ++k;
        if (k == nseen) {
            snprintf(seen[nseen], sizeof seen[0], "%s", base);
            seen_n[nseen++] = 0;
        }
        if (seen_n[k]++ == 0)
            snprintf(L->group, sizeof L->group, "%s", base);
        else
            snprintf(L->group, sizeof L->group, "%s_%d", base, seen_n[k] - 1);
        ck_param_spec spec[CK_LAYER_MAX_PARAMS];
        const int np = ck_kio_layer_specs(m, i, spec);
        for (int k = 0; k < np; ++k)
            add_var(L, spec[k].name, spec[k].ndim, spec[k].dims, spec[k].trainable, &off, &toff);
    }
    return CK_STATUS_SUCCESS;
}

/* ---- zip ---------------------------------------------------------------------------------- */
/* Reads member name of an open archive into a new buffer (+1 NUL byte). */
static ck_status zip_member(ck_context *ctx, zip_t *za, const char *path, const char *name,
                            zip_uint64_t max, char **buf, size_t *len) {
    zip_stat_t zs;
    zip_stat_init(&zs);
    if (zip_stat(za, name, 0, &zs) != 0 || !(zs.valid & ZIP_STAT_SIZE))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: %s is not a Keras archive (no %s in it)",
                       path, name);
    if (zs.size > max)
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED, "path: %s: %s is too large (%llu bytes)", path,
                       name, (unsigned long long)zs.size);
    char *b = (char *)ck_host_alloc(ctx, (size_t)zs.size + 1);
    if (!b)
        return ck_host_oom(ctx, "path (reading the archive)", (size_t)zs.size + 1);
    zip_file_t *zf = zip_fopen(za, name, 0);
    zip_int64_t got = zf ? zip_fread(zf, b, zs.size) : -1;
    /* one more read: libzip checks the CRC-32 at the end of the member */
    char extra;
    zip_int64_t more = zf && got == (zip_int64_t)zs.size ? zip_fread(zf, &extra, 1) : -1;
    const char *why = zf ? zip_error_strerror(zip_file_get_error(zf)) : zip_strerror(za);
    if (!zf || got != (zip_int64_t)zs.size || more != 0) {
        ck_status st =
            ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: %s: reading %s failed: %s", path, name, why);
        if (zf)
            zip_fclose(zf);
        ck_host_free(ctx, b);
        return st;
    }
    zip_fclose(zf);
    b[zs.size] = '\0';
    *buf = b;
    *len = (size_t)zs.size;
    return CK_STATUS_SUCCESS;
}

typedef struct archive {
    char *config, *weights;
    size_t config_len, weights_len;
    int by_cnnkit; /* metadata.json's saved_by names cnnkit */
} archive;

static void archive_free(ck_context *ctx, archive *a) {
    ck_host_free(ctx, a->config);
    ck_host_free(ctx, a->weights);
    memset(a, 0, sizeof *a);
}

static ck_status archive_read(ck_context *ctx, const char *path, int want_config, archive *a) {
    memset(a, 0, sizeof *a);
    int ze = 0;
    zip_t *za = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
    if (!za) {
        zip_error_t e;
        zip_error_init_with_code(&e, ze);
        ck_status st = ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: %s is not a readable zip (%s)",
                               path, zip_error_strerror(&e));
        zip_error_fini(&e);
        return st;
    }
    ck_status st = CK_STATUS_SUCCESS;
    if (want_config)
        st =
            zip_member(ctx, za, path, "config.json", CK_KIO_CONFIG_MAX, &a->config, &a->config_len);
    if (st == CK_STATUS_SUCCESS && want_config) {
        char *meta = NULL;
        size_t mlen = 0;
        if (zip_member(ctx, za, path, "metadata.json", 65536, &meta, &mlen) == CK_STATUS_SUCCESS) {
            json_t *root = json_loadb(meta, mlen, 0, NULL);
            const char *by = json_string_value(json_object_get(root, "saved_by"));
            a->by_cnnkit = by && !strncmp(by, "cnnkit ", 7);
            json_decref(root);
        }
        ck_host_free(ctx, meta);
        ck_clear_error(ctx); /* metadata is optional: an unreadable one is no error */
    }
    if (st == CK_STATUS_SUCCESS)
        st = zip_member(ctx, za, path, "model.weights.h5", (zip_uint64_t)SIZE_MAX / 2, &a->weights,
                        &a->weights_len);
    zip_discard(za);
    if (st != CK_STATUS_SUCCESS)
        archive_free(ctx, a);
    return st;
}

typedef enum file_kind { KIND_OTHER, KIND_ZIP, KIND_HDF5 } file_kind;

static file_kind sniff(const char *path) {
    unsigned char b[8] = {0};
    const char *why = NULL;
    const int fd = ck_open_regular(path, &why);
    if (fd < 0)
        return KIND_OTHER;
    ssize_t n = read(fd, b, 8);
    close(fd);
    if (n >= 4 && !memcmp(b, "PK\3\4", 4))
        return KIND_ZIP;
    if (n == 8 && !memcmp(b, "\211HDF\r\n\032\n", 8))
        return KIND_HDF5;
    return KIND_OTHER;
}

/* ---- reading -------------------------------------------------------------------------------- */
/* Reads the weights (and the optimizer state when the file has the model's) from an HDF5 image
 * or file into m; m changes only when everything was read. */
/* The weights plan and one buffer for the flat weights and the optimizer state (m, v), filled
 * from the model's current state. Free with state_free. */
typedef struct kio_state {
    ck_kio_plan plan;
    float *w;
    ck_kio_opt opt;
} kio_state;

static void state_free(ck_context *ctx, kio_state *S) {
    ck_host_free(ctx, S->w);
    ck_host_free(ctx, S->plan.layers);
}

static ck_status state_of(ck_model *m, kio_state *S) {
    ck_context *ctx = m->ctx;
    memset(S, 0, sizeof *S);
    CK_TRY(ck_kio_plan_make(m, &S->plan));
    const size_t np = m->num_params, total = S->plan.total;
    S->w = (float *)ck_host_calloc(ctx, total + 2 * np + 1, sizeof(float));
    if (!S->w) {
        state_free(ctx, S);
        return ck_host_oom(ctx, "model (the weights)", (total + 2 * np) * sizeof(float));
    }
    S->opt.m = S->w + total;
    S->opt.v = S->opt.m + np;
    ck_status st = ck_model_get_weights(m, S->w, total, NULL);
    if (st == CK_STATUS_SUCCESS)
        st = ck_kio_opt_get(m, &S->opt);
    if (st != CK_STATUS_SUCCESS)
        state_free(ctx, S);
    return st;
}

/* Reads the weights (and the optimizer state when the file has the model's) from an HDF5 image
 * or file into m; m changes only when everything was read. */
static ck_status load_weights(ck_model *m, const void *image, size_t len, const char *path,
                              const char *what) {
    kio_state S;
    CK_TRY(state_of(m, &S));
    int found = 0;
    ck_status st = ck_kio_h5_read(m->ctx, image, len, path, what, &S.plan, S.w, &S.opt, &found);
    if (st == CK_STATUS_SUCCESS)
        st = ck_model_set_weights(m, S.w, S.plan.total);
    if (st == CK_STATUS_SUCCESS && found)
        st = ck_kio_opt_set(m, &S.opt);
    state_free(m->ctx, &S);
    return st;
}

/* The common checks of the entry points that take a built model and a path. */
static ck_status check_model_path(ck_model *m, const char *path) {
    ck_enter(m->ctx);
    if (!path || !*path)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "path: is NULL or empty");
    if (!m->built)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    return CK_STATUS_SUCCESS;
}

/* The failure for a file that sniff did not recognize: why it cannot be opened, else that it is
 * neither kind (what: the kinds the call reads). */
static ck_status not_keras_file(ck_context *ctx, const char *path, const char *what) {
    const char *why = NULL;
    const int fd = ck_open_regular(path, &why);
    if (fd < 0)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: cannot open %s: %s", path, why);
    close(fd);
    return ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: %s is neither %s", path, what);
}

CK_API ck_status ck_model_load_keras_weights(ck_model *m, const char *path) {
    CK_MODEL_ENTRY(m); /* also refuses a model orphaned by ck_context_destroy */
    ck_context *ctx = m->ctx;
    CK_TRY(check_model_path(m, path));
    const file_kind k = sniff(path);
    if (k == KIND_HDF5)
        return load_weights(m, NULL, 0, path, path);
    if (k != KIND_ZIP)
        return not_keras_file(ctx, path, "a .weights.h5 (HDF5) file nor a .keras archive");
    archive a;
    CK_TRY(archive_read(ctx, path, 0, &a));
    ck_status st = load_weights(m, a.weights, a.weights_len, NULL, path);
    archive_free(ctx, &a);
    return st;
}

ck_status ck_kio_model_from_config(ck_context *ctx, const ck_keras_model *km, int precision,
                                   ck_model **out) {
    ck_status st = ck_model_create(ctx, out);
    for (int i = 0; st == CK_STATUS_SUCCESS && i < km->count; ++i)
        st = ck_model_add(*out, &km->layers[i]);
    if (st == CK_STATUS_SUCCESS && km->has_compile)
        st = ck_model_set_optimizer(*out, &km->optimizer);
    if (precision < 0 && km->has_precision)
        precision = km->precision;
    if (st == CK_STATUS_SUCCESS && precision >= 0)
        st = ck_model_set_precision(*out, (ck_precision)precision);
    if (st == CK_STATUS_SUCCESS)
        st = ck_model_set_name(*out, km->name, km->input_name);
    return st;
}

/* Builds the model of a config (text of config.json or model_config). */
static ck_status model_from_config(ck_context *ctx, const char *path, const char *json, size_t len,
                                   const char *training, int by_cnnkit, int max_batch,
                                   int precision, ck_model **out) {
    ck_keras_model km;
    char err[512];
    ck_status st = ck_kio_parse_config_by(json, len, training, by_cnnkit, &km, err, sizeof err);
    if (st != CK_STATUS_SUCCESS)
        return ck_fail(ctx, st, "path: %s: %s", path, err);
    ck_model *m = NULL;
    st = ck_kio_model_from_config(ctx, &km, precision, &m);
    const int no_input = km.count > 0 && km.layers[0].input_h == 0;
    ck_keras_model_free(&km);
    if (st == CK_STATUS_SUCCESS && no_input)
        st = ck_fail(ctx, CK_STATUS_BAD_PARAM,
                     "path: %s: the model has no input shape (no InputLayer / batch_shape)", path);
    if (st == CK_STATUS_SUCCESS)
        st = ck_model_build(m, 0, 0, 0, max_batch);
    if (st != CK_STATUS_SUCCESS) {
        /* keep the message of the failing call, prefixed with the file */
        char msg[CK_ERR_LEN];
        snprintf(msg, sizeof msg, "%s", ck_context_last_error(ctx));
        ck_model_destroy(m);
        if (strncmp(msg, "path: ", 6))
            ck_fail(ctx, st, "path: %s: %s", path, msg);
        return st;
    }
    *out = m;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_keras_file_parse(ck_context *ctx, const char *path, ck_keras_model *out) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    if (!path || !*path || !out)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "%s: is NULL or empty", out ? "path" : "out");
    const file_kind k = sniff(path);
    char *config = NULL, *training = NULL;
    size_t len = 0;
    archive a;
    memset(&a, 0, sizeof a);
    ck_status st;
    if (k == KIND_ZIP) {
        st = archive_read(ctx, path, 1, &a);
        config = a.config;
        len = a.config_len;
    } else if (k == KIND_HDF5) {
        st = ck_kio_h5_model_config(ctx, path, &config, &training);
        len = config ? strlen(config) : 0;
    } else {
        return not_keras_file(ctx, path, "a .keras archive (zip) nor a Keras .h5 (HDF5) file");
    }
    if (st == CK_STATUS_SUCCESS) {
        char err[512];
        st = ck_kio_parse_config_by(config, len, training, k == KIND_ZIP && a.by_cnnkit, out, err,
                                    sizeof err);
        if (st != CK_STATUS_SUCCESS)
            ck_fail(ctx, st, "path: %s: %s", path, err);
    }
    if (k == KIND_ZIP) {
        archive_free(ctx, &a);
    } else {
        ck_host_free(ctx, config);
        ck_host_free(ctx, training);
    }
    return st;
}

/* precision: a ck_precision, or -1 for the file's dtype policy */
static ck_status load_keras(ck_context *ctx, const char *path, int max_batch, int precision,
                            ck_model **out) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    if (!path || !*path || !out)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "%s: is NULL or empty", out ? "path" : "model");
    if (max_batch < 1)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "max_batch: must be >= 1, got %d", max_batch);
    if (precision != -1 && precision != CK_PRECISION_FP32 && precision != CK_PRECISION_TF32 &&
        precision != CK_PRECISION_BF16)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "precision: %d (CK_PRECISION_FP32, _TF32 or _BF16)", precision);
    const file_kind k = sniff(path);
    ck_model *m = NULL;
    ck_status st;
    if (k == KIND_ZIP) {
        archive a;
        CK_TRY(archive_read(ctx, path, 1, &a));
        st = model_from_config(ctx, path, a.config, a.config_len, NULL, a.by_cnnkit, max_batch,
                               precision, &m);
        if (st == CK_STATUS_SUCCESS)
            st = load_weights(m, a.weights, a.weights_len, NULL, path);
        archive_free(ctx, &a);
    } else if (k == KIND_HDF5) {
        char *config = NULL, *training = NULL;
        st = ck_kio_h5_model_config(ctx, path, &config, &training);
        if (st == CK_STATUS_SUCCESS)
            st = model_from_config(ctx, path, config, strlen(config), training, 0, max_batch,
                                   precision, &m);
        ck_host_free(ctx, config);
        ck_host_free(ctx, training);
        if (st == CK_STATUS_SUCCESS)
            st = load_weights(m, NULL, 0, path, path);
    } else {
        return not_keras_file(ctx, path, "a .keras archive (zip) nor a Keras .h5 (HDF5) file");
    }
    if (st != CK_STATUS_SUCCESS) {
        ck_model_destroy(m);
        return st;
    }
    *out = m;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_load_keras(ck_context *ctx, const char *path, int max_batch,
                                     ck_model **out) {
    return load_keras(ctx, path, max_batch, -1, out);
}

CK_API ck_status ck_model_load_keras_as(ck_context *ctx, const char *path, int max_batch,
                                        ck_precision precision, ck_model **out) {
    return load_keras(ctx, path, max_batch, (int)precision, out);
}

/* ---- writing -------------------------------------------------------------------------------- */
static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* The model's weights file image (Keras 3 layout, with the optimizer state). */
static ck_status weights_image(ck_model *m, void **image, size_t *len) {
    kio_state S;
    CK_TRY(state_of(m, &S));
    ck_status st = ck_kio_h5_write(m->ctx, &S.plan, S.w, &S.opt,
                                   m->graph ? "functional" : "sequential", image, len);
    state_free(m->ctx, &S);
    return st;
}

/* A zip in memory: metadata.json, config.json, model.weights.h5 (stored: it is binary). */
static ck_status archive_image(ck_context *ctx, const char *config, const void *weights,
                               size_t wlen, void **out, size_t *out_len) {
    char meta[160];
    time_t now = time(NULL);
    struct tm tmv;
    gmtime_r(&now, &tmv);
    snprintf(meta, sizeof meta,
             "{\"keras_version\": \"3.15.1\", \"date_saved\": "
             "\"%04d-%02d-%02d@%02d:%02d:%02d\", \"saved_by\": \"cnnkit %d.%d.%d\"}",
             tmv.tm_year + 1900, tmv.tm_mon + 1, tmv.tm_mday, tmv.tm_hour, tmv.tm_min, tmv.tm_sec,
             CNNKIT_VERSION_MAJOR, CNNKIT_VERSION_MINOR, CNNKIT_VERSION_PATCH);
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(NULL, 0, 0, &ze);
    zip_t *za = NULL;
    int bad = !src;
    if (!bad) {
        zip_source_keep(src);
        za = zip_open_from_source(src, ZIP_TRUNCATE, &ze);
        bad = !za;
    }
    const char *names[3] = {"metadata.json", "config.json", "model.weights.h5"};
    const void *data[3] = {meta, config, weights};
    const size_t lens[3] = {strlen(meta), strlen(config), wlen};
    for (int i = 0; !bad && i < 3; ++i) {
        zip_source_t *s = zip_source_buffer(za, data[i], lens[i], 0);
        zip_int64_t idx = s ? zip_file_add(za, names[i], s, ZIP_FL_ENC_UTF_8) : -1;
        if (s && idx < 0)
            zip_source_free(s);
        bad = idx < 0 || zip_set_file_compression(za, (zip_uint64_t)idx,
                                                  i == 2 ? ZIP_CM_STORE : ZIP_CM_DEFLATE, 0) != 0;
    }
    if (za && (bad || zip_close(za) != 0)) {
        zip_discard(za);
        bad = 1;
    }
    void *buf = NULL;
    zip_int64_t n = -1;
    int oom = 0;
    if (!bad && zip_source_open(src) == 0) {
        if (zip_source_seek(src, 0, SEEK_END) == 0 && (n = zip_source_tell(src)) > 0 &&
            zip_source_seek(src, 0, SEEK_SET) == 0 &&
            !(oom = !(buf = ck_host_alloc(ctx, (size_t)n))) &&
            zip_source_read(src, buf, (zip_uint64_t)n) != n) {
            ck_host_free(ctx, buf);
            buf = NULL;
        }
        zip_source_close(src);
    }
    if (src)
        zip_source_free(src);
    zip_error_fini(&ze);
    if (oom)
        return ck_host_oom(ctx, "path: the zip archive", (size_t)n);
    if (!buf)
        return ck_fail(ctx, CK_STATUS_ALLOC_FAILED, "path: could not assemble the zip archive");
    *out = buf;
    *out_len = (size_t)n;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_save_keras(ck_model *m, const char *path) {
    CK_MODEL_ENTRY(m); /* also refuses a model orphaned by ck_context_destroy */
    ck_context *ctx = m->ctx;
    CK_TRY(check_model_path(m, path));
    const int weights_only = ends_with(path, ".weights.h5");
    if (!weights_only && !ends_with(path, ".keras"))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "path: %s must end in .keras (the model) or .weights.h5 (its weights)",
                       path);
    char *config = NULL;
    if (!weights_only) {
        char err[256] = "";
        config = ck_kio_write_config(m, err, sizeof err);
        if (!config)
            return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED, "model: %s", err);
    }
    void *img = NULL;
    size_t len = 0;
    ck_status st = weights_image(m, &img, &len);
    if (st == CK_STATUS_SUCCESS && weights_only) {
        st = ck_write_file_atomic(ctx, path, img, len);
    } else if (st == CK_STATUS_SUCCESS) {
        void *zbuf = NULL;
        size_t zlen = 0;
        st = archive_image(ctx, config, img, len, &zbuf, &zlen);
        if (st == CK_STATUS_SUCCESS)
            st = ck_write_file_atomic(ctx, path, zbuf, zlen);
        ck_host_free(ctx, zbuf);
    }
    ck_host_free(ctx, img);
    free(config); /* jansson's json_dumps: its allocator, not ours */
    return st;
}
