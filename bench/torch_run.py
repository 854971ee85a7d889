#!/usr/bin/python3
"""torch_run.py - PyTorch's side of bench/compare.py: time a torchvision model, or run it once.

    /usr/bin/python3 bench/torch_run.py ARCH MODEL.pth --threads T --batch N --iters I --warmup W
    /usr/bin/python3 bench/torch_run.py ARCH MODEL.pth --threads T --check IN.npy OUT.npy

Timing: torch.set_num_threads(T), eval mode, torch.no_grad(); W untimed runs, then I timed runs
of model(x) on a seeded random x [N,3,224,224]; the last line is
    median_ms=X peak_rss_mb=Y
(Y: the process's peak resident memory, the interpreter and the torch libraries included, as
for the other engines' processes). --check runs the model once on IN.npy and saves the logits.

The state dict is loaded into a torchvision model whose own random initialisation has been
freed first, so the process never holds two copies of the weights (a plain load_state_dict
would, and its peak RSS would count them both).
"""
import argparse
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torchvision

IMAGE = 224


def load_model(arch, path):
    model = getattr(torchvision.models, arch)(weights=None).eval()
    targets = dict(model.named_parameters())
    targets.update(model.named_buffers())
    shapes = {name: t.shape for name, t in targets.items()}
    for t in targets.values():
        t.data = torch.empty(0, dtype=t.dtype)          # free the random initialisation
    state = torch.load(path, map_location="cpu")
    if set(state) != set(targets):
        sys.exit("torch_run: %s: keys differ from torchvision's %s: %s" %
                 (path, arch, sorted(set(state) ^ set(targets))[:5]))
    for name, value in state.items():
        if value.shape != shapes[name]:
            sys.exit("torch_run: %s: %s has shape %s, %s expects %s" %
                     (path, name, tuple(value.shape), arch, tuple(shapes[name])))
        targets[name].data = value
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("arch")
    p.add_argument("model")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--check", nargs=2, metavar=("IN", "OUT"))
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    model = load_model(args.arch, args.model)
    with torch.no_grad():
        if args.check:
            x = torch.from_numpy(np.load(args.check[0]))                     # [N,3,224,224]
            np.save(args.check[1], model(x).numpy().astype(np.float32))      # [N,classes]
            return
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(args.batch, 3, IMAGE, IMAGE, generator=gen)          # [N,3,224,224]
        times_ms = []
        for it in range(args.warmup + args.iters):
            start = time.perf_counter()
            model(x)
            if it >= args.warmup:
                times_ms.append(1e3 * (time.perf_counter() - start))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0    # Linux: KiB
    print("torch %s, %d threads, batch %d, %d timed runs after %d warm-up"
          % (torch.__version__, torch.get_num_threads(), args.batch, args.iters, args.warmup))
    print("median_ms=%.3f peak_rss_mb=%.1f" % (statistics.median(times_ms), peak_mb))


if __name__ == "__main__":
    main()
