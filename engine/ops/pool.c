// pool.c - max, average and adaptive average pooling over H and W, with PyTorch's exact window
// rules (aten/src/ATen/native/cpu/MaxPoolKernel.cpp, AvgPoolKernel.cpp,
// AdaptiveAvgPoolKernel.cpp). Each (image, channel) plane is independent; planes are split
// across threads.
//
// Dims: N batch, C channels, H,W input size, OH,OW output size (the caller computes them with
// window_out_size, or chooses them for the adaptive pool). Window along one axis, for output
// position o: it starts at o*stride - pad in input coordinates.
#include <math.h>
#include <stdint.h>
#include "ops.h"
#include "work_share.h"

// maxpool: the window's taps are start + t*dilation for t < kernel; taps outside the input
// are padding and count as -infinity. A NaN anywhere in the window wins, as in PyTorch.
void maxpool_forward_ref(float *out, const float *inp, int N, int C, int H, int W, int OH,
                         int OW, const cnn_window *win) {
    // out is (N,C,OH,OW), inp is (N,C,H,W)
    int kh = win->kernel[0], kw = win->kernel[1];
    int sh = win->stride[0], sw = win->stride[1];
    int dh = win->dilation[0], dw = win->dilation[1];
    int planes = N * C;
    #pragma omp parallel for schedule(static) if ((size_t)planes * OH * OW > 16384)
    for (int plane = 0; plane < planes; plane++) {
        const float *in_p = inp + (size_t)plane * H * W;
        float *out_p = out + (size_t)plane * OH * OW;
        for (int oy = 0; oy < OH; oy++) {
            int y0 = oy * sh - win->padding[0];
            int y1 = y0 + (kh - 1) * dh + 1;        // one past the last tap
            if (y1 > H) y1 = H;
            while (y0 < 0) y0 += dh;                // first tap inside the input
            for (int ox = 0; ox < OW; ox++) {
                int x0 = ox * sw - win->padding[1];
                int x1 = x0 + (kw - 1) * dw + 1;
                if (x1 > W) x1 = W;
                while (x0 < 0) x0 += dw;
                float max = -INFINITY;
                for (int y = y0; y < y1; y += dh) {
                    for (int x = x0; x < x1; x += dw) {
                        float v = in_p[(size_t)y * W + x];
                        if (v > max || isnan(v)) max = v;
                    }
                }
                out_p[(size_t)oy * OW + ox] = max;
            }
        }
    }
}

// The fast path: a max over a window is a max over its rows of a max over its columns. For each
// output row, the element-wise max of the window's input rows is taken first (runs of 8
// independent lanes, which the compiler vectorises), then each output takes the max of its
// taps along that one row. Max is exact, so the result is the reference's (a NaN still wins).
enum { MAXPOOL_CHUNK = 512 };   // columns of the row max per pass (a stack buffer)

static inline float max_or_nan(float m, float v) {
    return v > m || v != v ? v : m;
}

CNN_VECTOR_CLONES
void maxpool_forward(float *out, const float *inp, int N, int C, int H, int W, int OH, int OW,
                     const cnn_window *win) {
    // out is (N,C,OH,OW), inp is (N,C,H,W)
    int kh = win->kernel[0], kw = win->kernel[1];
    int sh = win->stride[0], sw = win->stride[1];
    int dh = win->dilation[0], dw = win->dilation[1];
    if ((kw - 1) * dw + 1 > MAXPOOL_CHUNK) {   // a window wider than a chunk: not worth a path
        maxpool_forward_ref(out, inp, N, C, H, W, OH, OW, win);
        return;
    }
    work_share ws;   // planes: each thread a run, then what is left of a slower one's
    work_share_begin(&ws, (long)N * C);
    #pragma omp parallel if ((size_t)N * C * OH * OW > 16384)
    for (long plane; (plane = work_share_next(&ws)) >= 0;) {
        const float *in_p = inp + (size_t)plane * H * W;
        float *out_p = out + (size_t)plane * OH * OW;
        float row_max[MAXPOOL_CHUNK];
        for (int oy = 0; oy < OH; oy++) {
            int y0 = oy * sh - win->padding[0];
            int y1 = y0 + (kh - 1) * dh + 1;        // one past the last tap
            if (y1 > H) y1 = H;
            while (y0 < 0) y0 += dh;                // first tap inside the input
            // Output columns in chunks whose taps span at most MAXPOOL_CHUNK input columns.
            int per_chunk = (MAXPOOL_CHUNK - (kw - 1) * dw - 1) / sw + 1;
            for (int ox0 = 0; ox0 < OW; ox0 += per_chunk) {
                int ox1 = ox0 + per_chunk < OW ? ox0 + per_chunk : OW;
                int c0 = ox0 * sw - win->padding[1];             // input columns [c0, c1)
                int c1 = (ox1 - 1) * sw - win->padding[1] + (kw - 1) * dw + 1;
                if (c0 < 0) c0 = 0;
                if (c1 > W) c1 = W;
                int n = c1 > c0 ? c1 - c0 : 0;
                for (int x = 0; x < n; x++) row_max[x] = -INFINITY;
                // The input rows of the output row after next: a plane of a big map comes from
                // memory, in runs too short for the prefetchers to get ahead of (VGG-16's first
                // pool read at 10 GB/s without this).
                for (int y = y0 + 2 * sh; y < y1 + 2 * sh && y < H; y += dh) {
                    const float *ahead = in_p + (size_t)y * W + c0;
                    for (int x = 0; x < n; x += 16) __builtin_prefetch(ahead + x);
                }
                for (int y = y0; y < y1; y += dh) {
                    const float *src = in_p + (size_t)y * W + c0;
                    int x = 0;
                    for (; x + 8 <= n; x += 8) {
                        for (int j = 0; j < 8; j++)
                            row_max[x + j] = max_or_nan(row_max[x + j], src[x + j]);
                    }
                    for (; x < n; x++) row_max[x] = max_or_nan(row_max[x], src[x]);
                }
                // Then tap by tap over the outputs whose tap lies inside the input (a loop
                // over ox with a fixed stride, which vectorises), each output's taps in order.
                float *dst = out_p + (size_t)oy * OW;
                for (int ox = ox0; ox < ox1; ox++) dst[ox] = -INFINITY;
                for (int t = 0; t < kw; t++) {
                    int offset = t * dw - win->padding[1];   // tap t of output ox: ox*sw + offset
                    int lo = offset >= 0 ? 0 : (-offset + sw - 1) / sw;
                    int hi = offset >= W ? 0 : (W - 1 - offset) / sw + 1;
                    if (lo < ox0) lo = ox0;
                    if (hi > ox1) hi = ox1;
                    int base = offset - c0;   // input column x is row_max[x - c0]
                    for (int ox = lo; ox < hi; ox++)
                        dst[ox] = max_or_nan(dst[ox], row_max[ox * sw + base]);
                }
            }
        }
    }
}

// avgpool (no dilation): the window [start, start + kernel) is first clipped to the input plus
// its padding, [-pad, in + pad) (only bites in ceil_mode, where the last window may hang past
// the right padding); that clipped size is the divisor when count_include_pad. Then it is
// clipped to the input, [0, in), and that size is the divisor otherwise. An empty window
// gives 0.
void avgpool_forward_ref(float *out, const float *inp, int N, int C, int H, int W, int OH,
                         int OW, const cnn_window *win) {
    // out is (N,C,OH,OW), inp is (N,C,H,W)
    int kh = win->kernel[0], kw = win->kernel[1];
    int sh = win->stride[0], sw = win->stride[1];
    int ph = win->padding[0], pw = win->padding[1];
    int planes = N * C;
    #pragma omp parallel for schedule(static) if ((size_t)planes * OH * OW > 16384)
    for (int plane = 0; plane < planes; plane++) {
        const float *in_p = inp + (size_t)plane * H * W;
        float *out_p = out + (size_t)plane * OH * OW;
        for (int oy = 0; oy < OH; oy++) {
            int y0 = oy * sh - ph;
            int y1 = y0 + kh < H + ph ? y0 + kh : H + ph;
            int padded_h = y1 - y0;
            if (y0 < 0) y0 = 0;
            if (y1 > H) y1 = H;
            for (int ox = 0; ox < OW; ox++) {
                int x0 = ox * sw - pw;
                int x1 = x0 + kw < W + pw ? x0 + kw : W + pw;
                int padded_w = x1 - x0;
                if (x0 < 0) x0 = 0;
                if (x1 > W) x1 = W;
                if (y0 >= y1 || x0 >= x1) {
                    out_p[(size_t)oy * OW + ox] = 0.0f;
                    continue;
                }
                float sum = 0.0f;   // float, in row order, as PyTorch
                for (int y = y0; y < y1; y++) {
                    for (int x = x0; x < x1; x++) sum += in_p[(size_t)y * W + x];
                }
                int divisor = win->count_include_pad ? padded_h * padded_w : (y1 - y0) * (x1 - x0);
                out_p[(size_t)oy * OW + ox] = sum / (float)divisor;
            }
        }
    }
}

// adaptive avgpool: output o along an axis of input size `in` averages [floor(o*in/out),
// ceil((o+1)*in/out)); neighbouring windows may overlap by one when out does not divide in.
void adaptive_avgpool_forward_ref(float *out, const float *inp, int N, int C, int H, int W,
                                  int OH, int OW) {
    // out is (N,C,OH,OW), inp is (N,C,H,W)
    int planes = N * C;
    #pragma omp parallel for schedule(static) if ((size_t)planes * H * W > 65536)
    for (int plane = 0; plane < planes; plane++) {
        const float *in_p = inp + (size_t)plane * H * W;
        float *out_p = out + (size_t)plane * OH * OW;
        for (int oy = 0; oy < OH; oy++) {
            int y0 = (int)((int64_t)oy * H / OH);
            int y1 = (int)(((int64_t)(oy + 1) * H + OH - 1) / OH);
            for (int ox = 0; ox < OW; ox++) {
                int x0 = (int)((int64_t)ox * W / OW);
                int x1 = (int)(((int64_t)(ox + 1) * W + OW - 1) / OW);
                float sum = 0.0f;
                for (int y = y0; y < y1; y++) {
                    for (int x = x0; x < x1; x++) sum += in_p[(size_t)y * W + x];
                }
                // sum / kh / kw, in that order, as PyTorch's kernel
                out_p[(size_t)oy * OW + ox] = sum / (float)(y1 - y0) / (float)(x1 - x0);
            }
        }
    }
}

// The fast path: when the output is as large as the input (AlexNet's 6x6 pool after its 6x6
// features) every window is one pixel, and the reference's sum / 1 / 1 is that pixel plus 0
// (-0 becomes +0, as in the reference): one pass instead of 4 divisions per output (0.071 ->
// 0.001 ms). Other sizes run the reference.
void adaptive_avgpool_forward(float *out, const float *inp, int N, int C, int H, int W, int OH,
                              int OW) {
    // out is (N,C,OH,OW), inp is (N,C,H,W)
    if (OH != H || OW != W) {
        adaptive_avgpool_forward_ref(out, inp, N, C, H, W, OH, OW);
        return;
    }
    size_t count = (size_t)N * C * H * W;
    for (size_t i = 0; i < count; i++) out[i] = 0.0f + inp[i];
}

// ---------------------------------------------------------------------------------------------
// Backward passes: each output's gradient goes back to the input pixels its window read.

// maxpool backward: the whole gradient of an output goes to the input its window picked (the
// "switch"). The switches are found again from the forward input exactly as the forward scan
// finds the maximum: the first maximum in row-major window order wins, a NaN wins over
// anything (PyTorch's CPU kernel does the same, so ties such as a window of ReLU zeros route
// the gradient to the same pixel). DeconvNet's unpooling uses these same switches.
void maxpool_backward_ref(float *dinp, const float *dout, const float *inp, int N, int C, int H,
                          int W, int OH, int OW, const cnn_window *win) {
    // dinp, inp are (N,C,H,W), dout is (N,C,OH,OW); dinp accumulates
    int kh = win->kernel[0], kw = win->kernel[1];
    int sh = win->stride[0], sw = win->stride[1];
    int dh = win->dilation[0], dw = win->dilation[1];
    int planes = N * C;
    #pragma omp parallel for schedule(static) if ((size_t)planes * OH * OW > 16384)
    for (int plane = 0; plane < planes; plane++) {
        const float *in_p = inp + (size_t)plane * H * W;
        const float *dout_p = dout + (size_t)plane * OH * OW;
        float *din_p = dinp + (size_t)plane * H * W;
        for (int oy = 0; oy < OH; oy++) {
            int y0 = oy * sh - win->padding[0];
            int y1 = y0 + (kh - 1) * dh + 1;
            if (y1 > H) y1 = H;
            while (y0 < 0) y0 += dh;
            for (int ox = 0; ox < OW; ox++) {
                int x0 = ox * sw - win->padding[1];
                int x1 = x0 + (kw - 1) * dw + 1;
                if (x1 > W) x1 = W;
                while (x0 < 0) x0 += dw;
                if (y0 >= y1 || x0 >= x1) continue;   // a window of padding only: no switch
                size_t argmax = (size_t)y0 * W + x0;
                float max = -INFINITY;
                for (int y = y0; y < y1; y += dh) {
                    for (int x = x0; x < x1; x += dw) {
                        float v = in_p[(size_t)y * W + x];
                        if (v > max || isnan(v)) {
                            max = v;
                            argmax = (size_t)y * W + x;
                        }
                    }
                }
                din_p[argmax] += dout_p[(size_t)oy * OW + ox];
            }
        }
    }
}

// avgpool backward: each output's gradient is shared out over its window (clipped to the
// input) divided by the forward's divisor.
void avgpool_backward_ref(float *dinp, const float *dout, int N, int C, int H, int W, int OH,
                          int OW, const cnn_window *win) {
    // dinp is (N,C,H,W), dout is (N,C,OH,OW); dinp accumulates
    int kh = win->kernel[0], kw = win->kernel[1];
    int sh = win->stride[0], sw = win->stride[1];
    int ph = win->padding[0], pw = win->padding[1];
    int planes = N * C;
    #pragma omp parallel for schedule(static) if ((size_t)planes * OH * OW > 16384)
    for (int plane = 0; plane < planes; plane++) {
        const float *dout_p = dout + (size_t)plane * OH * OW;
        float *din_p = dinp + (size_t)plane * H * W;
        for (int oy = 0; oy < OH; oy++) {
            int y0 = oy * sh - ph;
            int y1 = y0 + kh < H + ph ? y0 + kh : H + ph;
            int padded_h = y1 - y0;
            if (y0 < 0) y0 = 0;
            if (y1 > H) y1 = H;
            for (int ox = 0; ox < OW; ox++) {
                int x0 = ox * sw - pw;
                int x1 = x0 + kw < W + pw ? x0 + kw : W + pw;
                int padded_w = x1 - x0;
                if (x0 < 0) x0 = 0;
                if (x1 > W) x1 = W;
                if (y0 >= y1 || x0 >= x1) continue;   // its output was a constant 0
                int divisor = win->count_include_pad ? padded_h * padded_w : (y1 - y0) * (x1 - x0);
                float share = dout_p[(size_t)oy * OW + ox] / (float)divisor;
                for (int y = y0; y < y1; y++) {
                    for (int x = x0; x < x1; x++) din_p[(size_t)y * W + x] += share;
                }
            }
        }
    }
}

// adaptive avgpool backward: the same with the adaptive windows (which may overlap).
void adaptive_avgpool_backward_ref(float *dinp, const float *dout, int N, int C, int H, int W,
                                   int OH, int OW) {
    // dinp is (N,C,H,W), dout is (N,C,OH,OW); dinp accumulates
    int planes = N * C;
    #pragma omp parallel for schedule(static) if ((size_t)planes * H * W > 65536)
    for (int plane = 0; plane < planes; plane++) {
        const float *dout_p = dout + (size_t)plane * OH * OW;
        float *din_p = dinp + (size_t)plane * H * W;
        for (int oy = 0; oy < OH; oy++) {
            int y0 = (int)((int64_t)oy * H / OH);
            int y1 = (int)(((int64_t)(oy + 1) * H + OH - 1) / OH);
            for (int ox = 0; ox < OW; ox++) {
                int x0 = (int)((int64_t)ox * W / OW);
                int x1 = (int)(((int64_t)(ox + 1) * W + OW - 1) / OW);
                float share = dout_p[(size_t)oy * OW + ox] / (float)(y1 - y0) / (float)(x1 - x0);
                for (int y = y0; y < y1; y++) {
                    for (int x = x0; x < x1; x++) din_p[(size_t)y * W + x] += share;
                }
            }
        }
    }
}
