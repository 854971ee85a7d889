// patches_overhead.c - what `cnnscope patches` costs over plain inference of the truncated
// network.
//
//     build/bench/patches_overhead MODEL DIR LAYER [--top K] [--per-image P] [--batch B]
//                                  [--threads N] [--limit N] [--repeat R]
//
// The first --limit images of DIR (default 2000) are decoded once into memory, so that the
// timings compare only what differs. Per batch, (a) cnn_session_run up to LAYER and (b)
// vis_top_k_add over every channel of the layer (the heap work of cnnscope patches; the crops
// and PNGs at the end cost O(channels x K) and do not grow with the images) are timed
// separately. The pass over the images is repeated R times (default 3) and the smallest sum of
// each part counts. Prints both and the overhead b / a; the target is 10 % or less. Decoding
// (the same in both) and the walk are left out. Set OMP_WAIT_POLICY=passive on a machine busy
// with other work.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "image_walk.h"
#include "select.h"
#include "top_patches.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int die(const char *what) {
    fprintf(stderr, "patches_overhead: %s: %s\n", what, cnn_last_error());
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL DIR LAYER [--top K] [--per-image P] [--batch B] "
                "[--threads N] [--limit N] [--repeat R]\n", argv[0]);
        return 2;
    }
    int k = 16, per_image = 1, batch = 16, threads = 0, limit = 2000, repeat = 3;
    for (int i = 4; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (strcmp(argv[i], "--top") == 0) k = v;
        else if (strcmp(argv[i], "--per-image") == 0) per_image = v;
        else if (strcmp(argv[i], "--batch") == 0) batch = v;
        else if (strcmp(argv[i], "--threads") == 0) threads = v;
        else if (strcmp(argv[i], "--limit") == 0) limit = v;
        else if (strcmp(argv[i], "--repeat") == 0) repeat = v;
        else {
            fprintf(stderr, "patches_overhead: unknown option %s\n", argv[i]);
            return 2;
        }
    }
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads(threads);
#endif
    cnn_model *m;
    if (cnn_model_load(argv[1], &m) != CNN_OK) return die(argv[1]);
    const cnn_model_info *info = cnn_model_get_info(m);
    int node = vis_find_layer(m, argv[3]);
    if (node < 1) return die(argv[3]);
    cnn_node_info ni;
    cnn_model_node(m, node, &ni);

    // Decode the images once.
    size_t per = (size_t)info->channels * info->height * info->width;
    float *x = malloc(sizeof(float) * per * (size_t)limit);
    char **paths = calloc((size_t)limit, sizeof(char *));
    if (!x || !paths) return die("out of memory");
    vis_image_walk *w;
    if (vis_image_walk_open(argv[2], &w) != CNN_OK) return die(argv[2]);
    int n = 0;
    const char *path, *rel;
    while (n < limit && vis_image_walk_next(w, &path, &rel) == 1) paths[n++] = strdup(path);
    vis_image_walk_close(w);
    double t0 = now();
    cnn_image_limits limits = {100000000};
    if (n == 0 || cnn_image_load_batch(info, (const char *const *)paths, n, &limits, x) != CNN_OK)
        return die("decoding");
    double decode = now() - t0;

    int *channels = malloc(sizeof(int) * (size_t)ni.c), *images = malloc(sizeof(int) * batch);
    for (int c = 0; c < ni.c; c++) channels[c] = c;
    cnn_session_options opt = cnn_session_defaults();
    opt.threads = threads;
    opt.stop_after = node;
    cnn_session *s;
    if (cnn_session_create(m, batch, &opt, &s) != CNN_OK) return die("session");

    // Each pass times the two parts of every batch separately, so that the ratio stays
    // meaningful on a machine busy with other work (a comparison of whole passes is not).
    double best_run = 1e30, best_topk = 1e30;
    for (int r = 0; r < repeat; r++) {
        vis_top_k *tk = NULL;
        if (vis_top_k_create(ni.c, k, per_image, &tk) != CNN_OK) return die("top-k");
        double run_time = 0, topk_time = 0;
        for (int first = 0; first < n; first += batch) {
            int count = n - first < batch ? n - first : batch;
            double t1 = now();
            if (cnn_session_run(s, x + (size_t)first * per, count) != CNN_OK) return die("run");
            double t2 = now();
            const cnn_tensor *t = cnn_session_output(s, node);
            for (int i = 0; i < count; i++) images[i] = first + i;
            int h = t->ndim == 4 ? (int)t->dims[2] : 1, ww = t->ndim == 4 ? (int)t->dims[3] : 1;
            vis_top_k_add(tk, t->data, count, (int)t->dims[1], h, ww, channels, images);
            double t3 = now();
            run_time += t2 - t1;
            topk_time += t3 - t2;
        }
        if (run_time < best_run) best_run = run_time;
        if (topk_time < best_topk) best_topk = topk_time;
        vis_top_k_free(tk);
    }
    printf("model %s, layer %s (%s, %dx%dx%d), %d images, batch %d, top %d, per-image %d\n",
           argv[1], ni.name, cnn_op_name(ni.op), ni.c, ni.h, ni.w, n, batch, k, per_image);
    printf("decode (once, not in the comparison): %.3f s\n", decode);
    printf("truncated inference:                  %.3f s (%.0f images/s)\n", best_run,
           n / best_run);
    printf("top-k heaps:                          %.4f s\n", best_topk);
    printf("overhead of the top-k heaps:          %.2f %% (target <= 10 %%)\n",
           100.0 * best_topk / best_run);
    cnn_session_free(s);
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
    free(x);
    free(channels);
    free(images);
    cnn_model_free(m);
    return 0;
}
