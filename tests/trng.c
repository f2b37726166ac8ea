#include "trng.h"

#include <math.h>

uint32_t trng_u32(trng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return (uint32_t)((r->s * 2685821657736338717ull) >> 32);
}

float trng_uniform(trng *r, float lo, float hi) {
    return lo + (hi - lo) * (float)((trng_u32(r) >> 8) * (1.0 / 16777216.0));
}

float trng_normal(trng *r) {
    double u1 = ((trng_u32(r) >> 8) + 0.5) / 16777216.0;
    double u2 = (trng_u32(r) >> 8) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void trng_fill(trng *r, float *p, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; ++i)
        p[i] = trng_uniform(r, lo, hi);
}
