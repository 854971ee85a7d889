// check.h - the assertion every C unit test uses: counts a failure and prints where and why,
// then carries on, so one run reports every broken check. main() returns failures != 0.
// Also the error measure the tests compare arrays with.
#ifndef CNNSCOPE_TEST_CHECK_H
#define CNNSCOPE_TEST_CHECK_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>

static int failures = 0;
#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (!(cond)) {                                                \
            failures++;                                               \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);               \
            printf(__VA_ARGS__);                                      \
            printf("\n");                                             \
        }                                                             \
    } while (0)

// max |a - b| / max |b| over n values; a NaN difference (an element never written, or a NaN
// where the reference has none) gives infinity, and so does any difference from an all-zero b.
static inline double rel_error(const float *a, const float *b, size_t n) {
    double diff = 0, scale = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        diff = isnan(d) ? INFINITY : fmax(diff, d);
        scale = fmax(scale, fabs((double)b[i]));
    }
    return diff / scale;
}

#endif
