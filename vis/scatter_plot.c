// scatter_plot.c - figures of the representation space: SVG and PNG scatter plots of an
// embedding, the map of images (--thumbs), and the nearest-neighbour strip. See scatter_plot.h.
//
// Dims: N points; a picture is W x W pixels; T = thumbnail side in pixels.
#include "scatter_plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image.h>   // stbi_info only (the decoder itself is behind cnn_image_load_ex)

#include "canvas.h"

// A qualitative palette (distinct hues, readable on white) for the first 20 classes.
static const uint8_t palette[20][3] = {
    {31, 119, 180},  {255, 127, 14}, {44, 160, 44},   {214, 39, 40},   {148, 103, 189},
    {140, 86, 75},   {227, 119, 194}, {127, 127, 127}, {188, 189, 34},  {23, 190, 207},
    {174, 199, 232}, {255, 187, 120}, {152, 223, 138}, {255, 152, 150}, {197, 176, 213},
    {196, 156, 148}, {247, 182, 210}, {199, 199, 199}, {219, 219, 141}, {158, 218, 229},
};

void vis_class_color(int c, int n_classes, uint8_t rgb[3]) {
    if (c < 0) {
        rgb[0] = rgb[1] = rgb[2] = 160;
    } else if (n_classes <= 20) {
        memcpy(rgb, palette[c % 20], 3);
    } else {
        vis_colormap_viridis(n_classes > 1 ? (float)c / (n_classes - 1) : 0.5f, rgb);
    }
}

// A fixed permutation of 0..n-1 (so that no class is always drawn on top of the others).
static int *drawing_order(int n) {
    int *order = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (!order) return NULL;
    for (int i = 0; i < n; i++) order[i] = i;
    uint64_t s = 0x5EED5EEDull;
    for (int i = n - 1; i > 0; i--) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int j = (int)((s >> 33) % (uint64_t)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    return order;
}

// Maps xy to pixel positions inside [margin, size - margin]^2, keeping the aspect ratio.
typedef struct {
    double lo[2], scale, offset[2];
} fit_box;

static fit_box fit_points(const float *xy, int n, double size, double margin) {
    fit_box f = {{0, 0}, 1, {margin, margin}};
    double hi[2] = {0, 0};
    for (int a = 0; a < 2; a++) {
        f.lo[a] = INFINITY;
        hi[a] = -INFINITY;
        for (int i = 0; i < n; i++) {
            double v = xy[(size_t)i * 2 + a];
            if (isfinite(v) && v < f.lo[a]) f.lo[a] = v;
            if (isfinite(v) && v > hi[a]) hi[a] = v;
        }
        if (!(f.lo[a] <= hi[a])) f.lo[a] = hi[a] = 0;
    }
    double span = fmax(hi[0] - f.lo[0], hi[1] - f.lo[1]);
    double room = size - 2 * margin;
    f.scale = span > 0 ? room / span : 1;
    for (int a = 0; a < 2; a++) f.offset[a] = margin + (room - (hi[a] - f.lo[a]) * f.scale) / 2;
    return f;
}

static void fit_apply(const fit_box *f, const float *p, double *px, double *py) {
    *px = f->offset[0] + (p[0] - f->lo[0]) * f->scale;
    *py = f->offset[1] + (p[1] - f->lo[1]) * f->scale;
}

// ---------------------------------------------------------------------------------------------
// SVG

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            if ((unsigned char)*s >= 0x20) fputc(*s, f);
        }
    }
}

static cnn_status write_svg(void *user, FILE *f) {
    const vis_scatter *s = user;
    const double plot = 1000, legend = s->labels && s->n_classes > 0 ? 240 : 0;
    // smaller, fainter dots as the count grows: legible from 100 to 100,000 points
    double r = s->n > 20000 ? 1.2 : s->n > 2000 ? 2.0 : 3.5;
    double opacity = s->n > 20000 ? 0.55 : 0.8;
    int *order = drawing_order(s->n);
    if (!order) return cnn_fail(CNN_ERR_NOMEM, "SVG: out of memory");
    fit_box fit = fit_points(s->xy, s->n, plot, 20);
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n",
            plot + legend, plot, plot + legend, plot);
    fprintf(f, "<style>circle{fill-opacity:%.2f;stroke:none}", opacity);
    int nc = s->labels ? s->n_classes : 0;
    for (int c = 0; c < nc; c++) {
        uint8_t rgb[3];
        vis_class_color(c, nc, rgb);
        fprintf(f, ".c%d{fill:#%02x%02x%02x}", c, rgb[0], rgb[1], rgb[2]);
    }
    fprintf(f, ".cx{fill:#a0a0a0}</style>\n");
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    if (s->title) {
        fprintf(f, "<text x=\"20\" y=\"16\" font-size=\"13\">");
        xml_text(f, s->title);
        fprintf(f, "</text>\n");
    }
    for (int t = 0; t < s->n; t++) {
        int i = order[t];
        double px, py;
        fit_apply(&fit, s->xy + (size_t)i * 2, &px, &py);
        if (!isfinite(px) || !isfinite(py)) continue;
        int c = s->labels ? s->labels[i] : -1;
        if (c >= 0 && c < nc) fprintf(f, "<circle class=\"c%d\" cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\">", c, px, py, r);
        else fprintf(f, "<circle class=\"cx\" cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\">", px, py, r);
        fprintf(f, "<title>%d", i);
        if (s->paths) {
            fputs(" ", f);
            xml_text(f, s->paths[i]);
        }
        if (c >= 0 && c < nc && s->class_names) {
            fputs(" (", f);
            xml_text(f, s->class_names[c]);
            fputs(")", f);
        }
        fprintf(f, "</title></circle>\n");
    }
    // legend: colour, name, count
    if (nc > 0) {
        int64_t *count = calloc((size_t)nc, sizeof(int64_t));
        for (int i = 0; count && i < s->n; i++)
            if (s->labels[i] >= 0 && s->labels[i] < nc) count[s->labels[i]]++;
        double row = nc > 40 ? 1000.0 / (nc + 2) : 22;
        for (int c = 0; c < nc; c++) {
            double y = 30 + c * row;
            uint8_t rgb[3];
            vis_class_color(c, nc, rgb);
            fprintf(f, "<rect x=\"%.0f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"#%02x%02x%02x\"/>"
                       "<text x=\"%.0f\" y=\"%.1f\" font-size=\"13\">", plot + 10, y - 10, rgb[0],
                    rgb[1], rgb[2], plot + 28, y);
            xml_text(f, s->class_names ? s->class_names[c] : "");
            fprintf(f, " (%lld)</text>\n", count ? (long long)count[c] : 0LL);
        }
        free(count);
    }
    fprintf(f, "</svg>\n");
    free(order);
    return CNN_OK;
}

cnn_status vis_scatter_svg(const char *path, const vis_scatter *s) {
    return cnn_write_atomic(path, write_svg, (void *)s);
}

// ---------------------------------------------------------------------------------------------
// Thumbnails

cnn_status vis_thumbnail(const char *path, int size, uint8_t *rgb) {
    int w, h, comp;
    if (size < 1 || size > 4096) return cnn_fail(CNN_ERR_ARG, "thumbnail size %d not in 1..4096", size);
    if (!stbi_info(path, &w, &h, &comp))
        return cnn_fail(CNN_ERR_FORMAT, "%s: cannot read the image header (%s)", path, stbi_failure_reason());
    int m = w < h ? w : h;
    // small images: decode at their own size and repeat pixels, so they stay sharp
    int s = m < size ? m : size;
    if (s < 1) s = 1;
    cnn_model_info info;
    memset(&info, 0, sizeof info);
    info.channels = 3;
    info.height = info.width = s;
    info.resize = s;
    info.std[0] = info.std[1] = info.std[2] = 1;
    float *tmp = malloc(sizeof(float) * 3 * (size_t)s * s);
    uint8_t *small = malloc(3 * (size_t)s * s);
    cnn_status st = !tmp || !small ? cnn_fail(CNN_ERR_NOMEM, "thumbnail: out of memory")
                                   : cnn_image_load_ex(&info, path, NULL, tmp, small);
    if (st == CNN_OK) {
        int rep = (size + s - 1) / s, offset = (s * rep - size) / 2;
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) {
                int sy = (y + offset) / rep, sx = (x + offset) / rep;
                memcpy(rgb + ((size_t)y * size + x) * 3, small + ((size_t)sy * s + sx) * 3, 3);
            }
    }
    free(tmp);
    free(small);
    return st;
}

// ---------------------------------------------------------------------------------------------
// PNG

cnn_status vis_scatter_png(const char *path, const vis_scatter *s, int width, int thumb) {
    vis_canvas c;
    cnn_status st = vis_canvas_create(&c, width, width, 255, 255, 255);
    if (st != CNN_OK) return st;
    int nc = s->labels ? s->n_classes : 0;
    if (thumb <= 0) {
        int dot = s->n > 20000 ? 2 : s->n > 2000 ? 3 : 5;
        int *order = drawing_order(s->n);
        if (!order) {
            vis_canvas_free(&c);
            return cnn_fail(CNN_ERR_NOMEM, "PNG: out of memory");
        }
        fit_box fit = fit_points(s->xy, s->n, width, dot + 8);
        for (int t = 0; t < s->n; t++) {
            int i = order[t];
            double px, py;
            fit_apply(&fit, s->xy + (size_t)i * 2, &px, &py);
            if (!isfinite(px) || !isfinite(py)) continue;
            uint8_t rgb[3];
            vis_class_color(s->labels ? s->labels[i] : -1, nc, rgb);
            vis_canvas_fill(&c, (int)lround(px) - dot / 2, (int)lround(py) - dot / 2, dot, dot,
                            rgb[0], rgb[1], rgb[2]);
        }
        free(order);
    } else {
        // The map of images: the picture is a grid of thumb x thumb cells; each cell shows the
        // image whose point lies nearest to the cell's centre (so nothing hides anything).
        if (!s->paths) {
            vis_canvas_free(&c);
            return cnn_fail(CNN_ERR_ARG, "the map of images needs the image paths");
        }
        int cells = width / thumb;
        fit_box fit = fit_points(s->xy, s->n, (double)cells * thumb, thumb / 2.0);
        int *owner = malloc(sizeof(int) * (size_t)cells * cells);
        double *best = malloc(sizeof(double) * (size_t)cells * cells);
        if (!owner || !best) st = cnn_fail(CNN_ERR_NOMEM, "PNG: out of memory");
        for (size_t g = 0; st == CNN_OK && g < (size_t)cells * cells; g++) {
            owner[g] = -1;
            best[g] = INFINITY;
        }
        for (int i = 0; st == CNN_OK && i < s->n; i++) {
            double px, py;
            fit_apply(&fit, s->xy + (size_t)i * 2, &px, &py);
            int gx = (int)(px / thumb), gy = (int)(py / thumb);
            if (!(gx >= 0 && gx < cells && gy >= 0 && gy < cells)) continue;
            double dx = px - (gx + 0.5) * thumb, dy = py - (gy + 0.5) * thumb, d = dx * dx + dy * dy;
            size_t g = (size_t)gy * cells + gx;
            if (d < best[g]) {
                best[g] = d;
                owner[g] = i;
            }
        }
        int failed = 0;
        char message[512] = "";
        #pragma omp parallel
        {
            uint8_t *pix = malloc(3 * (size_t)thumb * thumb);
            #pragma omp for schedule(dynamic, 16)
            for (int g = 0; g < (st == CNN_OK ? cells * cells : 0); g++) {
                int i = owner[g];
                if (i < 0 || !pix) continue;
                if (vis_thumbnail(s->paths[i], thumb, pix) != CNN_OK) {
                    #pragma omp critical(scatter_thumb_failure)
                    {
                        if (!failed) snprintf(message, sizeof message, "%s", cnn_last_error());
                        failed = 1;
                    }
                    continue;
                }
                int x = (g % cells) * thumb, y = (g / cells) * thumb;
                vis_canvas_blit(&c, x, y, pix, thumb, thumb, 3, 1);   // cells never overlap
                uint8_t rgb[3];
                vis_class_color(s->labels ? s->labels[i] : -1, nc, rgb);
                if (nc > 0) vis_canvas_outline(&c, x, y, thumb, thumb, 1, rgb[0], rgb[1], rgb[2]);
            }
            free(pix);
        }
        if (st == CNN_OK && failed) st = cnn_fail(CNN_ERR_IO, "%s", message);
        free(owner);
        free(best);
    }
    if (st == CNN_OK) st = vis_png_write(path, &c);
    vis_canvas_free(&c);
    return st;
}

cnn_status vis_neighbors_png(const char *path, const char *query_path,
                             const char *const *neighbor_paths, int k, int tile) {
    const int gap = 6, line = 4;
    int width = gap + tile + gap + line + gap + k * (tile + gap);
    vis_canvas c;
    cnn_status st = vis_canvas_create(&c, width, tile + 2 * gap, 255, 255, 255);
    if (st != CNN_OK) return st;
    uint8_t *pix = malloc(3 * (size_t)tile * tile);
    if (!pix) st = cnn_fail(CNN_ERR_NOMEM, "PNG: out of memory");
    if (st == CNN_OK) st = vis_thumbnail(query_path, tile, pix);
    if (st == CNN_OK) vis_canvas_blit(&c, gap, gap, pix, tile, tile, 3, 1);
    int x = gap + tile + gap;
    vis_canvas_fill(&c, x, 0, line, tile + 2 * gap, 220, 30, 30);   // the red line
    x += line + gap;
    for (int i = 0; st == CNN_OK && i < k; i++, x += tile + gap) {
        st = vis_thumbnail(neighbor_paths[i], tile, pix);
        if (st == CNN_OK) vis_canvas_blit(&c, x, gap, pix, tile, tile, 3, 1);
    }
    if (st == CNN_OK) st = vis_png_write(path, &c);
    free(pix);
    vis_canvas_free(&c);
    return st;
}
