// f32-gemm-6x16-avx2.c - AVX2 + FMA3 gemm micro-kernel: a 6 x 16 tile of C from packed panels,
// contract in kernels.h. Compiled with -mavx2 -mfma (Makefile); dispatch.c calls it only on a
// CPU that has both.
//
// Registers: 12 accumulators (6 rows x 2 vectors of 8), 2 for the packed row of B and 1 for
// the broadcast element of A: 15 of the 16 ymm registers. Per step of p: 2 loads of B,
// 6 broadcasts of A, 12 FMAs. A full tile is finished (bias, residual, ReLU) in registers in
// the last slice of K; partial and transposed tiles go through the shared edge path.
#if defined(__x86_64__)
#include <assert.h>
#include <immintrin.h>
#include "kernels.h"

enum { MR = 6, NR = 16 };

// Vector v (columns 8v..8v+7) of row i of a full tile, finished (kernels.h): bias, residual,
// then ReLU as x < 0 ? 0 : x (a blend, so NaN and -0 pass as they are). By value: an
// accumulator whose address is taken is kept in memory, stored at every step of the loop.
static inline __m256 finish_vector(const cnn_gemm_finish *f, int i, int v, __m256 x) {
    const __m256 zero = _mm256_setzero_ps();
    if (f->bias) x = _mm256_add_ps(x, _mm256_broadcast_ss(f->bias + i));
    if (f->residual) {
        x = _mm256_add_ps(x, _mm256_loadu_ps(f->residual + (size_t)i * f->ldr + 8 * v));
    }
    if (f->relu) x = _mm256_blendv_ps(x, zero, _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
    return x;
}

void cnn_f32_gemm_6x16__avx2(int mr, int nr, int kc, const float *restrict a_packed,
                             const float *restrict b_packed, float *restrict c, size_t c_stride,
                             int accumulate, const cnn_gemm_finish *finish, const void *ahead,
                             int ahead_lines) {
    // a_packed is (kc, 6), b_packed is (kc, 16), c is (mr, nr) with row stride c_stride
    assert(mr >= 1 && mr <= MR && nr >= 1 && nr <= NR && kc >= 1);
    assert(ahead_lines >= 0 && (ahead || ahead_lines == 0));
    const char *next = ahead;   // the prefetch hint: a line per step of p
    __m256 acc[MR][2];
    #pragma GCC unroll 6
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int p = 0; p < kc; p++) {
        if (p < ahead_lines) _mm_prefetch(next + (size_t)p * 64, _MM_HINT_T1);
        __m256 b0 = _mm256_loadu_ps(b_packed), b1 = _mm256_loadu_ps(b_packed + 8);
        #pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            __m256 a = _mm256_broadcast_ss(a_packed + i);
            acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
        }
        a_packed += MR;
        b_packed += NR;
    }
    if (mr == MR && nr == NR && !(finish && finish->out)) {   // (a transposed tile: the edge path)
        #pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            float *c_row = c + (size_t)i * c_stride;
            if (accumulate) {
                acc[i][0] = _mm256_add_ps(_mm256_loadu_ps(c_row), acc[i][0]);
                acc[i][1] = _mm256_add_ps(_mm256_loadu_ps(c_row + 8), acc[i][1]);
            }
            if (finish) {
                acc[i][0] = finish_vector(finish, i, 0, acc[i][0]);
                acc[i][1] = finish_vector(finish, i, 1, acc[i][1]);
            }
            _mm256_storeu_ps(c_row, acc[i][0]);
            _mm256_storeu_ps(c_row + 8, acc[i][1]);
        }
        return;
    }
    float tile[MR][NR];   // partial or transposed tile: through the shared edge path
    #pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        _mm256_storeu_ps(&tile[i][0], acc[i][0]);
        _mm256_storeu_ps(&tile[i][8], acc[i][1]);
    }
    cnn_gemm_store_edge(mr, nr, &tile[0][0], NR, c, c_stride, accumulate, finish);
}
#endif
