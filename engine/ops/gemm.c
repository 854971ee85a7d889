// gemm.c - C[M,N] (+)= A[M,K] @ B[K,N], row-major, float32. See gemm.h for the contract.
//
// The fast path is a small Goto-style blocking written in plain C that gcc and clang
// auto-vectorise at -O2 (measured with bench/conv_bench.c):
//   - C is cut into tiles of at most TILE_M x TILE_N. Tiles are independent, so OpenMP hands
//     them out to threads; each element of C belongs to one tile, so no sum is ever split.
//   - Inside a tile, K is walked in slices of GEMM_KC. For each slice the tile's block of B is
//     packed into GEMM_NR-wide column panels, then every GEMM_MR-row sliver of A runs against
//     every panel.
//   - The micro-kernel keeps a GEMM_MR x GEMM_NR block of C in registers. Its inner loop runs
//     over the GEMM_NR contiguous columns of a packed row of B with a compile-time trip count,
//     which is what the vectorisers need (gcc -O2 only vectorises loops whose count is a
//     known multiple of the vector width).
//   - Tails (M % GEMM_MR, N % GEMM_NR) go through a plain loop with the same summation order.
// Tile and slice sizes depend on the problem shape only, never on the thread count, so the
// result is bit-identical for any number of threads.
#include <string.h>
#include "gemm.h"

enum {
    GEMM_MR = 4,     // rows of C per micro-kernel call (one accumulator array per row)
    GEMM_NR = 16,    // columns of C per micro-kernel call (4 SSE / 2 AVX vectors)
    GEMM_KC = 256,   // slice of K: a 256x16 B panel is 16 KB, a 4x256 A sliver 4 KB
    TILE_M = 64,     // largest tile of C handed to one thread: 64 x 128; its packed B block
    TILE_N = 128,    // (GEMM_KC x TILE_N = 128 KB) lives on that thread's stack
};

void sgemm_ref(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
               int ldc, int accumulate) {
    // A is (M,K), B is (K,N), C is (M,N)
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double sum = accumulate ? C[(size_t)i * ldc + j] : 0.0;
            for (int p = 0; p < K; p++) {
                sum += (double)A[(size_t)i * lda + p] * B[(size_t)p * ldb + j];
            }
            C[(size_t)i * ldc + j] = (float)sum;
        }
    }
}

// C[4,16] (+)= A[4,kc] @ B[kc,16]. The four rows are written out by hand rather than as a loop
// over i: that keeps each row's 16 accumulators in registers on both gcc and clang at -O2.
static void gemm_4x16(int kc, const float *restrict A, int lda, const float *restrict B,
                      int ldb, float *restrict C, int ldc, int accumulate) {
    float c0[GEMM_NR] = {0}, c1[GEMM_NR] = {0}, c2[GEMM_NR] = {0}, c3[GEMM_NR] = {0};
    const float *a0 = A, *a1 = A + lda, *a2 = A + 2 * (size_t)lda, *a3 = A + 3 * (size_t)lda;
    for (int p = 0; p < kc; p++) {
        const float *restrict b = B + (size_t)p * ldb;
        for (int j = 0; j < GEMM_NR; j++) {
            c0[j] += a0[p] * b[j];
            c1[j] += a1[p] * b[j];
            c2[j] += a2[p] * b[j];
            c3[j] += a3[p] * b[j];
        }
    }
    float *restrict r0 = C, *restrict r1 = C + ldc;
    float *restrict r2 = C + 2 * (size_t)ldc, *restrict r3 = C + 3 * (size_t)ldc;
    if (accumulate) {
        for (int j = 0; j < GEMM_NR; j++) {
            r0[j] += c0[j]; r1[j] += c1[j]; r2[j] += c2[j]; r3[j] += c3[j];
        }
    } else {
        for (int j = 0; j < GEMM_NR; j++) {
            r0[j] = c0[j]; r1[j] = c1[j]; r2[j] = c2[j]; r3[j] = c3[j];
        }
    }
}

// The same computation for a partial block (mr <= GEMM_MR, nr <= GEMM_NR), same order of sums.
static void gemm_edge(int mr, int nr, int kc, const float *A, int lda, const float *B, int ldb,
                      float *C, int ldc, int accumulate) {
    float acc[GEMM_MR][GEMM_NR] = {{0}};
    for (int p = 0; p < kc; p++) {
        for (int i = 0; i < mr; i++) {
            float a = A[(size_t)i * lda + p];
            for (int j = 0; j < nr; j++) acc[i][j] += a * B[(size_t)p * ldb + j];
        }
    }
    for (int i = 0; i < mr; i++) {
        for (int j = 0; j < nr; j++) {
            float *c = &C[(size_t)i * ldc + j];
            *c = accumulate ? *c + acc[i][j] : acc[i][j];
        }
    }
}

// One tile of C (at most TILE_M x TILE_N), serially. K is walked in slices of GEMM_KC; for
// each slice, the tile's block of B is first copied into a contiguous buffer as GEMM_NR-wide
// column panels ((kc, GEMM_NR) each, one after another). The copy reads whole rows of B, which
// the prefetchers follow; the micro-kernel then reads its panel sequentially from L1/L2 instead
// of touching one cache line per far-apart row of B.
static void gemm_tile(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float *C, int ldc, int accumulate) {
    float packed_b[GEMM_KC * TILE_N];   // (N/GEMM_NR panels, kc, GEMM_NR)
    if (K == 0 && !accumulate) {
        for (int i = 0; i < M; i++) memset(&C[(size_t)i * ldc], 0, (size_t)N * sizeof(float));
    }
    int full_panels = M >= GEMM_MR ? N / GEMM_NR : 0;   // panels the micro-kernel will read
    for (int p0 = 0; p0 < K; p0 += GEMM_KC) {
        int kc = K - p0 < GEMM_KC ? K - p0 : GEMM_KC;
        int acc = accumulate || p0 > 0;   // later slices add onto the earlier ones
        for (int p = 0; p < kc; p++) {
            const float *b_row = B + (size_t)(p0 + p) * ldb;
            for (int panel = 0; panel < full_panels; panel++) {
                memcpy(&packed_b[((size_t)panel * kc + p) * GEMM_NR], &b_row[panel * GEMM_NR],
                       sizeof(float) * GEMM_NR);
            }
        }
        for (int i0 = 0; i0 < M; i0 += GEMM_MR) {
            int mr = M - i0 < GEMM_MR ? M - i0 : GEMM_MR;
            const float *a = A + (size_t)i0 * lda + p0;
            for (int j0 = 0; j0 < N; j0 += GEMM_NR) {
                int nr = N - j0 < GEMM_NR ? N - j0 : GEMM_NR;
                float *c = C + (size_t)i0 * ldc + j0;
                if (mr == GEMM_MR && nr == GEMM_NR) {
                    const float *b = &packed_b[(size_t)(j0 / GEMM_NR) * kc * GEMM_NR];
                    gemm_4x16(kc, a, lda, b, GEMM_NR, c, ldc, acc);
                } else {
                    gemm_edge(mr, nr, kc, a, lda, B + (size_t)p0 * ldb + j0, ldb, c, ldc, acc);
                }
            }
        }
    }
}

void sgemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
           int ldc, int accumulate) {
    if (M <= 0 || N <= 0) return;
    // Tile sizes: start large (a 64 x 128 tile reuses each packed B panel 16 times and each A
    // sliver 8 times) and halve until there are enough tiles to keep a few threads busy.
    int tile_m = TILE_M, tile_n = TILE_N;
    for (;;) {
        long tiles = (long)((M + tile_m - 1) / tile_m) * ((N + tile_n - 1) / tile_n);
        if (tiles >= 8) break;
        if (tile_n > 64 && N > 64) tile_n /= 2;
        else if (tile_m > 16 && M > 16) tile_m /= 2;
        else break;
    }
    int tiles_m = (M + tile_m - 1) / tile_m, tiles_n = (N + tile_n - 1) / tile_n;
    int tiles = tiles_m * tiles_n;
    #pragma omp parallel for schedule(dynamic) if (tiles > 1 && 2.0 * M * N * K > 2e6)
    for (int t = 0; t < tiles; t++) {
        int i0 = (t / tiles_n) * tile_m, j0 = (t % tiles_n) * tile_n;
        int m = M - i0 < tile_m ? M - i0 : tile_m;
        int n = N - j0 < tile_n ? N - j0 : tile_n;
        gemm_tile(m, n, K, A + (size_t)i0 * lda, lda, B + j0, ldb, C + (size_t)i0 * ldc + j0, ldc,
                  accumulate);
    }
}
