/* cnnkit train: checks every output before the first step, locks the checkpoint and the log for
 * the run, checkpoints each epoch, resumes (--resume), holds out validation data, and on SIGINT
 * or SIGTERM finishes the step, saves a checkpoint and exits 128 + signal (a second signal exits
 * at once). */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "cli.h"

/* The signal that asked the run to stop, 0 while none did. Set by the handler, read by the fit's
 * step callback: the library knows nothing of signals. */
static volatile sig_atomic_t stop_signal;
/* the run's lock file, removed by an exit from the handler too (unlink is async-signal-safe) */
static char lock_file[4096];
/* 1 from the fit's start: a signal then stops after the step and saves; before it, nothing is
 * worth saving and the run just ends (its lock removed) */
static volatile sig_atomic_t deferring;
/* a --log this run created, until its first row: an exit from the handler removes it too, as
 * csv_close does ("a new log that got no row is removed") */
static char new_log[4096];

static void exit_now(int sig) {
    if (lock_file[0])
        unlink(lock_file);
    if (new_log[0])
        unlink(new_log);
    _exit(128 + sig);
}

static void on_signal(int sig) {
    if (!deferring || sig == SIGPIPE) { /* SIGPIPE: the reader of the output is gone */
        static const char early[] = "\ncnnkit: interrupted before training: exiting\n";
        if (sig != SIGPIPE)
            (void)!write(STDERR_FILENO, early, sizeof early - 1);
        exit_now(sig);
    }
    if (stop_signal) {
        static const char again[] = "\ncnnkit: interrupted again: exiting now, nothing saved\n";
        (void)!write(STDERR_FILENO, again, sizeof again - 1);
        exit_now(sig);
    }
    stop_signal = sig;
    static const char msg[] = "\ncnnkit: interrupted: finishing this step, then saving a "
                              "checkpoint (interrupt again to exit at once)\n";
    (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
}

static void catch_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
}

/* A log row: from the first on, the log is the run's record and stays. */
static void log_row(csv_log *l, const ck_epoch_result *r, double test_loss, double test_acc) {
    new_log[0] = '\0';
    csv_row(l, r, test_loss, test_acc);
}

typedef struct train_ui {
    int tty;
    ck_context *ctx;
    ck_model *m;
    const opts *o;
    csv_log *log;
    int epochs, every;
    ck_epoch_result last; /* the final epoch's row waits for the test figures */
    int has_last;
    int save_failed;
    /* test hook (CNNKIT_TEST_INTERRUPT, README): raise SIGINT after these model steps */
    long long raise_at[8];
    int n_raise;
    /* test hooks of --distributed faults (CNNKIT_TEST_HANG_AT_STEP, CNNKIT_TEST_KILL_AT_STEP):
     * this rank hangs, or kills itself, after that model step; 0: never */
    long long hang_at, kill_at;
} train_ui;

static int on_step(void *u, const ck_fit_progress *p) {
    train_ui *ui = (train_ui *)u;
    const long long step = ck_model_step(ui->m);
    for (int i = 0; i < ui->n_raise; ++i)
        if (ui->raise_at[i] == step)
            raise(SIGINT);
    if (ui->kill_at == step)
        raise(SIGKILL);
    if (ui->hang_at == step)
        for (;;) /* a rank that stops answering, until the job is ended around it */
            pause();
    if (ui->tty) {
        const int width = 24;
        int done = (int)((double)p->step / p->steps * width);
        char bar[32];
        for (int i = 0; i < width; ++i)
            bar[i] = i < done ? '=' : (i == done ? '>' : '.');
        bar[width] = '\0';
        printf("\rEpoch %d/%d %5d/%-5d [%s] loss %.4f  accuracy %.4f  %7.0f img/s  ETA %4.0fs ",
               p->epoch, p->epochs, p->step, p->steps, bar, p->loss, p->accuracy, p->images_per_s,
               p->eta_s);
        fflush(stdout);
    }
    return stop_signal != 0;
}

static int on_epoch(void *u, const ck_epoch_result *r) {
    train_ui *ui = (train_ui *)u;
    if (ui->tty)
        printf("\r");
    printf("epoch %d/%d: loss %.4f  accuracy %.4f", r->epoch, ui->epochs, r->loss, r->accuracy);
    if (!isnan(r->val_loss))
        printf("  val_loss %.4f  val_accuracy %.4f", r->val_loss, r->val_accuracy);
    printf("  %.1fs  %.0f img/s%s\n", r->seconds, r->images_per_s,
           ui->tty ? "                    " : "");
    fflush(stdout);
    if (r->epoch == ui->epochs) {
        ui->last = *r;
        ui->has_last = 1;
    } else if (ui->log) {
        log_row(ui->log, r, NAN, NAN);
    }
    const opts *o = ui->o;
    if (o->save && ui->every > 0 && r->epoch % ui->every == 0 && r->epoch < ui->epochs) {
        if (save_model_file(ui->m, o->save) != CK_STATUS_SUCCESS) {
            fprintf(stderr, "cnnkit: --save: checkpoint after epoch %d: %s\n", r->epoch,
                    ck_context_last_error(ui->ctx));
            ui->save_failed = 1;
            return 1;
        }
        printf("checkpoint %s (epoch %d)\n", o->save, r->epoch);
        fflush(stdout);
    }
    return stop_signal != 0;
}

/* The convolution settings and, on a GPU, each conv's algorithms: printed when a setting is not
 * the default or with --profile (the profile's conv rows depend on them). */
static void print_conv_plans(const opts *o, ck_context *ctx, const ck_model *m) {
    const int cuda = ck_context_device(ctx) == CK_DEVICE_CUDA;
    if (!o->conv_algo && !o->math && !(cuda && o->profile))
        return;
    /* the context's math as the model left it: a model's precision (option or file policy)
     * sets it, over --math */
    const int tf32 = ck_context_math(ctx) == CK_MATH_TF32;
    printf("conv algorithms %s, math %s%s%s\n", o->conv_algo ? "fastest" : "deterministic",
           tf32 ? "tf32" : "fp32",
           o->math && !tf32 && cuda ? " (--math tf32 overridden by the model's precision; "
                                      "--precision tf32 asks for TF32)"
                                    : "",
           cuda ? "" : " (no effect on the CPU: always deterministic, strict fp32)");
    size_t need = 0;
    if (!cuda || ck_model_conv_algorithms(m, NULL, 0, &need) != CK_STATUS_BAD_PARAM || need < 2)
        return;
    char *buf = (char *)malloc(need);
    if (buf && ck_model_conv_algorithms(m, buf, need, NULL) == CK_STATUS_SUCCESS)
        printf("%s", buf);
    free(buf);
}

/* On a GPU: how many steps ran as CUDA graph replays, and why the others did not. */
static void print_cuda_graphs(ck_context *ctx, const ck_model *m) {
    ck_cuda_graph_info gi;
    if (ck_context_device(ctx) != CK_DEVICE_CUDA ||
        ck_model_cuda_graph_info(m, &gi) != CK_STATUS_SUCCESS)
        return;
    printf("cuda graph %s: %lld steps replayed, %lld captured%s%s\n",
           gi.mode == CK_CUDA_GRAPH_OFF ? "off" : "on", gi.replays, gi.captures,
           gi.note[0] ? "; last step: " : "", gi.note);
}

/* "x roofline": the measured time over the roofline estimate, "-" when there is none (a CPU
 * run, a GPU not in the peak table, a node with no work); '*' past 1.5x. */
static int ratio_text(char *buf, size_t len, double ms, double roof_ms) {
    if (!(roof_ms > 0.0) || !(ms > 0.0)) {
        snprintf(buf, len, "-");
        return 0;
    }
    const double x = ms / roof_ms;
    snprintf(buf, len, "%.1f%s", x, x > 1.5 ? "*" : "");
    return x > 1.5;
}

static void roof_text(char *buf, size_t len, double roof_ms) {
    if (roof_ms > 0.0)
        snprintf(buf, len, "%.4f", roof_ms);
    else
        snprintf(buf, len, "-");
}

/* The training-step profile (--profile): one row per planned node, the optimizer and the rest;
 * per node its roofline estimate (docs/performance.md) and how far the node is from it. */
static void print_profile(const ck_model *m, int cuda) {
    int count = 0;
    long long steps = 0;
    double step_ms = 0.0;
    if (ck_model_profile(m, NULL, 0, &count, NULL, NULL) != CK_STATUS_SUCCESS)
        return;
    ck_profile_row *rows = (ck_profile_row *)calloc((size_t)count, sizeof *rows);
    if (!rows || ck_model_profile(m, rows, count, &count, &steps, &step_ms) != CK_STATUS_SUCCESS) {
        free(rows);
        return;
    }
    printf("profile: %lld training steps, %.3f ms per step%s\n", steps, step_ms,
           cuda ? " (the stream drained around every node: slower than a plain step)" : "");
    printf("%4s  %-58s %11s %11s %9s  %-19s  %s\n", "", "", "", "", "", "roofline ms",
           "x roofline");
    printf("%4s  %-58s %11s %11s %9s  %9s %9s  %7s %7s\n", "node", "layers", "forward ms",
           "backward ms", "% of step", "forward", "backward", "forward", "backward");
    int flagged = 0;
    for (int i = 0; i < count; ++i) {
        const ck_profile_row *r = &rows[i];
        char what[59];
        snprintf(what, sizeof what, "%s", r->what); /* cut long plan notes */
        char idx[16] = "";
        if (r->node >= 0)
            snprintf(idx, sizeof idx, "%d", r->node + 1);
        const double pct = step_ms > 0.0 ? 100.0 * (r->forward_ms + r->backward_ms) / step_ms : 0.0;
        if (r->node >= 0) {
            char rf[24], rb[24], xf[24], xb[24];
            roof_text(rf, sizeof rf, r->roofline_fwd_ms);
            roof_text(rb, sizeof rb, r->roofline_bwd_ms);
            flagged += ratio_text(xf, sizeof xf, r->forward_ms, r->roofline_fwd_ms);
            flagged += ratio_text(xb, sizeof xb, r->backward_ms, r->roofline_bwd_ms);
            printf("%4s  %-58s %11.3f %11.3f %8.1f%%  %9s %9s  %7s %7s\n", idx, what, r->forward_ms,
                   r->backward_ms, pct, rf, rb, xf, xb);
        } else {
            printf("%4s  %-58s %11.3f %11s %8.1f%%\n", idx, what, r->forward_ms, "", pct);
        }
    }
    if (flagged)
        printf("* more than 1.5x the node's roofline (peak compute or DRAM bandwidth, "
               "docs/performance.md)\n");
    else if (!cuda)
        printf("roofline: - on the CPU (the estimate needs a GPU's peaks)\n");
    free(rows);
}

/* The held-out data: --validation-split F takes the last F of the training data (Keras:
 * split_at = int(count * (1 - F)), before any shuffling); --validation-data DIR its t10k-*
 * files. */
static int make_validation(const opts *o, ck_dataset *train, ck_dataset *val) {
    if (o->val_data)
        return load_data(o, o->val_data, 0, val);
    if (!(o->val_split > 0.0))
        return 0;
    const int split_at = (int)((double)train->count * (1.0 - o->val_split));
    if (split_at < 1 || split_at >= train->count) {
        fprintf(stderr,
                "cnnkit: --validation-split %g of %d training images leaves %d for training and "
                "%d for validation: both need at least one\n",
                o->val_split, train->count, split_at, train->count - split_at);
        return EXIT_USAGE;
    }
    ck_dataset head = {0};
    if (ck_dataset_subset(train, split_at, train->count - split_at, val) != CK_STATUS_SUCCESS ||
        ck_dataset_subset(train, 0, split_at, &head) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: out of memory for --validation-split\n");
        return EXIT_RUNTIME;
    }
    ck_dataset_free(train);
    *train = head;
    return 0;
}

/* Loads --resume into m and checks that it continues this command line's run. */
static int resume_from(const opts *o, ck_context *ctx, ck_model *m, const ck_dataset *train,
                       int epochs, ck_fit_state *fs) {
    if (ck_model_load(m, o->resume) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: --resume: %s\n", ck_context_last_error(ctx));
        return EXIT_RUNTIME;
    }
    ck_model_fit_state(m, fs);
    if (!fs->valid) {
        fprintf(stderr,
                "cnnkit: --resume %s holds weights but no training position (an older "
                "checkpoint, or one not saved by cnnkit train): use it with evaluate or "
                "predict --weights\n",
                o->resume);
        return EXIT_USAGE;
    }
    if (fs->batch != o->batch) {
        fprintf(stderr, "cnnkit: --resume %s was trained with --batch %d: give --batch %d\n",
                o->resume, fs->batch, fs->batch);
        return EXIT_USAGE;
    }
    if (fs->shuffle_seed != o->seed || fs->context_seed != o->seed) {
        fprintf(stderr, "cnnkit: --resume %s was trained with --seed %llu: give --seed %llu\n",
                o->resume, (unsigned long long)fs->shuffle_seed,
                (unsigned long long)fs->shuffle_seed);
        return EXIT_USAGE;
    }
    if (fs->precision >= 0 && fs->precision != (int)ck_model_precision(m)) {
        const char *was = ck_precision_name((ck_precision)fs->precision);
        fprintf(stderr, "cnnkit: --resume %s was trained in precision %s: give --precision %s\n",
                o->resume, was, was);
        return EXIT_USAGE;
    }
    if (fs->count != train->count) {
        fprintf(stderr,
                "cnnkit: --resume %s was trained on %d images, this command line gives %d: use "
                "the same --data, --limit and --validation-split\n",
                o->resume, fs->count, train->count);
        return EXIT_USAGE;
    }
    /* the same count, other images or labels (another --data, --pixels): said here, naming
     * the options, rather than by the fit's own refusal (the CRC of ck_fit_state.data_crc) */
    const size_t px = (size_t)train->count * train->h * train->w * train->c;
    uLong crc = crc32_z(0, (const Bytef *)train->images, sizeof(float) * px);
    crc = crc32_z(crc, (const Bytef *)train->labels, sizeof(int32_t) * (size_t)train->count);
    if ((uint32_t)crc != fs->data_crc) {
        fprintf(stderr,
                "cnnkit: --resume %s was trained on other images or labels (as many): use the "
                "same --data, --pixels, --limit and --validation-split\n",
                o->resume);
        return EXIT_USAGE;
    }
    if (fs->epoch >= epochs) {
        fprintf(stderr,
                "cnnkit: --resume %s has finished %d epoch%s and --epochs is the total: give "
                "--epochs %d or more to train on\n",
                o->resume, fs->epoch, fs->epoch == 1 ? "" : "s", fs->epoch + 1);
        return EXIT_USAGE;
    }
    const int steps = (train->count + o->batch - 1) / o->batch;
    if (fs->epoch_step)
        printf("resuming %s: epoch %d, after step %d of %d (model step %lld)\n", o->resume,
               fs->epoch + 1, fs->epoch_step, steps, ck_model_step(m));
    else
        printf("resuming %s: after epoch %d (model step %lld)\n", o->resume, fs->epoch,
               ck_model_step(m));
    return 0;
}

/* Whether the fault test hooks below are this rank's: rank CNNKIT_TEST_FAULT_RANK (default 1)
 * of a --distributed run. */
static int fault_rank(const opts *o) {
    const char *r = getenv("CNNKIT_TEST_FAULT_RANK");
    return o->distributed && o->rank == (r ? atoi(r) : 1);
}

/* CNNKIT_TEST_HANG_AT_STEP=0: the rank hangs before the ranks' start agreement. */
static void hang_at_start(const opts *o) {
    const char *h = getenv("CNNKIT_TEST_HANG_AT_STEP");
    if (fault_rank(o) && h && atoll(h) == 0)
        for (;;)
            pause();
}

/* CNNKIT_TEST_INTERRUPT="k[,k...]": raise SIGINT after model step k (twice when k is listed
 * twice), to test the interrupt path deterministically (README). */
static void test_hook(train_ui *ui) {
    const char *s = getenv("CNNKIT_TEST_INTERRUPT");
    while (s && *s && ui->n_raise < 8) {
        char *end;
        const long long k = strtoll(s, &end, 10);
        if (end == s)
            break;
        ui->raise_at[ui->n_raise++] = k;
        s = *end == ',' ? end + 1 : end;
    }
    /* CNNKIT_TEST_HANG_AT_STEP=k / CNNKIT_TEST_KILL_AT_STEP=k: rank CNNKIT_TEST_FAULT_RANK (default
     * 1) sleeps for ever / raises SIGKILL after model step k, for the fault tests of --distributed
     * (docs/distributed.md) */
    if (!fault_rank(ui->o))
        return;
    const char *h = getenv("CNNKIT_TEST_HANG_AT_STEP"), *k = getenv("CNNKIT_TEST_KILL_AT_STEP");
    ui->hang_at = h ? atoll(h) : 0;
    ui->kill_at = k ? atoll(k) : 0;
}

int cmd_train(const opts *o) {
    if (o->checkpoint_every >= 0 && !o->save) {
        fprintf(stderr, "cnnkit: train: --checkpoint-every needs --save FILE\n");
        return EXIT_USAGE;
    }
    if (o->val_split > 0.0 && o->val_data) {
        fprintf(stderr, "cnnkit: train: give --validation-split or --validation-data, not both\n");
        return EXIT_USAGE;
    }
    const int epochs = o->epochs > 0 ? o->epochs : 1;
    /* --distributed: rank 0 prints and writes the files; the other ranks train in silence */
    opts mine = *o;
    if (o->rank > 0) {
        mine.save = mine.log = mine.plot = NULL;
        if (!freopen("/dev/null", "w", stdout))
            return EXIT_RUNTIME;
    }
    o = &mine;
    catch_signals(); /* before the lock is taken: an early interrupt removes it */
    /* every output is checked before the first step, not found unwritable after the last; a
     * failure here goes through the ranks' agreement below, so no rank is left waiting */
    /* two outputs on one file (or one on the model file) would overwrite each other */
    const char *const names[4] = {"MODEL", "--save", "--log", "--plot"};
    const char *const paths[4] = {o->model, o->save, o->log, o->plot};
    int rc = distinct_files("train", names, paths, 4);
    /* nor may one replace what the run reads: the checkpoint it resumes (but --save, which
     * continues it), the data sets */
    const char *const in_names[3] = {"the --resume checkpoint", "--data", "--validation-data"};
    const char *const in_paths[3] = {o->resume, data_dir_resolved(o), o->val_data};
    for (int k = 1; k < 4 && !rc; ++k)
        rc = output_not_input("train", names[k], paths[k], in_names + (k == 1), in_paths + (k == 1),
                              3 - (k == 1));
    if (!rc && ((o->save && check_output_path("--save", o->save, 1)) ||
                (o->log && check_output_path("--log", o->log, 0)) ||
                (o->plot && check_output_path("--plot", o->plot, 1))))
        rc = EXIT_RUNTIME;
    if (!rc && o->resume && is_keras_file(o->resume)) {
        fprintf(stderr,
                "cnnkit: --resume %s: a Keras file holds no training position; resume "
                "from a cnnkit checkpoint (--save FILE.ckpt)\n",
                o->resume);
        rc = EXIT_USAGE;
    }
    if (!rc && o->resume && access(o->resume, R_OK) != 0) {
        fprintf(stderr, "cnnkit: --resume %s: %s\n", o->resume, strerror(errno));
        rc = EXIT_RUNTIME;
    }
    const int save_lock = !rc && o->save ? lock_path("--save", o->save) : -1;
    if (!rc && o->save && save_lock < 0)
        rc = EXIT_RUNTIME;
    if (!rc && o->save)
        (void)lock_name(o->save, lock_file, sizeof lock_file); /* fits: lock_path made it */
    ck_context *ctx = NULL;
    ck_model *m = NULL;
    ck_comm *comm = NULL;
    ck_dataset train = {0}, val = {0}, test = {0};
    ck_epoch_result *hist = (ck_epoch_result *)calloc((size_t)epochs, sizeof *hist);
    csv_log log = {0};
    ck_fit_state fs = {0};
    if (!rc && !hist) {
        fprintf(stderr, "cnnkit: --epochs %d: out of memory for the epochs' history\n", epochs);
        rc = EXIT_RUNTIME;
    }
    if (!rc)
        rc = make_context(o, &ctx);
    /* --distributed: each rank holds its share of the global batch at most */
    if (!rc)
        rc = load_model(ctx, o, (o->batch + o->ranks - 1) / o->ranks, &m);
    if (!rc &&
        ck_model_set_cuda_graph(m, o->cuda_graph_off ? CK_CUDA_GRAPH_OFF : CK_CUDA_GRAPH_AUTO) !=
            CK_STATUS_SUCCESS) {
        fprintf(stderr, "cnnkit: --cuda-graph: %s\n", ck_context_last_error(ctx));
        rc = EXIT_RUNTIME;
    }
    ck_param_counts pc = {0, 0, 0};
    if (!rc) {
        ck_model_param_counts(m, &pc);
        if (pc.trainable == 0) {
            fprintf(stderr,
                    "cnnkit: %s: the model has no trainable parameters (no Conv2D, Dense or "
                    "BatchNormalization layer): nothing to train\n",
                    o->model);
            rc = EXIT_USAGE;
        }
    }
    if (!rc)
        rc = load_data(o, NULL, 1, &train);
    if (!rc)
        rc = load_data(o, NULL, 0, &test);
    if (!rc)
        rc = limit_data(&train, o->limit, "--limit");
    if (!rc)
        rc = make_validation(o, &train, &val);
    /* the data fit the model before the first step (the test set is used only after the last) */
    if (!rc)
        rc = data_fits(o, m, &train, "training");
    if (!rc && val.count)
        rc = data_fits(o, m, &val, "validation");
    if (!rc)
        rc = data_fits(o, m, &test, "test");
    if (!rc && o->resume)
        rc = resume_from(o, ctx, m, &train, epochs, &fs);
    if (!rc && o->log)
        rc = csv_open(&log, o->log, o->resume ? fs.epoch : -1, hist, epochs);
    if (!rc && o->log && log.created && strlen(o->log) < sizeof new_log)
        memcpy(new_log, o->log, strlen(o->log) + 1);
    if (o->distributed) { /* every rank gets here; then all go on or all stop */
        hang_at_start(o);
        rc = dist_agree(o, rc);
        if (!rc)
            rc = dist_comm(o, ctx, &comm);
        /* after --resume: attaching copies rank 0's state, its fit position included */
        if (!rc && ck_model_set_comm(m, comm) != CK_STATUS_SUCCESS) {
            fprintf(stderr, "cnnkit: --distributed: %s\n", ck_context_last_error(ctx));
            rc = EXIT_RUNTIME;
        }
    }
    if (rc)
        goto done;
    printf("cnnkit %d.%d.%d: %s, %lld params, device %s, %d train / %d test images",
           CNNKIT_VERSION_MAJOR, CNNKIT_VERSION_MINOR, CNNKIT_VERSION_PATCH, o->model, pc.total,
           ck_context_device(ctx) == CK_DEVICE_CUDA ? "cuda" : "cpu", train.count, test.count);
    if (val.count && o->val_data)
        printf(", %d validation (%s)", val.count, o->val_data);
    else if (val.count)
        printf(", %d validation (the last %g%% of the training data)", val.count,
               100.0 * o->val_split);
    printf(", batch %d, %d epoch%s, seed %llu", o->batch, epochs, epochs > 1 ? "s" : "", o->seed);
    if (o->distributed)
        printf(", distributed over %d rank%s (%s; --batch is the global batch)", o->ranks,
               o->ranks > 1 ? "s" : "",
               ck_context_device(ctx) == CK_DEVICE_CUDA ? "NCCL, one GPU per rank" : "MPI");
    /* fp32 runs print what they always printed */
    if (ck_model_precision(m) != CK_PRECISION_FP32)
        printf(", precision %s", ck_precision_name(ck_model_precision(m)));
    printf("\n");
    print_conv_plans(o, ctx, m);
    fflush(stdout);
    if (o->profile)
        ck_model_set_profiling(m, 1);
    /* --distributed: epoch lines only (OpenMPI hands a rank a pseudo-terminal even when
     * mpirun's own output goes to a file) */
    train_ui ui = {.tty = isatty(STDOUT_FILENO) && !o->distributed,
                   .ctx = ctx,
                   .m = m,
                   .o = o,
                   .log = o->log ? &log : NULL,
                   .epochs = epochs,
                   .every = o->checkpoint_every >= 0 ? o->checkpoint_every : 1};
    test_hook(&ui);
    deferring = 1;
    ck_fit_options fo = {epochs, o->batch, o->seed, on_step, on_epoch, &ui, o->resume != NULL};
    ck_status st = ck_model_fit(m, &train, val.count ? &val : NULL, &fo, hist);
    char why[1024]; /* the fit's message: the calls below clear the context's */
    snprintf(why, sizeof why, "%s", ck_context_last_error(ctx));
    ck_model_fit_state(m, &fs);
    /* the plot: every finished epoch this run or the kept rows of a resumed log know */
    int first = 1;
    while (first <= fs.epoch && hist[first - 1].epoch != first)
        ++first;
    const int shown = fs.epoch - first + 1;
    if (st != CK_STATUS_SUCCESS) {
        if (o->distributed)
            fprintf(stderr, "cnnkit: rank %d: training failed: %s\n", o->rank, why);
        else
            fprintf(stderr, "cnnkit: training failed: %s\n", why);
        rc = EXIT_RUNTIME;
    } else if (ui.save_failed) {
        rc = EXIT_RUNTIME;
    } else if (!(fs.epoch >= epochs && fs.epoch_step == 0)) {
        /* (stopped after the very last step: the run is whole, it ends as one below) */
        /* interrupted: the fit stopped after a whole step, asked by a signal here or, under
         * --distributed, on another rank (every rank stops); keep everything it did */
        const char *sig = stop_signal == SIGINT    ? "SIGINT"
                          : stop_signal == SIGTERM ? "SIGTERM"
                                                   : "a signal to another rank";
        /* beside a Keras --save (its directory was checked before the first step), else here */
        char fallback[4200];
        if (o->save)
            snprintf(fallback, sizeof fallback, "%s.interrupted.ckpt", o->save);
        else
            snprintf(fallback, sizeof fallback, "cnnkit-interrupted-%ld.ckpt", (long)getpid());
        /* a resumable checkpoint: a .keras file holds no training position */
        const char *path = o->save && !is_keras_file(o->save) ? o->save : fallback;
        if (ui.has_last && ui.log)
            log_row(ui.log, &ui.last, NAN, NAN);
        const int steps = (train.count + o->batch - 1) / o->batch;
        if (o->rank > 0) {
            /* rank 0 saves the run's checkpoint (every rank holds the same model) */
        } else if (save_model_file(m, path) != CK_STATUS_SUCCESS) {
            fprintf(stderr, "cnnkit: interrupted (%s), and the checkpoint was not saved: %s\n", sig,
                    ck_context_last_error(ctx));
        } else {
            char launch[64] = "";
            if (o->distributed)
                snprintf(launch, sizeof launch, "mpirun -np %d ", o->ranks);
            printf("interrupted (%s) at epoch %d, step %d of %d (model step %lld): checkpoint "
                   "%s\ncontinue with: %scnnkit train %s --resume %s --epochs %d%s%s%s (and the "
                   "same --batch, --seed, --data, --limit, --validation-split)\n",
                   sig, fs.epoch_step ? fs.epoch + 1 : fs.epoch,
                   fs.epoch_step ? fs.epoch_step : steps, steps, ck_model_step(m), path, launch,
                   o->model, path, epochs, o->save ? " --save " : "", o->save ? o->save : "",
                   o->distributed ? " --distributed" : "");
        }
        if (o->plot && shown > 0 && write_train_svg(o->plot, hist, first, shown) == 0)
            printf("plot %s\n", o->plot);
        rc = stop_signal ? 128 + stop_signal : EXIT_RUNTIME;
    } else {
        ck_step_result tr;
        double tl = NAN, ta = NAN;
        if (o->rank > 0) {
            /* the test set is rank 0's to evaluate and print: the ranks' models are the same */
        } else if (ck_model_evaluate(m, test.images, test.labels, test.count, &tr) !=
                   CK_STATUS_SUCCESS) {
            fprintf(stderr, "cnnkit: test evaluation failed: %s\n", ck_context_last_error(ctx));
            rc = EXIT_RUNTIME;
        } else {
            tl = tr.loss;
            ta = (double)tr.correct / tr.count;
            printf("test accuracy: %.4f (%d/%d), test loss %.4f\n", ta, tr.correct, tr.count, tl);
        }
        if (ui.has_last && ui.log)
            log_row(ui.log, &ui.last, tl, ta);
        if (o->profile)
            print_profile(m, ck_context_device(ctx) == CK_DEVICE_CUDA);
        print_cuda_graphs(ctx, m);
        if (o->save) {
            if (save_model_file(m, o->save) != CK_STATUS_SUCCESS) {
                fprintf(stderr, "cnnkit: --save: %s\n", ck_context_last_error(ctx));
                rc = EXIT_RUNTIME;
            } else {
                printf("saved %s\n", o->save);
            }
        }
        if (o->plot) {
            if (write_train_svg(o->plot, hist, first, shown) != 0) {
                fprintf(stderr, "cnnkit: --plot %s: cannot write\n", o->plot);
                rc = EXIT_RUNTIME;
            } else {
                printf("plot %s\n", o->plot);
            }
        }
    }
    if (!rc && stop_signal) /* a signal after the last step: the run finished, and says so */
        rc = 128 + stop_signal;
done:
    if (o->log && log.f) {
        const int wrote = !log.pending;
        if (csv_close(&log) != 0) {
            if (rc == 0)
                rc = EXIT_RUNTIME;
        } else if (wrote) {
            printf("log %s\n", o->log);
        }
    }
    unlock_path(o->save, save_lock);
    lock_file[0] = new_log[0] = '\0';
    /* a collective timed out: the rank that stopped answering would never join MPI_Finalize (nor
     * the communicator's free), so the job ends here, the launcher stopping every rank */
    if (ck_comm_broken(comm))
        dist_abort(rc ? rc : EXIT_RUNTIME);
    free(hist);
    ck_dataset_free(&train);
    ck_dataset_free(&val);
    ck_dataset_free(&test);
    ck_model_destroy(m);
    ck_comm_destroy(comm); /* collective: every rank gets here */
    ck_context_destroy(ctx);
    return rc;
}
