// cmd_neighbors.c - cnnscope neighbors FEATS.npy (--query INDEX | --query-image MODEL IMAGE):
// the nearest rows of a feature table, printed and optionally drawn as the classic figure.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "neighbors.h"
#include "scatter_plot.h"
#include "vis_features.h"

// Reads FEATS.layer.txt ("<layer> <pool>") into layer/pool (each room for 256 bytes).
static int read_layer_note(const char *feats, char *layer, char *pool) {
    char *path = vis_side_path(feats, ".layer.txt");
    FILE *f = path ? fopen(path, "r") : NULL;
    int ok = f && fscanf(f, "%255s %255s", layer, pool) == 2;
    if (f) fclose(f);
    free(path);
    return ok;
}

// Features of one image with the layer and pooling the table was made with.
static float *query_image_features(const char *feats, const char *model_path, const char *image,
                                   const char *layer_opt, int dim) {
    char layer[256] = "", pool_name[256] = "avg";
    if (layer_opt) snprintf(layer, sizeof layer, "%s", layer_opt);
    else if (!read_layer_note(feats, layer, pool_name)) {
        fprintf(stderr, "cnnscope neighbors: no --layer and no readable layer note beside %s\n", feats);
        return NULL;
    }
    vis_pool pool = strcmp(pool_name, "max") == 0 ? VIS_POOL_MAX
                    : strcmp(pool_name, "none") == 0 ? VIS_POOL_NONE : VIS_POOL_AVG;
    cnn_model *m = cli_load_model(model_path);
    if (!m) return NULL;
    float *row = NULL;
    int node = cnn_model_find_node(m, layer);
    if (node < 0) {
        cli_error();
    } else if (vis_features_dim(m, node, pool) != dim) {
        fprintf(stderr, "cnnscope neighbors: layer '%s' of %s gives %lld features, the table has %d\n",
                layer, model_path, (long long)vis_features_dim(m, node, pool), dim);
    } else if ((row = malloc(sizeof(float) * (size_t)dim))) {
        vis_features_options opt = {node, pool, 1, 0, NULL, NULL};
        const char *paths[1] = {image};
        if (vis_features_extract(m, paths, 1, &opt, row) != CNN_OK) {
            cli_error();
            free(row);
            row = NULL;
        }
    }
    cnn_model_free(m);
    return row;
}

int cmd_neighbors(int argc, char **argv) {
    int query = -1, k = 10, threads = 0;
    const char *metric_name = "l2", *png = NULL, *layer = NULL;
    const char *query_model = NULL, *query_image = NULL;
    // --query-image takes two values (MODEL IMAGE): take it out before the generic parser.
    char **rest = malloc(sizeof(char *) * (size_t)(argc + 1));
    if (!rest) return EXIT_ERROR;
    int n_rest = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--query-image") == 0) {
            if (i + 2 >= argc) {
                free(rest);
                return cli_usage_error("neighbors", "--query-image needs MODEL and IMAGE");
            }
            query_model = argv[i + 1];
            query_image = argv[i + 2];
            i += 2;
        } else {
            rest[n_rest++] = argv[i];
        }
    }
    const char *pos[1];
    const cli_option options[] = {
        {"--query", OPT_INT, &query, 0, 1 << 30, "INDEX  the row of FEATS to start from"},
        {"-k", OPT_INT, &k, 1, 1000, "K  number of neighbours (default 10)"},
        {"--metric", OPT_STRING, &metric_name, 0, 0, "l2|cosine  distance (default l2)"},
        {"-o", OPT_STRING, &png, 0, 0, "NN.png  the query, a red line, then its neighbours"},
        {"--layer", OPT_STRING, &layer, 0, 0,
         "NAME  with --query-image: the layer (default: FEATS.layer.txt)"},
        {"--threads", OPT_INT, &threads, 1, 1024, "N  worker threads (default: all cores)"},
    };
    const cli_command_spec spec = {
        "neighbors", "FEATS.npy (--query INDEX | --query-image MODEL IMAGE) [options]",
        "Exact nearest neighbours in feature space (blocked GEMM distances). With --query the\n"
        "query is row INDEX of FEATS (left out of its own neighbours); with --query-image the\n"
        "image is run through MODEL to the layer FEATS was made from. Prints rank, index,\n"
        "distance, label and path of each neighbour.",
        options, (int)(sizeof options / sizeof options[0]), 1, 1};
    int n_pos, r = cli_parse(&spec, n_rest, rest, pos, &n_pos);
    free(rest);
    if (r != CLI_CONTINUE) return r;
    if ((query >= 0) == (query_image != NULL))
        return cli_usage_error("neighbors", "give exactly one of --query and --query-image");
    vis_metric metric;
    if (strcmp(metric_name, "l2") == 0) metric = VIS_METRIC_L2;
    else if (strcmp(metric_name, "cosine") == 0) metric = VIS_METRIC_COSINE;
    else return cli_usage_error("neighbors", "--metric must be l2 or cosine, not '%s'", metric_name);
    cli_set_threads(threads);
    vis_feature_set fs;
    if (vis_feature_set_load(pos[0], &fs) != CNN_OK) return cli_error();
    int status = EXIT_ERROR;
    float *qrow = NULL, *dist = NULL;
    int *idx = NULL;
    const char **nb_paths = NULL;
    if (query >= fs.n) {
        fprintf(stderr, "cnnscope neighbors: --query %d out of range (%s has %d rows)\n", query,
                pos[0], fs.n);
        goto done;
    }
    const float *q = fs.x + (size_t)(query >= 0 ? query : 0) * fs.dim;
    if (query_image) {
        if (!(qrow = query_image_features(pos[0], query_model, query_image, layer, fs.dim))) goto done;
        q = qrow;
    }
    int available = query >= 0 ? fs.n - 1 : fs.n;
    if (k > available) k = available;
    if (k < 1) {
        fprintf(stderr, "cnnscope neighbors: %s has no other rows\n", pos[0]);
        goto done;
    }
    idx = malloc(sizeof(int) * (size_t)k);
    dist = malloc(sizeof(float) * (size_t)k);
    if (!idx || !dist) goto done;
    int skip = query;
    if (vis_knn_search(fs.x, fs.n, fs.dim, q, 1, query >= 0 ? &skip : NULL, k, metric, idx,
                       dist) != CNN_OK) {
        cli_error();
        goto done;
    }
    const char *qpath = query_image ? query_image : fs.paths ? fs.paths[query] : "?";
    if (query >= 0) printf("query %d: %s", query, qpath);
    else printf("query image: %s", qpath);
    if (query >= 0 && fs.labels && fs.labels[query] >= 0)
        printf(" (%s)", fs.class_names[fs.labels[query]]);
    printf("\n%4s  %7s  %10s  %-14s  %s\n", "rank", "index", "distance", "label", "path");
    for (int i = 0; i < k; i++) {
        int j = idx[i];
        const char *label = fs.labels && fs.labels[j] >= 0 ? fs.class_names[fs.labels[j]] : "-";
        printf("%4d  %7d  %10.5f  %-14s  %s\n", i + 1, j, dist[i], label, fs.paths ? fs.paths[j] : "-");
    }
    if (png) {
        if (!fs.paths) {
            fprintf(stderr, "cnnscope neighbors: -o needs the image paths (%s has no paths file)\n", pos[0]);
            goto done;
        }
        nb_paths = malloc(sizeof(char *) * (size_t)k);
        if (!nb_paths) goto done;
        for (int i = 0; i < k; i++) nb_paths[i] = fs.paths[idx[i]];
        if (vis_neighbors_png(png, qpath, nb_paths, k, 96) != CNN_OK) {
            cli_error();
            goto done;
        }
        printf("wrote %s\n", png);
    }
    status = EXIT_OK;
done:
    free(nb_paths);
    free(qrow);
    free(idx);
    free(dist);
    vis_feature_set_free(&fs);
    return status;
}
