// report.c - helpers the sections of `cnnscope report` share (see report.h): HTML escaping,
// file names inside the report folder, PNG output, number formats, progress, sample images.
#include "report.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void report_html_text(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

char *report_file(const report *r, const char *relative) {
    size_t size = strlen(r->dir) + 1 + strlen(relative) + 1;
    char *path = malloc(size);
    if (!path) {
        cnn_fail(CNN_ERR_NOMEM, "%s: out of memory for a file name", r->dir);
        return NULL;
    }
    snprintf(path, size, "%s/%s", r->dir, relative);
    return path;
}

// Creates the folder part of r->dir/relative ("img/x.png" -> r->dir/img), one level deep:
// sections write into img/ and thumbs/ only.
static cnn_status make_parent(const report *r, const char *relative) {
    const char *slash = strrchr(relative, '/');
    if (!slash) return CNN_OK;
    char sub[256];
    int len = (int)(slash - relative);
    if (len >= (int)sizeof sub) return cnn_fail(CNN_ERR_ARG, "%s: folder name too long", relative);
    memcpy(sub, relative, (size_t)len);
    sub[len] = '\0';
    char *dir = report_file(r, sub);
    if (!dir) return CNN_ERR_NOMEM;
    cnn_status st = CNN_OK;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        st = cnn_fail(CNN_ERR_IO, "%s: cannot create folder: %s", dir, strerror(errno));
    free(dir);
    return st;
}

cnn_status report_png(const report *r, const char *relative, const vis_canvas *c) {
    cnn_status st = make_parent(r, relative);
    if (st != CNN_OK) return st;
    char *path = report_file(r, relative);
    if (!path) return CNN_ERR_NOMEM;
    st = vis_png_write(path, c);
    free(path);
    return st;
}

void report_js_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

void report_count(FILE *f, int64_t v) {
    if (v < 0) {
        fputc('-', f);
        v = -v;
    }
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%lld", (long long)v);
    for (int i = 0; i < len; i++) {
        if (i > 0 && (len - i) % 3 == 0) fputc(',', f);
        fputc(digits[i], f);
    }
}

const char *report_basename(const char *path, char *buf, size_t size) {
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;   // "dir/" names "dir"
    size_t start = len;
    while (start > 0 && path[start - 1] != '/') start--;
    if (start == len) start = 0;                      // "/" stays "/"
    snprintf(buf, size, "%.*s", (int)(len - start), path + start);
    return buf;
}

int report_thumb_size(const report *r, int *scale) {
    const cnn_model_info *info = cnn_model_get_info(r->model);
    int side = info->height < info->width ? info->height : info->width;
    if (side > 64) side = 64;
    if (side < 1) side = 1;
    if (scale) *scale = (64 + side - 1) / side;
    return side;
}

void report_progress(const report *r, const char *label, long done, long total) {
    if (r->progress) r->progress(r->progress_user, label, done, total);
}

int report_samples(const report *r, int correct, int max, int *out) {
    if (max <= 0 || r->n == 0) return 0;
    if (r->n_classes == 0) {   // unlabelled: evenly spaced (correctness is unknown)
        int count = max < r->n ? max : r->n;
        for (int i = 0; i < count; i++) out[i] = (int)((long)i * r->n / count);
        return count;
    }
    // Each round takes the next qualifying image of each class, classes in order.
    int count = 0;
    int *taken = calloc((size_t)r->n_classes, sizeof *taken);   // per class, used so far
    if (!taken) return 0;
    while (count < max) {
        int added = 0;
        for (int c = 0; c < r->n_classes && count < max; c++) {
            int seen = 0;
            for (int i = 0; i < r->n; i++) {
                if (r->labels[i] != c || (r->pred[i] == c) != (correct != 0)) continue;
                if (seen++ == taken[c]) {
                    out[count++] = i;
                    taken[c]++;
                    added++;
                    break;
                }
            }
        }
        if (!added) break;   // every class exhausted
    }
    free(taken);
    return count;
}

const char *report_class_name(const report *r, int c) {
    const cnn_model_info *info = cnn_model_get_info(r->model);
    if (c >= 0 && c < info->num_classes && info->class_names && info->class_names[c])
        return info->class_names[c];
    if (c >= 0 && c < r->n_classes) return r->class_names[c];
    return "?";
}
