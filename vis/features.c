// features.c - feature rows at one layer for a list of images, and the feature table on disk.
//
// Dims: N images, C channels, H x W spatial positions (HW = H*W), F = length of one row.
#include "vis_features.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int64_t vis_features_dim(const cnn_model *model, int node, vis_pool pool) {
    cnn_node_info info;
    cnn_model_node(model, node, &info);
    if (info.ndim == 2 || pool != VIS_POOL_NONE) return info.c;
    return (int64_t)info.c * info.h * info.w;
}

void vis_features_pool(const float *x, int c, int hw, vis_pool pool, float *row) {
    // x is (C, HW), row is (C) or (C*HW)
    if (pool == VIS_POOL_NONE) {
        memcpy(row, x, sizeof(float) * (size_t)c * hw);
        return;
    }
    for (int ch = 0; ch < c; ch++) {
        const float *plane = x + (size_t)ch * hw;
        if (pool == VIS_POOL_MAX) {
            float m = plane[0];
            for (int p = 1; p < hw; p++) if (plane[p] > m) m = plane[p];
            row[ch] = m;
        } else {
            double sum = 0;
            for (int p = 0; p < hw; p++) sum += plane[p];
            row[ch] = (float)(sum / hw);
        }
    }
}

cnn_status vis_features_extract(const cnn_model *model, const char *const *paths, int n,
                                const vis_features_options *opt, float *out) {
    int count = cnn_model_node_count(model);
    if (opt->node < 1 || opt->node >= count)
        return cnn_fail(CNN_ERR_ARG, "features: layer node %d out of range 1..%d", opt->node,
                        count - 1);
    if (opt->batch < 1) return cnn_fail(CNN_ERR_ARG, "features: batch %d < 1", opt->batch);
    const cnn_model_info *info = cnn_model_get_info(model);
    cnn_node_info node;
    cnn_model_node(model, opt->node, &node);
    int64_t dim = vis_features_dim(model, opt->node, opt->pool);
    int hw = node.ndim == 2 ? 1 : node.h * node.w;
    size_t per_image = (size_t)info->channels * info->height * info->width;
    float *input = malloc(sizeof(float) * per_image * (size_t)opt->batch);
    if (!input) return cnn_fail(CNN_ERR_NOMEM, "features: out of memory for a batch of %d", opt->batch);

    // Only what leads to the layer runs; the layer's own output must stay exactly that output.
    cnn_session_options so = cnn_session_defaults();
    so.threads = opt->threads;
    so.stop_after = opt->node;
    so.keep = &opt->node;
    so.n_keep = 1;
    cnn_session *s = NULL;
    cnn_image_limits limits = {100000000};
    cnn_status st = cnn_session_create(model, opt->batch, &so, &s);
    for (int first = 0; st == CNN_OK && first < n; first += opt->batch) {
        int b = n - first < opt->batch ? n - first : opt->batch;
        st = cnn_image_load_batch(info, paths + first, b, &limits, input);
        if (st == CNN_OK) st = cnn_session_run(s, input, b);
        const cnn_tensor *t = st == CNN_OK ? cnn_session_output(s, opt->node) : NULL;
        if (st == CNN_OK && !t) st = CNN_ERR_ARG;   // message set by cnn_session_output
        for (int i = 0; st == CNN_OK && i < b; i++) {
            // t is (b, C, H, W) or (b, F)
            const float *x = t->data + (size_t)i * node.c * hw;
            vis_features_pool(x, node.c, hw, node.ndim == 2 ? VIS_POOL_NONE : opt->pool,
                              out + (size_t)(first + i) * dim);
        }
        if (st == CNN_OK && opt->progress) opt->progress(opt->progress_user, first + b, n);
    }
    cnn_session_free(s);
    free(input);
    return st;
}

// ---------------------------------------------------------------------------------------------
// The table on disk

char *vis_side_path(const char *npy_path, const char *suffix) {
    size_t len = strlen(npy_path);
    if (len >= 4 && strcmp(npy_path + len - 4, ".npy") == 0) len -= 4;
    char *p = malloc(len + strlen(suffix) + 1);
    if (!p) return NULL;
    memcpy(p, npy_path, len);
    strcpy(p + len, suffix);
    return p;
}

static void free_lines(char **lines, int n) {
    if (!lines) return;
    for (int i = 0; i < n; i++) free(lines[i]);
    free(lines);
}

// Reads every line of `path` (without its newline). A missing file gives *lines = NULL, CNN_OK.
static cnn_status read_lines(const char *path, char ***lines, int *count) {
    *lines = NULL;
    *count = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return CNN_OK;
        return cnn_fail(CNN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    char **out = NULL, *line = NULL;
    size_t cap = 0, room = 0;
    int n = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if ((size_t)n == room) {
            room = room ? 2 * room : 1024;
            char **grown = realloc(out, room * sizeof *out);
            if (!grown) break;
            out = grown;
        }
        if (!(out[n] = strdup(line))) break;
        n++;
    }
    int failed = ferror(f) || !feof(f);
    free(line);
    fclose(f);
    if (failed) {
        free_lines(out, n);
        return cnn_fail(CNN_ERR_IO, "%s: read failed after %d lines", path, n);
    }
    *lines = out;
    *count = n;
    return CNN_OK;
}

void vis_feature_set_free(vis_feature_set *fs) {
    cnn_npy_free(fs->x);
    free_lines(fs->paths, fs->n);
    free(fs->labels);
    free_lines(fs->class_names, fs->n_classes);
    memset(fs, 0, sizeof *fs);
}

// Parses labels lines "<index> <name>" into labels[] and the class-name table.
static cnn_status parse_labels(const char *path, char **lines, int n, vis_feature_set *fs) {
    fs->labels = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (!fs->labels) return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", path);
    int max_label = -1;
    for (int i = 0; i < n; i++) {
        char *end;
        long v = strtol(lines[i], &end, 10);
        if (end == lines[i] || v < -1 || v > 1000000 || (*end && *end != ' ' && *end != '\t'))
            return cnn_fail(CNN_ERR_FORMAT,
                            "%s: line %d: expected '<class index> <class name>' or '-1', got '%.60s'",
                            path, i + 1, lines[i]);
        fs->labels[i] = (int)v;
        if (v > max_label) max_label = (int)v;
    }
    fs->n_classes = max_label + 1;
    if (fs->n_classes == 0) return CNN_OK;
    fs->class_names = calloc((size_t)fs->n_classes, sizeof(char *));
    if (!fs->class_names) return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < n; i++) {
        int c = fs->labels[i];
        if (c < 0 || fs->class_names[c]) continue;
        const char *name = lines[i] + strcspn(lines[i], " \t");
        name += strspn(name, " \t");
        if (*name && !(fs->class_names[c] = strdup(name)))
            return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", path);
    }
    for (int c = 0; c < fs->n_classes; c++) {
        if (fs->class_names[c]) continue;
        char buf[32];
        snprintf(buf, sizeof buf, "class %d", c);
        if (!(fs->class_names[c] = strdup(buf)))
            return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", path);
    }
    return CNN_OK;
}

cnn_status vis_feature_set_load(const char *npy_path, vis_feature_set *out) {
    vis_feature_set fs = {0};
    int ndim;
    int64_t dims[8];
    cnn_status st = cnn_npy_read(npy_path, &fs.x, &ndim, dims);
    if (st != CNN_OK) return st;
    int64_t dim = 1;
    for (int i = 1; i < ndim; i++) dim *= dims[i];
    if (ndim < 2 || dims[0] < 1 || dims[0] > (1 << 30) || dim < 1 || dim > (1 << 30)) {
        cnn_npy_free(fs.x);
        return cnn_fail(CNN_ERR_FORMAT, "%s: expected features [N, F] with N, F >= 1, got %d dims",
                        npy_path, ndim);
    }
    fs.n = (int)dims[0];
    fs.dim = (int)dim;
    char *paths_file = vis_side_path(npy_path, ".paths.txt");
    char *labels_file = vis_side_path(npy_path, ".labels.txt");
    char **labels = NULL;
    int n_paths = 0, n_labels = 0;
    if (!paths_file || !labels_file) st = cnn_fail(CNN_ERR_NOMEM, "out of memory");
    if (st == CNN_OK) st = read_lines(paths_file, &fs.paths, &n_paths);
    if (st == CNN_OK && fs.paths && n_paths != fs.n)
        st = cnn_fail(CNN_ERR_FORMAT, "%s: %d lines, but %s has %d rows (written by different "
                      "runs?)", paths_file, n_paths, npy_path, fs.n);
    if (st == CNN_OK) st = read_lines(labels_file, &labels, &n_labels);
    if (st == CNN_OK && labels && n_labels != fs.n)
        st = cnn_fail(CNN_ERR_FORMAT, "%s: %d lines, but %s has %d rows (written by different "
                      "runs?)", labels_file, n_labels, npy_path, fs.n);
    if (st == CNN_OK && labels) st = parse_labels(labels_file, labels, n_labels, &fs);
    if (!fs.paths) n_paths = 0;
    free_lines(labels, n_labels);
    free(paths_file);
    free(labels_file);
    if (st != CNN_OK) {
        // fs.paths holds n_paths lines (== fs.n when it was kept)
        free_lines(fs.paths, n_paths);
        fs.paths = NULL;
        vis_feature_set_free(&fs);
        return st;
    }
    *out = fs;
    return CNN_OK;
}

static cnn_status write_paths(void *user, FILE *f) {
    const vis_feature_set *fs = user;
    for (int i = 0; i < fs->n; i++) fprintf(f, "%s\n", fs->paths[i]);
    return CNN_OK;
}

static cnn_status write_labels(void *user, FILE *f) {
    const vis_feature_set *fs = user;
    for (int i = 0; i < fs->n; i++) {
        int c = fs->labels[i];
        if (c >= 0 && c < fs->n_classes) fprintf(f, "%d %s\n", c, fs->class_names[c]);
        else fprintf(f, "-1\n");
    }
    return CNN_OK;
}

// Three files cannot be replaced in one atomic step. As `cnnscope preprocess` does: the .npy
// is written in full to a staging name first, then the side files go into place (each
// atomically), and the .npy is renamed last: a kill or failure before that leaves the previous
// .npy untouched, and a kill between the renames leaves new side files beside the previous .npy,
// which vis_feature_set_load refuses when the counts differ.
cnn_status vis_feature_set_write(const char *npy_path, const vis_feature_set *fs) {
    for (int i = 0; fs->paths && i < fs->n; i++)
        if (strpbrk(fs->paths[i], "\r\n"))
            return cnn_fail(CNN_ERR_ARG, "%s: image path %d holds a line break", npy_path, i);
    int64_t dims[2] = {fs->n, fs->dim};
    size_t len = strlen(npy_path);
    char *staged = malloc(len + 32);   // "<FEATS.npy>.tmp.<pid>"
    char *paths_file = vis_side_path(npy_path, ".paths.txt");
    char *labels_file = vis_side_path(npy_path, ".labels.txt");
    cnn_status st = CNN_OK;
    if (!staged || !paths_file || !labels_file) st = cnn_fail(CNN_ERR_NOMEM, "out of memory");
    if (st == CNN_OK) {
        snprintf(staged, len + 32, "%s.tmp.%ld", npy_path, (long)getpid());
        st = cnn_npy_write(staged, fs->x, 2, dims);
    }
    int staged_written = st == CNN_OK;
    if (st == CNN_OK && fs->paths) st = cnn_write_atomic(paths_file, write_paths, (void *)fs);
    if (st == CNN_OK && fs->labels) st = cnn_write_atomic(labels_file, write_labels, (void *)fs);
    if (st == CNN_OK && rename(staged, npy_path) != 0) {
        // the new side files must not stay beside the previous .npy they do not describe
        st = cnn_fail(CNN_ERR_IO, "%s: cannot rename %s to it: %s (removed the new side files)",
                      npy_path, staged, strerror(errno));
        if (fs->paths) remove(paths_file);
        if (fs->labels) remove(labels_file);
    }
    if (st != CNN_OK && staged_written) remove(staged);
    free(staged);
    free(paths_file);
    free(labels_file);
    return st;
}
