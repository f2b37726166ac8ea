/* libFuzzer target: the IDX reader (ck_idx_load), raw and gzip.
 * Input: byte 0 = flags (bit 0: gzip the images file, bit 1: gzip the labels file), bytes 1-2 =
 * length of the images file (little-endian, clamped to what is left); the rest is the labels. */
#include "cnnkit/data.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3)
        return 0;
    const int flags = data[0];
    size_t ilen = (size_t)data[1] | ((size_t)data[2] << 8);
    data += 3;
    size -= 3;
    if (ilen > size)
        ilen = size;
    const char *ip = fuzz_write(0, "idx", data, ilen, flags & 1);
    const char *lp = fuzz_write(1, "idx", data + ilen, size - ilen, flags & 2);
    if (!ip || !lp)
        return 0;
    ck_dataset ds;
    memset(&ds, 0x5a, sizeof ds);
    const ck_dataset before = ds;
    char err[256];
    ck_status st = ck_idx_load(ip, lp, &ds, err, sizeof err);
    if (st == CK_STATUS_SUCCESS) {
        /* touch every value: a bad size would show under ASan */
        unsigned acc = 0;
        for (size_t i = 0; i < (size_t)ds.count * ds.h * ds.w * ds.c; ++i)
            acc += ds.images[i] > 0.5f;
        for (int i = 0; i < ds.count; ++i)
            if (ds.labels[i] < 0 || ds.labels[i] >= ds.classes)
                __builtin_trap();
        (void)acc;
        ck_dataset_free(&ds);
    } else if (memcmp(&ds, &before, sizeof ds) != 0 || !memchr(err, '\0', sizeof err)) {
        __builtin_trap(); /* a failure must leave *out untouched */
    }
    return 0;
}
