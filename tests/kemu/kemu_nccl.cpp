/*
 * kemu's NCCL: libnccl.so.2 for an emulated build (CNNKIT_EMU), which cnnkit opens at run time
 * as it opens the real one (src/host/core/comm_nccl.c). Its collectives run in stream order with
 * the kernels around them and, under EMU_TSAN, read and write their buffers as device work: a
 * kernel that touches a buffer while a collective on another stream still owns it is a race.
 * One rank's collective is a copy (a sum, min, max or average over one rank is the identity).
 * Several ranks are several processes (mpiexec), each with its own emulated GPU, meeting in a
 * shared-memory segment named by the id: each collective copies the rank's data into its slot
 * there, waits for every rank, checks that all called the same collective (kind, type, op,
 * count, root: a mismatch would hang or corrupt a real NCCL), and reduces the slots in rank
 * order, so every rank gets the same bits. A rank that waits longer than KEMU_NCCL_TIMEOUT_S
 * (120 s) stops its test naming the collective.
 *
 * It checks what the real library needs of its caller and would answer with an error, a hang
 * or a fault: an id from ncclGetUniqueId, a config made with NCCL_CONFIG_INITIALIZER, device
 * buffers inside one allocation, a live communicator (a call on a destroyed or aborted one aborts
 * the test, as a use after free would corrupt), and in non-blocking mode no call on a
 * communicator whose last operation returned ncclInProgress until ncclCommGetAsyncError has said
 * how it ended. Non-blocking initialization, finalization and every collective return
 * ncclInProgress, as NCCL 2.28's do (its collectives go through a group thread), so the caller's
 * polling runs each time. An error found by polling stays the communicator's: later calls fail
 * with it, ncclCommDestroy too (only ncclCommAbort ends such a communicator). Every communicator
 * must be destroyed or aborted by the end of the process. NCCL_COMM_BLOCKING and NCCL's
 * settings files (NCCL_CONF_FILE) act as in NCCL: the variable overrides the config.
 */
#include <nccl.h>

#include <cuda_runtime.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>

#include "kemu.h"

namespace {

/* The shared segment of a communicator of several ranks: this header, then per rank a slot (a
 * descriptor of its current collective, then its data). */
struct shm_head {
    std::atomic<uint32_t> arrived, gen; /* the barrier */
};
static_assert(std::atomic<uint32_t>::is_always_lock_free, "a process-shared barrier");
struct call_desc {
    uint64_t call; /* 1, 2, ... per communicator, in the order the collectives run */
    int32_t kind, type, op, root;
    uint64_t count;
};
enum { k_allreduce, k_bcast, k_allgather };
const size_t slot_data = (size_t)4 << 20; /* per rank and round; larger collectives take rounds */
const size_t slot_stride = 64 + slot_data, head_bytes = 64;

/* What a communicator's enqueued work needs: it may run after an abort (and then does nothing). */
struct group {
    int rank = 0, nranks = 1;
    unsigned char *base = nullptr; /* the segment */
    size_t bytes = 0;
    uint64_t calls = 0;
    double timeout_s = 120.0;
    std::atomic<bool> aborted{false};
    shm_head *head() const {
        return (shm_head *)base;
    }
    call_desc *desc(int r) const {
        return (call_desc *)(base + head_bytes + r * slot_stride);
    }
    unsigned char *data(int r) const {
        return base + head_bytes + r * slot_stride + 64;
    }
    ~group() {
        if (base)
            munmap(base, bytes);
    }
};

} // namespace

struct ncclComm {
    int rank, nranks;
    bool blocking;
    int in_progress;    /* polls of ncclCommGetAsyncError left that answer ncclInProgress */
    bool awaited;       /* an operation answered ncclInProgress; its outcome not yet polled */
    ncclResult_t error; /* the communicator's error, once one happened asynchronously */
    bool finalized;
    char last[512];
    std::shared_ptr<group> g;
    /* device scratch per stream (several ranks): the rank's data in, the result out; per stream so
     * that two streams' collectives share no buffer */
    std::map<cudaStream_t, std::pair<void *, void *>> scratch;
};

namespace {

const uint64_t id_magic = 0x6c63636e756d656bull; /* "kemunccl" in memory */
std::mutex mu;
std::set<ncclComm *> live;
uint64_t ids_made = 0;
int fail_in = 0; /* kemu_nccl_fail_call: the collective call that fails (1: the next) */
ncclResult_t fail_with = ncclSuccess;
int fail_async_in = 0; /* kemu_nccl_fail_async: the same, its error found by polling */
ncclResult_t fail_async_with = ncclSuccess;
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
    if (comm->awaited)
        kemu::fault("%s: communicator %p: its last operation returned ncclInProgress and "
                    "ncclCommGetAsyncError has not yet said how it ended",
                    fn, (void *)comm);
    return comm;
}

ncclResult_t started(ncclComm *c, int polls) {
    if (c->blocking)
        return ncclSuccess;
    c->in_progress = polls;
    c->awaited = true;
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

double now_s() {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Every rank of g arrives before any leaves (a sense-reversing barrier in the segment). */
void barrier(group &g, const char *what) {
    shm_head *h = g.head();
    const uint32_t gen = h->gen.load(std::memory_order_acquire);
    if (h->arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == (uint32_t)g.nranks) {
        h->arrived.store(0, std::memory_order_relaxed);
        h->gen.fetch_add(1, std::memory_order_acq_rel);
        return;
    }
    const double t0 = now_s();
    for (long spins = 0; h->gen.load(std::memory_order_acquire) == gen; ++spins) {
        if (spins > 1000) {
            const struct timespec nap = {0, 50000};
            nanosleep(&nap, nullptr);
        } else {
            sched_yield();
        }
        if (now_s() - t0 > g.timeout_s)
            kemu::fault("NCCL rank %d of %d waited %g s for the other ranks in %s (collective "
                        "#%llu): a rank hung, died or never called it",
                        g.rank, g.nranks, g.timeout_s, what, (unsigned long long)g.calls);
    }
}

template <class T> void reduce(T *out, const group &g, size_t n, int op) {
    for (size_t i = 0; i < n; ++i) {
        T v = ((const T *)g.data(0))[i];
        for (int r = 1; r < g.nranks; ++r) {
            const T w = ((const T *)g.data(r))[i];
            v = op == ncclSum || op == ncclAvg ? (T)(v + w)
                : op == ncclProd               ? (T)(v * w)
                : op == ncclMax                ? (w > v ? w : v)
                                               : (w < v ? w : v);
        }
        out[i] = op == ncclAvg ? (T)(v / (T)g.nranks) : v;
    }
}

/* The reduction of the ranks' n elements of type t into out; false for a type kemu does not
 * reduce (with n 0: only the answer). */
bool reduce_typed(ncclDataType_t t, void *out, const group &g, size_t n, int op) {
    switch (t) {
    case ncclInt8:
        reduce((int8_t *)out, g, n, op);
        return true;
    case ncclUint8:
        reduce((uint8_t *)out, g, n, op);
        return true;
    case ncclInt32:
        reduce((int32_t *)out, g, n, op);
        return true;
    case ncclUint32:
        reduce((uint32_t *)out, g, n, op);
        return true;
    case ncclInt64:
        reduce((int64_t *)out, g, n, op);
        return true;
    case ncclUint64:
        reduce((uint64_t *)out, g, n, op);
        return true;
    case ncclFloat32:
        reduce((float *)out, g, n, op);
        return true;
    case ncclFloat64:
        reduce((double *)out, g, n, op);
        return true;
    default:
        return false;
    }
}

/* One round of a collective on the segment: in (this rank's n elements) into its slot, then out
 * (n elements; for a gather nranks x n, rank-major). Runs as stream work. */
void exchange(group &g, call_desc d, const void *in, void *out, size_t n, size_t tb,
              const char *fn) {
    if (g.aborted.load())
        return;
    d.call = ++g.calls;
    *g.desc(g.rank) = d;
    memcpy(g.data(g.rank), in, n * tb);
    barrier(g, fn);
    for (int r = 0; r < g.nranks; ++r) {
        const call_desc o = *g.desc(r);
        if (o.call != d.call || o.kind != d.kind || o.type != d.type || o.op != d.op ||
            o.root != d.root || o.count != d.count)
            kemu::fault("%s: rank %d's collective #%llu (kind %d, type %d, op %d, root %d, count "
                        "%llu) is not rank %d's #%llu (kind %d, type %d, op %d, root %d, count "
                        "%llu): the ranks must call the same collectives in the same order",
                        fn, g.rank, (unsigned long long)d.call, d.kind, d.type, d.op, d.root,
                        (unsigned long long)d.count, r, (unsigned long long)o.call, o.kind, o.type,
                        o.op, o.root, (unsigned long long)o.count);
    }
    if (d.kind == k_bcast) {
        memcpy(out, g.data(d.root), n * tb);
    } else if (d.kind == k_allgather) {
        for (int r = 0; r < g.nranks; ++r)
            memcpy((char *)out + r * n * tb, g.data(r), n * tb);
    } else {
        reduce_typed((ncclDataType_t)d.type, out, g, n, d.op); /* checked at the call */
    }
    barrier(g, fn); /* no rank writes its slot again before every rank has read them */
}

/* A collective of several ranks on stream s, in rounds of at most slot_data bytes per rank: the
 * rank's data copied to device scratch, the exchange, the result copied to recv (the copies are
 * kemu's, so the race checker sees them read send and write recv). */
ncclResult_t several(ncclComm *c, const char *fn, int kind, const void *send, void *recv,
                     size_t count, size_t tb, ncclDataType_t t, int op, int root, cudaStream_t s) {
    std::pair<void *, void *> &sc = c->scratch[s];
    if (!sc.first) {
        cudaError_t e = cudaMalloc(&sc.first, slot_data);
        if (e == cudaSuccess)
            e = cudaMalloc(&sc.second, slot_data * (size_t)c->nranks);
        if (e != cudaSuccess)
            return fail(c, ncclUnhandledCudaError, "%s: its scratch: %s", fn,
                        cudaGetErrorString(e));
    }
    const size_t per = slot_data / tb;
    for (size_t at = 0; at < count; at += per) {
        const size_t n = count - at < per ? count - at : per;
        call_desc d = {0, kind, (int32_t)t, op, root, count};
        std::shared_ptr<group> g = c->g;
        void *in = sc.first, *out = sc.second;
        cudaError_t e =
            cudaMemcpyAsync(in, (const char *)send + at * tb, n * tb, cudaMemcpyDeviceToDevice, s);
        if (e == cudaSuccess)
            e = kemu::submit(s,
                             [g, d, in, out, n, tb, fn]() { exchange(*g, d, in, out, n, tb, fn); });
        if (kind == k_allgather) {
            for (int r = 0; r < c->nranks && e == cudaSuccess; ++r)
                e = cudaMemcpyAsync((char *)recv + (r * count + at) * tb, (char *)out + r * n * tb,
                                    n * tb, cudaMemcpyDeviceToDevice, s);
        } else if (e == cudaSuccess) {
            e = cudaMemcpyAsync((char *)recv + at * tb, out, n * tb, cudaMemcpyDeviceToDevice, s);
        }
        if (e != cudaSuccess)
            return fail(c, ncclUnhandledCudaError, "%s: %s", fn, cudaGetErrorString(e));
    }
    return ncclSuccess;
}

/* A collective: the checks, then one rank's copy or several ranks' exchange on stream s. */
ncclResult_t collective(const char *fn, int kind, ncclComm_t comm, const void *send, void *recv,
                        size_t count, ncclDataType_t t, int op, int root, cudaStream_t s) {
    std::lock_guard<std::mutex> l(mu);
    ncclComm *c = checked(comm, fn);
    if (!c)
        return fail(nullptr, ncclInvalidArgument, "%s: comm is NULL", fn);
    if (c->finalized)
        return fail(c, ncclInvalidUsage, "%s: the communicator is finalized", fn);
    if (c->error != ncclSuccess)
        return fail(c, c->error, "%s: the communicator failed before", fn);
    if (fail_in > 0 && --fail_in == 0)
        return fail(c, fail_with, "%s: kemu's injected failure (kemu_nccl_fail_call)", fn);
    if (fail_async_in > 0 && --fail_async_in == 0) { /* in progress, then the error */
        c->error = fail_async_with;
        fail(c, fail_async_with, "%s: kemu's injected failure (kemu_nccl_fail_async)", fn);
        return started(c, 1);
    }
    const size_t tb = type_bytes(t);
    if (!tb)
        return fail(c, ncclInvalidArgument, "%s: datatype %d", fn, (int)t);
    if (root < 0 || root >= c->nranks)
        return fail(c, ncclInvalidArgument, "%s: root %d of %d ranks", fn, root, c->nranks);
    if (!count)
        return ncclSuccess;
    const bool gather = kind == k_allgather;
    const size_t bytes = count * tb, recv_count = gather ? (size_t)c->nranks * count : count;
    if (!kemu::is_device(send, bytes))
        return fail(c, ncclInvalidArgument,
                    "%s: sendbuff %p (%zu bytes) is not inside one device allocation", fn, send,
                    bytes);
    if (!kemu::is_device(recv, recv_count * tb))
        return fail(c, ncclInvalidArgument,
                    "%s: recvbuff %p (%zu bytes) is not inside one device allocation", fn, recv,
                    recv_count * tb);
    if (c->nranks > 1) {
        if (kind == k_allreduce && !reduce_typed(t, nullptr, *c->g, 0, op))
            return fail(c, ncclInvalidArgument, "%s: kemu's NCCL does not reduce datatype %d", fn,
                        (int)t);
        const ncclResult_t r = several(c, fn, kind, send, recv, count, tb, t, op, root, s);
        if (r != ncclSuccess)
            return r;
    } else {
        const size_t at = gather ? (size_t)c->rank * count : 0;
        const cudaError_t e =
            cudaMemcpyAsync((char *)recv + at * tb, send, bytes, cudaMemcpyDeviceToDevice, s);
        if (e != cudaSuccess)
            return fail(c, ncclUnhandledCudaError, "%s: %s", fn, cudaGetErrorString(e));
    }
    /* a non-blocking communicator's collectives go through NCCL's group thread: in progress */
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

/* The same, as a non-blocking communicator meets a peer's death: the call answers ncclInProgress,
 * then ncclCommGetAsyncError says result, and the communicator keeps it: every later call fails
 * with it, and ncclCommDestroy too (it frees nothing: only ncclCommAbort ends it). */
__attribute__((visibility("default"))) void kemu_nccl_fail_async(int k, int result) {
    std::lock_guard<std::mutex> l(mu);
    fail_async_in = k;
    fail_async_with = (ncclResult_t)result;
}

ncclResult_t ncclGetVersion(int *version) {
    if (!version)
        return fail(nullptr, ncclInvalidArgument, "ncclGetVersion: version is NULL");
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}

namespace {
/* NCCL's settings files, as NCCL reads them once per process at its first id or communicator:
 * NAME=VALUE lines ('#' comments) of $NCCL_CONF_FILE (else ~/.nccl.conf), then /etc/nccl.conf,
 * copied into the environment without replacing what is set there. */
void read_conf(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *eq = strchr(line, '=');
        if (line[0] == '#' || !eq)
            continue;
        *eq = '\0';
        setenv(line, eq + 1, 0);
    }
    fclose(f);
}

void load_conf() {
    static std::once_flag once;
    std::call_once(once, [] {
        char path[1024];
        const char *user = getenv("NCCL_CONF_FILE"), *home = getenv("HOME");
        if (user && user[0])
            read_conf(user);
        else if (home && snprintf(path, sizeof path, "%s/.nccl.conf", home) < (int)sizeof path)
            read_conf(path);
        read_conf("/etc/nccl.conf");
    });
}
} // namespace

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    load_conf();
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
    bool blocking = true;
    if (config) {
        if (config->size != sizeof(ncclConfig_t) || config->magic != 0xcafebeef)
            return fail(nullptr, ncclInvalidArgument,
                        "ncclCommInitRankConfig: config not made with NCCL_CONFIG_INITIALIZER");
        blocking = config->blocking != 0; /* NCCL_CONFIG_UNDEF_INT (INT_MIN): blocking */
    }
    load_conf();
    if (const char *b = getenv("NCCL_COMM_BLOCKING")) { /* NCCL's override of the config */
        const long long v = strtoll(b, nullptr, 0);
        if (v == 0 || v == 1)
            blocking = v == 1;
    }
    std::shared_ptr<group> g = std::make_shared<group>();
    g->rank = rank;
    g->nranks = nranks;
    if (const char *t = getenv("KEMU_NCCL_TIMEOUT_S"))
        g->timeout_s = atof(t);
    if (nranks > 1) { /* the segment, made by whichever rank comes first, zero-filled */
        uint64_t v[3];
        memcpy(v, commId.internal, sizeof v);
        char name[64];
        snprintf(name, sizeof name, "/kemu-nccl-%llu-%llu", (unsigned long long)v[1],
                 (unsigned long long)v[2]);
        const int fd = shm_open(name, O_CREAT | O_RDWR, 0600);
        g->bytes = head_bytes + (size_t)nranks * slot_stride;
        void *p = MAP_FAILED;
        if (fd >= 0 && ftruncate(fd, (off_t)g->bytes) == 0)
            p = mmap(nullptr, g->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (fd >= 0)
            close(fd);
        if (p == MAP_FAILED)
            return fail(nullptr, ncclSystemError, "ncclCommInitRankConfig: shared memory %s: %s",
                        name, strerror(errno));
        g->base = (unsigned char *)p;
        barrier(*g, "ncclCommInitRankConfig"); /* every rank has it mapped: the name can go */
        if (rank == 0)
            shm_unlink(name);
    }
    ncclComm *c = new ncclComm();
    c->rank = rank;
    c->nranks = nranks;
    c->blocking = blocking;
    c->g = g;
    std::lock_guard<std::mutex> l(mu);
    live.insert(c);
    *comm = c;
    return started(c, 2);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError) {
    if (!asyncError)
        return fail(nullptr, ncclInvalidArgument, "ncclCommGetAsyncError: asyncError is NULL");
    std::lock_guard<std::mutex> l(mu);
    if (!comm)
        return fail(nullptr, ncclInvalidArgument, "ncclCommGetAsyncError: comm is NULL");
    if (!live.count(comm))
        kemu::fault("ncclCommGetAsyncError: communicator %p is not live", (void *)comm);
    if (comm->in_progress > 0) {
        --comm->in_progress;
        *asyncError = ncclInProgress;
    } else { /* the outcome, seen: other calls may follow */
        comm->awaited = false;
        *asyncError = comm->error;
    }
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    std::lock_guard<std::mutex> l(mu);
    ncclComm *c = checked(comm, "ncclCommFinalize");
    if (!c)
        return fail(nullptr, ncclInvalidArgument, "ncclCommFinalize: comm is NULL");
    if (c->error != ncclSuccess)
        return fail(c, c->error, "ncclCommFinalize: the communicator failed before");
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
    if (c->error != ncclSuccess) /* as the real one: nothing freed; ncclCommAbort ends it */
        return fail(c, c->error, "ncclCommDestroy: the communicator failed before");
    for (auto &k : c->scratch) { /* the caller waited for its collectives (or finalized) */
        (void)cudaFree(k.second.first);
        (void)cudaFree(k.second.second);
    }
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
    comm->g->aborted = true; /* its work still queued does nothing; its scratch is not freed */
    live.erase(comm);
    delete comm;
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
    if ((int)op < 0 || (int)op >= (int)ncclNumOps)
        return fail(nullptr, ncclInvalidArgument, "ncclAllReduce: op %d", (int)op);
    return collective("ncclAllReduce", k_allreduce, comm, sendbuff, recvbuff, count, datatype,
                      (int)op, 0, stream);
}

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t stream) {
    return collective("ncclBroadcast", k_bcast, comm, sendbuff, recvbuff, count, datatype, 0, root,
                      stream);
}

ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream) {
    return collective("ncclAllGather", k_allgather, comm, sendbuff, recvbuff, sendcount, datatype,
                      0, 0, stream);
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
