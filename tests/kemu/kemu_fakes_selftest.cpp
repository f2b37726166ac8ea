/*
 * Self-test of kemu's cuDNN and cuBLAS fakes, with a stub of kemu's runtime (work runs at once,
 * all memory counts as device memory). Built by the emulated build (CNNKIT_EMU=ON) and run
 * first by make test-emu.
 */
#include <cublas_v2.h>
#include <cudnn.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <vector>

#include "ck_math.h"
#include "kemu.h"

#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

static int g_submits = 0;

namespace kemu {
cudaError_t submit(cudaStream_t, std::function<void()> op) {
    ++g_submits;
    op();
    return cudaSuccess;
}
bool is_device(const void *, size_t) {
    return true;
}
void fault(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kemu: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    abort();
}
bool capturing(cudaStream_t) {
    return false;
}
int current_device() { /* one device here: the checks of kemu_rt are its own self-test's */
    return 0;
}
void check_handle(const char *, int, cudaStream_t) {}
} // namespace kemu

static int g_fail = 0, g_checks = 0;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        ++g_checks;                                                                                \
        if (!(cond)) {                                                                             \
            ++g_fail;                                                                              \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                 \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)
#define OK(call) CHECK((call) == CUDNN_STATUS_SUCCESS, "%s", #call)

static unsigned g_seed = 12345;
static float rnd() {
    g_seed = g_seed * 1664525u + 1013904223u;
    return (float)((g_seed >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}
static std::vector<float> rvec(size_t n) {
    std::vector<float> v(n);
    for (float &f : v)
        f = rnd();
    return v;
}
static double dot(const std::vector<float> &a, const std::vector<float> &b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i)
        s += (double)a[i] * b[i];
    return s;
}
/* NCHW (or KCRS) data to NHWC (KRSC). */
static std::vector<float> to_nhwc(const std::vector<float> &v, int N, int C, int H, int W) {
    std::vector<float> o(v.size());
    for (int n = 0; n < N; ++n)
        for (int c = 0; c < C; ++c)
            for (int h = 0; h < H; ++h)
                for (int w = 0; w < W; ++w)
                    o[(((size_t)n * H + h) * W + w) * C + c] =
                        v[(((size_t)n * C + c) * H + h) * W + w];
    return o;
}

struct ConvCase {
    int n, c, h, w, k, r, s, ph, pw, u, v, dh, dw;
    cudnnConvolutionMode_t mode;
};

struct Descs {
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t cd;
    int oh, ow;
};

static Descs make(const ConvCase &t, cudnnTensorFormat_t f, cudnnDataType_t dt, cudnnMathType_t m) {
    Descs d;
    OK(cudnnCreateTensorDescriptor(&d.x));
    OK(cudnnCreateTensorDescriptor(&d.y));
    OK(cudnnCreateFilterDescriptor(&d.w));
    OK(cudnnCreateConvolutionDescriptor(&d.cd));
    OK(cudnnSetTensor4dDescriptor(d.x, f, dt, t.n, t.c, t.h, t.w));
    OK(cudnnSetFilter4dDescriptor(d.w, dt, f, t.k, t.c, t.r, t.s));
    OK(cudnnSetConvolution2dDescriptor(d.cd, t.ph, t.pw, t.u, t.v, t.dh, t.dw, t.mode,
                                       CUDNN_DATA_FLOAT));
    OK(cudnnSetConvolutionMathType(d.cd, m));
    int on, oc;
    OK(cudnnGetConvolution2dForwardOutputDim(d.cd, d.x, d.w, &on, &oc, &d.oh, &d.ow));
    CHECK(on == t.n && oc == t.k, "out dims");
    OK(cudnnSetTensor4dDescriptor(d.y, f, dt, t.n, t.k, d.oh, d.ow));
    return d;
}
static void destroy(Descs &d) {
    cudnnDestroyTensorDescriptor(d.x);
    cudnnDestroyTensorDescriptor(d.y);
    cudnnDestroyFilterDescriptor(d.w);
    cudnnDestroyConvolutionDescriptor(d.cd);
}

/* Runs the three directions with algorithm 1 (its workspace) on fp32 data in layout f. */
static void run3(cudnnHandle_t h, const Descs &d, const std::vector<float> &x,
                 const std::vector<float> &w, const std::vector<float> &dy, std::vector<float> &y,
                 std::vector<float> &dx, std::vector<float> &dw) {
    size_t b0 = 0, b1 = 0, b2 = 0;
    OK(cudnnGetConvolutionForwardWorkspaceSize(
        h, d.x, d.w, d.cd, d.y, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, &b0));
    OK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w, d.y, d.cd, d.x,
                                                    CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, &b1));
    OK(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x, d.y, d.cd, d.w,
                                                      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, &b2));
    CHECK(b0 > 0 && b1 > 0 && b2 > 0, "algo 1 has a workspace: %zu %zu %zu", b0, b1, b2);
    std::vector<char> ws(std::max(b0, std::max(b1, b2)));
    const float one = 1.0f, zero = 0.0f;
    y.assign(dy.size(), NAN); /* beta 0: never read */
    dx.assign(x.size(), NAN);
    dw.assign(w.size(), NAN);
    OK(cudnnConvolutionForward(h, &one, d.x, x.data(), d.w, w.data(), d.cd,
                               CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, ws.data(), b0,
                               &zero, d.y, y.data()));
    OK(cudnnConvolutionBackwardData(h, &one, d.w, w.data(), d.y, dy.data(), d.cd,
                                    CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, ws.data(), b1, &zero, d.x,
                                    dx.data()));
    OK(cudnnConvolutionBackwardFilter(h, &one, d.x, x.data(), d.y, dy.data(), d.cd,
                                      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, ws.data(), b2, &zero,
                                      d.w, dw.data()));
}

/* A direct reference of the forward (cross-correlation, or convolution with the flipped filter),
 * NCHW / KCRS. */
static std::vector<float> ref_fwd(const ConvCase &t, int oh, int ow, const std::vector<float> &x,
                                  const std::vector<float> &w) {
    std::vector<float> y((size_t)t.n * t.k * oh * ow);
    for (int n = 0; n < t.n; ++n)
        for (int k = 0; k < t.k; ++k)
            for (int i = 0; i < oh; ++i)
                for (int j = 0; j < ow; ++j) {
                    double s = 0;
                    for (int c = 0; c < t.c; ++c)
                        for (int r = 0; r < t.r; ++r)
                            for (int q = 0; q < t.s; ++q) {
                                const int hh = i * t.u - t.ph + r * t.dh,
                                          ww = j * t.v - t.pw + q * t.dw;
                                if (hh < 0 || hh >= t.h || ww < 0 || ww >= t.w)
                                    continue;
                                const int rr = t.mode == CUDNN_CONVOLUTION ? t.r - 1 - r : r;
                                const int qq = t.mode == CUDNN_CONVOLUTION ? t.s - 1 - q : q;
                                s += (double)x[(((size_t)n * t.c + c) * t.h + hh) * t.w + ww] *
                                     w[(((size_t)k * t.c + c) * t.r + rr) * t.s + qq];
                            }
                    y[(((size_t)n * t.k + k) * oh + i) * ow + j] = (float)s;
                }
    return y;
}

static void test_conv(cudnnHandle_t h) {
    const ConvCase cases[] = {
        {2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION},
        {2, 4, 9, 9, 5, 3, 3, 1, 1, 2, 2, 1, 1, CUDNN_CROSS_CORRELATION},
        {1, 2, 8, 7, 3, 2, 3, 0, 2, 2, 1, 1, 1, CUDNN_CROSS_CORRELATION},
        {2, 3, 9, 10, 2, 3, 2, 2, 1, 1, 3, 2, 2, CUDNN_CROSS_CORRELATION},
        {3, 2, 6, 6, 3, 3, 3, 1, 1, 1, 1, 1, 1, CUDNN_CONVOLUTION},
        {2, 5, 5, 5, 3, 1, 1, 0, 0, 2, 2, 1, 1, CUDNN_CONVOLUTION},
        {1, 3, 4, 4, 2, 2, 2, 0, 0, 3, 3, 1, 1, CUDNN_CROSS_CORRELATION}, /* kernel < stride */
    };
    for (const ConvCase &t : cases) {
        Descs a = make(t, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH);
        Descs b = make(t, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH);
        const std::vector<float> x = rvec((size_t)t.n * t.c * t.h * t.w),
                                 w = rvec((size_t)t.k * t.c * t.r * t.s),
                                 dy = rvec((size_t)t.n * t.k * a.oh * a.ow);
        std::vector<float> y, dx, dw, y2, dx2, dw2;
        run3(h, a, x, w, dy, y, dx, dw);
        /* the forward against a direct reference */
        const std::vector<float> yr = ref_fwd(t, a.oh, a.ow, x, w);
        double err = 0;
        for (size_t i = 0; i < y.size(); ++i)
            err = std::max(err, (double)fabsf(y[i] - yr[i]));
        CHECK(err < 1e-5, "forward vs reference: %g", err);
        /* adjoint identities: <dy, conv(x, w)> = <bwd_data(dy, w), x> = <bwd_filter(x, dy), w> */
        const double p0 = dot(dy, y), p1 = dot(dx, x), p2 = dot(dw, w);
        const double sc = 1e-5 * (1 + fabs(p0));
        CHECK(fabs(p0 - p1) < sc && fabs(p0 - p2) < sc, "adjoint %.9g %.9g %.9g", p0, p1, p2);
        /* NHWC / KRSC: the same values (bit for bit: the same sums in the same order) */
        run3(h, b, to_nhwc(x, t.n, t.c, t.h, t.w), to_nhwc(w, t.k, t.c, t.r, t.s),
             to_nhwc(dy, t.n, t.k, a.oh, a.ow), y2, dx2, dw2);
        CHECK(y2 == to_nhwc(y, t.n, t.k, a.oh, a.ow), "NHWC forward differs");
        CHECK(dx2 == to_nhwc(dx, t.n, t.c, t.h, t.w), "NHWC backward data differs");
        CHECK(dw2 == to_nhwc(dw, t.k, t.c, t.r, t.s), "NHWC backward filter differs");
        /* finite difference of a scalar loss L = <dy, y> in one filter and one input element
         * (linear: the central difference is exact up to rounding) */
        {
            const size_t wi = w.size() / 2, xi = x.size() / 3;
            const float eps = 1e-2f;
            std::vector<float> wp = w, wm = w, xp = x, xm = x;
            wp[wi] += eps, wm[wi] -= eps, xp[xi] += eps, xm[xi] -= eps;
            const double gw =
                (dot(dy, ref_fwd(t, a.oh, a.ow, x, wp)) - dot(dy, ref_fwd(t, a.oh, a.ow, x, wm))) /
                (2 * eps);
            const double gx =
                (dot(dy, ref_fwd(t, a.oh, a.ow, xp, w)) - dot(dy, ref_fwd(t, a.oh, a.ow, xm, w))) /
                (2 * eps);
            CHECK(fabs(gw - dw[wi]) < 1e-3 && fabs(gx - dx[xi]) < 1e-3,
                  "finite differences: dw %g vs %g, dx %g vs %g", gw, dw[wi], gx, dx[xi]);
        }
        /* alpha / beta: y = 2 conv + 0.5 y */
        {
            std::vector<float> yy(y.size(), 3.0f);
            const float two = 2.0f, half = 0.5f;
            OK(cudnnConvolutionForward(h, &two, a.x, x.data(), a.w, w.data(), a.cd,
                                       CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0, &half,
                                       a.y, yy.data()));
            double e = 0;
            for (size_t i = 0; i < y.size(); ++i)
                e = std::max(e, (double)fabsf(yy[i] - (2.0f * y[i] + 1.5f)));
            CHECK(e < 1e-5, "alpha/beta: %g", e);
        }
        destroy(a);
        destroy(b);
    }
    /* a golden value: 1x1x3x3 input 1..9, 2x2 filter [1 2; 3 4], no padding */
    {
        const ConvCase t = {1, 1, 3, 3, 1, 2, 2, 0, 0, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION};
        for (int mode = 0; mode < 2; ++mode) {
            ConvCase tt = t;
            tt.mode = mode ? CUDNN_CONVOLUTION : CUDNN_CROSS_CORRELATION;
            Descs d = make(tt, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH);
            const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w[4] = {1, 2, 3, 4}, one = 1, zero = 0;
            float y[4];
            OK(cudnnConvolutionForward(h, &one, d.x, x, d.w, w, d.cd,
                                       CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0, &zero,
                                       d.y, y));
            /* cross-correlation: 1+4+12+20 = 37 ...; convolution flips: 4+6+6+5 = 23 ... */
            const float want[2][4] = {{37, 47, 67, 77}, {23, 33, 53, 63}};
            CHECK(y[0] == want[mode][0] && y[1] == want[mode][1] && y[2] == want[mode][2] &&
                      y[3] == want[mode][3],
                  "golden mode %d: %g %g %g %g", mode, y[0], y[1], y[2], y[3]);
            destroy(d);
        }
    }
}

static void test_bf16_and_algos(cudnnHandle_t h) {
    /* bf16, tensor-op math, C and K multiples of 8: supported; each value is the fp32 result of
     * the widened words, rounded to nearest even */
    const ConvCase t = {2, 8, 5, 5, 16, 3, 3, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION};
    Descs d = make(t, CUDNN_TENSOR_NHWC, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_OP_MATH);
    Descs f = make(t, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH);
    const std::vector<float> x = rvec((size_t)t.n * t.c * t.h * t.w),
                             w = rvec((size_t)t.k * t.c * 9);
    std::vector<uint16_t> xb(x.size()), wb(w.size()), yb((size_t)t.n * t.k * d.oh * d.ow);
    std::vector<float> xr(x.size()), wr(w.size()), yf(yb.size());
    for (size_t i = 0; i < x.size(); ++i)
        xb[i] = ck_bf16_bits(x[i]), xr[i] = ck_bf16_to_float(xb[i]);
    for (size_t i = 0; i < w.size(); ++i)
        wb[i] = ck_bf16_bits(w[i]), wr[i] = ck_bf16_to_float(wb[i]);
    const float one = 1, zero = 0;
    size_t need = 0;
    OK(cudnnGetConvolutionForwardWorkspaceSize(
        h, d.x, d.w, d.cd, d.y, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, &need));
    std::vector<char> ws(need);
    OK(cudnnConvolutionForward(h, &one, d.x, xb.data(), d.w, wb.data(), d.cd,
                               CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, ws.data(), need,
                               &zero, d.y, yb.data()));
    OK(cudnnConvolutionForward(h, &one, f.x, xr.data(), f.w, wr.data(), f.cd,
                               CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0, &zero, f.y,
                               yf.data()));
    int bad = 0;
    for (size_t i = 0; i < yb.size(); ++i)
        bad += yb[i] != ck_bf16_bits(yf[i]);
    CHECK(bad == 0, "bf16 forward: %d words differ from the rounded fp32 result", bad);
    /* refusals */
    CHECK(cudnnConvolutionForward(h, &one, d.x, xb.data(), d.w, wb.data(), d.cd,
                                  CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, ws.data(),
                                  need - 1, &zero, d.y,
                                  yb.data()) == CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT,
          "a workspace short of the reported size");
    CHECK(cudnnConvolutionForward(h, &one, d.x, xb.data(), d.w, wb.data(), d.cd,
                                  CUDNN_CONVOLUTION_FWD_ALGO_FFT, ws.data(), need, &zero, d.y,
                                  yb.data()) == CUDNN_STATUS_NOT_SUPPORTED,
          "bf16 FFT");
    CHECK(cudnnConvolutionForward(h, &one, f.x, xr.data(), d.w, wb.data(), f.cd,
                                  CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0, &zero, f.y,
                                  yf.data()) == CUDNN_STATUS_BAD_PARAM,
          "mixed data types");
    size_t sz = 0;
    CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, f.x, f.w, f.cd, f.y,
                                                  CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
                                                  &sz) == CUDNN_STATUS_NOT_SUPPORTED,
          "Winograd in NHWC");
    CHECK(cudnnGetConvolutionForwardWorkspaceSize(
              h, f.x, f.w, f.cd, f.y, (cudnnConvolutionFwdAlgo_t)8, &sz) == CUDNN_STATUS_BAD_PARAM,
          "algorithm out of range");
    {
        cudnnTensorDescriptor_t y2;
        OK(cudnnCreateTensorDescriptor(&y2));
        OK(cudnnSetTensor4dDescriptor(y2, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, t.n, t.k, d.oh + 1,
                                      d.ow));
        CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, f.x, f.w, f.cd, y2,
                                                      CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                                                      &sz) == CUDNN_STATUS_NOT_SUPPORTED,
              "wrong output height");
        OK(cudnnSetTensor4dDescriptor(y2, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, t.n, t.k + 1, d.oh,
                                      d.ow));
        CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, f.x, f.w, f.cd, y2,
                                                      CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                                                      &sz) == CUDNN_STATUS_BAD_PARAM,
              "output channels differ from K");
        cudnnDestroyTensorDescriptor(y2);
    }
    /* heuristics: every algorithm listed, supported ones first */
    cudnnConvolutionFwdAlgoPerf_t p[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int got = 0;
    OK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.cd, d.y,
                                              CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, p));
    CHECK(got == CUDNN_CONVOLUTION_FWD_ALGO_COUNT, "got %d", got);
    CHECK(p[0].status == CUDNN_STATUS_SUCCESS && p[0].mathType == CUDNN_TENSOR_OP_MATH &&
              p[2].status == CUDNN_STATUS_NOT_SUPPORTED,
          "bf16 heuristics: %d %d %d", (int)p[0].status, (int)p[0].mathType, (int)p[2].status);
    /* bf16 under FMA math, or with C = 3: nothing supported (listed nevertheless) */
    OK(cudnnSetConvolutionMathType(d.cd, CUDNN_FMA_MATH));
    OK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.cd, d.y, 3, &got, p));
    CHECK(got == 3 && p[0].status != CUDNN_STATUS_SUCCESS, "bf16 FMA: %d %d", got,
          (int)p[0].status);
    const ConvCase t3 = {2, 3, 5, 5, 16, 3, 3, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION};
    Descs d3 = make(t3, CUDNN_TENSOR_NHWC, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_OP_MATH);
    cudnnConvolutionBwdFilterAlgoPerf_t pf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    OK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        h, d3.x, d3.y, d3.cd, d3.w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, pf));
    int sup = 0;
    for (int i = 0; i < got; ++i)
        sup += pf[i].status == CUDNN_STATUS_SUCCESS;
    CHECK(got == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT && sup == 0, "bf16 C=3: %d of %d", sup,
          got);
    /* fp32 NCHW FMA: Find runs the convolution into y, times sorted, failures last */
    Descs n = make(t, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH);
    cudnnConvolutionBwdDataAlgoPerf_t pd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    std::vector<float> dy = rvec((size_t)t.n * t.k * n.oh * n.ow), dx(x.size(), NAN), dx2(x.size());
    std::vector<char> big(1 << 20);
    OK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, n.w, w.data(), n.y, dy.data(), n.cd, n.x,
                                                   dx.data(), CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                   &got, pd, big.data(), big.size()));
    bool sorted = true, seen_bad = false;
    int nok = 0;
    for (int i = 0; i < got; ++i) {
        if (pd[i].status == CUDNN_STATUS_SUCCESS) {
            ++nok;
            sorted &= !seen_bad && pd[i].time > 0 && (i == 0 || pd[i].time >= pd[i - 1].time) &&
                      pd[i].mathType == CUDNN_FMA_MATH;
        } else
            seen_bad = true;
    }
    CHECK(got == CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT && nok >= 4 && sorted,
          "find: %d results, %d ok, sorted %d", got, nok, (int)sorted);
    bool nondet = false;
    for (int i = 0; i < got; ++i)
        nondet |= pd[i].algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 &&
                  pd[i].determinism == CUDNN_NON_DETERMINISTIC;
    CHECK(nondet, "bwd data ALGO_0 is reported non-deterministic");
    OK(cudnnConvolutionBackwardData(h, &one, n.w, w.data(), n.y, dy.data(), n.cd,
                                    CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, nullptr, 0, &zero, n.x,
                                    dx2.data()));
    CHECK(dx == dx2, "FindEx wrote dx");
    /* TF32: the same convolution under tensor-op math rounds the inputs (differs, within 1e-2) */
    {
        std::vector<float> ya(yf.size()), yt(yf.size());
        OK(cudnnConvolutionForward(h, &one, n.x, x.data(), n.w, w.data(), n.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0, &zero, n.y,
                                   ya.data()));
        OK(cudnnSetConvolutionMathType(n.cd, CUDNN_TENSOR_OP_MATH));
        OK(cudnnConvolutionForward(h, &one, n.x, x.data(), n.w, w.data(), n.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0, &zero, n.y,
                                   yt.data()));
        double e = 0;
        for (size_t i = 0; i < ya.size(); ++i)
            e = std::max(e, (double)fabsf(ya[i] - yt[i]));
        CHECK(e > 0 && e < 1e-2, "tf32 difference %g", e);
    }
    destroy(d), destroy(f), destroy(d3), destroy(n);
}

static void test_pool(cudnnHandle_t h) {
    /* 2x5x5x3 NHWC, 3x3 window, stride 2, pad 1 (output 3x3) */
    const int N = 2, C = 3, H = 5, W = 5, OH = 3, OW = 3;
    cudnnTensorDescriptor_t xd, yd;
    cudnnPoolingDescriptor_t pd;
    OK(cudnnCreateTensorDescriptor(&xd));
    OK(cudnnCreateTensorDescriptor(&yd));
    OK(cudnnCreatePoolingDescriptor(&pd));
    OK(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, N, C, H, W));
    OK(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, N, C, OH, OW));
    const std::vector<float> x = rvec((size_t)N * C * H * W), dy = rvec((size_t)N * C * OH * OW);
    const float one = 1, zero = 0;
    for (int mode = 0; mode < 2; ++mode) {
        OK(cudnnSetPooling2dDescriptor(pd,
                                       mode ? CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING
                                            : CUDNN_POOLING_MAX_DETERMINISTIC,
                                       CUDNN_NOT_PROPAGATE_NAN, 3, 3, 1, 1, 2, 2));
        std::vector<float> y(dy.size(), NAN), dx(x.size(), NAN);
        OK(cudnnPoolingForward(h, pd, &one, xd, x.data(), &zero, yd, y.data()));
        OK(cudnnPoolingBackward(h, pd, &one, yd, y.data(), yd, dy.data(), xd, x.data(), &zero, xd,
                                dx.data()));
        std::vector<double> want(x.size(), 0.0);
        int bad = 0;
        for (int n = 0; n < N; ++n)
            for (int c = 0; c < C; ++c)
                for (int i = 0; i < OH; ++i)
                    for (int j = 0; j < OW; ++j) {
                        double s = 0, best = -1e30;
                        int cnt = 0, arg = -1;
                        for (int r = 0; r < 3; ++r)
                            for (int q = 0; q < 3; ++q) {
                                const int hh = 2 * i - 1 + r, ww = 2 * j - 1 + q;
                                if (hh < 0 || hh >= H || ww < 0 || ww >= W)
                                    continue;
                                const int o = ((n * H + hh) * W + ww) * C + c;
                                s += x[o], ++cnt;
                                if (x[o] > best)
                                    best = x[o], arg = o;
                            }
                        const int oy = ((n * OH + i) * OW + j) * C + c;
                        const double v = mode ? s / cnt : best;
                        bad += fabs(y[oy] - v) > 1e-6;
                        if (mode) {
                            for (int r = 0; r < 3; ++r)
                                for (int q = 0; q < 3; ++q) {
                                    const int hh = 2 * i - 1 + r, ww = 2 * j - 1 + q;
                                    if (hh >= 0 && hh < H && ww >= 0 && ww < W)
                                        want[((n * H + hh) * W + ww) * C + c] += dy[oy] / cnt;
                                }
                        } else
                            want[arg] += dy[oy];
                    }
        for (size_t i = 0; i < x.size(); ++i)
            bad += fabs(dx[i] - want[i]) > 1e-6;
        CHECK(bad == 0, "pool mode %d: %d values differ", mode, bad);
    }
    /* a tie: the gradient goes to the first maximum of the window only */
    {
        OK(cudnnSetPooling2dDescriptor(pd, CUDNN_POOLING_MAX_DETERMINISTIC, CUDNN_NOT_PROPAGATE_NAN,
                                       2, 2, 0, 0, 2, 2));
        cudnnTensorDescriptor_t a, b;
        OK(cudnnCreateTensorDescriptor(&a));
        OK(cudnnCreateTensorDescriptor(&b));
        OK(cudnnSetTensor4dDescriptor(a, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 1, 2, 2));
        OK(cudnnSetTensor4dDescriptor(b, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 1, 1, 1));
        const float xt[4] = {1, 5, 5, 2}, g = 3;
        float yt = 0, dxt[4];
        OK(cudnnPoolingForward(h, pd, &one, a, xt, &zero, b, &yt));
        OK(cudnnPoolingBackward(h, pd, &one, b, &yt, b, &g, a, xt, &zero, a, dxt));
        CHECK(yt == 5 && dxt[0] == 0 && dxt[1] == 3 && dxt[2] == 0 && dxt[3] == 0,
              "tie: %g | %g %g %g %g", yt, dxt[0], dxt[1], dxt[2], dxt[3]);
        /* a y of the wrong size is refused */
        CHECK(cudnnPoolingForward(h, pd, &one, a, xt, &zero, a, dxt) == CUDNN_STATUS_BAD_PARAM,
              "pool output size");
        cudnnDestroyTensorDescriptor(a);
        cudnnDestroyTensorDescriptor(b);
    }
    cudnnDestroyPoolingDescriptor(pd);
    cudnnDestroyTensorDescriptor(xd);
    cudnnDestroyTensorDescriptor(yd);
}

/* GEMM: every transpose pair against a naive column-major reference, ld larger than needed. */
static void test_gemm() {
    cublasHandle_t h;
    CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "create");
    const int m = 5, n = 4, k = 3;
    int bad = 0;
    for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb)
            for (int bf = 0; bf < 3; ++bf) { /* 0 Sgemm, 1 GemmEx bf16 -> fp32, 2 bf16 -> bf16 */
                const int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
                const int lda = ar + 2, ldb = br + 1, ldc = m + 3;
                std::vector<float> A = rvec((size_t)lda * ac), B = rvec((size_t)ldb * bc);
                if (bf)
                    for (float &v : A)
                        v = ck_bf16_round(v);
                if (bf)
                    for (float &v : B)
                        v = ck_bf16_round(v);
                std::vector<uint16_t> Ab(A.size()), Bb(B.size()), Cb((size_t)ldc * n, 0x7FC0);
                for (size_t i = 0; i < A.size(); ++i)
                    Ab[i] = ck_bf16_bits(A[i]);
                for (size_t i = 0; i < B.size(); ++i)
                    Bb[i] = ck_bf16_bits(B[i]);
                std::vector<float> C((size_t)ldc * n, NAN);
                const float alpha = 1.5f, beta = 0.0f;
                const cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                        ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
                cublasStatus_t s;
                if (bf == 0)
                    s = cublasSgemm(h, oa, ob, m, n, k, &alpha, A.data(), lda, B.data(), ldb, &beta,
                                    C.data(), ldc);
                else
                    s = cublasGemmEx(h, oa, ob, m, n, k, &alpha, Ab.data(), CUDA_R_16BF, lda,
                                     Bb.data(), CUDA_R_16BF, ldb, &beta,
                                     bf == 1 ? (void *)C.data() : (void *)Cb.data(),
                                     bf == 1 ? CUDA_R_32F : CUDA_R_16BF, ldc, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT);
                CHECK(s == CUBLAS_STATUS_SUCCESS, "gemm status %d", (int)s);
                for (int j = 0; j < n; ++j)
                    for (int i = 0; i < m; ++i) {
                        double r = 0;
                        for (int p = 0; p < k; ++p)
                            r += (double)(ta ? A[p + (size_t)i * lda] : A[i + (size_t)p * lda]) *
                                 (tb ? B[j + (size_t)p * ldb] : B[p + (size_t)j * ldb]);
                        const float want = alpha * (float)r;
                        const float got = bf == 2 ? ck_bf16_to_float(Cb[i + (size_t)j * ldc])
                                                  : C[i + (size_t)j * ldc];
                        bad += bf == 2 ? got != ck_bf16_round(want) : fabsf(got - want) > 1e-6f;
                    }
                /* the rows past m in C are not touched */
                bad += bf == 2 ? Cb[m] != 0x7FC0 : !std::isnan(C[m]);
            }
    CHECK(bad == 0, "gemm: %d values differ", bad);
    /* beta != 0 accumulates; TF32 math rounds the inputs */
    {
        const float A[4] = {1.0f + 1e-6f, 2, 3, 4}, B[4] = {1, 0, 0, 1}, one = 1;
        float C[4] = {1, 1, 1, 1};
        cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, A, 2, B, 2, &one, C, 2);
        CHECK(C[0] == 2.0f + 1e-6f && C[3] == 5, "beta 1: %g %g", C[0], C[3]);
        CHECK(cublasSetMathMode(h,
                                (cublasMath_t)(CUBLAS_TF32_TENSOR_OP_MATH |
                                               CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)) ==
                  CUBLAS_STATUS_SUCCESS,
              "math mode");
        const float zero = 0;
        cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, A, 2, B, 2, &zero, C, 2);
        CHECK(C[0] == 1.0f, "tf32 rounds 1+1e-6 to 1: %.9g", C[0]);
    }
    /* refusals, streams, workspace, version */
    float d[4];
    const float one = 1;
    CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, d, 1, d, 2, &one, d, 2) ==
              CUBLAS_STATUS_INVALID_VALUE,
          "lda < m");
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, d, CUDA_R_16F, 1, d, CUDA_R_16F,
                       1, &one, d, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED,
          "fp16 is not emulated");
    alignas(256) static char ws[1024];
    CHECK(cublasSetWorkspace(h, ws + 1, 512) == CUBLAS_STATUS_INVALID_VALUE, "misaligned");
    CHECK(cublasSetWorkspace(h, ws, sizeof ws) == CUBLAS_STATUS_SUCCESS, "workspace");
    cudaStream_t s = (cudaStream_t)0x1234, s2 = nullptr;
    CHECK(cublasSetStream(h, s) == CUBLAS_STATUS_SUCCESS &&
              cublasGetStream(h, &s2) == CUBLAS_STATUS_SUCCESS && s2 == s,
          "stream");
    int maj = 0, min = 0, pat = -1;
    cublasGetProperty(MAJOR_VERSION, &maj);
    cublasGetProperty(MINOR_VERSION, &min);
    cublasGetProperty(PATCH_LEVEL, &pat);
    CHECK(maj == CUBLAS_VER_MAJOR && min == CUBLAS_VER_MINOR && pat == CUBLAS_VER_PATCH,
          "version %d.%d.%d", maj, min, pat);
    CHECK(cublasDestroy(h) == CUBLAS_STATUS_SUCCESS, "destroy");
}

int main() {
    cudnnHandle_t h;
    OK(cudnnCreate(&h));
    cudaStream_t s = (cudaStream_t)0x42, got = nullptr;
    OK(cudnnSetStream(h, s));
    OK(cudnnGetStream(h, &got));
    CHECK(got == s, "stream");
    CHECK(cudnnGetVersion() == CUDNN_VERSION, "version");
    CHECK(!strcmp(cudnnGetErrorString(CUDNN_STATUS_NOT_SUPPORTED), "CUDNN_STATUS_NOT_SUPPORTED"),
          "error string");
    test_conv(h);
    test_bf16_and_algos(h);
    test_pool(h);
    test_gemm();
    OK(cudnnDestroy(h));
    CHECK(g_submits > 0, "work went through kemu::submit");
    printf("%s: %d checks, %d failed, %d submits\n", g_fail ? "FAIL" : "PASS", g_checks, g_fail,
           g_submits);
    return g_fail != 0;
}
