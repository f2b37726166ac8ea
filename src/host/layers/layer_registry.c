/* The layer kinds, one const descriptor per ck_layer_type (layer.h), and the public calls that
 * read them: ck_layer_desc_init, ck_layer_type_name. */
#include "layer.h"

#include <stdio.h>
#include <string.h>

static const ck_layer_kind *const k_kinds[CK_LAYER_TYPE_COUNT] = {
    [CK_LAYER_CONV2D] = &ck_lk_conv2d,
    [CK_LAYER_MAXPOOL2D] = &ck_lk_maxpool2d,
    [CK_LAYER_AVGPOOL2D] = &ck_lk_avgpool2d,
    [CK_LAYER_GLOBALAVGPOOL2D] = &ck_lk_gap2d,
    [CK_LAYER_DENSE] = &ck_lk_dense,
    [CK_LAYER_FLATTEN] = &ck_lk_flatten,
    [CK_LAYER_BATCHNORM] = &ck_lk_batchnorm,
    [CK_LAYER_ACTIVATION] = &ck_lk_activation,
    [CK_LAYER_DROPOUT] = &ck_lk_dropout,
    [CK_LAYER_SPATIAL_DROPOUT2D] = &ck_lk_spatial_dropout2d,
    [CK_LAYER_ZEROPADDING2D] = &ck_lk_zeropad2d,
    [CK_LAYER_ADD] = &ck_lk_add,
    [CK_LAYER_CONCATENATE] = &ck_lk_concat,
    [CK_LAYER_RESCALING] = &ck_lk_rescaling,
    [CK_LAYER_GLOBALMAXPOOL2D] = &ck_lk_gmp2d,
};

const ck_layer_kind *ck_layer_kind_of(ck_layer_type t) {
    /* unsigned: a negative value from a cast int is out of range too */
    return (unsigned)t < (unsigned)CK_LAYER_TYPE_COUNT ? k_kinds[t] : NULL;
}

int ck_lk_flattens(ck_layer_type t) {
    const ck_layer_kind *k = ck_layer_kind_of(t);
    return k && (k->flags & CK_LK_FLATTENS);
}

const ck_keras_class *ck_keras_class_find(const char *cls, const ck_layer_kind **kind) {
    for (int t = 0; cls && t < CK_LAYER_TYPE_COUNT; ++t)
        for (const ck_keras_class *c = k_kinds[t]->keras_classes; c && c->name; ++c)
            if (strcmp(c->name, cls) == 0) {
                if (kind)
                    *kind = k_kinds[t];
                return c;
            }
    return NULL;
}

void ck_keras_class_names(char *buf, size_t n, int with_aliases) {
    size_t len = 0;
    if (!n)
        return;
    buf[0] = 0;
    for (int t = 0; t < CK_LAYER_TYPE_COUNT; ++t)
        for (const ck_keras_class *c = k_kinds[t]->keras_classes; c && c->name; ++c) {
            if (c->alias && !with_aliases)
                continue;
            int w = snprintf(buf + len, n - len, "%s%s", len ? ", " : "", c->name);
            if (w < 0 || (size_t)w >= n - len)
                return;
            len += (size_t)w;
        }
}

/* The class d keeps in keras_class, when it is one of its kind's with a name of its own. */
static const ck_keras_class *kept_class(const ck_layer_desc *d) {
    const ck_layer_kind *k = ck_layer_kind_of(d->type);
    if (!k || !d->keras_class[0] || !memchr(d->keras_class, '\0', sizeof d->keras_class))
        return NULL;
    for (const ck_keras_class *c = k->keras_classes; c && c->name; ++c)
        if (c->base_name && !strcmp(c->name, d->keras_class))
            return c;
    return NULL;
}

void ck_keras_class_keep(const ck_keras_class *kc, ck_layer_desc *d) {
    d->keras_class[0] = '\0';
    if (kc && kc->base_name)
        snprintf(d->keras_class, sizeof d->keras_class, "%s", kc->name);
}

const char *ck_layer_base_name(const ck_layer_desc *d) {
    const ck_keras_class *c = kept_class(d);
    if (c)
        return c->base_name;
    const ck_layer_kind *k = ck_layer_kind_of(d->type);
    return k ? k->base_name : "layer";
}

void ck_layers_auto_name(ck_layer_desc *layers, int n) {
    /* Keras counts per name stem: ReLU layers are re_lu, re_lu_1 beside activation, ... */
    enum { STEMS = CK_LAYER_TYPE_COUNT + 8 };
    const char *stem[STEMS];
    int count[STEMS], nstem = 0;
    for (int li = 0; li < n; ++li) {
        ck_layer_desc *d = &layers[li];
        const ck_layer_kind *k = ck_layer_kind_of(d->type);
        const char *base = ck_layer_base_name(d);
        int s = 0;
        while (s < nstem && strcmp(stem[s], base))
            ++s;
        if (s == nstem && nstem < STEMS) {
            stem[nstem] = base;
            count[nstem++] = 0;
        }
        if (s == STEMS) /* never: the stems are the kinds' and their classes' */
            s = 0;
        while (k && d->name[0] == '\0') {
            const int cnt = count[s]++;
            if (cnt == 0)
                snprintf(d->name, sizeof d->name, "%s", base);
            else
                snprintf(d->name, sizeof d->name, "%s_%d", base, cnt);
            for (int j = 0; j < n && d->name[0]; ++j)
                if (j != li && !strcmp(layers[j].name, d->name))
                    d->name[0] = '\0';
        }
    }
}

const char *ck_keras_class_of(const ck_layer_desc *d) {
    const ck_layer_kind *k = ck_layer_kind_of(d->type);
    if (!k)
        return "?";
    return k->keras_class_of ? k->keras_class_of(d) : k->keras_name;
}

/* The fields checkpoint version 1 records for every layer; a new kind whose arguments do not
 * fit them sets its own ckpt_record. */
void ck_layer_ckpt_record(const ck_layer_desc *d, int32_t iv[9], float fv[4]) {
    const ck_layer_kind *k = ck_layer_kind_of(d->type);
    if (k && k->ckpt_record) {
        k->ckpt_record(d, iv, fv);
        return;
    }
    const int32_t v[9] = {d->type,     d->units,   d->kernel_h, d->kernel_w,  d->stride_h,
                          d->stride_w, d->padding, d->use_bias, d->activation};
    memcpy(iv, v, sizeof v);
    fv[0] = d->rate;
    fv[1] = d->momentum;
    fv[2] = d->epsilon;
    fv[3] = d->alpha;
}

/*
 * Defaults (Keras 2/3): every type has name "" (automatic), use_bias 1, padding valid, activation
 * linear, alpha 0.3 (the LeakyReLU default; a caller that sets CK_ACT_ELU by hand sets alpha = 1
 * itself), input_h/w/c 0 (no input_shape), rate 0; then the kind's own (defaults in layer_*.c):
 *  - Conv2D: stride 1 x 1; filters (units) and kernel_size are 0 and must be set.
 *  - Dense: units 0, must be set.
 *  - MaxPooling2D / AveragePooling2D: pool_size 2 x 2 and stride 0 x 0, which means
 *    "strides=None", i.e. the pool size (so it follows a pool size changed later).
 *    ck_keras_parse always stores the resolved strides, never 0.
 *  - BatchNormalization: momentum 0.99, epsilon 1e-3.
 *  - Dropout / SpatialDropout2D: rate 0 (Keras has no default: set it).
 *  - Rescaling: scale 1, offset 0 (Keras has no default scale: its front ends require one).
 */
CK_API int ck_layers_graph_layer(const ck_layer_desc *layers, int count) {
    for (int i = 0; layers && i < count; ++i) {
        const ck_layer_desc *d = &layers[i];
        if (d->num_inputs > 1 || (d->num_inputs == 1 && d->inputs[0] != i - 1))
            return i;
    }
    return -1;
}

CK_API ck_status ck_layer_desc_init(ck_layer_desc *desc, ck_layer_type type) {
    const ck_layer_kind *k = ck_layer_kind_of(type);
    if (!desc)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "desc: is NULL");
    if (!k)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "type: %d is not a ck_layer_type", (int)type);
    memset(desc, 0, sizeof *desc);
    desc->type = type;
    desc->padding = CK_PADDING_VALID;
    desc->use_bias = 1;
    desc->activation = CK_ACT_NONE;
    desc->alpha = 0.3f;
    if (k->defaults)
        k->defaults(desc);
    return CK_STATUS_SUCCESS;
}

CK_API const char *ck_layer_type_name(ck_layer_type type) {
    const ck_layer_kind *k = ck_layer_kind_of(type);
    return k ? k->keras_name : NULL;
}
