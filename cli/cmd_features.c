// cmd_features.c - cnnscope features MODEL DIR --layer NAME -o feats.npy: one feature row per
// image at one layer, plus feats.paths.txt and feats.labels.txt beside it.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vis_features.h"

typedef struct {
    double start;
} progress_state;

typedef struct {
    const char *layer, *pool;
} layer_note;

// FEATS.layer.txt: "<layer> <pool>", so that neighbors --query-image can compute a matching row.
static cnn_status write_layer_note(void *user, FILE *f) {
    const layer_note *note = user;
    fprintf(f, "%s %s\n", note->layer, note->pool);
    return CNN_OK;
}

static void show_progress(void *user, long done, long total) {
    cli_progress("features", done, total, ((progress_state *)user)->start);
}

int cmd_features(int argc, char **argv) {
    const char *layer = NULL, *pool_name = "avg", *out_path = NULL;
    int batch = 64, threads = 0, limit = 0;
    const char *pos[2];
    const cli_option options[] = {
        {"--layer", OPT_STRING, &layer, 0, 0, "NAME  the layer whose output is the feature"},
        {"--pool", OPT_STRING, &pool_name, 0, 0,
         "avg|max|none  how a [C,H,W] output becomes a row (default avg; none = flatten)"},
        {"-o", OPT_STRING, &out_path, 0, 0, "FEATS.npy  output [N, F] float32"},
        {"--batch", OPT_INT, &batch, 1, 4096, "N  images per forward pass (default 64)"},
        {"--threads", OPT_INT, &threads, 1, 1024, "N  worker threads (default: all cores)"},
        {"--limit", OPT_INT, &limit, 1, 1 << 30, "N  only the first N images (in order)"},
    };
    const cli_command_spec spec = {
        "features", "MODEL DIR --layer NAME -o FEATS.npy [options]",
        "Runs every image of DIR (an ImageFolder, or a plain folder of images) up to the layer\n"
        "NAME and writes one feature row per image to FEATS.npy, plus FEATS.paths.txt (the image\n"
        "of each row), FEATS.labels.txt (\"<class index> <class name>\" per row, -1 without\n"
        "classes) and FEATS.layer.txt (\"<layer> <pool>\") beside it. Penultimate features of\n"
        "the CIFAR ResNets: --layer flatten.",
        options, (int)(sizeof options / sizeof options[0]), 2, 2};
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    if (!layer || !out_path) return cli_usage_error("features", "--layer and -o are required");
    vis_pool pool;
    if (strcmp(pool_name, "avg") == 0) pool = VIS_POOL_AVG;
    else if (strcmp(pool_name, "max") == 0) pool = VIS_POOL_MAX;
    else if (strcmp(pool_name, "none") == 0) pool = VIS_POOL_NONE;
    else return cli_usage_error("features", "--pool must be avg, max or none, not '%s'", pool_name);
    if (cli_check_output("features", out_path) != EXIT_OK) return EXIT_ERROR;   // fail fast
    cli_set_threads(threads);
    cnn_model *m = cli_load_model(pos[0]);
    if (!m) return EXIT_ERROR;
    int node = cnn_model_find_node(m, layer);
    if (node < 0) {
        cnn_model_free(m);
        return cli_error();
    }
    cnn_dataset *ds = NULL;
    if (cnn_dataset_open(pos[1], &ds) != CNN_OK) {
        cnn_model_free(m);
        return cli_error();
    }
    int status = EXIT_ERROR;
    int n = limit > 0 && limit < ds->n_images ? limit : ds->n_images;
    int64_t dim = vis_features_dim(m, node, pool);
    float *x = NULL;
    if (n == 0) {
        fprintf(stderr, "cnnscope features: %s holds no images\n", pos[1]);
        goto done;
    }
    if (dim * n > ((int64_t)1 << 33)) {
        fprintf(stderr, "cnnscope features: %d images x %lld features is too large; use --pool "
                "avg or --limit\n", n, (long long)dim);
        goto done;
    }
    x = malloc(sizeof(float) * (size_t)dim * n);
    if (!x) {
        fprintf(stderr, "cnnscope features: out of memory for %d x %lld floats\n", n, (long long)dim);
        goto done;
    }
    progress_state ps = {cli_now()};
    vis_features_options opt = {node, pool, batch, threads, show_progress, &ps};
    if (vis_features_extract(m, (const char *const *)ds->paths, n, &opt, x) != CNN_OK) {
        cli_error();
        goto done;
    }
    vis_feature_set fs = {n, (int)dim, x, ds->paths, ds->n_classes > 0 ? ds->labels : NULL,
                          ds->n_classes, ds->class_names};
    char *note_path = vis_side_path(out_path, ".layer.txt");
    layer_note note = {layer, pool_name};
    // the side note first: the .npy goes into place last (vis_feature_set_write)
    if (!note_path || cnn_write_atomic(note_path, write_layer_note, &note) != CNN_OK ||
        vis_feature_set_write(out_path, &fs) != CNN_OK) {
        free(note_path);
        cli_error();
        goto done;
    }
    free(note_path);
    printf("features: %d images x %lld at '%s' (pool %s), %.1f s -> %s\n", n, (long long)dim,
           layer, pool_name, cli_now() - ps.start, out_path);
    status = EXIT_OK;
done:
    free(x);
    cnn_dataset_free(ds);
    cnn_model_free(m);
    return status;
}
