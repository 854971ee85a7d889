"""vis_common.py - helpers shared by the vis tests (test_filters, test_maps, test_patches).

Models are converted into $TEST_CACHE/models (cached by modification time); images written by
cnnscope are read back with PIL; the viridis table is read from vis/colormap.c (and checked
against published anchor values) so that tests can predict colours exactly.

QUICK (CNNSCOPE_TEST_QUICK=1, set by tests/run_all.sh for the sanitized build): the long tests
run on smaller inputs (see each test's header); quick_note() says so in their output.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", "build")
CNNSCOPE = os.environ.get("CNNSCOPE", os.path.join(BUILD, "cnnscope"))
SHARED = os.environ.get("SHARED") or os.path.join(REPO, "..", "shared")
PYTHON = sys.executable or "/usr/bin/python3"
WORK = os.path.join(BUILD, "vis-tests")
# Files that do not depend on the C build (PyTorch references, converted models) are made once
# for the plain and the sanitized pass (tests/run_all.sh sets TEST_CACHE): a reference folder
# holds up to 750 MB, and two copies of each filled CI's disk.
CACHE = os.environ.get("TEST_CACHE") or os.path.join(REPO, "build", "test-cache")
MODELS = os.path.join(CACHE, "models")
CIFAR = os.path.join(SHARED, "data", "cifar10")
# Quick mode: smaller inputs for the sanitized run (tests/run_all.sh sets it for build-san).
QUICK = os.environ.get("CNNSCOPE_TEST_QUICK") == "1"


def quick_note(what):
    """Prints (in quick mode only) that the test ran on smaller inputs, and what they were."""
    if QUICK:
        print("quick mode (CNNSCOPE_TEST_QUICK=1): %s" % what)

SEPARATOR = (40, 40, 40)     # VIS_SEPARATOR_RGB
OUTSIDE = (128, 0, 128)      # VIS_OUTSIDE_RGB
CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)


class Failure(Exception):
    pass


def run(cmd, what, env=None):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if p.returncode != 0:
        raise Failure("%s failed (exit %d): %s\n%s%s" % (what, p.returncode, " ".join(cmd),
                                                         p.stdout[-2000:], p.stderr[-2000:]))
    return p.stdout, p.stderr


def need(path, what):
    if not os.path.exists(path):
        raise Failure("missing %s: %s" % (what, path))
    return path


def convert(src, out, extra=()):
    """scripts/convert.py src -> out, unless out is newer than both src and the converter."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    newest = max(os.path.getmtime(src), os.path.getmtime(os.path.join(REPO, "scripts", "convert.py")))
    if not os.path.exists(out) or os.path.getmtime(out) < newest:
        run([PYTHON, "scripts/convert.py", src] + list(extra) + ["-o", out + ".tmp"], "convert " + src)
        os.replace(out + ".tmp", out)
    return out


def cifar_model(depth):
    src = need(os.path.join(CIFAR, {20: "resnet20-12fca82f.th", 56: "resnet56-4bfd9763.th"}[depth]),
               "CIFAR checkpoint (shared data)")
    return convert(src, os.path.join(MODELS, "resnet%d.cnn" % depth))


def reference_dir(arch):
    """$TEST_CACHE/reference/ARCH: scripts/make_reference.py's torchvision weights, input and
    per-layer outputs (seed 0; the script regenerates them only when its cache key changes)."""
    ref_dir = os.path.join(CACHE, "reference", arch)
    run([PYTHON, "scripts/make_reference.py", "--arch", arch, "--seed", "0", "-o", ref_dir],
        "make_reference " + arch)
    return ref_dir


def reference_model(arch):
    """(model.cnn, model.pth) of the torchvision reference `arch`."""
    pth = os.path.join(reference_dir(arch), "model.pth")
    return convert(pth, os.path.join(MODELS, arch + ".cnn"), ["--arch", arch]), pth


def gray_cifar_model():
    """A 1-channel CIFAR ResNet-20: the published checkpoint with conv1 summed over RGB
    (grayscale input 32x32, mean 0.5, std 0.25). Returns (model.cnn, its conv1 weight)."""
    import torch
    sys.path.insert(0, os.path.join(REPO, "tests"))
    import cifar_resnet_torch
    src = need(os.path.join(CIFAR, "resnet20-12fca82f.th"), "CIFAR checkpoint (shared data)")
    pth = os.path.join(WORK, "gray_resnet20.pth")
    os.makedirs(WORK, exist_ok=True)
    sd = cifar_resnet_torch.load_checkpoint(src)
    sd["conv1.weight"] = sd["conv1.weight"].sum(dim=1, keepdim=True)
    if not os.path.exists(pth) or os.path.getmtime(pth) < os.path.getmtime(src):
        torch.save(sd, pth + ".tmp")
        os.replace(pth + ".tmp", pth)
    out = convert(pth, os.path.join(WORK, "gray_resnet20.cnn"),
                  ["--arch", "cifar_resnet20", "--input-size", "1,32,32", "--mean", "0.5", "--std", "0.25",
                   "--classes", ",".join("c%d" % i for i in range(10))])
    return out, sd["conv1.weight"].numpy()


def read_png(path):
    from PIL import Image
    with Image.open(need(path, "PNG")) as im:
        if im.mode != "RGB":
            raise Failure("%s: mode %s, expected RGB" % (path, im.mode))
        return np.asarray(im, dtype=np.int32)


_VIRIDIS = None


def viridis_table():
    """[256, 3] from vis/colormap.c, checked against matplotlib's published viridis anchors
    (#440154 at 0, #21918c at 128, #fde725 at 255, and #3b528b at 64, #5ec962 at 192)."""
    global _VIRIDIS
    if _VIRIDIS is None:
        with open(os.path.join(REPO, "vis", "colormap.c")) as f:
            text = f.read()
        body = text[text.index("viridis_table[256][3] = {"):]
        body = body[:body.index("};")]
        rows = re.findall(r"\{\s*(\d+),\s*(\d+),\s*(\d+)\}", body)
        table = np.array(rows, dtype=np.int32)
        if table.shape != (256, 3):
            raise Failure("vis/colormap.c: viridis table has %s entries" % (table.shape,))
        anchors = {0: (0x44, 0x01, 0x54), 64: (0x3b, 0x52, 0x8b), 128: (0x21, 0x91, 0x8c),
                   192: (0x5e, 0xc9, 0x62), 255: (0xfd, 0xe7, 0x25)}
        for i, rgb in anchors.items():
            if tuple(table[i]) != rgb:
                raise Failure("viridis entry %d is %s, expected %s" % (i, tuple(table[i]), rgb))
        _VIRIDIS = table
    return _VIRIDIS


def viridis_matches(t, rgb):
    """Boolean array: does colour rgb [..., 3] equal viridis(t) (index floor(256 t) clamped),
    allowing the neighbouring entry where t lies within 1e-4 of an entry boundary (float32 in C
    against float64 here)."""
    table = viridis_table()
    t = np.clip(t, 0.0, 1.0)
    idx = np.minimum((t * 256).astype(np.int64), 255)
    ok = np.all(table[idx] == rgb, axis=-1)
    near = np.abs(t * 256 - np.round(t * 256)) < 1e-4 * 256
    lo = np.all(table[np.maximum(idx - 1, 0)] == rgb, axis=-1)
    hi = np.all(table[np.minimum(idx + 1, 255)] == rgb, axis=-1)
    return ok | (near & (lo | hi))


def grid_cell(i, cols, cell_w, cell_h, x0=0, y0=0, sep=1):
    """Top-left (x, y) of cell i of a vis_grid (canvas.h)."""
    return x0 + sep + (i % cols) * (cell_w + sep), y0 + sep + (i // cols) * (cell_h + sep)


def grid_cols(n):
    c = 1
    while c * c < n:
        c += 1
    return c


def upscale(a, s):
    """Nearest-neighbour: every pixel of a [h, w, ...] array becomes an s x s block."""
    return np.repeat(np.repeat(a, s, axis=0), s, axis=1)


def check_separators(img, cols, rows, cell_w, cell_h, x0=0, y0=0, what=""):
    """Every separator line of the grid has the separator colour."""
    sep = np.array(SEPARATOR)
    for r in range(rows + 1):
        y = y0 + r * (cell_h + 1)
        line = img[y, x0:x0 + 1 + cols * (cell_w + 1)]
        if not np.all(line == sep):
            raise Failure("%s: separator row at y=%d is not %s" % (what, y, SEPARATOR))
    for c in range(cols + 1):
        x = x0 + c * (cell_w + 1)
        line = img[y0:y0 + 1 + rows * (cell_h + 1), x]
        if not np.all(line == sep):
            raise Failure("%s: separator column at x=%d is not %s" % (what, x, SEPARATOR))


def unnormalise(x, mean, std):
    """[C, H, W] normalised floats -> [H, W, C] 8-bit pixels (exact for 8-bit sources)."""
    c = x.shape[0]
    m = np.array(mean[:c], dtype=np.float64).reshape(c, 1, 1)
    s = np.array(std[:c], dtype=np.float64).reshape(c, 1, 1)
    p = np.round((x.astype(np.float64) * s + m) * 255)
    return np.clip(p, 0, 255).astype(np.int32).transpose(1, 2, 0)


def private_dir(name):
    """A fresh folder under $BUILD/vis-tests for one test run's outputs, so that two runs
    never read each other's files."""
    os.makedirs(WORK, exist_ok=True)
    return tempfile.mkdtemp(prefix=name + ".", dir=WORK)


def main_wrapper(tests, cleanup=None):
    """Runs each (name, fn); prints PASS/FAIL lines; exit status 0 only if all pass.
    cleanup: a folder removed when every test passed (kept on failure, to look at)."""
    failures = 0
    for name, fn in tests:
        try:
            fn()
            print("PASS %s" % name)
        except Failure as e:
            failures += 1
            print("FAIL %s: %s" % (name, e))
    print("%d passed, %d failed" % (len(tests) - failures, failures))
    if cleanup and not failures:
        shutil.rmtree(cleanup, ignore_errors=True)
    return 1 if failures else 0
