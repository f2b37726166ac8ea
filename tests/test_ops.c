/* Suite `ops`: the op table (tests/ops) driven three ways: the CPU op against the naive reference,
 * a finite-difference gradcheck of every backward, and the GPU runner against the CPU op (skipped
 * without a device). A coverage test fails naming any ck_cuda_* launcher no case reaches. */
#include "common.h"
#include "ops/ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const op_case *const k_cases[] = {
    &op_act, &op_pool,   &op_gap,  &op_dense, &op_conv,    &op_xent, &op_adam, &op_sgd,
    &op_pad, &op_layout, &op_flag, &op_fill,  &op_dropout, &op_bn,   &op_bf16,
};
#define NCASES (sizeof k_cases / sizeof k_cases[0])

typedef struct bufs {
    float *in[OP_MAX_IO], *out[OP_MAX_IO];
} bufs;

static uint64_t name_seed(const char *s, int k) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
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

static void alloc_in(const op_case *c, int k, bufs *b) {
    const op_variant *v = &c->variants[k];
    trng r = {name_seed(c->name, k)};
    for (int i = 0; i < v->nin; i++) {
        b->in[i] = calloc(v->in[i].count ? v->in[i].count : 1, sizeof(float));
        init_arr(&v->in[i], b->in[i], &r);
    }
}

static void alloc_out(const op_variant *v, bufs *b) {
    for (int i = 0; i < v->nout; i++) {
        b->out[i] = calloc(v->out[i].count ? v->out[i].count : 1, sizeof(float));
        if (v->out[i].from)
            memcpy(b->out[i], b->in[v->out[i].from - 1], v->out[i].count * sizeof(float));
    }
}

static void free_bufs(const op_variant *v, bufs *b) {
    for (int i = 0; i < v->nin; i++)
        free(b->in[i]);
    for (int i = 0; i < v->nout; i++)
        free(b->out[i]);
}

/* max |a - b| / max(1e-3, max |b|); NaN anywhere counts as infinite error */
static double scaled_err(const float *a, const float *b, size_t n) {
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

/* Compares outputs; tol 0 asks for identical bits. Returns the number of mismatching arrays. */
static int compare(const char *what, const op_case *c, const op_variant *v, float *const *got,
                   float *const *want, double tol) {
    int bad = 0;
    for (int i = 0; i < v->nout; i++) {
        const size_t n = v->out[i].count;
        if (tol == 0.0) {
            const int same = memcmp(got[i], want[i], n * sizeof(float)) == 0;
            cr_expect(same, "%s %s/%s: %s differs in its bits (err %.3g)", what, c->name, v->name,
                      v->out[i].name, scaled_err(got[i], want[i], n));
            bad += !same;
            continue;
        }
        const double e = scaled_err(got[i], want[i], n);
        cr_expect(e <= tol, "%s %s/%s: %s err %.3g > %.3g", what, c->name, v->name, v->out[i].name,
                  e, tol);
        bad += !(e <= tol);
    }
    return bad;
}

Test(ops, cpu_vs_reference) {
    for (size_t ci = 0; ci < NCASES; ci++) {
        const op_case *c = k_cases[ci];
        if (!c->cpu)
            continue;
        for (int k = 0; k < c->nvariants; k++) {
            const op_variant *v = &c->variants[k];
            bufs got = {0}, want = {0};
            alloc_in(c, k, &got);
            alloc_in(c, k, &want);
            alloc_out(v, &got);
            alloc_out(v, &want);
            c->cpu(v, got.in, got.out);
            c->ref(v, want.in, want.out);
            compare("cpu vs ref", c, v, got.out, want.out, c->ref_tol);
            free_bufs(v, &got);
            free_bufs(v, &want);
        }
    }
}

/* <dy, y> of the reference forward, in double. */
static double pairing(const op_case *c, const op_variant *v, bufs *b) {
    c->ref(v, b->in, b->out);
    const float *y = b->out[c->grad_y], *dy = b->in[c->grad_dy];
    double s = 0.0;
    for (size_t i = 0; i < v->out[c->grad_y].count; i++)
        s += (double)y[i] * dy[i];
    return s;
}

Test(ops, gradcheck) {
    int checked = 0;
    for (size_t ci = 0; ci < NCASES; ci++) {
        const op_case *c = k_cases[ci];
        if (!c->ngrad)
            continue;
        for (int k = 0; k < c->nvariants; k++) {
            const op_variant *v = &c->variants[k];
            bufs an = {0}, fd = {0};
            alloc_in(c, k, &an);
            alloc_out(v, &an);
            c->cpu(v, an.in, an.out);
            alloc_in(c, k, &fd);
            alloc_out(v, &fd);
            for (int gi = 0; gi < c->ngrad; gi++) {
                const op_grad gr = c->grad[gi];
                const size_t n = v->in[gr.x].count;
                const float *g = an.out[gr.dx];
                double scale = 1e-3, err = 0.0, worst_num = 0.0;
                size_t worst = 0;
                for (size_t i = 0; i < n; i++)
                    scale = fmax(scale, fabs(g[i]));
                /* at most ~40 probes per array, spread over it */
                const size_t step = n / 40 + 1;
                for (size_t i = 0; i < n; i += step) {
                    float *x = fd.in[gr.x];
                    const float x0 = x[i],
                                h = (c->grad_h > 0 ? c->grad_h : 1e-3f) * fmaxf(1.0f, fabsf(x0));
                    x[i] = x0 + h;
                    const double sp = pairing(c, v, &fd);
                    x[i] = x0 - h;
                    const double sm = pairing(c, v, &fd);
                    x[i] = x0;
                    const double num = (sp - sm) / ((double)(x0 + h) - (double)(x0 - h));
                    if (fabs(num - g[i]) / scale > err) {
                        err = fabs(num - g[i]) / scale;
                        worst = i;
                        worst_num = num;
                    }
                }
                cr_expect(err <= c->grad_tol,
                          "gradcheck %s/%s: d%s err %.3g > %.3g (at %zu: numeric %.6g, "
                          "analytic %.6g)",
                          c->name, v->name, v->in[gr.x].name, err, c->grad_tol, worst, worst_num,
                          g[worst]);
                checked++;
            }
            free_bufs(v, &an);
            free_bufs(v, &fd);
        }
    }
    cr_assert_gt(checked, 0);
}

static ck_tensor *dev_arr(ck_context *g, const op_arr *a, const float *host) {
    ck_tensor *t = op_tensor(g, a, host);
    cr_assert(t, "tensor %s: %s", a->name, ck_context_last_error(g));
    return t;
}

Test(ops, gpu_vs_cpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    for (size_t ci = 0; ci < NCASES; ci++) {
        const op_case *c = k_cases[ci];
        if (!c->gpu)
            continue;
        for (int k = 0; k < c->nvariants; k++) {
            const op_variant *v = &c->variants[k];
            bufs host = {0}, want = {0};
            ck_tensor *tin[OP_MAX_IO] = {0}, *tout[OP_MAX_IO] = {0};
            alloc_in(c, k, &host);
            alloc_out(v, &host);
            alloc_in(c, k, &want);
            alloc_out(v, &want);
            (c->cpu ? c->cpu : c->ref)(v, want.in, want.out);
            for (int i = 0; i < v->nin; i++)
                tin[i] = dev_arr(g, &v->in[i], host.in[i]);
            for (int i = 0; i < v->nout; i++)
                tout[i] =
                    dev_arr(g, &v->out[i], v->out[i].from ? want.in[v->out[i].from - 1] : NULL);
            cr_assert_eq(c->gpu(g, v, tin, tout), 0, "gpu %s/%s", c->name, v->name);
            CK_OK(g, ck_context_synchronize(g));
            for (int i = 0; i < v->nout; i++)
                if (v->out[i].count)
                    CK_OK(g, ck_tensor_download(g, tout[i], host.out[i], v->out[i].count));
            compare("gpu vs cpu", c, v, host.out, want.out, c->gpu_tol);
            for (int i = 0; i < v->nin; i++)
                ck_tensor_destroy(tin[i]);
            for (int i = 0; i < v->nout; i++)
                ck_tensor_destroy(tout[i]);
            free_bufs(v, &host);
            free_bufs(v, &want);
        }
    }
    ck_context_destroy(g);
}

/* Every ck_cuda_* declared in ck_kernels.h must be reached by some case's GPU runner. */
Test(ops, launcher_coverage) {
    char *text = t_read_file(CNNKIT_SOURCE_DIR "/src/kernels/ck_kernels.h", NULL);
    int declared = 0, missing = 0;
    for (const char *p = text; (p = strstr(p, "ck_cuda_")) != NULL;) {
        const char *e = p;
        while ((*e >= 'a' && *e <= 'z') || (*e >= '0' && *e <= '9') || *e == '_')
            e++;
        const int is_decl = *e == '(' && p > text && p[-1] == ' ';
        if (is_decl) {
            char name[96];
            snprintf(name, sizeof name, "%.*s", (int)(e - p), p);
            int found = 0;
            for (size_t ci = 0; ci < NCASES && !found; ci++) {
                const char *l = k_cases[ci]->launchers, *q = l;
                const size_t len = strlen(name);
                while (l && (q = strstr(q, name)) != NULL && !found) {
                    found = (q == l || q[-1] == ' ') && (q[len] == ' ' || q[len] == '\0');
                    q += len;
                }
            }
            cr_expect(found, "launcher %s is named by no op case (tests/ops)", name);
            missing += !found;
            declared++;
        }
        p = e;
    }
    free(text);
    cr_assert_gt(declared, 10, "found only %d ck_cuda_* declarations", declared);
    cr_assert_eq(missing, 0);
}
