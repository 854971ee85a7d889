// add.c - out = a + b elementwise (the residual connection).
#include "ops.h"

void add_forward_ref(float *out, const float *a, const float *b, size_t n) {
    // out, a, b are (n); out may be a or b
    #pragma omp parallel for schedule(static) if (n > 262144)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// Backward: both summands receive the whole gradient. da may equal db (x + x gets 2*dout).
void add_backward_ref(float *da, float *db, const float *dout, size_t n) {
    // da, db, dout are (n); da and db accumulate
    #pragma omp parallel for schedule(static) if (n > 262144)
    for (size_t i = 0; i < n; i++) {
        da[i] += dout[i];
        db[i] += dout[i];
    }
}
