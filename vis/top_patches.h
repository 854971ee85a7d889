// top_patches.h - the K strongest activations of each channel over a stream of images.
//
// One bounded min-heap of K hits per selected channel ("slot"): memory is O(slots * K)
// whatever the number of images. Hits are ordered by a total order, best first:
//     larger activation; then smaller image index; then smaller y; then smaller x
// so the top-K list is fully determined by the data: the same for any batch size, any number
// of threads and any order in which the batches arrive. NaN activations are never kept.
//
// per_image limits how many hits one image may place in one channel's list: its per_image
// best positions (same order) compete; 0 = no limit (every position competes).
//
//     vis_top_k *t;
//     vis_top_k_create(n_slots, K, 1, &t);
//     for each batch: vis_top_k_add(t, out /* [n,C,h,w] */, n, C, h, w, channels, images);
//     int got = vis_top_k_sorted(t, slot, hits);   // hits[0..got), best first
//     vis_top_k_free(t);
#ifndef CNNSCOPE_TOP_PATCHES_H
#define CNNSCOPE_TOP_PATCHES_H

#include "cnnscope.h"

typedef struct {
    float activation;
    int image;             // the caller's image index
    int y, x;              // position in the layer's output (0, 0 for [N, F] layers)
} vis_hit;

// 1 if a ranks before b in the order above.
int vis_hit_better(const vis_hit *a, const vis_hit *b);

typedef struct vis_top_k vis_top_k;

// n_slots >= 1 lists of at most k >= 1 hits each; per_image >= 0.
cnn_status vis_top_k_create(int n_slots, int k, int per_image, vis_top_k **out);
void vis_top_k_free(vis_top_k *t);

// Offers a batch: out is [n, C, h, w] (use h = w = 1 for [n, F]); slot s reads channel
// channels[s]; image i of the batch has index images[i]. Slots are processed in parallel
// (OpenMP), each by one thread.
void vis_top_k_add(vis_top_k *t, const float *out, int n, int C, int h, int w,
                   const int *channels, const int *images);

// Copies slot s's hits, best first, into hits (room for k); returns how many (<= k).
int vis_top_k_sorted(const vis_top_k *t, int slot, vis_hit *hits);

// The k of vis_top_k_create.
int vis_top_k_capacity(const vis_top_k *t);

// ---------------------------------------------------------------------------------------------
// Patches: the input pixels a hit saw.

// Colour of the part of a patch that lies outside the image (in the padding).
#define VIS_OUTSIDE_RGB 128, 0, 128

// Crops box (inclusive input coordinates, may extend outside the image; see
// receptive_field.h) from image [H, W, channels] (1 or 3) into tile
// [y1 - y0 + 1, x1 - x0 + 1, 3]: pixels inside the image are copied (gray as R = G = B),
// pixels outside are VIS_OUTSIDE_RGB.
void vis_patch_crop(const uint8_t *image, int H, int W, int channels, int y0, int x0, int y1,
                    int x1, uint8_t *tile);

#endif
