// select.c - layers by name (containers too) and "0-15,20" style channel selections.
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "select.h"

// Reads a non-negative decimal integer at *p, advancing *p. -1 if there is none.
static long read_index(const char **p) {
    if (!isdigit((unsigned char)**p)) return -1;
    char *end;
    errno = 0;
    long v = strtol(*p, &end, 10);
    if (errno) return -1;
    *p = end;
    return v;
}

cnn_status vis_channel_range_parse(const char *text, int count, const char *what, int **out,
                                   int *n) {
    if (count < 1) return cnn_fail(CNN_ERR_ARG, "%s: the layer has no channels", what);
    int *list = malloc(sizeof(int) * (size_t)count);
    unsigned char *seen = calloc((size_t)count, 1);
    if (!list || !seen) {
        free(list);
        free(seen);
        return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory for %d channels", what, count);
    }
    int k = 0;
    if (strcmp(text, "all") == 0) {
        for (int c = 0; c < count; c++) list[k++] = c;
    } else {
        const char *p = text;
        while (1) {
            long lo = read_index(&p), hi = lo;
            if (lo >= 0 && *p == '-') {
                p++;
                hi = read_index(&p);
            }
            if (lo < 0 || hi < 0 || (*p != ',' && *p != '\0')) {
                free(list);
                free(seen);
                return cnn_fail(CNN_ERR_ARG, "%s '%s': expected 'all' or a list like 0-15,20 "
                                "(inclusive ranges of channel indices)", what, text);
            }
            if (lo > hi) {
                free(list);
                free(seen);
                return cnn_fail(CNN_ERR_ARG, "%s '%s': range %ld-%ld runs backwards (write "
                                "%ld-%ld)", what, text, lo, hi, hi, lo);
            }
            if (hi >= count) {
                free(list);
                free(seen);
                return cnn_fail(CNN_ERR_ARG, "%s '%s': range %ld-%ld is outside the layer's "
                                "channels 0-%d", what, text, lo, hi, count - 1);
            }
            for (long c = lo; c <= hi; c++) {
                if (!seen[c]) list[k++] = (int)c;
                seen[c] = 1;
            }
            if (*p == '\0') break;
            p++;
        }
    }
    free(seen);
    *out = list;
    *n = k;
    return CNN_OK;
}

int vis_find_layer(const cnn_model *model, const char *name) {
    int count = cnn_model_node_count(model);
    size_t len = strlen(name);
    for (int i = 0; i < count; i++) {
        cnn_node_info node;
        cnn_model_node(model, i, &node);
        if (strcmp(node.name, name) == 0) return i;
    }
    int last = -1;
    for (int i = 0; i < count && len > 0; i++) {
        cnn_node_info node;
        cnn_model_node(model, i, &node);
        if (strncmp(node.name, name, len) == 0 && node.name[len] == '.') last = i;
    }
    return last >= 0 ? last : cnn_model_find_node(model, name);
}

int vis_default_layer(const cnn_model *model) {
    int count = cnn_model_node_count(model), best = count - 1;
    for (int i = 1; i < count; i++) {
        cnn_node_info node;
        cnn_model_node(model, i, &node);
        if (node.ndim == 4 && node.h * node.w > 1) best = i;
    }
    return best;
}
