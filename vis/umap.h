// umap.h - UMAP (McInnes, Healy, Melville 2018): a fuzzy k-NN graph of the features laid out
// in 2-D by stochastic gradient descent with negative sampling. See umap.c.
#ifndef CNNSCOPE_VIS_UMAP_H
#define CNNSCOPE_VIS_UMAP_H

#include <stdint.h>

#include "cnnscope.h"
#include "neighbors.h"
#include "vis_features.h"   // vis_progress_fn

typedef enum { VIS_UMAP_INIT_SPECTRAL, VIS_UMAP_INIT_PCA, VIS_UMAP_INIT_RANDOM } vis_umap_init;

typedef struct {
    int dims;                    // output dimensions (2)
    int n_neighbors;             // neighbourhood size, the point itself included (15)
    double min_dist;             // how tightly points may pack (0.1)
    double spread;               // scale of the embedded distances (1)
    int n_epochs;                // 0 = auto: 500 up to 10,000 points, else 200
    double learning_rate;        // initial SGD step, decays linearly to 0 (1)
    int negative_sample_rate;    // repulsive samples per attractive one (5)
    double repulsion;            // weight of the repulsive term, gamma (1)
    vis_umap_init init;          // spectral (default), PCA or random
    uint64_t seed;
    int knn_method;              // VIS_KNN_AUTO / EXACT / NNDESCENT
    vis_progress_fn progress;    // optional: (epoch, n_epochs) every 10 epochs
    void *progress_user;
} vis_umap_options;

vis_umap_options vis_umap_defaults(void);

typedef struct {
    double a, b;                 // the curve 1 / (1 + a d^2b) fitted to min_dist and spread
    int n_epochs;
    int64_t edges;               // directed edges of the graph after pruning
    double seconds_graph, seconds_layout;
} vis_umap_report;

// Embeds x [N, D] into y [N, dims]; deterministic for a seed, the same for any thread count.
cnn_status vis_umap(const float *x, int n, int dim, const vis_umap_options *opt, float *y,
                    vis_umap_report *report);

// The fuzzy simplicial set (umap-learn's fuzzy_simplicial_set with set_op_mix_ratio 1 and
// local_connectivity 1): memberships exp(-(d_ij - rho_i) / sigma_i) on the k-NN graph, with
// rho_i the distance to the nearest neighbour and sigma_i such that the memberships of i sum to
// log2(n_neighbors); then the fuzzy union W = A + A^T - A o A^T. Symmetric CSR, no diagonal.
cnn_status vis_umap_graph(const float *x, int n, int dim, int n_neighbors, int knn_method,
                          uint64_t seed, vis_csr *graph);

// a, b of 1 / (1 + a d^2b) fitted (least squares, Levenberg-Marquardt) to 1 for d < min_dist
// and exp(-(d - min_dist) / spread) beyond, on 300 points of [0, 3 spread] (umap-learn's
// find_ab_params).
void vis_umap_find_ab(double spread, double min_dist, double *a, double *b);

#endif
