// tsne.h - t-distributed stochastic neighbour embedding (van der Maaten and Hinton 2008), with
// Barnes-Hut approximation of the repulsive forces (van der Maaten 2014). See tsne.c, which
// reads top to bottom: affinities, exact gradient, Barnes-Hut tree, optimiser, driver.
#ifndef CNNSCOPE_VIS_TSNE_H
#define CNNSCOPE_VIS_TSNE_H

#include <stdint.h>

#include "cnnscope.h"
#include "neighbors.h"
#include "vis_features.h"   // vis_progress_fn

typedef enum { VIS_TSNE_AUTO, VIS_TSNE_EXACT, VIS_TSNE_BARNES_HUT } vis_tsne_method;

typedef struct {
    int dims;                 // output dimensions: 2 (Barnes-Hut: 1..3; exact: any)
    double perplexity;        // effective number of neighbours (30)
    int iters;                // total gradient steps (1000)
    int exaggeration_iters;   // of which the first ones multiply P by `exaggeration` (250)
    double exaggeration;      // early exaggeration factor (12)
    double learning_rate;     // 0 = auto: max(N / exaggeration, 200) (Belkina et al. 2019)
    double theta;             // Barnes-Hut accuracy: a cell of width w at distance d is one
                              // body when w / d < theta (0.5)
    vis_tsne_method method;   // AUTO: exact up to 1,000 points, else Barnes-Hut
    int per_point;            // Barnes-Hut: 1 = one tree traversal per point (the plain
                              // algorithm), 0 = shared lists per small group of points (2-D)
    int init_random;          // 0: PCA initialisation (default), 1: Gaussian noise
    uint64_t seed;            // random initialisation and NN-descent
    int knn_method;           // VIS_KNN_AUTO / EXACT / NNDESCENT for the affinities
    vis_progress_fn progress; // optional: called with (iteration, iters) every 50 iterations
    void *progress_user;
} vis_tsne_options;

vis_tsne_options vis_tsne_defaults(void);

typedef struct {
    double kl_divergence;     // KL(P || Q) at the end (Barnes-Hut: with the approximated Z)
    double learning_rate;     // the one used
    int exact;                // 1 if the exact gradient was used
    double seconds_affinities, seconds_optimise;
} vis_tsne_report;

// Embeds x [N, D] into y [N, dims]. Deterministic for a seed and thread count (in fact the
// same for every thread count).
cnn_status vis_tsne(const float *x, int n, int dim, const vis_tsne_options *opt, float *y,
                    vis_tsne_report *report);

// The joint probabilities P (symmetric, summing to 1) from perplexity-calibrated Gaussians:
// on the k = min(N - 1, floor(3 perplexity + 1)) nearest neighbours of each point (sparse), or on
// all pairs when k_all is 1 (exact t-SNE). As scikit-learn's _joint_probabilities_nn.
cnn_status vis_tsne_affinities(const float *x, int n, int dim, double perplexity, int k_all,
                               int knn_method, uint64_t seed, vis_csr *p);

#endif
