/*
 * The op table: one case per op (tests/ops/op_*.c), driven by tests/test_ops.c for three checks
 *   - CPU vs reference: the library's CPU op (cpu_layers.h or the public API) against the naive
 *     loops of tests/reference within the case's ref_tol;
 *   - gradcheck: the CPU backward against central differences of the reference forward (inputs
 *     chosen away from kinks: ReLU and max pooling are not differentiable there);
 *   - GPU vs CPU: the GPU runner (ck_cuda_* launchers, ck_g* layers or the public API on a CUDA
 *     context) against the CPU op, bit for bit when gpu_tol is 0.
 * A case runs forward and backward in one call: inputs (x, parameters, dy) in, every result out.
 * Errors are max |a - b| / max(1e-3, max |b|), relative to the output's scale.
 * bench/bench_ops times the same cases (op_run.c holds the list and the data both drivers use),
 * on the test shapes or on each case's bench_variants (--bench-sizes).
 */
#ifndef CNNKIT_TESTS_OPS_H
#define CNNKIT_TESTS_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "cnnkit/cnnkit.h"

#define OP_MAX_IO 10

typedef enum op_init {
    OP_UNIFORM = 0, /* U[lo, hi) */
    OP_DISTINCT,    /* a shuffle of lo + i * hi: no ties, so max pooling has no kinks */
    OP_LABELS,      /* integers in [0, hi) stored as int32 bits (hi: the class count) */
} op_init;

typedef struct op_arr {
    const char *name;
    size_t count; /* floats */
    op_init init;
    float lo, hi;
    int from;     /* outputs: 1 + the input it starts as (in-place ops); 0: starts as zeros */
    int shape[4]; /* GPU tensor (n, c, h, w), NHWC unless nchw; all 0: (count, 1, 1, 1) NCHW */
    int nchw;
} op_arr;

/* One shape of an op: op-specific integers and floats, and its arrays. */
typedef struct op_variant {
    const char *name;
    int iv[12];
    float fv[6];
    int nin, nout;
    op_arr in[OP_MAX_IO], out[OP_MAX_IO];
} op_variant;

/* Host runners (CPU op, reference): in / out are host arrays, out uninitialized. */
typedef void (*op_host_fn)(const op_variant *v, float *const *in, float *const *out);
/* GPU runner: in / out are tensors of a CUDA context holding the host arrays' bytes (out zero
 * or its `from` input); returns 0 on success. */
typedef int (*op_gpu_fn)(ck_context *g, const op_variant *v, ck_tensor *const *in,
                         ck_tensor *const *out);

/* Gradient of <in[dy], out[y]> with respect to in[x] is out[dx]. */
typedef struct op_grad {
    int x, dx;
} op_grad;

typedef struct op_case {
    const char *name;
    /* The ck_cuda_* launchers the GPU runner reaches, space-separated (the coverage test reads
     * these against ck_kernels.h). */
    const char *launchers;
    const op_variant *variants;
    int nvariants;
    /* bigger shapes for bench_ops --bench-sizes (timed and re-checked, not gradchecked) */
    const op_variant *bench_variants;
    int nbench;
    op_host_fn cpu; /* NULL: the reference is the CPU side (a pure data move) */
    op_host_fn ref;
    double ref_tol; /* CPU vs reference; derived in the op's file */
    op_gpu_fn gpu;
    double gpu_tol; /* GPU vs CPU (or reference); 0 = bit-identical */
    /* Public-API ops: the tensor runner on any context, which cpu wraps in a fresh CPU context;
     * the bench times it on one CPU context so the time is the op's, not the set-up's. */
    op_gpu_fn api;
    /* What the GPU runner sets up on every call (a plan, a workspace, a synchronization), which
     * bench_ops' GPU time then includes and its note says; NULL: nothing. */
    const char *gpu_setup;
    /* gradcheck: forward output y and input dy, and the pairs (x, dx) to check */
    int grad_y, grad_dy, ngrad;
    op_grad grad[3];
    double grad_tol;
    float grad_h; /* relative step of the central differences; 0: 1e-3 */
} op_case;

extern const op_case op_act, op_pool, op_gap, op_dense, op_conv, op_xent, op_adam, op_sgd,
    op_rmsprop, op_adadelta, op_pad, op_layout, op_flag, op_fill, op_dropout, op_bn, op_add,
    op_channel_slice, op_bf16, op_rescale, op_scale, op_gather;
/* cuDNN's pooling on op_pool's data: the peer bench_ops times the pooling kernels against */
extern const op_case op_pool_cudnn;
/* bf16 storage twins of the cases above (see op_gpu_bf16) */
extern const op_case op_act_bf16, op_pool_bf16, op_gap_bf16, op_dropout_bf16, op_bn_bf16,
    op_add_bf16, op_channel_slice_bf16, op_rescale_bf16;

/* ---- op_run.c: what the suite (tests/test_ops.c) and the bench (bench/bench_ops.c) share ---- */

/* Every case, in the order both run them. */
extern const op_case *const op_cases[];
extern const int op_ncases;

/* The host arrays of one variant. */
typedef struct op_bufs {
    float *in[OP_MAX_IO], *out[OP_MAX_IO];
} op_bufs;

/* The data seed of a case's k-th variant (bench variants continue after the test ones). */
uint64_t op_seed(const op_case *c, int k);
/* Allocates and fills the arrays of v from seed: inputs by their init, outputs zero or a copy of
 * their `from` input. Returns 0, or -1 out of memory (nothing left allocated). */
int op_bufs_alloc(const op_variant *v, uint64_t seed, op_bufs *b);
void op_bufs_free(const op_variant *v, op_bufs *b);
/* max |a - b| / max(1e-3, max |b|); NaN anywhere counts as infinite error. */
double op_scaled_err(const float *a, const float *b, size_t n);
/* Worst error of v's outputs, got against want; with tol 0 an output whose bits differ counts as
 * infinite. *worst (optional) gets the index of that output. */
double op_outputs_err(const op_variant *v, float *const *got, float *const *want, double tol,
                      int *worst);
/* The bytes a run must move at least: every input read once (except those an in-place output
 * starts as), every output written once, and an in-place output read as well. */
size_t op_bytes(const op_variant *v);

/* The contexts' seed (dropout masks): t_cuda_ctx_or_skip's. */
#define OP_SEED 1234

/* A tensor of ctx shaped as a says, holding host's a->count floats (zeros when host is NULL);
 * NULL on failure. */
ck_tensor *op_tensor(ck_context *ctx, const op_arr *a, const float *host);
/* Runs a tensor runner on ctx over host arrays (outputs with `from` start as out[i]'s contents);
 * returns 0 or the failing status. op_run_cpu does it on a fresh CPU context: the CPU side of
 * the ops that exist only in the public API (BatchNorm, dropout). */
int op_run_on(ck_context *ctx, op_gpu_fn run, const op_variant *v, float *const *in,
              float *const *out);
int op_run_cpu(op_gpu_fn run, const op_variant *v, float *const *in, float *const *out);

/* ---- bf16 storage cases (issue 16, docs/precision.md): the same op with its activation arrays
 * stored as bf16 words. The CPU side rounds the activation inputs in place (ck_bf16_round_buffer),
 * runs the fp32 CPU op and rounds its activation outputs: the CPU twin. The GPU side packs the
 * activation inputs to bf16 words on the device (ck_cuda_bf16_pack: the same nearest-even
 * rounding), runs the kernels with CK_KDT_BF16 and widens the outputs back. A mask's bit i
 * selects in[i] / out[i]; the others (parameters, statistics) stay fp32. Tolerances: where the
 * fp32 comparison is bit-exact so is the bf16 one (the kernel rounds the value the CPU rounds);
 * elsewhere the fp32 tolerance plus 2^-7, one bf16 ulp (2^-7 |v| at most) of the output's
 * scale, since two values that round apart differ by their fp32 distance plus one ulp. Every such
 * sum here (fp32 tolerances up to 1e-4: at most 0.0079125) is rounded up to OP_BF16_TOL, a value
 * bench_ops prints exactly (tests/test_bench.c compares the printed tolerance). */
#define OP_BF16_TOL 8e-3
/* What a bf16 case's GPU runner adds to each timed call (op_gpu_bf16): bf16 tensors allocated and
 * filled, its inputs packed to bf16 words, its outputs widened back, a synchronization and the
 * frees. bench_cudnn's bf16 rows time the kernels alone (BN and dropout). */
#define OP_BF16_SETUP                                                                              \
    "bf16 tensors allocated, inputs packed, outputs unpacked, a sync and frees per call"
void op_bf16_round_arrs(const op_arr *a, int n, float *const *arrs, unsigned mask);
/* The host side of a bf16 case: fn on the in_mask inputs rounded to bf16, then its out_mask
 * outputs rounded. OP_BF16_HOST defines such a runner `name` of fn. */
void op_bf16_host(const op_variant *v, float *const *in, float *const *out, unsigned in_mask,
                  unsigned out_mask, op_host_fn fn);
#define OP_BF16_HOST(name, fn, in_mask, out_mask)                                                  \
    static void name(const op_variant *v, float *const *in, float *const *out) {                   \
        op_bf16_host(v, in, out, in_mask, out_mask, fn);                                           \
    }
/* A case's GPU runner: OP_GPU(name) is name in a CUDA build, else NULL; OP_BF16_GPU defines the
 * bf16 runner `name` of the fp32 one fn (op_gpu_bf16 below). */
#ifdef CNNKIT_HAVE_CUDA
#define OP_GPU(name) name
#define OP_BF16_GPU(name, fn, in_mask, out_mask)                                                   \
    static int name(ck_context *g, const op_variant *v, ck_tensor *const *in,                      \
                    ck_tensor *const *out) {                                                       \
        return op_gpu_bf16(g, v, in, out, in_mask, out_mask, fn);                                  \
    }
#else
#define OP_GPU(name) NULL
#define OP_BF16_GPU(name, fn, in_mask, out_mask)
#endif
#ifdef CNNKIT_HAVE_CUDA
/* Runs run on substitutes of in / out whose masked arrays are bf16 copies (a tensor of the same
 * shape, dtype CK_KDT_BF16), then widens the masked outputs back into out. 0 or an error. */
int op_gpu_bf16(ck_context *g, const op_variant *v, ck_tensor *const *in, ck_tensor *const *out,
                unsigned in_mask, unsigned out_mask, op_gpu_fn run);
#endif

/* Device array of a GPU runner's tensor. */
#define OP_D(t) ck_tensor_data(t)

#endif
