// public_gemm.c - cnn_sgemm: the public face of the engine's blocked GEMM (see gemm.h), so that
// vis/ can compute distances and covariances through cnnscope.h alone.
#include "cnnscope.h"
#include "gemm.h"

void cnn_sgemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
               int ldc, int accumulate) {
    sgemm(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}
