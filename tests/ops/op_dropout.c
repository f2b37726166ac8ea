/* Dropout and SpatialDropout in training, forward and backward, through the public API:
 * iv = {spatial, n, c, h, w, offset}, fv = {rate}; NHWC images.
 * Exact everywhere (ref_tol and gpu_tol 0): the masks are the Philox function of ck_math.h and
 * y = x * (keep ? 1 / (1 - rate) : 0) is one float multiply on every backend. */
#include "ops.h"

#include <math.h>
#include <stdlib.h>

#include "ref.h"

#define DROP(nm, sp, n, c, h, w, off, rate)                                                        \
    {                                                                                              \
        nm, {sp, n, c, h, w, off}, {rate}, 2, 2,                                                   \
            {{"x", n * c * h * w, OP_UNIFORM, -2, 2, 0, {n, c, h, w}},                             \
             {"dy", n * c * h * w, OP_UNIFORM, -1, 1, 0, {n, c, h, w}}},                           \
        {                                                                                          \
            {"y", n * c * h * w, 0, 0, 0, 0, {n, c, h, w}}, {                                      \
                "dx", n *c *h *w, 0, 0, 0, 0, {                                                    \
                    n, c, h, w                                                                     \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

static const op_variant k_variants[] = {
    DROP("element_w7", 0, 3, 5, 4, 7, 11, 0.3f),
    DROP("element_rate_half", 0, 2, 3, 5, 5, 0, 0.5f),
    DROP("spatial", 1, 6, 9, 3, 3, 5, 0.4f),
};

static int api(ck_context *ctx, const op_variant *v, ck_tensor *const *in, ck_tensor *const *out) {
    const ck_dropout_desc d = {v->fv[0], (uint64_t)v->iv[5], 0};
    /* sequenced: | would not order the forward before the backward */
    const int e = v->iv[0]
                      ? ck_spatial_dropout_forward(ctx, &d, CK_MODE_TRAINING, in[0], out[0], NULL)
                      : ck_dropout_forward(ctx, &d, CK_MODE_TRAINING, in[0], out[0], NULL);
    if (e)
        return e;
    return v->iv[0] ? ck_spatial_dropout_backward(ctx, &d, CK_MODE_TRAINING, in[1], out[1], NULL)
                    : ck_dropout_backward(ctx, &d, CK_MODE_TRAINING, in[1], out[1], NULL);
}

static void cpu(const op_variant *v, float *const *in, float *const *out) {
    if (op_run_cpu(api, v, in, out))
        out[0][0] = NAN;
}

static void ref(const op_variant *v, float *const *in, float *const *out) {
    const int *p = v->iv;
    uint8_t *keep = malloc(v->in[0].count);
    if (!keep) {
        out[0][0] = NAN;
        return;
    }
    ref_dropout_mask(p[0], OP_SEED, (uint64_t)p[5], v->fv[0], p[1], p[2], p[3], p[4], keep);
    ref_dropout_apply(p[0], keep, v->fv[0], p[1], p[2], p[3], p[4], in[0], out[0]);
    ref_dropout_apply(p[0], keep, v->fv[0], p[1], p[2], p[3], p[4], in[1], out[1]);
    free(keep);
}

/* the seed model's dropouts at batch 32 */
static const op_variant k_bench[] = {DROP("element_32x32x12x12", 0, 32, 32, 12, 12, 3, 0.2f),
                                     DROP("spatial_32x32x12x12", 1, 32, 32, 12, 12, 3, 0.2f)};

const op_case op_dropout = {
    .name = "dropout",
    .launchers = "ck_cuda_dropout",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
    .bench_variants = k_bench,
    .nbench = sizeof k_bench / sizeof k_bench[0],
    .api = api,
    .cpu = cpu,
    .ref = ref,
    .ref_tol = 0,
#ifdef CNNKIT_HAVE_CUDA
    .gpu = api,
#endif
    .gpu_tol = 0,
    .grad_y = 0,
    .grad_dy = 1,
    .ngrad = 1,
    .grad = {{0, 1}},
    .grad_tol = 1e-3,
};
