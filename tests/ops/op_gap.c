/* GlobalAveragePooling2D, forward and backward: iv = {n, hw, c}.
 * ref_tol 1e-6: both sum in double; the CPU's single float division by hw may round apart from the
 * reference's by an ulp. gpu_tol 0: the kernel repeats the CPU's operations in its order. */
#include "ops.h"

#include "cpu_layers.h"
#include "ref.h"
#ifdef CNNKIT_HAVE_CUDA
#include "gpu_layers.h"
#endif

#define GAP(nm, n, hw, c)                                                                          \
    {                                                                                              \
        nm, {n, hw, c}, {0}, 2, 2,                                                                 \
            {{"x", n * hw * c, OP_UNIFORM, -2, 2}, {"dy", n * c, OP_UNIFORM, -1, 1}}, {            \
            {"y", n * c, 0, 0, 0}, {                                                               \
                "dx", n *hw *c, 0, 0, 0                                                            \
            }                                                                                      \
        }                                                                                          \
    }

static const op_variant k_variants[] = {GAP("4x4x5", 3, 16, 5), GAP("7x7x3", 2, 49, 3),
                                        GAP("1x1x8", 2, 1, 8)};

static void cpu(const op_variant *v, float *const *in, float *const *out) {
    ck_cpu_gap_forward(v->iv[0], v->iv[1], v->iv[2], in[0], out[0]);
    ck_cpu_gap_backward(v->iv[0], v->iv[1], v->iv[2], in[1], out[1]);
}

static void ref(const op_variant *v, float *const *in, float *const *out) {
    ref_gap_forward(v->iv[0], v->iv[1], v->iv[2], in[0], out[0]);
    ref_gap_backward(v->iv[0], v->iv[1], v->iv[2], in[1], out[1]);
}

#ifdef CNNKIT_HAVE_CUDA
static int gpu_run(ck_context *g, const op_variant *v, ck_tensor *const *in,
                   ck_tensor *const *out) {
    const int dt = in[0]->dtype; /* the bf16 case's substitutes are bf16 words */
    const int e_ =
        ck_cuda_gap_forward(v->iv[0], v->iv[1], v->iv[2], OP_D(in[0]), OP_D(out[0]), dt, g->stream);
    return e_ ? e_
              : ck_cuda_gap_backward(v->iv[0], v->iv[1], v->iv[2], OP_D(in[1]), OP_D(out[1]), dt,
                                     g->stream);
}
#else
#define gpu_run NULL
#endif

static const op_variant k_bench[] = {GAP("7x7x256_b64", 64, 49, 256),
                                     GAP("8x8x64_b128", 128, 64, 64)};

const op_case op_gap = {
    .name = "gap",
    .launchers = "ck_cuda_gap_forward ck_cuda_gap_backward",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
    .bench_variants = k_bench,
    .nbench = sizeof k_bench / sizeof k_bench[0],
    .cpu = cpu,
    .ref = ref,
    .ref_tol = 1e-6,
    .gpu = gpu_run,
    .gpu_tol = 0,
    .grad_y = 0,
    .grad_dy = 1,
    .ngrad = 1,
    .grad = {{0, 1}},
    .grad_tol = 1e-3,
};

/* ---- bf16 storage (x, dy in, y, dx out: bit-exact on the GPU, as the fp32 case) ---- */

OP_BF16_HOST(cpu_bf16, cpu, 3u, 3u)
OP_BF16_HOST(ref_bf16, ref, 3u, 3u)

OP_BF16_GPU(gpu_bf16, gpu_run, 3u, 3u)

const op_case op_gap_bf16 = {
    .name = "gap_bf16",
    .launchers = "ck_cuda_gap_forward ck_cuda_gap_backward ck_cuda_bf16_pack ck_cuda_bf16_unpack",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
    .bench_variants = k_bench,
    .nbench = sizeof k_bench / sizeof k_bench[0],
    .cpu = cpu_bf16,
    .ref = ref_bf16,
    .ref_tol = OP_BF16_TOL,
    .gpu = OP_GPU(gpu_bf16),
    .gpu_tol = 0,
    .gpu_setup = OP_BF16_SETUP,
};
