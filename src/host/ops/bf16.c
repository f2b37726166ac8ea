/* Host bf16 rounding over buffers: the per-element math is ck_math.h's, shared with bf16.cu. */
#include "bf16.h"

#include "ck_math.h"

void ck_bf16_round_buffer(float *x, size_t n) {
    for (size_t i = 0; i < n; ++i)
        x[i] = ck_bf16_round(x[i]);
}

void ck_bf16_pack_buffer(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; ++i)
        dst[i] = ck_bf16_bits(src[i]);
}

void ck_bf16_unpack_buffer(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; ++i)
        dst[i] = ck_bf16_to_float(src[i]);
}
