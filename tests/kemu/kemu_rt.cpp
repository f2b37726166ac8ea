/*
 * kemu's CUDA runtime: the cuda* functions cnnkit calls, on host memory, and the GPU threads of
 * its kernels on fibers (kemu.h says what this finds and what it cannot).
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "kemu.h"
#include "kemu_device.h"
/* the kernels' names for their coordinates are not this file's */
#undef threadIdx
#undef blockIdx
#undef blockDim
#undef gridDim
#undef warpSize
#undef __syncthreads
#undef __shfl_down_sync

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define KEMU_ASAN 1
#endif

/* KEMU_TSAN (make test-emu EMU_TSAN=1): the kernels run under ThreadSanitizer. This file is
 * compiled without TSan's instrumentation (its bookkeeping is no GPU memory), and tells TSan
 * what CUDA orders: each GPU thread, each stream's work and the host are TSan fibers that
 * switch without synchronizing, and happens-before is only what these calls add. */
#if KEMU_TSAN
extern "C" {
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
void __tsan_set_fiber_name(void *fiber, const char *name);
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);
}
#define KEMU_NO_SYNC 1u /* __tsan_switch_to_fiber_no_sync */
#endif

/* ---- happens-before under TSan --------------------------------------------------------------- */
/* A token is a TSan sync object: what released into it happens-before whatever acquires it. Each
 * queued op has one (the host releases at the submit, the op when it is done); outside KEMU_TSAN
 * tokens are empty and these calls do nothing. */
struct kemu_hb {
    char c = 0;
};
typedef std::shared_ptr<kemu_hb> kemu_token;
static inline kemu_token kemu_new_token() {
#if KEMU_TSAN
    return std::make_shared<kemu_hb>();
#else
    return nullptr;
#endif
}
static inline void kemu_release(const kemu_token &t) {
#if KEMU_TSAN
    if (t)
        __tsan_release(t.get());
#endif
}
static inline void kemu_acquire(const kemu_token &t) {
#if KEMU_TSAN
    if (t)
        __tsan_acquire(t.get());
#endif
}

/* ---- handles: the runtime's opaque structs -------------------------------------------------- */
struct CUgraph_st {
    std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
    std::vector<std::function<void()>> ops;
};
/* Work queued on a stream runs when something waits for it (a synchronize, a copy to pageable
 * memory, another stream's wait on an event), never earlier: host code that reads a result
 * before it waited for it reads stale memory here, as it would on a GPU. */
struct kemu_op {
    uint64_t seq;
    std::function<void()> fn;
    kemu_token done;               /* KEMU_TSAN: the submit, then the op's end */
    std::vector<kemu_token> after; /* KEMU_TSAN: the work it waits for */
};
namespace kemu {
struct kemu_pool;
}
struct CUstream_st {
    int device = 0;            /* the device current at its creation: its work runs there */
    CUgraph_st *cap = nullptr; /* the graph this stream records into */
    bool origin = false;       /* cudaStreamBeginCapture was called on it */
    bool invalidated = false;  /* an unsafe call broke the capture */
    bool blocking = true;      /* orders with the legacy stream (no cudaStreamNonBlocking) */
    std::deque<kemu_op> q;
    /* KEMU_TSAN: the latest op's token, the events the next op waits for, the TSan fiber its
     * ops run on, and the fibers of its kernels' GPU threads */
    kemu_token tail;
    std::vector<kemu_token> pending;
    void *tsan = nullptr;
    kemu::kemu_pool *pool = nullptr;
};
/* What an event's markers write: only the latest cudaEventRecord's marker counts, and a marker
 * may run after cudaEventDestroy (the runtime lets the event's work finish). */
struct kemu_event_state {
    uint64_t gen = 0; /* the latest record */
    bool fired = false;
    double ms = 0;
};
struct CUevent_st {
    int device = 0; /* current at its creation */
    bool timing = true;
    bool recorded = false; /* cudaEventRecord was called outside a capture */
    CUstream_st *src = nullptr;
    uint64_t seq = 0;          /* the latest marker's place in src */
    CUgraph_st *cap = nullptr; /* recorded into this capture */
    std::shared_ptr<kemu_event_state> st = std::make_shared<kemu_event_state>();
    kemu_token tok; /* KEMU_TSAN: the latest marker's token */
};

namespace kemu {
namespace {

std::recursive_mutex big; /* one GPU: everything below is serialized */
std::map<uintptr_t, size_t> dev_allocs, host_allocs;
std::map<uintptr_t, int> dev_owner; /* each allocation's device (the one current at cudaMalloc) */
/* As in CUDA, the current device is the calling thread's (cudaSetDevice). */
thread_local int current_device_ = 0;
std::set<CUstream_st *> streams;
std::set<CUevent_st *> events;
CUstream_st legacy;    /* stream 0 */
uint64_t next_seq = 0; /* every queued op's number, in submission order */
/* KEMU_ORDER=reverse: the threads between two barriers, and the blocks of a grid, run last to
 * first, so a missing barrier whose reader comes after its writer in one order shows in the other
 */
const bool reverse_order = getenv("KEMU_ORDER") && !strcmp(getenv("KEMU_ORDER"), "reverse");
/* KEMU_EAGER=1: work runs when it is submitted (to tell an ordering error from another) */
const bool eager = getenv("KEMU_EAGER") && atoi(getenv("KEMU_EAGER"));
thread_local cudaError_t last_error = cudaSuccess;

/* KEMU_TSAN: kemu's own work is no GPU program's: while a quiet lives, TSan records none of the
 * memory accesses, allocations and frees of the fiber that runs it (a queue entry the host made
 * and a stream's work freed would read as a race). A loud inside one (one level deep) lets TSan
 * see the host touch user memory: the bytes of a copy staged at the call. */
struct quiet {
    quiet() {
#if KEMU_TSAN
        __tsan_ignore_thread_begin();
#endif
    }
    ~quiet() {
#if KEMU_TSAN
        __tsan_ignore_thread_end();
#endif
    }
};
struct loud {
    loud() {
#if KEMU_TSAN
        __tsan_ignore_thread_end();
#endif
    }
    ~loud() {
#if KEMU_TSAN
        __tsan_ignore_thread_begin();
#endif
    }
};
/* an entry point of the runtime: the one GPU's lock, and quiet */
struct api_lock {
    std::lock_guard<std::recursive_mutex> l;
    quiet q;
    api_lock() : l(big) {}
};
const unsigned char poison = 0xFF; /* NaN as fp32 and as bf16: a read of unset memory shows */

double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

bool in_map(const std::map<uintptr_t, size_t> &m, const void *p, size_t bytes) {
    const uintptr_t a = (uintptr_t)p;
    auto it = m.upper_bound(a);
    if (it == m.begin())
        return false;
    --it;
    return a >= it->first && bytes <= it->second && a - it->first <= it->second - bytes;
}

cudaError_t set_error(cudaError_t e) {
    if (e != cudaSuccess)
        last_error = e;
    return e;
}

/* A capture in progress on the calling thread makes "unsafe" calls (synchronizing, allocating)
 * an error that also invalidates the capture (cudaStreamCaptureModeThreadLocal). */
thread_local CUstream_st *thread_capture = nullptr;
bool unsafe_call() {
    if (!thread_capture)
        return false;
    thread_capture->invalidated = true;
    return true;
}

} // namespace

void fault(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kemu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
    abort();
}

bool is_device(const void *p, size_t bytes) {
    api_lock l;
    return in_map(dev_allocs, p, bytes ? bytes : 1);
}

/* The user stream s, or nullptr for the legacy stream. */
static CUstream_st *stream_of(cudaStream_t s) {
    if (!s || s == cudaStreamLegacy || s == cudaStreamPerThread)
        return nullptr;
    if (!streams.count(s))
        fault("a destroyed or unknown stream %p was used", (void *)s);
    return s;
}

int current_device() {
    return current_device_;
}

void check_handle(const char *fn, int handle_device, cudaStream_t s) {
    api_lock l;
    if (handle_device != current_device_)
        fault("%s: a handle of device %d used while device %d is current", fn, handle_device,
              current_device_);
    const CUstream_st *st = stream_of(s);
    if (st && st->device != handle_device)
        fault("%s: a handle of device %d set to a stream of device %d", fn, handle_device,
              st->device);
}

namespace {

/* KEMU_PROTECT=1: device memory is mapped pages that only kemu's own work (queued work, the
 * poisoning of new memory) may touch; host code that reads or writes device memory directly
 * (it would fault on a GPU) stops with a message. Freed memory is unmapped. */
const bool protect = getenv("KEMU_PROTECT") && atoi(getenv("KEMU_PROTECT"));
int open_depth = 0;
size_t page_round(size_t n) {
    const size_t pg = 4096;
    return (n + pg - 1) / pg * pg;
}
void set_access(int prot) {
    for (const auto &a : dev_allocs)
        if (mprotect((void *)a.first, page_round(a.second), prot) != 0)
            fault("mprotect: %s", strerror(errno));
}
struct device_open { /* device memory readable and writable while one lives */
    device_open() {
        if (protect && open_depth++ == 0)
            set_access(PROT_READ | PROT_WRITE);
    }
    ~device_open() {
        if (protect && --open_depth == 0)
            set_access(PROT_NONE);
    }
};

void on_segv(int sig, siginfo_t *si, void *) {
    const uintptr_t a = (uintptr_t)si->si_addr;
    for (const auto &d : dev_allocs)
        if (a >= d.first && a < d.first + page_round(d.second)) {
            char msg[160];
            const int len = snprintf(msg, sizeof msg,
                                     "kemu: host code touched device memory at %p (allocation %p, "
                                     "%zu bytes): a GPU would fault here\n",
                                     (void *)a, (void *)d.first, d.second);
            if (len > 0)
                (void)!write(2, msg, (size_t)len);
            abort();
        }
    signal(sig, SIG_DFL);
    raise(sig);
}

} // namespace

/* ---- TSan's fibers: the host, each stream's work, each GPU thread ---------------------------- */
namespace {

CUstream_st *running = nullptr;       /* the stream whose op runs now */
const size_t fiber_stack = 256 << 10; /* a GPU thread's stack */

#if KEMU_TSAN
/* GPU threads run on a stream's pool of TSan fibers, each with its own stack (a stack serves one
 * fiber: TSan checks stack memory too). A fiber serves many GPU threads one after another, and
 * TSan orders what one fiber does: a block takes a group of the pool chosen by a hash of the
 * launch and the block, so two blocks share fibers (and are not checked against each other)
 * with chance n / KEMU_TSAN_FIBERS (new for each launch), not by a pattern of blockIdx. */
struct kemu_slot {
    void *fiber = nullptr;
    char *stack = nullptr;
    /* its GPU threads' ends: one object per fiber keeps TSan's releases cheap (a sync object
     * many threads release into costs O(threads) per release) */
    char *end = nullptr;
    uint64_t launch = 0; /* the latest launch it served */
};
/* KEMU_TSAN_FIBERS: the pool's size; TSan's vector clocks (and so every barrier) cost O(fibers),
 * and a block of n threads shares its fibers with another block with chance n / size */
const int pool_size = [] {
    const char *e = getenv("KEMU_TSAN_FIBERS");
    const int v = e ? atoi(e) : 512;
    return v < 64 ? 64 : v > 4096 ? 4096 : v;
}();
/* a pool's slots: a block of up to 1024 threads takes a group of them */
size_t slot_count() {
    return pool_size < 1024 ? 1024 : (size_t)pool_size;
}
std::vector<kemu_pool *> spare_pools; /* of destroyed streams */
int live_pools = 0;
kemu_pool *shared_pool = nullptr; /* when TSan's thread limit (8128) leaves no room for more */

/* Every fiber is made by this one, which does nothing else: a new fiber starts with its maker's
 * clock, and this one's is the host's at its first submit (all GPU work comes after it). */
void *tsan_factory = nullptr;

void *make_fiber(const char *name) {
    void *me = __tsan_get_current_fiber();
    if (!tsan_factory)
        tsan_factory = __tsan_create_fiber(0);
    __tsan_switch_to_fiber(tsan_factory, KEMU_NO_SYNC);
    void *f = __tsan_create_fiber(0);
    __tsan_switch_to_fiber(me, KEMU_NO_SYNC);
    __tsan_set_fiber_name(f, name);
    return f;
}

/* The TSan fiber of st's work (made at its first submit). */
void *stream_fiber(CUstream_st *st) {
    if (!st->tsan)
        st->tsan =
            make_fiber(st == &legacy ? "kemu: the legacy stream's work" : "kemu: a stream's work");
    return st->tsan;
}
#endif

} // namespace

#if KEMU_TSAN
struct kemu_pool {
    std::vector<kemu_slot> slot = std::vector<kemu_slot>(slot_count());
};

namespace {

kemu_pool *pool_of(CUstream_st *st) {
    if (st->pool)
        return st->pool;
    if (!spare_pools.empty()) {
        st->pool = spare_pools.back();
        spare_pools.pop_back();
    } else if ((live_pools + 1) * (int)slot_count() > 6000) {
        if (!shared_pool)
            shared_pool = new kemu_pool;
        st->pool = shared_pool;
    } else {
        ++live_pools;
        st->pool = new kemu_pool;
    }
    return st->pool;
}

/* Slot k of the running stream's pool, its fiber and stack made at first use. */
kemu_slot &pool_slot(int k) {
    kemu_slot &s = pool_of(running ? running : &legacy)->slot[k];
    if (!s.fiber) {
        s.fiber = make_fiber("kemu: a GPU thread");
        s.end = (char *)malloc(1);
        void *m = mmap(nullptr, fiber_stack, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            fault("mmap of a fiber stack: %s", strerror(errno));
        s.stack = (char *)m;
    }
    return s;
}

} // namespace
#endif

/* Runs one queued op of st on st's TSan fiber: after the host's work before the submit and the
 * work the op waits for; its end released for what waits on it. */
static void run_op(CUstream_st *st, kemu_op &op) {
    CUstream_st *outer = running;
    running = st;
#if KEMU_TSAN
    void *prev = __tsan_get_current_fiber(), *me = stream_fiber(st);
    if (prev != me)
        __tsan_switch_to_fiber(me, KEMU_NO_SYNC);
    for (const kemu_token &t : op.after)
        kemu_acquire(t);
    kemu_acquire(op.done);
    {
        /* quiet: an op runs on the host's stack, whose bytes the host used before (a copy's or
         * a memset's bytes are loud, and a kernel's threads are fibers of their own) */
        quiet q;
        op.fn();
    }
    for (const kemu_token &t : op.after) /* an event's wait runs the marker it waits for */
        kemu_acquire(t);
    kemu_release(op.done);
    if (prev != me)
        __tsan_switch_to_fiber(prev, KEMU_NO_SYNC);
#else
    op.fn();
#endif
    running = outer;
}

/* Runs st's queued work numbered up to upto, in order. */
static void drain(CUstream_st *st, uint64_t upto) {
    device_open open;
    quiet q; /* the queue; each op's own work runs on its stream's fiber, which is not quiet */
    while (!st->q.empty() && st->q.front().seq <= upto) {
        kemu_op op = std::move(st->q.front());
        st->q.pop_front();
        run_op(st, op);
    }
}

static void drain_all() {
    drain(&legacy, UINT64_MAX);
    for (CUstream_st *o : streams)
        drain(o, UINT64_MAX);
}

/* KEMU_TSAN: the host waited for st's work so far (a synchronizing call returned). */
static void host_waited(CUstream_st *st) {
    kemu_acquire((st ? st : &legacy)->tail);
}

static void host_waited_all() {
    host_waited(&legacy);
    for (CUstream_st *o : streams)
        host_waited(o);
}

/* Queues fn on st (nullptr: legacy) with the legacy stream's ordering: legacy work waits for the
 * blocking streams' earlier work, and their work for the legacy stream's. */
static uint64_t enqueue(CUstream_st *st, std::function<void()> fn) {
    const uint64_t upto = next_seq;
    if (!st) {
        std::vector<CUstream_st *> wait;
        for (CUstream_st *o : streams)
            if (o->blocking && !o->q.empty())
                wait.push_back(o);
        if (!wait.empty())
            legacy.q.push_back({++next_seq, [wait, upto]() {
                                    for (CUstream_st *o : wait)
                                        if (streams.count(o))
                                            drain(o, upto);
                                }});
        st = &legacy;
    } else if (st->blocking && !legacy.q.empty()) {
        st->q.push_back({++next_seq, [upto]() { drain(&legacy, upto); }});
    }
    kemu_op op{++next_seq, std::move(fn)};
#if KEMU_TSAN
    /* the op comes after the host's work so far, its stream's previous op, the events waited
     * for, and (legacy-stream rules) the blocking streams' or the legacy stream's latest op */
    stream_fiber(st);
    op.done = kemu_new_token();
    kemu_release(op.done);
    op.after.push_back(st->tail);
    if (st == &legacy) {
        for (CUstream_st *o : streams)
            if (o->blocking)
                op.after.push_back(o->tail);
    } else if (st->blocking) {
        op.after.push_back(legacy.tail);
    }
    op.after.insert(op.after.end(), st->pending.begin(), st->pending.end());
    st->pending.clear();
    st->tail = op.done;
#endif
    st->q.push_back(std::move(op));
    const uint64_t seq = next_seq;
    if (eager)
        drain(st, seq);
    return seq;
}

bool capturing(cudaStream_t s) {
    api_lock l;
    CUstream_st *st = stream_of(s);
    return st && st->cap;
}

cudaError_t submit(cudaStream_t s, std::function<void()> op) {
    api_lock l;
    CUstream_st *st = stream_of(s);
    if (!st && thread_capture) { /* the legacy stream while this thread captures */
        thread_capture->invalidated = true;
        return set_error(cudaErrorStreamCaptureImplicit);
    }
    if (st && st->cap) {
        if (st->invalidated)
            return set_error(cudaErrorStreamCaptureInvalidated);
        st->cap->ops.push_back(std::move(op));
        return cudaSuccess;
    }
    enqueue(st, std::move(op));
    return cudaSuccess;
}

/* ---- fibers: one per GPU thread of the running block ---------------------------------------- */
namespace {

#if defined(__x86_64__)
/* kemu_swap(&save, next): saves the callee-saved registers and the FP control words on this stack,
 * stores its pointer in *save and resumes the stack next as it was saved. */
extern "C" void kemu_swap(void **save, void *next);
asm(R"(
    .text
    .p2align 4
    .type kemu_swap,@function
kemu_swap:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size kemu_swap,.-kemu_swap
)");
#else
#error "kemu's fibers are written for x86-64"
#endif

enum class st { ready, block_wait, warp_wait, done };

struct fiber {
    void *sp = nullptr;
    char *stack = nullptr;
    st state = st::ready;
    int line = 0;       /* where it waits */
    unsigned mask = 0;  /* its warp barrier's lanes */
    uint64_t value = 0; /* its shuffle value */
    unsigned phase = 0; /* shuffles done: each is two warp barriers */
    thread_coords at;
#ifdef KEMU_ASAN
    void *fake = nullptr;
#endif
#if KEMU_TSAN
    void *tsan = nullptr; /* the pool's fiber that runs this GPU thread now */
    char *end = nullptr;  /* its end's sync object */
#endif
};

#if KEMU_TSAN
/* A block barrier's TSan sync object: every thread releases into it when it arrives and
 * acquires it when it leaves. Two alternate (gen & 1), so a thread that left and reaches the
 * next opening cannot release into the object slower threads have yet to acquire. */
struct kemu_bar {
    char *obj = nullptr; /* freed after the block: TSan forgets its syncs */
    unsigned gen = 0;
};
#endif

struct block_run {
    std::vector<fiber> f;
    int n = 0, cur = -1;
    void *sched_sp = nullptr;
    const std::function<void()> *body = nullptr;
    const launch_site *site = nullptr;
    bool waited = false; /* a thread of this launch used a barrier or a shuffle */
    bool direct = false; /* threads run one after another on this stack, no fibers */
#if KEMU_TSAN
    void *sched_tsan = nullptr; /* the fiber of the launch's stream work */
    char *launch = nullptr;     /* the launch's sync object */
    std::vector<char *> ends;   /* those of the fibers the launch used */
    kemu_bar bar; /* __syncthreads of the block (a shuffle orders no memory: not synced) */
#endif
};
/* the block being run (under big); never freed: GPU threads read their coordinates in it */
block_run &run = *new block_run;
thread_coords host_pos; /* outside a kernel: all zero */

#ifdef KEMU_ASAN
/* ASan is told of each switch, so it checks each GPU thread's stack as its own. */
const void *sched_bottom = nullptr;
size_t sched_size = 0;
#endif

void switch_to_sched(fiber &me, bool exiting) {
#ifdef KEMU_ASAN
    __sanitizer_start_switch_fiber(exiting ? nullptr : &me.fake, sched_bottom, sched_size);
#endif
#if KEMU_TSAN
    __tsan_switch_to_fiber(run.sched_tsan, KEMU_NO_SYNC);
#endif
    kemu_swap(&me.sp, run.sched_sp);
#ifdef KEMU_ASAN
    __sanitizer_finish_switch_fiber(me.fake, &sched_bottom, &sched_size);
#endif
}

void switch_to_fiber(fiber &f) {
#ifdef KEMU_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f.stack, fiber_stack);
#endif
#if KEMU_TSAN
    __tsan_switch_to_fiber(f.tsan, KEMU_NO_SYNC);
#endif
    kemu_swap(&run.sched_sp, f.sp);
#ifdef KEMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

extern "C" void kemu_fiber_main() {
    fiber &me = run.f[run.cur];
#ifdef KEMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &sched_bottom, &sched_size);
#endif
#if KEMU_TSAN
    __tsan_acquire(run.launch); /* the launch happens-before the kernel's threads */
#endif
    (*run.body)();
#if KEMU_TSAN
    __tsan_release(me.end); /* ... and they before what waits for the kernel */
#endif
    me.state = st::done;
    switch_to_sched(me, true);
    fault("a finished GPU thread was resumed");
}

void fiber_start(fiber &f) {
    if (!f.stack) {
        void *m = mmap(nullptr, fiber_stack, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            fault("mmap of a fiber stack: %s", strerror(errno));
        f.stack = (char *)m;
    }
    /* the frame kemu_swap pops: control words, six registers, then the entry as return address
     * (and a dummy return address above it, so the entry sees the ABI's stack alignment) */
    uint64_t *top = (uint64_t *)(f.stack + fiber_stack);
    *--top = 0;
    *--top = (uint64_t)(uintptr_t)&kemu_fiber_main;
    for (int i = 0; i < 6; ++i)
        *--top = 0;
    --top;
    unsigned mxcsr;
    unsigned short fcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fcw));
    memcpy(top, &mxcsr, 4);
    memcpy((char *)top + 4, &fcw, 2);
    f.sp = top;
    f.state = st::ready;
    f.phase = 0;
}

/* Releases the waiters of warp barriers whose lanes have all arrived, and the block barrier
 * when every live thread waits there. Faults on a barrier that can never open. */
bool release(const char *file) {
    bool any = false;
    const int n = run.n;
    for (int w = 0; w * 32 < n; ++w) {
        const int lo = w * 32, hi = lo + 32 < n ? lo + 32 : n;
        unsigned done = 0;
        for (int i = lo; i < hi; ++i)
            if (run.f[i].state == st::done)
                done |= 1u << (i - lo);
        const unsigned present = (hi - lo == 32 ? 0xffffffffu : (1u << (hi - lo)) - 1) & ~done;
        /* the lanes waiting with one mask go on together once every live lane of it arrived, all
         * at one call site (the same intrinsic, as the rule requires) */
        for (int i = lo; i < hi; ++i) {
            if (run.f[i].state != st::warp_wait)
                continue;
            const unsigned mask = run.f[i].mask, need = mask & present;
            unsigned waiting = 0;
            for (int j = lo; j < hi; ++j)
                if (run.f[j].state == st::warp_wait && run.f[j].mask == mask)
                    waiting |= 1u << (j - lo);
            if ((waiting & need) != need)
                continue;
            for (int j = lo; j < hi; ++j)
                if (waiting >> (j - lo) & 1u) {
                    if (run.f[j].line != run.f[i].line)
                        fault("%s: lanes of one warp meet at __shfl_down_sync from lines %d and %d",
                              file, run.f[i].line, run.f[j].line);
                    run.f[j].state = st::ready;
                }
            any = true;
        }
    }
    if (any)
        return true;
    int live = 0, at_block = 0, line = -1;
    for (int i = 0; i < n; ++i) {
        if (run.f[i].state == st::done)
            continue;
        ++live;
        if (run.f[i].state == st::block_wait) {
            if (line >= 0 && run.f[i].line != line)
                fault("%s: threads of one block wait at different __syncthreads (lines %d, %d)",
                      file, line, run.f[i].line);
            line = run.f[i].line;
            ++at_block;
        }
    }
    if (live && at_block == live) {
        for (int i = 0; i < n; ++i)
            if (run.f[i].state == st::block_wait)
                run.f[i].state = st::ready;
#if KEMU_TSAN
        ++run.bar.gen;
#endif
        return true;
    }
    if (live)
        fault("%s: a block can never go on (a warp shuffle whose lanes did not all arrive, or a "
              "__syncthreads some threads skip)",
              file);
    return false;
}

/* A block of a kernel whose first block never waited: each thread runs to its end in turn. */
/* Block bid's threads, their coordinates set: how many. */
int block_threads(const dim3 &g, const dim3 &b, const uint3 &bid) {
    const int n = (int)(b.x * b.y * b.z);
    run.f.reserve(1024); /* never moved: GPU threads read their coordinates there */
    if ((int)run.f.size() < n)
        run.f.resize(n);
    run.n = n;
    for (int i = 0; i < n; ++i)
        run.f[i].at = {make_uint3(i % b.x, (i / b.x) % b.y, i / (b.x * b.y)), bid, b, g};
    return n;
}

void run_block_direct(const dim3 &g, const dim3 &b, const uint3 &bid) {
    const int n = block_threads(g, b, bid);
    run.direct = true;
    for (int k = 0; k < n; ++k) {
        const int i = reverse_order ? n - 1 - k : k;
        run.cur = i;
        (*run.body)();
    }
    run.cur = -1;
    run.direct = false;
}

/* Shared memory: every __shared__ variable's slot (KEMU_SHARED, kemu_device.h), made at its first
 * use, in pages of kemu's own. */
const size_t shared_cap = (size_t)64 << 20;
char *shared_base = nullptr;
size_t shared_used = 0;
std::map<const void *, char *> shared_slots; /* by the variable's tag */

#if KEMU_TSAN
uint64_t launches = 0; /* numbers the launches, for the choice of fibers */

/* Block bid's GPU threads get a group of n fibers of the pool (and their stacks). */
void take_fibers(const dim3 &g, const uint3 &bid, int n) {
    const uint64_t groups = pool_size >= 2 * n ? (uint64_t)(pool_size / n) : 1;
    uint64_t h = (launches * 0x9E3779B97F4A7C15ull) ^
                 (bid.x + (uint64_t)g.x * (bid.y + (uint64_t)g.y * bid.z));
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    const int base = (int)(h % groups) * n;
    for (int i = 0; i < n; ++i) {
        kemu_slot &sl = pool_slot(base + i);
        run.f[i].tsan = sl.fiber;
        run.f[i].stack = sl.stack;
        run.f[i].end = sl.end;
        if (sl.launch != launches) {
            sl.launch = launches;
            run.ends.push_back(sl.end);
        }
    }
}
#endif

/* Fills the block's shared memory with NaN bytes. Under KEMU_TSAN its pages are mapped anew
 * first, which TSan takes as new memory (its past accesses forgotten, as a block on a GPU gets
 * shared memory no other block of the grid touches) without ordering the blocks. */
void reset_shared() {
    if (!shared_used)
        return;
    quiet q;
#if KEMU_TSAN
    if (mmap(shared_base, page_round(shared_used), PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
        fault("mmap of shared memory: %s", strerror(errno));
#endif
    memset(shared_base, poison, shared_used);
}

void run_block(const dim3 &g, const dim3 &b, const uint3 &bid) {
    reset_shared();
    const int n = block_threads(g, b, bid);
#if KEMU_TSAN
    take_fibers(g, bid, n);
    run.bar.obj = (char *)malloc(2);
    run.bar.gen = 0;
#endif
    for (int i = 0; i < n; ++i)
        fiber_start(run.f[i]);
    for (;;) {
        bool ran = false;
        for (int k = 0; k < n; ++k) {
            const int i = reverse_order ? n - 1 - k : k;
            if (run.f[i].state == st::ready) {
                run.cur = i;
                switch_to_fiber(run.f[i]);
                ran = true;
            }
        }
        run.cur = -1;
        if (!release(run.site->file) && !ran)
            break;
        bool all_done = true;
        for (int i = 0; i < n && all_done; ++i)
            all_done = run.f[i].state == st::done;
        if (all_done)
            break;
    }
#if KEMU_TSAN
    free(run.bar.obj);
#endif
}

fiber &me_in_kernel(const char *what) {
    if (run.cur < 0)
        fault("%s outside a kernel", what);
    if (run.direct)
        fault("%s:%d: %s in a block after a first block that never waited (kemu runs those "
              "blocks without fibers)",
              run.site->file, run.site->line, what);
    run.waited = true;
    return run.f[run.cur];
}

} // namespace

void *shared_slot(const void *tag, size_t bytes, size_t align) {
    quiet q;
    auto it = shared_slots.find(tag);
    if (it != shared_slots.end())
        return it->second;
    if (!shared_base) {
        void *m = mmap(nullptr, shared_cap, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            fault("mmap of shared memory: %s", strerror(errno));
        shared_base = (char *)m;
    }
    align = align < 16 ? 16 : align;
    const size_t at = (shared_used + align - 1) / align * align;
    if (at + bytes > shared_cap)
        fault("%s:%d: the kernels' __shared__ variables need more than %zu bytes in all",
              run.site ? run.site->file : "?", run.site ? run.site->line : 0, shared_cap);
    shared_used = at + bytes;
    memset(shared_base + at, poison, bytes); /* new to this block too */
    return shared_slots[tag] = shared_base + at;
}

const thread_coords &coords() {
    return run.cur < 0 ? host_pos : run.f[run.cur].at;
}

void sync_block(int line) {
    fiber &me = me_in_kernel("__syncthreads");
#if KEMU_TSAN
    char *obj = run.bar.obj + (run.bar.gen & 1);
    __tsan_release(obj);
#endif
    me.state = st::block_wait;
    me.line = line;
    switch_to_sched(me, false);
#if KEMU_TSAN
    __tsan_acquire(obj); /* every thread of the block arrived */
#endif
}

uint64_t shfl_down(unsigned mask, uint64_t bits, unsigned delta, int width, int line) {
    fiber &me = me_in_kernel("__shfl_down_sync");
    const int i = run.cur, lane = i % 32;
    if (!(mask >> lane & 1u))
        fault("%s:%d: __shfl_down_sync from lane %d, not in its mask %#x", run.site->file, line,
              lane, mask);
    me.value = bits;
    me.mask = mask;
    me.line = line;
    me.state = st::warp_wait;
    switch_to_sched(me, false); /* all lanes have written */
    const int seg = lane / width * width, src = lane + (int)delta;
    uint64_t r = bits;
    if (src < seg + width && src - lane < 32) {
        const int j = i - lane + src;
        if (j >= run.n || !(mask >> src & 1u) || run.f[j].state == st::done)
            fault("%s:%d: __shfl_down_sync reads lane %d, absent, exited or not in mask %#x",
                  run.site->file, line, src, mask);
        r = run.f[j].value;
    }
    me.state = st::warp_wait;
    switch_to_sched(me, false); /* all lanes have read */
    return r;
}

/* Whether a kernel may dereference p: device memory or page-locked host memory (one past the
 * end counts, as an end pointer is valid). */
static bool kernel_visible(const void *p) {
    const void *before = (const void *)((uintptr_t)p - 1);
    return in_map(dev_allocs, p, 1) || in_map(host_allocs, p, 1) || in_map(dev_allocs, before, 1) ||
           in_map(host_allocs, before, 1);
}

#if KEMU_TSAN
/* TSan calls this after it printed a report (before halt_on_error ends the program): which GPU
 * thread made the access reported first, when one did (TSan names the fiber only). */
extern "C" void __tsan_on_report(const void *) {
    const launch_site *site = run.site;
    if (run.cur >= 0 && __tsan_get_current_fiber() == run.f[run.cur].tsan) {
        const thread_coords &c = run.f[run.cur].at;
        fprintf(stderr,
                "kemu: the access reported first is GPU thread (%u, %u, %u) of block (%u, %u, %u) "
                "(grid (%u, %u, %u), block (%u, %u, %u)) of the kernel launched at %s:%d\n",
                c.tid.x, c.tid.y, c.tid.z, c.bid.x, c.bid.y, c.bid.z, c.gdim.x, c.gdim.y, c.gdim.z,
                c.bdim.x, c.bdim.y, c.bdim.z, site->file, site->line);
    } else if (running) {
        fprintf(stderr,
                "kemu: the access reported first is a stream's work (a copy, a memset, a "
                "library call)%s\n",
                site ? ", during a kernel" : "");
    } else {
        fprintf(stderr, "kemu: the access reported first is the host's\n");
    }
}
#endif

/* The device of the kernel being checked (its stream's), for device_of. */
int checking_device = 0;

/* The device of the allocation holding p (or ending at p), -1 for host memory. No peer access
 * is enabled anywhere, so a kernel may only read its own device's memory. */
static int device_of(const void *p) {
    for (const void *q : {p, (const void *)((uintptr_t)p - 1)}) {
        auto it = dev_owner.upper_bound((uintptr_t)q);
        if (it != dev_owner.begin() && in_map(dev_allocs, q, 1))
            return std::prev(it)->second;
    }
    return -1;
}

void check_kernel_pointer(const launch_site &at, int index, const void *p) {
    if (p && !kernel_visible(p))
        fault("%s:%d: kernel argument %d (%p) is not device memory", at.file, at.line, index, p);
    const int d = p ? device_of(p) : -1;
    if (d >= 0 && d != checking_device)
        fault("%s:%d: kernel argument %d (%p) is memory of device %d, the kernel runs on device "
              "%d (no peer access)",
              at.file, at.line, index, p, d, checking_device);
}

void check_member_pointer(const launch_site &at, int index, const char *member, const void *p) {
    if (p && !kernel_visible(p))
        fault("%s:%d: kernel argument %d's member %s (%p) is not device memory", at.file, at.line,
              index, member, p);
    const int d = p ? device_of(p) : -1;
    if (d >= 0 && d != checking_device)
        fault("%s:%d: kernel argument %d's member %s (%p) is memory of device %d, the kernel "
              "runs on device %d (no peer access)",
              at.file, at.line, index, member, p, d, checking_device);
}

/* KEMU_LAUNCH_LOG=FILE: each kernel run appends "site grid block" there (which kernels a set of
 * tests runs, and with how many blocks and warps: the race checker needs both above one). */
FILE *launch_log() {
    static FILE *f = [] {
        const char *p = getenv("KEMU_LAUNCH_LOG");
        FILE *l = p && *p ? fopen(p, "a") : nullptr;
        if (l)
            setvbuf(l, nullptr, _IOLBF, 0);
        return l;
    }();
    return f;
}

void launch(const cfg &c, std::function<void()> body, std::function<void()> check) {
    api_lock l;
    const long long threads = (long long)c.block.x * c.block.y * c.block.z;
    if (!c.grid.x || !c.grid.y || !c.grid.z || !threads || threads > 1024 || c.block.z > 64 ||
        c.grid.y > 65535 || c.grid.z > 65535 || c.shmem > 48 * 1024) {
        set_error(cudaErrorInvalidConfiguration);
        return;
    }
    /* CUDA: a kernel launch fails if its stream is not the current device's */
    CUstream_st *st = stream_of(c.stream);
    if (st && st->device != current_device_) {
        set_error(cudaErrorInvalidResourceHandle);
        return;
    }
    const int dev = current_device_;
    const cfg cc = c;
    const cudaError_t e = submit(c.stream, [cc, body, check, dev]() {
        quiet q; /* the launch's bookkeeping: the GPU threads are other fibers, not quiet */
        checking_device = dev;
        check();
        if (run.cur >= 0)
            fault("%s:%d: a kernel launched from a kernel", cc.at.file, cc.at.line);
        run.body = &body;
        run.site = &cc.at;
        run.waited = false;
        if (FILE *l = launch_log())
            fprintf(l, "%s:%d %u,%u,%u %u,%u,%u\n", cc.at.file, cc.at.line, cc.grid.x, cc.grid.y,
                    cc.grid.z, cc.block.x, cc.block.y, cc.block.z);
#if KEMU_TSAN
        /* the stream's work so far happens-before every GPU thread; the grid's blocks are
         * unordered among themselves (every block on fibers, none run "direct") */
        run.sched_tsan = __tsan_get_current_fiber();
        run.launch = (char *)malloc(1);
        run.ends.clear();
        __tsan_release(run.launch);
        ++launches;
        const bool all_fibers = true;
#else
        const bool all_fibers = false;
#endif
        bool first = true;
        for (unsigned zz = 0; zz < cc.grid.z; ++zz)
            for (unsigned yy = 0; yy < cc.grid.y; ++yy)
                for (unsigned xx = 0; xx < cc.grid.x; ++xx) {
                    const unsigned z = reverse_order ? cc.grid.z - 1 - zz : zz;
                    const unsigned y = reverse_order ? cc.grid.y - 1 - yy : yy;
                    const unsigned x = reverse_order ? cc.grid.x - 1 - xx : xx;
                    if (first || run.waited || all_fibers)
                        run_block(cc.grid, cc.block, make_uint3(x, y, z));
                    else
                        run_block_direct(cc.grid, cc.block, make_uint3(x, y, z));
                    first = false;
                }
#if KEMU_TSAN
        for (char *e : run.ends)
            __tsan_acquire(e);
        free(run.launch);
#endif
        run.body = nullptr;
        run.site = nullptr;
    });
    set_error(e);
}

} // namespace kemu

/* ---- the runtime API ------------------------------------------------------------------------ */
using namespace kemu;
#define LOCK api_lock lock_

extern "C" {

cudaError_t cudaGetLastError(void) {
    const cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) {
    return last_error;
}

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess:
        return "cudaSuccess";
    case cudaErrorInvalidValue:
        return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
        return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
        return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice:
        return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
        return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady:
        return "cudaErrorNotReady";
    case cudaErrorStreamCaptureUnsupported:
        return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
        return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureImplicit:
        return "cudaErrorStreamCaptureImplicit";
    case cudaErrorStreamCaptureUnmatched:
        return "cudaErrorStreamCaptureUnmatched";
    case cudaErrorIllegalState:
        return "cudaErrorIllegalState";
    default:
        return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess:
        return "no error";
    case cudaErrorInvalidValue:
        return "invalid argument";
    case cudaErrorMemoryAllocation:
        return "out of memory";
    case cudaErrorInvalidConfiguration:
        return "invalid configuration argument";
    case cudaErrorStreamCaptureUnsupported:
        return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit:
        return "operation would make the legacy stream depend on a capturing blocking stream";
    default:
        return cudaGetErrorName(e);
    }
}

/* KEMU_DEVICES=N (default 1): a host of N GPUs. Their memory is one (host) memory, but each
 * stream, event and allocation belongs to the device current at its creation: a kernel launch on
 * another device's stream fails, as does recording an event on another device's stream, and a
 * kernel that reads another device's memory stops the test (no peer access); the fakes of cuDNN
 * and cuBLAS stop one whose handle is used with another device current. */
static int device_count() {
    const char *e = getenv("KEMU_DEVICES");
    const int n = e ? atoi(e) : 1;
    return n >= 1 ? n : 1;
}

cudaError_t cudaGetDeviceCount(int *count) {
    *count = device_count();
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= device_count())
        return set_error(cudaErrorInvalidDevice);
    current_device_ = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    *device = current_device_;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}

/* An H200's figures (sm_90, 132 SMs): launch shapes and plans follow the target's paths. */
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr attr, int device) {
    if (device < 0 || device >= device_count())
        return set_error(cudaErrorInvalidDevice);
    switch (attr) {
    case cudaDevAttrComputeCapabilityMajor:
        *v = 9;
        break;
    case cudaDevAttrComputeCapabilityMinor:
        *v = 0;
        break;
    case cudaDevAttrMultiProcessorCount:
        *v = 132;
        break;
    case cudaDevAttrClockRate:
        *v = 1980000;
        break;
    case cudaDevAttrMemoryClockRate:
        *v = 3201000;
        break;
    case cudaDevAttrGlobalMemoryBusWidth:
        *v = 6144;
        break;
    case cudaDevAttrMaxThreadsPerBlock:
        *v = 1024;
        break;
    case cudaDevAttrWarpSize:
        *v = 32;
        break;
    case cudaDevAttrL2CacheSize:
        *v = 60 << 20;
        break;
    default:
        return set_error(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
    if (device < 0 || device >= device_count())
        return set_error(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "kemu (CPU emulation of an sm_90 GPU)");
    p->totalGlobalMem = (size_t)16 << 30;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 132;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->sharedMemPerBlock = 48 << 10;
    p->memoryBusWidth = 6144;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    LOCK;
    if (unsafe_call())
        return set_error(cudaErrorStreamCaptureUnsupported);
    drain_all();
    host_waited_all();
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
    LOCK;
    *p = nullptr;
    if (unsafe_call())
        return set_error(cudaErrorStreamCaptureUnsupported);
    if (bytes > ((size_t)16 << 30))
        return set_error(cudaErrorMemoryAllocation);
    const size_t n = bytes ? bytes : 1;
    void *m = nullptr;
    if (protect) {
        static bool handler = false;
        if (!handler) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_sigaction = on_segv;
            sa.sa_flags = SA_SIGINFO;
            sigaction(SIGSEGV, &sa, nullptr);
            handler = true;
        }
        m = mmap(nullptr, page_round(n), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                 0);
        if (m == MAP_FAILED)
            return set_error(cudaErrorMemoryAllocation);
        memset(m, poison, n);
        if (!open_depth && mprotect(m, page_round(n), PROT_NONE) != 0)
            fault("mprotect: %s", strerror(errno));
    } else if (posix_memalign(&m, 256, n) != 0) { /* exactly n bytes: ASan sees past them */
        return set_error(cudaErrorMemoryAllocation);
    } else {
        memset(m, poison, n);
    }
    dev_allocs[(uintptr_t)m] = n;
    dev_owner[(uintptr_t)m] = current_device_;
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    LOCK;
    if (!p)
        return cudaSuccess;
    if (unsafe_call())
        return set_error(cudaErrorStreamCaptureUnsupported);
    drain_all(); /* cudaFree waits for the device's work */
    host_waited_all();
    auto it = dev_allocs.find((uintptr_t)p);
    if (it == dev_allocs.end())
        fault("cudaFree(%p): not a live cudaMalloc allocation", p);
    if (protect) {
        munmap(p, page_round(it->second)); /* a later touch faults */
        dev_allocs.erase(it);
        dev_owner.erase((uintptr_t)p);
        return cudaSuccess;
    }
    memset(p, poison, it->second);
    dev_allocs.erase(it);
    dev_owner.erase((uintptr_t)p);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned int flags) {
    LOCK;
    const size_t n = bytes ? bytes : 1;
    void *m = nullptr; /* exactly n bytes: ASan sees the first byte past them */
    if (posix_memalign(&m, 256, n) != 0)
        return set_error(cudaErrorMemoryAllocation);
    memset(m, poison, n);
    host_allocs[(uintptr_t)m] = n;
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t bytes) {
    return cudaHostAlloc(p, bytes, 0);
}

cudaError_t cudaFreeHost(void *p) {
    LOCK;
    if (!p)
        return cudaSuccess;
    drain_all(); /* as cudaFree */
    host_waited_all();
    auto it = host_allocs.find((uintptr_t)p);
    if (it == host_allocs.end())
        fault("cudaFreeHost(%p): not a live cudaHostAlloc allocation", p);
    host_allocs.erase(it);
    free(p);
    return cudaSuccess;
}

static void check_copy(const char *what, void *dst, const void *src, size_t n, cudaMemcpyKind k) {
    if (!n)
        return;
    const bool dd = in_map(dev_allocs, dst, n ? n : 1), sd = in_map(dev_allocs, src, n ? n : 1);
    bool ok = true;
    switch (k) {
    case cudaMemcpyHostToDevice:
        ok = dd && !in_map(dev_allocs, src, 1);
        break;
    case cudaMemcpyDeviceToHost:
        ok = sd && !in_map(dev_allocs, dst, 1);
        break;
    case cudaMemcpyDeviceToDevice:
        ok = dd && sd;
        break;
    case cudaMemcpyHostToHost:
        ok = !in_map(dev_allocs, dst, 1) && !in_map(dev_allocs, src, 1);
        break;
    case cudaMemcpyDefault:
        ok = (dd || !in_map(dev_allocs, dst, 1)) && (sd || !in_map(dev_allocs, src, 1));
        break;
    }
    if (!ok)
        fault("%s(dst %p, src %p, %zu bytes, kind %d): a side is not what the kind says, or the "
              "range leaves its allocation",
              what, dst, src, n, (int)k);
}

/* Page-locked memory is read and written when the copy runs; pageable memory as the runtime
 * does it: a copy from it takes the bytes at the call, a copy to it waits for the stream. */
static bool pageable(const void *p) {
    return !in_map(host_allocs, p, 1) && !in_map(dev_allocs, p, 1);
}

/* A copy's work; staged: the source's bytes taken now (a copy from pageable host memory). */
static std::function<void()> copy_work(void *dst, const void *src, size_t n, bool staged) {
    if (!staged)
        return [=]() {
            if (n) {
                loud l;
                memmove(dst, src, n);
            }
        };
    std::shared_ptr<std::vector<unsigned char>> bytes =
        std::make_shared<std::vector<unsigned char>>(n);
    {
        loud l; /* the host reads the source now */
        memcpy(bytes->data(), src, n);
    }
    return [=]() {
        loud l;
        memcpy(dst, bytes->data(), n);
    };
}

static void check_memset(const char *what, void *p, size_t n) {
    if (n && !in_map(dev_allocs, p, n))
        fault("%s(%p, %zu bytes): not inside one device allocation", what, p, n);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k,
                            cudaStream_t s) {
    LOCK;
    check_copy("cudaMemcpyAsync", dst, src, n, k);
    CUstream_st *st = stream_of(s);
    const bool capture = (st && st->cap) || (!st && thread_capture);
    if (!capture && n && pageable(dst)) { /* device to pageable host: returns when done */
        cudaError_t e = submit(s, copy_work(dst, src, n, false));
        if (e == cudaSuccess) {
            drain(st ? st : &legacy, UINT64_MAX);
            host_waited(st);
        }
        return e;
    }
    if (!capture && n && pageable(src)) /* pageable host to device: staged at the call */
        return set_error(submit(s, copy_work(dst, src, n, true)));
    std::function<void()> work = copy_work(dst, src, n, false);
    return set_error(submit(s, [=]() { /* a graph may replay it after a cudaFree */
                                       check_copy("cudaMemcpyAsync (run)", dst, src, n, k);
                                       work();
    }));
}

/* cudaMemcpy as "API synchronization behavior" says: to host memory it returns when done; from
 * host memory once the bytes are staged; device to device without waiting. */
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k) {
    LOCK;
    if (unsafe_call())
        return set_error(cudaErrorStreamCaptureImplicit);
    check_copy("cudaMemcpy", dst, src, n, k);
    if (!n)
        return cudaSuccess;
    const bool to_host = !in_map(dev_allocs, dst, 1), from_device = in_map(dev_allocs, src, 1);
    enqueue(nullptr, copy_work(dst, src, n, !to_host && !from_device));
    if (to_host) {
        drain(&legacy, UINT64_MAX);
        host_waited(nullptr);
    }
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    LOCK;
    check_memset("cudaMemsetAsync", p, n);
    return set_error(submit(s, [=]() {
        loud l;
        memset(p, v, n);
    }));
}

cudaError_t cudaMemset(void *p, int v, size_t n) {
    LOCK;
    if (unsafe_call())
        return set_error(cudaErrorStreamCaptureImplicit);
    check_memset("cudaMemset", p, n);
    enqueue(nullptr, [=]() { /* asynchronous for device memory */
                             loud l;
                             memset(p, v, n);
    });
    return cudaSuccess;
}

/* ---- streams, events, graphs ---------------------------------------------------------------- */
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    LOCK;
    *s = new CUstream_st;
    (*s)->device = current_device_;
    (*s)->blocking = !(flags & cudaStreamNonBlocking);
    streams.insert(*s);
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *s) {
    return cudaStreamCreateWithFlags(s, 0);
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    LOCK;
    CUstream_st *st = stream_of(s);
    if (!st)
        return set_error(cudaErrorInvalidResourceHandle);
    if (st->cap)
        fault("cudaStreamDestroy of a stream that is capturing");
    drain(st, UINT64_MAX); /* its work still completes */
    for (CUevent_st *e : events)
        if (e->src == st)
            e->src = nullptr;
    streams.erase(st);
#if KEMU_TSAN
    if (st->pool && st->pool != shared_pool)
        spare_pools.push_back(st->pool); /* a later stream's GPU threads run on them */
    if (st->tsan)
        __tsan_destroy_fiber(st->tsan);
#endif
    delete st;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    LOCK;
    CUstream_st *st = stream_of(s);
    if ((st && st->cap) || (!st && thread_capture)) {
        if (st)
            st->invalidated = true;
        unsafe_call();
        return set_error(cudaErrorStreamCaptureUnsupported);
    }
    drain(st ? st : &legacy, UINT64_MAX);
    host_waited(st);
    return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t s) {
    return cudaStreamSynchronize(s);
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
    LOCK;
    CUstream_st *st = stream_of(s);
    if (!st)
        return set_error(cudaErrorStreamCaptureUnsupported); /* the legacy stream cannot */
    if (st->cap)
        return set_error(cudaErrorIllegalState);
    st->cap = new CUgraph_st;
    st->origin = true;
    st->invalidated = false;
    if (mode != cudaStreamCaptureModeRelaxed)
        thread_capture = st;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g) {
    LOCK;
    *g = nullptr;
    CUstream_st *st = stream_of(s);
    if (!st || !st->cap || !st->origin)
        return set_error(cudaErrorIllegalState);
    CUgraph_st *graph = st->cap;
    bool broken = false;
    for (CUstream_st *o : streams)
        if (o->cap == graph) {
            broken |= o->invalidated;
            if (o != st && !o->origin)
                o->cap = nullptr; /* joined streams leave with the origin */
        }
    for (CUevent_st *e : events)
        if (e->cap == graph)
            e->cap = nullptr;
    st->cap = nullptr;
    st->origin = false;
    st->invalidated = false;
    if (thread_capture == st)
        thread_capture = nullptr;
    if (broken) {
        delete graph;
        return set_error(cudaErrorStreamCaptureInvalidated);
    }
    *g = graph;
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus *status) {
    LOCK;
    CUstream_st *st = stream_of(s);
    if (!st) {
        *status = cudaStreamCaptureStatusNone;
        /* an error only while a blocking stream captures (the legacy stream would join it) */
        return thread_capture && thread_capture->blocking
                   ? set_error(cudaErrorStreamCaptureImplicit)
                   : cudaSuccess;
    }
    *status = !st->cap          ? cudaStreamCaptureStatusNone
              : st->invalidated ? cudaStreamCaptureStatusInvalidated
                                : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long flags) {
    LOCK;
    if (!g)
        return set_error(cudaErrorInvalidValue);
    *exec = new CUgraphExec_st{g->ops};
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    LOCK;
    if (!exec)
        return set_error(cudaErrorInvalidValue);
    std::vector<std::function<void()>> ops = exec->ops; /* the launch's own copy */
    return submit(s, [ops]() {
        for (auto &op : ops)
            op();
    });
}

cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    LOCK;
    delete g;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
    LOCK;
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
    LOCK;
    *e = new CUevent_st;
    (*e)->device = current_device_;
    (*e)->timing = !(flags & cudaEventDisableTiming);
    events.insert(*e);
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) {
    return cudaEventCreateWithFlags(e, 0);
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    LOCK;
    if (!events.count(e))
        return set_error(cudaErrorInvalidResourceHandle);
    events.erase(e);
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    LOCK;
    if (!events.count(e))
        return set_error(cudaErrorInvalidResourceHandle);
    CUstream_st *st = stream_of(s);
    /* CUDA: recording fails when the event and the stream belong to different devices (the
     * legacy stream: the current device's) */
    if (e->device != (st ? st->device : current_device_))
        return set_error(cudaErrorInvalidResourceHandle);
    if (!st && thread_capture)
        return set_error(cudaErrorStreamCaptureImplicit);
    if (st && st->cap) {
        e->cap = st->cap;
        return cudaSuccess;
    }
    e->cap = nullptr;
    e->recorded = true;
    e->src = st ? st : &legacy;
    const uint64_t gen = ++e->st->gen;
    e->st->fired = false;
    std::shared_ptr<kemu_event_state> es = e->st;
    e->seq = enqueue(st, [es, gen]() {
        if (es->gen == gen) {
            es->fired = true;
            es->ms = now_ms();
        }
    });
    e->tok = (st ? st : &legacy)->tail; /* the marker's token */
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags) {
    LOCK;
    if (!events.count(e))
        return set_error(cudaErrorInvalidResourceHandle);
    CUstream_st *st = stream_of(s);
    if (e->cap) { /* the waiting stream joins the capture */
        if (!st)
            return set_error(cudaErrorStreamCaptureImplicit);
        if (st->cap && st->cap != e->cap)
            return set_error(cudaErrorStreamCaptureIsolation);
        st->cap = e->cap;
        return cudaSuccess;
    }
    if (!st && thread_capture)
        return set_error(cudaErrorStreamCaptureImplicit);
    if (st && st->cap) /* outside work seen from a capture: ordered already at replay time */
        return cudaSuccess;
    if (e->recorded && e->tok) /* the stream's next op comes after the marker */
        (st ? st : &legacy)->pending.push_back(e->tok);
    if (e->recorded && e->src && !e->st->fired) {
        CUstream_st *src = e->src;
        const uint64_t seq = e->seq;
        enqueue(st, [src, seq]() {
            if (src == &legacy || streams.count(src))
                drain(src, seq);
        });
    }
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    LOCK;
    if (!events.count(e))
        return set_error(cudaErrorInvalidResourceHandle);
    if (e->cap || unsafe_call())
        return set_error(cudaErrorStreamCaptureUnsupported);
    if (e->src && !e->st->fired)
        drain(e->src, e->seq);
    if (e->recorded)
        kemu_acquire(e->tok);
    return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t e) {
    return cudaEventSynchronize(e);
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    LOCK;
    if (!events.count(a) || !events.count(b) || !a->timing || !b->timing)
        return set_error(cudaErrorInvalidResourceHandle);
    if (!a->recorded || !b->recorded)
        return set_error(cudaErrorInvalidResourceHandle);
    if (!a->st->fired || !b->st->fired)
        return set_error(cudaErrorNotReady);
    *ms = (float)(b->st->ms - a->st->ms);
    return cudaSuccess;
}

} // extern "C"
