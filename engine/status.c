// status.c - the thread-local error message behind cnn_last_error() / cnn_fail().
//
// The engine never prints: a failing function sets this thread's message and returns its
// status, as stb does with stbi_failure_reason(). Each thread has its own fixed-size buffer,
// so there is nothing to allocate (a failed malloc can still be reported) and nothing to lock.
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cnnscope.h"

// Long enough for a path, a node name and a sentence; longer messages are cut, never overflow.
#define CNN_ERROR_MAX 2048

static _Thread_local char last_error[CNN_ERROR_MAX];

const char *cnn_last_error(void) {
    return last_error;
}

cnn_status cnn_fail(cnn_status status, const char *fmt, ...) {
    // Format into a scratch buffer first: callers may pass cnn_last_error() itself as an
    // argument (to add context to an earlier message), and vsnprintf's source and destination
    // must not overlap.
    char message[CNN_ERROR_MAX];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    if (n < 0) {
        snprintf(message, sizeof message, "(unformattable error message: '%s')", fmt);
    }
    memcpy(last_error, message, sizeof message);
    return status;
}
