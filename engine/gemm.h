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
// in cache (the fused epilogue of a conv), in this order: C[i][j] += bias[i] if bias is not
// NULL (a conv's bias: one per row), C[i][j] += residual[i*ldr + j] if residual is not NULL,
// then C[i][j] = max(C[i][j], 0) if relu (NaN stays NaN, as torch.relu). The same operations
// in the same order as separate add and relu passes, so the result is identical to those.
typedef struct {
    const float *residual;   // (M, N) with leading dimension ldr, or NULL
    int ldr;
    int relu;
    const float *bias;       // (M), or NULL
} sgemm_epilogue;

// B given row by row, for a B that is never stored whole (a conv's im2col matrix): returns
// B[p][j0 .. j0+n), either a pointer into existing memory or the n floats written to
// `scratch`. Called concurrently by several threads (each with its own scratch). n <= 512.
typedef const float *(*sgemm_row_fn)(const void *ctx, int p, int j0, int n, float *scratch);

// A packed once for many products (a conv's weights, at session creation): for each slice of
// kc columns and each sliver of MR rows, the (kc, MR) block the micro-kernel reads, rows past M
// zero; slice s starts at data + s*kc*M_pad (M_pad = M rounded up to MR). Tied to the kernel
// table it was packed for (mr, kc): sgemm packs A itself if the table has changed since.
// Transposed (sgemm_pack_at_rows): A^T as the right operand of C^T = B^T A^T, for products
// with a narrow C (see gemm.c): for each slice, the (kc, NR) panels of NR rows of A, rows past
// M zero; `mr` then holds the table's nr.
typedef struct sgemm_packed_a {
    const float *data;
    int M, K, mr, kc;
    int transposed;
} sgemm_packed_a;

// 1 if pa is a plain (not transposed) packed M x K matrix for the current kernel table, the
// form whose slivers a caller running the kernels itself may read (conv2d's direct path).
int sgemm_packed_a_fits(const sgemm_packed_a *pa, int M, int K);
// The (kc, mr) block of rows [i0, i0 + mr) (i0 a multiple of mr) in the slice of K that starts
// at p0 (a multiple of kc), kc = min(pa->kc, K - p0): what the micro-kernel reads as a_packed.
const float *sgemm_packed_a_sliver_at(const sgemm_packed_a *pa, int p0, int i0);
// Floats sgemm_pack_a writes for an M x K matrix with the current kernel table.
size_t sgemm_packed_a_floats(int M, int K);
// Packs A (M x K, leading dimension lda) into dst (sgemm_packed_a_floats floats); returns the
// description sgemm_general takes.
sgemm_packed_a sgemm_pack_a(float *dst, int M, int K, const float *A, int lda);

// The same a sliver at a time (a conv's weights folded a few rows at a time, straight into the
// packed copy): rows per sliver (the kernel table's mr); rows [i0, i0+mr) of A, given at
// `rows` (leading dimension lda), packed into their place in dst (i0 a multiple of the sliver,
// mr at most one sliver). Once every sliver is packed, sgemm_packed_a_of(dst, M, K) describes
// the same matrix sgemm_pack_a would have made.
int sgemm_packed_a_sliver(void);
void sgemm_pack_a_rows(float *dst, int M, int K, int i0, int mr, const float *rows, int lda);
sgemm_packed_a sgemm_packed_a_of(const float *data, int M, int K);

// The transposed form, a panel of NR rows of A at a time (i0 a multiple of the panel, rows at
// most one panel): for a product whose N is small (up to SGEMM_NARROW_N_MAX, the session's
// choice), which sgemm_general then computes as C^T = B^T A^T, bit-identical to the plain
// product. Not for accumulate = 1 (sgemm_general then needs A itself).
enum { SGEMM_NARROW_N_MAX = 256 };
int sgemm_packed_at_panel(void);
size_t sgemm_packed_at_floats(int M, int K);
void sgemm_pack_at_rows(float *dst, int M, int K, int i0, int rows, const float *src, int lda);
sgemm_packed_a sgemm_packed_at_of(const float *data, int M, int K);

// Every form of the product in one call: A stored (A, lda) and optionally also pre-packed
// (a_packed, the same matrix); B stored (B, ldb) or given by rows (b_row, b_ctx); an optional
// epilogue. The same numbers as sgemm on the same A and B, then the epilogue.
typedef struct {
    const float *A;
    int lda;
    const sgemm_packed_a *a_packed;   // or NULL
    const float *B;                   // used when b_row is NULL
    int ldb;
    sgemm_row_fn b_row;
    const void *b_ctx;
    const sgemm_epilogue *ep;         // or NULL
} sgemm_operands;

void sgemm_general(int M, int N, int K, const sgemm_operands *op, float *C, int ldc,
                   int accumulate);

// For tests: sgemm (and sgemm_general) as they run when their packing buffers cannot be
// allocated (small stack buffers, one panel or one register tile at a time). Must give exactly
// the same numbers.
void sgemm_low_memory(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float *C, int ldc, int accumulate);
void sgemm_general_low_memory(int M, int N, int K, const sgemm_operands *op, float *C, int ldc,
                              int accumulate);

#endif
