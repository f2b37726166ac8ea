/* The parameters of a built model by user layer, from the layer kinds' specs (layer.h): where each
 * weight array lives, its initial values, the per-layer counts of the summary. Parameter nodes
 * keep the layer order through the planner (only parameter-less nodes move or fuse), so the
 * layer order is also the node order of the executors. */
#include "model_internal.h"

#include <string.h>

int ck_model_layer_specs(const ck_model *m, int li, ck_param_spec *spec, size_t *off) {
    const ck_layer_desc *d = &m->layers[li];
    const ck_layer_kind *k = ck_layer_kind_of(d->type);
    if (!k || !k->params)
        return 0;
    const int n = k->params(d, &m->lin[li], &m->lshape[li], spec);
    size_t p = m->lparam_off[li], f = m->lfixed_off[li];
    for (int i = 0; i < n; ++i) {
        /* each array right after the previous one of its kind: the build's layout */
        size_t *at = spec[i].trainable ? &p : &f;
        off[i] = *at;
        *at += spec[i].count;
    }
    return n;
}

/* Each trainable, non-empty array in layer order: what the optimizer updates (a static inline in
 * model_internal.h reads it, so the executors' backends call nothing above them). */
void ck_model_plan_updates(ck_model *m) {
    m->num_upd = 0;
    for (int li = 0; li < m->num_layers; ++li) {
        ck_param_spec spec[CK_LAYER_MAX_PARAMS];
        size_t offs[CK_LAYER_MAX_PARAMS];
        const int n = ck_model_layer_specs(m, li, spec, offs);
        for (int k = 0; k < n; ++k)
            if (spec[k].trainable && spec[k].count)
                m->upd[m->num_upd++] = (ck_update_range){offs[k], spec[k].count};
    }
}

/* Keras initializers by spec (the layer's, else glorot_uniform kernels, zero biases; BN gamma 1,
 * beta 0, moving mean 0, variance 1). Random arrays are drawn from the context seed with the
 * weighted layer's ordinal (0 for the first layer with a random array, 1 for the next, ...) as
 * the stream, not its layer index: models that differ only in the order or number of their
 * other layers (the order study's variants) start from the same weights. */
void ck_model_init_params(ck_model *m) {
    memset(m->params, 0, sizeof(float) * m->num_params);
    uint64_t ordinal = 0;
    for (int li = 0; li < m->num_layers; ++li) {
        ck_param_spec spec[CK_LAYER_MAX_PARAMS];
        size_t off[CK_LAYER_MAX_PARAMS];
        const int n = ck_model_layer_specs(m, li, spec, off);
        int weighted = 0;
        for (int i = 0; i < n; ++i) {
            float *p = (spec[i].trainable ? m->params : m->fixed) + off[i];
            if (spec[i].init == CK_INIT_ZEROS || spec[i].init == CK_INIT_ONES) {
                const float v = spec[i].init == CK_INIT_ONES ? 1.0f : 0.0f;
                for (size_t j = 0; j < spec[i].count; ++j)
                    p[j] = v;
                continue;
            }
            /* a second random array of the layer (a he_normal bias) gets its own stream */
            ck_init_random(p, spec[i].count, (ck_initializer)spec[i].init, spec[i].fan_in,
                           spec[i].fan_out, m->ctx->seed, ordinal + ((uint64_t)weighted << 32));
            weighted++;
        }
        ordinal += (uint64_t)(weighted > 0);
    }
    memset(m->opt_m, 0, sizeof(float) * m->num_params);
    memset(m->opt_v, 0, sizeof(float) * m->num_params);
    m->step = 0;
}

int ck_model_layer_params(const ck_model *m, int li, long long *trainable, long long *fixed) {
    ck_param_spec spec[CK_LAYER_MAX_PARAMS];
    size_t off[CK_LAYER_MAX_PARAMS];
    const int n = ck_model_layer_specs(m, li, spec, off);
    long long t = 0, f = 0;
    for (int i = 0; i < n; ++i)
        *(spec[i].trainable ? &t : &f) += (long long)spec[i].count;
    *trainable = t;
    *fixed = f;
    return 0;
}

/* Keras prints (None, c) from the first Flatten, Dense or GlobalAveragePooling2D on. */
int ck_model_layer_is_flat(const ck_model *m, int li) {
    return m->lshape[li].flat;
}
