// filters.c - filter grids (layouts and normalisation in filters.h).
//
// Dims legend: K filters, C input channels, R x S kernel.
#include <math.h>
#include <stdlib.h>

#include "filters.h"

int vis_filter_auto_scale(int r, int s) {
    int side = r > s ? r : s;
    return side >= 48 ? 1 : 48 / side;
}

// Minimum and maximum of x[0..n), NaNs ignored (both 0 if all are NaN).
static void min_max(const float *x, size_t n, float *lo, float *hi) {
    float a = INFINITY, b = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (x[i] < a) a = x[i];
        if (x[i] > b) b = x[i];
    }
    if (a > b) a = b = 0.0f;
    *lo = a;
    *hi = b;
}

static float normalise(float v, float lo, float hi) {
    return hi > lo ? (v - lo) / (hi - lo) : 0.5f;
}

cnn_status vis_filter_grid(const cnn_tensor *weight, const vis_filter_options *opt,
                           vis_canvas *out) {
    if (weight->ndim != 4)
        return cnn_fail(CNN_ERR_ARG, "filters: the weight has %d dimensions, expected 4 "
                        "[K, C, R, S] (a convolution)", weight->ndim);
    int K = (int)weight->dims[0], C = (int)weight->dims[1];
    int R = (int)weight->dims[2], S = (int)weight->dims[3];
    int scale = opt->scale > 0 ? opt->scale : vis_filter_auto_scale(R, S);
    int n_filters = opt->filters ? opt->n_filters : K;
    int n_inputs = opt->inputs ? opt->n_inputs : C;
    for (int i = 0; i < n_filters; i++)
        if (opt->filters && (opt->filters[i] < 0 || opt->filters[i] >= K))
            return cnn_fail(CNN_ERR_ARG, "filters: filter %d out of range 0..%d",
                            opt->filters[i], K - 1);
    for (int i = 0; i < n_inputs; i++)
        if (opt->inputs && (opt->inputs[i] < 0 || opt->inputs[i] >= C))
            return cnn_fail(CNN_ERR_ARG, "filters: input channel %d out of range 0..%d",
                            opt->inputs[i], C - 1);
    if (n_filters < 1 || n_inputs < 1)
        return cnn_fail(CNN_ERR_ARG, "filters: nothing selected");
    if ((int64_t)R * scale > 32768 || (int64_t)S * scale > 32768)
        return cnn_fail(CNN_ERR_LIMIT, "filters: %dx%d kernel at scale %d is too large", R, S,
                        scale);

    int per_channel = C != 1 && C != 3;   // one tile per (filter, input channel)
    vis_grid g = per_channel
                     ? vis_grid_make(n_filters * n_inputs, n_inputs, S * scale, R * scale, 1, 0, 0)
                     : vis_grid_make(n_filters, 0, S * scale, R * scale, 1, 0, 0);
    cnn_status st = vis_canvas_create(out, vis_grid_width(&g), vis_grid_height(&g),
                                      VIS_SEPARATOR_RGB);
    if (st != CNN_OK) return st;
    size_t filter_size = (size_t)C * R * S;
    float glo, ghi;
    min_max(weight->data, (size_t)K * filter_size, &glo, &ghi);
    uint8_t *tile = malloc((size_t)R * S * 3);
    if (!tile) {
        vis_canvas_free(out);
        return cnn_fail(CNN_ERR_NOMEM, "filters: out of memory");
    }
    for (int i = 0; i < n_filters; i++) {
        int k = opt->filters ? opt->filters[i] : i;
        const float *w = weight->data + (size_t)k * filter_size;   // [C, R, S]
        float lo = glo, hi = ghi;
        if (opt->norm == VIS_NORM_PER_FILTER) min_max(w, filter_size, &lo, &hi);
        if (!per_channel) {
            for (int p = 0; p < R * S; p++) {
                uint8_t rgb[3];
                for (int c = 0; c < 3; c++) {
                    vis_colormap_gray(normalise(w[(size_t)(C == 3 ? c : 0) * R * S + p], lo, hi),
                                      rgb);
                    tile[3 * p + c] = rgb[0];
                }
            }
            int x, y;
            vis_grid_cell(&g, i, &x, &y);
            vis_canvas_blit(out, x, y, tile, S, R, 3, scale);
            continue;
        }
        for (int j = 0; j < n_inputs; j++) {
            int c = opt->inputs ? opt->inputs[j] : j;
            for (int p = 0; p < R * S; p++)
                vis_colormap_viridis(normalise(w[(size_t)c * R * S + p], lo, hi), tile + 3 * p);
            int x, y;
            vis_grid_cell(&g, i * n_inputs + j, &x, &y);
            vis_canvas_blit(out, x, y, tile, S, R, 3, scale);
        }
    }
    free(tile);
    return CNN_OK;
}
