// peak.c - this machine's roofline: peak FP32 FMA throughput and DRAM read bandwidth, on one
// thread and on all of them, and how long a cache line takes from one core to another and back.
// `make bench` (bench/compare.py) divides cnnscope's GFLOP/s by the peak of the ISA its kernels
// use.
//
//   build/bench/peak [--quick] [--seconds S] [--repeats R] [--mb N]
//
//   --seconds S  length of one timed run (default 0.2; --quick: 0.05)
//   --repeats R  timed runs per measurement, the best counts (default 5; --quick: 2)
//   --mb N       DRAM buffer size in MiB (default: 4 x the largest cache, at least 512 MiB,
//                at most 1/8 of the memory)
//   "All threads" is OpenMP's default team size: set OMP_NUM_THREADS to choose it.
//
// FMA throughput. For each ISA this CPU runs (avx512 = AVX-512F, avx2 = AVX2+FMA, neon on
// aarch64, scalar = the plain C a reference kernel compiles to without ISA flags), a loop of
// fused multiply-adds on many independent accumulators ("chains"). An FMA waits ~4 cycles for
// its own accumulator and a core issues up to 2 (x86) or 4 (big aarch64 cores) per cycle, so
// with chains >= latency x units every unit is busy every cycle and the loop runs at the
// throughput bound, which is the peak any GEMM can reach. One FMA = 2 flops per lane. The
// x86 kernels are compiled with __attribute__((target)) and only called after
// __builtin_cpu_supports said yes, so this file needs no ISA flags and builds anywhere.
// scalar counts a multiply and an add (2 flops) per step: ISO C does not contract them.
//
// DRAM read bandwidth. Sum a float buffer far larger than the largest cache (so nearly every
// line comes from memory), each thread its own contiguous slice, with the widest vector loads
// available and 8 independent accumulators. Bytes read / wall time.
//
// Core-to-core round trip (with at least 2 threads). Two threads hand a counter back and forth,
// each spinning until the other has incremented it: one round trip is the time a cache line
// written by one core takes to reach the other and come back, the price of every value one
// thread writes and another reads (a barrier, or the data the steps of a layer pass on). Cores
// that share a cache answer in tens of nanoseconds, cores that do not in hundreds.
//
// Output: a readable table, then one machine-readable line per measurement:
//   peak_fma_gflops isa=avx512 threads=2 value=651.2
//   dram_read_gbs threads=2 value=64.8
//   core_round_trip_ns value=460.1
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int thread_count(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// ---------------------------------------------------------------------------------------------
// The kernels. fma_loop: `iters` steps, each one FMA (or multiply + add) on every chain; returns
// the sum of the accumulators so that the work cannot be optimised away. read_sum: sum of
// x[0..n). Values stay normal numbers (no denormal slow path): acc += 0.5 * 1e-6 leaves an
// accumulator near 1..16 unchanged, and the scalar acc = acc * 0.999 + c converges to 1000 c.

#define CHAINS_12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define CHAINS_16(X) CHAINS_12(X) X(12) X(13) X(14) X(15)
#define READ_ACCS_8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

// An empty asm that claims to change v: v must live in one scalar register, so the compiler
// cannot turn the scalar chains into vector code behind our back (SLP vectorisation).
#if defined(__x86_64__) || defined(__i386__)
#define KEEP_SCALAR(v) __asm__("" : "+x"(v))
#elif defined(__aarch64__)
#define KEEP_SCALAR(v) __asm__("" : "+w"(v))
#else
#define KEEP_SCALAR(v) (void)0
#endif

#define SCALAR_CHAINS 12
static float fma_loop_scalar(long iters, float seed) {
    const float mul = 0.999f, add = 1e-3f * seed;
#define DECLARE(i) float acc##i = seed + (float)(i);
#define STEP(i) acc##i = acc##i * mul + add; KEEP_SCALAR(acc##i);
#define SUM(i) total += acc##i;
    CHAINS_12(DECLARE)
    for (long it = 0; it < iters; it++) {
        CHAINS_12(STEP)
    }
    float total = 0;
    CHAINS_12(SUM)
#undef DECLARE
#undef STEP
#undef SUM
    return total;
}

static double read_sum_scalar(const float *x, size_t n) {
    float s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; k++) s[k] += x[i + k];
    }
    double total = 0;
    for (; i < n; i++) total += x[i];
    for (int k = 0; k < 8; k++) total += s[k];
    return total;
}

#if defined(__x86_64__) || defined(__i386__)
// 12 chains x 8 lanes: 12 accumulators + 2 constants fit the 16 ymm registers.
#define AVX2_CHAINS 12
__attribute__((target("avx2,fma"))) static float fma_loop_avx2(long iters, float seed) {
    const __m256 x = _mm256_set1_ps(0.5f * seed), y = _mm256_set1_ps(1e-6f);
#define DECLARE(i) __m256 acc##i = _mm256_set1_ps(seed + (float)(i));
#define STEP(i) acc##i = _mm256_fmadd_ps(x, y, acc##i);
#define SUM(i) total = _mm256_add_ps(total, acc##i);
    CHAINS_12(DECLARE)
    for (long it = 0; it < iters; it++) {
        CHAINS_12(STEP)
    }
    __m256 total = _mm256_setzero_ps();
    CHAINS_12(SUM)
#undef DECLARE
#undef STEP
#undef SUM
    float lanes[8];
    _mm256_storeu_ps(lanes, total);
    float s = 0;
    for (int k = 0; k < 8; k++) s += lanes[k];
    return s;
}

__attribute__((target("avx2,fma"))) static double read_sum_avx2(const float *x, size_t n) {
#define DECLARE(i) __m256 acc##i = _mm256_setzero_ps();
#define STEP(k) acc##k = _mm256_add_ps(acc##k, _mm256_loadu_ps(x + i + 8 * (k)));
#define SUM(i) total = _mm256_add_ps(total, acc##i);
    READ_ACCS_8(DECLARE)
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        READ_ACCS_8(STEP)
    }
    __m256 total = _mm256_setzero_ps();
    READ_ACCS_8(SUM)
#undef DECLARE
#undef STEP
#undef SUM
    float lanes[8];
    _mm256_storeu_ps(lanes, total);
    double s = 0;
    for (int k = 0; k < 8; k++) s += lanes[k];
    return s + read_sum_scalar(x + i, n - i);
}

// 16 chains x 16 lanes: AVX-512 has 32 zmm registers.
#define AVX512_CHAINS 16
__attribute__((target("avx512f"))) static float fma_loop_avx512(long iters, float seed) {
    const __m512 x = _mm512_set1_ps(0.5f * seed), y = _mm512_set1_ps(1e-6f);
#define DECLARE(i) __m512 acc##i = _mm512_set1_ps(seed + (float)(i));
#define STEP(i) acc##i = _mm512_fmadd_ps(x, y, acc##i);
#define SUM(i) total = _mm512_add_ps(total, acc##i);
    CHAINS_16(DECLARE)
    for (long it = 0; it < iters; it++) {
        CHAINS_16(STEP)
    }
    __m512 total = _mm512_setzero_ps();
    CHAINS_16(SUM)
#undef DECLARE
#undef STEP
#undef SUM
    return _mm512_reduce_add_ps(total);
}

__attribute__((target("avx512f"))) static double read_sum_avx512(const float *x, size_t n) {
#define DECLARE(i) __m512 acc##i = _mm512_setzero_ps();
#define STEP(k) acc##k = _mm512_add_ps(acc##k, _mm512_loadu_ps(x + i + 16 * (k)));
#define SUM(i) total = _mm512_add_ps(total, acc##i);
    READ_ACCS_8(DECLARE)
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        READ_ACCS_8(STEP)
    }
    __m512 total = _mm512_setzero_ps();
    READ_ACCS_8(SUM)
#undef DECLARE
#undef STEP
#undef SUM
    return (double)_mm512_reduce_add_ps(total) + read_sum_scalar(x + i, n - i);
}

static int has_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static int has_avx512f(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}
#endif

#if defined(__aarch64__)
// 16 chains x 4 lanes: 32 NEON registers; latency 4 x up to 4 FMA pipes on big cores.
#define NEON_CHAINS 16
static float fma_loop_neon(long iters, float seed) {
    const float32x4_t x = vdupq_n_f32(0.5f * seed), y = vdupq_n_f32(1e-6f);
#define DECLARE(i) float32x4_t acc##i = vdupq_n_f32(seed + (float)(i));
#define STEP(i) acc##i = vfmaq_f32(acc##i, x, y);
#define SUM(i) total = vaddq_f32(total, acc##i);
    CHAINS_16(DECLARE)
    for (long it = 0; it < iters; it++) {
        CHAINS_16(STEP)
    }
    float32x4_t total = vdupq_n_f32(0);
    CHAINS_16(SUM)
#undef DECLARE
#undef STEP
#undef SUM
    return vaddvq_f32(total);
}

static double read_sum_neon(const float *x, size_t n) {
#define DECLARE(i) float32x4_t acc##i = vdupq_n_f32(0);
#define STEP(k) acc##k = vaddq_f32(acc##k, vld1q_f32(x + i + 4 * (k)));
#define SUM(i) total = vaddq_f32(total, acc##i);
    READ_ACCS_8(DECLARE)
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        READ_ACCS_8(STEP)
    }
    float32x4_t total = vdupq_n_f32(0);
    READ_ACCS_8(SUM)
#undef DECLARE
#undef STEP
#undef SUM
    return (double)vaddvq_f32(total) + read_sum_scalar(x + i, n - i);
}
#endif

static int always(void) { return 1; }

typedef struct {
    const char *name;          // as cnn_isa() names it
    int chains, lanes;         // flops per loop step = 2 x chains x lanes
    float (*fma_loop)(long iters, float seed);
    double (*read_sum)(const float *x, size_t n);
    int (*cpu_has)(void);
} isa_kernels;

// Widest first: the DRAM measurement uses the first one the CPU has.
static const isa_kernels isas[] = {
#if defined(__x86_64__) || defined(__i386__)
    {"avx512", AVX512_CHAINS, 16, fma_loop_avx512, read_sum_avx512, has_avx512f},
    {"avx2", AVX2_CHAINS, 8, fma_loop_avx2, read_sum_avx2, has_avx2_fma},
#endif
#if defined(__aarch64__)
    {"neon", NEON_CHAINS, 4, fma_loop_neon, read_sum_neon, always},
#endif
    {"scalar", SCALAR_CHAINS, 1, fma_loop_scalar, read_sum_scalar, always},
};
enum { ISA_COUNT = (int)(sizeof isas / sizeof isas[0]) };

// ---------------------------------------------------------------------------------------------
// Measurements.

typedef struct {
    double seconds;   // one timed run
    int repeats;      // timed runs; the best counts
    size_t dram_mb;   // 0: automatic
} settings;

static volatile double sink;   // results land here, so no kernel is dead code

// Steps of one fma_loop call that take about `seconds` on one thread.
static long calibrate_fma_iters(const isa_kernels *k, double seconds) {
    long iters = 1 << 12;
    for (;;) {
        double t0 = seconds_now();
        sink = k->fma_loop(iters, 1.0f);
        double t = seconds_now() - t0;
        if (t > 0.02 || iters > (1L << 40)) {
            double scaled = (double)iters * seconds / (t > 0 ? t : 1e-9);
            return scaled < 1 ? 1 : (long)scaled;
        }
        iters *= 4;
    }
}

// GFLOP/s of `threads` threads, each running the same fma_loop (best of the repeats).
static double measure_fma(const isa_kernels *k, int threads, long iters, int repeats) {
    float *per_thread = calloc((size_t)threads, sizeof(float));
    double best = 0;
    for (int r = 0; r < repeats && per_thread; r++) {
        double t0 = seconds_now();
        int team = 1;
#pragma omp parallel num_threads(threads)
        {
            per_thread[thread_index()] = k->fma_loop(iters, 1.0f + (float)thread_index());
#pragma omp single
            team = thread_count();
        }
        double t = seconds_now() - t0;
        for (int i = 0; i < threads; i++) sink += per_thread[i];
        double gflops = 2.0 * k->chains * k->lanes * (double)iters * team / t * 1e-9;
        if (gflops > best) best = gflops;
    }
    free(per_thread);
    return best;
}

// Bytes of the largest CPU cache (the last level), from sysfs; 0 if unknown.
static size_t largest_cache_bytes(void) {
    size_t largest = 0;
    for (int index = 0; index < 16; index++) {
        char path[96];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        unsigned long long value = 0;
        char unit = 0;
        if (fscanf(f, "%llu%c", &value, &unit) >= 1) {
            size_t bytes = (size_t)value * (unit == 'K' ? 1024u : unit == 'M' ? 1048576u : 1u);
            if (bytes > largest) largest = bytes;
        }
        fclose(f);
    }
#ifdef _SC_LEVEL3_CACHE_SIZE
    if (largest == 0) {
        long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
        if (l3 > 0) largest = (size_t)l3;
    }
#endif
    return largest;
}

static size_t physical_memory_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
}

// Read bandwidth in GB/s of `threads` threads summing their slices of x[0..n) (best of repeats).
static double measure_read(const isa_kernels *k, const float *x, size_t n, int threads,
                           int repeats) {
    double *per_thread = calloc((size_t)threads, sizeof(double));
    double best = 0;
    for (int r = 0; r < repeats && per_thread; r++) {
        double t0 = seconds_now();
#pragma omp parallel num_threads(threads)
        {
            // slices start on 64-byte boundaries (16 floats), the last takes the rest
            size_t t = (size_t)thread_index(), team = (size_t)thread_count();
            size_t per = n / team / 16 * 16;
            size_t begin = t * per, end = t + 1 == team ? n : begin + per;
            per_thread[t] = k->read_sum(x + begin, end - begin);
        }
        double t = seconds_now() - t0;
        for (int i = 0; i < threads; i++) sink += per_thread[i];
        double gbs = (double)n * sizeof(float) / t * 1e-9;
        if (gbs > best) best = gbs;
    }
    free(per_thread);
    return best;
}

// Mean time of one round trip of a counter between threads 0 and 1 over `trips` trips, best of
// `repeats`; 0 if there are not two threads.
static double measure_round_trip_ns(long trips, int repeats) {
    static _Alignas(64) atomic_long turn;   // whose turn: even for thread 0, odd for thread 1
    double best = 0.0;
    for (int r = 0; r < repeats; r++) {
        atomic_store(&turn, 0);
        double start = 0.0, end = 0.0;
        int pair = 0;
#pragma omp parallel num_threads(2)
        {
            long me = thread_index();
            if (thread_count() == 2) {
#pragma omp barrier
                if (me == 0) start = seconds_now();
                for (long i = me; i < 2 * trips; i += 2) {
                    while (atomic_load_explicit(&turn, memory_order_acquire) != i) {}
                    atomic_store_explicit(&turn, i + 1, memory_order_release);
                }
                if (me == 0) {
                    while (atomic_load_explicit(&turn, memory_order_acquire) != 2 * trips) {}
                    end = seconds_now();
                    pair = 1;
                }
            }
        }
        if (!pair) return 0.0;
        double ns = 1e9 * (end - start) / (double)trips;
        if (best == 0.0 || ns < best) best = ns;
    }
    return best;
}

static void print_usage(FILE *out) {
    fprintf(out, "usage: peak [--quick] [--seconds S] [--repeats R] [--mb N]\n"
                 "Peak FP32 FMA throughput per ISA and DRAM read bandwidth, on 1 thread and on\n"
                 "all threads (OMP_NUM_THREADS). See the top of bench/peak.c.\n");
}

static int parse_args(int argc, char **argv, settings *s) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (strcmp(a, "--quick") == 0) {
            s->seconds = 0.05;
            s->repeats = 2;
        } else if (strcmp(a, "--seconds") == 0 && value) {
            s->seconds = strtod(value, &end);
            if (*end || !(s->seconds > 0 && s->seconds <= 60)) goto bad_value;
            i++;
        } else if (strcmp(a, "--repeats") == 0 && value) {
            long r = strtol(value, &end, 10);
            if (*end || r < 1 || r > 1000) goto bad_value;
            s->repeats = (int)r;
            i++;
        } else if (strcmp(a, "--mb") == 0 && value) {
            long mb = strtol(value, &end, 10);
            if (*end || mb < 1 || mb > (1L << 22)) goto bad_value;
            s->dram_mb = (size_t)mb;
            i++;
        } else if (strcmp(a, "--help") == 0) {
            print_usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "peak: unknown or incomplete option '%s'\n", a);
            print_usage(stderr);
            return 0;
        }
        continue;
    bad_value:
        fprintf(stderr, "peak: %s: bad value '%s'\n", a, value);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    settings s = {0.2, 5, 0};
    if (!parse_args(argc, argv, &s)) return 2;

    int all = max_threads();
    int thread_counts[2] = {1, all}, n_counts = all > 1 ? 2 : 1;
    double fma_gflops[ISA_COUNT][2] = {{0}};
    int has[ISA_COUNT] = {0};

    printf("peak FP32 FMA throughput (best of %d runs of ~%.2f s)\n", s.repeats, s.seconds);
#ifndef _OPENMP
    printf("  (built without OpenMP: 1 thread only)\n");
#endif
    // start the thread team before anything is timed
#pragma omp parallel num_threads(all)
    (void)thread_index();
    for (int i = 0; i < ISA_COUNT; i++) {
        const isa_kernels *k = &isas[i];
        if (!k->cpu_has()) {
            printf("  %-7s not supported by this CPU\n", k->name);
            continue;
        }
        has[i] = 1;
        long iters = calibrate_fma_iters(k, s.seconds);
        for (int c = 0; c < n_counts; c++) {
            fma_gflops[i][c] = measure_fma(k, thread_counts[c], iters, s.repeats);
            printf("  %-7s %d thread%s %9.1f GFLOP/s  (%d chains x %d lanes x 2 flops per step)\n",
                   k->name, thread_counts[c], thread_counts[c] > 1 ? "s" : " ", fma_gflops[i][c],
                   k->chains, k->lanes);
            fflush(stdout);
        }
    }

    // DRAM: 4 x the largest cache, at least 512 MiB, at most 1/8 of the memory.
    const isa_kernels *reader = &isas[ISA_COUNT - 1];
    for (int i = 0; i < ISA_COUNT; i++) {
        if (has[i]) {
            reader = &isas[i];
            break;
        }
    }
    size_t cache = largest_cache_bytes(), memory = physical_memory_bytes();
    size_t bytes = s.dram_mb * 1048576;
    if (bytes == 0) {
        bytes = 4 * cache;
        if (bytes < ((size_t)512 << 20)) bytes = (size_t)512 << 20;
        if (memory > 0 && bytes > memory / 8) bytes = memory / 8;
    }
    size_t n = bytes / sizeof(float) / 16 * 16;
    float *x = NULL;
    if (posix_memalign((void **)&x, 64, n * sizeof(float)) != 0) {
        fprintf(stderr, "peak: cannot allocate the %zu MiB DRAM buffer (try --mb)\n", bytes >> 20);
        return 1;
    }
    // first touch by the threads that read the slice (pages land on their NUMA node)
#pragma omp parallel for schedule(static) num_threads(all)
    for (size_t i = 0; i < n; i++) x[i] = 1.0f;
    printf("DRAM read bandwidth (%zu MiB buffer, largest cache %zu MiB, %s loads, best of %d)\n",
           n * sizeof(float) >> 20, cache >> 20, reader->name, s.repeats);
    double read_gbs[2] = {0};
    for (int c = 0; c < n_counts; c++) {
        read_gbs[c] = measure_read(reader, x, n, thread_counts[c], s.repeats);
        printf("  %d thread%s %9.1f GB/s\n", thread_counts[c], thread_counts[c] > 1 ? "s" : " ",
               read_gbs[c]);
        fflush(stdout);
    }
    free(x);

    double round_trip_ns = 0.0;
    if (all > 1) {
        round_trip_ns = measure_round_trip_ns(s.seconds >= 0.2 ? 200000 : 20000, s.repeats);
        if (round_trip_ns > 0.0)
            printf("core-to-core round trip of a cache line (threads 0 and 1): %.0f ns\n",
                   round_trip_ns);
    }

    for (int i = 0; i < ISA_COUNT; i++) {
        for (int c = 0; c < n_counts && has[i]; c++) {
            printf("peak_fma_gflops isa=%s threads=%d value=%.1f\n", isas[i].name,
                   thread_counts[c], fma_gflops[i][c]);
        }
    }
    for (int c = 0; c < n_counts; c++) {
        printf("dram_read_gbs threads=%d value=%.1f\n", thread_counts[c], read_gbs[c]);
    }
    if (round_trip_ns > 0.0) printf("core_round_trip_ns value=%.1f\n", round_trip_ns);
    return 0;
}
