/* Fused softmax cross-entropy from logits: iv = {n, classes}. Outputs dlogits, the mean loss and
 * the number of correct samples (as floats); dy (1 value, 1) makes the mean loss the gradcheck's
 * pairing, so dlogits is its gradient.
 * ref_tol 1e-6: the CPU runs the row in double (ck_xent_row) and rounds dlogits to float once.
 * gpu_tol 3e-7: the kernel runs the CPU's ck_xent_row, with the device's exp / log (double, an
 * ulp apart at most): a float dlogits may move by an ulp (<= 1.2e-7 of the scale); the batch
 * total is merged in another order (double), which can move the float mean by an ulp. */
#include "ops.h"

#include <string.h>

#include "cpu_layers.h"
#include "ref.h"
#ifdef CNNKIT_HAVE_CUDA
#include "gpu_layers.h"
#endif

#define XENT(nm, n, k)                                                                             \
    {                                                                                              \
        nm, {n, k}, {0}, 3, 3,                                                                     \
            {{"logits", n * k, OP_UNIFORM, -3, 3},                                                 \
             {"labels", n, OP_LABELS, 0, k},                                                       \
             {"dy", 1, 0, 1, 1}},                                                                  \
        {                                                                                          \
            {"dlogits", n * k, 0, 0, 0}, {"loss", 1, 0, 0, 0}, {                                   \
                "correct", 1, 0, 0, 0                                                              \
            }                                                                                      \
        }                                                                                          \
    }

static const op_variant k_variants[] = {XENT("37x10", 37, 10), XENT("1x3", 1, 3),
                                        XENT("8x100", 8, 100)};

static void put(const op_variant *v, float *const *out, double loss, int correct) {
    out[1][0] = (float)(loss / v->iv[0]);
    out[2][0] = (float)correct;
}

static void cpu(const op_variant *v, float *const *in, float *const *out) {
    double loss;
    int ok;
    ck_cpu_softmax_xent(v->iv[0], v->iv[1], in[0], (const int32_t *)in[1], out[0], &loss, &ok);
    put(v, out, loss, ok);
}

static void ref(const op_variant *v, float *const *in, float *const *out) {
    double loss;
    int ok;
    ref_softmax_xent(v->iv[0], v->iv[1], in[0], (const int32_t *)in[1], out[0], &loss, &ok);
    put(v, out, loss, ok);
}

#ifdef CNNKIT_HAVE_CUDA
/* The ck_kloss result comes back to the host and is written out as the CPU's floats. */
static int gpu_run(ck_context *g, const op_variant *v, ck_tensor *const *in,
                   ck_tensor *const *out) {
    const int n = v->iv[0];
    ck_workspace *ws = NULL;
    ck_tensor *t = NULL;
    ck_kloss r;
    int e = ck_workspace_create(g, &ws, ck_cuda_xent_workspace_bytes(n));
    if (!e)
        e = ck_tensor_create(g, &t, CK_LAYOUT_NCHW, (int)(sizeof r / sizeof(float)), 1, 1, 1);
    if (!e)
        e = ck_cuda_softmax_xent(n, v->iv[1], OP_D(in[0]), (const int32_t *)OP_D(in[1]),
                                 OP_D(out[0]), (ck_kloss *)ck_tensor_data(t), ws->data, g->stream);
    if (!e)
        e = ck_context_synchronize(g);
    if (!e)
        e = ck_tensor_download(g, t, (float *)&r, sizeof r / sizeof(float));
    if (!e)
        e = ck_cuda_fill(OP_D(out[1]), 1, (float)(r.loss_sum / n), g->stream);
    if (!e)
        e = ck_cuda_fill(OP_D(out[2]), 1, (float)r.correct, g->stream);
    ck_tensor_destroy(t);
    ck_workspace_destroy(ws);
    return e;
}
#else
#define gpu_run NULL
#endif

static const op_variant k_bench[] = {XENT("65536x10", 65536, 10), XENT("1024x1000", 1024, 1000)};

const op_case op_xent = {
    .name = "xent",
    .launchers = "ck_cuda_softmax_xent ck_cuda_xent_workspace_bytes",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
    .bench_variants = k_bench,
    .nbench = sizeof k_bench / sizeof k_bench[0],
    .cpu = cpu,
    .ref = ref,
    .ref_tol = 1e-6,
    .gpu = gpu_run,
    .gpu_tol = 3e-7,
    .gpu_setup = "workspace, loss download and a sync per call",
    .grad_y = 1,
    .grad_dy = 2,
    .ngrad = 1,
    .grad = {{0, 0}},
    .grad_tol = 1e-3,
    /* the mean loss is a float (~2.3, rounding 1.4e-7) and dlogits ~1/n small: a wider step keeps
     * the rounding noise (1.4e-7 / 2h) well under 1e-3 of dlogits' scale */
    .grad_h = 1e-2f,
};
