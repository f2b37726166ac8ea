/* The NCCL side of the communicator (cnnkit/comm.h, comm_internal.h): the collectives of a CUDA
 * context's communicator, on device memory and the context's stream.
 *
 * libnccl is opened at run time (dlopen of libnccl.so.2), not linked: it is 218 MB, a machine
 * that trains on one GPU never needs it, and a library linked against it would not even load
 * where it is missing. A communicator that cannot open it fails with a message saying so.
 *
 * Every wait is polled against the communicator's deadline (cudaStreamQuery and
 * ncclCommGetAsyncError), and the NCCL communicator is non-blocking (ncclConfig_t.blocking = 0),
 * so a rank that never arrives makes the others fail within the timeout: the NCCL communicator
 * is then aborted (ncclCommAbort ends the kernels that wait for it) and the cnnkit communicator
 * is broken, as its MPI twin is. */
#include "comm_internal.h"

#ifdef CNNKIT_HAVE_NCCL

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <errno.h>
#include <nccl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The NCCL entry points cnnkit calls, from dlsym. */
typedef struct nccl_api {
    __typeof__(ncclGetVersion) *get_version;
    __typeof__(ncclGetUniqueId) *get_unique_id;
    __typeof__(ncclCommInitRankConfig) *init_rank_config;
    __typeof__(ncclCommGetAsyncError) *get_async_error;
    __typeof__(ncclCommFinalize) *finalize;
    __typeof__(ncclCommDestroy) *destroy;
    __typeof__(ncclCommAbort) *abort;
    __typeof__(ncclAllReduce) *all_reduce;
    __typeof__(ncclBroadcast) *broadcast;
    __typeof__(ncclAllGather) *all_gather;
    __typeof__(ncclGetErrorString) *error_string;
    __typeof__(ncclGetLastError) *last_error;
} nccl_api;

struct ck_nccl {
    void *lib; /* dlopen handle */
    nccl_api f;
    ncclComm_t comm;
    ck_context *ctx;
    int rank, size;
    double timeout_s; /* the communicator's, kept in step by ck_nccl_set_timeout */
    void *dstage;     /* device packet buffer; never freed once aborted (see ck_nccl_free) */
    void *hstage;     /* its pinned host twin: the packets' copies never wait on the stream */
    size_t dstage_cap;
    int aborted;
    /* the gradient buckets' stream, overlapping the backward pass, and the events between it
     * and the context's stream (made at first use) */
    cudaStream_t side;
    cudaEvent_t ready, done;
};

#ifdef CNNKIT_EMU_NCCL_PATH
/* an emulated build opens kemu's NCCL: a real one would call a real CUDA runtime */
static const char *const nccl_sonames[] = {CNNKIT_EMU_NCCL_PATH};
#else
static const char *const nccl_sonames[] = {"libnccl.so.2", "libnccl.so"};
#endif

static ck_status open_lib(ck_context *ctx, void **lib, nccl_api *f) {
    *lib = NULL;
    for (size_t i = 0; i < sizeof nccl_sonames / sizeof *nccl_sonames && !*lib; ++i)
        /* NODELETE: NCCL's bootstrap threads outlive the handle (ncclGetUniqueId starts one),
         * so dlclose must never unmap the library under them */
        *lib = dlopen(nccl_sonames[i], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!*lib) {
        const char *why = dlerror();
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "comm: NCCL could not be loaded (%s): install libnccl2 or the "
                       "nvidia-nccl-cu13 wheel and put its lib folder on LD_LIBRARY_PATH",
                       why ? why : "libnccl.so.2 not found");
    }
#define CK_SYM(field, name)                                                                        \
    do {                                                                                           \
        *(void **)&f->field = dlsym(*lib, name);                                                   \
        if (!f->field) {                                                                           \
            dlclose(*lib);                                                                         \
            *lib = NULL;                                                                           \
            return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,                                           \
                           "comm: the NCCL library found lacks %s (NCCL 2.14 or newer needed)",    \
                           name);                                                                  \
        }                                                                                          \
    } while (0)
    CK_SYM(get_version, "ncclGetVersion");
    CK_SYM(get_unique_id, "ncclGetUniqueId");
    CK_SYM(init_rank_config, "ncclCommInitRankConfig");
    CK_SYM(get_async_error, "ncclCommGetAsyncError");
    CK_SYM(finalize, "ncclCommFinalize");
    CK_SYM(destroy, "ncclCommDestroy");
    CK_SYM(abort, "ncclCommAbort");
    CK_SYM(all_reduce, "ncclAllReduce");
    CK_SYM(broadcast, "ncclBroadcast");
    CK_SYM(all_gather, "ncclAllGather");
    CK_SYM(error_string, "ncclGetErrorString");
    CK_SYM(last_error, "ncclGetLastError");
#undef CK_SYM
    return CK_STATUS_SUCCESS;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Polling as comm.c's: spin briefly, then yield the core, then nap 1 ms per try after a second. */
static void pause_after(long tries, double waited) {
    if (tries < 64)
        return;
    if (waited < 1.0) {
        sched_yield();
    } else {
        const struct timespec nap = {0, 1000000};
        nanosleep(&nap, NULL);
    }
}

/* An NCCL error: the message, then the communicator aborted. The cnnkit communicator is broken
 * by it anyway (comm.c), and an operation already enqueued may wait for ever for a rank that
 * failed: aborting ends those kernels, so later waits on the stream (a restore, a free) return. */
static ck_status nccl_fail(ck_nccl *n, ncclResult_t r, const char *what) {
    const char *last = n->comm && !n->aborted && n->f.last_error ? n->f.last_error(n->comm) : NULL;
    const ck_status st =
        ck_fail(n->ctx, CK_STATUS_INTERNAL, "comm: %s failed on rank %d of %d: %s%s%s", what,
                n->rank, n->size, n->f.error_string ? n->f.error_string(r) : "NCCL error",
                last && *last ? ": " : "", last && *last ? last : "");
    if (n->comm && !n->aborted) /* after the message: abort frees what last_error points into */
        (void)n->f.abort(n->comm);
    n->aborted = n->comm != NULL;
    return st;
}

static ck_status timed_out(ck_nccl *n, const char *what) {
    /* ends the kernels that wait for the missing rank, so the stream can drain */
    if (n->comm && !n->aborted)
        (void)n->f.abort(n->comm);
    n->aborted = 1;
    return ck_fail(n->ctx, CK_STATUS_INTERNAL,
                   "comm: %s timed out after %g s waiting for the other ranks (rank %d of %d "
                   "waited; another rank hung, died or stopped calling the collectives); the "
                   "communicator is broken: end the job",
                   what, n->timeout_s, n->rank, n->size);
}

/* Waits until the communicator has no operation in progress (a non-blocking NCCL call that
 * returned ncclInProgress, or the initialization), against the deadline. */
static ck_status settle(ck_nccl *n, const char *what) {
    const double t0 = now_s();
    for (long tries = 0;; ++tries) {
        ncclResult_t a = ncclSuccess;
        ncclResult_t r = n->f.get_async_error(n->comm, &a);
        if (r != ncclSuccess)
            return nccl_fail(n, r, what);
        if (a == ncclSuccess)
            return CK_STATUS_SUCCESS;
        if (a != ncclInProgress)
            return nccl_fail(n, a, what);
        const double waited = now_s() - t0;
        if (n->timeout_s > 0.0 && waited >= n->timeout_s)
            return timed_out(n, what);
        pause_after(tries, waited);
    }
}

/* The status of a non-blocking NCCL call. */
static ck_status nccl_call(ck_nccl *n, ncclResult_t r, const char *what) {
    if (r == ncclInProgress)
        return settle(n, what);
    return r == ncclSuccess ? CK_STATUS_SUCCESS : nccl_fail(n, r, what);
}

ck_status ck_nccl_sync(ck_nccl *n, const char *what) {
    cudaStream_t s = (cudaStream_t)n->ctx->stream;
    const double t0 = now_s();
    for (long tries = 0;; ++tries) {
        const cudaError_t e = cudaStreamQuery(s);
        if (e == cudaSuccess)
            return CK_STATUS_SUCCESS;
        if (e != cudaErrorNotReady)
            return ck_cuda_fail(n->ctx, e, what);
        ncclResult_t a = ncclSuccess;
        if (n->f.get_async_error(n->comm, &a) == ncclSuccess && a != ncclSuccess &&
            a != ncclInProgress)
            return nccl_fail(n, a, what);
        const double waited = now_s() - t0;
        if (n->timeout_s > 0.0 && waited >= n->timeout_s)
            return timed_out(n, what);
        pause_after(tries, waited);
    }
}

ck_status ck_nccl_unique_id(ck_context *ctx, void *id, size_t bytes) {
    if (bytes < sizeof(ncclUniqueId))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "bytes: %zu (the id takes %zu)", bytes,
                       sizeof(ncclUniqueId));
    void *lib = NULL;
    nccl_api f;
    memset(&f, 0, sizeof f);
    CK_TRY(open_lib(ctx, &lib, &f));
    ncclUniqueId u;
    const ncclResult_t r = f.get_unique_id(&u);
    if (r != ncclSuccess) {
        const ck_status st =
            ck_fail(ctx, CK_STATUS_INTERNAL, "comm: ncclGetUniqueId failed: %s", f.error_string(r));
        dlclose(lib);
        return st;
    }
    memcpy(id, &u, sizeof u);
    if (bytes > sizeof u)
        memset((char *)id + sizeof u, 0, bytes - sizeof u);
    dlclose(lib);
    return CK_STATUS_SUCCESS;
}

/* NCCL_COMM_BLOCKING=1 (from the environment, or from an nccl.conf that NCCL copies into it)
 * overrides ncclConfig_t.blocking: NCCL's calls would then wait inside NCCL, where no deadline
 * of cnnkit's reaches, so a rank that never arrives would hang the others. Read as NCCL reads
 * it (strtoll, any base). */
static ck_status refuse_forced_blocking(ck_context *ctx, const char *when) {
    const char *v = getenv("NCCL_COMM_BLOCKING");
    if (!v || !v[0])
        return CK_STATUS_SUCCESS;
    errno = 0;
    const long long b = strtoll(v, NULL, 0);
    if (errno || b != 1)
        return CK_STATUS_SUCCESS;
    return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                   "comm: NCCL_COMM_BLOCKING=%s %s makes NCCL's calls blocking, and cnnkit's "
                   "collective timeout needs them non-blocking (a rank that never arrives would "
                   "hang the others); unset it or set it to 0",
                   v, when);
}

ck_status ck_nccl_create(ck_context *ctx, const void *id, int rank, int size, double timeout_s,
                         ck_nccl **out) {
    CK_TRY(refuse_forced_blocking(ctx, "in the environment"));
    ck_nccl *n = (ck_nccl *)ck_host_calloc(ctx, 1, sizeof *n);
    if (!n)
        return ck_host_oom(ctx, "comm (NCCL)", sizeof *n);
    n->ctx = ctx;
    n->rank = rank;
    n->size = size;
    n->timeout_s = timeout_s;
    ck_status st = open_lib(ctx, &n->lib, &n->f);
    if (st != CK_STATUS_SUCCESS) {
        ck_host_free(ctx, n);
        return st;
    }
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0; /* every wait is ours to poll against the deadline */
    st = nccl_call(n, n->f.init_rank_config(&n->comm, size, u, rank, &cfg),
                   "ncclCommInitRankConfig");
    if (st == CK_STATUS_SUCCESS && n->comm)
        st = settle(n, "ncclCommInitRankConfig");
    if (st == CK_STATUS_SUCCESS) /* NCCL reads its nccl.conf files into the environment at init */
        st = refuse_forced_blocking(ctx, "(set by an nccl.conf file)");
    if (st != CK_STATUS_SUCCESS) {
        if (n->comm && !n->aborted)
            (void)n->f.abort(n->comm);
        dlclose(n->lib);
        ck_host_free(ctx, n);
        return st;
    }
    *out = n;
    return CK_STATUS_SUCCESS;
}

void ck_nccl_set_timeout(ck_nccl *n, double timeout_s) {
    n->timeout_s = timeout_s;
}

void ck_nccl_free(ck_nccl *n, int broken) {
    if (!n)
        return;
    if (n->comm && (broken || n->aborted)) {
        if (!n->aborted)
            (void)n->f.abort(n->comm);
        n->aborted = 1;
    } else if (n->comm) {
        /* finalize flushes what is still in flight; one that does not settle within the
         * deadline is aborted (no error is set: destroy has no status) */
        ncclResult_t r = n->f.finalize(n->comm), a = ncclInProgress;
        const double t0 = now_s();
        for (long tries = 0; r == ncclSuccess || r == ncclInProgress; ++tries) {
            if (n->f.get_async_error(n->comm, &a) != ncclSuccess || a != ncclInProgress)
                break;
            const double waited = now_s() - t0;
            if (n->timeout_s > 0.0 && waited >= n->timeout_s)
                break;
            pause_after(tries, waited);
        }
        /* a destroy that fails (an error since the last poll) frees nothing: abort ends it */
        const int destroyed = (r == ncclSuccess || r == ncclInProgress) && a == ncclSuccess &&
                              n->f.destroy(n->comm) == ncclSuccess;
        if (!destroyed) {
            (void)n->f.abort(n->comm);
            n->aborted = 1;
        }
    }
    /* an operation that was aborted may still have been writing the stage */
    if (n->dstage && !n->aborted)
        (void)cudaFree(n->dstage);
    if (n->hstage && !n->aborted)
        (void)cudaFreeHost(n->hstage);
    if (n->ready)
        (void)cudaEventDestroy(n->ready);
    if (n->done)
        (void)cudaEventDestroy(n->done);
    if (n->side) /* returns at once; the stream goes when its work is done */
        (void)cudaStreamDestroy(n->side);
    if (n->lib)
        dlclose(n->lib);
    ck_host_free(n->ctx, n);
}

/* The device stage and its pinned host twin, at least bytes long (the small host packets go
 * through them; SyncBatchNormalization's scratch is the device one). */
static ck_status dstage(ck_nccl *n, size_t bytes, void **out) {
    if (bytes > n->dstage_cap) {
        /* cudaFree waits for the whole device, with no deadline, and a kernel may still read
         * the stage: wait under the communicator's deadline first */
        if (n->dstage)
            CK_TRY(ck_nccl_sync(n, "comm: growing its packet buffer"));
        if (n->dstage)
            (void)cudaFree(n->dstage);
        if (n->hstage)
            (void)cudaFreeHost(n->hstage);
        n->dstage = n->hstage = NULL;
        n->dstage_cap = 0;
        const size_t cap = bytes < 4096 ? 4096 : bytes;
        cudaError_t e = cudaMalloc(&n->dstage, cap);
        if (e == cudaSuccess)
            e = cudaHostAlloc(&n->hstage, cap, cudaHostAllocDefault);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            if (n->dstage)
                (void)cudaFree(n->dstage);
            n->dstage = n->hstage = NULL;
            return ck_fail(n->ctx, CK_STATUS_ALLOC_FAILED,
                           "comm: allocating its %zu-byte packet buffers failed: %s", cap,
                           cudaGetErrorString(e));
        }
        n->dstage_cap = cap;
    }
    *out = n->dstage;
    return CK_STATUS_SUCCESS;
}

static ncclDataType_t nccl_type(ck_nccl_type t) {
    switch (t) {
    case CK_NCCL_F32:
        return ncclFloat32;
    case CK_NCCL_F64:
        return ncclFloat64;
    case CK_NCCL_I32:
        return ncclInt32;
    default:
        return ncclInt64;
    }
}

static ncclRedOp_t nccl_op(ck_nccl_op op) {
    return op == CK_NCCL_SUM ? ncclSum : op == CK_NCCL_MIN ? ncclMin : ncclMax;
}

ck_status ck_nccl_allreduce(ck_nccl *n, void *dbuf, size_t count, ck_nccl_type t, ck_nccl_op op,
                            const char *what) {
    if (!count)
        return CK_STATUS_SUCCESS;
    return nccl_call(n,
                     n->f.all_reduce(dbuf, dbuf, count, nccl_type(t), nccl_op(op), n->comm,
                                     (cudaStream_t)n->ctx->stream),
                     what);
}

ck_status ck_nccl_bcast(ck_nccl *n, void *dbuf, size_t count, ck_nccl_type t, const char *what) {
    if (!count)
        return CK_STATUS_SUCCESS;
    return nccl_call(
        n,
        n->f.broadcast(dbuf, dbuf, count, nccl_type(t), 0, n->comm, (cudaStream_t)n->ctx->stream),
        what);
}

static size_t type_size(ck_nccl_type t) {
    return t == CK_NCCL_I32 || t == CK_NCCL_F32 ? 4 : 8;
}

/* A host packet through the stages: up, the operation, down, and one wait under the deadline
 * (the copies are from and to pinned memory, so none of them blocks the host). */
ck_status ck_nccl_host(ck_nccl *n, void *buf, size_t count, ck_nccl_type t, ck_nccl_op op,
                       int bcast, const char *what) {
    const size_t bytes = count * type_size(t);
    void *d = NULL;
    CK_TRY(dstage(n, bytes, &d));
    cudaStream_t s = (cudaStream_t)n->ctx->stream;
    memcpy(n->hstage, buf, bytes); /* the stages are idle: every packet waited for its own */
    cudaError_t e = cudaMemcpyAsync(d, n->hstage, bytes, cudaMemcpyHostToDevice, s);
    if (e != cudaSuccess)
        return ck_cuda_fail(n->ctx, e, what);
    CK_TRY(bcast ? ck_nccl_bcast(n, d, count, t, what)
                 : ck_nccl_allreduce(n, d, count, t, op, what));
    e = cudaMemcpyAsync(n->hstage, d, bytes, cudaMemcpyDeviceToHost, s);
    if (e != cudaSuccess)
        return ck_cuda_fail(n->ctx, e, what);
    CK_TRY(ck_nccl_sync(n, what));
    memcpy(buf, n->hstage, bytes);
    return CK_STATUS_SUCCESS;
}

/* Every rank's value (count 1, int64) into all[0..size): an all-gather through the stages. */
ck_status ck_nccl_allgather_i64(ck_nccl *n, long long v, long long *all, const char *what) {
    const size_t bytes = sizeof(long long) * ((size_t)n->size + 1);
    void *d = NULL;
    CK_TRY(dstage(n, bytes, &d));
    cudaStream_t s = (cudaStream_t)n->ctx->stream;
    long long *dv = (long long *)d, *dall = dv + 1, *hv = (long long *)n->hstage;
    hv[0] = v;
    cudaError_t e = cudaMemcpyAsync(dv, hv, sizeof v, cudaMemcpyHostToDevice, s);
    if (e != cudaSuccess)
        return ck_cuda_fail(n->ctx, e, what);
    CK_TRY(nccl_call(n, n->f.all_gather(dv, dall, 1, ncclInt64, n->comm, s), what));
    e = cudaMemcpyAsync(hv + 1, dall, sizeof(long long) * (size_t)n->size, cudaMemcpyDeviceToHost,
                        s);
    if (e != cudaSuccess)
        return ck_cuda_fail(n->ctx, e, what);
    CK_TRY(ck_nccl_sync(n, what));
    memcpy(all, hv + 1, sizeof(long long) * (size_t)n->size);
    return CK_STATUS_SUCCESS;
}

ck_status ck_nccl_allgather(ck_nccl *n, const void *local, void *all, size_t count, ck_nccl_type t,
                            const char *what) {
    if (!count)
        return CK_STATUS_SUCCESS;
    return nccl_call(
        n, n->f.all_gather(local, all, count, nccl_type(t), n->comm, (cudaStream_t)n->ctx->stream),
        what);
}

ck_status ck_nccl_scratch(ck_nccl *n, size_t bytes, void **out) {
    return dstage(n, bytes, out); /* growing waits for the kernels that read it */
}

/* The buckets' stream and its events, all or none (made by ck_nccl_prepare before any step). */
static ck_status side_stream(ck_nccl *n) {
    if (n->side)
        return CK_STATUS_SUCCESS;
    cudaStream_t side = NULL;
    cudaEvent_t ready = NULL, done = NULL;
    cudaError_t e = cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking);
    if (e == cudaSuccess)
        e = cudaEventCreateWithFlags(&ready, cudaEventDisableTiming);
    if (e == cudaSuccess)
        e = cudaEventCreateWithFlags(&done, cudaEventDisableTiming);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (done)
            (void)cudaEventDestroy(done);
        if (ready)
            (void)cudaEventDestroy(ready);
        if (side)
            (void)cudaStreamDestroy(side);
        return ck_cuda_fail(n->ctx, e, "comm: the gradient stream");
    }
    n->side = side;
    n->ready = ready;
    n->done = done;
    return CK_STATUS_SUCCESS;
}

ck_status ck_nccl_prepare(ck_nccl *n, size_t scratch_bytes) {
    void *scratch = NULL;
    CK_TRY(ck_nccl_scratch(n, scratch_bytes ? scratch_bytes : 1, &scratch));
    return side_stream(n);
}

int ck_nccl_aborted(const ck_nccl *n) {
    return n->aborted;
}

ck_status ck_nccl_allreduce_side(ck_nccl *n, float *dbuf, size_t count, const char *what) {
    if (!count)
        return CK_STATUS_SUCCESS;
    CK_TRY(side_stream(n));
    /* after what the context's stream has enqueued so far (the gradients of this bucket) */
    cudaError_t e = cudaEventRecord(n->ready, (cudaStream_t)n->ctx->stream);
    if (e == cudaSuccess)
        e = cudaStreamWaitEvent(n->side, n->ready, 0);
    if (e != cudaSuccess)
        return ck_cuda_fail(n->ctx, e, what);
    return nccl_call(n, n->f.all_reduce(dbuf, dbuf, count, ncclFloat32, ncclSum, n->comm, n->side),
                     what);
}

ck_status ck_nccl_join(ck_nccl *n) {
    if (!n->side)
        return CK_STATUS_SUCCESS;
    cudaError_t e = cudaEventRecord(n->done, n->side);
    if (e == cudaSuccess)
        e = cudaStreamWaitEvent((cudaStream_t)n->ctx->stream, n->done, 0);
    return e == cudaSuccess ? CK_STATUS_SUCCESS
                            : ck_cuda_fail(n->ctx, e, "comm: the gradient stream");
}

int ck_nccl_version(const ck_nccl *n) {
    int v = 0;
    return n && n->f.get_version(&v) == ncclSuccess ? v : 0;
}

#endif /* CNNKIT_HAVE_NCCL */
