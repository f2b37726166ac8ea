/* CPU reference of the Keras layers (see cpu_layers.h for the contracts).
 * Element-wise math comes from ck_math.h, shared with the CUDA kernels. Every output element is
 * written by one thread in a fixed order, reductions run in double in a fixed order, and the
 * GEMMs are cut by shape only (Conv2D: single-threaded GEMMs on cache-sized tiles inside the
 * OpenMP region; Dense: one GEMM from the calling thread): see cpu_layers.h for what that
 * guarantees. */
#include "cpu_layers.h"

#include "ck_math.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many elements a loop runs on the calling thread (thread start-up costs more). */
#define CK_PAR_MIN 16384
/* Channels per block of the double column sums (bias gradients, GAP). */
#define CK_CBLK 64

typedef ptrdiff_t idx;

/* ---- geometry ------------------------------------------------------------------------------ */

static int out_size(int in, int k, int s, int same, int *pad_before) {
    if (same) {
        const int o = (in + s - 1) / s;
        const int total = (o - 1) * s + k - in;
        *pad_before = total > 0 ? total / 2 : 0;
        return o;
    }
    *pad_before = 0;
    if (in < k)
        return 0;
    return (in - k) / s + 1;
}

int ck_conv_geom_make(ck_conv_geom *g, int n, int h, int w, int cin, int cout, int kh, int kw,
                      int sh, int sw, int same_padding) {
    if (!g || n < 1 || h < 1 || w < 1 || cin < 1 || cout < 1 || kh < 1 || kw < 1 || sh < 1 ||
        sw < 1)
        return -1;
    int pt, pl;
    const int oh = out_size(h, kh, sh, same_padding, &pt);
    const int ow = out_size(w, kw, sw, same_padding, &pl);
    if (oh < 1 || ow < 1)
        return -1;
    g->n = n;
    g->h = h;
    g->w = w;
    g->cin = cin;
    g->cout = cout;
    g->kh = kh;
    g->kw = kw;
    g->sh = sh;
    g->sw = sw;
    g->pad_top = pt;
    g->pad_left = pl;
    g->oh = oh;
    g->ow = ow;
    return 0;
}

/* ---- shared helpers ------------------------------------------------------------------------ */

/* out[j] = sum_i a[i * cols + j] in double, i ascending: parallel over blocks of columns. */
static void colsum(idx rows, int cols, const float *a, float *out) {
    const int blocks = (cols + CK_CBLK - 1) / CK_CBLK;
#pragma omp parallel for schedule(static) if (rows * (idx)cols >= CK_PAR_MIN && blocks > 1)
    for (int b = 0; b < blocks; ++b) {
        const int c0 = b * CK_CBLK;
        const int nc = cols - c0 < CK_CBLK ? cols - c0 : CK_CBLK;
        double acc[CK_CBLK];
        for (int j = 0; j < nc; ++j)
            acc[j] = 0.0;
        for (idx i = 0; i < rows; ++i) {
            const float *r = a + i * cols + c0;
            for (int j = 0; j < nc; ++j)
                acc[j] += r[j];
        }
        for (int j = 0; j < nc; ++j)
            out[c0 + j] = (float)acc[j];
    }
}

/* Each of rows rows of y (cols wide) := bias; on the calling thread's team when par. */
static void fill_rows(idx rows, int cols, const float *bias, float *y, int par) {
#pragma omp parallel for schedule(static) if (par && rows * (idx)cols >= CK_PAR_MIN)
    for (idx i = 0; i < rows; ++i)
        memcpy(y + i * cols, bias, (size_t)cols * sizeof *y);
}

void ck_cpu_bias_add(size_t rows, int c, const float *bias, float *y) {
    const idx r = (idx)rows;
#pragma omp parallel for schedule(static) if (r * (idx)c >= CK_PAR_MIN)
    for (idx i = 0; i < r; ++i)
        for (int j = 0; j < c; ++j)
            y[i * c + j] += bias[j];
}

/* ---- Conv2D -------------------------------------------------------------------------------- */

static int conv_is_pointwise(const ck_conv_geom *g) {
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1;
}

static size_t conv_k(const ck_conv_geom *g) {
    return (size_t)g->kh * (size_t)g->kw * (size_t)g->cin;
}

/* How a convolution is cut (a pure function of the geometry, never of the thread count): the
 * batch is cut into tiles of ts whole samples, dealt out in order to `groups` groups. A group
 * builds each tile's im2col in its own workspace slot, multiplies it and (backward) scatters it
 * back while it is in cache, and sums its kernel gradient in tile order; the group sums are added
 * in group order.
 *  - Samples whose im2col fits CK_CONV_SAMPLE_MAX_FLOATS: cache-sized tiles (about
 *    CK_CONV_TILE_FLOATS) in up to CK_CONV_GROUPS groups, each on one thread of the OpenMP team
 *    with single-threaded GEMMs (OpenBLAS runs one thread inside an OpenMP region).
 *  - Larger samples: tiles (chunks) under CK_CONV_WS_MAX_FLOATS in one group.
 * One group (also a one-sample batch) runs on the calling thread with multi-threaded im2col,
 * GEMMs and scatter, and sums straight into dk (no partial). */
typedef struct conv_plan {
    int ts;        /* samples per tile */
    int tiles;     /* ceil(n / ts) */
    int groups;    /* workspace slots; kernel-gradient partials when > 1 */
    size_t slot;   /* floats of one im2col slot: ts samples */
    size_t dkpart; /* floats of one kernel-gradient partial: K * cout, 0 for one group */
} conv_plan;

static conv_plan conv_plan_of(const ck_conv_geom *g) {
    conv_plan p = {g->n, 1, 1, 0, 0};
    const size_t per = (size_t)g->oh * (size_t)g->ow * conv_k(g);
    if (per <= CK_CONV_SAMPLE_MAX_FLOATS) {
        /* cache-sized, and at least min(n, CK_CONV_GROUPS) tiles so that every group has work.
         * floor(n / groups), not the ceiling: then the workspace never shrinks as n grows (n <
         * 16: n groups of one sample; n >= 16: 16 groups of a tile that only grows), so the
         * workspace planned for max_batch serves every smaller batch. */
        const size_t most = (size_t)g->n / CK_CONV_GROUPS;
        size_t ts = CK_CONV_TILE_FLOATS / per;
        if (ts > most)
            ts = most;
        if (ts < 1)
            ts = 1;
        p.ts = (int)ts;
        p.tiles = (g->n + p.ts - 1) / p.ts;
        p.groups = p.tiles < CK_CONV_GROUPS ? p.tiles : CK_CONV_GROUPS;
    } else {
        size_t c = CK_CONV_WS_MAX_FLOATS / per;
        c = c < 1 ? 1 : c > (size_t)g->n ? (size_t)g->n : c;
        p.ts = (int)c;
        p.tiles = (g->n + p.ts - 1) / p.ts;
    }
    p.slot = (size_t)p.ts * per;
    p.dkpart = p.groups > 1 ? conv_k(g) * (size_t)g->cout : 0;
    return p;
}

/* Samples of the tile that starts at sample n0. */
static int tile_samples(const ck_conv_geom *g, const conv_plan *p, int n0) {
    return g->n - n0 < p->ts ? g->n - n0 : p->ts;
}

size_t ck_cpu_conv2d_workspace_floats(const ck_conv_geom *g) {
    if (conv_is_pointwise(g))
        return 0;
    const conv_plan p = conv_plan_of(g);
    return (size_t)p.groups * (p.slot + p.dkpart);
}

/* Threads for the groups of a tiled convolution: the default team, at most one per group. */
static int conv_threads(const conv_plan *p) {
#ifdef _OPENMP
    const int t = omp_get_max_threads();
    return t < p->groups ? t : p->groups;
#else
    (void)p;
    return 1;
#endif
}

/* Tiles [*t0, *t1) of group gi: the tiles dealt out in order, as evenly as possible. */
static void conv_group_tiles(const conv_plan *p, int gi, int *t0, int *t1) {
    *t0 = (int)((long long)p->tiles * gi / p->groups);
    *t1 = (int)((long long)p->tiles * (gi + 1) / p->groups);
}

/* col rows (s, i, j) for samples [0, ns) of x (already offset to the first sample); on the
 * calling thread's team when par (else serially). */
static void im2col(const ck_conv_geom *g, int ns, const float *x, float *col, int par) {
    const int H = g->h, W = g->w, C = g->cin, OH = g->oh, OW = g->ow;
    const size_t K = conv_k(g), bc = (size_t)C * sizeof(float);
    const idx lines = (idx)ns * OH;
#pragma omp parallel for schedule(static) if (par && lines * OW * (idx)K >= CK_PAR_MIN)
    for (idx t = 0; t < lines; ++t) {
        const idx s = t / OH;
        const int i = (int)(t % OH);
        const float *xs = x + s * H * W * C;
        for (int j = 0; j < OW; ++j) {
            float *row = col + (size_t)(t * OW + j) * K;
            for (int a = 0; a < g->kh; ++a) {
                const int ih = i * g->sh - g->pad_top + a;
                float *dst = row + (size_t)a * g->kw * C;
                if (ih < 0 || ih >= H) {
                    memset(dst, 0, bc * (size_t)g->kw);
                    continue;
                }
                const int iw0 = j * g->sw - g->pad_left;
                if (iw0 >= 0 && iw0 + g->kw <= W) { /* the kw cells are one contiguous run */
                    memcpy(dst, xs + ((size_t)ih * W + iw0) * C, bc * (size_t)g->kw);
                    continue;
                }
                for (int b = 0; b < g->kw; ++b) {
                    const int iw = j * g->sw - g->pad_left + b;
                    if (iw < 0 || iw >= W)
                        memset(dst + (size_t)b * C, 0, bc);
                    else
                        memcpy(dst + (size_t)b * C, xs + ((size_t)ih * W + iw) * C, bc);
                }
            }
        }
    }
}

/* dx of samples [0, ns) from dcol, as a gather: every dx row (s, ih) is written by one thread,
 * each element summing its (a, b) contributions in lexicographic order. */
static void col2im(const ck_conv_geom *g, int ns, const float *dcol, float *dx, int par) {
    const int H = g->h, W = g->w, C = g->cin, OH = g->oh, OW = g->ow;
    const size_t K = conv_k(g);
    const idx lines = (idx)ns * H;
#pragma omp parallel for schedule(static) if (par &&                                               \
                                              lines * W * (idx)C * g->kh * g->kw >= CK_PAR_MIN)
    for (idx t = 0; t < lines; ++t) {
        const idx s = t / H;
        const int ih = (int)(t % H);
        float *dxr = dx + (size_t)t * W * C;
        memset(dxr, 0, (size_t)W * C * sizeof *dxr);
        for (int a = 0; a < g->kh; ++a) {
            const int u = ih + g->pad_top - a;
            if (u < 0 || u % g->sh)
                continue;
            const int i = u / g->sh;
            if (i >= OH)
                continue;
            const float *drow = dcol + (size_t)((s * OH + i) * OW) * K + (size_t)a * g->kw * C;
            for (int b = 0; b < g->kw; ++b) {
                for (int j = 0; j < OW; ++j) {
                    const int iw = j * g->sw - g->pad_left + b;
                    if (iw < 0 || iw >= W)
                        continue;
                    const float *src = drow + (size_t)j * K + (size_t)b * C;
                    float *dst = dxr + (size_t)iw * C;
                    for (int c = 0; c < C; ++c)
                        dst[c] += src[c];
                }
            }
        }
    }
}

/* y rows of samples [n0, n0 + ns) from their im2col (or x itself for 1x1 stride-1 kernels). */
static void conv_fwd_rows(const ck_conv_geom *g, const float *col, const float *k,
                          const float *bias, float *y, int ns, int par) {
    const int K = (int)conv_k(g), CO = g->cout, rows = ns * g->oh * g->ow;
    if (bias)
        fill_rows(rows, CO, bias, y, par);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, CO, K, 1.0f, col, K, k, CO,
                bias ? 1.0f : 0.0f, y, CO);
}

void ck_cpu_conv2d_forward(const ck_conv_geom *g, const float *x, const float *k, const float *bias,
                           float *y, float *ws) {
    const size_t xs = (size_t)g->h * g->w * g->cin, ys = (size_t)g->oh * g->ow * g->cout;
    if (conv_is_pointwise(g)) {
        conv_fwd_rows(g, x, k, bias, y, g->n, 1);
        return;
    }
    const conv_plan p = conv_plan_of(g);
    const int par = p.groups == 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(conv_threads(&p)) if (!par)
    for (int gi = 0; gi < p.groups; ++gi) {
        float *col = ws + (size_t)gi * p.slot;
        int t0, t1;
        conv_group_tiles(&p, gi, &t0, &t1);
        for (int t = t0; t < t1; ++t) {
            const int n0 = t * p.ts, ns = tile_samples(g, &p, n0);
            im2col(g, ns, x + (size_t)n0 * xs, col, par);
            conv_fwd_rows(g, col, k, bias, y + (size_t)n0 * ys, ns, par);
        }
    }
}

/* For ns samples: dk (+)= col^T dy and, when dx, dcol = dy k^T scattered into dx. col is the
 * im2col (then dcol may be the same buffer: col is not read again) or, for 1x1 stride-1 kernels,
 * x itself (then dcol is dx and there is nothing to scatter). */
static void conv_bwd_rows(const ck_conv_geom *g, const float *col, float *dcol, const float *k,
                          const float *dy, float *dx, float *dk, int accumulate, int ns, int par) {
    const int K = (int)conv_k(g), CO = g->cout, rows = ns * g->oh * g->ow;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, CO, rows, 1.0f, col, K, dy, CO,
                accumulate ? 1.0f : 0.0f, dk, CO);
    if (dx) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, K, CO, 1.0f, dy, CO, k, CO, 0.0f,
                    dcol, K);
        if (dcol != dx)
            col2im(g, ns, dcol, dx, par);
    }
}

void ck_cpu_conv2d_backward(const ck_conv_geom *g, const float *x, const float *k, const float *dy,
                            float *dx, float *dk, float *dbias, float *ws) {
    const size_t xs = (size_t)g->h * g->w * g->cin, ys = (size_t)g->oh * g->ow * g->cout;
    if (conv_is_pointwise(g)) {
        conv_bwd_rows(g, x, dx, k, dy, dx, dk, 0, g->n, 1);
    } else {
        const conv_plan p = conv_plan_of(g);
        const int par = p.groups == 1;
        float *parts = ws + (size_t)p.groups * p.slot;
#pragma omp parallel for schedule(dynamic, 1) num_threads(conv_threads(&p)) if (!par)
        for (int gi = 0; gi < p.groups; ++gi) {
            float *col = ws + (size_t)gi * p.slot;
            float *part = par ? dk : parts + (size_t)gi * p.dkpart;
            int t0, t1;
            conv_group_tiles(&p, gi, &t0, &t1);
            for (int t = t0; t < t1; ++t) {
                const int n0 = t * p.ts, ns = tile_samples(g, &p, n0);
                im2col(g, ns, x + (size_t)n0 * xs, col, par);
                conv_bwd_rows(g, col, col, k, dy + (size_t)n0 * ys,
                              dx ? dx + (size_t)n0 * xs : NULL, part, t > t0, ns, par);
            }
        }
        if (!par) { /* dk = sum of the group partials, in group order */
            const idx e = (idx)p.dkpart;
#pragma omp parallel for schedule(static) if (e * p.groups >= CK_PAR_MIN)
            for (idx i = 0; i < e; ++i) {
                float s = parts[i];
                for (int gi = 1; gi < p.groups; ++gi)
                    s += parts[(size_t)gi * p.dkpart + i];
                dk[i] = s;
            }
        }
    }
    if (dbias)
        colsum((idx)g->n * g->oh * g->ow, g->cout, dy, dbias);
}

/* ---- pooling ------------------------------------------------------------------------------- */

/* Real (non-padded) window [a0, a1) x [b0, b1) of output (i, j). */
typedef struct win {
    int a0, a1, b0, b1;
} win;

static win window_of(const ck_conv_geom *g, int i, int j) {
    win r;
    ck_pool_range(i, g->sh, g->kh, g->pad_top, g->h, &r.a0, &r.a1);
    ck_pool_range(j, g->sw, g->kw, g->pad_left, g->w, &r.b0, &r.b1);
    return r;
}

void ck_cpu_pool_forward(const ck_conv_geom *g, int is_max, const float *x, float *y) {
    const int H = g->h, W = g->w, C = g->cin, OH = g->oh, OW = g->ow;
    const idx lines = (idx)g->n * OH;
#pragma omp parallel for schedule(static) if (lines * OW * (idx)C * g->kh * g->kw >= CK_PAR_MIN)
    for (idx t = 0; t < lines; ++t) {
        const idx s = t / OH;
        const int i = (int)(t % OH);
        const float *xs = x + s * H * W * C;
        for (int j = 0; j < OW; ++j) {
            float *yo = y + (size_t)(t * OW + j) * C;
            const win r = window_of(g, i, j);
            /* the first real cell initializes, the others combine in row-major order */
            memcpy(yo, xs + ((size_t)r.a0 * W + r.b0) * C, (size_t)C * sizeof *yo);
            for (int a = r.a0; a < r.a1; ++a)
                for (int b = (a == r.a0 ? r.b0 + 1 : r.b0); b < r.b1; ++b) {
                    const float *xc = xs + ((size_t)a * W + b) * C;
                    if (is_max) { /* the literal folds the select out of the loop */
                        for (int c = 0; c < C; ++c)
                            yo[c] = ck_pool_acc(yo[c], xc[c], 1);
                    } else {
                        for (int c = 0; c < C; ++c)
                            yo[c] = ck_pool_acc(yo[c], xc[c], 0);
                    }
                }
            if (!is_max) {
                const float cnt = ck_pool_cells(r.a0, r.a1, r.b0, r.b1);
                for (int c = 0; c < C; ++c)
                    yo[c] /= cnt;
            }
        }
    }
}

void ck_cpu_pool_backward(const ck_conv_geom *g, int is_max, const float *x, const float *dy,
                          float *dx) {
    const int H = g->h, W = g->w, C = g->cin, OH = g->oh, OW = g->ow;
    const size_t xs = (size_t)H * W * C;
    /* one sample per thread: overlapping windows add into dx in (i, j) order */
#pragma omp parallel for schedule(static) if ((idx)g->n * OH * OW * C * g->kh * g->kw >= CK_PAR_MIN)
    for (int s = 0; s < g->n; ++s) {
        const float *xsmp = x + (size_t)s * xs;
        float *dxs = dx + (size_t)s * xs;
        memset(dxs, 0, xs * sizeof *dxs);
        for (int i = 0; i < OH; ++i)
            for (int j = 0; j < OW; ++j) {
                const float *d = dy + (((size_t)s * OH + i) * OW + j) * C;
                const win r = window_of(g, i, j);
                if (is_max) {
                    for (int c = 0; c < C; ++c) {
                        int ba, bb;
                        ck_pool_argmax(xsmp + c, W, C, r.a0, r.a1, r.b0, r.b1, &ba, &bb);
                        dxs[((size_t)ba * W + bb) * C + c] += d[c];
                    }
                } else {
                    const float cnt = ck_pool_cells(r.a0, r.a1, r.b0, r.b1);
                    for (int a = r.a0; a < r.a1; ++a)
                        for (int b = r.b0; b < r.b1; ++b) {
                            float *dc = dxs + ((size_t)a * W + b) * C;
                            for (int c = 0; c < C; ++c)
                                dc[c] += d[c] / cnt;
                        }
                }
            }
    }
}

/* ---- GlobalAveragePooling2D ---------------------------------------------------------------- */

void ck_cpu_gap_forward(int n, int hw, int c, const float *x, float *y) {
#pragma omp parallel for schedule(static) if ((idx)n * hw * c >= CK_PAR_MIN && n > 1)
    for (int s = 0; s < n; ++s) {
        const float *xs = x + (size_t)s * hw * c;
        for (int c0 = 0; c0 < c; c0 += CK_CBLK) {
            const int nc = c - c0 < CK_CBLK ? c - c0 : CK_CBLK;
            double acc[CK_CBLK];
            for (int j = 0; j < nc; ++j)
                acc[j] = 0.0;
            for (int p = 0; p < hw; ++p) {
                const float *r = xs + (size_t)p * c + c0;
                for (int j = 0; j < nc; ++j)
                    acc[j] += r[j];
            }
            for (int j = 0; j < nc; ++j)
                y[(size_t)s * c + c0 + j] = (float)(acc[j] / hw);
        }
    }
}

void ck_cpu_gap_backward(int n, int hw, int c, const float *dy, float *dx) {
    const float den = (float)hw;
    const idx lines = (idx)n * hw;
#pragma omp parallel for schedule(static) if (lines * c >= CK_PAR_MIN)
    for (idx t = 0; t < lines; ++t) {
        const float *d = dy + (size_t)(t / hw) * c;
        float *o = dx + (size_t)t * c;
        for (int j = 0; j < c; ++j)
            o[j] = d[j] / den;
    }
}

/* ---- Dense --------------------------------------------------------------------------------- */

void ck_cpu_dense_forward(int n, int in, int out, const float *x, const float *k, const float *bias,
                          float *y) {
    if (bias)
        fill_rows(n, out, bias, y, 1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, out, in, 1.0f, x, in, k, out,
                bias ? 1.0f : 0.0f, y, out);
}

void ck_cpu_dense_backward(int n, int in, int out, const float *x, const float *k, const float *dy,
                           float *dx, float *dk, float *dbias) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, in, out, n, 1.0f, x, in, dy, out, 0.0f, dk,
                out);
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, in, out, 1.0f, dy, out, k, out,
                    0.0f, dx, in);
    if (dbias)
        colsum(n, out, dy, dbias);
}

/* ---- activations --------------------------------------------------------------------------- */

void ck_cpu_activation_forward(ck_activation act, float alpha, const float *x, float *y,
                               size_t count, int c) {
    if (act == CK_ACT_SOFTMAX) {
        const idx rows = (idx)(count / (size_t)c);
#pragma omp parallel for schedule(static) if ((idx)count >= CK_PAR_MIN)
        for (idx r = 0; r < rows; ++r)
            ck_softmax_row_fwd(x + r * c, y + r * c, c);
        return;
    }
    if (act == CK_ACT_NONE) {
        if (x != y)
            memcpy(y, x, count * sizeof *y);
        return;
    }
    const int a = (int)act;
    if (a == CK_ACT_RELU) { /* the common case in its own loop: the literal folds the switch */
#pragma omp parallel for schedule(static) if ((idx)count >= CK_PAR_MIN)
        for (idx i = 0; i < (idx)count; ++i)
            y[i] = ck_act_fwd_any(x[i], CK_ACT_RELU, alpha);
        return;
    }
#pragma omp parallel for schedule(static) if ((idx)count >= CK_PAR_MIN)
    for (idx i = 0; i < (idx)count; ++i)
        y[i] = ck_act_fwd_any(x[i], a, alpha);
}

void ck_cpu_activation_backward(ck_activation act, float alpha, const float *x, const float *y,
                                const float *dy, float *dx, size_t count, int c) {
    if (act == CK_ACT_SOFTMAX) {
        const idx rows = (idx)(count / (size_t)c);
#pragma omp parallel for schedule(static) if ((idx)count >= CK_PAR_MIN)
        for (idx r = 0; r < rows; ++r)
            ck_softmax_row_bwd(y + r * c, dy + r * c, dx + r * c, c);
        return;
    }
    if (act == CK_ACT_NONE) {
        if (dx != dy)
            memcpy(dx, dy, count * sizeof *dx);
        return;
    }
    const int a = (int)act;
    const int ux = ck_act_bwd_uses_x(a), uy = ck_act_bwd_uses_y(a);
    if (a == CK_ACT_RELU) { /* as in the forward pass; ReLU's derivative reads y */
#pragma omp parallel for schedule(static) if ((idx)count >= CK_PAR_MIN)
        for (idx i = 0; i < (idx)count; ++i)
            dx[i] = ck_act_bwd_any(dy[i], 0.0f, y[i], CK_ACT_RELU, alpha);
        return;
    }
#pragma omp parallel for schedule(static) if ((idx)count >= CK_PAR_MIN)
    for (idx i = 0; i < (idx)count; ++i)
        dx[i] = ck_act_bwd_any(dy[i], ux ? x[i] : 0.0f, uy ? y[i] : 0.0f, a, alpha);
}

/* ---- losses -------------------------------------------------------------------------------- */

void ck_cpu_softmax_xent(int n, int classes, const float *logits, const int32_t *labels,
                         float *dlogits, double *loss_sum, int *correct) {
    double loss = 0.0;
    int ok = 0;
    const double invn = 1.0 / n;
    for (int s = 0; s < n; ++s) {
        int hit;
        loss += ck_xent_row(logits + (size_t)s * classes, classes, labels[s], invn,
                            dlogits ? dlogits + (size_t)s * classes : NULL, &hit);
        ok += hit;
    }
    if (loss_sum)
        *loss_sum = loss;
    if (correct)
        *correct = ok;
}

void ck_cpu_xent_from_probs(int n, int classes, const float *probs, const int32_t *labels,
                            float *dprobs, double *loss_sum, int *correct) {
    const float lo = (float)CK_XENT_EPS, hi = 1.0f - (float)CK_XENT_EPS;
    double loss = 0.0;
    int ok = 0;
    const double invn = 1.0 / n;
    for (int s = 0; s < n; ++s) {
        const float *pr = probs + (size_t)s * classes;
        const int lab = labels[s];
        double sum = 0.0;
        for (int j = 0; j < classes; ++j)
            sum += pr[j] < lo ? lo : (pr[j] > hi ? hi : pr[j]);
        const float pl = pr[lab];
        const double ql = pl < lo ? lo : (pl > hi ? hi : pl);
        loss += log(sum) - log(ql);
        ok += ck_argmax_first(pr, classes) == lab;
        if (dprobs) {
            float *d = dprobs + (size_t)s * classes;
            for (int j = 0; j < classes; ++j) {
                const int pass = pr[j] >= lo && pr[j] <= hi;
                const double gj = 1.0 / sum - (j == lab ? 1.0 / ql : 0.0);
                d[j] = pass ? (float)(gj * invn) : 0.0f;
            }
        }
    }
    if (loss_sum)
        *loss_sum = loss;
    if (correct)
        *correct = ok;
}

/* ---- optimizers ---------------------------------------------------------------------------- */

void ck_cpu_adam_update(float *p, const float *g, float *m, float *v, size_t count, float lr,
                        float beta1, float beta2, float eps, float weight_decay, long step) {
    const float alpha = ck_adam_alpha(lr, beta1, beta2, step);
    const float b1 = beta1, b2 = beta2, c1 = 1.0f - beta1, c2 = 1.0f - beta2;
    const float decay = weight_decay > 0.0f ? lr * weight_decay : 0.0f;
#pragma omp parallel for schedule(static) if ((idx)count >= CK_PAR_MIN)
    for (idx i = 0; i < (idx)count; ++i)
        p[i] = ck_adam_elem(p[i], g[i], &m[i], &v[i], alpha, b1, b2, c1, c2, eps, decay);
}

void ck_cpu_sgd_update(float *p, const float *g, float *vel, size_t count, float lr, float momentum,
                       int nesterov, float weight_decay) {
    const float decay = weight_decay > 0.0f ? lr * weight_decay : 0.0f;
#pragma omp parallel for schedule(static) if ((idx)count >= CK_PAR_MIN)
    for (idx i = 0; i < (idx)count; ++i)
        p[i] = ck_sgd_elem(p[i], g[i], vel ? &vel[i] : NULL, lr, momentum, nesterov, decay);
}

void ck_cpu_rmsprop_update(float *p, const float *g, float *vel, float *aux, size_t count, float lr,
                           float rho, float eps, float momentum, int centered, float weight_decay) {
    const float decay = weight_decay > 0.0f ? lr * weight_decay : 0.0f;
#pragma omp parallel for schedule(static) if ((idx)count >= CK_PAR_MIN)
    for (idx i = 0; i < (idx)count; ++i)
        p[i] = ck_rmsprop_elem(p[i], g[i], &vel[i], aux ? &aux[i] : NULL, lr, rho, 1.0f - rho, eps,
                               momentum, centered, decay);
}

void ck_cpu_adadelta_update(float *p, const float *g, float *ag, float *ad, size_t count, float lr,
                            float rho, float eps, float weight_decay) {
    const float decay = weight_decay > 0.0f ? lr * weight_decay : 0.0f;
#pragma omp parallel for schedule(static) if ((idx)count >= CK_PAR_MIN)
    for (idx i = 0; i < (idx)count; ++i)
        p[i] = ck_adadelta_elem(p[i], g[i], &ag[i], &ad[i], lr, rho, 1.0f - rho, eps, decay);
}

/* ---- initialization ------------------------------------------------------------------------ */

/* U[-limit, limit): word i % 4 of Philox call i / 4 (ck_glorot_uniform's draw) */
static void uniform_init(float *w, size_t count, float limit, uint64_t seed, uint64_t stream) {
    const idx calls = (idx)((count + 3) / 4);
#pragma omp parallel for schedule(static) if ((idx)count >= CK_PAR_MIN)
    for (idx q = 0; q < calls; ++q) {
        const uint64_t uq = (uint64_t)q;
        const ck_u32x4 r =
            ck_philox4x32_10((uint32_t)uq, (uint32_t)(uq >> 32), (uint32_t)stream,
                             (uint32_t)(stream >> 32), (uint32_t)seed, (uint32_t)(seed >> 32));
        for (int k = 0; k < 4; ++k) {
            const size_t i = (size_t)q * 4 + (size_t)k;
            if (i < count)
                w[i] = ck_uniform_sym(r.v[k], limit);
        }
    }
}

/* A standard normal truncated to [-2, 2] for value i: Box-Muller on Philox draws of counter
 * (i, attempt), redrawn while outside (4.6% of draws; 64 attempts never all fail in practice,
 * and then 0). The key differs from the uniforms' in its high word. */
static double truncated_normal(uint64_t i, uint64_t seed, uint64_t stream) {
    for (uint32_t a = 0; a < 64; ++a) {
        const ck_u32x4 r = ck_philox4x32_10((uint32_t)i, (uint32_t)(i >> 32) ^ (a << 24),
                                            (uint32_t)stream, (uint32_t)(stream >> 32),
                                            (uint32_t)seed, (uint32_t)(seed >> 32) ^ 0x6e6f726du);
        /* u1 in (0, 1]: log(u1) finite; 53-bit uniforms from two words each */
        const double u1 =
            ((double)(((uint64_t)r.v[0] << 21) ^ (r.v[1] >> 11)) + 1.0) / 9007199254740992.0;
        const double u2 = (double)(((uint64_t)r.v[2] << 21) ^ (r.v[3] >> 11)) / 9007199254740992.0;
        const double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
        if (z >= -2.0 && z <= 2.0)
            return z;
    }
    return 0.0;
}

void ck_init_random(float *w, size_t count, ck_initializer init, long long fan_in,
                    long long fan_out, uint64_t seed, uint64_t stream) {
    if (init == CK_INIT_GLOROT_UNIFORM || init == CK_INIT_DEFAULT) {
        ck_glorot_uniform(w, count, (int)fan_in, (int)fan_out, seed, stream);
        return;
    }
    const int glorot = init == CK_INIT_GLOROT_NORMAL;
    const double scale = init == CK_INIT_HE_UNIFORM || init == CK_INIT_HE_NORMAL ? 2.0 : 1.0;
    double fan = glorot ? ((double)fan_in + (double)fan_out) / 2.0 : (double)fan_in;
    fan = fan < 1.0 ? 1.0 : fan; /* Keras: max(1, fan) */
    if (init == CK_INIT_HE_UNIFORM || init == CK_INIT_LECUN_UNIFORM) {
        uniform_init(w, count, (float)sqrt(3.0 * scale / fan), seed, stream);
        return;
    }
    const double sd = sqrt(scale / fan) / 0.87962566103423978;
#pragma omp parallel for schedule(static) if ((idx)count >= CK_PAR_MIN)
    for (idx i = 0; i < (idx)count; ++i)
        w[i] = (float)(sd * truncated_normal((uint64_t)i, seed, stream));
}

void ck_glorot_uniform(float *w, size_t count, int fan_in, int fan_out, uint64_t seed,
                       uint64_t stream) {
    uniform_init(w, count, (float)sqrt(6.0 / ((double)fan_in + (double)fan_out)), seed, stream);
}
