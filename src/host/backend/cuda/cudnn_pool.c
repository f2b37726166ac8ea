/* cuDNN pooling (ck_gpool_cudnn of gpu_layers.h): the reference of the pooling kernels. */
#include "internal.h"

#ifdef CNNKIT_HAVE_CUDA
#include "cudnn_internal.h"

/* The legacy convolution and pooling API is marked deprecated in cuDNN 9 (the graph API replaces
 * it); it is used on purpose, in the cuDNN files only (cudnn_internal.h lists them). */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

/* ---- pooling (cuDNN): the reference the pooling kernels of layers.cu are tested and benched
 *      against. cuDNN pads symmetrically, so windows with asymmetric 'same' padding are refused
 *      (the model uses the kernels of layers.cu, which handle them). Max pooling is
 *      CUDNN_POOLING_MAX_DETERMINISTIC; average excludes the padding, as TensorFlow does. ----- */

ck_status ck_gpool_cudnn(ck_context *ctx, const ck_conv_geom *g, int is_max, int backward,
                         const float *x, const float *y, const float *dy, float *out) {
    const int need_h = (g->oh - 1) * g->sh + g->kh, need_w = (g->ow - 1) * g->sw + g->kw;
    if (need_h - g->h - g->pad_top > g->pad_top || need_w - g->w - g->pad_left > g->pad_left)
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                       "pool: asymmetric padding (cuDNN pads both sides alike)");
    cudnnPoolingDescriptor_t pd = NULL;
    cudnnTensorDescriptor_t xd = NULL, yd = NULL;
    cudnnStatus_t s = cudnnCreatePoolingDescriptor(&pd);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnCreateTensorDescriptor(&xd);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnCreateTensorDescriptor(&yd);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnSetPooling2dDescriptor(
            pd,
            is_max ? CUDNN_POOLING_MAX_DETERMINISTIC : CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING,
            CUDNN_NOT_PROPAGATE_NAN, g->kh, g->kw, g->pad_top, g->pad_left, g->sh, g->sw);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, g->n, g->cin, g->h,
                                       g->w);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, g->n, g->cin, g->oh,
                                       g->ow);
    const float one = 1.0f, zero = 0.0f;
    if (s == CUDNN_STATUS_SUCCESS)
        s = backward
                ? cudnnPoolingBackward((cudnnHandle_t)ctx->cudnn, pd, &one, yd, y, yd, dy, xd, x,
                                       &zero, xd, out)
                : cudnnPoolingForward((cudnnHandle_t)ctx->cudnn, pd, &one, xd, x, &zero, yd, out);
    if (pd)
        cudnnDestroyPoolingDescriptor(pd);
    if (xd)
        cudnnDestroyTensorDescriptor(xd);
    if (yd)
        cudnnDestroyTensorDescriptor(yd);
    return s == CUDNN_STATUS_SUCCESS
               ? CK_STATUS_SUCCESS
               : ck_dnn_fail(ctx, s, backward ? "cudnnPoolingBackward" : "cudnnPoolingForward");
}
#else
typedef int ck_cudnn_pool_unused; /* ISO C wants at least one declaration per file */
#endif
