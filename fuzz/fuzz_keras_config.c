/* libFuzzer target: the Keras config.json reader (ck_kio_parse_config). Whatever parses is built
 * as a model (under a 64 MiB host allocation limit: absurd sizes must fail with a status), and a
 * built model's config is written back and read again: it must parse, with the same layers (a
 * functional model's in Keras's order). */
#include "cnnkit/model.h"
#include "keras_io.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static ck_context *ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (ck_context_create(&ctx, CK_DEVICE_CPU, 0, 1) != CK_STATUS_SUCCESS)
        abort();
    ck_context_set_cpu_threads(ctx, 1);
    ck_context_set_host_alloc_limit(ctx, (size_t)64 << 20);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512];
    ck_keras_model km;
    memset(&km, 0x5a, sizeof km);
    ck_status st = ck_kio_parse_config((const char *)data, size, NULL, &km, err, sizeof err);
    if (st != CK_STATUS_SUCCESS) {
        if (!memchr(err, '\0', sizeof err))
            __builtin_trap();
        return 0;
    }
    if (km.count < 1 || !km.layers)
        __builtin_trap();
    ck_model *m = NULL;
    st = ck_kio_model_from_config(ctx, &km, -1, &m);
    if (st == CK_STATUS_SUCCESS && km.layers[0].input_h > 0)
        st = ck_model_build(m, 0, 0, 0, 2);
    else
        st = CK_STATUS_BAD_PARAM;
    if (st == CK_STATUS_SUCCESS) {
        char *cfg = ck_kio_write_config(m, err, sizeof err);
        if (cfg) {
            ck_keras_model again;
            if (ck_kio_parse_config(cfg, strlen(cfg), NULL, &again, err, sizeof err) !=
                CK_STATUS_SUCCESS)
                __builtin_trap(); /* cnnkit cannot read its own config */
            if (again.count != km.count)
                __builtin_trap();
            int order[256]; /* a graph is written in Keras's layer order */
            ck_kio_keras_order(m, order);
            for (int i = 0; i < km.count; ++i) {
                ck_layer_desc built;
                ck_model_layer_desc(m, order[i], &built);
                if (again.layers[i].type != built.type || again.layers[i].units != built.units ||
                    again.layers[i].activation != built.activation ||
                    strcmp(again.layers[i].name, built.name))
                    __builtin_trap(); /* the round trip changed a layer */
            }
            ck_keras_model_free(&again);
            free(cfg);
        }
    }
    ck_model_destroy(m);
    ck_keras_model_free(&km);
    return 0;
}
