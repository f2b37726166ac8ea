/* Checkpoints: a versioned little-endian file with a CRC-32, written atomically.
 *
 * Layout (version 1):
 *   "CNNKITCK" | u32 version | u32 num_layers | per layer: 9 x i32 (type, units, kernel_h,
 *   kernel_w, stride_h, stride_w, padding, use_bias, activation) + 4 x f32 (rate, momentum,
 *   epsilon, alpha) | 3 x i32 input h, w, c | i32 bn convention (0 = Keras) | u64 num_params |
 *   u64 num_fixed | i32 optimizer type, i32 nesterov | 6 x f32 (lr, beta1, beta2, epsilon,
 *   momentum, weight_decay) | i64 step | u64 seed | params | fixed | optimizer m | optimizer v |
 *   u32 CRC-32 (zlib) of every byte before it. */
#include "model_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define CK_CKPT_MAGIC "CNNKITCK"
#define CK_CKPT_VERSION 1u

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

/* CRC-32 (zlib) of n bytes; crc32 takes uInt lengths, so large buffers go in pieces. */
static uint32_t crc_of(const unsigned char *p, size_t n) {
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t off = 0; off < n; off += (size_t)1 << 30) {
        size_t k = n - off < ((size_t)1 << 30) ? n - off : ((size_t)1 << 30);
        crc = crc32(crc, p + off, (uInt)k);
    }
    return (uint32_t)crc;
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
static void put_structure(wbuf *b, const ck_model *m) {
    put(b, CK_CKPT_MAGIC, 8);
    put_i32(b, (int32_t)CK_CKPT_VERSION);
    put_i32(b, m->num_layers);
    for (int i = 0; i < m->num_layers; ++i) {
        const ck_layer_desc *d = &m->layers[i];
        const int32_t iv[9] = {d->type,     d->units,   d->kernel_h, d->kernel_w,  d->stride_h,
                               d->stride_w, d->padding, d->use_bias, d->activation};
        for (int k = 0; k < 9; ++k)
            put_i32(b, iv[k]);
        put_f32(b, d->rate);
        put_f32(b, d->momentum);
        put_f32(b, d->epsilon);
        put_f32(b, d->alpha);
    }
    put_i32(b, m->in_h);
    put_i32(b, m->in_w);
    put_i32(b, m->in_c);
    put_i32(b, (int32_t)CK_BN_KERAS);
    put_u64(b, (uint64_t)m->num_params);
    put_u64(b, (uint64_t)m->num_fixed);
}

CK_API ck_status ck_model_save(ck_model *m, const char *path) {
    if (!m)
        return CK_STATUS_BAD_PARAM;
    ck_context *ctx = m->ctx;
    ck_clear_error(ctx);
    if (!path || !*path)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: is NULL or empty");
    if (m->gpu && m->built) /* the device holds the current state */
        CK_TRY(ck_gpu_model_pull(m));
    if (!m->built)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    wbuf b = {ctx, NULL, 0, 0, 0};
    put_structure(&b, m);
    put_i32(&b, (int32_t)m->opt.type);
    put_i32(&b, m->opt.nesterov);
    const float of[6] = {m->opt.learning_rate, m->opt.beta1,    m->opt.beta2,
                         m->opt.epsilon,       m->opt.momentum, m->opt.weight_decay};
    for (int k = 0; k < 6; ++k)
        put_f32(&b, of[k]);
    put_u64(&b, (uint64_t)m->step);
    put_u64(&b, m->ctx->seed);
    put(&b, m->params, m->num_params * sizeof(float));
    put(&b, m->fixed, m->num_fixed * sizeof(float));
    put(&b, m->opt_m, m->num_params * sizeof(float));
    put(&b, m->opt_v, m->num_params * sizeof(float));
    if (!b.oom) {
        uint32_t crc = crc_of(b.p, b.len);
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
    if (!m)
        return CK_STATUS_BAD_PARAM;
    ck_context *ctx = m->ctx;
    ck_clear_error(ctx);
    if (!path || !*path)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: is NULL or empty");
    if (!m->built)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    FILE *f = fopen(path, "rb");
    if (!f)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: cannot open %s: %s", path, strerror(errno));
    wbuf want = {ctx, NULL, 0, 0, 0};
    put_structure(&want, m);
    const size_t tail = 8 + 4 * 6 + 8 + 8; /* optimizer ints, floats, step, seed */
    const size_t arrays = (2 * m->num_params + m->num_fixed + m->num_params) * sizeof(float);
    const size_t expect = want.len + tail + arrays + 4;
    unsigned char *buf = want.oom ? NULL : (unsigned char *)ck_host_alloc(ctx, expect + 1);
    if (!buf) {
        fclose(f);
        ck_host_free(ctx, want.p);
        return ck_host_oom(ctx, "path (reading the checkpoint)", expect + 1);
    }
    size_t got = fread(buf, 1, expect + 1, f);
    fclose(f);
    ck_status st = CK_STATUS_SUCCESS;
    if (got < 12 || memcmp(buf, CK_CKPT_MAGIC, 8) != 0) {
        st = ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: %s is not a cnnkit checkpoint (bad magic)",
                     path);
    } else {
        uint32_t ver;
        memcpy(&ver, buf + 8, 4);
        if (ver != CK_CKPT_VERSION) {
            st = ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                         "path: %s has checkpoint version %u, this library reads version %u", path,
                         ver, CK_CKPT_VERSION);
        } else if (got < want.len || memcmp(buf, want.p, want.len) != 0) {
            st = ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                         "path: %s was saved from a different model (layers, input shape or "
                         "parameter counts differ)",
                         path);
        } else if (got != expect) {
            st = ck_fail(ctx, CK_STATUS_BAD_PARAM,
                         "path: %s is %s (%zu bytes, %zu expected for this model)", path,
                         got < expect ? "truncated" : "too long", got, expect);
        } else {
            uint32_t crc = crc_of(buf, expect - 4), stored;
            memcpy(&stored, buf + expect - 4, 4);
            if (crc != stored)
                st = ck_fail(ctx, CK_STATUS_BAD_PARAM,
                             "path: %s is corrupt (CRC-32 %08x, stored %08x)", path, crc, stored);
        }
    }
    if (st == CK_STATUS_SUCCESS) {
        /* every check passed: only now is the model changed */
        const unsigned char *p = buf + want.len;
        int32_t type, nesterov;
        float of[6];
        int64_t step;
        memcpy(&type, p, 4);
        memcpy(&nesterov, p + 4, 4);
        memcpy(of, p + 8, 24);
        memcpy(&step, p + 32, 8);
        p += tail;
        if (type != CK_OPT_ADAM && type != CK_OPT_SGD) {
            st = ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: %s names optimizer %d", path, type);
        } else {
            m->opt.type = (ck_optimizer_type)type;
            m->opt.nesterov = nesterov;
            m->opt.learning_rate = of[0];
            m->opt.beta1 = of[1];
            m->opt.beta2 = of[2];
            m->opt.epsilon = of[3];
            m->opt.momentum = of[4];
            m->opt.weight_decay = of[5];
            m->step = step;
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
    }
    ck_host_free(ctx, buf);
    ck_host_free(ctx, want.p);
    return st;
}
