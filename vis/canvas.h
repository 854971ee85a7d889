// canvas.h - an RGB picture in memory, the drawing primitives the visualisations share, and
// atomic PNG output (stb_image_write, then rename).
//
// Coordinates: x to the right, y down, in pixels; pixels are [height, width, 3] uint8.
#ifndef CNNSCOPE_CANVAS_H
#define CNNSCOPE_CANVAS_H

#include <stdint.h>

#include "cnnscope.h"

typedef struct {
    int width, height;
    uint8_t *rgb;          // [height, width, 3]
} vis_canvas;

// Allocates a width x height canvas filled with colour (r, g, b). Limits: 1..32768 per side.
cnn_status vis_canvas_create(vis_canvas *c, int width, int height, uint8_t r, uint8_t g, uint8_t b);
void vis_canvas_free(vis_canvas *c);

// Copies an image [h, w, channels] (channels 1 = gray, 3 = RGB) to (x, y), each source pixel
// drawn as a scale x scale block (nearest neighbour). Clipped at the canvas border.
void vis_canvas_blit(vis_canvas *c, int x, int y, const uint8_t *pixels, int w, int h,
                     int channels, int scale);
// Fills the rectangle [x, x+w) x [y, y+h), clipped.
void vis_canvas_fill(vis_canvas *c, int x, int y, int w, int h, uint8_t r, uint8_t g, uint8_t b);
// Draws a 1-pixel rectangle outline of width `thickness`, clipped.
void vis_canvas_outline(vis_canvas *c, int x, int y, int w, int h, int thickness, uint8_t r,
                        uint8_t g, uint8_t b);

// Writes the canvas as a PNG, atomically (temporary name, then rename).
cnn_status vis_png_write(const char *path, const vis_canvas *c);

// Grids of equal cells, as every vis picture uses: `sep`-pixel lines between the cells and
// around them. Cell i sits at row i / cols, column i % cols; its top-left pixel is
//     x = x0 + sep + col * (cell_w + sep),   y = y0 + sep + row * (cell_h + sep).
typedef struct {
    int n, rows, cols;     // cells, laid out row by row
    int cell_w, cell_h;    // pixels
    int sep;               // separator width in pixels
    int x0, y0;            // top-left corner of the grid on the canvas
} vis_grid;

// A grid of n cells; cols = 0 picks ceil(sqrt(n)) columns (8x8 for 64 cells).
vis_grid vis_grid_make(int n, int cols, int cell_w, int cell_h, int sep, int x0, int y0);
int vis_grid_width(const vis_grid *g);    // sep + cols * (cell_w + sep)
int vis_grid_height(const vis_grid *g);   // sep + rows * (cell_h + sep)
void vis_grid_cell(const vis_grid *g, int i, int *x, int *y);

// The separator colour of every vis grid (dark gray).
#define VIS_SEPARATOR_RGB 40, 40, 40

// Colormaps: t in [0, 1] (clamped; NaN gives black) to RGB.
void vis_colormap_viridis(float t, uint8_t rgb[3]);   // perceptual, for maps and heatmaps
void vis_colormap_gray(float t, uint8_t rgb[3]);

#endif
