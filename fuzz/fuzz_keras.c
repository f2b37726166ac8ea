/* libFuzzer target: the Keras-syntax model reader (ck_keras_parse, ck_model_from_keras_text).
 * It also builds whatever parsed (ck_model_build under a 64 MiB host
 * allocation limit: a model of absurd size must fail with a status, not crash or exhaust memory)
 * and writes its Keras summary: that exercises model.c, beyond the parser. CNNKIT_FUZZ_BUILD=0
 * turns the build step off (parser only, faster). */
#include "cnnkit/cnnkit.h"
#include "cnnkit/model.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static ck_context *ctx;
static int do_build;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (ck_context_create(&ctx, CK_DEVICE_CPU, 0, 1) != CK_STATUS_SUCCESS)
        abort();
    ck_context_set_cpu_threads(ctx, 1);
    ck_context_set_host_alloc_limit(ctx, (size_t)64 << 20);
    const char *b = getenv("CNNKIT_FUZZ_BUILD");
    do_build = !(b && *b == '0');
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = (char *)malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    char err[256];
    ck_keras_model km;
    memset(&km, 0x5a, sizeof km);
    ck_status st = ck_keras_parse(text, &km, err, sizeof err);
    if (st == CK_STATUS_SUCCESS) {
        if (km.count < 0 || (km.count > 0 && !km.layers))
            __builtin_trap();
        if (!memchr(km.warnings, '\0', sizeof km.warnings) ||
            !memchr(km.loss, '\0', sizeof km.loss))
            __builtin_trap();
        ck_keras_model_free(&km);
    } else if (!memchr(err, '\0', sizeof err)) {
        __builtin_trap();
    }

    ck_model *m = NULL;
    st = ck_model_from_keras_text(ctx, text, &m, err, sizeof err);
    if (st == CK_STATUS_SUCCESS && do_build) {
        if (ck_model_build(m, 0, 0, 0, 2) != CK_STATUS_SUCCESS)
            (void)ck_model_build(m, 8, 8, 1, 2); /* no input_shape: try a small image */
        size_t need = 0;
        char buf[4096];
        (void)ck_model_summary(m, buf, sizeof buf, &need);
    }
    if (st == CK_STATUS_SUCCESS) {
        ck_model_destroy(m);
    } else if (m) {
        __builtin_trap(); /* failure must leave *out alone (NULL here) */
    }
    if (ck_context_host_alloc_bytes(ctx) != 0)
        __builtin_trap(); /* every counted allocation was given back */
    free(text);
    return 0;
}
