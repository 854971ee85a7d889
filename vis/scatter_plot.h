// scatter_plot.h - the figures of the representation space: scatter plots of an embedding (SVG
// with a legend and a hover title per point, PNG with dots or with the images themselves), and
// the nearest-neighbour strip (query | red line | neighbours).
#ifndef CNNSCOPE_VIS_SCATTER_PLOT_H
#define CNNSCOPE_VIS_SCATTER_PLOT_H

#include <stdint.h>

#include "cnnscope.h"

typedef struct {
    int n;
    const float *xy;                  // [N, 2] positions (any scale; fitted to the picture)
    const int *labels;                // [N] class index or -1, or NULL
    int n_classes;
    const char *const *class_names;   // [n_classes], or NULL
    const char *const *paths;         // [N] image paths, or NULL (titles, thumbnails)
    const char *title;                // optional
} vis_scatter;

// The colour of class c (a fixed qualitative palette for up to 20 classes, then viridis).
// c < 0 gives gray.
void vis_class_color(int c, int n_classes, uint8_t rgb[3]);

// SVG scatter: one circle per point coloured by class, with a <title> (index, path, class)
// shown on hover, and a legend. Points are drawn small and translucent so 100,000 stay legible.
cnn_status vis_scatter_svg(const char *path, const vis_scatter *s);

// PNG scatter of width x width pixels. thumb == 0: coloured dots. thumb > 0: each image drawn at
// its position as a thumb x thumb picture with a class-coloured frame, in a fixed order so that
// the result is reproducible (later points on top).
cnn_status vis_scatter_png(const char *path, const vis_scatter *s, int width, int thumb);

// Decodes an image file and makes a size x size RGB thumbnail (shorter side scaled, centre
// crop; small images are enlarged by pixel repetition so they stay sharp). rgb [size*size*3].
cnn_status vis_thumbnail(const char *path, int size, uint8_t *rgb);

// The classic nearest-neighbour figure: the query on the left, a red line, then the k
// neighbours from nearest to farthest, each tile x tile pixels.
cnn_status vis_neighbors_png(const char *path, const char *query_path,
                             const char *const *neighbor_paths, int k, int tile);

#endif
