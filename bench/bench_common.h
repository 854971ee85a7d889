// bench_common.h - what conv_bench.c and winograd_bench.c share: the clock (wall, or with
// --cpu the calling thread's CPU time, which a loaded machine's lost time slices do not
// count), seeded random data, the median of the timed runs and the relative difference of two
// outputs.
#ifndef CNNSCOPE_BENCH_COMMON_H
#define CNNSCOPE_BENCH_COMMON_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int use_cpu_clock = 0;   // --cpu

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(use_cpu_clock ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "%s: out of memory (%zu bytes)\n", __FILE__, bytes);
        exit(1);
    }
    return p;
}

// n floats uniform in [-scale, scale), from the LCG state *seed.
static float *random_floats(size_t n, float scale, unsigned *seed) {
    float *p = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        p[i] = scale * ((float)(*seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f);
    }
    return p;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The median of v[0..n) (sorts v).
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, compare_doubles);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// max |a - b| / max |b|
static double relative_diff(const float *a, const float *b, size_t n) {
    double diff = 0, scale = 1e-30;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return diff / scale;
}

#endif
