// dispatch.c - picks the micro-kernels of this process, once: the widest ISA that this build
// contains and this CPU (and its OS) supports, unless CNNSCOPE_ISA forces one.
//
// The only place that knows which ISAs exist. x86-64: __builtin_cpu_supports, whose CPUID
// probe (libgcc / compiler-rt) also checks with XGETBV that the OS saves the AVX and AVX-512
// register state, so "avx512f" means usable, not merely present. aarch64: HWCAP_ASIMD from
// the auxiliary vector. A CNNSCOPE_ISA that is unknown or unavailable here leaves the default
// in place and is reported by cnn_isa_check() (the CLI turns that into exit status 2).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)   // from the kernel's uapi/asm/hwcap.h, for old libc headers
#endif
#endif

#include "cnnscope.h"
#include "kernels.h"

// Indexed by cnn_isa_id; an ISA this build does not contain has gemm == NULL.
static const cnn_kernel_table tables[] = {
    [CNN_ISA_SCALAR] = {CNN_ISA_SCALAR, "scalar", cnn_f32_gemm_4x16__scalar, 4, 16, 256,
                        cnn_f32_gemv_4x16__scalar, NULL, NULL},
#if defined(__x86_64__)
    [CNN_ISA_AVX2] = {CNN_ISA_AVX2, "avx2", cnn_f32_gemm_6x16__avx2, 6, 16, 256,
                      cnn_f32_gemv_4x16__avx2, NULL, cnn_f32_gemm_rows_6x16__avx2},
    [CNN_ISA_AVX512] = {CNN_ISA_AVX512, "avx512", cnn_f32_gemm_14x32__avx512, 14, 32, 256,
                        cnn_f32_gemv_4x32__avx512, cnn_f32_gemv2_4x32__avx512,
                        cnn_f32_gemm_rows_14x32__avx512},
#else
    [CNN_ISA_AVX2] = {CNN_ISA_AVX2, "avx2", NULL, 0, 0, 0, NULL, NULL, NULL},
    [CNN_ISA_AVX512] = {CNN_ISA_AVX512, "avx512", NULL, 0, 0, 0, NULL, NULL, NULL},
#endif
#if defined(__aarch64__)
    [CNN_ISA_NEON] = {CNN_ISA_NEON, "neon", cnn_f32_gemm_8x8__neon, 8, 8, 256,
                      cnn_f32_gemv_4x16__neon, NULL, NULL},
#else
    [CNN_ISA_NEON] = {CNN_ISA_NEON, "neon", NULL, 0, 0, 0, NULL, NULL, NULL},
#endif
};
_Static_assert(sizeof tables / sizeof tables[0] == CNN_ISA_COUNT,
               "dispatch.c: one kernel table per cnn_isa_id");

// Whether this CPU can run `isa` (the build may still lack it: see tables[]).
static int cpu_supports(cnn_isa_id isa) {
    switch (isa) {
    case CNN_ISA_SCALAR:
        return 1;
#if defined(__x86_64__)
    case CNN_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CNN_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f");
#endif
#if defined(__aarch64__)
    case CNN_ISA_NEON:
        return (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0;
#endif
    default:
        return 0;
    }
}

const cnn_kernel_table *cnn_kernels_for(cnn_isa_id isa) {
    if ((int)isa < 0 || isa >= CNN_ISA_COUNT || !tables[isa].gemm || !cpu_supports(isa)) {
        return NULL;
    }
    return &tables[isa];
}

// "scalar, avx2, avx512": the ISAs usable here, for error messages.
static void list_available(char *buf, size_t size) {
    buf[0] = '\0';
    for (int isa = 0; isa < CNN_ISA_COUNT; isa++) {
        if (!cnn_kernels_for((cnn_isa_id)isa)) continue;
        size_t used = strlen(buf);
        snprintf(buf + used, size - used, "%s%s", used ? ", " : "", tables[isa].name);
    }
}

cnn_status cnn_kernels_parse_isa(const char *value, cnn_isa_id *isa) {
    char available[64];
    list_available(available, sizeof available);
    for (int i = 0; i < CNN_ISA_COUNT; i++) {
        if (strcmp(value, tables[i].name) != 0) continue;
        if (!cnn_kernels_for((cnn_isa_id)i)) {
            return cnn_fail(CNN_ERR_ARG, "CNNSCOPE_ISA=%s: this %s lacks %s; available here: %s",
                            value, tables[i].gemm ? "CPU" : "build (compiled for another CPU "
                            "architecture)", value, available);
        }
        *isa = (cnn_isa_id)i;
        return CNN_OK;
    }
    return cnn_fail(CNN_ERR_ARG, "CNNSCOPE_ISA=%s: unknown instruction set; expected scalar, "
                    "avx2, avx512 or neon (available here: %s)", value, available);
}

// The selection, made once by select_kernels(). `forced_error` keeps the message of a bad
// CNNSCOPE_ISA so that cnn_isa_check() can report it on whichever thread asks.
static pthread_once_t selection_once = PTHREAD_ONCE_INIT;
static const cnn_kernel_table *selected;
static cnn_status forced_status = CNN_OK;
static char forced_error[256];

static void select_kernels(void) {
    // The widest usable ISA: later entries of cnn_isa_id are wider, except that x86 and arm
    // entries never both exist.
    cnn_isa_id best = CNN_ISA_SCALAR;
    for (int isa = 0; isa < CNN_ISA_COUNT; isa++) {
        if (cnn_kernels_for((cnn_isa_id)isa)) best = (cnn_isa_id)isa;
    }
    const char *env = getenv("CNNSCOPE_ISA");
    if (env && env[0]) {
        cnn_isa_id forced;
        // cnn_fail writes this thread's message: save and restore it, since the selection may
        // run inside any call and must not change what that thread reports.
        char saved[2048];
        snprintf(saved, sizeof saved, "%s", cnn_last_error());
        forced_status = cnn_kernels_parse_isa(env, &forced);
        if (forced_status == CNN_OK) best = forced;
        else snprintf(forced_error, sizeof forced_error, "%s", cnn_last_error());
        cnn_fail(CNN_OK, "%s", saved);
    }
    selected = &tables[best];
}

const cnn_kernel_table *cnn_kernels(void) {
    pthread_once(&selection_once, select_kernels);
    return selected;
}

int cnn_kernels_force(cnn_isa_id isa) {
    const cnn_kernel_table *t = cnn_kernels_for(isa);
    if (!t) return 0;
    pthread_once(&selection_once, select_kernels);
    selected = t;
    return 1;
}

const char *cnn_isa(void) {
    return cnn_kernels()->name;
}

cnn_status cnn_isa_check(void) {
    cnn_kernels();
    if (forced_status != CNN_OK) return cnn_fail(forced_status, "%s", forced_error);
    return CNN_OK;
}
