// test_model_memory.c - cnn_model_load_memory (the loader on bytes already in memory, as the
// fuzzer uses it) against cnn_model_load, and cnn_model_warnings (NaN / Inf weights).
//
//     build/tests/test_model_memory     reads $FIXTURES/tiny_resnet.cnn (run_all.sh makes it)
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnscope.h"
#include "crc32.h"

static int failures = 0;

#define CHECK(cond, ...)                                          \
    do {                                                          \
        if (!(cond)) {                                            \
            failures++;                                           \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);  \
            fprintf(stderr, __VA_ARGS__);                         \
            fputc('\n', stderr);                                  \
        }                                                         \
    } while (0)

// The whole file in a 64-byte aligned buffer (with 64 spare bytes for the misaligned case).
static uint8_t *read_aligned(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = aligned_alloc(64, ((size_t)n + 63) / 64 * 64 + 64);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static void put_le32(uint8_t *p, uint32_t v) {
    for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k));
}

int main(void) {
    const char *fixtures = getenv("FIXTURES") ? getenv("FIXTURES") : "build/fixtures";
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny_resnet.cnn", fixtures);
    size_t size;
    uint8_t *bytes = read_aligned(path, &size);
    if (!bytes) {
        fprintf(stderr, "FAIL: cannot read %s (run tests/make_tiny_model.py %s)\n", path, fixtures);
        return 1;
    }

    // The same model from the file and from memory: same graph, same weights, no warnings.
    cnn_model *from_file = NULL, *from_memory = NULL;
    CHECK(cnn_model_load(path, &from_file) == CNN_OK, "load %s: %s", path, cnn_last_error());
    CHECK(cnn_model_load_memory(bytes, size, "tiny.cnn", &from_memory) == CNN_OK,
          "load_memory: %s", cnn_last_error());
    if (from_file && from_memory) {
        int n = cnn_model_node_count(from_file);
        CHECK(n == cnn_model_node_count(from_memory) && n > 10, "node counts %d vs %d", n,
              cnn_model_node_count(from_memory));
        for (int i = 0; i < n && i < cnn_model_node_count(from_memory); i++) {
            cnn_node_info a, b;
            cnn_model_node(from_file, i, &a);
            cnn_model_node(from_memory, i, &b);
            CHECK(strcmp(a.name, b.name) == 0 && a.op == b.op && a.c == b.c && a.h == b.h &&
                  a.w == b.w && a.params == b.params && a.macs == b.macs,
                  "node %d differs: '%s' [%d,%d,%d] vs '%s' [%d,%d,%d]", i, a.name, a.c, a.h,
                  a.w, b.name, b.c, b.h, b.w);
        }
        cnn_tensor ta, tb;
        CHECK(cnn_model_tensor(from_file, "conv1.weight", &ta) == CNN_OK &&
              cnn_model_tensor(from_memory, "conv1.weight", &tb) == CNN_OK &&
              memcmp(ta.data, tb.data, 216 * sizeof(float)) == 0,
              "conv1.weight differs between file and memory");
        CHECK(strcmp(cnn_model_get_info(from_memory)->path, "tiny.cnn") == 0,
              "info.path is '%s', expected the name given", cnn_model_get_info(from_memory)->path);
        CHECK(cnn_model_warnings(from_file) == NULL && cnn_model_warnings(from_memory) == NULL,
              "a clean model has warnings: %s", cnn_model_warnings(from_memory));
    }
    cnn_model_free(from_file);
    cnn_model_free(from_memory);

    // Refusals: misaligned bytes, NULL, empty and truncated buffers, each with the name.
    cnn_model *m = NULL;
    memmove(bytes + 4, bytes, size);
    CHECK(cnn_model_load_memory(bytes + 4, size, "tiny.cnn", &m) == CNN_ERR_ARG && !m &&
              strstr(cnn_last_error(), "multiple of 64"),
          "misaligned: %s", cnn_last_error());
    memmove(bytes, bytes + 4, size);
    CHECK(cnn_model_load_memory(NULL, 10, "x", &m) == CNN_ERR_ARG && !m, "NULL bytes accepted");
    CHECK(cnn_model_load_memory(bytes, 0, "empty.cnn", &m) == CNN_ERR_FORMAT && !m &&
              strstr(cnn_last_error(), "empty.cnn: truncated"),
          "empty: %s", cnn_last_error());
    CHECK(cnn_model_load_memory(bytes, size - 1, NULL, &m) == CNN_ERR_FORMAT && !m &&
              strstr(cnn_last_error(), "(memory): truncated"),
          "truncated: %s", cnn_last_error());

    // NaN and Inf weights: the model loads, with one warning line per tensor.
    cnn_model *clean = NULL;
    cnn_tensor w;
    if (cnn_model_load_memory(bytes, size, "tiny.cnn", &clean) == CNN_OK &&
        cnn_model_tensor(clean, "conv1.weight", &w) == CNN_OK) {
        size_t at = (size_t)((const uint8_t *)w.data - bytes);
        cnn_tensor fc;
        cnn_model_tensor(clean, "fc.weight", &fc);
        size_t fc_at = (size_t)((const uint8_t *)fc.data - bytes);
        cnn_model_free(clean);
        float nan = NAN, inf = INFINITY;
        memcpy(bytes + at + 4, &nan, 4);
        memcpy(bytes + at + 40, &nan, 4);
        memcpy(bytes + at + 80, &inf, 4);
        memcpy(bytes + fc_at, &inf, 4);
        put_le32(bytes + 12, crc32_ieee(0, bytes + 16, size - 16));
        CHECK(cnn_model_load_memory(bytes, size, "nan.cnn", &m) == CNN_OK, "NaN weights refused: %s",
              cnn_last_error());
        const char *text = m ? cnn_model_warnings(m) : NULL;
        const char *want =
            "nan.cnn: tensor 'conv1.weight' holds 2 NaN and 1 infinite values (of 216): outputs "
            "that depend on it will not be finite\n"
            "nan.cnn: tensor 'fc.weight' holds 0 NaN and 1 infinite values (of 80): outputs that "
            "depend on it will not be finite";
        CHECK(text && strcmp(text, want) == 0, "warnings are\n'%s'\nexpected\n'%s'",
              text ? text : "(null)", want);
        cnn_model_free(m);
    } else {
        CHECK(0, "reloading the clean model failed: %s", cnn_last_error());
    }
    free(bytes);
    if (failures) return 1;
    printf("test_model_memory: all checks passed\n");
    return 0;
}
