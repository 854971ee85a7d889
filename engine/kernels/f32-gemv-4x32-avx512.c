// f32-gemv-4x32-avx512.c - AVX-512F gemv micro-kernel: up to 4 weight rows against one input
// vector, contract in kernels.h. Compiled with -mavx512f (Makefile).
//
// Each row is summed in 32 lanes (two zmm accumulators: lane j takes the elements i with
// i % 32 == j); the last n % 32 elements go through masked loads (the masked-off lanes read as
// zero and add nothing); then the two vectors are added and reduced in a fixed order. 8
// accumulators and 4 row streams: the loop is bound by memory bandwidth, not by the FMAs.
#if defined(__x86_64__)
#include <assert.h>
#include <immintrin.h>
#include "kernels.h"

enum { LANES = 32 };

// The kernel for `images` (1 or 2) input vectors at once: each weight vector is loaded once for
// both (at batch > 1 a block of rows is read from cache once per pair of images instead of once
// per image), and each image's sums are those the one-image kernel makes. Inlined with a
// constant count.
static inline __attribute__((always_inline)) void gemv_images(
    const int images, int rows, int n, const float *restrict w, size_t w_stride,
    const float *const x[2], float *const y[2]) {
    assert(rows >= 1 && rows <= CNN_GEMV_ROWS && n >= 0);
    // Missing rows of a partial block re-read row 0 (already in cache); their sums are dropped.
    const float *w_row[CNN_GEMV_ROWS];
    for (int r = 0; r < CNN_GEMV_ROWS; r++) w_row[r] = r < rows ? w + r * w_stride : w;
    __m512 acc[2][CNN_GEMV_ROWS][2];
    for (int b = 0; b < images; b++) {
        for (int r = 0; r < CNN_GEMV_ROWS; r++) acc[b][r][0] = acc[b][r][1] = _mm512_setzero_ps();
    }
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        __m512 x0[2], x1[2];
        for (int b = 0; b < images; b++) {
            x0[b] = _mm512_loadu_ps(x[b] + i);
            x1[b] = _mm512_loadu_ps(x[b] + i + 16);
        }
        #pragma GCC unroll 4
        for (int r = 0; r < CNN_GEMV_ROWS; r++) {
            __m512 w0 = _mm512_loadu_ps(w_row[r] + i), w1 = _mm512_loadu_ps(w_row[r] + i + 16);
            for (int b = 0; b < images; b++) {
                acc[b][r][0] = _mm512_fmadd_ps(w0, x0[b], acc[b][r][0]);
                acc[b][r][1] = _mm512_fmadd_ps(w1, x1[b], acc[b][r][1]);
            }
        }
    }
    for (; i < n; i += 16) {   // the tail, 16 lanes at a time into the first accumulator
        int left = n - i;
        __mmask16 mask = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
        __m512 xt[2];
        for (int b = 0; b < images; b++) xt[b] = _mm512_maskz_loadu_ps(mask, x[b] + i);
        #pragma GCC unroll 4
        for (int r = 0; r < CNN_GEMV_ROWS; r++) {
            __m512 wt = _mm512_maskz_loadu_ps(mask, w_row[r] + i);
            for (int b = 0; b < images; b++) {
                acc[b][r][0] = _mm512_fmadd_ps(wt, xt[b], acc[b][r][0]);
            }
        }
    }
    for (int b = 0; b < images; b++) {
        for (int r = 0; r < rows; r++) {
            y[b][r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[b][r][0], acc[b][r][1]));
        }
    }
}

void cnn_f32_gemv_4x32__avx512(int rows, int n, const float *restrict w, size_t w_stride,
                               const float *restrict x, float *restrict y) {
    // w is (rows, n) with row stride w_stride, x is (n), y is (rows)
    const float *xs[2] = {x, x};
    float *ys[2] = {y, y};
    gemv_images(1, rows, n, w, w_stride, xs, ys);
}

void cnn_f32_gemv2_4x32__avx512(int rows, int n, const float *restrict w, size_t w_stride,
                                const float *x0, const float *x1, float *y0, float *y1) {
    // as above, for two input vectors x0, x1 (n each) into y0, y1 (rows each)
    const float *xs[2] = {x0, x1};
    float *ys[2] = {y0, y1};
    gemv_images(2, rows, n, w, w_stride, xs, ys);
}
#endif
