// resize.c - Pillow-exact antialiased bilinear resampling of 8-bit images (see resize.h).
//
// Dims legend: H,W input size, C channels, OH,OW full resized size, WH,WW computed window.
//
// The arithmetic mirrors Pillow's Resample.c step for step (read there to learn the algorithm,
// re-written here): doubles for the filter weights, the same expression order (so the same
// roundings), the same float box edges, then 22-bit fixed point with 8-bit rounding and
// clipping after each pass. Any deviation, even a fused multiply-add, can move a pixel by one
// level, hence the pragma below.
#include "resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#pragma STDC FP_CONTRACT OFF

// Pillow: 32 bits - 8 bits of result - 2 bits of headroom for filters with negative lobes.
#define PRECISION_BITS 22

// Bilinear = the triangle filter with support 1.
static double triangle(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

// The coefficients of one axis for the output indices [out_first, out_first + n).
typedef struct {
    int n;
    int *first;         // [n] first input index read by output i
    int *count;         // [n] number of input indices it reads
    int64_t *start;     // [n] offset of its weights in `weights`
    int32_t *weights;   // fixed-point weights of all outputs, concatenated
} axis_coeffs;

static void axis_coeffs_free(axis_coeffs *a) {
    free(a->first);
    free(a->count);
    free(a->start);
    free(a->weights);
    memset(a, 0, sizeof(*a));
}

static cnn_status axis_coeffs_make(axis_coeffs *a, int in_size, int out_size, int out_first,
                                   int n) {
    memset(a, 0, sizeof(*a));
    // Pillow passes the box edges (0, in_size) as C floats and subtracts them in float, so an
    // input size above 2^24 is rounded exactly as it rounds it.
    float box_lo = 0.0f, box_hi = (float)in_size;
    double scale = (double)(box_hi - box_lo) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;   // widen the filter only when shrinking
    double support = 1.0 * filterscale;
    double inv_filterscale = 1.0 / filterscale;
    int ksize = (int)ceil(support) * 2 + 1;           // upper bound of any output's tap count

    a->n = n;
    a->first = malloc(sizeof(int) * (size_t)n);
    a->count = malloc(sizeof(int) * (size_t)n);
    a->start = malloc(sizeof(int64_t) * (size_t)n);
    double *w = malloc(sizeof(double) * (size_t)ksize);
    if (!a->first || !a->count || !a->start || !w) {
        free(w);
        axis_coeffs_free(a);
        return cnn_fail(CNN_ERR_NOMEM, "resize: out of memory for %d x %d coefficients", n,
                        ksize);
    }

    // Pass 1: which inputs each output reads (needed to size the weight table exactly).
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        double center = box_lo + ((out_first + i) + 0.5) * scale;
        int lo = (int)(center - support + 0.5);     // Pillow rounds by truncating x + 0.5
        int hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        a->first[i] = lo;
        a->count[i] = hi - lo;
        a->start[i] = total;
        total += hi - lo;
    }
    a->weights = malloc(sizeof(int32_t) * (size_t)(total > 0 ? total : 1));
    if (!a->weights) {
        free(w);
        axis_coeffs_free(a);
        return cnn_fail(CNN_ERR_NOMEM, "resize: out of memory for %lld coefficients",
                        (long long)total);
    }

    // Pass 2: normalised weights in double, then fixed point rounded half away from zero.
    for (int i = 0; i < n; i++) {
        double center = box_lo + ((out_first + i) + 0.5) * scale;
        int lo = a->first[i], cnt = a->count[i];
        double sum = 0.0;
        for (int j = 0; j < cnt; j++) {
            w[j] = triangle(((double)(j + lo) - center + 0.5) * inv_filterscale);
            sum += w[j];
        }
        int32_t *k = a->weights + a->start[i];
        for (int j = 0; j < cnt; j++) {
            double v = sum != 0.0 ? w[j] / sum : w[j];
            double fixed = v * (double)(1 << PRECISION_BITS);
            k[j] = v < 0 ? (int32_t)(-0.5 + fixed) : (int32_t)(0.5 + fixed);
        }
    }
    free(w);
    return CNN_OK;
}

// Fixed-point sum to 8 bits (the sums are never negative for the triangle filter, but Pillow
// clips both ends, and so do we).
static inline uint8_t clip8(int32_t acc) {
    if (acc <= 0) return 0;
    acc >>= PRECISION_BITS;
    return acc > 255 ? 255 : (uint8_t)acc;
}

// out [rows, WW, C] = horizontal pass over input rows [row0, row0 + rows) of in [H, W, C].
static void resample_rows(uint8_t *out, const uint8_t *in, int W, int C, int row0, int rows,
                          const axis_coeffs *cx) {
    int WW = cx->n;
    #pragma omp parallel for schedule(static) if ((int64_t)rows * WW > 65536)
    for (int r = 0; r < rows; r++) {
        const uint8_t *src = in + (size_t)(row0 + r) * W * C;
        uint8_t *dst = out + (size_t)r * WW * C;
        for (int i = 0; i < WW; i++) {
            const int32_t *k = cx->weights + cx->start[i];
            const uint8_t *s = src + (size_t)cx->first[i] * C;
            for (int c = 0; c < C; c++) {
                int32_t acc = 1 << (PRECISION_BITS - 1);
                for (int j = 0; j < cx->count[i]; j++) acc += s[j * C + c] * k[j];
                dst[i * C + c] = clip8(acc);
            }
        }
    }
}

// out [WH, WW, C] = vertical pass; input row y of the image is src + (y - src_row0) * stride.
static void resample_cols(uint8_t *out, const uint8_t *src, size_t stride, int src_row0,
                          int WW, int C, const axis_coeffs *cy) {
    int WH = cy->n;
    #pragma omp parallel for schedule(static) if ((int64_t)WH * WW > 65536)
    for (int r = 0; r < WH; r++) {
        const int32_t *k = cy->weights + cy->start[r];
        const uint8_t *s = src + (size_t)(cy->first[r] - src_row0) * stride;
        uint8_t *dst = out + (size_t)r * WW * C;
        for (int x = 0; x < WW * C; x++) {
            int32_t acc = 1 << (PRECISION_BITS - 1);
            for (int j = 0; j < cy->count[r]; j++) acc += s[(size_t)j * stride + x] * k[j];
            dst[x] = clip8(acc);
        }
    }
}

cnn_status cnn_resize_bilinear_u8(uint8_t *out, const uint8_t *in, int H, int W, int C,
                                  int OH, int OW, int y0, int x0, int WH, int WW) {
    if (H < 1 || W < 1 || C < 1 || OH < 1 || OW < 1 || WH < 1 || WW < 1 || y0 < 0 || x0 < 0 ||
        y0 > OH - WH || x0 > OW - WW) {
        return cnn_fail(CNN_ERR_ARG,
                        "resize: bad window rows [%d, %d) cols [%d, %d) of a %dx%d resize of a "
                        "%dx%dx%d image", y0, y0 + WH, x0, x0 + WW, OH, OW, H, W, C);
    }
    int need_horizontal = OW != W;   // Pillow skips a pass whose size does not change
    int need_vertical = OH != H;

    axis_coeffs cy = {0}, cx = {0};
    cnn_status st = CNN_OK;
    uint8_t *tmp = NULL;

    // Input rows read by the window: from the first row's first tap to the last row's last.
    int row_first = y0, row_end = y0 + WH;
    if (need_vertical) {
        if ((st = axis_coeffs_make(&cy, H, OH, y0, WH)) != CNN_OK) goto done;
        row_first = cy.first[0];
        row_end = cy.first[WH - 1] + cy.count[WH - 1];
    }

    // After the horizontal pass, row y of the image lives at src + (y - src_row0) * stride.
    const uint8_t *src = in + (size_t)x0 * C;
    size_t stride = (size_t)W * C;
    int src_row0 = 0;
    if (need_horizontal) {
        if ((st = axis_coeffs_make(&cx, W, OW, x0, WW)) != CNN_OK) goto done;
        int rows = row_end - row_first;
        tmp = malloc((size_t)(rows > 0 ? rows : 1) * WW * C);
        if (!tmp) {
            st = cnn_fail(CNN_ERR_NOMEM, "resize: out of memory for a %dx%dx%d buffer", rows, WW,
                          C);
            goto done;
        }
        resample_rows(tmp, in, W, C, row_first, rows, &cx);
        src = tmp;
        stride = (size_t)WW * C;
        src_row0 = row_first;
    }

    if (need_vertical) {
        resample_cols(out, src, stride, src_row0, WW, C, &cy);
    } else {
        for (int r = 0; r < WH; r++) {
            memcpy(out + (size_t)r * WW * C, src + (size_t)(y0 + r - src_row0) * stride,
                   (size_t)WW * C);
        }
    }

done:
    free(tmp);
    axis_coeffs_free(&cx);
    axis_coeffs_free(&cy);
    return st;
}
