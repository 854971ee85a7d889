// backward.c - gradients with respect to activations and the input, over a session's last run.
//
// cnn_backward(s, from, grad_from, rule, to, grad_to) walks the graph from node `from` back to
// node `to` in reverse file order (the file is in topological order, so when a node is reached
// every node that reads it has already been processed):
//   1. the nodes on a path from `to` to `from` are found (descendants of `to` that are also
//      ancestors of `from`); nothing else is touched;
//   2. each of them gets a gradient buffer, zeroed when its first reader adds to it;
//   3. each node, once reached, hands its complete gradient to its inputs on the path with its
//      op's backward kernel (engine/ops/<op>.c), which adds (+=) into the input's buffer; then
//      its own buffer is freed, so only the gradients of a "frontier" are alive at once.
// Weights are the model's own, never the session's folded copies: the gradient through a conv
// with a folded batch norm is the batch norm's scale followed by the plain conv's backward.
//
// Dims legend: N images of the last run; the output of node i is [N, c, h, w] (its info).
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ops.h"

static size_t node_floats(const cnn_node *nd, int N) {
    return (size_t)N * (size_t)nd->c * (size_t)nd->h * (size_t)nd->w;
}

typedef struct {
    const cnn_session *s;
    const cnn_model *m;
    int from, to;
    int N;                       // images of the last run
    cnn_relu_rule rule;
    int reference;               // plain reference kernels only
    const unsigned char *on_path;
    float **grad;                // [n_nodes] gradient of each node's output, or NULL
    float *workspace;            // conv backward scratch, sized to the largest need
} backward_state;

// The output of `node` kept by the last run, which the backward of node `reader` reads; NULL
// after an error that says how to keep it.
static const float *saved_output(const backward_state *b, int node, int reader) {
    const cnn_tensor *t = cnn_session_output(b->s, node);
    if (t) return t->data;
    cnn_fail(CNN_ERR_ARG,
             "%s: backward from '%s' to '%s': the backward of '%s' (%s) reads the output of "
             "'%s' (node %d), which the last run did not keep; create the session with "
             "keep_all = 1 or list node %d in opt.keep",
             b->m->path, b->m->nodes[b->from].name, b->m->nodes[b->to].name,
             b->m->nodes[reader].name, cnn_op_name(b->m->nodes[reader].op),
             b->m->nodes[node].name, node, node);
    return NULL;
}

// The gradient buffer of node i, allocated (zeroed) on first use; NULL when out of memory.
static float *grad_of(backward_state *b, int i) {
    if (!b->grad[i]) b->grad[i] = calloc(node_floats(&b->m->nodes[i], b->N), sizeof(float));
    return b->grad[i];
}

// Adds node i's gradient `dout` into the gradients of its inputs on the path.
static cnn_status backward_node(backward_state *b, int i, const float *dout) {
    const cnn_model *m = b->m;
    const cnn_node *nd = &m->nodes[i];
    int N = b->N;
    size_t count = node_floats(nd, N);
    int a_index = nd->n_inputs > 0 ? nd->inputs[0] : 0;
    const cnn_node *a = &m->nodes[a_index];          // the (first) input
    if (nd->op == CNN_OP_INPUT) return CNN_OK;

    if (nd->op == CNN_OP_ADD) {   // each summand on the path gets dout
        int x = nd->inputs[0], y = nd->inputs[1];
        float *dx = b->on_path[x] ? grad_of(b, x) : NULL;
        float *dy = b->on_path[y] ? grad_of(b, y) : NULL;
        if ((b->on_path[x] && !dx) || (b->on_path[y] && !dy)) goto nomem;
        if (dx && dy) add_backward_ref(dx, dy, dout, count);
        else add_forward_ref(dx ? dx : dy, dx ? dx : dy, dout, count);   // d += dout
        return CNN_OK;
    }
    if (!b->on_path[a_index]) return CNN_OK;
    float *dinp = grad_of(b, a_index);
    if (!dinp) goto nomem;

    switch (nd->op) {
    case CNN_OP_CONV2D:
        if (b->reference)
            conv2d_backward_ref(dinp, dout, nd->p.conv.weight, N, a->c, a->h, a->w, nd->c, nd->h,
                                nd->w, &nd->window);
        else
            conv2d_backward(dinp, dout, nd->p.conv.weight, N, a->c, a->h, a->w, nd->c, nd->h,
                            nd->w, &nd->window, b->workspace);
        break;
    case CNN_OP_BATCHNORM:
        batchnorm_backward_ref(dinp, dout, nd->p.bn.gamma, nd->p.bn.var, nd->p.bn.eps, N, nd->c,
                               nd->h * nd->w);
        break;
    case CNN_OP_RELU: {
        const float *out = NULL;   // DeconvNet ignores the forward pass
        if (b->rule != CNN_RELU_DECONVNET && !(out = saved_output(b, i, i))) return CNN_ERR_ARG;
        relu_backward_ref(dinp, dout, out, count, b->rule);
        break;
    }
    case CNN_OP_MAXPOOL: {
        const float *inp = saved_output(b, a_index, i);   // the switches are found again in it
        if (!inp) return CNN_ERR_ARG;
        maxpool_backward_ref(dinp, dout, inp, N, a->c, a->h, a->w, nd->h, nd->w, &nd->window);
        break;
    }
    case CNN_OP_AVGPOOL:
        avgpool_backward_ref(dinp, dout, N, a->c, a->h, a->w, nd->h, nd->w, &nd->window);
        break;
    case CNN_OP_ADAPTIVE_AVGPOOL:
        adaptive_avgpool_backward_ref(dinp, dout, N, a->c, a->h, a->w, nd->h, nd->w);
        break;
    case CNN_OP_LINEAR:
        linear_backward_ref(dinp, dout, nd->p.linear.weight, N, a->c, nd->c);
        break;
    case CNN_OP_FLATTEN:
    case CNN_OP_DROPOUT:   // identities at inference
        add_forward_ref(dinp, dinp, dout, count);
        break;
    case CNN_OP_SOFTMAX: {
        const float *out = saved_output(b, i, i);
        if (!out) return CNN_ERR_ARG;
        softmax_backward_ref(dinp, dout, out, N, nd->c);
        break;
    }
    case CNN_OP_SHORTCUT_A:
        shortcut_a_backward_ref(dinp, dout, N, a->c, a->h, a->w, nd->p.shortcut.stride,
                                nd->p.shortcut.pad_before, nd->p.shortcut.pad_after);
        break;
    case CNN_OP_INPUT:
    case CNN_OP_ADD:
    case CNN_OP_COUNT:
        break;
    }
    return CNN_OK;
nomem:
    return cnn_fail(CNN_ERR_NOMEM, "%s: backward: out of memory for the gradient of '%s'",
                    m->path, nd->name);
}

cnn_status cnn_backward(const cnn_session *s, int from, const float *grad_from,
                        cnn_relu_rule rule, int to, float *grad_to) {
    const cnn_model *m = cnn_session_model(s);
    int nn = m->n_nodes;
    if (from < 0 || from >= nn || to < 0 || to >= nn)
        return cnn_fail(CNN_ERR_ARG, "%s: backward from node %d to node %d: out of range "
                        "(%d nodes)", m->path, from, to, nn);
    if (rule != CNN_RELU_PLAIN && rule != CNN_RELU_DECONVNET && rule != CNN_RELU_GUIDED)
        return cnn_fail(CNN_ERR_ARG, "%s: backward: unknown ReLU rule %d", m->path, (int)rule);
    if (!grad_from || !grad_to)
        return cnn_fail(CNN_ERR_ARG, "%s: backward: no gradient buffer", m->path);
    const cnn_tensor *t_from = cnn_session_output(s, from);
    if (!t_from)
        return cnn_fail(CNN_ERR_ARG, "%s: backward from '%s': the last run did not keep its "
                        "output (create the session with keep_all = 1 or list node %d in "
                        "opt.keep)", m->path, m->nodes[from].name, from);

    // 1. the path: descendants of `to` (forward) that are ancestors of `from` (backward)
    unsigned char *on_path = calloc((size_t)nn, 2);
    float **grad = calloc((size_t)nn, sizeof(float *));
    if (!on_path || !grad) {
        free(on_path);
        free(grad);
        return cnn_fail(CNN_ERR_NOMEM, "%s: backward: out of memory", m->path);
    }
    unsigned char *ancestor = on_path + nn;
    on_path[to] = 1;
    for (int i = to + 1; i <= from; i++)
        for (int j = 0; j < m->nodes[i].n_inputs; j++) on_path[i] |= on_path[m->nodes[i].inputs[j]];
    ancestor[from] = 1;
    for (int i = from; i > to; i--)
        if (ancestor[i])
            for (int j = 0; j < m->nodes[i].n_inputs; j++) ancestor[m->nodes[i].inputs[j]] = 1;
    for (int i = 0; i < nn; i++) on_path[i] = on_path[i] && ancestor[i];
    if (!on_path[from]) {
        free(on_path);
        free(grad);
        return cnn_fail(CNN_ERR_ARG, "%s: backward from '%s' (node %d) to '%s' (node %d): the "
                        "first does not depend on the second", m->path, m->nodes[from].name,
                        from, m->nodes[to].name, to);
    }

    backward_state b = {.s = s, .m = m, .from = from, .to = to, .N = (int)t_from->dims[0],
                        .rule = rule, .reference = cnn_session_get_options(s)->reference,
                        .on_path = on_path, .grad = grad, .workspace = NULL};
    cnn_status st = CNN_OK;
    size_t ws = 0;
    for (int i = to + 1; i <= from; i++) {
        const cnn_node *nd = &m->nodes[i];
        if (!on_path[i] || nd->op != CNN_OP_CONV2D || b.reference) continue;
        size_t w = conv2d_backward_workspace_floats(m->nodes[nd->inputs[0]].c, nd->c, nd->h,
                                                    nd->w, &nd->window);
        if (w > ws) ws = w;
    }
    if (ws > 0 && !(b.workspace = malloc(ws * sizeof(float))))
        st = cnn_fail(CNN_ERR_NOMEM, "%s: backward: out of memory for the conv workspace "
                      "(%zu MB)", m->path, ws * sizeof(float) >> 20);

    // 2-3. reverse order: each node's gradient is complete when it is reached
    for (int i = from; st == CNN_OK && i > to; i--) {
        if (!on_path[i]) continue;
        const float *dout = i == from ? grad_from : grad[i];
        if (!dout) continue;   // nothing reached it (cannot happen on a path, but be safe)
        st = backward_node(&b, i, dout);
        free(grad[i]);
        grad[i] = NULL;
    }
    if (st == CNN_OK) {
        size_t bytes = node_floats(&m->nodes[to], b.N) * sizeof(float);
        if (to == from) memcpy(grad_to, grad_from, bytes);
        else if (grad[to]) memcpy(grad_to, grad[to], bytes);
        else memset(grad_to, 0, bytes);
    }
    for (int i = 0; i < nn; i++) free(grad[i]);
    free(grad);
    free(on_path);
    free(b.workspace);
    return st;
}
