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
#include "tsne.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pca.h"

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

typedef struct {
    int row, col;
    float val;
} triplet;

static int triplet_cmp(const void *pa, const void *pb) {
    const triplet *a = pa, *b = pb;
    if (a->row != b->row) return a->row < b->row ? -1 : 1;
    return (a->col > b->col) - (a->col < b->col);
}

// P = (C + C^T) / sum(C + C^T) from the conditional rows C[i, nb[i][c]] = cond[i][c].
static cnn_status symmetrize(int n, int k, const int *nb, const double *cond, vis_csr *out) {
    size_t nnz2 = (size_t)2 * n * k;
    triplet *t = malloc(sizeof(triplet) * nnz2);
    vis_csr p = {n, calloc((size_t)n + 1, sizeof(int64_t)), NULL, NULL};
    if (!t || !p.row_start) {
        free(t);
        vis_csr_free(&p);
        return cnn_fail(CNN_ERR_NOMEM, "t-SNE: out of memory for %zu affinities", nnz2);
    }
    size_t m = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < k; c++) {
            int j = nb[(size_t)i * k + c];
            float v = (float)cond[(size_t)i * k + c];
            t[m++] = (triplet){i, j, v};
            t[m++] = (triplet){j, i, v};
        }
    qsort(t, m, sizeof *t, triplet_cmp);
    // merge duplicates (i, j) coming from both directions
    size_t w = 0;
    for (size_t r = 0; r < m; r++) {
        if (w > 0 && t[w - 1].row == t[r].row && t[w - 1].col == t[r].col) t[w - 1].val += t[r].val;
        else t[w++] = t[r];
    }
    p.col = malloc(sizeof(int) * (w ? w : 1));
    p.val = malloc(sizeof(float) * (w ? w : 1));
    if (!p.col || !p.val) {
        free(t);
        vis_csr_free(&p);
        return cnn_fail(CNN_ERR_NOMEM, "t-SNE: out of memory for %zu affinities", w);
    }
    double total = 0;
    for (size_t e = 0; e < w; e++) total += t[e].val;
    if (total <= 0) total = DBL_MIN;
    for (size_t e = 0; e < w; e++) {
        p.row_start[t[e].row + 1]++;
        p.col[e] = t[e].col;
        p.val[e] = (float)(t[e].val / total);
    }
    for (int i = 0; i < n; i++) p.row_start[i + 1] += p.row_start[i];
    free(t);
    *out = p;
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
// recursive partitioning of an index array: a node owns the contiguous range
// order[first_point .. first_point + count) of points and splits it into its 2^E quadrants.
// Nodes are stored with their non-empty children contiguous.
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
//     every point of the group by a branch-free loop the compiler vectorises. The same work
//     with far fewer unpredictable branches: several times faster.

#define BH_MAX_DEPTH 40
#define GROUP_MAX 32         // points per group of the grouped repulsion
#define LANES 8              // interaction lists are padded to a multiple of this

typedef struct {
    float com[TSNE_MAX_DIMS];       // centre of mass
    float width2;                   // (cell width)^2
    int count;                      // points inside
    int first_child, n_children;    // non-empty children: nodes[first_child .. + n_children)
    int first_point;                // its points: order[first_point .. + count)
} bh_node;

typedef struct {
    int e;
    bh_node *nodes;
    int n_nodes, cap;
    int *order;                     // [N] point indices, grouped by node
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

// Fills node `ni` for the points order[lo, hi) inside the cube center +- half, then its
// children. Returns 0, or -1 when out of memory.
static int bh_split(bh_tree *t, const float *y, int ni, int lo, int hi, const double *center,
                    double half, int depth) {
    int e = t->e;
    double com[TSNE_MAX_DIMS] = {0};
    int same = 1;
    const float *first = y + (size_t)t->order[lo] * e;
    for (int p = lo; p < hi; p++) {
        const float *yp = y + (size_t)t->order[p] * e;
        for (int a = 0; a < e; a++) {
            com[a] += yp[a];
            same &= yp[a] == first[a];
        }
    }
    bh_node *node = &t->nodes[ni];
    for (int a = 0; a < e; a++) node->com[a] = (float)(com[a] / (hi - lo));
    node->width2 = (float)(4 * half * half);
    node->count = hi - lo;
    node->first_child = -1;
    node->n_children = 0;
    node->first_point = lo;
    if (hi - lo == 1 || same || depth >= BH_MAX_DEPTH) return 0;   // a leaf
    // partition into quadrants: child q gets the points with (coordinate a > center a) == bit a
    int start[1 << TSNE_MAX_DIMS], end[1 << TSNE_MAX_DIMS], n_parts = 1;
    start[0] = lo;
    end[0] = hi;
    for (int a = 0; a < e; a++) {
        int parts = n_parts;
        for (int q = parts - 1; q >= 0; q--) {   // split part q along axis a into 2q, 2q+1
            int i = start[q], j = end[q] - 1;
            while (i <= j) {
                if (y[(size_t)t->order[i] * e + a] <= center[a]) {
                    i++;
                } else {
                    int tmp = t->order[i];
                    t->order[i] = t->order[j];
                    t->order[j] = tmp;
                    j--;
                }
            }
            int s0 = start[q], e0 = end[q];
            start[2 * q] = s0;
            end[2 * q] = i;
            start[2 * q + 1] = i;
            end[2 * q + 1] = e0;
        }
        n_parts *= 2;
    }
    // part index bits are in axis order from the most significant: part p has axis a's bit at
    // position (e - 1 - a)
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
        if (bh_split(t, y, first_child + c++, start[q], end[q], sub, half / 2, depth + 1) < 0) return -1;
    }
    return 0;
}

static int bh_build(bh_tree *t, const float *y, int n, int e) {
    t->e = e;
    double lo[TSNE_MAX_DIMS], hi[TSNE_MAX_DIMS], center[TSNE_MAX_DIMS] = {0}, half = 0;
    for (int a = 0; a < e; a++) {
        lo[a] = INFINITY;
        hi[a] = -INFINITY;
    }
    for (int i = 0; i < n; i++)
        for (int a = 0; a < e; a++) {
            double v = y[(size_t)i * e + a];
            if (v < lo[a]) lo[a] = v;
            if (v > hi[a]) hi[a] = v;
        }
    for (int a = 0; a < e; a++) {
        center[a] = (lo[a] + hi[a]) / 2;
        if ((hi[a] - lo[a]) / 2 > half) half = (hi[a] - lo[a]) / 2;
    }
    half = half * (1 + 1e-6) + 1e-9;
    if (!t->order) t->order = malloc(sizeof(int) * (size_t)n);
    if (!t->order) return -1;
    for (int i = 0; i < n; i++) t->order[i] = i;
    t->n_nodes = 0;
    if (bh_reserve(t, 1) < 0) return -1;
    t->n_nodes = 1;
    return bh_split(t, y, 0, 0, n, center, half, 0);
}

// Repulsion on the point at pos (one traversal); returns its Z term, adds to rep [E]. The point
// itself (distance 0 in its own leaf) is left out.
ALWAYS_INLINE float bh_repulsion(const bh_tree *t, const float *pos, float theta2, float *rep,
                                 const int e) {
    enum { MAX_STACK = 8 * (BH_MAX_DEPTH + 2) };
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
        if (c->n_children == 0 || c->width2 < theta2 * d2) {
            float count = (float)(c->count - (c->n_children == 0 && d2 == 0));
            float w = 1.0f / (1.0f + d2);
            z += count * w;
            float f = count * w * w;
            for (int a = 0; a < e; a++) rep[a] += f * diff[a];
        } else {
            for (int k = c->n_children - 1; k >= 0; k--) stack[top++] = c->first_child + k;
        }
    }
    return z;
}

// The grouped repulsion (E = 2) for the points of node g. list is scratch of 3 * cap floats.
typedef struct {
    float *x, *y, *count;   // [cap] bodies: position and number of points
    int len, cap;
} body_list;

static int body_push(body_list *l, float x, float y, float count) {
    if (l->len == l->cap) {
        int cap = l->cap ? 2 * l->cap : 1024;
        float *nx = realloc(l->x, sizeof(float) * (size_t)cap);
        if (nx) l->x = nx;
        float *ny = realloc(l->y, sizeof(float) * (size_t)cap);
        if (ny) l->y = ny;
        float *nc = realloc(l->count, sizeof(float) * (size_t)cap);
        if (nc) l->count = nc;
        if (!nx || !ny || !nc) return -1;
        l->cap = cap;
    }
    l->x[l->len] = x;
    l->y[l->len] = y;
    l->count[l->len] = count;
    l->len++;
    return 0;
}

static int group_repulsion(const bh_tree *t, int g, const float *y, float theta2, body_list *l,
                           double *rep, double *z_row) {
    enum { MAX_STACK = 4 * (BH_MAX_DEPTH + 2) };
    const bh_node *grp = &t->nodes[g];
    const int *pts = t->order + grp->first_point;
    float bmin[2] = {INFINITY, INFINITY}, bmax[2] = {-INFINITY, -INFINITY};
    for (int k = 0; k < grp->count; k++)
        for (int a = 0; a < 2; a++) {
            float v = y[(size_t)pts[k] * 2 + a];
            if (v < bmin[a]) bmin[a] = v;
            if (v > bmax[a]) bmax[a] = v;
        }
    // the interaction list of the group
    int stack[MAX_STACK], top = 0;
    stack[top++] = 0;
    l->len = 0;
    while (top > 0) {
        const bh_node *c = &t->nodes[stack[--top]];
        // distance from the centre of mass to the box (0 inside it)
        float dx = c->com[0] < bmin[0] ? bmin[0] - c->com[0] : c->com[0] > bmax[0] ? c->com[0] - bmax[0] : 0.0f;
        float dy = c->com[1] < bmin[1] ? bmin[1] - c->com[1] : c->com[1] > bmax[1] ? c->com[1] - bmax[1] : 0.0f;
        if (c->n_children == 0 || c->width2 < theta2 * (dx * dx + dy * dy)) {
            if (body_push(l, c->com[0], c->com[1], (float)c->count) < 0) return -1;
        } else {
            for (int k = c->n_children - 1; k >= 0; k--) stack[top++] = c->first_child + k;
        }
    }
    while (l->len % LANES) {   // padding bodies: far away and empty, they add exactly 0
        if (body_push(l, 1e18f, 1e18f, 0.0f) < 0) return -1;
    }
    // apply it to every point of the group: LANES independent partial sums, added in order
    for (int k = 0; k < grp->count; k++) {
        int i = pts[k];
        float px = y[(size_t)i * 2], py = y[(size_t)i * 2 + 1];
        float zs[LANES] = {0}, rx[LANES] = {0}, ry[LANES] = {0};
        const float *lx = l->x, *ly = l->y, *lc = l->count;
        for (int b = 0; b < l->len; b += LANES) {
            // lanes are independent (no reassociation): the same sums vectorised or not
            #pragma omp simd
            for (int u = 0; u < LANES; u++) {
                float dx = px - lx[b + u], dy = py - ly[b + u];
                float d2 = dx * dx + dy * dy;
                float self = (float)(d2 == 0.0f);   // the point itself: distance exactly 0
                float count = lc[b + u] - self;
                float w = 1.0f / (1.0f + d2);
                float cw = count * w;
                zs[u] += cw;
                rx[u] += cw * w * dx;
                ry[u] += cw * w * dy;
            }
        }
        float z = 0, fx = 0, fy = 0;
        for (int u = 0; u < LANES; u++) {
            z += zs[u];
            fx += rx[u];
            fy += ry[u];
        }
        z_row[i] = z;
        rep[(size_t)i * 2] = fx;
        rep[(size_t)i * 2 + 1] = fy;
    }
    return 0;
}

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

// Attraction on point i: attr += sum_j p_ij w_ij (y_i - y_j) over the stored P entries of row i.
// attraction_2d is the same for E = 2, written out so that it stays in registers.
static void attraction_2d(const vis_csr *p, const float *y, int i, float *attr) {
    float yx = y[(size_t)i * 2], yy = y[(size_t)i * 2 + 1], ax = 0, ay = 0;
    const int *col = p->col;
    const float *val = p->val;
    for (int64_t s = p->row_start[i], end = p->row_start[i + 1]; s < end; s++) {
        float dx = yx - y[(size_t)col[s] * 2], dy = yy - y[(size_t)col[s] * 2 + 1];
        float f = val[s] / (1.0f + dx * dx + dy * dy);
        ax += f * dx;
        ay += f * dy;
    }
    attr[0] = ax;
    attr[1] = ay;
}

static void attraction(const vis_csr *p, const float *y, int i, float *attr, const int e) {
    const float *yi = y + (size_t)i * e;
    const int *col = p->col;
    const float *val = p->val;
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

// Barnes-Hut gradient: grad [N, E]; returns Z (negative when out of memory). groups is scratch
// [N]. grouped = 0 forces the per-point traversal (E = 2 only uses groups).
static double gradient_barnes_hut(const vis_csr *p, double exaggeration, const float *y, int n,
                                  int e, double theta, int grouped, bh_tree *tree, int *groups,
                                  double *rep, double *z_row, float *grad) {
    if (bh_build(tree, y, n, e) < 0) return -1;
    float theta2 = (float)(theta * theta);
    int failed = 0;
    if (e == 2 && grouped) {
        int n_groups = collect_groups(tree, groups);
        #pragma omp parallel if (n >= MIN_PARALLEL_POINTS)
        {
            body_list list = {0};
            #pragma omp for schedule(dynamic, 4)
            for (int g = 0; g < n_groups; g++)
                if (group_repulsion(tree, groups[g], y, theta2, &list, rep, z_row) < 0) {
                    #pragma omp atomic write
                    failed = 1;
                }
            free(list.x);
            free(list.y);
            free(list.count);
        }
    } else {
        #pragma omp parallel for schedule(dynamic, 256) if (n >= MIN_PARALLEL_POINTS)
        for (int i = 0; i < n; i++) {
            float r[TSNE_MAX_DIMS] = {0};
            // e == 2 spelled out so the compiler keeps the per-dimension loops in registers
            z_row[i] = e == 2 ? bh_repulsion(tree, y + (size_t)i * 2, theta2, r, 2)
                              : bh_repulsion(tree, y + (size_t)i * e, theta2, r, e);
            for (int a = 0; a < e; a++) rep[(size_t)i * e + a] = r[a];
        }
    }
    if (failed) return -1;
    double z = 0;
    for (int i = 0; i < n; i++) z += z_row[i];
    float inv_z = (float)(1.0 / z), exag = (float)exaggeration;
    #pragma omp parallel for schedule(static) if (n >= MIN_PARALLEL_POINTS)
    for (int i = 0; i < n; i++) {
        float attr[TSNE_MAX_DIMS] = {0};
        if (e == 2) attraction_2d(p, y, i, attr);
        else attraction(p, y, i, attr, e);
        for (int a = 0; a < e; a++)
            grad[(size_t)i * e + a] = exag * attr[a] - (float)rep[(size_t)i * e + a] * inv_z;
    }
    return z;
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
    float *grad = malloc(sizeof(float) * ne);
    float *update = calloc(ne, sizeof(float));
    float *gains = malloc(sizeof(float) * ne);
    double *rep = malloc(sizeof(double) * ne);
    double *z_row = malloc(sizeof(double) * (size_t)n);
    bh_tree tree = {0};
    int *groups = malloc(sizeof(int) * (size_t)n);
    if (!grad || !update || !gains || !rep || !z_row || !groups) {
        st = cnn_fail(CNN_ERR_NOMEM, "t-SNE: out of memory for %d points", n);
        goto done;
    }
    for (size_t i = 0; i < ne; i++) gains[i] = 1.0f;
    st = initialise(x, n, dim, opt, y);
    double z = 1;
    for (int it = 0; st == CNN_OK && it < opt->iters; it++) {
        int early = it < opt->exaggeration_iters;
        double exaggeration = early ? opt->exaggeration : 1.0;
        double momentum = early ? 0.5 : 0.8;
        z = exact ? gradient_exact(&p, exaggeration, y, n, e, grad)
                  : gradient_barnes_hut(&p, exaggeration, y, n, e, opt->theta, !opt->per_point, &tree, groups, rep, z_row, grad);
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
            update[i] = (float)(momentum * update[i] - lr * gains[i] * grad[i]);
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
        if (!exact) z = gradient_barnes_hut(&p, 1.0, y, n, e, opt->theta, !opt->per_point, &tree, groups, rep, z_row, grad);
        else z = gradient_exact(&p, 1.0, y, n, e, grad);
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
    free(rep);
    free(z_row);
    free(tree.nodes);
    free(tree.order);
    free(groups);
    vis_csr_free(&p);
    return st;
}
