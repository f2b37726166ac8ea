/*
 * Self-test of kemu's runtime and GPU threads (kemu_rt.cpp): barriers, shuffles, blocks run
 * without fibers, queued work that runs only when waited for, events across streams, graph
 * capture and replay, the capture rules, launch errors and the faults. Run by make test-emu
 * before the GPU tests; exit status 0 when every check holds.
 */
#include "kemu_device.h"

#include "ck_kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

static int failed = 0, checks = 0;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        ++checks;                                                                                  \
        if (!(cond)) {                                                                             \
            ++failed;                                                                              \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)
#define LAUNCH(k, g, b, st) k | kemu::cfg(__FILE__, __LINE__, g, b, 0, st)

/* a struct argument whose pointer member the kernel reads (as the dropout kernels read theirs) */
__global__ void k_read_step(ck_koffset off, float *out) {
    out[threadIdx.x] = (float)off.step->step;
}

/* block sums through shared memory and __syncthreads (a tree, as the BN kernels do) */
__global__ void k_block_sum(const float *x, float *out, int n) {
    KEMU_SHARED(float, sh, [256]);
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    sh[threadIdx.x] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o /= 2) {
        if ((int)threadIdx.x < o)
            sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = sh[0];
}

/* warp sums by __shfl_down_sync */
__global__ void k_warp_sum(const double *x, double *out) {
    double v = x[blockIdx.x * blockDim.x + threadIdx.x];
    for (int o = 16; o > 0; o /= 2)
        v += __shfl_down_sync(0xffffffffu, v, o);
    if (threadIdx.x % 32 == 0)
        out[(blockIdx.x * blockDim.x + threadIdx.x) / 32] = v;
}

/* a grid-stride loop (its blocks after the first run without fibers) */
__global__ void k_iota(float *y, long long n) {
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < n;
         t += (long long)gridDim.x * blockDim.x)
        y[t] = (float)t;
}

/* reads a shared value no thread of this block wrote (the first block writes it) */
__global__ void k_shared_unset(float *y) {
    KEMU_SHARED(float, sh, [32]);
    if (blockIdx.x == 0)
        sh[threadIdx.x] = 1.0f;
    __syncthreads();
    y[blockIdx.x * blockDim.x + threadIdx.x] = sh[threadIdx.x];
}

/* the same in a template (GCC drops a section attribute on a template's statics) */
template <class T> __global__ void k_shared_unset_t(T *y) {
    KEMU_SHARED(T, sh, [32]);
    if (blockIdx.x == 0)
        sh[threadIdx.x] = (T)1;
    __syncthreads();
    y[blockIdx.x * blockDim.x + threadIdx.x] = sh[threadIdx.x];
}

__global__ void k_add_one(float *y) {
    if (threadIdx.x == 0 && blockIdx.x == 0)
        y[0] += 1.0f;
}

__global__ void k_shfl_diverged(double *x) {
    if (threadIdx.x < 16)
        x[threadIdx.x] = __shfl_down_sync(0xffffffffu, x[threadIdx.x], 1);
}

/* two half-warps reduce with their own masks (width 16): legal */
__global__ void k_half_warps(double *x) {
    const unsigned mask = threadIdx.x < 16 ? 0x0000ffffu : 0xffff0000u;
    double v = x[threadIdx.x];
    for (int o = 8; o > 0; o /= 2)
        v += __shfl_down_sync(mask, v, o, 16);
    x[threadIdx.x] = v;
}

/* the same shuffle from two call sites: undefined on a GPU */
__global__ void k_shfl_two_sites(double *x) {
    double v = x[threadIdx.x];
    if (threadIdx.x < 16)
        v = __shfl_down_sync(0xffffffffu, v, 1);
    else
        v = __shfl_down_sync(0xffffffffu, v, 1);
    x[threadIdx.x] = v;
}

__global__ void k_sync_diverged(float *x) {
    if (threadIdx.x < 16)
        __syncthreads();
    else
        __syncthreads();
    x[threadIdx.x] = 0;
}

/* a 16-byte load from an address that is not 16-byte aligned */
__global__ void k_misaligned(const float *x, float *y) {
    const float4 v = *reinterpret_cast<const float4 *>(x + 1);
    y[threadIdx.x] = v.x;
}

/* The child's end: 0 when body returned, the signal (kemu::fault aborts), or 1000 + a nonzero
 * exit status (UBSan's). */
template <class F> static int in_child(F body) {
    fflush(stdout);
    const pid_t p = fork();
    if (p == 0) {
        freopen("/dev/null", "w", stderr);
        body();
        _exit(0);
    }
    int st = 0;
    waitpid(p, &st, 0);
    return WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st) ? 1000 + WEXITSTATUS(st) : 0;
}

int main() {
    float *d = nullptr, *o = nullptr, *h = nullptr;
    cudaMalloc((void **)&d, 1000 * sizeof(float));
    cudaMalloc((void **)&o, 8 * sizeof(float));
    cudaHostAlloc((void **)&h, 1000 * sizeof(float), 0);
    float first[1000];
    cudaMemcpy(first, d, sizeof first, cudaMemcpyDeviceToHost);
    CHECK(isnan(first[0]) && isnan(first[999]), "new device memory reads as NaN");
    if (getenv("KEMU_PROTECT") && atoi(getenv("KEMU_PROTECT")))
        CHECK(in_child([&]() { first[0] = d[0]; }) == SIGABRT,
              "host code read device memory under KEMU_PROTECT=1");

    /* barriers and shared memory */
    float x[1000];
    for (int i = 0; i < 1000; ++i)
        x[i] = (float)(i % 7);
    cudaMemcpy(d, x, sizeof x, cudaMemcpyHostToDevice);
    LAUNCH(k_block_sum, 4, 256, 0)((const float *)d, o, 1000);
    float sums[4];
    cudaMemcpy(sums, o, sizeof sums, cudaMemcpyDeviceToHost);
    for (int b = 0; b < 4; ++b) {
        float want = 0;
        for (int i = b * 256; i < (b + 1) * 256 && i < 1000; ++i)
            want += x[i];
        CHECK(sums[b] == want, "block %d sum %g, want %g", b, sums[b], want);
    }

    /* shuffles */
    double *dx = nullptr, *dout = nullptr, hx[128], hout[4];
    cudaMalloc((void **)&dx, sizeof hx);
    cudaMalloc((void **)&dout, sizeof hout);
    for (int i = 0; i < 128; ++i)
        hx[i] = i * 0.5;
    cudaMemcpy(dx, hx, sizeof hx, cudaMemcpyHostToDevice);
    LAUNCH(k_warp_sum, 2, 64, 0)((const double *)dx, dout);
    cudaMemcpy(hout, dout, sizeof hout, cudaMemcpyDeviceToHost);
    for (int w = 0; w < 4; ++w) {
        double want = 0;
        for (int i = w * 32; i < w * 32 + 32; ++i)
            want += hx[i];
        CHECK(hout[w] == want, "warp %d sum %g, want %g", w, hout[w], want);
    }

    /* half-warp shuffles */
    for (int i = 0; i < 32; ++i)
        hx[i] = i;
    cudaMemcpy(dx, hx, 32 * sizeof(double), cudaMemcpyHostToDevice);
    LAUNCH(k_half_warps, 1, 32, 0)(dx);
    cudaMemcpy(hout, dx, sizeof(double), cudaMemcpyDeviceToHost);
    double h16;
    cudaMemcpy(&h16, dx + 16, sizeof(double), cudaMemcpyDeviceToHost);
    CHECK(hout[0] == 120.0 && h16 == 376.0, "half-warp sums %g, %g (want 120, 376)", hout[0], h16);

    /* direct blocks cover the grid */
    LAUNCH(k_iota, 3, 128, 0)(d, 1000LL);
    cudaMemcpy(x, d, sizeof x, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int i = 0; i < 1000; ++i)
        bad += x[i] != (float)i;
    CHECK(bad == 0, "grid-stride loop: %d of 1000 wrong", bad);

    /* shared memory holds garbage (NaN here) where the block did not write it */
    float *sd = nullptr;
    cudaMalloc((void **)&sd, 64 * sizeof(float));
    LAUNCH(k_shared_unset, 2, 32, 0)(sd);
    cudaMemcpy(x, sd, 64 * sizeof(float), cudaMemcpyDeviceToHost);
    cudaFree(sd);
    CHECK(x[0] == 1.0f && isnan(x[32]), "shared memory carried over between blocks (%g, %g)", x[0],
          x[32]);
    double *sdd = nullptr, hd[64];
    cudaMalloc((void **)&sdd, 64 * sizeof(double));
    LAUNCH(k_shared_unset_t<double>, 2, 32, 0)(sdd);
    cudaMemcpy(hd, sdd, sizeof hd, cudaMemcpyDeviceToHost);
    cudaFree(sdd);
    CHECK(hd[0] == 1.0 && isnan(hd[32]),
          "a template kernel's shared memory carried over between blocks (%g, %g)", hd[0], hd[32]);

    /* queued work runs when waited for: a copy to page-locked memory lands at the sync */
    cudaStream_t a, b;
    cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking);
    cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking);
    h[5] = -1.0f;
    cudaMemcpyAsync(h, d, 1000 * sizeof(float), cudaMemcpyDeviceToHost, a);
#if !defined(__SANITIZE_THREAD__) /* a race on purpose: kemu_race_selftest's (5) under TSan */
    CHECK(h[5] == -1.0f, "a queued copy ran before anything waited for it");
#endif
    cudaStreamSynchronize(a);
    CHECK(h[5] == 5.0f, "the copy had not run after cudaStreamSynchronize (h[5] = %g)", h[5]);

    /* across streams: b sees a's kernel only through an event */
    cudaEvent_t ev;
    cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    cudaMemsetAsync(o, 0, sizeof(float), a);
    LAUNCH(k_add_one, 1, 32, a)(o);
    cudaEventRecord(ev, a);
    cudaStreamWaitEvent(b, ev, 0);
    cudaMemcpyAsync(h, o, sizeof(float), cudaMemcpyDeviceToHost, b);
    cudaStreamSynchronize(b);
    CHECK(h[0] == 1.0f, "b waited on a's event but read %g", h[0]);
    LAUNCH(k_add_one, 1, 32, a)(o); /* no event: b may run first */
#if !defined(__SANITIZE_THREAD__)   /* a race on purpose: kemu_race_selftest's (4) under TSan */
    cudaMemcpyAsync(h, o, sizeof(float), cudaMemcpyDeviceToHost, b);
    cudaStreamSynchronize(b);
    CHECK(h[0] == 1.0f, "b read a's later kernel without waiting for it (%g)", h[0]);
#endif
    cudaDeviceSynchronize();
    cudaMemcpy(h, o, sizeof(float), cudaMemcpyDeviceToHost);
    CHECK(h[0] == 2.0f, "cudaDeviceSynchronize left a's work undone (%g)", h[0]);

    /* an event recorded again: waits see the latest record */
    cudaStream_t c;
    cudaStreamCreateWithFlags(&c, cudaStreamNonBlocking);
    cudaMemset(o, 0, sizeof(float));
    cudaDeviceSynchronize();
    LAUNCH(k_add_one, 1, 32, b)(o);
    cudaEventRecord(ev, a);
    cudaEventRecord(ev, b); /* after b's kernel */
    cudaStreamSynchronize(a);
    cudaStreamWaitEvent(c, ev, 0);
    cudaMemcpyAsync(h, o, sizeof(float), cudaMemcpyDeviceToHost, c);
    cudaStreamSynchronize(c);
    CHECK(h[0] == 1.0f, "a wait on a re-recorded event used the older record (%g)", h[0]);
    cudaDeviceSynchronize();
    cudaMemset(o, 0, sizeof(float));
    cudaMemcpy(h, o, sizeof(float), cudaMemcpyDeviceToHost);
    LAUNCH(k_add_one, 1, 32, a)(o);
    LAUNCH(k_add_one, 1, 32, a)(o);
    cudaDeviceSynchronize();
    cudaMemcpy(h, o, sizeof(float), cudaMemcpyDeviceToHost);
    CHECK(h[0] == 2.0f, "two kernels after a reset gave %g", h[0]);
    cudaStreamDestroy(c);

    /* graph capture records, replay runs */
    cudaGraph_t g = nullptr;
    cudaGraphExec_t ge = nullptr;
    CHECK(cudaStreamBeginCapture(a, cudaStreamCaptureModeThreadLocal) == cudaSuccess, "capture");
    LAUNCH(k_add_one, 1, 32, a)(o);
    CHECK(cudaStreamEndCapture(a, &g) == cudaSuccess && g, "end capture");
    cudaMemcpy(h, o, sizeof(float), cudaMemcpyDeviceToHost);
    CHECK(h[0] == 2.0f, "a captured kernel ran at capture (%g)", h[0]);
    cudaGraphInstantiate(&ge, g, 0);
    for (int i = 0; i < 3; ++i)
        cudaGraphLaunch(ge, a);
    cudaStreamSynchronize(a);
    cudaMemcpy(h, o, sizeof(float), cudaMemcpyDeviceToHost);
    CHECK(h[0] == 5.0f, "three replays gave %g, want 5", h[0]);

    /* capture rules: a synchronizing call breaks the capture */
    cudaStreamBeginCapture(a, cudaStreamCaptureModeThreadLocal);
    void *m = nullptr;
    CHECK(cudaMalloc(&m, 16) == cudaErrorStreamCaptureUnsupported, "cudaMalloc during capture");
    cudaGraph_t g2 = nullptr;
    CHECK(cudaStreamEndCapture(a, &g2) == cudaErrorStreamCaptureInvalidated && !g2,
          "a broken capture ended without an error");
    (void)cudaGetLastError();

    /* launch errors */
    LAUNCH(k_add_one, 1, 2048, 0)(o);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "2048 threads accepted");
    LAUNCH(k_add_one, 0, 32, 0)(o);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "an empty grid accepted");

    /* devices (KEMU_DEVICES=2 here): a stream, an event and an allocation belong to the device
     * current at their creation, and the current device is the thread's */
    setenv("KEMU_DEVICES", "2", 1);
    {
        cudaStream_t s0, s1;
        cudaEvent_t e1;
        float *m1 = nullptr;
        cudaStreamCreate(&s0);
        CHECK(cudaSetDevice(1) == cudaSuccess, "device 1 of 2");
        cudaStreamCreate(&s1);
        cudaEventCreate(&e1);
        cudaMalloc(&m1, 32 * sizeof(float));
        LAUNCH(k_add_one, 1, 32, s0)(m1);
        CHECK(cudaGetLastError() == cudaErrorInvalidResourceHandle,
              "a launch on device 0's stream while device 1 is current");
        CHECK(cudaEventRecord(e1, s0) == cudaErrorInvalidResourceHandle,
              "device 1's event recorded on device 0's stream");
        (void)cudaGetLastError();
        int other = -1;
        std::thread([&]() { cudaGetDevice(&other); }).join();
        CHECK(other == 0, "a new thread's current device is %d, want 0", other);
        LAUNCH(k_add_one, 1, 32, s1)(m1);
        CHECK(cudaStreamSynchronize(s1) == cudaSuccess && cudaGetLastError() == cudaSuccess,
              "device 1's kernel on its own memory");
        CHECK(in_child([&]() {
                  cudaSetDevice(0);
                  LAUNCH(k_add_one, 1, 32, s0)(m1);
                  cudaDeviceSynchronize();
              }) == SIGABRT,
              "device 0's kernel reading device 1's memory (no peer access)");
        cudaFree(m1);
        cudaEventDestroy(e1);
        cudaStreamDestroy(s1);
        cudaSetDevice(0);
        cudaStreamDestroy(s0);
    }
    setenv("KEMU_DEVICES", "1", 1);

    /* faults */
    CHECK(in_child([&]() {
              float host[4];
              LAUNCH(k_add_one, 1, 32, 0)(host);
              cudaDeviceSynchronize();
          }) == SIGABRT,
          "a host pointer handed to a kernel");
    CHECK(in_child([&]() {
              float host[4];
              cudaMemcpy(host, x, sizeof host, cudaMemcpyHostToDevice);
          }) == SIGABRT,
          "a host-to-device copy to host memory");
    CHECK(in_child([&]() { cudaMemcpy(d, x, 1001 * sizeof(float), cudaMemcpyHostToDevice); }) ==
              SIGABRT,
          "a copy past the end of an allocation");
    CHECK(in_child([&]() {
              LAUNCH(k_shfl_diverged, 1, 32, 0)(dx);
              cudaDeviceSynchronize();
          }) == SIGABRT,
          "a shuffle that half the warp skips");
    CHECK(in_child([&]() {
              LAUNCH(k_shfl_two_sites, 1, 32, 0)(dx);
              cudaDeviceSynchronize();
          }) == SIGABRT,
          "a shuffle met from two call sites");
    CHECK(in_child([&]() {
              LAUNCH(k_sync_diverged, 1, 32, 0)(d);
              cudaDeviceSynchronize();
          }) == SIGABRT,
          "threads of a block at different __syncthreads");
    CHECK(in_child([&]() {
              LAUNCH(k_misaligned, 1, 32, 0)((const float *)d, d);
              cudaDeviceSynchronize();
          }) != 0,
          "a misaligned float4 load");
    CHECK(in_child([&]() {
              ck_kstep host_step = {3, 0.0f};
              LAUNCH(k_read_step, 1, 32, 0)(ck_koffset{0, &host_step, 0}, o);
              cudaDeviceSynchronize();
          }) == SIGABRT,
          "a host pointer inside a struct argument");
    CHECK(in_child([&]() {
              LAUNCH(k_add_one, 1, 32, 0)(o);
              cudaDeviceSynchronize();
          }) == 0,
          "a correct launch faulted");
    {
        ck_kstep *ds = nullptr;
        const ck_kstep hs = {7, 0.0f};
        cudaMalloc((void **)&ds, sizeof *ds);
        cudaMemcpy(ds, &hs, sizeof hs, cudaMemcpyHostToDevice);
        LAUNCH(k_read_step, 1, 32, 0)(ck_koffset{0, ds, 0}, d);
        cudaMemcpy(h, d, sizeof(float), cudaMemcpyDeviceToHost);
        CHECK(h[0] == 7.0f, "a struct argument's device pointer read %g, want 7", h[0]);
        cudaFree(ds);
    }

    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    cudaEventDestroy(ev);
    cudaStreamDestroy(a);
    cudaStreamDestroy(b);
    cudaFree(d);
    cudaFree(o);
    cudaFree(dx);
    cudaFree(dout);
    cudaFreeHost(h);
    printf("%s: %d checks, %d failed\n", failed ? "FAIL" : "PASS", checks, failed);
    return failed ? 1 : 0;
}
