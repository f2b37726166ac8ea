/* libFuzzer target: the CIFAR-10 reader (ck_cifar10_load), one or two files, raw and gzip.
 * Input: byte 0 = flags (bit 0: gzip file 1, bit 1: gzip file 2, bit 2: two files), bytes 1-2 =
 * length of file 1 (little-endian, clamped); the rest is file 2. */
#include "cnnkit/data.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3)
        return 0;
    const int flags = data[0];
    size_t len1 = (size_t)data[1] | ((size_t)data[2] << 8);
    data += 3;
    size -= 3;
    if (!(flags & 4) || len1 > size)
        len1 = size;
    const char *paths[2];
    paths[0] = fuzz_write(0, "cifar", data, len1, flags & 1);
    paths[1] = fuzz_write(1, "cifar", data + len1, size - len1, flags & 2);
    if (!paths[0] || !paths[1])
        return 0;
    ck_dataset ds;
    memset(&ds, 0x5a, sizeof ds);
    const ck_dataset before = ds;
    char err[256];
    ck_status st = ck_cifar10_load(paths, (flags & 4) ? 2 : 1, &ds, err, sizeof err);
    if (st == CK_STATUS_SUCCESS) {
        if (ds.h != 32 || ds.w != 32 || ds.c != 3 || ds.classes != 10 || ds.count < 1)
            __builtin_trap();
        unsigned acc = 0;
        for (size_t i = 0; i < (size_t)ds.count * 3072; ++i)
            acc += ds.images[i] > 0.5f;
        for (int i = 0; i < ds.count; ++i)
            if (ds.labels[i] < 0 || ds.labels[i] > 9)
                __builtin_trap();
        (void)acc;
        ck_dataset_free(&ds);
    } else if (memcmp(&ds, &before, sizeof ds) != 0 || !memchr(err, '\0', sizeof err)) {
        __builtin_trap();
    }
    return 0;
}
