/* A communicator attached to a model (cnnkit/comm.h): the ranks check that they built one model
 * and start from rank 0's state; the executor's training step then sums over the ranks
 * (exec_comm.c). */
#include "comm_internal.h"
#include "exec.h"
#include "model_internal.h"

#include <string.h>

static long long float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (long long)u;
}

/* What every rank's model must agree on; the names go into the message. */
enum {
    SIG_PARAMS,
    SIG_FIXED,
    SIG_LAYERS,
    SIG_H,
    SIG_W,
    SIG_C,
    SIG_CLASSES,
    SIG_OPT,
    SIG_LR,
    SIG_WD,
    SIG_PRECISION,
    SIG_OPT_CONFIG,
    SIG_LAYER_CONFIG,
    SIG_COUNT,
    SIG_FAILED = SIG_COUNT, /* not a signature: whether the rank failed its own preparation */
    SIG_SLOTS
};
static const char *const sig_name[SIG_COUNT] = {"trainable parameter count",
                                                "BN statistics count",
                                                "layer count",
                                                "input height",
                                                "input width",
                                                "input channels",
                                                "classes",
                                                "optimizer",
                                                "learning rate",
                                                "weight decay",
                                                "precision",
                                                "optimizer setting (beta_1, beta_2, epsilon, "
                                                "momentum, nesterov, rho or centered)",
                                                "layer configuration"};

/* FNV-1a over the bytes of n words: a fingerprint the ranks compare (63 bits, so that min and
 * max order it). */
static long long fingerprint(const long long *v, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t k = 0; k < n; ++k)
        for (int b = 0; b < 8; ++b) {
            h ^= (uint64_t)(v[k] >> (8 * b)) & 0xffu;
            h *= 0x100000001b3ull;
        }
    return (long long)(h >> 1);
}

/* Everything about layer i that changes what it computes or how its ranks talk (its name does
 * not; the input shape is compared on its own). */
static long long layer_print(const ck_model *m, int i) {
    const ck_layer_desc *d = &m->layers[i];
    long long v[21 + CK_MAX_LAYER_INPUTS] = {d->type,
                                             d->units,
                                             d->kernel_h,
                                             d->kernel_w,
                                             d->stride_h,
                                             d->stride_w,
                                             d->padding,
                                             d->use_bias,
                                             d->activation,
                                             float_bits(d->alpha),
                                             float_bits(d->rate),
                                             float_bits(d->momentum),
                                             float_bits(d->epsilon),
                                             d->pad_top,
                                             d->pad_bottom,
                                             d->pad_left,
                                             d->pad_right,
                                             d->synchronized,
                                             float_bits(d->scale),
                                             float_bits(d->offset),
                                             d->num_inputs};
    for (int k = 0; k < d->num_inputs && k < CK_MAX_LAYER_INPUTS; ++k)
        v[21 + k] = d->inputs[k];
    return fingerprint(v, sizeof v / sizeof v[0]);
}

static long long layers_print(const ck_model *m) {
    long long v[CK_MAX_LAYERS];
    for (int i = 0; i < m->num_layers; ++i)
        v[i] = layer_print(m, i);
    return fingerprint(v, (size_t)m->num_layers);
}

static long long opt_print(const ck_optimizer_desc *o) {
    const long long v[] = {float_bits(o->beta1),
                           float_bits(o->beta2),
                           float_bits(o->epsilon),
                           float_bits(o->momentum),
                           o->nesterov,
                           float_bits(o->rho),
                           o->centered};
    return fingerprint(v, sizeof v / sizeof v[0]);
}

/* The first layer whose configuration differs between the ranks (they agree on the count);
 * collective. */
static ck_status first_differing_layer(ck_model *m, const ck_comm *c, int *layer) {
    long long lo[CK_MAX_LAYERS], hi[CK_MAX_LAYERS];
    for (int i = 0; i < m->num_layers; ++i)
        lo[i] = hi[i] = layer_print(m, i);
    CK_TRY(ck_comm_min_i64(c, lo, m->num_layers));
    CK_TRY(ck_comm_max_i64(c, hi, m->num_layers));
    *layer = -1;
    for (int i = 0; i < m->num_layers && *layer < 0; ++i)
        if (lo[i] != hi[i])
            *layer = i;
    return CK_STATUS_SUCCESS;
}

/* Collective: every rank joins, own its status so far, so a rank that failed to prepare fails
 * them all here rather than leaving them in the next collective. */
static ck_status check_same_model(ck_model *m, const ck_comm *c, ck_status own) {
    long long lo[SIG_SLOTS] = {(long long)m->num_params,
                               (long long)m->num_fixed,
                               m->num_layers,
                               m->in_h,
                               m->in_w,
                               m->in_c,
                               m->classes,
                               (long long)m->opt.type,
                               float_bits(m->opt.learning_rate),
                               float_bits(m->opt.weight_decay),
                               (long long)m->precision,
                               opt_print(&m->opt),
                               layers_print(m),
                               own != CK_STATUS_SUCCESS};
    long long hi[SIG_SLOTS];
    memcpy(hi, lo, sizeof hi);
    CK_TRY(ck_comm_min_i64(c, lo, SIG_SLOTS));
    CK_TRY(ck_comm_max_i64(c, hi, SIG_SLOTS));
    if (own != CK_STATUS_SUCCESS)
        return own;
    if (hi[SIG_FAILED])
        return ck_fail(m->ctx, CK_STATUS_INTERNAL,
                       "comm: another of the %d ranks could not attach its model (its message "
                       "says why); nothing was changed",
                       ck_comm_size(c));
    for (int i = 0; i < SIG_COUNT; ++i) {
        if (lo[i] == hi[i])
            continue;
        if (i == SIG_LAYER_CONFIG) {
            int l = -1; /* every rank comes here: the same lo and hi */
            CK_TRY(first_differing_layer(m, c, &l));
            const ck_layer_desc *d = &m->layers[l < 0 ? 0 : l];
            return ck_fail(m->ctx, CK_STATUS_SHAPE_MISMATCH,
                           "comm: the ranks built different models (layer %d, %s '%s' here, is "
                           "configured differently on another of the %d ranks: its options, "
                           "activation, rate or synchronized BN); nothing was changed",
                           l, ck_layer_type_name(d->type), d->name, ck_comm_size(c));
        }
        if (i == SIG_OPT_CONFIG) /* a fingerprint: its values say nothing */
            return ck_fail(m->ctx, CK_STATUS_SHAPE_MISMATCH,
                           "comm: the ranks built different models (the %s differs across the "
                           "%d ranks); nothing was changed",
                           sig_name[i], ck_comm_size(c));
        return ck_fail(m->ctx, CK_STATUS_SHAPE_MISMATCH,
                       "comm: the ranks built different models (%s differs: %lld to %lld "
                       "across the %d ranks); nothing was changed",
                       sig_name[i], lo[i], hi[i], ck_comm_size(c));
    }
    return CK_STATUS_SUCCESS;
}

/* Rank 0's fit position (ck_model_fit's resume state): a rank that loaded an older checkpoint
 * would otherwise shuffle another epoch's order into the same global batches. */
static ck_status share_fit_state(ck_model *m, const ck_comm *c) {
    ck_fit_state *f = &m->fit;
    long long v[12] = {f->valid,
                       f->epoch,
                       f->epoch_step,
                       f->batch,
                       f->count,
                       f->data_crc,
                       (long long)f->shuffle_seed,
                       (long long)f->context_seed,
                       0,
                       f->correct,
                       f->seen,
                       f->precision};
    memcpy(&v[8], &f->loss_sum, sizeof f->loss_sum);
    CK_TRY(ck_comm_bcast_i64(c, v, 12));
    *f = (ck_fit_state){(int)v[0], (int)v[1],      (int)v[2],      (int)v[3],
                        (int)v[4], (uint32_t)v[5], (uint64_t)v[6], (uint64_t)v[7],
                        0.0,       v[9],           v[10],          (int)v[11]};
    memcpy(&f->loss_sum, &v[8], sizeof f->loss_sum);
    return CK_STATUS_SUCCESS;
}

/* Rank 0's state everywhere, as a single process would continue from it. */
static ck_status share_state(ck_model *m, const ck_comm *c) {
    CK_TRY(share_fit_state(m, c));
    if (m->gpu) { /* the device holds the state of record while a model trains there */
        ck_exec e = ck_exec_cuda(m);
        CK_TRY(ck_comm_bcast_f32(c, e.params, m->num_params));
        CK_TRY(ck_comm_bcast_f32(c, e.opt_m, m->num_params));
        CK_TRY(ck_comm_bcast_f32(c, e.opt_v, m->num_params));
        if (m->num_fixed)
            CK_TRY(ck_comm_bcast_f32(c, e.fixed, m->num_fixed));
        long long step = m->step;
        CK_TRY(ck_comm_bcast_i64(c, &step, 1));
        m->step = step;
        return ck_gpu_model_pull(m);
    }
    CK_TRY(ck_comm_bcast_f32(c, m->params, m->num_params));
    CK_TRY(ck_comm_bcast_f32(c, m->opt_m, m->num_params));
    CK_TRY(ck_comm_bcast_f32(c, m->opt_v, m->num_params));
    if (m->num_fixed)
        CK_TRY(ck_comm_bcast_f32(c, m->fixed, m->num_fixed));
    long long step = m->step;
    CK_TRY(ck_comm_bcast_i64(c, &step, 1));
    m->step = step;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_set_comm(ck_model *m, ck_comm *comm) {
    CK_MODEL_ENTRY(m);
    ck_context *ctx = m->ctx;
    ck_enter(ctx);
    if (!comm) {
        m->comm = NULL;
        return CK_STATUS_SUCCESS;
    }
    if (ck_comm_context(comm) != ctx)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "comm: made from another context (or its context was destroyed)");
    if (!m->built)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    if (m->gpu && !ck_comm_on_device(comm))
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "comm: an MPI communicator, and the model is on a CUDA context: "
                       "data-parallel training there needs an NCCL communicator "
                       "(ck_comm_create_mpi or ck_comm_create_nccl on the CUDA context)");
    ck_status st = CK_STATUS_SUCCESS;
    if (m->gpu) { /* the SyncBN exchanges' scratch and the buckets' stream, before any step */
        size_t most = 0;
        for (int i = 0; i < m->num_nodes; ++i)
            if (m->nodes[i].bn_sync) {
                const size_t b = ck_bn_sync_scratch_bytes(m->nodes[i].oc, ck_comm_size(comm));
                most = b > most ? b : most;
            }
        st = ck_comm_device_prepare(comm, most);
    }
    CK_TRY(check_same_model(m, comm, st));
    CK_TRY(share_state(m, comm));
    m->comm = comm;
    return CK_STATUS_SUCCESS;
}
