/* The optimizer's parameter ranges of a built model, the same for the CPU and CUDA steps (from the
 * layer kinds' specs, model_params.c). */
#include "model_internal.h"

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
