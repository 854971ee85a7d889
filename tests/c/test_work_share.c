// test_work_share.c - engine/work_share.h: every item of a loop is run exactly once, whatever
// the number of threads (fewer, as many or more than its slots) and however unevenly fast they
// are; each thread starts on its own run, in order; a thread that finishes early takes over
// part of a slower one's run.
#include <stdatomic.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "check.h"
#include "work_share.h"

// A busy wait of about `spins` steps, that the compiler keeps.
static void spin(long spins) {
    volatile long sink = 0;
    for (long i = 0; i < spins; i++) sink += i;
    (void)sink;
}

// Runs `items` items on `threads` threads, thread 0 taking `slow_spins` per item (the slow
// vCPU). Checks that each item ran once; returns how many items thread `counted` ran, and in
// *in_order whether thread 0 got its items in increasing order.
static long run_items(int threads, long items, long slow_spins, int counted, int *in_order) {
    int *runs = calloc((size_t)items + 1, sizeof(int));
    long done_by_counted = 0, last_of_0 = -1;
    int ordered = 1;
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    work_share ws;
    work_share_begin(&ws, items);
    #pragma omp parallel
    {
        int me = 0;
#ifdef _OPENMP
        me = omp_get_thread_num();
#endif
        for (long i; (i = work_share_next(&ws)) >= 0;) {
            #pragma omp atomic update
            runs[i < items ? i : items]++;   // runs[items]: items out of range
            if (me == counted) {
                #pragma omp atomic update
                done_by_counted++;
            }
            if (me == 0) {
                if (i < last_of_0) ordered = 0;
                last_of_0 = i;
                spin(slow_spins);
            }
        }
    }
    for (long i = 0; i < items; i++)
        CHECK(runs[i] == 1, "threads %d items %ld: item %ld ran %d times", threads, items, i,
              runs[i]);
    CHECK(runs[items] == 0, "threads %d items %ld: %d items out of range", threads, items,
          runs[items]);
    *in_order = ordered;
    free(runs);
    return done_by_counted;
}

int main(void) {
    int in_order;
    // Every item once, for fewer threads than slots, as many, and more (20). (Under clang,
    // the sanitized build, only up to 4: its libomp does not free the threads of larger teams
    // at exit, and LeakSanitizer reports them; the gcc build runs them all.)
#if defined(__clang__)
    int thread_counts[] = {1, 2, 3, 4};
#else
    int thread_counts[] = {1, 2, 3, 4, 7, 16, 20};
#endif
    long item_counts[] = {0, 1, 2, 5, 16, 97, 1000, 100003};
    for (size_t t = 0; t < sizeof thread_counts / sizeof *thread_counts; t++) {
        for (size_t n = 0; n < sizeof item_counts / sizeof *item_counts; n++) {
            long by_0 = run_items(thread_counts[t], item_counts[n], 0, 0, &in_order);
            if (thread_counts[t] == 1) {   // alone, a thread runs the items in order
                CHECK(in_order && by_0 == item_counts[n], "1 thread, %ld items: %ld run, %s",
                      item_counts[n], by_0, in_order ? "in order" : "out of order");
            }
        }
    }
#ifdef _OPENMP
    // Thread 0 slow: thread 1 ends up doing much more than its half of 400 items.
    long by_fast = run_items(2, 400, 200000, 1, &in_order);
    CHECK(by_fast > 260, "the fast thread ran %ld of 400 items (its own run is 200)", by_fast);
    // And inside a region that runs on one thread (nested), everything still runs, once.
    omp_set_num_threads(2);
    #pragma omp parallel num_threads(2)
    {
        #pragma omp single
        {
            int dummy;
            run_items(2, 50, 0, 0, &dummy);
        }
    }
#endif
    printf("%s\n", failures ? "test_work_share: FAILED" : "test_work_share: all passed");
    return failures != 0;
}
