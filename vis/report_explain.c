// report_explain.c - the "explain" section of `cnnscope report` (issue 6; the page is described
// in report.h): for sample images, correctly classified and misclassified, where the network
// looked for its decision, by five methods of vis/explain.h side by side.
//
// Each image runs alone (batch 1, every activation kept, as `cnnscope explain`), and each
// method explains the class the model predicted (r->pred). One PNG per image and method,
// img/explain-IMAGE-METHOD.png, at the input's resolution scaled up by nearest neighbour:
//   saliency        the heatmap alone (alpha 1): the middle panel of `cnnscope explain`'s figure
//   cam, gradcam    the heatmap over the image (alpha 0.5): the figure's third panel
//   guided, guided-gradcam   the gradient image (grey = 0): the figure's second panel
//
// Dims legend: C,H,W the network input.
#include <stdlib.h>
#include <string.h>

#include "explain.h"
#include "report.h"

enum {
    EXPLAIN_CORRECT = 4,     // correctly classified images shown
    EXPLAIN_WRONG = 4,       // misclassified images shown
    PANEL_SIDE = 112,        // panels are scaled up to at least this many pixels
};
#define OVERLAY_ALPHA 0.5f   // heatmap opacity over the image, as `cnnscope explain`'s default

// The columns, in page order.
typedef struct {
    vis_explain_method method;
    const char *title;
    float alpha;             // heatmaps: 1 = the colours alone
} explain_column;

static const explain_column columns[] = {
    {VIS_EXPLAIN_SALIENCY, "saliency", 1.0f},
    {VIS_EXPLAIN_GUIDED, "guided backprop", 0},
    {VIS_EXPLAIN_GRADCAM, "Grad-CAM", OVERLAY_ALPHA},
    {VIS_EXPLAIN_CAM, "CAM", OVERLAY_ALPHA},
    {VIS_EXPLAIN_GUIDED_GRADCAM, "guided Grad-CAM", 0},
};
enum { N_COLUMNS = sizeof columns / sizeof columns[0] };

// What one run of the section needs: which columns apply, and buffers for one image.
typedef struct {
    report *r;
    int usable[N_COLUMNS];   // 0: the method does not apply to this model (said on the page)
    int n_usable;
    int done, total;         // images explained, for the progress line
    cnn_session *s;          // batch 1, keep_all
    float *x;                // [C,H,W]
    uint8_t *pixels;         // [H,W,C]
    float *result;           // [C,H,W] (heatmaps use [H,W])
    uint8_t *rgb;            // [H,W,3]
    int scale;               // display pixels per input pixel
} explain_state;

// Writes `rgb` ([H,W,channels]) scaled up as img/explain-IMAGE-TAG.png and its <td>.
static cnn_status write_panel(explain_state *e, int image, const char *tag, const uint8_t *rgb,
                              int channels, const char *alt) {
    const cnn_model_info *info = cnn_model_get_info(e->r->model);
    int H = info->height, W = info->width;
    vis_canvas canvas = {0};
    char name[96];
    snprintf(name, sizeof name, "img/explain-%d-%s.png", image, tag);
    cnn_status st = vis_canvas_create(&canvas, W * e->scale, H * e->scale, 255, 255, 255);
    if (st != CNN_OK) return st;
    vis_canvas_blit(&canvas, 0, 0, rgb, W, H, channels, e->scale);
    st = report_png(e->r, name, &canvas);
    vis_canvas_free(&canvas);
    if (st == CNN_OK) fprintf(e->r->html, "<td><img src=\"%s\" alt=\"%s\"></td>", name, alt);
    return st;
}

// One table row: the image and its caption, then one panel per usable method.
static cnn_status explain_image(explain_state *e, int image) {
    report *r = e->r;
    FILE *f = r->html;
    const cnn_model_info *info = cnn_model_get_info(r->model);
    int C = info->channels, H = info->height, W = info->width;
    cnn_status st = cnn_image_load_ex(info, r->paths[image], NULL, e->x, e->pixels);
    if (st == CNN_OK) st = cnn_session_run(e->s, e->x, 1);
    if (st != CNN_OK) return st;
    int predicted = r->pred[image];
    fputs("<tr>", f);
    if ((st = write_panel(e, image, "image", e->pixels, C, "image")) != CNN_OK) return st;
    for (int k = 0; k < N_COLUMNS; k++) {
        if (!e->usable[k]) continue;
        vis_explain_method method = columns[k].method;
        vis_explain_target target = {vis_explain_score_node(r->model), &predicted};
        if ((st = vis_explain(e->s, method, &target, -1, e->result)) == CNN_ERR_ARG) {
            // the method does not fit this image's graph or target: say so in its cell
            fputs("<td class=\"note\">", f);
            report_html_text(f, cnn_last_error());
            fputs("</td>", f);
            continue;
        }
        if (st != CNN_OK) return st;
        if (vis_explain_is_heatmap(method))
            vis_explain_heatmap_rgb(e->rgb, e->result, e->pixels, C, H, W, columns[k].alpha);
        else
            vis_explain_gradient_rgb(e->rgb, e->result, C, H, W);
        if ((st = write_panel(e, image, vis_explain_method_name(method), e->rgb, 3,
                              columns[k].title)) != CNN_OK)
            return st;
    }
    fprintf(f, "</tr>\n<tr><td colspan=\"%d\" class=\"caption\">", 1 + e->n_usable);
    report_html_text(f, r->names[image]);
    if (r->labels && r->labels[image] >= 0 && r->labels[image] < r->n_classes) {
        fputs(": label ", f);
        report_html_text(f, r->class_names[r->labels[image]]);
        fputs(", predicted ", f);
    } else {
        fputs(": predicted ", f);
    }
    report_html_text(f, report_class_name(r, predicted));
    fprintf(f, " (probability %.3f)</td></tr>\n",
            r->probs[(size_t)image * r->n_outputs + predicted]);
    return CNN_OK;
}

// A table of images (a header row of method names, then two rows per image).
static cnn_status explain_table(explain_state *e, const char *title, const int *images, int n,
                                const char *if_none) {
    FILE *f = e->r->html;
    fprintf(f, "<h3>%s</h3>\n", title);
    if (n == 0) {
        fprintf(f, "<p class=\"note\">%s</p>\n", if_none);
        return CNN_OK;
    }
    fputs("<table class=\"explain\">\n<tr><th>image</th>", f);
    for (int k = 0; k < N_COLUMNS; k++)
        if (e->usable[k]) fprintf(f, "<th>%s</th>", columns[k].title);
    fputs("</tr>\n", f);
    for (int i = 0; i < n; i++) {
        cnn_status st = explain_image(e, images[i]);
        if (st != CNN_OK) return st;
        report_progress(e->r, "explanations", ++e->done, e->total);
    }
    fputs("</table>\n", f);
    return CNN_OK;
}

// Writes why `method` does not apply (the message of the failed check) as a note.
static void write_not_applicable(FILE *f, const char *title, const char *why) {
    fprintf(f, "<p class=\"note\">%s does not apply to this model: ", title);
    report_html_text(f, why);
    fputs("</p>\n", f);
}

cnn_status report_explain_section(report *r) {
    FILE *f = r->html;
    const cnn_model *m = r->model;
    const cnn_model_info *info = cnn_model_get_info(m);
    fputs("<section id=\"explain\">\n<h2>Why the network decided</h2>\n", f);
    fputs("<p>Which pixels made the network choose its class? Each row shows one image, then up "
          "to five answers for the class the network predicted. <b>Saliency</b> (Simonyan et al. "
          "2014): how much the class score changes when a pixel changes, the absolute gradient "
          "(yellow = sensitive). <b>Guided backprop</b> (Springenberg et al. 2015): the same "
          "gradient, keeping only the paths through neurons that were active and pushed the "
          "score up; sharp, edge-like pictures (gray = 0). <b>Grad-CAM</b> (Selvaraju et al. "
          "2017): the maps of the last convolutional layer weighted by how much the score "
          "depends on each, a coarse heatmap over the image (yellow = most important). "
          "<b>CAM</b> (Zhou et al. 2016): the same idea with the weights of the final linear "
          "layer, for networks that end in global average pooling. <b>Guided Grad-CAM</b>: "
          "guided backprop times Grad-CAM, fine detail only where Grad-CAM looks. Wrong "
          "predictions are often the most instructive: they show what misled the network. "
          "Each picture equals what <code>cnnscope explain MODEL IMAGE --method NAME</code> "
          "draws.</p>\n", f);

    explain_state e = {0};
    e.r = r;
    char why[1024];
    int gradcam_layer = vis_explain_default_layer(m), cam_layer = vis_explain_cam_layer(m);
    const char *reason = cnn_last_error();   // vis_explain_cam_layer's, "cam: model: ..."
    if (strncmp(reason, "cam: ", 5) == 0) reason += 5;
    snprintf(why, sizeof why, "%s", reason);
    char *advice = strstr(why, "; use gradcam");   // advice for the command line, not the page
    if (advice) snprintf(advice, sizeof why - (size_t)(advice - why), ".");
    for (int k = 0; k < N_COLUMNS; k++) {
        vis_explain_method method = columns[k].method;
        e.usable[k] = method == VIS_EXPLAIN_CAM ? cam_layer >= 0
                      : vis_explain_uses_layer(method) ? gradcam_layer >= 0
                                                       : 1;
        e.n_usable += e.usable[k];
    }
    if (gradcam_layer >= 0) {
        cnn_node_info nd;
        cnn_model_node(m, gradcam_layer, &nd);
        fputs("<p>Grad-CAM reads the maps of ", f);
        report_html_text(f, nd.name);
        fprintf(f, " (%dx%dx%d).", nd.c, nd.h, nd.w);
        if (cam_layer >= 0) {
            cnn_model_node(m, cam_layer, &nd);
            fputs(" CAM reads ", f);
            report_html_text(f, nd.name);
            fputs(".", f);
        }
        fputs("</p>\n", f);
    } else {
        write_not_applicable(f, "Grad-CAM (and guided Grad-CAM)",
                             "no layer with spatial maps comes before its classifier.");
    }
    if (cam_layer < 0) write_not_applicable(f, "CAM", why);

    int correct[EXPLAIN_CORRECT + EXPLAIN_WRONG], wrong[EXPLAIN_WRONG];
    int n_correct, n_wrong = 0;
    if (r->n_classes > 0) {
        n_correct = report_samples(r, 1, EXPLAIN_CORRECT, correct);
        n_wrong = report_samples(r, 0, EXPLAIN_WRONG, wrong);
    } else {   // unlabelled: right and wrong are unknown
        n_correct = report_samples(r, 1, EXPLAIN_CORRECT + EXPLAIN_WRONG, correct);
    }
    e.total = n_correct + n_wrong;
    report_progress(r, "explanations", 0, e.total);
    int longer = info->height > info->width ? info->height : info->width;
    e.scale = (PANEL_SIDE + longer - 1) / longer;
    size_t per_image = (size_t)info->channels * info->height * info->width;
    e.x = malloc(sizeof(float) * per_image);
    e.pixels = malloc(per_image);
    e.result = malloc(sizeof(float) * per_image);
    e.rgb = malloc((size_t)info->height * info->width * 3);
    cnn_status st = CNN_OK;
    if (!e.x || !e.pixels || !e.result || !e.rgb) {
        st = cnn_fail(CNN_ERR_NOMEM, "report explain: out of memory for one image");
        goto done;
    }
    cnn_session_options opt = cnn_session_defaults();
    opt.threads = r->threads;
    opt.keep_all = 1;   // the methods read the activations of the forward pass
    if ((st = cnn_session_create(m, 1, &opt, &e.s)) != CNN_OK) goto done;
    if (r->n_classes > 0) {
        st = explain_table(&e, "Correctly classified", correct, n_correct,
                           "The model classified none of the images correctly.");
        if (st == CNN_OK)
            st = explain_table(&e, "Misclassified", wrong, n_wrong,
                               "The model classified every image correctly.");
    } else {
        st = explain_table(&e, "Sample images (unlabelled, so right and wrong are unknown)",
                           correct, n_correct, "There are no images.");
    }
    if (st == CNN_OK) fputs("</section>\n", f);
done:
    cnn_session_free(e.s);
    free(e.x);
    free(e.pixels);
    free(e.result);
    free(e.rgb);
    return st;
}
