// winograd_bench.c - Winograd F(4x4, 3x3) (engine/ops/winograd.c) against the im2col + GEMM
// fast path (conv2d_forward) on the 3x3 stride-1 layers of VGG-16 and ResNet-50 at batch 1,
// 224x224 input (VGG's first layer, C = 3, is left out: too few channels for Winograd to pay).
//
// Each time is the median of `repeats` runs after one warm-up run; the two paths alternate
// inside every repeat, so a change in the machine's load hits both alike. The weight transform
// (done once at model load) is not timed. "x" is conv2d_forward's time over Winograd's;
// "diff" is max|winograd - conv2d_forward| / max|conv2d_forward|.
//
//   make build/bench/winograd_bench
//   OMP_NUM_THREADS=1 taskset -c 0 build/bench/winograd_bench [repeats (default 7)] [filter] [--cpu]
//   filter: run only the layers whose name contains it ("vgg", "r50"; "" for all)
//   --cpu: time by the thread's CPU clock instead of the wall clock (for one thread: what the
//          core does, without the time slices lost to other processes on a loaded machine)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ops.h"
#include "ops/winograd.h"

#include "bench_common.h"

typedef struct {
    const char *name;
    int C, H, W, K;   // 3x3, stride 1, padding 1: OH = H, OW = W
} shape;

static const shape shapes[] = {
    {"vgg conv1_2 64->64 @224", 64, 224, 224, 64},
    {"vgg conv2_2 128->128 @112", 128, 112, 112, 128},
    {"vgg conv3_2 256->256 @56", 256, 56, 56, 256},
    {"vgg conv4_2 512->512 @28", 512, 28, 28, 512},
    {"vgg conv5_2 512->512 @14", 512, 14, 14, 512},
    {"r50 l1 3x3 64->64 @56", 64, 56, 56, 64},
    {"r50 l2 3x3 128->128 @28", 128, 28, 28, 128},
    {"r50 l3 3x3 256->256 @14", 256, 14, 14, 256},
    {"r50 l4 3x3 512->512 @7", 512, 7, 7, 512},
};

int main(int argc, char **argv) {
    int repeats = argc > 1 ? atoi(argv[1]) : 7;
    if (repeats < 1) repeats = 1;
    const char *filter = argc > 2 ? argv[2] : "";
    use_cpu_clock = argc > 3 && strcmp(argv[3], "--cpu") == 0;
    printf("median ms of %d runs (%s clock), batch 1, 3x3 stride 1 padding 1\n", repeats,
           use_cpu_clock ? "thread CPU" : "wall");
    printf("%-28s %7s | %10s %10s %6s | %8s %8s | %s\n", "layer", "GFLOP", "im2col ms",
           "wino ms", "x", "im2col", "wino", "diff");
    printf("%-28s %7s | %10s %10s %6s | %8s %8s |\n", "", "", "", "", "", "GFLOP/s", "eff.GF/s");
    unsigned seed = 12345;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape *b = &shapes[si];
        if (!strstr(b->name, filter)) continue;
        int N = 1, OH = b->H, OW = b->W;
        cnn_window win = {.kernel = {3, 3}, .stride = {1, 1}, .padding = {1, 1},
                          .dilation = {1, 1}, .groups = 1};
        size_t n_out = (size_t)N * b->K * OH * OW;
        float *inp = random_floats((size_t)N * b->C * b->H * b->W, 1.0f, &seed);
        float *w = random_floats((size_t)b->K * b->C * 9, 1.0f / sqrtf(9.0f * b->C), &seed);
        float *bias = random_floats((size_t)b->K, 0.1f, &seed);
        float *U_plain = xmalloc(winograd_weight_floats(b->K, b->C) * sizeof(float));
        float *U = xmalloc(winograd_packed_weight_floats(b->K, b->C) * sizeof(float));
        winograd_transform_weights(U_plain, w, b->K, b->C);
        winograd_pack_weights(U, U_plain, b->K, b->C);   // as a session keeps them
        free(U_plain);
        float *ws_gemm = xmalloc(conv2d_workspace_floats(b->C, b->H, b->W, OH, OW, &win) * sizeof(float));
        float *ws_wino = xmalloc(winograd_workspace_floats(N, b->C, b->H, b->W, b->K, OH, OW) *
                                 sizeof(float));
        float *out_gemm = xmalloc(n_out * sizeof(float)), *out_wino = xmalloc(n_out * sizeof(float));
        double *t_gemm = xmalloc((size_t)repeats * sizeof(double));
        double *t_wino = xmalloc((size_t)repeats * sizeof(double));
        for (int r = -1; r < repeats; r++) {   // r = -1: warm-up (page faults, caches)
            double t0 = now_seconds();
            conv2d_forward(out_gemm, inp, w, bias, N, b->C, b->H, b->W, b->K, OH, OW, &win, ws_gemm);
            double t1 = now_seconds();
            winograd_conv2d_forward(out_wino, inp, U, 1, bias, N, b->C, b->H, b->W, b->K, OH, OW,
                                    1, 1, NULL, 0, ws_wino);
            double t2 = now_seconds();
            if (r >= 0) { t_gemm[r] = t1 - t0; t_wino[r] = t2 - t1; }
        }
        double gflop = 2.0 * n_out * b->C * 9 / 1e9;
        double s_gemm = median(t_gemm, repeats), s_wino = median(t_wino, repeats);
        printf("%-28s %7.3f | %10.2f %10.2f %5.2fx | %8.1f %8.1f | %.1e\n", b->name, gflop,
               1e3 * s_gemm, 1e3 * s_wino, s_gemm / s_wino, gflop / s_gemm, gflop / s_wino,
               relative_diff(out_wino, out_gemm, n_out));
        free(inp); free(w); free(bias); free(U); free(ws_gemm); free(ws_wino);
        free(out_gemm); free(out_wino); free(t_gemm); free(t_wino);
    }
    printf("eff.GF/s: the direct conv's FLOPs (2*K*C*9*OH*OW) over Winograd's time\n");
    return 0;
}
