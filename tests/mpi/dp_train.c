/* Data-parallel training on MPI against one process (docs/distributed.md), run by
 * tests/test_comm.c as `mpiexec -np R cnnkit_mpi_dp [options]`.
 *
 * Every rank trains the same small CNN on its shard (ck_comm_shard) of each global batch of a
 * seeded synthetic data set, in one global order (the permutation a single process would use).
 * Rank 0 also trains a copy alone on the whole global batches from the same start, and compares:
 * the loss of every step and the weights after the last, within --tol; the ranks' weights must
 * be bit-identical to each other. Exit 0 on every rank when all holds, 1 otherwise.
 *
 *   --global G     samples per global batch (32)     --steps S   training steps (20)
 *   --bn           the model has BatchNormalization (per-rank statistics: differs from one process)
 *   --sync         the model has SyncBatchNormalization (global statistics: matches one process)
 *   --dropout      --sync's model with a SpatialDropout2D and a Dropout: the ranks' shards draw the
 *                  masks of their samples' places in the global batch, as one process does
 *   --tol T        largest loss / weight difference allowed (1e-5)
 *   --wtol T       largest weight difference allowed, when it must differ from --tol's
 *   --save PATH    rank 0 saves the trained model (every rank's is the same) to PATH, loads it into
 *                  a new single-process model and evaluates both on the whole data set: the loss
 *                  and accuracy must be equal
 *   --kill-rank R  rank R kills itself (SIGKILL) at step 5, the others must be stopped by the
 *                  launcher; with --save, rank 0 saves after every step before that
 *   --load PATH    (one process) loads the checkpoint PATH into the model and prints its step
 *   --fit          one epoch of ck_model_fit (batch --global, 640 / G steps) instead of the
 *                  program's own loop, on the ranks and in the single process
 *   --fit-other-data  rank 1's data set differs in one label: the fit must be refused everywhere
 *   --fit-val-only R  2 epochs of ck_model_fit, validation data on rank R only (as "validate on
 *                  rank 0" programs do): every rank trains both epochs
 *   --fit-stale-resume R  one epoch of ck_model_fit, then rank R loads a checkpoint without a fit
 *                  position (saved before the fit) and every rank resumes to 2 epochs: R's own
 *                  refusal must refuse every rank's fit (not leave them waiting for R)
 *   --fit-bad-val R  2 epochs of ck_model_fit with validation data, which holds a NaN on rank R
 *                  only: R refuses the fit before the first step, and every rank's fit must be
 *                  refused with it (not wait for R in the first step)
 *   --mismatch     rank 1 builds a different model: ck_model_set_comm must refuse it on every rank
 *   --mismatch-precision  rank 1 builds the same model in the other precision (bf16 vs fp32):
 *                  refused as --mismatch is
 *   --mismatch-config K  rank 1's model keeps every count but differs in one setting (with
 *                  --dropout): 1 an activation (tanh for the first relu), 2 a dropout rate,
 *                  3 Adam's beta_1, 4 a plain BatchNormalization for the first
 *                  SyncBatchNormalization: refused as --mismatch is, naming the layer or setting
 *   --bf16         every model (the ranks' and the reference) in precision bf16 (the CPU twin)
 *   --oom-rank R   as --bad-rank, but rank R runs out of host memory in step 3 (a cap on its
 *                  context's allocations): with --sync its SyncBatchNormalization cannot
 *                  allocate, and must still join the exchange the others wait in
 *   --bad-rank R   rank R gives a NaN input at step 3: every rank must fail that step, unchanged,
 *                  and train on afterwards (the single process skips that batch too)
 *   --dropout-only the default model with a Dropout and no SyncBN: a step's first collective
 *                  is the masks' MPI_Exscan
 *   --big          a model of 822,868 parameters without BN (on a GPU: 4 gradient buckets, the
 *                  upper ones summed during the backward pass); prints the collectives per step
 *   --hang-rank R  rank R stops answering before step 3 (sleeps for ever); with --timeout S the
 *                  others' step 3 must fail within about S seconds naming the timeout and rank R
 *                  as not answering, the communicator be broken, and a step after it fail at
 *                  once with the same message; the first other rank then ends the job
 *                  with MPI_Abort (exit 3)
 *   --timeout S    ck_comm_set_timeout(comm, S) on every rank
 *   --cuda         CUDA contexts (device: the rank's local rank) and an NCCL communicator, its id
 *                  broadcast over MPI; the single process on rank 0's device
 *   --cuda-device D  every rank on device D (kemu: each process has its own emulated device 0)
 * Every run also checks ck_comm_set_timeout's arguments on its communicator.
 */
#include "comm_internal.h" /* ck_comm_calls */
#include <cnnkit/comm.h>
#include <cnnkit/data.h>
#include <cnnkit/model.h>

#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define H 8
#define W 8
#define CLASSES 4
#define DATA 640 /* samples: 20 global batches of 32 per epoch, 5 of 128 */

static const char *model_text(int bn, int wide) {
    if (bn == 5) /* 822,868 parameters, no SyncBN: on a GPU the gradients go in 4 buckets, the
                  * upper ones summed on a second stream during the backward pass */
        return "model = Sequential()\n"
               "model.add(Conv2D(8, (3,3), activation='relu', input_shape=(8,8,1)))\n"
               "model.add(Flatten())\n"
               "model.add(Dense(1024, activation='relu'))\n"
               "model.add(Dense(512, activation='relu'))\n"
               "model.add(Dense(4, activation='softmax'))\n"
               "model.compile(loss='sparse_categorical_crossentropy', "
               "optimizer=Adam(learning_rate=0.001))\n";
    if (bn == 4) /* dropout without SyncBN: a step's first collective is the masks' MPI_Exscan */
        return "model = Sequential()\n"
               "model.add(Conv2D(8, (3,3), activation='relu', input_shape=(8,8,1)))\n"
               "model.add(MaxPooling2D(pool_size=(2,2)))\n"
               "model.add(Flatten())\n"
               "model.add(Dense(16, activation='relu'))\n"
               "model.add(Dropout(0.3))\n"
               "model.add(Dense(4, activation='softmax'))\n"
               "model.compile(loss='sparse_categorical_crossentropy', "
               "optimizer=Adam(learning_rate=0.01))\n";
    if (bn == 3) /* dropout keyed by the global sample index; SyncBN so that statistics match */
        return "model = Sequential()\n"
               "model.add(Conv2D(8, (3,3), use_bias=False, input_shape=(8,8,1)))\n"
               "model.add(SyncBatchNormalization())\n"
               "model.add(Activation('relu'))\n"
               "model.add(SpatialDropout2D(0.25))\n"
               "model.add(MaxPooling2D(pool_size=(2,2)))\n"
               "model.add(Flatten())\n"
               "model.add(Dense(16, use_bias=False))\n"
               "model.add(BatchNormalization(synchronized=True))\n"
               "model.add(Activation('relu'))\n"
               "model.add(Dropout(0.3))\n"
               "model.add(Dense(4))\n"
               "model.add(Activation('softmax'))\n"
               "model.compile(loss='sparse_categorical_crossentropy', "
               "optimizer=Adam(learning_rate=0.01))\n";
    if (bn ==
        2) /* a single process runs SyncBatchNormalization as BatchNormalization. No bias before a
            * BN: its gradient is 0 but for rounding, which Adam scales up to whole steps */
        return "model = Sequential()\n"
               "model.add(Conv2D(8, (3,3), use_bias=False, input_shape=(8,8,1)))\n"
               "model.add(SyncBatchNormalization())\n"
               "model.add(Activation('relu'))\n"
               "model.add(MaxPooling2D(pool_size=(2,2)))\n"
               "model.add(Flatten())\n"
               "model.add(Dense(16, use_bias=False))\n"
               "model.add(BatchNormalization(synchronized=True))\n"
               "model.add(Activation('relu'))\n"
               "model.add(Dense(4))\n"
               "model.add(Activation('softmax'))\n"
               "model.compile(loss='sparse_categorical_crossentropy', "
               "optimizer=Adam(learning_rate=0.01))\n";
    if (bn)
        return "model = Sequential()\n"
               "model.add(Conv2D(8, (3,3), input_shape=(8,8,1)))\n"
               "model.add(BatchNormalization())\n"
               "model.add(Activation('relu'))\n"
               "model.add(MaxPooling2D(pool_size=(2,2)))\n"
               "model.add(Flatten())\n"
               "model.add(Dense(16))\n"
               "model.add(BatchNormalization())\n"
               "model.add(Activation('relu'))\n"
               "model.add(Dense(4))\n"
               "model.add(Activation('softmax'))\n"
               "model.compile(loss='sparse_categorical_crossentropy', "
               "optimizer=Adam(learning_rate=0.01))\n";
    return wide ? "model = Sequential()\n"
                  "model.add(Conv2D(8, (3,3), activation='relu', input_shape=(8,8,1)))\n"
                  "model.add(MaxPooling2D(pool_size=(2,2)))\n"
                  "model.add(Flatten())\n"
                  "model.add(Dense(24, activation='relu'))\n"
                  "model.add(Dense(4, activation='softmax'))\n"
                  "model.compile(loss='sparse_categorical_crossentropy', "
                  "optimizer=Adam(learning_rate=0.01))\n"
                : "model = Sequential()\n"
                  "model.add(Conv2D(8, (3,3), activation='relu', input_shape=(8,8,1)))\n"
                  "model.add(MaxPooling2D(pool_size=(2,2)))\n"
                  "model.add(Flatten())\n"
                  "model.add(Dense(16, activation='relu'))\n"
                  "model.add(Dense(4, activation='softmax'))\n"
                  "model.compile(loss='sparse_categorical_crossentropy', "
                  "optimizer=Adam(learning_rate=0.01))\n";
}

static uint64_t rng_next(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* Uniform pixels; the label is the brightest quadrant, something a small CNN learns. */
static void make_data(float *x, int32_t *y) {
    uint64_t s = 12345;
    for (int i = 0; i < DATA; ++i) {
        float *p = x + (size_t)i * H * W;
        double q[4] = {0, 0, 0, 0};
        for (int r = 0; r < H; ++r)
            for (int c = 0; c < W; ++c) {
                p[r * W + c] = (float)(rng_next(&s) % 1000) / 1000.0f;
                q[(r >= H / 2) * 2 + (c >= W / 2)] += p[r * W + c];
            }
        int best = 0;
        for (int k = 1; k < 4; ++k)
            if (q[k] > q[best])
                best = k;
        y[i] = best;
    }
}

/* The global order of epoch e: one seeded Fisher-Yates permutation, the same on every rank. */
static void permute(int *perm, int epoch) {
    uint64_t s = 777 + (uint64_t)epoch;
    for (int i = 0; i < DATA; ++i)
        perm[i] = i;
    for (int i = DATA - 1; i > 0; --i) {
        const int j = (int)(rng_next(&s) % (uint64_t)(i + 1));
        const int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static int fail(ck_context *ctx, const char *what, ck_status st) {
    fprintf(stderr, "dp_train: %s: %s (%s)\n", what, ck_status_string(st),
            ck_context_last_error(ctx));
    return 1;
}

/* text with its first `from` replaced by `to` (static storage); text itself without one. */
static const char *replaced(const char *text, const char *from, const char *to) {
    static char buf[4096];
    const char *at = strstr(text, from);
    if (!at)
        return text;
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    return buf;
}

/* --mismatch-config K: the model text with the one setting K changes (see above). */
static const char *varied(const char *text, int k) {
    static const char *const from[5] = {"", "'relu'", "Dropout(0.3)", "learning_rate=0.01",
                                        "SyncBatchNormalization()"};
    static const char *const to[5] = {"", "'tanh'", "Dropout(0.5)",
                                      "learning_rate=0.01, beta_1=0.5", "BatchNormalization()"};
    return k > 0 && k < 5 ? replaced(text, from[k], to[k]) : text;
}

static ck_model *make_model(ck_context *ctx, int bn, int wide, int max_batch, int bf16,
                            int config) {
    ck_model *m = NULL;
    char err[512];
    err[0] = '\0';
    ck_status st =
        ck_model_from_keras_text(ctx, varied(model_text(bn, wide), config), &m, err, sizeof err);
    if (st == CK_STATUS_SUCCESS && bf16)
        st = ck_model_set_precision(m, CK_PRECISION_BF16);
    if (st == CK_STATUS_SUCCESS)
        st = ck_model_build(m, H, W, 1, max_batch);
    if (st != CK_STATUS_SUCCESS) {
        fprintf(stderr, "dp_train: model: %s %s\n", err, ck_context_last_error(ctx));
        ck_model_destroy(m);
        return NULL;
    }
    return m;
}

int main(int argc, char **argv) {
    int global = 32, steps = 20, bn = 0, mismatch = 0, bad_rank = -1, oom = 0, bf16 = 0;
    const char *save = NULL, *load = NULL;
    int kill_rank = -1, use_fit = 0, fit_other = 0, hang_rank = -1, bad_val = -1, val_only = -1;
    int stale = -1;
    int cuda = 0, cuda_device = -1;
    double tol = 1e-5, wtol = -1.0, timeout = -1.0;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--global") && i + 1 < argc)
            global = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tol") && i + 1 < argc)
            tol = atof(argv[++i]);
        else if (!strcmp(argv[i], "--wtol") && i + 1 < argc)
            wtol = atof(argv[++i]);
        else if (!strcmp(argv[i], "--kill-rank") && i + 1 < argc)
            kill_rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--load") && i + 1 < argc)
            load = argv[++i];
        else if (!strcmp(argv[i], "--save") && i + 1 < argc)
            save = argv[++i];
        else if (!strcmp(argv[i], "--bad-rank") && i + 1 < argc)
            bad_rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--oom-rank") && i + 1 < argc)
            bad_rank = atoi(argv[++i]), oom = 1;
        else if (!strcmp(argv[i], "--hang-rank") && i + 1 < argc)
            hang_rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
            timeout = atof(argv[++i]);
        else if (!strcmp(argv[i], "--bn"))
            bn = 1;
        else if (!strcmp(argv[i], "--sync"))
            bn = 2;
        else if (!strcmp(argv[i], "--dropout"))
            bn = 3;
        else if (!strcmp(argv[i], "--dropout-only"))
            bn = 4;
        else if (!strcmp(argv[i], "--big"))
            bn = 5;
        else if (!strcmp(argv[i], "--fit"))
            use_fit = 1;
        else if (!strcmp(argv[i], "--fit-other-data"))
            use_fit = fit_other = 1;
        else if (!strcmp(argv[i], "--fit-stale-resume") && i + 1 < argc)
            use_fit = 1, stale = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fit-bad-val") && i + 1 < argc)
            use_fit = 1, bad_val = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fit-val-only") && i + 1 < argc)
            use_fit = 1, val_only = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--mismatch"))
            mismatch = 1;
        else if (!strcmp(argv[i], "--mismatch-precision"))
            mismatch = 2;
        else if (!strcmp(argv[i], "--mismatch-config") && i + 1 < argc)
            mismatch = 2 + atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bf16"))
            bf16 = 1;
        else if (!strcmp(argv[i], "--cuda"))
            cuda = 1;
        else if (!strcmp(argv[i], "--cuda-device") && i + 1 < argc)
            cuda = 1, cuda_device = atoi(argv[++i]);
        else {
            fprintf(stderr, "dp_train: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1, bad = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm world = MPI_COMM_WORLD;

    ck_context *ctx = NULL;
    ck_comm *comm = NULL;
    ck_model *m = NULL, *ref = NULL;
    float *x = malloc(sizeof(float) * DATA * H * W), *xb = malloc(sizeof(float) * global * H * W);
    int32_t *y = malloc(sizeof(int32_t) * DATA), *yb = malloc(sizeof(int32_t) * global);
    int *perm = malloc(sizeof(int) * DATA);
    float *w = NULL, *wref = NULL, *wmin = NULL, *wmax = NULL;
    if (!x || !xb || !y || !yb || !perm || global < size || global > DATA) {
        fprintf(stderr, "dp_train: bad --global %d or out of memory\n", global);
        bad = 1;
        goto done;
    }
    make_data(x, y);
    int ordinal = 0;
    if (cuda && cuda_device >= 0) {
        ordinal = cuda_device;
    } else if (cuda) { /* one GPU per rank of a host */
        MPI_Comm local;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
        MPI_Comm_rank(local, &ordinal);
        MPI_Comm_free(&local);
    }
    ck_status st = ck_context_create(&ctx, cuda ? CK_DEVICE_CUDA : CK_DEVICE_CPU, ordinal, 42);
    if (st != CK_STATUS_SUCCESS) {
        bad = fail(ctx, "context", st);
        goto done;
    }
    ck_context_set_cpu_threads(ctx, 1); /* the ranks share the cores */
    if (cuda) { /* rank 0's NCCL id to every rank, then the communicator (collective) */
        unsigned char id[CK_COMM_NCCL_ID_BYTES];
        int ok = rank != 0 || (st = ck_comm_nccl_id(ctx, id)) == CK_STATUS_SUCCESS;
        MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (!ok) {
            bad = rank == 0 ? fail(ctx, "ck_comm_nccl_id", st) : 1;
            goto done;
        }
        MPI_Bcast(id, (int)sizeof id, MPI_UNSIGNED_CHAR, 0, MPI_COMM_WORLD);
        if ((st = ck_comm_create_nccl(ctx, id, rank, size, &comm)) != CK_STATUS_SUCCESS) {
            bad = fail(ctx, "ck_comm_create_nccl", st);
            goto done;
        }
    } else if ((st = ck_comm_create_mpi(ctx, &world, &comm)) != CK_STATUS_SUCCESS) {
        bad = fail(ctx, "ck_comm_create_mpi", st);
        goto done;
    }
    /* the timeout's arguments: the default, a negative or NaN value refused naming the argument
     * and changing nothing, 0 (no timeout) taken */
    if (ck_comm_timeout(comm) != CK_COMM_DEFAULT_TIMEOUT_S ||
        ck_comm_set_timeout(comm, -1.0) != CK_STATUS_BAD_PARAM ||
        !strstr(ck_context_last_error(ctx), "seconds: -1 (must be >= 0") ||
        ck_comm_set_timeout(comm, NAN) != CK_STATUS_BAD_PARAM ||
        !strstr(ck_context_last_error(ctx), "seconds:") ||
        ck_comm_timeout(comm) != CK_COMM_DEFAULT_TIMEOUT_S ||
        ck_comm_set_timeout(comm, 0.0) != CK_STATUS_SUCCESS || ck_comm_timeout(comm) != 0.0 ||
        ck_comm_set_timeout(comm, CK_COMM_DEFAULT_TIMEOUT_S) != CK_STATUS_SUCCESS ||
        ck_comm_broken(comm)) {
        fprintf(stderr, "dp_train: rank %d: ck_comm_set_timeout's checks failed: %s\n", rank,
                ck_context_last_error(ctx));
        bad = 1;
        goto done;
    }
    if (timeout >= 0.0 && (st = ck_comm_set_timeout(comm, timeout)) != CK_STATUS_SUCCESS) {
        bad = fail(ctx, "ck_comm_set_timeout", st);
        goto done;
    }
    int first = 0, count = 0;
    ck_comm_shard(comm, global, &first, &count);
    /* every rank's max_batch fits the largest shard (ck_model_fit asks for that) */
    m = make_model(ctx, bn, mismatch == 1 && rank == 1, (global + size - 1) / size,
                   mismatch == 2 && rank == 1 ? !bf16 : bf16,
                   mismatch > 2 && rank == 1 ? mismatch - 2 : 0);
    if (!m) {
        bad = 1;
        goto done;
    }
    if (load) { /* a checkpoint a data-parallel run left: whole, and this model's */
        st = ck_model_load(m, load);
        if (st != CK_STATUS_SUCCESS)
            bad = fail(ctx, "ck_model_load", st);
        else
            printf("dp_train: loaded %s: step %lld\n", load, ck_model_step(m));
        goto done;
    }
    st = ck_model_set_comm(m, comm);
    if (mismatch) { /* every rank must refuse, naming what differs */
        const char *msg = ck_context_last_error(ctx);
        bad = !(st == CK_STATUS_SHAPE_MISMATCH && strstr(msg, "different models"));
        if (rank == 0 || bad)
            printf("dp_train: rank %d: mismatch refused: %s (%s)\n", rank, bad ? "NO" : "yes", msg);
        goto done;
    }
    if (st != CK_STATUS_SUCCESS) {
        bad = fail(ctx, "ck_model_set_comm", st);
        goto done;
    }
    size_t nw = 0;
    ck_model_get_weights(m, NULL, 0, &nw);
    w = malloc(sizeof(float) * nw);
    wref = malloc(sizeof(float) * nw);
    wmin = malloc(sizeof(float) * nw);
    wmax = malloc(sizeof(float) * nw);
    if (!w || !wref || !wmin || !wmax) {
        bad = 1;
        goto done;
    }
    if (rank == 0) {            /* the single process starts from the same weights (rank 0's) */
        ck_context *rctx = ctx; /* one context may hold both models */
        ref = make_model(rctx, bn, 0, global, bf16, 0);
        if (!ref || ck_model_get_weights(m, w, nw, NULL) != CK_STATUS_SUCCESS ||
            ck_model_set_weights(ref, w, nw) != CK_STATUS_SUCCESS) {
            bad = 1;
            goto done;
        }
    }
    double max_dloss = 0.0;
    int failed_steps = 0;
    if (use_fit) { /* ck_model_fit shards the batches itself */
        if (fit_other && rank == 1)
            y[7] = (y[7] + 1) % CLASSES;
        ck_dataset ds = {DATA, H, W, 1, CLASSES, x, y};
        ck_fit_options o = {1, global, 99, NULL, NULL, NULL, 0};
        ck_epoch_result h, hr;
        if (val_only >= 0) { /* validation data on one rank: the others pass none */
            ck_dataset vs = {DATA, H, W, 1, CLASSES, x, y};
            ck_epoch_result h2[2];
            o.epochs = 2;
            st = ck_model_fit(m, &ds, rank == val_only ? &vs : NULL, &o, h2);
            const long long want = 2 * (DATA / global);
            bad = !(st == CK_STATUS_SUCCESS && ck_model_step(m) == want &&
                    (rank != val_only || (isfinite(h2[1].val_loss) && h2[1].val_accuracy >= 0)));
            if (rank == 0 || bad)
                printf("dp_train: rank %d: validation on rank %d only trained both epochs: %s "
                       "(step %lld; %s)\n",
                       rank, val_only, bad ? "NO" : "yes", ck_model_step(m),
                       st == CK_STATUS_SUCCESS ? "ok" : ck_context_last_error(ctx));
            goto done;
        }
        if (stale >= 0) {
            char path[64];
            snprintf(path, sizeof path, "/tmp/cnnkit-dp-stale-%d.ckpt", (int)getpid());
            st = ck_model_save(m, path); /* before any fit: no fit position */
            if (st == CK_STATUS_SUCCESS)
                st = ck_model_fit(m, &ds, NULL, &o, &h);
            if (st == CK_STATUS_SUCCESS && rank == stale)
                st = ck_model_load(m, path);
            unlink(path);
            if (st != CK_STATUS_SUCCESS) {
                bad = fail(ctx, "the stale-resume set-up", st);
                goto done;
            }
            const long long before = ck_model_step(m);
            o.epochs = 2;
            o.resume = 1;
            st = ck_model_fit(m, &ds, NULL, &o, NULL);
            bad = !(st == CK_STATUS_BAD_PARAM && ck_model_step(m) == before);
            if (rank == 0 || bad)
                printf("dp_train: rank %d: a stale resume on rank %d refused the fit on every "
                       "rank: %s (%s)\n",
                       rank, stale, bad ? "NO" : "yes", ck_context_last_error(ctx));
            goto done;
        }
        if (bad_val >= 0) { /* the validation set: the data, with a NaN on rank bad_val only */
            float *xv = (float *)malloc(sizeof(float) * DATA * H * W);
            memcpy(xv, x, sizeof(float) * DATA * H * W);
            if (rank == bad_val)
                xv[5] = NAN;
            ck_dataset vs = {DATA, H, W, 1, CLASSES, xv, y};
            ck_epoch_result h2[2];
            o.epochs = 2;
            st = ck_model_fit(m, &ds, &vs, &o, h2);
            free(xv);
            bad = !(st == CK_STATUS_BAD_PARAM && ck_model_step(m) == 0); /* nothing trained */
            if (rank == 0 || bad)
                printf("dp_train: rank %d: a bad validation set on rank %d refused the fit on "
                       "every rank: %s (step %lld; %s)\n",
                       rank, bad_val, bad ? "NO" : "yes", ck_model_step(m),
                       ck_context_last_error(ctx));
            goto done;
        }
        st = ck_model_fit(m, &ds, NULL, &o, &h);
        if (fit_other) { /* refused on every rank, before any step */
            bad = !(st == CK_STATUS_BAD_PARAM && ck_model_step(m) == 0);
            if (rank == 0 || bad)
                printf("dp_train: rank %d: fit on other data refused: %s (%s)\n", rank,
                       bad ? "NO" : "yes", ck_context_last_error(ctx));
            goto done;
        }
        if (st != CK_STATUS_SUCCESS) {
            bad = fail(ctx, "ck_model_fit", st);
            goto done;
        }
        if (rank == 0) {
            if ((st = ck_model_fit(ref, &ds, NULL, &o, &hr)) != CK_STATUS_SUCCESS) {
                bad = fail(ctx, "reference fit", st);
                goto done;
            }
            max_dloss = fabs(h.loss - hr.loss);
            printf("dp_train: fit, 1 epoch: loss %.9f accuracy %.6f (one process %.9f %.6f)\n",
                   h.loss, h.accuracy, hr.loss, hr.accuracy);
        }
        steps = DATA / global;
    }
    for (int s = 0, epoch = -1; s < steps && !use_fit; ++s) {
        const int per_epoch = DATA / global, at = s % per_epoch;
        if (s / per_epoch != epoch)
            permute(perm, epoch = s / per_epoch);
        /* this rank's shard of global batch s: samples [first, first + count) of it */
        for (int i = 0; i < count; ++i) {
            const int g = perm[at * global + first + i];
            memcpy(xb + (size_t)i * H * W, x + (size_t)g * H * W, sizeof(float) * H * W);
            yb[i] = y[g];
        }
        if (rank == bad_rank && s == 3 && oom)
            ck_context_set_host_alloc_limit(ctx, 1); /* every allocation of the step fails */
        else if (rank == bad_rank && s == 3)
            xb[5] = NAN;
        if (rank == kill_rank && s == 5) {
            fflush(stdout);
            raise(SIGKILL);
        }
        if (rank == hang_rank && s == 3) {
            fflush(stdout);
            for (;;) /* a rank that stops answering; the others end the job */
                sleep(1);
        }
        ck_step_result r;
        const long long before = ck_model_step(m);
        const double t0 = MPI_Wtime();
        const unsigned long long calls = ck_comm_calls(comm);
        st = ck_model_train_step(m, xb, yb, count, &r);
        if (bn == 5 && rank == 0 && s == 0)
            printf("dp_train: collectives per step: %llu\n", ck_comm_calls(comm) - calls);
        if (oom && rank == bad_rank && s == 3)
            ck_context_set_host_alloc_limit(ctx, 0);
        if (hang_rank >= 0 && s == 3) { /* timed out, broken, and the next call fails at once */
            const double waited = MPI_Wtime() - t0;
            char msg[512];
            snprintf(msg, sizeof msg, "%s", ck_context_last_error(ctx));
            const int unchanged = ck_model_step(m) == before;
            const double t1 = MPI_Wtime();
            const ck_status again = ck_model_train_step(m, xb, yb, count, &r);
            const double waited2 = MPI_Wtime() - t1;
            char named[64]; /* the side channel's answer: the hung rank never gives one */
            snprintf(named, sizeof named, "; rank %d did not answer", hang_rank);
            const int ok = st == CK_STATUS_INTERNAL && strstr(msg, "timed out after") &&
                           strstr(msg, named) && ck_comm_broken(comm) &&
                           again == CK_STATUS_INTERNAL && strstr(ck_context_last_error(ctx), msg) &&
                           unchanged && ck_model_step(m) == before;
            printf("dp_train: rank %d: step 3 failed after %.2f s: %s\n"
                   "dp_train: rank %d: broken %d; the next step failed after %.4f s: %s; "
                   "as expected: %s\n",
                   rank, waited, msg, rank, ck_comm_broken(comm), waited2,
                   ck_context_last_error(ctx), ok ? "yes" : "NO");
            fflush(stdout);
            if (rank != (hang_rank == 0)) /* the first other rank ends the job once it spoke */
                for (;;)
                    sleep(1);
            MPI_Abort(MPI_COMM_WORLD, ok ? 3 : 4);
        }
        if (bad_rank >= 0 && s == 3) { /* every rank fails this step and changes nothing */
            if (st == CK_STATUS_SUCCESS) {
                fprintf(stderr, "dp_train: rank %d: step 3 succeeded despite rank %d's NaN\n", rank,
                        bad_rank);
                bad = 1;
            } else if (rank == 0)
                printf("dp_train: step 3 refused on rank 0: %s\n", ck_context_last_error(ctx));
            failed_steps++;
            continue;
        }
        if (st != CK_STATUS_SUCCESS) {
            bad = fail(ctx, "ck_model_train_step", st);
            goto done;
        }
        if (kill_rank >= 0 && save && rank == 0 &&
            (st = ck_model_save(m, save)) != CK_STATUS_SUCCESS) {
            bad = fail(ctx, "ck_model_save", st);
            goto done;
        }
        if (r.count != global) {
            fprintf(stderr, "dp_train: step %d: count %d, not the global %d\n", s, r.count, global);
            bad = 1;
        }
        if (rank == 0) {
            for (int i = 0; i < global; ++i) {
                const int g = perm[at * global + i];
                memcpy(xb + (size_t)i * H * W, x + (size_t)g * H * W, sizeof(float) * H * W);
                yb[i] = y[g];
            }
            ck_step_result rr;
            if ((st = ck_model_train_step(ref, xb, yb, global, &rr)) != CK_STATUS_SUCCESS) {
                bad = fail(ctx, "reference step", st);
                goto done;
            }
            const double d = fabs(r.loss - rr.loss);
            if (d > max_dloss)
                max_dloss = d;
            if (r.correct != rr.correct && bn != 1)
                fprintf(stderr, "dp_train: step %d: %d correct, one process %d\n", s, r.correct,
                        rr.correct);
            if (s == 0 || s == steps - 1)
                printf("dp_train: step %2d: loss %.9f (one process %.9f)\n", s, r.loss, rr.loss);
        }
    }
    /* the ranks' weights: bit-identical to each other, and close to the single process's */
    ck_model_get_weights(m, w, nw, NULL);
    MPI_Allreduce(w, wmin, (int)nw, MPI_FLOAT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(w, wmax, (int)nw, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
    if (memcmp(wmin, wmax, sizeof(float) * nw) != 0) {
        fprintf(stderr, "dp_train: rank %d: the ranks' weights differ\n", rank);
        bad = 1;
    }
    if (ck_model_step(m) != steps - failed_steps) {
        fprintf(stderr, "dp_train: rank %d: %lld steps counted, %d expected\n", rank,
                ck_model_step(m), steps - failed_steps);
        bad = 1;
    }
    if (rank == 0) {
        ck_model_get_weights(ref, wref, nw, NULL);
        double max_dw = 0.0;
        size_t at_dw = 0;
        for (size_t i = 0; i < nw; ++i) {
            const double d = fabs((double)w[i] - (double)wref[i]);
            if (!(d <= max_dw))
                max_dw = d, at_dw = i;
        }
        if (max_dw > 0)
            printf("dp_train: the largest weight difference: weight %zu of %zu, %.9g vs %.9g\n",
                   at_dw, nw, w[at_dw], wref[at_dw]);
        printf("dp_train: ranks %d, global batch %d, %d steps%s: max |loss - one process| %.3g, "
               "max |weight - one process| %.3g, ranks identical: %s\n",
               size, global, steps,
               bn == 3   ? " (SyncBatchNormalization, SpatialDropout2D, Dropout)"
               : bn == 2 ? " (SyncBatchNormalization)"
               : bn == 1 ? " (BatchNormalization per rank)"
               : bn == 4 ? " (Dropout)"
               : bn == 5 ? " (822,868 parameters)"
                         : "",
               max_dloss, max_dw, memcmp(wmin, wmax, sizeof(float) * nw) ? "no" : "yes");
        if (wtol < 0.0)
            wtol = tol;
        if (!(max_dloss <= tol && max_dw <= wtol)) {
            fprintf(stderr, "dp_train: over the tolerance %g (loss), %g (weights)\n", tol, wtol);
            bad = 1;
        }
        if (save && !bad) { /* the 2-rank run's checkpoint in a 1-rank model */
            ck_model *one = make_model(ctx, bn, 0, count, bf16, 0); /* evaluated in the same batches */
            ck_step_result a, b;
            if (!one || (st = ck_model_save(m, save)) != CK_STATUS_SUCCESS ||
                (st = ck_model_load(one, save)) != CK_STATUS_SUCCESS ||
                (st = ck_model_evaluate(m, x, y, DATA, &a)) != CK_STATUS_SUCCESS ||
                (st = ck_model_evaluate(one, x, y, DATA, &b)) != CK_STATUS_SUCCESS) {
                bad = fail(ctx, "checkpoint", st);
            } else {
                printf("dp_train: checkpoint loaded in one process: accuracy %d/%d (data-parallel "
                       "model %d/%d), loss %.9f (%.9f)\n",
                       b.correct, DATA, a.correct, DATA, b.loss, a.loss);
                if (a.correct != b.correct || a.loss != b.loss)
                    bad = 1;
            }
            ck_model_destroy(one);
        }
    }
done:
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    ck_model_destroy(ref);
    ck_model_destroy(m);
    ck_comm_destroy(comm);
    ck_context_destroy(ctx);
    free(x), free(xb), free(y), free(yb), free(perm), free(w), free(wref), free(wmin), free(wmax);
    MPI_Finalize();
    return bad ? 1 : 0;
}
