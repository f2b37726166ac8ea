/* What the cuDNN / cuBLAS files share: cuda_handles.c (handles, streams, error mapping),
 * cudnn_conv_plan.c (a convolution's descriptors and algorithms), cudnn_conv.c (its workspace,
 * forward and backward), cublas_dense.c and cudnn_pool.c. They are the only files of the library
 * that call cuDNN and cuBLAS (keeping every call here keeps a move to the graph API local).
 * CUDA builds only. Internal, not installed. */
#ifndef CNNKIT_CUDNN_INTERNAL_H
#define CNNKIT_CUDNN_INTERNAL_H

#ifdef CNNKIT_HAVE_CUDA
#include "gpu_layers.h"

#include <cublas_v2.h>
#include <cudnn.h>

/* CK_STATUS_CUDA_ERROR with "<what>: <cuDNN's status text>" / "<what>: cuBLAS status <n>". */
ck_status ck_dnn_fail(ck_context *ctx, cudnnStatus_t st, const char *what);
ck_status ck_blas_fail(ck_context *ctx, cublasStatus_t st, const char *what);

#define DNN_TRY(ctx, call)                                                                         \
    do {                                                                                           \
        cudnnStatus_t s_ = (call);                                                                 \
        if (s_ != CUDNN_STATUS_SUCCESS)                                                            \
            return ck_dnn_fail((ctx), s_, #call);                                                  \
    } while (0)

#define CUDA_TRY(ctx, err, what)                                                                   \
    do {                                                                                           \
        int e_ = (err);                                                                            \
        if (e_ != 0)                                                                               \
            return ck_cuda_fail((ctx), e_, (what));                                                \
    } while (0)

/* ---- Conv2D (cuDNN, NHWC activations, KRSC filters) ------------------------------------------
 * cuDNN runs the convolution in NHWC when it offers algorithms of the context's settings for it
 * (deterministic or fastest by timing, strict FMA or TF32 math); otherwise in NCHW (the
 * fallback: activations and filters are transposed in the workspace). */

struct ck_gconv {
    ck_conv_geom g;   /* n = the largest batch */
    int explicit_pad; /* asymmetric 'same' padding: x is zero-padded into the workspace first */
    int hp, wp;       /* input extent cuDNN sees */
    int nchw;         /* cuDNN runs in NCHW / KCRS (the fallback, or timed faster), else NHWC */
    int dt;           /* cuDNN's data type of x, y, their gradients and the filter (ck_kdt) */
    /* bf16 storage, fp32 cuDNN (wide = 1): the caller's x, y, dx, dy are bf16 words, widened
     * into fp32 copies in the workspace for an fp32 plan, the filter and its gradient rounded to
     * bf16 values, the results rounded back: the same roundings as a bf16 plan (the fallback when
     * cuDNN offers no bf16 algorithm for the shape). why: that refusal, for the logs. */
    int wide;
    char why[200];
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    int algo[3];         /* forward, backward data, backward filter */
    int math[3];         /* cudnnMathType_t of each direction's algorithm */
    float time_ms[3];    /* cudnnFind* time of each (CK_CONV_ALGO_FASTEST), < 0: not timed */
    float layout_ms[2];  /* fastest: the step timed in NHWC and in NCHW, < 0: not measured */
    float transpose_ms;  /* fastest: NCHW's transposes in that step, < 0: not measured */
    int layout_compared; /* fastest: both layouts were planned to compare them */
    int cur_math;        /* the math type the descriptor holds (-1: unknown) */
    size_t algo_bytes;   /* cuDNN workspace: the largest of the three algorithms at the largest n */
    int cur_n;           /* batch the tensor descriptors are set for (0: none, query again) */
    int algo_ready;      /* algorithms chosen (gconv_pick_algos): later batch changes check sizes */
    ck_conv_algo policy; /* the context's settings when planned */
    ck_math mathset;
    int cached;      /* the plan came from the context's cache (no timing this time) */
    ck_context *ctx; /* allocated from (ck_host_calloc): destroy frees through it */
};

enum { CK_FWD = 0, CK_BWD_DATA = 1, CK_BWD_FILTER = 2 };

/* The descriptor's math type, set only when it changes: strict fp32 plans never change it. */
cudnnStatus_t ck_gconv_math(ck_gconv *c, cudnnMathType_t m);
/* Sets the tensor descriptors for batch n (a no-op when they hold it); once the algorithms are
 * chosen, also checks that n fits in the planned workspace. */
ck_status ck_gconv_set_n(ck_context *ctx, ck_gconv *c, int n);
#endif

#endif
