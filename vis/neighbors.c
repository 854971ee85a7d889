// neighbors.c - exact k-NN with blocked GEMM distances, NN-descent, k-NN evaluation and
// trustworthiness. See neighbors.h for the contracts.
//
// Dims: N base rows, Q queries, D features, K neighbours; QB x NB is one block of distances.
//
// Exact search. |q - b|^2 = |q|^2 + |b|^2 - 2 q.b, and |q|^2 is the same for every b, so the
// ranking key of b for query q is |b|^2 - 2 q.b (cosine: -q.b on unit rows). The dot products
// of a block of QB queries against NB base rows are one GEMM; each query keeps its best
// candidates in a small max-heap. Float keys can swap two near-equal distances, so each query
// keeps a few more candidates than asked, recomputes their distances directly in double and
// keeps the K best of those.
#include "neighbors.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    QUERY_BLOCK = 64,     // queries per GEMM (rows of the distance block)
    BASE_BLOCK = 2048,    // base rows per GEMM (columns): a 64 x 2048 block is 512 KB
    EXTRA_CANDIDATES = 8, // kept beyond K to absorb float rounding in the keys
    KEY_RUN = 32,         // keys checked together against a query's current worst candidate
};

// DISTANCE_LANES independent partial sums, added in order at the end: one long chain of
// dependent double additions (4 cycles each) was most of NN-descent's time, and independent
// lanes also let the compiler vectorise the loop without reordering any addition.
#define DISTANCE_LANES 8

float vis_distance(const float *a, const float *b, int dim, vis_metric metric) {
    enum { L = DISTANCE_LANES };
    int whole = dim / L * L;
    if (metric == VIS_METRIC_L2) {
        double part[L] = {0};
        for (int i = 0; i < whole; i += L)
            for (int u = 0; u < L; u++) {
                double d = (double)a[i + u] - b[i + u];
                part[u] += d * d;
            }
        for (int i = whole; i < dim; i++) {
            double d = (double)a[i] - b[i];
            part[i - whole] += d * d;
        }
        double s = 0;
        for (int u = 0; u < L; u++) s += part[u];
        return (float)sqrt(s);
    }
    double ab[L] = {0}, aa[L] = {0}, bb[L] = {0};
    for (int i = 0; i < whole; i += L)
        for (int u = 0; u < L; u++) {
            ab[u] += (double)a[i + u] * b[i + u];
            aa[u] += (double)a[i + u] * a[i + u];
            bb[u] += (double)b[i + u] * b[i + u];
        }
    for (int i = whole; i < dim; i++) {
        ab[i - whole] += (double)a[i] * b[i];
        aa[i - whole] += (double)a[i] * a[i];
        bb[i - whole] += (double)b[i] * b[i];
    }
    double s = 0, sa = 0, sb = 0;
    for (int u = 0; u < L; u++) {
        s += ab[u];
        sa += aa[u];
        sb += bb[u];
    }
    if (sa == 0 || sb == 0) return 1.0f;
    return (float)(1.0 - s / sqrt(sa * sb));
}

// 1 if one of the KEY_RUN keys is below `worst` (a NaN key never is). Eight lanes of minima,
// so that the compiler makes it a few vector compares.
static inline int run_has_below(const float *keys, float worst) {
    float low[8];
    for (int u = 0; u < 8; u++) low[u] = FLT_MAX;
    for (int j = 0; j < KEY_RUN; j += 8)
        for (int u = 0; u < 8; u++) low[u] = keys[j + u] < low[u] ? keys[j + u] : low[u];
    int below = 0;
    for (int u = 0; u < 8; u++) below |= low[u] < worst;
    return below;
}

// (key a, id a) before (key b, id b): by key, then by id.
static inline int pair_before(float key_a, int id_a, float key_b, int id_b) {
    return key_a < key_b || (key_a == key_b && id_a < id_b);
}

// Offers (key, id) to the *count <= cap best pairs seen so far, kept as a max-heap in keys/ids:
// the root is the worst kept pair, replaced when a better one arrives (a sorted list would
// shift half its entries on each of the hundreds of insertions a query sees). Ids arrive in
// increasing order, so among equal keys the earlier ids stay, as the order above says.
static void heap_offer(float *keys, int *ids, int *count, int cap, float key, int id) {
    int i;
    if (*count < cap) {   // not full: a new leaf, moved up past the smaller parents
        i = (*count)++;
        while (i > 0) {
            int parent = (i - 1) / 2;
            if (!pair_before(keys[parent], ids[parent], key, id)) break;
            keys[i] = keys[parent];
            ids[i] = ids[parent];
            i = parent;
        }
    } else {              // full: the new pair replaces the root and moves down
        if (!pair_before(key, id, keys[0], ids[0])) return;
        i = 0;
        for (;;) {
            int child = 2 * i + 1;
            if (child >= cap) break;
            if (child + 1 < cap && pair_before(keys[child], ids[child], keys[child + 1], ids[child + 1]))
                child++;
            if (!pair_before(key, id, keys[child], ids[child])) break;
            keys[i] = keys[child];
            ids[i] = ids[child];
            i = child;
        }
    }
    keys[i] = key;
    ids[i] = id;
}

typedef struct {
    float dist;
    int idx;
} neighbor;

static int neighbor_cmp(const void *pa, const void *pb) {
    const neighbor *a = pa, *b = pb;
    if (a->dist != b->dist) return a->dist < b->dist ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

// Unit-length copies of the rows of x [n, dim] (zero rows stay zero).
static float *normalized_rows(const float *x, int n, int dim) {
    float *out = malloc(sizeof(float) * (size_t)n * dim);
    if (!out) return NULL;
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const float *r = x + (size_t)i * dim;
        double s = 0;
        for (int j = 0; j < dim; j++) s += (double)r[j] * r[j];
        double inv = s > 0 ? 1.0 / sqrt(s) : 0.0;
        for (int j = 0; j < dim; j++) out[(size_t)i * dim + j] = (float)(r[j] * inv);
    }
    return out;
}

// xt [dim, n] = transpose of x [n, dim], and the squared norm of every row.
static void transpose_with_norms(const float *x, int n, int dim, float *xt, float *norm2) {
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const float *r = x + (size_t)i * dim;
        double s = 0;
        for (int j = 0; j < dim; j++) {
            xt[(size_t)j * n + i] = r[j];
            s += (double)r[j] * r[j];
        }
        norm2[i] = (float)s;
    }
}

cnn_status vis_knn_search(const float *base, int n, int dim, const float *q, int nq,
                          const int *skip, int k, vis_metric metric, int *idx, float *dist) {
    int available = skip ? n - 1 : n;
    if (n < 1 || dim < 1 || nq < 0 || k < 1 || k > available)
        return cnn_fail(CNN_ERR_ARG, "k-NN: need 1 <= k <= %d (N = %d%s), got k = %d", available,
                        n, skip ? ", leaving each query out" : "", k);
    int cap = k + EXTRA_CANDIDATES < available ? k + EXTRA_CANDIDATES : available;
    const float *B = base, *Q = q;
    float *base_unit = NULL, *q_unit = NULL;
    if (metric == VIS_METRIC_COSINE) {
        base_unit = normalized_rows(base, n, dim);
        q_unit = q == base ? base_unit : normalized_rows(q, nq, dim);
        B = base_unit;
        Q = q_unit;
    }
    float *bt = malloc(sizeof(float) * (size_t)n * dim);     // [dim, n]
    float *norm2 = malloc(sizeof(float) * (size_t)n);        // [n]
    int failed = !bt || !norm2 || (metric == VIS_METRIC_COSINE && (!base_unit || !q_unit));
    if (!failed) transpose_with_norms(B, n, dim, bt, norm2);

    if (!failed)
    #pragma omp parallel
    {
        float *dots = malloc(sizeof(float) * QUERY_BLOCK * BASE_BLOCK);   // [QB, NB]
        float *keys = malloc(sizeof(float) * QUERY_BLOCK * (size_t)cap);  // [QB, cap]
        int *ids = malloc(sizeof(int) * QUERY_BLOCK * (size_t)cap);       // [QB, cap]
        neighbor *best = malloc(sizeof(neighbor) * (size_t)cap);
        int count[QUERY_BLOCK];
        if (!dots || !keys || !ids || !best) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(dynamic, 1)
        for (int q0 = 0; q0 < nq; q0 += QUERY_BLOCK) {
            if (!dots || !keys || !ids || !best) continue;
            int m = nq - q0 < QUERY_BLOCK ? nq - q0 : QUERY_BLOCK;
            for (int i = 0; i < m; i++) count[i] = 0;
            for (int b0 = 0; b0 < n; b0 += BASE_BLOCK) {
                int w = n - b0 < BASE_BLOCK ? n - b0 : BASE_BLOCK;
                // dots[m, w] = Q[q0 .. q0+m, :] @ bt[:, b0 .. b0+w]
                cnn_sgemm(m, w, dim, Q + (size_t)q0 * dim, dim, bt + b0, n, dots, w, 0);
                for (int i = 0; i < m; i++) {
                    float *row = dots + (size_t)i * w;   // dot products, then keys in place
                    float *kk = keys + (size_t)i * cap;
                    int *ii = ids + (size_t)i * cap;
                    int self = skip ? skip[q0 + i] : -1;
                    float worst = count[i] == cap ? kk[0] : FLT_MAX;   // the heap's root
                    for (int j = 0; j < w; j++)   // a vector loop
                        row[j] = metric == VIS_METRIC_L2 ? norm2[b0 + j] - 2.0f * row[j] : -row[j];
                    // Once the list is full, most runs of KEY_RUN keys hold none below the
                    // current worst: one comparison of their minimum skips them.
                    for (int j0 = 0; j0 < w; j0 += KEY_RUN) {
                        int j1 = w - j0 < KEY_RUN ? w : j0 + KEY_RUN;
                        if (j1 - j0 == KEY_RUN && !run_has_below(row + j0, worst)) continue;
                        for (int j = j0; j < j1; j++) {
                            if (row[j] < worst && b0 + j != self) {
                                heap_offer(kk, ii, &count[i], cap, row[j], b0 + j);
                                if (count[i] == cap) worst = kk[0];
                            }
                        }
                    }
                }
            }
            // Exact distances of the candidates, then the k best.
            for (int i = 0; i < m; i++) {
                const float *qi = q + (size_t)(q0 + i) * dim;
                for (int c = 0; c < count[i]; c++) {
                    int j = ids[(size_t)i * cap + c];
                    best[c].idx = j;
                    best[c].dist = vis_distance(qi, base + (size_t)j * dim, dim, metric);
                }
                qsort(best, (size_t)count[i], sizeof *best, neighbor_cmp);
                for (int c = 0; c < k; c++) {
                    idx[(size_t)(q0 + i) * k + c] = best[c].idx;
                    dist[(size_t)(q0 + i) * k + c] = best[c].dist;
                }
            }
        }
        free(dots);
        free(keys);
        free(ids);
        free(best);
    }
    free(bt);
    free(norm2);
    if (q_unit != base_unit) free(q_unit);
    free(base_unit);
    if (failed) return cnn_fail(CNN_ERR_NOMEM, "k-NN: out of memory (N = %d, D = %d)", n, dim);
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------
// NN-descent
//
// Every point keeps a sorted list of its K best candidates so far, each flagged "new" until it
// has taken part in one round of exploration. A round: each point p looks at the neighbours of
// its neighbours (forward and reverse, at most `sample` of each), and keeps those that are
// closer than its current K-th. Exploring only through at least one new edge avoids redoing the
// comparisons of earlier rounds. Each point only writes its own list while reading a snapshot
// of the previous round, so the result does not depend on the thread count. The lists start
// from the leaves of a few random projection trees (points that fall in the same cell of a
// random hyperplane partition are likely close).

#define NNDESCENT_MAX_SAMPLE 24   // candidates of each kind explored per point and round
#if defined(__GNUC__)
#define PREFETCH(address) __builtin_prefetch(address)
#else
#define PREFETCH(address) ((void)(address))
#endif

typedef struct {
    int n, k;
    int *idx;             // [N, K] sorted by dist; -1 = empty
    float *dist;          // [N, K]
    uint8_t *is_new;      // [N, K]
} knn_lists;

// Offers v at distance d to p's list; returns 1 if it was inserted. The caller ensures v is
// not already there.
static int list_offer(knn_lists *L, int p, int v, float d) {
    int k = L->k;
    int *ii = L->idx + (size_t)p * k;
    float *dd = L->dist + (size_t)p * k;
    uint8_t *nn = L->is_new + (size_t)p * k;
    if (ii[k - 1] >= 0 && !(d < dd[k - 1])) return 0;
    int pos = k - 1;
    while (pos > 0 && (ii[pos - 1] < 0 || d < dd[pos - 1])) {
        ii[pos] = ii[pos - 1];
        dd[pos] = dd[pos - 1];
        nn[pos] = nn[pos - 1];
        pos--;
    }
    ii[pos] = v;
    dd[pos] = d;
    nn[pos] = 1;
    return 1;
}

static float pair_distance(const float *x, int dim, int a, int b, vis_metric metric) {
    return vis_distance(x + (size_t)a * dim, x + (size_t)b * dim, dim, metric);
}

// One random projection tree: splits order[lo, hi) recursively by the hyperplane half-way
// between two random points until a cell holds at most leaf_size points. Writes the leaf
// boundaries (start offsets into order) to leaf_start; returns the number of leaves.
static int rp_tree(const float *x, int n, int dim, int leaf_size, uint64_t seed, int *order,
                   int *leaf_start, float *normal) {
    for (int i = 0; i < n; i++) order[i] = i;
    uint64_t rng = seed;
    int n_leaves = 0;
    // explicit stack of [lo, hi) ranges; depth is bounded by n
    int *stack = malloc(sizeof(int) * 2 * (size_t)(n + 1));
    if (!stack) return -1;
    int top = 0;
    stack[top++] = 0;
    stack[top++] = n;
    while (top > 0) {
        int hi = stack[--top], lo = stack[--top];
        if (hi - lo <= leaf_size) {
            leaf_start[n_leaves++] = lo;
            continue;
        }
        int a = order[lo + vis_random_below(&rng, hi - lo)];
        int b = order[lo + vis_random_below(&rng, hi - lo)];
        const float *xa = x + (size_t)a * dim, *xb = x + (size_t)b * dim;
        double offset = 0;
        for (int j = 0; j < dim; j++) {
            normal[j] = xa[j] - xb[j];
            offset += (double)normal[j] * (xa[j] + xb[j]) * 0.5;
        }
        // partition: side > 0 to the left
        int i = lo, j = hi - 1;
        while (i <= j) {
            const float *xi = x + (size_t)order[i] * dim;
            double s = -offset;
            for (int t = 0; t < dim; t++) s += (double)normal[t] * xi[t];
            int left = s > 0 || (s == 0 && vis_random_below(&rng, 2));
            if (left) {
                i++;
            } else {
                int tmp = order[i];
                order[i] = order[j];
                order[j] = tmp;
                j--;
            }
        }
        int mid = i;
        if (mid == lo || mid == hi) mid = lo + (hi - lo) / 2;   // degenerate split: halve
        stack[top++] = lo;
        stack[top++] = mid;
        stack[top++] = mid;
        stack[top++] = hi;
    }
    free(stack);
    return n_leaves;
}

cnn_status vis_knn_nndescent(const float *x, int n, int dim, int k, vis_metric metric,
                             uint64_t seed, int *idx, float *dist) {
    if (k < 1 || k > n - 1)
        return cnn_fail(CNN_ERR_ARG, "NN-descent: need 1 <= k <= N - 1 = %d, got %d", n - 1, k);
    const int n_trees = 4, max_rounds = 12;
    const int leaf_size = k + 1 > 32 ? k + 1 : 32;
    const int sample = k < NNDESCENT_MAX_SAMPLE ? k : NNDESCENT_MAX_SAMPLE;   // new (and old)
                                              // candidates explored per point
    knn_lists L = {n, k, idx, dist, calloc((size_t)n * k, 1)};
    int *order = malloc(sizeof(int) * (size_t)n * n_trees);          // [trees, N]
    int *leaf_start = malloc(sizeof(int) * ((size_t)n + 1) * n_trees); // [trees, leaves + 1]
    int *leaf_of = malloc(sizeof(int) * (size_t)n * n_trees);        // [trees, N]: position in order
    int *n_leaves = malloc(sizeof(int) * n_trees);
    float *normal = malloc(sizeof(float) * (size_t)dim);
    // per round: forward samples [N, 2*sample] (new then old) and reverse lists
    int *fwd = malloc(sizeof(int) * (size_t)n * 2 * sample);
    int *fwd_count = malloc(sizeof(int) * (size_t)n * 2);            // [N, 2]: new, old
    int *rev = malloc(sizeof(int) * (size_t)n * 2 * sample);
    int *rev_count = malloc(sizeof(int) * (size_t)n * 2);
    cnn_status st = CNN_OK;
    if (!L.is_new || !order || !leaf_start || !leaf_of || !n_leaves || !normal || !fwd ||
        !fwd_count || !rev || !rev_count) {
        st = cnn_fail(CNN_ERR_NOMEM, "NN-descent: out of memory (N = %d, K = %d)", n, k);
        goto done;
    }
    for (size_t i = 0; i < (size_t)n * k; i++) {
        idx[i] = -1;
        dist[i] = FLT_MAX;
    }
    for (int t = 0; t < n_trees; t++) {
        int *ord = order + (size_t)t * n, *ls = leaf_start + (size_t)t * (n + 1);
        n_leaves[t] = rp_tree(x, n, dim, leaf_size, seed * 0x9E3779B97F4A7C15ull + 7 * t + 1,
                              ord, ls, normal);
        if (n_leaves[t] < 0) {
            st = cnn_fail(CNN_ERR_NOMEM, "NN-descent: out of memory");
            goto done;
        }
        // leaves were emitted in stack order: sort starts so leaf l is [ls[l], ls[l+1])
        for (int a = 1; a < n_leaves[t]; a++)
            for (int b = a; b > 0 && ls[b - 1] > ls[b]; b--) {
                int tmp = ls[b];
                ls[b] = ls[b - 1];
                ls[b - 1] = tmp;
            }
        ls[n_leaves[t]] = n;
        for (int l = 0; l < n_leaves[t]; l++)
            for (int p = ls[l]; p < ls[l + 1]; p++) leaf_of[(size_t)t * n + ord[p]] = l;
    }

    #pragma omp parallel
    {
        int *stamp = malloc(sizeof(int) * (size_t)n);
        if (stamp) for (int i = 0; i < n; i++) stamp[i] = -1;
        // 1. start: the other points of p's leaf in every tree, then random points if short.
        #pragma omp for schedule(dynamic, 64)
        for (int p = 0; p < n; p++) {
            if (!stamp) continue;
            stamp[p] = p;
            for (int t = 0; t < n_trees; t++) {
                const int *ord = order + (size_t)t * n, *ls = leaf_start + (size_t)t * (n + 1);
                int l = leaf_of[(size_t)t * n + p];
                for (int s = ls[l]; s < ls[l + 1]; s++) {
                    int v = ord[s];
                    if (stamp[v] == p) continue;
                    stamp[v] = p;
                    list_offer(&L, p, v, pair_distance(x, dim, p, v, metric));
                }
            }
            uint64_t rng = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(p + 1));
            for (int tries = 0; idx[(size_t)p * k + k - 1] < 0 && tries < 4 * k + 16; tries++) {
                int v = vis_random_below(&rng, n);
                if (stamp[v] == p) continue;
                stamp[v] = p;
                list_offer(&L, p, v, pair_distance(x, dim, p, v, metric));
            }
        }
        free(stamp);
    }
    // A list still short (tiny n) is filled in order with whatever is missing.
    for (int p = 0; p < n; p++) {
        for (int v = 0; idx[(size_t)p * k + k - 1] < 0 && v < n; v++) {
            int present = v == p;
            for (int c = 0; c < k && !present; c++) present = idx[(size_t)p * k + c] == v;
            if (!present) list_offer(&L, p, v, pair_distance(x, dim, p, v, metric));
        }
    }

    for (int round = 0; round < max_rounds; round++) {
        // 2. snapshot: up to `sample` new and `sample` old forward neighbours per point (the
        //    nearest first); the new ones taken become old in the live lists.
        for (int p = 0; p < n; p++) {
            int *f = fwd + (size_t)p * 2 * sample;
            int nn = 0, no = 0;
            for (int c = 0; c < k; c++) {
                size_t e = (size_t)p * k + c;
                if (L.is_new[e] && nn < sample) {
                    f[nn++] = idx[e];
                    L.is_new[e] = 0;
                } else if (!L.is_new[e] && no < sample) {
                    f[sample + no++] = idx[e];
                }
            }
            fwd_count[2 * p] = nn;
            fwd_count[2 * p + 1] = no;
        }
        // reverse lists: q is in rev_new(p) when p is in fwd_new(q); the first `sample` in q
        // order are kept (deterministic; q order is unrelated to distance).
        memset(rev_count, 0, sizeof(int) * (size_t)n * 2);
        for (int q = 0; q < n; q++) {
            for (int kind = 0; kind < 2; kind++) {
                const int *f = fwd + (size_t)q * 2 * sample + kind * sample;
                for (int c = 0; c < fwd_count[2 * q + kind]; c++) {
                    int p = f[c], *cnt = &rev_count[2 * p + kind];
                    if (*cnt < sample) rev[(size_t)p * 2 * sample + kind * sample + (*cnt)++] = q;
                }
            }
        }
        long updates = 0;
        // 3. exploration: p compares itself with the candidates of its candidates, through at
        //    least one new edge.
        #pragma omp parallel reduction(+ : updates)
        {
            int *stamp = malloc(sizeof(int) * (size_t)n);
            if (stamp) for (int i = 0; i < n; i++) stamp[i] = -1;
            #pragma omp for schedule(dynamic, 64)
            for (int p = 0; p < n; p++) {
                if (!stamp) continue;
                stamp[p] = p;
                for (int c = 0; c < k; c++)
                    if (idx[(size_t)p * k + c] >= 0) stamp[idx[(size_t)p * k + c]] = p;
                // the candidates of p: kind 0 = new, 1 = old; forward then reverse
                for (int kind_pw = 0; kind_pw < 2; kind_pw++) {
                    for (int dir = 0; dir < 2; dir++) {
                        const int *lw = (dir ? rev : fwd) + (size_t)p * 2 * sample + kind_pw * sample;
                        int nw = (dir ? rev_count : fwd_count)[2 * p + kind_pw];
                        for (int a = 0; a < nw; a++) {
                            int w = lw[a];
                            // through w: its new candidates always, its old ones only if p-w is new
                            for (int kind_wv = 0; kind_wv < 2 - kind_pw; kind_wv++) {
                                for (int dir2 = 0; dir2 < 2; dir2++) {
                                    const int *lv = (dir2 ? rev : fwd) + (size_t)w * 2 * sample +
                                                    kind_wv * sample;
                                    int nv = (dir2 ? rev_count : fwd_count)[2 * w + kind_wv];
                                    // The rows of the candidates are scattered in memory: ask
                                    // for all of them first, then compare (the waits overlap).
                                    int fresh[NNDESCENT_MAX_SAMPLE], n_fresh = 0;
                                    for (int b = 0; b < nv; b++) {
                                        int v = lv[b];
                                        if (stamp[v] == p) continue;
                                        stamp[v] = p;
                                        fresh[n_fresh++] = v;
                                        for (int j = 0; j < dim; j += 16) PREFETCH(x + (size_t)v * dim + j);
                                    }
                                    for (int b = 0; b < n_fresh; b++)
                                        updates += list_offer(&L, p, fresh[b],
                                                              pair_distance(x, dim, p, fresh[b], metric));
                                }
                            }
                        }
                    }
                }
            }
            free(stamp);
        }
        if (updates <= 0.001 * (double)n * k) break;
    }
done:
    free(L.is_new);
    free(order);
    free(leaf_start);
    free(leaf_of);
    free(n_leaves);
    free(normal);
    free(fwd);
    free(fwd_count);
    free(rev);
    free(rev_count);
    return st;
}

cnn_status vis_knn_graph(const float *x, int n, int dim, int k, vis_metric metric, int method,
                         uint64_t seed, int *idx, float *dist) {
    if (method == VIS_KNN_AUTO) method = n <= VIS_KNN_EXACT_MAX ? VIS_KNN_EXACT : VIS_KNN_NNDESCENT;
    if (method == VIS_KNN_NNDESCENT) return vis_knn_nndescent(x, n, dim, k, metric, seed, idx, dist);
    int *self = malloc(sizeof(int) * (size_t)n);
    if (!self) return cnn_fail(CNN_ERR_NOMEM, "k-NN graph: out of memory");
    for (int i = 0; i < n; i++) self[i] = i;
    cnn_status st = vis_knn_search(x, n, dim, x, n, self, k, metric, idx, dist);
    free(self);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Leave-one-out k-NN classification

void vis_knn_eval_free(vis_knn_eval_result *r) {
    free(r->pred);
    free(r->agreement);
    free(r->confusion);
    memset(r, 0, sizeof *r);
}

cnn_status vis_knn_eval(const int *labels, int n, int n_classes, const int *idx, int k,
                        vis_knn_eval_result *out) {
    if (n_classes < 1) return cnn_fail(CNN_ERR_ARG, "k-NN evaluation needs labels (0 classes)");
    vis_knn_eval_result r = {n, k, n_classes, malloc(sizeof(int) * (size_t)n),
                             malloc(sizeof(float) * (size_t)n),
                             calloc((size_t)n_classes * n_classes, sizeof(int64_t)), 0, 0};
    int *votes = calloc((size_t)n_classes, sizeof(int));
    if (!r.pred || !r.agreement || !r.confusion || !votes) {
        vis_knn_eval_free(&r);
        free(votes);
        return cnn_fail(CNN_ERR_NOMEM, "k-NN evaluation: out of memory");
    }
    for (int i = 0; i < n; i++) {
        const int *nb = idx + (size_t)i * k;
        for (int c = 0; c < k; c++) {
            int l = labels[nb[c]];
            if (l >= 0 && l < n_classes) votes[l]++;
        }
        // the most votes; among tied classes, the one met first (nearest)
        int pred = -1;
        for (int c = 0; c < k; c++) {
            int l = labels[nb[c]];
            if (l >= 0 && l < n_classes && (pred < 0 || votes[l] > votes[pred])) pred = l;
        }
        int label = labels[i];
        int same = label >= 0 && label < n_classes ? votes[label] : 0;
        for (int c = 0; c < k; c++) {
            int l = labels[nb[c]];
            if (l >= 0 && l < n_classes) votes[l] = 0;
        }
        r.pred[i] = label >= 0 ? pred : -1;
        r.agreement[i] = (float)same / k;
        if (label >= 0 && label < n_classes && pred >= 0) {
            r.labelled++;
            r.correct += pred == label;
            r.confusion[(size_t)label * n_classes + pred]++;
        }
    }
    free(votes);
    *out = r;
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------
// Trustworthiness (sklearn.manifold.trustworthiness, Euclidean)

cnn_status vis_trustworthiness(const float *x, int n, int dim, const float *y, int ydim, int k,
                               double *out) {
    if (k < 1 || 2 * k >= n)
        return cnn_fail(CNN_ERR_ARG, "trustworthiness: need 1 <= k < N / 2 (N = %d), got %d", n, k);
    int *nb_y = malloc(sizeof(int) * (size_t)n * k);
    float *d_y = malloc(sizeof(float) * (size_t)n * k);
    float *xt = malloc(sizeof(float) * (size_t)n * dim);
    float *norm2 = malloc(sizeof(float) * (size_t)n);
    cnn_status st = CNN_OK;
    if (!nb_y || !d_y || !xt || !norm2) st = cnn_fail(CNN_ERR_NOMEM, "trustworthiness: out of memory");
    if (st == CNN_OK) st = vis_knn_graph(y, n, ydim, k, VIS_METRIC_L2, VIS_KNN_EXACT, 0, nb_y, d_y);
    double penalty = 0;   // sum over i, j in U_i of (r(i, j) - k)
    int failed = 0;
    if (st == CNN_OK) {
        transpose_with_norms(x, n, dim, xt, norm2);
        #pragma omp parallel reduction(+ : penalty)
        {
            float *dots = malloc(sizeof(float) * QUERY_BLOCK * BASE_BLOCK);
            float *thr = malloc(sizeof(float) * QUERY_BLOCK * (size_t)k);   // [QB, K] sorted keys
            long *closer = malloc(sizeof(long) * QUERY_BLOCK * (size_t)k);  // [QB, K]
            if (!dots || !thr || !closer) {
                #pragma omp atomic write
                failed = 1;
            }
            #pragma omp for schedule(dynamic, 1)
            for (int q0 = 0; q0 < n; q0 += QUERY_BLOCK) {
                if (!dots || !thr || !closer) continue;
                int m = n - q0 < QUERY_BLOCK ? n - q0 : QUERY_BLOCK;
                // The key of each embedded neighbour j in input space: |x_j|^2 - 2 x_i.x_j,
                // from the same GEMM values as every other point's, so ranks are consistent.
                for (int b0 = 0; b0 < n; b0 += BASE_BLOCK) {
                    int w = n - b0 < BASE_BLOCK ? n - b0 : BASE_BLOCK;
                    cnn_sgemm(m, w, dim, x + (size_t)q0 * dim, dim, xt + b0, n, dots, w, 0);
                    for (int i = 0; i < m; i++)
                        for (int c = 0; c < k; c++) {
                            int j = nb_y[(size_t)(q0 + i) * k + c];
                            if (j >= b0 && j < b0 + w)
                                thr[(size_t)i * k + c] = norm2[j] - 2.0f * dots[(size_t)i * w + j - b0];
                        }
                }
                for (int i = 0; i < m; i++) {
                    float *t = thr + (size_t)i * k;
                    for (int a = 1; a < k; a++)   // sort the k thresholds (insertion)
                        for (int b = a; b > 0 && t[b - 1] > t[b]; b--) {
                            float tmp = t[b];
                            t[b] = t[b - 1];
                            t[b - 1] = tmp;
                        }
                    for (int c = 0; c < k; c++) closer[(size_t)i * k + c] = 0;
                }
                // closer[i][c] = number of points l != i with key(l) < thr[i][c]
                for (int b0 = 0; b0 < n; b0 += BASE_BLOCK) {
                    int w = n - b0 < BASE_BLOCK ? n - b0 : BASE_BLOCK;
                    cnn_sgemm(m, w, dim, x + (size_t)q0 * dim, dim, xt + b0, n, dots, w, 0);
                    for (int i = 0; i < m; i++) {
                        const float *t = thr + (size_t)i * k;
                        long *cl = closer + (size_t)i * k;
                        float top = t[k - 1];
                        for (int j = 0; j < w; j++) {
                            if (b0 + j == q0 + i) continue;
                            float key = norm2[b0 + j] - 2.0f * dots[(size_t)i * w + j];
                            if (!(key < top)) continue;
                            int c = 0;
                            while (!(key < t[c])) c++;
                            cl[c]++;   // closer than thresholds c .. k-1
                        }
                    }
                }
                for (int i = 0; i < m; i++) {
                    long run = 0;
                    for (int c = 0; c < k; c++) {
                        run += closer[(size_t)i * k + c];
                        long rank = run + 1;   // 1 = nearest
                        if (rank > k) penalty += (double)(rank - k);
                    }
                }
            }
            free(dots);
            free(thr);
            free(closer);
        }
        if (failed) st = cnn_fail(CNN_ERR_NOMEM, "trustworthiness: out of memory");
    }
    if (st == CNN_OK)
        *out = 1.0 - penalty * (2.0 / ((double)n * k * (2.0 * n - 3.0 * k - 1.0)));
    free(nb_y);
    free(d_y);
    free(xt);
    free(norm2);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Symmetrised k-NN graphs. Row i of the result merges row i of A with row i of A^T, both sorted
// by column: A^T comes from a counting sort over the columns (filled in increasing i, its rows
// come out sorted), and the same sort of A^T gives A back with sorted rows (into nb and a).

cnn_status vis_knn_union(int n, int k, int *nb, double *a, vis_union_rule rule, double scale,
                         vis_csr *out) {
    size_t nk = (size_t)n * k;
    int64_t *t_start = calloc((size_t)n + 1, sizeof(int64_t));   // [N + 1] rows of A^T
    int *t_col = malloc(sizeof(int) * (nk ? nk : 1));            // [N K]
    double *t_val = malloc(sizeof(double) * (nk ? nk : 1));
    int64_t *fill = malloc(sizeof(int64_t) * (size_t)n);
    vis_csr g = {n, calloc((size_t)n + 1, sizeof(int64_t)), NULL, NULL};
    cnn_status st = CNN_OK;
    if (!t_start || !t_col || !t_val || !fill || !g.row_start) {
        st = cnn_fail(CNN_ERR_NOMEM, "out of memory for a graph of %zu edges", 2 * nk);
        goto done;
    }
    for (size_t s = 0; s < nk; s++) t_start[nb[s] + 1]++;
    for (int j = 0; j < n; j++) t_start[j + 1] += t_start[j];
    memcpy(fill, t_start, sizeof(int64_t) * (size_t)n);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < k; c++) {
            int j = nb[(size_t)i * k + c];
            t_col[fill[j]] = i;
            t_val[fill[j]++] = a[(size_t)i * k + c];
        }
    for (int i = 0; i < n; i++) fill[i] = (int64_t)i * k;
    for (int j = 0; j < n; j++)   // A = (A^T)^T, each row now sorted by column
        for (int64_t s = t_start[j]; s < t_start[j + 1]; s++) {
            int i = t_col[s];
            nb[fill[i]] = j;
            a[fill[i]++] = t_val[s];
        }
    // Two passes over the merged rows: their lengths, then their entries.
    for (int pass = 0; pass < 2; pass++) {
        #pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) {
            const int *ac = nb + (size_t)i * k, *bc = t_col + t_start[i];
            const double *av = a + (size_t)i * k, *bv = t_val + t_start[i];
            int na = k, nbt = (int)(t_start[i + 1] - t_start[i]), x = 0, y = 0;
            int64_t w = pass ? g.row_start[i] : 0;
            while (x < na || y < nbt) {
                int col;
                double aij = 0, aji = 0;   // 0 when absent
                if (y == nbt || (x < na && ac[x] < bc[y])) {
                    col = ac[x];
                    aij = av[x++];
                } else if (x == na || bc[y] < ac[x]) {
                    col = bc[y];
                    aji = bv[y++];
                } else {   // (i, j) in both A and A^T
                    col = ac[x];
                    aij = av[x++];
                    aji = bv[y++];
                }
                float v = rule == VIS_UNION_SUM ? (float)((aij + aji) * scale)
                                                : (float)(aij + aji - aij * aji);
                if (rule == VIS_UNION_FUZZY && !(v > 0)) continue;
                if (pass) {
                    g.col[w] = col;
                    g.val[w] = v;
                }
                w++;
            }
            if (!pass) g.row_start[i + 1] = w;
        }
        if (!pass) {
            for (int i = 0; i < n; i++) g.row_start[i + 1] += g.row_start[i];
            int64_t nnz = g.row_start[n];
            g.col = malloc(sizeof(int) * (size_t)(nnz ? nnz : 1));
            g.val = malloc(sizeof(float) * (size_t)(nnz ? nnz : 1));
            if (!g.col || !g.val) {
                st = cnn_fail(CNN_ERR_NOMEM, "out of memory for a graph of %lld edges",
                              (long long)nnz);
                goto done;
            }
        }
    }
done:
    free(t_start);
    free(t_col);
    free(t_val);
    free(fill);
    if (st != CNN_OK) {
        vis_csr_free(&g);
        return st;
    }
    *out = g;
    return CNN_OK;
}

void vis_csr_free(vis_csr *m) {
    free(m->row_start);
    free(m->col);
    free(m->val);
    memset(m, 0, sizeof *m);
}
