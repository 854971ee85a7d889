// cmd_eval.c - cnnscope eval MODEL DIR: top-1 / top-5 accuracy on an ImageFolder.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct {
    const cnn_dataset *ds;
    int n;                 // the first n images were evaluated
    const int *pred;       // [n_images]
    const float *prob;     // [n_images]
} predictions;

static cnn_status write_predictions(void *user, FILE *f) {
    const predictions *p = user;
    fprintf(f, "path,label,pred,prob\n");
    for (int i = 0; i < p->n; i++) {
        cli_csv_field(f, p->ds->relative[i]);
        fprintf(f, ",%d,%d,%.6f\n", p->ds->labels[i], p->pred[i], p->prob[i]);
    }
    return CNN_OK;
}

int cmd_eval(int argc, char **argv) {
    int batch = 32, threads = 0, limit = 0;
    const char *predictions_path = NULL;
    const char *pos[2];
    const cli_option options[] = {
        {"--predictions", OPT_STRING, &predictions_path, 0, 0,
         "FILE  write a CSV: path,label,pred,prob (path relative to DIR)"},
        {"--batch", OPT_INT, &batch, 1, 4096, "N  images per forward pass (default 32)"},
        {"--threads", OPT_INT, &threads, 1, 1024, "N  worker threads (default: all cores)"},
        {"--limit", OPT_INT, &limit, 1, 1 << 30, "N  only the first N images (in order)"},
    };
    const cli_command_spec spec = {
        "eval", "MODEL DIR [options]",
        "Classifies every image of DIR, an ImageFolder (one sub-folder per class; class index =\n"
        "position of the folder name in sorted order), and prints top-1 and top-5 accuracy.",
        options, (int)(sizeof options / sizeof options[0]), 2, 2};
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    cli_set_threads(threads);
    cnn_model *m = cli_load_model(pos[0]);
    if (!m) return EXIT_ERROR;
    const cnn_model_info *info = cnn_model_get_info(m);
    cnn_dataset *ds = NULL;
    if (cnn_dataset_open(pos[1], &ds) != CNN_OK) {
        cnn_model_free(m);
        return cli_error();
    }
    if (ds->n_classes != info->num_classes) {
        fprintf(stderr, "cnnscope eval: %s has %d class folders but %s has %d classes\n", pos[1],
                ds->n_classes, pos[0], info->num_classes);
        cnn_dataset_free(ds);
        cnn_model_free(m);
        return EXIT_ERROR;
    }
    int n = limit > 0 && limit < ds->n_images ? limit : ds->n_images;
    int classes = info->num_classes, k5 = classes < 5 ? classes : 5;
    size_t per_image = (size_t)info->channels * info->height * info->width;
    float *input = malloc(sizeof(float) * per_image * (size_t)batch);
    int *pred = malloc(sizeof(int) * (size_t)n);
    float *prob = malloc(sizeof(float) * (size_t)n);
    cnn_session *s = NULL;
    cnn_session_options opt = cnn_session_defaults();
    opt.threads = threads;
    cnn_image_limits limits = {0};   // 0: the process-wide limit (--max-pixels)
    int status = EXIT_ERROR;
    long top1 = 0, top5 = 0;
    double start = cli_now();
    if (!input || !pred || !prob) {
        cnn_fail(CNN_ERR_NOMEM, "out of memory for a batch of %d images", batch);
        cli_error();
        goto done;
    }
    if (cnn_session_create(m, batch, &opt, &s) != CNN_OK) {
        cli_error();
        goto done;
    }
    for (int first = 0; first < n; first += batch) {
        int count = n - first < batch ? n - first : batch;
        if (cnn_image_load_batch(info, (const char *const *)ds->paths + first, count, &limits,
                                 input) != CNN_OK ||
            cnn_session_run(s, input, count) != CNN_OK) {
            cli_error();
            goto done;
        }
        const cnn_tensor *logits = cnn_session_output(s, cnn_model_output_node(m));
        for (int i = 0; i < count; i++) {
            float *row = logits->data + (size_t)i * classes;
            int top[5], label = ds->labels[first + i];
            cli_softmax(row, classes);
            cli_top_k(row, classes, k5, top);
            pred[first + i] = top[0];
            prob[first + i] = row[top[0]];
            top1 += top[0] == label;
            for (int k = 0; k < k5; k++) top5 += top[k] == label;
        }
        cli_progress("eval", first + count, n, start);
    }
    if (predictions_path) {
        predictions p = {ds, n, pred, prob};
        if (cnn_write_atomic(predictions_path, write_predictions, &p) != CNN_OK) {
            cli_error();
            goto done;
        }
    }
    printf("images: %d in %d classes, %.1f s\n", n, classes, cli_now() - start);
    printf("top-1 accuracy: %.2f %% (%ld / %d)\n", 100.0 * top1 / n, top1, n);
    printf("top-5 accuracy: %.2f %% (%ld / %d)\n", 100.0 * top5 / n, top5, n);
    status = EXIT_OK;
done:
    cnn_session_free(s);
    free(input);
    free(pred);
    free(prob);
    cnn_dataset_free(ds);
    cnn_model_free(m);
    return status;
}
