// report_space.c - the "space" section of `cnnscope report`: the images as points in the
// model's feature space. Nearest neighbours (exact, K = 8), a static neighbour figure for a few
// queries, PCA / t-SNE / UMAP maps (drawn in the browser by report.js, with a static PNG for
// pages opened without JavaScript), the thumbnail sheets and data.js (schema in report.h).
//
// Dims: N images, F = feature_dim, K neighbours, E embeddings (2-D), S thumbnail side.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "neighbors.h"
#include "pca.h"
#include "report.h"
#include "scatter_plot.h"
#include "tsne.h"
#include "umap.h"

#define KNN_K 8              // neighbours per image (data.js, the mistakes section)
#define SEED 42              // every embedding's seed: the same maps on every run
#define SHEET_COLS 32        // thumbnails per row of a sheet
#define SHEET_IMAGES 1024    // thumbnails per sheet (32 x 32)
#define MAX_EMBEDDINGS 3
#define MAP_PIXELS 800       // side of the static scatter PNGs

typedef struct {
    const char *name;        // "PCA", "t-SNE", "UMAP"
    const char *file;        // "pca": img/map-pca.png
    float *xy;               // [N, 2] in [0, 1]
} embedding;

// Bridges vis's progress (done, total) to the report's labelled progress.
typedef struct {
    const report *r;
    const char *label;
} progress_bridge;

static void bridge_progress(void *user, long done, long total) {
    const progress_bridge *b = user;
    report_progress(b->r, b->label, done, total);
}

// Scales xy [N, 2] into [0, 1], both axes by the same factor (the shape stays). NaN or
// infinite coordinates (from NaN features) become 0 so that data.js stays valid.
static void normalise_xy(float *xy, int n) {
    double lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
    for (int i = 0; i < 2 * n; i++) {
        if (!isfinite(xy[i])) xy[i] = 0;
        if (xy[i] < lo[i % 2]) lo[i % 2] = xy[i];
        if (xy[i] > hi[i % 2]) hi[i % 2] = xy[i];
    }
    double range = fmax(hi[0] - lo[0], hi[1] - lo[1]);
    if (!(range > 0)) range = 1;
    for (int i = 0; i < 2 * n; i++) xy[i] = (float)((xy[i] - lo[i % 2]) / range);
}

// ---------------------------------------------------------------------------------------------
// The maps

static cnn_status run_pca(const report *r, float *xy) {
    vis_pca pca;
    report_progress(r, "PCA", 0, 1);
    cnn_status st = vis_pca_fit(r->features, r->n, r->feature_dim, 2, VIS_PCA_AUTO, SEED, &pca);
    if (st != CNN_OK) return st;
    st = vis_pca_transform(&pca, r->features, r->n, xy);
    vis_pca_free(&pca);
    if (st == CNN_OK) report_progress(r, "PCA", 1, 1);
    return st;
}

static cnn_status run_tsne(const report *r, float *xy) {
    vis_tsne_options o = vis_tsne_defaults();   // perplexity 30, 1000 iterations, PCA init
    progress_bridge b = {r, "t-SNE"};
    o.seed = SEED;
    if (o.perplexity > (r->n - 1) / 3.0) o.perplexity = (r->n - 1) / 3.0;   // tiny sets
    o.progress = bridge_progress;
    o.progress_user = &b;
    vis_tsne_report rep;
    report_progress(r, "t-SNE", 0, o.iters);
    cnn_status st = vis_tsne(r->features, r->n, r->feature_dim, &o, xy, &rep);
    if (st == CNN_OK) report_progress(r, "t-SNE", o.iters, o.iters);
    return st;
}

static cnn_status run_umap(const report *r, float *xy) {
    vis_umap_options o = vis_umap_defaults();   // 15 neighbours, min_dist 0.1, spectral init
    progress_bridge b = {r, "UMAP"};
    o.seed = SEED;
    if (o.n_neighbors > r->n - 1) o.n_neighbors = r->n - 1;
    o.progress = bridge_progress;
    o.progress_user = &b;
    vis_umap_report rep;
    report_progress(r, "UMAP", 0, 1);
    cnn_status st = vis_umap(r->features, r->n, r->feature_dim, &o, xy, &rep);
    if (st == CNN_OK) report_progress(r, "UMAP", 1, 1);
    return st;
}

// The static fallback of one map: dots coloured by label (by prediction without labels).
static cnn_status map_png(const report *r, const embedding *e) {
    char relative[64];
    snprintf(relative, sizeof relative, "img/map-%s.png", e->file);
    char *path = report_file(r, relative);
    if (!path) return CNN_ERR_NOMEM;
    const char **names = malloc(sizeof(char *) * (size_t)r->n_outputs);
    cnn_status st = names ? CNN_OK : cnn_fail(CNN_ERR_NOMEM, "report: out of memory");
    for (int c = 0; st == CNN_OK && c < r->n_outputs; c++) names[c] = report_class_name(r, c);
    vis_scatter sc = {r->n, e->xy, r->n_classes > 0 ? r->labels : r->pred, r->n_outputs,
                      names, NULL, NULL};
    if (st == CNN_OK) st = vis_scatter_png(path, &sc, MAP_PIXELS, 0);
    free(names);
    free(path);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Thumbnail sheets: image i in sheet i / SHEET_IMAGES, cell j = i % SHEET_IMAGES at
// ((j % SHEET_COLS) * S, (j / SHEET_COLS) * S).

static cnn_status write_sheet(const report *r, int sheet, int size) {
    int first = sheet * SHEET_IMAGES;
    int count = r->n - first < SHEET_IMAGES ? r->n - first : SHEET_IMAGES;
    int rows = (count + SHEET_COLS - 1) / SHEET_COLS;
    vis_canvas c;
    cnn_status st = vis_canvas_create(&c, SHEET_COLS * size, rows * size, 255, 255, 255);
    if (st != CNN_OK) return st;
    int failed = count;   // the lowest cell that failed (count: none)
    #pragma omp parallel
    {
        uint8_t *pix = malloc(3 * (size_t)size * size);
        #pragma omp for schedule(dynamic, 16)
        for (int j = 0; j < count; j++) {
            if (!pix || vis_thumbnail(r->paths[first + j], size, pix) != CNN_OK) {
                #pragma omp critical(report_sheet_failure)
                if (j < failed) failed = j;
                continue;
            }
            // cells never overlap: no two threads write the same pixel
            vis_canvas_blit(&c, (j % SHEET_COLS) * size, (j / SHEET_COLS) * size, pix, size, size,
                            3, 1);
        }
        free(pix);
    }
    if (failed < count) {   // again on this thread, for its message (thread-local)
        uint8_t *pix = malloc(3 * (size_t)size * size);
        st = !pix ? cnn_fail(CNN_ERR_NOMEM, "report: out of memory for a thumbnail")
             : vis_thumbnail(r->paths[first + failed], size, pix);
        if (st == CNN_OK)   // it worked the second time: say so rather than go on
            st = cnn_fail(CNN_ERR_IO, "%s: thumbnail failed once", r->paths[first + failed]);
        free(pix);
    }
    char relative[64];
    snprintf(relative, sizeof relative, "thumbs/sheet-%d.png", sheet);
    if (st == CNN_OK) st = report_png(r, relative, &c);
    vis_canvas_free(&c);
    return st;
}

// ---------------------------------------------------------------------------------------------
// data.js

typedef struct {
    const report *r;
    const embedding *emb;
    int n_emb, thumb_size, n_sheets;
} data_js;

static void write_int_array(FILE *f, const int *v, size_t n) {
    fputc('[', f);
    for (size_t i = 0; i < n; i++) fprintf(f, i ? ",%d" : "%d", v[i]);
    fputc(']', f);
}

// Fixed precision, so that the same numbers give the same bytes; never "nan".
static void write_fixed(FILE *f, double v, int decimals, int first) {
    if (!first) fputc(',', f);
    fprintf(f, "%.*f", decimals, isfinite(v) ? v : 0.0);
}

static cnn_status write_data_js(void *user, FILE *f) {
    const data_js *d = user;
    const report *r = d->r;
    cnn_node_info layer;
    cnn_model_node(r->model, r->feature_node, &layer);
    fprintf(f, "window.CNNSCOPE_DATA = {\n\"model\": ");
    report_js_string(f, cnn_model_get_info(r->model)->name);
    fprintf(f, ",\n\"n\": %d,\n\"classes\": [", r->n);
    for (int c = 0; c < r->n_outputs; c++) {
        if (c) fputc(',', f);
        report_js_string(f, report_class_name(r, c));
    }
    fprintf(f, "],\n\"dataset_classes\": [");
    for (int c = 0; c < r->n_classes; c++) {
        if (c) fputc(',', f);
        report_js_string(f, r->class_names[c]);
    }
    fprintf(f, "],\n\"colors\": [");
    for (int c = 0; c < r->n_outputs; c++) {
        uint8_t rgb[3];
        vis_class_color(c, r->n_outputs, rgb);
        fprintf(f, "%s\"#%02x%02x%02x\"", c ? "," : "", rgb[0], rgb[1], rgb[2]);
    }
    fprintf(f, "],\n\"labels\": ");
    write_int_array(f, r->labels, (size_t)r->n);
    fprintf(f, ",\n\"preds\": ");
    write_int_array(f, r->pred, (size_t)r->n);
    fprintf(f, ",\n\"probs\": [");
    for (int i = 0; i < r->n; i++)
        write_fixed(f, r->probs[(size_t)i * r->n_outputs + r->pred[i]], 4, i == 0);
    fprintf(f, "],\n\"names\": [");
    for (int i = 0; i < r->n; i++) {
        if (i) fputc(',', f);
        report_js_string(f, r->names[i]);
    }
    fprintf(f, "],\n\"skipped\": %d,\n", r->n_skipped);
    fprintf(f, "\"thumbs\": {\"size\": %d, \"cols\": %d, \"per_sheet\": %d, \"sheets\": [",
            d->thumb_size, SHEET_COLS, SHEET_IMAGES);
    for (int s = 0; s < d->n_sheets; s++) fprintf(f, "%s\"thumbs/sheet-%d.png\"", s ? "," : "", s);
    fprintf(f, "]},\n\"neighbors\": {\"k\": %d, \"layer\": ", r->knn_k);
    report_js_string(f, layer.name);
    fprintf(f, ", \"idx\": ");
    write_int_array(f, r->knn_idx, (size_t)r->n * r->knn_k);
    fprintf(f, "},\n\"embeddings\": [");
    for (int e = 0; e < d->n_emb; e++) {
        fprintf(f, "%s\n{\"name\": ", e ? "," : "");
        report_js_string(f, d->emb[e].name);
        fprintf(f, ", \"xy\": [");
        for (int i = 0; i < 2 * r->n; i++) write_fixed(f, d->emb[e].xy[i], 4, i == 0);
        fprintf(f, "]}");
    }
    fprintf(f, "]\n};\n");
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------
// The section

// The classic figure for a few queries (one per class where possible): img/neighbors-NN.png.
static cnn_status neighbor_figures(const report *r) {
    FILE *f = r->html;
    int max = r->n_classes > 0 ? (r->n_classes < 10 ? r->n_classes : 10) : 6;
    int queries[10];
    int count = report_samples(r, 1, max, queries);
    int scale, tile = report_thumb_size(r, &scale) * scale;
    const char *paths[KNN_K];
    cnn_status st = CNN_OK;
    fprintf(f, "<div class=\"grid neighbor-figures\">\n");
    for (int q = 0; st == CNN_OK && q < count; q++) {
        int i = queries[q], same = 0;
        const int *nb = r->knn_idx + (size_t)i * r->knn_k;
        for (int j = 0; j < r->knn_k; j++) {
            paths[j] = r->paths[nb[j]];
            same += r->labels[nb[j]] == r->labels[i];
        }
        char relative[64];
        snprintf(relative, sizeof relative, "img/neighbors-%02d.png", q);
        char *path = report_file(r, relative);
        st = path ? vis_neighbors_png(path, r->paths[i], paths, r->knn_k, tile) : CNN_ERR_NOMEM;
        free(path);
        if (st != CNN_OK) break;
        fprintf(f, "<figure><img src=\"%s\" alt=\"nearest neighbours of ", relative);
        report_html_text(f, r->names[i]);
        fprintf(f, "\" title=\"");
        report_html_text(f, r->names[i]);
        fprintf(f, "\"><figcaption><b>");
        if (r->labels[i] >= 0) {
            report_html_text(f, report_class_name(r, r->labels[i]));
            fprintf(f, "</b>: %d of %d neighbours share its label", same, r->knn_k);
        } else {
            report_html_text(f, report_class_name(r, r->pred[i]));
            fprintf(f, "</b> (the model's answer)");
        }
        fprintf(f, "</figcaption></figure>\n");
    }
    fprintf(f, "</div>\n");
    return st;
}

// The class colours, for the static maps (report.js draws its own legend under each map).
static void write_legend(const report *r) {
    FILE *f = r->html;
    fprintf(f, "<ul class=\"legend\">");
    for (int c = 0; c < r->n_outputs && c < 40; c++) {   // more colours than 40 say nothing
        uint8_t rgb[3];
        vis_class_color(c, r->n_outputs, rgb);
        fprintf(f, "<li><span class=\"swatch\" style=\"background:#%02x%02x%02x\"></span>",
                rgb[0], rgb[1], rgb[2]);
        report_html_text(f, report_class_name(r, c));
        fprintf(f, "</li>");
    }
    fprintf(f, "</ul>\n");
}

static const char *const map_help[MAX_EMBEDDINGS] = {
    "the two directions along which the features vary most: a linear view, faithful to large "
    "distances, but classes often overlap",
    "keeps each image's nearest neighbours close (perplexity 30): the clusters are real, but "
    "the distances between clusters and their sizes mean little",
    "a fuzzy neighbour graph laid out in 2-D (15 neighbours, min_dist 0.1): like t-SNE, with "
    "more of the global arrangement kept",
};

static void write_maps(const report *r, const embedding *emb, int n_emb) {
    FILE *f = r->html;
    fprintf(f, "<h3>Maps of the space</h3>\n<p>Each dot is one image, placed so that images "
               "with similar features are close; its colour is its %s. Hover over a dot to see "
               "the image; click it to see its %d nearest neighbours (in the full feature "
               "space, not on the map). The seeds are fixed: the same images give the same "
               "maps.</p>\n",
            r->n_classes > 0 ? "label (folder)" : "predicted class", r->knn_k);
    if (n_emb == 0) {
        fprintf(f, "<p class=\"note\">Too few images (%d) for a map.</p>\n", r->n);
        return;
    }
    fprintf(f, "<ul>\n");
    for (int e = 0; e < n_emb; e++)
        fprintf(f, "<li><b>%s</b>: %s.</li>\n", emb[e].name, map_help[e]);
    fprintf(f, "</ul>\n<div class=\"scatters\">\n");
    for (int e = 0; e < n_emb; e++)
        fprintf(f, "<div class=\"scatter\" data-embedding=\"%d\"></div>\n", e);
    fprintf(f, "</div>\n<noscript>\n<div class=\"grid\">\n");
    for (int e = 0; e < n_emb; e++)
        fprintf(f, "<figure><img src=\"img/map-%s.png\" width=\"%d\" height=\"%d\" alt=\"%s map\">"
                   "<figcaption>%s</figcaption></figure>\n",
                emb[e].file, MAP_PIXELS / 2, MAP_PIXELS / 2, emb[e].name, emb[e].name);
    fprintf(f, "</div>\n");
    write_legend(r);
    fprintf(f, "</noscript>\n<div id=\"tooltip\"></div>\n<div id=\"neighbors\"></div>\n");
}

static cnn_status knn(report *r) {
    r->knn_k = r->n - 1 < KNN_K ? r->n - 1 : KNN_K;
    if (r->knn_k < 1) {
        r->knn_k = 0;
        return CNN_OK;
    }
    r->knn_idx = malloc(sizeof(int) * (size_t)r->n * r->knn_k);
    float *dist = malloc(sizeof(float) * (size_t)r->n * r->knn_k);
    cnn_status st = !r->knn_idx || !dist
                        ? cnn_fail(CNN_ERR_NOMEM, "report: out of memory for %d x %d neighbours",
                                   r->n, r->knn_k)
                        : CNN_OK;
    report_progress(r, "neighbours", 0, 1);
    if (st == CNN_OK)
        st = vis_knn_graph(r->features, r->n, r->feature_dim, r->knn_k, VIS_METRIC_L2,
                           VIS_KNN_EXACT, SEED, r->knn_idx, dist);
    if (st == CNN_OK) report_progress(r, "neighbours", 1, 1);
    free(dist);
    return st;
}

cnn_status report_space_section(report *r) {
    FILE *f = r->html;
    embedding emb[MAX_EMBEDDINGS] = {{"PCA", "pca", NULL}, {"t-SNE", "tsne", NULL},
                                     {"UMAP", "umap", NULL}};
    // Maps need a few points: PCA 2 (and 2 features), t-SNE and UMAP 5.
    int n_emb = r->n >= 5 && r->feature_dim >= 2 ? 3 : 0;
    cnn_node_info layer;
    cnn_model_node(r->model, r->feature_node, &layer);
    cnn_status st = knn(r);
    for (int e = 0; st == CNN_OK && e < n_emb; e++) {
        if (!(emb[e].xy = malloc(sizeof(float) * 2 * (size_t)r->n))) {
            st = cnn_fail(CNN_ERR_NOMEM, "report: out of memory for a map of %d points", r->n);
            break;
        }
        st = e == 0   ? run_pca(r, emb[e].xy)
             : e == 1 ? run_tsne(r, emb[e].xy)
                      : run_umap(r, emb[e].xy);
        if (st == CNN_OK) {
            normalise_xy(emb[e].xy, r->n);
            st = map_png(r, &emb[e]);
        }
    }

    int scale, size = report_thumb_size(r, &scale);
    int n_sheets = (r->n + SHEET_IMAGES - 1) / SHEET_IMAGES;
    if (st == CNN_OK) report_progress(r, "thumbnails", 0, n_sheets);
    for (int s = 0; st == CNN_OK && s < n_sheets; s++) {
        st = write_sheet(r, s, size);
        if (st == CNN_OK) report_progress(r, "thumbnails", s + 1, n_sheets);
    }
    if (st == CNN_OK) {
        data_js d = {r, emb, n_emb, size, n_sheets};
        char *path = report_file(r, "data.js");
        st = path ? cnn_write_atomic(path, write_data_js, &d) : CNN_ERR_NOMEM;
        free(path);
    }

    if (st == CNN_OK) {
        fprintf(f, "<section id=\"space\">\n<h2>The representation space</h2>\n<p>The layer "
                   "<code>");
        report_html_text(f, layer.name);
        fprintf(f, "</code> (the input of the classifier's last layer) turns every image into "
                   "%d numbers%s. Images the network finds similar get similar numbers: in a "
                   "well-trained network, images of one class gather together in this space, and "
                   "its neighbourhoods show what the network considers alike.</p>\n",
                r->feature_dim,
                layer.ndim == 4 ? " (each channel averaged over its positions)" : "");
        fprintf(f, "<h3>Nearest neighbours</h3>\n<p>A few images (left of the red line) and the "
                   "%d images nearest to them in this space (Euclidean distance), nearest "
                   "first.</p>\n",
                r->knn_k);
        if (r->knn_k > 0) st = neighbor_figures(r);
    }
    if (st == CNN_OK) {
        write_maps(r, emb, n_emb);
        fprintf(f, "</section>\n");
    }
    for (int e = 0; e < MAX_EMBEDDINGS; e++) free(emb[e].xy);
    return st;
}
