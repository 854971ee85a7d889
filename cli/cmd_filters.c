// cmd_filters.c - cnnscope filters MODEL: a convolution's filters as a PNG grid.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "filters.h"
#include "select.h"

#define DEFAULT_PER_CHANNEL_RANGE 16   // filters and input channels shown when C is not 1 or 3

int cmd_filters(int argc, char **argv) {
    const char *layer = NULL, *norm = "per-filter", *out = "filters.png";
    const char *filter_list = NULL, *input_list = NULL;
    int scale = 0;
    const char *pos[1];
    const cli_option options[] = {
        {"--layer", OPT_STRING, &layer, 0, 0, "NAME  a conv2d node (default: the first conv)"},
        {"--norm", OPT_STRING, &norm, 0, 0,
         "per-filter|global  map each filter's own min..max, or the layer's, to 0..1 "
         "(default per-filter)"},
        {"--scale", OPT_INT, &scale, 1, 256,
         "S  pixels per weight (default: max(1, 48 / kernel size))"},
        {"--filters", OPT_STRING, &filter_list, 0, 0,
         "RANGE  which filters, e.g. 0-15,20 (default: all; 0-15 when C is not 1 or 3)"},
        {"--inputs", OPT_STRING, &input_list, 0, 0,
         "RANGE  which input channels when C is not 1 or 3 (default 0-15)"},
        {"-o", OPT_STRING, &out, 0, 0, "FILE  the PNG to write (default filters.png)"},
    };
    const cli_command_spec spec = {
        "filters", "MODEL [--layer NAME] [options] [-o filters.png]",
        "Draws a convolution's filters [K,C,R,S] as a grid, each weight a scale x scale block.\n"
        "C = 3: one RGB tile per filter (AlexNet: 64 filters of 11x11x3 in an 8x8 grid).\n"
        "C = 1: one gray tile per filter.\n"
        "Other C: one tile per (filter, input channel), filters in rows and input channels in\n"
        "columns, coloured with viridis (dark blue = lowest weight, yellow = highest).\n"
        "Weights are mapped to 0..1 by the min and max of each whole filter (per-filter) or of\n"
        "the whole layer (global). Tiles are separated by 1-pixel dark gray lines.",
        options, (int)(sizeof options / sizeof options[0]), 1, 1};
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    vis_filter_options fo = {VIS_NORM_PER_FILTER, scale, NULL, 0, NULL, 0};
    if (strcmp(norm, "per-filter") == 0) fo.norm = VIS_NORM_PER_FILTER;
    else if (strcmp(norm, "global") == 0) fo.norm = VIS_NORM_GLOBAL;
    else return cli_usage_error("filters", "--norm must be per-filter or global, not '%s'", norm);

    cnn_model *m = cli_load_model(pos[0]);
    if (!m) return EXIT_ERROR;
    int status = EXIT_ERROR, node_index = -1;
    int *filters = NULL, *inputs = NULL;
    vis_canvas canvas = {0};
    cnn_node_info node;
    if (layer) {
        node_index = vis_find_layer(m, layer);
        if (node_index < 0) {
            cli_error();
            goto done;
        }
    } else {
        for (int i = 0; i < cnn_model_node_count(m) && node_index < 0; i++) {
            cnn_model_node(m, i, &node);
            if (node.op == CNN_OP_CONV2D) node_index = i;
        }
        if (node_index < 0) {
            fprintf(stderr, "cnnscope filters: %s has no conv2d layer\n", pos[0]);
            goto done;
        }
    }
    cnn_model_node(m, node_index, &node);
    if (node.op != CNN_OP_CONV2D) {
        fprintf(stderr, "cnnscope filters: layer '%s' is a %s, expected a conv2d\n", node.name,
                cnn_op_name(node.op));
        goto done;
    }
    // convert.py names a conv's weight "<node name>.weight" (weights/FORMAT.md examples).
    char tensor_name[4200];
    snprintf(tensor_name, sizeof tensor_name, "%s.weight", node.name);
    cnn_tensor weight;
    if (cnn_model_tensor(m, tensor_name, &weight) != CNN_OK) {
        cli_error();
        goto done;
    }
    int K = (int)weight.dims[0], C = (int)weight.dims[1];
    int per_channel = C != 1 && C != 3;
    char default_range[32];
    snprintf(default_range, sizeof default_range, "0-%d",
             (K < DEFAULT_PER_CHANNEL_RANGE ? K : DEFAULT_PER_CHANNEL_RANGE) - 1);
    const char *flist = filter_list ? filter_list : per_channel ? default_range : "all";
    if (vis_channel_range_parse(flist, K, "--filters", &filters, &fo.n_filters) != CNN_OK) {
        cli_error();
        goto done;
    }
    fo.filters = filters;
    if (per_channel) {
        snprintf(default_range, sizeof default_range, "0-%d",
                 (C < DEFAULT_PER_CHANNEL_RANGE ? C : DEFAULT_PER_CHANNEL_RANGE) - 1);
        if (vis_channel_range_parse(input_list ? input_list : default_range, C, "--inputs",
                                    &inputs, &fo.n_inputs) != CNN_OK) {
            cli_error();
            goto done;
        }
        fo.inputs = inputs;
    } else if (input_list) {
        fprintf(stderr, "cnnscope filters: --inputs applies only when a filter has other than 1 "
                "or 3 input channels ('%s' has %d)\n", node.name, C);
        goto done;
    }
    if (vis_filter_grid(&weight, &fo, &canvas) != CNN_OK || vis_png_write(out, &canvas) != CNN_OK) {
        cli_error();
        goto done;
    }
    printf("wrote %s: %s, %d filter%s of %dx%dx%d (%s), %s, %dx%d pixels\n", out, node.name,
           fo.n_filters, fo.n_filters == 1 ? "" : "s", C, (int)weight.dims[2],
           (int)weight.dims[3], per_channel ? "one viridis tile per input channel"
                                             : C == 3 ? "RGB" : "gray",
           fo.norm == VIS_NORM_GLOBAL ? "global scale" : "per-filter scale", canvas.width,
           canvas.height);
    status = EXIT_OK;
done:
    vis_canvas_free(&canvas);
    free(filters);
    free(inputs);
    cnn_model_free(m);
    return status;
}
