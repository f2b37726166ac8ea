/* cnnkit command-line tool: what its files share. main.c parses the options and dispatches to
 * the commands (cmd_NAME.c), which load through common.c; files.c and plot_svg.c write outputs.
 * Exit codes: 0 ok, 1 runtime failure, 2 usage or model file, 128 + signal when interrupted. */
#ifndef CNNKIT_CLI_H
#define CNNKIT_CLI_H

#include <stdio.h>

#include "cnnkit/cnnkit.h"
#include "cnnkit/comm.h"
#include "cnnkit/data.h"
#include "cnnkit/model.h"
#include "cnnkit/study.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

typedef struct opts {
    const char *cmd, *model, *data, *save, *log, *plot, *weights, *device;
    int epochs, batch, limit, count, in_h, in_w, in_c;
    unsigned long long seed;
    /* check / study */
    int json, measure, quick, batches, seeds, test_limit, measure_batches;
    int profile; /* train */
    int batch_given, seed_given;
    const char *variants, *csv, *svg;
    float bn_momentum;
    /* train: resuming, checkpoints, validation */
    const char *resume, *val_data;
    int checkpoint_every;      /* epochs; -1: not given (each epoch when --save is given) */
    double val_split;          /* 0: none */
    int threads;               /* --threads: ck_context_set_cpu_threads (0: the OpenMP default) */
    int conv_algo;             /* --conv-algo: ck_conv_algo (train) */
    int math;                  /* --math: ck_math (train) */
    int precision;             /* --precision: 1 + ck_precision, 0 when not given */
    const char *output, *arch; /* convert: B and --model */
    int distributed;           /* train --distributed: data-parallel over MPI ranks */
    int rank, ranks;           /* this process's MPI rank and their number (0 and 1 without) */
    int local_rank;            /* --distributed: the rank among this host's ranks: its GPU */
    double comm_timeout;       /* --comm-timeout: seconds (0: none); < 0 when not given */
    int raw_pixels;            /* --pixels raw: images 0..255 as stored (default: x / 255) */
    int cuda_graph_off;        /* train --cuda-graph off: every GPU step eager (default on) */
} opts;

/* common.c */
/* Reads a model file into a NUL-terminated string (free it); NULL after printing why. */
char *read_model(const char *path);
int ends_with(const char *s, const char *suffix);
/* Prints the parser's warnings, one per line of warnings (which it cuts up), naming path. */
void print_warnings(const char *path, char *warnings);
/* A Keras file (.keras, .h5, .weights.h5) rather than model text or a cnnkit checkpoint. */
int is_keras_file(const char *path);
/* A Keras file's layers and compile options (ck_keras_file_parse; free with
 * ck_keras_model_free); the message in err on failure. */
ck_status keras_file_model(const char *path, ck_keras_model *km, char *err, size_t len);
/* Saves / loads weights in the format the path's extension names (a cnnkit checkpoint unless
 * .keras / .h5). */
ck_status save_model_file(ck_model *m, const char *path);
ck_status load_weights_file(ck_model *m, const char *path);
/* load_model, make_context, load_data and limit_data return an exit code: 0 ok, else after
 * printing why. */
/* Loads o->model (text, or a Keras file with its weights) and builds it for max_batch. */
int load_model(ck_context *ctx, const opts *o, int max_batch, ck_model **out);
/* The context of --device (auto: the GPU when one is usable), --threads, --conv-algo and
 * --math. */
int make_context(const opts *o, ck_context **ctx);
/* --data's folder: NULL when not given (the library's default: $CNNKIT_DATA, else
 * CK_FASHION_MNIST_DIR), CK_FASHION_MNIST_DIR for "fashion-mnist", else DIR; _resolved: the
 * folder read in every case. */
const char *data_dir(const opts *o);
const char *data_dir_resolved(const opts *o);
/* dir NULL: --data (or the default); train: the train-* files, else t10k-*. With --pixels raw
 * the values are the stored bytes 0..255, else the loaders' x / 255. */
int load_data(const opts *o, const char *dir, int train, ck_dataset *ds);
/* The data range the commands feed ([0, 1], or [0, 255] with --pixels raw). */
void data_range(const opts *o, float *lo, float *hi);
/* CK018 (ck_model_check_data) on layers for the data the command feeds: prints each finding
 * as a warning on stderr (train, evaluate, predict, study; check reports it as a finding). */
void warn_data_range(const opts *o, const ck_layer_desc *layers, int count);
/* The first n images (n <= 0: all); what names the option in messages. */
int limit_data(ck_dataset *ds, int n, const char *what);
/* The data set fits the model: its images are the model's input and its labels are classes of
 * the model. Prints why not (what: "training", "validation", "test") and returns EXIT_USAGE. */
int data_fits(const opts *o, const ck_model *m, const ck_dataset *ds, const char *what);

/* The commands, one file each (cmd_NAME.c): each returns the exit code. */
int cmd_train(const opts *o);
int cmd_check(const opts *o);
int cmd_study(const opts *o);
int cmd_summary(const opts *o);
/* evaluate (predict 0) or predict */
int cmd_eval_predict(const opts *o, int predict);
int cmd_convert(const opts *o);

/* distributed.c: MPI for train --distributed (each returns an exit code, 0 ok, after printing
 * why; a build without MPI refuses dist_start with EXIT_USAGE, naming the build option). */
/* MPI_Init; o->rank and o->ranks from MPI_COMM_WORLD. */
int dist_start(int *argc, char ***argv, opts *o);
/* A communicator over MPI_COMM_WORLD for ctx, with --comm-timeout's deadline when given. */
int dist_comm(const opts *o, ck_context *ctx, ck_comm **comm);
/* Collective: the largest of the ranks' exit codes, so that a rank that failed to start stops
 * them all before the first collective of the fit rather than leaving the others waiting. A rank
 * that does not come within --comm-timeout (default 300 s) ends the job (dist_abort). */
int dist_agree(const opts *o, int rc);
void dist_stop(void); /* MPI_Finalize */
/* Collective: v[0..n) summed over the ranks in place (evaluate --distributed), under
 * --comm-timeout (a rank that does not come ends the job). 0, or EXIT_RUNTIME. */
int dist_sum(const opts *o, double *v, int n);
/* Collective: every rank's count floats into rank 0's all, in rank order (counts[r]: rank r's;
 * all and counts are read on rank 0 only), under --comm-timeout. 0, or EXIT_RUNTIME. */
int dist_gather(const opts *o, const float *mine, int count, float *all, const int *counts);
/* MPI_Abort(MPI_COMM_WORLD, rc): after a collective timed out (the communicator is broken),
 * MPI_Finalize would wait for the rank that stopped answering; this ends the whole job. */
void dist_abort(int rc);

/* files.c: output files of a run */
/* A file written whole or not at all: open_replacing opens a new temp file
 * "<dir>/.<base>.cnnkit-tmp.XXXXXX" beside target for writing (target and its name into tmp, len
 * bytes), NULL on failure, where target is path or, for a symlink, the file it points to; it
 * gets the replaced file's permissions, or a new file's. close_replacing closes it and renames
 * it over target, 0 on success, else -1 with the temporary file removed. */
FILE *open_replacing(const char *path, char *tmp, size_t len);
int close_replacing(FILE *f, const char *tmp);
/* Checks before the first step that path can be written: an existing target must be a regular
 * file (replace: it is renamed over; a symlink to one is followed, and said so on stdout) or
 * writable, and its directory must take a new file (a probe file is made and removed). Prints
 * the reason and returns nonzero when it cannot. */
int check_output_path(const char *opt, const char *path, int replace);
/* Whether a and b name one file: the same name, or the same existing file (device and inode). */
int same_file(const char *a, const char *b);
/* 0 when no two of paths[0..n) (NULL: not given) are one file; else prints "cnnkit: CMD: A and
 * B are the same file" (names[] are the options) and returns EXIT_USAGE: one output would
 * overwrite another, or the model file. */
int distinct_files(const char *cmd, const char *const *names, const char *const *paths, int n);
/* 0 when the output path of option opt (NULL: not given) is none of the run's inputs
 * in_paths[0..n) (NULL: not given; a folder stands for every file in it, as --data's); else
 * prints "cnnkit: CMD: OPT PATH is the file of INPUT, an input of the run" and returns
 * EXIT_USAGE: writing it would destroy what the run reads. */
int output_not_input(const char *cmd, const char *opt, const char *path,
                     const char *const *in_names, const char *const *in_paths, int n);
/* An advisory lock for the run on "<path>.lock" (created; removed by unlock_path). Returns the
 * descriptor, or -1 after printing why (another run holds it, or it cannot be made). */
int lock_path(const char *opt, const char *path);
/* The lock file of path: "<dir>/.<base>.cnnkit-lock" (hidden, and named so that no file of the
 * user's is taken for one and removed at the end); -1 when it does not fit len. */
int lock_name(const char *path, char *buf, size_t len);
void unlock_path(const char *path, int fd);

/* The training log (--log): a CSV file locked for the run; every write is checked. */
typedef struct csv_log {
    FILE *f;
    const char *path;
    int err;     /* first failed write (errno), reported once */
    long keep;   /* bytes of the existing file a resumed run keeps */
    int pending; /* no row written yet: the file is cut to keep (and the header written) at the
                    first row, so a run that fails before it leaves the file as it was */
    int created; /* the file did not exist: removed again when no row was written */
    int regular;
} csv_log;
extern const char CSV_HEADER[];
/* Opens and locks path. resume_epoch < 0: a new log (truncated, header written); else the rows
 * of epochs after resume_epoch are cut off (a resumed run writes them again), the others kept
 * and their train/validation figures put into hist[epoch - 1] (hist_cap entries). Both happen at
 * the first row (csv_row): a run that fails before its first epoch ends changes nothing. Returns 0
 * or an exit code after printing why. */
int csv_open(csv_log *l, const char *path, int resume_epoch, ck_epoch_result *hist, int hist_cap);
/* One epoch row; test figures NaN when not measured (empty fields). */
void csv_row(csv_log *l, const ck_epoch_result *r, double test_loss, double test_accuracy);
/* Closes; returns 0 or EXIT_RUNTIME after printing a write or close error. */
int csv_close(csv_log *l);

/* plot_svg.c */
/* Loss and accuracy per epoch, train and validation (when there is one): two panels. Epochs
 * [first, first + n) of hist (1-based epoch numbers). Returns 0 or -1. */
int write_train_svg(const char *path, const ck_epoch_result *hist, int first, int n);
/* Test accuracy per variant: mean with its 95% interval as an error bar, each seed as a dot.
 * Returns 0 or nonzero (fclose's result). */
int write_study_svg(const char *path, const ck_study_variant *v, int nv, const ck_study_summary *sm,
                    const ck_study_result *res, int nres, int seeds);

#endif
