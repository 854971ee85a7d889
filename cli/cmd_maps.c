// cmd_maps.c - cnnscope maps MODEL IMAGE: a layer's feature maps beside the input image.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "feature_maps.h"
#include "select.h"

int cmd_maps(int argc, char **argv) {
    const char *layer = NULL, *channel_list = "all", *sort = "index", *norm = "shared";
    const char *out = "maps.png";
    int scale = 0, image_scale = 0, threads = 0;
    const char *pos[2];
    const cli_option options[] = {
        {"--layer", OPT_STRING, &layer, 0, 0,
         "NAME  the layer (default: the last one with spatial extent)"},
        {"--channels", OPT_STRING, &channel_list, 0, 0,
         "RANGE  which channels, e.g. 0-15,20 (default all)"},
        {"--sort", OPT_STRING, &sort, 0, 0,
         "index|mean|max  tile order: channel index, or largest mean / max first (default index)"},
        {"--norm", OPT_STRING, &norm, 0, 0,
         "shared|per-map  one colour scale for all maps, or one per map (default shared)"},
        {"--scale", OPT_INT, &scale, 1, 256, "S  pixels per activation (default max(1, 64/size))"},
        {"--image-scale", OPT_INT, &image_scale, 1, 256,
         "S  pixels per input pixel (default max(1, 128/size))"},
        {"--threads", OPT_INT, &threads, 1, 1024, "N  worker threads (default: all cores)"},
        {"-o", OPT_STRING, &out, 0, 0, "FILE  the PNG to write (default maps.png)"},
    };
    const cli_command_spec spec = {
        "maps", "MODEL IMAGE [--layer NAME] [options] [-o maps.png]",
        "Runs the network on IMAGE up to the layer and draws the image as the network saw it\n"
        "(after resize and crop, before normalisation) beside a grid of the layer's maps,\n"
        "coloured with viridis (dark blue = low, yellow = high) on a shared scale (the min..max\n"
        "over all shown maps) or one scale per map. NAME may be a container (layer3 = its last\n"
        "block).",
        options, (int)(sizeof options / sizeof options[0]), 2, 2};
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    vis_maps_options mo = {VIS_MAPS_SHARED, scale, image_scale};
    vis_maps_sort order;
    if (strcmp(norm, "shared") == 0) mo.norm = VIS_MAPS_SHARED;
    else if (strcmp(norm, "per-map") == 0) mo.norm = VIS_MAPS_PER_MAP;
    else return cli_usage_error("maps", "--norm must be shared or per-map, not '%s'", norm);
    if (strcmp(sort, "index") == 0) order = VIS_SORT_INDEX;
    else if (strcmp(sort, "mean") == 0) order = VIS_SORT_MEAN;
    else if (strcmp(sort, "max") == 0) order = VIS_SORT_MAX;
    else return cli_usage_error("maps", "--sort must be index, mean or max, not '%s'", sort);
    cli_set_threads(threads);

    cnn_model *m = cli_load_model(pos[0]);
    if (!m) return EXIT_ERROR;
    const cnn_model_info *info = cnn_model_get_info(m);
    int status = EXIT_ERROR, *channels = NULL, n_channels = 0;
    size_t per_image = (size_t)info->channels * info->height * info->width;
    float *x = malloc(sizeof(float) * per_image);
    uint8_t *pixels = malloc(per_image);
    cnn_session *s = NULL;
    vis_canvas canvas = {0};
    cnn_image_limits limits = {100000000};
    int node_index = layer ? vis_find_layer(m, layer) : vis_default_layer(m);
    if (node_index < 0) {
        cli_error();
        goto done;
    }
    if (!x || !pixels) {
        cnn_fail(CNN_ERR_NOMEM, "out of memory");
        cli_error();
        goto done;
    }
    cnn_node_info node;
    cnn_model_node(m, node_index, &node);
    if (node_index == 0) {
        fprintf(stderr, "cnnscope maps: choose a layer after the input\n");
        goto done;
    }
    if (vis_channel_range_parse(channel_list, node.c, "--channels", &channels, &n_channels) !=
        CNN_OK) {
        cli_error();
        goto done;
    }
    cnn_session_options opt = cnn_session_defaults();
    opt.threads = threads;
    opt.stop_after = node_index;
    if (cnn_image_load_ex(info, pos[1], &limits, x, pixels) != CNN_OK ||
        cnn_session_create(m, 1, &opt, &s) != CNN_OK || cnn_session_run(s, x, 1) != CNN_OK) {
        cli_error();
        goto done;
    }
    const cnn_tensor *t = cnn_session_output(s, node_index);
    if (!t) {
        cli_error();
        goto done;
    }
    int h = t->ndim == 4 ? (int)t->dims[2] : 1, w = t->ndim == 4 ? (int)t->dims[3] : 1;
    vis_maps_sort_channels(t->data, h, w, channels, n_channels, order);
    if (vis_feature_maps(pixels, info->height, info->width, info->channels, t->data, h, w,
                         channels, n_channels, &mo, &canvas) != CNN_OK ||
        vis_png_write(out, &canvas) != CNN_OK) {
        cli_error();
        goto done;
    }
    printf("wrote %s: %s (%s), %d of %d maps of %dx%d, %s scale, sorted by %s, %dx%d pixels\n",
           out, node.name, cnn_op_name(node.op), n_channels, node.c, h, w,
           mo.norm == VIS_MAPS_SHARED ? "shared" : "per-map", sort, canvas.width, canvas.height);
    status = EXIT_OK;
done:
    vis_canvas_free(&canvas);
    cnn_session_free(s);
    free(channels);
    free(x);
    free(pixels);
    cnn_model_free(m);
    return status;
}
