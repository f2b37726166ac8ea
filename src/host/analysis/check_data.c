/* `cnnkit check`'s rule that needs the data (ck_model_check_data): a model whose first layer is
 * Keras's Rescaling(1./255) (or 1./127.5) was written for 0..255 pixels, while cnnkit's data
 * loaders give images already divided by 255 (include/cnnkit/data.h). */
#include "check_internal.h"
#include "layer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Whether layer i reads the model input (a Sequential model's layer 0; a graph's Input readers). */
static int reads_input(const ck_layer_desc *L, int i) {
    if (L[i].num_inputs == 0)
        return i == 0;
    for (int k = 0; k < L[i].num_inputs && k < CK_MAX_LAYER_INPUTS; ++k)
        if (L[i].inputs[k] == CK_LAYER_INPUT_MODEL)
            return 1;
    return 0;
}

/* k when 255 * |scale| is within 5% of k = 1 or 2: Keras's documented scales for 0..255 pixels,
 * 1./255 (to [0, 1]) and 1./127.5 (to [-1, 1] with offset -1); else 0. */
static int pixel_scale(float scale) {
    const double k = 255.0 * fabs((double)scale);
    return fabs(k - 1.0) <= 0.05 ? 1 : fabs(k - 2.0) <= 0.1 ? 2 : 0;
}

/* CK018 on layer i: its output on data in [lo, hi]. */
static void rule_rescale_scaled_data(chk *c, int i, float lo, float hi) {
    const ck_layer_desc *d = &c->L[i];
    const int k = pixel_scale(d->scale);
    const double span = fabs((double)d->scale) * ((double)hi - (double)lo);
    ck_finding *f =
        ck_chk_emit(c, "CK018-rescale-on-scaled-data", CK_SEVERITY_WARNING, span, 1, i, -1, -1);
    ck_sbuf s;
    ck_sbuf_init(&s, f->message, sizeof f->message);
    ck_chk_render_layer(&s, d);
    ck_sbuf_printf(&s,
                   " (layer %d) expects 0..255 pixels, but the data are in [%g, %g]: its output "
                   "spans %.3g instead of %d",
                   i, (double)lo, (double)hi, span, k);
    snprintf(f->reason, sizeof f->reason,
             "Keras's Rescaling scales 0..255 pixel values into a unit range (its documentation: "
             "'to rescale an input in the [0, 255] range to be in the [0, 1] range, you would "
             "pass scale=1./255', and scale=1./127.5, offset=-1 for [-1, 1]); the data given are "
             "already in [%g, %g] (cnnkit's loaders divide by 255: include/cnnkit/data.h), so "
             "the layer scales a second time and the layers after it see values %.0f times "
             "smaller than the model was written (or, from Keras, trained) for "
             "(docs/derivations.md §8)",
             (double)lo, (double)hi, 255.0 / ((double)hi - (double)lo));
    /* the same function of the pixels for these data: pixel = (x - lo) * 255 / (hi - lo) */
    ck_layer_desc rep = *d;
    const double a = (double)d->scale * 255.0 / ((double)hi - (double)lo);
    rep.scale = (float)a;
    rep.offset = (float)((double)d->offset - a * (double)lo);
    ck_sbuf_init(&s, f->fix, sizeof f->fix);
    ck_sbuf_printf(&s, "give the model 0..255 pixels (the cnnkit CLI: --pixels raw); or, for "
                       "these data, ");
    if (rep.scale == 1.0f && rep.offset == 0.0f)
        ck_sbuf_printf(&s, "remove layer %d", i);
    else {
        ck_sbuf_printf(&s, "replace layer %d by ", i);
        ck_chk_render_layer(&s, &rep);
    }
}

CK_API ck_status ck_model_check_data(const ck_layer_desc *layers, int count, float lo, float hi,
                                     ck_finding *out, int cap, int *n_found) {
    CK_TRY(ck_chk_args(layers, count, out, cap, n_found));
    if (!isfinite(lo) || !isfinite(hi) || !(lo < hi))
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "lo %g, hi %g: must be finite with lo < hi", lo,
                       hi);
    chk c = {.L = layers, .count = count, .out = out, .cap = cap};
    /* data already in a unit range: [0, 1] or [-1, 1] */
    const int scaled = lo >= -1.0f && hi <= 1.0f;
    for (int i = 0; i < count; ++i)
        if (scaled && layers[i].type == CK_LAYER_RESCALING && reads_input(layers, i) &&
            pixel_scale(layers[i].scale))
            rule_rescale_scaled_data(&c, i, lo, hi);
    *n_found = c.total;
    return CK_STATUS_SUCCESS;
}
