// winograd.h - 3x3 stride-1 convolution by Winograd's minimal filtering, F(4x4, 3x3)
// (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016,
// arXiv:1509.09308, 2015). See winograd.c for the derivation and the data layout.
//
// Scope: kernel 3x3, stride 1, dilation 1, groups 1, padding pad_h, pad_w (0..2, the same on
// both sides of an axis), NCHW float32. Each 4x4 block of outputs costs 36 multiplies per
// (input, output) channel pair instead of 144, so the GEMM work is 1/4 of im2col + GEMM.
//
// Dims: N batch, C channels in, H,W input size, K channels out, OH = H + 2*pad_h - 2 and
// OW = W + 2*pad_w - 2 output size.
//
// Accuracy: the transforms have coefficients up to 8 and 1/24, so the result differs from the
// exact sum by float rounding ~10x larger than im2col + GEMM's: measured against
// conv2d_forward_ref, 0.5e-5 to 2e-5 of the largest output (tests/c/test_winograd.c).
#ifndef CNNSCOPE_WINOGRAD_H
#define CNNSCOPE_WINOGRAD_H

#include <stddef.h>

// Floats of the pre-transformed weights of a conv with K output and C input channels (36*K*C).
size_t winograd_weight_floats(int K, int C);

// weight [K,C,3,3] -> U [36,K,C]: U[xi][k][c] is entry xi = 6*i + j of the 6x6 matrix
// G g G^T of the filter g = weight[k,c]. Each of the 36 slices is the row-major [K x C] left
// operand of one GEMM. Done once, when the model is loaded.
void winograd_transform_weights(float *U, const float *weight, int K, int C);

// The same weights packed for sgemm (sgemm_pack_a, for the kernel table in use): the 36 [K x C]
// slices one after another, each winograd_packed_slice_floats(K, C) floats (in all,
// winograd_packed_weight_floats). The session keeps only this form: the products then read
// their left operand in place instead of packing it on every call.
size_t winograd_packed_slice_floats(int K, int C);
size_t winograd_packed_weight_floats(int K, int C);
void winograd_pack_weights(float *packed, const float *U, int K, int C);

// Floats of workspace one call of winograd_conv2d_forward needs: one block of tiles, about
// 8 MB (more only where 64 tiles take more: 9.4 MB at C = K = 512; see WINOGRAD_BLOCK_BYTES
// in winograd.c). Independent of the thread count.
size_t winograd_workspace_floats(int N, int C, int H, int W, int K, int OH, int OW);

// out [N,K,OH,OW] = conv(inp [N,C,H,W], weight, bias [K] or NULL) with the weights given as
// U from winograd_transform_weights (u_packed 0) or packed by winograd_pack_weights (u_packed
// 1, for the kernel table still in use). The fused epilogue, in the output transform: + residual
// [N,K,OH,OW] if not NULL (must not overlap out), then if relu != 0, max(out, 0) (NaN stays
// NaN, as relu_forward_ref). `workspace` holds
// winograd_workspace_floats(...) floats. Parallel (OpenMP) over channels and tiles; every
// output element is computed by one thread in a fixed order, so the result is bit-identical
// for any thread count.
void winograd_conv2d_forward(float *out, const float *inp, const float *U, int u_packed,
                             const float *bias,
                             int N, int C, int H, int W, int K, int OH, int OW,
                             int pad_h, int pad_w, const float *residual, int relu,
                             float *workspace);

#endif
