// cmd_embed.c - cnnscope embed FEATS.npy --method pca|tsne|umap -o EMB.csv: a low-dimensional
// map of a feature table, its quality (--metrics) and its pictures (--plot).
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "neighbors.h"
#include "pca.h"
#include "scatter_plot.h"
#include "tsne.h"
#include "umap.h"
#include "vis_features.h"

typedef struct {
    const char *label;
    double start;
} progress_state;

static void show_progress(void *user, long done, long total) {
    progress_state *p = user;
    cli_progress(p->label, done, total, p->start);
}

static int parse_double(const char *text, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

typedef struct {
    const vis_feature_set *fs;
    const float *y;
    int dims;
} embedding_csv;

static cnn_status write_csv(void *user, FILE *f) {
    const embedding_csv *e = user;
    const char *axis[3] = {"x", "y", "z"};
    fprintf(f, "index");
    for (int c = 0; c < e->dims; c++) {
        if (e->dims <= 3) fprintf(f, ",%s", axis[c]);
        else fprintf(f, ",c%d", c);
    }
    fprintf(f, ",label,class,path\n");
    for (int i = 0; i < e->fs->n; i++) {
        fprintf(f, "%d", i);
        for (int c = 0; c < e->dims; c++) fprintf(f, ",%.7g", e->y[(size_t)i * e->dims + c]);
        int label = e->fs->labels ? e->fs->labels[i] : -1;
        fprintf(f, ",%d,", label);
        cli_csv_field(f, label >= 0 ? e->fs->class_names[label] : "");
        fputc(',', f);
        cli_csv_field(f, e->fs->paths ? e->fs->paths[i] : "");
        fputc('\n', f);
    }
    return CNN_OK;
}

// Leave-one-out 10-NN accuracy of rows x [N, D] against the labels, or -1 without labels.
static double knn_accuracy(const vis_feature_set *fs, const float *x, int dim, int k) {
    if (!fs->labels || fs->n_classes < 1 || k > fs->n - 1) return -1;
    int *idx = malloc(sizeof(int) * (size_t)fs->n * k);
    float *dist = malloc(sizeof(float) * (size_t)fs->n * k);
    vis_knn_eval_result r = {0};
    double acc = -1;
    if (idx && dist && vis_knn_graph(x, fs->n, dim, k, VIS_METRIC_L2, VIS_KNN_EXACT, 0, idx, dist) == CNN_OK &&
        vis_knn_eval(fs->labels, fs->n, fs->n_classes, idx, k, &r) == CNN_OK && r.labelled > 0)
        acc = (double)r.correct / r.labelled;
    vis_knn_eval_free(&r);
    free(idx);
    free(dist);
    return acc;
}

int cmd_embed(int argc, char **argv) {
    const char *method = NULL, *out_csv = NULL, *plot = NULL, *perplexity_text = "30",
               *min_dist_text = "0.1", *theta_text = "0.5", *init_name = NULL, *knn_name = "auto",
               *tsne_kind = "auto", *title = NULL;
    int dims = 2, seed = 42, iters = 1000, neighbors = 15, epochs = 0, metrics = 0, thumbs = 0,
        threads = 0, plot_size = 0, thumb_size = 32;
    const char *pos[1];
    const cli_option options[] = {
        {"--method", OPT_STRING, &method, 0, 0, "pca|tsne|umap"},
        {"-o", OPT_STRING, &out_csv, 0, 0, "EMB.csv  index,x,y,...,label,class,path per row"},
        {"--dims", OPT_INT, &dims, 1, 64, "E  output dimensions (default 2; t-SNE 1..3)"},
        {"--seed", OPT_INT, &seed, 0, 2147483647, "S  random seed (default 42)"},
        {"--perplexity", OPT_STRING, &perplexity_text, 0, 0, "P  t-SNE perplexity (default 30)"},
        {"--iters", OPT_INT, &iters, 0, 1000000, "N  t-SNE iterations (default 1000)"},
        {"--theta", OPT_STRING, &theta_text, 0, 0, "T  t-SNE Barnes-Hut accuracy (default 0.5)"},
        {"--tsne", OPT_STRING, &tsne_kind, 0, 0,
         "auto|exact|bh  t-SNE gradient (auto: exact up to 1,000 points)"},
        {"--neighbors", OPT_INT, &neighbors, 2, 1000, "K  UMAP neighbours (default 15)"},
        {"--min-dist", OPT_STRING, &min_dist_text, 0, 0, "D  UMAP min_dist (default 0.1)"},
        {"--epochs", OPT_INT, &epochs, 1, 1000000, "N  UMAP epochs (default 500, 200 above 10k points)"},
        {"--init", OPT_STRING, &init_name, 0, 0,
         "pca|spectral|random  initial layout (t-SNE: pca; UMAP: spectral)"},
        {"--knn", OPT_STRING, &knn_name, 0, 0,
         "auto|exact|nndescent  neighbour search (auto: exact up to 30,000 points)"},
        {"--metrics", OPT_FLAG, &metrics, 0, 0,
         "   trustworthiness at k=10 and 10-NN accuracy (features and embedding)"},
        {"--plot", OPT_STRING, &plot, 0, 0, "FILE.svg|FILE.png  scatter plot coloured by class"},
        {"--thumbs", OPT_FLAG, &thumbs, 0, 0, "   PNG plot: the images themselves at their places"},
        {"--plot-size", OPT_INT, &plot_size, 64, 32768,
         "W  PNG width in pixels (default 1600; 2400 with --thumbs)"},
        {"--thumb-size", OPT_INT, &thumb_size, 4, 1024, "T  thumbnail side with --thumbs (default 32)"},
        {"--title", OPT_STRING, &title, 0, 0, "TEXT  SVG title"},
        {"--threads", OPT_INT, &threads, 1, 1024, "N  worker threads (default: all cores)"},
    };
    const cli_command_spec spec = {
        "embed", "FEATS.npy --method pca|tsne|umap -o EMB.csv [options]",
        "Maps the rows of FEATS.npy to a few dimensions.\n"
        "  pca   exact (covariance eigen-decomposition) up to 256 features, else randomised SVD;\n"
        "        prints the explained variance.\n"
        "  tsne  perplexity-calibrated affinities on the 3*perplexity nearest neighbours, early\n"
        "        exaggeration 12 for 250 iterations, PCA initialisation, learning rate\n"
        "        max(N/12, 200); exact gradient up to 1,000 points, else Barnes-Hut.\n"
        "  umap  fuzzy simplicial set on the k-NN graph, spectral initialisation, SGD with\n"
        "        negative sampling, a and b fitted from --min-dist.\n"
        "The result depends only on the data, the options and the seed (not the thread count).",
        options, (int)(sizeof options / sizeof options[0]), 1, 1};
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    if (!method || !out_csv) return cli_usage_error("embed", "--method and -o are required");
    int is_pca = strcmp(method, "pca") == 0, is_tsne = strcmp(method, "tsne") == 0,
        is_umap = strcmp(method, "umap") == 0;
    if (!is_pca && !is_tsne && !is_umap)
        return cli_usage_error("embed", "--method must be pca, tsne or umap, not '%s'", method);
    double perplexity, min_dist, theta;
    if (parse_double(perplexity_text, 1e-3, 1e6, &perplexity) != 0)
        return cli_usage_error("embed", "--perplexity needs a positive number, not '%s'", perplexity_text);
    if (parse_double(min_dist_text, 0, 1, &min_dist) != 0)
        return cli_usage_error("embed", "--min-dist needs a number in 0..1, not '%s'", min_dist_text);
    if (parse_double(theta_text, 0, 10, &theta) != 0)
        return cli_usage_error("embed", "--theta needs a number in 0..10, not '%s'", theta_text);
    int knn = strcmp(knn_name, "auto") == 0 ? VIS_KNN_AUTO
              : strcmp(knn_name, "exact") == 0 ? VIS_KNN_EXACT
              : strcmp(knn_name, "nndescent") == 0 ? VIS_KNN_NNDESCENT : -1;
    if (knn < 0) return cli_usage_error("embed", "--knn must be auto, exact or nndescent");
    if (plot && !ends_with(plot, ".svg") && !ends_with(plot, ".png"))
        return cli_usage_error("embed", "--plot must end in .svg or .png");
    if (thumbs && (!plot || !ends_with(plot, ".png")))
        return cli_usage_error("embed", "--thumbs draws into a PNG: give --plot FILE.png");
    // both outputs checked before anything is computed or written
    if (cli_check_output("embed", out_csv) != EXIT_OK ||
        (plot && cli_check_output("embed", plot) != EXIT_OK))
        return EXIT_ERROR;
    cli_set_threads(threads);

    vis_feature_set fs;
    if (vis_feature_set_load(pos[0], &fs) != CNN_OK) return cli_error();
    int status = EXIT_ERROR;
    float *y = malloc(sizeof(float) * (size_t)fs.n * dims);
    float *xy = NULL;
    if (!y) {
        fprintf(stderr, "cnnscope embed: out of memory\n");
        goto done;
    }
    double start = cli_now();
    progress_state ps = {method, start};
    if (is_pca) {
        vis_pca pca;
        if (vis_pca_fit(fs.x, fs.n, fs.dim, dims, VIS_PCA_AUTO, (uint64_t)seed, &pca) != CNN_OK ||
            vis_pca_transform(&pca, fs.x, fs.n, y) != CNN_OK) {
            vis_pca_free(&pca);
            cli_error();
            goto done;
        }
        printf("pca (%s): %d points x %d features -> %d, %.3f s\n",
               pca.method == VIS_PCA_EXACT ? "exact" : "randomised", fs.n, fs.dim, dims,
               cli_now() - start);
        double cumulative = 0;
        printf("  component  explained variance       ratio  cumulative\n");
        for (int c = 0; c < dims; c++) {
            cumulative += pca.explained_ratio[c];
            printf("  %9d  %18.9g  %10.8f  %10.8f\n", c + 1, pca.explained_variance[c],
                   pca.explained_ratio[c], cumulative);
        }
        vis_pca_free(&pca);
    } else if (is_tsne) {
        vis_tsne_options o = vis_tsne_defaults();
        o.dims = dims;
        o.perplexity = perplexity;
        o.iters = iters;
        o.theta = theta;
        o.seed = (uint64_t)seed;
        o.knn_method = knn;
        o.method = strcmp(tsne_kind, "exact") == 0 ? VIS_TSNE_EXACT
                   : strcmp(tsne_kind, "bh") == 0 ? VIS_TSNE_BARNES_HUT : VIS_TSNE_AUTO;
        if (init_name && strcmp(init_name, "random") == 0) o.init_random = 1;
        else if (init_name && strcmp(init_name, "pca") != 0) {
            fprintf(stderr, "cnnscope embed: t-SNE --init must be pca or random\n");
            goto done;
        }
        o.progress = show_progress;
        o.progress_user = &ps;
        vis_tsne_report rep;
        if (vis_tsne(fs.x, fs.n, fs.dim, &o, y, &rep) != CNN_OK) {
            cli_error();
            goto done;
        }
        printf("tsne (%s): %d points x %d features -> %d, perplexity %g, %d iterations, "
               "learning rate %.1f\n", rep.exact ? "exact" : "Barnes-Hut", fs.n, fs.dim, dims,
               perplexity, iters, rep.learning_rate);
        printf("  affinities %.2f s, optimisation %.2f s, KL divergence %.4f\n",
               rep.seconds_affinities, rep.seconds_optimise, rep.kl_divergence);
    } else {
        vis_umap_options o = vis_umap_defaults();
        o.dims = dims;
        o.n_neighbors = neighbors < fs.n ? neighbors : fs.n - 1;
        o.min_dist = min_dist;
        o.n_epochs = epochs;
        o.seed = (uint64_t)seed;
        o.knn_method = knn;
        if (init_name && strcmp(init_name, "pca") == 0) o.init = VIS_UMAP_INIT_PCA;
        else if (init_name && strcmp(init_name, "random") == 0) o.init = VIS_UMAP_INIT_RANDOM;
        else if (init_name && strcmp(init_name, "spectral") != 0) {
            fprintf(stderr, "cnnscope embed: UMAP --init must be spectral, pca or random\n");
            goto done;
        }
        o.progress = show_progress;
        o.progress_user = &ps;
        vis_umap_report rep;
        if (vis_umap(fs.x, fs.n, fs.dim, &o, y, &rep) != CNN_OK) {
            cli_error();
            goto done;
        }
        printf("umap: %d points x %d features -> %d, %d neighbours, min_dist %g (a %.4f, b %.4f), "
               "%d epochs, %lld edges\n", fs.n, fs.dim, dims, o.n_neighbors, min_dist, rep.a,
               rep.b, rep.n_epochs, (long long)rep.edges);
        printf("  graph %.2f s, layout %.2f s\n", rep.seconds_graph, rep.seconds_layout);
    }
    double seconds = cli_now() - start;
    printf("time: %.2f s\n", seconds);
    embedding_csv ec = {&fs, y, dims};
    if (cnn_write_atomic(out_csv, write_csv, &ec) != CNN_OK) {
        cli_error();
        goto done;
    }
    if (metrics) {
        double t;
        if (2 * 10 < fs.n) {
            if (vis_trustworthiness(fs.x, fs.n, fs.dim, y, dims, 10, &t) != CNN_OK) {
                cli_error();
                goto done;
            }
            printf("trustworthiness (k=10): %.4f\n", t);
        }
        double acc_x = knn_accuracy(&fs, fs.x, fs.dim, 10), acc_y = knn_accuracy(&fs, y, dims, 10);
        if (acc_y >= 0)
            printf("10-NN accuracy: %.2f %% in the embedding, %.2f %% in feature space\n",
                   100 * acc_y, 100 * acc_x);
    }
    if (plot) {
        xy = malloc(sizeof(float) * (size_t)fs.n * 2);
        if (!xy) goto done;
        for (int i = 0; i < fs.n; i++) {
            xy[2 * i] = y[(size_t)i * dims];
            xy[2 * i + 1] = dims > 1 ? y[(size_t)i * dims + 1] : 0.0f;
        }
        char default_title[512];
        snprintf(default_title, sizeof default_title, "%s of %s (%d points)", method, pos[0], fs.n);
        vis_scatter sc = {fs.n, xy, fs.labels, fs.n_classes, (const char *const *)fs.class_names,
                          (const char *const *)fs.paths, title ? title : default_title};
        cnn_status st = ends_with(plot, ".svg")
                            ? vis_scatter_svg(plot, &sc)
                            : vis_scatter_png(plot, &sc, plot_size ? plot_size : thumbs ? 2400 : 1600,
                                              thumbs ? thumb_size : 0);
        if (st != CNN_OK) {
            cli_error();
            goto done;
        }
    }
    printf("wrote %s%s%s\n", out_csv, plot ? " and " : "", plot ? plot : "");
    status = EXIT_OK;
done:
    free(y);
    free(xy);
    vis_feature_set_free(&fs);
    return status;
}
