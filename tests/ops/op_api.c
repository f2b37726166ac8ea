/* Running a case through the public API on a context: tensors shaped as the variant says. */
#include "ops.h"

#include <string.h>

ck_tensor *op_tensor(ck_context *ctx, const op_arr *a, const float *host) {
    ck_tensor *t = NULL;
    const ck_status st =
        a->shape[0]
            ? ck_tensor_create(ctx, &t, a->nchw ? CK_LAYOUT_NCHW : CK_LAYOUT_NHWC, a->shape[0],
                               a->shape[1], a->shape[2], a->shape[3])
            : ck_tensor_create(ctx, &t, CK_LAYOUT_NCHW, (int)(a->count ? a->count : 1), 1, 1, 1);
    if (st != CK_STATUS_SUCCESS)
        return NULL;
    if ((host ? ck_tensor_upload(ctx, t, host, a->count) : ck_tensor_fill(ctx, t, 0.0f)) !=
        CK_STATUS_SUCCESS) {
        ck_tensor_destroy(t);
        return NULL;
    }
    return t;
}

int op_run_on(ck_context *ctx, op_gpu_fn run, const op_variant *v, float *const *in,
              float *const *out) {
    ck_tensor *ti[OP_MAX_IO] = {0}, *to[OP_MAX_IO] = {0};
    int e = 0;
    for (int i = 0; i < v->nin && !e; i++)
        e = !(ti[i] = op_tensor(ctx, &v->in[i], in[i]));
    for (int i = 0; i < v->nout && !e; i++)
        e = !(to[i] = op_tensor(ctx, &v->out[i], v->out[i].from ? out[i] : NULL));
    if (!e)
        e = run(ctx, v, ti, to);
    if (!e)
        e = ck_context_synchronize(ctx);
    for (int i = 0; i < v->nout && !e; i++)
        e = ck_tensor_download(ctx, to[i], out[i], v->out[i].count);
    for (int i = 0; i < v->nin; i++)
        ck_tensor_destroy(ti[i]);
    for (int i = 0; i < v->nout; i++)
        ck_tensor_destroy(to[i]);
    return e;
}

int op_run_cpu(op_gpu_fn run, const op_variant *v, float *const *in, float *const *out) {
    ck_context *ctx = NULL;
    if (ck_context_create(&ctx, CK_DEVICE_CPU, 0, OP_SEED) != CK_STATUS_SUCCESS)
        return -1;
    const int e = op_run_on(ctx, run, v, in, out);
    ck_context_destroy(ctx);
    return e;
}
