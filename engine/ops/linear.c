// linear.c - fully connected layer, out[n,o] = bias[o] + sum_i inp[n,i] * weight[o,i].
//
// Dims: N batch, IN features in, OUT features out.
//
// The fast path is a GEMV per input row: blocks of CNN_GEMV_ROWS weight rows (shared out by
// work_share.h: a contiguous run per thread to start with) each run against every input row
// of the batch with the gemv micro-kernel of the kernel table (SIMD, engine/kernels/), two
// input rows per call where the table has gemv2, so each weight row is streamed from memory
// once whatever N is (weights dominate: a VGG classifier is 100M floats) and read from cache
// once per pair of the other rows of the batch. A row's dot product is summed the same way in
// every block, on every thread and for any batch (gemv2 gives what gemv does), so the result
// depends on neither the thread count nor the batch.
#include "ops.h"
#include "kernels/kernels.h"
#include "work_share.h"

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

void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int IN, int OUT) {
    // out is (N,OUT), inp is (N,IN), weight is (OUT,IN), bias is (OUT) or NULL
    const cnn_kernel_table *kt = cnn_kernels();
    int blocks = (OUT + CNN_GEMV_ROWS - 1) / CNN_GEMV_ROWS;
    work_share ws;   // each thread a run of blocks; one done early takes over a slower one's
    work_share_begin(&ws, blocks);
    #pragma omp parallel if ((double)N * IN * OUT > 1e5)
    for (long blk; (blk = work_share_next(&ws)) >= 0;) {
        int o0 = (int)blk * CNN_GEMV_ROWS;
        int rows = OUT - o0 < CNN_GEMV_ROWS ? OUT - o0 : CNN_GEMV_ROWS;
        const float *w = weight + (size_t)o0 * IN;   // (rows, IN)
        for (int n = 0; n < N; n += 2) {   // two input rows at a time when there are two
            float dots[2][CNN_GEMV_ROWS];
            const float *x = inp + (size_t)n * IN;
            int pair = n + 1 < N;
            if (pair && kt->gemv2) {
                kt->gemv2(rows, IN, w, (size_t)IN, x, x + IN, dots[0], dots[1]);
            } else {
                kt->gemv(rows, IN, w, (size_t)IN, x, dots[0]);
                if (pair) kt->gemv(rows, IN, w, (size_t)IN, x + IN, dots[1]);
            }
            for (int b = 0; b <= pair; b++) {
                for (int r = 0; r < rows; r++) {
                    out[(size_t)(n + b) * OUT + o0 + r] = (bias ? bias[o0 + r] : 0.0f) + dots[b][r];
                }
            }
        }
    }
}

// Backward: dinp[n,i] += sum_o dout[n,o] * weight[o,i]. Columns of the weight are taken
// LINEAR_BACKWARD_COLS at a time so that every weight row is read in contiguous runs (a VGG
// classifier's 100M weights read column by column would miss the cache on every element);
// the sums are in double, in order of o. The blocks are independent: split across threads.
enum { LINEAR_BACKWARD_COLS = 256 };

void linear_backward_ref(float *dinp, const float *dout, const float *weight, int N, int IN,
                         int OUT) {
    // dinp is (N,IN), dout is (N,OUT), weight is (OUT,IN); dinp accumulates
    int blocks = (IN + LINEAR_BACKWARD_COLS - 1) / LINEAR_BACKWARD_COLS;
    #pragma omp parallel for schedule(static) if ((double)N * IN * OUT > 1e5)
    for (int blk = 0; blk < blocks; blk++) {
        int i0 = blk * LINEAR_BACKWARD_COLS;
        int cols = IN - i0 < LINEAR_BACKWARD_COLS ? IN - i0 : LINEAR_BACKWARD_COLS;
        for (int n = 0; n < N; n++) {
            double sum[LINEAR_BACKWARD_COLS] = {0};
            for (int o = 0; o < OUT; o++) {
                double d = dout[(size_t)n * OUT + o];
                const float *w = weight + (size_t)o * IN + i0;
                for (int i = 0; i < cols; i++) sum[i] += d * w[i];
            }
            float *dx = dinp + (size_t)n * IN + i0;
            for (int i = 0; i < cols; i++) dx[i] += (float)sum[i];
        }
    }
}
