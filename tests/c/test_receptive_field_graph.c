// test_receptive_field_graph.c - vis/receptive_field.c against a brute-force walk of the graph.
//
// The brute force follows the definition instead of the closed form: output position o of a
// windowed layer reads positions o*s - p + d*i (i = 0..k-1) of its input (padding positions
// included, as if every layer extended forever); an add reads the same position of both
// inputs. The receptive field box of o is the [min, max] of the input pixels reached. For
// random chains and residual graphs (kernels 1..5, strides 1..3, paddings, dilations,
// ceil_mode pools, shortcut_a, adds) every output position's box must equal vis_rf_box.
// Plus hand-checked values (AlexNet's conv1 and pool5) and the global rules.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "receptive_field.h"

static int failures = 0;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            failures++;                                    \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                  \
            fprintf(stderr, "\n");                         \
        }                                                  \
    } while (0)

#define MAX_NODES 64

typedef struct {
    cnn_node_info nodes[MAX_NODES];
    int n;
    int stride_of_shortcut[MAX_NODES];   // brute force needs it; the node info does not carry it
} graph;

static int add_node(graph *g, cnn_op op, int in0, int in1, int c, int h, int w) {
    cnn_node_info *n = &g->nodes[g->n];
    memset(n, 0, sizeof *n);
    n->name = "node";
    n->op = op;
    n->n_inputs = op == CNN_OP_INPUT ? 0 : op == CNN_OP_ADD ? 2 : 1;
    n->inputs[0] = in0;
    n->inputs[1] = in1;
    n->ndim = 4;
    n->c = c;
    n->h = h;
    n->w = w;
    return g->n++;
}

// Output size of a window as PyTorch computes it.
static int window_out(int in, int k, int s, int p, int d, int ceil_mode) {
    int extent = d * (k - 1) + 1, span = in + 2 * p - extent;
    int out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
    if (ceil_mode && (out - 1) * s >= in + p) out--;   // last window must start inside
    return out;
}

static int add_window(graph *g, cnn_op op, int in, int kh, int kw, int s, int p, int d,
                      int ceil_mode) {
    const cnn_node_info *x = &g->nodes[in];
    int oh = window_out(x->h, kh, s, p, d, ceil_mode), ow = window_out(x->w, kw, s, p, d, ceil_mode);
    int i = add_node(g, op, in, 0, x->c, oh, ow);
    cnn_window *w = &g->nodes[i].window;
    w->kernel[0] = kh;
    w->kernel[1] = kw;
    w->stride[0] = w->stride[1] = s;
    w->padding[0] = w->padding[1] = p;
    w->dilation[0] = w->dilation[1] = op == CNN_OP_AVGPOOL ? 0 : d;   // avgpool has none
    w->ceil_mode = ceil_mode;
    w->groups = 1;
    return i;
}

// [lo, hi] of input pixels reached from position o of node i along axis a (unclipped).
static void brute(const graph *g, int i, int a, int o, int *lo, int *hi) {
    const cnn_node_info *n = &g->nodes[i];
    if (n->op == CNN_OP_INPUT) {
        if (o < *lo) *lo = o;
        if (o > *hi) *hi = o;
        return;
    }
    switch (n->op) {
    case CNN_OP_CONV2D:
    case CNN_OP_MAXPOOL:
    case CNN_OP_AVGPOOL: {
        int d = n->window.dilation[a] > 0 ? n->window.dilation[a] : 1;
        for (int k = 0; k < n->window.kernel[a]; k++)
            brute(g, n->inputs[0], a, o * n->window.stride[a] - n->window.padding[a] + d * k, lo,
                  hi);
        return;
    }
    case CNN_OP_SHORTCUT_A:
        brute(g, n->inputs[0], a, o * g->stride_of_shortcut[i], lo, hi);
        return;
    case CNN_OP_ADD:
        brute(g, n->inputs[0], a, o, lo, hi);
        brute(g, n->inputs[1], a, o, lo, hi);
        return;
    default:
        brute(g, n->inputs[0], a, o, lo, hi);
    }
}

static void check_against_brute_force(const graph *g, const char *what) {
    vis_rf rf[MAX_NODES];
    cnn_status st = vis_receptive_fields_of_nodes(g->nodes, g->n, rf);
    CHECK(st == CNN_OK, "%s: vis_receptive_fields_of_nodes failed: %s", what, cnn_last_error());
    if (st != CNN_OK) return;
    int H = g->nodes[0].h, W = g->nodes[0].w;
    for (int i = 1; i < g->n; i++) {
        const cnn_node_info *n = &g->nodes[i];
        CHECK(!rf[i].global, "%s: node %d (%s) is global", what, i, cnn_op_name(n->op));
        for (int y = 0; y < n->h; y++) {
            for (int x = 0; x < n->w; x++) {
                int y0 = 1 << 30, y1 = -(1 << 30), x0 = 1 << 30, x1 = -(1 << 30);
                brute(g, i, 0, y, &y0, &y1);
                brute(g, i, 1, x, &x0, &x1);
                vis_box b = vis_rf_box(&rf[i], y, x, H, W);
                if (b.y0 != y0 || b.y1 != y1 || b.x0 != x0 || b.x1 != x1) {
                    CHECK(0, "%s: node %d (%s, %dx%d) position (%d,%d): box rows %d..%d cols "
                          "%d..%d, brute force rows %d..%d cols %d..%d", what, i,
                          cnn_op_name(n->op), n->h, n->w, y, x, b.y0, b.y1, b.x0, b.x1, y0, y1,
                          x0, x1);
                    return;
                }
                double cy = vis_rf_start(&rf[i], 0) + y * rf[i].jump[0];
                CHECK(cy * 2 == y0 + y1, "%s: node %d: start+y*jump %g is not the centre of "
                      "%d..%d", what, i, cy, y0, y1);
            }
        }
    }
}

static unsigned rng_state = 12345;
static int rnd(int lo, int hi) {   // inclusive
    rng_state = rng_state * 1103515245u + 12345u;
    return lo + (int)((rng_state >> 16) % (unsigned)(hi - lo + 1));
}

// A random windowed layer that keeps the map at least 2x2; -1 if none fits.
static int random_window(graph *g, int in) {
    for (int tries = 0; tries < 50; tries++) {
        cnn_op op = rnd(0, 2) == 0 ? CNN_OP_CONV2D : rnd(0, 1) ? CNN_OP_MAXPOOL : CNN_OP_AVGPOOL;
        int k = rnd(1, 5), s = rnd(1, 3), d = op == CNN_OP_AVGPOOL ? 1 : rnd(1, 2);
        int p = rnd(0, (k - 1) / 2 + (op == CNN_OP_CONV2D ? 1 : 0));
        if (op != CNN_OP_CONV2D && p > k / 2) continue;   // PyTorch's pool rule
        int ceil_mode = op != CNN_OP_CONV2D && rnd(0, 1);
        const cnn_node_info *x = &g->nodes[in];
        int kh = k, kw = rnd(0, 3) == 0 ? rnd(1, 5) : k;
        if (kw != kh && 2 * p >= kw) continue;
        int oh = window_out(x->h, kh, s, p, d, ceil_mode), ow = window_out(x->w, kw, s, p, d,
                                                                           ceil_mode);
        if (oh < 2 || ow < 2) continue;
        return add_window(g, op, in, kh, kw, s, p, d, ceil_mode);
    }
    return -1;
}

static void random_graphs(void) {
    for (int trial = 0; trial < 300; trial++) {
        graph g = {0};
        int x = add_node(&g, CNN_OP_INPUT, 0, 0, 3, rnd(8, 40), rnd(8, 40));
        int layers = rnd(1, 6);
        for (int l = 0; l < layers && g.n < MAX_NODES - 8; l++) {
            int kind = rnd(0, 4);
            if (kind <= 2) {
                int y = random_window(&g, x);
                if (y < 0) break;
                x = add_node(&g, CNN_OP_RELU, y, 0, g.nodes[y].c, g.nodes[y].h, g.nodes[y].w);
            } else {
                // residual block: two 3x3 convs (the first maybe strided) + identity or
                // shortcut_a / strided 1x1 conv, then add
                const cnn_node_info *in = &g.nodes[x];
                int s = in->h >= 8 && in->w >= 8 ? rnd(1, 2) : 1;
                int a = add_window(&g, CNN_OP_CONV2D, x, 3, 3, s, 1, 1, 0);
                int b = add_window(&g, CNN_OP_CONV2D, a, 3, 3, 1, rnd(1, 2) == 1 ? 1 : 2,
                                   rnd(1, 2) == 1 ? 1 : 2, 0);
                if (g.nodes[b].h != g.nodes[a].h) {   // keep shapes equal for the add
                    g.n--;
                    b = add_window(&g, CNN_OP_CONV2D, a, 3, 3, 1, 1, 1, 0);
                }
                int sc = x;
                if (s == 2 && kind == 3) {
                    sc = add_node(&g, CNN_OP_SHORTCUT_A, x, 0, in->c, (in->h + 1) / 2,
                                  (in->w + 1) / 2);
                    g.stride_of_shortcut[sc] = 2;
                } else if (s == 2) {
                    sc = add_window(&g, CNN_OP_CONV2D, x, 1, 1, 2, 0, 1, 0);
                }
                if (g.nodes[sc].h != g.nodes[b].h || g.nodes[sc].w != g.nodes[b].w) break;
                int sum = add_node(&g, CNN_OP_ADD, b, sc, g.nodes[b].c, g.nodes[b].h,
                                   g.nodes[b].w);
                x = add_node(&g, CNN_OP_RELU, sum, 0, g.nodes[sum].c, g.nodes[sum].h,
                             g.nodes[sum].w);
            }
        }
        char what[64];
        snprintf(what, sizeof what, "random graph %d", trial);
        check_against_brute_force(&g, what);
        if (failures > 10) return;
    }
}

static void hand_checked(void) {
    // AlexNet features: conv 11/4/2, pool 3/2, conv 5/1/2, pool 3/2, 3 x conv 3/1/1, pool 3/2
    graph g = {0};
    int x = add_node(&g, CNN_OP_INPUT, 0, 0, 3, 224, 224);
    int c1 = x = add_window(&g, CNN_OP_CONV2D, x, 11, 11, 4, 2, 1, 0);
    x = add_window(&g, CNN_OP_MAXPOOL, x, 3, 3, 2, 0, 1, 0);
    x = add_window(&g, CNN_OP_CONV2D, x, 5, 5, 1, 2, 1, 0);
    x = add_window(&g, CNN_OP_MAXPOOL, x, 3, 3, 2, 0, 1, 0);
    for (int i = 0; i < 3; i++) x = add_window(&g, CNN_OP_CONV2D, x, 3, 3, 1, 1, 1, 0);
    int pool5 = x = add_window(&g, CNN_OP_MAXPOOL, x, 3, 3, 2, 0, 1, 0);
    int adaptive = add_node(&g, CNN_OP_ADAPTIVE_AVGPOOL, x, 0, 256, 6, 6);
    int flat = add_node(&g, CNN_OP_FLATTEN, adaptive, 0, 9216, 1, 1);
    int fc = add_node(&g, CNN_OP_LINEAR, flat, 0, 4096, 1, 1);
    int relu = add_node(&g, CNN_OP_RELU, fc, 0, 4096, 1, 1);
    vis_rf rf[MAX_NODES];
    CHECK(vis_receptive_fields_of_nodes(g.nodes, g.n, rf) == CNN_OK, "alexnet: %s",
          cnn_last_error());
    CHECK(g.nodes[c1].h == 55 && g.nodes[pool5].h == 6, "alexnet shapes %d %d",
          g.nodes[c1].h, g.nodes[pool5].h);
    CHECK(rf[c1].size[0] == 11 && rf[c1].jump[0] == 4 && rf[c1].first[0] == -2 &&
          vis_rf_start(&rf[c1], 0) == 3.0, "alexnet conv1: size %d jump %d first %d",
          rf[c1].size[0], rf[c1].jump[0], rf[c1].first[0]);
    // pool5: 195 pixels, jump 32 (the published AlexNet figures)
    CHECK(rf[pool5].size[0] == 195 && rf[pool5].jump[0] == 32 && rf[pool5].first[0] == -66,
          "alexnet pool5: size %d jump %d first %d", rf[pool5].size[0], rf[pool5].jump[0],
          rf[pool5].first[0]);
    for (int i = adaptive; i <= relu; i++) {
        vis_box b = vis_rf_box(&rf[i], 0, 0, 224, 224);
        CHECK(rf[i].global && b.y0 == 0 && b.x0 == 0 && b.y1 == 223 && b.x1 == 223,
              "node %d after the adaptive pool must be global (box %d..%d)", i, b.y0, b.y1);
    }
    vis_box clipped = vis_rf_box_clipped(&rf[c1], 0, 54, 224, 224);
    CHECK(clipped.y0 == 0 && clipped.y1 == 8 && clipped.x0 == 214 && clipped.x1 == 223,
          "alexnet conv1 (0,54) clipped: rows %d..%d cols %d..%d", clipped.y0, clipped.y1,
          clipped.x0, clipped.x1);

    // An even kernel: the centre is a half pixel.
    graph e = {0};
    x = add_node(&e, CNN_OP_INPUT, 0, 0, 1, 10, 10);
    x = add_window(&e, CNN_OP_MAXPOOL, x, 2, 2, 2, 0, 1, 0);
    CHECK(vis_receptive_fields_of_nodes(e.nodes, e.n, rf) == CNN_OK, "%s", cnn_last_error());
    CHECK(rf[x].size[0] == 2 && vis_rf_start(&rf[x], 0) == 0.5, "2x2 pool: size %d start %g",
          rf[x].size[0], vis_rf_start(&rf[x], 0));

    // An add of inputs with different jumps has no box of this form: global.
    graph j = {0};
    int in = add_node(&j, CNN_OP_INPUT, 0, 0, 1, 16, 16);
    int a = add_window(&j, CNN_OP_CONV2D, in, 3, 3, 2, 1, 1, 0);          // 8x8, jump 2
    int b = add_window(&j, CNN_OP_CONV2D, in, 9, 9, 1, 0, 1, 0);          // 8x8, jump 1
    int sum = add_node(&j, CNN_OP_ADD, a, b, 1, 8, 8);
    CHECK(vis_receptive_fields_of_nodes(j.nodes, j.n, rf) == CNN_OK, "%s", cnn_last_error());
    CHECK(rf[sum].global, "add of jumps 2 and 1 must be global");

    // Errors: an input that is not earlier, a zero stride.
    j.nodes[sum].inputs[1] = sum;
    CHECK(vis_receptive_fields_of_nodes(j.nodes, j.n, rf) == CNN_ERR_ARG &&
          strstr(cnn_last_error(), "earlier"), "a forward reference must fail, got '%s'",
          cnn_last_error());
    j.nodes[sum].inputs[1] = b;
    j.nodes[a].window.stride[0] = 0;
    CHECK(vis_receptive_fields_of_nodes(j.nodes, j.n, rf) == CNN_ERR_ARG &&
          strstr(cnn_last_error(), "stride"), "a zero stride must fail, got '%s'",
          cnn_last_error());
}

int main(void) {
    hand_checked();
    random_graphs();
    if (failures) {
        fprintf(stderr, "test_receptive_field_graph: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_receptive_field_graph: all checks passed\n");
    return 0;
}
