/* cnnkit train through the binary (issue 12): outputs checked before the first step, SIGINT /
 * SIGTERM save a checkpoint, --resume gives the same bits as an uninterrupted run, save targets,
 * log errors and locks, validation data, model-file and option errors, summary --batch. Tiny
 * IDX data (8x8 images, 3 classes) and a tiny model written here keep every run short. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char out[65536];

static const char MODEL[] = "model = Sequential()\n"
                            "model.add(Conv2D(3, (3, 3), input_shape=(8, 8, 1)))\n"
                            "model.add(BatchNormalization())\n"
                            "model.add(Activation('relu'))\n"
                            "model.add(SpatialDropout2D(0.2))\n"
                            "model.add(Flatten())\n"
                            "model.add(Dropout(0.2))\n"
                            "model.add(Dense(3, activation='softmax'))\n";

typedef struct fixture {
    char dir[64];
    char model[128];
    char data[128];
} fixture;

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(p, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* IDX image and label files of n 8x8 images; labels from the image pattern so there is
 * something to learn. */
static void write_idx(const char *dir, const char *split, int n, const unsigned char *pix,
                      const unsigned char *labels) {
    char path[256];
    unsigned char *buf = (unsigned char *)malloc(16 + (size_t)n * 64);
    put_be32(buf, 0x803);
    put_be32(buf + 4, (uint32_t)n);
    put_be32(buf + 8, 8);
    put_be32(buf + 12, 8);
    memcpy(buf + 16, pix, (size_t)n * 64);
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, split);
    write_file(path, buf, 16 + (size_t)n * 64);
    put_be32(buf, 0x801);
    memcpy(buf + 8, labels, (size_t)n);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, split);
    write_file(path, buf, 8 + (size_t)n);
    free(buf);
}

static void make_images(int n, unsigned char *pix, unsigned char *labels, uint64_t seed) {
    trng r = {seed};
    for (int i = 0; i < n; ++i) {
        labels[i] = (unsigned char)(trng_u32(&r) % 3);
        for (int p = 0; p < 64; ++p)
            pix[i * 64 + p] =
                (unsigned char)(((p % 8) * (labels[i] + 1) * 13 + trng_u32(&r) % 40) % 256);
    }
}

/* 48 training images whose last 12 are the 12 test images (so a validation split of 0.25 is the
 * test set exactly: Keras takes the last F of the data, before shuffling). */
static void setup(fixture *fx) {
    snprintf(fx->dir, sizeof fx->dir, "/tmp/cnnkit-clitrain-XXXXXX");
    cr_assert_not_null(mkdtemp(fx->dir));
    snprintf(fx->model, sizeof fx->model, "%s/tiny.py", fx->dir);
    snprintf(fx->data, sizeof fx->data, "%s/data", fx->dir);
    write_file(fx->model, MODEL, strlen(MODEL));
    cr_assert_eq(mkdir(fx->data, 0755), 0);
    unsigned char pix[48 * 64], lab[48];
    make_images(48, pix, lab, 7);
    write_idx(fx->data, "train", 48, pix, lab);
    write_idx(fx->data, "t10k", 12, pix + 36 * 64, lab + 36);
}

static void teardown(fixture *fx) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
    cr_assert_eq(system(cmd), 0);
}

static int train(const fixture *fx, const char *args) {
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "train %s --data %s --batch 8 --device cpu %s", fx->model, fx->data,
             args);
    return t_run_cli(cmd, out, sizeof out);
}

static void assert_same_file(const char *a, const char *b) {
    size_t na, nb;
    char *pa = t_read_file(a, &na), *pb = t_read_file(b, &nb);
    cr_assert(na == nb && memcmp(pa, pb, na) == 0, "%s (%zu bytes) and %s (%zu bytes) differ", a,
              na, b, nb);
    free(pa);
    free(pb);
}

/* The CSV rows without their two timing columns (seconds, images/s). */
static void csv_figures(const char *path, char *buf, size_t len) {
    char *s = t_read_file(path, NULL);
    size_t o = 0;
    for (char *line = strtok(s, "\n"); line && o + 1 < len; line = strtok(NULL, "\n")) {
        int commas = 0;
        for (char *p = line; *p && o + 1 < len; ++p) {
            if (*p == ',' && ++commas == 7)
                break;
            buf[o++] = *p;
        }
        buf[o++] = '\n';
    }
    buf[o] = '\0';
    free(s);
}

static void path_in(const fixture *fx, char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%s", fx->dir, name);
}

/* The CLI with args exits rc and says `says`. */
static void cli_says(const char *args, int rc, const char *says) {
    cr_assert_eq(t_run_cli(args, out, sizeof out), rc, "%s", out);
    cr_assert_neq(strstr(out, says), NULL, "'%s' not in: %s", says, out);
}

/* Item 3: --epochs 2 --save a and --epochs 1 --save b, then --epochs 2 --resume b --save b,
 * leave byte-identical checkpoints; so does a run interrupted mid-epoch by SIGINT (a test hook
 * raises it after model step 9 of 12) and resumed. */
Test(cli_train, resume_gives_the_same_bits_as_an_uninterrupted_run, .timeout = 120) {
    fixture fx;
    setup(&fx);
    char a[160], b[160], c[160], la[160], lc[160], args[1024];
    path_in(&fx, a, sizeof a, "a.ckpt");
    path_in(&fx, b, sizeof b, "b.ckpt");
    path_in(&fx, c, sizeof c, "c.ckpt");
    path_in(&fx, la, sizeof la, "a.csv");
    path_in(&fx, lc, sizeof lc, "c.csv");
    snprintf(args, sizeof args, "--epochs 2 --validation-split 0.25 --save %s --log %s", a, la);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    snprintf(args, sizeof args, "--epochs 1 --validation-split 0.25 --save %s", b);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    snprintf(args, sizeof args, "--epochs 2 --validation-split 0.25 --resume %s --save %s", b, b);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    cr_assert_neq(strstr(out, "after epoch 1"), NULL, "%s", out);
    assert_same_file(a, b);
    /* another precision would continue the run with other arithmetic: refused, naming it */
    snprintf(args, sizeof args, "--epochs 3 --validation-split 0.25 --resume %s --precision bf16",
             b);
    cr_assert_eq(train(&fx, args), 2, "%s", out);
    cr_assert_neq(strstr(out, "was trained in precision fp32: give --precision fp32"), NULL, "%s",
                  out);

    setenv("CNNKIT_TEST_INTERRUPT", "7", 1); /* epoch 2 (5 steps each), after its step 2 */
    snprintf(args, sizeof args, "--epochs 2 --validation-split 0.25 --save %s --log %s", c, lc);
    const int rc = train(&fx, args);
    unsetenv("CNNKIT_TEST_INTERRUPT");
    cr_assert_eq(rc, 130, "%s", out);
    cr_assert_neq(strstr(out, "interrupted (SIGINT) at epoch 2, step 2 of 5"), NULL, "%s", out);
    char hint[400]; /* the hint names the run's --save too */
    snprintf(hint, sizeof hint, "--resume %s --epochs 2 --save %s", c, c);
    cr_assert_neq(strstr(out, hint), NULL, "%s", out);
    snprintf(args, sizeof args, "--epochs 2 --validation-split 0.25 --resume %s --save %s --log %s",
             c, c, lc);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    cr_assert_neq(strstr(out, "epoch 2, after step 2 of 5"), NULL, "%s", out);
    assert_same_file(a, c);
    /* and the resumed log holds the same figures (the timings differ) */
    char fa[4096], fc[4096];
    csv_figures(la, fa, sizeof fa);
    csv_figures(lc, fc, sizeof fc);
    cr_assert_str_eq(fa, fc);
    /* the run's lock files are gone */
    char lock[200];
    snprintf(lock, sizeof lock, "%s/.c.ckpt.cnnkit-lock", fx.dir);
    cr_assert_eq(access(lock, F_OK), -1);
    teardown(&fx);
}

/* Item 2: a second SIGINT exits at once without saving; SIGTERM from outside, mid-run, saves a
 * checkpoint that resumes. */
Test(cli_train, second_interrupt_exits_at_once_and_sigterm_saves, .timeout = 120) {
    fixture fx;
    setup(&fx);
    char a[160], args[1024];
    path_in(&fx, a, sizeof a, "a.ckpt");
    char log[160];
    path_in(&fx, log, sizeof log, "new.csv");
    setenv("CNNKIT_TEST_INTERRUPT", "3,3", 1);
    snprintf(args, sizeof args, "--epochs 2 --save %s --log %s", a, log);
    const int rc = train(&fx, args);
    unsetenv("CNNKIT_TEST_INTERRUPT");
    cr_assert_eq(rc, 130, "%s", out);
    cr_assert_neq(strstr(out, "interrupted again"), NULL, "%s", out);
    cr_assert_eq(access(a, F_OK), -1, "a second interrupt saved a checkpoint");
    /* the exit from the signal handler removes a new log that got no row, as a normal end does */
    cr_assert_eq(access(log, F_OK), -1, "an empty new log stayed");
    char lock[200];
    snprintf(lock, sizeof lock, "%s/.a.ckpt.cnnkit-lock", fx.dir);
    cr_assert_eq(access(lock, F_OK), -1, "the lock file stayed");

    /* SIGTERM sent by another process while it trains (5000 epochs: it cannot finish first) */
    if (access(CNNKIT_CLI_PATH, X_OK) != 0)
        cr_skip("no cnnkit binary");
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        dup2(pfd[1], STDOUT_FILENO);
        dup2(pfd[1], STDERR_FILENO);
        close(pfd[0]);
        execl(CNNKIT_CLI_PATH, "cnnkit", "train", fx.model, "--data", fx.data, "--batch", "8",
              "--device", "cpu", "--epochs", "5000", "--save", a, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    FILE *p = fdopen(pfd[0], "r");
    char line[512];
    int seen = 0;
    while (fgets(line, sizeof line, p))
        if (strstr(line, "epoch 1/5000")) {
            seen = 1;
            kill(pid, SIGTERM);
            break;
        }
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    fclose(p);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(seen, "no epoch line");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 143, "status %d: %s", status, out);
    const char *at = strstr(out, "interrupted (SIGTERM)");
    cr_assert_neq(at, NULL, "%s", out);
    long long step = 0;
    cr_assert_neq(strstr(at, "(model step "), NULL, "%s", out);
    cr_assert_eq(sscanf(strstr(at, "(model step ") + 12, "%lld", &step), 1);
    /* it resumes from there: stopped again by the hook two steps later */
    char hook[48];
    snprintf(hook, sizeof hook, "%lld", step + 2);
    setenv("CNNKIT_TEST_INTERRUPT", hook, 1);
    snprintf(args, sizeof args, "--epochs 5000 --resume %s --save %s", a, a);
    const int rc2 = train(&fx, args);
    unsetenv("CNNKIT_TEST_INTERRUPT");
    cr_assert_eq(rc2, 130, "%s", out);
    cr_assert_neq(strstr(out, "resuming"), NULL, "%s", out);
    snprintf(hook, sizeof hook, "(model step %lld)", step + 2);
    cr_assert_neq(strstr(out, hook), NULL, "%s", out);
    teardown(&fx);
}

/* Items 1 and 4: outputs are checked before the first step; a save never replaces what is not
 * a regular file; a symlink's file is replaced (said so); stale temp files go. */
Test(cli_train, outputs_checked_before_training_and_save_targets) {
    fixture fx;
    setup(&fx);
    char args[1024], p[160], link[160], stale[200];
    const char *bad[][2] = {{"--save", "/nonexistent-dir/x.ckpt"},
                            {"--save", "/dev/null"},
                            {"--log", "/proc/cnnkit.csv"},
                            {"--plot", "/nonexistent-dir/x.svg"}};
    for (int i = 0; i < 4; ++i) {
        snprintf(args, sizeof args, "--epochs 1 %s %s", bad[i][0], bad[i][1]);
        cr_assert_eq(train(&fx, args), 1, "%s %s: %s", bad[i][0], bad[i][1], out);
        cr_assert_neq(strstr(out, bad[i][1]), NULL, "%s", out);
        cr_assert_eq(strstr(out, "epoch 1"), NULL, "%s %s: trained before failing: %s", bad[i][0],
                     bad[i][1], out);
    }
    struct stat sb;
    cr_assert_eq(stat("/dev/null", &sb), 0);
    cr_assert(S_ISCHR(sb.st_mode));
    /* a symlink to a regular file: that file is replaced, the link stays */
    path_in(&fx, p, sizeof p, "real.ckpt");
    path_in(&fx, link, sizeof link, "link.ckpt");
    write_file(p, "old", 3);
    cr_assert_eq(symlink(p, link), 0);
    path_in(&fx, stale, sizeof stale, ".real.ckpt.cnnkit-tmp.Xy12Zq");
    write_file(stale, "torn", 4);
    snprintf(args, sizeof args, "--epochs 1 --save %s", link);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    cr_assert_neq(strstr(out, "is a symbolic link"), NULL, "%s", out);
    cr_assert_eq(lstat(link, &sb), 0);
    cr_assert(S_ISLNK(sb.st_mode));
    cr_assert_eq(stat(p, &sb), 0);
    cr_assert_gt(sb.st_size, 100, "the checkpoint did not go to the link's file");
    cr_assert_eq(access(stale, F_OK), -1, "the stale temp file %s is still there", stale);
    teardown(&fx);
}

/* Item 5: a log write error is reported (exit 1); a second run on the same log or checkpoint
 * path is refused while the first holds it. */
Test(cli_train, log_errors_and_locks) {
    fixture fx;
    setup(&fx);
    char args[1024], log[160], ck[160], lock[200];
    cr_assert_eq(train(&fx, "--epochs 1 --log /dev/full"), 1, "%s", out);
    cr_assert_neq(strstr(out, "No space left on device"), NULL, "%s", out);
    path_in(&fx, log, sizeof log, "run.csv");
    path_in(&fx, ck, sizeof ck, "run.ckpt");
    write_file(log, "x\n", 2);
    int fd = open(log, O_RDWR);
    cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
    snprintf(args, sizeof args, "--epochs 1 --log %s", log);
    cr_assert_eq(train(&fx, args), 1, "%s", out);
    cr_assert_neq(strstr(out, "in use by another cnnkit run"), NULL, "%s", out);
    close(fd);
    char *kept = t_read_file(log, NULL);
    cr_assert_str_eq(kept, "x\n", "the refused run touched the log");
    free(kept);
    snprintf(lock, sizeof lock, "%s/.run.ckpt.cnnkit-lock", fx.dir);
    fd = open(lock, O_RDWR | O_CREAT, 0644);
    cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
    snprintf(args, sizeof args, "--epochs 1 --save %s", ck);
    cr_assert_eq(train(&fx, args), 1, "%s", out);
    cr_assert_neq(strstr(out, "in use by another cnnkit run"), NULL, "%s", out);
    close(fd);
    cr_assert_eq(train(&fx, args), 0, "%s", out); /* released: it runs */
    teardown(&fx);
}

/* Item 6: val_* only with validation data (the last F of the training data, before shuffling:
 * here exactly the test images, so the final val and test figures agree), test_* once at the
 * end. */
Test(cli_train, validation_columns_are_validation_data) {
    fixture fx;
    setup(&fx);
    char args[1024], log[160];
    path_in(&fx, log, sizeof log, "v.csv");
    snprintf(args, sizeof args, "--epochs 2 --validation-split 0.25 --log %s", log);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    cr_assert_neq(strstr(out, "36 train / 12 test images, 12 validation (the last 25%"), NULL, "%s",
                  out);
    char *csv = t_read_file(log, NULL);
    const char header[] = "epoch,loss,accuracy,val_loss,val_accuracy,test_loss,test_accuracy,"
                          "seconds,images_per_s\n";
    const size_t hl = strlen(header);
    cr_assert_eq(strncmp(csv, header, hl), 0, "%s", csv);
    char r1[256], r2[256];
    cr_assert_eq(sscanf(csv + hl, "%255[^\n]\n%255[^\n]", r1, r2), 2, "%s", csv);
    /* row 1: validation figures, no test figures; row 2: both, equal (same images) */
    double v[9];
    char *q = r2;
    for (int k = 0; k < 9; ++k) {
        v[k] = strtod(q, &q);
        if (*q == ',')
            ++q;
    }
    cr_assert_eq(v[0], 2.0);
    cr_assert_eq(v[3], v[5], "val_loss %g != test_loss %g: not the last 25%% of the data", v[3],
                 v[5]);
    cr_assert_eq(v[4], v[6]);
    cr_assert_neq(strstr(r1, ",,,"), NULL, "row 1 has test figures: %s", r1);
    free(csv);
    /* without validation data no val_* figures; --validation-data reads DIR's t10k files */
    snprintf(args, sizeof args, "--epochs 1 --log %s", log);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    cr_assert_eq(strstr(out, "val_loss"), NULL, "%s", out);
    csv = t_read_file(log, NULL);
    cr_assert_neq(strstr(csv, "\n1,"), NULL);
    cr_assert_neq(strstr(strstr(csv, "\n1,"), ",,,"), NULL, "val columns filled: %s", csv);
    free(csv);
    snprintf(args, sizeof args, "--epochs 1 --validation-data %s", fx.data);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    cr_assert_neq(strstr(out, "12 validation"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "val_loss"), NULL, "%s", out);
    snprintf(args, sizeof args, "--validation-data %s --validation-split 0.2", fx.data);
    cr_assert_eq(train(&fx, args), 2, "%s", out);
    teardown(&fx);
}

/* Item 8: a NUL byte is an error naming its line and column; a model without trainable layers
 * is not trained. Item 9: summary honours --batch. */
Test(cli_train, model_file_errors_and_summary_batch) {
    fixture fx;
    setup(&fx);
    char path[160], args[512];
    path_in(&fx, path, sizeof path, "nul.py");
    const char nul[] = "model = Sequential()\nmodel.add(Conv2D(3, (3, 3), "
                       "input_shape=(8, 8, 1)))\0\nmodel.add(Flatten())\n";
    write_file(path, nul, sizeof nul - 1);
    snprintf(args, sizeof args, "summary %s", path);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 2, "%s", out);
    cr_assert_neq(strstr(out, "line 2, column 52: a NUL byte"), NULL, "%s", out);
    path_in(&fx, path, sizeof path, "zero.py");
    const char zero[] = "model = Sequential()\nmodel.add(MaxPooling2D((2, 2), input_shape=(8, 8, "
                        "1)))\nmodel.add(Flatten())\n";
    write_file(path, zero, strlen(zero));
    snprintf(args, sizeof args, "train %s --data %s", path, fx.data);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 2, "%s", out);
    cr_assert_neq(strstr(out, "no trainable parameters"), NULL, "%s", out);
    snprintf(args, sizeof args, "summary %s --batch 64", fx.model);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 0, "%s", out);
    cr_assert_neq(strstr(out, "Memory for batches of up to 64:"), NULL, "%s", out);
    teardown(&fx);
}

/* The small things: --help for every command, --version, bad values, inapplicable options,
 * --limit above the data, the log path printed, the plot's right panel inside the picture. */
Test(cli_train, options_help_and_small_things) {
    const char *cmds[] = {"summary", "train", "evaluate", "predict", "check", "study"};
    char args[512];
    for (int i = 0; i < 6; ++i) {
        snprintf(args, sizeof args, "%s --help", cmds[i]);
        cr_assert_eq(t_run_cli(args, out, sizeof out), 0, "%s: %s", args, out);
        cr_assert_neq(strstr(out, cmds[i]), NULL);
    }
    cr_assert_eq(t_run_cli("train examples/seed_cnn.py --epochs 2 -h", out, sizeof out), 0, "%s",
                 out);
    cr_assert_neq(strstr(out, "--resume"), NULL, "%s", out);
    cr_assert_eq(t_run_cli("--version", out, sizeof out), 0);
    cr_assert_eq(strncmp(out, "cnnkit 0.", 9), 0, "%s", out);
    const char *bad[] = {"train examples/seed_cnn.py --seed -1",
                         "train examples/seed_cnn.py --seed 18446744073709551616",
                         "train examples/seed_cnn.py --input 28x28x1junk",
                         "train examples/seed_cnn.py --epochs +3",
                         "train examples/seed_cnn.py --weights x.ckpt",
                         "summary examples/seed_cnn.py --epochs 2",
                         "evaluate examples/seed_cnn.py --weights x --save y",
                         "train examples/seed_cnn.py --validation-split 1.5",
                         "train examples/seed_cnn.py --checkpoint-every 2",
                         "train examples/seed_cnn.py --validation-split 0x.8", /* hex float */
                         "train examples/seed_cnn.py --distributed --comm-timeout 0x10",
                         "bogus examples/seed_cnn.py --help"};
    for (int i = 0; i < 12; ++i)
        cr_assert_eq(t_run_cli(bad[i], out, sizeof out), 2, "%s: %s", bad[i], out);
    /* a model without an input shape: said how to give one (was "h, w, c: are 0 ...") */
    char noin[] = "/tmp/cnnkit-noin-XXXXXX";
    const int fd = mkstemp(noin);
    cr_assert_geq(fd, 0);
    const char body[] = "model = Sequential([Conv2D(4, 3), Flatten(), Dense(10)])\n";
    cr_assert_eq(write(fd, body, sizeof body - 1), (ssize_t)(sizeof body - 1));
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "train %s --limit 64", noin);
    cr_assert_eq(t_run_cli(cmd, out, sizeof out), 2, "%s", out);
    cr_assert_neq(strstr(out, "the model has no input shape: give keras.Input(shape=...)"), NULL,
                  "%s", out);
    snprintf(cmd, sizeof cmd, "summary %s --input 28x28x1", noin);
    cr_assert_eq(t_run_cli(cmd, out, sizeof out), 0, "%s", out);
    unlink(noin);
    cr_assert_eq(t_run_cli("train examples/seed_cnn.py --weights x.ckpt", out, sizeof out), 2);
    cr_assert_neq(strstr(out, "--resume"), NULL, "%s", out);

    fixture fx;
    setup(&fx);
    char log[160], plot[160];
    path_in(&fx, log, sizeof log, "s.csv");
    path_in(&fx, plot, sizeof plot, "s.svg");
    /* the plot replaces s.svg whole through a temp file of its own: the user's s.svg.tmp stays,
     * and s.svg keeps its mode */
    char user_tmp[200];
    snprintf(user_tmp, sizeof user_tmp, "%s.tmp", plot);
    write_file(user_tmp, "USERDATA", 8);
    write_file(plot, "old", 3);
    cr_assert_eq(chmod(plot, 0600), 0);
    snprintf(args, sizeof args, "--epochs 2 --limit 1000 --log %s --plot %s", log, plot);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    char *kept = t_read_file(user_tmp, NULL);
    cr_assert_str_eq(kept, "USERDATA");
    free(kept);
    struct stat sb;
    cr_assert_eq(stat(plot, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600, "the plot's mode: %o", sb.st_mode & 0777);
    cr_assert_neq(strstr(out, "--limit 1000: the data set has 48 images"), NULL, "%s", out);
    char want[200];
    snprintf(want, sizeof want, "log %s\n", log);
    cr_assert_neq(strstr(out, want), NULL, "%s", out);
    char *svg = t_read_file(plot, NULL);
    int width = 0, x = 0, w = 0, maxright = 0;
    cr_assert_eq(sscanf(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\"", &width), 1);
    for (const char *r = strstr(svg, "<rect x="); r; r = strstr(r + 1, "<rect x=")) {
        cr_assert_eq(sscanf(r, "<rect x=\"%d\" y=\"%*d\" width=\"%d\"", &x, &w), 2);
        if (x + w > maxright)
            maxright = x + w;
    }
    cr_assert_gt(maxright, 0);
    cr_assert_lt(maxright + 10, width, "a panel ends at %d of %d px", maxright, width);
    free(svg);
    /* one epoch: one point per curve, its axes still no lower than 0 (they went to -0.44) */
    snprintf(args, sizeof args, "--epochs 1 --limit 1000 --plot %s", plot);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    svg = t_read_file(plot, NULL);
    int ticks = 0;
    for (const char *t = strstr(svg, "text-anchor=\"end\">"); t;
         t = strstr(t + 1, "text-anchor=\"end\">"), ++ticks)
        cr_assert_geq(atof(t + strlen("text-anchor=\"end\">")), 0.0, "a negative tick: %.40s", t);
    cr_assert_eq(ticks, 10);
    free(svg);
    teardown(&fx);
}

/* --conv-algo and --math: bad values are usage errors naming the option; on the CPU they are
 * accepted, said to have no effect, and train the same bits as without them. */
Test(cli_train, conv_algo_and_math_options) {
    fixture fx;
    setup(&fx);
    cr_assert_eq(train(&fx, "--conv-algo fast"), 2, "%s", out);
    cr_assert_neq(strstr(out, "--conv-algo must be deterministic or fastest"), NULL, "%s", out);
    cr_assert_eq(train(&fx, "--math fp16"), 2, "%s", out);
    cr_assert_neq(strstr(out, "--math must be fp32 or tf32"), NULL, "%s", out);
    cr_assert_eq(t_run_cli("summary examples/seed_cnn.py --math tf32", out, sizeof out), 2);
    char a[256], b[256], args[600];
    snprintf(a, sizeof a, "%s/a.ckpt", fx.dir);
    snprintf(b, sizeof b, "%s/b.ckpt", fx.dir);
    snprintf(args, sizeof args, "--epochs 1 --save %s", a);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    cr_assert_null(strstr(out, "conv algorithms"), "default settings print nothing: %s", out);
    snprintf(args, sizeof args, "--epochs 1 --save %s --conv-algo fastest --math tf32", b);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    cr_assert_neq(strstr(out, "conv algorithms fastest, math tf32 (no effect on the CPU"), NULL,
                  "%s", out);
    assert_same_file(a, b);
    teardown(&fx);
}

/* --cuda-graph: a bad value is a usage error naming the option; on the CPU on and off are
 * accepted, print nothing about graphs and train the same bits. */
Test(cli_train, cuda_graph_option) {
    fixture fx;
    setup(&fx);
    cr_assert_eq(train(&fx, "--cuda-graph auto"), 2, "%s", out);
    cr_assert_neq(strstr(out, "--cuda-graph must be on or off, got 'auto'"), NULL, "%s", out);
    cr_assert_eq(t_run_cli("evaluate examples/seed_cnn.py --cuda-graph off", out, sizeof out), 2);
    char a[256], b[256], args[600];
    snprintf(a, sizeof a, "%s/a.ckpt", fx.dir);
    snprintf(b, sizeof b, "%s/b.ckpt", fx.dir);
    snprintf(args, sizeof args, "--epochs 1 --save %s --cuda-graph on", a);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    cr_assert_null(strstr(out, "cuda graph"), "the CPU has no graphs to report: %s", out);
    snprintf(args, sizeof args, "--epochs 1 --save %s --cuda-graph off", b);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    assert_same_file(a, b);
    teardown(&fx);
}

/* --precision bf16 trains on the CPU and says so in the header (fp32 runs print as before); its
 * checkpoint holds fp32 weights that an fp32 evaluate reads, and a different one from fp32's. */
Test(cli_train, precision_bf16) {
    fixture fx;
    setup(&fx);
    char a[256], b[256], args[600];
    snprintf(a, sizeof a, "%s/a.ckpt", fx.dir);
    snprintf(b, sizeof b, "%s/b.ckpt", fx.dir);
    snprintf(args, sizeof args, "--epochs 1 --save %s", a);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    cr_assert_null(strstr(out, "precision"), "%s", out);
    snprintf(args, sizeof args, "--epochs 1 --save %s --precision bf16", b);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    cr_assert_neq(strstr(out, ", seed 1, precision bf16\n"), NULL, "%s", out);
    size_t na, nb;
    char *pa = t_read_file(a, &na), *pb = t_read_file(b, &nb);
    cr_assert(na == nb && memcmp(pa, pb, na) != 0, "bf16 training must change the weights' bits");
    free(pa);
    free(pb);
    snprintf(args, sizeof args, "evaluate %s --data %s --weights %s --device cpu", fx.model,
             fx.data, b);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 0, "%s", out);
    teardown(&fx);
}

/* evaluate and predict read every test image as the model's input: images of another shape are
 * refused naming both shapes (exit 2), not read across image boundaries (or past the end). */
Test(cli_train, evaluate_and_predict_check_the_image_shape) {
    fixture fx;
    setup(&fx);
    char args[512];
    for (int predict = 0; predict < 2; ++predict) {
        snprintf(args, sizeof args, "%s tests/data/keras/func.keras --data %s --device cpu%s",
                 predict ? "predict" : "evaluate", fx.data, predict ? " --count 3" : "");
        cr_assert_eq(t_run_cli(args, out, sizeof out), 2, "%s", out);
        cr_assert_not_null(strstr(out, "the test images are 8x8x1, the model input is 8x8x2"), "%s",
                           out);
    }
    teardown(&fx);
}

/* What a demanding user's mistakes get (an audit of the CLI): usage errors before anything runs,
 * naming the argument, with nothing written; an interrupted run leaves an existing log as it
 * was when no epoch finished; a run stopped after its very last step ends as a finished run. */
Test(cli_train, mistakes_are_refused_before_training) {
    fixture fx;
    setup(&fx);
    char args[1024], p[160], q[160];
    /* version takes nothing (it ran the whole order study on the model given) */
    cr_assert_eq(t_run_cli("version examples/seed_cnn.py", out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "version takes no argument"), "%s", out);
    /* --input: three integers in range (sscanf wrapped 4294967324 to 28) */
    const char *bad_input[] = {"4294967324x4294967324x4294967297",
                               "99999999999x1x1",
                               "28x 28x1",
                               "28x28",
                               "28x28x1x",
                               "0x28x1"};
    for (size_t i = 0; i < sizeof bad_input / sizeof *bad_input; ++i) {
        snprintf(args, sizeof args, "summary %s --input '%s'", fx.model, bad_input[i]);
        cr_assert_eq(t_run_cli(args, out, sizeof out), 2, "%s: %s", bad_input[i], out);
        cr_assert(strstr(out, "--input needs HxWxC"), "%s", out);
    }
    /* empty file names, a legacy .h5 to write, two outputs on one file, the model overwritten */
    path_in(&fx, p, sizeof p, "x.out");
    const char *refused[][2] = {{"--save ''", "--save needs a file name"},
                                {"--log ''", "--log needs a file name"},
                                {"--save out.h5", "the legacy .h5 is read only"}};
    for (int i = 0; i < 3; ++i) {
        cr_assert_eq(train(&fx, refused[i][0]), 2, "%s: %s", refused[i][0], out);
        cr_assert(strstr(out, refused[i][1]) && !strstr(out, "epoch 1"), "%s", out);
    }
    snprintf(args, sizeof args, "--save %s --log %s", p, p);
    cr_assert_eq(train(&fx, args), 2, "%s", out);
    cr_assert(strstr(out, "--save and --log are the same file"), "%s", out);
    snprintf(args, sizeof args, "--save %s", fx.model);
    cr_assert_eq(train(&fx, args), 2, "%s", out);
    cr_assert(strstr(out, "MODEL and --save are the same file"), "%s", out);
    cr_assert_eq(access(p, F_OK), -1, "a refused run wrote %s", p);
    /* nor an input of the run: a data file, the checkpoint resumed (but by --save), --model */
    char img[200], ck[160];
    snprintf(img, sizeof img, "%s/train-images-idx3-ubyte", fx.data);
    size_t n0;
    char *before = t_read_file(img, &n0);
    snprintf(args, sizeof args, "--save %s", img);
    cr_assert_eq(train(&fx, args), 2, "%s", out);
    cr_assert(strstr(out, "is --data's file") && strstr(out, "an input of the run"), "%s", out);
    path_in(&fx, ck, sizeof ck, "r.ckpt");
    snprintf(args, sizeof args, "--save %s", ck);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    snprintf(args, sizeof args, "--epochs 2 --resume %s --plot %s", ck, ck);
    cr_assert_eq(train(&fx, args), 2, "%s", out);
    cr_assert(strstr(out, "--plot") && strstr(out, "is the --resume checkpoint"), "%s", out);
    snprintf(args, sizeof args, "convert %s %s --model %s", ck, fx.model, fx.model);
    cli_says(args, 2, "is the file of --model");
    /* model text as A: it has no weights (it was called "weights only") */
    snprintf(args, sizeof args, "convert %s %s.keras", fx.model, ck);
    cli_says(args, 2, "is model text, with no weights to convert");
    size_t n1;
    char *after = t_read_file(img, &n1);
    cr_assert(n0 == n1 && !memcmp(before, after, n0), "the data file changed");
    free(before);
    free(after);
    char *text = t_read_file(fx.model, &n1);
    cr_assert(n1 == strlen(MODEL) && !memcmp(text, MODEL, n1), "the model file changed");
    free(text);
    snprintf(args, sizeof args, "--epochs 2 --resume %s --save %s", ck, ck); /* continues it */
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    /* an option's value left out: the next option is not taken for it */
    cr_assert_eq(train(&fx, "--log --profile"), 2, "%s", out);
    cr_assert(strstr(out, "--log needs a value, found the option '--profile'"), "%s", out);
    /* check's options of --measure without it: refused, not ignored */
    snprintf(args, sizeof args, "check %s --data /nonexistent --batches 7", fx.model);
    cli_says(args, 2, "--data is an option of --measure, which is not given");
    /* results that could not be written to stdout (a full disk): exit 1, said on stderr */
    snprintf(args, sizeof args, "summary %s > /dev/full", fx.model);
    cli_says(args, 1, "writing the results to standard output failed");
    /* the test set is checked before training: labels the model has no class for */
    path_in(&fx, q, sizeof q, "two.py");
    char two[sizeof MODEL + 8];
    snprintf(two, sizeof two, "%s", MODEL);
    two[strlen(two) - strlen("3, activation='softmax'))\n")] = '2';
    write_file(q, two, strlen(two));
    snprintf(args, sizeof args, "train %s --data %s --batch 8 --device cpu", q, fx.data);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "labels hold 2") && strstr(out, "the model has 2 classes") &&
                  !strstr(out, "epoch 1"),
              "%s", out);
    /* an interrupt before any epoch ended: the existing log is kept whole */
    path_in(&fx, p, sizeof p, "keep.csv");
    write_file(p, "epoch,x\n1,2\n", 12);
    path_in(&fx, q, sizeof q, "k.ckpt"); /* the interrupted run's checkpoint: in fx's folder */
    snprintf(args, sizeof args, "--epochs 2 --log %s --save %s", p, q);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "train %s --data %s --batch 8 --device cpu %s", fx.model, fx.data,
             args);
    char env_cmd[1500];
    snprintf(env_cmd, sizeof env_cmd, "CNNKIT_TEST_INTERRUPT=2 '%s' %s 2>&1", CNNKIT_CLI_PATH, cmd);
    int rc = system(env_cmd);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 130, "exit %d", rc);
    char *kept = t_read_file(p, NULL);
    cr_assert_str_eq(kept, "epoch,x\n1,2\n");
    free(kept);
    /* stopped after the last step of the last epoch: tested and saved as a finished run, exit
     * 130 (the hint to resume would have asked for an epoch already done) */
    path_in(&fx, q, sizeof q, "end.ckpt");
    snprintf(env_cmd, sizeof env_cmd,
             "CNNKIT_TEST_INTERRUPT=6 '%s' train %s --data %s --batch 8 --device cpu --save %s "
             "> %s/end.txt 2>&1",
             CNNKIT_CLI_PATH, fx.model, fx.data, q, fx.dir);
    rc = system(env_cmd);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 130, "exit %d", rc);
    snprintf(p, sizeof p, "%s/end.txt", fx.dir);
    char *end = t_read_file(p, NULL);
    cr_assert(strstr(end, "test accuracy") && strstr(end, "saved") && !strstr(end, "--resume"),
              "%s", end);
    free(end);
    /* the run's lock is a hidden file of its own: a user's "u.ckpt.lock" was removed at the end */
    path_in(&fx, p, sizeof p, "u.ckpt.lock");
    write_file(p, "USERDATA", 8);
    path_in(&fx, q, sizeof q, "u.ckpt");
    snprintf(args, sizeof args, "--save %s", q);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    char *user = t_read_file(p, NULL);
    cr_assert_str_eq(user, "USERDATA");
    free(user);
    /* a resume on other images of the same count (--pixels raw): exit 2 naming the options, as
     * for --batch and --seed, not the fit's own refusal (exit 1) */
    snprintf(args, sizeof args, "--epochs 2 --resume %s --pixels raw", q);
    cr_assert_eq(train(&fx, args), 2, "%s", out);
    cr_assert(strstr(out, "trained on other images or labels") && strstr(out, "--pixels"), "%s",
              out);
    /* evaluate: labels the model has no class for are a usage error, as in train */
    path_in(&fx, p, sizeof p, "badlabel");
    cr_assert_eq(mkdir(p, 0755), 0);
    unsigned char bpix[12 * 64], blab[12];
    make_images(12, bpix, blab, 9);
    blab[3] = 7;
    write_idx(p, "t10k", 12, bpix, blab);
    snprintf(args, sizeof args, "evaluate %s --weights %s --data %s", fx.model, q, p);
    cli_says(args, 2, "the test labels hold 7 (sample 3)");
    /* --input never replaces a shape the model declares (8x8x1 here) */
    snprintf(args, sizeof args, "summary %s --input 4x4x1", fx.model);
    cli_says(args, 2, "--input 4x4x1, but the model's input shape is 8x8x1");
    snprintf(args, sizeof args, "summary %s --input 8x8x1", fx.model);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 0, "%s", out);
    /* a log written in place takes any name the folder takes: no temp name beside it */
    char longname[300];
    int at = snprintf(longname, sizeof longname, "%s/", fx.dir);
    memset(longname + at, 'x', 240);
    snprintf(longname + at + 240, sizeof longname - (size_t)at - 240, ".csv");
    snprintf(args, sizeof args, "--log %s", longname);
    cr_assert_eq(train(&fx, args), 0, "%s", out);
    cr_assert_eq(access(longname, F_OK), 0);
    teardown(&fx);
}
