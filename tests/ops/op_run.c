/* The case list and the per-variant data that tests/test_ops.c and bench/bench_ops.c share. */
#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "trng.h"
#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"
#include "internal.h"
#endif

const op_case *const op_cases[] = {
    &op_act,           &op_pool,     &op_pool_cudnn, &op_gap,
    &op_dense,         &op_conv,     &op_xent,       &op_adam,
    &op_sgd,           &op_pad,      &op_layout,     &op_flag,
    &op_fill,          &op_dropout,  &op_bn,         &op_add,
    &op_channel_slice, &op_bf16,     &op_rescale,    &op_scale,
    &op_gather,        &op_act_bf16, &op_pool_bf16,  &op_gap_bf16,
    &op_dropout_bf16,  &op_bn_bf16,  &op_add_bf16,   &op_channel_slice_bf16,
    &op_rescale_bf16,  &op_rmsprop,  &op_adadelta,
};
const int op_ncases = (int)(sizeof op_cases / sizeof op_cases[0]);

uint64_t op_seed(const op_case *c, int k) {
    uint64_t h = 1469598103934665603ULL;
    for (const char *s = c->name; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h ^ (uint64_t)(k + 1) * 0x9E3779B97F4A7C15ULL;
}

static void init_arr(const op_arr *a, float *p, trng *r) {
    if (a->init == OP_LABELS) {
        for (size_t i = 0; i < a->count; i++) {
            const int32_t lab = (int32_t)(trng_u32(r) % (uint32_t)a->hi);
            memcpy(p + i, &lab, sizeof lab);
        }
        return;
    }
    if (a->init == OP_DISTINCT) {
        for (size_t i = 0; i < a->count; i++)
            p[i] = a->lo + (float)i * a->hi;
        for (size_t i = a->count; i > 1; i--) {
            const size_t j = trng_u32(r) % i;
            const float t = p[i - 1];
            p[i - 1] = p[j];
            p[j] = t;
        }
        return;
    }
    trng_fill(r, p, a->count, a->lo, a->hi);
}

int op_bufs_alloc(const op_variant *v, uint64_t seed, op_bufs *b) {
    trng r = {seed};
    memset(b, 0, sizeof *b);
    for (int i = 0; i < v->nin; i++) {
        if (!(b->in[i] = calloc(v->in[i].count ? v->in[i].count : 1, sizeof(float)))) {
            op_bufs_free(v, b);
            return -1;
        }
        init_arr(&v->in[i], b->in[i], &r);
    }
    for (int i = 0; i < v->nout; i++) {
        if (!(b->out[i] = calloc(v->out[i].count ? v->out[i].count : 1, sizeof(float)))) {
            op_bufs_free(v, b);
            return -1;
        }
        if (v->out[i].from)
            memcpy(b->out[i], b->in[v->out[i].from - 1], v->out[i].count * sizeof(float));
    }
    return 0;
}

void op_bufs_free(const op_variant *v, op_bufs *b) {
    for (int i = 0; i < v->nin; i++)
        free(b->in[i]);
    for (int i = 0; i < v->nout; i++)
        free(b->out[i]);
    memset(b, 0, sizeof *b);
}

double op_scaled_err(const float *a, const float *b, size_t n) {
    double m = 1e-3, e = 0.0;
    for (size_t i = 0; i < n; ++i) {
        const double d = fabs((double)a[i] - b[i]);
        if (isnan(d))
            return INFINITY;
        if (fabs(b[i]) > m)
            m = fabs(b[i]);
        if (d > e)
            e = d;
    }
    return e / m;
}

double op_outputs_err(const op_variant *v, float *const *got, float *const *want, double tol,
                      int *worst) {
    double err = 0.0;
    if (worst)
        *worst = 0;
    for (int i = 0; i < v->nout; i++) {
        const size_t n = v->out[i].count;
        /* tol 0: the bits decide (a NaN output the reference also gives is a match) */
        const double e = tol == 0.0 ? (memcmp(got[i], want[i], n * sizeof(float)) ? INFINITY : 0.0)
                                    : op_scaled_err(got[i], want[i], n);
        if (e > err || isnan(e)) {
            err = e;
            if (worst)
                *worst = i;
        }
    }
    return err;
}

size_t op_bytes(const op_variant *v) {
    size_t floats = 0;
    for (int i = 0; i < v->nin; i++) {
        int is_start = 0;
        for (int o = 0; o < v->nout; o++)
            is_start |= v->out[o].from == i + 1;
        floats += is_start ? 0 : v->in[i].count;
    }
    for (int o = 0; o < v->nout; o++)
        floats += v->out[o].count * (v->out[o].from ? 2 : 1);
    return floats * sizeof(float);
}

void op_bf16_round_arrs(const op_arr *a, int n, float *const *arrs, unsigned mask) {
    for (int i = 0; i < n; i++)
        if (mask >> i & 1u)
            ck_bf16_round_buffer(arrs[i], a[i].count);
}

void op_bf16_host(const op_variant *v, float *const *in, float *const *out, unsigned in_mask,
                  unsigned out_mask, op_host_fn fn) {
    op_bf16_round_arrs(v->in, v->nin, in, in_mask);
    fn(v, in, out);
    op_bf16_round_arrs(v->out, v->nout, out, out_mask);
}

#ifdef CNNKIT_HAVE_CUDA
/* A bf16 copy of t (packed) or an unfilled one, as a tensor of t's shape marked bf16. */
static ck_tensor *bf16_twin(ck_context *g, const op_arr *a, const ck_tensor *t, int pack, int *e) {
    ck_tensor *b = op_tensor(g, a, NULL);
    if (!b) {
        *e = -1;
        return NULL;
    }
    if (pack && a->count)
        *e = ck_cuda_bf16_pack(ck_tensor_data((ck_tensor *)t), (uint16_t *)ck_tensor_data(b),
                               a->count, ck_context_stream(g));
    b->dtype = CK_KDT_BF16;
    return b;
}

int op_gpu_bf16(ck_context *g, const op_variant *v, ck_tensor *const *in, ck_tensor *const *out,
                unsigned in_mask, unsigned out_mask, op_gpu_fn run) {
    ck_tensor *sin[OP_MAX_IO] = {0}, *sout[OP_MAX_IO] = {0};
    ck_tensor *own[2 * OP_MAX_IO] = {0};
    int e = 0, nown = 0;
    for (int i = 0; i < v->nin && !e; i++)
        sin[i] = in_mask >> i & 1u ? (own[nown++] = bf16_twin(g, &v->in[i], in[i], 1, &e)) : in[i];
    for (int i = 0; i < v->nout && !e; i++)
        sout[i] = out_mask >> i & 1u
                      ? (own[nown++] = bf16_twin(g, &v->out[i], out[i], v->out[i].from != 0, &e))
                      : out[i];
    if (!e)
        e = run(g, v, sin, sout);
    for (int i = 0; i < v->nout && !e; i++)
        if (out_mask >> i & 1u && v->out[i].count)
            e = ck_cuda_bf16_unpack((const uint16_t *)ck_tensor_data(sout[i]),
                                    ck_tensor_data(out[i]), v->out[i].count, ck_context_stream(g));
    if (!e)
        e = (int)ck_context_synchronize(g);
    for (int i = 0; i < nown; i++)
        if (own[i]) {
            own[i]->dtype = CK_KDT_F32;
            ck_tensor_destroy(own[i]);
        }
    return e;
}
#endif
