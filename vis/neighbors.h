// neighbors.h - nearest neighbours in feature space: exact search with blocked GEMM distances,
// NN-descent for large sets, the k-NN graph the embeddings start from, and the quality measures
// that use neighbours (leave-one-out k-NN accuracy, trustworthiness).
//
// Dims: N rows of the base set, Q queries, D features, K neighbours.
// Distances: VIS_METRIC_L2 gives the Euclidean distance |a - b| (not squared); VIS_METRIC_COSINE
// gives 1 - cos(a, b) (a zero row counts as orthogonal to everything: distance 1).
// Order: nearest first; equal distances keep the lower index first. Results do not depend on
// the number of threads.
#ifndef CNNSCOPE_VIS_NEIGHBORS_H
#define CNNSCOPE_VIS_NEIGHBORS_H

#include <stdint.h>

#include "cnnscope.h"

typedef enum { VIS_METRIC_L2, VIS_METRIC_COSINE } vis_metric;

// For each query row q[i] the k nearest rows of base, excluding base row skip[i] when skip is
// not NULL (leave-one-out: skip[i] = i with q = base). idx, dist are [Q, K]. Needs k <= N
// (k <= N - 1 with skip). Exact: distances through GEMM (|q|^2 + |b|^2 - 2 q.b) in blocks,
// then the chosen K recomputed directly in double and sorted.
cnn_status vis_knn_search(const float *base, int n, int dim, const float *q, int nq,
                          const int *skip, int k, vis_metric metric, int *idx, float *dist);

// The distance between two rows, computed directly (double accumulation).
float vis_distance(const float *a, const float *b, int dim, vis_metric metric);

// The k-NN graph of a set (every row against all others, never itself): idx, dist [N, K].
// method: 0 auto (exact up to VIS_KNN_EXACT_MAX rows, else NN-descent), 1 exact, 2 NN-descent.
enum { VIS_KNN_AUTO = 0, VIS_KNN_EXACT = 1, VIS_KNN_NNDESCENT = 2 };
#define VIS_KNN_EXACT_MAX 30000
cnn_status vis_knn_graph(const float *x, int n, int dim, int k, vis_metric metric, int method,
                         uint64_t seed, int *idx, float *dist);

// Approximate k-NN graph by NN-descent (Dong, Charikar, Li 2011), started from random
// projection tree leaves; deterministic for a seed, whatever the thread count.
cnn_status vis_knn_nndescent(const float *x, int n, int dim, int k, vis_metric metric,
                             uint64_t seed, int *idx, float *dist);

// ---------------------------------------------------------------------------------------------
// Quality in feature or embedding space.

// Leave-one-out k-NN classification: each row is classified by the majority label of its k
// nearest other rows (a tie goes to the class of the nearest among the tied classes).
typedef struct {
    int n, k, n_classes;
    int *pred;             // [N] predicted class (-1 for an unlabelled row)
    float *agreement;      // [N] fraction of the k neighbours that share the row's label
    int64_t *confusion;    // [n_classes, n_classes]: true class (row) x predicted class (col)
    int64_t correct, labelled;
} vis_knn_eval_result;

// labels [N] (-1 = unlabelled: never counted, but still a neighbour). neighbours idx [N, K]
// from vis_knn_graph.
cnn_status vis_knn_eval(const int *labels, int n, int n_classes, const int *idx, int k,
                        vis_knn_eval_result *out);
void vis_knn_eval_free(vis_knn_eval_result *r);

// Trustworthiness of an embedding y [N, E] of x [N, D] at k, exactly as scikit-learn's
// sklearn.manifold.trustworthiness defines it (Euclidean in both spaces):
//     T(k) = 1 - 2 / (N k (2N - 3k - 1)) * sum_i sum_{j in U_i} (r(i, j) - k)
// where U_i are the k nearest neighbours of i in y that are not among its k nearest in x and
// r(i, j) is the rank of j among i's neighbours in x (1 = nearest). Needs k < N / 2.
cnn_status vis_trustworthiness(const float *x, int n, int dim, const float *y, int ydim, int k,
                               double *out);

// ---------------------------------------------------------------------------------------------
// Sparse symmetric-or-not matrices (graphs): row i holds col[row_start[i] .. row_start[i+1]).
typedef struct {
    int n;
    int64_t *row_start;    // [N + 1]
    int *col;              // [nnz]
    float *val;            // [nnz]
} vis_csr;

void vis_csr_free(vis_csr *m);

// How the weight of (i, j) in a symmetrised k-NN graph comes from the directed weights a_ij and
// a_ji (0 when j is not among i's neighbours, or i not among j's).
typedef enum {
    VIS_UNION_SUM,     // (a_ij + a_ji) * scale (t-SNE's P = (C + C^T) / sum); every entry kept
    VIS_UNION_FUZZY,   // a_ij + a_ji - a_ij a_ji (UMAP's fuzzy union); entries of 0 dropped
} vis_union_rule;

// The symmetrised graph of directed weights A [N, K] (row i: weights a[i*K + c] of the
// neighbours nb[i*K + c]): row i of the result merges row i of A with row i of A^T, sorted by
// column. O(N K) by counting sorts, no comparison sort; nb and a come back with each row sorted
// by column.
cnn_status vis_knn_union(int n, int k, int *nb, double *a, vis_union_rule rule, double scale,
                         vis_csr *out);

// ---------------------------------------------------------------------------------------------
// A small deterministic random generator (SplitMix64): seed it with anything.
static inline uint64_t vis_random_u64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// Uniform in [0, 1).
static inline double vis_random_uniform(uint64_t *state) {
    return (double)(vis_random_u64(state) >> 11) * (1.0 / 9007199254740992.0);
}
// Uniform integer in [0, n) (n >= 1; the modulo bias is below 2^-32 for n < 2^32).
static inline int vis_random_below(uint64_t *state, int n) {
    return (int)(vis_random_u64(state) % (uint64_t)n);
}

#endif
