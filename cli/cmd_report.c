// cmd_report.c - cnnscope report MODEL DIR [-o report]: one folder with index.html that shows
// what a model has learned on the images of DIR (vis/report.h describes the folder).
//
// The folder is written under a temporary name beside the output (OUT.tmp.<pid>) and moved into
// place only when every section succeeded: OUT -> OUT.old.<pid>, OUT.tmp.<pid> -> OUT, then the
// old one is removed. A failed run removes its temporary folder and leaves OUT as it was.
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "neighbors.h"   // vis_random_below
#include "report.h"

#define IMAGES_SEED 42   // the shuffle behind --images
#define MAX_TIMINGS 64

// ---------------------------------------------------------------------------------------------
// Timing: whole steps (one per section) and the labelled jobs inside them (from the progress
// callback), printed on stderr as they end and written to timings.js. stderr also gets the
// CPU time of all threads, which says more than the clock on a busy machine.

typedef struct {
    char name[48];
    double seconds;
} timing;

typedef struct {
    double start;                    // the whole run
    timing steps[MAX_TIMINGS], details[MAX_TIMINGS];
    int n_steps, n_details;
    const char *step;                // the step running now
    char label[48];                  // the progress label running now
    double label_start, label_cpu;
    int label_done;
} run_clock;

// CPU seconds of this process so far, all threads.
static double cpu_seconds(void) {
    struct rusage u;
    if (getrusage(RUSAGE_SELF, &u) != 0) return 0;
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

static void add_timing(timing *list, int *count, const char *name, double seconds) {
    if (*count >= MAX_TIMINGS) return;
    snprintf(list[*count].name, sizeof list[*count].name, "%s", name);
    list[(*count)++].seconds = seconds;
}

static void on_progress(void *user, const char *label, long done, long total) {
    run_clock *c = user;
    if (strcmp(label, c->label) != 0 || (c->label_done && done < total)) {   // a new job
        snprintf(c->label, sizeof c->label, "%s", label);
        c->label_start = cli_now();
        c->label_cpu = cpu_seconds();
        c->label_done = 0;
    }
    if (c->label_done) return;   // a second "done" of the same job
    cli_progress(label, done, total, c->label_start);
    if (done >= total) {
        c->label_done = 1;
        double seconds = cli_now() - c->label_start;
        if (c->step && strcmp(label, c->step) == 0) return;   // the step's own line says it
        add_timing(c->details, &c->n_details, label, seconds);
        fprintf(stderr, "report:   %-22s %7.2f s (CPU %.2f s)\n", label, seconds,
                cpu_seconds() - c->label_cpu);
    }
}

// Runs one section and records its time.
static cnn_status timed(run_clock *c, const char *step, cnn_status (*section)(report *),
                        report *r) {
    double start = cli_now(), cpu = cpu_seconds();
    c->step = step;
    cnn_status st = section(r);
    double seconds = cli_now() - start;
    add_timing(c->steps, &c->n_steps, step, seconds);
    if (st == CNN_OK)
        fprintf(stderr, "report: %-24s %7.2f s (CPU %.2f s)\n", step, seconds, cpu_seconds() - cpu);
    c->step = NULL;
    return st;
}

static cnn_status write_timings(void *user, FILE *f) {
    const run_clock *c = user;
    fprintf(f, "window.CNNSCOPE_TIMINGS = {\"total_seconds\": %.2f, \"steps\": [",
            cli_now() - c->start);
    for (int i = 0; i < c->n_steps; i++)
        fprintf(f, "%s[\"%s\", %.2f]", i ? ", " : "", c->steps[i].name, c->steps[i].seconds);
    fprintf(f, "], \"details\": [");
    for (int i = 0; i < c->n_details; i++) {
        fprintf(f, "%s[", i ? ", " : "");
        cli_json_string(f, c->details[i].name);
        fprintf(f, ", %.2f]", c->details[i].seconds);
    }
    fprintf(f, "]};\n");
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------
// Files and folders

static cnn_status write_string(void *user, FILE *f) {
    fputs(user, f);
    return CNN_OK;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

// rm -r path (never following symbolic links); 0 on success or when path does not exist.
static int remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

// An existing OUT is replaced only if an earlier report wrote it (its data.js says so) or it
// is an empty folder: `-o ~` must never delete a home folder.
static int replaceable(const char *out) {
    struct stat st;
    if (lstat(out, &st) != 0) return errno == ENOENT;
    if (!S_ISDIR(st.st_mode)) return 0;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/data.js", out);
    FILE *f = fopen(path, "rb");
    if (f) {
        char head[32] = "";
        size_t got = fread(head, 1, sizeof head - 1, f);
        fclose(f);
        head[got] = '\0';
        return strncmp(head, "window.CNNSCOPE_DATA", 20) == 0;
    }
    DIR *d = opendir(out);   // no data.js: only an empty folder may go
    if (!d) return 0;
    int empty = 1;
    for (struct dirent *e; empty && (e = readdir(d));)
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    return empty;
}

// Removes OUT.tmp.<pid> and OUT.old.<pid> left by runs that were killed (their process is
// gone), so that an interrupted report leaves no litter for long.
static void remove_leftovers(const char *out) {
    const char *slash = strrchr(out, '/');
    char parent[PATH_MAX];
    if (!slash) snprintf(parent, sizeof parent, ".");
    else if (slash == out) snprintf(parent, sizeof parent, "/");
    else snprintf(parent, sizeof parent, "%.*s", (int)(slash - out), out);
    const char *base = slash ? slash + 1 : out;
    size_t len = strlen(base);
    DIR *d = opendir(parent);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        const char *rest = e->d_name + len;
        if (strncmp(e->d_name, base, len) != 0 ||
            (strncmp(rest, ".tmp.", 5) != 0 && strncmp(rest, ".old.", 5) != 0))
            continue;
        char *end;
        long pid = strtol(rest + 5, &end, 10);
        if (end == rest + 5 || *end || pid <= 0) continue;   // not our pattern
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;   // alive: a report at work
        char path[PATH_MAX * 2 + 2];
        snprintf(path, sizeof path, "%s/%s", parent, e->d_name);
        if (remove_tree(path) == 0) fprintf(stderr, "cnnscope report: removed %s (left by an "
                                                    "interrupted run)\n", path);
    }
    closedir(d);
}

// OUT.tmp.<pid> -> OUT, the earlier OUT (if any) out of the way first and removed last.
static int move_into_place(const char *tmp, const char *out) {
    char old[PATH_MAX + 32];
    snprintf(old, sizeof old, "%s.old.%ld", out, (long)getpid());
    int had_old = rename(out, old) == 0;
    if (!had_old && errno != ENOENT) {
        fprintf(stderr, "cnnscope report: cannot move %s aside: %s\n", out, strerror(errno));
        return EXIT_ERROR;
    }
    if (rename(tmp, out) != 0) {
        fprintf(stderr, "cnnscope report: cannot rename %s to %s: %s\n", tmp, out, strerror(errno));
        if (had_old) rename(old, out);
        return EXIT_ERROR;
    }
    if (had_old && remove_tree(old) != 0)
        fprintf(stderr, "cnnscope report: warning: cannot remove %s: %s\n", old, strerror(errno));
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Which images

// All images, or `limit` of them: a shuffle with a fixed seed (the same on every run), where
// the first image of each class in shuffled order comes first, so that every class appears when
// limit allows. Returned in dataset order (image indices, ascending).
static int *choose_images(const cnn_dataset *ds, int limit, int *n_out) {
    int n = ds->n_images, take = limit > 0 && limit < n ? limit : n;
    int *order = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    char *chosen = calloc((size_t)(n > 0 ? n : 1), 1);
    int *out = malloc(sizeof(int) * (size_t)(take > 0 ? take : 1));
    if (!order || !chosen || !out) {
        free(order);
        free(chosen);
        free(out);
        return NULL;
    }
    for (int i = 0; i < n; i++) order[i] = i;
    uint64_t state = IMAGES_SEED;
    for (int i = n - 1; take < n && i > 0; i--) {   // Fisher-Yates
        int j = vis_random_below(&state, i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    int count = 0;
    for (int c = 0; take < n && c < ds->n_classes && count < take; c++) {
        for (int k = 0; k < n; k++) {
            if (ds->labels[order[k]] == c) {
                chosen[order[k]] = 1;
                count++;
                break;
            }
        }
    }
    for (int k = 0; k < n && count < take; k++)
        if (!chosen[order[k]]) {
            chosen[order[k]] = 1;
            count++;
        }
    count = 0;
    for (int i = 0; i < n; i++)
        if (chosen[i]) out[count++] = i;
    free(order);
    free(chosen);
    *n_out = count;
    return out;
}

// ---------------------------------------------------------------------------------------------
// The page around the sections

static const struct {
    const char *id, *title, *what;
} contents[] = {
    {"model", "The model", "its layers, their shapes, sizes and receptive fields"},
    {"classes", "Accuracy and confusion", "how often it is right, and which classes it mixes up"},
    {"filters", "First-layer filters", "the patterns the first layer looks for"},
    {"maps", "Feature maps", "what a few images look like inside the network, layer by layer"},
    {"patches", "Top patches", "the image parts that excite single channels most"},
    {"space", "The representation space", "which images the network finds alike: neighbours "
     "and maps"},
    {"mistakes", "Mistakes", "the most confusing images and the likely mislabelled ones"},
    {"explain", "Explanations", "which pixels a decision rests on"},
};

static void write_head(const report *r, int requested, int total) {
    FILE *f = r->html;
    const cnn_model_info *info = cnn_model_get_info(r->model);
    char dir[256];
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
               "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
               "<meta name=\"generator\" content=\"cnnscope report\">\n<title>cnnscope report: ");
    report_html_text(f, info->name);
    fprintf(f, "</title>\n<link rel=\"stylesheet\" href=\"report.css\">\n</head>\n<body>\n"
               "<header>\n<h1>What <i>");
    report_html_text(f, info->name);
    fprintf(f, "</i> has learned</h1>\n<p class=\"lead\">");
    report_count(f, requested);
    fprintf(f, " images of <i>");
    report_html_text(f, report_basename(r->data_dir, dir, sizeof dir));
    fprintf(f, "</i>");
    if (requested < total) {
        fprintf(f, " (a fixed random sample of the ");
        report_count(f, total);
        fprintf(f, ", shown in folder order)");
    }
    fprintf(f, ".</p>\n</header>\n<nav id=\"toc\">\n<ul>\n");
    for (size_t i = 0; i < sizeof contents / sizeof contents[0]; i++)
        fprintf(f, "<li><a href=\"#%s\">%s</a></li>\n", contents[i].id, contents[i].title);
    fprintf(f, "</ul>\n</nav>\n<main>\n");
    fprintf(f,
            "<div class=\"intro\">\n<h2>How to read this page</h2>\n<p>A convolutional network "
            "turns an image into class scores through a stack of layers. The first layers "
            "respond to small local patterns (edges, blobs, textures); deeper layers combine "
            "them into larger, more abstract parts; the last layer weighs the result into one "
            "score per class. This page looks inside, from the outside in:</p>\n<ol>\n");
    for (size_t i = 0; i < sizeof contents / sizeof contents[0]; i++)
        fprintf(f, "<li><a href=\"#%s\">%s</a>: %s</li>\n", contents[i].id, contents[i].title,
                contents[i].what);
    fprintf(f, "</ol>\n<p>Everything was computed from the model file and the images; nothing is "
               "fetched from the internet. Click a picture to see it full size. The maps of the "
               "representation space are interactive (hover, click) and need JavaScript.</p>\n"
               "</div>\n");
}

static void write_footer(const report *r) {
    fprintf(r->html, "</main>\n<footer>\n<p>Written by <code>cnnscope report</code>. The same "
                     "model and images give the same files, byte for byte (timings.js "
                     "aside).</p>\n</footer>\n<script src=\"data.js\"></script><script "
                     "src=\"timings.js\"></script><script src=\"report.js\"></script>\n"
                     "</body>\n</html>\n");
}

// ---------------------------------------------------------------------------------------------

typedef struct {
    const char *model_path, *dir, *out;
    int images, threads, batch;
} report_args;

// The sections, in page order, then the files around them. 0 or EXIT_ERROR (printed).
static int write_report(report *r, run_clock *clock, int requested, int total) {
    static const struct {
        const char *step;
        cnn_status (*run)(report *);
    } sections[] = {
        {"model", report_model_section},     {"classify", report_classify},
        {"filters", report_filters_section}, {"maps", report_maps_section},
        {"patches", report_patches_section}, {"space", report_space_section},
        {"mistakes", report_mistakes_section}, {"explain", report_explain_section},
    };
    write_head(r, requested, total);
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        if (timed(clock, sections[i].step, sections[i].run, r) != CNN_OK) {
            fprintf(stderr, "cnnscope report: section '%s': %s\n", sections[i].step,
                    cnn_last_error());
            return EXIT_ERROR;
        }
        if (sections[i].run == report_classify)   // the page says it too
            for (int k = 0; k < r->n_skipped; k++)
                fprintf(stderr, "cnnscope report: warning: %s/%s cannot be read: left out\n",
                        r->data_dir, r->skipped[k]);
    }
    write_footer(r);
    char *css = report_file(r, "report.css"), *js = report_file(r, "report.js");
    char *timings = report_file(r, "timings.js");
    cnn_status st = css && js && timings ? CNN_OK : CNN_ERR_NOMEM;
    if (st == CNN_OK) st = cnn_write_atomic(css, write_string, (void *)report_asset_css);
    if (st == CNN_OK) st = cnn_write_atomic(js, write_string, (void *)report_asset_js);
    if (st == CNN_OK) st = cnn_write_atomic(timings, write_timings, clock);
    free(css);
    free(js);
    free(timings);
    return st == CNN_OK ? 0 : cli_error();
}

static int run_report(const report_args *a) {
    run_clock clock = {0};
    clock.start = cli_now();
    cnn_model *m = cli_load_model(a->model_path);
    if (!m) return EXIT_ERROR;
    const cnn_model_info *info = cnn_model_get_info(m);
    cnn_dataset *ds = NULL;
    int status = EXIT_ERROR, n = 0, *chosen = NULL;
    char *out = strdup(a->out), *tmp = NULL;
    report r = {0};
    if (!out) goto done;
    for (size_t len = strlen(out); len > 1 && out[len - 1] == '/'; len--) out[len - 1] = '\0';
    if (cnn_dataset_open(a->dir, &ds) != CNN_OK) {
        cli_error();
        goto done;
    }
    if (ds->n_images == 0) {
        fprintf(stderr, "cnnscope report: %s holds no images (.png .jpg .bmp ...)\n", a->dir);
        goto done;
    }
    int labelled = ds->n_classes > 0 && ds->n_classes == info->num_classes;
    if (ds->n_classes > 0 && !labelled)
        fprintf(stderr, "cnnscope report: warning: %s has %d class folders but %s has %d classes; "
                "the images are shown without labels\n", a->dir, ds->n_classes, a->model_path,
                info->num_classes);
    struct stat out_stat;
    if (lstat(out, &out_stat) != 0 && errno != ENOENT) {   // e.g. a path under a regular file
        fprintf(stderr, "cnnscope report: %s: cannot use as the output folder: %s\n", out,
                strerror(errno));
        goto done;
    }
    if (!replaceable(out)) {
        fprintf(stderr, "cnnscope report: %s exists and is not a cnnscope report (no data.js "
                "from an earlier report in it): refusing to replace it; choose another -o\n", out);
        goto done;
    }
    char *slash = strrchr(out, '/');
    if (slash && slash != out) {   // the parent folders of OUT
        *slash = '\0';
        int made = cli_mkdirs(out);
        *slash = '/';
        if (made != 0) goto done;
    }

    chosen = choose_images(ds, a->images, &n);
    tmp = malloc(strlen(out) + 32);
    r.paths = malloc(sizeof(char *) * (size_t)n);
    r.names = malloc(sizeof(char *) * (size_t)n);
    r.labels = malloc(sizeof(int) * (size_t)n);
    if (!chosen || !tmp || !r.paths || !r.names || !r.labels) {
        fprintf(stderr, "cnnscope report: out of memory for %d images\n", n);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        r.paths[i] = ds->paths[chosen[i]];
        r.names[i] = ds->relative[chosen[i]];
        r.labels[i] = labelled ? ds->labels[chosen[i]] : -1;
    }
    r.model = m;
    r.model_path = a->model_path;
    r.data_dir = a->dir;
    r.n = n;
    r.n_classes = labelled ? ds->n_classes : 0;
    r.class_names = labelled ? ds->class_names : NULL;
    r.threads = a->threads;
    r.batch = a->batch;
    r.progress = on_progress;
    r.progress_user = &clock;

    sprintf(tmp, "%s.tmp.%ld", out, (long)getpid());
    remove_leftovers(out);
    remove_tree(tmp);   // left by a killed run that had our pid
    char sub[PATH_MAX + 64];
    int made = mkdir(tmp, 0777) == 0;
    snprintf(sub, sizeof sub, "%s/img", tmp);
    made = made && mkdir(sub, 0777) == 0;
    snprintf(sub, sizeof sub, "%s/thumbs", tmp);
    made = made && mkdir(sub, 0777) == 0;
    snprintf(sub, sizeof sub, "%s/index.html", tmp);
    r.dir = tmp;
    if (!made || !(r.html = fopen(sub, "wb"))) {
        fprintf(stderr, "cnnscope report: cannot create %s: %s\n", made ? sub : tmp,
                strerror(errno));
        goto done;
    }
    add_timing(clock.steps, &clock.n_steps, "load", cli_now() - clock.start);
    fprintf(stderr, "report: %-24s %7.2f s (%d images)\n", "load", cli_now() - clock.start, n);
    if (write_report(&r, &clock, n, ds->n_images) != 0) goto done;
    FILE *html = r.html;
    r.html = NULL;
    if (ferror(html) | fclose(html)) {
        fprintf(stderr, "cnnscope report: %s: write failed\n", sub);
        goto done;
    }
    if (move_into_place(tmp, out) != 0) goto done;

    int64_t correct = 0, counted = 0;
    for (int i = 0; i < r.n; i++)
        if (r.labels[i] >= 0) {
            counted++;
            correct += r.pred[i] == r.labels[i];
        }
    printf("images: %d", r.n);
    if (r.n_skipped) printf(" (%d unreadable, left out)", r.n_skipped);
    printf(", %.1f s\n", cli_now() - clock.start);
    if (counted)
        printf("top-1 accuracy: %.2f %% (%lld / %lld)\n", 100.0 * correct / counted,
               (long long)correct, (long long)counted);
    char *abs = realpath(out, NULL);
    printf("%s/index.html\n", abs ? abs : out);
    free(abs);
    status = EXIT_OK;
done:
    if (r.html) fclose(r.html);
    if (status != EXIT_OK && tmp && remove_tree(tmp) != 0)
        fprintf(stderr, "cnnscope report: warning: cannot remove %s\n", tmp);
    report_free_results(&r);
    free(r.paths);
    free(r.names);
    free(r.labels);
    free(chosen);
    free(tmp);
    free(out);
    cnn_dataset_free(ds);
    cnn_model_free(m);
    return status;
}

int cmd_report(int argc, char **argv) {
    report_args a = {NULL, NULL, "report", 0, 0, 64};
    const cli_option options[] = {
        {"-o", OPT_STRING, &a.out, 0, 0, "DIR  the folder to write (default: report)"},
        {"--images", OPT_INT, &a.images, 1, 1 << 30,
         "N  only N images: a fixed-seed random sample (the same every run) holding every\n"
         "                 class when N allows, in folder order (default: all)"},
        {"--threads", OPT_INT, &a.threads, 1, 1024, "N  worker threads (default: all cores)"},
        {"--batch", OPT_INT, &a.batch, 1, 4096, "N  images per forward pass (default 64)"},
    };
    const cli_command_spec spec = {
        "report", "MODEL DIR [-o DIR] [options]",
        "Writes a folder (index.html, its pictures and data; open index.html in a browser, no\n"
        "network needed) showing what MODEL has learned on the images of DIR: the layers,\n"
        "accuracy and confusion matrix (when DIR is an ImageFolder whose class folders match the\n"
        "model's classes, as for cnnscope eval), first-layer filters, feature maps, top patches,\n"
        "nearest neighbours and PCA / t-SNE / UMAP maps of the features (input of the last linear\n"
        "layer), the most confusing and likely mislabelled images, and explanations. Unreadable\n"
        "images are left out with a warning, and the page says how many. The same inputs give\n"
        "the same files (timings.js aside), whatever --threads. The folder is built under a\n"
        "temporary name and put in place only when complete; an existing -o folder is replaced\n"
        "only if it holds an earlier report. Prints the path of index.html.",
        options, (int)(sizeof options / sizeof options[0]), 2, 2};
    const char *pos[2];
    int n_pos, rc = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (rc != CLI_CONTINUE) return rc;
    a.model_path = pos[0];
    a.dir = pos[1];
    cli_set_threads(a.threads);
    return run_report(&a);
}
