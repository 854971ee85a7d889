// f32-gemv-4x16-avx2.c - AVX2 + FMA3 gemv micro-kernel: up to 4 weight rows against one input
// vector, contract in kernels.h. Compiled with -mavx2 -mfma (Makefile).
//
// Each row is summed in 16 lanes (two ymm accumulators: lane j takes the elements i with
// i % 16 == j); the last n % 16 elements go through masked loads (masked-off lanes read as
// zero and add nothing); then the two vectors are added and reduced in a fixed order. The loop
// is bound by memory bandwidth, not by the FMAs.
#if defined(__x86_64__)
#include <assert.h>
#include <immintrin.h>
#include <stdint.h>
#include "kernels.h"

enum { LANES = 16 };

// The sum of the 8 lanes of v, always in the same order: halves, then pairs, then the last two.
static float reduce_add(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

void cnn_f32_gemv_4x16__avx2(int rows, int n, const float *restrict w, size_t w_stride,
                             const float *restrict x, float *restrict y) {
    // w is (rows, n) with row stride w_stride, x is (n), y is (rows)
    assert(rows >= 1 && rows <= CNN_GEMV_ROWS && n >= 0);
    // Missing rows of a partial block re-read row 0 (already in cache); their sums are dropped.
    const float *w_row[CNN_GEMV_ROWS];
    for (int r = 0; r < CNN_GEMV_ROWS; r++) w_row[r] = r < rows ? w + r * w_stride : w;
    __m256 acc[CNN_GEMV_ROWS][2];
    for (int r = 0; r < CNN_GEMV_ROWS; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
        #pragma GCC unroll 4
        for (int r = 0; r < CNN_GEMV_ROWS; r++) {
            acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(w_row[r] + i), x0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(w_row[r] + i + 8), x1, acc[r][1]);
        }
    }
    // The tail, 8 lanes at a time into the first accumulator. The mask of `left` lanes is the
    // window of 8 entries of this table that starts `left` entries before its first 0.
    static const int32_t mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    for (; i < n; i += 8) {
        int left = n - i < 8 ? n - i : 8;
        __m256i mask = _mm256_loadu_si256((const __m256i *)(mask_table + 8 - left));
        __m256 xt = _mm256_maskload_ps(x + i, mask);
        #pragma GCC unroll 4
        for (int r = 0; r < CNN_GEMV_ROWS; r++) {
            acc[r][0] = _mm256_fmadd_ps(_mm256_maskload_ps(w_row[r] + i, mask), xt, acc[r][0]);
        }
    }
    for (int r = 0; r < rows; r++) y[r] = reduce_add(_mm256_add_ps(acc[r][0], acc[r][1]));
}
#endif
