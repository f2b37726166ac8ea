/* Keras text front end: the parts of Python the reader runs (keras_internal.h).
 *
 *  - Conditions of if / elif and of conditional expressions (a if c else b): constants,
 *    comparisons (== != < <= > >= in, not in, is, is not; chained), and / or / not. A condition
 *    on a value the reader does not know is not known: its block is not run (keras_stmt.c).
 *  - Calls of the text's own functions: a def is recorded where it is written (its defaults
 *    evaluated there, as Python does) and its body is read at each call, with the arguments
 *    bound to its parameters; its names are its own; `return` gives the call's value (a tensor,
 *    a number, the model, ...).
 *  - for loops over sequences the reader knows (range of integers, a list or tuple, enumerate
 *    and zip of them), with break and continue, and the loop's else.
 * Everything else about Python is not run: while loops, loops over unknown sequences and
 * branches on unknown conditions stay opaque (a name changed there is unknown after, model
 * statements there are refused). */
#include "keras_internal.h"

#include <stdio.h>
#include <string.h>

#define KP_MAX_CALL_DEPTH KP_MAX_CALL_DEPTH_
#define KP_MAX_ITEMS 4096 /* items of one for loop */

static int tok_is(const tok *t, const char *name) {
    return t->kind == TK_NAME && ck_kp_is_name(t, name);
}

static int is_open(const tok *t) {
    return ck_kp_is_op(t, "(") || ck_kp_is_op(t, "[") || ck_kp_is_op(t, "{");
}

static int is_close(const tok *t) {
    return ck_kp_is_op(t, ")") || ck_kp_is_op(t, "]") || ck_kp_is_op(t, "}");
}

/* ---------------------------------------------------------------------------------------------
 * Conditions
 * ------------------------------------------------------------------------------------------- */
/* A value Python's comparisons can judge here: a constant, a tuple or list of them, a tensor
 * or the model (never None, never equal to a constant). */
static int known_d(const value *v, int depth) {
    if (depth > KP_MAX_DEPTH) /* a list nested deeper than an expression can be: not judged */
        return 0;
    switch (v->kind) {
    case V_NONE:
    case V_BOOL:
    case V_INT:
    case V_FLOAT:
    case V_STR:
        return 1;
    case V_TUPLE:
    case V_LIST:
        for (int i = 0; i < v->n; ++i)
            if (!known_d(v->items[i], depth + 1))
                return 0;
        return 1;
    case V_NAME:
        return v->i != 0; /* a tensor (its id) or the model */
    default:
        return 0;
    }
}

static int known(const value *v) {
    return known_d(v, 0);
}

static int is_number(const value *v) {
    return v->kind == V_INT || v->kind == V_FLOAT || v->kind == V_BOOL;
}

static double num(const value *v) {
    return v->kind == V_FLOAT ? v->f : (double)v->i;
}

/* a == b as Python decides it for known values (checked by the caller); integers exactly */
static int equal_known(const value *a, const value *b) {
    if (is_number(a) && is_number(b))
        return a->kind != V_FLOAT && b->kind != V_FLOAT ? a->i == b->i : num(a) == num(b);
    if (a->kind != b->kind)
        return 0;
    switch (a->kind) {
    case V_NONE:
        return 1;
    case V_STR:
        return !strcmp(a->s, b->s);
    case V_TUPLE:
    case V_LIST:
        if (a->n != b->n)
            return 0;
        for (int i = 0; i < a->n; ++i)
            if (!equal_known(a->items[i], b->items[i]))
                return 0;
        return 1;
    default:
        return a->i == b->i; /* the same tensor */
    }
}

/* a == b; -1 when either is not known */
static int equal(const value *a, const value *b) {
    return known(a) && known(b) ? equal_known(a, b) : -1;
}

/* Truth of a value: 1, 0, or -1 when not known. */
static int truth(const value *v) {
    if (!known(v))
        return -1;
    switch (v->kind) {
    case V_NONE:
        return 0;
    case V_STR:
        return v->s[0] != '\0';
    case V_TUPLE:
    case V_LIST:
        return v->n != 0;
    case V_NAME:
        return 1;
    default:
        return num(v) != 0.0;
    }
}

/* The value of tokens [k0, k1) of the statement; NULL (the failure cleared) when the reader
 * cannot read it. K.image_data_format() is 'channels_last', as cnnkit (and Keras by default). */
static value *side(kp *P, size_t k0, size_t k1) {
    const size_t end = P->end, pos = P->pos;
    P->pos = k0;
    P->end = k1;
    value *v = k0 < k1 ? ck_kp_p_full_expr(P) : NULL;
    P->end = end;
    P->pos = pos;
    if (!v) {
        if (P->st != CK_STATUS_ALLOC_FAILED && !P->hard) { /* a failed call's body stays */
            P->failed = 0;
            P->st = CK_STATUS_SUCCESS;
            P->msg[0] = '\0';
        }
        return NULL;
    }
    if (v->kind == V_CALL && v->n == 0 &&
        !strcmp(ck_kp_last_component(v->s), "image_data_format")) {
        v->kind = V_STR;
        v->s = "channels_last";
    }
    return v;
}

/* The first token in [b, e) at bracket depth 0 that is the keyword kw, or e. */
static size_t find_top(kp *P, size_t b, size_t e, const char *kw) {
    int depth = 0;
    for (size_t k = b; k < e; ++k) {
        const tok *t = &P->cur[k];
        if (is_open(t))
            ++depth;
        else if (is_close(t))
            --depth;
        else if (depth == 0 && tok_is(t, kw))
            return k;
    }
    return e;
}

enum { CMP_NONE, CMP_EQ, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE, CMP_IN, CMP_NIN, CMP_IS, CMP_ISN };

/* The comparison operator at token k (its length in tokens in *len), or CMP_NONE. */
static int cmp_at(kp *P, size_t k, size_t e, int *len) {
    static const struct {
        const char *op;
        int c;
    } ops[] = {{"==", CMP_EQ}, {"!=", CMP_NE}, {"<=", CMP_LE},
               {">=", CMP_GE}, {"<", CMP_LT},  {">", CMP_GT}};
    const tok *t = &P->cur[k];
    *len = 1;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; ++i)
        if (ck_kp_is_op(t, ops[i].op))
            return ops[i].c;
    if (tok_is(t, "in"))
        return CMP_IN;
    if (tok_is(t, "not") && k + 1 < e && tok_is(&P->cur[k + 1], "in"))
        return *len = 2, CMP_NIN;
    if (tok_is(t, "is"))
        return k + 1 < e && tok_is(&P->cur[k + 1], "not") ? (*len = 2, CMP_ISN) : CMP_IS;
    return CMP_NONE;
}

static int compare(int op, const value *a, const value *b) {
    switch (op) {
    case CMP_EQ:
    case CMP_NE: {
        const int eq = equal(a, b);
        return eq < 0 ? -1 : op == CMP_EQ ? eq : !eq;
    }
    case CMP_IS:
    case CMP_ISN: { /* identity: decided for None and the bools, the only singletons here */
        const int single =
            a->kind == V_NONE || b->kind == V_NONE || (a->kind == V_BOOL && b->kind == V_BOOL);
        const int eq = single ? equal(a, b) : -1;
        return eq < 0 ? -1 : op == CMP_IS ? eq : !eq;
    }
    case CMP_IN:
    case CMP_NIN: {
        int in = -1;
        if (b->kind == V_TUPLE || b->kind == V_LIST) {
            in = 0;
            for (int i = 0; i < b->n && in == 0; ++i) {
                const int eq = equal(a, b->items[i]);
                in = eq < 0 ? -1 : eq;
            }
        } else if (a->kind == V_STR && b->kind == V_STR)
            in = strstr(b->s, a->s) != NULL;
        return in < 0 ? -1 : op == CMP_IN ? in : !in;
    }
    default:
        if (is_number(a) && is_number(b) && a->kind != V_FLOAT && b->kind != V_FLOAT) {
            const long long x = a->i, y = b->i; /* integers exactly (2**53 + 1 > 2**53) */
            return op == CMP_LT ? x < y : op == CMP_LE ? x <= y : op == CMP_GT ? x > y : x >= y;
        }
        if (is_number(a) && is_number(b)) {
            const double x = num(a), y = num(b);
            return op == CMP_LT ? x < y : op == CMP_LE ? x <= y : op == CMP_GT ? x > y : x >= y;
        }
        if (a->kind == V_STR && b->kind == V_STR) {
            const int c = strcmp(a->s, b->s);
            return op == CMP_LT ? c < 0 : op == CMP_LE ? c <= 0 : op == CMP_GT ? c > 0 : c >= 0;
        }
        return -1;
    }
}

static value *bool_value(kp *P, int c, size_t k) {
    const tok *t = &P->cur[k];
    if (c < 0)
        return ck_kp_unknown(P, t->line, t->col, "a condition on values that cnnkit does not know");
    value *v = ck_kp_new_value(P, V_BOOL, t->line, t->col);
    if (v)
        v->i = c;
    return v;
}

/* A comparison chain a < b < c (each operand read once): a bool; one operand: its value. */
static value *test_cmp(kp *P, size_t b, size_t e) {
    value *left = NULL;
    int result = 1, depth = 0, len;
    for (size_t k = b; k < e; ++k) {
        const tok *t = &P->cur[k];
        if (is_open(t)) {
            ++depth;
            continue;
        }
        if (is_close(t)) {
            --depth;
            continue;
        }
        const int op = depth == 0 && k > b ? cmp_at(P, k, e, &len) : CMP_NONE;
        if (op == CMP_NONE)
            continue;
        if (!left && !(left = side(P, b, k)))
            return NULL;
        /* the right operand: up to the next comparison at depth 0 */
        const size_t k1 = k + (size_t)len;
        size_t r = k1;
        for (int d = 0, l2; r < e; ++r) {
            if (is_open(&P->cur[r]))
                ++d;
            else if (is_close(&P->cur[r]))
                --d;
            else if (d == 0 && r > k1 && cmp_at(P, r, e, &l2) != CMP_NONE)
                break;
        }
        value *right = side(P, k1, r);
        if (!right)
            return NULL;
        const int c = compare(op, left, right);
        if (c == 0)
            return bool_value(P, 0, b);
        if (c < 0)
            result = -1;
        left = right;
        k = r - 1;
    }
    return left ? bool_value(P, result, b) : side(P, b, e);
}

static value *test_not(kp *P, size_t b, size_t e) {
    if (b < e && tok_is(&P->cur[b], "not")) {
        if (++P->depth > KP_MAX_DEPTH) {
            ck_kp_fail(P, P->cur[b].line, P->cur[b].col,
                       "expected an expression nested at most %d deep", KP_MAX_DEPTH);
            return NULL;
        }
        const value *v = test_not(P, b + 1, e);
        P->depth--;
        const int c = v ? truth(v) : 0;
        return v ? bool_value(P, c < 0 ? c : !c, b) : NULL;
    }
    return test_cmp(P, b, e);
}

/* a and b / a or b (is_and 0): Python's value, the first operand that decides, read in order */
static value *test_bool(kp *P, size_t b, size_t e, int is_and) {
    for (size_t k = b;;) {
        const size_t x = find_top(P, k, e, is_and ? "and" : "or");
        value *v = is_and ? test_not(P, k, x) : test_bool(P, k, x, 1);
        if (!v || x == e)
            return v;
        const int c = truth(v);
        if (c < 0)
            return bool_value(P, -1, b);
        if (c == !is_and)
            return v;
        k = x + 1;
    }
}

/* Tokens [b, e) as a test: the value (NULL: the failure stays set, a call's body failed or
 * memory ran out; anything the reader cannot read is an unknown value). */
static value *test(kp *P, size_t b, size_t e) {
    value *v = test_bool(P, b, e, 0);
    if (!v && !P->failed)
        return bool_value(P, -1, b);
    return v;
}

int ck_kp_condition(kp *P, size_t b, size_t e) {
    if (b >= e || find_top(P, b, e, "lambda") < e)
        return -1;
    const value *v = test(P, b, e);
    return v ? truth(v) : -2;
}

size_t ck_kp_test_end(kp *P) {
    int depth = 0, len, ops = 0;
    size_t k = P->pos;
    for (; k < P->end; ++k) {
        const tok *t = &P->cur[k];
        if (is_open(t))
            ++depth;
        else if (is_close(t) && --depth < 0)
            break;
        else if (depth == 0) {
            if (ck_kp_is_op(t, ",") || ck_kp_is_op(t, ":") || ck_kp_is_op(t, "=") ||
                tok_is(t, "for") || tok_is(t, "if") || tok_is(t, "else") || tok_is(t, "lambda"))
                break;
            ops |= tok_is(t, "and") || tok_is(t, "or") || tok_is(t, "not") ||
                   (k > P->pos && cmp_at(P, k, P->end, &len) != CMP_NONE);
        }
    }
    return ops ? k : 0;
}

value *ck_kp_test_expr(kp *P, size_t e) {
    value *v = test(P, P->pos, e);
    P->pos = e;
    return v;
}

/* The end of the expression from token k: the first ',', ':', '=', 'for' or 'lambda' at depth 0,
 * or closing bracket below it; a conditional expression's if / else are inside it. */
static size_t expr_end(kp *P, size_t k) {
    for (int d = 0; k < P->end; ++k) {
        const tok *t = &P->cur[k];
        if (is_open(t))
            ++d;
        else if (is_close(t) && --d < 0)
            break;
        else if (d == 0 && (ck_kp_is_op(t, ",") || ck_kp_is_op(t, ":") || ck_kp_is_op(t, "=") ||
                            tok_is(t, "for") || tok_is(t, "lambda")))
            break;
    }
    return k;
}

size_t ck_kp_ternary_at(kp *P) {
    const size_t e = expr_end(P, P->pos), i = find_top(P, P->pos, e, "if");
    return i > P->pos && i < e ? i : 0;
}

value *ck_kp_ternary(kp *P, size_t at) {
    const tok *t = &P->cur[at];
    const size_t b = P->pos, e = expr_end(P, at), els = find_top(P, at + 1, e, "else");
    if (els == e) {
        ck_kp_fail(P, t->line, t->col, "expected 'else' in the conditional expression");
        return NULL;
    }
    /* as Python: the condition first, then only the branch it picks */
    const int c = ck_kp_condition(P, at + 1, els);
    if (c == -2)
        return NULL;
    value *v;
    if (c == 1) {
        const size_t end = P->end;
        P->end = at;
        v = ck_kp_p_full_expr(P);
        P->end = end;
        P->pos = e;
    } else if (c == 0) {
        P->pos = els + 1;
        v = ck_kp_p_expr(P);
    } else {
        v = ck_kp_unknown(P, P->cur[b].line, P->cur[b].col,
                          "a conditional expression whose condition cnnkit cannot read");
        P->pos = e;
    }
    return v;
}

size_t ck_kp_comprehension_at(kp *P) {
    const size_t e = expr_end(P, P->pos);
    return e < P->end && e > P->pos && tok_is(&P->cur[e], "for") ? e : 0;
}

/* ---------------------------------------------------------------------------------------------
 * Functions
 * ------------------------------------------------------------------------------------------- */
/* Whether a def made in the call with id frame is in scope now: in that call's own body, or in
 * a function it defined (closures, to any depth). */
static int fn_visible(kp *P, int frame) {
    if (frame == 0)
        return 1;
    for (int id = P->call_depth ? P->frame_id[P->call_depth] : 0, d = P->call_depth; id;) {
        if (id == frame)
            return 1;
        /* the call that defined the function running as id */
        int next = 0;
        for (int e = d; e >= 1; --e)
            if (P->frame_id[e] == id) {
                next = P->frame_closure[e];
                d = e - 1;
                break;
            }
        id = next;
    }
    return 0;
}

static kp_fn *find_fn(kp *P, const char *name) {
    for (int i = P->nfns - 1; i >= 0; --i)
        if (!strcmp(P->fns[i].name, name) && fn_visible(P, P->fns[i].def_frame))
            return &P->fns[i];
    return NULL;
}

int ck_kp_is_fn(kp *P, const tok *t) {
    char name[48];
    if (t->kind != TK_NAME || t->len >= (int)sizeof name)
        return 0;
    snprintf(name, sizeof name, "%.*s", t->len, t->src);
    return find_fn(P, name) != NULL;
}

/* One parameter, tokens [k, pe) of the def's parameter list. */
static int def_param(kp *P, kp_fn *f, size_t k, size_t pe, int *kw_only) {
    const tok *t = &P->cur[k];
    if (ck_kp_is_op(t, "/"))
        return 0;
    if (ck_kp_is_op(t, "*") && k + 1 == pe) { /* bare *: keyword-only parameters follow */
        *kw_only = 1;
        return 0;
    }
    int kind = *kw_only ? KP_PARAM_KW : KP_PARAM_PLAIN;
    if (ck_kp_is_op(t, "*") || ck_kp_is_op(t, "**")) {
        kind = ck_kp_is_op(t, "*") ? KP_PARAM_ARGS : KP_PARAM_KWARGS;
        *kw_only |= kind == KP_PARAM_ARGS;
        if (++k == pe)
            return ck_kp_fail(P, t->line, t->col, "expected a parameter name in the def of '%s'",
                              f->name);
        t = &P->cur[k];
    }
    if (t->kind != TK_NAME || ck_kp_is_keyword(t))
        return ck_kp_fail(P, t->line, t->col, "expected a parameter name in the def of '%s'",
                          f->name);
    if (f->nparams == KP_MAX_FN_PARAMS)
        return ck_kp_fail(P, t->line, t->col, "expected at most %d parameters for '%s'",
                          KP_MAX_FN_PARAMS, f->name);
    kp_param *p = &f->params[f->nparams++];
    memset(p, 0, sizeof *p);
    p->kind = kind;
    if (!(p->name = ck_kp_strndup(P, t->src, (size_t)t->len)))
        return -1;
    size_t eq = k + 1;
    for (int d = 0; eq < pe; ++eq) { /* past an annotation (x: int = 3) */
        if (is_open(&P->cur[eq]))
            ++d;
        else if (is_close(&P->cur[eq]))
            --d;
        else if (d == 0 && ck_kp_is_op(&P->cur[eq], "="))
            break;
    }
    if (eq < pe) { /* the default, evaluated at the def as Python does */
        p->def = side(P, eq + 1, pe);
        if (!p->def) {
            if (P->failed)
                return -1;
            p->def = ck_kp_unknown(P, t->line, t->col,
                                   ck_kp_printf(P,
                                                "the default of parameter '%s' of '%s' (line %d), "
                                                "which cnnkit cannot read",
                                                p->name, f->name, f->line));
            if (!p->def)
                return -1;
        }
    }
    return 0;
}

int ck_kp_def(kp *P, size_t b, size_t e, size_t body_b, size_t body_e) {
    const tok *nm = b + 1 < e ? &P->cur[b + 1] : NULL;
    if (!nm || nm->kind != TK_NAME || b + 2 >= e || !ck_kp_is_op(&P->cur[b + 2], "("))
        return 0;
    kp_fn *f = NULL;
    for (int i = 0; i < P->nfns && !f; ++i) /* the same def read again (a def inside a body) */
        if (P->fns[i].line == nm->line && P->fns[i].col == nm->col)
            f = &P->fns[i];
    if (!f) {
        if (P->nfns == KP_MAX_FNS)
            return ck_kp_fail(P, nm->line, nm->col, "expected at most %d functions, found more",
                              KP_MAX_FNS);
        f = &P->fns[P->nfns++];
    }
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%.*s", nm->len > 47 ? 47 : nm->len, nm->src);
    f->line = nm->line;
    f->col = nm->col;
    f->indent = P->cur[b].col;
    f->body_b = body_b;
    f->body_e = body_e;
    f->def_frame = P->call_depth ? P->frame_id[P->call_depth] : 0;
    int depth = 0, kw_only = 0;
    size_t k0 = b + 3;
    for (size_t k = b + 3; k < e; ++k) {
        const tok *t = &P->cur[k];
        const int close = is_close(t) && depth == 0;
        if (is_open(t))
            ++depth;
        else if (is_close(t) && depth > 0)
            --depth;
        if (depth == 0 && (close || ck_kp_is_op(t, ","))) {
            if (k > k0 && def_param(P, f, k0, k, &kw_only))
                return -1;
            k0 = k + 1;
            if (close)
                break;
        }
    }
    return 0;
}

/* The parameter of f that keyword kw names (not *args / **kwargs), or -1. */
static int param_index(const kp_fn *f, const char *kw) {
    for (int i = 0; i < f->nparams; ++i)
        if (f->params[i].kind <= KP_PARAM_KW && !strcmp(f->params[i].name, kw))
            return i;
    return -1;
}

/* The call's arguments bound to f's parameters (vals), Python's rules. */
static int bind(kp *P, const kp_fn *f, const value *call, value **vals) {
    int next = 0, extra = 0, args_at = -1, kwargs_at = -1;
    value *star[KP_MAX_FN_PARAMS * 2];
    for (int i = 0; i < f->nparams; ++i) {
        vals[i] = NULL;
        if (f->params[i].kind == KP_PARAM_ARGS)
            args_at = i;
        if (f->params[i].kind == KP_PARAM_KWARGS)
            kwargs_at = i;
    }
    for (int a = 0; a < call->n; ++a) {
        const karg *g = &call->args[a];
        if (!g->kw) {
            while (next < f->nparams && f->params[next].kind != KP_PARAM_PLAIN)
                ++next;
            if (next < f->nparams) {
                vals[next++] = g->v;
                continue;
            }
            if (args_at < 0 || extra == (int)(sizeof star / sizeof *star))
                return ck_kp_fail(P, g->line, g->col,
                                  "expected at most %d positional arguments for '%s' (line %d), "
                                  "found more",
                                  next, f->name, f->line);
            star[extra++] = g->v;
            continue;
        }
        const int i = param_index(f, g->kw);
        if (i < 0) {
            if (kwargs_at >= 0)
                continue;
            return ck_kp_fail(P, g->line, g->col,
                              "unknown argument %s for '%s' (line %d): it has no such parameter",
                              g->kw, f->name, f->line);
        }
        if (vals[i])
            return ck_kp_fail(P, g->line, g->col, "argument %s of '%s' given twice", g->kw,
                              f->name);
        vals[i] = g->v;
    }
    for (int i = 0; i < f->nparams; ++i) {
        const kp_param *p = &f->params[i];
        if (p->kind == KP_PARAM_ARGS || p->kind == KP_PARAM_KWARGS) {
            value *v = ck_kp_new_value(P, p->kind == KP_PARAM_ARGS ? V_TUPLE : V_UNKNOWN,
                                       call->line, call->col);
            if (!v)
                return -1;
            if (p->kind == KP_PARAM_ARGS) {
                v->items = (value **)ck_kp_alloc(P, sizeof *v->items * (size_t)(extra + 1));
                if (!v->items)
                    return -1;
                memcpy(v->items, star, sizeof *star * (size_t)extra);
                v->n = extra;
            } else
                v->s = "keyword arguments collected by **, which cnnkit does not read";
            vals[i] = v;
        } else if (!vals[i] && !(vals[i] = p->def))
            return ck_kp_fail(P, call->line, call->col,
                              "expected argument %s of '%s' (line %d), found none", p->name,
                              f->name, f->line);
    }
    return 0;
}

static int is_model(kp *P, const value *v) {
    return P->up->is_model_value(P, v);
}

static sym *scan_k(sym *from, sym *to, const char *name, size_t len, int own) {
    for (sym *s = from; s && s != to; s = s->next)
        if ((own || !s->comprehension) && strlen(s->name) == len && memcmp(s->name, name, len) == 0)
            return s;
    return NULL;
}

/* outside the scope being read a comprehension's names are not seen (Python's own scope) */
static sym *scan(sym *from, sym *to, const char *name, size_t len) {
    return scan_k(from, to, name, len, 0);
}

sym *ck_kp_lookup(kp *P, const char *name, size_t len) {
    sym *s = scan_k(P->syms, P->scope, name, len, 1);
    const int d = P->call_depth;
    if (s || d == 0)
        return s;
    /* the defining calls' names, innermost first, then the module's */
    for (int id = P->frame_closure[d], f = d - 1; id && f >= 1;) {
        int e = f;
        while (e >= 1 && P->frame_id[e] != id)
            --e;
        if (e < 1)
            break;
        if ((s = scan(P->frame_scope[e + 1], P->frame_scope[e], name, len)))
            return s;
        id = P->frame_closure[e];
        f = e - 1;
    }
    return scan(P->frame_scope[1], NULL, name, len);
}

/* The statement state a call replaces, restored when it returns. */
typedef struct saved {
    sym *syms, *scope;
    ktensor *tensors;
    tok *cur;
    size_t ncur, curcap, pos, end;
    tok endtok;
    int recovered, depth, nblocks, chain_indent, chain_taken, chain_known;
    char model_var[64];
} saved;

static void save(kp *P, saved *s) {
    s->syms = P->syms;
    s->scope = P->scope;
    P->scope = P->syms; /* the call's names start here */
    s->tensors = P->tensors;
    s->cur = P->cur;
    s->ncur = P->ncur;
    s->curcap = P->curcap;
    s->pos = P->pos;
    s->end = P->end;
    s->endtok = P->endtok;
    s->recovered = P->recovered;
    s->depth = P->depth;
    s->nblocks = P->nblocks;
    s->chain_indent = P->chain_indent;
    s->chain_taken = P->chain_taken;
    s->chain_known = P->chain_known;
    memcpy(s->model_var, P->model_var, sizeof s->model_var);
    P->cur = NULL; /* the body's statements get their own buffer */
    P->curcap = P->ncur = 0;
}

static void restore(kp *P, const saved *s) {
    ck_host_free(P->ctx, P->cur);
    P->syms = s->syms;
    P->scope = s->scope;
    /* the body's tensors stay (a returned one is read by its id), their names are gone */
    for (ktensor *t = P->tensors; t && t != s->tensors; t = t->next)
        t->hidden = 1;
    P->cur = s->cur;
    P->ncur = s->ncur;
    P->curcap = s->curcap;
    P->pos = s->pos;
    P->end = s->end;
    P->endtok = s->endtok;
    P->recovered = s->recovered;
    P->depth = s->depth;
    P->nblocks = s->nblocks;
    P->chain_indent = s->chain_indent;
    P->chain_taken = s->chain_taken;
    P->chain_known = s->chain_known;
}

/* A block the reader runs: a call's body (run 2) or one pass of a for loop's (run 1). */
static void push_run(kp *P, const char *kw, int indent, int line, int run) {
    block *bl = &P->blocks[P->nblocks++];
    memset(bl, 0, sizeof *bl);
    snprintf(bl->kw, sizeof bl->kw, "%s", kw);
    bl->indent = indent;
    bl->line = line;
    bl->run = run;
}

value *ck_kp_call(kp *P, value *call) {
    if (call->kind != V_CALL || strchr(call->s, '.'))
        return call;
    kp_fn *f = find_fn(P, call->s);
    if (!f)
        return call;
    if (f->refuse) {
        P->hard = 1;
        ck_kp_fail(P, call->line, call->col,
                   "expected a function cnnkit reads, found '%s' (line %d), %s", f->name, f->line,
                   f->refuse);
        return NULL;
    }
    if (P->call_depth == KP_MAX_CALL_DEPTH || P->nblocks == KP_MAX_BLOCKS) {
        P->hard = 1;
        ck_kp_fail(P, call->line, call->col,
                   "expected calls of the text's functions nested at most %d deep, found '%s' "
                   "deeper (recursion is not read)",
                   KP_MAX_CALL_DEPTH, f->name);
        return NULL;
    }
    value *vals[KP_MAX_FN_PARAMS];
    if (bind(P, f, call, vals)) {
        P->hard = 1;
        return NULL;
    }
    const kp_fn fn = *f; /* P->fns may gain entries while the body runs */
    const int nfns = P->nfns;
    saved s;
    save(P, &s);
    const int naliases = P->nmodel_alias, d = P->call_depth + 1;
    P->frame_scope[d] = P->syms; /* = P->scope: the call's names start above it */
    P->frame_id[d] = ++P->frame_ids;
    P->frame_closure[d] = fn.def_frame;
    P->call_depth++; /* its parameters are its own names */
    int rc = 0;
    for (int i = 0; i < fn.nparams && !rc; ++i) {
        if (is_model(P, vals[i])) { /* a Sequential helper's model: another name of it */
            tok t;
            memset(&t, 0, sizeof t);
            t.kind = TK_NAME;
            t.src = fn.params[i].name;
            t.len = (int)strlen(t.src);
            t.line = call->line;
            rc = P->up->model_name(P, &t);
            continue;
        }
        rc = P->up->bind_name(P, fn.params[i].name, call->line, vals[i]);
    }
    push_run(P, "def", fn.indent, call->line, 2);
    if (!rc)
        rc = P->up->run(P, fn.body_b, fn.body_e);
    P->call_depth--;
    value *ret = P->flow == KP_FLOW_RETURN ? P->ret : NULL;
    P->flow = KP_FLOW_NONE;
    P->ret = NULL;
    for (int i = nfns; ret && ret->kind == V_NAME && ret->i == 0 && i < P->nfns; ++i)
        if (!strcmp(P->fns[i].name, ret->s)) { /* a closure leaving its call: not read */
            ret = ck_kp_unknown(P, call->line, call->col,
                                ck_kp_printf(P,
                                             "the function '%s' defined inside '%s' and returned "
                                             "(closures are not read)",
                                             P->fns[i].name, fn.name));
            break;
        }
    restore(P, &s);
    P->nfns = nfns; /* the defs its body made are its own names */
    P->nmodel_alias = naliases;
    if (rc) {
        P->hard = 1; /* what failed in the body is the text's error, not an unknown value */
        return NULL;
    }
    value *v = ck_kp_new_value(P, V_NONE, call->line, call->col);
    if (v && ret) {
        *v = *ret;
        v->line = call->line;
        v->col = call->col;
    }
    return v;
}

/* ---------------------------------------------------------------------------------------------
 * break, continue, return
 * ------------------------------------------------------------------------------------------- */
int ck_kp_flow(kp *P, size_t b, size_t e) {
    const tok *t0 = &P->cur[b];
    const int ret = tok_is(t0, "return");
    const block *opaque = NULL;
    int i = P->nblocks - 1;
    for (; i >= 0; --i) { /* the call (return) or the loop (break, continue) it leaves */
        const block *bl = &P->blocks[i];
        if (ret ? bl->run == 2 : bl->run == 1)
            break;
        if (bl->run == 2 || (!ret && (!strcmp(bl->kw, "for") || !strcmp(bl->kw, "while"))))
            return 0; /* break outside a loop, or in one the reader does not run */
        if (bl->opaque && !opaque)
            opaque = bl;
    }
    if (i < 0)
        return 0; /* return outside a call (a def's body is read only in calls) */
    for (int j = P->nblocks - 1; j > i; --j) { /* a try it leaves runs its finally first */
        const block *bl = &P->blocks[j];
        size_t k = bl->body;
        if (strcmp(bl->kw, "try") != 0)
            continue;
        for (;;) { /* the clauses after the try's body, at its column */
            if (P->up->block_end(P, k, bl->indent, &k))
                return -1;
            const tok *c = &P->toks[k];
            if (c->kind != TK_NAME || c->col != bl->indent ||
                !(tok_is(c, "except") || tok_is(c, "else") || tok_is(c, "finally")))
                break;
            if (tok_is(c, "finally"))
                return ck_kp_fail(P, t0->line, t0->col,
                                  "expected %.*s outside a try with a finally (line %d), which "
                                  "cnnkit does not run after it",
                                  t0->len, t0->src, c->line);
            while (P->toks[k].kind != TK_NEWLINE && P->toks[k].kind != TK_EOF)
                ++k; /* past the clause's header line */
            ++k;
        }
    }
    if (opaque)
        return ck_kp_fail(P, t0->line, t0->col,
                          "expected %.*s outside conditionals and loops that cnnkit cannot run, "
                          "found it inside the '%s' at line %d (whether the statements after it "
                          "run is not known)",
                          t0->len, t0->src, opaque->kw, opaque->line);
    if (!ret) {
        P->flow = tok_is(t0, "break") ? KP_FLOW_BREAK : KP_FLOW_CONTINUE;
        return 0;
    }
    value *v =
        b + 1 == e ? ck_kp_new_value(P, V_NONE, t0->line, t0->col) : P->up->return_value(P, b + 1);
    if (!v)
        return -1;
    if (is_model(P, v)) {
        v->kind = V_NAME;
        v->i = KP_MODEL_ID;
    }
    P->ret = v;
    P->flow = KP_FLOW_RETURN;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * for loops
 * ------------------------------------------------------------------------------------------- */
/* range(...), enumerate(...), zip(...) of known values, a list or a tuple: its items (n), or 0
 * when not known. lazy (may be NULL): a range gives its start and step there, *out NULL. */
static int items_of(kp *P, const value *v, value ***out, int *n, long long *lazy) {
    *n = 0;
    if (v->kind == V_TUPLE || v->kind == V_LIST) {
        *out = v->items;
        *n = v->n;
        return 1;
    }
    if (v->kind != V_CALL || strchr(v->s, '.'))
        return 0;
    for (int i = 0; i < v->n; ++i)
        if (v->args[i].kw && strcmp(v->args[i].kw, "start"))
            return 0;
    if (!strcmp(v->s, "range")) {
        long long a[3] = {0, 0, 1};
        if (v->n < 1 || v->n > 3)
            return 0;
        for (int i = 0; i < v->n; ++i) {
            if (v->args[i].kw || v->args[i].v->kind != V_INT)
                return 0;
            a[v->n == 1 ? 1 : i] = v->args[i].v->i;
        }
        if (a[2] == 0)
            return 0;
        long long cnt =
            a[2] > 0 ? (a[1] - a[0] + a[2] - 1) / a[2] : (a[0] - a[1] - a[2] - 1) / -a[2];
        cnt = cnt < 0 ? 0 : cnt;
        if (cnt > KP_MAX_ITEMS)
            return 0;
        if (lazy) { /* a for loop makes each number when it gets there */
            lazy[0] = a[0];
            lazy[1] = a[2];
            *out = NULL;
            *n = (int)cnt;
            return 1;
        }
        value **it = (value **)ck_kp_alloc(P, sizeof *it * (size_t)(cnt + 1));
        if (!it)
            return -1;
        for (long long j = 0; j < cnt; ++j) {
            if (!(it[j] = ck_kp_new_value(P, V_INT, v->line, v->col)))
                return -1;
            it[j]->i = a[0] + j * a[2];
            it[j]->f = (double)it[j]->i;
        }
        *out = it;
        *n = (int)cnt;
        return 1;
    }
    const int en = !strcmp(v->s, "enumerate"), zip = !strcmp(v->s, "zip");
    if ((!en && !zip) || v->n < 1 || (en && v->n > 2) || (zip && v->n > 8))
        return 0;
    value **seq[8];
    int len[8], m = KP_MAX_ITEMS, k = en ? 1 : v->n;
    long long start = 0;
    if (en && v->n == 2) {
        if (v->args[1].v->kind != V_INT)
            return 0;
        start = v->args[1].v->i;
    }
    for (int i = 0; i < k; ++i) {
        if (v->args[i].kw || items_of(P, v->args[i].v, &seq[i], &len[i], NULL) != 1)
            return 0;
        m = len[i] < m ? len[i] : m;
    }
    value **it = (value **)ck_kp_alloc(P, sizeof *it * (size_t)(m + 1));
    if (!it)
        return -1;
    for (int j = 0; j < m; ++j) {
        value *t = ck_kp_new_value(P, V_TUPLE, v->line, v->col);
        value **ti = (value **)ck_kp_alloc(P, sizeof *ti * (size_t)(k + 1));
        if (!t || !ti)
            return -1;
        t->n = en ? 2 : k;
        t->items = ti;
        if (en) {
            if (!(ti[0] = ck_kp_new_value(P, V_INT, v->line, v->col)))
                return -1;
            ti[0]->i = start + j;
            ti[0]->f = (double)ti[0]->i;
            ti[1] = seq[0][j];
        } else
            for (int i = 0; i < k; ++i)
                ti[i] = seq[i][j];
        it[j] = t;
    }
    *out = it;
    *n = m;
    return 1;
}

/* Binds the loop's targets (names, separated by commas) to one item. */
static int bind_one(kp *P, const tok *t, value *item) {
    return P->up->is_model_value(P, item) ? P->up->model_name(P, t) /* for m in [model] */
                                          : P->up->bind_tok(P, t, item);
}

static int bind_targets(kp *P, const tok *tg, int nt, value *item) {
    if (nt == 1)
        return bind_one(P, &tg[0], item);
    if ((item->kind != V_TUPLE && item->kind != V_LIST) || item->n != nt)
        return ck_kp_fail(P, tg[0].line, tg[0].col,
                          "expected an item of %d values to unpack into the loop's names", nt);
    for (int i = 0; i < nt; ++i)
        if (bind_one(P, &tg[i], item->items[i]))
            return -1;
    return 0;
}

int ck_kp_for(kp *P, size_t b, size_t e, size_t body_b, size_t body_e) {
    /* copies: the body's statements replace the header's tokens in P->cur */
    const tok t0 = P->cur[b];
    tok tg[8];
    int nt = 0;
    size_t k = b + 1;
    const int paren = k < e && ck_kp_is_op(&P->cur[k], "(");
    k += (size_t)paren;
    while (k < e && P->cur[k].kind == TK_NAME && !ck_kp_is_keyword(&P->cur[k]) && nt < 8) {
        tg[nt++] = P->cur[k++];
        if (k < e && ck_kp_is_op(&P->cur[k], ","))
            ++k;
        else
            break;
    }
    if (paren) {
        if (!(k < e && ck_kp_is_op(&P->cur[k], ")")))
            return 0;
        ++k;
    }
    if (nt == 0 || !(k < e && tok_is(&P->cur[k], "in")))
        return 0;
    value *seqv = side(P, k + 1, e - 1);
    if (!seqv)
        return P->failed ? -1 : 0;
    value **items;
    int n;
    long long lazy[2];
    const int r = items_of(P, seqv, &items, &n, lazy);
    if (r <= 0)
        return r;
    const int base = P->nblocks;
    int broke = 0;
    if (base == KP_MAX_BLOCKS)
        return ck_kp_fail(P, t0.line, t0.col, "expected blocks nested at most %d deep",
                          KP_MAX_BLOCKS);
    for (int j = 0; j < n && !broke; ++j) {
        value *item = items ? items[j] : ck_kp_new_value(P, V_INT, t0.line, t0.col);
        if (!item)
            return -1;
        if (!items) {
            item->i = lazy[0] + j * lazy[1];
            item->f = (double)item->i;
        }
        if (++P->steps > KP_MAX_STEPS_) /* a pass reads at least its first statement */
            return ck_kp_fail(P, t0.line, t0.col,
                              "expected at most %d statements read (loops and calls run), found "
                              "more",
                              KP_MAX_STEPS_);
        if (bind_targets(P, tg, nt, item))
            return -1;
        push_run(P, "for", t0.col, t0.line, 1);
        const int rc = P->up->run(P, body_b, body_e);
        P->nblocks = base;
        if (rc)
            return -1;
        if (P->flow == KP_FLOW_RETURN)
            return 1;
        broke = P->flow == KP_FLOW_BREAK;
        P->flow = KP_FLOW_NONE;
    }
    /* the loop's else runs when no break left it (an else at this column continues it) */
    P->chain_indent = t0.col;
    P->chain_taken = broke;
    P->chain_known = 1;
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * List comprehensions
 * ------------------------------------------------------------------------------------------- */
value *ck_kp_comprehension(kp *P, size_t item_b, size_t item_e) {
    const size_t f = P->pos;
    const tok t0 = P->cur[item_b];
    size_t close = f, in = 0, conds[8];
    int nconds = 0, nested = 0;
    for (int d = 0; close < P->end; ++close) { /* the closing ']', the 'in' and the ifs */
        const tok *t = &P->cur[close];
        if (is_open(t))
            ++d;
        else if (is_close(t) && --d < 0)
            break;
        else if (d == 0 && tok_is(t, "in") && !in)
            in = close;
        else if (d == 0 && tok_is(t, "if") && in && nconds < 8)
            conds[nconds++] = close;
        else if (d == 0 && close > f && (tok_is(t, "for") || tok_is(t, "if")))
            nested = 1; /* a second for, or a ninth if */
    }
    P->pos = close;
    if (!in || nested)
        return ck_kp_unknown(P, t0.line, t0.col, "a list comprehension that cnnkit does not read");
    tok tg[8];
    int nt = 0;
    for (size_t k = f + 1; k < in && nt < 8; ++k)
        if (P->cur[k].kind == TK_NAME && !ck_kp_is_keyword(&P->cur[k]))
            tg[nt++] = P->cur[k];
        else if (!ck_kp_is_op(&P->cur[k], ","))
            return ck_kp_unknown(P, t0.line, t0.col,
                                 "a list comprehension that cnnkit does not read (its names "
                                 "nested in parentheses)");
    value *seqv = side(P, in + 1, nconds ? conds[0] : close);
    value **items;
    int n = 0;
    const int r = seqv ? items_of(P, seqv, &items, &n, NULL) : P->failed ? -1 : 0;
    if (r < 0)
        return NULL;
    if (r == 0 || nt == 0)
        return ck_kp_unknown(P, t0.line, t0.col,
                             "a list comprehension over a sequence cnnkit does not know");
    value **out = (value **)ck_kp_alloc(P, sizeof *out * (size_t)(n + 1));
    value *list = ck_kp_new_value(P, V_LIST, t0.line, t0.col);
    if (!out || !list)
        return NULL;
    sym *syms = P->syms;
    P->push_only++; /* its names are its own: new ones, gone after it */
    int m = 0, known_all = 1;
    for (int j = 0; j < n && known_all; ++j) {
        if (++P->steps > KP_MAX_STEPS_) {
            ck_kp_fail(P, t0.line, t0.col,
                       "expected at most %d statements read (loops, calls and comprehensions "
                       "run), found more",
                       KP_MAX_STEPS_);
            break;
        }
        if (bind_targets(P, tg, nt, items[j]))
            break;
        int keep = 1;
        for (int c = 0; c < nconds && keep == 1; ++c)
            keep = ck_kp_condition(P, conds[c] + 1, c + 1 < nconds ? conds[c + 1] : close);
        if (keep == -2)
            break;
        if (keep < 0) {
            known_all = 0;
            break;
        }
        value *v = keep ? side(P, item_b, item_e) : NULL;
        if (keep && !v) {
            known_all = P->failed ? -1 : 0;
            break;
        }
        if (keep)
            out[m++] = v;
    }
    const int failed = P->failed;
    P->syms = syms;
    P->push_only--;
    P->pos = close;
    if (failed)
        return NULL;
    if (!known_all)
        return ck_kp_unknown(P, t0.line, t0.col,
                             "a list comprehension whose items cnnkit cannot read");
    list->items = out;
    list->n = m;
    return list;
}
