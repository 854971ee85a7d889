// vis_features.h - the representation space: one feature row per image at a chosen layer, and the
// (Not "features.h": that name is glibc's <features.h>, which -Ivis would shadow.)
// feature table on disk that the other representation tools read.
//
// A feature table is three files side by side:
//     feats.npy          float32 [N, F], one row per image
//     feats.paths.txt    N lines: the image path each row came from
//     feats.labels.txt   N lines: "<class index> <class name>" (ImageFolder order), or "-1"
// The two text files are optional for readers (features computed elsewhere work too).
#ifndef CNNSCOPE_VIS_FEATURES_H
#define CNNSCOPE_VIS_FEATURES_H

#include <stdint.h>

#include "cnnscope.h"

typedef enum {
    VIS_POOL_AVG,    // [C,H,W] -> [C]: mean over H and W (global average pooling)
    VIS_POOL_MAX,    // [C,H,W] -> [C]: max over H and W
    VIS_POOL_NONE,   // [C,H,W] -> [C*H*W]: flattened in C order
} vis_pool;

// Called after each batch with the images done so far; vis never prints itself.
typedef void (*vis_progress_fn)(void *user, long done, long total);

typedef struct {
    int node;                  // the layer (graph node index) whose output is the feature
    vis_pool pool;             // how a 4-D output [C,H,W] becomes one row (ignored for [F])
    int batch;                 // images per forward pass (>= 1)
    int threads;               // session threads (0 = default)
    vis_progress_fn progress;  // optional
    void *progress_user;
} vis_features_options;

// Length F of one feature row for `node` under `pool`.
int64_t vis_features_dim(const cnn_model *model, int node, vis_pool pool);

// Runs the model on n images (decoded and preprocessed as the model says) up to `node` and
// writes their features to out [n, F] (F = vis_features_dim).
cnn_status vis_features_extract(const cnn_model *model, const char *const *paths, int n,
                                const vis_features_options *opt, float *out);

// Pools one image's activation x [C, HW] into row (see vis_pool).
void vis_features_pool(const float *x, int c, int hw, vis_pool pool, float *row);

// A feature table in memory.
typedef struct {
    int n, dim;
    float *x;              // [n, dim]
    char **paths;          // [n], or NULL when there is no paths file
    int *labels;           // [n] class index or -1, or NULL when there is no labels file
    int n_classes;         // 1 + the largest label (0 without labels)
    char **class_names;    // [n_classes] ("class K" for an index no line named)
} vis_feature_set;

// Reads feats.npy ([N, F], or [N, C, H, W] flattened per row) and its side files if present.
// A side file with the wrong number of lines is an error.
cnn_status vis_feature_set_load(const char *npy_path, vis_feature_set *out);
// Writes the .npy and the side files that fs holds (paths and/or labels), each atomically.
cnn_status vis_feature_set_write(const char *npy_path, const vis_feature_set *fs);
void vis_feature_set_free(vis_feature_set *fs);

// "dir/feats.npy" + ".paths.txt" -> "dir/feats.paths.txt" (a trailing ".npy" is dropped).
// malloc'd; NULL when out of memory.
char *vis_side_path(const char *npy_path, const char *suffix);

#endif
