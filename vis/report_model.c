// report_model.c - the "model" section of `cnnscope report`: what the network is (its metadata)
// and one row per layer: output shape, parameters, multiply-accumulates, receptive field (the
// same columns as `cnnscope info`).
#include <stdlib.h>

#include "receptive_field.h"
#include "report.h"

// One receptive field quantity: "11" when h and w agree, else "11,7" (as cnnscope info).
static void write_pair(FILE *f, double h, double w) {
    if (h == w) fprintf(f, "%g", h);
    else fprintf(f, "%g,%g", h, w);
}

static void write_metadata(const report *r, int64_t params, int64_t macs) {
    const cnn_model_info *info = cnn_model_get_info(r->model);
    FILE *f = r->html;
    char file[256];
    fprintf(f, "<table class=\"meta\">\n<tr><th>name</th><td>");
    report_html_text(f, info->name);
    fprintf(f, " (architecture ");
    report_html_text(f, info->arch);
    fprintf(f, ")</td></tr>\n<tr><th>file</th><td>");
    report_html_text(f, report_basename(r->model_path, file, sizeof file));
    fprintf(f, "</td></tr>\n<tr><th>input</th><td>%d x %d pixels, %s", info->height, info->width,
            info->channels == 1 ? "grayscale" : "RGB");
    if (info->resize > 0)
        fprintf(f, " (the shorter side resized to %d, then the centre cropped)", info->resize);
    fprintf(f, "</td></tr>\n<tr><th>normalisation</th><td>(pixel / 255 - mean) / std with mean");
    for (int c = 0; c < info->channels; c++) fprintf(f, " %.4g", info->mean[c]);
    fprintf(f, " and std");
    for (int c = 0; c < info->channels; c++) fprintf(f, " %.4g", info->std[c]);
    fprintf(f, "</td></tr>\n<tr><th>classes</th><td>%d: ", info->num_classes);
    for (int c = 0; c < info->num_classes; c++) {
        if (c > 0) fprintf(f, ", ");
        if (c == 12 && info->num_classes > 14) {   // ImageNet: 1000 names say little here
            fprintf(f, "... (%d more)", info->num_classes - c);
            break;
        }
        report_html_text(f, report_class_name(r, c));
    }
    fprintf(f, "</td></tr>\n<tr><th>size</th><td>");
    report_count(f, params);
    fprintf(f, " learned parameters, ");
    report_count(f, macs);
    fprintf(f, " multiply-accumulates per image (%.3f G)</td></tr>\n", macs / 1e9);
    fprintf(f, "<tr><th>time taken</th><td><span id=\"time-taken\">(see timings.js)</span>"
               "</td></tr>\n</table>\n");
}

cnn_status report_model_section(report *r) {
    const cnn_model *m = r->model;
    FILE *f = r->html;
    int count = cnn_model_node_count(m);
    vis_rf *rf = NULL;
    cnn_status st = vis_receptive_fields(m, &rf);
    if (st != CNN_OK) return st;

    int64_t params = 0, macs = 0;
    for (int i = 0; i < count; i++) {
        cnn_node_info n;
        cnn_model_node(m, i, &n);
        params += n.params;
        macs += n.macs;
    }
    fprintf(f, "<section id=\"model\">\n<h2>The model</h2>\n");
    write_metadata(r, params, macs);

    fprintf(f,
            "<p>One row per layer, input first. <b>output</b> is the shape of what the layer "
            "hands on for one image: channels x height x width, or a plain count of numbers "
            "after flattening. <b>params</b> are the numbers the layer learned; <b>MACs</b> the "
            "multiply-accumulates it costs per image. The <b>receptive field</b> (rf) is the "
            "square of input pixels one output value can see: it grows with depth until it "
            "covers the whole image (<i>global</i>); <b>jump</b> is the distance in input pixels "
            "between two neighbouring outputs and <b>start</b> the centre of the first output's "
            "field (pixel centres at 0, 1, ...; negative: it reaches into the padding).</p>\n");
    fprintf(f, "<table class=\"layers\">\n<thead><tr><th class=\"num\">#</th><th>name</th>"
               "<th>op</th><th>output</th><th class=\"num\">params</th><th class=\"num\">MACs</th>"
               "<th class=\"num\">rf</th><th class=\"num\">jump</th><th class=\"num\">start</th>"
               "</tr></thead>\n<tbody>\n");
    for (int i = 0; i < count; i++) {
        cnn_node_info n;
        cnn_model_node(m, i, &n);
        fprintf(f, "<tr><td class=\"num\">%d</td><td>", i);
        report_html_text(f, n.name);
        fprintf(f, "</td><td>%s</td><td>", cnn_op_name(n.op));
        if (n.ndim == 2) fprintf(f, "%d", n.c);
        else fprintf(f, "%dx%dx%d", n.c, n.h, n.w);
        fprintf(f, "</td><td class=\"num\">");
        report_count(f, n.params);
        fprintf(f, "</td><td class=\"num\">");
        report_count(f, n.macs);
        fprintf(f, "</td>");
        if (rf[i].global) {
            fprintf(f, "<td class=\"num\">global</td><td class=\"num\">-</td>"
                       "<td class=\"num\">-</td>");
        } else {
            fprintf(f, "<td class=\"num\">");
            write_pair(f, rf[i].size[0], rf[i].size[1]);
            fprintf(f, "</td><td class=\"num\">");
            write_pair(f, rf[i].jump[0], rf[i].jump[1]);
            fprintf(f, "</td><td class=\"num\">");
            write_pair(f, vis_rf_start(&rf[i], 0), vis_rf_start(&rf[i], 1));
            fprintf(f, "</td>");
        }
        fprintf(f, "</tr>\n");
    }
    fprintf(f, "</tbody>\n<tfoot><tr><td></td><td>total</td><td></td><td></td>"
               "<td class=\"num\">");
    report_count(f, params);
    fprintf(f, "</td><td class=\"num\">");
    report_count(f, macs);
    fprintf(f, "</td><td></td><td></td><td></td></tr></tfoot>\n</table>\n</section>\n");
    free(rf);
    return CNN_OK;
}
