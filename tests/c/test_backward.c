// test_backward.c - the backward kernels of engine/ops.h and cnn_backward (engine/backward.c).
//
// 1. Finite differences for every backward kernel on small odd shapes: with L = sum(dout * f(x))
//    (computed in double), dL/dx[i] from (L(x + h e_i) - L(x - h e_i)) / 2h for every input
//    element i must match the kernel's dinp within 2e-3 + 2e-3*|dL/dx|. Inputs of ReLU stay
//    away from 0 and the values of a max pool are distinct by more than 2h, so no kink is
//    crossed. Every kernel is called on a dinp pre-filled with ones: it must add, not overwrite.
// 2. Hand-checked cases: the three ReLU rules, max pool ties (first maximum in window order, as
//    PyTorch) and NaN, add with both inputs the same buffer.
// 3. The fast conv2d_backward (sgemm + col2im, pointwise, depthwise) against conv2d_backward_ref
//    on seeded random shapes; bit-identical on 1 and 2 threads. A conv with a folded batch norm:
//    the backward of the folded conv equals batch norm's backward then the plain conv's.
// 4. cnn_backward on $FIXTURES/tiny_resnet.cnn (every op of the engine): directional finite
//    differences of the whole network; fast kernels = reference kernels; a lean folded-BN session
//    = keep_all; chaining through an inner node = going straight; batch of 3 = three batches of
//    1; DeconvNet/guided differ from the plain gradient where they must; clear errors.
// 5. vis/explain.h on the tiny model: bilinear upsampling (numbers from torch's interpolate),
//    CAM = the FC-weighted sum of the pooled maps, Grad-CAM's weights, the DeconvNet projection
//    helpers (a tile outside the image is grey).
//
// Exit status 0 = all passed; every failure prints the op, the shape and the first bad index.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cnnscope.h"
#include "explain.h"
#include "ops.h"

#define RNG_SEED 20240611u   // this test's stream of random shapes and values
#include "random.h"

#include "check.h"

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

// ---------------------------------------------------------------------------------------------
// 1. Finite differences per kernel.

typedef struct op_case op_case;
struct op_case {
    char name[160];
    size_t n_in, n_out;
    void (*forward)(const op_case *c, float *out, const float *inp);
    // dinp += the kernel's gradient; `inp` and `out` are the forward's
    void (*backward)(const op_case *c, float *dinp, const float *dout, const float *inp,
                     const float *out);
    int N, C, H, W, K, OH, OW;
    cnn_window win;
    const float *weight;               // conv / linear
    const float *gamma, *beta, *mean, *var;
    float eps;
    int stride, pad_before, pad_after; // shortcut_a
};

// L(x) = sum_j dout[j] * f(x)[j], in double.
static double loss(const op_case *c, const float *x, const float *dout, float *out) {
    c->forward(c, out, x);
    double l = 0;
    for (size_t j = 0; j < c->n_out; j++) l += (double)dout[j] * out[j];
    return l;
}

static void check_finite_differences(const op_case *c, float *x, float h) {
    float *out = xmalloc(c->n_out * sizeof(float));
    float *dout = random_array(c->n_out, 1.0f);
    float *dinp = xmalloc(c->n_in * sizeof(float));
    for (size_t i = 0; i < c->n_in; i++) dinp[i] = 1.0f;   // backward must accumulate
    c->forward(c, out, x);
    c->backward(c, dinp, dout, x, out);
    for (size_t i = 0; i < c->n_in; i++) {
        float saved = x[i];
        x[i] = saved + h;
        double plus = loss(c, x, dout, out);
        x[i] = saved - h;
        double minus = loss(c, x, dout, out);
        x[i] = saved;
        double numeric = (plus - minus) / (2.0 * h);
        double analytic = (double)dinp[i] - 1.0;
        if (!(fabs(analytic - numeric) <= 2e-3 + 2e-3 * fabs(numeric))) {
            printf("FAIL finite differences %s: dinp[%zu] = %.6g, numeric %.6g (of %zu inputs)\n",
                   c->name, i, analytic, numeric, c->n_in);
            failures++;
            break;
        }
    }
    free(out);
    free(dout);
    free(dinp);
}

static cnn_window make_window(int R, int S, int stride_h, int stride_w, int pad_h, int pad_w,
                              int dil, int groups) {
    cnn_window w = {.kernel = {R, S}, .stride = {stride_h, stride_w}, .padding = {pad_h, pad_w},
                    .dilation = {dil, dil}, .groups = groups};
    return w;
}

// conv2d
static void conv_fwd(const op_case *c, float *out, const float *inp) {
    conv2d_forward_ref(out, inp, c->weight, NULL, c->N, c->C, c->H, c->W, c->K, c->OH, c->OW,
                       &c->win);
}
static void conv_bwd(const op_case *c, float *dinp, const float *dout, const float *inp,
                     const float *out) {
    (void)inp; (void)out;
    conv2d_backward_ref(dinp, dout, c->weight, c->N, c->C, c->H, c->W, c->K, c->OH, c->OW,
                        &c->win);
}
static void conv_fast_bwd(const op_case *c, float *dinp, const float *dout, const float *inp,
                          const float *out) {
    (void)inp; (void)out;
    float *ws = xmalloc(conv2d_backward_workspace_floats(c->C, c->K, c->OH, c->OW, &c->win) *
                        sizeof(float));
    conv2d_backward(dinp, dout, c->weight, c->N, c->C, c->H, c->W, c->K, c->OH, c->OW, &c->win,
                    ws);
    free(ws);
}

static void fd_conv(int N, int C, int H, int W, int K, cnn_window win, int fast) {
    op_case c = {.forward = conv_fwd, .backward = fast ? conv_fast_bwd : conv_bwd, .N = N,
                 .C = C, .H = H, .W = W, .K = K, .win = win};
    c.OH = window_out_size(H, win.kernel[0], win.stride[0], win.padding[0], win.dilation[0], 0);
    c.OW = window_out_size(W, win.kernel[1], win.stride[1], win.padding[1], win.dilation[1], 0);
    snprintf(c.name, sizeof c.name,
             "conv2d_backward%s N%d C%d %dx%d K%d kernel %dx%d stride %d,%d pad %d,%d dil %d "
             "groups %d", fast ? "" : "_ref", N, C, H, W, K, win.kernel[0], win.kernel[1],
             win.stride[0], win.stride[1], win.padding[0], win.padding[1], win.dilation[0],
             win.groups);
    c.n_in = (size_t)N * C * H * W;
    c.n_out = (size_t)N * K * c.OH * c.OW;
    float *weight = random_array((size_t)K * (C / win.groups) * win.kernel[0] * win.kernel[1], 0.5f);
    c.weight = weight;
    float *x = random_array(c.n_in, 1.0f);
    check_finite_differences(&c, x, 1e-2f);
    free(weight);
    free(x);
}

// batchnorm
static void bn_fwd(const op_case *c, float *out, const float *inp) {
    batchnorm_forward_ref(out, inp, c->gamma, c->beta, c->mean, c->var, c->eps, c->N, c->C,
                          c->H * c->W);
}
static void bn_bwd(const op_case *c, float *dinp, const float *dout, const float *inp,
                   const float *out) {
    (void)inp; (void)out;
    batchnorm_backward_ref(dinp, dout, c->gamma, c->var, c->eps, c->N, c->C, c->H * c->W);
}

// relu (plain rule: the only one that is a gradient)
static void relu_fwd(const op_case *c, float *out, const float *inp) {
    relu_forward_ref(out, inp, c->n_in);
}
static void relu_bwd(const op_case *c, float *dinp, const float *dout, const float *inp,
                     const float *out) {
    (void)inp;
    relu_backward_ref(dinp, dout, out, c->n_in, CNN_RELU_PLAIN);
}

// maxpool / avgpool / adaptive avgpool
static void maxpool_fwd(const op_case *c, float *out, const float *inp) {
    maxpool_forward_ref(out, inp, c->N, c->C, c->H, c->W, c->OH, c->OW, &c->win);
}
static void maxpool_bwd(const op_case *c, float *dinp, const float *dout, const float *inp,
                        const float *out) {
    (void)out;
    maxpool_backward_ref(dinp, dout, inp, c->N, c->C, c->H, c->W, c->OH, c->OW, &c->win);
}
static void avgpool_fwd(const op_case *c, float *out, const float *inp) {
    avgpool_forward_ref(out, inp, c->N, c->C, c->H, c->W, c->OH, c->OW, &c->win);
}
static void avgpool_bwd(const op_case *c, float *dinp, const float *dout, const float *inp,
                        const float *out) {
    (void)inp; (void)out;
    avgpool_backward_ref(dinp, dout, c->N, c->C, c->H, c->W, c->OH, c->OW, &c->win);
}
static void adaptive_fwd(const op_case *c, float *out, const float *inp) {
    adaptive_avgpool_forward_ref(out, inp, c->N, c->C, c->H, c->W, c->OH, c->OW);
}
static void adaptive_bwd(const op_case *c, float *dinp, const float *dout, const float *inp,
                         const float *out) {
    (void)inp; (void)out;
    adaptive_avgpool_backward_ref(dinp, dout, c->N, c->C, c->H, c->W, c->OH, c->OW);
}

// Pools: `kind` 0 max, 1 avg, 2 adaptive. For max pools the input is a shuffled ramp with
// steps of 0.05, so with h = 1e-2 no window changes its maximum.
static void fd_pool(int kind, int N, int C, int H, int W, cnn_window win, int OH, int OW) {
    op_case c = {.N = N, .C = C, .H = H, .W = W, .win = win, .OH = OH, .OW = OW};
    const char *names[3] = {"maxpool_backward_ref", "avgpool_backward_ref",
                            "adaptive_avgpool_backward_ref"};
    if (kind < 2) {
        c.OH = window_out_size(H, win.kernel[0], win.stride[0], win.padding[0],
                               win.dilation[0], win.ceil_mode);
        c.OW = window_out_size(W, win.kernel[1], win.stride[1], win.padding[1],
                               win.dilation[1], win.ceil_mode);
    }
    c.forward = kind == 0 ? maxpool_fwd : kind == 1 ? avgpool_fwd : adaptive_fwd;
    c.backward = kind == 0 ? maxpool_bwd : kind == 1 ? avgpool_bwd : adaptive_bwd;
    snprintf(c.name, sizeof c.name,
             "%s N%d C%d %dx%d -> %dx%d kernel %dx%d stride %d pad %d dil %d ceil %d "
             "count_include_pad %d", names[kind], N, C, H, W, c.OH, c.OW, win.kernel[0],
             win.kernel[1], win.stride[0], win.padding[0], win.dilation[0], win.ceil_mode,
             win.count_include_pad);
    c.n_in = (size_t)N * C * H * W;
    c.n_out = (size_t)N * C * c.OH * c.OW;
    float *x = xmalloc(c.n_in * sizeof(float));
    for (size_t i = 0; i < c.n_in; i++) x[i] = 0.05f * (float)i - 1.0f;
    for (size_t i = c.n_in - 1; i > 0; i--) {   // Fisher-Yates
        size_t j = rng_next() % (i + 1);
        float t = x[i]; x[i] = x[j]; x[j] = t;
    }
    check_finite_differences(&c, x, 1e-2f);
    free(x);
}

// linear
static void linear_fwd(const op_case *c, float *out, const float *inp) {
    linear_forward_ref(out, inp, c->weight, NULL, c->N, c->C, c->K);
}
static void linear_bwd(const op_case *c, float *dinp, const float *dout, const float *inp,
                       const float *out) {
    (void)inp; (void)out;
    linear_backward_ref(dinp, dout, c->weight, c->N, c->C, c->K);
}

// add: the input is [a; b], two halves of n_out each
static void add_fwd(const op_case *c, float *out, const float *inp) {
    add_forward_ref(out, inp, inp + c->n_out, c->n_out);
}
static void add_bwd(const op_case *c, float *dinp, const float *dout, const float *inp,
                    const float *out) {
    (void)inp; (void)out;
    add_backward_ref(dinp, dinp + c->n_out, dout, c->n_out);
}

// softmax
static void softmax_fwd(const op_case *c, float *out, const float *inp) {
    softmax_forward_ref(out, inp, c->N, c->C);
}
static void softmax_bwd(const op_case *c, float *dinp, const float *dout, const float *inp,
                        const float *out) {
    (void)inp;
    softmax_backward_ref(dinp, dout, out, c->N, c->C);
}

// shortcut_a
static void shortcut_fwd(const op_case *c, float *out, const float *inp) {
    shortcut_a_forward_ref(out, inp, c->N, c->C, c->H, c->W, c->stride, c->pad_before,
                           c->pad_after);
}
static void shortcut_bwd(const op_case *c, float *dinp, const float *dout, const float *inp,
                         const float *out) {
    (void)inp; (void)out;
    shortcut_a_backward_ref(dinp, dout, c->N, c->C, c->H, c->W, c->stride, c->pad_before,
                            c->pad_after);
}

static void test_finite_differences(void) {
    // conv2d: reference and fast path over the shapes that matter (im2col, pointwise,
    // depthwise with a channel multiplier, groups, strides, dilation, non-square)
    for (int fast = 0; fast <= 1; fast++) {
        fd_conv(2, 3, 7, 6, 4, make_window(3, 3, 1, 1, 1, 1, 1, 1), fast);
        fd_conv(1, 2, 8, 7, 3, make_window(3, 2, 2, 1, 1, 0, 1, 1), fast);
        fd_conv(1, 3, 9, 9, 2, make_window(3, 3, 2, 2, 0, 0, 2, 1), fast);
        fd_conv(2, 4, 5, 6, 6, make_window(3, 3, 1, 1, 1, 1, 1, 2), fast);
        fd_conv(1, 3, 6, 5, 6, make_window(3, 3, 1, 1, 1, 1, 1, 3), fast);   // depthwise x2
        fd_conv(2, 5, 4, 3, 3, make_window(1, 1, 1, 1, 0, 0, 1, 1), fast);   // pointwise
        fd_conv(1, 2, 11, 10, 2, make_window(5, 5, 3, 3, 2, 2, 1, 1), fast);
        fd_conv(1, 2, 6, 6, 3, make_window(1, 1, 2, 2, 0, 0, 1, 1), fast);   // 1x1 stride 2
    }

    // batchnorm
    {
        int C = 3;
        float *gamma = random_array(C, 1.5f), *beta = random_array(C, 0.5f);
        float *mean = random_array(C, 0.5f), *var = xmalloc(C * sizeof(float));
        for (int i = 0; i < C; i++) var[i] = 0.3f + 0.5f * (rng_float() + 1.0f);
        op_case c = {.forward = bn_fwd, .backward = bn_bwd, .N = 2, .C = C, .H = 4, .W = 3,
                     .gamma = gamma, .beta = beta, .mean = mean, .var = var, .eps = 1e-5f};
        snprintf(c.name, sizeof c.name, "batchnorm_backward_ref N2 C3 4x3");
        c.n_in = c.n_out = 2 * 3 * 4 * 3;
        float *x = random_array(c.n_in, 1.0f);
        check_finite_differences(&c, x, 1e-2f);
        free(x); free(gamma); free(beta); free(mean); free(var);
    }

    // relu: inputs at least 0.05 away from the kink
    {
        op_case c = {.forward = relu_fwd, .backward = relu_bwd, .n_in = 60, .n_out = 60};
        snprintf(c.name, sizeof c.name, "relu_backward_ref (plain) n60");
        float *x = random_array(c.n_in, 1.0f);
        for (size_t i = 0; i < c.n_in; i++) x[i] += x[i] < 0 ? -0.05f : 0.05f;
        check_finite_differences(&c, x, 1e-2f);
        free(x);
    }

    // pools
    cnn_window w = make_window(3, 3, 2, 2, 1, 1, 1, 1);
    fd_pool(0, 2, 2, 7, 6, w, 0, 0);
    w = make_window(2, 2, 2, 2, 0, 0, 1, 1);
    fd_pool(0, 1, 3, 6, 6, w, 0, 0);
    w = make_window(3, 3, 2, 2, 0, 0, 1, 1);
    w.ceil_mode = 1;
    fd_pool(0, 1, 2, 8, 7, w, 0, 0);                     // ceil mode: a clipped last window
    w = make_window(3, 2, 1, 2, 1, 1, 2, 1);
    fd_pool(0, 1, 2, 7, 7, w, 0, 0);                     // dilation 2
    w = make_window(3, 3, 2, 2, 1, 1, 1, 1);
    w.count_include_pad = 1;
    fd_pool(1, 2, 2, 7, 6, w, 0, 0);
    w.count_include_pad = 0;
    fd_pool(1, 2, 2, 7, 6, w, 0, 0);
    w = make_window(2, 2, 2, 2, 1, 1, 1, 1);
    w.ceil_mode = 1;
    w.count_include_pad = 1;
    fd_pool(1, 1, 2, 6, 5, w, 0, 0);
    fd_pool(2, 2, 2, 7, 5, w, 3, 2);                     // overlapping adaptive windows
    fd_pool(2, 1, 3, 6, 6, w, 1, 1);                     // global average
    fd_pool(2, 1, 2, 4, 4, w, 6, 5);                     // upsampling adaptive windows

    // linear
    {
        float *weight = random_array(5 * 7, 0.5f);
        op_case c = {.forward = linear_fwd, .backward = linear_bwd, .N = 3, .C = 7, .K = 5,
                     .weight = weight, .n_in = 21, .n_out = 15};
        snprintf(c.name, sizeof c.name, "linear_backward_ref N3 IN7 OUT5");
        float *x = random_array(c.n_in, 1.0f);
        check_finite_differences(&c, x, 1e-2f);
        free(x);
        free(weight);
        // more than one block of columns (LINEAR_BACKWARD_COLS = 256)
        weight = random_array(3 * 300, 0.2f);
        op_case d = {.forward = linear_fwd, .backward = linear_bwd, .N = 2, .C = 300, .K = 3,
                     .weight = weight, .n_in = 600, .n_out = 6};
        snprintf(d.name, sizeof d.name, "linear_backward_ref N2 IN300 OUT3");
        x = random_array(d.n_in, 1.0f);
        check_finite_differences(&d, x, 1e-2f);
        free(x);
        free(weight);
    }

    // add, softmax, shortcut_a
    {
        op_case c = {.forward = add_fwd, .backward = add_bwd, .n_in = 40, .n_out = 20};
        snprintf(c.name, sizeof c.name, "add_backward_ref n20");
        float *x = random_array(c.n_in, 1.0f);
        check_finite_differences(&c, x, 1e-2f);
        free(x);
    }
    {
        op_case c = {.forward = softmax_fwd, .backward = softmax_bwd, .N = 3, .C = 6,
                     .n_in = 18, .n_out = 18};
        snprintf(c.name, sizeof c.name, "softmax_backward_ref N3 F6");
        float *x = random_array(c.n_in, 2.0f);
        check_finite_differences(&c, x, 1e-2f);
        free(x);
    }
    {
        op_case c = {.forward = shortcut_fwd, .backward = shortcut_bwd, .N = 2, .C = 3, .H = 7,
                     .W = 6, .stride = 2, .pad_before = 2, .pad_after = 1};
        snprintf(c.name, sizeof c.name, "shortcut_a_backward_ref N2 C3 7x6 stride 2 pad 2,1");
        c.n_in = 2 * 3 * 7 * 6;
        c.n_out = 2 * (2 + 3 + 1) * 4 * 3;
        float *x = random_array(c.n_in, 1.0f);
        check_finite_differences(&c, x, 1e-2f);
        free(x);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Hand-checked cases.

static void expect_values(const char *what, const float *got, const float *want, int n) {
    for (int i = 0; i < n; i++) {
        if (!(fabs((double)got[i] - want[i]) <= 1e-6 * (1.0 + fabs(want[i])))) {
            printf("FAIL %s: element %d is %.9g, expected %.9g\n", what, i, got[i], want[i]);
            failures++;
            return;
        }
    }
}

static void test_by_hand(void) {
    // ReLU rules: out = [2, 0, 3, 0], dout = [1, 1, -1, -1]
    const float out[4] = {2, 0, 3, 0}, dout[4] = {1, 1, -1, -1};
    float d[4] = {0};
    relu_backward_ref(d, dout, out, 4, CNN_RELU_PLAIN);
    expect_values("relu plain", d, (const float[]){1, 0, -1, 0}, 4);
    memset(d, 0, sizeof d);
    relu_backward_ref(d, dout, NULL, 4, CNN_RELU_DECONVNET);   // forward ignored
    expect_values("relu deconvnet", d, (const float[]){1, 1, 0, 0}, 4);
    memset(d, 0, sizeof d);
    relu_backward_ref(d, dout, out, 4, CNN_RELU_GUIDED);
    expect_values("relu guided", d, (const float[]){1, 0, 0, 0}, 4);

    // Max pool ties go to the first maximum in window order: a 2x2 window over
    // [[0, 0], [0, 0]] sends everything to (0,0); with a 3x3 stride-1 pad-1 pool over a 2x2
    // plane of equal values, all four windows pick (0,0).
    cnn_window w = make_window(2, 2, 2, 2, 0, 0, 1, 1);
    float zeros[4] = {0, 0, 0, 0}, g[4] = {0}, one = 1.5f;
    maxpool_backward_ref(g, &one, zeros, 1, 1, 2, 2, 1, 1, &w);
    expect_values("maxpool tie", g, (const float[]){1.5f, 0, 0, 0}, 4);
    w = make_window(3, 3, 1, 1, 1, 1, 1, 1);
    float ones4[4] = {1, 2, 3, 4};
    memset(g, 0, sizeof g);
    float same[4] = {7, 7, 7, 7};
    maxpool_backward_ref(g, ones4, same, 1, 1, 2, 2, 2, 2, &w);
    expect_values("maxpool tie, padded windows", g, (const float[]){10, 0, 0, 0}, 4);
    // A NaN wins the window; the last NaN in window order, as the forward scan
    float nans[4] = {1, NAN, NAN, 0};
    w = make_window(2, 2, 2, 2, 0, 0, 1, 1);
    memset(g, 0, sizeof g);
    maxpool_backward_ref(g, &one, nans, 1, 1, 2, 2, 1, 1, &w);
    expect_values("maxpool NaN", g, (const float[]){0, 0, 1.5f, 0}, 4);

    // add with both summands the same buffer (x + x): 2 * dout, on top of what was there
    float dx[3] = {1, 1, 1};
    add_backward_ref(dx, dx, (const float[]){0.5f, -1, 2}, 3);
    expect_values("add x + x", dx, (const float[]){2, -1, 5}, 3);

    // conv by hand: inp (1,1,3,3), weight (1,1,2,2) = [[1,2],[3,4]], stride 1: dout all ones
    // gives each input pixel the sum of the weights that touched it
    cnn_window cw = make_window(2, 2, 1, 1, 0, 0, 1, 1);
    const float weight[4] = {1, 2, 3, 4}, ones[4] = {1, 1, 1, 1};
    float gin[9] = {0}, ws[64];
    const float want[9] = {1, 3, 2, 4, 10, 6, 3, 7, 4};
    conv2d_backward_ref(gin, ones, weight, 1, 1, 3, 3, 1, 2, 2, &cw);
    expect_values("conv2d_backward_ref by hand", gin, want, 9);
    memset(gin, 0, sizeof gin);
    conv2d_backward(gin, ones, weight, 1, 1, 3, 3, 1, 2, 2, &cw, ws);
    expect_values("conv2d_backward by hand", gin, want, 9);
}

// ---------------------------------------------------------------------------------------------
// 3. Fast conv backward against the reference; folded batch norm.

static void test_conv_fast_vs_ref(void) {
    const int kernels[5] = {1, 3, 5, 7, 11};
    for (int t = 0; t < 120; t++) {
        int N = rng_int(1, 3), R = kernels[rng_int(0, 4)], S = rng_int(0, 3) ? R : rng_int(1, 5);
        int dil = rng_int(1, 2), stride = rng_int(1, 3), pad = rng_int(0, 3);
        int kind = rng_int(0, 3);   // 0, 1 groups 1; 2 groups 2; 3 depthwise
        int groups = kind < 2 ? 1 : kind == 2 ? 2 : rng_int(2, 5);
        int C = kind == 3 ? groups : groups * rng_int(1, 9);
        int K = groups * (kind == 3 ? rng_int(1, 3) : rng_int(1, 17));
        int H = rng_int(1, 23), W = rng_int(1, 23);
        if (t % 10 == 0) { R = S = 1; pad = 0; stride = 1; }   // the pointwise path
        cnn_window win = make_window(R, S, stride, stride, pad, pad, dil, groups);
        int OH = window_out_size(H, R, stride, pad, dil, 0);
        int OW = window_out_size(W, S, stride, pad, dil, 0);
        if (OH < 1 || OW < 1) continue;
        size_t n_in = (size_t)N * C * H * W, n_out = (size_t)N * K * OH * OW;
        float *weight = random_array((size_t)K * (C / groups) * R * S, 0.5f);
        float *dout = random_array(n_out, 1.0f);
        float *ref = xmalloc(n_in * sizeof(float)), *fast = xmalloc(n_in * sizeof(float));
        float *ws = xmalloc(conv2d_backward_workspace_floats(C, K, OH, OW, &win) * sizeof(float));
        for (size_t i = 0; i < n_in; i++) ref[i] = fast[i] = 0.25f;
        conv2d_backward_ref(ref, dout, weight, N, C, H, W, K, OH, OW, &win);
        conv2d_backward(fast, dout, weight, N, C, H, W, K, OH, OW, &win, ws);
        double scale = max_abs(ref, n_in);
        for (size_t i = 0; i < n_in; i++) {
            if (!(fabs((double)fast[i] - ref[i]) <= fmax(1e-5, 1e-5 * scale + 1e-4 * fabs(ref[i])))) {
                printf("FAIL conv2d_backward vs ref: N%d C%d %dx%d K%d kernel %dx%d stride %d "
                       "pad %d dil %d groups %d: dinp[%zu] = %.7g, ref %.7g\n", N, C, H, W, K, R,
                       S, stride, pad, dil, groups, i, fast[i], ref[i]);
                failures++;
                break;
            }
        }
#ifdef _OPENMP
        // bit-identical on 1 and 2 threads
        float *one = xmalloc(n_in * sizeof(float));
        for (size_t i = 0; i < n_in; i++) one[i] = fast[i] = 0.25f;
        int threads = omp_get_max_threads();
        omp_set_num_threads(1);
        conv2d_backward(one, dout, weight, N, C, H, W, K, OH, OW, &win, ws);
        omp_set_num_threads(2);
        conv2d_backward(fast, dout, weight, N, C, H, W, K, OH, OW, &win, ws);
        omp_set_num_threads(threads);
        CHECK(memcmp(one, fast, n_in * sizeof(float)) == 0,
              "conv2d_backward N%d C%d %dx%d K%d kernel %dx%d groups %d: 1 and 2 threads differ",
              N, C, H, W, K, R, S, groups);
        free(one);
#endif
        free(weight); free(dout); free(ref); free(fast); free(ws);
    }
}

static void test_folded_batchnorm(void) {
    int N = 2, C = 3, H = 6, W = 5, K = 4;
    cnn_window win = make_window(3, 3, 1, 1, 1, 1, 1, 1);
    int OH = 6, OW = 5, per_k = C * 9;
    size_t n_in = (size_t)N * C * H * W, n_out = (size_t)N * K * OH * OW;
    float *weight = random_array((size_t)K * per_k, 0.5f), *dout = random_array(n_out, 1.0f);
    float *gamma = random_array(K, 1.5f), *beta = random_array(K, 0.5f);
    float *mean = random_array(K, 0.5f), *var = xmalloc(K * sizeof(float));
    for (int k = 0; k < K; k++) var[k] = 0.2f + (rng_float() + 1.0f);
    float folded_w[4 * 27], folded_b[4];
    batchnorm_fold_into_conv(folded_w, folded_b, weight, NULL, gamma, beta, mean, var, 1e-5f, K,
                             per_k);
    float *via_bn = xmalloc(n_out * sizeof(float));
    float *split = calloc(n_in, sizeof(float)), *folded = calloc(n_in, sizeof(float));
    memset(via_bn, 0, n_out * sizeof(float));
    batchnorm_backward_ref(via_bn, dout, gamma, var, 1e-5f, N, K, OH * OW);
    conv2d_backward_ref(split, via_bn, weight, N, C, H, W, K, OH, OW, &win);
    conv2d_backward_ref(folded, dout, folded_w, N, C, H, W, K, OH, OW, &win);
    double rel = rel_error(split, folded, n_in);
    CHECK(rel <= 1e-6, "folded conv+bn backward vs bn backward then conv backward: rel %.3g", rel);
    free(weight); free(dout); free(gamma); free(beta); free(mean); free(var);
    free(via_bn); free(split); free(folded);
}

// ---------------------------------------------------------------------------------------------
// 4. cnn_backward on the tiny model.

typedef struct {
    cnn_model *m;
    int N, out, n_nodes;
    size_t per_image, n_out;
} tiny;

static cnn_session *run_session(const tiny *t, const float *x, int N, int keep_all,
                                int reference, const int *keep, int n_keep) {
    cnn_session_options o = cnn_session_defaults();
    o.keep_all = keep_all;
    o.reference = reference;
    o.keep = keep;
    o.n_keep = n_keep;
    cnn_session *s = NULL;
    if (cnn_session_create(t->m, N, &o, &s) != CNN_OK || cnn_session_run(s, x, N) != CNN_OK) {
        printf("FAIL: session: %s\n", cnn_last_error());
        failures++;
        cnn_session_free(s);
        return NULL;
    }
    return s;
}

// sum(g * output(x)) of the network, in double
static double network_loss(const tiny *t, const float *x, const float *g) {
    cnn_session *s = run_session(t, x, t->N, 0, 1, NULL, 0);
    if (!s) return NAN;
    const cnn_tensor *y = cnn_session_output(s, t->out);
    double l = 0;
    for (size_t i = 0; i < t->n_out; i++) l += (double)g[i] * y->data[i];
    cnn_session_free(s);
    return l;
}

static void test_graph(void) {
    const char *dir = getenv("FIXTURES");
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny_resnet.cnn", dir ? dir : "build/fixtures");
    tiny t = {0};
    if (cnn_model_load(path, &t.m) != CNN_OK) {
        printf("FAIL: cannot load %s: %s\n", path, cnn_last_error());
        failures++;
        return;
    }
    const cnn_model_info *info = cnn_model_get_info(t.m);
    t.N = 3;
    t.out = cnn_model_output_node(t.m);
    t.n_nodes = cnn_model_node_count(t.m);
    t.per_image = (size_t)info->channels * info->height * info->width;
    t.n_out = (size_t)t.N * info->num_classes;
    size_t n_in = t.per_image * t.N;
    float *x = random_array(n_in, 1.0f);
    float *g = random_array(t.n_out, 1.0f);
    float *dx = xmalloc(n_in * sizeof(float)), *dx_fast = xmalloc(n_in * sizeof(float));

    // every op of the engine is on the path
    int seen[CNN_OP_COUNT] = {0};
    for (int i = 0; i < t.n_nodes; i++) {
        cnn_node_info nd;
        cnn_model_node(t.m, i, &nd);
        seen[nd.op] = 1;
    }
    for (int op = 0; op < CNN_OP_COUNT; op++)
        CHECK(seen[op], "tiny_resnet.cnn has no %s node", cnn_op_name((cnn_op)op));

    // a. the plain gradient against directional finite differences: <dx, v> vs
    //    (L(x + h v) - L(x - h v)) / 2h for random directions v
    cnn_session *ref = run_session(&t, x, t.N, 1, 1, NULL, 0);
    if (!ref) return;
    cnn_status st = cnn_backward(ref, t.out, g, CNN_RELU_PLAIN, 0, dx);
    CHECK(st == CNN_OK, "cnn_backward: %s", cnn_last_error());
    float *xv = xmalloc(n_in * sizeof(float));
    for (int d = 0; d < 4; d++) {
        float *v = random_array(n_in, 1.0f);
        double h = 1e-3, analytic = 0;
        for (size_t i = 0; i < n_in; i++) analytic += (double)dx[i] * v[i];
        for (size_t i = 0; i < n_in; i++) xv[i] = x[i] + (float)h * v[i];
        double plus = network_loss(&t, xv, g);
        for (size_t i = 0; i < n_in; i++) xv[i] = x[i] - (float)h * v[i];
        double minus = network_loss(&t, xv, g);
        double numeric = (plus - minus) / (2 * h);
        CHECK(fabs(numeric - analytic) <= 1e-3 + 1e-2 * fabs(numeric),
              "tiny_resnet d(sum g*out)/dx along direction %d: backward %.6g, finite "
              "differences %.6g", d, analytic, numeric);
        free(v);
    }
    free(xv);

    // b. fast kernels = reference kernels
    cnn_session *fast = run_session(&t, x, t.N, 1, 0, NULL, 0);
    if (fast) {
        CHECK(cnn_backward(fast, t.out, g, CNN_RELU_PLAIN, 0, dx_fast) == CNN_OK, "%s",
              cnn_last_error());
        double rel = rel_error(dx_fast, dx, n_in);
        CHECK(rel <= 1e-5, "tiny_resnet backward: fast kernels vs reference: rel %.3g", rel);
    }

    // c. a lean session (BN folded, only what backward reads kept) = keep_all
    int keep[64], n_keep = 0;
    for (int i = 1; i < t.n_nodes && n_keep < 62; i++) {
        cnn_node_info nd;
        cnn_model_node(t.m, i, &nd);
        if (nd.op == CNN_OP_RELU || nd.op == CNN_OP_SOFTMAX) keep[n_keep++] = i;
        if (nd.op == CNN_OP_MAXPOOL) keep[n_keep++] = nd.inputs[0];
    }
    cnn_session *lean = run_session(&t, x, t.N, 0, 0, keep, n_keep);
    if (lean) {
        float *dx_lean = xmalloc(n_in * sizeof(float));
        CHECK(cnn_backward(lean, t.out, g, CNN_RELU_PLAIN, 0, dx_lean) == CNN_OK, "%s",
              cnn_last_error());
        double rel = rel_error(dx_lean, dx, n_in);
        CHECK(rel <= 1e-5, "tiny_resnet backward: folded-BN session vs keep_all: rel %.3g", rel);
        free(dx_lean);
        cnn_session_free(lean);
    }

    // d. chaining: output -> 'pool' -> input equals output -> input
    int pool = cnn_model_find_node(t.m, "pool");
    CHECK(pool > 0, "tiny_resnet has no node 'pool'");
    if (pool > 0) {
        cnn_node_info nd;
        cnn_model_node(t.m, pool, &nd);
        size_t n_pool = (size_t)t.N * nd.c * nd.h * nd.w;
        float *g_pool = xmalloc(n_pool * sizeof(float)), *dx_chain = xmalloc(n_in * sizeof(float));
        CHECK(cnn_backward(ref, t.out, g, CNN_RELU_PLAIN, pool, g_pool) == CNN_OK, "%s",
              cnn_last_error());
        CHECK(cnn_backward(ref, pool, g_pool, CNN_RELU_PLAIN, 0, dx_chain) == CNN_OK, "%s",
              cnn_last_error());
        double rel = rel_error(dx_chain, dx, n_in);
        CHECK(rel <= 1e-6, "tiny_resnet backward through 'pool' in two steps: rel %.3g", rel);
        free(g_pool);
        free(dx_chain);
    }

    // e. batch of 3 = three runs of 1 image
    for (int n = 0; n < t.N; n++) {
        cnn_session *one = run_session(&t, x + n * t.per_image, 1, 1, 1, NULL, 0);
        if (!one) continue;
        float *dx1 = xmalloc(t.per_image * sizeof(float));
        CHECK(cnn_backward(one, t.out, g + n * info->num_classes, CNN_RELU_PLAIN, 0, dx1) ==
              CNN_OK, "%s", cnn_last_error());
        double rel = rel_error(dx1, dx + n * t.per_image, t.per_image);
        CHECK(rel <= 1e-6, "tiny_resnet backward: image %d alone vs in the batch: rel %.3g", n,
              rel);
        free(dx1);
        cnn_session_free(one);
    }

    // f. the other rules: guided = plain where every gate passes; DeconvNet differs; with an
    //    all-positive upstream gradient at the linear layer the guided and plain rules differ
    //    only through the ReLUs' backward clamps, so both must differ from plain and from
    //    each other, and guided must be zero wherever a ReLU blocked everything (checked on
    //    the first ReLU: dx from 'relu' with a gradient that is zero where relu's out is 0).
    float *dx_deconv = xmalloc(n_in * sizeof(float)), *dx_guided = xmalloc(n_in * sizeof(float));
    CHECK(cnn_backward(ref, t.out, g, CNN_RELU_DECONVNET, 0, dx_deconv) == CNN_OK, "%s",
          cnn_last_error());
    CHECK(cnn_backward(ref, t.out, g, CNN_RELU_GUIDED, 0, dx_guided) == CNN_OK, "%s",
          cnn_last_error());
    CHECK(rel_error(dx_deconv, dx, n_in) > 1e-2, "DeconvNet equals the plain gradient");
    CHECK(rel_error(dx_guided, dx, n_in) > 1e-2, "guided equals the plain gradient");
    CHECK(rel_error(dx_guided, dx_deconv, n_in) > 1e-2, "guided equals DeconvNet");
    // from the first ReLU's output, one step: guided = max(dout,0)*(out>0) pushed through
    // bn1 and conv1; check the relu step itself through the node 'bn1'
    int relu = cnn_model_find_node(t.m, "relu"), bn1 = cnn_model_find_node(t.m, "bn1");
    if (relu > 0 && bn1 > 0) {
        const cnn_tensor *r = cnn_session_output(ref, relu);
        size_t n_r = (size_t)cnn_tensor_numel(r);
        float *gr = random_array(n_r, 1.0f), *got = xmalloc(n_r * sizeof(float));
        for (int rule = CNN_RELU_PLAIN; rule <= CNN_RELU_GUIDED; rule++) {
            CHECK(cnn_backward(ref, relu, gr, (cnn_relu_rule)rule, bn1, got) == CNN_OK, "%s",
                  cnn_last_error());
            size_t bad = n_r;
            for (size_t i = 0; i < n_r && bad == n_r; i++) {
                int pass_fwd = rule == CNN_RELU_DECONVNET || r->data[i] > 0;
                int pass_bwd = rule == CNN_RELU_PLAIN || gr[i] > 0;
                float want = pass_fwd && pass_bwd ? gr[i] : 0.0f;
                if (got[i] != want) bad = i;
            }
            CHECK(bad == n_r, "cnn_backward relu -> bn1, rule %d: element %zu wrong", rule, bad);
        }
        free(gr);
        free(got);
    }
    free(dx_deconv);
    free(dx_guided);

    // g. errors
    CHECK(cnn_backward(ref, 0, x, CNN_RELU_PLAIN, t.out, dx) == CNN_ERR_ARG,
          "backward from the input to the output must fail");
    CHECK(strstr(cnn_last_error(), "does not depend") != NULL, "message: %s", cnn_last_error());
    CHECK(cnn_backward(ref, t.out, g, (cnn_relu_rule)7, 0, dx) == CNN_ERR_ARG,
          "unknown rule must fail");
    cnn_session *folded = run_session(&t, x, t.N, 0, 0, NULL, 0);   // nothing kept but logits
    if (folded) {
        CHECK(cnn_backward(folded, t.out, g, CNN_RELU_PLAIN, 0, dx) == CNN_ERR_ARG,
              "backward over a default session must fail (activations not kept)");
        CHECK(strstr(cnn_last_error(), "keep_all") != NULL && strstr(cnn_last_error(), "'") != NULL,
              "message should name the node and keep_all: %s", cnn_last_error());
        // DeconvNet reads no ReLU output, only the max pool's input
        CHECK(cnn_backward(folded, t.out, g, CNN_RELU_DECONVNET, 0, dx) == CNN_ERR_ARG,
              "DeconvNet over a default session must fail on the max pool");
        CHECK(strstr(cnn_last_error(), "maxpool") != NULL, "message: %s", cnn_last_error());
        cnn_session_free(folded);
    }

    cnn_session_free(ref);
    cnn_session_free(fast);
    free(x); free(g); free(dx); free(dx_fast);
    cnn_model_free(t.m);
}

// ---------------------------------------------------------------------------------------------
// 5. vis/explain.h

static void test_explain(void) {
    // F.interpolate([[1,2],[3,4]], size=(4,4), mode="bilinear", align_corners=False)
    const float small[4] = {1, 2, 3, 4};
    float big[16];
    vis_resize_bilinear(big, small, 1, 2, 2, 4, 4);
    expect_values("vis_resize_bilinear 2x2 -> 4x4", big,
                  (const float[]){1, 1.25f, 1.75f, 2, 1.5f, 1.75f, 2.25f, 2.5f, 2.5f, 2.75f,
                                  3.25f, 3.5f, 3, 3.25f, 3.75f, 4}, 16);
    // 3 -> 2 (downsampling): src = 1.5 * (o + 0.5) - 0.5 = 0.25, 1.75
    const float row[3] = {0, 10, 20};
    float two[2];
    vis_resize_bilinear(two, row, 1, 1, 3, 1, 2);
    expect_values("vis_resize_bilinear 1x3 -> 1x2", two, (const float[]){2.5f, 17.5f}, 2);

    const char *dir = getenv("FIXTURES");
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny_resnet.cnn", dir ? dir : "build/fixtures");
    cnn_model *m;
    if (cnn_model_load(path, &m) != CNN_OK) {
        printf("FAIL: cannot load %s: %s\n", path, cnn_last_error());
        failures++;
        return;
    }
    const cnn_model_info *info = cnn_model_get_info(m);
    int N = 2, C = info->channels, H = info->height, W = info->width;
    size_t per_image = (size_t)C * H * W;
    float *x = random_array(per_image * N, 1.0f);
    cnn_session_options o = cnn_session_defaults();
    o.keep_all = 1;
    cnn_session *s = NULL;
    if (cnn_session_create(m, N, &o, &s) != CNN_OK || cnn_session_run(s, x, N) != CNN_OK) {
        printf("FAIL: session: %s\n", cnn_last_error());
        failures++;
        cnn_model_free(m);
        free(x);
        return;
    }
    int score = vis_explain_score_node(m), cam_layer = vis_explain_cam_layer(m);
    cnn_node_info fc, L;
    cnn_model_node(m, score, &fc);
    CHECK(strcmp(fc.name, "fc") == 0, "score node is '%s', expected fc (before the softmax)", fc.name);
    CHECK(cam_layer == cnn_model_find_node(m, "avg"), "CAM layer %d, expected 'avg'", cam_layer);
    CHECK(vis_explain_default_layer(m) == cnn_model_find_node(m, "proj_add"),
          "default Grad-CAM layer %d, expected 'proj_add' (before the pools)",
          vis_explain_default_layer(m));
    cnn_model_node(m, cam_layer, &L);
    int classes[2] = {1, 3};
    vis_explain_target target = {score, classes};
    float *cam = xmalloc(sizeof(float) * N * H * W), *want = xmalloc(sizeof(float) * N * H * W);
    CHECK(vis_explain(s, VIS_EXPLAIN_CAM, &target, -1, cam) == CNN_OK, "%s", cnn_last_error());
    // CAM by hand: sum_k fc.weight[class, k] * avg[n, k], upsampled
    cnn_tensor w;
    const cnn_tensor *A = cnn_session_output(s, cam_layer);
    CHECK(cnn_model_tensor(m, "fc.weight", &w) == CNN_OK, "%s", cnn_last_error());
    float *maps = xmalloc(sizeof(float) * N * L.h * L.w);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < L.h * L.w; i++) {
            double sum = 0;
            for (int k = 0; k < L.c; k++)
                sum += (double)w.data[classes[n] * L.c + k] * A->data[((size_t)n * L.c + k) * L.h * L.w + i];
            maps[n * L.h * L.w + i] = (float)sum;
        }
    vis_resize_bilinear(want, maps, N, L.h, L.w, H, W);
    double rel = rel_error(cam, want, (size_t)N * H * W);
    CHECK(rel <= 1e-5, "CAM vs the FC-weighted sum of '%s': rel %.3g", L.name, rel);
    // Grad-CAM at the CAM layer of a GAP + linear network: alpha_k = w[class,k] / (h*w), so
    // Grad-CAM = ReLU(CAM) / (h*w)
    float *gcam = xmalloc(sizeof(float) * N * H * W);
    CHECK(vis_explain(s, VIS_EXPLAIN_GRADCAM, &target, cam_layer, gcam) == CNN_OK, "%s",
          cnn_last_error());
    for (int n = 0; n < N; n++)
        for (int i = 0; i < L.h * L.w; i++) {
            float v = maps[n * L.h * L.w + i] / (float)(L.h * L.w);
            maps[n * L.h * L.w + i] = v > 0 ? v : 0;
        }
    vis_resize_bilinear(want, maps, N, L.h, L.w, H, W);
    rel = rel_error(gcam, want, (size_t)N * H * W);
    CHECK(rel <= 1e-5, "Grad-CAM at '%s' vs ReLU(CAM)/(h*w): rel %.3g", L.name, rel);

    // DeconvNet projections = cnn_backward with the DeconvNet rule from a one-hot
    int conv = cnn_model_find_node(m, "block.conv");
    cnn_node_info cv;
    cnn_model_node(m, conv, &cv);
    int index[2];
    CHECK(vis_explain_neuron(s, conv, 2, -1, -1, index) == CNN_OK, "%s", cnn_last_error());
    const cnn_tensor *act = cnn_session_output(s, conv);
    size_t per_node = (size_t)cv.c * cv.h * cv.w;
    for (int n = 0; n < N; n++) {   // the strongest of channel 2
        const float *plane = act->data + n * per_node + (size_t)2 * cv.h * cv.w;
        int best = 0;
        for (int i = 1; i < cv.h * cv.w; i++)
            if (plane[i] > plane[best]) best = i;
        CHECK(index[n] == 2 * cv.h * cv.w + best, "neuron index %d, expected %d", index[n],
              2 * cv.h * cv.w + best);
    }
    float *proj = xmalloc(sizeof(float) * N * per_image), *ref = xmalloc(sizeof(float) * N * per_image);
    float *seed = calloc(N * per_node, sizeof(float));
    for (int n = 0; n < N; n++) seed[n * per_node + index[n]] = 1;
    CHECK(vis_explain_projections(s, conv, index, proj) == CNN_OK, "%s", cnn_last_error());
    CHECK(cnn_backward(s, conv, seed, CNN_RELU_DECONVNET, 0, ref) == CNN_OK, "%s", cnn_last_error());
    CHECK(memcmp(proj, ref, sizeof(float) * N * per_image) == 0, "projections differ from cnn_backward");
    uint8_t tile[20 * 20 * 3];
    CHECK(vis_explain_projection_tile(tile, proj, C, H, W, -4, -4, 15, 15) == CNN_OK, "%s",
          cnn_last_error());
    CHECK(tile[0] == 128 && tile[1] == 128 && tile[2] == 128, "outside the image a tile is grey, "
          "not %d,%d,%d", tile[0], tile[1], tile[2]);

    free(x); free(cam); free(want); free(maps); free(gcam); free(proj); free(ref); free(seed);
    cnn_session_free(s);
    cnn_model_free(m);
}

int main(void) {
    test_finite_differences();
    test_by_hand();
    test_conv_fast_vs_ref();
    test_folded_batchnorm();
    test_graph();
    test_explain();
    if (failures) {
        printf("test_backward: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_backward: all passed\n");
    return 0;
}
