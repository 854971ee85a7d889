// test_report_sections.c - the report sections of vis/report_neurons.c (filters, maps,
// patches) and vis/report_explain.c (explain), checked picture by picture against the vis
// functions they are made of, recomputed here the slow and obvious way.
//
// Without arguments (the unit test): $FIXTURES/tiny_resnet.cnn (tests/make_tiny_model.py;
// 3x16x16, 5 classes, global average pool + linear) on 30 synthetic images in 5 class folders,
// written to a temporary folder:
//   1. the page: each section once, balanced, with its papers cited;
//   2. filters: img/filters.png has the pixels of vis_filter_grid(conv1.weight, per filter);
//   3. layers: the depth rule picks 'relu' and 'block' (the first ReLU, the end of the 16x16
//      stage);
//   4. maps: each picture equals vis_feature_maps of the sample image, the channels ranked by
//      their mean over the samples, computed here image by image;
//   5. patches: each channel's picture equals the brute-force top 9 (every image, every
//      position: the best position per image, then activation desc, image asc) cropped by
//      the receptive field box worked out by hand, beside vis_explain_projection_tile of
//      vis_explain_projections run on that image alone; the channels are the 6 with the
//      largest top activation;
//   6. explain: each panel equals vis_explain of the predicted class on the image alone,
//      rendered with vis_explain_heatmap_rgb / vis_explain_gradient_rgb;
//   7. the same bytes (index.html and every picture) with 1 thread and batch 4 as with 2
//      threads and batch 7 and the patch search fed by the classification
//      (report_patches_keep / report_patches_observe, as report_classify does);
//   8. an unreadable image fails the patches section with a message naming the file.
//
// With arguments, a driver (tests/test_report_sections.py uses it; also for timing):
//     test_report_sections MODEL DIR OUT [THREADS [BATCH [feed]]]
// classifies DIR (feed: feeding the patch search), then writes the four sections into
// OUT/index.html and OUT/img/, printing the wall and CPU seconds of each.
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <stb_image.h>   // the decoder is in Debian's libstb (-lstb)

#include "check.h"
#include "explain.h"
#include "feature_maps.h"
#include "filters.h"
#include "report.h"
#include "top_patches.h"

// ---------------------------------------------------------------------------------------------
// Building a report by hand: the dataset, then report_classify's results (probabilities and
// top-1 of the class scores, ties to the lower class) computed here.

typedef struct {
    report r;
    cnn_dataset *ds;
} test_report;

static void free_test_report(test_report *t) {
    report_patches_free(&t->r);
    free(t->r.probs);
    free(t->r.pred);
    cnn_dataset_free(t->ds);
    memset(t, 0, sizeof *t);
}

// feed_patches: the classification feeds the patch search (report_patches_keep / observe),
// as report_classify does.
static int open_test_report(test_report *t, const cnn_model *m, const char *dir, int threads,
                            int batch, int feed_patches) {
    memset(t, 0, sizeof *t);
    if (cnn_dataset_open(dir, &t->ds) != CNN_OK) {
        printf("FAIL: %s\n", cnn_last_error());
        return -1;
    }
    const cnn_model_info *info = cnn_model_get_info(m);
    report *r = &t->r;
    r->model = m;
    r->data_dir = dir;
    r->n = t->ds->n_images;
    r->paths = t->ds->paths;
    r->names = t->ds->relative;
    r->labels = t->ds->labels;
    r->n_classes = t->ds->n_classes;
    r->class_names = t->ds->class_names;
    r->threads = threads;
    r->batch = batch;
    r->n_outputs = info->num_classes;
    r->probs = malloc(sizeof(float) * (size_t)r->n * r->n_outputs);
    r->pred = malloc(sizeof(int) * (size_t)r->n);
    size_t per_image = (size_t)info->channels * info->height * info->width;
    float *x = malloc(sizeof(float) * per_image);
    cnn_session *s = NULL;
    cnn_session_options opt = cnn_session_defaults();
    opt.threads = threads;
    int keep[1 + REPORT_PATCH_LAYERS], n_keep = 1, status = 0;
    int score = keep[0] = vis_explain_score_node(m);   // the logits (before a final softmax)
    if (feed_patches) {
        int n = report_patches_keep(r, keep + 1);
        if (n < 0) {
            printf("FAIL: report_patches_keep: %s\n", cnn_last_error());
            return -1;
        }
        n_keep += n;
    }
    opt.keep = keep;
    opt.n_keep = n_keep;
    if (!r->probs || !r->pred || !x || cnn_session_create(m, 1, &opt, &s) != CNN_OK) {
        printf("FAIL: cannot classify: %s\n", cnn_last_error());
        status = -1;
    }
    for (int i = 0; status == 0 && i < r->n; i++) {
        if (cnn_image_load_ex(info, r->paths[i], NULL, x, NULL) != CNN_OK ||
            cnn_session_run(s, x, 1) != CNN_OK) {
            printf("FAIL: %s\n", cnn_last_error());
            status = -1;
            break;
        }
        if (feed_patches && report_patches_observe(r, s, i, 1) != CNN_OK) {
            printf("FAIL: report_patches_observe: %s\n", cnn_last_error());
            status = -1;
            break;
        }
        const float *scores = cnn_session_output(s, score)->data;
        float *p = r->probs + (size_t)i * r->n_outputs, top = scores[0];
        r->pred[i] = 0;
        for (int c = 1; c < r->n_outputs; c++)
            if (scores[c] > top) top = scores[r->pred[i] = c];
        double sum = 0;
        for (int c = 0; c < r->n_outputs; c++) sum += p[c] = expf(scores[c] - top);
        for (int c = 0; c < r->n_outputs; c++) p[c] = (float)(p[c] / sum);
    }
    cnn_session_free(s);
    free(x);
    return status;
}

typedef cnn_status (*section_fn)(report *);
static const struct {
    const char *name;
    section_fn run;
} sections[] = {
    {"filters", report_filters_section},
    {"maps", report_maps_section},
    {"patches", report_patches_section},
    {"explain", report_explain_section},
};
enum { N_SECTIONS = sizeof sections / sizeof sections[0] };

static double wall_seconds(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec * 1e-6;
}

// Times the labelled jobs inside a section (the progress callback of report.h).
typedef struct {
    char label[64];
    double wall, cpu;
} job_clock;

static void print_progress(void *user, const char *label, long done, long total) {
    job_clock *c = user;
    if (done == 0 || strcmp(label, c->label) != 0) {
        snprintf(c->label, sizeof c->label, "%s", label);
        c->wall = wall_seconds();
        c->cpu = (double)clock() / CLOCKS_PER_SEC;
    }
    if (done == total)
        printf("  %-22s %7.2f s wall %7.2f s cpu\n", label, wall_seconds() - c->wall,
               (double)clock() / CLOCKS_PER_SEC - c->cpu);
}

// Writes the four sections into out/index.html. verbose: print the time of each.
static cnn_status write_sections(report *r, const char *out, int verbose) {
    char path[4096];
    snprintf(path, sizeof path, "%s/index.html", out);
    mkdir(out, 0777);
    r->dir = out;
    if (!(r->html = fopen(path, "wb"))) return cnn_fail(CNN_ERR_IO, "%s: cannot create", path);
    job_clock jobs = {"", 0, 0};
    r->progress = verbose ? print_progress : NULL;
    r->progress_user = &jobs;
    cnn_status st = CNN_OK;
    for (int i = 0; st == CNN_OK && i < N_SECTIONS; i++) {
        double wall = wall_seconds(), cpu = (double)clock() / CLOCKS_PER_SEC;
        st = sections[i].run(r);
        if (verbose && st == CNN_OK)
            printf("%-24s %7.2f s wall %7.2f s cpu\n", sections[i].name, wall_seconds() - wall,
                   (double)clock() / CLOCKS_PER_SEC - cpu);
    }
    fclose(r->html);
    r->html = NULL;
    return st;
}

static int driver(int argc, char **argv) {
    cnn_model *m;
    if (cnn_model_load(argv[1], &m) != CNN_OK) {
        fprintf(stderr, "%s\n", cnn_last_error());
        return 2;
    }
    int threads = argc > 4 ? atoi(argv[4]) : 0, batch = argc > 5 ? atoi(argv[5]) : 64;
    int feed = argc > 6 && strcmp(argv[6], "feed") == 0;
    test_report t;
    double wall = wall_seconds(), cpu = (double)clock() / CLOCKS_PER_SEC;
    int status = open_test_report(&t, m, argv[2], threads, batch, feed) == 0 ? 0 : 2;
    if (status == 0) {
        printf("%-24s %7.2f s wall %7.2f s cpu (%d images)\n", "classify", wall_seconds() - wall,
               (double)clock() / CLOCKS_PER_SEC - cpu, t.r.n);
        if (write_sections(&t.r, argv[3], 1) != CNN_OK) {
            fprintf(stderr, "%s\n", cnn_last_error());
            status = 2;
        }
    }
    free_test_report(&t);
    cnn_model_free(m);
    return status;
}

// ---------------------------------------------------------------------------------------------
// Files

static char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)n + 1);
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    if (data) data[n] = '\0';
    *size = (size_t)n;
    return data;
}

static int count_of(const char *text, const char *what) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

// 1 if the PNG at dir/relative has exactly the pixels of c (and says why not otherwise).
static int png_matches(const char *dir, const char *relative, const vis_canvas *c) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, relative);
    int w, h, comp;
    uint8_t *px = stbi_load(path, &w, &h, &comp, 3);
    if (!px) {
        printf("  %s: cannot read: %s\n", path, stbi_failure_reason());
        return 0;
    }
    int ok = w == c->width && h == c->height;
    if (!ok) printf("  %s: %dx%d, expected %dx%d\n", path, w, h, c->width, c->height);
    for (int i = 0; ok && i < w * h * 3; i++) {
        if (px[i] != c->rgb[i]) {
            printf("  %s: pixel (x %d, y %d) channel %d is %d, expected %d\n", path,
                   i / 3 % w, i / 3 / w, i % 3, px[i], c->rgb[i]);
            ok = 0;
        }
    }
    stbi_image_free(px);
    return ok;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

// ---------------------------------------------------------------------------------------------
// The synthetic image set: 5 classes x 6 images of 16x16, blobs and stripes on noise.

static unsigned rng_state = 12345;
static int random_below(int n) {
    rng_state = rng_state * 1103515245u + 12345u;
    return (int)((rng_state >> 16) % (unsigned)n);
}

static int write_images(const char *dir) {
    char path[4096];
    for (int c = 0; c < 5; c++) {
        snprintf(path, sizeof path, "%s/class%d", dir, c);
        if (mkdir(path, 0777) != 0) return -1;
        for (int k = 0; k < 6; k++) {
            vis_canvas img;
            if (vis_canvas_create(&img, 16, 16, 0, 0, 0) != CNN_OK) return -1;
            for (int i = 0; i < 16 * 16 * 3; i++) img.rgb[i] = (uint8_t)random_below(80);
            int cy = random_below(16), cx = random_below(16);
            for (int y = 0; y < 16; y++)
                for (int x = 0; x < 16; x++) {
                    int blob = (y - cy) * (y - cy) + (x - cx) * (x - cx) < 9 + 4 * c;
                    int stripe = (x + y * (c % 3)) % (2 + c) == 0;
                    uint8_t *p = img.rgb + (y * 16 + x) * 3;
                    if (blob) p[c % 3] = 250;
                    if (stripe) p[(c + 1) % 3] = (uint8_t)(p[(c + 1) % 3] + 150);
                }
            snprintf(path, sizeof path, "%s/class%d/img%02d.png", dir, c, k);
            cnn_status st = vis_png_write(path, &img);
            vis_canvas_free(&img);
            if (st != CNN_OK) return -1;
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The checks.

// One image alone through the network, every activation kept.
typedef struct {
    cnn_session *s;
    float *x;
    uint8_t *pixels;
} single;

static int run_single(single *one, const report *r, int image) {
    const cnn_model_info *info = cnn_model_get_info(r->model);
    size_t per_image = (size_t)info->channels * info->height * info->width;
    if (!one->s) {
        cnn_session_options opt = cnn_session_defaults();
        opt.keep_all = 1;
        one->x = malloc(sizeof(float) * per_image);
        one->pixels = malloc(per_image);
        if (cnn_session_create(r->model, 1, &opt, &one->s) != CNN_OK) return -1;
    }
    if (cnn_image_load_ex(info, r->paths[image], NULL, one->x, one->pixels) != CNN_OK ||
        cnn_session_run(one->s, one->x, 1) != CNN_OK) {
        printf("FAIL: %s\n", cnn_last_error());
        return -1;
    }
    return 0;
}

static void free_single(single *one) {
    cnn_session_free(one->s);
    free(one->x);
    free(one->pixels);
}

static void check_page(const char *out) {
    char path[4096];
    size_t size;
    snprintf(path, sizeof path, "%s/index.html", out);
    char *html = read_file(path, &size);
    CHECK(html, "%s not written", path);
    if (!html) return;
    const char *ids[] = {"filters", "maps", "patches", "explain"};
    for (int i = 0; i < 4; i++) {
        char tag[64];
        snprintf(tag, sizeof tag, "<section id=\"%s\">", ids[i]);
        CHECK(count_of(html, tag) == 1, "%s appears %d times, expected once", tag,
              count_of(html, tag));
    }
    CHECK(count_of(html, "<section") == 4 && count_of(html, "</section>") == 4,
          "%d <section and %d </section>, expected 4 each", count_of(html, "<section"),
          count_of(html, "</section>"));
    CHECK(count_of(html, "<h2>") == 4, "%d <h2>, expected one per section",
          count_of(html, "<h2>"));
    const char *cited[] = {"Zeiler &amp; Fergus 2014", "Simonyan et al. 2014",
                           "Springenberg et al. 2015", "Zhou et al. 2016",
                           "Selvaraju et al. 2017"};
    for (int i = 0; i < 5; i++)
        CHECK(strstr(html, cited[i]), "the page does not cite %s", cited[i]);
    CHECK(!strstr(html, "does not apply"), "CAM and Grad-CAM apply to tiny_resnet, but the page "
          "says something does not");
    free(html);
}

static void check_filters(const report *r, const char *out) {
    cnn_tensor w;
    CHECK(cnn_model_tensor(r->model, "conv1.weight", &w) == CNN_OK, "conv1.weight: %s",
          cnn_last_error());
    vis_filter_options opt = {VIS_NORM_PER_FILTER, 0, NULL, 0, NULL, 0};
    vis_canvas c = {0};
    CHECK(vis_filter_grid(&w, &opt, &c) == CNN_OK, "vis_filter_grid: %s", cnn_last_error());
    CHECK(png_matches(out, "img/filters.png", &c), "img/filters.png differs from "
          "vis_filter_grid(conv1.weight)");
    vis_canvas_free(&c);
}

// The samples of the maps section: correct ones, then wrong ones, up to 3.
static int maps_samples(const report *r, int *out) {
    int n = report_samples(r, 1, 3, out);
    return n + report_samples(r, 0, 3 - n, out + n);
}

static void check_maps(const report *r, const char *out, const int *layers) {
    const cnn_model_info *info = cnn_model_get_info(r->model);
    size_t per_image = (size_t)info->channels * info->height * info->width;
    int samples[3], n = maps_samples(r, samples);
    CHECK(n == 3, "%d map samples, expected 3", n);
    single one = {0};
    for (int l = 0; l < 2; l++) {
        cnn_node_info nd;
        cnn_model_node(r->model, layers[l], &nd);
        size_t size = (size_t)nd.c * nd.h * nd.w;
        float *maps = malloc(sizeof(float) * size * 3);
        uint8_t *pixels = malloc(per_image * 3);
        double mean[64] = {0};
        for (int i = 0; i < n; i++) {
            if (run_single(&one, r, samples[i]) != 0) return;
            memcpy(maps + size * i, cnn_session_output(one.s, layers[l])->data,
                   sizeof(float) * size);
            memcpy(pixels + per_image * i, one.pixels, per_image);
            for (size_t j = 0; j < size; j++) mean[j / (nd.h * nd.w)] += maps[size * i + j];
        }
        int channels[64];   // ranked by mean over the samples, largest first, ties by index
        for (int c = 0; c < nd.c; c++) {
            int at = c;
            while (at > 0 && mean[c] > mean[channels[at - 1]]) {
                channels[at] = channels[at - 1];
                at--;
            }
            channels[at] = c;
        }
        for (int i = 0; i < n; i++) {
            vis_maps_options mo = {VIS_MAPS_SHARED, 0, 0};
            vis_canvas c = {0};
            char name[64];
            CHECK(vis_feature_maps(pixels + per_image * i, info->height, info->width,
                                   info->channels, maps + size * i, nd.h, nd.w, channels, nd.c,
                                   &mo, &c) == CNN_OK, "vis_feature_maps: %s", cnn_last_error());
            snprintf(name, sizeof name, "img/maps-%d-%d.png", layers[l], samples[i]);
            CHECK(png_matches(out, name, &c), "%s (layer %s, image %s) differs from "
                  "vis_feature_maps", name, nd.name, r->names[samples[i]]);
            vis_canvas_free(&c);
        }
        free(maps);
        free(pixels);
    }
    free_single(&one);
}

static int compare_hits(const void *pa, const void *pb) {
    const vis_hit *a = pa, *b = pb;
    return vis_hit_better(a, b) ? -1 : vis_hit_better(b, a) ? 1 : 0;
}

// layer: node index; half: the receptive field is [y - half, y + half] (3x3 convs, pad 1).
static void check_patches(const report *r, const char *out, int layer, int half) {
    const cnn_model_info *info = cnn_model_get_info(r->model);
    int C = info->channels, H = info->height, W = info->width;
    size_t per_image = (size_t)C * H * W;
    cnn_node_info nd;
    cnn_model_node(r->model, layer, &nd);
    int hw = nd.h * nd.w;
    // Brute force: each image's best position per channel (the first maximum in row-major
    // order), all images, sorted.
    vis_hit *best = malloc(sizeof(vis_hit) * (size_t)nd.c * r->n);
    uint8_t *all_pixels = malloc(per_image * (size_t)r->n);
    single one = {0};
    for (int i = 0; i < r->n; i++) {
        if (run_single(&one, r, i) != 0) return;
        memcpy(all_pixels + per_image * i, one.pixels, per_image);
        const float *t = cnn_session_output(one.s, layer)->data;
        for (int c = 0; c < nd.c; c++) {
            int at = 0;
            for (int j = 1; j < hw; j++)
                if (t[c * hw + j] > t[c * hw + at]) at = j;
            best[(size_t)c * r->n + i] = (vis_hit){t[c * hw + at], i, at / nd.w, at % nd.w};
        }
    }
    for (int c = 0; c < nd.c; c++)
        qsort(best + (size_t)c * r->n, (size_t)r->n, sizeof(vis_hit), compare_hits);
    int order[64];   // channels by their top activation, largest first, ties by index
    for (int c = 0; c < nd.c; c++) {
        int at = c;
        while (at > 0 && best[(size_t)c * r->n].activation >
                             best[(size_t)order[at - 1] * r->n].activation) {
            order[at] = order[at - 1];
            at--;
        }
        order[at] = c;
    }
    int side = 2 * half + 1, scale = 64 / side;   // PATCH_CELL
    vis_grid g = vis_grid_make(9, 0, side * scale, side * scale, 1, 0, 0);
    int gw = vis_grid_width(&g), gh = vis_grid_height(&g);
    uint8_t *tile = malloc((size_t)side * side * 3);
    float *projection = malloc(sizeof(float) * per_image);
    for (int k = 0; k < 6; k++) {
        int c = order[k];
        vis_canvas want;
        vis_canvas_create(&want, 2 * gw + 12, gh, 255, 255, 255);
        vis_canvas_fill(&want, 0, 0, gw, gh, VIS_SEPARATOR_RGB);
        vis_canvas_fill(&want, gw + 12, 0, gw, gh, VIS_SEPARATOR_RGB);
        for (int rank = 0; rank < 9; rank++) {
            const vis_hit *h = &best[(size_t)c * r->n + rank];
            int y0 = h->y - half, x0 = h->x - half, y1 = h->y + half, x1 = h->x + half, cx, cy;
            vis_grid_cell(&g, rank, &cx, &cy);
            vis_patch_crop(all_pixels + per_image * h->image, H, W, C, y0, x0, y1, x1, tile);
            vis_canvas_blit(&want, cx, cy, tile, side, side, 3, scale);
            int index = c * hw + h->y * nd.w + h->x;
            if (run_single(&one, r, h->image) != 0 ||
                vis_explain_projections(one.s, layer, &index, projection) != CNN_OK ||
                vis_explain_projection_tile(tile, projection, C, H, W, y0, x0, y1, x1) != CNN_OK) {
                CHECK(0, "projection of %s channel %d: %s", nd.name, c, cnn_last_error());
                continue;
            }
            vis_canvas_blit(&want, gw + 12 + cx, cy, tile, side, side, 3, scale);
        }
        char name[64];
        snprintf(name, sizeof name, "img/patches-%d-%d.png", layer, c);
        CHECK(png_matches(out, name, &want), "%s (layer %s, channel %d, rank %d of the channels) "
              "differs from the brute-force top 9 and their projections", name, nd.name, c, k);
        vis_canvas_free(&want);
    }
    free(tile);
    free(projection);
    free(best);
    free(all_pixels);
    free_single(&one);
}

static void check_explain(const report *r, const char *out) {
    const cnn_model_info *info = cnn_model_get_info(r->model);
    int C = info->channels, H = info->height, W = info->width, scale = (112 + H - 1) / H;
    int images[8], n = report_samples(r, 1, 4, images);
    n += report_samples(r, 0, 4, images + n);
    CHECK(n == 8, "%d explained images, expected 8 (4 right, 4 wrong)", n);
    const vis_explain_method methods[] = {VIS_EXPLAIN_SALIENCY, VIS_EXPLAIN_GUIDED,
                                          VIS_EXPLAIN_GRADCAM, VIS_EXPLAIN_CAM,
                                          VIS_EXPLAIN_GUIDED_GRADCAM};
    const float alpha[] = {1.0f, 0, 0.5f, 0.5f, 0};
    float *result = malloc(sizeof(float) * (size_t)C * H * W);
    uint8_t *rgb = malloc((size_t)H * W * 3);
    single one = {0};
    for (int i = 0; i < n; i++) {
        if (run_single(&one, r, images[i]) != 0) break;
        vis_canvas c;
        char name[96];
        vis_canvas_create(&c, W * scale, H * scale, 0, 0, 0);
        vis_canvas_blit(&c, 0, 0, one.pixels, W, H, C, scale);
        snprintf(name, sizeof name, "img/explain-%d-image.png", images[i]);
        CHECK(png_matches(out, name, &c), "%s differs from the input image", name);
        for (int k = 0; k < 5; k++) {
            vis_explain_target target = {vis_explain_score_node(r->model), &r->pred[images[i]]};
            CHECK(vis_explain(one.s, methods[k], &target, -1, result) == CNN_OK, "%s: %s",
                  vis_explain_method_name(methods[k]), cnn_last_error());
            if (vis_explain_is_heatmap(methods[k]))
                vis_explain_heatmap_rgb(rgb, result, one.pixels, C, H, W, alpha[k]);
            else
                vis_explain_gradient_rgb(rgb, result, C, H, W);
            vis_canvas_blit(&c, 0, 0, rgb, W, H, 3, scale);
            snprintf(name, sizeof name, "img/explain-%d-%s.png", images[i],
                     vis_explain_method_name(methods[k]));
            CHECK(png_matches(out, name, &c), "%s differs from vis_explain (%s of class %d)",
                  name, vis_explain_method_name(methods[k]), r->pred[images[i]]);
        }
        vis_canvas_free(&c);
    }
    free(result);
    free(rgb);
    free_single(&one);
}

// Every file of a/sub equals the one of b/sub, and the folders list the same files.
static void check_same_bytes(const char *a, const char *b, const char *sub) {
    char pa[8192], pb[8192];
    snprintf(pa, sizeof pa, "%s/%s", a, sub);
    DIR *d = opendir(pa);
    CHECK(d, "cannot list %s", pa);
    if (!d) return;
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(pa, sizeof pa, "%s/%s/%s", a, sub, e->d_name);
        snprintf(pb, sizeof pb, "%s/%s/%s", b, sub, e->d_name);
        struct stat st;
        if (stat(pa, &st) == 0 && S_ISDIR(st.st_mode)) continue;   // img/: compared on its own
        size_t na, nb;
        char *da = read_file(pa, &na), *db = read_file(pb, &nb);
        CHECK(da && db && na == nb && memcmp(da, db, na) == 0, "%s and %s differ", pa, pb);
        free(da);
        free(db);
        files++;
    }
    closedir(d);
    int other = 0;
    snprintf(pb, sizeof pb, "%s/%s", b, sub);
    if ((d = opendir(pb))) {
        while ((e = readdir(d))) {
            struct stat st;
            snprintf(pb, sizeof pb, "%s/%s/%s", b, sub, e->d_name);
            other += e->d_name[0] != '.' && stat(pb, &st) == 0 && !S_ISDIR(st.st_mode);
        }
        closedir(d);
    }
    CHECK(files == other, "%s/%s has %d files, %s/%s has %d", a, sub, files, b, sub, other);
}

static int unit_test(void) {
    const char *fixtures = getenv("FIXTURES");
    char model_path[4096], tmp[] = "/tmp/cnnscope-report-sections-XXXXXX", path[1200];
    snprintf(model_path, sizeof model_path, "%s/tiny_resnet.cnn",
             fixtures ? fixtures : "build/fixtures");
    cnn_model *m;
    if (cnn_model_load(model_path, &m) != CNN_OK) {
        printf("FAIL: %s (run tests/make_tiny_model.py build/fixtures)\n", cnn_last_error());
        return 1;
    }
    if (!mkdtemp(tmp)) {
        printf("FAIL: cannot create a temporary folder\n");
        return 1;
    }
    snprintf(path, sizeof path, "%s/data", tmp);
    CHECK(mkdir(path, 0777) == 0 && write_images(path) == 0, "cannot write the images");
    test_report t;
    if (open_test_report(&t, m, path, 1, 4, 0) != 0) return 1;
    report *r = &t.r;
    CHECK(r->n == 30 && r->n_classes == 5, "%d images in %d classes, expected 30 in 5", r->n,
          r->n_classes);

    char out1[1024], out2[1024];
    snprintf(out1, sizeof out1, "%s/out1", tmp);
    snprintf(out2, sizeof out2, "%s/out2", tmp);
    CHECK(write_sections(r, out1, 0) == CNN_OK, "sections: %s", cnn_last_error());
    check_page(out1);
    check_filters(r, out1);
    int relu = cnn_model_find_node(m, "relu"), block = cnn_model_find_node(m, "block");
    int layers[2] = {relu, block};
    char html_path[1100];
    size_t size;
    snprintf(html_path, sizeof html_path, "%s/index.html", out1);
    char *html = read_file(html_path, &size);
    for (int k = 0; html && k < 2; k++) {   // the depth rule: relu and block, nothing else
        char name[64];
        snprintf(name, sizeof name, "img/maps-%d-", layers[k]);
        CHECK(count_of(html, name) == 3, "%d pictures %s*, expected 3", count_of(html, name), name);
        snprintf(name, sizeof name, "img/patches-%d-", layers[k]);
        CHECK(count_of(html, name) == 6, "%d pictures %s*, expected 6", count_of(html, name), name);
    }
    if (html) {
        CHECK(count_of(html, "img/maps-") == 6 && count_of(html, "img/patches-") == 12,
              "%d maps and %d patch pictures, expected 6 and 12 (2 layers)",
              count_of(html, "img/maps-"), count_of(html, "img/patches-"));
        CHECK(count_of(html, "img/explain-") == 8 * 6, "%d explain pictures, expected 48",
              count_of(html, "img/explain-"));
    }
    free(html);
    check_maps(r, out1, layers);
    check_patches(r, out1, relu, 1);
    check_patches(r, out1, block, 2);
    check_explain(r, out1);

    // Same bytes with other threads and batch sizes, the patch search fed by the
    // classification instead of its own pass.
    free_test_report(&t);
    if (open_test_report(&t, m, path, 2, 7, 1) != 0) return 1;
    r = &t.r;
    CHECK(r->patch_search, "report_patches_keep started no search");
    CHECK(write_sections(r, out2, 0) == CNN_OK, "sections (2 threads, batch 7): %s",
          cnn_last_error());
    CHECK(!r->patch_search, "report_patches_section did not free the search");
    check_same_bytes(out1, out2, ".");
    check_same_bytes(out1, out2, "img");

    // An unreadable image: a clear error naming it.
    char *saved = r->paths[17], missing[1100];
    snprintf(missing, sizeof missing, "%s/no-such-image.png", tmp);
    r->paths[17] = missing;
    snprintf(out2, sizeof out2, "%s/out3", tmp);
    mkdir(out2, 0777);
    snprintf(path, sizeof path, "%s/index.html", out2);
    r->dir = out2;
    r->html = fopen(path, "wb");
    cnn_status st = report_patches_section(r);
    fclose(r->html);
    CHECK(st == CNN_ERR_IO && strstr(cnn_last_error(), "no-such-image.png"),
          "a missing image: status %d, message '%s'", st, cnn_last_error());
    r->paths[17] = saved;

    free_test_report(&t);
    cnn_model_free(m);
    nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (failures) printf("test_report_sections: %d failure(s)\n", failures);
    else printf("test_report_sections: all checks passed\n");
    return failures != 0;
}

int main(int argc, char **argv) {
    if (argc >= 4) return driver(argc, argv);
    if (argc != 1) {
        fprintf(stderr, "usage: %s [MODEL DIR OUT [THREADS [BATCH [feed]]]]\n", argv[0]);
        return 2;
    }
    return unit_test();
}
