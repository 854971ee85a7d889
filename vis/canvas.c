// canvas.c - an RGB picture in memory, drawing primitives and atomic PNG output.
//
// Pixels are [height, width, 3] uint8, row-major. Every drawing call clips to the canvas, so
// callers may draw partly (or wholly) outside it.
#include <stdlib.h>
#include <string.h>

#include <stb_image_write.h>   // the implementation is in Debian's libstb (-lstb)

#include "canvas.h"

#define MAX_SIDE 32768

cnn_status vis_canvas_create(vis_canvas *c, int width, int height, uint8_t r, uint8_t g,
                             uint8_t b) {
    if (width < 1 || height < 1 || width > MAX_SIDE || height > MAX_SIDE)
        return cnn_fail(CNN_ERR_LIMIT, "picture of %dx%d pixels: each side must be 1..%d", width,
                        height, MAX_SIDE);
    size_t n = (size_t)width * (size_t)height;   // <= 2^30: no overflow in size_t
    uint8_t *rgb = malloc(n * 3);
    if (!rgb)
        return cnn_fail(CNN_ERR_NOMEM, "out of memory for a %dx%d picture (%zu bytes)", width,
                        height, n * 3);
    for (size_t i = 0; i < n; i++) {
        rgb[3 * i + 0] = r;
        rgb[3 * i + 1] = g;
        rgb[3 * i + 2] = b;
    }
    c->width = width;
    c->height = height;
    c->rgb = rgb;
    return CNN_OK;
}

void vis_canvas_free(vis_canvas *c) {
    if (!c) return;
    free(c->rgb);
    c->rgb = NULL;
    c->width = c->height = 0;
}

// Clips [x, x+w) x [y, y+h) to the canvas; returns 0 if nothing is left.
static int clip(const vis_canvas *c, int *x0, int *y0, int *x1, int *y1) {
    if (*x0 < 0) *x0 = 0;
    if (*y0 < 0) *y0 = 0;
    if (*x1 > c->width) *x1 = c->width;
    if (*y1 > c->height) *y1 = c->height;
    return *x0 < *x1 && *y0 < *y1;
}

void vis_canvas_fill(vis_canvas *c, int x, int y, int w, int h, uint8_t r, uint8_t g, uint8_t b) {
    // int64 so that x + w cannot overflow for any int inputs
    int64_t x1l = (int64_t)x + (w > 0 ? w : 0), y1l = (int64_t)y + (h > 0 ? h : 0);
    int x0 = x, y0 = y;
    int x1 = x1l > MAX_SIDE ? MAX_SIDE : (int)x1l, y1 = y1l > MAX_SIDE ? MAX_SIDE : (int)y1l;
    if (!clip(c, &x0, &y0, &x1, &y1)) return;
    for (int yy = y0; yy < y1; yy++) {
        uint8_t *p = c->rgb + ((size_t)yy * c->width + x0) * 3;
        for (int xx = x0; xx < x1; xx++, p += 3) {
            p[0] = r;
            p[1] = g;
            p[2] = b;
        }
    }
}

void vis_canvas_outline(vis_canvas *c, int x, int y, int w, int h, int thickness, uint8_t r,
                        uint8_t g, uint8_t b) {
    if (w <= 0 || h <= 0 || thickness <= 0) return;
    int t = thickness;
    if (2 * t >= w || 2 * t >= h) {   // the outline covers everything
        vis_canvas_fill(c, x, y, w, h, r, g, b);
        return;
    }
    vis_canvas_fill(c, x, y, w, t, r, g, b);              // top
    vis_canvas_fill(c, x, y + h - t, w, t, r, g, b);      // bottom
    vis_canvas_fill(c, x, y + t, t, h - 2 * t, r, g, b);  // left
    vis_canvas_fill(c, x + w - t, y + t, t, h - 2 * t, r, g, b);  // right
}

void vis_canvas_blit(vis_canvas *c, int x, int y, const uint8_t *pixels, int w, int h,
                     int channels, int scale) {
    if (w <= 0 || h <= 0 || scale <= 0 || (channels != 1 && channels != 3)) return;
    for (int sy = 0; sy < h; sy++) {
        int64_t top = (int64_t)y + (int64_t)sy * scale;
        if (top >= c->height) break;
        if (top + scale <= 0) continue;
        for (int sx = 0; sx < w; sx++) {
            int64_t left = (int64_t)x + (int64_t)sx * scale;
            if (left >= c->width) break;
            if (left + scale <= 0) continue;
            const uint8_t *s = pixels + ((size_t)sy * w + sx) * channels;
            uint8_t r = s[0], g = channels == 3 ? s[1] : s[0], b = channels == 3 ? s[2] : s[0];
            vis_canvas_fill(c, (int)left, (int)top, scale, scale, r, g, b);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Grids

vis_grid vis_grid_make(int n, int cols, int cell_w, int cell_h, int sep, int x0, int y0) {
    vis_grid g = {n, 0, cols, cell_w, cell_h, sep, x0, y0};
    if (g.cols <= 0) {
        g.cols = 1;
        while (g.cols * g.cols < n) g.cols++;
    }
    g.rows = n > 0 ? (n + g.cols - 1) / g.cols : 0;
    return g;
}

int vis_grid_width(const vis_grid *g) { return g->sep + g->cols * (g->cell_w + g->sep); }

int vis_grid_height(const vis_grid *g) { return g->sep + g->rows * (g->cell_h + g->sep); }

void vis_grid_cell(const vis_grid *g, int i, int *x, int *y) {
    *x = g->x0 + g->sep + (i % g->cols) * (g->cell_w + g->sep);
    *y = g->y0 + g->sep + (i / g->cols) * (g->cell_h + g->sep);
}

// ---------------------------------------------------------------------------------------------
// PNG: stb encodes into a growing memory buffer; cnn_write_atomic then writes it.

typedef struct {
    uint8_t *data;
    size_t size, capacity;
    int failed;            // an allocation failed inside the stb callback
} byte_buffer;

static void append_bytes(void *context, void *data, int size) {
    byte_buffer *b = context;
    if (b->failed || size <= 0) return;
    if (b->size + (size_t)size > b->capacity) {
        size_t cap = b->capacity ? b->capacity : 65536;
        while (cap < b->size + (size_t)size) cap *= 2;
        uint8_t *p = realloc(b->data, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->data = p;
        b->capacity = cap;
    }
    memcpy(b->data + b->size, data, (size_t)size);
    b->size += (size_t)size;
}

static cnn_status write_bytes(void *user, FILE *f) {
    const byte_buffer *b = user;
    if (fwrite(b->data, 1, b->size, f) != b->size)
        return cnn_fail(CNN_ERR_IO, "short write of %zu bytes", b->size);
    return CNN_OK;
}

cnn_status vis_png_write(const char *path, const vis_canvas *c) {
    if (!c->rgb || c->width < 1 || c->height < 1)
        return cnn_fail(CNN_ERR_ARG, "%s: empty picture", path);
    byte_buffer b = {0};
    int ok = stbi_write_png_to_func(append_bytes, &b, c->width, c->height, 3, c->rgb,
                                    c->width * 3);
    cnn_status st;
    if (!ok || b.failed)
        st = cnn_fail(CNN_ERR_NOMEM, "%s: encoding a %dx%d PNG failed (out of memory)", path,
                      c->width, c->height);
    else
        st = cnn_write_atomic(path, write_bytes, &b);
    free(b.data);
    return st;
}
