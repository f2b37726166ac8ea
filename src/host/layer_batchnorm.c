/* BatchNormalization over the channels (Keras: momentum 0.99, epsilon 1e-3). */
#include "layer.h"
#include "model_internal.h"

static void bn_defaults(ck_layer_desc *d) {
    d->momentum = 0.99f;
    d->epsilon = 1e-3f;
}

static ck_status bn_check(ck_context *ctx, const ck_layer_desc *d, int index) {
    if (!(d->momentum >= 0.0f && d->momentum <= 1.0f) || !(d->epsilon > 0.0f))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "layer %d (BatchNormalization): momentum must be in [0, 1] and epsilon > 0",
                       index);
    return CK_STATUS_SUCCESS;
}

/* gamma 1, beta 0 (trainable, no decay); moving mean 0 and variance 1 (fixed) */
static int bn_params(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                     ck_param_spec *spec) {
    (void)d;
    (void)in;
    const size_t c = (size_t)out->c;
    spec[0] = (ck_param_spec){"gamma", c, (double)c, 1, 0, CK_PARAM_INIT_ONE, 0, 0};
    spec[1] = (ck_param_spec){"beta", c, (double)c, 1, 0, CK_PARAM_INIT_ZERO, 0, 0};
    spec[2] = (ck_param_spec){"moving_mean", c, (double)c, 0, 0, CK_PARAM_INIT_ZERO, 0, 0};
    spec[3] = (ck_param_spec){"moving_variance", c, (double)c, 0, 0, CK_PARAM_INIT_ONE, 0, 0};
    return 4;
}

static int bn_lower(const ck_layer_desc *d, const ck_shape3 *in, const ck_shape3 *out,
                    const ck_param_spec *spec, const ck_layer_place *at, ck_node *nodes) {
    (void)spec;
    ck_node *n = &nodes[0];
    ck_lk_node(n, CK_NODE_BN, in, out);
    ck_bn_desc_init(&n->bn, CK_BN_KERAS);
    n->bn.epsilon = d->epsilon;
    n->bn.average_factor = 1.0f - d->momentum;
    n->bn.single_value_use_running = 1; /* a batch of one sample on a Dense output */
    n->p_gamma = at->off[0];
    n->p_beta = at->off[1];
    n->p_mm = at->off[2];
    n->p_mv = at->off[3];
    n->p_stats = at->stats;
    return 1;
}

static int bn_same(const ck_layer_desc *a, const ck_layer_desc *b) {
    return a->momentum == b->momentum && a->epsilon == b->epsilon;
}

const ck_layer_kind ck_lk_batchnorm = {
    .type = CK_LAYER_BATCHNORM,
    .keras_name = "BatchNormalization",
    .base_name = "batch_normalization",
    .flags = CK_LK_KEEPS_CHANNELS,
    .stats_per_channel = 2, /* the batch mean and inverse deviation */
    .defaults = bn_defaults,
    .check = bn_check,
    .infer = ck_lk_infer_same,
    .params = bn_params,
    .lower = bn_lower,
    .study_letter = 'B',
    .same = bn_same,
};
