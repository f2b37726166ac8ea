/* The communicator (cnnkit/comm.h) and data-parallel training (docs/distributed.md). The MPI runs
 * are tests/mpi/dp_train.c under mpiexec; without MPI in the build they skip, and what a build
 * without MPI says is checked instead. */
#include "comm_internal.h"
#include "common.h"
#include "exec.h"
#include "model_internal.h"

#include <cnnkit/comm.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

Test(comm, errors_name_the_argument) {
    ck_context *ctx = NULL;
    CK_OK(NULL, ck_context_create(&ctx, CK_DEVICE_CPU, 0, 1));
    ck_comm *c = (ck_comm *)0x1;
    int dummy = 0;
    cr_assert_eq(ck_comm_create_mpi(NULL, &dummy, &c), CK_STATUS_BAD_PARAM);
    if (!ck_comm_mpi_available()) {
        cr_assert_eq(ck_comm_create_mpi(ctx, &dummy, &c), CK_STATUS_NOT_SUPPORTED);
        cr_assert(strstr(ck_context_last_error(ctx), "no MPI"), "%s", ck_context_last_error(ctx));
    } else {
        cr_assert_eq(ck_comm_create_mpi(ctx, NULL, &c), CK_STATUS_BAD_PARAM);
        cr_assert(strstr(ck_context_last_error(ctx), "mpi_comm"), "%s", ck_context_last_error(ctx));
        cr_assert_eq(ck_comm_create_mpi(ctx, &dummy, NULL), CK_STATUS_BAD_PARAM);
        /* this test process never calls MPI_Init: refused before the communicator is read */
        cr_assert_eq(ck_comm_create_mpi(ctx, &dummy, &c), CK_STATUS_BAD_PARAM);
        cr_assert(strstr(ck_context_last_error(ctx), "not initialized"), "%s",
                  ck_context_last_error(ctx));
    }
    cr_assert_eq(c, (ck_comm *)0x1, "*comm is untouched on failure");
    cr_assert_eq(ck_comm_rank(NULL), -1);
    cr_assert_eq(ck_comm_size(NULL), -1);
    cr_assert_eq(ck_comm_shard(NULL, 10, &dummy, &dummy), CK_STATUS_BAD_PARAM);
    /* the timeout's checks on a live communicator (a negative or NaN value: "seconds") run in
     * every cnnkit_mpi_dp run, which has MPI initialized */
    cr_assert_eq(ck_comm_set_timeout(NULL, 1.0), CK_STATUS_BAD_PARAM);
    cr_assert_eq(ck_comm_timeout(NULL), -1.0);
    cr_assert_eq(ck_comm_broken(NULL), 0);
    ck_comm_destroy(NULL);
    /* detaching needs no communicator; a NULL model is refused */
    ck_model *m = NULL;
    CK_OK(ctx, ck_model_create(ctx, &m));
    CK_OK(ctx, ck_model_set_comm(m, NULL));
    cr_assert_eq(ck_model_set_comm(NULL, NULL), CK_STATUS_BAD_PARAM);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* SyncBatchNormalization (tf.keras) and BatchNormalization(synchronized=True) (Keras 3) read as
 * a synchronized BN; plain BatchNormalization is not. */
Test(comm, sync_batchnorm_parses) {
    ck_keras_model km;
    char err[256];
    CK_OK(NULL, ck_keras_parse("model = Sequential()\n"
                               "model.add(SyncBatchNormalization(momentum=0.9))\n"
                               "model.add(BatchNormalization(synchronized=True))\n"
                               "model.add(BatchNormalization())\n",
                               &km, err, sizeof err));
    cr_assert_eq(km.count, 3);
    cr_assert_eq(km.layers[0].type, CK_LAYER_BATCHNORM);
    cr_assert_eq(km.layers[0].synchronized, 1);
    cr_assert_float_eq(km.layers[0].momentum, 0.9f, 1e-7);
    cr_assert_eq(km.layers[1].synchronized, 1);
    cr_assert_eq(km.layers[2].synchronized, 0);
    ck_keras_model_free(&km);
}

/* Without a communicator a synchronized BN is BatchNormalization, bit for bit. */
Test(comm, sync_batchnorm_alone_is_batchnorm) {
    static const char *const text[2] = {
        "model = Sequential()\n"
        "model.add(Conv2D(4, (3,3), use_bias=False, input_shape=(6,6,2)))\n"
        "model.add(SyncBatchNormalization())\n"
        "model.add(Activation('relu'))\n"
        "model.add(Flatten())\n"
        "model.add(Dense(3, activation='softmax'))\n",
        "model = Sequential()\n"
        "model.add(Conv2D(4, (3,3), use_bias=False, input_shape=(6,6,2)))\n"
        "model.add(BatchNormalization())\n"
        "model.add(Activation('relu'))\n"
        "model.add(Flatten())\n"
        "model.add(Dense(3, activation='softmax'))\n"};
    enum { N = 8 };
    float x[N * 6 * 6 * 2];
    int32_t y[N];
    for (size_t i = 0; i < sizeof x / sizeof x[0]; ++i)
        x[i] = (float)((i * 37) % 101) / 101.0f;
    for (int i = 0; i < N; ++i)
        y[i] = i % 3;
    float w[2][512];
    size_t nw[2];
    for (int k = 0; k < 2; ++k) {
        ck_context *ctx = NULL;
        CK_OK(NULL, ck_context_create(&ctx, CK_DEVICE_CPU, 0, 7));
        ck_model *m = NULL;
        char err[256];
        CK_OK(ctx, ck_model_from_keras_text(ctx, text[k], &m, err, sizeof err));
        CK_OK(ctx, ck_model_build(m, 0, 0, 0, N));
        for (int s = 0; s < 3; ++s)
            CK_OK(ctx, ck_model_train_step(m, x, y, N, NULL));
        CK_OK(ctx, ck_model_get_weights(m, NULL, 0, &nw[k]));
        cr_assert_leq(nw[k], 512);
        CK_OK(ctx, ck_model_get_weights(m, w[k], nw[k], NULL));
        ck_model_destroy(m);
        ck_context_destroy(ctx);
    }
    cr_assert_eq(nw[0], nw[1]);
    cr_assert_eq(memcmp(w[0], w[1], sizeof(float) * nw[0]), 0);
}

#ifdef CNNKIT_HAVE_MPI
/* Runs dp_train on `ranks` processes (oversubscribed: CI has 2 cores), bounded by a timeout so
 * that a hang fails instead of stalling the suite; returns its exit status, output in out. */
static int run_dp(int ranks, const char *args, char *out, size_t len) {
    return t_run_mpiexec("", ranks, CNNKIT_MPI_DP_PATH, args, out, len);
}

/* 2 ranks x 16 == 1 process x 32, for 20 steps: the losses and weights to 1e-5 (measured about
 * 1e-8 and 1e-7: only the sums reassociate, docs/distributed.md), the ranks bit-identical. */
Test(comm, two_ranks_match_one_process, .timeout = 150) {
    char out[8192];
    const int rc = run_dp(2, "--global 32 --steps 20 --tol 1e-5", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "ranks 2, global batch 32, 20 steps") && strstr(out, "identical: yes"),
              "%s", out);
}

/* 3 ranks of 11, 11 and 10 samples: the uneven shards weigh their gradients by n_r / N. */
Test(comm, three_ranks_uneven_shards_match, .timeout = 150) {
    char out[8192];
    const int rc = run_dp(3, "--global 32 --steps 20 --tol 1e-5", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "ranks 3, global batch 32"), "%s", out);
}

/* A NaN batch on rank 1 fails step 3 on every rank (no hang, nothing changed); the steps after
 * still match a single process that skipped that batch. */
Test(comm, one_rank_failing_fails_the_step_everywhere, .timeout = 150) {
    char out[8192];
    const int rc = run_dp(2, "--global 32 --steps 8 --bad-rank 1 --tol 1e-5", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "step 3 refused on rank 0: comm: another of the 2 ranks failed"), "%s",
              out);
}

/* The same with SyncBatchNormalization and dropout: the refused rank is not in the forward
 * pass's statistics exchange, so the begin packet fails every rank before it (once a mismatched
 * collective: MPI_ERR_TRUNCATE aborted the job). */
Test(comm, one_rank_failing_with_sync_batchnorm, .timeout = 150) {
    char out[8192];
    const int rc = run_dp(2, "--sync --dropout --global 32 --steps 8 --bad-rank 1 --tol 1e-5", out,
                          sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "step 3 refused on rank 0: comm: another of the 2 ranks failed step 3 "
                          "before its forward pass"),
              "%s", out);
}

/* A rank out of host memory inside a SyncBatchNormalization (its scratch cannot be allocated)
 * still joins the exchange the others wait in, with NaN: every rank leaves the node at that
 * exchange and fails the step (no timeout, no MPI error), and training goes on in step. */
Test(comm, one_rank_out_of_memory_in_sync_batchnorm, .timeout = 150) {
    char out[8192];
    const int rc = run_dp(2, "--sync --global 32 --steps 8 --oom-rank 1 --tol 1e-5 --timeout 20",
                          out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "step 3 refused on rank 0: comm: another of the 2 ranks failed before "
                          "this SyncBatchNormalization's exchange"),
              "%s", out);
}

/* The issue's must-show: 2 ranks x 64 with SyncBatchNormalization == 1 process x 128 with
 * BatchNormalization, 20 steps, losses and weights to 1e-5 (measured 5.7e-8 and 2.4e-7); the
 * checkpoint rank 0 writes loads in a single-process model and evaluates the same. */
Test(comm, sync_batchnorm_two_ranks_match_one_process, .timeout = 150) {
    char dir[] = "/tmp/cnnkit-comm-XXXXXX", args[256], out[8192];
    cr_assert_not_null(mkdtemp(dir));
    /* and the 2-rank run's checkpoint evaluates the same in a 1-rank model */
    snprintf(args, sizeof args, "--sync --global 128 --steps 20 --tol 1e-5 --save %s/dp.ckpt", dir);
    const int rc = run_dp(2, args, out, sizeof out);
    snprintf(args, sizeof args, "%s/dp.ckpt", dir);
    unlink(args);
    rmdir(dir);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "ranks 2, global batch 128, 20 steps (SyncBatchNormalization)") &&
                  strstr(out, "identical: yes") && strstr(out, "checkpoint loaded in one process"),
              "%s", out);
}

/* bf16 (the CPU twin, docs/precision.md) in a data-parallel step: 2 ranks x 64 with SyncBN,
 * SpatialDropout2D and Dropout against 1 process x 128, two steps. The ranks' sums reassociate as
 * in fp32 (about 1e-7), which can now flip a bf16 rounding; Adam's first updates move a weight by
 * about lr * sign(g), so a flipped near-zero gradient moves it by up to 2 lr = 2e-3, the bound.
 * Measured: losses 2.2e-16 apart, weights 5.6e-5 (over 20 steps the flips grow as any
 * perturbation does: 3.7e-3 in the loss, 2.4e-2 in a weight; fp32 stays at 6e-8). */
Test(comm, bf16_two_ranks_match_one_process, .timeout = 150) {
    char out[8192];
    const int rc =
        run_dp(2, "--sync --dropout --bf16 --global 128 --steps 2 --tol 2e-3", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "ranks 2, global batch 128, 2 steps") && strstr(out, "identical: yes"),
              "%s", out);
}

/* Dropout in a data-parallel step: each rank's samples draw the masks of their places in the
 * global batch (the step's first sample, an exclusive scan of the shards), so 2 ranks x 64 with
 * SpatialDropout2D, Dropout and SyncBN match 1 process x 128 (measured 6.0e-8 in the loss and
 * 3.9e-7 in the weights; with every rank keyed from 0, as before, 0.11 and 0.15), and 3 uneven
 * ranks of 43, 43, 42 (5.2e-8, 2.8e-7). */
Test(comm, dropout_masks_keyed_by_global_sample, .timeout = 150) {
    char out[8192];
    int rc = run_dp(2, "--dropout --global 128 --steps 20 --tol 1e-5", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "ranks 2, global batch 128, 20 steps (SyncBatchNormalization, "
                          "SpatialDropout2D, Dropout)") &&
                  strstr(out, "identical: yes"),
              "%s", out);
    rc = run_dp(3, "--dropout --global 128 --steps 20 --tol 1e-5", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
}

/* 3 ranks of 43, 43 and 42: the statistics' counts are summed too (measured 8.9e-8, 5.7e-7). */
Test(comm, sync_batchnorm_three_uneven_ranks_match, .timeout = 150) {
    char out[8192];
    const int rc = run_dp(3, "--sync --global 128 --steps 20 --tol 1e-5", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
}

/* Without synchronization each rank normalizes with its own shard's statistics: a different
 * function of the batch, so the run leaves the 1e-5 band (measured 2e-2 in the loss, 8e-2 in the
 * weights) and the ranks' moving statistics differ. This is what SyncBN removes. */
Test(comm, batchnorm_per_rank_differs_from_one_process, .timeout = 150) {
    char out[8192];
    const int rc = run_dp(2, "--bn --global 128 --steps 20 --tol 1e-5", out, sizeof out);
    cr_assert_neq(rc, 0, "%s", out);
    cr_assert(strstr(out, "(BatchNormalization per rank)") && strstr(out, "identical: no"), "%s",
              out);
}

/* A rank killed mid-epoch (SIGKILL at step 5, rank 0 in the step's all-reduce): the launcher
 * stops the job with a non-zero status well inside the timeout, and the checkpoint rank 0 saved
 * after every step loads whole, at step 5. The stop here is OpenMPI's launcher's (it sees the
 * process die); a rank that hangs alive is caught by the collectives' timeout (below). */
Test(comm, killed_rank_stops_the_others_checkpoint_intact, .timeout = 150) {
    char dir[] = "/tmp/cnnkit-comm-XXXXXX", path[64], args[256], out[8192];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/k.ckpt", dir);
    snprintf(args, sizeof args, "--global 32 --steps 20 --kill-rank 1 --save %s", path);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const int rc = run_dp(2, args, out, sizeof out);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    snprintf(args, sizeof args, "--load %s", path);
    char out2[4096];
    const int rc2 = run_dp(1, args, out2, sizeof out2);
    unlink(path);
    rmdir(dir);
    cr_assert_neq(rc, 0, "%s", out);
    cr_assert_lt(secs, 60.0, "%.1f s: the others did not stop (run_dp's timeout is 120 s):\n%s",
                 secs, out);
    cr_assert_eq(rc2, 0, "%s", out2);
    cr_assert(strstr(out2, "step 5"), "%s", out2);
}

/* A rank that stops answering (rank 1 sleeps before step 3; it is alive, so the launcher sees
 * nothing wrong): with ck_comm_set_timeout 2 s, rank 0's step 3 fails after about 2.5 s (the
 * timeout, then 0.5 s for the others' answers on the side channel) naming the collective, the
 * timeout and rank 1 as the rank that did not answer, the model unchanged; the communicator is
 * broken, so the next step fails at once with the same message; rank 0 then ends the job
 * (MPI_Abort), which ends the sleeping rank too. Without the timeout this run would wait until
 * run_dp's 120 s bound. */
Test(comm, hung_rank_times_out_naming_the_collective, .timeout = 150) {
    char out[8192];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const int rc = run_dp(2, "--global 32 --steps 8 --hang-rank 1 --timeout 2", out, sizeof out);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    cr_assert(rc != 0 && rc != 124 && rc != 137, "rc %d:\n%s", rc, out);
    cr_assert(strstr(out, "rank 0: step 3 failed after") &&
                  strstr(out, "timed out after 2 s waiting for the other ranks (rank 0 of 2 "
                              "waited, at collective #") &&
                  strstr(out, "; rank 1 did not answer: hung, dead or busy outside cnnkit's "
                              "collectives); the communicator is broken: end the job") &&
                  strstr(out, "as expected: yes"),
              "%s", out);
    cr_assert_lt(secs, 30.0, "%.1f s:\n%s", secs, out);
}

/* The number of collective n in a message, after "at collective #" (0 if none). */
static unsigned long long collective_no(const char *msg) {
    const char *p = msg ? strstr(msg, "at collective #") : NULL;
    return p ? strtoull(p + strlen("at collective #"), NULL, 10) : 0;
}

/* Three ranks, rank 1 hung before step 3 of a model whose step begins with the dropout masks'
 * MPI_Exscan: rank 0 needs nothing for its exscan (its result is defined as 0; OpenMPI sends its
 * value on and is done), so it waits in the next collective, the loss packet; rank 2 waits in
 * the exscan for rank 1's value. Both time out; rank 0 names rank 1 as not answering and rank 2
 * as one collective behind it, from rank 2's own answer. */
Test(comm, timeout_names_a_rank_at_another_collective, .timeout = 150) {
    char out[16384];
    const int rc = run_dp(3, "--dropout-only --global 30 --steps 8 --hang-rank 1 --timeout 2", out,
                          sizeof out);
    cr_assert(rc != 0 && rc != 124 && rc != 137, "rc %d:\n%s", rc, out);
    const char *r0 = strstr(out, "dp_train: rank 0: step 3 failed after");
    cr_assert_not_null(r0, "%s", out);
    char line[1024];
    snprintf(line, sizeof line, "%.*s", (int)strcspn(r0, "\n"), r0);
    const unsigned long long k = collective_no(line);
    char want[256];
    snprintf(want, sizeof want, "; rank 2 is at collective #%llu, this rank at #%llu", k - 1, k);
    cr_assert(k > 1 && strstr(line, "MPI_Allreduce (sum) timed out after 2 s") &&
                  strstr(line, "(rank 0 of 3 waited, at collective #") &&
                  strstr(line, "; rank 1 did not answer: hung, dead or busy outside cnnkit's "
                               "collectives; rank 2 is at collective #") &&
                  strstr(line, want),
              "expected '%s' in:\n%s", want, out);
}

/* ck_model_fit on a model with a communicator shards each shuffled global batch itself: one
 * epoch on 2 ranks (SyncBN, batch 128) and on 3 ranks (batch 32, 11/11/10) against the same fit
 * in one process. Measured: losses to 1.1e-7 and 1.2e-9; weights to 1.6e-7 (3 ranks), and on 2
 * ranks from 8.9e-7 to 1.6e-5 with OpenBLAS's kernel (Haswell, SkylakeX, Sandybridge), always in
 * one element of the Dense kernel before the SyncBN, whose gradient Adam amplifies
 * (docs/distributed.md): its weights get 1e-4, 1% of the learning rate; a wrong shard moves
 * weights by the learning rate. */
Test(comm, fit_shards_the_batches, .timeout = 150) {
    char out[8192];
    int rc = run_dp(2, "--fit --sync --global 128 --tol 1e-5 --wtol 1e-4", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "fit, 1 epoch") && strstr(out, "identical: yes"), "%s", out);
    rc = run_dp(3, "--fit --global 32 --tol 1e-5", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
}

/* Ranks whose data sets differ (one label) are refused before the first step, on every rank. */
Test(comm, fit_refuses_different_data, .timeout = 150) {
    char out[8192];
    const int rc = run_dp(2, "--fit-other-data --global 32", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "the data sets (CRC-32 of images and labels): differ"), "%s", out);
}

/* A refusal of one rank's own (its validation set holds a NaN, which ck_model_fit checks
 * before the first step) refuses every rank's fit, instead of leaving the others waiting for
 * it in the first step. */
Test(comm, fit_stops_everywhere_when_one_rank_cannot_validate, .timeout = 150) {
    char out[8192];
    const int rc = run_dp(2, "--fit-bad-val 1 --global 32 --timeout 20", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "refused the fit on every rank: yes") &&
                  strstr(out, "another of the 2 ranks refused the fit"),
              "%s", out);
}

/* A resume that one rank refuses (rank 1 loaded a checkpoint without a fit position) refuses
 * every rank's fit in the start agreement: the others waited for rank 1 until the timeout. */
Test(comm, fit_stops_everywhere_when_one_rank_cannot_resume, .timeout = 150) {
    char out[8192];
    const int rc = run_dp(2, "--fit-stale-resume 1 --global 32 --timeout 20", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "a stale resume on rank 1 refused the fit on every rank: yes") &&
                  strstr(out, "another of the 2 ranks refused the fit"),
              "%s", out);
}

/* Validation data on one rank only (the others pass none): the epoch's agreement is every
 * rank's, so both epochs train (a rank-0-only agreement aborted the job with MPI_ERR_TRUNCATE). */
Test(comm, fit_with_validation_on_one_rank, .timeout = 150) {
    char out[8192];
    const int rc = run_dp(2, "--fit-val-only 0 --global 32 --timeout 20", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "validation on rank 0 only trained both epochs: yes"), "%s", out);
}

/* Ranks that built different models are refused at ck_model_set_comm, on every rank. */
Test(comm, different_models_are_refused, .timeout = 150) {
    char out[8192];
    const int rc = run_dp(2, "--mismatch", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "trainable parameter count differs"), "%s", out);
}

/* Models with the same counts but one setting changed on rank 1 (an activation, a dropout rate,
 * Adam's beta_1, a BN that is not synchronized) trained silently, or hung until the timeout
 * when the collectives went out of step: refused at ck_model_set_comm, naming the layer. */
Test(comm, models_differing_in_one_setting_are_refused, .timeout = 150) {
    static const char *const says[4] = {"layer 2, Activation", "layer 9, Dropout",
                                        "optimizer setting", "layer 1, BatchNormalization"};
    for (int k = 1; k <= 4; ++k) {
        char out[8192], args[64];
        snprintf(args, sizeof args, "--dropout --mismatch-config %d", k);
        const int rc = run_dp(2, args, out, sizeof out);
        cr_assert_eq(rc, 0, "%s: %s", args, out);
        cr_assert(strstr(out, "mismatch refused: yes") && strstr(out, says[k - 1]), "%s: %s", args,
                  out);
    }
}

/* The same model in bf16 on one rank and fp32 on the other would train two different models
 * under one average: refused the same way. */
Test(comm, different_precisions_are_refused, .timeout = 150) {
    char out[8192];
    const int rc = run_dp(2, "--mismatch-precision", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "precision differs"), "%s", out);
}
#else
Test(comm, two_ranks_match_one_process) {
    cr_skip("this build has no MPI (libopenmpi-dev; CNNKIT_MPI=AUTO or ON)");
}
#endif

/* The GPU step's gradient buckets are launched as the backward pass passes below them
 * (ck_exec_comm_grads_ready): a bucket launched while a node below still writes into it would sum
 * half-made gradients on every rank, and one-rank GPU tests cannot see it (a one-rank all-reduce
 * is a no-op). Checked here on the plan, for a Sequential model (3 buckets), ResNet-20 v1 (a
 * graph, 2 buckets) and a tiny one: the nodes' parameter ranges (kernel, bias, BN gamma and beta)
 * cover every trainable parameter exactly once (a node kind keeping parameters elsewhere fails
 * this), no bucket counted final after node i holds a parameter of a node below i, the count
 * never falls as backward goes down, and every bucket is final after node 0. */
static void check_bucket_schedule(ck_model *m, const char *what) {
    const size_t P = m->num_params, B = CK_COMM_DEVICE_BUCKET;
    const int buckets = (int)((P + B - 1) / B);
    unsigned char *owner = calloc(P, 1);
    int *lowest = malloc(sizeof(int) * (size_t)buckets); /* the lowest node writing bucket b */
    for (int b = 0; b < buckets; ++b)
        lowest[b] = m->num_nodes;
    for (int j = 0; j < m->num_nodes; ++j) {
        const ck_node *n = &m->nodes[j];
        size_t lo[4] = {n->p_kernel, n->p_bias, 0, 0}, len[4] = {n->n_kernel, n->n_bias, 0, 0};
        if (n->type == CK_NODE_BN) {
            lo[2] = n->p_gamma;
            lo[3] = n->p_beta;
            len[2] = len[3] = (size_t)n->oc;
        }
        for (int r = 0; r < 4; ++r)
            for (size_t p = lo[r]; p < lo[r] + len[r]; ++p) {
                cr_assert_lt(p, P, "%s: node %d's parameter %zu past the end", what, j, p);
                cr_assert_eq(owner[p]++, 0, "%s: parameter %zu has two nodes", what, p);
                if (j < lowest[p / B])
                    lowest[p / B] = j;
            }
    }
    for (size_t p = 0; p < P; ++p)
        cr_assert_eq(owner[p], 1, "%s: parameter %zu of %zu has no node", what, p, P);
    int prev = 0;
    for (int i = m->num_nodes - 1; i >= 0; --i) {
        const int final = ck_exec_comm_buckets_final(m, i);
        cr_assert_geq(final, prev, "%s: fewer buckets final after node %d", what, i);
        for (int b = buckets - final; b < buckets; ++b)
            cr_assert_geq(lowest[b], i, "%s: bucket %d launched after node %d, node %d writes it",
                          what, b, i, lowest[b]);
        prev = final;
    }
    cr_assert_eq(ck_exec_comm_buckets_final(m, 0), buckets, "%s: all buckets by node 0", what);
    free(owner);
    free(lowest);
}

Test(comm, gradient_buckets_launch_only_final_gradients) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *seed = t_model(ctx, t_seed_cnn_text, 4);
    cr_assert_gt(seed->num_params, 2 * CK_COMM_DEVICE_BUCKET, "several buckets");
    check_bucket_schedule(seed, "seed model");
    ck_model_destroy(seed);
    char *text = t_read_file(t_src("examples/resnet20_v1.py"), NULL);
    ck_model *res = t_model(ctx, text, 4);
    free(text);
    cr_assert_gt(res->num_params, CK_COMM_DEVICE_BUCKET, "two buckets");
    check_bucket_schedule(res, "resnet20_v1");
    ck_model_destroy(res);
    ck_model *tiny = t_model(ctx, T_FUZZ_MODEL, 4);
    check_bucket_schedule(tiny, "one bucket");
    ck_model_destroy(tiny);
    ck_context_destroy(ctx);
}
