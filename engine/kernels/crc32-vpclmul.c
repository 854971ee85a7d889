// crc32-vpclmul.c - CRC-32 (IEEE, reflected) of whole 16-byte blocks with 256-bit carry-less
// multiplication (VPCLMULQDQ on ymm registers): the folding of crc32-pclmul.c with two 128-bit
// chunks per register, so each instruction does the work of two. On the 2-vCPU Zen 3 test VM
// PCLMULQDQ's throughput, not memory, bounds the 128-bit loop (~12 GB/s per core); the model
// loader checksums every byte of the file at every load (a packed ResNet-50: 240 MB).
// Compiled with -mavx2 -mvpclmulqdq -mpclmul (Makefile); crc32.c calls it only on a CPU that
// has AVX2 and VPCLMULQDQ.
//
// Four registers hold eight consecutive 128-bit chunks; each step folds every chunk 1024 bits
// forward onto the chunk 128 bytes further on. At the end the eight are folded into one in
// order, 128 bits at a time, and the 128-bit kernel's tail takes over.
#if defined(__x86_64__)
#include <immintrin.h>
#include <pthread.h>

#include "crc32-fold.h"
#include "kernels.h"

static __m256i k1024;   // {x^(1024+32), x^(1024-32)} mod P in both 128-bit lanes
static __m128i k128;
static pthread_once_t constants_once = PTHREAD_ONCE_INIT;

static void constants_init(void) {
    long long hi = (long long)cnn_crc32_fold_constant__pclmul(1024 - 32);
    long long lo = (long long)cnn_crc32_fold_constant__pclmul(1024 + 32);
    k1024 = _mm256_set_epi64x(hi, lo, hi, lo);
    k128 = _mm_set_epi64x((long long)cnn_crc32_fold_constant__pclmul(128 - 32),
                          (long long)cnn_crc32_fold_constant__pclmul(128 + 32));
}

// Both chunks of x folded 1024 bits forward onto `next`.
static inline __m256i fold256(__m256i x, __m256i k, __m256i next) {
    __m256i lo = _mm256_clmulepi64_epi128(x, k, 0x00), hi = _mm256_clmulepi64_epi128(x, k, 0x11);
    return _mm256_xor_si256(_mm256_xor_si256(lo, hi), next);
}

static inline __m128i fold128(__m128i x, __m128i next) {
    __m128i lo = _mm_clmulepi64_si128(x, k128, 0x00), hi = _mm_clmulepi64_si128(x, k128, 0x11);
    return _mm_xor_si128(_mm_xor_si128(lo, hi), next);
}

uint32_t cnn_crc32_blocks__vpclmul(uint32_t state, const unsigned char *p, size_t n) {
    // state: the running (not inverted) CRC register; n >= 128 and a multiple of 16
    pthread_once(&constants_once, constants_init);
    __m256i x[4];
    for (int r = 0; r < 4; r++) x[r] = _mm256_loadu_si256((const __m256i *)(p + 32 * r));
    x[0] = _mm256_xor_si256(x[0], _mm256_zextsi128_si256(_mm_cvtsi32_si128((int)state)));
    p += 128;
    n -= 128;
    for (; n >= 128; p += 128, n -= 128) {
        for (int r = 0; r < 4; r++)
            x[r] = fold256(x[r], k1024, _mm256_loadu_si256((const __m256i *)(p + 32 * r)));
    }
    __m128i one = _mm256_castsi256_si128(x[0]);   // the eight chunks into one, in order
    one = fold128(one, _mm256_extracti128_si256(x[0], 1));
    for (int r = 1; r < 4; r++) {
        one = fold128(one, _mm256_castsi256_si128(x[r]));
        one = fold128(one, _mm256_extracti128_si256(x[r], 1));
    }
    return cnn_crc32_fold_tail__pclmul(one, p, n);
}
#endif
