/* Suite `ops`: the op table (tests/ops) driven three ways: the CPU op against the naive reference,
 * a finite-difference gradcheck of every backward, and the GPU runner against the CPU op (skipped
 * without a device). A coverage test fails naming any ck_cuda_* launcher no case reaches. */
#include "common.h"
#include "ops/ops.h"

#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A variant's host arrays from its test seed; fails the test out of memory. */
static void alloc_bufs(const op_case *c, int k, op_bufs *b) {
    cr_assert_eq(op_bufs_alloc(&c->variants[k], op_seed(c, k), b), 0, "%s: out of memory", c->name);
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
                      v->out[i].name, op_scaled_err(got[i], want[i], n));
            bad += !same;
            continue;
        }
        const double e = op_scaled_err(got[i], want[i], n);
        cr_expect(e <= tol, "%s %s/%s: %s err %.3g > %.3g", what, c->name, v->name, v->out[i].name,
                  e, tol);
        bad += !(e <= tol);
    }
    return bad;
}

Test(ops, cpu_vs_reference) {
    for (int ci = 0; ci < op_ncases; ci++) {
        const op_case *c = op_cases[ci];
        if (!c->cpu)
            continue;
        for (int k = 0; k < c->nvariants; k++) {
            const op_variant *v = &c->variants[k];
            op_bufs got, want;
            alloc_bufs(c, k, &got);
            alloc_bufs(c, k, &want);
            c->cpu(v, got.in, got.out);
            c->ref(v, want.in, want.out);
            compare("cpu vs ref", c, v, got.out, want.out, c->ref_tol);
            op_bufs_free(v, &got);
            op_bufs_free(v, &want);
        }
    }
}

/* <dy, y> of the reference forward, in double. */
static double pairing(const op_case *c, const op_variant *v, op_bufs *b) {
    c->ref(v, b->in, b->out);
    const float *y = b->out[c->grad_y], *dy = b->in[c->grad_dy];
    double s = 0.0;
    for (size_t i = 0; i < v->out[c->grad_y].count; i++)
        s += (double)y[i] * dy[i];
    return s;
}

Test(ops, gradcheck) {
    int checked = 0;
    for (int ci = 0; ci < op_ncases; ci++) {
        const op_case *c = op_cases[ci];
        if (!c->ngrad)
            continue;
        for (int k = 0; k < c->nvariants; k++) {
            const op_variant *v = &c->variants[k];
            op_bufs an, fd;
            alloc_bufs(c, k, &an);
            c->cpu(v, an.in, an.out);
            alloc_bufs(c, k, &fd);
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
            op_bufs_free(v, &an);
            op_bufs_free(v, &fd);
        }
    }
    cr_assert_gt(checked, 0);
}

static ck_tensor *dev_arr(ck_context *g, const op_arr *a, const float *host) {
    ck_tensor *t = op_tensor(g, a, host);
    cr_assert(t, "tensor %s: %s", a->name, ck_context_last_error(g));
    return t;
}

/* One test process per case with a GPU runner: a kernel that faults (a sticky CUDA error) fails
 * its own case, not every case after it. */
#define OPS_MAX_CASES 64
ParameterizedTestParameters(ops, gpu_vs_cpu) {
    static int idx[OPS_MAX_CASES];
    size_t n = 0;
    for (int i = 0; i < op_ncases && n < OPS_MAX_CASES; i++)
        if (op_cases[i]->gpu)
            idx[n++] = i;
    return cr_make_param_array(int, idx, n);
}

ParameterizedTest(int *which, ops, gpu_vs_cpu, .timeout = 300) {
    cr_assert_leq(op_ncases, OPS_MAX_CASES, "raise OPS_MAX_CASES");
    ck_context *g = t_cuda_ctx_or_skip();
    const op_case *c = op_cases[*which];
    for (int k = 0; k < c->nvariants; k++) {
        const op_variant *v = &c->variants[k];
        op_bufs host, want;
        ck_tensor *tin[OP_MAX_IO] = {0}, *tout[OP_MAX_IO] = {0};
        alloc_bufs(c, k, &host);
        alloc_bufs(c, k, &want);
        (c->cpu ? c->cpu : c->ref)(v, want.in, want.out);
        for (int i = 0; i < v->nin; i++)
            tin[i] = dev_arr(g, &v->in[i], host.in[i]);
        for (int i = 0; i < v->nout; i++)
            tout[i] = dev_arr(g, &v->out[i], v->out[i].from ? want.in[v->out[i].from - 1] : NULL);
        /* a failing variant is reported and the case's other variants still run */
        int rc = c->gpu(g, v, tin, tout);
        cr_expect_eq(rc, 0, "gpu %s/%s failed: %s", c->name, v->name, ck_context_last_error(g));
        if (!rc) {
            rc = (int)ck_context_synchronize(g);
            cr_expect_eq(rc, 0, "gpu %s/%s: synchronize: %s", c->name, v->name,
                         ck_context_last_error(g));
        }
        for (int i = 0; i < v->nout && !rc; i++)
            if (v->out[i].count) {
                rc = (int)ck_tensor_download(g, tout[i], host.out[i], v->out[i].count);
                cr_expect_eq(rc, 0, "gpu %s/%s: download: %s", c->name, v->name,
                             ck_context_last_error(g));
            }
        if (!rc)
            compare("gpu vs cpu", c, v, host.out, want.out, c->gpu_tol);
        for (int i = 0; i < v->nin; i++)
            ck_tensor_destroy(tin[i]);
        for (int i = 0; i < v->nout; i++)
            ck_tensor_destroy(tout[i]);
        op_bufs_free(v, &host);
        op_bufs_free(v, &want);
    }
    ck_context_destroy(g);
}

static const op_variant *variant_named(const op_case *c, const char *name) {
    for (int k = 0; k < c->nvariants; k++)
        if (!strcmp(c->variants[k].name, name))
            return &c->variants[k];
    cr_assert_fail("%s has no variant %s", c->name, name);
    return NULL;
}

/* op_bytes by hand: inputs read once, outputs written once, in-place outputs read and written. */
Test(ops, bytes_by_hand) {
    /* conv 2x5x5x3 -> 4, 3x3 same: x 150, k 108, b 4, dy 200 in; y 200, dx 150, dk 108, db 4 */
    cr_assert_eq(op_bytes(variant_named(&op_conv, "3x3_same_s1")), 924 * sizeof(float));
    /* Adam on 257: g read; p, m, v read and written */
    cr_assert_eq(op_bytes(variant_named(&op_adam, "step1")), 7 * 257 * sizeof(float));
    /* fill 1001: written only */
    cr_assert_eq(op_bytes(variant_named(&op_fill, "odd")), 1001 * sizeof(float));
    /* BN 3x4x3x5 (180): x, dy, gamma, beta in; y, dx, y_inference, saved and gradient stats out;
     * the running statistics (4 each) read and written */
    cr_assert_eq(op_bytes(variant_named(&op_bn, "linear_3x4x3x5")),
                 (2 * 180 + 2 * 4 + 3 * 180 + 4 * 4 + 2 * 2 * 4) * sizeof(float));
}

/* Every case has bench shapes (bench_ops --bench-sizes), each moving more bytes than any of its
 * test shapes. */
Test(ops, bench_shapes_are_bigger) {
    for (int ci = 0; ci < op_ncases; ci++) {
        const op_case *c = op_cases[ci];
        cr_expect_gt(c->nbench, 0, "%s has no bench_variants", c->name);
        size_t test_max = 0;
        for (int k = 0; k < c->nvariants; k++)
            if (op_bytes(&c->variants[k]) > test_max)
                test_max = op_bytes(&c->variants[k]);
        for (int k = 0; k < c->nbench; k++)
            cr_expect_gt(op_bytes(&c->bench_variants[k]), test_max, "%s/%s", c->name,
                         c->bench_variants[k].name);
    }
}

/* Every ck_cuda_* declared in ck_kernels.h must be reached by some case's GPU runner. */
Test(ops, launcher_coverage) {
    char *text = t_read_file(t_src("src/kernels/ck_kernels.h"), NULL);
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
            for (int ci = 0; ci < op_ncases && !found; ci++) {
                const char *l = op_cases[ci]->launchers, *q = l;
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
