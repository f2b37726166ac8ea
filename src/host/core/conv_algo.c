/* The convolution algorithm choice of cudnn_conv_plan.c as plain C: which cuDNN candidate a setting
 * allows and the per-context cache of timed choices. No CUDA here, so the CPU suite tests it. */
#include "internal.h"

#include <string.h>

static int math_allowed(ck_cand_math m, ck_math math) {
    if (math == CK_MATH_TF32)
        return m == CK_CAND_MATH_FMA || m == CK_CAND_MATH_DEFAULT || m == CK_CAND_MATH_TENSOR_OP;
    return m == CK_CAND_MATH_FMA;
}

int ck_conv_algo_choose(const ck_algo_cand *cands, int count, ck_conv_algo policy, ck_math math,
                        size_t max_bytes) {
    int first = -1, fastest = -1;
    for (int i = 0; i < count; ++i) {
        const ck_algo_cand *a = &cands[i];
        if (!a->ok || a->memory > max_bytes || !math_allowed(a->math, math))
            continue;
        if (policy != CK_CONV_ALGO_FASTEST && !a->deterministic)
            continue;
        if (first < 0)
            first = i;
        /* deterministic keeps cuDNN's heuristic order (today's choice, unchanged) */
        if (policy == CK_CONV_ALGO_FASTEST && a->time_ms >= 0.0f &&
            (fastest < 0 || a->time_ms < cands[fastest].time_ms))
            fastest = i;
    }
    return fastest >= 0 ? fastest : first;
}

float ck_conv_layout_step_ms(const float time_ms[3], float transpose_ms, int nchw) {
    float sum = nchw ? transpose_ms : 0.0f;
    if (sum < 0.0f)
        return -1.0f;
    for (int d = 0; d < 3; ++d) {
        if (!(time_ms[d] >= 0.0f))
            return -1.0f;
        sum += time_ms[d];
    }
    return sum;
}

int ck_conv_layout_prefers_nchw(float nhwc_ms, float nchw_ms) {
    return nhwc_ms >= 0.0f && nchw_ms >= 0.0f && nchw_ms < (1.0f - CK_CONV_LAYOUT_MARGIN) * nhwc_ms;
}

const ck_conv_algo_plan *ck_conv_algo_cache_find(const ck_conv_algo_cache *c,
                                                 const ck_conv_algo_key *key) {
    for (int i = 0; i < c->count; ++i)
        if (!memcmp(&c->key[i], key, sizeof *key))
            return &c->plan[i];
    return NULL;
}

void ck_conv_algo_cache_put(ck_conv_algo_cache *c, const ck_conv_algo_key *key,
                            const ck_conv_algo_plan *plan) {
    int slot = -1;
    for (int i = 0; i < c->count && slot < 0; ++i)
        if (!memcmp(&c->key[i], key, sizeof *key))
            slot = i;
    if (slot < 0 && c->count < CK_CONV_ALGO_CACHE)
        slot = c->count++;
    if (slot < 0) { /* full: the oldest insertion goes (round robin) */
        slot = c->next;
        c->next = (c->next + 1) % CK_CONV_ALGO_CACHE;
    }
    c->key[slot] = *key;
    c->plan[slot] = *plan;
}
