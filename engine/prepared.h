// prepared.h - conv weights prepared once and stored in the model file (cnnscope pack).
//
// A session prepares every conv's weights before its first run (session.c): the batch norm
// folded in, then transformed for Winograd or packed for the GEMM kernels in use. For
// ResNet-50 that is ~150 MB written at every load, most of the load's time. cnn_model_pack
// writes a copy of the model file that also holds these prepared weights, exactly the bytes a
// session computes, one float32 tensor per conv:
//
//     prepared/<node>/<form>      form: winograd, packed or packed_t (the transposed product),
//                                 "+bn" appended when a batch norm is folded in
//
// each one run of floats: the folded bias (K floats, padded to a multiple of 16) when there is
// one, then the weights as the kernels read them. The meta key "prepared" names the layout
// they were computed for (prepared_layout: the format's PREPARED_VERSION, the ISA, the GEMM
// kernel's register tile and slice of K). A session whose layout is the same reads them in
// place from the mapping; any other session (another ISA, Winograd off, a kept conv that is
// therefore not folded) finds no tensor of its name and prepares that conv itself, so the
// numbers are the same either way. The loader validates these tensors like all others (bounds,
// alignment, CRC, non-finite values).
//
// PREPARED_VERSION must change whenever the prepared bytes would: the folding, the Winograd
// transform or the packing (tests/test_pack.sh compares a packed file's outputs, byte for byte,
// with the plain file's).
#ifndef CNNSCOPE_PREPARED_H
#define CNNSCOPE_PREPARED_H

#include <stddef.h>

#include "cnnscope.h"

#define PREPARED_META_KEY "prepared"
#define PREPARED_PREFIX "prepared/"
enum { PREPARED_VERSION = 1, PREPARED_LAYOUT_MAX = 128 };

// The layout of the weights a session of this process prepares (the kernels in use), e.g.
// "cnnscope prepared weights v1: avx2, gemm 6x16, kc 256".
void prepared_layout(char buf[PREPARED_LAYOUT_MAX]);

// Conv i's prepared weights in session s: its tensor name (into name, PREPARED_LAYOUT_MAX +
// the node name's length is enough) and its run of floats. Returns 0 when the conv has none
// (it reads its stored weights: the reference kernels, a grouped conv).
int session_prepared_weights(const cnn_session *s, int i, char *name, size_t name_size,
                             const float **data, size_t *floats);

#endif
