// main.c - cnnscope: one binary, one subcommand per job.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"info", cmd_info, "the layers of a model: shapes, parameters, MACs"},
    {"classify", cmd_classify, "top-5 classes of images"},
    {"eval", cmd_eval, "top-1 / top-5 accuracy on an ImageFolder"},
    {"dump", cmd_dump, "write layer outputs for an input tensor as .npy"},
    {"preprocess", cmd_preprocess, "write the network input for images as .npy"},
    {"filters", cmd_filters, "a convolution's filters as a PNG grid"},
    {"maps", cmd_maps, "a layer's feature maps for one image (PNG)"},
    {"patches", cmd_patches, "the image patches that activate each channel most"},
    {"features", cmd_features, "one feature row per image at a layer (.npy)"},
    {"neighbors", cmd_neighbors, "nearest neighbours of an image in feature space"},
    {"knn-eval", cmd_knn_eval, "k-NN accuracy in feature space, suspicious labels"},
    {"embed", cmd_embed, "2-D maps of features: PCA, t-SNE, UMAP (CSV, SVG, PNG)"},
    {"pack", cmd_pack, "store the weights prepared for this machine in the model file"},
    {"bench", cmd_bench, "time each layer and the whole network on a random input"},
    {"explain", cmd_explain, "why the network decided: saliency, DeconvNet, guided, CAM, Grad-CAM"},
    {"report", cmd_report, "an HTML report of what a model has learned (one folder)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: cnnscope COMMAND [options]   (cnnscope COMMAND --help for details)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

// How long libgomp's idle workers spin before they sleep, unless the user chose
// (OMP_WAIT_POLICY or GOMP_SPINCOUNT). Its default, 300,000 pauses (~4 ms here), lets a
// thread that waits at a barrier for a slow vCPU go to sleep, and a vCPU that sleeps is one
// the hypervisor may give away: the wake-up then costs more than a layer. 10 million (~0.25 s
// on the Zen 3 VM) keeps them spinning through a forward pass, as ONNX Runtime's pool does
// (ResNet-50 at batch 1 on 2 threads, 6 interleaved runs: 77 -> 66 ms median), and still
// frees the cores soon after. libgomp reads it once, before main, so the program sets it and
// starts itself again; if that fails it simply runs with the default.
static void spin_longer(char **argv) {
#if defined(_OPENMP) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    if (setenv("GOMP_SPINCOUNT", "10000000", 1) != 0) return;
    execv("/proc/self/exe", argv);   // returns only on failure: carry on as we are
#else
    (void)argv;
#endif
}

int main(int argc, char **argv) {
    spin_longer(argv);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_ERROR : EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "cnnscope: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return EXIT_ERROR;
}
