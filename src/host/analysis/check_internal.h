/* Shared by check.c and check_graph.c (the rules) and check_render.c (findings, layers and fixes
 * in Keras syntax). */
#ifndef CK_CHECK_INTERNAL_H
#define CK_CHECK_INTERNAL_H

#include "internal.h"

#include <string.h>

#include "cnnkit/check.h"

#define K_MAX_WINDOW 24 /* layers a suggested reordering shows at most */

typedef struct node {
    int layer; /* index into the layer list */
    ck_layer_type type;
    int is_act;        /* an Activation layer or an inline activation */
    ck_activation act; /* when is_act */
} node;

typedef struct chk {
    const ck_layer_desc *L;
    int count;
    const node *nd;
    int nn;
    ck_finding *out;
    int cap;
    int total;
    ck_finding scratch; /* findings past cap are built here and dropped */
    unsigned char *anc; /* count bytes of scratch for the graph walks (check_graph.c) */
    long *budget;       /* the layer visits left to the graph walks of one ck_model_check */
} chk;

/* Layer j's k-th input (num_inputs 0: the layer before it; -1: the model input), and how many it
 * reads: every walk over the layer graph reads links through these. */
static inline int ck_chk_input_of(const ck_layer_desc *L, int j, int k) {
    return L[j].num_inputs == 0 ? j - 1 : L[j].inputs[k];
}
static inline int ck_chk_n_inputs(const ck_layer_desc *L, int j) {
    return L[j].num_inputs == 0 ? 1 : L[j].num_inputs;
}

/* c->anc[j] = 1 for every layer j that layer l reads from, directly or not (anc[l] itself 0); a
 * link that does not go to an earlier layer is not followed (ck_model_build refuses it). */
static inline void ck_chk_ancestors(const chk *c, int l) {
    memset(c->anc, 0, (size_t)c->count);
    c->anc[l] = 1;
    for (int j = l; j >= 0; --j)
        if (c->anc[j])
            for (int k = 0; k < ck_chk_n_inputs(c->L, j); ++k) {
                const int i = ck_chk_input_of(c->L, j, k);
                if (i >= 0 && i < j)
                    c->anc[i] = 1;
            }
    c->anc[l] = 0;
}

const char *ck_chk_act_name(ck_activation a); /* "?" when unknown */
void ck_chk_render_layer(ck_sbuf *s, const ck_layer_desc *d);
void ck_chk_render_seq(ck_sbuf *s, const ck_layer_desc *seq, int n);
void ck_chk_fix_move(ck_sbuf *s, const chk *c, int lo, int hi, int from, int after);
void ck_chk_fix_move_before(ck_sbuf *s, const chk *c, int lo, int hi, int from, int before);
int ck_chk_insertion_after(const chk *c, int bn);
int ck_chk_last_bn_layer(const chk *c);
int ck_chk_dropout_after(const chk *c, int after);
void ck_chk_name_layer(ck_sbuf *s, const chk *c, int l);
void ck_chk_fix_after_last_bn(ck_sbuf *s, const chk *c, int dl);
/* A new finding (c->out[c->total] or a scratch one past cap) with its code, severity, value and
 * layers l0..l(nl-1); the caller writes message, reason and fix. */
ck_finding *ck_chk_emit(chk *c, const char *code, ck_severity sev, double value, int nl, int l0,
                        int l1, int l2);
/* The end of the chain that starts at layer s: the rules walk chains, so a layer graph is checked
 * chain by chain (check_graph.c). */
int ck_chk_chain_end(const ck_layer_desc *layers, int count, int s);
/* The arguments of ck_model_check and ck_model_check_data (check.c): a failure's message, naming
 * the argument, goes to ck_context_last_error(NULL) (no context here). */
ck_status ck_chk_args(const ck_layer_desc *layers, int count, const ck_finding *out, int cap,
                      const int *n_found);
/* The first dropout (rate > 0) that layer l reads from, directly or through any path of the
 * layer graph (check_graph.c): its layer index, or -1. */
int ck_chk_earlier_dropout(const chk *c, int l);
/* Whether layer l's output is flat (l or a layer it reads from is Flatten, Dense or
 * GlobalAveragePooling2D); -1: the model input. */
int ck_chk_flat_at(const chk *c, int l);
/* Whether a Conv2D or Dense reads layer l's output, directly or through any path of the graph;
 * *up the last Conv2D or Dense that l itself reads from (-1 none). */
int ck_chk_weight_reach(const chk *c, int l, int *up);
/* The residual-block rules (check_graph.c) over c->L; c->nd unused. */
void ck_chk_graph_rules(chk *c);

#endif
