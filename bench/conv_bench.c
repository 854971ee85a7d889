// conv_bench.c - times conv2d_forward_ref against conv2d_forward in one process, on the conv
// shapes that dominate the models (ResNet stages, stem, a depthwise layer, a CIFAR layer).
// Prints milliseconds, GFLOP/s (2 flops per multiply-accumulate) and the speed-up, on one
// thread and on all threads, plus the largest difference to the reference as a sanity check.
//
//   make build/bench/conv_bench && build/bench/conv_bench [repeats]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "ops.h"

typedef struct {
    const char *name;
    int N, C, H, W, K, R, S, stride, pad, groups;
} bench_shape;

static const bench_shape shapes[] = {
    {"resnet 3x3 64->64 @56", 1, 64, 56, 56, 64, 3, 3, 1, 1, 1},
    {"resnet 3x3 128->128 @28", 1, 128, 28, 28, 128, 3, 3, 1, 1, 1},
    {"resnet 3x3 512->512 @7", 1, 512, 7, 7, 512, 3, 3, 1, 1, 1},
    {"resnet 1x1 256->64 @56", 1, 256, 56, 56, 64, 1, 1, 1, 0, 1},
    {"resnet 3x3/2 64->128 @56", 1, 64, 56, 56, 128, 3, 3, 2, 1, 1},
    {"stem 7x7/2 3->64 @224", 1, 3, 224, 224, 64, 7, 7, 2, 3, 1},
    {"cifar 3x3 16->16 @32 x8", 8, 16, 32, 32, 16, 3, 3, 1, 1, 1},
    {"depthwise 3x3 128 @56", 1, 128, 56, 56, 128, 3, 3, 1, 1, 128},
};

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *random_floats(size_t n, float scale, unsigned *seed) {
    float *p = malloc(n * sizeof(float));
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        p[i] = scale * ((float)(*seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f);
    }
    return p;
}

// Best time of `repeats` runs of the fast path.
static double time_fast(const bench_shape *b, float *out, const float *inp, const float *w,
                        const float *bias, int OH, int OW, const cnn_window *win, float *ws,
                        int repeats) {
    double best = 1e30;
    for (int i = 0; i < repeats; i++) {
        double t0 = now_seconds();
        conv2d_forward(out, inp, w, bias, b->N, b->C, b->H, b->W, b->K, OH, OW, win, ws);
        double t = now_seconds() - t0;
        if (t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv) {
    int repeats = argc > 1 ? atoi(argv[1]) : 5;
    if (repeats < 1) repeats = 1;
    int max_threads = 1;
#ifdef _OPENMP
    max_threads = omp_get_max_threads();
#endif
    printf("%-26s %9s %9s %7s | %9s %7s %7s | %9s %7s | %s\n", "shape", "MFLOP", "ref ms",
           "GF/s", "fast1 ms", "GF/s", "x ref", "fastN ms", "GF/s", "max|diff|");
    unsigned seed = 12345;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const bench_shape *b = &shapes[si];
        cnn_window win = {.kernel = {b->R, b->S}, .stride = {b->stride, b->stride},
                          .padding = {b->pad, b->pad}, .dilation = {1, 1}, .groups = b->groups};
        int OH = (b->H + 2 * b->pad - b->R) / b->stride + 1;
        int OW = (b->W + 2 * b->pad - b->S) / b->stride + 1;
        int CRS = b->C / b->groups * b->R * b->S;
        size_t n_in = (size_t)b->N * b->C * b->H * b->W, n_out = (size_t)b->N * b->K * OH * OW;
        float *inp = random_floats(n_in, 1.0f, &seed);
        float *w = random_floats((size_t)b->K * CRS, 1.0f / sqrtf((float)CRS), &seed);
        float *bias = random_floats((size_t)b->K, 0.1f, &seed);
        float *out_ref = malloc(n_out * sizeof(float)), *out = malloc(n_out * sizeof(float));
        size_t ws_floats = conv2d_workspace_floats(b->C, b->H, b->W, OH, OW, &win);
        float *ws = malloc((ws_floats ? ws_floats : 1) * sizeof(float));
        if (!out_ref || !out || !ws) { fprintf(stderr, "out of memory\n"); return 1; }
        double mflop = 2.0 * n_out * CRS / 1e6;

        double t0 = now_seconds();
        conv2d_forward_ref(out_ref, inp, w, bias, b->N, b->C, b->H, b->W, b->K, OH, OW, &win);
        double t_ref = now_seconds() - t0;

#ifdef _OPENMP
        omp_set_num_threads(1);
#endif
        double t_one = time_fast(b, out, inp, w, bias, OH, OW, &win, ws, repeats);
#ifdef _OPENMP
        omp_set_num_threads(max_threads);
#endif
        double t_all = time_fast(b, out, inp, w, bias, OH, OW, &win, ws, repeats);
        double max_diff = 0;
        for (size_t i = 0; i < n_out; i++) {
            double d = fabs((double)out[i] - out_ref[i]);
            if (d > max_diff) max_diff = d;
        }
        printf("%-26s %9.1f %9.2f %7.2f | %9.3f %7.2f %7.1f | %9.3f %7.2f | %.2g\n", b->name,
               mflop, 1e3 * t_ref, mflop / 1e3 / t_ref, 1e3 * t_one, mflop / 1e3 / t_one,
               t_ref / t_one, 1e3 * t_all, mflop / 1e3 / t_all, max_diff);
        free(inp); free(w); free(bias); free(out_ref); free(out); free(ws);
    }
    printf("fastN = %d threads\n", max_threads);
    return 0;
}
