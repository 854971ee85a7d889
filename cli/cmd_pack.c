// cmd_pack.c - cnnscope pack MODEL -o OUT: a copy of the model file that also holds its
// convs' weights prepared for this machine's kernels (cnn_model_pack), which sessions then
// read in place instead of preparing them at every load.
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cmd_pack(int argc, char **argv) {
    const char *out = NULL;
    int threads = 0;
    const char *pos[1];
    const cli_option options[] = {
        {"-o", OPT_STRING, &out, 0, 0, "OUT  the packed model file to write (may be MODEL)"},
        {"--threads", OPT_INT, &threads, 1, 1024, "N  worker threads (default: all cores)"},
    };
    const cli_command_spec spec = {
        "pack", "MODEL -o OUT",
        "Writes OUT: MODEL with every conv's weights also stored as a session prepares them\n"
        "(batch norm folded in, transformed for Winograd, packed for the GEMM kernels in use),\n"
        "so that loading OUT skips that work. The prepared weights are for this machine's\n"
        "kernels (CNNSCOPE_ISA picks others); on a machine whose kernels differ, OUT loads as\n"
        "MODEL does and gives the same results. The original tensors stay, so every command\n"
        "works on OUT as on MODEL.",
        options, (int)(sizeof options / sizeof options[0]), 1, 1};
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    if (!out) return cli_usage_error("pack", "-o OUT is required");
    if (cli_check_output("pack", out) != EXIT_OK) return EXIT_ERROR;
    cli_set_threads(threads);
    cnn_model *m = cli_load_model(pos[0]);
    if (!m) return EXIT_ERROR;
    int n = 0;
    if (cnn_model_pack(m, out, &n) != CNN_OK) {
        cnn_model_free(m);
        return cli_error();
    }
    printf("%s: %d convs prepared for %s\n", out, n, cnn_prepared_layout());
    cnn_model_free(m);
    return EXIT_OK;
}
