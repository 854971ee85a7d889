// model_write.c - writes a loaded model back as a model file (weights/FORMAT.md), changed by
// one meta key and a set of float32 tensors: what cnn_model_pack needs to store prepared
// weights beside the originals.
//
// The graph is copied byte for byte, the meta dict entry by entry (the one key replaced),
// the tensor table is written afresh: the kept tensors in their original order, then the new
// ones, each at the next multiple of 64 in the data section. The same sequence of bytes is
// produced twice, once into the CRC-32 and once into the file, so the header's checksum is
// known before the first byte is written, and the file goes out in one pass (atomically:
// cnn_write_atomic).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crc32.h"
#include "model.h"
#include "model_format.h"
#include "model_write.h"


static uint64_t align_up(uint64_t x) {
    return (x + DATA_ALIGN - 1) / DATA_ALIGN * DATA_ALIGN;
}

static void put32(uint8_t *p, uint32_t v) {
    for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k));
}

static void put64(uint8_t *p, uint64_t v) {
    for (int k = 0; k < 8; k++) p[k] = (uint8_t)(v >> (8 * k));
}

// Bytes of the dict value at p (a validated file: the loader checked every length).
static size_t value_bytes(const uint8_t *p) {
    const uint8_t *v = p + 1;
    switch (p[0]) {
    case 1: case 2: return 1 + 8;                           // int, float
    case 3: return 1 + 4 + le32(v);                        // string
    case 4: case 5: return 1 + 4 + 8 * (size_t)le32(v);    // int list, float list
    default: {                                              // 6: string list
        size_t n = le32(v), at = 4;
        for (size_t k = 0; k < n; k++) at += 4 + le32(v + at);
        return 1 + at;
    }
    }
}

// The output, as the writer sees it.
typedef struct {
    const cnn_model *m;
    const model_write_changes *ch;
    uint8_t *meta;              // the new meta section
    size_t meta_size;
    const uint8_t *graph;       // the old graph section, in the source file
    size_t graph_size;
    int *kept;                  // [n_kept] indices of the source tensors that stay
    int n_kept;
    uint64_t table_off, table_size, data_off, data_size;
    // where the bytes go: into the CRC (f NULL) or into the file
    FILE *f;
    uint32_t crc;
} writer;

static void emit(writer *w, const void *bytes, size_t n) {
    if (n == 0) return;
    if (w->f) fwrite(bytes, 1, n, w->f);
    else w->crc = crc32_ieee(w->crc, bytes, n);
}

static void emit_zeros(writer *w, uint64_t n) {
    static const uint8_t zeros[DATA_ALIGN];
    while (n > 0) {
        size_t k = n < DATA_ALIGN ? (size_t)n : DATA_ALIGN;
        emit(w, zeros, k);
        n -= k;
    }
}

static void emit_str(writer *w, const char *s) {
    uint8_t len[4];
    put32(len, (uint32_t)strlen(s));
    emit(w, len, 4);
    emit(w, s, strlen(s));
}

// Tensor t of the output (kept ones first, then the new ones): name, dims, data.
typedef struct {
    const char *name;
    int ndim;
    int64_t dims[4];
    const float *data;
    uint64_t nbytes;
} out_tensor;

static out_tensor tensor_at(const writer *w, int t) {
    out_tensor o;
    if (t < w->n_kept) {
        const cnn_stored_tensor *s = &w->m->tensors[w->kept[t]];
        o.name = s->name;
        o.ndim = s->ndim;
        memcpy(o.dims, s->dims, sizeof o.dims);
        o.data = s->data;
        o.nbytes = 4;
        for (int k = 0; k < s->ndim; k++) o.nbytes *= (uint64_t)s->dims[k];
    } else {
        const model_write_tensor *e = &w->ch->tensors[t - w->n_kept];
        o.name = e->name;
        o.ndim = 1;
        o.dims[0] = (int64_t)e->floats;
        o.data = e->data;
        o.nbytes = 4 * (uint64_t)e->floats;
    }
    return o;
}

// The whole file from offset 16 on (what the CRC covers), tensors in order.
static void emit_file(writer *w) {
    int n_tensors = w->n_kept + w->ch->n_tensors;
    uint8_t head[HEADER_BYTES - 16] = {0};
    put64(head + 0, w->data_off + w->data_size);   // file size
    put64(head + 8, HEADER_BYTES);                  // meta
    put64(head + 16, w->meta_size);
    put64(head + 24, HEADER_BYTES + w->meta_size);  // graph
    put64(head + 32, w->graph_size);
    put64(head + 40, w->table_off);
    put64(head + 48, w->table_size);
    put64(head + 56, w->data_off);
    put64(head + 64, w->data_size);
    emit(w, head, sizeof head);
    emit(w, w->meta, w->meta_size);
    emit(w, w->graph, w->graph_size);

    uint8_t word[8];
    put32(word, (uint32_t)n_tensors);
    emit(w, word, 4);
    uint64_t at = 0;   // inside the data section
    for (int t = 0; t < n_tensors; t++) {
        out_tensor o = tensor_at(w, t);
        at = align_up(at);
        emit_str(w, o.name);
        uint8_t type[2] = {DTYPE_F32, (uint8_t)o.ndim};
        emit(w, type, 2);
        for (int k = 0; k < o.ndim; k++) {
            put64(word, (uint64_t)o.dims[k]);
            emit(w, word, 8);
        }
        put64(word, w->data_off + at);
        emit(w, word, 8);
        put64(word, o.nbytes);
        emit(w, word, 8);
        at += o.nbytes;
    }
    emit_zeros(w, w->data_off - (w->table_off + w->table_size));

    at = 0;
    for (int t = 0; t < n_tensors; t++) {
        out_tensor o = tensor_at(w, t);
        emit_zeros(w, align_up(at) - at);
        at = align_up(at);
        emit(w, o.data, (size_t)o.nbytes);
        at += o.nbytes;
    }
}

static cnn_status write_fn(void *user, FILE *f) {
    writer *w = user;
    uint8_t start[16];
    memcpy(start, FILE_MAGIC, 8);
    put32(start + 8, FILE_VERSION);
    put32(start + 12, w->crc);
    fwrite(start, 1, sizeof start, f);
    w->f = f;
    emit_file(w);
    return CNN_OK;   // (write errors: cnn_write_atomic checks the stream)
}

// The new meta section: the old entries but `key`, then key = value.
static cnn_status build_meta(writer *w, const char *path) {
    const uint8_t *file = w->m->file;
    const uint8_t *meta = file + le64(file + 24);
    uint32_t count = le32(meta), kept = 0;
    size_t key_len = strlen(w->ch->meta_key), value_len = strlen(w->ch->meta_value);
    size_t cap = le64(file + 32) + 4 + key_len + 1 + 4 + value_len;
    if (!(w->meta = malloc(cap))) return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", path);
    size_t out = 4, at = 4;
    for (uint32_t k = 0; k < count; k++) {
        size_t entry = 4 + le32(meta + at);
        entry += value_bytes(meta + at + entry);
        int same = le32(meta + at) == key_len && memcmp(meta + at + 4, w->ch->meta_key, key_len) == 0;
        if (!same) {
            memcpy(w->meta + out, meta + at, entry);
            out += entry;
            kept++;
        }
        at += entry;
    }
    if (kept + 1 > MAX_DICT_ENTRIES) {
        return cnn_fail(CNN_ERR_LIMIT, "%s: the meta dict would have %u keys, at most %d",
                        path, kept + 1, MAX_DICT_ENTRIES);
    }
    put32(w->meta, kept + 1);
    put32(w->meta + out, (uint32_t)key_len);
    memcpy(w->meta + out + 4, w->ch->meta_key, key_len);
    out += 4 + key_len;
    w->meta[out++] = 3;   // a string
    put32(w->meta + out, (uint32_t)value_len);
    memcpy(w->meta + out + 4, w->ch->meta_value, value_len);
    w->meta_size = out + 4 + value_len;
    return CNN_OK;
}

cnn_status model_write_changed(const cnn_model *m, const char *path,
                               const model_write_changes *changes) {
    if (!m->file) return cnn_fail(CNN_ERR_ARG, "%s: the model's file bytes are gone", m->path);
    writer w = {.m = m, .ch = changes};
    cnn_status st = build_meta(&w, path);
    if (st != CNN_OK) {
        free(w.meta);
        return st;
    }
    w.graph = m->file + le64(m->file + 40);
    w.graph_size = (size_t)le64(m->file + 48);
    w.kept = malloc(((size_t)m->n_tensors + 1) * sizeof *w.kept);
    if (!w.kept) {
        free(w.meta);
        return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t drop_len = changes->drop_prefix ? strlen(changes->drop_prefix) : 0;
    for (int t = 0; t < m->n_tensors; t++) {
        if (drop_len && strncmp(m->tensors[t].name, changes->drop_prefix, drop_len) == 0)
            continue;
        w.kept[w.n_kept++] = t;
    }
    if (w.n_kept + changes->n_tensors > MAX_TENSORS) {
        free(w.kept);
        free(w.meta);
        return cnn_fail(CNN_ERR_LIMIT, "%s: %d tensors, at most %d", path,
                        w.n_kept + changes->n_tensors, MAX_TENSORS);
    }
    for (int t = 0; t < changes->n_tensors; t++) {
        if (strlen(changes->tensors[t].name) > MAX_STR_BYTES) {
            free(w.kept);
            free(w.meta);
            return cnn_fail(CNN_ERR_LIMIT, "%s: tensor name '%.60s...' is longer than %d bytes",
                            path, changes->tensors[t].name, MAX_STR_BYTES);
        }
    }
    // The table's size does not depend on the offsets in it: measure it, then lay out the data.
    w.table_off = HEADER_BYTES + w.meta_size + w.graph_size;
    w.table_size = 4;
    uint64_t at = 0;
    for (int t = 0; t < w.n_kept + changes->n_tensors; t++) {
        out_tensor o = tensor_at(&w, t);
        w.table_size += 4 + strlen(o.name) + 2 + 8 * (uint64_t)o.ndim + 16;
        at = align_up(at) + o.nbytes;
    }
    w.data_off = align_up(w.table_off + w.table_size);
    w.data_size = at;
    emit_file(&w);   // into the CRC
    st = cnn_write_atomic(path, write_fn, &w);
    free(w.kept);
    free(w.meta);
    return st;
}
