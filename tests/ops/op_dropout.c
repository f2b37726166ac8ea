/* Dropout and SpatialDropout in training, forward and backward, through the public API:
 * iv = {spatial, n, c, h, w, offset, packet}, fv = {rate}; NHWC images. packet 1: as a training
 * step runs them (ck_dropout_keyed): on a GPU the kernels read the offset from a step packet
 * (ck_kstep, offset = step * 4096 + layer) and the descriptor's offset is a wrong one.
 * Exact everywhere (ref_tol and gpu_tol 0): the masks are the Philox function of ck_math.h and
 * y = x * (keep ? 1 / (1 - rate) : 0) is one float multiply on every backend. */
#include "ops.h"

#include <math.h>
#include <stdlib.h>

#include "internal.h"
#include "ref.h"
#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"
#endif

#define DROPK(nm, sp, n, c, h, w, off, rate, packet)                                               \
    {                                                                                              \
        nm, {sp, n, c, h, w, off, packet}, {rate}, 2, 2,                                           \
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

#define DROP(nm, sp, n, c, h, w, off, rate) DROPK(nm, sp, n, c, h, w, off, rate, 0)

static const op_variant k_variants[] = {
    DROP("element_w7", 0, 3, 5, 4, 7, 11, 0.3f),
    DROP("element_rate_half", 0, 2, 3, 5, 5, 0, 0.5f),
    DROP("spatial", 1, 6, 9, 3, 3, 5, 0.4f),
    DROPK("element_step_packet", 0, 3, 5, 4, 7, 3 * 4096 + 17, 0.3f, 1),
    DROPK("spatial_step_packet", 1, 6, 9, 3, 3, 7 * 4096 + 2, 0.4f, 1),
};

/* packet variants: forward and backward as the executor runs them */
static int keyed(ck_context *ctx, const op_variant *v, ck_tensor *const *in,
                 ck_tensor *const *out) {
    ck_dropout_desc d = {v->fv[0], (uint64_t)v->iv[5], 0};
    ck_drop_key key = {NULL, v->iv[5] % 4096};
    ck_workspace *w = NULL;
#ifdef CNNKIT_HAVE_CUDA
    if (ck_context_device(ctx) == CK_DEVICE_CUDA) {
        if (ck_workspace_create(ctx, &w, sizeof(ck_kstep)) != CK_STATUS_SUCCESS)
            return -1;
        key.step = (const ck_kstep *)w->data;
        if (ck_cuda_step_set((ck_kstep *)w->data, v->iv[5] / 4096, 0.0f, ck_context_stream(ctx))) {
            ck_workspace_destroy(w);
            return -1;
        }
        d.offset = 99; /* not the one the kernels must use */
    }
#endif
    const ck_dropout_kind kind = v->iv[0] ? CK_DROPOUT_SPATIAL : CK_DROPOUT_ELEMENT;
    int e = ck_dropout_keyed(ctx, kind, &d, key, in[0], "x", out[0], "y");
    if (!e)
        e = ck_dropout_keyed(ctx, kind, &d, key, in[1], "dy", out[1], "dx");
    ck_workspace_destroy(w);
    return e;
}

static int api(ck_context *ctx, const op_variant *v, ck_tensor *const *in, ck_tensor *const *out) {
    if (v->iv[6])
        return keyed(ctx, v, in, out);
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

/* ---- bf16 storage (x, dy in, y, dx out: the same masks, one fp32 multiply rounded once: exact)
 * ---- */

OP_BF16_HOST(cpu_bf16, cpu, 3u, 3u)
OP_BF16_HOST(ref_bf16, ref, 3u, 3u)

/* the fp32 shapes (C % 8 != 0: the scalar kernels) and ones whose channels take the 8-word
 * paths: W 7 ends on a group of three, W 8 on full groups */
static const op_variant k_variants_bf16[] = {
    DROP("element_w7", 0, 3, 5, 4, 7, 11, 0.3f),
    DROP("element_rate_half", 0, 2, 3, 5, 5, 0, 0.5f),
    DROP("spatial", 1, 6, 9, 3, 3, 5, 0.4f),
    DROPK("element_step_packet", 0, 3, 5, 4, 7, 3 * 4096 + 17, 0.3f, 1),
    DROPK("spatial_step_packet", 1, 6, 9, 3, 3, 7 * 4096 + 2, 0.4f, 1),
    DROP("element_c8_w7", 0, 3, 8, 4, 7, 11, 0.3f),
    DROP("element_c16_w8", 0, 2, 16, 3, 8, 2, 0.5f),
    DROP("spatial_c16", 1, 6, 16, 3, 3, 5, 0.4f),
    DROPK("spatial_c8_step_packet", 1, 5, 8, 2, 3, 7 * 4096 + 2, 0.4f, 1),
};

OP_BF16_GPU(gpu_bf16, api, 3u, 3u)

const op_case op_dropout_bf16 = {
    .name = "dropout_bf16",
    .launchers = "ck_cuda_dropout ck_cuda_bf16_pack ck_cuda_bf16_unpack",
    .variants = k_variants_bf16,
    .nvariants = sizeof k_variants_bf16 / sizeof k_variants_bf16[0],
    .bench_variants = k_bench,
    .nbench = sizeof k_bench / sizeof k_bench[0],
    .cpu = cpu_bf16,
    .ref = ref_bf16,
    .ref_tol = 0,
    .gpu = OP_GPU(gpu_bf16),
    .gpu_tol = 0,
    .gpu_setup = OP_BF16_SETUP,
};
