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
/* In place, element-wise minimum / maximum over the ranks. */
ck_status ck_comm_min_i64(const ck_comm *c, long long *buf, int count);
ck_status ck_comm_max_i64(const ck_comm *c, long long *buf, int count);
/* *before = the sum of v over the ranks below this one (0 on rank 0). */
ck_status ck_comm_exscan_i64(const ck_comm *c, long long v, long long *before);
/* Rank 0's floats into every rank's buf (in buckets, as above). */
ck_status ck_comm_bcast_f32(const ck_comm *c, float *buf, size_t count);
ck_status ck_comm_bcast_i64(const ck_comm *c, long long *buf, int count);

#endif
