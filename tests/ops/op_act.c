/* Activations, forward and backward: iv = {act, rows, c}, fv = {alpha}.
 * ref_tol 2e-6: the CPU evaluates each element in float (expf, tanhf, erff: <= 2 ulp, then a
 * multiply or two), softmax sums c = 10 float exps: a few 6e-8 roundings, against a double
 * reference. gpu_tol 1e-5: the device's expf / tanhf / erff differ from glibc's by a few ulp
 * (test_gpu_layers bounds 4e-6 of max(1, |y|); the scale here can be ~0.3 for softmax rows). */
#include "ops.h"

#include "cpu_layers.h"
#include "ref.h"
#ifdef CNNKIT_HAVE_CUDA
#include "gpu_layers.h"
#endif

#define ACT_RC(nm, a, al, rows, cols)                                                              \
    {                                                                                              \
        nm, {a, rows, cols}, {al}, 2, 2,                                                           \
            {{"x", rows * cols, OP_UNIFORM, -3, 3}, {"dy", rows * cols, OP_UNIFORM, -1, 1}}, {     \
            {"y", rows * cols, 0, 0, 0}, {                                                         \
                "dx", rows *cols, 0, 0, 0                                                          \
            }                                                                                      \
        }                                                                                          \
    }
#define ACT(nm, a, al) ACT_RC(nm, a, al, 6, 10)

static const op_variant k_variants[] = {
    ACT("linear", CK_ACT_NONE, 0),         ACT("relu", CK_ACT_RELU, 0),
    ACT("sigmoid", CK_ACT_SIGMOID, 0),     ACT("tanh", CK_ACT_TANH, 0),
    ACT("softmax", CK_ACT_SOFTMAX, 0),     ACT("elu", CK_ACT_ELU, 1.0f),
    ACT("leaky", CK_ACT_LEAKY_RELU, 0.3f), ACT("gelu", CK_ACT_GELU, 0),
    ACT("swish", CK_ACT_SWISH, 0),
};

static void cpu(const op_variant *v, float *const *in, float *const *out) {
    const size_t n = (size_t)v->iv[1] * v->iv[2];
    ck_cpu_activation_forward((ck_activation)v->iv[0], v->fv[0], in[0], out[0], n, v->iv[2]);
    ck_cpu_activation_backward((ck_activation)v->iv[0], v->fv[0], in[0], out[0], in[1], out[1], n,
                               v->iv[2]);
}

static void ref(const op_variant *v, float *const *in, float *const *out) {
    const size_t n = (size_t)v->iv[1] * v->iv[2];
    ref_activation_forward(v->iv[0], v->fv[0], in[0], out[0], n, v->iv[2]);
    ref_activation_backward(v->iv[0], v->fv[0], in[0], in[1], out[1], n, v->iv[2]);
}

#ifdef CNNKIT_HAVE_CUDA
static int gpu_run(ck_context *g, const op_variant *v, ck_tensor *const *in,
                   ck_tensor *const *out) {
    const size_t n = (size_t)v->iv[1] * v->iv[2];
    const int dt = in[0]->dtype; /* the bf16 case's substitutes are bf16 words */
    const int e_ = ck_cuda_activation_forward(v->iv[0], v->fv[0], OP_D(in[0]), OP_D(out[0]), n,
                                              v->iv[2], dt, g->stream);
    return e_ ? e_
              : ck_cuda_activation_backward(v->iv[0], v->fv[0], OP_D(in[0]), OP_D(out[0]),
                                            OP_D(in[1]), OP_D(out[1]), n, v->iv[2], dt, g->stream);
}
#else
#define gpu_run NULL
#endif

/* 1M elements, rows of 64 (softmax: 10-class rows, as the seed model's output) */
static const op_variant k_bench[] = {ACT_RC("relu_16384x64", CK_ACT_RELU, 0, 16384, 64),
                                     ACT_RC("gelu_16384x64", CK_ACT_GELU, 0, 16384, 64),
                                     ACT_RC("softmax_65536x10", CK_ACT_SOFTMAX, 0, 65536, 10)};

const op_case op_act = {
    .name = "act",
    .launchers = "ck_cuda_activation_forward ck_cuda_activation_backward",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
    .bench_variants = k_bench,
    .nbench = sizeof k_bench / sizeof k_bench[0],
    .cpu = cpu,
    .ref = ref,
    .ref_tol = 2e-6,
    .gpu = gpu_run,
    .gpu_tol = 1e-5,
    .grad_y = 0,
    .grad_dy = 1,
    .ngrad = 1,
    .grad = {{0, 1}},
    .grad_tol = 1e-3,
};

/* ---- bf16 storage (x, dy in, y, dx out; the backward reads the rounded y, as the GPU reads its
 * stored y. Not bit-exact: the device expf / tanhf / erff are not glibc's (gpu_tol above). The
 * reference's backward works from x, not the rounded y: for the activations whose derivative
 * reads y that costs up to 6.2e-3 (sigmoid) of OP_BF16_TOL's 8e-3) ---- */

static void cpu_bf16(const op_variant *v, float *const *in, float *const *out) {
    const size_t n = (size_t)v->iv[1] * v->iv[2];
    op_bf16_round_arrs(v->in, v->nin, in, 3u);
    ck_cpu_activation_forward((ck_activation)v->iv[0], v->fv[0], in[0], out[0], n, v->iv[2]);
    op_bf16_round_arrs(v->out, 1, out, 1u); /* y as stored, before the backward reads it */
    ck_cpu_activation_backward((ck_activation)v->iv[0], v->fv[0], in[0], out[0], in[1], out[1], n,
                               v->iv[2]);
    op_bf16_round_arrs(v->out, v->nout, out, 2u);
}
OP_BF16_HOST(ref_bf16, ref, 3u, 3u)

OP_BF16_GPU(gpu_bf16, gpu_run, 3u, 3u)

const op_case op_act_bf16 = {
    .name = "act_bf16",
    .launchers = "ck_cuda_activation_forward ck_cuda_activation_backward ck_cuda_bf16_pack "
                 "ck_cuda_bf16_unpack",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
    .bench_variants = k_bench,
    .nbench = sizeof k_bench / sizeof k_bench[0],
    .cpu = cpu_bf16,
    .ref = ref_bf16,
    .ref_tol = OP_BF16_TOL,
    .gpu = OP_GPU(gpu_bf16),
    .gpu_tol = OP_BF16_TOL,
    .gpu_setup = OP_BF16_SETUP,
};
