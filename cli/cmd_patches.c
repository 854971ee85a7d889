// cmd_patches.c - cnnscope patches MODEL DIR --layer NAME -o OUTDIR: for each channel of a
// layer, the image patches that activate it most, over a whole folder of images.
//
// 1. stream: images come one batch at a time from vis_image_walk (never the whole list); the
//    network runs only up to the layer (stop_after); each channel's K best hits go to a bounded
//    heap (vis_top_k). The names of images that may still be winners are kept in a small
//    table, pruned to those in some heap whenever it grows past a bound: memory does not grow
//    with the number of images.
// 2. render: for each channel, its hits' receptive field boxes (vis/receptive_field.h) are
//    cropped from the preprocessed images (re-read), clipped parts marked, and laid out in rank
//    order; then the index (CSV and JSON).
// 3. --deconv: each winner runs again, every activation up to the layer kept, and its activation
//    is projected back to the pixels by a DeconvNet (vis/explain.h); the projections, cropped by
//    the same boxes, make a companion grid beside each patch grid, as in Zeiler & Fergus 2014.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "canvas.h"
#include "cli.h"
#include "explain.h"
#include "image_walk.h"
#include "receptive_field.h"
#include "select.h"
#include "top_patches.h"

// ---------------------------------------------------------------------------------------------
// Names of the images that may be winners, by image index (ascending: images arrive in order).

typedef struct {
    int image;
    char *path, *relative;
} image_name;

typedef struct {
    image_name *items;
    int count, capacity;
} name_table;

static void names_free_item(image_name *n) {
    free(n->path);
    free(n->relative);
}

static int names_add(name_table *t, int image, const char *path, const char *relative) {
    if (t->count == t->capacity) {
        int cap = t->capacity ? 2 * t->capacity : 1024;
        image_name *p = realloc(t->items, sizeof(image_name) * (size_t)cap);
        if (!p) return -1;
        t->items = p;
        t->capacity = cap;
    }
    image_name *n = &t->items[t->count];
    n->image = image;
    n->path = strdup(path);
    n->relative = strdup(relative);
    if (!n->path || !n->relative) {
        names_free_item(n);
        return -1;
    }
    t->count++;
    return 0;
}

static const image_name *names_find(const name_table *t, int image) {
    int lo = 0, hi = t->count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (t->items[mid].image == image) return &t->items[mid];
        if (t->items[mid].image < image) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

static int compare_ints(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

// Drops every name whose image is in no heap. `scratch` has room for n_slots * k hits and
// `alive` for as many ints.
static void names_prune(name_table *t, const vis_top_k *tk, int n_slots, vis_hit *scratch,
                        int *alive) {
    int n_alive = 0;
    for (int s = 0; s < n_slots; s++) {
        int got = vis_top_k_sorted(tk, s, scratch);
        for (int i = 0; i < got; i++) alive[n_alive++] = scratch[i].image;
    }
    qsort(alive, (size_t)n_alive, sizeof(int), compare_ints);
    int kept = 0;
    for (int i = 0; i < t->count; i++) {
        if (bsearch(&t->items[i].image, alive, (size_t)n_alive, sizeof(int), compare_ints))
            t->items[kept++] = t->items[i];
        else
            names_free_item(&t->items[i]);
    }
    t->count = kept;
}

static void names_free(name_table *t) {
    for (int i = 0; i < t->count; i++) names_free_item(&t->items[i]);
    free(t->items);
}

// ---------------------------------------------------------------------------------------------
// The index files.

typedef struct {
    int channel, rank;
    vis_hit hit;
    vis_box box;             // unclipped, inclusive
    const char *image;       // relative to DIR
} index_row;

typedef struct {
    const char *model, *dir, *layer, *op;
    int node, images, skipped, k, per_image, global, whole_images;
    int in_c, in_h, in_w, out_c, out_h, out_w;
    const vis_rf *rf;
    const int *channels;
    int n_channels;
    const index_row *rows;
    int n_rows;
} index_data;

static cnn_status write_csv(void *user, FILE *f) {
    const index_data *d = user;
    fprintf(f, "channel,rank,image,activation,y,x,box_y0,box_x0,box_y1,box_x1\n");
    for (int i = 0; i < d->n_rows; i++) {
        const index_row *r = &d->rows[i];
        fprintf(f, "%d,%d,", r->channel, r->rank);
        cli_csv_field(f, r->image);
        fprintf(f, ",%.9g,%d,%d,%d,%d,%d,%d\n", r->hit.activation, r->hit.y, r->hit.x, r->box.y0,
                r->box.x0, r->box.y1, r->box.x1);
    }
    return CNN_OK;
}

static cnn_status write_json(void *user, FILE *f) {
    const index_data *d = user;
    fprintf(f, "{\n  \"model\": ");
    cli_json_string(f, d->model);
    fprintf(f, ",\n  \"dir\": ");
    cli_json_string(f, d->dir);
    fprintf(f, ",\n  \"layer\": ");
    cli_json_string(f, d->layer);
    fprintf(f, ",\n  \"node\": %d,\n  \"op\": \"%s\",\n", d->node, d->op);
    fprintf(f, "  \"input_shape\": [%d, %d, %d],\n  \"output_shape\": [%d, %d, %d],\n", d->in_c,
            d->in_h, d->in_w, d->out_c, d->out_h, d->out_w);
    fprintf(f, "  \"images\": %d,\n  \"skipped\": %d,\n  \"k\": %d,\n  \"per_image\": %d,\n",
            d->images, d->skipped, d->k, d->per_image);
    fprintf(f, "  \"whole_images\": %s,\n", d->whole_images ? "true" : "false");
    fprintf(f, "  \"receptive_field\": {\"global\": %s, \"size\": [%d, %d], \"jump\": [%d, %d], "
            "\"first\": [%d, %d], \"start\": [%g, %g]},\n", d->rf->global ? "true" : "false",
            d->rf->size[0], d->rf->size[1], d->rf->jump[0], d->rf->jump[1], d->rf->first[0],
            d->rf->first[1], vis_rf_start(d->rf, 0), vis_rf_start(d->rf, 1));
    fprintf(f, "  \"channels\": [");
    for (int i = 0; i < d->n_channels; i++) fprintf(f, "%s%d", i ? ", " : "", d->channels[i]);
    fprintf(f, "],\n  \"patches\": [");
    for (int i = 0; i < d->n_rows; i++) {
        const index_row *r = &d->rows[i];
        fprintf(f, "%s\n    {\"channel\": %d, \"rank\": %d, \"image\": ", i ? "," : "", r->channel,
                r->rank);
        cli_json_string(f, r->image);
        fprintf(f, ", \"activation\": %.9g, \"y\": %d, \"x\": %d, \"box\": [%d, %d, %d, %d]}",
                r->hit.activation, r->hit.y, r->hit.x, r->box.y0, r->box.x0, r->box.y1,
                r->box.x1);
    }
    fprintf(f, "\n  ]\n}\n");
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------

typedef struct {
    const char *model_path, *dir, *layer, *channel_list, *out_dir;
    int k, per_image, threads, batch, scale, deconv;
} patches_args;

// The DeconvNet projection of one hit (channel, y, x of image x [1,C,H,W]), cropped by `box`
// into tile. `s` is a batch-1 session that keeps every activation up to the layer.
static cnn_status project_hit(cnn_session *s, int node, const float *x, int channel,
                              const vis_hit *hit, vis_box box, const cnn_node_info *layer,
                              const cnn_model_info *info, float *projection, uint8_t *tile) {
    int index = (channel * layer->h + hit->y) * layer->w + hit->x;   // h = w = 1 for linear
    cnn_status st = cnn_session_run(s, x, 1);
    if (st == CNN_OK) st = vis_explain_projections(s, node, &index, projection);
    if (st == CNN_OK)
        st = vis_explain_projection_tile(tile, projection, info->channels, info->height,
                                         info->width, box.y0, box.x0, box.y1, box.x1);
    return st;
}

// Writes OUTDIR/channel_NNNN<suffix>.png and frees the canvas. png_path has room for
// strlen(out_dir) + 64 bytes.
static cnn_status write_grid(char *png_path, const char *out_dir, int channel, const char *suffix,
                             vis_canvas *canvas) {
    snprintf(png_path, strlen(out_dir) + 64, "%s/channel_%04d%s.png", out_dir, channel, suffix);
    cnn_status st = vis_png_write(png_path, canvas);
    vis_canvas_free(canvas);
    return st;
}

// Counts the images of dir (for the progress line only); -1 on an error.
static long count_images(const char *dir) {
    vis_image_walk *w;
    if (vis_image_walk_open(dir, &w) != CNN_OK) return -1;
    const char *p, *r;
    long n = 0;
    int got;
    while ((got = vis_image_walk_next(w, &p, &r)) == 1) n++;
    vis_image_walk_close(w);
    return got < 0 ? -1 : n;
}

static int run_patches(const patches_args *a) {
    cnn_model *m = cli_load_model(a->model_path);
    if (!m) return EXIT_ERROR;
    const cnn_model_info *info = cnn_model_get_info(m);
    int status = EXIT_ERROR, *channels = NULL, n_channels = 0, *images = NULL, *alive = NULL;
    int skipped = 0, done_images = 0, n_rows = 0;
    size_t per_image = (size_t)info->channels * info->height * info->width;
    float *x = NULL, *projection = NULL;
    uint8_t *pixels = NULL, *tile = NULL;
    char **batch_paths = NULL, **batch_relative = NULL, *png_path = NULL;
    vis_rf *rf = NULL;
    vis_top_k *tk = NULL;
    vis_hit *hits = NULL;
    index_row *rows = NULL;
    vis_image_walk *walk = NULL;
    cnn_session *s = NULL, *deconv = NULL;
    name_table names = {0};
    vis_canvas canvas = {0}, companion = {0};
    cnn_image_limits limits = {100000000};

    int node_index = a->layer ? vis_find_layer(m, a->layer) : vis_default_layer(m);
    if (node_index < 0 || vis_receptive_fields(m, &rf) != CNN_OK) {
        cli_error();
        goto done;
    }
    cnn_node_info node;
    cnn_model_node(m, node_index, &node);
    if (node_index == 0) {
        fprintf(stderr, "cnnscope patches: choose a layer after the input\n");
        goto done;
    }
    const vis_rf *field = &rf[node_index];
    int whole_images = field->global;   // linear layers, or after adaptive pooling / flatten
    if (vis_channel_range_parse(a->channel_list, node.c, "--channels", &channels, &n_channels) !=
            CNN_OK ||
        vis_top_k_create(n_channels, a->k, a->per_image, &tk) != CNN_OK ||
        vis_image_walk_open(a->dir, &walk) != CNN_OK) {
        cli_error();
        goto done;
    }
    if (cli_mkdirs(a->out_dir) != 0) goto done;
    x = malloc(sizeof(float) * per_image * (size_t)a->batch);
    pixels = malloc(per_image);
    images = malloc(sizeof(int) * (size_t)a->batch);
    batch_paths = calloc((size_t)a->batch, sizeof(char *));
    batch_relative = calloc((size_t)a->batch, sizeof(char *));
    hits = malloc(sizeof(vis_hit) * (size_t)a->k * (size_t)n_channels);
    alive = malloc(sizeof(int) * (size_t)a->k * (size_t)n_channels);
    rows = malloc(sizeof(index_row) * (size_t)a->k * (size_t)n_channels);
    png_path = malloc(strlen(a->out_dir) + 64);
    if (!x || !pixels || !images || !batch_paths || !batch_relative || !hits || !alive || !rows ||
        !png_path) {
        cnn_fail(CNN_ERR_NOMEM, "out of memory for a batch of %d images and %d x %d hits",
                 a->batch, n_channels, a->k);
        cli_error();
        goto done;
    }
    cnn_session_options opt = cnn_session_defaults();
    opt.threads = a->threads;
    opt.stop_after = node_index;   // nothing after the layer runs
    if (cnn_session_create(m, a->batch, &opt, &s) != CNN_OK) {
        cli_error();
        goto done;
    }
    if (whole_images)
        printf("layer '%s' (%s) has no spatial extent: its patches are whole images\n", node.name,
               cnn_op_name(node.op));

    // 1. stream
    long total = isatty(fileno(stderr)) ? count_images(a->dir) : -1;
    double start = cli_now();
    int next_index = 0, got = 1;
    size_t prune_at = (size_t)4 * a->k * n_channels + 4096;
    while (got == 1) {
        int n = 0;
        const char *path, *relative;
        while (n < a->batch && (got = vis_image_walk_next(walk, &path, &relative)) == 1) {
            free(batch_paths[n]);
            free(batch_relative[n]);
            batch_paths[n] = strdup(path);
            batch_relative[n] = strdup(relative);
            if (!batch_paths[n] || !batch_relative[n]) {
                cnn_fail(CNN_ERR_NOMEM, "out of memory");
                got = -1;
                break;
            }
            images[n++] = next_index++;
        }
        if (got < 0) {
            cli_error();
            goto done;
        }
        if (n == 0) break;
        // An unreadable image is skipped (with a warning), not the end of a million-image job.
        if (cnn_image_load_batch(info, (const char *const *)batch_paths, n, &limits, x) !=
            CNN_OK) {
            int ok = 0;
            for (int i = 0; i < n; i++) {
                if (cnn_image_load_ex(info, batch_paths[i], &limits, x + ok * per_image, NULL) !=
                    CNN_OK) {
                    fprintf(stderr, "cnnscope patches: skipping %s: %s\n", batch_paths[i],
                            cnn_last_error());
                    skipped++;
                    continue;
                }
                images[ok] = images[i];
                char *p = batch_paths[ok], *r = batch_relative[ok];
                batch_paths[ok] = batch_paths[i];
                batch_relative[ok] = batch_relative[i];
                batch_paths[i] = p;
                batch_relative[i] = r;
                ok++;
            }
            n = ok;
            if (n == 0) continue;
        }
        if (cnn_session_run(s, x, n) != CNN_OK) {
            cli_error();
            goto done;
        }
        const cnn_tensor *t = cnn_session_output(s, node_index);
        if (!t) {
            cli_error();
            goto done;
        }
        int C = (int)t->dims[1], h = t->ndim == 4 ? (int)t->dims[2] : 1;
        int w = t->ndim == 4 ? (int)t->dims[3] : 1;
        vis_top_k_add(tk, t->data, n, C, h, w, channels, images);
        for (int i = 0; i < n; i++) {
            if (names_add(&names, images[i], batch_paths[i], batch_relative[i]) != 0) {
                cnn_fail(CNN_ERR_NOMEM, "out of memory");
                cli_error();
                goto done;
            }
        }
        if ((size_t)names.count > prune_at) names_prune(&names, tk, n_channels, hits, alive);
        done_images += n;
        if (total > 0) cli_progress("patches", done_images + skipped, total, start);
    }
    if (done_images == 0) {
        fprintf(stderr, "cnnscope patches: %s: no readable images found (looked for .jpg .png "
                ".bmp ... %s)\n", a->dir, skipped ? "" : "in it and below");
        goto done;
    }
    double elapsed = cli_now() - start;

    // 2. render
    double render_start = cli_now();
    int tile_h = field->global ? info->height : field->size[0];
    int tile_w = field->global ? info->width : field->size[1];
    int side = tile_h > tile_w ? tile_h : tile_w;
    int scale = a->scale > 0 ? a->scale : side >= 96 ? 1 : 96 / side;   // cells of ~96 pixels
    tile = malloc((size_t)tile_h * tile_w * 3);
    if (a->deconv) projection = malloc(sizeof(float) * per_image);
    if (!tile || (a->deconv && !projection)) {
        cnn_fail(CNN_ERR_NOMEM, "out of memory for a %dx%d patch", tile_h, tile_w);
        cli_error();
        goto done;
    }
    if (a->deconv) {
        cnn_session_options dopt = cnn_session_defaults();
        dopt.threads = a->threads;
        dopt.keep_all = 1;   // DeconvNet reads the max pool switches of the forward pass
        dopt.stop_after = node_index;
        if (cnn_session_create(m, 1, &dopt, &deconv) != CNN_OK) {
            cli_error();
            goto done;
        }
    }
    vis_grid g = vis_grid_make(a->k, 0, tile_w * scale, tile_h * scale, 1, 0, 0);
    for (int si = 0; si < n_channels; si++) {
        int count = vis_top_k_sorted(tk, si, hits);
        if (vis_canvas_create(&canvas, vis_grid_width(&g), vis_grid_height(&g),
                              VIS_SEPARATOR_RGB) != CNN_OK ||
            (a->deconv && vis_canvas_create(&companion, vis_grid_width(&g), vis_grid_height(&g),
                                            VIS_SEPARATOR_RGB) != CNN_OK)) {
            cli_error();
            goto done;
        }
        for (int r = 0; r < count; r++) {
            const image_name *name = names_find(&names, hits[r].image);
            if (!name) {   // cannot happen: every image in a heap keeps its name
                fprintf(stderr, "cnnscope patches: internal error: no name for image %d\n",
                        hits[r].image);
                goto done;
            }
            vis_box box = vis_rf_box(field, hits[r].y, hits[r].x, info->height, info->width);
            if (cnn_image_load_ex(info, name->path, &limits, x, pixels) != CNN_OK) {
                cli_error();
                goto done;
            }
            vis_patch_crop(pixels, info->height, info->width, info->channels, box.y0, box.x0,
                           box.y1, box.x1, tile);
            int cx, cy;
            vis_grid_cell(&g, r, &cx, &cy);
            vis_canvas_blit(&canvas, cx, cy, tile, tile_w, tile_h, 3, scale);
            if (a->deconv) {
                if (project_hit(deconv, node_index, x, channels[si], &hits[r], box, &node, info,
                                projection, tile) != CNN_OK) {
                    cli_error();
                    goto done;
                }
                vis_canvas_blit(&companion, cx, cy, tile, tile_w, tile_h, 3, scale);
            }
            rows[n_rows++] = (index_row){channels[si], r, hits[r], box, name->relative};
        }
        if (write_grid(png_path, a->out_dir, channels[si], "", &canvas) != CNN_OK ||
            (a->deconv &&
             write_grid(png_path, a->out_dir, channels[si], "_deconv", &companion) != CNN_OK)) {
            cli_error();
            goto done;
        }
        if (total > 0 && a->deconv) cli_progress("deconvnet", si + 1, n_channels, render_start);
    }
    index_data d = {a->model_path, a->dir, node.name, cnn_op_name(node.op), node_index,
                    done_images, skipped, a->k, a->per_image, field->global, whole_images,
                    info->channels, info->height, info->width, node.c, node.h, node.w, field,
                    channels, n_channels, rows, n_rows};
    snprintf(png_path, strlen(a->out_dir) + 64, "%s/index.csv", a->out_dir);
    if (cnn_write_atomic(png_path, write_csv, &d) != CNN_OK) {
        cli_error();
        goto done;
    }
    snprintf(png_path, strlen(a->out_dir) + 64, "%s/index.json", a->out_dir);
    if (cnn_write_atomic(png_path, write_json, &d) != CNN_OK) {
        cli_error();
        goto done;
    }
    char shape[64];
    if (node.ndim == 4) snprintf(shape, sizeof shape, "%dx%dx%d", node.c, node.h, node.w);
    else snprintf(shape, sizeof shape, "%d", node.c);
    printf("%s (%s, %s): %d images in %.1f s (%.0f/s)\n", node.name, cnn_op_name(node.op), shape,
           done_images, elapsed, elapsed > 0 ? done_images / elapsed : 0.0);
    if (skipped) printf("skipped %d unreadable image%s\n", skipped, skipped == 1 ? "" : "s");
    if (field->global)
        printf("receptive field: the whole %dx%d input\n", info->height, info->width);
    else
        printf("receptive field: %dx%d pixels, jump %dx%d, first output centred at (%g, %g)\n",
               field->size[0], field->size[1], field->jump[0], field->jump[1],
               vis_rf_start(field, 0), vis_rf_start(field, 1));
    printf("wrote %d grid%s (top %d, rank order)%s and index.csv, index.json to %s/\n",
           n_channels, n_channels == 1 ? "" : "s", a->k,
           a->deconv ? " with their DeconvNet companions" : "", a->out_dir);
    status = EXIT_OK;
done:
    vis_canvas_free(&canvas);
    vis_canvas_free(&companion);
    names_free(&names);
    for (int i = 0; batch_paths && i < a->batch; i++) free(batch_paths[i]);
    for (int i = 0; batch_relative && i < a->batch; i++) free(batch_relative[i]);
    free(batch_paths);
    free(batch_relative);
    free(png_path);
    free(rows);
    free(alive);
    free(hits);
    free(images);
    free(tile);
    free(pixels);
    free(projection);
    free(x);
    free(channels);
    free(rf);
    cnn_session_free(s);
    cnn_session_free(deconv);
    vis_image_walk_close(walk);
    vis_top_k_free(tk);
    cnn_model_free(m);
    return status;
}

int cmd_patches(int argc, char **argv) {
    patches_args a = {NULL, NULL, NULL, "all", "patches", 16, 1, 0, 16, 0, 0};
    const char *pos[2];
    const cli_option options[] = {
        {"--layer", OPT_STRING, &a.layer, 0, 0,
         "NAME  the layer; a container such as layer3 means its last block (default: the last "
         "layer with spatial extent)"},
        {"--channels", OPT_STRING, &a.channel_list, 0, 0,
         "RANGE|all  which channels, e.g. 0-15,20 (default all)"},
        {"--top", OPT_INT, &a.k, 1, 10000, "K  patches per channel (default 16)"},
        {"--per-image", OPT_INT, &a.per_image, 0, 1000000,
         "N  at most N patches per image per channel; 0 = no limit (default 1)"},
        {"--threads", OPT_INT, &a.threads, 1, 1024, "N  worker threads (default: all cores)"},
        {"--batch", OPT_INT, &a.batch, 1, 4096, "N  images per forward pass (default 16)"},
        {"--scale", OPT_INT, &a.scale, 1, 256,
         "S  pixels per input pixel in the grids (default max(1, 96 / patch size))"},
        {"--deconv", OPT_FLAG, &a.deconv, 0, 0,
         "also write channel_NNNN_deconv.png: each patch's DeconvNet projection"},
        {"-o", OPT_STRING, &a.out_dir, 0, 0, "OUTDIR  output folder (default patches)"},
    };
    const cli_command_spec spec = {
        "patches", "MODEL DIR [--layer NAME] [options] [-o OUTDIR]",
        "Streams every image under DIR (recursively, in the order of cnnscope preprocess DIR)\n"
        "through the network up to the layer and keeps, for each channel, the K largest\n"
        "activations (image, y, x), by default one per image; ties go to the earlier image,\n"
        "then the smaller y, then x. Memory does not grow with the number of images.\n"
        "Then writes, for each channel, OUTDIR/channel_NNNN.png: the K patches in rank order\n"
        "(row by row), each the receptive field of its position cropped from the preprocessed\n"
        "image, the part outside the image in purple (128,0,128); and OUTDIR/index.csv and\n"
        "index.json: channel, rank, image (relative to DIR), activation, y, x and the box\n"
        "y0,x0,y1,x1 (inclusive input pixels, before clipping). Layers without spatial extent\n"
        "(linear, after adaptive pooling) give whole images. With --deconv, also\n"
        "OUTDIR/channel_NNNN_deconv.png, the same layout: each winner's activation projected\n"
        "back to the pixels by a DeconvNet (Zeiler & Fergus 2014: max unpooling through the\n"
        "switches of that image, ReLU, transposed filters), cropped by the same box and shown\n"
        "normalised over the crop (grey = 0). Progress goes to stderr when it is a terminal.",
        options, (int)(sizeof options / sizeof options[0]), 2, 2};
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    a.model_path = pos[0];
    a.dir = pos[1];
    cli_set_threads(a.threads);
    return run_patches(&a);
}
