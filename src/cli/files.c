/* The CLI's output files: checks before the first step, run locks, the CSV log, whole-file
 * replacement (plots, the study's CSV). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* The directory part of path (".", "/" or "a/b") into buf. */
static void dir_of(const char *path, char *buf, size_t len) {
    snprintf(buf, len, "%s", path);
    char *slash = strrchr(buf, '/');
    if (!slash)
        snprintf(buf, len, ".");
    else if (slash == buf)
        buf[1] = '\0';
    else
        *slash = '\0';
}

/* "<dir>/.<base><tag>" beside path into buf: the run's own hidden files (temp, lock), named so
 * that no file of the user's is taken for one; -1 when it does not fit len. */
static int beside(const char *path, const char *tag, char *buf, size_t len) {
    char dir[PATH_MAX];
    dir_of(path, dir, sizeof dir);
    const char *slash = strrchr(path, '/');
    const int n = snprintf(buf, len, "%s/.%s%s", dir, slash ? slash + 1 : path, tag);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

FILE *open_replacing(const char *path, char *tmp, size_t len) {
    /* a symlink to a file: that file is replaced, the link stays (as check_output_path says) */
    char real[PATH_MAX];
    const char *target = realpath(path, real) ? real : path;
    /* tmp holds target '\0' temp, named as the library's saves name theirs */
    const int n = snprintf(tmp, len, "%s", target);
    if (n < 0 || (size_t)n + 1 >= len)
        return NULL;
    char *t = tmp + n + 1;
    if (beside(target, ".cnnkit-tmp.XXXXXX", t, len - (size_t)n - 1))
        return NULL;
    const int fd = mkstemp(t);
    if (fd < 0)
        return NULL;
    /* mkstemp makes it 0600: give it what a new file gets, or what the replaced file had */
    struct stat st;
    const mode_t mask = umask(0);
    umask(mask);
    (void)fchmod(fd, stat(target, &st) == 0 ? st.st_mode & 07777 : 0666 & ~mask);
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(t);
    }
    return f;
}

int close_replacing(FILE *f, const char *tmp) {
    const char *target = tmp, *t = tmp + strlen(tmp) + 1;
    const int bad = ferror(f);
    const int closed = fclose(f);
    if (closed != 0 || bad || rename(t, target) != 0) {
        remove(t);
        return -1;
    }
    return 0;
}

int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (!strcmp(a, b))
        return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

int distinct_files(const char *cmd, const char *const *names, const char *const *paths, int n) {
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j)
            if (paths[i] && paths[j] && same_file(paths[i], paths[j])) {
                fprintf(stderr, "cnnkit: %s: %s and %s are the same file, %s\n", cmd, names[i],
                        names[j], paths[j]);
                return EXIT_USAGE;
            }
    return 0;
}

int output_not_input(const char *cmd, const char *opt, const char *path,
                     const char *const *in_names, const char *const *in_paths, int n) {
    for (int i = 0; path && i < n; ++i) {
        if (!in_paths[i])
            continue;
        struct stat st;
        DIR *d = stat(in_paths[i], &st) == 0 && S_ISDIR(st.st_mode) ? opendir(in_paths[i]) : NULL;
        if (!d) {
            if (same_file(path, in_paths[i])) {
                fprintf(stderr, "cnnkit: %s: %s %s is %s, an input of the run\n", cmd, opt, path,
                        in_names[i]);
                return EXIT_USAGE;
            }
            continue;
        }
        int hit = 0;
        char entry[2 * PATH_MAX];
        for (struct dirent *e; !hit && (e = readdir(d));) {
            snprintf(entry, sizeof entry, "%s/%s", in_paths[i], e->d_name);
            hit = strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && same_file(path, entry);
        }
        closedir(d);
        if (hit) {
            fprintf(stderr, "cnnkit: %s: %s %s is %s's file %s, an input of the run\n", cmd, opt,
                    path, in_names[i], entry);
            return EXIT_USAGE;
        }
    }
    return 0;
}

int check_output_path(const char *opt, const char *path, int replace) {
    struct stat st, lst;
    char target[PATH_MAX];
    snprintf(target, sizeof target, "%s", path);
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            fprintf(stderr, "cnnkit: %s %s is a directory\n", opt, path);
            return -1;
        }
        if (replace && !S_ISREG(st.st_mode)) {
            fprintf(stderr, "cnnkit: %s %s is not a regular file: refusing to replace it\n", opt,
                    path);
            return -1;
        }
        if (!replace && access(path, W_OK) != 0) {
            fprintf(stderr, "cnnkit: %s %s: %s\n", opt, path, strerror(errno));
            return -1;
        }
        if (replace && lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode) && realpath(path, target)) {
            printf("%s %s is a symbolic link: the file it points to, %s, will be replaced\n", opt,
                   path, target);
        }
    } else if (errno != ENOENT) {
        fprintf(stderr, "cnnkit: %s %s: %s\n", opt, path, strerror(errno));
        return -1;
    } else if (lstat(path, &lst) == 0) {
        fprintf(stderr, "cnnkit: %s %s is a symbolic link to a missing file\n", opt, path);
        return -1;
    }
    if (!replace && stat(path, &st) == 0)
        return 0; /* written in place: writable, checked above */
    /* a new file (or a rename target) needs its directory: make and remove a probe file, named
     * as the temp file a replacing write will make (".<base>.cnnkit-tmp.XXXXXX", which may be
     * too long where the name itself is not); a file written in place makes none */
    char dir[PATH_MAX], probe[2 * PATH_MAX + 32];
    dir_of(target, dir, sizeof dir);
    int fd = -1;
    if (replace)
        fd = beside(target, ".cnnkit-tmp.XXXXXX", probe, sizeof probe) ? -1 : mkstemp(probe);
    else if ((size_t)snprintf(probe, sizeof probe, "%s/.cnnkit-probe.XXXXXX", dir) < sizeof probe)
        fd = mkstemp(probe);
    if (fd < 0) {
        fprintf(stderr, "cnnkit: %s %s: cannot create a file in %s: %s\n", opt, path, dir,
                strerror(errno));
        return -1;
    }
    close(fd);
    unlink(probe);
    return 0;
}

int lock_name(const char *path, char *buf, size_t len) {
    return beside(path, ".cnnkit-lock", buf, len);
}

int lock_path(const char *opt, const char *path) {
    char name[PATH_MAX];
    if (lock_name(path, name, sizeof name)) {
        fprintf(stderr, "cnnkit: %s %s: path too long\n", opt, path);
        return -1;
    }
    /* lock files are removed at the end of a run: a lock taken on a file that was removed (or
     * replaced) meanwhile is no lock, so check that the name still leads to the locked file */
    for (int tries = 0; tries < 8; ++tries) {
        int fd = open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "cnnkit: %s %s: cannot create the lock file %s: %s\n", opt, path, name,
                    strerror(errno));
            return -1;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            const int e = errno;
            close(fd);
            if (e == EWOULDBLOCK)
                fprintf(stderr,
                        "cnnkit: %s %s is in use by another cnnkit run (it holds %s): wait for "
                        "it to finish or choose another path\n",
                        opt, path, name);
            else
                fprintf(stderr, "cnnkit: %s %s: cannot lock %s: %s\n", opt, path, name,
                        strerror(e));
            return -1;
        }
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(name, &b) == 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino)
            return fd;
        close(fd);
    }
    fprintf(stderr, "cnnkit: %s %s: the lock file %s keeps changing\n", opt, path, name);
    return -1;
}

void unlock_path(const char *path, int fd) {
    if (fd < 0)
        return;
    char name[PATH_MAX];
    if (lock_name(path, name, sizeof name) == 0)
        unlink(name); /* while still locked: a run waiting on it then sees a new file */
    close(fd);
}

/* ---- CSV log --------------------------------------------------------------------------------- */

const char CSV_HEADER[] =
    "epoch,loss,accuracy,val_loss,val_accuracy,test_loss,test_accuracy,seconds,images_per_s\n";

static void csv_failed(csv_log *l, int e) {
    if (!l->err) {
        l->err = e ? e : EIO;
        fprintf(stderr,
                "cnnkit: --log %s: write failed: %s (training goes on; the log is "
                "incomplete)\n",
                l->path, strerror(l->err));
    }
}

/* Field k (0-based) of a CSV row as a number; NaN when empty or absent. */
static double csv_field(const char *row, int k) {
    const char *p = row;
    for (int i = 0; i < k && p; ++i) {
        p = strchr(p, ',');
        if (p)
            ++p;
    }
    if (!p || *p == ',' || *p == '\n' || !*p)
        return NAN;
    return strtod(p, NULL);
}

int csv_open(csv_log *l, const char *path, int resume_epoch, ck_epoch_result *hist, int hist_cap) {
    memset(l, 0, sizeof *l);
    l->path = path;
    /* a regular file is read back on resume; a device or pipe (/dev/stdout) is only written */
    struct stat st;
    const int existed = stat(path, &st) == 0;
    const int other = existed && !S_ISREG(st.st_mode);
    int fd = open(path, (other ? O_WRONLY : O_RDWR | O_CREAT) | O_CLOEXEC, 0666);
    if (fd < 0) {
        fprintf(stderr, "cnnkit: --log %s: %s\n", path, strerror(errno));
        return EXIT_RUNTIME;
    }
    const int regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    /* a regular file is locked for the run (a second run would interleave its rows); a device
     * or pipe (/dev/stdout) is written as it is */
    if (regular && flock(fd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr,
                "cnnkit: --log %s is in use by another cnnkit run (locked): wait for it to "
                "finish or choose another file\n",
                path);
        close(fd);
        return EXIT_RUNTIME;
    }
    l->f = fdopen(fd, regular ? "r+" : "w");
    if (!l->f) {
        fprintf(stderr, "cnnkit: --log %s: %s\n", path, strerror(errno));
        close(fd);
        return EXIT_RUNTIME;
    }
    long keep = 0; /* bytes of the existing file kept */
    if (regular && resume_epoch >= 0 && st.st_size > 0) {
        char line[1024];
        if (!fgets(line, sizeof line, l->f) || strcmp(line, CSV_HEADER) != 0) {
            fprintf(stderr,
                    "cnnkit: --log %s: its first line is not this version's header (%.*s): "
                    "choose another file to resume into\n",
                    path, (int)strcspn(line, "\n"), line);
            fclose(l->f);
            l->f = NULL;
            return EXIT_RUNTIME;
        }
        keep = ftell(l->f);
        while (fgets(line, sizeof line, l->f)) {
            const int epoch = atoi(line);
            if (epoch < 1 || epoch > resume_epoch)
                break;
            if (epoch <= hist_cap) {
                ck_epoch_result *r = &hist[epoch - 1];
                r->epoch = epoch;
                r->loss = csv_field(line, 1);
                r->accuracy = csv_field(line, 2);
                r->val_loss = csv_field(line, 3);
                r->val_accuracy = csv_field(line, 4);
                r->seconds = csv_field(line, 7);
                r->images_per_s = csv_field(line, 8);
            }
            keep = ftell(l->f);
        }
    }
    l->keep = keep;
    l->pending = 1;
    l->created = !existed;
    l->regular = regular;
    return 0;
}

/* The first row: cut the file to what a resumed run keeps, and a new log gets its header. */
static void csv_start(csv_log *l) {
    l->pending = 0;
    if (l->regular && (ftruncate(fileno(l->f), l->keep) != 0 || fseek(l->f, l->keep, SEEK_SET))) {
        csv_failed(l, errno);
        return;
    }
    if (l->keep == 0 && (fputs(CSV_HEADER, l->f) < 0 || fflush(l->f) != 0))
        csv_failed(l, errno);
}

static void csv_num(FILE *f, double v, int digits) {
    if (isfinite(v))
        fprintf(f, "%.*f", digits, v);
}

void csv_row(csv_log *l, const ck_epoch_result *r, double test_loss, double test_accuracy) {
    if (!l->f)
        return;
    if (l->pending)
        csv_start(l);
    FILE *f = l->f;
    errno = 0;
    fprintf(f, "%d,%.6f,%.6f,", r->epoch, r->loss, r->accuracy);
    csv_num(f, r->val_loss, 6);
    fputc(',', f);
    csv_num(f, r->val_accuracy, 6);
    fputc(',', f);
    csv_num(f, test_loss, 6);
    fputc(',', f);
    csv_num(f, test_accuracy, 6);
    fprintf(f, ",%.3f,%.1f\n", r->seconds, r->images_per_s);
    if (ferror(f) || fflush(f) != 0)
        csv_failed(l, errno);
}

int csv_close(csv_log *l) {
    if (!l->f)
        return 0;
    errno = 0;
    const int bad = ferror(l->f);
    if (fclose(l->f) != 0 || bad)
        csv_failed(l, errno);
    l->f = NULL;
    if (l->pending && l->created) /* nothing was logged: no empty file is left */
        unlink(l->path);
    return l->err ? EXIT_RUNTIME : 0;
}
