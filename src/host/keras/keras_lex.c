/* Keras text front end: errors, warnings and the parse arena; the tokenizer for Python's
 * lexical syntax and the token predicates. See keras_internal.h. */
#include "keras_internal.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Errors, warnings, memory
 * ------------------------------------------------------------------------------------------- */
int ck_kp_fail(kp *P, int line, int col, const char *fmt, ...) {
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

int ck_kp_oom(kp *P) {
    if (P->st != CK_STATUS_ALLOC_FAILED) {
        P->failed = 1;
        P->st = CK_STATUS_ALLOC_FAILED;
        snprintf(P->msg, sizeof P->msg, "out of host memory while parsing the model text");
    }
    return -1;
}

void ck_kp_warn(kp *P, const char *fmt, ...) {
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

void *ck_kp_alloc(kp *P, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    arena_blk *b = P->arena;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = (arena_blk *)ck_host_alloc(P->ctx, ARENA_HDR + cap);
        if (!b) {
            ck_kp_oom(P);
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

char *ck_kp_strndup(kp *P, const char *s, size_t n) {
    char *d = (char *)ck_kp_alloc(P, n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

char *ck_kp_printf(kp *P, const char *fmt, ...) {
    char buf[KP_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return ck_kp_strndup(P, buf, strlen(buf));
}

void ck_kp_free(kp *P) {
    while (P->arena) {
        arena_blk *n = P->arena->next;
        ck_host_free(P->ctx, P->arena);
        P->arena = n;
    }
    ck_host_free(P->ctx, P->toks);
    ck_host_free(P->ctx, P->cur);
    ck_host_free(P->ctx, P->body_end);
    P->body_end = NULL;
    ck_host_free(P->ctx, P->layers);
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
int ck_kp_loose_eq(const char *a, const char *b) {
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
int ck_kp_ieq(const char *a, const char *b) {
    while (*a && lower((unsigned char)*a) == lower((unsigned char)*b)) {
        ++a;
        ++b;
    }
    return lower((unsigned char)*a) == lower((unsigned char)*b);
}
const char *ck_kp_last_component(const char *dotted) {
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
        tok *t = (tok *)ck_host_realloc(P->ctx, P->toks, cap * sizeof *t);
        if (!t) {
            ck_kp_oom(P);
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
                return ck_kp_fail(
                    P, t->line, t->col,
                    "unterminated string: expected a closing %c%c%c before the end of "
                    "the text",
                    q, q, q);
            return ck_kp_fail(
                P, t->line, t->col,
                "unterminated string: expected a closing %c before the end of the line", q);
        }
        if (s[j] == '\\' && j + 1 < n) {
            j += 2;
            continue;
        }
        if (s[j] == q && (!triple || (j + 2 < n && s[j + 1] == q && s[j + 2] == q)))
            break;
        ++j;
    }
    char *d = (char *)ck_kp_alloc(P, j - body + 1);
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

int ck_kp_tokenize(kp *P) {
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
            return ck_kp_fail(P, line, col, "expected a line break after '\\'");
        }
        if (fancy_quote(s, i, n))
            return ck_kp_fail(
                P, line, col,
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
                    return ck_kp_fail(P, line, col, "unexpected control character (code %d)",
                                      (unsigned char)c);
                return ck_kp_fail(P, line, col, "unexpected character '%c'", c);
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

int ck_kp_is_op(const tok *t, const char *op) {
    return t->kind == TK_OP && (size_t)t->len == strlen(op) &&
           memcmp(t->src, op, (size_t)t->len) == 0;
}
int ck_kp_is_name(const tok *t, const char *nm) {
    return t->kind == TK_NAME && (size_t)t->len == strlen(nm) &&
           memcmp(t->src, nm, (size_t)t->len) == 0;
}
int ck_kp_is_open(const tok *t) {
    return t->kind == TK_OP && t->len == 1 &&
           (t->src[0] == '(' || t->src[0] == '[' || t->src[0] == '{');
}
int ck_kp_is_close(const tok *t) {
    return t->kind == TK_OP && t->len == 1 &&
           (t->src[0] == ')' || t->src[0] == ']' || t->src[0] == '}');
}
char ck_kp_closer_of(char open) {
    return open == '(' ? ')' : open == '[' ? ']' : '}';
}

static const char *const k_keywords[] = {
    "False", "None",     "True",  "and",    "as",   "assert", "async",  "await",    "break",
    "class", "continue", "def",   "del",    "elif", "else",   "except", "finally",  "for",
    "from",  "global",   "if",    "import", "in",   "is",     "lambda", "nonlocal", "not",
    "or",    "pass",     "raise", "return", "try",  "while",  "with",   "yield",    NULL};

int ck_kp_is_keyword(const tok *t) {
    if (t->kind != TK_NAME)
        return 0;
    for (int i = 0; k_keywords[i]; ++i)
        if (ck_kp_is_name(t, k_keywords[i]))
            return 1;
    return 0;
}

/* Short description of a token for "found ..." */
const char *ck_kp_tok_desc(kp *P, const tok *t, char *buf, size_t n) {
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
