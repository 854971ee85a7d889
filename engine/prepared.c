// prepared.c - the layout of prepared weights, and cnn_model_pack, which stores them in a copy
// of the model file (see prepared.h for the scheme).
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "model.h"
#include "model_write.h"
#include "prepared.h"

void prepared_layout(char buf[PREPARED_LAYOUT_MAX]) {
    const cnn_kernel_table *kt = cnn_kernels();
    snprintf(buf, PREPARED_LAYOUT_MAX, "cnnscope prepared weights v%d: %s, gemm %dx%d, kc %d",
             PREPARED_VERSION, kt->name, kt->mr, kt->nr, kt->kc);
}

const char *cnn_prepared_layout(void) {
    static _Thread_local char layout[PREPARED_LAYOUT_MAX];
    prepared_layout(layout);
    return layout;
}

// Drops the file's pages from the page cache (they are on disk: cnn_write_atomic synced them).
// The next load then reads the file afresh, through a mapping that asks for huge pages, and
// the page cache holds it in 2 MiB folios; a file just written sits in 4 KiB pages, and on the
// test VM the first touch of each 4 KiB page of a new mapping costs ~0.7 us, ~40 ms for a
// packed ResNet-50. A hint: nothing fails if the kernel ignores it.
static void drop_from_page_cache(const char *path) {
#ifdef POSIX_FADV_DONTNEED
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fdatasync(fd);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
#else
    (void)path;
#endif
}

cnn_status cnn_model_pack(const cnn_model *model, const char *path, int *n_prepared) {
    if (!model || !path) return cnn_fail(CNN_ERR_ARG, "cnn_model_pack: model and path are required");
    // A default session prepares every conv as a session of these kernels will want it. Its
    // fully connected weights stay in the file: nothing to prepare there.
    cnn_session_options opt = cnn_session_defaults();
    opt.copy_linear = 0;
    cnn_session *s;
    cnn_status st = cnn_session_create(model, 1, &opt, &s);
    if (st != CNN_OK) return st;
    int n = 0;
    model_write_tensor *tensors = calloc((size_t)model->n_nodes, sizeof *tensors);
    char **names = calloc((size_t)model->n_nodes, sizeof *names);
    char layout[PREPARED_LAYOUT_MAX];
    prepared_layout(layout);
    if (!tensors || !names) {
        st = cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (int i = 0; i < model->n_nodes; i++) {
        size_t size = PREPARED_LAYOUT_MAX + strlen(model->nodes[i].name);
        if (!(names[n] = malloc(size))) {
            st = cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        model_write_tensor *t = &tensors[n];
        if (!session_prepared_weights(s, i, names[n], size, &t->data, &t->floats)) {
            free(names[n]);
            names[n] = NULL;
            continue;
        }
        t->name = names[n++];
    }
    model_write_changes changes = {PREPARED_META_KEY, layout, PREPARED_PREFIX, tensors, n};
    st = model_write_changed(model, path, &changes);
    if (st == CNN_OK) drop_from_page_cache(path);
    if (st == CNN_OK && n_prepared) *n_prepared = n;
done:
    if (names) {
        for (int i = 0; i < model->n_nodes; i++) free(names[i]);
    }
    free(names);
    free(tensors);
    cnn_session_free(s);
    return st;
}
