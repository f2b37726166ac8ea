/* cnnkit: command-line front end. Exit codes: 0 ok, 1 runtime failure, 2 usage or model file,
 * 128 + signal when cnnkit train is interrupted (it saves a checkpoint first). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* One usage block per command: `cnnkit --help` prints them all, `cnnkit CMD --help` its own. */
static const char *const USAGE_CMD[][2] = {
    {"summary", "  summary  MODEL [--input HxWxC] [--batch B]\n"
                "           the Keras table, the execution plan and the memory for batches of\n"
                "           B (default 128, train's default)\n"},
    {"train",
     "  train    MODEL [--data fashion-mnist|DIR] [--epochs N] [--batch B] [--limit N]\n"
     "           [--device auto|cpu|cuda] [--seed S] [--save FILE] [--log FILE.csv]\n"
     "           [--plot FILE.svg] [--input HxWxC] [--profile]\n"
     "           [--checkpoint-every N] [--resume FILE]\n"
     "           [--validation-split F | --validation-data DIR] [--threads N]\n"
     "           [--conv-algo deterministic|fastest] [--math fp32|tf32]\n"
     "           [--precision fp32|tf32|bf16] (docs/precision.md; bf16 on a GPU needs sm_80+)\n"
     "           [--cuda-graph on|off]\n"
     "           [--distributed [--comm-timeout S]] [--pixels unit|raw]\n"
     "           --epochs N: the total, also with --resume (default 1)\n"
     "           --save: the checkpoint, written each epoch (--checkpoint-every N: every N\n"
     "           epochs, 0: only at the end) and on SIGINT/SIGTERM (exit 130/143)\n"
     "           --resume FILE: continue the run that saved FILE (same --batch, --seed,\n"
     "           --data, --limit, --validation-split): the same bits as never stopped\n"
     "           --validation-split F: hold out the last F of the training data (Keras);\n"
     "           --validation-data DIR: DIR's t10k-* files; val_* columns come from them,\n"
     "           test_* from the test set, once at the end\n"
     "           --profile: time per planned node (forward, backward) and % of step\n"
     "           --threads N: CPU threads (default: all cores; on a busy machine see the\n"
     "           README, 'Busy machines')\n"
     "           --conv-algo fastest: on a GPU, cuDNN algorithms timed at build, not\n"
     "           bit-reproducible (default deterministic); --math tf32: TF32 tensor cores\n"
     "           for conv and dense (default fp32); both no-ops on the CPU\n"
     "           --cuda-graph off: on a GPU, every step launched kernel by kernel (default\n"
     "           on: each batch size's step captured once as a CUDA graph and replayed, the\n"
     "           same bits); a no-op on the CPU\n"
     "           --distributed: under `mpirun -np N`, data-parallel on N ranks, CPUs over\n"
     "           MPI or one GPU each over NCCL (docs/distributed.md): --batch is the global\n"
     "           batch, each rank trains on its share; rank 0 prints and writes --save,\n"
     "           --log, --plot\n"
     "           --comm-timeout S: a rank waits S seconds at most for the others in a\n"
     "           collective (default 300, 0: for ever), then the job ends, exit non-zero\n"},
    {"evaluate",
     "  evaluate MODEL --weights FILE [--data fashion-mnist|DIR] [--input HxWxC]\n"
     "           [--batch B] [--device ...] [--threads N] [--precision ...]\n"
     "           [--pixels unit|raw] [--distributed [--comm-timeout S]]\n"
     "           --distributed: under `mpirun -np N`, each rank evaluates its share of\n"
     "           the test set; rank 0 prints the whole set's figures\n"},
    {"predict", "  predict  MODEL --weights FILE [--data ...] [--count N] [--input HxWxC]\n"
                "           [--batch B] [--device ...] [--threads N] [--precision ...]\n"
                "           [--pixels unit|raw] [--distributed [--comm-timeout S]]: each rank\n"
                "           predicts its share, rank 0 prints them all in order\n"},
    {"check", "  check    MODEL [--json] [--input HxWxC]   the shape inference of build and the\n"
              "           layer-order diagnostics; exit 0 clean, 1 warnings or errors, 2 bad\n"
              "           model file; [--pixels unit|raw]: the data the model will get\n"
              "           (CK018: a Rescaling(1./255) on data already in [0, 1])\n"
              "           [--measure [--data ...] [--batches N] [--batch B] [--limit N]\n"
              "           [--seed S] [--device ...]]: also train N batches (default 20) and\n"
              "           measure each BN's variance shift and each dropout's zeroed fraction\n"
              "           after the next pooling\n"},
    {"study", "  study    MODEL [--data ...] [--seeds 5] [--epochs N] [--batch B] [--limit N]\n"
              "           [--test-limit N] [--variants a,b,...] [--csv FILE] [--svg FILE]\n"
              "           [--measure-batches N] [--bn-momentum M] [--device ...] [--quick]\n"
              "           [--pixels unit|raw] [--seed S] (the first seed) [--input HxWxC]\n"
              "           the order study: each Conv-block order trained for several\n"
              "           seeds (default 5 seeds, 3 epochs, batch 128, all data; --quick:\n"
              "           3 seeds, 1 epoch, batch 16, 4000 train / 2000 test images, BN\n"
              "           momentum 0.9, ~6 min on 2 CPU cores).\n"
              "           Variants of a stack (default all): original, asker,\n"
              "           bn-after-relu, dropout-before-pool, spatial-dropout,\n"
              "           dropout-after-last-bn. Of a post-activation ResNet graph (default\n"
              "           all; He et al. 2016 Fig. 4): original, bn-after-add,\n"
              "           relu-before-add, relu-preact, full-preact\n"},
    {"convert", "  convert  A B [--model MODEL]   between .keras, .weights.h5 and cnnkit\n"
                "           checkpoints; A without its own architecture (a checkpoint or a\n"
                "           .weights.h5) needs --model\n"},
    {"version", "  version  cnnkit's version; CUDA runtime, driver, cuDNN, cuBLAS and GPU 0\n"
                "           (exit 1 when no GPU is usable)\n"},
};
#define N_CMDS ((int)(sizeof USAGE_CMD / sizeof USAGE_CMD[0]))

/* A number written in decimal (strtod also reads hex floats, "inf" and "nan"). */
static int decimal(const char *v) {
    return *v && strspn(v, "0123456789.eE+-") == strlen(v);
}

static int cmd_index(const char *cmd) {
    for (int i = 0; i < N_CMDS; ++i)
        if (cmd && !strcmp(cmd, USAGE_CMD[i][0]))
            return i;
    return -1;
}

static void usage(FILE *f, const char *cmd) {
    const int only = cmd_index(cmd);
    fprintf(f, "usage: cnnkit <command> MODEL [options]   (cnnkit <command> --help, "
               "cnnkit --version)\n\ncommands:\n");
    for (int i = 0; i < N_CMDS; ++i)
        if (only < 0 || i == only)
            fputs(USAGE_CMD[i][1], f);
    fprintf(f, "\n"
               "MODEL is a Keras model in Python syntax, Sequential (examples/seed_cnn.py) or\n"
               "functional (examples/resnet20_v1.py), or a Keras file: a .keras archive or a\n"
               "legacy .h5 model (its weights included).\n"
               "--save and --weights take a cnnkit checkpoint, a .keras or a .weights.h5 file.\n"
               "DIR holds MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...); without\n"
               "--data: $CNNKIT_DATA, else /usr/share/datasets/fashion-mnist, which is also what\n"
               "--data fashion-mnist names.\n"
               "--pixels: the images as the model gets them: unit (the default) divides the pixel\n"
               "bytes by 255, into [0, 1]; raw gives them as stored, 0..255 (for a Keras model\n"
               "that starts with Rescaling(1./255) and so divides by 255 itself).\n");
}

/* Which commands take which option: anything else is an error, never ignored. */
/* bit i: USAGE_CMD[i] (version takes no option) */
enum { SUMMARY = 1, TRAIN = 2, EVALUATE = 4, PREDICT = 8, CHECK = 16, STUDY = 32, CONVERT = 64 };
typedef struct opt_spec {
    const char *name;
    int cmds;
    int has_value;
} opt_spec;
static const opt_spec OPTS[] = {
    {"--data", TRAIN | EVALUATE | PREDICT | CHECK | STUDY, 1},
    {"--epochs", TRAIN | STUDY, 1},
    {"--batch", SUMMARY | TRAIN | EVALUATE | PREDICT | CHECK | STUDY, 1},
    {"--limit", TRAIN | CHECK | STUDY, 1},
    {"--device", TRAIN | EVALUATE | PREDICT | CHECK | STUDY, 1},
    {"--seed", TRAIN | CHECK | STUDY, 1},
    {"--input", SUMMARY | TRAIN | EVALUATE | PREDICT | CHECK | STUDY, 1},
    {"--save", TRAIN, 1},
    {"--log", TRAIN, 1},
    {"--plot", TRAIN, 1},
    {"--profile", TRAIN, 0},
    {"--resume", TRAIN, 1},
    {"--checkpoint-every", TRAIN, 1},
    {"--validation-split", TRAIN, 1},
    {"--validation-data", TRAIN, 1},
    {"--threads", TRAIN | EVALUATE | PREDICT, 1},
    {"--conv-algo", TRAIN, 1},
    {"--math", TRAIN, 1},
    {"--cuda-graph", TRAIN, 1},
    {"--precision", TRAIN | EVALUATE | PREDICT, 1},
    {"--distributed", TRAIN | EVALUATE | PREDICT, 0},
    {"--comm-timeout", TRAIN | EVALUATE | PREDICT, 1},
    {"--weights", EVALUATE | PREDICT, 1},
    {"--count", PREDICT, 1},
    {"--json", CHECK, 0},
    {"--measure", CHECK, 0},
    {"--batches", CHECK, 1},
    {"--seeds", STUDY, 1},
    {"--variants", STUDY, 1},
    {"--csv", STUDY, 1},
    {"--svg", STUDY, 1},
    {"--quick", STUDY, 0},
    {"--test-limit", STUDY, 1},
    {"--measure-batches", STUDY, 1},
    {"--bn-momentum", STUDY, 1},
    {"--model", CONVERT, 1},
    {"--pixels", TRAIN | EVALUATE | PREDICT | CHECK | STUDY, 1},
};

/* A decimal integer in [min, 1e9], digits only (no sign, no spaces, nothing after). */
static int parse_int(const char *s, int *out, int min) {
    if (!isdigit((unsigned char)s[0]))
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > 1000000000L)
        return -1;
    *out = (int)v;
    return 0;
}

/* "HxWxC": three integers in [1, 1e9] (parse_int's range; sscanf's %d overflow is undefined),
 * digits only between the x's. */
static int parse_shape(const char *s, int *h, int *w, int *c) {
    int *dst[3] = {h, w, c};
    char part[32];
    for (int k = 0; k < 3; ++k) {
        const char *x = k < 2 ? strchr(s, 'x') : s + strlen(s);
        if (!x || x == s || (size_t)(x - s) >= sizeof part)
            return -1;
        memcpy(part, s, (size_t)(x - s));
        part[x - s] = '\0';
        if (parse_int(part, dst[k], 1))
            return -1;
        s = x + 1;
    }
    return 0;
}

/* Options of the command line; the model path is the first argument that is not an option (so
 * "check --measure MODEL" and "check MODEL --measure" both work). Options of another command,
 * unknown options and bad values are usage errors. */
static int parse_args(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    o->epochs = -1;
    o->batch = 128;
    o->count = 5;
    o->device = "auto";
    o->seed = 1;
    o->batches = 20;
    o->checkpoint_every = -1;
    o->ranks = 1;
    o->comm_timeout = -1.0;
    if (argc < 2)
        return -1;
    o->cmd = argv[1];
    const int ci = cmd_index(o->cmd);
    const char *measure_only = NULL; /* check: an option of --measure, given */
    if (ci < 0) {
        fprintf(stderr, "cnnkit: unknown command '%s'\n", o->cmd);
        return -1;
    }
    const int bit = 1 << ci;
    if (!strcmp(o->cmd, "version")) { /* "version" alone is answered in main */
        fprintf(stderr, "cnnkit: version takes no argument, got '%s'\n", argv[2]);
        return -1;
    }
    for (int i = 2; i < argc; ++i) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-' || !a[1]) {
            if (o->model && bit == CONVERT && !o->output) {
                o->output = a;
                continue;
            }
            if (o->model) {
                fprintf(stderr, "cnnkit: %s: unexpected argument '%s'\n", o->cmd, a);
                return -1;
            }
            o->model = a;
            continue;
        }
        const opt_spec *spec = NULL;
        for (size_t k = 0; k < sizeof OPTS / sizeof OPTS[0]; ++k)
            if (!strcmp(a, OPTS[k].name))
                spec = &OPTS[k];
        if (!spec) {
            fprintf(stderr, "cnnkit: %s: unknown option '%s'\n", o->cmd, a);
            return -1;
        }
        if (!(spec->cmds & bit)) {
            if (!strcmp(a, "--weights") && bit == TRAIN)
                fprintf(stderr, "cnnkit: train: --weights is for evaluate and predict; to "
                                "continue a run from its checkpoint use --resume FILE\n");
            else
                fprintf(stderr,
                        "cnnkit: %s: option '%s' is not one of this command's (cnnkit %s "
                        "--help)\n",
                        o->cmd, a, o->cmd);
            return -1;
        }
        if (spec->has_value) {
            if (!v) {
                fprintf(stderr, "cnnkit: %s needs a value\n", a);
                return -1;
            }
            /* "--log --profile": the value was left out, not a file named --profile (such a
             * file can be given as ./--profile) */
            if (!strncmp(v, "--", 2)) {
                fprintf(stderr, "cnnkit: %s needs a value, found the option '%s'\n", a, v);
                return -1;
            }
            ++i;
        }
        /* what check does only with --measure */
        if (bit == CHECK &&
            (!strcmp(a, "--data") || !strcmp(a, "--batches") || !strcmp(a, "--batch") ||
             !strcmp(a, "--limit") || !strcmp(a, "--seed") || !strcmp(a, "--device")))
            measure_only = measure_only ? measure_only : a;
        if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "--measure")) {
            o->measure = 1;
        } else if (!strcmp(a, "--profile")) {
            o->profile = 1;
        } else if (!strcmp(a, "--distributed")) {
            o->distributed = 1;
        } else if (!strcmp(a, "--quick")) {
            o->quick = 1;
        } else if (!strcmp(a, "--data")) {
            o->data = v;
        } else if (!strcmp(a, "--save")) {
            o->save = v;
        } else if (!strcmp(a, "--log")) {
            o->log = v;
        } else if (!strcmp(a, "--plot")) {
            o->plot = v;
        } else if (!strcmp(a, "--weights")) {
            o->weights = v;
        } else if (!strcmp(a, "--model")) {
            o->arch = v;
        } else if (!strcmp(a, "--resume")) {
            o->resume = v;
        } else if (!strcmp(a, "--validation-data")) {
            o->val_data = v;
        } else if (!strcmp(a, "--variants")) {
            o->variants = v;
        } else if (!strcmp(a, "--csv")) {
            o->csv = v;
        } else if (!strcmp(a, "--svg")) {
            o->svg = v;
        } else if (!strcmp(a, "--device")) {
            o->device = v;
            if (strcmp(v, "auto") && strcmp(v, "cpu") && strcmp(v, "cuda")) {
                fprintf(stderr, "cnnkit: --device must be auto, cpu or cuda, got '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--conv-algo")) {
            if (!strcmp(v, "deterministic") || !strcmp(v, "fastest")) {
                o->conv_algo =
                    !strcmp(v, "fastest") ? CK_CONV_ALGO_FASTEST : CK_CONV_ALGO_DETERMINISTIC;
            } else {
                fprintf(stderr, "cnnkit: --conv-algo must be deterministic or fastest, got '%s'\n",
                        v);
                return -1;
            }
        } else if (!strcmp(a, "--precision")) {
            if (!strcmp(v, "fp32") || !strcmp(v, "tf32") || !strcmp(v, "bf16")) {
                o->precision = 1 + (!strcmp(v, "fp32")   ? CK_PRECISION_FP32
                                    : !strcmp(v, "tf32") ? CK_PRECISION_TF32
                                                         : CK_PRECISION_BF16);
            } else {
                fprintf(stderr, "cnnkit: --precision must be fp32, tf32 or bf16, got '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--pixels")) {
            if (!strcmp(v, "unit") || !strcmp(v, "raw")) {
                o->raw_pixels = !strcmp(v, "raw");
            } else {
                fprintf(stderr, "cnnkit: --pixels must be unit or raw, got '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--cuda-graph")) {
            if (!strcmp(v, "on") || !strcmp(v, "off")) {
                o->cuda_graph_off = !strcmp(v, "off");
            } else {
                fprintf(stderr, "cnnkit: --cuda-graph must be on or off, got '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--math")) {
            if (!strcmp(v, "fp32") || !strcmp(v, "tf32")) {
                o->math = !strcmp(v, "tf32") ? CK_MATH_TF32 : CK_MATH_STRICT_FP32;
            } else {
                fprintf(stderr, "cnnkit: --math must be fp32 or tf32, got '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--checkpoint-every")) {
            if (parse_int(v, &o->checkpoint_every, 0)) {
                fprintf(stderr, "cnnkit: %s needs an integer >= 0 (epochs), got '%s'\n", a, v);
                return -1;
            }
        } else if (!strcmp(a, "--epochs") || !strcmp(a, "--batch") || !strcmp(a, "--limit") ||
                   !strcmp(a, "--count") || !strcmp(a, "--batches") || !strcmp(a, "--seeds") ||
                   !strcmp(a, "--test-limit") || !strcmp(a, "--measure-batches") ||
                   !strcmp(a, "--threads")) {
            int *dst = !strcmp(a, "--epochs")            ? &o->epochs
                       : !strcmp(a, "--batch")           ? &o->batch
                       : !strcmp(a, "--limit")           ? &o->limit
                       : !strcmp(a, "--batches")         ? &o->batches
                       : !strcmp(a, "--seeds")           ? &o->seeds
                       : !strcmp(a, "--test-limit")      ? &o->test_limit
                       : !strcmp(a, "--measure-batches") ? &o->measure_batches
                       : !strcmp(a, "--threads")         ? &o->threads
                                                         : &o->count;
            if (parse_int(v, dst, 1)) {
                fprintf(stderr, "cnnkit: %s needs a positive integer, got '%s'\n", a, v);
                return -1;
            }
            if (dst == &o->batch)
                o->batch_given = 1;
        } else if (!strcmp(a, "--bn-momentum") || !strcmp(a, "--validation-split")) {
            char *end;
            const double mv = strtod(v, &end);
            if (*end || !decimal(v) || !(mv > 0.0 && mv < 1.0)) {
                fprintf(stderr, "cnnkit: %s needs a number in (0, 1), got '%s'\n", a, v);
                return -1;
            }
            if (!strcmp(a, "--bn-momentum"))
                o->bn_momentum = (float)mv;
            else
                o->val_split = mv;
        } else if (!strcmp(a, "--comm-timeout")) {
            char *end;
            const double t = strtod(v, &end);
            if (*end || !decimal(v) || !(t >= 0.0 && t <= 1e9)) {
                fprintf(stderr,
                        "cnnkit: --comm-timeout needs seconds >= 0 (0: no timeout), got '%s'\n", v);
                return -1;
            }
            o->comm_timeout = t;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            o->seed = strtoull(v, &end, 10);
            if (!isdigit((unsigned char)v[0]) || *end || errno) {
                fprintf(stderr, "cnnkit: --seed needs an integer in [0, 2^64 - 1], got '%s'\n", v);
                return -1;
            }
            o->seed_given = 1;
        } else if (!strcmp(a, "--input")) {
            if (parse_shape(v, &o->in_h, &o->in_w, &o->in_c)) {
                fprintf(stderr, "cnnkit: --input needs HxWxC (e.g. 28x28x1), got '%s'\n", v);
                return -1;
            }
        }
    }
    if (!o->model) {
        fprintf(stderr, "cnnkit: %s: no MODEL given\n", o->cmd);
        return -1;
    }
    if (measure_only && !o->measure) {
        fprintf(stderr, "cnnkit: check: %s is an option of --measure, which is not given\n",
                measure_only);
        return -1;
    }
    /* files: an empty name, or a Keras name the writer would refuse after training, are usage
     * errors now */
    const struct {
        const char *opt, *path;
        int keras_out; /* written by save_model_file */
    } files[] = {{"--save", o->save, 1},
                 {"B", o->output, 1},
                 {"--log", o->log, 0},
                 {"--plot", o->plot, 0},
                 {"--csv", o->csv, 0},
                 {"--svg", o->svg, 0},
                 {"--data", o->data, 0},
                 {"--weights", o->weights, 0},
                 {"--resume", o->resume, 0},
                 {"MODEL", o->model, 0},
                 {"--validation-data", o->val_data, 0}};
    for (size_t k = 0; k < sizeof files / sizeof *files; ++k) {
        const char *p = files[k].path;
        if (p && !p[0]) {
            fprintf(stderr, "cnnkit: %s: %s needs a file name, got ''\n", o->cmd, files[k].opt);
            return -1;
        }
        if (p && files[k].keras_out && ends_with(p, ".h5") && !ends_with(p, ".weights.h5")) {
            fprintf(stderr,
                    "cnnkit: %s: %s %s: a Keras file is written as .keras (the model) or "
                    ".weights.h5 (its weights); the legacy .h5 is read only\n",
                    o->cmd, files[k].opt, p);
            return -1;
        }
    }
    if (o->comm_timeout >= 0.0 && !o->distributed) {
        fprintf(stderr, "cnnkit: %s: --comm-timeout is for --distributed runs\n", o->cmd);
        return -1;
    }
    return 0;
}

static int run(int *argcp, char ***argvp, opts *op);

int main(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))) {
        printf("cnnkit %d.%d.%d\n", CNNKIT_VERSION_MAJOR, CNNKIT_VERSION_MINOR,
               CNNKIT_VERSION_PATCH);
        return 0;
    }
    if (argc == 2 && (!strcmp(argv[1], "version"))) {
        char info[640];
        const ck_status st = ck_cuda_describe(0, info, sizeof info);
        printf("cnnkit %d.%d.%d\n%s\n", ck_version() / 10000, ck_version() / 100 % 100,
               ck_version() % 100, info);
        return st == CK_STATUS_SUCCESS ? 0 : EXIT_RUNTIME;
    }
    /* -h / --help anywhere: the usage of the command named first (all commands without one) */
    for (int i = 1; i < argc; ++i)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") ||
            (i == 1 && !strcmp(argv[i], "help"))) {
            if (i > 1 && argv[1][0] != '-' && cmd_index(argv[1]) < 0) {
                fprintf(stderr, "cnnkit: unknown command '%s'\n", argv[1]);
                usage(stderr, NULL);
                return EXIT_USAGE;
            }
            usage(stdout, i > 1 ? argv[1] : NULL);
            return 0;
        }
    opts o;
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr, argc >= 2 ? argv[1] : NULL);
        return EXIT_USAGE;
    }
    int rc = run(&argc, &argv, &o);
    /* the results go to stdout: a script must learn when they were not written (a full disk) */
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "cnnkit: %s: writing the results to standard output failed: %s\n", o.cmd,
                strerror(errno ? errno : EIO));
        if (!rc)
            rc = EXIT_RUNTIME;
    }
    return rc;
}

static int run(int *argcp, char ***argvp, opts *op) {
    opts o = *op;
    if (!strcmp(o.cmd, "summary"))
        return cmd_summary(&o);
    if (o.distributed) { /* train, evaluate, predict */
        /* CPU ranks over MPI; GPU ranks over NCCL (auto: GPUs when there are and NCCL is
         * built) */
        const int train = !strcmp(o.cmd, "train"); /* evaluate and predict sum over MPI */
        if (train && !strcmp(o.device, "cuda") && !ck_comm_nccl_available()) {
            fprintf(stderr,
                    "cnnkit: %s: --distributed --device cuda needs NCCL, and this build of "
                    "cnnkit has none (configure with -DCNNKIT_NCCL=ON or AUTO with the CUDA "
                    "toolkit); give --device cpu\n",
                    o.cmd);
            return EXIT_USAGE;
        }
        if (!strcmp(o.device, "auto"))
            o.device = ck_cuda_available() && (!train || ck_comm_nccl_available()) ? "cuda" : "cpu";
        int rc = dist_start(argcp, argvp, &o);
        if (rc)
            return rc;
        rc = train ? cmd_train(&o) : cmd_eval_predict(&o, !strcmp(o.cmd, "predict"));
        dist_stop();
        return rc;
    }
    if (!strcmp(o.cmd, "train"))
        return cmd_train(&o);
    if (!strcmp(o.cmd, "evaluate"))
        return cmd_eval_predict(&o, 0);
    if (!strcmp(o.cmd, "predict"))
        return cmd_eval_predict(&o, 1);
    if (!strcmp(o.cmd, "check"))
        return cmd_check(&o);
    if (!strcmp(o.cmd, "convert"))
        return cmd_convert(&o);
    if (!strcmp(o.cmd, "study"))
        return cmd_study(&o);
    usage(stderr, o.cmd); /* no command is left: parse_args knows them all */
    return EXIT_USAGE;
}
