// test_npy.c - .npy reading and writing, and cnn_write_atomic: round trips, the exact bytes
// numpy writes, headers numpy or others may write (versions 2.0/3.0, other spellings), every
// kind of bad file (dtype, order, shape, truncation, overflow), and that no corrupted file
// crashes the reader. Works in a fresh temporary directory.
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnnscope.h"

#include "check.h"

static char dir[256];

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(bytes, 1, n, f) != n || fclose(f) != 0) {
        printf("FAIL: cannot write test file %s\n", path);
        exit(1);
    }
}

static size_t read_bytes(const char *path, unsigned char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

// A .npy file with the given version and header text (used as is) followed by `data_bytes`
// bytes of float data 0.0, 1.0, 2.0, ...
static void write_npy_raw(const char *path, int major, const char *header, size_t data_bytes) {
    size_t hlen = strlen(header);
    size_t pre = major == 1 ? 10 : 12;
    unsigned char *buf = calloc(1, pre + hlen + data_bytes + 4);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    buf[8] = hlen & 0xff;
    buf[9] = (hlen >> 8) & 0xff;
    if (major != 1) {
        buf[10] = (hlen >> 16) & 0xff;
        buf[11] = (hlen >> 24) & 0xff;
    }
    memcpy(buf + pre, header, hlen);
    for (size_t i = 0; i < data_bytes / 4; i++) {
        float v = (float)i;
        memcpy(buf + pre + hlen + 4 * i, &v, 4);
    }
    write_bytes(path, buf, pre + hlen + data_bytes);
    free(buf);
}

// Expects cnn_npy_read to fail with `status` and a message containing `needle` (and the path),
// leaving the outputs untouched.
static void expect_read_error(const char *path, cnn_status status, const char *needle) {
    float sentinel;
    float *data = &sentinel;
    int ndim = -7;
    int64_t dims[8] = {-3, -3, -3, -3, -3, -3, -3, -3};
    cnn_status st = cnn_npy_read(path, &data, &ndim, dims);
    const char *msg = cnn_last_error();
    CHECK(st == status, "%s: status %d, expected %d (message: %s)", path, st, status, msg);
    CHECK(strstr(msg, needle) != NULL, "%s: message '%s' lacks '%s'", path, msg, needle);
    CHECK(strstr(msg, path) != NULL, "message '%s' does not name the file %s", msg, path);
    CHECK(data == &sentinel && ndim == -7 && dims[0] == -3,
          "%s: outputs were changed by a failing read", path);
    if (st == CNN_OK && data != &sentinel) cnn_npy_free(data);
}

static int count_temp_files(void) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

static void test_round_trip(void) {
    static const int64_t shapes[][8] = {{0}, {5}, {0}, {2, 3}, {1, 2, 3, 4}, {2, 1, 2, 1, 2, 1, 2, 1}};
    static const int ndims[] = {0, 1, 1, 2, 4, 8};
    for (int s = 0; s < 6; s++) {
        int nd = ndims[s];
        int64_t n = 1;
        for (int i = 0; i < nd; i++) n *= shapes[s][i];
        float *x = malloc(sizeof(float) * (size_t)(n ? n : 1));
        for (int64_t i = 0; i < n; i++) x[i] = (float)(i * 0.37 - 1.5);
        if (n > 3) {
            x[1] = INFINITY;
            x[2] = -0.0f;
            x[3] = 1e-40f;   // a subnormal
        }
        const char *path = tmp_path("round.npy");
        CHECK(cnn_npy_write(path, x, nd, shapes[s]) == CNN_OK, "write ndim %d: %s", nd,
              cnn_last_error());
        float *y = NULL;
        int ndim = -1;
        int64_t dims[8];
        CHECK(cnn_npy_read(path, &y, &ndim, dims) == CNN_OK, "read ndim %d: %s", nd,
              cnn_last_error());
        if (!y) continue;
        CHECK(ndim == nd, "ndim %d, expected %d", ndim, nd);
        CHECK(nd == 0 || memcmp(dims, shapes[s], sizeof(int64_t) * (size_t)nd) == 0,
              "shape %d differs after the round trip", s);
        for (int i = nd; i < 8; i++) CHECK(dims[i] == 1, "unused dims[%d] = %lld", i, (long long)dims[i]);
        CHECK(n == 0 || memcmp(x, y, sizeof(float) * (size_t)n) == 0,
              "values differ after the round trip (shape %d)", s);
        cnn_npy_free(y);
        free(x);

        // The exact layout numpy uses: version 1.0, header padded so data starts at 64k.
        unsigned char buf[256];
        size_t got = read_bytes(path, buf, sizeof buf);
        CHECK(got >= 64 && memcmp(buf, "\x93NUMPY\x01\x00", 8) == 0, "bad magic/version");
        size_t hlen = buf[8] | (buf[9] << 8);
        CHECK((10 + hlen) % 64 == 0, "header length %zu: data not 64-byte aligned", hlen);
        CHECK(got >= 10 + hlen && buf[10 + hlen - 1] == '\n', "header does not end in newline");
    }
    CHECK(count_temp_files() == 0, "temporary files left behind");

    // The header text, byte for byte as numpy 1.24 writes it (np.save of zeros((2, 3)) is 152
    // bytes: a 128-byte header with room for the first dimension to grow).
    int64_t d23[2] = {2, 3};
    float six[6] = {0};
    const char *path = tmp_path("hdr.npy");
    cnn_npy_write(path, six, 2, d23);
    unsigned char buf[256];
    size_t got = read_bytes(path, buf, sizeof buf);
    const char *want = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    CHECK(got == 128 + 24 && memcmp(buf + 10, want, strlen(want)) == 0,
          "header text differs from numpy's: '%.60s' (%zu bytes)", buf + 10, got);
    int64_t d5[1] = {5};
    cnn_npy_write(path, six, 1, d5);
    got = read_bytes(path, buf, sizeof buf);
    want = "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }";
    CHECK(memcmp(buf + 10, want, strlen(want)) == 0, "1-d header: '%.60s'", buf + 10);
    cnn_npy_write(path, six, 0, NULL);
    got = read_bytes(path, buf, sizeof buf);
    want = "{'descr': '<f4', 'fortran_order': False, 'shape': (), }";
    CHECK(got == 128 + 4 && memcmp(buf + 10, want, strlen(want)) == 0, "0-d header: '%.60s'",
          buf + 10);
}

// Headers written by other versions and writers, all valid.
static void test_header_variants(void) {
    struct {
        int major;
        const char *header;
        int ndim;
        int64_t d0, d1;
    } ok[] = {
        {2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }      \n", 2, 2, 3},
        {3, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }\n", 1, 6, 1},
        {1, "{\"shape\": (3, 2), \"fortran_order\": False, \"descr\": \"<f4\"}\n", 2, 3, 2},
        {1, "{ 'descr' : '<f4' , 'fortran_order' : False , 'shape' : ( 3 , 2 , ) }   \n", 2, 3, 2},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }\n", 2, 2, 3},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }\n", 2, 0, 4},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        const char *path = tmp_path("variant.npy");
        int64_t n = ok[i].d0 * (ok[i].ndim == 2 ? ok[i].d1 : 1);
        write_npy_raw(path, ok[i].major, ok[i].header, (size_t)n * 4);
        float *x = NULL;
        int ndim;
        int64_t dims[8];
        cnn_status st = cnn_npy_read(path, &x, &ndim, dims);
        CHECK(st == CNN_OK, "variant %zu: %s", i, cnn_last_error());
        if (st != CNN_OK) continue;
        CHECK(ndim == ok[i].ndim && dims[0] == ok[i].d0 && (ndim < 2 || dims[1] == ok[i].d1),
              "variant %zu: ndim %d dims %lld,%lld", i, ndim, (long long)dims[0],
              (long long)dims[1]);
        CHECK(n < 2 || (x[0] == 0.0f && x[n - 1] == (float)(n - 1)), "variant %zu: data", i);
        cnn_npy_free(x);
    }
}

static void test_bad_files(void) {
    char big[600];
    const char *p = tmp_path("bad.npy");

    write_npy_raw(p, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n", 16);
    expect_read_error(p, CNN_ERR_FORMAT, "dtype '<f8' not supported; expected float32 ('<f4')");
    write_npy_raw(p, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n", 8);
    expect_read_error(p, CNN_ERR_FORMAT, "dtype '>f4' not supported");
    write_npy_raw(p, 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }\n", 16);
    expect_read_error(p, CNN_ERR_FORMAT, "dtype '<i8'");
    write_npy_raw(p, 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }\n", 8);
    expect_read_error(p, CNN_ERR_FORMAT, "structured");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }\n", 16);
    expect_read_error(p, CNN_ERR_FORMAT, "Fortran order");

    // Shapes: truncated data, extra data, more elements than the file holds (must fail before
    // allocating 2^40 floats: FORMAT, not NOMEM), overflow, negatives, too many dims.
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", 20);
    expect_read_error(p, CNN_ERR_FORMAT, "truncated");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", 28);
    expect_read_error(p, CNN_ERR_FORMAT, "extra bytes");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }\n", 8);
    expect_read_error(p, CNN_ERR_FORMAT, "truncated");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n", 8);
    expect_read_error(p, CNN_ERR_FORMAT, "too many elements");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }\n", 8);
    expect_read_error(p, CNN_ERR_FORMAT, "overflows");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 2), }\n", 8);
    expect_read_error(p, CNN_ERR_FORMAT, "negative");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }\n", 4);
    expect_read_error(p, CNN_ERR_FORMAT, "more than 8 dimensions");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3), }\n", 12);
    expect_read_error(p, CNN_ERR_FORMAT, "not a tuple");

    // Header structure.
    write_npy_raw(p, 1, "{'descr': '<f4', 'shape': (2,), }\n", 8);
    expect_read_error(p, CNN_ERR_FORMAT, "'fortran_order'");
    write_npy_raw(p, 1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", 8);
    expect_read_error(p, CNN_ERR_FORMAT, "repeated key 'descr'");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}\n", 8);
    expect_read_error(p, CNN_ERR_FORMAT, "key 'x'");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': Nope, 'shape': (2,), }\n", 8);
    expect_read_error(p, CNN_ERR_FORMAT, "True or False");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } junk\n", 8);
    expect_read_error(p, CNN_ERR_FORMAT, "after the dict");
    write_npy_raw(p, 1, "{'descr': '<f4, 'fortran_order': False, 'shape': (2,), }\n", 8);
    expect_read_error(p, CNN_ERR_FORMAT, "bad .npy header");
    write_npy_raw(p, 1, "['descr', '<f4']\n", 8);
    expect_read_error(p, CNN_ERR_FORMAT, "expected '{'");
    write_npy_raw(p, 4, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", 8);
    expect_read_error(p, CNN_ERR_FORMAT, "version 4.0 not supported");

    // Prelude: bad magic, too short, header length past the end, empty, missing.
    write_bytes(p, "\x93NUMPX\x01\x00\x10\x00{}", 12);
    expect_read_error(p, CNN_ERR_FORMAT, "not a .npy file");
    write_bytes(p, "\x93NUM", 4);
    expect_read_error(p, CNN_ERR_FORMAT, "too short");
    write_bytes(p, "\x93NUMPY\x01\x00\xff\xff{'descr'", 17);
    expect_read_error(p, CNN_ERR_FORMAT, "does not fit");
    write_bytes(p, "\x93NUMPY\x02\x00\xff\xff\xff\x7f{}", 14);
    expect_read_error(p, CNN_ERR_FORMAT, "does not fit");
    write_bytes(p, "", 0);
    expect_read_error(p, CNN_ERR_FORMAT, "too short");
    memcpy(big, "\x93NUMPY\x01\x00\x06\x00{'d\0'}", 16);
    write_bytes(p, big, 16);
    expect_read_error(p, CNN_ERR_FORMAT, "NUL");
    expect_read_error(tmp_path("missing.npy"), CNN_ERR_IO, "No such file");
    expect_read_error(dir, CNN_ERR_IO, "not a regular file");
}

// Every truncation and many byte corruptions of a valid file: the reader must return either
// CNN_OK with the right element count or an error, and never crash (run under ASan too).
static void test_fuzz(void) {
    const char *good = tmp_path("good.npy");
    int64_t d[3] = {2, 3, 4};
    float x[24];
    for (int i = 0; i < 24; i++) x[i] = (float)i;
    cnn_npy_write(good, x, 3, d);
    unsigned char orig[512], buf[512];
    size_t n = read_bytes(good, orig, sizeof orig);
    CHECK(n == 128 + 96, "good file has %zu bytes", n);
    const char *p = tmp_path("fuzz.npy");
    int ok = 0, errors = 0;
    for (size_t len = 0; len < n; len++) {
        write_bytes(p, orig, len);
        float *y = NULL;
        int nd;
        int64_t dims[8];
        if (cnn_npy_read(p, &y, &nd, dims) == CNN_OK) {
            ok++;
            cnn_npy_free(y);
        } else {
            errors++;
        }
    }
    CHECK(ok == 0 && errors == (int)n, "truncated files: %d read as valid", ok);

    uint32_t seed = 12345;
    for (int trial = 0; trial < 3000; trial++) {
        memcpy(buf, orig, n);
        for (int k = 0; k < 1 + trial % 4; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t pos = (seed >> 8) % 128;   // corrupt the prelude and header
            seed = seed * 1103515245u + 12345u;
            buf[pos] = (unsigned char)(seed >> 16);
        }
        write_bytes(p, buf, n);
        float *y = NULL;
        int nd = 0;
        int64_t dims[8];
        if (cnn_npy_read(p, &y, &nd, dims) == CNN_OK) {
            int64_t numel = 1;
            for (int i = 0; i < nd; i++) numel *= dims[i];
            CHECK(numel == 24, "corrupted file read as %lld elements", (long long)numel);
            cnn_npy_free(y);
        } else {
            CHECK(cnn_last_error()[0] != '\0', "error without a message");
        }
    }
}

// A writer that fails half way.
static cnn_status failing_writer(void *user, FILE *f) {
    (void)user;
    fputs("partial", f);
    return cnn_fail(CNN_ERR_IO, "simulated failure");
}

static cnn_status text_writer(void *user, FILE *f) {
    fputs((const char *)user, f);
    return CNN_OK;
}

static void test_atomic_write(void) {
    const char *p = tmp_path("atomic.txt");
    CHECK(cnn_write_atomic(p, text_writer, "first") == CNN_OK, "%s", cnn_last_error());
    unsigned char buf[64] = {0};
    CHECK(read_bytes(p, buf, sizeof buf) == 5 && memcmp(buf, "first", 5) == 0, "content");

    // A failing writer leaves the old file exactly as it was, and no temporary file.
    cnn_status st = cnn_write_atomic(p, failing_writer, NULL);
    CHECK(st == CNN_ERR_IO && strcmp(cnn_last_error(), "simulated failure") == 0,
          "failing writer: status %d message '%s'", st, cnn_last_error());
    memset(buf, 0, sizeof buf);
    CHECK(read_bytes(p, buf, sizeof buf) == 5 && memcmp(buf, "first", 5) == 0,
          "old content damaged by a failed write: '%s'", buf);
    CHECK(count_temp_files() == 0, "temporary file left after a failed write");

    // A failing writer for a new file creates nothing.
    const char *fresh = tmp_path("never.txt");
    cnn_write_atomic(fresh, failing_writer, NULL);
    CHECK(access(fresh, F_OK) != 0, "a failed write created %s", fresh);

    // Replacing works.
    CHECK(cnn_write_atomic(p, text_writer, "second!") == CNN_OK, "%s", cnn_last_error());
    CHECK(read_bytes(p, buf, sizeof buf) == 7 && memcmp(buf, "second!", 7) == 0, "replace");

    // A directory that does not exist: an IO error naming the path and the reason.
    const char *nodir = tmp_path("no/such/dir/x.npy");
    float v = 1.0f;
    int64_t one = 1;
    st = cnn_npy_write(nodir, &v, 1, &one);
    CHECK(st == CNN_ERR_IO && strstr(cnn_last_error(), nodir) &&
              strstr(cnn_last_error(), "No such file or directory"),
          "missing directory: status %d message '%s'", st, cnn_last_error());

    // Renaming over a directory fails after the data was written: the temporary file goes.
    const char *subdir = tmp_path("adir");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && touch '%s/keep'", subdir, subdir);
    CHECK(system(cmd) == 0, "mkdir");
    st = cnn_npy_write(subdir, &v, 1, &one);
    CHECK(st == CNN_ERR_IO && strstr(cnn_last_error(), subdir), "rename over a directory: %d '%s'",
          st, cnn_last_error());
    CHECK(count_temp_files() == 0, "temporary file left after a failed rename");

    // Bad arguments to cnn_npy_write.
    int64_t neg[2] = {2, -1};
    CHECK(cnn_npy_write(tmp_path("neg.npy"), &v, 2, neg) == CNN_ERR_ARG, "negative dim");
    CHECK(cnn_npy_write(tmp_path("nine.npy"), &v, 9, neg) == CNN_ERR_ARG, "ndim 9");
    CHECK(cnn_npy_write(tmp_path("null.npy"), NULL, 1, &one) == CNN_ERR_ARG, "NULL data");
    CHECK(access(tmp_path("neg.npy"), F_OK) != 0, "a refused write created a file");
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/cnnscope_test_npy_XXXXXX");
    if (!mkdtemp(dir)) {
        printf("FAIL: mkdtemp\n");
        return 1;
    }
    test_round_trip();
    test_header_variants();
    test_bad_files();
    test_fuzz();
    test_atomic_write();

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", dir);
    if (failures) {
        printf("test_npy: %d check(s) FAILED\n", failures);
        return 1;
    }
    printf("test_npy: all checks passed\n");
    return 0;
}
