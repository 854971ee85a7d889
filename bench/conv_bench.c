// conv_bench.c - GFLOP/s of conv2d_forward (im2col + packed SIMD sgemm) and of linear_forward
// at batch 1 (the GEMV path) for every ISA this machine can run, on the conv shapes of
// ResNet-50 and VGG-16 at 224x224 and their classifier layers; on 1 thread and on 2.
//
// Each number is the median of `repeats` timed runs after one warm-up run. The ISAs are
// interleaved inside every repeat (scalar, avx2, avx512, scalar, ...), so a change in the
// machine's load hits all of them alike. "x" is the speed-up over the scalar path at the same
// thread count; "diff" is the largest |difference| to the scalar path's output relative to the
// largest |output| (float re-association only, so ~1e-6).
//
//   make build/bench/conv_bench && build/bench/conv_bench [repeats (default 5)] [filter] [--cpu]
//   filter: run only the shapes whose name contains it ("vgg", "r50", "fc"; "" for all)
//   --cpu: one thread only, timed by the thread's CPU clock instead of the wall clock: what a
//          core does while it runs, unaffected by time slices lost to other processes on a
//          loaded machine (cache and memory contention still count)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "kernels/kernels.h"
#include "ops.h"

#include "bench_common.h"

typedef struct {
    const char *name;
    int N, C, H, W, K, R, S, stride, pad;
} conv_shape;

// Batch 1, 224x224 input. ResNet-50 is torchvision's (v1.5: the stride sits in the 3x3).
static const conv_shape conv_shapes[] = {
    {"r50 conv1 7x7/2 3->64 @224", 1, 3, 224, 224, 64, 7, 7, 2, 3},
    {"r50 l1 1x1 64->64 @56", 1, 64, 56, 56, 64, 1, 1, 1, 0},
    {"r50 l1 3x3 64->64 @56", 1, 64, 56, 56, 64, 3, 3, 1, 1},
    {"r50 l1 1x1 64->256 @56", 1, 64, 56, 56, 256, 1, 1, 1, 0},
    {"r50 l1 1x1 256->64 @56", 1, 256, 56, 56, 64, 1, 1, 1, 0},
    {"r50 l2 3x3/2 128->128 @56", 1, 128, 56, 56, 128, 3, 3, 2, 1},
    {"r50 l2 1x1 512->128 @28", 1, 512, 28, 28, 128, 1, 1, 1, 0},
    {"r50 l2 3x3 128->128 @28", 1, 128, 28, 28, 128, 3, 3, 1, 1},
    {"r50 l3 3x3 256->256 @14", 1, 256, 14, 14, 256, 3, 3, 1, 1},
    {"r50 l3 1x1 1024->256 @14", 1, 1024, 14, 14, 256, 1, 1, 1, 0},
    {"r50 l3 down 1x1/2 512->1024", 1, 512, 28, 28, 1024, 1, 1, 2, 0},
    {"r50 l4 3x3 512->512 @7", 1, 512, 7, 7, 512, 3, 3, 1, 1},
    {"r50 l4 1x1 512->2048 @7", 1, 512, 7, 7, 2048, 1, 1, 1, 0},
    {"vgg conv1_1 3x3 3->64 @224", 1, 3, 224, 224, 64, 3, 3, 1, 1},
    {"vgg conv1_2 3x3 64->64 @224", 1, 64, 224, 224, 64, 3, 3, 1, 1},
    {"vgg conv2_2 3x3 128->128 @112", 1, 128, 112, 112, 128, 3, 3, 1, 1},
    {"vgg conv3_2 3x3 256->256 @56", 1, 256, 56, 56, 256, 3, 3, 1, 1},
    {"vgg conv4_2 3x3 512->512 @28", 1, 512, 28, 28, 512, 3, 3, 1, 1},
    {"vgg conv5_2 3x3 512->512 @14", 1, 512, 14, 14, 512, 3, 3, 1, 1},
};

typedef struct {
    const char *name;
    int IN, OUT;
} linear_shape;

static const linear_shape linear_shapes[] = {
    {"fc r50 2048->1000", 2048, 1000},
    {"fc vgg fc6 25088->4096", 25088, 4096},
    {"fc vgg fc7 4096->4096", 4096, 4096},
};

static void set_threads(int threads) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
}

// The ISAs available here (scalar first), as kernel tables.
static int n_isas;
static const cnn_kernel_table *isas[CNN_ISA_COUNT];

// One benchmark case: run(job) computes into out[isa] with the current kernels.
typedef struct {
    const conv_shape *conv;
    const linear_shape *linear;
    const float *inp, *w, *bias;
    float *ws;
    float *out[CNN_ISA_COUNT];
    int OH, OW;
} job;

static void run(job *j, int isa_index) {
    if (j->conv) {
        const conv_shape *b = j->conv;
        cnn_window win = {.kernel = {b->R, b->S}, .stride = {b->stride, b->stride},
                          .padding = {b->pad, b->pad}, .dilation = {1, 1}, .groups = 1};
        conv2d_forward(j->out[isa_index], j->inp, j->w, j->bias, b->N, b->C, b->H, b->W, b->K,
                       j->OH, j->OW, &win, j->ws);
    } else {
        linear_forward(j->out[isa_index], j->inp, j->w, j->bias, 1, j->linear->IN,
                       j->linear->OUT);
    }
}

// Median seconds per ISA at `threads` threads, ISAs interleaved inside each repeat.
static void time_isas(job *j, int threads, int repeats, double *seconds) {
    double *t = xmalloc((size_t)repeats * CNN_ISA_COUNT * sizeof(double));
    set_threads(threads);
    for (int r = -1; r < repeats; r++) {   // r = -1: warm-up (page faults, caches, CPU clocks)
        for (int k = 0; k < n_isas; k++) {
            cnn_kernels_force(isas[k]->isa);
            double t0 = now_seconds();
            run(j, k);
            if (r >= 0) t[k * repeats + r] = now_seconds() - t0;
        }
    }
    for (int k = 0; k < n_isas; k++) seconds[k] = median(t + k * repeats, repeats);
    free(t);
}

static void print_row(const char *name, double gflop, int threads, const double *seconds,
                      size_t n_out, job *j) {
    printf("%-30s %7.3f %3d |", name, gflop, threads);
    for (int k = 0; k < n_isas; k++) {
        printf(" %8.2f", gflop / seconds[k]);
        if (k > 0) printf(" %5.1fx", seconds[0] / seconds[k]);
    }
    double diff = 0;
    for (int k = 1; k < n_isas; k++) diff = fmax(diff, relative_diff(j->out[k], j->out[0], n_out));
    printf(" | %.1e\n", diff);
}

int main(int argc, char **argv) {
    int repeats = argc > 1 ? atoi(argv[1]) : 5;
    if (repeats < 1) repeats = 1;
    const char *filter = argc > 2 ? argv[2] : "";
    use_cpu_clock = argc > 3 && strcmp(argv[3], "--cpu") == 0;
    cnn_isa_id default_isa = cnn_kernels()->isa;
    for (int isa = 0; isa < CNN_ISA_COUNT; isa++) {
        const cnn_kernel_table *t = cnn_kernels_for((cnn_isa_id)isa);
        if (t) isas[n_isas++] = t;
    }
    int max_threads = 1;
#ifdef _OPENMP
    max_threads = omp_get_max_threads() < 2 ? omp_get_max_threads() : 2;
#endif
    if (use_cpu_clock) max_threads = 1;

    printf("GFLOP/s, median of %d runs (%s clock); x = speed-up over scalar at the same thread "
           "count\n", repeats, use_cpu_clock ? "thread CPU" : "wall");
    printf("%-30s %7s %3s |", "shape", "GFLOP", "thr");
    for (int k = 0; k < n_isas; k++) {
        printf(" %8s", isas[k]->name);
        if (k > 0) printf(" %6s", "x");
    }
    printf(" | diff\n");

    unsigned seed = 12345;
    for (size_t si = 0; si < sizeof conv_shapes / sizeof conv_shapes[0]; si++) {
        const conv_shape *b = &conv_shapes[si];
        if (!strstr(b->name, filter)) continue;
        cnn_window win = {.kernel = {b->R, b->S}, .stride = {b->stride, b->stride},
                          .padding = {b->pad, b->pad}, .dilation = {1, 1}, .groups = 1};
        job j = {.conv = b};
        j.OH = (b->H + 2 * b->pad - b->R) / b->stride + 1;
        j.OW = (b->W + 2 * b->pad - b->S) / b->stride + 1;
        int CRS = b->C * b->R * b->S;
        size_t n_out = (size_t)b->N * b->K * j.OH * j.OW;
        float *inp = random_floats((size_t)b->N * b->C * b->H * b->W, 1.0f, &seed);
        float *w = random_floats((size_t)b->K * CRS, 1.0f / sqrtf((float)CRS), &seed);
        float *bias = random_floats((size_t)b->K, 0.1f, &seed);
        j.inp = inp; j.w = w; j.bias = bias;
        j.ws = xmalloc(conv2d_workspace_floats(b->C, b->H, b->W, j.OH, j.OW, &win) * sizeof(float));
        for (int k = 0; k < n_isas; k++) j.out[k] = xmalloc(n_out * sizeof(float));
        double gflop = 2.0 * n_out * CRS / 1e9, seconds[CNN_ISA_COUNT];
        for (int threads = 1; threads <= max_threads; threads++) {
            time_isas(&j, threads, repeats, seconds);
            print_row(b->name, gflop, threads, seconds, n_out, &j);
        }
        free(inp); free(w); free(bias); free(j.ws);
        for (int k = 0; k < n_isas; k++) free(j.out[k]);
    }
    for (size_t si = 0; si < sizeof linear_shapes / sizeof linear_shapes[0]; si++) {
        const linear_shape *b = &linear_shapes[si];
        if (!strstr(b->name, filter)) continue;
        job j = {.linear = b};
        float *inp = random_floats((size_t)b->IN, 1.0f, &seed);
        float *w = random_floats((size_t)b->OUT * b->IN, 1.0f / sqrtf((float)b->IN), &seed);
        float *bias = random_floats((size_t)b->OUT, 0.1f, &seed);
        j.inp = inp; j.w = w; j.bias = bias;
        for (int k = 0; k < n_isas; k++) j.out[k] = xmalloc((size_t)b->OUT * sizeof(float));
        double gflop = 2.0 * b->IN * b->OUT / 1e9, seconds[CNN_ISA_COUNT];
        for (int threads = 1; threads <= max_threads; threads++) {
            time_isas(&j, threads, repeats, seconds);
            print_row(b->name, gflop, threads, seconds, (size_t)b->OUT, &j);
        }
        free(inp); free(w); free(bias);
        for (int k = 0; k < n_isas; k++) free(j.out[k]);
    }
    printf("fc rows: linear at batch 1 (GEMV); weights streamed once per run: GB/s = 2 x GF/s\n");
    cnn_kernels_force(default_isa);
    return 0;
}
