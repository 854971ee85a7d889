// crc32.h - CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the checksum of model files.
//
// Same values as zlib.crc32 / Python's zlib.crc32: start with 0 and feed the bytes in order,
// in one call or in pieces:
//     uint32_t crc = crc32_ieee(0, head, head_len);
//     crc = crc32_ieee(crc, tail, tail_len);
// crc32_ieee(0, "123456789", 9) == 0xCBF43926.
#ifndef CNNSCOPE_CRC32_H
#define CNNSCOPE_CRC32_H

#include <stddef.h>
#include <stdint.h>

// Returns the CRC of the bytes that gave `crc`, followed by data[0..n). Thread-safe.
uint32_t crc32_ieee(uint32_t crc, const void *data, size_t n);

// The same, and on the way visit(ctx, offset, block, len) on consecutive blocks of
// data[0..n) (each starting at a multiple of 64 from data, from several threads at once) right
// after each is checksummed, while it is still in cache: a second check of a large input costs
// no second read from memory. *visited (if not NULL) gets the OR of the visits' results.
typedef unsigned (*crc32_visit_fn)(void *ctx, size_t offset, const unsigned char *block,
                                   size_t len);
uint32_t crc32_ieee_visit(uint32_t crc, const void *data, size_t n, crc32_visit_fn visit,
                          void *ctx, unsigned *visited);

// The CRC of A followed by B from crc1 = crc32_ieee(0, A), crc2 = crc32_ieee(0, B) and B's
// length, without reading either.
uint32_t crc32_ieee_combine(uint32_t crc1, uint32_t crc2, size_t len2);

// The same with the portable tables only, on one thread (the fast path's ground truth in
// tests).
uint32_t crc32_ieee_tables(uint32_t crc, const void *data, size_t n);

#endif
