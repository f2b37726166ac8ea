/* Helpers shared by the libFuzzer targets: the parsers under test read files, so each input is
 * written to a per-process scratch file first (in $TMPDIR, default /tmp; removed at exit). */
#ifndef CNNKIT_FUZZ_UTIL_H
#define CNNKIT_FUZZ_UTIL_H

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define FUZZ_MAX_FILES 4
static char fuzz_paths[FUZZ_MAX_FILES][512];

static void fuzz_cleanup(void) {
    for (int i = 0; i < FUZZ_MAX_FILES; ++i)
        if (fuzz_paths[i][0])
            unlink(fuzz_paths[i]);
}

/* Path of scratch file i of this process. */
static const char *fuzz_path(int i, const char *tag) {
    if (!fuzz_paths[i][0]) {
        const char *dir = getenv("TMPDIR");
        snprintf(fuzz_paths[i], sizeof fuzz_paths[i], "%s/cnnkit-fuzz-%s-%ld-%d",
                 dir && *dir ? dir : "/tmp", tag, (long)getpid(), i);
        static int registered = 0;
        if (!registered) {
            atexit(fuzz_cleanup);
            registered = 1;
        }
    }
    return fuzz_paths[i];
}

/* Writes n bytes to scratch file i (gzip-compressed when gz != 0); the path, or NULL. */
static const char *fuzz_write(int i, const char *tag, const uint8_t *p, size_t n, int gz) {
    const char *path = fuzz_path(i, tag);
    if (gz) {
        gzFile g = gzopen(path, "wb1");
        if (!g)
            return NULL;
        if (n && gzwrite(g, p, (unsigned)n) != (int)n) {
            gzclose(g);
            return NULL;
        }
        return gzclose(g) == Z_OK ? path : NULL;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return NULL;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, p + done, n - done);
        if (w <= 0) {
            close(fd);
            return NULL;
        }
        done += (size_t)w;
    }
    close(fd);
    return path;
}

#endif
