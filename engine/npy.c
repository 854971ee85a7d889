// npy.c - NumPy .npy files holding float32, little-endian, C-order arrays.
//
// Layout (numpy's format.py, versions 1.0, 2.0 and 3.0):
//     "\x93NUMPY" u8 major u8 minor, header length (u16 LE in 1.0, u32 LE in 2.0/3.0),
//     header: a Python dict literal such as
//         {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
//     padded with spaces and ended by '\n', then the raw data.
// Everything read from the file is checked before it is used: the header is parsed by a small
// strict parser (no eval), the shape's element count is overflow-checked and compared with the
// bytes the file really holds before anything is allocated.
#include "cnnscope.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NPY_MAX_DIMS 8
#define NPY_MAX_HEADER (1 << 20)   // numpy itself refuses headers over 10000 bytes by default

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static void swap_bytes_f32(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint8_t b[4];
        memcpy(b, &x[i], 4);
        uint8_t t = b[0]; b[0] = b[3]; b[3] = t;
        t = b[1]; b[1] = b[2]; b[2] = t;
        memcpy(&x[i], b, 4);
    }
}

// ---------------------------------------------------------------------------------------------
// Header parsing: a cursor over the header text; every helper fails with a message naming the
// file and the byte offset inside the header.

typedef struct {
    const char *path;
    const char *s;     // header text (NUL-terminated copy)
    size_t pos;
} header_cursor;

static cnn_status header_error(const header_cursor *hc, const char *what) {
    int shown = (int)strcspn(hc->s, "\r\n");   // keep the message on one line
    if (shown > 120) shown = 120;
    return cnn_fail(CNN_ERR_FORMAT, "%s: bad .npy header at byte %zu: %s (header: %.*s)",
                    hc->path, hc->pos, what, shown, hc->s);
}

static void skip_space(header_cursor *hc) {
    while (hc->s[hc->pos] == ' ' || hc->s[hc->pos] == '\t' || hc->s[hc->pos] == '\n' ||
           hc->s[hc->pos] == '\r') {
        hc->pos++;
    }
}

static int accept(header_cursor *hc, char c) {
    skip_space(hc);
    if (hc->s[hc->pos] != c) return 0;
    hc->pos++;
    return 1;
}

// A quoted Python string without escapes (numpy writes none in these headers) into out.
static cnn_status parse_string(header_cursor *hc, char *out, size_t out_size) {
    skip_space(hc);
    char quote = hc->s[hc->pos];
    if (quote != '\'' && quote != '"') return header_error(hc, "expected a quoted string");
    hc->pos++;
    size_t n = 0;
    while (hc->s[hc->pos] != quote) {
        char c = hc->s[hc->pos];
        if (c == '\0' || c == '\n') return header_error(hc, "unterminated string");
        if (c == '\\') return header_error(hc, "escapes in strings are not supported");
        if (n + 1 >= out_size) return header_error(hc, "string too long");
        out[n++] = c;
        hc->pos++;
    }
    out[n] = '\0';
    hc->pos++;
    return CNN_OK;
}

// A non-negative Python int (Python 2 files may add an 'L'), overflow-checked.
static cnn_status parse_dim(header_cursor *hc, int64_t *out) {
    skip_space(hc);
    const char *p = hc->s + hc->pos;
    if (*p == '-') return header_error(hc, "negative dimension in shape");
    if (*p < '0' || *p > '9') return header_error(hc, "expected an integer in shape");
    int64_t v = 0;
    while (*p >= '0' && *p <= '9') {
        int d = *p - '0';
        if (v > (INT64_MAX - d) / 10) return header_error(hc, "dimension overflows int64");
        v = v * 10 + d;
        p++;
        hc->pos++;
    }
    if (*p == 'L' || *p == 'l') hc->pos++;
    *out = v;
    return CNN_OK;
}

// '(' [dim (',' dim)* [',']] ')'; a 1-tuple needs its comma, as in Python.
static cnn_status parse_shape(header_cursor *hc, int *ndim, int64_t dims[NPY_MAX_DIMS]) {
    if (!accept(hc, '(')) return header_error(hc, "expected '(' to start the shape tuple");
    int n = 0;
    int trailing_comma = 0;
    while (!accept(hc, ')')) {
        if (n == NPY_MAX_DIMS) {
            return cnn_fail(CNN_ERR_FORMAT, "%s: shape has more than %d dimensions; at most %d "
                            "are supported", hc->path, NPY_MAX_DIMS, NPY_MAX_DIMS);
        }
        cnn_status st = parse_dim(hc, &dims[n++]);
        if (st != CNN_OK) return st;
        trailing_comma = accept(hc, ',');
        skip_space(hc);
        if (!trailing_comma && hc->s[hc->pos] != ')') {
            return header_error(hc, "expected ',' or ')' in the shape tuple");
        }
    }
    if (n == 1 && !trailing_comma) return header_error(hc, "(n) is not a tuple; expected (n,)");
    *ndim = n;
    return CNN_OK;
}

typedef struct {
    char descr[64];
    int fortran_order;
    int ndim;
    int64_t dims[NPY_MAX_DIMS];
} npy_header;

static cnn_status parse_header(header_cursor *hc, npy_header *h) {
    int have_descr = 0, have_order = 0, have_shape = 0;
    if (!accept(hc, '{')) return header_error(hc, "expected '{' (a Python dict)");
    while (!accept(hc, '}')) {
        char key[32];
        cnn_status st = parse_string(hc, key, sizeof(key));
        if (st != CNN_OK) return st;
        if (!accept(hc, ':')) return header_error(hc, "expected ':' after a key");
        skip_space(hc);
        if (strcmp(key, "descr") == 0 && !have_descr) {
            have_descr = 1;
            if (hc->s[hc->pos] == '[') {
                return cnn_fail(CNN_ERR_FORMAT, "%s: dtype is a structured type; expected "
                                "float32 ('<f4')", hc->path);
            }
            if ((st = parse_string(hc, h->descr, sizeof(h->descr))) != CNN_OK) return st;
        } else if (strcmp(key, "fortran_order") == 0 && !have_order) {
            have_order = 1;
            if (strncmp(hc->s + hc->pos, "True", 4) == 0) {
                h->fortran_order = 1;
                hc->pos += 4;
            } else if (strncmp(hc->s + hc->pos, "False", 5) == 0) {
                h->fortran_order = 0;
                hc->pos += 5;
            } else {
                return header_error(hc, "fortran_order must be True or False");
            }
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            have_shape = 1;
            if ((st = parse_shape(hc, &h->ndim, h->dims)) != CNN_OK) return st;
        } else {
            char msg[96];
            snprintf(msg, sizeof(msg), "unexpected or repeated key '%s'", key);
            return header_error(hc, msg);
        }
        if (!accept(hc, ',')) {
            skip_space(hc);
            if (hc->s[hc->pos] != '}') return header_error(hc, "expected ',' or '}'");
        }
    }
    skip_space(hc);
    if (hc->s[hc->pos] != '\0') return header_error(hc, "unexpected text after the dict");
    if (!have_descr || !have_order || !have_shape) {
        return cnn_fail(CNN_ERR_FORMAT, "%s: .npy header lacks %s; expected keys 'descr', "
                        "'fortran_order' and 'shape'", hc->path,
                        !have_descr ? "'descr'" : !have_order ? "'fortran_order'" : "'shape'");
    }
    return CNN_OK;
}

static void format_shape(char *buf, size_t size, int ndim, const int64_t *dims) {
    size_t n = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < ndim && n < size; i++) {
        n += (size_t)snprintf(buf + n, size - n, i ? ", %lld" : "%lld", (long long)dims[i]);
    }
    if (n < size) snprintf(buf + n, size - n, ndim == 1 ? ",)" : ")");
}

// ---------------------------------------------------------------------------------------------

cnn_status cnn_npy_read(const char *path, float **data, int *ndim, int64_t dims[8]) {
    if (!path || !data || !ndim || !dims) {
        return cnn_fail(CNN_ERR_ARG, "cnn_npy_read: path, data, ndim and dims must be given");
    }
    FILE *f = fopen(path, "rb");
    if (!f) return cnn_fail(CNN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));

    cnn_status st = CNN_OK;
    char *text = NULL;
    float *values = NULL;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = cnn_fail(CNN_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    int64_t file_size = (int64_t)sb.st_size;

    // Magic, version and header length.
    uint8_t prelude[12];
    if (file_size < 10 || fread(prelude, 1, 10, f) != 10) {
        st = cnn_fail(CNN_ERR_FORMAT, "%s: too short for a .npy file (%lld bytes)", path,
                      (long long)file_size);
        goto done;
    }
    if (memcmp(prelude, "\x93NUMPY", 6) != 0) {
        st = cnn_fail(CNN_ERR_FORMAT, "%s: not a .npy file (it does not start with "
                      "\\x93NUMPY)", path);
        goto done;
    }
    int major = prelude[6], minor = prelude[7];
    if ((major != 1 && major != 2 && major != 3) || minor != 0) {
        st = cnn_fail(CNN_ERR_FORMAT, "%s: .npy format version %d.%d not supported; expected "
                      "1.0, 2.0 or 3.0", path, major, minor);
        goto done;
    }
    int64_t header_len, data_offset;
    if (major == 1) {
        header_len = prelude[8] | (prelude[9] << 8);
        data_offset = 10 + header_len;
    } else {
        if (fread(prelude + 10, 1, 2, f) != 2) {
            st = cnn_fail(CNN_ERR_FORMAT, "%s: truncated .npy header", path);
            goto done;
        }
        header_len = (int64_t)prelude[8] | ((int64_t)prelude[9] << 8) |
                     ((int64_t)prelude[10] << 16) | ((int64_t)prelude[11] << 24);
        data_offset = 12 + header_len;
    }
    if (header_len > NPY_MAX_HEADER || data_offset > file_size) {
        st = cnn_fail(CNN_ERR_FORMAT, "%s: .npy header length %lld does not fit in the "
                      "%lld-byte file (or exceeds %d)", path, (long long)header_len,
                      (long long)file_size, NPY_MAX_HEADER);
        goto done;
    }
    text = malloc((size_t)header_len + 1);
    if (!text) {
        st = cnn_fail(CNN_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    if (fread(text, 1, (size_t)header_len, f) != (size_t)header_len) {
        st = cnn_fail(CNN_ERR_IO, "%s: cannot read the .npy header", path);
        goto done;
    }
    text[header_len] = '\0';
    if (strlen(text) != (size_t)header_len) {
        st = cnn_fail(CNN_ERR_FORMAT, "%s: .npy header contains a NUL byte", path);
        goto done;
    }

    npy_header h = {0};
    header_cursor hc = {path, text, 0};
    if ((st = parse_header(&hc, &h)) != CNN_OK) goto done;
    if (strcmp(h.descr, "<f4") != 0) {
        st = cnn_fail(CNN_ERR_FORMAT, "%s: dtype '%s' not supported; expected float32 ('<f4')",
                      path, h.descr);
        goto done;
    }
    if (h.fortran_order) {
        st = cnn_fail(CNN_ERR_FORMAT, "%s: array is in Fortran order; only C order is "
                      "supported (save np.ascontiguousarray(x))", path);
        goto done;
    }

    // Element count, overflow-checked, against what the file really holds: before allocating.
    char shape_text[256];
    format_shape(shape_text, sizeof(shape_text), h.ndim, h.dims);
    int64_t numel = 1;
    int has_zero = 0;
    for (int i = 0; i < h.ndim; i++) has_zero |= h.dims[i] == 0;
    for (int i = 0; i < h.ndim && !has_zero; i++) {
        if (numel > INT64_MAX / 4 / h.dims[i]) {
            st = cnn_fail(CNN_ERR_FORMAT, "%s: shape %s has too many elements", path,
                          shape_text);
            goto done;
        }
        numel *= h.dims[i];
    }
    if (has_zero) numel = 0;
    int64_t data_bytes = file_size - data_offset;
    if (data_bytes != numel * 4) {
        st = cnn_fail(CNN_ERR_FORMAT, "%s: shape %s of float32 needs %lld data bytes but the "
                      "file has %lld after its %lld-byte header (%s)", path, shape_text,
                      (long long)(numel * 4), (long long)data_bytes, (long long)data_offset,
                      data_bytes < numel * 4 ? "truncated" : "extra bytes at the end");
        goto done;
    }
    if ((uint64_t)numel * 4 > SIZE_MAX) {
        st = cnn_fail(CNN_ERR_LIMIT, "%s: shape %s is too large for this machine", path,
                      shape_text);
        goto done;
    }

    values = malloc(numel > 0 ? (size_t)numel * 4 : 4);
    if (!values) {
        st = cnn_fail(CNN_ERR_NOMEM, "%s: out of memory for %lld floats", path,
                      (long long)numel);
        goto done;
    }
    if (numel > 0 && fread(values, 4, (size_t)numel, f) != (size_t)numel) {
        st = cnn_fail(CNN_ERR_IO, "%s: cannot read %lld floats of data", path,
                      (long long)numel);
        goto done;
    }
    if (!host_is_little_endian()) swap_bytes_f32(values, numel);

    *data = values;
    values = NULL;
    *ndim = h.ndim;
    for (int i = 0; i < NPY_MAX_DIMS; i++) dims[i] = i < h.ndim ? h.dims[i] : 1;

done:
    free(values);
    free(text);
    fclose(f);
    return st;
}

void cnn_npy_free(float *data) { free(data); }

// ---------------------------------------------------------------------------------------------

typedef struct {
    const char *path;
    const char *header;     // magic + version + length + dict, a multiple of 64 bytes
    size_t header_size;
    const float *data;
    int64_t numel;
} npy_writer;

static cnn_status write_npy(void *user, FILE *f) {
    const npy_writer *w = user;
    if (fwrite(w->header, 1, w->header_size, f) != w->header_size) {
        return cnn_fail(CNN_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
    }
    if (host_is_little_endian()) {
        if (w->numel > 0 && fwrite(w->data, 4, (size_t)w->numel, f) != (size_t)w->numel) {
            return cnn_fail(CNN_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
        }
        return CNN_OK;
    }
    for (int64_t i = 0; i < w->numel; i++) {
        float v = w->data[i];
        swap_bytes_f32(&v, 1);
        if (fwrite(&v, 4, 1, f) != 1) {
            return cnn_fail(CNN_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
        }
    }
    return CNN_OK;
}

cnn_status cnn_npy_write(const char *path, const float *data, int ndim, const int64_t *dims) {
    if (!path || ndim < 0 || ndim > NPY_MAX_DIMS || (ndim > 0 && !dims)) {
        return cnn_fail(CNN_ERR_ARG, "%s: cannot write .npy: ndim %d; expected 0..%d with dims",
                        path ? path : "(null)", ndim, NPY_MAX_DIMS);
    }
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0) {
            return cnn_fail(CNN_ERR_ARG, "%s: cannot write .npy: dims[%d] = %lld is negative",
                            path, i, (long long)dims[i]);
        }
        if (dims[i] > 0 && numel > INT64_MAX / 4 / dims[i]) {
            return cnn_fail(CNN_ERR_ARG, "%s: cannot write .npy: too many elements", path);
        }
        numel *= dims[i];
    }
    if (numel > 0 && !data) {
        return cnn_fail(CNN_ERR_ARG, "%s: cannot write .npy: data is NULL", path);
    }

    // Version 1.0: 10-byte prelude + dict padded with spaces so that the data starts at a
    // multiple of 64, the last byte being '\n'. Like numpy (>= 1.23), leave room for the first
    // dimension to grow to 21 digits, so the bytes equal np.save's.
    char shape_text[256];
    format_shape(shape_text, sizeof(shape_text), ndim, dims);
    char header[512];
    int dict_len = snprintf(header + 10, sizeof(header) - 10,
                            "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }",
                            shape_text);
    if (ndim > 0) {
        int digits = snprintf(NULL, 0, "%lld", (long long)dims[0]);
        int growth = 21 - digits;
        memset(header + 10 + dict_len, ' ', (size_t)growth);
        dict_len += growth;
    }
    size_t total = ((size_t)(10 + dict_len + 1) + 63) / 64 * 64;
    memcpy(header, "\x93NUMPY\x01\x00", 8);
    size_t header_len = total - 10;
    header[8] = (char)(header_len & 0xff);
    header[9] = (char)(header_len >> 8);
    memset(header + 10 + dict_len, ' ', total - 10 - (size_t)dict_len - 1);
    header[total - 1] = '\n';

    npy_writer w = {path, header, total, data, numel};
    return cnn_write_atomic(path, write_npy, &w);
}
