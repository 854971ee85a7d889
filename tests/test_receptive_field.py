#!/usr/bin/python3
"""test_receptive_field.py - `cnnscope info`'s receptive field columns against PyTorch autograd.

The receptive field of an output position is measured, independently of cnnscope's graph, as
the extent (bounding box) of the input pixels whose gradient is non-zero for that one output,
with PyTorch autograd on the torchvision architectures of the reference models (AlexNet,
VGG-16, ResNet-50, as scripts/make_reference.py builds them) and on the CIFAR ResNet-56
(tests/cifar_resnet_torch.py, shortcut option A).

The networks are measured as "geometry twins": the same modules in the same forward code
(torchvision's own, residual adds included), with every conv made 1-in/1-out with the same
kernel, stride, padding and dilation and all weights positive (1 / kernel area), ReLU and
BatchNorm made identities, max pools made average pools of the same window (same kernel,
stride, padding, ceil_mode), linear layers made a mean over their inputs, and shortcut_a's
channel padding dropped (its stride kept). Why: with trained or random weights, dead ReLUs,
max-pool choices and cancellations make the gradient's support data-dependent and smaller than
the receptive field; with positive weights and linear ops the support is exactly the set of
input pixels connected to the output, which is what a receptive field is. Computed in float64
(the corner of a deep field gets weights near 1e-20).

For every listed layer and several output positions (corners, centre, edges, random), the
measured box must equal cnnscope's: rows [first + y*jump, first + y*jump + size - 1] clipped to
the image, with first = start - (size - 1) / 2 from `cnnscope info`'s rf / jump / start columns;
global layers must cover the whole image.

Env: BUILD, CNNSCOPE, SHARED, TEST_CACHE (as in tests/run_all.sh). Exit status 0 only if every box matches.
"""
import os
import re
import subprocess
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
import cifar_resnet_torch  # noqa: E402
import vis_common  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
CNNSCOPE = os.environ.get("CNNSCOPE", os.path.join(BUILD, "cnnscope"))

# (model, layers whose output is both a torchvision module output and a graph node)
LAYERS = {
    "alexnet": ["features.0", "features.2", "features.3", "features.5", "features.8",
                "features.12", "classifier.1", "classifier.6"],
    "vgg16": ["features.0", "features.2", "features.4", "features.9", "features.16",
              "features.23", "features.28", "features.30", "classifier.0"],
    "resnet50": ["conv1", "maxpool", "layer1.0.conv2", "layer1.0", "layer2.0.conv2", "layer2.0",
                 "layer2.3", "layer3.0", "layer3.5", "layer4.0", "layer4.2", "avgpool", "fc"],
    "cifar_resnet56": ["conv1", "layer1.0", "layer1.8", "layer2.0.conv1", "layer2.0.shortcut",
                       "layer2.0", "layer2.8", "layer3.0", "layer3.8", "avgpool", "linear"],
}


Failure = vis_common.Failure


def run(cmd, what):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise Failure("%s failed (exit %d): %s\n%s" % (what, p.returncode, " ".join(cmd), p.stdout[-3000:]))
    return p.stdout


def model_file(arch):
    """The cnnscope model of `arch`: the torchvision reference (vis_common.reference_model) or
    the published CIFAR ResNet-56, converted into the test cache."""
    if arch == "cifar_resnet56":
        return vis_common.cifar_model(56)
    return vis_common.reference_model(arch)[0]


def parse_pair(text):
    parts = text.split(",")
    return (float(parts[0]), float(parts[-1]))


def read_info(path):
    """{node name: (out_h, out_w, rf)} from `cnnscope info`; rf None if global, else
    ((size_h, size_w), (jump_h, jump_w), (start_h, start_w))."""
    out = run([CNNSCOPE, "info", path], "cnnscope info")
    head = [l for l in out.splitlines() if l.strip().startswith("#")]
    if not head or not re.search(r"\brf\s+jump\s+start\s*$", head[0]):
        raise Failure("cnnscope info has no 'rf jump start' columns:\n" + out[:2000])
    nodes = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) < 9 or not f[0].isdigit():
            continue
        name, shape = f[1], f[3]
        dims = [int(v) for v in shape.split("x")]
        h, w = (dims[1], dims[2]) if len(dims) == 3 else (1, 1)
        if f[-3] == "global":
            if f[-2] != "-" or f[-1] != "-":
                raise Failure("%s: global row must have '-' jump and start: %s" % (name, line))
            nodes[name] = (h, w, None)
        else:
            nodes[name] = (h, w, (parse_pair(f[-3]), parse_pair(f[-2]), parse_pair(f[-1])))
    return nodes


def expected_box(rf, y, x, H, W):
    """Clipped inclusive box (y0, x0, y1, x1) of output (y, x) from the info columns."""
    if rf is None:
        return (0, 0, H - 1, W - 1)
    (sh, sw), (jh, jw), (ch, cw) = rf
    fh, fw = ch - (sh - 1) / 2, cw - (sw - 1) / 2
    assert fh == int(fh) and fw == int(fw), rf
    y0, x0 = int(fh + y * jh), int(fw + x * jw)
    y1, x1 = int(y0 + sh - 1), int(x0 + sw - 1)
    return (max(y0, 0), max(x0, 0), min(y1, H - 1), min(x1, W - 1))


# ---------------------------------------------------------------------------------------------
# Geometry twins

class MeanFeatures(nn.Module):
    """Stands for a Linear layer: [N, F] -> [N, 1], each input weighted 1/F."""

    def forward(self, x):
        return x.mean(dim=1, keepdim=True)


def make_twin(module):
    """Replaces, in place and recursively, every layer by its geometry twin (see the docstring)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d):
            assert child.groups == 1, name
            conv = nn.Conv2d(1, 1, child.kernel_size, stride=child.stride, padding=child.padding,
                             dilation=child.dilation, bias=False)
            with torch.no_grad():
                conv.weight.fill_(1.0 / (child.kernel_size[0] * child.kernel_size[1]))
            setattr(module, name, conv)
        elif isinstance(child, (nn.BatchNorm2d, nn.ReLU)):
            setattr(module, name, nn.Identity())
        elif isinstance(child, nn.MaxPool2d):
            dil = child.dilation if isinstance(child.dilation, int) else child.dilation[0]
            assert dil == 1, name   # AvgPool2d has no dilation; torchvision never uses one
            setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                               ceil_mode=child.ceil_mode, count_include_pad=True))
        elif isinstance(child, nn.Linear):
            setattr(module, name, MeanFeatures())
        elif isinstance(child, cifar_resnet_torch.ShortcutA):
            child.pad = 0          # one channel in, one out; the stride stays
        else:
            make_twin(child)
    return module


def torch_model(arch):
    if arch == "cifar_resnet56":
        return cifar_resnet_torch.CifarResNet(56), 32
    return getattr(torchvision.models, arch)(), 224


# torchvision's BasicBlock/Bottleneck call their single ReLU module twice or three times; the
# twin's Identity does not matter, but the ResNet blocks also use F.relu / in-place adds, which
# are fine on a 1-channel float64 tensor.

class Stop(Exception):
    pass


def measure(twin, layer, size, positions):
    """For each (y, x) (or None for an [N, F] output): the bounding box (y0, x0, y1, x1) of the
    input pixels with a non-zero gradient of that one output."""
    module = dict(twin.named_modules())[layer]
    captured = {}

    def hook(mod, inputs, output):
        captured["out"] = output
        raise Stop()

    handle = module.register_forward_hook(hook)
    n = len(positions)
    x = torch.ones(n, 1, size, size, dtype=torch.float64, requires_grad=True)
    try:
        twin(x)
    except Stop:
        pass
    finally:
        handle.remove()
    out = captured["out"]
    picked = []
    for i, pos in enumerate(positions):
        if out.dim() == 2:
            picked.append(out[i, 0])
        else:
            picked.append(out[i, 0, pos[0], pos[1]])
    torch.stack(picked).sum().backward()
    boxes = []
    for i in range(n):
        g = x.grad[i, 0].numpy()
        ys, xs = np.nonzero(g)
        if len(ys) == 0:
            raise Failure("%s: no input pixel has a gradient for position %s" % (layer, positions[i]))
        boxes.append((int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())))
    return boxes, tuple(out.shape)


def positions_for(h, w, rng):
    pts = {(0, 0), (h - 1, w - 1), (0, w - 1), (h - 1, 0), (h // 2, w // 2), (1 % h, 1 % w),
           (min(2, h - 1), w // 3)}
    for _ in range(3):
        pts.add((int(rng.integers(h)), int(rng.integers(w))))
    return sorted(pts)


def test_arch(arch):
    info = read_info(model_file(arch))
    model, size = torch_model(arch)
    twin = make_twin(model.eval()).double()
    rng = np.random.default_rng(0)
    checked = 0
    for layer in LAYERS[arch]:
        if layer not in info:
            raise Failure("%s: layer %s is not a node of the converted graph" % (arch, layer))
        h, w, rf = info[layer]
        positions = positions_for(h, w, rng)
        measured, shape = measure(twin, layer, size, positions)
        if len(shape) == 4 and (shape[2], shape[3]) != (h, w):
            raise Failure("%s %s: PyTorch output %s, cnnscope %dx%d" % (arch, layer, shape, h, w))
        bad = []
        for pos, got in zip(positions, measured):
            want = expected_box(rf, pos[0], pos[1], size, size)
            if got != want:
                bad.append("position %s: gradient box %s, cnnscope box %s" % (pos, got, want))
        desc = "global" if rf is None else "size %g jump %g start %g" % (rf[0][0], rf[1][0], rf[2][0])
        print("  %-15s %-20s %-28s %2d positions %s" % (arch, layer, desc, len(positions),
                                                        "ok" if not bad else "MISMATCH"))
        if bad:
            raise Failure("%s %s (%s):\n  %s" % (arch, layer, desc, "\n  ".join(bad)))
        checked += len(positions)
    return checked


def main():
    if not os.path.exists(CNNSCOPE):
        print("FAIL: %s not built" % CNNSCOPE)
        return 1
    torch.set_num_threads(2)
    total, failures = 0, []
    for arch in LAYERS:
        try:
            total += test_arch(arch)
        except Failure as e:
            failures.append(str(e))
            print("FAIL %s: %s" % (arch, e))
    if failures:
        print("\n%d architecture(s) failed" % len(failures))
        return 1
    print("\nall %d receptive field boxes equal the gradient support" % total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
