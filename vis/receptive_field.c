// receptive_field.c - receptive field size, jump and first pixel of every node (see the
// header for the definitions and rules).
#include <stdlib.h>

#include "receptive_field.h"

double vis_rf_start(const vis_rf *rf, int axis) {
    return rf->first[axis] + (rf->size[axis] - 1) / 2.0;
}

vis_box vis_rf_box(const vis_rf *rf, int y, int x, int in_h, int in_w) {
    vis_box b;
    if (rf->global) {
        b.y0 = b.x0 = 0;
        b.y1 = in_h - 1;
        b.x1 = in_w - 1;
        return b;
    }
    b.y0 = rf->first[0] + y * rf->jump[0];
    b.x0 = rf->first[1] + x * rf->jump[1];
    b.y1 = b.y0 + rf->size[0] - 1;
    b.x1 = b.x0 + rf->size[1] - 1;
    return b;
}

vis_box vis_rf_box_clipped(const vis_rf *rf, int y, int x, int in_h, int in_w) {
    vis_box b = vis_rf_box(rf, y, x, in_h, in_w);
    if (b.y0 < 0) b.y0 = 0;
    if (b.x0 < 0) b.x0 = 0;
    if (b.y1 > in_h - 1) b.y1 = in_h - 1;
    if (b.x1 > in_w - 1) b.x1 = in_w - 1;
    return b;
}

static vis_rf global_field(int in_h, int in_w) {
    vis_rf rf = {1, {in_h, in_w}, {0, 0}, {0, 0}};
    return rf;
}

// The stride of a shortcut_a node. The public node info carries no window for it, so it is
// read from the shapes: the smallest s with ceil(in / s) == out on both axes (x[:, :, ::s, ::s]
// gives ceil(in / s) positions). A window filled in by the engine takes precedence.
static int shortcut_stride(const cnn_node_info *node, const cnn_node_info *in) {
    if (node->window.stride[0] > 0) return node->window.stride[0];
    for (int s = 1; s <= in->h && s <= in->w; s++)
        if ((in->h + s - 1) / s == node->h && (in->w + s - 1) / s == node->w) return s;
    return 0;
}

// One windowed layer (kernel k, stride s, padding p, dilation d) applied to `in` along axis a.
static void apply_window(vis_rf *out, const vis_rf *in, int a, int k, int s, int p, int d) {
    int extent = d * (k - 1) + 1;
    out->size[a] = in->size[a] + (extent - 1) * in->jump[a];
    out->first[a] = in->first[a] - p * in->jump[a];
    out->jump[a] = in->jump[a] * s;
}

cnn_status vis_receptive_fields_of_nodes(const cnn_node_info *nodes, int n, vis_rf *rf) {
    if (n < 1 || nodes[0].op != CNN_OP_INPUT)
        return cnn_fail(CNN_ERR_ARG, "receptive fields: node 0 must be the input");
    int in_h = nodes[0].h, in_w = nodes[0].w;
    rf[0] = (vis_rf){0, {1, 1}, {1, 1}, {0, 0}};
    for (int i = 1; i < n; i++) {
        const cnn_node_info *node = &nodes[i];
        for (int j = 0; j < node->n_inputs; j++) {
            if (node->inputs[j] < 0 || node->inputs[j] >= i)
                return cnn_fail(CNN_ERR_ARG, "receptive fields: node %d '%s' reads node %d, "
                                "expected an earlier node (0..%d)", i, node->name,
                                node->inputs[j], i - 1);
        }
        if (node->n_inputs < 1)
            return cnn_fail(CNN_ERR_ARG, "receptive fields: node %d '%s' (%s) has no input", i,
                            node->name, cnn_op_name(node->op));
        const vis_rf *a = &rf[node->inputs[0]];
        vis_rf *out = &rf[i];
        *out = *a;
        if (a->global && node->op != CNN_OP_ADD) {
            *out = global_field(in_h, in_w);
            continue;
        }
        switch (node->op) {
        case CNN_OP_CONV2D:
        case CNN_OP_MAXPOOL:
        case CNN_OP_AVGPOOL: {
            const cnn_window *w = &node->window;
            for (int ax = 0; ax < 2; ax++) {
                int d = w->dilation[ax] > 0 ? w->dilation[ax] : 1;   // avgpool has none
                if (w->kernel[ax] < 1 || w->stride[ax] < 1)
                    return cnn_fail(CNN_ERR_ARG, "receptive fields: node %d '%s' (%s): kernel "
                                    "%d, stride %d, expected both >= 1", i, node->name,
                                    cnn_op_name(node->op), w->kernel[ax], w->stride[ax]);
                apply_window(out, a, ax, w->kernel[ax], w->stride[ax], w->padding[ax], d);
            }
            break;
        }
        case CNN_OP_SHORTCUT_A: {
            int s = shortcut_stride(node, &nodes[node->inputs[0]]);
            if (s < 1)
                return cnn_fail(CNN_ERR_ARG, "receptive fields: node %d '%s' (shortcut_a): no "
                                "stride turns %dx%d into %dx%d", i, node->name,
                                nodes[node->inputs[0]].h, nodes[node->inputs[0]].w, node->h,
                                node->w);
            for (int ax = 0; ax < 2; ax++) apply_window(out, a, ax, 1, s, 0, 1);
            break;
        }
        case CNN_OP_ADD: {
            const vis_rf *b = node->n_inputs > 1 ? &rf[node->inputs[1]] : a;
            if (a->global || b->global || a->jump[0] != b->jump[0] || a->jump[1] != b->jump[1]) {
                *out = global_field(in_h, in_w);
                break;
            }
            for (int ax = 0; ax < 2; ax++) {
                int first = a->first[ax] < b->first[ax] ? a->first[ax] : b->first[ax];
                int end_a = a->first[ax] + a->size[ax], end_b = b->first[ax] + b->size[ax];
                int end = end_a > end_b ? end_a : end_b;   // one past the last pixel
                out->first[ax] = first;
                out->size[ax] = end - first;
            }
            break;
        }
        case CNN_OP_ADAPTIVE_AVGPOOL:
        case CNN_OP_FLATTEN:
        case CNN_OP_LINEAR:
            *out = global_field(in_h, in_w);
            break;
        default:   // batchnorm, relu, dropout, softmax: element-wise
            break;
        }
    }
    return CNN_OK;
}

cnn_status vis_receptive_fields(const cnn_model *model, vis_rf **out) {
    int n = cnn_model_node_count(model);
    cnn_node_info *nodes = malloc(sizeof(cnn_node_info) * (size_t)n);
    vis_rf *rf = malloc(sizeof(vis_rf) * (size_t)n);
    if (!nodes || !rf) {
        free(nodes);
        free(rf);
        return cnn_fail(CNN_ERR_NOMEM, "out of memory for the receptive fields of %d nodes", n);
    }
    for (int i = 0; i < n; i++) cnn_model_node(model, i, &nodes[i]);
    cnn_status st = vis_receptive_fields_of_nodes(nodes, n, rf);
    free(nodes);
    if (st != CNN_OK) {
        free(rf);
        return st;
    }
    *out = rf;
    return CNN_OK;
}
