/* Atomic file writes, shared by the checkpoints and the Keras files: a temp file in the same
 * directory, fsync, rename over the target, fsync of the directory. */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* The file a save replaces: path itself, or where a symlink at path leads when that is a regular
 * file (resolved into buf, PATH_MAX bytes). Anything else that is not a regular file (a device,
 * a directory, a FIFO, a dangling link) is refused rather than replaced by a regular file. */
ck_status ck_save_target(ck_context *ctx, const char *path, char *buf, const char **target) {
    struct stat st;
    *target = path;
    if (lstat(path, &st) != 0)
        return errno == ENOENT
                   ? CK_STATUS_SUCCESS
                   : ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: %s: %s", path, strerror(errno));
    if (S_ISLNK(st.st_mode)) {
        if (stat(path, &st) != 0)
            return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                           "path: %s is a symbolic link to a missing or unreachable file (%s)",
                           path, strerror(errno));
        if (S_ISREG(st.st_mode)) {
            if (!realpath(path, buf))
                return ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: cannot resolve the link %s: %s",
                               path, strerror(errno));
            *target = buf;
            return CK_STATUS_SUCCESS;
        }
    }
    if (!S_ISREG(st.st_mode))
        return ck_fail(ctx, CK_STATUS_BAD_PARAM,
                       "path: %s is not a regular file (%s): refusing to replace it", path,
                       S_ISDIR(st.st_mode)    ? "a directory"
                       : S_ISCHR(st.st_mode)  ? "a character device"
                       : S_ISBLK(st.st_mode)  ? "a block device"
                       : S_ISFIFO(st.st_mode) ? "a FIFO"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                                              : "of another kind");
    return CK_STATUS_SUCCESS;
}

/* Removes "<base>.tmp.XXXXXX" files of dir left by a save that was killed. A save holds an
 * exclusive flock on its temp file from creation to rename, so a temp file that can be locked
 * belongs to no live save. Best effort: failures are ignored. */
static void remove_stale_temps(const char *dir, const char *base) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    const size_t blen = strlen(base);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (strncmp(n, base, blen) != 0 || strncmp(n + blen, ".tmp.", 5) != 0 ||
            strlen(n + blen + 5) != 6)
            continue;
        int fd = openat(dirfd(d), n, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0)
            (void)unlinkat(dirfd(d), n, 0);
        close(fd);
    }
    closedir(d);
}

ck_status ck_write_file_atomic(ck_context *ctx, const char *path, const void *buf, size_t len) {
    const unsigned char *p = (const unsigned char *)buf;
    char resolved[PATH_MAX];
    const char *target;
    CK_TRY(ck_save_target(ctx, path, resolved, &target));
    /* temp file in the same directory, then fsync and rename over the target; the directory's
     * name and the target's base name share one buffer: dir '\0' base */
    size_t plen = strlen(target);
    char *tmp = (char *)ck_host_alloc(ctx, 2 * plen + 16);
    if (!tmp)
        return ck_host_oom(ctx, "path", 2 * plen + 16);
    char *dname = tmp + plen + 13;
    memcpy(dname, target, plen + 1);
    char *slash = strrchr(dname, '/');
    const char *dir = ".", *base = dname;
    if (slash) {
        *slash = '\0';
        dir = dname[0] ? dname : "/";
        base = slash + 1;
    }
    remove_stale_temps(dir, base);
    memcpy(tmp, target, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        ck_status st =
            ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: cannot create %s: %s", tmp, strerror(e));
        ck_host_free(ctx, tmp);
        return st;
    }
    (void)flock(fd, LOCK_EX | LOCK_NB); /* marks it live for remove_stale_temps */
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
    if (!err)
        (void)fchmod(fd, 0644);
    /* renamed while still open and locked: the temp name never exists unlocked */
    if (!err && rename(tmp, target) != 0)
        err = errno;
    if (close(fd) != 0 && !err)
        err = errno;
    if (err) {
        unlink(tmp);
        ck_status st =
            ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: writing %s failed: %s", target, strerror(err));
        ck_host_free(ctx, tmp);
        return st;
    }
    /* make the rename durable: fsync the directory. A file system that cannot fsync a directory
     * (EINVAL) is not an error: the file itself is complete either way. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    ck_host_free(ctx, tmp);
    return CK_STATUS_SUCCESS;
}
