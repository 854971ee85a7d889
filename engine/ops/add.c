// add.c - out = a + b elementwise (the residual connection).
#include "ops.h"

void add_forward_ref(float *out, const float *a, const float *b, size_t n) {
    // out, a, b are (n); out may be a or b
    #pragma omp parallel for schedule(static) if (n > 262144)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}
