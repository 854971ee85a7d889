#!/usr/bin/python3
"""make_models.py - the models of bench/compare.py: one set of seeded weights, three formats.

    /usr/bin/python3 bench/make_models.py OUT_DIR ARCH [ARCH...] [--seed 0]

Needs PyTorch 1.13 and torchvision 0.14 (/usr/bin/python3); the `onnx` Python package is not
needed (torch.onnx.export writes the protobuf itself). For each ARCH (a torchvision 0.14 model:
alexnet, vgg16, resnet18, resnet50, ...), in OUT_DIR/ARCH/:

    model.pth    torch.save(state_dict): what PyTorch runs (bench/torch_run.py)
    model.cnn    scripts/convert.py of model.pth: what cnnscope runs
    model.onnx   torch.onnx.export of the same module in eval mode (opset 13, batch axis
                 dynamic, batch norms folded into the convolutions by the exporter): what
                 ONNX Runtime runs (bench/ort/ort_run.js)
    done.json    the cache key (below) and the multiply-accumulates per image counted here

Weights: torch.manual_seed(seed), torchvision's own initialisation, then the calibration of
the reference tests (scripts/make_reference.py: every conv/linear output rescaled to std 1,
random biases, non-trivial batch-norm statistics), so that activations neither vanish nor
explode (no denormals to slow anyone down, and logits large enough to compare).

Cache: ARCH/ is rebuilt when done.json's key changes: the sha256 of this script, of
make_reference.py, convert.py and cnnfile.py, the seed and the torch/torchvision versions.
It is built in ARCH.tmp.PID and renamed into place, so ARCH/ is complete whenever it exists.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys

import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "..", "scripts")
sys.path.insert(0, SCRIPTS)
import make_reference  # noqa: E402  (calibrate, random_images)

IMAGE = 224
KEY_FILES = [os.path.abspath(__file__)] + [os.path.join(SCRIPTS, f) for f in
                                           ("make_reference.py", "convert.py", "cnnfile.py")]


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cache_key(arch, seed):
    return {"arch": arch, "seed": seed, "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "sha256": {os.path.basename(p): file_sha256(p) for p in KEY_FILES}}


def read_done(out_dir):
    try:
        with open(os.path.join(out_dir, "done.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def count_macs(model, x):
    """Multiply-accumulates per image of the convolutions and linear layers, on input x."""
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        else:
            per_output = module.in_features
        total[0] += output[0].numel() * per_output      # output[0]: one image

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    model(x)
    for h in handles:
        h.remove()
    return total[0]


def make_model(arch, seed, out_dir):
    key = cache_key(arch, seed)
    done = read_done(out_dir)
    if done and done.get("key") == key:
        print("make_models: %s up to date in %s" % (arch, out_dir))
        return
    out_dir = out_dir.rstrip("/")
    work = "%s.tmp.%d" % (out_dir, os.getpid())
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        make_reference.calibrate(model, make_reference.random_images(gen, 2), gen)
        x = torch.randn(1, 3, IMAGE, IMAGE, generator=gen)                    # [1,3,224,224]
        macs = count_macs(model, x)

    pth = os.path.join(work, "model.pth")
    torch.save(model.state_dict(), pth)
    subprocess.run([sys.executable, os.path.join(SCRIPTS, "convert.py"), pth, "--arch", arch,
                    "-o", os.path.join(work, "model.cnn"), "--name", arch], check=True)
    with torch.no_grad():
        torch.onnx.export(model, x, os.path.join(work, "model.onnx"), opset_version=13,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    with open(os.path.join(work, "done.json"), "w") as f:
        json.dump({"key": key, "macs_per_image": macs}, f, indent=1)

    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(work, out_dir)
    print("make_models: %s (seed %d): %.3f GMAC per image -> %s" % (arch, seed, macs / 1e9, out_dir))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("archs", nargs="+")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for arch in args.archs:
        if not hasattr(torchvision.models, arch):
            sys.exit("make_models: %s: not a torchvision model" % arch)
        make_model(arch, args.seed, os.path.join(args.out_dir, arch))


if __name__ == "__main__":
    main()
