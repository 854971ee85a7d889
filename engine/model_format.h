// model_format.h - the constants of the model file format (weights/FORMAT.md) and its
// little-endian readers, shared by the loader (model_file.c) and the writer (model_write.c) so
// that a file the engine writes is one it accepts. Internal to the engine.
#ifndef CNNSCOPE_MODEL_FORMAT_H
#define CNNSCOPE_MODEL_FORMAT_H

#include <stdint.h>

#define FILE_MAGIC "CNNSCOPE"
#define FILE_VERSION 1
#define HEADER_BYTES 128
#define RESERVED_OFFSET 88     // header bytes 88..127 are reserved and zero
#define DATA_ALIGN 64          // data section and every tensor start at a multiple of this
#define MAX_STR_BYTES 4096
#define MAX_DICT_ENTRIES 256
#define MAX_NUM_LIST 64        // int and float lists
#define MAX_STR_LIST 100000
#define MAX_NODES 100000
#define MAX_TENSORS 100000
#define DTYPE_F32 1

static inline uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t le64(const uint8_t *p) {
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

#endif
