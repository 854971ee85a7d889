// test_winograd.c - the Winograd F(4x4, 3x3) convolution of engine/ops/winograd.h.
//
// 1. Hand-checkable cases with exact expected numbers (a 3x3 image under a 3x3 filter, padding
//    1 with an all-ones filter, bias and ReLU).
// 2. Against conv2d_forward_ref on 300 seeded random shapes: H, W 1..17 (smaller than one
//    4x4 tile, partial tiles at the right and bottom), padding 0..2 chosen per axis, C and K
//    1..70, N 1..3, with and without bias, residual and ReLU. Every output element must be
//    written.
// 3. Against conv2d_forward (im2col + GEMM, itself checked against the reference in
//    test_ops.c) on shapes with several blocks of tiles, a block boundary in the middle of a
//    row of tiles and blocks spanning images.
// 4. With OpenMP: bit-identical results on 1 and 2 threads.
// 5. VGG-16-like data: C = K = 64 at 56x56, weights ~ N(0, sqrt(2/(9C))) (He init),
//    nonnegative (post-ReLU-like) inputs, bias and ReLU; the errors against conv2d_forward and
//    conv2d_forward_ref are printed, and one deep layer (C = K = 512 at 14x14) against the
//    reference.
//
// Tolerance: err = max|out - ref| / max|ref| over the whole output of a case, <= 3e-5
// (TOLERANCE), the measure the full-model tests use (tests/test_reference_torchvision.py
// accepts 1e-4 per node against PyTorch). Winograd's rounding error is a few times that of
// the direct sum (its transforms multiply by up to 8 and 1/24 and then cancel): measured
// 0.5e-5 to 1.5e-5 of the output scale here, against ~5e-7 for conv2d_forward. So test_ops.c's
// per-element bound for conv2d_forward (max(1e-5, 1e-4*|ref|)) does not apply: it would fail on
// outputs near 0, whose absolute error is set by the output's scale, not their own size.
//
// Exit status 0 = all passed; every failure prints the shape and the error.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "ops.h"
#include "ops/winograd.h"

#include "check.h"

#define RNG_SEED 20240917u   // this test's stream of random shapes and values
#include "random.h"

#define TOLERANCE 3e-5

static float rng_normal(void) {   // N(0, 1), Box-Muller
    double u1 = ((double)rng_next() + 1.0) / (double)(1u << 24);   // (0, 1]
    double u2 = (double)rng_next() / (double)(1u << 24);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

// --- one case -------------------------------------------------------------------------------

typedef struct {
    int N, C, H, W, K, pad_h, pad_w, has_bias, relu;
    const float *residual;   // added before the ReLU, or NULL
} wcase;

static int out_h(const wcase *c) { return c->H + 2 * c->pad_h - 2; }
static int out_w(const wcase *c) { return c->W + 2 * c->pad_w - 2; }

static cnn_window window_of(const wcase *c) {
    cnn_window w = {.kernel = {3, 3}, .stride = {1, 1}, .padding = {c->pad_h, c->pad_w},
                    .dilation = {1, 1}, .groups = 1};
    return w;
}

// out = winograd conv (weights transformed here); every element is NaN before. Run twice:
// with U as transformed and with U packed (as a session keeps it), which must agree bit for bit.
static void run_winograd(float *out, const wcase *c, const float *inp, const float *weight,
                         const float *bias) {
    int OH = out_h(c), OW = out_w(c);
    float *U = xmalloc(winograd_weight_floats(c->K, c->C) * sizeof(float));
    float *U_packed = xmalloc(winograd_packed_weight_floats(c->K, c->C) * sizeof(float));
    float *ws = xmalloc(winograd_workspace_floats(c->N, c->C, c->H, c->W, c->K, OH, OW) *
                        sizeof(float));
    winograd_transform_weights(U, weight, c->K, c->C);
    winograd_pack_weights(U_packed, U, c->K, c->C);
    size_t n_out = (size_t)c->N * c->K * OH * OW;
    float *out_packed = xmalloc(n_out * sizeof(float));
    for (size_t i = 0; i < n_out; i++) out[i] = out_packed[i] = NAN;
    winograd_conv2d_forward(out, inp, U, 0, bias, c->N, c->C, c->H, c->W, c->K, OH, OW,
                            c->pad_h, c->pad_w, c->residual, c->relu, ws);
    winograd_conv2d_forward(out_packed, inp, U_packed, 1, bias, c->N, c->C, c->H, c->W, c->K,
                            OH, OW, c->pad_h, c->pad_w, c->residual, c->relu, ws);
    CHECK(memcmp(out, out_packed, n_out * sizeof(float)) == 0,
          "packed U: not bit-identical to U as transformed (K %d, C %d, %dx%d)", c->K, c->C,
          OH, OW);
    free(U);
    free(U_packed);
    free(out_packed);
    free(ws);
}

// ref = conv2d_forward_ref (+ ReLU), or conv2d_forward (+ ReLU) when `fast`.
static void run_im2col(float *ref, const wcase *c, const float *inp, const float *weight,
                       const float *bias, int fast) {
    int OH = out_h(c), OW = out_w(c);
    cnn_window win = window_of(c);
    if (fast) {
        float *ws = xmalloc(conv2d_workspace_floats(c->C, c->H, c->W, OH, OW, &win) * sizeof(float));
        conv2d_forward(ref, inp, weight, bias, c->N, c->C, c->H, c->W, c->K, OH, OW, &win, ws);
        free(ws);
    } else {
        conv2d_forward_ref(ref, inp, weight, bias, c->N, c->C, c->H, c->W, c->K, OH, OW, &win);
    }
    size_t n_out = (size_t)c->N * c->K * OH * OW;
    if (c->residual) add_forward_ref(ref, ref, c->residual, n_out);
    if (c->relu) relu_forward_ref(ref, ref, n_out);
}

static void print_case(const wcase *c) {
    printf("  inp [%d,%d,%d,%d] -> out [%d,%d,%d,%d], padding [%d,%d]%s%s%s\n", c->N, c->C,
           c->H, c->W, c->N, c->K, out_h(c), out_w(c), c->pad_h, c->pad_w,
           c->has_bias ? ", bias" : "", c->residual ? ", residual" : "", c->relu ? ", relu" : "");
}

// Random data through winograd and the reference (or conv2d_forward); returns the error and
// counts a failure if it is above TOLERANCE.
static double check_case(const wcase *c_in, int against_fast) {
    wcase case_with_residual = *c_in, *c = &case_with_residual;
    size_t n_inp = (size_t)c->N * c->C * c->H * c->W;
    size_t n_out = (size_t)c->N * c->K * out_h(c) * out_w(c);
    // every other case adds a residual (as a ResNet block's second conv does)
    static int with_residual = 0;
    float *residual = (with_residual ^= 1) ? random_array(n_out, 1.0f) : NULL;
    c->residual = residual;
    float *inp = random_array(n_inp, 1.0f);
    float *weight = random_array((size_t)c->K * c->C * 9, 1.0f / sqrtf(9.0f * c->C));
    float *bias = c->has_bias ? random_array(c->K, 0.5f) : NULL;
    float *got = xmalloc(n_out * sizeof(float)), *want = xmalloc(n_out * sizeof(float));
    run_winograd(got, c, inp, weight, bias);
    run_im2col(want, c, inp, weight, bias, against_fast);
    double err = rel_error(got, want, n_out);
    if (!(err <= TOLERANCE)) {
        failures++;
        printf("FAIL winograd vs %s: max|diff|/max|ref| = %.3g > %.0e\n",
               against_fast ? "conv2d_forward" : "conv2d_forward_ref", err, TOLERANCE);
        print_case(c);
    }
    free(inp); free(weight); free(bias); free(got); free(want); free(residual);
    return err;
}

// --- 1. by hand -----------------------------------------------------------------------------

static void test_by_hand(void) {
    const float inp[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    const float w[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    const float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    float out[9];
    // no padding: one output, sum of i*i for i = 1..9 = 285, + bias 0.5
    wcase c = {.N = 1, .C = 1, .H = 3, .W = 3, .K = 1, .has_bias = 1};
    run_winograd(out, &c, inp, w, (const float[]){0.5f});
    CHECK(fabsf(out[0] - 285.5f) <= 1e-4f, "3x3 * 3x3 + 0.5: got %.9g, expected 285.5", out[0]);
    // padding 1, all-ones filter: each output is the sum of its (clipped) 3x3 neighbourhood
    c = (wcase){.N = 1, .C = 1, .H = 3, .W = 3, .K = 1, .pad_h = 1, .pad_w = 1};
    run_winograd(out, &c, inp, ones, NULL);
    const float want[9] = {12, 21, 16, 27, 45, 33, 24, 39, 28};
    for (int i = 0; i < 9; i++) {
        CHECK(fabsf(out[i] - want[i]) <= 1e-5f * want[i], "padding 1, ones: out[%d] = %.9g, "
              "expected %g", i, out[i], want[i]);
    }
    // the same with bias -30 and ReLU: 45 - 30 and 33 - 30 survive, and 39 - 30 = 9
    c.has_bias = c.relu = 1;
    run_winograd(out, &c, inp, ones, (const float[]){-30.0f});
    const float want_relu[9] = {0, 0, 0, 0, 15, 3, 0, 9, 0};
    for (int i = 0; i < 9; i++) {
        CHECK(fabsf(out[i] - want_relu[i]) <= 1e-4f, "bias -30 + relu: out[%d] = %.9g, "
              "expected %g", i, out[i], want_relu[i]);
    }
    // asymmetric padding (pad_h 0, pad_w 2) on a 3x1 column: out is 1x3 and output x reads
    // input column x - 2 + s under filter column s, so only s = 2 - x meets the one real column
    c = (wcase){.N = 1, .C = 1, .H = 3, .W = 1, .K = 1, .pad_h = 0, .pad_w = 2};
    run_winograd(out, &c, (const float[]){1, 2, 3}, w, NULL);
    const float want_asym[3] = {1 * 3 + 2 * 6 + 3 * 9, 1 * 2 + 2 * 5 + 3 * 8, 1 * 1 + 2 * 4 + 3 * 7};
    for (int i = 0; i < 3; i++) {
        CHECK(fabsf(out[i] - want_asym[i]) <= 1e-5f * want_asym[i], "pad (0,2): out[%d] = %.9g, "
              "expected %g", i, out[i], want_asym[i]);
    }
    printf("by hand: 3x3 image, padding 1 with bias and relu, padding (0,2) checked\n");
}

// --- 2. random shapes against the reference -------------------------------------------------

static void test_random(void) {
    int cases = 0, passed = 0;
    double worst = 0;
    while (cases < 300) {
        wcase c = {.N = rng_int(1, 3), .C = rng_int(1, 70), .K = rng_int(1, 70),
                   .H = rng_int(1, 17), .W = rng_int(1, 17), .pad_h = rng_int(0, 2),
                   .pad_w = rng_int(0, 2), .has_bias = rng_int(0, 1), .relu = rng_int(0, 1)};
        if (cases < 40) c.C = rng_int(1, 4);   // a few cheap, shallow ones
        if (out_h(&c) < 1 || out_w(&c) < 1) continue;
        long macs = (long)c.N * c.K * c.C * 9 * out_h(&c) * out_w(&c);
        if (macs > 3000000) continue;
        int before = failures;
        double err = check_case(&c, 0);
        worst = fmax(worst, err);
        passed += failures == before;
        cases++;
    }
    printf("random vs conv2d_forward_ref: %d/%d cases within %.0e, worst error %.2e\n", passed,
           cases, TOLERANCE, worst);
}

// --- 3. several blocks of tiles against conv2d_forward --------------------------------------

static void test_blocks(void) {
    // With C + K = 320 a block holds 160 tiles (8 MB / (36*320*4 bytes), winograd.c): 3 images
    // of 12x12 tiles are 432 tiles in blocks of 160, 160 and 112, which start in the middle of
    // rows of tiles (image 1 row 1 column 4, image 2 row 2 column 8) and span two images. The second shape has partial tiles
    // on both edges and asymmetric padding.
    const wcase cases[] = {
        {.N = 3, .C = 160, .H = 45, .W = 45, .K = 160, .pad_h = 1, .pad_w = 1, .has_bias = 1, .relu = 1},
        {.N = 2, .C = 200, .H = 50, .W = 39, .K = 130, .pad_h = 2, .pad_w = 0, .has_bias = 0, .relu = 0},
    };
    double worst = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        worst = fmax(worst, check_case(&cases[i], 1));
    }
    printf("multi-block shapes vs conv2d_forward: %zu cases, worst error %.2e\n",
           sizeof cases / sizeof cases[0], worst);
}

// --- 4. thread independence -----------------------------------------------------------------

#ifdef _OPENMP
static void test_threads(void) {
    wcase c = {.N = 2, .C = 37, .H = 29, .W = 23, .K = 45, .pad_h = 1, .pad_w = 2, .has_bias = 1,
               .relu = 1};
    size_t n_out = (size_t)c.N * c.K * out_h(&c) * out_w(&c);
    float *inp = random_array((size_t)c.N * c.C * c.H * c.W, 1.0f);
    float *weight = random_array((size_t)c.K * c.C * 9, 0.1f), *bias = random_array(c.K, 0.5f);
    float *one = xmalloc(n_out * sizeof(float)), *two = xmalloc(n_out * sizeof(float));
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    run_winograd(one, &c, inp, weight, bias);
    omp_set_num_threads(2);
    run_winograd(two, &c, inp, weight, bias);
    omp_set_num_threads(saved);
    CHECK(memcmp(one, two, n_out * sizeof(float)) == 0, "winograd differs between 1 and 2 threads");
    printf("thread independence: 1 and 2 threads give bit-identical outputs\n");
    free(inp); free(weight); free(bias); free(one); free(two);
}
#endif

// --- 5. VGG-16-like data ----------------------------------------------------------------------

// One layer with He-initialised weights and nonnegative inputs (half zeros, as after a ReLU).
// Prints the error of winograd against the reference and against conv2d_forward, and of
// conv2d_forward against the reference for comparison.
static void test_realistic(const char *name, const wcase *c) {
    int OH = out_h(c), OW = out_w(c);
    size_t n_inp = (size_t)c->N * c->C * c->H * c->W, n_out = (size_t)c->N * c->K * OH * OW;
    float *inp = xmalloc(n_inp * sizeof(float));
    for (size_t i = 0; i < n_inp; i++) inp[i] = fmaxf(0.0f, rng_normal());
    float *weight = xmalloc((size_t)c->K * c->C * 9 * sizeof(float));
    float sd = sqrtf(2.0f / (9.0f * c->C));
    for (size_t i = 0; i < (size_t)c->K * c->C * 9; i++) weight[i] = sd * rng_normal();
    float *bias = xmalloc((size_t)c->K * sizeof(float));
    for (int k = 0; k < c->K; k++) bias[k] = 0.05f * rng_normal();
    float *wino = xmalloc(n_out * sizeof(float)), *fast = xmalloc(n_out * sizeof(float));
    float *ref = xmalloc(n_out * sizeof(float));
    run_winograd(wino, c, inp, weight, bias);
    run_im2col(fast, c, inp, weight, bias, 1);
    run_im2col(ref, c, inp, weight, bias, 0);
    double e_ref = rel_error(wino, ref, n_out), e_fast = rel_error(wino, fast, n_out);
    double e_im2col = rel_error(fast, ref, n_out);
    CHECK(e_ref <= TOLERANCE, "%s: winograd vs conv2d_forward_ref %.3g > %.0e", name, e_ref, TOLERANCE);
    CHECK(e_fast <= TOLERANCE, "%s: winograd vs conv2d_forward %.3g > %.0e", name, e_fast, TOLERANCE);
    printf("%s: max|diff|/max|ref|: winograd vs ref %.2e, winograd vs conv2d_forward %.2e "
           "(conv2d_forward vs ref %.2e)\n", name, e_ref, e_fast, e_im2col);
    free(inp); free(weight); free(bias); free(wino); free(fast); free(ref);
}

int main(void) {
    test_by_hand();
    test_random();
    test_blocks();
#ifdef _OPENMP
    test_threads();
#endif
    test_realistic("VGG-like 64->64 @56x56, relu",
                   &(wcase){.N = 1, .C = 64, .H = 56, .W = 56, .K = 64, .pad_h = 1, .pad_w = 1,
                            .has_bias = 1, .relu = 1});
    test_realistic("VGG-like 512->512 @14x14, relu",
                   &(wcase){.N = 1, .C = 512, .H = 14, .W = 14, .K = 512, .pad_h = 1, .pad_w = 1,
                            .has_bias = 1, .relu = 1});
    printf("%s (%d failure%s)\n", failures ? "FAILED" : "all passed", failures,
           failures == 1 ? "" : "s");
    return failures != 0;
}
