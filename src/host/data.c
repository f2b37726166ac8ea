/* Data sets: IDX (raw or gzip) and CIFAR-10 readers, shuffling, batching. */
#include "cnnkit/data.h"
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static ck_status fail(char *err, size_t len, ck_status st, const char *fmt, ...) CK_PRINTF(4, 5);
static ck_status fail(char *err, size_t len, ck_status st, const char *fmt, ...) {
    if (err && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, len, fmt, ap);
        va_end(ap);
    }
    return st;
}

CK_API void ck_dataset_free(ck_dataset *ds) {
    if (!ds)
        return;
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

/* Reads a whole (possibly gzip-compressed) file into memory; *len bytes. */
static ck_status slurp(const char *path, unsigned char **data, size_t *len, char *err,
                       size_t elen) {
    *data = NULL;
    *len = 0;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return fail(err, elen, CK_STATUS_BAD_PARAM, "%s: cannot open: %s", path,
                    errno ? strerror(errno) : "gzopen failed");
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = (unsigned char *)malloc(cap);
    for (;;) {
        if (!buf) {
            gzclose(f);
            return fail(err, elen, CK_STATUS_ALLOC_FAILED, "%s: out of memory", path);
        }
        if (n == cap) {
            if (cap > ((size_t)1 << 34)) {
                free(buf);
                gzclose(f);
                return fail(err, elen, CK_STATUS_BAD_PARAM, "%s: larger than 16 GiB", path);
            }
            unsigned char *nb = (unsigned char *)realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                continue;
            }
            buf = nb;
            cap *= 2;
        }
        size_t want = cap - n > (1u << 30) ? (1u << 30) : cap - n;
        int r = gzread(f, buf + n, (unsigned)want);
        if (r < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            ck_status st = fail(err, elen, CK_STATUS_BAD_PARAM, "%s: read error: %s", path, msg);
            free(buf);
            gzclose(f);
            return st;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    gzclose(f);
    *data = buf;
    *len = n;
    return CK_STATUS_SUCCESS;
}

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

CK_API ck_status ck_idx_load(const char *images_path, const char *labels_path, ck_dataset *out,
                             char *err, size_t elen) {
    if (!images_path || !labels_path || !out)
        return fail(err, elen, CK_STATUS_BAD_PARAM, "%s: is NULL",
                    !images_path ? "images_path" : !labels_path ? "labels_path" : "out");
    unsigned char *im = NULL, *lb = NULL;
    size_t ilen = 0, llen = 0;
    ck_status st = slurp(images_path, &im, &ilen, err, elen);
    if (st == CK_STATUS_SUCCESS)
        st = slurp(labels_path, &lb, &llen, err, elen);
    uint32_t count = 0, rows = 0, cols = 0;
    if (st == CK_STATUS_SUCCESS) {
        if (ilen < 16)
            st = fail(err, elen, CK_STATUS_BAD_PARAM, "%s: truncated header (%zu bytes)",
                      images_path, ilen);
        else if (be32(im) != 0x00000803u)
            st = fail(err, elen, CK_STATUS_BAD_PARAM,
                      "%s: wrong magic 0x%08x, expected 0x00000803 (IDX images)", images_path,
                      be32(im));
        else if (llen < 8)
            st = fail(err, elen, CK_STATUS_BAD_PARAM, "%s: truncated header (%zu bytes)",
                      labels_path, llen);
        else if (be32(lb) != 0x00000801u)
            st = fail(err, elen, CK_STATUS_BAD_PARAM,
                      "%s: wrong magic 0x%08x, expected 0x00000801 (IDX labels)", labels_path,
                      be32(lb));
    }
    if (st == CK_STATUS_SUCCESS) {
        count = be32(im + 4);
        rows = be32(im + 8);
        cols = be32(im + 12);
        const uint64_t pixels = (uint64_t)count * rows * cols;
        if (count == 0 || rows == 0 || cols == 0 || count > INT32_MAX || rows > 65535 ||
            cols > 65535 || pixels > ((uint64_t)1 << 36))
            st = fail(err, elen, CK_STATUS_BAD_PARAM, "%s: bad dimensions %u x %u x %u",
                      images_path, count, rows, cols);
        else if ((uint64_t)ilen != 16 + pixels)
            st = fail(err, elen, CK_STATUS_BAD_PARAM,
                      "%s: %s: %zu bytes, header says %u images of %u x %u (%llu bytes)",
                      images_path, (uint64_t)ilen < 16 + pixels ? "truncated" : "trailing data",
                      ilen, count, rows, cols, (unsigned long long)(16 + pixels));
        else if (be32(lb + 4) != count)
            st = fail(err, elen, CK_STATUS_BAD_PARAM, "%s: %u labels for %u images in %s",
                      labels_path, be32(lb + 4), count, images_path);
        else if (llen != 8 + (size_t)count)
            st = fail(err, elen, CK_STATUS_BAD_PARAM, "%s: %s: %zu bytes, %u labels expected",
                      labels_path, llen < 8 + (size_t)count ? "truncated" : "trailing data",
                      llen, count);
    }
    ck_dataset ds = {0, 0, 0, 0, 0, NULL, NULL};
    if (st == CK_STATUS_SUCCESS) {
        const size_t pixels = (size_t)count * rows * cols;
        ds.images = (float *)malloc(pixels * sizeof(float));
        ds.labels = (int32_t *)malloc((size_t)count * sizeof(int32_t));
        if (!ds.images || !ds.labels)
            st = fail(err, elen, CK_STATUS_ALLOC_FAILED, "%s: out of memory for %zu pixels",
                      images_path, pixels);
        else {
            for (size_t i = 0; i < pixels; ++i)
                ds.images[i] = (float)im[16 + i] * (1.0f / 255.0f);
            int maxl = 0;
            for (uint32_t i = 0; i < count; ++i) {
                ds.labels[i] = lb[8 + i];
                if (lb[8 + i] > maxl)
                    maxl = lb[8 + i];
            }
            ds.count = (int)count;
            ds.h = (int)rows;
            ds.w = (int)cols;
            ds.c = 1;
            ds.classes = maxl + 1;
        }
    }
    free(im);
    free(lb);
    if (st != CK_STATUS_SUCCESS) {
        ck_dataset_free(&ds);
        return st;
    }
    *out = ds;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_cifar10_load(const char *const *paths, int npaths, ck_dataset *out, char *err,
                                 size_t elen) {
    if (!paths || npaths < 1 || !out)
        return fail(err, elen, CK_STATUS_BAD_PARAM, "paths, npaths, out: need >= 1 file");
    enum { REC = 3073, PIX = 3072 };
    unsigned char **files = (unsigned char **)calloc((size_t)npaths, sizeof *files);
    size_t *lens = (size_t *)calloc((size_t)npaths, sizeof *lens);
    ck_status st = files && lens ? CK_STATUS_SUCCESS
                                 : fail(err, elen, CK_STATUS_ALLOC_FAILED, "out of memory");
    size_t total = 0;
    for (int i = 0; st == CK_STATUS_SUCCESS && i < npaths; ++i) {
        if (!paths[i]) {
            st = fail(err, elen, CK_STATUS_BAD_PARAM, "paths[%d]: is NULL", i);
            break;
        }
        st = slurp(paths[i], &files[i], &lens[i], err, elen);
        if (st == CK_STATUS_SUCCESS && (lens[i] == 0 || lens[i] % REC != 0))
            st = fail(err, elen, CK_STATUS_BAD_PARAM,
                      "%s: %zu bytes is not a whole number of 3073-byte CIFAR-10 records",
                      paths[i], lens[i]);
        total += lens[i] / REC;
    }
    if (st == CK_STATUS_SUCCESS && total > INT32_MAX)
        st = fail(err, elen, CK_STATUS_BAD_PARAM, "paths: too many records");
    ck_dataset ds = {0, 32, 32, 3, 10, NULL, NULL};
    if (st == CK_STATUS_SUCCESS) {
        ds.images = (float *)malloc(total * PIX * sizeof(float));
        ds.labels = (int32_t *)malloc(total * sizeof(int32_t));
        if (!ds.images || !ds.labels)
            st = fail(err, elen, CK_STATUS_ALLOC_FAILED, "out of memory for %zu images", total);
    }
    size_t k = 0;
    for (int i = 0; st == CK_STATUS_SUCCESS && i < npaths; ++i) {
        for (size_t r = 0; r < lens[i] / REC; ++r, ++k) {
            const unsigned char *rec = files[i] + r * REC;
            if (rec[0] > 9) {
                st = fail(err, elen, CK_STATUS_BAD_PARAM, "%s: record %zu has label %u (> 9)",
                          paths[i], r, rec[0]);
                break;
            }
            ds.labels[k] = rec[0];
            float *img = ds.images + k * PIX;
            for (int p = 0; p < 1024; ++p)
                for (int c = 0; c < 3; ++c)
                    img[p * 3 + c] = (float)rec[1 + c * 1024 + p] * (1.0f / 255.0f);
        }
    }
    for (int i = 0; files && i < npaths; ++i)
        free(files[i]);
    free(files);
    free(lens);
    if (st != CK_STATUS_SUCCESS) {
        ck_dataset_free(&ds);
        return st;
    }
    ds.count = (int)total;
    *out = ds;
    return CK_STATUS_SUCCESS;
}

static int exists(const char *p) {
    FILE *f = fopen(p, "rb");
    if (f)
        fclose(f);
    return f != NULL;
}

CK_API ck_status ck_fashion_mnist_load(const char *dir, int train, ck_dataset *out, char *err,
                                       size_t elen) {
    if (!dir || !*dir) {
        dir = getenv("CNNKIT_DATA");
        if (!dir || !*dir)
            dir = CK_FASHION_MNIST_DIR;
    }
    const char *pre = train ? "train" : "t10k";
    char ip[4096], lp[4096];
    for (int gz = 1; gz >= 0; --gz) {
        snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte%s", dir, pre, gz ? ".gz" : "");
        snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte%s", dir, pre, gz ? ".gz" : "");
        if (exists(ip) && exists(lp))
            return ck_idx_load(ip, lp, out, err, elen);
    }
    return fail(err, elen, CK_STATUS_BAD_PARAM,
                "%s: no %s-images-idx3-ubyte[.gz] / %s-labels-idx1-ubyte[.gz] there", dir, pre,
                pre);
}

CK_API ck_status ck_dataset_normalize(ck_dataset *ds, float mean, float std) {
    if (!ds || !ds->images || !(std > 0.0f))
        return CK_STATUS_BAD_PARAM;
    const size_t n = (size_t)ds->count * ds->h * ds->w * ds->c;
    const float inv = 1.0f / std;
    for (size_t i = 0; i < n; ++i)
        ds->images[i] = (ds->images[i] - mean) * inv;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_dataset_subset(const ck_dataset *src, int start, int count, ck_dataset *out) {
    if (!src || !out || start < 0 || count < 1 || start > src->count - count)
        return CK_STATUS_BAD_PARAM;
    const size_t per = (size_t)src->h * src->w * src->c;
    ck_dataset ds = *src;
    ds.count = count;
    ds.images = (float *)malloc(per * (size_t)count * sizeof(float));
    ds.labels = (int32_t *)malloc((size_t)count * sizeof(int32_t));
    if (!ds.images || !ds.labels) {
        free(ds.images);
        free(ds.labels);
        return CK_STATUS_ALLOC_FAILED;
    }
    memcpy(ds.images, src->images + per * (size_t)start, per * (size_t)count * sizeof(float));
    memcpy(ds.labels, src->labels + start, (size_t)count * sizeof(int32_t));
    *out = ds;
    return CK_STATUS_SUCCESS;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

CK_API ck_status ck_dataset_shuffle(int count, uint64_t seed, uint64_t epoch, int32_t *perm) {
    if (count < 1 || !perm)
        return CK_STATUS_BAD_PARAM;
    uint64_t s = seed ^ (epoch * 0xD1B54A32D192ED03ull + 0x8CB92BA72F3D8DD7ull);
    for (int i = 0; i < count; ++i)
        perm[i] = i;
    for (int i = count - 1; i > 0; --i) {
        /* unbiased index in [0, i] by rejection */
        const uint64_t bound = (uint64_t)i + 1;
        const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
        uint64_t r;
        do
            r = splitmix64(&s);
        while (r >= limit);
        const int j = (int)(r % bound);
        const int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_dataset_gather(const ck_dataset *ds, const int32_t *perm, int start, int batch,
                                   float *x_out, int32_t *y_out) {
    if (!ds || start < 0 || batch < 1 || start > ds->count - batch)
        return CK_STATUS_BAD_PARAM;
    const size_t per = (size_t)ds->h * ds->w * ds->c;
    for (int b = 0; b < batch; ++b) {
        const int32_t k = perm ? perm[start + b] : start + b;
        if (k < 0 || k >= ds->count)
            return CK_STATUS_BAD_PARAM;
        if (x_out)
            memcpy(x_out + per * (size_t)b, ds->images + per * (size_t)k, per * sizeof(float));
        if (y_out)
            y_out[b] = ds->labels[k];
    }
    return CK_STATUS_SUCCESS;
}
