// window.c - output size of a sliding window (conv2d, maxpool, avgpool) along one axis.
//
// PyTorch's rule (aten/src/ATen/native/Pool.h, pooling_output_shape, and the conv shape rule):
//     span = dilation * (kernel - 1) + 1                    the extent of one window
//     out  = floor((in + 2*pad - span) / stride) + 1        ceil instead of floor in ceil_mode
// and in ceil_mode the extra last window is dropped if it would start in the right padding:
//     if ((out - 1) * stride >= in + pad) out--
#include <stdint.h>

#include "ops.h"

// Returns the output size, or 0 when not even one window fits or an argument is out of range
// (the caller reports it). The arithmetic is 64-bit, so d*(k-1) and in+2*pad cannot overflow;
// a result above INT32_MAX (only with absurd padding, which the model loader refuses long
// before) saturates.
int window_out_size(int in, int kernel, int stride, int pad, int dilation, int ceil_mode) {
    if (in < 1 || kernel < 1 || stride < 1 || pad < 0 || dilation < 1) return 0;
    int64_t span = (int64_t)dilation * (kernel - 1) + 1;
    int64_t room = (int64_t)in + 2 * (int64_t)pad - span;   // how far the window can slide
    if (room < 0) return 0;
    int64_t out = (ceil_mode ? (room + stride - 1) / stride : room / stride) + 1;
    if (ceil_mode && (out - 1) * stride >= (int64_t)in + pad) out--;
    return out > INT32_MAX ? INT32_MAX : (int)out;
}
