// softmax.c - softmax over the last axis, out[n,f] = exp(inp[n,f] - max_f) / sum_f exp(...).
// Subtracting the row maximum keeps exp() from overflowing and does not change the result.
#include <math.h>
#include "ops.h"

void softmax_forward_ref(float *out, const float *inp, int N, int F) {
    // out, inp are (N,F)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * F;
        float *y = out + (size_t)n * F;
        float max = -INFINITY;
        for (int f = 0; f < F; f++) {
            if (x[f] > max) max = x[f];
        }
        double sum = 0.0;
        for (int f = 0; f < F; f++) {
            y[f] = expf(x[f] - max);
            sum += y[f];
        }
        float inv_sum = (float)(1.0 / sum);
        for (int f = 0; f < F; f++) y[f] *= inv_sum;
    }
}

// Backward: with y = softmax(x), dx_f = y_f * (dy_f - sum_g dy_g * y_g).
void softmax_backward_ref(float *dinp, const float *dout, const float *out, int N, int F) {
    // dinp, dout, out are (N,F); dinp accumulates
    for (int n = 0; n < N; n++) {
        const float *y = out + (size_t)n * F, *dy = dout + (size_t)n * F;
        float *dx = dinp + (size_t)n * F;
        double dot = 0.0;
        for (int f = 0; f < F; f++) dot += (double)dy[f] * y[f];
        for (int f = 0; f < F; f++) dx[f] += (float)(y[f] * (dy[f] - dot));
    }
}
