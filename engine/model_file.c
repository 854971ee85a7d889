// model_file.c - maps a .cnn model file (weights/FORMAT.md), validates all of it, and builds the
// in-memory graph (engine/model.h) with every node's output shape, parameter count and MACs.
//
// The file comes from outside, so every number in it is hostile until checked: all sizes are
// u64 and every sum and product is overflow-checked, every read goes through a cursor that
// knows the end of its section, and every count and string length has a limit. The checks run
// in the order FORMAT.md lists ("What the loader checks"); the first problem stops the load with
// one message naming the file, the section or node, the field and what was expected.
//
// Conventions of the per-node numbers (for one image):
//   params: learned weights and biases (conv2d, linear), gamma + beta (batchnorm); running
//           statistics are buffers, not parameters; every other op has 0.
//   macs:   multiply-accumulates of conv2d (K * C/groups * R * S * OH * OW) and linear
//           (IN * OUT); every other op (batchnorm, pools, add, ...) counts 0.
//
// Dims legend: C input channels, H,W input size, K output channels, R,S kernel size,
// OH,OW output size, F features.
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32.h"
#include "model_format.h"
#include "prepared.h"
#include "model.h"
#include "ops.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
// Model files are little-endian and their weights are used in place.
#error "big-endian hosts are not supported"
#endif

// ---------------------------------------------------------------------------------------------
// The format's constants and limits (FORMAT.md)


// The smallest possible records: they bound a count by its section's size before allocating.
#define MIN_NODE_BYTES 16      // empty op, empty name, u32 n_inputs = 0, u32 attr count = 0
#define MIN_TENSOR_BYTES 30    // empty name, dtype, ndim, one dim, offset, nbytes

// The loader's own sanity limits (not format rules; real networks are far below them).
#define DEFAULT_MAX_MODEL_BYTES (UINT64_C(4) << 30)   // override: CNNSCOPE_MAX_MODEL_BYTES
#define MAX_INPUT_HW 4096
#define MAX_RESIZE 65536
#define MAX_SPATIAL (1 << 20)            // activation H, W; window kernel/stride/padding/dilation
#define MAX_ACTIVATION_ELEMS INT32_MAX   // C*H*W of one image's activation: int indexing is safe

// Value types
enum { V_INT = 1, V_FLOAT = 2, V_STR = 3, V_INTS = 4, V_FLOATS = 5, V_STRS = 6 };

static const char *const op_names[] = {
    [CNN_OP_INPUT] = "input",
    [CNN_OP_CONV2D] = "conv2d",
    [CNN_OP_BATCHNORM] = "batchnorm",
    [CNN_OP_RELU] = "relu",
    [CNN_OP_MAXPOOL] = "maxpool",
    [CNN_OP_AVGPOOL] = "avgpool",
    [CNN_OP_ADAPTIVE_AVGPOOL] = "adaptive_avgpool",
    [CNN_OP_LINEAR] = "linear",
    [CNN_OP_FLATTEN] = "flatten",
    [CNN_OP_ADD] = "add",
    [CNN_OP_DROPOUT] = "dropout",
    [CNN_OP_SOFTMAX] = "softmax",
    [CNN_OP_SHORTCUT_A] = "shortcut_a",
};
_Static_assert(sizeof op_names / sizeof op_names[0] == CNN_OP_COUNT,
               "op_names must name every cnn_op");

const char *cnn_op_name(cnn_op op) {
    if ((int)op < 0 || op >= CNN_OP_COUNT) return NULL;
    return op_names[op];
}

// Inputs each op takes.
static int op_input_count(cnn_op op) {
    switch (op) {
    case CNN_OP_INPUT: return 0;
    case CNN_OP_ADD: return 2;
    default: return 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing state

// A string inside the mapping: not NUL-terminated.
typedef struct {
    const char *p;
    uint32_t len;
} str_view;

// For messages: at most 200 characters of a string from the file.
#define SV_FMT "%.*s"
#define SV_ARG(v) (int)((v).len > 200 ? 200 : (v).len), (v).p

static bool sv_eq(str_view v, const char *s) {
    size_t n = strlen(s);
    return v.len == n && memcmp(v.p, s, n) == 0;
}

// One dict entry. Lists keep a pointer to their validated items and are read on demand.
typedef struct {
    str_view key;
    uint8_t type;               // V_*
    int64_t i;                  // V_INT
    double f;                   // V_FLOAT
    str_view s;                 // V_STR
    uint32_t count;             // V_INTS, V_FLOATS, V_STRS
    const uint8_t *items;       // V_INTS/V_FLOATS: count x 8 bytes; V_STRS: count x str
} value;

typedef struct {
    uint32_t count;
    value entries[MAX_DICT_ENTRIES];
} dict;

typedef struct {
    uint64_t offset, size;
} section;

// Reads one section: [pos, end) are absolute file offsets.
typedef struct {
    const uint8_t *file;
    uint64_t pos, end;
    const char *section;        // "meta", "graph", "tensor table": for messages
} cursor;

// Name -> index hash table (open addressing), so 100000 names resolve in linear time.
typedef struct {
    const char *name;           // NULL = empty slot
    uint32_t len;
    int index;
} name_slot;

typedef struct {
    name_slot *slots;
    size_t mask;                // slot count - 1 (a power of two)
} name_index;

typedef struct {
    uint64_t offset, nbytes;
    int index;
} tensor_span;

typedef struct {
    const char *path;
    const uint8_t *file;
    uint64_t size;
    section meta, graph, table, data;
    char where[400];            // context of messages: "graph node 7 'features.3' (conv2d)"
    const char *dict_key_kind;  // "meta key" or "attribute": for messages
    dict scratch;               // the dict being parsed (meta, then each node's attributes)
    uint64_t *node_offsets;     // [n_nodes] start of each node record (graph pass 1)
    tensor_span *spans;         // [n_tensors]
    name_index node_index, tensor_index;
    uint64_t scanned_lo, scanned_hi;   // the data section as the header gave it, when the CRC ran
    unsigned data_non_finite;   // ... and whether a float in it is NaN or infinite (step 7)
    cnn_model *model;
} loader;

#define TRY(expr)                                  \
    do {                                           \
        cnn_status try_status_ = (expr);           \
        if (try_status_ != CNN_OK) return try_status_; \
    } while (0)

// "path: where: detail" as a CNN_ERR_FORMAT.
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static cnn_status fail(loader *L, const char *fmt, ...) {
    char detail[1200];
    va_list args;
    va_start(args, fmt);
    vsnprintf(detail, sizeof detail, fmt, args);
    va_end(args);
    return cnn_fail(CNN_ERR_FORMAT, "%s: %s: %s", L->path, L->where, detail);
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void set_where(loader *L, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(L->where, sizeof L->where, fmt, args);
    va_end(args);
}

static cnn_status out_of_memory(loader *L, const char *what) {
    return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory while loading (%s)", L->path, what);
}

static double lef64(const uint8_t *p) {
    uint64_t bits = le64(p);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static bool add_overflows(uint64_t a, uint64_t b, uint64_t *sum) {
    return __builtin_add_overflow(a, b, sum);
}

static bool mul_overflows(uint64_t a, uint64_t b, uint64_t *product) {
    return __builtin_mul_overflow(a, b, product);
}

static char *copy_sv(str_view v) {
    char *s = malloc((size_t)v.len + 1);
    if (s) {
        memcpy(s, v.p, v.len);
        s[v.len] = '\0';
    }
    return s;
}

// ---------------------------------------------------------------------------------------------
// Name index

static uint64_t hash_name(const char *s, uint32_t len) {
    uint64_t h = UINT64_C(14695981039346656037);   // FNV-1a
    for (uint32_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * UINT64_C(1099511628211);
    return h;
}

static bool name_index_init(name_index *ix, size_t capacity) {
    size_t slots = 16;
    while (slots < 2 * capacity) slots *= 2;
    ix->slots = calloc(slots, sizeof *ix->slots);
    ix->mask = slots - 1;
    return ix->slots != NULL;
}

// The index stored under `name`, or -1.
static int name_index_find(const name_index *ix, const char *name, uint32_t len) {
    for (size_t i = hash_name(name, len) & ix->mask;; i = (i + 1) & ix->mask) {
        const name_slot *slot = &ix->slots[i];
        if (!slot->name) return -1;
        if (slot->len == len && memcmp(slot->name, name, len) == 0) return slot->index;
    }
}

// `name` must stay alive as long as the index and must not be in it yet; the table is sized
// for every name up front, so it never fills.
static void name_index_add(name_index *ix, const char *name, uint32_t len, int index) {
    size_t i = hash_name(name, len) & ix->mask;
    while (ix->slots[i].name) i = (i + 1) & ix->mask;
    ix->slots[i] = (name_slot){name, len, index};
}

// ---------------------------------------------------------------------------------------------
// Primitive readers: each checks that its bytes lie inside the cursor's section.

static cnn_status take(loader *L, cursor *c, uint64_t n, const char *field, const uint8_t **out) {
    uint64_t left = c->end - c->pos;
    *out = NULL;
    if (n > left) {
        return fail(L, "%s needs %" PRIu64 " bytes at offset %" PRIu64 " but only %" PRIu64
                       " are left in the %s section (truncated or corrupt record)",
                    field, n, c->pos, left, c->section);
    }
    *out = c->file + c->pos;
    c->pos += n;
    return CNN_OK;
}

static cnn_status read_u8(loader *L, cursor *c, const char *field, uint8_t *out) {
    const uint8_t *p;
    TRY(take(L, c, 1, field, &p));
    *out = p[0];
    return CNN_OK;
}

static cnn_status read_u32(loader *L, cursor *c, const char *field, uint32_t *out) {
    const uint8_t *p;
    TRY(take(L, c, 4, field, &p));
    *out = le32(p);
    return CNN_OK;
}

static cnn_status read_u64(loader *L, cursor *c, const char *field, uint64_t *out) {
    const uint8_t *p;
    TRY(take(L, c, 8, field, &p));
    *out = le64(p);
    return CNN_OK;
}

// str: u32 length (<= 4096), then that many bytes, none of them NUL.
static cnn_status read_str(loader *L, cursor *c, const char *field, str_view *out) {
    uint32_t len;
    TRY(read_u32(L, c, field, &len));
    if (len > MAX_STR_BYTES) {
        return fail(L, "%s has string length %" PRIu32 ", above the limit of %d bytes", field,
                    len, MAX_STR_BYTES);
    }
    const uint8_t *p;
    TRY(take(L, c, len, field, &p));
    if (memchr(p, '\0', len)) {
        return fail(L, "%s contains a NUL byte (strings must not)", field);
    }
    *out = (str_view){(const char *)p, len};
    return CNN_OK;
}

// value: u8 type, then the payload of that type.
static cnn_status read_value(loader *L, cursor *c, const char *field, value *v) {
    TRY(read_u8(L, c, field, &v->type));
    const uint8_t *p;
    switch (v->type) {
    case V_INT:
        TRY(take(L, c, 8, field, &p));
        v->i = (int64_t)le64(p);
        return CNN_OK;
    case V_FLOAT:
        TRY(take(L, c, 8, field, &p));
        v->f = lef64(p);
        return CNN_OK;
    case V_STR:
        return read_str(L, c, field, &v->s);
    case V_INTS:
    case V_FLOATS:
        TRY(read_u32(L, c, field, &v->count));
        if (v->count > MAX_NUM_LIST) {
            return fail(L, "%s is a list of %" PRIu32 " numbers, above the limit of %d", field,
                        v->count, MAX_NUM_LIST);
        }
        return take(L, c, 8 * (uint64_t)v->count, field, &v->items);
    case V_STRS:
        TRY(read_u32(L, c, field, &v->count));
        if (v->count > MAX_STR_LIST) {
            return fail(L, "%s is a list of %" PRIu32 " strings, above the limit of %d", field,
                        v->count, MAX_STR_LIST);
        }
        v->items = c->file + c->pos;
        for (uint32_t k = 0; k < v->count; k++) {
            str_view ignored;
            TRY(read_str(L, c, field, &ignored));
        }
        return CNN_OK;
    default:
        return fail(L, "%s has value type %u; known types are 1 int, 2 float, 3 string, "
                       "4 int list, 5 float list, 6 string list",
                    field, v->type);
    }
}

// dict: u32 count (<= 256), then count x (str key, value); keys unique. Fills L->scratch.
static cnn_status read_dict(loader *L, cursor *c, const char *what) {
    dict *d = &L->scratch;
    d->count = 0;
    char field[300];
    snprintf(field, sizeof field, "%s count", what);
    uint32_t count;
    TRY(read_u32(L, c, field, &count));
    if (count > MAX_DICT_ENTRIES) {
        return fail(L, "%s has %" PRIu32 " entries, above the limit of %d", what, count,
                    MAX_DICT_ENTRIES);
    }
    for (uint32_t k = 0; k < count; k++) {
        value *v = &d->entries[k];
        memset(v, 0, sizeof *v);
        snprintf(field, sizeof field, "%s entry %" PRIu32 " key", what, k);
        TRY(read_str(L, c, field, &v->key));
        snprintf(field, sizeof field, "%s '" SV_FMT "'", L->dict_key_kind, SV_ARG(v->key));
        for (uint32_t j = 0; j < k; j++) {
            if (d->entries[j].key.len == v->key.len &&
                memcmp(d->entries[j].key.p, v->key.p, v->key.len) == 0) {
                return fail(L, "%s appears twice (keys must be unique)", field);
            }
        }
        TRY(read_value(L, c, field, v));
        d->count = k + 1;
    }
    return CNN_OK;
}

// The string at *cursor_pos in a string list, advancing past it (validated when it was read).
static str_view str_list_item(const uint8_t **cursor_pos) {
    const uint8_t *p = *cursor_pos;
    str_view s = {(const char *)p + 4, le32(p)};
    *cursor_pos = p + 4 + s.len;
    return s;
}

// ---------------------------------------------------------------------------------------------
// Typed access to the parsed dict, with messages that say what was expected.

static const char *value_type_name(uint8_t type) {
    switch (type) {
    case V_INT: return "an int";
    case V_FLOAT: return "a float";
    case V_STR: return "a string";
    case V_INTS: return "an int list";
    case V_FLOATS: return "a float list";
    case V_STRS: return "a string list";
    default: return "of unknown type";
    }
}

static const value *dict_find(const dict *d, const char *key) {
    for (uint32_t k = 0; k < d->count; k++) {
        if (sv_eq(d->entries[k].key, key)) return &d->entries[k];
    }
    return NULL;
}

// The entry `key` of type `type` ("expected" describes it for the message). Ints are accepted
// where floats are expected: Python writers encode 0 and [0, 1] as ints.
static cnn_status dict_get(loader *L, const char *key, uint8_t type, const char *expected,
                           const value **out) {
    const value *v = dict_find(&L->scratch, key);
    if (!v) return fail(L, "missing %s '%s' (expected %s)", L->dict_key_kind, key, expected);
    bool ok = v->type == type || (type == V_FLOAT && v->type == V_INT) ||
              (type == V_FLOATS && v->type == V_INTS);
    if (!ok) {
        return fail(L, "%s '%s' is %s, expected %s", L->dict_key_kind, key,
                    value_type_name(v->type), expected);
    }
    *out = v;
    return CNN_OK;
}

static int64_t list_int(const value *v, uint32_t k) {
    return (int64_t)le64(v->items + 8 * (size_t)k);
}

static double list_float(const value *v, uint32_t k) {
    return v->type == V_INTS ? (double)list_int(v, k) : lef64(v->items + 8 * (size_t)k);
}

static double value_float(const value *v) {
    return v->type == V_INT ? (double)v->i : v->f;
}

// An int in [lo, hi].
static cnn_status get_int(loader *L, const char *key, int64_t lo, int64_t hi, int *out) {
    char expected[96];
    snprintf(expected, sizeof expected, "an int in [%" PRId64 ", %" PRId64 "]", lo, hi);
    const value *v;
    TRY(dict_get(L, key, V_INT, expected, &v));
    if (v->i < lo || v->i > hi) {
        return fail(L, "%s '%s' is %" PRId64 ", expected %s", L->dict_key_kind, key, v->i,
                    expected);
    }
    *out = (int)v->i;
    return CNN_OK;
}

// An int list of exactly `n` entries, each in [lo, hi].
static cnn_status get_ints(loader *L, const char *key, uint32_t n, const char *layout,
                           int64_t lo, int64_t hi, int *out) {
    char expected[160];
    snprintf(expected, sizeof expected, "an int list %s of ints in [%" PRId64 ", %" PRId64 "]",
             layout, lo, hi);
    const value *v;
    TRY(dict_get(L, key, V_INTS, expected, &v));
    if (v->count != n) {
        return fail(L, "%s '%s' has %" PRIu32 " entries, expected %s", L->dict_key_kind, key,
                    v->count, expected);
    }
    for (uint32_t k = 0; k < n; k++) {
        int64_t x = list_int(v, k);
        if (x < lo || x > hi) {
            return fail(L, "%s '%s' entry %" PRIu32 " is %" PRId64 ", expected %s",
                        L->dict_key_kind, key, k, x, expected);
        }
        out[k] = (int)x;
    }
    return CNN_OK;
}

// A finite float (an int is accepted).
static cnn_status get_float(loader *L, const char *key, double *out) {
    const value *v;
    TRY(dict_get(L, key, V_FLOAT, "a float", &v));
    *out = value_float(v);
    if (!isfinite(*out)) {
        return fail(L, "%s '%s' is %g, expected a finite number", L->dict_key_kind, key, *out);
    }
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------
// Step 1: the header, size and checksum.

static uint64_t process_max_model_bytes = 0;   // cnn_set_max_model_bytes; 0 = not set

void cnn_set_max_model_bytes(int64_t max_bytes) {
    process_max_model_bytes = max_bytes > 0 ? (uint64_t)max_bytes : 0;
}

// The limit: set by cnn_set_max_model_bytes, else CNNSCOPE_MAX_MODEL_BYTES, else the default.
static cnn_status max_model_bytes(uint64_t *out) {
    const char *env = getenv("CNNSCOPE_MAX_MODEL_BYTES");
    *out = DEFAULT_MAX_MODEL_BYTES;
    if (process_max_model_bytes) {
        *out = process_max_model_bytes;
        return CNN_OK;
    }
    if (!env || !*env) return CNN_OK;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(env, &end, 10);
    if (errno || *end || env[0] < '0' || env[0] > '9' || v == 0) {
        return cnn_fail(CNN_ERR_ARG,
                        "CNNSCOPE_MAX_MODEL_BYTES='%s' is not a positive byte count", env);
    }
    *out = v;
    return CNN_OK;
}

static int any_non_finite(const float *x, int64_t n);

// The CRC's visitor (crc32_ieee_visit): does the part of this block that lies in the data
// section hold a NaN or an infinity? `offset` counts from file byte 16, where the CRC starts.
// Every block starts at 16 + a multiple of 64, so with the data section at a multiple of 64
// (step 2 refuses any other) no float straddles two blocks.
static unsigned visit_data_non_finite(void *ctx, size_t offset, const unsigned char *block,
                                      size_t len) {
    const loader *L = ctx;
    uint64_t start = 16 + (uint64_t)offset, end = start + len;
    uint64_t lo = start > L->scanned_lo ? start : L->scanned_lo;
    uint64_t hi = end < L->scanned_hi ? end : L->scanned_hi;
    if (lo >= hi || L->scanned_lo % DATA_ALIGN != 0) return 0;   // (a misaligned file fails step 2)
    return (unsigned)any_non_finite((const float *)(block + (lo - start)), (int64_t)(hi - lo) / 4);
}

static cnn_status check_header(loader *L) {
    const uint8_t *h = L->file;
    if (memcmp(h, FILE_MAGIC, 8) != 0) {
        return cnn_fail(CNN_ERR_FORMAT,
                        "%s: not a cnnscope model: bad magic (the file starts with bytes "
                        "%02x %02x %02x %02x %02x %02x %02x %02x, expected \"%s\")",
                        L->path, h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], FILE_MAGIC);
    }
    uint32_t version = le32(h + 8);
    if (version != FILE_VERSION) {
        return cnn_fail(CNN_ERR_FORMAT,
                        "%s: format version %" PRIu32 " is not supported (this engine reads "
                        "version %d; re-convert the model with scripts/convert.py)",
                        L->path, version, FILE_VERSION);
    }
    uint64_t stated = le64(h + 16);
    if (stated > L->size) {
        return cnn_fail(CNN_ERR_FORMAT, "%s: truncated: header says %" PRIu64
                                        " bytes, file has %" PRIu64,
                        L->path, stated, L->size);
    }
    if (stated < L->size) {
        return cnn_fail(CNN_ERR_FORMAT, "%s: size mismatch: header says %" PRIu64
                                        " bytes, file has %" PRIu64 " (extra bytes at the end)",
                        L->path, stated, L->size);
    }
    uint32_t stored = le32(h + 12);
    // The data section's floats are checked for NaN and infinity (step 7) on the same pass
    // over memory: one read of a 240 MB file from DRAM instead of two (~10 ms).
    uint64_t data_offset = le64(h + 72), data_size = le64(h + 80);
    L->scanned_lo = data_offset < L->size ? data_offset : L->size;
    L->scanned_hi = data_size < L->size - L->scanned_lo ? L->scanned_lo + data_size : L->size;
    uint32_t computed = crc32_ieee_visit(0, h + 16, (size_t)(L->size - 16), visit_data_non_finite,
                                         L, &L->data_non_finite);
    if (stored != computed) {
        return cnn_fail(CNN_ERR_FORMAT,
                        "%s: checksum mismatch (stored 0x%08" PRIx32 ", computed 0x%08" PRIx32
                        "): the file is corrupt",
                        L->path, stored, computed);
    }
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------
// Step 2: sections in bounds, in order, not overlapping; data aligned.

static cnn_status check_sections(loader *L) {
    set_where(L, "header");
    const uint8_t *h = L->file;
    for (int i = RESERVED_OFFSET; i < HEADER_BYTES; i++) {
        if (h[i] != 0) {
            return fail(L, "reserved byte %d is 0x%02x, expected 0 (bytes %d..%d are reserved)",
                        i, h[i], RESERVED_OFFSET, HEADER_BYTES - 1);
        }
    }
    section *sections[4] = {&L->meta, &L->graph, &L->table, &L->data};
    const char *names[4] = {"meta", "graph", "tensor table", "data"};
    uint64_t previous_end = HEADER_BYTES;
    for (int i = 0; i < 4; i++) {
        section *s = sections[i];
        s->offset = le64(h + 24 + 16 * i);
        s->size = le64(h + 32 + 16 * i);
        uint64_t end;
        if (add_overflows(s->offset, s->size, &end)) {
            return fail(L, "%s section offset %" PRIu64 " + size %" PRIu64
                           " overflows 64 bits (corrupt header)",
                        names[i], s->offset, s->size);
        }
        if (end > L->size) {
            return fail(L, "%s section [offset %" PRIu64 ", size %" PRIu64 "] ends at byte %" PRIu64
                           ", out of bounds of the %" PRIu64 "-byte file",
                        names[i], s->offset, s->size, end, L->size);
        }
        if (s->offset < previous_end) {
            return fail(L, "%s section offset %" PRIu64 " is before byte %" PRIu64
                           " (the end of the %s): sections must follow the header in the order "
                           "meta, graph, tensor table, data, without overlapping",
                        names[i], s->offset, previous_end, i == 0 ? "header" : names[i - 1]);
        }
        previous_end = end;
    }
    if (L->data.offset % DATA_ALIGN != 0) {
        return fail(L, "data section offset %" PRIu64 " is not a multiple of %d (misaligned)",
                    L->data.offset, DATA_ALIGN);
    }
    return CNN_OK;
}

static cursor section_cursor(const loader *L, const section *s, const char *name) {
    return (cursor){L->file, s->offset, s->offset + s->size, name};
}

static cnn_status check_consumed(loader *L, const cursor *c, const char *after) {
    if (c->pos != c->end) {
        return fail(L, "%" PRIu64 " bytes are left over in the %s section after %s (its size "
                       "in the header is wrong or the file is corrupt)",
                    c->end - c->pos, c->section, after);
    }
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------
// Step 3: parse every record; the meta's keys.

static cnn_status parse_meta(loader *L) {
    set_where(L, "meta");
    L->dict_key_kind = "meta key";
    cursor c = section_cursor(L, &L->meta, "meta");
    TRY(read_dict(L, &c, "meta dict"));
    TRY(check_consumed(L, &c, "its dict"));

    cnn_model *m = L->model;
    cnn_model_info *info = &m->info;
    const value *v;
    TRY(dict_get(L, "name", V_STR, "a string", &v));
    if (!(m->name = copy_sv(v->s))) return out_of_memory(L, "meta");
    TRY(dict_get(L, "arch", V_STR, "a string", &v));
    if (!(m->arch = copy_sv(v->s))) return out_of_memory(L, "meta");

    int shape[3];   // [C, H, W]
    TRY(get_ints(L, "input_shape", 3, "[C, H, W]", 1, MAX_INPUT_HW, shape));
    if (shape[0] != 1 && shape[0] != 3) {
        return fail(L, "meta key 'input_shape' is [%d, %d, %d]: C is %d, expected 1 (grayscale) "
                       "or 3 (RGB)",
                    shape[0], shape[1], shape[2], shape[0]);
    }
    TRY(get_int(L, "resize", 0, MAX_RESIZE, &info->resize));
    int crop[2];
    TRY(get_ints(L, "crop", 2, "[H, W]", 1, MAX_INPUT_HW, crop));
    if (crop[0] != shape[1] || crop[1] != shape[2]) {
        return fail(L, "meta key 'crop' is [%d, %d] but 'input_shape' is [%d, %d, %d] (expected "
                       "crop = [H, W] of input_shape)",
                    crop[0], crop[1], shape[0], shape[1], shape[2]);
    }
    info->channels = shape[0];
    info->height = shape[1];
    info->width = shape[2];

    const char *norm_keys[2] = {"mean", "std"};
    float *norm_out[2] = {info->mean, info->std};
    for (int k = 0; k < 2; k++) {
        char expected[64];
        snprintf(expected, sizeof expected, "a float list of C = %d entries", info->channels);
        TRY(dict_get(L, norm_keys[k], V_FLOATS, expected, &v));
        if (v->count != (uint32_t)info->channels) {
            return fail(L, "meta key '%s' has %" PRIu32 " entries, expected C = %d (one per "
                           "input channel)",
                        norm_keys[k], v->count, info->channels);
        }
        for (uint32_t j = 0; j < v->count; j++) {
            double x = list_float(v, j);
            if (!isfinite(x) || fabs(x) > FLT_MAX) {
                return fail(L, "meta key '%s' entry %" PRIu32 " is %g, expected a finite float",
                            norm_keys[k], j, x);
            }
            norm_out[k][j] = (float)x;
            if (k == 1 && norm_out[k][j] == 0.0f) {
                return fail(L, "meta key 'std' entry %" PRIu32 " is %g, expected a non-zero "
                               "value (it divides)",
                            j, x);
            }
        }
    }

    TRY(dict_get(L, "class_names", V_STRS, "a string list", &v));
    if (v->count < 1) return fail(L, "meta key 'class_names' is empty (expected >= 1 name)");
    m->class_names = calloc(v->count, sizeof *m->class_names);
    if (!m->class_names) return out_of_memory(L, "class names");
    const uint8_t *item = v->items;
    for (uint32_t k = 0; k < v->count; k++) {
        if (!(m->class_names[k] = copy_sv(str_list_item(&item)))) {
            return out_of_memory(L, "class names");
        }
        info->num_classes = (int)k + 1;   // cnn_model_free frees exactly these
    }

    // Optional: the layout of the prepared weights the file holds (cnnscope pack), which a
    // session uses in place when it matches its own (prepared.h).
    if (dict_find(&L->scratch, PREPARED_META_KEY)) {
        TRY(dict_get(L, PREPARED_META_KEY, V_STR, "a string (the layout of the prepared weights)",
                     &v));
        if (!(m->prepared_layout = copy_sv(v->s))) return out_of_memory(L, "meta");
    }

    info->name = m->name;
    info->arch = m->arch;
    info->path = m->path;
    info->class_names = (const char *const *)m->class_names;
    return CNN_OK;
}

// A graph record: op, name, inputs, attrs (into L->scratch). Used by both graph passes.
typedef struct {
    str_view op, name;
    uint32_t n_inputs;
    str_view inputs[2];         // the first two (no op takes more)
} node_record;

static cnn_status read_node(loader *L, cursor *c, uint32_t i, node_record *r) {
    set_where(L, "graph node %" PRIu32, i);
    TRY(read_str(L, c, "op", &r->op));
    TRY(read_str(L, c, "name", &r->name));
    set_where(L, "graph node %" PRIu32 " '" SV_FMT "'", i, SV_ARG(r->name));
    TRY(read_u32(L, c, "input count", &r->n_inputs));
    for (uint32_t k = 0; k < r->n_inputs; k++) {
        char field[32];
        snprintf(field, sizeof field, "input %" PRIu32, k);
        str_view input;
        TRY(read_str(L, c, field, &input));
        if (k < 2) r->inputs[k] = input;
    }
    return read_dict(L, c, "attribute dict");
}

// Pass 1 over the graph: syntax only, remembering where each node starts.
static cnn_status parse_graph(loader *L) {
    set_where(L, "graph");
    L->dict_key_kind = "attribute";
    cursor c = section_cursor(L, &L->graph, "graph");
    uint32_t count;
    TRY(read_u32(L, &c, "node count", &count));
    if (count < 1 || count > MAX_NODES) {
        return fail(L, "node count is %" PRIu32 ", expected 1..%d", count, MAX_NODES);
    }
    if ((uint64_t)count * MIN_NODE_BYTES > L->graph.size) {
        return fail(L, "node count %" PRIu32 " needs at least %" PRIu64 " bytes but the graph "
                       "section has %" PRIu64 " (corrupt count)",
                    count, (uint64_t)count * MIN_NODE_BYTES, L->graph.size);
    }
    L->node_offsets = malloc(count * sizeof *L->node_offsets);
    L->model->nodes = calloc(count, sizeof *L->model->nodes);
    if (!L->node_offsets || !L->model->nodes) return out_of_memory(L, "graph");
    L->model->n_nodes = (int)count;
    for (uint32_t i = 0; i < count; i++) {
        L->node_offsets[i] = c.pos;
        node_record r;
        TRY(read_node(L, &c, i, &r));
    }
    set_where(L, "graph");
    char after[64];
    snprintf(after, sizeof after, "its %" PRIu32 " nodes", count);
    return check_consumed(L, &c, after);
}

static cnn_status parse_tensor_table(loader *L) {
    set_where(L, "tensor table");
    cursor c = section_cursor(L, &L->table, "tensor table");
    uint32_t count;
    TRY(read_u32(L, &c, "tensor count", &count));
    if (count > MAX_TENSORS) {
        return fail(L, "tensor count is %" PRIu32 ", expected 0..%d", count, MAX_TENSORS);
    }
    if ((uint64_t)count * MIN_TENSOR_BYTES > L->table.size) {
        return fail(L, "tensor count %" PRIu32 " needs at least %" PRIu64 " bytes but the tensor "
                       "table section has %" PRIu64 " (corrupt count)",
                    count, (uint64_t)count * MIN_TENSOR_BYTES, L->table.size);
    }
    cnn_model *m = L->model;
    m->tensors = calloc(count ? count : 1, sizeof *m->tensors);
    L->spans = calloc(count ? count : 1, sizeof *L->spans);
    if (!m->tensors || !L->spans) return out_of_memory(L, "tensor table");
    for (uint32_t i = 0; i < count; i++) {
        set_where(L, "tensor table entry %" PRIu32, i);
        str_view name;
        TRY(read_str(L, &c, "name", &name));
        set_where(L, "tensor table entry %" PRIu32 " '" SV_FMT "'", i, SV_ARG(name));
        uint8_t dtype, ndim;
        TRY(read_u8(L, &c, "dtype", &dtype));
        if (dtype != DTYPE_F32) {
            return fail(L, "dtype is %u, expected %d (float32, the only type in version 1)",
                        dtype, DTYPE_F32);
        }
        TRY(read_u8(L, &c, "ndim", &ndim));
        if (ndim < 1 || ndim > 4) return fail(L, "ndim is %u, expected 1..4", ndim);
        uint64_t dims[4];
        for (int k = 0; k < ndim; k++) {
            TRY(read_u64(L, &c, "dims", &dims[k]));
            if (dims[k] < 1) return fail(L, "dims[%d] is 0, expected >= 1", k);
        }
        tensor_span *span = &L->spans[i];
        TRY(read_u64(L, &c, "offset", &span->offset));
        TRY(read_u64(L, &c, "nbytes", &span->nbytes));
        span->index = (int)i;

        cnn_stored_tensor *t = &m->tensors[i];
        if (!(t->name = copy_sv(name))) return out_of_memory(L, "tensor names");
        m->n_tensors = (int)i + 1;
        t->ndim = ndim;
        for (int k = 0; k < 4; k++) {
            // Clamped for now; step 4 proves the real dims fit the file, far below INT64_MAX.
            t->dims[k] = k < ndim ? (int64_t)(dims[k] > INT64_MAX ? INT64_MAX : dims[k]) : 1;
        }
    }
    set_where(L, "tensor table");
    char after[64];
    snprintf(after, sizeof after, "its %" PRIu32 " tensors", count);
    return check_consumed(L, &c, after);
}

// ---------------------------------------------------------------------------------------------
// Step 4: tensors in bounds, aligned, not overlapping, nbytes matching the shape.

static void format_dims(char *buf, size_t size, int ndim, const int64_t *dims) {
    size_t used = 0;
    buf[0] = '\0';
    for (int k = 0; k < ndim && used < size; k++) {
        int n = snprintf(buf + used, size - used, "%s%" PRId64, k ? "," : "[", dims[k]);
        if (n < 0) return;
        used += (size_t)n;
    }
    if (used < size) snprintf(buf + used, size - used, "]");
}

static int compare_spans(const void *a, const void *b) {
    const tensor_span *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->index - y->index;
}

static cnn_status check_tensors(loader *L) {
    cnn_model *m = L->model;
    if (!name_index_init(&L->tensor_index, (size_t)m->n_tensors)) {
        return out_of_memory(L, "tensor index");
    }
    uint64_t data_end = L->data.offset + L->data.size;   // checked in step 2
    for (int i = 0; i < m->n_tensors; i++) {
        cnn_stored_tensor *t = &m->tensors[i];
        tensor_span *span = &L->spans[i];
        set_where(L, "tensor table entry %d '%.200s'", i, t->name);
        char shape[128];
        format_dims(shape, sizeof shape, t->ndim, t->dims);
        uint64_t numel = 1, need;
        for (int k = 0; k < t->ndim; k++) {
            if (mul_overflows(numel, (uint64_t)t->dims[k], &numel)) numel = UINT64_MAX;
        }
        if (numel == UINT64_MAX || mul_overflows(numel, 4, &need) || need > L->data.size) {
            return fail(L, "shape %s has too many elements: more bytes than the %" PRIu64
                           "-byte data section holds (dims overflow or corrupt)",
                        shape, L->data.size);
        }
        if (span->nbytes != need) {
            return fail(L, "nbytes is %" PRIu64 " but shape %s of float32 needs %" PRIu64,
                        span->nbytes, shape, need);
        }
        if (span->offset % DATA_ALIGN != 0) {
            return fail(L, "offset %" PRIu64 " is not a multiple of %d (misaligned)",
                        span->offset, DATA_ALIGN);
        }
        uint64_t end;
        if (span->offset < L->data.offset || add_overflows(span->offset, span->nbytes, &end) ||
            end > data_end) {
            return fail(L, "bytes [offset %" PRIu64 ", +%" PRIu64 ") are out of bounds of the "
                           "data section [%" PRIu64 ", %" PRIu64 ")",
                        span->offset, span->nbytes, L->data.offset, data_end);
        }
        uint32_t len = (uint32_t)strlen(t->name);
        int other = name_index_find(&L->tensor_index, t->name, len);
        if (other >= 0) {
            return fail(L, "duplicate tensor name: entry %d has the same name (names must be "
                           "unique)",
                        other);
        }
        name_index_add(&L->tensor_index, t->name, len, i);
        t->data = (const float *)(L->file + span->offset);
    }
    // Overlaps: sorted by offset, each tensor must end before the next one starts.
    qsort(L->spans, (size_t)m->n_tensors, sizeof *L->spans, compare_spans);
    set_where(L, "tensor table");
    for (int k = 1; k < m->n_tensors; k++) {
        const tensor_span *a = &L->spans[k - 1], *b = &L->spans[k];
        if (b->offset < a->offset + a->nbytes) {
            return fail(L, "tensor '%.200s' [offset %" PRIu64 ", +%" PRIu64 ") overlaps tensor "
                           "'%.200s' [offset %" PRIu64 ", +%" PRIu64 ")",
                        m->tensors[b->index].name, b->offset, b->nbytes,
                        m->tensors[a->index].name, a->offset, a->nbytes);
        }
    }
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------
// Step 5: every node's op, name, inputs, attributes, tensors and output shape.

// "[C,H,W]" for ndim 4, "[F]" for ndim 2.
static void format_activation(char *buf, size_t size, const cnn_node *n) {
    if (n->ndim == 2) {
        snprintf(buf, size, "[%d]", n->c);
    } else {
        snprintf(buf, size, "[%d,%d,%d]", n->c, n->h, n->w);
    }
}

// The tensor named by string attribute `key`; NULL in *out when it is optional and absent.
static cnn_status get_tensor(loader *L, const char *key, bool required,
                             const cnn_stored_tensor **out) {
    *out = NULL;
    if (!required && !dict_find(&L->scratch, key)) return CNN_OK;
    const value *v;
    TRY(dict_get(L, key, V_STR, "a string naming a tensor", &v));
    int index = name_index_find(&L->tensor_index, v->s.p, v->s.len);
    if (index < 0) {
        return fail(L, "attribute '%s' names tensor '" SV_FMT "', which is not in the tensor "
                       "table",
                    key, SV_ARG(v->s));
    }
    *out = &L->model->tensors[index];
    return CNN_OK;
}

// A 1-D tensor of `expected` entries (biases and batch-norm vectors).
static cnn_status check_vector(loader *L, const char *key, const cnn_stored_tensor *t,
                               int64_t expected, const char *why) {
    if (t->ndim != 1 || t->dims[0] != expected) {
        char shape[128];
        format_dims(shape, sizeof shape, t->ndim, t->dims);
        return fail(L, "%s '%.200s' has shape %s, expected [%" PRId64 "] (%s)", key, t->name,
                    shape, expected, why);
    }
    return CNN_OK;
}

static cnn_status need_spatial_input(loader *L, const cnn_node *in) {
    if (in->ndim != 4) {
        return fail(L, "input '%.200s' is [%d] features (ndim 2), expected [C,H,W] (ndim 4)",
                    in->name, in->c);
    }
    return CNN_OK;
}

static cnn_status window_output(loader *L, const cnn_node *in, cnn_node *n) {
    const cnn_window *w = &n->window;
    int oh = window_out_size(in->h, w->kernel[0], w->stride[0], w->padding[0], w->dilation[0],
                             w->ceil_mode);
    int ow = window_out_size(in->w, w->kernel[1], w->stride[1], w->padding[1], w->dilation[1],
                             w->ceil_mode);
    if (oh < 1 || ow < 1) {
        return fail(L, "the output is empty: input %dx%d with kernel %dx%d, dilation %dx%d and "
                       "padding %dx%d leaves no room for a window (expected output >= 1x1)",
                    in->h, in->w, w->kernel[0], w->kernel[1], w->dilation[0], w->dilation[1],
                    w->padding[0], w->padding[1]);
    }
    n->c = in->c;
    n->h = oh;
    n->w = ow;
    n->ndim = 4;
    return CNN_OK;
}

static cnn_status infer_conv2d(loader *L, cnn_node *n, const cnn_node *in) {
    TRY(need_spatial_input(L, in));
    const cnn_stored_tensor *weight, *bias;
    TRY(get_tensor(L, "weight", true, &weight));
    TRY(get_tensor(L, "bias", false, &bias));
    cnn_window *w = &n->window;
    TRY(get_ints(L, "stride", 2, "[h, w]", 1, MAX_SPATIAL, w->stride));
    TRY(get_ints(L, "padding", 2, "[h, w]", 0, MAX_SPATIAL, w->padding));
    TRY(get_ints(L, "dilation", 2, "[h, w]", 1, MAX_SPATIAL, w->dilation));
    TRY(get_int(L, "groups", 1, MAX_ACTIVATION_ELEMS, &w->groups));
    int C = in->c, groups = w->groups;
    char shape[128];
    format_dims(shape, sizeof shape, weight->ndim, weight->dims);
    if (weight->ndim != 4) {
        return fail(L, "weight '%.200s' has shape %s, expected 4 dims [K,C/groups,R,S]",
                    weight->name, shape);
    }
    if (C % groups != 0) {
        return fail(L, "attribute 'groups' is %d, which does not divide the input's %d channels",
                    groups, C);
    }
    // weight [K, C/groups, R, S]
    int64_t K = weight->dims[0], R = weight->dims[2], S = weight->dims[3];
    if (weight->dims[1] != C / groups) {
        return fail(L, "weight '%.200s' has shape %s but its input has %d channels (expected "
                       "[K,%d,R,S] with groups %d)",
                    weight->name, shape, C, C / groups, groups);
    }
    if (K % groups != 0 || K > MAX_ACTIVATION_ELEMS) {
        return fail(L, "weight '%.200s' has shape %s: K = %" PRId64 " output channels, expected "
                       "a multiple of groups %d and at most %d",
                    weight->name, shape, K, groups, MAX_ACTIVATION_ELEMS);
    }
    if (R > MAX_SPATIAL || S > MAX_SPATIAL) {
        return fail(L, "weight '%.200s' has shape %s: kernel %" PRId64 "x%" PRId64
                       " exceeds the limit %d",
                    weight->name, shape, R, S, MAX_SPATIAL);
    }
    if (bias) TRY(check_vector(L, "bias", bias, K, "one per output channel"));
    w->kernel[0] = (int)R;
    w->kernel[1] = (int)S;
    TRY(window_output(L, in, n));
    n->c = (int)K;
    n->p.conv.weight = weight->data;
    n->p.conv.bias = bias ? bias->data : NULL;
    // All factors are < 2^62 / 4 (they fit in the file), but their product may not fit.
    uint64_t per_pixel = (uint64_t)K * (uint64_t)(C / groups) * (uint64_t)R * (uint64_t)S;
    uint64_t macs;
    if (mul_overflows(per_pixel, (uint64_t)n->h * (uint64_t)n->w, &macs) || macs > INT64_MAX) {
        return fail(L, "multiply-accumulate count overflows 64 bits (absurd shape)");
    }
    n->macs = (int64_t)macs;
    n->params = (int64_t)per_pixel + (bias ? K : 0);
    return CNN_OK;
}

static cnn_status infer_batchnorm(loader *L, cnn_node *n, const cnn_node *in) {
    const char *keys[4] = {"weight", "bias", "running_mean", "running_var"};
    const cnn_stored_tensor *t[4];
    for (int k = 0; k < 4; k++) {
        TRY(get_tensor(L, keys[k], true, &t[k]));
        TRY(check_vector(L, keys[k], t[k], in->c, "one per input channel"));
    }
    double eps;
    TRY(get_float(L, "eps", &eps));
    if (!(eps > 0 && eps <= FLT_MAX && (float)eps > 0)) {
        return fail(L, "attribute 'eps' is %g, expected a positive float32", eps);
    }
    n->p.bn = (cnn_batchnorm_params){t[0]->data, t[1]->data, t[2]->data, t[3]->data,
                                     (float)eps};
    n->ndim = in->ndim;
    n->c = in->c;
    n->h = in->h;
    n->w = in->w;
    n->params = 2 * (int64_t)in->c;   // gamma and beta; running stats are not learned
    return CNN_OK;
}

// maxpool and avgpool
static cnn_status infer_pool(loader *L, cnn_node *n, const cnn_node *in) {
    TRY(need_spatial_input(L, in));
    cnn_window *w = &n->window;
    TRY(get_ints(L, "kernel", 2, "[h, w]", 1, MAX_SPATIAL, w->kernel));
    TRY(get_ints(L, "stride", 2, "[h, w]", 1, MAX_SPATIAL, w->stride));
    TRY(get_ints(L, "padding", 2, "[h, w]", 0, MAX_SPATIAL, w->padding));
    if (n->op == CNN_OP_MAXPOOL) {
        TRY(get_ints(L, "dilation", 2, "[h, w]", 1, MAX_SPATIAL, w->dilation));
    } else {
        w->dilation[0] = w->dilation[1] = 1;
        TRY(get_int(L, "count_include_pad", 0, 1, &w->count_include_pad));
    }
    TRY(get_int(L, "ceil_mode", 0, 1, &w->ceil_mode));
    w->groups = 1;
    for (int k = 0; k < 2; k++) {
        if (w->padding[k] > w->kernel[k] / 2) {
            return fail(L, "attribute 'padding' is [%d, %d] with kernel [%d, %d]: expected "
                           "padding <= kernel / 2 (PyTorch's rule)",
                        w->padding[0], w->padding[1], w->kernel[0], w->kernel[1]);
        }
    }
    return window_output(L, in, n);
}

static cnn_status infer_adaptive_avgpool(loader *L, cnn_node *n, const cnn_node *in) {
    TRY(need_spatial_input(L, in));
    int size[2];
    TRY(get_ints(L, "output", 2, "[OH, OW]", 1, MAX_SPATIAL, size));
    n->p.adaptive = (cnn_adaptive_params){size[0], size[1]};
    n->ndim = 4;
    n->c = in->c;
    n->h = size[0];
    n->w = size[1];
    return CNN_OK;
}

static cnn_status infer_linear(loader *L, cnn_node *n, const cnn_node *in) {
    if (in->ndim != 2) {
        char shape[64];
        format_activation(shape, sizeof shape, in);
        return fail(L, "input '%.200s' is %s (ndim 4), expected [F] features (ndim 2): put a "
                       "flatten before a linear",
                    in->name, shape);
    }
    const cnn_stored_tensor *weight, *bias;
    TRY(get_tensor(L, "weight", true, &weight));
    TRY(get_tensor(L, "bias", false, &bias));
    char shape[128];
    format_dims(shape, sizeof shape, weight->ndim, weight->dims);
    // weight [OUT, IN]
    if (weight->ndim != 2 || weight->dims[1] != in->c) {
        return fail(L, "weight '%.200s' has shape %s but its input has %d features (expected "
                       "[OUT,%d])",
                    weight->name, shape, in->c, in->c);
    }
    int64_t OUT = weight->dims[0];
    if (OUT > MAX_ACTIVATION_ELEMS) {
        return fail(L, "weight '%.200s' has shape %s: %" PRId64 " outputs, above the limit %d",
                    weight->name, shape, OUT, MAX_ACTIVATION_ELEMS);
    }
    if (bias) TRY(check_vector(L, "bias", bias, OUT, "one per output feature"));
    n->p.linear = (cnn_linear_params){weight->data, bias ? bias->data : NULL};
    n->ndim = 2;
    n->c = (int)OUT;
    n->h = n->w = 1;
    n->macs = OUT * in->c;   // the weight's element count: fits the file
    n->params = n->macs + (bias ? OUT : 0);
    return CNN_OK;
}

static cnn_status infer_shortcut_a(loader *L, cnn_node *n, const cnn_node *in) {
    TRY(need_spatial_input(L, in));
    cnn_shortcut_params *s = &n->p.shortcut;
    TRY(get_int(L, "stride", 1, MAX_SPATIAL, &s->stride));
    int pad[2];
    TRY(get_ints(L, "pad_channels", 2, "[before, after]", 0, MAX_ACTIVATION_ELEMS, pad));
    s->pad_before = pad[0];
    s->pad_after = pad[1];
    int64_t channels = (int64_t)in->c + pad[0] + pad[1];
    if (channels > MAX_ACTIVATION_ELEMS) {
        return fail(L, "output channels %d + %d + %d exceed the limit %d", pad[0], in->c, pad[1],
                    MAX_ACTIVATION_ELEMS);
    }
    n->ndim = 4;
    n->c = (int)channels;
    n->h = (in->h + s->stride - 1) / s->stride;   // x[:, :, ::stride, ::stride]
    n->w = (in->w + s->stride - 1) / s->stride;
    return CNN_OK;
}

// Shape-preserving ops: relu, dropout, softmax.
static cnn_status infer_elementwise(loader *L, cnn_node *n, const cnn_node *in) {
    if (n->op == CNN_OP_DROPOUT) {
        double p;
        TRY(get_float(L, "p", &p));
        if (p < 0 || p > 1) return fail(L, "attribute 'p' is %g, expected 0..1", p);
    }
    if (n->op == CNN_OP_SOFTMAX && in->ndim != 2) {
        char shape[64];
        format_activation(shape, sizeof shape, in);
        return fail(L, "input '%.200s' is %s (ndim 4), expected [F] features (ndim 2): softmax "
                       "runs over the features of a flatten or linear",
                    in->name, shape);
    }
    n->ndim = in->ndim;
    n->c = in->c;
    n->h = in->h;
    n->w = in->w;
    return CNN_OK;
}

static cnn_status infer_shape(loader *L, cnn_node *n) {
    cnn_model *m = L->model;
    const cnn_node *in = n->n_inputs > 0 ? &m->nodes[n->inputs[0]] : NULL;
    switch (n->op) {
    case CNN_OP_INPUT:
        n->ndim = 4;
        n->c = m->info.channels;
        n->h = m->info.height;
        n->w = m->info.width;
        return CNN_OK;
    case CNN_OP_CONV2D: return infer_conv2d(L, n, in);
    case CNN_OP_BATCHNORM: return infer_batchnorm(L, n, in);
    case CNN_OP_MAXPOOL:
    case CNN_OP_AVGPOOL: return infer_pool(L, n, in);
    case CNN_OP_ADAPTIVE_AVGPOOL: return infer_adaptive_avgpool(L, n, in);
    case CNN_OP_LINEAR: return infer_linear(L, n, in);
    case CNN_OP_SHORTCUT_A: return infer_shortcut_a(L, n, in);
    case CNN_OP_RELU:
    case CNN_OP_DROPOUT:
    case CNN_OP_SOFTMAX: return infer_elementwise(L, n, in);
    case CNN_OP_FLATTEN:
        n->ndim = 2;
        n->c = (int)((int64_t)in->c * in->h * in->w);   // in's size is within the limit
        n->h = n->w = 1;
        return CNN_OK;
    case CNN_OP_ADD: {
        const cnn_node *b = &m->nodes[n->inputs[1]];
        if (in->ndim != b->ndim || in->c != b->c || in->h != b->h || in->w != b->w) {
            char sa[64], sb[64];
            format_activation(sa, sizeof sa, in);
            format_activation(sb, sizeof sb, b);
            return fail(L, "inputs '%.200s' %s and '%.200s' %s have different shapes (expected "
                           "the same)",
                        in->name, sa, b->name, sb);
        }
        n->ndim = in->ndim;
        n->c = in->c;
        n->h = in->h;
        n->w = in->w;
        return CNN_OK;
    }
    case CNN_OP_COUNT: break;
    }
    return fail(L, "internal error: no shape rule for this op");
}

// The op called `name`, or -1.
static int find_op(str_view name) {
    for (int op = 0; op < CNN_OP_COUNT; op++) {
        if (sv_eq(name, op_names[op])) return op;
    }
    return -1;
}

// An input name that is not an earlier node: say whether it is later (a cycle or a wrong
// order), the node itself, or nothing at all.
static cnn_status bad_input(loader *L, int i, uint32_t k, str_view input) {
    if (sv_eq(input, L->model->nodes[i].name)) {
        return fail(L, "input %" PRIu32 " names the node itself (a cycle)", k);
    }
    for (int j = i + 1; j < L->model->n_nodes; j++) {
        cursor c = {L->file, L->node_offsets[j], L->graph.offset + L->graph.size, "graph"};
        str_view op, name;
        if (read_str(L, &c, "op", &op) != CNN_OK || read_str(L, &c, "name", &name) != CNN_OK) {
            break;   // cannot happen: pass 1 parsed every node
        }
        if (name.len == input.len && memcmp(name.p, input.p, input.len) == 0) {
            return fail(L, "input %" PRIu32 " '" SV_FMT "' is node %d, which comes later: inputs "
                           "must name earlier nodes (nodes in execution order, no cycles)",
                        k, SV_ARG(input), j);
        }
    }
    return fail(L, "input %" PRIu32 " '" SV_FMT "' names no node in the graph", k,
                SV_ARG(input));
}

static cnn_status check_node(loader *L, int i) {
    cnn_model *m = L->model;
    cnn_node *n = &m->nodes[i];
    cursor c = {L->file, L->node_offsets[i], L->graph.offset + L->graph.size, "graph"};
    node_record r;
    TRY(read_node(L, &c, (uint32_t)i, &r));   // parsed before: cannot fail

    int op = find_op(r.op);
    if (op < 0) {
        return fail(L, "unknown op '" SV_FMT "' (known: input, conv2d, batchnorm, relu, maxpool, "
                       "avgpool, adaptive_avgpool, linear, flatten, add, dropout, softmax, "
                       "shortcut_a)",
                    SV_ARG(r.op));
    }
    n->op = (cnn_op)op;
    set_where(L, "graph node %d '" SV_FMT "' (%s)", i, SV_ARG(r.name), op_names[op]);
    if (r.name.len == 0) return fail(L, "the name is empty (expected a unique module path)");
    int other = name_index_find(&L->node_index, r.name.p, r.name.len);
    if (other >= 0) {
        return fail(L, "duplicate name: node %d has the same name (names must be unique)", other);
    }
    if ((i == 0) != (n->op == CNN_OP_INPUT)) {
        return fail(L, i == 0 ? "the first node must be op 'input' named 'input'"
                              : "op 'input' may only be node 0");
    }
    if (i == 0 && !sv_eq(r.name, "input")) {
        return fail(L, "the first node must be named 'input'");
    }
    if (!(n->name = copy_sv(r.name))) return out_of_memory(L, "node names");

    int expected_inputs = op_input_count(n->op);
    if (r.n_inputs != (uint32_t)expected_inputs) {
        return fail(L, "has %" PRIu32 " inputs, expected %d for op %s", r.n_inputs,
                    expected_inputs, op_names[op]);
    }
    n->n_inputs = expected_inputs;
    for (int k = 0; k < expected_inputs; k++) {
        int j = name_index_find(&L->node_index, r.inputs[k].p, r.inputs[k].len);
        if (j < 0) return bad_input(L, i, (uint32_t)k, r.inputs[k]);
        n->inputs[k] = j;
    }

    TRY(infer_shape(L, n));
    int64_t elems = (int64_t)n->c * n->h * n->w;   // each factor < 2^31
    if (n->c < 1 || n->h < 1 || n->w < 1 || n->h > MAX_SPATIAL || n->w > MAX_SPATIAL ||
        elems > MAX_ACTIVATION_ELEMS) {
        char shape[64];
        format_activation(shape, sizeof shape, n);
        return fail(L, "output shape %s is out of range (expected at least 1x1, H and W at most "
                       "%d, at most %d elements per image)",
                    shape, MAX_SPATIAL, MAX_ACTIVATION_ELEMS);
    }
    name_index_add(&L->node_index, n->name, r.name.len, i);
    return CNN_OK;
}

static cnn_status check_graph(loader *L) {
    L->dict_key_kind = "attribute";
    cnn_model *m = L->model;
    if (!name_index_init(&L->node_index, (size_t)m->n_nodes)) return out_of_memory(L, "graph");
    for (int i = 0; i < m->n_nodes; i++) TRY(check_node(L, i));

    // Step 6: one output feature per class name.
    const cnn_node *last = &m->nodes[m->n_nodes - 1];
    set_where(L, "graph");
    char shape[64];
    format_activation(shape, sizeof shape, last);
    if (last->ndim != 2 || last->c != m->info.num_classes) {
        return fail(L, "the last node %d '%.200s' (%s) outputs %s, expected [%d] (one feature "
                       "per class name in the meta)",
                    m->n_nodes - 1, last->name, op_names[last->op], shape, m->info.num_classes);
    }
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------
// Loading

// The file's size checks, before anything is read: also for bytes that did not come from a file.
static cnn_status check_size(loader *L) {
    uint64_t limit;
    TRY(max_model_bytes(&limit));
    if (L->size < HEADER_BYTES) {
        return cnn_fail(CNN_ERR_FORMAT, "%s: truncated: the file has %" PRIu64
                                        " bytes, less than the %d-byte header",
                        L->path, L->size, HEADER_BYTES);
    }
    if (L->size > limit || L->size > SIZE_MAX) {
        return cnn_fail(CNN_ERR_LIMIT, "%s: the file has %" PRIu64 " bytes, above the limit of "
                                       "%" PRIu64 " (--max-model-mb or CNNSCOPE_MAX_MODEL_BYTES allow more)",
                        L->path, L->size, limit);
    }
    return CNN_OK;
}

// Step 7 (not an error): tensors holding NaN or Inf load, but every output they touch will be
// NaN or Inf, so the model keeps one warning line per such tensor for the caller to show.
#define MAX_WARNED_TENSORS 8

// 1 if one of the n floats is NaN or infinite: all its exponent bits set. Adding 1 to the
// exponent field carries into the sign bit exactly then, so the test is an OR of
// (bits & exponent) + (lowest exponent bit) over 16 lanes, two integer operations a float,
// which gcc -O2 turns into vector code even for baseline x86-64 (the plain isnan/isinf count
// took ~55 ms on ResNet-50's 100 MB of weights at every load; this runs beside the CRC, on
// blocks still in cache).
static int any_non_finite(const float *x, int64_t n) {
    const uint32_t exponent = 0x7F800000u, exponent_one = 0x00800000u;
    uint32_t lanes[16] = {0}, tail = 0;
    int64_t blocks = n / 16;
    for (int64_t b = 0; b < blocks; b++) {
        for (int u = 0; u < 16; u++) {
            uint32_t bits;
            memcpy(&bits, &x[b * 16 + u], sizeof bits);
            lanes[u] |= (bits & exponent) + exponent_one;
        }
    }
    for (int64_t k = blocks * 16; k < n; k++) {
        uint32_t bits;
        memcpy(&bits, &x[k], sizeof bits);
        tail |= (bits & exponent) + exponent_one;
    }
    for (int u = 0; u < 16; u++) tail |= lanes[u];
    return tail >> 31;
}

static cnn_status find_non_finite_weights(loader *L) {
    cnn_model *m = L->model;
    // The common case: the CRC's pass saw no NaN or infinity in the whole data section, which
    // holds every tensor (and zero padding).
    if (!L->data_non_finite && L->scanned_lo == L->data.offset &&
        L->scanned_hi == L->data.offset + L->data.size)
        return CNN_OK;
    char text[MAX_WARNED_TENSORS * 600 + 200];
    size_t used = 0;
    int warned = 0, more = 0;
    text[0] = '\0';
    for (int i = 0; i < m->n_tensors; i++) {
        const cnn_stored_tensor *t = &m->tensors[i];
        int64_t numel = 1, nan = 0, inf = 0;
        for (int k = 0; k < t->ndim; k++) numel *= t->dims[k];   // checked in step 4
        if (!any_non_finite(t->data, numel)) continue;   // the common case, fast
        for (int64_t k = 0; k < numel; k++) {
            nan += isnan(t->data[k]) != 0;
            inf += isinf(t->data[k]) != 0;
        }
        if (nan == 0 && inf == 0) continue;
        if (warned == MAX_WARNED_TENSORS) {
            more++;
            continue;
        }
        int n = snprintf(text + used, sizeof text - used,
                         "%s%.200s: tensor '%.200s' holds %" PRId64 " NaN and %" PRId64
                         " infinite values (of %" PRId64 "): outputs that depend on it will "
                         "not be finite",
                         warned ? "\n" : "", L->path, t->name, nan, inf, numel);
        if (n > 0 && (size_t)n < sizeof text - used) used += (size_t)n;   // never truncates
        warned++;
    }
    if (more > 0) {
        snprintf(text + used, sizeof text - used,
                 "\n%.200s: %d more tensors hold NaN or infinite values", L->path, more);
    }
    if (warned > 0 && !(m->warnings = strdup(text))) return out_of_memory(L, "warnings");
    return CNN_OK;
}

static cnn_status load(loader *L) {
    TRY(check_size(L));
    TRY(check_header(L));          // 1
    TRY(check_sections(L));        // 2
    TRY(parse_meta(L));            // 3
    TRY(parse_graph(L));
    TRY(parse_tensor_table(L));
    TRY(check_tensors(L));         // 4
    TRY(check_graph(L));           // 5, 6
    return find_non_finite_weights(L);
}

// The one loading path: validates `size` bytes at `bytes` (the whole file) and builds the model
// on them. `map` (may be NULL) is the mapping that holds them; the model owns it from here on,
// also on failure.
static cnn_status load_bytes(const char *path, const uint8_t *bytes, uint64_t size, void *map,
                             cnn_model **out) {
    cnn_model *m = calloc(1, sizeof *m);
    loader *L = calloc(1, sizeof *L);   // ~12 KB of scratch: not on the stack
    if (!m || !L || !(m->path = strdup(path))) {
        if (map) munmap(map, (size_t)size);
        free(L);
        free(m);
        return cnn_fail(CNN_ERR_NOMEM, "%s: out of memory while loading", path);
    }
    m->map = map;
    m->map_size = map ? (size_t)size : 0;
    m->file = bytes;
    m->file_size = (size_t)size;
    L->path = m->path;
    L->model = m;
    L->file = bytes;
    L->size = size;
    cnn_status status = load(L);
    free(L->node_offsets);
    free(L->spans);
    free(L->node_index.slots);
    free(L->tensor_index.slots);
    free(L);
    if (status != CNN_OK) {
        cnn_model_free(m);
        return status;
    }
    *out = m;
    return CNN_OK;
}

cnn_status cnn_model_load(const char *path, cnn_model **out) {
    if (!path || !out) return cnn_fail(CNN_ERR_ARG, "cnn_model_load: path and out are required");
    uint64_t limit;
    TRY(max_model_bytes(&limit));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cnn_fail(CNN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return cnn_fail(CNN_ERR_IO, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return cnn_fail(CNN_ERR_IO, "%s: not a regular file", path);
    }
    // Files that check_size refuses are not mapped (an empty file cannot be).
    uint64_t size = (uint64_t)st.st_size;
    void *map = NULL;
    if (size >= HEADER_BYTES && size <= limit && size <= SIZE_MAX) {
        // Every byte is read at once for the checksum: mapping the pages in one go is ~3x
        // faster than faulting them in one by one as the CRC reaches them. The mapping asks
        // for huge pages first: pages the kernel still has to read come into the page cache
        // in 2 MiB folios, which later mappings of the file map whole. On the 2-vCPU test VM
        // the first touch of every 4 KiB page of a new mapping costs ~0.7 us even when
        // populated (ResNet-50's 102 MB: ~19 ms), of a 2 MiB one ~50 ns per 4 KiB.
        map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int err = errno;
            close(fd);
            return cnn_fail(CNN_ERR_IO, "%s: cannot map %" PRIu64 " bytes: %s", path, size,
                            strerror(err));
        }
#ifdef MADV_HUGEPAGE
        madvise(map, (size_t)size, MADV_HUGEPAGE);   // hints: no error if the kernel says no
#endif
#ifdef MADV_POPULATE_READ
        // Linux 5.14+; on an older kernel this fails and the CRC faults the pages in instead.
        madvise(map, (size_t)size, MADV_POPULATE_READ);
#endif
    }
    close(fd);   // the mapping keeps the file
    return load_bytes(path, map, size, map, out);
}

void cnn_model_release_pages(const cnn_model *m, const void *p, size_t bytes) {
    if (!m->map || !p) return;
    uintptr_t map = (uintptr_t)m->map, start = (uintptr_t)p, end = start + bytes;
    if (start < map || end > map + m->map_size) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t first = (start + page - 1) / page * page, last = end / page * page;
    // A private, read-only file mapping: dropped pages read the file again, nothing is lost.
    if (last > first) madvise((void *)first, last - first, MADV_DONTNEED);
}

cnn_status cnn_model_load_memory(const void *bytes, size_t size, const char *name,
                                 cnn_model **out) {
    if (!out || (!bytes && size > 0)) {
        return cnn_fail(CNN_ERR_ARG, "cnn_model_load_memory: bytes and out are required");
    }
    if (!name) name = "(memory)";
    if ((uintptr_t)bytes % DATA_ALIGN != 0) {
        return cnn_fail(CNN_ERR_ARG, "%s: cnn_model_load_memory: the bytes must start at a "
                                     "multiple of %d (tensors are used in place)",
                        name, DATA_ALIGN);
    }
    return load_bytes(name, bytes, (uint64_t)size, NULL, out);
}

void cnn_model_free(cnn_model *model) {
    if (!model) return;
    if (model->map) munmap(model->map, model->map_size);
    if (model->class_names) {
        for (int k = 0; k < model->info.num_classes; k++) free(model->class_names[k]);
        free(model->class_names);
    }
    if (model->nodes) {
        for (int i = 0; i < model->n_nodes; i++) free(model->nodes[i].name);
        free(model->nodes);
    }
    if (model->tensors) {
        for (int i = 0; i < model->n_tensors; i++) free(model->tensors[i].name);
        free(model->tensors);
    }
    free(model->warnings);
    free(model->prepared_layout);
    free(model->name);
    free(model->arch);
    free(model->path);
    free(model);
}

// ---------------------------------------------------------------------------------------------
// Inspection

const cnn_model_info *cnn_model_get_info(const cnn_model *model) {
    return &model->info;
}

const char *cnn_model_warnings(const cnn_model *model) {
    return model->warnings;
}

int cnn_model_node_count(const cnn_model *model) {
    return model->n_nodes;
}

int cnn_model_output_node(const cnn_model *model) {
    return model->n_nodes - 1;
}

void cnn_model_node(const cnn_model *model, int i, cnn_node_info *out) {
    memset(out, 0, sizeof *out);
    if (i < 0 || i >= model->n_nodes) return;
    const cnn_node *n = &model->nodes[i];
    out->name = n->name;
    out->op = n->op;
    out->n_inputs = n->n_inputs;
    out->inputs[0] = n->inputs[0];
    out->inputs[1] = n->inputs[1];
    out->ndim = n->ndim;
    out->c = n->c;
    out->h = n->h;
    out->w = n->w;
    out->window = n->window;
    out->params = n->params;
    out->macs = n->macs;
}

// Suggestions for a mistyped name: the three names with the smallest edit distance. Ties go
// to the name whose numbers are closest ("features.16" -> features.15 before features.1),
// then to the earlier one.

// Levenshtein distance between the first SUGGEST_MAX_CHARS characters of a and b (longer names
// would make a lookup on a hostile model quadratic in 4096-byte names for nothing).
#define SUGGEST_MAX_CHARS 256

static int edit_distance(const char *a, const char *b) {
    int row[SUGGEST_MAX_CHARS + 1];   // row[j]: distance(a[0..i), b[0..j))
    size_t na = strnlen(a, SUGGEST_MAX_CHARS), nb = strnlen(b, SUGGEST_MAX_CHARS);
    for (size_t j = 0; j <= nb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= na; i++) {
        int diagonal = row[0];   // distance(a[0..i-1), b[0..j-1))
        row[0] = (int)i;
        for (size_t j = 1; j <= nb; j++) {
            int above = row[j];
            int substitute = diagonal + (a[i - 1] != b[j - 1]);
            int insert_or_delete = (above < row[j - 1] ? above : row[j - 1]) + 1;
            row[j] = substitute < insert_or_delete ? substitute : insert_or_delete;
            diagonal = above;
        }
    }
    return row[nb];
}

// Sum of |x_k - y_k| over the k-th runs of digits of a and b (saturating).
static uint64_t number_gap(const char *a, const char *b) {
    uint64_t gap = 0;
    while (*a && *b) {
        while (*a && (*a < '0' || *a > '9')) a++;
        while (*b && (*b < '0' || *b > '9')) b++;
        if (!*a || !*b) break;
        uint64_t x = 0, y = 0;
        for (; *a >= '0' && *a <= '9'; a++) x = x < 100000000 ? x * 10 + (uint64_t)(*a - '0') : x;
        for (; *b >= '0' && *b <= '9'; b++) y = y < 100000000 ? y * 10 + (uint64_t)(*b - '0') : y;
        gap += x > y ? x - y : y - x;
    }
    return gap;
}

typedef const char *(*name_at_fn)(const cnn_model *model, int i);

static const char *node_name_at(const cnn_model *model, int i) {
    return model->nodes[i].name;
}

static const char *tensor_name_at(const cnn_model *model, int i) {
    return model->tensors[i].name;
}

// Writes "; closest: a, b, c" (or nothing) into buf.
static void closest_names(const cnn_model *model, int count, name_at_fn name_at,
                          const char *query, char *buf, size_t size) {
    buf[0] = '\0';
    if (count == 0) return;
    enum { SHOW = 3 };
    int best[SHOW], best_distance[SHOW], found = 0;
    uint64_t best_gap[SHOW];
    for (int i = 0; i < count; i++) {
        const char *name = name_at(model, i);
        int distance = edit_distance(query, name);
        uint64_t gap = number_gap(query, name);
        int pos = found;   // insertion sort into the best SHOW
        while (pos > 0 && (distance < best_distance[pos - 1] ||
                           (distance == best_distance[pos - 1] && gap < best_gap[pos - 1]))) {
            pos--;
        }
        if (pos >= SHOW) continue;
        int last = found < SHOW ? found : SHOW - 1;
        for (int k = last; k > pos; k--) {
            best[k] = best[k - 1];
            best_distance[k] = best_distance[k - 1];
            best_gap[k] = best_gap[k - 1];
        }
        best[pos] = i;
        best_distance[pos] = distance;
        best_gap[pos] = gap;
        if (found < SHOW) found++;
    }
    size_t used = (size_t)snprintf(buf, size, "; closest: ");
    for (int k = 0; k < found && used < size; k++) {
        int n = snprintf(buf + used, size - used, "%s%s", k ? ", " : "", name_at(model, best[k]));
        if (n < 0) break;
        used += (size_t)n;
    }
}

int cnn_model_find_node(const cnn_model *model, const char *name) {
    if (!name) {
        cnn_fail(CNN_ERR_ARG, "cnn_model_find_node: no layer name given");
        return -1;
    }
    for (int i = 0; i < model->n_nodes; i++) {
        if (strcmp(model->nodes[i].name, name) == 0) return i;
    }
    char suggestions[800];
    closest_names(model, model->n_nodes, node_name_at, name, suggestions, sizeof suggestions);
    cnn_fail(CNN_ERR_ARG, "no layer '%s' in %s%s", name, model->path, suggestions);
    return -1;
}

const cnn_stored_tensor *cnn_model_find_tensor(const cnn_model *model, const char *name) {
    for (int i = 0; i < model->n_tensors; i++) {
        if (strcmp(model->tensors[i].name, name) == 0) return &model->tensors[i];
    }
    return NULL;
}

const char *cnn_model_prepared_layout(const cnn_model *model) {
    return model->prepared_layout;
}

cnn_status cnn_model_tensor(const cnn_model *model, const char *name, cnn_tensor *out) {
    if (!name) return cnn_fail(CNN_ERR_ARG, "cnn_model_tensor: no tensor name given");
    for (int i = 0; i < model->n_tensors; i++) {
        const cnn_stored_tensor *t = &model->tensors[i];
        if (strcmp(t->name, name) != 0) continue;
        out->ndim = t->ndim;
        for (int k = 0; k < 4; k++) out->dims[k] = k < t->ndim ? t->dims[k] : 1;
        out->data = (float *)t->data;   // read-only: the mapping is PROT_READ
        return CNN_OK;
    }
    char suggestions[800];
    closest_names(model, model->n_tensors, tensor_name_at, name, suggestions, sizeof suggestions);
    return cnn_fail(CNN_ERR_ARG, "no tensor '%s' in %s%s", name, model->path, suggestions);
}
