// tool_preprocess.c - runs cnn_image_load_ex on images with preprocessing given on the command
// line (no model file needed) and writes the results as .npy; tests/test_image_pil.py compares
// them with torchvision + PIL.
//
//     tool_preprocess -c 3 -s 224x224 -r 256 -m 0.485,0.456,0.406 -d 0.229,0.224,0.225
//                     [--max-pixels N] [-p pixels.npy] -o out.npy IMAGE...
//
// out.npy: [N, C, H, W] float32 (normalised); pixels.npy: [N, H, W, C] float32 holding the
// 8-bit values of the cropped image. Exit status 0 on success, 2 with the engine's message.
#include "cnnscope.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void) {
    fprintf(stderr, "usage: tool_preprocess -c C -s HxW -r RESIZE -m M0[,M1,M2] -d S0[,S1,S2] "
                    "[--max-pixels N] [-p PIXELS.npy] -o OUT.npy IMAGE...\n");
    exit(2);
}

static void parse_floats(const char *s, float *out, int n) {
    char *end;
    for (int i = 0; i < n; i++) {
        out[i] = strtof(s, &end);
        if (end == s) usage();
        s = *end == ',' ? end + 1 : end;
    }
}

int main(int argc, char **argv) {
    cnn_model_info info = {0};
    info.name = "tool_preprocess";
    const char *means = NULL, *stds = NULL, *out_path = NULL, *pixels_path = NULL;
    cnn_image_limits limits = {0};
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *opt = argv[i];
        if (i + 1 >= argc) usage();
        const char *val = argv[++i];
        if (strcmp(opt, "-c") == 0) info.channels = atoi(val);
        else if (strcmp(opt, "-s") == 0) {
            if (sscanf(val, "%dx%d", &info.height, &info.width) != 2) usage();
        } else if (strcmp(opt, "-r") == 0) info.resize = atoi(val);
        else if (strcmp(opt, "-m") == 0) means = val;
        else if (strcmp(opt, "-d") == 0) stds = val;
        else if (strcmp(opt, "-o") == 0) out_path = val;
        else if (strcmp(opt, "-p") == 0) pixels_path = val;
        else if (strcmp(opt, "--max-pixels") == 0) limits.max_pixels = atoll(val);
        else usage();
    }
    if (!means || !stds || !out_path || i >= argc || info.channels < 1 || info.channels > 3) {
        usage();
    }
    parse_floats(means, info.mean, info.channels);
    parse_floats(stds, info.std, info.channels);

    int n = argc - i;
    size_t per_image = (size_t)info.channels * info.height * info.width;
    float *out = malloc(sizeof(float) * per_image * n);
    uint8_t *pix = malloc(per_image * n);
    if (!out || !pix) {
        fprintf(stderr, "tool_preprocess: out of memory\n");
        return 2;
    }
    for (int k = 0; k < n; k++) {
        if (cnn_image_load_ex(&info, argv[i + k], &limits, out + k * per_image,
                              pix + k * per_image) != CNN_OK) {
            fprintf(stderr, "%s\n", cnn_last_error());
            return 2;
        }
    }
    int64_t dims[4] = {n, info.channels, info.height, info.width};
    if (cnn_npy_write(out_path, out, 4, dims) != CNN_OK) {
        fprintf(stderr, "%s\n", cnn_last_error());
        return 2;
    }
    if (pixels_path) {
        for (size_t j = 0; j < per_image * n; j++) out[j] = pix[j];
        int64_t pdims[4] = {n, info.height, info.width, info.channels};
        if (cnn_npy_write(pixels_path, out, 4, pdims) != CNN_OK) {
            fprintf(stderr, "%s\n", cnn_last_error());
            return 2;
        }
    }
    free(out);
    free(pix);
    return 0;
}
