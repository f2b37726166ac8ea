/* ck_model_check's findings and text: layers rendered in Keras syntax and the suggested
 * reorderings. */
#include "check_internal.h"
#include "layer.h"

#include <stdio.h>
#include <string.h>

/* ---- layer rendering in Keras syntax ---------------------------------------------------- */
const char *ck_chk_act_name(ck_activation a) {
    return ck_lk_act_name(a);
}

/* The kind renders its own arguments (layer_*.c); a kind without them reads "Name()". */
void ck_chk_render_layer(ck_sbuf *s, const ck_layer_desc *d) {
    const ck_layer_kind *k = ck_layer_kind_of(d->type);
    if (k && k->render)
        k->render(s, d);
    else
        ck_sbuf_printf(s, "%s()", k ? k->keras_name : "?");
}

void ck_chk_render_seq(ck_sbuf *s, const ck_layer_desc *seq, int n) {
    for (int i = 0; i < n; ++i) {
        if (i)
            ck_sbuf_printf(s, " -> ");
        ck_chk_render_layer(s, &seq[i]);
    }
}

/* Here, not in check_graph.c (which calls ck_chk_emit below): no file circle. */
int ck_chk_flat_at(const chk *c, int l) {
    if (l < 0 || l >= c->count)
        return 0;
    ck_chk_ancestors(c, l);
    c->anc[l] = 1;
    for (int j = 0; j <= l; ++j) {
        const ck_layer_type t = c->L[j].type;
        if (c->anc[j] && (t == CK_LAYER_DENSE || ck_lk_flattens(t)))
            return 1;
    }
    return 0;
}

/* Layer `from` as it reads when moved to just after layer `after`: a SpatialDropout2D that lands
 * on a flat tensor becomes a Dropout of its rate (Keras's SpatialDropout2D takes 4-D input). */
static ck_layer_desc moved(const chk *c, int from, int after) {
    ck_layer_desc d = c->L[from];
    if (d.type == CK_LAYER_SPATIAL_DROPOUT2D && ck_chk_flat_at(c, after))
        d.type = CK_LAYER_DROPOUT;
    return d;
}

/* Writes "A -> B -> C (layers lo-hi)" for layers [lo, hi] with layer `from` moved to just after
 * layer `after` (from < after). */
void ck_chk_fix_move(ck_sbuf *s, const chk *c, int lo, int hi, int from, int after) {
    ck_layer_desc seq[K_MAX_WINDOW];
    int n = 0;
    if (hi - lo + 1 > K_MAX_WINDOW)
        hi = lo + K_MAX_WINDOW - 2;
    for (int i = lo; i <= hi; ++i) {
        if (i == from)
            continue;
        seq[n++] = c->L[i];
        if (i == after)
            seq[n++] = moved(c, from, after);
    }
    ck_chk_render_seq(s, seq, n);
    ck_sbuf_printf(s, " (layers %d-%d)", lo, hi);
}

/* Moves layer `from` to just before layer `before` (before < from). */
void ck_chk_fix_move_before(ck_sbuf *s, const chk *c, int lo, int hi, int from, int before) {
    ck_layer_desc seq[K_MAX_WINDOW];
    int n = 0;
    if (hi - lo + 1 > K_MAX_WINDOW) /* cut: `from` may then lie past hi and be added besides */
        hi = lo + K_MAX_WINDOW - 2;
    for (int i = lo; i <= hi; ++i) {
        if (i == before)
            seq[n++] = c->L[from];
        if (i != from)
            seq[n++] = c->L[i];
    }
    ck_chk_render_seq(s, seq, n);
    ck_sbuf_printf(s, " (layers %d-%d)", lo, hi);
}

/* Where a dropout moved after BN at layer `bn` goes: after the BN, then after any following
 * non-softmax Activation and pooling layers. */
int ck_chk_insertion_after(const chk *c, int bn) {
    int t = bn;
    while (t + 1 < c->count) {
        const ck_layer_desc *d = &c->L[t + 1];
        if ((d->type == CK_LAYER_ACTIVATION && d->activation != CK_ACT_SOFTMAX) ||
            d->type == CK_LAYER_MAXPOOL2D || d->type == CK_LAYER_AVGPOOL2D)
            ++t;
        else
            break;
    }
    return t;
}

int ck_chk_last_bn_layer(const chk *c) {
    int last = -1;
    for (int i = 0; i < c->count; ++i)
        if (c->L[i].type == CK_LAYER_BATCHNORM)
            last = i;
    return last;
}

/* The first dropout (rate > 0) after layer `after`, -1 none. */
int ck_chk_dropout_after(const chk *c, int after) {
    for (int i = after + 1; i < c->count; ++i)
        if ((c->L[i].type == CK_LAYER_DROPOUT || c->L[i].type == CK_LAYER_SPATIAL_DROPOUT2D) &&
            c->L[i].rate > 0.0f)
            return i;
    return -1;
}

/* "Activation('relu') (layer 5)" */
void ck_chk_name_layer(ck_sbuf *s, const chk *c, int l) {
    ck_chk_render_layer(s, &c->L[l]);
    ck_sbuf_printf(s, " (layer %d)", l);
}

/* The fix that removes the shift for every BN (Li et al. 2019 fix (i)): no dropout before the
 * last BatchNormalization of the model. */
void ck_chk_fix_after_last_bn(ck_sbuf *s, const chk *c, int dl) {
    const int last = ck_chk_last_bn_layer(c), after = ck_chk_insertion_after(c, last),
              kept = ck_chk_dropout_after(c, after);
    ck_sbuf_printf(
        s,
        "only a dropout after the last BatchNormalization (layer %d) causes no shift (Li "
        "et al. 2019, fix (i)): ",
        last);
    if (kept >= 0) {
        ck_sbuf_printf(s, "remove layer %d (", dl);
        ck_chk_render_layer(s, &c->L[dl]);
        ck_sbuf_printf(s, "); layer %d already drops after it", kept);
    } else {
        ck_sbuf_printf(s, "move layer %d (", dl);
        ck_chk_render_layer(s, &c->L[dl]);
        ck_sbuf_printf(s, ") after ");
        ck_chk_name_layer(s, c, after);
        const ck_layer_desc d = moved(c, dl, after);
        if (d.type != c->L[dl].type) {
            ck_sbuf_printf(s, " as ");
            ck_chk_render_layer(s, &d);
            ck_sbuf_printf(s, " (the tensor is flat there)");
        }
    }
}

/* Kept here, not in check.c, so that check.c and check_graph.c both use it without a circle. */
ck_finding *ck_chk_emit(chk *c, const char *code, ck_severity sev, double value, int nl, int l0,
                        int l1, int l2) {
    ck_finding *f = c->total < c->cap ? &c->out[c->total] : &c->scratch;
    c->total++;
    memset(f, 0, sizeof *f);
    snprintf(f->code, sizeof f->code, "%s", code);
    f->severity = (int)sev;
    f->value = value;
    f->nlayers = nl;
    f->layers[0] = l0;
    f->layers[1] = l1;
    f->layers[2] = l2;
    for (int i = nl; i < 4; ++i)
        f->layers[i] = -1;
    return f;
}
