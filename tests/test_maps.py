#!/usr/bin/python3
"""test_maps.py - `cnnscope maps`: the PNG's pixels against the layer's activations.

On the CIFAR ResNet-20 and one real test image, the activations come from `cnnscope preprocess`
+ `cnnscope dump` (the engine's own outputs) and the picture is predicted pixel by pixel:
  - the image at (1, 1): the preprocessed input, un-normalised (exact 8-bit values), 4x;
  - the maps in a ceil(sqrt(n))-column grid starting at x = 1 + 4*32 + 8, each pixel
    viridis((v - lo) / (hi - lo)) with lo, hi over all shown maps (shared) or per map;
  - --sort max / mean order the tiles by each map's max / mean, largest first;
  - --channels selects; a container name (layer3) means its last block (layer3.2);
  - a [N, F] layer (linear) gives 1x1 maps;
  - a 1-channel model shows its gray input.
"""
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vis_common import (CIFAR, CIFAR_MEAN, CIFAR_STD, CNNSCOPE, WORK, Failure, check_separators,  # noqa: E402
                        cifar_model, grid_cell, grid_cols, gray_cifar_model, main_wrapper,
                        read_png, run, unnormalise, upscale, viridis_matches)

OUT = os.path.join(WORK, "maps")
IMAGE = os.path.join(CIFAR, "test", "cat", "0000.jpg")


def engine_outputs(model, image, layers, tag):
    x_path = os.path.join(OUT, tag + ".X.npy")
    run([CNNSCOPE, "preprocess", model, image, "-o", x_path], "cnnscope preprocess")
    dump = os.path.join(OUT, tag + ".dump")
    run([CNNSCOPE, "dump", model, "--input", x_path, "--layer", ",".join(layers), "-o", dump], "cnnscope dump")
    x = np.load(x_path)[0]
    return x, {name: np.load(os.path.join(dump, name + ".npy"))[0] for name in layers}


def check_maps(img, pixels, maps, channels, norm, scale=2, image_scale=4, what=""):
    """pixels [H, W, 3]; maps [C, h, w]."""
    H, W = pixels.shape[:2]
    h, w = maps.shape[1:]
    n = len(channels)
    cols = grid_cols(n)
    rows = (n + cols - 1) // cols
    x0 = 1 + W * image_scale + 8
    cw, ch = w * scale, h * scale
    want_w = x0 + 1 + cols * (cw + 1)
    want_h = max(1 + rows * (ch + 1), H * image_scale + 2)
    if img.shape[:2] != (want_h, want_w):
        raise Failure("%s: picture %dx%d, expected %dx%d" % (what, img.shape[0], img.shape[1], want_h, want_w))
    got_image = img[1:1 + H * image_scale, 1:1 + W * image_scale]
    if not np.array_equal(got_image, upscale(pixels, image_scale)):
        raise Failure("%s: the input image differs from the preprocessed pixels" % what)
    check_separators(img, cols, rows, cw, ch, x0=x0, what=what)
    m64 = maps.astype(np.float64)
    lo, hi = min(m64[c].min() for c in channels), max(m64[c].max() for c in channels)
    for i, c in enumerate(channels):
        if norm == "per-map":
            lo, hi = m64[c].min(), m64[c].max()
        t = (m64[c] - lo) / (hi - lo) if hi > lo else np.zeros_like(m64[c])
        x, y = grid_cell(i, cols, cw, ch, x0=x0)
        ok = viridis_matches(upscale(t, scale), img[y:y + ch, x:x + cw])
        if not ok.all():
            yy, xx = np.argwhere(~ok)[0]
            raise Failure("%s: tile %d (channel %d) pixel (%d,%d) is %s, expected viridis(%.4f)"
                          % (what, i, c, yy, xx, img[y + yy, x + xx], upscale(t, scale)[yy, xx]))


def maps(model, out, *args):
    path = os.path.join(OUT, out)
    stdout, _ = run([CNNSCOPE, "maps", model, IMAGE] + list(args) + ["-o", path], "cnnscope maps")
    return read_png(path), stdout


def test_default_shared():
    model = cifar_model(20)
    x, out = engine_outputs(model, IMAGE, ["layer1.0", "layer3.2", "linear"], "cat")
    pixels = unnormalise(x, CIFAR_MEAN, CIFAR_STD)
    img, _ = maps(model, "l1.png", "--layer", "layer1.0")
    check_maps(img, pixels, out["layer1.0"], list(range(16)), "shared", what="layer1.0 shared")


def test_sort_per_map():
    model = cifar_model(20)
    x, out = engine_outputs(model, IMAGE, ["layer1.0", "layer3.2", "linear"], "cat")
    pixels = unnormalise(x, CIFAR_MEAN, CIFAR_STD)
    m = out["layer1.0"].astype(np.float64)
    for key in ("max", "mean"):
        sel = list(range(8))
        stat = [m[c].max() if key == "max" else m[c].mean() for c in sel]
        order = sorted(sel, key=lambda c: (-stat[c], c))
        img, _ = maps(model, "l1_%s.png" % key, "--layer", "layer1.0", "--channels", "0-7", "--sort", key,
                      "--norm", "per-map")
        check_maps(img, pixels, out["layer1.0"], order, "per-map", what="layer1.0 --sort %s per-map" % key)
        if order == sel:
            raise Failure("--sort %s: the test image keeps index order; pick another" % key)


def test_container_and_scales():
    model = cifar_model(20)
    x, out = engine_outputs(model, IMAGE, ["layer1.0", "layer3.2", "linear"], "cat")
    pixels = unnormalise(x, CIFAR_MEAN, CIFAR_STD)
    img, stdout = maps(model, "l3.png", "--layer", "layer3", "--channels", "5,1,60", "--scale", "3",
                       "--image-scale", "2")
    if "layer3.2" not in stdout:
        raise Failure("--layer layer3 should mean layer3.2: %s" % stdout)
    check_maps(img, pixels, out["layer3.2"], [5, 1, 60], "shared", scale=3, image_scale=2,
               what="layer3 --channels 5,1,60")
    img, _ = maps(model, "linear.png", "--layer", "linear")
    check_maps(img, pixels, out["linear"].reshape(10, 1, 1), list(range(10)), "shared", scale=64,
               what="linear (1x1 maps)")


def test_gray_model():
    model, _ = gray_cifar_model()
    x, out = engine_outputs(model, IMAGE, ["relu"], "gray")
    pixels = np.repeat(unnormalise(x, (0.5,), (0.25,)), 3, axis=2)
    img, _ = maps(model, "gray.png", "--layer", "relu", "--channels", "0-3")
    check_maps(img, pixels, out["relu"], [0, 1, 2, 3], "shared", what="gray model relu")


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    return main_wrapper([
        ("layer1.0, shared scale, image beside", test_default_shared),
        ("--sort max/mean, per-map scale", test_sort_per_map),
        ("container name, --channels, scales, linear layer", test_container_and_scales),
        ("1-channel model", test_gray_model),
    ])


if __name__ == "__main__":
    sys.exit(main())
