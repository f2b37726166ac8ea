/* Model execution: forward, softmax cross-entropy, backward, optimizer step, inference. */
#include "exec.h"
#include "model_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Runs nodes [0, upto) forward (declared in model_internal.h for measurement code). */
ck_status ck_model_forward_nodes(ck_model *m, const float *x, int batch, int training, int upto) {
    if (m->gpu)
        return ck_fail(m->ctx, CK_STATUS_NOT_SUPPORTED,
                       "model: host-side node outputs are not available for a model on a CUDA "
                       "context");
    const ck_exec e = ck_exec_cpu(m, x);
    return ck_exec_forward(&e, batch, training, upto);
}

/* The executor of a built model on its backend (x: the CPU's batch). */
static ck_exec exec_of(ck_model *m, const float *x) {
    return m->gpu ? ck_exec_cuda(m) : ck_exec_cpu(m, x);
}

static ck_status node_args(ck_model *m, int i, int n, const void *host) {
    if (!m->built)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    if (i < 0 || i >= m->num_nodes)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "i: node %d outside [0, %d)", i, m->num_nodes);
    if (n < 1 || n > m->max_batch)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "n: %d outside [1, max_batch = %d]", n,
                       m->max_batch);
    if (!host)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "host: is NULL");
    if (!m->gpu && !m->nodes[i].out)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                       "i: node %d aliases the model's input, which has no buffer here", i);
    return CK_STATUS_SUCCESS;
}

ck_status ck_model_forward_range(ck_model *m, const float *x, int n, int training, int from,
                                 int upto) {
    CK_TRY(node_args(m, 0, n, x));
    if (from < 0 || from > upto || upto > m->num_nodes)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "from, upto: [%d, %d) is not within [0, %d]",
                       from, upto, m->num_nodes);
    ck_exec e = exec_of(m, x);
    if (m->gpu) {
        CK_TRY(e.be->stage(&e, x, NULL, n));
        if (e.be->begin_step)
            CK_TRY(e.be->begin_step(&e));
    }
    const ck_status st = ck_exec_forward_range(&e, n, training, from, upto);
    if (m->gpu)
        ck_stream_drain(m->ctx);
    return st;
}

ck_status ck_model_node_out(ck_model *m, int i, int n, float *host) {
    CK_TRY(node_args(m, i, n, host));
    if (m->gpu)
        return ck_gpu_node_io(m, i, n, host, 0);
    const ck_node *nd = &m->nodes[i];
    memcpy(host, nd->out, sizeof(float) * n * nd->oh * nd->ow * nd->oc);
    return CK_STATUS_SUCCESS;
}

ck_status ck_model_backward_node(ck_model *m, const float *x, int i, int n, const float *dy,
                                 float *dx) {
    CK_TRY(node_args(m, i, n, dy));
    if (!x)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "x: is NULL");
    const ck_node *nd = &m->nodes[i];
    const size_t cy = (size_t)n * nd->oh * nd->ow * nd->oc,
                 cx = (size_t)n * nd->ih * nd->iw * nd->ic;
    if (m->graph || nd->kind->alias) /* its buffers: the Sequential ping-pong gradients */
        return ck_fail(m->ctx, CK_STATUS_NOT_SUPPORTED,
                       "i: node %d: one node's backward is for the nodes of a Sequential model "
                       "that store an output",
                       i);
    ck_exec e = exec_of(m, x);
    float *gy = e.gbuf[1], *gx = e.gbuf[0];
    if (!m->gpu) {
        memcpy(gy, dy, sizeof(float) * cy);
        CK_TRY(ck_exec_backward_node(&e, n, i, gy, gx));
        if (dx && i > 0)
            memcpy(dx, gx, sizeof(float) * cx);
        return CK_STATUS_SUCCESS;
    }
    if (e.be->begin_step) /* the step packet that keys the dropout masks */
        CK_TRY(e.be->begin_step(&e));
    CK_TRY(ck_gpu_buf_io(m, gy, ck_exec_dy_dt(&e, i), cy, (float *)dy, 1));
    CK_TRY(ck_exec_backward_node(&e, n, i, gy, gx));
    if (dx && i > 0)
        CK_TRY(ck_gpu_buf_io(m, gx, ck_exec_in_dt(&e, i, 0), cx, dx, 0));
    return CK_STATUS_SUCCESS;
}

ck_status ck_model_grads_out(ck_model *m, float *host) {
    if (!m->built)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    if (!host)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "host: is NULL");
    ck_exec e = exec_of(m, NULL);
    if (m->gpu)
        return ck_gpu_buf_io(m, e.grads, CK_KDT_F32, m->num_params, host, 0);
    memcpy(host, e.grads, sizeof(float) * m->num_params);
    return CK_STATUS_SUCCESS;
}

ck_status ck_model_node_out_set(ck_model *m, int i, int n, const float *host) {
    CK_TRY(node_args(m, i, n, host));
    if (m->gpu)
        return ck_gpu_node_io(m, i, n, (float *)host, 1);
    const ck_node *nd = &m->nodes[i];
    memcpy(nd->out, host, sizeof(float) * n * nd->oh * nd->ow * nd->oc);
    return CK_STATUS_SUCCESS;
}

static ck_status check_batch(ck_model *m, const float *x, const int32_t *labels, int n,
                             int need_labels) {
    ck_context *ctx = m->ctx;
    if (!m->built)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    if (!x)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "x: is NULL");
    if (need_labels && !labels)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "labels: is NULL");
    if (n < 1 || n > m->max_batch)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "n: %d samples, must be in [1, max_batch = %d]", n,
                       m->max_batch);
    if (need_labels)
        for (int i = 0; i < n; ++i)
            if (labels[i] < 0 || labels[i] >= m->classes)
                return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                               "labels[%d]: %d is not a class of this model (0..%d)", i,
                               (int)labels[i], m->classes - 1);
    /* A NaN or Inf input is refused up front: a ReLU can hide it from the loss (max(NaN, 0) may
     * be 0) while the first layer's weight gradient still turns non-finite. */
    const size_t count = (size_t)n * m->in_h * m->in_w * m->in_c;
    for (size_t i = 0; i < count; ++i)
        if (!isfinite(x[i]))
            return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                           "x[%zu] (sample %zu): %g is not finite; the model was not changed", i,
                           i / ((size_t)m->in_h * m->in_w * m->in_c), (double)x[i]);
    return CK_STATUS_SUCCESS;
}

ck_status ck_model_loss_and_grads(ck_model *m, const float *x, const int32_t *labels, int n,
                                  double *loss_sum, int *correct) {
    CK_TRY(check_batch(m, x, labels, n, 1));
    ck_exec e = exec_of(m, x);
    return ck_exec_train(&e, x, labels, n, 0, loss_sum, correct, NULL);
}

CK_API ck_status ck_model_set_profiling(ck_model *m, int enable) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    if (enable) {
        memset(m->prof_fwd, 0, sizeof m->prof_fwd);
        memset(m->prof_bwd, 0, sizeof m->prof_bwd);
        m->prof_opt = m->prof_step = 0.0;
        m->prof_steps = 0;
        m->prof_samples = 0.0;
    }
    m->profiling = enable != 0;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_set_cuda_graph(ck_model *m, ck_cuda_graph_mode mode) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    if (mode != CK_CUDA_GRAPH_AUTO && mode != CK_CUDA_GRAPH_OFF)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                       "mode: must be CK_CUDA_GRAPH_AUTO or CK_CUDA_GRAPH_OFF, got %d", (int)mode);
    /* a fresh start: no graph, no failure, no count */
    ck_gpu_model_drop_graphs(m);
    m->cuda_graph_mode = (int)mode;
    m->cuda_graph_failed = 0;
    m->cuda_graph_last = 0;
    m->cuda_graph_captures = m->cuda_graph_replays = 0;
    m->cuda_graph_note[0] = '\0';
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_last_step_time(const ck_model *m, double *host_s, double *step_s) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    if (!host_s || !step_s)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "%s: is NULL", host_s ? "step_s" : "host_s");
    if (!m->timed_steps)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                       "model: no training step has run yet (nothing to time)");
    *host_s = m->last_host_s;
    *step_s = m->last_step_s;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_cuda_graph_info(const ck_model *m, ck_cuda_graph_info *info) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    if (!info)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "info: is NULL");
    memset(info, 0, sizeof *info);
    info->mode = (ck_cuda_graph_mode)m->cuda_graph_mode;
    info->last_step_graph = m->cuda_graph_last;
    info->graphs = ck_gpu_model_graph_count(m);
    info->captures = m->cuda_graph_captures;
    info->replays = m->cuda_graph_replays;
    if (m->ctx->device != CK_DEVICE_CUDA)
        snprintf(info->note, sizeof info->note, "a CPU context: no CUDA graphs");
    else
        snprintf(info->note, sizeof info->note, "%s", m->cuda_graph_note);
    return CK_STATUS_SUCCESS;
}

/* Node r's work at the profiled steps' mean batch and its time at the device's peaks. */
static void roofline_row(const ck_model *m, int r, ck_profile_row *row) {
    const double batch = m->prof_steps ? m->prof_samples / (double)m->prof_steps : 0.0;
    const int cuda = m->ctx->device == CK_DEVICE_CUDA;
    const ck_node_work w =
        ck_node_work_of(m, r, batch, ck_model_stores_bf16(m, cuda ? CK_BE_CUDA : CK_BE_CPU));
    row->forward_flops = w.fwd_flops;
    row->backward_flops = w.bwd_flops;
    row->forward_bytes = w.fwd_bytes;
    row->backward_bytes = w.bwd_bytes;
    const double pf = ck_model_peak_flops(m), pb = cuda ? m->ctx->peak.dram_bytes : 0.0;
    row->roofline_fwd_ms = ck_roofline_ms(w.fwd_flops, w.fwd_bytes, pf, pb);
    row->roofline_bwd_ms = ck_roofline_ms(w.bwd_flops, w.bwd_bytes, pf, pb);
}

CK_API ck_status ck_model_profile(const ck_model *m, ck_profile_row *rows, int cap, int *count,
                                  long long *steps, double *step_ms) {
    CK_MODEL_ENTRY(m);
    ck_context *ctx = m->ctx;
    ck_enter(ctx);
    if (!m->built)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    if (cap < 0)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "cap: %d (must be >= 0)", cap);
    if (cap > 0 && !rows)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "rows: NULL with cap %d", cap);
    const int total = m->num_nodes + 2;
    const double per = m->prof_steps ? 1e3 / (double)m->prof_steps : 0.0;
    double sum = 0.0;
    for (int i = 0; i < m->num_nodes; ++i)
        sum += m->prof_fwd[i] + m->prof_bwd[i];
    for (int r = 0; r < total && r < cap; ++r) {
        ck_profile_row *row = &rows[r];
        memset(row, 0, sizeof *row);
        if (r < m->num_nodes) {
            row->node = r;
            ck_model_plan_describe_node(m, r, row->what, sizeof row->what);
            row->forward_ms = m->prof_fwd[r] * per;
            row->backward_ms = m->prof_bwd[r] * per;
            roofline_row(m, r, row);
        } else if (r == m->num_nodes) {
            row->node = -1;
            snprintf(row->what, sizeof row->what, "optimizer (%s)", ck_optimizer_name(m->opt.type));
            row->forward_ms = m->prof_opt * per;
        } else {
            row->node = -1;
            snprintf(row->what, sizeof row->what, "other (loss, input checks, copies)");
            const double other = m->prof_step - sum - m->prof_opt;
            row->forward_ms = (other > 0.0 ? other : 0.0) * per;
        }
    }
    if (count)
        *count = total;
    if (steps)
        *steps = m->prof_steps;
    if (step_ms)
        *step_ms = m->prof_step * per;
    return CK_STATUS_SUCCESS;
}

int ck_threads_enter(const ck_context *ctx) {
#ifdef _OPENMP
    if (ctx->device == CK_DEVICE_CPU && ctx->cpu_threads > 0) {
        const int old = omp_get_max_threads();
        omp_set_num_threads(ctx->cpu_threads);
        return old;
    }
#else
    (void)ctx;
#endif
    return 0;
}

void ck_threads_leave(int old) {
#ifdef _OPENMP
    if (old > 0)
        omp_set_num_threads(old);
#else
    (void)old;
#endif
}

/* Counts a successful step and reports it. */
static ck_status finish_step(ck_model *m, double loss_sum, int correct, int n,
                             ck_step_result *result) {
    const double t1 = ck_now_s();
    m->last_step_s = t1 - m->step_t0;
    m->last_host_s = (m->step_wait_t > 0.0 ? m->step_wait_t : t1) - m->step_t0;
    m->timed_steps++;
    m->step++;
    m->fit.valid = 0; /* ck_model_fit sets its position again after its own steps */
    if (result) {
        result->loss = loss_sum / n;
        result->correct = correct;
        result->count = n;
    }
    return CK_STATUS_SUCCESS;
}

ck_status ck_model_step_failed(ck_model *m, ck_status st) {
    /* the other ranks wait in the step's collectives: fail them with them (the begin packet
     * says so where it agrees on failures, else the loss packet) */
    ck_exec f = m->gpu ? ck_exec_cuda(m) : ck_exec_cpu(m, NULL);
    ck_kloss own = {0.0, 0, 0};
    int total = 0;
    char why[CK_ERR_LEN];
    snprintf(why, sizeof why, "%s", m->ctx->err);
    ck_status cst = ck_exec_comm_begin(&f, st, 0, &total);
    if (!ck_exec_comm_agrees_at_begin(&f))
        cst = ck_exec_comm_loss(&f, st, 0, &own, &total);
    if (cst != st) /* the collective itself failed: say so, and why this rank failed */
        return ck_fail_after(m->ctx, cst, why);
    return st;
}

/* staged: the batch is on the device already (fit's device-resident data, checked there) */
static ck_status train_step(ck_model *m, const float *x, const int32_t *labels, int n, int staged,
                            ck_step_result *result) {
    ck_enter(m->ctx);
    m->step_t0 = ck_now_s();
    m->step_wait_t = 0.0;
    m->cuda_graph_last = 0; /* a step refused before it runs was no graph replay either */
    double loss_sum = 0.0;
    int correct = 0, count = n; /* data-parallel: the global batch's */
    const double t_step = ck_prof_begin(m);
    if (m->profiling)
        for (int i = 0; i < m->num_nodes; ++i)
            m->prof_cur_fwd[i] = m->prof_cur_bwd[i] = 0.0;
    ck_status st = staged ? CK_STATUS_SUCCESS : check_batch(m, x, labels, n, 1);
    if (st != CK_STATUS_SUCCESS && m->comm)
        return ck_model_step_failed(m, st);
    if (st != CK_STATUS_SUCCESS)
        return st;
    ck_exec e = exec_of(m, x);
    e.staged = staged;
    if (!m->profiling) { /* the update enqueued with the step (CUDA: one wait) */
        CK_TRY(ck_exec_train(&e, x, labels, n, 1, &loss_sum, &correct, &count));
        return finish_step(m, loss_sum, correct, count, result);
    }
    /* profiling: the update timed on its own */
    CK_TRY(ck_exec_train(&e, x, labels, n, 0, &loss_sum, &correct, &count));
    double t_opt = ck_prof_begin(m), opt = 0.0;
    CK_TRY(e.be->update(&e, NULL));
    ck_prof_end(m, t_opt, &opt);
    double step = 0.0; /* a failed step is not counted */
    ck_prof_end(m, t_step, &step);
    for (int i = 0; i < m->num_nodes; ++i) {
        m->prof_fwd[i] += m->prof_cur_fwd[i];
        m->prof_bwd[i] += m->prof_cur_bwd[i];
    }
    m->prof_opt += opt;
    m->prof_step += step;
    m->prof_steps++;
    m->prof_samples += n;
    return finish_step(m, loss_sum, correct, count, result);
}

/* Inference-mode logits of samples [s, s + n) of x (labels checked when given). */
static ck_status infer_batch(ck_model *m, const float *x, const int32_t *labels, int s, int n,
                             const float **logits) {
    const float *xb = x + (size_t)s * m->in_h * m->in_w * m->in_c;
    CK_TRY(check_batch(m, xb, labels ? labels + s : NULL, n, labels != NULL));
    ck_exec e = exec_of(m, xb);
    return ck_exec_infer(&e, xb, n, logits);
}

/* Inputs are checked, weights are finite (set_weights and load refuse others), but a forward
 * pass can still overflow: no NaN/Inf result leaves with a success status. */
static ck_status check_logits(ck_model *m, const float *logits, int s, int n) {
    const size_t k = (size_t)m->classes;
    for (size_t i = 0; i < (size_t)n * k; ++i)
        if (!isfinite(logits[i]))
            return ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                           "model: the output of sample %zu (class %zu) is not finite (%g): the "
                           "forward pass overflowed",
                           (size_t)s + i / k, i % k, (double)logits[i]);
    return CK_STATUS_SUCCESS;
}

static ck_status evaluate(ck_model *m, const float *x, const int32_t *labels, int count,
                          ck_step_result *result) {
    ck_enter(m->ctx);
    if (count < 1 || !x || !labels)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "count, x, labels: need count >= 1 and data");
    double loss = 0.0;
    int correct = 0;
    for (int s = 0; s < count; s += m->max_batch) {
        const int n = count - s < m->max_batch ? count - s : m->max_batch;
        const float *logits;
        ck_status st = infer_batch(m, x, labels, s, n, &logits);
        if (st == CK_STATUS_SUCCESS)
            st = check_logits(m, logits, s, n);
        if (st != CK_STATUS_SUCCESS)
            return st;
        double l = 0.0;
        int c = 0;
        ck_cpu_softmax_xent(n, m->classes, logits, labels + s, NULL, &l, &c);
        loss += l;
        correct += c;
    }
    if (result) {
        result->loss = loss / count;
        result->correct = correct;
        result->count = count;
    }
    return CK_STATUS_SUCCESS;
}

static ck_status predict(ck_model *m, const float *x, int count, float *probs) {
    ck_enter(m->ctx);
    if (count < 1 || !x || !probs)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                       "count, x, probs: need count >= 1, inputs and a buffer");
    for (int s = 0; s < count; s += m->max_batch) {
        const int n = count - s < m->max_batch ? count - s : m->max_batch;
        const float *logits;
        ck_status st = infer_batch(m, x, NULL, s, n, &logits);
        if (st == CK_STATUS_SUCCESS)
            st = check_logits(m, logits, s, n);
        if (st != CK_STATUS_SUCCESS)
            return st;
        /* probabilities: softmax of the logits (what the softmax layer computes) */
        ck_cpu_activation_forward(CK_ACT_SOFTMAX, 0.0f, logits, probs + (size_t)s * m->classes,
                                  (size_t)n * m->classes, m->classes);
    }
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_train_step(ck_model *m, const float *x, const int32_t *labels, int n,
                                     ck_step_result *result) {
    CK_MODEL_ENTRY(m);
    const int t = ck_threads_enter(m->ctx);
    const ck_status st = train_step(m, x, labels, n, 0, result);
    ck_threads_leave(t);
    return st;
}

ck_status ck_model_train_step_staged(ck_model *m, int n, ck_step_result *result) {
    const ck_status st = train_step(m, NULL, NULL, n, 1, result);
    m->staged_steps += st == CK_STATUS_SUCCESS;
    return st;
}

CK_API ck_status ck_model_evaluate(ck_model *m, const float *x, const int32_t *labels, int count,
                                   ck_step_result *result) {
    CK_MODEL_ENTRY(m);
    const int t = ck_threads_enter(m->ctx);
    const ck_status st = evaluate(m, x, labels, count, result);
    ck_threads_leave(t);
    return st;
}

CK_API ck_status ck_model_predict(ck_model *m, const float *x, int count, float *probs) {
    CK_MODEL_ENTRY(m);
    const int t = ck_threads_enter(m->ctx);
    const ck_status st = predict(m, x, count, probs);
    ck_threads_leave(t);
    return st;
}

/* ---- weights in Keras get_weights() order ---------------------------------------------------- */

/* Calls fn(ptr, count) for each weight array in Keras order; returns the total count. */
static size_t for_each_weight(ck_model *m, void (*fn)(void *, float *, size_t), void *u) {
    size_t total = 0;
    for (int li = 0; li < m->num_layers; ++li) {
        ck_param_spec spec[CK_LAYER_MAX_PARAMS];
        size_t off[CK_LAYER_MAX_PARAMS];
        const int n = ck_model_layer_specs(m, li, spec, off);
        for (int k = 0; k < n; ++k)
            if (spec[k].count) {
                if (fn)
                    fn(u, (spec[k].trainable ? m->params : m->fixed) + off[k], spec[k].count);
                total += spec[k].count;
            }
    }
    return total;
}

typedef struct copy_cursor {
    float *host;
    const float *src;
    size_t pos;
} copy_cursor;

static void copy_out(void *u, float *p, size_t n) {
    copy_cursor *c = (copy_cursor *)u;
    memcpy(c->host + c->pos, p, n * sizeof(float));
    c->pos += n;
}

static void copy_in(void *u, float *p, size_t n) {
    copy_cursor *c = (copy_cursor *)u;
    memcpy(p, c->src + c->pos, n * sizeof(float));
    c->pos += n;
}

CK_API ck_status ck_model_get_weights(ck_model *m, float *host, size_t count, size_t *needed) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    if (!m->built)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    size_t total = for_each_weight(m, NULL, NULL);
    if (needed)
        *needed = total;
    if (!host && count == 0)
        return CK_STATUS_SUCCESS;
    if (!host)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "host: is NULL with count %zu", count);
    if (count != total)
        return ck_fail(m->ctx, CK_STATUS_SHAPE_MISMATCH, "count: %zu given, the model has %zu",
                       count, total);
    if (m->gpu)
        CK_TRY(ck_gpu_model_pull(m));
    copy_cursor c = {host, NULL, 0};
    for_each_weight(m, copy_out, &c);
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_model_set_weights(ck_model *m, const float *host, size_t count) {
    CK_MODEL_ENTRY(m);
    ck_enter(m->ctx);
    if (!m->built)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "model: not built (ck_model_build)");
    size_t total = for_each_weight(m, NULL, NULL);
    if (!host)
        return ck_fail(m->ctx, CK_STATUS_BAD_PARAM, "host: is NULL");
    if (count != total)
        return ck_fail(m->ctx, CK_STATUS_SHAPE_MISMATCH, "count: %zu given, the model has %zu",
                       count, total);
    for (size_t i = 0; i < total; ++i)
        if (!isfinite(host[i]))
            return ck_fail(m->ctx, CK_STATUS_BAD_PARAM,
                           "host[%zu]: %g is not finite; no weight was changed", i,
                           (double)host[i]);
    if (m->gpu) /* the optimizer state of record is the device's */
        CK_TRY(ck_gpu_model_pull(m));
    copy_cursor c = {NULL, host, 0};
    for_each_weight(m, copy_in, &c);
    return m->gpu ? ck_gpu_model_push(m) : CK_STATUS_SUCCESS;
}
