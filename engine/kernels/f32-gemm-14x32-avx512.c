// f32-gemm-14x32-avx512.c - AVX-512F gemm micro-kernel: a 14 x 32 tile of C from packed
// panels, contract in kernels.h. Compiled with -mavx512f (Makefile); dispatch.c calls it only
// on a CPU (and OS) with AVX-512F state enabled.
//
// Registers: 28 accumulators (14 rows x 2 vectors of 16), 2 for the packed row of B and 1 for
// the broadcast element of A: 31 of the 32 zmm registers. Per step of p: 2 loads of B,
// 14 broadcasts of A (contiguous in the packed sliver), 28 FMAs - enough independent accumulators
// to cover the FMA latency on two ports.
// Partial tiles: a tile computes only the rows that exist in C (a sliver of 2 rows: 2 x 2 FMAs
// per step, not 14 x 2; the last sliver of M = 128 channels, or of 49 positions on a 7x7 map in
// the transposed product, has 2 and 7) and, when it has at most 16 columns, only the first
// vector of each row; the last vector's columns through masked loads and stores. Each sum is
// the one the full tile makes.
// cnn_f32_gemm_rows_14x32__avx512 is the same tile with B's rows read in place, at offsets
// the caller gives (a direct convolution's input runs, conv2d.c).
// In the last slice of K the tile is finished in registers (bias, residual, ReLU) before its
// one store, and a transposed product's tile is transposed in registers on its way to C. The
// caller's prefetch hint costs one prefetch per step of p.
#if defined(__x86_64__)
#include <assert.h>
#include <immintrin.h>
#include "kernels.h"

enum { MR = 14, NR = 32 };

// Under AddressSanitizer, which instruments every load and store, `tile` stays one function
// with plain loops: its 28 unrolled, instrumented copies took clang a minute to compile, and a
// sanitized build is for checking accesses, not for speed. The sums are the same either way.
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifdef SANITIZED
#define TILE_FUNCTION static __attribute__((noinline)) void
#define UNROLL_ROWS
#else
#define TILE_FUNCTION static inline __attribute__((always_inline)) void
#define UNROLL_ROWS _Pragma("GCC unroll 14")
#endif

// A vector of row i's sums (columns `cols` of those at `column`), finished (kernels.h): bias,
// residual, then ReLU as x < 0 ? 0 : x (a masked move, so NaN and -0 pass as they are).
static inline __m512 finish_vector(const cnn_gemm_finish *f, int i, int column, __mmask16 cols,
                                   __m512 v) {
    const __m512 zero = _mm512_setzero_ps();
    if (f->bias) v = _mm512_add_ps(v, _mm512_set1_ps(f->bias[i]));
    if (f->residual) {
        const float *r = f->residual + (size_t)i * f->ldr + column;
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(cols, r));
    }
    if (f->relu) v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
    return v;
}

// The 16 x 16 block r transposed in place (r[j] lane i = r[i] lane j before): pairs of rows
// interleaved, then pairs of pairs, then the 128-bit quarters moved twice.
static void transpose_16x16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) {   // u[4k + m], quarter q: column 4q + m of rows 4k..4k+3
        u[4 * k + 0] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
        u[4 * k + 1] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
        u[4 * k + 2] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
        u[4 * k + 3] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
    }
    for (int m = 0; m < 4; m++) {
        __m512 w0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x44);
        __m512 w1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xEE);
        __m512 w2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x44);
        __m512 w3 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xEE);
        r[m] = _mm512_shuffle_f32x4(w0, w2, 0x88);
        r[4 + m] = _mm512_shuffle_f32x4(w0, w2, 0xDD);
        r[8 + m] = _mm512_shuffle_f32x4(w1, w3, 0x88);
        r[12 + m] = _mm512_shuffle_f32x4(w1, w3, 0xDD);
    }
}

// A finished tile of a transposed product (kernels.h: finish->out): rows x nr sums in acc,
// to out transposed, 16 columns of the tile at a time through a transpose in registers; each
// column becomes a row of out (rows elements, one masked store) and is finished as one.
static void store_transposed(int rows, int nr, __m512 acc[MR][2], const cnn_gemm_finish *f) {
    const __m512 zero = _mm512_setzero_ps();
    __mmask16 positions = (__mmask16)((1u << rows) - 1);
    for (int v = 0; v * 16 < nr; v++) {
        __m512 r[16];
        for (int i = 0; i < 16; i++) r[i] = i < rows ? acc[i][v] : zero;
        transpose_16x16(r);
        for (int c = 0; c < 16 && v * 16 + c < nr; c++) {
            int j = v * 16 + c;   // the tile's column: a row of out (bias[j], residual row j)
            __m512 x = finish_vector(f, j, 0, positions, r[c]);
            _mm512_mask_storeu_ps(f->out + (size_t)j * f->ld_out, positions, x);
        }
    }
}

// The tile's first `rows` rows and first `vectors` (1 or 2) vectors of 16 columns, `nr` of
// them in C. Inlined with constant rows and vectors, so the loops unroll into straight code
// with the accumulators in registers. B's row p is at b_packed + p*NR (a packed panel), or at
// b_packed + b_offsets[p] (cnn_f32_gemm_rows_14x32__avx512: rows where they lie).
TILE_FUNCTION tile(const int rows, const int vectors, int nr, int kc,
                  const float *restrict a_packed, const float *restrict b_packed,
                  const int32_t *restrict b_offsets, float *restrict c, size_t c_stride,
                  int accumulate, const cnn_gemm_finish *finish, const char *ahead,
                  int ahead_lines) {
    __m512 acc[MR][2];
    UNROLL_ROWS
    for (int i = 0; i < rows; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int p = 0; p < kc; p++) {
        if (p < ahead_lines) _mm_prefetch(ahead + (size_t)p * 64, _MM_HINT_T1);
        const float *b_row = b_packed + (b_offsets ? (ptrdiff_t)b_offsets[p] : (ptrdiff_t)p * NR);
        __m512 b0 = _mm512_loadu_ps(b_row);
        __m512 b1 = vectors == 2 ? _mm512_loadu_ps(b_row + 16) : b0;
        UNROLL_ROWS
        for (int i = 0; i < rows; i++) {
            __m512 a = _mm512_set1_ps(a_packed[i]);
            acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
            if (vectors == 2) acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
        }
        a_packed += MR;
    }
    // Columns [0,16) and [16,32) of the tile that exist in C.
    __mmask16 cols0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
    __mmask16 cols1 = nr >= 32 ? 0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
    if (finish && finish->out) {   // a transposed product's finished tile: c is only read
        UNROLL_ROWS
        for (int i = 0; i < rows; i++) {
            const float *c_row = c + (size_t)i * c_stride;
            if (accumulate) {
                acc[i][0] = _mm512_add_ps(_mm512_maskz_loadu_ps(cols0, c_row), acc[i][0]);
                if (vectors == 2)
                    acc[i][1] = _mm512_add_ps(_mm512_maskz_loadu_ps(cols1, c_row + 16), acc[i][1]);
            }
        }
        store_transposed(rows, nr, acc, finish);
        return;
    }
    UNROLL_ROWS
    for (int i = 0; i < rows; i++) {
        float *c_row = c + (size_t)i * c_stride;
        if (accumulate) acc[i][0] = _mm512_add_ps(_mm512_maskz_loadu_ps(cols0, c_row), acc[i][0]);
        if (finish) acc[i][0] = finish_vector(finish, i, 0, cols0, acc[i][0]);
        _mm512_mask_storeu_ps(c_row, cols0, acc[i][0]);
        if (vectors == 2) {   // (only then is there a column 16: no pointer past a narrow C)
            if (accumulate) {
                acc[i][1] = _mm512_add_ps(_mm512_maskz_loadu_ps(cols1, c_row + 16), acc[i][1]);
            }
            if (finish) acc[i][1] = finish_vector(finish, i, 16, cols1, acc[i][1]);
            _mm512_mask_storeu_ps(c_row + 16, cols1, acc[i][1]);
        }
    }
}

// The tile of mr rows (1..14) and nr columns, through the copy of `tile` inlined for that
// shape (constant rows and vectors).
static inline __attribute__((always_inline)) void tile_of_shape(
    int mr, int nr, int kc, const float *restrict a_packed, const float *restrict b_packed,
    const int32_t *restrict b_offsets, float *restrict c, size_t c_stride, int accumulate,
    const cnn_gemm_finish *finish, const char *ahead, int ahead_lines) {
    const int v = nr > 16 ? 2 : 1;
#define CALL_TILE(rows, vectors)                                                            \
    tile(rows, vectors, nr, kc, a_packed, b_packed, b_offsets, c, c_stride, accumulate, finish, \
         ahead, ahead_lines)
#define ROWS(r)                                \
    case r:                                    \
        if (v == 2) CALL_TILE(r, 2);           \
        else CALL_TILE(r, 1);                  \
        break;
    switch (mr) {
        ROWS(1) ROWS(2) ROWS(3) ROWS(4) ROWS(5) ROWS(6) ROWS(7)
        ROWS(8) ROWS(9) ROWS(10) ROWS(11) ROWS(12) ROWS(13) ROWS(14)
    }
#undef ROWS
#undef CALL_TILE
}

void cnn_f32_gemm_14x32__avx512(int mr, int nr, int kc, const float *restrict a_packed,
                                const float *restrict b_packed, float *restrict c,
                                size_t c_stride, int accumulate,
                                const cnn_gemm_finish *finish, const void *ahead,
                                int ahead_lines) {
    // a_packed is (kc, 14), b_packed is (kc, 32), c is (mr, nr) with row stride c_stride
    assert(mr >= 1 && mr <= MR && nr >= 1 && nr <= NR && kc >= 1);
    assert(ahead_lines >= 0 && (ahead || ahead_lines == 0));
    tile_of_shape(mr, nr, kc, a_packed, b_packed, NULL, c, c_stride, accumulate, finish, ahead,
                  ahead_lines);
}

void cnn_f32_gemm_rows_14x32__avx512(int mr, int nr, int kc, const float *restrict a_packed,
                                     const float *b, const int32_t *restrict b_offsets,
                                     float *restrict c, size_t c_stride, int accumulate,
                                     const cnn_gemm_finish *finish) {
    // a_packed is (kc, 14), B's row p is b + b_offsets[p] (32 floats readable), c is (mr, nr)
    assert(mr >= 1 && mr <= MR && nr >= 1 && nr <= NR && kc >= 1 && b_offsets);
    tile_of_shape(mr, nr, kc, a_packed, b, b_offsets, c, c_stride, accumulate, finish, NULL, 0);
}
#endif
