// relu.c - out = max(inp, 0) elementwise, as torch.relu (NaN stays NaN).
#include "ops.h"

void relu_forward_ref(float *out, const float *inp, size_t n) {
    // out, inp are (n) and may be the same buffer
    #pragma omp parallel for schedule(static) if (n > 262144)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] < 0.0f ? 0.0f : inp[i];
}

// Backward: dinp += dout where the unit let its input through, under one of three rules that
// differ only in what gates the backward signal (`out` is the forward output, [n]):
//   CNN_RELU_PLAIN      the true gradient:   dout where out > 0        (torch's threshold_backward)
//   CNN_RELU_DECONVNET  Zeiler & Fergus:     max(dout, 0), out unused (may be NULL)
//   CNN_RELU_GUIDED     Springenberg et al.: max(dout, 0) where out > 0
void relu_backward_ref(float *dinp, const float *dout, const float *out, size_t n,
                       cnn_relu_rule rule) {
    // dinp, dout, out are (n); dinp accumulates
    #pragma omp parallel for schedule(static) if (n > 262144)
    for (size_t i = 0; i < n; i++) {
        int forward_gate = rule == CNN_RELU_DECONVNET || !(out[i] <= 0.0f);
        int backward_gate = rule == CNN_RELU_PLAIN || dout[i] > 0.0f;
        if (forward_gate && backward_gate) dinp[i] += dout[i];
    }
}
