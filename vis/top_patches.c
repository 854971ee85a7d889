// top_patches.c - bounded min-heaps of the best activations per channel (see the header).
//
// Dims legend: n images in a batch, C channels, h x w positions, k hits kept per slot,
// P = per_image.
//
// Each heap keeps its worst hit at the root, so a new hit costs one comparison when it does
// not make the list, and O(log k) when it does.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "top_patches.h"

int vis_hit_better(const vis_hit *a, const vis_hit *b) {
    if (a->activation != b->activation) return a->activation > b->activation;
    if (a->image != b->image) return a->image < b->image;
    if (a->y != b->y) return a->y < b->y;
    return a->x < b->x;
}

typedef struct {
    vis_hit *items;        // [capacity] heap order: items[0] is the worst
    int count, capacity;
} hit_heap;

static void heap_sift_down(hit_heap *hp, int i) {
    vis_hit *a = hp->items;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, worst = i;
        if (l < hp->count && vis_hit_better(&a[worst], &a[l])) worst = l;
        if (r < hp->count && vis_hit_better(&a[worst], &a[r])) worst = r;
        if (worst == i) return;
        vis_hit tmp = a[i];
        a[i] = a[worst];
        a[worst] = tmp;
        i = worst;
    }
}

static void heap_offer(hit_heap *hp, const vis_hit *h) {
    vis_hit *a = hp->items;
    if (hp->count < hp->capacity) {   // not full: sift up
        int i = hp->count++;
        a[i] = *h;
        while (i > 0) {
            int parent = (i - 1) / 2;
            if (!vis_hit_better(&a[parent], &a[i])) break;
            vis_hit tmp = a[i];
            a[i] = a[parent];
            a[parent] = tmp;
            i = parent;
        }
        return;
    }
    if (!vis_hit_better(h, &a[0])) return;
    a[0] = *h;
    heap_sift_down(hp, 0);
}

struct vis_top_k {
    int n_slots, k, per_image;
    hit_heap *heaps;       // [n_slots], each of capacity k
    hit_heap *scratch;     // [n_slots], each of capacity P: one image's best positions
    vis_hit *storage;      // [n_slots * (k + P)]
};

cnn_status vis_top_k_create(int n_slots, int k, int per_image, vis_top_k **out) {
    if (n_slots < 1 || k < 1 || per_image < 0 || k > 1000000 || per_image > 1000000)
        return cnn_fail(CNN_ERR_ARG, "top-k: %d channels, k %d, per image %d: expected >= 1, "
                        "1..1000000, 0..1000000", n_slots, k, per_image);
    vis_top_k *t = calloc(1, sizeof *t);
    size_t per_slot = (size_t)k + (size_t)per_image;
    if (t) {
        t->heaps = calloc((size_t)n_slots, sizeof(hit_heap));
        t->scratch = calloc((size_t)n_slots, sizeof(hit_heap));
        t->storage = malloc(sizeof(vis_hit) * per_slot * (size_t)n_slots);
    }
    if (!t || !t->heaps || !t->scratch || !t->storage) {
        vis_top_k_free(t);
        return cnn_fail(CNN_ERR_NOMEM, "top-k: out of memory for %d channels x %d hits",
                        n_slots, k);
    }
    t->n_slots = n_slots;
    t->k = k;
    t->per_image = per_image;
    for (int s = 0; s < n_slots; s++) {
        t->heaps[s] = (hit_heap){t->storage + per_slot * s, 0, k};
        t->scratch[s] = (hit_heap){t->storage + per_slot * s + k, 0, per_image};
    }
    *out = t;
    return CNN_OK;
}

void vis_top_k_free(vis_top_k *t) {
    if (!t) return;
    free(t->heaps);
    free(t->scratch);
    free(t->storage);
    free(t);
}

int vis_top_k_capacity(const vis_top_k *t) { return t->k; }

// Position of the maximum of m[0..n), the first one on ties; NaNs never win; -1 if all are NaN.
// Two passes over data that is still in cache: the maximum, in 16 independent lanes so that the
// compiler keeps them in vector registers (a single running maximum would be a serial chain of
// dependent compares); then the first block of 16 that holds it, found with the same lane-wise
// trick, and the position inside that block.
#define LANES 16
static int first_max(const float *m, int n) {
    float lane[LANES];
    for (int j = 0; j < LANES; j++) lane[j] = -INFINITY;
    int p = 0;
    for (; p + LANES <= n; p += LANES)
        for (int j = 0; j < LANES; j++) lane[j] = m[p + j] > lane[j] ? m[p + j] : lane[j];
    float max = -INFINITY;
    for (int j = 0; j < LANES; j++) max = lane[j] > max ? lane[j] : max;
    for (int q = p; q < n; q++) max = m[q] > max ? m[q] : max;
    for (p = 0; p + LANES <= n; p += LANES) {
        int found = 0;
        for (int j = 0; j < LANES; j++) found |= m[p + j] == max;
        if (found) break;
    }
    for (; p < n; p++)   // NaN != max, so the first match is a real maximum
        if (m[p] == max) return p;
    return -1;
}
#undef LANES

// One image's map m [h, w] for one slot.
static void add_map(const vis_top_k *t, int slot, const float *m, int h, int w, int image) {
    hit_heap *heap = &t->heaps[slot];
    if (t->per_image == 1) {   // the common case: the map's maximum, first in row-major order
        int best = first_max(m, h * w);
        if (best < 0) return;
        vis_hit hit = {m[best], image, best / w, best % w};
        heap_offer(heap, &hit);
        return;
    }
    // Every position competes, directly (no limit) or first within the image (limit P).
    hit_heap *target = t->per_image == 0 ? heap : &t->scratch[slot];
    target->count = target == heap ? target->count : 0;
    int full = target->count == target->capacity;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            float v = m[y * w + x];
            // cheap rejection: not better than the worst kept (ties need the full order)
            if (isnan(v) || (full && v < target->items[0].activation)) continue;
            vis_hit hit = {v, image, y, x};
            heap_offer(target, &hit);
            full = target->count == target->capacity;
        }
    }
    if (target != heap)
        for (int i = 0; i < target->count; i++) heap_offer(heap, &target->items[i]);
}

void vis_top_k_add(vis_top_k *t, const float *out, int n, int C, int h, int w,
                   const int *channels, const int *images) {
    size_t hw = (size_t)h * w;
    // Slots are independent: each is updated by exactly one thread, images in batch order.
    // Small batches are not worth waking the other threads for.
    int parallel = (size_t)t->n_slots * (size_t)n * hw >= 65536;
    (void)parallel;   // unused without OpenMP
    #pragma omp parallel for schedule(static) if (parallel)
    for (int s = 0; s < t->n_slots; s++) {
        for (int i = 0; i < n; i++)
            add_map(t, s, out + ((size_t)i * C + channels[s]) * hw, h, w, images[i]);
    }
}

static int compare_hits(const void *pa, const void *pb) {
    const vis_hit *a = pa, *b = pb;
    return vis_hit_better(a, b) ? -1 : vis_hit_better(b, a) ? 1 : 0;
}

int vis_top_k_sorted(const vis_top_k *t, int slot, vis_hit *hits) {
    const hit_heap *heap = &t->heaps[slot];
    memcpy(hits, heap->items, sizeof(vis_hit) * (size_t)heap->count);
    qsort(hits, (size_t)heap->count, sizeof(vis_hit), compare_hits);
    return heap->count;
}

void vis_patch_crop(const uint8_t *image, int H, int W, int channels, int y0, int x0, int y1,
                    int x1, uint8_t *tile) {
    static const uint8_t outside[3] = {VIS_OUTSIDE_RGB};
    int tw = x1 - x0 + 1;
    for (int y = y0; y <= y1; y++) {
        for (int x = x0; x <= x1; x++) {
            uint8_t *p = tile + ((size_t)(y - y0) * tw + (x - x0)) * 3;
            if (y < 0 || y >= H || x < 0 || x >= W) {
                memcpy(p, outside, 3);
                continue;
            }
            const uint8_t *q = image + ((size_t)y * W + x) * channels;
            p[0] = q[0];
            p[1] = q[channels == 3 ? 1 : 0];
            p[2] = q[channels == 3 ? 2 : 0];
        }
    }
}
