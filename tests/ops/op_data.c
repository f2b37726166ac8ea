/* Data moves and fills of the GPU backend, checked against the reference alone (the CPU backend
 * has no such ops: it pads inside its convolution loops and keeps HWIO kernels). All exact
 * (gpu_tol 0): they move or write values, no arithmetic. */
#include "ops.h"

#include <math.h>
#include <string.h>

#include "cnnkit/data.h"
#include "ref.h"
#ifdef CNNKIT_HAVE_CUDA
#include "gpu_layers.h"
#endif

#ifndef CNNKIT_HAVE_CUDA
#define pad_gpu NULL
#define layout_gpu NULL
#define flag_gpu NULL
#define fill_gpu NULL
#endif

/* ---- zero padding and its crop: iv = {n, h, w, c, pt, pl, hp, wp} ---- */
#define PAD(nm, n, h, w, c, pt, pl, hp, wp)                                                        \
    {                                                                                              \
        nm, {n, h, w, c, pt, pl, hp, wp}, {0}, 1, 2, {{"x", n * h * w * c, OP_UNIFORM, -1, 1}}, {  \
            {"padded", n * hp * wp * c, 0, 0, 0}, {                                                \
                "cropped", n *h *w *c, 0, 0, 0                                                     \
            }                                                                                      \
        }                                                                                          \
    }

static const op_variant k_pad[] = {PAD("asym_0_1", 2, 4, 5, 3, 0, 0, 5, 6),
                                   PAD("sym_1", 1, 3, 3, 2, 1, 1, 5, 5),
                                   PAD("wide_2_1", 2, 3, 4, 1, 2, 1, 6, 7)};

/* The crop of the padding is x again. */
static void pad_ref(const op_variant *v, float *const *in, float *const *out) {
    const int *p = v->iv;
    ref_pad(in[0], out[0], p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]);
    memcpy(out[1], in[0], v->out[1].count * sizeof(float));
}

#ifdef CNNKIT_HAVE_CUDA
static int pad_gpu(ck_context *g, const op_variant *v, ck_tensor *const *in,
                   ck_tensor *const *out) {
    const int *p = v->iv;
    const int e_ = ck_cuda_pad_nhwc(OP_D(in[0]), OP_D(out[0]), p[0], p[1], p[2], p[3], p[4], p[5],
                                    p[6], p[7], 0, CK_KDT_F32, g->stream);
    return e_ ? e_
              : ck_cuda_pad_nhwc(OP_D(out[0]), OP_D(out[1]), p[0], p[1], p[2], p[3], p[4], p[5],
                                 p[6], p[7], 1, CK_KDT_F32, g->stream);
}
#endif

static const op_variant k_pad_bench[] = {PAD("same_3x3_32x26x26x32", 32, 26, 26, 32, 1, 1, 28, 28)};

const op_case op_pad = {
    .name = "pad",
    .launchers = "ck_cuda_pad_nhwc",
    .variants = k_pad,
    .nvariants = sizeof k_pad / sizeof k_pad[0],
    .bench_variants = k_pad_bench,
    .nbench = sizeof k_pad_bench / sizeof k_pad_bench[0],
    .ref = pad_ref,
    .gpu = pad_gpu,
};

/* ---- conv kernel layouts: iv = {khw, cin, cout, kcrs}; to cuDNN's layout and back ---- */
#define LAYOUT(nm, khw, ci, co, kcrs)                                                              \
    {                                                                                              \
        nm, {khw, ci, co, kcrs}, {0}, 1, 2, {{"hwio", khw * ci * co, OP_UNIFORM, -1, 1}}, {        \
            {"cudnn", khw * ci * co, 0, 0, 0}, {                                                   \
                "back", khw *ci *co, 0, 0, 0                                                       \
            }                                                                                      \
        }                                                                                          \
    }

static const op_variant k_layout[] = {
    LAYOUT("krsc_3x3", 9, 3, 5, 0), LAYOUT("kcrs_3x3", 9, 3, 5, 1), LAYOUT("krsc_1x1", 1, 7, 2, 0)};

static void layout_ref(const op_variant *v, float *const *in, float *const *out) {
    ref_kernel_layout(in[0], out[0], v->iv[0], v->iv[1], v->iv[2], v->iv[3]);
    memcpy(out[1], in[0], v->out[1].count * sizeof(float));
}

#ifdef CNNKIT_HAVE_CUDA
static int layout_gpu(ck_context *g, const op_variant *v, ck_tensor *const *in,
                      ck_tensor *const *out) {
    const int *p = v->iv;
    const int e_ = ck_cuda_conv_kernel_layout(OP_D(in[0]), OP_D(out[0]), p[0], p[1], p[2], 1, p[3],
                                              CK_KDT_F32, g->stream);
    return e_ ? e_
              : ck_cuda_conv_kernel_layout(OP_D(out[0]), OP_D(out[1]), p[0], p[1], p[2], 0, p[3],
                                           CK_KDT_F32, g->stream);
}
#endif

static const op_variant k_layout_bench[] = {LAYOUT("krsc_3x3x64x64", 9, 64, 64, 0),
                                            LAYOUT("kcrs_3x3x64x64", 9, 64, 64, 1)};

const op_case op_layout = {
    .name = "layout",
    .launchers = "ck_cuda_conv_kernel_layout",
    .variants = k_layout,
    .nvariants = sizeof k_layout / sizeof k_layout[0],
    .bench_variants = k_layout_bench,
    .nbench = sizeof k_layout_bench / sizeof k_layout_bench[0],
    .ref = layout_ref,
    .gpu = layout_gpu,
};

/* ---- non-finite flag: iv = {count, where (-1: nowhere)}, fv = {value planted there} ---- */
#define FLAG(nm, n, at, val)                                                                       \
    {                                                                                              \
        nm, {n, at}, {val}, 1, 1, {{"p", n, OP_UNIFORM, -1e30f, 1e30f}}, {                         \
            { "flag", 1, 0, 0, 0 }                                                                 \
        }                                                                                          \
    }

static const op_variant k_flag[] = {FLAG("finite", 5000, -1, 0), FLAG("inf", 5000, 4321, INFINITY),
                                    FLAG("nan", 77, 0, NAN), FLAG("neg_inf", 77, 76, -INFINITY)};

/* The flag is an int: 1 when any value is NaN or Inf, else left at 0. */
static void flag_ref(const op_variant *v, float *const *in, float *const *out) {
    const int one = 1;
    if (v->iv[1] >= 0)
        in[0][v->iv[1]] = v->fv[0];
    for (int i = 0; i < v->iv[0]; i++)
        if (!isfinite(in[0][i]))
            memcpy(out[0], &one, sizeof one);
}

#ifdef CNNKIT_HAVE_CUDA
static int flag_gpu(ck_context *g, const op_variant *v, ck_tensor *const *in,
                    ck_tensor *const *out) {
    int e = 0;
    if (v->iv[1] >= 0)
        e = ck_cuda_fill(OP_D(in[0]) + v->iv[1], 1, v->fv[0], g->stream);
    return e ? e
             : ck_cuda_flag_nonfinite(OP_D(in[0]), (size_t)v->iv[0], (int *)OP_D(out[0]),
                                      g->stream);
}
#endif

static const op_variant k_flag_bench[] = {FLAG("finite_1M", 1 << 20, -1, 0)};

const op_case op_flag = {
    .name = "flag",
    .launchers = "ck_cuda_flag_nonfinite",
    .variants = k_flag,
    .nvariants = sizeof k_flag / sizeof k_flag[0],
    .bench_variants = k_flag_bench,
    .nbench = sizeof k_flag_bench / sizeof k_flag_bench[0],
    .ref = flag_ref,
    .gpu = flag_gpu,
};

/* ---- fill: iv = {count}, fv = {value} ---- */
#define FILL(nm, n, val)                                                                           \
    {                                                                                              \
        nm, {n}, {val}, 0, 1, {{0}}, {                                                             \
            { "y", n, 0, 0, 0 }                                                                    \
        }                                                                                          \
    }

static const op_variant k_fill[] = {FILL("odd", 1001, -2.5f), FILL("one", 1, 3.0f),
                                    FILL("neg_zero", 64, -0.0f)};

static void fill_ref(const op_variant *v, float *const *in, float *const *out) {
    for (int i = 0; i < v->iv[0]; i++)
        out[0][i] = v->fv[0];
}

#ifdef CNNKIT_HAVE_CUDA
static int fill_gpu(ck_context *g, const op_variant *v, ck_tensor *const *in,
                    ck_tensor *const *out) {
    return ck_cuda_fill(OP_D(out[0]), (size_t)v->iv[0], v->fv[0], g->stream);
}
#endif

static const op_variant k_fill_bench[] = {FILL("1M", 1 << 20, 0.5f)};

const op_case op_fill = {
    .name = "fill",
    .launchers = "ck_cuda_fill",
    .variants = k_fill,
    .nvariants = sizeof k_fill / sizeof k_fill[0],
    .bench_variants = k_fill_bench,
    .nbench = sizeof k_fill_bench / sizeof k_fill_bench[0],
    .ref = fill_ref,
    .gpu = fill_gpu,
};

/* ---- a device-resident training set's batch (ck_cuda_gather_rows) against the host's
 * ck_dataset_gather: rows perm[start ..] of the images and their labels, copied (exact).
 * iv = {rows, per, start, n}; in: images, labels, perm (int32 bits); out: x, labels ---- */
#define GATHER(nm, rows, per, start, n)                                                            \
    {                                                                                              \
        nm, {rows, per, start, n}, {0}, 3, 2,                                                      \
            {{"images", (rows) * (per), OP_UNIFORM, -1, 1},                                        \
             {"labels", rows, OP_LABELS, 0, 10},                                                   \
             {"perm", (start) + (n), OP_LABELS, 0, rows}},                                         \
        {                                                                                          \
            {"x", (n) * (per), 0, 0, 0}, {                                                         \
                "y", n, 0, 0, 0                                                                    \
            }                                                                                      \
        }                                                                                          \
    }

static const op_variant k_gather[] = {GATHER("mnist_rows", 50, 784, 7, 16),
                                      GATHER("one_row", 3, 5, 0, 1),
                                      GATHER("odd_rows", 97, 33, 40, 57)};
static const op_variant k_gather_bench[] = {GATHER("batch512_of_4096", 4096, 784, 1024, 512)};

static void gather_ref(const op_variant *v, float *const *in, float *const *out) {
    const int per = v->iv[1], start = v->iv[2], n = v->iv[3];
    const int32_t *labels = (const int32_t *)in[1], *perm = (const int32_t *)in[2];
    for (int i = 0; i < n; i++) {
        const int32_t k = perm[start + i];
        for (int j = 0; j < per; j++)
            out[0][(size_t)i * per + j] = in[0][(size_t)k * per + j];
        ((int32_t *)out[1])[i] = labels[k];
    }
}

/* the host twin the fit used before the data stayed on the device */
static void gather_cpu(const op_variant *v, float *const *in, float *const *out) {
    ck_dataset ds = {v->iv[0], v->iv[1], 1, 1, 10, in[0], (int32_t *)in[1]};
    (void)ck_dataset_gather(&ds, (const int32_t *)in[2], v->iv[2], v->iv[3], out[0],
                            (int32_t *)out[1]);
}

#ifdef CNNKIT_HAVE_CUDA
static int gather_gpu(ck_context *g, const op_variant *v, ck_tensor *const *in,
                      ck_tensor *const *out) {
    return ck_cuda_gather_rows(OP_D(in[0]), (const int32_t *)OP_D(in[1]),
                               (const int32_t *)OP_D(in[2]), v->iv[2], v->iv[3], (size_t)v->iv[1],
                               OP_D(out[0]), (int32_t *)OP_D(out[1]), g->stream);
}
#else
#define gather_gpu NULL
#endif

const op_case op_gather = {
    .name = "gather_rows",
    .launchers = "ck_cuda_gather_rows",
    .variants = k_gather,
    .nvariants = sizeof k_gather / sizeof k_gather[0],
    .bench_variants = k_gather_bench,
    .nbench = sizeof k_gather_bench / sizeof k_gather_bench[0],
    .cpu = gather_cpu,
    .ref = gather_ref,
    .ref_tol = 0,
    .gpu = gather_gpu,
    .gpu_tol = 0,
};
