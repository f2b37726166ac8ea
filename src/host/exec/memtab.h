/* The memory of a built model, named and sized by one function for every backend (as llm.c's
 * table of parameter sizes): the CPU allocates each part from the context's host allocator, the
 * CUDA backend places them all in one device arena. */
#ifndef CNNKIT_MEMTAB_H
#define CNNKIT_MEMTAB_H

#include "model_internal.h"

/* In the arena's order. */
typedef enum ck_mem_id {
    CK_MEM_PARAMS,
    CK_MEM_GRADS,
    CK_MEM_OPT_M,
    CK_MEM_OPT_V,
    CK_MEM_FIXED,
    CK_MEM_FIXED_BACKUP,
    CK_MEM_STATS,
    CK_MEM_ACTS,
    CK_MEM_GBUF0,
    CK_MEM_GBUF1,
    CK_MEM_LOGITS_GRAD,
    CK_MEM_X,      /* CUDA: the staged batch; CPU: its bf16 copy (bf16 only, else none) */
    CK_MEM_LABELS, /* CUDA: its labels */
    CK_MEM_LOSS,   /* CUDA: the step's ck_kloss */
    CK_MEM_STEP,   /* CUDA: the step packet (ck_kstep) the step's kernels read */
    CK_MEM_WS,
    CK_MEM_GNODE,      /* graph models: the nodes' gradients, shared by liveness (n->g_offset) */
    CK_MEM_GSCRATCH,   /* graph models: CK_MAX_LAYER_INPUTS gradients of the largest tensor */
    CK_MEM_XBF,        /* CUDA, bf16 models: the staged batch as bf16 words (node 0 reads it) */
    CK_MEM_DLOGITS_BF, /* CUDA, bf16 models: the loss gradient as bf16 words */
    CK_MEM_WROUND,     /* CPU, bf16 models: the parameters rounded to bf16 (ck_exec_weights) */
    CK_MEM_COUNT
} ck_mem_id;

typedef struct ck_memtab {
    size_t bytes[CK_MEM_COUNT]; /* 0: the backend has no such part */
    size_t off[CK_MEM_COUNT];   /* placed back to back, each at a multiple of align */
    size_t align;
    size_t total;
    size_t gscratch_stride; /* bytes between the scratch gradients of CK_MEM_GSCRATCH */
} ck_memtab;

/* The name of part k ("params", "acts", ...). */
const char *ck_mem_name(ck_mem_id k);
/* Sizes the memory of m's node list (built: counts, max_batch, classes) on backend be: the
 * activations one per non-aliasing node at n->act_offset (bytes into the activations), the
 * shared workspace the largest the nodes' ops ask for (state: the nodes' prepared state, or
 * NULL). Host parts hold at least one float. */
void ck_memtab_plan(ck_model *m, int be, void *const *state, ck_memtab *t);
/* Shrinks part k to one float (a CUDA model's host side keeps no activations) and places the
 * parts again. */
void ck_memtab_shrink(ck_memtab *t, ck_mem_id k);
/* Removes part k (0 bytes: not allocated) and places the parts again. */
void ck_memtab_drop(ck_memtab *t, ck_mem_id k);

#endif
