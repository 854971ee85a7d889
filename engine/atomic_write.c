// atomic_write.c - create a file so that readers see either nothing new or all of it.
//
// The bytes go to "<path>.tmp.<pid>" in the same directory (rename is only atomic within one
// file system), are flushed and fsync'd, and the temporary file is then renamed over `path`.
// Any failure removes the temporary file and leaves `path` as it was.
#include "cnnscope.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Makes the rename itself durable. Best effort: some file systems refuse fsync on a directory,
// and the data is already safe by then.
static void sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof(dir)) return;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

cnn_status cnn_write_atomic(const char *path, cnn_status (*write_fn)(void *user, FILE *f),
                            void *user) {
    if (!path || !path[0] || !write_fn) {
        return cnn_fail(CNN_ERR_ARG, "cnn_write_atomic: path and write_fn must be given");
    }
    size_t tmp_size = strlen(path) + 32;
    char *tmp = malloc(tmp_size);
    if (!tmp) return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", path);
    snprintf(tmp, tmp_size, "%s.tmp.%ld", path, (long)getpid());

    FILE *f = fopen(tmp, "wb");
    if (!f) {
        cnn_status st = cnn_fail(CNN_ERR_IO, "%s: cannot create temporary file %s: %s", path,
                                 tmp, strerror(errno));
        free(tmp);
        return st;
    }

    cnn_status st = write_fn(user, f);
    if (st == CNN_OK && ferror(f)) {
        st = cnn_fail(CNN_ERR_IO, "%s: write error: %s", path, strerror(errno ? errno : EIO));
    }
    // Every step is checked: a full disk often shows up only at fflush, fsync or fclose.
    if (st == CNN_OK && fflush(f) != 0) {
        st = cnn_fail(CNN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    }
    if (st == CNN_OK && fsync(fileno(f)) != 0) {
        st = cnn_fail(CNN_ERR_IO, "%s: cannot write to disk (fsync): %s", path,
                      strerror(errno));
    }
    if (fclose(f) != 0 && st == CNN_OK) {
        st = cnn_fail(CNN_ERR_IO, "%s: cannot write (close): %s", path, strerror(errno));
    }
    if (st == CNN_OK && rename(tmp, path) != 0) {
        st = cnn_fail(CNN_ERR_IO, "%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
    }
    if (st != CNN_OK) {
        remove(tmp);
    } else {
        sync_parent_dir(path);
    }
    free(tmp);
    return st;
}
