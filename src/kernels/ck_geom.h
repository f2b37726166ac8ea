/* Geometry of a Conv2D or a pooling layer, shared by the host code
 * (src/host/backend/cpu/cpu_layers.h) and the CUDA kernels (ck_kernels.h), which take it by value.
 * Plain C. */
#ifndef CNNKIT_CK_GEOM_H
#define CNNKIT_CK_GEOM_H

/* Pooling: cout = cin, kh x kw = pool size. Filled by ck_conv_geom_make (cpu_layers.h). */
typedef struct ck_conv_geom {
    int n, h, w, cin, cout; /* batch, input height/width, input/output channels */
    int kh, kw, sh, sw;     /* kernel (pool) size and strides */
    int pad_top, pad_left;  /* implicit padding before the first row / column */
    int oh, ow;             /* output height/width */
} ck_conv_geom;

#endif
