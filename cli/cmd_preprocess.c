// cmd_preprocess.c - cnnscope preprocess MODEL (IMAGE...|DIR) -o X.npy: the network input.
//
// X.npy and X.paths.txt are one result (row i of the .npy is line i of the paths file), but two
// renames cannot be one atomic step. So both files are written in full first, the .npy to a
// staging name; then the paths file is renamed into place and the .npy last. Whatever is
// killed or fails before the last rename leaves the previous X.npy untouched, and the only
// inconsistent state (a kill between the two renames: the previous X.npy beside the new paths
// file) is refused by readers when the row and line counts differ (vis_feature_set_load).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

typedef struct {
    const char *const *paths;
    int n;
} path_list;

static cnn_status write_paths(void *user, FILE *f) {
    const path_list *p = user;
    for (int i = 0; i < p->n; i++) fprintf(f, "%s\n", p->paths[i]);
    return CNN_OK;
}

int cmd_preprocess(int argc, char **argv) {
    const char *out = NULL;
    int threads = 0;
    static const char *pos[4096];
    const cli_option options[] = {
        {"-o", OPT_STRING, &out, 0, 0, "X.npy  output [N,C,H,W] float32 (and X.paths.txt)"},
        {"--threads", OPT_INT, &threads, 1, 1024, "N  worker threads (default: all cores)"},
    };
    const cli_command_spec spec = {
        "preprocess", "MODEL (IMAGE...|DIR) -o X.npy",
        "Decodes images and applies the model's preprocessing, writing the network input as an\n"
        "NCHW float32 .npy (for cnnscope dump or other tools) and X.paths.txt listing the images\n"
        "in row order (relative to DIR for a folder, read in the same order as eval).",
        options, (int)(sizeof options / sizeof options[0]), 2, 4096};
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    if (!out) return cli_usage_error("preprocess", "-o X.npy is required");
    size_t len = strlen(out);
    if (len < 5 || strcmp(out + len - 4, ".npy") != 0)
        return cli_usage_error("preprocess", "-o must name a .npy file, not '%s'", out);
    // fail fast, before thousands of images are decoded
    if (cli_check_output("preprocess", out) != EXIT_OK) return EXIT_ERROR;
    cli_set_threads(threads);
    cnn_model *m = cli_load_model(pos[0]);
    if (!m) return EXIT_ERROR;
    const cnn_model_info *info = cnn_model_get_info(m);
    cnn_dataset *ds = NULL;
    struct stat st;
    const char *const *full = pos + 1, *const *listed = pos + 1;
    int n = n_pos - 1, status = EXIT_ERROR;
    if (n == 1 && stat(pos[1], &st) == 0 && S_ISDIR(st.st_mode)) {
        if (cnn_dataset_open(pos[1], &ds) != CNN_OK) {
            cnn_model_free(m);
            return cli_error();
        }
        full = (const char *const *)ds->paths;
        listed = (const char *const *)ds->relative;
        n = ds->n_images;
    }
    // One path per line: a path holding a line break would shift every later row.
    for (int i = 0; i < n; i++) {
        if (strpbrk(listed[i], "\r\n")) {
            fprintf(stderr, "cnnscope preprocess: image path %d holds a line break; X.paths.txt "
                            "could not list it\n", i);
            cnn_dataset_free(ds);
            cnn_model_free(m);
            return EXIT_ERROR;
        }
    }
    size_t per_image = (size_t)info->channels * info->height * info->width;
    float *x = malloc(sizeof(float) * per_image * (size_t)n);
    char *paths_file = malloc(len + 16);
    char *staged = malloc(len + 32);   // "<X.npy>.tmp.<pid>": the complete .npy before its rename
    cnn_image_limits limits = {0};   // 0: the process-wide limit (--max-pixels)
    int64_t dims[4] = {n, info->channels, info->height, info->width};
    path_list list = {listed, n};
    if (!x || !paths_file || !staged) {
        cnn_fail(CNN_ERR_NOMEM, "out of memory for %d images", n);
        cli_error();
        goto done;
    }
    snprintf(paths_file, len + 16, "%.*s.paths.txt", (int)(len - 4), out);
    snprintf(staged, len + 32, "%s.tmp.%ld", out, (long)getpid());
    if (cnn_image_load_batch(info, full, n, &limits, x) != CNN_OK ||
        cnn_npy_write(staged, x, 4, dims) != CNN_OK) {
        cli_error();
        goto done;
    }
    if (cnn_write_atomic(paths_file, write_paths, &list) != CNN_OK) {
        cli_error();
        remove(staged);
        goto done;
    }
    if (rename(staged, out) != 0) {
        // The new paths file must not stay beside the previous .npy it does not describe.
        fprintf(stderr, "cnnscope: %s: cannot rename %s to it: %s (removed %s, which described "
                        "the new rows)\n", out, staged, strerror(errno), paths_file);
        remove(staged);
        remove(paths_file);
        goto done;
    }
    printf("wrote %s [%d,%d,%d,%d] and %s\n", out, n, info->channels, info->height, info->width,
           paths_file);
    status = EXIT_OK;
done:
    free(staged);
    free(paths_file);
    free(x);
    cnn_dataset_free(ds);
    cnn_model_free(m);
    return status;
}
