/*
 * Self-test of kemu's race checking (make test-emu EMU_TSAN=1; built only under
 * CNNKIT_EMU_TSAN): each race a GPU may have must be reported by ThreadSanitizer, and its twin
 * that CUDA orders must run clean; "reported" means TSan printed a data race report on the
 * case's stderr. Exit status 0 when every case came out as expected. Every case runs in a
 * process of its own (this program again, with --case K): a child merely forked from a process
 * with TSan fibers would run with TSan's checks off.
 */
#include "kemu_device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

/* a report ends the child (the make target sets the same; TSAN_OPTIONS may add more) */
extern "C" const char *__tsan_default_options() {
    return "halt_on_error=1:exitcode=66";
}

#define LAUNCH(k, g, b, st) k | kemu::cfg(__FILE__, __LINE__, g, b, 0, st)

namespace {

/* (1) a block sum in shared memory: the tree reads slots other threads stored */
__global__ void k_block_sum(const float *x, float *out, int barrier) {
    KEMU_SHARED(float, sh, [256]);
    sh[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    if (barrier)
        __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o /= 2) {
        if ((int)threadIdx.x < o)
            sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = sh[0];
}

/* (1') two barriers: a race between them, after the first (a thread that reached the second
 * barrier must not pass its accesses to threads still leaving the first) */
__global__ void k_phases(float *y, int second_barrier) {
    KEMU_SHARED(float, sh, [64]);
    const int t = threadIdx.x;
    sh[t] = (float)t;
    __syncthreads();
    const float a = sh[(t + 1) % 64];
    if (second_barrier)
        __syncthreads();
    sh[t] = a; /* without the barrier: thread t - 1 reads this slot in the same phase */
    __syncthreads();
    y[t] = sh[(t + 1) % 64];
}

/* (2) thread 0 of each block writes one global element: the same one, or its block's own */
__global__ void k_block_write(float *y, int same) {
    if (threadIdx.x == 0)
        y[same ? 0 : blockIdx.x] = (float)blockIdx.x;
}

/* (3) lanes of one warp: another lane's shared slot without a barrier, the value through a
 * shuffle, a shuffle between the store and the load (it orders no memory), a barrier */
__global__ void k_lanes(float *y, int mode) {
    KEMU_SHARED(float, sh, [32]);
    const int t = threadIdx.x;
    const float v = (float)t;
    if (mode == 0) {
        sh[t] = v;
        y[t] = sh[(t + 1) % 32];
    } else if (mode == 1) {
        y[t] = __shfl_down_sync(0xffffffffu, v, 1);
    } else if (mode == 2) {
        sh[t] = v;
        y[t] = __shfl_down_sync(0xffffffffu, v, 1) + sh[(t + 1) % 32];
    } else {
        sh[t] = v;
        __syncthreads();
        y[t] = sh[(t + 1) % 32];
    }
}

/* (4) kernels that write and read one buffer */
__global__ void k_fill(float *y, float v) {
    y[blockIdx.x * blockDim.x + threadIdx.x] = v;
}
__global__ void k_copy(const float *x, float *y) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = x[i];
}

static float *dev(size_t n) {
    float *p = nullptr;
    cudaMalloc((void **)&p, n * sizeof(float));
    return p;
}

const int n = 4 * 256;
float *x, *y, *z;
cudaStream_t a, b, nb;
cudaEvent_t ev;

struct race_case {
    const char *name;
    bool race; /* TSan must report */
    void (*run)();
};

const race_case cases[] = {
    {"(1) block sum, no __syncthreads after the stores", true,
     [] {
         LAUNCH(k_block_sum, 4, 256, 0)
         (x, y, 0);
     }},
    {"(1) block sum with it (4 blocks, shared memory anew per block)", false,
     [] {
         LAUNCH(k_block_sum, 4, 256, 0)
         (x, y, 1);
     }},
    {"(1) a race between the 2nd and 3rd __syncthreads", true,
     [] {
         LAUNCH(k_phases, 1, 64, 0)
         (y, 0);
     }},
    {"(1) the same with a barrier there", false,
     [] {
         LAUNCH(k_phases, 1, 64, 0)
         (y, 1);
     }},
    {"(2) thread 0 of 8 blocks writes one element", true,
     [] {
         LAUNCH(k_block_write, 8, 64, 0)
         (y, 1);
     }},
    {"(2) each block its own element", false,
     [] {
         LAUNCH(k_block_write, 8, 64, 0)
         (y, 0);
     }},
    {"(3) a lane reads another lane's shared slot, no barrier", true,
     [] {
         LAUNCH(k_lanes, 1, 32, 0)
         (y, 0);
     }},
    {"(3) the value through __shfl_down_sync", false,
     [] {
         LAUNCH(k_lanes, 1, 32, 0)
         (y, 1);
     }},
    {"(3) a shuffle between the store and the load (no barrier)", true,
     [] {
         LAUNCH(k_lanes, 1, 32, 0)
         (y, 2);
     }},
    {"(3) __syncthreads between them", false,
     [] {
         LAUNCH(k_lanes, 1, 32, 0)
         (y, 3);
     }},
    {"(4) kernel A writes, kernel B reads, one stream", false,
     [] {
         LAUNCH(k_fill, 4, 256, a)(z, 1.0f);
         LAUNCH(k_copy, 4, 256, a)(z, y);
     }},
    {"(4) the same on two streams, no event", true,
     [] {
         LAUNCH(k_fill, 4, 256, a)(z, 1.0f);
         LAUNCH(k_copy, 4, 256, b)(z, y);
     }},
    {"(4) two streams, B's stream waits on an event after A", false,
     [] {
         LAUNCH(k_fill, 4, 256, a)(z, 1.0f);
         cudaEventRecord(ev, a);
         cudaStreamWaitEvent(b, ev, 0);
         LAUNCH(k_copy, 4, 256, b)(z, y);
     }},
    {"(4) the same, only B synchronized (its wait runs A's work)", false,
     [] {
         LAUNCH(k_fill, 4, 256, a)(z, 1.0f);
         cudaEventRecord(ev, a);
         cudaStreamWaitEvent(b, ev, 0);
         LAUNCH(k_copy, 4, 256, b)(z, y);
         cudaStreamSynchronize(b);
     }},
    {"(4) two streams, the host synchronizes A before B's launch", false,
     [] {
         LAUNCH(k_fill, 4, 256, a)(z, 1.0f);
         cudaStreamSynchronize(a);
         LAUNCH(k_copy, 4, 256, b)(z, y);
     }},
    {"(4) a blocking stream, then the legacy stream", false,
     [] {
         LAUNCH(k_fill, 4, 256, a)(z, 1.0f);
         LAUNCH(k_copy, 4, 256, 0)(z, y);
     }},
    {"(4) a non-blocking stream, then the legacy stream", true,
     [] {
         LAUNCH(k_fill, 4, 256, nb)(z, 1.0f);
         LAUNCH(k_copy, 4, 256, 0)(z, y);
     }},
    {"(5) the host writes a pinned buffer a queued copy reads", true,
     [] {
         float *p = nullptr;
         cudaHostAlloc((void **)&p, n * sizeof(float), 0);
         cudaMemcpyAsync(y, p, n * sizeof(float), cudaMemcpyHostToDevice, a);
         p[0] = 1.0f;
         cudaStreamSynchronize(a);
     }},
    {"(5) ... after cudaStreamSynchronize", false,
     [] {
         float *p = nullptr;
         cudaHostAlloc((void **)&p, n * sizeof(float), 0);
         cudaMemcpyAsync(y, p, n * sizeof(float), cudaMemcpyHostToDevice, a);
         cudaStreamSynchronize(a);
         p[0] = 1.0f;
     }},
    {"(5) the host reads a pinned buffer a kernel writes, no sync", true,
     [] {
         float *p = nullptr;
         cudaHostAlloc((void **)&p, n * sizeof(float), 0);
         LAUNCH(k_fill, 4, 256, a)(p, 2.0f);
         cudaStreamSynchronize(b); /* the wrong stream */
         volatile float r = p[7];
         (void)r;
     }},
    {"(5) ... after cudaEventSynchronize on an event after it", false,
     [] {
         float *p = nullptr;
         cudaHostAlloc((void **)&p, n * sizeof(float), 0);
         LAUNCH(k_fill, 4, 256, a)(p, 2.0f);
         cudaEventRecord(ev, a);
         cudaEventSynchronize(ev);
         volatile float r = p[7];
         (void)r;
     }},
};
const int ncases = (int)(sizeof cases / sizeof cases[0]);

/* The child: the buffers, streams and event, then case k. */
int run_case(int k) {
    x = dev(n), y = dev(n), z = dev(n);
    static float h[n];
    for (int i = 0; i < n; ++i)
        h[i] = (float)(i % 5);
    cudaMemcpy(x, h, sizeof h, cudaMemcpyHostToDevice);
    cudaStreamCreate(&a);
    cudaStreamCreate(&b);
    cudaStreamCreateWithFlags(&nb, cudaStreamNonBlocking);
    cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    cases[k].run();
    cudaDeviceSynchronize();
    return 0;
}

/* Runs case k in a process of its own; true when it came out as expected. Prints the case, the
 * outcome and the report's SUMMARY line (the whole stderr when it went wrong). */
bool check(int k) {
    fflush(stdout);
    int fd[2];
    if (pipe(fd) != 0) {
        perror("pipe");
        exit(2);
    }
    const pid_t p = fork();
    if (p == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        close(fd[1]);
        char arg[16];
        snprintf(arg, sizeof arg, "%d", k);
        execl("/proc/self/exe", "kemu_race_selftest", "--case", arg, (char *)nullptr);
        perror("execl");
        _exit(127);
    }
    close(fd[1]);
    std::string out;
    char buf[4096];
    ssize_t got;
    while ((got = read(fd[0], buf, sizeof buf)) > 0)
        out.append(buf, (size_t)got);
    close(fd[0]);
    int st = 0;
    waitpid(p, &st, 0);
    const bool race = out.find("WARNING: ThreadSanitizer: data race") != std::string::npos;
    const bool clean_exit = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    const bool ok = cases[k].race ? race : !race && clean_exit && out.empty();
    std::string summary;
    const size_t s = out.find("SUMMARY: ");
    if (s != std::string::npos)
        summary = out.substr(s, out.find('\n', s) - s);
    printf("%s %-62s %s%s%s\n", ok ? "ok  " : "FAIL", cases[k].name,
           race         ? "reported"
           : clean_exit ? "clean"
                        : "no report, but the child failed",
           summary.empty() ? "" : ": ", summary.c_str());
    if (!ok)
        printf("---- its stderr ----\n%s----\n", out.c_str());
    return ok;
}

} // namespace

int main(int argc, char **argv) {
#if !defined(__SANITIZE_THREAD__)
    printf("kemu_race_selftest: built without -fsanitize=thread, nothing to check\n");
    return 1;
#endif
    if (argc == 3 && !strcmp(argv[1], "--case"))
        return run_case(atoi(argv[2]));
    int failed = 0;
    for (int k = 0; k < ncases; ++k)
        failed += !check(k);
    printf("%s: %d cases, %d failed\n", failed ? "FAIL" : "PASS", ncases, failed);
    return failed ? 1 : 0;
}
