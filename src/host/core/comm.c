/* The communicator (cnnkit/comm.h): a thin wrapper over an MPI communicator, and the collectives
 * the training step needs (comm_internal.h). Without MPI in the build the same calls exist and
 * creating a communicator fails with a message. */
#include "comm_internal.h"

#ifdef CNNKIT_HAVE_MPI
#include <mpi.h>
#endif

struct ck_comm {
    ck_handle link; /* in the context's list (internal.h) */
    ck_context *ctx;
    int rank, size;
#ifdef CNNKIT_HAVE_MPI
    MPI_Comm mpi; /* cnnkit's duplicate, MPI_COMM_NULL once freed */
#endif
};

CK_API int ck_comm_mpi_available(void) {
#ifdef CNNKIT_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

CK_API int ck_comm_rank(const ck_comm *c) {
    return c && c->ctx ? c->rank : -1;
}

CK_API int ck_comm_size(const ck_comm *c) {
    return c && c->ctx ? c->size : -1;
}

ck_context *ck_comm_context(const ck_comm *c) {
    return c ? c->ctx : NULL;
}

CK_API ck_status ck_comm_shard(const ck_comm *c, int total, int *first, int *count) {
    if (!c || !c->ctx)
        return CK_STATUS_BAD_PARAM;
    ck_clear_error(c->ctx);
    if (total < 0)
        return ck_fail(c->ctx, CK_STATUS_BAD_PARAM, "total: %d samples (must be >= 0)", total);
    if (!first || !count)
        return ck_fail(c->ctx, CK_STATUS_BAD_PARAM, "first, count: NULL");
    const int q = total / c->size, r = total % c->size;
    *count = q + (c->rank < r ? 1 : 0);
    *first = c->rank * q + (c->rank < r ? c->rank : r);
    return CK_STATUS_SUCCESS;
}

#ifdef CNNKIT_HAVE_MPI

/* MPI_Comm_free after MPI_Finalize is erroneous: a communicator outliving MPI only loses its
 * memory. */
static void free_mpi(ck_comm *c) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin && c->mpi != MPI_COMM_NULL)
        MPI_Comm_free(&c->mpi);
    c->mpi = MPI_COMM_NULL;
}

static ck_status mpi_fail(const ck_comm *c, int err, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(err, msg, &len) != MPI_SUCCESS)
        len = 0;
    msg[len] = '\0';
    return ck_fail(c->ctx, CK_STATUS_INTERNAL, "comm: %s failed on rank %d of %d: %s", what,
                   c->rank, c->size, msg);
}

#define CK_MPI(c, call, what)                                                                      \
    do {                                                                                           \
        const int e_ = (call);                                                                     \
        if (e_ != MPI_SUCCESS)                                                                     \
            return mpi_fail((c), e_, (what));                                                      \
    } while (0)

static void comm_orphan(ck_handle *h) {
    ck_comm *c = (ck_comm *)h;
    free_mpi(c);
    c->ctx = NULL;
}

CK_API ck_status ck_comm_create_mpi(ck_context *ctx, const void *mpi_comm, ck_comm **out) {
    if (!ctx)
        return CK_STATUS_BAD_PARAM;
    ck_clear_error(ctx);
    if (!out)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "comm: is NULL");
    if (!mpi_comm)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "mpi_comm: is NULL (the address of an MPI_Comm)");
    if (ctx->device != CK_DEVICE_CPU)
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "ctx: a CUDA context needs the NCCL communicator, which is not built yet "
                       "(docs/distributed.md); MPI communicators serve CPU contexts");
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "mpi_comm: MPI is %s (MPI_Init before ck_comm_create_mpi)",
                       fin ? "finalized" : "not initialized");
    ck_comm *c = (ck_comm *)ck_host_calloc(ctx, 1, sizeof *c);
    if (!c)
        return ck_host_oom(ctx, "comm", sizeof *c);
    c->ctx = ctx;
    c->mpi = MPI_COMM_NULL;
    int e = MPI_Comm_dup(*(const MPI_Comm *)mpi_comm, &c->mpi);
    if (e == MPI_SUCCESS)
        e = MPI_Comm_set_errhandler(c->mpi, MPI_ERRORS_RETURN);
    if (e == MPI_SUCCESS)
        e = MPI_Comm_rank(c->mpi, &c->rank);
    if (e == MPI_SUCCESS)
        e = MPI_Comm_size(c->mpi, &c->size);
    if (e != MPI_SUCCESS) {
        const ck_status st = mpi_fail(c, e, "MPI_Comm_dup");
        free_mpi(c);
        ck_host_free(ctx, c);
        return st;
    }
    ck_handle_link(ctx, &c->link, comm_orphan);
    *out = c;
    return CK_STATUS_SUCCESS;
}

CK_API void ck_comm_destroy(ck_comm *c) {
    if (!c)
        return;
    if (c->ctx) {
        ck_handle_unlink(c->ctx, &c->link);
        free_mpi(c);
    }
    ck_host_free(c->ctx, c);
}

/* The float collectives go in buckets: MPI counts are ints, and a bucket bounds the temporary
 * memory some MPI algorithms take. */
ck_status ck_comm_sum_f32(const ck_comm *c, float *buf, size_t count) {
    for (size_t at = 0; at < count; at += CK_COMM_BUCKET) {
        const size_t k = count - at < CK_COMM_BUCKET ? count - at : CK_COMM_BUCKET;
        CK_MPI(c, MPI_Allreduce(MPI_IN_PLACE, buf + at, (int)k, MPI_FLOAT, MPI_SUM, c->mpi),
               "MPI_Allreduce (gradients)");
    }
    return CK_STATUS_SUCCESS;
}

ck_status ck_comm_sum_f64(const ck_comm *c, double *buf, int count) {
    CK_MPI(c, MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_DOUBLE, MPI_SUM, c->mpi),
           "MPI_Allreduce (sum)");
    return CK_STATUS_SUCCESS;
}

ck_status ck_comm_min_i64(const ck_comm *c, long long *buf, int count) {
    CK_MPI(c, MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_LONG_LONG, MPI_MIN, c->mpi),
           "MPI_Allreduce (min)");
    return CK_STATUS_SUCCESS;
}

ck_status ck_comm_exscan_i64(const ck_comm *c, long long v, long long *before) {
    *before = 0; /* MPI leaves rank 0's result undefined */
    long long r = 0;
    CK_MPI(c, MPI_Exscan(&v, &r, 1, MPI_LONG_LONG, MPI_SUM, c->mpi), "MPI_Exscan");
    if (ck_comm_rank(c) > 0)
        *before = r;
    return CK_STATUS_SUCCESS;
}

ck_status ck_comm_max_i64(const ck_comm *c, long long *buf, int count) {
    CK_MPI(c, MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_LONG_LONG, MPI_MAX, c->mpi),
           "MPI_Allreduce (max)");
    return CK_STATUS_SUCCESS;
}

ck_status ck_comm_bcast_f32(const ck_comm *c, float *buf, size_t count) {
    for (size_t at = 0; at < count; at += CK_COMM_BUCKET) {
        const size_t k = count - at < CK_COMM_BUCKET ? count - at : CK_COMM_BUCKET;
        CK_MPI(c, MPI_Bcast(buf + at, (int)k, MPI_FLOAT, 0, c->mpi), "MPI_Bcast");
    }
    return CK_STATUS_SUCCESS;
}

ck_status ck_comm_bcast_i64(const ck_comm *c, long long *buf, int count) {
    CK_MPI(c, MPI_Bcast(buf, count, MPI_LONG_LONG, 0, c->mpi), "MPI_Bcast");
    return CK_STATUS_SUCCESS;
}

#else /* no MPI in this build: nothing can make a communicator, so the collectives never run */

CK_API ck_status ck_comm_create_mpi(ck_context *ctx, const void *mpi_comm, ck_comm **out) {
    (void)mpi_comm;
    if (!ctx)
        return CK_STATUS_BAD_PARAM;
    ck_clear_error(ctx);
    return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                   "comm: this build of cnnkit has no MPI (install libopenmpi-dev and configure "
                   "with -DCNNKIT_MPI=ON or AUTO)");
}

CK_API void ck_comm_destroy(ck_comm *c) {
    (void)c;
}

static ck_status no_mpi(const ck_comm *c) {
    return ck_fail(c ? c->ctx : NULL, CK_STATUS_NOT_SUPPORTED, "comm: no MPI in this build");
}

ck_status ck_comm_sum_f32(const ck_comm *c, float *buf, size_t count) {
    (void)buf, (void)count;
    return no_mpi(c);
}

ck_status ck_comm_sum_f64(const ck_comm *c, double *buf, int count) {
    (void)buf, (void)count;
    return no_mpi(c);
}

ck_status ck_comm_min_i64(const ck_comm *c, long long *buf, int count) {
    (void)buf, (void)count;
    return no_mpi(c);
}

ck_status ck_comm_exscan_i64(const ck_comm *c, long long v, long long *before) {
    (void)v;
    *before = 0;
    return no_mpi(c);
}

ck_status ck_comm_max_i64(const ck_comm *c, long long *buf, int count) {
    (void)buf, (void)count;
    return no_mpi(c);
}

ck_status ck_comm_bcast_f32(const ck_comm *c, float *buf, size_t count) {
    (void)buf, (void)count;
    return no_mpi(c);
}

ck_status ck_comm_bcast_i64(const ck_comm *c, long long *buf, int count) {
    (void)buf, (void)count;
    return no_mpi(c);
}

#endif
