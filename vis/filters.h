// filters.h - a convolution's filters as a picture.
//
// The weight is [K, C, R, S] (K filters of C input channels, R x S kernel). Three layouts:
//   C == 3  RGB: one tile per filter, pixel (r, s) = the filter's three channels as R, G, B;
//   C == 1  gray: one gray tile per filter;
//   else    channels: one tile per (filter, input channel) for the selected filters (rows) and
//           input channels (columns), coloured with viridis (vis/colormap.c: dark blue = the
//           filter's lowest weight, yellow = its highest).
// RGB and gray tiles go in a grid of ceil(sqrt(n)) columns (AlexNet's 64 filters: 8 x 8), in
// the order of the selection. Each weight becomes a scale x scale block (nearest neighbour);
// tiles are separated by 1-pixel lines of VIS_SEPARATOR_RGB (see vis_grid in canvas.h, with
// x0 = y0 = 0, sep = 1).
//
// Normalisation to t in [0, 1]: t = (w - lo) / (hi - lo), with lo, hi the minimum and maximum
//   per filter: over the whole filter w[k, :, :, :] (all C channels, shown or not);
//   global:     over the whole weight tensor.
// (hi == lo gives t = 0.5.) Gray and RGB levels are floor(255 t + 0.5).
#ifndef CNNSCOPE_FILTERS_H
#define CNNSCOPE_FILTERS_H

#include "canvas.h"

typedef enum { VIS_NORM_PER_FILTER, VIS_NORM_GLOBAL } vis_filter_norm;

typedef struct {
    vis_filter_norm norm;
    int scale;              // pixels per weight; 0 = automatic: max(1, 48 / max(R, S))
    const int *filters;     // which filters, in display order; NULL = all
    int n_filters;
    const int *inputs;      // which input channels (channels layout only); NULL = all
    int n_inputs;
} vis_filter_options;

// The automatic scale for an R x S kernel.
int vis_filter_auto_scale(int r, int s);

// Draws the filters of `weight` ([K, C, R, S], ndim 4) into a new canvas *out (free with
// vis_canvas_free).
cnn_status vis_filter_grid(const cnn_tensor *weight, const vis_filter_options *opt,
                           vis_canvas *out);

#endif
