// random.h - the seeded random numbers of the C unit tests: a fixed LCG, so every run tests the
// same shapes and values. Define RNG_SEED before including it (each test has its own stream).
// xmalloc exits with status 2 when memory runs out (a test cannot go on without it).
#ifndef CNNSCOPE_TEST_RANDOM_H
#define CNNSCOPE_TEST_RANDOM_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef RNG_SEED
#error "define RNG_SEED before including random.h"
#endif

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "%s: out of memory (%zu bytes)\n", __FILE__, bytes);
        exit(2);
    }
    return p;
}

static uint32_t rng_state = RNG_SEED;

static uint32_t rng_next(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;   // 24 good bits
}

static int rng_int(int lo, int hi) {   // uniform in [lo, hi]
    return lo + (int)(rng_next() % (uint32_t)(hi - lo + 1));
}

static float rng_float(void) {   // uniform in [-1, 1)
    return (float)rng_next() / (float)(1u << 24) * 2.0f - 1.0f;
}

static float *random_array(size_t n, float scale) {
    float *p = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = scale * rng_float();
    return p;
}

#endif
