/* bf16 storage rounding (issue 16), iv = {count, plant}: the CPU twin (src/host/ops/bf16.c) and
 * the kernels (src/kernels/bf16.cu) against ref_bf16_round, the nearest-even rounding derived in
 * double. Outputs: x rounded in place, x packed to 16-bit storage (two per float word), and the
 * packed storage widened back. All exact (ref_tol and gpu_tol 0): rounding is a definition, not
 * arithmetic that may reassociate. plant 1 writes every special class over the first inputs. */
#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "ref.h"
#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"
#endif

/* ties both ways, just off a tie, the overflow edge, subnormals (a tie with 0, the carry into
 * the normal range), signed zeros, Inf, quiet and signalling NaN (one whose payload would carry
 * into the sign) */
static const uint32_t k_special[] = {
    0x3F808000u, 0x3F818000u, 0x3F807FFFu, 0x3F808001u, 0xBF818000u, 0x7F7F7FFFu, 0x7F7F8000u,
    0x7F7FFFFFu, 0xFF7F8000u, 0x00008000u, 0x00008001u, 0x00018000u, 0x007FFFFFu, 0x80000000u,
    0x00000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0x7F800001u, 0x7FFFFFFFu, 0xFF800001u};
#define NSPECIAL (sizeof k_special / sizeof k_special[0])

#define BF16(nm, n, plant, init, lo, hi)                                                           \
    {                                                                                              \
        nm, {n, plant}, {0}, 1, 3, {{"x", n, init, lo, hi}}, {                                     \
            {"rounded", n, 0, 0, 0}, {"packed", (n + 1) / 2, 0, 0, 0}, {                           \
                "unpacked", n, 0, 0, 0                                                             \
            }                                                                                      \
        }                                                                                          \
    }

/* 1 + i * 2^-10 covers [1, 2) in eighths of the bf16 ulp 2^-7: i = 4 mod 8 are ties, half of
 * them rounding up */
static const op_variant k_variants[] = {
    BF16("specials_wide", 4099, 1, OP_UNIFORM, -3.0e38f, 3.0e38f),
    BF16("ties_1_2", 1024, 0, OP_DISTINCT, 1.0f, 0x1p-10f),
    BF16("subnormal", 1001, 0, OP_UNIFORM, -1.0e-38f, 1.0e-38f),
    BF16("one", 1, 0, OP_UNIFORM, -1.0f, 1.0f)};
/* a 128 x 28 x 28 x 32 activation, the seed model's first conv output at batch 128 */
static const op_variant k_bench[] = {BF16("act_b128", 3211264, 0, OP_UNIFORM, -4.0f, 4.0f)};

/* The input with the specials written over its start (plant), by bits: no float load may quiet
 * a signalling NaN on the way. */
static void plant(const op_variant *v, float *x) {
    if (v->iv[1])
        for (size_t i = 0; i < NSPECIAL && i < (size_t)v->iv[0]; ++i)
            memcpy(&x[i], &k_special[i], sizeof(float));
}

static void cpu(const op_variant *v, float *const *in, float *const *out) {
    const size_t n = (size_t)v->iv[0];
    plant(v, in[0]);
    memcpy(out[0], in[0], n * sizeof(float));
    ck_bf16_round_buffer(out[0], n);
    ck_bf16_pack_buffer(in[0], (uint16_t *)out[1], n);
    ck_bf16_unpack_buffer((const uint16_t *)out[1], out[2], n);
}

/* The packed words are the rounded values' upper halves (exact: they are bf16 values). */
static void ref(const op_variant *v, float *const *in, float *const *out) {
    const size_t n = (size_t)v->iv[0];
    plant(v, in[0]);
    ref_bf16_round(in[0], out[0], n);
    for (size_t i = 0; i < n; ++i) {
        uint32_t u;
        memcpy(&u, &out[0][i], sizeof u);
        const uint16_t h = (uint16_t)(u >> 16);
        memcpy((char *)out[1] + i * sizeof h, &h, sizeof h);
    }
    memcpy(out[2], out[0], n * sizeof(float));
}

#ifdef CNNKIT_HAVE_CUDA
/* plants on the host (a round trip of x), then rounds a copy in place, packs x and unpacks */
static int gpu_run(ck_context *g, const op_variant *v, ck_tensor *const *in,
                   ck_tensor *const *out) {
    const size_t n = (size_t)v->iv[0];
    float *x = (float *)malloc(n * sizeof(float)); /* the bench variant has 3.2 M values */
    if (!x)
        return -1;
    void *s = ck_context_stream(g);
    int e = ck_tensor_download(g, in[0], x, n);
    plant(v, x);
    if (!e)
        e = ck_tensor_upload(g, in[0], x, n);
    if (!e)
        e = ck_tensor_upload(g, out[0], x, n);
    if (!e)
        e = ck_cuda_bf16_round(OP_D(out[0]), n, s);
    if (!e)
        e = ck_cuda_bf16_pack(OP_D(in[0]), (uint16_t *)OP_D(out[1]), n, s);
    if (!e)
        e = ck_cuda_bf16_unpack((const uint16_t *)OP_D(out[1]), OP_D(out[2]), n, s);
    free(x);
    return e;
}
#else
#define gpu_run NULL
#endif

const op_case op_bf16 = {
    .name = "bf16",
    .launchers = "ck_cuda_bf16_round ck_cuda_bf16_pack ck_cuda_bf16_unpack",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
    .bench_variants = k_bench,
    .nbench = sizeof k_bench / sizeof k_bench[0],
    .cpu = cpu,
    .ref = ref,
    .ref_tol = 0,
    .gpu = gpu_run,
    .gpu_tol = 0,
};
