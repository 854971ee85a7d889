// image_walk.c - streams the images of a folder tree in cnn_dataset_open's order.
//
// A stack of frames, one per folder on the current path, each holding that folder's sorted
// entry names and the position reached in them.
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "image_walk.h"

#define MAX_DEPTH 32   // as cnn_dataset_open: refuse deeper nesting (symlink loops)

typedef struct {
    char *relative;        // the folder relative to the root ("" for the root)
    char **names;          // [count] sorted entry names
    int count, next;
    int folders_only;      // the root of an ImageFolder: its files are not images of it
} frame;

struct vis_image_walk {
    char *root;
    frame stack[MAX_DEPTH + 2];
    int depth;             // frames in use
    char *path, *relative; // the last image returned
};

static int compare_names(const void *a, const void *b) {
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

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
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

static void frame_free(frame *f) {
    for (int i = 0; i < f->count; i++) free(f->names[i]);
    free(f->names);
    free(f->relative);
    memset(f, 0, sizeof *f);
}

// Pushes a frame for the folder root/relative (takes ownership of `relative`).
static cnn_status push_folder(vis_image_walk *w, char *relative) {
    if (w->depth > MAX_DEPTH) {
        cnn_status st = cnn_fail(CNN_ERR_ARG, "%s: folders nested deeper than %d levels at '%s'",
                                 w->root, MAX_DEPTH, relative);
        free(relative);
        return st;
    }
    char *dir = relative[0] ? join(w->root, relative) : strdup(w->root);
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) {
        cnn_status st = dir ? cnn_fail(CNN_ERR_IO, "%s: cannot open folder: %s", dir,
                                       strerror(errno))
                            : cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", w->root);
        free(dir);
        free(relative);
        return st;
    }
    frame *f = &w->stack[w->depth];
    memset(f, 0, sizeof *f);
    f->relative = relative;
    int capacity = 0;
    struct dirent *e;
    cnn_status st = CNN_OK;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;   // ".", "..", hidden files
        if (f->count == capacity) {
            capacity = capacity ? 2 * capacity : 64;
            char **p = realloc(f->names, sizeof(char *) * (size_t)capacity);
            if (!p) {
                st = cnn_fail(CNN_ERR_NOMEM, "%s: out of memory listing the folder", dir);
                break;
            }
            f->names = p;
        }
        if (!(f->names[f->count] = strdup(e->d_name))) {
            st = cnn_fail(CNN_ERR_NOMEM, "%s: out of memory listing the folder", dir);
            break;
        }
        f->count++;
    }
    closedir(d);
    free(dir);
    if (st != CNN_OK) {
        frame_free(f);
        return st;
    }
    if (f->count > 1) qsort(f->names, (size_t)f->count, sizeof(char *), compare_names);
    w->depth++;
    return CNN_OK;
}

void vis_image_walk_close(vis_image_walk *w) {
    if (!w) return;
    while (w->depth > 0) frame_free(&w->stack[--w->depth]);
    free(w->root);
    free(w->path);
    free(w->relative);
    free(w);
}

cnn_status vis_image_walk_open(const char *dir, vis_image_walk **out) {
    if (!is_dir(dir)) return cnn_fail(CNN_ERR_IO, "%s: not a folder (or it does not exist)", dir);
    vis_image_walk *w = calloc(1, sizeof *w);
    char *rel = strdup("");
    if (!w || !rel || !(w->root = strdup(dir))) {
        free(w);
        free(rel);
        return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", dir);
    }
    cnn_status st = push_folder(w, rel);
    if (st != CNN_OK) {
        vis_image_walk_close(w);
        return st;
    }
    // An ImageFolder (the root has sub-folders): only what is inside them counts.
    frame *root = &w->stack[0];
    for (int i = 0; i < root->count && !root->folders_only; i++) {
        char *full = join(w->root, root->names[i]);
        root->folders_only = full && is_dir(full);
        free(full);
    }
    *out = w;
    return CNN_OK;
}

int vis_image_walk_next(vis_image_walk *w, const char **path, const char **relative) {
    while (w->depth > 0) {
        frame *f = &w->stack[w->depth - 1];
        if (f->next >= f->count) {
            frame_free(f);
            w->depth--;
            continue;
        }
        const char *name = f->names[f->next++];
        char *rel = f->relative[0] ? join(f->relative, name) : strdup(name);
        char *full = rel ? join(w->root, rel) : NULL;
        if (!rel || !full) {
            free(rel);
            free(full);
            cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", w->root);
            return -1;
        }
        if (is_dir(full)) {
            free(full);
            if (push_folder(w, rel) != CNN_OK) return -1;   // push_folder owns rel
            continue;
        }
        if (f->folders_only || !is_image_name(name)) {
            free(rel);
            free(full);
            continue;
        }
        free(w->path);
        free(w->relative);
        w->path = full;
        w->relative = rel;
        *path = full;
        *relative = rel;
        return 1;
    }
    return 0;
}
