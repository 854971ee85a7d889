// fuzz_model.c - libFuzzer harness for the model loader and validator (engine/model_file.c),
// and for the session planner and kernels on every model the loader accepts.
//
// Nearly every random change to a model file only breaks its CRC-32, which the loader checks
// first. So each input is loaded twice: as it is (the header checks), then with the header's
// size and checksum repaired (every check behind the checksum). A model that loads is
// inspected through the public API and, when it is small, run once with the fast kernels and
// once with the reference kernels.
//
//     make fuzz FUZZ_SECONDS=60                      (tests/fuzz/README.md)
//     build-fuzz/fuzz_model CORPUS_DIR SEED_DIR      libFuzzer's own flags work too
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cnnscope.h"
#include "crc32.h"

#define HEADER_BYTES 128
// Run a session only on models this small (one image), so that each input takes milliseconds.
#define MAX_RUN_MACS 4000000
#define MAX_RUN_ELEMS 1000000   // sum of every node's output elements

static void put_le32(uint8_t *p, uint32_t v) {
    for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k));
}

static void put_le64(uint8_t *p, uint64_t v) {
    for (int k = 0; k < 8; k++) p[k] = (uint8_t)(v >> (8 * k));
}

static int small_enough_to_run(const cnn_model *m) {
    int64_t macs = 0, elems = 0;
    for (int i = 0; i < cnn_model_node_count(m); i++) {
        cnn_node_info n;
        cnn_model_node(m, i, &n);
        macs += n.macs;
        elems += (int64_t)n.c * n.h * n.w;
        if (macs > MAX_RUN_MACS || elems > MAX_RUN_ELEMS) return 0;
    }
    return 1;
}

static void run_once(const cnn_model *m, int reference, int fold_bn) {
    const cnn_model_info *info = cnn_model_get_info(m);
    size_t numel = (size_t)info->channels * info->height * info->width;
    float *input = malloc(numel * sizeof *input);
    if (!input) return;
    for (size_t i = 0; i < numel; i++) input[i] = (float)((int)(i % 17) - 8) * 0.125f;
    cnn_session_options opt = cnn_session_defaults();
    opt.threads = 1;
    opt.reference = reference;
    opt.fold_bn = fold_bn;
    cnn_session *s;
    if (cnn_session_create(m, 1, &opt, &s) == CNN_OK) {
        if (cnn_session_run(s, input, 1) == CNN_OK) {
            const cnn_tensor *out = cnn_session_output(s, cnn_model_output_node(m));
            if (!out || out->dims[0] != 1 || out->dims[1] != info->num_classes) abort();
        }
        cnn_session_free(s);
    }
    free(input);
}

static void exercise(const cnn_model *m) {
    const cnn_model_info *info = cnn_model_get_info(m);
    const char *warnings = cnn_model_warnings(m);
    if (warnings && strlen(warnings) == 0) abort();   // NULL or text, never ""
    int count = cnn_model_node_count(m);
    for (int i = 0; i < count; i++) {
        cnn_node_info n;
        cnn_model_node(m, i, &n);
        if (!n.name || cnn_model_find_node(m, n.name) != i) abort();   // names are unique
        for (int k = 0; k < n.n_inputs; k++) {
            if (n.inputs[k] < 0 || n.inputs[k] >= i) abort();   // earlier nodes only
        }
    }
    (void)cnn_model_find_node(m, "layer1.0.conv");   // a miss: builds suggestions
    cnn_tensor t;
    (void)cnn_model_tensor(m, "conv1.weight", &t);
    for (int k = 0; k < info->num_classes; k++) {
        if (!info->class_names[k]) abort();
    }
    if (small_enough_to_run(m)) {
        run_once(m, 0, 1);
        run_once(m, 1, 0);
    }
}

static void load_and_exercise(const uint8_t *bytes, size_t size) {
    cnn_model *m = NULL;
    if (cnn_model_load_memory(bytes, size, "fuzz.cnn", &m) == CNN_OK) {
        exercise(m);
        cnn_model_free(m);
    } else if (cnn_last_error()[0] == '\0') {
        abort();   // every failure explains itself
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // The loader wants its bytes 64-byte aligned (the tensors are used in place).
    uint8_t *copy = aligned_alloc(64, (size + 63) / 64 * 64 + 64);
    if (!copy) return 0;
    memcpy(copy, data, size);
    load_and_exercise(copy, size);
    if (size >= HEADER_BYTES) {
        put_le64(copy + 16, size);
        put_le32(copy + 12, crc32_ieee(0, copy + 16, size - 16));
        load_and_exercise(copy, size);
    }
    free(copy);
    return 0;
}
