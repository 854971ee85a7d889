// report_neurons.c - the sections of `cnnscope report` on what single neurons detect (issue 4;
// the page is described in report.h):
//   filters  the first convolution's filters, drawn exactly as `cnnscope filters MODEL` does
//   maps     the feature maps of MAPS_SAMPLES sample images at several depths
//   patches  for PATCH_CHANNELS channels at each of those depths, the PATCH_TOP patches of all
//            r->n images that activate the channel most, cropped by the exact receptive field,
//            beside their DeconvNet projections (the two grids of Zeiler & Fergus 2014)
//
// Which layers ("several depths") is one rule on the graph (pick_layers):
//   candidates  the ReLU nodes whose output has spatial extent (4-D, larger than 1x1): where a
//               neuron "fires"; a network without such ReLUs uses every node with spatial extent;
//   chosen      the first candidate (the ReLU right after the first convolution) and the last
//               candidate of each run of equal resolution (the end of each stage: 28x28, 14x14
//               and 7x7 in a ResNet-20 on 28x28 images); when that makes more than MAX_LAYERS,
//               the first, the last and evenly spaced ones between them.
//
// The patch search sees every image once: the chosen layers' outputs of each batch feed one
// bounded top-K heap per channel (vis/top_patches.h; one patch per image and channel, the
// defaults of `cnnscope patches`). It rides on report_classify's forward pass when that calls
// report_patches_keep / report_patches_observe (report.h); otherwise the section makes a pass
// of its own, batches of r->batch images up to the deepest chosen layer. Then only the
// winning images run again, every activation kept, for their DeconvNet projections.
//
// Dims legend: C,H,W the network input; c,h,w a layer's output; K = PATCH_TOP.
#include <stdlib.h>
#include <string.h>

#include "explain.h"
#include "feature_maps.h"
#include "filters.h"
#include "receptive_field.h"
#include "report.h"
#include "top_patches.h"

enum {
    MAX_LAYERS = REPORT_PATCH_LAYERS,   // depths shown by maps and patches
    MAPS_SAMPLES = 3,        // images whose maps are shown
    MAPS_CHANNELS = 16,      // maps per layer and image
    PATCH_CHANNELS = 6,      // channels per layer in the patches section
    PATCH_TOP = 9,           // patches per channel (a 3x3 grid, as Zeiler & Fergus)
    PATCH_CELL = 64,         // pixels of a patch on the page, at least (integer scale)
    PATCH_GAP = 12,          // pixels between the patch grid and the projection grid
    FILTERS_PER_CHANNEL_RANGE = 16,   // filters and inputs shown when C is not 1 or 3, as
                                      // `cnnscope filters`
};
// Activation memory one re-run for projections may keep (every node up to the layer).
#define PROJECTION_BATCH_BYTES ((size_t)256 << 20)

// ---------------------------------------------------------------------------------------------
// Shared pieces.

static cnn_node_info node_info(const cnn_model *m, int i) {
    cnn_node_info nd;
    cnn_model_node(m, i, &nd);
    return nd;
}

// The layers of maps and patches, by the rule at the top of this file. Returns how many
// (0..MAX_LAYERS) were written to out, in graph order.
static int pick_layers(const cnn_model *m, int *out) {
    int count = cnn_model_node_count(m);
    int *candidates = malloc(sizeof(int) * (size_t)count), n_candidates = 0;
    int *chosen = malloc(sizeof(int) * (size_t)count), n_chosen = 0;
    if (!candidates || !chosen) {
        free(candidates);
        free(chosen);
        return 0;
    }
    for (int relus_only = 1; relus_only >= 0 && n_candidates == 0; relus_only--) {
        for (int i = 1; i < count; i++) {
            cnn_node_info nd = node_info(m, i);
            if (nd.ndim == 4 && nd.h * nd.w > 1 && (!relus_only || nd.op == CNN_OP_RELU))
                candidates[n_candidates++] = i;
        }
    }
    for (int j = 0; j < n_candidates; j++) {
        cnn_node_info nd = node_info(m, candidates[j]);
        int stage_end = j == n_candidates - 1;
        if (!stage_end) {
            cnn_node_info next = node_info(m, candidates[j + 1]);
            stage_end = next.h != nd.h || next.w != nd.w;
        }
        if (j == 0 || stage_end) chosen[n_chosen++] = candidates[j];
    }
    int n = n_chosen <= MAX_LAYERS ? n_chosen : MAX_LAYERS;
    for (int i = 0; i < n; i++) {   // evenly spaced (rounded) over the chosen: first, last kept
        long at = n_chosen <= MAX_LAYERS ? i
                  : ((long)i * (n_chosen - 1) * 2 + (MAX_LAYERS - 1)) / (2 * (MAX_LAYERS - 1));
        out[i] = chosen[at];
    }
    free(candidates);
    free(chosen);
    return n;
}

// 1 if a max pool feeds `node` at any depth. Without one, a DeconvNet projection does not
// depend on the image (only max pool switches carry the image back; Springenberg et al. 2015).
static int has_maxpool_before(const cnn_model *m, int node) {
    int count = cnn_model_node_count(m), found = 0;
    char *reaches = calloc((size_t)count, 1);   // reaches[i]: node i feeds `node`
    if (!reaches) return 1;
    reaches[node] = 1;
    for (int i = node; i > 0 && !found; i--) {   // inputs come before their readers
        if (!reaches[i]) continue;
        cnn_node_info nd = node_info(m, i);
        found = i < node && nd.op == CNN_OP_MAXPOOL;
        for (int k = 0; k < nd.n_inputs; k++) reaches[nd.inputs[k]] = 1;
    }
    free(reaches);
    return found;
}

// "layer1.2 (relu, 16x28x28)"
static void write_layer_title(FILE *f, const cnn_node_info *nd) {
    report_html_text(f, nd->name);
    fprintf(f, " (%s, %dx%dx%d)", cnn_op_name(nd->op), nd->c, nd->h, nd->w);
}

// Up to max images for pictures of single images: correct ones first (any label when the set
// is unlabelled), then misclassified ones if there are too few.
static int pick_samples(const report *r, int max, int *out) {
    int n = report_samples(r, 1, max, out);
    if (n < max && r->n_classes > 0) n += report_samples(r, 0, max - n, out + n);
    return n;
}

// "4-coat/00123.png, label 4-coat, predicted Coat"
static void write_image_caption(const report *r, int image) {
    FILE *f = r->html;
    report_html_text(f, r->names[image]);
    if (r->labels && r->labels[image] >= 0 && r->labels[image] < r->n_classes) {
        fputs(", label ", f);
        report_html_text(f, r->class_names[r->labels[image]]);
    }
    fputs(", predicted ", f);
    report_html_text(f, report_class_name(r, r->pred[image]));
}

// ---------------------------------------------------------------------------------------------
// filters

cnn_status report_filters_section(report *r) {
    FILE *f = r->html;
    const cnn_model *m = r->model;
    fputs("<section id=\"filters\">\n<h2>First-layer filters</h2>\n", f);
    fputs("<p>The first convolution looks at the image through small filters, and each filter "
          "is itself a tiny picture: the pattern of pixels it responds to most. Each tile below "
          "is one filter's weights, stretched so that its own lowest weight is black and its "
          "highest white (one colour per input channel for colour images; a filter with more "
          "than three input channels is shown as one tile per input channel, dark blue = low, "
          "yellow = high). Trained networks learn edges at several orientations, blobs and "
          "colour contrasts here, as in Krizhevsky et al. 2012 and Zeiler &amp; Fergus 2014. "
          "The picture is the same as <code>cnnscope filters MODEL</code> draws.</p>\n", f);
    int conv = -1;
    for (int i = 1; i < cnn_model_node_count(m) && conv < 0; i++)
        if (node_info(m, i).op == CNN_OP_CONV2D) conv = i;
    if (conv < 0) {
        fputs("<p class=\"note\">This model has no convolution, so there are no filters to "
              "show.</p>\n</section>\n", f);
        return CNN_OK;
    }
    cnn_node_info nd = node_info(m, conv);
    // convert.py names a conv's weight "<node name>.weight" (weights/FORMAT.md), as cmd_filters.
    char tensor_name[1100];
    snprintf(tensor_name, sizeof tensor_name, "%s.weight", nd.name);
    cnn_tensor weight;
    if (cnn_model_tensor(m, tensor_name, &weight) != CNN_OK || weight.ndim != 4) {
        fputs("<p class=\"note\">The first convolution, ", f);
        report_html_text(f, nd.name);
        fputs(", has no weight tensor called ", f);
        report_html_text(f, tensor_name);
        fputs(" in the model file, so its filters cannot be shown.</p>\n</section>\n", f);
        return CNN_OK;
    }
    int K = (int)weight.dims[0], C = (int)weight.dims[1];
    int per_channel = C != 1 && C != 3;
    int n_filters = per_channel && K > FILTERS_PER_CHANNEL_RANGE ? FILTERS_PER_CHANNEL_RANGE : K;
    int n_inputs = C > FILTERS_PER_CHANNEL_RANGE ? FILTERS_PER_CHANNEL_RANGE : C;
    int *filters = malloc(sizeof(int) * (size_t)n_filters);
    int *inputs = malloc(sizeof(int) * (size_t)n_inputs);
    if (!filters || !inputs) {
        free(filters);
        free(inputs);
        return cnn_fail(CNN_ERR_NOMEM, "report filters: out of memory");
    }
    for (int i = 0; i < n_filters; i++) filters[i] = i;
    for (int i = 0; i < n_inputs; i++) inputs[i] = i;
    vis_filter_options opt = {VIS_NORM_PER_FILTER, 0, filters, n_filters,
                              per_channel ? inputs : NULL, per_channel ? n_inputs : 0};
    vis_canvas canvas = {0};
    cnn_status st = vis_filter_grid(&weight, &opt, &canvas);
    if (st == CNN_OK) st = report_png(r, "img/filters.png", &canvas);
    if (st == CNN_OK) {
        fputs("<figure><img src=\"img/filters.png\" alt=\"first-layer filters\">\n<figcaption>", f);
        report_html_text(f, nd.name);
        fprintf(f, ": %d filter%s of %dx%dx%d", K, K == 1 ? "" : "s", C, (int)weight.dims[2],
                (int)weight.dims[3]);
        if (per_channel)
            fprintf(f, "; filters 0-%d (rows) by input channels 0-%d (columns)", n_filters - 1,
                    n_inputs - 1);
        else
            fputs(C == 3 ? ", in colour" : ", in gray", f);
        fputs(".</figcaption></figure>\n</section>\n", f);
    }
    vis_canvas_free(&canvas);
    free(filters);
    free(inputs);
    return st;
}

// ---------------------------------------------------------------------------------------------
// maps

cnn_status report_maps_section(report *r) {
    FILE *f = r->html;
    const cnn_model *m = r->model;
    const cnn_model_info *info = cnn_model_get_info(m);
    fputs("<section id=\"maps\">\n<h2>Feature maps</h2>\n", f);
    fprintf(f, "<p>A convolution layer turns the image into one map per channel: how strongly "
            "the channel's pattern is present at each place. Below, %d sample images (on the "
            "left of each picture, as the network saw them) with their maps at several depths: "
            "the first ReLU after the first convolution, then the end of each stage of equal "
            "resolution. Early maps still look like the image (edges, light and dark); deeper "
            "maps are coarser and respond to larger, more specific parts. Of each layer, the "
            "%d channels with the largest mean activation over these images are shown, the "
            "same channels for every image, largest first (row by row); colours go from dark "
            "blue (lowest value among the maps of the picture) to yellow (highest). The method "
            "is that of Zeiler &amp; Fergus 2014; one picture equals <code>cnnscope maps MODEL "
            "IMAGE --layer NAME --channels LIST</code>.</p>\n", MAPS_SAMPLES, MAPS_CHANNELS);
    int layers[MAX_LAYERS], n_layers = pick_layers(m, layers);
    int samples[MAPS_SAMPLES], n_samples = r->n > 0 ? pick_samples(r, MAPS_SAMPLES, samples) : 0;
    if (n_layers == 0 || n_samples == 0) {
        fputs(n_layers == 0 ? "<p class=\"note\">No layer of this model has spatial extent (an "
                              "output larger than 1x1), so there are no maps to show.</p>\n"
                            : "<p class=\"note\">There are no images to show.</p>\n", f);
        fputs("</section>\n", f);
        return CNN_OK;
    }

    // One image at a time (batch 1: the same numbers as `cnnscope maps`); the outputs of every
    // layer of every sample are kept: maps[l] is [n_samples, c, h, w].
    size_t per_image = (size_t)info->channels * info->height * info->width;
    float *x = malloc(sizeof(float) * per_image), *maps[MAX_LAYERS] = {0}, *mean = NULL;
    uint8_t *pixels = malloc(per_image * (size_t)n_samples);
    int *channels = NULL;
    cnn_session *s = NULL;
    vis_canvas canvas = {0};
    cnn_status st = CNN_OK;
    size_t largest = 0;
    for (int l = 0; l < n_layers; l++) {
        cnn_node_info nd = node_info(m, layers[l]);
        size_t size = (size_t)nd.c * nd.h * nd.w;
        if (size > largest) largest = size;
        if (!(maps[l] = malloc(sizeof(float) * size * (size_t)n_samples))) st = CNN_ERR_NOMEM;
    }
    mean = malloc(sizeof(float) * largest);
    channels = malloc(sizeof(int) * largest);
    if (st != CNN_OK || !x || !pixels || !mean || !channels) {
        st = cnn_fail(CNN_ERR_NOMEM, "report maps: out of memory for %d images", n_samples);
        goto done;
    }
    cnn_session_options opt = cnn_session_defaults();
    opt.threads = r->threads;
    opt.stop_after = layers[n_layers - 1];
    opt.keep = layers;
    opt.n_keep = n_layers;
    if ((st = cnn_session_create(m, 1, &opt, &s)) != CNN_OK) goto done;
    for (int i = 0; i < n_samples; i++) {
        if ((st = cnn_image_load_ex(info, r->paths[samples[i]], NULL, x,
                                    pixels + per_image * i)) != CNN_OK ||
            (st = cnn_session_run(s, x, 1)) != CNN_OK)
            goto done;
        for (int l = 0; l < n_layers; l++) {
            const cnn_tensor *t = cnn_session_output(s, layers[l]);
            if (!t) {
                st = CNN_ERR_ARG;
                goto done;
            }
            size_t size = (size_t)cnn_tensor_numel(t);
            memcpy(maps[l] + size * i, t->data, sizeof(float) * size);
        }
    }

    report_progress(r, "feature maps", 0, n_layers);
    for (int l = 0; l < n_layers; l++) {
        cnn_node_info nd = node_info(m, layers[l]);
        size_t size = (size_t)nd.c * nd.h * nd.w;
        // The channels: largest mean over the samples first (ties: lower index).
        for (size_t j = 0; j < size; j++) {
            double sum = 0;
            for (int i = 0; i < n_samples; i++) sum += maps[l][size * i + j];
            mean[j] = (float)(sum / n_samples);
        }
        for (int c = 0; c < nd.c; c++) channels[c] = c;
        vis_maps_sort_channels(mean, nd.h, nd.w, channels, nd.c, VIS_SORT_MEAN);
        int shown = nd.c < MAPS_CHANNELS ? nd.c : MAPS_CHANNELS;
        fputs("<h3>", f);
        write_layer_title(f, &nd);
        fputs("</h3>\n<p>Channels ", f);
        for (int c = 0; c < shown; c++) fprintf(f, "%s%d", c ? ", " : "", channels[c]);
        if (shown < nd.c) fprintf(f, " (%d of %d)", shown, nd.c);
        fputs(".</p>\n<div class=\"figures\">\n", f);
        for (int i = 0; i < n_samples; i++) {
            vis_maps_options mo = {VIS_MAPS_SHARED, 0, 0};
            char name[64];
            snprintf(name, sizeof name, "img/maps-%d-%d.png", layers[l], samples[i]);
            if ((st = vis_feature_maps(pixels + per_image * i, info->height, info->width,
                                       info->channels, maps[l] + size * i, nd.h, nd.w, channels,
                                       shown, &mo, &canvas)) != CNN_OK ||
                (st = report_png(r, name, &canvas)) != CNN_OK)
                goto done;
            vis_canvas_free(&canvas);
            fprintf(f, "<figure><img src=\"%s\" alt=\"feature maps\"><figcaption>", name);
            write_image_caption(r, samples[i]);
            fputs("</figcaption></figure>\n", f);
        }
        fputs("</div>\n", f);
        report_progress(r, "feature maps", l + 1, n_layers);
    }
    fputs("</section>\n", f);
done:
    vis_canvas_free(&canvas);
    cnn_session_free(s);
    for (int l = 0; l < n_layers; l++) free(maps[l]);
    free(mean);
    free(channels);
    free(pixels);
    free(x);
    return st;
}

// ---------------------------------------------------------------------------------------------
// patches

// One layer of the patch search.
typedef struct {
    int node;
    cnn_node_info info;                  // output [c, h, w]
    vis_rf field;                        // the receptive field of its outputs
    int *all_channels;                   // [c] 0..c-1: every channel has a heap
    vis_top_k *top;                      // slot = channel, PATCH_TOP hits each
    int channels[PATCH_CHANNELS];        // the channels shown, strongest first
    int n_channels;
} patch_layer;

struct report_patch_search {
    patch_layer layers[MAX_LAYERS];
    int nodes[MAX_LAYERS];      // the layers' nodes, for cnn_session_options.keep
    int n_layers;
    long observed;                       // images offered so far
};

void report_patches_free(report *r) {
    report_patch_search *ps = r->patch_search;
    if (!ps) return;
    for (int l = 0; l < ps->n_layers; l++) {
        free(ps->layers[l].all_channels);
        vis_top_k_free(ps->layers[l].top);
    }
    free(ps);
    r->patch_search = NULL;
}

// Starts a search: the layers (pick_layers), their receptive fields and empty heaps.
static cnn_status patch_search_begin(report *r) {
    report_patches_free(r);
    report_patch_search *ps = calloc(1, sizeof *ps);
    if (!ps) return cnn_fail(CNN_ERR_NOMEM, "report patches: out of memory");
    r->patch_search = ps;
    int nodes[MAX_LAYERS], n = pick_layers(r->model, nodes);
    vis_rf *fields = NULL;
    cnn_status st = n > 0 ? vis_receptive_fields(r->model, &fields) : CNN_OK;
    for (int l = 0; st == CNN_OK && l < n; l++) {
        patch_layer *pl = &ps->layers[l];
        ps->nodes[l] = pl->node = nodes[l];
        pl->info = node_info(r->model, nodes[l]);
        pl->field = fields[nodes[l]];
        ps->n_layers++;
        if (!(pl->all_channels = malloc(sizeof(int) * (size_t)pl->info.c))) {
            st = cnn_fail(CNN_ERR_NOMEM, "report patches: out of memory");
            break;
        }
        for (int c = 0; c < pl->info.c; c++) pl->all_channels[c] = c;
        // one patch per image and channel, as `cnnscope patches` by default
        st = vis_top_k_create(pl->info.c, PATCH_TOP, 1, &pl->top);
    }
    free(fields);
    if (st != CNN_OK) report_patches_free(r);
    return st;
}

int report_patches_keep(report *r, int *nodes) {
    if (patch_search_begin(r) != CNN_OK) return -1;
    memcpy(nodes, r->patch_search->nodes, sizeof(int) * (size_t)r->patch_search->n_layers);
    return r->patch_search->n_layers;
}

cnn_status report_patches_observe(report *r, const cnn_session *s, int first, int n) {
    report_patch_search *ps = r->patch_search;
    if (!ps) return cnn_fail(CNN_ERR_ARG, "report patches: observe without keep");
    if (first != ps->observed)
        return cnn_fail(CNN_ERR_ARG, "report patches: images %d.. offered after %ld images: "
                        "they must come in order", first, ps->observed);
    int images[256];
    for (int done = 0; done < n;) {   // in pieces of up to 256 image indices
        int count = n - done < 256 ? n - done : 256;
        for (int i = 0; i < count; i++) images[i] = first + done + i;
        for (int l = 0; l < ps->n_layers; l++) {
            patch_layer *pl = &ps->layers[l];
            const cnn_tensor *t = cnn_session_output(s, pl->node);
            if (!t) return CNN_ERR_ARG;
            size_t per_image = (size_t)pl->info.c * pl->info.h * pl->info.w;
            vis_top_k_add(pl->top, t->data + per_image * done, count, pl->info.c, pl->info.h,
                          pl->info.w, pl->all_channels, images);
        }
        done += count;
    }
    ps->observed += n;
    return CNN_OK;
}

// The search's own pass over all images, when report_classify did not feed it: batches of
// r->batch, up to the deepest chosen layer.
static cnn_status patch_search_run(report *r) {
    const cnn_model_info *info = cnn_model_get_info(r->model);
    report_patch_search *ps = r->patch_search;
    size_t per_image = (size_t)info->channels * info->height * info->width;
    int batch = r->batch > 0 ? r->batch : 32;
    if (batch > r->n) batch = r->n;
    float *x = malloc(sizeof(float) * per_image * (size_t)batch);
    cnn_session *s = NULL;
    cnn_status st = CNN_OK;
    if (!x) {
        st = cnn_fail(CNN_ERR_NOMEM, "report patches: out of memory for a batch of %d images",
                      batch);
        goto done;
    }
    cnn_session_options opt = cnn_session_defaults();
    opt.threads = r->threads;
    opt.stop_after = ps->nodes[ps->n_layers - 1];
    opt.keep = ps->nodes;
    opt.n_keep = ps->n_layers;
    if ((st = cnn_session_create(r->model, batch, &opt, &s)) != CNN_OK) goto done;
    report_progress(r, "top patches", 0, r->n);
    for (int first = 0; first < r->n; first += batch) {
        int n = r->n - first < batch ? r->n - first : batch;
        if ((st = cnn_image_load_batch(info, (const char *const *)r->paths + first, n, NULL,
                                       x)) != CNN_OK ||
            (st = cnn_session_run(s, x, n)) != CNN_OK ||
            (st = report_patches_observe(r, s, first, n)) != CNN_OK)
            goto done;
        report_progress(r, "top patches", first + n, r->n);
    }
done:
    cnn_session_free(s);
    free(x);
    return st;
}

// The channels shown: the PATCH_CHANNELS whose strongest activation over all images is
// largest (ties: lower index); channels without hits (all NaN) are never shown.
static void patch_choose_channels(patch_layer *pl) {
    float best[PATCH_CHANNELS];
    vis_hit hits[PATCH_TOP];
    pl->n_channels = 0;
    for (int c = 0; c < pl->info.c; c++) {
        if (vis_top_k_sorted(pl->top, c, hits) == 0) continue;
        int at = pl->n_channels;   // insertion into the sorted list
        while (at > 0 && hits[0].activation > best[at - 1]) at--;
        if (at >= PATCH_CHANNELS) continue;
        int last = pl->n_channels < PATCH_CHANNELS ? pl->n_channels : PATCH_CHANNELS - 1;
        for (int j = last; j > at; j--) {
            best[j] = best[j - 1];
            pl->channels[j] = pl->channels[j - 1];
        }
        best[at] = hits[0].activation;
        pl->channels[at] = c;
        if (pl->n_channels < PATCH_CHANNELS) pl->n_channels++;
    }
}

// One patch of the pictures: channel pl->channels[slot], its hit of rank `rank`.
typedef struct {
    int slot, rank;
    vis_hit hit;
} patch_row;

// Memory the re-runs of one layer share: chunk images at a time.
typedef struct {
    cnn_session *s;            // keep_all, up to the layer
    int chunk;
    float *x;                  // [chunk, C, H, W]
    uint8_t *pixels;           // [chunk, H, W, C]
    float *projections;        // [chunk, C, H, W]
    int *index;                // [chunk] the explained element of each image
    uint8_t *tile;             // [tile_h, tile_w, 3]
} patch_rerun;

// Draws the patch grid and the projection grid of every shown channel of one layer and
// writes img/patches-NODE-CHANNEL.png each.
static cnn_status patch_render_layer(report *r, const patch_layer *pl, patch_rerun *pr) {
    const cnn_model_info *info = cnn_model_get_info(r->model);
    int C = info->channels, H = info->height, W = info->width;
    size_t per_image = (size_t)C * H * W;
    patch_row rows[PATCH_CHANNELS * PATCH_TOP];
    vis_hit hits[PATCH_TOP];
    int n_rows = 0;
    for (int slot = 0; slot < pl->n_channels; slot++) {
        int got = vis_top_k_sorted(pl->top, pl->channels[slot], hits);
        for (int k = 0; k < got; k++) rows[n_rows++] = (patch_row){slot, k, hits[k]};
    }
    // The cells, as `cnnscope patches --scale S` lays them out: a tile per receptive field,
    // scaled to about PATCH_CELL pixels (smaller than its default, so that two pictures fit
    // side by side on the page).
    int tile_h = pl->field.global ? H : pl->field.size[0];
    int tile_w = pl->field.global ? W : pl->field.size[1];
    int side = tile_h > tile_w ? tile_h : tile_w;
    int scale = side >= PATCH_CELL ? 1 : PATCH_CELL / side;
    vis_grid g = vis_grid_make(PATCH_TOP, 0, tile_w * scale, tile_h * scale, 1, 0, 0);
    int gw = vis_grid_width(&g), gh = vis_grid_height(&g);
    vis_canvas canvases[PATCH_CHANNELS] = {{0}};
    cnn_status st = CNN_OK;
    for (int slot = 0; st == CNN_OK && slot < pl->n_channels; slot++) {
        st = vis_canvas_create(&canvases[slot], 2 * gw + PATCH_GAP, gh, 255, 255, 255);
        if (st != CNN_OK) break;
        vis_canvas_fill(&canvases[slot], 0, 0, gw, gh, VIS_SEPARATOR_RGB);
        vis_canvas_fill(&canvases[slot], gw + PATCH_GAP, 0, gw, gh, VIS_SEPARATOR_RGB);
    }
    int hw = pl->info.h * pl->info.w;
    for (int a = 0; st == CNN_OK && a < n_rows; a += pr->chunk) {
        int n = n_rows - a < pr->chunk ? n_rows - a : pr->chunk;
        for (int k = 0; st == CNN_OK && k < n; k++) {
            const patch_row *row = &rows[a + k];
            st = cnn_image_load_ex(info, r->paths[row->hit.image], NULL, pr->x + per_image * k,
                                   pr->pixels + per_image * k);
            pr->index[k] = pl->channels[row->slot] * hw + row->hit.y * pl->info.w + row->hit.x;
        }
        if (st != CNN_OK || (st = cnn_session_run(pr->s, pr->x, n)) != CNN_OK ||
            (st = vis_explain_projections(pr->s, pl->node, pr->index, pr->projections)) != CNN_OK)
            break;
        for (int k = 0; st == CNN_OK && k < n; k++) {
            const patch_row *row = &rows[a + k];
            vis_box box = vis_rf_box(&pl->field, row->hit.y, row->hit.x, H, W);
            int cx, cy;
            vis_grid_cell(&g, row->rank, &cx, &cy);
            vis_patch_crop(pr->pixels + per_image * k, H, W, C, box.y0, box.x0, box.y1, box.x1,
                           pr->tile);
            vis_canvas_blit(&canvases[row->slot], cx, cy, pr->tile, tile_w, tile_h, 3, scale);
            st = vis_explain_projection_tile(pr->tile, pr->projections + per_image * k, C, H, W,
                                             box.y0, box.x0, box.y1, box.x1);
            vis_canvas_blit(&canvases[row->slot], gw + PATCH_GAP + cx, cy, pr->tile, tile_w,
                            tile_h, 3, scale);
        }
    }

    FILE *f = r->html;
    if (st == CNN_OK) {
        fputs("<h3>", f);
        write_layer_title(f, &pl->info);
        if (pl->field.global)
            fputs("</h3>\n<p>Each output of this layer sees the whole image.", f);
        else
            fprintf(f, "</h3>\n<p>Receptive field %dx%d pixels, %d pixel%s apart.",
                    pl->field.size[0], pl->field.size[1], pl->field.jump[0],
                    pl->field.jump[0] == 1 ? "" : "s");
        fprintf(f, " Channels with the strongest activation, of %d:", pl->info.c);
        for (int slot = 0; slot < pl->n_channels; slot++)
            fprintf(f, "%s %d", slot ? "," : "", pl->channels[slot]);
        fputs(".", f);
        if (!has_maxpool_before(r->model, pl->node))
            fputs(" No max pooling comes before this layer, so the projections do not depend on "
                  "the image: each shows the channel's preferred pattern, cut off where the "
                  "field leaves the image.", f);
        fputs("</p>\n<div class=\"figures\">\n", f);
    }
    int row0 = 0;
    for (int slot = 0; st == CNN_OK && slot < pl->n_channels; slot++) {
        char name[64];
        snprintf(name, sizeof name, "img/patches-%d-%d.png", pl->node, pl->channels[slot]);
        if ((st = report_png(r, name, &canvases[slot])) != CNN_OK) break;
        int count = 0;
        while (row0 + count < n_rows && rows[row0 + count].slot == slot) count++;
        fprintf(f, "<figure><img src=\"%s\" alt=\"top patches and their projections\" title=\"",
                name);
        for (int k = 0; k < count; k++) {
            const vis_hit *h = &rows[row0 + k].hit;
            fprintf(f, "%s%d: ", k ? "&#10;" : "", k + 1);
            report_html_text(f, r->names[h->image]);
            fprintf(f, " at (%d, %d): %.3f", h->y, h->x, h->activation);
        }
        fprintf(f, "\"><figcaption>channel %d: activation %.3f (1st) to %.3f (%s)</figcaption>"
                "</figure>\n", pl->channels[slot], rows[row0].hit.activation,
                rows[row0 + count - 1].hit.activation,
                count == 1 ? "1st" : count == 2 ? "2nd" : count == 3 ? "3rd" : "last");
        row0 += count;
    }
    if (st == CNN_OK) fputs("</div>\n", f);
    for (int slot = 0; slot < pl->n_channels; slot++) vis_canvas_free(&canvases[slot]);
    return st;
}

// Re-runs the winning images of one layer (chunk at a time, every activation up to the layer
// kept) for their projections, and draws the layer's pictures.
static cnn_status patch_render(report *r, const patch_layer *pl) {
    const cnn_model *m = r->model;
    const cnn_model_info *info = cnn_model_get_info(m);
    size_t per_image = (size_t)info->channels * info->height * info->width;
    size_t kept_floats = 0;   // per image, every node up to the layer
    for (int i = 0; i <= pl->node; i++) {
        cnn_node_info nd = node_info(m, i);
        kept_floats += (size_t)nd.c * nd.h * nd.w;
    }
    size_t fit = PROJECTION_BATCH_BYTES / (sizeof(float) * (kept_floats + 2 * per_image) + 1);
    int rows = PATCH_CHANNELS * PATCH_TOP;
    const vis_rf *rf = &pl->field;
    size_t tile_pixels = rf->global ? (size_t)info->height * info->width
                                    : (size_t)rf->size[0] * rf->size[1];
    patch_rerun pr = {0};
    pr.chunk = fit < 1 ? 1 : fit > (size_t)rows ? rows : (int)fit;
    pr.x = malloc(sizeof(float) * per_image * (size_t)pr.chunk);
    pr.pixels = malloc(per_image * (size_t)pr.chunk);
    pr.projections = malloc(sizeof(float) * per_image * (size_t)pr.chunk);
    pr.index = malloc(sizeof(int) * (size_t)pr.chunk);
    pr.tile = malloc(tile_pixels * 3);
    cnn_status st = CNN_OK;
    if (!pr.x || !pr.pixels || !pr.projections || !pr.index || !pr.tile) {
        st = cnn_fail(CNN_ERR_NOMEM, "report patches: out of memory for %d projections",
                      pr.chunk);
        goto done;
    }
    cnn_session_options opt = cnn_session_defaults();
    opt.threads = r->threads;
    opt.keep_all = 1;   // DeconvNet reads the max pool switches of the forward pass
    opt.stop_after = pl->node;
    if ((st = cnn_session_create(m, pr.chunk, &opt, &pr.s)) == CNN_OK)
        st = patch_render_layer(r, pl, &pr);
done:
    cnn_session_free(pr.s);
    free(pr.x);
    free(pr.pixels);
    free(pr.projections);
    free(pr.index);
    free(pr.tile);
    return st;
}

cnn_status report_patches_section(report *r) {
    FILE *f = r->html;
    fputs("<section id=\"patches\">\n<h2>What single neurons respond to</h2>\n", f);
    fprintf(f, "<p>A channel of a layer is one feature detector, applied at every place of the "
            "image. To see what it detects, all %d images were run through the network and, for "
            "each channel, the %d places (in %d different images) where it responded most were "
            "kept. The left grid shows the part of the image each of those responses saw (its "
            "receptive field, computed exactly from the kernels, strides and padding of the "
            "layers; purple where it reaches past the image border), strongest first, row by "
            "row. The right grid shows the same responses projected back to the pixels with a "
            "deconvolutional network (Zeiler &amp; Fergus 2014): which pixels of the patch "
            "produced the response (gray = none; lighter and darker = the pattern that drove "
            "it). Only max pooling makes this projection depend on the image (its switches "
            "remember where each maximum came from); without it the projection is the "
            "channel's preferred pattern, the same for every image, which led Springenberg et "
            "al. 2015 to guided backpropagation. Early layers respond to edges and small "
            "textures, deeper ones to larger and more specific parts. Per layer (at the depths "
            "of the feature maps above), the %d channels whose strongest response is largest "
            "are shown. Hover over a picture to see the images. The left grid equals "
            "<code>cnnscope patches MODEL DIR --layer NAME --channels C --top %d --scale "
            "S</code> (S = %d / field size, at least 1).</p>\n",
            r->n, PATCH_TOP, PATCH_TOP, PATCH_CHANNELS, PATCH_TOP, PATCH_CELL);
    report_patch_search *ps = r->patch_search;
    cnn_status st = CNN_OK;
    if (!ps || ps->observed != r->n) {   // report_classify did not feed the search: search now
        if ((st = patch_search_begin(r)) != CNN_OK) return st;
        ps = r->patch_search;
        if (ps->n_layers > 0 && r->n > 0) st = patch_search_run(r);
    }
    if (st == CNN_OK && (ps->n_layers == 0 || r->n == 0)) {
        fputs(ps->n_layers == 0 ? "<p class=\"note\">No layer of this model has spatial extent "
                                  "(an output larger than 1x1), so there are no patches to "
                                  "show.</p>\n"
                                : "<p class=\"note\">There are no images to search.</p>\n", f);
    } else if (st == CNN_OK) {
        report_progress(r, "DeconvNet projections", 0, ps->n_layers);
        for (int l = 0; st == CNN_OK && l < ps->n_layers; l++) {
            patch_choose_channels(&ps->layers[l]);
            if (ps->layers[l].n_channels > 0) st = patch_render(r, &ps->layers[l]);
            report_progress(r, "DeconvNet projections", l + 1, ps->n_layers);
        }
    }
    if (st == CNN_OK) fputs("</section>\n", f);
    report_patches_free(r);   // the heaps are not needed after the pictures
    return st;
}
