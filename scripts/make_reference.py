#!/usr/bin/python3
"""make_reference.py - PyTorch reference activations for a torchvision model.

    /usr/bin/python3 scripts/make_reference.py --arch resnet18 [--seed 0] -o build/reference/resnet18

Needs PyTorch 1.13 and torchvision 0.14 (run it with /usr/bin/python3). Writes into DIR:

    model.pth            torch.save(state_dict) (zip format), the input of scripts/convert.py
    input.npy            [2,3,224,224] float32, seeded random input (see random_images)
    outputs/<name>.npy   the output of every named module on input.npy, float32
    outputs/logits.npy   the model's output [2,1000]
    outputs.txt          one line per recorded output, in call order: name, shape (2x64x112x112)
                         and the module's class (Conv2d, ReLU, Sequential, BasicBlock, ...)
    done                 script hash, arch, seed (the cache key); DIR is built in DIR.tmp.PID
                         and renamed into place, so it is complete whenever it exists

Naming (notes/naming.md): a forward hook on every module of named_modules() (root excluded);
a module called more than once per forward is recorded as `name` on its first call, then
`name.1`, `name.2`, ... Outputs are cloned in the hook because torchvision's ReLUs are in place.

The weights are made to exercise the engine, not to classify anything:
- every conv and linear is scaled on a calibration batch so that its output has standard
  deviation 1 (the activations neither vanish nor explode, whatever the depth: AlexNet's default
  init would shrink them by ~6x per layer), then its bias, if any, gets a random N(0, 0.2^2)
  part (torchvision zeroes most biases);
- every BatchNorm gets running statistics near (not equal to) the real statistics of its input
  on the calibration batch, a weight in +-[0.5, 1.5] (some negative) and a random bias, so that
  folding BN into the conv is really exercised;
- the last BatchNorm of each ResNet residual branch (bn2 of a BasicBlock, bn3 of a Bottleneck)
  has a quarter of that weight and bias, as in trained ResNets whose residual branches are small
  next to the identity path. At full scale the random ResNet-50 is chaotic: rounding errors grow
  ~1.4x per block, and PyTorch's own float32 layer4 output is 7e-5 (relative) away from float64,
  which would leave no room for the tests' 1e-4 (at 1/2: 2e-5, at 1/4: 6e-6). Now PyTorch's
  float32 outputs of all five tested archs are within ~6e-6 of float64, so the float32
  reference leaves the engine >= 15x room. (A float64 reference would be cleaner, but PyTorch's
  float64 VGG-16 takes 6 minutes.)
The calibration batch is a different random batch from input.npy. The input is redrawn (seeded)
until each image's top-1 logit leads the second by at least MIN_MARGIN of max |logit|, so that
a top-1 comparison with PyTorch is not decided by rounding.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys

import numpy as np
import torch
import torchvision

ARCHS = ["alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
         "vgg19_bn", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
BATCH = 2
IMAGE = 224
MIN_MARGIN = 0.02       # relative to max |logit|: 200x the tests' tolerance of 1e-4
RESIDUAL_BN_SCALE = 0.25  # weight and bias of the last BN of a residual branch (docstring)


def script_hash():
    with open(os.path.abspath(__file__), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cache_key(arch, seed):
    return {"script_sha256": script_hash(), "arch": arch, "seed": seed,
            "torch": torch.__version__, "torchvision": torchvision.__version__}


def is_cached(out_dir, key):
    try:
        with open(os.path.join(out_dir, "done")) as f:
            return json.load(f) == key
    except (OSError, ValueError):
        return False


def random_images(gen, n):
    """[n,3,224,224]: smooth random blobs (7x7 noise, upsampled) plus pixel noise, roughly
    normalised. White noise alone averages out in the global pools, and every image then gets
    the same logits up to a small image-dependent part."""
    low = torch.randn(n, 3, 7, 7, generator=gen)
    blobs = torch.nn.functional.interpolate(low, size=(IMAGE, IMAGE), mode="bilinear", align_corners=False)
    return 1.5 * blobs + 0.5 * torch.randn(n, 3, IMAGE, IMAGE, generator=gen)


def top1_margin(logits):
    """Per image: (top-1 logit - second logit) / max |logit| over the batch."""
    top2 = torch.topk(logits, 2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) / logits.abs().max()


def calibrate(model, calib_input, gen):
    """Rescales conv/linear outputs to std 1 and sets BN parameters (see the module docstring).

    One forward pass in eval mode: modules run in order, so each hook sees the input produced
    by the already calibrated layers before it.
    """
    done = set()
    handles = []
    # the last BN of each residual branch: its output is added to the identity path
    residual_last = set()
    for m in model.modules():
        if isinstance(m, torchvision.models.resnet.BasicBlock):
            residual_last.add(m.bn2)
        elif isinstance(m, torchvision.models.resnet.Bottleneck):
            residual_last.add(m.bn3)

    def randn(n):
        return torch.randn(n, generator=gen)

    def rand(n):
        return torch.rand(n, generator=gen)

    def scale_output(module, inputs, output):
        if module in done:                 # a module called twice is calibrated once
            return None
        done.add(module)
        s = 1.0 / float(output.std())
        module.weight.mul_(s)
        output = output * s                # [N,K,OH,OW] or [N,OUT]
        if module.bias is None:
            return output
        module.bias.mul_(s)
        # torchvision zeroes most biases; give every one a visible random part
        extra = 0.2 * randn(module.bias.numel())
        module.bias.add_(extra)
        shape = [1, -1] + [1] * (output.dim() - 2)
        return output + extra.view(shape)

    def set_bn(module, inputs):
        if module in done:
            return None
        done.add(module)
        x = inputs[0]                                         # [N,C,H,W]
        c = x.shape[1]
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        std = var.sqrt()
        # Near the true statistics: mean off by ~0.2 std, var off by a factor 0.6..1.6.
        module.running_mean.copy_(mean + 0.2 * std * randn(c))
        module.running_var.copy_(var * torch.exp(rand(c) - 0.5) + 1e-3)   # positive
        sign = torch.where(rand(c) < 0.2, -1.0, 1.0)
        branch_scale = RESIDUAL_BN_SCALE if module in residual_last else 1.0
        module.weight.copy_(branch_scale * sign * (0.5 + rand(c)))
        module.bias.copy_(branch_scale * 0.25 * randn(c))
        return None

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            handles.append(m.register_forward_hook(scale_output))
        elif isinstance(m, torch.nn.BatchNorm2d):
            handles.append(m.register_forward_pre_hook(set_bn))
    model(calib_input)
    for h in handles:
        h.remove()


def record_outputs(model, x):
    """Runs the model once with a hook on every named module.

    Returns (logits, [(name, module class name, array)]) in call order."""
    recorded = []          # in call order
    calls = {}             # module name -> times called in this forward
    handles = []

    def make_hook(name):
        def hook(module, inputs, output):
            if not torch.is_tensor(output):
                return None
            k = calls.get(name, 0)
            calls[name] = k + 1
            key = name if k == 0 else "%s.%d" % (name, k)
            # clone: a later in-place ReLU would overwrite this tensor
            recorded.append((key, type(module).__name__, output.detach().clone().float().numpy()))
            return None
        return hook

    for name, m in model.named_modules():
        if name == "":
            continue                        # the root is the logits, saved separately
        handles.append(m.register_forward_hook(make_hook(name)))
    logits = model(x).detach().clone().float().numpy()
    for h in handles:
        h.remove()
    return logits, recorded


def save_npy(path, array):
    np.save(path, np.ascontiguousarray(array, dtype=np.float32))


def make_reference(arch, seed, out_dir):
    key = cache_key(arch, seed)
    if is_cached(out_dir, key):
        print("make_reference: %s (seed %d) up to date in %s" % (arch, seed, out_dir))
        return
    # Other tests use these references too and may run at the same time: build everything in a
    # private folder, then swap it in with renames, so that DIR is either complete or absent.
    out_dir = out_dir.rstrip("/") or "."
    work = "%s.tmp.%d" % (out_dir, os.getpid())
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "outputs"))

    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None)
    model.eval()
    gen = torch.Generator().manual_seed(seed + 1000)
    calib = random_images(gen, BATCH)
    with torch.no_grad():
        calibrate(model, calib, gen)
        for _ in range(20):
            x = random_images(gen, BATCH)                             # [N,C,H,W]
            if float(top1_margin(model(x)).min()) >= MIN_MARGIN:
                break
        else:
            sys.exit("make_reference: %s: no input with a top-1 margin of %g in 20 draws" % (arch, MIN_MARGIN))
        logits, recorded = record_outputs(model, x)

    std = float(logits.std())
    if not (np.isfinite(logits).all() and 0.1 < std < 100):
        sys.exit("make_reference: %s: logits std %g: activations vanished or exploded" % (arch, std))

    torch.save(model.state_dict(), os.path.join(work, "model.pth"))
    save_npy(os.path.join(work, "input.npy"), x.numpy())
    lines = []
    for name, kind, a in recorded:
        save_npy(os.path.join(work, "outputs", name + ".npy"), a)
        lines.append("%s %s %s\n" % (name, "x".join(str(d) for d in a.shape), kind))
    save_npy(os.path.join(work, "outputs", "logits.npy"), logits)
    lines.append("logits %s %s\n" % ("x".join(str(d) for d in logits.shape), type(model).__name__))
    with open(os.path.join(work, "outputs.txt"), "w") as f:
        f.writelines(lines)
    with open(os.path.join(work, "done"), "w") as f:
        json.dump(key, f)

    old = "%s.old.%d" % (out_dir, os.getpid())
    if os.path.exists(out_dir):
        os.rename(out_dir, old)
    try:
        os.rename(work, out_dir)
    except OSError:
        if not is_cached(out_dir, key):      # not another run's identical result: a real error
            raise
        shutil.rmtree(work)
    shutil.rmtree(old, ignore_errors=True)
    print("make_reference: %s (seed %d): %d outputs, logits std %.3f, top-1 %s (relative margins %s) -> %s"
          % (arch, seed, len(recorded), std, logits.argmax(axis=1).tolist(),
             ", ".join("%.3f" % m for m in top1_margin(torch.from_numpy(logits)).tolist()), out_dir))


def main():
    ap = argparse.ArgumentParser(description="PyTorch reference activations for a torchvision model")
    ap.add_argument("--arch", required=True, choices=ARCHS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", required=True, help="output directory")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    make_reference(args.arch, args.seed, args.output)


if __name__ == "__main__":
    main()
