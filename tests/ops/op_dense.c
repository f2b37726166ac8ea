/* Dense, forward and backward: iv = {n, in, out}.
 * ref_tol 1e-5: the CPU's sgemm accumulates K <= 24 products in float (each rounding <= 6e-8 of
 * the running sum; K * 6e-8 ~ 1.5e-6 of the scale, plus cancellation), the reference in double.
 * gpu_tol 1e-4 of the output's scale: cuBLAS sums in its own order (test_gpu_layers' bound). */
#include "ops.h"

#include "cpu_layers.h"
#include "ref.h"
#ifdef CNNKIT_HAVE_CUDA
#include "gpu_layers.h"
#endif

#define DENSE(nm, n, i, o)                                                                         \
    {                                                                                              \
        nm, {n, i, o}, {0}, 4, 4,                                                                  \
            {{"x", n * i, OP_UNIFORM, -1, 1},                                                      \
             {"k", i * o, OP_UNIFORM, -0.5f, 0.5f},                                                \
             {"b", o, OP_UNIFORM, -0.5f, 0.5f},                                                    \
             {"dy", n * o, OP_UNIFORM, -1, 1}},                                                    \
        {                                                                                          \
            {"y", n * o, 0, 0, 0}, {"dx", n * i, 0, 0, 0}, {"dk", i * o, 0, 0, 0}, {               \
                "db", o, 0, 0, 0                                                                   \
            }                                                                                      \
        }                                                                                          \
    }

static const op_variant k_variants[] = {DENSE("5x24x7", 5, 24, 7), DENSE("1x8x3", 1, 8, 3),
                                        DENSE("9x16x10", 9, 16, 10)};

static void cpu(const op_variant *v, float *const *in, float *const *out) {
    const int *p = v->iv;
    ck_cpu_dense_forward(p[0], p[1], p[2], in[0], in[1], in[2], out[0]);
    ck_cpu_dense_backward(p[0], p[1], p[2], in[0], in[1], in[3], out[1], out[2], out[3]);
}

static void ref(const op_variant *v, float *const *in, float *const *out) {
    const int *p = v->iv;
    ref_dense_forward(p[0], p[1], p[2], in[0], in[1], in[2], out[0]);
    ref_dense_backward(p[0], p[1], p[2], in[0], in[1], in[3], out[1], out[2], out[3]);
}

#ifdef CNNKIT_HAVE_CUDA
static int gpu_run(ck_context *g, const op_variant *v, ck_tensor *const *in,
                   ck_tensor *const *out) {
    const int *p = v->iv;
    ck_workspace *ws = NULL;
    if (ck_workspace_create(g, &ws, ck_gdense_workspace_bytes(p[2])) != CK_STATUS_SUCCESS)
        return -1;
    int e =
        ck_gdense_forward(g, p[0], p[1], p[2], OP_D(in[0]), OP_D(in[1]), OP_D(in[2]), OP_D(out[0]));
    if (!e)
        e = ck_gdense_backward(g, p[0], p[1], p[2], OP_D(in[0]), OP_D(in[1]), OP_D(in[3]),
                               OP_D(out[1]), OP_D(out[2]), OP_D(out[3]), ws->data);
    ck_context_synchronize(g);
    ck_workspace_destroy(ws);
    return e;
}
#else
#define gpu_run NULL
#endif

/* ck_gdense_* reach the bias kernels: bias add forward, column sums for the bias gradient. */
/* the seed model's Dense layers at batch 128 */
static const op_variant k_bench[] = {DENSE("128x1024x512", 128, 1024, 512),
                                     DENSE("128x512x10", 128, 512, 10)};

const op_case op_dense = {
    .name = "dense",
    .launchers = "ck_cuda_bias_add ck_cuda_colsum ck_cuda_colsum_workspace_bytes",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
    .bench_variants = k_bench,
    .nbench = sizeof k_bench / sizeof k_bench[0],
    .cpu = cpu,
    .ref = ref,
    .ref_tol = 1e-5,
    .gpu = gpu_run,
    .gpu_tol = 1e-4,
    .gpu_setup = "workspace and a sync per call",
    .grad_y = 0,
    .grad_dy = 3,
    .ngrad = 3,
    .grad = {{0, 1}, {1, 2}, {2, 3}},
    .grad_tol = 1e-3,
};
