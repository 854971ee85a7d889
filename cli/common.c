// common.c - argument parsing and the helpers every command shares.
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <math.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"

// The hard limits every command accepts (engine/cnnscope.h: checked before allocating).
static const char limit_help[] =
    "  --max-pixels P    refuse images of more than P pixels (default 100000000)\n"
    "  --max-model-mb M  refuse model files larger than M MiB (default 4096)\n";

static void print_help(const cli_command_spec *spec) {
    printf("usage: cnnscope %s %s\n\n%s\n", spec->command, spec->usage, spec->summary);
    if (spec->n_options > 0) printf("\noptions:\n");
    for (int i = 0; i < spec->n_options; i++)
        printf("  %-14s %s\n", spec->options[i].name, spec->options[i].help);
    printf("  %-14s %s\n", "--help", "show this help");
    printf("\nlimits (every command):\n%s", limit_help);
}

int cli_usage_error(const char *command, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cnnscope %s: ", command);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see cnnscope %s --help)\n", command);
    va_end(ap);
    return EXIT_ERROR;
}

static int parse_int(const char *text, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

// argv[*i] is --max-pixels or --max-model-mb: applies it, steps past its value and returns 0;
// EXIT_ERROR after a message for a bad value; -1 if argv[*i] is neither.
static int parse_limit_option(const char *command, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    int is_pixels = strcmp(a, "--max-pixels") == 0, is_model = strcmp(a, "--max-model-mb") == 0;
    if (!is_pixels && !is_model) return -1;
    if (*i + 1 >= argc) return cli_usage_error(command, "%s needs a value", a);
    const char *v = argv[++*i];
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    long long hi = is_pixels ? INT64_C(1) << 40 : INT64_C(1) << 20;   // 1 T pixels, 1 TiB
    if (errno || *end || end == v || n < 1 || n > hi)
        return cli_usage_error(command, "%s needs an integer in 1..%lld, not '%s'", a, hi, v);
    if (is_pixels) cnn_set_max_pixels(n);
    else cnn_set_max_model_bytes(n << 20);
    return 0;
}

int cli_parse(const cli_command_spec *spec, int argc, char **argv, const char **pos, int *n_pos) {
    *n_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_help(spec);
            return EXIT_OK;
        }
        if (a[0] == '-' && a[1] != '\0') {
            const cli_option *o = NULL;
            for (int k = 0; k < spec->n_options; k++)
                if (strcmp(a, spec->options[k].name) == 0) o = &spec->options[k];
            if (!o) {
                int r = parse_limit_option(spec->command, argc, argv, &i);
                if (r == 0) continue;
                if (r > 0) return r;
            }
            if (!o) return cli_usage_error(spec->command, "unknown option '%s'", a);
            if (o->kind == OPT_FLAG) {
                *(int *)o->value = 1;
                continue;
            }
            if (i + 1 >= argc) return cli_usage_error(spec->command, "%s needs a value", a);
            const char *v = argv[++i];
            if (o->kind == OPT_STRING) {
                *(const char **)o->value = v;
            } else if (parse_int(v, o->lo, o->hi, (int *)o->value) != 0) {
                return cli_usage_error(spec->command, "%s needs an integer in %d..%d, not '%s'", a,
                                       o->lo, o->hi, v);
            }
            continue;
        }
        if (*n_pos >= spec->max_positional)
            return cli_usage_error(spec->command, "unexpected argument '%s'", a);
        pos[(*n_pos)++] = a;
    }
    if (*n_pos < spec->min_positional)
        return cli_usage_error(spec->command, "missing arguments; usage: cnnscope %s %s",
                               spec->command, spec->usage);
    return CLI_CONTINUE;
}

int cli_error(void) {
    fprintf(stderr, "cnnscope: %s\n", cnn_last_error());
    return EXIT_ERROR;
}

void cli_set_threads(int threads) {
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads(threads);
#else
    (void)threads;
#endif
}

cnn_model *cli_load_model(const char *path) {
    cnn_model *m = NULL;
    if (cnn_isa_check() != CNN_OK) {   // CNNSCOPE_ISA names an unknown or unavailable ISA
        cli_error();
        return NULL;
    }
    if (cnn_model_load(path, &m) != CNN_OK) {
        cli_error();
        return NULL;
    }
    const char *warnings = cnn_model_warnings(m);   // NaN/Inf weights: load, but say so
    if (warnings) {
        for (const char *line = warnings; *line;) {
            size_t n = strcspn(line, "\n");
            fprintf(stderr, "warning: %.*s\n", (int)n, line);
            line += n + (line[n] == '\n');
        }
    }
    return m;
}

int cli_resolve_layers(const cnn_model *m, const char *list, int **nodes) {
    int count = cnn_model_node_count(m);
    int *out = malloc(sizeof(int) * (size_t)count);
    if (!out) {
        cnn_fail(CNN_ERR_NOMEM, "out of memory");
        cli_error();
        return -1;
    }
    int n = 0;
    if (strcmp(list, "all") == 0) {
        for (int i = 1; i < count; i++) out[n++] = i;
        *nodes = out;
        return n;
    }
    char *copy = strdup(list);
    for (char *tok = copy ? strtok(copy, ",") : NULL; tok; tok = strtok(NULL, ",")) {
        int node = cnn_model_find_node(m, tok);
        if (node < 0) {
            free(copy);
            free(out);
            cli_error();
            return -1;
        }
        int seen = 0;
        for (int k = 0; k < n; k++) seen |= out[k] == node;
        if (!seen && n < count) out[n++] = node;
    }
    free(copy);
    if (n == 0) {
        free(out);
        fprintf(stderr, "cnnscope: no layer named in '%s'\n", list);
        return -1;
    }
    *nodes = out;
    return n;
}

int cli_check_output(const char *command, const char *out) {
    struct stat st;
    if (stat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "cnnscope %s: cannot write %s: it is a folder\n", command, out);
        return EXIT_ERROR;
    }
    const char *slash = strrchr(out, '/');
    char dir[4096] = ".";
    if (slash == out) {
        strcpy(dir, "/");
    } else if (slash) {
        size_t n = (size_t)(slash - out);
        if (n >= sizeof dir) return EXIT_OK;   // too long to check here; the write will tell
        memcpy(dir, out, n);
        dir[n] = '\0';
    }
    const char *problem = NULL;
    if (stat(dir, &st) != 0) problem = strerror(errno);
    else if (!S_ISDIR(st.st_mode)) problem = "not a folder";
    else if (access(dir, W_OK | X_OK) != 0) problem = strerror(errno);
    if (problem) {
        fprintf(stderr, "cnnscope %s: cannot write %s: %s: %s\n", command, out, dir, problem);
        return EXIT_ERROR;
    }
    return EXIT_OK;
}

int cli_mkdirs(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        fprintf(stderr, "cnnscope: %s: path too long\n", path);
        return EXIT_ERROR;
    }
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                fprintf(stderr, "cnnscope: %s: cannot create folder: %s\n", buf, strerror(errno));
                return EXIT_ERROR;
            }
            *p = c;
            if (c == '\0') break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "cnnscope: %s: exists and is not a folder\n", path);
        return EXIT_ERROR;
    }
    return 0;
}

void cli_softmax(float *row, int n) {
    float max = row[0];
    for (int i = 1; i < n; i++) if (row[i] > max) max = row[i];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)row[i] - max);
    for (int i = 0; i < n; i++) row[i] = (float)(exp((double)row[i] - max) / sum);
}

void cli_top_k(const float *row, int n, int k, int *top) {
    for (int j = 0; j < k; j++) top[j] = -1;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < k; j++) {
            if (top[j] < 0 || row[i] > row[top[j]]) {
                for (int t = k - 1; t > j; t--) top[t] = top[t - 1];
                top[j] = i;
                break;
            }
        }
    }
}

void cli_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

void cli_csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const char *p = s; *p; p++) {
        if (*p == '"') fputc('"', f);
        fputc(*p, f);
    }
    fputc('"', f);
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_progress(const char *label, long done, long total, double start) {
    if (!isatty(fileno(stderr))) return;
    double elapsed = cli_now() - start;
    double rate = elapsed > 0 ? done / elapsed : 0;
    double eta = rate > 0 ? (total - done) / rate : 0;
    fprintf(stderr, "\r%s: %ld/%ld (%.0f/s, ETA %.0f s)   ", label, done, total, rate, eta);
    if (done >= total) fprintf(stderr, "\n");
    fflush(stderr);
}
