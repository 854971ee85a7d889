// crc32-fold.h - what the 256-bit CRC kernel (crc32-vpclmul.c) borrows from the 128-bit one
// (crc32-pclmul.c): the fold constants and the last steps down to the CRC. Both files are
// compiled with -mpclmul; only they include this.
#ifndef CNNSCOPE_CRC32_FOLD_H
#define CNNSCOPE_CRC32_FOLD_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

// x^n mod P, reflected in 32 bits, times x: the constant that folds a 64-bit half n - 32 or
// n + 32 bits forward (see crc32-pclmul.c).
uint64_t cnn_crc32_fold_constant__pclmul(int n);

// x, a 128-bit chunk holding everything before p folded in, followed by the n bytes at p (a
// multiple of 16, possibly 0): folds them in one at a time and reduces to the 32-bit CRC
// register.
uint32_t cnn_crc32_fold_tail__pclmul(__m128i x, const unsigned char *p, size_t n);

#endif
