/* Optimizer updates (Keras Adam, SGD and RMSprop, decoupled weight decay first), in place: the
 * outputs start as the inputs p, m, v (vel). Adam: iv = {count, step, packet}, fv = {lr,
 * weight_decay} (packet 1: the GPU runner passes alpha in a step packet, ck_kstep, as a training
 * step does, and NaN by value);
 * SGD: iv = {count, nesterov}, fv = {lr, weight_decay, momentum};
 * RMSprop: iv = {count, centered}, fv = {lr, weight_decay, momentum, rho, epsilon};
 * Adadelta: iv = {count}, fv = {lr, weight_decay, rho, epsilon}.
 * ref_tol 1e-6 of the parameters' scale: the CPU updates in float (ck_adam_elem / ck_sgd_elem /
 * ck_rmsprop_elem, a
 * handful of roundings of 6e-8 each, on a step much smaller than p), the reference in double.
 * gpu_tol 0: the kernels run the same ck_math.h element functions. */
#include "ops.h"

#include <math.h>

#include "ck_math.h"
#include "cpu_layers.h"
#include "ref.h"
#ifdef CNNKIT_HAVE_CUDA
#include "gpu_layers.h"
#endif

#define B1 0.9f
#define B2 0.999f
#define EPS 1e-7f

#define ADAM(nm, n, step, packet, lr, wd)                                                          \
    {                                                                                              \
        nm, {n, step, packet}, {lr, wd}, 4, 3,                                                     \
            {{"p", n, OP_UNIFORM, -1, 1},                                                          \
             {"g", n, OP_UNIFORM, -1, 1},                                                          \
             {"m", n, OP_UNIFORM, -0.1f, 0.1f},                                                    \
             {"v", n, OP_UNIFORM, 0, 0.01f}},                                                      \
        {                                                                                          \
            {"p", n, 0, 0, 0, 1}, {"m", n, 0, 0, 0, 3}, {                                          \
                "v", n, 0, 0, 0, 4                                                                 \
            }                                                                                      \
        }                                                                                          \
    }

static const op_variant k_adam[] = {ADAM("step1", 257, 1, 0, 1e-3f, 0),
                                    ADAM("step7_decay", 1000, 7, 0, 1e-2f, 0.05f),
                                    ADAM("step9001_packet", 1000, 9001, 1, 1e-3f, 0.05f)};

static void adam_cpu(const op_variant *v, float *const *in, float *const *out) {
    ck_cpu_adam_update(out[0], in[1], out[1], out[2], (size_t)v->iv[0], v->fv[0], B1, B2, EPS,
                       v->fv[1], v->iv[1]);
}

static void adam_ref(const op_variant *v, float *const *in, float *const *out) {
    ref_adam(out[0], in[1], out[1], out[2], (size_t)v->iv[0], v->fv[0], B1, B2, EPS, v->fv[1],
             v->iv[1]);
}

#ifdef CNNKIT_HAVE_CUDA
/* The host's part of a step, as the GPU executor does it: alpha in double, decay = lr * wd. */
static int adam_gpu(ck_context *g, const op_variant *v, ck_tensor *const *in,
                    ck_tensor *const *out) {
    const float alpha = ck_adam_alpha(v->fv[0], B1, B2, v->iv[1]);
    const float decay = v->fv[1] > 0.0f ? v->fv[0] * v->fv[1] : 0.0f;
    if (!v->iv[2])
        return ck_cuda_adam(OP_D(out[0]), OP_D(in[1]), OP_D(out[1]), OP_D(out[2]), (size_t)v->iv[0],
                            alpha, NULL, B1, B2, EPS, decay, NULL, g->stream);
    /* alpha read on the device from the packet (the step counter is the packet's step + 1) */
    ck_workspace *w = NULL;
    if (ck_workspace_create(g, &w, sizeof(ck_kstep)) != CK_STATUS_SUCCESS)
        return -1;
    ck_kstep *k = (ck_kstep *)w->data;
    int e = ck_cuda_step_set(k, v->iv[1] - 1, alpha, g->stream);
    if (!e)
        e = ck_cuda_adam(OP_D(out[0]), OP_D(in[1]), OP_D(out[1]), OP_D(out[2]), (size_t)v->iv[0],
                         NAN, k, B1, B2, EPS, decay, NULL, g->stream);
    ck_workspace_destroy(w); /* cudaFree: after the kernels */
    return e;
}
#else
#define adam_gpu NULL
#endif

/* about the seed model's parameter count */
static const op_variant k_adam_bench[] = {ADAM("1M", 1 << 20, 7, 0, 1e-3f, 0)};

const op_case op_adam = {
    .name = "adam",
    .launchers = "ck_cuda_adam ck_cuda_step_set",
    .variants = k_adam,
    .nvariants = sizeof k_adam / sizeof k_adam[0],
    .bench_variants = k_adam_bench,
    .nbench = sizeof k_adam_bench / sizeof k_adam_bench[0],
    .cpu = adam_cpu,
    .ref = adam_ref,
    .ref_tol = 1e-6,
    .gpu = adam_gpu,
    .gpu_tol = 0,
};

#define SGD(nm, n, nest, lr, wd, mom)                                                              \
    {                                                                                              \
        nm, {n, nest}, {lr, wd, mom}, 3, 2,                                                        \
            {{"p", n, OP_UNIFORM, -1, 1},                                                          \
             {"g", n, OP_UNIFORM, -1, 1},                                                          \
             {"vel", n, OP_UNIFORM, -0.1f, 0.1f}},                                                 \
        {                                                                                          \
            {"p", n, 0, 0, 0, 1}, {                                                                \
                "vel", n, 0, 0, 0, 3                                                               \
            }                                                                                      \
        }                                                                                          \
    }

static const op_variant k_sgd[] = {SGD("plain", 300, 0, 0.05f, 0, 0),
                                   SGD("momentum", 300, 0, 0.05f, 0, 0.9f),
                                   SGD("nesterov_decay", 300, 1, 0.05f, 0.01f, 0.9f)};

/* momentum 0: no velocity (the output keeps its start) */
static void sgd_cpu(const op_variant *v, float *const *in, float *const *out) {
    ck_cpu_sgd_update(out[0], in[1], v->fv[2] > 0 ? out[1] : NULL, (size_t)v->iv[0], v->fv[0],
                      v->fv[2], v->iv[1], v->fv[1]);
}

static void sgd_ref(const op_variant *v, float *const *in, float *const *out) {
    ref_sgd(out[0], in[1], v->fv[2] > 0 ? out[1] : NULL, (size_t)v->iv[0], v->fv[0], v->fv[2],
            v->iv[1], v->fv[1]);
}

#ifdef CNNKIT_HAVE_CUDA
static int sgd_gpu(ck_context *g, const op_variant *v, ck_tensor *const *in,
                   ck_tensor *const *out) {
    const float decay = v->fv[1] > 0.0f ? v->fv[0] * v->fv[1] : 0.0f;
    return ck_cuda_sgd(OP_D(out[0]), OP_D(in[1]), v->fv[2] > 0 ? OP_D(out[1]) : NULL,
                       (size_t)v->iv[0], v->fv[0], v->fv[2], v->iv[1], decay, NULL, g->stream);
}
#else
#define sgd_gpu NULL
#endif

static const op_variant k_sgd_bench[] = {SGD("nesterov_1M", 1 << 20, 1, 0.05f, 0.01f, 0.9f)};

const op_case op_sgd = {
    .name = "sgd",
    .launchers = "ck_cuda_sgd",
    .variants = k_sgd,
    .nvariants = sizeof k_sgd / sizeof k_sgd[0],
    .bench_variants = k_sgd_bench,
    .nbench = sizeof k_sgd_bench / sizeof k_sgd_bench[0],
    .cpu = sgd_cpu,
    .ref = sgd_ref,
    .ref_tol = 1e-6,
    .gpu = sgd_gpu,
    .gpu_tol = 0,
};

#define RMSPROP(nm, n, centered, lr, wd, mom, rho, eps)                                            \
    {                                                                                              \
        nm, {n, centered}, {lr, wd, mom, rho, eps}, 4, 3,                                          \
            {{"p", n, OP_UNIFORM, -1, 1},                                                          \
             {"g", n, OP_UNIFORM, -1, 1},                                                          \
             {"vel", n, OP_UNIFORM, 0.01f, 0.5f},                                                  \
             {"aux", n, OP_UNIFORM, -0.1f, 0.1f}},                                                 \
        {                                                                                          \
            {"p", n, 0, 0, 0, 1}, {"vel", n, 0, 0, 0, 3}, {                                        \
                "aux", n, 0, 0, 0, 4                                                               \
            }                                                                                      \
        }                                                                                          \
    }

/* vel >= aux^2 (0.01 >= 0.1^2), as training keeps it from zero: the centered variance >= 0 */
static const op_variant k_rmsprop[] = {
    RMSPROP("plain", 300, 0, 1e-3f, 0, 0, 0.9f, 1e-7f),
    RMSPROP("momentum_decay", 300, 0, 1e-2f, 0.05f, 0.9f, 0.8f, 1e-7f),
    RMSPROP("centered", 1000, 1, 1e-3f, 0, 0, 0.9f, 1e-3f)};

static float *rmsprop_aux(const op_variant *v, float *const *out) {
    return v->iv[1] || v->fv[2] > 0 ? out[2] : NULL;
}

static void rmsprop_cpu(const op_variant *v, float *const *in, float *const *out) {
    ck_cpu_rmsprop_update(out[0], in[1], out[1], rmsprop_aux(v, out), (size_t)v->iv[0], v->fv[0],
                          v->fv[3], v->fv[4], v->fv[2], v->iv[1], v->fv[1]);
}

static void rmsprop_ref(const op_variant *v, float *const *in, float *const *out) {
    ref_rmsprop(out[0], in[1], out[1], rmsprop_aux(v, out), (size_t)v->iv[0], v->fv[0], v->fv[3],
                v->fv[4], v->fv[2], v->iv[1], v->fv[1]);
}

#ifdef CNNKIT_HAVE_CUDA
static int rmsprop_gpu(ck_context *g, const op_variant *v, ck_tensor *const *in,
                       ck_tensor *const *out) {
    const float decay = v->fv[1] > 0.0f ? v->fv[0] * v->fv[1] : 0.0f;
    return ck_cuda_rmsprop(
        OP_D(out[0]), OP_D(in[1]), OP_D(out[1]), v->iv[1] || v->fv[2] > 0 ? OP_D(out[2]) : NULL,
        (size_t)v->iv[0], v->fv[0], v->fv[3], v->fv[4], v->fv[2], v->iv[1], decay, NULL, g->stream);
}
#else
#define rmsprop_gpu NULL
#endif

static const op_variant k_rmsprop_bench[] = {
    RMSPROP("momentum_1M", 1 << 20, 0, 1e-3f, 0, 0.9f, 0.9f, 1e-7f)};

const op_case op_rmsprop = {
    .name = "rmsprop",
    .launchers = "ck_cuda_rmsprop",
    .variants = k_rmsprop,
    .nvariants = sizeof k_rmsprop / sizeof k_rmsprop[0],
    .bench_variants = k_rmsprop_bench,
    .nbench = sizeof k_rmsprop_bench / sizeof k_rmsprop_bench[0],
    .cpu = rmsprop_cpu,
    .ref = rmsprop_ref,
    .ref_tol = 1e-6,
    .gpu = rmsprop_gpu,
    .gpu_tol = 0,
};

#define ADADELTA(nm, n, lr, wd, rho, eps)                                                          \
    {                                                                                              \
        nm, {n}, {lr, wd, rho, eps}, 4, 3,                                                         \
            {{"p", n, OP_UNIFORM, -1, 1},                                                          \
             {"g", n, OP_UNIFORM, -1, 1},                                                          \
             {"ag", n, OP_UNIFORM, 0, 0.5f},                                                       \
             {"ad", n, OP_UNIFORM, 0, 0.01f}},                                                     \
        {                                                                                          \
            {"p", n, 0, 0, 0, 1}, {"ag", n, 0, 0, 0, 3}, {                                         \
                "ad", n, 0, 0, 0, 4                                                                \
            }                                                                                      \
        }                                                                                          \
    }

static const op_variant k_adadelta[] = {ADADELTA("defaults", 300, 1e-3f, 0, 0.95f, 1e-7f),
                                        ADADELTA("lr1_decay", 1000, 1.0f, 0.01f, 0.8f, 1e-3f)};

static void adadelta_cpu(const op_variant *v, float *const *in, float *const *out) {
    ck_cpu_adadelta_update(out[0], in[1], out[1], out[2], (size_t)v->iv[0], v->fv[0], v->fv[2],
                           v->fv[3], v->fv[1]);
}

static void adadelta_ref(const op_variant *v, float *const *in, float *const *out) {
    ref_adadelta(out[0], in[1], out[1], out[2], (size_t)v->iv[0], v->fv[0], v->fv[2], v->fv[3],
                 v->fv[1]);
}

#ifdef CNNKIT_HAVE_CUDA
static int adadelta_gpu(ck_context *g, const op_variant *v, ck_tensor *const *in,
                        ck_tensor *const *out) {
    const float decay = v->fv[1] > 0.0f ? v->fv[0] * v->fv[1] : 0.0f;
    return ck_cuda_adadelta(OP_D(out[0]), OP_D(in[1]), OP_D(out[1]), OP_D(out[2]), (size_t)v->iv[0],
                            v->fv[0], v->fv[2], v->fv[3], decay, NULL, g->stream);
}
#else
#define adadelta_gpu NULL
#endif

static const op_variant k_adadelta_bench[] = {ADADELTA("1M", 1 << 20, 1e-3f, 0, 0.95f, 1e-7f)};

const op_case op_adadelta = {
    .name = "adadelta",
    .launchers = "ck_cuda_adadelta",
    .variants = k_adadelta,
    .nvariants = sizeof k_adadelta / sizeof k_adadelta[0],
    .bench_variants = k_adadelta_bench,
    .nbench = sizeof k_adadelta_bench / sizeof k_adadelta_bench[0],
    .cpu = adadelta_cpu,
    .ref = adadelta_ref,
    .ref_tol = 1e-6,
    .gpu = adadelta_gpu,
    .gpu_tol = 0,
};
