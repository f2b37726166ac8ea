/* Atomic file writes, shared by the checkpoints and the Keras files: a temp file in the same
 * directory, fsync, rename over the target, fsync of the directory. */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
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

int ck_open_regular(const char *path, const char **why) {
    /* O_NONBLOCK: opening a FIFO for reading returns at once; regular files ignore the flag */
    const int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        *why = strerror(errno);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
        *why = "not a regular file";
        close(fd);
        return -1;
    }
    *why = NULL;
    return fd;
}

/* A save's temp file is "<dir>/.<base>.cnnkit-tmp.XXXXXX": hidden, and named so that no file of
 * the user's is taken for one. */
#define TEMP_TAG ".cnnkit-tmp."

/* Removes the temp files of base in dir left by a save that was killed. A save holds an
 * exclusive flock on its temp file from creation to rename, so a temp file that can be locked
 * belongs to no live save. Best effort: failures are ignored. */
static void remove_stale_temps(const char *dir, const char *base) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    const size_t blen = strlen(base), tlen = strlen(TEMP_TAG);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (n[0] != '.' || strncmp(n + 1, base, blen) != 0 ||
            strncmp(n + 1 + blen, TEMP_TAG, tlen) != 0 || strlen(n + 1 + blen + tlen) != 6)
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

/* Creates the temp file (its name into tmp, made by the caller up to its six trailing Xs) with
 * O_EXCL and mode 0666, which the umask trims as for any new file (mkstemp's 0600 would not).
 * The descriptor, or -1 with errno. */
static int create_temp(char *tmp) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    char *x = tmp + strlen(tmp) - 6;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t r = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 40) ^
                 (uint64_t)(uintptr_t)tmp;
    for (int attempt = 0; attempt < 100; ++attempt) {
        r += 0x9E3779B97F4A7C15ull; /* splitmix64: a new name per attempt */
        uint64_t z = r;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        for (int i = 0; i < 6; ++i, z /= 62)
            x[i] = abc[z % 62];
        const int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    errno = EEXIST;
    return -1;
}

ck_status ck_write_file_atomic(ck_context *ctx, const char *path, const void *buf, size_t len) {
    const unsigned char *p = (const unsigned char *)buf;
    char resolved[PATH_MAX];
    const char *target;
    CK_TRY(ck_save_target(ctx, path, resolved, &target));
    /* temp file in the same directory, then fsync and rename over the target; one buffer holds
     * the directory's name, the target's base name and the temp file's path: dir '\0' base '\0'
     * tmp */
    const size_t plen = strlen(target), cap = 3 * plen + 2 * sizeof TEMP_TAG + 16;
    char *dname = (char *)ck_host_alloc(ctx, cap);
    if (!dname)
        return ck_host_oom(ctx, "path", cap);
    memcpy(dname, target, plen + 1);
    char *slash = strrchr(dname, '/');
    const char *dir = ".", *base = dname;
    if (slash) {
        *slash = '\0';
        dir = dname[0] ? dname : "/";
        base = slash + 1;
    }
    char *tmp = dname + plen + 1;
    snprintf(tmp, cap - plen - 1, "%s/.%s" TEMP_TAG "XXXXXX", dir, base);
    remove_stale_temps(dir, base);
    /* a replaced file keeps its permissions; a new one gets the umask's */
    struct stat old;
    const int had = stat(target, &old) == 0;
    int fd = create_temp(tmp);
    if (fd < 0) {
        int e = errno;
        ck_status st =
            ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: cannot create %s: %s", tmp, strerror(e));
        ck_host_free(ctx, dname);
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
    if (!err && had)
        (void)fchmod(fd, old.st_mode & 07777);
    /* renamed while still open and locked: the temp name never exists unlocked */
    if (!err && rename(tmp, target) != 0)
        err = errno;
    (void)close(fd); /* after fsync a late close error loses nothing: the rename stands */
    if (err) {
        unlink(tmp);
        ck_status st =
            ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: writing %s failed: %s", target, strerror(err));
        ck_host_free(ctx, dname);
        return st;
    }
    /* make the rename durable: fsync the directory. A file system that cannot fsync a directory
     * (EINVAL) is not an error: the file itself is complete either way. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    ck_host_free(ctx, dname);
    return CK_STATUS_SUCCESS;
}
