// dataset.c - lists the images of a folder, as torchvision's ImageFolder does (see cnnscope.h).
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cnnscope.h"

#define MAX_DEPTH 32   // refuse deeper nesting (symlink loops, hostile trees)

typedef struct {
    char **items;
    int count, capacity;
} string_list;

static int list_push(string_list *l, char *s) {
    if (l->count == l->capacity) {
        int cap = l->capacity ? l->capacity * 2 : 64;
        char **p = realloc(l->items, sizeof(char *) * (size_t)cap);
        if (!p) return -1;
        l->items = p;
        l->capacity = cap;
    }
    l->items[l->count++] = s;
    return 0;
}

static void list_free(string_list *l) {
    for (int i = 0; i < l->count; i++) free(l->items[i]);
    free(l->items);
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (!s) return NULL;
    memcpy(s, a, la);
    size_t k = la;
    if (la > 0 && a[la - 1] != '/') s[k++] = '/';
    memcpy(s + k, b, lb + 1);
    return s;
}

static int is_image_name(const char *name) {
    static const char *const extensions[] = {"jpg", "jpeg", "png", "bmp", "gif", "tga",
                                             "psd", "pnm", "ppm", "pgm", "hdr"};
    const char *dot = strrchr(name, '.');
    if (!dot || name[0] == '.') return 0;
    for (size_t i = 0; i < sizeof extensions / sizeof extensions[0]; i++) {
        const char *e = extensions[i];
        size_t k = 0;
        while (e[k] && dot[1 + k] && tolower((unsigned char)dot[1 + k]) == e[k]) k++;
        if (!e[k] && !dot[1 + k]) return 1;
    }
    return 0;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

// Appends to `out` the image paths under root/rel (relative to root), recursively.
static cnn_status walk(const char *root, const char *rel, int depth, string_list *out) {
    if (depth > MAX_DEPTH)
        return cnn_fail(CNN_ERR_ARG, "%s: folders nested deeper than %d levels at '%s'", root,
                        MAX_DEPTH, rel);
    char *dir_path = rel[0] ? join(root, rel) : strdup(root);
    if (!dir_path) return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory listing images", root);
    DIR *d = opendir(dir_path);
    if (!d) {
        cnn_status st = cnn_fail(CNN_ERR_IO, "%s: cannot open folder: %s", dir_path,
                                 strerror(errno));
        free(dir_path);
        return st;
    }
    string_list names = {0};
    struct dirent *e;
    cnn_status st = CNN_OK;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;   // ".", "..", hidden files
        char *name = strdup(e->d_name);
        if (!name || list_push(&names, name) != 0) {
            free(name);
            st = cnn_fail(CNN_ERR_NOMEM, "%s: out of memory listing images", root);
            break;
        }
    }
    closedir(d);
    if (names.count > 0) qsort(names.items, (size_t)names.count, sizeof(char *), compare_strings);
    for (int i = 0; st == CNN_OK && i < names.count; i++) {
        char *child_rel = rel[0] ? join(rel, names.items[i]) : strdup(names.items[i]);
        char *child = child_rel ? join(root, child_rel) : NULL;
        if (!child_rel || !child) {
            st = cnn_fail(CNN_ERR_NOMEM, "%s: out of memory listing images", root);
        } else if (is_dir(child)) {
            st = walk(root, child_rel, depth + 1, out);
        } else if (is_image_name(names.items[i])) {
            if (list_push(out, child_rel) == 0) child_rel = NULL;
            else st = cnn_fail(CNN_ERR_NOMEM, "%s: out of memory listing images", root);
        }
        free(child_rel);
        free(child);
    }
    list_free(&names);
    free(dir_path);
    return st;
}

void cnn_dataset_free(cnn_dataset *d) {
    if (!d) return;
    for (int i = 0; i < d->n_images; i++) {
        if (d->paths) free(d->paths[i]);
        if (d->relative) free(d->relative[i]);
    }
    for (int i = 0; i < d->n_classes; i++) free(d->class_names[i]);
    free(d->paths);
    free(d->relative);
    free(d->labels);
    free(d->class_names);
    free(d->root);
    free(d);
}

cnn_status cnn_dataset_open(const char *dir, cnn_dataset **out) {
    if (!is_dir(dir)) return cnn_fail(CNN_ERR_IO, "%s: not a folder (or it does not exist)", dir);
    // Classes: the sorted sub-folders, if any.
    string_list classes = {0}, images = {0};
    cnn_status st = CNN_OK;
    DIR *d = opendir(dir);
    if (!d) return cnn_fail(CNN_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char *full = join(dir, e->d_name);
        int sub = full && is_dir(full);
        free(full);
        char *name = sub ? strdup(e->d_name) : NULL;
        if (sub && (!name || list_push(&classes, name) != 0)) {
            free(name);
            st = cnn_fail(CNN_ERR_NOMEM, "%s: out of memory listing classes", dir);
            break;
        }
    }
    closedir(d);
    if (classes.count > 0) qsort(classes.items, (size_t)classes.count, sizeof(char *), compare_strings);

    int *class_start = calloc((size_t)classes.count + 1, sizeof(int));
    if (st == CNN_OK && !class_start) st = cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", dir);
    if (st == CNN_OK) {
        if (classes.count == 0) {
            st = walk(dir, "", 0, &images);
        } else {
            for (int c = 0; st == CNN_OK && c < classes.count; c++) {
                class_start[c] = images.count;
                st = walk(dir, classes.items[c], 1, &images);
            }
            class_start[classes.count] = images.count;
        }
    }
    if (st == CNN_OK && images.count == 0)
        st = cnn_fail(CNN_ERR_ARG, "%s: no images found (looked for .jpg .png .bmp ... %s)", dir,
                      classes.count ? "inside its class folders" : "in it and below");

    cnn_dataset *ds = NULL;
    if (st == CNN_OK) {
        ds = calloc(1, sizeof *ds);
        if (ds) {
            ds->root = strdup(dir);
            ds->paths = calloc((size_t)images.count, sizeof(char *));
            ds->labels = malloc(sizeof(int) * (size_t)images.count);
        }
        if (!ds || !ds->root || !ds->paths || !ds->labels) {
            st = cnn_fail(CNN_ERR_NOMEM, "%s: out of memory listing %d images", dir, images.count);
        } else {
            ds->n_images = images.count;
            ds->relative = images.items;   // ownership moves to the dataset
            images.items = NULL;
            images.count = 0;
            ds->n_classes = classes.count;
            ds->class_names = classes.items;
            classes.items = NULL;
            classes.count = 0;
            int c = 0;
            for (int i = 0; i < ds->n_images; i++) {
                while (ds->n_classes && i >= class_start[c + 1]) c++;
                ds->labels[i] = ds->n_classes ? c : -1;
                ds->paths[i] = join(dir, ds->relative[i]);
                if (!ds->paths[i]) {
                    st = cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", dir);
                    break;
                }
            }
        }
        if (st != CNN_OK) {
            cnn_dataset_free(ds);
            ds = NULL;
        }
    }
    free(class_start);
    list_free(&classes);
    list_free(&images);
    if (st != CNN_OK) return st;
    *out = ds;
    return CNN_OK;
}
