/* cnnkit summary: the Keras table, the execution plan and the memory for batches of --batch. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

int cmd_summary(const opts *o) {
    ck_context *ctx = NULL;
    if (ck_context_create(&ctx, CK_DEVICE_CPU, 0, o->seed) != CK_STATUS_SUCCESS)
        return EXIT_RUNTIME;
    ck_model *m = NULL;
    int rc = load_model(ctx, o, o->batch, &m); /* the memory line is for batches of --batch */
    if (!rc) {
        size_t need = 0;
        ck_model_summary(m, NULL, 0, &need);
        char *buf = (char *)malloc(need);
        if (buf && ck_model_summary(m, buf, need, NULL) == CK_STATUS_SUCCESS)
            fputs(buf, stdout);
        else
            rc = EXIT_RUNTIME;
        free(buf);
    }
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return rc;
}
