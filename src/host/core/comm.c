/* The communicator (cnnkit/comm.h): a thin wrapper over an MPI communicator, and the collectives
 * the training step needs (comm_internal.h). Without MPI in the build the same calls exist and
 * creating a communicator fails with a message. */
#include "comm_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#ifdef CNNKIT_HAVE_MPI
#include <mpi.h>
#include <sched.h>
#include <time.h>
#endif

struct ck_comm {
    ck_handle link; /* in the context's list (internal.h) */
    ck_context *ctx;
    int rank, size;
    double timeout_s;         /* how long a collective waits for the other ranks; 0: for ever */
    int broken;               /* a collective timed out: every later one fails at once, with why */
    unsigned long long calls; /* collectives entered: tests see that a step communicated */
    char why[CK_ERR_LEN];
#ifdef CNNKIT_HAVE_NCCL
    ck_nccl *nccl; /* a CUDA context's communicator: every collective goes through NCCL */
#endif
#ifdef CNNKIT_HAVE_MPI
    MPI_Comm mpi; /* cnnkit's duplicate, MPI_COMM_NULL once freed */
    /* A second duplicate, the side channel: a wait that timed out asks the other ranks there
     * which collective they are in, and a rank that waits answers (comm_wait). */
    MPI_Comm side;
    /* MPI operations started on mpi. MPI matches collectives by their order, so this, not the
     * dispatch count `calls` (which counts NCCL calls and not the buckets), is what the ranks
     * of a correct job agree on; the side channel's answers carry it. */
    unsigned long long seq;
    struct ck_comm_reply *reply; /* this rank's answer in flight; never freed once broken */
    /* The small packets (sums, minima, the scan, the step count) go through this buffer of the
     * communicator rather than the caller's (often its stack): a timed-out operation may still
     * complete later and write its result, and then it writes here. */
    void *stage; /* never freed once broken: an operation that failed may still write it */
    size_t stage_cap;
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

CK_API ck_status ck_comm_set_timeout(ck_comm *c, double seconds) {
    if (!c || !c->ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "comm: %s",
                       !c ? "is NULL" : "its context was destroyed");
    ck_enter(c->ctx);
    if (!(seconds >= 0.0))
        return ck_fail(c->ctx, CK_STATUS_BAD_PARAM, "seconds: %g (must be >= 0; 0 waits for ever)",
                       seconds);
    c->timeout_s = seconds;
#ifdef CNNKIT_HAVE_NCCL
    if (c->nccl)
        ck_nccl_set_timeout(c->nccl, seconds);
#endif
    return CK_STATUS_SUCCESS;
}

CK_API double ck_comm_timeout(const ck_comm *c) {
    return c && c->ctx ? c->timeout_s : -1.0;
}

CK_API int ck_comm_broken(const ck_comm *c) {
    return c ? c->broken : 0;
}

CK_API ck_status ck_comm_shard(const ck_comm *c, int total, int *first, int *count) {
    if (!c || !c->ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "comm: %s", c ? "orphaned" : "is NULL");
    ck_enter(c->ctx);
    if (total < 0)
        return ck_fail(c->ctx, CK_STATUS_BAD_PARAM, "total: %d samples (must be >= 0)", total);
    if (!first || !count)
        return ck_fail(c->ctx, CK_STATUS_BAD_PARAM, "first, count: NULL");
    const int q = total / c->size, r = total % c->size;
    *count = q + (c->rank < r ? 1 : 0);
    *first = c->rank * q + (c->rank < r ? c->rank : r);
    return CK_STATUS_SUCCESS;
}

/* A failed collective leaves the ranks out of step (some may have finished it, some not), so
 * the communicator is broken by any failure, not only a timeout: later collectives repeat its
 * message at once instead of waiting on ranks that are elsewhere. */
#if defined(CNNKIT_HAVE_MPI) || defined(CNNKIT_HAVE_NCCL)
static ck_status broken_by(const ck_comm *cc, ck_status st) {
    ck_comm *c = (ck_comm *)cc;
    c->broken = 1;
    snprintf(c->why, sizeof c->why, "%s", c->ctx->err);
    return st;
}
#endif

/* A broken communicator fails every collective at once, saying why. */
#define CK_COMM_LIVE(c)                                                                            \
    do {                                                                                           \
        if ((c)->broken)                                                                           \
            return ck_fail((c)->ctx, CK_STATUS_INTERNAL, "%s", (c)->why);                          \
    } while (0)

/* A collective's entry: live, and counted (ck_comm_calls). */
#define CK_COMM_CALL(c)                                                                            \
    do {                                                                                           \
        CK_COMM_LIVE(c);                                                                           \
        ((ck_comm *)(c))->calls++;                                                                 \
    } while (0)

#if defined(CNNKIT_HAVE_MPI) || defined(CNNKIT_HAVE_NCCL)
static void comm_orphan(ck_handle *h);
#endif
#if defined(CNNKIT_HAVE_NCCL) && defined(CNNKIT_HAVE_MPI)
static ck_status nccl_from_mpi(ck_comm *c);
#endif

#ifdef CNNKIT_HAVE_MPI

/* The side channel's tags (a query, its answer), and what an answer says: {collective number,
 * state}. Each rank asks at most once per communicator (the timeout breaks it). */
#define CK_SIDE_QUERY 1
#define CK_SIDE_REPLY 2
#define CK_SIDE_WAITING 1   /* waiting in that collective */
#define CK_SIDE_TIMED_OUT 2 /* timed out in it, and asking the others too */
#define CK_SIDE_ELSEWHERE 3 /* (side_ask's own mark: answered from another collective) */

struct ck_comm_reply {
    unsigned long long query[2], answer[2];
    MPI_Request req; /* the answer's send; MPI_REQUEST_NULL when none is in flight */
};

/* The side channel's end: queries that came too late for a wait are received and dropped; an
 * answer still in flight keeps its buffer (forgotten, as is everything of a broken
 * communicator). */
static void free_side(ck_comm *c, int fin) {
    struct ck_comm_reply *r = c->reply;
    int keep = c->broken;
    if (!fin && !c->broken && c->side != MPI_COMM_NULL) {
        for (int k = 0; k < c->size && r; ++k) {
            int flag = 0;
            MPI_Status s;
            if (MPI_Iprobe(MPI_ANY_SOURCE, CK_SIDE_QUERY, c->side, &flag, &s) != MPI_SUCCESS ||
                !flag ||
                MPI_Recv(r->query, 2, MPI_UNSIGNED_LONG_LONG, s.MPI_SOURCE, CK_SIDE_QUERY, c->side,
                         MPI_STATUS_IGNORE) != MPI_SUCCESS)
                break;
        }
        int done = 1;
        if (r && r->req != MPI_REQUEST_NULL &&
            (MPI_Test(&r->req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || !done)) {
            MPI_Request_free(&r->req);
            keep = 1;
        }
        MPI_Comm_free(&c->side);
    }
    c->side = MPI_COMM_NULL;
    if (!keep)
        ck_host_free(c->ctx, r);
    c->reply = NULL;
}

/* MPI_Comm_free after MPI_Finalize is erroneous: a communicator outliving MPI only loses its
 * memory. */
static void free_mpi(ck_comm *c) {
    int fin = 0;
    MPI_Finalized(&fin);
    free_side(c, fin);
    /* a broken communicator is only forgotten: freeing it is collective in spirit, and a rank
     * that stopped answering would not take part */
    if (!fin && c->mpi != MPI_COMM_NULL && !c->broken)
        MPI_Comm_free(&c->mpi);
    c->mpi = MPI_COMM_NULL;
    if (!c->broken)
        ck_host_free(c->ctx, c->stage);
    c->stage = NULL;
    c->stage_cap = 0;
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

/* Polling: MPI_Test this many times back to back, then yield the core between tries (a cheap
 * system call when nothing else wants the core; when the ranks share the cores, as blocking
 * MPI does when oversubscribed, it lets the rank being waited for run), and sleep a millisecond
 * per try once a wait has lasted a second (a rank that late makes 1 ms nothing to notice). */
#define CK_COMM_SPIN 64
#define CK_COMM_NAP_AFTER_S 1.0
/* A wait answers the side channel's queries once it has lasted this long, and as often after:
 * a collective that completes sooner (the fast path) never looks. */
#define CK_COMM_ANSWER_EVERY_S 1e-3
/* How long a timed-out wait waits for the others' answers: min(this, the timeout / 4). */
#define CK_COMM_GRACE_S 2.0

/* Answers the queries that have come on the side channel with this rank's collective number
 * and state. One answer is in flight at a time; a query behind it waits for the next look. */
static void side_answer(ck_comm *c, int state) {
    struct ck_comm_reply *r = c->reply;
    if (!r || c->side == MPI_COMM_NULL)
        return;
    for (int k = 0; k < c->size; ++k) {
        int flag = 0;
        MPI_Status s;
        if (r->req != MPI_REQUEST_NULL &&
            (MPI_Test(&r->req, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || !flag))
            return;
        flag = 0;
        if (MPI_Iprobe(MPI_ANY_SOURCE, CK_SIDE_QUERY, c->side, &flag, &s) != MPI_SUCCESS || !flag)
            return;
        if (MPI_Recv(r->query, 2, MPI_UNSIGNED_LONG_LONG, s.MPI_SOURCE, CK_SIDE_QUERY, c->side,
                     MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return;
        r->answer[0] = c->seq;
        r->answer[1] = (unsigned long long)state;
        if (MPI_Isend(r->answer, 2, MPI_UNSIGNED_LONG_LONG, s.MPI_SOURCE, CK_SIDE_REPLY, c->side,
                      &r->req) != MPI_SUCCESS) {
            r->req = MPI_REQUEST_NULL;
            return;
        }
    }
}

/* Appends to text at *at (bounded by len) as snprintf would. */
static void put(char *text, size_t len, size_t *at, const char *fmt, ...) {
    if (*at >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    const int k = vsnprintf(text + *at, len - *at, fmt, ap);
    va_end(ap);
    *at = k < 0 ? len : *at + (size_t)k;
}

/* "; rank 1" or "; ranks 1, 4" for the ranks p with kind[p] == want, then the tail; nothing when
 * there is none. */
static void put_ranks(char *text, size_t len, size_t *at, const int *kind, int n, int want,
                      const char *one, const char *many) {
    int count = 0;
    for (int p = 0; p < n; ++p)
        count += kind[p] == want;
    if (!count)
        return;
    put(text, len, at, "; rank%s", count > 1 ? "s" : "");
    for (int p = 0, k = 0; p < n; ++p)
        if (kind[p] == want)
            put(text, len, at, "%s %d", k++ ? "," : "", p);
    put(text, len, at, " %s", count > 1 ? many : one);
}

/* After a timeout: asks every other rank on the side channel which collective it is in, waits
 * for the answers at most the grace period (answering the others that time out with it), and
 * says in text who did not answer and who is elsewhere. What was posted is cancelled or let go;
 * its memory is never freed (the communicator is broken: a late answer may still arrive). */
static void side_ask(ck_comm *c, char *text, size_t len) {
    const int n = c->size, me = c->rank;
    const size_t bytes = sizeof(unsigned long long) * (2 * (size_t)n + 2) +
                         sizeof(MPI_Request) * 2 * (size_t)n + sizeof(int) * (size_t)n;
    unsigned long long *ans =
        c->side != MPI_COMM_NULL ? (unsigned long long *)ck_host_alloc(c->ctx, bytes) : NULL;
    size_t at = 0;
    if (!ans) {
        put(text, len, &at,
            "; the other ranks could not be asked where they are: one of them hung, died or "
            "stopped calling the collectives");
        return;
    }
    unsigned long long *q = ans + 2 * (size_t)n;
    MPI_Request *rr = (MPI_Request *)(q + 2), *sr = rr + n;
    int *kind = (int *)(sr + n); /* 0: no answer; else the answer's state */
    q[0] = c->seq;
    q[1] = CK_SIDE_TIMED_OUT;
    for (int p = 0; p < n; ++p) {
        rr[p] = sr[p] = MPI_REQUEST_NULL;
        kind[p] = -1; /* this rank */
        if (p == me)
            continue;
        kind[p] = 0;
        /* the receive first: an answer always finds it posted */
        if (MPI_Irecv(ans + 2 * p, 2, MPI_UNSIGNED_LONG_LONG, p, CK_SIDE_REPLY, c->side, &rr[p]) !=
            MPI_SUCCESS)
            rr[p] = MPI_REQUEST_NULL;
        else if (MPI_Isend(q, 2, MPI_UNSIGNED_LONG_LONG, p, CK_SIDE_QUERY, c->side, &sr[p]) !=
                 MPI_SUCCESS)
            sr[p] = MPI_REQUEST_NULL;
    }
    const double grace =
        c->timeout_s / 4.0 < CK_COMM_GRACE_S ? c->timeout_s / 4.0 : CK_COMM_GRACE_S;
    const double t0 = MPI_Wtime();
    for (long tries = 0;; ++tries) {
        int left = 0;
        for (int p = 0; p < n; ++p) {
            int done = 0;
            if (rr[p] == MPI_REQUEST_NULL)
                continue;
            if (MPI_Test(&rr[p], &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
                done = 0, rr[p] = MPI_REQUEST_NULL;
            else if (done)
                kind[p] = ans[2 * p + 1] == CK_SIDE_TIMED_OUT ? CK_SIDE_TIMED_OUT : CK_SIDE_WAITING;
            else
                left++;
        }
        side_answer(c, CK_SIDE_TIMED_OUT);
        if (!left || MPI_Wtime() - t0 >= grace)
            break;
        if (tries >= CK_COMM_SPIN) {
            const struct timespec nap = {0, 1000000};
            nanosleep(&nap, NULL);
        }
    }
    for (int p = 0; p < n; ++p) {
        int done = 0;
        if (rr[p] != MPI_REQUEST_NULL) {
            MPI_Cancel(&rr[p]);
            MPI_Request_free(&rr[p]);
        }
        if (sr[p] != MPI_REQUEST_NULL &&
            (MPI_Test(&sr[p], &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || !done))
            MPI_Request_free(&sr[p]);
    }
    /* who did not answer, who is elsewhere (by number), who is at this collective too */
    put_ranks(text, len, &at, kind, n, 0,
              "did not answer: hung, dead or busy outside cnnkit's collectives",
              "did not answer: hung, dead or busy outside cnnkit's collectives");
    for (int p = 0; p < n; ++p)
        if (kind[p] > 0 && ans[2 * p] != q[0]) {
            put(text, len, &at, "; rank %d is at collective #%llu, this rank at #%llu", p,
                ans[2 * p], q[0]);
            kind[p] = CK_SIDE_ELSEWHERE;
        }
    put_ranks(text, len, &at, kind, n, CK_SIDE_WAITING, "is waiting in this collective too",
              "are waiting in this collective too");
    put_ranks(text, len, &at, kind, n, CK_SIDE_TIMED_OUT, "timed out in this collective too",
              "timed out in this collective too");
    if (at >= len && len > 4)
        memcpy(text + len - 4, "...", 4);
}

/* Completes the started operation *req against the communicator's deadline. On a timeout the
 * communicator is broken: the operation stays started (MPI cannot cancel a collective) and every
 * later collective fails at once with the same message. The library never aborts: ending the
 * job (MPI_Abort) is the caller's choice. */
static ck_status comm_wait(const ck_comm *cc, MPI_Request *req, const char *what) {
    ck_comm *c = (ck_comm *)cc; /* the collectives take a const communicator; its health is not
                                 * part of what they read */
    int done = 0, e = MPI_SUCCESS;
    if (!(c->timeout_s > 0.0) || isinf(c->timeout_s)) {
        e = MPI_Wait(req, MPI_STATUS_IGNORE);
        return e == MPI_SUCCESS ? CK_STATUS_SUCCESS : broken_by(c, mpi_fail(c, e, what));
    }
    const double t0 = MPI_Wtime();
    double answer_at = CK_COMM_ANSWER_EVERY_S;
    for (long tries = 0;; ++tries) {
        e = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (e != MPI_SUCCESS)
            return broken_by(c, mpi_fail(c, e, what));
        if (done)
            return CK_STATUS_SUCCESS;
        if (tries < CK_COMM_SPIN)
            continue;
        const double waited = MPI_Wtime() - t0;
        if (waited >= c->timeout_s)
            break;
        if (waited >= answer_at) { /* another rank that timed out may be asking */
            side_answer(c, CK_SIDE_WAITING);
            answer_at = waited + CK_COMM_ANSWER_EVERY_S;
        }
        if (waited < CK_COMM_NAP_AFTER_S) {
            sched_yield();
        } else {
            const struct timespec nap = {0, 1000000};
            nanosleep(&nap, NULL);
        }
    }
    c->broken = 1;
    /* a collective does not say whose contribution is missing: the others are asked */
    char who[CK_ERR_LEN - 256];
    who[0] = '\0';
    side_ask(c, who, sizeof who);
    snprintf(c->why, sizeof c->why,
             "comm: %s timed out after %g s waiting for the other ranks (rank %d of %d waited, at "
             "collective #%llu%s); the communicator is broken: end the job (MPI_Abort)",
             what, c->timeout_s, c->rank, c->size, c->seq, who);
    return ck_fail(c->ctx, CK_STATUS_INTERNAL, "%s", c->why);
}

/* Starts a non-blocking operation (call, with &req_ in it) and waits for it against the
 * deadline. */
#define CK_MPI(c, call, what)                                                                      \
    do {                                                                                           \
        MPI_Request req_ = MPI_REQUEST_NULL;                                                       \
        ((ck_comm *)(c))->seq++;                                                                   \
        const int e_ = (call);                                                                     \
        if (e_ != MPI_SUCCESS)                                                                     \
            return broken_by((c), mpi_fail((c), e_, (what)));                                      \
        CK_TRY(comm_wait((c), &req_, (what)));                                                     \
    } while (0)

/* The communicator's stage, at least bytes long. */
static ck_status stage(const ck_comm *cc, size_t bytes, void **out) {
    ck_comm *c = (ck_comm *)cc;
    if (bytes > c->stage_cap) {
        void *p = ck_host_realloc(c->ctx, c->stage, bytes);
        if (!p)
            return ck_host_oom(c->ctx, "comm: packet buffer", bytes);
        c->stage = p;
        c->stage_cap = bytes;
    }
    *out = c->stage;
    return CK_STATUS_SUCCESS;
}

#ifdef CNNKIT_HAVE_NCCL
/* Rank 0 makes the NCCL id and sends it to every rank over MPI, with a flag: a rank 0 that could
 * not make one (no libnccl) sends 0, so every rank fails at once instead of waiting in NCCL. */
static ck_status nccl_from_mpi(ck_comm *c) {
    const int bytes = 8 + CK_COMM_NCCL_ID_BYTES;
    void *p = NULL;
    CK_TRY(stage(c, (size_t)bytes, &p));
    unsigned char *pk = (unsigned char *)p;
    memset(pk, 0, (size_t)bytes);
    ck_status st = CK_STATUS_SUCCESS;
    if (c->rank == 0) {
        st = ck_nccl_unique_id(c->ctx, pk + 8, CK_COMM_NCCL_ID_BYTES);
        pk[0] = st == CK_STATUS_SUCCESS;
    }
    CK_MPI(c, MPI_Ibcast(pk, bytes, MPI_BYTE, 0, c->mpi, &req_), "MPI_Bcast (the NCCL id)");
    if (!pk[0])
        return st != CK_STATUS_SUCCESS
                   ? st
                   : ck_fail(c->ctx, CK_STATUS_NOT_SUPPORTED,
                             "comm: rank 0 could not make the NCCL id (its message says why)");
    return ck_nccl_create(c->ctx, pk + 8, c->rank, c->size, c->timeout_s, &c->nccl);
}
#endif

CK_API ck_status ck_comm_create_mpi(ck_context *ctx, const void *mpi_comm, ck_comm **out) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    if (!out)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "comm: is NULL");
    if (!mpi_comm)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "mpi_comm: is NULL (the address of an MPI_Comm)");
#ifndef CNNKIT_HAVE_NCCL
    if (ctx->device != CK_DEVICE_CPU)
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "ctx: a CUDA context's communicator is NCCL's, and this build of cnnkit "
                       "has no NCCL (configure with -DCNNKIT_NCCL=ON or AUTO)");
#endif
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
    c->timeout_s = CK_COMM_DEFAULT_TIMEOUT_S;
    c->mpi = c->side = MPI_COMM_NULL;
    int e = MPI_Comm_dup(*(const MPI_Comm *)mpi_comm, &c->mpi);
    if (e == MPI_SUCCESS)
        e = MPI_Comm_set_errhandler(c->mpi, MPI_ERRORS_RETURN);
    if (e == MPI_SUCCESS)
        e = MPI_Comm_rank(c->mpi, &c->rank);
    if (e == MPI_SUCCESS)
        e = MPI_Comm_size(c->mpi, &c->size);
    if (e == MPI_SUCCESS) /* before the NCCL id's broadcast: a timeout there asks too */
        e = MPI_Comm_dup(c->mpi, &c->side);
    if (e == MPI_SUCCESS)
        e = MPI_Comm_set_errhandler(c->side, MPI_ERRORS_RETURN);
    if (e != MPI_SUCCESS) {
        const ck_status st = mpi_fail(c, e, "MPI_Comm_dup");
        free_mpi(c);
        ck_host_free(ctx, c);
        return st;
    }
    c->reply = (struct ck_comm_reply *)ck_host_calloc(ctx, 1, sizeof *c->reply);
    if (!c->reply) {
        free_mpi(c);
        ck_host_free(ctx, c);
        return ck_host_oom(ctx, "comm", sizeof *c->reply);
    }
    c->reply->req = MPI_REQUEST_NULL;
#ifdef CNNKIT_HAVE_NCCL
    if (ctx->device != CK_DEVICE_CPU) { /* NCCL from an id that rank 0 sends over MPI */
        const ck_status st = nccl_from_mpi(c);
        /* a timed-out exchange may still write into c's stage: c is forgotten, not freed */
        if (c->broken)
            return st;
        free_mpi(c); /* MPI has done its part: every collective now goes through NCCL */
        if (st != CK_STATUS_SUCCESS) {
            ck_host_free(ctx, c);
            return st;
        }
    }
#endif
    ck_handle_link(ctx, &c->link, comm_orphan);
    *out = c;
    return CK_STATUS_SUCCESS;
}

/* The float collectives go in buckets: MPI counts are ints, and a bucket bounds the temporary
 * memory some MPI algorithms take. They work in place in the caller's buffer (the gradients:
 * too large to stage). */
static ck_status mpi_sum_f32(const ck_comm *c, float *buf, size_t count) {
    CK_COMM_LIVE(c);
    for (size_t at = 0; at < count; at += CK_COMM_BUCKET) {
        const size_t k = count - at < CK_COMM_BUCKET ? count - at : CK_COMM_BUCKET;
        CK_MPI(c, MPI_Iallreduce(MPI_IN_PLACE, buf + at, (int)k, MPI_FLOAT, MPI_SUM, c->mpi, &req_),
               "MPI_Allreduce (gradients)");
    }
    return CK_STATUS_SUCCESS;
}

/* An all-reduce of a small packet through the stage. */
static ck_status allreduce_staged(const ck_comm *c, void *buf, int count, size_t size,
                                  MPI_Datatype type, MPI_Op op, const char *what) {
    CK_COMM_LIVE(c);
    void *s = NULL;
    CK_TRY(stage(c, (size_t)count * size, &s));
    memcpy(s, buf, (size_t)count * size);
    CK_MPI(c, MPI_Iallreduce(MPI_IN_PLACE, s, count, type, op, c->mpi, &req_), what);
    memcpy(buf, s, (size_t)count * size);
    return CK_STATUS_SUCCESS;
}

static ck_status mpi_sum_f64(const ck_comm *c, double *buf, int count) {
    return allreduce_staged(c, buf, count, sizeof *buf, MPI_DOUBLE, MPI_SUM, "MPI_Allreduce (sum)");
}

/* A rank that failed joins the others' sum of count doubles with NaN in every slot, from the
 * communicator's stage (its own memory may be what ran out): every rank's result is NaN. */
static ck_status mpi_sum_f64_failed(const ck_comm *c, int count) {
    CK_COMM_LIVE(c);
    void *s = NULL;
    CK_TRY(stage(c, (size_t)count * sizeof(double), &s));
    for (int i = 0; i < count; ++i)
        ((double *)s)[i] = NAN;
    CK_MPI(c, MPI_Iallreduce(MPI_IN_PLACE, s, count, MPI_DOUBLE, MPI_SUM, c->mpi, &req_),
           "MPI_Allreduce (sum)");
    return CK_STATUS_SUCCESS;
}

static ck_status mpi_min_i64(const ck_comm *c, long long *buf, int count) {
    return allreduce_staged(c, buf, count, sizeof *buf, MPI_LONG_LONG, MPI_MIN,
                            "MPI_Allreduce (min)");
}

static ck_status mpi_max_i64(const ck_comm *c, long long *buf, int count) {
    return allreduce_staged(c, buf, count, sizeof *buf, MPI_LONG_LONG, MPI_MAX,
                            "MPI_Allreduce (max)");
}

static ck_status mpi_exscan_i64(const ck_comm *c, long long v, long long *before) {
    *before = 0; /* MPI leaves rank 0's result undefined */
    CK_COMM_LIVE(c);
    void *p = NULL;
    CK_TRY(stage(c, 2 * sizeof(long long), &p));
    long long *s = (long long *)p;
    s[0] = v;
    s[1] = 0;
    CK_MPI(c, MPI_Iexscan(s, s + 1, 1, MPI_LONG_LONG, MPI_SUM, c->mpi, &req_), "MPI_Exscan");
    if (ck_comm_rank(c) > 0)
        *before = s[1];
    return CK_STATUS_SUCCESS;
}

static ck_status mpi_bcast_f32(const ck_comm *c, float *buf, size_t count) {
    CK_COMM_LIVE(c);
    for (size_t at = 0; at < count; at += CK_COMM_BUCKET) {
        const size_t k = count - at < CK_COMM_BUCKET ? count - at : CK_COMM_BUCKET;
        CK_MPI(c, MPI_Ibcast(buf + at, (int)k, MPI_FLOAT, 0, c->mpi, &req_), "MPI_Bcast");
    }
    return CK_STATUS_SUCCESS;
}

static ck_status mpi_bcast_i64(const ck_comm *c, long long *buf, int count) {
    CK_COMM_LIVE(c);
    void *s = NULL;
    CK_TRY(stage(c, (size_t)count * sizeof *buf, &s));
    memcpy(s, buf, (size_t)count * sizeof *buf);
    CK_MPI(c, MPI_Ibcast(s, count, MPI_LONG_LONG, 0, c->mpi, &req_), "MPI_Bcast");
    memcpy(buf, s, (size_t)count * sizeof *buf);
    return CK_STATUS_SUCCESS;
}

#else /* no MPI in this build: nothing can make a communicator, so the collectives never run */

CK_API ck_status ck_comm_create_mpi(ck_context *ctx, const void *mpi_comm, ck_comm **out) {
    (void)mpi_comm;
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                   "comm: this build of cnnkit has no MPI (install libopenmpi-dev and configure "
                   "with -DCNNKIT_MPI=ON or AUTO)");
}

static ck_status no_mpi(const ck_comm *c) {
    return ck_fail(c ? c->ctx : NULL, CK_STATUS_NOT_SUPPORTED, "comm: no MPI in this build");
}

static ck_status mpi_sum_f32(const ck_comm *c, float *buf, size_t count) {
    (void)buf, (void)count;
    return no_mpi(c);
}

static ck_status mpi_sum_f64(const ck_comm *c, double *buf, int count) {
    (void)buf, (void)count;
    return no_mpi(c);
}

static ck_status mpi_min_i64(const ck_comm *c, long long *buf, int count) {
    (void)buf, (void)count;
    return no_mpi(c);
}

static ck_status mpi_sum_f64_failed(const ck_comm *c, int count) {
    (void)count;
    return no_mpi(c);
}

static ck_status mpi_exscan_i64(const ck_comm *c, long long v, long long *before) {
    (void)v;
    *before = 0;
    return no_mpi(c);
}

static ck_status mpi_max_i64(const ck_comm *c, long long *buf, int count) {
    (void)buf, (void)count;
    return no_mpi(c);
}

static ck_status mpi_bcast_f32(const ck_comm *c, float *buf, size_t count) {
    (void)buf, (void)count;
    return no_mpi(c);
}

static ck_status mpi_bcast_i64(const ck_comm *c, long long *buf, int count) {
    (void)buf, (void)count;
    return no_mpi(c);
}

#endif

/* ---- what every build has: the communicator's life and the collectives' dispatch ---- */

static void free_parts(ck_comm *c) {
#ifdef CNNKIT_HAVE_MPI
    free_mpi(c);
#endif
#ifdef CNNKIT_HAVE_NCCL
    ck_nccl_free(c->nccl, c->broken);
    c->nccl = NULL;
#endif
}

#if defined(CNNKIT_HAVE_MPI) || defined(CNNKIT_HAVE_NCCL) /* else nothing makes a comm */
static void comm_orphan(ck_handle *h) {
    ck_comm *c = (ck_comm *)h;
    free_parts(c);
    c->ctx = NULL;
}
#endif

CK_API void ck_comm_destroy(ck_comm *c) {
    if (!c)
        return;
    if (c->ctx) {
        ck_device_enter(c->ctx);
        ck_handle_unlink(c->ctx, &c->link);
        free_parts(c);
    }
    ck_host_free(c->ctx, c);
}

CK_API int ck_comm_nccl_available(void) {
#ifdef CNNKIT_HAVE_NCCL
    return 1;
#else
    return 0;
#endif
}

static ck_status nccl_ctx_ok(ck_context *ctx) {
    if (!ck_comm_nccl_available())
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "comm: this build of cnnkit has no NCCL (configure with -DCNNKIT_NCCL=ON "
                       "or AUTO, with the CUDA backend)");
    if (ctx->device != CK_DEVICE_CUDA)
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "ctx: a CPU context; NCCL communicators serve CUDA contexts (CPU contexts "
                       "take ck_comm_create_mpi)");
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_comm_nccl_id(ck_context *ctx, void *id) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    if (!id)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "id: is NULL (CK_COMM_NCCL_ID_BYTES bytes)");
    CK_TRY(nccl_ctx_ok(ctx));
#ifdef CNNKIT_HAVE_NCCL
    return ck_nccl_unique_id(ctx, id, CK_COMM_NCCL_ID_BYTES);
#else
    return CK_STATUS_NOT_SUPPORTED;
#endif
}

CK_API ck_status ck_comm_create_nccl(ck_context *ctx, const void *id, int rank, int size,
                                     ck_comm **out) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    if (!out)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "comm: is NULL");
    if (!id)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "id: is NULL (from ck_comm_nccl_id on one rank)");
    if (size < 1)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "size: %d ranks (must be >= 1)", size);
    if (rank < 0 || rank >= size)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "rank: %d (must be in [0, %d))", rank, size);
    CK_TRY(nccl_ctx_ok(ctx));
#ifdef CNNKIT_HAVE_NCCL
    ck_comm *c = (ck_comm *)ck_host_calloc(ctx, 1, sizeof *c);
    if (!c)
        return ck_host_oom(ctx, "comm", sizeof *c);
    c->ctx = ctx;
    c->rank = rank;
    c->size = size;
    c->timeout_s = CK_COMM_DEFAULT_TIMEOUT_S;
#ifdef CNNKIT_HAVE_MPI
    c->mpi = c->side = MPI_COMM_NULL;
#endif
    const ck_status st = ck_nccl_create(ctx, id, rank, size, c->timeout_s, &c->nccl);
    if (st != CK_STATUS_SUCCESS) {
        ck_host_free(ctx, c);
        return st;
    }
    ck_handle_link(ctx, &c->link, comm_orphan);
    *out = c;
    return CK_STATUS_SUCCESS;
#else
    return CK_STATUS_NOT_SUPPORTED;
#endif
}

unsigned long long ck_comm_calls(const ck_comm *c) {
    return c ? c->calls : 0;
}

int ck_comm_on_device(const ck_comm *c) {
#ifdef CNNKIT_HAVE_NCCL
    return c && c->nccl != NULL;
#else
    (void)c;
    return 0;
#endif
}

#ifdef CNNKIT_HAVE_NCCL
/* An NCCL operation's status; any failure breaks the communicator, as an MPI one does. */
static ck_status nccl_done(const ck_comm *c, ck_status st) {
    return st == CK_STATUS_SUCCESS ? st : broken_by(c, st);
}
#define CK_NCCL_ROUTE(c, expr)                                                                     \
    do {                                                                                           \
        if ((c)->nccl)                                                                             \
            return nccl_done((c), (expr));                                                         \
    } while (0)
#else
#define CK_NCCL_ROUTE(c, expr) ((void)0)
#endif

ck_status ck_comm_sum_f32(const ck_comm *c, float *buf, size_t count) {
    CK_COMM_CALL(c);
    CK_NCCL_ROUTE(c, ck_nccl_allreduce(c->nccl, buf, count, CK_NCCL_F32, CK_NCCL_SUM,
                                       "ncclAllReduce (gradients)"));
    return mpi_sum_f32(c, buf, count);
}

ck_status ck_comm_sum_f64(const ck_comm *c, double *buf, int count) {
    CK_COMM_CALL(c);
    CK_NCCL_ROUTE(c, ck_nccl_host(c->nccl, buf, (size_t)count, CK_NCCL_F64, CK_NCCL_SUM, 0,
                                  "ncclAllReduce (sum)"));
    return mpi_sum_f64(c, buf, count);
}

ck_status ck_comm_sum_f64_failed(const ck_comm *c, int count) {
    CK_COMM_CALL(c);
    if (ck_comm_on_device(c))
        return ck_fail(c->ctx, CK_STATUS_INTERNAL,
                       "comm: a failed rank's host sum is for MPI communicators");
    return mpi_sum_f64_failed(c, count);
}

ck_status ck_comm_min_i64(const ck_comm *c, long long *buf, int count) {
    CK_COMM_CALL(c);
    CK_NCCL_ROUTE(c, ck_nccl_host(c->nccl, buf, (size_t)count, CK_NCCL_I64, CK_NCCL_MIN, 0,
                                  "ncclAllReduce (min)"));
    return mpi_min_i64(c, buf, count);
}

ck_status ck_comm_max_i64(const ck_comm *c, long long *buf, int count) {
    CK_COMM_CALL(c);
    CK_NCCL_ROUTE(c, ck_nccl_host(c->nccl, buf, (size_t)count, CK_NCCL_I64, CK_NCCL_MAX, 0,
                                  "ncclAllReduce (max)"));
    return mpi_max_i64(c, buf, count);
}

#ifdef CNNKIT_HAVE_NCCL
/* NCCL has no scan: every rank's value, then the sum of those below this rank. */
static ck_status nccl_exscan(const ck_comm *c, long long v, long long *before) {
    long long *all = (long long *)ck_host_alloc(c->ctx, sizeof *all * (size_t)c->size);
    if (!all)
        return ck_host_oom(c->ctx, "comm: scan buffer", sizeof *all * (size_t)c->size);
    const ck_status st = ck_nccl_allgather_i64(c->nccl, v, all, "ncclAllGather (scan)");
    long long s = 0;
    for (int r = 0; r < c->rank && st == CK_STATUS_SUCCESS; ++r)
        s += all[r];
    if (st == CK_STATUS_SUCCESS)
        *before = s;
    ck_host_free(c->ctx, all); /* filled from the pinned stage after the wait, never by NCCL */
    return st;
}
#endif

ck_status ck_comm_exscan_i64(const ck_comm *c, long long v, long long *before) {
    *before = 0;
    CK_COMM_CALL(c);
    CK_NCCL_ROUTE(c, nccl_exscan(c, v, before));
    return mpi_exscan_i64(c, v, before);
}

#ifdef CNNKIT_HAVE_NCCL
static ck_status nccl_bcast_wait(const ck_comm *c, float *buf, size_t count) {
    CK_TRY(ck_nccl_bcast(c->nccl, buf, count, CK_NCCL_F32, "ncclBroadcast"));
    return ck_nccl_sync(c->nccl, "ncclBroadcast");
}
#endif

ck_status ck_comm_bcast_f32(const ck_comm *c, float *buf, size_t count) {
    CK_COMM_CALL(c);
    CK_NCCL_ROUTE(c, nccl_bcast_wait(c, buf, count));
    return mpi_bcast_f32(c, buf, count);
}

ck_status ck_comm_bcast_i64(const ck_comm *c, long long *buf, int count) {
    CK_COMM_CALL(c);
    CK_NCCL_ROUTE(
        c, ck_nccl_host(c->nccl, buf, (size_t)count, CK_NCCL_I64, CK_NCCL_SUM, 1, "ncclBroadcast"));
    return mpi_bcast_i64(c, buf, count);
}

ck_status ck_comm_device_allreduce(const ck_comm *c, void *dbuf, size_t count, ck_nccl_type t,
                                   ck_nccl_op op, const char *what) {
    CK_COMM_CALL(c);
    CK_NCCL_ROUTE(c, ck_nccl_allreduce(c->nccl, dbuf, count, t, op, what));
    (void)dbuf, (void)count, (void)t, (void)op;
    return ck_fail(c->ctx, CK_STATUS_INTERNAL, "comm: %s: device memory needs an NCCL communicator",
                   what);
}

ck_status ck_comm_device_sum_side(const ck_comm *c, float *dbuf, size_t count) {
    CK_COMM_CALL(c);
    CK_NCCL_ROUTE(c, ck_nccl_allreduce_side(c->nccl, dbuf, count, "ncclAllReduce (gradients)"));
    (void)dbuf, (void)count;
    return ck_fail(c->ctx, CK_STATUS_INTERNAL, "comm: device buckets need an NCCL communicator");
}

ck_status ck_comm_device_join(const ck_comm *c) {
    CK_COMM_LIVE(c);
    CK_NCCL_ROUTE(c, ck_nccl_join(c->nccl));
    return CK_STATUS_SUCCESS;
}

ck_status ck_comm_device_allgather_f64(const ck_comm *c, const double *local, double *all,
                                       size_t count, const char *what) {
    CK_COMM_CALL(c);
    CK_NCCL_ROUTE(c, ck_nccl_allgather(c->nccl, local, all, count, CK_NCCL_F64, what));
    (void)local, (void)all, (void)count;
    return ck_fail(c->ctx, CK_STATUS_INTERNAL, "comm: %s: device memory needs an NCCL communicator",
                   what);
}

ck_status ck_comm_device_scratch(const ck_comm *c, size_t bytes, void **out) {
    CK_COMM_LIVE(c);
    CK_NCCL_ROUTE(c, ck_nccl_scratch(c->nccl, bytes, out));
    (void)bytes, (void)out;
    return ck_fail(c->ctx, CK_STATUS_INTERNAL, "comm: device scratch needs an NCCL communicator");
}

ck_status ck_comm_device_prepare(const ck_comm *c, size_t scratch_bytes) {
    CK_COMM_LIVE(c);
#ifdef CNNKIT_HAVE_NCCL
    if (c->nccl) {
        const ck_status st = ck_nccl_prepare(c->nccl, scratch_bytes);
        return st == CK_STATUS_SUCCESS || !ck_nccl_aborted(c->nccl) ? st : broken_by(c, st);
    }
#endif
    (void)scratch_bytes;
    return CK_STATUS_SUCCESS;
}

ck_status ck_comm_sync(const ck_comm *c, const char *what) {
    CK_COMM_LIVE(c);
    CK_NCCL_ROUTE(c, ck_nccl_sync(c->nccl, what));
    (void)what;
    return CK_STATUS_SUCCESS;
}
