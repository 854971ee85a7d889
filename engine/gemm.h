// gemm.h - single-precision matrix multiply, the workhorse under conv2d.
//
//     C[M,N] = (accumulate ? C : 0) + A[M,K] @ B[K,N]
//
// All matrices are row-major with leading dimensions (elements between the starts of two
// consecutive rows): A[i][p] is A[i*lda + p], B[p][j] is B[p*ldb + j], C[i][j] is C[i*ldc + j].
// C must not overlap A or B. M, N or K may be 0 (K = 0 leaves C, or zeroes it).
#ifndef CNNSCOPE_GEMM_H
#define CNNSCOPE_GEMM_H

// The triple loop, summing each element over p in order (in double). Ground truth for sgemm.
void sgemm_ref(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
               int ldc, int accumulate);

// Packs A and B into panels and runs the SIMD micro-kernel of the kernel table
// (engine/kernels/kernels.h: chosen once from the CPU, or by CNNSCOPE_ISA); cache-blocked,
// parallel over tiles of C (OpenMP; serial when called from inside a parallel region). Each
// element of C is summed by one thread in an order fixed by the shape and the ISA, so the
// result is bit-identical for any number of threads. Differs from sgemm_ref by float
// re-association (and FMA rounding) only.
void sgemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
           int ldc, int accumulate);

// What sgemm does to each element of C once its whole sum is done, while the element is still
// in cache (the fused epilogue of a conv): C[i][j] += residual[i*ldr + j] if residual is not
// NULL, then C[i][j] = max(C[i][j], 0) if relu (NaN stays NaN, as torch.relu). The same
// operations in the same order as a separate add and relu pass, so the result is identical.
typedef struct {
    const float *residual;   // (M, N) with leading dimension ldr, or NULL
    int ldr;
    int relu;
} sgemm_epilogue;

// sgemm followed by the epilogue `ep` (NULL: none).
void sgemm_fused(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
                 int ldc, int accumulate, const sgemm_epilogue *ep);

// B given row by row, for a B that is never stored whole (a conv's im2col matrix): returns
// B[p][j0 .. j0+n), either a pointer into existing memory or the n floats written to
// `scratch`. Called concurrently by several threads (each with its own scratch).
typedef const float *(*sgemm_row_fn)(const void *ctx, int p, int j0, int n, float *scratch);

// sgemm_fused with B (K x N) given by `row` (n <= 512 per call).
void sgemm_rows(int M, int N, int K, const float *A, int lda, sgemm_row_fn row, const void *ctx,
                float *C, int ldc, int accumulate, const sgemm_epilogue *ep);

// For tests: sgemm as it runs when its packing buffer cannot be allocated (small stack
// buffers, one panel at a time). Must give exactly sgemm's numbers.
void sgemm_low_memory(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float *C, int ldc, int accumulate);

#endif
