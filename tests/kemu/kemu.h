/*
 * kemu: a CPU emulation of the CUDA runtime, cuDNN and cuBLAS as far as cnnkit uses them (and of
 * NCCL with one rank: kemu_nccl.cpp, a library of its own that cnnkit opens at run time), so the
 * GPU code path (host orchestration and cnnkit's own kernels, compiled as C++) runs and is tested
 * on machines without a GPU. It is test infrastructure, not a GPU: it finds logic errors (wrong
 * indices, wrong pointers, missing copies, misuse of the API) and, built under ThreadSanitizer
 * (CNNKIT_EMU_TSAN), races; never speed. The fakes of cuDNN and cuBLAS follow the documented
 * semantics; they cannot find a misreading of them.
 *
 * Device memory is host memory from cudaMalloc (tracked). Streams are queues: their work runs
 * when something waits for it (a synchronize, a copy to host memory, another stream's wait on an
 * event), or is recorded into the graph being captured and runs at each cudaGraphLaunch.
 */
#ifndef CNNKIT_KEMU_H
#define CNNKIT_KEMU_H

#include <cuda_runtime.h>
#include <stddef.h>

#include <functional>

namespace kemu {

/* Runs op now, or records it into the graph being captured on stream s (0: the legacy stream).
 * cudaSuccess, or the error a real runtime would give (e.g. a destroyed stream). */
cudaError_t submit(cudaStream_t s, std::function<void()> op);

/* The calling thread's current device (cudaSetDevice). */
int current_device();

/* For the fakes of cuDNN and cuBLAS, whose handles belong to the device current at their
 * creation: a call made with another device current, or on another device's stream, is
 * undefined in the real libraries, so it stops the test naming fn. */
void check_handle(const char *fn, int handle_device, cudaStream_t s);

/* Whether [p, p + bytes) lies inside one live cudaMalloc allocation. */
bool is_device(const void *p, size_t bytes);

/* A misuse that would fault or corrupt on a real GPU (a host pointer handed to a kernel, an
 * out-of-range copy): prints "kemu: <message>" to stderr and aborts, so the test fails there. */
[[noreturn]] void fault(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The stream that cudaStreamBeginCapture has made capturing, or whose capture s joined; for
 * fakes that must refuse work a real library refuses during capture. */
bool capturing(cudaStream_t s);

} // namespace kemu

#endif
