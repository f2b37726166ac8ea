/* Data sets: IDX and CIFAR readers on files made here, error paths, shuffling, the real set. */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "cnnkit/data.h"

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Writes bytes to path, gzip-compressed when gz. */
static void write_file(const char *path, const unsigned char *b, size_t n, int gz) {
    if (gz) {
        gzFile f = gzopen(path, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(gzwrite(f, b, (unsigned)n), (int)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(b, 1, n, f), n);
        fclose(f);
    }
}

/* An IDX pair of `count` 3x2 images; pixel i of image k = (k * 6 + i) % 256, label k % 4.
 * magic/count overrides make broken files. */
static void write_idx(const char *dir, const char *pre, int count, int gz, uint32_t img_magic,
                      int label_count, size_t cut_images) {
    char p[512];
    size_t ni = 16 + (size_t)count * 6, nl = 8 + (size_t)label_count;
    unsigned char *im = malloc(ni), *lb = malloc(nl);
    put_be32(im, img_magic);
    put_be32(im + 4, (uint32_t)count);
    put_be32(im + 8, 3);
    put_be32(im + 12, 2);
    for (int i = 0; i < count * 6; ++i)
        im[16 + i] = (unsigned char)(i % 256);
    put_be32(lb, 0x00000801u);
    put_be32(lb + 4, (uint32_t)label_count);
    for (int k = 0; k < label_count; ++k)
        lb[8 + k] = (unsigned char)(k % 4);
    snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte%s", dir, pre, gz ? ".gz" : "");
    write_file(p, im, ni - cut_images, gz);
    snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte%s", dir, pre, gz ? ".gz" : "");
    write_file(p, lb, nl, gz);
    free(im);
    free(lb);
}

static void clean_dir(const char *dir) {
    const char *names[] = {"train-images-idx3-ubyte",    "train-labels-idx1-ubyte",
                           "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                           "t10k-images-idx3-ubyte",     "t10k-labels-idx1-ubyte",
                           "cifar.bin"};
    char p[512];
    for (size_t i = 0; i < sizeof names / sizeof *names; ++i) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

Test(data, idx_raw_and_gzip) {
    char dir[] = "/tmp/cnnkit-data-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    for (int gz = 0; gz < 2; ++gz) {
        write_idx(dir, "train", 5, gz, 0x00000803u, 5, 0);
        ck_dataset ds;
        char err[256] = "";
        cr_assert_eq(ck_fashion_mnist_load(dir, 1, &ds, err, sizeof err), CK_STATUS_SUCCESS, "%s",
                     err);
        cr_assert(ds.count == 5 && ds.h == 3 && ds.w == 2 && ds.c == 1 && ds.classes == 4);
        for (int i = 0; i < 30; ++i)
            cr_assert_float_eq(ds.images[i], (float)(i % 256) / 255.0f, 1e-7);
        cr_assert_eq(ds.labels[4], 0);
        cr_assert_eq(ds.labels[3], 3);
        CK_OK(NULL, ck_dataset_normalize(&ds, 0.5f, 2.0f));
        cr_assert_float_eq(ds.images[0], -0.25f, 1e-7);
        ck_dataset_free(&ds);
        cr_assert_null(ds.images);
        clean_dir(dir);
        cr_assert_not_null(mkdtemp(strcpy(dir, "/tmp/cnnkit-data-XXXXXX")));
    }
    clean_dir(dir);
}

/* Each broken file gives BAD_PARAM, a message naming the file and the problem, and no output. */
Test(data, idx_errors) {
    char dir[] = "/tmp/cnnkit-data-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    ck_dataset ds = {7, 0, 0, 0, 0, NULL, NULL};
    char err[512];
    cr_assert_eq(ck_fashion_mnist_load(dir, 1, &ds, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(err, "train-images-idx3-ubyte"), NULL, "%s", err);
    struct {
        uint32_t magic;
        int labels;
        size_t cut;
        const char *needle;
    } cases[] = {
        {0x00000801u, 5, 0, "wrong magic"},
        {0x00000803u, 4, 0, "4 labels for 5 images"},
        {0x00000803u, 5, 7, "truncated"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; ++k) {
        write_idx(dir, "train", 5, 0, cases[k].magic, cases[k].labels, cases[k].cut);
        err[0] = '\0';
        cr_assert_eq(ck_fashion_mnist_load(dir, 1, &ds, err, sizeof err), CK_STATUS_BAD_PARAM,
                     "case %zu", k);
        cr_assert_neq(strstr(err, cases[k].needle), NULL, "case %zu: '%s'", k, err);
        cr_assert_neq(strstr(err, "idx"), NULL, "message names no file: %s", err);
        cr_assert_eq(ds.count, 7, "output touched on error");
    }
    clean_dir(dir);
}

Test(data, cifar_reader) {
    char dir[] = "/tmp/cnnkit-data-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char p[512];
    snprintf(p, sizeof p, "%s/cifar.bin", dir);
    unsigned char rec[2 * 3073];
    for (int r = 0; r < 2; ++r) {
        rec[r * 3073] = (unsigned char)(r + 3);
        for (int i = 0; i < 3072; ++i)
            rec[r * 3073 + 1 + i] = (unsigned char)((i / 1024) * 100 + r); /* plane value */
    }
    write_file(p, rec, sizeof rec, 0);
    const char *paths[1] = {p};
    ck_dataset ds;
    char err[256];
    cr_assert_eq(ck_cifar10_load(paths, 1, &ds, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    cr_assert(ds.count == 2 && ds.h == 32 && ds.w == 32 && ds.c == 3 && ds.classes == 10);
    cr_assert_eq(ds.labels[1], 4);
    /* NHWC: pixel 0 of image 1 is (R, G, B) = (1, 101, 201) / 255 */
    cr_assert_float_eq(ds.images[3072 + 1], 101.0f / 255.0f, 1e-7);
    cr_assert_float_eq(ds.images[3072 + 2], 201.0f / 255.0f, 1e-7);
    ck_dataset_free(&ds);
    write_file(p, rec, 3000, 0);
    cr_assert_eq(ck_cifar10_load(paths, 1, &ds, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert_neq(strstr(err, "3073"), NULL, "%s", err);
    clean_dir(dir);
}

Test(data, shuffle_and_gather) {
    enum { N = 1000 };
    int32_t a[N], b[N], c[N];
    CK_OK(NULL, ck_dataset_shuffle(N, 42, 0, a));
    CK_OK(NULL, ck_dataset_shuffle(N, 42, 0, b));
    CK_OK(NULL, ck_dataset_shuffle(N, 42, 1, c));
    cr_assert_eq(memcmp(a, b, sizeof a), 0, "not deterministic");
    cr_assert_neq(memcmp(a, c, sizeof a), 0, "epochs give the same order");
    char seen[N] = {0};
    int fixed = 0;
    for (int i = 0; i < N; ++i) {
        cr_assert(a[i] >= 0 && a[i] < N && !seen[a[i]], "not a permutation");
        seen[a[i]] = 1;
        fixed += a[i] == i;
    }
    cr_assert_lt(fixed, 10, "%d fixed points: not shuffled", fixed);
    float img[4 * 2] = {0, 0, 1, 1, 2, 2, 3, 3};
    int32_t lab[4] = {10, 11, 12, 13};
    ck_dataset ds = {4, 1, 2, 1, 14, img, lab};
    int32_t perm[4] = {3, 1, 0, 2};
    float x[4];
    int32_t y[2];
    CK_OK(NULL, ck_dataset_gather(&ds, perm, 1, 2, x, y));
    cr_assert(x[0] == 1 && x[2] == 0 && y[0] == 11 && y[1] == 10);
    cr_assert_eq(ck_dataset_gather(&ds, perm, 3, 2, x, y), CK_STATUS_BAD_PARAM);
    ck_dataset sub;
    CK_OK(NULL, ck_dataset_subset(&ds, 2, 2, &sub));
    cr_assert(sub.count == 2 && sub.images[0] == 2 && sub.labels[1] == 13);
    ck_dataset_free(&sub);
}

/* The real Fashion-MNIST test set: 10,000 images of 28x28, 1,000 per class. */
Test(data, fashion_mnist_test_set) {
    if (access(CK_FASHION_MNIST_DIR "/t10k-images-idx3-ubyte.gz", R_OK) != 0)
        cr_skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)");
    ck_dataset ds;
    char err[256];
    cr_assert_eq(ck_fashion_mnist_load(CK_FASHION_MNIST_DIR, 0, &ds, err, sizeof err),
                 CK_STATUS_SUCCESS, "%s", err);
    cr_assert(ds.count == 10000 && ds.h == 28 && ds.w == 28 && ds.c == 1 && ds.classes == 10);
    int hist[10] = {0};
    for (int i = 0; i < ds.count; ++i)
        hist[ds.labels[i]]++;
    for (int k = 0; k < 10; ++k)
        cr_assert_eq(hist[k], 1000, "class %d has %d images", k, hist[k]);
    cr_assert_eq(ds.labels[0], 9, "the first test image is an ankle boot (label 9)");
    ck_dataset_free(&ds);
}
