// shortcut.c - the "option A" shortcut of the CIFAR ResNets (He et al. 2016, section 4.2):
// where a block halves the resolution and widens the channels, the identity path takes every
// stride-th pixel and pads the channels with zeros on both sides.
//
// Dims: N batch, C channels in, H,W input size, OH = ceil(H/stride), OW = ceil(W/stride),
// KO = pad_before + C + pad_after channels out.
//   out[n, pad_before + c, y, x] = inp[n, c, y*stride, x*stride]; other channels are 0.
#include <string.h>
#include "ops.h"

void shortcut_a_forward_ref(float *out, const float *inp, int N, int C, int H, int W, int stride,
                            int pad_before, int pad_after) {
    // out is (N,KO,OH,OW), inp is (N,C,H,W)
    int OH = (H + stride - 1) / stride, OW = (W + stride - 1) / stride;
    int KO = pad_before + C + pad_after;
    size_t plane = (size_t)OH * OW;
    for (int n = 0; n < N; n++) {
        float *out_n = out + (size_t)n * KO * plane;
        memset(out_n, 0, (size_t)pad_before * plane * sizeof(float));
        memset(out_n + (size_t)(pad_before + C) * plane, 0,
               (size_t)pad_after * plane * sizeof(float));
        for (int c = 0; c < C; c++) {
            const float *in_c = inp + ((size_t)n * C + c) * H * W;
            float *out_c = out_n + (size_t)(pad_before + c) * plane;
            for (int y = 0; y < OH; y++) {
                for (int x = 0; x < OW; x++) {
                    out_c[(size_t)y * OW + x] = in_c[(size_t)y * stride * W + (size_t)x * stride];
                }
            }
        }
    }
}

// Backward: each subsampled pixel gets its gradient back; pixels the stride skipped and the
// padded channels get nothing.
void shortcut_a_backward_ref(float *dinp, const float *dout, int N, int C, int H, int W,
                             int stride, int pad_before, int pad_after) {
    // dinp is (N,C,H,W), dout is (N,KO,OH,OW); dinp accumulates
    int OH = (H + stride - 1) / stride, OW = (W + stride - 1) / stride;
    int KO = pad_before + C + pad_after;
    size_t plane = (size_t)OH * OW;
    for (int n = 0; n < N; n++) {
        for (int c = 0; c < C; c++) {
            float *din_c = dinp + ((size_t)n * C + c) * H * W;
            const float *dout_c = dout + ((size_t)n * KO + pad_before + c) * plane;
            for (int y = 0; y < OH; y++) {
                for (int x = 0; x < OW; x++) {
                    din_c[(size_t)y * stride * W + (size_t)x * stride] += dout_c[(size_t)y * OW + x];
                }
            }
        }
    }
}
