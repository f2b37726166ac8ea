/* Keras text front end: the functional model (keras_internal.h).
 *
 *   inputs = keras.Input(shape=(28, 28, 1))
 *   x = layers.Conv2D(16, 3, padding="same")(inputs)
 *   y = layers.Add()([x, shortcut])
 *   model = keras.Model(inputs, outputs)          (or Model(inputs=..., outputs=...))
 *
 * Each layer called on tensors becomes a layer whose inputs (ck_layer_desc.num_inputs) are the
 * layers that made those tensors (CK_LAYER_INPUT_MODEL for the Input). A name may be assigned
 * again (x = ...(x)): the latest definition counts, as in Python, and a name given a tensor
 * (shortcut = x) keeps that tensor. At Model(...) the graph is checked with the line and column
 * of the layer at fault: every layer must lead to the output, and the shapes are inferred by
 * the layer kinds as the build will (Add of mismatched shapes names both). Then the layers,
 * named in the order they were created, are put in Keras's order (model.layers: the summary's
 * rows, get_weights(), the .keras files), the output last. One Input, one output; a layer
 * object kept in a variable and called (shared weights) is not read. */
#include "keras_internal.h"
#include "keras_io.h"
#include "layer.h"

#include <stdio.h>
#include <string.h>

static int tok_is(const tok *t, const char *name) {
    return t->kind == TK_NAME && ck_kp_is_name(t, name);
}

int ck_kp_functional_at(kp *P, size_t k) {
    if (k >= P->end || P->cur[k].kind != TK_NAME)
        return 0;
    while (k + 2 < P->end && ck_kp_is_op(&P->cur[k + 1], ".") && P->cur[k + 2].kind == TK_NAME)
        k += 2;
    if (!(k + 1 < P->end && ck_kp_is_op(&P->cur[k + 1], "(")))
        return 0;
    const tok *t = &P->cur[k];
    if (tok_is(t, "Input"))
        return 1;
    if (tok_is(t, "Model") || tok_is(t, "Functional"))
        return 2;
    char name[64];
    if (t->len <= 0 || (size_t)t->len >= sizeof name)
        return 0;
    memcpy(name, t->src, (size_t)t->len);
    name[t->len] = '\0';
    /* a layer class, or a merge function (keras.layers.add([a, b])) */
    return ck_keras_class_find(name, NULL) || ck_kp_merge_layer(name) ? 3 : 0;
}

/* The tensor a name's value stands for: the one definition it was read from when it carries an
 * id (shortcut = x keeps that x when x is assigned again, as in Python), else the latest of the
 * name. */
static ktensor *find_tensor(kp *P, const value *v) {
    for (ktensor *t = P->tensors; t; t = t->next)
        if (v->i > 0 ? t->id == v->i : !t->hidden && strcmp(t->name, v->s) == 0)
            return t;
    return NULL;
}

/* name = a tensor. A variable of that name (x = 5) is shadowed: expressions read the name. */
static int define_tensor(kp *P, const tok *name, int layer, int rank) {
    ktensor *t = (ktensor *)ck_kp_alloc(P, sizeof *t);
    sym *s = (sym *)ck_kp_alloc(P, sizeof *s);
    value *v = ck_kp_new_value(P, V_NAME, name->line, name->col);
    if (!t || !s || !v || !(t->name = ck_kp_strndup(P, name->src, (size_t)name->len)))
        return -1;
    t->id = P->tensors ? P->tensors->id + 1 : 1;
    t->layer = layer;
    t->rank = rank;
    t->line = name->line;
    t->col = name->col;
    t->next = P->tensors;
    P->tensors = t;
    v->s = t->name;
    v->i = t->id;
    s->name = t->name;
    s->v = v;
    s->line = name->line;
    s->next = P->syms;
    P->syms = s;
    return 0;
}

static int apply(kp *P, const value *v, int *layer, int *rank);

value *ck_kp_apply_now(kp *P, value *v) {
    if (v->kind != V_APPLY)
        return v;
    if (!P->functional) {
        ck_kp_fail(P, v->line, v->col,
                   "expected keras.Input(...) before a layer is called on a tensor");
        return NULL;
    }
    if (P->have_model) {
        ck_kp_fail(P, v->line, v->col,
                   "expected the layers before the model (line %d), found %s(...) called after it",
                   P->model_line, v->s);
        return NULL;
    }
    int layer, rank;
    tok name;
    memset(&name, 0, sizeof name);
    name.kind = TK_NAME;
    name.src = "";
    name.line = v->line;
    name.col = v->col;
    if (apply(P, v, &layer, &rank) || define_tensor(P, &name, layer, rank))
        return NULL;
    P->tensors->hidden = 1; /* no name: read through its id */
    P->syms = P->syms->next;
    value *t = ck_kp_new_value(P, V_NAME, v->line, v->col);
    if (t) {
        t->s = ck_kp_printf(P, "the output of %s(...)", ck_kp_last_component(v->s));
        t->i = P->tensors->id;
    }
    return t;
}

/* The line of a later statement `name = ...`, or 0. */
static int defined_later(kp *P, const char *name, int line) {
    const size_t len = strlen(name);
    for (size_t i = 0; i + 1 < P->ntok && P->toks[i].kind != TK_EOF; ++i) {
        const tok *t = &P->toks[i];
        if (t->kind == TK_NAME && t->line > line && (size_t)t->len == len &&
            memcmp(t->src, name, len) == 0 && ck_kp_is_op(&P->toks[i + 1], "=") &&
            (i == 0 || P->toks[i - 1].kind == TK_NEWLINE || ck_kp_is_op(&P->toks[i - 1], ";")))
            return t->line;
    }
    return 0;
}

static int apply(kp *P, const value *v, int *layer, int *rank);

/* A tensor: a name defined before, or a layer called on tensors. */
static int tensor_of(kp *P, const value *v, int *layer, int *rank) {
    char b[160];
    if (v->kind == V_APPLY)
        return apply(P, v, layer, rank);
    if (v->kind == V_NAME && (v->i > 0 || !strchr(v->s, '.'))) {
        const ktensor *t = find_tensor(P, v);
        if (t) {
            *layer = t->layer;
            *rank = t->rank;
            return 0;
        }
        const int later = defined_later(P, v->s, v->line);
        if (later)
            return ck_kp_fail(P, v->line, v->col,
                              "tensor '%.60s' is used before it is defined (at line %d)", v->s,
                              later);
        return ck_kp_fail(P, v->line, v->col,
                          "unknown tensor name '%.60s': expected keras.Input(...) or the output "
                          "of a layer, assigned before",
                          v->s);
    }
    return ck_kp_fail(P, v->line, v->col,
                      "expected a tensor (keras.Input(...) or a layer's output), found %s",
                      ck_kp_vdesc(v, b, sizeof b));
}

/* Layer(...)(tensor) or Layer(...)([tensors]): appends the layer reading them. */
static int apply(kp *P, const value *v, int *layer, int *rank) {
    const value *call = v->items[0], *arg = v->items[1];
    const ck_layer_kind *kind = NULL;
    const char *cls = ck_kp_last_component(call->s);
    ck_keras_class_find(cls, &kind);
    const int is_list = arg->kind == V_LIST || arg->kind == V_TUPLE;
    int in[CK_MAX_LAYER_INPUTS] = {0}, rk[CK_MAX_LAYER_INPUTS], nin = is_list ? arg->n : 1;
    if (!kind->min_inputs && is_list)
        return ck_kp_fail(P, arg->line, arg->col,
                          "expected one tensor for %s, found a list of %d (a list is for merge "
                          "layers such as Add)",
                          cls, arg->n);
    if (kind->min_inputs && (!is_list || nin < kind->min_inputs))
        return ck_kp_fail(P, arg->line, arg->col,
                          "expected a list of at least %d tensors for %s, such as [x, shortcut]",
                          kind->min_inputs, cls);
    if (nin > CK_MAX_LAYER_INPUTS)
        return ck_kp_fail(P, arg->line, arg->col, "expected at most %d tensors for %s, found %d",
                          CK_MAX_LAYER_INPUTS, cls, nin);
    for (int k = 0; k < nin; ++k)
        if (tensor_of(P, is_list ? arg->items[k] : arg, &in[k], &rk[k]))
            return -1;
    if (P->count >= KP_MAX_FN_LAYERS)
        return ck_kp_fail(P, call->line, call->col,
                          "expected at most %d layers in a functional model", KP_MAX_FN_LAYERS);
    const int at = P->count;
    P->rank = rk[0];
    P->fn_nin = nin;
    memcpy(P->fn_inputs, in, sizeof in);
    const int rc = ck_kp_add_layer(P, call);
    P->fn_nin = 0;
    if (rc)
        return -1;
    P->fn_line[at] = call->line;
    P->fn_col[at] = call->col;
    *layer = at;
    *rank = P->rank;
    return 0;
}

/* One tensor given to Model: a name, or a list or tuple of one. */
static const value *one_tensor(kp *P, const kargs *a, const char *param) {
    const value *v = ck_kp_aval(a, param);
    if ((v->kind == V_LIST || v->kind == V_TUPLE) && v->n == 1)
        return v->items[0];
    if (v->kind == V_LIST || v->kind == V_TUPLE) {
        ck_kp_fail(P, v->line, v->col,
                   "expected one tensor for %s of %s, found %d (cnnkit models have one input and "
                   "one output)",
                   param, a->cls, v->n);
        return NULL;
    }
    return v;
}

/* The shapes of the layers as ck_model_build infers them, each failure at the layer's call. */
static int infer_shapes(kp *P) {
    ck_shape3 sh[KP_MAX_FN_LAYERS];
    const ck_shape3 in0 = {P->in_h, P->in_w, P->in_c, 0};
    for (int li = 0; li < P->count; ++li) {
        ck_layer_desc d = P->layers[li];
        const ck_layer_kind *k = ck_layer_kind_of(d.type);
        ck_shape3 ins[CK_MAX_LAYER_INPUTS], out;
        for (int j = 0; j < d.num_inputs; ++j)
            ins[j] = d.inputs[j] < 0 ? in0 : sh[d.inputs[j]];
        const ck_status st = k->infer_n ? k->infer_n(P->ctx, &d, li, ins, d.num_inputs, &out)
                                        : k->infer(P->ctx, &d, li, &ins[0], &out);
        if (st != CK_STATUS_SUCCESS)
            return ck_kp_fail(P, P->fn_line[li], P->fn_col[li], "%s",
                              ck_context_last_error(P->ctx));
        sh[li] = out;
    }
    return 0;
}

/* The layers (named in the order they were created: Keras names a layer when it is made) put
 * in Keras's order (model.layers, the summary's rows, get_weights(): ck_kio_layers_keras_
 * order), their links renumbered and the input shape on the new first layer. */
static int to_keras_order(kp *P) {
    const int n = P->count;
    int order[KP_MAX_FN_LAYERS], at[KP_MAX_FN_LAYERS], line[KP_MAX_FN_LAYERS],
        col[KP_MAX_FN_LAYERS];
    ck_kio_layers_keras_order(P->layers, n, order);
    ck_layer_desc *old = (ck_layer_desc *)ck_kp_alloc(P, sizeof *old * (size_t)n);
    if (!old)
        return -1;
    memcpy(old, P->layers, sizeof *old * (size_t)n);
    for (int j = 0; j < n; ++j)
        at[order[j]] = j;
    for (int j = 0; j < n; ++j) {
        ck_layer_desc *d = &P->layers[j];
        *d = old[order[j]];
        for (int k = 0; k < d->num_inputs; ++k)
            if (d->inputs[k] >= 0)
                d->inputs[k] = at[d->inputs[k]];
        d->input_h = j == 0 ? old[0].input_h : 0;
        d->input_w = j == 0 ? old[0].input_w : 0;
        d->input_c = j == 0 ? old[0].input_c : 0;
        d->input_flat = j == 0 ? old[0].input_flat : 0;
        line[j] = P->fn_line[order[j]];
        col[j] = P->fn_col[order[j]];
    }
    memcpy(P->fn_line, line, sizeof *line * (size_t)n);
    memcpy(P->fn_col, col, sizeof *col * (size_t)n);
    return 0;
}

static const char *const model_p[] = {"inputs", "outputs", "name", "trainable", NULL};

static int model_stmt(kp *P, const tok *target, const value *v) {
    const char *cls = ck_kp_last_component(v->s);
    kargs a;
    if (ck_kp_bind(P, v, cls, model_p, 2, &a) || ck_kp_only_bool(P, &a, "trainable", 1) ||
        ck_kp_need(P, &a, "inputs") || ck_kp_need(P, &a, "outputs"))
        return -1;
    if (ck_kp_name_arg(P, &a, P->model_name, sizeof P->model_name))
        return -1;
    if (!P->functional)
        return ck_kp_fail(P, v->line, v->col,
                          "expected keras.Input(...) and layers called on it before %s(...)", cls);
    if (P->have_model)
        return ck_kp_fail(P, v->line, v->col,
                          "expected one model, found a second one (the first is at line %d)",
                          P->model_line);
    const value *iv = one_tensor(P, &a, "inputs"), *ov = iv ? one_tensor(P, &a, "outputs") : NULL;
    int il, ir, ol, orank;
    if (!ov || tensor_of(P, iv, &il, &ir) || tensor_of(P, ov, &ol, &orank))
        return -1;
    if (il != CK_LAYER_INPUT_MODEL)
        return ck_kp_fail(P, iv->line, iv->col,
                          "expected the keras.Input(...) tensor for inputs of %s, found the "
                          "output of a layer",
                          cls);
    if (ol == CK_LAYER_INPUT_MODEL)
        return ck_kp_fail(P, ov->line, ov->col,
                          "expected outputs computed from the input by at least one layer, found "
                          "the input itself");
    /* every layer leads to the output: walk back from it */
    unsigned char used[KP_MAX_FN_LAYERS] = {0};
    used[ol] = 1;
    for (int li = ol; li >= 0; --li)
        for (int j = 0; used[li] && j < P->layers[li].num_inputs; ++j)
            if (P->layers[li].inputs[j] >= 0)
                used[P->layers[li].inputs[j]] = 1;
    for (int li = 0; li < P->count; ++li)
        if (!used[li])
            return ck_kp_fail(P, P->fn_line[li], P->fn_col[li],
                              "expected every layer to lead to the model's output (%s at line "
                              "%d), found %s (layer %d), whose output it never reads",
                              ov->kind == V_NAME ? ov->s : "outputs", ov->line,
                              ck_keras_class_of(&P->layers[li]), li);
    ck_layers_auto_name(P->layers, P->count);
    if (infer_shapes(P) || to_keras_order(P))
        return -1;
    if (target) {
        if ((size_t)target->len >= sizeof P->model_var)
            return ck_kp_fail(P, target->line, target->col,
                              "expected a model variable name of at most %d characters",
                              (int)sizeof P->model_var - 1);
        memcpy(P->model_var, target->src, (size_t)target->len);
        P->model_var[target->len] = '\0';
    }
    P->have_model = 1;
    P->model_line = v->line;
    P->model_col = v->col;
    return 0;
}

int ck_kp_functional(kp *P, const tok *target, size_t rhs, int kind) {
    P->pos = rhs;
    value *v = ck_kp_p_full_expr(P);
    if (!v)
        return -1;
    if (kind == 3) {
        if (v->kind != V_APPLY)
            return 1; /* conv = Conv2D(...): a value, not a tensor */
        if (!P->functional)
            return ck_kp_fail(P, v->line, v->col,
                              "expected keras.Input(...) before a layer is called on a tensor");
        if (P->have_model)
            return ck_kp_fail(P, v->line, v->col,
                              "expected the layers before the model (line %d), found %s(...) "
                              "called after it",
                              P->model_line, v->s);
        int layer, rank;
        if (apply(P, v, &layer, &rank))
            return -1;
        return define_tensor(P, target, layer, rank);
    }
    if (v->kind != V_CALL)
        return ck_kp_fail(P, v->line, v->col, "expected a call to %s(...)",
                          kind == 1 ? "keras.Input" : "keras.Model");
    if (kind == 2)
        return model_stmt(P, target, v);
    if (P->functional)
        return ck_kp_fail(P, v->line, v->col,
                          "expected one keras.Input(...), found a second one (cnnkit models have "
                          "one input; the first is at line %d)",
                          P->in_line);
    if (P->have_model || P->count > 0)
        return ck_kp_fail(P, v->line, v->col,
                          "expected keras.Input(...) before the layers of a functional model, "
                          "found it after a Sequential model's layers");
    if (ck_kp_add_layer(P, v)) /* the Input item: the shape goes into the first layer */
        return -1;
    P->functional = 1;
    return define_tensor(P, target, CK_LAYER_INPUT_MODEL, P->rank);
}

int ck_kp_functional_end(kp *P) {
    if (P->functional && !P->have_model)
        return ck_kp_fail(P, P->in_line, P->in_col,
                          "expected model = keras.Model(inputs, outputs) after the layers of this "
                          "keras.Input(...), found none");
    return 0;
}
