// gemm.c - C[M,N] (+)= A[M,K] @ B[K,N], row-major, float32. See gemm.h for the contract.
//
// Dims: M,N,K of the product; MR x NR the micro-kernel's register tile and KC its slice of K
// (from the kernel table, engine/kernels/kernels.h); a tile is the block of C one task owns.
//
// A small Goto-style blocking around a SIMD micro-kernel picked at run time (dispatch.c):
//   - C is cut into tiles (up to about 512 x 512, multiples of MR x NR; as few as possible,
//     and when several threads share the product a multiple of their number, B's panels
//     shared out evenly: every extra band of rows packs B again, every extra column of tiles
//     reads A again). Tiles are independent, so OpenMP hands them out to threads; each
//     element of C belongs to one tile, so no sum is ever split.
//   - Inside a tile, K is walked in slices of KC. For each slice the tile's block of B is
//     packed into NR-wide column panels ((kc, NR) each, zero-padded past N), then each MR-row
//     sliver of A is packed ((kc, MR), zero-padded past M) and run against every panel. The
//     sliver stays in L1 while the panels stream from L2; the packing reads B row by row and
//     A's MR rows side by side, runs the prefetchers follow.
//   - The micro-kernel keeps an MR x NR block of C in registers for the whole slice and writes
//     only the part of it that exists in C (tails are its job).
//   - B is a stored matrix, or comes row by row from a function (a conv's im2col rows,
//     gathered straight into the panels). A may come pre-packed (sgemm_pack_a: a conv's
//     weights, packed once per session), its slivers then read in place. In the last slice
//     of K the kernel applies the optional epilogue (bias, residual add, relu) to its tile in
//     registers, before its one store (cnn_gemm_finish; as a pass over C afterwards it took
//     20 % of the time of a 1x1 conv with K = 64).
//   - A narrow C (a conv on a 7x7 or 14x14 map) is computed transposed, C^T = B^T A^T, with A
//     pre-packed as the right operand (sgemm_pack_at_rows): see sgemm_transposed.
// Each element of C is summed the same way whatever the tiles: over p in slices of kc (a
// function of K and the kernel table only), each slice in order by one kernel call, then added
// to C. So for a given ISA the result is bit-identical for any number of threads, any tile
// size, transposed or not, and with or without the large packing buffer.
#include <assert.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <string.h>
#include "gemm.h"
#include "kernels/kernels.h"
#include "work_share.h"

enum {
    TILE_MAX = 512,    // largest tile of C: rows and columns (then multiples of MR and NR)
    B_PREFETCH_ROWS = 8,   // packing B asks for the row this far ahead
    KC_MAX = 256,      // upper bounds of a table's kc, mr and nr (they size the stack buffers
    MR_MAX = 16,       // of the low-memory path)
    NR_MAX = 32,
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

static int ceil_div(int x, int y) {
    return (x + y - 1) / y;
}

static int round_up(int x, int multiple) {
    return (x + multiple - 1) / multiple * multiple;
}

// Whether pa was packed for these kernels (kt) as an M x K matrix, plain or transposed.
static int packed_fits(const cnn_kernel_table *kt, const sgemm_packed_a *pa, int M, int K) {
    return pa->mr == (pa->transposed ? kt->nr : kt->mr) && pa->kc == kt->kc && pa->M == M &&
           pa->K == K;
}

const float *sgemm_packed_a_sliver_at(const sgemm_packed_a *pa, int p0, int i0) {
    int kc = pa->K - p0 < pa->kc ? pa->K - p0 : pa->kc;
    return pa->data + (size_t)p0 * round_up(pa->M, pa->mr) + (size_t)i0 * kc;
}

int sgemm_packed_a_fits(const sgemm_packed_a *pa, int M, int K) {
    return pa && !pa->transposed && packed_fits(cnn_kernels(), pa, M, K);
}

// a_packed (kc, MR) = the mr x kc block of A at `A`, transposed (a_packed[p*MR + i] =
// A[i][p]), rows mr..MR-1 zero. Also asks for the next `next_kc` floats of each row (the
// sliver's next slice of K) to be prefetched: runs of kc floats are too short for the hardware
// prefetchers, and for a weight-heavy product (N small, so little work per element of A) this
// read is the bottleneck.
static void pack_a(int mr, int kc, int MR, const float *A, int lda, float *restrict a_packed,
                   int next_kc) {
    for (int i = 0; i < mr; i++) {
        const float *a_row = A + (size_t)i * lda;
        for (int p = 0; p < next_kc; p += 16) __builtin_prefetch(a_row + kc + p);
    }
    for (int p = 0; p < kc; p++) {
        float *dst = a_packed + (size_t)p * MR;
        for (int i = 0; i < mr; i++) dst[i] = A[(size_t)i * lda + p];
        for (int i = mr; i < MR; i++) dst[i] = 0.0f;
    }
}

// Copies n floats; n is the panel width NR (8, 16 or 32) or the sliver height MR (4, 6, 8, 14)
// in the common case, where the constant-size copies become a few vector moves instead of a
// call.
static inline void copy_row(float *restrict dst, const float *restrict src, int n) {
    switch (n) {
    case 4: memcpy(dst, src, 4 * sizeof(float)); break;
    case 6: memcpy(dst, src, 6 * sizeof(float)); break;
    case 8: memcpy(dst, src, 8 * sizeof(float)); break;
    case 14: memcpy(dst, src, 14 * sizeof(float)); break;
    case 16: memcpy(dst, src, 16 * sizeof(float)); break;
    case 32: memcpy(dst, src, 32 * sizeof(float)); break;
    default: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    }
}

// Where B comes from: a row-major matrix, or a function that gives it row by row.
typedef struct {
    const float *data;    // B[p][j] = data[p*ld + j], when row is NULL
    int ld;
    sgemm_row_fn row;
    const void *ctx;
} b_source;

// The kc x n block of B at rows [p0, p0+kc), columns [j0, j0+n) as ceil(n/NR) panels, one
// after another in b_packed: panel q is (kc, NR) with b_packed[q*kc*NR + p*NR + j] =
// B[p0+p][j0 + q*NR + j], and zeros past column n. Row by row, so that a stored B is read
// front to back in long runs the prefetchers follow (a panel at a time would read NR floats
// from each of kc rows far apart). `scratch` holds n floats for a row function.
static void pack_b(int n, int kc, int NR, const b_source *src, int p0, int j0, float *scratch,
                   float *restrict b_packed) {
    int full = n / NR, tail = n - full * NR;
    for (int p = 0; p < kc; p++) {
        const float *b_row;
        if (src->row) {
            b_row = src->row(src->ctx, p0 + p, j0, n, scratch);
        } else {
            b_row = src->data + (size_t)(p0 + p) * src->ld + j0;
            if (p + B_PREFETCH_ROWS < kc) {   // short runs far apart: help the prefetchers
                const float *ahead = b_row + B_PREFETCH_ROWS * (size_t)src->ld;
                for (int j = 0; j < n; j += 16) __builtin_prefetch(ahead + j);
            }
        }
        float *dst = b_packed + (size_t)p * NR;
        for (int q = 0; q < full; q++) copy_row(dst + (size_t)q * kc * NR, b_row + q * NR, NR);
        if (tail) {
            float *last = dst + (size_t)full * kc * NR;
            memcpy(last, b_row + full * NR, (size_t)tail * sizeof(float));
            memset(last + tail, 0, (size_t)(NR - tail) * sizeof(float));
        }
    }
}

// A buffer of at least `bytes` (64-byte aligned) that belongs to the calling thread and is kept
// for its next call, in one of three slots (0: a thread's packing buffer, 1: the B shared by a
// team, 2: the operands of a transposed product). Products come by the thousand - every conv
// of every image - and a malloc and free of a large buffer for each fragmented the heap: a
// 10,000-image run grew to several times the memory of a 100-image one. NULL if there is no
// memory (the callers then do without).
static float *thread_buffer(int slot, size_t bytes) {
    static _Thread_local float *buffer[3];
    static _Thread_local size_t have[3];
    if (bytes > have[slot]) {
        free(buffer[slot]);
        buffer[slot] = aligned_alloc(64, (bytes + 63) / 64 * 64);
        have[slot] = buffer[slot] ? bytes : 0;
    }
    return buffer[slot];
}

// The epilogue of the block of C at row `row` (of the whole product: the bias' index) and
// column `col` of a matrix whose residual block starts at `residual` (row `res_row` of it), for
// a kernel to apply (kernels.h). Only what a kernel call reads; NULL entries when ep has none.
static cnn_gemm_finish finish_of(const sgemm_epilogue *ep, int row, const float *residual,
                                 int res_row, int col) {
    cnn_gemm_finish f = {0};
    if (!ep) return f;
    f.bias = ep->bias ? ep->bias + row : NULL;
    f.residual = residual ? residual + (size_t)res_row * ep->ldr + col : NULL;
    f.ldr = (size_t)ep->ldr;
    f.relu = ep->relu;
    return f;
}

// The finish of a tile of a transposed product, C^T = B^T A^T (kernels.h, cnn_gemm_finish's
// out): the tile's element (i, j) is C's element (row0 + j, col0 + i), through the epilogue.
static cnn_gemm_finish finish_transposed(const sgemm_epilogue *ep, float *C, int ldc, int row0,
                                         int col0) {
    cnn_gemm_finish f = finish_of(ep, row0, ep ? ep->residual : NULL, row0, col0);
    f.out = C + (size_t)row0 * ldc + col0;
    f.ld_out = (size_t)ldc;
    return f;
}

// The piece of the `lines` cache lines at `next` that kernel call `call` of `calls` asks for
// (kernels.h's prefetch hint: what the caller needs after these calls, split evenly over
// them). Sets *piece; returns its number of lines (0: none).
static int ahead_piece(const char *next, int lines, int calls, int call, const void **piece) {
    int per_call = ceil_div(lines, calls), left = lines - call * per_call;
    int n = left < per_call ? left : per_call;
    *piece = n > 0 ? next + (size_t)call * per_call * 64 : NULL;
    return n > 0 ? n : 0;
}

// One tile of C (m x n), serially. a_buf holds MR*kc floats, b_buf b_panels panels of kc*NR.
// Normally b_buf holds all of the tile's panels; with fewer (no memory for the large buffer)
// the panels are packed a group at a time, the same kernel calls run on the same packed
// values, and the result is the same.
// With a pre-packed A (pa), the slivers are read from it in place: the tile's rows start at
// row i_tile of it.
static void gemm_tile(const cnn_kernel_table *kt, int m, int n, int K, const float *A, int lda,
                      const sgemm_packed_a *pa, int i_tile, const b_source *B, int j_tile,
                      float *C, int ldc, int accumulate, const sgemm_epilogue *ep,
                      const float *residual, float *a_buf, float *b_buf, int b_panels,
                      float *scratch) {
    const int MR = kt->mr, NR = kt->nr;
    for (int p0 = 0; p0 < K; p0 += kt->kc) {
        int kc = K - p0 < kt->kc ? K - p0 : kt->kc;
        int acc = accumulate || p0 > 0;   // later slices add onto the earlier ones
        for (int jb = 0; jb < n; jb += b_panels * NR) {
            int nb = n - jb < b_panels * NR ? n - jb : b_panels * NR;   // columns of this group
            pack_b(nb, kc, NR, B, p0, j_tile + jb, scratch, b_buf);
            for (int i0 = 0; i0 < m; i0 += MR) {
                int mr = m - i0 < MR ? m - i0 : MR;
                const float *a_sliver = a_buf;
                if (pa) {
                    a_sliver = sgemm_packed_a_sliver_at(pa, p0, i_tile + i0);
                } else {
                    int next_kc = K - p0 - kc < kt->kc ? K - p0 - kc : kt->kc;
                    pack_a(mr, kc, MR, A + (size_t)i0 * lda + p0, lda, a_buf, next_kc);
                }
                // A pre-packed next sliver (weights, from memory) is asked for a piece per
                // kernel call on this one.
                const char *next = pa && i0 + MR < m ? (const char *)(a_sliver + (size_t)MR * kc)
                                                     : NULL;
                int next_lines = next ? MR * kc / 16 : 0;
                for (int j0 = 0; j0 < nb; j0 += NR) {
                    int nr = nb - j0 < NR ? nb - j0 : NR;
                    const void *ahead;
                    int ahead_lines = ahead_piece(next, next_lines, ceil_div(nb, NR), j0 / NR,
                                                  &ahead);
                    // the last slice: the kernel finishes the sums it completes
                    cnn_gemm_finish fin = finish_of(ep, i_tile + i0, residual, i0, jb + j0);
                    kt->gemm(mr, nr, kc, a_sliver, b_buf + (size_t)(j0 / NR) * kc * NR,
                             C + (size_t)i0 * ldc + jb + j0, (size_t)ldc, acc,
                             ep && p0 + kc == K ? &fin : NULL, ahead, ahead_lines);
                }
            }
        }
    }
}

// Narrow products, whose columns fit one tile (N <= TILE_MAX: a conv at batch 1 on maps up to
// 22x22, the late layers of a ResNet). Split into tiles for the threads, every band of rows
// would pack the same B again (8 tiles of a 256 x 196 product packed B four times). Instead the
// threads pack each slice of B once, together (a panel each), into one shared buffer, then
// share out the slivers of A against it. The kernel calls and their operands are
// those of gemm_tile, so the numbers are too. Returns 0, having done nothing, if the shared
// buffer cannot be allocated.
static int sgemm_shared_b(const cnn_kernel_table *kt, int M, int N, int K, const float *A,
                          int lda, const sgemm_packed_a *pa, const b_source *B, float *C,
                          int ldc, int accumulate, const sgemm_epilogue *ep) {
    const int MR = kt->mr, NR = kt->nr;
    const int panels = ceil_div(N, NR), slivers = ceil_div(M, MR);
    size_t bytes = ((size_t)(K < kt->kc ? K : kt->kc) * panels * NR * sizeof(float) + 63) / 64 * 64;
    float *b_shared = thread_buffer(1, bytes);
    if (!b_shared) return 0;
    #pragma omp parallel
    {
        _Alignas(64) float a_buf[MR_MAX * KC_MAX], scratch[NR_MAX];
        for (int p0 = 0; p0 < K; p0 += kt->kc) {
            int kc = K - p0 < kt->kc ? K - p0 : kt->kc;
            int acc = accumulate || p0 > 0;
            #pragma omp for schedule(static)
            for (int q = 0; q < panels; q++) {
                int nr = N - q * NR < NR ? N - q * NR : NR;
                pack_b(nr, kc, NR, B, p0, q * NR, scratch, b_shared + (size_t)q * kc * NR);
            }   // (the implicit barrier: the whole slice is packed before anyone reads it)
            #pragma omp for schedule(dynamic)
            for (int s = 0; s < slivers; s++) {
                int i0 = s * MR, mr = M - i0 < MR ? M - i0 : MR;
                const float *a_sliver = a_buf;
                if (pa) {
                    a_sliver = sgemm_packed_a_sliver_at(pa, p0, i0);
                } else {
                    int next_kc = K - p0 - kc < kt->kc ? K - p0 - kc : kt->kc;
                    pack_a(mr, kc, MR, A + (size_t)i0 * lda + p0, lda, a_buf, next_kc);
                }
                for (int q = 0; q < panels; q++) {
                    int nr = N - q * NR < NR ? N - q * NR : NR;
                    cnn_gemm_finish fin = finish_of(ep, i0, ep ? ep->residual : NULL, i0, q * NR);
                    kt->gemm(mr, nr, kc, a_sliver, b_shared + (size_t)q * kc * NR,
                             C + (size_t)i0 * ldc + q * NR, (size_t)ldc, acc,
                             ep && p0 + kc == K ? &fin : NULL, NULL, 0);
                }
            }   // (and here: nobody packs the next slice while the buffer is read)
        }
    }
    return 1;
}

// ---- The transposed product, for a narrow C ---------------------------------------------------
// When N is small (a conv on a 7x7 or 14x14 map at batch 1: N = 49 or 196) the NR-column panels
// of B fit it badly (49 columns fill 2 panels of 32 to 77 %), while M (channels: 256, 512) is a
// multiple of NR. Computing C^T = B^T A^T puts N on the MR-row side instead (49 positions fill
// 4 slivers of 14 to 88 %, 196 fill 14 exactly): A comes pre-packed as B panels
// (sgemm_pack_at_rows, at session creation), B's rows are cut into slivers of MR columns, and
// the kernel, in the last slice of K, transposes its finished tile in registers into C (the
// earlier slices' partial sums go to a buffer of C^T). Each element is the same sum as in
// gemm_tile (the same products over p in the same slices, the multiply-adds commute), then the
// same epilogue, so the result is bit-identical to the untransposed product.

// Row p of B into B^T, whose slices (rows [p0, p0+kc) of B, kc = KC or what is left of K) are
// stored one after another, slice p0 at bt + N_pad*p0, each as (kc, MR) slivers: sliver s holds
// columns [s*MR, s*MR+MR) (zeros past N), bt[N_pad*p0 + s*kc*MR + (p-p0)*MR + i] =
// B[p][s*MR + i]. `row` holds N floats.
static void pack_bt_row(int N, int K, int KC, int MR, const b_source *src, int p, float *row,
                        float *restrict bt) {
    int p0 = p / KC * KC, kc = K - p0 < KC ? K - p0 : KC;
    int slivers = ceil_div(N, MR);
    float *a_t = bt + (size_t)slivers * MR * p0;
    const float *b_row = src->row ? src->row(src->ctx, p, 0, N, row)
                                  : src->data + (size_t)p * src->ld;
    for (int s = 0; s < slivers; s++) {
        float *dst = a_t + ((size_t)s * kc + (p - p0)) * MR;
        int n = N - s * MR < MR ? N - s * MR : MR;
        if (n == MR) {
            copy_row(dst, b_row + s * MR, MR);
        } else {
            for (int i = 0; i < n; i++) dst[i] = b_row[s * MR + i];
            for (int i = n; i < MR; i++) dst[i] = 0.0f;
        }
    }
}

// C = A @ B (accumulate 0) with A packed transposed (pa->transposed), as C^T = B^T A^T, for
// N <= SGEMM_NARROW_N_MAX. B^T is packed whole first (the threads share its rows), then the
// threads share out groups of panels of A^T (columns of C^T, rows of C), each group through
// every slice of K. Returns 0, having done nothing, if its buffer cannot be allocated.
enum {
    BT_ROWS_PER_ITEM = 16,     // rows of B packed into B^T per item of work
    TRANSPOSED_ITEMS = 4,      // groups of panels per thread, for work_share to balance
};
static int sgemm_transposed(const cnn_kernel_table *kt, int M, int N, int K,
                            const sgemm_packed_a *pa, const b_source *B, float *C, int ldc,
                            const sgemm_epilogue *ep) {
    const int MR = kt->mr, NR = kt->nr;
    const int slivers = ceil_div(N, MR), panels = ceil_div(M, NR);
    const size_t N_pad = (size_t)slivers * MR, M_pad = (size_t)panels * NR;
    // B^T, slice after slice (slice p0 at N_pad * p0), then C^T (N_pad x M_pad)
    size_t bt_floats = N_pad * (size_t)K, ct_floats = N_pad * M_pad;
    float *buf = thread_buffer(2, (bt_floats + ct_floats) * sizeof(float));
    if (!buf) return 0;
    float *bt = buf, *ct = buf + bt_floats;
    int parallel = panels > 1 && 2.0 * M * N * K > 2e6, threads = 1;
#ifdef _OPENMP
    if (parallel && !omp_in_parallel()) threads = omp_get_max_threads();
#else
    (void)parallel;
#endif
    // A group's panels are a conv's weights, on 7x7 maps read from memory for little work:
    // each is used by all slivers while it is in L1, and the stream of the next overlaps
    // several kernel calls instead of one (ResNet-50, 1 thread: 5 % faster than a panel at a
    // time). Several groups per thread, so that a thread on a slower vCPU hands some over.
    const int group = ceil_div(panels, threads * TRANSPOSED_ITEMS);
    const int groups = ceil_div(panels, group);
    work_share rows, panel_groups;
    work_share_begin(&rows, ceil_div(K, BT_ROWS_PER_ITEM));
    work_share_begin(&panel_groups, groups);
    #pragma omp parallel if (parallel)
    {
        float row[SGEMM_NARROW_N_MAX];   // a row of B, from B's row function
        for (long it; (it = work_share_next(&rows)) >= 0;) {
            int p_end = (int)(it + 1) * BT_ROWS_PER_ITEM < K ? (int)(it + 1) * BT_ROWS_PER_ITEM : K;
            for (int p = (int)it * BT_ROWS_PER_ITEM; p < p_end; p++)
                pack_bt_row(N, K, kt->kc, MR, B, p, row, bt);
        }
        #pragma omp barrier   // B^T is whole before anyone reads it
        for (long g; (g = work_share_next(&panel_groups)) >= 0;) {
            int q_lo = (int)g * group, q_hi = q_lo + group < panels ? q_lo + group : panels;
            for (int p0 = 0; p0 < K; p0 += kt->kc) {
                int kc = K - p0 < kt->kc ? K - p0 : kt->kc;
                for (int q = q_lo; q < q_hi; q++) {
                    int nr = M - q * NR < NR ? M - q * NR : NR;
                    const float *at_panel = pa->data + (size_t)p0 * M_pad + (size_t)q * kc * NR;
                    // The panel the group needs next (the following one, or its first of the
                    // next slice), a piece asked for by each kernel call while it sums.
                    int next_kc = K - p0 - kc < kt->kc ? K - p0 - kc : kt->kc;
                    const char *next = (const char *)(q + 1 < q_hi ? at_panel + (size_t)kc * NR
                                       : next_kc > 0 ? pa->data + (size_t)(p0 + kc) * M_pad +
                                                       (size_t)q_lo * next_kc * NR
                                       : NULL);
                    int next_lines = next ? (q + 1 < q_hi ? kc : next_kc) * NR / 16 : 0;
                    for (int s = 0; s < slivers; s++) {
                        int mr = N - s * MR < MR ? N - s * MR : MR;
                        const float *bt_sliver = bt + N_pad * p0 + (size_t)s * kc * MR;
                        const void *ahead;
                        int ahead_lines = ahead_piece(next, next_lines, slivers, s, &ahead);
                        // the last slice: the kernel writes the tile, finished, into C
                        // transposed
                        cnn_gemm_finish fin = finish_transposed(ep, C, ldc, q * NR, s * MR);
                        kt->gemm(mr, nr, kc, bt_sliver, at_panel,
                                 ct + (size_t)s * MR * M_pad + q * NR, M_pad, p0 > 0,
                                 p0 + kc == K ? &fin : NULL, ahead, ahead_lines);
                    }
                }
            }
        }
    }
    return 1;
}

// The same product with stack buffers only (no memory for sgemm_transposed's, or N too large
// for them), one register tile at a time: for each sliver of positions and panel of rows, the
// tile's sum over every slice (its slice of B^T packed again for each panel), the last one
// written, finished, into C. The same kernel calls on the same values, so the same numbers,
// only slower.
static void sgemm_transposed_small(const cnn_kernel_table *kt, int M, int N, int K,
                                   const sgemm_packed_a *pa, const b_source *B, float *C,
                                   int ldc, const sgemm_epilogue *ep) {
    const int MR = kt->mr, NR = kt->nr;
    const size_t M_pad = (size_t)round_up(M, NR);
    _Alignas(64) float bt[MR_MAX * KC_MAX], tile[MR_MAX * NR_MAX], row[MR_MAX];
    for (int s0 = 0; s0 < N; s0 += MR) {
        int mr = N - s0 < MR ? N - s0 : MR;   // positions (columns of C) in this sliver
        for (int q0 = 0; q0 < M; q0 += NR) {
            int nr = M - q0 < NR ? M - q0 : NR;   // rows of C in this panel
            for (int p0 = 0; p0 < K; p0 += kt->kc) {
                int kc = K - p0 < kt->kc ? K - p0 : kt->kc;
                for (int p = 0; p < kc; p++) {
                    const float *b_row = B->row ? B->row(B->ctx, p0 + p, s0, mr, row)
                                                : B->data + (size_t)(p0 + p) * B->ld + s0;
                    for (int i = 0; i < MR; i++) bt[p * MR + i] = i < mr ? b_row[i] : 0.0f;
                }
                const float *at_panel = pa->data + (size_t)p0 * M_pad + (size_t)(q0 / NR) * kc * NR;
                cnn_gemm_finish fin = finish_transposed(ep, C, ldc, q0, s0);
                kt->gemm(mr, nr, kc, bt, at_panel, tile, NR, p0 > 0, p0 + kc == K ? &fin : NULL,
                         NULL, 0);
            }
        }
    }
}

// The columns of tiles, as runs of B's panels: column c is panels [start, end). Alone, a
// thread gets equal columns as wide as TILE_MAX allows (`equal` of them). Threads sharing a
// product get guided ones instead: each column a (2 * threads)-th of the panels not yet given
// out, at most TILE_MAX and at least TILE_MIN_PANELS wide, taken in order. The first ones,
// one per thread, are wide (a tile re-reads all of A and gathers its im2col rows in runs as
// long as its width); the narrow last ones even out threads that run at different speeds
// (the two vCPUs of a shared VM, seen 25-40 % apart for seconds at a time), where equal
// shares, one tile per thread, wait for the slower. Which tile holds a column of C never
// changes its sums, so this does not change a result.
enum { TILE_MIN_PANELS = 4 };
typedef struct {
    int panels, panels_max, threads, equal;
} tile_columns;

static int tile_column(const tile_columns *tc, int c, int *start, int *end) {
    if (tc->threads == 1) {
        if (c >= tc->equal) return 0;
        *start = (int)((long)c * tc->panels / tc->equal);
        *end = (int)((long)(c + 1) * tc->panels / tc->equal);
        return 1;
    }
    int q = 0;
    for (int i = 0; q < tc->panels; i++) {
        int width = ceil_div(tc->panels - q, 2 * tc->threads);
        if (width > tc->panels_max) width = tc->panels_max;
        if (width < TILE_MIN_PANELS) width = TILE_MIN_PANELS;
        if (width > tc->panels - q) width = tc->panels - q;
        if (i == c) {
            *start = q;
            *end = q + width;
            return 1;
        }
        q += width;
    }
    return 0;
}

static int tile_column_count(const tile_columns *tc) {
    int n = 0, start, end;
    while (tile_column(tc, n, &start, &end)) n++;
    return n;
}

// sgemm_general, and sgemm_low_memory when `low_memory` (the stack buffers even if malloc
// would work).
static void sgemm_run(int M, int N, int K, const sgemm_operands *op, float *C, int ldc,
                      int accumulate, int low_memory) {
    const sgemm_epilogue *ep = op->ep;
    const float *A = op->A;
    const int lda = op->lda;
    const b_source B_src = {op->B, op->ldb, op->b_row, op->b_ctx}, *B = &B_src;
    if (M <= 0 || N <= 0) return;
    if (ep && !ep->bias && !ep->residual && !ep->relu) ep = NULL;
    if (K <= 0) {   // an empty sum: C stays, or becomes 0
        if (!accumulate) {
            for (int i = 0; i < M; i++) memset(&C[(size_t)i * ldc], 0, (size_t)N * sizeof(float));
        }
        if (ep) {
            cnn_gemm_finish fin = finish_of(ep, 0, ep->residual, 0, 0);
            for (int i = 0; i < M; i++) {
                float *c_row = C + (size_t)i * ldc;
                for (int j = 0; j < N; j++) c_row[j] = cnn_gemm_finish_one(&fin, i, j, c_row[j]);
            }
        }
        return;
    }
    const cnn_kernel_table *kt = cnn_kernels();
    const int MR = kt->mr, NR = kt->nr;
    const sgemm_packed_a *pa = op->a_packed;   // usable only if packed for these kernels
    if (pa && !packed_fits(kt, pa, M, K)) pa = NULL;
    assert(pa || A);   // A may be left out only when the packed copy fits these kernels
    if (pa && pa->transposed) {
        if (!accumulate) {
            if (low_memory || N > SGEMM_NARROW_N_MAX ||
                !sgemm_transposed(kt, M, N, K, pa, B, C, ldc, ep))
                sgemm_transposed_small(kt, M, N, K, pa, B, C, ldc, ep);
            return;
        }
        assert(A);   // (the transposed form does not accumulate: the plain product from A)
        pa = NULL;
    }
    // Tiles: as large as allowed (a 512 x 512 tile packs each slice of B and each sliver of A
    // once for many kernel calls): bands of rows up to TILE_MAX, and columns of tiles
    // (tile_column). With threads to share them (not inside a parallel region, e.g. one of
    // Winograd's 36 products, where this call runs serially), wide columns first, then
    // narrower ones for whoever is free. Only a B too narrow to share out is split by rows.
    int threads = 1;
#ifdef _OPENMP
    if (!omp_in_parallel() && 2.0 * M * N * K > 2e6) threads = omp_get_max_threads();
#endif
    const int panels = ceil_div(N, NR), panels_max = TILE_MAX / NR;
    tile_columns tc = {panels, panels_max, threads, ceil_div(panels, panels_max)};
    const int columns = tile_column_count(&tc);
    int bands = ceil_div(M, TILE_MAX);
    if (bands * columns < threads) bands = ceil_div(M, MR) < threads ? ceil_div(M, MR) : threads;
    const int tile_m = round_up(ceil_div(M, bands), MR);
    int widest = 0, start = 0, end = 0;   // the widest column of tiles, in panels
    for (int c = 0; tile_column(&tc, c, &start, &end); c++)
        widest = end - start > widest ? end - start : widest;
    const int tile_n = widest * NR;
    bands = ceil_div(M, tile_m);
    const int tiles = bands * columns;
    assert(MR <= MR_MAX && NR <= NR_MAX && kt->kc <= KC_MAX);
    int parallel = tiles > 1 && threads > 1;
    if (parallel && N <= TILE_MAX && !low_memory &&
        sgemm_shared_b(kt, M, N, K, A, lda, pa, B, C, ldc, accumulate, ep))
        return;
    int kc = K < kt->kc ? K : kt->kc;
    size_t a_floats = (size_t)round_up(MR * kc, 16);   // keeps the B panels 64-byte aligned
    size_t bytes = (a_floats + (size_t)kc * tile_n + TILE_MAX) * sizeof(float);
    bytes = (bytes + 63) / 64 * 64;
    #pragma omp parallel if (parallel)
    {
        // One buffer per thread for all its tiles. Without one, a small stack buffer packs one
        // panel at a time (slower, same numbers).
        float *buf = low_memory ? NULL : thread_buffer(0, bytes);
        _Alignas(64) float small_a[MR_MAX * KC_MAX], small_b[NR_MAX * KC_MAX], small_row[NR_MAX];
        float *a_buf = buf ? buf : small_a;
        float *b_buf = buf ? buf + a_floats : small_b;
        float *scratch = buf ? b_buf + (size_t)kc * tile_n : small_row;   // a row of B
        int b_panels = buf ? tile_n / NR : 1;
        #pragma omp for schedule(dynamic)
        for (int t = 0; t < tiles; t++) {   // column by column, the wide ones first
            int q0 = 0, q1 = 0;   // panels [q0, q1) of B
            tile_column(&tc, t / bands, &q0, &q1);
            int i0 = (t % bands) * tile_m, j0 = q0 * NR;
            int m = M - i0 < tile_m ? M - i0 : tile_m;
            int n = (q1 * NR < N ? q1 * NR : N) - j0;
            const float *residual = ep && ep->residual ? ep->residual + (size_t)i0 * ep->ldr + j0
                                                       : NULL;
            const float *A_tile = A ? A + (size_t)i0 * lda : NULL;   // (NULL: packed only)
            gemm_tile(kt, m, n, K, A_tile, lda, pa, i0, B, j0,
                      C + (size_t)i0 * ldc + j0, ldc, accumulate, ep, residual, a_buf, b_buf,
                      b_panels, scratch);
        }
    }
}

void sgemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
           int ldc, int accumulate) {
    sgemm_operands op = {.A = A, .lda = lda, .B = B, .ldb = ldb};
    sgemm_run(M, N, K, &op, C, ldc, accumulate, 0);
}

void sgemm_general(int M, int N, int K, const sgemm_operands *op, float *C, int ldc,
                   int accumulate) {
    sgemm_run(M, N, K, op, C, ldc, accumulate, 0);
}

void sgemm_low_memory(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float *C, int ldc, int accumulate) {
    sgemm_operands op = {.A = A, .lda = lda, .B = B, .ldb = ldb};
    sgemm_run(M, N, K, &op, C, ldc, accumulate, 1);
}

void sgemm_general_low_memory(int M, int N, int K, const sgemm_operands *op, float *C, int ldc,
                              int accumulate) {
    sgemm_run(M, N, K, op, C, ldc, accumulate, 1);
}

size_t sgemm_packed_a_floats(int M, int K) {
    const cnn_kernel_table *kt = cnn_kernels();
    return (size_t)round_up(M > 0 ? M : 1, kt->mr) * (size_t)(K > 0 ? K : 0);
}

int sgemm_packed_a_sliver(void) {
    return cnn_kernels()->mr;
}

void sgemm_pack_a_rows(float *dst, int M, int K, int i0, int mr, const float *rows, int lda) {
    const cnn_kernel_table *kt = cnn_kernels();
    size_t M_pad = (size_t)round_up(M > 0 ? M : 1, kt->mr);
    assert(i0 % kt->mr == 0 && mr >= 1 && mr <= kt->mr && i0 + mr <= M);
    for (int p0 = 0; p0 < K; p0 += kt->kc) {
        int kc = K - p0 < kt->kc ? K - p0 : kt->kc;
        pack_a(mr, kc, kt->mr, rows + p0, lda, dst + (size_t)p0 * M_pad + (size_t)i0 * kc, 0);
    }
}

sgemm_packed_a sgemm_pack_a(float *dst, int M, int K, const float *A, int lda) {
    const cnn_kernel_table *kt = cnn_kernels();
    for (int i0 = 0; i0 < M; i0 += kt->mr) {
        int mr = M - i0 < kt->mr ? M - i0 : kt->mr;
        sgemm_pack_a_rows(dst, M, K, i0, mr, A + (size_t)i0 * lda, lda);
    }
    return sgemm_packed_a_of(dst, M, K);
}

sgemm_packed_a sgemm_packed_a_of(const float *data, int M, int K) {
    const cnn_kernel_table *kt = cnn_kernels();
    return (sgemm_packed_a){data, M, K, kt->mr, kt->kc, 0};
}

int sgemm_packed_at_panel(void) {
    return cnn_kernels()->nr;
}

size_t sgemm_packed_at_floats(int M, int K) {
    const cnn_kernel_table *kt = cnn_kernels();
    return (size_t)round_up(M > 0 ? M : 1, kt->nr) * (size_t)(K > 0 ? K : 0);
}

void sgemm_pack_at_rows(float *dst, int M, int K, int i0, int rows, const float *src, int lda) {
    const cnn_kernel_table *kt = cnn_kernels();
    const int NR = kt->nr;
    size_t M_pad = (size_t)round_up(M > 0 ? M : 1, NR);
    assert(i0 % NR == 0 && rows >= 1 && rows <= NR && i0 + rows <= M);
    for (int p0 = 0; p0 < K; p0 += kt->kc) {
        int kc = K - p0 < kt->kc ? K - p0 : kt->kc;
        float *panel = dst + (size_t)p0 * M_pad + (size_t)(i0 / NR) * kc * NR;   // (kc, NR)
        for (int p = 0; p < kc; p++) {
            for (int j = 0; j < rows; j++)
                panel[(size_t)p * NR + j] = src[(size_t)j * lda + p0 + p];
            for (int j = rows; j < NR; j++) panel[(size_t)p * NR + j] = 0.0f;
        }
    }
}

sgemm_packed_a sgemm_packed_at_of(const float *data, int M, int K) {
    const cnn_kernel_table *kt = cnn_kernels();
    return (sgemm_packed_a){data, M, K, kt->nr, kt->kc, 1};
}
