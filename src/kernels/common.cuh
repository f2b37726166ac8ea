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

/* 16-byte alignment of both pointers: float4 loads and stores are allowed. */
static inline bool ck_aligned16(const void *a, const void *b) {
    return ((((uintptr_t)a) | ((uintptr_t)b)) & 15u) == 0;
}

#endif
