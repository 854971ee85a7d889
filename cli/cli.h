// cli.h - shared pieces of the cnnscope command-line tool. Only cli/ prints and exits.
#ifndef CNNSCOPE_CLI_H
#define CNNSCOPE_CLI_H

#include <stdio.h>

#include "cnnscope.h"

// Exit statuses: 0 success, 1 a check the user asked for failed, 2 an error (bad input).
enum { EXIT_OK = 0, EXIT_ERROR = 2 };

typedef enum { OPT_INT, OPT_STRING, OPT_FLAG } cli_option_kind;

typedef struct {
    const char *name;       // "--threads"
    cli_option_kind kind;
    void *value;            // int* (OPT_INT, OPT_FLAG) or const char** (OPT_STRING)
    int lo, hi;             // OPT_INT range
    const char *help;       // one line, e.g. "N  worker threads (default: all cores)"
} cli_option;

typedef struct {
    const char *command;    // "eval"
    const char *usage;      // "MODEL DIR [options]"
    const char *summary;    // what the command does, one paragraph
    const cli_option *options;
    int n_options;
    int min_positional, max_positional;
} cli_command_spec;

#define CLI_CONTINUE (-1)
// Parses argv (after the command name) against `spec`. Positional arguments go to pos[]
// (room for spec->max_positional). Returns CLI_CONTINUE to go on, or an exit status: 0 after
// printing --help, 2 after printing an error.
int cli_parse(const cli_command_spec *spec, int argc, char **argv, const char **pos, int *n_pos);

// Prints "cnnscope: <last error>" to stderr and returns EXIT_ERROR.
int cli_error(void);
// Prints "cnnscope <command>: <message>" to stderr and returns EXIT_ERROR.
int cli_usage_error(const char *command, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

// Worker threads for everything that follows (0 = leave the default).
void cli_set_threads(int threads);

// Loads a model, printing the error if it fails (returns NULL then).
cnn_model *cli_load_model(const char *path);

// Resolves a comma-separated list of layer names (or "all") to node indices (malloc'd).
// "all" gives every node except the input. Returns the count, or -1 after printing an error.
int cli_resolve_layers(const cnn_model *m, const char *list, int **nodes);

// Fails fast (EXIT_ERROR and one message naming the file) when `out` cannot be created: it is
// a folder, or its folder is missing or not writable. For commands that compute for a long
// time or write several files: checked before anything is computed or written.
int cli_check_output(const char *command, const char *out);

// Creates directory `path` and its parents if needed. Returns 0, or EXIT_ERROR after printing.
int cli_mkdirs(const char *path);

// In place: row[0..n) becomes softmax(row).
void cli_softmax(float *row, int n);
// Indices of the k largest values of row[0..n), largest first (ties: lower index first).
void cli_top_k(const float *row, int n, int k, int *top);
// Writes s as a JSON string literal (quotes and escapes included).
void cli_json_string(FILE *f, const char *s);
// Writes s as one CSV field (quoted if it holds a comma, quote or newline).
void cli_csv_field(FILE *f, const char *s);
// Progress on stderr when it is a terminal: "label: done/total (rate/s, ETA)". `start` is
// the time the job began (cli_now()). Prints a final newline when done == total.
double cli_now(void);
void cli_progress(const char *label, long done, long total, double start);

int cmd_info(int argc, char **argv);
int cmd_classify(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);
int cmd_filters(int argc, char **argv);
int cmd_maps(int argc, char **argv);
int cmd_patches(int argc, char **argv);
int cmd_features(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_pack(int argc, char **argv);
int cmd_neighbors(int argc, char **argv);
int cmd_knn_eval(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_explain(int argc, char **argv);
int cmd_report(int argc, char **argv);

#endif
