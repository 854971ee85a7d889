// cmd_classify.c - cnnscope classify MODEL IMAGE...: the top classes of each image.
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

int cmd_classify(int argc, char **argv) {
    int top_k = 5, json = 0, threads = 0;
    static const char *pos[4096];
    const cli_option options[] = {
        {"--top", OPT_INT, &top_k, 1, 1000, "K  how many classes to show (default 5)"},
        {"--json", OPT_FLAG, &json, 0, 0, "   print JSON instead of text"},
        {"--threads", OPT_INT, &threads, 1, 1024, "N  worker threads (default: all cores)"},
    };
    const cli_command_spec spec = {
        "classify", "MODEL IMAGE... [options]",
        "Classifies each image with the model's own preprocessing and prints the top classes\n"
        "with their softmax probabilities.",
        options, (int)(sizeof options / sizeof options[0]), 2, 4096};
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    cli_set_threads(threads);
    cnn_model *m = cli_load_model(pos[0]);
    if (!m) return EXIT_ERROR;
    const cnn_model_info *info = cnn_model_get_info(m);
    int n = n_pos - 1, classes = info->num_classes;
    if (top_k > classes) top_k = classes;
    size_t per_image = (size_t)info->channels * info->height * info->width;
    float *input = malloc(sizeof(float) * per_image * (size_t)n);
    int *top = malloc(sizeof(int) * (size_t)top_k);
    cnn_session *s = NULL;
    cnn_session_options opt = cnn_session_defaults();
    opt.threads = threads;
    opt.copy_linear = 0;   // one run: a copy of the weights would not pay for itself
    cnn_image_limits limits = {0};   // 0: the process-wide limit (--max-pixels)
    int status = EXIT_ERROR;
    if (!input || !top) {
        cnn_fail(CNN_ERR_NOMEM, "out of memory for %d images", n);
        cli_error();
    } else if (cnn_image_load_batch(info, pos + 1, n, &limits, input) != CNN_OK ||
               cnn_session_create(m, n, &opt, &s) != CNN_OK ||
               cnn_session_run(s, input, n) != CNN_OK) {
        cli_error();
    } else {
        const cnn_tensor *logits = cnn_session_output(s, cnn_model_output_node(m));
        if (json) printf("[");
        for (int i = 0; i < n; i++) {
            float *row = logits->data + (size_t)i * classes;
            cli_softmax(row, classes);
            cli_top_k(row, classes, top_k, top);
            if (json) {
                printf("%s\n  {\"image\": ", i ? "," : "");
                cli_json_string(stdout, pos[1 + i]);
                printf(", \"top\": [");
                for (int k = 0; k < top_k; k++) {
                    printf("%s{\"class\": %d, \"name\": ", k ? ", " : "", top[k]);
                    cli_json_string(stdout, info->class_names[top[k]]);
                    printf(", \"prob\": %.6f}", row[top[k]]);
                }
                printf("]}");
            } else {
                printf("%s\n", pos[1 + i]);
                for (int k = 0; k < top_k; k++)
                    printf("  %d. %8.4f %%  %s (%d)\n", k + 1, 100.0 * row[top[k]],
                           info->class_names[top[k]], top[k]);
            }
        }
        if (json) printf("\n]\n");
        status = EXIT_OK;
    }
    cnn_session_free(s);
    free(top);
    free(input);
    cnn_model_free(m);
    return status;
}
