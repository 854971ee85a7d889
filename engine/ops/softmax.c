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
