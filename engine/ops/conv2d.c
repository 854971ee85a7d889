// conv2d.c - 2-D convolution (cross-correlation, as PyTorch), NCHW float32.
//
// Dims: N batch, C channels in, H,W input size, K channels out, R,S kernel size, OH,OW output
// size, G groups (Cg = C/G input and Kg = K/G output channels per group), P = OH*OW.
//
//   out[n,k,oy,ox] = bias[k] + sum_{c<Cg, r<R, s<S} inp[n, g*Cg + c, iy, ix] * weight[k,c,r,s]
//       with g = k / Kg, iy = oy*stride_h - pad_h + r*dilation_h (likewise ix), and
//       positions outside the input reading as zero.
//
// Fast path, chosen by shape (conv2d_path):
//   - depthwise (G > 1, Cg = 1): direct, one output plane at a time; each kernel tap adds a
//     shifted input row to an output row (an axpy over the output width). No workspace.
//   - pointwise (1x1, stride 1, no padding): the input image already is the [Cg, H*W] matrix,
//     so out_g[Kg, P] = weight_g[Kg, Cg] @ inp_g[Cg, P] with no copy.
//   - few input channels (a network's first conv), weights packed for the kernels: direct,
//     the GEMM kernel reading each tap's run of input pixels in place from a padded copy of
//     the image split by column phase (conv2d_direct, below); the numbers of the GEMM below.
//   - everything else: out_g[Kg, P] = weight_g[Kg, Cg*R*S] @ col[Cg*R*S, P] with the blocked
//     sgemm, col being the im2col matrix of one group of one image: stored in the workspace
//     when small (up to IM2COL_STORED_MAX floats), else gathered row by row from the image as
//     sgemm packs its panels (sgemm_general's b_row), which saves writing and re-reading a
//     matrix R*S times the size of the image (115 MB for VGG-16's conv1_2).
//   The weights may come pre-packed for the GEMM (packed at session creation).
// A relu and a residual add after the conv can be applied as each block of the output is
// finished (conv2d_forward_fused; sgemm's epilogue), while it is still in cache.
// Images and groups are done one after another (the workspace holds one group's columns);
// the threads share the work inside each step (rows of im2col, tiles of the GEMM, planes of
// the depthwise case), and no output element's sum is ever split between threads.
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "ops.h"
#include "gemm.h"
#include "kernels/kernels.h"
#include "work_share.h"

void conv2d_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                        int N, int C, int H, int W, int K, int OH, int OW, const cnn_window *win) {
    // out is (N,K,OH,OW), inp is (N,C,H,W), weight is (K,C/G,R,S), bias is (K) or NULL
    int R = win->kernel[0], S = win->kernel[1];
    int Cg = C / win->groups, Kg = K / win->groups;
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < K; k++) {
            int g = k / Kg;
            const float *w_k = weight + (size_t)k * Cg * R * S;
            for (int oy = 0; oy < OH; oy++) {
                for (int ox = 0; ox < OW; ox++) {
                    double sum = bias ? bias[k] : 0.0;   // double: the ref is the accurate side
                    for (int c = 0; c < Cg; c++) {
                        const float *in_c = inp + ((size_t)n * C + g * Cg + c) * H * W;
                        for (int r = 0; r < R; r++) {
                            int iy = oy * win->stride[0] - win->padding[0] + r * win->dilation[0];
                            if (iy < 0 || iy >= H) continue;
                            for (int s = 0; s < S; s++) {
                                int ix = ox * win->stride[1] - win->padding[1]
                                       + s * win->dilation[1];
                                if (ix < 0 || ix >= W) continue;
                                sum += (double)in_c[(size_t)iy * W + ix] * w_k[(c * R + r) * S + s];
                            }
                        }
                    }
                    out[(((size_t)n * K + k) * OH + oy) * OW + ox] = (float)sum;
                }
            }
        }
    }
}

typedef enum { CONV_IM2COL_GEMM, CONV_POINTWISE_GEMM, CONV_DEPTHWISE_DIRECT } conv2d_path_kind;

static conv2d_path_kind conv2d_path(int C, const cnn_window *win) {
    if (win->groups > 1 && C / win->groups == 1) return CONV_DEPTHWISE_DIRECT;
    if (win->kernel[0] == 1 && win->kernel[1] == 1 && win->stride[0] == 1 &&
        win->stride[1] == 1 && win->padding[0] == 0 && win->padding[1] == 0) {
        return CONV_POINTWISE_GEMM;
    }
    return CONV_IM2COL_GEMM;
}

// Up to this many floats (2 MB, a core's L2) the im2col matrix is stored (it then stays in
// cache, and sgemm packs it once per band of output channels); larger ones are gathered row by
// row while sgemm packs them, never written to memory and read back. (bench/conv_bench --cpu:
// at 3.6 MB, ResNet-50's 3x3 convs at 28x28, gathering is 5-12 % faster than storing; at
// 1.8 MB, 14x14, the two are even.)
enum { IM2COL_STORED_MAX = 1 << 19 };

static int im2col_stored(int C, int OH, int OW, const cnn_window *win) {
    size_t floats = (size_t)(C / win->groups) * win->kernel[0] * win->kernel[1] * OH * OW;
    return conv2d_path(C, win) == CONV_IM2COL_GEMM && floats <= IM2COL_STORED_MAX;
}

// Where Winograd pays (bench/winograd_bench.c, one thread): ~1.7x on 28x28 to 112x112 maps
// with 128-512 channels, 1.1-1.2x at 56x56x64 and 224x224x64; at 14x14 (16 tiles) about even
// on one thread, but a gain in the models on two (cnnscope bench, 2 threads, batch 1 / 8:
// VGG-16's three 14x14 convs 11-12 -> 8-9 ms / 82-84 -> 41-43 ms, ResNet-50's five 6.3-7.0 ->
// 5.9-6.0 / 43-46 -> 34-36). At 7x7 (4 tiles) it is 2.5x slower: the transformed weights,
// 4x the size of the plain ones, dominate. Few channels: the transforms dominate. The rule is
// per image, so that an image's result does not depend on the batch it is run in.
int conv2d_winograd_suits(int C, int K, int OH, int OW, const cnn_window *win) {
    int tiles = ((OH + 3) / 4) * ((OW + 3) / 4);
    return win->kernel[0] == 3 && win->kernel[1] == 3 && win->stride[0] == 1 &&
           win->stride[1] == 1 && win->dilation[0] == 1 && win->dilation[1] == 1 &&
           win->groups == 1 && win->padding[0] <= 2 && win->padding[1] <= 2 && C >= 32 &&
           K >= 32 && tiles >= 16;   // (padding: the range tests/c/test_winograd.c covers)
}

static size_t direct_phases_floats(int C, int OH, int OW, const cnn_window *win);

size_t conv2d_workspace_floats(int C, int H, int W, int OH, int OW, const cnn_window *win) {
    (void)H; (void)W;
    // The direct path's phase planes, or the stored im2col matrix of the product it falls back
    // to (weights not packed for these kernels), whichever is larger.
    size_t direct = direct_phases_floats(C, OH, OW, win), stored = 0;
    if (im2col_stored(C, OH, OW, win))
        stored = (size_t)(C / win->groups) * win->kernel[0] * win->kernel[1] * OH * OW;
    return direct > stored ? direct : stored;
}

// The output positions o in [*lo, *hi) whose input position o*stride + offset lies in
// [0, size); all other outputs along this axis read padding.
static void valid_range(int out_size, int size, int stride, int offset, int *lo, int *hi) {
    int l = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    int h = offset >= size ? 0 : (size - 1 - offset) / stride + 1;
    if (h > out_size) h = out_size;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

// The im2col matrix of one group of one image, [Cg*R*S, OH*OW]: stored in the workspace when
// small, else gathered on demand while sgemm packs it (sgemm_general), straight from the image
// into the packed panels.
typedef struct {
    const float *inp;   // (Cg,H,W)
    int H, W, OH, OW;
    const cnn_window *win;
} im2col_view;

// A whole row of a stride-1 conv whose output rows are as wide as the input's ("same"
// padding: a 3x3 with padding 1): the row is the input plane shifted by iy0 rows and ix0
// columns, so one copy of the plane's overlapping span, then zeros over what it got wrong (the
// columns each output row reads from padding, wrapped around from a neighbouring row) and over
// the rows that read padding. On a 14x14 map, 14 short runs and their bounds cost more than the
// copy: ResNet-50's 3x3 convs on 14x14 and 7x7 maps gather their rows this way.
static void im2col_row_shifted(const im2col_view *v, int c, int iy0, int ix0, int ox_lo,
                               int ox_hi, float *restrict row) {
    const int W = v->W, P = v->OH * v->OW;
    const float *plane = v->inp + (size_t)c * v->H * W;
    int oy_lo, oy_hi;
    valid_range(v->OH, v->H, 1, iy0, &oy_lo, &oy_hi);
    long shift = (long)iy0 * W + ix0;   // row[f] = plane[f + shift] (f = oy*W + ox)
    long f_lo = (long)oy_lo * W, f_hi = (long)oy_hi * W;
    if (f_lo < -shift) f_lo = -shift;                         // inside the plane only
    if (f_hi > (long)v->H * W - shift) f_hi = (long)v->H * W - shift;
    for (long f = 0; f < f_lo; f++) row[f] = 0.0f;
    if (f_hi > f_lo)
        memcpy(row + f_lo, plane + f_lo + shift, (size_t)(f_hi - f_lo) * sizeof(float));
    for (long f = f_hi > f_lo ? f_hi : f_lo; f < P; f++) row[f] = 0.0f;
    for (int oy = oy_lo; oy < oy_hi; oy++) {   // the columns that read padding
        float *dst = row + (size_t)oy * W;
        for (int x = 0; x < ox_lo; x++) dst[x] = 0.0f;
        for (int x = ox_hi; x < W; x++) dst[x] = 0.0f;
    }
}

// col[(c*R + r)*S + s, oy*OW + ox] = inp[c, iy, ix] (0 outside) for the n columns from j0 of
// row p, written to `row`. Walks the output rows the columns span: in each, the input row iy is
// either padding (zeros) or a run of input pixels between zeros.
CNN_VECTOR_CLONES
static const float *im2col_row(const void *ctx, int p, int j0, int n, float *row) {
    const im2col_view *v = ctx;
    const cnn_window *win = v->win;
    int R = win->kernel[0], S = win->kernel[1];
    int sh = win->stride[0], sw = win->stride[1];
    int c = p / (R * S), r = (p / S) % R, s = p % S;
    int iy0 = r * win->dilation[0] - win->padding[0];   // iy = oy*sh + iy0
    int ix0 = s * win->dilation[1] - win->padding[1];   // ix = ox*sw + ix0
    int ox_lo, ox_hi;
    valid_range(v->OW, v->W, sw, ix0, &ox_lo, &ox_hi);
    if (sh == 1 && sw == 1 && v->OW == v->W && j0 == 0 && n == v->OH * v->OW) {
        im2col_row_shifted(v, c, iy0, ix0, ox_lo, ox_hi, row);
        return row;
    }
    int oy = j0 / v->OW, ox = j0 % v->OW;
    for (int done = 0; done < n; oy++, ox = 0) {
        int take = v->OW - ox < n - done ? v->OW - ox : n - done;   // columns in this output row
        float *dst = row + done - ox;                                // dst[ox] = column oy*OW + ox
        int iy = oy * sh + iy0;
        // Loops, not memset/memcpy: the runs are short (a row of a small map), where a call
        // costs more than the copy.
        if (iy < 0 || iy >= v->H) {
            for (int x = ox; x < ox + take; x++) dst[x] = 0.0f;
        } else {
            const float *src = v->inp + ((size_t)c * v->H + iy) * v->W + ix0;   // src[ox*sw]
            int end = ox + take;
            int lo = ox_lo > ox ? (ox_lo < end ? ox_lo : end) : ox;
            int hi = ox_hi < end ? (ox_hi > lo ? ox_hi : lo) : end;
            for (int x = ox; x < lo; x++) dst[x] = 0.0f;
            if (sw == 1) {
                for (int x = lo; x < hi; x++) dst[x] = src[x];
            } else if (sw == 2) {   // constant strides: vectorised (loads and shuffles)
                for (int x = lo; x < hi; x++) dst[x] = src[(size_t)x * 2];
            } else if (sw == 4) {
                for (int x = lo; x < hi; x++) dst[x] = src[(size_t)x * 4];
            } else {
                for (int x = lo; x < hi; x++) dst[x] = src[(size_t)x * sw];
            }
            for (int x = hi; x < end; x++) dst[x] = 0.0f;
        }
        done += take;
    }
    return row;
}

// The whole im2col matrix into col (CRS, P), parallel over its rows.
static void im2col(float *col, const im2col_view *v, int rows) {
    size_t P = (size_t)v->OH * v->OW;
    #pragma omp parallel for schedule(static) if ((size_t)rows * P > 32768)
    for (int p = 0; p < rows; p++) im2col_row(v, p, 0, (int)P, col + (size_t)p * P);
}

// ---- Direct convolution, for few input channels --------------------------------------------
// A network's first conv (3 channels; 7x7 stride 2 in the ResNets, 11x11 stride 4 in AlexNet)
// has short im2col columns (147 or 363 taps) that few output channels (64) share, and gathering
// its im2col rows - strided, between padding - took a quarter of its time. Instead the image
// is rearranged once into phase planes: padded with zeros and split by column phase (for
// stride sw, phase f of a row holds its columns f, f + sw, f + 2*sw, ...), so that tap (c, r, t)
// of neighbouring outputs ox, ox+1, ... of output row oy is a run of contiguous floats: padded
// row oy*sh + r of channel c, phase t % sw, from column ox + t / sw. The GEMM kernel reads B's
// rows there (cnn_f32_gemm_rows) against the packed weights, one output row of up to NR
// columns per call and slice of K: each output is the sum it is in the im2col product (the
// same slices, each summed in the same order and added to the output), then the same epilogue,
// so the same numbers.
//
//   phases[((c*Hp + y)*sw + f)*Wq + q] = inp[c, y - pad_h, q*sw + f - pad_w] (0 outside)
//   Hp = (OH-1)*sh + R padded rows; Wq = round_up(OW, NR) + (S-1)/sw columns per phase, so
//   the kernel's last run (NR floats, past OW into zeros) stays inside.
typedef struct {
    int Hp, Wq;
} direct_geometry;

static direct_geometry direct_geometry_of(int OH, int OW, const cnn_window *win, int NR) {
    direct_geometry g;
    g.Hp = (OH - 1) * win->stride[0] + win->kernel[0];
    g.Wq = (OW + NR - 1) / NR * NR + (win->kernel[1] - 1) / win->stride[1];
    return g;
}

// The direct path's phase planes in floats, or 0 when the shape cannot take it: few input
// channels (see conv2d_direct), one group, no dilation, a column of at most DIRECT_MAX_TAPS
// taps, and a kernel table with cnn_f32_gemm_rows.
enum {
    DIRECT_FEW_CHANNELS = 4,
    DIRECT_MAX_CHANNELS = 64,
    DIRECT_MAX_TAPS = 1600,
    DIRECT_ROWS = 4,   // output rows per item of work (conv2d_direct)
};
static size_t direct_phases_floats(int C, int OH, int OW, const cnn_window *win) {
    const cnn_kernel_table *kt = cnn_kernels();
    int CRS = C * win->kernel[0] * win->kernel[1];
    if (!kt->gemm_rows || win->groups != 1 || C > DIRECT_MAX_CHANNELS || CRS > DIRECT_MAX_TAPS ||
        win->dilation[0] != 1 || win->dilation[1] != 1 || conv2d_path(C, win) != CONV_IM2COL_GEMM)
        return 0;
    direct_geometry g = direct_geometry_of(OH, OW, win, kt->nr);
    size_t floats = (size_t)C * g.Hp * win->stride[1] * g.Wq;
    return floats < INT32_MAX ? floats : 0;   // (the kernel's offsets are 32-bit)
}

// Image `inp` (C,H,W) into its phase planes.
static void direct_phases(float *restrict phases, const float *restrict inp, int C, int H, int W,
                          const cnn_window *win, direct_geometry g) {
    const int sw = win->stride[1], ph = win->padding[0], pw = win->padding[1];
    #pragma omp parallel for schedule(static)
    for (int row = 0; row < C * g.Hp; row++) {
        int c = row / g.Hp, iy = row % g.Hp - ph;
        for (int f = 0; f < sw; f++) {
            float *dst = phases + ((size_t)row * sw + f) * g.Wq;
            if (iy < 0 || iy >= H) {
                memset(dst, 0, (size_t)g.Wq * sizeof(float));
                continue;
            }
            const float *src = inp + ((size_t)c * H + iy) * W;
            for (int q = 0; q < g.Wq; q++) {
                int ix = q * sw + f - pw;
                dst[q] = ix >= 0 && ix < W ? src[ix] : 0.0f;
            }
        }
    }
}

// The direct path, if this conv takes it (direct_phases_floats, and weights packed for these
// kernels); returns 0, having done nothing, otherwise. It is taken for up to
// DIRECT_FEW_CHANNELS input channels, and, with the AVX-512 kernel's 32 columns, for up to
// DIRECT_MAX_CHANNELS at stride 1 when the threads share each image: there the product's
// tiles, each gathering its own columns, scale poorly on two threads (1.5-1.6x) while the
// direct rows scale 1.9x (AlexNet's 5x5 conv at batch 1, 2.19 -> 1.96 ms in the model; on one
// thread the GEMM is 10 % ahead; direct was 3 % slower for ResNet-18's stride-2 conv on 64
// channels, and 9 % slower for AlexNet's 5x5 with the AVX2 kernel's 16 columns). The two
// paths give the same numbers, so the choice does not change a result.
static int conv2d_direct(float *out, const float *inp, const sgemm_packed_a *pa,
                         const float *bias, int N, int C, int H, int W, int K, int OH, int OW,
                         const cnn_window *win, const float *residual, int relu,
                         float *workspace, int threads) {
    const cnn_kernel_table *kt = cnn_kernels();
    const int R = win->kernel[0], S = win->kernel[1], sh = win->stride[0], sw = win->stride[1];
    const int CRS = C * R * S, MR = kt->mr, NR = kt->nr;
    int stride_1 = sh == 1 && sw == 1;
    if (C > DIRECT_FEW_CHANNELS && !(NR >= 32 && stride_1 && threads > 1 && N < threads))
        return 0;
    if (!workspace || !direct_phases_floats(C, OH, OW, win) || !sgemm_packed_a_fits(pa, K, CRS))
        return 0;
    direct_geometry g = direct_geometry_of(OH, OW, win, NR);
    int32_t offsets[DIRECT_MAX_TAPS];   // B's row p: tap (c, r, t) from an output row's start
    for (int p = 0; p < CRS; p++) {
        int c = p / (R * S), r = (p / S) % R, t = p % S;
        offsets[p] = (int32_t)((((size_t)c * g.Hp + r) * sw + t % sw) * g.Wq + t / sw);
    }
    const size_t P = (size_t)OH * OW;
    const int slivers = (K + MR - 1) / MR, KC = kt->kc;
    for (int n = 0; n < N; n++) {
        direct_phases(workspace, inp + (size_t)n * C * H * W, C, H, W, win, g);
        float *out_n = out + (size_t)n * K * P;
        const float *res_n = residual ? residual + (size_t)n * K * P : NULL;
        // An item is a sliver of channels over DIRECT_ROWS output rows: each of its channels
        // gets a run of DIRECT_ROWS * OW floats, not one row (a batch's outputs go to memory,
        // where 64 planes written a row at a time ran 25 % slower than the GEMM's tiles). Items
        // in row-block-major order: each thread a run of rows, every sliver in each, so that a
        // thread's share does not depend on how full the last sliver is (work_share: a thread
        // done early takes over the rest of a slower one's run).
        const int row_blocks = (OH + DIRECT_ROWS - 1) / DIRECT_ROWS;
        work_share ws;
        work_share_begin(&ws, (long)row_blocks * slivers);
        #pragma omp parallel
        for (long item; (item = work_share_next(&ws)) >= 0;) {
            int k0 = (int)(item % slivers) * MR, mr = K - k0 < MR ? K - k0 : MR;
            int oy0 = (int)(item / slivers) * DIRECT_ROWS;
            int oy1 = oy0 + DIRECT_ROWS < OH ? oy0 + DIRECT_ROWS : OH;
            for (int oy = oy0; oy < oy1; oy++) {
                const float *row0 = workspace + (size_t)oy * sh * sw * g.Wq;
                for (int ox0 = 0; ox0 < OW; ox0 += NR) {
                    int nr = OW - ox0 < NR ? OW - ox0 : NR;
                    size_t at = (size_t)k0 * P + (size_t)oy * OW + ox0;
                    cnn_gemm_finish fin = {bias ? bias + k0 : NULL, res_n ? res_n + at : NULL, P,
                                           relu, NULL, 0};
                    for (int p0 = 0; p0 < CRS; p0 += KC) {   // the slices of K, as sgemm's
                        int kc = CRS - p0 < KC ? CRS - p0 : KC;
                        kt->gemm_rows(mr, nr, kc, sgemm_packed_a_sliver_at(pa, p0, k0),
                                      row0 + ox0, offsets + p0, out_n + at, P, p0 > 0,
                                      p0 + kc == CRS ? &fin : NULL);
                    }
                }
            }
        }
    }
    return 1;
}

// y[i] += a * x[i]; blocks of 8 with a constant trip count so gcc -O2 vectorises them.
static void axpy(float *restrict y, const float *restrict x, int n, float a) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; j++) y[i + j] += a * x[i + j];
    }
    for (; i < n; i++) y[i] += a * x[i];
}

// One output plane of a depthwise conv: out (OH,OW) = bias + sum_{r,s} w[r,s] * shifted inp.
// inp is (H,W), w is (R,S).
static void conv2d_plane_direct(float *out, const float *inp, const float *w, float bias, int H,
                                int W, int OH, int OW, const cnn_window *win) {
    int R = win->kernel[0], S = win->kernel[1];
    int sh = win->stride[0], sw = win->stride[1];
    for (size_t i = 0; i < (size_t)OH * OW; i++) out[i] = bias;
    for (int r = 0; r < R; r++) {
        int iy0 = r * win->dilation[0] - win->padding[0];
        int oy_lo, oy_hi;
        valid_range(OH, H, sh, iy0, &oy_lo, &oy_hi);
        for (int s = 0; s < S; s++) {
            int ix0 = s * win->dilation[1] - win->padding[1];
            int ox_lo, ox_hi;
            valid_range(OW, W, sw, ix0, &ox_lo, &ox_hi);
            float wv = w[r * S + s];
            for (int oy = oy_lo; oy < oy_hi; oy++) {
                float *dst = out + (size_t)oy * OW;
                const float *src = inp + (size_t)(oy * sh + iy0) * W + ix0;
                if (sw == 1) {
                    axpy(dst + ox_lo, src + ox_lo, ox_hi - ox_lo, wv);
                } else {
                    for (int ox = ox_lo; ox < ox_hi; ox++) dst[ox] += wv * src[(size_t)ox * sw];
                }
            }
        }
    }
}

// One conv2d_forward_fused call's operands, for conv2d_gemm_image.
typedef struct {
    const float *inp, *weight;
    const struct sgemm_packed_a *packed;
    const float *bias, *residual;
    int relu, C, H, W, K, OH, OW;
    const cnn_window *win;
    float *workspace;
    int stored;   // im2col stored in the workspace (else gathered while packing)
} conv2d_gemm_job;

// Image n of a GEMM-path conv: out_g[Kg, P] = weight_g[Kg, CRS] @ col[CRS, P] for each group,
// then the bias, residual and relu in sgemm's epilogue.
static void conv2d_gemm_image(const conv2d_gemm_job *j, float *out, int n) {
    const cnn_window *win = j->win;
    int G = win->groups, Cg = j->C / G, Kg = j->K / G;
    int CRS = Cg * win->kernel[0] * win->kernel[1];
    size_t P = (size_t)j->OH * j->OW;
    int pointwise = conv2d_path(j->C, win) == CONV_POINTWISE_GEMM;
    for (int g = 0; g < G; g++) {
        const float *inp_g = j->inp + ((size_t)n * j->C + (size_t)g * Cg) * j->H * j->W;
        const float *weight_g = j->weight ? j->weight + (size_t)g * Kg * CRS : NULL;   // (Kg,CRS)
        float *out_g = out + ((size_t)n * j->K + (size_t)g * Kg) * P;               // (Kg,P)
        sgemm_epilogue ep = {j->residual ? j->residual + (out_g - out) : NULL, (int)P, j->relu,
                             j->bias ? j->bias + (size_t)g * Kg : NULL};
        im2col_view cols = {inp_g, j->H, j->W, j->OH, j->OW, win};   // (CRS, P)
        sgemm_operands op = {.A = weight_g, .lda = CRS, .a_packed = G == 1 ? j->packed : NULL,
                             .ldb = (int)P, .ep = &ep};
        if (pointwise) {   // the image is the (Cg, P) matrix already
            op.B = inp_g;
        } else if (j->stored) {
            im2col(j->workspace, &cols, CRS);
            op.B = j->workspace;
        } else {
            op.b_row = im2col_row;
            op.b_ctx = &cols;
        }
        sgemm_general(Kg, (int)P, CRS, &op, out_g, (int)P, 0);
    }
}

void conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int H, int W, int K, int OH, int OW, const cnn_window *win,
                    float *workspace) {
    conv2d_forward_fused(out, inp, weight, NULL, bias, N, C, H, W, K, OH, OW, win, NULL, 0,
                         workspace);
}

void conv2d_forward_fused(float *out, const float *inp, const float *weight,
                          const struct sgemm_packed_a *packed, const float *bias, int N, int C,
                          int H, int W, int K, int OH, int OW, const cnn_window *win,
                          const float *residual, int relu, float *workspace) {
    // out is (N,K,OH,OW), inp is (N,C,H,W), weight is (K,C/G,R,S), bias is (K) or NULL,
    // residual is (N,K,OH,OW) or NULL, workspace holds conv2d_workspace_floats(C,H,W,OH,OW,win)
    // floats
    int G = win->groups, Cg = C / G, Kg = K / G;
    int CRS = Cg * win->kernel[0] * win->kernel[1];
    size_t P = (size_t)OH * OW;
    if (conv2d_path(C, win) == CONV_DEPTHWISE_DIRECT) {
        int planes = N * K;
        #pragma omp parallel for schedule(static)
        for (int plane = 0; plane < planes; plane++) {
            int n = plane / K, k = plane % K, c = k / Kg;   // Cg = 1: group g reads channel g
            float *out_plane = out + (size_t)plane * P;
            conv2d_plane_direct(out_plane, inp + ((size_t)n * C + c) * H * W,
                                weight + (size_t)k * CRS, bias ? bias[k] : 0.0f, H, W, OH, OW,
                                win);
            for (size_t i = 0; i < P; i++) {   // the epilogue, as sgemm applies it
                float v = out_plane[i];
                if (residual) v += residual[(size_t)plane * P + i];
                out_plane[i] = relu && v < 0.0f ? 0.0f : v;
            }
        }
        return;
    }

    int threads = 1;
#ifdef _OPENMP
    threads = omp_in_parallel() ? 1 : omp_get_max_threads();
#endif
    if (conv2d_direct(out, inp, packed, bias, N, C, H, W, K, OH, OW, win, residual, relu,
                      workspace, threads))
        return;

    // With a batch of at least as many images as threads, each thread takes whole images (its
    // sgemm calls then run serially): no fork and join per small product, and no split of a
    // product into tiles just to share it. The im2col rows are then gathered, never stored (the
    // workspace is one group's). Each output element is still computed by one thread in the
    // same order, so the result does not depend on this choice. (Two loops, not one with an
    // `if` clause: an inactive region around sgemm would keep sgemm's own threads from
    // starting.)
    conv2d_gemm_job job = {inp, weight, packed, bias, residual, relu, C, H, W, K, OH, OW, win,
                           workspace, 0};
    if (N > 1 && threads > 1 && N >= threads) {
        #pragma omp parallel for schedule(dynamic)
        for (int n = 0; n < N; n++) conv2d_gemm_image(&job, out, n);
    } else {
        // (The transposed product packs each row of B once, right after gathering it: storing
        // the matrix first would only add a pass over it.)
        job.stored = im2col_stored(C, OH, OW, win) && !(packed && packed->transposed);
        for (int n = 0; n < N; n++) conv2d_gemm_image(&job, out, n);
    }
}

// ---------------------------------------------------------------------------------------------
// Backward with respect to the input (the "transposed convolution"): every input pixel
// collects the output gradients of the windows that read it, through the same weights,
//
//   dinp[n,c,iy,ix] += sum_{k of c's group, r, s} dout[n,k,oy,ox] * weight[k, c - g*Cg, r, s]
//       over the taps with iy = oy*stride_h - pad_h + r*dilation_h (likewise ix) for some
//       output position 0 <= oy < OH, 0 <= ox < OW.

// The reference gathers each input pixel's sum (in double) straight from that formula.
void conv2d_backward_ref(float *dinp, const float *dout, const float *weight, int N, int C,
                         int H, int W, int K, int OH, int OW, const cnn_window *win) {
    // dinp is (N,C,H,W), dout is (N,K,OH,OW), weight is (K,C/G,R,S); dinp accumulates
    int R = win->kernel[0], S = win->kernel[1];
    int Cg = C / win->groups, Kg = K / win->groups;
    for (int n = 0; n < N; n++) {
        for (int c = 0; c < C; c++) {
            int g = c / Cg, c_in_group = c % Cg;
            for (int iy = 0; iy < H; iy++) {
                for (int ix = 0; ix < W; ix++) {
                    double sum = 0.0;
                    for (int k = g * Kg; k < (g + 1) * Kg; k++) {
                        const float *dout_k = dout + ((size_t)n * K + k) * OH * OW;
                        const float *w_kc = weight + ((size_t)k * Cg + c_in_group) * R * S;
                        for (int r = 0; r < R; r++) {
                            // the output row whose tap r lands on iy, if there is one
                            int ty = iy + win->padding[0] - r * win->dilation[0];
                            if (ty < 0 || ty % win->stride[0] != 0) continue;
                            int oy = ty / win->stride[0];
                            if (oy >= OH) continue;
                            for (int s = 0; s < S; s++) {
                                int tx = ix + win->padding[1] - s * win->dilation[1];
                                if (tx < 0 || tx % win->stride[1] != 0) continue;
                                int ox = tx / win->stride[1];
                                if (ox >= OW) continue;
                                sum += (double)dout_k[(size_t)oy * OW + ox] * w_kc[r * S + s];
                            }
                        }
                    }
                    dinp[(((size_t)n * C + c) * H + iy) * W + ix] += (float)sum;
                }
            }
        }
    }
}

size_t conv2d_backward_workspace_floats(int C, int K, int OH, int OW, const cnn_window *win) {
    conv2d_path_kind path = conv2d_path(C, win);
    if (path == CONV_DEPTHWISE_DIRECT) return 0;
    size_t weight_t = (size_t)K * (C / win->groups) * win->kernel[0] * win->kernel[1];
    if (path == CONV_POINTWISE_GEMM) return weight_t;
    return weight_t + (size_t)(C / win->groups) * win->kernel[0] * win->kernel[1] * OH * OW;
}

// The inverse of im2col: inp[c, iy, ix] += col[(c*R + r)*S + s, oy*OW + ox] over every tap
// that read (c, iy, ix). col is (Cg*R*S, OH*OW), inp is (Cg,H,W). Parallel over channels: the
// R*S rows of one channel all add into its plane, so they stay with one thread, in order.
static void col2im_add(float *inp, const float *col, int Cg, int H, int W, int OH, int OW,
                       const cnn_window *win) {
    int R = win->kernel[0], S = win->kernel[1];
    int sh = win->stride[0], sw = win->stride[1];
    #pragma omp parallel for schedule(static) if ((size_t)Cg * R * S * OH * OW > 32768)
    for (int c = 0; c < Cg; c++) {
        for (int r = 0; r < R; r++) {
            int iy0 = r * win->dilation[0] - win->padding[0];   // iy = oy*sh + iy0
            int oy_lo, oy_hi;
            valid_range(OH, H, sh, iy0, &oy_lo, &oy_hi);
            for (int s = 0; s < S; s++) {
                int ix0 = s * win->dilation[1] - win->padding[1];
                int ox_lo, ox_hi;
                valid_range(OW, W, sw, ix0, &ox_lo, &ox_hi);
                const float *src_row = col + ((size_t)(c * R + r) * S + s) * OH * OW;
                for (int oy = oy_lo; oy < oy_hi; oy++) {
                    const float *src = src_row + (size_t)oy * OW;
                    float *dst = inp + ((size_t)c * H + oy * sh + iy0) * W + ix0;   // dst[ox*sw]
                    if (sw == 1) {
                        axpy(dst + ox_lo, src + ox_lo, ox_hi - ox_lo, 1.0f);
                    } else {
                        for (int ox = ox_lo; ox < ox_hi; ox++) dst[(size_t)ox * sw] += src[ox];
                    }
                }
            }
        }
    }
}

// Depthwise backward for one input plane: every output plane of its group scatters back
// through its R*S taps. dinp is (H,W), dout is (Kg,OH,OW), w is (Kg,R,S).
static void conv2d_plane_backward_direct(float *dinp, const float *dout, const float *w, int Kg,
                                         int H, int W, int OH, int OW, const cnn_window *win) {
    int R = win->kernel[0], S = win->kernel[1];
    int sh = win->stride[0], sw = win->stride[1];
    for (int k = 0; k < Kg; k++) {
        const float *dout_k = dout + (size_t)k * OH * OW;
        for (int r = 0; r < R; r++) {
            int iy0 = r * win->dilation[0] - win->padding[0];
            int oy_lo, oy_hi;
            valid_range(OH, H, sh, iy0, &oy_lo, &oy_hi);
            for (int s = 0; s < S; s++) {
                int ix0 = s * win->dilation[1] - win->padding[1];
                int ox_lo, ox_hi;
                valid_range(OW, W, sw, ix0, &ox_lo, &ox_hi);
                float wv = w[((size_t)k * R + r) * S + s];
                for (int oy = oy_lo; oy < oy_hi; oy++) {
                    const float *src = dout_k + (size_t)oy * OW;
                    float *dst = dinp + (size_t)(oy * sh + iy0) * W + ix0;
                    if (sw == 1) {
                        axpy(dst + ox_lo, src + ox_lo, ox_hi - ox_lo, wv);
                    } else {
                        for (int ox = ox_lo; ox < ox_hi; ox++) dst[(size_t)ox * sw] += wv * src[ox];
                    }
                }
            }
        }
    }
}

// The fast path mirrors the forward's: per image and group, col[CRS, P] = weight_g^T[CRS, Kg]
// @ dout_g[Kg, P] with the blocked sgemm, then col2im adds the columns back into the image
// (pointwise convs add weight_g^T @ dout_g straight into the image; depthwise ones scatter
// directly, parallel over input planes). The transposed weights go to the workspace first.
void conv2d_backward(float *dinp, const float *dout, const float *weight, int N, int C, int H,
                     int W, int K, int OH, int OW, const cnn_window *win, float *workspace) {
    // dinp is (N,C,H,W), dout is (N,K,OH,OW), weight is (K,C/G,R,S); dinp accumulates;
    // workspace holds conv2d_backward_workspace_floats(C,K,OH,OW,win) floats
    int G = win->groups, Cg = C / G, Kg = K / G;
    int CRS = Cg * win->kernel[0] * win->kernel[1];
    size_t P = (size_t)OH * OW;
    conv2d_path_kind path = conv2d_path(C, win);

    if (path == CONV_DEPTHWISE_DIRECT) {   // Cg = 1: input plane c belongs to group c
        int planes = N * C;
        #pragma omp parallel for schedule(static)
        for (int plane = 0; plane < planes; plane++) {
            int n = plane / C, c = plane % C;
            conv2d_plane_backward_direct(dinp + (size_t)plane * H * W,
                                         dout + ((size_t)n * K + (size_t)c * Kg) * P,
                                         weight + (size_t)c * Kg * CRS, Kg, H, W, OH, OW, win);
        }
        return;
    }

    float *weight_t = workspace;                       // (G, CRS, Kg)
    float *cols = workspace + (size_t)K * CRS;         // (CRS, P), im2col path only
    for (int g = 0; g < G; g++) {
        for (int k = 0; k < Kg; k++) {
            const float *w_k = weight + ((size_t)g * Kg + k) * CRS;
            for (int e = 0; e < CRS; e++) weight_t[((size_t)g * CRS + e) * Kg + k] = w_k[e];
        }
    }
    for (int n = 0; n < N; n++) {
        for (int g = 0; g < G; g++) {
            const float *weight_t_g = weight_t + (size_t)g * CRS * Kg;           // (CRS,Kg)
            const float *dout_g = dout + ((size_t)n * K + (size_t)g * Kg) * P;    // (Kg,P)
            float *dinp_g = dinp + ((size_t)n * C + (size_t)g * Cg) * H * W;     // (Cg,H,W)
            if (path == CONV_POINTWISE_GEMM) {   // P = H*W and CRS = Cg
                sgemm(Cg, (int)P, Kg, weight_t_g, Kg, dout_g, (int)P, dinp_g, (int)P, 1);
            } else {
                sgemm(CRS, (int)P, Kg, weight_t_g, Kg, dout_g, (int)P, cols, (int)P, 0);
                col2im_add(dinp_g, cols, Cg, H, W, OH, OW, win);
            }
        }
    }
}
