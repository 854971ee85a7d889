// model.h - the in-memory model: what engine/model_file.c builds from a validated file and
// what the runtime (engine/session.c) executes. Internal to the engine; vis/ and cli/ use
// cnnscope.h only.
//
// Dims legend: N batch, C input channels, H,W input height/width, K output channels,
// R,S kernel height/width, OH,OW output height/width, F features.
#ifndef CNNSCOPE_MODEL_H
#define CNNSCOPE_MODEL_H

#include "cnnscope.h"

typedef struct {
    const float *weight;   // [K, C/groups, R, S]
    const float *bias;     // [K] or NULL
} cnn_conv2d_params;

typedef struct {
    const float *gamma;    // [C] (torch: weight)
    const float *beta;     // [C] (torch: bias)
    const float *mean;     // [C] running_mean
    const float *var;      // [C] running_var
    float eps;
} cnn_batchnorm_params;

typedef struct {
    const float *weight;   // [OUT, IN]
    const float *bias;     // [OUT] or NULL
} cnn_linear_params;

typedef struct {
    int out_h, out_w;      // adaptive_avgpool output size
} cnn_adaptive_params;

typedef struct {
    int stride;            // spatial subsampling x[:, :, ::stride, ::stride]
    int pad_before;        // zero channels added before the input's channels
    int pad_after;         // ... and after
} cnn_shortcut_params;

typedef struct {
    char *name;            // unique; torchvision module path
    cnn_op op;
    int n_inputs;          // 0..2
    int inputs[2];         // indices of earlier nodes
    int ndim;              // 4 ([N,C,H,W]) or 2 ([N,F], stored as [N,F,1,1])
    int c, h, w;           // output shape for one image
    cnn_window window;     // conv2d, maxpool, avgpool
    union {
        cnn_conv2d_params conv;
        cnn_batchnorm_params bn;
        cnn_linear_params linear;
        cnn_adaptive_params adaptive;
        cnn_shortcut_params shortcut;
    } p;
    int64_t params;        // learned parameters
    int64_t macs;          // multiply-accumulates for one image
} cnn_node;

typedef struct {
    char *name;            // "features.0.weight"
    int ndim;              // 1..4
    int64_t dims[4];
    const float *data;     // inside the mapping
} cnn_stored_tensor;

struct cnn_model {
    char *path;
    void *map;             // the whole file, mmap'd read-only
    size_t map_size;
    cnn_model_info info;   // strings point into `strings` below or into nodes
    char *name, *arch;     // owned copies of the meta strings
    char **class_names;    // [info.num_classes], owned
    int n_nodes;
    cnn_node *nodes;       // [n_nodes], nodes[0] is the input
    int n_tensors;
    cnn_stored_tensor *tensors;  // [n_tensors]
    char *warnings;        // cnn_model_warnings(): NULL or lines joined by '\n', owned
    char *prepared_layout; // meta 'prepared' (prepared.h), owned, or NULL
    const uint8_t *file;   // the whole validated file (the mapping, or the caller's bytes)
    size_t file_size;
};

// The stored tensor called `name`, or NULL (no error set: for lookups that may miss).
const cnn_stored_tensor *cnn_model_find_tensor(const cnn_model *model, const char *name);

// Drops this process's mapping of the whole pages of [p, p + bytes) that lie inside the model's
// file mapping (madvise MADV_DONTNEED): they still read as the file's bytes (faulted in again
// from the page cache on access) but stop counting in the process's resident memory. For data
// the caller has copied. Does nothing for a model loaded from memory (cnn_model_load_memory).
void cnn_model_release_pages(const cnn_model *m, const void *p, size_t bytes);

#endif
