// cmd_dump.c - cnnscope dump MODEL --input X.npy --layer NAMES -o OUT: layer outputs as .npy.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_dump(int argc, char **argv) {
    const char *input_path = NULL, *layers = NULL, *out_dir = NULL;
    int threads = 0, reference = 0;
    const char *pos[1];
    const cli_option options[] = {
        {"--input", OPT_STRING, &input_path, 0, 0, "X.npy  input [N,C,H,W] float32, used as is"},
        {"--layer", OPT_STRING, &layers, 0, 0, "NAMES  comma-separated layer names, or all"},
        {"-o", OPT_STRING, &out_dir, 0, 0, "OUT  folder for OUT/<layer>.npy"},
        {"--threads", OPT_INT, &threads, 1, 1024, "N  worker threads (default: all cores)"},
        {"--reference", OPT_FLAG, &reference, 0, 0, "   use the plain reference kernels only"},
    };
    const cli_command_spec spec = {
        "dump", "MODEL --input X.npy --layer NAME[,NAME...]|all -o OUT [options]",
        "Runs the network on X (no preprocessing) and writes each named layer's output as\n"
        "OUT/<name>.npy: [N,C,H,W], or [N,F] after flatten and linear layers. A dumped conv\n"
        "gives its own output, before any batch norm that follows it.",
        options, (int)(sizeof options / sizeof options[0]), 1, 1};
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    if (!input_path || !layers || !out_dir)
        return cli_usage_error("dump", "--input, --layer and -o are required");
    cli_set_threads(threads);
    cnn_model *m = cli_load_model(pos[0]);
    if (!m) return EXIT_ERROR;
    const cnn_model_info *info = cnn_model_get_info(m);
    float *x = NULL;
    int ndim = 0, *nodes = NULL, status = EXIT_ERROR;
    int64_t dims[8];
    cnn_session *s = NULL;
    char *path = NULL;
    int n_nodes = cli_resolve_layers(m, layers, &nodes);
    if (n_nodes < 0) goto done;
    if (cnn_npy_read(input_path, &x, &ndim, dims) != CNN_OK) {
        cli_error();
        goto done;
    }
    if (ndim != 4 || dims[1] != info->channels || dims[2] != info->height ||
        dims[3] != info->width || dims[0] < 1 || dims[0] > 4096) {
        fprintf(stderr, "cnnscope: %s: shape [", input_path);
        for (int i = 0; i < ndim; i++) fprintf(stderr, "%s%lld", i ? "," : "", (long long)dims[i]);
        fprintf(stderr, "] does not match the model input [N,%d,%d,%d] (N 1..4096)\n",
                info->channels, info->height, info->width);
        goto done;
    }
    if (cli_mkdirs(out_dir) != 0) goto done;
    cnn_session_options opt = cnn_session_defaults();
    opt.threads = threads;
    opt.reference = reference;
    opt.keep = nodes;
    opt.n_keep = n_nodes;
    if (cnn_session_create(m, (int)dims[0], &opt, &s) != CNN_OK ||
        cnn_session_run(s, x, (int)dims[0]) != CNN_OK) {
        cli_error();
        goto done;
    }
    path = malloc(strlen(out_dir) + 4096 + 8);
    for (int k = 0; path && k < n_nodes; k++) {
        cnn_node_info node;
        cnn_model_node(m, nodes[k], &node);
        const cnn_tensor *t = cnn_session_output(s, nodes[k]);
        if (!t) {
            cli_error();
            goto done;
        }
        snprintf(path, strlen(out_dir) + 4096 + 8, "%s/%s.npy", out_dir, node.name);
        if (cnn_npy_write(path, t->data, t->ndim, t->dims) != CNN_OK) {
            cli_error();
            goto done;
        }
    }
    printf("wrote %d layer%s to %s/\n", n_nodes, n_nodes == 1 ? "" : "s", out_dir);
    status = path ? EXIT_OK : EXIT_ERROR;
done:
    free(path);
    cnn_session_free(s);
    cnn_npy_free(x);
    free(nodes);
    cnn_model_free(m);
    return status;
}
