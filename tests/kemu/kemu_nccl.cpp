/*
 * kemu's NCCL: libnccl.so.2 for an emulated build (CNNKIT_EMU), which cnnkit opens at run time
 * as it opens the real one (src/host/core/comm_nccl.c). One rank: a communicator of size 1, whose
 * collectives are copies enqueued on the caller's stream (a sum, min, max or average over one
 * rank is the identity), so they run in stream order with the kernels around them and, under
 * EMU_TSAN, read and write their buffers as device work: a kernel that touches a buffer while a
 * collective on another stream still owns it is a race.
 *
 * It checks what the real library needs of its caller and would answer with an error, a hang
 * or a fault: an id from ncclGetUniqueId, a config made with NCCL_CONFIG_INITIALIZER, device
 * buffers inside one allocation, a live communicator (a call on a destroyed or aborted one aborts
 * the test, as a use after free would corrupt), and in non-blocking mode no call on a
 * communicator whose last operation returned ncclInProgress until ncclCommGetAsyncError has said
 * ncclSuccess. Non-blocking initialization, finalization and each communicator's first collective
 * return ncclInProgress, as the real ones may, so the caller's polling runs. Every communicator
 * must be destroyed or aborted by the end of the process.
 *
 * Several ranks need several processes and GPUs; a communicator of more than one rank is refused
 * (ncclInvalidUsage) rather than waited for.
 */
#include <nccl.h>

#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mutex>
#include <set>

#include "kemu.h"

struct ncclComm {
    int rank, nranks;
    bool blocking;
    int in_progress; /* polls of ncclCommGetAsyncError left that answer ncclInProgress */
    bool finalized, connected;
    char last[512];
};

namespace {

const uint64_t id_magic = 0x6c63636e756d656bull; /* "kemunccl" in memory */
std::mutex mu;
std::set<ncclComm *> live;
uint64_t ids_made = 0;
int fail_in = 0; /* kemu_nccl_fail_call: the collective call that fails (1: the next) */
ncclResult_t fail_with = ncclSuccess;
thread_local char last_global[512];

ncclResult_t fail(ncclComm *c, ncclResult_t r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
ncclResult_t fail(ncclComm *c, ncclResult_t r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c ? c->last : last_global, sizeof last_global, fmt, ap);
    va_end(ap);
    return r;
}

/* A call on comm: it must be live (else the test aborts: on a real GPU a use after free) and, in
 * non-blocking mode, not still in progress. */
ncclComm *checked(ncclComm_t comm, const char *fn) {
    if (!comm)
        return nullptr;
    if (!live.count(comm))
        kemu::fault("%s: communicator %p is not live (never made, destroyed or aborted)", fn,
                    (void *)comm);
    if (comm->in_progress > 0)
        kemu::fault("%s: communicator %p: its last operation returned ncclInProgress and "
                    "ncclCommGetAsyncError has not yet said ncclSuccess",
                    fn, (void *)comm);
    return comm;
}

ncclResult_t started(ncclComm *c, int polls) {
    if (c->blocking)
        return ncclSuccess;
    c->in_progress = polls;
    return ncclInProgress;
}

size_t type_bytes(ncclDataType_t t) {
    switch (t) {
    case ncclInt8:
    case ncclUint8:
    case ncclFloat8e4m3:
    case ncclFloat8e5m2:
        return 1;
    case ncclFloat16:
    case ncclBfloat16:
        return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
        return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
        return 8;
    default:
        return 0;
    }
}

/* The one rank's collective: the checks, then send's count elements copied to recv on stream
 * (gather: recv holds nranks x count, this rank's part at rank x count). */
ncclResult_t one_rank(const char *fn, ncclComm_t comm, const void *send, void *recv, size_t count,
                      ncclDataType_t t, bool gather, cudaStream_t s) {
    std::lock_guard<std::mutex> l(mu);
    ncclComm *c = checked(comm, fn);
    if (!c)
        return fail(nullptr, ncclInvalidArgument, "%s: comm is NULL", fn);
    if (c->finalized)
        return fail(c, ncclInvalidUsage, "%s: the communicator is finalized", fn);
    if (fail_in > 0 && --fail_in == 0)
        return fail(c, fail_with, "%s: kemu's injected failure (kemu_nccl_fail_call)", fn);
    const size_t tb = type_bytes(t);
    if (!tb)
        return fail(c, ncclInvalidArgument, "%s: datatype %d", fn, (int)t);
    if (!count)
        return ncclSuccess;
    const size_t bytes = count * tb, at = gather ? (size_t)c->rank * count : 0,
                 recv_count = gather ? (size_t)c->nranks * count : count;
    if (!kemu::is_device(send, bytes))
        return fail(c, ncclInvalidArgument,
                    "%s: sendbuff %p (%zu bytes) is not inside one device allocation", fn, send,
                    bytes);
    if (!kemu::is_device(recv, recv_count * tb))
        return fail(c, ncclInvalidArgument,
                    "%s: recvbuff %p (%zu bytes) is not inside one device allocation", fn, recv,
                    recv_count * tb);
    const cudaError_t e =
        cudaMemcpyAsync((char *)recv + at * tb, send, bytes, cudaMemcpyDeviceToDevice, s);
    if (e != cudaSuccess)
        return fail(c, ncclUnhandledCudaError, "%s: %s", fn, cudaGetErrorString(e));
    if (c->connected)
        return ncclSuccess;
    c->connected = true; /* the first collective sets up connections: it may be in progress */
    return started(c, 1);
}

struct leak_check {
    ~leak_check() {
        std::lock_guard<std::mutex> l(mu);
        if (!live.empty()) {
            fprintf(stderr, "kemu: %zu NCCL communicator(s) never destroyed or aborted\n",
                    live.size());
            _exit(70);
        }
    }
} at_exit;

} // namespace

extern "C" {

/* For kemu's tests of a failing NCCL (a peer that died, a broken network): the k-th collective
 * call from now (1: the next) returns result, with a last error saying it was injected. */
__attribute__((visibility("default"))) void kemu_nccl_fail_call(int k, int result) {
    std::lock_guard<std::mutex> l(mu);
    fail_in = k;
    fail_with = (ncclResult_t)result;
}

ncclResult_t ncclGetVersion(int *version) {
    if (!version)
        return fail(nullptr, ncclInvalidArgument, "ncclGetVersion: version is NULL");
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    if (!id)
        return fail(nullptr, ncclInvalidArgument, "ncclGetUniqueId: uniqueId is NULL");
    std::lock_guard<std::mutex> l(mu);
    memset(id, 0, sizeof *id);
    const uint64_t v[3] = {id_magic, (uint64_t)getpid(), ++ids_made};
    memcpy(id->internal, v, sizeof v);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank,
                                    ncclConfig_t *config) {
    if (!comm)
        return fail(nullptr, ncclInvalidArgument, "ncclCommInitRankConfig: comm is NULL");
    uint64_t magic = 0;
    memcpy(&magic, commId.internal, sizeof magic);
    if (magic != id_magic)
        return fail(nullptr, ncclInvalidArgument,
                    "ncclCommInitRankConfig: the id was not made by ncclGetUniqueId");
    if (nranks < 1 || rank < 0 || rank >= nranks)
        return fail(nullptr, ncclInvalidArgument, "ncclCommInitRankConfig: rank %d of %d", rank,
                    nranks);
    if (nranks > 1)
        return fail(nullptr, ncclInvalidUsage,
                    "ncclCommInitRankConfig: kemu's NCCL has one rank (%d asked): several need "
                    "several processes and GPUs",
                    nranks);
    bool blocking = true;
    if (config) {
        if (config->size != sizeof(ncclConfig_t) || config->magic != 0xcafebeef)
            return fail(nullptr, ncclInvalidArgument,
                        "ncclCommInitRankConfig: config not made with NCCL_CONFIG_INITIALIZER");
        blocking = config->blocking != 0; /* NCCL_CONFIG_UNDEF_INT (INT_MIN): blocking */
    }
    ncclComm *c = new ncclComm();
    c->rank = rank;
    c->nranks = nranks;
    c->blocking = blocking;
    std::lock_guard<std::mutex> l(mu);
    live.insert(c);
    *comm = c;
    return started(c, 2);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError) {
    if (!asyncError)
        return fail(nullptr, ncclInvalidArgument, "ncclCommGetAsyncError: asyncError is NULL");
    std::lock_guard<std::mutex> l(mu);
    if (!comm || !live.count(comm))
        kemu::fault("ncclCommGetAsyncError: communicator %p is not live", (void *)comm);
    if (comm->in_progress > 0) {
        --comm->in_progress;
        *asyncError = ncclInProgress;
    } else {
        *asyncError = ncclSuccess;
    }
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    std::lock_guard<std::mutex> l(mu);
    ncclComm *c = checked(comm, "ncclCommFinalize");
    if (!c)
        return fail(nullptr, ncclInvalidArgument, "ncclCommFinalize: comm is NULL");
    if (c->finalized)
        return fail(c, ncclInvalidUsage, "ncclCommFinalize: finalized already");
    c->finalized = true;
    return started(c, 1);
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    std::lock_guard<std::mutex> l(mu);
    ncclComm *c = checked(comm, "ncclCommDestroy");
    if (!c)
        return ncclSuccess;
    live.erase(c);
    delete c;
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
    std::lock_guard<std::mutex> l(mu);
    if (!comm)
        return ncclSuccess;
    if (!live.count(comm)) /* allowed at any time, but once */
        kemu::fault("ncclCommAbort: communicator %p is not live", (void *)comm);
    live.erase(comm);
    delete comm;
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
    if ((int)op < 0 || (int)op >= (int)ncclNumOps)
        return fail(nullptr, ncclInvalidArgument, "ncclAllReduce: op %d", (int)op);
    return one_rank("ncclAllReduce", comm, sendbuff, recvbuff, count, datatype, false, stream);
}

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t stream) {
    if (root != 0)
        return fail(nullptr, ncclInvalidArgument, "ncclBroadcast: root %d of 1 rank", root);
    return one_rank("ncclBroadcast", comm, sendbuff, recvbuff, count, datatype, false, stream);
}

ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream) {
    return one_rank("ncclAllGather", comm, sendbuff, recvbuff, sendcount, datatype, true, stream);
}

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess:
        return "no error";
    case ncclUnhandledCudaError:
        return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError:
        return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError:
        return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument:
        return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage:
        return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError:
        return "remote process exited or there was a network error";
    case ncclInProgress:
        return "NCCL operation in progress";
    default:
        return "unknown result code";
    }
}

const char *ncclGetLastError(ncclComm_t comm) {
    std::lock_guard<std::mutex> l(mu);
    return comm && live.count(comm) ? comm->last : last_global;
}

} /* extern "C" */
