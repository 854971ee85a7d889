// test_kernels.c - the SIMD micro-kernels (engine/kernels/) and the ops built on them, once per
// ISA this machine can run (scalar always; avx2/avx512 on x86-64, neon on aarch64 - the NEON
// build runs under qemu-aarch64 from tests/test_neon_qemu.sh).
//
// For each ISA, forced through the test hook cnn_kernels_force():
// 1. the gemm micro-kernel alone, on packed panels: every partial tile mr x nr (1..MR x 1..NR),
//    several kc, accumulate on and off, a C stride wider than the tile; elements of C outside
//    the mr x nr block must keep their sentinel values;
// 2. the gemv micro-kernel alone: 1..4 rows, lengths 0..~300 and a long one, strided rows;
//    gemv2 (where the table has it) bit-identical to two gemv calls;
// 3. sgemm against sgemm_ref on seeded random shapes (M,N,K 1..~300, odd sizes, tails of every
//    tile and slice, leading dimensions wider than the matrices, K = 0); padding untouched;
//    and sgemm_low_memory (the path without a packing buffer) bit-identical to sgemm;
// 4. conv2d_forward (im2col, pointwise, depthwise; batch 1-3, strides, padding) and
//    linear_forward (batch 1 = the GEMV path, and batch > 1) against their references;
// 5. with OpenMP: sgemm, conv2d and linear give bit-identical results on 1 and 2 threads.
// And the dispatch itself: names, CNNSCOPE_ISA parsing, the forced ISA is the one in use.
// Tolerance max(1e-5, 1e-4*|ref|) per element.
//
// Exit status 0 = all passed; a failure prints the ISA, the kernel, the shape and the index.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "gemm.h"
#include "kernels/kernels.h"
#include "ops.h"

#define RNG_SEED 20240611u   // this test's stream of random shapes and values
#include "random.h"

static int failures = 0;
static const char *isa_name = "?";   // the ISA under test, for messages

// Mostly small, sometimes up to `hi`: odd sizes and tails matter more than bulk.
static int rng_size(int lo, int hi) {
    int r = rng_int(0, 3);
    int top = r == 0 ? hi : r == 1 ? (hi < 64 ? hi : 64) : (hi < 20 ? hi : 20);
    return rng_int(lo, top < lo ? lo : top);
}

// --- comparisons ----------------------------------------------------------------------------

static int close_enough(float got, double ref) {
    return fabs((double)got - ref) <= fmax(1e-5, 1e-4 * fabs(ref));
}

// The index of the first element outside max(1e-5, 1e-4*|ref|), or -1.
static long first_mismatch(const float *fast, const float *ref, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!close_enough(fast[i], ref[i])) return (long)i;
    }
    return -1;
}

static const float SENTINEL = -12345.5f;   // marks elements a kernel must not write

// --- 1. the gemm micro-kernel on packed panels ----------------------------------------------

// The finishes a kernel call is checked with (kernels.h): 0 none, 1 bias + ReLU, 2 bias +
// residual + ReLU, 3 residual only.
enum { FINISH_KINDS = 4 };

// One call of kt->gemm on random packed panels; 1 if it agrees with a double-precision sum,
// finished as `finish_kind` says.
static int check_gemm_ukernel(const cnn_kernel_table *kt, int mr, int nr, int kc,
                              int c_stride, int accumulate, int finish_kind) {
    const int MR = kt->mr, NR = kt->nr;
    float *a = random_array((size_t)kc * MR, 1.0f), *b = random_array((size_t)kc * NR, 1.0f);
    // the packing contract: rows >= mr of a, columns >= nr of b are zero
    for (int p = 0; p < kc; p++) {
        for (int i = mr; i < MR; i++) a[(size_t)p * MR + i] = 0.0f;
        for (int j = nr; j < NR; j++) b[(size_t)p * NR + j] = 0.0f;
    }
    // C has MR + 1 rows of c_stride: the block, then rows and columns that must stay untouched
    size_t c_len = (size_t)(MR + 1) * c_stride;
    // the finish: bias (mr entries, NULL past them), residual (the mr x nr block, row stride
    // c_stride + 3)
    float *bias = random_array((size_t)mr, 1.0f);
    float *residual = random_array((size_t)mr * (c_stride + 3), 1.0f);
    cnn_gemm_finish fin = {.bias = finish_kind == 1 || finish_kind == 2 ? bias : NULL,
                           .residual = finish_kind >= 2 ? residual : NULL,
                           .ldr = (size_t)c_stride + 3,
                           .relu = finish_kind == 1 || finish_kind == 2};
    float *c = xmalloc(c_len * sizeof(float));
    double *want = xmalloc(c_len * sizeof(double));
    for (size_t e = 0; e < c_len; e++) {
        int i = (int)(e / c_stride), j = (int)(e % c_stride);
        int inside = i < mr && j < nr;
        c[e] = inside ? rng_float() : SENTINEL;
        want[e] = c[e];
        if (!inside) continue;
        double sum = accumulate ? c[e] : 0.0;
        for (int p = 0; p < kc; p++) sum += (double)a[(size_t)p * MR + i] * b[(size_t)p * NR + j];
        if (fin.bias) sum += fin.bias[i];
        if (fin.residual) sum += fin.residual[(size_t)i * fin.ldr + j];
        if (fin.relu && sum < 0.0) sum = 0.0;
        want[e] = sum;
    }
    kt->gemm(mr, nr, kc, a, b, c, (size_t)c_stride, accumulate, finish_kind ? &fin : NULL,
             b, kc % 3);   // (a prefetch hint: must not change anything)
    int ok = 1;
    for (size_t e = 0; e < c_len && ok; e++) {
        int i = (int)(e / c_stride), j = (int)(e % c_stride);
        int inside = i < mr && j < nr;
        if (inside ? !close_enough(c[e], want[e]) : c[e] != SENTINEL) {
            printf("FAIL [%s] gemm micro-kernel %dx%d: C[%d][%d] is %.9g, expected %.9g%s\n"
                   "  mr=%d nr=%d kc=%d c_stride=%d accumulate=%d finish=%d\n", isa_name, MR, NR,
                   i, j, c[e], want[e],
                   inside ? "" : " (outside the mr x nr block: must be untouched)", mr, nr, kc,
                   c_stride, accumulate, finish_kind);
            failures++;
            ok = 0;
        }
    }
    free(a); free(b); free(c); free(want); free(bias); free(residual);
    return ok;
}

// One call with a transposed finish (kernels.h: finish->out, the tile of C^T = B^T A^T going
// to C transposed): element (i, j) must land at out[j*ld_out + i] finished with bias[j] and
// residual[j*ldr + i], exactly as float arithmetic on the kernel's own sums gives it (the same
// call without a finish, into a plain tile), and nothing else in `out` may change. 1 if so.
static int check_gemm_ukernel_transposed(const cnn_kernel_table *kt, int mr, int nr, int kc,
                                         int accumulate, int finish_kind) {
    const int MR = kt->mr, NR = kt->nr;
    float *a = random_array((size_t)kc * MR, 1.0f), *b = random_array((size_t)kc * NR, 1.0f);
    for (int p = 0; p < kc; p++) {
        for (int i = mr; i < MR; i++) a[(size_t)p * MR + i] = 0.0f;
        for (int j = nr; j < NR; j++) b[(size_t)p * NR + j] = 0.0f;
    }
    const int c_stride = NR, ld_out = mr + 3, ldr = mr + 2;
    float *c = random_array((size_t)MR * c_stride, 1.0f);   // the partial sums, when accumulating
    float *sums = xmalloc((size_t)MR * c_stride * sizeof(float));
    memcpy(sums, c, (size_t)MR * c_stride * sizeof(float));
    kt->gemm(mr, nr, kc, a, b, sums, (size_t)c_stride, accumulate, NULL, NULL, 0);
    float *bias = random_array((size_t)nr, 1.0f), *residual = random_array((size_t)nr * ldr, 1.0f);
    size_t out_len = (size_t)(nr + 1) * ld_out;
    float *out = xmalloc(out_len * sizeof(float));
    for (size_t e = 0; e < out_len; e++) out[e] = SENTINEL;
    cnn_gemm_finish fin = {.bias = finish_kind == 1 || finish_kind == 2 ? bias : NULL,
                           .residual = finish_kind >= 2 ? residual : NULL, .ldr = (size_t)ldr,
                           .relu = finish_kind == 1 || finish_kind == 2, .out = out,
                           .ld_out = (size_t)ld_out};
    kt->gemm(mr, nr, kc, a, b, c, (size_t)c_stride, accumulate, &fin, NULL, 0);
    int ok = 1;
    for (size_t e = 0; e < out_len && ok; e++) {
        int j = (int)(e / ld_out), i = (int)(e % ld_out);
        float want = SENTINEL;
        if (i < mr && j < nr) {
            want = sums[(size_t)i * c_stride + j];
            if (fin.bias) want += bias[j];
            if (fin.residual) want += residual[(size_t)j * ldr + i];
            if (fin.relu && want < 0.0f) want = 0.0f;
        }
        if (memcmp(&out[e], &want, sizeof want) != 0) {
            printf("FAIL [%s] gemm micro-kernel %dx%d, transposed finish: out[%d][%d] is %.9g, "
                   "expected %.9g%s\n  mr=%d nr=%d kc=%d accumulate=%d finish=%d\n", isa_name,
                   MR, NR, j, i, out[e], want,
                   i < mr && j < nr ? "" : " (outside the block: must be untouched)", mr, nr, kc,
                   accumulate, finish_kind);
            failures++;
            ok = 0;
        }
    }
    free(a); free(b); free(c); free(sums); free(bias); free(residual); free(out);
    return ok;
}

// The finish's ReLU is relu_forward_ref's: a NaN sum stays NaN (a max instruction could make
// it 0, a silent wrong answer), a negative one becomes +0. Every row and column of a full tile.
static int check_gemm_finish_nan(const cnn_kernel_table *kt) {
    const int MR = kt->mr, NR = kt->nr;
    float *a = xmalloc((size_t)MR * sizeof(float)), *b = xmalloc((size_t)NR * sizeof(float));
    float *c = xmalloc((size_t)MR * NR * sizeof(float));
    for (int i = 0; i < MR; i++) a[i] = 1.0f;
    for (int j = 0; j < NR; j++) b[j] = j % 2 ? NAN : -1.0f;   // kc = 1: C[i][j] = b[j]
    cnn_gemm_finish fin = {.relu = 1};
    kt->gemm(MR, NR, 1, a, b, c, (size_t)NR, 0, &fin, NULL, 0);
    int ok = 1;
    for (int e = 0; e < MR * NR && ok; e++) {
        int j = e % NR;
        int right = j % 2 ? isnan(c[e]) : c[e] == 0.0f && !signbit(c[e]);
        if (!right) {
            printf("FAIL [%s] gemm finish: ReLU of %s gave %g at C[%d][%d]\n", isa_name,
                   j % 2 ? "NaN" : "-1", c[e], e / NR, j);
            failures++;
            ok = 0;
        }
    }
    free(a); free(b); free(c);
    return ok;
}

static void test_gemm_ukernel(const cnn_kernel_table *kt) {
    int cases = 0, passed = 0;
    static const int kcs[] = {1, 2, 7, 64, 257};
    for (int mr = 1; mr <= kt->mr; mr++) {
        for (int nr = 1; nr <= kt->nr; nr++) {
            // every tile shape once, with one of the slice lengths; full tiles with all of them
            int full = mr == kt->mr && nr == kt->nr;
            for (int k = 0; k < 5; k++) {
                if (!full && k != (mr * 7 + nr) % 5) continue;
                int stride = nr + rng_int(0, 5);
                passed += check_gemm_ukernel(kt, mr, nr, kcs[k], stride, (mr + nr + k) % 2,
                                             (mr * 3 + nr + k) % FINISH_KINDS);
                passed += check_gemm_ukernel_transposed(kt, mr, nr, kcs[k], (mr + nr + k + 1) % 2,
                                                        (mr + nr * 3 + k) % FINISH_KINDS);
                cases += 2;
            }
        }
    }
    passed += check_gemm_finish_nan(kt);
    cases++;
    printf("[%s] gemm micro-kernel %dx%d: %d/%d tiles (every mr x nr) agree\n", isa_name,
           kt->mr, kt->nr, passed, cases);
}

// --- 2. the gemv micro-kernel ---------------------------------------------------------------

static void test_gemv_ukernel(const cnn_kernel_table *kt) {
    int cases = 0, passed = 0;
    for (int t = 0; t < 120; t++) {
        int rows = 1 + t % CNN_GEMV_ROWS;
        int n = t < 40 ? t : rng_size(0, 300);
        if (t == 41) n = 4099;   // one long row: many full steps and a tail
        int stride = n + rng_int(0, 9);
        float *w = random_array((size_t)rows * stride + 1, 1.0f);
        float *x = random_array((size_t)n + 1, 1.0f);
        float y[CNN_GEMV_ROWS + 1];
        for (int r = 0; r <= CNN_GEMV_ROWS; r++) y[r] = SENTINEL;
        kt->gemv(rows, n, w, (size_t)stride, x, y);
        int ok = 1;
        for (int r = 0; r <= CNN_GEMV_ROWS && ok; r++) {
            double want = SENTINEL;
            if (r < rows) {
                want = 0.0;
                for (int i = 0; i < n; i++) want += (double)w[(size_t)r * stride + i] * x[i];
            }
            if (r < rows ? !close_enough(y[r], want) : y[r] != SENTINEL) {
                printf("FAIL [%s] gemv micro-kernel: y[%d] is %.9g, expected %.9g%s\n"
                       "  rows=%d n=%d w_stride=%d\n", isa_name, r, y[r], want,
                       r < rows ? "" : " (beyond rows: must be untouched)", rows, n, stride);
                failures++;
                ok = 0;
            }
        }
        // gemv2: for x and a second vector, exactly what gemv gives for each (bit for bit:
        // a batch's rows must not depend on their neighbours), rows beyond untouched
        if (ok && kt->gemv2) {
            float *x1 = random_array((size_t)n + 1, 1.0f);
            float y1[CNN_GEMV_ROWS + 1], p0[CNN_GEMV_ROWS + 1], p1[CNN_GEMV_ROWS + 1];
            for (int r = 0; r <= CNN_GEMV_ROWS; r++) y1[r] = p0[r] = p1[r] = SENTINEL;
            kt->gemv(rows, n, w, (size_t)stride, x1, y1);
            kt->gemv2(rows, n, w, (size_t)stride, x, x1, p0, p1);
            if (memcmp(p0, y, sizeof y) != 0 || memcmp(p1, y1, sizeof y1) != 0) {
                printf("FAIL [%s] gemv2 micro-kernel: not bit-identical to two gemv calls\n"
                       "  rows=%d n=%d w_stride=%d\n", isa_name, rows, n, stride);
                failures++;
                ok = 0;
            }
            free(x1);
        }
        passed += ok;
        cases++;
        free(w); free(x);
    }
    printf("[%s] gemv micro-kernel%s: %d/%d cases agree\n", isa_name,
           kt->gemv2 ? " (and gemv2)" : "", passed, cases);
}

// --- 3. sgemm -------------------------------------------------------------------------------

// sgemm against sgemm_ref on one shape; 1 if they agree (padding columns included).
static int check_sgemm(int M, int N, int K, int lda, int ldb, int ldc, int accumulate) {
    float *A = random_array((size_t)M * lda, 1.0f / sqrtf((float)(K + 1)));
    float *B = random_array((size_t)K * ldb + 1, 1.0f);
    float *C_ref = random_array((size_t)M * ldc, 1.0f);
    size_t c_bytes = (size_t)M * ldc * sizeof(float);
    float *C_fast = xmalloc(c_bytes), *C_low = xmalloc(c_bytes);
    memcpy(C_fast, C_ref, c_bytes);
    memcpy(C_low, C_ref, c_bytes);
    sgemm_ref(M, N, K, A, lda, B, ldb, C_ref, ldc, accumulate);
    sgemm(M, N, K, A, lda, B, ldb, C_fast, ldc, accumulate);
    sgemm_low_memory(M, N, K, A, lda, B, ldb, C_low, ldc, accumulate);
    long bad = first_mismatch(C_fast, C_ref, (size_t)M * ldc);
    if (bad >= 0) {
        printf("FAIL [%s] sgemm vs sgemm_ref: C[%ld,%ld] is %.9g, reference %.9g\n  M=%d N=%d "
               "K=%d lda=%d ldb=%d ldc=%d accumulate=%d\n", isa_name, bad / ldc, bad % ldc,
               C_fast[bad], C_ref[bad], M, N, K, lda, ldb, ldc, accumulate);
        failures++;
    }
    int same = memcmp(C_fast, C_low, c_bytes) == 0;   // the out-of-memory path: same numbers
    if (!same) {
        printf("FAIL [%s] sgemm_low_memory differs from sgemm (must be bit-identical)\n  M=%d "
               "N=%d K=%d lda=%d ldb=%d ldc=%d accumulate=%d\n", isa_name, M, N, K, lda, ldb,
               ldc, accumulate);
        failures++;
    }
    // A product with A packed transposed (C^T = B^T A^T, what a session uses for convs on small
    // maps; past SGEMM_NARROW_N_MAX columns through its stack-buffer path) must give exactly
    // sgemm's numbers, from the packed copy alone.
    int same_t = 1;
    if (!accumulate && K > 0) {
        float *packed = xmalloc(sgemm_packed_at_floats(M, K) * sizeof(float));
        int panel = sgemm_packed_at_panel();
        for (int i0 = 0; i0 < M; i0 += panel)
            sgemm_pack_at_rows(packed, M, K, i0, M - i0 < panel ? M - i0 : panel,
                               A + (size_t)i0 * lda, lda);
        sgemm_packed_a pa = sgemm_packed_at_of(packed, M, K);
        sgemm_operands op = {.a_packed = &pa, .lda = lda, .B = B, .ldb = ldb};
        float *C_t = xmalloc(c_bytes);
        memcpy(C_t, C_fast, c_bytes);
        for (int i = 0; i < M; i++) for (int j = 0; j < N; j++) C_t[(size_t)i * ldc + j] = NAN;
        sgemm_general(M, N, K, &op, C_t, ldc, 0);
        same_t = memcmp(C_t, C_fast, c_bytes) == 0;
        for (int i = 0; i < M; i++) for (int j = 0; j < N; j++) C_t[(size_t)i * ldc + j] = NAN;
        sgemm_general_low_memory(M, N, K, &op, C_t, ldc, 0);   // its stack-buffer path
        same_t = same_t && memcmp(C_t, C_fast, c_bytes) == 0;
        if (!same_t) {
            printf("FAIL [%s] sgemm with A packed transposed (or its low-memory path) differs "
                   "from sgemm (must be "
                   "bit-identical)\n  M=%d N=%d K=%d lda=%d ldb=%d ldc=%d\n", isa_name, M, N, K,
                   lda, ldb, ldc);
            failures++;
        }
        free(packed); free(C_t);
    }
    free(A); free(B); free(C_ref); free(C_fast); free(C_low);
    return bad < 0 && same && same_t;
}

static void test_sgemm(const cnn_kernel_table *kt) {
    int cases = 0, passed = 0;
    // Shapes at the blocking boundaries of this table: one tile, one slice, one register tile
    // plus and minus one (the tile and slice sizes of gemm.c derive from mr, nr and kc).
    const int MR = kt->mr, NR = kt->nr, KC = kt->kc;
    const int edges[][3] = {
        {MR, NR, 1}, {MR + 1, NR + 1, KC + 1}, {MR - 1 > 0 ? MR - 1 : 1, NR - 1, KC - 1},
        {1, 1, 1}, {1, 300, 33}, {300, 1, 40}, {2 * MR + 3, 7 * NR + 5, 2 * KC + 3},
        {129, 257, 17}, {131, 520, 5}, {530, 70, 300},   // past one 512-wide tile
        {64, 49, 576},                                   // conv-like: 7x7 output, 3x3x64 taps
    };
    for (size_t e = 0; e < sizeof edges / sizeof edges[0]; e++) {
        int M = edges[e][0], N = edges[e][1], K = edges[e][2];
        passed += check_sgemm(M, N, K, K + (int)e % 3, N + (int)e % 2, N + (int)e % 4, (int)e % 2);
        cases++;
    }
    for (int i = 0; i < 45; i++) {
        int M = rng_size(1, 300), N = rng_size(1, 300), K = rng_size(0, 300);
        if (i < 2) { K = 0; }   // K = 0: C zeroed, or left alone
        int lda = K + rng_int(0, 3), ldb = N + rng_int(0, 3), ldc = N + rng_int(0, 3);
        passed += check_sgemm(M, N, K, lda, ldb, ldc, i < 2 ? i : rng_int(0, 1));
        cases++;
    }
    printf("[%s] sgemm vs sgemm_ref (and its low-memory path): %d/%d shapes agree\n", isa_name,
           passed, cases);
}

// --- 4. conv2d and linear -------------------------------------------------------------------

typedef struct {
    int N, C, H, W, K, OH, OW;
    cnn_window win;
    int has_bias;
} conv_case;

static int conv_out_size(int in, int kernel, int stride, int pad, int dilation) {
    int span = dilation * (kernel - 1) + 1;
    return in + 2 * pad < span ? 0 : (in + 2 * pad - span) / stride + 1;
}

static int check_conv(const conv_case *c) {
    int CRS = c->C / c->win.groups * c->win.kernel[0] * c->win.kernel[1];
    size_t n_out = (size_t)c->N * c->K * c->OH * c->OW;
    float *inp = random_array((size_t)c->N * c->C * c->H * c->W, 1.0f);
    float *weight = random_array((size_t)c->K * CRS, 1.0f / sqrtf((float)CRS));
    float *bias = c->has_bias ? random_array(c->K, 0.5f) : NULL;
    float *ws = xmalloc(conv2d_workspace_floats(c->C, c->H, c->W, c->OH, c->OW, &c->win) *
                        sizeof(float));
    float *ref = xmalloc(n_out * sizeof(float)), *fast = xmalloc(n_out * sizeof(float));
    for (size_t i = 0; i < n_out; i++) fast[i] = NAN;   // every element must be written
    conv2d_forward_ref(ref, inp, weight, bias, c->N, c->C, c->H, c->W, c->K, c->OH, c->OW, &c->win);
    conv2d_forward(fast, inp, weight, bias, c->N, c->C, c->H, c->W, c->K, c->OH, c->OW, &c->win, ws);
    long bad = first_mismatch(fast, ref, n_out);
    if (bad >= 0) {
        printf("FAIL [%s] conv2d_forward vs conv2d_forward_ref: flat index %ld is %.9g, "
               "reference %.9g\n  inp [%d,%d,%d,%d] -> out [%d,%d,%d,%d], kernel %dx%d stride "
               "%d,%d padding %d,%d dilation %d,%d groups %d%s\n", isa_name, bad, fast[bad],
               ref[bad], c->N, c->C, c->H, c->W, c->N, c->K, c->OH, c->OW, c->win.kernel[0],
               c->win.kernel[1], c->win.stride[0], c->win.stride[1], c->win.padding[0],
               c->win.padding[1], c->win.dilation[0], c->win.dilation[1], c->win.groups,
               c->has_bias ? ", bias" : "");
        failures++;
    }
    // The fused epilogue (residual add, then relu) must equal the separate passes bit for bit.
    float *residual = random_array(n_out, 1.0f), *fused = xmalloc(n_out * sizeof(float));
    int with_residual = rng_int(0, 1);
    // ... with the weights pre-packed for sgemm (and not passed plain) where groups = 1, on
    // small maps every other time in the transposed form (C^T = B^T A^T)
    float *packed = NULL;
    sgemm_packed_a pa;
    int transposed = c->win.groups == 1 && c->OH * c->OW <= SGEMM_NARROW_N_MAX && CRS > 0 &&
                     rng_int(0, 1);
    if (transposed) {
        packed = xmalloc(sgemm_packed_at_floats(c->K, CRS) * sizeof(float));
        int panel = sgemm_packed_at_panel();
        for (int i0 = 0; i0 < c->K; i0 += panel)
            sgemm_pack_at_rows(packed, c->K, CRS, i0, c->K - i0 < panel ? c->K - i0 : panel,
                               weight + (size_t)i0 * CRS, CRS);
        pa = sgemm_packed_at_of(packed, c->K, CRS);
    } else if (c->win.groups == 1) {
        packed = xmalloc(sgemm_packed_a_floats(c->K, CRS) * sizeof(float));
        pa = sgemm_pack_a(packed, c->K, CRS, weight, CRS);
    }
    conv2d_forward_fused(fused, inp, packed ? NULL : weight, packed ? &pa : NULL, bias, c->N,
                         c->C, c->H, c->W, c->K, c->OH, c->OW, &c->win,
                         with_residual ? residual : NULL, 1, ws);
    int used_packed = packed != NULL;
    free(packed);
    if (with_residual) add_forward_ref(fast, fast, residual, n_out);
    relu_forward_ref(fast, fast, n_out);
    int same = memcmp(fused, fast, n_out * sizeof(float)) == 0;
    if (!same) {
        printf("FAIL [%s] conv2d_forward_fused (relu%s%s) differs from conv2d_forward + %srelu\n",
               isa_name, with_residual ? ", residual" : "",
               transposed ? ", weights packed transposed" : used_packed ? ", packed weights" : "",
               with_residual ? "add + " : "");
        failures++;
    }
    free(inp); free(weight); free(bias); free(ws); free(ref); free(fast); free(residual);
    free(fused);
    return bad < 0 && same;
}

static conv_case random_conv_case(void) {
    for (;;) {
        conv_case c = {0};
        c.N = rng_int(1, 3);
        int kind = rng_int(0, 5);   // 0-3 dense, 4 groups 2, 5 depthwise
        c.win.groups = kind <= 3 ? 1 : kind == 4 ? 2 : rng_int(2, 8);
        c.C = kind == 5 ? c.win.groups : c.win.groups * rng_int(1, 12);
        c.K = c.win.groups * (kind == 5 ? rng_int(1, 2) : rng_int(1, 40));
        for (int a = 0; a < 2; a++) {
            static const int sizes[] = {1, 1, 3, 3, 5, 7};
            c.win.kernel[a] = sizes[rng_int(0, 5)];
            c.win.stride[a] = rng_int(1, 3);
            c.win.padding[a] = rng_int(0, 2);
            c.win.dilation[a] = rng_int(1, 2);
        }
        c.H = rng_int(1, 24);
        c.W = rng_int(1, 24);
        c.has_bias = rng_int(0, 1);
        c.OH = conv_out_size(c.H, c.win.kernel[0], c.win.stride[0], c.win.padding[0], c.win.dilation[0]);
        c.OW = conv_out_size(c.W, c.win.kernel[1], c.win.stride[1], c.win.padding[1], c.win.dilation[1]);
        long macs = (long)c.N * c.K * c.OH * c.OW * (c.C / c.win.groups) * c.win.kernel[0] *
                    c.win.kernel[1];
        if (c.OH >= 1 && c.OW >= 1 && macs <= 400000) return c;
    }
}

static void test_conv(void) {
    int cases = 0, passed = 0;
    // a pointwise layer (no im2col) with a tail in every direction, then random ones
    conv_case pointwise = {.N = 2, .C = 37, .H = 9, .W = 11, .K = 45, .OH = 9, .OW = 11,
                           .has_bias = 1, .win = {.kernel = {1, 1}, .stride = {1, 1},
                           .dilation = {1, 1}, .groups = 1}};
    passed += check_conv(&pointwise);
    cases++;
    // im2col matrices above conv2d.c's IM2COL_STORED_MAX (2^19 floats) are gathered while
    // packing instead of stored: 3x3 over 64 channels at 47x45 (1.2M floats), and a strided,
    // padded, dilated, grouped one (1.3M floats per group)
    conv_case gathered[] = {
        {.N = 1, .C = 64, .H = 47, .W = 45, .K = 9, .OH = 47, .OW = 45, .has_bias = 1,
         .win = {.kernel = {3, 3}, .stride = {1, 1}, .padding = {1, 1}, .dilation = {1, 1},
                 .groups = 1}},
        {.N = 2, .C = 96, .H = 81, .W = 90, .K = 6, .OH = 40, .OW = 45, .has_bias = 0,
         .win = {.kernel = {5, 3}, .stride = {2, 2}, .padding = {1, 2}, .dilation = {1, 2},
                 .groups = 2}},
    };
    for (int i = 0; i < 2; i++) {
        passed += check_conv(&gathered[i]);
        cases++;
    }
    for (int i = 0; i < 30; i++) {
        conv_case c = random_conv_case();
        passed += check_conv(&c);
        cases++;
    }
    printf("[%s] conv2d_forward vs ref: %d/%d cases agree\n", isa_name, passed, cases);
}

static int check_linear(int N, int IN, int OUT, int has_bias) {
    float *inp = random_array((size_t)N * IN, 1.0f);
    float *weight = random_array((size_t)OUT * IN, 1.0f / sqrtf((float)IN));
    float *bias = has_bias ? random_array(OUT, 0.5f) : NULL;
    float *ref = xmalloc((size_t)N * OUT * sizeof(float)), *fast = xmalloc((size_t)N * OUT * sizeof(float));
    linear_forward_ref(ref, inp, weight, bias, N, IN, OUT);
    linear_forward(fast, inp, weight, bias, N, IN, OUT);
    long bad = first_mismatch(fast, ref, (size_t)N * OUT);
    if (bad >= 0) {
        printf("FAIL [%s] linear_forward vs linear_forward_ref: out[%ld,%ld] is %.9g, reference "
               "%.9g\n  inp [%d,%d], weight [%d,%d], %s\n", isa_name, bad / OUT, bad % OUT,
               fast[bad], ref[bad], N, IN, OUT, IN, has_bias ? "with bias" : "no bias");
        failures++;
    }
    free(inp); free(weight); free(bias); free(ref); free(fast);
    return bad < 0;
}

static void test_linear(void) {
    int cases = 0, passed = 0;
    passed += check_linear(1, 2048, 37, 1);   // a ResNet-style head at batch 1 (GEMV)
    passed += check_linear(3, 1001, 10, 0);
    cases += 2;
    for (int i = 0; i < 40; i++) {
        int N = i % 2 ? 1 : rng_int(2, 5);   // half batch 1 (the GEMV path)
        passed += check_linear(N, rng_size(1, 300), rng_size(1, 40), rng_int(0, 1));
        cases++;
    }
    printf("[%s] linear_forward vs ref (batch 1 and > 1): %d/%d cases agree\n", isa_name, passed,
           cases);
}

// --- 5. thread-count independence -----------------------------------------------------------

#ifdef _OPENMP
static void test_threads(void) {
    int saved = omp_get_max_threads();
    int M = 150, N = 333, K = 301;   // several tiles in both directions, two slices of K
    float *A = random_array((size_t)M * K, 0.1f), *B = random_array((size_t)K * N, 1.0f);
    float *one = xmalloc((size_t)M * N * sizeof(float)), *two = xmalloc((size_t)M * N * sizeof(float));
    omp_set_num_threads(1);
    sgemm(M, N, K, A, K, B, N, one, N, 0);
    omp_set_num_threads(2);
    sgemm(M, N, K, A, K, B, N, two, N, 0);
    if (memcmp(one, two, (size_t)M * N * sizeof(float)) != 0) {
        printf("FAIL [%s] sgemm differs between 1 and 2 threads (M=%d N=%d K=%d)\n", isa_name, M,
               N, K);
        failures++;
    }
    int IN = 1400, OUT = 70;   // linear at batch 1 and 2 (A and B are big enough)
    for (int batch = 1; batch <= 2; batch++) {
        omp_set_num_threads(1);
        linear_forward(one, A, B, NULL, batch, IN, OUT);
        omp_set_num_threads(2);
        linear_forward(two, A, B, NULL, batch, IN, OUT);
        if (memcmp(one, two, (size_t)batch * OUT * sizeof(float)) != 0) {
            printf("FAIL [%s] linear_forward differs between 1 and 2 threads (N=%d IN=%d OUT=%d)\n",
                   isa_name, batch, IN, OUT);
            failures++;
        }
    }
    omp_set_num_threads(saved);
    free(A); free(B); free(one); free(two);
    printf("[%s] thread independence: sgemm and linear bit-identical on 1 and 2 threads\n",
           isa_name);
}
#endif

// --- dispatch ---------------------------------------------------------------------------------

static void test_dispatch(void) {
    static const char *const names[CNN_ISA_COUNT] = {"scalar", "avx2", "avx512", "neon"};
    const cnn_kernel_table *selected = cnn_kernels();
    if (!selected || strcmp(cnn_isa(), selected->name) != 0) {
        printf("FAIL dispatch: cnn_isa() '%s' is not the selected table's name\n", cnn_isa());
        failures++;
    }
    if (!cnn_kernels_for(CNN_ISA_SCALAR)) {
        printf("FAIL dispatch: the scalar kernels must always be available\n");
        failures++;
    }
    for (int isa = 0; isa < CNN_ISA_COUNT; isa++) {
        const cnn_kernel_table *t = cnn_kernels_for((cnn_isa_id)isa);
        cnn_isa_id parsed = CNN_ISA_COUNT;
        cnn_status st = cnn_kernels_parse_isa(names[isa], &parsed);
        // CNNSCOPE_ISA=<name> is accepted exactly when the ISA is available here
        if ((st == CNN_OK) != (t != NULL) || (st == CNN_OK && parsed != (cnn_isa_id)isa) ||
            (st != CNN_OK && !strstr(cnn_last_error(), names[isa]))) {
            printf("FAIL dispatch: CNNSCOPE_ISA=%s gave status %d (%s) but the ISA is %s\n",
                   names[isa], (int)st, cnn_last_error(), t ? "available" : "unavailable");
            failures++;
        }
        if (t && (t->isa != (cnn_isa_id)isa || strcmp(t->name, names[isa]) != 0 || !t->gemm ||
                  !t->gemv || t->mr < 1 || t->nr < 1 || t->kc < 1)) {
            printf("FAIL dispatch: the table of %s is malformed\n", names[isa]);
            failures++;
        }
    }
#if defined(__x86_64__)
    if (cnn_kernels_for(CNN_ISA_NEON)) {
        printf("FAIL dispatch: an x86-64 build offers neon kernels\n");
        failures++;
    }
#endif
#if defined(__aarch64__)
    if (!cnn_kernels_for(CNN_ISA_NEON)) {
        printf("FAIL dispatch: an aarch64 build must offer neon kernels\n");
        failures++;
    }
#endif
    cnn_isa_id parsed;
    if (cnn_kernels_parse_isa("sse9", &parsed) != CNN_ERR_ARG ||
        !strstr(cnn_last_error(), "CNNSCOPE_ISA=sse9: unknown")) {
        printf("FAIL dispatch: CNNSCOPE_ISA=sse9 was not refused with a clear message ('%s')\n",
               cnn_last_error());
        failures++;
    }
    // What the process runs on, and why: a forced CNNSCOPE_ISA must have been honoured.
    const char *env = getenv("CNNSCOPE_ISA");
    cnn_status check = cnn_isa_check();
    if (env && env[0] && check == CNN_OK && strcmp(env, cnn_isa()) != 0) {
        printf("FAIL dispatch: CNNSCOPE_ISA=%s but the kernels in use are %s\n", env, cnn_isa());
        failures++;
    }
    printf("dispatch: default ISA %s%s%s; available:", cnn_isa(),
           check == CNN_OK ? "" : "; CNNSCOPE_ISA refused: ", check == CNN_OK ? "" : cnn_last_error());
    for (int isa = 0; isa < CNN_ISA_COUNT; isa++) {
        if (cnn_kernels_for((cnn_isa_id)isa)) printf(" %s", names[isa]);
    }
    printf("\n");
}

int main(void) {
    test_dispatch();
    cnn_isa_id default_isa = cnn_kernels()->isa;
    int ran = 0;
    for (int isa = 0; isa < CNN_ISA_COUNT; isa++) {
        const cnn_kernel_table *kt = cnn_kernels_for((cnn_isa_id)isa);
        if (!kt) continue;
        if (!cnn_kernels_force((cnn_isa_id)isa) || cnn_kernels() != kt ||
            strcmp(cnn_isa(), kt->name) != 0) {
            printf("FAIL dispatch: forcing %s did not make it the kernels in use\n", kt->name);
            failures++;
            continue;
        }
        isa_name = kt->name;
        int failures_before = failures;
        test_gemm_ukernel(kt);
        test_gemv_ukernel(kt);
        test_sgemm(kt);
        test_conv();
        test_linear();
#ifdef _OPENMP
        test_threads();
#endif
        printf("ISA %s ran: %s\n", kt->name, failures == failures_before ? "all agree" : "FAILED");
        ran++;
    }
    cnn_kernels_force(default_isa);
    if (failures) {
        printf("test_kernels: %d FAILED\n", failures);
        return 1;
    }
    printf("test_kernels: all passed on %d ISA%s\n", ran, ran == 1 ? "" : "s");
    return 0;
}
