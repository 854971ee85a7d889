// session.c - runs a loaded model on a batch of images.
//
// A session is planned once for a batch size (cnn_session_create) and run many times:
//   1. which nodes are needed: those the requested outputs (stop_after, keep, the network
//      output) depend on; nothing else runs.
//   2. batch norm folding: a batchnorm whose input is a conv read by nothing else is folded into
//      that conv's weights (a per-session copy), and then shares the conv's buffer.
//   3. Winograd: the weights of each 3x3 stride-1 conv that suits it (conv2d_winograd_suits)
//      are transformed once (ops/winograd.h), after folding, and packed for the GEMM. Fully
//      connected weights are copied out of the file mapping (opt.copy_linear).
//   4. fused epilogues: a relu, or a residual add (then possibly a relu), that reads a conv's
//      output (after its folded batch norm) and nothing else is applied by the conv itself as
//      it finishes each block of its output (conv2d_forward_fused); the add's other operand must
//      exist before the conv runs. The fused nodes then share the conv's buffer.
//   5. buffers: every node's output is a "buffer"; flatten and dropout alias their input (they
//      do not change data), relu / batchnorm / add write in place when their input has no other
//      reader. Each buffer lives from the node that writes it to its last reader; buffers are
//      packed into one arena so that the peak is the largest set alive at once, not their sum.
//   6. run: nodes in file order (a topological order), each with its op's kernel, each output
//      handed to the caller's tap right after it is computed.
//
// Dims legend: N batch, C/H/W input of a node, K/OH/OW its output (node->c, h, w).
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "model.h"
#include "ops.h"
#include "gemm.h"
#include "ops/winograd.h"
#include "prepared.h"

#define NO_BUFFER (-1)
#define LIVES_FOREVER 0x7fffffff

typedef struct {
    size_t floats;     // size for the full batch
    int first, last;   // node indices: written at `first`, last read at `last`
    size_t offset;     // in floats, inside the arena
} buffer_plan;

struct cnn_session {
    const cnn_model *model;
    int batch;                 // planned batch size
    int n;                     // images in the last run
    cnn_session_options opt;
    int target;                // last node that must run
    unsigned char *needed;     // [n_nodes] runs at all
    unsigned char *kept;       // [n_nodes] readable after the run
    unsigned char *computed;   // [n_nodes] computed in the last run
    int *folded_bn;            // [n_nodes] conv: the batch norm folded into it, or -1
    int *absorbed_by;          // [n_nodes] relu/add applied by this conv's epilogue, or -1
    unsigned char *hidden;     // [n_nodes] output overwritten by a later node's fused epilogue
    int *residual_of;          // [n_nodes] conv: the node its epilogue adds, or -1
    unsigned char *relu_of;    // [n_nodes] conv: its epilogue applies relu
    int *buffer_of;            // [n_nodes] buffer index, NO_BUFFER for the input node
    const float **weight;      // [n_nodes] conv/linear weights actually used (folded or not)
    const float **bias;        // [n_nodes]
    float **own_weight;        // [n_nodes] conv: its folded weights, or NULL  } in
    float **own_bias;          // [n_nodes] conv: its folded bias, or NULL     } weight_arena
    const float **winograd_u;  // [n_nodes] conv: its Winograd weights (packed), or NULL
    sgemm_packed_a *packed;    // [n_nodes] conv: its weights packed for sgemm (data NULL: none)
    const float **prepared;    // [n_nodes] conv: its prepared run (prepared.h): the folded bias,
    size_t *prepared_floats;   //   then winograd_u or packed; in weight_arena or in the file
    unsigned char *prepared_in_file;   // [n_nodes] conv: read from the model file in place
    int n_prepared_in_file;
    float *weight_arena;       // the session's prepared weights, one allocation
    size_t weight_arena_bytes;
    int n_buffers;
    buffer_plan *buffers;      // [n_buffers]
    float *arena;
    size_t arena_floats;
    float *workspace;          // conv scratch (im2col), sized to the largest need
    size_t workspace_floats;
    cnn_tensor *tensors;       // [n_nodes] views into the arena (or the caller's input)
};

cnn_session_options cnn_session_defaults(void) {
    cnn_session_options o;
    memset(&o, 0, sizeof o);
    o.stop_after = -1;
    o.fold_bn = 1;
    o.fuse_epilogues = 1;
    o.winograd = 1;
    o.copy_linear = 1;
    return o;
}

static int env_flag(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

// The prepared weights (~100 MB for ResNet-50) come straight from mmap, asking for transparent
// huge pages: one page fault per 2 MiB instead of one per 4 KiB (the faults were a good part of
// a load's time) and fewer TLB misses while the kernels stream the weights.
static void *alloc_large(size_t bytes) {
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes ? bytes : 1, MADV_HUGEPAGE);   // a hint: no error if the kernel says no
#endif
    return p;
}

static void free_large(void *p, size_t bytes) {
    if (p) munmap(p, bytes ? bytes : 1);
}

void cnn_session_free(cnn_session *s) {
    if (!s) return;
    free(s->needed);
    free(s->kept);
    free(s->computed);
    free(s->folded_bn);
    free(s->absorbed_by);
    free(s->hidden);
    free(s->residual_of);
    free(s->relu_of);
    free(s->buffer_of);
    free(s->weight);
    free(s->bias);
    free_large(s->weight_arena, s->weight_arena_bytes);
    free(s->own_weight);
    free(s->own_bias);
    free(s->winograd_u);
    free(s->packed);
    free(s->prepared);
    free(s->prepared_floats);
    free(s->prepared_in_file);
    free(s->buffers);
    free(s->arena);
    free(s->workspace);
    free(s->tensors);
    free(s);
}

// Number of readers of each node among the needed nodes, and the last of them.
static void count_readers(const cnn_model *m, const unsigned char *needed, int *readers,
                          int *last_reader) {
    for (int i = 0; i < m->n_nodes; i++) {
        readers[i] = 0;
        last_reader[i] = i;
    }
    for (int i = 0; i < m->n_nodes; i++) {
        if (!needed[i]) continue;
        for (int j = 0; j < m->nodes[i].n_inputs; j++) {
            readers[m->nodes[i].inputs[j]]++;
            last_reader[m->nodes[i].inputs[j]] = i;
        }
    }
}

static size_t node_floats(const cnn_node *n, int batch) {
    return (size_t)batch * (size_t)n->c * (size_t)n->h * (size_t)n->w;
}

// Marks the nodes needed for `target` and everything in keep; returns the last one.
static int mark_needed(cnn_session *s, const cnn_session_options *o) {
    const cnn_model *m = s->model;
    int target = o->stop_after >= 0 ? o->stop_after : m->n_nodes - 1;
    s->needed[target] = 1;
    s->kept[target] = 1;
    for (int k = 0; k < o->n_keep; k++) {
        if (o->keep[k] > target) target = o->keep[k];
        s->needed[o->keep[k]] = 1;
        s->kept[o->keep[k]] = 1;
    }
    if (o->keep_all) {
        for (int i = 0; i <= target; i++) s->needed[i] = s->kept[i] = 1;
    }
    for (int i = target; i >= 0; i--) {   // inputs come before their readers
        if (!s->needed[i]) continue;
        for (int j = 0; j < m->nodes[i].n_inputs; j++) s->needed[m->nodes[i].inputs[j]] = 1;
    }
    return target;
}

// Records each batch norm that can be folded into its conv (s->folded_bn); fills s->weight /
// s->bias for convs and linears with the stored parameters.
static void plan_folding(cnn_session *s, const int *readers, int fold) {
    const cnn_model *m = s->model;
    for (int i = 0; i < m->n_nodes; i++) s->folded_bn[i] = -1;
    for (int i = 0; i < m->n_nodes; i++) {
        const cnn_node *nd = &m->nodes[i];
        if (nd->op == CNN_OP_CONV2D || nd->op == CNN_OP_LINEAR) {
            s->weight[i] = nd->op == CNN_OP_CONV2D ? nd->p.conv.weight : nd->p.linear.weight;
            s->bias[i] = nd->op == CNN_OP_CONV2D ? nd->p.conv.bias : nd->p.linear.bias;
        }
        if (!fold || nd->op != CNN_OP_BATCHNORM || !s->needed[i]) continue;
        int c = nd->inputs[0];
        // Legal only if nobody else needs the conv's own (pre-BN) output.
        if (m->nodes[c].op == CNN_OP_CONV2D && readers[c] == 1 && !s->kept[c]) s->folded_bn[c] = i;
    }
}

// How a conv's weights reach its kernel (prepare_weights).
typedef enum {
    WEIGHTS_AS_STORED,
    WEIGHTS_WINOGRAD,
    WEIGHTS_PACKED,     // for sgemm
    WEIGHTS_PACKED_T,   // for sgemm's transposed product: output maps of at most 256 positions
} weight_form;

static weight_form conv_weight_form(const cnn_session *s, const cnn_node *nd) {
    const cnn_node *in = &s->model->nodes[nd->inputs[0]];
    if (s->opt.reference) return WEIGHTS_AS_STORED;
    if (s->opt.winograd && conv2d_winograd_suits(in->c, nd->c, nd->h, nd->w, &nd->window))
        return WEIGHTS_WINOGRAD;
    if (nd->window.groups != 1) return WEIGHTS_AS_STORED;
    return nd->h * nd->w <= SGEMM_NARROW_N_MAX ? WEIGHTS_PACKED_T : WEIGHTS_PACKED;
}

// Elements per output channel of a conv's weights.
static int conv_per_k(const cnn_session *s, const cnn_node *nd) {
    const cnn_node *in = &s->model->nodes[nd->inputs[0]];
    return in->c / nd->window.groups * nd->window.kernel[0] * nd->window.kernel[1];
}

// A conv's prepared run (prepared.h) is its folded bias, if it has one, padded to whole cache
// lines, then its weights in the kernels' form: in the arena as in a packed file.
static size_t bias_run_floats(int K) {
    return ((size_t)K + 15) / 16 * 16;
}

static size_t prepared_run_floats(weight_form form, int K, int per_k, int folded) {
    size_t weights = form == WEIGHTS_WINOGRAD ? winograd_packed_weight_floats(K, per_k / 9)
                     : form == WEIGHTS_PACKED ? sgemm_packed_a_floats(K, per_k)
                                              : sgemm_packed_at_floats(K, per_k);
    return (folded ? bias_run_floats(K) : 0) + weights;
}

// "prepared/<node>/<form>[+bn]": the tensor that holds conv i's prepared run in a packed file.
static void prepared_name(const cnn_session *s, int i, weight_form form, char *buf, size_t size) {
    static const char *const form_names[] = {
        [WEIGHTS_WINOGRAD] = "winograd", [WEIGHTS_PACKED] = "packed", [WEIGHTS_PACKED_T] = "packed_t"};
    snprintf(buf, size, "%s%s/%s%s", PREPARED_PREFIX, s->model->nodes[i].name, form_names[form],
             s->folded_bn[i] >= 0 ? "+bn" : "");
}

// Conv i's prepared run from the model file, if the file holds one for this session's layout
// (`layout_matches`) and this conv's form (*out stays NULL otherwise: the session prepares it).
// A tensor of the right name but the wrong size is an error: the file's layout is not what
// its meta says.
static cnn_status find_prepared(const cnn_session *s, int i, weight_form form, size_t floats,
                                int layout_matches, const float **out) {
    *out = NULL;
    if (!layout_matches) return CNN_OK;
    char name[PREPARED_LAYOUT_MAX + 4096];
    prepared_name(s, i, form, name, sizeof name);
    const cnn_stored_tensor *t = cnn_model_find_tensor(s->model, name);
    if (!t) return CNN_OK;
    if (t->ndim != 1 || (uint64_t)t->dims[0] != floats) {
        return cnn_fail(CNN_ERR_FORMAT, "%s: tensor '%s' has %lld floats in %d dimension(s), "
                        "expected %zu in 1 for the layout '%s' of meta key '%s'",
                        s->model->path, name, (long long)t->dims[0], t->ndim, floats,
                        s->model->prepared_layout, PREPARED_META_KEY);
    }
    *out = t->data;
    return CNN_OK;
}

// Points conv i's bias and kernel weights into its prepared run.
static void use_prepared(cnn_session *s, int i, weight_form form, const float *run,
                         size_t floats) {
    const cnn_node *nd = &s->model->nodes[i];
    int K = nd->c, per_k = conv_per_k(s, nd);
    const float *weights = run;
    if (s->folded_bn[i] >= 0) {
        s->bias[i] = run;
        weights += bias_run_floats(K);
    }
    s->prepared[i] = run;
    s->prepared_floats[i] = floats;
    if (form == WEIGHTS_WINOGRAD) s->winograd_u[i] = weights;
    if (form == WEIGHTS_PACKED) s->packed[i] = sgemm_packed_a_of(weights, K, per_k);
    if (form == WEIGHTS_PACKED_T) s->packed[i] = sgemm_packed_at_of(weights, K, per_k);
    s->weight[i] = NULL;   // the kernels read the prepared weights
}

int session_prepared_weights(const cnn_session *s, int i, char *name, size_t name_size,
                             const float **data, size_t *floats) {
    if (i < 0 || i >= s->model->n_nodes || !s->prepared[i]) return 0;
    prepared_name(s, i, conv_weight_form(s, &s->model->nodes[i]), name, name_size);
    *data = s->prepared[i];
    *floats = s->prepared_floats[i];
    return 1;
}

int cnn_session_prepared_in_file(const cnn_session *s) {
    return s->n_prepared_in_file;
}

// Rows [k0, k0+rows) of conv i's batch norm folded into its weights (into w_out, rows x per_k)
// and bias (into own_bias[i] + k0).
static void fold_rows(const cnn_session *s, int i, int k0, int rows, float *w_out) {
    const cnn_node *nd = &s->model->nodes[i], *bn = &s->model->nodes[s->folded_bn[i]];
    int per_k = conv_per_k(s, nd);
    const float *bias = nd->p.conv.bias;
    batchnorm_fold_into_conv(w_out, s->own_bias[i] + k0, nd->p.conv.weight + (size_t)k0 * per_k,
                             bias ? bias + k0 : NULL, bn->p.bn.gamma + k0, bn->p.bn.beta + k0,
                             bn->p.bn.mean + k0, bn->p.bn.var + k0, bn->p.bn.eps, rows, per_k);
}

// Fills conv i's weight buffers (allocated by prepare_weights): folds its batch norm, then
// transforms for Winograd or packs for the GEMM. Folded weights that are packed go a sliver of
// rows at a time through `*scratch` (grown as needed: *scratch_floats), so they are written
// once, into the packed copy; those that are transformed go through a whole folded copy there.
// Returns 0 if the scratch cannot be allocated.
static int fill_weights(cnn_session *s, int i, float **scratch, size_t *scratch_floats) {
    const cnn_node *nd = &s->model->nodes[i];
    const int K = nd->c, per_k = conv_per_k(s, nd), folded = s->folded_bn[i] >= 0;
    const weight_form form = conv_weight_form(s, nd);
    // the run in the arena: the folded bias (own_bias), then the weights
    float *dst = s->prepared[i] ? (float *)s->prepared[i] + (folded ? bias_run_floats(K) : 0)
                                : NULL;
    const int packed_t = form == WEIGHTS_PACKED_T;
    const int unit = packed_t ? sgemm_packed_at_panel() : sgemm_packed_a_sliver();   // rows
    size_t need = 0;
    if (folded && (form == WEIGHTS_PACKED || packed_t)) need = (size_t)unit * per_k;
    if (form == WEIGHTS_WINOGRAD)   // (the folded weights, then) the transformed ones
        need = (folded ? (size_t)K * per_k : 0) + winograd_weight_floats(K, per_k / 9);
    if (need > *scratch_floats) {
        free(*scratch);
        *scratch = malloc(need * sizeof(float));
        *scratch_floats = *scratch ? need : 0;
        if (!*scratch) return 0;
    }
    if (form == WEIGHTS_PACKED || packed_t) {
        for (int k0 = 0; k0 < K; k0 += unit) {
            int rows = K - k0 < unit ? K - k0 : unit;
            const float *w = nd->p.conv.weight + (size_t)k0 * per_k;
            if (folded) {
                fold_rows(s, i, k0, rows, *scratch);
                w = *scratch;
            }
            if (packed_t) sgemm_pack_at_rows(dst, K, per_k, k0, rows, w, per_k);
            else sgemm_pack_a_rows(dst, K, per_k, k0, rows, w, per_k);
        }
    } else if (form == WEIGHTS_WINOGRAD) {
        const float *w = nd->p.conv.weight;
        float *U = *scratch;
        if (folded) {
            fold_rows(s, i, 0, K, *scratch);
            w = *scratch;
            U = *scratch + (size_t)K * per_k;
        }
        winograd_transform_weights(U, w, K, per_k / 9);
        winograd_pack_weights(dst, U, K, per_k / 9);
    } else if (folded) {
        fold_rows(s, i, 0, K, s->own_weight[i]);
    }
    return 1;
}

// A fully connected layer's weights are streamed from memory once per run (linear.c). From the
// file's mapping (4 KiB pages of the page cache) that is several times slower than from the
// session's own memory (large pages where the kernel gives them), as on the 2-core test VM:
// VGG-16's first classifier layer (411 MB) 23-35 ms against 15 at batch 1, 80-120 against 38 at
// batch 8; ResNet-50's fc (7.8 MiB) 3.3 ms against 0.33 at batch 1, 19-29 against 1.3-1.8 at
// batch 8. So unless opt.copy_linear is 0 a session gives every linear layer a copy in its
// weight arena.
// dst = src (n floats), in rounds of 32 MiB, each shared out among the threads in pieces of
// 2 MiB and then released from the file mapping, so the process's memory grows by about one
// round, not by the copy. At the end the whole range is released once more: the page cache may
// hold the file in large pages, and one that straddles two rounds is mapped whole again by the
// second.
static void copy_weights(const cnn_model *m, float *dst, const float *src, size_t n) {
    const size_t round = (size_t)8 << 20, piece = (size_t)1 << 19;   // floats
    for (size_t r0 = 0; r0 < n; r0 += round) {
        size_t r_len = n - r0 < round ? n - r0 : round;
        long pieces = (long)((r_len + piece - 1) / piece);
        #pragma omp parallel for schedule(static)
        for (long p = 0; p < pieces; p++) {
            size_t at = r0 + (size_t)p * piece, end = r0 + r_len;
            size_t len = end - at < piece ? end - at : piece;
            memcpy(dst + at, src + at, len * sizeof(float));
        }
        cnn_model_release_pages(m, src + r0, r_len * sizeof(float));
    }
    cnn_model_release_pages(m, src, n * sizeof(float));
}

// The next `floats` of the arena (64-byte aligned), or NULL while the arena is being sized.
static float *take(float *arena, size_t *used, size_t floats) {
    float *p = arena ? arena + *used : NULL;
    *used += (floats + 15) / 16 * 16;
    return p;
}

// Gives every needed conv the weights its kernel reads (steps 2 and 3 above): its batch norm
// folded in, then, on the fast path, transformed for Winograd or packed for the GEMM
// (conv2d_forward_fused); and every linear layer its copy (opt.copy_linear). First
// every buffer is allocated (the linear layers copied as they get theirs), then the convs are
// filled, shared out among the threads (each conv's buffers are its own, so the result is the
// same).
static cnn_status prepare_weights(cnn_session *s) {
    const cnn_model *m = s->model;
    int *convs = malloc((size_t)m->n_nodes * sizeof *convs), n_convs = 0;
    if (!convs) return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory planning the weights", m->path);
    // Convs whose prepared weights the file holds (cnnscope pack) read them from there.
    char layout[PREPARED_LAYOUT_MAX];
    prepared_layout(layout);
    int layout_matches = m->prepared_layout && strcmp(m->prepared_layout, layout) == 0;
    // Two passes over the layers: the first adds up the arena, the second hands it out.
    size_t used = 0;
    for (int pass = 0; pass < 2; pass++) {
        float *arena = s->weight_arena;
        used = 0;
        for (int i = 0; i < m->n_nodes; i++) {
            const cnn_node *nd = &m->nodes[i];
            if (!s->needed[i]) continue;
            if (nd->op == CNN_OP_LINEAR) {
                size_t floats = (size_t)nd->c * m->nodes[nd->inputs[0]].c;
                if (s->opt.copy_linear && !s->opt.reference) {
                    float *copy = take(arena, &used, floats);
                    if (pass == 1) {
                        copy_weights(m, copy, nd->p.linear.weight, floats);
                        s->weight[i] = copy;
                    }
                }
                continue;
            }
            if (nd->op != CNN_OP_CONV2D) continue;
            int K = nd->c, per_k = conv_per_k(s, nd), folded = s->folded_bn[i] >= 0;
            weight_form form = conv_weight_form(s, nd);
            if (form == WEIGHTS_AS_STORED) {   // only a folded batch norm to store
                if (!folded) continue;
                float *bias = take(arena, &used, (size_t)K);
                float *weight = take(arena, &used, (size_t)K * per_k);
                if (pass == 0) continue;
                s->bias[i] = s->own_bias[i] = bias;
                s->weight[i] = s->own_weight[i] = weight;
                convs[n_convs++] = i;
                continue;
            }
            size_t floats = prepared_run_floats(form, K, per_k, folded);
            if (pass == 0) {
                const float *stored;
                cnn_status st = find_prepared(s, i, form, floats, layout_matches, &stored);
                if (st != CNN_OK) {
                    free(convs);
                    return st;
                }
                s->prepared_in_file[i] = stored != NULL;
                s->n_prepared_in_file += stored != NULL;
                if (stored) use_prepared(s, i, form, stored, floats);
            }
            if (s->prepared_in_file[i]) continue;
            float *run = take(arena, &used, floats);
            if (pass == 0) continue;
            use_prepared(s, i, form, run, floats);
            if (folded) s->own_bias[i] = run;
            convs[n_convs++] = i;
        }
        if (pass == 0 && used > 0) {
            s->weight_arena_bytes = used * sizeof(float);
            s->weight_arena = alloc_large(s->weight_arena_bytes);
            if (!s->weight_arena) {
                free(convs);
                return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory for the prepared weights "
                                "(%zu MB)", m->path, (s->weight_arena_bytes >> 20) + 1);
            }
        }
    }
    int failed = -1;   // a conv whose scratch could not be allocated
    #pragma omp parallel
    {
        float *scratch = NULL;
        size_t scratch_floats = 0;
        #pragma omp for schedule(dynamic)
        for (int c = 0; c < n_convs; c++) {
            if (!fill_weights(s, convs[c], &scratch, &scratch_floats)) {
                #pragma omp critical
                failed = convs[c];
            }
        }
        free(scratch);
    }
    free(convs);
    if (failed >= 0) {
        return cnn_fail(CNN_ERR_NOMEM, "%s: node '%s': out of memory folding its batch norm",
                        m->path, m->nodes[failed].name);
    }
    return CNN_OK;
}

// The conv whose call writes node x's output: x itself, the conv of a folded batch norm, or the
// conv that absorbed x; -1 if x is not written by a conv.
static int producing_conv(const cnn_session *s, int x) {
    const cnn_node *nd = &s->model->nodes[x];
    if (s->absorbed_by[x] >= 0) return s->absorbed_by[x];
    if (nd->op == CNN_OP_CONV2D) return x;
    if (nd->op == CNN_OP_BATCHNORM && s->folded_bn[nd->inputs[0]] >= 0) return nd->inputs[0];
    return -1;
}

// The operand of a relu or add that a conv may compute: its input, or the later of the two
// (the other one must exist before that conv runs).
static int fused_operand(const cnn_node *nd) {
    if (nd->op == CNN_OP_ADD && nd->inputs[1] > nd->inputs[0]) return nd->inputs[1];
    return nd->inputs[0];
}

// Marks the relus and residual adds that convs apply in their epilogue (step 3 above). An
// operand x qualifies when the node is its only reader and nobody asked to keep it: its own
// values are overwritten by the epilogue, so x becomes hidden.
static void fuse_epilogues(cnn_session *s, const int *readers) {
    const cnn_model *m = s->model;
    for (int i = 0; i < m->n_nodes; i++) {
        s->absorbed_by[i] = s->residual_of[i] = -1;
        s->hidden[i] = s->relu_of[i] = 0;
    }
    if (!s->opt.fuse_epilogues || s->opt.reference || s->opt.keep_all) return;
    for (int i = 1; i < m->n_nodes; i++) {
        const cnn_node *nd = &m->nodes[i];
        if (!s->needed[i] || (nd->op != CNN_OP_RELU && nd->op != CNN_OP_ADD)) continue;
        int x = fused_operand(nd), c = producing_conv(s, x);
        if (c < 0 || readers[x] != 1 || s->kept[x] || s->relu_of[c]) continue;
        if (nd->op == CNN_OP_ADD) {
            int r = nd->inputs[0] + nd->inputs[1] - x;   // the other operand
            if (r >= c || s->residual_of[c] >= 0) continue;   // x + x, or not ready in time
            s->residual_of[c] = r;
        } else {
            s->relu_of[c] = 1;
        }
        s->absorbed_by[i] = c;
        s->hidden[x] = 1;
    }
}

// Gives every needed node a buffer: its own, or its input's (aliases and in-place ops).
// `last_reader[i]` is the last node that reads node i (i itself if none).
static void assign_buffers(cnn_session *s, const int *last_reader) {
    const cnn_model *m = s->model;
    s->n_buffers = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        s->buffer_of[i] = NO_BUFFER;
        if (!s->needed[i] || i == 0) continue;
        const cnn_node *nd = &m->nodes[i];
        int in = s->absorbed_by[i] >= 0 ? fused_operand(nd) : nd->n_inputs > 0 ? nd->inputs[0] : 0;
        int b = s->buffer_of[in];
        // flatten and dropout never change data: they are views of their input; so are a batch
        // norm folded into its conv and a node a conv's epilogue computed.
        int alias = nd->op == CNN_OP_FLATTEN || nd->op == CNN_OP_DROPOUT ||
                    (nd->op == CNN_OP_BATCHNORM && s->folded_bn[in] >= 0) ||
                    s->absorbed_by[i] >= 0;
        // Elementwise ops overwrite their input's buffer when nothing reads it after them.
        int elementwise = nd->op == CNN_OP_RELU || nd->op == CNN_OP_BATCHNORM ||
                          nd->op == CNN_OP_ADD;
        int overwrite = elementwise && b != NO_BUFFER && s->buffers[b].last <= i &&
                        !s->opt.keep_all;
        if (b != NO_BUFFER && (alias || overwrite)) {
            s->buffer_of[i] = b;
        } else {   // a buffer of its own (also for a view of the caller's input: a copy)
            b = s->n_buffers++;
            s->buffers[b].floats = node_floats(nd, s->batch);
            s->buffers[b].first = i;
            s->buffers[b].last = i;
            s->buffer_of[i] = b;
        }
        // The buffer now lives until this node's last reader; kept outputs live forever.
        if (s->buffers[b].last < last_reader[i]) s->buffers[b].last = last_reader[i];
        if (s->kept[i]) s->buffers[b].last = LIVES_FOREVER;
    }
}

// Packs buffers into one arena: largest first, each at the lowest offset that does not collide
// with a buffer alive at the same time (greedy by size, as TFLite's planner does).
static cnn_status pack_buffers(buffer_plan *b, int n, size_t *arena_floats) {
    int *order = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (!order) return cnn_fail(CNN_ERR_NOMEM, "out of memory planning activations");
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 1; i < n; i++) {   // insertion sort by size, descending; stable
        int x = order[i], j = i - 1;
        while (j >= 0 && b[order[j]].floats < b[x].floats) { order[j + 1] = order[j]; j--; }
        order[j + 1] = x;
    }
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        buffer_plan *cur = &b[order[i]];
        size_t offset = 0;
        int moved = 1;
        while (moved) {   // bump past every placed, time-overlapping buffer we collide with
            moved = 0;
            for (int j = 0; j < i; j++) {
                buffer_plan *o = &b[order[j]];
                int live_together = cur->first <= o->last && o->first <= cur->last;
                int collide = offset < o->offset + o->floats && o->offset < offset + cur->floats;
                if (live_together && collide) { offset = o->offset + o->floats; moved = 1; }
            }
        }
        offset = (offset + 15) & ~(size_t)15;   // 64-byte alignment
        cur->offset = offset;
        if (offset + cur->floats > total) total = offset + cur->floats;
    }
    free(order);
    *arena_floats = total;
    return CNN_OK;
}

cnn_status cnn_session_create(const cnn_model *m, int batch, const cnn_session_options *opt,
                              cnn_session **out) {
    if (batch < 1 || batch > 1 << 20)
        return cnn_fail(CNN_ERR_ARG, "%s: batch size %d out of range (1..%d)", m->path, batch,
                        1 << 20);
    cnn_session_options o = opt ? *opt : cnn_session_defaults();
    if (o.stop_after >= m->n_nodes)
        return cnn_fail(CNN_ERR_ARG, "%s: stop_after node %d out of range (%d nodes)", m->path,
                        o.stop_after, m->n_nodes);
    for (int k = 0; k < o.n_keep; k++)
        if (o.keep[k] < 0 || o.keep[k] >= m->n_nodes)
            return cnn_fail(CNN_ERR_ARG, "%s: kept node %d out of range (%d nodes)", m->path,
                            o.keep[k], m->n_nodes);
    if (env_flag("CNNSCOPE_REFERENCE")) o.reference = 1;
    const char *winograd_env = getenv("CNNSCOPE_WINOGRAD");
    if (winograd_env && strcmp(winograd_env, "0") == 0) o.winograd = 0;

    cnn_session *s = calloc(1, sizeof *s);
    int nn = m->n_nodes;
    int *readers = malloc(sizeof(int) * 2 * (size_t)nn);   // then last_reader
    if (s) {
        s->model = m;
        s->batch = batch;
        s->opt = o;
        s->needed = calloc((size_t)nn, 1);
        s->kept = calloc((size_t)nn, 1);
        s->computed = calloc((size_t)nn, 1);
        s->folded_bn = malloc((size_t)nn * sizeof(int));
        s->absorbed_by = calloc((size_t)nn, sizeof(int));
        s->hidden = calloc((size_t)nn, 1);
        s->residual_of = calloc((size_t)nn, sizeof(int));
        s->relu_of = calloc((size_t)nn, 1);
        s->winograd_u = calloc((size_t)nn, sizeof(float *));
        s->prepared = calloc((size_t)nn, sizeof(float *));
        s->prepared_floats = calloc((size_t)nn, sizeof(size_t));
        s->prepared_in_file = calloc((size_t)nn, 1);
        s->own_weight = calloc((size_t)nn, sizeof(float *));
        s->own_bias = calloc((size_t)nn, sizeof(float *));
        s->packed = calloc((size_t)nn, sizeof(sgemm_packed_a));
        s->buffer_of = calloc((size_t)nn, sizeof(int));
        s->weight = calloc((size_t)nn, sizeof(float *));
        s->bias = calloc((size_t)nn, sizeof(float *));
        s->buffers = calloc((size_t)nn, sizeof(buffer_plan));
        s->tensors = calloc((size_t)nn, sizeof(cnn_tensor));
    }
    if (!s || !readers || !s->needed || !s->kept || !s->computed || !s->folded_bn ||
        !s->absorbed_by || !s->hidden || !s->residual_of || !s->relu_of || !s->winograd_u ||
        !s->own_weight || !s->own_bias || !s->packed || !s->prepared || !s->prepared_floats ||
        !s->prepared_in_file ||
        !s->buffer_of || !s->weight || !s->bias || !s->buffers || !s->tensors) {
        free(readers);
        cnn_session_free(s);
        return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory creating a session", m->path);
    }

    s->target = mark_needed(s, &o);
    count_readers(m, s->needed, readers, readers + nn);
    for (int i = 0; i < nn; i++)   // softmax is over channels: only for [N,F] or 1x1 maps
        if (s->needed[i] && m->nodes[i].op == CNN_OP_SOFTMAX && m->nodes[i].h * m->nodes[i].w != 1) {
            free(readers);
            cnn_session_free(s);
            return cnn_fail(CNN_ERR_ARG, "%s: node '%s': softmax over a %dx%d map is not supported",
                            m->path, m->nodes[i].name, m->nodes[i].h, m->nodes[i].w);
        }
    plan_folding(s, readers, o.fold_bn && !o.keep_all);
    cnn_status st = prepare_weights(s);
    if (st != CNN_OK) {
        free(readers);
        cnn_session_free(s);
        return st;
    }
    fuse_epilogues(s, readers);
    assign_buffers(s, readers + nn);
    free(readers);

    if (pack_buffers(s->buffers, s->n_buffers, &s->arena_floats) != CNN_OK) {
        cnn_session_free(s);
        return CNN_ERR_NOMEM;
    }
    size_t ws = 0;
    for (int i = 0; i < nn; i++) {
        const cnn_node *nd = &m->nodes[i];
        if (!s->needed[i] || nd->op != CNN_OP_CONV2D) continue;
        const cnn_node *in = &m->nodes[nd->inputs[0]];
        size_t w = s->winograd_u[i] ? winograd_workspace_floats(batch, in->c, in->h, in->w, nd->c,
                                                                 nd->h, nd->w)
                                    : conv2d_workspace_floats(in->c, in->h, in->w, nd->h, nd->w,
                                                              &nd->window);
        if (w > ws) ws = w;
    }
    s->workspace_floats = ws;
    s->arena = malloc((s->arena_floats > 0 ? s->arena_floats : 1) * sizeof(float));
    s->workspace = malloc((ws > 0 ? ws : 1) * sizeof(float));
    if (!s->arena || !s->workspace) {
        size_t bytes = (s->arena_floats + ws) * sizeof(float);
        cnn_session_free(s);
        return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory for activations (%zu MB at batch %d)",
                        m->path, bytes >> 20, batch);
    }
    *out = s;
    return CNN_OK;
}

size_t cnn_session_arena_bytes(const cnn_session *s) {
    return s->arena_floats * sizeof(float);
}

// Points tensors[i] at node i's buffer with the batch of this run.
static void bind_tensor(cnn_session *s, int i, int n) {
    const cnn_node *nd = &s->model->nodes[i];
    cnn_tensor *t = &s->tensors[i];
    t->ndim = nd->ndim;
    t->dims[0] = n;
    t->dims[1] = nd->c;
    t->dims[2] = nd->ndim == 4 ? nd->h : 1;
    t->dims[3] = nd->ndim == 4 ? nd->w : 1;
    if (i > 0) t->data = s->arena + s->buffers[s->buffer_of[i]].offset;
}

// Computes node i from its inputs (already computed), for n images.
static void run_node(cnn_session *s, int i, int n) {
    const cnn_node *nd = &s->model->nodes[i];
    const cnn_node *a = nd->n_inputs > 0 ? &s->model->nodes[nd->inputs[0]] : NULL;
    float *out = s->tensors[i].data;
    const float *x = nd->n_inputs > 0 ? s->tensors[nd->inputs[0]].data : NULL;
    size_t count = node_floats(nd, n);
    int ref = s->opt.reference;
    const float *residual = s->residual_of[i] >= 0 ? s->tensors[s->residual_of[i]].data : NULL;
    switch (nd->op) {
    case CNN_OP_INPUT:
        break;
    case CNN_OP_CONV2D:
        if (ref)
            conv2d_forward_ref(out, x, s->weight[i], s->bias[i], n, a->c, a->h, a->w, nd->c,
                               nd->h, nd->w, &nd->window);
        else if (s->winograd_u[i])
            winograd_conv2d_forward(out, x, s->winograd_u[i], 1, s->bias[i], n, a->c, a->h, a->w,
                                    nd->c, nd->h, nd->w, nd->window.padding[0],
                                    nd->window.padding[1], residual, s->relu_of[i],
                                    s->workspace);
        else
            conv2d_forward_fused(out, x, s->weight[i], s->packed[i].data ? &s->packed[i] : NULL,
                                 s->bias[i], n, a->c, a->h, a->w, nd->c, nd->h, nd->w,
                                 &nd->window, residual, s->relu_of[i], s->workspace);
        break;
    case CNN_OP_BATCHNORM:
        if (s->folded_bn[nd->inputs[0]] >= 0) break;   // already applied by the conv
        batchnorm_forward_ref(out, x, nd->p.bn.gamma, nd->p.bn.beta, nd->p.bn.mean, nd->p.bn.var,
                              nd->p.bn.eps, n, nd->c, nd->h * nd->w);
        break;
    case CNN_OP_RELU:
        if (s->absorbed_by[i] >= 0) break;   // already applied by the conv's epilogue
        relu_forward_ref(out, x, count);
        break;
    case CNN_OP_MAXPOOL:
        if (ref)
            maxpool_forward_ref(out, x, n, a->c, a->h, a->w, nd->h, nd->w, &nd->window);
        else
            maxpool_forward(out, x, n, a->c, a->h, a->w, nd->h, nd->w, &nd->window);
        break;
    case CNN_OP_AVGPOOL:
        avgpool_forward_ref(out, x, n, a->c, a->h, a->w, nd->h, nd->w, &nd->window);
        break;
    case CNN_OP_ADAPTIVE_AVGPOOL:
        if (ref)
            adaptive_avgpool_forward_ref(out, x, n, a->c, a->h, a->w, nd->h, nd->w);
        else
            adaptive_avgpool_forward(out, x, n, a->c, a->h, a->w, nd->h, nd->w);
        break;
    case CNN_OP_LINEAR:
        if (ref)
            linear_forward_ref(out, x, s->weight[i], s->bias[i], n, a->c, nd->c);
        else
            linear_forward(out, x, s->weight[i], s->bias[i], n, a->c, nd->c);
        break;
    case CNN_OP_FLATTEN:
    case CNN_OP_DROPOUT:
        if (out != x) memcpy(out, x, count * sizeof(float));   // only when viewing the input
        break;
    case CNN_OP_ADD:
        if (s->absorbed_by[i] >= 0) break;
        add_forward_ref(out, x, s->tensors[nd->inputs[1]].data, count);
        break;
    case CNN_OP_SOFTMAX:
        softmax_forward_ref(out, x, n, nd->c);
        break;
    case CNN_OP_SHORTCUT_A:
        shortcut_a_forward_ref(out, x, n, a->c, a->h, a->w, nd->p.shortcut.stride,
                               nd->p.shortcut.pad_before, nd->p.shortcut.pad_after);
        break;
    case CNN_OP_COUNT:
        break;
    }
}

cnn_status cnn_session_run(cnn_session *s, const float *input, int n) {
    const cnn_model *m = s->model;
    if (!input) return cnn_fail(CNN_ERR_ARG, "%s: run: no input", m->path);
    if (n <= 0) n = s->batch;
    if (n > s->batch)
        return cnn_fail(CNN_ERR_ARG, "%s: run: %d images but the session was planned for %d",
                        m->path, n, s->batch);
#ifdef _OPENMP
    if (s->opt.threads > 0) omp_set_num_threads(s->opt.threads);
#endif
    s->n = n;
    memset(s->computed, 0, (size_t)m->n_nodes);
    s->tensors[0].data = (float *)input;   // never written: no node runs in place on node 0
    bind_tensor(s, 0, n);
    s->computed[0] = 1;
    for (int i = 1; i <= s->target; i++) {
        if (!s->needed[i]) continue;
        bind_tensor(s, i, n);
        run_node(s, i, n);
        s->computed[i] = 1;
        // A folded conv's output is its batch norm's, reported there; a hidden node's was
        // overwritten by a fused epilogue, reported with the node that applied it.
        if (s->folded_bn[i] >= 0 || s->hidden[i]) continue;
        if (s->opt.tap && s->opt.tap(s->opt.tap_user, i, m->nodes[i].name, &s->tensors[i]))
            break;
    }
    return CNN_OK;
}

const cnn_tensor *cnn_session_output(const cnn_session *s, int node) {
    const cnn_model *m = s->model;
    if (node < 0 || node >= m->n_nodes) {
        cnn_fail(CNN_ERR_ARG, "%s: node %d out of range (%d nodes)", m->path, node, m->n_nodes);
        return NULL;
    }
    if (!s->kept[node] || !s->computed[node] || s->folded_bn[node] >= 0 || s->hidden[node]) {
        cnn_fail(CNN_ERR_ARG, "%s: the output of '%s' was not %s in the last run", m->path,
                 m->nodes[node].name, s->computed[node] ? "kept" : "computed");
        return NULL;
    }
    return &s->tensors[node];
}

const cnn_model *cnn_session_model(const cnn_session *s) {
    return s->model;
}

const cnn_session_options *cnn_session_get_options(const cnn_session *s) {
    return &s->opt;
}
