/* Queries on a built model that both executors (train.c, gpu_exec.c) ask: dropout RNG offsets,
 * fused dropouts and the optimizer's parameter ranges. Kept apart so neither executor calls the
 * other for them. */
#include "model_internal.h"

/* The dropout RNG offset of user layer `layer` at the current step: unique per (step, layer)
 * (layers < CK_MAX_LAYERS <= 4096). Keyed by the user's layer, not the node, so that the plan
 * (reordered or fused nodes) and the unplanned lowering draw identical masks. */
uint64_t ck_model_layer_dropout_offset(const ck_model *m, int layer) {
    return (uint64_t)m->step * 4096u + (uint64_t)layer;
}

/* The offset of the dropout node i runs: its own layer, or the layer of a fused dropout. */
uint64_t ck_model_dropout_offset(const ck_model *m, int i) {
    const ck_node *n = &m->nodes[i];
    return ck_model_layer_dropout_offset(m, n->drop_layer >= 0 ? n->drop_layer : n->layer);
}

int ck_model_fused_dropout(const ck_model *m, int i, int training, ck_dropout_desc *d) {
    const ck_node *n = &m->nodes[i];
    if (!training || n->drop_layer < 0 || !(n->drop_rate > 0.0f))
        return 0;
    d->rate = n->drop_rate;
    d->offset = ck_model_layer_dropout_offset(m, n->drop_layer);
    return 1;
}

/* Raw optimizer range r of the model: trainable array r % CK_LAYER_MAX_PARAMS of user layer
 * r / CK_LAYER_MAX_PARAMS (model_params.c), with the weight decay where its spec says so. 0 when
 * there is no such array or it is not trainable. */
static int raw_update_range(const ck_model *m, int r, size_t *off, size_t *cnt, float *wd) {
    ck_param_spec spec[CK_LAYER_MAX_PARAMS];
    size_t offs[CK_LAYER_MAX_PARAMS];
    const int k = r % CK_LAYER_MAX_PARAMS;
    if (k >= ck_model_layer_specs(m, r / CK_LAYER_MAX_PARAMS, spec, offs) || !spec[k].trainable ||
        spec[k].count == 0)
        return 0;
    *off = offs[k];
    *cnt = spec[k].count;
    *wd = spec[k].decay ? m->opt.weight_decay : 0.0f;
    return 1;
}

int ck_model_next_update_range(const ck_model *m, int *cursor, size_t *off, size_t *cnt,
                               float *wd) {
    const int end = CK_LAYER_MAX_PARAMS * m->num_layers;
    int r = *cursor;
    while (r < end && !raw_update_range(m, r, off, cnt, wd))
        ++r;
    if (r >= end) {
        *cursor = end;
        return 0;
    }
    for (++r; r < end; ++r) { /* merge the next ranges while contiguous with the same decay */
        size_t o2, c2;
        float w2;
        if (!raw_update_range(m, r, &o2, &c2, &w2))
            continue;
        if (o2 != *off + *cnt || w2 != *wd)
            break;
        *cnt += c2;
    }
    *cursor = r;
    return 1;
}
