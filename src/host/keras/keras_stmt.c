/* Keras text front end: the statement splitter (brackets, newlines, ';', recovery), the
 * statements (Sequential, add, pop, compile, assignments) and the API, ck_keras_parse. See
 * keras_internal.h. */
#include "keras_internal.h"
#include "keras_io.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Statements
 * ------------------------------------------------------------------------------------------- */
typedef struct stmt {
    size_t b, e; /* tokens [b, e) */
    int recovered;
    int err, el, ec; /* a bracket error found while splitting, raised after the statement */
    char emsg[256];
} stmt;

static void opener_desc(kp *P, size_t i, char *buf, size_t n) {
    const tok *o = &P->toks[i];
    if (o->src[0] == '(' && i > 0 && P->toks[i - 1].kind == TK_NAME &&
        !ck_kp_is_keyword(&P->toks[i - 1]))
        snprintf(buf, n, "'%.*s('", P->toks[i - 1].len > 60 ? 60 : P->toks[i - 1].len,
                 P->toks[i - 1].src);
    else
        snprintf(buf, n, "'%c'", o->src[0]);
}

/* May the statement [b, ...) that is open at the NEWLINE token nl be closed there? */
static int recoverable(kp *P, size_t b, size_t nl) {
    const tok *last = &P->toks[nl - 1];
    int ends_value =
        last->kind == TK_NUMBER || last->kind == TK_STRING || ck_kp_is_close(last) ||
        (last->kind == TK_NAME && (!ck_kp_is_keyword(last) || ck_kp_is_name(last, "True") ||
                                   ck_kp_is_name(last, "False") || ck_kp_is_name(last, "None")));
    if (!ends_value)
        return 0;
    const tok *nx = &P->toks[nl + 1];
    if (nx->kind == TK_EOF) /* at the end of the text: only a statement of one line */
        return P->toks[b].line == last->line;
    if (nx->kind != TK_NAME || nx->col > P->toks[b].col || ck_kp_is_name(nx, "and") ||
        ck_kp_is_name(nx, "or") || ck_kp_is_name(nx, "in") || ck_kp_is_name(nx, "is") ||
        ck_kp_is_name(nx, "not") || ck_kp_is_name(nx, "lambda"))
        return 0;
    int d = 0;
    for (size_t k = nl + 1; P->toks[k].kind != TK_NEWLINE && P->toks[k].kind != TK_EOF; ++k) {
        if (ck_kp_is_open(&P->toks[k]))
            d++;
        else if (ck_kp_is_close(&P->toks[k]) && --d < 0)
            return 0;
    }
    return 1;
}

/* The next statement from token *pi. Returns 1 at the end of the text, -1 on error. */
static int split(kp *P, size_t *pi, stmt *S) {
    size_t i = *pi;
    while (P->toks[i].kind == TK_NEWLINE || ck_kp_is_op(&P->toks[i], ";"))
        i++;
    memset(S, 0, sizeof *S);
    if (P->toks[i].kind == TK_EOF) {
        *pi = i;
        return 1;
    }
    S->b = i;
    size_t stack[KP_MAX_DEPTH];
    int depth = 0, broken = 0;
    char od[80];
    for (;; ++i) {
        const tok *t = &P->toks[i];
        if (t->kind == TK_EOF) {
            if (depth > 0 && !broken) {
                const tok *o = &P->toks[stack[depth - 1]];
                opener_desc(P, stack[depth - 1], od, sizeof od);
                S->err = 1;
                S->el = t->line;
                S->ec = t->col;
                snprintf(S->emsg, sizeof S->emsg,
                         "expected '%c' to close %s opened at line %d, column %d, found the end "
                         "of the text",
                         ck_kp_closer_of(o->src[0]), od, o->line, o->col);
            }
            S->e = i;
            *pi = i;
            return 0;
        }
        if (t->kind == TK_NEWLINE) {
            if (depth == 0 || broken) {
                S->e = i;
                *pi = i + 1;
                return 0;
            }
            if (recoverable(P, S->b, i)) {
                S->recovered = 1;
                S->e = i;
                *pi = i + 1;
                if (!P->quiet)
                    ck_kp_warn(P,
                               "line %d: unbalanced parentheses, statement closed at end of line",
                               t->line);
                return 0;
            }
            continue;
        }
        if (depth == 0 && ck_kp_is_op(t, ";")) {
            S->e = i;
            *pi = i + 1;
            return 0;
        }
        if (broken)
            continue;
        if (ck_kp_is_open(t)) {
            if (depth == KP_MAX_DEPTH)
                return ck_kp_fail(P, t->line, t->col, "expected brackets nested at most %d deep",
                                  KP_MAX_DEPTH);
            stack[depth++] = i;
        } else if (ck_kp_is_close(t)) {
            S->el = t->line;
            S->ec = t->col;
            if (depth == 0) {
                S->err = broken = 1;
                snprintf(S->emsg, sizeof S->emsg,
                         "expected the end of the statement, found an unmatched '%c'", t->src[0]);
            } else if (ck_kp_closer_of(P->toks[stack[depth - 1]].src[0]) != t->src[0]) {
                const tok *o = &P->toks[stack[depth - 1]];
                opener_desc(P, stack[depth - 1], od, sizeof od);
                S->err = broken = 1;
                snprintf(S->emsg, sizeof S->emsg,
                         "expected '%c' to close %s opened at line %d, column %d, found '%c'",
                         ck_kp_closer_of(o->src[0]), od, o->line, o->col, t->src[0]);
            } else
                depth--;
        }
    }
}

static int tok_is(const tok *t, const char *name) {
    return t->kind == TK_NAME && ck_kp_is_name(t, name);
}

static const tok *setting_call(kp *P, size_t b, size_t e);
static int is_model_tok(kp *P, const tok *t);
static int setting(kp *P, size_t b, size_t e, const tok *fn);

/* Tokens from k: `[a.b.]Sequential(` inside the current statement? */
static int sequential_at(kp *P, size_t k) {
    if (k >= P->end || P->cur[k].kind != TK_NAME)
        return 0;
    while (k + 2 < P->end && ck_kp_is_op(&P->cur[k + 1], ".") && P->cur[k + 2].kind == TK_NAME)
        k += 2;
    return k + 1 < P->end && tok_is(&P->cur[k], "Sequential") && ck_kp_is_op(&P->cur[k + 1], "(");
}

static int check_opaque(kp *P, const tok *t) {
    for (int i = P->nblocks - 1; i >= 0; --i)
        if (P->blocks[i].opaque)
            return ck_kp_fail(P, t->line, t->col,
                              "expected model statements outside loops and conditionals that "
                              "cnnkit cannot run (their sequence or condition is not known), "
                              "found one inside the '%s' at line %d",
                              P->blocks[i].kw, P->blocks[i].line);
    return 0;
}

static const char *const seq_p[] = {"layers", "name", "trainable", NULL};

/* var = [prefix.]Sequential(...) (var may be NULL: `return Sequential(...)`) */
static int model_create(kp *P, const tok *var, size_t rhs) {
    if (check_opaque(P, &P->cur[rhs]))
        return -1;
    P->pos = rhs;
    value *v = ck_kp_p_full_expr(P);
    if (!v)
        return -1;
    if (P->have_model)
        return ck_kp_fail(P, v->line, v->col,
                          "expected one Sequential model, found a second one (the first is at line "
                          "%d)",
                          P->model_line);
    if (P->functional && P->count > 0)
        return ck_kp_fail(P, v->line, v->col,
                          "expected one model, found a Sequential model after the layers of the "
                          "functional model of keras.Input(...) at line %d",
                          P->in_line);
    /* inputs = keras.Input(...); Sequential([inputs, ...]): the Input of a Sequential model */
    const int seq_input = P->functional;
    P->functional = 0;
    kargs a;
    if (ck_kp_bind(P, v, "Sequential", seq_p, 1, &a) || ck_kp_only_bool(P, &a, "trainable", 1))
        return -1;
    if (ck_kp_name_arg(P, &a, P->model_name, sizeof P->model_name))
        return -1;
    if (var) {
        if ((size_t)var->len >= sizeof P->model_var)
            return ck_kp_fail(P, var->line, var->col,
                              "expected a model variable name of at most "
                              "%d characters",
                              (int)sizeof P->model_var - 1);
        memcpy(P->model_var, var->src, (size_t)var->len);
        P->model_var[var->len] = '\0';
    }
    P->have_model = 1;
    P->model_line = v->line;
    P->model_col = v->col;
    value *ls = ck_kp_aval(&a, "layers");
    if (!ls || ls->kind == V_NONE)
        return 0;
    if (ls->kind != V_LIST && ls->kind != V_TUPLE)
        return ck_kp_type_err(P, &a, ls, "layers", "a list of layers");
    for (int i = 0; i < ls->n; ++i) {
        const value *it = ls->items[i];
        if (seq_input && i == 0 && it->kind == V_NAME && P->tensors &&
            strcmp(it->s, P->tensors->name) == 0)
            continue; /* the Input, read before */
        if (ck_kp_add_layer(P, it))
            return -1;
    }
    return 0;
}

/* NAME = expr and a, b = x, y: remembered when the value can be read, else marked unknown. */
static int add_sym(kp *P, const tok *name, value *v, const char *why) {
    if (v && v->kind == V_APPLY && !(v = ck_kp_apply_now(P, v))) /* y = a if c else L()(x) */
        return -1;
    if (v && (v->kind == V_LIST || v->kind == V_TUPLE)) /* [L()(x) for ...]: made once, here */
        for (int i = 0; i < v->n; ++i)
            if (v->items[i]->kind == V_APPLY) {
                value *c = ck_kp_new_value(P, v->kind, v->line, v->col);
                value **it = (value **)ck_kp_alloc(P, sizeof *it * (size_t)(v->n + 1));
                if (!c || !it)
                    return -1;
                for (int j = 0; j < v->n; ++j)
                    if (!(it[j] = ck_kp_apply_now(P, v->items[j])))
                        return -1;
                c->n = v->n;
                c->items = it;
                v = c;
                break;
            }
    if (v && v->kind == V_UNKNOWN) {
        why = v->s;
        v = NULL;
    }
    /* a name of this scope (the module, or the call being read) is set again in place: loops
     * assign the same names many times */
    for (int i = 0; P->call_depth == 0 && i < P->nmodel_alias; ++i) /* now something else */
        if ((size_t)name->len == strlen(P->model_alias[i]) &&
            !memcmp(P->model_alias[i], name->src, (size_t)name->len))
            memmove(P->model_alias[i], P->model_alias[--P->nmodel_alias], sizeof P->model_alias[i]);
    for (sym *o = P->push_only ? NULL : P->syms; o && o != P->scope; o = o->next)
        if ((size_t)name->len == strlen(o->name) &&
            !memcmp(o->name, name->src, (size_t)name->len)) {
            o->v = v;
            o->why = why;
            o->line = name->line;
            return 0;
        }
    sym *s = (sym *)ck_kp_alloc(P, sizeof *s);
    if (!s || !(s->name = ck_kp_strndup(P, name->src, (size_t)name->len)))
        return -1;
    s->v = v;
    s->why = why;
    s->line = name->line;
    s->comprehension = P->push_only > 0;
    s->next = P->syms;
    P->syms = s;
    return 0;
}

int ck_kp_bind_tok(kp *P, const tok *name, value *v) {
    return add_sym(P, name, v, NULL);
}

int ck_kp_bind_name(kp *P, const char *name, int line, value *v) {
    tok t;
    memset(&t, 0, sizeof t);
    t.kind = TK_NAME;
    t.src = name;
    t.len = (int)strlen(name);
    t.line = line;
    return add_sym(P, &t, v, NULL);
}

/* expr or a bare tuple `a, b` up to the end of the statement (right side of an assignment) */
static value *p_expr_list(kp *P) {
    const tok *t0 = ck_kp_peek(P);
    value *v = ck_kp_p_expr(P);
    if (!v || !ck_kp_is_op(ck_kp_peek(P), ","))
        return v && !ck_kp_expect_end(P) ? v : NULL;
    value **items = NULL;
    int n = 0, cap = 0;
    for (;;) {
        items = (value **)ck_kp_grow(P, items, n, &cap, sizeof *items);
        if (!items)
            return NULL;
        items[n++] = v;
        if (!ck_kp_is_op(ck_kp_peek(P), ","))
            break;
        ck_kp_advance(P);
        if (ck_kp_at_end(P))
            break;
        if (!(v = ck_kp_p_expr(P)))
            return NULL;
    }
    if (ck_kp_expect_end(P))
        return NULL;
    value *t = ck_kp_new_value(P, V_TUPLE, t0->line, t0->col);
    if (t) {
        t->n = n;
        t->items = items;
    }
    return t;
}

/* After the right side of an assignment failed to parse: its message as the reason the name is
 * unknown, the failure cleared (NULL: out of memory, which stays). */
static const char *unreadable(kp *P, const char *what) {
    if (P->st == CK_STATUS_ALLOC_FAILED || P->hard) /* a call's body failed: its error stands */
        return NULL;
    const char *why = ck_kp_printf(P, "%s that cnnkit cannot read (%s)", what, P->msg);
    P->failed = 0;
    P->st = CK_STATUS_SUCCESS;
    P->msg[0] = '\0';
    return why;
}

static const char *unrun(kp *P);

static int assign(kp *P, const tok *const *targets, int nt, size_t rhs) {
    /* in a loop or branch, which cnnkit does not run: the name's value after it is unknown
     * (the last assignment in the text is not the one Python's run leaves) */
    const char *loop = unrun(P);
    for (int i = 0; loop && i < nt; ++i)
        if (add_sym(P, targets[i], NULL, loop))
            return -1;
    if (loop)
        return 0;
    P->pos = rhs;
    value *v = p_expr_list(P);
    const char *why = NULL;
    if (!v && !(why = unreadable(P, "an expression")))
        return -1;
    if (nt == 1 && v && ck_kp_is_model_value(P, v)) /* model = build_model(), net = model */
        return ck_kp_model_name(P, targets[0]);
    if (nt == 1)
        return add_sym(P, targets[0], v, why);
    int spread = v && (v->kind == V_TUPLE || v->kind == V_LIST) && v->n == nt;
    if (v && !spread)
        why = "a value that cnnkit cannot unpack";
    for (int i = 0; i < nt; ++i) {
        value *it = spread ? v->items[i] : NULL;
        if (it && ck_kp_is_model_value(P, it) ? ck_kp_model_name(P, targets[i])
                                              : add_sym(P, targets[i], it, why))
            return -1;
    }
    return 0;
}

/* Inside a loop or conditional (an opaque block, which cnnkit does not run): why a name changed
 * there is unknown after it ("changed in the 'for' at line N ..."); NULL outside one. */
static const char *unrun(kp *P) {
    for (int i = P->nblocks - 1; i >= 0; --i)
        if (P->blocks[i].opaque)
            return ck_kp_printf(P,
                                "a value changed inside the '%s' at line %d, which cnnkit "
                                "does not run",
                                P->blocks[i].kw, P->blocks[i].line);
    return NULL;
}

static int is_aug_op(const tok *t) {
    static const char *const ops[] = {
        "+=", "-=", "*=", "/=", "//=", "%=", "**=", "@=", "&=", "|=", "^=", ">>=", "<<=", NULL};
    for (int i = 0; ops[i]; ++i)
        if (ck_kp_is_op(t, ops[i]))
            return 1;
    return 0;
}

/* NAME op= expr: a number as Python computes it (filters *= 2), a tensor refused (Keras inserts
 * an operation layer there, which cnnkit does not read); the name's value otherwise unknown. */
static int aug_assign(kp *P, const tok *name, const tok *op, size_t rhs) {
    const char *loop = unrun(P); /* how often it ran, or whether, the text does not say */
    if (loop)
        return add_sym(P, name, NULL, loop);
    const size_t end = P->end;
    P->pos = (size_t)(name - P->cur); /* the name's value now, read as an expression */
    P->end = P->pos + 1;
    value *a = ck_kp_p_expr(P);
    P->end = end;
    if (!a)
        return -1;
    if (a->kind == V_NAME && a->i > 0) /* a tensor's value carries its id (keras_func.c) */
        return ck_kp_fail(P, op->line, op->col,
                          "'%.*s %.*s ...' on a tensor: Keras makes it an operation layer, which "
                          "cnnkit does not read; use a layer (x = layers.Add()([x, y]))",
                          name->len, name->src, op->len, op->src);
    P->pos = rhs;
    value *b = p_expr_list(P);
    if (!b) {
        const char *why = unreadable(P, "an augmented assignment");
        return why ? add_sym(P, name, NULL, why) : -1;
    }
    tok bare = *op; /* "+=" read as "+" */
    bare.len -= 1;
    value *r = ck_kp_arith(P, &bare, a, b);
    sym *s = ck_kp_lookup(P, name->src, (size_t)name->len);
    if (r && r->kind == V_LIST && a->kind == V_LIST && s && s->v && s->v->kind == V_LIST) {
        s->v->items = r->items; /* a list's += changes the object (a default keeps it) */
        s->v->n = r->n;
        return 0;
    }
    return add_sym(P, name, r, NULL);
}

static const char *const k_skipped_methods[] = {"summary",
                                                "fit",
                                                "fit_generator",
                                                "evaluate",
                                                "evaluate_generator",
                                                "predict",
                                                "predict_generator",
                                                "predict_classes",
                                                "predict_proba",
                                                "predict_on_batch",
                                                "train_on_batch",
                                                "test_on_batch",
                                                "save",
                                                "save_weights",
                                                "load_weights",
                                                "build",
                                                "count_params",
                                                "get_config",
                                                "to_json",
                                                "to_yaml",
                                                "get_weights",
                                                "get_layer",
                                                "reset_states",
                                                "reset_metrics",
                                                "export",
                                                NULL};

static int model_method(kp *P, size_t b) {
    const tok *t0 = &P->cur[b], *m = &P->cur[b + 2];
    int add = tok_is(m, "add"), compile = tok_is(m, "compile"), pop = tok_is(m, "pop");
    if (!add && !compile && !pop) {
        for (int i = 0; k_skipped_methods[i]; ++i)
            if (tok_is(m, k_skipped_methods[i])) {
                if (tok_is(m, "fit") || tok_is(m, "fit_generator"))
                    ck_kp_warn(P,
                               "line %d: %.*s.%.*s(...) is not run, its arguments not used: "
                               "cnnkit train takes --epochs, --batch and --validation-split",
                               m->line, t0->len, t0->src, m->len, m->src);
                return 0;
            }
        return ck_kp_fail(P, m->line, m->col,
                          "unsupported model method '%.*s': expected add, compile or pop (summary, "
                          "fit, evaluate, predict, save, ... are skipped)",
                          m->len, m->src);
    }
    if (check_opaque(P, t0))
        return -1;
    if (P->functional && !compile)
        return ck_kp_fail(P, m->line, m->col,
                          "expected compile(...) on a functional model, found %.*s (add and pop "
                          "are for Sequential models)",
                          m->len, m->src);
    if (!P->model_var[0] && (size_t)t0->len < sizeof P->model_var) {
        memcpy(P->model_var, t0->src, (size_t)t0->len);
        P->model_var[t0->len] = '\0';
    }
    P->pos = b;
    value *v = ck_kp_p_full_expr(P);
    if (!v)
        return -1;
    if (v->kind != V_CALL)
        return ck_kp_fail(P, t0->line, t0->col, "expected %s.%.*s(...)", P->model_var, m->len,
                          m->src);
    const value *layer = NULL;
    for (int i = 0; i < v->n; ++i) {
        const karg *g = &v->args[i];
        if (g->kw && strcmp(g->kw, "rebuild") == 0)
            continue; /* Keras 3: rebuild=True/False, no effect on the layers */
        if (add && !layer && (!g->kw || strcmp(g->kw, "layer") == 0)) {
            layer = g->v;
            continue;
        }
        if (compile)
            continue;
        return ck_kp_fail(P, g->line, g->col, "expected %s for %s.%.*s, found another argument",
                          add ? "one layer" : "no arguments", P->model_var, m->len, m->src);
    }
    if (compile)
        return ck_kp_do_compile(P, v);
    if (add) {
        if (!layer)
            return ck_kp_fail(P, v->line, v->col, "expected a layer in %s.add(...)", P->model_var);
        /* a variable holding a layer is copied where it is used, its arguments shared: adding it
         * again would be two layers here, one shared layer in Keras (which refuses it) */
        for (int i = 0; layer->kind == V_CALL && layer->args && i < P->n_added; ++i)
            if (P->added[i] == layer->args)
                return ck_kp_fail(P, layer->line, layer->col,
                                  "expected a new layer in %s.add(...), found one already added "
                                  "(Keras shares that one layer's weights at both places; cnnkit "
                                  "shares no weights between layers)",
                                  P->model_var);
        if (layer->kind == V_CALL && layer->args &&
            P->n_added < (int)(sizeof P->added / sizeof *P->added))
            P->added[P->n_added++] = layer->args;
        return ck_kp_add_layer(P, layer);
    }
    if (P->count == 0)
        return ck_kp_fail(P, v->line, v->col, "expected a layer for pop() to remove, found none");
    P->count--;
    if (P->count == 0 && !P->pending_input)
        P->rank = 4, P->flat_input = 0;
    return 0;
}

/* A statement that is skipped may not contain model.add/compile/pop (a one-line loop, ...). */
static int check_skipped(kp *P, size_t b, size_t e) {
    if (!P->model_var[0])
        return 0;
    for (size_t k = b; k + 2 < e; ++k) {
        const tok *t = &P->cur[k], *m = &P->cur[k + 2];
        if (is_model_tok(P, t) && ck_kp_is_op(&P->cur[k + 1], ".") &&
            (tok_is(m, "add") || tok_is(m, "compile") || tok_is(m, "pop")))
            return ck_kp_fail(P, t->line, t->col,
                              "expected %s.%.*s(...) as a statement of its own, found it inside "
                              "another statement (a one-line loop or branch is not read)",
                              P->model_var, m->len, m->src);
    }
    return 0;
}

/* An if / elif / else block: which of its chain's branches runs, when the conditions say. */
static int branch(kp *P, const tok *t0, size_t b, size_t e, block *bl) {
    const int cont = (tok_is(t0, "elif") || tok_is(t0, "else")) && P->chain_indent == t0->col;
    /* an else of nothing known (a while, a loop not run, a try): whether it runs is not known */
    const int orphan = !cont && (tok_is(t0, "elif") || tok_is(t0, "else"));
    const int taken0 = cont ? P->chain_taken : 0, known0 = cont ? P->chain_known : !orphan;
    int c = 1; /* else */
    if (!tok_is(t0, "else"))
        c = known0 && !taken0 ? ck_kp_condition(P, b + 1, e - 1) : -1;
    if (c == -2)
        return -1;
    bl->chain_known = known0 && (taken0 || c >= 0);
    bl->chain_taken = taken0 || c == 1;
    if (!bl->chain_known) {
        bl->opaque = 1; /* not known which runs: not run */
    } else {
        bl->opaque = 0;
        bl->skip = taken0 || c == 0;
    }
    return 0;
}

static const char *const k_compound[] = {"if",    "elif",   "else",    "for",  "while",
                                         "try",   "except", "finally", "with", "def",
                                         "class", "async",  NULL};
static const char *const k_transparent[] = {"try", "finally", "with", "class", "async", NULL};

/* A name the model is known by (model, and net after net = model or net = build(model)). */
static int is_model_tok(kp *P, const tok *t) {
    if (t->kind != TK_NAME || !P->model_var[0])
        return 0;
    if (tok_is(t, P->model_var))
        return 1;
    for (int i = 0; i < P->nmodel_alias; ++i)
        if (tok_is(t, P->model_alias[i]))
            return 1;
    return 0;
}

/* A list changed in a way the reader does not follow: the object itself becomes unknown, so
 * every name and parameter holding it sees it (why NULL: out of memory, -1). */
static int forget_list(value *l, const char *why) {
    if (!why)
        return -1;
    l->kind = V_UNKNOWN;
    l->s = why;
    return 0;
}

/* NAME.append(x) / extend(xs) / insert(i, x) on a list the reader knows: the list, changed in
 * place (where the name is bound, as Python mutates the object); another method of a known list
 * (pop, remove, sort, ...) leaves it unknown. 1: done, 0: not a list method call. */
static int list_method(kp *P, size_t b, size_t e) {
    const tok *t0 = &P->cur[b], *m = &P->cur[b + 2];
    sym *s = ck_kp_lookup(P, t0->src, (size_t)t0->len);
    if (!s || !s->v || (s->v->kind != V_LIST && s->v->kind != V_TUPLE))
        return 0;
    P->pos = b;
    value *call = p_expr_list(P);
    if (!call)
        return -1;
    value *l = s->v, *arg = call->kind == V_CALL && call->n ? call->args[0].v : NULL;
    int at = -1; /* where the new items go */
    value *const *add = &arg;
    int nadd = arg ? 1 : 0;
    if (l->kind == V_LIST && call->kind == V_CALL && call->n && !call->args[0].kw) {
        if (tok_is(m, "append") && call->n == 1)
            at = l->n;
        else if (tok_is(m, "extend") && call->n == 1 &&
                 (arg->kind == V_LIST || arg->kind == V_TUPLE))
            at = l->n, add = arg->items, nadd = arg->n;
        else if (tok_is(m, "insert") && call->n == 2 && arg->kind == V_INT) {
            at = (int)(arg->i < 0 ? (arg->i + l->n < 0 ? 0 : arg->i + l->n)
                                  : (arg->i > l->n ? l->n : arg->i));
            add = &call->args[1].v;
        }
    }
    if (at < 0)
        return forget_list(l, ck_kp_printf(P,
                                           "a list changed by %.*s.%.*s(...) at line %d, which "
                                           "cnnkit does not follow",
                                           t0->len, t0->src, m->len, m->src, m->line))
                   ? -1
                   : 1;
    value **it = (value **)ck_kp_alloc(P, sizeof *it * (size_t)(l->n + nadd + 1));
    if (!it)
        return -1;
    for (int i = 0, j = 0; i <= l->n; ++i) {
        if (i == at)
            for (int k = 0; k < nadd; ++k)
                if (!(it[j++] = ck_kp_apply_now(P, add[k]))) /* a layer call: made now */
                    return -1;
        if (i < l->n)
            it[j++] = l->items[i];
    }
    l->n += nadd; /* the list object itself: a default or another name holding it sees it */
    l->items = it;
    return 1;
}

/* A one-line compound statement (if c: x = 1) is not read: the names it assigns are unknown after
 * it, and a call of the text's functions in it is refused (model statements are, by
 * check_skipped). */
static int one_line(kp *P, const tok *t0, size_t b, size_t e) {
    const char *why = ck_kp_printf(P,
                                   "assigned in the one-line '%.*s' at line %d, which cnnkit "
                                   "does not read",
                                   t0->len, t0->src, t0->line);
    if (!why)
        return -1;
    for (size_t k = b + 1; k < e; ++k) {
        const tok *t = &P->cur[k];
        if (ck_kp_is_fn(P, t) && k + 1 < e && ck_kp_is_op(&P->cur[k + 1], "(") &&
            !ck_kp_is_op(&P->cur[k - 1], "."))
            return ck_kp_fail(P, t->line, t->col,
                              "expected the call of '%.*s' on a line of its own, found it in the "
                              "one-line '%.*s' at line %d, which cnnkit does not read",
                              t->len, t->src, t0->len, t0->src, t0->line);
        if (t->kind == TK_NAME && !ck_kp_is_keyword(t) && k + 1 < e &&
            (ck_kp_is_op(&P->cur[k + 1], "=") || is_aug_op(&P->cur[k + 1]) ||
             ck_kp_is_op(&P->cur[k + 1], ".")) &&
            add_sym(P, t, NULL, why))
            return -1;
    }
    return 0;
}

/* One statement; *next: the token where the next one starts (past a def's or a run loop's body). */
static int process(kp *P, const stmt *S, size_t *next) {
    /* copy the statement without its line breaks, then the token that ends it */
    size_t need = S->e - S->b + 1;
    if (need > P->curcap) {
        size_t cap = need > 2 * P->curcap ? need : 2 * P->curcap;
        tok *c = (tok *)ck_host_realloc(P->ctx, P->cur, cap * sizeof *c);
        if (!c)
            return ck_kp_oom(P);
        P->cur = c;
        P->curcap = cap;
    }
    P->ncur = 0;
    for (size_t i = S->b; i < S->e; ++i)
        if (P->toks[i].kind != TK_NEWLINE)
            P->cur[P->ncur++] = P->toks[i];
    P->cur[P->ncur] = P->toks[S->e];
    size_t b = 0, e = P->ncur;
    const tok *t0 = &P->cur[b], *te = &P->cur[e];
    P->pos = b;
    P->end = e;
    P->recovered = S->recovered;
    P->depth = 0;
    memset(&P->endtok, 0, sizeof P->endtok);
    P->endtok.kind = TK_END;
    P->endtok.line = te->line;
    P->endtok.col = te->col;
    P->endtok.what = te->kind == TK_EOF       ? "the end of the text"
                     : te->kind == TK_NEWLINE ? "the end of the line"
                                              : "';'";
    while (P->nblocks > 0 && P->blocks[P->nblocks - 1].indent >= t0->col) {
        const block *bl = &P->blocks[--P->nblocks];
        if (!strcmp(bl->kw, "if") || !strcmp(bl->kw, "elif")) {
            P->chain_indent = bl->indent;
            P->chain_taken = bl->chain_taken;
            P->chain_known = bl->chain_known;
        }
    }
    if (P->nblocks > 0 && P->blocks[P->nblocks - 1].skip)
        return 0; /* a branch that does not run: nothing in it is read */
    const int chain = P->chain_indent;
    P->chain_indent = -1;   /* only the statement right after a chain may continue it */
    if (tok_is(t0, "from")) /* from M import A as B, ...: B is A */
        for (size_t k = b + 1; k + 2 < e; ++k)
            if (tok_is(&P->cur[k + 1], "as") && P->cur[k].kind == TK_NAME &&
                P->cur[k + 2].kind == TK_NAME && P->naliases < 32 && P->cur[k].len < 48 &&
                P->cur[k + 2].len < 48) {
                snprintf(P->aliases[P->naliases].name, 48, "%.*s", P->cur[k].len, P->cur[k].src);
                snprintf(P->aliases[P->naliases++].alias, 48, "%.*s", P->cur[k + 2].len,
                         P->cur[k + 2].src);
            }
    const int decorated = P->decorated;
    P->decorated = ck_kp_is_op(t0, "@"); /* @decorator: the def after it */
    if (tok_is(t0, "import") || tok_is(t0, "from") || P->decorated)
        return 0;
    const int header = ck_kp_is_op(&P->cur[e - 1], ":");
    if (tok_is(t0, "def")) { /* recorded; its body is read at each call */
        size_t body_e = *next;
        if ((header && ck_kp_block_end(P, *next, t0->col, &body_e)) ||
            ck_kp_def(P, b, e, *next, body_e))
            return -1;
        kp_fn *f = P->nfns ? &P->fns[P->nfns - 1] : NULL;
        if (f && f->line == P->cur[b + 1].line) {
            /* a def in a block the reader does not run, a decorated or one-line def: called,
             * it is refused, never read as something else */
            const char *why = unrun(P);
            f->refuse = !header     ? "a one-line def, which cnnkit does not read (put its body "
                                      "on lines of its own)"
                        : decorated ? "decorated (@...), which cnnkit does not run"
                        : why ? ck_kp_printf(P, "defined in a block cnnkit does not run (%s)", why)
                              : NULL;
        }
        *next = body_e;
        return 0;
    }
    if ((tok_is(t0, "global") || tok_is(t0, "nonlocal")) && P->call_depth > 0)
        return ck_kp_fail(P, t0->line, t0->col,
                          "expected no %.*s statement in a function cnnkit runs: it keeps a "
                          "function's names its own",
                          t0->len, t0->src);
    if (tok_is(t0, "for") && header && !unrun(P)) { /* over a sequence the reader knows: run */
        size_t body_e = 0;
        if (ck_kp_block_end(P, *next, t0->col, &body_e))
            return -1;
        const int r = ck_kp_for(P, b, e, *next, body_e);
        if (r)
            *next = body_e;
        if (r != 0)
            return r < 0 ? -1 : 0;
    }
    if (tok_is(t0, "break") || tok_is(t0, "continue") || tok_is(t0, "return"))
        return ck_kp_flow(P, b, e);
    const tok *fn = setting_call(P, b, e);
    if (fn)
        return setting(P, b, e, fn);
    if (ck_kp_is_keyword(t0) && !tok_is(t0, "True") && !tok_is(t0, "False") &&
        !tok_is(t0, "None")) {
        int compound = 0;
        for (int i = 0; k_compound[i]; ++i)
            compound |= tok_is(t0, k_compound[i]);
        if (compound && ck_kp_is_op(&P->cur[e - 1], ":") && P->nblocks == KP_MAX_BLOCKS)
            return ck_kp_fail(P, t0->line, t0->col, "expected blocks nested at most %d deep",
                              KP_MAX_BLOCKS);
        if (compound && !ck_kp_is_op(&P->cur[e - 1], ":") && one_line(P, t0, b, e))
            return -1;
        if (compound && ck_kp_is_op(&P->cur[e - 1], ":")) {
            block *bl = &P->blocks[P->nblocks++];
            memset(bl, 0, sizeof *bl);
            bl->indent = t0->col;
            bl->line = t0->line;
            bl->body = *next;
            snprintf(bl->kw, sizeof bl->kw, "%.*s", t0->len, t0->src);
            bl->opaque = 1;
            for (int i = 0; k_transparent[i]; ++i)
                if (tok_is(t0, k_transparent[i]))
                    bl->opaque = 0;
            if (tok_is(t0, "if") || tok_is(t0, "elif") || tok_is(t0, "else")) {
                P->chain_indent = chain;
                bl->opaque = 0; /* a call in the condition runs where the if stands */
                const int rc = branch(P, t0, b, e, bl);
                P->chain_indent = -1;
                if (rc)
                    return -1;
            }
        }
        if (tok_is(t0, "del")) { /* del a, b: the names are gone (del x[0] deletes none) */
            const char *loop = unrun(P), *why = loop ? loop : "nothing: del";
            for (size_t k = b + 1; k < e && P->cur[k].kind == TK_NAME &&
                                   (k + 1 == e || ck_kp_is_op(&P->cur[k + 1], ","));
                 k += 2)
                if (add_sym(P, &P->cur[k], NULL, why))
                    return -1;
        }
        return check_skipped(P, b, e);
    }
    if (t0->kind == TK_NAME && b + 1 < e && is_aug_op(&P->cur[b + 1])) {
        if (check_skipped(P, b, e))
            return -1;
        return aug_assign(P, t0, &P->cur[b + 1], b + 2);
    }
    /* the top-level '=' of the statement, and a second one (a = b = 1) */
    size_t eq = 0, eq2 = 0;
    for (size_t k = b, d = 0; k < e && !eq2; ++k) {
        if (ck_kp_is_open(&P->cur[k]))
            ++d;
        else if (ck_kp_is_close(&P->cur[k]))
            --d;
        else if (d == 0 && ck_kp_is_op(&P->cur[k], "=")) {
            if (eq)
                eq2 = k;
            else
                eq = k;
        }
    }
    if (t0->kind == TK_NAME && b + 1 < e && ck_kp_is_op(&P->cur[b + 1], ":") &&
        !ck_kp_is_keyword(t0)) /* x: int = 3 (an annotation alone binds nothing) */
        return eq ? assign(P, &t0, 1, eq + 1) : 0;
    if (t0->kind == TK_NAME && !is_model_tok(P, t0) && eq > b + 1 &&
        (ck_kp_is_op(&P->cur[b + 1], "[") || ck_kp_is_op(&P->cur[b + 1], "."))) {
        /* x[i] = v, x.a = v: v is read (its calls run), x is no longer known */
        if (check_skipped(P, b, e))
            return -1;
        P->pos = eq + 1;
        if (!p_expr_list(P) && !unreadable(P, "a value"))
            return -1;
        const char *why = ck_kp_printf(P,
                                       "changed by an item or attribute assignment at line %d, "
                                       "which cnnkit does not read",
                                       t0->line);
        sym *s = ck_kp_lookup(P, t0->src, (size_t)t0->len);
        if (s && s->v && s->v->kind == V_LIST) /* the list object, wherever it is held */
            return forget_list(s->v, why);
        return add_sym(P, t0, NULL, why);
    }
    if (t0->kind == TK_NAME && eq2 && eq == b + 1) { /* a = b = v: every name gets v */
        const tok *targets[16];
        int nt = 0;
        size_t k = b;
        for (; k < e && nt < 16 && P->cur[k].kind == TK_NAME && !ck_kp_is_keyword(&P->cur[k]) &&
               k + 1 < e && ck_kp_is_op(&P->cur[k + 1], "=");
             k += 2)
            targets[nt++] = &P->cur[k];
        if (nt >= 2) {
            for (int i = 0; i < nt; ++i)
                if (assign(P, &targets[i], 1, k))
                    return -1;
            return 0;
        }
    }
    if (t0->kind == TK_NAME && b + 3 < e && ck_kp_is_op(&P->cur[b + 1], ".") &&
        P->cur[b + 2].kind == TK_NAME && ck_kp_is_op(&P->cur[b + 3], "(") && !is_model_tok(P, t0)) {
        const int r = list_method(P, b, e);
        if (r)
            return r < 0 ? -1 : 0;
    }
    if (t0->kind == TK_NAME && b + 1 < e && ck_kp_is_op(&P->cur[b + 1], "=")) {
        if (sequential_at(P, b + 2))
            return model_create(P, t0, b + 2);
        /* x = keras.Input(...), y = Layer(...)(x), model = keras.Model(...) (keras_func.c); a
         * layer call without an Input before it is an ordinary assignment */
        const int fk = ck_kp_functional_at(P, b + 2);
        if (fk && (fk != 3 || P->functional)) {
            if (check_opaque(P, t0))
                return -1;
            const int r = ck_kp_functional(P, t0, b + 2, fk);
            if (r <= 0)
                return r;
        }
        if (check_skipped(P, b, e))
            return -1;
        return assign(P, &t0, 1, b + 2);
    }
    if (t0->kind == TK_NAME) {
        /* a, b = ... */
        const tok *targets[16];
        int nt = 0;
        size_t k = b;
        while (k < e && P->cur[k].kind == TK_NAME && !ck_kp_is_keyword(&P->cur[k]) && nt < 16) {
            targets[nt++] = &P->cur[k++];
            if (k < e && ck_kp_is_op(&P->cur[k], ","))
                k++;
            else
                break;
        }
        if (nt >= 2 && k < e && ck_kp_is_op(&P->cur[k], "=")) {
            if (check_skipped(P, b, e))
                return -1;
            return assign(P, targets, nt, k + 1);
        }
    }
    if (t0->kind == TK_NAME && b + 3 < e && ck_kp_is_op(&P->cur[b + 1], ".") &&
        P->cur[b + 2].kind == TK_NAME && ck_kp_is_op(&P->cur[b + 3], "(")) {
        int mine;
        if (P->model_var[0])
            mine = is_model_tok(P, t0);
        else {
            /* no model variable yet: adopt NAME on NAME.add(Class(...)) / NAME.compile(...),
             * or on any model method after `return Sequential(...)` */
            const tok *m = &P->cur[b + 2];
            size_t k = b + 4;
            while (k + 2 < e && ck_kp_is_op(&P->cur[k + 1], ".") && P->cur[k + 2].kind == TK_NAME)
                k += 2;
            int layer_arg = k + 1 < e && P->cur[k].kind == TK_NAME &&
                            ck_kp_is_op(&P->cur[k + 1], "(") && P->cur[k].src[0] >= 'A' &&
                            P->cur[k].src[0] <= 'Z'; /* a class: Conv2D(...), Conv3D(...) */
            mine = P->have_model ? (tok_is(m, "add") || tok_is(m, "compile") || tok_is(m, "pop"))
                                 : ((tok_is(m, "add") && layer_arg) || tok_is(m, "compile"));
        }
        if (mine)
            return model_method(P, b);
    }
    /* x.add(layers.Dense(...)) on anything but the model's names (a loop variable, a list item):
     * refused, never skipped */
    for (size_t k = b; P->have_model && k + 3 < e; ++k) {
        const tok *m = &P->cur[k + 1];
        if (!ck_kp_is_op(&P->cur[k], ".") || !(tok_is(m, "add") || tok_is(m, "compile")) ||
            !ck_kp_is_op(&P->cur[k + 2], "(") || (k > b && is_model_tok(P, &P->cur[k - 1])))
            continue;
        size_t c = k + 3;
        while (c + 2 < e && P->cur[c].kind == TK_NAME && ck_kp_is_op(&P->cur[c + 1], "."))
            c += 2;
        if (tok_is(m, "compile") ||
            (c + 1 < e && P->cur[c].kind == TK_NAME && P->cur[c].src[0] >= 'A' &&
             P->cur[c].src[0] <= 'Z' && ck_kp_is_op(&P->cur[c + 1], "(")))
            return ck_kp_fail(P, m->line, m->col,
                              "expected %s(...) on the model, found it on something cnnkit does "
                              "not know as the model (%s and its other names)",
                              tok_is(m, "add") ? "add" : "compile", P->model_var);
    }
    if (is_model_tok(P, t0)) {
        char d[96];
        const tok *t1 = b + 1 < e ? &P->cur[b + 1] : &P->endtok;
        if (ck_kp_is_op(t1, ".") && b + 2 < e && P->cur[b + 2].kind == TK_NAME)
            snprintf(d, sizeof d, "'%s.%.*s'", P->model_var,
                     P->cur[b + 2].len > 40 ? 40 : P->cur[b + 2].len, P->cur[b + 2].src);
        else
            ck_kp_tok_desc(P, t1, d, sizeof d);
        return ck_kp_fail(P, t0->line, t0->col,
                          "unsupported use of the model: expected %s.add(...), %s.compile(...) or "
                          "a skipped call such as %s.summary(), found %s",
                          P->model_var, P->model_var, P->model_var, d);
    }
    if (check_skipped(P, b, e))
        return -1;
    /* a statement calling the text's functions (build(), print(block(x)), fn(m) with fn one of
     * them), or handing the model to a call: read, so that the calls run as in Python and a call
     * cnnkit does not run is refused the model */
    for (size_t k = b; k < e; ++k) {
        const tok *t = &P->cur[k];
        const int after_dot = k > b && ck_kp_is_op(&P->cur[k - 1], ".");
        const int call = k + 1 < e && ck_kp_is_op(&P->cur[k + 1], "(") && !after_dot;
        sym *s = call && t->kind == TK_NAME ? ck_kp_lookup(P, t->src, (size_t)t->len) : NULL;
        tok fn = *t;
        if (s && s->v && s->v->kind == V_NAME) /* a name bound to a function */
            fn.src = s->v->s, fn.len = (int)strlen(s->v->s);
        const int model = is_model_tok(P, t) && !(k + 1 < e && ck_kp_is_op(&P->cur[k + 1], "."));
        if ((call && ck_kp_is_fn(P, &fn)) || model) {
            P->pos = b;
            if (p_expr_list(P))
                return 0;
            if (!model || P->st == CK_STATUS_ALLOC_FAILED || P->hard)
                return -1;
            return ck_kp_fail(P, t->line, t->col,
                              "expected the model in a statement cnnkit reads, found it in one "
                              "it cannot (%s)",
                              P->msg);
        }
    }
    return 0;
}

static const char *const k_settings[] = {"set_global_policy", "set_dtype_policy",      "set_policy",
                                         "set_floatx",        "set_image_data_format", NULL};

/* A statement that calls a global setting: a.b.NAME(...) or NAME(...) whose NAME is one of
 * k_settings, whatever module or alias leads to it (K.set_floatx, mp.set_global_policy), or any
 * set_* under a mixed_precision, config or backend module: its NAME token, or NULL. */
static const tok *setting_call(kp *P, size_t b, size_t e) {
    size_t k = b;
    if (!(k < e && P->cur[k].kind == TK_NAME))
        return NULL;
    int module = 0;
    while (k + 2 < e && ck_kp_is_op(&P->cur[k + 1], ".") && P->cur[k + 2].kind == TK_NAME) {
        module |= tok_is(&P->cur[k], "mixed_precision") || tok_is(&P->cur[k], "config") ||
                  tok_is(&P->cur[k], "backend");
        k += 2;
    }
    if (!(k + 1 < e && ck_kp_is_op(&P->cur[k + 1], "(")))
        return NULL;
    const tok *fn = &P->cur[k];
    for (int i = 0; k_settings[i]; ++i)
        if (tok_is(fn, k_settings[i]))
            return fn;
    return module && fn->len > 4 && !strncmp(fn->src, "set_", 4) ? fn : NULL;
}

/* The global settings that change what a model computes: the dtype policy is the model's
 * precision; float type and image layout are refused unless they are cnnkit's (float32, NHWC),
 * never dropped. Other settings calls (clear_session, ...) change nothing here. */
static int setting(kp *P, size_t b, size_t e, const tok *fn) {
    const int policy = tok_is(fn, "set_global_policy") || tok_is(fn, "set_dtype_policy") ||
                       tok_is(fn, "set_policy");
    const int floatx = tok_is(fn, "set_floatx"), layout = tok_is(fn, "set_image_data_format");
    if (!policy && !floatx && !layout) { /* set_epsilon, ...: said, not silently dropped */
        ck_kp_warn(P, "line %d: %.*s(...) is not read by cnnkit", fn->line, fn->len, fn->src);
        return 0;
    }
    size_t k = b;
    while (!ck_kp_is_op(&P->cur[k], "("))
        ++k;
    const tok *a = &P->cur[k + 1];
    char name[40];
    snprintf(name, sizeof name, "%.*s", fn->len, fn->src);
    if (k + 3 != e || a->kind != TK_STRING || !ck_kp_is_op(&P->cur[k + 2], ")"))
        return ck_kp_fail(P, fn->line, fn->col, "%s: expected one string, such as '%s'", name,
                          policy   ? "mixed_bfloat16"
                          : floatx ? "float32"
                                   : "channels_last");
    if (floatx || layout) {
        const char *want = floatx ? "float32" : "channels_last";
        if (strcmp(a->str, want) != 0)
            return ck_kp_fail(P, a->line, a->col, "%s: '%.40s' is not supported (only '%s')", name,
                              a->str, want);
        return 0;
    }
    if (strcmp(a->str, "float32") == 0)
        P->precision = CK_PRECISION_FP32;
    else if (strcmp(a->str, "mixed_bfloat16") == 0)
        P->precision = CK_PRECISION_BF16;
    else /* mixed_float16 would need loss scaling, which cnnkit does not do */
        return ck_kp_fail(P, a->line, a->col,
                          "%s: policy '%.40s' is not supported ('float32' or 'mixed_bfloat16')",
                          name, a->str);
    P->has_precision = 1;
    /* after layers were made it reaches only the layers made after it (Keras) */
    P->policy_after_line = P->count > 0 && P->precision != P->made_precision ? fn->line : 0;
    return 0;
}

#define KP_MAX_STEPS KP_MAX_STEPS_

int ck_kp_run(kp *P, size_t from, size_t to) {
    size_t i = from;
    while (P->flow == KP_FLOW_NONE) {
        stmt S;
        const int r = split(P, &i, &S);
        if (r < 0)
            return -1;
        if (r > 0 || (to && S.b >= to))
            return 0;
        if (++P->steps > KP_MAX_STEPS)
            return ck_kp_fail(P, P->toks[S.b].line, P->toks[S.b].col,
                              "expected at most %d statements read (loops and calls run), found "
                              "more",
                              KP_MAX_STEPS);
        if (process(P, &S, &i))
            return -1;
        if (S.err)
            return ck_kp_fail(P, S.el, S.ec, "%s", S.emsg);
    }
    return 0;
}

int ck_kp_block_end(kp *P, size_t i, int col, size_t *end) {
    /* each header's body is found once: a loop or a call reads it many times */
    if (!P->body_end &&
        !(P->body_end = (size_t *)ck_host_calloc(P->ctx, P->ntok + 1, sizeof *P->body_end)))
        return ck_kp_oom(P);
    if (i <= P->ntok && P->body_end[i]) {
        *end = P->body_end[i];
        return 0;
    }
    const size_t start = i;
    P->quiet++; /* the body's recoveries are said when it is read */
    int rc = 0;
    for (;;) {
        stmt S;
        const int r = split(P, &i, &S);
        if (r != 0) {
            rc = r < 0 ? -1 : 0;
            *end = i;
            break;
        }
        if (P->toks[S.b].col <= col) {
            *end = S.b;
            break;
        }
        if (S.err) { /* Python rejects the whole file, called or not */
            rc = ck_kp_fail(P, S.el, S.ec, "%s", S.emsg);
            break;
        }
    }
    P->quiet--;
    if (!rc && start <= P->ntok)
        P->body_end[start] = *end;
    return rc;
}

value *ck_kp_return_value(kp *P, size_t k) {
    const int seq = sequential_at(P, k), fk = seq ? 0 : ck_kp_functional_at(P, k);
    if (seq || fk == 2) { /* return Sequential(...) / return keras.Model(...): the model */
        if (seq ? model_create(P, NULL, k) : ck_kp_functional(P, NULL, k, 2))
            return NULL;
        value *v = ck_kp_new_value(P, V_NAME, P->cur[k].line, P->cur[k].col);
        if (v) {
            v->s = "the model";
            v->i = KP_MODEL_ID;
        }
        return v;
    }
    P->pos = k;
    value *v = p_expr_list(P);
    if (!v) {
        const char *why = unreadable(P, "a return value");
        if (!why || !(v = ck_kp_unknown(P, P->cur[k].line, P->cur[k].col, why)))
            return NULL;
    }
    return ck_kp_apply_now(P, v);
}

/* ---------------------------------------------------------------------------------------------
 * API
 * ------------------------------------------------------------------------------------------- */
static void put_err(char *err, size_t err_len, const char *msg) {
    if (err && err_len)
        snprintf(err, err_len, "%s", msg);
}

static const kp_up k_up = {
    ck_kp_call,           ck_kp_lookup,     ck_kp_ternary_at,       ck_kp_ternary,
    ck_kp_test_end,       ck_kp_test_expr,  ck_kp_comprehension_at, ck_kp_comprehension,
    ck_kp_is_model_value, ck_kp_run,        ck_kp_bind_name,        ck_kp_bind_tok,
    ck_kp_return_value,   ck_kp_model_name, ck_kp_block_end};

ck_status ck_kp_parse(ck_context *ctx, const char *text, ck_keras_model *out, char *err,
                      size_t err_len) {
    if (err && err_len)
        err[0] = '\0';
    if (!text || !out) {
        put_err(err, err_len, !text ? "text: NULL" : "out: NULL");
        return CK_STATUS_BAD_PARAM;
    }
    kp *P = (kp *)ck_host_calloc(ctx, 1, sizeof *P);
    if (!P) {
        put_err(err, err_len, "out of host memory while parsing the model text");
        return CK_STATUS_ALLOC_FAILED;
    }
    P->ctx = ctx;
    P->up = &k_up;
    P->text = text;
    P->len = strlen(text);
    P->rank = 4;
    P->chain_indent = -1;
    ck_optimizer_desc_init(&P->opt, CK_OPT_ADAM);
    int rc = 0;
    if (P->len > (size_t)INT_MAX / 2)
        rc = ck_kp_fail(P, 1, 1, "expected a model text of less than 1 GiB");
    if (!rc)
        rc = ck_kp_tokenize(P);
    if (!rc) { /* the text runs as the main module: if __name__ == '__main__' is taken */
        value *main = ck_kp_new_value(P, V_STR, 1, 1);
        if (main)
            main->s = "__main__";
        rc = !main || ck_kp_bind_name(P, "__name__", 1, main) ? -1 : 0;
    }
    if (!rc)
        rc = ck_kp_run(P, 0, 0);
    if (!rc)
        rc = ck_kp_functional_end(P);
    if (!rc && P->count == 0) {
        if (P->have_model)
            rc = ck_kp_fail(P, P->model_line, P->model_col,
                            "expected at least one layer in the Sequential model, found none");
        else
            rc = ck_kp_fail(P, 1, 1,
                            "expected a Keras Sequential model (model = Sequential(...) or "
                            "model.add(...)), found no layers");
    }
    char msg[400]; /* the loss cnnkit computes is the one Keras would (keras_graph.c) */
    if (!rc && ck_kio_check_loss(P->layers, P->count, P->loss, P->from_logits, msg, sizeof msg))
        rc = ck_kp_fail(P, P->loss_line, P->loss_col, "%s", msg);
    if (rc) {
        ck_status st = P->st == CK_STATUS_SUCCESS ? CK_STATUS_INTERNAL : P->st;
        put_err(err, err_len, P->msg);
        ck_kp_free(P);
        ck_host_free(ctx, P);
        return st;
    }
    ck_keras_model m;
    memset(&m, 0, sizeof m);
    m.layers = P->layers;
    m.count = P->count;
    P->layers = NULL;
    m.has_compile = P->has_compile;
    m.has_precision = P->made_has_precision; /* the layers' policy: made under it */
    m.precision = P->made_precision;
    if (P->policy_after_line)
        ck_kp_warn(P,
                   "line %d: the dtype policy set there reaches no layer: Keras applies a policy "
                   "to the layers made after the call, and every layer was made before it",
                   P->policy_after_line);
    m.optimizer = P->opt;
    memcpy(m.loss, P->loss, sizeof m.loss);
    m.from_logits = P->from_logits;
    memcpy(m.name, P->model_name, sizeof m.name);
    memcpy(m.input_name, P->input_name, sizeof m.input_name);
    memcpy(m.warnings, P->warn, sizeof m.warnings);
    m.warnings[sizeof m.warnings - 1] = '\0';
    ck_kp_free(P);
    ck_host_free(ctx, P);
    *out = m;
    return CK_STATUS_SUCCESS;
}

void ck_kp_model_free(ck_context *ctx, ck_keras_model *m) {
    if (!m)
        return;
    ck_host_free(ctx, m->layers);
    m->layers = NULL;
    m->count = 0;
}

/* The public parser has no context: its memory is counted nowhere. */
CK_API ck_status ck_keras_parse(const char *text, ck_keras_model *out, char *err, size_t err_len) {
    return ck_kp_parse(NULL, text, out, err, err_len);
}

CK_API void ck_keras_model_free(ck_keras_model *m) {
    ck_kp_model_free(NULL, m);
}

int ck_kp_is_model_value(kp *P, const value *v) {
    if (v->kind != V_NAME || !P->have_model)
        return 0;
    if (v->i == KP_MODEL_ID)
        return 1;
    if (v->i != 0 || strchr(v->s, '.'))
        return 0;
    tok t;
    memset(&t, 0, sizeof t);
    t.kind = TK_NAME;
    t.src = v->s;
    t.len = (int)strlen(v->s);
    return is_model_tok(P, &t);
}

int ck_kp_model_name(kp *P, const tok *t) {
    if ((size_t)t->len >= sizeof P->model_var)
        return ck_kp_fail(P, t->line, t->col,
                          "expected a model variable name of at most %d characters",
                          (int)sizeof P->model_var - 1);
    if (!P->model_var[0]) {
        snprintf(P->model_var, sizeof P->model_var, "%.*s", t->len, t->src);
        return 0;
    }
    if (is_model_tok(P, t))
        return 0;
    if (P->nmodel_alias == (int)(sizeof P->model_alias / sizeof P->model_alias[0]))
        return ck_kp_fail(P, t->line, t->col, "expected the model under at most %d names",
                          (int)(sizeof P->model_alias / sizeof P->model_alias[0]) + 1);
    snprintf(P->model_alias[P->nmodel_alias++], sizeof P->model_alias[0], "%.*s", t->len, t->src);
    return 0;
}
