// relu.c - out = max(inp, 0) elementwise, as torch.relu (NaN stays NaN).
#include "ops.h"

void relu_forward_ref(float *out, const float *inp, size_t n) {
    // out, inp are (n) and may be the same buffer
    #pragma omp parallel for schedule(static) if (n > 262144)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] < 0.0f ? 0.0f : inp[i];
}
