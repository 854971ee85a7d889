// cmd_info.c - cnnscope info MODEL: the model's metadata and one row per node.
#include <stdio.h>

#include "cli.h"

static void format_shape(char *buf, size_t size, const cnn_node_info *n) {
    if (n->ndim == 2) snprintf(buf, size, "%d", n->c);
    else snprintf(buf, size, "%dx%dx%d", n->c, n->h, n->w);
}

int cmd_info(int argc, char **argv) {
    static const cli_command_spec spec = {
        "info", "MODEL",
        "Prints the model's metadata (input, preprocessing, classes) and one row per node:\n"
        "name, op, output shape for one image (CxHxW, or F), parameters and multiply-accumulates.",
        NULL, 0, 1, 1};
    const char *pos[1];
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    cnn_model *m = cli_load_model(pos[0]);
    if (!m) return EXIT_ERROR;
    const cnn_model_info *info = cnn_model_get_info(m);

    printf("model:   %s (arch %s) from %s\n", info->name, info->arch, info->path);
    printf("input:   %dx%dx%d (%s)", info->channels, info->height, info->width,
           info->channels == 1 ? "grayscale" : "RGB");
    if (info->resize > 0) printf(", resized to %d on the shorter side, centre crop", info->resize);
    printf("\nnormalise: mean");
    for (int c = 0; c < info->channels; c++) printf(" %.4g", info->mean[c]);
    printf(", std");
    for (int c = 0; c < info->channels; c++) printf(" %.4g", info->std[c]);
    printf("\nclasses: %d (%s%s)\n\n", info->num_classes, info->class_names[0],
           info->num_classes > 1 ? ", ..." : "");

    printf("%4s  %-28s %-17s %-14s %12s %15s\n", "#", "name", "op", "output", "params", "MACs");
    int64_t total_params = 0, total_macs = 0;
    for (int i = 0; i < cnn_model_node_count(m); i++) {
        cnn_node_info n;
        char shape[64];
        cnn_model_node(m, i, &n);
        format_shape(shape, sizeof shape, &n);
        printf("%4d  %-28s %-17s %-14s %12lld %15lld\n", i, n.name, cnn_op_name(n.op), shape,
               (long long)n.params, (long long)n.macs);
        total_params += n.params;
        total_macs += n.macs;
    }
    printf("\ntotal: %lld parameters (%.2f M), %lld MACs per image (%.3f G)\n",
           (long long)total_params, total_params / 1e6, (long long)total_macs, total_macs / 1e9);
    cnn_model_free(m);
    return EXIT_OK;
}
