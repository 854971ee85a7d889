// cmd_info.c - cnnscope info MODEL: the model's metadata and one row per node.
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "cli.h"
#include "receptive_field.h"

// One receptive field quantity: "11" when h and w agree, else "11,7".
static void format_pair(char *buf, size_t size, double h, double w) {
    if (h == w) snprintf(buf, size, "%g", h);
    else snprintf(buf, size, "%g,%g", h, w);
}

static void format_shape(char *buf, size_t size, const cnn_node_info *n) {
    if (n->ndim == 2) snprintf(buf, size, "%d", n->c);
    else snprintf(buf, size, "%dx%dx%d", n->c, n->h, n->w);
}

int cmd_info(int argc, char **argv) {
    static const cli_command_spec spec = {
        "info", "MODEL",
        "Prints the model's metadata (input, preprocessing, classes) and one row per node:\n"
        "name, op, output shape for one image (CxHxW, or F), parameters, multiply-accumulates, and\n"
        "the receptive field (vis/receptive_field.h): rf = its size in input pixels, jump = input\n"
        "pixels between neighbouring outputs, start = centre of output 0's field in input\n"
        "coordinates (pixel centres at 0..H-1); one number when h and w agree, else h,w;\n"
        "'global' when every output sees the whole input.",
        NULL, 0, 1, 1};
    const char *pos[1];
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    if (cnn_isa_check() != CNN_OK) return cli_error();   // CNNSCOPE_ISA unknown or unavailable
    cnn_model *m = cli_load_model(pos[0]);
    if (!m) return EXIT_ERROR;
    const cnn_model_info *info = cnn_model_get_info(m);

    printf("model:   %s (arch %s) from %s\n", info->name, info->arch, info->path);
    printf("kernels: %s (CNNSCOPE_ISA=scalar|avx2|avx512|neon forces one)\n", cnn_isa());
#ifdef _OPENMP
    // (main.c sets GOMP_SPINCOUNT unless the user chose one of the two)
    const char *spin = getenv("GOMP_SPINCOUNT"), *policy = getenv("OMP_WAIT_POLICY");
    printf("idle OpenMP workers: GOMP_SPINCOUNT=%s, OMP_WAIT_POLICY=%s\n", spin ? spin : "unset",
           policy ? policy : "unset");
#endif
    const char *prepared = cnn_model_prepared_layout(m);
    if (prepared) {
        int same = strcmp(prepared, cnn_prepared_layout()) == 0;
        printf("prepared: %s (%s)\n", prepared,
               same ? "these kernels read them in place"
                    : "not these kernels' layout: a session prepares its own");
    }
    printf("input:   %dx%dx%d (%s)", info->channels, info->height, info->width,
           info->channels == 1 ? "grayscale" : "RGB");
    if (info->resize > 0) printf(", resized to %d on the shorter side, centre crop", info->resize);
    printf("\nnormalise: mean");
    for (int c = 0; c < info->channels; c++) printf(" %.4g", info->mean[c]);
    printf(", std");
    for (int c = 0; c < info->channels; c++) printf(" %.4g", info->std[c]);
    printf("\nclasses: %d (%s%s)\n\n", info->num_classes, info->class_names[0],
           info->num_classes > 1 ? ", ..." : "");

    vis_rf *rf = NULL;   // NULL: the receptive field columns show '?'
    if (vis_receptive_fields(m, &rf) != CNN_OK)
        fprintf(stderr, "cnnscope info: no receptive fields: %s\n", cnn_last_error());
    printf("%4s  %-28s %-17s %-14s %12s %15s %8s %6s %8s\n", "#", "name", "op", "output",
           "params", "MACs", "rf", "jump", "start");
    int64_t total_params = 0, total_macs = 0;
    for (int i = 0; i < cnn_model_node_count(m); i++) {
        cnn_node_info n;
        char shape[64];
        cnn_model_node(m, i, &n);
        format_shape(shape, sizeof shape, &n);
        char size[32] = "global", jump[32] = "-", start[32] = "-";
        if (!rf) {
            snprintf(size, sizeof size, "?");
        } else if (!rf[i].global) {
            format_pair(size, sizeof size, rf[i].size[0], rf[i].size[1]);
            format_pair(jump, sizeof jump, rf[i].jump[0], rf[i].jump[1]);
            format_pair(start, sizeof start, vis_rf_start(&rf[i], 0), vis_rf_start(&rf[i], 1));
        }
        printf("%4d  %-28s %-17s %-14s %12lld %15lld %8s %6s %8s\n", i, n.name, cnn_op_name(n.op),
               shape, (long long)n.params, (long long)n.macs, size, jump, start);
        total_params += n.params;
        total_macs += n.macs;
    }
    printf("\ntotal: %lld parameters (%.2f M), %lld MACs per image (%.3f G)\n",
           (long long)total_params, total_params / 1e6, (long long)total_macs, total_macs / 1e9);
    free(rf);
    cnn_model_free(m);
    return EXIT_OK;
}
