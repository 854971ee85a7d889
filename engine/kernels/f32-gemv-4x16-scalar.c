// f32-gemv-4x16-scalar.c - the portable C gemv micro-kernel (the scalar path of linear): up to
// 4 weight rows against one input vector, contract in kernels.h.
//
// Each dot product is summed in 16 interleaved partial sums (lane j takes the elements i with
// i % 16 == j), which the compiler turns into vector registers; the lanes are then added
// pairwise in a fixed order and the n % 16 tail is added last, one element at a time.
#include <assert.h>
#include "kernels.h"

enum { LANES = 16 };

// Adds the LANES partial sums pairwise in a fixed order.
static float sum_lanes(const float *lanes) {
    float tmp[LANES];
    for (int j = 0; j < LANES; j++) tmp[j] = lanes[j];
    for (int width = LANES / 2; width >= 1; width /= 2) {
        for (int j = 0; j < width; j++) tmp[j] += tmp[j + width];
    }
    return tmp[0];
}

void cnn_f32_gemv_4x16__scalar(int rows, int n, const float *restrict w, size_t w_stride,
                               const float *restrict x, float *restrict y) {
    // w is (rows, n) with row stride w_stride, x is (n), y is (rows)
    assert(rows >= 1 && rows <= CNN_GEMV_ROWS && n >= 0);
    // Missing rows of a partial block re-read row 0 (already in cache); their sums are dropped.
    const float *restrict w0 = w;
    const float *restrict w1 = rows > 1 ? w + w_stride : w;
    const float *restrict w2 = rows > 2 ? w + 2 * w_stride : w;
    const float *restrict w3 = rows > 3 ? w + 3 * w_stride : w;
    float s0[LANES] = {0}, s1[LANES] = {0}, s2[LANES] = {0}, s3[LANES] = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int j = 0; j < LANES; j++) {
            s0[j] += w0[i + j] * x[i + j];
            s1[j] += w1[i + j] * x[i + j];
            s2[j] += w2[i + j] * x[i + j];
            s3[j] += w3[i + j] * x[i + j];
        }
    }
    float d[CNN_GEMV_ROWS] = {sum_lanes(s0), sum_lanes(s1), sum_lanes(s2), sum_lanes(s3)};
    for (; i < n; i++) {
        d[0] += w0[i] * x[i];
        d[1] += w1[i] * x[i];
        d[2] += w2[i] * x[i];
        d[3] += w3[i] * x[i];
    }
    for (int r = 0; r < rows; r++) y[r] = d[r];
}
