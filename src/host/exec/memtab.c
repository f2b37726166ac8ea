/* The model's named memory table (memtab.h). */
#include "memtab.h"

#include "exec.h"

#include <string.h>

#ifdef CNNKIT_HAVE_CUDA
#include "ck_kernels.h"
#endif

static const char *const names[CK_MEM_COUNT] = {
    "params", "grads", "opt_m", "opt_v",       "fixed", "fixed_backup", "stats",
    "acts",   "gbuf0", "gbuf1", "logits_grad", "x",     "labels",       "loss",
    "step",   "ws",    "gnode", "gscratch",    "xbf",   "dlogits_bf",   "wround"};

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

/* The slot a buffer of need bytes goes to: of the free ones (free[s]), the smallest that fits,
 * else the largest, grown (the fewest bytes added); a new one when none is free. */
static int take_slot(size_t *slot_size, const unsigned char *free, int *nslots, size_t need) {
    int best = -1;
    for (int s = 0; s < *nslots; ++s) {
        if (!free[s])
            continue;
        const int fits = slot_size[s] >= need, best_fits = best >= 0 && slot_size[best] >= need;
        if (best < 0 || (fits && (!best_fits || slot_size[s] < slot_size[best])) ||
            (!fits && !best_fits && slot_size[s] > slot_size[best]))
            best = s;
    }
    if (best < 0) {
        best = (*nslots)++;
        slot_size[best] = 0;
    }
    if (slot_size[best] < need)
        slot_size[best] = need;
    return best;
}

/* Bytes per element of node j's output, and of its gradient, on backend be: a CUDA bf16 model
 * stores the outputs before the logits and their gradients as bf16 words (ck_exec_out_dt),
 * everything else fp32. */
static size_t act_elem_bytes(const ck_model *m, int be, int j) {
    return ck_kdt_bytes(ck_node_out_dt(m, ck_model_stores_bf16(m, be), j), 1);
}

/* A graph model's gradient buffers, placed by liveness: node j's gradient is written when its
 * last reader (highest index) runs backward and read when j itself runs, so buffers whose
 * index intervals do not overlap share memory. Returns the bytes of all buffers. */
static size_t plan_node_grads(ck_model *m, int be, size_t B, size_t align) {
    enum { NONE = -1 };
    int last_reader[CK_MAX_OPS];
    for (int j = 0; j < m->num_nodes; ++j)
        last_reader[j] = NONE;
    for (int i = 0; i < m->num_nodes; ++i)
        for (int k = 0; k < m->nodes[i].nin; ++k)
            if (m->nodes[i].in[k] >= 0)
                last_reader[m->nodes[i].in[k]] = i; /* i rises: the last write wins */
    size_t slot_size[CK_MAX_OPS];
    unsigned char slot_free[CK_MAX_OPS];
    int slot_of[CK_MAX_OPS], nslots = 0;
    for (int j = 0; j < m->num_nodes; ++j)
        slot_of[j] = NONE;
    for (int t = m->num_nodes - 1; t >= 0; --t) {
        /* the buffers node t's backward writes first (its inputs' gradients, each once), and t's
         * own when no node reads it (the logits and what follows them: written by the loss) */
        const ck_node *nt = &m->nodes[t];
        for (int k = -1; k < nt->nin; ++k) {
            const int j = k < 0 ? t : nt->in[k];
            if (j < 0 || slot_of[j] != NONE ||
                (k < 0 ? last_reader[j] != NONE : last_reader[j] != t))
                continue;
            const ck_node *n = &m->nodes[j];
            const size_t need =
                round_up(act_elem_bytes(m, be, j) * n->oh * n->ow * n->oc * B, align);
            const int best = take_slot(slot_size, slot_free, &nslots, need);
            slot_free[best] = 0;
            slot_of[j] = best;
        }
        slot_free[slot_of[t]] = 1; /* node t has read its gradient */
    }
    size_t slot_off[CK_MAX_OPS], total = 0;
    for (int s = 0; s < nslots; ++s) {
        slot_off[s] = total;
        total += slot_size[s];
    }
    for (int j = 0; j < m->num_nodes; ++j)
        m->nodes[j].g_offset = slot_off[slot_of[j]];
    return total;
}

/* A planned graph model's activations, placed by liveness over the step's timeline: node i runs
 * forward at time i and backward at T - i (T = 2 * nodes). Its output lives from time i to its
 * last read: a reader's forward, a reader's backward unless the reader's kind never reads its
 * inputs there, its own backward unless its kind never reads its output there (ck_node_kind
 * bwd_skips); the logits and what follows them to T (the loss and predict read them). A Flatten
 * (alias) is its input's buffer, so its readers count as that buffer's. Buffers whose lives do
 * not overlap share bytes; inference, a prefix of the timeline, fits the same layout. Returns the
 * bytes of all buffers. */
static size_t plan_acts_graph(ck_model *m, int be, size_t B, size_t align, int share) {
    enum { NONE = -1 };
    const int N = m->num_nodes, T = 2 * N, ln = ck_exec_logits_node(m);
    int root[CK_MAX_OPS];
    for (int j = 0; j < N; ++j) {
        ck_node *n = &m->nodes[j];
        root[j] = !n->kind->alias ? j : n->in[0] >= 0 ? root[n->in[0]] : NONE;
        n->act_end = j;
    }
    for (int r = 0; r < N; ++r) {
        const ck_node *n = &m->nodes[r];
        const unsigned skips = n->kind->alias       ? CK_BWD_SKIPS_IN | CK_BWD_SKIPS_OUT
                               : n->kind->bwd_skips ? n->kind->bwd_skips(n)
                                                    : 0;
        int *own = root[r] >= 0 ? &m->nodes[root[r]].act_end : NULL;
        if (own && (r >= ln || !(skips & CK_BWD_SKIPS_OUT)))
            *own = r >= ln ? T : (*own > T - r ? *own : T - r);
        for (int k = 0; k < n->nin; ++k) {
            const int s = n->in[k] >= 0 ? root[n->in[k]] : NONE;
            const int last = skips & CK_BWD_SKIPS_IN ? r : T - r;
            if (s >= 0 && m->nodes[s].act_end < last)
                m->nodes[s].act_end = last;
        }
    }
    size_t slot_size[CK_MAX_OPS], total = 0;
    int slot_end[CK_MAX_OPS], slot_of[CK_MAX_OPS], nslots = 0;
    unsigned char slot_free[CK_MAX_OPS];
    for (int j = 0; j < N; ++j) {
        ck_node *n = &m->nodes[j];
        slot_of[j] = NONE;
        if (n->kind->alias)
            continue;
        for (int s = 0; s < nslots; ++s) /* its tensor is read no more from j's forward on */
            slot_free[s] = share && slot_end[s] < j;
        const size_t need = round_up(act_elem_bytes(m, be, j) * n->oh * n->ow * n->oc * B, align);
        const int best = take_slot(slot_size, slot_free, &nslots, need);
        slot_end[best] = n->act_end;
        slot_of[j] = best;
    }
    size_t slot_off[CK_MAX_OPS];
    for (int s = 0; s < nslots; ++s) {
        slot_off[s] = total;
        total += slot_size[s];
    }
    for (int j = 0; j < N; ++j)
        m->nodes[j].act_offset = slot_of[j] == NONE ? 0 : slot_off[slot_of[j]];
    return total;
}

void ck_memtab_plan(ck_model *m, int be, void *const *state, ck_memtab *t) {
    const size_t B = (size_t)m->max_batch, F4 = sizeof(float);
    /* the device wants every part and activation on a 256-byte boundary (cuDNN, the float4
     * paths of the kernels); the host packs them */
    const size_t align = be == CK_BE_CUDA ? 256 : F4;
    size_t nact = 0, maxact = (size_t)m->in_h * m->in_w * m->in_c, ws = 0;
    for (int i = 0; i < m->num_nodes; ++i) {
        ck_node *n = &m->nodes[i];
        const size_t o = (size_t)n->oh * n->ow * n->oc;
        n->act_offset = nact;
        if (!n->kind->alias)
            nact += round_up(act_elem_bytes(m, be, i) * o * B, align);
        if (o > maxact)
            maxact = o;
        const ck_node_ops *op = &n->kind->ops[be];
        if (op->ws_bytes) {
            const size_t need = op->ws_bytes(m->ctx, n, m->max_batch, state ? state[i] : NULL);
            if (need > ws)
                ws = need;
        }
    }
    if (m->graph && m->planned) /* the planner's own: one buffer per node above */
        nact = plan_acts_graph(m, be, B, align, !m->acts_private);
    memset(t, 0, sizeof *t);
    t->align = align;
    t->bytes[CK_MEM_PARAMS] = t->bytes[CK_MEM_GRADS] = t->bytes[CK_MEM_OPT_M] =
        t->bytes[CK_MEM_OPT_V] = F4 * at_least(m->num_params, 1);
    t->bytes[CK_MEM_FIXED] = t->bytes[CK_MEM_FIXED_BACKUP] = F4 * at_least(m->num_fixed, 1);
    t->bytes[CK_MEM_STATS] = F4 * at_least(m->num_stats, 1);
    t->bytes[CK_MEM_ACTS] = at_least(nact, F4);
    /* the ping-pong and scratch gradients are those of nodes up to the logits node's input: bf16
     * words in a CUDA bf16 model */
    const size_t G = act_elem_bytes(m, be, -1);
    t->bytes[CK_MEM_GBUF0] = t->bytes[CK_MEM_GBUF1] = G * at_least(maxact * B, 1);
    t->bytes[CK_MEM_LOGITS_GRAD] = F4 * (size_t)m->classes * B;
    if (be == CK_BE_CUDA) {
#ifdef CNNKIT_HAVE_CUDA
        const size_t xent = ck_cuda_xent_workspace_bytes(m->max_batch);
        if (xent > ws)
            ws = xent;
        t->bytes[CK_MEM_LOSS] = sizeof(ck_kloss);
        t->bytes[CK_MEM_STEP] = sizeof(ck_kstep);
#endif
        t->bytes[CK_MEM_X] = F4 * (size_t)m->in_h * m->in_w * m->in_c * B;
        t->bytes[CK_MEM_LABELS] = sizeof(int32_t) * B;
        t->bytes[CK_MEM_WS] = ws;
        if (m->precision == CK_PRECISION_BF16) {
            t->bytes[CK_MEM_XBF] = sizeof(uint16_t) * (size_t)m->in_h * m->in_w * m->in_c * B;
            t->bytes[CK_MEM_DLOGITS_BF] = sizeof(uint16_t) * (size_t)m->classes * B;
        }
    } else {
        t->bytes[CK_MEM_WS] = round_up(at_least(ws, F4), F4);
        /* bf16: the batch rounded to bf16, which node 0 reads forward and backward */
        if (m->precision == CK_PRECISION_BF16) {
            t->bytes[CK_MEM_X] = F4 * (size_t)m->in_h * m->in_w * m->in_c * B;
            t->bytes[CK_MEM_WROUND] = F4 * at_least(m->num_params, 1);
        }
    }
    if (m->graph) {
        /* graph backward passes gradients in gnode, not in the ping-pong buffers */
        t->bytes[CK_MEM_GBUF0] = t->bytes[CK_MEM_GBUF1] = F4;
        /* an aliasing node too has a gradient buffer: its gradient is passed on by a copy */
        t->bytes[CK_MEM_GNODE] = plan_node_grads(m, be, B, align);
        t->gscratch_stride = round_up(G * maxact * B, align);
        t->bytes[CK_MEM_GSCRATCH] = CK_MAX_LAYER_INPUTS * t->gscratch_stride;
    }
    place(t);
}

void ck_memtab_drop(ck_memtab *t, ck_mem_id k) {
    t->bytes[k] = 0;
    place(t);
}

void ck_memtab_shrink(ck_memtab *t, ck_mem_id k) {
    t->bytes[k] = sizeof(float);
    place(t);
}
