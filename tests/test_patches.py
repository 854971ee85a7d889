#!/usr/bin/python3
"""test_patches.py - `cnnscope patches` against a brute force over the layer outputs.

Brute force: `cnnscope preprocess DIR` gives the network input of every image (X.paths.txt the
image order) and `cnnscope dump` (in chunks of at most 2,000 images) every output of the
layers; numpy then ranks, for each channel, all candidates (one per image: the map's maximum,
first in row-major order on ties; or the best P per image, or every position) by activation
(descending), then image index, y, x, and keeps the top K. cnnscope patches streams the same
folder and must give exactly that list: same images, positions and float32 activations.

Checked on:
  A. the published CIFAR-10 ResNet-56 over all 10,000 test images: layers relu (after conv1),
     layer1.0 (a residual block), layer1.1.conv1 (a conv: signed, unfolded) and layer3 (=
     layer3.8, the last block), 2 to 16 channels each (all of relu's 16 in one run), K = 10
     and 16; identical lists up to layer1.1.conv1, equal up to near ties for layer3.8 (the
     dump keeps that conv's batch norm unfolded, patches folds it: the last bits differ);
  B. the same network on 400 images (40 per class): layer2.0 (the shortcut_a block), layer3.0
     and the linear layer (whole images); per-image 2 and per-image 0 (no limit) on layer2.0;
     --threads 1 vs 2 give byte-identical index files and grids, --batch 7 and 16 the same
     lists up to near ties;
  C. the default model (weights/fashion_resnet20.cnn, 1x28x28) on 1,000 Fashion-MNIST test
     images: layer2.1, layer3 and the linear layer;
  D. --deconv on the AlexNet-style default model: each cell of the companion grid equals the
     DeconvNet projection `cnnscope explain --neuron` gives for that hit, cropped by its box.
For every hit, the box (index.csv and index.json, which must agree) must equal the receptive
field arithmetic done here from the architecture (3x3 convs with padding 1, stride 2 where a
stage starts, the option-A shortcut as a 1x1 stride-2 window, the union at each add), and the
pixels of each grid cell must equal the crop of the preprocessed image (the part outside the
image purple), scaled by max(1, 96 // size). Progress must stay off stderr when it is not a
terminal; an unreadable image is skipped with a warning.

OMP_WAIT_POLICY=passive is set for the cnnscope runs: on a machine whose cores are busy with
other work, libgomp's default spinning at barriers makes 2-thread runs 10-20x slower.
Env: BUILD, CNNSCOPE, SHARED. Missing shared data or default model is a failure.
Quick mode (CNNSCOPE_TEST_QUICK=1, the sanitized suite): A on the first 10 CIFAR test images of
each class (100; peak memory compared with 20 images, ASan's quarantine off), B on 5 per class,
C and D on 20 Fashion-MNIST images per class (200); the same brute-force comparisons.
"""
import csv
import json
import os
import re
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vis_common  # noqa: E402
from vis_common import (CIFAR, CIFAR_MEAN, CIFAR_STD, CNNSCOPE, OUTSIDE, REPO, WORK, Failure,  # noqa: E402
                        check_separators, cifar_model, grid_cell, grid_cols, main_wrapper, need,
                        read_png, unnormalise, upscale)

OUT = None   # a private folder, made by main()
CHUNK = 2000          # images per cnnscope dump run (and per patches batch in exact checks)
SLACK = 4             # brute-force candidates kept beyond K, for the near-tie comparison
TOLERANCE = 1e-5      # relative: batch-size dependent rounding of the engine's kernels
ENV = dict(os.environ, OMP_WAIT_POLICY="passive")
DEFAULT_MODEL = os.path.join(REPO, "weights", "fashion_resnet20.cnn")
# Images per class of each part: all 10,000 CIFAR test images for A (None), 40 for B, 100
# Fashion-MNIST images for C and D; fewer in quick mode (tests/run_all.sh, sanitized build).
QUICK = vis_common.QUICK
A_PER_CLASS = 10 if QUICK else None
B_PER_CLASS = 5 if QUICK else 40
FASHION_PER_CLASS = 20 if QUICK else 100


def run(cmd, what):
    return vis_common.run(cmd, what, env=ENV)


# ---------------------------------------------------------------------------------------------
# Receptive fields of a CIFAR-style ResNet, from the architecture (independent of cnnscope)

def cifar_fields(depth, in_h, in_w):
    """{node name: (size, jump, first) or None (global)}, square fields."""
    n = (depth - 2) // 6
    f = {}

    def window(x, k, s, p):
        size, jump, first = x
        return (size + (k - 1) * jump, jump * s, first - p * jump)

    x = window((1, 1, 0), 3, 1, 1)
    for name in ("conv1", "bn1", "relu"):
        f[name] = x
    for stage in (1, 2, 3):
        for b in range(n):
            p = "layer%d.%d." % (stage, b)
            stride = 2 if stage > 1 and b == 0 else 1
            a = window(x, 3, stride, 1)
            for name in ("conv1", "bn1", "relu"):
                f[p + name] = a
            c = window(a, 3, 1, 1)
            for name in ("conv2", "bn2"):
                f[p + name] = c
            sc = x
            if stride == 2:
                sc = window(x, 1, 2, 0)
                f[p + "shortcut"] = sc
            assert sc[1] == c[1]
            first = min(sc[2], c[2])
            end = max(sc[2] + sc[0], c[2] + c[0])
            x = (end - first, c[1], first)
            f[p + "add"] = x
            f[p[:-1]] = x
    for name in ("avgpool", "flatten", "linear"):
        f[name] = None
    return f


def box_of(field, y, x, H, W):
    if field is None:
        return (0, 0, H - 1, W - 1)
    size, jump, first = field
    return (first + y * jump, first + x * jump, first + y * jump + size - 1, first + x * jump + size - 1)


# ---------------------------------------------------------------------------------------------
# Brute force

class Dataset:
    """The preprocessed images of a folder (cnnscope preprocess), their relative paths, and
    the layer outputs (cnnscope dump, in chunks), reduced per channel to candidates."""

    def __init__(self, model, folder, tag):
        self.model, self.folder, self.tag = model, folder, tag
        self.x_path = os.path.join(OUT, tag + ".X.npy")
        t0 = time.time()
        run([CNNSCOPE, "preprocess", model, folder, "-o", self.x_path, "--threads", "2"], "cnnscope preprocess")
        self.x = np.load(self.x_path, mmap_mode="r")
        with open(self.x_path[:-4] + ".paths.txt") as f:
            self.paths = [l.rstrip("\n") for l in f]
        if len(self.paths) != self.x.shape[0]:
            raise Failure("%s: %d paths for %d rows" % (tag, len(self.paths), self.x.shape[0]))
        self.index = {p: i for i, p in enumerate(self.paths)}
        print("  %s: %d images preprocessed (%.1f s)" % (tag, len(self.paths), time.time() - t0))

    def outputs(self, layers):
        """Yields (first_image, {layer: [n, C, h, w] or [n, F]}) chunk by chunk."""
        for start in range(0, len(self.paths), CHUNK):
            chunk = os.path.join(OUT, self.tag + ".chunk.npy")
            np.save(chunk, np.ascontiguousarray(self.x[start:start + CHUNK]))
            dump = os.path.join(OUT, self.tag + ".dump")
            shutil.rmtree(dump, ignore_errors=True)
            run([CNNSCOPE, "dump", self.model, "--input", chunk, "--layer", ",".join(layers), "-o", dump,
                 "--threads", "2"], "cnnscope dump")
            yield start, {l: np.load(os.path.join(dump, l + ".npy")) for l in layers}
            shutil.rmtree(dump, ignore_errors=True)
            os.remove(chunk)

    def brute_force(self, requests):
        """requests: [(layer, channels, k, per_image)] -> {request index: {channel: [(act, image,
        y, x)] best first}}."""
        layers = sorted({r[0] for r in requests})
        cands = {i: {c: [] for c in r[1]} for i, r in enumerate(requests)}
        t0 = time.time()
        for start, outs in self.outputs(layers):
            for i, (layer, channels, k, per_image) in enumerate(requests):
                a = outs[layer]
                if a.ndim == 2:
                    a = a[:, :, None, None]
                n, C, h, w = a.shape
                for c in channels:
                    m = a[:, c].reshape(n, h * w)                     # [n, hw]
                    if per_image == 0:
                        img = np.repeat(np.arange(n), h * w)
                        pos = np.tile(np.arange(h * w), n)
                        act = m.reshape(-1)
                    else:
                        if per_image == 1:   # argmax returns the first maximum: row-major ties
                            order = np.argmax(m, axis=1)[:, None]
                        else:
                            order = np.argsort(-m, axis=1, kind="stable")[:, :per_image]
                        img = np.repeat(np.arange(n), order.shape[1])
                        pos = order.reshape(-1)
                        act = np.take_along_axis(m, order, axis=1).reshape(-1)
                    keep = np.lexsort((pos, img, -act.astype(np.float64)))[:k + SLACK]
                    cands[i][c] += [(float(act[j]), start + int(img[j]), int(pos[j]) // w, int(pos[j]) % w)
                                    for j in keep]
        result = {}
        for i, (layer, channels, k, per_image) in enumerate(requests):
            result[i] = {c: sorted(cands[i][c], key=lambda t: (-t[0], t[1], t[2], t[3]))[:k + SLACK]
                         for c in channels}
        print("  %s: brute force over %s (%.1f s)" % (self.tag, ", ".join(layers), time.time() - t0))
        return result


# ---------------------------------------------------------------------------------------------
# Checking one run of cnnscope patches

def read_index(out_dir):
    with open(os.path.join(out_dir, "index.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(out_dir, "index.json")) as f:
        doc = json.load(f)
    if len(doc["patches"]) != len(rows):
        raise Failure("%s: index.json has %d patches, index.csv %d" % (out_dir, len(doc["patches"]), len(rows)))
    hits = {}
    for r, j in zip(rows, doc["patches"]):
        box = tuple(int(r[k]) for k in ("box_y0", "box_x0", "box_y1", "box_x1"))
        hit = (np.float32(r["activation"]), r["image"], int(r["y"]), int(r["x"]), box)
        jhit = (np.float32(j["activation"]), j["image"], j["y"], j["x"], tuple(j["box"]))
        if hit != jhit or int(r["channel"]) != j["channel"] or int(r["rank"]) != j["rank"]:
            raise Failure("%s: CSV row %s and JSON entry %s differ" % (out_dir, r, j))
        ch = hits.setdefault(int(r["channel"]), [])
        if int(r["rank"]) != len(ch):
            raise Failure("%s: channel %s ranks out of order" % (out_dir, r["channel"]))
        ch.append(hit)
    return hits, doc


def patches(model, folder, out_name, layer, channels, k, per_image=None, extra=(), batch=CHUNK, env=None):
    """Runs cnnscope patches; batch=None keeps its default batch size."""
    out_dir = os.path.join(OUT, out_name)
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [CNNSCOPE, "patches", model, folder, "--layer", layer, "--channels", channels,
           "--top", str(k), "--threads", "2", "-o", out_dir] + list(extra)
    if batch is not None:
        cmd += ["--batch", str(batch)]
    if per_image is not None:
        cmd += ["--per-image", str(per_image)]
    t0 = time.time()
    stdout, stderr, maxrss = run_measured(cmd, env)
    if stderr.strip():
        raise Failure("patches printed on stderr although it is not a terminal: %r" % stderr[:500])
    LAST_RSS[0] = maxrss
    return out_dir, stdout, time.time() - t0


LAST_RSS = [0]


def run_measured(cmd, env=None):
    """Runs cmd; returns stdout, stderr and its peak resident memory in KiB: VmHWM of
    /proc/PID/status, polled while it runs (rusage's maxrss would include the memory of this
    Python process, which the child is forked from)."""
    import subprocess
    import tempfile
    peak = 0
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env or ENV)
        while p.poll() is None:
            try:
                with open("/proc/%d/status" % p.pid) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.02)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(), fe.read().decode()
    if p.returncode != 0:
        raise Failure("cnnscope patches failed (exit %d): %s\n%s%s" % (p.returncode, " ".join(cmd), out[-2000:],
                                                                     err[-2000:]))
    return out, err, peak


def compare_near_ties(what, got, want, k):
    """got: K hits of a run whose batches differ from the dump's; want: the brute force's top
    K + SLACK. The engine's results may then differ in the last bits, so: every rank must hold
    the brute force's hit, or a hit whose activation is within TOLERANCE of the brute force's
    at that rank (a near tie) and that the brute force also ranks near there; and every
    activation must match the brute force's value of the same hit within TOLERANCE."""
    if len(got) != min(k, len(want)):
        raise Failure("%s: %d hits, brute force %d" % (what, len(got), min(k, len(want))))
    value = {(i, y, x): a for a, i, y, x in want}
    swaps = 0
    for r, (g, e) in enumerate(zip(got, want)):
        tol = TOLERANCE * max(1.0, abs(e[0]))
        if g[1:] not in value or abs(float(g[0]) - value[g[1:]]) > tol:
            raise Failure("%s rank %d: cnnscope %s is not among the brute force's best %d (or its "
                          "activation differs): brute force %s" % (what, r, g, len(want), e))
        if g[1:] != e[1:]:
            if abs(value[g[1:]] - e[0]) > tol:
                raise Failure("%s rank %d: cnnscope %s, brute force %s, not a near tie" % (what, r, g, e))
            swaps += 1
    if len({h[1:] for h in got}) != len(got):
        raise Failure("%s: a hit appears twice" % what)
    return swaps


def check_run(ds, out_dir, layer, channels, k, want, fields, scale_override=None, check_pixels=2,
              stats=None, exact=True):
    """Compares index files with the brute force `want` {channel: [(act, img, y, x)]} and boxes
    with `fields`; checks the pixels of the first `check_pixels` channels' grids. exact: the
    run used the dump's batches, so activations and order must be identical to the bit;
    otherwise near ties may swap (compare_near_ties)."""
    hits, doc = read_index(out_dir)
    H, W = ds.x.shape[2], ds.x.shape[3]
    node = doc["layer"]
    field = fields[node]
    if sorted(hits) != sorted(channels):
        raise Failure("%s: channels %s in the index, expected %s" % (layer, sorted(hits), sorted(channels)))
    if doc["images"] != len(ds.paths) or doc["k"] != k:
        raise Failure("%s: index.json says %d images, k %d" % (layer, doc["images"], doc["k"]))
    if doc["whole_images"] != (field is None):
        raise Failure("%s: whole_images is %s" % (layer, doc["whole_images"]))
    for c in channels:
        got = [(h[0], ds.index.get(h[1], -1), h[2], h[3]) for h in hits[c]]
        exp = [(np.float32(a), i, y, x) for a, i, y, x in want[c][:k]]
        if not exact:
            compare_near_ties("%s channel %d" % (layer, c), got, want[c], k)
        elif got != exp:
            for r, (g, e) in enumerate(zip(got, exp)):
                if g != e:
                    raise Failure("%s channel %d rank %d: cnnscope %s, brute force %s (of %d vs %d hits)"
                                  % (layer, c, r, g, e, len(got), len(exp)))
            raise Failure("%s channel %d: %d hits, brute force %d" % (layer, c, len(got), len(exp)))
        for h in hits[c]:
            if h[4] != box_of(field, h[2], h[3], H, W):
                raise Failure("%s channel %d: box %s at (%d,%d), receptive field arithmetic %s"
                              % (layer, c, h[4], h[2], h[3], box_of(field, h[2], h[3], H, W)))
    # pixels: each cell is the crop of the preprocessed image at the box, outside purple
    size_h = H if field is None else field[0]
    size_w = W if field is None else field[0]
    scale = scale_override or max(1, 96 // max(size_h, size_w))
    cols = grid_cols(k)
    rows = (k + cols - 1) // cols
    outside = np.array(OUTSIDE)
    for c in channels[:check_pixels]:
        img = read_png(os.path.join(out_dir, "channel_%04d.png" % c))
        cw, chh = size_w * scale, size_h * scale
        if img.shape[:2] != (1 + rows * (chh + 1), 1 + cols * (cw + 1)):
            raise Failure("%s channel %d: grid picture %s, expected %d x %d cells of %dx%d"
                          % (layer, c, img.shape, rows, cols, chh, cw))
        check_separators(img, cols, rows, cw, chh, what="%s channel %d" % (layer, c))
        for r, h in enumerate(hits[c]):
            y0, x0, y1, x1 = h[4]
            pix = unnormalise(np.asarray(ds.x[ds.index[h[1]]]), ds.mean, ds.std)
            if pix.shape[2] == 1:
                pix = np.repeat(pix, 3, axis=2)
            tile = np.empty((y1 - y0 + 1, x1 - x0 + 1, 3), dtype=np.int32)
            tile[:] = outside
            iy0, ix0, iy1, ix1 = max(y0, 0), max(x0, 0), min(y1, H - 1), min(x1, W - 1)
            tile[iy0 - y0:iy1 - y0 + 1, ix0 - x0:ix1 - x0 + 1] = pix[iy0:iy1 + 1, ix0:ix1 + 1]
            x, y = grid_cell(r, cols, cw, chh)
            cell = img[y:y + chh, x:x + cw]
            if not np.array_equal(cell, upscale(tile, scale)):
                bad = np.argwhere(np.any(cell != upscale(tile, scale), axis=2))[0]
                raise Failure("%s channel %d rank %d (%s box %s): pixel %s of the cell is %s, expected %s"
                              % (layer, c, r, h[1], h[4], tuple(bad), cell[bad[0], bad[1]],
                                 upscale(tile, scale)[bad[0], bad[1]]))
            if stats is not None:
                stats["crops"] += 1
                stats["clipped"] += (y0 < 0 or x0 < 0 or y1 >= H or x1 >= W)
    return doc


# ---------------------------------------------------------------------------------------------

STATS = {"crops": 0, "clipped": 0}


def cifar_subset(per_class):
    """An ImageFolder of symlinks: the first `per_class` images of each CIFAR-10 test class."""
    root = os.path.join(OUT, "cifar%d" % (10 * per_class))
    shutil.rmtree(root, ignore_errors=True)
    test = need(os.path.join(CIFAR, "test"), "CIFAR-10 test images (shared data)")
    for cls in sorted(os.listdir(test)):
        os.makedirs(os.path.join(root, cls))
        for name in sorted(os.listdir(os.path.join(test, cls)))[:per_class]:
            os.symlink(os.path.abspath(os.path.join(test, cls, name)), os.path.join(root, cls, name))
    return root


def test_cifar_10000():
    model = cifar_model(56)
    folder = need(os.path.join(CIFAR, "test"), "CIFAR-10 test images (shared data)")
    expected = 10000
    if A_PER_CLASS is not None:   # quick mode
        folder, expected = cifar_subset(A_PER_CLASS), 10 * A_PER_CLASS
    ds = Dataset(model, folder, "c56_10k")
    ds.mean, ds.std = CIFAR_MEAN, CIFAR_STD
    if len(ds.paths) != expected:
        raise Failure("expected %d CIFAR-10 test images, found %d" % (expected, len(ds.paths)))
    fields = cifar_fields(56, 32, 32)
    # (layer as named on the command line, node name, channels, --channels, K)
    runs = [("relu", "relu", list(range(16)), "all", 16),
            ("layer1.0", "layer1.0", [0, 3, 7, 11, 15], "0,3,7,11,15", 16),
            ("layer1.1.conv1", "layer1.1.conv1", [1, 2, 5, 8, 13], "1-2,5,8,13", 10),
            ("layer3", "layer3.8", [2, 17], "2,17", 16)]   # a container: its last block, the deepest
    # One dump of every layer. Asking for a conv's output (layer1.1.conv1) keeps its batch norm
    # unfolded, which changes the last bits of every later layer against a run (like patches)
    # that folds it: the layers after it are compared up to near ties (compare_near_ties).
    want = ds.brute_force([(node, ch, k, 1) for _, node, ch, _, k in runs])
    for i, (layer, node, ch, sel, k) in enumerate(runs):
        exact = i < 3   # relu, layer1.0, layer1.1.conv1: before or at the unfolded conv
        # (the dump's batches make an exact comparison possible; after the conv it is up to near
        # ties anyway, so the default batch, which is faster)
        out_dir, stdout, dt = patches(model, folder, "c56_10k_" + layer, layer, sel, k,
                                      batch=CHUNK if exact else None)
        if node not in stdout:
            raise Failure("--layer %s should mean %s: %s" % (layer, node, stdout))
        check_run(ds, out_dir, node, ch, k, want[i], fields, stats=STATS, exact=exact)
        print("  resnet56 %-15s %d images, %2d channels, top %d: equal%s (%.1f s)"
              % (node, len(ds.paths), len(ch), k, "" if exact else " up to near ties", dt))
    # the default batch size (16): equal up to near ties
    out_dir, stdout, dt = patches(model, folder, "c56_10k_relu_b16", "relu", "all", 16, batch=None)
    check_run(ds, out_dir, "relu (default batch)", list(range(16)), 16, want[0], fields, check_pixels=0,
              exact=False)
    print("  resnet56 relu, default batch: equal up to near ties (%.1f s)" % dt)
    # memory does not grow with the number of images: 10,000 images against 100 (quick mode: 100
    # against 20, both rerun with ASan's quarantine off: freed blocks it keeps would grow with
    # the images)
    rss_10k, few = LAST_RSS[0], 10
    if QUICK:
        env = dict(ENV, ASAN_OPTIONS=ENV.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0")
        patches(model, folder, "c56_many_relu_b16", "relu", "all", 16, batch=None, env=env)
        rss_10k, few = LAST_RSS[0], 2
    else:
        env = None
    patches(model, cifar_subset(few), "c56_100_relu_b16", "relu", "all", 16, batch=None, env=env)
    rss_100 = LAST_RSS[0]
    print("  peak memory: %d KiB for %d images, %d KiB for %d" % (rss_10k, len(ds.paths), rss_100, 10 * few))
    if rss_100 <= 0 or rss_10k > rss_100 + 8192:
        raise Failure("peak memory grows with the images: %d KiB for %d, %d KiB for %d"
                      % (rss_10k, len(ds.paths), rss_100, 10 * few))


def test_cifar_deep():
    model = cifar_model(56)
    folder = cifar_subset(B_PER_CLASS)
    ds = Dataset(model, folder, "c56_400")
    ds.mean, ds.std = CIFAR_MEAN, CIFAR_STD
    fields = cifar_fields(56, 32, 32)
    req = [("layer2.0", [0, 9, 31], 12, 2), ("layer2.0", [0, 9, 31], 12, 0), ("layer2.0", [0, 9, 31], 12, 1),
           ("layer3.0", [4, 40, 63], 9, 1), ("linear", [0, 3, 9], 5, 1)]
    want = ds.brute_force(req)
    out_dir, _, _ = patches(model, folder, "l20", "layer2.0", "0,9,31", 12)
    check_run(ds, out_dir, "layer2.0", [0, 9, 31], 12, want[2], fields, stats=STATS)
    out_dir, _, _ = patches(model, folder, "l30", "layer3.0", "4,40,63", 9)
    check_run(ds, out_dir, "layer3.0", [4, 40, 63], 9, want[3], fields, stats=STATS)
    out_dir, stdout, _ = patches(model, folder, "lin", "linear", "0,3,9", 5)
    if "whole images" not in stdout:
        raise Failure("a linear layer must say its patches are whole images: %s" % stdout)
    check_run(ds, out_dir, "linear", [0, 3, 9], 5, want[4], fields)
    out_dir, _, _ = patches(model, folder, "l20p2", "layer2.0", "0,9,31", 12, per_image=2)
    check_run(ds, out_dir, "layer2.0 --per-image 2", [0, 9, 31], 12, want[0], fields, check_pixels=1)
    out_dir, _, _ = patches(model, folder, "l20p0", "layer2.0", "0,9,31", 12, per_image=0)
    check_run(ds, out_dir, "layer2.0 --per-image 0", [0, 9, 31], 12, want[1], fields, check_pixels=1)
    # the number of threads changes nothing, to the byte
    reference = open(os.path.join(out_dir, "index.csv"), "rb").read()
    other, _, _ = patches(model, folder, "l20p0_t1", "layer2.0", "0,9,31", 12, per_image=0,
                          extra=["--threads", "1"])
    if open(os.path.join(other, "index.csv"), "rb").read() != reference:
        raise Failure("layer2.0 --per-image 0 --threads 1: index.csv differs from --threads 2")
    for c in (0, 9, 31):
        if not np.array_equal(read_png(os.path.join(other, "channel_%04d.png" % c)),
                              read_png(os.path.join(out_dir, "channel_%04d.png" % c))):
            raise Failure("layer2.0 --threads 1: channel %d grid differs" % c)
    # other batch sizes (default 16, and 7): the same lists up to near ties
    for batch in (None, 7):
        other, _, _ = patches(model, folder, "l20p0_b%s" % batch, "layer2.0", "0,9,31", 12, per_image=0,
                              batch=batch)
        check_run(ds, other, "layer2.0 --per-image 0 --batch %s" % batch, [0, 9, 31], 12, want[1], fields,
                  check_pixels=0, exact=False)
    print("  resnet56 layer2.0 (also --per-image 2, 0, --threads 1, --batch 7, 16), layer3.0, linear on %d images: "
          "equal" % len(ds.paths))


def fashion_folder():
    """An ImageFolder of the first 100 (quick mode: 30) Fashion-MNIST test images of each class."""
    folder = os.path.join(OUT, "fashion%d" % (10 * FASHION_PER_CLASS))
    if not os.path.isdir(folder):
        run([sys.executable, "scripts/fashion_to_folder.py", "--split", "test", "--limit", str(FASHION_PER_CLASS), "-o",
             folder + ".tmp"], "fashion_to_folder")
        os.replace(folder + ".tmp", folder)
    return folder


def test_default_model():
    model = need(DEFAULT_MODEL, "the default model (scripts/train_fashion.py)")
    folder = fashion_folder()
    ds = Dataset(model, folder, "fashion")
    meta = vis_common.run([CNNSCOPE, "info", model], "cnnscope info")[0]
    m = re.search(r"normalise: mean ([0-9.e-]+), std ([0-9.e-]+)", meta)
    if not m:
        raise Failure("cannot read the default model's normalisation from cnnscope info:\n" + meta[:500])
    ds.mean, ds.std = (float(m.group(1)),), (float(m.group(2)),)
    fields = cifar_fields(20, 28, 28)
    req = [("layer2.1", [0, 5, 30], 16, 1), ("layer3.2", [1, 33, 62], 16, 1), ("linear", [0, 7], 8, 1)]
    want = ds.brute_force(req)
    for i, (layer, name, sel) in enumerate([("layer2.1", "layer2.1", "0,5,30"), ("layer3.2", "layer3", "1,33,62"),
                                            ("linear", "linear", "0,7")]):
        out_dir, stdout, dt = patches(model, folder, "fashion_" + layer, name, sel, req[i][2])
        check_run(ds, out_dir, layer, req[i][1], req[i][2], want[i], fields, stats=STATS)
        print("  default model %-9s %d images: equal (%.1f s)" % (layer, len(ds.paths), dt))


def projection_rgb(p):
    """vis_explain_gradient_rgb: [C,h,w] -> [h,w,3] uint8, 0.5 + 0.5 g / s clipped to [0, 1], s the
    99th percentile of |g| (sorted, element int(0.99 (n - 1))), or the maximum if that is 0."""
    mag = np.sort(np.abs(p).ravel())
    s = mag[int(0.99 * (mag.size - 1))]
    if not s > 0:
        s = mag[-1]
    if not s > 0:
        s = np.float32(1)
    g = p if p.shape[0] == 3 else np.repeat(p[:1], 3, axis=0)
    t = np.clip(np.float32(0.5) + np.float32(0.5) * g / s, 0, 1)
    return (np.float32(255) * t + np.float32(0.5)).astype(np.uint8).transpose(1, 2, 0)


def test_deconv_companion():
    """--deconv: channel_NNNN_deconv.png has, in each cell, the DeconvNet projection of that hit's
    activation cropped by its box, equal to `cnnscope explain --method deconvnet --neuron
    L:C:Y:X --save-raw` on the same image (whose DeconvNet is checked against PyTorch in
    test_explain_torch.py), rendered as vis_explain_gradient_rgb does. On the AlexNet-style
    default model: its max pools make each projection depend on the image (the switches)."""
    model = need(os.path.join(REPO, "weights", "fashion_alexnet.cnn"), "weights/fashion_alexnet.cnn")
    folder = fashion_folder()
    raw = os.path.join(OUT, "deconv_raw.npy")
    checked = 0
    for layer, sel, k in (("features.8", "3,10", 6), ("classifier.1", "5", 3)):
        out_dir, stdout, _ = patches(model, folder, "deconv_" + layer, layer, sel, k, extra=["--deconv"])
        if "DeconvNet" not in stdout:
            raise Failure("%s --deconv: the summary should name the DeconvNet companions: %s" % (layer, stdout))
        hits, doc = read_index(out_dir)
        H = W = 28
        whole = doc["whole_images"]
        size = H if whole else doc["receptive_field"]["size"][0]
        scale = max(1, 96 // size)
        cols = grid_cols(k)
        distinct = set()
        for c in (int(v) for v in sel.split(",")):
            img = read_png(os.path.join(out_dir, "channel_%04d_deconv.png" % c))
            if img.shape != read_png(os.path.join(out_dir, "channel_%04d.png" % c)).shape:
                raise Failure("%s channel %d: the companion grid's size differs from the patch grid's" % (layer, c))
            for r, h in enumerate(hits[c]):
                neuron = "%s:%d" % (layer, c) if whole else "%s:%d:%d:%d" % (layer, c, h[2], h[3])
                vis_common.run([CNNSCOPE, "explain", model, os.path.join(folder, h[1]), "--method", "deconvnet",
                                "--neuron", neuron, "--save-raw", raw, "-o", os.path.join(OUT, "deconv.png")],
                               "cnnscope explain --neuron " + neuron)
                proj = np.load(raw)[0]
                y0, x0, y1, x1 = h[4]
                crop = np.zeros((proj.shape[0], y1 - y0 + 1, x1 - x0 + 1), dtype=np.float32)
                iy0, ix0, iy1, ix1 = max(y0, 0), max(x0, 0), min(y1, H - 1), min(x1, W - 1)
                crop[:, iy0 - y0:iy1 - y0 + 1, ix0 - x0:ix1 - x0 + 1] = proj[:, iy0:iy1 + 1, ix0:ix1 + 1]
                want = upscale(projection_rgb(crop), scale).astype(np.int32)
                x, y = grid_cell(r, cols, size * scale, size * scale)
                cell = img[y:y + size * scale, x:x + size * scale].astype(np.int32)
                diff = np.abs(cell - want).max()
                if diff > 1:
                    raise Failure("%s channel %d rank %d (%s at %d,%d): the companion cell differs from explain's "
                                  "projection by %d levels" % (layer, c, r, h[1], h[2], h[3], diff))
                if np.all(cell == cell[0, 0]):
                    raise Failure("%s channel %d rank %d: the projection is a flat tile" % (layer, c, r))
                distinct.add(cell.tobytes())
                checked += 1
        if len(distinct) < 2:
            raise Failure("%s: every projection is the same picture; max pool switches should make them differ"
                          % layer)
    print("  fashion_alexnet --deconv: %d companion cells equal explain's DeconvNet projections" % checked)


def test_unreadable_and_defaults():
    model = cifar_model(56)
    folder = os.path.join(OUT, "broken")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    src = os.path.join(CIFAR, "test", "cat")
    for name in sorted(os.listdir(src))[:5]:
        shutil.copy(os.path.join(src, name), folder)
    with open(os.path.join(folder, "0002b.jpg"), "wb") as f:
        f.write(b"not a jpeg at all")
    out_dir = os.path.join(OUT, "broken_out")
    shutil.rmtree(out_dir, ignore_errors=True)
    p = vis_common.subprocess.run([CNNSCOPE, "patches", model, folder, "-o", out_dir], env=ENV,
                                  stdout=vis_common.subprocess.PIPE, stderr=vis_common.subprocess.PIPE,
                                  text=True)
    if p.returncode != 0 or "skipping" not in p.stderr or "0002b.jpg" not in p.stderr:
        raise Failure("an unreadable image must be skipped with a warning: exit %d, stderr %r"
                      % (p.returncode, p.stderr))
    hits, doc = read_index(out_dir)
    if doc["images"] != 5 or doc["skipped"] != 1 or any(h[1] == "0002b.jpg" for v in hits.values() for h in v):
        raise Failure("index: images %d, skipped %d; expected 5 and 1" % (doc["images"], doc["skipped"]))
    # defaults: the last layer with spatial extent (layer3.8), all 64 channels, top 16
    if doc["layer"] != "layer3.8" or len(hits) != 64 or doc["k"] != 16 or doc["per_image"] != 1:
        raise Failure("defaults: layer %s, %d channels, k %d, per-image %d" % (doc["layer"], len(hits), doc["k"],
                                                                             doc["per_image"]))
    if any(len(v) != 5 for v in hits.values()):
        raise Failure("with 5 images and one patch per image, every channel has 5 hits")
    p = vis_common.subprocess.run([CNNSCOPE, "patches", model, folder, "--layer", "nosuch", "-o", out_dir],
                                  env=ENV, stdout=vis_common.subprocess.PIPE, stderr=vis_common.subprocess.PIPE,
                                  text=True)
    if p.returncode != 2 or "nosuch" not in p.stderr:
        raise Failure("an unknown layer must exit 2 naming it: %d %r" % (p.returncode, p.stderr))
    left = [f for f in os.listdir(out_dir) if ".tmp" in f]
    if left:
        raise Failure("temporary files left: %s" % left)
    # on a terminal, progress: "patches: done/total (rate/s, ETA s)"
    import pty
    master, slave = pty.openpty()
    p = vis_common.subprocess.Popen([CNNSCOPE, "patches", model, folder, "--layer", "relu", "--batch", "2", "-o",
                                     out_dir + "_tty"], env=ENV, stdout=vis_common.subprocess.DEVNULL,
                                    stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    p.wait()
    os.close(master)
    text = seen.decode(errors="replace")
    if p.returncode != 0 or not re.search(r"patches: 6/6 \([0-9]+/s, ETA [0-9]+ s\)", text):
        raise Failure("no progress line 'patches: 6/6 (N/s, ETA N s)' on a terminal: %r" % text[-500:])


def main():
    global OUT
    OUT = vis_common.private_dir("patches")
    vis_common.quick_note("CIFAR part A on %s images per class, B on %d, Fashion-MNIST parts on %d"
                          % (A_PER_CLASS, B_PER_CLASS, FASHION_PER_CLASS))
    status = main_wrapper([
        ("CIFAR ResNet-56, 10,000 test images, early layers and the deepest block", test_cifar_10000),
        ("CIFAR ResNet-56, 400 images, middle layers, linear, per-image, threads, batch", test_cifar_deep),
        ("default model (Fashion-MNIST ResNet-20), 1,000 images", test_default_model),
        ("--deconv companion grids (AlexNet-style default model)", test_deconv_companion),
        ("unreadable image skipped, defaults, unknown layer", test_unreadable_and_defaults),
    ], cleanup=OUT)
    print("checked %d crops pixel by pixel, %d of them clipped at the border" % (STATS["crops"], STATS["clipped"]))
    if STATS["clipped"] == 0 or STATS["crops"] == STATS["clipped"]:
        print("FAIL: the crops checked should include both clipped and unclipped boxes")
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
