// ops.h - the forward kernels of every op, as llm.c writes them: outputs first, then inputs,
// then parameters, then dims. Forward functions overwrite their output.
//
// Every op has a plain `_ref` implementation that reads like the formula and stays forever as
// the ground truth; where a faster version exists it sits beside it in the same file (or in an
// ISA-specific file), is tested against the `_ref`, and `reference = 1` forces the `_ref`.
//
// Dims legend: N batch, C channels in, H,W input size, K channels out, R,S kernel size,
// OH,OW output size, F features. All tensors NCHW float32 contiguous.
#ifndef CNNSCOPE_OPS_H
#define CNNSCOPE_OPS_H

#include <stddef.h>
#include "cnnscope.h"

// For the loops gcc vectorises that are not kernels of their own (im2col's strided gathers,
// max pooling): the function is compiled once for each x86-64 vector ISA and the CPU's best
// is picked when the program loads (an ifunc), instead of the baseline's 4-wide SSE2 (the
// ResNets' stem conv, before it had a direct path, 13 % faster on an AVX-512 Xeon). They only
// move and compare floats, so every copy gives the same result. Not under clang (its
// sanitized builds) or elsewhere.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CNN_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CNN_VECTOR_CLONES
#endif

// Output size of a sliding window along one axis, as PyTorch computes it (ceil_mode included:
// the last window must start inside the input or the left padding).
int window_out_size(int in, int kernel, int stride, int pad, int dilation, int ceil_mode);

// conv2d: out [N,K,OH,OW], inp [N,C,H,W], weight [K,C/groups,R,S], bias [K] or NULL.
// win: kernel = {R,S}, stride, padding, dilation, groups.
void conv2d_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                        int N, int C, int H, int W, int K, int OH, int OW, const cnn_window *win);
// The fast path (conv2d.c): image by image, im2col into `workspace` + the blocked sgemm of
// gemm.h, parallel over tiles of (output channels x output positions); 1x1 stride-1 unpadded
// convs skip im2col and depthwise convs (groups > 1, C/groups = 1) run direct, parallel over
// output planes. Bit-identical for any thread count. `workspace` holds
// conv2d_workspace_floats(...) floats; when that is 0 it is not touched and may be NULL.
size_t conv2d_workspace_floats(int C, int H, int W, int OH, int OW, const cnn_window *win);
void conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int H, int W, int K, int OH, int OW, const cnn_window *win,
                    float *workspace);
// conv2d_forward with a fused epilogue: out = conv + residual (if not NULL, [N,K,OH,OW]), then
// max(out, 0) if relu; the same numbers as separate add_forward_ref and relu_forward_ref
// passes, without reading and writing the output again. out must not overlap residual.
// packed: the weights as [K, C*R*S] packed by sgemm_pack_a (gemm.h), or NULL (groups = 1 only;
// the same numbers, without packing them again on every call); weight may then be NULL, as
// long as the kernel table is still the one they were packed for.
struct sgemm_packed_a;
void conv2d_forward_fused(float *out, const float *inp, const float *weight,
                          const struct sgemm_packed_a *packed, const float *bias, int N, int C,
                          int H, int W, int K, int OH, int OW, const cnn_window *win,
                          const float *residual, int relu, float *workspace);

// 1 if a conv of this shape is worth running as Winograd F(4x4,3x3) (ops/winograd.h): 3x3,
// stride 1, no dilation, no groups, padding <= 2, >= 32 channels in and out, >= 16 4x4 tiles
// per image.
int conv2d_winograd_suits(int C, int K, int OH, int OW, const cnn_window *win);

// batchnorm (inference): out = (inp - mean) / sqrt(var + eps) * gamma + beta, per channel.
// out, inp [N,C,H,W] (HW = H*W); may be the same buffer.
void batchnorm_forward_ref(float *out, const float *inp, const float *gamma, const float *beta,
                           const float *mean, const float *var, float eps, int N, int C, int HW);

// Folds a batch norm into the conv before it: writes weight' [K,C/g,R,S] and bias' [K] such
// that conv(x, weight', bias') == bn(conv(x, weight, bias)). `weight_elems_per_k` = C/g*R*S.
void batchnorm_fold_into_conv(float *weight_out, float *bias_out, const float *weight,
                              const float *bias, const float *gamma, const float *beta,
                              const float *mean, const float *var, float eps, int K,
                              int weight_elems_per_k);

// relu: out = max(inp, 0), n elements; out may equal inp.
void relu_forward_ref(float *out, const float *inp, size_t n);

// maxpool: out [N,C,OH,OW], inp [N,C,H,W]. Padding is -infinity, as in PyTorch.
void maxpool_forward_ref(float *out, const float *inp, int N, int C, int H, int W, int OH,
                         int OW, const cnn_window *win);
// The fast path (separable: a max over each window's rows, then along the row); same numbers.
void maxpool_forward(float *out, const float *inp, int N, int C, int H, int W, int OH, int OW,
                     const cnn_window *win);

// avgpool: out [N,C,OH,OW], inp [N,C,H,W]; count_include_pad and ceil_mode as in PyTorch
// (windows are clipped to input + padding; the divisor follows count_include_pad). No
// dilation (win->dilation is ignored, as nn.AvgPool2d has none).
void avgpool_forward_ref(float *out, const float *inp, int N, int C, int H, int W, int OH,
                         int OW, const cnn_window *win);

// adaptive_avgpool: out [N,C,OH,OW], inp [N,C,H,W]; window i spans
// [floor(i*H/OH), ceil((i+1)*H/OH)) as in PyTorch.
void adaptive_avgpool_forward_ref(float *out, const float *inp, int N, int C, int H, int W,
                                  int OH, int OW);
// The same numbers; an output as large as the input (every window one pixel) in one pass.
void adaptive_avgpool_forward(float *out, const float *inp, int N, int C, int H, int W, int OH,
                              int OW);

// linear: out [N,OUT], inp [N,IN], weight [OUT,IN], bias [OUT] or NULL.
void linear_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                        int N, int IN, int OUT);
// The fast path (blocked, parallel over OUT); same contract.
void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int IN, int OUT);

// add: out = a + b, n elements; out may equal a or b.
void add_forward_ref(float *out, const float *a, const float *b, size_t n);

// softmax over F for each of N rows: out [N,F], inp [N,F]; numerically stable (max subtracted).
void softmax_forward_ref(float *out, const float *inp, int N, int F);

// shortcut_a (CIFAR ResNet option A): out [N, pad_before + C + pad_after, OH, OW] with
// out[:, pad_before + c, y, x] = inp[:, c, y*stride, x*stride] and zeros in padded channels.
// OH = ceil(H / stride), OW = ceil(W / stride).
void shortcut_a_forward_ref(float *out, const float *inp, int N, int C, int H, int W, int stride,
                            int pad_before, int pad_after);

// ---------------------------------------------------------------------------------------------
// Backward kernels: gradients with respect to the input of each op (never the weights), as
// llm.c writes them: `dinp`, then `dout`, then what the forward saved (its input or output),
// then parameters, then dims. They ACCUMULATE into dinp (+=), so a node read by several others
// sums their contributions. Each sits beside its forward in engine/ops/<op>.c.

// relu: dinp, dout, out (the forward output) are (n); `rule` (cnnscope.h) says what passes;
// `out` may be NULL for CNN_RELU_DECONVNET.
void relu_backward_ref(float *dinp, const float *dout, const float *out, size_t n,
                       cnn_relu_rule rule);

// conv2d: dinp [N,C,H,W], dout [N,K,OH,OW], weight [K,C/groups,R,S]; the transposed conv.
void conv2d_backward_ref(float *dinp, const float *dout, const float *weight, int N, int C,
                         int H, int W, int K, int OH, int OW, const cnn_window *win);
// The fast path: sgemm with the transposed weights, then col2im (see conv2d.c); `workspace`
// holds conv2d_backward_workspace_floats(...) floats (may be NULL when that is 0).
size_t conv2d_backward_workspace_floats(int C, int K, int OH, int OW, const cnn_window *win);
void conv2d_backward(float *dinp, const float *dout, const float *weight, int N, int C, int H,
                     int W, int K, int OH, int OW, const cnn_window *win, float *workspace);

// batchnorm (inference): dinp, dout [N,C,HW]; a per-channel scale gamma / sqrt(var + eps).
void batchnorm_backward_ref(float *dinp, const float *dout, const float *gamma, const float *var,
                            float eps, int N, int C, int HW);

// maxpool: dinp, inp [N,C,H,W] (inp: the forward input, from which the argmax switches are
// found again, first maximum in window order as PyTorch), dout [N,C,OH,OW].
void maxpool_backward_ref(float *dinp, const float *dout, const float *inp, int N, int C, int H,
                          int W, int OH, int OW, const cnn_window *win);

// avgpool / adaptive_avgpool: dinp [N,C,H,W], dout [N,C,OH,OW].
void avgpool_backward_ref(float *dinp, const float *dout, int N, int C, int H, int W, int OH,
                          int OW, const cnn_window *win);
void adaptive_avgpool_backward_ref(float *dinp, const float *dout, int N, int C, int H, int W,
                                   int OH, int OW);

// linear: dinp [N,IN], dout [N,OUT], weight [OUT,IN].
void linear_backward_ref(float *dinp, const float *dout, const float *weight, int N, int IN,
                         int OUT);

// add: da, db, dout (n); da may equal db.
void add_backward_ref(float *da, float *db, const float *dout, size_t n);

// softmax: dinp, dout, out (the forward output) [N,F].
void softmax_backward_ref(float *dinp, const float *dout, const float *out, int N, int F);

// shortcut_a: dinp [N,C,H,W], dout [N, pad_before + C + pad_after, OH, OW].
void shortcut_a_backward_ref(float *dinp, const float *dout, int N, int C, int H, int W,
                             int stride, int pad_before, int pad_after);

#endif
