/* Dropout and SpatialDropout kernels. The keep decision is ck_spatial_keep / ck_element_call of
 * ck_math.h — the same integer functions the CPU reference uses — so masks are bit-identical to
 * the CPU's in both layouts and for any launch shape. Forward and backward are the same map
 * y = x * (keep ? scale : 0). The apply kernels are templated on the storage (ck_st_f32 /
 * ck_st_bf16): the product is fp32, rounded once by a bf16 store; the masks do not depend on it.
 * bf16 moves 8 words per 16-byte access where the layout allows (the *_vec8 kernels), with the
 * scalar kernels' per-element keep decisions and products. */
#include "common.cuh"

/* ---- stored masks -------------------------------------------------------------------------- */

__global__ void ck_spatial_mask_kernel(uint8_t *mask, long long units, uint64_t seed, ck_koffset ko,
                                       uint64_t u0, uint32_t thr) {
    const uint64_t offset = ck_koffset_get(ko);
    for (long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x; g < units;
         g += (long long)gridDim.x * blockDim.x)
        mask[g] = (uint8_t)ck_spatial_keep(seed, offset, thr, u0 + (uint64_t)g);
}

/* One thread per 32-bit word of the bit mask (NCHW flat order): race-free, no atomics. */
__global__ void ck_element_mask_kernel(uint32_t *bits, long long words, long long count,
                                       ck_kshape s, uint64_t seed, ck_koffset ko, uint64_t call0,
                                       uint32_t thr) {
    const uint64_t offset = ck_koffset_get(ko);
    for (long long wd = blockIdx.x * (long long)blockDim.x + threadIdx.x; wd < words;
         wd += (long long)gridDim.x * blockDim.x) {
        uint32_t out = 0;
        uint64_t last_call = ~0ull;
        ck_u32x4 r = {{0, 0, 0, 0}};
        for (int b = 0; b < 32; ++b) {
            long long i = wd * 32 + b;
            if (i >= count)
                break;
            long long row = i / s.w; /* (n*C + c)*H + h */
            int w = (int)(i - row * s.w);
            uint64_t call = (uint64_t)row * (uint64_t)((s.w + 3) >> 2) + (uint64_t)(w >> 2);
            if (call != last_call) {
                r = ck_dropout_call(seed, offset, call0 + call);
                last_call = call;
            }
            out |= (uint32_t)(r.v[w & 3] >= thr) << b;
        }
        bits[wd] = out;
    }
}

/* ---- SpatialDropout apply ------------------------------------------------------------------ */

__device__ __forceinline__ float ck_spatial_factor(long long g, const uint8_t *mask, uint64_t seed,
                                                   uint64_t offset, uint64_t u0, uint32_t thr,
                                                   float scale) {
    int keep = mask ? mask[g] != 0 : ck_spatial_keep(seed, offset, thr, u0 + (uint64_t)g);
    return keep ? scale : 0.0f;
}

/* Vector path: four elements share one (n, c) in NCHW (HW % 4 == 0), or are four consecutive
 * channels of one pixel in NHWC (C % 4 == 0), whose four draws are the four words of one call. */
__global__ void ck_spatial_apply_vec(const float4 *x, float4 *y, long long quads, ck_kshape s,
                                     const uint8_t *mask, uint64_t seed, ck_koffset ko, uint64_t u0,
                                     uint32_t thr, float scale) {
    const uint64_t offset = ck_koffset_get(ko);
    const long long hw = (long long)s.h * s.w;
    for (long long q = blockIdx.x * (long long)blockDim.x + threadIdx.x; q < quads;
         q += (long long)gridDim.x * blockDim.x) {
        const long long e = q * 4;
        float4 v = x[q];
        if (!s.nhwc) {
            const float m = ck_spatial_factor(e / hw, mask, seed, offset, u0, thr, scale);
            v.x *= m;
            v.y *= m;
            v.z *= m;
            v.w *= m;
        } else {
            const long long n = e / (hw * s.c);
            const long long g = n * s.c + (e % s.c); /* multiple of 4 */
            float m0, m1, m2, m3;
            if (mask) {
                m0 = mask[g] ? scale : 0.0f;
                m1 = mask[g + 1] ? scale : 0.0f;
                m2 = mask[g + 2] ? scale : 0.0f;
                m3 = mask[g + 3] ? scale : 0.0f;
            } else if ((u0 & 3u) == 0) {
                ck_u32x4 r = ck_dropout_call(seed, offset, (u0 + (uint64_t)g) >> 2);
                m0 = r.v[0] >= thr ? scale : 0.0f;
                m1 = r.v[1] >= thr ? scale : 0.0f;
                m2 = r.v[2] >= thr ? scale : 0.0f;
                m3 = r.v[3] >= thr ? scale : 0.0f;
            } else { /* a shard whose units do not start on a call: one draw per unit */
                m0 = ck_spatial_factor(g, NULL, seed, offset, u0, thr, scale);
                m1 = ck_spatial_factor(g + 1, NULL, seed, offset, u0, thr, scale);
                m2 = ck_spatial_factor(g + 2, NULL, seed, offset, u0, thr, scale);
                m3 = ck_spatial_factor(g + 3, NULL, seed, offset, u0, thr, scale);
            }
            v.x *= m0;
            v.y *= m1;
            v.z *= m2;
            v.w *= m3;
        }
        y[q] = v;
    }
}

/* bf16, 8 words per 16-byte access: 8 elements of one (n, c) in NCHW (HW % 8 == 0), or 8
 * consecutive channels of one pixel in NHWC (C % 8 == 0), whose draws are the words of two calls
 * (as the float4 path's four); each element as ck_spatial_apply_scalar. */
__global__ void ck_spatial_apply_vec8(const uint16_t *x, uint16_t *y, long long octs, ck_kshape s,
                                      const uint8_t *mask, uint64_t seed, ck_koffset ko,
                                      uint64_t u0, uint32_t thr, float scale) {
    const uint64_t offset = ck_koffset_get(ko);
    const long long hw = (long long)s.h * s.w;
    for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < octs;
         o += (long long)gridDim.x * blockDim.x) {
        const long long e = o * 8;
        float v[8];
        ck_bf16x8_ld(x, e, v);
        if (!s.nhwc) {
            const float m = ck_spatial_factor(e / hw, mask, seed, offset, u0, thr, scale);
#pragma unroll
            for (int j = 0; j < 8; ++j)
                v[j] *= m;
        } else {
            const long long n = e / (hw * s.c);
            const long long g = n * s.c + (e % s.c); /* multiple of 8 */
            if (mask) {
#pragma unroll
                for (int j = 0; j < 8; ++j)
                    v[j] *= mask[g + j] ? scale : 0.0f;
            } else if ((u0 & 3u) == 0) {
                const ck_u32x4 r0 = ck_dropout_call(seed, offset, (u0 + (uint64_t)g) >> 2);
                const ck_u32x4 r1 = ck_dropout_call(seed, offset, ((u0 + (uint64_t)g) >> 2) + 1);
#pragma unroll
                for (int j = 0; j < 8; ++j)
                    v[j] *= (j < 4 ? r0.v[j] : r1.v[j - 4]) >= thr ? scale : 0.0f;
            } else { /* a shard whose units do not start on a call: one draw per unit */
#pragma unroll
                for (int j = 0; j < 8; ++j)
                    v[j] *= ck_spatial_factor(g + j, NULL, seed, offset, u0, thr, scale);
            }
        }
        ck_bf16x8_st(y, e, v);
    }
}

template <class S>
__global__ void ck_spatial_apply_scalar(const typename S::T *x, typename S::T *y, long long count,
                                        ck_kshape s, const uint8_t *mask, uint64_t seed,
                                        ck_koffset ko, uint64_t u0, uint32_t thr, float scale) {
    const uint64_t offset = ck_koffset_get(ko);
    const long long hw = (long long)s.h * s.w;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < count;
         e += (long long)gridDim.x * blockDim.x) {
        const long long g = s.nhwc ? (e / (hw * s.c)) * s.c + e % s.c : e / hw;
        S::st(y, e, S::ld(x, e) * ck_spatial_factor(g, mask, seed, offset, u0, thr, scale));
    }
}

/* ---- element Dropout apply ----------------------------------------------------------------- */

/* One thread per group of four neighbours along W of one row (n, c, h): one Philox call.
 * NCHW: the four are contiguous; NHWC: they are C apart, and neighbouring threads take
 * neighbouring channels, so each of the four accesses is coalesced across the warp. */
template <class S>
__global__ void ck_element_apply(const typename S::T *x, typename S::T *y, long long groups,
                                 ck_kshape s, const uint32_t *bits, uint64_t seed, ck_koffset ko,
                                 uint64_t call0, uint32_t thr, float scale) {
    const uint64_t offset = ck_koffset_get(ko);
    const int wq = (s.w + 3) >> 2;
    for (long long u = blockIdx.x * (long long)blockDim.x + threadIdx.x; u < groups;
         u += (long long)gridDim.x * blockDim.x) {
        int n, c, h, q;
        long long t = u;
        if (s.nhwc) { /* u = ((n*H + h)*wq + q)*C + c */
            c = (int)(t % s.c);
            t /= s.c;
            q = (int)(t % wq);
            t /= wq;
            h = (int)(t % s.h);
            n = (int)(t / s.h);
        } else { /* u = ((n*C + c)*H + h)*wq + q */
            q = (int)(t % wq);
            t /= wq;
            h = (int)(t % s.h);
            t /= s.h;
            c = (int)(t % s.c);
            n = (int)(t / s.c);
        }
        const long long row = ((long long)n * s.c + c) * s.h + h; /* NCHW row index */
        ck_u32x4 r = {{0, 0, 0, 0}};
        if (!bits)
            r = ck_dropout_call(seed, offset, call0 + (uint64_t)row * (uint64_t)wq + (uint64_t)q);
        const int w0 = q * 4;
        const int cnt = s.w - w0 < 4 ? s.w - w0 : 4;
        for (int j = 0; j < cnt; ++j) {
            const int w = w0 + j;
            const long long flat = row * s.w + w; /* NCHW flat index */
            int keep;
            if (bits)
                keep = (bits[flat >> 5] >> (flat & 31)) & 1u;
            else
                keep = r.v[j] >= thr;
            const long long idx = s.nhwc ? ((((long long)n * s.h + h) * s.w + w) * s.c + c) : flat;
            S::st(y, idx, S::ld(x, idx) * (keep ? scale : 0.0f));
        }
    }
}

/* bf16 NCHW with W % 8 == 0: one thread per 8 words of a row (two groups of four, two calls);
 * each element as ck_element_apply. */
__global__ void ck_element_apply_vec8_nchw(const uint16_t *x, uint16_t *y, long long octs,
                                           ck_kshape s, const uint32_t *bits, uint64_t seed,
                                           ck_koffset ko, uint64_t call0, uint32_t thr,
                                           float scale) {
    const uint64_t offset = ck_koffset_get(ko);
    const int wq = (s.w + 3) >> 2;
    for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < octs;
         o += (long long)gridDim.x * blockDim.x) {
        const long long e = o * 8; /* NCHW flat index */
        const long long row = e / s.w;
        const int q0 = (int)(e - row * s.w) >> 2;
        ck_u32x4 r0 = {{0, 0, 0, 0}}, r1 = {{0, 0, 0, 0}};
        if (!bits) {
            const uint64_t call = call0 + (uint64_t)row * (uint64_t)wq + (uint64_t)q0;
            r0 = ck_dropout_call(seed, offset, call);
            r1 = ck_dropout_call(seed, offset, call + 1);
        }
        float v[8];
        ck_bf16x8_ld(x, e, v);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const long long flat = e + j;
            int keep;
            if (bits)
                keep = (bits[flat >> 5] >> (flat & 31)) & 1u;
            else
                keep = (j < 4 ? r0.v[j] : r1.v[j - 4]) >= thr;
            v[j] *= keep ? scale : 0.0f;
        }
        ck_bf16x8_st(y, e, v);
    }
}

/* bf16 NHWC with C % 8 == 0: one thread per group of four along W of 8 consecutive channels
 * (u = ((n*H + h)*wq + q)*(C/8) + c/8): up to four 16-byte accesses, one call per channel's row;
 * each element as ck_element_apply. */
__global__ void ck_element_apply_vec8_nhwc(const uint16_t *x, uint16_t *y, long long units,
                                           ck_kshape s, const uint32_t *bits, uint64_t seed,
                                           ck_koffset ko, uint64_t call0, uint32_t thr,
                                           float scale) {
    const uint64_t offset = ck_koffset_get(ko);
    const int wq = (s.w + 3) >> 2, co = s.c >> 3;
    for (long long u = blockIdx.x * (long long)blockDim.x + threadIdx.x; u < units;
         u += (long long)gridDim.x * blockDim.x) {
        long long t = u;
        const int c0 = (int)(t % co) * 8;
        t /= co;
        const int q = (int)(t % wq);
        t /= wq;
        const int h = (int)(t % s.h);
        const int n = (int)(t / s.h);
        const int w0 = q * 4;
        const int cnt = s.w - w0 < 4 ? s.w - w0 : 4;
        const long long pix0 = ((long long)n * s.h + h) * s.w + w0;
        float v[4][8];
#pragma unroll
        for (int k = 0; k < 4; ++k)
            if (k < cnt)
                ck_bf16x8_ld(x, (pix0 + k) * s.c + c0, v[k]);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const long long row = ((long long)n * s.c + c0 + j) * s.h + h; /* NCHW row index */
            ck_u32x4 r = {{0, 0, 0, 0}};
            if (!bits)
                r = ck_dropout_call(seed, offset,
                                    call0 + (uint64_t)row * (uint64_t)wq + (uint64_t)q);
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                if (k < cnt) {
                    const long long flat = row * s.w + w0 + k; /* NCHW flat index */
                    int keep;
                    if (bits)
                        keep = (bits[flat >> 5] >> (flat & 31)) & 1u;
                    else
                        keep = r.v[k] >= thr;
                    v[k][j] *= keep ? scale : 0.0f;
                }
            }
        }
#pragma unroll
        for (int k = 0; k < 4; ++k)
            if (k < cnt)
                ck_bf16x8_st(y, (pix0 + k) * s.c + c0, v[k]);
    }
}

extern "C" int ck_cuda_dropout(int kind, const void *x, void *y, ck_kshape s, uint64_t seed,
                               ck_koffset offset, uint64_t sample0, uint32_t thr, float scale,
                               const uint8_t *mask_in, uint8_t *mask_out, void *stream) {
    cudaStream_t st = (cudaStream_t)stream;
    const long long count = (long long)s.n * s.c * s.h * s.w;
    const long long hw = (long long)s.h * s.w;
    if (kind == 0) {
        const long long units = (long long)s.n * s.c;
        const uint64_t u0 = ck_spatial_unit0(sample0, s.c);
        if (mask_out) {
            ck_spatial_mask_kernel<<<ck_grid_for(units, CK_BLOCK), CK_BLOCK, 0, st>>>(
                mask_out, units, seed, offset, u0, thr);
            mask_in = mask_out; /* apply from the stored mask: no second generation */
        }
        const bool vec =
            s.dt != CK_KDT_BF16 && ck_aligned16(x, y) && (s.nhwc ? (s.c % 4 == 0) : (hw % 4 == 0));
        if (vec) {
            const long long quads = count / 4;
            ck_spatial_apply_vec<<<ck_grid_for(quads, CK_BLOCK), CK_BLOCK, 0, st>>>(
                (const float4 *)x, (float4 *)y, quads, s, mask_in, seed, offset, u0, thr, scale);
        } else if (s.dt == CK_KDT_BF16 && ck_aligned16(x, y) &&
                   (s.nhwc ? (s.c % 8 == 0) : (hw % 8 == 0))) {
            const long long octs = count / 8;
            ck_spatial_apply_vec8<<<ck_grid_for(octs, CK_BLOCK), CK_BLOCK, 0, st>>>(
                (const uint16_t *)x, (uint16_t *)y, octs, s, mask_in, seed, offset, u0, thr, scale);
        } else if (s.dt == CK_KDT_BF16) {
            ck_spatial_apply_scalar<ck_st_bf16><<<ck_grid_for(count, CK_BLOCK), CK_BLOCK, 0, st>>>(
                (const uint16_t *)x, (uint16_t *)y, count, s, mask_in, seed, offset, u0, thr,
                scale);
        } else {
            ck_spatial_apply_scalar<ck_st_f32><<<ck_grid_for(count, CK_BLOCK), CK_BLOCK, 0, st>>>(
                (const float *)x, (float *)y, count, s, mask_in, seed, offset, u0, thr, scale);
        }
        return ck_launch_status();
    }
    const uint32_t *bits = (const uint32_t *)mask_in;
    const uint64_t call0 = ck_element_call0(sample0, s.c, s.h, s.w);
    if (mask_out) {
        const long long words = (count + 31) / 32;
        ck_element_mask_kernel<<<ck_grid_for(words, CK_BLOCK), CK_BLOCK, 0, st>>>(
            (uint32_t *)mask_out, words, count, s, seed, offset, call0, thr);
        bits = (const uint32_t *)mask_out;
    }
    const long long groups = (long long)s.n * s.c * s.h * ((s.w + 3) >> 2);
    const bool bf = s.dt == CK_KDT_BF16, al = ck_aligned16(x, y);
    if (bf && al && s.nhwc && s.c % 8 == 0) {
        const long long units = groups / 8;
        ck_element_apply_vec8_nhwc<<<ck_grid_for(units, CK_BLOCK), CK_BLOCK, 0, st>>>(
            (const uint16_t *)x, (uint16_t *)y, units, s, bits, seed, offset, call0, thr, scale);
    } else if (bf && al && !s.nhwc && s.w % 8 == 0) {
        const long long octs = count / 8;
        ck_element_apply_vec8_nchw<<<ck_grid_for(octs, CK_BLOCK), CK_BLOCK, 0, st>>>(
            (const uint16_t *)x, (uint16_t *)y, octs, s, bits, seed, offset, call0, thr, scale);
    } else if (bf)
        ck_element_apply<ck_st_bf16><<<ck_grid_for(groups, CK_BLOCK), CK_BLOCK, 0, st>>>(
            (const uint16_t *)x, (uint16_t *)y, groups, s, bits, seed, offset, call0, thr, scale);
    else
        ck_element_apply<ck_st_f32><<<ck_grid_for(groups, CK_BLOCK), CK_BLOCK, 0, st>>>(
            (const float *)x, (float *)y, groups, s, bits, seed, offset, call0, thr, scale);
    return ck_launch_status();
}
