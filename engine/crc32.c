// crc32.c - CRC-32 (IEEE) with slicing-by-8: eight 256-entry tables let the loop consume eight
// bytes per step with eight independent table lookups instead of one dependent lookup per byte
// (about 1-2 GB/s instead of ~400 MB/s), which matters because the whole model file is checked
// on every load.
//
// table[0] is the classic byte-at-a-time table; table[k][b] is the CRC contribution of byte b
// followed by k zero bytes, so eight bytes x0..x7 fold in as
//     crc' = table[7][x0 ^ crc0] ^ ... ^ table[4][x3 ^ crc3] ^ table[3][x4] ^ ... ^ table[0][x7]
// where crc0..crc3 are the bytes of the running CRC (reflected CRC: lowest byte first).
// The tables are computed once, on first use, under pthread_once.
//
// On x86-64 CPUs with PCLMULQDQ (and unless CNNSCOPE_ISA=scalar), the whole 16-byte blocks go
// to kernels/crc32-pclmul.c instead (~10x faster: 100 MB in ~5 ms), or with VPCLMULQDQ and AVX2
// to kernels/crc32-vpclmul.c (twice that again); the tables do the rest.
//
// Large inputs (a model file of 100 MB) are cut into one piece per OpenMP thread; each thread
// checksums its piece from zero and the pieces' CRCs are joined with crc32_ieee_combine, which
// gives exactly the CRC of the whole (see there), so the value does not depend on the threads.
#include <pthread.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "crc32.h"
#include "kernels/kernels.h"

#define CRC32_POLY_REFLECTED 0xEDB88320u

static uint32_t crc_table[8][256];
static int use_pclmul, use_vpclmul;
static pthread_once_t crc_table_once = PTHREAD_ONCE_INIT;

static void crc_table_init(void) {
#if defined(__x86_64__)
    use_pclmul = __builtin_cpu_supports("pclmul") && cnn_kernels()->isa != CNN_ISA_SCALAR;
    use_vpclmul = use_pclmul && __builtin_cpu_supports("vpclmulqdq") &&
                  __builtin_cpu_supports("avx2");
#endif
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t crc = b;
        for (int bit = 0; bit < 8; bit++) {
            crc = (crc & 1) ? (crc >> 1) ^ CRC32_POLY_REFLECTED : crc >> 1;
        }
        crc_table[0][b] = crc;
    }
    for (int k = 1; k < 8; k++) {
        for (int b = 0; b < 256; b++) {
            uint32_t prev = crc_table[k - 1][b];
            crc_table[k][b] = (prev >> 8) ^ crc_table[0][prev & 0xFF];
        }
    }
}

// Little-endian load that is legal at any alignment (compiles to a single mov on x86/arm64).
static inline uint32_t load_u32_le(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// The slicing-by-8 loop over p[0..n), from and to the running register.
static uint32_t crc_tables(uint32_t crc, const unsigned char *p, size_t n) {
    const uint32_t (*t)[256] = (const uint32_t (*)[256])crc_table;
    // Bytes one at a time until p is 8-aligned, so the main loop reads aligned words.
    while (n > 0 && ((uintptr_t)p & 7) != 0) {
        crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
        n--;
    }
    while (n >= 8) {
        uint32_t lo = load_u32_le(p) ^ crc;   // bytes 0..3, with the running CRC folded in
        uint32_t hi = load_u32_le(p + 4);     // bytes 4..7
        crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
              t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n > 0) {
        crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
        n--;
    }
    return crc;
}

uint32_t crc32_ieee_tables(uint32_t crc, const void *data, size_t n) {
    pthread_once(&crc_table_once, crc_table_init);
    return ~crc_tables(~crc, data, n);
}

// crc32_ieee on one thread.
static uint32_t crc_serial(uint32_t crc, const unsigned char *p, size_t n) {
    crc = ~crc;
#if defined(__x86_64__)
    if (use_pclmul && n >= 64) {
        size_t blocks = n & ~(size_t)15;
        crc = use_vpclmul && blocks >= 128 ? cnn_crc32_blocks__vpclmul(crc, p, blocks)
                                           : cnn_crc32_blocks__pclmul(crc, p, blocks);
        p += blocks;
        n -= blocks;
    }
#endif
    return ~crc_tables(crc, p, n);
}

// Joining two CRCs. A CRC is the message, as a polynomial over GF(2), times x^32, modulo the
// polynomial P (plus terms from the initial and final inversion). Appending len2 bytes to a
// message multiplies its polynomial by x^(8*len2), so
//     crc(A then B) = crc(A) * x^(8*len2) mod P  xor  crc(B)
// (the inversions cancel out, as in zlib's crc32_combine). Polynomials are held in the CRC's
// reflected bit order: bit 31 is the coefficient of x^0, bit 0 that of x^31.
enum { X_POW_0 = 1u << 31, X_POW_1 = 1u << 30 };

// a * b mod P: add b * x^i for every term x^i of a, from x^0 upward (b times x each step).
static uint32_t multiply_mod_p(uint32_t a, uint32_t b) {
    uint32_t product = 0;
    for (uint32_t bit = X_POW_0; bit != 0; bit >>= 1) {
        if (a & bit) product ^= b;
        b = (b & 1) ? (b >> 1) ^ CRC32_POLY_REFLECTED : b >> 1;   // b * x mod P
    }
    return product;
}

// x^(8*bytes) mod P by squaring: x^(8*2^k) for each set bit k of `bytes`.
static uint32_t x_pow_8n(size_t bytes) {
    uint32_t result = X_POW_0, square = multiply_mod_p(X_POW_1, X_POW_1);   // x^2
    square = multiply_mod_p(square, square);                                 // x^4
    square = multiply_mod_p(square, square);                                 // x^8
    for (; bytes != 0; bytes >>= 1) {
        if (bytes & 1) result = multiply_mod_p(result, square);
        square = multiply_mod_p(square, square);
    }
    return result;
}

uint32_t crc32_ieee_combine(uint32_t crc1, uint32_t crc2, size_t len2) {
    return multiply_mod_p(x_pow_8n(len2), crc1) ^ crc2;
}

enum {
    PARALLEL_MIN_BYTES = 8 << 20,   // below this one thread is as fast (no team to start)
    MAX_PIECES = 64,
    VISIT_BLOCK = 128 << 10,        // a block visited while it is in L2, just checksummed
};

// The CRC of data[start, start+len) continued from `crc`, and the OR of the visits of its
// blocks into *visited.
static uint32_t crc_piece(uint32_t crc, const unsigned char *data, size_t start, size_t len,
                          crc32_visit_fn visit, void *ctx, unsigned *visited) {
    if (!visit) return crc_serial(crc, data + start, len);
    for (size_t at = start; at < start + len; at += VISIT_BLOCK) {
        size_t block = start + len - at < VISIT_BLOCK ? start + len - at : VISIT_BLOCK;
        crc = crc_serial(crc, data + at, block);
        *visited |= visit(ctx, at, data + at, block);
    }
    return crc;
}

uint32_t crc32_ieee_visit(uint32_t crc, const void *data, size_t n, crc32_visit_fn visit,
                          void *ctx, unsigned *visited) {
    pthread_once(&crc_table_once, crc_table_init);
    const unsigned char *p = data;
    unsigned any = 0;
    int pieces = 1;
#ifdef _OPENMP
    if (n >= PARALLEL_MIN_BYTES && !omp_in_parallel()) pieces = omp_get_max_threads();
    if (pieces > MAX_PIECES) pieces = MAX_PIECES;
#endif
    if (pieces <= 1) {
        crc = crc_piece(crc, p, 0, n, visit, ctx, &any);
        if (visited) *visited = any;
        return crc;
    }
    uint32_t piece_crc[MAX_PIECES];
    // Pieces of whole 64-byte lines (the last takes the remainder too), so that every block
    // a visitor sees starts at a multiple of 64 from `data`.
    size_t piece = n / (size_t)pieces / 64 * 64;
    #pragma omp parallel for num_threads(pieces) schedule(static) reduction(|:any)
    for (int i = 0; i < pieces; i++) {
        size_t len = i == pieces - 1 ? n - piece * (size_t)i : piece;
        piece_crc[i] = crc_piece(0, p, piece * (size_t)i, len, visit, ctx, &any);
    }
    for (int i = 0; i < pieces; i++) {
        size_t len = i == pieces - 1 ? n - piece * (size_t)i : piece;
        crc = crc32_ieee_combine(crc, piece_crc[i], len);
    }
    if (visited) *visited = any;
    return crc;
}

uint32_t crc32_ieee(uint32_t crc, const void *data, size_t n) {
    return crc32_ieee_visit(crc, data, n, NULL, NULL, NULL);
}
