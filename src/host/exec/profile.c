/* The training-step profile clock (ck_model_set_profiling), shared by the CPU and CUDA executors:
 * both call down here, so neither executor calls the other for it. */
#include "comm_internal.h"
#include "model_internal.h"

#include <time.h>

double ck_now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* With a device communicator the stream may hold collectives waiting for other ranks: drain it
 * under the communicator's deadline (a timeout breaks the communicator, and the step's next
 * collective reports it), never with a wait that has none. */
static void drain(ck_model *m) {
    if (m->comm && ck_comm_on_device(m->comm))
        (void)ck_comm_sync(m->comm, "profiling");
    else
        ck_stream_drain(m->ctx);
}

double ck_prof_begin(ck_model *m) {
    if (!m->profiling)
        return 0.0;
    drain(m);
    return ck_now_s();
}

void ck_prof_end(ck_model *m, double t0, double *acc) {
    if (!m->profiling)
        return;
    drain(m);
    *acc += ck_now_s() - t0;
}
