/* cnnkit evaluate and predict: a trained model on the test set. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

int cmd_eval_predict(const opts *o, int predict) {
    if (!o->weights && !is_keras_file(o->model)) {
        fprintf(stderr, "cnnkit: %s needs --weights FILE (from cnnkit train --save)\n", o->cmd);
        return EXIT_USAGE;
    }
    ck_context *ctx = NULL;
    int rc = make_context(o, &ctx);
    if (rc)
        return rc;
    ck_model *m = NULL;
    ck_dataset test = {0};
    rc = load_model(ctx, o, o->batch, &m);
    if (!rc && o->weights && load_weights_file(m, o->weights) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: --weights: %s\n", ck_context_last_error(ctx));
        rc = EXIT_RUNTIME;
    }
    if (!rc)
        rc = load_data(o, NULL, 0, &test);
    if (!rc && !predict) {
        ck_step_result r;
        if (ck_model_evaluate(m, test.images, test.labels, test.count, &r) != CK_STATUS_SUCCESS) {
            fprintf(stderr, "cnnkit: evaluate: %s\n", ck_context_last_error(ctx));
            rc = EXIT_RUNTIME;
        } else {
            printf("test accuracy: %.4f (%d/%d), test loss %.4f\n", (double)r.correct / r.count,
                   r.correct, r.count, r.loss);
        }
    } else if (!rc) {
        int n = o->count < test.count ? o->count : test.count;
        int k = ck_model_num_classes(m);
        float *p = (float *)malloc(sizeof(float) * (size_t)n * k);
        if (!p || ck_model_predict(m, test.images, n, p) != CK_STATUS_SUCCESS) {
            fprintf(stderr, "cnnkit: predict: %s\n", ck_context_last_error(ctx));
            rc = EXIT_RUNTIME;
        } else {
            for (int i = 0; i < n; ++i) {
                int best = 0;
                for (int j = 1; j < k; ++j)
                    if (p[i * k + j] > p[i * k + best])
                        best = j;
                printf("image %d: predicted %d (p = %.3f), label %d\n", i, best, p[i * k + best],
                       (int)test.labels[i]);
            }
        }
        free(p);
    }
    ck_dataset_free(&test);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return rc;
}
