// resize.h - 8-bit image resampling that reproduces Pillow's Image.resize(size, BILINEAR)
// bit for bit (Pillow's ImagingResample, as used by torchvision's Resize on PIL images).
// Internal to the engine.
//
// Dims legend: H,W input height/width, C channels (1 or 3; any count works), OH,OW the full
// resized size, WH,WW the window of the resized image that is actually computed.
//
// What Pillow does, and what this file reproduces:
// - separable: a horizontal pass (only over the input rows the vertical pass will read), its
//   result rounded and clipped to 8 bits, then a vertical pass; a pass whose size does not
//   change is skipped;
// - per output index i along an axis: scale = in/out, filterscale = max(scale, 1),
//   support = 1 * filterscale, center = (i + 0.5) * scale, inputs
//   [int(center - support + 0.5), int(center + support + 0.5)) clamped to [0, in), weights
//   triangle((j - center + 0.5) / filterscale) divided by their sum, then converted to fixed
//   point with 22 fraction bits (rounded half away from zero);
// - each output = clip8((2^21 + sum in[j] * w[j]) >> 22).
// Every output pixel depends only on its own row and column coefficients, so computing a
// window of the resized image gives exactly the same values as resizing everything and then
// cropping; this is what makes Resize + CenterCrop cheap on large photos.
#ifndef CNNSCOPE_RESIZE_H
#define CNNSCOPE_RESIZE_H

#include <stdint.h>
#include "cnnscope.h"

// out [WH, WW, C] = rows [y0, y0+WH) and columns [x0, x0+WW) of in [H, W, C] resized to
// [OH, OW] with Pillow's antialiased bilinear filter. Requires 0 <= y0, y0 + WH <= OH,
// 0 <= x0, x0 + WW <= OW, all sizes >= 1. Returns CNN_ERR_NOMEM or CNN_ERR_ARG (with a message)
// on failure.
cnn_status cnn_resize_bilinear_u8(uint8_t *out, const uint8_t *in, int H, int W, int C,
                                  int OH, int OW, int y0, int x0, int WH, int WW);

#endif
