/* The model's named memory table (memtab.h). */
#include "memtab.h"

#include "exec.h"

#include <string.h>

#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"
#endif

static const char *const names[CK_MEM_COUNT] = {
    "params", "grads", "opt_m", "opt_v", "fixed",       "fixed_backup",
    "stats",  "acts",  "gbuf0", "gbuf1", "logits_grad", "x",
    "labels", "loss",  "ws",    "gnode", "gscratch"};

const char *ck_mem_name(ck_mem_id k) {
    return k >= 0 && k < CK_MEM_COUNT ? names[k] : "?";
}

static size_t round_up(size_t b, size_t a) {
    return (b + a - 1) / a * a;
}

static void place(ck_memtab *t) {
    t->total = 0;
    for (int k = 0; k < CK_MEM_COUNT; ++k) {
        t->off[k] = t->total;
        t->total += round_up(t->bytes[k], t->align);
    }
}

static size_t at_least(size_t b, size_t min) {
    return b > min ? b : min;
}

void ck_memtab_plan(ck_model *m, int be, void *const *state, ck_memtab *t) {
    const size_t B = (size_t)m->max_batch, F4 = sizeof(float);
    /* the device wants every part and activation on a 256-byte boundary (cuDNN, the float4
     * paths of the kernels); the host packs them */
    const size_t align = be == CK_BE_CUDA ? 256 : F4;
    size_t nact = 0, maxact = (size_t)m->in_h * m->in_w * m->in_c, ws = 0, ngrad = 0;
    for (int i = 0; i < m->num_nodes; ++i) {
        ck_node *n = &m->nodes[i];
        const size_t o = (size_t)n->oh * n->ow * n->oc;
        n->act_offset = nact;
        if (!n->kind->alias)
            nact += round_up(F4 * o * B, align);
        /* an aliasing node too: its gradient is passed on by a copy (or an add) */
        n->g_offset = ngrad;
        if (m->graph)
            ngrad += round_up(F4 * o * B, align);
        if (o > maxact)
            maxact = o;
        const ck_node_ops *op = &n->kind->ops[be];
        if (op->ws_bytes) {
            const size_t need = op->ws_bytes(m->ctx, n, m->max_batch, state ? state[i] : NULL);
            if (need > ws)
                ws = need;
        }
    }
    memset(t, 0, sizeof *t);
    t->align = align;
    t->bytes[CK_MEM_PARAMS] = t->bytes[CK_MEM_GRADS] = t->bytes[CK_MEM_OPT_M] =
        t->bytes[CK_MEM_OPT_V] = F4 * at_least(m->num_params, 1);
    t->bytes[CK_MEM_FIXED] = t->bytes[CK_MEM_FIXED_BACKUP] = F4 * at_least(m->num_fixed, 1);
    t->bytes[CK_MEM_STATS] = F4 * at_least(m->num_stats, 1);
    t->bytes[CK_MEM_ACTS] = at_least(nact, F4);
    t->bytes[CK_MEM_GBUF0] = t->bytes[CK_MEM_GBUF1] = F4 * at_least(maxact * B, 1);
    t->bytes[CK_MEM_LOGITS_GRAD] = F4 * (size_t)m->classes * B;
    if (be == CK_BE_CUDA) {
#ifdef CNNKIT_HAVE_CUDA
        const size_t xent = ck_cuda_xent_workspace_bytes(m->max_batch);
        if (xent > ws)
            ws = xent;
        t->bytes[CK_MEM_LOSS] = sizeof(ck_kloss);
#endif
        t->bytes[CK_MEM_X] = F4 * (size_t)m->in_h * m->in_w * m->in_c * B;
        t->bytes[CK_MEM_LABELS] = sizeof(int32_t) * B;
        t->bytes[CK_MEM_WS] = ws;
    } else {
        t->bytes[CK_MEM_WS] = round_up(at_least(ws, F4), F4);
        /* bf16: the batch rounded to bf16, which node 0 reads forward and backward */
        if (m->precision == CK_PRECISION_BF16)
            t->bytes[CK_MEM_X] = F4 * (size_t)m->in_h * m->in_w * m->in_c * B;
    }
    if (m->graph) {
        t->bytes[CK_MEM_GNODE] = ngrad;
        t->gscratch_stride = round_up(F4 * maxact * B, align);
        t->bytes[CK_MEM_GSCRATCH] = CK_MAX_LAYER_INPUTS * t->gscratch_stride;
    }
    place(t);
}

void ck_memtab_shrink(ck_memtab *t, ck_mem_id k) {
    t->bytes[k] = sizeof(float);
    place(t);
}
