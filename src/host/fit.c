/* ck_model_fit: shuffled mini-batches, epochs, validation (Keras model.fit). */
#include "cnnkit/data.h"
#include "model_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static ck_status check_ds(ck_model *m, const ck_dataset *d, const char *name) {
    if (d->h != m->in_h || d->w != m->in_w || d->c != m->in_c)
        return ck_fail(m->ctx, CK_STATUS_SHAPE_MISMATCH,
                       "%s: images are %dx%dx%d, the model input is %dx%dx%d", name, d->h, d->w,
                       d->c, m->in_h, m->in_w, m->in_c);
    if (d->count < 1 || !d->images || !d->labels)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "%s: is empty", name);
    if (d->classes > m->classes)
        return ck_fail(m->ctx, CK_STATUS_SHAPE_MISMATCH,
                       "%s: has %d classes, the model outputs %d", name, d->classes, m->classes);
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_fit(ck_model *m, const ck_dataset *train, const ck_dataset *val,
                              const ck_fit_options *opts, ck_epoch_result *history) {
    if (!m)
        return CK_STATUS_BAD_PARAM;
    ck_context *ctx = m->ctx;
    ck_clear_error(ctx);
    if (!m->built)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    if (!train)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "train: is NULL");
    ck_status st = check_ds(m, train, "train");
    if (st == CK_STATUS_SUCCESS && val)
        st = check_ds(m, val, "val");
    if (st != CK_STATUS_SUCCESS)
        return st;
    ck_fit_options o = {1, m->max_batch, 0, NULL, NULL, NULL};
    if (opts)
        o = *opts;
    if (o.epochs < 1)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "opts->epochs: must be >= 1, got %d", o.epochs);
    if (o.batch < 1 || o.batch > m->max_batch)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "opts->batch: %d must be in [1, max_batch = %d] (build with a larger "
                       "max_batch)",
                       o.batch, m->max_batch);
    const uint64_t seed = o.seed ? o.seed : ctx->seed;
    const size_t per = (size_t)m->in_h * m->in_w * m->in_c;
    int32_t *perm = (int32_t *)malloc(sizeof(int32_t) * (size_t)train->count);
    float *xb = (float *)malloc(sizeof(float) * per * (size_t)o.batch);
    int32_t *yb = (int32_t *)malloc(sizeof(int32_t) * (size_t)o.batch);
    if (!perm || !xb || !yb) {
        free(perm);
        free(xb);
        free(yb);
        return ck_fail(ctx, CK_STATUS_ALLOC_FAILED, "fit: out of host memory for batch buffers");
    }
    const int steps = (train->count + o.batch - 1) / o.batch;
    int stop = 0;
    for (int e = 0; e < o.epochs && !stop && st == CK_STATUS_SUCCESS; ++e) {
        const double t0 = now_s();
        st = ck_dataset_shuffle(train->count, seed, (uint64_t)e, perm);
        double loss = 0.0;
        long long correct = 0, seen = 0;
        for (int s = 0; s < steps && st == CK_STATUS_SUCCESS && !stop; ++s) {
            const int start = s * o.batch;
            const int n = train->count - start < o.batch ? train->count - start : o.batch;
            st = ck_dataset_gather(train, perm, start, n, xb, yb);
            ck_step_result r;
            if (st == CK_STATUS_SUCCESS)
                st = ck_model_train_step(m, xb, yb, n, &r);
            if (st != CK_STATUS_SUCCESS)
                break;
            loss += r.loss * n;
            correct += r.correct;
            seen += n;
            if (o.on_step) {
                const double dt = now_s() - t0;
                ck_fit_progress p = {e + 1, o.epochs, s + 1, steps, loss / (double)seen,
                                     (double)correct / (double)seen, (double)seen / dt,
                                     dt / (s + 1) * (steps - s - 1)};
                stop = o.on_step(o.user, &p);
            }
        }
        if (st != CK_STATUS_SUCCESS)
            break;
        const double dt = now_s() - t0;
        ck_epoch_result er = {e + 1, loss / (double)seen, (double)correct / (double)seen,
                              NAN, NAN, dt, (double)seen / dt};
        if (val) {
            ck_step_result vr;
            st = ck_model_evaluate(m, val->images, val->labels, val->count, &vr);
            if (st != CK_STATUS_SUCCESS)
                break;
            er.val_loss = vr.loss;
            er.val_accuracy = (double)vr.correct / (double)vr.count;
        }
        if (history)
            history[e] = er;
        if (o.on_epoch && o.on_epoch(o.user, &er))
            stop = 1;
    }
    free(perm);
    free(xb);
    free(yb);
    return st;
}
