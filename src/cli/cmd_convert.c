/* cnnkit convert: weights between .keras, .weights.h5 and cnnkit checkpoints. */
#include <stdio.h>

#include "cli.h"

/* cnnkit convert A B [--model MODEL]: A is a .keras / legacy .h5 (its own architecture), or a
 * checkpoint / .weights.h5 read into MODEL's architecture; B is written by its extension. */
int cmd_convert(const opts *oin) {
    if (!oin->output) {
        fprintf(stderr, "cnnkit: convert needs A and B (cnnkit convert A B [--model MODEL])\n");
        return EXIT_USAGE;
    }
    const int self_describing =
        ends_with(oin->model, ".keras") ||
        (ends_with(oin->model, ".h5") && !ends_with(oin->model, ".weights.h5"));
    if (!self_describing && !oin->arch) {
        if (ends_with(oin->model, ".py")) /* the other side: an architecture, no weights */
            fprintf(stderr,
                    "cnnkit: convert: %s is model text, with no weights to convert: A is a "
                    ".keras or .h5 file, or weights (a checkpoint or .weights.h5) with --model "
                    "%s; cnnkit train %s --save B.keras trains and writes it\n",
                    oin->model, oin->model, oin->model);
        else
            fprintf(stderr,
                    "cnnkit: convert: %s holds weights only: give its architecture with "
                    "--model MODEL (model text or .keras)\n",
                    oin->model);
        return EXIT_USAGE;
    }
    /* B over the architecture file would replace the model text with weights */
    const char *const in_names[1] = {"the file of --model"};
    const char *const in_paths[1] = {oin->arch};
    if (output_not_input("convert", "B", oin->output, in_names, in_paths, 1))
        return EXIT_USAGE;
    opts o = *oin;
    o.model = self_describing ? oin->model : oin->arch;
    ck_context *ctx = NULL;
    if (ck_context_create(&ctx, CK_DEVICE_CPU, 0, o.seed) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: convert: %s\n", ck_context_last_error(NULL));
        return EXIT_RUNTIME;
    }
    ck_model *m = NULL;
    int rc = load_model(ctx, &o, 1, &m);
    if (!rc && !self_describing && load_weights_file(m, oin->model) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: convert: %s\n", ck_context_last_error(ctx));
        rc = EXIT_RUNTIME;
    }
    if (!rc && save_model_file(m, oin->output) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: convert: %s\n", ck_context_last_error(ctx));
        rc = EXIT_RUNTIME;
    }
    if (!rc)
        printf("wrote %s\n", oin->output);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return rc;
}
