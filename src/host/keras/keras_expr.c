/* Keras text front end: the layer classes the parser knows and the recursive-descent
 * expression parser (calls, tuples, lists, names, number arithmetic). See keras_internal.h. */
#include "keras_internal.h"
#include "layer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Layer classes known to the parser (for the "missing ')' before the next layer" diagnosis and
 * the list in error messages).
 * ------------------------------------------------------------------------------------------- */
/* The kinds' Keras classes (layer.h) and the input items. */
/* keras.layers.add([a, b]) / concatenate([a, b], axis=-1): Keras's functions that make an Add
 * / Concatenate layer and call it on the list, read as Add()([a, b]) (their other arguments are
 * the layer's). Any other call is v itself. */
const char *ck_kp_merge_layer(const char *fn) {
    return !strcmp(fn, "add") ? "Add" : !strcmp(fn, "concatenate") ? "Concatenate" : NULL;
}

static value *merge_function(kp *P, value *v) {
    const char *cls = ck_kp_last_component(v->s);
    const char *layer = ck_kp_merge_layer(cls);
    const size_t pre = (size_t)(cls - v->s); /* "layers." or "" */
    if (!layer || (pre && (pre < 7 || strncmp(cls - 7, "layers.", 7))) || v->n < 1 ||
        v->args[0].kw || (v->args[0].v->kind != V_LIST && v->args[0].v->kind != V_TUPLE))
        return v;
    value *call = ck_kp_new_value(P, V_CALL, v->line, v->col);
    value *ap = ck_kp_new_value(P, V_APPLY, v->line, v->col);
    value **it = (value **)ck_kp_alloc(P, 2 * sizeof *it);
    if (!call || !ap || !it || !(call->s = ck_kp_printf(P, "%.*s%s", (int)pre, v->s, layer)))
        return NULL;
    call->n = v->n - 1;
    call->args = v->args + 1;
    it[0] = call;
    it[1] = v->args[0].v;
    ap->s = call->s;
    ap->n = 2;
    ap->items = it;
    return ap;
}

static int layer_class_known(const char *s, int len) {
    char name[64];
    if (len <= 0 || (size_t)len >= sizeof name)
        return 0;
    memcpy(name, s, (size_t)len);
    name[len] = 0;
    return !strcmp(name, "Input") || !strcmp(name, "InputLayer") ||
           ck_keras_class_find(name, NULL) != NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Expressions
 * ------------------------------------------------------------------------------------------- */
static const tok *peek_at(kp *P, size_t k) {
    return P->pos + k < P->end ? &P->cur[P->pos + k] : &P->endtok;
}
const tok *ck_kp_peek(kp *P) {
    return peek_at(P, 0);
}
int ck_kp_at_end(kp *P) {
    return P->pos >= P->end;
}
const tok *ck_kp_advance(kp *P) {
    const tok *t = ck_kp_peek(P);
    if (P->pos < P->end)
        P->pos++;
    return t;
}

value *ck_kp_new_value(kp *P, vkind k, int line, int col) {
    value *v = (value *)ck_kp_alloc(P, sizeof *v);
    if (v) {
        v->kind = k;
        v->line = line;
        v->col = col;
    }
    return v;
}

value *ck_kp_unknown(kp *P, int line, int col, const char *why) {
    value *v = ck_kp_new_value(P, V_UNKNOWN, line, col);
    if (v)
        v->s = why;
    return v;
}

const char *ck_kp_vdesc(const value *v, char *buf, size_t n) {
    switch (v->kind) {
    case V_NONE:
        snprintf(buf, n, "None");
        break;
    case V_BOOL:
        snprintf(buf, n, "%s", v->i ? "True" : "False");
        break;
    case V_INT:
        snprintf(buf, n, "the integer %lld", v->i);
        break;
    case V_FLOAT:
        snprintf(buf, n, "the number %g", v->f);
        break;
    case V_STR:
        snprintf(buf, n, "the string '%.40s'", v->s);
        break;
    case V_NAME:
        snprintf(buf, n, "the name '%.60s'", v->s);
        break;
    case V_TUPLE:
        snprintf(buf, n, "a tuple of %d item%s", v->n, v->n == 1 ? "" : "s");
        break;
    case V_LIST:
        snprintf(buf, n, "a list of %d item%s", v->n, v->n == 1 ? "" : "s");
        break;
    case V_CALL:
        snprintf(buf, n, "a call to %.60s(...)", v->s);
        break;
    case V_APPLY:
        snprintf(buf, n, "the layer %.60s(...) applied to a tensor", v->s);
        break;
    case V_UNKNOWN:
        snprintf(buf, n, "%s", v->s);
        break;
    }
    return buf;
}

static int expect_close(kp *P, char want, const tok *open, const char *opener, int comma_ok) {
    const tok *t = ck_kp_peek(P);
    char w[2] = {want, '\0'}, b[96];
    if (ck_kp_is_op(t, w)) {
        ck_kp_advance(P);
        return 0;
    }
    if (ck_kp_at_end(P) && P->recovered)
        return 0; /* closed at the end of the line (recovery) */
    return ck_kp_fail(P, t->line, t->col,
                      "expected %s'%c' to close %s opened at line %d, column %d, "
                      "found %s",
                      comma_ok ? "',' or " : "", want, opener, open->line, open->col,
                      ck_kp_tok_desc(P, t, b, sizeof b));
}

/* Grows an arena array of pointers/structs by doubling. */
void *ck_kp_grow(kp *P, void *old, int n, int *cap, size_t elem) {
    if (n < *cap)
        return old;
    int nc = *cap ? *cap * 2 : 4;
    void *p = ck_kp_alloc(P, (size_t)nc * elem);
    if (!p)
        return NULL;
    if (old)
        memcpy(p, old, (size_t)n * elem);
    *cap = nc;
    return p;
}

/* Tuple (after '(') or list (after '['). A parenthesized single value is returned as is. */
static value *p_seq(kp *P, vkind kind, const tok *open) {
    char want = kind == V_LIST ? ']' : ')';
    char ws[2] = {want, '\0'};
    value **items = NULL;
    int n = 0, cap = 0, comma = 0;
    for (;;) {
        if (ck_kp_is_op(ck_kp_peek(P), ws) || (ck_kp_at_end(P) && P->recovered) ||
            ck_kp_is_close(ck_kp_peek(P)))
            break;
        const size_t item_b = P->pos, item_e = n == 0 ? P->up->comprehension_at(P) : 0;
        if (item_e) { /* [Dense(n) for n in sizes]: the item read only with n bound */
            P->pos = item_e;
            value *c = kind == V_LIST ? P->up->comprehension(P, item_b, item_e) : NULL;
            if (kind != V_LIST)
                ck_kp_fail(P, ck_kp_peek(P)->line, ck_kp_peek(P)->col,
                           "expected a list comprehension, found a generator expression (not "
                           "read)");
            return c && !expect_close(P, want, open, "'['", 1) ? c : NULL;
        }
        value *it = ck_kp_p_expr(P);
        if (!it)
            return NULL;
        items = (value **)ck_kp_grow(P, items, n, &cap, sizeof *items);
        if (!items)
            return NULL;
        items[n++] = it;
        comma = 0;
        if (!ck_kp_is_op(ck_kp_peek(P), ","))
            break;
        ck_kp_advance(P);
        comma = 1;
    }
    if (expect_close(P, want, open, kind == V_LIST ? "'['" : "'('", n > 0 && !comma))
        return NULL;
    if (kind == V_TUPLE && n == 1 && !comma)
        return items[0];
    value *v = ck_kp_new_value(P, kind, open->line, open->col);
    if (v) {
        v->n = n;
        v->items = items;
    }
    return v;
}

/* At an argument: is it `[prefix.]LayerClass(`? Sets *last to the class name token. */
static int nested_layer_at(kp *P, const tok **last) {
    size_t k = 0;
    if (ck_kp_peek(P)->kind != TK_NAME)
        return 0;
    while (ck_kp_is_op(peek_at(P, k + 1), ".") && peek_at(P, k + 2)->kind == TK_NAME)
        k += 2;
    if (!ck_kp_is_op(peek_at(P, k + 1), "("))
        return 0;
    *last = peek_at(P, k);
    return layer_class_known((*last)->src, (*last)->len);
}

/* Arguments of a call, after its '('. layer_call: the callee is a layer class. */
static int p_args(kp *P, value *call, const tok *open, int layer_call) {
    karg *args = NULL;
    int n = 0, cap = 0, seen_kw = 0;
    char opener[96];
    snprintf(opener, sizeof opener, "'%.60s('", call->s);
    for (;;) {
        const tok *t = ck_kp_peek(P);
        if (ck_kp_is_op(t, ")") || (ck_kp_at_end(P) && P->recovered) || ck_kp_is_close(t))
            break; /* a wrong closer is reported by expect_close */
        if (ck_kp_is_op(t, "*") || ck_kp_is_op(t, "**"))
            return ck_kp_fail(P, t->line, t->col,
                              "expected an argument, found '%.*s' (argument unpacking is not "
                              "supported)",
                              t->len, t->src);
        karg a;
        memset(&a, 0, sizeof a);
        a.line = t->line;
        a.col = t->col;
        if (t->kind == TK_NAME && !ck_kp_is_keyword(t) && ck_kp_is_op(peek_at(P, 1), "=")) {
            a.kw = ck_kp_strndup(P, t->src, (size_t)t->len);
            if (!a.kw)
                return -1;
            for (int i = 0; i < n; ++i)
                if (args[i].kw && strcmp(args[i].kw, a.kw) == 0)
                    return ck_kp_fail(P, t->line, t->col,
                                      "expected each argument once, found %s given twice in %s",
                                      a.kw, opener);
            ck_kp_advance(P);
            ck_kp_advance(P);
            seen_kw = 1;
        } else {
            const tok *cls;
            if (layer_call && nested_layer_at(P, &cls)) {
                const tok *prev = &P->cur[P->pos - 1];
                int l = ck_kp_is_op(prev, ",") ? prev->line : t->line;
                int c = ck_kp_is_op(prev, ",") ? prev->col : t->col;
                return ck_kp_fail(P, l, c,
                                  "expected ')' to close %s opened at line %d, column %d, before "
                                  "the next layer %.*s at line %d, column %d",
                                  opener, open->line, open->col, cls->len, cls->src, t->line,
                                  t->col);
            }
            if (seen_kw)
                return ck_kp_fail(P, t->line, t->col,
                                  "expected a keyword argument (name=value) in %s: a positional "
                                  "argument cannot follow keyword arguments",
                                  opener);
        }
        a.v = ck_kp_p_expr(P);
        if (!a.v)
            return -1;
        args = (karg *)ck_kp_grow(P, args, n, &cap, sizeof *args);
        if (!args)
            return -1;
        args[n++] = a;
        if (!ck_kp_is_op(ck_kp_peek(P), ","))
            break;
        ck_kp_advance(P);
    }
    if (expect_close(P, ')', open, opener, 1))
        return -1;
    call->args = args;
    call->n = n;
    return 0;
}

static sym *find_sym(kp *P, const char *name, size_t len) {
    return P->up->lookup(P, name, len);
}

/* Passing the model to a callable the reader does not run (a lambda, a method, a library
 * function) would hide what it does to the model; the ones known to leave it alone pass. */
static int model_arg(kp *P, const value *call) {
    static const char *const leave[] = {"print", "plot_model", "save_model", "summary", "len",
                                        "str",   "repr",       "type",       "id",      NULL};
    const char *fn = ck_kp_last_component(call->s);
    for (int i = 0; leave[i]; ++i)
        if (!strcmp(fn, leave[i]))
            return 0;
    for (int i = 0; i < call->n; ++i)
        if (P->up->is_model_value(P, call->args[i].v))
            return ck_kp_fail(P, call->args[i].line, call->args[i].col,
                              "expected the model passed only to functions cnnkit runs, found it "
                              "passed to %s(...), which cnnkit does not run (it cannot tell what "
                              "that does to the model)",
                              call->s);
    return 0;
}

/* Skips a balanced bracket group starting at the current '[' (or '('). */
static int skip_group(kp *P) {
    const tok *open = ck_kp_advance(P);
    int depth = 1;
    while (depth > 0) {
        if (ck_kp_at_end(P)) {
            if (P->recovered)
                return 0;
            char b[64];
            return ck_kp_fail(P, ck_kp_peek(P)->line, ck_kp_peek(P)->col,
                              "expected '%c' to close '%c' opened at line %d, column %d, found %s",
                              ck_kp_closer_of(open->src[0]), open->src[0], open->line, open->col,
                              ck_kp_tok_desc(P, ck_kp_peek(P), b, sizeof b));
        }
        const tok *t = ck_kp_advance(P);
        if (ck_kp_is_open(t))
            depth++;
        else if (ck_kp_is_close(t))
            depth--;
    }
    return 0;
}

static value *p_primary(kp *P) {
    const tok *t = ck_kp_peek(P);
    value *v = NULL;
    int layer_written = 0; /* v is a layer class call written here (not a variable's value) */
    char b[96];
    if (t->kind == TK_NUMBER) {
        ck_kp_advance(P);
        if (t->bad_number)
            v = ck_kp_unknown(
                P, t->line, t->col,
                ck_kp_printf(P, "the number %.*s, which cnnkit does not read", t->len, t->src));
        else if (t->is_float) {
            v = ck_kp_new_value(P, V_FLOAT, t->line, t->col);
            if (v)
                v->f = t->fval;
        } else if (t->int_overflow)
            v = ck_kp_unknown(
                P, t->line, t->col,
                ck_kp_printf(P, "the integer %.*s, which is too large", t->len, t->src));
        else {
            v = ck_kp_new_value(P, V_INT, t->line, t->col);
            if (v) {
                v->i = t->ival;
                v->f = (double)t->ival;
            }
        }
    } else if (t->kind == TK_STRING) {
        size_t total = 0;
        int fmt = 0;
        for (size_t k = 0; peek_at(P, k)->kind == TK_STRING; ++k) {
            total += strlen(peek_at(P, k)->str);
            fmt |= peek_at(P, k)->fstring && strchr(peek_at(P, k)->str, '{');
        }
        char *s = (char *)ck_kp_alloc(P, total + 1);
        if (!s)
            return NULL;
        while (ck_kp_peek(P)->kind == TK_STRING)
            strcat(s, ck_kp_advance(P)->str);
        if (fmt)
            v = ck_kp_unknown(P, t->line, t->col, "an f-string with replacement fields");
        else if ((v = ck_kp_new_value(P, V_STR, t->line, t->col)) != NULL)
            v->s = s;
    } else if (t->kind == TK_NAME) {
        if (ck_kp_is_name(t, "True") || ck_kp_is_name(t, "False")) {
            ck_kp_advance(P);
            if ((v = ck_kp_new_value(P, V_BOOL, t->line, t->col)) != NULL)
                v->i = ck_kp_is_name(t, "True");
        } else if (ck_kp_is_name(t, "None")) {
            ck_kp_advance(P);
            v = ck_kp_new_value(P, V_NONE, t->line, t->col);
        } else if (ck_kp_is_keyword(t)) {
            ck_kp_fail(P, t->line, t->col, "expected a value, found '%.*s'", t->len, t->src);
            return NULL;
        } else {
            /* dotted name */
            size_t k = 0, total = (size_t)t->len;
            while (ck_kp_is_op(peek_at(P, k + 1), ".") && peek_at(P, k + 2)->kind == TK_NAME &&
                   !ck_kp_is_keyword(peek_at(P, k + 2))) {
                k += 2;
                total += 1 + (size_t)peek_at(P, k)->len;
            }
            char *name = (char *)ck_kp_alloc(P, total + 1);
            if (!name)
                return NULL;
            for (size_t j = 0; j <= k; j += 2) {
                const tok *nt = peek_at(P, j);
                if (j)
                    strcat(name, ".");
                strncat(name, nt->src, (size_t)nt->len);
            }
            P->pos += k + 1;
            if (ck_kp_is_op(ck_kp_peek(P), "(")) {
                for (int a = 0; k == 0 && a < P->naliases; ++a) /* from ... import A as B */
                    if (!strcmp(name, P->aliases[a].alias))
                        name = P->aliases[a].name;
                const tok *open = ck_kp_advance(P);
                if (!(v = ck_kp_new_value(P, V_CALL, t->line, t->col)))
                    return NULL;
                v->s = name;
                const char *cls = ck_kp_last_component(name);
                layer_written = ck_keras_class_find(cls, NULL) != NULL;
                if (p_args(P, v, open, layer_class_known(cls, (int)strlen(cls))))
                    return NULL;
                if (!(v = merge_function(P, v)))
                    return NULL;
                int called = 0;
                if (k == 0 && !layer_written) {
                    /* a variable of the name is what is called (conv=wide: wide), not the
                     * text's function of that name */
                    sym *var = find_sym(P, name, strlen(name));
                    if (var && var->v && var->v->kind == V_NAME && !strchr(var->v->s, '.'))
                        v->s = var->v->s;
                    if (!var || (var->v && var->v->kind == V_NAME)) {
                        value *r = P->up->call(P, v); /* the text's def */
                        if (!r)
                            return NULL;
                        called = r != v;
                        v = r;
                    }
                }
                if (!called && v->kind == V_CALL && model_arg(P, v))
                    return NULL;
            } else {
                sym *s = k == 0 ? find_sym(P, name, total) : NULL;
                if (s && s->v && s->v->kind == V_LIST) {
                    v = s->v; /* a list is an object: every name holding it sees it change */
                } else if (s && s->v) {
                    if (!(v = ck_kp_new_value(P, V_NONE, t->line, t->col)))
                        return NULL;
                    *v = *s->v;
                    v->line = t->line;
                    v->col = t->col;
                } else if (s) {
                    v = ck_kp_unknown(
                        P, t->line, t->col,
                        ck_kp_printf(P, "'%s' (set at line %d to %s)", name, s->line, s->why));
                } else if ((v = ck_kp_new_value(P, V_NAME, t->line, t->col)) != NULL)
                    v->s = name;
            }
        }
    } else if (ck_kp_is_op(t, "(")) {
        v = p_seq(P, V_TUPLE, ck_kp_advance(P));
    } else if (ck_kp_is_op(t, "[")) {
        v = p_seq(P, V_LIST, ck_kp_advance(P));
    } else if (ck_kp_is_op(t, "{")) {
        ck_kp_fail(P, t->line, t->col,
                   "expected a value, found '{' (dicts and sets are not "
                   "supported)");
        return NULL;
    } else {
        ck_kp_fail(P, t->line, t->col, "expected a value, found %s",
                   ck_kp_tok_desc(P, t, b, sizeof b));
        return NULL;
    }
    if (!v)
        return NULL;
    /* trailers on a value: calls of results, attributes, subscripts are not evaluated */
    for (;;) {
        const tok *tr = ck_kp_peek(P);
        if (ck_kp_is_op(tr, "(")) {
            value tmp;
            memset(&tmp, 0, sizeof tmp);
            tmp.s = v->kind == V_CALL ? v->s : "a value";
            ck_kp_advance(P);
            if (p_args(P, &tmp, tr, 0))
                return NULL;
            if (layer_written) { /* the functional API: a new layer called on its input(s) */
                if (tmp.n < 1 || tmp.args[0].kw) {
                    ck_kp_fail(P, tr->line, tr->col,
                               "expected one argument for the layer %s(...): its input tensor, or "
                               "a list of tensors",
                               v->s);
                    return NULL;
                }
                /* training=False / None: fit, evaluate and predict pass their own flag, which
                 * replaces it (Keras 3's functional.py), as cnnkit's do */
                for (int k = 1; k < tmp.n; ++k) {
                    const karg *ka = &tmp.args[k];
                    const int off =
                        ka->kw && !strcmp(ka->kw, "training") &&
                        (ka->v->kind == V_NONE || (ka->v->kind == V_BOOL && ka->v->i == 0));
                    if (!off) {
                        ck_kp_fail(P, ka->line, ka->col,
                                   "expected only the input for the layer %s(...), and at most "
                                   "training=False, found %s%s",
                                   v->s, ka->kw ? ka->kw : "a second argument",
                                   ka->kw && !strcmp(ka->kw, "training")
                                       ? "=True (a dropout that stays on outside training is "
                                         "not supported)"
                                       : "");
                        return NULL;
                    }
                }
                value *ap = ck_kp_new_value(P, V_APPLY, v->line, v->col);
                value **it = (value **)ck_kp_alloc(P, 2 * sizeof *it);
                if (!ap || !it)
                    return NULL;
                it[0] = v;
                it[1] = tmp.args[0].v;
                ap->s = v->s;
                ap->n = 2;
                ap->items = it;
                v = ap;
                layer_written = 0;
                continue;
            }
            const char *cls = v->kind == V_CALL ? ck_kp_last_component(v->s) : "";
            v = ck_kp_unknown(
                P, v->line, v->col,
                v->kind != V_CALL ? "a call expression that cnnkit does not evaluate"
                : ck_keras_class_find(cls, NULL)
                    ? ck_kp_printf(P,
                                   "a call of the result of %s(...) (a layer kept in a variable "
                                   "and called: shared layers are not supported)",
                                   v->s)
                : cls[0] >= 'A' && cls[0] <= 'Z'
                    ? ck_kp_printf(P, "the output of %s(...), a layer class cnnkit does not have",
                                   v->s)
                    : ck_kp_printf(P,
                                   "a call of the result of %s(...), which cnnkit does not "
                                   "evaluate",
                                   v->s));
        } else if (ck_kp_is_op(tr, ".") && peek_at(P, 1)->kind == TK_NAME) {
            P->pos += 2;
            v = ck_kp_unknown(P, v->line, v->col,
                              "an attribute expression that cnnkit does not "
                              "evaluate");
        } else if (ck_kp_is_op(tr, "[")) {
            if (skip_group(P))
                return NULL;
            v = ck_kp_unknown(P, v->line, v->col,
                              "a subscript expression, which cnnkit does not evaluate");
        } else
            break;
        if (!v)
            return NULL;
    }
    return v;
}

int ck_kp_is_num(const value *v) {
    return v->kind == V_INT || v->kind == V_FLOAT;
}

/* Python arithmetic on numbers; anything else (or overflow) is an unknown value. */
value *ck_kp_arith(kp *P, const tok *op, value *a, value *b) {
    if (a->kind == V_UNKNOWN || b->kind == V_UNKNOWN) /* why it is not known, kept */
        return a->kind == V_UNKNOWN ? a : b;
    if (ck_kp_is_op(op, "+") && a->kind == b->kind && (a->kind == V_TUPLE || a->kind == V_LIST)) {
        value *v = ck_kp_new_value(P, a->kind, a->line, a->col); /* (180, 180) + (3,) */
        value **it = (value **)ck_kp_alloc(P, sizeof *it * (size_t)(a->n + b->n + 1));
        if (!v || !it)
            return NULL;
        if (a->n) /* an empty one has no items array */
            memcpy(it, a->items, sizeof *it * (size_t)a->n);
        if (b->n)
            memcpy(it + a->n, b->items, sizeof *it * (size_t)b->n);
        v->items = it;
        v->n = a->n + b->n;
        return v;
    }
    const int seq_a = a->kind == V_TUPLE || a->kind == V_LIST;
    if (ck_kp_is_op(op, "*") && (seq_a ? b : a)->kind == V_INT &&
        ((seq_a ? a : b)->kind == V_TUPLE || (seq_a ? a : b)->kind == V_LIST)) {
        const value *q = seq_a ? a : b; /* (28,) * 2 */
        const long long times = (seq_a ? b : a)->i < 0 ? 0 : (seq_a ? b : a)->i;
        for (int i = 0; i < q->n; ++i) /* [Dense(64)] * 3 is one layer three times in Keras */
            if (q->items[i]->kind == V_APPLY ||
                (q->items[i]->kind == V_CALL &&
                 ck_keras_class_find(ck_kp_last_component(q->items[i]->s), NULL)))
                return ck_kp_unknown(P, a->line, a->col,
                                     "a list of layers repeated with *: Keras shares the one "
                                     "layer (its weights) at each place, which cnnkit does not");
        if (times > 4096 || (long long)q->n * times > 4096)
            return ck_kp_unknown(P, a->line, a->col, "a repeated sequence of over 4096 items");
        value *v = ck_kp_new_value(P, q->kind, a->line, a->col);
        value **it = (value **)ck_kp_alloc(P, sizeof *it * (size_t)(q->n * times + 1));
        if (!v || !it)
            return NULL;
        for (long long r = 0; q->n && r < times; ++r)
            memcpy(it + r * q->n, q->items, sizeof *it * (size_t)q->n);
        v->items = it;
        v->n = (int)(q->n * times);
        return v;
    }
    if (!ck_kp_is_num(a) || !ck_kp_is_num(b))
        return ck_kp_unknown(P, a->line, a->col,
                             "an arithmetic expression on values that are not numbers");
    int ints = a->kind == V_INT && b->kind == V_INT;
    double x = a->f, y = b->f, r;
    long long ri = 0;
    int int_result = 0;
    if (ck_kp_is_op(op, "+") || ck_kp_is_op(op, "-") || ck_kp_is_op(op, "*")) {
        r = ck_kp_is_op(op, "+") ? x + y : ck_kp_is_op(op, "-") ? x - y : x * y;
        if (ints) {
            if (fabs(r) >= 4e18)
                return ck_kp_unknown(P, a->line, a->col, "an integer expression that overflows");
            ri = ck_kp_is_op(op, "+")   ? a->i + b->i
                 : ck_kp_is_op(op, "-") ? a->i - b->i
                                        : a->i * b->i;
            int_result = 1;
        }
    } else if (ck_kp_is_op(op, "/") || ck_kp_is_op(op, "//") || ck_kp_is_op(op, "%")) {
        if (y == 0.0)
            return ck_kp_unknown(P, a->line, a->col, "a division by zero");
        if (ck_kp_is_op(op, "/"))
            r = x / y;
        else if (ints) {
            long long q = a->i / b->i, m = a->i % b->i;
            if (m != 0 && ((m < 0) != (b->i < 0))) {
                q -= 1;
                m += b->i;
            }
            ri = ck_kp_is_op(op, "//") ? q : m;
            r = (double)ri;
            int_result = 1;
        } else if (ck_kp_is_op(op, "//"))
            r = floor(x / y);
        else {
            r = fmod(x, y);
            if (r != 0.0 && ((r < 0) != (y < 0)))
                r += y;
        }
    } else if (ck_kp_is_op(op, "**")) {
        if (ints && b->i >= 0) {
            long long p = 1;
            for (long long k = 0; k < b->i; ++k) {
                if (a->i != 0 && (p > 4000000000000000000LL / (a->i < 0 ? -a->i : a->i)))
                    return ck_kp_unknown(P, a->line, a->col,
                                         "an integer expression that overflows");
                p *= a->i;
                if (p == 0 || p == 1)
                    break;
            }
            if (p == 1 && a->i == -1 && (b->i % 2))
                p = -1;
            ri = p;
            r = (double)p;
            int_result = 1;
        } else {
            if (x < 0 && floor(y) != y)
                return ck_kp_unknown(P, a->line, a->col, "a complex power");
            r = pow(x, y);
        }
    } else {
        return ck_kp_unknown(P, a->line, a->col, "an expression that cnnkit does not evaluate");
    }
    value *v = ck_kp_new_value(P, int_result ? V_INT : V_FLOAT, a->line, a->col);
    if (v) {
        v->i = ri;
        v->f = int_result ? (double)ri : r;
    }
    return v;
}

static value *p_unary(kp *P);

static value *p_power(kp *P) {
    value *a = p_primary(P);
    if (a && ck_kp_is_op(ck_kp_peek(P), "**")) {
        const tok *op = ck_kp_advance(P);
        value *b = p_unary(P);
        return b ? ck_kp_arith(P, op, a, b) : NULL;
    }
    return a;
}

static value *p_unary(kp *P) {
    const tok *t = ck_kp_peek(P);
    if (ck_kp_is_op(t, "-") || ck_kp_is_op(t, "+")) {
        ck_kp_advance(P);
        if (++P->depth > KP_MAX_DEPTH) {
            ck_kp_fail(P, t->line, t->col, "expected an expression nested at most %d deep",
                       KP_MAX_DEPTH);
            return NULL;
        }
        value *a = p_unary(P);
        P->depth--;
        if (!a)
            return NULL;
        if (!ck_kp_is_num(a))
            return ck_kp_unknown(P, t->line, t->col,
                                 "a signed expression on a value that is not a number");
        value *v = ck_kp_new_value(P, a->kind, t->line, t->col);
        if (v) {
            v->i = ck_kp_is_op(t, "-") ? -a->i : a->i;
            v->f = ck_kp_is_op(t, "-") ? -a->f : a->f;
        }
        return v;
    }
    return p_power(P);
}

static value *p_term(kp *P) {
    value *a = p_unary(P);
    while (a) {
        const tok *t = ck_kp_peek(P);
        if (!(ck_kp_is_op(t, "*") || ck_kp_is_op(t, "/") || ck_kp_is_op(t, "//") ||
              ck_kp_is_op(t, "%") || ck_kp_is_op(t, "@")))
            break;
        ck_kp_advance(P);
        value *b = p_unary(P);
        a = b ? ck_kp_arith(P, t, a, b) : NULL;
    }
    return a;
}

value *ck_kp_p_expr(kp *P) {
    const tok *t0 = ck_kp_peek(P);
    if (++P->depth > KP_MAX_DEPTH) {
        ck_kp_fail(P, t0->line, t0->col, "expected an expression nested at most %d deep",
                   KP_MAX_DEPTH);
        return NULL;
    }
    const size_t cond = P->up->ternary_at(P); /* a if c else b: c first, one branch read */
    if (cond) {
        value *v = P->up->ternary(P, cond);
        P->depth--;
        return v;
    }
    const size_t test_end = P->up->test_end(P); /* a comparison, and / or / not */
    value *a = test_end ? P->up->test_expr(P, test_end) : p_term(P);
    while (a && !test_end) {
        const tok *t = ck_kp_peek(P);
        if (!(ck_kp_is_op(t, "+") || ck_kp_is_op(t, "-")))
            break;
        ck_kp_advance(P);
        value *b = p_term(P);
        a = b ? ck_kp_arith(P, t, a, b) : NULL;
    }
    P->depth--;
    return a;
}

int ck_kp_expect_end(kp *P) {
    if (ck_kp_at_end(P))
        return 0;
    char b[96];
    const tok *t = ck_kp_peek(P);
    return ck_kp_fail(P, t->line, t->col, "expected the end of the statement, found %s",
                      ck_kp_tok_desc(P, t, b, sizeof b));
}

/* Parses one whole expression up to the end of the statement. */
value *ck_kp_p_full_expr(kp *P) {
    value *v = ck_kp_p_expr(P);
    return v && !ck_kp_expect_end(P) ? v : NULL;
}
