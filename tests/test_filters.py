#!/usr/bin/python3
"""test_filters.py - `cnnscope filters`: the PNG's pixels against the weights.

1. AlexNet (the reference model of scripts/make_reference.py): the default picture is the 64
   filters of features.0 (11x11x3) in an 8x8 grid, 4 pixels per weight, 1-pixel separators;
   every pixel of every cell must equal floor(255 t + 0.5) per channel, with t the weight
   normalised by the min and max of its whole filter (at most 1 level off at rounding ties,
   and >= 99 % exact); separators and empty cells have the separator colour.
2. AlexNet --norm global --scale 2 --filters 0-9: 10 cells in a 4-column grid, one min/max for
   the whole layer.
3. CIFAR ResNet-20 layer1.0.conv1 (16 input channels): one viridis tile per (filter, input
   channel), filters in rows; default 16 x 16, and --filters 2-4 --inputs 5,7 (3 x 2).
4. A 1-channel model (the CIFAR ResNet-20 with conv1 summed over RGB): gray tiles, R = G = B.
5. Mistakes exit 2 with a message: a layer that is not a conv, an unknown layer (closest names
   suggested), a bad --norm, --inputs on an RGB layer, a range past the end.
No temporary file may be left beside the outputs (atomic writes).
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vis_common import (CNNSCOPE, SEPARATOR, WORK, Failure, cifar_model, check_separators,  # noqa: E402
                        grid_cell, gray_cifar_model, main_wrapper, read_png, reference_model, run,
                        upscale, viridis_matches)

OUT = os.path.join(WORK, "filters")


def levels(t):
    return np.floor(255 * t + 0.5)


def normalise(w, lo, hi):
    return (w - lo) / (hi - lo) if hi > lo else np.full_like(w, 0.5)


def check_rgb_grid(img, weight, filters, scale, norm, what):
    """weight [K, C, R, S] with C in (1, 3)."""
    K, C, R, S = weight.shape
    cols = 1
    while cols * cols < len(filters):
        cols += 1
    rows = (len(filters) + cols - 1) // cols
    cw, ch = S * scale, R * scale
    want_size = (1 + rows * (ch + 1), 1 + cols * (cw + 1))
    if img.shape[:2] != want_size:
        raise Failure("%s: picture is %dx%d (h x w), expected %dx%d" % (what, img.shape[0], img.shape[1],
                                                                     want_size[0], want_size[1]))
    check_separators(img, cols, rows, cw, ch, what=what)
    w64 = weight.astype(np.float64)
    glo, ghi = w64.min(), w64.max()
    exact = total = 0
    for i, k in enumerate(filters):
        f = w64[k]
        lo, hi = (f.min(), f.max()) if norm == "per-filter" else (glo, ghi)
        want = levels(normalise(f, lo, hi))                       # [C, R, S]
        want = np.repeat(want, 3, axis=0) if C == 1 else want
        want = upscale(want.transpose(1, 2, 0), scale)            # [R*s, S*s, 3]
        x, y = grid_cell(i, cols, cw, ch)
        got = img[y:y + ch, x:x + cw]
        diff = np.abs(got - want)
        if diff.max() > 1:
            yy, xx, cc = np.unravel_index(diff.argmax(), diff.shape)
            raise Failure("%s: filter %d (cell %d) pixel (%d,%d) channel %d is %d, expected %d"
                          % (what, k, i, yy, xx, cc, got[yy, xx, cc], want[yy, xx, cc]))
        if C == 1 and not (np.all(got[..., 0] == got[..., 1]) and np.all(got[..., 1] == got[..., 2])):
            raise Failure("%s: gray filter %d is not gray" % (what, k))
        exact += int((diff == 0).sum())
        total += diff.size
    for i in range(len(filters), rows * cols):   # empty cells
        x, y = grid_cell(i, cols, cw, ch)
        if not np.all(img[y:y + ch, x:x + cw] == np.array(SEPARATOR)):
            raise Failure("%s: empty cell %d is not the separator colour" % (what, i))
    if exact < 0.99 * total:
        raise Failure("%s: only %d of %d values exact" % (what, exact, total))
    return cols, rows


def filters(model, out, *args):
    path = os.path.join(OUT, out)
    stdout, _ = run([CNNSCOPE, "filters", model] + list(args) + ["-o", path], "cnnscope filters")
    return read_png(path), stdout


def alexnet_weight():
    model, pth = reference_model("alexnet")
    sd = torch.load(pth, map_location="cpu")
    return model, sd["features.0.weight"].numpy()


def test_alexnet_default():
    model, w = alexnet_weight()
    if w.shape != (64, 3, 11, 11):
        raise Failure("alexnet features.0.weight is %s" % (w.shape,))
    img, out = filters(model, "alexnet.png")
    if "features.0" not in out:
        raise Failure("the default layer is not features.0: %s" % out)
    cols, rows = check_rgb_grid(img, w, list(range(64)), 4, "per-filter", "alexnet default")
    if (cols, rows) != (8, 8) or img.shape[:2] != (361, 361):
        raise Failure("alexnet: grid %dx%d, picture %s; expected 8x8, 361x361" % (cols, rows, img.shape))


def test_alexnet_global_subset():
    model, w = alexnet_weight()
    img, _ = filters(model, "alexnet_global.png", "--layer", "features.0", "--norm", "global",
                     "--scale", "2", "--filters", "0-9")
    check_rgb_grid(img, w, list(range(10)), 2, "global", "alexnet --norm global --filters 0-9")
    # the two normalisations must really differ on this layer
    img2, _ = filters(model, "alexnet_scale2.png", "--scale", "2", "--filters", "0-9")
    if np.array_equal(img, img2):
        raise Failure("--norm global and per-filter gave the same picture")


def check_channel_grid(img, weight, filters_sel, inputs_sel, scale, what):
    K, C, R, S = weight.shape
    cols, rows = len(inputs_sel), len(filters_sel)
    cw, ch = S * scale, R * scale
    if img.shape[:2] != (1 + rows * (ch + 1), 1 + cols * (cw + 1)):
        raise Failure("%s: picture %s, expected %d rows x %d cols of %dx%d" % (what, img.shape, rows, cols, ch, cw))
    check_separators(img, cols, rows, cw, ch, what=what)
    w64 = weight.astype(np.float64)
    for r, k in enumerate(filters_sel):
        f = w64[k]
        lo, hi = f.min(), f.max()          # over the whole filter, shown channels or not
        for c_i, c in enumerate(inputs_sel):
            t = upscale(normalise(f[c], lo, hi), scale)
            x, y = grid_cell(r * cols + c_i, cols, cw, ch)
            ok = viridis_matches(t, img[y:y + ch, x:x + cw])
            if not ok.all():
                yy, xx = np.argwhere(~ok)[0]
                raise Failure("%s: filter %d input %d pixel (%d,%d) is %s, expected viridis(%.4f)"
                              % (what, k, c, yy, xx, img[y + yy, x + xx], t[yy, xx]))


def test_cifar_channels():
    model = cifar_model(20)
    import vis_common
    sys.path.insert(0, os.path.join(vis_common.REPO, "tests"))
    import cifar_resnet_torch
    sd = cifar_resnet_torch.load_checkpoint(os.path.join(vis_common.CIFAR, "resnet20-12fca82f.th"))
    w = sd["layer1.0.conv1.weight"].numpy()
    img, out = filters(model, "cifar_l1.png", "--layer", "layer1.0.conv1")
    check_channel_grid(img, w, list(range(16)), list(range(16)), 16, "resnet20 layer1.0.conv1")
    img, _ = filters(model, "cifar_l1_sel.png", "--layer", "layer1.0.conv1", "--filters", "2-4",
                     "--inputs", "5,7", "--scale", "5")
    check_channel_grid(img, w, [2, 3, 4], [5, 7], 5, "resnet20 layer1.0.conv1 --filters 2-4 --inputs 5,7")
    # 64 input channels, only 16 shown by default: normalisation still over the whole filter
    w3 = sd["layer3.1.conv2.weight"].numpy()
    img, _ = filters(model, "cifar_l3.png", "--layer", "layer3.1.conv2", "--filters", "0,63")
    check_channel_grid(img, w3, [0, 63], list(range(16)), 16, "resnet20 layer3.1.conv2")


def test_gray():
    model, w = gray_cifar_model()
    img, out = filters(model, "gray.png")
    if "gray" not in out:
        raise Failure("a 1-channel conv should be reported as gray: %s" % out)
    check_rgb_grid(img, w, list(range(16)), 16, "per-filter", "gray conv1")


def test_mistakes():
    model = cifar_model(20)
    cases = [
        (["--layer", "relu"], "expected a conv2d"),
        (["--layer", "layer1.0.conv3"], "layer1.0.conv"),        # suggestions name close nodes
        (["--norm", "bogus"], "per-filter or global"),
        (["--inputs", "0-3"], "--inputs applies only"),
        (["--layer", "layer1.0.conv1", "--filters", "0-16"], "outside"),
        (["--scale", "0"], "--scale"),
    ]
    for args, message in cases:
        p = subprocess.run([CNNSCOPE, "filters", model] + args + ["-o", os.path.join(OUT, "bad.png")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode != 2 or message not in p.stderr:
            raise Failure("filters %s: exit %d, stderr %r; expected exit 2 and %r"
                          % (" ".join(args), p.returncode, p.stderr.strip(), message))
    if os.path.exists(os.path.join(OUT, "bad.png")):
        raise Failure("a failed run left bad.png behind")


def test_no_temporaries():
    left = [f for f in os.listdir(OUT) if ".tmp" in f]
    if left:
        raise Failure("temporary files left: %s" % left)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    torch.set_num_threads(2)
    return main_wrapper([
        ("alexnet default 8x8 RGB grid", test_alexnet_default),
        ("alexnet --norm global --scale 2 --filters 0-9", test_alexnet_global_subset),
        ("resnet20 per-input-channel viridis tiles", test_cifar_channels),
        ("1-channel model gray tiles", test_gray),
        ("mistakes exit 2", test_mistakes),
        ("atomic writes leave no temporaries", test_no_temporaries),
    ])


if __name__ == "__main__":
    sys.exit(main())
