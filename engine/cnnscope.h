// cnnscope.h - the public C API of the cnnscope inference engine.
//
// Usage:
//     cnn_model *model;
//     if (cnn_model_load("resnet18.cnn", &model) != CNN_OK) {
//         fprintf(stderr, "%s\n", cnn_last_error());   // names the file, field, rule
//         return 2;
//     }
//     cnn_session *s;
//     cnn_session_options opt = cnn_session_defaults();
//     cnn_session_create(model, /*batch*/ 1, &opt, &s);
//     cnn_session_run(s, input /* [N,C,H,W] float32 */, NULL);
//     const cnn_tensor *logits = cnn_session_output(s, cnn_model_output_node(model));
//     cnn_session_free(s);
//     cnn_model_free(model);
//
// Contract (as in the stb headers):
// - Every function that can fail returns a cnn_status. On failure its outputs are untouched and
//   cnn_last_error() returns a one-line message for this thread, naming the file or layer, the
//   field and what was expected. The engine never prints and never exits.
// - Memory the engine returns goes back through the matching *_free function.
// - Activations are NCHW float32, contiguous. Outputs of linear and flatten are [N, F]
//   (ndim 2). Node indices are positions in the model's graph; node 0 is the input.
#ifndef CNNSCOPE_H
#define CNNSCOPE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CNN_OK = 0,
    CNN_ERR_IO,      // a file could not be opened, read or written
    CNN_ERR_FORMAT,  // a file's contents are malformed or inconsistent
    CNN_ERR_ARG,     // a caller mistake: unknown layer name, wrong shape, bad option
    CNN_ERR_NOMEM,   // an allocation failed
    CNN_ERR_LIMIT,   // an input exceeds a configured limit (pixels, tensor size)
} cnn_status;

// The message of the last failure on this thread ("" if none).
const char *cnn_last_error(void);
// Sets the message of this thread (printf-style) and returns `status`; used by the engine and vis.
cnn_status cnn_fail(cnn_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

// ---------------------------------------------------------------------------------------------
// Tensors: a view of float32 data, never owning it.
typedef struct {
    int ndim;            // 2 ([N,F]) or 4 ([N,C,H,W])
    int64_t dims[4];     // sizes; unused trailing dims are 1
    float *data;         // contiguous, row-major
} cnn_tensor;

static inline int64_t cnn_tensor_numel(const cnn_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->dims[i];
    return n;
}

// ---------------------------------------------------------------------------------------------
// Models

typedef struct cnn_model cnn_model;

// Maps, validates and prepares a model file (see weights/FORMAT.md). Nothing runs before the
// whole file has been checked.
cnn_status cnn_model_load(const char *path, cnn_model **out);
// The same checks on a model file that is already in memory (`size` bytes at `bytes`, which
// must start at a multiple of 64 bytes). The weights are used in place: the bytes must stay
// valid and unchanged until cnn_model_free. `name` (NULL: "(memory)") stands for the path in
// messages and in cnn_model_info.path.
cnn_status cnn_model_load_memory(const void *bytes, size_t size, const char *name,
                                 cnn_model **out);
void cnn_model_free(cnn_model *model);

// Problems that do not stop a load: NULL if none, else one line per problem joined by '\n'
// (today: tensors holding NaN or infinite values, which make every output they touch NaN).
// Valid until cnn_model_free; callers should show them (the CLI prints them on stderr).
const char *cnn_model_warnings(const cnn_model *model);

typedef struct {
    const char *name;         // "resnet18"
    const char *arch;         // "resnet18", "cifar_resnet56", ...
    const char *path;         // the file it was loaded from
    int channels;             // input C: 1 or 3
    int height, width;        // input H, W (after crop)
    int resize;               // shorter side resized to this first; 0 = no resize
    float mean[3], std[3];    // [channels] normalisation after scaling to [0,1]
    int num_classes;
    const char *const *class_names;  // [num_classes]
} cnn_model_info;

const cnn_model_info *cnn_model_get_info(const cnn_model *model);

// The graph, for inspection (info, receptive fields, vis).
typedef enum {
    CNN_OP_INPUT,
    CNN_OP_CONV2D,
    CNN_OP_BATCHNORM,
    CNN_OP_RELU,
    CNN_OP_MAXPOOL,
    CNN_OP_AVGPOOL,
    CNN_OP_ADAPTIVE_AVGPOOL,
    CNN_OP_LINEAR,
    CNN_OP_FLATTEN,
    CNN_OP_ADD,
    CNN_OP_DROPOUT,
    CNN_OP_SOFTMAX,
    CNN_OP_SHORTCUT_A,
    CNN_OP_COUNT
} cnn_op;

// The name used in model files ("conv2d"); NULL for an out-of-range value.
const char *cnn_op_name(cnn_op op);

// Window parameters of conv2d, maxpool and avgpool ([h, w] pairs).
typedef struct {
    int kernel[2], stride[2], padding[2], dilation[2];
    int groups;              // conv2d only, else 1
    int ceil_mode;           // pools only
    int count_include_pad;   // avgpool only
} cnn_window;

typedef struct {
    const char *name;        // "layer4.2.conv1"
    cnn_op op;
    int n_inputs;            // 0..2
    int inputs[2];           // node indices of the inputs
    int ndim;                // 2 or 4: ndim of the output
    int c, h, w;             // output shape for one image ([F,1,1] when ndim is 2)
    cnn_window window;       // conv2d / pools; zeros otherwise
    int64_t params;          // number of learned parameters
    int64_t macs;            // multiply-accumulates for one image
} cnn_node_info;

int cnn_model_node_count(const cnn_model *model);
int cnn_model_output_node(const cnn_model *model);   // the last node
// Fills *out for node i (0 <= i < count).
void cnn_model_node(const cnn_model *model, int i, cnn_node_info *out);
// The index of the node called `name`, or -1 with an error naming the closest names.
int cnn_model_find_node(const cnn_model *model, const char *name);

// Read-only access to the model's stored parameters (e.g. first-layer filters). `name` is the
// tensor name in the file ("features.0.weight"). Returns CNN_ERR_ARG if there is none.
cnn_status cnn_model_tensor(const cnn_model *model, const char *name, cnn_tensor *out);

// Prepared weights (cnnscope pack). A session prepares every conv's weights before its first
// run: its batch norm folded in, transformed for Winograd, packed for the GEMM kernels in use
// (for ResNet-50 ~150 MB written, most of a load's time). cnn_model_pack writes a copy of the
// model file at `path` (atomically) that also holds them, computed by this process's kernels;
// a session of a process whose kernels lay them out the same way (cnn_prepared_layout) then
// reads them from the file in place, and any other prepares its own, with the same results.
// *n_prepared (if not NULL) gets the number of convs stored. The file is dropped from the
// page cache after writing, so that its next load maps it in huge pages.
cnn_status cnn_model_pack(const cnn_model *model, const char *path, int *n_prepared);
// The layout of the prepared weights in the file (its meta key "prepared"), or NULL if none.
const char *cnn_model_prepared_layout(const cnn_model *model);
// The layout this process's kernels prepare weights in, e.g. "cnnscope prepared weights v1:
// avx2, gemm 6x16, kc 256" (valid until the next call on this thread).
const char *cnn_prepared_layout(void);

// ---------------------------------------------------------------------------------------------
// Sessions: activation buffers planned for one batch size; run as often as you like.

typedef struct cnn_session cnn_session;

// Called after a node has been computed; `t` is only valid during the call (its buffer may be
// reused afterwards). Return non-zero to stop the run early (cnn_session_run then returns
// CNN_OK). Not called for the input node, nor for a node whose output never exists on its own:
// a conv whose batch norm was folded into it, or the input of a relu or residual add that a
// conv's fused epilogue applied (keep a node to see its own output).
typedef int (*cnn_tap_fn)(void *user, int node, const char *name, const cnn_tensor *t);

typedef struct {
    int threads;           // 0 = default (all cores, or CNNSCOPE_THREADS)
    int keep_all;          // 1: every node's output stays readable after run (no reuse)
    int stop_after;        // node index after which nothing more runs; -1 = run everything
    const int *keep;       // optional list of node indices whose outputs must stay readable
    int n_keep;            //   and be exactly that node's output (this disables BN folding
                           //   into a kept conv)
    int fold_bn;           // 1 (default): fold batch norm into the preceding conv where legal
    int fuse_epilogues;    // 1 (default): a relu or residual add after a conv (and its batch
                           //   norm) is applied by the conv as it writes its output, where legal
    int winograd;          // 1 (default): 3x3 stride-1 convs with >= 32 channels in and out and
                           //   >= 13x13 outputs run as Winograd F(4x4,3x3): ~2x faster, error
                           //   ~1e-5 of the output's scale instead of ~1e-7 (CNNSCOPE_WINOGRAD=0
                           //   turns it off too)
    int reference;         // 1: use the plain reference kernels only (CNNSCOPE_REFERENCE=1 too)
    int copy_linear;       // 1 (default): fully connected weights are copied out of the file
                           //   mapping into the session's memory (the file's pages released):
                           //   every run then streams them 1.6-10x faster, for a copy at
                           //   creation (VGG-16's 490 MB: ~0.25 s); 0 for a few runs
    cnn_tap_fn tap;        // optional
    void *tap_user;
} cnn_session_options;

cnn_session_options cnn_session_defaults(void);

cnn_status cnn_session_create(const cnn_model *model, int batch, const cnn_session_options *opt,
                              cnn_session **out);
void cnn_session_free(cnn_session *s);

// Runs the network on `input` ([batch, C, H, W] as in cnn_model_info). `n` may be smaller than
// the session's batch (a final partial batch); NULL runs the full batch.
cnn_status cnn_session_run(cnn_session *s, const float *input, int n);

// The output of `node` from the last run, or NULL (with an error) if it was not kept. The
// network output and every node in opt.keep are always kept. dims[0] is the `n` of the last run.
const cnn_tensor *cnn_session_output(const cnn_session *s, int node);

// Convs whose prepared weights the session reads from the model file (cnn_model_pack); it
// prepared the others itself.
int cnn_session_prepared_in_file(const cnn_session *s);
// Bytes of activation memory the session planned (the peak of what is alive at once).
size_t cnn_session_arena_bytes(const cnn_session *s);

// ---------------------------------------------------------------------------------------------
// Images: decoding (stb) and the model's own preprocessing.

typedef struct {
    int64_t max_pixels;     // refuse images larger than this (0: the process-wide limit)
} cnn_image_limits;

// Process-wide hard limits, checked before anything is allocated: the pixel count of a decoded
// image (used when a call passes no cnn_image_limits or max_pixels 0; default 100,000,000) and
// the size of a model file (default 4 GiB, or the environment variable
// CNNSCOPE_MAX_MODEL_BYTES). Set them once, before loading; values <= 0 restore the default.
// The CLI's --max-pixels and --max-model-mb (accepted by every command) raise them.
void cnn_set_max_pixels(int64_t max_pixels);
int64_t cnn_max_pixels(void);
void cnn_set_max_model_bytes(int64_t max_bytes);

// Decodes `path` (JPEG, PNG, BMP, GIF, TGA, PSD, PNM, HDR as 8-bit) and applies the model's
// preprocessing exactly as torchvision's eval transform with PIL would: convert to the model's
// channels, Resize(resize) on the shorter side (bilinear, antialiased as PIL does), CenterCrop,
// ToTensor, Normalize. Writes [C, H, W] floats into `out` (channels*height*width floats).
cnn_status cnn_image_load(const cnn_model_info *info, const char *path, float *out);

// Like cnn_image_load but also returns the preprocessed image before normalisation as 8-bit
// [H, W, C] (for display), into `pixels` (height*width*channels bytes), if not NULL.
cnn_status cnn_image_load_ex(const cnn_model_info *info, const char *path,
                             const cnn_image_limits *limits, float *out, uint8_t *pixels);

// Loads n images in parallel (OpenMP over images) into out [n, C, H, W]; stops at the first
// failure (in path order) and reports it.
cnn_status cnn_image_load_batch(const cnn_model_info *info, const char *const *paths, int n,
                                const cnn_image_limits *limits, float *out);

// ---------------------------------------------------------------------------------------------
// Image folders.
//
// A folder with sub-folders is read as torchvision's ImageFolder: one class per sub-folder,
// class index = position of the folder name in sorted (byte) order, images found recursively
// inside it. A folder without sub-folders is a plain list of images (labels -1). Images are
// files with a known image extension (case-insensitive: jpg jpeg png bmp gif tga psd pnm ppm
// pgm hdr), sorted by their path relative to the folder.
typedef struct {
    char *root;            // the folder as given
    int n_images;
    char **paths;          // [n_images] full paths (root/relative)
    char **relative;       // [n_images] paths relative to root
    int *labels;           // [n_images] class index, or -1
    int n_classes;         // 0 for a plain folder
    char **class_names;    // [n_classes] sub-folder names
} cnn_dataset;

cnn_status cnn_dataset_open(const char *dir, cnn_dataset **out);
void cnn_dataset_free(cnn_dataset *d);

// ---------------------------------------------------------------------------------------------
// .npy files (float32, C order, little-endian).

// Reads a float32 .npy. On success *data is malloc'd (free with cnn_npy_free), dims[0..ndim).
cnn_status cnn_npy_read(const char *path, float **data, int *ndim, int64_t dims[8]);
void cnn_npy_free(float *data);
// Writes atomically (temporary name, then rename).
cnn_status cnn_npy_write(const char *path, const float *data, int ndim, const int64_t *dims);

// ---------------------------------------------------------------------------------------------
// Matrix multiply (the engine's blocked GEMM, for vis/: distances, covariances).
//
//     C[M,N] = (accumulate ? C : 0) + A[M,K] @ B[K,N]
//
// Row-major with leading dimensions lda, ldb, ldc (elements between consecutive rows). C must
// not overlap A or B. Parallel over tiles of C with OpenMP (serial when called inside a parallel
// region); bit-identical results for any number of threads.
void cnn_sgemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
               int ldc, int accumulate);

// The instruction set of the fast kernels (sgemm under conv2d, linear): "scalar", "avx2",
// "avx512" or "neon". Chosen once per process: the widest one this CPU and build support, or
// the one the environment variable CNNSCOPE_ISA=scalar|avx2|avx512|neon names.
const char *cnn_isa(void);
// CNN_OK, or CNN_ERR_ARG if CNNSCOPE_ISA names an unknown ISA or one this CPU or build lacks
// (the kernels then stay on the default that cnn_isa() names). Callers that honour the
// variable check this before running anything.
cnn_status cnn_isa_check(void);

// ---------------------------------------------------------------------------------------------
// Files

// Creates `path` atomically: `write_fn` writes everything to a temporary file beside it
// ("<path>.tmp.<pid>"), which is renamed to `path` only if write_fn returned CNN_OK and every
// byte reached the disk; otherwise it is removed and `path` is untouched.
cnn_status cnn_write_atomic(const char *path, cnn_status (*write_fn)(void *user, FILE *f),
                            void *user);

// ---------------------------------------------------------------------------------------------
// Backward: gradients with respect to activations and the input (never the weights), for
// saliency maps, DeconvNet, guided backpropagation and Grad-CAM.
//
//     cnn_session_options o = cnn_session_defaults();
//     o.keep_all = 1;                               // backward reads the forward's activations
//     cnn_session_create(model, n, &o, &s);
//     cnn_session_run(s, x, n);
//     // d logits[k] / d input: a one-hot gradient at the output node
//     cnn_backward(s, out_node, onehot /*[n,1000]*/, CNN_RELU_PLAIN, 0, dx /*[n,3,224,224]*/);

// What a ReLU passes backward. PLAIN is the true gradient; the other two are the rules of
// Zeiler & Fergus 2014 (DeconvNet: the backward signal rectified, the forward ignored) and
// Springenberg et al. 2015 (guided backpropagation: both gates).
typedef enum {
    CNN_RELU_PLAIN,       // dout where out > 0
    CNN_RELU_DECONVNET,   // max(dout, 0)
    CNN_RELU_GUIDED,      // max(dout, 0) where out > 0
} cnn_relu_rule;

// The model a session runs, and the options it was created with (CNNSCOPE_REFERENCE applied).
const cnn_model *cnn_session_model(const cnn_session *s);
const cnn_session_options *cnn_session_get_options(const cnn_session *s);

// Back-propagates from node `from` to node `to` (to < from; 0 = the input) over the session's
// last run: given grad_from = dL/d(output of from) [n, shape of from], writes
// grad_to = dL/d(output of to) [n, shape of to], n = the images of the last run. Only paths
// from `to` to `from` are followed; ReLUs use `rule`; max pools route through the switches of
// the forward (first maximum in window order, as PyTorch). The session must have kept `from`'s
// output and every activation the backward reads: ReLU outputs (not for DECONVNET), max pool
// inputs, softmax outputs; keep_all = 1 keeps them all. Convs take the session's kernel
// choice (opt.reference: the plain reference kernels). Errors (CNN_ERR_ARG): `to` is not an
// input of `from` at any depth, or an activation was not kept (named).
cnn_status cnn_backward(const cnn_session *s, int from, const float *grad_from,
                        cnn_relu_rule rule, int to, float *grad_to);

#ifdef __cplusplus
}
#endif
#endif
