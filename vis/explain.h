// explain.h - why the network decided: attribution maps computed with the engine's backward pass
// (cnn_backward), and their pictures.
//
// Methods (the result is per image, at the input's resolution):
//   saliency        |d score / d input|, max over channels (Simonyan et al. 2014)   [H,W]
//   deconvnet       Zeiler & Fergus 2014: switches, rectified backward signal,     [C,H,W]
//                   transposed filters (cnn_backward with CNN_RELU_DECONVNET)
//   guided          guided backpropagation (Springenberg et al. 2015)               [C,H,W]
//   cam             Class Activation Mapping (Zhou et al. 2016): sum_c w[k,c] A_c   [H,W]
//                   for networks ending in global average pooling + linear
//   gradcam         Grad-CAM (Selvaraju et al. 2017): ReLU(sum_c alpha_c A_c),      [H,W]
//                   alpha_c = mean over positions of d score / d A_c
//   guided-gradcam  guided backpropagation times the Grad-CAM map                    [C,H,W]
// CAM and Grad-CAM maps are computed at their layer's resolution and upsampled to the input
// bilinearly (as torch.nn.functional.interpolate(mode="bilinear", align_corners=False)); raw
// results are not normalised (CAM keeps its sign; guided Grad-CAM uses the raw Grad-CAM map).
//
// Usage:
//     cnn_session_options o = cnn_session_defaults();
//     o.keep_all = 1;                                  // the methods read activations
//     cnn_session_create(model, n, &o, &s);
//     cnn_session_run(s, x, n);
//     int score = vis_explain_score_node(model), classes[n] = ...;
//     vis_explain_target target = {score, classes};   // explain logit classes[i] of image i
//     vis_explain(s, VIS_EXPLAIN_GRADCAM, &target, -1 /*default layer*/, maps /*[n,H,W]*/);
//
// Like the engine, these functions never print or exit: they return a cnn_status and set
// cnn_last_error().
#ifndef CNNSCOPE_EXPLAIN_H
#define CNNSCOPE_EXPLAIN_H

#include <stdint.h>

#include "canvas.h"
#include "cnnscope.h"

typedef enum {
    VIS_EXPLAIN_SALIENCY,
    VIS_EXPLAIN_DECONVNET,
    VIS_EXPLAIN_GUIDED,
    VIS_EXPLAIN_CAM,
    VIS_EXPLAIN_GRADCAM,
    VIS_EXPLAIN_GUIDED_GRADCAM,
    VIS_EXPLAIN_COUNT
} vis_explain_method;

// "saliency", "deconvnet", "guided", "cam", "gradcam", "guided-gradcam"; NULL if out of range.
const char *vis_explain_method_name(vis_explain_method method);
// The method called `name`, or CNN_ERR_ARG listing the names.
cnn_status vis_explain_method_parse(const char *name, vis_explain_method *out);
// 1 if the result is a heatmap [N,H,W], 0 if a gradient image [N,C,H,W].
int vis_explain_is_heatmap(vis_explain_method method);
// 1 if the method reads a layer's maps (cam, gradcam, guided-gradcam).
int vis_explain_uses_layer(vis_explain_method method);

// What is explained: one element of one node's output per image, e.g. a class logit, or a
// neuron: element c*h*w + y*w + x of a [c,h,w] layer (vis_explain_neuron).
typedef struct {
    int node;             // the node whose output holds the scores
    const int *index;     // [N] per image: the element of that node's output (one image's)
} vis_explain_target;

// The node of the class scores: the network output, or the input of a final softmax (scores
// are logits, as in all four papers).
int vis_explain_score_node(const cnn_model *model);

// The default Grad-CAM layer, "the last convolutional block": from the first node whose output
// is [N,F], back through flatten, dropout and pooling nodes, the first node that is none of
// them (ResNets: the last block's output; VGG: the last conv's ReLU, before the pool).
// -1 if the model has no such node.
int vis_explain_default_layer(const cnn_model *model);

// The CAM layer: the input of the global average pool that feeds the final linear layer
// (through flatten / dropout), or -1 with an error naming why the model does not qualify.
int vis_explain_cam_layer(const cnn_model *model);

// index[n] for the neuron (channel, y, x) of `node`'s output in each image of the last run;
// y = x = -1 picks the channel's strongest activation in each image (first maximum in row-major
// order). The session must have kept the node's output.
cnn_status vis_explain_neuron(const cnn_session *s, int node, int channel, int y, int x,
                              int *index);

// Runs `method` on the session's last run. `layer`: the CAM / Grad-CAM layer (-1: the default;
// must be -1 for the other methods). `out`: [N,H,W] for heatmaps, [N,C,H,W] for gradient
// images, with N, C, H, W those of the input. The session must keep every activation
// (keep_all = 1). CAM only explains class scores at the score node.
cnn_status vis_explain(const cnn_session *s, vis_explain_method method,
                       const vis_explain_target *target, int layer, float *out);

// Bilinear resize of each of `planes` [h,w] planes to [H,W], as torch's interpolate(bilinear,
// align_corners=False). out: [planes,H,W].
void vis_resize_bilinear(float *out, const float *inp, int planes, int h, int w, int H, int W);

// Display helpers. pixels: [H,W,C] 8-bit (C = 1 or 3). rgb outputs: [H,W,3].
// A heatmap [H,W] normalised to [0,1] (min to max) through viridis, blended over the image:
// rgb = (1 - alpha) * image + alpha * colour. alpha = 1 gives the colours alone.
void vis_explain_heatmap_rgb(uint8_t *rgb, const float *heatmap, const uint8_t *pixels, int C,
                             int H, int W, float alpha);
// A gradient image [C,H,W] shown normalised: 0.5 + 0.5 * g / s clipped to [0,1], with s the
// 99th percentile of |g| over the image (grey = 0); C = 1 gives grey levels.
void vis_explain_gradient_rgb(uint8_t *rgb, const float *gradient, int C, int H, int W);

// DeconvNet projections of one neuron per image (Zeiler & Fergus's figures; the companion grid
// of "maximally activating patches"): for each image n of the session's last run (kept with
// keep_all = 1), the activation at element index[n] of `node`'s output (see
// vis_explain_neuron; positions may differ between images) projected back to the input with
// DeconvNet. out: [N,C,H,W] raw projections; crop a patch's receptive field from them and show
// it with vis_explain_gradient_rgb, which normalises over what it is given.
cnn_status vis_explain_projections(const cnn_session *s, int node, const int *index, float *out);
// One tile of that grid: crops box (inclusive input coordinates, which may extend outside the
// image, as vis_patch_crop in top_patches.h) from one image's projection [C,H,W] and renders
// it normalised over the crop (vis_explain_gradient_rgb) into tile [y1-y0+1, x1-x0+1, 3];
// outside the image the projection is 0 (grey).
cnn_status vis_explain_projection_tile(uint8_t *tile, const float *projection, int C, int H,
                                       int W, int y0, int x0, int y1, int x1);

// The figure for one image: [input | heatmap | heatmap over the input] or
// [input | gradient image], each panel scaled up (nearest neighbour) to at least 224 pixels
// on its longer side. `result` is one image's [H,W] or [C,H,W] result.
cnn_status vis_explain_figure(vis_canvas *out, vis_explain_method method, const float *result,
                              const uint8_t *pixels, int C, int H, int W, float alpha);

#endif
