/*
 * kemu's CUDA C++ for the host compiler: included first in each kernel file (.cu), which the
 * emulated build compiles as C++ after one rewrite of the launch syntax (tools/kemu_rewrite.sh):
 *     kernel<<<grid, block, shmem, stream>>>(args)  ->  kernel | kemu::cfg(site, grid, ...)(args)
 * Each thread of a block runs on its own small stack (a fiber), so __syncthreads and warp
 * shuffles wait for the others as on a GPU; blocks run one after another.
 */
#ifndef CNNKIT_KEMU_DEVICE_H
#define CNNKIT_KEMU_DEVICE_H

/* ck_math.h takes its device branches (__fmul_rn and the like), as under nvcc */
#define KEMU_DEVICE 1

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kemu.h"

namespace kemu {
/* The slot of the __shared__ variable tagged tag in kemu's shared memory (made at first use). */
void *shared_slot(const void *tag, size_t bytes, size_t align);
} // namespace kemu

/* Blocks run one at a time on one host thread, so one slot is a __shared__ variable's memory in
 * every block: kemu_rewrite.sh turns `__shared__ T name[N]...;` into KEMU_SHARED(T, name, [N]...),
 * a reference to the variable's slot (found by the address of a static tag), and kemu fills the
 * slots with NaN bytes before each block, so a read of shared memory the block did not write
 * shows, as garbage would. (Not a static in a section: GCC 12 ignores a section attribute on the
 * statics of a function template, and most kernels with shared memory are templates.) */
#define KEMU_SHARED(T, name, dims)                                                                 \
    static char kemu_tag_##name;                                                                   \
    T(&name)                                                                                       \
    dims = *reinterpret_cast<T(*) dims>(                                                           \
        kemu::shared_slot(&kemu_tag_##name, sizeof(T dims), alignof(T)))
#undef __shared__
#define __shared__ __shared___declarations_are_rewritten_by_kemu_rewrite_sh_into_KEMU_SHARED
#undef __launch_bounds__
#define __launch_bounds__(...)

/* CUDA's integer min / max overloads */
static inline int min(int a, int b) {
    return a < b ? a : b;
}
static inline long long min(long long a, long long b) {
    return a < b ? a : b;
}
static inline int max(int a, int b) {
    return a > b ? a : b;
}
static inline long long max(long long a, long long b) {
    return a > b ? a : b;
}

namespace kemu {

/* The running GPU thread's coordinates. */
struct thread_coords {
    uint3 tid, bid;
    dim3 bdim, gdim;
};
const thread_coords &coords();

void sync_block(int line);
/* Lane exchange of __shfl_down_sync: every lane of mask arrives with its value (as bits). */
uint64_t shfl_down(unsigned mask, uint64_t bits, unsigned delta, int width, int line);

/* A launch: the configuration, then its arguments, then the kernel (see the rewrite above). */
struct launch_site {
    const char *file;
    int line;
};
template <class... A> struct bound;
struct cfg {
    launch_site at;
    dim3 grid, block;
    size_t shmem;
    cudaStream_t stream;
    cfg(const char *file, int line, dim3 g, dim3 b, size_t s = 0, cudaStream_t st = 0)
        : at{file, line}, grid(g), block(b), shmem(s), stream(st) {}
    template <class... A> bound<typename std::decay<A>::type...> operator()(A &&...a) const {
        return bound<typename std::decay<A>::type...>{*this,
                                                      std::make_tuple(std::forward<A>(a)...)};
    }
};
template <class... A> struct bound {
    cfg c;
    std::tuple<A...> args;
};

/* Runs body once per GPU thread of the grid on c.stream (cudaGetLastError reports a bad
 * configuration); pointer arguments are checked to be device memory when the work runs. */
void launch(const cfg &c, std::function<void()> body, std::function<void()> check);
void check_kernel_pointer(const launch_site &at, int index, const void *p);

/* A pointer member of a struct argument, checked as a pointer argument is (NULL passes). */
void check_member_pointer(const launch_site &at, int index, const char *member, const void *p);

} // namespace kemu

/* The struct types cnnkit passes to kernels by value, each with the check of its pointer members
 * (kemu_args.cpp): a kernel dereferences them as it does pointer arguments. A struct argument
 * type missing here does not compile (no matching kemu_check_struct), so none slips past. */
struct ck_koffset;
struct ck_kbn;
struct ck_kshape;
struct ck_conv_geom;
void kemu_check_struct(const kemu::launch_site &at, int index, const ck_koffset &v);
void kemu_check_struct(const kemu::launch_site &at, int index, const ck_kbn &v);
void kemu_check_struct(const kemu::launch_site &at, int index, const ck_kshape &v);
void kemu_check_struct(const kemu::launch_site &at, int index, const ck_conv_geom &v);

namespace kemu {

/* CUDA's built-in vector types hold numbers only. */
template <class T> struct is_cuda_vector : std::false_type {};
#define KEMU_VECTOR_TYPE(t)                                                                        \
    template <> struct is_cuda_vector<t> : std::true_type {};
KEMU_VECTOR_TYPE(float2)
KEMU_VECTOR_TYPE(float4)
KEMU_VECTOR_TYPE(double2)
KEMU_VECTOR_TYPE(int2)
KEMU_VECTOR_TYPE(int4)
KEMU_VECTOR_TYPE(uint2)
KEMU_VECTOR_TYPE(uint4)
KEMU_VECTOR_TYPE(dim3)
#undef KEMU_VECTOR_TYPE

template <class T> void check_arg(const launch_site &at, int index, const T &v) {
    if constexpr (std::is_pointer<T>::value)
        check_kernel_pointer(at, index, (const void *)v);
    else if constexpr (std::is_class<T>::value && !is_cuda_vector<T>::value)
        kemu_check_struct(at, index, v);
}
template <class Tuple, size_t... I>
void check_args(const launch_site &at, const Tuple &t, std::index_sequence<I...>) {
    (check_arg(at, (int)I, std::get<I>(t)), ...);
}

template <class... P, class... A> void operator|(void (*kernel)(P...), bound<A...> &&b) {
    static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong argument count");
    /* copied at launch, as the runtime copies kernel parameters */
    std::tuple<typename std::decay<P>::type...> params(std::move(b.args));
    const launch_site at = b.c.at;
    launch(
        b.c, [kernel, params]() { std::apply(kernel, params); },
        [at, params]() { check_args(at, params, std::index_sequence_for<P...>{}); });
}

} // namespace kemu

#define threadIdx (kemu::coords().tid)
#define blockIdx (kemu::coords().bid)
#define blockDim (kemu::coords().bdim)
#define gridDim (kemu::coords().gdim)
#define warpSize 32
#define __syncthreads() kemu::sync_block(__LINE__)

template <class T>
static inline T kemu_shfl_down_sync(unsigned mask, T v, unsigned delta, int width, int line) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a wide type");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = kemu::shfl_down(mask, bits, delta, width, line);
    T r;
    memcpy(&r, &bits, sizeof r);
    return r;
}
#define __shfl_down_sync(mask, v, delta, ...)                                                      \
    kemu_shfl_down_sync((mask), (v), (delta), kemu_width(__VA_ARGS__ + 0), __LINE__)
static inline int kemu_width(int w) {
    return w ? w : 32;
}

/* CUDA's atomics that kernels use, as the host compiler's (relaxed, as CUDA's; TSan takes them
 * for atomics, not races) */
static inline int atomicExch(int *p, int v) {
    return __atomic_exchange_n(p, v, __ATOMIC_RELAXED);
}

template <class T> static inline T __ldg(const T *p) {
    return *p;
}
static inline unsigned int __float_as_uint(float x) {
    unsigned int u;
    memcpy(&u, &x, sizeof u);
    return u;
}
static inline float __uint_as_float(unsigned int u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
/* Round-to-nearest add and multiply, never contracted into an FMA (the point of the intrinsics:
 * the emulated kernels are compiled to contract the rest, as nvcc does by default). */
static inline float __fadd_rn(float a, float b) {
    float r = a + b;
    asm("" : "+x"(r)); /* opaque to the compiler: nothing fuses across it */
    return r;
}
static inline float __fmul_rn(float a, float b) {
    float r = a * b;
    asm("" : "+x"(r));
    return r;
}
static inline double __dmul_rn(double a, double b) {
    double r = a * b;
    asm("" : "+x"(r));
    return r;
}

#endif
