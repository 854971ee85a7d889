// tool_vis_graphs.c - exposes the representation-space internals to the script tests
// (tests/test_tsne.py, test_umap.py, test_neighbors.py), which compare them with NumPy,
// scikit-learn and umap-learn:
//
//   tool_vis_graphs tsne-p X.npy PERPLEXITY OUT.npy       t-SNE joint P [N, N] (dense), k-NN
//   tool_vis_graphs tsne-p-exact X.npy PERPLEXITY OUT.npy  ... on all pairs
//   tool_vis_graphs umap-graph X.npy K OUT.npy            UMAP fuzzy graph W [N, N] (dense)
//   tool_vis_graphs umap-ab SPREAD MIN_DIST               prints "a b"
//   tool_vis_graphs knn X.npy K l2|cosine exact|nndescent IDX.npy DIST.npy
//                                                         k-NN graph (indices stored as float)
//   tool_vis_graphs trust X.npy Y.npy K                   prints the trustworthiness
// Exit status 0 on success, 2 with a message on stderr otherwise.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neighbors.h"
#include "tsne.h"
#include "umap.h"

static int fail(void) {
    fprintf(stderr, "tool_vis_graphs: %s\n", cnn_last_error());
    return 2;
}

static int load(const char *path, float **x, int *n, int *d) {
    int ndim;
    int64_t dims[8];
    if (cnn_npy_read(path, x, &ndim, dims) != CNN_OK) return fail();
    if (ndim != 2) {
        fprintf(stderr, "tool_vis_graphs: %s: expected [N, D]\n", path);
        return 2;
    }
    *n = (int)dims[0];
    *d = (int)dims[1];
    return 0;
}

static int write_dense(const vis_csr *m, const char *path) {
    int n = m->n;
    float *dense = calloc((size_t)n * n, sizeof(float));
    if (!dense) return 2;
    for (int i = 0; i < n; i++)
        for (int64_t s = m->row_start[i]; s < m->row_start[i + 1]; s++)
            dense[(size_t)i * n + m->col[s]] = m->val[s];
    int64_t dims[2] = {n, n};
    cnn_status st = cnn_npy_write(path, dense, 2, dims);
    free(dense);
    return st == CNN_OK ? 0 : fail();
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: tool_vis_graphs tsne-p|tsne-p-exact|umap-graph|umap-ab|knn|trust ...\n");
        return 2;
    }
    const char *cmd = argv[1];
    float *x = NULL;
    int n, d, r;
    if (strcmp(cmd, "umap-ab") == 0 && argc == 4) {
        double a, b;
        vis_umap_find_ab(atof(argv[2]), atof(argv[3]), &a, &b);
        printf("%.10f %.10f\n", a, b);
        return 0;
    }
    if ((strcmp(cmd, "tsne-p") == 0 || strcmp(cmd, "tsne-p-exact") == 0) && argc == 5) {
        if ((r = load(argv[2], &x, &n, &d))) return r;
        vis_csr p;
        if (vis_tsne_affinities(x, n, d, atof(argv[3]), strcmp(cmd, "tsne-p-exact") == 0,
                                VIS_KNN_EXACT, 0, &p) != CNN_OK)
            return fail();
        r = write_dense(&p, argv[4]);
        vis_csr_free(&p);
        cnn_npy_free(x);
        return r;
    }
    if (strcmp(cmd, "umap-graph") == 0 && argc == 5) {
        if ((r = load(argv[2], &x, &n, &d))) return r;
        vis_csr g;
        if (vis_umap_graph(x, n, d, atoi(argv[3]), VIS_KNN_EXACT, 0, &g) != CNN_OK) return fail();
        r = write_dense(&g, argv[4]);
        vis_csr_free(&g);
        cnn_npy_free(x);
        return r;
    }
    if (strcmp(cmd, "knn") == 0 && argc == 8) {
        if ((r = load(argv[2], &x, &n, &d))) return r;
        int k = atoi(argv[3]);
        vis_metric metric = strcmp(argv[4], "cosine") == 0 ? VIS_METRIC_COSINE : VIS_METRIC_L2;
        int method = strcmp(argv[5], "nndescent") == 0 ? VIS_KNN_NNDESCENT : VIS_KNN_EXACT;
        int *idx = malloc(sizeof(int) * (size_t)n * k);
        float *dist = malloc(sizeof(float) * (size_t)n * k), *fidx = malloc(sizeof(float) * (size_t)n * k);
        if (!idx || !dist || !fidx) return 2;
        if (vis_knn_graph(x, n, d, k, metric, method, 1, idx, dist) != CNN_OK) return fail();
        for (size_t i = 0; i < (size_t)n * k; i++) fidx[i] = (float)idx[i];
        int64_t dims[2] = {n, k};
        if (cnn_npy_write(argv[6], fidx, 2, dims) != CNN_OK || cnn_npy_write(argv[7], dist, 2, dims) != CNN_OK)
            return fail();
        free(idx);
        free(dist);
        free(fidx);
        cnn_npy_free(x);
        return 0;
    }
    if (strcmp(cmd, "trust") == 0 && argc == 5) {
        float *y;
        int ny, e;
        if ((r = load(argv[2], &x, &n, &d)) || (r = load(argv[3], &y, &ny, &e))) return r;
        if (ny != n) {
            fprintf(stderr, "tool_vis_graphs: %d rows in X, %d in Y\n", n, ny);
            return 2;
        }
        double t;
        if (vis_trustworthiness(x, n, d, y, e, atoi(argv[4]), &t) != CNN_OK) return fail();
        printf("%.10f\n", t);
        cnn_npy_free(x);
        cnn_npy_free(y);
        return 0;
    }
    fprintf(stderr, "tool_vis_graphs: bad command or argument count\n");
    return 2;
}
