/* ck_model_fit: shuffled mini-batches, epochs, validation (Keras model.fit), and resuming a fit
 * from the position a checkpoint recorded. */
#include "cnnkit/data.h"
#include "comm_internal.h"
#include "model_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ck_status check_ds(ck_model *m, const ck_dataset *d, const char *name) {
    if (d->h != m->in_h || d->w != m->in_w || d->c != m->in_c)
        return ck_fail(m->ctx, CK_STATUS_SHAPE_MISMATCH,
                       "%s: images are %dx%dx%d, the model input is %dx%dx%d", name, d->h, d->w,
                       d->c, m->in_h, m->in_w, m->in_c);
    if (d->count < 1 || !d->images || !d->labels)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "%s: is empty", name);
    if (d->classes > m->classes)
        return ck_fail(m->ctx, CK_STATUS_SHAPE_MISMATCH, "%s: has %d classes, the model outputs %d",
                       name, d->classes, m->classes);
    return CK_STATUS_SUCCESS;
}

/* Every sample must pass ck_model_train_step's checks (labels are classes of the model, images
 * finite) before the first step: a fit that stopped at a bad sample in its third epoch would
 * leave the model trained half way; and a device-resident training set then needs no check per
 * step. name: "train" or "val". */
static ck_status samples_check(const ck_model *m, const ck_dataset *d, const char *name) {
    for (int i = 0; i < d->count; ++i)
        if (d->labels[i] < 0 || d->labels[i] >= m->classes)
            return ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                           "%s: labels[%d] = %d is not a class of the model (0..%d); the model "
                           "was not changed",
                           name, i, (int)d->labels[i], m->classes - 1);
    const size_t per = (size_t)d->h * d->w * d->c, count = (size_t)d->count * per;
    for (size_t i = 0; i < count; ++i)
        if (!isfinite(d->images[i]))
            return ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                           "%s: images[%zu] (sample %zu) = %g is not finite; the model was not "
                           "changed",
                           name, i, i / per, (double)d->images[i]);
    return CK_STATUS_SUCCESS;
}

/* The fingerprint a resumed fit compares: CRC-32 of the images and the labels. */
static uint32_t data_crc(const ck_dataset *d) {
    const size_t per = (size_t)d->h * d->w * d->c;
    uint32_t crc = ck_crc32(0, d->images, sizeof(float) * per * (size_t)d->count);
    return ck_crc32(crc, d->labels, sizeof(int32_t) * (size_t)d->count);
}

/* A resumed fit continues the saved run only when everything that decides the data order, the
 * dropout masks and the arithmetic is the same. */
static ck_status check_resume(ck_model *m, const ck_fit_state *f, int batch, uint64_t seed,
                              int count, uint32_t crc) {
    ck_context *ctx = m->ctx;
    if (!f->valid)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "opts->resume: the model has no fit position (load a checkpoint saved "
                       "by ck_model_save during or after ck_model_fit; version 1 files have "
                       "none)");
    if (f->batch != batch)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "opts->batch: %d, the saved run used batches of %d", batch, f->batch);
    if (f->shuffle_seed != seed)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "opts->seed: shuffling seed %llu, the saved run used %llu",
                       (unsigned long long)seed, (unsigned long long)f->shuffle_seed);
    if (f->context_seed != ctx->seed)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "model: the context seed is %llu, the saved run's was %llu (its dropout "
                       "masks; ck_context_set_seed)",
                       (unsigned long long)ctx->seed, (unsigned long long)f->context_seed);
    if (f->precision >= 0 && f->precision != (int)m->precision)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "model: precision %s, the saved run trained in %s (the same bits need "
                       "the same precision; ck_model_set_precision)",
                       ck_precision_name(m->precision),
                       ck_precision_name((ck_precision)f->precision));
    if (f->count != count || f->data_crc != crc)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "train: %d samples (CRC-32 %08x), the saved run trained on %d (CRC-32 "
                       "%08x): not the same training set",
                       count, crc, f->count, f->data_crc);
    const int steps = (count + batch - 1) / batch;
    if (f->epoch < 0 || f->epoch_step < 0 || f->epoch_step > steps || f->seen < 0 ||
        f->correct < 0 || f->correct > f->seen)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "model: fit state epoch %d, step %d of %d is out of range", f->epoch,
                       f->epoch_step, steps);
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_fit_state(const ck_model *m, ck_fit_state *state) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    if (!state)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "state: is NULL");
    *state = m->fit;
    return CK_STATUS_SUCCESS;
}

static ck_status fit(ck_model *m, const ck_dataset *train, const ck_dataset *val,
                     const ck_fit_options *opts, ck_epoch_result *history);

/* Data-parallel (a model with a communicator): every rank must fit the same data in the same
 * order, with batches that leave no rank empty and fit its max_batch; checked before the first
 * step, every rank joining the check whatever its own verdict, so all refuse or none does. */
static ck_status check_ranks(ck_model *m, const ck_fit_options *o, uint64_t seed, int count,
                             uint32_t crc, ck_status own) {
    const ck_comm *c = m->comm;
    const int size = ck_comm_size(c), last = count - (count - 1) / o->batch * o->batch;
    const int shard = (o->batch + size - 1) / size, least = o->batch < last ? o->batch : last;
    /* own: this rank's refusal so far (its samples or validation set), agreed below */
    if (own == CK_STATUS_SUCCESS && shard > m->max_batch)
        own = ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                      "opts->batch: %d over %d ranks needs shards of %d, over this rank's "
                      "max_batch = %d",
                      o->batch, size, shard, m->max_batch);
    else if (own == CK_STATUS_SUCCESS && least < size)
        own = ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                      "opts->batch: a batch of %d samples (of %d, batch %d) leaves a rank of %d "
                      "without a sample",
                      least, count, o->batch, size);
    enum { N = 10 };
    static const char *const what[N] = {
        "train: the data sets (CRC-32 of images and labels)",
        "train: the sample counts",
        "opts->batch",
        "opts->seed (shuffling)",
        "opts->epochs",
        "opts->resume",
        "the context seeds (dropout masks)",
        "the models' step counters (a checkpoint loaded on some ranks only?)",
        "the resumed positions (epoch and step: checkpoints of different steps)",
        "refused"};
    const long long at = o->resume ? (long long)m->fit.epoch << 32 | m->fit.epoch_step : -1;
    long long lo[N] = {crc,
                       count,
                       o->batch,
                       (long long)seed,
                       o->epochs,
                       o->resume,
                       (long long)m->ctx->seed,
                       m->step,
                       at,
                       own != CK_STATUS_SUCCESS};
    long long hi[N];
    memcpy(hi, lo, sizeof hi);
    CK_TRY(ck_comm_min_i64(c, lo, N));
    CK_TRY(ck_comm_max_i64(c, hi, N));
    if (own != CK_STATUS_SUCCESS)
        return own;
    if (hi[N - 1])
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                       "opts: another of the %d ranks refused the fit (its message says why); "
                       "nothing was trained",
                       size);
    for (int i = 0; i < N - 1; ++i)
        if (lo[i] != hi[i])
            return ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                           "%s: differ between the %d ranks; nothing was trained", what[i], size);
    return CK_STATUS_SUCCESS;
}

/* Collective: st of every rank; a rank whose own st failed keeps it, the others fail saying
 * another rank failed `what`. */
static ck_status agree_ok(const ck_model *m, ck_status st, const char *what) {
    long long v = st != CK_STATUS_SUCCESS;
    char why[CK_ERR_LEN];
    snprintf(why, sizeof why, "%s", m->ctx->err);
    const ck_status cst = ck_comm_max_i64(m->comm, &v, 1);
    if (cst != CK_STATUS_SUCCESS)
        return st != CK_STATUS_SUCCESS ? ck_fail_after(m->ctx, cst, why) : cst;
    if (st != CK_STATUS_SUCCESS)
        return st;
    return v ? ck_fail(m->ctx, CK_STATUS_INTERNAL,
                       "fit: another of the %d ranks failed %s (its message says why); the fit "
                       "stopped after epoch %d's steps",
                       ck_comm_size(m->comm), what, m->fit.epoch + 1)
             : CK_STATUS_SUCCESS;
}

/* A callback's stop on any rank stops every rank (they stay in step). A failed agreement (a
 * timed-out collective) fails the fit: it is no stop a caller asked for. */
static ck_status agree_stop(const ck_model *m, int *stop) {
    long long v = *stop != 0;
    CK_TRY(ck_comm_max_i64(m->comm, &v, 1));
    *stop = (int)v;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_fit(ck_model *m, const ck_dataset *train, const ck_dataset *val,
                              const ck_fit_options *opts, ck_epoch_result *history) {
    CK_MODEL_ENTRY(m);
    const int t = ck_threads_enter(m->ctx); /* the callbacks run with it too */
    const ck_fit_state before = m->fit;
    const long long step = m->step;
    const ck_status st = fit(m, train, val, opts, history);
    /* a fit that failed before its first step changed nothing: not its position either */
    if (st != CK_STATUS_SUCCESS && m->step == step)
        m->fit = before;
    ck_threads_leave(t);
    return st;
}

static ck_status fit(ck_model *m, const ck_dataset *train, const ck_dataset *val,
                     const ck_fit_options *opts, ck_epoch_result *history) {
    ck_context *ctx = m->ctx;
    ck_enter(ctx);
    if (!m->built)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    if (m->num_params == 0)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "model: has no trainable parameters (no Conv2D, Dense or "
                       "BatchNormalization layer): nothing to train");
    if (!train)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "train: is NULL");
    ck_status st = check_ds(m, train, "train");
    if (st != CK_STATUS_SUCCESS)
        return st;
    ck_fit_options o = {0, 0, 0, NULL, NULL, NULL, 0};
    if (opts)
        o = *opts;
    /* 0: the defaults, so that a zeroed ck_fit_options with one field set works */
    if (o.epochs == 0)
        o.epochs = 1;
    if (o.batch == 0) /* data-parallel: the global batch, every rank's max_batch */
        o.batch = m->comm ? m->max_batch * ck_comm_size(m->comm) : m->max_batch;
    if (o.epochs < 1)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "opts->epochs: must be >= 1, got %d", o.epochs);
    if (o.batch < 1 || (o.batch > m->max_batch && !m->comm))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "opts->batch: %d must be in [1, max_batch = %d] (build with a larger "
                       "max_batch)",
                       o.batch, m->max_batch);
    const uint32_t crc = data_crc(train);
    uint64_t seed = o.seed ? o.seed : ctx->seed;
    ck_fit_state f = {1,         0,   0, o.batch, train->count,     crc, seed,
                      ctx->seed, 0.0, 0, 0,       (int)m->precision};
    /* a refusal of this rank's own (the resume, its samples, its validation set): with other
     * ranks it is agreed in check_ranks, so none is left waiting in a step */
    ck_status own = CK_STATUS_SUCCESS;
    if (o.resume) {
        if (!o.seed && m->fit.valid)
            seed = f.shuffle_seed = m->fit.shuffle_seed;
        own = check_resume(m, &m->fit, o.batch, seed, train->count, crc);
        f = m->fit;
        f.precision = (int)m->precision; /* recorded from here on (a version 2 file had none) */
    }
    if (own == CK_STATUS_SUCCESS)
        own = samples_check(m, train, "train");
    if (own == CK_STATUS_SUCCESS && val)
        own = check_ds(m, val, "val");
    if (own == CK_STATUS_SUCCESS && val)
        own = samples_check(m, val, "val");
    CK_TRY(m->comm ? check_ranks(m, &o, seed, train->count, crc, own) : own);
    const size_t per = (size_t)m->in_h * m->in_w * m->in_c;
    int32_t *perm = (int32_t *)ck_host_alloc(ctx, sizeof(int32_t) * (size_t)train->count);
    float *xb = (float *)ck_host_alloc(ctx, sizeof(float) * per * (size_t)o.batch);
    int32_t *yb = (int32_t *)ck_host_alloc(ctx, sizeof(int32_t) * (size_t)o.batch);
    if (!perm || !xb || !yb) {
        ck_host_free(ctx, perm);
        ck_host_free(ctx, xb);
        ck_host_free(ctx, yb);
        return ck_fail(ctx, CK_STATUS_ALLOC_FAILED, "fit: out of host memory for batch buffers");
    }
    if (!o.resume)
        m->fit = f; /* a new fit starts at epoch 0, step 0 */
    /* On a GPU the training set stays on the device and each batch is gathered there, when the
     * device has the memory (else the host stages each batch); samples_check passed. */
    ck_gpu_data *dd = NULL;
    if (m->gpu && !m->fit_host_data) {
        const ck_status dst =
            ck_gpu_data_create(m, train->images, train->labels, train->count, &dd);
        /* short of device memory: the host stages. Another failure (a CUDA error) is the fit's,
         * except with other ranks: those are in step with this one, and its next step fails
         * through the step's agreement instead of leaving them waiting */
        if (dst != CK_STATUS_SUCCESS) {
            dd = NULL;
            if (dst == CK_STATUS_ALLOC_FAILED || m->comm)
                ck_clear_error(ctx);
            else
                st = dst;
        }
    }
    const int steps = (train->count + o.batch - 1) / o.batch;
    int stop = 0;
    for (int e = f.epoch; e < o.epochs && !stop && st == CK_STATUS_SUCCESS; ++e) {
        const double t0 = ck_now_s();
        const int first = e == f.epoch ? f.epoch_step : 0;
        /* a failure of this rank's own before a step (the epoch's order, its shard, its batch):
         * alone, the fit's; with other ranks, their step's too (ck_model_step_failed), so they do
         * not wait for this rank in the step's collectives */
        ck_status pre = ck_dataset_shuffle(train->count, seed, (uint64_t)e, perm);
        if (pre == CK_STATUS_SUCCESS && dd)
            pre = ck_gpu_data_order(m, dd, perm);
        if (pre != CK_STATUS_SUCCESS && !m->comm)
            st = pre;
        /* the running sums continue from the saved ones in a resumed epoch */
        double loss = first ? f.loss_sum : 0.0;
        long long correct = first ? f.correct : 0, seen = first ? f.seen : 0, seen_now = 0;
        int s = first;
        for (; s < steps && st == CK_STATUS_SUCCESS && !stop; ++s) {
            const int start = s * o.batch;
            const int n = train->count - start < o.batch ? train->count - start : o.batch;
            int at = 0, nr = n; /* data-parallel: this rank's shard of the batch */
            ck_status own = pre;
            pre = CK_STATUS_SUCCESS; /* an epoch's failure is its first step's */
            if (own == CK_STATUS_SUCCESS && m->comm)
                own = ck_comm_shard(m->comm, n, &at, &nr);
            if (own == CK_STATUS_SUCCESS)
                own = dd ? ck_gpu_data_stage(m, dd, start + at, nr)
                         : ck_dataset_gather(train, perm, start + at, nr, xb, yb);
            ck_step_result r;
            if (own != CK_STATUS_SUCCESS)
                st = m->comm ? ck_model_step_failed(m, own) : own;
            else if (dd)
                st = ck_model_train_step_staged(m, nr, &r);
            else
                st = ck_model_train_step(m, xb, yb, nr, &r);
            if (st != CK_STATUS_SUCCESS) {
                /* the step's "x" is the fit's train set, at this position */
                const char *msg = ck_context_last_error(ctx);
                if (!strncmp(msg, "x: ", 3)) {
                    char rest[CK_ERR_LEN];
                    snprintf(rest, sizeof rest, "%s", msg + 3);
                    ck_fail(ctx, st, "train: epoch %d, step %d: %s", e + 1, s + 1, rest);
                }
                /* the failed step changed nothing: the state still names the step before */
                m->fit = f;
                m->fit.epoch = e;
                m->fit.epoch_step = s;
                m->fit.loss_sum = loss;
                m->fit.correct = correct;
                m->fit.seen = seen;
                break;
            }
            loss += r.loss * n;
            correct += r.correct;
            seen += n;
            seen_now += n;
            m->fit = f;
            m->fit.epoch = e;
            m->fit.epoch_step = s + 1;
            m->fit.loss_sum = loss;
            m->fit.correct = correct;
            m->fit.seen = seen;
            if (o.on_step) {
                const double dt = ck_now_s() - t0;
                ck_fit_progress p = {e + 1,
                                     o.epochs,
                                     s + 1,
                                     steps,
                                     loss / (double)seen,
                                     (double)correct / (double)seen,
                                     (double)seen_now / dt,
                                     dt / (s + 1 - first) * (steps - s - 1)};
                stop = o.on_step(o.user, &p);
            }
            if (m->comm)
                st = agree_stop(m, &stop);
        }
        /* no step left to carry this rank's failure (a resumed epoch with every step done): the
         * ranks are not in a step, so it goes to the epoch's agreement below */
        const int own_only = st == CK_STATUS_SUCCESS && pre != CK_STATUS_SUCCESS;
        if (own_only)
            st = pre;
        /* a failed step and a stop are every rank's already (agreed in the step, agree_stop) */
        if ((st != CK_STATUS_SUCCESS && !(own_only && m->comm)) || (stop && s < steps))
            break; /* an unfinished epoch: no validation, no history entry */
        const double dt = ck_now_s() - t0;
        ck_epoch_result er = {e + 1,
                              seen ? loss / (double)seen : NAN,
                              seen ? (double)correct / (double)seen : NAN,
                              NAN,
                              NAN,
                              dt,
                              (double)seen_now / dt};
        ck_step_result vr = {0.0, 0, 0};
        if (val && st == CK_STATUS_SUCCESS)
            st = ck_model_evaluate(m, val->images, val->labels, val->count, &vr);
        /* each rank validates alone, and a rank may have no validation data: every rank joins
         * the epoch's agreement, all go on or all stop */
        if (m->comm)
            st = agree_ok(m, st, own_only ? "its epoch's set-up" : "its validation");
        if (st != CK_STATUS_SUCCESS)
            break;
        if (val) {
            er.val_loss = vr.loss;
            er.val_accuracy = (double)vr.correct / (double)vr.count;
        }
        /* the epoch is done: the position moves to the next epoch's start */
        m->fit = f;
        m->fit.epoch = e + 1;
        m->fit.epoch_step = 0;
        m->fit.loss_sum = 0.0;
        m->fit.correct = m->fit.seen = 0;
        if (history)
            history[e] = er;
        if (o.on_epoch && o.on_epoch(o.user, &er))
            stop = 1;
        if (m->comm)
            st = agree_stop(m, &stop);
    }
    ck_gpu_data_free(dd);
    ck_host_free(ctx, perm);
    ck_host_free(ctx, xb);
    ck_host_free(ctx, yb);
    return st;
}
