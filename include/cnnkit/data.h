/*
 * cnnkit data sets: MNIST-format IDX files (raw or gzip), CIFAR-10 binary batches, seeded
 * shuffling and batch gathering. Images are float32, channels last (NHWC), scaled to [0, 1].
 */
#ifndef CNNKIT_DATA_H
#define CNNKIT_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "cnnkit/cnnkit.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ck_dataset {
    int count, h, w, c, classes;
    float *images;   /* count * h * w * c floats, NHWC */
    int32_t *labels; /* count labels in [0, classes) */
} ck_dataset;

/* Frees the arrays and zeroes the struct (NULL accepted). */
void ck_dataset_free(ck_dataset *ds);

/* Reads an IDX image file (magic 0x00000803, u8 pixels) and its IDX label file (0x00000801);
 * either may be gzip-compressed. On error: CK_STATUS_BAD_PARAM (missing, unreadable or malformed
 * file) or CK_STATUS_ALLOC_FAILED, a message naming the file in err, and *out untouched. */
ck_status ck_idx_load(const char *images_path, const char *labels_path, ck_dataset *out,
                      char *err, size_t err_len);

/* Reads CIFAR-10 binary batch files (records of 1 label byte + 3072 bytes, planes R, G, B of
 * 32 x 32) into one 32 x 32 x 3 dataset. */
ck_status ck_cifar10_load(const char *const *paths, int npaths, ck_dataset *out, char *err,
                          size_t err_len);

/* Fashion-MNIST (or any MNIST-format set) from dir: train-images-idx3-ubyte[.gz] and
 * train-labels-idx1-ubyte[.gz] (train = 1) or t10k-* (train = 0). dir NULL: $CNNKIT_DATA, else
 * /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist). */
#define CK_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
ck_status ck_fashion_mnist_load(const char *dir, int train, ck_dataset *out, char *err,
                                size_t err_len);

/* x = (x - mean) / std over every pixel (std > 0). */
ck_status ck_dataset_normalize(ck_dataset *ds, float mean, float std);
/* Copies samples [start, start + count) into a new dataset. */
ck_status ck_dataset_subset(const ck_dataset *src, int start, int count, ck_dataset *out);
/* A permutation of 0..count-1 that depends only on (seed, epoch): Fisher-Yates driven by
 * splitmix64, identical on every machine. */
ck_status ck_dataset_shuffle(int count, uint64_t seed, uint64_t epoch, int32_t *perm);
/* Copies samples perm[start .. start + batch) (perm NULL: identity) into x_out (NHWC) and
 * y_out (either may be NULL). */
ck_status ck_dataset_gather(const ck_dataset *ds, const int32_t *perm, int start, int batch,
                            float *x_out, int32_t *y_out);

#ifdef __cplusplus
}
#endif
#endif /* CNNKIT_DATA_H */
