/* Helpers shared by the Criterion tests. */
#ifndef CNNKIT_TESTS_COMMON_H
#define CNNKIT_TESTS_COMMON_H

#include <criterion/criterion.h>
#include <stddef.h>
#include <stdint.h>

#include "cnnkit/cnnkit.h"
#include "cnnkit/model.h"
#include "trng.h"

/* Asserts a call succeeded, printing the context's message otherwise. */
#define CK_OK(ctx, expr)                                                                           \
    do {                                                                                           \
        ck_status st_ = (expr);                                                                    \
        cr_assert_eq(st_, CK_STATUS_SUCCESS, "%s -> %s: %s", #expr, ck_status_string(st_),         \
                     ck_context_last_error(ctx));                                                  \
    } while (0)

ck_context *t_ctx(ck_device dev); /* creates or fails the test */
/* A CUDA context. Without a usable device (or in a CPU-only build) the test is skipped with the
 * reason, or fails with it when CNNKIT_REQUIRE_GPU=1 (GPU runners: a broken CUDA setup must not
 * pass as "all skipped"). A device that is present but cannot be set up fails the test. */
ck_context *t_cuda_ctx_or_skip(void);
/* Skips a GPU test that cannot run here (the skip message starts with T_GPU_SKIP, which the
 * suite's summary counts), or fails it when CNNKIT_REQUIRE_GPU=1. Does not return. */
#define T_GPU_SKIP "GPU test skipped: "
void t_gpu_unavailable(const char *why);
/* 1 in the build against kemu (the CPU emulation of CUDA): there the GPU tests that train for
 * many steps take smaller batches (the same steps and checks at a fraction of the CPU time);
 * on a GPU they run at full size. */
#ifdef CNNKIT_TEST_EMU
#define T_EMU 1
#else
#define T_EMU 0
#endif
/* Index of logical (n, c, h, w) in a buffer of the given layout. */
size_t t_index(ck_layout l, int N, int C, int H, int W, int n, int c, int h, int w);
/* Creates a tensor and uploads `nchw` (logical NCHW order) converted to its layout. */
ck_tensor *t_tensor_from_nchw(ck_context *ctx, ck_layout l, int N, int C, int H, int W,
                              const float *nchw);
/* Downloads a tensor into `nchw` (logical NCHW order), whatever its layout. */
void t_tensor_to_nchw(ck_context *ctx, const ck_tensor *t, float *nchw);
ck_tensor *t_param(ck_context *ctx, int C, const float *values); /* 1 x C x 1 x 1 */
void t_param_get(ck_context *ctx, const ck_tensor *t, float *values);
/* max |a - b| / max(1, |b|) */
double t_max_rel_err(const float *a, const float *b, size_t n);
double t_max_abs(const float *a, size_t n);
/* A whole file, NUL-terminated (malloc'd; *len, optional, without the NUL); fails the test when
 * it cannot be read. */
char *t_read_file(const char *path, size_t *len);
/* Every trainable weight of m (malloc'd, *count of them); fails the test on an error. */
float *t_weights_of(ck_context *ctx, ck_model *m, size_t *count);
/* to's whole state (weights, optimizer moments, BN statistics, step) from `from`, through a
 * checkpoint at path: checkpoints are fp32 whatever the precision and the device. */
void t_sync_state(ck_context *cf, ck_model *from, ck_context *ct, ck_model *to, const char *path);
/* The source tree: $CNNKIT_SOURCE_DIR, else the one the tests were built from, else the current
 * folder when it holds examples/ (a relocated test binary run from a copy of the checkout, as
 * on the GPU machine). t_src: rel (e.g. "examples/seed_cnn.py") in it, in one of 16 buffers
 * used in turn. */
const char *t_source_dir(void);
const char *t_src(const char *rel);
/* A model from Keras text, built for its input_shape and batches of up to max_batch. */
ck_model *t_model(ck_context *ctx, const char *text, int max_batch);

/* Whole-model gradient check (CPU): central differences of the mean loss w.r.t. every stride-th
 * trainable parameter against the backward pass, h = 2e-3 on O(1) weights, tolerance
 * 2e-3 * max(1, |fd|) + 5e-4 (float forward noise ~1e-6 / 2h, plus curvature); fails the test
 * on a mismatch. Returns how many were checked; *nonzero (optional) counts the checked
 * parameters with index < below whose finite difference exceeds 1e-4. */
int t_gradcheck_model(ck_context *ctx, ck_model *m, const float *x, const int32_t *y, int n,
                      size_t stride, size_t below, int *nonzero);

/* examples/seed_cnn.py verbatim (tests/common.c). */
extern const char t_seed_cnn_text[];

/* Runs the program prog from the source tree with args (shell words; they may redirect stderr);
 * returns its exit code, its stdout+stderr in out (cr_skip when the binary or the tree is not
 * here). t_run_cli runs the cnnkit CLI. */
int t_run_prog(const char *prog, const char *args, char *out, size_t len);
int t_run_cli(const char *args, char *out, size_t len);
#ifdef CNNKIT_HAVE_MPI
/* env mpiexec -np ranks prog args (env: "VAR=value " words, may be ""), bounded by a 120 s
 * timeout so that a hang fails, with the settings CI's root containers and `make test-asan`
 * need; returns the exit status, stdout+stderr in out (cr_skip when prog or mpiexec is not
 * here). */
int t_run_mpiexec(const char *env, int ranks, const char *prog, const char *args, char *out,
                  size_t len);
#endif

/* fuzz/fuzz_checkpoint.c's model text (the fuzz corpora fit it). */
extern const char T_FUZZ_MODEL[];

#endif
