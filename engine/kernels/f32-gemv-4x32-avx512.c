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

void cnn_f32_gemv_4x32__avx512(int rows, int n, const float *restrict w, size_t w_stride,
                               const float *restrict x, float *restrict y) {
    // w is (rows, n) with row stride w_stride, x is (n), y is (rows)
    assert(rows >= 1 && rows <= CNN_GEMV_ROWS && n >= 0);
    // Missing rows of a partial block re-read row 0 (already in cache); their sums are dropped.
    const float *w_row[CNN_GEMV_ROWS];
    for (int r = 0; r < CNN_GEMV_ROWS; r++) w_row[r] = r < rows ? w + r * w_stride : w;
    __m512 acc[CNN_GEMV_ROWS][2];
    for (int r = 0; r < CNN_GEMV_ROWS; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
        #pragma GCC unroll 4
        for (int r = 0; r < CNN_GEMV_ROWS; r++) {
            acc[r][0] = _mm512_fmadd_ps(_mm512_loadu_ps(w_row[r] + i), x0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(_mm512_loadu_ps(w_row[r] + i + 16), x1, acc[r][1]);
        }
    }
    for (; i < n; i += 16) {   // the tail, 16 lanes at a time into the first accumulator
        int left = n - i;
        __mmask16 mask = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
        __m512 xt = _mm512_maskz_loadu_ps(mask, x + i);
        #pragma GCC unroll 4
        for (int r = 0; r < CNN_GEMV_ROWS; r++) {
            acc[r][0] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, w_row[r] + i), xt, acc[r][0]);
        }
    }
    for (int r = 0; r < rows; r++) y[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
}
#endif
