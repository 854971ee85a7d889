// explain.c - attribution methods on top of cnn_backward (see explain.h for the methods).
//
// Every method starts from a "seed": a gradient of 1 at the explained element of the target
// node's output (a class logit or a neuron) and 0 elsewhere, per image; cnn_backward carries it
// to the input (saliency, DeconvNet, guided) or to a layer's maps (CAM, Grad-CAM).
//
// Dims legend: N images of the last run; C,H,W the network input; K,h,w the maps of the
// CAM / Grad-CAM layer.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "explain.h"

static const char *const method_names[VIS_EXPLAIN_COUNT] = {
    "saliency", "deconvnet", "guided", "cam", "gradcam", "guided-gradcam",
};

const char *vis_explain_method_name(vis_explain_method method) {
    return method >= 0 && method < VIS_EXPLAIN_COUNT ? method_names[method] : NULL;
}

cnn_status vis_explain_method_parse(const char *name, vis_explain_method *out) {
    for (int i = 0; i < VIS_EXPLAIN_COUNT; i++) {
        if (strcmp(name, method_names[i]) == 0) {
            *out = (vis_explain_method)i;
            return CNN_OK;
        }
    }
    return cnn_fail(CNN_ERR_ARG, "unknown method '%s' (saliency, deconvnet, guided, cam, "
                    "gradcam, guided-gradcam)", name);
}

int vis_explain_is_heatmap(vis_explain_method method) {
    return method == VIS_EXPLAIN_SALIENCY || method == VIS_EXPLAIN_CAM ||
           method == VIS_EXPLAIN_GRADCAM;
}

int vis_explain_uses_layer(vis_explain_method method) {
    return method == VIS_EXPLAIN_CAM || method == VIS_EXPLAIN_GRADCAM ||
           method == VIS_EXPLAIN_GUIDED_GRADCAM;
}

// ---------------------------------------------------------------------------------------------
// Finding the nodes the methods need.

static cnn_node_info node_info(const cnn_model *m, int i) {
    cnn_node_info nd;
    cnn_model_node(m, i, &nd);
    return nd;
}

int vis_explain_score_node(const cnn_model *model) {
    int out = cnn_model_output_node(model);
    cnn_node_info nd = node_info(model, out);
    return nd.op == CNN_OP_SOFTMAX ? nd.inputs[0] : out;
}

// Nodes the walk back from the classifier to the maps passes through.
static int is_pool_or_view(cnn_op op) {
    return op == CNN_OP_FLATTEN || op == CNN_OP_DROPOUT || op == CNN_OP_ADAPTIVE_AVGPOOL ||
           op == CNN_OP_AVGPOOL || op == CNN_OP_MAXPOOL;
}

int vis_explain_default_layer(const cnn_model *model) {
    int count = cnn_model_node_count(model);
    for (int i = 1; i < count; i++) {
        cnn_node_info nd = node_info(model, i);
        if (nd.ndim != 2) continue;
        int cur = nd.op == CNN_OP_FLATTEN || nd.op == CNN_OP_DROPOUT ? i : nd.inputs[0];
        cnn_node_info c = node_info(model, cur);
        while (cur > 0 && is_pool_or_view(c.op)) {
            cur = c.inputs[0];
            c = node_info(model, cur);
        }
        return cur > 0 && c.ndim == 4 ? cur : -1;
    }
    return -1;
}

// The CAM layer and the global average pool that reads it; -1 with an error otherwise.
static int find_cam_layer(const cnn_model *m, int *gap_out) {
    const cnn_model_info *info = cnn_model_get_info(m);
    int score = vis_explain_score_node(m);
    cnn_node_info fc = node_info(m, score);
    if (fc.op != CNN_OP_LINEAR) {
        cnn_fail(CNN_ERR_ARG, "cam: %s: the class scores come from '%s' (%s), not a linear "
                 "layer; CAM needs a network ending in global average pooling + linear (Zhou "
                 "et al. 2016); use gradcam", info->name, fc.name, cnn_op_name(fc.op));
        return -1;
    }
    int cur = fc.inputs[0];
    cnn_node_info nd = node_info(m, cur);
    while (nd.op == CNN_OP_FLATTEN || nd.op == CNN_OP_DROPOUT) {
        cur = nd.inputs[0];
        nd = node_info(m, cur);
    }
    cnn_node_info in = nd.n_inputs > 0 ? node_info(m, nd.inputs[0]) : nd;
    int global = nd.ndim == 4 && nd.h == 1 && nd.w == 1 &&
                 (nd.op == CNN_OP_ADAPTIVE_AVGPOOL ||
                  (nd.op == CNN_OP_AVGPOOL && nd.window.kernel[0] >= in.h &&
                   nd.window.kernel[1] >= in.w && nd.window.padding[0] == 0 &&
                   nd.window.padding[1] == 0));
    if (!global) {
        cnn_fail(CNN_ERR_ARG, "cam: %s: the final linear layer '%s' reads '%s' (%s, %dx%d), not "
                 "a global average pool; CAM needs a network ending in global average pooling "
                 "+ linear (Zhou et al. 2016), as the ResNets; use gradcam", info->name, fc.name,
                 nd.name, cnn_op_name(nd.op), nd.h, nd.w);
        return -1;
    }
    if (in.ndim != 4) {
        cnn_fail(CNN_ERR_ARG, "cam: %s: the global pool '%s' reads no maps", info->name, nd.name);
        return -1;
    }
    *gap_out = cur;
    return nd.inputs[0];
}

int vis_explain_cam_layer(const cnn_model *model) {
    int gap;
    return find_cam_layer(model, &gap);
}

cnn_status vis_explain_neuron(const cnn_session *s, int node, int channel, int y, int x,
                              int *index) {
    const cnn_model *m = cnn_session_model(s);
    const cnn_tensor *t = cnn_session_output(s, node);
    if (!t) return CNN_ERR_ARG;
    cnn_node_info nd = node_info(m, node);
    int N = (int)t->dims[0], h = t->ndim == 4 ? (int)t->dims[2] : 1;
    int w = t->ndim == 4 ? (int)t->dims[3] : 1, c = (int)t->dims[1];
    if (channel < 0 || channel >= c)
        return cnn_fail(CNN_ERR_ARG, "neuron %s:%d: '%s' has channels 0..%d", nd.name, channel,
                        nd.name, c - 1);
    int strongest = y < 0 && x < 0;
    if (!strongest && (y < 0 || y >= h || x < 0 || x >= w))
        return cnn_fail(CNN_ERR_ARG, "neuron %s:%d:%d:%d: '%s' is %dx%d (y 0..%d, x 0..%d)",
                        nd.name, channel, y, x, nd.name, h, w, h - 1, w - 1);
    size_t per_image = (size_t)c * h * w;
    for (int n = 0; n < N; n++) {
        const float *map = t->data + n * per_image + (size_t)channel * h * w;   // [h,w]
        int best = strongest ? 0 : y * w + x;
        if (strongest)
            for (int i = 1; i < h * w; i++)
                if (map[i] > map[best]) best = i;
        index[n] = channel * h * w + best;
    }
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------
// Resizing (torch.nn.functional.interpolate, mode="bilinear", align_corners=False).

// Source position of output index `o` along an axis scaled by `scale` = in/out, clamped at 0,
// split into the two neighbours and the weight of the second.
static void source_index(int o, float scale, int in, int *i0, int *i1, float *frac) {
    float src = scale * ((float)o + 0.5f) - 0.5f;
    if (src < 0) src = 0;
    int i = (int)src;
    if (i > in - 1) i = in - 1;
    *i0 = i;
    *i1 = i < in - 1 ? i + 1 : i;
    *frac = src - (float)i;
}

void vis_resize_bilinear(float *out, const float *inp, int planes, int h, int w, int H, int W) {
    // out is (planes,H,W), inp is (planes,h,w)
    float scale_y = (float)h / (float)H, scale_x = (float)w / (float)W;
    for (int p = 0; p < planes; p++) {
        const float *a = inp + (size_t)p * h * w;
        float *o = out + (size_t)p * H * W;
        for (int Y = 0; Y < H; Y++) {
            int y0, y1;
            float fy;
            source_index(Y, scale_y, h, &y0, &y1, &fy);
            for (int X = 0; X < W; X++) {
                int x0, x1;
                float fx;
                source_index(X, scale_x, w, &x0, &x1, &fx);
                float top = (1 - fx) * a[y0 * w + x0] + fx * a[y0 * w + x1];
                float bottom = (1 - fx) * a[y1 * w + x0] + fx * a[y1 * w + x1];
                o[(size_t)Y * W + X] = (1 - fy) * top + fy * bottom;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The methods.

// maps[n] = sum_k weights[n,k] * A[n,k] (then ReLU if `rectify`), upsampled to [H,W] into out.
static cnn_status weighted_maps(float *out, const float *weights, const float *A, int N, int K,
                                int h, int w, int H, int W, int rectify) {
    // out is (N,H,W), weights is (N,K), A is (N,K,h,w)
    float *map = malloc(sizeof(float) * (size_t)N * h * w);
    if (!map) return cnn_fail(CNN_ERR_NOMEM, "explain: out of memory");
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < h * w; i++) {
            double sum = 0;
            for (int k = 0; k < K; k++)
                sum += (double)weights[(size_t)n * K + k] * A[((size_t)n * K + k) * h * w + i];
            map[(size_t)n * h * w + i] = (float)(rectify && sum < 0 ? 0 : sum);
        }
    }
    vis_resize_bilinear(out, map, N, h, w, H, W);
    free(map);
    return CNN_OK;
}

// Grad-CAM maps [N,H,W] for `layer`: alpha[n,k] = mean of d score / d A[n,k], then
// ReLU(sum_k alpha A) upsampled.
static cnn_status gradcam(const cnn_session *s, const vis_explain_target *target,
                          const float *seed, int layer, int H, int W, float *out) {
    const cnn_model *m = cnn_session_model(s);
    cnn_node_info L = node_info(m, layer);
    if (L.ndim != 4)
        return cnn_fail(CNN_ERR_ARG, "gradcam: layer '%s' has no spatial maps (its output is "
                        "[N,%d]); choose a convolutional layer", L.name, L.c);
    const cnn_tensor *A = cnn_session_output(s, layer);
    if (!A) return CNN_ERR_ARG;
    int N = (int)A->dims[0], K = L.c, hw = L.h * L.w;
    float *dA = malloc(sizeof(float) * (size_t)N * K * hw);
    float *alpha = malloc(sizeof(float) * (size_t)N * K);
    cnn_status st = CNN_OK;
    if (!dA || !alpha) st = cnn_fail(CNN_ERR_NOMEM, "gradcam: out of memory");
    if (st == CNN_OK) st = cnn_backward(s, target->node, seed, CNN_RELU_PLAIN, layer, dA);
    if (st == CNN_OK) {
        for (size_t nk = 0; nk < (size_t)N * K; nk++) {
            double sum = 0;
            for (int i = 0; i < hw; i++) sum += dA[nk * hw + i];
            alpha[nk] = (float)(sum / hw);
        }
        st = weighted_maps(out, alpha, A->data, N, K, L.h, L.w, H, W, 1);
    }
    free(dA);
    free(alpha);
    return st;
}

// CAM maps [N,H,W]: sum_k w[class,k] A[n,k], upsampled. The weights of the explained class are
// read as d score / d (pooled feature k), which is exactly w[class,k] through linear, flatten
// and dropout.
static cnn_status cam(const cnn_session *s, const vis_explain_target *target, const float *seed,
                      int layer, int H, int W, float *out) {
    const cnn_model *m = cnn_session_model(s);
    int gap, cam_layer = find_cam_layer(m, &gap);
    if (cam_layer < 0) return CNN_ERR_ARG;
    if (layer >= 0 && layer != cam_layer)
        return cnn_fail(CNN_ERR_ARG, "cam: the maps are those the global average pool reads, "
                        "'%s'; not '%s' (use gradcam for other layers)",
                        node_info(m, cam_layer).name, node_info(m, layer).name);
    if (target->node != vis_explain_score_node(m))
        return cnn_fail(CNN_ERR_ARG, "cam explains class scores ('%s'), not '%s'; use gradcam "
                        "or a gradient method for a neuron",
                        node_info(m, vis_explain_score_node(m)).name,
                        node_info(m, target->node).name);
    cnn_node_info L = node_info(m, cam_layer);
    const cnn_tensor *A = cnn_session_output(s, cam_layer);
    if (!A) return CNN_ERR_ARG;
    int N = (int)A->dims[0];
    float *weights = malloc(sizeof(float) * (size_t)N * L.c);   // [N,K,1,1]
    if (!weights) return cnn_fail(CNN_ERR_NOMEM, "cam: out of memory");
    cnn_status st = cnn_backward(s, target->node, seed, CNN_RELU_PLAIN, gap, weights);
    if (st == CNN_OK) st = weighted_maps(out, weights, A->data, N, L.c, L.h, L.w, H, W, 0);
    free(weights);
    return st;
}

cnn_status vis_explain(const cnn_session *s, vis_explain_method method,
                       const vis_explain_target *target, int layer, float *out) {
    const cnn_model *m = cnn_session_model(s);
    int count = cnn_model_node_count(m);
    if (!vis_explain_method_name(method))
        return cnn_fail(CNN_ERR_ARG, "explain: unknown method %d", (int)method);
    if (target->node <= 0 || target->node >= count)
        return cnn_fail(CNN_ERR_ARG, "explain: target node %d out of range (1..%d)",
                        target->node, count - 1);
    if (layer >= 0 && !vis_explain_uses_layer(method))
        return cnn_fail(CNN_ERR_ARG, "%s: a layer applies to cam, gradcam and guided-gradcam "
                        "only", method_names[method]);
    if (layer >= count)
        return cnn_fail(CNN_ERR_ARG, "explain: layer node %d out of range (%d nodes)", layer,
                        count);
    const cnn_tensor *t = cnn_session_output(s, target->node);
    if (!t) return CNN_ERR_ARG;
    int N = (int)t->dims[0];
    size_t per_target = (size_t)(cnn_tensor_numel(t) / N);
    for (int n = 0; n < N; n++)
        if (target->index[n] < 0 || (size_t)target->index[n] >= per_target)
            return cnn_fail(CNN_ERR_ARG, "explain: image %d: element %d of '%s' out of range "
                            "(0..%zu)", n, target->index[n], node_info(m, target->node).name,
                            per_target - 1);
    cnn_node_info in = node_info(m, 0);
    int C = in.c, H = in.h, W = in.w;
    size_t per_image = (size_t)C * H * W;

    float *seed = calloc((size_t)N * per_target, sizeof(float));
    float *grad = NULL, *map = NULL;
    if (!seed) return cnn_fail(CNN_ERR_NOMEM, "explain: out of memory");
    for (int n = 0; n < N; n++) seed[n * per_target + (size_t)target->index[n]] = 1.0f;

    cnn_status st = CNN_OK;
    switch (method) {
    case VIS_EXPLAIN_SALIENCY:
        grad = malloc(sizeof(float) * N * per_image);
        if (!grad) { st = cnn_fail(CNN_ERR_NOMEM, "saliency: out of memory"); break; }
        st = cnn_backward(s, target->node, seed, CNN_RELU_PLAIN, 0, grad);
        for (int n = 0; st == CNN_OK && n < N; n++) {
            for (int i = 0; i < H * W; i++) {
                float v = 0;
                for (int c = 0; c < C; c++) v = fmaxf(v, fabsf(grad[n * per_image + (size_t)c * H * W + i]));
                out[(size_t)n * H * W + i] = v;
            }
        }
        break;
    case VIS_EXPLAIN_DECONVNET:
        st = cnn_backward(s, target->node, seed, CNN_RELU_DECONVNET, 0, out);
        break;
    case VIS_EXPLAIN_GUIDED:
        st = cnn_backward(s, target->node, seed, CNN_RELU_GUIDED, 0, out);
        break;
    case VIS_EXPLAIN_CAM:
        st = cam(s, target, seed, layer, H, W, out);
        break;
    case VIS_EXPLAIN_GRADCAM:
    case VIS_EXPLAIN_GUIDED_GRADCAM: {
        int L = layer >= 0 ? layer : vis_explain_default_layer(m);
        if (L < 0) {
            st = cnn_fail(CNN_ERR_ARG, "gradcam: %s has no convolutional layer before its "
                          "classifier; name one with a layer", cnn_model_get_info(m)->name);
            break;
        }
        if (method == VIS_EXPLAIN_GRADCAM) {
            st = gradcam(s, target, seed, L, H, W, out);
            break;
        }
        map = malloc(sizeof(float) * (size_t)N * H * W);
        if (!map) { st = cnn_fail(CNN_ERR_NOMEM, "guided-gradcam: out of memory"); break; }
        st = gradcam(s, target, seed, L, H, W, map);
        if (st == CNN_OK) st = cnn_backward(s, target->node, seed, CNN_RELU_GUIDED, 0, out);
        for (int n = 0; st == CNN_OK && n < N; n++)
            for (int c = 0; c < C; c++)
                for (int i = 0; i < H * W; i++)
                    out[n * per_image + (size_t)c * H * W + i] *= map[(size_t)n * H * W + i];
        break;
    }
    case VIS_EXPLAIN_COUNT:
        break;
    }
    free(seed);
    free(grad);
    free(map);
    return st;
}

cnn_status vis_explain_projections(const cnn_session *s, int node, const int *index, float *out) {
    vis_explain_target target = {node, index};
    return vis_explain(s, VIS_EXPLAIN_DECONVNET, &target, -1, out);
}

cnn_status vis_explain_projection_tile(uint8_t *tile, const float *projection, int C, int H,
                                       int W, int y0, int x0, int y1, int x1) {
    int th = y1 - y0 + 1, tw = x1 - x0 + 1;
    if (th < 1 || tw < 1)
        return cnn_fail(CNN_ERR_ARG, "projection tile: empty box (%d,%d)-(%d,%d)", y0, x0, y1, x1);
    float *crop = calloc((size_t)C * th * tw, sizeof(float));   // [C,th,tw], 0 outside
    if (!crop) return cnn_fail(CNN_ERR_NOMEM, "projection tile: out of memory");
    for (int c = 0; c < C; c++)
        for (int y = y0 > 0 ? y0 : 0; y <= y1 && y < H; y++)
            for (int x = x0 > 0 ? x0 : 0; x <= x1 && x < W; x++)
                crop[((size_t)c * th + (y - y0)) * tw + (x - x0)] =
                    projection[((size_t)c * H + y) * W + x];
    vis_explain_gradient_rgb(tile, crop, C, th, tw);
    free(crop);
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------
// Pictures.

void vis_explain_heatmap_rgb(uint8_t *rgb, const float *heatmap, const uint8_t *pixels, int C,
                             int H, int W, float alpha) {
    float lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < H * W; i++) {
        lo = fminf(lo, heatmap[i]);
        hi = fmaxf(hi, heatmap[i]);
    }
    float range = hi > lo ? hi - lo : 1.0f;
    for (int i = 0; i < H * W; i++) {
        uint8_t colour[3];
        vis_colormap_viridis((heatmap[i] - lo) / range, colour);
        for (int k = 0; k < 3; k++) {
            float image = pixels ? pixels[(size_t)i * C + (C == 3 ? k : 0)] : 0.0f;
            float v = (1 - alpha) * image + alpha * colour[k];
            rgb[(size_t)i * 3 + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5f);
        }
    }
}

static int compare_floats(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void vis_explain_gradient_rgb(uint8_t *rgb, const float *gradient, int C, int H, int W) {
    size_t n = (size_t)C * H * W;
    float *mag = malloc(sizeof(float) * n);
    float s = 0;
    if (mag) {   // without memory: fall back to the maximum
        for (size_t i = 0; i < n; i++) mag[i] = fabsf(gradient[i]);
        qsort(mag, n, sizeof(float), compare_floats);
        s = mag[(size_t)(0.99 * (double)(n - 1))];
        if (!(s > 0)) s = mag[n - 1];
        free(mag);
    } else {
        for (size_t i = 0; i < n; i++) s = fmaxf(s, fabsf(gradient[i]));
    }
    if (!(s > 0)) s = 1;
    for (int i = 0; i < H * W; i++) {
        for (int k = 0; k < 3; k++) {
            float g = gradient[(size_t)(C == 3 ? k : 0) * H * W + i];
            float t = 0.5f + 0.5f * g / s;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            rgb[(size_t)i * 3 + k] = (uint8_t)(255.0f * t + 0.5f);
        }
    }
}

enum { FIGURE_MIN_SIDE = 224, FIGURE_GAP = 8 };

cnn_status vis_explain_figure(vis_canvas *out, vis_explain_method method, const float *result,
                              const uint8_t *pixels, int C, int H, int W, float alpha) {
    int longer = H > W ? H : W;
    int scale = (FIGURE_MIN_SIDE + longer - 1) / longer;
    if (scale < 1) scale = 1;
    int heatmap = vis_explain_is_heatmap(method);
    int panels = heatmap ? 3 : 2;
    int pw = W * scale, ph = H * scale;
    uint8_t *a = malloc((size_t)H * W * 3), *b = malloc((size_t)H * W * 3);
    if (!a || !b) {
        free(a);
        free(b);
        return cnn_fail(CNN_ERR_NOMEM, "explain: out of memory for a figure");
    }
    cnn_status st = vis_canvas_create(out, panels * pw + (panels + 1) * FIGURE_GAP,
                                      ph + 2 * FIGURE_GAP, 255, 255, 255);
    if (st == CNN_OK) {
        vis_canvas_blit(out, FIGURE_GAP, FIGURE_GAP, pixels, W, H, C, scale);
        if (heatmap) {
            vis_explain_heatmap_rgb(a, result, pixels, C, H, W, 1.0f);
            vis_explain_heatmap_rgb(b, result, pixels, C, H, W, alpha);
            vis_canvas_blit(out, 2 * FIGURE_GAP + pw, FIGURE_GAP, a, W, H, 3, scale);
            vis_canvas_blit(out, 3 * FIGURE_GAP + 2 * pw, FIGURE_GAP, b, W, H, 3, scale);
        } else {
            vis_explain_gradient_rgb(a, result, C, H, W);
            vis_canvas_blit(out, 2 * FIGURE_GAP + pw, FIGURE_GAP, a, W, H, 3, scale);
        }
    }
    free(a);
    free(b);
    return st;
}
