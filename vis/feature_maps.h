// feature_maps.h - one image's activations at a layer, beside the image itself.
//
// Layout (all offsets in pixels, background and separators VIS_SEPARATOR_RGB):
//   the image, [H, W, channels] 8-bit as the network saw it (after resize and crop, before
//   normalisation), drawn at (1, 1) with each pixel an image_scale x image_scale block;
//   then, from x0 = 1 + W * image_scale + VIS_MAPS_GAP, y0 = 0, a vis_grid (canvas.h) of the
//   selected maps: ceil(sqrt(n)) columns, 1-pixel separators, each map [h, w] a tile of
//   (h * scale) x (w * scale) pixels.
// The canvas is exactly as large as both need.
//
// Colours: t = (v - lo) / (hi - lo) through viridis (colormap.c), where lo, hi are the minimum
// and maximum over all selected maps (shared: maps are comparable) or over each map alone
// (per-map: each map's structure shows). hi == lo gives t = 0.
#ifndef CNNSCOPE_FEATURE_MAPS_H
#define CNNSCOPE_FEATURE_MAPS_H

#include "canvas.h"

#define VIS_MAPS_GAP 8

typedef enum { VIS_MAPS_SHARED, VIS_MAPS_PER_MAP } vis_maps_norm;
typedef enum { VIS_SORT_INDEX, VIS_SORT_MEAN, VIS_SORT_MAX } vis_maps_sort;

typedef struct {
    vis_maps_norm norm;
    int scale;             // pixels per activation; 0 = automatic: max(1, 64 / max(h, w))
    int image_scale;       // pixels per image pixel; 0 = automatic: max(1, 128 / max(H, W))
} vis_maps_options;

// Reorders channels[0..n) by the mean or maximum of each map [h, w] of `maps` ([C, h, w]),
// largest first, ties by channel index; VIS_SORT_INDEX leaves the order alone.
void vis_maps_sort_channels(const float *maps, int h, int w, int *channels, int n,
                            vis_maps_sort sort);

// Draws the picture described above into a new canvas *out (free with vis_canvas_free).
// image: [H, W, image_channels] (1 or 3); maps: [C, h, w]; channels[0..n) index into C.
cnn_status vis_feature_maps(const uint8_t *image, int H, int W, int image_channels,
                            const float *maps, int h, int w, const int *channels, int n,
                            const vis_maps_options *opt, vis_canvas *out);

#endif
