// select.h - what the vis commands are asked to show: a layer by name, a set of channels.
#ifndef CNNSCOPE_SELECT_H
#define CNNSCOPE_SELECT_H

#include "cnnscope.h"

// Parses `text` against channels 0..count-1: "all", or a comma-separated list of single
// indices ("5") and inclusive ranges ("0-15"), in any order; duplicates are dropped, the order
// of first appearance is kept. On success *out is malloc'd (free()) and *n its length (>= 1).
// `what` names the option in the error message ("--channels").
cnn_status vis_channel_range_parse(const char *text, int count, const char *what, int **out,
                                   int *n);

// The node called `name`; or, if there is none, the last node (in graph order) whose name
// starts with `name` + "." - the output of a torchvision container such as "layer3" (its last
// block, layer3.8) or "features" (AlexNet's features.12). -1 with cnn_model_find_node's error
// (naming the closest names) if neither exists.
int vis_find_layer(const cnn_model *model, const char *name);

// The default layer of the vis commands: the last node whose output has spatial extent
// (ndim 4, larger than 1x1), e.g. layer3.2 of a CIFAR ResNet-20; the last node if none has.
int vis_default_layer(const cnn_model *model);

#endif
