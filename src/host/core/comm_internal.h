/* The communicator's collectives for the layers above core (comm.c): the executor's training
 * step and the model's attach. Each is collective over the communicator; every one returns a
 * status, with a message naming the MPI call in the communicator's context on failure (MPI's
 * errors are returned on cnnkit's duplicate, never fatal). Each waits for the other ranks at most
 * the communicator's timeout (ck_comm_set_timeout); after a timeout or an MPI error the
 * communicator is broken and every one fails at once with that message. */
#ifndef CNNKIT_COMM_INTERNAL_H
#define CNNKIT_COMM_INTERNAL_H

#include "cnnkit/comm.h"
#include "internal.h"

/* The context the communicator was made from (NULL when orphaned). */
ck_context *ck_comm_context(const ck_comm *c);
/* In place, element-wise sums over the ranks; the float sum goes in buckets of at most
 * CK_COMM_BUCKET floats (one MPI call each). */
#define CK_COMM_BUCKET ((size_t)1 << 22)
ck_status ck_comm_sum_f32(const ck_comm *c, float *buf, size_t count);
ck_status ck_comm_sum_f64(const ck_comm *c, double *buf, int count);
/* This rank failed: it joins the others' ck_comm_sum_f64 of count doubles with NaN, so every
 * rank's result is NaN (which they test), with no buffer of its own (MPI communicators). */
ck_status ck_comm_sum_f64_failed(const ck_comm *c, int count);
/* In place, element-wise minimum / maximum over the ranks. */
ck_status ck_comm_min_i64(const ck_comm *c, long long *buf, int count);
ck_status ck_comm_max_i64(const ck_comm *c, long long *buf, int count);
/* *before = the sum of v over the ranks below this one (0 on rank 0). */
ck_status ck_comm_exscan_i64(const ck_comm *c, long long v, long long *before);
/* Rank 0's floats into every rank's buf (in buckets, as above). */
ck_status ck_comm_bcast_f32(const ck_comm *c, float *buf, size_t count);
ck_status ck_comm_bcast_i64(const ck_comm *c, long long *buf, int count);

/* ---- a CUDA context's communicator (NCCL, comm_nccl.c) ----
 * On it the float collectives above (sum_f32, bcast_f32) take device memory and run on the
 * context's stream: sum_f32 is only enqueued (ck_comm_sync waits for it under the deadline),
 * bcast_f32 waits. The packets (f64, i64) stay host memory and each waits. */
typedef enum { CK_NCCL_F32, CK_NCCL_F64, CK_NCCL_I32, CK_NCCL_I64 } ck_nccl_type;
typedef enum { CK_NCCL_SUM, CK_NCCL_MIN, CK_NCCL_MAX } ck_nccl_op;
/* How many collectives were entered on c (tests: a step that should communicate did). */
unsigned long long ck_comm_calls(const ck_comm *c);
/* 1 when the communicator's buffers are device memory (NCCL), else 0. */
int ck_comm_on_device(const ck_comm *c);
/* In place over the ranks, count elements of device memory, enqueued on the context's stream. */
ck_status ck_comm_device_allreduce(const ck_comm *c, void *dbuf, size_t count, ck_nccl_type t,
                                   ck_nccl_op op, const char *what);
/* The gradient sum in buckets that overlap the backward pass (NCCL): each call all-reduces
 * count floats of device memory in place on the communicator's second stream, after everything
 * the context's stream enqueued before the call; ck_comm_device_join makes the context's stream
 * wait for every such bucket. Every rank must launch the same buckets in the same order. */
#define CK_COMM_DEVICE_BUCKET ((size_t)1 << 18) /* floats: 1 MiB, so small models overlap too */
ck_status ck_comm_device_sum_side(const ck_comm *c, float *dbuf, size_t count);
ck_status ck_comm_device_join(const ck_comm *c);
/* Every rank's count doubles of device memory gathered into all (ranks * count, rank order),
 * enqueued on the context's stream (NCCL). */
ck_status ck_comm_device_allgather_f64(const ck_comm *c, const double *local, double *all,
                                       size_t count, const char *what);
/* Device scratch of the communicator for exchanges inside a step (SyncBatchNormalization), at
 * least bytes, used in stream order. Growing it waits for the device: reserve the most a step
 * needs before it (ck_model_set_comm does, with ck_bn_sync_scratch_bytes). */
ck_status ck_comm_device_scratch(const ck_comm *c, size_t bytes, void **out);
/* Before any step (ck_model_set_comm, on every rank): the SyncBN scratch of scratch_bytes and
 * the gradient buckets' stream and events (NCCL; nothing for MPI). A failure to allocate them
 * leaves the communicator usable, so the ranks can agree on it in their next collective; a wait
 * that timed out breaks it as usual. */
ck_status ck_comm_device_prepare(const ck_comm *c, size_t scratch_bytes);
/* The scratch a synchronized BN of c channels takes over `ranks` ranks: this rank's moments and
 * every rank's. */
#define ck_bn_sync_scratch_bytes(c, ranks) ((size_t)3 * (size_t)(c) * ((size_t)(ranks) + 1) * 8)
/* Waits for the context's stream under the communicator's deadline (NCCL); a timeout aborts the
 * NCCL communicator and breaks this one. A no-op for an MPI communicator. */
ck_status ck_comm_sync(const ck_comm *c, const char *what);

#ifdef CNNKIT_HAVE_NCCL
typedef struct ck_nccl ck_nccl;
ck_status ck_nccl_unique_id(ck_context *ctx, void *id, size_t bytes);
ck_status ck_nccl_create(ck_context *ctx, const void *id, int rank, int size, double timeout_s,
                         ck_nccl **out);
void ck_nccl_set_timeout(ck_nccl *n, double timeout_s);
/* broken: abort instead of finalize (a rank may be missing) */
void ck_nccl_free(ck_nccl *n, int broken);
ck_status ck_nccl_sync(ck_nccl *n, const char *what);
ck_status ck_nccl_prepare(ck_nccl *n, size_t scratch_bytes);
/* 1 once the NCCL communicator was aborted (a timeout or an NCCL error) */
int ck_nccl_aborted(const ck_nccl *n);
ck_status ck_nccl_allreduce(ck_nccl *n, void *dbuf, size_t count, ck_nccl_type t, ck_nccl_op op,
                            const char *what);
ck_status ck_nccl_bcast(ck_nccl *n, void *dbuf, size_t count, ck_nccl_type t, const char *what);
/* A host packet: an all-reduce (bcast 0) or rank 0's values (bcast 1), waited for. */
ck_status ck_nccl_host(ck_nccl *n, void *buf, size_t count, ck_nccl_type t, ck_nccl_op op,
                       int bcast, const char *what);
ck_status ck_nccl_allgather_i64(ck_nccl *n, long long v, long long *all, const char *what);
/* Device memory, enqueued: every rank's count elements into all, in rank order. */
ck_status ck_nccl_allgather(ck_nccl *n, const void *local, void *all, size_t count, ck_nccl_type t,
                            const char *what);
ck_status ck_nccl_scratch(ck_nccl *n, size_t bytes, void **out);
ck_status ck_nccl_allreduce_side(ck_nccl *n, float *dbuf, size_t count, const char *what);
ck_status ck_nccl_join(ck_nccl *n);
int ck_nccl_version(const ck_nccl *n);
#endif

#endif
