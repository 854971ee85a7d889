// check.h - the assertion every C unit test uses: counts a failure and prints where and why,
// then carries on, so one run reports every broken check. main() returns failures != 0.
#ifndef CNNSCOPE_TEST_CHECK_H
#define CNNSCOPE_TEST_CHECK_H

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

#endif
