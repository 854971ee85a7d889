// pca.c - PCA by covariance eigen-decomposition or randomised SVD. See pca.h.
//
// Dims: N rows, D features, P components, L = P + oversampling (sketch width).
#include "pca.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "neighbors.h"   // vis_random_*

enum {
    ROW_BLOCK = 4096,       // rows of x per covariance GEMM (summed into double between blocks)
    OVERSAMPLE = 10,        // extra sketch columns of the randomised method
    EXACT_MAX_DIM = 256,    // AUTO: beyond this many features, randomised
};

void vis_pca_free(vis_pca *pca) {
    free(pca->mean);
    free(pca->components);
    free(pca->explained_variance);
    free(pca->explained_ratio);
    memset(pca, 0, sizeof *pca);
}

// ---------------------------------------------------------------------------------------------
// Symmetric eigen-decomposition (cyclic Jacobi). Each rotation zeroes one off-diagonal pair
// (p, q); sweeps over all pairs repeat until the off-diagonal part is negligible. Slow for large
// D (O(D^3) per sweep) but simple and accurate to machine precision.

void vis_symmetric_eigen(double *a, int d, double *w, double *v) {
    // a is (d, d), v is (d, d): v starts as the identity and accumulates the rotations (columns)
    double *vt = malloc(sizeof(double) * (size_t)d * d);
    if (!vt) return;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) vt[(size_t)i * d + j] = i == j;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0, diag = 0;
        for (int i = 0; i < d; i++) {
            diag += a[(size_t)i * d + i] * a[(size_t)i * d + i];
            for (int j = i + 1; j < d; j++) off += a[(size_t)i * d + j] * a[(size_t)i * d + j];
        }
        if (off <= 1e-30 * diag || off == 0) break;
        for (int p = 0; p < d - 1; p++) {
            for (int q = p + 1; q < d; q++) {
                double apq = a[(size_t)p * d + q];
                if (fabs(apq) < 1e-300) continue;
                double app = a[(size_t)p * d + p], aqq = a[(size_t)q * d + q];
                double theta = (aqq - app) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                // a = J^T a J on rows/columns p and q
                for (int k = 0; k < d; k++) {
                    double akp = a[(size_t)k * d + p], akq = a[(size_t)k * d + q];
                    a[(size_t)k * d + p] = c * akp - s * akq;
                    a[(size_t)k * d + q] = s * akp + c * akq;
                }
                for (int k = 0; k < d; k++) {
                    double apk = a[(size_t)p * d + k], aqk = a[(size_t)q * d + k];
                    a[(size_t)p * d + k] = c * apk - s * aqk;
                    a[(size_t)q * d + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < d; k++) {
                    double vkp = vt[(size_t)k * d + p], vkq = vt[(size_t)k * d + q];
                    vt[(size_t)k * d + p] = c * vkp - s * vkq;
                    vt[(size_t)k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    // sort by decreasing eigenvalue; eigenvector i = column i of vt -> row of v
    int *order = malloc(sizeof(int) * (size_t)d);
    if (!order) {
        free(vt);
        return;
    }
    for (int i = 0; i < d; i++) {
        order[i] = i;
        w[i] = a[(size_t)i * d + i];
    }
    for (int i = 1; i < d; i++)   // insertion sort, decreasing; ties keep the lower index first
        for (int j = i; j > 0 && w[order[j - 1]] < w[order[j]]; j--) {
            int tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    double *sorted = malloc(sizeof(double) * (size_t)d);
    for (int r = 0; r < d; r++) {
        int i = order[r];
        if (sorted) sorted[r] = w[i];
        for (int k = 0; k < d; k++) v[(size_t)r * d + k] = vt[(size_t)k * d + i];
    }
    if (sorted) memcpy(w, sorted, sizeof(double) * (size_t)d);
    free(sorted);
    free(order);
    free(vt);
}

// ---------------------------------------------------------------------------------------------
// Helpers

// mean [D] of x [N, D], in double
static void column_means(const float *x, int n, int dim, double *mean) {
    for (int j = 0; j < dim; j++) mean[j] = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < dim; j++) mean[j] += x[(size_t)i * dim + j];
    for (int j = 0; j < dim; j++) mean[j] /= n;
}

// Orthonormalises the columns of y [rows, cols] in place (modified Gram-Schmidt, twice, in
// double). A column that becomes ~0 is left at 0.
static void orthonormalize_columns(float *y, int rows, int cols) {
    double *col = malloc(sizeof(double) * (size_t)rows);
    double *other = malloc(sizeof(double) * (size_t)rows);
    if (!col || !other) {
        free(col);
        free(other);
        return;
    }
    for (int j = 0; j < cols; j++) {
        for (int i = 0; i < rows; i++) col[i] = y[(size_t)i * cols + j];
        for (int pass = 0; pass < 2; pass++) {
            for (int p = 0; p < j; p++) {
                double dot = 0;
                for (int i = 0; i < rows; i++) {
                    other[i] = y[(size_t)i * cols + p];
                    dot += other[i] * col[i];
                }
                for (int i = 0; i < rows; i++) col[i] -= dot * other[i];
            }
        }
        double norm = 0;
        for (int i = 0; i < rows; i++) norm += col[i] * col[i];
        norm = sqrt(norm);
        for (int i = 0; i < rows; i++) y[(size_t)i * cols + j] = norm > 1e-30 ? (float)(col[i] / norm) : 0.0f;
    }
    free(col);
    free(other);
}

static void transpose(const float *a, int rows, int cols, float *at) {
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) at[(size_t)j * rows + i] = a[(size_t)i * cols + j];
}

// A standard normal number (Box-Muller).
static double random_normal(uint64_t *rng) {
    double u = vis_random_uniform(rng), v = vis_random_uniform(rng);
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

// Flips each row of comp [P, D] so that its largest-magnitude entry is positive.
static void fix_signs(float *comp, int p, int dim) {
    for (int r = 0; r < p; r++) {
        float *row = comp + (size_t)r * dim;
        int arg = 0;
        for (int j = 1; j < dim; j++) if (fabsf(row[j]) > fabsf(row[arg])) arg = j;
        if (row[arg] < 0) for (int j = 0; j < dim; j++) row[j] = -row[j];
    }
}

// ---------------------------------------------------------------------------------------------
// Exact: covariance [D, D] = xc^T xc / (N - 1), summed in double over row blocks.
static cnn_status fit_exact(const float *xc, int n, int dim, vis_pca *out) {
    double *cov = calloc((size_t)dim * dim, sizeof(double));
    float *block_t = malloc(sizeof(float) * (size_t)dim * ROW_BLOCK);   // [D, rows]
    float *partial = malloc(sizeof(float) * (size_t)dim * dim);
    double *w = malloc(sizeof(double) * (size_t)dim);
    double *v = malloc(sizeof(double) * (size_t)dim * dim);
    cnn_status st = CNN_OK;
    if (!cov || !block_t || !partial || !w || !v) {
        st = cnn_fail(CNN_ERR_NOMEM, "PCA: out of memory for a %d x %d covariance", dim, dim);
        goto done;
    }
    for (int r0 = 0; r0 < n; r0 += ROW_BLOCK) {
        int rows = n - r0 < ROW_BLOCK ? n - r0 : ROW_BLOCK;
        transpose(xc + (size_t)r0 * dim, rows, dim, block_t);
        // partial[D, D] = block^T [D, rows] @ block [rows, D]
        cnn_sgemm(dim, dim, rows, block_t, rows, xc + (size_t)r0 * dim, dim, partial, dim, 0);
        for (size_t i = 0; i < (size_t)dim * dim; i++) cov[i] += partial[i];
    }
    for (size_t i = 0; i < (size_t)dim * dim; i++) cov[i] /= (n - 1);
    double total = 0;
    for (int j = 0; j < dim; j++) total += cov[(size_t)j * dim + j];
    vis_symmetric_eigen(cov, dim, w, v);
    out->total_variance = total;
    for (int r = 0; r < out->n_components; r++) {
        double ev = w[r] > 0 ? w[r] : 0;
        out->explained_variance[r] = ev;
        out->explained_ratio[r] = total > 0 ? ev / total : 0;
        for (int j = 0; j < dim; j++) out->components[(size_t)r * dim + j] = (float)v[(size_t)r * dim + j];
    }
done:
    free(cov);
    free(block_t);
    free(partial);
    free(w);
    free(v);
    return st;
}

// Randomised: y = xc @ omega, power iterations, then the SVD of b = q^T xc through the
// eigen-decomposition of b b^T [L, L].
static cnn_status fit_randomized(const float *xc, int n, int dim, uint64_t seed, vis_pca *out) {
    int p = out->n_components;
    int l = p + OVERSAMPLE;
    int lim = n < dim ? n : dim;
    if (l > lim) l = lim;
    int power_iters = p < 0.1 * lim ? 7 : 4;   // as scikit-learn's randomized_svd 'auto'
    float *omega = malloc(sizeof(float) * (size_t)dim * l);   // [D, L]
    float *y = malloc(sizeof(float) * (size_t)n * l);         // [N, L]
    float *yt = malloc(sizeof(float) * (size_t)l * n);        // [L, N]
    float *b = malloc(sizeof(float) * (size_t)l * dim);       // [L, D]
    double *bbt = malloc(sizeof(double) * (size_t)l * l);
    double *w = malloc(sizeof(double) * (size_t)l);
    double *u = malloc(sizeof(double) * (size_t)l * l);
    cnn_status st = CNN_OK;
    if (!omega || !y || !yt || !b || !bbt || !w || !u) {
        st = cnn_fail(CNN_ERR_NOMEM, "PCA: out of memory for the randomised sketch");
        goto done;
    }
    uint64_t rng = seed ^ 0x5CA1AB1Eull;
    for (size_t i = 0; i < (size_t)dim * l; i++) omega[i] = (float)random_normal(&rng);
    cnn_sgemm(n, l, dim, xc, dim, omega, l, y, l, 0);               // y = xc @ omega
    for (int it = 0; it < power_iters; it++) {
        orthonormalize_columns(y, n, l);
        transpose(y, n, l, yt);
        cnn_sgemm(l, dim, n, yt, n, xc, dim, b, dim, 0);             // b = y^T xc  [L, D]
        transpose(b, l, dim, omega);                                  // omega = b^T [D, L]
        orthonormalize_columns(omega, dim, l);
        cnn_sgemm(n, l, dim, xc, dim, omega, l, y, l, 0);           // y = xc @ omega
    }
    orthonormalize_columns(y, n, l);
    transpose(y, n, l, yt);
    cnn_sgemm(l, dim, n, yt, n, xc, dim, b, dim, 0);                 // b = q^T xc  [L, D]
    for (int i = 0; i < l; i++)
        for (int j = 0; j < l; j++) {
            double s = 0;
            for (int k = 0; k < dim; k++) s += (double)b[(size_t)i * dim + k] * b[(size_t)j * dim + k];
            bbt[(size_t)i * l + j] = s;
        }
    vis_symmetric_eigen(bbt, l, w, u);   // b b^T = U diag(s^2) U^T, rows of u = columns of U
    double total = 0;
    for (int j = 0; j < dim; j++) {
        double m = 0, s2 = 0;
        for (int i = 0; i < n; i++) m += xc[(size_t)i * dim + j];
        m /= n;
        for (int i = 0; i < n; i++) {
            double d = xc[(size_t)i * dim + j] - m;
            s2 += d * d;
        }
        total += s2 / (n - 1);
    }
    out->total_variance = total;
    for (int r = 0; r < p; r++) {
        double s2 = w[r] > 0 ? w[r] : 0, s = sqrt(s2);
        out->explained_variance[r] = s2 / (n - 1);
        out->explained_ratio[r] = total > 0 ? s2 / (n - 1) / total : 0;
        // component r = (u_r^T b) / s
        for (int k = 0; k < dim; k++) {
            double acc = 0;
            for (int i = 0; i < l; i++) acc += u[(size_t)r * l + i] * b[(size_t)i * dim + k];
            out->components[(size_t)r * dim + k] = s > 0 ? (float)(acc / s) : 0.0f;
        }
    }
done:
    free(omega);
    free(y);
    free(yt);
    free(b);
    free(bbt);
    free(w);
    free(u);
    return st;
}

cnn_status vis_pca_fit(const float *x, int n, int dim, int n_components, vis_pca_method method,
                       uint64_t seed, vis_pca *out) {
    int lim = n < dim ? n : dim;
    if (n < 2 || dim < 1 || n_components < 1 || n_components > lim)
        return cnn_fail(CNN_ERR_ARG, "PCA: need N >= 2 and 1 <= components <= min(N, D) = %d "
                        "(N = %d, D = %d), got %d components", lim, n, dim, n_components);
    if (method == VIS_PCA_AUTO)
        method = dim <= EXACT_MAX_DIM || n_components >= 0.8 * lim ? VIS_PCA_EXACT : VIS_PCA_RANDOMIZED;
    vis_pca p = {n_components, dim, malloc(sizeof(float) * (size_t)dim),
                 malloc(sizeof(float) * (size_t)n_components * dim),
                 malloc(sizeof(double) * (size_t)n_components),
                 malloc(sizeof(double) * (size_t)n_components), 0, method};
    double *mean = malloc(sizeof(double) * (size_t)dim);
    float *xc = malloc(sizeof(float) * (size_t)n * dim);   // [N, D] centred
    cnn_status st = CNN_OK;
    if (!p.mean || !p.components || !p.explained_variance || !p.explained_ratio || !mean || !xc) {
        st = cnn_fail(CNN_ERR_NOMEM, "PCA: out of memory (N = %d, D = %d)", n, dim);
        goto done;
    }
    column_means(x, n, dim, mean);
    for (int j = 0; j < dim; j++) p.mean[j] = (float)mean[j];
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        for (int j = 0; j < dim; j++) xc[(size_t)i * dim + j] = (float)(x[(size_t)i * dim + j] - mean[j]);
    st = method == VIS_PCA_EXACT ? fit_exact(xc, n, dim, &p) : fit_randomized(xc, n, dim, seed, &p);
    if (st == CNN_OK) fix_signs(p.components, n_components, dim);
done:
    free(mean);
    free(xc);
    if (st != CNN_OK) {
        vis_pca_free(&p);
        return st;
    }
    *out = p;
    return CNN_OK;
}

cnn_status vis_pca_transform(const vis_pca *pca, const float *x, int n, float *out) {
    int d = pca->dim, p = pca->n_components;
    float *xc = malloc(sizeof(float) * (size_t)n * d);
    float *ct = malloc(sizeof(float) * (size_t)d * p);   // components^T [D, P]
    if (!xc || !ct) {
        free(xc);
        free(ct);
        return cnn_fail(CNN_ERR_NOMEM, "PCA: out of memory projecting %d rows", n);
    }
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) xc[(size_t)i * d + j] = x[(size_t)i * d + j] - pca->mean[j];
    transpose(pca->components, p, d, ct);
    cnn_sgemm(n, p, d, xc, d, ct, p, out, p, 0);
    free(xc);
    free(ct);
    return CNN_OK;
}
