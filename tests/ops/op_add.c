/* The elementwise sum of the Add layer and of graph models' gradient sums: the CPU backend's add
 * (ck_backend_cpu.add) against the reference, dst[i] = a[i] + b[i] with one float rounding either
 * way (ref_tol 0), and the GPU's (ck_cuda_add) against the CPU bit for bit (gpu_tol 0). Add's
 * backward hands dy to every input (a backend copy): the gradient of <dy, a + b> with respect to
 * a, checked by central differences through the reference forward. */
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

static void add_ref(const op_variant *v, float *const *in, float *const *out) {
    for (int i = 0; i < v->iv[0]; ++i)
        out[0][i] = in[0][i] + in[1][i];
    memcpy(out[1], in[2], sizeof(float) * (size_t)v->iv[0]);
}

static void add_cpu(const op_variant *v, float *const *in, float *const *out) {
    const size_t n = (size_t)v->iv[0];
    ck_backend_cpu.add(NULL, out[0], in[0], in[1], n);
    ck_backend_cpu.copy(NULL, out[1], in[2], n);
}

#ifdef CNNKIT_HAVE_CUDA
static int add_gpu(ck_context *g, const op_variant *v, ck_tensor *const *in,
                   ck_tensor *const *out) {
    const int e_ = ck_cuda_add(OP_D(out[0]), OP_D(in[0]), OP_D(in[1]), (size_t)v->iv[0], g->stream);
    /* the backward of Add is a copy of dy: dx = dy + 0 through the same kernel */
    return e_ ? e_
              : ck_cuda_add(OP_D(out[1]), OP_D(in[2]), OP_D(out[1]), (size_t)v->iv[0], g->stream);
}
#else
#define add_gpu NULL
#endif

const op_case op_add = {
    .name = "add",
    .launchers = "ck_cuda_add",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
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
