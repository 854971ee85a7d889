// report.h - `cnnscope report MODEL DIR`: one self-contained folder (index.html, its pictures
// and its data) that shows what a model has learned, for a student to open in a browser.
//
// The folder (works from file:// with no network; plain HTML, CSS and a little vanilla JS):
//   index.html          the page: one <section> per part, in the order below
//   report.css          style         } embedded in the binary from vis/report_assets/
//   report.js           interaction   } (scatter hover / click, tooltips)
//   data.js             window.CNNSCOPE_DATA = {...}: labels, predictions, embeddings,
//                       neighbours, thumbnail sheets (schema below); a <script>, not JSON,
//                       because browsers refuse fetch() on file://
//   timings.js          window.CNNSCOPE_TIMINGS = {total_seconds: T, steps: [[name, s], ...]}:
//                       the only file that differs between two runs on the same inputs
//   thumbs/sheet-K.png  thumbnail sheets (data.js says how images map onto them)
//   img/*.png           every other picture
//
// Sections (id of the <section>, the file that writes it):
//   model     report_model.c     layer table: shapes, parameters, MACs, receptive fields
//   classes   report_classes.c   accuracy, confusion matrix (when DIR is an ImageFolder)
//   filters   report_neurons.c   first-layer filters
//   maps      report_neurons.c   feature maps of a few sample images at several depths
//   patches   report_neurons.c   top patches for channels at several depths + DeconvNet
//   space     report_space.c     nearest neighbours, PCA / t-SNE / UMAP maps (interactive)
//   mistakes  report_classes.c   most confusing and likely mislabelled images
//   explain   report_explain.c   CAM / Grad-CAM / guided backprop / saliency, correct and wrong
//
// data.js schema (every array flat, row-major; numbers printed with fixed precision so that
// the same inputs give the same bytes):
//   window.CNNSCOPE_DATA = {
//     model: "name", n: N, classes: [model class names], dataset_classes: [folder names],
//     labels: [N ints, -1 = unlabelled], preds: [N ints], names: [N paths relative to DIR],
//     thumbs: {size: S, cols: C, per_sheet: P, sheets: ["thumbs/sheet-0.png", ...]},
//             image i is in sheet floor(i / P) at cell j = i % P: x = (j % C) * S,
//             y = floor(j / C) * S (no gaps)
//     neighbors: {k: K, layer: "name", idx: [N * K ints, nearest first, never the image itself]},
//     embeddings: [{name: "PCA" | "t-SNE" | "UMAP", xy: [2N numbers]}, ...]
//     (also:) probs: [N numbers, the probability of preds[i]], colors: ["#rrggbb" per model
//     class, as in the static figures], skipped: number of unreadable images left out
//   };
// embeddings xy lie in [0, 1] (both axes scaled by the same factor, so shapes are kept).
// DOM the JS relies on (inside <section id="space">): one <div class="scatter"
// data-embedding="K"></div> per embedding (the JS draws a <canvas> into it), one
// <div id="neighbors"></div> (filled on click: the query and its K neighbours), and
// <div id="tooltip"></div> (hover: thumbnail, name, label, prediction); <span id="time-taken">
// anywhere (filled from timings.js).
//
// HTML the sections share: plain elements (h2 per section, h3, p, table, figure with img and
// figcaption) plus the classes listed at the top of vis/report_assets/report.css (.grid: a
// wrapping row of figures; td.num: a number; .note: a remark; table.confusion; .scatters).
//
// Same inputs, same bytes: no clocks, paths or thread counts in any file but timings.js; all
// sampling from fixed seeds; the folder is written under a temporary name and renamed into
// place at the end, so nothing stale from an earlier run survives and a failed run leaves the
// previous report as it was.
#ifndef CNNSCOPE_REPORT_H
#define CNNSCOPE_REPORT_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "canvas.h"
#include "cnnscope.h"

typedef struct report report;
// label: what is running ("t-SNE"), done / total in its own units.
typedef void (*report_progress_fn)(void *user, const char *label, long done, long total);

struct report {
    // --- set by cli/cmd_report.c before any section runs ---
    const cnn_model *model;
    const char *model_path;
    const char *data_dir;
    int n;                         // images in the report
    char **paths;                  // [n] files to open (data_dir/name)
    char **names;                  // [n] relative to data_dir, as shown on the page
    int *labels;                   // [n] ImageFolder class index, -1 when unlabelled
    int n_classes;                 // ImageFolder classes (0: DIR has no class folders)
    char **class_names;            // [n_classes] folder names
    int threads;                   // 0 = default
    int batch;                     // images per forward pass
    const char *dir;               // the folder being written (a temporary name; its img/
                                   // and thumbs/ exist)
    FILE *html;                    // index.html, open: each section appends its <section>
    report_progress_fn progress;   // may be NULL
    void *progress_user;

    // --- filled by report_classify (runs before every section below) ---
    int n_outputs;                 // the model's class scores per image
    float *probs;                  // [n, n_outputs] softmax of the scores
    int *pred;                     // [n] top-1 class (ties: lower index)
    int feature_node;              // the layer of the feature rows: the input of the last
                                   // linear layer (pooled to [C] if 4-D)
    int feature_dim;
    float *features;               // [n, feature_dim]
    int n_skipped;                 // unreadable images left out: report_classify removes them
    char **skipped;                //   from paths, names, labels and lowers n; [n_skipped] names
                                   //   (pointers to the strings of names, not owned)

    // --- filled by report_space_section (the mistakes section reads them) ---
    int knn_k;                     // neighbours per image (0 when n < 2)
    int *knn_idx;                  // [n, knn_k] nearest first, exact L2 on the features, never
                                   // the image itself

    // --- the top-patch search of report_neurons.c (see report_patches_keep) ---
    struct report_patch_search *patch_search;   // NULL unless a search is running
};

// --- report.c: helpers every section uses ---
// Writes s HTML-escaped (& < > " ').
void report_html_text(FILE *f, const char *s);
// malloc'd "r->dir/relative" (NULL when out of memory, with cnn_last_error set).
char *report_file(const report *r, const char *relative);
// Writes c as PNG at r->dir/relative (atomically) and creates img/ and thumbs/ as needed.
cnn_status report_png(const report *r, const char *relative, const vis_canvas *c);
// Writes s as a JavaScript / JSON string literal (quotes included).
void report_js_string(FILE *f, const char *s);
// Writes v with thousands separators ("12,345").
void report_count(FILE *f, int64_t v);
// The last part of a path ("data/fashion-test/" -> "fashion-test"), into buf.
const char *report_basename(const char *path, char *buf, size_t size);
// The size in pixels of a thumbnail: the model's input side up to 64 (28 for Fashion-MNIST),
// and `scale`, the integer factor that makes it about 64 pixels or more for the page.
int report_thumb_size(const report *r, int *scale);
// Calls r->progress if set (label: what runs, done of total; 0 at the start, total at the end:
// cnnscope report times each label from its first call to done == total).
void report_progress(const report *r, const char *label, long done, long total);
// Up to max sample images, deterministic: the first image (in dataset order) of each class
// for which the model is right (correct = 1) or wrong (correct = 0), class by class, then
// further ones round-robin until max; unlabelled sets take evenly spaced images. Returns the
// count written to out.
int report_samples(const report *r, int correct, int max, int *out);
// The class name for model output c (the model's own names when it has them).
const char *report_class_name(const report *r, int c);

// --- the sections, in page order (each appends one <section> to r->html) ---
cnn_status report_model_section(report *r);      // report_model.c
cnn_status report_classify(report *r);           // report_classes.c: the forward pass, then
                                                 // the "classes" section
cnn_status report_filters_section(report *r);    // report_neurons.c
cnn_status report_maps_section(report *r);       // report_neurons.c
cnn_status report_patches_section(report *r);    // report_neurons.c
cnn_status report_space_section(report *r);      // report_space.c (also writes data.js)
cnn_status report_mistakes_section(report *r);   // report_classes.c
cnn_status report_explain_section(report *r);    // report_explain.c
void report_free_results(report *r);             // report_classes.c: probs, pred, features,
                                                 // skipped, knn_idx

// --- report_neurons.c: the top-patch search rides on report_classify's forward pass, so that
// the images are run once, not twice. report_classify calls report_patches_keep before it
// creates its session and adds the nodes it returns (at most REPORT_PATCH_LAYERS) to
// cnn_session_options.keep; after each cnn_session_run it calls report_patches_observe with
// the run's images, first .. first + n - 1 as indices after unreadable images are left out (in
// order). report_patches_section then only draws; without these calls it makes its own pass.
// report_patches_free (also called by report_patches_section) releases the search.
#define REPORT_PATCH_LAYERS 4
typedef struct report_patch_search report_patch_search;
int report_patches_keep(report *r, int *nodes);  // count, or -1 (cnn_last_error says why)
cnn_status report_patches_observe(report *r, const cnn_session *s, int first, int n);
void report_patches_free(report *r);

// --- vis/report_assets/ (embedded into the library at build time) ---
extern const char report_asset_css[];
extern const char report_asset_js[];

#endif
