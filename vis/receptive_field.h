// receptive_field.h - which input pixels each output position of each node can see.
//
// Computed from the graph alone (no data), per axis (h and w), for every node:
//
//   size   extent of the field in input pixels (kernel extents accumulated through the layers)
//   jump   distance in input pixels between two neighbouring output positions (the product of
//          the strides so far)
//   first  input coordinate of the top (or left) edge of the field of output position 0; may be
//          negative: the field then reaches into the zero padding
//   start  the centre of that field: first + (size - 1) / 2 (a half-integer when size is even)
//
// Pixel centres are at integer coordinates 0..H-1. The field of output position (y, x) is the
// box of input pixels, inclusive:
//
//   rows    [first_h + y * jump_h,  first_h + y * jump_h + size_h - 1]
//   columns [first_w + x * jump_w,  first_w + x * jump_w + size_w - 1]
//
// (equivalently [start + y*jump - (size-1)/2, start + y*jump + (size-1)/2]). It may extend
// outside the image; vis_rf_box_clipped gives its intersection with [0, H) x [0, W). Every
// input pixel outside the box has no influence on that output; inside it, some may have none
// (dead ReLUs, max-pool choices, dilation gaps, strided 1x1 convs).
//
// Rules, with k the kernel, s the stride, p the padding, d the dilation of a layer and
// ke = d * (k - 1) + 1 its kernel extent:
//   input                    size 1, jump 1, first 0
//   conv2d, maxpool, avgpool size += (ke - 1) * jump; first -= p * jump; jump *= s
//                            (ceil_mode only adds a last position whose window starts inside
//                            the input; the formula for position y is the same)
//   shortcut_a               kernel 1, stride s, padding 0 (x[:, :, ::s, ::s])
//   batchnorm, relu, dropout, softmax: unchanged
//   add                      the union: the smallest box covering the fields of both inputs
//                            (first = min of firsts, last = max of lasts); the inputs must
//                            have the same jump, else the node is global
//   adaptive_avgpool, flatten, linear, and anything after a global node: global, i.e. the
//                            field is the whole input (size H, W; jump 0; first 0)
#ifndef CNNSCOPE_RECEPTIVE_FIELD_H
#define CNNSCOPE_RECEPTIVE_FIELD_H

#include "cnnscope.h"

typedef struct {
    int global;            // 1: every output position sees the whole input
    int size[2];           // [h, w] extent in input pixels
    int jump[2];           // [h, w] input pixels between neighbouring outputs (0 if global)
    int first[2];          // [h, w] top / left edge of output position 0's field
} vis_rf;

// Centre of output position 0's field along axis a (0 = h, 1 = w): first + (size - 1) / 2.
double vis_rf_start(const vis_rf *rf, int axis);

typedef struct {
    int y0, x0;            // top-left input pixel, inclusive (may be negative)
    int y1, x1;            // bottom-right input pixel, inclusive (may be >= H, W)
} vis_box;

// The field of output position (y, x): the whole input [0, H-1] x [0, W-1] if global.
vis_box vis_rf_box(const vis_rf *rf, int y, int x, int in_h, int in_w);
// The same box intersected with the input [0, in_h) x [0, in_w) (never empty for a real
// output position).
vis_box vis_rf_box_clipped(const vis_rf *rf, int y, int x, int in_h, int in_w);

// Fills rf[0..n) for the graph nodes[0..n) (node 0 the input, inputs before their readers,
// as cnn_model_node gives them). CNN_ERR_ARG for a graph it does not understand (an input
// index out of order, a zero stride).
cnn_status vis_receptive_fields_of_nodes(const cnn_node_info *nodes, int n, vis_rf *rf);

// The same for every node of a loaded model: *out is malloc'd [cnn_model_node_count] (free()).
cnn_status vis_receptive_fields(const cnn_model *model, vis_rf **out);

#endif
