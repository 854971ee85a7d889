// fuzz_npy.c - libFuzzer harness for the .npy reader (engine/npy.c): its header parser, the
// shape's overflow checks and the size checks against the file. The reader takes a path, so
// the bytes go to a memfd opened through /proc/self/fd.
//
//     build-fuzz/fuzz_npy CORPUS_DIR SEED_DIR
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cnnscope.h"

static int memfd = -1;
static char memfd_path[64];

static int set_file(const uint8_t *data, size_t size) {
    if (memfd < 0) {
        memfd = memfd_create("fuzz_npy", MFD_CLOEXEC);
        if (memfd < 0) return 0;
        snprintf(memfd_path, sizeof memfd_path, "/proc/self/fd/%d", memfd);
    }
    if (ftruncate(memfd, 0) != 0) return 0;
    size_t done = 0;
    while (done < size) {
        ssize_t n = pwrite(memfd, data + done, size - done, (off_t)done);
        if (n <= 0) return 0;
        done += (size_t)n;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!set_file(data, size)) return 0;
    float *values = NULL;
    int ndim = -1;
    int64_t dims[8];
    cnn_status st = cnn_npy_read(memfd_path, &values, &ndim, dims);
    if (st != CNN_OK) {
        if (cnn_last_error()[0] == '\0') abort();
        return 0;
    }
    // What was read must agree with the file: 4 bytes per element, all of them at the end.
    if (ndim < 0 || ndim > 8) abort();
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0) abort();
        numel *= (uint64_t)dims[i];
    }
    if (numel * 4 > size) abort();
    if (numel > 0 && memcmp(values, data + size - numel * 4, numel * 4) != 0) abort();
    cnn_npy_free(values);
    return 0;
}
