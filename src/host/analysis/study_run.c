/* The order study's runner: trains each variant for several seeds (include/cnnkit/study.h). */
#include "cnnkit/study.h"

#include "internal.h"

#include <math.h>
#include <string.h>
#include <time.h>

/* ---- the runner -------------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct run_ctx {
    const ck_study_options *o;
    ck_study_progress p;
    int stop;
} run_ctx;

static int fit_step(void *user, const ck_fit_progress *fp) {
    run_ctx *rc = (run_ctx *)user;
    if (!rc->o->on_progress)
        return 0;
    rc->p.fit = fp;
    rc->p.finished = NULL;
    if (rc->o->on_progress(rc->o->user, &rc->p))
        rc->stop = 1;
    rc->p.fit = NULL;
    return rc->stop;
}

/* One variant x seed. */
static ck_status one_run(const ck_study_variant *v, const ck_dataset *train, const ck_dataset *test,
                         const ck_study_options *o, run_ctx *rc, ck_study_result *r, char *err,
                         size_t err_len) {
    const double t0 = now_s();
    ck_context *ctx = NULL;
    ck_model *m = NULL;
    ck_epoch_result *hist =
        (ck_epoch_result *)ck_host_calloc(NULL, (size_t)o->epochs, sizeof *hist);
    ck_measurement *ms = (ck_measurement *)ck_host_calloc(NULL, 1, sizeof *ms);
    ck_status st = hist && ms ? CK_STATUS_SUCCESS : CK_STATUS_ALLOC_FAILED;
    const char *what = "out of memory";
    if (st == CK_STATUS_SUCCESS) {
        st = ck_context_create(&ctx, o->device, 0, r->seed);
        what = "context";
    }
    if (st == CK_STATUS_SUCCESS) {
        st = ck_model_create(ctx, &m);
        for (int i = 0; st == CK_STATUS_SUCCESS && i < v->count; ++i) {
            ck_layer_desc d = v->layers[i];
            if (d.type == CK_LAYER_BATCHNORM && o->bn_momentum > 0.0f)
                d.momentum = o->bn_momentum;
            st = ck_model_add(m, &d);
        }
        if (st == CK_STATUS_SUCCESS && o->optimizer)
            st = ck_model_set_optimizer(m, o->optimizer);
        if (st == CK_STATUS_SUCCESS)
            st = ck_model_build(m, train->h, train->w, train->c, o->batch);
        what = "model";
    }
    if (st == CK_STATUS_SUCCESS) {
        ck_fit_options fo = {o->epochs, o->batch, r->seed, fit_step, NULL, rc, 0};
        st = ck_model_fit(m, train, NULL, &fo, hist);
        what = "training";
    }
    int epochs_done = 0;
    for (int e = 0; st == CK_STATUS_SUCCESS && e < o->epochs; ++e)
        if (hist[e].epoch > 0)
            epochs_done = e + 1;
    if (st == CK_STATUS_SUCCESS && !rc->stop && epochs_done == 0) {
        rc->stop = 1; /* stopped inside the first epoch */
    }
    if (st == CK_STATUS_SUCCESS && !rc->stop) {
        double seen = 0.0, secs = 0.0;
        for (int e = 0; e < epochs_done; ++e) {
            seen += hist[e].images_per_s * hist[e].seconds;
            secs += hist[e].seconds;
        }
        r->images_per_s = secs > 0 ? seen / secs : NAN;
        r->train_running_accuracy = hist[epochs_done - 1].accuracy;
        ck_step_result sr;
        st = ck_model_evaluate(m, test->images, test->labels, test->count, &sr);
        what = "evaluation on the test set";
        if (st == CK_STATUS_SUCCESS) {
            r->test_accuracy = (double)sr.correct / sr.count;
            r->test_loss = sr.loss;
        }
        int ne = o->train_eval;
        if (ne == 0)
            ne = train->count < test->count ? train->count : test->count;
        if (ne > train->count)
            ne = train->count;
        r->train_accuracy = NAN;
        if (st == CK_STATUS_SUCCESS && ne > 0) {
            st = ck_model_evaluate(m, train->images, train->labels, ne, &sr);
            what = "evaluation on the training set";
            if (st == CK_STATUS_SUCCESS)
                r->train_accuracy = (double)sr.correct / sr.count;
        }
        r->gap = r->train_accuracy - r->test_accuracy;
        if (st == CK_STATUS_SUCCESS && o->measure_batches >= 0) {
            ck_measure_options mo = {0, o->measure_batches, o->batch, r->seed};
            st = ck_model_measure(m, train, &mo, ms);
            what = "measurement";
        }
        if (st == CK_STATUS_SUCCESS && o->measure_batches >= 0) {
            r->n_bn = ms->n_bn < CK_STUDY_MAX_MEASURE ? ms->n_bn : CK_STUDY_MAX_MEASURE;
            for (int k = 0; k < r->n_bn; ++k) {
                r->bn_layer[k] = ms->bn[k].layer;
                r->bn_shift[k] = ms->bn[k].ratio;
                r->bn_shift_moving[k] = ms->bn[k].ratio_moving;
            }
            r->n_dropout =
                ms->n_dropout < CK_STUDY_MAX_MEASURE ? ms->n_dropout : CK_STUDY_MAX_MEASURE;
            for (int k = 0; k < r->n_dropout; ++k) {
                r->dropout_layer[k] = ms->dropout[k].layer;
                r->dropout_zeroed[k] = ms->dropout[k].zeroed;
            }
        }
    }
    if (st != CK_STATUS_SUCCESS)
        ck_errbuf_printf(err, err_len, "variant %s, seed %llu: %s: %s", v->name,
                         (unsigned long long)r->seed, what,
                         ctx ? ck_context_last_error(ctx) : ck_status_string(st));
    r->seconds = now_s() - t0;
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    ck_host_free(NULL, hist);
    ck_host_free(NULL, ms);
    return st;
}

CK_API ck_status ck_study_run(const ck_study_variant *variants, int nv, const ck_dataset *train,
                              const ck_dataset *test, const ck_study_options *opts,
                              ck_study_result *results, int cap, int *n_results, char *err,
                              size_t err_len) {
    ck_errbuf_printf(err, err_len, "%s", "");
    if (!variants || nv < 1 || !train || !test || !results || !n_results || cap < 1) {
        ck_errbuf_printf(err, err_len, "%s",
                         !variants    ? "variants: is NULL"
                         : nv < 1     ? "nv: must be >= 1"
                         : !train     ? "train: is NULL"
                         : !test      ? "test: is NULL"
                         : !results   ? "results: is NULL"
                         : !n_results ? "n_results: is NULL"
                                      : "cap: must be >= 1");
        return CK_STATUS_BAD_PARAM;
    }
    ck_study_options o = {CK_DEVICE_CPU, 5, 1, 1, 128, NULL, 0, 0.0f, 0, NULL, NULL};
    if (opts)
        o = *opts;
    if (o.seeds == 0)
        o.seeds = 5;
    if (o.first_seed == 0)
        o.first_seed = 1;
    if (o.epochs == 0)
        o.epochs = 1;
    if (o.batch == 0)
        o.batch = 128;
    if (o.measure_batches == 0)
        o.measure_batches = 4;
    if (o.seeds < 1 || o.epochs < 1 || o.batch < 1 || o.measure_batches < -1 || o.train_eval < -1) {
        ck_errbuf_printf(
            err, err_len,
            "opts: seeds (%d), epochs (%d), batch (%d) must be >= 1, measure_batches (%d) "
            "and train_eval (%d) >= -1, bn_momentum (%g) in [0, 1)",
            o.seeds, o.epochs, o.batch, o.measure_batches, o.train_eval, (double)o.bn_momentum);
        return CK_STATUS_BAD_PARAM;
    }
    if (o.device != CK_DEVICE_CPU && o.device != CK_DEVICE_CUDA) {
        ck_errbuf_printf(err, err_len, "opts->device: must be CK_DEVICE_CPU or CK_DEVICE_CUDA");
        return CK_STATUS_BAD_PARAM;
    }
    int runs = 0;
    for (int i = 0; i < nv; ++i) {
        if (!variants[i].layers || variants[i].count < 1) {
            ck_errbuf_printf(err, err_len, "variants[%d]: has no layers", i);
            return CK_STATUS_BAD_PARAM;
        }
        if (variants[i].equivalent_to < 0)
            runs += o.seeds;
    }
    if (cap < runs) {
        ck_errbuf_printf(err, err_len, "cap: %d results do not fit %d runs", cap, runs);
        return CK_STATUS_BAD_PARAM;
    }
    if (train->count < 1 || test->count < 1 || !train->images || !test->images) {
        ck_errbuf_printf(err, err_len, "%s: is empty",
                         train->count < 1 || !train->images ? "train" : "test");
        return CK_STATUS_BAD_PARAM;
    }
    *n_results = 0;
    run_ctx rc;
    memset(&rc, 0, sizeof rc);
    rc.o = &o;
    rc.p.runs = runs;
    ck_status st = CK_STATUS_SUCCESS;
    for (int i = 0; i < nv && st == CK_STATUS_SUCCESS && !rc.stop; ++i) {
        if (variants[i].equivalent_to >= 0)
            continue;
        for (int s = 0; s < o.seeds && st == CK_STATUS_SUCCESS && !rc.stop; ++s) {
            ck_study_result r;
            memset(&r, 0, sizeof r);
            r.variant = i;
            r.seed = o.first_seed + (uint64_t)s;
            rc.p.variant = i;
            rc.p.seed = r.seed;
            rc.p.run = *n_results + 1;
            st = one_run(&variants[i], train, test, &o, &rc, &r, err, err_len);
            if (st != CK_STATUS_SUCCESS || rc.stop)
                break;
            results[(*n_results)++] = r;
            if (o.on_progress) {
                rc.p.fit = NULL;
                rc.p.finished = &r;
                if (o.on_progress(o.user, &rc.p))
                    rc.stop = 1;
                rc.p.finished = NULL;
            }
        }
    }
    return st;
}
