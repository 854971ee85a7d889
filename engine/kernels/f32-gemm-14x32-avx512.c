// f32-gemm-14x32-avx512.c - AVX-512F gemm micro-kernel: a 14 x 32 tile of C from packed
// panels, contract in kernels.h. Compiled with -mavx512f (Makefile); dispatch.c calls it only
// on a CPU (and OS) with AVX-512F state enabled.
//
// Registers: 28 accumulators (14 rows x 2 vectors of 16), 2 for the packed row of B and 1 for
// the broadcast element of A: 31 of the 32 zmm registers. Per step of p: 2 loads of B,
// 14 broadcasts of A (contiguous in the packed sliver), 28 FMAs - enough independent accumulators
// to cover the FMA latency on two ports.
// Partial tiles: columns through masked loads and stores, rows by skipping the stores of rows
// >= mr (their accumulators hold sums over the zero padding of a_packed); a tile of at most 16
// columns computes only those (narrow_half).
#if defined(__x86_64__)
#include <assert.h>
#include <immintrin.h>
#include "kernels.h"

enum { MR = 14, NR = 32 };

// Columns [0, nr) of the tile for nr <= 16: the first vector of each row only (the B panel
// is still 32 wide; its second half is not read). Each sum is the one the full kernel makes.
static void narrow_half(int mr, int nr, int kc, const float *restrict a_packed,
                        const float *restrict b_packed, float *restrict c, size_t c_stride,
                        int accumulate) {
    __m512 acc[MR];
    #pragma GCC unroll 14
    for (int i = 0; i < MR; i++) acc[i] = _mm512_setzero_ps();
    for (int p = 0; p < kc; p++) {
        __m512 b0 = _mm512_loadu_ps(b_packed);
        #pragma GCC unroll 14
        for (int i = 0; i < MR; i++)
            acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(a_packed[i]), b0, acc[i]);
        a_packed += MR;
        b_packed += NR;
    }
    __mmask16 cols = (__mmask16)((1u << nr) - 1);   // (nr = 16: all 16 bits)
    #pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
        if (i >= mr) break;
        float *c_row = c + (size_t)i * c_stride;
        if (accumulate) acc[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(cols, c_row), acc[i]);
        _mm512_mask_storeu_ps(c_row, cols, acc[i]);
    }
}

void cnn_f32_gemm_14x32__avx512(int mr, int nr, int kc, const float *restrict a_packed,
                                const float *restrict b_packed, float *restrict c,
                                size_t c_stride, int accumulate) {
    // a_packed is (kc, 14), b_packed is (kc, 32), c is (mr, nr) with row stride c_stride
    assert(mr >= 1 && mr <= MR && nr >= 1 && nr <= NR && kc >= 1);
    if (nr <= 16) {   // a narrow last panel (N = 196: 4 columns): half the FMAs, same sums
        narrow_half(mr, nr, kc, a_packed, b_packed, c, c_stride, accumulate);
        return;
    }
    __m512 acc[MR][2];
    #pragma GCC unroll 14
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int p = 0; p < kc; p++) {
        __m512 b0 = _mm512_loadu_ps(b_packed), b1 = _mm512_loadu_ps(b_packed + 16);
        #pragma GCC unroll 14
        for (int i = 0; i < MR; i++) {
            __m512 a = _mm512_set1_ps(a_packed[i]);
            acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
        }
        a_packed += MR;
        b_packed += NR;
    }
    // Columns [0,16) and [16,32) of the tile that exist in C.
    __mmask16 cols0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
    __mmask16 cols1 = nr >= 32 ? 0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
    #pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
        if (i >= mr) break;
        float *c_row = c + (size_t)i * c_stride;
        if (accumulate) acc[i][0] = _mm512_add_ps(_mm512_maskz_loadu_ps(cols0, c_row), acc[i][0]);
        _mm512_mask_storeu_ps(c_row, cols0, acc[i][0]);
        if (nr > 16) {   // (no pointer past the end of a narrow C)
            if (accumulate) {
                acc[i][1] = _mm512_add_ps(_mm512_maskz_loadu_ps(cols1, c_row + 16), acc[i][1]);
            }
            _mm512_mask_storeu_ps(c_row + 16, cols1, acc[i][1]);
        }
    }
}
#endif
