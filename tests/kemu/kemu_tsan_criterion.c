/*
 * make test-emu EMU_TSAN=1 only (linked into cnnkit_tests under CNNKIT_EMU_TSAN): Criterion's
 * runner (BoxFort) maps its shared arena at a random address in [0x200000000000, 0x7f0000000000)
 * that mincore says is free, 10 tries; under ThreadSanitizer nearly all of that range is TSan's
 * own reserved memory, so it fails (Snaipe/Criterion#274: "Could not initialize inheritable
 * arena"). Here mincore says free there, and a MAP_FIXED mmap64 into that range that would meet
 * any mapping (or that TSan refuses) goes to a free address of TSan's application range
 * [0x7e8000000000, 0x800000000000) below BoxFort's limit instead: BoxFort uses the address mmap
 * returns, and its workers (new processes) map the arena at that address again.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

static const uintptr_t win_lo = 0x200000000000ull, win_hi = 0x7f0000000000ull;

static int (*real_mincore(void))(void *, size_t, unsigned char *) {
    static int (*f)(void *, size_t, unsigned char *);
    if (!f)
        f = (int (*)(void *, size_t, unsigned char *))dlsym(RTLD_NEXT, "mincore");
    return f;
}

/* whether any page of [a, a + len) is mapped */
static int any_mapped(uintptr_t a, size_t len) {
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char v;
    for (uintptr_t p = a & ~(uintptr_t)(pg - 1); p < a + len; p += pg)
        if (real_mincore()((void *)p, pg, &v) == 0)
            return 1;
    return 0;
}

int mincore(void *addr, size_t len, unsigned char *vec) {
    const uintptr_t a = (uintptr_t)addr;
    if (a >= win_lo && a < win_hi) {
        errno = ENOMEM; /* "free": mmap64 below never maps over anything */
        return -1;
    }
    return real_mincore()(addr, len, vec);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    static void *(*next)(void *, size_t, int, int, int, off_t);
    if (!next)
        next = (void *(*)(void *, size_t, int, int, int, off_t))dlsym(RTLD_NEXT, "mmap64");
    const uintptr_t a = (uintptr_t)addr;
    if (!(flags & MAP_FIXED) || a < win_lo || a >= win_hi)
        return next(addr, len, prot, flags, fd, off);
    if (!any_mapped(a, len)) {
        void *r = next(addr, len, prot, flags, fd, off);
        if (r != MAP_FAILED || errno != EINVAL)
            return r;
    }
    for (uintptr_t to = 0x7e9000000000ull; to + len < win_hi; to += 0x1000000000ull) {
        if (any_mapped(to, len))
            continue;
        void *q = next((void *)to, len, prot, (flags & ~MAP_FIXED) | MAP_FIXED_NOREPLACE, fd, off);
        if (q == (void *)to)
            return q;
        if (q != MAP_FAILED)
            munmap(q, len);
    }
    errno = ENOMEM;
    return MAP_FAILED;
}
