// cmd_knn_eval.c - cnnscope knn-eval FEATS.npy: leave-one-out k-NN accuracy in feature space,
// the images whose neighbours mostly disagree with their label, the most confused class pairs.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "neighbors.h"
#include "vis_features.h"

typedef struct {
    int a, b;        // classes, a < b
    int64_t count;   // a taken for b plus b taken for a
} class_pair;

static int pair_cmp(const void *pa, const void *pb) {
    const class_pair *x = pa, *y = pb;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    if (x->a != y->a) return x->a - y->a;
    return x->b - y->b;
}

static const float *sort_agreement;   // qsort has no user pointer in C11
static int suspect_cmp(const void *pa, const void *pb) {
    int i = *(const int *)pa, j = *(const int *)pb;
    if (sort_agreement[i] != sort_agreement[j]) return sort_agreement[i] < sort_agreement[j] ? -1 : 1;
    return i - j;
}

typedef struct {
    const vis_feature_set *fs;
    const vis_knn_eval_result *res;
} eval_csv;

static cnn_status write_eval_csv(void *user, FILE *f) {
    const eval_csv *e = user;
    fprintf(f, "index,label,pred,agreement,path\n");
    for (int i = 0; i < e->fs->n; i++) {
        fprintf(f, "%d,%d,%d,%.4f,", i, e->fs->labels[i], e->res->pred[i], e->res->agreement[i]);
        cli_csv_field(f, e->fs->paths ? e->fs->paths[i] : "");
        fputc('\n', f);
    }
    return CNN_OK;
}

int cmd_knn_eval(int argc, char **argv) {
    int k = 10, threads = 0, show = 20;
    const char *metric_name = "l2", *csv = NULL;
    const char *pos[1];
    const cli_option options[] = {
        {"-k", OPT_INT, &k, 1, 1000, "K  neighbours that vote (default 10)"},
        {"--metric", OPT_STRING, &metric_name, 0, 0, "l2|cosine  distance (default l2)"},
        {"--show", OPT_INT, &show, 0, 1 << 30, "N  suspicious images and class pairs listed (default 20)"},
        {"--csv", OPT_STRING, &csv, 0, 0, "FILE  every row: index,label,pred,agreement,path"},
        {"--threads", OPT_INT, &threads, 1, 1024, "N  worker threads (default: all cores)"},
    };
    const cli_command_spec spec = {
        "knn-eval", "FEATS.npy [options]",
        "Leave-one-out k-NN classification in feature space: each image is classified by the\n"
        "majority label of its K nearest other images (ties: the nearest of the tied classes).\n"
        "Prints the accuracy, the images whose neighbours mostly disagree with their label\n"
        "(likely mislabelled or confusing; agreement = share of the K neighbours with the same\n"
        "label, lowest first) and the most confused class pairs. Needs FEATS.labels.txt.",
        options, (int)(sizeof options / sizeof options[0]), 1, 1};
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    vis_metric metric;
    if (strcmp(metric_name, "l2") == 0) metric = VIS_METRIC_L2;
    else if (strcmp(metric_name, "cosine") == 0) metric = VIS_METRIC_COSINE;
    else return cli_usage_error("knn-eval", "--metric must be l2 or cosine, not '%s'", metric_name);
    cli_set_threads(threads);
    vis_feature_set fs;
    if (vis_feature_set_load(pos[0], &fs) != CNN_OK) return cli_error();
    int status = EXIT_ERROR, *idx = NULL, *order = NULL;
    float *dist = NULL;
    class_pair *pairs = NULL;
    vis_knn_eval_result res = {0};
    double start = cli_now();
    if (!fs.labels || fs.n_classes < 1) {
        fprintf(stderr, "cnnscope knn-eval: %s has no labels file beside it\n", pos[0]);
        goto done;
    }
    if (k > fs.n - 1) k = fs.n - 1;
    if (k < 1) {
        fprintf(stderr, "cnnscope knn-eval: need at least 2 rows\n");
        goto done;
    }
    idx = malloc(sizeof(int) * (size_t)fs.n * k);
    dist = malloc(sizeof(float) * (size_t)fs.n * k);
    order = malloc(sizeof(int) * (size_t)fs.n);
    int nc = fs.n_classes;
    pairs = malloc(sizeof(class_pair) * (size_t)nc * nc);
    if (!idx || !dist || !order || !pairs) {
        fprintf(stderr, "cnnscope knn-eval: out of memory\n");
        goto done;
    }
    if (vis_knn_graph(fs.x, fs.n, fs.dim, k, metric, VIS_KNN_EXACT, 0, idx, dist) != CNN_OK ||
        vis_knn_eval(fs.labels, fs.n, nc, idx, k, &res) != CNN_OK) {
        cli_error();
        goto done;
    }
    printf("%d images x %d features, %d classes, %d-NN (%s), leave-one-out, %.1f s\n", fs.n,
           fs.dim, nc, k, metric_name, cli_now() - start);
    printf("k-NN accuracy: %.2f %% (%lld / %lld)\n",
           res.labelled ? 100.0 * res.correct / res.labelled : 0.0, (long long)res.correct,
           (long long)res.labelled);
    printf("\nper class: accuracy, most frequent wrong prediction\n");
    for (int c = 0; c < nc; c++) {
        int64_t total = 0, worst = -1, worst_n = 0;
        for (int p = 0; p < nc; p++) {
            int64_t v = res.confusion[(size_t)c * nc + p];
            total += v;
            if (p != c && v > worst_n) {
                worst_n = v;
                worst = p;
            }
        }
        if (total == 0) continue;
        printf("  %-16s %6.2f %%  (%lld / %lld)", fs.class_names[c],
               100.0 * res.confusion[(size_t)c * nc + c] / total,
               (long long)res.confusion[(size_t)c * nc + c], (long long)total);
        if (worst >= 0) printf("   -> %s x%lld", fs.class_names[worst], (long long)worst_n);
        printf("\n");
    }
    // suspicious images: labelled rows whose neighbours mostly disagree
    int n_suspects = 0;
    for (int i = 0; i < fs.n; i++)
        if (fs.labels[i] >= 0 && res.agreement[i] < 0.5f) order[n_suspects++] = i;
    sort_agreement = res.agreement;
    qsort(order, (size_t)n_suspects, sizeof(int), suspect_cmp);
    printf("\n%d images whose neighbours mostly disagree with their label (agreement < 0.5)",
           n_suspects);
    printf("%s\n", n_suspects > show ? ", the lowest:" : ":");
    printf("  %7s  %9s  %-14s  %-14s  %s\n", "index", "agreement", "label", "neighbours say", "path");
    for (int s = 0; s < n_suspects && s < show; s++) {
        int i = order[s];
        printf("  %7d  %9.2f  %-14s  %-14s  %s\n", i, res.agreement[i], fs.class_names[fs.labels[i]],
               res.pred[i] >= 0 ? fs.class_names[res.pred[i]] : "-", fs.paths ? fs.paths[i] : "-");
    }
    int n_pairs = 0;
    for (int a = 0; a < nc; a++)
        for (int b = a + 1; b < nc; b++) {
            int64_t v = res.confusion[(size_t)a * nc + b] + res.confusion[(size_t)b * nc + a];
            if (v > 0) pairs[n_pairs++] = (class_pair){a, b, v};
        }
    qsort(pairs, (size_t)n_pairs, sizeof *pairs, pair_cmp);
    printf("\nmost confused class pairs (either way):\n");
    for (int p = 0; p < n_pairs && p < show; p++)
        printf("  %-16s <-> %-16s %6lld  (%lld + %lld)\n", fs.class_names[pairs[p].a],
               fs.class_names[pairs[p].b], (long long)pairs[p].count,
               (long long)res.confusion[(size_t)pairs[p].a * nc + pairs[p].b],
               (long long)res.confusion[(size_t)pairs[p].b * nc + pairs[p].a]);
    if (csv) {
        eval_csv ec = {&fs, &res};
        if (cnn_write_atomic(csv, write_eval_csv, &ec) != CNN_OK) {
            cli_error();
            goto done;
        }
    }
    status = EXIT_OK;
done:
    vis_knn_eval_free(&res);
    free(idx);
    free(dist);
    free(order);
    free(pairs);
    vis_feature_set_free(&fs);
    return status;
}
