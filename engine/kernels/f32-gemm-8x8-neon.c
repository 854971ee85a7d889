// f32-gemm-8x8-neon.c - aarch64 NEON gemm micro-kernel: an 8 x 8 tile of C from packed panels,
// contract in kernels.h. Advanced SIMD is part of every aarch64 CPU; dispatch.c still checks
// HWCAP_ASIMD.
//
// Registers: 16 accumulators (8 rows x 2 vectors of 4), 2 for the packed row of B and 1 for
// the broadcast element of A (ld1r): 19 of the 32 q registers. Per step of p: 2 loads of B,
// 8 load-and-broadcasts of A (one from each packed row), 16 FMAs.
#if defined(__aarch64__)
#include <arm_neon.h>
#include <assert.h>
#include "kernels.h"

enum { MR = 8, NR = 8 };

void cnn_f32_gemm_8x8__neon(int mr, int nr, int kc, const float *restrict a_packed,
                            const float *restrict b_packed, float *restrict c, size_t c_stride,
                            int accumulate, const cnn_gemm_finish *finish, const void *ahead,
                            int ahead_lines) {
    (void)ahead, (void)ahead_lines;   // (not used yet)
    // a_packed is (kc, 8), b_packed is (kc, 8), c is (mr, nr) with row stride c_stride
    assert(mr >= 1 && mr <= MR && nr >= 1 && nr <= NR && kc >= 1);
    float32x4_t acc[MR][2];
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = vdupq_n_f32(0.0f);
    for (int p = 0; p < kc; p++) {
        float32x4_t b0 = vld1q_f32(b_packed), b1 = vld1q_f32(b_packed + 4);
        #pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            float32x4_t a = vld1q_dup_f32(a_packed + i);
            acc[i][0] = vfmaq_f32(acc[i][0], a, b0);
            acc[i][1] = vfmaq_f32(acc[i][1], a, b1);
        }
        a_packed += MR;
        b_packed += NR;
    }
    if (mr == MR && nr == NR && !finish) {
        #pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            float *c_row = c + (size_t)i * c_stride;
            if (accumulate) {
                acc[i][0] = vaddq_f32(vld1q_f32(c_row), acc[i][0]);
                acc[i][1] = vaddq_f32(vld1q_f32(c_row + 4), acc[i][1]);
            }
            vst1q_f32(c_row, acc[i][0]);
            vst1q_f32(c_row + 4, acc[i][1]);
        }
        return;
    }
    float tile[MR][NR];   // partial, finished or transposed tile: the shared edge path
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        vst1q_f32(&tile[i][0], acc[i][0]);
        vst1q_f32(&tile[i][4], acc[i][1]);
    }
    cnn_gemm_store_edge(mr, nr, &tile[0][0], NR, c, c_stride, accumulate, finish);
}
#endif
