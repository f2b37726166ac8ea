/* Bad input: a status and a message naming the argument, never a crash, and nothing written. */
#include "common.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#include "cnnkit/check.h"
#include "cnnkit/comm.h"
#include "cnnkit/data.h"
#include "cnnkit/study.h"

#define EXPECT_ERR(ctx, expr, status, needle)                                                      \
    do {                                                                                           \
        ck_status st_ = (expr);                                                                    \
        cr_assert_eq(st_, status, "%s -> %s (%s), expected %s", #expr, ck_status_string(st_),      \
                     ck_context_last_error(ctx), ck_status_string(status));                        \
        if (needle)                                                                                \
            cr_assert_neq(strstr(ck_context_last_error(ctx), needle), NULL,                        \
                          "message '%s' does not name '%s'", ck_context_last_error(ctx), needle);  \
    } while (0)

/* A full set of valid BN arguments, to break one at a time. */
typedef struct bn_args {
    ck_context *ctx;
    ck_bn_desc d;
    ck_tensor *x, *y, *g, *b, *rm, *rv, *sm, *si, *dg, *db;
} bn_args;

static bn_args make_args(void) {
    bn_args a;
    a.ctx = t_ctx(CK_DEVICE_CPU);
    ck_bn_desc_init(&a.d, CK_BN_KERAS);
    ck_tensor_create(a.ctx, &a.x, CK_LAYOUT_NCHW, 2, 3, 4, 4);
    ck_tensor_create(a.ctx, &a.y, CK_LAYOUT_NCHW, 2, 3, 4, 4);
    ck_tensor **ps[8] = {&a.g, &a.b, &a.rm, &a.rv, &a.sm, &a.si, &a.dg, &a.db};
    for (int i = 0; i < 8; ++i)
        *ps[i] = t_param(a.ctx, 3, NULL);
    float ones[3] = {1, 1, 1}, x[96];
    for (int i = 0; i < 96; ++i)
        x[i] = (float)(i % 7);
    ck_tensor_upload(a.ctx, a.x, x, 96);
    ck_tensor_upload(a.ctx, a.g, ones, 3);
    ck_tensor_upload(a.ctx, a.b, ones, 3);
    ck_tensor_upload(a.ctx, a.rm, ones, 3);
    ck_tensor_upload(a.ctx, a.rv, ones, 3);
    return a;
}

static void free_args(bn_args *a) {
    ck_tensor *all[] = {a->x, a->y, a->g, a->b, a->rm, a->rv, a->sm, a->si, a->dg, a->db};
    for (size_t i = 0; i < sizeof all / sizeof *all; ++i)
        ck_tensor_destroy(all[i]);
    ck_context_destroy(a->ctx);
}

static ck_status fwd(bn_args *a) {
    return ck_batchnorm_forward_training(a->ctx, &a->d, a->x, a->g, a->b, a->rm, a->rv, a->sm,
                                         a->si, NULL, a->y, NULL);
}

Test(errors, context_and_tensor_creation) {
    /* a failed creation leaves no context: ck_context_last_error(NULL) holds the reason */
    EXPECT_ERR(NULL, ck_context_create(NULL, CK_DEVICE_CPU, 0, 0), CK_STATUS_BAD_PARAM, "ctx:");
    ck_context *ctx = NULL;
    EXPECT_ERR(NULL, ck_context_create(&ctx, (ck_device)9, 0, 0), CK_STATUS_BAD_PARAM,
               "device: must be");
    cr_assert_null(ctx);
    EXPECT_ERR(NULL, ck_context_create(&ctx, CK_DEVICE_CPU, -2, 0), CK_STATUS_BAD_PARAM,
               "cuda_ordinal: must be >= 0, got -2");
    if (!ck_cuda_available()) {
        /* why CUDA is unusable: cudaGetDeviceCount's error, or a CPU-only build */
        EXPECT_ERR(NULL, ck_context_create(&ctx, CK_DEVICE_CUDA, 0, 0), CK_STATUS_NOT_SUPPORTED,
                   "CUDA");
        cr_assert_null(ctx);
        cr_assert(strstr(ck_context_last_error(NULL), "cudaGetDeviceCount") ||
                      strstr(ck_context_last_error(NULL), "no CUDA backend"),
                  "%s", ck_context_last_error(NULL));
        CK_OK(NULL, ck_context_create(&ctx, CK_DEVICE_AUTO, 0, 0));
        cr_assert_eq(ck_context_device(ctx), CK_DEVICE_CPU, "AUTO without a GPU must pick CPU");
        ck_context_destroy(ctx);
    }
    ctx = t_ctx(CK_DEVICE_CPU);
    cr_assert_str_eq(ck_context_last_error(NULL), "ctx is NULL",
                     "a successful creation clears the creation error");
    /* a NULL context or model says so, instead of an older creation error */
    ck_context *none = NULL;
    cr_assert_eq(ck_context_create(&none, (ck_device)9, 0, 0), CK_STATUS_BAD_PARAM);
    ck_tensor *u = NULL;
    EXPECT_ERR(NULL, ck_tensor_create(NULL, &u, CK_LAYOUT_NCHW, 1, 1, 1, 1), CK_STATUS_BAD_PARAM,
               "ctx: is NULL");
    cr_assert_eq(ck_context_create(&none, (ck_device)9, 0, 0), CK_STATUS_BAD_PARAM);
    EXPECT_ERR(NULL, ck_model_build(NULL, 0, 0, 0, 1), CK_STATUS_BAD_PARAM, "model: is NULL");
    ck_tensor *t = (ck_tensor *)0x1;
    EXPECT_ERR(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NCHW, 0, 3, 4, 4), CK_STATUS_BAD_PARAM,
               "shape");
    cr_assert_null(t);
    EXPECT_ERR(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NCHW, 2, -3, 4, 4), CK_STATUS_BAD_PARAM,
               "N=2 C=-3");
    EXPECT_ERR(ctx, ck_tensor_create(ctx, &t, (ck_layout)5, 2, 3, 4, 4), CK_STATUS_BAD_PARAM,
               "layout");
    EXPECT_ERR(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NCHW, 65536, 65536, 2, 1),
               CK_STATUS_OVERFLOW, "2^31");
    EXPECT_ERR(ctx, ck_tensor_create(ctx, NULL, CK_LAYOUT_NCHW, 1, 1, 1, 1), CK_STATUS_BAD_PARAM,
               "t:");
    cr_assert_eq(ck_tensor_create(NULL, &t, CK_LAYOUT_NCHW, 1, 1, 1, 1), CK_STATUS_BAD_PARAM);
    EXPECT_ERR(ctx, ck_context_set_cpu_threads(ctx, -1), CK_STATUS_BAD_PARAM, "threads");
    /* libgomp printed and exited at 50,000, faulted at 100,000 */
    EXPECT_ERR(ctx, ck_context_set_cpu_threads(ctx, 100000), CK_STATUS_BAD_PARAM, "threads");
    CK_OK(ctx, ck_context_set_cpu_threads(ctx, 64));
    CK_OK(ctx, ck_context_set_cpu_threads(ctx, 0));
    /* the host mask: four dimensions whose product wraps to 0 matched count 0 and faulted */
    const ck_dropout_desc dd = {0.5f, 0, 0};
    uint8_t keep[4];
    cr_assert_eq(
        ck_dropout_mask_host(CK_DROPOUT_ELEMENT, 1, &dd, 65536, 65536, 65536, 65536, keep, 0),
        CK_STATUS_OVERFLOW);
    cr_assert_eq(ck_dropout_mask_host(CK_DROPOUT_SPATIAL, 1, &dd, 65536, 65536, 1, 1, keep, 0),
                 CK_STATUS_OVERFLOW);
    cr_assert_eq(ck_dropout_mask_host(CK_DROPOUT_ELEMENT, 1, &dd, 1, 1, 2, 2, keep, 4),
                 CK_STATUS_SUCCESS);
    /* calls without a context name the argument in ck_context_last_error(NULL) */
    EXPECT_ERR(NULL, ck_dropout_mask_host(CK_DROPOUT_ELEMENT, 1, &dd, 1, 1, 2, 2, keep, 3),
               CK_STATUS_SHAPE_MISMATCH, "count: 3, the mask has 4 units");
    EXPECT_ERR(NULL, ck_bn_desc_init(NULL, CK_BN_KERAS), CK_STATUS_BAD_PARAM, "desc: is NULL");
    ck_bn_desc bd;
    EXPECT_ERR(NULL, ck_bn_desc_init(&bd, (ck_bn_convention)7), CK_STATUS_BAD_PARAM,
               "convention: 7");
    ck_layer_desc ld;
    EXPECT_ERR(NULL, ck_layer_desc_init(&ld, (ck_layer_type)999), CK_STATUS_BAD_PARAM, "type: 999");
    int32_t perm[2];
    EXPECT_ERR(NULL, ck_dataset_shuffle(0, 1, 0, perm), CK_STATUS_BAD_PARAM, "count: 0");
    EXPECT_ERR(NULL, ck_dataset_normalize(NULL, 0.5f, 1.0f), CK_STATUS_BAD_PARAM, "ds: is NULL");
    double m, h;
    EXPECT_ERR(NULL, ck_mean_ci95(NULL, 3, &m, &h, NULL), CK_STATUS_BAD_PARAM, "x: is NULL");
    int found = 0;
    EXPECT_ERR(NULL, ck_model_check(&ld, 1, NULL, 4, &found), CK_STATUS_BAD_PARAM, "out: is NULL");
    EXPECT_ERR(ctx, ck_context_set_stream(ctx, (void *)0x10), CK_STATUS_NOT_SUPPORTED, "stream");
    ck_context_destroy(ctx);
}

Test(errors, upload_download) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_tensor *t = NULL;
    CK_OK(ctx, ck_tensor_create(ctx, &t, CK_LAYOUT_NHWC, 1, 2, 2, 2));
    float buf[8] = {0};
    EXPECT_ERR(ctx, ck_tensor_upload(ctx, t, buf, 7), CK_STATUS_SHAPE_MISMATCH, "count");
    EXPECT_ERR(ctx, ck_tensor_upload(ctx, t, NULL, 8), CK_STATUS_BAD_PARAM, "host");
    EXPECT_ERR(ctx, ck_tensor_download(ctx, NULL, buf, 8), CK_STATUS_BAD_PARAM, "t:");
    ck_context *other = t_ctx(CK_DEVICE_CPU);
    EXPECT_ERR(other, ck_tensor_download(other, t, buf, 8), CK_STATUS_DEVICE_MISMATCH, "t:");
    ck_tensor *u = NULL;
    CK_OK(ctx, ck_tensor_create(ctx, &u, CK_LAYOUT_NCHW, 1, 2, 2, 3));
    EXPECT_ERR(ctx, ck_tensor_copy(ctx, t, u), CK_STATUS_SHAPE_MISMATCH, "dst");
    ck_tensor_destroy(u);
    ck_tensor_destroy(t);
    ck_context_destroy(other);
    ck_context_destroy(ctx);
}

Test(errors, dropout_arguments) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_tensor *x = NULL, *y = NULL, *z = NULL, *w = NULL;
    CK_OK(ctx, ck_tensor_create(ctx, &x, CK_LAYOUT_NCHW, 2, 3, 4, 4));
    CK_OK(ctx, ck_tensor_create(ctx, &y, CK_LAYOUT_NCHW, 2, 3, 4, 4));
    CK_OK(ctx, ck_tensor_create(ctx, &z, CK_LAYOUT_NHWC, 2, 3, 4, 4));
    CK_OK(ctx, ck_tensor_create(ctx, &w, CK_LAYOUT_NCHW, 2, 3, 4, 5));
    float ref[96];
    for (int i = 0; i < 96; ++i)
        ref[i] = (float)i;
    CK_OK(ctx, ck_tensor_upload(ctx, y, ref, 96));
    const float bad_rates[4] = {-0.1f, 1.0f, 1.5f, NAN};
    for (int i = 0; i < 4; ++i) {
        ck_dropout_desc d = {bad_rates[i], 0, 0};
        EXPECT_ERR(ctx, ck_spatial_dropout_forward(ctx, &d, CK_MODE_TRAINING, x, y, NULL),
                   CK_STATUS_BAD_PARAM, "desc->rate");
        EXPECT_ERR(ctx, ck_dropout_backward(ctx, &d, CK_MODE_TRAINING, x, y, NULL),
                   CK_STATUS_BAD_PARAM, "desc->rate");
    }
    ck_dropout_desc d = {0.5f, 0, 0};
    EXPECT_ERR(ctx, ck_spatial_dropout_forward(ctx, NULL, CK_MODE_TRAINING, x, y, NULL),
               CK_STATUS_BAD_PARAM, "desc");
    EXPECT_ERR(ctx, ck_spatial_dropout_forward(ctx, &d, (ck_mode)3, x, y, NULL),
               CK_STATUS_BAD_PARAM, "mode");
    EXPECT_ERR(ctx, ck_spatial_dropout_forward(ctx, &d, CK_MODE_TRAINING, NULL, y, NULL),
               CK_STATUS_BAD_PARAM, "x:");
    EXPECT_ERR(ctx, ck_dropout_forward(ctx, &d, CK_MODE_TRAINING, x, z, NULL),
               CK_STATUS_LAYOUT_MISMATCH, "y:");
    EXPECT_ERR(ctx, ck_dropout_forward(ctx, &d, CK_MODE_TRAINING, x, w, NULL),
               CK_STATUS_SHAPE_MISMATCH, "y:");
    EXPECT_ERR(ctx, ck_spatial_dropout_backward(ctx, &d, CK_MODE_TRAINING, x, w, NULL),
               CK_STATUS_SHAPE_MISMATCH, "dx:");
    ck_mask *m = NULL;
    CK_OK(ctx, ck_mask_create(ctx, &m, CK_DROPOUT_ELEMENT, 2, 3, 4, 4));
    EXPECT_ERR(ctx, ck_spatial_dropout_forward(ctx, &d, CK_MODE_TRAINING, x, y, m),
               CK_STATUS_BAD_PARAM, "mask_out");
    ck_mask_destroy(m);
    CK_OK(ctx, ck_mask_create(ctx, &m, CK_DROPOUT_SPATIAL, 2, 4, 1, 1));
    EXPECT_ERR(ctx, ck_spatial_dropout_backward(ctx, &d, CK_MODE_TRAINING, x, y, m),
               CK_STATUS_SHAPE_MISMATCH, "mask_in");
    ck_mask_destroy(m);
    EXPECT_ERR(ctx, ck_mask_create(ctx, &m, (ck_dropout_kind)4, 1, 1, 1, 1), CK_STATUS_BAD_PARAM,
               "kind");
    /* nothing was written to y by any failed call */
    float got[96];
    CK_OK(ctx, ck_tensor_download(ctx, y, got, 96));
    cr_assert_eq(memcmp(got, ref, sizeof ref), 0, "a failed call changed y");
    uint8_t keep[6];
    cr_assert_eq(ck_dropout_mask_host(CK_DROPOUT_SPATIAL, 0, &d, 2, 3, 4, 4, keep, 5),
                 CK_STATUS_SHAPE_MISMATCH);
    cr_assert_eq(ck_dropout_mask_host(CK_DROPOUT_SPATIAL, 0, NULL, 2, 3, 4, 4, keep, 6),
                 CK_STATUS_BAD_PARAM);
    ck_tensor_destroy(x);
    ck_tensor_destroy(y);
    ck_tensor_destroy(z);
    ck_tensor_destroy(w);
    ck_context_destroy(ctx);
}

Test(errors, batchnorm_arguments) {
    bn_args a = make_args();
    CK_OK(a.ctx, fwd(&a)); /* the valid set works */
    float rm_before[3];
    t_param_get(a.ctx, a.rm, rm_before);

    ck_tensor *wrong = t_param(a.ctx, 4, NULL);
    ck_tensor *save = a.g;
    a.g = wrong;
    EXPECT_ERR(a.ctx, fwd(&a), CK_STATUS_SHAPE_MISMATCH, "gamma");
    a.g = save;
    save = a.rv;
    a.rv = wrong;
    EXPECT_ERR(a.ctx, fwd(&a), CK_STATUS_SHAPE_MISMATCH, "running_var");
    a.rv = save;
    ck_tensor_destroy(wrong);
    ck_tensor *flat = NULL;
    CK_OK(a.ctx, ck_tensor_create(a.ctx, &flat, CK_LAYOUT_NCHW, 3, 1, 1, 1));
    save = a.b;
    a.b = flat;
    EXPECT_ERR(a.ctx, fwd(&a), CK_STATUS_SHAPE_MISMATCH, "beta");
    a.b = save;
    ck_tensor_destroy(flat);
    save = a.sm;
    a.sm = NULL;
    EXPECT_ERR(a.ctx, fwd(&a), CK_STATUS_BAD_PARAM, "saved_mean");
    a.sm = save;

    a.d.epsilon = 0.0f;
    EXPECT_ERR(a.ctx, fwd(&a), CK_STATUS_BAD_PARAM, "epsilon");
    a.d.epsilon = NAN;
    EXPECT_ERR(a.ctx, fwd(&a), CK_STATUS_BAD_PARAM, "epsilon");
    a.d.epsilon = 1e-3f;
    a.d.average_factor = 1.5f;
    EXPECT_ERR(a.ctx, fwd(&a), CK_STATUS_BAD_PARAM, "average_factor");
    a.d.average_factor = 0.01f;
    a.d.activation = (ck_activation)9;
    EXPECT_ERR(a.ctx, fwd(&a), CK_STATUS_BAD_PARAM, "activation");
    a.d.activation = CK_ACT_RELU;
    EXPECT_ERR(a.ctx,
               ck_batchnorm_forward_training(a.ctx, NULL, a.x, a.g, a.b, a.rm, a.rv, a.sm, a.si,
                                             NULL, a.y, NULL),
               CK_STATUS_BAD_PARAM, "desc");
    ck_dropout_desc bad = {1.0f, 0, 0};
    EXPECT_ERR(a.ctx,
               ck_batchnorm_forward_training(a.ctx, &a.d, a.x, a.g, a.b, a.rm, a.rv, a.sm, a.si,
                                             &bad, a.y, NULL),
               CK_STATUS_BAD_PARAM, "spatial_dropout->rate");
    ck_tensor *yn = NULL;
    CK_OK(a.ctx, ck_tensor_create(a.ctx, &yn, CK_LAYOUT_NHWC, 2, 3, 4, 4));
    EXPECT_ERR(a.ctx,
               ck_batchnorm_forward_training(a.ctx, &a.d, a.x, a.g, a.b, a.rm, a.rv, a.sm, a.si,
                                             NULL, yn, NULL),
               CK_STATUS_LAYOUT_MISMATCH, "y:");
    EXPECT_ERR(a.ctx,
               ck_batchnorm_backward(a.ctx, &a.d, a.x, a.y, a.g, a.b, a.sm, a.si, NULL, yn, a.dg,
                                     a.db, NULL),
               CK_STATUS_LAYOUT_MISMATCH, "dx:");
    EXPECT_ERR(a.ctx, ck_batchnorm_forward_inference(a.ctx, &a.d, a.x, a.g, a.b, a.rm, NULL, a.y),
               CK_STATUS_BAD_PARAM, "running_var");
    ck_tensor_destroy(yn);

    /* a tensor of another context */
    ck_context *other = t_ctx(CK_DEVICE_CPU);
    ck_tensor *ox = NULL;
    CK_OK(other, ck_tensor_create(other, &ox, CK_LAYOUT_NCHW, 2, 3, 4, 4));
    save = a.x;
    a.x = ox;
    EXPECT_ERR(a.ctx, fwd(&a), CK_STATUS_DEVICE_MISMATCH, "x:");
    a.x = save;
    ck_tensor_destroy(ox);
    ck_context_destroy(other);

    /* none of the failed calls touched the running statistics */
    float rm_after[3];
    t_param_get(a.ctx, a.rm, rm_after);
    cr_assert_eq(memcmp(rm_before, rm_after, sizeof rm_after), 0, "a failed call changed state");
    size_t bytes = 1;
    CK_OK(a.ctx, ck_batchnorm_workspace_size(a.ctx, a.x, &bytes));
    cr_assert_eq(bytes, 0, "the CPU path needs no workspace");
    EXPECT_ERR(a.ctx, ck_batchnorm_workspace_size(a.ctx, a.x, NULL), CK_STATUS_BAD_PARAM, "bytes");
    free_args(&a);
}

/* The creation error belongs to the thread whose creation failed. */
static void *fail_create_on_thread(void *arg) {
    ck_context *c = NULL;
    (void)ck_context_create(&c, (ck_device)7, 0, 0);
    *(int *)arg = strstr(ck_context_last_error(NULL), "device: must be") != NULL;
    return NULL;
}

Test(errors, creation_error_is_per_thread) {
    EXPECT_ERR(NULL, ck_context_create(NULL, CK_DEVICE_CPU, 0, 0), CK_STATUS_BAD_PARAM, "ctx:");
    int seen = 0;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, fail_create_on_thread, &seen), 0);
    cr_assert_eq(pthread_join(th, NULL), 0);
    cr_assert(seen, "the other thread did not see its own creation error");
    cr_assert_neq(strstr(ck_context_last_error(NULL), "ctx:"), NULL,
                  "this thread's creation error was changed by another thread: %s",
                  ck_context_last_error(NULL));
}

/* The one line of versions for logs: filled without a context or a device, never overflowing. */
Test(errors, cuda_describe) {
    char line[640];
    const ck_status st = ck_cuda_describe(0, line, sizeof line);
    cr_assert(st == CK_STATUS_SUCCESS || st == CK_STATUS_NOT_SUPPORTED, "%s", ck_status_string(st));
    cr_assert_eq(st == CK_STATUS_SUCCESS, ck_cuda_available() != 0, "%s", line);
#ifdef CNNKIT_HAVE_CUDA
    cr_assert_neq(strstr(line, "cuDNN "), NULL, "%s", line);
    cr_assert_neq(strstr(line, "CUDA runtime "), NULL, "%s", line);
    cr_assert_neq(strstr(line, "device 0"), NULL, "%s", line);
#else
    cr_assert_neq(strstr(line, "without the CUDA backend"), NULL, "%s", line);
#endif
    char small[12];
    memset(small, 'x', sizeof small);
    (void)ck_cuda_describe(0, small, 8);
    cr_assert_lt(strlen(small), 8);
    cr_assert_eq(small[8], 'x', "wrote past len");
    cr_assert_eq(ck_cuda_describe(0, NULL, 8), CK_STATUS_BAD_PARAM);
    cr_assert_str_eq(ck_context_last_error(NULL), "buf: is NULL");
    cr_assert_eq(ck_cuda_describe(0, line, 0), CK_STATUS_BAD_PARAM);
    cr_assert_str_eq(ck_context_last_error(NULL), "len: is 0");
}

/* Calls without a context leave a fresh message naming the argument in
 * ck_context_last_error(NULL), never the previous call's (the C API audit found the checker, the
 * equivalence test and ck_comm_set_timeout returning BAD_PARAM with an old message there). */
static void stale(void) {
    cr_assert_eq(ck_layer_desc_init(NULL, CK_LAYER_DENSE), CK_STATUS_BAD_PARAM);
    cr_assert_str_eq(ck_context_last_error(NULL), "desc: is NULL");
}

Test(errors, calls_without_a_context_say_why) {
    ck_layer_desc L[2];
    ck_layer_desc_init(&L[0], CK_LAYER_DENSE);
    L[0].units = 3;
    ck_layer_desc_init(&L[1], CK_LAYER_DENSE);
    L[1].units = 2;
    ck_finding f;
    int nf;
    const struct {
        int count, h, w, c, null_out;
        const char *says;
    } cases[] = {{2, 0, 0, 0, 0, "h, w, c: are 0 and the first layer has no input_shape"},
                 {2, -1, 4, 1, 0, "h, w, c: -1x4x1 is neither a shape"},
                 {2, 4, 0, 1, 0, "h, w, c: 4x0x1 is neither a shape"},
                 {0, 4, 4, 1, 0, "count: must be >= 1, got 0"},
                 {2, 4, 4, 1, 1, "out: is NULL"}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; ++k) {
        stale();
        cr_assert_eq(ck_model_check_shapes(L, cases[k].count, cases[k].h, cases[k].w, cases[k].c,
                                           cases[k].null_out ? NULL : &f, &nf),
                     CK_STATUS_BAD_PARAM);
        cr_assert_neq(strstr(ck_context_last_error(NULL), cases[k].says), NULL, "case %zu: %s", k,
                      ck_context_last_error(NULL));
    }
    stale();
    cr_assert_eq(ck_model_check_shapes(NULL, 2, 4, 4, 1, &f, &nf), CK_STATUS_BAD_PARAM);
    cr_assert_str_eq(ck_context_last_error(NULL), "layers: is NULL");
    stale();
    CK_OK(NULL, ck_model_check_shapes(L, 2, 4, 4, 1, &f, &nf));
    stale();
    int eq;
    char why[128] = "untouched";
    cr_assert_eq(ck_study_equivalent(NULL, 2, L, 2, &eq, why, sizeof why), CK_STATUS_BAD_PARAM);
    cr_assert_str_eq(ck_context_last_error(NULL), "a: is NULL");
    cr_assert_str_eq(why, "a: is NULL");
    cr_assert_eq(ck_study_equivalent(L, 2, L, 2, NULL, why, sizeof why), CK_STATUS_BAD_PARAM);
    cr_assert_str_eq(ck_context_last_error(NULL), "equal: is NULL");
    cr_assert_eq(ck_study_equivalent(L, 2, L, 0, &eq, why, sizeof why), CK_STATUS_BAD_PARAM);
    cr_assert_str_eq(ck_context_last_error(NULL), "nb: must be >= 1, got 0");
    cr_assert_eq(ck_comm_set_timeout(NULL, 1.0), CK_STATUS_BAD_PARAM);
    cr_assert_str_eq(ck_context_last_error(NULL), "comm: is NULL");
}

Test(errors, workspace_too_small_on_gpu) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_tensor *x = NULL;
    CK_OK(g, ck_tensor_create(g, &x, CK_LAYOUT_NCHW, 8, 16, 8, 8));
    size_t need = 0;
    CK_OK(g, ck_batchnorm_workspace_size(g, x, &need));
    cr_assert_gt(need, 0);
    ck_workspace *ws = NULL;
    CK_OK(g, ck_workspace_create(g, &ws, need - 1));
    ck_tensor *p[6];
    for (int i = 0; i < 6; ++i)
        p[i] = t_param(g, 16, NULL);
    ck_bn_desc d;
    ck_bn_desc_init(&d, CK_BN_KERAS);
    EXPECT_ERR(
        g, ck_batchnorm_forward_training(g, &d, x, p[0], p[1], p[2], p[3], p[4], p[5], NULL, x, ws),
        CK_STATUS_WORKSPACE_TOO_SMALL, "ws:");
    EXPECT_ERR(
        g,
        ck_batchnorm_forward_training(g, &d, x, p[0], p[1], p[2], p[3], p[4], p[5], NULL, x, NULL),
        CK_STATUS_WORKSPACE_TOO_SMALL, "ws:");
    for (int i = 0; i < 6; ++i)
        ck_tensor_destroy(p[i]);
    ck_workspace_destroy(ws);
    ck_tensor_destroy(x);
    ck_context_destroy(g);
}

Test(errors, status_strings_and_version) {
    for (int s = 0; s <= CK_STATUS_INTERNAL; ++s) {
        const char *m = ck_status_string((ck_status)s);
        cr_assert_not_null(m);
        cr_assert_neq(strcmp(m, "unknown status"), 0, "status %d has no string", s);
    }
    cr_assert_str_eq(ck_status_string((ck_status)99), "unknown status");
    cr_assert_eq(ck_version(), CNNKIT_VERSION);
    cr_assert_str_eq(ck_context_last_error(NULL), "ctx is NULL");
}
