/*
 * kemu's cuDNN: the legacy convolution and pooling API that cnnkit calls, on the CPU. Plain loops
 * (and double GEMMs) that follow the documented semantics; every algorithm computes the same math
 * (accumulated in double, rounded to fp32, then to bf16 for bf16 tensors), so the algorithm lists
 * matter only to the choice logic of the caller. The support rules the heuristics report
 * (kemu_cudnn_support):
 *  - fp32 (FLOAT_CONFIG): the GEMM-like algorithms for every shape; FFT, Winograd only in NCHW,
 *    stride 1, no dilation (Winograd 3x3, nonfused 3x3 or 5x5, FFT padded extent <= 256);
 *    forward DIRECT and backward-filter WINOGRAD never ("not implemented" in the header).
 *  - bf16 (PSEUDO_BFLOAT16_CONFIG, fp32 compute): tensor cores only, i.e. the implicit GEMMs and
 *    ALGO_1, under a math type other than CUDNN_FMA_MATH, with C and K multiples of 8 (the
 *    alignment the tensor-core kernels need); unsupported entries stay in the list with
 *    CUDNN_STATUS_NOT_SUPPORTED, as the real _v7 lists do, and their workspace query refuses.
 *  - fp32 under a math type other than CUDNN_FMA_MATH may run on tensor cores: the tensor-core
 *    algorithms round x, w and dy to TF32 (nearest) first, as Ampere and later do.
 * Device work goes through kemu::submit on the handle's stream, with every argument (descriptors
 * included) captured by value, so a captured graph replays the call as it was made.
 */
#include <cblas.h>
#include <cudnn.h>

#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "ck_math.h"
#include "kemu.h"

#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

struct cudnnContext {
    cudaStream_t stream;
    int device; /* current at cudnnCreate */
};
struct cudnnTensorStruct {
    bool set;
    cudnnTensorFormat_t fmt;
    cudnnDataType_t dt;
    int n, c, h, w;
};
struct cudnnFilterStruct {
    bool set;
    cudnnTensorFormat_t fmt;
    cudnnDataType_t dt;
    int k, c, r, s;
};
struct cudnnConvolutionStruct {
    bool set;
    int ph, pw, u, v, dh, dw;
    cudnnConvolutionMode_t mode;
    cudnnDataType_t ct;
    cudnnMathType_t math; /* CUDNN_DEFAULT_MATH until set, as in cuDNN */
};
struct cudnnPoolingStruct {
    bool set;
    cudnnPoolingMode_t mode;
    cudnnNanPropagation_t nan;
    int wh, ww, ph, pw, sh, sw;
};

namespace {

enum Dir { FWD = 0, BWD_DATA = 1, BWD_FILTER = 2 };

size_t elt(cudnnDataType_t t) {
    return t == CUDNN_DATA_BFLOAT16 ? 2 : 4;
}

size_t tensor_bytes(const cudnnTensorStruct &t) {
    return elt(t.dt) * (size_t)t.n * t.c * t.h * t.w;
}
size_t filter_bytes(const cudnnFilterStruct &f) {
    return elt(f.dt) * (size_t)f.k * f.c * f.r * f.s;
}

float load(const void *p, cudnnDataType_t t, size_t i) {
    return t == CUDNN_DATA_BFLOAT16 ? ck_bf16_to_float(((const uint16_t *)p)[i])
                                    : ((const float *)p)[i];
}
void store(void *p, cudnnDataType_t t, size_t i, float v) {
    if (t == CUDNN_DATA_BFLOAT16)
        ((uint16_t *)p)[i] = ck_bf16_bits(v);
    else
        ((float *)p)[i] = v;
}

/* Offset of (n, c, h, w) in a packed 4-d tensor or filter of format fmt. */
size_t at4(cudnnTensorFormat_t fmt, int C, int H, int W, int n, int c, int h, int w) {
    return fmt == CUDNN_TENSOR_NHWC ? (((size_t)n * H + h) * W + w) * C + c
                                    : (((size_t)n * C + c) * H + h) * W + w;
}

/* The whole tensor as fp32 in NCHW order (filters: KCRS). */
std::vector<float> unpack(const void *p, cudnnDataType_t t, cudnnTensorFormat_t fmt, int N, int C,
                          int H, int W) {
    std::vector<float> v((size_t)N * C * H * W);
    size_t i = 0;
    for (int n = 0; n < N; ++n)
        for (int c = 0; c < C; ++c)
            for (int h = 0; h < H; ++h)
                for (int w = 0; w < W; ++w)
                    v[i++] = load(p, t, at4(fmt, C, H, W, n, c, h, w));
    return v;
}

/* out = alpha * r + beta * out (out not read when beta is 0: it may hold NaN), r in NCHW. */
void pack(void *p, cudnnDataType_t t, cudnnTensorFormat_t fmt, int N, int C, int H, int W,
          const std::vector<float> &r, float alpha, float beta) {
    size_t i = 0;
    for (int n = 0; n < N; ++n)
        for (int c = 0; c < C; ++c)
            for (int h = 0; h < H; ++h)
                for (int w = 0; w < W; ++w) {
                    const size_t o = at4(fmt, C, H, W, n, c, h, w);
                    float v = alpha * r[i++];
                    if (beta != 0.0f)
                        v += beta * load(p, t, o);
                    store(p, t, o, v);
                }
}

float tf32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0x7F800000u)
        return f;
    u = (u + 0xFFFu + ((u >> 13) & 1u)) & ~0x1FFFu;
    memcpy(&f, &u, 4);
    return f;
}

/* A convolution as validated from its descriptors (copied: a graph replays these values). */
struct Conv {
    cudnnTensorStruct x, y;
    cudnnFilterStruct w;
    cudnnConvolutionStruct cd;
    int N, C, H, W, K, R, S, OH, OW;
};

cudnnStatus_t out_dim(const cudnnConvolutionStruct *cd, const cudnnTensorStruct *x,
                      const cudnnFilterStruct *w, int *oh, int *ow) {
    if (!cd || !x || !w || !cd->set || !x->set || !w->set)
        return CUDNN_STATUS_BAD_PARAM;
    if (x->c != w->c)
        return CUDNN_STATUS_BAD_PARAM;
    const int er = (w->r - 1) * cd->dh + 1, es = (w->s - 1) * cd->dw + 1;
    if (er > x->h + 2 * cd->ph || es > x->w + 2 * cd->pw)
        return CUDNN_STATUS_BAD_PARAM;
    *oh = 1 + (x->h + 2 * cd->ph - er) / cd->u;
    *ow = 1 + (x->w + 2 * cd->pw - es) / cd->v;
    return CUDNN_STATUS_SUCCESS;
}

/* cudnnConvolutionForward's checks (the backward calls share them): BAD_PARAM for descriptors
 * that do not fit together, NOT_SUPPORTED for a type configuration or output size cuDNN does not
 * run. */
cudnnStatus_t make_conv(const cudnnTensorStruct *x, const cudnnFilterStruct *w,
                        const cudnnConvolutionStruct *cd, const cudnnTensorStruct *y, Conv *c) {
    if (!x || !w || !cd || !y || !x->set || !w->set || !cd->set || !y->set)
        return CUDNN_STATUS_BAD_PARAM;
    if (x->dt != y->dt || x->dt != w->dt)
        return CUDNN_STATUS_BAD_PARAM;
    if ((x->dt != CUDNN_DATA_FLOAT && x->dt != CUDNN_DATA_BFLOAT16) || cd->ct != CUDNN_DATA_FLOAT)
        return CUDNN_STATUS_NOT_SUPPORTED;
    int oh = 0, ow = 0;
    const cudnnStatus_t s = out_dim(cd, x, w, &oh, &ow);
    if (s != CUDNN_STATUS_SUCCESS)
        return s;
    if (y->n != x->n || y->c != w->k)
        return CUDNN_STATUS_BAD_PARAM;
    if (y->h != oh || y->w != ow)
        return CUDNN_STATUS_NOT_SUPPORTED;
    *c = Conv{*x, *y, *w, *cd, x->n, x->c, x->h, x->w, w->k, w->r, w->s, oh, ow};
    return CUDNN_STATUS_SUCCESS;
}

/* The algorithms of each direction in the heuristics' order: id, deterministic, tensor-core
 * kernel (GEMM-like), relative time for Find. */
struct Algo {
    int id;
    bool det, tc;
    float speed;
};
const Algo k_fwd[] = {{1, true, true, 1.0f},  {0, true, true, 1.3f},   {2, true, false, 1.6f},
                      {6, true, false, 0.8f}, {7, true, false, 0.95f}, {5, true, false, 1.1f},
                      {4, true, false, 0.9f}, {3, true, false, 2.0f}};
const Algo k_bwd_data[] = {{1, true, true, 1.0f},   {0, false, false, 0.9f},
                           {5, true, false, 0.95f}, {4, true, false, 0.85f},
                           {3, true, false, 1.1f},  {2, true, false, 1.2f}};
const Algo k_bwd_filter[] = {{1, true, true, 1.0f},   {0, false, false, 0.9f},
                             {3, false, false, 0.8f}, {5, true, false, 1.05f},
                             {6, true, false, 1.2f},  {2, true, false, 1.3f},
                             {4, true, false, 1.0f}};
const Algo *const k_algos[3] = {k_fwd, k_bwd_data, k_bwd_filter};
const int k_count[3] = {CUDNN_CONVOLUTION_FWD_ALGO_COUNT, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT};

const Algo *find_algo(int dir, int id) {
    for (int i = 0; i < k_count[dir]; ++i)
        if (k_algos[dir][i].id == id)
            return &k_algos[dir][i];
    return nullptr;
}

enum Family { GEMM, FFT, FFT_TILING, WINOGRAD, WINOGRAD_NONFUSED, NONE };

Family family(int dir, int id) {
    static const Family f[3][8] = {
        {GEMM, GEMM, GEMM, NONE, FFT, FFT_TILING, WINOGRAD, WINOGRAD_NONFUSED},
        {GEMM, GEMM, FFT, FFT_TILING, WINOGRAD, WINOGRAD_NONFUSED, NONE, NONE},
        {GEMM, GEMM, FFT, GEMM, NONE, WINOGRAD_NONFUSED, FFT_TILING, NONE}};
    return f[dir][id];
}

/* Whether algorithm id of direction dir runs this convolution under math type m. */
cudnnStatus_t support(int dir, int id, const Conv &c, cudnnMathType_t m) {
    const Algo *a = find_algo(dir, id);
    if (!a)
        return CUDNN_STATUS_BAD_PARAM;
    const Family f = family(dir, id);
    if (f == NONE)
        return CUDNN_STATUS_NOT_SUPPORTED;
    if (c.x.dt == CUDNN_DATA_BFLOAT16)
        return a->tc && m != CUDNN_FMA_MATH && c.C % 8 == 0 && c.K % 8 == 0
                   ? CUDNN_STATUS_SUCCESS
                   : CUDNN_STATUS_NOT_SUPPORTED;
    if (f == GEMM)
        return CUDNN_STATUS_SUCCESS;
    const bool nchw = c.x.fmt == CUDNN_TENSOR_NCHW && c.y.fmt == CUDNN_TENSOR_NCHW &&
                      c.w.fmt == CUDNN_TENSOR_NCHW;
    if (!nchw || c.cd.u != 1 || c.cd.v != 1 || c.cd.dh != 1 || c.cd.dw != 1)
        return CUDNN_STATUS_NOT_SUPPORTED;
    if (f == WINOGRAD && (c.R != 3 || c.S != 3))
        return CUDNN_STATUS_NOT_SUPPORTED;
    if (f == WINOGRAD_NONFUSED && (c.R != c.S || (c.R != 3 && c.R != 5)))
        return CUDNN_STATUS_NOT_SUPPORTED;
    if (f == FFT && (c.H + 2 * c.cd.ph > 256 || c.W + 2 * c.cd.pw > 256))
        return CUDNN_STATUS_NOT_SUPPORTED;
    return CUDNN_STATUS_SUCCESS;
}

/* Workspace bytes of a supported algorithm: deterministic, some zero, some growing with the
 * batch, so that the caller's sizing is exercised; smaller than cuDNN's FFT / Winograd needs, as
 * kemu's device memory is the host's. */
size_t ws_need(int dir, int id, const Conv &c) {
    const size_t N = c.N, C = c.C, K = c.K, RS = (size_t)c.R * c.S;
    const size_t e = elt(c.x.dt);
    const size_t hw = (size_t)(c.H + 2 * c.cd.ph) * (c.W + 2 * c.cd.pw);
    const size_t tiles = (size_t)((c.OH + 3) / 4) * ((c.OW + 3) / 4);
    switch (family(dir, id)) {
    case FFT:
        return 2 * (N * C + N * K + C * K) * hw;
    case FFT_TILING:
        return 8 * (C * K + 32 * (C + K)) * 32 * 32;
    case WINOGRAD:
        return 0;
    case WINOGRAD_NONFUSED:
        return 16 * (C * K + N * (C + K) * tiles);
    default:
        break;
    }
    if (dir == FWD)
        return id == 0 ? 0 : id == 1 ? 4 * C * RS + 1024 : e * C * RS * c.OH * c.OW;
    if (dir == BWD_DATA)
        return id == 0 ? 0 : 4 * K * RS + 512;
    return id == 0 ? 0 : id == 1 ? 4 * C * K * RS + 256 : 4 * C * K * RS * ((N + 63) / 64);
}

/* The math type a supported algorithm reports: the descriptor's for a tensor-core algorithm,
 * else FMA (DEFAULT stays DEFAULT). */
cudnnMathType_t algo_math(const Algo &a, cudnnMathType_t m) {
    return a.tc || m == CUDNN_DEFAULT_MATH ? m : CUDNN_FMA_MATH;
}

/* The three computations, in NCHW / KCRS fp32 (vectors as unpack gives them). */
int fr(const Conv &c, int r) {
    return c.cd.mode == CUDNN_CONVOLUTION ? c.R - 1 - r : r;
}
int fs(const Conv &c, int s) {
    return c.cd.mode == CUDNN_CONVOLUTION ? c.S - 1 - s : s;
}

/* The im2col matrix of image n: row q = (ch, r, s), column p = (oh, ow), zero in the padding. */
void im2col(const Conv &c, const std::vector<float> &x, int n, std::vector<double> &P) {
    const int ohw = c.OH * c.OW;
    P.assign((size_t)c.C * c.R * c.S * ohw, 0.0);
    for (int ch = 0; ch < c.C; ++ch)
        for (int r = 0; r < c.R; ++r)
            for (int s = 0; s < c.S; ++s) {
                double *row = &P[((size_t)(ch * c.R + r) * c.S + s) * ohw];
                for (int oh = 0; oh < c.OH; ++oh) {
                    const int ih = oh * c.cd.u - c.cd.ph + r * c.cd.dh;
                    if (ih < 0 || ih >= c.H)
                        continue;
                    const float *xr = &x[(((size_t)n * c.C + ch) * c.H + ih) * c.W];
                    for (int ow = 0; ow < c.OW; ++ow) {
                        const int iw = ow * c.cd.v - c.cd.pw + s * c.cd.dw;
                        if (iw >= 0 && iw < c.W)
                            row[oh * c.OW + ow] = xr[iw];
                    }
                }
            }
}

/* The filter as a K x CRS matrix in the order im2col's rows take (flipped for CONVOLUTION). */
std::vector<double> filter_matrix(const Conv &c, const std::vector<float> &w) {
    const int crs = c.C * c.R * c.S;
    std::vector<double> m((size_t)c.K * crs);
    for (int k = 0; k < c.K; ++k)
        for (int ch = 0; ch < c.C; ++ch)
            for (int r = 0; r < c.R; ++r)
                for (int s = 0; s < c.S; ++s)
                    m[(size_t)k * crs + (ch * c.R + r) * c.S + s] =
                        w[(((size_t)k * c.C + ch) * c.R + fr(c, r)) * c.S + fs(c, s)];
    return m;
}

/* Products of two floats are exact in double: the GEMMs below sum exact products in double,
 * then each result is rounded once to fp32 (the order of the sum is not cuDNN's either way). */
std::vector<float> conv_fwd(const Conv &c, const std::vector<float> &x,
                            const std::vector<float> &w) {
    const int crs = c.C * c.R * c.S, ohw = c.OH * c.OW;
    std::vector<float> y((size_t)c.N * c.K * ohw);
    const std::vector<double> wm = filter_matrix(c, w);
    std::vector<double> P, Y((size_t)c.K * ohw);
    for (int n = 0; n < c.N; ++n) {
        im2col(c, x, n, P);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c.K, ohw, crs, 1.0, wm.data(), crs,
                    P.data(), ohw, 0.0, Y.data(), ohw);
        for (size_t i = 0; i < Y.size(); ++i)
            y[(size_t)n * c.K * ohw + i] = (float)Y[i];
    }
    return y;
}

std::vector<float> conv_bwd_data(const Conv &c, const std::vector<float> &dy,
                                 const std::vector<float> &w) {
    const int crs = c.C * c.R * c.S, ohw = c.OH * c.OW;
    std::vector<float> dx((size_t)c.N * c.C * c.H * c.W);
    const std::vector<double> wm = filter_matrix(c, w);
    std::vector<double> dyn((size_t)c.K * ohw), dP((size_t)crs * ohw), acc((size_t)c.C * c.H * c.W);
    for (int n = 0; n < c.N; ++n) {
        for (size_t i = 0; i < dyn.size(); ++i)
            dyn[i] = dy[(size_t)n * c.K * ohw + i];
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, crs, ohw, c.K, 1.0, wm.data(), crs,
                    dyn.data(), ohw, 0.0, dP.data(), ohw);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int ch = 0; ch < c.C; ++ch) /* col2im: each column entry back to its input cell */
            for (int r = 0; r < c.R; ++r)
                for (int s = 0; s < c.S; ++s) {
                    const double *row = &dP[((size_t)(ch * c.R + r) * c.S + s) * ohw];
                    for (int oh = 0; oh < c.OH; ++oh) {
                        const int ih = oh * c.cd.u - c.cd.ph + r * c.cd.dh;
                        if (ih < 0 || ih >= c.H)
                            continue;
                        double *ar = &acc[((size_t)ch * c.H + ih) * c.W];
                        for (int ow = 0; ow < c.OW; ++ow) {
                            const int iw = ow * c.cd.v - c.cd.pw + s * c.cd.dw;
                            if (iw >= 0 && iw < c.W)
                                ar[iw] += row[oh * c.OW + ow];
                        }
                    }
                }
        for (size_t i = 0; i < acc.size(); ++i)
            dx[(size_t)n * acc.size() + i] = (float)acc[i];
    }
    return dx;
}

std::vector<float> conv_bwd_filter(const Conv &c, const std::vector<float> &x,
                                   const std::vector<float> &dy) {
    const int crs = c.C * c.R * c.S, ohw = c.OH * c.OW;
    std::vector<double> dwm((size_t)c.K * crs, 0.0), P, dyn((size_t)c.K * ohw);
    for (int n = 0; n < c.N; ++n) {
        im2col(c, x, n, P);
        for (size_t i = 0; i < dyn.size(); ++i)
            dyn[i] = dy[(size_t)n * c.K * ohw + i];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c.K, crs, ohw, 1.0, dyn.data(), ohw,
                    P.data(), ohw, 1.0, dwm.data(), crs);
    }
    std::vector<float> dw((size_t)c.K * crs);
    for (int k = 0; k < c.K; ++k)
        for (int ch = 0; ch < c.C; ++ch)
            for (int r = 0; r < c.R; ++r)
                for (int s = 0; s < c.S; ++s)
                    dw[(((size_t)k * c.C + ch) * c.R + fr(c, r)) * c.S + fs(c, s)] =
                        (float)dwm[(size_t)k * crs + (ch * c.R + r) * c.S + s];
    return dw;
}

void round_tf32(std::vector<float> &v) {
    for (float &f : v)
        f = tf32(f);
}

/* Direction dir on the descriptors' buffers: in0/in1 the two inputs (forward x, w; backward
 * data w, dy; backward filter x, dy), out the output; tf: round the inputs to TF32. */
void run(int dir, const Conv &c, const void *in0, const void *in1, void *out, float alpha,
         float beta, bool tf) {
    const cudnnDataType_t t = c.x.dt;
    std::vector<float> x, w, dy;
    if (dir != BWD_DATA)
        x = unpack(in0, t, c.x.fmt, c.N, c.C, c.H, c.W);
    if (dir != BWD_FILTER)
        w = unpack(dir == FWD ? in1 : in0, t, c.w.fmt, c.K, c.C, c.R, c.S);
    if (dir != FWD)
        dy = unpack(in1, t, c.y.fmt, c.N, c.K, c.OH, c.OW);
    if (tf) {
        round_tf32(x);
        round_tf32(w);
        round_tf32(dy);
    }
    if (dir == FWD)
        pack(out, t, c.y.fmt, c.N, c.K, c.OH, c.OW, conv_fwd(c, x, w), alpha, beta);
    else if (dir == BWD_DATA)
        pack(out, t, c.x.fmt, c.N, c.C, c.H, c.W, conv_bwd_data(c, dy, w), alpha, beta);
    else
        pack(out, t, c.w.fmt, c.K, c.C, c.R, c.S, conv_bwd_filter(c, x, dy), alpha, beta);
}

const char *const k_fn[3] = {"cudnnConvolutionForward", "cudnnConvolutionBackwardData",
                             "cudnnConvolutionBackwardFilter"};

/* The buffers of direction dir: in0, in1, out as run() takes them, and their byte counts. */
void dir_bytes(int dir, const Conv &c, size_t b[3]) {
    const size_t xb = tensor_bytes(c.x), yb = tensor_bytes(c.y), wb = filter_bytes(c.w);
    const size_t t[3][3] = {{xb, wb, yb}, {wb, yb, xb}, {xb, yb, wb}};
    memcpy(b, t[dir], sizeof t[dir]);
}
const char *const k_buf[3][3] = {{"x", "w", "y"}, {"w", "dy", "dx"}, {"x", "dy", "dw"}};

void check_device(const char *fn, int dir, const Conv &c, const void *in0, const void *in1,
                  const void *out, const void *ws, size_t ws_bytes) {
    size_t b[3];
    dir_bytes(dir, c, b);
    const void *p[3] = {in0, in1, out};
    for (int i = 0; i < 3; ++i)
        if (!kemu::is_device(p[i], b[i]))
            kemu::fault("%s: %s (%p, %zu bytes) is not device memory", fn, k_buf[dir][i], p[i],
                        b[i]);
    if (ws_bytes > 0 && !kemu::is_device(ws, ws_bytes))
        kemu::fault("%s: workspace (%p, %zu bytes) is not device memory", fn, ws, ws_bytes);
}

cudnnStatus_t compute(cudnnHandle_t h, int dir, const void *alpha, const Conv &c, int algo,
                      const void *in0, const void *in1, void *ws, size_t ws_bytes, const void *beta,
                      void *out) {
    if (!h)
        return CUDNN_STATUS_BAD_PARAM;
    if (!alpha || !beta || !in0 || !in1 || !out)
        return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    const cudnnMathType_t m = c.cd.math;
    const cudnnStatus_t s = support(dir, algo, c, m);
    if (s != CUDNN_STATUS_SUCCESS)
        return s;
    const size_t need = ws_need(dir, algo, c);
    if (ws_bytes < need)
        return CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT;
    if (need > 0 && !ws)
        return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    check_device(k_fn[dir], dir, c, in0, in1, out, ws, ws_bytes);
    kemu::check_handle(k_fn[dir], h->device, h->stream);
    const float a = *(const float *)alpha, b = *(const float *)beta;
    const bool tf = c.x.dt == CUDNN_DATA_FLOAT && m != CUDNN_FMA_MATH && find_algo(dir, algo)->tc;
    const cudaError_t e = kemu::submit(h->stream, [=]() { run(dir, c, in0, in1, out, a, b, tf); });
    return e == cudaSuccess ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_EXECUTION_FAILED;
}

cudnnStatus_t ws_query(cudnnHandle_t h, int dir, const Conv &c, int algo, size_t *bytes) {
    if (!h || !bytes)
        return CUDNN_STATUS_BAD_PARAM;
    /* stricter than documented: whether cuDNN 9's queries (built on its backend engines, which
     * may finalize a plan) may run under a stream capture is not said, so none may here */
    if (kemu::capturing(h->stream))
        return CUDNN_STATUS_EXECUTION_FAILED_CUDART;
    const cudnnStatus_t s = support(dir, algo, c, c.cd.math);
    if (s != CUDNN_STATUS_SUCCESS)
        return s;
    *bytes = ws_need(dir, algo, c);
    return CUDNN_STATUS_SUCCESS;
}

/* The heuristics (timed = false: the list in the heuristics' order, supported entries first)
 * or Find's results (timed: the supported ones that fit ws_bytes by time, then the others). */
template <typename Perf, typename AlgoT>
cudnnStatus_t algo_list(cudnnHandle_t h, int dir, const Conv &c, int requested, int *returned,
                        Perf *perf, bool timed, size_t ws_bytes) {
    if (!h || !returned || !perf || requested < 1)
        return CUDNN_STATUS_BAD_PARAM;
    const cudnnMathType_t m = c.cd.math;
    const double macs = (double)c.N * c.K * c.OH * c.OW * c.C * c.R * c.S;
    std::vector<Perf> ok, bad;
    for (int i = 0; i < k_count[dir]; ++i) {
        const Algo &a = k_algos[dir][i];
        Perf p;
        memset(&p, 0, sizeof p);
        p.algo = (AlgoT)a.id;
        p.status = support(dir, a.id, c, m);
        p.time = -1.0f;
        p.determinism = a.det ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
        p.mathType = algo_math(a, m);
        if (p.status == CUDNN_STATUS_SUCCESS) {
            p.memory = ws_need(dir, a.id, c);
            if (timed && p.memory > ws_bytes)
                p.status = CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT;
            else if (timed)
                p.time = (float)(0.002 + macs * 1e-9 * a.speed);
        }
        (p.status == CUDNN_STATUS_SUCCESS ? ok : bad).push_back(p);
    }
    if (timed)
        std::stable_sort(ok.begin(), ok.end(),
                         [](const Perf &a, const Perf &b) { return a.time < b.time; });
    ok.insert(ok.end(), bad.begin(), bad.end());
    *returned = std::min(requested, (int)ok.size());
    std::copy(ok.begin(), ok.begin() + *returned, perf);
    return CUDNN_STATUS_SUCCESS;
}

/* cudnnFind*AlgorithmEx: the list, and the computation run once on the caller's buffers (every
 * algorithm computes the same values). Find synchronizes, which a stream capture refuses. */
template <typename Perf, typename AlgoT>
cudnnStatus_t find_ex(cudnnHandle_t h, int dir, const Conv &c, const void *in0, const void *in1,
                      void *out, int requested, int *returned, Perf *perf, void *ws,
                      size_t ws_bytes) {
    static const char *const fn[3] = {"cudnnFindConvolutionForwardAlgorithmEx",
                                      "cudnnFindConvolutionBackwardDataAlgorithmEx",
                                      "cudnnFindConvolutionBackwardFilterAlgorithmEx"};
    if (!h)
        return CUDNN_STATUS_BAD_PARAM;
    if (!in0 || !in1 || !out)
        return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (kemu::capturing(h->stream))
        return CUDNN_STATUS_EXECUTION_FAILED_CUDART;
    const cudnnStatus_t s =
        algo_list<Perf, AlgoT>(h, dir, c, requested, returned, perf, true, ws ? ws_bytes : 0);
    if (s != CUDNN_STATUS_SUCCESS)
        return s;
    check_device(fn[dir], dir, c, in0, in1, out, ws, ws ? ws_bytes : 0);
    kemu::check_handle(fn[dir], h->device, h->stream);
    const cudaError_t e =
        kemu::submit(h->stream, [=]() { run(dir, c, in0, in1, out, 1.0f, 0.0f, false); });
    return e == cudaSuccess ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_EXECUTION_FAILED;
}

/* ---- pooling ---- */

struct Pool {
    cudnnPoolingStruct p;
    cudnnTensorStruct x, y;
};

cudnnStatus_t make_pool(const cudnnPoolingStruct *p, const cudnnTensorStruct *x,
                        const cudnnTensorStruct *y, Pool *o) {
    if (!p || !x || !y || !p->set || !x->set || !y->set)
        return CUDNN_STATUS_BAD_PARAM;
    if (x->n != y->n || x->c != y->c || x->dt != y->dt)
        return CUDNN_STATUS_BAD_PARAM;
    if (x->dt != CUDNN_DATA_FLOAT && x->dt != CUDNN_DATA_BFLOAT16)
        return CUDNN_STATUS_NOT_SUPPORTED;
    /* cudnnGetPooling2dForwardOutputDim's size; the fake accepts no other */
    if (y->h != 1 + (x->h + 2 * p->ph - p->wh) / p->sh ||
        y->w != 1 + (x->w + 2 * p->pw - p->ww) / p->sw)
        return CUDNN_STATUS_BAD_PARAM;
    *o = Pool{*p, *x, *y};
    return CUDNN_STATUS_SUCCESS;
}

bool is_max(const Pool &q) {
    return q.p.mode == CUDNN_POOLING_MAX || q.p.mode == CUDNN_POOLING_MAX_DETERMINISTIC;
}

/* The window of output (oh, ow), clipped to the input: rows [h0, h1), columns [w0, w1); *cnt the
 * divisor of the average modes (the clipped window, or with padding the window within the padded
 * input). */
void window(const Pool &q, int oh, int ow, int *h0, int *h1, int *w0, int *w1, int *cnt) {
    const int hs = oh * q.p.sh - q.p.ph, ws = ow * q.p.sw - q.p.pw;
    *h0 = std::max(hs, 0);
    *h1 = std::min(hs + q.p.wh, q.x.h);
    *w0 = std::max(ws, 0);
    *w1 = std::min(ws + q.p.ww, q.x.w);
    if (q.p.mode == CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING) {
        const int ph1 = std::min(hs + q.p.wh, q.x.h + q.p.ph),
                  pw1 = std::min(ws + q.p.ww, q.x.w + q.p.pw);
        *cnt = (ph1 - hs) * (pw1 - ws);
    } else {
        *cnt = std::max(*h1 - *h0, 0) * std::max(*w1 - *w0, 0);
    }
}

void pool_fwd(const Pool &q, const void *x, void *y, float alpha, float beta) {
    const cudnnTensorStruct &X = q.x, &Y = q.y;
    std::vector<float> xv = unpack(x, X.dt, X.fmt, X.n, X.c, X.h, X.w);
    std::vector<float> r((size_t)Y.n * Y.c * Y.h * Y.w);
    size_t i = 0;
    for (int n = 0; n < Y.n; ++n)
        for (int c = 0; c < Y.c; ++c)
            for (int oh = 0; oh < Y.h; ++oh)
                for (int ow = 0; ow < Y.w; ++ow) {
                    int h0, h1, w0, w1, cnt;
                    window(q, oh, ow, &h0, &h1, &w0, &w1, &cnt);
                    double sum = 0.0;
                    float best = -INFINITY;
                    bool nan = false;
                    for (int h = h0; h < h1; ++h)
                        for (int w = w0; w < w1; ++w) {
                            const float v = xv[(((size_t)n * X.c + c) * X.h + h) * X.w + w];
                            sum += v;
                            nan |= v != v;
                            if (v > best)
                                best = v;
                        }
                    if (is_max(q))
                        r[i++] = nan && q.p.nan == CUDNN_PROPAGATE_NAN ? NAN : best;
                    else
                        r[i++] = cnt > 0 ? (float)(sum / cnt) : 0.0f;
                }
    pack(y, Y.dt, Y.fmt, Y.n, Y.c, Y.h, Y.w, r, alpha, beta);
}

/* Max: the gradient of an output goes to the first element of its window (row by row) equal to
 * y, the forward's maximum; on ties only that first one receives it. */
void pool_bwd(const Pool &q, const void *y, const void *dy, const void *x, void *dx, float alpha,
              float beta) {
    const cudnnTensorStruct &X = q.x, &Y = q.y;
    std::vector<float> xv, yv;
    if (is_max(q)) {
        xv = unpack(x, X.dt, X.fmt, X.n, X.c, X.h, X.w);
        yv = unpack(y, Y.dt, Y.fmt, Y.n, Y.c, Y.h, Y.w);
    }
    const std::vector<float> dyv = unpack(dy, Y.dt, Y.fmt, Y.n, Y.c, Y.h, Y.w);
    std::vector<double> r((size_t)X.n * X.c * X.h * X.w, 0.0);
    size_t i = 0;
    for (int n = 0; n < Y.n; ++n)
        for (int c = 0; c < Y.c; ++c)
            for (int oh = 0; oh < Y.h; ++oh)
                for (int ow = 0; ow < Y.w; ++ow, ++i) {
                    int h0, h1, w0, w1, cnt;
                    window(q, oh, ow, &h0, &h1, &w0, &w1, &cnt);
                    const size_t base = ((size_t)n * X.c + c) * X.h;
                    bool done = false;
                    for (int h = h0; h < h1 && !done; ++h)
                        for (int w = w0; w < w1 && !done; ++w) {
                            const size_t o = (base + h) * X.w + w;
                            if (!is_max(q))
                                r[o] += (double)dyv[i] / cnt;
                            else if (xv[o] == yv[i]) {
                                r[o] += dyv[i];
                                done = true;
                            }
                        }
                }
    pack(dx, X.dt, X.fmt, X.n, X.c, X.h, X.w, std::vector<float>(r.begin(), r.end()), alpha, beta);
}

} // namespace

extern "C" {

size_t cudnnGetVersion(void) {
    return CUDNN_VERSION;
}
size_t cudnnGetCudartVersion(void) {
    return CUDART_VERSION;
}

const char *cudnnGetErrorString(cudnnStatus_t s) {
    switch (s) {
#define KEMU_NAME(x)                                                                               \
    case x:                                                                                        \
        return #x;
        KEMU_NAME(CUDNN_STATUS_SUCCESS)
        KEMU_NAME(CUDNN_STATUS_NOT_INITIALIZED)
        KEMU_NAME(CUDNN_STATUS_BAD_PARAM)
        KEMU_NAME(CUDNN_STATUS_BAD_PARAM_NULL_POINTER)
        KEMU_NAME(CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT)
        KEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED)
        KEMU_NAME(CUDNN_STATUS_INTERNAL_ERROR)
        KEMU_NAME(CUDNN_STATUS_EXECUTION_FAILED)
        KEMU_NAME(CUDNN_STATUS_EXECUTION_FAILED_CUDART)
#undef KEMU_NAME
    default:
        return "CUDNN_STATUS_UNKNOWN";
    }
}

cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
    if (!h)
        return CUDNN_STATUS_BAD_PARAM;
    *h = new cudnnContext{nullptr, kemu::current_device()};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
    if (!h)
        return CUDNN_STATUS_BAD_PARAM;
    delete h;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
    if (!h)
        return CUDNN_STATUS_BAD_PARAM;
    h->stream = s;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetStream(cudnnHandle_t h, cudaStream_t *s) {
    if (!h || !s)
        return CUDNN_STATUS_BAD_PARAM;
    *s = h->stream;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- descriptors ---- */

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) {
    if (!d)
        return CUDNN_STATUS_BAD_PARAM;
    *d = new cudnnTensorStruct();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
    delete d; /* NULL is a no-op, as in cuDNN */
    return CUDNN_STATUS_SUCCESS;
}

static bool known_type(cudnnDataType_t t) {
    return (int)t >= (int)CUDNN_DATA_FLOAT && (int)t <= (int)CUDNN_DATA_COMPLEX_FP64;
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t f,
                                         cudnnDataType_t t, int n, int c, int h, int w) {
    if (!d || n <= 0 || c <= 0 || h <= 0 || w <= 0 || !known_type(t))
        return CUDNN_STATUS_BAD_PARAM;
    if (f != CUDNN_TENSOR_NCHW && f != CUDNN_TENSOR_NHWC)
        return f == CUDNN_TENSOR_NCHW_VECT_C ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_BAD_PARAM;
    if ((double)n * c * h * w > 2147483647.0)
        return CUDNN_STATUS_NOT_SUPPORTED;
    *d = cudnnTensorStruct{true, f, t, n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) {
    if (!d)
        return CUDNN_STATUS_BAD_PARAM;
    *d = new cudnnFilterStruct();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t t,
                                         cudnnTensorFormat_t f, int k, int c, int h, int w) {
    if (!d || k <= 0 || c <= 0 || h <= 0 || w <= 0 || !known_type(t))
        return CUDNN_STATUS_BAD_PARAM;
    if (f != CUDNN_TENSOR_NCHW && f != CUDNN_TENSOR_NHWC)
        return f == CUDNN_TENSOR_NCHW_VECT_C ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_BAD_PARAM;
    *d = cudnnFilterStruct{true, f, t, k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) {
    if (!d)
        return CUDNN_STATUS_BAD_PARAM;
    *d = new cudnnConvolutionStruct();
    (*d)->math = CUDNN_DEFAULT_MATH;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int ph, int pw, int u,
                                              int v, int dh, int dw, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t ct) {
    if (!d || ph < 0 || pw < 0 || u <= 0 || v <= 0 || dh <= 0 || dw <= 0 || !known_type(ct) ||
        (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION))
        return CUDNN_STATUS_BAD_PARAM;
    const cudnnMathType_t m = d->math; /* the math type is kept */
    *d = cudnnConvolutionStruct{true, ph, pw, u, v, dh, dw, mode, ct, m};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) {
    if (!d || (m != CUDNN_DEFAULT_MATH && m != CUDNN_TENSOR_OP_MATH &&
               m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION && m != CUDNN_FMA_MATH))
        return CUDNN_STATUS_BAD_PARAM;
    d->math = m;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t *m) {
    if (!d || !m)
        return CUDNN_STATUS_BAD_PARAM;
    *m = d->math;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t cd,
                                                    const cudnnTensorDescriptor_t x,
                                                    const cudnnFilterDescriptor_t w, int *n, int *c,
                                                    int *h, int *wo) {
    if (!n || !c || !h || !wo)
        return CUDNN_STATUS_BAD_PARAM;
    int oh = 0, ow = 0;
    const cudnnStatus_t s = out_dim(cd, x, w, &oh, &ow);
    if (s != CUDNN_STATUS_SUCCESS)
        return s;
    *n = x->n;
    *c = w->k;
    *h = oh;
    *wo = ow;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- convolution: workspace sizes, heuristics, Find, compute ---- */

#define KEMU_CONV(xd, wd, cd, yd)                                                                  \
    Conv cv;                                                                                       \
    {                                                                                              \
        const cudnnStatus_t s_ = make_conv(xd, wd, cd, yd, &cv);                                   \
        if (s_ != CUDNN_STATUS_SUCCESS)                                                            \
            return s_;                                                                             \
    }

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                      cudnnFilterDescriptor_t w,
                                                      cudnnConvolutionDescriptor_t cd,
                                                      cudnnTensorDescriptor_t y,
                                                      cudnnConvolutionFwdAlgo_t algo,
                                                      size_t *bytes) {
    KEMU_CONV(x, w, cd, y)
    return ws_query(h, FWD, cv, algo, bytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t h, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t cd, cudnnTensorDescriptor_t dx, cudnnConvolutionBwdDataAlgo_t algo,
    size_t *bytes) {
    KEMU_CONV(dx, w, cd, dy)
    return ws_query(h, BWD_DATA, cv, algo, bytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t cd, cudnnFilterDescriptor_t dw,
    cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes) {
    KEMU_CONV(x, dw, cd, dy)
    return ws_query(h, BWD_FILTER, cv, algo, bytes);
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                     cudnnFilterDescriptor_t w,
                                                     cudnnConvolutionDescriptor_t cd,
                                                     cudnnTensorDescriptor_t y, int requested,
                                                     int *returned,
                                                     cudnnConvolutionFwdAlgoPerf_t *perf) {
    KEMU_CONV(x, w, cd, y)
    return algo_list<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(
        h, FWD, cv, requested, returned, perf, false, 0);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t h, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t cd, cudnnTensorDescriptor_t dx, int requested, int *returned,
    cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    KEMU_CONV(dx, w, cd, dy)
    return algo_list<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(
        h, BWD_DATA, cv, requested, returned, perf, false, 0);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t cd, cudnnFilterDescriptor_t dw, int requested, int *returned,
    cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    KEMU_CONV(x, dw, cd, dy)
    return algo_list<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(
        h, BWD_FILTER, cv, requested, returned, perf, false, 0);
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(
    cudnnHandle_t h, cudnnTensorDescriptor_t xd, const void *x, cudnnFilterDescriptor_t wd,
    const void *w, cudnnConvolutionDescriptor_t cd, cudnnTensorDescriptor_t yd, void *y,
    int requested, int *returned, cudnnConvolutionFwdAlgoPerf_t *perf, void *ws, size_t ws_bytes) {
    KEMU_CONV(xd, wd, cd, yd)
    return find_ex<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(
        h, FWD, cv, x, w, y, requested, returned, perf, ws, ws_bytes);
}
cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(
    cudnnHandle_t h, cudnnFilterDescriptor_t wd, const void *w, cudnnTensorDescriptor_t dyd,
    const void *dy, cudnnConvolutionDescriptor_t cd, cudnnTensorDescriptor_t dxd, void *dx,
    int requested, int *returned, cudnnConvolutionBwdDataAlgoPerf_t *perf, void *ws,
    size_t ws_bytes) {
    KEMU_CONV(dxd, wd, cd, dyd)
    return find_ex<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(
        h, BWD_DATA, cv, w, dy, dx, requested, returned, perf, ws, ws_bytes);
}
cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(
    cudnnHandle_t h, cudnnTensorDescriptor_t xd, const void *x, cudnnTensorDescriptor_t dyd,
    const void *dy, cudnnConvolutionDescriptor_t cd, cudnnFilterDescriptor_t dwd, void *dw,
    int requested, int *returned, cudnnConvolutionBwdFilterAlgoPerf_t *perf, void *ws,
    size_t ws_bytes) {
    KEMU_CONV(xd, dwd, cd, dyd)
    return find_ex<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(
        h, BWD_FILTER, cv, x, dy, dw, requested, returned, perf, ws, ws_bytes);
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha,
                                      cudnnTensorDescriptor_t xd, const void *x,
                                      cudnnFilterDescriptor_t wd, const void *w,
                                      cudnnConvolutionDescriptor_t cd,
                                      cudnnConvolutionFwdAlgo_t algo, void *ws, size_t ws_bytes,
                                      const void *beta, cudnnTensorDescriptor_t yd, void *y) {
    KEMU_CONV(xd, wd, cd, yd)
    return compute(h, FWD, alpha, cv, algo, x, w, ws, ws_bytes, beta, y);
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha,
                                           cudnnFilterDescriptor_t wd, const void *w,
                                           cudnnTensorDescriptor_t dyd, const void *dy,
                                           cudnnConvolutionDescriptor_t cd,
                                           cudnnConvolutionBwdDataAlgo_t algo, void *ws,
                                           size_t ws_bytes, const void *beta,
                                           cudnnTensorDescriptor_t dxd, void *dx) {
    KEMU_CONV(dxd, wd, cd, dyd)
    return compute(h, BWD_DATA, alpha, cv, algo, w, dy, ws, ws_bytes, beta, dx);
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha,
                                             cudnnTensorDescriptor_t xd, const void *x,
                                             cudnnTensorDescriptor_t dyd, const void *dy,
                                             cudnnConvolutionDescriptor_t cd,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *ws,
                                             size_t ws_bytes, const void *beta,
                                             cudnnFilterDescriptor_t dwd, void *dw) {
    KEMU_CONV(xd, dwd, cd, dyd)
    return compute(h, BWD_FILTER, alpha, cv, algo, x, dy, ws, ws_bytes, beta, dw);
}

/* ---- pooling ---- */

cudnnStatus_t cudnnCreatePoolingDescriptor(cudnnPoolingDescriptor_t *d) {
    if (!d)
        return CUDNN_STATUS_BAD_PARAM;
    *d = new cudnnPoolingStruct();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyPoolingDescriptor(cudnnPoolingDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetPooling2dDescriptor(cudnnPoolingDescriptor_t d, cudnnPoolingMode_t mode,
                                          cudnnNanPropagation_t nan, int wh, int ww, int ph, int pw,
                                          int sh, int sw) {
    if (!d || wh <= 0 || ww <= 0 || ph < 0 || pw < 0 || sh <= 0 || sw <= 0 ||
        (int)mode < (int)CUDNN_POOLING_MAX || (int)mode > (int)CUDNN_POOLING_MAX_DETERMINISTIC ||
        (nan != CUDNN_NOT_PROPAGATE_NAN && nan != CUDNN_PROPAGATE_NAN))
        return CUDNN_STATUS_BAD_PARAM;
    *d = cudnnPoolingStruct{true, mode, nan, wh, ww, ph, pw, sh, sw};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnPoolingForward(cudnnHandle_t h, const cudnnPoolingDescriptor_t pd,
                                  const void *alpha, const cudnnTensorDescriptor_t xd,
                                  const void *x, const void *beta, const cudnnTensorDescriptor_t yd,
                                  void *y) {
    Pool q;
    const cudnnStatus_t s = make_pool(pd, xd, yd, &q);
    if (s != CUDNN_STATUS_SUCCESS)
        return s;
    if (!h)
        return CUDNN_STATUS_BAD_PARAM;
    if (!alpha || !beta || !x || !y)
        return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (!kemu::is_device(x, tensor_bytes(q.x)))
        kemu::fault("cudnnPoolingForward: x (%p, %zu bytes) is not device memory", x,
                    tensor_bytes(q.x));
    if (!kemu::is_device(y, tensor_bytes(q.y)))
        kemu::fault("cudnnPoolingForward: y (%p, %zu bytes) is not device memory", y,
                    tensor_bytes(q.y));
    kemu::check_handle("cudnnPoolingForward", h->device, h->stream);
    const float a = *(const float *)alpha, b = *(const float *)beta;
    return kemu::submit(h->stream, [=]() { pool_fwd(q, x, y, a, b); }) == cudaSuccess
               ? CUDNN_STATUS_SUCCESS
               : CUDNN_STATUS_EXECUTION_FAILED;
}

cudnnStatus_t cudnnPoolingBackward(cudnnHandle_t h, const cudnnPoolingDescriptor_t pd,
                                   const void *alpha, const cudnnTensorDescriptor_t yd,
                                   const void *y, const cudnnTensorDescriptor_t dyd, const void *dy,
                                   const cudnnTensorDescriptor_t xd, const void *x,
                                   const void *beta, const cudnnTensorDescriptor_t dxd, void *dx) {
    Pool q;
    cudnnStatus_t s = make_pool(pd, xd, yd, &q);
    if (s != CUDNN_STATUS_SUCCESS)
        return s;
    if (!dyd || !dxd || !dyd->set || !dxd->set)
        return CUDNN_STATUS_BAD_PARAM;
    const auto same = [](const cudnnTensorStruct *a, const cudnnTensorStruct *b) {
        return a->n == b->n && a->c == b->c && a->h == b->h && a->w == b->w && a->dt == b->dt &&
               a->fmt == b->fmt;
    };
    if (!same(dyd, yd) || !same(dxd, xd))
        return CUDNN_STATUS_BAD_PARAM;
    if (!h)
        return CUDNN_STATUS_BAD_PARAM;
    if (!alpha || !beta || !dy || !dx || (is_max(q) && (!x || !y)))
        return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    const size_t xb = tensor_bytes(q.x), yb = tensor_bytes(q.y);
    const void *const p[4] = {y, dy, x, dx};
    const size_t b[4] = {yb, yb, xb, xb};
    static const char *const name[4] = {"y", "dy", "x", "dx"};
    for (int i = 0; i < 4; ++i)
        if ((p[i] || i == 1 || i == 3) && !kemu::is_device(p[i], b[i]))
            kemu::fault("cudnnPoolingBackward: %s (%p, %zu bytes) is not device memory", name[i],
                        p[i], b[i]);
    kemu::check_handle("cudnnPoolingBackward", h->device, h->stream);
    const float a = *(const float *)alpha, bt = *(const float *)beta;
    return kemu::submit(h->stream, [=]() { pool_bwd(q, y, dy, x, dx, a, bt); }) == cudaSuccess
               ? CUDNN_STATUS_SUCCESS
               : CUDNN_STATUS_EXECUTION_FAILED;
}

/* ---- only the benches call these (not built under kemu): present so a link succeeds, refused
 *      as unsupported so a caller that reaches them fails plainly ---- */

#define KEMU_NS return CUDNN_STATUS_NOT_SUPPORTED;
cudnnStatus_t cudnnCreateActivationDescriptor(cudnnActivationDescriptor_t *){KEMU_NS} cudnnStatus_t
    cudnnDestroyActivationDescriptor(cudnnActivationDescriptor_t){KEMU_NS} cudnnStatus_t
    cudnnSetActivationDescriptor(cudnnActivationDescriptor_t, cudnnActivationMode_t,
                                 cudnnNanPropagation_t, double){KEMU_NS} cudnnStatus_t
    cudnnCreateDropoutDescriptor(cudnnDropoutDescriptor_t *){KEMU_NS} cudnnStatus_t
    cudnnDestroyDropoutDescriptor(cudnnDropoutDescriptor_t){KEMU_NS} cudnnStatus_t
    cudnnSetDropoutDescriptor(cudnnDropoutDescriptor_t, cudnnHandle_t, float, void *, size_t,
                              unsigned long long){KEMU_NS} cudnnStatus_t
    cudnnDropoutGetStatesSize(cudnnHandle_t, size_t *){KEMU_NS} cudnnStatus_t
    cudnnDropoutGetReserveSpaceSize(cudnnTensorDescriptor_t, size_t *){KEMU_NS} cudnnStatus_t
    cudnnDropoutForward(cudnnHandle_t, const cudnnDropoutDescriptor_t,
                        const cudnnTensorDescriptor_t, const void *, const cudnnTensorDescriptor_t,
                        void *, void *, size_t){KEMU_NS} cudnnStatus_t
    cudnnDeriveBNTensorDescriptor(cudnnTensorDescriptor_t, const cudnnTensorDescriptor_t,
                                  cudnnBatchNormMode_t){KEMU_NS} cudnnStatus_t
    cudnnBatchNormalizationForwardInference(cudnnHandle_t, cudnnBatchNormMode_t, const void *,
                                            const void *, const cudnnTensorDescriptor_t,
                                            const void *, const cudnnTensorDescriptor_t, void *,
                                            const cudnnTensorDescriptor_t, const void *,
                                            const void *, const void *, const void *,
                                            double){KEMU_NS} cudnnStatus_t
    cudnnBatchNormalizationForwardTraining(cudnnHandle_t, cudnnBatchNormMode_t, const void *,
                                           const void *, const cudnnTensorDescriptor_t,
                                           const void *, const cudnnTensorDescriptor_t, void *,
                                           const cudnnTensorDescriptor_t, const void *,
                                           const void *, double, void *, void *, double, void *,
                                           void *){KEMU_NS} cudnnStatus_t
    cudnnBatchNormalizationForwardTrainingEx(
        cudnnHandle_t, cudnnBatchNormMode_t, cudnnBatchNormOps_t, const void *, const void *,
        const cudnnTensorDescriptor_t, const void *, const cudnnTensorDescriptor_t, const void *,
        const cudnnTensorDescriptor_t, void *, const cudnnTensorDescriptor_t, const void *,
        const void *, double, void *, void *, double, void *, void *, cudnnActivationDescriptor_t,
        void *, size_t, void *, size_t){KEMU_NS} cudnnStatus_t
    cudnnBatchNormalizationBackward(cudnnHandle_t, cudnnBatchNormMode_t, const void *, const void *,
                                    const void *, const void *, const cudnnTensorDescriptor_t,
                                    const void *, const cudnnTensorDescriptor_t, const void *,
                                    const cudnnTensorDescriptor_t, void *,
                                    const cudnnTensorDescriptor_t, const void *, void *, void *,
                                    double, const void *, const void *){KEMU_NS} cudnnStatus_t
    cudnnBatchNormalizationBackwardEx(
        cudnnHandle_t, cudnnBatchNormMode_t, cudnnBatchNormOps_t, const void *, const void *,
        const void *, const void *, const cudnnTensorDescriptor_t, const void *,
        const cudnnTensorDescriptor_t, const void *, const cudnnTensorDescriptor_t, const void *,
        const cudnnTensorDescriptor_t, void *, const cudnnTensorDescriptor_t, void *,
        const cudnnTensorDescriptor_t, const void *, const void *, void *, void *, double,
        const void *, const void *, cudnnActivationDescriptor_t, void *, size_t, void *,
        size_t){KEMU_NS} cudnnStatus_t
    cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(
        cudnnHandle_t, cudnnBatchNormMode_t, cudnnBatchNormOps_t, const cudnnTensorDescriptor_t,
        const cudnnTensorDescriptor_t, const cudnnTensorDescriptor_t, const cudnnTensorDescriptor_t,
        const cudnnActivationDescriptor_t, size_t *){KEMU_NS} cudnnStatus_t
    cudnnGetBatchNormalizationBackwardExWorkspaceSize(
        cudnnHandle_t, cudnnBatchNormMode_t, cudnnBatchNormOps_t, const cudnnTensorDescriptor_t,
        const cudnnTensorDescriptor_t, const cudnnTensorDescriptor_t, const cudnnTensorDescriptor_t,
        const cudnnTensorDescriptor_t, const cudnnTensorDescriptor_t,
        const cudnnActivationDescriptor_t, size_t *){KEMU_NS} cudnnStatus_t
    cudnnGetBatchNormalizationTrainingExReserveSpaceSize(cudnnHandle_t, cudnnBatchNormMode_t,
                                                         cudnnBatchNormOps_t,
                                                         const cudnnActivationDescriptor_t,
                                                         const cudnnTensorDescriptor_t, size_t *) {
    KEMU_NS
}
#undef KEMU_NS

} // extern "C"
