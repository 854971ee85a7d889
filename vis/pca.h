// pca.h - principal component analysis of a feature table.
//
// Dims: N rows, D features, P components.
// Exact: the covariance matrix [D, D] (blocked GEMM, summed in double) and its
// eigen-decomposition by cyclic Jacobi rotations. Randomised (Halko, Martinsson, Tropp 2011):
// a Gaussian sketch of P + 10 columns, power iterations with re-orthonormalisation, then the SVD
// of the small projected matrix; for wide features (large D), where the D x D covariance and its
// O(D^3) decomposition are too slow. Both give what scikit-learn's PCA gives (ddof = 1), up to
// the sign of each component; here the largest-magnitude entry of each component is positive.
#ifndef CNNSCOPE_VIS_PCA_H
#define CNNSCOPE_VIS_PCA_H

#include <stdint.h>

#include "cnnscope.h"

typedef enum { VIS_PCA_AUTO, VIS_PCA_EXACT, VIS_PCA_RANDOMIZED } vis_pca_method;

typedef struct {
    int n_components, dim;         // P, D
    float *mean;                   // [D]
    float *components;             // [P, D] orthonormal rows, by decreasing variance
    double *explained_variance;    // [P] variance along each component (divided by N - 1)
    double *explained_ratio;       // [P] fraction of the total variance
    double total_variance;         // sum of the variances of the D features
    vis_pca_method method;         // the one used (never AUTO)
} vis_pca;

// Fits P components to x [N, D] (N >= 2, 1 <= P <= min(N, D)). AUTO: exact when D <= 256 or
// P >= 0.8 min(N, D), else randomised. `seed` only matters for the randomised method.
cnn_status vis_pca_fit(const float *x, int n, int dim, int n_components, vis_pca_method method,
                       uint64_t seed, vis_pca *out);
// out [N, P] = (x - mean) @ components^T
cnn_status vis_pca_transform(const vis_pca *pca, const float *x, int n, float *out);
void vis_pca_free(vis_pca *pca);

// Eigen-decomposition of the symmetric a [D, D] (destroyed) by cyclic Jacobi: eigenvalues in
// w [D] (decreasing) and eigenvectors as the rows of v [D, D].
void vis_symmetric_eigen(double *a, int d, double *w, double *v);

#endif
