/* Deterministic generator for test and bench data (xorshift64*), state owned by the caller.
 * Plain C with no test framework: the op table (tests/ops) and bench_ops use it too. */
#ifndef CNNKIT_TESTS_TRNG_H
#define CNNKIT_TESTS_TRNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct trng {
    uint64_t s;
} trng;
uint32_t trng_u32(trng *r);
float trng_uniform(trng *r, float lo, float hi); /* [lo, hi) */
float trng_normal(trng *r);                      /* N(0, 1) */
void trng_fill(trng *r, float *p, size_t n, float lo, float hi);

#endif
