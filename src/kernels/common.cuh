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

/* 16-byte alignment of both pointers: float4 loads and stores are allowed. */
static inline bool ck_aligned16(const void *a, const void *b) {
    return ((((uintptr_t)a) | ((uintptr_t)b)) & 15u) == 0;
}

#endif
