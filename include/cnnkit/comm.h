/*
 * cnnkit communicator: data-parallel training over MPI (docs/distributed.md).
 *
 * A ck_comm wraps an MPI communicator for CPU contexts, and an NCCL communicator for CUDA contexts
 * (its id sent over MPI by ck_comm_create_mpi, or by the caller: ck_comm_create_nccl). A model with
 * a communicator attached (ck_model_set_comm) trains data-parallel: every rank calls
 * ck_model_train_step with its shard of the global batch (ck_comm_shard), the gradients are summed
 * across the ranks, and every rank applies the same optimizer update (or, when any rank's step
 * fails, none). The calls that say "collective" must be made by every rank of the communicator, in
 * the same order.
 *
 * Builds without MPI (CNNKIT_MPI=OFF, or no MPI found) have the same calls: creating a
 * communicator fails with CK_STATUS_NOT_SUPPORTED and a message saying so.
 */
#ifndef CNNKIT_COMM_H
#define CNNKIT_COMM_H

#include "cnnkit/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ck_comm ck_comm;

/* 1 when this build of cnnkit has MPI, else 0. */
int ck_comm_mpi_available(void);

/* Collective. A communicator over the MPI communicator *mpi_comm (an MPI_Comm, passed by address
 * so that this header needs no mpi.h). For a CPU context cnnkit duplicates it (MPI_Comm_dup, its
 * errors returned, not fatal), so the caller's communicator stays the caller's; MPI must be
 * initialized and stay so until ck_comm_destroy. For a CUDA context the communicator is NCCL's:
 * rank 0 makes the NCCL id and sends it over MPI (under the default timeout), each rank joins
 * with its context's device (one device per rank: give each rank its own cuda_ordinal, e.g. its
 * local rank), and MPI is not used after. Errors: CK_STATUS_NOT_SUPPORTED (no MPI in this build;
 * a CUDA context without NCCL in the build or libnccl on the machine), CK_STATUS_BAD_PARAM (NULL
 * argument, MPI not initialized), CK_STATUS_INTERNAL (an MPI or NCCL call failed or timed
 * out: the message names it). */
ck_status ck_comm_create_mpi(ck_context *ctx, const void *mpi_comm, ck_comm **comm);

/* 1 when this build of cnnkit has the NCCL communicator (CUDA contexts), else 0. libnccl.so.2 is
 * opened when a communicator is made, not at load: a machine without it trains on one device. */
int ck_comm_nccl_available(void);
#define CK_COMM_NCCL_ID_BYTES 128
/* On one rank: a new NCCL id (ncclGetUniqueId) into id[0, CK_COMM_NCCL_ID_BYTES); send it to the
 * others as the job likes (MPI, a file, a socket). ctx: a CUDA context. Errors:
 * CK_STATUS_NOT_SUPPORTED (no NCCL in the build or on the machine, a CPU context),
 * CK_STATUS_BAD_PARAM (NULL). */
ck_status ck_comm_nccl_id(ck_context *ctx, void *id);
/* Collective over the `size` processes that hold the same id, each with its own rank in [0,
 * size) and its own device (the context's). Every collective of the communicator then runs on
 * the GPU with NCCL, on the context's stream, and waits at most the communicator's timeout (the
 * initialization waits the default, CK_COMM_DEFAULT_TIMEOUT_S). size 1 is a valid
 * communicator: its training is the single-device training, bit for bit. Errors:
 * CK_STATUS_NOT_SUPPORTED (as ck_comm_nccl_id; NCCL_COMM_BLOCKING=1 in the environment or an
 * nccl.conf file, which would make NCCL's calls wait where no timeout reaches them),
 * CK_STATUS_BAD_PARAM (NULL, rank or size out of range), CK_STATUS_INTERNAL (NCCL failed or
 * timed out: the message says which call). */
ck_status ck_comm_create_nccl(ck_context *ctx, const void *id, int rank, int size, ck_comm **comm);
/* Collective. Frees the communicator (NULL accepted). Detach it from its models first. */
void ck_comm_destroy(ck_comm *comm);
/* This process's rank and the number of ranks; -1 for NULL (or an orphaned communicator). */
int ck_comm_rank(const ck_comm *comm);
int ck_comm_size(const ck_comm *comm);
/* This rank's contiguous shard of a global batch of `total` samples: samples [*first, *first +
 * *count) of it. The first total % size ranks take one sample more, so the shards cover the batch
 * in rank order, as a single process would see it. A rank's count may be 0 when total < size;
 * ck_model_train_step needs n >= 1, so give every rank at least one sample. */
ck_status ck_comm_shard(const ck_comm *comm, int total, int *first, int *count);

/* How long each of cnnkit's collectives on comm (the training step's all-reduces, the SyncBN
 * sums, the checks of ck_model_set_comm and ck_model_fit) waits for the other ranks: a rank that
 * hangs, or dies where the launcher does not notice, makes the others fail within this time
 * instead of waiting for ever. The collectives are non-blocking MPI calls polled against the
 * deadline. A call that times out fails with CK_STATUS_INTERNAL and "comm: MPI_Allreduce (...)
 * timed out after S s waiting for the other ranks ..." naming, from a side channel the waiting
 * ranks answer on (asked for at most min(2 s, S / 4) more), the ranks that did not answer and
 * those at another collective (an NCCL communicator names only the waiting rank); the
 * communicator is then broken: every later collective on it fails at once with the same
 * message, ck_comm_broken says 1, and the timed-out operation may still complete and write its
 * result (into the model's gradients, for the gradient sum), so end the job (MPI_Abort): cnnkit
 * never aborts by itself. Local, per rank (give every rank the same value). seconds: >= 0, 0
 * waits for ever (and then neither asks nor answers); the default is CK_COMM_DEFAULT_TIMEOUT_S.
 * Errors: CK_STATUS_BAD_PARAM (NULL, orphaned, seconds < 0 or NaN: nothing changed). */
#define CK_COMM_DEFAULT_TIMEOUT_S 300.0
ck_status ck_comm_set_timeout(ck_comm *comm, double seconds);
/* The collectives' timeout in seconds (0: none); -1 for NULL or an orphaned communicator. */
double ck_comm_timeout(const ck_comm *comm);
/* 1 once a collective on comm timed out (the communicator is broken), else 0 (also for NULL). */
int ck_comm_broken(const ck_comm *comm);

/* Collective over comm. Attaches comm to a built model on a CPU context (NULL detaches, not
 * collective). Attaching checks that every rank built the same model (parameter counts, input
 * shape, classes) and copies rank 0's parameters, BN statistics, optimizer state and step count
 * to every rank, so all ranks start from one state. From then on ck_model_train_step is
 * collective: n is this rank's shard, the step's loss, correct count and count in the result are
 * those of the global batch, and the gradients are their mean over it. ck_model_evaluate and
 * ck_model_predict stay local. ck_model_fit is collective too: opts->batch is the global batch
 * (default: max_batch x ranks), each rank trains on its ck_comm_shard of every shuffled batch,
 * and before the first step the ranks must agree on the data (CRC-32), batch, seeds and epochs
 * (else CK_STATUS_BAD_PARAM on every rank, nothing trained); a stop from a callback on any rank
 * stops all; every rank needs max_batch >= ceil(batch / ranks). The
 * model keeps a pointer: destroy the communicator only after detaching it or destroying the
 * model. On a CUDA context (an NCCL communicator) the loss, the gradients (in 1 MiB buckets on a
 * second stream, overlapping the backward pass) and the step's verdict are reduced on the
 * device and the step keeps its one wait for the host (plus a packet or two
 * at its start: the global batch and, with dropout, the shard's offset); SyncBatchNormalization
 * gathers every rank's per-channel moments between its kernels' phases. A rank whose batch is
 * refused says so in the step's first collective and every rank fails the step with it (on a
 * GPU, and with SyncBatchNormalization on the CPU, before the forward pass).
 * Errors: CK_STATUS_NOT_SUPPORTED (a CUDA model with an MPI communicator), CK_STATUS_BAD_PARAM (not
 * built, a communicator of another context), CK_STATUS_SHAPE_MISMATCH (the ranks' models
 * differ: nothing changed on any rank). */
ck_status ck_model_set_comm(ck_model *model, ck_comm *comm);

#ifdef __cplusplus
}
#endif

#endif
