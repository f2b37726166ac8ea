/* bfloat16 rounding (ck_math.h): hand-derived golden values and a strided sweep of fp32 bit
 * patterns against an independent nearest-even computation in double. */
#include "common.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16.h"
#include "ck_math.h"

static float f_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void expect_bits(uint32_t in, uint16_t want) {
    const uint16_t got = ck_bf16_bits(f_of(in));
    cr_assert_eq(got, want, "fp32 %08x: bf16 %04x, want %04x", in, got, want);
    const float r = ck_bf16_round(f_of(in));
    uint32_t rb;
    memcpy(&rb, &r, sizeof rb);
    cr_assert_eq(rb, (uint32_t)want << 16, "fp32 %08x: round %08x, want %08x", in, rb,
                 (uint32_t)want << 16);
}

/* bf16 keeps 7 mantissa bits, so the ulp of [1, 2) is 2^-7 and the dropped half is 16 bits. */
Test(bf16, golden_values) {
    expect_bits(0x3F800000u, 0x3F80); /* 1.0 exact */
    expect_bits(0x3F808000u, 0x3F80); /* 1 + 2^-8: tie, 1.0 is even -> down */
    expect_bits(0x3F818000u, 0x3F82); /* 1 + 3*2^-8: tie, 1 + 2^-7 is odd -> up to 1 + 2^-6 */
    expect_bits(0x3F80C000u, 0x3F81); /* 1 + 3*2^-9: 0.75 ulp -> up to 1 + 2^-7 */
    expect_bits(0x3F806000u, 0x3F80); /* 1 + 3*2^-10: 0.375 ulp -> down */
    expect_bits(0x3F807FFFu, 0x3F80); /* just below the tie -> down */
    expect_bits(0x3F808001u, 0x3F81); /* just above the tie -> up */
    expect_bits(0xBF818000u, 0xBF82); /* sign is symmetric */
    /* Largest finite bf16 0x7F7F = (2 - 2^-7) * 2^127; its half-ulp tie goes to Inf (even). */
    expect_bits(0x7F7F0000u, 0x7F7F);
    expect_bits(0x7F7F7FFFu, 0x7F7F);
    expect_bits(0x7F7F8000u, 0x7F80);
    expect_bits(0x7F7FFFFFu, 0x7F80); /* FLT_MAX overflows bf16 */
    expect_bits(0xFF7F8000u, 0xFF80);
    /* Subnormals: bf16 0x0001 = 2^-133; fp32 0x00008000 = 2^-134 is a tie with 0. */
    expect_bits(0x00008000u, 0x0000);
    expect_bits(0x00008001u, 0x0001);
    expect_bits(0x00018000u, 0x0002);
    expect_bits(0x007FFFFFu, 0x0080); /* largest fp32 subnormal carries into the smallest normal */
    expect_bits(0x80000000u, 0x8000); /* -0 keeps its sign */
    expect_bits(0x00000000u, 0x0000);
    expect_bits(0x7F800000u, 0x7F80); /* +Inf */
    expect_bits(0xFF800000u, 0xFF80); /* -Inf */
    expect_bits(0x7FC00000u, 0x7FC0); /* quiet NaN */
    expect_bits(0x7F800001u, 0x7FC0); /* signalling NaN: quieted, not rounded to Inf */
    expect_bits(0x7FFFFFFFu, 0x7FFF); /* NaN with the top payload must not carry into the sign */
    expect_bits(0xFF800001u, 0xFFC0);
    cr_assert(isnan(ck_bf16_round(f_of(0x7F800001u))));
}

/* bf16 -> fp32 -> bf16 is the identity on every non-NaN pattern; NaNs come back quiet. */
Test(bf16, widening_round_trips) {
    for (uint32_t h = 0; h <= 0xFFFFu; ++h) {
        const float f = ck_bf16_to_float((uint16_t)h);
        const int nan = (h & 0x7FFFu) > 0x7F80u;
        const uint16_t want = (uint16_t)(nan ? (h | 0x0040u) : h);
        cr_assert_eq(ck_bf16_bits(f), want, "bf16 %04x", h);
    }
}

/* Every 4099th fp32 pattern (and its neighbours) rounds to a bf16 value nearest in double, ties to
 * the even mantissa. Candidates are the bf16 values either side of |x|; Inf counts as 2^128, the
 * value IEEE rounding compares against at the top of the range. */
Test(bf16, nearest_even_sweep) {
    size_t checked = 0, ties = 0;
    for (uint64_t base = 0; base <= 0xFFFFFFFFull; base += 4099) {
        for (int d = -1; d <= 1; ++d) {
            const uint32_t u = (uint32_t)(base + (uint64_t)(int64_t)d);
            const float x = f_of(u);
            if (isnan(x) || isinf(x))
                continue;
            const uint32_t sign = u & 0x80000000u, mag = u & 0x7FFFFFFFu;
            const uint32_t lo = mag & 0xFFFF0000u, hi = lo + 0x10000u;
            const double ax = fabs((double)x);
            const double vlo = (double)fabsf(f_of(lo));
            const double vhi = hi == 0x7F800000u ? ldexp(1.0, 128) : (double)fabsf(f_of(hi));
            const double dlo = ax - vlo, dhi = vhi - ax;
            uint32_t want;
            if (dlo < dhi)
                want = lo;
            else if (dhi < dlo)
                want = hi;
            else {
                want = ((lo >> 16) & 1u) ? hi : lo;
                ++ties;
            }
            want |= sign;
            const uint16_t got = ck_bf16_bits(x);
            cr_assert_eq(got, (uint16_t)(want >> 16), "fp32 %08x: bf16 %04x, want %04x", u, got,
                         want >> 16);
            ++checked;
        }
    }
    cr_assert_gt(checked, 3000000u);
    cr_assert_gt(ties, 0u, "the sweep must reach some ties");
}

/* The host buffer twin of the kernels rounds every element as ck_bf16_round does, and packing
 * then unpacking equals rounding. */
Test(bf16, host_buffers) {
    enum { N = 4099 };
    float x[N], r[N], back[N];
    uint16_t h[N];
    trng g = {21};
    trng_fill(&g, x, N, -3.0e38f, 3.0e38f);
    for (int i = 0; i < 64; ++i)
        x[i] = ldexpf(1.0f + (float)i / 64.0f, -140 + 4 * i); /* subnormals up to large */
    memcpy(r, x, sizeof r);
    ck_bf16_round_buffer(r, N);
    ck_bf16_pack_buffer(x, h, N);
    ck_bf16_unpack_buffer(h, back, N);
    for (int i = 0; i < N; ++i) {
        const float want = ck_bf16_round(x[i]);
        cr_assert(memcmp(&r[i], &want, sizeof want) == 0, "element %d: %a, want %a", i, r[i], want);
        cr_assert_eq(h[i], ck_bf16_bits(x[i]), "element %d", i);
        cr_assert(memcmp(&back[i], &want, sizeof want) == 0, "element %d unpacked", i);
    }
}
