// kernels.h - the SIMD micro-kernels under sgemm (gemm.c) and linear (linear.c), and the table
// that picks one set of them per process (dispatch.c).
//
// Dims: MR x NR the register tile of C one gemm call computes, kc the slice of the inner
// dimension it sums over; rows x n the block of weight rows one gemv call dots with x.
//
// Files are named dtype-op-tile-ISA (f32-gemm-14x32-avx512.c holds cnn_f32_gemm_14x32__avx512),
// one ISA per file, so the Makefile gives ISA flags (-mavx2 -mfma, -mavx512f) to those files
// only. Nothing outside engine/kernels/ knows which ISAs exist: ops call through the table
// returned by cnn_kernels(), filled once from CPUID (x86) or HWCAP (aarch64), or forced with
// CNNSCOPE_ISA=scalar|avx2|avx512|neon.
#ifndef CNNSCOPE_KERNELS_H
#define CNNSCOPE_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "cnnscope.h"

typedef enum {
    CNN_ISA_SCALAR,   // portable C (auto-vectorised by the compiler for the base ISA)
    CNN_ISA_AVX2,     // x86-64 AVX2 + FMA3
    CNN_ISA_AVX512,   // x86-64 AVX-512F
    CNN_ISA_NEON,     // aarch64 Advanced SIMD
    CNN_ISA_COUNT
} cnn_isa_id;

// What a gemm kernel applies to its block of C when the block's sums are complete (the call for
// the last slice of K), in this order: + bias[i] on row i, + residual[i*ldr + j], then ReLU as
// relu_forward_ref (x < 0 ? 0 : x: NaN stays NaN, -0 stays -0). sgemm's epilogue (gemm.h),
// done while the tile is still in registers instead of in another pass over C.
// With `out`, the block is a tile of a transposed product (C^T = B^T A^T, gemm.c) and goes,
// finished, to the real output instead of to c: element (i, j) to out[j*ld_out + i], with
// bias[j] and residual[j*ldr + i] (c is then only read, when accumulating).
typedef struct {
    const float *bias;       // the block's mr entries (nr with out), or NULL
    const float *residual;   // the block's mr x nr block of the residual (nr x mr), or NULL
    size_t ldr;              // the residual's row stride
    int relu;
    float *out;              // or NULL
    size_t ld_out;
} cnn_gemm_finish;

// C[mr,nr] = finish((accumulate ? C : 0) + A[mr,kc] @ B[kc,nr]), from packed panels:
//   a_packed is (kc, MR): a_packed[p*MR + i] = A[i][p]; rows mr <= i < MR hold zeros. (The
//     MR elements a step broadcasts are contiguous: one pointer, no register spills, and one
//     cache line per step. The AVX-512 kernel ran 166 -> 181 GFLOP/s in sgemm's loop nest
//     against the (MR, kc) layout, whose packing was a plain copy of rows.)
//   b_packed is (kc, NR): b_packed[p*NR + j] = B[p][j]; columns nr <= j < NR hold zeros.
//   c is row-major with c_stride elements between rows; only its mr x nr block is read or
//   written (partial tiles are the kernel's job, so callers never pad C).
//   finish is NULL (nothing after the sum) or as above.
//   ahead, ahead_lines: cache lines (64 bytes each, from ahead) the caller needs next, which a
//     kernel may ask for while it sums (one per step of p, so that their reads from memory
//     overlap the FMAs instead of stalling a burst of prefetches); NULL, 0 for none
//     (ahead_lines is 0 whenever ahead is NULL).
// Preconditions: 1 <= mr <= MR, 1 <= nr <= NR, kc >= 1, ahead_lines >= 0. Each C element is
// summed over p in order (one fused or unfused multiply-add per p), then added to C once, then
// finished.
typedef void (*cnn_f32_gemm_ukernel)(int mr, int nr, int kc, const float *restrict a_packed,
                                     const float *restrict b_packed, float *restrict c,
                                     size_t c_stride, int accumulate,
                                     const cnn_gemm_finish *finish, const void *ahead,
                                     int ahead_lines);

// y[r] = sum_i w[r*w_stride + i] * x[i] for 0 <= r < rows: `rows` weight rows against one
// input vector, each row read once, front to back. w is (rows, n) with row stride w_stride,
// x is (n), y is (rows). Preconditions: 1 <= rows <= CNN_GEMV_ROWS, n >= 0. A row's sum does
// not depend on `rows` or on the other rows, so a block boundary never changes a result.
enum { CNN_GEMV_ROWS = 4 };
typedef void (*cnn_f32_gemv_ukernel)(int rows, int n, const float *restrict w, size_t w_stride,
                                     const float *restrict x, float *restrict y);
// The same for two input vectors at once (x0 into y0, x1 into y1), each weight element read
// once for both; y0 and y1 are exactly what two gemv calls give. For a batch: the weight block
// is read from cache half as often.
typedef void (*cnn_f32_gemv2_ukernel)(int rows, int n, const float *restrict w, size_t w_stride,
                                      const float *x0, const float *x1, float *y0, float *y1);

// The same sum with B's rows read where they are instead of from a packed panel: row p of B
// is the nr floats at b + b_offsets[p] (nr <= NR; the kernel may read all NR of them, so the
// caller keeps NR floats readable there). No prefetch hint; otherwise the contract, and each
// sum, of cnn_f32_gemm_ukernel. For a direct convolution (conv2d.c, conv2d_direct): B's row p
// is tap p of NR neighbouring outputs, a run of input pixels.
typedef void (*cnn_f32_gemm_rows_ukernel)(int mr, int nr, int kc, const float *restrict a_packed,
                                          const float *b, const int32_t *restrict b_offsets,
                                          float *restrict c, size_t c_stride, int accumulate,
                                          const cnn_gemm_finish *finish);

typedef struct {
    cnn_isa_id isa;
    const char *name;            // "avx512": the CNNSCOPE_ISA spelling
    cnn_f32_gemm_ukernel gemm;
    int mr, nr;                  // gemm register tile
    int kc;                      // slice of K per packed panel (sizes the L1/L2 working set)
    cnn_f32_gemv_ukernel gemv;
    cnn_f32_gemv2_ukernel gemv2;   // or NULL: two gemv calls
    cnn_f32_gemm_rows_ukernel gemm_rows;   // or NULL: no direct convolution
} cnn_kernel_table;

// The kernels every sgemm / linear call uses: chosen once per process (the widest ISA this
// CPU and build support, or the one CNNSCOPE_ISA names if it is available here).
const cnn_kernel_table *cnn_kernels(void);

// The table of `isa`, or NULL if this build or this CPU lacks it.
const cnn_kernel_table *cnn_kernels_for(cnn_isa_id isa);

// Test and benchmark hook: makes `isa` the kernels of every later call. Process-wide, so call
// it only while no other thread runs kernels, and before creating sessions (they pack conv
// weights for the kernels of their creation). Returns 0 (and changes nothing) if unavailable.
int cnn_kernels_force(cnn_isa_id isa);

// Parses a CNNSCOPE_ISA value: CNN_OK and *isa, or CNN_ERR_ARG (with the message set) for an
// unknown name or an ISA this CPU or build lacks.
cnn_status cnn_kernels_parse_isa(const char *value, cnn_isa_id *isa);

// Element (i, j) of a block whose sum is v, finished (see cnn_gemm_finish; i and j are the
// element's row and column in the output, so swapped for a transposed block).
static inline float cnn_gemm_finish_one(const cnn_gemm_finish *f, int i, int j, float v) {
    if (f->bias) v += f->bias[i];
    if (f->residual) v += f->residual[(size_t)i * f->ldr + j];
    return f->relu && v < 0.0f ? 0.0f : v;
}

// The edge path shared by the gemm micro-kernels: a kernel that computed a partial tile into
// a full (MR, NR) buffer `tile` (row stride tile_stride) writes its mr x nr corner into C, or
// transposed into finish->out.
static inline void cnn_gemm_store_edge(int mr, int nr, const float *tile, int tile_stride,
                                       float *c, size_t c_stride, int accumulate,
                                       const cnn_gemm_finish *finish) {
    for (int i = 0; i < mr; i++) {
        float *c_row = c + (size_t)i * c_stride;
        const float *t_row = tile + (size_t)i * tile_stride;
        for (int j = 0; j < nr; j++) {
            float v = accumulate ? c_row[j] + t_row[j] : t_row[j];
            if (!finish) {
                c_row[j] = v;
            } else if (finish->out) {
                finish->out[(size_t)j * finish->ld_out + i] = cnn_gemm_finish_one(finish, j, i, v);
            } else {
                c_row[j] = cnn_gemm_finish_one(finish, i, j, v);
            }
        }
    }
}

// The micro-kernels (see the files of the same names).
void cnn_f32_gemm_4x16__scalar(int mr, int nr, int kc, const float *restrict a_packed,
                               const float *restrict b_packed, float *restrict c,
                               size_t c_stride, int accumulate, const cnn_gemm_finish *finish,
                               const void *ahead, int ahead_lines);
void cnn_f32_gemv_4x16__scalar(int rows, int n, const float *restrict w, size_t w_stride,
                               const float *restrict x, float *restrict y);
#if defined(__x86_64__)
void cnn_f32_gemm_6x16__avx2(int mr, int nr, int kc, const float *restrict a_packed,
                             const float *restrict b_packed, float *restrict c, size_t c_stride,
                             int accumulate, const cnn_gemm_finish *finish, const void *ahead,
                             int ahead_lines);
void cnn_f32_gemv_4x16__avx2(int rows, int n, const float *restrict w, size_t w_stride,
                             const float *restrict x, float *restrict y);
void cnn_f32_gemm_14x32__avx512(int mr, int nr, int kc, const float *restrict a_packed,
                                const float *restrict b_packed, float *restrict c,
                                size_t c_stride, int accumulate, const cnn_gemm_finish *finish,
                                const void *ahead, int ahead_lines);
void cnn_f32_gemm_rows_6x16__avx2(int mr, int nr, int kc, const float *restrict a_packed,
                                  const float *b, const int32_t *restrict b_offsets,
                                  float *restrict c, size_t c_stride, int accumulate,
                                  const cnn_gemm_finish *finish);
void cnn_f32_gemm_rows_14x32__avx512(int mr, int nr, int kc, const float *restrict a_packed,
                                     const float *b, const int32_t *restrict b_offsets,
                                     float *restrict c, size_t c_stride, int accumulate,
                                     const cnn_gemm_finish *finish);
void cnn_f32_gemv_4x32__avx512(int rows, int n, const float *restrict w, size_t w_stride,
                               const float *restrict x, float *restrict y);
void cnn_f32_gemv2_4x32__avx512(int rows, int n, const float *restrict w, size_t w_stride,
                                const float *x0, const float *x1, float *y0, float *y1);
#endif
#if defined(__x86_64__)
// CRC-32 (IEEE) of n bytes, n >= 64 and a multiple of 16, from the running (not inverted)
// register `state`; returns the new register. Needs PCLMULQDQ (crc32.c checks).
uint32_t cnn_crc32_blocks__pclmul(uint32_t state, const unsigned char *p, size_t n);
// The same with 256-bit folds, for n >= 128; needs AVX2 and VPCLMULQDQ.
uint32_t cnn_crc32_blocks__vpclmul(uint32_t state, const unsigned char *p, size_t n);
#endif
#if defined(__aarch64__)
void cnn_f32_gemm_8x8__neon(int mr, int nr, int kc, const float *restrict a_packed,
                            const float *restrict b_packed, float *restrict c, size_t c_stride,
                            int accumulate, const cnn_gemm_finish *finish, const void *ahead,
                            int ahead_lines);
void cnn_f32_gemv_4x16__neon(int rows, int n, const float *restrict w, size_t w_stride,
                             const float *restrict x, float *restrict y);
#endif

#endif
