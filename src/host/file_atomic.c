/* Atomic file writes, shared by the checkpoints and the Keras files: a temp file in the same
 * directory, fsync, rename over the target, fsync of the directory. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

ck_status ck_write_file_atomic(ck_context *ctx, const char *path, const void *buf, size_t len) {
    const unsigned char *p = (const unsigned char *)buf;
    size_t plen = strlen(path);
    char *tmp = (char *)ck_host_alloc(ctx, plen + 16);
    if (!tmp)
        return ck_host_oom(ctx, "path", plen + 16);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        ck_status st =
            ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: cannot create %s: %s", tmp, strerror(e));
        ck_host_free(ctx, tmp);
        return st;
    }
    size_t done = 0;
    int err = 0;
    while (done < len) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            err = errno;
            break;
        }
        done += (size_t)w;
    }
    if (!err && fsync(fd) != 0)
        err = errno;
    if (close(fd) != 0 && !err)
        err = errno;
    if (!err)
        (void)chmod(tmp, 0644);
    if (!err && rename(tmp, path) != 0)
        err = errno;
    if (err) {
        unlink(tmp);
        ck_status st =
            ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: writing %s failed: %s", path, strerror(err));
        ck_host_free(ctx, tmp);
        return st;
    }
    /* make the rename durable: fsync the directory (its name reuses the temp name's buffer, so
     * this step needs no allocation). A file system that cannot fsync a directory (EINVAL) is
     * not an error: the file itself is complete either way. */
    memcpy(tmp, path, plen + 1);
    char *slash = strrchr(tmp, '/');
    const char *dname = ".";
    if (slash) {
        *slash = '\0';
        dname = tmp[0] ? tmp : "/";
    }
    int dfd = open(dname, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    ck_host_free(ctx, tmp);
    return CK_STATUS_SUCCESS;
}
