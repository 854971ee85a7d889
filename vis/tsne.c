// tsne.c - t-SNE, readable top to bottom:
//
//   1. Affinities. Each point i gets a Gaussian over its neighbours whose width is chosen (by
//      bisection on its precision beta_i) so that its entropy is log(perplexity): the
//      conditional p(j|i) = exp(-beta_i d_ij^2) / sum_k exp(-beta_i d_ik^2). Only the
//      3 * perplexity nearest neighbours are used (farther ones get ~0 anyway). The joint
//      P = (P_cond + P_cond^T) / sum, symmetric and summing to 1.
//   2. The embedding y is compared through a Student-t kernel q_ij = w_ij / Z with
//      w_ij = 1 / (1 + |y_i - y_j|^2) and Z = sum_{k != l} w_kl. The gradient of KL(P || Q) is
//          dC/dy_i = 4 [ sum_j p_ij w_ij (y_i - y_j)  -  sum_j w_ij^2 (y_i - y_j) / Z ]
//                        attraction (sparse: P)         repulsion (all pairs)
//      Like bhtsne and openTSNE we drop the constant 4 (it only rescales the learning rate).
//   3. Exact gradient: both sums over all pairs, O(N^2): for small N.
//   4. Barnes-Hut: the repulsion from a far-away cell of a quadtree (2-D; octree 3-D) is the
//      repulsion from its centre of mass times its count: O(N log N) per step.
//   5. Optimiser: gradient descent with momentum (0.5, then 0.8) and per-coordinate gains
//      (delta-bar-delta: +0.2 when the direction changes, x0.8 otherwise), early exaggeration
//      (P x 12 for the first 250 steps), learning rate max(N / 12, 200) (Belkina et al. 2019;
//      with our gradient without the 4 this is scikit-learn's learning_rate='auto').
//   6. Initialisation: the first principal components scaled to standard deviation 1e-4 (as
//      scikit-learn's init='pca'), which keeps the global layout reproducible.
//
// Dims: N points, D input features, E output dimensions (dims), K neighbours per point.
// Determinism: every per-point sum runs on one thread in a fixed order and global sums are
// added in point order, so the result is the same for any number of threads.
//
// Speed. Per step the work is the repulsion (section 4) and the attraction over the ~1.5 K
// stored P entries of each point. Both are written as loops over LANES independent partial
// sums, which the compiler turns into vector code, and are compiled once more for AVX2 (see
// "SIMD variants"). The tree keeps buckets of up to LEAF_MAX points in its leaves and a copy of
// the positions in tree order, so building and walking it touch contiguous memory, and the
// points of a group of up to GROUP_MAX share one walk. A step is one parallel region, in which
// one thread builds the tree while the others start on the attraction. P is symmetrised by
// counting sorts, not a comparison sort.
#include "tsne.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "pca.h"

// The SIMD variants below must compute what the plain loops compute: no fused multiply-adds.
#pragma STDC FP_CONTRACT OFF

#define TSNE_MAX_DIMS 3            // Barnes-Hut cells have 2^E children
#define EXACT_MAX_POINTS 1000      // AUTO method: exact gradient up to this many points
#define MIN_PARALLEL_POINTS 1024   // below this, a step is too short to share between threads
#if defined(__GNUC__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE static inline
#endif

vis_tsne_options vis_tsne_defaults(void) {
    vis_tsne_options o = {0};
    o.dims = 2;
    o.perplexity = 30;
    o.iters = 1000;
    o.exaggeration_iters = 250;
    o.exaggeration = 12;
    o.learning_rate = 0;
    o.theta = 0.5;
    o.method = VIS_TSNE_AUTO;
    o.seed = 42;
    o.knn_method = VIS_KNN_AUTO;
    return o;
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// =============================================================================================
// 1. Affinities

// Finds beta for one point: p[j] = exp(-beta d2[j]) / sum with entropy log(perplexity).
// d2 [K] squared distances; writes the normalised p [K]. (scikit-learn's
// _binary_search_perplexity: 100 bisection steps at most, tolerance 1e-5 on the entropy.)
static void calibrate_row(const float *d2, int k, double perplexity, double *p) {
    const double desired_entropy = log(perplexity);
    double beta = 1, beta_min = -INFINITY, beta_max = INFINITY;
    for (int step = 0; step < 100; step++) {
        double sum_p = 0;
        for (int j = 0; j < k; j++) {
            p[j] = exp(-(double)d2[j] * beta);
            sum_p += p[j];
        }
        if (sum_p == 0) sum_p = 1e-8;
        double sum_d_p = 0;
        for (int j = 0; j < k; j++) {
            p[j] /= sum_p;
            sum_d_p += d2[j] * p[j];
        }
        double entropy = log(sum_p) + beta * sum_d_p;   // in nats
        double diff = entropy - desired_entropy;
        if (fabs(diff) <= 1e-5) break;
        if (diff > 0) {   // too flat: sharpen
            beta_min = beta;
            beta = beta_max == INFINITY ? beta * 2 : (beta + beta_max) / 2;
        } else {
            beta_max = beta;
            beta = beta_min == -INFINITY ? beta / 2 : (beta + beta_min) / 2;
        }
    }
}

// P = (C + C^T) / sum(C + C^T) from the conditional rows C[i, nb[i][c]] = cond[i][c]. Every
// conditional value appears twice in C + C^T, hence the sum (added in order).
static cnn_status symmetrize(int n, int k, int *nb, double *cond, vis_csr *out) {
    double total = 0;
    for (size_t s = 0; s < (size_t)n * k; s++) total += cond[s];
    double inv_total = total > 0 ? 1.0 / (2 * total) : 1.0;
    cnn_status st = vis_knn_union(n, k, nb, cond, VIS_UNION_SUM, inv_total, out);
    if (st != CNN_OK) return cnn_fail(st, "t-SNE: %s", cnn_last_error());
    return CNN_OK;
}

cnn_status vis_tsne_affinities(const float *x, int n, int dim, double perplexity, int k_all,
                               int knn_method, uint64_t seed, vis_csr *p) {
    if (n < 2) return cnn_fail(CNN_ERR_ARG, "t-SNE: need at least 2 points, got %d", n);
    if (!(perplexity > 0) || perplexity >= n)
        return cnn_fail(CNN_ERR_ARG, "t-SNE: perplexity must be in (0, N = %d), got %g", n, perplexity);
    int k = k_all ? n - 1 : (int)(3.0 * perplexity + 1);
    if (k > n - 1) k = n - 1;
    int *nb = malloc(sizeof(int) * (size_t)n * k);
    float *d = malloc(sizeof(float) * (size_t)n * k);
    double *cond = malloc(sizeof(double) * (size_t)n * k);
    cnn_status st = CNN_OK;
    if (!nb || !d || !cond) st = cnn_fail(CNN_ERR_NOMEM, "t-SNE: out of memory for %d x %d neighbours", n, k);
    if (st == CNN_OK) st = vis_knn_graph(x, n, dim, k, VIS_METRIC_L2, k_all ? VIS_KNN_EXACT : knn_method, seed, nb, d);
    if (st == CNN_OK) {
        #pragma omp parallel for schedule(dynamic, 64)
        for (int i = 0; i < n; i++) {
            float *d2 = d + (size_t)i * k;   // squared in place
            for (int c = 0; c < k; c++) d2[c] *= d2[c];
            calibrate_row(d2, k, perplexity, cond + (size_t)i * k);
        }
        st = symmetrize(n, k, nb, cond, p);
    }
    free(nb);
    free(d);
    free(cond);
    return st;
}

// =============================================================================================
// 2-3. Exact gradient (all pairs). grad [N, E]; returns Z.

static double gradient_exact(const vis_csr *p, double exaggeration, const float *y, int n, int e,
                             float *grad) {
    // z_row[i] = sum_j w_ij, summed in order afterwards for determinism
    double *z_row = malloc(sizeof(double) * (size_t)n);
    double *rep = malloc(sizeof(double) * (size_t)n * e);   // [N, E] sum_j w_ij^2 (y_i - y_j)
    if (!z_row || !rep) {
        free(z_row);
        free(rep);
        return -1;
    }
    #pragma omp parallel for schedule(static) if (n >= 256)   // O(N^2) per step
    for (int i = 0; i < n; i++) {
        double z = 0, *ri = rep + (size_t)i * e;
        for (int a = 0; a < e; a++) ri[a] = 0;
        for (int j = 0; j < n; j++) {
            if (j == i) continue;
            double d2 = 0;
            for (int a = 0; a < e; a++) {
                double diff = (double)y[(size_t)i * e + a] - y[(size_t)j * e + a];
                d2 += diff * diff;
            }
            double w = 1.0 / (1.0 + d2);
            z += w;
            for (int a = 0; a < e; a++) ri[a] += w * w * ((double)y[(size_t)i * e + a] - y[(size_t)j * e + a]);
        }
        z_row[i] = z;
    }
    double z = 0;
    for (int i = 0; i < n; i++) z += z_row[i];
    #pragma omp parallel for schedule(static) if (n >= 256)   // O(N^2) per step
    for (int i = 0; i < n; i++) {
        for (int a = 0; a < e; a++) {
            double attr = 0;
            for (int64_t s = p->row_start[i]; s < p->row_start[i + 1]; s++) {
                int j = p->col[s];
                double d2 = 0;
                for (int b = 0; b < e; b++) {
                    double diff = (double)y[(size_t)i * e + b] - y[(size_t)j * e + b];
                    d2 += diff * diff;
                }
                attr += p->val[s] * ((double)y[(size_t)i * e + a] - y[(size_t)j * e + a]) / (1.0 + d2);
            }
            grad[(size_t)i * e + a] = (float)(exaggeration * attr - rep[(size_t)i * e + a] / z);
        }
    }
    free(z_row);
    free(rep);
    return z;
}

// =============================================================================================
// 4. Barnes-Hut. A quadtree (E = 2; octree for 3) over the embedding, rebuilt every step by
// recursive partitioning: a node owns the contiguous range [first_point, first_point + count)
// of the tree order and splits it into its 2^E quadrants; a node of at most LEAF_MAX points is
// a leaf (a bucket: its points are visited one by one). Non-empty children are stored
// contiguously. The tree keeps the points' positions in tree order (pos), so building it and
// visiting a leaf read contiguous memory, and it keeps the order of the previous step, in
// which the points are already almost sorted.
//
// The repulsion on a point is sum_j w_ij^2 (y_i - y_j) and Z = sum_j w_ij. A node whose width is
// small against its distance (width^2 < theta^2 d^2) counts as `count` points at its centre of
// mass. Two ways to use the tree:
//   - bh_repulsion (any E): one traversal per point, as in van der Maaten (2014). Simple; the
//     reference for the grouped version.
//   - grouped (E = 2, the default): the points of a small node (a "group", at most GROUP_MAX
//     points) share one interaction list, built with the distance from each node to the
//     group's bounding box (never larger than the distance to any point of the group, so every
//     point is at least as accurate as with its own traversal). The list is then applied to
//     every point of the group by a branch-free loop the compiler vectorises. More arithmetic
//     than one walk per point, but far fewer walks and unpredictable branches: several times
//     faster.

#define BH_MAX_DEPTH 40
#define LEAF_MAX 16          // points in a leaf: fewer nodes, and short direct sums are cheap
#define GROUP_MAX 128        // points per group of the grouped repulsion (the fastest measured)
#define LANES 16             // independent partial sums in the vector loops

typedef struct {
    float com[TSNE_MAX_DIMS];       // centre of mass
    float width2;                   // (cell width)^2
    int count;                      // points inside
    int first_child, n_children;    // non-empty children: nodes[first_child .. + n_children)
    int first_point;                // its points: tree positions [first_point, + count)
} bh_node;

typedef struct {
    int e;
    bh_node *nodes;
    int n_nodes, cap;
    int *order;                     // [N] the point at each tree position
    float *pos;                     // [N, E] its position
} bh_tree;

static int bh_reserve(bh_tree *t, int more) {
    if (t->n_nodes + more <= t->cap) return 0;
    int cap = t->cap ? t->cap : 1024;
    while (cap < t->n_nodes + more) cap *= 2;
    bh_node *grown = realloc(t->nodes, sizeof(bh_node) * (size_t)cap);
    if (!grown) return -1;
    t->nodes = grown;
    t->cap = cap;
    return 0;
}

// Moves the tree positions [lo, hi) whose coordinate a is <= split to the front; returns the
// first position of the others.
static int bh_partition(bh_tree *t, int lo, int hi, int a, double split) {
    const int e = t->e;
    int i = lo, j = hi - 1;
    while (i <= j) {
        if (t->pos[(size_t)i * e + a] <= split) {
            i++;
            continue;
        }
        int tmp = t->order[i];
        t->order[i] = t->order[j];
        t->order[j] = tmp;
        for (int b = 0; b < e; b++) {
            float v = t->pos[(size_t)i * e + b];
            t->pos[(size_t)i * e + b] = t->pos[(size_t)j * e + b];
            t->pos[(size_t)j * e + b] = v;
        }
        j--;
    }
    return i;
}

// Fills node `ni` for the tree positions [lo, hi) inside the cube center +- half, then its
// children. Returns 0, or -1 when out of memory.
static int bh_split(bh_tree *t, int ni, int lo, int hi, const double *center, double half,
                    int depth) {
    const int e = t->e;
    bh_node *node = &t->nodes[ni];
    node->width2 = (float)(4 * half * half);
    node->count = hi - lo;
    node->first_child = -1;
    node->n_children = 0;
    node->first_point = lo;
    if (hi - lo <= LEAF_MAX || depth >= BH_MAX_DEPTH) {   // a leaf: the mean of its points
        double com[TSNE_MAX_DIMS] = {0};
        for (int p = lo; p < hi; p++)
            for (int a = 0; a < e; a++) com[a] += t->pos[(size_t)p * e + a];
        for (int a = 0; a < e; a++) node->com[a] = (float)(com[a] / (hi - lo));
        return 0;
    }
    // partition into quadrants: child q gets the points with (coordinate a > center a) == bit a,
    // axis a's bit at position (e - 1 - a) of q
    int start[1 << TSNE_MAX_DIMS], end[1 << TSNE_MAX_DIMS], n_parts = 1;
    start[0] = lo;
    end[0] = hi;
    for (int a = 0; a < e; a++) {
        for (int q = n_parts - 1; q >= 0; q--) {   // split part q along axis a into 2q, 2q+1
            int s0 = start[q], e0 = end[q], mid = bh_partition(t, s0, e0, a, center[a]);
            start[2 * q] = s0;
            end[2 * q] = mid;
            start[2 * q + 1] = mid;
            end[2 * q + 1] = e0;
        }
        n_parts *= 2;
    }
    int m = 0;
    for (int q = 0; q < n_parts; q++) m += end[q] > start[q];
    if (bh_reserve(t, m) < 0) return -1;
    int first_child = t->n_nodes;
    t->n_nodes += m;
    t->nodes[ni].first_child = first_child;
    t->nodes[ni].n_children = m;
    for (int q = 0, c = 0; q < n_parts; q++) {
        if (end[q] == start[q]) continue;
        double sub[TSNE_MAX_DIMS];
        for (int a = 0; a < e; a++)
            sub[a] = center[a] + (((q >> (e - 1 - a)) & 1) ? half / 2 : -half / 2);
        if (bh_split(t, first_child + c++, start[q], end[q], sub, half / 2, depth + 1) < 0) return -1;
    }
    // the centre of mass from the children's (nodes may have moved: realloc)
    double com[TSNE_MAX_DIMS] = {0};
    for (int c = 0; c < m; c++) {
        const bh_node *child = &t->nodes[first_child + c];
        for (int a = 0; a < e; a++) com[a] += (double)child->count * child->com[a];
    }
    for (int a = 0; a < e; a++) t->nodes[ni].com[a] = (float)(com[a] / (hi - lo));
    return 0;
}

static int bh_build(bh_tree *t, const float *y, int n, int e) {
    t->e = e;
    if (!t->order) {
        t->order = malloc(sizeof(int) * (size_t)n);
        t->pos = malloc(sizeof(float) * (size_t)n * e);
        if (!t->order || !t->pos) return -1;
        for (int i = 0; i < n; i++) t->order[i] = i;
    }
    double lo[TSNE_MAX_DIMS], hi[TSNE_MAX_DIMS], center[TSNE_MAX_DIMS] = {0}, half = 0;
    for (int a = 0; a < e; a++) {
        lo[a] = INFINITY;
        hi[a] = -INFINITY;
    }
    for (int p = 0; p < n; p++)   // positions in the previous step's tree order
        for (int a = 0; a < e; a++) {
            float v = y[(size_t)t->order[p] * e + a];
            t->pos[(size_t)p * e + a] = v;
            if (v < lo[a]) lo[a] = v;
            if (v > hi[a]) hi[a] = v;
        }
    for (int a = 0; a < e; a++) {
        center[a] = (lo[a] + hi[a]) / 2;
        if ((hi[a] - lo[a]) / 2 > half) half = (hi[a] - lo[a]) / 2;
    }
    half = half * (1 + 1e-6) + 1e-9;
    t->n_nodes = 0;
    if (bh_reserve(t, 1) < 0) return -1;
    t->n_nodes = 1;
    return bh_split(t, 0, 0, n, center, half, 0);
}

// Repulsion on the point at tree position `self` (one traversal); returns its Z term, adds to
// rep [E]. The point itself is left out.
ALWAYS_INLINE float bh_repulsion(const bh_tree *t, int self, float theta2, float *rep, const int e) {
    enum { MAX_STACK = 8 * (BH_MAX_DEPTH + 2) };
    const float *pos = t->pos + (size_t)self * e;
    int stack[MAX_STACK], top = 0;
    float z = 0;
    stack[top++] = 0;
    while (top > 0) {
        const bh_node *c = &t->nodes[stack[--top]];
        float diff[TSNE_MAX_DIMS], d2 = 0;
        for (int a = 0; a < e; a++) {
            diff[a] = pos[a] - c->com[a];
            d2 += diff[a] * diff[a];
        }
        if (c->width2 < theta2 * d2) {   // far: one body
            float w = 1.0f / (1.0f + d2);
            z += c->count * w;
            float f = c->count * w * w;
            for (int a = 0; a < e; a++) rep[a] += f * diff[a];
        } else if (c->n_children == 0) {   // a near leaf: its points one by one
            for (int p = c->first_point; p < c->first_point + c->count; p++) {
                if (p == self) continue;
                const float *q = t->pos + (size_t)p * e;
                float dq[TSNE_MAX_DIMS], dq2 = 0;
                for (int a = 0; a < e; a++) {
                    dq[a] = pos[a] - q[a];
                    dq2 += dq[a] * dq[a];
                }
                float w = 1.0f / (1.0f + dq2);
                z += w;
                for (int a = 0; a < e; a++) rep[a] += w * w * dq[a];
            }
        } else {
            for (int k = c->n_children - 1; k >= 0; k--) stack[top++] = c->first_child + k;
        }
    }
    return z;
}

// The interaction list of a group (E = 2): bodies of `count` points at (x, y), structure of
// arrays padded to a multiple of LANES.
typedef struct {
    float *x, *y, *count;   // [cap]
    int len, cap;
} body_list;

static int body_list_grow(body_list *l) {
    int cap = l->cap ? 2 * l->cap : 1024;
    float *nx = realloc(l->x, sizeof(float) * (size_t)cap);
    if (nx) l->x = nx;
    float *ny = realloc(l->y, sizeof(float) * (size_t)cap);
    if (ny) l->y = ny;
    float *nc = realloc(l->count, sizeof(float) * (size_t)cap);
    if (nc) l->count = nc;
    if (!nx || !ny || !nc) return -1;
    l->cap = cap;
    return 0;
}

static inline int body_push(body_list *l, float x, float y, float count) {
    if (l->len == l->cap && body_list_grow(l) < 0) return -1;
    l->x[l->len] = x;
    l->y[l->len] = y;
    l->count[l->len] = count;
    l->len++;
    return 0;
}

// The list of the group node g: the nodes far from the group's bounding box as bodies, and
// the points of the near leaves one by one (the group's own points, each point itself
// included: see apply_bodies).
static int group_list(const bh_tree *t, int g, float theta2, body_list *l) {
    enum { MAX_STACK = 4 * (BH_MAX_DEPTH + 2) };
    const bh_node *grp = &t->nodes[g];
    const float *gp = t->pos + (size_t)grp->first_point * 2;
    float bmin[2] = {INFINITY, INFINITY}, bmax[2] = {-INFINITY, -INFINITY};
    for (int k = 0; k < grp->count; k++)
        for (int a = 0; a < 2; a++) {
            float v = gp[2 * k + a];
            bmin[a] = v < bmin[a] ? v : bmin[a];
            bmax[a] = v > bmax[a] ? v : bmax[a];
        }
    int stack[MAX_STACK], top = 0;
    stack[top++] = 0;
    l->len = 0;
    while (top > 0) {
        const bh_node *c = &t->nodes[stack[--top]];
        // distance from the centre of mass to the box (0 inside it), as selects of values
        // computed anyway: they compile to max instructions instead of unpredictable branches
        float dx = bmin[0] - c->com[0], dx_hi = c->com[0] - bmax[0];
        float dy = bmin[1] - c->com[1], dy_hi = c->com[1] - bmax[1];
        dx = dx > dx_hi ? dx : dx_hi;
        dy = dy > dy_hi ? dy : dy_hi;
        dx = dx > 0.0f ? dx : 0.0f;
        dy = dy > 0.0f ? dy : 0.0f;
        if (c->width2 < theta2 * (dx * dx + dy * dy)) {
            if (body_push(l, c->com[0], c->com[1], (float)c->count) < 0) return -1;
        } else if (c->n_children == 0) {
            for (int p = c->first_point; p < c->first_point + c->count; p++) {
                const float *q = t->pos + (size_t)p * 2;
                if (body_push(l, q[0], q[1], 1.0f) < 0) return -1;
            }
        } else {
            for (int k = c->n_children - 1; k >= 0; k--) stack[top++] = c->first_child + k;
        }
    }
    while (l->len % LANES) {   // padding bodies: far away and empty, they add exactly 0
        if (body_push(l, 1e18f, 1e18f, 0.0f) < 0) return -1;
    }
    return 0;
}

// Applies the list to `count` points at p [count, 2]: z [count] and rep [count, 2]. Each lane
// u sums the bodies u, u + LANES, ...; the lanes are added in order at the end, so the numbers
// do not depend on the vector width. Each point meets itself in the list (a body of count 1 at
// distance 0: w = 1, no force), which is taken out of z at the end.
ALWAYS_INLINE void apply_bodies(const body_list *l, const float *p, int count, float *z, float *rep) {
    const float *lx = l->x, *ly = l->y, *lc = l->count;
    for (int k = 0; k < count; k++) {
        float px = p[2 * k], py = p[2 * k + 1];
        float zs[LANES] = {0}, rx[LANES] = {0}, ry[LANES] = {0};
        for (int b = 0; b < l->len; b += LANES) {
            #pragma omp simd
            for (int u = 0; u < LANES; u++) {
                float dx = px - lx[b + u], dy = py - ly[b + u];
                float w = 1.0f / (1.0f + dx * dx + dy * dy);
                float cw = lc[b + u] * w;
                zs[u] += cw;
                rx[u] += cw * w * dx;
                ry[u] += cw * w * dy;
            }
        }
        float zk = 0, fx = 0, fy = 0;
        for (int u = 0; u < LANES; u++) {
            zk += zs[u];
            fx += rx[u];
            fy += ry[u];
        }
        z[k] = zk - 1.0f;
        rep[2 * k] = fx;
        rep[2 * k + 1] = fy;
    }
}

// Attraction on the points [lo, hi) (E = 2): attr [N, 2] gets sum_j p_ij w_ij (y_i - y_j) over
// row i of pp, P with its rows padded to a multiple of LANES (see pad_rows). Entry s of a row
// goes to lane s % LANES.
ALWAYS_INLINE void attraction_2d(const vis_csr *pp, const float *y, int lo, int hi, float *attr) {
    const int *col = pp->col;
    const float *val = pp->val;
    for (int i = lo; i < hi; i++) {
        float yx = y[(size_t)i * 2], yy = y[(size_t)i * 2 + 1];
        float ax[LANES] = {0}, ay[LANES] = {0};
        for (int64_t s = pp->row_start[i]; s < pp->row_start[i + 1]; s += LANES) {
            #pragma omp simd
            for (int u = 0; u < LANES; u++) {
                int j = col[s + u];
                float dx = yx - y[(size_t)j * 2], dy = yy - y[(size_t)j * 2 + 1];
                float f = val[s + u] / (1.0f + dx * dx + dy * dy);
                ax[u] += f * dx;
                ay[u] += f * dy;
            }
        }
        float sx = 0, sy = 0;
        for (int u = 0; u < LANES; u++) {
            sx += ax[u];
            sy += ay[u];
        }
        attr[(size_t)i * 2] = sx;
        attr[(size_t)i * 2 + 1] = sy;
    }
}

// P with every row padded to a multiple of LANES by entries of value 0 that point at the row's
// own point (they add exactly 0), so that the vector loop above needs no remainder loop.
static cnn_status pad_rows(const vis_csr *p, vis_csr *pp) {
    int n = p->n;
    *pp = (vis_csr){n, malloc(sizeof(int64_t) * ((size_t)n + 1)), NULL, NULL};
    if (!pp->row_start) return cnn_fail(CNN_ERR_NOMEM, "t-SNE: out of memory for P");
    pp->row_start[0] = 0;
    for (int i = 0; i < n; i++) {
        int64_t len = p->row_start[i + 1] - p->row_start[i];
        pp->row_start[i + 1] = pp->row_start[i] + (len + LANES - 1) / LANES * LANES;
    }
    size_t nnz = (size_t)pp->row_start[n];
    pp->col = malloc(sizeof(int) * (nnz ? nnz : 1));
    pp->val = malloc(sizeof(float) * (nnz ? nnz : 1));
    if (!pp->col || !pp->val) {
        vis_csr_free(pp);
        return cnn_fail(CNN_ERR_NOMEM, "t-SNE: out of memory for P (%zu entries)", nnz);
    }
    for (int i = 0; i < n; i++) {
        int64_t s = p->row_start[i], d = pp->row_start[i];
        for (; s < p->row_start[i + 1]; s++, d++) {
            pp->col[d] = p->col[s];
            pp->val[d] = p->val[s];
        }
        for (; d < pp->row_start[i + 1]; d++) {
            pp->col[d] = i;
            pp->val[d] = 0.0f;
        }
    }
    return CNN_OK;
}

// Any E, one point.
static void attraction(const vis_csr *p, const float *y, int i, float *attr, const int e) {
    const float *yi = y + (size_t)i * e;
    const int *col = p->col;
    const float *val = p->val;
    for (int a = 0; a < e; a++) attr[a] = 0;
    for (int64_t s = p->row_start[i]; s < p->row_start[i + 1]; s++) {
        const float *yj = y + (size_t)col[s] * e;
        float diff[TSNE_MAX_DIMS], d2 = 0;
        for (int a = 0; a < e; a++) {
            diff[a] = yi[a] - yj[a];
            d2 += diff[a] * diff[a];
        }
        float f = val[s] / (1.0f + d2);
        for (int a = 0; a < e; a++) attr[a] += f * diff[a];
    }
}

// ---------------------------------------------------------------------------------------------
// SIMD variants. apply_bodies and attraction_2d are most of the time of a step. Their loops
// have a fixed number of independent lanes and no fused multiply-add, so the plain (SSE2) code
// and the AVX2 code compute exactly the same numbers; AVX2 only needs half the instructions.
// This file is compiled for baseline x86-64, so the AVX2 copies are made with the target
// attribute and chosen when the engine picked AVX2 or AVX-512 for this CPU (cnn_isa();
// CNNSCOPE_ISA=scalar forces the plain loops). No AVX-512 copies: the attraction measured
// slower with them (filling 16 lanes from scattered neighbours costs more than the wider
// arithmetic saves) and the repulsion only 8 % faster. No gather instructions either: on this
// project's machine they were 30 times slower than the loads the compiler writes instead.

typedef struct {
    void (*apply)(const body_list *l, const float *p, int count, float *z, float *rep);
    void (*attract)(const vis_csr *pp, const float *y, int lo, int hi, float *attr);
} tsne_kernels;

static void apply_bodies_plain(const body_list *l, const float *p, int count, float *z, float *rep) {
    apply_bodies(l, p, count, z, rep);
}
static void attraction_2d_plain(const vis_csr *pp, const float *y, int lo, int hi, float *attr) {
    attraction_2d(pp, y, lo, hi, attr);
}
#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_AVX2_VARIANTS 1
__attribute__((target("avx2"))) static void apply_bodies_avx2(const body_list *l, const float *p,
                                                              int count, float *z, float *rep) {
    apply_bodies(l, p, count, z, rep);
}
__attribute__((target("avx2"))) static void attraction_2d_avx2(const vis_csr *pp, const float *y,
                                                               int lo, int hi, float *attr) {
    attraction_2d(pp, y, lo, hi, attr);
}
#endif

static tsne_kernels pick_kernels(void) {
    tsne_kernels k = {apply_bodies_plain, attraction_2d_plain};
#ifdef HAVE_AVX2_VARIANTS
    const char *isa = cnn_isa();
    if (strcmp(isa, "avx2") == 0 || strcmp(isa, "avx512") == 0)
        k = (tsne_kernels){apply_bodies_avx2, attraction_2d_avx2};
#endif
    return k;
}

// ---------------------------------------------------------------------------------------------
// The Barnes-Hut gradient.

// The groups: the largest nodes with at most GROUP_MAX points (they partition the points).
static int collect_groups(const bh_tree *t, int *groups) {
    enum { MAX_STACK = 8 * (BH_MAX_DEPTH + 2) };
    int stack[MAX_STACK], top = 0, n = 0;
    stack[top++] = 0;
    while (top > 0) {
        int ni = stack[--top];
        const bh_node *c = &t->nodes[ni];
        if (c->count <= GROUP_MAX || c->n_children == 0) groups[n++] = ni;
        else for (int k = c->n_children - 1; k >= 0; k--) stack[top++] = c->first_child + k;
    }
    return n;
}

typedef struct {
    const vis_csr *p;
    vis_csr padded;             // E = 2: p with padded rows (pad_rows)
    int n, e;
    double theta;
    int grouped;                // E = 2 only: shared interaction lists (else one walk per point)
    tsne_kernels kernels;
    bh_tree tree;
    int *groups;                // [N] group nodes (scratch)
    float *z_row;               // [N] Z terms per point, in tree order
    float *rep;                 // [N, E] repulsion, in tree order
    float *attr;                // [N, E] attraction
    body_list *lists;           // one per thread
    int n_lists;
} bh_work;

// Barnes-Hut gradient: grad [N, E]; returns Z (negative when out of memory).
static double gradient_barnes_hut(bh_work *w, double exaggeration, const float *y, float *grad) {
    const vis_csr *p = w->p;
    const int n = w->n, e = w->e;
    bh_tree *tree = &w->tree;
    float theta2 = (float)(w->theta * w->theta);
    // Two flags: every thread decides on the repulsion's worksharing loop from no_tree, which
    // nothing changes after the barrier; out_of_memory is set from inside that loop.
    int n_groups = 0, no_tree = 0, out_of_memory = 0;
    double z = 0;
    #pragma omp parallel if (n >= MIN_PARALLEL_POINTS)
    {
        // The tree is built (serially) by one thread while the others start on the attraction,
        // which does not need it; the barrier after the attraction waits for both.
        #pragma omp single nowait
        {
            if (bh_build(tree, y, n, e) < 0) no_tree = 1;
            else if (e == 2 && w->grouped) n_groups = collect_groups(tree, w->groups);
        }
        // attraction, in point order
        if (e == 2) {
            #pragma omp for schedule(dynamic, 1) nowait
            for (int i0 = 0; i0 < n; i0 += 64)
                w->kernels.attract(&w->padded, y, i0, i0 + 64 < n ? i0 + 64 : n, w->attr);
        } else {
            #pragma omp for schedule(dynamic, 64) nowait
            for (int i = 0; i < n; i++) attraction(p, y, i, w->attr + (size_t)i * e, e);
        }
        #pragma omp barrier
        // repulsion, in tree order
        if (!no_tree && e == 2 && w->grouped) {
            int thread = 0;
#ifdef _OPENMP
            thread = omp_get_thread_num();
#endif
            body_list *list = &w->lists[thread];
            #pragma omp for schedule(dynamic, 4)
            for (int g = 0; g < n_groups; g++) {
                const bh_node *grp = &tree->nodes[w->groups[g]];
                if (group_list(tree, w->groups[g], theta2, list) < 0) {
                    #pragma omp atomic write
                    out_of_memory = 1;
                    continue;
                }
                w->kernels.apply(list, tree->pos + (size_t)grp->first_point * 2, grp->count,
                                 w->z_row + grp->first_point, w->rep + (size_t)grp->first_point * 2);
            }
        } else if (!no_tree) {
            #pragma omp for schedule(dynamic, 256)
            for (int t = 0; t < n; t++) {
                float r[TSNE_MAX_DIMS] = {0};
                // e == 2 spelled out so the compiler keeps the per-dimension loops in registers
                w->z_row[t] = e == 2 ? bh_repulsion(tree, t, theta2, r, 2)
                                     : bh_repulsion(tree, t, theta2, r, e);
                for (int a = 0; a < e; a++) w->rep[(size_t)t * e + a] = r[a];
            }
        }
        if (!no_tree) {
            // Z in tree order: the same sum for any number of threads
            #pragma omp single
            for (int t = 0; t < n; t++) z += w->z_row[t];
            float inv_z = (float)(1.0 / z), exag = (float)exaggeration;
            #pragma omp for schedule(static)
            for (int t = 0; t < n; t++) {
                int i = tree->order[t];
                for (int a = 0; a < e; a++)
                    grad[(size_t)i * e + a] =
                        exag * w->attr[(size_t)i * e + a] - w->rep[(size_t)t * e + a] * inv_z;
            }
        }
    }
    return no_tree || out_of_memory ? -1 : z;
}

// KL(P || Q) = sum p_ij log(p_ij / q_ij), q_ij = w_ij / Z, over the stored P entries.
static double kl_divergence(const vis_csr *p, const float *y, int n, int e, double z) {
    double kl = 0;
    for (int i = 0; i < n; i++)
        for (int64_t s = p->row_start[i]; s < p->row_start[i + 1]; s++) {
            double d2 = 0;
            for (int a = 0; a < e; a++) {
                double diff = (double)y[(size_t)i * e + a] - y[(size_t)p->col[s] * e + a];
                d2 += diff * diff;
            }
            double q = 1.0 / (1.0 + d2) / z;
            if (p->val[s] > 0) kl += p->val[s] * log(p->val[s] / (q > DBL_MIN ? q : DBL_MIN));
        }
    return kl;
}

// =============================================================================================
// 6. Initialisation

static cnn_status initialise(const float *x, int n, int dim, const vis_tsne_options *opt, float *y) {
    int e = opt->dims;
    if (!opt->init_random && e <= dim && e <= n) {
        vis_pca pca;
        cnn_status st = vis_pca_fit(x, n, dim, e, VIS_PCA_AUTO, opt->seed, &pca);
        if (st == CNN_OK) st = vis_pca_transform(&pca, x, n, y);
        vis_pca_free(&pca);
        if (st != CNN_OK) return st;
        double mean = 0, var = 0;
        for (int i = 0; i < n; i++) mean += y[(size_t)i * e];
        mean /= n;
        for (int i = 0; i < n; i++) var += (y[(size_t)i * e] - mean) * (y[(size_t)i * e] - mean);
        double sd = sqrt(var / n);
        double scale = sd > 0 ? 1e-4 / sd : 1.0;
        for (size_t i = 0; i < (size_t)n * e; i++) y[i] = (float)(y[i] * scale);
        return CNN_OK;
    }
    uint64_t rng = opt->seed ^ 0x75E5EEDull;
    for (size_t i = 0; i < (size_t)n * e; i++) {
        double u = vis_random_uniform(&rng), v = vis_random_uniform(&rng);
        y[i] = (float)(1e-4 * sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v));
    }
    return CNN_OK;
}

// =============================================================================================
// 5. The driver and optimiser

cnn_status vis_tsne(const float *x, int n, int dim, const vis_tsne_options *opt, float *y,
                    vis_tsne_report *report) {
    int e = opt->dims;
    int exact = opt->method == VIS_TSNE_EXACT ||
                (opt->method == VIS_TSNE_AUTO && n <= EXACT_MAX_POINTS);
    if (e < 1 || (!exact && e > TSNE_MAX_DIMS))
        return cnn_fail(CNN_ERR_ARG, "t-SNE: %d output dimensions (Barnes-Hut: 1..%d)", e, TSNE_MAX_DIMS);
    if (opt->iters < 0 || opt->exaggeration_iters < 0 || !(opt->theta >= 0))
        return cnn_fail(CNN_ERR_ARG, "t-SNE: iterations and theta must be >= 0");
    double start = seconds_now();
    vis_csr p = {0};
    cnn_status st = vis_tsne_affinities(x, n, dim, opt->perplexity, exact, opt->knn_method,
                                        opt->seed, &p);
    if (st != CNN_OK) return st;
    double t_aff = seconds_now() - start;
    double lr = opt->learning_rate > 0 ? opt->learning_rate : n / opt->exaggeration;
    if (opt->learning_rate <= 0 && lr < 200) lr = 200;

    size_t ne = (size_t)n * e;
    int n_threads = 1;
#ifdef _OPENMP
    n_threads = omp_get_max_threads();
#endif
    float *grad = malloc(sizeof(float) * ne);
    float *update = calloc(ne, sizeof(float));
    float *gains = malloc(sizeof(float) * ne);
    bh_work bh = {.p = &p, .n = n, .e = e, .theta = opt->theta, .grouped = !opt->per_point,
                  .kernels = pick_kernels(), .n_lists = n_threads};
    bh.groups = malloc(sizeof(int) * (size_t)n);
    bh.z_row = malloc(sizeof(float) * (size_t)n);
    bh.rep = malloc(sizeof(float) * ne);
    bh.attr = malloc(sizeof(float) * ne);
    bh.lists = calloc((size_t)n_threads, sizeof(body_list));
    if (!grad || !update || !gains || !bh.groups || !bh.z_row || !bh.rep || !bh.attr || !bh.lists) {
        st = cnn_fail(CNN_ERR_NOMEM, "t-SNE: out of memory for %d points", n);
        goto done;
    }
    if (!exact && e == 2) st = pad_rows(&p, &bh.padded);
    for (size_t i = 0; i < ne; i++) gains[i] = 1.0f;
    if (st == CNN_OK) st = initialise(x, n, dim, opt, y);
    double z = 1;
    for (int it = 0; st == CNN_OK && it < opt->iters; it++) {
        int early = it < opt->exaggeration_iters;
        double exaggeration = early ? opt->exaggeration : 1.0;
        float momentum = early ? 0.5f : 0.8f, rate = (float)lr;
        z = exact ? gradient_exact(&p, exaggeration, y, n, e, grad)
                  : gradient_barnes_hut(&bh, exaggeration, y, grad);
        if (z < 0) {
            st = cnn_fail(CNN_ERR_NOMEM, "t-SNE: out of memory for the gradient");
            break;
        }
        // gains grow where the gradient keeps flipping the direction of travel, shrink otherwise
        #pragma omp parallel for schedule(static) if (n >= MIN_PARALLEL_POINTS)
        for (size_t i = 0; i < ne; i++) {
            int flipped = (grad[i] > 0) != (update[i] > 0);
            gains[i] = flipped ? gains[i] + 0.2f : gains[i] * 0.8f;
            if (gains[i] < 0.01f) gains[i] = 0.01f;
            update[i] = momentum * update[i] - rate * gains[i] * grad[i];
            y[i] += update[i];
        }
        // keep the embedding centred (the gradient is translation invariant)
        for (int a = 0; a < e; a++) {
            double mean = 0;
            for (int i = 0; i < n; i++) mean += y[(size_t)i * e + a];
            mean /= n;
            for (int i = 0; i < n; i++) y[(size_t)i * e + a] -= (float)mean;
        }
        if (opt->progress && ((it + 1) % 50 == 0 || it + 1 == opt->iters))
            opt->progress(opt->progress_user, it + 1, opt->iters);
    }
    if (st == CNN_OK && report) {
        z = exact ? gradient_exact(&p, 1.0, y, n, e, grad) : gradient_barnes_hut(&bh, 1.0, y, grad);
        report->kl_divergence = z > 0 ? kl_divergence(&p, y, n, e, z) : NAN;
        report->learning_rate = lr;
        report->exact = exact;
        report->seconds_affinities = t_aff;
        report->seconds_optimise = seconds_now() - start - t_aff;
    }
done:
    free(grad);
    free(update);
    free(gains);
    free(bh.tree.nodes);
    free(bh.tree.order);
    free(bh.tree.pos);
    free(bh.groups);
    free(bh.z_row);
    free(bh.rep);
    free(bh.attr);
    for (int t = 0; bh.lists && t < bh.n_lists; t++) {
        free(bh.lists[t].x);
        free(bh.lists[t].y);
        free(bh.lists[t].count);
    }
    free(bh.lists);
    vis_csr_free(&bh.padded);
    vis_csr_free(&p);
    return st;
}
