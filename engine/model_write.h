// model_write.h - a loaded model written back as a model file, with changes (model_write.c).
// Internal to the engine.
#ifndef CNNSCOPE_MODEL_WRITE_H
#define CNNSCOPE_MODEL_WRITE_H

#include <stddef.h>

#include "cnnscope.h"

typedef struct {
    const char *name;
    const float *data;
    size_t floats;          // a 1-D float32 tensor of this many elements
} model_write_tensor;

typedef struct {
    const char *meta_key;        // set (or replaced) in the meta dict, as a string
    const char *meta_value;
    const char *drop_prefix;     // tensors whose names start with this are left out (or NULL)
    const model_write_tensor *tensors;   // added after the kept ones
    int n_tensors;
} model_write_changes;

// Writes `path` (atomically): model m's file with `changes`. The graph is unchanged, so the
// result loads as m did, with the new tensors and key beside.
cnn_status model_write_changed(const cnn_model *m, const char *path,
                               const model_write_changes *changes);

#endif
