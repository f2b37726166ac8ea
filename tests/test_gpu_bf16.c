/* bf16.cu against its host twin (src/host/bf16.c): rounding in place, packing to 16-bit storage
 * and unpacking must be bit-identical (both run ck_math.h's integer rounding). Skipped without a
 * CUDA device. */
#include "common.h"

#ifdef CNNKIT_HAVE_CUDA
#include "bf16.h"
#include "ck_kernels.h"

#include <stdlib.h>
#include <string.h>

/* Random values over many binades plus every special class: ties both ways, the overflow edge,
 * subnormals, signed zeros, Inf and NaN (signalling and quiet). */
static float *bf16_inputs(size_t n) {
    static const uint32_t special[] = {
        0x3F800000u, 0x3F808000u, 0x3F818000u, 0x3F80C000u, 0x7F7F7FFFu, 0x7F7F8000u, 0x7F7FFFFFu,
        0xFF7F8000u, 0x00008000u, 0x00008001u, 0x00018000u, 0x007FFFFFu, 0x80000000u, 0x00000000u,
        0x7F800000u, 0xFF800000u, 0x7FC00000u, 0x7F800001u, 0x7FFFFFFFu, 0xFF800001u};
    const size_t ns = sizeof special / sizeof *special;
    float *x = malloc(n * sizeof *x);
    trng r = {16};
    for (size_t i = 0; i < n; ++i) {
        uint32_t u;
        if (i < ns)
            u = special[i];
        else {
            /* random bit patterns: every exponent and every dropped-half value occurs */
            const float a = trng_uniform(&r, 0.0f, 65536.0f), b = trng_uniform(&r, 0.0f, 65536.0f);
            u = ((uint32_t)a << 16) | (uint32_t)b;
        }
        memcpy(&x[i], &u, sizeof u);
    }
    return x;
}

static ck_tensor *dbuf(ck_context *ctx, size_t count, const float *host) {
    ck_tensor *t = NULL;
    CK_OK(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NCHW, (int)count, 1, 1, 1));
    if (host)
        CK_OK(ctx, ck_tensor_upload(ctx, t, host, count));
    return t;
}

Test(gpu_bf16, kernels_match_cpu_bits) {
    ck_context *g = t_cuda_ctx_or_skip();
    const size_t n = 1000003; /* odd: the grid-stride tails */
    float *x = bf16_inputs(n), *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    uint16_t *hw = malloc(n * sizeof *hw), *hg = malloc((n + 1) * sizeof *hg);
    memcpy(want, x, n * sizeof *x);
    ck_bf16_round_buffer(want, n);
    ck_bf16_pack_buffer(x, hw, n);

    ck_tensor *tx = dbuf(g, n, x), *th = dbuf(g, (n + 1) / 2, NULL), *ty = dbuf(g, n, NULL);
    void *s = ck_context_stream(g);
    cr_assert_eq(ck_cuda_bf16_pack(ck_tensor_data(tx), (uint16_t *)ck_tensor_data(th), n, s), 0);
    cr_assert_eq(
        ck_cuda_bf16_unpack((const uint16_t *)ck_tensor_data(th), ck_tensor_data(ty), n, s), 0);
    cr_assert_eq(ck_cuda_bf16_round(ck_tensor_data(tx), n, s), 0);
    CK_OK(g, ck_context_synchronize(g));

    CK_OK(g, ck_tensor_download(g, tx, got, n));
    cr_assert(memcmp(got, want, n * sizeof *got) == 0, "ck_cuda_bf16_round differs from the CPU");
    CK_OK(g, ck_tensor_download(g, th, (float *)hg, (n + 1) / 2));
    cr_assert(memcmp(hg, hw, n * sizeof *hw) == 0, "ck_cuda_bf16_pack differs from the CPU");
    CK_OK(g, ck_tensor_download(g, ty, got, n));
    cr_assert(memcmp(got, want, n * sizeof *got) == 0, "pack then unpack differs from rounding");

    ck_tensor_destroy(tx), ck_tensor_destroy(th), ck_tensor_destroy(ty);
    free(x), free(want), free(got), free(hw), free(hg);
    ck_context_destroy(g);
}

#else
Test(gpu_bf16, skipped_without_cuda_build) {
    t_gpu_unavailable("built without the CUDA backend");
}
#endif
