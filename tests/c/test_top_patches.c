// test_top_patches.c - vis/top_patches.c and vis/image_walk.c against brute force.
//
// 1. vis_top_k on random maps full of ties (values from a small set) and NaNs, for per_image
//    0, 1, 2, 3 and k 1..40, fed in batches of several sizes and with 1 or 2 threads, must
//    equal a sort of every candidate by (activation desc, image, y, x) with at most P
//    candidates per image (its best P by the same order).
// 2. vis_patch_crop of a box reaching outside the image: inside pixels copied, gray expanded,
//    outside VIS_OUTSIDE_RGB.
// 3. vis_image_walk gives exactly cnn_dataset_open's images in the same order, on a folder
//    tree with tricky names (a folder "a" beside "a-1.png", hidden files, non-images, nested
//    folders), both as an ImageFolder and as a plain folder.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "image_walk.h"
#include "top_patches.h"

static int failures = 0;

#define CHECK(cond, ...)                                         \
    do {                                                         \
        if (!(cond)) {                                           \
            failures++;                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fprintf(stderr, "\n");                               \
        }                                                        \
    } while (0)

static unsigned rng = 777;
static int rnd(int n) {
    rng = rng * 1103515245u + 12345u;
    return (int)((rng >> 16) % (unsigned)n);
}

static int compare(const void *pa, const void *pb) {
    const vis_hit *a = pa, *b = pb;
    return vis_hit_better(a, b) ? -1 : vis_hit_better(b, a) ? 1 : 0;
}

// Brute force for one channel c of maps [N, C, H, W]: best k, at most P per image (0 = all).
static int brute(const float *maps, int N, int C, int H, int W, int c, int k, int P,
                 vis_hit *out) {
    vis_hit *all = malloc(sizeof(vis_hit) * (size_t)N * H * W), *img = malloc(sizeof(vis_hit) * H * W);
    int n = 0;
    for (int i = 0; i < N; i++) {
        int m = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                float v = maps[(((size_t)i * C + c) * H + y) * W + x];
                if (!isnan(v)) img[m++] = (vis_hit){v, i, y, x};
            }
        qsort(img, (size_t)m, sizeof(vis_hit), compare);
        int take = P == 0 || P > m ? m : P;
        memcpy(all + n, img, sizeof(vis_hit) * (size_t)take);
        n += take;
    }
    qsort(all, (size_t)n, sizeof(vis_hit), compare);
    int got = n < k ? n : k;
    memcpy(out, all, sizeof(vis_hit) * (size_t)got);
    free(all);
    free(img);
    return got;
}

static void test_top_k(void) {
    enum { N = 37, C = 5, H = 4, W = 6 };
    float *maps = malloc(sizeof(float) * N * C * H * W);
    int channels[3] = {4, 0, 2}, images[N];
    vis_hit *want = malloc(sizeof(vis_hit) * N * H * W), *got = malloc(sizeof(vis_hit) * N * H * W);
    for (int trial = 0; trial < 60; trial++) {
        for (int i = 0; i < N * C * H * W; i++) {
            int r = rnd(100);
            maps[i] = r < 3 ? NAN : r < 50 ? (float)rnd(4) : (float)rnd(1000) / 7.0f - 50.0f;
        }
        if (trial % 10 == 0)   // a whole map of NaN and a dead (all-zero) channel
            for (int p = 0; p < H * W; p++) maps[(3 * C + 4) * H * W + p] = NAN;
        if (trial % 7 == 0)
            for (int i = 0; i < N; i++)
                for (int p = 0; p < H * W; p++) maps[(i * C + 2) * H * W + p] = 0.0f;
        for (int i = 0; i < N; i++) images[i] = i;
        int k = 1 + rnd(40), P = rnd(4), batch = 1 + rnd(N);
#ifdef _OPENMP
        omp_set_num_threads(1 + trial % 2);
#endif
        vis_top_k *t;
        CHECK(vis_top_k_create(3, k, P, &t) == CNN_OK, "create: %s", cnn_last_error());
        for (int first = 0; first < N; first += batch) {
            int n = N - first < batch ? N - first : batch;
            vis_top_k_add(t, maps + (size_t)first * C * H * W, n, C, H, W, channels, images + first);
        }
        for (int s = 0; s < 3; s++) {
            int nw = brute(maps, N, C, H, W, channels[s], k, P, want);
            int ng = vis_top_k_sorted(t, s, got);
            CHECK(ng == nw, "trial %d channel %d k %d P %d batch %d: %d hits, brute force %d", trial,
                  channels[s], k, P, batch, ng, nw);
            for (int r = 0; r < ng && r < nw; r++) {
                if (memcmp(&got[r], &want[r], sizeof(vis_hit)) != 0) {
                    CHECK(0, "trial %d channel %d k %d P %d batch %d rank %d: (%g, img %d, %d,%d), "
                          "brute force (%g, img %d, %d,%d)", trial, channels[s], k, P, batch, r,
                          got[r].activation, got[r].image, got[r].y, got[r].x, want[r].activation,
                          want[r].image, want[r].y, want[r].x);
                    break;
                }
            }
        }
        vis_top_k_free(t);
        if (failures > 5) break;
    }
    vis_top_k *t;
    CHECK(vis_top_k_create(0, 5, 1, &t) == CNN_ERR_ARG, "0 channels must be refused");
    CHECK(vis_top_k_create(1, 0, 1, &t) == CNN_ERR_ARG, "k = 0 must be refused");
    free(maps);
    free(want);
    free(got);
}

static void test_crop(void) {
    uint8_t gray[4 * 5];   // [4, 5, 1]
    for (int i = 0; i < 20; i++) gray[i] = (uint8_t)(10 * i);
    uint8_t tile[4 * 4 * 3];
    vis_patch_crop(gray, 4, 5, 1, -1, 3, 2, 6, tile);   // rows -1..2, cols 3..6
    const uint8_t outside[3] = {VIS_OUTSIDE_RGB};
    for (int y = -1; y <= 2; y++)
        for (int x = 3; x <= 6; x++) {
            const uint8_t *p = tile + ((y + 1) * 4 + (x - 3)) * 3;
            int in = y >= 0 && x < 5;
            uint8_t v = in ? gray[y * 5 + x] : 0;
            CHECK(in ? (p[0] == v && p[1] == v && p[2] == v) : memcmp(p, outside, 3) == 0,
                  "crop pixel (%d,%d): %d,%d,%d", y, x, p[0], p[1], p[2]);
        }
    uint8_t rgb[2 * 2 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    uint8_t t2[3 * 3 * 3];
    vis_patch_crop(rgb, 2, 2, 3, 0, 0, 2, 2, t2);
    CHECK(t2[0] == 1 && t2[1] == 2 && t2[2] == 3 && t2[(1 * 3 + 1) * 3 + 2] == 12 &&
          memcmp(t2 + (2 * 3 + 2) * 3, outside, 3) == 0, "rgb crop wrong");
}

static void touch(const char *root, const char *rel) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    FILE *f = fopen(path, "wb");
    if (f) fclose(f);
}

static void mk(const char *root, const char *rel) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    mkdir(path, 0777);
}

static void compare_walk(const char *dir, int expect_n) {
    cnn_dataset *ds = NULL;
    CHECK(cnn_dataset_open(dir, &ds) == CNN_OK, "%s: %s", dir, cnn_last_error());
    vis_image_walk *w = NULL;
    CHECK(vis_image_walk_open(dir, &w) == CNN_OK, "%s: %s", dir, cnn_last_error());
    if (!ds || !w) return;
    const char *path, *rel;
    int i = 0, r;
    while ((r = vis_image_walk_next(w, &path, &rel)) == 1) {
        CHECK(i < ds->n_images && strcmp(rel, ds->relative[i]) == 0 && strcmp(path, ds->paths[i]) == 0,
              "%s: walk image %d is %s, dataset %s", dir, i, rel,
              i < ds->n_images ? ds->relative[i] : "(none)");
        i++;
    }
    CHECK(r == 0 && i == ds->n_images && i == expect_n, "%s: walk gave %d images (status %d), "
          "dataset %d, expected %d", dir, i, r, ds->n_images, expect_n);
    vis_image_walk_close(w);
    cnn_dataset_free(ds);
}

static void test_walk(void) {
    char root[] = "/tmp/cnnscope_walk_XXXXXX";
    if (!mkdtemp(root)) {
        CHECK(0, "mkdtemp failed");
        return;
    }
    // plain folder: files only
    mk(root, "plain");
    touch(root, "plain/b.png");
    touch(root, "plain/A.JPG");
    touch(root, "plain/a-1.png");
    touch(root, "plain/.hidden.png");
    touch(root, "plain/notes.txt");
    char dir[600];
    snprintf(dir, sizeof dir, "%s/plain", root);
    compare_walk(dir, 3);
    // ImageFolder: class folders, nested folders, a file at the top (ignored)
    mk(root, "tree");
    touch(root, "tree/top.png");
    mk(root, "tree/a");
    mk(root, "tree/a-b");
    mk(root, "tree/a/x");
    touch(root, "tree/a/x/1.png");
    touch(root, "tree/a/z.bmp");
    touch(root, "tree/a/a-1.png");
    mk(root, "tree/a/a");
    touch(root, "tree/a/a/q.jpeg");
    touch(root, "tree/a-b/k.gif");
    mk(root, "tree/.git");
    touch(root, "tree/.git/h.png");
    mk(root, "tree/empty");
    snprintf(dir, sizeof dir, "%s/tree", root);
    compare_walk(dir, 5);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0, "cleanup");
}

int main(void) {
    test_top_k();
    test_crop();
    test_walk();
    if (failures) {
        fprintf(stderr, "test_top_patches: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_top_patches: all checks passed\n");
    return 0;
}
