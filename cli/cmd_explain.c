// cmd_explain.c - cnnscope explain MODEL IMAGE... --method NAME -o OUT: why the network decided.
//
// Inputs are image files (the model's preprocessing), folders of images, or NCHW float32 .npy
// files used as is. They are run in batches through a session that keeps every activation
// (the methods read them), each batch explained with vis_explain (vis/explain.h), and each
// image's figure written as a PNG; --save-raw collects the raw results of all images.
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "explain.h"

// Activation memory a batch may keep alive (every node's output for every image).
#define BATCH_BYTES (256u << 20)

typedef struct {
    int n;                 // images
    float *x;              // [n, C, H, W] network input
    uint8_t *pixels;       // [n, H, W, C] for display
    char **names;          // [n] file name stem of each image's figure
} input_set;

static void free_inputs(input_set *in) {
    for (int i = 0; i < in->n; i++) free(in->names[i]);
    free(in->names);
    free(in->x);
    free(in->pixels);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    if (n < k) return 0;
    for (size_t i = 0; i < k; i++)
        if (tolower((unsigned char)s[n - k + i]) != tolower((unsigned char)suffix[i])) return 0;
    return 1;
}

// "dir/cat.01.jpg" -> "cat.01"
static char *stem_of(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t len = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, base, len);
        s[len] = '\0';
    }
    return s;
}

// Makes room for `more` images; returns 0, or EXIT_ERROR after printing.
static int grow(input_set *in, int more, size_t per_image, size_t per_pixels) {
    int n = in->n + more;
    float *x = realloc(in->x, sizeof(float) * per_image * (size_t)n);
    if (x) in->x = x;
    uint8_t *p = realloc(in->pixels, per_pixels * (size_t)n);
    if (p) in->pixels = p;
    char **names = realloc(in->names, sizeof(char *) * (size_t)n);
    if (names) in->names = names;
    if (!x || !p || !names) {
        fprintf(stderr, "cnnscope: out of memory for %d images\n", n);
        return EXIT_ERROR;
    }
    return 0;
}

// Appends the images of one argument: an image file, a folder of images, or an NCHW .npy.
static int add_input(input_set *in, const cnn_model_info *info, const char *arg) {
    size_t per_image = (size_t)info->channels * info->height * info->width;
    size_t plane = (size_t)info->height * info->width;
    if (ends_with(arg, ".npy")) {
        float *data;
        int ndim;
        int64_t dims[8];
        if (cnn_npy_read(arg, &data, &ndim, dims) != CNN_OK) return cli_error();
        if (ndim != 4 || dims[1] != info->channels || dims[2] != info->height ||
            dims[3] != info->width || dims[0] < 1 || dims[0] > 100000) {
            fprintf(stderr, "cnnscope: %s: shape [", arg);
            for (int i = 0; i < ndim; i++)
                fprintf(stderr, "%s%lld", i ? "," : "", (long long)dims[i]);
            fprintf(stderr, "] does not match the model input [N,%d,%d,%d] (N 1..100000)\n",
                    info->channels, info->height, info->width);
            cnn_npy_free(data);
            return EXIT_ERROR;
        }
        int n = (int)dims[0];
        if (grow(in, n, per_image, per_image) != 0) {
            cnn_npy_free(data);
            return EXIT_ERROR;
        }
        memcpy(in->x + per_image * in->n, data, sizeof(float) * per_image * n);
        cnn_npy_free(data);
        char *stem = stem_of(arg);
        for (int i = 0; i < n; i++, in->n++) {
            // display pixels: the normalisation undone
            const float *x = in->x + per_image * in->n;
            uint8_t *p = in->pixels + per_image * in->n;
            for (int c = 0; c < info->channels; c++) {
                for (size_t j = 0; j < plane; j++) {
                    float v = (x[c * plane + j] * info->std[c] + info->mean[c]) * 255.0f;
                    p[j * info->channels + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5f);
                }
            }
            char *name = malloc(strlen(stem ? stem : "x") + 16);
            in->names[in->n] = name;
            if (!name) {
                free(stem);
                fprintf(stderr, "cnnscope: out of memory\n");
                return EXIT_ERROR;
            }
            if (n == 1) sprintf(name, "%s", stem ? stem : "x");
            else sprintf(name, "%s_%d", stem ? stem : "x", i);
        }
        free(stem);
        return 0;
    }
    cnn_dataset *d = NULL;
    int n = 1;
    const char *const *paths = &arg;
    if (cnn_dataset_open(arg, &d) == CNN_OK) {   // a folder
        n = d->n_images;
        paths = (const char *const *)d->paths;
    }
    int status = grow(in, n, per_image, per_image);
    for (int i = 0; status == 0 && i < n; i++, in->n++) {
        in->names[in->n] = NULL;
        if (cnn_image_load_ex(info, paths[i], NULL, in->x + per_image * in->n,
                              in->pixels + per_image * in->n) != CNN_OK) {
            status = cli_error();
            break;
        }
        if (!(in->names[in->n] = stem_of(paths[i]))) {
            fprintf(stderr, "cnnscope: out of memory\n");
            status = EXIT_ERROR;
            break;
        }
    }
    cnn_dataset_free(d);
    return status;
}

// Gives duplicate names a suffix with the image's position: "cat" and "cat" -> "cat", "cat_5".
static void make_names_unique(input_set *in) {
    for (int i = 1; i < in->n; i++) {
        for (int j = 0; j < i; j++) {
            if (in->names[i] && in->names[j] && strcmp(in->names[i], in->names[j]) == 0) {
                char *name = malloc(strlen(in->names[i]) + 16);
                if (!name) break;
                sprintf(name, "%s_%d", in->names[i], i);
                free(in->names[i]);
                in->names[i] = name;
                j = -1;   // check the new name against all again
            }
        }
    }
}

// Parses "LAYER:CHANNEL[:Y:X]"; returns 0 or EXIT_ERROR after printing.
static int parse_neuron(const cnn_model *m, const char *spec, int *node, int *channel, int *y,
                        int *x) {
    char layer[1024];
    const char *colon = strchr(spec, ':');
    int fields = 0;
    *y = *x = -1;
    if (colon && (size_t)(colon - spec) < sizeof layer) {
        memcpy(layer, spec, (size_t)(colon - spec));
        layer[colon - spec] = '\0';
        char tail;
        fields = sscanf(colon + 1, "%d:%d:%d%c", channel, y, x, &tail);
    }
    if (fields != 1 && fields != 3)
        return cli_usage_error("explain", "--neuron needs LAYER:CHANNEL or LAYER:CHANNEL:Y:X, "
                               "not '%s'", spec);
    *node = cnn_model_find_node(m, layer);
    if (*node < 0) return cli_error();
    if (fields == 3 && (*y < 0 || *x < 0))
        return cli_usage_error("explain", "--neuron %s: Y and X must be >= 0", spec);
    return 0;
}

// The class to explain for each image: --class, or the class ranked `top` by the scores.
static int pick_classes(const cnn_model_info *info, const float *scores, int n, int fixed,
                        int top, int *classes) {
    int *ranked = malloc(sizeof(int) * (size_t)top);
    if (!ranked) return EXIT_ERROR;
    for (int i = 0; i < n; i++) {
        if (fixed >= 0) {
            classes[i] = fixed;
            continue;
        }
        cli_top_k(scores + (size_t)i * info->num_classes, info->num_classes, top, ranked);
        classes[i] = ranked[top - 1];
    }
    free(ranked);
    return 0;
}

int cmd_explain(int argc, char **argv) {
    const char *method_name = NULL, *class_arg = NULL, *layer_name = NULL, *neuron = NULL;
    const char *out_path = NULL, *raw_path = NULL, *alpha_arg = "0.5";
    int top = 0, threads = 0, reference = 0, batch_arg = 0;
    static const char *pos[16384];
    const cli_option options[] = {
        {"--method", OPT_STRING, &method_name, 0, 0,
         "NAME  saliency, deconvnet, guided, cam, gradcam or guided-gradcam"},
        {"--class", OPT_STRING, &class_arg, 0, 0, "K  explain class K (index or name)"},
        {"--top", OPT_INT, &top, 1, 100000,
         "R  explain each image's R-th most likely class (default 1)"},
        {"--layer", OPT_STRING, &layer_name, 0, 0,
         "NAME  the maps of cam / gradcam / guided-gradcam (default: the last conv block)"},
        {"--neuron", OPT_STRING, &neuron, 0, 0,
         "L:C[:Y:X]  explain one activation of layer L (channel C at Y,X, or its strongest)"},
        {"-o", OPT_STRING, &out_path, 0, 0, "OUT  a .png for one image, else a folder"},
        {"--save-raw", OPT_STRING, &raw_path, 0, 0,
         "F.npy  raw results, float32 (N,H,W) heatmaps or (N,C,H,W) gradients"},
        {"--alpha", OPT_STRING, &alpha_arg, 0, 0, "A  heatmap opacity over the image (0.5)"},
        {"--batch", OPT_INT, &batch_arg, 1, 4096, "B  images per run (default: by memory)"},
        {"--threads", OPT_INT, &threads, 1, 1024, "N  worker threads (default: all cores)"},
        {"--reference", OPT_FLAG, &reference, 0, 0, "   use the plain reference kernels only"},
    };
    const cli_command_spec spec = {
        "explain", "MODEL IMAGE... --method NAME [--class K | --top R] [--layer NAME] "
                   "[--neuron L:C[:Y:X]] [-o OUT] [--save-raw F.npy] [options]",
        "Shows why the network decided: which input pixels drive a class score (or one\n"
        "activation, with --neuron). IMAGE is an image file, a folder of images, or an NCHW\n"
        "float32 .npy used as is. Methods: saliency |d score/d input| (Simonyan 2014),\n"
        "deconvnet (Zeiler & Fergus 2014), guided backpropagation (Springenberg 2015), cam\n"
        "(Zhou 2016; networks ending in global average pooling + linear), gradcam and\n"
        "guided-gradcam (Selvaraju 2017). Each figure shows the input, then the heatmap alone\n"
        "and over the input, or the gradient image (grey = 0).",
        options, (int)(sizeof options / sizeof options[0]), 2, 16384};
    int n_pos, r = cli_parse(&spec, argc, argv, pos, &n_pos);
    if (r != CLI_CONTINUE) return r;
    vis_explain_method method;
    if (!method_name) return cli_usage_error("explain", "--method is required");
    if (vis_explain_method_parse(method_name, &method) != CNN_OK)
        return cli_usage_error("explain", "%s", cnn_last_error());
    if (!out_path && !raw_path)
        return cli_usage_error("explain", "-o or --save-raw is required");
    if (class_arg && top)
        return cli_usage_error("explain", "--class and --top exclude each other");
    if (neuron && (class_arg || top))
        return cli_usage_error("explain", "--neuron explains an activation, not a class: "
                               "drop --class / --top");
    if (layer_name && !vis_explain_uses_layer(method))
        return cli_usage_error("explain", "--layer applies to cam, gradcam and guided-gradcam");
    char *end;
    float alpha = strtof(alpha_arg, &end);
    if (end == alpha_arg || *end || !(alpha >= 0 && alpha <= 1))
        return cli_usage_error("explain", "--alpha needs a number in 0..1, not '%s'", alpha_arg);
    if (top == 0) top = 1;
    cli_set_threads(threads);

    cnn_model *m = cli_load_model(pos[0]);
    if (!m) return EXIT_ERROR;
    const cnn_model_info *info = cnn_model_get_info(m);
    int status = EXIT_ERROR, score = vis_explain_score_node(m);
    int C = info->channels, H = info->height, W = info->width;
    size_t per_image = (size_t)C * H * W;
    size_t per_result = vis_explain_is_heatmap(method) ? (size_t)H * W : per_image;
    input_set in = {0};
    cnn_session *s = NULL;
    float *raw = NULL;
    int *target_index = NULL, *classes = NULL;
    char *png = NULL;
    int fixed_class = -1, layer = -1, neuron_node = -1, neuron_c = 0, neuron_y = -1,
        neuron_x = -1;

    // what to explain
    if (class_arg) {
        long k = strtol(class_arg, &end, 10);
        if (end != class_arg && *end == '\0' && k >= 0 && k < info->num_classes) {
            fixed_class = (int)k;
        } else {
            for (int i = 0; i < info->num_classes; i++)
                if (strcmp(info->class_names[i], class_arg) == 0) fixed_class = i;
        }
        if (fixed_class < 0) {
            cli_usage_error("explain", "--class %s: not a class index (0..%d) or name of %s",
                            class_arg, info->num_classes - 1, info->name);
            goto done;
        }
    }
    if (top > info->num_classes) {
        cli_usage_error("explain", "--top %d: %s has %d classes", top, info->name,
                        info->num_classes);
        goto done;
    }
    if (layer_name && (layer = cnn_model_find_node(m, layer_name)) < 0) {
        cli_error();
        goto done;
    }
    if (neuron && parse_neuron(m, neuron, &neuron_node, &neuron_c, &neuron_y, &neuron_x) != 0)
        goto done;
    if (method == VIS_EXPLAIN_CAM && vis_explain_cam_layer(m) < 0) {   // fail before any work
        cli_error();
        goto done;
    }
    // the layer whose maps are read, to say so: "gradcam at layer4.1"
    char at_layer[1100] = "";
    if (vis_explain_uses_layer(method)) {
        int shown = layer >= 0 ? layer
                    : method == VIS_EXPLAIN_CAM ? vis_explain_cam_layer(m)
                                                : vis_explain_default_layer(m);
        cnn_node_info nd;
        if (shown >= 0) {
            cnn_model_node(m, shown, &nd);
            snprintf(at_layer, sizeof at_layer, " at %s", nd.name);
        }
    }

    // the inputs
    for (int i = 1; i < n_pos; i++)
        if (add_input(&in, info, pos[i]) != 0) goto done;
    if (in.n == 0) {
        fprintf(stderr, "cnnscope: no images in the arguments\n");
        goto done;
    }
    make_names_unique(&in);
    int single_png = out_path && ends_with(out_path, ".png");
    if (single_png && in.n > 1) {
        cli_usage_error("explain", "-o %s names one picture, but there are %d images; give a "
                        "folder", out_path, in.n);
        goto done;
    }
    // every output checked before anything is computed or written
    if ((single_png && cli_check_output("explain", out_path) != EXIT_OK) ||
        (raw_path && cli_check_output("explain", raw_path) != EXIT_OK))
        goto done;
    if (out_path && !single_png && cli_mkdirs(out_path) != 0) goto done;

    // batches: as many images as fit in BATCH_BYTES of kept activations
    size_t floats_per_image = 0;
    for (int i = 0; i < cnn_model_node_count(m); i++) {
        cnn_node_info nd;
        cnn_model_node(m, i, &nd);
        floats_per_image += (size_t)nd.c * nd.h * nd.w;
    }
    int batch = batch_arg > 0 ? batch_arg : (int)(BATCH_BYTES / (floats_per_image * 4 + 1));
    if (batch < 1) batch = 1;
    if (batch > in.n) batch = in.n;
    cnn_session_options opt = cnn_session_defaults();
    opt.keep_all = 1;
    opt.threads = threads;
    opt.reference = reference;
    opt.copy_linear = 0;   // a few runs, dominated by the backward pass (it reads the file's copy)
    raw = malloc(sizeof(float) * per_result * (size_t)in.n);
    target_index = malloc(sizeof(int) * (size_t)batch);
    classes = malloc(sizeof(int) * (size_t)batch);
    png = malloc(strlen(out_path ? out_path : "") + 4096);
    if (!raw || !target_index || !classes || !png) {
        fprintf(stderr, "cnnscope: out of memory for %d results\n", in.n);
        goto done;
    }
    if (cnn_session_create(m, batch, &opt, &s) != CNN_OK) {
        cli_error();
        goto done;
    }
    for (int b0 = 0; b0 < in.n; b0 += batch) {
        int n = in.n - b0 < batch ? in.n - b0 : batch;
        if (cnn_session_run(s, in.x + per_image * b0, n) != CNN_OK) {
            cli_error();
            goto done;
        }
        const cnn_tensor *scores = cnn_session_output(s, score);
        vis_explain_target target = {score, target_index};
        if (neuron) {
            target.node = neuron_node;
            if (vis_explain_neuron(s, neuron_node, neuron_c, neuron_y, neuron_x, target_index) !=
                CNN_OK) {
                cli_error();
                goto done;
            }
        } else {
            if (pick_classes(info, scores->data, n, fixed_class, top, classes) != 0) goto done;
            for (int i = 0; i < n; i++) target_index[i] = classes[i];
        }
        float *results = raw + per_result * b0;
        if (vis_explain(s, method, &target, layer, results) != CNN_OK) {
            cli_error();
            goto done;
        }
        for (int i = 0; i < n; i++) {
            int img = b0 + i;
            if (neuron) {
                cnn_node_info nd;
                cnn_model_node(m, neuron_node, &nd);
                int hw = nd.h * nd.w, at = target_index[i] % hw;
                printf("%s: %s%s of %s channel %d at (%d, %d)", in.names[img], method_name,
                       at_layer, nd.name, target_index[i] / hw, at / nd.w, at % nd.w);
            } else {
                float prob[4096], *row = scores->data + (size_t)i * info->num_classes;
                int k = classes[i];
                if (info->num_classes <= 4096) {
                    memcpy(prob, row, sizeof(float) * info->num_classes);
                    cli_softmax(prob, info->num_classes);
                }
                printf("%s: %s%s of class %d '%s' (score %.4f, p %.4f)", in.names[img],
                       method_name, at_layer, k, info->class_names[k], row[k],
                       info->num_classes <= 4096 ? prob[k] : 0.0f);
            }
            if (out_path) {
                if (single_png) snprintf(png, strlen(out_path) + 4096, "%s", out_path);
                else snprintf(png, strlen(out_path) + 4096, "%s/%s.png", out_path, in.names[img]);
                vis_canvas canvas = {0};
                if (vis_explain_figure(&canvas, method, results + per_result * i,
                                       in.pixels + per_image * img, C, H, W, alpha) != CNN_OK ||
                    vis_png_write(png, &canvas) != CNN_OK) {
                    vis_canvas_free(&canvas);
                    printf("\n");
                    cli_error();
                    goto done;
                }
                vis_canvas_free(&canvas);
                printf(" -> %s", png);
            }
            printf("\n");
        }
    }
    if (raw_path) {
        int64_t dims[4] = {in.n, C, H, W};
        int heat = vis_explain_is_heatmap(method);
        if (heat) {
            dims[1] = H;
            dims[2] = W;
        }
        if (cnn_npy_write(raw_path, raw, heat ? 3 : 4, dims) != CNN_OK) {
            cli_error();
            goto done;
        }
        printf("raw results (%s) -> %s\n", heat ? "N,H,W" : "N,C,H,W", raw_path);
    }
    status = EXIT_OK;
done:
    cnn_session_free(s);
    free_inputs(&in);
    free(raw);
    free(target_index);
    free(classes);
    free(png);
    cnn_model_free(m);
    return status;
}
