// image.c - decoding (Debian's stb) and the model's eval preprocessing, equal to what
// torchvision's transforms do on a PIL image:
//
//     img = Image.open(path).convert('RGB' or 'L')      # to the model's channels
//     T.Resize(resize)          # shorter side -> resize, PIL BILINEAR (antialiased)
//     T.CenterCrop((H, W))      # zero padding if the image is smaller
//     T.ToTensor()              # x / 255
//     T.Normalize(mean, std)    # (x - mean) / std
//
// For a model without a resize step (resize == 0) whose input size differs from the image's,
// the image is resized straight to (H, W) with the same filter, like T.Resize((H, W)).
// docs/preprocessing.md describes the details and measures the differences to PIL.
//
// Dims legend: h,w decoded image size; rh,rw size after Resize; H,W model input (crop) size;
// C model channels (1 or 3).
#include "cnnscope.h"
#include "resize.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <stb_image.h>   // the implementation lives in libstb (-lstb); never define it here

#define CNN_DEFAULT_MAX_PIXELS 100000000LL
static int64_t process_max_pixels = CNN_DEFAULT_MAX_PIXELS;   // cnn_set_max_pixels

void cnn_set_max_pixels(int64_t max_pixels) {
    process_max_pixels = max_pixels > 0 ? max_pixels : CNN_DEFAULT_MAX_PIXELS;
}

int64_t cnn_max_pixels(void) { return process_max_pixels; }
// Largest size of either side after Resize. Only the cropped window of the resized image is
// ever computed, so this bounds index arithmetic, not memory.
#define CNN_MAX_RESIZED_SIDE (1 << 28)
#define CNN_MAX_INPUT_SIDE 65536

static const char *stb_reason(void) {
    const char *r = stbi_failure_reason();
    return r && r[0] ? r : "unknown error";
}

// PIL's Image.convert('L') from RGB: ITU-R 601-2 luma in 16-bit fixed point, rounded.
static inline uint8_t pil_luma(const uint8_t *rgb) {
    return (uint8_t)((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
}

// torchvision 0.14 _compute_resized_output_size for an int size: the shorter side becomes
// `size`, the longer int(size * long / short) (Python's true division, then truncation).
static cnn_status resized_size(const char *path, int h, int w, int size, int *rh, int *rw) {
    int is_portrait = w <= h;
    int64_t shorter = is_portrait ? w : h, longer = is_portrait ? h : w;
    double new_long = (double)((int64_t)size * longer) / (double)shorter;
    if (new_long > CNN_MAX_RESIZED_SIDE) {
        return cnn_fail(CNN_ERR_LIMIT,
                        "%s: resizing the %dx%d image so that its shorter side is %d makes its "
                        "longer side %.0f pixels, over the limit of %d", path, w, h, size,
                        new_long, CNN_MAX_RESIZED_SIDE);
    }
    int long_side = (int)new_long;
    *rw = is_portrait ? size : long_side;
    *rh = is_portrait ? long_side : size;
    return CNN_OK;
}

// Where CenterCrop(crop) starts along one axis of length `size`, in that axis's coordinates
// (negative: torchvision first pads (crop - size) // 2 zeros before, the rest after).
// Otherwise int(round((size - crop) / 2.0)) with Python's round-half-to-even.
static int center_crop_offset(int size, int crop) {
    if (crop > size) return -((crop - size) / 2);
    int excess = size - crop;
    int offset = excess / 2;
    if ((excess & 1) && (offset & 1)) offset += 1;   // x.5 rounds to the even neighbour
    return offset;
}

static cnn_status check_info(const cnn_model_info *info, const char *path) {
    const char *model = info->path ? info->path : info->name ? info->name : "model";
    if (info->channels != 1 && info->channels != 3) {
        return cnn_fail(CNN_ERR_ARG, "%s: preprocessing %s: model has %d input channels; "
                        "expected 1 or 3", model, path, info->channels);
    }
    if (info->height < 1 || info->width < 1 || info->height > CNN_MAX_INPUT_SIDE ||
        info->width > CNN_MAX_INPUT_SIDE || info->resize < 0 ||
        info->resize > CNN_MAX_INPUT_SIDE) {
        return cnn_fail(CNN_ERR_ARG, "%s: preprocessing %s: model input %dx%d with resize %d; "
                        "expected sizes in 1..%d and resize in 0..%d", model, path,
                        info->height, info->width, info->resize, CNN_MAX_INPUT_SIDE,
                        CNN_MAX_INPUT_SIDE);
    }
    for (int c = 0; c < info->channels; c++) {
        if (!(info->std[c] != 0.0f) || info->std[c] != info->std[c]) {
            return cnn_fail(CNN_ERR_ARG, "%s: preprocessing %s: std[%d] is %g; expected a "
                            "non-zero number", model, path, c, (double)info->std[c]);
        }
    }
    return CNN_OK;
}

// The size and channel count in a PNG's IHDR chunk (big-endian width and height at bytes
// 16..23, colour type at 25), for when stbi_info gives up: stb refuses PNGs that decode to
// more than 1 GiB, and then reports only "unknown image type".
static int png_header(FILE *f, int64_t *w, int64_t *h, int *channels) {
    uint8_t b[26];
    if (fseek(f, 0, SEEK_SET) != 0 || fread(b, 1, sizeof b, f) != sizeof b) return 0;
    if (memcmp(b, "\x89PNG\r\n\x1a\n", 8) != 0 || memcmp(b + 12, "IHDR", 4) != 0) return 0;
    *w = ((int64_t)b[16] << 24) | (b[17] << 16) | (b[18] << 8) | b[19];
    *h = ((int64_t)b[20] << 24) | (b[21] << 16) | (b[22] << 8) | b[23];
    static const int channels_of_type[7] = {1, 0, 3, 4, 2, 0, 4};   // palette: stb expands
    *channels = b[25] < 7 ? channels_of_type[b[25]] : 0;
    return *channels > 0;
}

// stb trusts a PNG chunk's length and grows its buffer to it before reading the chunk: a 73-byte
// file whose IDAT claims 1.4 GB makes it allocate 1.4 GB. So every chunk must fit in the file.
static cnn_status check_png_chunks(FILE *f, const char *path, int64_t file_size) {
    uint8_t b[8];
    int64_t pos = 8;
    cnn_status st = CNN_OK;
    if (fseek(f, 0, SEEK_SET) == 0 && fread(b, 1, 8, f) == 8 &&
        memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) {
        while (pos + 8 <= file_size && fseek(f, pos, SEEK_SET) == 0 && fread(b, 1, 8, f) == 8) {
            int64_t len = ((int64_t)b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
            if (len > file_size - pos - 12) {
                st = cnn_fail(CNN_ERR_FORMAT, "%s: PNG chunk at byte %lld claims %lld bytes, but "
                              "the file ends %lld bytes later (truncated or corrupt)", path,
                              (long long)pos, (long long)len, (long long)(file_size - pos - 12));
                break;
            }
            if (memcmp(b + 4, "IEND", 4) == 0) break;
            pos += 12 + len;
        }
    }
    fseek(f, 0, SEEK_SET);
    return st;
}

// 1 if the file is a binary PNM (P5 gray or P6 RGB, the ones stb reads); rewinds it.
static int is_pnm(FILE *f) {
    unsigned char m[2];
    int pnm = fseek(f, 0, SEEK_SET) == 0 && fread(m, 1, 2, f) == 2 && m[0] == 'P' &&
              (m[1] == '5' || m[1] == '6');
    fseek(f, 0, SEEK_SET);
    return pnm;
}

// Decodes `path` to 8-bit [h, w, C] in the model's channel layout (RGB or PIL's 'L').
static cnn_status decode(const char *path, int C, int64_t max_pixels, uint8_t **out, int *h,
                         int *w) {
    FILE *f = fopen(path, "rb");
    if (!f) return cnn_fail(CNN_ERR_IO, "%s: cannot open image: %s", path, strerror(errno));

    struct stat sb;
    int have_stat = fstat(fileno(f), &sb) == 0;
    if (have_stat && S_ISDIR(sb.st_mode)) {
        fclose(f);
        return cnn_fail(CNN_ERR_IO, "%s: is a directory, not an image file", path);
    }
    if (have_stat && S_ISREG(sb.st_mode) && sb.st_size == 0) {
        fclose(f);
        return cnn_fail(CNN_ERR_FORMAT, "%s: file is empty (0 bytes); expected an image "
                        "(JPEG, PNG, BMP, GIF, TGA, PSD, PNM or HDR)", path);
    }

    if (have_stat && S_ISREG(sb.st_mode)) {
        cnn_status st = check_png_chunks(f, path, (int64_t)sb.st_size);
        if (st != CNN_OK) {
            fclose(f);
            return st;
        }
    }
    // The header first: refuse huge images before stb allocates anything for them.
    int iw, ih, comp;
    if (!stbi_info_from_file(f, &iw, &ih, &comp)) {
        const char *reason = stb_reason();
        int read_error = ferror(f);
        int64_t pw, ph;
        int pc;
        int is_png = png_header(f, &pw, &ph, &pc);
        fclose(f);
        if (read_error) return cnn_fail(CNN_ERR_IO, "%s: cannot read image: read error", path);
        // PNG sides are 32-bit: their product can overflow int64, so divide instead.
        if (is_png && ph > 0 && pw > max_pixels / ph) {
            return cnn_fail(CNN_ERR_LIMIT, "%s: image is %lldx%lld = %.0f pixels, over the limit "
                            "of %lld (raise it with --max-pixels)", path, (long long)pw,
                            (long long)ph, (double)pw * (double)ph, (long long)max_pixels);
        }
        if (is_png && pw > 0 && ph > 0 && pw * ph * pc > (1 << 30)) {
            return cnn_fail(CNN_ERR_LIMIT, "%s: image is %lldx%lld = %lld pixels, more than stb "
                            "decodes (1 GiB of pixel data)", path, (long long)pw, (long long)ph,
                            (long long)(pw * ph));
        }
        return cnn_fail(CNN_ERR_FORMAT, "%s: not an image stb can decode (JPEG, PNG, BMP, GIF, "
                        "TGA, PSD, PNM or HDR; stb: %s)", path, reason);
    }
    if ((int64_t)iw * ih > max_pixels) {
        fclose(f);
        return cnn_fail(CNN_ERR_LIMIT, "%s: image is %dx%d = %lld pixels, over the limit of "
                        "%lld (raise it with --max-pixels)", path, iw, ih,
                        (long long)iw * ih, (long long)max_pixels);
    }

    // stb 2.27 reads a 16-bit PNM's samples (maxval over 255, big-endian) in the wrong byte
    // order, and converting its channels then reads past its buffer (a crash fuzz_image found,
    // tests/fuzz/regressions/image/pgm-16bit-gray-to-rgb): refused, never decoded wrong.
    if (is_pnm(f) && stbi_is_16_bit_from_file(f)) {
        fclose(f);
        return cnn_fail(CNN_ERR_FORMAT, "%s: 16-bit PNM (maxval over 255) is not supported: "
                        "the stb 2.27 decoder reads it wrongly; save it with 8 bits per sample",
                        path);
    }
    // Gray sources decode to one channel (stb drops a gray image's alpha, as PIL does); colour
    // sources to RGB (stb drops alpha without compositing, as PIL's convert('RGB') does).
    int want = (C == 3 || comp >= 3) ? 3 : 1;
    int dw, dh, dcomp;
    uint8_t *pix = stbi_load_from_file(f, &dw, &dh, &dcomp, want);
    fclose(f);
    if (!pix) {
        return cnn_fail(CNN_ERR_FORMAT, "%s: cannot decode %dx%d image; the file is truncated "
                        "or corrupt (stb: %s)", path, iw, ih, stb_reason());
    }
    if ((int64_t)dw * dh > max_pixels || dw < 1 || dh < 1) {
        stbi_image_free(pix);
        return cnn_fail(CNN_ERR_FORMAT, "%s: decoded size %dx%d differs from the header's "
                        "%dx%d", path, dw, dh, iw, ih);
    }
    if (C == 1 && want == 3) {
        // In place: pixel i is written at i after being read from 3i >= i.
        size_t n = (size_t)dw * dh;
        for (size_t i = 0; i < n; i++) pix[i] = pil_luma(pix + 3 * i);
    }
    *out = pix;
    *h = dh;
    *w = dw;
    return CNN_OK;
}

cnn_status cnn_image_load_ex(const cnn_model_info *info, const char *path,
                             const cnn_image_limits *limits, float *out, uint8_t *pixels) {
    if (!info || !path || !out) {
        return cnn_fail(CNN_ERR_ARG, "cnn_image_load: info, path and out must not be NULL");
    }
    cnn_status st = check_info(info, path);
    if (st != CNN_OK) return st;
    int64_t max_pixels = limits && limits->max_pixels > 0 ? limits->max_pixels
                                                           : process_max_pixels;
    const int C = info->channels, H = info->height, W = info->width;

    uint8_t *img = NULL;   // [h, w, C]
    int h = 0, w = 0;
    if ((st = decode(path, C, max_pixels, &img, &h, &w)) != CNN_OK) return st;

    // Resize: by the shorter side, or straight to the input size for models without a resize.
    int rh = h, rw = w;
    if (info->resize > 0) {
        st = resized_size(path, h, w, info->resize, &rh, &rw);
    } else if (h != H || w != W) {
        rh = H;
        rw = W;
    }

    // CenterCrop: crop pixel (y, x) is resized pixel (oy + y, ox + x); outside is zero padding.
    int oy = center_crop_offset(rh, H), ox = center_crop_offset(rw, W);
    int y_lo = oy > 0 ? oy : 0, y_hi = oy + H < rh ? oy + H : rh;
    int x_lo = ox > 0 ? ox : 0, x_hi = ox + W < rw ? ox + W : rw;
    int WH = y_hi - y_lo, WW = x_hi - x_lo;   // >= 1: the crop is centred on the image

    uint8_t *crop = NULL;     // [H, W, C]
    uint8_t *window = NULL;   // [WH, WW, C]: the part of the resized image inside the crop
    if (st == CNN_OK) {
        crop = calloc((size_t)H * W * C, 1);
        window = malloc((size_t)WH * WW * C);
        if (!crop || !window) {
            st = cnn_fail(CNN_ERR_NOMEM, "%s: out of memory preprocessing to %dx%dx%d", path, C,
                          H, W);
        }
    }
    if (st == CNN_OK) {
        if (rh == h && rw == w) {
            // Same size: PIL returns a copy, no resampling.
            for (int y = 0; y < WH; y++) {
                memcpy(window + (size_t)y * WW * C, img + ((size_t)(y_lo + y) * w + x_lo) * C,
                       (size_t)WW * C);
            }
        } else {
            st = cnn_resize_bilinear_u8(window, img, h, w, C, rh, rw, y_lo, x_lo, WH, WW);
        }
    }
    if (st == CNN_OK) {
        for (int y = 0; y < WH; y++) {
            memcpy(crop + ((size_t)(y_lo - oy + y) * W + (x_lo - ox)) * C,
                   window + (size_t)y * WW * C, (size_t)WW * C);
        }
        // ToTensor + Normalize, in float32 and in torch's order: (p / 255 - mean) / std.
        for (int c = 0; c < C; c++) {
            float mean = info->mean[c], std = info->std[c];
            float *plane = out + (size_t)c * H * W;
            for (size_t i = 0; i < (size_t)H * W; i++) {
                plane[i] = ((float)crop[i * C + c] / 255.0f - mean) / std;
            }
        }
        if (pixels) memcpy(pixels, crop, (size_t)H * W * C);
    }
    free(window);
    free(crop);
    stbi_image_free(img);
    return st;
}

cnn_status cnn_image_load(const cnn_model_info *info, const char *path, float *out) {
    return cnn_image_load_ex(info, path, NULL, out, NULL);
}
