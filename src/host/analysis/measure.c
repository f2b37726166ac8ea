/* ck_model_measure: the measured BN variance shift and the effective dropout rates of a model on
 * data (see include/cnnkit/check.h for what is measured and how it is defined).
 *
 * The measurement runs on a twin: an unplanned CPU copy of the model (same layer list, weights,
 * moving statistics and step), so every user layer's input and output is stored after a forward
 * pass whatever the planner does with the model itself (the planner's rewrites are exact, so the
 * numbers are the model's), the model is left untouched, and models on CUDA contexts can be
 * measured too. Where the twin's tensors of a user layer live is looked up in one function,
 * layer_tensor(), through the planner's accessors (ck_model_layer_input / _output). */
#include "cnnkit/check.h"
#include "cnnkit/data.h"
#include "model_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the one place that maps a user layer to a stored tensor ------------------------------ */

/* The input (want_input != 0) or the output of user layer `layer` after a forward pass of the
 * twin on x; NULL when the model does not store it (never for the unplanned twin). */
static const float *layer_tensor(const ck_model *twin, int layer, const float *x, int want_input) {
    return want_input ? ck_model_layer_input(twin, layer, x) : ck_model_layer_output(twin, layer);
}

/* The BN layer's moving mean (var = 0) or variance (var = 1) in the twin (channels floats; the
 * twin is ours: the measurement writes converged values into it). */
static float *bn_moving(ck_model *twin, int layer, int var) {
    const int k = ck_model_layer_node(twin, layer);
    if (k < 0 || twin->nodes[k].type != CK_NODE_BN)
        return NULL;
    return twin->fixed + (var ? twin->nodes[k].p_mv : twin->nodes[k].p_mm);
}

/* ---- helpers -------------------------------------------------------------------------------- */

static int zero_preserving(ck_activation a) {
    return a != CK_ACT_SIGMOID && a != CK_ACT_SOFTMAX;
}

/* Per-channel biased variance of an NHWC tensor (n samples of hw x c), added to acc[c]; the
 * per-channel mean added to mean_acc[c] (optional). */
static void add_channel_var(const float *t, int n, int hw, int c, double *acc, double *mean_acc,
                            double *tmp_mean) {
    const size_t rows = (size_t)n * (size_t)hw;
    for (int k = 0; k < c; ++k)
        tmp_mean[k] = 0.0;
    for (size_t r = 0; r < rows; ++r)
        for (int k = 0; k < c; ++k)
            tmp_mean[k] += t[r * (size_t)c + k];
    for (int k = 0; k < c; ++k) {
        tmp_mean[k] /= (double)rows;
        if (mean_acc)
            mean_acc[k] += tmp_mean[k];
    }
    double *ss = tmp_mean + c;
    for (int k = 0; k < c; ++k)
        ss[k] = 0.0;
    for (size_t r = 0; r < rows; ++r)
        for (int k = 0; k < c; ++k) {
            const double d = t[r * (size_t)c + k] - tmp_mean[k];
            ss[k] += d * d;
        }
    for (int k = 0; k < c; ++k)
        acc[k] += ss[k] / (double)rows;
}

/* What consumes dropout layer dl: the pooling layer reached through zero-preserving activations
 * (its index), or -1. acts/nacts: the activation layers in between. A Rescaling by s > 0 without
 * offset between keeps every zero, sign and maximum (check.c's CK003 reads through it too), so
 * the count is the same without it (docs/derivations.md §8). */
static int consuming_pool(const ck_model *m, int dl, int *acts, int *nacts) {
    *nacts = 0;
    for (int i = dl + 1; i < m->num_layers; ++i) {
        const ck_layer_desc *d = &m->layers[i];
        if (d->type == CK_LAYER_MAXPOOL2D || d->type == CK_LAYER_AVGPOOL2D)
            return i;
        if (d->type == CK_LAYER_ACTIVATION && zero_preserving(d->activation) && *nacts < 8) {
            acts[(*nacts)++] = i;
            continue;
        }
        if (d->type == CK_LAYER_RESCALING && d->scale > 0.0f && d->offset == 0.0f)
            continue;
        return -1;
    }
    return -1;
}

typedef struct drop_acc {
    long long zeroed, counted;
    double expected; /* sum over the counted values of their probability to be zeroed */
} drop_acc;

/* One batch of dropout layer dl: in = the dropout input, out = its training-mode output. The
 * probability that a counted value is zeroed follows from the signs of its window's inputs
 * (docs/derivations.md §4, §5): a dropped unit is 0 after the activations (f(0) = 0) and a kept
 * one keeps its sign, so a max is 0 exactly when every positive input is dropped (rate^J), or,
 * with none positive, when any of the n negative ones is (1 - (1-rate)^n); an average when every
 * nonzero input is dropped; a channel of SpatialDropout2D with probability rate. */
static void count_dropout(const ck_model *m, int dl, int pool, const int *acts, int nacts,
                          const float *in, const float *out, int n, drop_acc *acc) {
    int h, w, c;
    ck_model_layer_shape(m, dl, &h, &w, &c);
    const double q = m->layers[dl].rate;
    const int spatial = m->layers[dl].type == CK_LAYER_SPATIAL_DROPOUT2D;
    if (pool < 0) {
        const size_t count = (size_t)n * h * w * c;
        for (size_t i = 0; i < count; ++i)
            if (in[i] != 0.0f) {
                acc->counted++;
                acc->zeroed += out[i] == 0.0f;
                acc->expected += q;
            }
        return;
    }
    const ck_layer_desc *pd = &m->layers[pool];
    const int kh = pd->kernel_h, kw = pd->kernel_w;
    const int sh = pd->stride_h > 0 ? pd->stride_h : kh, sw = pd->stride_w > 0 ? pd->stride_w : kw;
    int oh, ow, oc;
    ck_model_layer_shape(m, pool, &oh, &ow, &oc);
    int pt = 0, pl = 0;
    if (pd->padding == CK_PADDING_SAME) {
        const int th = (oh - 1) * sh + kh - h, tw = (ow - 1) * sw + kw - w;
        pt = th > 0 ? th / 2 : 0;
        pl = tw > 0 ? tw / 2 : 0;
    }
    const int is_max = pd->type == CK_LAYER_MAXPOOL2D;
    for (int s = 0; s < n; ++s)
        for (int y = 0; y < oh; ++y)
            for (int x = 0; x < ow; ++x)
                for (int k = 0; k < c; ++k) {
                    double with = is_max ? -INFINITY : 0.0, without = with;
                    int inputs = 0, positive = 0, nonzero = 0;
                    for (int dy = 0; dy < kh; ++dy)
                        for (int dx = 0; dx < kw; ++dx) {
                            const int iy = y * sh + dy - pt, ix = x * sw + dx - pl;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                continue;
                            const size_t at = (((size_t)s * h + iy) * w + ix) * c + k;
                            double a = in[at], b = out[at];
                            for (int j = 0; j < nacts; ++j) {
                                const ck_layer_desc *ad = &m->layers[acts[j]];
                                a = ck_act_eval_ref(ad->activation, a, ad->alpha);
                                b = ck_act_eval_ref(ad->activation, b, ad->alpha);
                            }
                            ++inputs;
                            positive += a > 0.0;
                            nonzero += a != 0.0;
                            if (is_max) {
                                without = a > without ? a : without;
                                with = b > with ? b : with;
                            } else {
                                without += a;
                                with += b;
                            }
                        }
                    if (without != 0.0) {
                        acc->counted++;
                        acc->zeroed += with == 0.0;
                        acc->expected += spatial    ? q
                                         : !is_max  ? pow(q, nonzero)
                                         : positive ? pow(q, positive)
                                                    : 1.0 - pow(1.0 - q, inputs);
                    }
                }
}

/* The unplanned CPU twin of m with m's weights and step; returns a status with the message on
 * m's context. */
static ck_status make_twin(ck_model *m, int batch, ck_context **tctx, ck_model **twin) {
    ck_context *ctx = m->ctx;
    *tctx = NULL;
    *twin = NULL;
    ck_status st = ck_context_create(tctx, CK_DEVICE_CPU, 0, ctx->seed);
    if (st != CK_STATUS_SUCCESS)
        return ck_fail(ctx, st, "measure: cannot create a CPU context for the measurement copy");
    /* The copy lives on its own context: it runs with the caller's threads and gets the caller's
     * host headroom, so the cap still holds. */
    (*tctx)->cpu_threads = ctx->cpu_threads;
    if (ctx->host_limit)
        (*tctx)->host_limit =
            ctx->host_live < ctx->host_limit ? ctx->host_limit - ctx->host_live : 1;
    size_t nw = 0;
    float *w = NULL;
    st = ck_model_create(*tctx, twin);
    for (int i = 0; st == CK_STATUS_SUCCESS && i < m->num_layers; ++i)
        st = ck_model_add(*twin, &m->layers[i]);
    if (st == CK_STATUS_SUCCESS)
        st = ck_model_set_planning(*twin, 0);
    if (st == CK_STATUS_SUCCESS)
        st = ck_model_build(*twin, m->in_h, m->in_w, m->in_c, batch);
    if (st == CK_STATUS_SUCCESS)
        st = ck_model_get_weights(m, NULL, 0, &nw);
    if (st == CK_STATUS_SUCCESS) {
        const size_t bytes = sizeof(float) * (nw ? nw : 1);
        w = (float *)ck_host_alloc(ctx, bytes);
        st = w ? ck_model_get_weights(m, w, nw, NULL) : ck_host_oom(ctx, "measure: weights", bytes);
    }
    if (st == CK_STATUS_SUCCESS)
        st = ck_model_set_weights(*twin, w, nw);
    ck_host_free(ctx, w);
    if (st != CK_STATUS_SUCCESS) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s",
                 ck_context_last_error(*tctx)[0] ? ck_context_last_error(*tctx)
                                                 : ck_context_last_error(ctx));
        ck_fail(ctx, st, "measure: cannot build the measurement copy: %s", msg);
        ck_model_destroy(*twin);
        ck_context_destroy(*tctx);
        *twin = NULL;
        *tctx = NULL;
        return st;
    }
    (*twin)->step = m->step;
    return CK_STATUS_SUCCESS;
}

/* Which output channels of each layer l > src are computed from layer src's output: dep + off[l]
 * (lshape[l].c bytes each). A weight layer or a softmax mixes all channels, Concatenate places
 * its inputs' channels side by side, Flatten takes each feature from one channel (NHWC), every
 * other layer keeps channels apart (an Add sums the same channel of its inputs). */
static void channel_deps(const ck_model *m, int src, unsigned char *dep, const size_t *off) {
    memset(dep + off[src], 1, (size_t)m->lshape[src].c);
    for (int l = src + 1; l < m->num_layers; ++l) {
        const ck_layer_desc *d = &m->layers[l];
        unsigned char *o = dep + off[l];
        const int oc = m->lshape[l].c, nin = d->num_inputs ? d->num_inputs : 1;
        memset(o, 0, (size_t)oc);
        const int mixes = d->type == CK_LAYER_CONV2D || d->type == CK_LAYER_DENSE ||
                          (d->type == CK_LAYER_ACTIVATION && d->activation == CK_ACT_SOFTMAX);
        int at = 0, any = 0;
        for (int k = 0; k < nin; ++k) {
            const int i = d->num_inputs ? d->inputs[k] : l - 1;
            const int ic = i >= 0 ? m->lshape[i].c : m->in_c;
            if (i >= src)
                for (int f = 0; f < oc; ++f) {
                    const int ch = d->type == CK_LAYER_CONCATENATE ? f - at
                                   : d->type == CK_LAYER_FLATTEN   ? f % ic
                                                                   : f;
                    if (ch >= 0 && ch < ic && dep[off[i] + (size_t)ch])
                        o[f] = 1, any = 1;
                }
            at += ic;
        }
        if (mixes && any)
            memset(o, 1, (size_t)oc);
    }
}

/* Links BN layers to the dropouts the static check says reach them (CK001 / CK002) and how, and
 * sets in keep (CK_MEASURE_MAX x maxc) the keep probability 1 - rate of the dropout reaching each
 * BN input channel, 0 for channels none reaches: Eq. 8 and its ceiling speak of those (a
 * Concatenate places others beside them, or another dropout's). The shift is compounded when two
 * dropouts reach one channel (an earlier one on any path, §1). */
static ck_status link_dropouts(const ck_model *m, ck_measurement *r, float *keep, int maxc) {
    ck_context *ctx = m->ctx;
    size_t off[CK_MAX_LAYERS + 1];
    off[0] = 0;
    for (int l = 0; l < m->num_layers; ++l)
        off[l + 1] = off[l] + (size_t)m->lshape[l].c;
    int drops[CK_MAX_LAYERS], nd = 0;
    for (int l = 0; l < m->num_layers; ++l)
        if ((m->layers[l].type == CK_LAYER_DROPOUT ||
             m->layers[l].type == CK_LAYER_SPATIAL_DROPOUT2D) &&
            m->layers[l].rate > 0.0f)
            drops[nd++] = l;
    const int nb = r->n_bn < CK_MEASURE_MAX ? r->n_bn : CK_MEASURE_MAX;
    /* at[(k * nb + b) * maxc + ch]: dropout k reaches channel ch of BN b's input */
    const size_t bytes = off[m->num_layers] + (size_t)(nd ? nd : 1) * (nb ? nb : 1) * maxc;
    unsigned char *dep = (unsigned char *)ck_host_alloc(ctx, bytes);
    if (!dep)
        return ck_host_oom(ctx, "measure: channel map", bytes);
    unsigned char *at = dep + off[m->num_layers];
    for (int k = 0; k < nd; ++k) {
        channel_deps(m, drops[k], dep, off);
        for (int b = 0; b < nb; ++b) {
            unsigned char *o = at + ((size_t)k * nb + b) * maxc;
            const int bl = r->bn[b].layer;
            if (bl > drops[k])
                memcpy(o, dep + off[bl], (size_t)r->bn[b].channels);
            else
                memset(o, 0, (size_t)r->bn[b].channels);
        }
    }
    int predictable[CK_MEASURE_MAX]; /* every linked dropout commutes to the BN, no offset */
    for (int b = 0; b < nb; ++b)
        predictable[b] = 1;
    for (int k = 0; k < nd; ++k) {
        const int dl = drops[k];
        ck_drop_reach reach[8];
        const int nr = ck_check_dropout_reach(m->layers, m->num_layers, dl, reach, 8);
        for (int e = 0; e < nr; ++e)
            for (int b = 0; b < nb; ++b) {
                ck_bn_shift *s = &r->bn[b];
                if (s->layer != reach[e].bn)
                    continue;
                float *kb = keep + (size_t)b * maxc;
                if (s->n_dropouts == 0) {
                    s->dropout_layer = dl;
                    s->direct = 1;
                    s->path = CK_DROP_PATH_COMMUTES;
                    s->compounded = 0;
                    s->reached = 0;
                    memset(kb, 0, sizeof(float) * (size_t)s->channels);
                }
                if (s->n_dropouts < CK_BN_DROPOUTS_MAX)
                    s->dropout_layers[s->n_dropouts] = dl;
                ++s->n_dropouts;
                s->direct &= reach[e].weights == 0;
                if (reach[e].kind > s->path)
                    s->path = reach[e].kind;
                predictable[b] &= reach[e].kind == CK_DROP_PATH_COMMUTES && !reach[e].shifted;
                const unsigned char *mine = at + ((size_t)k * nb + b) * maxc;
                for (int ch = 0; ch < s->channels; ++ch) {
                    if (!mine[ch])
                        continue;
                    s->reached += kb[ch] == 0.0f;
                    kb[ch] = 1.0f - m->layers[dl].rate;
                    for (int j = 0; j < nd; ++j)
                        s->compounded |= j != k && at[((size_t)j * nb + b) * maxc + ch];
                }
            }
    }
    /* after an offset the BN input's mean is not the one Eq. 8 takes: no prediction; the
     * ceiling itself is the mean keep probability over the channels measured (set there) */
    for (int b = 0; b < nb; ++b)
        if (r->bn[b].n_dropouts && predictable[b] && !r->bn[b].compounded)
            r->bn[b].ceiling = 1.0;
    ck_host_free(ctx, dep);
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_measure(ck_model *m, const ck_dataset *data,
                                  const ck_measure_options *opts, ck_measurement *out) {
    CK_MODEL_ENTRY(m);
    ck_context *ctx = m->ctx;
    ck_enter(ctx);
    if (!m->built)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    if (!data || !out)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "%s: is NULL", data ? "out" : "data");
    if (data->count < 1 || !data->images || !data->labels)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "data: is empty");
    if (data->h != m->in_h || data->w != m->in_w || data->c != m->in_c)
        return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                       "data: images are %dx%dx%d, the model input is %dx%dx%d", data->h, data->w,
                       data->c, m->in_h, m->in_w, m->in_c);
    ck_measure_options o = {0, 0, 0, 0};
    if (opts)
        o = *opts;
    if (o.train_batches < 0 || o.batches < 0 || o.batch < 0)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "opts: train_batches (%d), batches (%d) and batch (%d) must be >= 0",
                       o.train_batches, o.batches, o.batch);
    if (o.batch > m->max_batch)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "opts->batch: %d is larger than the model's max_batch %d", o.batch,
                       m->max_batch);
    if (o.train_batches > 0 && data->classes > m->classes)
        return ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH, "data: has %d classes, the model outputs %d",
                       data->classes, m->classes);
    const int batches = o.batches ? o.batches : 4;
    int batch = o.batch ? o.batch : m->max_batch;
    if (batch > data->count)
        batch = data->count;
    const uint64_t seed = o.seed ? o.seed : ctx->seed;
    const size_t per = (size_t)m->in_h * m->in_w * m->in_c;
    int32_t *perm = (int32_t *)ck_host_alloc(ctx, sizeof(int32_t) * (size_t)data->count);
    float *xb = (float *)ck_host_alloc(ctx, sizeof(float) * per * (size_t)batch);
    int32_t *yb = (int32_t *)ck_host_alloc(ctx, sizeof(int32_t) * (size_t)batch);
    ck_measurement *r = (ck_measurement *)ck_host_calloc(ctx, 1, sizeof *r);
    int maxc = 1;
    for (int i = 0; i < m->num_layers; ++i)
        if (m->lshape[i].c > maxc)
            maxc = m->lshape[i].c;
    /* per BN layer: Var_train and Var_inference sums per channel */
    double *vtr = NULL, *vin = NULL, *vins = NULL, *mtr = NULL, *min = NULL,
           *tmp = (double *)ck_host_alloc(ctx, sizeof(double) * 2 * (size_t)maxc);
    drop_acc *dacc = NULL;
    float *keep = NULL; /* per BN channel: 1 - the rate of the dropout reaching it, 0 none */
    int nbn = 0, ndrop = 0;
    for (int i = 0; i < m->num_layers; ++i) {
        nbn += m->layers[i].type == CK_LAYER_BATCHNORM;
        ndrop += m->layers[i].type == CK_LAYER_DROPOUT ||
                 m->layers[i].type == CK_LAYER_SPATIAL_DROPOUT2D;
    }
    vtr = (double *)ck_host_calloc(ctx, (size_t)(nbn ? nbn : 1) * maxc, sizeof(double));
    vin = (double *)ck_host_calloc(ctx, (size_t)(nbn ? nbn : 1) * maxc, sizeof(double));
    vins = (double *)ck_host_calloc(ctx, (size_t)(nbn ? nbn : 1) * maxc, sizeof(double));
    mtr = (double *)ck_host_calloc(ctx, (size_t)(nbn ? nbn : 1) * maxc, sizeof(double));
    min = (double *)ck_host_calloc(ctx, (size_t)(nbn ? nbn : 1) * maxc, sizeof(double));
    dacc = (drop_acc *)ck_host_calloc(ctx, (size_t)(ndrop ? ndrop : 1), sizeof *dacc);
    keep = (float *)ck_host_alloc(ctx, sizeof(float) * (size_t)CK_MEASURE_MAX * maxc);
    ck_context *tctx = NULL;
    ck_model *twin = NULL;
    ck_status st = CK_STATUS_SUCCESS;
    if (!perm || !xb || !yb || !r || !tmp || !vtr || !vin || !vins || !mtr || !min || !dacc ||
        !keep)
        st = ck_fail(ctx, CK_STATUS_ALLOC_FAILED, "measure: out of host memory");
    if (st == CK_STATUS_SUCCESS)
        st = ck_dataset_shuffle(data->count, seed, 0x6d65617375726500ull, perm);
    int pos = 0; /* next sample in perm, wrapping */
#define NEXT_BATCH()                                                                               \
    do {                                                                                           \
        if (pos + batch > data->count)                                                             \
            pos = 0;                                                                               \
        st = ck_dataset_gather(data, perm, pos, batch, xb, yb);                                    \
        pos += batch;                                                                              \
    } while (0)
    for (int b = 0; b < o.train_batches && st == CK_STATUS_SUCCESS; ++b) {
        NEXT_BATCH();
        ck_step_result sr;
        if (st == CK_STATUS_SUCCESS)
            st = ck_model_train_step(m, xb, yb, batch, &sr);
    }
    if (st == CK_STATUS_SUCCESS)
        st = make_twin(m, batch, &tctx, &twin);
    if (st == CK_STATUS_SUCCESS) {
        r->train_steps = o.train_batches;
        r->model_step = m->step;
        r->batches = batches;
        r->batch = batch;
        r->n_bn = nbn;
        r->n_dropout = ndrop;
        int ib = 0, id = 0;
        for (int i = 0; i < m->num_layers; ++i) {
            const ck_layer_desc *d = &m->layers[i];
            if (d->type == CK_LAYER_BATCHNORM && ib < CK_MEASURE_MAX) {
                ck_bn_shift *s = &r->bn[ib++];
                s->layer = i;
                s->channels = s->reached = m->lshape[i].c;
                for (int ch = 0; ch < s->channels; ++ch) /* no dropout: every channel */
                    keep[(size_t)(ib - 1) * maxc + ch] = 1.0f;
                s->dropout_layer = -1;
                s->n_dropouts = 0;
                s->path = -1;
                s->ceiling = s->predicted = NAN;
                s->moving_init_weight = pow((double)d->momentum, (double)m->step);
            } else if ((d->type == CK_LAYER_DROPOUT || d->type == CK_LAYER_SPATIAL_DROPOUT2D) &&
                       id < CK_MEASURE_MAX) {
                ck_dropout_effect *e = &r->dropout[id++];
                e->layer = i;
                e->spatial = d->type == CK_LAYER_SPATIAL_DROPOUT2D;
                e->rate = d->rate;
                int acts[8], na;
                e->pool_layer = consuming_pool(m, i, acts, &na);
                e->pool_window = 1;
                if (e->pool_layer >= 0)
                    e->pool_window =
                        m->layers[e->pool_layer].kernel_h * m->layers[e->pool_layer].kernel_w;
            }
        }
        st = link_dropouts(m, r, keep, maxc);
        /* the stored moving variances, before the twin's training-mode pass updates them */
        float *mvs = (float *)ck_host_alloc(ctx, sizeof(float) * (size_t)(nbn ? nbn : 1) * maxc);
        if (!mvs && st == CK_STATUS_SUCCESS)
            st = ck_fail(ctx, CK_STATUS_ALLOC_FAILED, "measure: out of host memory");
        for (int b = 0; st == CK_STATUS_SUCCESS && b < nbn && b < CK_MEASURE_MAX; ++b) {
            const float *mv = bn_moving(twin, r->bn[b].layer, 1);
            if (!mv)
                st = ck_fail(ctx, CK_STATUS_INTERNAL, "measure: no moving variance for layer %d",
                             r->bn[b].layer);
            else
                memcpy(mvs + (size_t)b * maxc, mv, sizeof(float) * (size_t)r->bn[b].channels);
        }
        const int nb = nbn < CK_MEASURE_MAX ? nbn : CK_MEASURE_MAX;
        const int nd = ndrop < CK_MEASURE_MAX ? ndrop : CK_MEASURE_MAX;
        /* the same batches three times: 0 inference mode on the stored statistics, 1 training
         * mode (BN input statistics, dropout counts), 2 inference mode after the moving
         * statistics are set to what pass 1 measured (the converged values) */
        for (int pass = 0; pass < 3 && st == CK_STATUS_SUCCESS; ++pass) {
            double *acc = pass == 0 ? vins : pass == 1 ? vtr : vin;
            if (pass == 2)
                for (int k = 0; k < nb; ++k) {
                    float *mm = bn_moving(twin, r->bn[k].layer, 0);
                    float *mv = bn_moving(twin, r->bn[k].layer, 1);
                    for (int ch = 0; ch < r->bn[k].channels; ++ch) {
                        mm[ch] = (float)(mtr[(size_t)k * maxc + ch] / batches);
                        mv[ch] = (float)(vtr[(size_t)k * maxc + ch] / batches);
                    }
                }
            pos = o.train_batches * batch; /* the batches after the training ones */
            for (int b = 0; b < batches && st == CK_STATUS_SUCCESS; ++b) {
                NEXT_BATCH();
                if (st != CK_STATUS_SUCCESS)
                    break;
                twin->step = m->step + b; /* a fresh dropout mask per batch */
                st = ck_model_forward_nodes(twin, xb, batch, pass == 1, twin->num_nodes);
                if (st != CK_STATUS_SUCCESS) {
                    char msg[512];
                    snprintf(msg, sizeof msg, "%s", ck_context_last_error(tctx));
                    ck_fail(ctx, st, "measure: forward pass: %s", msg);
                    break;
                }
                for (int k = 0; k < nb; ++k) {
                    const int li = r->bn[k].layer;
                    const float *in = layer_tensor(twin, li, xb, 1);
                    if (!in) {
                        st = ck_fail(ctx, CK_STATUS_INTERNAL,
                                     "measure: the input of layer %d is not stored", li);
                        break;
                    }
                    const ck_shape3 *sh = &m->lshape[li];
                    add_channel_var(in, batch, sh->h * sh->w, sh->c, acc + (size_t)k * maxc,
                                    pass == 1   ? mtr + (size_t)k * maxc
                                    : pass == 2 ? min + (size_t)k * maxc
                                                : NULL,
                                    tmp);
                }
                for (int k = 0; pass == 1 && st == CK_STATUS_SUCCESS && k < nd; ++k) {
                    const ck_dropout_effect *e = &r->dropout[k];
                    const float *in = layer_tensor(twin, e->layer, xb, 1);
                    const float *outp = layer_tensor(twin, e->layer, xb, 0);
                    if (!in || !outp) {
                        st = ck_fail(ctx, CK_STATUS_INTERNAL,
                                     "measure: the tensors of layer %d are not stored", e->layer);
                        break;
                    }
                    int acts[8], na;
                    consuming_pool(m, e->layer, acts, &na);
                    count_dropout(m, e->layer, e->pool_layer, acts, na, in, outp, batch, &dacc[k]);
                }
            }
        }
        for (int k = 0; st == CK_STATUS_SUCCESS && k < nb; ++k) {
            ck_bn_shift *s = &r->bn[k];
            const double *tr = vtr + (size_t)k * maxc, *inf = vin + (size_t)k * maxc;
            const double *infs = vins + (size_t)k * maxc;
            const float *mv = mvs + (size_t)k * maxc;
            double sum = 0, lo = INFINITY, hi = -INFINITY, msum = 0, mlo = INFINITY,
                   mhi = -INFINITY, str = 0, sin = 0, sins = 0, smv = 0;
            int used = 0, mused = 0;
            const int predict = isfinite(s->ceiling); /* Eq. 8 holds (§1) */
            double psum = 0.0, csum = 0.0;
            for (int ch = 0; ch < s->channels; ++ch) {
                const double p = keep[(size_t)k * maxc + ch];
                if (p == 0.0)
                    continue;
                const double a = inf[ch] / batches, t = tr[ch] / batches;
                const double as = infs[ch] / batches;
                str += t;
                sin += a;
                sins += as;
                smv += mv[ch];
                if (mv[ch] > 0.0f) {
                    const double qm = as / (double)mv[ch];
                    msum += qm;
                    mlo = fmin(mlo, qm);
                    mhi = fmax(mhi, qm);
                    ++mused;
                }
                if (!(t > 0.0))
                    continue; /* a dead channel (constant input): no ratio */
                const double q = a / t;
                if (predict) {
                    const double cm = min[(size_t)k * maxc + ch] / batches;
                    psum += a / ((cm * cm + a) / p - cm * cm);
                    csum += p;
                }
                sum += q;
                lo = fmin(lo, q);
                hi = fmax(hi, q);
                ++used;
            }
            s->var_train = str / s->reached;
            s->var_inference = sin / s->reached;
            s->var_inference_stored = sins / s->reached;
            s->var_moving = smv / s->reached;
            s->ratio = used ? sum / used : NAN;
            s->ratio_min = used ? lo : NAN;
            s->ratio_max = used ? hi : NAN;
            s->ratio_moving = mused ? msum / mused : NAN;
            s->ratio_moving_min = mused ? mlo : NAN;
            s->ratio_moving_max = mused ? mhi : NAN;
            s->predicted = predict && used ? psum / used : NAN;
            /* per channel ratio <= p (Eq. 8): the mean over the same channels <= their mean p */
            s->ceiling = predict && used ? csum / used : NAN;
        }
        for (int k = 0; k < nd; ++k) {
            r->dropout[k].counted = dacc[k].counted;
            r->dropout[k].zeroed =
                dacc[k].counted ? (double)dacc[k].zeroed / (double)dacc[k].counted : NAN;
            r->dropout[k].expected =
                dacc[k].counted ? dacc[k].expected / (double)dacc[k].counted : NAN;
        }
        ck_host_free(ctx, mvs);
    }
#undef NEXT_BATCH
    if (st == CK_STATUS_SUCCESS)
        *out = *r;
    ck_model_destroy(twin);
    ck_context_destroy(tctx);
    ck_host_free(ctx, perm);
    ck_host_free(ctx, xb);
    ck_host_free(ctx, yb);
    ck_host_free(ctx, r);
    ck_host_free(ctx, tmp);
    ck_host_free(ctx, vtr);
    ck_host_free(ctx, vin);
    ck_host_free(ctx, vins);
    ck_host_free(ctx, mtr);
    ck_host_free(ctx, min);
    ck_host_free(ctx, dacc);
    ck_host_free(ctx, keep);
    return st;
}
