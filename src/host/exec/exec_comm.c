/* The data-parallel parts of the training step (exec.h, docs/distributed.md): every rank runs
 * forward, loss and backward on its shard; the loss packet and the gradients are summed over the
 * ranks, and a verdict packet makes every rank update or fail together. Each rank joins every
 * collective whatever its own status, so a failure on one rank never leaves the others waiting
 * in a different call. */
#include "comm_internal.h"
#include "exec.h"

#include <math.h>

/* A failure elsewhere: this rank's own message when it failed itself, else one saying so. */
static ck_status other_failed(const ck_exec *e, ck_status st, const char *where) {
    if (st != CK_STATUS_SUCCESS)
        return st;
    return ck_fail(e->ctx, CK_STATUS_INTERNAL,
                   "comm: another of the %d ranks failed step %lld %s (its message says why); "
                   "the model was not changed",
                   ck_comm_size(e->comm), e->m->step, where);
}

/* Whether the step draws dropout masks: a Dropout or SpatialDropout node, or one fused into a
 * BN or pooling node, with a rate above 0. The ranks' models are the same (ck_model_set_comm), so
 * every rank gives the same answer and joins the same collectives. */
static int draws_masks(const ck_model *m) {
    for (int i = 0; i < m->num_nodes; ++i) {
        const ck_node *n = &m->nodes[i];
        if (((n->type == CK_NODE_DROPOUT || n->type == CK_NODE_SDROPOUT) && n->rate > 0.0f) ||
            (n->drop_layer >= 0 && n->drop_rate > 0.0f))
            return 1;
    }
    return 0;
}

/* The device step overlaps its gradient sum with the backward pass when the gradients span
 * more than one bucket and no SyncBatchNormalization exchanges inside the backward pass (NCCL
 * runs one communicator's operations in call order: an exchange would wait behind the buckets
 * launched before it, and the backward with it). */
/* Whether a BatchNormalization of the model exchanges statistics inside the step. */
static int syncs_bn(const ck_model *m) {
    for (int i = 0; i < m->num_nodes; ++i)
        if (m->nodes[i].bn_sync)
            return 1;
    return 0;
}

static int overlaps(const ck_exec *e) {
    const ck_model *m = e->m;
    return !e->be->synchronous && ck_comm_on_device(e->comm) &&
           m->num_params > CK_COMM_DEVICE_BUCKET && !syncs_bn(m);
}

static int bucket_count(const ck_model *m) {
    return (int)((m->num_params + CK_COMM_DEVICE_BUCKET - 1) / CK_COMM_DEVICE_BUCKET);
}

static ck_status launch_bucket(const ck_exec *e, int b) {
    const size_t lo = (size_t)b * CK_COMM_DEVICE_BUCKET, left = e->m->num_params - lo;
    return ck_comm_device_sum_side(e->comm, e->grads + lo,
                                   left < CK_COMM_DEVICE_BUCKET ? left : CK_COMM_DEVICE_BUCKET);
}

/* One past node n's last trainable parameter (0: it has none). */
static size_t param_end(const ck_node *n) {
    size_t end = 0;
    if (n->n_kernel && n->p_kernel + n->n_kernel > end)
        end = n->p_kernel + n->n_kernel;
    if (n->n_bias && n->p_bias + n->n_bias > end)
        end = n->p_bias + n->n_bias;
    if (n->type == CK_NODE_BN) {
        const size_t g = n->p_gamma + (size_t)n->oc, b = n->p_beta + (size_t)n->oc;
        end = g > end ? g : end;
        end = b > end ? b : end;
    }
    return end;
}

int ck_exec_comm_buckets_final(const ck_model *m, int i) {
    /* backward runs from the last node down: the nodes below i have not written yet, and every
     * parameter past the last one of theirs is final */
    size_t ready = 0;
    for (int j = 0; j < i; ++j) {
        const size_t end = param_end(&m->nodes[j]);
        ready = end > ready ? end : ready;
    }
    const int all = bucket_count(m);
    int final = 0;
    while (final < all && (size_t)(all - 1 - final) * CK_COMM_DEVICE_BUCKET >= ready)
        final++;
    return final;
}

ck_status ck_exec_comm_grads_ready(const ck_exec *e, int i) {
    struct ck_exec_overlap *o = e->overlap;
    if (!o)
        return CK_STATUS_SUCCESS;
    const int launch_below = bucket_count(e->m) - ck_exec_comm_buckets_final(e->m, i);
    while (o->next > launch_below) {
        CK_TRY(launch_bucket(e, o->next - 1));
        o->next--;
    }
    return CK_STATUS_SUCCESS;
}

int ck_exec_comm_agrees_at_begin(const ck_exec *e) {
    return !e->be->synchronous || syncs_bn(e->m);
}

ck_status ck_exec_comm_begin(ck_exec *e, ck_status st, int n, int *total) {
    e->sample0 = 0;
    e->overlap = NULL;
    const int failed = st != CK_STATUS_SUCCESS;
    /* A device step needs the global batch before any wait; a SyncBatchNormalization exchanges
     * inside forward, where a rank that failed would not be: both agree here first. */
    if (ck_exec_comm_agrees_at_begin(e)) {
        double t[2] = {failed ? 0.0 : (double)(n > 0 ? n : 0), failed ? 1.0 : 0.0};
        CK_TRY(ck_comm_sum_f64(e->comm, t, 2));
        if (t[1] > 0.0)
            return other_failed(e, st, "before its forward pass");
        *total = (int)t[0];
        if (overlaps(e)) {
            e->ov.next = bucket_count(e->m);
            e->overlap = &e->ov;
        }
    } else if (failed) {
        /* the loss packet tells the others; the masks' offsets below are joined all the same */
        n = 0;
    }
    if (!draws_masks(e->m))
        return st;
    long long before = 0;
    CK_TRY(ck_comm_exscan_i64(e->comm, n > 0 ? n : 0, &before));
    e->sample0 = (uint64_t)before;
    return st;
}

/* This rank's share of the global mean: its loss gradient times n / total. */
static ck_status scale_share(ck_exec *e, int n, int total) {
    if (total == n)
        return CK_STATUS_SUCCESS;
    return e->be->scale(e, e->logits_grad, (size_t)n * e->m->classes,
                        (float)((double)n / (double)total));
}

/* The device step: the loss packet summed in place on the device, nothing waited for. */
static ck_status comm_loss_device(ck_exec *e, ck_status st, int n, ck_kloss *kl, int total) {
    const ck_comm *c = e->comm;
    CK_TRY(ck_comm_device_allreduce(c, &kl->loss_sum, 1, CK_NCCL_F64, CK_NCCL_SUM,
                                    "ncclAllReduce (loss)"));
    CK_TRY(ck_comm_device_allreduce(c, &kl->correct, 1, CK_NCCL_I32, CK_NCCL_SUM,
                                    "ncclAllReduce (correct)"));
    if (st != CK_STATUS_SUCCESS)
        return st;
    return scale_share(e, n, total);
}

ck_status ck_exec_comm_loss(ck_exec *e, ck_status st, int n, ck_kloss *kl, int *total) {
    if (!e->be->synchronous)
        return comm_loss_device(e, st, n, kl, *total);
    const int ok = st == CK_STATUS_SUCCESS;
    double pk[4] = {ok ? kl->loss_sum : 0.0, ok ? kl->correct : 0, n, ok ? 0.0 : 1.0};
    CK_TRY(ck_comm_sum_f64(e->comm, pk, 4));
    if (pk[3] > 0.0)
        return other_failed(e, st, "before its loss");
    kl->loss_sum = pk[0]; /* a NaN on any rank makes the sum NaN: every rank refuses the step */
    kl->correct = (int)pk[1];
    *total = (int)pk[2];
    /* The loss gradient is d(mean over n)/d(logits); scaled by n / total it is this shard's part
     * of the mean over the global batch, so the gradients of all layers (BN's backward included:
     * it is linear in dy) sum over the ranks to the global batch's. With equal shards of a power
     * of two ranks the scale is a power of two: exact. */
    return scale_share(e, n, *total);
}

/* The device step: the gradients and the verdict reduced on the device; the update is guarded
 * there by the verdict, which is the same on every rank. */
static ck_status comm_grads_device(ck_exec *e, ck_status st, ck_kloss *kl, long long *bad) {
    *bad = -1;
    /* a rank that failed still adds its buffer (every bucket, in the same order as the
     * others): the verdict discards the sum */
    if (e->overlap) {
        struct ck_exec_overlap *o = e->overlap;
        e->overlap = NULL;
        for (; o->next > 0; o->next--)
            CK_TRY(launch_bucket(e, o->next - 1));
        CK_TRY(ck_comm_device_join(e->comm));
    } else {
        CK_TRY(ck_comm_sum_f32(e->comm, e->grads, e->m->num_params));
    }
    if (st == CK_STATUS_SUCCESS)
        st = e->be->flag_nonfinite(e, kl, bad);
    if (st != CK_STATUS_SUCCESS)
        CK_TRY(e->be->mark_failed(e, kl));
    CK_TRY(ck_comm_device_allreduce(e->comm, &kl->nonfinite, 1, CK_NCCL_I32, CK_NCCL_MAX,
                                    "ncclAllReduce (verdict)"));
    return st;
}

ck_status ck_exec_comm_verdict(const ck_exec *e, const ck_kloss *host) {
    if (host->nonfinite >= CK_KLOSS_RANK_FAILED)
        return other_failed(e, CK_STATUS_SUCCESS, "on its device");
    return CK_STATUS_SUCCESS;
}

ck_status ck_exec_comm_grads(ck_exec *e, ck_status st, ck_kloss *kl, long long *bad) {
    if (!e->be->synchronous)
        return comm_grads_device(e, st, kl, bad);
    /* a rank that failed in backward still adds its buffer: the verdict below discards the sum */
    CK_TRY(ck_comm_sum_f32(e->comm, e->grads, e->m->num_params));
    if (st == CK_STATUS_SUCCESS)
        st = e->be->flag_nonfinite(e, kl, bad);
    /* The summed gradients are the same on every rank, and so is their check; the verdict packet
     * makes that a guarantee rather than a property of the MPI library's reduction order. */
    long long v[2] = {st != CK_STATUS_SUCCESS, st == CK_STATUS_SUCCESS && kl->nonfinite};
    CK_TRY(ck_comm_max_i64(e->comm, v, 2));
    if (v[0])
        return other_failed(e, st, "in its backward pass");
    kl->nonfinite = (int)v[1];
    return CK_STATUS_SUCCESS;
}
