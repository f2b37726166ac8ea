/* The model internals the Keras readers and writers need (input shape, optimizer), in a file of
 * their own so that keras_io.c and keras_config.c both call down here and not into each other. */
#include "keras_io.h"
#include "model_internal.h"

void ck_kio_model_input(const ck_model *m, int *h, int *w, int *c, int *flat) {
    *h = m->in_h;
    *w = m->in_w;
    *c = m->in_c;
    *flat = m->in_flat;
}

int ck_kio_model_is_graph(const ck_model *m) {
    return m->graph;
}

void ck_kio_model_optimizer(const ck_model *m, ck_optimizer_desc *o) {
    *o = m->opt;
}

int ck_kio_layer_specs(const ck_model *m, int i, ck_param_spec *spec) {
    size_t off[CK_LAYER_MAX_PARAMS];
    return ck_model_layer_specs(m, i, spec, off);
}
