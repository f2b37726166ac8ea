/* The NCCL communicator of CUDA contexts (cnnkit/comm.h, src/host/core/comm_nccl.c). Several
 * GPUs cannot be had on the machines that run this suite, so the device tests use one rank: a
 * communicator of size 1 runs every collective of the data-parallel step (the packets, the
 * device all-reduces of the loss, the gradients and the verdict), and its training must equal
 * the single-device training bit for bit. The argument checks run everywhere. */
#include "comm_internal.h"
#include "common.h"

/* a hung device call (a kernel that spins, a collective that waits) fails its test after five
 * minutes instead of holding the whole GPU run */
TestSuite(gpu_comm, .timeout = 300);

#include <cnnkit/comm.h>
#include <cnnkit/data.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

Test(comm, nccl_errors_name_the_argument) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    unsigned char id[CK_COMM_NCCL_ID_BYTES] = {0};
    ck_comm *c = (ck_comm *)0x1;
    cr_assert_eq(ck_comm_create_nccl(NULL, id, 0, 1, &c), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_comm_nccl_id(NULL, id), CK_STATUS_BAD_PARAM);
    static const struct {
        const void *id;
        int rank, size, null_out;
        const char *names;
    } bad[] = {{NULL, 0, 1, 0, "id"},
               {"x", 0, 0, 0, "size"},
               {"x", 1, 1, 0, "rank"},
               {"x", -1, 2, 0, "rank"},
               {"x", 0, 1, 1, "comm"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; ++i) {
        cr_assert_eq(ck_comm_create_nccl(ctx, bad[i].id, bad[i].rank, bad[i].size,
                                         bad[i].null_out ? NULL : &c),
                     CK_STATUS_BAD_PARAM, "case %zu", i);
        cr_assert(strstr(ck_context_last_error(ctx), bad[i].names), "case %zu: %s", i,
                  ck_context_last_error(ctx));
    }
    /* a CPU context: NCCL serves CUDA contexts (or the build has no NCCL: it says so) */
    cr_assert_eq(ck_comm_create_nccl(ctx, id, 0, 1, &c), CK_STATUS_NOT_SUPPORTED);
    cr_assert(strstr(ck_context_last_error(ctx),
                     ck_comm_nccl_available() ? "ctx: a CPU context" : "no NCCL"),
              "%s", ck_context_last_error(ctx));
    cr_assert_eq(ck_comm_nccl_id(ctx, id), CK_STATUS_NOT_SUPPORTED);
    cr_assert_eq(ck_comm_nccl_id(ctx, NULL), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "id"), "%s", ck_context_last_error(ctx));
    cr_assert_eq(c, (ck_comm *)0x1, "*comm is untouched on failure");
    ck_context_destroy(ctx);
}

/* The seed model with a SyncBatchNormalization (one rank: its statistics are the local ones). */
static const char *const sync_text = "model = Sequential()\n"
                                     "model.add(Conv2D(8, (3,3), input_shape=(12,12,1)))\n"
                                     "model.add(SyncBatchNormalization())\n"
                                     "model.add(Activation('relu'))\n"
                                     "model.add(MaxPooling2D((2,2)))\n"
                                     "model.add(SpatialDropout2D(0.25))\n"
                                     "model.add(Conv2D(8, (3,3)))\n"
                                     "model.add(BatchNormalization())\n"
                                     "model.add(Activation('relu'))\n"
                                     "model.add(Flatten())\n"
                                     "model.add(Dense(16))\n"
                                     "model.add(Dropout(0.3))\n"
                                     "model.add(Dense(4, activation='softmax'))\n";

/* Eager steps on both sides: a model with a communicator never captures a graph, and the single
 * GPU reference eager too keeps a graph-vs-eager difference (gpu_graph's to find) out of these. */
static ck_model *build_on(ck_context *ctx, const char *text, int max_batch) {
    ck_model *m = NULL;
    char msg[512];
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, &m, msg, sizeof msg));
    CK_OK(ctx, ck_model_build(m, 0, 0, 0, max_batch));
    CK_OK(ctx, ck_model_set_cuda_graph(m, CK_CUDA_GRAPH_OFF));
    return m;
}

static void make_batch(float *x, int32_t *y, int n, uint64_t seed) {
    trng r = {seed};
    for (int i = 0; i < n; ++i) {
        y[i] = (int32_t)(trng_u32(&r) % 4);
        for (int p = 0; p < 144; ++p)
            x[(size_t)i * 144 + p] = 0.25f * (float)y[i] + trng_uniform(&r, -0.5f, 0.5f);
    }
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "%s", path);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*len ? *len : 1);
    cr_assert_eq(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

/* Both models' checkpoints (parameters, moments, BN statistics, step) are byte-identical. */
static void assert_same_state(ck_context *ctx, ck_model *a, ck_model *b, const char *when) {
    char pa[64], pb[64];
    snprintf(pa, sizeof pa, "/tmp/ck_nccl_a_%d.ckpt", (int)getpid());
    snprintf(pb, sizeof pb, "/tmp/ck_nccl_b_%d.ckpt", (int)getpid());
    CK_OK(ctx, ck_model_save(a, pa));
    CK_OK(ctx, ck_model_save(b, pb));
    size_t la = 0, lb = 0;
    unsigned char *ba = read_all(pa, &la), *bb = read_all(pb, &lb);
    cr_assert_eq(la, lb, "%s", when);
    cr_assert(memcmp(ba, bb, la) == 0, "%s: the checkpoints differ", when);
    free(ba);
    free(bb);
    unlink(pa);
    unlink(pb);
}

static ck_comm *one_rank(ck_context *ctx) {
    unsigned char id[CK_COMM_NCCL_ID_BYTES];
    if (!ck_comm_nccl_available())
        t_gpu_unavailable("this build has no NCCL");
    const ck_status st = ck_comm_nccl_id(ctx, id);
    if (st == CK_STATUS_NOT_SUPPORTED) /* no libnccl.so.2 on this machine */
        t_gpu_unavailable(ck_context_last_error(ctx));
    CK_OK(ctx, st);
    ck_comm *c = NULL;
    CK_OK(ctx, ck_comm_create_nccl(ctx, id, 0, 1, &c));
    cr_assert_eq(ck_comm_rank(c), 0);
    cr_assert_eq(ck_comm_size(c), 1);
    CK_OK(ctx, ck_comm_set_timeout(c, 60.0));
    cr_assert_eq(ck_comm_timeout(c), 60.0);
    return c;
}

/* 12 steps of a model with a one-rank NCCL communicator against the same model without one:
 * every step's loss and correct count, and the whole state after, bit for bit; a batch refused
 * on the rank (a label out of range) runs the failing rank's collectives and changes nothing. */
Test(gpu_comm, nccl_one_rank_matches_single_gpu) {
    ck_context *ctx = t_cuda_ctx_or_skip();
    ck_comm *c = one_rank(ctx);
    ck_model *a = build_on(ctx, sync_text, 32), *b = build_on(ctx, sync_text, 32);
    assert_same_state(ctx, a, b, "before training");
    CK_OK(ctx, ck_model_set_comm(a, c));
    enum { N = 32 };
    float *x = malloc(sizeof(float) * N * 144);
    int32_t y[N];
    for (int s = 0; s < 12; ++s) {
        const int n = s == 5 ? 19 : N; /* a short batch too */
        make_batch(x, y, n, 100 + (uint64_t)s);
        ck_step_result ra, rb;
        const unsigned long long calls = ck_comm_calls(c);
        CK_OK(ctx, ck_model_train_step(a, x, y, n, &ra));
        /* the step went through the communicator (a one-rank sum is the identity: without this
         * a step that never communicated would match too), exactly: the begin packet, the
         * dropout offsets' scan, the SyncBN exchange forward and backward, the loss and correct
         * sums, the gradients in one sum (SyncBN: no buckets), the verdict */
        cr_assert_eq(ck_comm_calls(c) - calls, 8, "step %d: %llu collectives", s,
                     ck_comm_calls(c) - calls);
        CK_OK(ctx, ck_model_train_step(b, x, y, n, &rb));
        cr_assert(memcmp(&ra.loss, &rb.loss, sizeof ra.loss) == 0, "step %d: loss %.9g vs %.9g", s,
                  ra.loss, rb.loss);
        cr_assert_eq(ra.correct, rb.correct, "step %d", s);
        cr_assert_eq(ra.count, n, "step %d", s);
        if (s == 7) { /* refused on this rank: both refuse, neither changes */
            y[3] = 9;
            const unsigned long long before = ck_comm_calls(c);
            cr_assert_eq(ck_model_train_step(a, x, y, n, NULL), CK_STATUS_BAD_PARAM);
            /* the refused rank joins the begin packet only, which fails every rank there */
            cr_assert_eq(ck_comm_calls(c) - before, 1, "%llu collectives",
                         ck_comm_calls(c) - before);
            cr_assert_eq(ck_model_train_step(b, x, y, n, NULL), CK_STATUS_BAD_PARAM);
            cr_assert_eq(ck_comm_broken(c), 0, "a refused batch does not break the comm");
        }
    }
    cr_assert_eq(ck_model_step(a), 12);
    assert_same_state(ctx, a, b, "after 12 steps");
    CK_OK(ctx, ck_model_set_comm(a, NULL));
    free(x);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_comm_destroy(c);
    ck_context_destroy(ctx);
}

/* The same in bf16 (issue 16): the data-parallel device step with bf16 storage (the loss share
 * scaled in fp32 before the loss gradient is packed, SyncBN's exchange between the bf16 kernels'
 * phases, the buckets of fp32 gradients) with one rank is the single-GPU bf16 step bit for bit. */
Test(gpu_comm, nccl_one_rank_bf16_matches_single_gpu) {
    ck_context *ctx = t_cuda_ctx_or_skip();
    ck_model *ab[2];
    for (int k = 0; k < 2; ++k) {
        char msg[512];
        CK_OK(ctx, ck_model_from_keras_text(ctx, sync_text, &ab[k], msg, sizeof msg));
        CK_OK(ctx, ck_model_set_precision(ab[k], CK_PRECISION_BF16));
        const ck_status st = ck_model_build(ab[k], 0, 0, 0, 32);
        if (st == CK_STATUS_NOT_SUPPORTED &&
            strstr(ck_context_last_error(ctx), "compute capability")) /* before sm_80 */
            t_gpu_unavailable(ck_context_last_error(ctx));
        CK_OK(ctx, st);
        CK_OK(ctx, ck_model_set_cuda_graph(ab[k], CK_CUDA_GRAPH_OFF)); /* as build_on */
    }
    ck_comm *c = one_rank(ctx);
    ck_model *a = ab[0], *b = ab[1];
    CK_OK(ctx, ck_model_set_comm(a, c));
    enum { N = 32 };
    float *x = malloc(sizeof(float) * N * 144);
    int32_t y[N];
    for (int s = 0; s < 8; ++s) {
        const int n = s == 3 ? 19 : N;
        make_batch(x, y, n, 300 + (uint64_t)s);
        ck_step_result ra, rb;
        const unsigned long long calls = ck_comm_calls(c);
        CK_OK(ctx, ck_model_train_step(a, x, y, n, &ra));
        cr_assert_eq(ck_comm_calls(c) - calls, 8, "step %d: %llu collectives", s,
                     ck_comm_calls(c) - calls);
        CK_OK(ctx, ck_model_train_step(b, x, y, n, &rb));
        cr_assert(memcmp(&ra.loss, &rb.loss, sizeof ra.loss) == 0, "step %d: loss %.9g vs %.9g", s,
                  ra.loss, rb.loss);
        cr_assert_eq(ra.correct, rb.correct, "step %d", s);
    }
    assert_same_state(ctx, a, b, "after 8 bf16 steps");
    CK_OK(ctx, ck_model_set_comm(a, NULL));
    free(x);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_comm_destroy(c);
    ck_context_destroy(ctx);
}

/* ck_model_fit with a one-rank communicator (the data agreement, the shards, the per-step stop
 * agreement) gives the fit without one, bit for bit. */
Test(gpu_comm, nccl_one_rank_fit_matches) {
    ck_context *ctx = t_cuda_ctx_or_skip();
    ck_comm *c = one_rank(ctx);
    ck_model *a = build_on(ctx, sync_text, 32), *b = build_on(ctx, sync_text, 32);
    CK_OK(ctx, ck_model_set_comm(a, c));
    ck_dataset d = {.count = 200, .h = 12, .w = 12, .c = 1, .classes = 4};
    d.images = malloc(sizeof(float) * 200 * 144);
    d.labels = malloc(sizeof(int32_t) * 200);
    make_batch(d.images, d.labels, 200, 7);
    ck_fit_options o;
    memset(&o, 0, sizeof o);
    o.epochs = 2;
    o.batch = 32; /* 200 = 6 x 32 + 8: a short last batch */
    ck_epoch_result ha[2], hb[2];
    CK_OK(ctx, ck_model_fit(a, &d, &d, &o, ha));
    CK_OK(ctx, ck_model_fit(b, &d, &d, &o, hb));
    for (int e = 0; e < 2; ++e) {
        const double va[4] = {ha[e].loss, ha[e].accuracy, ha[e].val_loss, ha[e].val_accuracy};
        const double vb[4] = {hb[e].loss, hb[e].accuracy, hb[e].val_loss, hb[e].val_accuracy};
        cr_assert(memcmp(va, vb, sizeof va) == 0, "epoch %d: loss %.9g vs %.9g", e + 1, va[0],
                  vb[0]);
    }
    CK_OK(ctx, ck_model_set_comm(a, NULL));
    assert_same_state(ctx, a, b, "after the fit");
    ck_dataset_free(&d);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_comm_destroy(c);
    ck_context_destroy(ctx);
}

/* The question's model (598k parameters: three 1 MiB buckets, the upper two launched on the
 * communicator's second stream while the backward pass goes on below the dense layer) with a
 * one-rank communicator: 6 steps equal the single-GPU model's, byte for byte. A one-rank
 * all-reduce in place is a no-op in NCCL, so this proves the step's work and its collectives'
 * count, not their timing: which bucket may go when is checked on the plan, on the CPU
 * (comm/gradient_buckets_launch_only_final_gradients). */
Test(gpu_comm, nccl_one_rank_overlapped_buckets_match) {
    ck_context *ctx = t_cuda_ctx_or_skip();
    ck_comm *c = one_rank(ctx);
    ck_model *a = build_on(ctx, t_seed_cnn_text, 16), *b = build_on(ctx, t_seed_cnn_text, 16);
    size_t params = 0;
    CK_OK(ctx, ck_model_get_weights(a, NULL, 0, &params));
    cr_assert_gt(params, 2 * 262144, "the model spans several buckets (%zu weights)", params);
    CK_OK(ctx, ck_model_set_comm(a, c));
    enum { N = 16 };
    float *x = malloc(sizeof(float) * N * 784);
    int32_t y[N];
    for (int s = 0; s < 6; ++s) {
        trng r = {500 + (uint64_t)s};
        for (int i = 0; i < N; ++i) {
            y[i] = (int32_t)(trng_u32(&r) % 10);
            for (int p = 0; p < 784; ++p)
                x[i * 784 + p] = 0.05f * (float)y[i] + trng_uniform(&r, 0.0f, 1.0f);
        }
        ck_step_result ra, rb;
        const unsigned long long calls = ck_comm_calls(c);
        CK_OK(ctx, ck_model_train_step(a, x, y, N, &ra));
        /* exactly: the begin packet, the dropout scan, loss and correct, three buckets (one sum
         * when the overlap is off: 6), the verdict */
        cr_assert_eq(ck_comm_calls(c) - calls, 8, "step %d: %llu collectives", s,
                     ck_comm_calls(c) - calls);
        CK_OK(ctx, ck_model_train_step(b, x, y, N, &rb));
        cr_assert(memcmp(&ra.loss, &rb.loss, sizeof ra.loss) == 0, "step %d: loss %.9g vs %.9g", s,
                  ra.loss, rb.loss);
    }
    CK_OK(ctx, ck_model_set_comm(a, NULL));
    assert_same_state(ctx, a, b, "after 6 overlapped steps");
    free(x);
    ck_model_destroy(a);
    ck_model_destroy(b);
    ck_comm_destroy(c);
    ck_context_destroy(ctx);
}

/* The packet collectives of a one-rank communicator are identities, and a CUDA model refuses an
 * MPI communicator only where one exists; set_comm's check of the ranks' models runs through
 * NCCL (a model attached twice is still one model). */
Test(gpu_comm, nccl_one_rank_attach_twice) {
    ck_context *ctx = t_cuda_ctx_or_skip();
    ck_comm *c = one_rank(ctx);
    ck_model *a = build_on(ctx, sync_text, 8);
    CK_OK(ctx, ck_model_set_comm(a, c));
    CK_OK(ctx, ck_model_set_comm(a, c));
    CK_OK(ctx, ck_model_set_comm(a, NULL));
    ck_model_destroy(a);
    ck_comm_destroy(c);
    ck_context_destroy(ctx);
}

/* NCCL_COMM_BLOCKING=1 would make NCCL's calls block where cnnkit's timeout cannot reach: the
 * communicator is refused, naming the variable, and *comm is untouched; 0 is NCCL's default for
 * cnnkit's config and works. NCCL reads the value with strtoll in any base, so "0x1" is 1. */
Test(gpu_comm, nccl_forced_blocking_is_refused) {
    ck_context *ctx = t_cuda_ctx_or_skip();
    ck_comm_destroy(one_rank(ctx)); /* skips where there is no NCCL */
    unsigned char id[CK_COMM_NCCL_ID_BYTES];
    static const char *const refused[] = {"1", "0x1", " 1"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; ++i) {
        CK_OK(ctx, ck_comm_nccl_id(ctx, id));
        cr_assert_eq(setenv("NCCL_COMM_BLOCKING", refused[i], 1), 0);
        ck_comm *c = (ck_comm *)0x1;
        cr_assert_eq(ck_comm_create_nccl(ctx, id, 0, 1, &c), CK_STATUS_NOT_SUPPORTED, "'%s'",
                     refused[i]);
        cr_assert(strstr(ck_context_last_error(ctx), "NCCL_COMM_BLOCKING=") &&
                      strstr(ck_context_last_error(ctx), "in the environment") &&
                      strstr(ck_context_last_error(ctx), "unset it or set it to 0"),
                  "%s", ck_context_last_error(ctx));
        cr_assert_eq(c, (ck_comm *)0x1, "*comm is untouched on failure");
    }
    cr_assert_eq(setenv("NCCL_COMM_BLOCKING", "0", 1), 0);
    CK_OK(ctx, ck_comm_nccl_id(ctx, id));
    ck_comm *c = NULL;
    CK_OK(ctx, ck_comm_create_nccl(ctx, id, 0, 1, &c));
    ck_comm_destroy(c);
    cr_assert_eq(unsetenv("NCCL_COMM_BLOCKING"), 0);
    ck_context_destroy(ctx);
}

#ifdef CNNKIT_EMU_NCCL_PATH
#include <dlfcn.h>
#include <sys/wait.h>

/* kemu only: NCCL copies its settings files into the environment at its first id or
 * communicator, so on a rank that did not make the id an nccl.conf's NCCL_COMM_BLOCKING=1 appears
 * during the initialization; the communicator is then refused too (aborted). The id comes from a
 * child process, as another rank's would (a real NCCL's would need that process alive). */
Test(gpu_comm, nccl_blocking_from_nccl_conf_is_refused_kemu) {
    int fd[2];
    cr_assert_eq(pipe(fd), 0);
    const pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) { /* the rank that makes the id */
        unsigned char id[CK_COMM_NCCL_ID_BYTES];
        ck_context *c = NULL;
        const int ok = ck_context_create(&c, CK_DEVICE_CUDA, 0, 1) == CK_STATUS_SUCCESS &&
                       ck_comm_nccl_id(c, id) == CK_STATUS_SUCCESS &&
                       write(fd[1], id, sizeof id) == (ssize_t)sizeof id;
        ck_context_destroy(c);
        _exit(ok ? 0 : 1);
    }
    close(fd[1]);
    unsigned char id[CK_COMM_NCCL_ID_BYTES];
    cr_assert_eq(read(fd[0], id, sizeof id), (ssize_t)sizeof id);
    close(fd[0]);
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char conf[] = "/tmp/cnnkit-nccl-conf-XXXXXX";
    const int cf = mkstemp(conf);
    cr_assert_neq(cf, -1);
    static const char text[] = "# a site's settings\nNCCL_COMM_BLOCKING=1\n";
    cr_assert_eq(write(cf, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(cf);
    cr_assert_eq(setenv("NCCL_CONF_FILE", conf, 1), 0);
    cr_assert_null(getenv("NCCL_COMM_BLOCKING"));
    ck_context *ctx = t_cuda_ctx_or_skip();
    ck_comm *c = (ck_comm *)0x1;
    cr_assert_eq(ck_comm_create_nccl(ctx, id, 0, 1, &c), CK_STATUS_NOT_SUPPORTED, "%s",
                 ck_context_last_error(ctx));
    cr_assert(strstr(ck_context_last_error(ctx), "NCCL_COMM_BLOCKING=1 (set by an nccl.conf"), "%s",
              ck_context_last_error(ctx));
    cr_assert_eq(c, (ck_comm *)0x1, "*comm is untouched on failure");
    unlink(conf);
    ck_context_destroy(ctx); /* kemu stops a process that leaves an NCCL communicator alive */
}

/* kemu only (its NCCL injects the failure: tests/kemu/kemu_nccl.cpp): an NCCL call that fails
 * inside a step, as one does when a peer dies or the network breaks, fails the step with NCCL's
 * message naming the rank and breaks the communicator; the next step fails at once with the
 * same message, running no collective; then everything is destroyed without a wait, and the
 * NCCL communicator is aborted (kemu fails a process that leaves one alive). inject: kemu's
 * function that fails the 5th call from now; why: what its message says. */
static void failure_breaks_the_comm(const char *inject, const char *why) {
    void *lib = dlopen(CNNKIT_EMU_NCCL_PATH, RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(lib, "%s", dlerror());
    void (*fail_call)(int, int) = (void (*)(int, int))dlsym(lib, inject);
    cr_assert_not_null(fail_call, "%s", dlerror());
    ck_context *ctx = t_cuda_ctx_or_skip();
    ck_comm *c = one_rank(ctx);
    ck_model *a = build_on(ctx, sync_text, 32);
    CK_OK(ctx, ck_model_set_comm(a, c));
    enum { N = 32 };
    float *x = malloc(sizeof(float) * N * 144);
    int32_t y[N];
    make_batch(x, y, N, 900);
    CK_OK(ctx, ck_model_train_step(a, x, y, N, NULL));
    fail_call(5, 6); /* ncclRemoteError, in the middle of the next step's 8 collectives */
    cr_assert_eq(ck_model_train_step(a, x, y, N, NULL), CK_STATUS_INTERNAL);
    char first[1024];
    snprintf(first, sizeof first, "%s", ck_context_last_error(ctx));
    cr_assert(strstr(first, "failed on rank 0 of 1: remote process exited or there was a network "
                            "error") &&
                  strstr(first, why),
              "%s", first);
    cr_assert_eq(ck_comm_broken(c), 1);
    const unsigned long long calls = ck_comm_calls(c);
    cr_assert_eq(ck_model_train_step(a, x, y, N, NULL), CK_STATUS_INTERNAL);
    cr_assert_eq(ck_comm_calls(c), calls, "a collective ran on a broken communicator");
    cr_assert(strstr(ck_context_last_error(ctx), strchr(first, ':') + 1), "%s\nvs\n%s",
              ck_context_last_error(ctx), first);
    CK_OK(ctx, ck_model_set_comm(a, NULL));
    free(x);
    ck_model_destroy(a);
    ck_comm_destroy(c);
    ck_context_destroy(ctx);
    dlclose(lib);
}

Test(gpu_comm, nccl_failure_breaks_the_comm_kemu) {
    failure_breaks_the_comm("kemu_nccl_fail_call", "kemu's injected failure (kemu_nccl_fail_call)");
}

/* The same when the call answers ncclInProgress and the error comes from polling (a
 * non-blocking communicator, as cnnkit's): the communicator keeps the error, so only an abort
 * ends it, which kemu checks at exit. */
Test(gpu_comm, nccl_async_failure_breaks_the_comm_kemu) {
    failure_breaks_the_comm("kemu_nccl_fail_async",
                            "kemu's injected failure (kemu_nccl_fail_async)");
}
#endif

#if defined(CNNKIT_HAVE_MPI) && defined(CNNKIT_HAVE_CUDA)
#include <cuda_runtime_api.h>

/* Two ranks with NCCL, one GPU each (on kemu, each process's own emulated GPU and kemu's NCCL
 * across the processes), against one GPU on the whole batch, as the comm suite's MPI tests do on
 * the CPU (tests/mpi/dp_train.c): the losses and weights to 1e-5 (the same sums in another
 * grouping, docs/distributed.md) and the ranks' weights bit-identical. Unlike the one-rank tests,
 * the device step's cross-rank values (the loss share, the gradient sum and its overlapped
 * buckets, SyncBN's exchange, the dropout offsets' scan) are not identities: dropping the loss
 * share's scale, or one element of each full bucket, fails it. */
Test(gpu_comm, nccl_two_ranks_match_one_gpu, .timeout = 300) {
    ck_context_destroy(t_cuda_ctx_or_skip());
#ifdef CNNKIT_EMU_NCCL_PATH
    const char *device = "--cuda-device 0";
#else
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 2)
        cr_skip("two GPUs needed, %d here", devices);
    const char *device = "--cuda";
#endif
    char out[8192], args[256];
    snprintf(args, sizeof args, "%s --dropout --global 32 --steps 8 --tol 1e-5", device);
    int rc = t_run_mpiexec("", 2, CNNKIT_MPI_DP_PATH, args, out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "ranks 2, global batch 32, 8 steps") && strstr(out, "identical: yes"),
              "%s", out);
    cr_log_info("%s", out);
    snprintf(args, sizeof args, "%s --fit --sync --global 64 --tol 1e-5 --wtol 1e-4", device);
    rc = t_run_mpiexec("", 2, CNNKIT_MPI_DP_PATH, args, out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "fit, 1 epoch") && strstr(out, "identical: yes"), "%s", out);
    cr_log_info("%s", out);
    /* 822,868 parameters without BN: four gradient buckets, the upper ones summed on the second
     * stream during the backward pass (begin, loss, correct, 4 buckets, verdict) */
    snprintf(args, sizeof args, "%s --big --global 32 --steps 6 --tol 1e-5", device);
    rc = t_run_mpiexec("", 2, CNNKIT_MPI_DP_PATH, args, out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "collectives per step: 8") && strstr(out, "identical: yes"), "%s", out);
    cr_log_info("%s", out);
}
#endif

#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"

#include <cuda_runtime_api.h>

/* The exchange of two emulated ranks in one process: each call keeps this rank's 3C doubles in
 * store[rank] and hands both slots on, rank 0 first. A rank's results are right once the other
 * rank has run before it with its current input. */
typedef struct fake_ranks {
    int rank;
    double *store; /* device: 2 x 3C */
    void *stream;
} fake_ranks;

static int fake_exchange(void *user, const double *local, double *all, size_t count) {
    fake_ranks *f = (fake_ranks *)user;
    cudaStream_t s = (cudaStream_t)f->stream;
    return cudaMemcpyAsync(f->store + f->rank * count, local, count * sizeof(double),
                           cudaMemcpyDeviceToDevice, s) != cudaSuccess ||
           cudaMemcpyAsync(all, f->store, 2 * count * sizeof(double), cudaMemcpyDeviceToDevice,
                           s) != cudaSuccess;
}

enum { SB_N = 8, SB_C = 5, SB_H = 3, SB_W = 3, SB_HALF = SB_N / 2 * SB_H * SB_W * SB_C };

static float *dev_copy(const float *h, size_t n) {
    float *d = NULL;
    cr_assert_eq(cudaMalloc((void **)&d, n * sizeof *d), cudaSuccess);
    if (h)
        cr_assert_eq(cudaMemcpy(d, h, n * sizeof *d, cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}

static void host_copy(float *h, const float *d, size_t n) {
    cr_assert_eq(cudaMemcpy(h, d, n * sizeof *h, cudaMemcpyDeviceToHost), cudaSuccess);
}

/* SyncBatchNormalization's kernels over two emulated ranks of 4 samples each against the plain
 * kernels on the batch of 8 (NHWC, fused ReLU): outputs, statistics, running statistics, dx and
 * the sum of the ranks' dgamma/dbeta agree to rounding, and both ranks finalize with the same
 * bits. Without the exchange a half's output is far off (the test can fail). */
Test(gpu_comm, syncbn_two_ranks_match_one_batch) {
    ck_context *ctx = t_cuda_ctx_or_skip();
    void *stream = ck_context_stream(ctx);
    const size_t count = (size_t)SB_N * SB_H * SB_W * SB_C;
    float *hx = malloc(count * sizeof *hx), *hdy = malloc(count * sizeof *hdy);
    float g[SB_C], b[SB_C], rm0[SB_C], rv0[SB_C];
    trng r = {77};
    for (size_t i = 0; i < count; ++i) {
        hx[i] = trng_uniform(&r, -1.0f, 3.0f) + 0.5f * (float)(i % SB_C);
        hdy[i] = trng_uniform(&r, -1.0f, 1.0f);
    }
    for (int c = 0; c < SB_C; ++c) {
        g[c] = trng_uniform(&r, 0.5f, 1.5f);
        b[c] = trng_uniform(&r, -0.5f, 0.5f);
        rm0[c] = 0.1f * (float)c;
        rv0[c] = 1.0f + 0.2f * (float)c;
    }
    ck_bn_desc d;
    CK_OK(ctx, ck_bn_desc_init(&d, CK_BN_KERAS));
    d.activation = CK_ACT_RELU;

    /* the reference: the public calls on the whole batch */
    float *x = dev_copy(hx, count), *dy = dev_copy(hdy, count), *gg = dev_copy(g, SB_C),
          *bb = dev_copy(b, SB_C);
    float want_y[SB_N * SB_H * SB_W * SB_C], want_dx[SB_N * SB_H * SB_W * SB_C];
    float want_sm[SB_C], want_si[SB_C], want_rm[SB_C], want_rv[SB_C], want_dg[SB_C], want_db[SB_C];
    {
        ck_tensor *tx = NULL, *ty = NULL, *tdy = NULL, *tdx = NULL;
        CK_OK(ctx, ck_tensor_create(ctx, &tx, CK_LAYOUT_NHWC, SB_N, SB_C, SB_H, SB_W));
        CK_OK(ctx, ck_tensor_create(ctx, &ty, CK_LAYOUT_NHWC, SB_N, SB_C, SB_H, SB_W));
        CK_OK(ctx, ck_tensor_create(ctx, &tdy, CK_LAYOUT_NHWC, SB_N, SB_C, SB_H, SB_W));
        CK_OK(ctx, ck_tensor_create(ctx, &tdx, CK_LAYOUT_NHWC, SB_N, SB_C, SB_H, SB_W));
        CK_OK(ctx, ck_tensor_upload(ctx, tx, hx, count));
        CK_OK(ctx, ck_tensor_upload(ctx, tdy, hdy, count));
        ck_tensor *tg = t_param(ctx, SB_C, g), *tb = t_param(ctx, SB_C, b);
        ck_tensor *trm = t_param(ctx, SB_C, rm0), *trv = t_param(ctx, SB_C, rv0);
        ck_tensor *tsm = t_param(ctx, SB_C, rm0), *tsi = t_param(ctx, SB_C, rm0);
        ck_tensor *tdg = t_param(ctx, SB_C, rm0), *tdb = t_param(ctx, SB_C, rm0);
        size_t wsb = 0;
        CK_OK(ctx, ck_batchnorm_workspace_size(ctx, tx, &wsb));
        ck_workspace *ws = NULL;
        CK_OK(ctx, ck_workspace_create(ctx, &ws, wsb));
        CK_OK(ctx,
              ck_batchnorm_forward_training(ctx, &d, tx, tg, tb, trm, trv, tsm, tsi, NULL, ty, ws));
        CK_OK(ctx,
              ck_batchnorm_backward(ctx, &d, tx, tdy, tg, tb, tsm, tsi, NULL, tdx, tdg, tdb, ws));
        CK_OK(ctx, ck_tensor_download(ctx, ty, want_y, count));
        CK_OK(ctx, ck_tensor_download(ctx, tdx, want_dx, count));
        t_param_get(ctx, tsm, want_sm);
        t_param_get(ctx, tsi, want_si);
        t_param_get(ctx, trm, want_rm);
        t_param_get(ctx, trv, want_rv);
        t_param_get(ctx, tdg, want_dg);
        t_param_get(ctx, tdb, want_db);
        ck_tensor *all[] = {tx, ty, tdy, tdx, tg, tb, trm, trv, tsm, tsi, tdg, tdb};
        for (size_t i = 0; i < sizeof all / sizeof *all; ++i)
            ck_tensor_destroy(all[i]);
        ck_workspace_destroy(ws);
    }

    /* two ranks of 4 samples: their own partials, coefficients and statistics */
    enum { SPLITS = 2 };
    double *store = NULL, *scratch = NULL, *partials = NULL;
    cr_assert_eq(cudaMalloc((void **)&store, 2 * 3 * SB_C * sizeof(double)), cudaSuccess);
    cr_assert_eq(cudaMemset(store, 0, 2 * 3 * SB_C * sizeof(double)), cudaSuccess); /* n = 0 */
    cr_assert_eq(cudaMalloc((void **)&scratch, 2 * 3 * 3 * SB_C * sizeof(double)), cudaSuccess);
    cr_assert_eq(cudaMalloc((void **)&partials, 2 * 3 * SB_C * SPLITS * sizeof(double)),
                 cudaSuccess);
    float *y = dev_copy(NULL, count), *dx = dev_copy(NULL, count);
    float *coef = dev_copy(NULL, 2 * 4 * SB_C), *rm[2], *rv[2], *sm[2], *si[2], *dg[2], *db[2];
    fake_ranks fr[2];
    ck_kbn k[2];
    for (int q = 0; q < 2; ++q) {
        rm[q] = dev_copy(rm0, SB_C), rv[q] = dev_copy(rv0, SB_C);
        sm[q] = dev_copy(NULL, SB_C), si[q] = dev_copy(NULL, SB_C);
        dg[q] = dev_copy(NULL, SB_C), db[q] = dev_copy(NULL, SB_C);
        fr[q] = (fake_ranks){q, store, stream};
        memset(&k[q], 0, sizeof k[q]);
        k[q].s = (ck_kshape){SB_N / 2, SB_C, SB_H, SB_W, 1, CK_KDT_F32};
        k[q].splits = SPLITS;
        k[q].bn = d;
        k[q].partials = partials + (size_t)q * 3 * SB_C * SPLITS;
        k[q].coef = coef + q * 4 * SB_C;
        k[q].exchange = fake_exchange;
        k[q].exchange_user = &fr[q];
        k[q].ranks = 2;
        k[q].sync_local = scratch + (size_t)q * 9 * SB_C;
        k[q].sync_all = k[q].sync_local + 3 * SB_C;
    }
    /* rank 1 first (its results are discarded), then rank 0, then rank 1 again from its start */
    const int order[3] = {1, 0, 1};
    for (int t = 0; t < 3; ++t) {
        const int q = order[t];
        if (t == 2) {
            cr_assert_eq(cudaMemcpy(rm[1], rm0, sizeof rm0, cudaMemcpyHostToDevice), cudaSuccess);
            cr_assert_eq(cudaMemcpy(rv[1], rv0, sizeof rv0, cudaMemcpyHostToDevice), cudaSuccess);
        }
        cr_assert_eq(ck_cuda_bn_forward_training(&k[q], x + q * SB_HALF, gg, bb, rm[q], rv[q],
                                                 sm[q], si[q], y + q * SB_HALF, stream),
                     0);
    }
    for (int t = 0; t < 3; ++t) {
        const int q = order[t];
        cr_assert_eq(ck_cuda_bn_backward(&k[q], x + q * SB_HALF, dy + q * SB_HALF, gg, bb, sm[q],
                                         si[q], dx + q * SB_HALF, dg[q], db[q], stream),
                     0);
    }
    cr_assert_eq(cudaStreamSynchronize((cudaStream_t)stream), cudaSuccess);
    float got_y[SB_N * SB_H * SB_W * SB_C], got_dx[SB_N * SB_H * SB_W * SB_C];
    host_copy(got_y, y, count);
    host_copy(got_dx, dx, count);
    cr_assert_leq(t_max_rel_err(got_y, want_y, count), 1e-6, "y");
    cr_assert_leq(t_max_rel_err(got_dx, want_dx, count), 1e-5, "dx");
    float v[2][6][SB_C];
    for (int q = 0; q < 2; ++q) {
        float *src[6] = {sm[q], si[q], rm[q], rv[q], dg[q], db[q]};
        for (int j = 0; j < 6; ++j)
            host_copy(v[q][j], src[j], SB_C);
    }
    cr_assert(memcmp(v[0], v[1], 4 * sizeof v[0][0]) == 0,
              "both ranks finalize the statistics with the same bits");
    cr_assert_leq(t_max_rel_err(v[0][0], want_sm, SB_C), 1e-6, "saved mean");
    cr_assert_leq(t_max_rel_err(v[0][1], want_si, SB_C), 1e-6, "saved invstd");
    cr_assert_leq(t_max_rel_err(v[0][2], want_rm, SB_C), 1e-6, "running mean");
    cr_assert_leq(t_max_rel_err(v[0][3], want_rv, SB_C), 1e-6, "running var");
    float sum_dg[SB_C], sum_db[SB_C];
    for (int c = 0; c < SB_C; ++c) {
        sum_dg[c] = v[0][4][c] + v[1][4][c];
        sum_db[c] = v[0][5][c] + v[1][5][c];
    }
    cr_assert_leq(t_max_rel_err(sum_dg, want_dg, SB_C), 1e-5, "dgamma summed over the ranks");
    cr_assert_leq(t_max_rel_err(sum_db, want_db, SB_C), 1e-5, "dbeta summed over the ranks");
    /* the same half without the exchange: its own statistics, visibly not the batch's */
    k[0].exchange = NULL;
    cr_assert_eq(
        ck_cuda_bn_forward_training(&k[0], x, gg, bb, rm[0], rv[0], sm[0], si[0], y, stream), 0);
    host_copy(got_y, y, SB_HALF);
    cr_assert_gt(t_max_rel_err(got_y, want_y, SB_HALF), 1e-3, "the halves' statistics differ");
    void *bufs[] = {x,       dy,       gg,    bb,    y,     dx,    coef,  store,
                    scratch, partials, rm[0], rm[1], rv[0], rv[1], sm[0], sm[1],
                    si[0],   si[1],    dg[0], dg[1], db[0], db[1]};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; ++i)
        cudaFree(bufs[i]);
    free(hx);
    free(hdy);
    ck_context_destroy(ctx);
}
#endif
