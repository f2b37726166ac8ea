/* cnnkit train --distributed: MPI for the command line (docs/distributed.md). Only this file
 * knows MPI; in a build without it every call says so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#ifdef CNNKIT_HAVE_MPI
#include <mpi.h>

int dist_start(int *argc, char ***argv, opts *o) {
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "cnnkit: train: --distributed: MPI_Init failed\n");
        return EXIT_RUNTIME;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &o->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &o->ranks);
    /* one GPU per rank: the rank among those sharing this host picks the device */
    MPI_Comm local;
    o->local_rank = 0;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, o->rank, MPI_INFO_NULL, &local) ==
        MPI_SUCCESS) {
        MPI_Comm_rank(local, &o->local_rank);
        MPI_Comm_free(&local);
    }
    return 0;
}

int dist_comm(const opts *o, ck_context *ctx, ck_comm **comm) {
    MPI_Comm world = MPI_COMM_WORLD;
    if (ck_comm_create_mpi(ctx, &world, comm) != CK_STATUS_SUCCESS ||
        (o->comm_timeout >= 0.0 &&
         ck_comm_set_timeout(*comm, o->comm_timeout) != CK_STATUS_SUCCESS)) {
        fprintf(stderr, "cnnkit: --distributed: %s\n", ck_context_last_error(ctx));
        return EXIT_RUNTIME;
    }
    return 0;
}

void dist_abort(int rc) {
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, rc);
}

int dist_agree(const opts *o, int rc) {
    int all = rc, done = 0;
    MPI_Request req;
    if (MPI_Iallreduce(&rc, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &req) != MPI_SUCCESS)
        return EXIT_RUNTIME;
    /* under the deadline of --comm-timeout too: the communicator does not exist yet */
    const double limit = o->comm_timeout >= 0.0 ? o->comm_timeout : CK_COMM_DEFAULT_TIMEOUT_S;
    for (const double t0 = MPI_Wtime(); !done;) {
        if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return EXIT_RUNTIME;
        if (done)
            break;
        if (limit > 0.0 && MPI_Wtime() - t0 >= limit) {
            fprintf(stderr,
                    "cnnkit: rank %d: --distributed: the ranks' start agreement timed out after "
                    "%g s waiting for the other ranks (--comm-timeout)\n",
                    o->rank, limit);
            dist_abort(EXIT_RUNTIME);
        }
        const struct timespec nap = {0, 200000}; /* set-up: 0.2 ms is nothing */
        nanosleep(&nap, NULL);
    }
    if (all && !rc)
        fprintf(stderr, "cnnkit: rank %d: another rank failed to start (its message says why)\n",
                o->rank);
    return all;
}

/* Waits for req under --comm-timeout; a rank that does not come ends the job, as dist_agree. */
static int dist_wait(const opts *o, MPI_Request *req, const char *what) {
    const double limit = o->comm_timeout >= 0.0 ? o->comm_timeout : CK_COMM_DEFAULT_TIMEOUT_S;
    for (const double t0 = MPI_Wtime();;) {
        int done = 0;
        if (MPI_Test(req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return EXIT_RUNTIME;
        if (done)
            return 0;
        if (limit > 0.0 && MPI_Wtime() - t0 >= limit) {
            fprintf(stderr,
                    "cnnkit: rank %d: --distributed: %s timed out after %g s waiting for the "
                    "other ranks (--comm-timeout)\n",
                    o->rank, what, limit);
            dist_abort(EXIT_RUNTIME);
        }
        const struct timespec nap = {0, 200000};
        nanosleep(&nap, NULL);
    }
}

int dist_sum(const opts *o, double *v, int n) {
    MPI_Request req;
    if (MPI_Iallreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &req) !=
        MPI_SUCCESS)
        return EXIT_RUNTIME;
    return dist_wait(o, &req, "the sum of the ranks' results");
}

int dist_gather(const opts *o, const float *mine, int count, float *all, const int *counts) {
    int *displs = NULL;
    if (o->rank == 0) {
        displs = (int *)malloc(sizeof(int) * (size_t)o->ranks);
        if (!displs)
            return EXIT_RUNTIME;
        for (int r = 0, at = 0; r < o->ranks; at += counts[r++])
            displs[r] = at;
    }
    MPI_Request req;
    int rc = MPI_Igatherv(mine, count, MPI_FLOAT, all, counts, displs, MPI_FLOAT, 0, MPI_COMM_WORLD,
                          &req) == MPI_SUCCESS
                 ? dist_wait(o, &req, "the gathering of the ranks' predictions")
                 : EXIT_RUNTIME;
    free(displs);
    return rc;
}

void dist_stop(void) {
    MPI_Finalize();
}

#else /* a build without MPI */

int dist_start(int *argc, char ***argv, opts *o) {
    (void)argc, (void)argv, (void)o;
    fprintf(stderr, "cnnkit: train: --distributed needs a build of cnnkit with MPI (install "
                    "libopenmpi-dev, `make deps`, and configure with -DCNNKIT_MPI=ON or AUTO)\n");
    return EXIT_USAGE;
}

int dist_comm(const opts *o, ck_context *ctx, ck_comm **comm) {
    (void)o, (void)ctx, (void)comm;
    return EXIT_USAGE;
}

int dist_agree(const opts *o, int rc) {
    (void)o;
    return rc;
}

void dist_stop(void) {}

int dist_sum(const opts *o, double *v, int n) {
    (void)o, (void)v, (void)n;
    return 0; /* one process: its own sums */
}

int dist_gather(const opts *o, const float *mine, int count, float *all, const int *counts) {
    (void)o, (void)counts;
    if (all != mine)
        memcpy(all, mine, sizeof(float) * (size_t)count);
    return 0;
}

void dist_abort(int rc) {
    (void)rc;
}

#endif
