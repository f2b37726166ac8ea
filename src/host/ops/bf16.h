/* bfloat16 storage rounding of host buffers (issue 16): the CPU twin of ck_cuda_bf16_round. The
 * executor calls it on each stored activation and gradient when a model runs in bf16. */
#ifndef CNNKIT_BF16_H
#define CNNKIT_BF16_H

#include <stddef.h>
#include <stdint.h>

/* x[i] = ck_bf16_round(x[i]) for i < n: nearest even bf16, NaN quieted, overflow to Inf. */
void ck_bf16_round_buffer(float *x, size_t n);
/* dst[i] = the bf16 bits of src[i] (rounded as above), and back (exact). */
void ck_bf16_pack_buffer(const float *src, uint16_t *dst, size_t n);
void ck_bf16_unpack_buffer(const uint16_t *src, float *dst, size_t n);

#endif
