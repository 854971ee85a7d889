// test_session.c - the runtime: planning (folding, in-place, arena packing), early stop, taps,
// and that every way of running gives the same numbers.
// Reads $FIXTURES/tiny_resnet.cnn and wide_linear.cnn (tests/make_tiny_model.py).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnscope.h"

#include "check.h"

typedef struct {
    int calls;
    int order_ok;
    int last_node;
    int stop_at;      // return 1 from the tap at this node
    char names[64][64];
} tap_log;

static int record_tap(void *user, int node, const char *name, const cnn_tensor *t) {
    tap_log *log = user;
    if (node <= log->last_node || t->data == NULL) log->order_ok = 0;
    log->last_node = node;
    if (log->calls < 64) snprintf(log->names[log->calls], 64, "%s", name);
    log->calls++;
    return node == log->stop_at;
}

// Resident kB of this process's mapping of `path` (/proc/self/smaps), or -1 if none is found.
static long mapping_rss_kb(const char *path) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[4096];
    long rss = -1;
    int in_mapping = 0;
    size_t len = strlen(path);
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == ' ')) line[--n] = '\0';
        if (strchr(line, '-') && strchr(line, '-') < strchr(line, ' ')) {   // a mapping's header
            in_mapping = n >= len && strcmp(line + n - len, path) == 0;
        } else if (in_mapping && strncmp(line, "Rss:", 4) == 0) {
            rss = (rss < 0 ? 0 : rss) + atol(line + 4);
        }
    }
    fclose(f);
    return rss;
}

// 8. A session copies a linear layer's weights out of the file mapping (copy_linear):
// the same numbers, bit for bit, as reading them in place, and the file's pages it copied no
// longer count in the process's resident memory.
static void test_copy_linear(const char *dir) {
    char path[1024], real[4096];
    snprintf(path, sizeof path, "%s/wide_linear.cnn", dir);
    cnn_model *m;
    if (cnn_model_load(path, &m) != CNN_OK) {
        CHECK(0, "cannot load %s: %s", path, cnn_last_error());
        return;
    }
    if (!realpath(path, real)) snprintf(real, sizeof real, "%s", path);
    const long weights_kb = 1100L * 4096 * 4 / 1024;   // fc1.weight
    long before = mapping_rss_kb(real);
    CHECK(before >= weights_kb, "the model's mapping should be resident after loading (%ld kB)",
          before);
    int N = 3, out = cnn_model_output_node(m);
    float *x = malloc(sizeof(float) * 4096 * N);
    for (int i = 0; i < 4096 * N; i++) x[i] = (float)((i * 37 % 101) / 50.0 - 1.0);
    cnn_session *copied, *in_place;
    cnn_session_options o = cnn_session_defaults();
    CHECK(o.copy_linear == 1, "copy_linear should be on by default");
    CHECK(cnn_session_create(m, N, &o, &copied) == CNN_OK, "%s", cnn_last_error());
    long after = mapping_rss_kb(real);
    CHECK(after >= 0 && after <= before - weights_kb + 8,
          "fc1's %ld kB of file pages should be released once copied: %ld kB resident before, "
          "%ld after", weights_kb, before, after);
    o.copy_linear = 0;
    CHECK(cnn_session_create(m, N, &o, &in_place) == CNN_OK, "%s", cnn_last_error());
    CHECK(cnn_session_run(copied, x, N) == CNN_OK, "%s", cnn_last_error());
    CHECK(cnn_session_run(in_place, x, N) == CNN_OK, "%s", cnn_last_error());
    const cnn_tensor *a = cnn_session_output(copied, out), *b = cnn_session_output(in_place, out);
    CHECK(a && b && memcmp(a->data, b->data, sizeof(float) * 10 * N) == 0,
          "copied and in-place linear weights give different outputs");
    cnn_session_free(copied);
    cnn_session_free(in_place);
    cnn_model_free(m);
    free(x);
}

int main(void) {
    const char *dir = getenv("FIXTURES");
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny_resnet.cnn", dir ? dir : "build/fixtures");
    cnn_model *m;
    if (cnn_model_load(path, &m) != CNN_OK) {
        printf("FAIL: cannot load %s: %s\n", path, cnn_last_error());
        return 1;
    }
    const cnn_model_info *info = cnn_model_get_info(m);
    int N = 3, out = cnn_model_output_node(m), nodes = cnn_model_node_count(m);
    size_t per_image = (size_t)info->channels * info->height * info->width;
    float *x = malloc(sizeof(float) * per_image * N);
    srand(7);
    for (size_t i = 0; i < per_image * N; i++) x[i] = (float)((double)rand() / RAND_MAX * 2 - 1);

    // 1. The reference run keeps everything: ground truth for every node.
    cnn_session *ref, *fast, *all;
    cnn_session_options o = cnn_session_defaults();
    o.keep_all = 1;
    o.reference = 1;
    CHECK(cnn_session_create(m, N, &o, &ref) == CNN_OK, "%s", cnn_last_error());
    CHECK(cnn_session_run(ref, x, N) == CNN_OK, "%s", cnn_last_error());
    const cnn_tensor *p_ref = cnn_session_output(ref, out);
    CHECK(p_ref && p_ref->ndim == 2 && p_ref->dims[0] == N && p_ref->dims[1] == 5,
          "output shape");
    for (int n = 0; n < N; n++) {   // softmax rows sum to 1
        double sum = 0;
        for (int k = 0; k < 5; k++) sum += p_ref->data[n * 5 + k];
        CHECK(fabs(sum - 1) < 1e-5, "softmax row %d sums to %f", n, sum);
    }

    // 2. The default (folded, in-place, packed) run gives the same output with a smaller arena.
    o = cnn_session_defaults();
    CHECK(cnn_session_create(m, N, &o, &fast) == CNN_OK, "%s", cnn_last_error());
    CHECK(cnn_session_run(fast, x, N) == CNN_OK, "%s", cnn_last_error());
    const cnn_tensor *p_fast = cnn_session_output(fast, out);
    CHECK(p_fast && rel_error(p_fast->data, p_ref->data, 5 * N) < 1e-5,
          "default run differs from reference: %g", rel_error(p_fast->data, p_ref->data, 5 * N));
    size_t sum_bytes = 0;
    for (int i = 1; i < nodes; i++) {
        cnn_node_info ni;
        cnn_model_node(m, i, &ni);
        sum_bytes += sizeof(float) * N * (size_t)ni.c * ni.h * ni.w;
    }
    CHECK(cnn_session_arena_bytes(fast) < sum_bytes / 2,
          "arena %zu bytes is not much smaller than the sum of all outputs %zu",
          cnn_session_arena_bytes(fast), sum_bytes);
    CHECK(cnn_session_arena_bytes(ref) >= sum_bytes - 16 * sizeof(float) * nodes,
          "keep_all arena %zu smaller than the sum %zu", cnn_session_arena_bytes(ref), sum_bytes);
    // Fused epilogues (relu, residual add + relu, add after the projection conv) change no bit:
    // the same session without them gives the same output exactly.
    cnn_session *unfused;
    o = cnn_session_defaults();
    o.fuse_epilogues = 0;
    CHECK(cnn_session_create(m, N, &o, &unfused) == CNN_OK, "%s", cnn_last_error());
    CHECK(cnn_session_run(unfused, x, N) == CNN_OK, "%s", cnn_last_error());
    CHECK(memcmp(cnn_session_output(unfused, out)->data, p_fast->data, 5 * N * sizeof(float)) == 0,
          "fused epilogues change the output");
    cnn_session_free(unfused);
    // Intermediate outputs of the default run were not kept, and say so.
    int relu = cnn_model_find_node(m, "relu");
    CHECK(relu > 0 && cnn_session_output(fast, relu) == NULL, "relu output should not be kept");
    CHECK(strstr(cnn_last_error(), "relu") != NULL, "error names the layer: %s", cnn_last_error());

    // 3. keep_all without reference kernels: every node equals the reference.
    o = cnn_session_defaults();
    o.keep_all = 1;
    CHECK(cnn_session_create(m, N, &o, &all) == CNN_OK, "%s", cnn_last_error());
    CHECK(cnn_session_run(all, x, N) == CNN_OK, "%s", cnn_last_error());
    for (int i = 1; i < nodes; i++) {
        const cnn_tensor *a = cnn_session_output(all, i), *b = cnn_session_output(ref, i);
        CHECK(a && b, "node %d missing", i);
        if (!a || !b) continue;
        double e = rel_error(a->data, b->data, (size_t)cnn_tensor_numel(b));
        CHECK(e < 1e-5, "node %d differs: rel error %g", i, e);
    }

    // 4. Keeping a conv whose batch norm could be folded gives its own (pre-BN) output.
    cnn_session *keep;
    int conv = cnn_model_find_node(m, "block.conv");
    o = cnn_session_defaults();
    o.keep = &conv;
    o.n_keep = 1;
    CHECK(cnn_session_create(m, N, &o, &keep) == CNN_OK, "%s", cnn_last_error());
    CHECK(cnn_session_run(keep, x, N) == CNN_OK, "%s", cnn_last_error());
    const cnn_tensor *kc = cnn_session_output(keep, conv);
    CHECK(kc && rel_error(kc->data, cnn_session_output(ref, conv)->data,
                          (size_t)cnn_tensor_numel(kc)) < 1e-5,
          "kept conv is not its pre-BN output");
    CHECK(cnn_session_output(keep, out) &&
              rel_error(cnn_session_output(keep, out)->data, p_ref->data, 5 * N) < 1e-5,
          "output differs when a conv is kept");
    cnn_session_free(keep);

    // 5. stop_after: nothing after the named node runs; a partial batch works.
    cnn_session *early;
    int pool = cnn_model_find_node(m, "pool");
    tap_log log = {0, 1, 0, -1, {{0}}};
    o = cnn_session_defaults();
    o.stop_after = pool;
    o.tap = record_tap;
    o.tap_user = &log;
    CHECK(cnn_session_create(m, N, &o, &early) == CNN_OK, "%s", cnn_last_error());
    CHECK(cnn_session_run(early, x, 2) == CNN_OK, "%s", cnn_last_error());
    const cnn_tensor *pt = cnn_session_output(early, pool);
    CHECK(pt && pt->dims[0] == 2 &&
              rel_error(pt->data, cnn_session_output(ref, pool)->data,
                        (size_t)cnn_tensor_numel(pt)) < 1e-5,
          "stop_after output wrong");
    CHECK(cnn_session_output(early, out) == NULL, "output computed despite stop_after");
    CHECK(log.order_ok && log.last_node == pool, "taps out of order or past the stop");
    // conv1 + bn1 + relu is one conv call (batch norm folded, relu in its epilogue), reported
    // as relu; block.conv + block.bn + block.add + block likewise, reported as block.
    CHECK(log.calls == 3 && strcmp(log.names[0], "relu") == 0 &&
              strcmp(log.names[1], "block") == 0 && strcmp(log.names[2], "pool") == 0,
          "taps: %d calls: '%s' '%s' '%s'", log.calls, log.names[0], log.names[1], log.names[2]);
    cnn_session_free(early);

    // 6. A tap that returns 1 stops the run.
    cnn_session *stopped;
    tap_log log2 = {0, 1, 0, relu, {{0}}};
    o = cnn_session_defaults();
    o.tap = record_tap;
    o.tap_user = &log2;
    CHECK(cnn_session_create(m, N, &o, &stopped) == CNN_OK, "%s", cnn_last_error());
    CHECK(cnn_session_run(stopped, x, N) == CNN_OK, "%s", cnn_last_error());
    CHECK(log2.last_node == relu && cnn_session_output(stopped, out) == NULL,
          "tap did not stop the run (last %d)", log2.last_node);
    cnn_session_free(stopped);

    // 7. Bad arguments are errors, not crashes.
    cnn_session *bad = NULL;
    CHECK(cnn_session_create(m, 0, NULL, &bad) == CNN_ERR_ARG && bad == NULL, "batch 0 accepted");
    CHECK(cnn_session_run(fast, x, N + 1) == CNN_ERR_ARG, "oversized run accepted");
    CHECK(cnn_model_find_node(m, "blok.conv") < 0 && strstr(cnn_last_error(), "block.conv"),
          "no suggestion: %s", cnn_last_error());

    cnn_session_free(ref);
    cnn_session_free(fast);
    cnn_session_free(all);
    cnn_model_free(m);
    free(x);

    test_copy_linear(dir ? dir : "build/fixtures");
    printf("%s\n", failures ? "session tests FAILED" : "session tests passed");
    return failures ? 1 : 0;
}
