// cmd_bench.c - cnnscope bench MODEL: how long each layer takes, and the whole network.
//
// The input is random (fixed seed): speed does not depend on the pixel values. Each layer's
// time is measured with a session tap: the tap runs right after a node has been computed, so
// the time between two taps is the time of the node that just finished (including the cost of
// anything fused into it, such as a folded batch norm, which then shows 0). After `warmup`
// runs, `iters` timed runs; the table shows the median of each layer over the timed runs, and
// the last line the median of the whole runs and the process's peak resident memory:
//     median_ms=X peak_rss_mb=Y
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"

typedef struct {
    double *node_ms;      // [iters, nodes]: the time of each node in each timed run
    unsigned char *reported;   // [nodes]: the session called the tap for this node
    int nodes, iter;      // the run being timed (-1: warm-up, not recorded)
    double last;          // when the previous node finished (seconds)
} bench_clock;

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int on_node_done(void *user, int node, const char *name, const cnn_tensor *t) {
    (void)name;
    (void)t;
    bench_clock *c = user;
    double now = seconds_now();
    c->reported[node] = 1;
    if (c->iter >= 0) c->node_ms[(size_t)c->iter * c->nodes + node] += 1e3 * (now - c->last);
    c->last = now;
    return 0;
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Median of v[0..n) (sorts v).
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, compare_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double peak_rss_mb(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_maxrss / 1024.0;   // Linux: kilobytes
}

int cmd_bench(int argc, char **argv) {
    int batch = 1, threads = 0, iters = 20, warmup = 2;
    const cli_option options[] = {
        {"--batch", OPT_INT, &batch, 1, 4096, "N  images per run (default 1)"},
        {"--threads", OPT_INT, &threads, 1, 1024, "N  worker threads (default: all cores)"},
        {"--iters", OPT_INT, &iters, 1, 100000, "N  timed runs (default 20)"},
        {"--warmup", OPT_INT, &warmup, 0, 100000, "N  untimed runs first (default 2)"},
    };
    const cli_command_spec spec = {
        "bench", "MODEL [options]",
        "Times the model on a random input: per layer the median time over the timed runs,\n"
        "GFLOP/s (2 x MACs x batch / time) and share of the total; then the load time (mmap,\n"
        "validation, session planning and weight packing) and, as the last line,\n"
        "median_ms=X peak_rss_mb=Y (median of whole runs; peak resident memory of the process).\n"
        "A conv computes its folded batch norm, a relu and a residual add after it in the same\n"
        "call: those rows say (fused), and the row of the last of them has their time and work.",
        options, (int)(sizeof options / sizeof options[0]), 1, 1};
    const char *pos[1];
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    cli_set_threads(threads);

    double load_start = seconds_now();
    cnn_model *m = cli_load_model(pos[0]);
    if (!m) return EXIT_ERROR;
    const cnn_model_info *info = cnn_model_get_info(m);
    int nodes = cnn_model_node_count(m);
    size_t input_size = (size_t)batch * info->channels * info->height * info->width;
    float *input = malloc(sizeof(float) * input_size);
    double *node_ms = calloc((size_t)iters * nodes, sizeof(double));
    double *run_ms = malloc(sizeof(double) * (size_t)iters);
    double *column = malloc(sizeof(double) * (size_t)iters);
    unsigned char *reported = calloc((size_t)nodes, 1);
    bench_clock clock = {node_ms, reported, nodes, -1, 0};
    cnn_session *s = NULL;
    cnn_session_options opt = cnn_session_defaults();
    opt.threads = threads;
    opt.tap = on_node_done;
    opt.tap_user = &clock;
    int status = EXIT_ERROR;
    if (!input || !node_ms || !run_ms || !column || !reported) {
        cnn_fail(CNN_ERR_NOMEM, "out of memory for a batch of %d", batch);
        cli_error();
        goto done;
    }
    if (cnn_session_create(m, batch, &opt, &s) != CNN_OK) {
        cli_error();
        goto done;
    }
    double load_ms = 1e3 * (seconds_now() - load_start);
    uint64_t state = 12345;   // xorshift: a fixed, normalised-looking input in [-2, 2)
    for (size_t i = 0; i < input_size; i++) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        input[i] = (float)((state >> 40) * (4.0 / 16777216.0) - 2.0);
    }

    for (int it = -warmup; it < iters; it++) {
        clock.iter = it < 0 ? -1 : it;
        double start = seconds_now();
        clock.last = start;
        if (cnn_session_run(s, input, batch) != CNN_OK) {
            cli_error();
            goto done;
        }
        if (it >= 0) run_ms[it] = 1e3 * (seconds_now() - start);
    }

    printf("model %s, batch %d, kernels %s, %d timed runs after %d warm-up\n", info->name, batch,
           cnn_isa(), iters, warmup);
    printf("%4s  %-28s %-17s %10s %9s %7s\n", "#", "name", "op", "median ms", "GFLOP/s", "share");
    double layer_total = 0, *layer_median = malloc(sizeof(double) * (size_t)nodes);
    if (!layer_median) {
        cnn_fail(CNN_ERR_NOMEM, "out of memory");
        cli_error();
        goto done;
    }
    for (int i = 0; i < nodes; i++) {
        for (int it = 0; it < iters; it++) column[it] = node_ms[(size_t)it * nodes + i];
        layer_median[i] = median(column, iters);
        layer_total += layer_median[i];
    }
    // A node the session did not report (a conv whose batch norm, relu or residual add it
    // computes in the same call) has its time and work counted in the next reported row.
    double pending_macs = 0;
    for (int i = 1; i < nodes; i++) {   // node 0 is the input
        cnn_node_info n;
        cnn_model_node(m, i, &n);
        pending_macs += (double)n.macs;
        if (!reported[i]) {
            printf("%4d  %-28s %-17s %10s %9s %7s\n", i, n.name, cnn_op_name(n.op), "(fused)", "",
                   "");
            continue;
        }
        double gflops = layer_median[i] > 0 ? 2e-6 * pending_macs * batch / layer_median[i] : 0;
        pending_macs = 0;
        printf("%4d  %-28s %-17s %10.3f %9.1f %6.1f%%\n", i, n.name, cnn_op_name(n.op),
               layer_median[i], gflops, layer_total > 0 ? 100 * layer_median[i] / layer_total : 0);
    }
    free(layer_median);
    double med = median(run_ms, iters);
    printf("load: %.1f ms (mmap, validation, session planning, weight packing)\n", load_ms);
    printf("prepared weights: %d convs read from the file (cnnscope pack)\n",
           cnn_session_prepared_in_file(s));
    printf("activation arena: %.1f MB\n", cnn_session_arena_bytes(s) / 1048576.0);
    printf("median_ms=%.3f peak_rss_mb=%.1f\n", med, peak_rss_mb());
    status = EXIT_OK;
done:
    cnn_session_free(s);
    free(column);
    free(reported);
    free(run_ms);
    free(node_ms);
    free(input);
    cnn_model_free(m);
    return status;
}
