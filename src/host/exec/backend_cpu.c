/* The CPU backend of the executor (exec.h): host memory, the loss and the optimizer of
 * cpu_layers.c, a step judged on the host before the update. */
#include "exec.h"

#include <math.h>
#include <string.h>

/* the CPU stores fp32 only (its bf16 twin rounds fp32 values): dt is always CK_KDT_F32 */
static ck_status cpu_copy(ck_context *ctx, void *dst, const void *src, size_t count, int dt) {
    (void)ctx, (void)dt;
    memcpy(dst, src, count * sizeof(float));
    return CK_STATUS_SUCCESS;
}

/* the caller's memory is read where it is */
static ck_status cpu_stage(ck_exec *e, const float *x, const int32_t *labels, int n) {
    (void)n;
    e->x = x;
    e->labels = labels;
    return CK_STATUS_SUCCESS;
}

static ck_status cpu_loss(const ck_exec *e, int n, const float *logits, ck_kloss *out) {
    double ls = 0.0;
    int c = 0;
    ck_cpu_softmax_xent(n, e->m->classes, logits, e->labels, e->logits_grad, &ls, &c);
    out->loss_sum = ls;
    out->correct = c;
    out->nonfinite = 0;
    return CK_STATUS_SUCCESS;
}

/* the first non-finite gradient, named in the step's message */
static ck_status cpu_flag_nonfinite(const ck_exec *e, ck_kloss *out, long long *bad_index) {
    const size_t n = e->m->num_params;
    for (size_t i = 0; i < n; ++i)
        if (!isfinite(e->grads[i])) {
            out->nonfinite = 1;
            *bad_index = (long long)i;
            return CK_STATUS_SUCCESS;
        }
    return CK_STATUS_SUCCESS;
}

/* the step was judged before: no guard */
static ck_status cpu_update(const ck_exec *e, const ck_kloss *guard) {
    (void)guard;
    const ck_model *m = e->m;
    const ck_optimizer_desc *o = &m->opt;
    const long step = (long)m->step + 1;
    size_t off, cnt;
    float wd;
    for (int cur = 0; ck_model_next_update_range(m, &cur, &off, &cnt, &wd);) {
        if (o->type == CK_OPT_ADAM)
            ck_cpu_adam_update(e->params + off, e->grads + off, e->opt_m + off, e->opt_v + off, cnt,
                               o->learning_rate, o->beta1, o->beta2, o->epsilon, wd, step);
        else if (o->type == CK_OPT_ADADELTA)
            ck_cpu_adadelta_update(e->params + off, e->grads + off, e->opt_v + off, e->opt_m + off,
                                   cnt, o->learning_rate, o->rho, o->epsilon, wd);
        else if (o->type == CK_OPT_RMSPROP)
            ck_cpu_rmsprop_update(e->params + off, e->grads + off, e->opt_v + off, e->opt_m + off,
                                  cnt, o->learning_rate, o->rho, o->epsilon, o->momentum,
                                  o->centered, wd);
        else
            ck_cpu_sgd_update(e->params + off, e->grads + off, e->opt_m + off, cnt,
                              o->learning_rate, o->momentum, o->nesterov, wd);
    }
    return CK_STATUS_SUCCESS;
}

static ck_status cpu_read_loss(const ck_exec *e, const ck_kloss *src, ck_kloss *host) {
    (void)e;
    *host = *src;
    return CK_STATUS_SUCCESS;
}

static void cpu_restore(const ck_exec *e) {
    memcpy(e->fixed, e->fixed_backup, sizeof(float) * e->m->num_fixed);
}

static ck_status cpu_add(const ck_exec *e, void *dst, const void *a, const void *b, size_t count,
                         int dt) {
    (void)e, (void)dt;
    float *d = (float *)dst;
    const float *x = (const float *)a, *y = (const float *)b;
    for (size_t i = 0; i < count; ++i)
        d[i] = x[i] + y[i];
    return CK_STATUS_SUCCESS;
}

static ck_status cpu_scale(const ck_exec *e, float *x, size_t count, float s) {
    (void)e;
    for (size_t i = 0; i < count; ++i)
        x[i] *= s;
    return CK_STATUS_SUCCESS;
}

const ck_backend ck_backend_cpu = {
    .id = CK_BE_CPU,
    .name = "cpu",
    .synchronous = 1,
    .copy = cpu_copy,
    .stage = cpu_stage,
    .loss = cpu_loss,
    .flag_nonfinite = cpu_flag_nonfinite,
    .update = cpu_update,
    .read_loss = cpu_read_loss,
    .restore = cpu_restore,
    .add = cpu_add,
    .scale = cpu_scale,
};

ck_exec ck_exec_cpu(ck_model *m, const float *x) {
    ck_exec e;
    memset(&e, 0, sizeof e);
    e.m = m;
    e.ctx = m->ctx;
    e.be = &ck_backend_cpu;
    e.params = m->params;
    e.grads = m->grads;
    e.opt_m = m->opt_m;
    e.opt_v = m->opt_v;
    e.fixed = m->fixed;
    e.fixed_backup = m->fixed_backup;
    e.stats = m->stats;
    e.x = x;
    e.logits_grad = m->logits_grad;
    e.wround = m->wround;
    e.gbuf[0] = m->gbuf[0];
    e.gbuf[1] = m->gbuf[1];
    e.ws = m->ws;
    e.bn_relu_fused = m->relu_in_bn_kernel;
    e.comm = m->comm;
    e.gnode = (char *)m->gnode;
    e.gscratch = (char *)m->gscratch;
    e.gscratch_stride = m->gscratch_stride;
    return e;
}
