/* Data sets: IDX (raw or gzip) and CIFAR-10 readers, shuffling, batching. */
#include "cnnkit/data.h"
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Writes a message to err (when there is room) and returns st. */
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

static ck_status succeed(char *err, size_t len) {
    if (err && len)
        err[0] = '\0';
    return CK_STATUS_SUCCESS;
}

/* A dataset's arrays are plain malloc blocks, outside the context allocator: the struct is public
 * and callers fill it with their own malloc'd arrays and release it here. */
CK_API void ck_dataset_free(ck_dataset *ds) {
    if (!ds)
        return;
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

/* Largest file slurp accepts: 16 GiB, or half the address space on 32-bit platforms. */
static size_t slurp_limit(void) {
    const uint64_t lim = (uint64_t)1 << 34;
    return (uint64_t)(SIZE_MAX / 2) < lim ? SIZE_MAX / 2 : (size_t)lim;
}

/* The most bytes a file may hold given its first n bytes (SIZE_MAX while the header is not all
 * there): a gzip stream of a few megabytes can inflate to gigabytes, and a file longer than its
 * header says is refused anyway, so reading stops one byte past that (the caller sees a longer
 * file than its header says, or a bad header, and says so). */
typedef size_t (*size_from_header)(const unsigned char *head, size_t n);

/* Reads a whole (possibly gzip-compressed) file into memory: *len bytes in *data (ck_host_alloc, no
 * context). most (optional) bounds the length by the header. */
static ck_status slurp(const char *path, size_from_header most, unsigned char **data, size_t *len,
                       char *err, size_t elen) {
    *data = NULL;
    *len = 0;
    const char *why = NULL;
    const int fd = ck_open_regular(path, &why);
    if (fd < 0)
        return fail(err, elen, CK_STATUS_BAD_PARAM, "%s: cannot open: %s", path, why);
    gzFile f = gzdopen(fd, "rb");
    if (!f) {
        close(fd);
        return fail(err, elen, CK_STATUS_ALLOC_FAILED, "%s: out of memory", path);
    }
    (void)gzbuffer(f, 1u << 17);
    size_t cap = (size_t)1 << 20, n = 0;
    unsigned char *buf = (unsigned char *)ck_host_alloc(NULL, cap);
    if (!buf) {
        gzclose(f);
        return fail(err, elen, CK_STATUS_ALLOC_FAILED, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            if (cap >= slurp_limit()) {
                ck_host_free(NULL, buf);
                gzclose(f);
                return fail(err, elen, CK_STATUS_BAD_PARAM, "%s: larger than %zu bytes", path,
                            slurp_limit());
            }
            unsigned char *nb = (unsigned char *)ck_host_realloc(NULL, buf, cap * 2);
            if (!nb) {
                ck_host_free(NULL, buf);
                gzclose(f);
                return fail(err, elen, CK_STATUS_ALLOC_FAILED, "%s: out of memory (%zu bytes)",
                            path, cap * 2);
            }
            buf = nb;
            cap *= 2;
        }
        size_t want = cap - n > (1u << 30) ? (1u << 30) : cap - n;
        const size_t lim = most ? most(buf, n) : SIZE_MAX;
        if (lim != SIZE_MAX && n > lim)
            break;
        if (lim != SIZE_MAX && want > lim + 1 - n)
            want = lim + 1 - n; /* one byte past the header's length shows trailing data */
        const int r = gzread(f, buf + n, (unsigned)want);
        if (r < 0) {
            int zerr = Z_OK;
            const char *msg = gzerror(f, &zerr);
            ck_status st = fail(err, elen, CK_STATUS_BAD_PARAM, "%s: read error: %s", path,
                                zerr == Z_ERRNO && errno ? strerror(errno) : msg);
            ck_host_free(NULL, buf);
            gzclose(f);
            return st;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    /* gzread reports a gzip stream cut short as a plain end of file with Z_BUF_ERROR set. */
    int zerr = Z_OK;
    (void)gzerror(f, &zerr);
    gzclose(f);
    if (zerr != Z_OK) {
        ck_host_free(NULL, buf);
        return fail(err, elen, CK_STATUS_BAD_PARAM,
                    "%s: truncated or corrupt gzip stream (%zu bytes decompressed)", path, n);
    }
    *data = buf;
    *len = n;
    return CK_STATUS_SUCCESS;
}

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* IDX images: 16 header bytes and count x rows x cols pixels (an implausible header stops the
 * read at once: ck_idx_load reports it). */
static size_t idx_images_size(const unsigned char *h, size_t n) {
    if (n < 16)
        return SIZE_MAX;
    const uint64_t px = (uint64_t)be32(h + 4) * be32(h + 8) * be32(h + 12);
    return be32(h) != 0x00000803u || px > ((uint64_t)1 << 36) ? 16 : (size_t)(16 + px);
}

/* IDX labels: 8 header bytes and count labels. */
static size_t idx_labels_size(const unsigned char *h, size_t n) {
    return n < 8 ? SIZE_MAX : be32(h) != 0x00000801u ? 8 : (size_t)(8 + (uint64_t)be32(h + 4));
}

CK_API ck_status ck_idx_load(const char *images_path, const char *labels_path, ck_dataset *out,
                             char *err, size_t elen) {
    if (!images_path || !labels_path || !out)
        return fail(err, elen, CK_STATUS_BAD_PARAM, "%s: is NULL",
                    !images_path   ? "images_path"
                    : !labels_path ? "labels_path"
                                   : "out");
    unsigned char *im = NULL, *lb = NULL;
    size_t ilen = 0, llen = 0;
    ck_status st = slurp(images_path, idx_images_size, &im, &ilen, err, elen);
    if (st == CK_STATUS_SUCCESS)
        st = slurp(labels_path, idx_labels_size, &lb, &llen, err, elen);
    uint32_t count = 0, rows = 0, cols = 0;
    if (st == CK_STATUS_SUCCESS) {
        if (ilen < 16)
            st = fail(err, elen, CK_STATUS_BAD_PARAM,
                      "%s: truncated header (%zu bytes, IDX images need 16)", images_path, ilen);
        else if (be32(im) != 0x00000803u)
            st = fail(err, elen, CK_STATUS_BAD_PARAM,
                      "%s: wrong magic 0x%08x, expected 0x00000803 (IDX images)", images_path,
                      be32(im));
        else if (llen < 8)
            st = fail(err, elen, CK_STATUS_BAD_PARAM,
                      "%s: truncated header (%zu bytes, IDX labels need 8)", labels_path, llen);
        else if (be32(lb) != 0x00000801u)
            st = fail(err, elen, CK_STATUS_BAD_PARAM,
                      "%s: wrong magic 0x%08x, expected 0x00000801 (IDX labels)", labels_path,
                      be32(lb));
    }
    uint64_t pixels = 0;
    if (st == CK_STATUS_SUCCESS) {
        count = be32(im + 4);
        rows = be32(im + 8);
        cols = be32(im + 12);
        pixels = (uint64_t)count * rows * cols; /* < 2^31 * 2^16 * 2^16 once checked below */
        if (count == 0 || rows == 0 || cols == 0 || count > INT32_MAX || rows > 65535 ||
            cols > 65535 || pixels > ((uint64_t)1 << 36))
            st = fail(err, elen, CK_STATUS_BAD_PARAM,
                      "%s: bad dimensions %u x %u x %u (need >= 1 each, rows and cols <= 65535, "
                      "at most 2^36 pixels)",
                      images_path, count, rows, cols);
        else if (pixels > SIZE_MAX / sizeof(float))
            st = fail(err, elen, CK_STATUS_OVERFLOW, "%s: %llu pixels overflow size_t", images_path,
                      (unsigned long long)pixels);
        else if ((uint64_t)ilen < 16 + pixels)
            st = fail(err, elen, CK_STATUS_BAD_PARAM,
                      "%s: truncated: %zu bytes, header says %u images of %u x %u (%llu bytes)",
                      images_path, ilen, count, rows, cols, (unsigned long long)(16 + pixels));
        else if ((uint64_t)ilen > 16 + pixels) /* slurp read one byte past the header's length */
            st = fail(err, elen, CK_STATUS_BAD_PARAM,
                      "%s: trailing data: longer than the %llu bytes its header says (%u images of "
                      "%u x %u)",
                      images_path, (unsigned long long)(16 + pixels), count, rows, cols);
        else if (be32(lb + 4) != count)
            st = fail(err, elen, CK_STATUS_BAD_PARAM, "%s: %u labels for %u images in %s",
                      labels_path, be32(lb + 4), count, images_path);
        else if ((uint64_t)llen < 8 + (uint64_t)count)
            st = fail(err, elen, CK_STATUS_BAD_PARAM,
                      "%s: truncated: %zu bytes, header says %u labels (%llu bytes)", labels_path,
                      llen, count, (unsigned long long)(8 + (uint64_t)count));
        else if ((uint64_t)llen > 8 + (uint64_t)count)
            st = fail(err, elen, CK_STATUS_BAD_PARAM,
                      "%s: trailing data: longer than the %llu bytes its header says (%u labels)",
                      labels_path, (unsigned long long)(8 + (uint64_t)count), count);
    }
    ck_dataset ds = {0, 0, 0, 0, 0, NULL, NULL};
    if (st == CK_STATUS_SUCCESS) {
        ds.images = (float *)malloc((size_t)pixels * sizeof(float));
        ds.labels = (int32_t *)malloc((size_t)count * sizeof(int32_t));
        if (!ds.images || !ds.labels) {
            st = fail(err, elen, CK_STATUS_ALLOC_FAILED, "%s: out of memory for %llu pixels",
                      images_path, (unsigned long long)pixels);
        } else {
            const unsigned char *px = im + 16;
            for (size_t i = 0; i < (size_t)pixels; ++i)
                ds.images[i] = (float)px[i] * (1.0f / 255.0f);
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
            ds.classes = maxl + 1; /* <= 256: labels are bytes */
        }
    }
    ck_host_free(NULL, im);
    ck_host_free(NULL, lb);
    if (st != CK_STATUS_SUCCESS) {
        ck_dataset_free(&ds);
        return st;
    }
    *out = ds;
    return succeed(err, elen);
}

CK_API ck_status ck_cifar10_load(const char *const *paths, int npaths, ck_dataset *out, char *err,
                                 size_t elen) {
    if (!paths || !out)
        return fail(err, elen, CK_STATUS_BAD_PARAM, "%s: is NULL", !paths ? "paths" : "out");
    if (npaths < 1)
        return fail(err, elen, CK_STATUS_BAD_PARAM, "npaths: %d, need >= 1 file", npaths);
    enum { REC = 3073, PIX = 3072, PLANE = 1024 };
    unsigned char **files = (unsigned char **)ck_host_calloc(NULL, (size_t)npaths, sizeof *files);
    size_t *lens = (size_t *)ck_host_calloc(NULL, (size_t)npaths, sizeof *lens);
    ck_status st = files && lens ? CK_STATUS_SUCCESS
                                 : fail(err, elen, CK_STATUS_ALLOC_FAILED, "out of memory");
    uint64_t total = 0;
    for (int i = 0; st == CK_STATUS_SUCCESS && i < npaths; ++i) {
        if (!paths[i]) {
            st = fail(err, elen, CK_STATUS_BAD_PARAM, "paths[%d]: is NULL", i);
            break;
        }
        st = slurp(paths[i], NULL, &files[i], &lens[i], err, elen);
        if (st == CK_STATUS_SUCCESS && (lens[i] == 0 || lens[i] % REC != 0))
            st = fail(err, elen, CK_STATUS_BAD_PARAM,
                      "%s: %zu bytes is not a positive multiple of 3073 (CIFAR-10 record: 1 label "
                      "byte + 3072 pixel bytes)",
                      paths[i], lens[i]);
        if (st == CK_STATUS_SUCCESS)
            total += lens[i] / REC;
    }
    if (st == CK_STATUS_SUCCESS && total > INT32_MAX)
        st = fail(err, elen, CK_STATUS_BAD_PARAM, "paths: %llu records, more than 2^31 - 1",
                  (unsigned long long)total);
    if (st == CK_STATUS_SUCCESS && total > SIZE_MAX / (PIX * sizeof(float)))
        st = fail(err, elen, CK_STATUS_OVERFLOW, "paths: %llu images overflow size_t",
                  (unsigned long long)total);
    ck_dataset ds = {0, 32, 32, 3, 10, NULL, NULL};
    if (st == CK_STATUS_SUCCESS) {
        ds.images = (float *)malloc((size_t)total * PIX * sizeof(float));
        ds.labels = (int32_t *)malloc((size_t)total * sizeof(int32_t));
        if (!ds.images || !ds.labels)
            st = fail(err, elen, CK_STATUS_ALLOC_FAILED, "paths: out of memory for %llu images",
                      (unsigned long long)total);
    }
    size_t k = 0;
    for (int i = 0; st == CK_STATUS_SUCCESS && i < npaths; ++i) {
        for (size_t r = 0; r < lens[i] / REC; ++r, ++k) {
            const unsigned char *rec = files[i] + r * REC;
            if (rec[0] > 9) {
                st = fail(err, elen, CK_STATUS_BAD_PARAM,
                          "%s: record %zu: label %u out of range (CIFAR-10 labels are 0..9)",
                          paths[i], r, rec[0]);
                break;
            }
            ds.labels[k] = rec[0];
            float *img = ds.images + k * PIX;
            for (int p = 0; p < PLANE; ++p)
                for (int c = 0; c < 3; ++c)
                    img[p * 3 + c] = (float)rec[1 + c * PLANE + p] * (1.0f / 255.0f);
        }
    }
    for (int i = 0; files && i < npaths; ++i)
        ck_host_free(NULL, files[i]);
    ck_host_free(NULL, files);
    ck_host_free(NULL, lens);
    if (st != CK_STATUS_SUCCESS) {
        ck_dataset_free(&ds);
        return st;
    }
    ds.count = (int)total;
    *out = ds;
    return succeed(err, elen);
}

/* 1 when path can be opened, or exists but fails for another reason than "no such file" (so the
 * loader reports the real error, e.g. permission denied). */
static int present(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 || (errno != ENOENT && errno != ENOTDIR);
}

/* Picks dir/NAME.gz, else dir/NAME, into buf (NAME.gz when neither is there). Returns 1 when
 * found, 0 when missing, -1 when the path does not fit buf. */
static int pick(const char *dir, const char *name, char *buf, size_t size) {
    const int n = snprintf(buf, size, "%s/%s.gz", dir, name);
    if (n < 0 || (size_t)n >= size)
        return -1;
    if (present(buf))
        return 1;
    snprintf(buf, size, "%s/%s", dir, name);
    if (present(buf))
        return 1;
    snprintf(buf, size, "%s/%s.gz", dir, name);
    return 0;
}

CK_API ck_status ck_fashion_mnist_load(const char *dir, int train, ck_dataset *out, char *err,
                                       size_t elen) {
    if (!out)
        return fail(err, elen, CK_STATUS_BAD_PARAM, "out: is NULL");
    const char *from = "dir";
    if (!dir || !*dir) {
        dir = getenv(CK_DATA_ENV);
        from = "$" CK_DATA_ENV;
        if (!dir || !*dir) {
            dir = CK_FASHION_MNIST_DIR;
            from = "default directory";
        }
    }
    const char *pre = train ? "train" : "t10k";
    char names[2][64], paths[2][4096];
    snprintf(names[0], sizeof names[0], "%s-images-idx3-ubyte", pre);
    snprintf(names[1], sizeof names[1], "%s-labels-idx1-ubyte", pre);
    for (int i = 0; i < 2; ++i) {
        const int found = pick(dir, names[i], paths[i], sizeof paths[i]);
        if (found < 0)
            return fail(err, elen, CK_STATUS_BAD_PARAM, "dir: path too long (%zu characters)",
                        strlen(dir));
        if (!found)
            return fail(err, elen, CK_STATUS_BAD_PARAM,
                        "%s: not found, nor %s/%s (%s %s; pass a directory or set %s)", paths[i],
                        dir, names[i], from, dir, CK_DATA_ENV);
    }
    return ck_idx_load(paths[0], paths[1], out, err, elen);
}

/* Checks a dataset's fields; *per = floats per sample, *total = floats in all. The context-less
 * calls below leave their message in ck_context_last_error(NULL), naming the argument. */
static ck_status check_ds(const ck_dataset *ds, const char *name, size_t *per, size_t *total) {
    if (!ds)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "%s: is NULL", name);
    if (!ds->images || !ds->labels)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "%s: has no %s", name,
                       ds->images ? "labels" : "images");
    if (ds->count < 1 || ds->h < 1 || ds->w < 1 || ds->c < 1)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM,
                       "%s: count %d, images %d x %d x %d (each must be >= 1)", name, ds->count,
                       ds->h, ds->w, ds->c);
    const uint64_t lim = (uint64_t)(SIZE_MAX / sizeof(float));
    uint64_t p = (uint64_t)ds->h * (uint64_t)ds->w; /* < 2^62 */
    if (p > lim / (uint64_t)ds->c || p * (uint64_t)ds->c > lim / (uint64_t)ds->count)
        return ck_fail(NULL, CK_STATUS_OVERFLOW, "%s: %d images of %d x %d x %d overflow size_t",
                       name, ds->count, ds->h, ds->w, ds->c);
    p *= (uint64_t)ds->c;
    *per = (size_t)p;
    *total = (size_t)(p * (uint64_t)ds->count);
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_dataset_normalize(ck_dataset *ds, float mean, float std) {
    size_t per = 0, n = 0;
    const ck_status st = check_ds(ds, "ds", &per, &n);
    if (st != CK_STATUS_SUCCESS)
        return st;
    if (!isfinite(mean))
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "mean: %g is not finite", (double)mean);
    const float inv = 1.0f / std;
    if (!isfinite(std) || !(std > 0.0f) || !isfinite(inv))
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "std: %g (must be finite and > 0, and 1/std too)",
                       (double)std);
    for (size_t i = 0; i < n; ++i)
        ds->images[i] = (ds->images[i] - mean) * inv;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_dataset_subset(const ck_dataset *src, int start, int count, ck_dataset *out) {
    size_t per = 0, total = 0;
    const ck_status st = check_ds(src, "src", &per, &total);
    if (st != CK_STATUS_SUCCESS)
        return st;
    if (!out || out == src)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "out: %s", out ? "is src" : "is NULL");
    if (start < 0 || count < 1 || start > src->count - count)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM,
                       "start %d, count %d: not a range of src's %d samples (count >= 1)", start,
                       count, src->count);
    ck_dataset ds = *src;
    ds.count = count;
    ds.images = (float *)malloc(per * (size_t)count * sizeof(float));
    ds.labels = (int32_t *)malloc((size_t)count * sizeof(int32_t));
    if (!ds.images || !ds.labels) {
        free(ds.images);
        free(ds.labels);
        return ck_fail(NULL, CK_STATUS_ALLOC_FAILED, "out: out of memory for %d samples", count);
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
    if (count < 1)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "count: %d (must be >= 1)", count);
    if (!perm)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "perm: is NULL");
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
    size_t per = 0, total = 0;
    const ck_status st = check_ds(ds, "ds", &per, &total);
    if (st != CK_STATUS_SUCCESS)
        return st;
    if (start < 0 || batch < 1 || start > ds->count - batch)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM,
                       "start %d, batch %d: not a range of ds's %d samples (batch >= 1)", start,
                       batch, ds->count);
    if (perm)
        for (int b = 0; b < batch; ++b)
            if (perm[start + b] < 0 || perm[start + b] >= ds->count)
                return ck_fail(NULL, CK_STATUS_BAD_PARAM,
                               "perm[%d]: %d is not a sample of ds (0..%d)", start + b,
                               (int)perm[start + b], ds->count - 1);
    for (int b = 0; b < batch; ++b) {
        const int32_t k = perm ? perm[start + b] : start + b;
        if (x_out)
            memcpy(x_out + per * (size_t)b, ds->images + per * (size_t)k, per * sizeof(float));
        if (y_out)
            y_out[b] = ds->labels[k];
    }
    return CK_STATUS_SUCCESS;
}
