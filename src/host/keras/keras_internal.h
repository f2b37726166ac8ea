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
 *  dilation, groups, trainable=False, center/scale=False, ...) are errors naming them. Calls
 *  of the text's functions, for loops over known sequences and branches on known conditions
 *  are run (keras_run.c); model statements inside loops or conditionals the reader cannot run
 *  are errors.
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
 *
 * Files (this header holds the types they share and the functions one calls in another)
 *  keras_lex.c     errors, warnings, the arena; the tokenizer
 *  keras_expr.c    expressions (the known layer classes are the kinds', layer.h)
 *  keras_bind.c    arguments bound to parameter names, their readers; model.compile
 *  keras_layers.c  the layer calls (ck_kp_add_layer): each kind's Keras classes bound over this
 *                  parser's readers (layer.h ck_kbind), Input, the arguments every layer takes
 *  keras_stmt.c    statements and ck_keras_parse
 *  keras_func.c    the functional model: Input, layers called on tensors, Model
 *  keras_run.c     what of Python is run: conditions, calls of the text's functions, for loops
 *  keras_model.c   ck_model_from_keras_text
 */
#ifndef CNNKIT_KERAS_INTERNAL_H
#define CNNKIT_KERAS_INTERNAL_H

#include "internal.h"

#include "cnnkit/model.h"

#include <stddef.h>

#define KP_MAX_DEPTH 64  /* nested brackets / expressions */
#define KP_MAX_BLOCKS 64 /* nested compound statements tracked */
#define KP_MAX_PARAMS 40 /* parameters of one class */
#define KP_MSG_LEN 512
#define KP_MAX_FN_LAYERS 256  /* layers of a functional model */
#define KP_MAX_CALL_DEPTH_ 16 /* calls of the text's functions inside each other */
#define KP_MAX_STEPS_ 200000  /* statements (and loop passes) read: loops and calls are run */

/* A tensor name of a functional model: the layer whose output it is (-1: the Input). */
typedef struct ktensor {
    struct ktensor *next;
    const char *name;
    int id; /* 1, 2, ... in definition order: the value of its name carries it (value.i) */
    int layer, rank, line, col;
    int hidden; /* a name of a call's body that returned: read only through its id */
} ktensor;

/* value.i of a V_NAME that stands for the model (a function returned it) */
#define KP_MODEL_ID (-1)

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
    V_APPLY,  /* a layer called on tensors, Conv2D(...)(x): items[0] the layer's V_CALL,
                 items[1] the argument (a tensor name, a list of them, or another V_APPLY) */
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
    long long i;   /* V_INT, V_BOOL; V_NAME of a tensor: its ktensor id (0: look the name up) */
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
    int comprehension; /* a comprehension's own name: not seen from the calls its item makes */
} sym;

typedef struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
} arena_blk;
#define ARENA_HDR ((sizeof(arena_blk) + 15) & ~(size_t)15)

typedef struct block {
    int indent, opaque, line;
    char kw[12];
    /* a def: the names and tensors before its body, restored at its end (its names are local) */
    struct sym *syms;
    struct ktensor *tensors;
    int fn; /* a def: its entry in kp.fns, else -1 */
    /* if / elif / else: skip, a branch known not to run (its statements are not read);
     * chain_taken, chain_known: some branch of the chain so far runs / every condition so far
     * was known */
    int skip, chain_taken, chain_known;
    int run; /* a block the reader runs (keras_run.c): 1 a pass of a for loop, 2 a call's body */
    size_t body; /* the token of kp.toks where its body starts */
} block;

/* A function the text defines (keras_run.c): recorded at its def, its body read at each call. */
#define KP_MAX_FNS 64
#define KP_MAX_FN_PARAMS 24
enum { KP_PARAM_PLAIN, KP_PARAM_KW, KP_PARAM_ARGS, KP_PARAM_KWARGS };
typedef struct kp_param {
    const char *name;
    value *def; /* the default, evaluated at the def; NULL: none */
    int kind;   /* KP_PARAM_*: positional or keyword, keyword-only, *args, **kwargs */
} kp_param;
typedef struct kp_fn {
    char name[48];
    int line, col, indent;
    size_t body_b, body_e; /* the body's statements: tokens [body_b, body_e) of kp.toks */
    int nparams;
    kp_param params[KP_MAX_FN_PARAMS];
    const char *refuse; /* why a call of it is refused (a one-line or decorated def, or one in a
                           block the reader does not run), or NULL */
    int def_frame;      /* the id of the call whose body ran the def (0: the module) */
} kp_fn;

enum { KP_FLOW_NONE, KP_FLOW_BREAK, KP_FLOW_CONTINUE, KP_FLOW_RETURN };

struct kp_up;
typedef struct kp {
    ck_context *ctx;        /* every allocation of the parse is counted on it (NULL: nowhere) */
    const struct kp_up *up; /* the upward calls (kp_up) */
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
    /* variables and blocks; scope: the first name outside the call being read (NULL: the
     * module's names are all of them) */
    sym *syms, *scope;
    block blocks[KP_MAX_BLOCKS];
    int nblocks;
    /* the model */
    int have_model, model_line, model_col;
    char model_var[64];
    char model_name[48], input_name[48]; /* name= of the model and of its Input, "" none */
    kp_fn fns[KP_MAX_FNS];
    int nfns;
    /* running (keras_run.c): a break, continue or return leaving the statements (KP_FLOW_*) and
     * the value returned; calls nested now; statements read so far (bounded); hard: a call's
     * body failed (its error is not an unknown value); quiet: no warnings while scanning */
    int flow;
    value *ret;
    int call_depth;
    long long steps;
    int hard, quiet;
    int decorated; /* the statement before was a decorator (@...) */
    /* the model's other names (net = model; a helper's parameter while it runs) */
    char model_alias[8][64];
    int nmodel_alias;
    /* the calls being read, by depth 1 .. call_depth: the first name below each one's names, its
     * id, and the id of the call whose body defined its function (0: the module) */
    sym *frame_scope[KP_MAX_CALL_DEPTH_ + 2];
    int frame_id[KP_MAX_CALL_DEPTH_ + 2], frame_closure[KP_MAX_CALL_DEPTH_ + 2], frame_ids;
    int push_only;    /* bind new names (a comprehension's own), never set an existing one */
    size_t *body_end; /* by the token after a def / for header: where its body ends (0: not yet
                         found); ntok + 1 entries, allocated on the context */
    /* the if-chain that ended last (an elif / else at its indent continues it) */
    int chain_indent, chain_taken, chain_known;
    /* from ... import A as B: B stands for A (a layer class, an optimizer) */
    struct {
        char alias[48], name[48];
    } aliases[32];
    int naliases;
    ck_layer_desc *layers;
    int count, cap;
    int rank; /* rank of the current output with batch: 4 (images) or 2 (vectors) */
    int pending_input, in_h, in_w, in_c, in_line, in_col;
    int shape2d, shape2d_line, shape2d_col; /* a 2-D input shape (h, w) was read as h x w x 1 */
    int shape2d_flat;                       /* and a Flatten came */
    int shape_dims; /* sizes in the last shape read (ck_kp_shape_of), without the batch: 1 is a
                       vector (n,), read as 1 x 1 x n; 3 an image, also when it is 1 x 1 x c */
    int flat_input; /* the input is a vector and no Flatten, pooling or Dense has come since:
                       inside it is still 1 x 1 x n, so build cannot tell it from an image */
    const karg *added[256]; /* the arguments of the layer objects model.add took (the first 256;
                               a variable's value is copied, its arguments shared): one added
                               twice is refused, as Keras refuses it */
    int n_added;
    int has_compile;
    int has_precision, precision; /* mixed_precision.set_global_policy(...): the policy now */
    /* Keras gives a layer the policy in force when it is made: the first layer's (and whether a
     * call set it), and the line of a later call that changed it after the last layer (no
     * effect on the model) or 0 */
    int made_has_precision, made_precision, policy_after_line;
    /* the functional model (keras_func.c): x = keras.Input(...), y = Layer(...)(x), ...,
     * model = keras.Model(inputs, outputs) */
    int functional;          /* an Input tensor was assigned */
    struct ktensor *tensors; /* the tensor names, the latest definition first */
    int fn_nin;              /* the inputs of the layer being appended (append_layer) */
    int fn_inputs[CK_MAX_LAYER_INPUTS];
    int fn_line[KP_MAX_FN_LAYERS], fn_col[KP_MAX_FN_LAYERS]; /* where each layer was applied */
    ck_optimizer_desc opt;
    char loss[64];
    int from_logits, loss_line, loss_col; /* the loss's from_logits, where compile is */
    char warn[2048];
    size_t wlen;
    int warn_full;
} kp;

/* The reader's upward calls, set by ck_kp_parse (keras_stmt.c): an expression runs the text's
 * functions and reads scopes (keras_run.c), the runner reads statements (keras_stmt.c). Through
 * pointers, so that each file calls only down (tools/deps.py); each is the ck_kp_ function of
 * its name declared below. */
typedef struct kp_up {
    value *(*call)(kp *P, value *call);
    sym *(*lookup)(kp *P, const char *name, size_t len);
    size_t (*ternary_at)(kp *P);
    value *(*ternary)(kp *P, size_t at);
    size_t (*test_end)(kp *P);
    value *(*test_expr)(kp *P, size_t e);
    size_t (*comprehension_at)(kp *P);
    value *(*comprehension)(kp *P, size_t item_b, size_t item_e);
    int (*is_model_value)(kp *P, const value *v);
    int (*run)(kp *P, size_t from, size_t to);
    int (*bind_name)(kp *P, const char *name, int line, value *v);
    int (*bind_tok)(kp *P, const tok *name, value *v);
    value *(*return_value)(kp *P, size_t k);
    int (*model_name)(kp *P, const tok *t);
    int (*block_end)(kp *P, size_t i, int col, size_t *end);
} kp_up;

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

/* keras_lex.c */
int ck_kp_fail(kp *P, int line, int col, const char *fmt, ...) CK_PRINTF(4, 5);
int ck_kp_oom(kp *P);
void ck_kp_warn(kp *P, const char *fmt, ...) CK_PRINTF(2, 3);
void *ck_kp_alloc(kp *P, size_t n);
char *ck_kp_strndup(kp *P, const char *s, size_t n);
char *ck_kp_printf(kp *P, const char *fmt, ...) CK_PRINTF(2, 3);
void ck_kp_free(kp *P);
/* ck_keras_parse with its allocations (out->layers too) on ctx (may be NULL); the result is freed
 * with ck_kp_model_free on the same ctx. ck_model_from_keras_text parses on its context. */
ck_status ck_kp_parse(ck_context *ctx, const char *text, ck_keras_model *out, char *err,
                      size_t err_len);
void ck_kp_model_free(ck_context *ctx, ck_keras_model *m);
int ck_kp_loose_eq(const char *a, const char *b);
int ck_kp_ieq(const char *a, const char *b);
const char *ck_kp_last_component(const char *dotted);
int ck_kp_tokenize(kp *P);
int ck_kp_is_op(const tok *t, const char *op);
int ck_kp_is_name(const tok *t, const char *nm);
int ck_kp_is_open(const tok *t);
int ck_kp_is_close(const tok *t);
char ck_kp_closer_of(char open);
int ck_kp_is_keyword(const tok *t);
const char *ck_kp_tok_desc(kp *P, const tok *t, char *buf, size_t n);

/* keras_expr.c */
const tok *ck_kp_peek(kp *P);
int ck_kp_at_end(kp *P);
const tok *ck_kp_advance(kp *P);
value *ck_kp_new_value(kp *P, vkind k, int line, int col);
/* A value the reader does not know, why saying what it is (NULL: out of memory). */
value *ck_kp_unknown(kp *P, int line, int col, const char *why);
const char *ck_kp_vdesc(const value *v, char *buf, size_t n);
value *ck_kp_p_expr(kp *P);
void *ck_kp_grow(kp *P, void *old, int n, int *cap, size_t elem);
int ck_kp_is_num(const value *v);
int ck_kp_expect_end(kp *P);
value *ck_kp_p_full_expr(kp *P);
/* The layer class of Keras's merge function fn ("add": "Add", "concatenate": "Concatenate"), or
 * NULL: layers.add([a, b]) is read as Add()([a, b]). */
const char *ck_kp_merge_layer(const char *fn);

/* keras_bind.c */
int ck_kp_bind(kp *P, const value *call, const char *cls, const char *const *names, int npos,
               kargs *a);
int ck_kp_aidx(const kargs *a, const char *name);
value *ck_kp_aval(const kargs *a, const char *name);
int ck_kp_type_err(kp *P, const kargs *a, const value *v, const char *param, const char *exp);
/* The name= argument of a (absent or None: dst untouched): a string of fewer than cap bytes
 * without '/' (Keras 3 refuses it; it would split the weights file's group paths). */
int ck_kp_name_arg(kp *P, const kargs *a, char *dst, size_t cap);
int ck_kp_unsupported(kp *P, const kargs *a, const char *param, const char *exp);
int ck_kp_need(kp *P, const kargs *a, const char *param);
int ck_kp_get_int(kp *P, const kargs *a, const char *param, int lo, int *out);
int ck_kp_get_pair(kp *P, const kargs *a, const char *param, int *h, int *w);
int ck_kp_get_num(kp *P, const kargs *a, const char *param, double lo, int lo_open, double hi,
                  int hi_open, double *out);
int ck_kp_get_bool(kp *P, const kargs *a, const char *param, int *out);
int ck_kp_only_none(kp *P, const kargs *a, const char *param);
int ck_kp_only_bool(kp *P, const kargs *a, const char *param, int want);
int ck_kp_only_falsy(kp *P, const kargs *a, const char *param);
int ck_kp_only_int(kp *P, const kargs *a, const char *param, int want);
int ck_kp_only_ones(kp *P, const kargs *a, const char *param);
int ck_kp_check_data_format(kp *P, const kargs *a);
int ck_kp_check_init(kp *P, const kargs *a, const char *param, const char *want);
int ck_kp_check_dtype(kp *P, const kargs *a);
int ck_kp_get_padding(kp *P, const kargs *a, ck_padding *out);
int ck_kp_shape_of(kp *P, const kargs *a, const char *param, int skip_batch, int *h, int *w,
                   int *c);
int ck_kp_do_compile(kp *P, const value *call);

/* keras_layers.c */
int ck_kp_add_layer(kp *P, const value *v);

/* keras_func.c: the functional model's statements. ck_kp_functional_at: is the right side of an
 * assignment at token k `[prefix.]Input(`, `[prefix.]Model(` or a layer class call? (1, 2, 3;
 * 0: none). ck_kp_functional: the statement `target = ...` (kind from ck_kp_functional_at);
 * returns 1 when it was not functional after all (a layer object assigned to a name). */
int ck_kp_functional_at(kp *P, size_t k);
/* a op b on numbers as Python computes it (op "+", "-", "*", "/", "//", "%", "**"); an unknown
 * value (its description says why) for anything else. */
value *ck_kp_arith(kp *P, const tok *op, value *a, value *b);
int ck_kp_functional(kp *P, const tok *target, size_t rhs, int kind);
/* At the end of the text: a functional model must have reached Model(...). */
int ck_kp_functional_end(kp *P);
/* A layer called on tensors (V_APPLY) made now, as Python does where the value is bound: the
 * value of its output tensor; any other value is v. NULL on error. */
value *ck_kp_apply_now(kp *P, value *v);

/* keras_stmt.c: the statements that start in tokens [from, to) of kp.toks (to 0: all), read
 * until a break, continue or return (kp.flow); the end of the block whose header ends before
 * token i, at column col (the first statement at a column <= col); a name bound to a value
 * (a call's parameter, a loop's name); the value of `return EXPR` at token k of the statement
 * (the model, made there or named, is a KP_MODEL_ID name). */
int ck_kp_run(kp *P, size_t from, size_t to);
int ck_kp_block_end(kp *P, size_t i, int col, size_t *end);
int ck_kp_bind_name(kp *P, const char *name, int line, value *v);
int ck_kp_bind_tok(kp *P, const tok *name, value *v);
value *ck_kp_return_value(kp *P, size_t k);
/* v stands for the model (its name, another name of it, a function's return of it); t becomes
 * another name of the model (its first when it has none). */
int ck_kp_is_model_value(kp *P, const value *v);
int ck_kp_model_name(kp *P, const tok *t);
/* The variable a name reads in the scope being read (Python's: the call's own names, then the
 * names of the call that defined its function, then the module's), or NULL. */
sym *ck_kp_lookup(kp *P, const char *name, size_t len);

/* keras_run.c: the condition of tokens [b, e) of the statement: 1 true, 0 false, -1 not known,
 * -2 failed (an error is set); `a if c else b` after a was read (at 'if'); a def at token b
 * whose body is tokens [body_b, body_e) of kp.toks; a call of the text's function (call itself
 * when it names none; NULL on error); break / continue / return at token b; a for loop the
 * reader runs (1; 0: its sequence is not known, -1 error). */
int ck_kp_condition(kp *P, size_t b, size_t e);
/* A conditional expression from kp.pos: the index of its 'if' (0: none); its value (only the
 * branch the condition picks is read, as Python runs it). */
size_t ck_kp_ternary_at(kp *P);
value *ck_kp_ternary(kp *P, size_t at);
/* A list comprehension from kp.pos: the index of its 'for' (0: none). */
size_t ck_kp_comprehension_at(kp *P);
/* An expression from kp.pos that is a test (a comparison, and / or / not at its top level): its
 * end, else 0; and its value, read up to that end (Python's: a bool, or the operand of and / or
 * that decides). */
size_t ck_kp_test_end(kp *P);
value *ck_kp_test_expr(kp *P, size_t e);
int ck_kp_def(kp *P, size_t b, size_t e, size_t body_b, size_t body_e);
int ck_kp_is_fn(kp *P, const tok *t);
value *ck_kp_call(kp *P, value *call);
int ck_kp_flow(kp *P, size_t b, size_t e);
int ck_kp_for(kp *P, size_t b, size_t e, size_t body_b, size_t body_e);
/* [ITEM for NAMES in SEQ if COND ...] at its 'for' (kp.pos), ITEM tokens [item_b, item_e): the
 * list, read item by item with the names bound (their own scope), or an unknown value when the
 * sequence or a condition is not known; kp.pos is left at the closing ']'. */
value *ck_kp_comprehension(kp *P, size_t item_b, size_t item_e);

#endif
