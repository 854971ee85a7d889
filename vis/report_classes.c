// report_classes.c - what the model says about every image of the report: one forward pass
// (class probabilities, predictions, feature rows), then two sections: "classes" (accuracy, per
// class, confusion matrix) and "mistakes" (the most confusing and the likely mislabelled images).
//
// Dims: N images, K model outputs (classes), F = feature_dim, B = images per forward pass.
// Dataset class i is model output i, as in `cnnscope eval`.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"
#include "scatter_plot.h"    // vis_thumbnail
#include "vis_features.h"    // vis_features_pool

#define GALLERY_MAX 24       // images per gallery of the mistakes section

// The feature layer: the input of the last linear layer (what the classifier reads); without
// a linear layer, the input of the output node.
static int feature_node_of(const cnn_model *m) {
    int count = cnn_model_node_count(m);
    cnn_node_info n;
    for (int i = count - 1; i > 0; i--) {
        cnn_model_node(m, i, &n);
        if (n.op == CNN_OP_LINEAR) return n.inputs[0] > 0 ? n.inputs[0] : i;
    }
    cnn_model_node(m, count - 1, &n);
    return n.n_inputs > 0 && n.inputs[0] > 0 ? n.inputs[0] : count - 1;
}

// In place: row[0..k) becomes softmax(row), summed in double.
static void softmax(float *row, int k) {
    float max = row[0];
    for (int i = 1; i < k; i++) if (row[i] > max) max = row[i];
    double sum = 0;
    for (int i = 0; i < k; i++) sum += exp((double)row[i] - max);
    for (int i = 0; i < k; i++) row[i] = (float)(exp((double)row[i] - max) / sum);
}

// Decodes images first .. first+count-1 into input [count, C, H, W]. An unreadable image is
// skipped (with its name in r->skipped), as `cnnscope patches` does: one bad file should not
// cost the whole report. readable[] gets the offsets (from first) of the decoded images, in
// order; returns how many.
static int decode_batch(report *r, int first, int count, float *input, int *readable) {
    const cnn_model_info *info = cnn_model_get_info(r->model);
    size_t per_image = (size_t)info->channels * info->height * info->width;
    cnn_image_limits limits = {100000000};
    if (cnn_image_load_batch(info, (const char *const *)r->paths + first, count, &limits,
                             input) == CNN_OK) {
        for (int i = 0; i < count; i++) readable[i] = i;
        return count;
    }
    int ok = 0;   // some image failed: decode one at a time to find which
    for (int i = 0; i < count; i++) {
        if (cnn_image_load_ex(info, r->paths[first + i], &limits, input + ok * per_image, NULL) !=
            CNN_OK) {
            r->skipped[r->n_skipped++] = r->names[first + i];
            continue;
        }
        readable[ok++] = i;
    }
    return ok;
}

// The forward pass over all images: probs, pred, features; unreadable images left out.
static cnn_status classify_all(report *r) {
    const cnn_model *m = r->model;
    const cnn_model_info *info = cnn_model_get_info(m);
    int out_node = cnn_model_output_node(m);
    cnn_node_info out_info, feat_info;
    cnn_model_node(m, out_node, &out_info);
    r->feature_node = feature_node_of(m);
    cnn_model_node(m, r->feature_node, &feat_info);
    int k = out_info.c, hw = feat_info.ndim == 4 ? feat_info.h * feat_info.w : 1;
    int batch = r->batch > 0 ? r->batch : 64;
    r->n_outputs = k;
    r->feature_dim = feat_info.c;   // a 4-D output is averaged over its positions
    size_t per_image = (size_t)info->channels * info->height * info->width;
    float *input = malloc(sizeof(float) * per_image * (size_t)batch);
    int *readable = malloc(sizeof(int) * (size_t)batch);
    r->probs = malloc(sizeof(float) * (size_t)r->n * k);
    r->pred = malloc(sizeof(int) * (size_t)r->n);
    r->features = malloc(sizeof(float) * (size_t)r->n * r->feature_dim);
    r->skipped = malloc(sizeof(char *) * (size_t)r->n);
    r->n_skipped = 0;
    if (!input || !readable || !r->probs || !r->pred || !r->features || !r->skipped) {
        free(input);
        free(readable);
        return cnn_fail(CNN_ERR_NOMEM, "report: out of memory for %d images x %d classes x %d "
                        "features", r->n, k, r->feature_dim);
    }

    // The feature node must stay readable (and exactly its own output) after each run.
    cnn_session_options so = cnn_session_defaults();
    so.threads = r->threads;
    // Keep the feature layer, and the layers whose top patches the patches section wants:
    // it collects them during this pass instead of running every image a second time.
    int keep[1 + REPORT_PATCH_LAYERS];
    keep[0] = r->feature_node;
    int n_patch = report_patches_keep(r, keep + 1);
    if (n_patch < 0) {   // out of memory, message set
        free(input);
        free(readable);
        return CNN_ERR_NOMEM;
    }
    so.keep = keep;
    so.n_keep = 1 + n_patch;
    cnn_session *s = NULL;
    cnn_status st = cnn_session_create(m, batch, &so, &s);
    int kept = 0;   // images classified so far; they move down over the skipped ones
    report_progress(r, "classify", 0, r->n);
    for (int first = 0; st == CNN_OK && first < r->n; first += batch) {
        int count = r->n - first < batch ? r->n - first : batch;
        int ok = decode_batch(r, first, count, input, readable);
        if (ok > 0) st = cnn_session_run(s, input, ok);
        const cnn_tensor *scores = st == CNN_OK && ok > 0 ? cnn_session_output(s, out_node) : NULL;
        const cnn_tensor *feats = scores ? cnn_session_output(s, r->feature_node) : NULL;
        if (ok > 0 && st == CNN_OK && (!scores || !feats)) st = CNN_ERR_ARG;   // message set
        for (int j = 0; st == CNN_OK && j < ok; j++) {
            int dst = kept + j, src = first + readable[j];   // dst <= src: nothing unread is hit
            r->paths[dst] = r->paths[src];
            r->names[dst] = r->names[src];
            r->labels[dst] = r->labels[src];
            float *prob = r->probs + (size_t)dst * k;
            memcpy(prob, scores->data + (size_t)j * k, sizeof(float) * (size_t)k);
            if (out_info.op != CNN_OP_SOFTMAX) softmax(prob, k);
            int best = 0;   // ties: the lower index
            for (int c = 1; c < k; c++) if (prob[c] > prob[best]) best = c;
            r->pred[dst] = best;
            // feats is (ok, C, H, W) or (ok, F)
            vis_features_pool(feats->data + (size_t)j * feat_info.c * hw, feat_info.c, hw,
                              feat_info.ndim == 4 ? VIS_POOL_AVG : VIS_POOL_NONE,
                              r->features + (size_t)dst * r->feature_dim);
        }
        if (st == CNN_OK && ok > 0) st = report_patches_observe(r, s, kept, ok);
        kept += ok;
        if (st == CNN_OK) report_progress(r, "classify", first + count, r->n);
    }
    cnn_session_free(s);
    free(input);
    free(readable);
    if (st != CNN_OK) return st;
    if (kept == 0)
        return cnn_fail(CNN_ERR_FORMAT, "%s: none of the %d images could be read (the first: %s)",
                        r->data_dir, r->n, r->n_skipped ? r->skipped[0] : "-");
    r->n = kept;
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------
// The "classes" section

// Counts [K, K]: true class (row) x predicted class (column), labelled images only.
static int64_t *confusion_matrix(const report *r) {
    int k = r->n_outputs;
    int64_t *cm = calloc((size_t)k * k, sizeof *cm);
    if (!cm) return NULL;
    for (int i = 0; i < r->n; i++)
        if (r->labels[i] >= 0 && r->labels[i] < k) cm[(size_t)r->labels[i] * k + r->pred[i]]++;
    return cm;
}

// Images whose label is among the `top` most probable classes.
static int64_t top_k_correct(const report *r, int top) {
    int64_t correct = 0;
    for (int i = 0; i < r->n; i++) {
        int label = r->labels[i];
        if (label < 0 || label >= r->n_outputs) continue;
        const float *p = r->probs + (size_t)i * r->n_outputs;
        int above = 0;   // classes ranked before the label (ties: the lower index first)
        for (int c = 0; c < r->n_outputs; c++)
            above += p[c] > p[label] || (p[c] == p[label] && c < label);
        correct += above < top;
    }
    return correct;
}

static void write_skipped_note(const report *r) {
    if (r->n_skipped == 0) return;
    FILE *f = r->html;
    fprintf(f, "<p class=\"note\">%d unreadable image%s left out: ", r->n_skipped,
            r->n_skipped == 1 ? " was" : "s were");
    for (int i = 0; i < r->n_skipped && i < 10; i++) {
        if (i > 0) fprintf(f, ", ");
        report_html_text(f, r->skipped[i]);
    }
    fprintf(f, "%s.</p>\n", r->n_skipped > 10 ? ", ..." : "");
}

static void write_percent_line(FILE *f, const char *what, int64_t correct, int n) {
    fprintf(f, "<p class=\"accuracy\">%s accuracy: <b>%.2f %%</b> (", what, 100.0 * correct / n);
    report_count(f, correct);
    fprintf(f, " of ");
    report_count(f, n);
    fprintf(f, ")</p>\n");
}

// One table cell shaded by `fraction` (0..1) of its row; dark text turns white on dark cells.
static void write_shaded_cell(FILE *f, int64_t count, double fraction, int diagonal) {
    fprintf(f, "<td%s style=\"background:rgba(%s,%.3f)%s\">", diagonal ? " class=\"diag\"" : "",
            diagonal ? "22,128,60" : "200,40,40", fraction, fraction > 0.55 ? ";color:#fff" : "");
    report_count(f, count);
    fprintf(f, "</td>");
}

static void write_confusion(const report *r, const int64_t *cm, const int64_t *row_total) {
    FILE *f = r->html;
    int k = r->n_outputs;
    fprintf(f, "<h3>Confusion matrix</h3>\n<p>Row: the true class (the folder); column: the "
               "class the model chose. A cell counts the images of its row that went to its "
               "column, shaded by their share of the row: a perfect model fills the diagonal "
               "(green) and nothing else; a dark red cell is a pair of classes the model mixes "
               "up.</p>\n");
    fprintf(f, "<table class=\"confusion\" id=\"confusion-matrix\">\n<thead><tr><th>true \\ "
               "predicted</th>");
    for (int c = 0; c < k; c++) {
        fprintf(f, "<th>");
        report_html_text(f, report_class_name(r, c));
        fprintf(f, "</th>");
    }
    fprintf(f, "<th>total</th></tr></thead>\n<tbody>\n");
    for (int t = 0; t < k; t++) {
        fprintf(f, "<tr><th scope=\"row\">");
        report_html_text(f, report_class_name(r, t));
        fprintf(f, "</th>");
        for (int c = 0; c < k; c++) {
            int64_t v = cm[(size_t)t * k + c];
            write_shaded_cell(f, v, row_total[t] ? (double)v / row_total[t] : 0.0, c == t);
        }
        fprintf(f, "<td>");
        report_count(f, row_total[t]);
        fprintf(f, "</td></tr>\n");
    }
    fprintf(f, "</tbody>\n</table>\n");
}

static void write_per_class(const report *r, const int64_t *cm, const int64_t *row_total) {
    FILE *f = r->html;
    int k = r->n_outputs;
    fprintf(f, "<h3>Per class</h3>\n<table class=\"per-class\">\n<tr><th>class</th>"
               "<th>folder</th><th class=\"num\">images</th><th class=\"num\">correct</th>"
               "<th class=\"num\">accuracy</th>"
               "<th>most often taken for</th></tr>\n");
    for (int c = 0; c < k; c++) {
        if (row_total[c] == 0) continue;
        int worst = -1;
        for (int p = 0; p < k; p++)
            if (p != c && cm[(size_t)c * k + p] > 0 &&
                (worst < 0 || cm[(size_t)c * k + p] > cm[(size_t)c * k + worst]))
                worst = p;
        fprintf(f, "<tr><td>");
        report_html_text(f, report_class_name(r, c));
        fprintf(f, "</td><td>");
        report_html_text(f, c < r->n_classes ? r->class_names[c] : "-");
        fprintf(f, "</td><td class=\"num\">");
        report_count(f, row_total[c]);
        fprintf(f, "</td><td class=\"num\">");
        report_count(f, cm[(size_t)c * k + c]);
        fprintf(f, "</td><td class=\"num\">%.2f %%</td><td>",
                100.0 * cm[(size_t)c * k + c] / row_total[c]);
        if (worst >= 0) {
            report_html_text(f, report_class_name(r, worst));
            fprintf(f, " (");
            report_count(f, cm[(size_t)c * k + worst]);
            fprintf(f, ")");
        } else {
            fprintf(f, "-");
        }
        fprintf(f, "</td></tr>\n");
    }
    fprintf(f, "</table>\n");
}

// Without labels: how many images went to each class.
static void write_prediction_counts(const report *r) {
    FILE *f = r->html;
    fprintf(f, "<p class=\"note\">The images are not sorted into class folders, so there is "
               "nothing to compare the predictions with: no accuracy, no confusion matrix. This "
               "is how the model sorted them.</p>\n<table>\n<tr><th>predicted "
               "class</th><th class=\"num\">images</th></tr>\n");
    for (int c = 0; c < r->n_outputs; c++) {
        int64_t count = 0;
        for (int i = 0; i < r->n; i++) count += r->pred[i] == c;
        if (count == 0) continue;
        fprintf(f, "<tr><td>");
        report_html_text(f, report_class_name(r, c));
        fprintf(f, "</td><td class=\"num\">");
        report_count(f, count);
        fprintf(f, "</td></tr>\n");
    }
    fprintf(f, "</table>\n");
}

static cnn_status classes_section(const report *r) {
    FILE *f = r->html;
    char dir[256];
    fprintf(f, "<section id=\"classes\">\n<h2>Accuracy and confusion</h2>\n<p>The model "
               "classified ");
    report_count(f, r->n);
    fprintf(f, " images of <i>");
    report_html_text(f, report_basename(r->data_dir, dir, sizeof dir));
    fprintf(f, "</i>: for each it gives a probability per class (the softmax of its scores), "
               "and its answer is the most probable class.</p>\n");
    write_skipped_note(r);
    if (r->n_classes == 0) {
        write_prediction_counts(r);
        fprintf(f, "</section>\n");
        return CNN_OK;
    }
    int64_t *cm = confusion_matrix(r);
    int64_t *row_total = calloc((size_t)r->n_outputs, sizeof *row_total);
    if (!cm || !row_total) {
        free(cm);
        free(row_total);
        return cnn_fail(CNN_ERR_NOMEM, "report: out of memory for the confusion matrix");
    }
    int64_t labelled = 0;
    for (int t = 0; t < r->n_outputs; t++) {
        for (int c = 0; c < r->n_outputs; c++) row_total[t] += cm[(size_t)t * r->n_outputs + c];
        labelled += row_total[t];
    }
    if (labelled > 0) {
        write_percent_line(f, "Top-1", top_k_correct(r, 1), (int)labelled);
        if (r->n_outputs >= 5) write_percent_line(f, "Top-5", top_k_correct(r, 5), (int)labelled);
        fprintf(f, "<p>Top-1: the most probable class is the label (the folder). Top-5: the "
                   "label is among the five most probable classes.</p>\n");
        write_per_class(r, cm, row_total);
        write_confusion(r, cm, row_total);
    }
    free(cm);
    free(row_total);
    fprintf(f, "</section>\n");
    return CNN_OK;
}

cnn_status report_classify(report *r) {
    cnn_status st = classify_all(r);
    return st == CNN_OK ? classes_section(r) : st;
}

// ---------------------------------------------------------------------------------------------
// The "mistakes" section

typedef struct {
    int index;
    double key1, key2;   // sorted by key1, then key2, ascending; then by index
} ranked;

static int compare_ranked(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    if (a->key1 != b->key1) return a->key1 < b->key1 ? -1 : 1;
    if (a->key2 != b->key2) return a->key2 < b->key2 ? -1 : 1;
    return a->index - b->index;
}

// The share of i's neighbours that carry i's label.
static double neighbor_agreement(const report *r, int i) {
    int same = 0;
    for (int j = 0; j < r->knn_k; j++) same += r->labels[r->knn_idx[(size_t)i * r->knn_k + j]] ==
                                               r->labels[i];
    return (double)same / r->knn_k;
}

// A gallery of images with captions: img/<stem>-NN.png, each `scale` times its thumbnail.
static cnn_status write_gallery(const report *r, const char *stem, const ranked *items, int count) {
    int scale, size = report_thumb_size(r, &scale), tile = size * scale;
    uint8_t *rgb = malloc(3 * (size_t)tile * tile);
    if (!rgb) return cnn_fail(CNN_ERR_NOMEM, "report: out of memory for a thumbnail");
    FILE *f = r->html;
    cnn_status st = CNN_OK;
    fprintf(f, "<div class=\"grid\">\n");
    for (int g = 0; st == CNN_OK && g < count; g++) {
        int i = items[g].index, label = r->labels[i], pred = r->pred[i];
        char relative[64];
        snprintf(relative, sizeof relative, "img/%s-%02d.png", stem, g);
        st = vis_thumbnail(r->paths[i], tile, rgb);
        vis_canvas c = {tile, tile, rgb};
        if (st == CNN_OK) st = report_png(r, relative, &c);
        if (st != CNN_OK) break;
        fprintf(f, "<figure><img src=\"%s\" width=\"%d\" height=\"%d\" alt=\"", relative, tile,
                tile);
        report_html_text(f, r->names[i]);
        fprintf(f, "\" title=\"");
        report_html_text(f, r->names[i]);
        fprintf(f, "\"><figcaption>label: ");
        report_html_text(f, report_class_name(r, label));
        fprintf(f, "<br><span class=\"wrong\">model: ");
        report_html_text(f, report_class_name(r, pred));
        fprintf(f, " %.1f&nbsp;%%</span>", 100.0 * r->probs[(size_t)i * r->n_outputs + pred]);
        if (r->knn_k > 0)
            fprintf(f, "<br>neighbours agree: %d/%d",
                    (int)lround(neighbor_agreement(r, i) * r->knn_k), r->knn_k);
        fprintf(f, "</figcaption></figure>\n");
    }
    fprintf(f, "</div>\n");
    free(rgb);
    return st;
}

cnn_status report_mistakes_section(report *r) {
    FILE *f = r->html;
    fprintf(f, "<section id=\"mistakes\">\n<h2>Mistakes</h2>\n");
    if (r->n_classes == 0) {
        fprintf(f, "<p class=\"note\">Without class folders there are no labels to disagree "
                   "with: no mistakes to show.</p>\n</section>\n");
        return CNN_OK;
    }
    ranked *items = malloc(sizeof(ranked) * (size_t)r->n);
    char *shown_above = calloc((size_t)r->n, 1);   // [n] 1: in the first gallery
    if (!items || !shown_above) {
        free(items);
        free(shown_above);
        return cnn_fail(CNN_ERR_NOMEM, "report: out of memory ranking %d images", r->n);
    }
    report_progress(r, "mistakes", 0, 2);

    // Most confusing: wrong, and most sure of the wrong class.
    int wrong = 0;
    for (int i = 0; i < r->n; i++) {
        if (r->labels[i] < 0 || r->pred[i] == r->labels[i]) continue;
        double p = r->probs[(size_t)i * r->n_outputs + r->pred[i]];
        items[wrong++] = (ranked){i, -p, 0};
    }
    qsort(items, (size_t)wrong, sizeof *items, compare_ranked);
    fprintf(f, "<h3>The most confusing images</h3>\n<p>");
    report_count(f, wrong);
    fprintf(f, " image%s misclassified. These are the ones where the model was most sure of "
               "the wrong class: often two classes that look alike, sometimes an odd picture, "
               "sometimes a wrong label.</p>\n", wrong == 1 ? " was" : "s were");
    int shown = wrong < GALLERY_MAX ? wrong : GALLERY_MAX;
    cnn_status st = write_gallery(r, "confusing", items, shown);
    for (int g = 0; g < shown; g++) shown_above[items[g].index] = 1;
    report_progress(r, "mistakes", 1, 2);

    // Likely mislabelled: the label disagrees with the model and with most of the image's
    // nearest neighbours in feature space; fewest agreeing neighbours first, then the model's
    // confidence in its own answer. The model's confidence ranks both galleries, so their
    // tops overlap: images of the first gallery are not shown again.
    int suspects = 0, fresh = 0;
    for (int i = 0; r->knn_k > 0 && i < r->n; i++) {
        if (r->labels[i] < 0 || r->pred[i] == r->labels[i]) continue;
        double agreement = neighbor_agreement(r, i);
        if (agreement >= 0.5) continue;
        suspects++;
        if (shown_above[i]) continue;
        double confidence = r->probs[(size_t)i * r->n_outputs + r->pred[i]];
        items[fresh++] = (ranked){i, agreement, -confidence};
    }
    qsort(items, (size_t)fresh, sizeof *items, compare_ranked);
    if (st == CNN_OK) {
        fprintf(f, "<h3>Likely mislabelled</h3>\n<p>");
        report_count(f, suspects);
        fprintf(f, " image%s a label that both the model and most of %s %d nearest neighbours "
                   "in feature space (the representation space above) disagree with. Fewest "
                   "agreeing neighbours first, then the most confident model. Worth a second "
                   "look: some are wrong labels, others are simply ambiguous.%s</p>\n",
                suspects == 1 ? " has" : "s have", suspects == 1 ? "its" : "their", r->knn_k,
                fresh < suspects ? " Those already shown above are left out here." : "");
        shown = fresh < GALLERY_MAX ? fresh : GALLERY_MAX;
        st = write_gallery(r, "mislabelled", items, shown);
    }
    free(items);
    free(shown_above);
    fprintf(f, "</section>\n");
    if (st == CNN_OK) report_progress(r, "mistakes", 2, 2);
    return st;
}

void report_free_results(report *r) {
    report_patches_free(r);
    free(r->probs);
    free(r->pred);
    free(r->features);
    free(r->skipped);
    free(r->knn_idx);
    r->probs = NULL;
    r->pred = NULL;
    r->features = NULL;
    r->skipped = NULL;
    r->knn_idx = NULL;
    r->n_skipped = r->knn_k = 0;
}
