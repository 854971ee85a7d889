// test_model_file.c - the model loader (engine/model_file.c) and its helpers (crc32,
// window_out_size, the thread-local error message).
//
// Valid models must load with the exact graph, shapes, parameter counts and MACs worked out by
// hand below; every damaged file must fail with the right status and a message that names the
// file and the field; nothing may crash or read outside the file (run it under ASan with
// `make SANITIZE=1`).
//
//     build/tests/test_model_file FIXTURE_DIR   FIXTURE_DIR from tests/make_model_fixtures.py
//                                                (tests/test_model_file.sh does both)
//     build/tests/test_model_file               makes $FIXTURES/model_file (default
//                                                build/fixtures/model_file) first: run it from
//                                                the repository root; needs any python3
#include <errno.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cnnscope.h"
#include "crc32.h"
#include "kernels/kernels.h"
#include "model.h"
#include "ops.h"

static int failures = 0;
static int checks = 0;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        checks++;                                                     \
        if (!(cond)) {                                                \
            failures++;                                               \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);      \
            fprintf(stderr, __VA_ARGS__);                             \
            fputc('\n', stderr);                                      \
        }                                                             \
    } while (0)

static const char *fixture_dir;

static void fixture_path(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "%s/%s", fixture_dir, name);
}

static unsigned char *read_whole(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static int write_whole(const char *path, const unsigned char *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int k = 0; k < 4; k++) p[k] = (unsigned char)(v >> (8 * k));
}

static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--) v = v << 8 | p[k];
    return v;
}

static void fix_crc(unsigned char *file, size_t size) {
    put_u32(file + 12, crc32_ieee(0, file + 16, size - 16));
}

static const char *status_name(cnn_status s) {
    switch (s) {
    case CNN_OK: return "OK";
    case CNN_ERR_IO: return "IO";
    case CNN_ERR_FORMAT: return "FORMAT";
    case CNN_ERR_ARG: return "ARG";
    case CNN_ERR_NOMEM: return "NOMEM";
    case CNN_ERR_LIMIT: return "LIMIT";
    }
    return "?";
}

// ---------------------------------------------------------------------------------------------
// crc32

// One bit at a time, straight from the definition: the reference for the sliced version.
static uint32_t crc32_bitwise(const unsigned char *p, size_t n) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

// crc32_ieee_visit's visitor for the test: adds up the bytes it sees (from several threads),
// notes a block that does not start at a multiple of 64, and returns 1 for the block holding
// byte `marked`.
typedef struct {
    size_t bytes, marked;
    int misaligned;
} visit_log;

static unsigned log_block(void *ctx, size_t offset, const unsigned char *block, size_t len) {
    visit_log *log = ctx;
    (void)block;
    #pragma omp atomic
    log->bytes += len;
    if (offset % 64 != 0) {
        #pragma omp atomic write
        log->misaligned = 1;
    }
    return offset <= log->marked && log->marked < offset + len;
}

static void test_crc32(void) {
    CHECK(crc32_ieee(0, "123456789", 9) == 0xCBF43926u, "crc32('123456789') = 0x%08x",
          crc32_ieee(0, "123456789", 9));
    CHECK(crc32_ieee(0, "", 0) == 0, "crc32('') != 0");
    CHECK(crc32_ieee(0, "a", 1) == 0xE8B7BE43u, "crc32('a') = 0x%08x", crc32_ieee(0, "a", 1));
    static unsigned char buf[5000];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof buf; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (unsigned char)(x >> 16);
    }
    // Every start alignment and tail length against the bitwise reference, whole and split;
    // lengths past 64 run the carry-less-multiply path where the CPU has it (1 to 300 blocks of
    // 16 bytes, 4-chunk folding included), the tables-only path must agree everywhere.
    for (size_t start = 0; start < 8; start++) {
        for (size_t n = 0; n + start <= 4900; n += n < 300 ? 1 : 97) {
            uint32_t want = crc32_bitwise(buf + start, n);
            uint32_t got = crc32_ieee(0, buf + start, n);
            CHECK(got == want, "crc32(start %zu, n %zu) = 0x%08x, expected 0x%08x", start, n, got,
                  want);
            size_t half = n / 3;
            uint32_t split = crc32_ieee(crc32_ieee(0, buf + start, half), buf + start + half,
                                        n - half);
            CHECK(split == want, "crc32 in two pieces (start %zu, n %zu, split %zu) = 0x%08x, "
                                 "expected 0x%08x", start, n, half, split, want);
            uint32_t tables = crc32_ieee_tables(0, buf + start, n);
            CHECK(tables == want, "crc32_ieee_tables(start %zu, n %zu) = 0x%08x, expected 0x%08x",
                  start, n, tables, want);
            uint32_t joined = crc32_ieee_combine(crc32_ieee(0, buf + start, half),
                                                 crc32_ieee(0, buf + start + half, n - half),
                                                 n - half);
            CHECK(joined == want, "crc32_ieee_combine (start %zu, n %zu, split %zu) = 0x%08x, "
                                  "expected 0x%08x", start, n, half, joined, want);
        }
    }
    // A buffer large enough to be cut into one piece per thread (3 pieces: an uneven split of
    // an odd length) against the single-threaded tables, from zero and from a running CRC.
    size_t big_n = (9u << 20) + 7;
    unsigned char *big = malloc(big_n);
    CHECK(big != NULL, "out of memory");
    if (!big) return;
    for (size_t i = 0; i < big_n; i++) {
        x = x * 1103515245u + 12345u;
        big[i] = (unsigned char)(x >> 16);
    }
#ifdef _OPENMP
    int threads = omp_get_max_threads();
    omp_set_num_threads(3);
#endif
    uint32_t want = crc32_ieee_tables(0, big, big_n), got = crc32_ieee(0, big, big_n);
    CHECK(got == want, "crc32 of %zu bytes in pieces = 0x%08x, expected 0x%08x", big_n, got, want);
    want = crc32_ieee_tables(0x12345678u, big, big_n);
    got = crc32_ieee(0x12345678u, big, big_n);
    CHECK(got == want, "crc32 of %zu bytes in pieces after a prefix = 0x%08x, expected 0x%08x",
          big_n, got, want);
    // The visiting CRC: the same value, blocks that cover the buffer once, each at a multiple
    // of 64, and the OR of what the visits return (here: the block holding byte `marked`).
    visit_log log = {0, big_n / 2 + 5, 0};
    unsigned visited = 0;
    got = crc32_ieee_visit(0x12345678u, big, big_n, log_block, &log, &visited);
    CHECK(got == want, "crc32_ieee_visit of %zu bytes = 0x%08x, expected 0x%08x", big_n, got, want);
    CHECK(log.bytes == big_n, "the visits covered %zu bytes, expected %zu", log.bytes, big_n);
    CHECK(!log.misaligned, "a visited block started at an offset that is not a multiple of 64");
    CHECK(visited == 1, "crc32_ieee_visit's OR of the visits is %u, expected 1", visited);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    free(big);
#if defined(__x86_64__)
    // Each carry-less-multiply kernel on its own, where the CPU has it (crc32_ieee picks one
    // per CPU, so the other is not reached above): whole 16-byte blocks, from the register ~0.
    for (int wide = 0; wide < 2; wide++) {
        if (!__builtin_cpu_supports("pclmul")) break;
        if (wide && !(__builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("avx2")))
            break;
        for (size_t n = wide ? 128 : 64; n <= 4096; n += 16) {
            uint32_t want_n = crc32_bitwise(buf + 3, n);
            uint32_t got_n = ~(wide ? cnn_crc32_blocks__vpclmul(~0u, buf + 3, n)
                                    : cnn_crc32_blocks__pclmul(~0u, buf + 3, n));
            CHECK(got_n == want_n, "cnn_crc32_blocks__%s(n %zu) = 0x%08x, expected 0x%08x",
                  wide ? "vpclmul" : "pclmul", n, got_n, want_n);
        }
    }
#endif
}

// ---------------------------------------------------------------------------------------------
// window_out_size: values PyTorch gives for the same layers.

static void test_window_out_size(void) {
    struct {
        int in, kernel, stride, pad, dilation, ceil_mode, want;
    } cases[] = {
        {224, 11, 4, 2, 1, 0, 55},   // AlexNet features.0
        {55, 3, 2, 0, 1, 0, 27},     // AlexNet features.2
        {112, 3, 2, 1, 1, 0, 56},    // ResNet maxpool
        {224, 7, 2, 3, 1, 0, 112},   // ResNet conv1
        {14, 3, 2, 0, 1, 0, 6},      // floor ...
        {14, 3, 2, 0, 1, 1, 7},      // ... and ceil: one more window
        {6, 3, 2, 1, 1, 1, 4},
        {6, 3, 2, 1, 1, 0, 3},
        {2, 2, 3, 1, 1, 1, 1},       // ceil's extra window would start in the right padding
        {5, 2, 2, 1, 1, 1, 3},       // same: 4 -> 3
        {10, 3, 1, 0, 2, 0, 6},      // dilation 2: span 5
        {7, 1, 2, 0, 1, 0, 4},
        {2, 5, 1, 0, 1, 0, 0},       // no window fits
        {2, 5, 1, 1, 1, 0, 0},
        {2, 5, 1, 2, 1, 0, 2},
        {1 << 20, 1 << 20, 1, 1 << 20, 1 << 20, 0, 0},   // d*(k-1) needs 64 bits
        {1 << 20, 3, 1, 1 << 20, 1, 0, 3 * (1 << 20) - 2},
        {0, 1, 1, 0, 1, 0, 0},       // bad arguments give 0
        {4, 1, 0, 0, 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = window_out_size(cases[i].in, cases[i].kernel, cases[i].stride, cases[i].pad,
                                  cases[i].dilation, cases[i].ceil_mode);
        CHECK(got == cases[i].want,
              "window_out_size(in %d, kernel %d, stride %d, pad %d, dilation %d, ceil %d) = %d, "
              "expected %d",
              cases[i].in, cases[i].kernel, cases[i].stride, cases[i].pad, cases[i].dilation,
              cases[i].ceil_mode, got, cases[i].want);
    }
}

// ---------------------------------------------------------------------------------------------
// status: thread-local, and safe to call with its own message as an argument.

static void *fail_in_thread(void *arg) {
    (void)arg;
    cnn_fail(CNN_ERR_IO, "thread message");
    return strcmp(cnn_last_error(), "thread message") == 0 ? (void *)1 : NULL;
}

static void test_status(void) {
    CHECK(cnn_fail(CNN_ERR_ARG, "inner %d", 7) == CNN_ERR_ARG, "cnn_fail returns its status");
    CHECK(strcmp(cnn_last_error(), "inner 7") == 0, "message '%s'", cnn_last_error());
    cnn_fail(CNN_ERR_ARG, "outer: %s", cnn_last_error());
    CHECK(strcmp(cnn_last_error(), "outer: inner 7") == 0, "message '%s'", cnn_last_error());
    pthread_t t;
    void *ok = NULL;
    CHECK(pthread_create(&t, NULL, fail_in_thread, NULL) == 0, "pthread_create");
    pthread_join(t, &ok);
    CHECK(ok != NULL, "the other thread did not see its own message");
    CHECK(strcmp(cnn_last_error(), "outer: inner 7") == 0, "another thread changed this "
          "thread's message: '%s'", cnn_last_error());
    char long_name[5000];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    cnn_fail(CNN_ERR_ARG, "%s", long_name);   // cut, not overflowed
    CHECK(strlen(cnn_last_error()) > 1000 && strlen(cnn_last_error()) < 5000,
          "a long message should be cut to the buffer, got %zu chars", strlen(cnn_last_error()));
}

// ---------------------------------------------------------------------------------------------
// Valid models

typedef struct {
    const char *name;
    cnn_op op;
    int in0, in1;            // input node indices (-1: none)
    int ndim, c, h, w;
    int64_t params, macs;
} expected_node;

static cnn_model *load_good(const char *name) {
    char path[1024];
    fixture_path(path, sizeof path, name);
    cnn_model *m = NULL;
    cnn_status s = cnn_model_load(path, &m);
    CHECK(s == CNN_OK && m, "loading %s: %s: %s", path, status_name(s), cnn_last_error());
    return s == CNN_OK ? m : NULL;
}

static void check_nodes(const cnn_model *m, const char *file, const expected_node *want, int n) {
    CHECK(cnn_model_node_count(m) == n, "%s: %d nodes, expected %d", file,
          cnn_model_node_count(m), n);
    CHECK(cnn_model_output_node(m) == n - 1, "%s: output node %d, expected %d", file,
          cnn_model_output_node(m), n - 1);
    if (cnn_model_node_count(m) != n) return;
    for (int i = 0; i < n; i++) {
        cnn_node_info info;
        cnn_model_node(m, i, &info);
        const expected_node *e = &want[i];
        int n_inputs = (e->in0 >= 0) + (e->in1 >= 0);
        CHECK(strcmp(info.name, e->name) == 0 && info.op == e->op,
              "%s node %d: '%s' (%s), expected '%s' (%s)", file, i, info.name,
              cnn_op_name(info.op), e->name, cnn_op_name(e->op));
        CHECK(info.n_inputs == n_inputs && (n_inputs < 1 || info.inputs[0] == e->in0) &&
                  (n_inputs < 2 || info.inputs[1] == e->in1),
              "%s node %d '%s': inputs (%d: %d, %d), expected (%d: %d, %d)", file, i, e->name,
              info.n_inputs, info.inputs[0], info.inputs[1], n_inputs, e->in0, e->in1);
        CHECK(info.ndim == e->ndim && info.c == e->c && info.h == e->h && info.w == e->w,
              "%s node %d '%s': output ndim %d [%d,%d,%d], expected ndim %d [%d,%d,%d]", file, i,
              e->name, info.ndim, info.c, info.h, info.w, e->ndim, e->c, e->h, e->w);
        CHECK(info.params == e->params && info.macs == e->macs,
              "%s node %d '%s': params %lld macs %lld, expected params %lld macs %lld", file, i,
              e->name, (long long)info.params, (long long)info.macs, (long long)e->params,
              (long long)e->macs);
        CHECK(cnn_model_find_node(m, e->name) == i, "%s: find_node('%s') = %d, expected %d",
              file, e->name, cnn_model_find_node(m, e->name), i);
    }
}

static void check_window(const cnn_model *m, int node, int kernel, int stride, int pad,
                         int dilation, int groups, int ceil_mode, int count_include_pad) {
    cnn_node_info info;
    cnn_model_node(m, node, &info);
    const cnn_window *w = &info.window;
    for (int k = 0; k < 2; k++) {
        CHECK(w->kernel[k] == kernel && w->stride[k] == stride && w->padding[k] == pad &&
                  w->dilation[k] == dilation,
              "node %d '%s' axis %d: kernel %d stride %d padding %d dilation %d, expected %d %d "
              "%d %d",
              node, info.name, k, w->kernel[k], w->stride[k], w->padding[k], w->dilation[k],
              kernel, stride, pad, dilation);
    }
    CHECK(w->groups == groups && w->ceil_mode == ceil_mode &&
              w->count_include_pad == count_include_pad,
          "node %d '%s': groups %d ceil_mode %d count_include_pad %d, expected %d %d %d", node,
          info.name, w->groups, w->ceil_mode, w->count_include_pad, groups, ceil_mode,
          count_include_pad);
}

// Checks a stored tensor's shape, that its data lies in place in the mapping (64-aligned) and
// that its values are in the range the generator drew them from.
static const float *check_tensor(const cnn_model *m, const char *name, int ndim,
                                 const int64_t *dims, float lo, float hi) {
    cnn_tensor t;
    cnn_status s = cnn_model_tensor(m, name, &t);
    CHECK(s == CNN_OK, "cnn_model_tensor('%s'): %s", name, cnn_last_error());
    if (s != CNN_OK) return NULL;
    CHECK(t.ndim == ndim, "tensor '%s': ndim %d, expected %d", name, t.ndim, ndim);
    for (int k = 0; k < 4; k++) {
        int64_t want = k < ndim ? dims[k] : 1;
        CHECK(t.dims[k] == want, "tensor '%s': dims[%d] = %lld, expected %lld", name, k,
              (long long)t.dims[k], (long long)want);
    }
    const char *base = m->map;
    CHECK((const char *)t.data >= base + 128 &&
              (const char *)(t.data + cnn_tensor_numel(&t)) <= base + m->map_size &&
              ((uintptr_t)t.data % 64) == 0,
          "tensor '%s' is not 64-aligned inside the mapping", name);
    int64_t distinct = 0;
    for (int64_t i = 0; i < cnn_tensor_numel(&t); i++) {
        CHECK(t.data[i] >= lo && t.data[i] <= hi, "tensor '%s'[%lld] = %g, expected %g..%g",
              name, (long long)i, t.data[i], lo, hi);
        distinct += i > 0 && t.data[i] != t.data[i - 1];
    }
    CHECK(cnn_tensor_numel(&t) < 3 || distinct > 0, "tensor '%s' is constant", name);
    return t.data;
}

static void test_tiny(void) {
    cnn_model *m = load_good("good/tiny.cnn");
    if (!m) return;
    const cnn_model_info *info = cnn_model_get_info(m);
    CHECK(strcmp(info->name, "test") == 0 && strcmp(info->arch, "test") == 0,
          "name '%s' arch '%s'", info->name, info->arch);
    CHECK(strstr(info->path, "good/tiny.cnn") != NULL, "path '%s'", info->path);
    CHECK(info->channels == 1 && info->height == 8 && info->width == 8 && info->resize == 0,
          "input %d x %d x %d resize %d, expected 1 x 8 x 8 resize 0", info->channels,
          info->height, info->width, info->resize);
    CHECK(info->mean[0] == 0.5f && info->std[0] == 0.25f, "mean %g std %g", info->mean[0],
          info->std[0]);
    CHECK(info->num_classes == 3 && strcmp(info->class_names[0], "class0") == 0 &&
              strcmp(info->class_names[2], "class2") == 0,
          "classes: %d", info->num_classes);
    const expected_node want[] = {
        {"input", CNN_OP_INPUT, -1, -1, 4, 1, 8, 8, 0, 0},
        {"features.0", CNN_OP_CONV2D, 0, -1, 4, 4, 8, 8, 4 * 9 + 4, 4 * 9 * 64},
        {"features.1", CNN_OP_BATCHNORM, 1, -1, 4, 4, 8, 8, 8, 0},
        {"features.2", CNN_OP_RELU, 2, -1, 4, 4, 8, 8, 0, 0},
        {"features.3", CNN_OP_MAXPOOL, 3, -1, 4, 4, 4, 4, 0, 0},
        {"flatten", CNN_OP_FLATTEN, 4, -1, 2, 64, 1, 1, 0, 0},
        {"classifier", CNN_OP_LINEAR, 5, -1, 2, 3, 1, 1, 3 * 64 + 3, 3 * 64},
    };
    check_nodes(m, "tiny", want, 7);
    check_window(m, 1, 3, 1, 1, 1, 1, 0, 0);
    check_window(m, 4, 2, 2, 0, 1, 1, 0, 0);

    // The typed params point at the stored tensors, in place.
    const int64_t conv_w[] = {4, 1, 3, 3}, four[] = {4}, fc_w[] = {3, 64}, three[] = {3};
    const cnn_node *nodes = m->nodes;
    CHECK(nodes[1].p.conv.weight == check_tensor(m, "features.0.weight", 4, conv_w, -1, 1),
          "conv weight pointer");
    CHECK(nodes[1].p.conv.bias == check_tensor(m, "features.0.bias", 1, four, -1, 1),
          "conv bias pointer");
    CHECK(nodes[2].p.bn.gamma == check_tensor(m, "features.1.weight", 1, four, 0.5f, 1.5f),
          "bn gamma pointer");
    CHECK(nodes[2].p.bn.beta == check_tensor(m, "features.1.bias", 1, four, -1, 1),
          "bn beta pointer");
    CHECK(nodes[2].p.bn.mean == check_tensor(m, "features.1.running_mean", 1, four, -1, 1),
          "bn mean pointer");
    CHECK(nodes[2].p.bn.var == check_tensor(m, "features.1.running_var", 1, four, 0.5f, 1.5f),
          "bn var pointer");
    CHECK(nodes[2].p.bn.eps == 1e-5f, "bn eps %g", nodes[2].p.bn.eps);
    CHECK(nodes[6].p.linear.weight == check_tensor(m, "classifier.weight", 2, fc_w, -1, 1),
          "linear weight pointer");
    CHECK(nodes[6].p.linear.bias == check_tensor(m, "classifier.bias", 1, three, -1, 1),
          "linear bias pointer");
    CHECK(m->n_tensors == 8, "%d tensors, expected 8", m->n_tensors);

    cnn_tensor t;
    CHECK(cnn_model_tensor(m, "classifier.wieght", &t) == CNN_ERR_ARG, "unknown tensor");
    CHECK(strstr(cnn_last_error(), "no tensor 'classifier.wieght'") &&
              strstr(cnn_last_error(), "closest: classifier.weight"),
          "message: %s", cnn_last_error());
    CHECK(cnn_model_find_node(m, "nope") == -1, "find_node('nope')");
    CHECK(strstr(cnn_last_error(), "no layer 'nope' in ") &&
              strstr(cnn_last_error(), "good/tiny.cnn; closest: "),
          "message: %s", cnn_last_error());

    // A second load of the same file is independent of the first.
    cnn_model *again = load_good("good/tiny.cnn");
    if (again) {
        CHECK(again->map != m->map && cnn_model_node_count(again) == 7, "second load");
        cnn_model_free(again);
    }
    cnn_model_free(m);
}

static void test_residual(void) {
    cnn_model *m = load_good("good/residual.cnn");
    if (!m) return;
    const cnn_model_info *info = cnn_model_get_info(m);
    CHECK(info->channels == 3 && info->height == 12 && info->width == 12 && info->resize == 14,
          "input %d x %d x %d resize %d", info->channels, info->height, info->width,
          info->resize);
    CHECK(info->mean[1] == 0.456f && info->std[2] == 0.225f && info->num_classes == 5,
          "mean[1] %g std[2] %g classes %d", info->mean[1], info->std[2], info->num_classes);
    const expected_node want[] = {
        {"input", CNN_OP_INPUT, -1, -1, 4, 3, 12, 12, 0, 0},
        {"conv1", CNN_OP_CONV2D, 0, -1, 4, 8, 6, 6, 8 * 3 * 9, 8 * 3 * 9 * 36},
        {"bn1", CNN_OP_BATCHNORM, 1, -1, 4, 8, 6, 6, 16, 0},
        {"relu", CNN_OP_RELU, 2, -1, 4, 8, 6, 6, 0, 0},
        {"maxpool", CNN_OP_MAXPOOL, 3, -1, 4, 8, 4, 4, 0, 0},                // ceil: 4, not 3
        {"layer1.0.conv1", CNN_OP_CONV2D, 4, -1, 4, 8, 4, 4, 576, 576 * 16},
        {"layer1.0.bn1", CNN_OP_BATCHNORM, 5, -1, 4, 8, 4, 4, 16, 0},
        {"layer1.0.relu", CNN_OP_RELU, 6, -1, 4, 8, 4, 4, 0, 0},
        {"layer1.0.conv2", CNN_OP_CONV2D, 7, -1, 4, 8, 4, 4, 8 * 4 * 9 + 8, 8 * 4 * 9 * 16},
        {"layer1.0.bn2", CNN_OP_BATCHNORM, 8, -1, 4, 8, 4, 4, 16, 0},
        {"layer1.0.add", CNN_OP_ADD, 9, 4, 4, 8, 4, 4, 0, 0},
        {"layer1.0", CNN_OP_RELU, 10, -1, 4, 8, 4, 4, 0, 0},
        {"extra.pool", CNN_OP_AVGPOOL, 11, -1, 4, 8, 3, 3, 0, 0},           // ceil: 3, not 2
        {"avgpool", CNN_OP_ADAPTIVE_AVGPOOL, 12, -1, 4, 8, 1, 1, 0, 0},
        {"flatten", CNN_OP_FLATTEN, 13, -1, 2, 8, 1, 1, 0, 0},
        {"dropout", CNN_OP_DROPOUT, 14, -1, 2, 8, 1, 1, 0, 0},
        {"fc", CNN_OP_LINEAR, 15, -1, 2, 5, 1, 1, 45, 40},
        {"prob", CNN_OP_SOFTMAX, 16, -1, 2, 5, 1, 1, 0, 0},
    };
    check_nodes(m, "residual", want, 18);
    check_window(m, 1, 3, 2, 1, 1, 1, 0, 0);
    check_window(m, 4, 3, 2, 1, 1, 1, 1, 0);
    check_window(m, 8, 3, 1, 1, 1, 2, 0, 0);
    check_window(m, 12, 3, 2, 1, 1, 1, 1, 1);
    CHECK(m->nodes[1].p.conv.bias == NULL, "conv1 has no bias");
    CHECK(m->nodes[8].p.conv.bias != NULL, "layer1.0.conv2 has a bias");
    CHECK(m->nodes[13].p.adaptive.out_h == 1 && m->nodes[13].p.adaptive.out_w == 1,
          "adaptive output");
    cnn_model_free(m);
}

static void test_shortcut(void) {
    cnn_model *m = load_good("good/shortcut.cnn");
    if (!m) return;
    const expected_node want[] = {
        {"input", CNN_OP_INPUT, -1, -1, 4, 3, 7, 7, 0, 0},
        {"conv1", CNN_OP_CONV2D, 0, -1, 4, 16, 7, 7, 16 * 3 * 9, 16 * 3 * 9 * 49},
        {"bn1", CNN_OP_BATCHNORM, 1, -1, 4, 16, 7, 7, 32, 0},
        {"relu", CNN_OP_RELU, 2, -1, 4, 16, 7, 7, 0, 0},
        {"layer2.0.conv1", CNN_OP_CONV2D, 3, -1, 4, 32, 4, 4, 32 * 16 * 9, 32 * 16 * 9 * 16},
        {"layer2.0.bn1", CNN_OP_BATCHNORM, 4, -1, 4, 32, 4, 4, 64, 0},
        {"layer2.0.relu", CNN_OP_RELU, 5, -1, 4, 32, 4, 4, 0, 0},
        {"layer2.0.conv2", CNN_OP_CONV2D, 6, -1, 4, 32, 4, 4, 32 * 32 * 9, 32 * 32 * 9 * 16},
        {"layer2.0.bn2", CNN_OP_BATCHNORM, 7, -1, 4, 32, 4, 4, 64, 0},
        {"layer2.0.shortcut", CNN_OP_SHORTCUT_A, 3, -1, 4, 32, 4, 4, 0, 0},  // ceil(7 / 2) = 4
        {"layer2.0.add", CNN_OP_ADD, 8, 9, 4, 32, 4, 4, 0, 0},
        {"layer2.0", CNN_OP_RELU, 10, -1, 4, 32, 4, 4, 0, 0},
        {"avgpool", CNN_OP_ADAPTIVE_AVGPOOL, 11, -1, 4, 32, 1, 1, 0, 0},
        {"flatten", CNN_OP_FLATTEN, 12, -1, 2, 32, 1, 1, 0, 0},
        {"linear", CNN_OP_LINEAR, 13, -1, 2, 10, 1, 1, 330, 320},
    };
    check_nodes(m, "shortcut", want, 15);
    const cnn_shortcut_params *s = &m->nodes[9].p.shortcut;
    CHECK(s->stride == 2 && s->pad_before == 8 && s->pad_after == 8,
          "shortcut stride %d pads %d %d", s->stride, s->pad_before, s->pad_after);
    cnn_model_free(m);
}

static void test_find_node(void) {
    cnn_model *m = load_good("good/names.cnn");
    if (!m) return;
    CHECK(cnn_model_find_node(m, "features.20") == 21, "features.20");
    CHECK(cnn_model_find_node(m, "classifier.0") == 23, "classifier.0");
    CHECK(cnn_model_find_node(m, "featurs.16") == -1, "featurs.16 found");
    char want[1200];
    snprintf(want, sizeof want, "no layer 'featurs.16' in %s/good/names.cnn; closest: "
             "features.16, features.15, features.17", fixture_dir);
    CHECK(strcmp(cnn_last_error(), want) == 0, "message '%s', expected '%s'", cnn_last_error(),
          want);
    CHECK(cnn_model_find_node(m, "clasifier.0") == -1, "clasifier.0 found");
    CHECK(strstr(cnn_last_error(), "closest: classifier.0, ") != NULL, "message '%s'",
          cnn_last_error());
    CHECK(cnn_model_find_node(m, "") == -1 && cnn_model_find_node(m, NULL) == -1, "empty name");
    cnn_model_free(m);

    m = load_good("good/no_tensors.cnn");
    if (!m) return;
    CHECK(m->n_tensors == 0 && cnn_model_node_count(m) == 2, "no_tensors: %d tensors %d nodes",
          m->n_tensors, cnn_model_node_count(m));
    cnn_tensor t;
    CHECK(cnn_model_tensor(m, "x", &t) == CNN_ERR_ARG, "tensor in a model without tensors");
    cnn_model_free(m);

    for (int op = 0; op < CNN_OP_COUNT; op++) {
        CHECK(cnn_op_name((cnn_op)op) != NULL, "op %d has no name", op);
    }
    CHECK(strcmp(cnn_op_name(CNN_OP_SHORTCUT_A), "shortcut_a") == 0 &&
              strcmp(cnn_op_name(CNN_OP_ADAPTIVE_AVGPOOL), "adaptive_avgpool") == 0,
          "op names");
    CHECK(cnn_op_name(CNN_OP_COUNT) == NULL && cnn_op_name((cnn_op)-1) == NULL,
          "out-of-range op names");
}

// ---------------------------------------------------------------------------------------------
// Damaged files

// Loads `path` expecting `want`; every '|'-separated word of `words` must be in the message.
static void expect_failure(const char *path, cnn_status want, const char *words) {
    cnn_model *sentinel = (cnn_model *)&failures;   // must stay untouched
    cnn_model *m = sentinel;
    cnn_status s = cnn_model_load(path, &m);
    const char *msg = cnn_last_error();
    if (getenv("VERBOSE")) printf("%-6s %s\n", status_name(s), msg);
    CHECK(s == want, "%s: status %s, expected %s (message: %s)", path, status_name(s),
          status_name(want), msg);
    CHECK(m == sentinel, "%s: *out was changed by a failed load", path);
    if (s == CNN_OK && m != sentinel) cnn_model_free(m);
    CHECK(strstr(msg, path) != NULL, "%s: the message does not name the file: %s", path, msg);
    CHECK(strchr(msg, '\n') == NULL, "%s: the message is not one line: %s", path, msg);
    char copy[2048];
    snprintf(copy, sizeof copy, "%s", words);
    for (char *word = strtok(copy, "|"); word; word = strtok(NULL, "|")) {
        CHECK(strstr(msg, word) != NULL, "%s: message lacks '%s': %s", path, word, msg);
    }
}

static void test_bad_cases(void) {
    char manifest[1024];
    fixture_path(manifest, sizeof manifest, "bad/cases.tsv");
    FILE *f = fopen(manifest, "r");
    CHECK(f != NULL, "cannot open %s", manifest);
    if (!f) return;
    char line[4096];
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *file = strtok(line, "\t"), *status = strtok(NULL, "\t"), *words = strtok(NULL, "\t");
        if (!file || !status || !words) continue;
        cnn_status want = strcmp(status, "IO") == 0      ? CNN_ERR_IO
                          : strcmp(status, "LIMIT") == 0 ? CNN_ERR_LIMIT
                                                         : CNN_ERR_FORMAT;
        char path[1024], name[600];
        snprintf(name, sizeof name, "bad/%s", file);
        fixture_path(path, sizeof path, name);
        expect_failure(path, want, words);
        cases++;
    }
    fclose(f);
    CHECK(cases >= 100, "only %d cases in %s", cases, manifest);
}

static void test_io_and_limits(void) {
    char path[1024];
    fixture_path(path, sizeof path, "no/such/model.cnn");
    expect_failure(path, CNN_ERR_IO, "cannot open|No such file");
    fixture_path(path, sizeof path, "good");
    expect_failure(path, CNN_ERR_IO, "not a regular file");

    fixture_path(path, sizeof path, "good/tiny.cnn");
    setenv("CNNSCOPE_MAX_MODEL_BYTES", "1000", 1);
    expect_failure(path, CNN_ERR_LIMIT, "above the limit of 1000|CNNSCOPE_MAX_MODEL_BYTES");
    setenv("CNNSCOPE_MAX_MODEL_BYTES", "12abc", 1);
    cnn_model *m = NULL;
    CHECK(cnn_model_load(path, &m) == CNN_ERR_ARG && strstr(cnn_last_error(), "12abc"),
          "a malformed CNNSCOPE_MAX_MODEL_BYTES: %s", cnn_last_error());
    setenv("CNNSCOPE_MAX_MODEL_BYTES", "100000000", 1);
    CHECK(cnn_model_load(path, &m) == CNN_OK, "with a large limit: %s", cnn_last_error());
    cnn_model_free(m);
    unsetenv("CNNSCOPE_MAX_MODEL_BYTES");
    CHECK(cnn_model_load(NULL, &m) == CNN_ERR_ARG && cnn_model_load(path, NULL) == CNN_ERR_ARG,
          "NULL arguments");
    cnn_model_free(NULL);
}

// Every prefix of a valid file is "truncated": inside the header, and every 1/40 of the file.
static void test_truncation(const char *name) {
    char src[1024], dst[1024];
    fixture_path(src, sizeof src, name);
    fixture_path(dst, sizeof dst, "truncated.cnn");
    size_t size;
    unsigned char *file = read_whole(src, &size);
    CHECK(file != NULL, "cannot read %s", src);
    if (!file) return;
    size_t cuts[64];
    int n = 0;
    size_t fixed[] = {0, 1, 7, 8, 12, 16, 24, 100, 127, 128, 129, size - 1};
    for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++) cuts[n++] = fixed[k];
    for (int k = 1; k < 40; k++) cuts[n++] = size * (size_t)k / 40;
    for (int k = 0; k < n; k++) {
        CHECK(write_whole(dst, file, cuts[k]), "cannot write %s", dst);
        char words[64];
        snprintf(words, sizeof words, "truncated|%zu", cuts[k]);
        expect_failure(dst, CNN_ERR_FORMAT, words);
    }
    remove(dst);
    free(file);
}

// Random damage behind a valid checksum: the loader must refuse it cleanly or load a model
// that is consistent; never crash or read out of bounds (ASan checks the latter).
static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t next_random(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_fuzz(const char *name, int iterations) {
    char src[1024], dst[1024];
    fixture_path(src, sizeof src, name);
    fixture_path(dst, sizeof dst, "fuzz.cnn");
    size_t size;
    unsigned char *file = read_whole(src, &size);
    CHECK(file != NULL, "cannot read %s", src);
    if (!file) return;
    unsigned char *mutant = malloc(size);
    size_t data_offset = (size_t)get_u64(file + 72);   // damage the structure more than weights
    int loaded = 0, refused = 0;
    for (int it = 0; it < iterations; it++) {
        memcpy(mutant, file, size);
        int edits = 1 + (int)(next_random() % 4);
        for (int e = 0; e < edits; e++) {
            size_t end = next_random() % 10 ? data_offset : size;
            size_t at = 16 + (size_t)(next_random() % (end - 16));
            static const uint64_t interesting[] = {0, 1, 2, 3, 4, 63, 64, 65, 127, 128, 255,
                                                   4096, 4097, 65535, 100000, 100001,
                                                   0x7FFFFFFF, 0x80000000u, 0xFFFFFFFFu,
                                                   UINT64_MAX, UINT64_MAX - 63, INT64_MAX};
            switch (next_random() % 3) {
            case 0:   // one random byte
                mutant[at] = (unsigned char)next_random();
                break;
            case 1:   // one flipped bit
                mutant[at] ^= (unsigned char)(1u << (next_random() % 8));
                break;
            default: {   // an interesting number as u32 or u64
                size_t pick = next_random() % (sizeof interesting / sizeof *interesting);
                uint64_t v = interesting[pick];
                int width = next_random() % 2 ? 8 : 4;
                for (int k = 0; k < width && at + (size_t)k < size; k++) {
                    mutant[at + (size_t)k] = (unsigned char)(v >> (8 * k));
                }
            }
            }
        }
        fix_crc(mutant, size);
        if (!write_whole(dst, mutant, size)) {
            CHECK(0, "cannot write %s", dst);
            break;
        }
        cnn_model *m = NULL;
        cnn_status s = cnn_model_load(dst, &m);
        CHECK(s == CNN_OK || s == CNN_ERR_FORMAT, "%s mutant %d: status %s: %s", name, it,
              status_name(s), cnn_last_error());
        if (s != CNN_OK) {
            refused++;
            continue;
        }
        loaded++;
        int n = cnn_model_node_count(m);
        for (int i = 0; i < n; i++) {
            cnn_node_info info;
            cnn_model_node(m, i, &info);
            int inputs_ok = (i == 0) == (info.n_inputs == 0) && info.n_inputs <= 2;
            for (int k = 0; k < info.n_inputs && k < 2; k++) {
                inputs_ok &= info.inputs[k] >= 0 && info.inputs[k] < i;
            }
            CHECK(info.c >= 1 && info.h >= 1 && info.w >= 1 && info.name && inputs_ok,
                  "%s mutant %d loaded with a bad node %d", name, it, i);
        }
        cnn_node_info last;
        cnn_model_node(m, n - 1, &last);
        CHECK(last.ndim == 2 && last.c == cnn_model_get_info(m)->num_classes,
              "%s mutant %d: output [%d] for %d classes", name, it, last.c,
              cnn_model_get_info(m)->num_classes);
        cnn_model_free(m);
    }
    CHECK(iterations == 0 || refused > iterations / 2, "%s: only %d of %d mutants refused",
          name, refused, iterations);
    if (getenv("VERBOSE")) printf("fuzz %s: %d loaded, %d refused\n", name, loaded, refused);
    remove(dst);
    free(mutant);
    free(file);
}

// ---------------------------------------------------------------------------------------------

int main(int argc, char **argv) {
    char default_dir[1024];
    if (argc > 1) {
        fixture_dir = argv[1];
    } else {
        // run_all.sh sets FIXTURES (= $BUILD/fixtures) and PYTHON.
        const char *fixtures = getenv("FIXTURES");
        const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
        const char *python = getenv("PYTHON") ? getenv("PYTHON") : "python3";
        if (fixtures) {
            snprintf(default_dir, sizeof default_dir, "%s/model_file", fixtures);
        } else {
            snprintf(default_dir, sizeof default_dir, "%s/fixtures/model_file", build);
        }
        fixture_dir = default_dir;
        char command[3000];
        snprintf(command, sizeof command, "%s tests/make_model_fixtures.py '%s'", python,
                 fixture_dir);
        if (system(command) != 0) {
            fprintf(stderr, "FAIL: '%s' failed (run from the repository root, or pass a fixture "
                            "directory made by tests/make_model_fixtures.py)\n", command);
            return 1;
        }
    }
    struct stat st;
    if (stat(fixture_dir, &st) != 0) {
        fprintf(stderr, "FAIL: fixture directory %s: %s\n", fixture_dir, strerror(errno));
        return 1;
    }

    test_crc32();
    test_window_out_size();
    test_status();
    test_tiny();
    test_residual();
    test_shortcut();
    test_find_node();
    test_bad_cases();
    test_io_and_limits();
    test_truncation("good/tiny.cnn");
    test_truncation("good/residual.cnn");
    const char *fuzz_env = getenv("CNNSCOPE_FUZZ_ITERATIONS");
    int iterations = fuzz_env ? atoi(fuzz_env) : 1500;
    test_fuzz("good/tiny.cnn", iterations);
    test_fuzz("good/residual.cnn", iterations);
    test_fuzz("good/shortcut.cnn", iterations);

    if (failures) {
        fprintf(stderr, "test_model_file: %d of %d checks FAILED\n", failures, checks);
        return 1;
    }
    printf("test_model_file: all %d checks passed\n", checks);
    return 0;
}
