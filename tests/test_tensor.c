/* Tensors on the CPU backend: round trips, layout conversion, fill, queries. */
#include "common.h"

#include <stdlib.h>
#include <string.h>

Test(tensor, round_trip_and_queries) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_tensor *t = NULL;
    CK_OK(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NHWC, 2, 3, 4, 5));
    int n, c, h, w;
    ck_tensor_shape(t, &n, &c, &h, &w);
    cr_assert(n == 2 && c == 3 && h == 4 && w == 5);
    cr_assert_eq(ck_tensor_count(t), 120);
    cr_assert_eq(ck_tensor_layout(t), CK_LAYOUT_NHWC);
    cr_assert_not_null(ck_tensor_data(t));
    float in[120], out[120];
    for (int i = 0; i < 120; ++i)
        in[i] = (float)i * 0.5f - 7.0f;
    CK_OK(ctx, ck_tensor_upload(ctx, t, in, 120));
    CK_OK(ctx, ck_tensor_download(ctx, t, out, 120));
    cr_assert_eq(memcmp(in, out, sizeof in), 0);
    CK_OK(ctx, ck_tensor_fill(ctx, t, -1.25f));
    CK_OK(ctx, ck_tensor_download(ctx, t, out, 120));
    for (int i = 0; i < 120; ++i)
        cr_assert_eq(out[i], -1.25f);
    ck_tensor_destroy(t);
    ck_tensor_destroy(NULL);
    ck_context_destroy(ctx);
}

/* copy between layouts keeps every logical element (n, c, h, w) */
Test(tensor, layout_conversion) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    const int N = 3, C = 5, H = 2, W = 7;
    float x[210], y[210];
    for (int i = 0; i < 210; ++i)
        x[i] = (float)i;
    ck_tensor *a = t_tensor_from_nchw(ctx, CK_LAYOUT_NCHW, N, C, H, W, x);
    ck_tensor *b = t_tensor_from_nchw(ctx, CK_LAYOUT_NHWC, N, C, H, W, NULL);
    CK_OK(ctx, ck_tensor_copy(ctx, a, b));
    float raw[210];
    CK_OK(ctx, ck_tensor_download(ctx, b, raw, 210));
    /* element (n=1, c=2, h=1, w=3) sits at ((1*H + 1)*W + 3)*C + 2 in NHWC */
    cr_assert_eq(raw[((1 * H + 1) * W + 3) * C + 2], x[((1 * C + 2) * H + 1) * W + 3]);
    t_tensor_to_nchw(ctx, b, y);
    cr_assert_eq(memcmp(x, y, sizeof x), 0);
    CK_OK(ctx, ck_tensor_fill(ctx, a, 0.0f));
    CK_OK(ctx, ck_tensor_copy(ctx, b, a));
    t_tensor_to_nchw(ctx, a, y);
    cr_assert_eq(memcmp(x, y, sizeof x), 0);
    ck_tensor_destroy(a);
    ck_tensor_destroy(b);
    ck_context_destroy(ctx);
}

Test(tensor, context_seed_and_workspace) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    cr_assert_eq(ck_context_seed(ctx), 1234);
    CK_OK(ctx, ck_context_set_seed(ctx, 99));
    cr_assert_eq(ck_context_seed(ctx), 99);
    CK_OK(ctx, ck_context_synchronize(ctx));
    CK_OK(ctx, ck_context_set_stream(ctx, NULL));
    ck_workspace *ws = NULL;
    CK_OK(ctx, ck_workspace_create(ctx, &ws, 4096));
    cr_assert_eq(ck_workspace_size(ws), 4096);
    ck_workspace_destroy(ws);
    ck_context_destroy(ctx);
}
