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
// to kernels/crc32-pclmul.c instead (~10x faster: 100 MB in ~5 ms); the tables do the rest.
#include <pthread.h>

#include "crc32.h"
#include "kernels/kernels.h"

#define CRC32_POLY_REFLECTED 0xEDB88320u

static uint32_t crc_table[8][256];
static int use_pclmul;
static pthread_once_t crc_table_once = PTHREAD_ONCE_INIT;

static void crc_table_init(void) {
#if defined(__x86_64__)
    use_pclmul = __builtin_cpu_supports("pclmul") && cnn_kernels()->isa != CNN_ISA_SCALAR;
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

uint32_t crc32_ieee(uint32_t crc, const void *data, size_t n) {
    pthread_once(&crc_table_once, crc_table_init);
    const unsigned char *p = data;
    crc = ~crc;
#if defined(__x86_64__)
    if (use_pclmul && n >= 64) {
        size_t blocks = n & ~(size_t)15;
        crc = cnn_crc32_blocks__pclmul(crc, p, blocks);
        p += blocks;
        n -= blocks;
    }
#endif
    return ~crc_tables(crc, p, n);
}
