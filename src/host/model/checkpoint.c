/* Checkpoints: a versioned little-endian file with a CRC-32, written atomically.
 *
 * Layout (version 3; version 2, still read, lacks the fit block's precision, version 1 the fit
 * block):
 *   "CNNKITCK" | u32 version | u32 num_layers | per layer: 9 x i32 (type, units, kernel_h,
 *   kernel_w, stride_h, stride_w, padding, use_bias, activation) + 4 x f32 (rate, momentum,
 *   epsilon, alpha) | graph models only (ck_model.graph), per layer: i32 num_inputs +
 *   CK_MAX_LAYER_INPUTS x i32 inputs | 3 x i32 input h, w, c | i32 bn convention (0 = Keras) | u64
 * num_params | u64 num_fixed | i32 optimizer type, i32 nesterov (RMSprop: centered) | 6 x f32
 * (lr, beta1 (RMSprop, Adadelta: rho), beta2, epsilon, momentum, weight_decay) | i64 step | u64
 * seed (the context's) | fit block (v2): i32 valid, i32 epoch, i32 epoch_step, i32 batch, i32
 * count, u32 data CRC, u64 shuffle seed, f64 loss sum, i64 correct, i64 seen, i32 precision (v3)
 * (all 0 when not valid) | params | fixed | optimizer m | optimizer v | u32 CRC-32 (zlib) of every
 * byte before it.
 */
#include "model_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define CK_CKPT_MAGIC "CNNKITCK"
#define CK_CKPT_VERSION 3u
#define CK_CKPT_FIT_BYTES 60 /* version 2: 56, without the precision */

typedef struct wbuf {
    ck_context *ctx; /* allocations are counted against its limit */
    unsigned char *p;
    size_t len, cap;
    int oom;
} wbuf;

static void put(wbuf *b, const void *src, size_t n) {
    if (b->oom)
        return;
    if (n > SIZE_MAX / 2 - b->len) {
        b->oom = 1;
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *np = (unsigned char *)ck_host_realloc(b->ctx, b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

/* crc32 takes uInt lengths, so large buffers go in pieces. */
uint32_t ck_crc32(uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    uLong c = crc;
    for (size_t off = 0; off < n; off += (size_t)1 << 30) {
        size_t k = n - off < ((size_t)1 << 30) ? n - off : ((size_t)1 << 30);
        c = crc32(c, p + off, (uInt)k);
    }
    return (uint32_t)c;
}

static void put_i32(wbuf *b, int32_t v) {
    put(b, &v, 4);
}
static void put_f32(wbuf *b, float v) {
    put(b, &v, 4);
}
static void put_u64(wbuf *b, uint64_t v) {
    put(b, &v, 8);
}

/* Everything that must match between a file and a model, serialized the same way. */
static void put_structure(wbuf *b, const ck_model *m, uint32_t version) {
    put(b, CK_CKPT_MAGIC, 8);
    put_i32(b, (int32_t)version);
    put_i32(b, m->num_layers);
    for (int i = 0; i < m->num_layers; ++i) {
        int32_t iv[9];
        float fv[4];
        ck_layer_ckpt_record(&m->layers[i], iv, fv);
        for (int k = 0; k < 9; ++k)
            put_i32(b, iv[k]);
        for (int k = 0; k < 4; ++k)
            put_f32(b, fv[k]);
    }
    /* the wiring of a graph model: the same layers connected otherwise are another model */
    for (int i = 0; m->graph && i < m->num_layers; ++i) {
        put_i32(b, m->layers[i].num_inputs);
        for (int k = 0; k < CK_MAX_LAYER_INPUTS; ++k)
            put_i32(b, k < m->layers[i].num_inputs ? m->layers[i].inputs[k] : 0);
    }
    put_i32(b, m->in_h);
    put_i32(b, m->in_w);
    put_i32(b, m->in_c);
    put_i32(b, (int32_t)CK_BN_KERAS);
    put_u64(b, (uint64_t)m->num_params);
    put_u64(b, (uint64_t)m->num_fixed);
}

static void put_fit(wbuf *b, const ck_fit_state *f) {
    ck_fit_state z;
    memset(&z, 0, sizeof z);
    if (!f->valid)
        f = &z;
    const int32_t iv[5] = {f->valid, f->epoch, f->epoch_step, f->batch, f->count};
    for (int k = 0; k < 5; ++k)
        put_i32(b, iv[k]);
    put(b, &f->data_crc, 4);
    put_u64(b, f->shuffle_seed);
    put(b, &f->loss_sum, 8);
    const int64_t c[2] = {f->correct, f->seen};
    put(b, c, 16);
    put_i32(b, f->valid ? f->precision : 0);
}

static void get_fit(const unsigned char *p, uint32_t version, uint64_t context_seed,
                    ck_fit_state *f) {
    int32_t iv[5];
    int64_t c[2];
    memcpy(iv, p, 20);
    memset(f, 0, sizeof *f);
    f->valid = iv[0] != 0;
    f->epoch = iv[1];
    f->epoch_step = iv[2];
    f->batch = iv[3];
    f->count = iv[4];
    memcpy(&f->data_crc, p + 20, 4);
    memcpy(&f->shuffle_seed, p + 24, 8);
    memcpy(&f->loss_sum, p + 32, 8);
    memcpy(c, p + 40, 16);
    f->correct = c[0];
    f->seen = c[1];
    f->context_seed = context_seed;
    f->precision = -1;
    if (version >= 3u)
        memcpy(&f->precision, p + 56, 4);
    if (!f->valid)
        memset(f, 0, sizeof *f);
}

/* Index of the first non-finite value of n floats, or n. */
static size_t first_non_finite(const float *p, size_t n) {
    for (size_t i = 0; i < n; ++i)
        if (!isfinite(p[i]))
            return i;
    return n;
}

/* Names the first NaN/Inf of the four state arrays (params, fixed, m, v as laid out in a
 * checkpoint) in *what and *index; returns 0 when all are finite. */
static const char *const state_names[4] = {"parameter", "BN moving statistic",
                                           "optimizer first moment", "optimizer second moment"};

static int find_non_finite(const float *const arrays[4], const size_t counts[4], const char **what,
                           size_t *index) {
    for (int k = 0; k < 4; ++k) {
        const size_t i = first_non_finite(arrays[k], counts[k]);
        if (i < counts[k]) {
            *what = state_names[k];
            *index = i;
            return 1;
        }
    }
    return 0;
}

CK_API ck_status ck_model_save(ck_model *m, const char *path) {
    CK_MODEL_ENTRY(m);
    ck_context *ctx = m->ctx;
    ck_enter(ctx);
    if (!path || !*path)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: is NULL or empty");
    if (m->gpu && m->built) /* the device holds the current state */
        CK_TRY(ck_gpu_model_pull(m));
    if (!m->built)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    {
        const float *const arrays[4] = {m->params, m->fixed, m->opt_m, m->opt_v};
        const size_t counts[4] = {m->num_params, m->num_fixed, m->num_params, m->num_params};
        const char *what;
        size_t index;
        if (find_non_finite(arrays, counts, &what, &index))
            return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                           "model: %s %zu is not finite; nothing was saved to %s", what, index,
                           path);
    }
    /* refuse a bad target before serializing (ck_write_file_atomic checks it again) */
    {
        char resolved[PATH_MAX];
        const char *target;
        CK_TRY(ck_save_target(ctx, path, resolved, &target));
    }
    wbuf b = {ctx, NULL, 0, 0, 0};
    put_structure(&b, m, CK_CKPT_VERSION);
    const int rms = m->opt.type == CK_OPT_RMSPROP,
              rho = rms || m->opt.type == CK_OPT_ADADELTA; /* rho in beta1's field */
    put_i32(&b, (int32_t)m->opt.type);
    put_i32(&b, rms ? (m->opt.centered != 0) : m->opt.nesterov);
    const float of[6] = {m->opt.learning_rate, rho ? m->opt.rho : m->opt.beta1,
                         m->opt.beta2,         m->opt.epsilon,
                         m->opt.momentum,      m->opt.weight_decay};
    for (int k = 0; k < 6; ++k)
        put_f32(&b, of[k]);
    put_u64(&b, (uint64_t)m->step);
    put_u64(&b, m->ctx->seed);
    put_fit(&b, &m->fit);
    put(&b, m->params, m->num_params * sizeof(float));
    put(&b, m->fixed, m->num_fixed * sizeof(float));
    put(&b, m->opt_m, m->num_params * sizeof(float));
    put(&b, m->opt_v, m->num_params * sizeof(float));
    if (!b.oom) {
        uint32_t crc = ck_crc32(0, b.p, b.len);
        put(&b, &crc, 4);
    }
    if (b.oom) {
        ck_host_free(ctx, b.p);
        return ck_host_oom(ctx, "model (serializing the checkpoint)", b.len);
    }
    ck_status st = ck_write_file_atomic(ctx, path, b.p, b.len);
    ck_host_free(ctx, b.p);
    return st;
}

CK_API ck_status ck_model_load(ck_model *m, const char *path) {
    CK_MODEL_ENTRY(m);
    ck_context *ctx = m->ctx;
    ck_enter(ctx);
    if (!path || !*path)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: is NULL or empty");
    if (!m->built)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    const char *why = NULL;
    const int fd = ck_open_regular(path, &why);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        if (fd >= 0) {
            why = strerror(errno);
            close(fd);
        }
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: cannot open %s: %s", path, why);
    }
    struct stat fst;
    if (fstat(fd, &fst) != 0) {
        const int e = errno;
        fclose(f);
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: %s: %s", path, strerror(e));
    }
    /* the header tells the version; the structure and sizes follow from the model */
    unsigned char hdr[12];
    const size_t hgot = fread(hdr, 1, sizeof hdr, f);
    uint32_t ver = 0;
    if (hgot == sizeof hdr)
        memcpy(&ver, hdr + 8, 4);
    if (hgot < sizeof hdr || memcmp(hdr, CK_CKPT_MAGIC, 8) != 0) {
        fclose(f);
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: %s is not a cnnkit checkpoint (bad magic)",
                       path);
    }
    if (ver < 1u || ver > CK_CKPT_VERSION) {
        fclose(f);
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "path: %s has checkpoint version %u, this library reads versions 1 to %u",
                       path, ver, CK_CKPT_VERSION);
    }
    wbuf want = {ctx, NULL, 0, 0, 0};
    put_structure(&want, m, ver);
    const size_t fit_bytes = ver >= 3 ? CK_CKPT_FIT_BYTES : ver == 2 ? 56 : 0;
    const size_t tail = 8 + 4 * 6 + 8 + 8; /* optimizer ints, floats, step, seed */
    const size_t arrays = (2 * m->num_params + m->num_fixed + m->num_params) * sizeof(float);
    const size_t expect = want.len + tail + fit_bytes + arrays + 4;
    const size_t fsize = (size_t)fst.st_size;
    unsigned char *buf = want.oom ? NULL : (unsigned char *)ck_host_alloc(ctx, expect);
    if (!buf) {
        fclose(f);
        ck_host_free(ctx, want.p);
        return ck_host_oom(ctx, "path (reading the checkpoint)", expect);
    }
    memcpy(buf, hdr, sizeof hdr);
    size_t got = sizeof hdr;
    if (fsize >= got)
        got += fread(buf + got, 1, (fsize < expect ? fsize : expect) - got, f);
    fclose(f);
    ck_status st = CK_STATUS_SUCCESS;
    if (got < want.len || memcmp(buf, want.p, want.len) != 0) {
        st = ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                     "path: %s was saved from a different model (layers, input shape or "
                     "parameter counts differ)",
                     path);
    } else if (fsize != expect || got != expect) {
        st = ck_fail(ctx, CK_STATUS_BAD_PARAM,
                     "path: %s is %s (%zu bytes, %zu expected for this model)", path,
                     fsize < expect || got < expect ? "truncated" : "too long", fsize, expect);
    } else {
        uint32_t crc = ck_crc32(0, buf, expect - 4), stored;
        memcpy(&stored, buf + expect - 4, 4);
        if (crc != stored)
            st = ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: %s is corrupt (CRC-32 %08x, stored %08x)",
                         path, crc, stored);
    }
    const unsigned char *p = buf + want.len;
    int32_t type = 0, nesterov = 0;
    float of[6];
    int64_t step = 0;
    uint64_t seed = 0;
    if (st == CK_STATUS_SUCCESS) {
        memcpy(&type, p, 4);
        memcpy(&nesterov, p + 4, 4);
        memcpy(of, p + 8, 24);
        memcpy(&step, p + 32, 8);
        memcpy(&seed, p + 40, 8);
        p += tail;
        if (!ck_optimizer_name((ck_optimizer_type)type))
            st = ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: %s names optimizer %d", path, type);
    }
    const unsigned char *arr = p + fit_bytes;
    if (st == CK_STATUS_SUCCESS) {
        /* a file can hold NaN with a valid CRC (written by hand or by another tool) */
        const size_t counts[4] = {m->num_params, m->num_fixed, m->num_params, m->num_params};
        const unsigned char *q = arr;
        for (int k = 0; k < 4 && st == CK_STATUS_SUCCESS; ++k)
            for (size_t i = 0; i < counts[k]; ++i, q += 4) {
                float v;
                memcpy(&v, q, 4);
                if (!isfinite(v)) {
                    st = ck_fail(ctx, CK_STATUS_BAD_PARAM,
                                 "path: %s holds a non-finite %s (index %zu): not loaded", path,
                                 state_names[k], i);
                    break;
                }
            }
    }
    ck_optimizer_desc od;
    memset(&od, 0, sizeof od);
    if (st == CK_STATUS_SUCCESS) {
        const int rms = type == CK_OPT_RMSPROP, rho = rms || type == CK_OPT_ADADELTA;
        od.type = (ck_optimizer_type)type;
        od.nesterov = rms ? 0 : nesterov;
        od.centered = rms ? nesterov : 0;
        od.learning_rate = of[0];
        od.beta1 = rho ? 0.0f : of[1];
        od.rho = rho ? of[1] : 0.0f;
        od.beta2 = of[2];
        od.epsilon = of[3];
        od.momentum = of[4];
        od.weight_decay = of[5];
        if (ck_optimizer_check(ctx, &od) != CK_STATUS_SUCCESS) {
            char why[256]; /* the message is rewritten below: copy it first */
            snprintf(why, sizeof why, "%s", ck_context_last_error(ctx));
            st = ck_fail(ctx, CK_STATUS_BAD_PARAM,
                         "path: %s holds optimizer settings that are refused (%s)", path, why);
        }
    }
    if (st == CK_STATUS_SUCCESS) {
        /* every check passed: only now is the model changed */
        m->opt = od;
        m->step = step;
        if (fit_bytes)
            get_fit(p, ver, seed, &m->fit);
        else
            memset(&m->fit, 0, sizeof m->fit);
        p = arr;
        memcpy(m->params, p, m->num_params * sizeof(float));
        p += m->num_params * sizeof(float);
        memcpy(m->fixed, p, m->num_fixed * sizeof(float));
        p += m->num_fixed * sizeof(float);
        memcpy(m->opt_m, p, m->num_params * sizeof(float));
        p += m->num_params * sizeof(float);
        memcpy(m->opt_v, p, m->num_params * sizeof(float));
        if (m->gpu)
            st = ck_gpu_model_push(m);
    }
    ck_host_free(ctx, buf);
    ck_host_free(ctx, want.p);
    return st;
}
