// feature_maps.c - feature maps beside the input image (layout and colours in the header).
//
// Dims legend: H, W the image; C channels of h x w maps; n selected channels.
#include <math.h>
#include <stdlib.h>

#include "feature_maps.h"

typedef struct {
    float key;
    int channel;
} keyed_channel;

static int compare_keyed(const void *pa, const void *pb) {
    const keyed_channel *a = pa, *b = pb;
    if (a->key != b->key) return a->key > b->key ? -1 : 1;   // largest first
    return (a->channel > b->channel) - (a->channel < b->channel);
}

// NaNs sort last: they get the lowest key.
static float map_key(const float *m, int hw, vis_maps_sort sort) {
    double sum = 0;
    float max = -INFINITY;
    for (int i = 0; i < hw; i++) {
        if (isnan(m[i])) continue;
        sum += m[i];
        if (m[i] > max) max = m[i];
    }
    float key = sort == VIS_SORT_MEAN ? (float)(sum / hw) : max;
    return isnan(key) ? -INFINITY : key;
}

void vis_maps_sort_channels(const float *maps, int h, int w, int *channels, int n,
                            vis_maps_sort sort) {
    if (sort == VIS_SORT_INDEX || n < 2) return;
    keyed_channel *k = malloc(sizeof(keyed_channel) * (size_t)n);
    if (!k) return;   // keeps the given order
    for (int i = 0; i < n; i++) {
        k[i].channel = channels[i];
        k[i].key = map_key(maps + (size_t)channels[i] * h * w, h * w, sort);
    }
    qsort(k, (size_t)n, sizeof *k, compare_keyed);
    for (int i = 0; i < n; i++) channels[i] = k[i].channel;
    free(k);
}

static void range_of(const float *m, size_t count, float *lo, float *hi) {
    for (size_t i = 0; i < count; i++) {
        if (m[i] < *lo) *lo = m[i];
        if (m[i] > *hi) *hi = m[i];
    }
}

cnn_status vis_feature_maps(const uint8_t *image, int H, int W, int image_channels,
                            const float *maps, int h, int w, const int *channels, int n,
                            const vis_maps_options *opt, vis_canvas *out) {
    if (n < 1) return cnn_fail(CNN_ERR_ARG, "feature maps: no channel selected");
    int side = h > w ? h : w, image_side = H > W ? H : W;
    int scale = opt->scale > 0 ? opt->scale : side >= 64 ? 1 : 64 / side;
    int image_scale = opt->image_scale > 0 ? opt->image_scale
                                           : image_side >= 128 ? 1 : 128 / image_side;
    if ((int64_t)side * scale > 32768 || (int64_t)image_side * image_scale > 32768)
        return cnn_fail(CNN_ERR_LIMIT, "feature maps: scale %d (maps %dx%d) or %d (image "
                        "%dx%d) makes a picture too large", scale, h, w, image_scale, H, W);
    int image_w = W * image_scale, image_h = H * image_scale;
    vis_grid g = vis_grid_make(n, 0, w * scale, h * scale, 1, 1 + image_w + VIS_MAPS_GAP, 0);
    int width = g.x0 + vis_grid_width(&g), height = vis_grid_height(&g);
    if (height < image_h + 2) height = image_h + 2;
    cnn_status st = vis_canvas_create(out, width, height, VIS_SEPARATOR_RGB);
    if (st != CNN_OK) return st;
    vis_canvas_blit(out, 1, 1, image, W, H, image_channels, image_scale);

    size_t hw = (size_t)h * w;
    float shared_lo = INFINITY, shared_hi = -INFINITY;
    for (int i = 0; i < n; i++) range_of(maps + channels[i] * hw, hw, &shared_lo, &shared_hi);
    uint8_t *tile = malloc(hw * 3);
    if (!tile) {
        vis_canvas_free(out);
        return cnn_fail(CNN_ERR_NOMEM, "feature maps: out of memory");
    }
    for (int i = 0; i < n; i++) {
        const float *m = maps + (size_t)channels[i] * hw;   // [h, w]
        float lo = shared_lo, hi = shared_hi;
        if (opt->norm == VIS_MAPS_PER_MAP) {
            lo = INFINITY;
            hi = -INFINITY;
            range_of(m, hw, &lo, &hi);
        }
        for (size_t p = 0; p < hw; p++)
            vis_colormap_viridis(hi > lo ? (m[p] - lo) / (hi - lo) : 0.0f, tile + 3 * p);
        int x, y;
        vis_grid_cell(&g, i, &x, &y);
        vis_canvas_blit(out, x, y, tile, w, h, 3, scale);
    }
    free(tile);
    return CNN_OK;
}
