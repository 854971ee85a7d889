#!/usr/bin/python3
"""test_features.py - `cnnscope features` on real weights and images, against PyTorch.

On 60 CIFAR-10 test images (the first 6 of each class) and the published ResNet-20:
1. `--layer flatten` writes F.npy [60, 64] float32, F.paths.txt (the images in ImageFolder
   order), F.labels.txt ("<index> <class>" per row) and F.layer.txt; the rows equal PyTorch's
   penultimate features on the engine's own pixels (`cnnscope preprocess`) to 1e-4 relative.
2. `--layer layer3.2 --pool avg|max|none` equal the mean, the max and the flattening of
   PyTorch's layer3 output; `--pool avg` equals `--layer flatten`.
3. The bytes of F.npy are the same with 1 and 2 threads and with batch 7 and 64.
4. `cnnscope neighbors F.npy --query-image MODEL IMAGE` on an image of the table finds that row
   first, at distance ~0.
"""
import os
import re
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cifar_resnet_torch  # noqa: E402
from vis_test_data import CNNSCOPE, SHARED, WORK, Checker, model, run, subset_folder  # noqa: E402


def main():
    c = Checker("test_features")
    m = model("resnet20")
    folder, classes = subset_folder(6, "cifar-6")
    f = os.path.join(WORK, "f6.npy")
    out, dt = run([CNNSCOPE, "features", m, folder, "--layer", "flatten", "-o", f, "--threads", "2"])
    print("features: %s (%.1f s)" % (out.strip(), dt))
    feats = np.load(f)
    c.check(feats.dtype == np.float32 and feats.shape == (60, 64), "F.npy is float32 %s" % (feats.shape,))
    paths = open(f[:-4] + ".paths.txt").read().splitlines()
    expect = [os.path.join(folder, cls, name) for cls in classes for name in sorted(os.listdir(os.path.join(folder, cls)))]
    c.check(paths == expect, "F.paths.txt lists the images in ImageFolder order (%d lines)" % len(paths))
    labels = open(f[:-4] + ".labels.txt").read().splitlines()
    expect_labels = ["%d %s" % (i, cls) for i, cls in enumerate(classes) for _ in range(6)]
    c.check(labels == expect_labels, "F.labels.txt: '<index> <class>' per row (first %r)" % labels[:1])
    c.check(open(f[:-4] + ".layer.txt").read().split() == ["flatten", "avg"], "F.layer.txt names the layer and pooling")

    # PyTorch on the engine's pixels
    x_path = os.path.join(WORK, "f6.X.npy")
    run([CNNSCOPE, "preprocess", m, folder, "-o", x_path])
    x = torch.from_numpy(np.load(x_path))
    net = cifar_resnet_torch.cifar_resnet_from_state_dict(cifar_resnet_torch.load_checkpoint(
        os.path.join(SHARED, "data", "cifar10", "resnet20-12fca82f.th")))
    grabbed = {}
    net.layer3.register_forward_hook(lambda mod, inp, out: grabbed.__setitem__("layer3", out.detach()))
    net.flatten.register_forward_hook(lambda mod, inp, out: grabbed.__setitem__("flatten", out.detach()))
    with torch.no_grad():
        net(x)
    ref = grabbed["flatten"].numpy()
    err = np.max(np.abs(feats - ref)) / np.max(np.abs(ref))
    c.check(err < 1e-4, "flatten features vs PyTorch: max error %.2g of the largest value (< 1e-4)" % err)

    l3 = grabbed["layer3"].numpy()                       # [60, 64, 8, 8]
    for pool, expect_rows in (("avg", l3.mean(axis=(2, 3))), ("max", l3.max(axis=(2, 3))),
                              ("none", l3.reshape(60, -1))):
        fp = os.path.join(WORK, "f6.%s.npy" % pool)
        run([CNNSCOPE, "features", m, folder, "--layer", "layer3.2", "--pool", pool, "-o", fp])
        got = np.load(fp)
        ok = got.shape == expect_rows.shape
        err = np.max(np.abs(got - expect_rows)) / np.max(np.abs(expect_rows)) if ok else float("inf")
        c.check(ok and err < 1e-4, "layer3.2 --pool %s: shape %s, max error %.2g vs PyTorch" % (pool, got.shape, err))
        if pool == "avg":
            c.check(np.max(np.abs(got - feats)) < 1e-5, "layer3.2 --pool avg equals the flatten features")

    # determinism
    raw = open(f, "rb").read()
    for threads, batch in (("1", "7"), ("2", "64")):
        g = os.path.join(WORK, "f6.t%s.b%s.npy" % (threads, batch))
        run([CNNSCOPE, "features", m, folder, "--layer", "flatten", "-o", g, "--threads", threads, "--batch", batch])
        c.check(open(g, "rb").read() == raw, "F.npy identical with --threads %s --batch %s" % (threads, batch))

    # a query image
    out, _ = run([CNNSCOPE, "neighbors", f, "--query-image", m, paths[17], "-k", 3])
    rows = re.findall(r"^\s*(\d+)\s+(\d+)\s+([0-9.eE+-]+)\s", out, re.M)
    c.check(len(rows) == 3 and int(rows[0][1]) == 17 and float(rows[0][2]) < 1e-4,
            "--query-image of row 17's image finds row 17 first at distance ~0: %s" % rows[:1])
    run([CNNSCOPE, "features", m, folder, "--layer", "nonexistent", "-o", f + ".bad.npy"], "unknown layer", expect=2)
    c.done()


if __name__ == "__main__":
    main()
