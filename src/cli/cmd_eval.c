/* cnnkit evaluate and predict: a trained model on the test set; with --distributed each rank
 * takes its contiguous share of the samples (as ck_comm_shard shares a batch) and rank 0 prints
 * the whole set's figures or every prediction, in order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Rank r's samples [*first, *first + *count) of total: the first total % ranks take one more. */
static void share_of(const opts *o, int total, int *first, int *count) {
    const int ranks = o->distributed ? o->ranks : 1, r = o->distributed ? o->rank : 0;
    const int q = total / ranks, extra = total % ranks;
    *count = q + (r < extra ? 1 : 0);
    *first = r * q + (r < extra ? r : extra);
}

static int evaluate(const opts *o, ck_context *ctx, ck_model *m, const ck_dataset *test) {
    int first, count;
    share_of(o, test->count, &first, &count);
    ck_step_result r = {0.0, 0, 0};
    int rc = 0;
    if (count > 0 &&
        ck_model_evaluate(m, test->images + (size_t)first * test->h * test->w * test->c,
                          test->labels + first, count, &r) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: evaluate: %s\n", ck_context_last_error(ctx));
        rc = EXIT_RUNTIME;
    }
    /* every rank joins the sum, a failed one with a flag: all then fail together */
    double v[4] = {rc ? 0.0 : r.loss * r.count, r.correct, r.count, rc ? 1.0 : 0.0};
    if (o->distributed && dist_sum(o, v, 4))
        return EXIT_RUNTIME;
    if (v[3] > 0.0) {
        if (!rc)
            fprintf(stderr,
                    "cnnkit: rank %d: another rank failed to evaluate (its message says "
                    "why)\n",
                    o->rank);
        return EXIT_RUNTIME;
    }
    if (!o->distributed) /* one process: the figures of the one call, as they always were */
        printf("test accuracy: %.4f (%d/%d), test loss %.4f\n", (double)r.correct / r.count,
               r.correct, r.count, r.loss);
    else
        printf("test accuracy: %.4f (%d/%d), test loss %.4f\n", v[1] / v[2], (int)v[1], (int)v[2],
               v[0] / v[2]);
    return 0;
}

static int predict(const opts *o, ck_context *ctx, ck_model *m, const ck_dataset *test) {
    const int n = o->count < test->count ? o->count : test->count;
    const int k = ck_model_num_classes(m);
    int first, count;
    share_of(o, n, &first, &count);
    const int ranks = o->distributed ? o->ranks : 1;
    float *mine = (float *)malloc(sizeof(float) * ((size_t)count * k + 1));
    float *all = (float *)malloc(sizeof(float) * ((size_t)n * k + 1));
    int *counts = (int *)malloc(sizeof(int) * (size_t)ranks);
    int rc = 0, failed = !mine || !all || !counts;
    if (!failed && count > 0 &&
        ck_model_predict(m, test->images + (size_t)first * test->h * test->w * test->c, count,
                         mine) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: predict: %s\n", ck_context_last_error(ctx));
        failed = 1;
    }
    double flag = failed;
    if (o->distributed && dist_sum(o, &flag, 1))
        flag = 1.0;
    if (flag > 0.0) {
        if (!failed)
            fprintf(stderr,
                    "cnnkit: rank %d: another rank failed to predict (its message says "
                    "why)\n",
                    o->rank);
        rc = EXIT_RUNTIME;
    }
    if (!rc && counts) {
        for (int r = 0; r < ranks; ++r) {
            const opts other = {.distributed = o->distributed, .rank = r, .ranks = ranks};
            int f;
            share_of(&other, n, &f, &counts[r]);
            counts[r] *= k;
        }
        rc = o->distributed ? dist_gather(o, mine, count * k, all, counts) : 0;
    }
    if (!rc && o->rank == 0) {
        const float *p = o->distributed ? all : mine;
        for (int i = 0; i < n; ++i) {
            int best = 0;
            for (int j = 1; j < k; ++j)
                if (p[i * k + j] > p[i * k + best])
                    best = j;
            printf("image %d: predicted %d (p = %.3f), label %d\n", i, best, p[i * k + best],
                   (int)test->labels[i]);
        }
    }
    free(mine);
    free(all);
    free(counts);
    return rc;
}

int cmd_eval_predict(const opts *o, int is_predict) {
    if (!o->weights && !is_keras_file(o->model)) {
        fprintf(stderr, "cnnkit: %s needs --weights FILE (from cnnkit train --save)\n", o->cmd);
        return EXIT_USAGE;
    }
    /* --distributed: rank 0 prints; the others' results go into its figures */
    if (o->distributed && o->rank > 0 && !freopen("/dev/null", "w", stdout))
        return EXIT_RUNTIME;
    ck_context *ctx = NULL;
    int rc = make_context(o, &ctx);
    ck_model *m = NULL;
    ck_dataset test = {0};
    if (!rc)
        rc = load_model(ctx, o, o->batch, &m);
    if (!rc && o->weights && load_weights_file(m, o->weights) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: --weights: %s\n", ck_context_last_error(ctx));
        rc = EXIT_RUNTIME;
    }
    if (!rc)
        rc = load_data(o, NULL, 0, &test);
    /* samples are read as the model's input and their labels are its classes (as train's;
     * predict prints each image's label beside its class) */
    if (!rc)
        rc = data_fits(o, m, &test, "test");
    if (o->distributed) /* a rank that failed to start stops the others */
        rc = dist_agree(o, rc);
    if (!rc)
        rc = is_predict ? predict(o, ctx, m, &test) : evaluate(o, ctx, m, &test);
    ck_dataset_free(&test);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return rc;
}
