/* Dropout and SpatialDropout on the CPU reference: generator, statistics, semantics, gradients. */
#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ck_math.h"
#include "internal.h" /* ck_cpu_philox_block */

/* Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors). */
Test(philox, known_answers) {
    ck_u32x4 r = ck_philox4x32_10(0, 0, 0, 0, 0, 0);
    uint32_t e0[4] = {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u};
    r = ck_philox4x32_10(0, 0, 0, 0, 0, 0);
    for (int i = 0; i < 4; ++i)
        cr_assert_eq(r.v[i], e0[i], "zero counter/key word %d: %08x", i, r.v[i]);
    uint32_t e1[4] = {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu};
    r = ck_philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
    for (int i = 0; i < 4; ++i)
        cr_assert_eq(r.v[i], e1[i], "all-ones word %d: %08x", i, r.v[i]);
    uint32_t e2[4] = {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u};
    r = ck_philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u,
                         0x299f31d0u);
    for (int i = 0; i < 4; ++i)
        cr_assert_eq(r.v[i], e2[i], "pi digits word %d: %08x", i, r.v[i]);
}

Test(philox, threshold_edges) {
    cr_assert_eq(ck_dropout_threshold(0.0f), 0u);
    cr_assert_eq(ck_dropout_threshold(0.5f), 0x80000000u);
    cr_assert_eq(ck_dropout_threshold(0.25f), 0x40000000u);
    cr_assert_eq(ck_dropout_threshold(nextafterf(1.0f, 0.0f)), 0xFFFFFF00u);
}

/* Runs a forward op on a CPU context and returns y in NCHW order. */
static void run_fwd(ck_context *ctx, ck_dropout_kind kind, ck_layout l, int N, int C, int H, int W,
                    const float *x, const ck_dropout_desc *d, ck_mode mode, float *y,
                    uint8_t *mask_bytes) {
    ck_tensor *tx = t_tensor_from_nchw(ctx, l, N, C, H, W, x);
    ck_tensor *ty = t_tensor_from_nchw(ctx, l, N, C, H, W, NULL);
    ck_mask *m = NULL;
    if (mask_bytes)
        CK_OK(ctx, ck_mask_create(ctx, &m, kind, N, C, H, W));
    if (kind == CK_DROPOUT_SPATIAL)
        CK_OK(ctx, ck_spatial_dropout_forward(ctx, d, mode, tx, ty, m));
    else
        CK_OK(ctx, ck_dropout_forward(ctx, d, mode, tx, ty, m));
    t_tensor_to_nchw(ctx, ty, y);
    if (m) {
        size_t units = (size_t)N * C * (kind == CK_DROPOUT_SPATIAL ? 1 : (size_t)H * W);
        CK_OK(ctx, ck_mask_download(ctx, m, mask_bytes, units));
        ck_mask_destroy(m);
    }
    ck_tensor_destroy(tx);
    ck_tensor_destroy(ty);
}

static float *ones(size_t n) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; ++i)
        p[i] = 1.0f;
    return p;
}

/* Kept fraction of N*C spatial draws lies within 4 binomial sigmas of 1 - rate, every feature
 * map is all zero or all scaled by 1/(1 - rate), and the stored mask says which. */
Test(spatial_dropout, rate_and_whole_maps) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 64, C = 96, H = 5, W = 7;
    const size_t cnt = (size_t)N * C * H * W;
    float *x = malloc(cnt * sizeof *x), *y = malloc(cnt * sizeof *y);
    trng r = {7};
    trng_fill(&r, x, cnt, 0.5f, 2.0f);
    const float rates[3] = {0.1f, 0.2f, 0.5f};
    for (int ri = 0; ri < 3; ++ri) {
        ck_dropout_desc d = {rates[ri], 100 + (uint64_t)ri, 0};
        uint8_t *mask = malloc((size_t)N * C);
        run_fwd(ctx, CK_DROPOUT_SPATIAL, CK_LAYOUT_NCHW, N, C, H, W, x, &d, CK_MODE_TRAINING, y,
                mask);
        const float scale = 1.0f / (1.0f - d.rate);
        size_t kept = 0;
        for (int g = 0; g < N * C; ++g) {
            int all_zero = 1, all_scaled = 1;
            for (int p = 0; p < H * W; ++p) {
                size_t i = (size_t)g * H * W + p;
                all_zero &= y[i] == 0.0f;
                all_scaled &= y[i] == x[i] * scale;
            }
            cr_assert(all_zero || all_scaled, "map %d is neither all zero nor all scaled", g);
            cr_assert_eq(mask[g], all_scaled, "stored mask disagrees with map %d", g);
            kept += all_scaled;
        }
        const double n = (double)N * C, p = 1.0 - d.rate;
        const double sigma = sqrt(n * p * (1.0 - p));
        cr_assert(fabs((double)kept - n * p) <= 4.0 * sigma,
                  "rate %.2f: kept %zu of %.0f, expected %.1f +- %.1f (4 sigma)", d.rate, kept, n,
                  n * p, 4.0 * sigma);
        free(mask);
    }
    free(x);
    free(y);
    ck_context_destroy(ctx);
}

/* E[y] = x: the mean of y over many offsets approaches x (inverted dropout). Each map mean of
 * 400 draws of {0, 1/(1-q)} has sigma sqrt(q/(1-q)/400); bound 4 sigma. */
Test(spatial_dropout, unbiased_in_expectation) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 2, C = 3, H = 2, W = 2, T = 400;
    const size_t cnt = (size_t)N * C * H * W;
    float *x = ones(cnt), *y = malloc(cnt * sizeof *y);
    double *acc = calloc(cnt, sizeof *acc);
    const float q = 0.3f;
    for (int t = 0; t < T; ++t) {
        ck_dropout_desc d = {q, (uint64_t)t, 0};
        run_fwd(ctx, CK_DROPOUT_SPATIAL, CK_LAYOUT_NHWC, N, C, H, W, x, &d, CK_MODE_TRAINING, y,
                NULL);
        for (size_t i = 0; i < cnt; ++i)
            acc[i] += y[i];
    }
    const double sigma = sqrt(q / (1.0 - q) / T);
    for (size_t i = 0; i < cnt; ++i)
        cr_assert(fabs(acc[i] / T - 1.0) <= 4.0 * sigma, "E[y] at %zu = %f, expected 1 +- %f", i,
                  acc[i] / T, 4.0 * sigma);
    free(x);
    free(y);
    free(acc);
    ck_context_destroy(ctx);
}

Test(dropout, element_rate_and_values) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 8, C = 5, H = 13, W = 11; /* W not a multiple of 4 */
    const size_t cnt = (size_t)N * C * H * W;
    float *x = malloc(cnt * sizeof *x), *y = malloc(cnt * sizeof *y);
    uint8_t *mask = malloc(cnt);
    trng r = {9};
    trng_fill(&r, x, cnt, -2.0f, 2.0f);
    ck_dropout_desc d = {0.2f, 5, 0};
    run_fwd(ctx, CK_DROPOUT_ELEMENT, CK_LAYOUT_NCHW, N, C, H, W, x, &d, CK_MODE_TRAINING, y, mask);
    const float scale = 1.0f / 0.8f;
    size_t kept = 0;
    for (size_t i = 0; i < cnt; ++i) {
        cr_assert_eq(y[i], mask[i] ? x[i] * scale : 0.0f * x[i], "element %zu", i);
        kept += mask[i];
    }
    const double p = 0.8, sigma = sqrt(cnt * p * (1 - p));
    cr_assert(fabs(kept - cnt * p) <= 4 * sigma, "kept %zu of %zu", kept, cnt);
    free(x);
    free(y);
    free(mask);
    ck_context_destroy(ctx);
}

/* The CPU's batched Philox (eight calls side by side, vectorized with AVX2) gives the words of
 * ck_dropout_call bit for bit, on both instruction-set paths, for counters that cross a 32-bit
 * boundary, 64-bit offsets and seeds, and counts that are not a multiple of 8. */
Test(philox, batched_equals_ck_dropout_call) {
    const uint64_t seeds[3] = {0, 42, 0xDEADBEEFCAFEF00Dull};
    const uint64_t offsets[3] = {0, 4096 * 7 + 3, 0xFFFFFFFF00000001ull};
    const uint64_t call0s[3] = {0, 1000, 0xFFFFFFFFull - 5};
    uint32_t w[4 * 37];
    for (int isa = 0; isa < 2; ++isa) {
        if (isa)
            cr_assert_eq(setenv("CNNKIT_CPU_ISA", "generic", 1), 0);
        for (int a = 0; a < 3; ++a)
            for (int b = 0; b < 3; ++b)
                for (int c = 0; c < 3; ++c) {
                    ck_cpu_philox_block(seeds[a], offsets[b], call0s[c], 37, w);
                    for (int i = 0; i < 37; ++i) {
                        const ck_u32x4 e = ck_dropout_call(seeds[a], offsets[b], call0s[c] + i);
                        for (int k = 0; k < 4; ++k)
                            cr_assert_eq(w[4 * i + k], e.v[k],
                                         "isa %d seed %d offset %d call0 %d: "
                                         "call %d word %d",
                                         isa, a, b, c, i, k);
                    }
                }
    }
    cr_assert_eq(unsetenv("CNNKIT_CPU_ISA"), 0);
}

/* Training-mode element dropout without a stored mask (the model's path: blocks of calls drawn at
 * once) equals the definition, x * (ck_element_keep ? 1 / (1 - rate) : 0), element by element, in
 * both layouts and on both instruction-set paths, for row widths that are and are not multiples
 * of 4 (the dense layers' W = 1 included) and tensors spanning many blocks. */
Test(dropout, regenerated_equals_definition) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int shapes[5][4] = {
        {4, 37, 9, 11}, {64, 512, 1, 1}, {3, 5, 12, 12}, {2, 3, 7, 4}, {1, 1, 1, 3}};
    const ck_dropout_desc d = {0.3f, 4096 * 5 + 17, 0};
    const uint32_t thr = ck_dropout_threshold(d.rate);
    const float scale = ck_dropout_scale(d.rate);
    for (int si = 0; si < 5; ++si) {
        const int N = shapes[si][0], C = shapes[si][1], H = shapes[si][2], W = shapes[si][3];
        const size_t cnt = (size_t)N * C * H * W;
        float *x = malloc(cnt * sizeof *x), *y = malloc(cnt * sizeof *y);
        trng r = {31 + (uint64_t)si};
        trng_fill(&r, x, cnt, -2.0f, 2.0f);
        for (int l = 0; l < 2; ++l)
            for (int isa = 0; isa < 2; ++isa) {
                if (isa)
                    cr_assert_eq(setenv("CNNKIT_CPU_ISA", "generic", 1), 0);
                run_fwd(ctx, CK_DROPOUT_ELEMENT, l ? CK_LAYOUT_NHWC : CK_LAYOUT_NCHW, N, C, H, W, x,
                        &d, CK_MODE_TRAINING, y, NULL);
                cr_assert_eq(unsetenv("CNNKIT_CPU_ISA"), 0);
                size_t i = 0;
                for (int n = 0; n < N; ++n)
                    for (int c = 0; c < C; ++c)
                        for (int h = 0; h < H; ++h)
                            for (int w = 0; w < W; ++w, ++i) {
                                const int keep = ck_element_keep(ck_context_seed(ctx), d.offset,
                                                                 thr, n, c, h, w, C, H, W);
                                const float e = x[i] * (keep ? scale : 0.0f);
                                cr_assert(memcmp(&y[i], &e, sizeof e) == 0,
                                          "shape %d layout %d isa %d: (%d,%d,%d,%d) %g vs %g", si,
                                          l, isa, n, c, h, w, y[i], e);
                            }
            }
        free(x);
        free(y);
    }
    ck_context_destroy(ctx);
}

/* The mask is a function of (seed, offset, n, c[, h, w]) only: NCHW and NHWC give the same
 * output, the stored mask equals ck_dropout_mask_host, and another offset gives another mask. */
static void check_layout_independence(ck_dropout_kind kind) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 3, C = 7, H = 5, W = 6;
    const size_t cnt = (size_t)N * C * H * W;
    const size_t units = kind == CK_DROPOUT_SPATIAL ? (size_t)N * C : cnt;
    float *x = malloc(cnt * sizeof *x), *a = malloc(cnt * sizeof *a), *b = malloc(cnt * sizeof *b);
    uint8_t *ma = malloc(units), *mb = malloc(units), *mh = malloc(units), *mo = malloc(units);
    trng r = {11};
    trng_fill(&r, x, cnt, -1.0f, 1.0f);
    ck_dropout_desc d = {0.4f, 42, 0};
    run_fwd(ctx, kind, CK_LAYOUT_NCHW, N, C, H, W, x, &d, CK_MODE_TRAINING, a, ma);
    run_fwd(ctx, kind, CK_LAYOUT_NHWC, N, C, H, W, x, &d, CK_MODE_TRAINING, b, mb);
    cr_assert_eq(memcmp(a, b, cnt * sizeof *a), 0, "NCHW and NHWC outputs differ");
    cr_assert_eq(memcmp(ma, mb, units), 0, "NCHW and NHWC masks differ");
    CK_OK(ctx, ck_dropout_mask_host(kind, ck_context_seed(ctx), &d, N, C, H, W, mh, units));
    cr_assert_eq(memcmp(ma, mh, units), 0, "stored mask differs from ck_dropout_mask_host");
    ck_dropout_desc d2 = {0.4f, 43, 0};
    CK_OK(ctx, ck_dropout_mask_host(kind, ck_context_seed(ctx), &d2, N, C, H, W, mo, units));
    cr_assert_neq(memcmp(mh, mo, units), 0, "offsets 42 and 43 gave the same mask");
    free(x);
    free(a);
    free(b);
    free(ma);
    free(mb);
    free(mh);
    free(mo);
    ck_context_destroy(ctx);
}

Test(spatial_dropout, layout_independent_mask) {
    check_layout_independence(CK_DROPOUT_SPATIAL);
}
Test(dropout, layout_independent_mask) {
    check_layout_independence(CK_DROPOUT_ELEMENT);
}

/* Backward regenerates the forward mask: dx = dy * mask * scale with the forward's mask, both
 * regenerated and read from a stored ck_mask; the gradient is exact (the map is linear), checked
 * against a central finite difference of sum(y * dy). */
static void check_backward(ck_dropout_kind kind, ck_layout l) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 4, C = 6, H = 3, W = 5;
    const size_t cnt = (size_t)N * C * H * W;
    float *x = malloc(cnt * sizeof *x), *dy = malloc(cnt * sizeof *dy);
    float *y = malloc(cnt * sizeof *y), *dx = malloc(cnt * sizeof *dx), *dx2 = malloc(cnt * 4);
    trng r = {13};
    trng_fill(&r, x, cnt, -1.0f, 1.0f);
    trng_fill(&r, dy, cnt, -1.0f, 1.0f);
    ck_dropout_desc d = {0.35f, 77, 0};
    ck_tensor *tx = t_tensor_from_nchw(ctx, l, N, C, H, W, x);
    ck_tensor *ty = t_tensor_from_nchw(ctx, l, N, C, H, W, NULL);
    ck_tensor *tdy = t_tensor_from_nchw(ctx, l, N, C, H, W, dy);
    ck_tensor *tdx = t_tensor_from_nchw(ctx, l, N, C, H, W, NULL);
    ck_mask *m = NULL;
    CK_OK(ctx, ck_mask_create(ctx, &m, kind, N, C, H, W));
    if (kind == CK_DROPOUT_SPATIAL) {
        CK_OK(ctx, ck_spatial_dropout_forward(ctx, &d, CK_MODE_TRAINING, tx, ty, m));
        CK_OK(ctx, ck_spatial_dropout_backward(ctx, &d, CK_MODE_TRAINING, tdy, tdx, NULL));
    } else {
        CK_OK(ctx, ck_dropout_forward(ctx, &d, CK_MODE_TRAINING, tx, ty, m));
        CK_OK(ctx, ck_dropout_backward(ctx, &d, CK_MODE_TRAINING, tdy, tdx, NULL));
    }
    t_tensor_to_nchw(ctx, ty, y);
    t_tensor_to_nchw(ctx, tdx, dx);
    /* stored-mask backward equals regenerated backward */
    if (kind == CK_DROPOUT_SPATIAL)
        CK_OK(ctx, ck_spatial_dropout_backward(ctx, &d, CK_MODE_TRAINING, tdy, tdx, m));
    else
        CK_OK(ctx, ck_dropout_backward(ctx, &d, CK_MODE_TRAINING, tdy, tdx, m));
    t_tensor_to_nchw(ctx, tdx, dx2);
    cr_assert_eq(memcmp(dx, dx2, cnt * sizeof *dx), 0, "stored and regenerated masks disagree");
    /* finite differences: L = sum(y * dy); dL/dx_i = (L(x + h e_i) - L(x - h e_i)) / 2h.
     * y is linear in x, so the only error is rounding: tolerance 1e-3 relative. */
    const float h = 1e-2f;
    float *xp = malloc(cnt * sizeof *xp), *yp = malloc(cnt * sizeof *yp);
    for (size_t i = 0; i < cnt; i += 7) {
        double lp = 0, lm = 0;
        for (int sgn = -1; sgn <= 1; sgn += 2) {
            memcpy(xp, x, cnt * sizeof *xp);
            xp[i] += sgn * h;
            run_fwd(ctx, kind, l, N, C, H, W, xp, &d, CK_MODE_TRAINING, yp, NULL);
            double L = 0;
            for (size_t j = 0; j < cnt; ++j)
                L += (double)yp[j] * dy[j];
            if (sgn < 0)
                lm = L;
            else
                lp = L;
        }
        double fd = (lp - lm) / (2.0 * h);
        cr_assert(fabs(fd - dx[i]) <= 1e-3 * fmax(1.0, fabs(fd)), "dx[%zu] = %f, fd %f", i, dx[i],
                  fd);
    }
    free(xp);
    free(yp);
    /* forward and backward masks are the same: y/x == dx/dy wherever both nonzero */
    const float scale = 1.0f / (1.0f - d.rate);
    for (size_t i = 0; i < cnt; ++i) {
        int kept_f = y[i] == x[i] * scale && x[i] != 0.0f;
        int kept_b = dx[i] == dy[i] * scale && dy[i] != 0.0f;
        cr_assert_eq(kept_f, kept_b, "masks of forward and backward differ at %zu", i);
    }
    ck_mask_destroy(m);
    ck_tensor_destroy(tx);
    ck_tensor_destroy(ty);
    ck_tensor_destroy(tdy);
    ck_tensor_destroy(tdx);
    free(x);
    free(dy);
    free(y);
    free(dx);
    free(dx2);
    ck_context_destroy(ctx);
}

Test(spatial_dropout, backward_nchw) {
    check_backward(CK_DROPOUT_SPATIAL, CK_LAYOUT_NCHW);
}
Test(spatial_dropout, backward_nhwc) {
    check_backward(CK_DROPOUT_SPATIAL, CK_LAYOUT_NHWC);
}
Test(dropout, backward_nchw) {
    check_backward(CK_DROPOUT_ELEMENT, CK_LAYOUT_NCHW);
}
Test(dropout, backward_nhwc) {
    check_backward(CK_DROPOUT_ELEMENT, CK_LAYOUT_NHWC);
}

/* Inference is the identity, bit for bit, in place too; rate 0 in training too. */
Test(dropout, inference_is_identity) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 2, C = 3, H = 4, W = 5;
    const size_t cnt = (size_t)N * C * H * W;
    float *x = malloc(cnt * 4), *y = malloc(cnt * 4);
    trng r = {17};
    trng_fill(&r, x, cnt, -3.0f, 3.0f);
    ck_dropout_desc d = {0.5f, 1, 0};
    for (int k = 0; k < 2; ++k) {
        run_fwd(ctx, k ? CK_DROPOUT_ELEMENT : CK_DROPOUT_SPATIAL, CK_LAYOUT_NHWC, N, C, H, W, x, &d,
                CK_MODE_INFERENCE, y, NULL);
        cr_assert_eq(memcmp(x, y, cnt * 4), 0, "inference changed values");
    }
    ck_dropout_desc z = {0.0f, 1, 0};
    run_fwd(ctx, CK_DROPOUT_ELEMENT, CK_LAYOUT_NCHW, N, C, H, W, x, &z, CK_MODE_TRAINING, y, NULL);
    cr_assert_eq(memcmp(x, y, cnt * 4), 0, "rate 0 changed values");
    /* in place */
    ck_tensor *t = t_tensor_from_nchw(ctx, CK_LAYOUT_NCHW, N, C, H, W, x);
    CK_OK(ctx, ck_spatial_dropout_forward(ctx, &d, CK_MODE_INFERENCE, t, t, NULL));
    t_tensor_to_nchw(ctx, t, y);
    cr_assert_eq(memcmp(x, y, cnt * 4), 0, "in-place inference changed values");
    ck_tensor_destroy(t);
    free(x);
    free(y);
    ck_context_destroy(ctx);
}

/* Same seed and offset: same output on two separate contexts, whatever the thread count. */
Test(dropout, deterministic_across_contexts_and_threads) {
    const int N = 16, C = 8, H = 9, W = 9;
    const size_t cnt = (size_t)N * C * H * W;
    float *x = malloc(cnt * 4), *a = malloc(cnt * 4), *b = malloc(cnt * 4);
    trng r = {19};
    trng_fill(&r, x, cnt, -1.0f, 1.0f);
    ck_dropout_desc d = {0.25f, 3, 0};
    ck_context *c1 = t_ctx(CK_DEVICE_CPU), *c2 = t_ctx(CK_DEVICE_CPU);
    CK_OK(c2, ck_context_set_cpu_threads(c2, 1));
    for (int k = 0; k < 2; ++k) {
        ck_dropout_kind kind = k ? CK_DROPOUT_ELEMENT : CK_DROPOUT_SPATIAL;
        run_fwd(c1, kind, CK_LAYOUT_NHWC, N, C, H, W, x, &d, CK_MODE_TRAINING, a, NULL);
        run_fwd(c2, kind, CK_LAYOUT_NHWC, N, C, H, W, x, &d, CK_MODE_TRAINING, b, NULL);
        cr_assert_eq(memcmp(a, b, cnt * 4), 0, "kind %d differs between contexts", k);
    }
    ck_context_destroy(c1);
    ck_context_destroy(c2);
    free(x);
    free(a);
    free(b);
}

/* A shard of a batch (a data-parallel rank's samples [s0, s0 + n)) with desc.sample0 = s0 draws
 * exactly the masks of those samples in the whole batch: the same outputs, stored masks and host
 * masks, both kinds, both layouts, with and without a stored mask, and shard starts whose spatial
 * units (s0 * C) do not fall on a Philox call boundary. */
Test(dropout, shard_with_sample0_draws_the_whole_batch_masks) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    enum { N = 7, C = 3, H = 4, W = 5 };
    const size_t per = (size_t)C * H * W, cnt = N * per;
    float x[N * C * H * W], whole[N * C * H * W], part[N * C * H * W];
    uint8_t mwhole[N * C * H * W], mpart[N * C * H * W], hwhole[N * C * H * W],
        hpart[N * C * H * W];
    trng r = {31};
    trng_fill(&r, x, cnt, -1.0f, 1.0f);
    const int starts[3] = {1, 3, 6};
    for (int k = 0; k < 2; ++k) {
        const ck_dropout_kind kind = k ? CK_DROPOUT_ELEMENT : CK_DROPOUT_SPATIAL;
        const size_t upers = k ? per : (size_t)C; /* mask units per sample */
        for (int li = 0; li < 2; ++li) {
            const ck_layout l = li ? CK_LAYOUT_NHWC : CK_LAYOUT_NCHW;
            const ck_dropout_desc d = {0.4f, 4096 * 3 + 2, 0};
            run_fwd(ctx, kind, l, N, C, H, W, x, &d, CK_MODE_TRAINING, whole, mwhole);
            CK_OK(NULL, ck_dropout_mask_host(kind, 7, &d, N, C, H, W, hwhole, N * upers));
            for (int si = 0; si < 3; ++si) {
                const int s0 = starts[si], n = N - s0;
                const ck_dropout_desc ds = {0.4f, 4096 * 3 + 2, (uint64_t)s0};
                for (int stored = 0; stored < 2; ++stored) {
                    run_fwd(ctx, kind, l, n, C, H, W, x + s0 * per, &ds, CK_MODE_TRAINING, part,
                            stored ? mpart : NULL);
                    cr_assert_eq(memcmp(part, whole + s0 * per, n * per * sizeof(float)), 0,
                                 "kind %d layout %d start %d stored %d", k, li, s0, stored);
                    if (stored)
                        cr_assert_eq(memcmp(mpart, mwhole + s0 * upers, n * upers), 0,
                                     "mask: kind %d layout %d start %d", k, li, s0);
                }
                CK_OK(NULL, ck_dropout_mask_host(kind, 7, &ds, n, C, H, W, hpart, n * upers));
                cr_assert_eq(memcmp(hpart, hwhole + s0 * upers, n * upers), 0,
                             "host mask: kind %d start %d", k, s0);
            }
        }
    }
    ck_context_destroy(ctx);
}
