// winograd.c - 3x3 stride-1 convolution by Winograd's minimal filtering algorithm F(4x4, 3x3),
// NCHW float32. The method and the matrices are those of Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks" (CVPR 2016, arXiv:1509.09308, 2015); the code is written from
// the derivation below.
//
// Dims: N batch, C channels in, H,W input size, K channels out, OH,OW output size, P tiles per
// image, T tiles in a block, Tp = T rounded up to LANES (the row length of the workspace).
//
// ---- The 1-D algorithm F(m=4, r=3) ---------------------------------------------------------
// Four outputs of a 3-tap correlation, y[i] = d[i]*g[0] + d[i+1]*g[1] + d[i+2]*g[2] for
// i = 0..3, read 6 inputs d[0..5]. Winograd computes them with 6 multiplies instead of 12:
//
//     y = A^T [ (G g) * (B^T d) ]        (* elementwise; G is 6x3, B^T 6x6, A^T 4x6)
//
// The matrices come from polynomial interpolation at n = m + r - 1 = 6 points. We use the
// finite points p = 0, 1, -1, 2, -2 and the point "infinity" (which stands for the leading
// coefficient); small integers keep the coefficients (and the rounding error) small.
// With the finite points q_1..q_5 and M_p(x) = prod_{q != p} (x - q):
//   - G, row p: the filter polynomial g(x) = g0 + g1 x + g2 x^2 evaluated at p, divided by
//     M_p(p) (the Lagrange denominator); row "infinity" is g2.
//   - B^T, row p: the coefficients (x^0 .. x^5) of M_p(x); row "infinity": those of
//     prod_q (x - q) = x^5 - 5x^3 + 4x.
//   - A^T, column p: the powers p^0 .. p^3; column "infinity": (0, 0, 0, 1).
// (It is the transpose of Toom-Cook's convolution algorithm: that one evaluates both factors at
// the points, multiplies, and interpolates the product back; a correlation is the transposed
// linear map, so evaluation and interpolation trade places between d and y.) Worked out:
//
//   p:       0     1     -1     2     -2    inf         M_p(p): 4, -6, -6, 24, 24
//
//   G   = [  1/4     0      0   ]     B^T = [ 4   0  -5   0   1   0 ]    A^T = [ 1  1  1  1  1  0 ]
//         [ -1/6  -1/6   -1/6   ]           [ 0  -4  -4   1   1   0 ]          [ 0  1 -1  2 -2  0 ]
//         [ -1/6   1/6   -1/6   ]           [ 0   4  -4  -1   1   0 ]          [ 0  1  1  4  4  0 ]
//         [ 1/24  1/12    1/6   ]           [ 0  -2  -1   2   1   0 ]          [ 0  1 -1  8 -8  1 ]
//         [ 1/24 -1/12    1/6   ]           [ 0   2  -1  -2   1   0 ]
//         [   0     0      1    ]           [ 0   4   0  -5   0   1 ]
//
// e.g. B^T row 0 = coefficients of (x-1)(x+1)(x-2)(x+2) = x^4 - 5x^2 + 4, and
// G row 1 = g(1) / M_1(1) = (g0 + g1 + g2) / ((1-0)(1+1)(1-2)(1+2)) = -(g0 + g1 + g2) / 6.
//
// ---- 2-D: F(4x4, 3x3) and convolution as 36 GEMMs ------------------------------------------
// Nesting the 1-D algorithm along both axes, a 4x4 block of outputs ("tile") of one (k, c)
// pair is Y = A^T [ (G g G^T) * (B^T d B) ] A, d the 6x6 input patch under the tile (tiles
// start every 4 pixels, so neighbouring patches overlap by 2). Summing over c commutes with
// A^T . A, so for every tile t and each of the 36 positions xi of the 6x6 transformed tile:
//
//     M[xi][k][t] = sum_c U[xi][k][c] * V[xi][c][t]     U = G g G^T, V = B^T d B
//
// i.e. 36 independent matrix products [K x C] @ [C x T], done by the engine's sgemm.
// Then out tile = A^T M[.][k][t] A (+ bias, ReLU).
//
// ---- Data layout and blocking --------------------------------------------------------------
//   U [36][K][C]     weights, transformed once at load (winograd_transform_weights)
//   V [36][C][Tp]    transformed input patches of one block of T tiles
//   M [36][K][Tp]    the 36 products for that block
// The tiles of all N images are numbered t = n*P + ty*tiles_w + tx and cut into blocks of T
// (block_tiles): the workspace holds V and M of one block, at most WINOGRAD_BLOCK_BYTES
// unless a block must be larger to keep the GEMMs efficient (>= MIN_BLOCK_TILES tiles).
// The transforms work on LANES = 16 tiles at once, each tile in one lane of a float[16], so
// every step is a loop of 16 independent operations that gcc -O2 vectorises; each
// transformed value goes to V or comes from M as a contiguous run of 16 floats. Neighbouring
// tiles of one row of tiles whose patches lie inside the image are read straight from the image
// rows (the input's row pass, d B, comes first for that), and those whose outputs all exist are
// written back a row of pixels at a time; a tile at an edge (padding, partial tiles) goes
// through a zero-padded patch or is clipped pixel by pixel.
//
// Threads: each step is parallel over independent pieces (input transform over (channel,
// group of 16 tiles), the 36 GEMMs over xi, output transform over (output channel, group)), and
// every value is computed by exactly one thread in a fixed order, so the result does not
// depend on the thread count. Without OpenMP the pragmas are ignored and it runs serially.
#include <string.h>
#include "gemm.h"
#include "winograd.h"
#include "work_share.h"

enum {
    TILE = 4,                  // outputs per tile along each axis (m)
    PATCH = 6,                 // inputs per patch along each axis (m + r - 1)
    POSITIONS = PATCH * PATCH, // 36 entries of a transformed tile = 36 GEMMs
    LANES = 16,                // tiles transformed together (one float[16] per value)
    MIN_BLOCK_TILES = 64,      // smallest block worth a round of 36 GEMMs (see block_tiles)
    BLOCK_ALIGN = 32,          // block sizes are multiples of the GEMM's widest column panel
};

// Budget for V + M of one block: 448 tiles of VGG-16's 224x224 layers (C = K = 64). Measured
// on one core (2 MB L2): 1 to 16 MB run equally fast (each GEMM has hundreds of columns
// either way, and the transforms stream); 32 MB was slower on the 224x224 layer.
#define WINOGRAD_BLOCK_BYTES ((size_t)8 << 20)

static int round_up(int x, int multiple) {
    return (x + multiple - 1) / multiple * multiple;
}

// Tiles per block: as many as fit the budget (a multiple of BLOCK_ALIGN, at least
// MIN_BLOCK_TILES, since with very few tiles per GEMM the weights U dominate the traffic),
// and never more than there are. Depends on the shape only, never on the thread count.
static int block_tiles(int N, int C, int K, int OH, int OW) {
    long total = (long)N * ((OH + TILE - 1) / TILE) * ((OW + TILE - 1) / TILE);
    size_t per_tile = (size_t)POSITIONS * (size_t)(C + K) * sizeof(float);
    long fit = (long)(WINOGRAD_BLOCK_BYTES / per_tile) / BLOCK_ALIGN * BLOCK_ALIGN;
    if (fit < MIN_BLOCK_TILES) fit = MIN_BLOCK_TILES;
    return (int)(total < fit ? total : fit);
}

size_t winograd_weight_floats(int K, int C) {
    return (size_t)POSITIONS * K * C;
}

size_t winograd_packed_slice_floats(int K, int C) {
    return sgemm_packed_a_floats(K, C);
}

size_t winograd_packed_weight_floats(int K, int C) {
    return POSITIONS * winograd_packed_slice_floats(K, C);
}

void winograd_pack_weights(float *packed, const float *U, int K, int C) {
    size_t slice = winograd_packed_slice_floats(K, C);
    for (int xi = 0; xi < POSITIONS; xi++)
        sgemm_pack_a(packed + xi * slice, K, C, U + (size_t)xi * K * C, C);
}

size_t winograd_workspace_floats(int N, int C, int H, int W, int K, int OH, int OW) {
    (void)H; (void)W;
    if (N <= 0 || OH <= 0 || OW <= 0) return 0;
    int Tp = round_up(block_tiles(N, C, K, OH, OW), LANES);
    return (size_t)POSITIONS * (size_t)(C + K) * (size_t)Tp;
}

// ---- weights: U = G g G^T --------------------------------------------------------------------

// u[0..5] = G x for x[0..2] (one column or row of the filter). In double: it runs once per
// model, and the 1/6 and 1/24 then cost one rounding (to float, at the end) instead of several.
static void weight_1d(double u[PATCH], const double x[3]) {
    u[0] = x[0] / 4;
    u[1] = -(x[0] + x[1] + x[2]) / 6;
    u[2] = -(x[0] - x[1] + x[2]) / 6;
    u[3] = (x[0] + 2 * x[1] + 4 * x[2]) / 24;
    u[4] = (x[0] - 2 * x[1] + 4 * x[2]) / 24;
    u[5] = x[2];
}

void winograd_transform_weights(float *U, const float *weight, int K, int C) {
    // U is (36,K,C), weight is (K,C,3,3)
    #pragma omp parallel for schedule(static)
    for (int k = 0; k < K; k++) {
        for (int c = 0; c < C; c++) {
            const float *g = weight + ((size_t)k * C + c) * 9;
            double gG[3][PATCH];   // gG = g G^T: row r is G applied to row r of g
            for (int r = 0; r < 3; r++) {
                double row[3] = {g[r * 3 + 0], g[r * 3 + 1], g[r * 3 + 2]};
                weight_1d(gG[r], row);
            }
            for (int j = 0; j < PATCH; j++) {   // column j of g G^T, then G on the left
                double col[3] = {gG[0][j], gG[1][j], gG[2][j]}, u[PATCH];
                weight_1d(u, col);
                for (int i = 0; i < PATCH; i++) {
                    U[((size_t)(i * PATCH + j) * K + k) * C + c] = (float)u[i];
                }
            }
        }
    }
}

// ---- input: V = B^T d B --------------------------------------------------------------------

// y_i = (B^T x)_i for n lanes: x_j is x[j*xs + l*xl], y_i goes to y[i*ys + l]. Inlined with
// constant strides, each line is a vector operation on the lanes: contiguous loads for xl = 1,
// loads and shuffles for xl = TILE (neighbouring tiles' overlapping patches, straight from an
// image row).
static inline void input_1d(float *restrict y, size_t ys, const float *restrict x, size_t xs,
                            size_t xl, int n) {
    for (int l = 0; l < n; l++) {
        const float *r = x + (size_t)l * xl;
        float x0 = r[0 * xs], x1 = r[1 * xs], x2 = r[2 * xs];
        float x3 = r[3 * xs], x4 = r[4 * xs], x5 = r[5 * xs];
        y[0 * ys + l] = 4 * x0 - 5 * x2 + x4;
        y[1 * ys + l] = (x3 + x4) - 4 * (x1 + x2);
        y[2 * ys + l] = (x4 - x3) + 4 * (x1 - x2);
        y[3 * ys + l] = (x4 - x2) + 2 * (x3 - x1);
        y[4 * ys + l] = (x4 - x2) - 2 * (x3 - x1);
        y[5 * ys + l] = 4 * x1 - 5 * x3 + x5;
    }
}

// The geometry shared by both transforms.
typedef struct {
    int N, C, H, W, K, OH, OW, pad_h, pad_w;
    int tiles_w, P;   // tiles per row of tiles, per image
} conv_geom;

// The position of tile t: image n, top-left output pixel (y, x); step() moves to tile t + 1.
typedef struct {
    int n, y, x;
} tile_pos;

static tile_pos tile_at(long t, const conv_geom *g) {
    int in_image = (int)(t % g->P);
    return (tile_pos){(int)(t / g->P), in_image / g->tiles_w * TILE, in_image % g->tiles_w * TILE};
}

static void step(tile_pos *p, const conv_geom *g) {
    p->x += TILE;
    if (p->x < g->OW) return;
    p->x = 0;
    p->y += TILE;
    if (p->y < g->OH) return;
    p->y = 0;
    p->n++;
}

// t[i][k][l] = (d B)[i][k] for the patch d of tile t0 + l in channel c (0 outside the image);
// lanes past t_end (the end of the block) are zero. Neighbouring tiles of one row of tiles
// whose patches lie inside the image go together, straight from the image rows; a tile at an
// edge is first copied into a zero-padded patch.
static void row_transform_patches(float t[PATCH][PATCH][LANES], const float *inp, int c,
                                  long t0, long t_end, const conv_geom *g) {
    tile_pos p = tile_at(t0, g);
    for (int l = 0; l < LANES;) {
        if (t0 + l >= t_end) {   // past the block: zeros
            for (int i = 0; i < PATCH; i++) {
                for (int k = 0; k < PATCH; k++) t[i][k][l] = 0.0f;
            }
            l++;
            continue;
        }
        int y0 = p.y - g->pad_h, x0 = p.x - g->pad_w;   // the patch's top-left input pixel
        const float *plane = inp + ((size_t)p.n * g->C + c) * g->H * g->W;
        if (y0 >= 0 && y0 + PATCH <= g->H && x0 >= 0 && x0 + PATCH <= g->W) {
            int run = 1;   // tiles to the right in the same row whose patches are inside too
            while (l + run < LANES && t0 + l + run < t_end &&
                   p.x + run * TILE < g->OW && x0 + run * TILE + PATCH <= g->W)
                run++;
            for (int i = 0; i < PATCH; i++) {
                const float *src = plane + (size_t)(y0 + i) * g->W + x0;
                input_1d(&t[i][0][l], LANES, src, 1, TILE, run);   // (d B)[i]
            }
            for (int r = 0; r < run; r++) step(&p, g);
            l += run;
            continue;
        }
        // At an edge: the rows and columns inside the image, zeros elsewhere.
        float d[PATCH][PATCH] = {{0}};
        int i_lo = y0 < 0 ? -y0 : 0, i_hi = g->H - y0 < PATCH ? g->H - y0 : PATCH;
        int j_lo = x0 < 0 ? -x0 : 0, j_hi = g->W - x0 < PATCH ? g->W - x0 : PATCH;
        for (int i = i_lo; i < i_hi; i++) {
            for (int j = j_lo; j < j_hi; j++) d[i][j] = plane[(size_t)(y0 + i) * g->W + x0 + j];
        }
        for (int i = 0; i < PATCH; i++) input_1d(&t[i][0][l], LANES, d[i], 1, 0, 1);
        step(&p, g);
        l++;
    }
}

// V[xi][c][0..Tp) for the block of tiles [t0, t0 + T), every channel.
static void input_transform(float *V, const float *inp, long t0, int T, int Tp,
                            const conv_geom *g) {
    int groups = Tp / LANES;
    size_t vs = (size_t)g->C * Tp;   // between two positions xi of V
    work_share ws;
    work_share_begin(&ws, (long)g->C * groups);
    #pragma omp parallel
    for (long task; (task = work_share_next(&ws)) >= 0;) {
        int c = (int)(task / groups), lane0 = (int)(task % groups) * LANES;
        _Alignas(64) float t[PATCH][PATCH][LANES];
        // rows: t = d B, straight from the image ...
        row_transform_patches(t, inp, c, t0 + lane0, t0 + T, g);
        // ... columns: V = B^T t, column k of the result holds positions xi = k, 6 + k, ...
        float *v = V + (size_t)c * Tp + lane0;
        for (int k = 0; k < PATCH; k++) {
            input_1d(v + (size_t)k * vs, PATCH * vs, &t[0][k][0], PATCH * LANES, 1, LANES);
        }
    }
}

// ---- output: Y = A^T M A -------------------------------------------------------------------

// y_i = (A^T x)_i for 16 lanes, i = 0..3: x_j is x[j*xs + l], y_i goes to y[i*ys + l*yl].
// yl = TILE interleaves the lanes' 4 outputs, as neighbouring tiles' pixels lie in an output
// row (stores and shuffles).
static inline void output_1d(float *restrict y, size_t ys, size_t yl, const float *restrict x,
                             size_t xs) {
    for (int l = 0; l < LANES; l++) {
        float x0 = x[0 * xs + l], x5 = x[5 * xs + l];
        float a = x[1 * xs + l] + x[2 * xs + l], b = x[1 * xs + l] - x[2 * xs + l];
        float c = x[3 * xs + l] + x[4 * xs + l], e = x[3 * xs + l] - x[4 * xs + l];
        float *r = y + (size_t)l * yl;
        r[0 * ys] = x0 + a + c;
        r[1 * ys] = b + 2 * e;
        r[2 * ys] = a + 4 * c;
        r[3 * ys] = b + 8 * e + x5;
    }
}

// The fused epilogue of one output value: + residual (if any), then ReLU as relu_forward_ref
// (NaN stays NaN); the order of separate add and relu passes.
static inline float finish(float v, const float *residual, size_t at, int relu) {
    if (residual) v += residual[at];
    return relu && v < 0.0f ? 0.0f : v;
}

// The epilogue on a run of n outputs that are contiguous in out (and in residual), from v.
static void finish_run(float *restrict dst, float *restrict v, int n, const float *residual,
                       int relu) {
    if (residual) {
        for (int e = 0; e < n; e++) v[e] += residual[e];
    }
    if (relu) {
        for (int e = 0; e < n; e++) v[e] = v[e] < 0.0f ? 0.0f : v[e];
    }
    memcpy(dst, v, (size_t)n * sizeof(float));
}

// Writes y[a][l*4 + b] (output pixel (a, b) of tile t0 + l, channel k) into out, clipped to
// the output at the right and bottom edges, through the epilogue; lanes past t_end are dropped.
// Neighbouring tiles of one row of tiles, all of whose outputs exist, go together a row of
// pixels at a time: their 4 x run outputs are contiguous in y[a] and in out, so the epilogue
// and the store are loops over a contiguous run (vectorised) instead of one store per pixel.
// (y is overwritten.)
static void scatter_tiles(float *out, float y[TILE][TILE * LANES], int k, long t0, long t_end,
                          const float *residual, int relu, const conv_geom *g) {
    tile_pos p = tile_at(t0, g);
    for (int l = 0; l < LANES && t0 + l < t_end;) {
        size_t at = (((size_t)p.n * g->K + k) * g->OH + p.y) * g->OW + p.x;
        if (p.y + TILE <= g->OH && p.x + TILE <= g->OW) {   // whole tiles: how many in a row
            int run = 1;
            while (l + run < LANES && t0 + l + run < t_end && p.x + (run + 1) * TILE <= g->OW)
                run++;
            for (int a = 0; a < TILE; a++) {
                size_t o = at + (size_t)a * g->OW;
                finish_run(out + o, &y[a][l * TILE], run * TILE, residual ? residual + o : NULL,
                           relu);
            }
            for (int r = 0; r < run; r++) step(&p, g);
            l += run;
            continue;
        }
        int rows = g->OH - p.y < TILE ? g->OH - p.y : TILE;   // clipped at the edges
        int cols = g->OW - p.x < TILE ? g->OW - p.x : TILE;
        for (int a = 0; a < rows; a++) {
            for (int b = 0; b < cols; b++) {
                size_t o = at + (size_t)a * g->OW + b;
                out[o] = finish(y[a][l * TILE + b], residual, o, relu);
            }
        }
        step(&p, g);
        l++;
    }
}

// out for the block of tiles [t0, t0 + T) from M, every output channel; + bias, + residual,
// ReLU.
static void output_transform(float *out, const float *M, const float *bias,
                             const float *residual, int relu, long t0, int T, int Tp,
                             const conv_geom *g) {
    int groups = Tp / LANES;
    size_t ms = (size_t)g->K * Tp;   // between two positions xi of M
    work_share ws;
    work_share_begin(&ws, (long)g->K * groups);
    #pragma omp parallel
    for (long task; (task = work_share_next(&ws)) >= 0;) {
        int k = (int)(task / groups), lane0 = (int)(task % groups) * LANES;
        const float *m = M + (size_t)k * Tp + lane0;
        _Alignas(64) float am[TILE][PATCH][LANES], y[TILE][TILE * LANES];
        // columns: am = A^T M (4 x 6), column j from positions xi = j, 6 + j, ..., 30 + j ...
        for (int j = 0; j < PATCH; j++) {
            output_1d(&am[0][j][0], PATCH * LANES, 1, m + j * ms, PATCH * ms);
        }
        // ... rows: y = am A (4 x 4), row a of every lane's tile side by side
        for (int a = 0; a < TILE; a++) output_1d(&y[a][0], 1, TILE, &am[a][0][0], LANES);
        float bk = bias ? bias[k] : 0.0f;
        for (int a = 0; a < TILE; a++) {
            for (int e = 0; e < TILE * LANES; e++) y[a][e] += bk;
        }
        scatter_tiles(out, y, k, t0 + lane0, t0 + T, residual, relu, g);
    }
}

// ---- the whole conv ------------------------------------------------------------------------

void winograd_conv2d_forward(float *out, const float *inp, const float *U, int u_packed,
                             const float *bias, int N, int C, int H, int W, int K, int OH, int OW,
                             int pad_h, int pad_w, const float *residual, int relu,
                             float *workspace) {
    // out is (N,K,OH,OW), inp is (N,C,H,W), U is (36,K,C) or its packed form, bias is (K) or
    // NULL, residual is (N,K,OH,OW) or NULL
    if (N <= 0 || K <= 0 || OH <= 0 || OW <= 0) return;
    conv_geom g = {.N = N, .C = C, .H = H, .W = W, .K = K, .OH = OH, .OW = OW,
                   .pad_h = pad_h, .pad_w = pad_w, .tiles_w = (OW + TILE - 1) / TILE};
    g.P = (OH + TILE - 1) / TILE * g.tiles_w;
    long total = (long)N * g.P;
    int block = block_tiles(N, C, K, OH, OW);
    int block_p = round_up(block, LANES);
    float *V = workspace;                                       // (36, C, Tp)
    float *M = workspace + (size_t)POSITIONS * C * block_p;     // (36, K, Tp)
    for (long t0 = 0; t0 < total; t0 += block) {
        int T = total - t0 < block ? (int)(total - t0) : block;
        int Tp = round_up(T, LANES);   // the last block is packed tighter
        input_transform(V, inp, t0, T, Tp, &g);
        // The 36 products M[xi] (K, T) = U[xi] (K, C) @ V[xi] (C, T). One sgemm per thread at a
        // time (sgemm runs serially inside a parallel region): 36 coarse, equal tasks.
        #pragma omp parallel for schedule(dynamic)
        for (int xi = 0; xi < POSITIONS; xi++) {
            const float *V_xi = V + (size_t)xi * C * Tp;
            float *M_xi = M + (size_t)xi * K * Tp;
            if (u_packed) {
                sgemm_packed_a U_xi = sgemm_packed_a_of(U + xi * winograd_packed_slice_floats(K, C),
                                                        K, C);
                sgemm_operands op = {.a_packed = &U_xi, .lda = C, .B = V_xi, .ldb = Tp};
                sgemm_general(K, T, C, &op, M_xi, Tp, 0);
            } else {
                sgemm(K, T, C, U + (size_t)xi * K * C, C, V_xi, Tp, M_xi, Tp, 0);
            }
        }
        output_transform(out, M, bias, residual, relu, t0, T, Tp, &g);
    }
}
