/* Running a planned cuDNN convolution: its workspace layout, forward and backward (ck_gconv_*
 * of gpu_layers.h; the plan is made in cudnn_conv_plan.c). */
#include "internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "cudnn_internal.h"

/* The legacy convolution and pooling API is marked deprecated in cuDNN 9 (the graph API replaces
 * it); it is used on purpose, in the cuDNN files only (cudnn_internal.h lists them). */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

/* Workspace layout (each part 256-byte aligned): cuDNN filter, filter gradient, padded x, padded
 * dx (explicit padding only), cuDNN algorithm workspace, bias column-sum partials, for the
 * NCHW fallback x, y (or dy) and dx in NCHW, and for a wide plan the fp32 copies of x, y (or dy)
 * and dx. Activations and cuDNN's filters are stored as the plan's dt (bf16: 2 bytes an
 * element). */
typedef struct gconv_ws {
    void *k, *dk, *xp, *dxp, *xt, *yt, *dxt;
    void *algo, *colsum;
    float *xw, *yw, *dxw;
} gconv_ws;

static size_t al256(size_t b) {
    return (b + 255u) & ~(size_t)255u;
}

static size_t gconv_ws_layout(const ck_gconv *c, void *base, gconv_ws *w) {
    const ck_conv_geom *g = &c->g;
    const int dt = c->dt;
    const size_t xpad = ck_kdt_bytes(dt, (size_t)g->n * c->hp * c->wp * g->cin);
    const size_t kb = ck_kdt_bytes(dt, (size_t)g->kh * g->kw * g->cin * g->cout);
    const size_t xw = sizeof(float) * g->n * g->h * g->w * g->cin;
    const size_t sizes[12] = {kb,
                              kb,
                              c->explicit_pad ? xpad : 0,
                              c->explicit_pad ? xpad : 0,
                              c->nchw ? xpad : 0,
                              c->nchw ? ck_kdt_bytes(dt, (size_t)g->n * g->oh * g->ow * g->cout)
                                      : 0,
                              c->nchw ? xpad : 0,
                              c->algo_bytes,
                              ck_cuda_colsum_workspace_bytes(g->cout),
                              c->wide ? xw : 0,
                              c->wide ? sizeof(float) * g->n * g->oh * g->ow * g->cout : 0,
                              c->wide ? xw : 0};
    size_t off[12], total = 0;
    for (int i = 0; i < 12; ++i) {
        off[i] = total;
        total += al256(sizes[i]);
    }
    if (w) {
        char *p = (char *)base;
        w->k = p + off[0];
        w->dk = p + off[1];
        w->xp = c->explicit_pad ? p + off[2] : NULL;
        w->dxp = c->explicit_pad ? p + off[3] : NULL;
        w->xt = c->nchw ? p + off[4] : NULL;
        w->yt = c->nchw ? p + off[5] : NULL;
        w->dxt = c->nchw ? p + off[6] : NULL;
        w->algo = p + off[7];
        w->colsum = p + off[8];
        w->xw = c->wide ? (float *)(p + off[9]) : NULL;
        w->yw = c->wide ? (float *)(p + off[10]) : NULL;
        w->dxw = c->wide ? (float *)(p + off[11]) : NULL;
    }
    return total;
}

size_t ck_gconv_workspace_bytes(const ck_gconv *c) {
    return gconv_ws_layout(c, NULL, NULL);
}

ck_status ck_gconv_use_batch(ck_context *ctx, ck_gconv *c, int n) {
    if (n < 1 || n > c->g.n)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "n: batch %d outside [1, %d] planned for conv", n,
                       c->g.n);
    return ck_gconv_set_n(ctx, c, n);
}

/* x as cuDNN reads it: zero-padded (explicit padding) and/or transposed to NCHW (fallback). */
static ck_status gconv_input(ck_context *ctx, const ck_gconv *c, int n, const void *x,
                             const gconv_ws *w, const void **xin) {
    const ck_conv_geom *g = &c->g;
    void *s = ctx->stream;
    *xin = x;
    if (c->explicit_pad) {
        CUDA_TRY(ctx,
                 ck_cuda_pad_nhwc(x, w->xp, n, g->h, g->w, g->cin, g->pad_top, g->pad_left, c->hp,
                                  c->wp, 0, c->dt, s),
                 "conv: pad");
        *xin = w->xp;
    }
    if (c->nchw) {
        const ck_kshape sh = {n, g->cin, c->hp, c->wp, 1, c->dt};
        CUDA_TRY(ctx, ck_cuda_convert_layout(*xin, w->xt, sh, s), "conv: x to NCHW");
        *xin = w->xt;
    }
    return CK_STATUS_SUCCESS;
}

/* The filter as cuDNN reads it: transposed to its layout, bf16 (a bf16 plan) or fp32 rounded to
 * bf16 values (a wide plan: the same products). */
static ck_status gconv_filter(ck_context *ctx, const ck_gconv *c, const float *k,
                              const gconv_ws *w) {
    const ck_conv_geom *g = &c->g;
    const size_t nk = (size_t)g->kh * g->kw * g->cin * g->cout;
    CUDA_TRY(ctx,
             ck_cuda_conv_kernel_layout(k, w->k, g->kh * g->kw, g->cin, g->cout, 1, c->nchw, c->dt,
                                        ctx->stream),
             "conv: kernel layout");
    if (c->wide)
        CUDA_TRY(ctx, ck_cuda_bf16_round((float *)w->k, nk, ctx->stream), "conv: kernel to bf16");
    return CK_STATUS_SUCCESS;
}

/* *out: p, or for a wide plan its count bf16 words widened into wbuf (fp32). */
static ck_status gconv_widen(ck_context *ctx, const ck_gconv *c, const void *p, float *wbuf,
                             size_t count, const void **out) {
    *out = p;
    if (c->wide) {
        CUDA_TRY(ctx, ck_cuda_bf16_unpack((const uint16_t *)p, wbuf, count, ctx->stream),
                 "conv: bf16 to fp32");
        *out = wbuf;
    }
    return CK_STATUS_SUCCESS;
}

/* bf16: cuDNN writes y rounded to bf16, then the bias kernel rounds y + bias again (the CPU
 * twin's two roundings, layer_conv2d.c). */
ck_status ck_gconv_forward(ck_context *ctx, ck_gconv *c, int n, const void *x, const float *k,
                           const float *bias, void *y, void *ws) {
    CK_TRY(ck_gconv_use_batch(ctx, c, n));
    const ck_conv_geom *g = &c->g;
    gconv_ws w;
    gconv_ws_layout(c, ws, &w);
    void *s = ctx->stream;
    CK_TRY(gconv_filter(ctx, c, k, &w));
    const void *xin = NULL, *xf = NULL;
    CK_TRY(gconv_widen(ctx, c, x, w.xw, (size_t)n * g->h * g->w * g->cin, &xf));
    CK_TRY(gconv_input(ctx, c, n, xf, &w, &xin));
    void *yo = c->wide ? (void *)w.yw : y; /* cuDNN's NHWC result */
    const float one = 1.0f, zero = 0.0f;
    DNN_TRY(ctx, ck_gconv_math(c, (cudnnMathType_t)c->math[CK_FWD]));
    DNN_TRY(ctx, cudnnConvolutionForward((cudnnHandle_t)ctx->cudnn, &one, c->xd, xin, c->wd, w.k,
                                         c->cd, (cudnnConvolutionFwdAlgo_t)c->algo[CK_FWD], w.algo,
                                         c->algo_bytes, &zero, c->yd, c->nchw ? w.yt : yo));
    if (c->nchw) {
        const ck_kshape sh = {n, g->cout, g->oh, g->ow, 0, c->dt};
        CUDA_TRY(ctx, ck_cuda_convert_layout(w.yt, yo, sh, s), "conv: y to NHWC");
    }
    if (c->wide) /* rounded to the bf16 words of y, as a bf16 plan's cuDNN stores them */
        CUDA_TRY(ctx,
                 ck_cuda_bf16_pack(w.yw, (uint16_t *)y, (size_t)n * g->oh * g->ow * g->cout, s),
                 "conv: y to bf16");
    if (bias)
        CUDA_TRY(
            ctx,
            ck_cuda_bias_add(y, bias, (long long)n * g->oh * g->ow, g->cout, ck_gconv_dt(c), s),
            "conv: bias add");
    return CK_STATUS_SUCCESS;
}

/* bf16: dx from the bf16 filter, written in bf16; the filter gradient written by cuDNN in bf16
 * and widened to the fp32 dk (exact); the bias gradient summed in double from the bf16 dy. */
ck_status ck_gconv_backward(ck_context *ctx, ck_gconv *c, int n, const void *x, const float *k,
                            const void *dy, void *dx, float *dk, float *dbias, void *ws) {
    CK_TRY(ck_gconv_use_batch(ctx, c, n));
    const ck_conv_geom *g = &c->g;
    gconv_ws w;
    gconv_ws_layout(c, ws, &w);
    void *s = ctx->stream;
    cudnnHandle_t h = (cudnnHandle_t)ctx->cudnn;
    const float one = 1.0f, zero = 0.0f;
    const void *xin = NULL, *xf = NULL, *dyin = NULL;
    CK_TRY(gconv_widen(ctx, c, x, w.xw, (size_t)n * g->h * g->w * g->cin, &xf));
    CK_TRY(gconv_input(ctx, c, n, xf, &w, &xin));
    CK_TRY(gconv_widen(ctx, c, dy, w.yw, (size_t)n * g->oh * g->ow * g->cout, &dyin));
    if (c->nchw) {
        const ck_kshape sh = {n, g->cout, g->oh, g->ow, 1, c->dt};
        CUDA_TRY(ctx, ck_cuda_convert_layout(dyin, w.yt, sh, s), "conv: dy to NCHW");
        dyin = w.yt;
    }
    DNN_TRY(ctx, ck_gconv_math(c, (cudnnMathType_t)c->math[CK_BWD_FILTER]));
    DNN_TRY(ctx,
            cudnnConvolutionBackwardFilter(h, &one, c->xd, xin, c->yd, dyin, c->cd,
                                           (cudnnConvolutionBwdFilterAlgo_t)c->algo[CK_BWD_FILTER],
                                           w.algo, c->algo_bytes, &zero, c->wd, w.dk));
    if (c->wide) /* rounded to bf16 values, as a bf16 plan's cuDNN stores it */
        CUDA_TRY(ctx,
                 ck_cuda_bf16_round((float *)w.dk, (size_t)g->kh * g->kw * g->cin * g->cout, s),
                 "conv: kernel gradient to bf16");
    CUDA_TRY(
        ctx,
        ck_cuda_conv_kernel_layout(w.dk, dk, g->kh * g->kw, g->cin, g->cout, 0, c->nchw, c->dt, s),
        "conv: kernel gradient layout");
    if (dbias)
        CUDA_TRY(ctx,
                 ck_cuda_colsum(dy, (long long)n * g->oh * g->ow, g->cout, ck_gconv_dt(c), dbias,
                                w.colsum, s),
                 "conv: bias gradient");
    if (dx) {
        CK_TRY(gconv_filter(ctx, c, k, &w));
        /* cuDNN's dx: padded extent (explicit padding), NCHW (fallback), fp32 (wide); then back
         * to dx */
        void *dxo = c->wide ? (void *)w.dxw : dx;
        void *dxpad = c->explicit_pad ? w.dxp : dxo;
        DNN_TRY(ctx, ck_gconv_math(c, (cudnnMathType_t)c->math[CK_BWD_DATA]));
        DNN_TRY(ctx, cudnnConvolutionBackwardData(
                         h, &one, c->wd, w.k, c->yd, dyin, c->cd,
                         (cudnnConvolutionBwdDataAlgo_t)c->algo[CK_BWD_DATA], w.algo, c->algo_bytes,
                         &zero, c->xd, c->nchw ? w.dxt : dxpad));
        if (c->nchw) {
            const ck_kshape sh = {n, g->cin, c->hp, c->wp, 0, c->dt};
            CUDA_TRY(ctx, ck_cuda_convert_layout(w.dxt, dxpad, sh, s), "conv: dx to NHWC");
        }
        if (c->explicit_pad)
            CUDA_TRY(ctx,
                     ck_cuda_pad_nhwc(w.dxp, dxo, n, g->h, g->w, g->cin, g->pad_top, g->pad_left,
                                      c->hp, c->wp, 1, c->dt, s),
                     "conv: crop");
        if (c->wide)
            CUDA_TRY(ctx,
                     ck_cuda_bf16_pack(w.dxw, (uint16_t *)dx, (size_t)n * g->h * g->w * g->cin, s),
                     "conv: dx to bf16");
    }
    return CK_STATUS_SUCCESS;
}
#else
typedef int ck_cudnn_conv_unused; /* ISO C wants at least one declaration per file */
#endif
