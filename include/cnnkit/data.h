/*
 * cnnkit data sets: MNIST-format IDX files (raw or gzip), CIFAR-10 binary batches, seeded
 * shuffling and batch gathering. Images are float32, channels last (NHWC), scaled to [0, 1].
 *
 * Conventions: every call returns a ck_status and, when it fails, changes nothing it was asked to
 * write. The loaders need no ck_context: they take an optional caller buffer err (err_len bytes;
 * NULL or 0 for none) that receives a message naming the offending file or argument on failure and
 * "" on success. Nothing here prints, exits or keeps global state.
 */
#ifndef CNNKIT_DATA_H
#define CNNKIT_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "cnnkit/cnnkit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A data set in host memory, owned by the caller; release it with ck_dataset_free. */
typedef struct ck_dataset {
    int count, h, w, c, classes; /* samples, image shape, label values ([0, classes)) */
    float *images;               /* count * h * w * c floats, NHWC */
    int32_t *labels;             /* count labels in [0, classes) */
} ck_dataset;

/* Frees the arrays and zeroes the struct (NULL accepted). */
void ck_dataset_free(ck_dataset *ds);

/* Reads an IDX image file (magic 0x00000803: count x rows x cols u8 pixels, big-endian header) and
 * its IDX label file (magic 0x00000801: count u8 labels); either may be gzip-compressed (detected
 * from the content, not the name). Pixels become x * (1/255 in float32), as Keras's
 * Rescaling(1./255) computes them; c = 1; classes = max label + 1.
 * Errors, with a message naming the file in err and *out untouched:
 *  - CK_STATUS_BAD_PARAM: NULL argument, missing or unreadable file, wrong magic, zero or
 *    oversized dimensions, truncated file or gzip stream, trailing bytes, label count different
 *    from the image count;
 *  - CK_STATUS_OVERFLOW: a size that does not fit this platform's size_t;
 *  - CK_STATUS_ALLOC_FAILED: out of memory. */
ck_status ck_idx_load(const char *images_path, const char *labels_path, ck_dataset *out, char *err,
                      size_t err_len);

/* Reads CIFAR-10 binary batch files (data_batch_N.bin, test_batch.bin; raw or gzip) into one
 * 32 x 32 x 3 dataset, in file order, classes = 10. A record is 1 label byte (0..9) and 3072
 * bytes: the R, G and B planes of a 32 x 32 image, row-major. A file whose size is not a positive
 * multiple of 3073 bytes, or a label > 9, gives CK_STATUS_BAD_PARAM naming the file (and record);
 * other errors as ck_idx_load. */
ck_status ck_cifar10_load(const char *const *paths, int npaths, ck_dataset *out, char *err,
                          size_t err_len);

/* Fashion-MNIST (or any MNIST-format set) from dir: train-images-idx3-ubyte and
 * train-labels-idx1-ubyte (train != 0) or t10k-* (train == 0); each file is looked for as
 * NAME.gz first, then NAME. dir NULL or "": $CNNKIT_DATA when set and non-empty, else
 * CK_FASHION_MNIST_DIR (Debian package dataset-fashion-mnist). Errors as ck_idx_load; a missing
 * file names the paths tried. */
#define CK_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#define CK_DATA_ENV "CNNKIT_DATA"
ck_status ck_fashion_mnist_load(const char *dir, int train, ck_dataset *out, char *err,
                                size_t err_len);

/* x = (x - mean) / std over every pixel, computed as (x - mean) * (1 / std) in fp32.
 * mean finite, std finite and > 0; otherwise CK_STATUS_BAD_PARAM and ds is unchanged. */
ck_status ck_dataset_normalize(ck_dataset *ds, float mean, float std);

/* Copies samples [start, start + count) of src into a new dataset *out (same shape, classes).
 * 0 <= start, 1 <= count, start + count <= src->count; out must not be src. */
ck_status ck_dataset_subset(const ck_dataset *src, int start, int count, ck_dataset *out);

/* Writes a permutation of 0 .. count-1 (count >= 1) to perm; it depends only on (count, seed,
 * epoch) and is identical on every machine. Use epoch 0, 1, 2, ... for a new order each epoch.
 * Exactly: s = seed ^ (epoch * 0xD1B54A32D192ED03 + 0x8CB92BA72F3D8DD7) (mod 2^64); r() is
 * splitmix64 on state s (s += 0x9E3779B97F4A7C15, then the splitmix64 finalizer of s);
 * perm = identity; for i = count-1 down to 1: b = i + 1, draw r() until r < 2^64 - 1 -
 * (2^64 - 1) % b (rejection, unbiased), j = r % b, swap perm[i] and perm[j]. */
ck_status ck_dataset_shuffle(int count, uint64_t seed, uint64_t epoch, int32_t *perm);

/* Copies samples perm[start], ..., perm[start + batch - 1] of ds (perm NULL: the identity) into
 * x_out (batch * h * w * c floats, NHWC) and their labels into y_out (batch int32); either output
 * may be NULL to skip it. Requires 0 <= start, 1 <= batch, start + batch <= ds->count and every
 * perm entry used in [0, ds->count): all checked before anything is written. */
ck_status ck_dataset_gather(const ck_dataset *ds, const int32_t *perm, int start, int batch,
                            float *x_out, int32_t *y_out);

#ifdef __cplusplus
}
#endif
#endif /* CNNKIT_DATA_H */
