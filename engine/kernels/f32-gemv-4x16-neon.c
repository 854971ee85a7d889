// f32-gemv-4x16-neon.c - aarch64 NEON gemv micro-kernel: up to 4 weight rows against one input
// vector, contract in kernels.h.
//
// Each row is summed in 16 lanes (four q accumulators: lane j takes the elements i with
// i % 16 == j). The last n % 16 elements are copied into zero-padded buffers and run as one
// more step (the padding adds nothing); then the four vectors are added pairwise and reduced.
#if defined(__aarch64__)
#include <arm_neon.h>
#include <assert.h>
#include <string.h>
#include "kernels.h"

enum { LANES = 16 };

// acc[0..3] += w[0..16) * x[0..16), lane by lane.
static inline void step16(float32x4_t acc[4], const float *w, const float *x) {
    #pragma GCC unroll 4
    for (int v = 0; v < 4; v++) acc[v] = vfmaq_f32(acc[v], vld1q_f32(w + 4 * v), vld1q_f32(x + 4 * v));
}

void cnn_f32_gemv_4x16__neon(int rows, int n, const float *restrict w, size_t w_stride,
                             const float *restrict x, float *restrict y) {
    // w is (rows, n) with row stride w_stride, x is (n), y is (rows)
    assert(rows >= 1 && rows <= CNN_GEMV_ROWS && n >= 0);
    // Missing rows of a partial block re-read row 0 (already in cache); their sums are dropped.
    const float *w_row[CNN_GEMV_ROWS];
    for (int r = 0; r < CNN_GEMV_ROWS; r++) w_row[r] = r < rows ? w + r * w_stride : w;
    float32x4_t acc[CNN_GEMV_ROWS][4];
    for (int r = 0; r < CNN_GEMV_ROWS; r++)
        for (int v = 0; v < 4; v++) acc[r][v] = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        #pragma GCC unroll 4
        for (int r = 0; r < CNN_GEMV_ROWS; r++) step16(acc[r], w_row[r] + i, x + i);
    }
    if (i < n) {
        float x_tail[LANES] = {0}, w_tail[LANES] = {0};
        memcpy(x_tail, x + i, (size_t)(n - i) * sizeof(float));
        for (int r = 0; r < CNN_GEMV_ROWS; r++) {
            memcpy(w_tail, w_row[r] + i, (size_t)(n - i) * sizeof(float));
            step16(acc[r], w_tail, x_tail);
        }
    }
    for (int r = 0; r < rows; r++) {
        float32x4_t s = vaddq_f32(vaddq_f32(acc[r][0], acc[r][1]), vaddq_f32(acc[r][2], acc[r][3]));
        y[r] = vaddvq_f32(s);
    }
}
#endif
