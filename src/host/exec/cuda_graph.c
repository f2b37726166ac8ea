/* CUDA graphs of the training step (issue 14; docs/architecture.md): the device part of a step
 * (exec.c's step_body: forward, loss, backward, gradient check, optimizer update) is captured
 * once per batch size and replayed with one cudaGraphLaunch instead of hundreds of kernel, cuDNN
 * and cuBLAS launches.
 *
 * A replay bakes in every argument its launches were captured with. What changes per step is
 * therefore read from device memory: the batch (staged into the arena before the launch) and the
 * step packet (ck_kstep: the dropout masks' step, Adam's alpha; written before the launch). What
 * remains by value is the graphs' key: the batch size (one graph each), the context seed, its
 * math mode and the optimizer; the graphs are dropped when the key changes.
 *
 * Capture runs on a stream of our own, non-blocking (the context's stream may be the legacy
 * default stream, which cannot be captured), with the cuDNN and cuBLAS handles moved to it and
 * cuBLAS given a workspace of ours (cuBLAS must not allocate under capture), in thread-local mode:
 * a call of this thread that cannot be captured (a synchronization, an allocation) fails the
 * capture instead of running once unseen, and other threads' CUDA calls go on unaffected (global
 * mode would fail them). Each batch size first runs one step eagerly on that stream, so that lazy
 * module loading and the libraries' first-call set-up (per stream too) happen outside a capture.
 * Whatever fails ends the capture cleanly, drops the model's graphs, leaves a note (the library
 * never prints) and runs the step eagerly. */
#include "exec.h"
#include "internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "gpu_layers.h"
#include <cuda_runtime_api.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define SLOTS 4
/* past this many captures with under 4 replays each, batch sizes vary too much to pay */
#define MAX_CAPTURES (8 * SLOTS)

typedef struct slot {
    int n;                /* batch size; 0: free */
    int warm;             /* a step at n ran its device part eagerly */
    cudaGraphExec_t exec; /* NULL: not captured yet */
    unsigned long long used;
} slot;

struct ck_cuda_graphs {
    ck_context *ctx;
    cudaStream_t cap; /* where captures happen; cuBLAS uses the context's workspace there too */
    cudaEvent_t ev;   /* orders the warm-up on cap between the context stream's work */
    /* the key: what the captured launches hold by value */
    int keyed;
    uint64_t seed;
    int math;
    ck_optimizer_desc opt;
    slot s[SLOTS];
    unsigned long long clock;
};

static void note(ck_model *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->cuda_graph_note, sizeof m->cuda_graph_note, fmt, ap);
    va_end(ap);
}

void ck_cuda_graphs_drop(ck_cuda_graphs *g) {
    if (!g)
        return;
    for (int i = 0; i < SLOTS; ++i) {
        /* an executable graph still running is freed when it completes */
        if (g->s[i].exec)
            (void)cudaGraphExecDestroy(g->s[i].exec);
        memset(&g->s[i], 0, sizeof g->s[i]);
    }
    g->keyed = 0;
}

void ck_cuda_graphs_free(ck_cuda_graphs *g) {
    if (!g)
        return;
    ck_cuda_graphs_drop(g);
    if (g->ev)
        (void)cudaEventDestroy(g->ev);
    if (g->cap)
        (void)cudaStreamDestroy(g->cap);
    ck_host_free(g->ctx, g);
}

int ck_cuda_graphs_count(const ck_cuda_graphs *g) {
    int c = 0;
    for (int i = 0; g && i < SLOTS; ++i)
        c += g->s[i].exec != NULL;
    return c;
}

/* The graph machinery failed: the model's graphs go, its later steps run eagerly until the mode
 * is set again, and the note says why. */
static void give_up(ck_model *m, ck_cuda_graphs *g, const char *what, const char *detail) {
    ck_cuda_graphs_drop(g);
    m->cuda_graph_failed = 1;
    note(m,
         "CUDA graphs off for this model: %s%s%s; its steps run eagerly (ck_model_set_cuda_graph "
         "tries again)",
         what, detail && detail[0] ? ": " : "", detail ? detail : "");
}

/* The step's device part eagerly after the graphs failed: the context's error of the failure
 * is in the note, the step's own status is body's. */
static ck_status eager(ck_exec *e, ck_status (*body)(ck_exec *, void *), void *arg) {
    ck_clear_error(e->ctx);
    return body(e, arg);
}

static int same_f(float a, float b) {
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Every field of the optimizer is compared below: one added to ck_optimizer_desc must be too */
_Static_assert(sizeof(ck_optimizer_desc) == 3 * sizeof(int) + 7 * sizeof(float),
               "ck_optimizer_desc changed: compare the new field in key_same");

static int key_same(const ck_cuda_graphs *g, const ck_model *m) {
    const ck_optimizer_desc *a = &g->opt, *b = &m->opt;
    return g->keyed && g->seed == m->ctx->seed && g->math == (int)m->ctx->math &&
           a->type == b->type && same_f(a->learning_rate, b->learning_rate) &&
           same_f(a->beta1, b->beta1) && same_f(a->beta2, b->beta2) &&
           same_f(a->epsilon, b->epsilon) && same_f(a->momentum, b->momentum) &&
           a->nesterov == b->nesterov && same_f(a->weight_decay, b->weight_decay) &&
           same_f(a->rho, b->rho) && a->centered == b->centered;
}

/* The slot of batch size n, else a free one, else the least recently used one (its graph
 * freed). */
static slot *slot_for(ck_cuda_graphs *g, int n) {
    slot *pick = NULL;
    for (int i = 0; i < SLOTS; ++i)
        if (g->s[i].n == n)
            return &g->s[i];
    for (int i = 0; i < SLOTS; ++i)
        if (!pick || g->s[i].n == 0 || (pick->n != 0 && g->s[i].used < pick->used))
            pick = &g->s[i];
    if (pick->exec)
        (void)cudaGraphExecDestroy(pick->exec);
    memset(pick, 0, sizeof *pick);
    pick->n = n;
    return pick;
}

static ck_status create(ck_context *ctx, ck_cuda_graphs **out) {
    ck_cuda_graphs *g = (ck_cuda_graphs *)ck_host_calloc(ctx, 1, sizeof *g);
    if (!g)
        return ck_host_oom(ctx, "CUDA graphs", sizeof *g);
    g->ctx = ctx;
    cudaError_t e = cudaStreamCreateWithFlags(&g->cap, cudaStreamNonBlocking);
    const char *what = "cudaStreamCreateWithFlags (the capture stream)";
    if (e != cudaSuccess) {
        g->cap = NULL;
    } else {
        e = cudaEventCreateWithFlags(&g->ev, cudaEventDisableTiming);
        what = "cudaEventCreateWithFlags (the warm-up's ordering)";
        if (e != cudaSuccess)
            g->ev = NULL;
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* not left for the eager step's first kernel to report */
        ck_cuda_graphs_free(g);
        return ck_cuda_fail(ctx, e, what);
    }
    *out = g;
    return CK_STATUS_SUCCESS;
}

/* Records body on g->cap into *graph (NULL when the capture failed). *body_st: body's status
 * under capture; the return: the set-up's and the end's (why says what failed). The context's
 * stream and handles are the caller's again on return, unless *lost: moving the handles back
 * failed, and the step must not run at all. */
static ck_status capture(ck_cuda_graphs *g, ck_exec *e, ck_status (*body)(ck_exec *, void *),
                         void *arg, cudaGraph_t *graph, ck_status *body_st, int *lost, char *why,
                         size_t len) {
    ck_context *ctx = e->ctx;
    ck_model *m = e->m;
    *graph = NULL;
    *body_st = CK_STATUS_SUCCESS;
    *lost = 0;
    why[0] = '\0';
    if (!ctx->blas_ws) { /* cuBLAS must not allocate under capture: it needs a user workspace */
        snprintf(why, len,
                 "the context has no cuBLAS workspace (its cudaMalloc failed at creation)");
        return CK_STATUS_ALLOC_FAILED;
    }
    /* an error left unread by an earlier call would fail the capture and turn graphs off for
     * good; the step before this one waited and reported its own */
    (void)cudaGetLastError();
    void *user = ctx->stream;
    ctx->stream = g->cap;
    /* the handles on the capture stream, cuBLAS with the context's workspace (as eagerly) */
    ck_status st = ck_cudnn_set_stream(ctx);
    if (st != CK_STATUS_SUCCESS)
        snprintf(why, len, "moving the cuDNN/cuBLAS handles to the capture stream: %.120s",
                 ctx->err);
    if (st == CK_STATUS_SUCCESS) {
        const cudaError_t be = cudaStreamBeginCapture(g->cap, cudaStreamCaptureModeThreadLocal);
        if (be != cudaSuccess) {
            (void)cudaGetLastError();
            snprintf(why, len, "cudaStreamBeginCapture: %s", cudaGetErrorString(be));
            st = CK_STATUS_CUDA_ERROR;
        }
    }
    if (st == CK_STATUS_SUCCESS) {
        if (m->cuda_graph_fault == 1) { /* tests: a wait on the capturing stream breaks it */
            m->cuda_graph_fault = 0;
            (void)cudaStreamSynchronize(g->cap);
        }
        *body_st = body(e, arg);
        if (*body_st != CK_STATUS_SUCCESS)
            snprintf(why, len, "the step under capture: %.160s", ctx->err);
        /* always: a stream left capturing would fail every later call on it */
        const cudaError_t ee = cudaStreamEndCapture(g->cap, graph);
        if (ee != cudaSuccess) {
            (void)cudaGetLastError();
            if (!why[0])
                snprintf(why, len, "cudaStreamEndCapture: %s", cudaGetErrorString(ee));
            st = CK_STATUS_CUDA_ERROR;
        }
        if ((ee != cudaSuccess || *body_st != CK_STATUS_SUCCESS) && *graph) {
            (void)cudaGraphDestroy(*graph);
            *graph = NULL;
        }
        if (!*graph) /* the eager rerun must not report this capture's error as its own */
            (void)cudaGetLastError();
    }
    /* the caller's stream (with the context's cuBLAS workspace) */
    ctx->stream = user;
    if (ck_cudnn_set_stream(ctx) != CK_STATUS_SUCCESS) {
        snprintf(why, len, "moving the cuDNN/cuBLAS handles back to the context's stream: %.120s",
                 ctx->err);
        if (*graph)
            (void)cudaGraphDestroy(*graph);
        *graph = NULL;
        *lost = 1;
        return CK_STATUS_CUDA_ERROR;
    }
    return st;
}

/* A batch size's warm-up step, run on the capture stream, after the context stream's work and
 * before its next (events both ways): what cuDNN and cuBLAS set up for a stream on its first use
 * there then happens outside a capture (warm up on the stream that will be captured). When the
 * streams cannot be switched the step runs on the context's stream as an eager one. */
static ck_status warm_up(ck_cuda_graphs *g, ck_exec *e, ck_status (*body)(ck_exec *, void *),
                         void *arg) {
    ck_context *ctx = e->ctx;
    void *user = ctx->stream;
    /* without the context's cuBLAS workspace no capture follows (capture() refuses), and cuBLAS
     * would take a pool of its own on the other stream: the plain eager step */
    if (!ctx->blas_ws)
        return body(e, arg);
    if (cudaEventRecord(g->ev, (cudaStream_t)user) != cudaSuccess ||
        cudaStreamWaitEvent(g->cap, g->ev, 0) != cudaSuccess) {
        (void)cudaGetLastError();
        return body(e, arg);
    }
    ctx->stream = g->cap;
    if (ck_cudnn_set_stream(ctx) != CK_STATUS_SUCCESS) { /* the step on the context's stream */
        ctx->stream = user;
        if (ck_cudnn_set_stream(ctx) != CK_STATUS_SUCCESS) {
            ctx->handles_astray = 1; /* every model's next device call rebinds them */
            return ck_fail(ctx, CK_STATUS_CUDA_ERROR,
                           "model: the cuDNN/cuBLAS handles could not be moved for the warm-up");
        }
        ck_clear_error(ctx);
        return body(e, arg);
    }
    const ck_status st = body(e, arg);
    char body_err[CK_ERR_LEN];
    snprintf(body_err, sizeof body_err, "%s", ctx->err);
    ctx->stream = user;
    cudaError_t oe = cudaEventRecord(g->ev, g->cap);
    if (oe == cudaSuccess)
        oe = cudaStreamWaitEvent((cudaStream_t)user, g->ev, 0);
    if (oe != cudaSuccess) { /* ordered the blunt way instead */
        (void)cudaGetLastError();
        oe = cudaStreamSynchronize(g->cap);
    }
    if (ck_cudnn_set_stream(ctx) != CK_STATUS_SUCCESS) {
        /* the step ran (its update too): it stands; the next device call rebinds the handles
         * (ck_cudnn_home) and fails there if it cannot */
        ctx->handles_astray = 1;
        ck_clear_error(ctx);
    }
    if (st != CK_STATUS_SUCCESS) /* the step's own message, not the handles' */
        return ck_fail(ctx, st, "%s", body_err);
    if (oe != cudaSuccess)
        return ck_cuda_fail(ctx, oe, "model: the warm-up step on the capture stream");
    return CK_STATUS_SUCCESS;
}

/* Why a step that cannot be captured runs eagerly. */
static const char *eager_reason(const ck_exec *e) {
    if (e->comm)
        return "a data-parallel step (a communicator) runs eagerly";
    if (e->m->profiling)
        return "profiling: steps run eagerly, timed node by node";
    return "no optimizer update in this call (or a failed staging): it ran eagerly";
}

enum { SLOT_LAUNCH, SLOT_EAGER, SLOT_DONE };

/* The conv plans set for batch n, eagerly: a plan whose batch changed queries cuDNN (descriptors,
 * workspace sizes), which must not happen under capture, and an evaluation since the warm-up (a
 * fit's validation, its last batch) may have left them at another batch. */
static ck_status convs_at(const ck_exec *e, int n) {
    const ck_model *m = e->m;
    for (int i = 0; i < m->num_nodes; ++i)
        if (m->nodes[i].type == CK_NODE_CONV && e->state && e->state[i])
            CK_TRY(ck_gconv_use_batch(e->ctx, (ck_gconv *)e->state[i], n));
    return CK_STATUS_SUCCESS;
}

/* Captures slot sl's graph and instantiates it: SLOT_LAUNCH when the slot has a graph now;
 * SLOT_EAGER when the step must run eagerly (the graphs were given up, the note says why);
 * SLOT_DONE when the step's device part ran (eagerly) already, *st its status. */
static int capture_slot(ck_cuda_graphs *g, slot *sl, ck_exec *e,
                        ck_status (*body)(ck_exec *, void *), void *arg, ck_status *st) {
    ck_model *m = e->m;
    char why[200], what[80];
    cudaGraph_t graph = NULL;
    ck_status body_st = CK_STATUS_SUCCESS;
    int lost = 0;
    if (convs_at(e, sl->n) != CK_STATUS_SUCCESS) { /* the step fails eagerly the same way */
        *st = eager(e, body, arg);
        return SLOT_DONE;
    }
    (void)capture(g, e, body, arg, &graph, &body_st, &lost, why, sizeof why);
    snprintf(what, sizeof what, "capture of batch %d", sl->n);
    if (lost) { /* the handles may still be on our stream: an eager step could race */
        give_up(m, g, what, why);
        e->ctx->handles_astray = 1; /* the context's: every model's next device call rebinds */
        *st = ck_fail(e->ctx, CK_STATUS_CUDA_ERROR, "model: %s", why);
        return SLOT_DONE;
    }
    if (!graph) {
        /* nothing of the captured part ran: it runs eagerly now. Failing there as under capture,
         * the step itself is wrong (its own status); the graphs are fine, the size warms up
         * again. Succeeding, the capture was what failed. */
        *st = eager(e, body, arg);
        if (*st != CK_STATUS_SUCCESS && body_st != CK_STATUS_SUCCESS) {
            sl->warm = 0;
            return SLOT_DONE;
        }
        give_up(m, g, what, why);
        return SLOT_DONE;
    }
    cudaError_t ie;
    if (m->cuda_graph_fault == 2) { /* tests: an instantiation that fails */
        m->cuda_graph_fault = 0;
        ie = cudaErrorNotSupported;
    } else {
        ie = cudaGraphInstantiate(&sl->exec, graph, 0);
    }
    (void)cudaGraphDestroy(graph); /* the executable graph does not need it */
    if (ie != cudaSuccess) {
        (void)cudaGetLastError();
        sl->exec = NULL;
        snprintf(what, sizeof what, "cudaGraphInstantiate of batch %d", sl->n);
        give_up(m, g, what, cudaGetErrorString(ie));
        return SLOT_EAGER;
    }
    m->cuda_graph_captures++;
    return SLOT_LAUNCH;
}

ck_status ck_cuda_graph_run(ck_cuda_graphs **set, ck_exec *e, int n, int capturable,
                            ck_status (*body)(ck_exec *, void *), void *arg) {
    ck_model *m = e->m;
    ck_context *ctx = e->ctx;
    m->cuda_graph_last = 0;
    /* the handles may still be on the capture stream, unordered with the context's: no step
     * runs until they are bound to it again */
    CK_TRY(ck_cudnn_home(ctx));
    if (m->cuda_graph_mode == CK_CUDA_GRAPH_OFF) {
        note(m, "off (ck_model_set_cuda_graph): steps run eagerly");
        return body(e, arg);
    }
    if (m->cuda_graph_failed) /* the note says why */
        return body(e, arg);
    if (!capturable) {
        note(m, "%s", eager_reason(e));
        return body(e, arg);
    }
    enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    const cudaError_t qe = cudaStreamIsCapturing((cudaStream_t)ctx->stream, &cs);
    if (qe != cudaSuccess || cs != cudaStreamCaptureStatusNone) {
        if (qe != cudaSuccess)
            (void)cudaGetLastError();
        note(m, "the context's stream is being captured by its owner: steps run eagerly into it");
        return body(e, arg);
    }
    if (!*set && create(ctx, set) != CK_STATUS_SUCCESS) {
        char why[200];
        snprintf(why, sizeof why, "%.190s", ctx->err);
        give_up(m, NULL, "setting up", why);
        return eager(e, body, arg);
    }
    ck_cuda_graphs *g = *set;
    if (!key_same(g, m)) { /* seed, math or optimizer changed: the launches' values did */
        ck_cuda_graphs_drop(g);
        g->keyed = 1;
        g->seed = ctx->seed;
        g->math = (int)ctx->math;
        g->opt = m->opt;
    }
    slot *sl = slot_for(g, n);
    sl->used = ++g->clock;
    if (!sl->warm) {
        note(m, "batch %d: its first step ran eagerly (warm-up); the next is captured", n);
        const ck_status st = warm_up(g, e, body, arg);
        sl->warm = st == CK_STATUS_SUCCESS;
        return st;
    }
    if (!sl->exec) {
        if (m->cuda_graph_captures >= MAX_CAPTURES &&
            m->cuda_graph_captures * 4 > m->cuda_graph_replays) {
            char why[120];
            snprintf(why, sizeof why, "%lld captures for %lld replays", m->cuda_graph_captures,
                     m->cuda_graph_replays);
            give_up(m, g, "the batch sizes vary too much", why);
            return eager(e, body, arg);
        }
        ck_status st = CK_STATUS_SUCCESS;
        const int r = capture_slot(g, sl, e, body, arg, &st);
        if (r == SLOT_DONE)
            return st;
        if (r == SLOT_EAGER)
            return eager(e, body, arg);
    }
    cudaError_t le;
    if (m->cuda_graph_fault == 3) { /* tests: a launch that fails */
        m->cuda_graph_fault = 0;
        le = cudaErrorLaunchFailure;
    } else {
        le = cudaGraphLaunch(sl->exec, (cudaStream_t)ctx->stream);
    }
    if (le != cudaSuccess) {
        (void)cudaGetLastError();
        char what[80];
        snprintf(what, sizeof what, "cudaGraphLaunch of batch %d", n);
        give_up(m, g, what, cudaGetErrorString(le));
        return eager(e, body, arg);
    }
    m->cuda_graph_last = 1;
    m->cuda_graph_replays++;
    m->cuda_graph_note[0] = '\0';
    return CK_STATUS_SUCCESS;
}
#else
typedef int ck_cuda_graph_unused; /* ISO C wants at least one declaration per file */
#endif
