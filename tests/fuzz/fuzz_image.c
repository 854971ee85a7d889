// fuzz_image.c - libFuzzer harness for image decoding (Debian's stb, behind engine/image.c's
// header checks and pixel limit) and the model's preprocessing (resize, centre crop, normalise;
// engine/resize.c).
//
// The first 4 input bytes choose a model's input (channels, resize, height, width) so that
// every preprocessing path is reached; the rest is the image file. The engine reads images by
// path, so the bytes go to a memfd opened through /proc/self/fd.
//
//     build-fuzz/fuzz_image CORPUS_DIR SEED_DIR
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cnnscope.h"

#define MAX_FUZZ_PIXELS (1 << 22)   // 4 Mpixel: big enough for every path, small enough for RAM

static int memfd = -1;
static char memfd_path[64];

// Replaces the memfd's contents with `data`; 0 on failure.
static int set_file(const uint8_t *data, size_t size) {
    if (memfd < 0) {
        memfd = memfd_create("fuzz_image", MFD_CLOEXEC);
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
    if (size < 4) return 0;
    cnn_model_info info;
    memset(&info, 0, sizeof info);
    static const char *const names[1] = {"x"};
    info.name = "fuzz";
    info.path = "fuzz.cnn";
    info.channels = data[0] & 1 ? 3 : 1;
    // resize: 0 (straight to H x W) or 1..127; H, W: 1..64
    info.resize = (data[0] >> 1) & 1 ? 1 + (data[1] & 0x7f) : 0;
    info.height = 1 + (data[2] & 0x3f);
    info.width = 1 + (data[3] & 0x3f);
    for (int c = 0; c < 3; c++) {
        info.mean[c] = 0.5f;
        info.std[c] = 0.25f;
    }
    info.num_classes = 1;
    info.class_names = names;
    if (!set_file(data + 4, size - 4)) return 0;

    size_t numel = (size_t)info.channels * info.height * info.width;
    float *out = malloc(numel * sizeof *out);
    uint8_t *pixels = malloc(numel);
    cnn_image_limits limits = {MAX_FUZZ_PIXELS};
    if (out && pixels) {
        cnn_status st = cnn_image_load_ex(&info, memfd_path, &limits, out, pixels);
        if (st != CNN_OK && cnn_last_error()[0] == '\0') abort();
        if (st == CNN_OK) {
            // Normalised pixels lie in [(0 - 0.5) / 0.25, (1 - 0.5) / 0.25] = [-2, 2].
            for (size_t i = 0; i < numel; i++) {
                if (!(out[i] >= -2.0f && out[i] <= 2.0f)) abort();
            }
        }
    }
    free(pixels);
    free(out);
    return 0;
}
