/* The merge ops of graph models (src/kernels/merge.cu). The elementwise sum of the Add layer and of
 * graph models' gradient sums: the CPU backend's add (ck_backend_cpu.add) against the reference,
 * dst[i] = a[i] + b[i] with one float rounding either way (ref_tol 0), and the GPU's (ck_cuda_add)
 * against the CPU bit for bit (gpu_tol 0). Add's backward hands dy to every input (a backend copy):
 * the gradient of <dy, a + b> with respect to a, checked by central differences through the
 * reference forward. */
#include "ops.h"

#include "exec.h"

#include <string.h>

#ifdef CNNKIT_HAVE_CUDA
#include "gpu_layers.h"
#endif

/* iv = {count}; in: a, b, dy; out: y = a + b, dx = the gradient at a (dy) */
#define ADD(nm, n)                                                                                 \
    {                                                                                              \
        nm, {n}, {0}, 3, 2,                                                                        \
            {{"a", n, OP_UNIFORM, -2, 2},                                                          \
             {"b", n, OP_UNIFORM, -3, 3},                                                          \
             {"dy", n, OP_UNIFORM, -1, 1}},                                                        \
        {                                                                                          \
            {"y", n, 0, 0, 0}, {                                                                   \
                "dx", n, 0, 0, 0                                                                   \
            }                                                                                      \
        }                                                                                          \
    }

static const op_variant k_variants[] = {ADD("one", 1), ADD("odd_257", 257),
                                        ADD("grid_stride_70001", 70001)};
/* ResNet-20's stage-1 Add at batch 128: 128 x 28 x 28 x 16 */
static const op_variant k_bench_add[] = {ADD("28x28x16_b128", 1605632)};

static void add_ref(const op_variant *v, float *const *in, float *const *out) {
    for (int i = 0; i < v->iv[0]; ++i)
        out[0][i] = in[0][i] + in[1][i];
    memcpy(out[1], in[2], sizeof(float) * (size_t)v->iv[0]);
}

static void add_cpu(const op_variant *v, float *const *in, float *const *out) {
    const size_t n = (size_t)v->iv[0];
    ck_backend_cpu.add(NULL, out[0], in[0], in[1], n, CK_KDT_F32);
    ck_backend_cpu.copy(NULL, out[1], in[2], n, CK_KDT_F32);
}

#ifdef CNNKIT_HAVE_CUDA
static int add_gpu(ck_context *g, const op_variant *v, ck_tensor *const *in,
                   ck_tensor *const *out) {
    const int dt = in[0]->dtype; /* the bf16 case's substitutes are bf16 words */
    const int e_ =
        ck_cuda_add(OP_D(out[0]), OP_D(in[0]), OP_D(in[1]), (size_t)v->iv[0], dt, g->stream);
    /* the backward of Add is a copy of dy: dx = dy + 0 through the same kernel */
    return e_ ? e_
              : ck_cuda_add(OP_D(out[1]), OP_D(in[2]), OP_D(out[1]), (size_t)v->iv[0], dt,
                            g->stream);
}
#else
#define add_gpu NULL
#endif

const op_case op_add = {
    .name = "add",
    .launchers = "ck_cuda_add",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
    .bench_variants = k_bench_add,
    .nbench = sizeof k_bench_add / sizeof k_bench_add[0],
    .cpu = add_cpu,
    .ref = add_ref,
    .ref_tol = 0,
    .gpu = add_gpu,
    .gpu_tol = 0,
    .grad_y = 0,
    .grad_dy = 2,
    .ngrad = 1,
    .grad = {{0, 1}},
    .grad_tol = 1e-3,
};

/* ---- Concatenate's channel slices (ck_cuda_channel_slice): iv = {pixels, wc, off, nc} ----
 * in: the narrow tensor, the wide dy; out: the narrow one placed in a zero wide tensor, the slice
 * of dy (Concatenate's backward). Pure copies: the reference is the CPU side, gpu_tol 0. */
#define SLICE(nm, p, wc, off, nc)                                                                  \
    {                                                                                              \
        nm, {p, wc, off, nc}, {0}, 2, 2,                                                           \
            {{"narrow", p * nc, OP_UNIFORM, -1, 1}, {"dy", p * wc, OP_UNIFORM, -1, 1}}, {          \
            {"wide", p * wc, 0, 0, 0}, {                                                           \
                "dx", p *nc, 0, 0, 0                                                               \
            }                                                                                      \
        }                                                                                          \
    }

static const op_variant k_slices[] = {SLICE("first_3_of_5", 7, 5, 0, 3),
                                      SLICE("last_2_of_5", 7, 5, 3, 2),
                                      SLICE("middle_16_of_48", 300, 48, 16, 16)};
/* a 32 + 32 channel Concatenate at 14 x 14, batch 128 */
static const op_variant k_bench_slices[] = {SLICE("14x14_32_of_64_b128", 25088, 64, 32, 32)};

static void slice_ref(const op_variant *v, float *const *in, float *const *out) {
    const int p = v->iv[0], wc = v->iv[1], off = v->iv[2], nc = v->iv[3];
    memset(out[0], 0, sizeof(float) * (size_t)p * wc);
    for (int i = 0; i < p; ++i)
        for (int c = 0; c < nc; ++c) {
            out[0][i * wc + off + c] = in[0][i * nc + c];
            out[1][i * nc + c] = in[1][i * wc + off + c];
        }
}

#ifdef CNNKIT_HAVE_CUDA
static int slice_gpu(ck_context *g, const op_variant *v, ck_tensor *const *in,
                     ck_tensor *const *out) {
    const int *q = v->iv;
    const int dt = in[0]->dtype; /* the bf16 case's substitutes are bf16 words */
    const int e_ = ck_cuda_channel_slice(OP_D(out[0]), q[1], q[2], OP_D(in[0]), q[3], (size_t)q[0],
                                         1, dt, g->stream);
    return e_ ? e_
              : ck_cuda_channel_slice(OP_D(in[1]), q[1], q[2], OP_D(out[1]), q[3], (size_t)q[0], 0,
                                      dt, g->stream);
}
#else
#define slice_gpu NULL
#endif

const op_case op_channel_slice = {
    .name = "channel_slice",
    .launchers = "ck_cuda_channel_slice",
    .variants = k_slices,
    .nvariants = sizeof k_slices / sizeof k_slices[0],
    .bench_variants = k_bench_slices,
    .nbench = sizeof k_bench_slices / sizeof k_bench_slices[0],
    .ref = slice_ref,
    .gpu = slice_gpu,
};

/* ---- bf16 storage (a, b, dy in, y, dx out: one fp32 sum rounded once on every side, bit-exact)
 * ---- */

OP_BF16_HOST(cpu_bf16_add, add_cpu, 7u, 3u)
OP_BF16_HOST(ref_bf16_add, add_ref, 7u, 3u)

OP_BF16_GPU(gpu_bf16_add, add_gpu, 7u, 3u)

const op_case op_add_bf16 = {
    .name = "add_bf16",
    .launchers = "ck_cuda_add ck_cuda_bf16_pack ck_cuda_bf16_unpack",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
    .bench_variants = k_bench_add,
    .nbench = sizeof k_bench_add / sizeof k_bench_add[0],
    .cpu = cpu_bf16_add,
    .ref = ref_bf16_add,
    .ref_tol = 0,
    .gpu = OP_GPU(gpu_bf16_add),
    .gpu_tol = 0,
    .gpu_setup = OP_BF16_SETUP,
};

/* ---- bf16 storage (a move of bf16 words: exact) ---- */

OP_BF16_HOST(ref_bf16_slice, slice_ref, 3u, 3u)

OP_BF16_GPU(gpu_bf16_slice, slice_gpu, 3u, 3u)

const op_case op_channel_slice_bf16 = {
    .name = "channel_slice_bf16",
    .launchers = "ck_cuda_channel_slice ck_cuda_bf16_pack ck_cuda_bf16_unpack",
    .variants = k_slices,
    .nvariants = sizeof k_slices / sizeof k_slices[0],
    .bench_variants = k_bench_slices,
    .nbench = sizeof k_bench_slices / sizeof k_bench_slices[0],

    .ref = ref_bf16_slice,
    .ref_tol = 0,
    .gpu = OP_GPU(gpu_bf16_slice),
    .gpu_tol = 0,
    .gpu_setup = OP_BF16_SETUP,
};

/* ---- a data-parallel rank's share of the loss gradient (ck_backend.scale, ck_cuda_scale):
 * y = x * s, one fp32 multiply: the reference, the CPU backend and the GPU agree bit for bit.
 * iv = {count}, fv = {s}; in: x; out: y ---- */
#define SCALE(nm, n, s)                                                                            \
    {                                                                                              \
        nm, {n}, {s}, 1, 1, {{"x", n, OP_UNIFORM, -4, 4}}, {                                       \
            { "y", n, 0, 0, 0 }                                                                    \
        }                                                                                          \
    }

/* 0.5: equal shards of two ranks; 1/3 and 0.6: uneven shards (inexact scales) */
static const op_variant k_scale[] = {SCALE("half_odd_1001", 1001, 0.5f),
                                     SCALE("third_70001", 70001, 1.0f / 3.0f),
                                     SCALE("one", 1, 0.6f)};
static const op_variant k_scale_bench[] = {SCALE("1M", 1 << 20, 0.25f)};

static void scale_ref(const op_variant *v, float *const *in, float *const *out) {
    for (int i = 0; i < v->iv[0]; ++i)
        out[0][i] = in[0][i] * v->fv[0];
}

static void scale_cpu(const op_variant *v, float *const *in, float *const *out) {
    const size_t n = (size_t)v->iv[0];
    memcpy(out[0], in[0], sizeof(float) * n);
    ck_backend_cpu.scale(NULL, out[0], n, v->fv[0]);
}

#ifdef CNNKIT_HAVE_CUDA
static int scale_gpu(ck_context *g, const op_variant *v, ck_tensor *const *in,
                     ck_tensor *const *out) {
    const size_t n = (size_t)v->iv[0];
    /* y = x + 0 (exact: no input is -0), then scaled in place */
    int e_ = ck_cuda_fill(OP_D(out[0]), n, 0.0f, g->stream);
    if (!e_)
        e_ = ck_cuda_add(OP_D(out[0]), OP_D(in[0]), OP_D(out[0]), n, CK_KDT_F32, g->stream);
    return e_ ? e_ : ck_cuda_scale(OP_D(out[0]), n, v->fv[0], g->stream);
}
#else
#define scale_gpu NULL
#endif

const op_case op_scale = {
    .name = "scale",
    .launchers = "ck_cuda_scale",
    .variants = k_scale,
    .nvariants = sizeof k_scale / sizeof k_scale[0],
    .bench_variants = k_scale_bench,
    .nbench = sizeof k_scale_bench / sizeof k_scale_bench[0],
    .cpu = scale_cpu,
    .ref = scale_ref,
    .ref_tol = 0,
    .gpu = scale_gpu,
    .gpu_tol = 0,
};
