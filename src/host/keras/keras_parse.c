/*
 * Keras Sequential model text -> layer descriptors (ck_keras_parse).
 *
 * What is read
 *  The subset of Python that people paste for a Keras Sequential CNN:
 *    model = Sequential() / keras.Sequential([...]) / Sequential(layers=[...], name='x')
 *    model.add(Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)))
 *    model.compile(optimizer='adam' | Adam(learning_rate=1e-3) | SGD(...), loss='...', ...)
 *    model.pop()
 *  Layer classes may carry any module prefix (layers., keras.layers., tf.keras.layers., ...).
 *  Simple assignments (`num_classes = 10`, `input_shape = (28, 28, 1)`, `a, b = 28, 28`,
 *  `opt = Adam(1e-3)`) are remembered and their names may be used in model statements; number
 *  arithmetic (+ - * / // % **) is evaluated. Everything else (imports, comments, prints,
 *  model.fit/summary/evaluate/..., data loading) is skipped.
 *
 * What is never silently dropped
 *  Unknown layer classes, unknown arguments and arguments whose value changes the math in a way
 *  cnnkit does not implement (regularizers, constraints, other initializers, channels_first,
 *  dilation, groups, trainable=False, center/scale=False, ...) are errors naming them. Model
 *  statements inside loops or conditionals (Python control flow is not run) are errors.
 *
 * Recovery
 *  A statement whose brackets are still open at the end of a line is closed there, with a
 *  warning ("line 5: unbalanced parentheses, statement closed at end of line"), when the line
 *  ends in something that can end an expression (a name, number, string or closing bracket) and
 *  the next line starts a new statement: a name at the same or a smaller indentation whose own
 *  brackets never close more than they open (or, for a statement of one line, the text ends).
 *  Everything else gets "line L, column C: ...".
 *
 * Results
 *  Pooling strides are stored resolved (strides=None -> the pool size); conv strides always set.
 *  LeakyReLU layers default to alpha 0.3, the string activation 'leaky_relu' to 0.2 (the
 *  default of keras.activations.leaky_relu), ELU to 1.0. A LeakyReLU/ELU/ReLU whose slope is 0
 *  becomes a plain relu. input_shape (h, w, c) goes into layers[0]; a 1-D shape (n,) or
 *  Dense(input_dim=n) is stored as 1 x 1 x n, a 2-D shape (h, w) (only before Flatten) as
 *  h x w x 1.
 *
 * Implementation: a tokenizer for Python's lexical syntax, a statement splitter (brackets,
 * newlines, ';'), and a recursive-descent parser for call expressions. All parse-time memory
 * comes from an arena freed at the end; the only allocation that outlives the call is the
 * layers array.
 */
#include "internal.h"

#include "cnnkit/model.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KP_MAX_DEPTH 64  /* nested brackets / expressions */
#define KP_MAX_BLOCKS 64 /* nested compound statements tracked */
#define KP_MAX_PARAMS 40 /* parameters of one class */
#define KP_MSG_LEN 512

/* ---------------------------------------------------------------------------------------------
 * Tokens
 * ------------------------------------------------------------------------------------------- */
typedef enum tk_kind { TK_NAME, TK_NUMBER, TK_STRING, TK_OP, TK_NEWLINE, TK_EOF, TK_END } tk_kind;

typedef struct tok {
    tk_kind kind;
    int line, col;   /* 1-based; columns count characters (UTF-8 code points) */
    const char *src; /* source text of the token (NAME, NUMBER, OP) */
    int len;
    /* NUMBER */
    int is_float, bad_number, int_overflow;
    long long ival;
    double fval;
    /* STRING: decoded, NUL-terminated (arena) */
    char *str;
    int fstring;
    /* TK_END (end of the statement being parsed): what ends it */
    const char *what;
} tok;

/* ---------------------------------------------------------------------------------------------
 * Values of expressions
 * ------------------------------------------------------------------------------------------- */
typedef enum vkind {
    V_NONE,
    V_BOOL,
    V_INT,
    V_FLOAT,
    V_STR,
    V_NAME, /* a name that is not a known variable: tf.nn.relu, relu, x_train */
    V_TUPLE,
    V_LIST,
    V_CALL,
    V_UNKNOWN /* an expression that is not evaluated; s describes it */
} vkind;

typedef struct value value;
typedef struct karg {
    const char *kw; /* NULL: positional */
    int line, col;  /* keyword (or value) position */
    value *v;
} karg;

struct value {
    vkind kind;
    int line, col;
    long long i;   /* V_INT, V_BOOL */
    double f;      /* V_INT and V_FLOAT */
    const char *s; /* V_STR text, V_NAME and V_CALL dotted name, V_UNKNOWN description */
    int n;         /* items (tuple, list) or args (call) */
    value **items;
    karg *args;
};

typedef struct sym {
    struct sym *next;
    const char *name;
    value *v; /* NULL: not known, see why */
    const char *why;
    int line;
} sym;

typedef struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
} arena_blk;
#define ARENA_HDR ((sizeof(arena_blk) + 15) & ~(size_t)15)

typedef struct block {
    int indent, opaque, line;
    char kw[12];
} block;

typedef struct kp {
    const char *text;
    size_t len;
    /* tokenizer state */
    int line;
    size_t line_start;
    size_t cc_idx, cc_ls; /* column cache */
    int cc_col;
    int last_line, last_col; /* end of the last token */
    tok *toks;
    size_t ntok, tcap;
    tok *cur; /* the statement being read, without line breaks, then its terminator */
    size_t ncur, curcap;
    /* statement being parsed: tokens cur[pos, end) */
    size_t pos, end;
    int recovered;
    int depth;
    tok endtok;
    arena_blk *arena;
    /* errors */
    int failed;
    ck_status st;
    char msg[KP_MSG_LEN];
    /* variables and blocks */
    sym *syms;
    block blocks[KP_MAX_BLOCKS];
    int nblocks;
    /* the model */
    int have_model, model_line, model_col;
    char model_var[64];
    ck_layer_desc *layers;
    int count, cap;
    int rank; /* rank of the current output with batch: 4 (images) or 2 (vectors) */
    int pending_input, in_h, in_w, in_c, in_line, in_col;
    int shape2d, shape2d_line, shape2d_col; /* a 2-D input shape (h, w) was read as h x w x 1 */
    int has_compile;
    ck_optimizer_desc opt;
    char loss[64];
    char warn[2048];
    size_t wlen;
    int warn_full;
} kp;

/* ---------------------------------------------------------------------------------------------
 * Errors, warnings, memory
 * ------------------------------------------------------------------------------------------- */
static int kp_fail(kp *P, int line, int col, const char *fmt, ...) CK_PRINTF(4, 5);
static int kp_fail(kp *P, int line, int col, const char *fmt, ...) {
    if (P->failed)
        return -1;
    P->failed = 1;
    P->st = CK_STATUS_BAD_PARAM;
    int k = snprintf(P->msg, sizeof P->msg, "line %d, column %d: ", line, col);
    if (k < 0 || (size_t)k >= sizeof P->msg)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(P->msg + k, sizeof P->msg - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

static int kp_oom(kp *P) {
    if (P->st != CK_STATUS_ALLOC_FAILED) {
        P->failed = 1;
        P->st = CK_STATUS_ALLOC_FAILED;
        snprintf(P->msg, sizeof P->msg, "out of host memory while parsing the model text");
    }
    return -1;
}

static void kp_warn(kp *P, const char *fmt, ...) CK_PRINTF(2, 3);
static void kp_warn(kp *P, const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    size_t n = strlen(line), sep = P->wlen ? 1 : 0;
    if (P->warn_full)
        return;
    if (P->wlen + sep + n + 1 > sizeof P->warn - 5) { /* keep room for "\n..." */
        memcpy(P->warn + P->wlen, P->wlen ? "\n..." : "...", P->wlen ? 5 : 4);
        P->warn_full = 1;
        return;
    }
    if (sep)
        P->warn[P->wlen++] = '\n';
    memcpy(P->warn + P->wlen, line, n + 1);
    P->wlen += n;
}

static void *kp_alloc(kp *P, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    arena_blk *b = P->arena;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = (arena_blk *)malloc(ARENA_HDR + cap);
        if (!b) {
            kp_oom(P);
            return NULL;
        }
        b->next = P->arena;
        b->used = 0;
        b->cap = cap;
        P->arena = b;
    }
    void *p = (char *)b + ARENA_HDR + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

static char *kp_strndup(kp *P, const char *s, size_t n) {
    char *d = (char *)kp_alloc(P, n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static char *kp_printf(kp *P, const char *fmt, ...) CK_PRINTF(2, 3);
static char *kp_printf(kp *P, const char *fmt, ...) {
    char buf[KP_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return kp_strndup(P, buf, strlen(buf));
}

static void kp_free(kp *P) {
    while (P->arena) {
        arena_blk *n = P->arena->next;
        free(P->arena);
        P->arena = n;
    }
    free(P->toks);
    free(P->cur);
    free(P->layers);
    P->toks = NULL;
    P->cur = NULL;
    P->layers = NULL;
}

/* ASCII helpers (no locale) */
static int lower(int c) {
    return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}
static int is_digit(int c) {
    return c >= '0' && c <= '9';
}
/* Equal ignoring ASCII case and underscores ("GlorotUniform" == "glorot_uniform"). */
static int loose_eq(const char *a, const char *b) {
    for (;;) {
        while (*a == '_')
            ++a;
        while (*b == '_')
            ++b;
        if (lower((unsigned char)*a) != lower((unsigned char)*b))
            return 0;
        if (!*a)
            return 1;
        ++a;
        ++b;
    }
}
static int ieq(const char *a, const char *b) {
    while (*a && lower((unsigned char)*a) == lower((unsigned char)*b)) {
        ++a;
        ++b;
    }
    return lower((unsigned char)*a) == lower((unsigned char)*b);
}
static const char *last_component(const char *dotted) {
    const char *d = strrchr(dotted, '.');
    return d ? d + 1 : dotted;
}

/* ---------------------------------------------------------------------------------------------
 * Tokenizer
 * ------------------------------------------------------------------------------------------- */
/* 1-based character column of byte i on the current line (incremental). */
static int col_at(kp *P, size_t i) {
    if (P->cc_ls != P->line_start || i < P->cc_idx) {
        P->cc_ls = P->line_start;
        P->cc_idx = P->line_start;
        P->cc_col = 1;
    }
    while (P->cc_idx < i) {
        if (((unsigned char)P->text[P->cc_idx] & 0xC0) != 0x80)
            P->cc_col++;
        P->cc_idx++;
    }
    /* a continuation byte at i belongs to the character before */
    return P->cc_col;
}

static void new_line(kp *P, size_t next) {
    P->line++;
    P->line_start = next;
}

static tok *push_tok(kp *P, tk_kind kind, int line, int col) {
    if (P->ntok == P->tcap) {
        size_t cap = P->tcap ? P->tcap * 2 : 256;
        tok *t = (tok *)realloc(P->toks, cap * sizeof *t);
        if (!t) {
            kp_oom(P);
            return NULL;
        }
        P->toks = t;
        P->tcap = cap;
    }
    tok *t = &P->toks[P->ntok++];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->line = line;
    t->col = col;
    return t;
}

static int is_id_start(unsigned char c) {
    return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}
static int is_id_char(unsigned char c) {
    return is_id_start(c) || is_digit(c);
}
/* Typographic quotes U+2018/2019/201C/201D (E2 80 98/99/9C/9D), common in pasted text. */
static int fancy_quote(const char *s, size_t i, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    return i + 2 < n && u[i] == 0xE2 && u[i + 1] == 0x80 &&
           (u[i + 2] == 0x98 || u[i + 2] == 0x99 || u[i + 2] == 0x9C || u[i + 2] == 0x9D);
}
/* No-break space U+00A0 (C2 A0), read as a space. */
static int nbsp(const char *s, size_t i, size_t n) {
    return i + 1 < n && (unsigned char)s[i] == 0xC2 && (unsigned char)s[i + 1] == 0xA0;
}

static const double k_pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Python number literal at s[*pi]: decimal/float/exponent, 0x/0o/0b, underscores. No locale. */
static void scan_number(kp *P, size_t *pi, tok *t) {
    const char *s = P->text;
    size_t i = *pi, n = P->len;
    if (s[i] == '0' && i + 1 < n && strchr("xXoObB", s[i + 1]) && s[i + 1] != '\0') {
        int base = lower(s[i + 1]) == 'x' ? 16 : lower(s[i + 1]) == 'o' ? 8 : 2;
        unsigned long long v = 0;
        int any = 0, over = 0;
        i += 2;
        for (; i < n; ++i) {
            int c = lower((unsigned char)s[i]), d;
            if (c == '_')
                continue;
            if (is_digit(c))
                d = c - '0';
            else if (c >= 'a' && c <= 'f')
                d = c - 'a' + 10;
            else
                break;
            if (d >= base)
                break;
            any = 1;
            if (v > ((unsigned long long)LLONG_MAX - (unsigned)d) / (unsigned)base)
                over = 1;
            else
                v = v * (unsigned)base + (unsigned)d;
        }
        t->bad_number = !any;
        t->int_overflow = over;
        t->ival = (long long)v;
        t->fval = (double)v;
    } else {
        unsigned long long m = 0;
        int e10 = 0, dropped = 0, point = 0, any = 0;
        for (; i < n; ++i) {
            char c = s[i];
            if (c == '_')
                continue;
            if (c == '.' && !point) {
                point = 1;
                t->is_float = 1;
                continue;
            }
            if (!is_digit(c))
                break;
            any = 1;
            if (m < 100000000000000000ULL) {
                m = m * 10 + (unsigned)(c - '0');
                if (point)
                    e10--;
            } else if (!point) {
                e10++;
                dropped = 1;
            }
        }
        if (i < n && (s[i] == 'e' || s[i] == 'E')) {
            size_t j = i + 1;
            int sign = 1, ex = 0, digits = 0;
            if (j < n && (s[j] == '+' || s[j] == '-'))
                sign = s[j++] == '-' ? -1 : 1;
            for (; j < n && (is_digit(s[j]) || s[j] == '_'); ++j) {
                if (s[j] == '_')
                    continue;
                digits = 1;
                if (ex < 100000)
                    ex = ex * 10 + (s[j] - '0');
            }
            if (digits) {
                t->is_float = 1;
                e10 += sign * ex;
                i = j;
            }
        }
        double d = (double)m;
        if (e10 >= 0 && e10 <= 22 && m <= (1ULL << 53))
            d *= k_pow10[e10];
        else if (e10 < 0 && e10 >= -22 && m <= (1ULL << 53))
            d /= k_pow10[-e10];
        else if (m != 0) {
            int e = e10;
            while (e > 0 && d < 1e308) {
                int k = e > 22 ? 22 : e;
                d *= k_pow10[k];
                e -= k;
            }
            while (e < 0 && d > 0) {
                int k = -e > 22 ? 22 : -e;
                d /= k_pow10[k];
                e += k;
            }
        }
        t->fval = d;
        t->bad_number = !any;
        if (!t->is_float) {
            t->int_overflow = dropped || m > (unsigned long long)LLONG_MAX;
            t->ival = t->int_overflow ? 0 : (long long)m;
        }
    }
    if (i < n && (s[i] == 'j' || s[i] == 'J')) { /* complex */
        t->bad_number = 1;
        ++i;
    }
    *pi = i;
}

/* String literal; s[*pi] is the opening quote, prefix (r, b, f, ...) already read. */
static int scan_string(kp *P, size_t *pi, tok *t, int raw, int fstr) {
    const char *s = P->text;
    size_t n = P->len, i = *pi;
    char q = s[i];
    int triple = i + 2 < n && s[i + 1] == q && s[i + 2] == q;
    size_t body = i + (triple ? 3 : 1), j = body;
    for (;;) {
        if (j >= n || (!triple && s[j] == '\n')) {
            if (triple)
                return kp_fail(P, t->line, t->col,
                               "unterminated string: expected a closing %c%c%c before the end of "
                               "the text",
                               q, q, q);
            return kp_fail(P, t->line, t->col,
                           "unterminated string: expected a closing %c before the end of the line",
                           q);
        }
        if (s[j] == '\\' && j + 1 < n) {
            j += 2;
            continue;
        }
        if (s[j] == q && (!triple || (j + 2 < n && s[j + 1] == q && s[j + 2] == q)))
            break;
        ++j;
    }
    char *d = (char *)kp_alloc(P, j - body + 1);
    if (!d)
        return -1;
    size_t k = 0;
    for (size_t x = body; x < j; ++x) {
        char c = s[x];
        if (c == '\n')
            new_line(P, x + 1);
        if (c != '\\' || raw || x + 1 >= j) {
            d[k++] = c;
            continue;
        }
        char e = s[++x];
        switch (e) {
        case 'n':
            d[k++] = '\n';
            break;
        case 't':
            d[k++] = '\t';
            break;
        case 'r':
            d[k++] = '\r';
            break;
        case '0':
            d[k++] = '\0';
            break;
        case '\\':
            d[k++] = '\\';
            break;
        case '\'':
            d[k++] = '\'';
            break;
        case '"':
            d[k++] = '"';
            break;
        case '\n':
            new_line(P, x + 1);
            break; /* line continuation inside the string */
        default:
            d[k++] = '\\';
            d[k++] = e;
            break;
        }
    }
    d[k] = '\0';
    t->str = d;
    t->fstring = fstr;
    *pi = j + (triple ? 3 : 1);
    return 0;
}

static int is_string_prefix(const char *s, int len, int *raw, int *fstr) {
    if (len < 1 || len > 2)
        return 0;
    int r = 0, f = 0, b = 0, u = 0;
    for (int i = 0; i < len; ++i) {
        int c = lower((unsigned char)s[i]);
        if (c == 'r')
            r++;
        else if (c == 'f')
            f++;
        else if (c == 'b')
            b++;
        else if (c == 'u')
            u++;
        else
            return 0;
    }
    if (r > 1 || f > 1 || b > 1 || u > 1 || (u && len > 1) || (f && b))
        return 0;
    *raw = r;
    *fstr = f;
    return 1;
}

static int tokenize(kp *P) {
    const char *s = P->text;
    size_t n = P->len, i = 0;
    int line_has_tok = 0;
    P->line = 1;
    P->line_start = 0;
    if (n >= 3 && (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB &&
        (unsigned char)s[2] == 0xBF)
        i = P->line_start = 3;
    P->cc_ls = P->cc_idx = P->line_start;
    P->cc_col = 1;
    P->last_line = 1;
    P->last_col = 1;
    while (i < n) {
        char c = s[i];
        if (c == '\n') {
            if (line_has_tok) {
                tok *t = push_tok(P, TK_NEWLINE, P->last_line, P->last_col);
                if (!t)
                    return -1;
            }
            line_has_tok = 0;
            new_line(P, ++i);
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
            ++i;
            continue;
        }
        if (nbsp(s, i, n)) {
            i += 2;
            continue;
        }
        if (c == '#') {
            while (i < n && s[i] != '\n')
                ++i;
            continue;
        }
        int line = P->line, col = col_at(P, i);
        if (c == '\\') {
            size_t j = i + 1;
            while (j < n && (s[j] == ' ' || s[j] == '\t' || s[j] == '\r'))
                ++j;
            if (j < n && s[j] == '\n') { /* explicit line joining */
                i = j + 1;
                new_line(P, i);
                continue;
            }
            if (j >= n) {
                i = j;
                continue;
            }
            return kp_fail(P, line, col, "expected a line break after '\\'");
        }
        if (fancy_quote(s, i, n))
            return kp_fail(P, line, col,
                           "expected a ' or \" quote, found a typographic quote (copy-paste from "
                           "a word processor?)");
        tok *t;
        if (is_id_start((unsigned char)c)) {
            size_t j = i;
            while (j < n && is_id_char((unsigned char)s[j]) && !fancy_quote(s, j, n) &&
                   !nbsp(s, j, n))
                ++j;
            int raw, fstr;
            if (j < n && (s[j] == '\'' || s[j] == '"') &&
                is_string_prefix(s + i, (int)(j - i), &raw, &fstr)) {
                t = push_tok(P, TK_STRING, line, col);
                if (!t)
                    return -1;
                i = j;
                if (scan_string(P, &i, t, raw, fstr))
                    return -1;
            } else {
                t = push_tok(P, TK_NAME, line, col);
                if (!t)
                    return -1;
                t->src = s + i;
                t->len = (int)(j - i);
                i = j;
            }
        } else if (is_digit(c) || (c == '.' && i + 1 < n && is_digit(s[i + 1]))) {
            t = push_tok(P, TK_NUMBER, line, col);
            if (!t)
                return -1;
            size_t j = i;
            scan_number(P, &j, t);
            t->src = s + i;
            t->len = (int)(j - i);
            i = j;
        } else if (c == '\'' || c == '"') {
            t = push_tok(P, TK_STRING, line, col);
            if (!t)
                return -1;
            if (scan_string(P, &i, t, 0, 0))
                return -1;
        } else {
            static const char *const ops3[] = {"**=", "//=", ">>=", "<<=", "...", NULL};
            static const char *const ops2[] = {"**", "//", "==", "!=", "<=", ">=", "->",
                                               ":=", "+=", "-=", "*=", "/=", "%=", "&=",
                                               "|=", "^=", "@=", "<<", ">>", NULL};
            int len = 0;
            for (int k = 0; ops3[k] && !len; ++k)
                if (i + 3 <= n && memcmp(s + i, ops3[k], 3) == 0)
                    len = 3;
            for (int k = 0; ops2[k] && !len; ++k)
                if (i + 2 <= n && memcmp(s + i, ops2[k], 2) == 0)
                    len = 2;
            if (!len && c != '\0' && strchr("()[]{},:.;=+-*/%@<>&|^~!", c))
                len = 1;
            if (!len) {
                if ((unsigned char)c < 0x20 || c == 0x7f)
                    return kp_fail(P, line, col, "unexpected control character (code %d)",
                                   (unsigned char)c);
                return kp_fail(P, line, col, "unexpected character '%c'", c);
            }
            t = push_tok(P, TK_OP, line, col);
            if (!t)
                return -1;
            t->src = s + i;
            t->len = len;
            i += (size_t)len;
        }
        line_has_tok = 1;
        P->last_line = P->line;
        P->last_col = col_at(P, i);
    }
    if (line_has_tok && !push_tok(P, TK_NEWLINE, P->last_line, P->last_col))
        return -1;
    return push_tok(P, TK_EOF, P->last_line, P->last_col) ? 0 : -1;
}

static int is_op(const tok *t, const char *op) {
    return t->kind == TK_OP && (size_t)t->len == strlen(op) &&
           memcmp(t->src, op, (size_t)t->len) == 0;
}
static int is_name(const tok *t, const char *nm) {
    return t->kind == TK_NAME && (size_t)t->len == strlen(nm) &&
           memcmp(t->src, nm, (size_t)t->len) == 0;
}
static int is_open(const tok *t) {
    return t->kind == TK_OP && t->len == 1 &&
           (t->src[0] == '(' || t->src[0] == '[' || t->src[0] == '{');
}
static int is_close(const tok *t) {
    return t->kind == TK_OP && t->len == 1 &&
           (t->src[0] == ')' || t->src[0] == ']' || t->src[0] == '}');
}
static char closer_of(char open) {
    return open == '(' ? ')' : open == '[' ? ']' : '}';
}

static const char *const k_keywords[] = {
    "False", "None",     "True",  "and",    "as",   "assert", "async",  "await",    "break",
    "class", "continue", "def",   "del",    "elif", "else",   "except", "finally",  "for",
    "from",  "global",   "if",    "import", "in",   "is",     "lambda", "nonlocal", "not",
    "or",    "pass",     "raise", "return", "try",  "while",  "with",   "yield",    NULL};

static int is_keyword(const tok *t) {
    if (t->kind != TK_NAME)
        return 0;
    for (int i = 0; k_keywords[i]; ++i)
        if (is_name(t, k_keywords[i]))
            return 1;
    return 0;
}

/* Short description of a token for "found ..." */
static const char *tok_desc(kp *P, const tok *t, char *buf, size_t n) {
    switch (t->kind) {
    case TK_NAME:
    case TK_OP:
        snprintf(buf, n, "'%.*s'", t->len > 40 ? 40 : t->len, t->src);
        break;
    case TK_NUMBER:
        snprintf(buf, n, "the number %.*s", t->len > 40 ? 40 : t->len, t->src);
        break;
    case TK_STRING:
        snprintf(buf, n, "the string '%.40s'", t->str ? t->str : "");
        break;
    case TK_NEWLINE:
        snprintf(buf, n, "the end of the line");
        break;
    case TK_EOF:
        snprintf(buf, n, "the end of the text");
        break;
    case TK_END:
        snprintf(buf, n, "%s", t->what ? t->what : "the end of the statement");
        break;
    }
    (void)P;
    return buf;
}

/* ---------------------------------------------------------------------------------------------
 * Layer classes known to the parser (for the "missing ')' before the next layer" diagnosis and
 * the list in error messages).
 * ------------------------------------------------------------------------------------------- */
static const char *const k_layer_classes[] = {"Conv2D",
                                              "Dense",
                                              "MaxPooling2D",
                                              "MaxPool2D",
                                              "AveragePooling2D",
                                              "AvgPool2D",
                                              "GlobalAveragePooling2D",
                                              "GlobalAvgPool2D",
                                              "Flatten",
                                              "BatchNormalization",
                                              "Activation",
                                              "Dropout",
                                              "SpatialDropout2D",
                                              "ReLU",
                                              "LeakyReLU",
                                              "ELU",
                                              "Softmax",
                                              "Input",
                                              "InputLayer",
                                              NULL};
#define K_SUPPORTED_LIST                                                                           \
    "Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, Flatten, Dense, "             \
    "BatchNormalization, Activation, ReLU, LeakyReLU, ELU, Softmax, Dropout, SpatialDropout2D, "   \
    "Input"

static int layer_class_known(const char *s, int len) {
    for (int i = 0; k_layer_classes[i]; ++i)
        if ((size_t)len == strlen(k_layer_classes[i]) &&
            memcmp(s, k_layer_classes[i], (size_t)len) == 0)
            return 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Expressions
 * ------------------------------------------------------------------------------------------- */
static const tok *peek_at(kp *P, size_t k) {
    return P->pos + k < P->end ? &P->cur[P->pos + k] : &P->endtok;
}
static const tok *peek(kp *P) {
    return peek_at(P, 0);
}
static int at_end(kp *P) {
    return P->pos >= P->end;
}
static const tok *advance(kp *P) {
    const tok *t = peek(P);
    if (P->pos < P->end)
        P->pos++;
    return t;
}

static value *new_value(kp *P, vkind k, int line, int col) {
    value *v = (value *)kp_alloc(P, sizeof *v);
    if (v) {
        v->kind = k;
        v->line = line;
        v->col = col;
    }
    return v;
}

static value *unknown_value(kp *P, int line, int col, const char *why) {
    value *v = new_value(P, V_UNKNOWN, line, col);
    if (v)
        v->s = why;
    return v;
}

static const char *vdesc(const value *v, char *buf, size_t n) {
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
    case V_UNKNOWN:
        snprintf(buf, n, "%s", v->s);
        break;
    }
    return buf;
}

static value *p_expr(kp *P);

static int expect_close(kp *P, char want, const tok *open, const char *opener, int comma_ok) {
    const tok *t = peek(P);
    char w[2] = {want, '\0'}, b[96];
    if (is_op(t, w)) {
        advance(P);
        return 0;
    }
    if (at_end(P) && P->recovered)
        return 0; /* closed at the end of the line (recovery) */
    return kp_fail(P, t->line, t->col,
                   "expected %s'%c' to close %s opened at line %d, column %d, "
                   "found %s",
                   comma_ok ? "',' or " : "", want, opener, open->line, open->col,
                   tok_desc(P, t, b, sizeof b));
}

/* Grows an arena array of pointers/structs by doubling. */
static void *grow(kp *P, void *old, int n, int *cap, size_t elem) {
    if (n < *cap)
        return old;
    int nc = *cap ? *cap * 2 : 4;
    void *p = kp_alloc(P, (size_t)nc * elem);
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
        if (is_op(peek(P), ws) || (at_end(P) && P->recovered) || is_close(peek(P)))
            break;
        value *it = p_expr(P);
        if (!it)
            return NULL;
        items = (value **)grow(P, items, n, &cap, sizeof *items);
        if (!items)
            return NULL;
        items[n++] = it;
        comma = 0;
        if (!is_op(peek(P), ","))
            break;
        advance(P);
        comma = 1;
    }
    if (expect_close(P, want, open, kind == V_LIST ? "'['" : "'('", n > 0 && !comma))
        return NULL;
    if (kind == V_TUPLE && n == 1 && !comma)
        return items[0];
    value *v = new_value(P, kind, open->line, open->col);
    if (v) {
        v->n = n;
        v->items = items;
    }
    return v;
}

/* At an argument: is it `[prefix.]LayerClass(`? Sets *last to the class name token. */
static int nested_layer_at(kp *P, const tok **last) {
    size_t k = 0;
    if (peek(P)->kind != TK_NAME)
        return 0;
    while (is_op(peek_at(P, k + 1), ".") && peek_at(P, k + 2)->kind == TK_NAME)
        k += 2;
    if (!is_op(peek_at(P, k + 1), "("))
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
        const tok *t = peek(P);
        if (is_op(t, ")") || (at_end(P) && P->recovered) || is_close(t))
            break; /* a wrong closer is reported by expect_close */
        if (is_op(t, "*") || is_op(t, "**"))
            return kp_fail(P, t->line, t->col,
                           "expected an argument, found '%.*s' (argument unpacking is not "
                           "supported)",
                           t->len, t->src);
        karg a;
        memset(&a, 0, sizeof a);
        a.line = t->line;
        a.col = t->col;
        if (t->kind == TK_NAME && !is_keyword(t) && is_op(peek_at(P, 1), "=")) {
            a.kw = kp_strndup(P, t->src, (size_t)t->len);
            if (!a.kw)
                return -1;
            for (int i = 0; i < n; ++i)
                if (args[i].kw && strcmp(args[i].kw, a.kw) == 0)
                    return kp_fail(P, t->line, t->col,
                                   "expected each argument once, found %s given twice in %s", a.kw,
                                   opener);
            advance(P);
            advance(P);
            seen_kw = 1;
        } else {
            const tok *cls;
            if (layer_call && nested_layer_at(P, &cls)) {
                const tok *prev = &P->cur[P->pos - 1];
                int l = is_op(prev, ",") ? prev->line : t->line;
                int c = is_op(prev, ",") ? prev->col : t->col;
                return kp_fail(P, l, c,
                               "expected ')' to close %s opened at line %d, column %d, before "
                               "the next layer %.*s at line %d, column %d",
                               opener, open->line, open->col, cls->len, cls->src, t->line, t->col);
            }
            if (seen_kw)
                return kp_fail(P, t->line, t->col,
                               "expected a keyword argument (name=value) in %s: a positional "
                               "argument cannot follow keyword arguments",
                               opener);
        }
        a.v = p_expr(P);
        if (!a.v)
            return -1;
        args = (karg *)grow(P, args, n, &cap, sizeof *args);
        if (!args)
            return -1;
        args[n++] = a;
        if (!is_op(peek(P), ","))
            break;
        advance(P);
    }
    if (expect_close(P, ')', open, opener, 1))
        return -1;
    call->args = args;
    call->n = n;
    return 0;
}

static sym *find_sym(kp *P, const char *name, size_t len) {
    for (sym *s = P->syms; s; s = s->next)
        if (strlen(s->name) == len && memcmp(s->name, name, len) == 0)
            return s;
    return NULL;
}

/* Skips a balanced bracket group starting at the current '[' (or '('). */
static int skip_group(kp *P) {
    const tok *open = advance(P);
    int depth = 1;
    while (depth > 0) {
        if (at_end(P)) {
            if (P->recovered)
                return 0;
            char b[64];
            return kp_fail(P, peek(P)->line, peek(P)->col,
                           "expected '%c' to close '%c' opened at line %d, column %d, found %s",
                           closer_of(open->src[0]), open->src[0], open->line, open->col,
                           tok_desc(P, peek(P), b, sizeof b));
        }
        const tok *t = advance(P);
        if (is_open(t))
            depth++;
        else if (is_close(t))
            depth--;
    }
    return 0;
}

static value *p_primary(kp *P) {
    const tok *t = peek(P);
    value *v = NULL;
    char b[96];
    if (t->kind == TK_NUMBER) {
        advance(P);
        if (t->bad_number)
            v = unknown_value(
                P, t->line, t->col,
                kp_printf(P, "the number %.*s, which cnnkit does not read", t->len, t->src));
        else if (t->is_float) {
            v = new_value(P, V_FLOAT, t->line, t->col);
            if (v)
                v->f = t->fval;
        } else if (t->int_overflow)
            v = unknown_value(P, t->line, t->col,
                              kp_printf(P, "the integer %.*s, which is too large", t->len, t->src));
        else {
            v = new_value(P, V_INT, t->line, t->col);
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
        char *s = (char *)kp_alloc(P, total + 1);
        if (!s)
            return NULL;
        while (peek(P)->kind == TK_STRING)
            strcat(s, advance(P)->str);
        if (fmt)
            v = unknown_value(P, t->line, t->col, "an f-string with replacement fields");
        else if ((v = new_value(P, V_STR, t->line, t->col)) != NULL)
            v->s = s;
    } else if (t->kind == TK_NAME) {
        if (is_name(t, "True") || is_name(t, "False")) {
            advance(P);
            if ((v = new_value(P, V_BOOL, t->line, t->col)) != NULL)
                v->i = is_name(t, "True");
        } else if (is_name(t, "None")) {
            advance(P);
            v = new_value(P, V_NONE, t->line, t->col);
        } else if (is_keyword(t)) {
            kp_fail(P, t->line, t->col, "expected a value, found '%.*s'", t->len, t->src);
            return NULL;
        } else {
            /* dotted name */
            size_t k = 0, total = (size_t)t->len;
            while (is_op(peek_at(P, k + 1), ".") && peek_at(P, k + 2)->kind == TK_NAME &&
                   !is_keyword(peek_at(P, k + 2))) {
                k += 2;
                total += 1 + (size_t)peek_at(P, k)->len;
            }
            char *name = (char *)kp_alloc(P, total + 1);
            if (!name)
                return NULL;
            for (size_t j = 0; j <= k; j += 2) {
                const tok *nt = peek_at(P, j);
                if (j)
                    strcat(name, ".");
                strncat(name, nt->src, (size_t)nt->len);
            }
            P->pos += k + 1;
            if (is_op(peek(P), "(")) {
                const tok *open = advance(P);
                if (!(v = new_value(P, V_CALL, t->line, t->col)))
                    return NULL;
                v->s = name;
                const char *cls = last_component(name);
                if (p_args(P, v, open, layer_class_known(cls, (int)strlen(cls))))
                    return NULL;
            } else {
                sym *s = k == 0 ? find_sym(P, name, total) : NULL;
                if (s && s->v) {
                    if (!(v = new_value(P, V_NONE, t->line, t->col)))
                        return NULL;
                    *v = *s->v;
                    v->line = t->line;
                    v->col = t->col;
                } else if (s) {
                    v = unknown_value(
                        P, t->line, t->col,
                        kp_printf(P, "'%s' (set at line %d to %s)", name, s->line, s->why));
                } else if ((v = new_value(P, V_NAME, t->line, t->col)) != NULL)
                    v->s = name;
            }
        }
    } else if (is_op(t, "(")) {
        v = p_seq(P, V_TUPLE, advance(P));
    } else if (is_op(t, "[")) {
        v = p_seq(P, V_LIST, advance(P));
    } else if (is_op(t, "{")) {
        kp_fail(P, t->line, t->col,
                "expected a value, found '{' (dicts and sets are not "
                "supported)");
        return NULL;
    } else {
        kp_fail(P, t->line, t->col, "expected a value, found %s", tok_desc(P, t, b, sizeof b));
        return NULL;
    }
    if (!v)
        return NULL;
    /* trailers on a value: calls of results, attributes, subscripts are not evaluated */
    for (;;) {
        const tok *tr = peek(P);
        if (is_op(tr, "(")) {
            value tmp;
            memset(&tmp, 0, sizeof tmp);
            tmp.s = v->kind == V_CALL ? v->s : "a value";
            advance(P);
            if (p_args(P, &tmp, tr, 0))
                return NULL;
            v = unknown_value(P, v->line, v->col,
                              v->kind == V_CALL
                                  ? kp_printf(P,
                                              "a call of the result of %s(...) (the "
                                              "functional API is not supported)",
                                              v->s)
                                  : "a call expression that cnnkit does not evaluate");
        } else if (is_op(tr, ".") && peek_at(P, 1)->kind == TK_NAME) {
            P->pos += 2;
            v = unknown_value(P, v->line, v->col,
                              "an attribute expression that cnnkit does not "
                              "evaluate");
        } else if (is_op(tr, "[")) {
            if (skip_group(P))
                return NULL;
            v = unknown_value(P, v->line, v->col,
                              "a subscript expression, which cnnkit does not evaluate");
        } else
            break;
        if (!v)
            return NULL;
    }
    return v;
}

static int is_num(const value *v) {
    return v->kind == V_INT || v->kind == V_FLOAT;
}

/* Python arithmetic on numbers; anything else (or overflow) is an unknown value. */
static value *arith(kp *P, const tok *op, value *a, value *b) {
    if (!is_num(a) || !is_num(b))
        return unknown_value(P, a->line, a->col,
                             "an arithmetic expression on values that are not numbers");
    int ints = a->kind == V_INT && b->kind == V_INT;
    double x = a->f, y = b->f, r;
    long long ri = 0;
    int int_result = 0;
    if (is_op(op, "+") || is_op(op, "-") || is_op(op, "*")) {
        r = is_op(op, "+") ? x + y : is_op(op, "-") ? x - y : x * y;
        if (ints) {
            if (fabs(r) >= 4e18)
                return unknown_value(P, a->line, a->col, "an integer expression that overflows");
            ri = is_op(op, "+") ? a->i + b->i : is_op(op, "-") ? a->i - b->i : a->i * b->i;
            int_result = 1;
        }
    } else if (is_op(op, "/") || is_op(op, "//") || is_op(op, "%")) {
        if (y == 0.0)
            return unknown_value(P, a->line, a->col, "a division by zero");
        if (is_op(op, "/"))
            r = x / y;
        else if (ints) {
            long long q = a->i / b->i, m = a->i % b->i;
            if (m != 0 && ((m < 0) != (b->i < 0))) {
                q -= 1;
                m += b->i;
            }
            ri = is_op(op, "//") ? q : m;
            r = (double)ri;
            int_result = 1;
        } else if (is_op(op, "//"))
            r = floor(x / y);
        else {
            r = fmod(x, y);
            if (r != 0.0 && ((r < 0) != (y < 0)))
                r += y;
        }
    } else if (is_op(op, "**")) {
        if (ints && b->i >= 0) {
            long long p = 1;
            for (long long k = 0; k < b->i; ++k) {
                if (a->i != 0 && (p > 4000000000000000000LL / (a->i < 0 ? -a->i : a->i)))
                    return unknown_value(P, a->line, a->col,
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
                return unknown_value(P, a->line, a->col, "a complex power");
            r = pow(x, y);
        }
    } else {
        return unknown_value(P, a->line, a->col, "an expression that cnnkit does not evaluate");
    }
    value *v = new_value(P, int_result ? V_INT : V_FLOAT, a->line, a->col);
    if (v) {
        v->i = ri;
        v->f = int_result ? (double)ri : r;
    }
    return v;
}

static value *p_unary(kp *P);

static value *p_power(kp *P) {
    value *a = p_primary(P);
    if (a && is_op(peek(P), "**")) {
        const tok *op = advance(P);
        value *b = p_unary(P);
        return b ? arith(P, op, a, b) : NULL;
    }
    return a;
}

static value *p_unary(kp *P) {
    const tok *t = peek(P);
    if (is_op(t, "-") || is_op(t, "+")) {
        advance(P);
        if (++P->depth > KP_MAX_DEPTH) {
            kp_fail(P, t->line, t->col, "expected an expression nested at most %d deep",
                    KP_MAX_DEPTH);
            return NULL;
        }
        value *a = p_unary(P);
        P->depth--;
        if (!a)
            return NULL;
        if (!is_num(a))
            return unknown_value(P, t->line, t->col,
                                 "a signed expression on a value that is not a number");
        value *v = new_value(P, a->kind, t->line, t->col);
        if (v) {
            v->i = is_op(t, "-") ? -a->i : a->i;
            v->f = is_op(t, "-") ? -a->f : a->f;
        }
        return v;
    }
    return p_power(P);
}

static value *p_term(kp *P) {
    value *a = p_unary(P);
    while (a) {
        const tok *t = peek(P);
        if (!(is_op(t, "*") || is_op(t, "/") || is_op(t, "//") || is_op(t, "%") || is_op(t, "@")))
            break;
        advance(P);
        value *b = p_unary(P);
        a = b ? arith(P, t, a, b) : NULL;
    }
    return a;
}

static value *p_expr(kp *P) {
    const tok *t0 = peek(P);
    if (++P->depth > KP_MAX_DEPTH) {
        kp_fail(P, t0->line, t0->col, "expected an expression nested at most %d deep",
                KP_MAX_DEPTH);
        return NULL;
    }
    value *a = p_term(P);
    while (a) {
        const tok *t = peek(P);
        if (!(is_op(t, "+") || is_op(t, "-")))
            break;
        advance(P);
        value *b = p_term(P);
        a = b ? arith(P, t, a, b) : NULL;
    }
    P->depth--;
    return a;
}

static int expect_end(kp *P) {
    if (at_end(P))
        return 0;
    char b[96];
    const tok *t = peek(P);
    return kp_fail(P, t->line, t->col, "expected the end of the statement, found %s",
                   tok_desc(P, t, b, sizeof b));
}

/* Parses one whole expression up to the end of the statement. */
static value *p_full_expr(kp *P) {
    value *v = p_expr(P);
    return v && !expect_end(P) ? v : NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Arguments of a class: positional and keyword arguments bound to parameter names
 * ------------------------------------------------------------------------------------------- */
typedef struct kargs {
    const char *cls;
    const char *const *names;
    int n;
    value *v[KP_MAX_PARAMS];
    int line[KP_MAX_PARAMS], col[KP_MAX_PARAMS]; /* where each argument was given */
    int cl, cc;                                  /* the call */
} kargs;

/* Accepted by every layer (Keras base Layer keyword arguments). */
#define LAYER_COMMON "name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size"

static int bind(kp *P, const value *call, const char *cls, const char *const *names, int npos,
                kargs *a) {
    memset(a, 0, sizeof *a);
    a->cls = cls;
    a->names = names;
    while (names[a->n])
        a->n++;
    a->cl = call->line;
    a->cc = call->col;
    int posi = 0;
    for (int i = 0; i < call->n; ++i) {
        const karg *g = &call->args[i];
        int idx = -1;
        if (!g->kw) {
            if (posi >= npos)
                return kp_fail(P, g->line, g->col,
                               "expected at most %d positional argument%s for %s, found more", npos,
                               npos == 1 ? "" : "s", cls);
            idx = posi++;
        } else {
            for (int k = 0; k < a->n; ++k)
                if (strcmp(names[k], g->kw) == 0)
                    idx = k;
            if (idx < 0)
                return kp_fail(P, g->line, g->col, "unknown argument '%s' of %s", g->kw, cls);
        }
        if (a->v[idx])
            return kp_fail(P, g->line, g->col, "expected one value for %s of %s, found two",
                           names[idx], cls);
        a->v[idx] = g->v;
        a->line[idx] = g->line;
        a->col[idx] = g->col;
    }
    return 0;
}

static int aidx(const kargs *a, const char *name) {
    for (int i = 0; i < a->n; ++i)
        if (strcmp(a->names[i], name) == 0)
            return i;
    return -1;
}
static value *aval(const kargs *a, const char *name) {
    int i = aidx(a, name);
    return i >= 0 ? a->v[i] : NULL;
}

static int type_err(kp *P, const kargs *a, const value *v, const char *param, const char *exp) {
    char b[160];
    return kp_fail(P, v->line, v->col, "expected %s for %s of %s, found %s", exp, param, a->cls,
                   vdesc(v, b, sizeof b));
}
static int unsupported(kp *P, const kargs *a, const char *param, const char *exp) {
    int i = aidx(a, param);
    char b[160];
    return kp_fail(P, a->line[i], a->col[i], "unsupported argument %s of %s: expected %s, found %s",
                   param, a->cls, exp, vdesc(a->v[i], b, sizeof b));
}
static int need(kp *P, const kargs *a, const char *param) {
    if (aval(a, param))
        return 0;
    return kp_fail(P, a->cl, a->cc, "expected the argument %s of %s", param, a->cls);
}

static int get_int(kp *P, const kargs *a, const char *param, int lo, int *out) {
    value *v = aval(a, param);
    if (!v)
        return 0;
    if (v->kind != V_INT)
        return type_err(P, a, v, param, lo == 1 ? "a positive integer" : "an integer");
    if (v->i < lo || v->i > INT_MAX)
        return kp_fail(P, v->line, v->col, "expected an integer >= %d for %s of %s, found %lld", lo,
                       param, a->cls, v->i);
    *out = (int)v->i;
    return 0;
}

static int pos_int(const value *v) {
    return v->kind == V_INT && v->i >= 1 && v->i <= INT_MAX;
}

/* An integer or a pair of integers, all >= 1 (kernel_size, strides, pool_size). */
static int get_pair(kp *P, const kargs *a, const char *param, int *h, int *w) {
    value *v = aval(a, param);
    if (!v)
        return 0;
    if (pos_int(v)) {
        *h = *w = (int)v->i;
        return 0;
    }
    if ((v->kind == V_TUPLE || v->kind == V_LIST) && v->n == 2 && pos_int(v->items[0]) &&
        pos_int(v->items[1])) {
        *h = (int)v->items[0]->i;
        *w = (int)v->items[1]->i;
        return 0;
    }
    return type_err(P, a, v, param, "a positive integer or a pair of positive integers");
}

/* A number in [lo, hi] (hi_open: [lo, hi)); lo_open: (lo, ...). */
static int get_num(kp *P, const kargs *a, const char *param, double lo, int lo_open, double hi,
                   int hi_open, double *out) {
    value *v = aval(a, param);
    if (!v)
        return 0;
    if (!is_num(v))
        return type_err(P, a, v, param, "a number");
    double x = v->f;
    if (!(x == x) || (lo_open ? x <= lo : x < lo) || (hi_open ? x >= hi : x > hi)) {
        char range[96];
        if (hi > 1e300)
            snprintf(range, sizeof range, "%s %g", lo_open ? ">" : ">=", lo);
        else
            snprintf(range, sizeof range, "in %c%g, %g%c", lo_open ? '(' : '[', lo, hi,
                     hi_open ? ')' : ']');
        return kp_fail(P, v->line, v->col, "expected a number %s for %s of %s, found %g", range,
                       param, a->cls, x);
    }
    *out = x;
    return 0;
}

static int get_bool(kp *P, const kargs *a, const char *param, int *out) {
    value *v = aval(a, param);
    if (!v)
        return 0;
    if (v->kind == V_BOOL || (v->kind == V_INT && (v->i == 0 || v->i == 1))) {
        *out = (int)v->i;
        return 0;
    }
    return type_err(P, a, v, param, "True or False");
}

static int only_none(kp *P, const kargs *a, const char *param) {
    value *v = aval(a, param);
    return v && v->kind != V_NONE ? unsupported(P, a, param, "None") : 0;
}
static int only_bool(kp *P, const kargs *a, const char *param, int want) {
    int b = want;
    if (get_bool(P, a, param, &b))
        return -1;
    return b != want ? unsupported(P, a, param, want ? "True" : "False") : 0;
}
/* None or False */
static int only_falsy(kp *P, const kargs *a, const char *param) {
    value *v = aval(a, param);
    return v && v->kind != V_NONE ? only_bool(P, a, param, 0) : 0;
}
static int only_int(kp *P, const kargs *a, const char *param, int want) {
    value *v = aval(a, param);
    if (v && !(v->kind == V_INT && v->i == want)) {
        char e[32];
        snprintf(e, sizeof e, "%d", want);
        return unsupported(P, a, param, e);
    }
    return 0;
}
/* 1 or (1, 1): dilation_rate */
static int only_ones(kp *P, const kargs *a, const char *param) {
    int h = 1, w = 1;
    if (get_pair(P, a, param, &h, &w))
        return -1;
    return h != 1 || w != 1 ? unsupported(P, a, param, "1 or (1, 1)") : 0;
}
static int check_data_format(kp *P, const kargs *a) {
    value *v = aval(a, "data_format");
    if (!v || v->kind == V_NONE || (v->kind == V_STR && strcmp(v->s, "channels_last") == 0))
        return 0;
    return unsupported(P, a, "data_format", "'channels_last' or None (cnnkit is channels-last)");
}
/* An initializer that is the one cnnkit uses: 'glorot_uniform', GlorotUniform(), ... */
static int check_init(kp *P, const kargs *a, const char *param, const char *want) {
    value *v = aval(a, param);
    if (!v)
        return 0;
    if ((v->kind == V_STR && loose_eq(v->s, want)) ||
        ((v->kind == V_CALL || v->kind == V_NAME) && loose_eq(last_component(v->s), want) &&
         v->n == 0))
        return 0;
    char e[64];
    snprintf(e, sizeof e, "'%s' (the initializer cnnkit uses)", want);
    return unsupported(P, a, param, e);
}
static int check_dtype(kp *P, const kargs *a) {
    value *v = aval(a, "dtype");
    if (!v || v->kind == V_NONE || (v->kind == V_STR && strcmp(v->s, "float32") == 0) ||
        (v->kind == V_NAME && strcmp(last_component(v->s), "float32") == 0))
        return 0;
    return unsupported(P, a, "dtype", "'float32' or None");
}

static int get_padding(kp *P, const kargs *a, ck_padding *out) {
    value *v = aval(a, "padding");
    if (!v)
        return 0;
    if (v->kind == V_STR && ieq(v->s, "valid"))
        *out = CK_PADDING_VALID;
    else if (v->kind == V_STR && ieq(v->s, "same"))
        *out = CK_PADDING_SAME;
    else
        return type_err(P, a, v, "padding", "'valid' or 'same'");
    return 0;
}

/* Shape (h, w, c) or (n,) -> 1 x 1 x n. skip_batch: the first item is the batch size. */
static int shape_of(kp *P, const kargs *a, const char *param, int skip_batch, int *h, int *w,
                    int *c) {
    value *v = aval(a, param);
    const char *exp = skip_batch ? "a shape (batch, height, width, channels)"
                                 : "a shape (height, width, channels)";
    if (!skip_batch && pos_int(v)) {
        *h = *w = 1;
        *c = (int)v->i;
        return 0;
    }
    if (v->kind != V_TUPLE && v->kind != V_LIST)
        return type_err(P, a, v, param, exp);
    int k = skip_batch ? 1 : 0, m = v->n - k;
    if (skip_batch && (v->n < 1 || (v->items[0]->kind != V_NONE && !pos_int(v->items[0]))))
        return type_err(P, a, v, param, exp);
    if (m < 1 || m > 3)
        return type_err(P, a, v, param, exp);
    for (int i = k; i < v->n; ++i) {
        value *it = v->items[i];
        if (it->kind == V_NONE)
            return kp_fail(P, it->line, it->col,
                           "expected a known size in %s of %s, found None (variable sizes are "
                           "not supported)",
                           param, a->cls);
        if (!pos_int(it))
            return type_err(P, a, it, param, "positive integer sizes");
    }
    if (m >= 2) {
        *h = (int)v->items[k]->i;
        *w = (int)v->items[k + 1]->i;
        *c = m == 3 ? (int)v->items[k + 2]->i : 1;
        if (m == 2) { /* (28, 28) before Flatten: the same as (28, 28, 1) */
            P->shape2d = 1;
            P->shape2d_line = v->line;
            P->shape2d_col = v->col;
        }
    } else {
        *h = *w = 1;
        *c = (int)v->items[k]->i;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Activations
 * ------------------------------------------------------------------------------------------- */
#define K_ACT_LIST "relu, sigmoid, tanh, softmax, linear, elu, leaky_relu, gelu, swish, silu"

static const char *const relu_p[] = {"max_value", "negative_slope", "threshold", LAYER_COMMON,
                                     NULL};
static const char *const lrelu_p[] = {"alpha", "negative_slope", LAYER_COMMON, NULL};
static const char *const elu_p[] = {"alpha", LAYER_COMMON, NULL};
static const char *const softmax_p[] = {"axis", LAYER_COMMON, NULL};

static int is_act_class(const char *cls) {
    return !strcmp(cls, "ReLU") || !strcmp(cls, "LeakyReLU") || !strcmp(cls, "ELU") ||
           !strcmp(cls, "Softmax");
}

/* ReLU / LeakyReLU / ELU / Softmax(...) -> activation and alpha; a receives the bound args. */
static int act_class(kp *P, const value *call, const char *cls, ck_activation *act, float *alpha,
                     kargs *a) {
    double x;
    if (!strcmp(cls, "ReLU")) {
        if (bind(P, call, cls, relu_p, 3, a) || only_none(P, a, "max_value"))
            return -1;
        value *th = aval(a, "threshold");
        if (th && !(is_num(th) && th->f == 0.0))
            return unsupported(P, a, "threshold", "0");
        x = 0;
        if (get_num(P, a, "negative_slope", 0, 0, 1e308, 0, &x))
            return -1;
        *act = x > 0 ? CK_ACT_LEAKY_RELU : CK_ACT_RELU;
        if (x > 0)
            *alpha = (float)x;
    } else if (!strcmp(cls, "LeakyReLU")) {
        if (bind(P, call, cls, lrelu_p, 1, a))
            return -1;
        if (aval(a, "alpha") && aval(a, "negative_slope"))
            return kp_fail(P, a->line[1], a->col[1],
                           "expected one of alpha and negative_slope for LeakyReLU, found both");
        x = 0.3;
        if (get_num(P, a, aval(a, "alpha") ? "alpha" : "negative_slope", -1e308, 0, 1e308, 0, &x))
            return -1;
        *act = x == 0 ? CK_ACT_RELU : CK_ACT_LEAKY_RELU;
        *alpha = (float)x;
    } else if (!strcmp(cls, "ELU")) {
        if (bind(P, call, cls, elu_p, 1, a))
            return -1;
        x = 1.0;
        if (get_num(P, a, "alpha", -1e308, 0, 1e308, 0, &x))
            return -1;
        *act = x == 0 ? CK_ACT_RELU : CK_ACT_ELU;
        *alpha = (float)x;
    } else {
        if (bind(P, call, cls, softmax_p, 1, a))
            return -1;
        value *v = aval(a, "axis");
        if (v && !(v->kind == V_INT && (v->i == -1 || v->i == P->rank - 1)))
            return unsupported(P, a, "axis", "-1 (the channels axis)");
        *act = CK_ACT_SOFTMAX;
    }
    return 0;
}

/* activation= of Conv2D/Dense/Activation: a name string, None, a function name
 * (tf.nn.relu, keras.activations.relu) or an activation layer (LeakyReLU(0.1)). */
static int get_activation(kp *P, const kargs *a, const char *param, ck_activation *act,
                          float *alpha) {
    value *v = aval(a, param);
    if (!v)
        return 0;
    if (v->kind == V_NONE) {
        *act = CK_ACT_NONE;
        return 0;
    }
    if (v->kind == V_STR || v->kind == V_NAME) {
        const char *nm = v->kind == V_STR ? v->s : last_component(v->s);
        int k = ck_activation_from_name(nm);
        if (k < 0)
            return kp_fail(P, v->line, v->col,
                           "unknown activation '%.60s' for %s of %s: expected one of " K_ACT_LIST,
                           v->kind == V_STR ? v->s : nm, param, a->cls);
        *act = (ck_activation)k;
        if (k == CK_ACT_LEAKY_RELU)
            *alpha = 0.2f; /* keras.activations.leaky_relu / tf.nn.leaky_relu default */
        else if (k == CK_ACT_ELU)
            *alpha = 1.0f;
        return 0;
    }
    if (v->kind == V_CALL && is_act_class(last_component(v->s))) {
        kargs inner;
        return act_class(P, v, last_component(v->s), act, alpha, &inner);
    }
    return type_err(P, a, v, param, "an activation name such as 'relu'");
}

/* ---------------------------------------------------------------------------------------------
 * Layers
 * ------------------------------------------------------------------------------------------- */
static const char *const conv_p[] = {"filters",
                                     "kernel_size",
                                     "strides",
                                     "padding",
                                     "data_format",
                                     "dilation_rate",
                                     "groups",
                                     "activation",
                                     "use_bias",
                                     "kernel_initializer",
                                     "bias_initializer",
                                     "kernel_regularizer",
                                     "bias_regularizer",
                                     "activity_regularizer",
                                     "kernel_constraint",
                                     "bias_constraint",
                                     LAYER_COMMON,
                                     NULL};
static const char *const dense_p[] = {"units",
                                      "activation",
                                      "use_bias",
                                      "kernel_initializer",
                                      "bias_initializer",
                                      "kernel_regularizer",
                                      "bias_regularizer",
                                      "activity_regularizer",
                                      "kernel_constraint",
                                      "bias_constraint",
                                      "input_dim",
                                      LAYER_COMMON,
                                      NULL};
static const char *const pool_p[] = {"pool_size",   "strides",    "padding",
                                     "data_format", LAYER_COMMON, NULL};
static const char *const gap_p[] = {"data_format", "keepdims", LAYER_COMMON, NULL};
static const char *const flatten_p[] = {"data_format", LAYER_COMMON, NULL};
static const char *const bn_p[] = {"axis",
                                   "momentum",
                                   "epsilon",
                                   "center",
                                   "scale",
                                   "beta_initializer",
                                   "gamma_initializer",
                                   "moving_mean_initializer",
                                   "moving_variance_initializer",
                                   "beta_regularizer",
                                   "gamma_regularizer",
                                   "beta_constraint",
                                   "gamma_constraint",
                                   "synchronized",
                                   "renorm",
                                   "renorm_clipping",
                                   "renorm_momentum",
                                   "fused",
                                   "virtual_batch_size",
                                   "adjustment",
                                   LAYER_COMMON,
                                   NULL};
static const char *const act_p[] = {"activation", LAYER_COMMON, NULL};
static const char *const dropout_p[] = {"rate", "noise_shape", "seed", LAYER_COMMON, NULL};
static const char *const sdropout_p[] = {"rate", "data_format", "seed", LAYER_COMMON, NULL};
static const char *const input_p[] = {"shape",     "batch_size",  "name",   "dtype",
                                      "sparse",    "batch_shape", "tensor", "ragged",
                                      "type_spec", "optional",    NULL};
static const char *const inputlayer_p[] = {
    "input_shape", "batch_size", "dtype",       "input_tensor",      "sparse",   "name", "ragged",
    "type_spec",   "shape",      "batch_shape", "batch_input_shape", "optional", NULL};

/* Keyword arguments every layer takes (LAYER_COMMON). */
static int layer_common(kp *P, const kargs *a, ck_layer_desc *d) {
    value *v = aval(a, "name");
    if (v && v->kind != V_NONE) {
        if (v->kind != V_STR)
            return type_err(P, a, v, "name", "a string");
        if (strlen(v->s) >= sizeof d->name)
            return kp_fail(P, v->line, v->col,
                           "expected a name of at most %d characters for %s, found %d",
                           (int)sizeof d->name - 1, a->cls, (int)strlen(v->s));
        strcpy(d->name, v->s);
    }
    if (only_bool(P, a, "trainable", 1) || check_dtype(P, a))
        return -1;
    int bs = 0;
    v = aval(a, "batch_size");
    if (v && v->kind != V_NONE && get_int(P, a, "batch_size", 1, &bs))
        return -1;
    const char *shape_param = aval(a, "input_shape")         ? "input_shape"
                              : aval(a, "batch_input_shape") ? "batch_input_shape"
                                                             : NULL;
    if (shape_param) {
        int i = aidx(a, shape_param);
        if (aval(a, "input_shape") && aval(a, "batch_input_shape"))
            return kp_fail(P, a->line[i], a->col[i],
                           "expected one of input_shape and batch_input_shape for %s, found "
                           "both",
                           a->cls);
        if (P->count > 0)
            return kp_fail(P, a->line[i], a->col[i],
                           "expected %s only on the first layer, found it on layer %d (%s)",
                           shape_param, P->count + 1, a->cls);
        if (shape_of(P, a, shape_param, shape_param[0] == 'b', &d->input_h, &d->input_w,
                     &d->input_c))
            return -1;
    }
    return 0;
}

static int append_layer(kp *P, ck_layer_desc *d, const value *v) {
    if (P->count == 0 && P->pending_input) {
        if (d->input_c && (d->input_h != P->in_h || d->input_w != P->in_w || d->input_c != P->in_c))
            return kp_fail(P, v->line, v->col,
                           "expected the input shape of Input(...) at line %d (%d, %d, %d), "
                           "found input_shape (%d, %d, %d)",
                           P->in_line, P->in_h, P->in_w, P->in_c, d->input_h, d->input_w,
                           d->input_c);
        d->input_h = P->in_h;
        d->input_w = P->in_w;
        d->input_c = P->in_c;
    }
    if (P->count == 0 && P->shape2d && d->type != CK_LAYER_FLATTEN)
        return kp_fail(P, P->shape2d_line, P->shape2d_col,
                       "expected an input shape (height, width, channels): a 2-D shape is only "
                       "read when the first layer is Flatten, found %s",
                       ck_layer_type_name(d->type));
    if (d->name[0])
        for (int i = 0; i < P->count; ++i)
            if (strcmp(P->layers[i].name, d->name) == 0)
                return kp_fail(P, v->line, v->col,
                               "expected unique layer names, found '%s' again (layer %d has it)",
                               d->name, i + 1);
    if (P->count == P->cap) {
        int cap = P->cap ? P->cap * 2 : 16;
        ck_layer_desc *l = (ck_layer_desc *)realloc(P->layers, (size_t)cap * sizeof *l);
        if (!l)
            return kp_oom(P);
        P->layers = l;
        P->cap = cap;
    }
    if (P->count == 0 && d->input_c && d->input_h == 1 && d->input_w == 1)
        P->rank = 2;
    P->layers[P->count++] = *d;
    if (d->type == CK_LAYER_FLATTEN || d->type == CK_LAYER_GLOBALAVGPOOL2D)
        P->rank = 2;
    return 0;
}

static int input_item(kp *P, const value *v, const char *cls) {
    kargs a;
    int is_layer = !strcmp(cls, "InputLayer");
    if (bind(P, v, cls, is_layer ? inputlayer_p : input_p, 1, &a))
        return -1;
    if (P->count > 0 || P->pending_input)
        return kp_fail(P, v->line, v->col, "expected %s(...) only before the first layer", cls);
    const char *shapes[] = {"shape", "input_shape", "batch_shape", "batch_input_shape"};
    const char *given = NULL;
    for (int i = 0; i < 4; ++i) {
        int k = aidx(&a, shapes[i]);
        if (k < 0 || !a.v[k])
            continue;
        if (given)
            return kp_fail(P, a.line[k], a.col[k], "expected one of %s and %s for %s, found both",
                           given, shapes[i], cls);
        given = shapes[i];
    }
    if (!given)
        return kp_fail(P, v->line, v->col, "expected the argument shape of %s", cls);
    if (shape_of(P, &a, given, strstr(given, "batch") != NULL, &P->in_h, &P->in_w, &P->in_c))
        return -1;
    value *nm = aval(&a, "name");
    if (nm && nm->kind != V_NONE && nm->kind != V_STR)
        return type_err(P, &a, nm, "name", "a string");
    int bs = 0;
    value *b = aval(&a, "batch_size");
    if ((b && b->kind != V_NONE && get_int(P, &a, "batch_size", 1, &bs)) || check_dtype(P, &a) ||
        only_falsy(P, &a, "sparse") || only_falsy(P, &a, "ragged") || only_none(P, &a, "tensor") ||
        only_none(P, &a, "input_tensor") || only_none(P, &a, "type_spec") ||
        only_falsy(P, &a, "optional"))
        return -1;
    P->pending_input = 1;
    P->in_line = v->line;
    P->in_col = v->col;
    if (P->in_h == 1 && P->in_w == 1)
        P->rank = 2;
    return 0;
}

static int add_layer(kp *P, const value *v) {
    char b[160];
    if (v->kind != V_CALL)
        return kp_fail(P, v->line, v->col, "expected a layer such as Conv2D(...), found %s",
                       vdesc(v, b, sizeof b));
    const char *cls = last_component(v->s);
    if (!strcmp(cls, "Input") || !strcmp(cls, "InputLayer"))
        return input_item(P, v, cls);
    ck_layer_desc d;
    kargs a;
    double x;
    if (!strcmp(cls, "Conv2D")) {
        ck_layer_desc_init(&d, CK_LAYER_CONV2D);
        if (bind(P, v, cls, conv_p, 16, &a) || need(P, &a, "filters") ||
            need(P, &a, "kernel_size") || get_int(P, &a, "filters", 1, &d.units) ||
            get_pair(P, &a, "kernel_size", &d.kernel_h, &d.kernel_w) ||
            get_pair(P, &a, "strides", &d.stride_h, &d.stride_w) ||
            get_padding(P, &a, &d.padding) || check_data_format(P, &a) ||
            only_ones(P, &a, "dilation_rate") || only_int(P, &a, "groups", 1) ||
            get_activation(P, &a, "activation", &d.activation, &d.alpha) ||
            get_bool(P, &a, "use_bias", &d.use_bias) ||
            check_init(P, &a, "kernel_initializer", "glorot_uniform") ||
            check_init(P, &a, "bias_initializer", "zeros") ||
            only_none(P, &a, "kernel_regularizer") || only_none(P, &a, "bias_regularizer") ||
            only_none(P, &a, "activity_regularizer") || only_none(P, &a, "kernel_constraint") ||
            only_none(P, &a, "bias_constraint"))
            return -1;
    } else if (!strcmp(cls, "Dense")) {
        ck_layer_desc_init(&d, CK_LAYER_DENSE);
        if (bind(P, v, cls, dense_p, 10, &a) || need(P, &a, "units") ||
            get_int(P, &a, "units", 1, &d.units) ||
            get_activation(P, &a, "activation", &d.activation, &d.alpha) ||
            get_bool(P, &a, "use_bias", &d.use_bias) ||
            check_init(P, &a, "kernel_initializer", "glorot_uniform") ||
            check_init(P, &a, "bias_initializer", "zeros") ||
            only_none(P, &a, "kernel_regularizer") || only_none(P, &a, "bias_regularizer") ||
            only_none(P, &a, "activity_regularizer") || only_none(P, &a, "kernel_constraint") ||
            only_none(P, &a, "bias_constraint"))
            return -1;
        value *dim = aval(&a, "input_dim");
        if (dim && dim->kind != V_NONE) {
            int k = aidx(&a, "input_dim");
            if (aval(&a, "input_shape") || aval(&a, "batch_input_shape"))
                return kp_fail(P, a.line[k], a.col[k],
                               "expected one of input_dim and input_shape for Dense, found both");
            if (P->count > 0)
                return kp_fail(P, a.line[k], a.col[k],
                               "expected input_dim only on the first layer, found it on layer %d",
                               P->count + 1);
            if (get_int(P, &a, "input_dim", 1, &d.input_c))
                return -1;
            d.input_h = d.input_w = 1;
        }
    } else if (!strcmp(cls, "MaxPooling2D") || !strcmp(cls, "MaxPool2D") ||
               !strcmp(cls, "AveragePooling2D") || !strcmp(cls, "AvgPool2D")) {
        ck_layer_desc_init(&d, cls[0] == 'M' ? CK_LAYER_MAXPOOL2D : CK_LAYER_AVGPOOL2D);
        if (bind(P, v, cls, pool_p, 4, &a) ||
            get_pair(P, &a, "pool_size", &d.kernel_h, &d.kernel_w) ||
            get_padding(P, &a, &d.padding) || check_data_format(P, &a))
            return -1;
        d.stride_h = d.kernel_h;
        d.stride_w = d.kernel_w;
        value *s = aval(&a, "strides");
        if (s && s->kind != V_NONE && get_pair(P, &a, "strides", &d.stride_h, &d.stride_w))
            return -1;
    } else if (!strcmp(cls, "GlobalAveragePooling2D") || !strcmp(cls, "GlobalAvgPool2D")) {
        ck_layer_desc_init(&d, CK_LAYER_GLOBALAVGPOOL2D);
        if (bind(P, v, cls, gap_p, 2, &a) || check_data_format(P, &a) ||
            only_bool(P, &a, "keepdims", 0))
            return -1;
    } else if (!strcmp(cls, "Flatten")) {
        ck_layer_desc_init(&d, CK_LAYER_FLATTEN);
        if (bind(P, v, cls, flatten_p, 1, &a) || check_data_format(P, &a))
            return -1;
    } else if (!strcmp(cls, "BatchNormalization")) {
        ck_layer_desc_init(&d, CK_LAYER_BATCHNORM);
        if (bind(P, v, cls, bn_p, 13, &a))
            return -1;
        value *ax = aval(&a, "axis");
        if (ax && !(ax->kind == V_INT && (ax->i == -1 || ax->i == P->rank - 1)))
            return unsupported(P, &a, "axis", "-1 (the channels axis)");
        x = d.momentum;
        if (get_num(P, &a, "momentum", 0, 0, 1, 0, &x))
            return -1;
        d.momentum = (float)x;
        x = d.epsilon;
        if (get_num(P, &a, "epsilon", 0, 1, 1e308, 0, &x))
            return -1;
        d.epsilon = (float)x;
        if (only_bool(P, &a, "center", 1) || only_bool(P, &a, "scale", 1) ||
            check_init(P, &a, "beta_initializer", "zeros") ||
            check_init(P, &a, "gamma_initializer", "ones") ||
            check_init(P, &a, "moving_mean_initializer", "zeros") ||
            check_init(P, &a, "moving_variance_initializer", "ones") ||
            only_none(P, &a, "beta_regularizer") || only_none(P, &a, "gamma_regularizer") ||
            only_none(P, &a, "beta_constraint") || only_none(P, &a, "gamma_constraint") ||
            only_bool(P, &a, "synchronized", 0) || only_bool(P, &a, "renorm", 0) ||
            only_none(P, &a, "renorm_clipping") || only_none(P, &a, "virtual_batch_size") ||
            only_none(P, &a, "adjustment"))
            return -1;
        x = 0; /* renorm_momentum only matters with renorm=True; fused is an implementation hint */
        if (get_num(P, &a, "renorm_momentum", 0, 0, 1, 0, &x))
            return -1;
        value *f = aval(&a, "fused");
        int fb;
        if (f && f->kind != V_NONE && get_bool(P, &a, "fused", &fb))
            return -1;
    } else if (!strcmp(cls, "Activation")) {
        ck_layer_desc_init(&d, CK_LAYER_ACTIVATION);
        if (bind(P, v, cls, act_p, 1, &a) || need(P, &a, "activation") ||
            get_activation(P, &a, "activation", &d.activation, &d.alpha))
            return -1;
    } else if (is_act_class(cls)) {
        ck_layer_desc_init(&d, CK_LAYER_ACTIVATION);
        if (act_class(P, v, cls, &d.activation, &d.alpha, &a))
            return -1;
    } else if (!strcmp(cls, "Dropout") || !strcmp(cls, "SpatialDropout2D")) {
        int spatial = cls[0] == 'S';
        ck_layer_desc_init(&d, spatial ? CK_LAYER_SPATIAL_DROPOUT2D : CK_LAYER_DROPOUT);
        if (bind(P, v, cls, spatial ? sdropout_p : dropout_p, spatial ? 2 : 3, &a) ||
            need(P, &a, "rate") || get_num(P, &a, "rate", 0, 0, 1, 1, &x))
            return -1;
        d.rate = (float)x;
        if (spatial ? check_data_format(P, &a) : only_none(P, &a, "noise_shape"))
            return -1;
        value *s = aval(&a, "seed");
        if (s && s->kind != V_NONE) {
            if (s->kind != V_INT)
                return type_err(P, &a, s, "seed", "an integer or None");
            kp_warn(P,
                    "line %d: %s seed=%lld ignored (cnnkit draws dropout masks from the "
                    "context seed)",
                    s->line, cls, s->i);
        }
    } else {
        return kp_fail(P, v->line, v->col,
                       "unknown layer class '%.60s': expected one of " K_SUPPORTED_LIST, cls);
    }
    if (layer_common(P, &a, &d))
        return -1;
    return append_layer(P, &d, v);
}

/* ---------------------------------------------------------------------------------------------
 * model.compile: optimizer and loss
 * ------------------------------------------------------------------------------------------- */
static const char *const compile_p[] = {"optimizer",
                                        "loss",
                                        "metrics",
                                        "loss_weights",
                                        "weighted_metrics",
                                        "run_eagerly",
                                        "steps_per_execution",
                                        "jit_compile",
                                        "auto_scale_loss",
                                        "pss_evaluation_shards",
                                        NULL};
#define OPT_COMMON                                                                                 \
    "clipnorm", "clipvalue", "global_clipnorm", "use_ema", "ema_momentum",                         \
        "ema_overwrite_frequency", "lr", "decay", "name", "jit_compile", "loss_scale_factor",      \
        "gradient_accumulation_steps"
static const char *const adam_p[] = {"learning_rate", "beta_1",       "beta_2",   "epsilon",
                                     "amsgrad",       "weight_decay", OPT_COMMON, NULL};
static const char *const adamw_p[] = {"learning_rate", "weight_decay", "beta_1",   "beta_2",
                                      "epsilon",       "amsgrad",      OPT_COMMON, NULL};
static const char *const sgd_p[] = {"learning_rate", "momentum", "nesterov",
                                    "weight_decay",  OPT_COMMON, NULL};
static const char *const xent_p[] = {"from_logits", "label_smoothing", "axis",  "reduction",
                                     "name",        "ignore_class",    "dtype", NULL};

#define K_OPT_LIST "'adam', 'adamw', 'sgd', Adam(...), AdamW(...) or SGD(...)"

static int get_optimizer(kp *P, const value *v, ck_optimizer_desc *o) {
    char b[160];
    if (v->kind == V_STR) {
        if (ieq(v->s, "adam") || ieq(v->s, "adamw")) {
            ck_optimizer_desc_init(o, CK_OPT_ADAM);
            if (ieq(v->s, "adamw"))
                o->weight_decay = 0.004f;
        } else if (ieq(v->s, "sgd"))
            ck_optimizer_desc_init(o, CK_OPT_SGD);
        else
            return kp_fail(P, v->line, v->col,
                           "unsupported optimizer '%.40s': expected " K_OPT_LIST, v->s);
        return 0;
    }
    const char *cls = v->kind == V_CALL ? last_component(v->s) : "";
    int adam = !strcmp(cls, "Adam"), adamw = !strcmp(cls, "AdamW"), sgd = !strcmp(cls, "SGD");
    if (!adam && !adamw && !sgd) {
        if (v->kind == V_CALL)
            return kp_fail(P, v->line, v->col,
                           "unsupported optimizer %.60s(...): expected " K_OPT_LIST, v->s);
        return kp_fail(P, v->line, v->col, "expected an optimizer (" K_OPT_LIST "), found %s",
                       vdesc(v, b, sizeof b));
    }
    kargs a;
    if (bind(P, v, cls, adam ? adam_p : adamw ? adamw_p : sgd_p, adam || adamw ? 6 : 4, &a))
        return -1;
    ck_optimizer_desc_init(o, sgd ? CK_OPT_SGD : CK_OPT_ADAM);
    if (adamw)
        o->weight_decay = 0.004f;
    double x;
    if (aval(&a, "learning_rate") && aval(&a, "lr")) {
        int i = aidx(&a, "lr");
        return kp_fail(P, a.line[i], a.col[i],
                       "expected one of learning_rate and lr for %s, found both", cls);
    }
    const char *lr = aval(&a, "lr") ? "lr" : "learning_rate";
    x = o->learning_rate;
    if (get_num(P, &a, lr, 0, 1, 1e308, 0, &x))
        return -1;
    o->learning_rate = (float)x;
    value *wd = aval(&a, "weight_decay");
    if (wd && wd->kind != V_NONE) {
        if (get_num(P, &a, "weight_decay", 0, 0, 1e308, 0, &x))
            return -1;
        o->weight_decay = (float)x;
    }
    if (sgd) {
        x = 0;
        if (get_num(P, &a, "momentum", 0, 0, 1, 0, &x) || get_bool(P, &a, "nesterov", &o->nesterov))
            return -1;
        o->momentum = (float)x;
    } else {
        x = o->beta1;
        if (get_num(P, &a, "beta_1", 0, 0, 1, 1, &x))
            return -1;
        o->beta1 = (float)x;
        x = o->beta2;
        if (get_num(P, &a, "beta_2", 0, 0, 1, 1, &x))
            return -1;
        o->beta2 = (float)x;
        value *eps = aval(&a, "epsilon");
        if (eps && eps->kind != V_NONE) { /* None: the Keras backend epsilon, 1e-7 */
            x = o->epsilon;
            if (get_num(P, &a, "epsilon", 0, 1, 1e308, 0, &x))
                return -1;
            o->epsilon = (float)x;
        }
        if (only_bool(P, &a, "amsgrad", 0))
            return -1;
    }
    value *dec = aval(&a, "decay");
    if (dec && !(is_num(dec) && dec->f == 0.0))
        return unsupported(P, &a, "decay", "0 (learning-rate decay is not supported)");
    value *nm = aval(&a, "name");
    if (nm && nm->kind != V_STR && nm->kind != V_NONE)
        return type_err(P, &a, nm, "name", "a string");
    if (only_none(P, &a, "clipnorm") || only_none(P, &a, "clipvalue") ||
        only_none(P, &a, "global_clipnorm") || only_falsy(P, &a, "use_ema") ||
        only_none(P, &a, "loss_scale_factor") || only_none(P, &a, "gradient_accumulation_steps"))
        return -1;
    return 0; /* ema_momentum / ema_overwrite_frequency only matter with use_ema; jit_compile
                 is an implementation hint */
}

static int get_loss(kp *P, const value *v, char *loss, size_t len) {
    static const char *const names[] = {"sparse_categorical_crossentropy",
                                        "categorical_crossentropy"};
    char b[160];
    if (v->kind == V_NONE) {
        loss[0] = '\0';
        return 0;
    }
    const char *nm = v->kind == V_STR                           ? v->s
                     : (v->kind == V_NAME || v->kind == V_CALL) ? last_component(v->s)
                                                                : NULL;
    for (int i = 0; nm && i < 2; ++i) {
        if (!loose_eq(nm, names[i]))
            continue;
        if (v->kind == V_CALL) {
            kargs a;
            if (bind(P, v, last_component(v->s), xent_p, 0, &a) ||
                only_falsy(P, &a, "from_logits") || only_none(P, &a, "ignore_class") ||
                check_dtype(P, &a))
                return -1;
            value *ax = aval(&a, "axis");
            if (ax && !(ax->kind == V_INT && ax->i == -1))
                return unsupported(P, &a, "axis", "-1");
            value *ls = aval(&a, "label_smoothing");
            if (ls && !(is_num(ls) && ls->f == 0.0))
                return unsupported(P, &a, "label_smoothing", "0");
            value *r = aval(&a, "reduction");
            if (r && r->kind != V_NONE &&
                !(r->kind == V_STR &&
                  (!strcmp(r->s, "auto") || !strcmp(r->s, "sum_over_batch_size"))))
                return unsupported(P, &a, "reduction", "'sum_over_batch_size' (the mean)");
        }
        snprintf(loss, len, "%s", names[i]);
        return 0;
    }
    return kp_fail(P, v->line, v->col,
                   "unsupported loss: expected 'sparse_categorical_crossentropy' or "
                   "'categorical_crossentropy', found %s",
                   vdesc(v, b, sizeof b));
}

static int do_compile(kp *P, const value *call) {
    kargs a;
    if (bind(P, call, "compile", compile_p, 3, &a))
        return -1;
    value *ov = aval(&a, "optimizer");
    if (!ov)
        return kp_fail(P, call->line, call->col,
                       "expected the argument optimizer of compile (the Keras default "
                       "'rmsprop' is not supported)");
    ck_optimizer_desc o;
    char loss[64] = "";
    if (get_optimizer(P, ov, &o))
        return -1;
    value *lv = aval(&a, "loss");
    if (lv && get_loss(P, lv, loss, sizeof loss))
        return -1;
    if (only_none(P, &a, "loss_weights"))
        return -1;
    /* metrics / weighted_metrics only report; run_eagerly, steps_per_execution, jit_compile,
       auto_scale_loss, pss_evaluation_shards are execution settings */
    P->has_compile = 1;
    P->opt = o;
    memcpy(P->loss, loss, sizeof loss);
    return 0;
}

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
    if (o->src[0] == '(' && i > 0 && P->toks[i - 1].kind == TK_NAME && !is_keyword(&P->toks[i - 1]))
        snprintf(buf, n, "'%.*s('", P->toks[i - 1].len > 60 ? 60 : P->toks[i - 1].len,
                 P->toks[i - 1].src);
    else
        snprintf(buf, n, "'%c'", o->src[0]);
}

/* May the statement [b, ...) that is open at the NEWLINE token nl be closed there? */
static int recoverable(kp *P, size_t b, size_t nl) {
    const tok *last = &P->toks[nl - 1];
    int ends_value = last->kind == TK_NUMBER || last->kind == TK_STRING || is_close(last) ||
                     (last->kind == TK_NAME && (!is_keyword(last) || is_name(last, "True") ||
                                                is_name(last, "False") || is_name(last, "None")));
    if (!ends_value)
        return 0;
    const tok *nx = &P->toks[nl + 1];
    if (nx->kind == TK_EOF) /* at the end of the text: only a statement of one line */
        return P->toks[b].line == last->line;
    if (nx->kind != TK_NAME || nx->col > P->toks[b].col || is_name(nx, "and") ||
        is_name(nx, "or") || is_name(nx, "in") || is_name(nx, "is") || is_name(nx, "not") ||
        is_name(nx, "lambda"))
        return 0;
    int d = 0;
    for (size_t k = nl + 1; P->toks[k].kind != TK_NEWLINE && P->toks[k].kind != TK_EOF; ++k) {
        if (is_open(&P->toks[k]))
            d++;
        else if (is_close(&P->toks[k]) && --d < 0)
            return 0;
    }
    return 1;
}

/* The next statement from token *pi. Returns 1 at the end of the text, -1 on error. */
static int split(kp *P, size_t *pi, stmt *S) {
    size_t i = *pi;
    while (P->toks[i].kind == TK_NEWLINE || is_op(&P->toks[i], ";"))
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
                         closer_of(o->src[0]), od, o->line, o->col);
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
                kp_warn(P, "line %d: unbalanced parentheses, statement closed at end of line",
                        t->line);
                return 0;
            }
            continue;
        }
        if (depth == 0 && is_op(t, ";")) {
            S->e = i;
            *pi = i + 1;
            return 0;
        }
        if (broken)
            continue;
        if (is_open(t)) {
            if (depth == KP_MAX_DEPTH)
                return kp_fail(P, t->line, t->col, "expected brackets nested at most %d deep",
                               KP_MAX_DEPTH);
            stack[depth++] = i;
        } else if (is_close(t)) {
            S->el = t->line;
            S->ec = t->col;
            if (depth == 0) {
                S->err = broken = 1;
                snprintf(S->emsg, sizeof S->emsg,
                         "expected the end of the statement, found an unmatched '%c'", t->src[0]);
            } else if (closer_of(P->toks[stack[depth - 1]].src[0]) != t->src[0]) {
                const tok *o = &P->toks[stack[depth - 1]];
                opener_desc(P, stack[depth - 1], od, sizeof od);
                S->err = broken = 1;
                snprintf(S->emsg, sizeof S->emsg,
                         "expected '%c' to close %s opened at line %d, column %d, found '%c'",
                         closer_of(o->src[0]), od, o->line, o->col, t->src[0]);
            } else
                depth--;
        }
    }
}

static int tok_is(const tok *t, const char *name) {
    return t->kind == TK_NAME && is_name(t, name);
}

/* Tokens from k: `[a.b.]Sequential(` inside the current statement? */
static int sequential_at(kp *P, size_t k) {
    if (k >= P->end || P->cur[k].kind != TK_NAME)
        return 0;
    while (k + 2 < P->end && is_op(&P->cur[k + 1], ".") && P->cur[k + 2].kind == TK_NAME)
        k += 2;
    return k + 1 < P->end && tok_is(&P->cur[k], "Sequential") && is_op(&P->cur[k + 1], "(");
}

static int check_opaque(kp *P, const tok *t) {
    for (int i = P->nblocks - 1; i >= 0; --i)
        if (P->blocks[i].opaque)
            return kp_fail(P, t->line, t->col,
                           "expected model statements outside loops and conditionals (cnnkit "
                           "reads the text, it does not run it), found one inside the '%s' at "
                           "line %d",
                           P->blocks[i].kw, P->blocks[i].line);
    return 0;
}

static const char *const seq_p[] = {"layers", "name", "trainable", NULL};

/* var = [prefix.]Sequential(...) (var may be NULL: `return Sequential(...)`) */
static int model_create(kp *P, const tok *var, size_t rhs) {
    if (check_opaque(P, &P->cur[rhs]))
        return -1;
    P->pos = rhs;
    value *v = p_full_expr(P);
    if (!v)
        return -1;
    if (P->have_model)
        return kp_fail(P, v->line, v->col,
                       "expected one Sequential model, found a second one (the first is at line "
                       "%d)",
                       P->model_line);
    kargs a;
    if (bind(P, v, "Sequential", seq_p, 1, &a) || only_bool(P, &a, "trainable", 1))
        return -1;
    value *nm = aval(&a, "name");
    if (nm && nm->kind != V_STR && nm->kind != V_NONE)
        return type_err(P, &a, nm, "name", "a string");
    if (var) {
        if ((size_t)var->len >= sizeof P->model_var)
            return kp_fail(P, var->line, var->col,
                           "expected a model variable name of at most "
                           "%d characters",
                           (int)sizeof P->model_var - 1);
        memcpy(P->model_var, var->src, (size_t)var->len);
        P->model_var[var->len] = '\0';
    }
    P->have_model = 1;
    P->model_line = v->line;
    P->model_col = v->col;
    value *ls = aval(&a, "layers");
    if (!ls || ls->kind == V_NONE)
        return 0;
    if (ls->kind != V_LIST && ls->kind != V_TUPLE)
        return type_err(P, &a, ls, "layers", "a list of layers");
    for (int i = 0; i < ls->n; ++i)
        if (add_layer(P, ls->items[i]))
            return -1;
    return 0;
}

/* NAME = expr and a, b = x, y: remembered when the value can be read, else marked unknown. */
static int add_sym(kp *P, const tok *name, value *v, const char *why) {
    sym *s = (sym *)kp_alloc(P, sizeof *s);
    if (!s || !(s->name = kp_strndup(P, name->src, (size_t)name->len)))
        return -1;
    if (v && v->kind == V_UNKNOWN) {
        why = v->s;
        v = NULL;
    }
    s->v = v;
    s->why = why;
    s->line = name->line;
    s->next = P->syms;
    P->syms = s;
    return 0;
}

/* expr or a bare tuple `a, b` up to the end of the statement (right side of an assignment) */
static value *p_expr_list(kp *P) {
    const tok *t0 = peek(P);
    value *v = p_expr(P);
    if (!v || !is_op(peek(P), ","))
        return v && !expect_end(P) ? v : NULL;
    value **items = NULL;
    int n = 0, cap = 0;
    for (;;) {
        items = (value **)grow(P, items, n, &cap, sizeof *items);
        if (!items)
            return NULL;
        items[n++] = v;
        if (!is_op(peek(P), ","))
            break;
        advance(P);
        if (at_end(P))
            break;
        if (!(v = p_expr(P)))
            return NULL;
    }
    if (expect_end(P))
        return NULL;
    value *t = new_value(P, V_TUPLE, t0->line, t0->col);
    if (t) {
        t->n = n;
        t->items = items;
    }
    return t;
}

static int assign(kp *P, const tok *const *targets, int nt, size_t rhs) {
    P->pos = rhs;
    value *v = p_expr_list(P);
    const char *why = NULL;
    if (!v) {
        if (P->st == CK_STATUS_ALLOC_FAILED)
            return -1;
        why = kp_printf(P, "an expression that cnnkit cannot read (%s)", P->msg);
        P->failed = 0;
        P->st = CK_STATUS_SUCCESS;
        P->msg[0] = '\0';
        if (!why)
            return -1;
    }
    if (nt == 1)
        return add_sym(P, targets[0], v, why);
    int spread = v && (v->kind == V_TUPLE || v->kind == V_LIST) && v->n == nt;
    if (v && !spread)
        why = "a value that cnnkit cannot unpack";
    for (int i = 0; i < nt; ++i)
        if (add_sym(P, targets[i], spread ? v->items[i] : NULL, why))
            return -1;
    return 0;
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
            if (tok_is(m, k_skipped_methods[i]))
                return 0;
        return kp_fail(P, m->line, m->col,
                       "unsupported model method '%.*s': expected add, compile or pop (summary, "
                       "fit, evaluate, predict, save, ... are skipped)",
                       m->len, m->src);
    }
    if (check_opaque(P, t0))
        return -1;
    if (!P->model_var[0] && (size_t)t0->len < sizeof P->model_var) {
        memcpy(P->model_var, t0->src, (size_t)t0->len);
        P->model_var[t0->len] = '\0';
    }
    P->pos = b;
    value *v = p_full_expr(P);
    if (!v)
        return -1;
    if (v->kind != V_CALL)
        return kp_fail(P, t0->line, t0->col, "expected %s.%.*s(...)", P->model_var, m->len, m->src);
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
        return kp_fail(P, g->line, g->col, "expected %s for %s.%.*s, found another argument",
                       add ? "one layer" : "no arguments", P->model_var, m->len, m->src);
    }
    if (compile)
        return do_compile(P, v);
    if (add) {
        if (!layer)
            return kp_fail(P, v->line, v->col, "expected a layer in %s.add(...)", P->model_var);
        return add_layer(P, layer);
    }
    if (P->count == 0)
        return kp_fail(P, v->line, v->col, "expected a layer for pop() to remove, found none");
    P->count--;
    if (P->count == 0 && !P->pending_input)
        P->rank = 4;
    return 0;
}

/* A statement that is skipped may not contain model.add/compile/pop (a one-line loop, ...). */
static int check_skipped(kp *P, size_t b, size_t e) {
    if (!P->model_var[0])
        return 0;
    for (size_t k = b; k + 2 < e; ++k) {
        const tok *t = &P->cur[k], *m = &P->cur[k + 2];
        if (tok_is(t, P->model_var) && is_op(&P->cur[k + 1], ".") &&
            (tok_is(m, "add") || tok_is(m, "compile") || tok_is(m, "pop")))
            return kp_fail(P, t->line, t->col,
                           "expected %s.%.*s(...) as a statement of its own, found it inside "
                           "another statement (cnnkit reads the text, it does not run it)",
                           P->model_var, m->len, m->src);
    }
    return 0;
}

static const char *const k_compound[] = {"if",    "elif",   "else",    "for",  "while",
                                         "try",   "except", "finally", "with", "def",
                                         "class", "async",  NULL};
static const char *const k_transparent[] = {"try",   "finally", "with", "def",
                                            "class", "async",   NULL};

static int process(kp *P, const stmt *S) {
    /* copy the statement without its line breaks, then the token that ends it */
    size_t need = S->e - S->b + 1;
    if (need > P->curcap) {
        size_t cap = need > 2 * P->curcap ? need : 2 * P->curcap;
        tok *c = (tok *)realloc(P->cur, cap * sizeof *c);
        if (!c)
            return kp_oom(P);
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
    while (P->nblocks > 0 && P->blocks[P->nblocks - 1].indent >= t0->col)
        P->nblocks--;
    if (tok_is(t0, "import") || tok_is(t0, "from"))
        return 0;
    if (is_keyword(t0) && !tok_is(t0, "True") && !tok_is(t0, "False") && !tok_is(t0, "None")) {
        int compound = 0;
        for (int i = 0; k_compound[i]; ++i)
            compound |= tok_is(t0, k_compound[i]);
        if (compound && is_op(&P->cur[e - 1], ":") && P->nblocks < KP_MAX_BLOCKS) {
            block *bl = &P->blocks[P->nblocks++];
            bl->indent = t0->col;
            bl->line = t0->line;
            snprintf(bl->kw, sizeof bl->kw, "%.*s", t0->len, t0->src);
            bl->opaque = 1;
            for (int i = 0; k_transparent[i]; ++i)
                if (tok_is(t0, k_transparent[i]))
                    bl->opaque = 0;
            if (tok_is(t0, "if") && b + 1 < e && tok_is(&P->cur[b + 1], "__name__"))
                bl->opaque = 0;
        }
        if (tok_is(t0, "return") && sequential_at(P, b + 1))
            return model_create(P, NULL, b + 1);
        return check_skipped(P, b, e);
    }
    if (t0->kind == TK_NAME && b + 1 < e && is_op(&P->cur[b + 1], "=")) {
        if (sequential_at(P, b + 2))
            return model_create(P, t0, b + 2);
        if (check_skipped(P, b, e))
            return -1;
        return assign(P, &t0, 1, b + 2);
    }
    if (t0->kind == TK_NAME) {
        /* a, b = ... */
        const tok *targets[16];
        int nt = 0;
        size_t k = b;
        while (k < e && P->cur[k].kind == TK_NAME && !is_keyword(&P->cur[k]) && nt < 16) {
            targets[nt++] = &P->cur[k++];
            if (k < e && is_op(&P->cur[k], ","))
                k++;
            else
                break;
        }
        if (nt >= 2 && k < e && is_op(&P->cur[k], "=")) {
            if (check_skipped(P, b, e))
                return -1;
            return assign(P, targets, nt, k + 1);
        }
    }
    if (t0->kind == TK_NAME && b + 3 < e && is_op(&P->cur[b + 1], ".") &&
        P->cur[b + 2].kind == TK_NAME && is_op(&P->cur[b + 3], "(")) {
        int mine;
        if (P->model_var[0])
            mine = tok_is(t0, P->model_var);
        else {
            /* no model variable yet: adopt NAME on NAME.add(Class(...)) / NAME.compile(...),
             * or on any model method after `return Sequential(...)` */
            const tok *m = &P->cur[b + 2];
            size_t k = b + 4;
            while (k + 2 < e && is_op(&P->cur[k + 1], ".") && P->cur[k + 2].kind == TK_NAME)
                k += 2;
            int layer_arg = k + 1 < e && P->cur[k].kind == TK_NAME && is_op(&P->cur[k + 1], "(") &&
                            P->cur[k].src[0] >= 'A' &&
                            P->cur[k].src[0] <= 'Z'; /* a class: Conv2D(...), Conv3D(...) */
            mine = P->have_model ? (tok_is(m, "add") || tok_is(m, "compile") || tok_is(m, "pop"))
                                 : ((tok_is(m, "add") && layer_arg) || tok_is(m, "compile"));
        }
        if (mine)
            return model_method(P, b);
    }
    if (P->model_var[0] && tok_is(t0, P->model_var)) {
        char d[96];
        const tok *t1 = b + 1 < e ? &P->cur[b + 1] : &P->endtok;
        if (is_op(t1, ".") && b + 2 < e && P->cur[b + 2].kind == TK_NAME)
            snprintf(d, sizeof d, "'%s.%.*s'", P->model_var,
                     P->cur[b + 2].len > 40 ? 40 : P->cur[b + 2].len, P->cur[b + 2].src);
        else
            tok_desc(P, t1, d, sizeof d);
        return kp_fail(P, t0->line, t0->col,
                       "unsupported use of the model: expected %s.add(...), %s.compile(...) or "
                       "a skipped call such as %s.summary(), found %s",
                       P->model_var, P->model_var, P->model_var, d);
    }
    return check_skipped(P, b, e);
}

/* ---------------------------------------------------------------------------------------------
 * API
 * ------------------------------------------------------------------------------------------- */
static void put_err(char *err, size_t err_len, const char *msg) {
    if (err && err_len)
        snprintf(err, err_len, "%s", msg);
}

CK_API ck_status ck_keras_parse(const char *text, ck_keras_model *out, char *err, size_t err_len) {
    if (err && err_len)
        err[0] = '\0';
    if (!text || !out) {
        put_err(err, err_len, !text ? "text: NULL" : "out: NULL");
        return CK_STATUS_BAD_PARAM;
    }
    kp *P = (kp *)calloc(1, sizeof *P);
    if (!P) {
        put_err(err, err_len, "out of host memory while parsing the model text");
        return CK_STATUS_ALLOC_FAILED;
    }
    P->text = text;
    P->len = strlen(text);
    P->rank = 4;
    ck_optimizer_desc_init(&P->opt, CK_OPT_ADAM);
    int rc = 0;
    if (P->len > (size_t)INT_MAX / 2)
        rc = kp_fail(P, 1, 1, "expected a model text of less than 1 GiB");
    if (!rc)
        rc = tokenize(P);
    size_t i = 0;
    while (!rc) {
        stmt S;
        int r = split(P, &i, &S);
        if (r < 0)
            rc = -1;
        if (r != 0)
            break;
        rc = process(P, &S);
        if (!rc && S.err)
            rc = kp_fail(P, S.el, S.ec, "%s", S.emsg);
    }
    if (!rc && P->count == 0) {
        if (P->have_model)
            rc = kp_fail(P, P->model_line, P->model_col,
                         "expected at least one layer in the Sequential model, found none");
        else
            rc = kp_fail(P, 1, 1,
                         "expected a Keras Sequential model (model = Sequential(...) or "
                         "model.add(...)), found no layers");
    }
    if (rc) {
        ck_status st = P->st == CK_STATUS_SUCCESS ? CK_STATUS_INTERNAL : P->st;
        put_err(err, err_len, P->msg);
        kp_free(P);
        free(P);
        return st;
    }
    ck_keras_model m;
    memset(&m, 0, sizeof m);
    m.layers = P->layers;
    m.count = P->count;
    P->layers = NULL;
    m.has_compile = P->has_compile;
    m.optimizer = P->opt;
    memcpy(m.loss, P->loss, sizeof m.loss);
    memcpy(m.warnings, P->warn, sizeof m.warnings);
    m.warnings[sizeof m.warnings - 1] = '\0';
    kp_free(P);
    free(P);
    *out = m;
    return CK_STATUS_SUCCESS;
}

CK_API void ck_keras_model_free(ck_keras_model *m) {
    if (!m)
        return;
    free(m->layers);
    m->layers = NULL;
    m->count = 0;
}
