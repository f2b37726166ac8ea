/* Max / average pooling, forward and backward: iv = {n, h, w, c, k, s, same, is_max, oh, ow}.
 * The geometry is ck_conv_geom_make's (the definition of Keras padding, not math under test).
 * ref_tol 1e-6: max is exact; average sums at most 9 floats in float (8 roundings of 6e-8) and
 * divides once, against a double sum. gpu_tol 0: the kernels repeat ck_cpu_pool_*'s operations
 * in its order. Inputs are distinct (no ties), so max pooling is differentiable there. */
#include "ops.h"

#include "cpu_layers.h"
#include "ref.h"
#ifdef CNNKIT_HAVE_CUDA
#include "gpu_layers.h"
#endif

#define POOL(nm, n, h, w, c, k, s, same, mx, oh, ow)                                               \
    {                                                                                              \
        nm, {n, h, w, c, k, s, same, mx, oh, ow}, {0}, 2, 2,                                       \
            {{"x", n * h * w * c, OP_DISTINCT, -1.0f, 0.01f},                                      \
             {"dy", n * oh * ow * c, OP_UNIFORM, -1, 1}},                                          \
        {                                                                                          \
            {"y", n * oh * ow * c, 0, 0, 0}, {                                                     \
                "dx", n *h *w *c, 0, 0, 0                                                          \
            }                                                                                      \
        }                                                                                          \
    }

static const op_variant k_variants[] = {
    POOL("max_valid_2s2", 2, 6, 6, 3, 2, 2, 0, 1, 3, 3),
    POOL("avg_valid_3s1", 2, 5, 6, 3, 3, 1, 0, 0, 3, 4),
    POOL("max_same_3s2", 2, 5, 5, 3, 3, 2, 1, 1, 3, 3),
    POOL("avg_same_3s2", 2, 5, 5, 3, 3, 2, 1, 0, 3, 3),
    POOL("max_same_2s1_asym", 2, 5, 5, 2, 2, 1, 1, 1, 5, 5),
    POOL("avg_same_2s1_asym", 2, 5, 5, 2, 2, 1, 1, 0, 5, 5),
};

static ck_conv_geom geom(const op_variant *v) {
    const int *p = v->iv;
    ck_conv_geom g;
    ck_conv_geom_make(&g, p[0], p[1], p[2], p[3], p[3], p[4], p[4], p[5], p[5], p[6]);
    return g;
}

static void cpu(const op_variant *v, float *const *in, float *const *out) {
    const ck_conv_geom g = geom(v);
    ck_cpu_pool_forward(&g, v->iv[7], in[0], out[0]);
    ck_cpu_pool_backward(&g, v->iv[7], in[0], in[1], out[1]);
}

static void ref(const op_variant *v, float *const *in, float *const *out) {
    const ck_conv_geom g = geom(v);
    ref_pool_forward(&g, v->iv[7], in[0], out[0]);
    ref_pool_backward(&g, v->iv[7], in[0], in[1], out[1]);
}

#ifdef CNNKIT_HAVE_CUDA
static int gpu_run(ck_context *c, const op_variant *v, ck_tensor *const *in,
                   ck_tensor *const *out) {
    const ck_conv_geom g = geom(v);
    const int dt = in[0]->dtype; /* the bf16 case's substitutes are bf16 words */
    const int e_ = ck_cuda_pool_forward(g, v->iv[7], OP_D(in[0]), OP_D(out[0]), dt, c->stream);
    return e_ ? e_
              : ck_cuda_pool_backward(g, v->iv[7], OP_D(in[0]), OP_D(in[1]), OP_D(out[1]), dt,
                                      c->stream);
}
#else
#define gpu_run NULL
#endif

/* the seed model's pooling inputs at batch 32 */
static const op_variant k_bench[] = {
    POOL("max_2s2_32x24x24x32", 32, 24, 24, 32, 2, 2, 0, 1, 12, 12),
    POOL("avg_2s2_32x24x24x32", 32, 24, 24, 32, 2, 2, 0, 0, 12, 12),
    POOL("max_same_3s2_32x24x24x32", 32, 24, 24, 32, 3, 2, 1, 1, 12, 12)};

const op_case op_pool = {
    .name = "pool",
    .launchers = "ck_cuda_pool_forward ck_cuda_pool_backward",
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

/* ---- bf16 storage (x, dy in, y, dx out: bit-exact on the GPU, which repeats the CPU's operations
 * on the same bf16-valued inputs and rounds the result the CPU twin rounds) ---- */

OP_BF16_HOST(cpu_bf16, cpu, 3u, 3u)
OP_BF16_HOST(ref_bf16, ref, 3u, 3u)

OP_BF16_GPU(gpu_bf16, gpu_run, 3u, 3u)

const op_case op_pool_bf16 = {
    .name = "pool_bf16",
    .launchers = "ck_cuda_pool_forward ck_cuda_pool_backward ck_cuda_bf16_pack ck_cuda_bf16_unpack",
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

/* ---- cuDNN's pooling (ck_gpool_cudnn) on the same data: the peer bench_ops times the kernels
 * above against (issue 14 item 5), not a path of the model. cuDNN pads both sides alike, so the
 * cases with asymmetric 'same' padding are left out. Max: exact (the same maximum; the inputs
 * have no ties, so the same argmax in the backward); average: cuDNN's own summation order, the
 * kernels' ref_tol. ---- */

static const op_variant k_cudnn_variants[] = {
    POOL("max_valid_2s2", 2, 6, 6, 3, 2, 2, 0, 1, 3, 3),
    POOL("avg_valid_3s1", 2, 5, 6, 3, 3, 1, 0, 0, 3, 4),
    POOL("max_same_3s2", 2, 5, 5, 3, 3, 2, 1, 1, 3, 3),
    POOL("avg_same_3s2", 2, 5, 5, 3, 3, 2, 1, 0, 3, 3),
};
static const op_variant k_cudnn_bench[] = {
    POOL("max_2s2_32x24x24x32", 32, 24, 24, 32, 2, 2, 0, 1, 12, 12),
    POOL("avg_2s2_32x24x24x32", 32, 24, 24, 32, 2, 2, 0, 0, 12, 12)};

#ifdef CNNKIT_HAVE_CUDA
static int gpu_cudnn(ck_context *c, const op_variant *v, ck_tensor *const *in,
                     ck_tensor *const *out) {
    const ck_conv_geom g = geom(v);
    const ck_status st = ck_gpool_cudnn(c, &g, v->iv[7], 0, OP_D(in[0]), NULL, NULL, OP_D(out[0]));
    return st != CK_STATUS_SUCCESS ? (int)st
                                   : (int)ck_gpool_cudnn(c, &g, v->iv[7], 1, OP_D(in[0]),
                                                         OP_D(out[0]), OP_D(in[1]), OP_D(out[1]));
}
#else
#define gpu_cudnn NULL
#endif

const op_case op_pool_cudnn = {
    .name = "pool_cudnn",
    .launchers = "",
    .variants = k_cudnn_variants,
    .nvariants = sizeof k_cudnn_variants / sizeof k_cudnn_variants[0],
    .bench_variants = k_cudnn_bench,
    .nbench = sizeof k_cudnn_bench / sizeof k_cudnn_bench[0],
    .cpu = cpu,
    .ref = ref,
    .ref_tol = 1e-6,
    .gpu = gpu_cudnn,
    .gpu_tol = 1e-6,
    .gpu_setup = "cuDNN pooling and tensor descriptors made per call",
};
