/* cnnkit train --distributed (docs/distributed.md): the CLI under `mpiexec -np 2` on a tiny IDX
 * data set, against the same command line in one process; and what a build without MPI, a CUDA
 * device and the other commands say to the option. */
#include "common.h"

#include <cnnkit/comm.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* SyncBN so that 2 ranks' statistics are one process's, and both dropouts so that the masks of
 * the global sample index are exercised through the CLI too. */
static const char DIST_MODEL[] =
    "model = Sequential()\n"
    "model.add(Conv2D(4, (3, 3), use_bias=False, input_shape=(8, 8, 1)))\n"
    "model.add(SyncBatchNormalization())\n"
    "model.add(Activation('relu'))\n"
    "model.add(SpatialDropout2D(0.2))\n"
    "model.add(Flatten())\n"
    "model.add(Dropout(0.2))\n"
    "model.add(Dense(3, activation='softmax'))\n"
    "model.compile(loss='sparse_categorical_crossentropy', optimizer=Adam(learning_rate=0.01))\n";

static void put_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(p, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

static void be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* n 8x8 IDX images whose label shows in a column pattern (something to learn). */
static void put_idx(const char *dir, const char *split, int n, uint64_t seed) {
    unsigned char *img = malloc(16 + (size_t)n * 64), *lab = malloc(8 + (size_t)n);
    cr_assert(img && lab);
    be32(img, 0x803);
    be32(img + 4, (uint32_t)n);
    be32(img + 8, 8);
    be32(img + 12, 8);
    be32(lab, 0x801);
    be32(lab + 4, (uint32_t)n);
    trng r = {seed};
    for (int i = 0; i < n; ++i) {
        const unsigned l = trng_u32(&r) % 3;
        lab[8 + i] = (unsigned char)l;
        for (int p = 0; p < 64; ++p)
            img[16 + i * 64 + p] =
                (unsigned char)(((p % 8) * (l + 1) * 13 + trng_u32(&r) % 40) % 256);
    }
    char path[256];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, split);
    put_file(path, img, 16 + (size_t)n * 64);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, split);
    put_file(path, lab, 8 + (size_t)n);
    free(img);
    free(lab);
}

typedef struct dist_fx {
    char dir[64], model[128], data[128];
} dist_fx;

static void dist_setup(dist_fx *fx) {
    snprintf(fx->dir, sizeof fx->dir, "/tmp/cnnkit-clidist-XXXXXX");
    cr_assert_not_null(mkdtemp(fx->dir));
    snprintf(fx->model, sizeof fx->model, "%s/m.py", fx->dir);
    snprintf(fx->data, sizeof fx->data, "%s/data", fx->dir);
    put_file(fx->model, DIST_MODEL, strlen(DIST_MODEL));
    cr_assert_eq(mkdir(fx->data, 0755), 0);
    put_idx(fx->data, "train", 256, 5);
    put_idx(fx->data, "t10k", 64, 6);
}

static void dist_teardown(dist_fx *fx) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
    cr_assert_eq(system(cmd), 0);
}

static char dout[32768];

#ifdef CNNKIT_HAVE_MPI
/* Occurrences of s in text. */
static int count_of(const char *text, const char *s) {
    int n = 0;
    for (const char *p = strstr(text, s); p; p = strstr(p + 1, s))
        ++n;
    return n;
}

/* The line of text that starts with prefix, copied into line. */
static void line_of(const char *text, const char *prefix, char *line, size_t len) {
    const char *p = strstr(text, prefix);
    cr_assert_not_null(p, "no '%s' in:\n%s", prefix, text);
    size_t n = strcspn(p, "\n");
    if (n >= len)
        n = len - 1;
    memcpy(line, p, n);
    line[n] = '\0';
}

static char sout[32768];

/* The epoch lines from..3 (loss and accuracy: the seconds and images/s after them are timings)
 * and the test line of the distributed run dout and the one-process run sout agree. */
static void same_figures(int from) {
    char a[256], b[256];
    for (int e = from; e <= 3; ++e) {
        char pre[32];
        snprintf(pre, sizeof pre, "epoch %d/3: ", e);
        line_of(dout, pre, a, sizeof a);
        line_of(sout, pre, b, sizeof b);
        cr_assert_eq(strncmp(a, b, strlen("epoch 1/3: loss 1.0762  accuracy 0.4258")), 0,
                     "2 ranks: %s\n1 process: %s", a, b);
    }
    line_of(dout, "test accuracy:", a, sizeof a);
    line_of(sout, "test accuracy:", b, sizeof b);
    cr_assert_str_eq(a, b, "2 ranks:\n%s\n1 process:\n%s", dout, sout);
}

/* mpiexec -np ranks cnnkit ARGS, bounded (a hang fails), with the settings CI's root containers
 * need (t_run_mpiexec). */
static int run_mpi_env(const char *env, int ranks, const char *args, char *out, size_t len) {
    return t_run_mpiexec(env, ranks, CNNKIT_CLI_PATH, args, out, len);
}

static int run_mpi(int ranks, const char *args, char *out, size_t len) {
    return run_mpi_env("", ranks, args, out, len);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* 2 ranks x 16 of a global batch of 32, 3 epochs, against one process with --batch 32: exit 0,
 * one header, one set of epoch lines, the checkpoint, log and plot written once (rank 0's), and
 * the same epoch figures and test accuracy and loss to the printed digits (the runs differ by
 * the rounding of the gradient sums only: ~1e-7 in the weights, docs/distributed.md). The
 * checkpoint evaluates in one process as the run printed. dev: the device option of every
 * command; env: mpiexec's. */
static void two_ranks_like_one(const char *dev, const char *env) {
    dist_fx fx;
    dist_setup(&fx);
    char args[1024];
    snprintf(args, sizeof args,
             "train %s --data %s --batch 32 --epochs 3 --threads 1 --distributed --save %s/d.ckpt "
             "--log %s/d.csv --plot %s/d.svg %s",
             fx.model, fx.data, fx.dir, fx.dir, fx.dir, dev);
    int rc = run_mpi_env(env, 2, args, dout, sizeof dout);
    cr_assert_eq(rc, 0, "%s", dout);
    cr_assert_eq(count_of(dout, "distributed over 2 ranks"), 1, "%s", dout);
    cr_assert_eq(count_of(dout, "epoch 1/3:"), 1, "%s", dout);
    cr_assert_eq(count_of(dout, "epoch 3/3:"), 1, "%s", dout);
    cr_assert_eq(count_of(dout, "test accuracy:"), 1, "%s", dout);
    cr_assert_eq(count_of(dout, "checkpoint "), 2, "epochs 1 and 2, rank 0 only:\n%s", dout);
    cr_assert_eq(count_of(dout, "saved "), 1, "%s", dout);
    cr_assert_eq(count_of(dout, "plot "), 1, "%s", dout);
    cr_assert_eq(count_of(dout, "\rEpoch"), 0, "no live bar under mpiexec:\n%s", dout);
    char path[256];
    snprintf(path, sizeof path, "%s/d.csv", fx.dir);
    char *csv = t_read_file(path, NULL);
    cr_assert_eq(count_of(csv, "\n"), 4, "a header and 3 rows, once:\n%s", csv);
    free(csv);
    snprintf(path, sizeof path, "%s/.d.ckpt.cnnkit-lock", fx.dir);
    cr_assert_neq(access(path, F_OK), 0, "the lock is removed");

    snprintf(args, sizeof args,
             "train %s --data %s --batch 32 --epochs 3 --threads 1 --save %s/s.ckpt %s", fx.model,
             fx.data, fx.dir, dev);
    rc = t_run_cli(args, sout, sizeof sout);
    cr_assert_eq(rc, 0, "%s", sout);
    same_figures(1);
    char a[256], b[256];
    line_of(dout, "test accuracy:", a, sizeof a);

    snprintf(args, sizeof args, "evaluate %s --weights %s/d.ckpt --data %s %s", fx.model, fx.dir,
             fx.data, dev);
    rc = t_run_cli(args, sout, sizeof sout);
    cr_assert_eq(rc, 0, "%s", sout);
    line_of(sout, "test accuracy:", b, sizeof b);
    cr_assert_str_eq(a, b, "the checkpoint in one process: %s", sout);
    dist_teardown(&fx);
}

/* On the CPU even where a GPU is (--device auto would give rank 1 a second GPU). */
Test(cli_dist, two_ranks_train_like_one_process, .timeout = 300) {
    two_ranks_like_one("--device cpu", "");
}

/* The same with --device cuda: one GPU per rank (its local rank's) and NCCL. On kemu each rank's
 * process has its own emulated GPU and kemu's NCCL joins them (KEMU_DEVICES=2: a host of two
 * GPUs); on real GPUs it needs two. */
Test(cli_dist, two_ranks_train_like_one_process_cuda, .timeout = 300) {
    ck_context_destroy(t_cuda_ctx_or_skip());
    if (!ck_comm_nccl_available())
        t_gpu_unavailable("this build has no NCCL");
#ifdef CNNKIT_EMU_NCCL_PATH
    two_ranks_like_one("--device cuda", "KEMU_DEVICES=2");
#else
    char why[512];
    if (ck_cuda_describe(1, why, sizeof why) != CK_STATUS_SUCCESS)
        cr_skip("two GPUs needed: %s", why);
    two_ranks_like_one("--device cuda", "");
#endif
}

/* evaluate and predict --distributed: 3 ranks take 22, 21 and 21 of the 64 test images; rank 0
 * prints the accuracy line and the 64 predictions of one process, once and in order. A rank whose
 * weights cannot be read stops them all. */
Test(cli_dist, evaluate_and_predict_sharded_like_one_process, .timeout = 300) {
    dist_fx fx;
    dist_setup(&fx);
    char args[1024];
    snprintf(args, sizeof args,
             "train %s --data %s --batch 32 --threads 1 --device cpu --save %s/s.ckpt", fx.model,
             fx.data, fx.dir);
    int rc = t_run_cli(args, sout, sizeof sout);
    cr_assert_eq(rc, 0, "%s", sout);
    for (int predict = 0; predict < 2; ++predict) {
        snprintf(args, sizeof args,
                 "%s %s --weights %s/s.ckpt --data %s --threads 1 --device cpu%s",
                 predict ? "predict" : "evaluate", fx.model, fx.dir, fx.data,
                 predict ? " --count 64" : "");
        rc = t_run_cli(args, sout, sizeof sout);
        cr_assert_eq(rc, 0, "%s", sout);
        char dargs[1100];
        snprintf(dargs, sizeof dargs, "%s --distributed", args);
        rc = run_mpi(3, dargs, dout, sizeof dout);
        cr_assert_eq(rc, 0, "%s", dout);
        const char *key = predict ? "image " : "test accuracy:";
        cr_assert_eq(count_of(dout, key), predict ? 64 : 1, "%s", dout);
        /* the same lines, in the same order */
        const char *p = strstr(sout, key), *q = strstr(dout, key);
        cr_assert(p && q, "1 process:\n%s\n3 ranks:\n%s", sout, dout);
        for (int i = 0; i < (predict ? 64 : 1); ++i) {
            const size_t lp = strcspn(p, "\n"), lq = strcspn(q, "\n");
            cr_assert(lp == lq && !strncmp(p, q, lp), "line %d: %.*s vs %.*s", i, (int)lp, p,
                      (int)lq, q);
            p = strstr(p + lp, key);
            q = strstr(q + lq, key);
        }
    }
    snprintf(args, sizeof args,
             "evaluate %s --weights %s/none.ckpt --data %s --distributed --device cpu", fx.model,
             fx.dir, fx.data);
    rc = run_mpi(2, args, dout, sizeof dout);
    dist_teardown(&fx);
    cr_assert(rc != 0 && rc != 124 && rc != 137, "rc %d:\n%s", rc, dout);
    cr_assert_eq(count_of(dout, "test accuracy:"), 0, "%s", dout);
}

/* Ranks resuming from checkpoints of different epochs (a stale copy on another host: only rank 0
 * writes them): rank 1's position was kept, so each global batch mixed two epochs' shuffles and
 * rank 1 left the collectives an epoch early (rank 0 then waited for the timeout). The ranks
 * take rank 0's position with its weights: the run is the one rank 0's checkpoint continues. */
Test(cli_dist, ranks_resume_from_rank_0s_checkpoint, .timeout = 300) {
    dist_fx fx;
    dist_setup(&fx);
    char args[2048], common[512];
    snprintf(common, sizeof common, "%s --data %s --batch 32 --threads 1 --device cpu", fx.model,
             fx.data);
    for (int e = 1; e <= 2; ++e) {
        snprintf(args, sizeof args, "train %s --epochs %d --save %s/e%d.ckpt", common, e, fx.dir,
                 e);
        cr_assert_eq(t_run_cli(args, sout, sizeof sout), 0, "%s", sout);
    }
    snprintf(args, sizeof args, "train %s --epochs 3", common);
    cr_assert_eq(t_run_cli(args, sout, sizeof sout), 0, "%s", sout);
    /* MPMD: one rank each, rank 0 resuming after epoch 1, rank 1 after epoch 2 */
    snprintf(args, sizeof args,
             "train %s --epochs 3 --distributed --comm-timeout 20 --resume %s/e1.ckpt : -np 1 "
             "'%s' train %s --epochs 3 --distributed --comm-timeout 20 --resume %s/e2.ckpt",
             common, fx.dir, CNNKIT_CLI_PATH, common, fx.dir);
    const int rc = run_mpi(1, args, dout, sizeof dout);
    dist_teardown(&fx);
    cr_assert_eq(rc, 0, "%s", dout);
    same_figures(2);
}

/* A signal to rank 1 only (CNNKIT_TEST_INTERRUPT on its command line) stops every rank after the
 * step; rank 0, which saw no signal, took the "finished" branch: it printed a test accuracy and
 * "saved" for a model stopped at step 5 of 24 and exited 0. It now reports the interruption,
 * saves the resumable checkpoint and exits non-zero. */
Test(cli_dist, a_signal_to_another_rank_interrupts_rank_0, .timeout = 300) {
    dist_fx fx;
    dist_setup(&fx);
    char args[2048], common[512];
    snprintf(common, sizeof common,
             "%s --data %s --batch 32 --epochs 3 --threads 1 --device cpu --distributed "
             "--save %s/i.ckpt",
             fx.model, fx.data, fx.dir);
    snprintf(args, sizeof args, "train %s : -np 1 env CNNKIT_TEST_INTERRUPT=5 '%s' train %s",
             common, CNNKIT_CLI_PATH, common);
    const int rc = run_mpi(1, args, dout, sizeof dout);
    dist_teardown(&fx);
    cr_assert(rc != 0 && rc != 124 && rc != 137, "rc %d:\n%s", rc, dout);
    cr_assert(strstr(dout, "interrupted (a signal to another rank) at epoch 1, step 5 of 8") &&
                  strstr(dout, "continue with: mpirun -np 2 cnnkit train"),
              "%s", dout);
    cr_assert_eq(count_of(dout, "test accuracy:"), 0, "%s", dout);
    cr_assert_eq(count_of(dout, "saved "), 0, "%s", dout);
}

/* A set-up failure on one rank (rank 0's --save directory does not exist) stops every rank
 * before the fit's first collective: a non-zero exit, not a hang (run_mpi's timeout). */
Test(cli_dist, one_rank_failing_to_start_stops_all, .timeout = 150) {
    dist_fx fx;
    dist_setup(&fx);
    char args[1024];
    snprintf(args, sizeof args,
             "train %s --data %s --batch 32 --threads 1 --device cpu --distributed --save "
             "%s/no/such/d.ckpt",
             fx.model, fx.data, fx.dir);
    const int rc = run_mpi(2, args, dout, sizeof dout);
    dist_teardown(&fx);
    cr_assert(rc != 0 && rc != 124 && rc != 137, "rc %d:\n%s", rc, dout);
    cr_assert(strstr(dout, "cannot create a file in") &&
                  strstr(dout, "rank 1: another rank failed to start"),
              "%s", dout);
}
/* A rank that hangs alive (rank 1 sleeps for ever after model step 3: the launcher sees nothing
 * wrong) with --comm-timeout 2: rank 0 fails within seconds, naming the collective, the timeout
 * and rank 1 as the rank that did not answer, and ends the job (MPI_Abort), so mpiexec exits
 * non-zero well inside its 120 s bound. No checkpoint of a broken run is written. */
Test(cli_dist, hung_rank_times_out, .timeout = 150) {
    dist_fx fx;
    dist_setup(&fx);
    char args[1024];
    snprintf(args, sizeof args,
             "train %s --data %s --batch 32 --epochs 2 --threads 1 --device cpu --distributed "
             "--comm-timeout 2 "
             "--save %s/h.ckpt --checkpoint-every 0",
             fx.model, fx.data, fx.dir);
    const double t0 = now_s();
    const int rc = run_mpi_env("CNNKIT_TEST_HANG_AT_STEP=3 CNNKIT_TEST_FAULT_RANK=1", 2, args, dout,
                               sizeof dout);
    const double secs = now_s() - t0;
    char path[256];
    snprintf(path, sizeof path, "%s/h.ckpt", fx.dir);
    const int saved = access(path, F_OK) == 0;
    dist_teardown(&fx);
    cr_assert(rc != 0 && rc != 124 && rc != 137, "rc %d:\n%s", rc, dout);
    cr_assert(strstr(dout, "cnnkit: rank 0: training failed: comm: MPI_Allreduce") &&
                  strstr(dout, "timed out after 2 s waiting for the other ranks") &&
                  strstr(dout, "; rank 1 did not answer: hung, dead or busy outside cnnkit's "
                               "collectives)"),
              "%s", dout);
    cr_assert_lt(secs, 30.0, "%.1f s:\n%s", secs, dout);
    cr_assert(!saved, "a run that failed wrote its final checkpoint:\n%s", dout);
    /* a rank that hangs before the ranks' start agreement (the CLI's, before the communicator) */
    dist_setup(&fx);
    snprintf(
        args, sizeof args,
        "train %s --data %s --batch 32 --threads 1 --device cpu --distributed --comm-timeout 2",
        fx.model, fx.data);
    const double t1 = now_s();
    const int rc1 = run_mpi_env("CNNKIT_TEST_HANG_AT_STEP=0", 2, args, dout, sizeof dout);
    const double secs1 = now_s() - t1;
    dist_teardown(&fx);
    cr_assert(rc1 != 0 && rc1 != 124 && rc1 != 137, "rc %d:\n%s", rc1, dout);
    cr_assert(strstr(dout, "rank 0: --distributed: the ranks' start agreement timed out after 2 s"),
              "%s", dout);
    cr_assert_lt(secs1, 30.0, "%.1f s:\n%s", secs1, dout);
}

/* The "kill one rank mid-epoch": rank 1 raises SIGKILL after model step 11 (epoch 2, step
 * 3 of 8) of a run checkpointing each epoch: mpiexec exits non-zero naming the rank (OpenMPI's
 * "process rank 1 ... exited on signal 9"), and the checkpoint of epoch 1 is whole: it evaluates
 * to the validation figures epoch 1 printed (--validation-data is the test set, so evaluate
 * computes the same thing from the checkpoint). */
Test(cli_dist, killed_rank_ends_the_job_checkpoint_intact, .timeout = 150) {
    dist_fx fx;
    dist_setup(&fx);
    char args[1024];
    snprintf(
        args, sizeof args,
        "train %s --data %s --validation-data %s --batch 32 --epochs 3 --threads 1 --device cpu "
        "--distributed --comm-timeout 20 --save %s/k.ckpt",
        fx.model, fx.data, fx.data, fx.dir);
    const double t0 = now_s();
    int rc = run_mpi_env("CNNKIT_TEST_KILL_AT_STEP=11 CNNKIT_TEST_FAULT_RANK=1", 2, args, dout,
                         sizeof dout);
    const double secs = now_s() - t0;
    /* mpiexec exits 137 (128 + the rank's signal): the time tells it from run_mpi's timeout */
    cr_assert_neq(rc, 0, "%s", dout);
    cr_assert_lt(secs, 60.0, "%.1f s (run_mpi's bound is 120 s):\n%s", secs, dout);
    cr_assert(strstr(dout, "rank 1") && strstr(dout, "signal 9"), "%s", dout);
    cr_assert(count_of(dout, ".ckpt (epoch ") == 1 && strstr(dout, "k.ckpt (epoch 1)"),
              "epoch 1's checkpoint only:\n%s", dout);
    cr_assert_eq(count_of(dout, "epoch 2/3:"), 0, "%s", dout);
    char e1[256], ev[256], want[128], got[128];
    line_of(dout, "epoch 1/3: ", e1, sizeof e1);
    const char *v = strstr(e1, "val_loss ");
    cr_assert_not_null(v, "%s", e1);
    double vl = 0.0, va = 0.0;
    cr_assert_eq(sscanf(v, "val_loss %lf  val_accuracy %lf", &vl, &va), 2, "%s", e1);
    snprintf(want, sizeof want, "%.4f %.4f", va, vl);
    snprintf(args, sizeof args, "evaluate %s --weights %s/k.ckpt --data %s --device cpu", fx.model,
             fx.dir, fx.data);
    rc = t_run_cli(args, sout, sizeof sout);
    dist_teardown(&fx);
    cr_assert_eq(rc, 0, "the checkpoint does not load:\n%s", sout);
    line_of(sout, "test accuracy: ", ev, sizeof ev);
    double ta = 0.0, tl = 0.0;
    cr_assert_eq(sscanf(ev, "test accuracy: %lf (%*d/%*d), test loss %lf", &ta, &tl), 2, "%s", ev);
    snprintf(got, sizeof got, "%.4f %.4f", ta, tl);
    cr_assert_str_eq(got, want, "epoch 1: %s\ncheckpoint: %s", e1, ev);
}
#else
Test(cli_dist, no_mpi_build_refuses_the_option) {
    dist_fx fx;
    dist_setup(&fx);
    char args[512];
    snprintf(args, sizeof args, "train %s --data %s --distributed", fx.model, fx.data);
    const int rc = t_run_cli(args, dout, sizeof dout);
    dist_teardown(&fx);
    cr_assert_eq(rc, 2, "%s", dout);
    cr_assert(strstr(dout, "--distributed needs a build of cnnkit with MPI") &&
                  strstr(dout, "CNNKIT_MPI"),
              "%s", dout);
}
#endif

/* A CUDA device needs NCCL: a build without it refuses before MPI starts; with it, a machine
 * without a device says so (one rank, no mpiexec: MPI's singleton start). An option a command
 * does not take is an error. */
Test(cli_dist, cuda_and_other_commands_refuse_the_option) {
    int rc = t_run_cli("train examples/seed_cnn.py --device cuda --distributed --limit 64", dout,
                       sizeof dout);
    if (!ck_comm_nccl_available()) {
        cr_assert_eq(rc, 2, "%s", dout);
        cr_assert(strstr(dout, "--distributed --device cuda needs NCCL"), "%s", dout);
    } else if (!ck_cuda_available() && ck_comm_mpi_available()) {
        cr_assert_eq(rc, 1, "%s", dout);
        cr_assert(strstr(dout, "--device cuda: cannot create a context"), "%s", dout);
    }
    rc = t_run_cli("check examples/seed_cnn.py --distributed", dout, sizeof dout);
    cr_assert_eq(rc, 2, "%s", dout);
    cr_assert(strstr(dout, "option '--distributed' is not one of this command's"), "%s", dout);
    /* --comm-timeout: seconds >= 0, and only with --distributed */
    rc = t_run_cli("train examples/seed_cnn.py --distributed --comm-timeout -1", dout, sizeof dout);
    cr_assert_eq(rc, 2, "%s", dout);
    cr_assert(strstr(dout, "--comm-timeout needs seconds >= 0"), "%s", dout);
    rc = t_run_cli("train examples/seed_cnn.py --comm-timeout 5", dout, sizeof dout);
    cr_assert_eq(rc, 2, "%s", dout);
    cr_assert(strstr(dout, "--comm-timeout is for --distributed runs"), "%s", dout);
}
