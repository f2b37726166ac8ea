/* The training-step profile clock (ck_model_set_profiling), shared by the CPU and CUDA executors:
 * both call down here, so neither executor calls the other for it. */
#include "model_internal.h"

#include <time.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double ck_prof_begin(ck_model *m) {
    if (!m->profiling)
        return 0.0;
    ck_stream_drain(m->ctx);
    return now_s();
}

void ck_prof_end(ck_model *m, double t0, double *acc) {
    if (!m->profiling)
        return;
    ck_stream_drain(m->ctx);
    *acc += now_s() - t0;
}
