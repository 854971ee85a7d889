// test_ops.c - the kernels of engine/ops.h and engine/gemm.h.
//
// 1. Hand-checkable cases with exact expected numbers for every reference op (the numbers were
//    worked out by hand and agree with PyTorch 1.13), run through the fast paths too.
// 2. Fast paths against their references on seeded random shapes: conv2d (odd sizes, tails,
//    strides 1-4, padding 0-3, dilation 1-2, groups 1/2/depthwise, batch 1-3, kernels
//    1,3,5,7,11 and non-square), linear and sgemm. Tolerance max(1e-5, 1e-4*|ref|) per element.
//    maxpool's fast path: bit-identical to its reference (NaN and -inf inputs included).
// 3. With OpenMP: the fast paths give bit-identical results on 1 and 2 threads.
//
// Exit status 0 = all passed; every failure prints the op, the shape, the parameters and the
// first failing index.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "gemm.h"
#include "kernels/kernels.h"
#include "ops.h"

#define RNG_SEED 20240607u   // this test's stream of random shapes and values
#include "random.h"

static int failures = 0;

// --- comparisons ----------------------------------------------------------------------------

// Exact (or nearly exact, for values like 1/3) comparison against hand-computed numbers.
static void expect_values(const char *what, const float *got, const float *want, int n) {
    for (int i = 0; i < n; i++) {
        double tol = 1e-6 * (1.0 + fabs(want[i]));
        if (!(fabs((double)got[i] - want[i]) <= tol)) {
            printf("FAIL %s: element %d is %.9g, expected %.9g\n", what, i, got[i], want[i]);
            failures++;
            return;
        }
    }
}

// The index of the first element outside max(1e-5, 1e-4*|ref|), or -1.
static long first_mismatch(const float *fast, const float *ref, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double tol = fmax(1e-5, 1e-4 * fabs(ref[i]));
        if (!(fabs((double)fast[i] - ref[i]) <= tol)) return (long)i;
    }
    return -1;
}

// --- 1. hand-checkable cases ----------------------------------------------------------------

static cnn_window conv_window(int R, int S, int stride, int pad, int dilation, int groups) {
    cnn_window w = {.kernel = {R, S}, .stride = {stride, stride}, .padding = {pad, pad},
                    .dilation = {dilation, dilation}, .groups = groups};
    return w;
}

// Runs the reference and the fast conv on one case and checks both against `want`.
static void expect_conv(const char *what, const float *inp, const float *weight,
                        const float *bias, int N, int C, int H, int W, int K, int OH, int OW,
                        const cnn_window *win, const float *want) {
    int n_out = N * K * OH * OW;
    float *out = xmalloc((size_t)n_out * sizeof(float));
    float *ws = xmalloc(conv2d_workspace_floats(C, H, W, OH, OW, win) * sizeof(float));
    char name[160];
    conv2d_forward_ref(out, inp, weight, bias, N, C, H, W, K, OH, OW, win);
    snprintf(name, sizeof name, "conv2d_forward_ref %s", what);
    expect_values(name, out, want, n_out);
    memset(out, 0, (size_t)n_out * sizeof(float));
    conv2d_forward(out, inp, weight, bias, N, C, H, W, K, OH, OW, win, ws);
    snprintf(name, sizeof name, "conv2d_forward %s", what);
    expect_values(name, out, want, n_out);
    free(out);
    free(ws);
}

static void test_conv_by_hand(void) {
    // inp (1,1,3,3) = 1..9 row by row, weight (1,1,2,2) = [[1,2],[3,4]]
    const float inp[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    const float weight[4] = {1, 2, 3, 4};
    const float bias[1] = {0.5f};
    cnn_window win = conv_window(2, 2, 1, 0, 1, 1);
    // out[0,0] = 1*1 + 2*2 + 4*3 + 5*4 + 0.5 = 37.5, then shifted by one column / row
    expect_conv("3x3 in, 2x2 kernel, bias", inp, weight, bias, 1, 1, 3, 3, 1, 2, 2, &win,
                (const float[]){37.5f, 47.5f, 67.5f, 77.5f});
    // stride 2, padding 1: out[0,0] only sees inp[0,0] under the kernel's 4; out[1,1] sees
    // inp[1..2,1..2] under the whole kernel: 5 + 12 + 24 + 36
    win = conv_window(2, 2, 2, 1, 1, 1);
    expect_conv("stride 2 padding 1", inp, weight, NULL, 1, 1, 3, 3, 1, 2, 2, &win,
                (const float[]){4, 18, 36, 77});
    // dilation 2: the taps are the four corners, 1*1 + 3*2 + 7*3 + 9*4
    win = conv_window(2, 2, 1, 0, 2, 1);
    expect_conv("dilation 2", inp, weight, NULL, 1, 1, 3, 3, 1, 1, 1, &win, (const float[]){64});
    // groups 2: channel 0 = 1..9 with [[1,2],[3,4]]; channel 1 = all ones with an all-ones
    // kernel -> 4 everywhere; plus bias 1 on the second output channel
    float inp2[18], weight2[8] = {1, 2, 3, 4, 1, 1, 1, 1};
    for (int i = 0; i < 9; i++) { inp2[i] = inp[i]; inp2[9 + i] = 1; }
    win = conv_window(2, 2, 1, 0, 1, 2);
    expect_conv("groups 2 (depthwise)", inp2, weight2, (const float[]){0, 1}, 1, 2, 3, 3, 2, 2,
                2, &win, (const float[]){37, 47, 67, 77, 5, 5, 5, 5});
    // the same two channels through one group: out = channel 0 part + channel 1 part (4)
    win = conv_window(2, 2, 1, 0, 1, 1);
    expect_conv("2 channels, 1 group", inp2, weight2, NULL, 1, 2, 3, 3, 1, 2, 2, &win,
                (const float[]){41, 51, 71, 81});
    // 1x1 conv mixing 2 channels into 2: out0 = 2*ch0 - ch1, out1 = ch0 + 0.5
    win = conv_window(1, 1, 1, 0, 1, 1);
    float want_1x1[18];
    for (int i = 0; i < 9; i++) { want_1x1[i] = 2 * inp[i] - 1; want_1x1[9 + i] = inp[i] + 0.5f; }
    expect_conv("1x1", inp2, (const float[]){2, -1, 1, 0}, (const float[]){0, 0.5f}, 1, 2, 3, 3,
                2, 3, 3, &win, want_1x1);
}

static void test_pool_by_hand(void) {
    float out[9];
    // maxpool, ceil_mode: a row [3,-1,4,1,-5,-2], kernel 3, stride 2. Without ceil_mode there
    // are 2 windows; with it a third, partial one over [-5,-2] whose max is -2 (the padding
    // beyond the input is -inf, not 0).
    const float row[6] = {3, -1, 4, 1, -5, -2};
    cnn_window win = {.kernel = {1, 3}, .stride = {1, 2}, .dilation = {1, 1}, .ceil_mode = 1};
    maxpool_forward_ref(out, row, 1, 1, 1, 6, 1, 3, &win);
    expect_values("maxpool ceil_mode partial last window", out, (const float[]){4, 4, -2}, 3);
    // padding 1 around an all-negative 2x2, kernel 2, stride 1: padding never wins
    win = (cnn_window){.kernel = {2, 2}, .stride = {1, 1}, .padding = {1, 1}, .dilation = {1, 1}};
    maxpool_forward_ref(out, (const float[]){-1, -2, -3, -4}, 1, 1, 2, 2, 3, 3, &win);
    expect_values("maxpool padding is -inf", out,
                  (const float[]){-1, -1, -2, -1, -1, -2, -3, -3, -4}, 9);
    // dilation 2: taps x and x+2 of [5,1,2,8,3]
    win = (cnn_window){.kernel = {1, 2}, .stride = {1, 1}, .dilation = {1, 2}};
    maxpool_forward_ref(out, (const float[]){5, 1, 2, 8, 3}, 1, 1, 1, 5, 1, 3, &win);
    expect_values("maxpool dilation 2", out, (const float[]){5, 8, 3}, 3);
    // a NaN in the window wins, as in PyTorch
    win = (cnn_window){.kernel = {1, 2}, .stride = {1, 2}, .dilation = {1, 1}};
    maxpool_forward_ref(out, (const float[]){1, NAN, 2, 3}, 1, 1, 1, 4, 1, 2, &win);
    if (!isnan(out[0]) || out[1] != 3) {
        printf("FAIL maxpool NaN: got [%g, %g], expected [nan, 3]\n", out[0], out[1]);
        failures++;
    }

    // avgpool on 1..9 (3x3), kernel 2, stride 2, padding 1: windows [-1,0] and [1,2] per axis
    const float inp[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    win = (cnn_window){.kernel = {2, 2}, .stride = {2, 2}, .padding = {1, 1}, .dilation = {1, 1},
                       .count_include_pad = 1};
    avgpool_forward_ref(out, inp, 1, 1, 3, 3, 2, 2, &win);
    expect_values("avgpool count_include_pad=1", out, (const float[]){0.25f, 1.25f, 2.75f, 7}, 4);
    win.count_include_pad = 0;
    avgpool_forward_ref(out, inp, 1, 1, 3, 3, 2, 2, &win);
    expect_values("avgpool count_include_pad=0", out, (const float[]){1, 2.5f, 5.5f, 7}, 4);
    // ceil_mode on [1,2,3,4], kernel 3, stride 2, padding 1: 3 windows starting at -1, 1, 3.
    // The last, [3,6), is clipped to input + padding, [3,5): with count_include_pad its
    // divisor is 2 (one real element, one padding), not 3.
    win = (cnn_window){.kernel = {1, 3}, .stride = {1, 2}, .padding = {0, 1}, .dilation = {1, 1},
                       .ceil_mode = 1, .count_include_pad = 1};
    avgpool_forward_ref(out, (const float[]){1, 2, 3, 4}, 1, 1, 1, 4, 1, 3, &win);
    expect_values("avgpool ceil_mode count_include_pad=1", out, (const float[]){1, 3, 2}, 3);
    win.count_include_pad = 0;
    avgpool_forward_ref(out, (const float[]){1, 2, 3, 4}, 1, 1, 1, 4, 1, 3, &win);
    expect_values("avgpool ceil_mode count_include_pad=0", out, (const float[]){1.5f, 3, 4}, 3);
    // the same along H (a 4x1 column)
    win = (cnn_window){.kernel = {3, 1}, .stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 1},
                       .ceil_mode = 1, .count_include_pad = 1};
    avgpool_forward_ref(out, (const float[]){1, 2, 3, 4}, 1, 1, 4, 1, 3, 1, &win);
    expect_values("avgpool ceil_mode count_include_pad=1 along H", out, (const float[]){1, 3, 2}, 3);

    // adaptive 5 -> 3: windows [0,2), [1,4), [3,5) on both axes; inp[y][x] = 10*y + x, so
    // out[i][j] = 10*m[i] + m[j] with window means m = {0.5, 2, 3.5}
    float grid[25];
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 5; x++) grid[y * 5 + x] = (float)(10 * y + x);
    adaptive_avgpool_forward_ref(out, grid, 1, 1, 5, 5, 3, 3);
    expect_values("adaptive_avgpool 5->3", out,
                  (const float[]){5.5f, 7, 8.5f, 20.5f, 22, 23.5f, 35.5f, 37, 38.5f}, 9);
    // to 1x1: the mean of everything, (0+...+4)*5/25 + 10*(0+...+4)*5/25 = 2 + 20
    adaptive_avgpool_forward_ref(out, grid, 1, 1, 5, 5, 1, 1);
    expect_values("adaptive_avgpool 5->1", out, (const float[]){22}, 1);
    // the fast path: 5 -> 5 (one pixel per window) bit for bit the reference, -0 and NaN
    // included; 5 -> 3 through it gives the reference's values
    grid[3] = -0.0f;
    grid[7] = NAN;
    float fast[25], ref[25];
    adaptive_avgpool_forward_ref(ref, grid, 1, 1, 5, 5, 5, 5);
    adaptive_avgpool_forward(fast, grid, 1, 1, 5, 5, 5, 5);
    if (!(memcmp(fast, ref, sizeof ref) == 0 && !signbit(fast[3]) && isnan(fast[7]))) {
        printf("FAIL adaptive_avgpool 5->5: the fast path is not the reference bit for bit\n");
        failures++;
    }
    grid[3] = 3.0f;
    grid[7] = 12.0f;   // (row 1, column 2)
    adaptive_avgpool_forward(out, grid, 1, 1, 5, 5, 3, 3);
    expect_values("adaptive_avgpool 5->3 (fast entry)", out,
                  (const float[]){5.5f, 7, 8.5f, 20.5f, 22, 23.5f, 35.5f, 37, 38.5f}, 9);
}

// maxpool_forward against maxpool_forward_ref on random windows (kernel 1-5, stride 1-3,
// padding up to half the kernel, dilation 1-2, ceil_mode, planes up to 600 wide so the row is
// cut in chunks), with NaN and -inf among the inputs: every output must be bit-identical.
static void test_maxpool_fast(void) {
    int passed = 0, cases = 60;
    for (int i = 0; i < cases; i++) {
        cnn_window win = {0};
        for (int a = 0; a < 2; a++) {
            win.kernel[a] = rng_int(1, 5);
            win.stride[a] = rng_int(1, 3);
            win.padding[a] = rng_int(0, win.kernel[a] / 2);
            win.dilation[a] = rng_int(1, 2);
        }
        win.ceil_mode = rng_int(0, 1);
        int N = rng_int(1, 2), C = rng_int(1, 4), H = rng_int(1, 20);
        int W = i < 4 ? rng_int(520, 600) : rng_int(1, 40);
        int OH = window_out_size(H, win.kernel[0], win.stride[0], win.padding[0],
                                 win.dilation[0], win.ceil_mode);
        int OW = window_out_size(W, win.kernel[1], win.stride[1], win.padding[1],
                                 win.dilation[1], win.ceil_mode);
        if (OH < 1 || OW < 1) { passed++; continue; }
        size_t n_in = (size_t)N * C * H * W, n_out = (size_t)N * C * OH * OW;
        float *inp = random_array(n_in, 1.0f);
        for (int k = 0; k < 3; k++) inp[rng_next() % n_in] = k == 0 ? NAN : -INFINITY;
        float *ref = xmalloc(n_out * sizeof(float)), *fast = xmalloc(n_out * sizeof(float));
        maxpool_forward_ref(ref, inp, N, C, H, W, OH, OW, &win);
        maxpool_forward(fast, inp, N, C, H, W, OH, OW, &win);
        if (memcmp(ref, fast, n_out * sizeof(float)) == 0) {
            passed++;
        } else {
            printf("FAIL maxpool_forward vs ref: [%d,%d,%d,%d] kernel %dx%d stride %d,%d padding "
                   "%d,%d dilation %d,%d ceil_mode %d\n", N, C, H, W, win.kernel[0],
                   win.kernel[1], win.stride[0], win.stride[1], win.padding[0], win.padding[1],
                   win.dilation[0], win.dilation[1], win.ceil_mode);
            failures++;
        }
        free(inp); free(ref); free(fast);
    }
    printf("maxpool fast vs ref: %d/%d random cases bit-identical\n", passed, cases);
}

static void test_small_ops_by_hand(void) {
    float out[8];
    // relu, in place too
    float x[5] = {-2, -0.5f, 0, 0.5f, 3};
    relu_forward_ref(out, x, 5);
    expect_values("relu", out, (const float[]){0, 0, 0, 0.5f, 3}, 5);
    relu_forward_ref(x, x, 5);
    expect_values("relu in place", x, (const float[]){0, 0, 0, 0.5f, 3}, 5);
    // add
    add_forward_ref(out, (const float[]){1, 2, 3}, (const float[]){10, -2, 0.5f}, 3);
    expect_values("add", out, (const float[]){11, 0, 3.5f}, 3);
    // softmax of [1,2,3] = e^i / (e + e^2 + e^3); a row of huge equal values stays finite
    softmax_forward_ref(out, (const float[]){1, 2, 3, 1000, 1000, -1000}, 2, 3);
    expect_values("softmax", out,
                  (const float[]){0.0900305733f, 0.244728476f, 0.665240943f, 0.5f, 0.5f, 0}, 6);
    // batchnorm: (x - 1) / sqrt(3 + 1) * 2 + 0.5 on channel 0; identity-ish on channel 1
    batchnorm_forward_ref(out, (const float[]){1, 2, 5, 7}, (const float[]){2, 1},
                          (const float[]){0.5f, 0}, (const float[]){1, 5}, (const float[]){3, 0},
                          1.0f, 1, 2, 2);
    expect_values("batchnorm", out, (const float[]){0.5f, 1.5f, 0, 2}, 4);
    // linear: [1,2,3] . [1,0,-1] + 0.5 = -1.5; [1,2,3] . [2,2,2] - 1 = 11
    const float lin_w[6] = {1, 0, -1, 2, 2, 2}, lin_b[2] = {0.5f, -1};
    linear_forward_ref(out, (const float[]){1, 2, 3}, lin_w, lin_b, 1, 3, 2);
    expect_values("linear_forward_ref", out, (const float[]){-1.5f, 11}, 2);
    linear_forward(out, (const float[]){1, 2, 3}, lin_w, lin_b, 1, 3, 2);
    expect_values("linear_forward", out, (const float[]){-1.5f, 11}, 2);
}

static void test_shortcut_by_hand(void) {
    // inp (1,2,3,3): channel 0 = 1..9, channel 1 = 11..19; stride 2 keeps the corners;
    // one zero channel before and one after -> out (1,4,2,2)
    float inp[18], out[16];
    for (int i = 0; i < 9; i++) { inp[i] = (float)(1 + i); inp[9 + i] = (float)(11 + i); }
    for (int i = 0; i < 16; i++) out[i] = -99;   // must all be overwritten
    shortcut_a_forward_ref(out, inp, 1, 2, 3, 3, 2, 1, 1);
    expect_values("shortcut_a stride 2 pad 1+1", out,
                  (const float[]){0, 0, 0, 0, 1, 3, 7, 9, 11, 13, 17, 19, 0, 0, 0, 0}, 16);
}

// conv then batchnorm == conv with folded weights (random data, with and without conv bias).
static void test_batchnorm_fold(void) {
    int N = 2, C = 3, H = 7, W = 6, K = 5;
    cnn_window win = conv_window(3, 3, 1, 1, 1, 1);
    int E = C * 9, n_out = N * K * H * W;
    float *inp = random_array((size_t)N * C * H * W, 1.0f), *weight = random_array((size_t)K * E, 0.3f);
    float *bias = random_array(K, 0.5f), *gamma = random_array(K, 2.0f);
    float *beta = random_array(K, 1.0f), *mean = random_array(K, 1.0f), *var = random_array(K, 1.0f);
    for (int k = 0; k < K; k++) var[k] = fabsf(var[k]) + 0.1f;
    float *folded_w = xmalloc((size_t)K * E * sizeof(float)), *folded_b = xmalloc(K * sizeof(float));
    float *want = xmalloc(n_out * sizeof(float)), *got = xmalloc(n_out * sizeof(float));
    for (int with_bias = 0; with_bias <= 1; with_bias++) {
        const float *b = with_bias ? bias : NULL;
        conv2d_forward_ref(want, inp, weight, b, N, C, H, W, K, H, W, &win);
        batchnorm_forward_ref(want, want, gamma, beta, mean, var, 1e-5f, N, K, H * W);
        batchnorm_fold_into_conv(folded_w, folded_b, weight, b, gamma, beta, mean, var, 1e-5f, K, E);
        conv2d_forward_ref(got, inp, folded_w, folded_b, N, C, H, W, K, H, W, &win);
        long bad = first_mismatch(got, want, n_out);
        if (bad >= 0) {
            printf("FAIL batchnorm_fold_into_conv (conv bias %s): element %ld is %.9g, conv then "
                   "batchnorm gives %.9g\n", with_bias ? "yes" : "no", bad, got[bad], want[bad]);
            failures++;
        }
    }
    free(inp); free(weight); free(bias); free(gamma); free(beta); free(mean); free(var);
    free(folded_w); free(folded_b); free(want); free(got);
}

// --- 2. fast against reference on random shapes ---------------------------------------------

typedef struct {
    int N, C, H, W, K, OH, OW;
    cnn_window win;
    int has_bias;
} conv_case;

static void print_conv_case(const conv_case *c) {
    printf("  shape: inp [%d,%d,%d,%d] -> out [%d,%d,%d,%d], weight [%d,%d,%d,%d]%s\n", c->N,
           c->C, c->H, c->W, c->N, c->K, c->OH, c->OW, c->K, c->C / c->win.groups,
           c->win.kernel[0], c->win.kernel[1], c->has_bias ? ", with bias" : ", no bias");
    printf("  stride [%d,%d] padding [%d,%d] dilation [%d,%d] groups %d\n", c->win.stride[0],
           c->win.stride[1], c->win.padding[0], c->win.padding[1], c->win.dilation[0],
           c->win.dilation[1], c->win.groups);
}

// Runs conv2d_forward and conv2d_forward_ref on random data; 1 if they agree.
static int check_conv_case(const conv_case *c) {
    int Cg = c->C / c->win.groups, CRS = Cg * c->win.kernel[0] * c->win.kernel[1];
    size_t n_out = (size_t)c->N * c->K * c->OH * c->OW;
    float *inp = random_array((size_t)c->N * c->C * c->H * c->W, 1.0f);
    float *weight = random_array((size_t)c->K * CRS, 1.0f / sqrtf((float)CRS));
    float *bias = c->has_bias ? random_array(c->K, 0.5f) : NULL;
    float *ws = xmalloc(conv2d_workspace_floats(c->C, c->H, c->W, c->OH, c->OW, &c->win) *
                        sizeof(float));
    float *ref = xmalloc(n_out * sizeof(float)), *fast = xmalloc(n_out * sizeof(float));
    for (size_t i = 0; i < n_out; i++) fast[i] = NAN;   // every element must be written
    conv2d_forward_ref(ref, inp, weight, bias, c->N, c->C, c->H, c->W, c->K, c->OH, c->OW, &c->win);
    conv2d_forward(fast, inp, weight, bias, c->N, c->C, c->H, c->W, c->K, c->OH, c->OW, &c->win, ws);
    long bad = first_mismatch(fast, ref, n_out);
    if (bad >= 0) {
        long ox = bad % c->OW, oy = bad / c->OW % c->OH, k = bad / c->OW / c->OH % c->K;
        long n = bad / c->OW / c->OH / c->K;
        printf("FAIL conv2d_forward vs conv2d_forward_ref: out[%ld,%ld,%ld,%ld] (flat %ld) is "
               "%.9g, reference %.9g\n", n, k, oy, ox, bad, fast[bad], ref[bad]);
        print_conv_case(c);
        failures++;
    }
    free(inp); free(weight); free(bias); free(ws); free(ref); free(fast);
    return bad < 0;
}

static int conv_out_size(int in, int kernel, int stride, int pad, int dilation) {
    int span = dilation * (kernel - 1) + 1;
    return in + 2 * pad < span ? 0 : (in + 2 * pad - span) / stride + 1;
}

static int random_kernel_size(void) {
    static const int sizes[] = {1, 3, 5, 7, 11};
    return sizes[rng_int(0, 4)];
}

// A random conv of at most `max_macs` multiply-accumulates.
static conv_case random_conv_case(long max_macs) {
    for (;;) {
        conv_case c = {0};
        int kind = rng_int(0, 9);   // 0-5 dense, 6-7 groups 2, 8-9 depthwise
        c.N = rng_int(1, 3);
        int Kg;
        if (kind <= 5) {
            c.win.groups = 1;
            c.C = rng_int(1, 24);
            Kg = rng_int(1, 70);
        } else if (kind <= 7) {
            c.win.groups = 2;
            c.C = 2 * rng_int(1, 8);
            Kg = rng_int(1, 20);
        } else {
            c.win.groups = rng_int(1, 12);
            c.C = c.win.groups;
            Kg = rng_int(1, 2);
        }
        c.K = Kg * c.win.groups;
        if (rng_int(0, 5) == 0) {   // the pointwise (no im2col) path
            c.win.kernel[0] = c.win.kernel[1] = 1;
            c.win.stride[0] = c.win.stride[1] = 1;
            c.win.dilation[0] = c.win.dilation[1] = rng_int(1, 2);
        } else {
            for (int a = 0; a < 2; a++) {
                c.win.kernel[a] = random_kernel_size();
                c.win.stride[a] = rng_int(1, 4);   // (2 and 4 have their own im2col loops)
                c.win.padding[a] = rng_int(0, 3);
                c.win.dilation[a] = rng_int(1, 2);
            }
        }
        c.H = rng_int(1, 40);
        c.W = rng_int(1, 40);
        c.has_bias = rng_int(0, 1);
        c.OH = conv_out_size(c.H, c.win.kernel[0], c.win.stride[0], c.win.padding[0],
                             c.win.dilation[0]);
        c.OW = conv_out_size(c.W, c.win.kernel[1], c.win.stride[1], c.win.padding[1],
                             c.win.dilation[1]);
        long macs = (long)c.N * c.K * c.OH * c.OW * (c.C / c.win.groups) * c.win.kernel[0] *
                    c.win.kernel[1];
        if (c.OH >= 1 && c.OW >= 1 && macs <= max_macs) return c;
    }
}

static void test_conv_random(void) {
    int cases = 0, passed = 0;
    for (int i = 0; i < 240; i++) {
        conv_case c = random_conv_case(1500000);
        passed += check_conv_case(&c);
        cases++;
    }
    // A few larger ones that cross every blocking boundary of the GEMM: K (rows) above one
    // 64-row tile with a tail of 2, P above one 128-column tile with a tail, and C*R*S above
    // one 256-deep slice.
    const conv_case big[] = {
        {.N = 1, .C = 32, .H = 21, .W = 19, .K = 70, .OH = 21, .OW = 19, .has_bias = 1,
         .win = {.kernel = {3, 3}, .stride = {1, 1}, .padding = {1, 1}, .dilation = {1, 1}, .groups = 1}},
        {.N = 2, .C = 300, .H = 9, .W = 15, .K = 66, .OH = 9, .OW = 15, .has_bias = 0,
         .win = {.kernel = {1, 1}, .stride = {1, 1}, .padding = {0, 0}, .dilation = {1, 1}, .groups = 1}},
        {.N = 1, .C = 3, .H = 45, .W = 47, .K = 17, .OH = 20, .OW = 21, .has_bias = 1,
         .win = {.kernel = {7, 7}, .stride = {2, 2}, .padding = {3, 3}, .dilation = {1, 1}, .groups = 1}},
        {.N = 1, .C = 64, .H = 12, .W = 12, .K = 64, .OH = 12, .OW = 12, .has_bias = 0,
         .win = {.kernel = {3, 3}, .stride = {1, 1}, .padding = {1, 1}, .dilation = {1, 1}, .groups = 4}},
    };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        passed += check_conv_case(&big[i]);
        cases++;
    }
    printf("conv2d fast vs ref: %d/%d random and blocking-boundary cases agree\n", passed, cases);
}

// conv2d_forward_fused with weights packed for each ISA, against the reference (+ residual,
// ReLU), on convs with few input channels: the shapes of the direct path (conv2d.c, on an ISA
// with cnn_f32_gemm_rows), and its edges - strides 1-4, kernels 1x1 to 11x11 (columns of one
// and two slices of K), output rows shorter and longer than a register tile, a last sliver of
// channels, padding past the kernel's reach, dilation 2 (not direct) and batches. Each ISA's
// output is also compared across 1 and 2 threads, byte for byte: with more than 4 channels
// and the AVX-512 kernels that is the direct path (2 threads, one image) against the GEMM
// (1 thread).
static void test_conv_few_channels(void) {
    const cnn_isa_id saved = cnn_kernels()->isa;
#ifdef _OPENMP
    const int saved_threads = omp_get_max_threads();
#endif
    int cases = 0, direct_isas = 0;
    for (int isa = 0; isa < CNN_ISA_COUNT; isa++) {
        if (!cnn_kernels_for((cnn_isa_id)isa)) continue;
        cnn_kernels_force((cnn_isa_id)isa);
        direct_isas += cnn_kernels()->gemm_rows != NULL;
        for (int i = 0; i < 40; i++) {
            static const int sizes[] = {1, 3, 5, 7, 11};
            conv_case c = {0};
            // one case in four: more channels, stride 1, a smaller map (on two threads, one
            // image: the direct path with up to 64 channels, compared with the GEMM of one
            // thread below)
            int wide = rng_int(0, 3) == 0;
            c.N = wide ? 1 : rng_int(1, 3);
            c.C = wide ? rng_int(5, 64) : rng_int(1, 4);
            c.K = rng_int(1, wide ? 40 : 70);
            int R = sizes[rng_int(0, wide ? 2 : 4)], S = rng_int(0, 3) ? R : sizes[rng_int(0, 4)];
            int dilation = rng_int(0, 7) ? 1 : 2;
            c.win = (cnn_window){.kernel = {R, S},
                                 .stride = {wide ? 1 : rng_int(1, 4), wide ? 1 : rng_int(1, 4)},
                                 .padding = {rng_int(0, R / 2 + 1), rng_int(0, S / 2 + 1)},
                                 .dilation = {dilation, dilation}, .groups = 1};
            c.H = rng_int(R * dilation, wide ? 24 : 60);
            c.W = rng_int(S * dilation, wide ? 24 : 90);
            c.OH = conv_out_size(c.H, R, c.win.stride[0], c.win.padding[0], dilation);
            c.OW = conv_out_size(c.W, S, c.win.stride[1], c.win.padding[1], dilation);
            c.has_bias = rng_int(0, 1);
            int with_residual = rng_int(0, 1), relu = rng_int(0, 1);
            int CRS = c.C * R * S;
            size_t n_out = (size_t)c.N * c.K * c.OH * c.OW;
            float *inp = random_array((size_t)c.N * c.C * c.H * c.W, 1.0f);
            float *weight = random_array((size_t)c.K * CRS, 1.0f / sqrtf((float)CRS));
            float *bias = c.has_bias ? random_array(c.K, 0.5f) : NULL;
            float *residual = with_residual ? random_array(n_out, 1.0f) : NULL;
            float *packed_data = xmalloc(sgemm_packed_a_floats(c.K, CRS) * sizeof(float));
            sgemm_packed_a packed = sgemm_pack_a(packed_data, c.K, CRS, weight, CRS);
            float *ws = xmalloc((conv2d_workspace_floats(c.C, c.H, c.W, c.OH, c.OW, &c.win) + 1) *
                                sizeof(float));
            float *ref = xmalloc(n_out * sizeof(float)), *fast = xmalloc(n_out * sizeof(float));
            conv2d_forward_ref(ref, inp, weight, bias, c.N, c.C, c.H, c.W, c.K, c.OH, c.OW, &c.win);
            for (size_t j = 0; j < n_out; j++) {
                float v = ref[j] + (residual ? residual[j] : 0.0f);
                ref[j] = relu && v < 0.0f ? 0.0f : v;
            }
            for (int threads = 1; threads <= 2; threads++) {
#ifdef _OPENMP
                omp_set_num_threads(threads);
#endif
                float *got = threads == 1 ? fast : xmalloc(n_out * sizeof(float));
                for (size_t j = 0; j < n_out; j++) got[j] = NAN;   // every element written
                conv2d_forward_fused(got, inp, NULL, &packed, bias, c.N, c.C, c.H, c.W, c.K, c.OH,
                                     c.OW, &c.win, residual, relu, ws);
                long bad = first_mismatch(got, ref, n_out);
                if (bad >= 0 || (threads == 2 && memcmp(got, fast, n_out * sizeof(float)) != 0)) {
                    printf("FAIL conv2d_forward_fused (%s, %d thread(s), residual %d, relu %d): "
                           "%s\n", cnn_kernels()->name, threads, with_residual, relu,
                           bad >= 0 ? "differs from the reference" : "differs from 1 thread");
                    print_conv_case(&c);
                    failures++;
                }
                if (got != fast) free(got);
            }
            free(inp); free(weight); free(bias); free(residual); free(packed_data); free(ws);
            free(ref); free(fast);
            cases++;
        }
    }
#ifdef _OPENMP
    omp_set_num_threads(saved_threads);
#endif
    cnn_kernels_force(saved);
    printf("conv2d few input channels, packed weights: %d cases agree (%d ISA(s) with the "
           "direct path)\n", cases, direct_isas);
}

static void test_linear_random(void) {
    int cases = 0, passed = 0;
    for (int i = 0; i < 80; i++) {
        int N = rng_int(1, 5), IN = rng_int(1, 300), OUT = rng_int(1, 40);
        if (i == 0) { N = 3; IN = 2048; OUT = 23; }   // one long dot product
        int has_bias = rng_int(0, 1);
        float *inp = random_array((size_t)N * IN, 1.0f);
        float *weight = random_array((size_t)OUT * IN, 1.0f / sqrtf((float)IN));
        float *bias = has_bias ? random_array(OUT, 0.5f) : NULL;
        float *ref = xmalloc((size_t)N * OUT * sizeof(float)), *fast = xmalloc((size_t)N * OUT * sizeof(float));
        linear_forward_ref(ref, inp, weight, bias, N, IN, OUT);
        linear_forward(fast, inp, weight, bias, N, IN, OUT);
        long bad = first_mismatch(fast, ref, (size_t)N * OUT);
        if (bad >= 0) {
            printf("FAIL linear_forward vs linear_forward_ref: out[%ld,%ld] is %.9g, reference "
                   "%.9g\n  shape: inp [%d,%d], weight [%d,%d], %s\n", bad / OUT, bad % OUT,
                   fast[bad], ref[bad], N, IN, OUT, IN, has_bias ? "with bias" : "no bias");
            failures++;
        } else {
            passed++;
        }
        cases++;
        free(inp); free(weight); free(bias); free(ref); free(fast);
    }
    printf("linear fast vs ref: %d/%d random cases agree\n", passed, cases);
}

static void test_sgemm_random(void) {
    int cases = 0, passed = 0;
    for (int i = 0; i < 60; i++) {
        int M = rng_int(1, 90), N = rng_int(1, 300), K = rng_int(0, 600);
        int lda = K + rng_int(0, 3), ldb = N + rng_int(0, 3), ldc = N + rng_int(0, 3);
        int accumulate = rng_int(0, 1);
        if (i < 2) { K = 0; accumulate = i; }   // K = 0: C zeroed, or left alone
        float *A = random_array((size_t)M * lda, 1.0f / sqrtf((float)(K + 1)));
        float *B = random_array((size_t)K * ldb + 1, 1.0f);
        float *C_ref = random_array((size_t)M * ldc, 1.0f);
        float *C_fast = xmalloc((size_t)M * ldc * sizeof(float));
        memcpy(C_fast, C_ref, (size_t)M * ldc * sizeof(float));
        sgemm_ref(M, N, K, A, lda, B, ldb, C_ref, ldc, accumulate);
        sgemm(M, N, K, A, lda, B, ldb, C_fast, ldc, accumulate);
        // compares the padding columns too: sgemm must leave them alone
        long bad = first_mismatch(C_fast, C_ref, (size_t)M * ldc);
        if (bad >= 0) {
            printf("FAIL sgemm vs sgemm_ref: C[%ld,%ld] is %.9g, reference %.9g\n  M=%d N=%d K=%d "
                   "lda=%d ldb=%d ldc=%d accumulate=%d\n", bad / ldc, bad % ldc, C_fast[bad],
                   C_ref[bad], M, N, K, lda, ldb, ldc, accumulate);
            failures++;
        } else {
            passed++;
        }
        cases++;
        free(A); free(B); free(C_ref); free(C_fast);
    }
    printf("sgemm fast vs ref: %d/%d random cases agree\n", passed, cases);
}

// --- 3. thread-count independence -----------------------------------------------------------

#ifdef _OPENMP
static void test_thread_independence(void) {
    const conv_case cases[] = {
        {.N = 2, .C = 16, .H = 30, .W = 30, .K = 40, .OH = 30, .OW = 30, .has_bias = 1,
         .win = {.kernel = {3, 3}, .stride = {1, 1}, .padding = {1, 1}, .dilation = {1, 1}, .groups = 1}},
        {.N = 2, .C = 24, .H = 16, .W = 16, .K = 24, .OH = 8, .OW = 8, .has_bias = 0,
         .win = {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .dilation = {1, 1}, .groups = 24}},
        // one image: on 2 threads the product is split into tiles instead of images
        {.N = 1, .C = 32, .H = 40, .W = 40, .K = 48, .OH = 40, .OW = 40, .has_bias = 1,
         .win = {.kernel = {3, 3}, .stride = {1, 1}, .padding = {1, 1}, .dilation = {1, 1}, .groups = 1}},
    };
    int saved = omp_get_max_threads();
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const conv_case *c = &cases[ci];
        int CRS = c->C / c->win.groups * c->win.kernel[0] * c->win.kernel[1];
        size_t n_out = (size_t)c->N * c->K * c->OH * c->OW;
        float *inp = random_array((size_t)c->N * c->C * c->H * c->W, 1.0f);
        float *weight = random_array((size_t)c->K * CRS, 0.2f);
        float *bias = c->has_bias ? random_array(c->K, 0.5f) : NULL;
        float *ws = xmalloc(conv2d_workspace_floats(c->C, c->H, c->W, c->OH, c->OW, &c->win) *
                            sizeof(float));
        float *one = xmalloc(n_out * sizeof(float)), *two = xmalloc(n_out * sizeof(float));
        omp_set_num_threads(1);
        conv2d_forward(one, inp, weight, bias, c->N, c->C, c->H, c->W, c->K, c->OH, c->OW, &c->win, ws);
        omp_set_num_threads(2);
        conv2d_forward(two, inp, weight, bias, c->N, c->C, c->H, c->W, c->K, c->OH, c->OW, &c->win, ws);
        if (memcmp(one, two, n_out * sizeof(float)) != 0) {
            printf("FAIL conv2d_forward differs between 1 and 2 threads\n");
            print_conv_case(c);
            failures++;
        }
        free(inp); free(weight); free(bias); free(ws); free(one); free(two);
    }
    {
        int N = 3, IN = 700, OUT = 50;
        float *inp = random_array((size_t)N * IN, 1.0f), *weight = random_array((size_t)OUT * IN, 0.05f);
        float one[150], two[150];
        omp_set_num_threads(1);
        linear_forward(one, inp, weight, NULL, N, IN, OUT);
        omp_set_num_threads(2);
        linear_forward(two, inp, weight, NULL, N, IN, OUT);
        if (memcmp(one, two, sizeof one) != 0) {
            printf("FAIL linear_forward differs between 1 and 2 threads (N=%d IN=%d OUT=%d)\n", N,
                   IN, OUT);
            failures++;
        }
        free(inp); free(weight);
    }
    omp_set_num_threads(saved);
    printf("thread independence: checked conv2d (dense, depthwise) and linear on 1 vs 2 threads\n");
}
#endif

int main(void) {
    test_conv_by_hand();
    test_pool_by_hand();
    test_maxpool_fast();
    test_small_ops_by_hand();
    test_shortcut_by_hand();
    test_batchnorm_fold();
    test_conv_random();
    test_conv_few_channels();
    test_linear_random();
    test_sgemm_random();
#ifdef _OPENMP
    test_thread_independence();
#endif
    if (failures) {
        printf("test_ops: %d FAILED\n", failures);
        return 1;
    }
    printf("test_ops: all passed\n");
    return 0;
}
