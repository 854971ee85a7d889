// f32-gemm-6x16-avx2.c - AVX2 + FMA3 gemm micro-kernel: a 6 x 16 tile of C from packed panels,
// contract in kernels.h. Compiled with -mavx2 -mfma (Makefile); dispatch.c calls it only on a
// CPU that has both.
//
// Registers: 12 accumulators (6 rows x 2 vectors of 8), 2 for the packed row of B and 1 for
// the broadcast element of A: 15 of the 16 ymm registers. Per step of p: 2 loads of B,
// 6 broadcasts of A, 12 FMAs. A full tile is finished (bias, residual, ReLU) in registers in
// the last slice of K, a transposed product's full tile transposed in registers on its way to
// C (through the shared edge path that store took as long as the tile's 1536 FMAs at kc 256:
// a ResNet's 1x1 convs on 14x14 maps, K = 256, ran at half the speed of ONNX Runtime's).
// A partial sliver computes only its rows; partial columns, and partial transposed tiles, go
// through the shared edge path.
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

// The 8 x 8 block r transposed in place (r[j] lane i = r[i] lane j before): pairs of rows
// interleaved, then pairs of pairs, then the 128-bit halves exchanged.
static inline __attribute__((always_inline)) void transpose_8x8(__m256 r[8]) {
    __m256 t[8], u[8];
    #pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    #pragma GCC unroll 2
    for (int k = 0; k < 2; k++) {   // u[4k + m]: rows 4k..4k+3 of columns m and m + 4
        u[4 * k + 0] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
        u[4 * k + 1] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
        u[4 * k + 2] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
        u[4 * k + 3] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
    }
    #pragma GCC unroll 4
    for (int m = 0; m < 4; m++) {
        r[m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x20);
        r[m + 4] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x31);
    }
}

// A full finished tile of a transposed product (kernels.h: finish->out): column j of the
// 6 x 16 tile becomes row j of out, 6 consecutive floats, with bias[j] and row j of the
// residual; through two 8 x 8 transposes in registers (rows 6 and 7 zero, never stored). The
// 6 floats go as 4 + 2, so nothing past them is read or written. Inlined and unrolled whole:
// an accumulator array that is indexed by a variable, or passed to a call, lives in memory
// for the whole loop over p (that made the kernel 2x slower).
static inline __attribute__((always_inline)) void store_transposed(__m256 acc[MR][2],
                                                                   const cnn_gemm_finish *f) {
    const __m256 zero = _mm256_setzero_ps();
    #pragma GCC unroll 2
    for (int v = 0; v < 2; v++) {
        __m256 r[8];
        #pragma GCC unroll 6
        for (int i = 0; i < MR; i++) r[i] = acc[i][v];
        r[6] = r[7] = zero;
        transpose_8x8(r);
        #pragma GCC unroll 8
        for (int c = 0; c < 8; c++) {
            int j = 8 * v + c;
            __m256 x = r[c];
            if (f->bias) x = _mm256_add_ps(x, _mm256_broadcast_ss(f->bias + j));
            if (f->residual) {
                const float *res = f->residual + (size_t)j * f->ldr;
                __m128 lo = _mm_loadu_ps(res);
                __m128 hi = _mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)(res + 4));
                x = _mm256_add_ps(x, _mm256_set_m128(hi, lo));
            }
            if (f->relu) x = _mm256_blendv_ps(x, zero, _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
            float *out = f->out + (size_t)j * f->ld_out;
            _mm_storeu_ps(out, _mm256_castps256_ps128(x));
            _mm_storel_pi((__m64 *)(out + 4), _mm256_extractf128_ps(x, 1));
        }
    }
}

// The tile's first `rows` rows (a constant in each inlined copy, so the loops unroll into
// straight code with the accumulators in registers): a partial sliver - the last 4 of 64
// channels, the last position of a 7x7 map - costs its own rows' FMAs, not 6 rows'. Each
// row's sum is the same whatever `rows` is. B's row p is at b_packed + p*NR (a packed panel),
// or at b_packed + b_offsets[p] (cnn_f32_gemm_rows_6x16__avx2: rows where they lie).
static inline __attribute__((always_inline)) void tile(const int rows, int nr, int kc,
                                                       const float *restrict a_packed,
                                                       const float *restrict b_packed,
                                                       const int32_t *restrict b_offsets,
                                                       float *restrict c, size_t c_stride,
                                                       int accumulate,
                                                       const cnn_gemm_finish *finish,
                                                       const char *ahead, int ahead_lines) {
    __m256 acc[MR][2];
    #pragma GCC unroll 6
    for (int i = 0; i < rows; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int p = 0; p < kc; p++) {
        if (p < ahead_lines) _mm_prefetch(ahead + (size_t)p * 64, _MM_HINT_T1);
        const float *b_row = b_packed + (b_offsets ? (ptrdiff_t)b_offsets[p] : (ptrdiff_t)p * NR);
        __m256 b0 = _mm256_loadu_ps(b_row), b1 = _mm256_loadu_ps(b_row + 8);
        #pragma GCC unroll 6
        for (int i = 0; i < rows; i++) {
            __m256 a = _mm256_broadcast_ss(a_packed + i);
            acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
        }
        a_packed += MR;
    }
    const int transposed = finish && finish->out;
    if (nr == NR && (rows == MR || !transposed)) {
        if (accumulate) {
            #pragma GCC unroll 6
            for (int i = 0; i < rows; i++) {
                const float *c_row = c + (size_t)i * c_stride;
                acc[i][0] = _mm256_add_ps(_mm256_loadu_ps(c_row), acc[i][0]);
                acc[i][1] = _mm256_add_ps(_mm256_loadu_ps(c_row + 8), acc[i][1]);
            }
        }
        if (transposed) {   // a transposed product's tile: c is only read
            store_transposed(acc, finish);
            return;
        }
        #pragma GCC unroll 6
        for (int i = 0; i < rows; i++) {
            float *c_row = c + (size_t)i * c_stride;
            if (finish) {
                acc[i][0] = finish_vector(finish, i, 0, acc[i][0]);
                acc[i][1] = finish_vector(finish, i, 1, acc[i][1]);
            }
            _mm256_storeu_ps(c_row, acc[i][0]);
            _mm256_storeu_ps(c_row + 8, acc[i][1]);
        }
        return;
    }
    float t[MR][NR];   // partial columns, or a partial transposed tile: the shared edge path
    #pragma GCC unroll 6
    for (int i = 0; i < rows; i++) {
        _mm256_storeu_ps(&t[i][0], acc[i][0]);
        _mm256_storeu_ps(&t[i][8], acc[i][1]);
    }
    cnn_gemm_store_edge(rows, nr, &t[0][0], NR, c, c_stride, accumulate, finish);
}

// The tile of mr rows (1..6), through the copy of `tile` inlined for that row count.
static inline __attribute__((always_inline)) void tile_of_shape(
    int mr, int nr, int kc, const float *restrict a_packed, const float *restrict b_packed,
    const int32_t *restrict b_offsets, float *restrict c, size_t c_stride, int accumulate,
    const cnn_gemm_finish *finish, const char *ahead, int ahead_lines) {
#define ROWS(r)                                                                              \
    case r:                                                                                  \
        tile(r, nr, kc, a_packed, b_packed, b_offsets, c, c_stride, accumulate, finish, ahead, \
             ahead_lines);                                                                   \
        break;
    switch (mr) {
        ROWS(1) ROWS(2) ROWS(3) ROWS(4) ROWS(5) ROWS(6)
    }
#undef ROWS
}

void cnn_f32_gemm_6x16__avx2(int mr, int nr, int kc, const float *restrict a_packed,
                             const float *restrict b_packed, float *restrict c, size_t c_stride,
                             int accumulate, const cnn_gemm_finish *finish, const void *ahead,
                             int ahead_lines) {
    // a_packed is (kc, 6), b_packed is (kc, 16), c is (mr, nr) with row stride c_stride
    assert(mr >= 1 && mr <= MR && nr >= 1 && nr <= NR && kc >= 1);
    assert(ahead_lines >= 0 && (ahead || ahead_lines == 0));
    tile_of_shape(mr, nr, kc, a_packed, b_packed, NULL, c, c_stride, accumulate, finish, ahead,
                  ahead_lines);
}

void cnn_f32_gemm_rows_6x16__avx2(int mr, int nr, int kc, const float *restrict a_packed,
                                  const float *b, const int32_t *restrict b_offsets,
                                  float *restrict c, size_t c_stride, int accumulate,
                                  const cnn_gemm_finish *finish) {
    // a_packed is (kc, 6), B's row p is b + b_offsets[p] (16 floats readable), c is (mr, nr)
    assert(mr >= 1 && mr <= MR && nr >= 1 && nr <= NR && kc >= 1 && b_offsets);
    tile_of_shape(mr, nr, kc, a_packed, b, b_offsets, c, c_stride, accumulate, finish, NULL, 0);
}
#endif
