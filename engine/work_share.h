// work_share.h - a parallel loop's items shared out among its threads: each thread works
// through its own run first, as schedule(static) would give it, then takes what is left of the
// others' runs.
//
// Why not schedule(static): the two vCPUs of a shared VM do not run at the same speed (seen on
// a Zen 3 VM: two one-thread runs side by side, one on each vCPU, 43 and 58 ms), so every step
// of a layer waits at its end for the slower thread. Why not schedule(dynamic): every item is
// then a round trip of one shared counter between the cores (~100 ns), and neighbouring items,
// which share cache lines of the input, land on different cores. Here each thread claims the
// items of its own run from a counter that only it touches while it has work; a thread whose
// run is done takes half of what is left of the run with the most left (into its own slot, so
// that it can be taken from again), from that run's far end.
//
// Which thread runs an item never changes what the item computes, so results stay independent
// of the schedule and of the thread count.
//
//   work_share ws;
//   work_share_begin(&ws, items);         // before the parallel region
//   #pragma omp parallel
//   for (long i; (i = work_share_next(&ws)) >= 0;) do_item(i);
#ifndef CNNSCOPE_WORK_SHARE_H
#define CNNSCOPE_WORK_SHARE_H

#include <assert.h>
#include <stdatomic.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { WORK_SHARE_SLOTS = 16 };   // threads beyond this many only take from the others' runs

// A run of items [lo, hi) as one word, lo | hi << 32, so that its owner (taking from lo) and a
// thief (taking from hi) change it with one compare-and-swap each. One cache line per run.
typedef struct {
    _Alignas(64) _Atomic uint64_t run;
} work_share_slot;

typedef struct {
    int slots;
    work_share_slot slot[WORK_SHARE_SLOTS];
} work_share;

static inline uint32_t work_share_lo(uint64_t run) { return (uint32_t)run; }
static inline uint32_t work_share_hi(uint64_t run) { return (uint32_t)(run >> 32); }
static inline uint64_t work_share_run(uint32_t lo, uint32_t hi) {
    return lo | (uint64_t)hi << 32;
}

// Items [0, items) in equal runs, one for each thread a parallel region started here would
// have (one, inside a parallel region: nested regions run serially).
static inline void work_share_begin(work_share *ws, long items) {
    assert(items >= 0 && items <= (long)UINT32_MAX);
    int threads = 1;
#ifdef _OPENMP
    if (!omp_in_parallel()) threads = omp_get_max_threads();
#endif
    ws->slots = threads < WORK_SHARE_SLOTS ? threads : WORK_SHARE_SLOTS;
    for (int s = 0; s < ws->slots; s++) {
        uint32_t lo = (uint32_t)(items * s / ws->slots);
        uint32_t hi = (uint32_t)(items * (s + 1) / ws->slots);
        atomic_init(&ws->slot[s].run, work_share_run(lo, hi));
    }
}

// The next item for the calling thread, or -1 when every item has been taken.
static inline long work_share_next(work_share *ws) {
    int me = 0;
#ifdef _OPENMP
    me = omp_get_thread_num();
#endif
    _Atomic uint64_t *own = me < ws->slots ? &ws->slot[me].run : NULL;
    if (own) {   // the front of its own run
        uint64_t run = atomic_load_explicit(own, memory_order_relaxed);
        while (work_share_lo(run) < work_share_hi(run)) {
            if (atomic_compare_exchange_weak(own, &run, run + 1)) return work_share_lo(run);
        }
    }
    for (;;) {   // half of what is left of the longest other run, from its back
        int victim = -1;
        uint64_t run = 0;
        uint32_t most = 0;
        for (int s = 0; s < ws->slots; s++) {
            uint64_t r = atomic_load_explicit(&ws->slot[s].run, memory_order_relaxed);
            if (work_share_hi(r) - work_share_lo(r) > most) {
                most = work_share_hi(r) - work_share_lo(r);
                victim = s;
                run = r;
            }
        }
        if (victim < 0) return -1;
        uint32_t lo = work_share_lo(run), hi = work_share_hi(run);
        uint32_t take = own ? (hi - lo + 1) / 2 : 1, first = hi - take;
        if (atomic_compare_exchange_strong(&ws->slot[victim].run, &run,
                                           work_share_run(lo, first))) {
            // The rest of the taken part becomes this thread's run. Its slot is empty, and
            // nobody swaps an empty run, so a plain store cannot lose anyone's change.
            if (take > 1) atomic_store(own, work_share_run(first + 1, hi));
            return first;
        }
    }
}

#endif
