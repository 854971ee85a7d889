// f32-gemm-4x16-scalar.c - the portable C gemm micro-kernel (the scalar path of sgemm): a
// 4 x 16 tile of C from packed panels, contract in kernels.h.
//
// Plain C that gcc and clang auto-vectorise at -O2 for the base ISA (SSE2 on x86-64, NEON on
// aarch64): the inner loop runs over the 16 contiguous columns of a packed row of B with a
// compile-time trip count, and the four rows are written out by hand rather than as a loop
// over i, which keeps each row's 16 accumulators in registers on both compilers.
#include <assert.h>
#include "kernels.h"

enum { MR = 4, NR = 16 };

void cnn_f32_gemm_4x16__scalar(int mr, int nr, int kc, const float *restrict a_packed,
                               const float *restrict b_packed, float *restrict c,
                               size_t c_stride, int accumulate,
                               const cnn_gemm_finish *finish, const void *ahead,
                               int ahead_lines) {
    (void)ahead, (void)ahead_lines;   // (no prefetching: the portable reference)
    // a_packed is (kc, 4), b_packed is (kc, 16), c is (mr, nr) with row stride c_stride
    assert(mr >= 1 && mr <= MR && nr >= 1 && nr <= NR && kc >= 1);
    float c0[NR] = {0}, c1[NR] = {0}, c2[NR] = {0}, c3[NR] = {0};
    for (int p = 0; p < kc; p++) {
        const float *restrict b = b_packed + (size_t)p * NR;
        const float a0 = a_packed[p * MR], a1 = a_packed[p * MR + 1];
        const float a2 = a_packed[p * MR + 2], a3 = a_packed[p * MR + 3];
        for (int j = 0; j < NR; j++) {
            c0[j] += a0 * b[j];
            c1[j] += a1 * b[j];
            c2[j] += a2 * b[j];
            c3[j] += a3 * b[j];
        }
    }
    if (mr == MR && nr == NR && !finish) {
        float *restrict r0 = c, *restrict r1 = c + c_stride;
        float *restrict r2 = c + 2 * c_stride, *restrict r3 = c + 3 * c_stride;
        if (accumulate) {
            for (int j = 0; j < NR; j++) {
                r0[j] += c0[j]; r1[j] += c1[j]; r2[j] += c2[j]; r3[j] += c3[j];
            }
        } else {
            for (int j = 0; j < NR; j++) {
                r0[j] = c0[j]; r1[j] = c1[j]; r2[j] = c2[j]; r3[j] = c3[j];
            }
        }
        return;
    }
    float tile[MR][NR];   // partial, finished or transposed tile: the shared edge path
    for (int j = 0; j < NR; j++) {
        tile[0][j] = c0[j]; tile[1][j] = c1[j]; tile[2][j] = c2[j]; tile[3][j] = c3[j];
    }
    cnn_gemm_store_edge(mr, nr, &tile[0][0], NR, c, c_stride, accumulate, finish);
}
