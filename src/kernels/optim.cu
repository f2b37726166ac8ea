/*
 * Optimizer updates (Adam, SGD, RMSprop, Adadelta) and the non-finite gradient flag.
 *
 * One family of the model's small GPU kernels (launchers declared in ck_kernels.h). Every kernel
 * writes each output element from one thread in a fixed order: no atomics (but the non-finite
 * flag's store of 1), so results are bit-identical run to run; per-element math comes from
 * ck_math.h, shared with the CPU ops.
 */
#include "common.cuh"

/* ---- optimizers ------------------------------------------------------------------------------ */

/* A failed step (non-finite gradients or loss, see ck_kernels.h) updates nothing. */
__device__ __forceinline__ bool ck_step_failed(const ck_kloss *guard) {
    return guard && (guard->nonfinite || !isfinite(guard->loss_sum));
}

__global__ void k_adam(float *p, const float *g, float *m, float *v, long long count, float alpha,
                       const ck_kstep *step, float b1, float b2, float c1, float c2, float eps,
                       float decay, const ck_kloss *guard) {
    if (ck_step_failed(guard))
        return;
    if (step)
        alpha = step->adam_alpha;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x) {
        float mi = m[i], vi = v[i];
        p[i] = ck_adam_elem(p[i], g[i], &mi, &vi, alpha, b1, b2, c1, c2, eps, decay);
        m[i] = mi;
        v[i] = vi;
    }
}

__global__ void k_sgd(float *p, const float *g, float *vel, long long count, float lr,
                      float momentum, int nesterov, float decay, const ck_kloss *guard) {
    if (ck_step_failed(guard))
        return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x) {
        if (vel) {
            float vi = vel[i];
            p[i] = ck_sgd_elem(p[i], g[i], &vi, lr, momentum, nesterov, decay);
            vel[i] = vi;
        } else {
            p[i] = ck_sgd_elem(p[i], g[i], NULL, lr, momentum, nesterov, decay);
        }
    }
}

__global__ void k_rmsprop(float *p, const float *g, float *vel, float *aux, long long count,
                          float lr, float rho, float crho, float eps, float momentum, int centered,
                          float decay, const ck_kloss *guard) {
    if (ck_step_failed(guard))
        return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x) {
        float vi = vel[i], ai = aux ? aux[i] : 0.0f;
        p[i] = ck_rmsprop_elem(p[i], g[i], &vi, &ai, lr, rho, crho, eps, momentum, centered, decay);
        vel[i] = vi;
        if (aux)
            aux[i] = ai;
    }
}

__global__ void k_adadelta(float *p, const float *g, float *ag, float *ad, long long count,
                           float lr, float rho, float crho, float eps, float decay,
                           const ck_kloss *guard) {
    if (ck_step_failed(guard))
        return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x) {
        float a = ag[i], d = ad[i];
        p[i] = ck_adadelta_elem(p[i], g[i], &a, &d, lr, rho, crho, eps, decay);
        ag[i] = a;
        ad[i] = d;
    }
}

extern "C" int ck_cuda_adam(float *p, const float *g, float *m, float *v, size_t count, float alpha,
                            const ck_kstep *step, float beta1, float beta2, float eps, float decay,
                            const ck_kloss *guard, void *stream) {
    k_adam<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        p, g, m, v, (long long)count, alpha, step, beta1, beta2, 1.0f - beta1, 1.0f - beta2, eps,
        decay, guard);
    return ck_launch_status();
}

extern "C" int ck_cuda_sgd(float *p, const float *g, float *vel, size_t count, float lr,
                           float momentum, int nesterov, float decay, const ck_kloss *guard,
                           void *stream) {
    k_sgd<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        p, g, vel, (long long)count, lr, momentum, nesterov, decay, guard);
    return ck_launch_status();
}

extern "C" int ck_cuda_rmsprop(float *p, const float *g, float *vel, float *aux, size_t count,
                               float lr, float rho, float eps, float momentum, int centered,
                               float decay, const ck_kloss *guard, void *stream) {
    k_rmsprop<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        p, g, vel, aux, (long long)count, lr, rho, 1.0f - rho, eps, momentum, centered, decay,
        guard);
    return ck_launch_status();
}

extern "C" int ck_cuda_adadelta(float *p, const float *g, float *ag, float *ad, size_t count,
                                float lr, float rho, float eps, float decay, const ck_kloss *guard,
                                void *stream) {
    k_adadelta<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0, (cudaStream_t)stream>>>(
        p, g, ag, ad, (long long)count, lr, rho, 1.0f - rho, eps, decay, guard);
    return ck_launch_status();
}

__global__ void k_flag_nonfinite(const float *p, long long count, int *flag) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x)
        if (!isfinite(p[i]))
            atomicExch(flag, 1); /* many threads may store it: an atomic, not a data race */
}

extern "C" int ck_cuda_flag_nonfinite(const float *p, size_t count, int *flag, void *stream) {
    if (count == 0)
        return 0;
    k_flag_nonfinite<<<ck_grid_for((long long)count, CK_BLOCK), CK_BLOCK, 0,
                       (cudaStream_t)stream>>>(p, (long long)count, flag);
    return ck_launch_status();
}

/* ---- the step packet (ck_kstep): the step's values arrive as launch arguments, copied when the
 * launch is enqueued, so no host buffer has to outlive the call ------------------------------- */

__global__ void k_step_set(ck_kstep *dev, long long step, float adam_alpha) {
    dev->step = step;
    dev->adam_alpha = adam_alpha;
    dev->pad = 0;
}

extern "C" int ck_cuda_step_set(ck_kstep *dev, long long step, float adam_alpha, void *stream) {
    k_step_set<<<1, 1, 0, (cudaStream_t)stream>>>(dev, step, adam_alpha);
    return ck_launch_status();
}
