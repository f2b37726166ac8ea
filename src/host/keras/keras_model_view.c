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

/* Keras's names of the optimizers and the order of their variables (keras_io.h) */
const char *ck_kio_optimizer_class(ck_optimizer_type t) {
    return t == CK_OPT_ADAM       ? "Adam"
           : t == CK_OPT_RMSPROP  ? "RMSprop"
           : t == CK_OPT_ADADELTA ? "Adadelta"
                                  : "SGD";
}

int ck_kio_opt_per(const ck_kio_opt *o) {
    return o->has_m + o->has_v;
}

int ck_kio_opt_var(const ck_kio_opt *o, int ntrain, int j, int r, float **arr) {
    if (o->type == CK_OPT_RMSPROP) { /* all velocities, then the momentums or averages */
        *arr = r ? o->m : o->v;
        return 2 + r * ntrain + j;
    }
    /* per variable: Adam's momentum and velocity, Adadelta's accumulated gradient and update */
    if (o->type == CK_OPT_ADADELTA)
        *arr = r ? o->m : o->v;
    else
        *arr = r || !o->has_m ? o->v : o->m;
    return 2 + ck_kio_opt_per(o) * j + r;
}
