/* Rescaling (layer_rescaling.c's node ops, src/kernels/rescale.cu): y = x * scale + offset and
 * dx = dy * scale; iv = {count}, fv = {scale, offset}. The CPU side is the layer's own node op,
 * reached through its kind (lower, then ops[CK_BE_CPU]), the GPU side its CUDA node op.
 * ref_tol 3e-7: the CPU rounds the product and then the sum (Keras's float32 order), each within
 * half an ulp, 2^-24 (|x s| + |y|), against the reference's one rounding of the double result;
 * with |x s| <= 7.5 and max |y| >= ~6 on these data that is below 2e-7 of the output's scale (the
 * gradient rounds once: exact to the reference's float). gpu_tol 0: ck_math.h's ck_rescale_fwd /
 * ck_rescale_bwd on both sides. */
#include "ops.h"

#include <string.h>

#include "exec.h"
#include "layer.h"
#include "model_internal.h"
#include "ref.h"

#define RS(nm, n, s, o, lo, hi)                                                                    \
    {                                                                                              \
        nm, {n}, {s, o}, 2, 2, {{"x", n, OP_UNIFORM, lo, hi}, {"dy", n, OP_UNIFORM, -1, 1}}, {     \
            {"y", n, 0, 0, 0}, {                                                                   \
                "dx", n, 0, 0, 0                                                                   \
            }                                                                                      \
        }                                                                                          \
    }

static const op_variant k_variants[] = {
    RS("scale_offset_60", 60, 2.5f, -1.0f, -3, 3),
    RS("pixels_1_255_odd_257", 257, (float)(1.0 / 255.0), 0.0f, 0, 255),
    RS("negative_grid_stride_70001", 70001, -0.5f, 0.25f, -3, 3),
};
/* a CIFAR-10 batch of 128, 32 x 32 x 3 */
static const op_variant k_bench[] = {
    RS("cifar_b128_1_255", 393216, (float)(1.0 / 255.0), 0.0f, 0, 255)};

/* The layer's node for v (one sample of count values). */
static ck_node rs_node_of(const op_variant *v) {
    ck_layer_desc d;
    ck_layer_desc_init(&d, CK_LAYER_RESCALING);
    d.scale = v->fv[0];
    d.offset = v->fv[1];
    const ck_shape3 s = {1, 1, v->iv[0], 1};
    ck_node nodes[2];
    memset(nodes, 0, sizeof nodes);
    ck_lk_rescaling.lower(&d, &s, &s, NULL, NULL, nodes);
    return nodes[0];
}

static ck_node_io rs_io(const op_variant *v, const float *x, float *y, float *dy, float *dx) {
    ck_node_io io;
    memset(&io, 0, sizeof io);
    io.batch = 1;
    io.training = 1;
    io.in = x;
    io.out = y;
    io.dy = dy;
    io.dx = dx;
    io.count_in = (size_t)v->iv[0];
    return io;
}

static void rs_cpu(const op_variant *v, float *const *in, float *const *out) {
    ck_node n = rs_node_of(v);
    ck_exec e;
    memset(&e, 0, sizeof e);
    const ck_node_io io = rs_io(v, in[0], out[0], in[1], out[1]);
    n.kind->ops[CK_BE_CPU].fwd(&e, &n, &io);
    n.kind->ops[CK_BE_CPU].bwd(&e, &n, &io);
}

static void rs_ref(const op_variant *v, float *const *in, float *const *out) {
    ref_rescale(in[0], in[1], out[0], out[1], (size_t)v->iv[0], v->fv[0], v->fv[1]);
}

#ifdef CNNKIT_HAVE_CUDA
static int rs_gpu(ck_context *g, const op_variant *v, ck_tensor *const *in, ck_tensor *const *out) {
    ck_node n = rs_node_of(v);
    ck_exec e;
    memset(&e, 0, sizeof e);
    e.ctx = g;
    /* what the op asks of its executor: a CUDA backend and an fp32 model (ck_exec_out_dt) */
    static const ck_backend be = {.id = CK_BE_CUDA, .name = "cuda"};
    static ck_model m; /* zero: CK_PRECISION_FP32 */
    e.be = &be;
    e.m = &m;
    const ck_node_io io = rs_io(v, OP_D(in[0]), OP_D(out[0]), OP_D(in[1]), OP_D(out[1]));
    const ck_status st = n.kind->ops[CK_BE_CUDA].fwd(&e, &n, &io);
    return st ? (int)st : (int)n.kind->ops[CK_BE_CUDA].bwd(&e, &n, &io);
}
#else
#define rs_gpu NULL
#endif

const op_case op_rescale = {
    .name = "rescale",
    .launchers = "ck_cuda_rescale",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
    .bench_variants = k_bench,
    .nbench = sizeof k_bench / sizeof k_bench[0],
    .cpu = rs_cpu,
    .ref = rs_ref,
    .ref_tol = 3e-7,
    .gpu = rs_gpu,
    .gpu_tol = 0,
    .grad_y = 0,
    .grad_dy = 1,
    .ngrad = 1,
    .grad = {{0, 1}},
    .grad_tol = 1e-3,
};

/* ---- bf16 storage (x, dy in, y, dx out): the kernel directly (ck_cuda_rescale with the
 * substitutes' storage), bit-exact as the fp32 case: ck_rescale_fwd / _bwd on both sides ---- */

OP_BF16_HOST(rs_cpu_bf16, rs_cpu, 3u, 3u)

OP_BF16_HOST(rs_ref_bf16, rs_ref, 3u, 3u)

#ifdef CNNKIT_HAVE_CUDA
static int rs_kernels(ck_context *g, const op_variant *v, ck_tensor *const *in,
                      ck_tensor *const *out) {
    const size_t n = (size_t)v->iv[0];
    const int dt = in[0]->dtype;
    const int e_ = ck_cuda_rescale(OP_D(in[0]), OP_D(out[0]), n, v->fv[0], v->fv[1], 0, dt,
                                   ck_context_stream(g));
    return e_ ? e_
              : ck_cuda_rescale(OP_D(in[1]), OP_D(out[1]), n, v->fv[0], 0.0f, 1, dt,
                                ck_context_stream(g));
}
OP_BF16_GPU(rs_gpu_bf16, rs_kernels, 3u, 3u)
#endif

const op_case op_rescale_bf16 = {
    .name = "rescale_bf16",
    .launchers = "ck_cuda_rescale ck_cuda_bf16_pack ck_cuda_bf16_unpack",
    .variants = k_variants,
    .nvariants = sizeof k_variants / sizeof k_variants[0],
    .bench_variants = k_bench,
    .nbench = sizeof k_bench / sizeof k_bench[0],
    .cpu = rs_cpu_bf16,
    .ref = rs_ref_bf16,
    .ref_tol = OP_BF16_TOL,
    .gpu = OP_GPU(rs_gpu_bf16),
    .gpu_tol = 0,
    .gpu_setup = OP_BF16_SETUP,
};
