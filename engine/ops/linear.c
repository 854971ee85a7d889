// linear.c - fully connected layer, out[n,o] = bias[o] + sum_i inp[n,i] * weight[o,i].
//
// Dims: N batch, IN features in, OUT features out.
//
// The fast path takes LINEAR_ROWS weight rows at a time (one task per block, blocks split
// across threads) and runs every input row of the batch against them, so each weight row is
// read from memory once whatever N is (weights dominate: a VGG classifier is 100M floats).
// Each dot product is summed in LINEAR_LANES interleaved partial sums (lane j takes the
// elements i with i % LINEAR_LANES == j), which the compiler turns into vector registers; the
// lanes are then added in a fixed order, so every output is computed the same way whatever
// the thread count.
#include "ops.h"

enum {
    LINEAR_ROWS = 4,     // weight rows sharing one pass over an input row
    LINEAR_LANES = 16,   // partial sums per dot product
};

void linear_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                        int N, int IN, int OUT) {
    // out is (N,OUT), inp is (N,IN), weight is (OUT,IN), bias is (OUT) or NULL
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < OUT; o++) {
            double sum = bias ? bias[o] : 0.0;   // double: the ref is the accurate side
            for (int i = 0; i < IN; i++) {
                sum += (double)inp[(size_t)n * IN + i] * weight[(size_t)o * IN + i];
            }
            out[(size_t)n * OUT + o] = (float)sum;
        }
    }
}

// Adds the LINEAR_LANES partial sums pairwise in a fixed order.
static float sum_lanes(const float *lanes) {
    float tmp[LINEAR_LANES];
    for (int j = 0; j < LINEAR_LANES; j++) tmp[j] = lanes[j];
    for (int width = LINEAR_LANES / 2; width >= 1; width /= 2) {
        for (int j = 0; j < width; j++) tmp[j] += tmp[j + width];
    }
    return tmp[0];
}

// dots[r] = x . w_r for the LINEAR_ROWS rows w_r = w + r*IN. x is (IN), w is (LINEAR_ROWS,IN).
static void dot_rows(float *dots, const float *restrict x, const float *restrict w, int IN) {
    const float *restrict w0 = w, *restrict w1 = w + IN;
    const float *restrict w2 = w + 2 * (size_t)IN, *restrict w3 = w + 3 * (size_t)IN;
    float s0[LINEAR_LANES] = {0}, s1[LINEAR_LANES] = {0};
    float s2[LINEAR_LANES] = {0}, s3[LINEAR_LANES] = {0};
    int i = 0;
    for (; i + LINEAR_LANES <= IN; i += LINEAR_LANES) {
        for (int j = 0; j < LINEAR_LANES; j++) {
            s0[j] += w0[i + j] * x[i + j];
            s1[j] += w1[i + j] * x[i + j];
            s2[j] += w2[i + j] * x[i + j];
            s3[j] += w3[i + j] * x[i + j];
        }
    }
    float d0 = sum_lanes(s0), d1 = sum_lanes(s1), d2 = sum_lanes(s2), d3 = sum_lanes(s3);
    for (; i < IN; i++) {
        d0 += w0[i] * x[i];
        d1 += w1[i] * x[i];
        d2 += w2[i] * x[i];
        d3 += w3[i] * x[i];
    }
    dots[0] = d0; dots[1] = d1; dots[2] = d2; dots[3] = d3;
}

// The same for one row (the OUT % LINEAR_ROWS tail), summed in exactly the same order.
static float dot_row(const float *restrict x, const float *restrict w, int IN) {
    float s[LINEAR_LANES] = {0};
    int i = 0;
    for (; i + LINEAR_LANES <= IN; i += LINEAR_LANES) {
        for (int j = 0; j < LINEAR_LANES; j++) s[j] += w[i + j] * x[i + j];
    }
    float d = sum_lanes(s);
    for (; i < IN; i++) d += w[i] * x[i];
    return d;
}

void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int IN, int OUT) {
    // out is (N,OUT), inp is (N,IN), weight is (OUT,IN), bias is (OUT) or NULL
    int blocks = (OUT + LINEAR_ROWS - 1) / LINEAR_ROWS;
    #pragma omp parallel for schedule(static) if ((double)N * IN * OUT > 1e5)
    for (int blk = 0; blk < blocks; blk++) {
        int o0 = blk * LINEAR_ROWS;
        int rows = OUT - o0 < LINEAR_ROWS ? OUT - o0 : LINEAR_ROWS;
        const float *w = weight + (size_t)o0 * IN;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * IN;
            float dots[LINEAR_ROWS];
            if (rows == LINEAR_ROWS) {
                dot_rows(dots, x, w, IN);
            } else {
                for (int r = 0; r < rows; r++) dots[r] = dot_row(x, w + (size_t)r * IN, IN);
            }
            for (int r = 0; r < rows; r++) {
                out[(size_t)n * OUT + o0 + r] = (bias ? bias[o0 + r] : 0.0f) + dots[r];
            }
        }
    }
}
