/* Small helpers shared by the .cu files. */
#ifndef CNNKIT_COMMON_CUH
#define CNNKIT_COMMON_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "ck_kernels.h"
#include "ck_math.h"

#define CK_BLOCK 256

/* Blocks for a grid-stride loop over `units` work items: enough to fill any GPU, never more
 * than the work needs. */
static inline unsigned ck_grid_for(long long units, int block) {
    long long b = (units + block - 1) / block;
    if (b > 65536LL * 8)
        b = 65536LL * 8;
    return b < 1 ? 1u : (unsigned)b;
}

static inline int ck_launch_status(void) {
    return (int)cudaGetLastError();
}

/* A dropout's RNG offset (ck_koffset): from the step packet when there is one. */
__device__ __forceinline__ uint64_t ck_koffset_get(const ck_koffset &o) {
    return o.step ? ck_dropout_layer_offset(o.step->step, o.layer) : o.value;
}

/* The storage of activation tensors (ck_kdt) as a kernel template parameter: ld widens exactly to
 * float, st rounds a float to the storage (bf16: nearest even by ck_bf16_bits, the CPU twin's
 * ck_bf16_round). The math between them is fp32 either way. */
struct ck_st_f32 {
    typedef float T;
    static __device__ __forceinline__ float ld(const float *p, long long i) {
        return p[i];
    }
    static __device__ __forceinline__ void st(float *p, long long i, float v) {
        p[i] = v;
    }
};
struct ck_st_bf16 {
    typedef uint16_t T;
    static __device__ __forceinline__ float ld(const uint16_t *p, long long i) {
        return ck_bf16_to_float(p[i]);
    }
    static __device__ __forceinline__ void st(uint16_t *p, long long i, float v) {
        p[i] = ck_bf16_bits(v);
    }
};

/* Eight bf16 words in one 16-byte load or store (the bf16 vector paths): each word widened by
 * ck_bf16_to_float, each value rounded by ck_bf16_bits, exactly as ck_st_bf16's ld / st one by
 * one. Element 2k is word k's low half (little-endian). p + i must be 16-byte aligned. */
__device__ __forceinline__ void ck_bf16x8_unpack(const uint4 u, float v[8]) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        v[2 * k] = ck_bf16_to_float((uint16_t)(w[k] & 0xFFFFu));
        v[2 * k + 1] = ck_bf16_to_float((uint16_t)(w[k] >> 16));
    }
}
__device__ __forceinline__ void ck_bf16x8_ld(const uint16_t *p, long long i, float v[8]) {
    ck_bf16x8_unpack(*reinterpret_cast<const uint4 *>(p + i), v);
}
__device__ __forceinline__ void ck_bf16x8_st(uint16_t *p, long long i, const float v[8]) {
    uint32_t w[4];
#pragma unroll
    for (int k = 0; k < 4; ++k)
        w[k] = (uint32_t)ck_bf16_bits(v[2 * k]) | ((uint32_t)ck_bf16_bits(v[2 * k + 1]) << 16);
    *reinterpret_cast<uint4 *>(p + i) = make_uint4(w[0], w[1], w[2], w[3]);
}

/* 16-byte alignment of both pointers: float4 loads and stores are allowed. */
static inline bool ck_aligned16(const void *a, const void *b) {
    return ((((uintptr_t)a) | ((uintptr_t)b)) & 15u) == 0;
}

#endif
