#!/usr/bin/python3
"""compare.py - `make bench`: cnnscope against ONNX Runtime and PyTorch, on this machine, in one go.

    make bench                        # everything (BENCH_ARGS="..." passes options)
    /usr/bin/python3 bench/compare.py [--quick] [--models alexnet,vgg16,resnet18,resnet50]
        [--batches 1,8] [--threads 1,2] [--iters N] [--warmup N] [--rounds R]

Run from the repository root after `make` (env BUILD, default build; CC names the compiler to
record). Steps:
  1. ONNX Runtime: `npm ci --ignore-scripts` in bench/ort/ unless the version that
     package-lock.json pins is already installed there (the CPU build ships in the package).
  2. build/bench/peak: peak FP32 FMA GFLOP/s per ISA and DRAM read GB/s, on 1 and N threads,
     and the core-to-core round trip of a cache line.
  3. bench/make_models.py: each model from one set of seeded random weights as model.pth
     (PyTorch), model.cnn (scripts/convert.py) and model.onnx (torch.onnx.export), cached in
     $BUILD/bench-models/ and rebuilt when a script that makes them changes.
  4. Agreement, before any timing: for each model and batch size, the three engines run the
     same random input; the logits must agree: max|a - b| / max|b| < 1e-3 for every pair
     (b: PyTorch's, or ONNX Runtime's for cnnscope vs ONNX Runtime). A model that fails is
     not timed, and the script exits with status 1.
  5. Timing: for each model, batch and thread count, the engines one after the other, each in
     its own process: `cnnscope bench` (its last line median_ms=X peak_rss_mb=Y),
     bench/ort/ort_run.js (ONNX Runtime, intraOpNumThreads = threads) and bench/torch_run.py
     (torch.set_num_threads, torch.no_grad). Each: warm-up runs, then timed runs, median.
     cnnscope and ONNX Runtime take turns R times (--rounds, default 3) and each one's time is
     the median of its rounds, so that their ratio does not depend on how fast the (shared)
     machine happened to be in the minute each ran; PyTorch runs once.
  6. The load of ResNet-50 packed for this machine's kernels (`cnnscope pack`: the convs'
     weights stored prepared in the file): 5 processes of `cnnscope bench --iters 1`, median.
  7. The table (markdown), the targets of issue 3 (cnnscope / ONNX Runtime at 2 threads,
     ResNet-50 load time, packed and plain, and peak RSS), and the machine and versions; also written to
     $BUILD/bench-results/summary.md (--quick: summary-quick.md), next to each run's output.

Iterations (unless --iters/--warmup): 2 warm-up runs, then 40 GMAC worth of timed runs,
at least 10 and at most 50 (ResNet-18 batch 1: 22; VGG-16 batch 8: 10). --quick: ResNet-18,
batch 1, threads 1 and 2, 3 timed runs after 1 warm-up, a short peak measurement: a smoke
test of the whole pipeline (a minute or two), not a measurement.

A full run takes 11-19 minutes on a 2-core machine (648 to 1112 s measured; ~11 with --rounds 1),
plus 1-2 minutes the first time (npm ci, making the models: 2.7 GB in $BUILD/bench-models/).

GFLOP/s = 2 x MACs per image (cnnscope info) x batch / median time; "% peak" divides it by
build/bench/peak's FMA peak for the ISA cnnscope's kernels use at that thread count. Peak RSS
is each engine's whole process (the Python interpreter and torch for PyTorch, node for ONNX
Runtime).
"""
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", "build")
CNNSCOPE = os.path.join(BUILD, "cnnscope")
PEAK = os.path.join(BUILD, "bench", "peak")
MODELS_DIR = os.path.join(BUILD, "bench-models")
RESULTS_DIR = os.path.join(BUILD, "bench-results")
ORT_DIR = os.path.join("bench", "ort")
TORCH_PYTHON = "/usr/bin/python3"

ALL_MODELS = ["alexnet", "vgg16", "resnet18", "resnet50"]
NAMES = {"alexnet": "AlexNet", "vgg16": "VGG-16", "resnet18": "ResNet-18", "resnet50": "ResNet-50"}
AGREEMENT = 1e-3            # max|a - b| / max|b| of the logits
TIMED_GMAC = 40             # automatic iterations: this much work per timed engine run
MIN_ITERS, MAX_ITERS = 10, 50
# issue 3: cnnscope median / ONNX Runtime median at TARGET_THREADS threads, per batch size
TARGET_THREADS = 2
TARGETS = {"resnet50": {1: 0.90, 8: 0.95}, "resnet18": {1: 0.90, 8: 0.95},
           "vgg16": {1: 0.60, 8: 0.70}, "alexnet": {1: 0.80, 8: 0.90}}
LOAD_TARGET = ("resnet50", 50.0)      # ms from open to ready-to-run (cnnscope bench's "load:")
LOAD_RUNS = 5                         # loads of the packed file (cnnscope pack), median


class BenchError(Exception):
    pass


def log(message=""):
    print(message, flush=True)


def run(cmd, env=None, cwd=None, what=None):
    """Runs cmd; returns its stdout. Raises BenchError with its output when it fails."""
    start = time.time()
    p = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if p.returncode != 0:
        raise BenchError("%s failed (exit %d after %.1f s): %s\n%s%s" % (
            what or cmd[0], p.returncode, time.time() - start, " ".join(cmd),
            p.stdout[-2000:], p.stderr[-3000:]))
    return p.stdout


def parse_list(text, kind=int):
    return [kind(x) for x in text.split(",") if x.strip()]


# ---------------------------------------------------------------------------------------------
# 1. ONNX Runtime

def ort_version_installed():
    try:
        with open(os.path.join(ORT_DIR, "node_modules", "onnxruntime-node", "package.json")) as f:
            return json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        return None


def setup_ort():
    """npm ci --ignore-scripts in bench/ort unless the locked version is there already."""
    with open(os.path.join(ORT_DIR, "package-lock.json")) as f:
        locked = json.load(f)["packages"]["node_modules/onnxruntime-node"]["version"]
    if ort_version_installed() == locked:
        return locked
    if not shutil.which("npm") or not shutil.which("node"):
        raise BenchError("node and npm are needed for ONNX Runtime (Debian: apt-get install nodejs npm)")
    log("installing onnxruntime-node %s into %s (npm ci --ignore-scripts) ..." % (locked, ORT_DIR))
    run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=ORT_DIR, what="npm ci")
    if ort_version_installed() != locked:
        raise BenchError("npm ci did not install onnxruntime-node %s in %s" % (locked, ORT_DIR))
    return locked


# ---------------------------------------------------------------------------------------------
# 2. peak

def measure_peak(quick, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(max(threads)))
    out = run([PEAK] + (["--quick"] if quick else []), env=env, what="bench/peak")
    fma, dram, round_trip = {}, {}, None
    for line in out.splitlines():
        m = re.match(r"peak_fma_gflops isa=(\w+) threads=(\d+) value=([\d.]+)$", line)
        if m:
            fma[(m.group(1), int(m.group(2)))] = float(m.group(3))
        m = re.match(r"dram_read_gbs threads=(\d+) value=([\d.]+)$", line)
        if m:
            dram[int(m.group(1))] = float(m.group(2))
        m = re.match(r"core_round_trip_ns value=([\d.]+)$", line)
        if m:
            round_trip = float(m.group(1))
    if not fma or not dram:
        raise BenchError("bench/peak printed no peak_fma_gflops/dram_read_gbs lines:\n" + out)
    log("\n".join(l for l in out.splitlines()
                   if not re.match(r"(peak_fma_gflops|dram_read_gbs|core_round_trip_ns) ", l)))
    return fma, dram, round_trip


# ---------------------------------------------------------------------------------------------
# 3. models and 4. agreement

def model_paths(arch):
    d = os.path.join(MODELS_DIR, arch)
    return {"cnn": os.path.join(d, "model.cnn"), "onnx": os.path.join(d, "model.onnx"),
            "pth": os.path.join(d, "model.pth"), "done": os.path.join(d, "done.json")}


def cnnscope_info(cnn):
    """(name of the last node, MACs per image) from `cnnscope info`."""
    out = run([CNNSCOPE, "info", cnn], what="cnnscope info")
    last, macs = None, None
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+(\S+)\s+\S+\s", line)
        if m:
            last = m.group(2)
        m = re.match(r"total: .* (\d+) MACs per image", line)
        if m:
            macs = int(m.group(1))
    if last is None or macs is None:
        raise BenchError("cannot read the last node or the MACs from `cnnscope info %s`:\n%s" % (cnn, out))
    return last, macs


def relative_diff(a, b):
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def check_agreement(arch, batch, threads, last_node):
    """Runs the three engines on one random input; returns (ok, message)."""
    paths = model_paths(arch)
    work = os.path.join(RESULTS_DIR, "check", "%s-b%d" % (arch, batch))
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    x_path = os.path.join(work, "input.npy")
    np.save(x_path, x)
    t = str(threads)
    run([CNNSCOPE, "dump", paths["cnn"], "--input", x_path, "--layer", last_node, "-o", work,
         "--threads", t], what="cnnscope dump")
    run(["node", os.path.join(ORT_DIR, "ort_run.js"), paths["onnx"], "--threads", t,
         "--check", x_path, os.path.join(work, "ort.npy")], what="ort_run.js --check")
    run([TORCH_PYTHON, os.path.join("bench", "torch_run.py"), arch, paths["pth"], "--threads", t,
         "--check", x_path, os.path.join(work, "torch.npy")], what="torch_run.py --check")
    logits = {"cnnscope": np.load(os.path.join(work, last_node + ".npy")).reshape(batch, -1),
              "ort": np.load(os.path.join(work, "ort.npy")),
              "torch": np.load(os.path.join(work, "torch.npy"))}
    pairs = [("cnnscope", "torch"), ("ort", "torch"), ("cnnscope", "ort")]
    diffs = {(a, b): relative_diff(logits[a], logits[b]) for a, b in pairs}
    top1 = {k: v.argmax(axis=1).tolist() for k, v in logits.items()}
    ok = all(d < AGREEMENT for d in diffs.values())
    message = "%-9s batch %d: max|diff|/max|logit|: %s; top-1 %s%s" % (
        arch, batch, ", ".join("%s-%s %.1e" % (a, b, d) for (a, b), d in diffs.items()),
        "same" if top1["cnnscope"] == top1["ort"] == top1["torch"] else "DIFFERS %s" % top1,
        "" if ok else "  FAILED (limit %g)" % AGREEMENT)
    if ok:
        shutil.rmtree(work)          # keep the evidence only when it failed
        if not os.listdir(os.path.dirname(work)):
            os.rmdir(os.path.dirname(work))
    return ok, message


# ---------------------------------------------------------------------------------------------
# 5. timing

def last_line_numbers(out, what):
    m = re.search(r"^median_ms=([\d.]+) peak_rss_mb=([\d.]+)\s*$", out.strip().splitlines()[-1]
                  if out.strip() else "")
    if not m:
        raise BenchError("%s: no 'median_ms=X peak_rss_mb=Y' last line in:\n%s" % (what, out[-2000:]))
    return float(m.group(1)), float(m.group(2))


def load_ms_of(out):
    """The load time from `cnnscope bench`'s 'load: X ms' line, or None."""
    m = re.search(r"^load: ([\d.]+) ms", out, re.M)
    return float(m.group(1)) if m else None


def run_engine(engine, cmd, tag):
    """One engine's process: {ms, rss, ...} from its last line, or {error} if it failed."""
    try:
        out = run(cmd, what=tag)
        with open(os.path.join(RESULTS_DIR, tag + ".txt"), "w") as f:
            f.write(" ".join(cmd) + "\n" + out)
        ms, rss = last_line_numbers(out, tag)
    except BenchError as e:
        log("  %s" % str(e).replace("\n", "\n    "))
        return {"error": True}
    r = {"ms": ms, "rss": rss}
    if engine == "cnnscope":
        m = re.search(r"kernels (\w+)", out)
        r["isa"] = m.group(1) if m else None
        r["load_ms"] = load_ms_of(out)
    return r


def median(values):
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])


def time_engines(arch, batch, threads, iters, warmup, rounds):
    """{engine: {ms, rss, rounds, ...}} for one configuration; an engine that fails gets {error}.

    cnnscope and ONNX Runtime take turns for `rounds` rounds (PyTorch runs once, in the first):
    each one's time is the median of its rounds' medians, its RSS the largest. On a shared VM
    the machine's speed drifts by 10-20 % over minutes; alternating puts both engines in the
    same minutes, so the ratio compares them and not the moments they ran in."""
    paths = model_paths(arch)
    counts = ["--batch", str(batch), "--threads", str(threads), "--iters", str(iters),
              "--warmup", str(warmup)]
    commands = {
        "cnnscope": [CNNSCOPE, "bench", paths["cnn"]] + counts,
        "ort": ["node", os.path.join(ORT_DIR, "ort_run.js"), paths["onnx"]] + counts,
        "torch": [TORCH_PYTHON, os.path.join("bench", "torch_run.py"), arch, paths["pth"]] + counts,
    }
    runs = {engine: [] for engine in commands}
    for k in range(rounds):
        for engine, cmd in commands.items():
            if engine == "torch" and k > 0:
                continue
            tag = "%s-%s-b%d-t%d" % (engine, arch, batch, threads)
            if rounds > 1 and engine != "torch":
                tag += "-r%d" % (k + 1)
            runs[engine].append(run_engine(engine, cmd, tag))
    results = {}
    for engine, rs in runs.items():
        if any("error" in r for r in rs):
            results[engine] = {"error": True}
            continue
        r = dict(rs[0])
        r["rounds"] = [x["ms"] for x in rs]
        r["ms"] = median(r["rounds"])
        r["rss"] = max(x["rss"] for x in rs)
        if engine == "cnnscope" and all(x.get("load_ms") is not None for x in rs):
            r["load_ms"] = median([x["load_ms"] for x in rs])
        results[engine] = r
    return results


def packed_load(arch, threads):
    """{ms, first_ms, convs}: the load time of the model packed for this machine's kernels
    (cnnscope pack), median of LOAD_RUNS processes; first_ms is the first of them, which reads
    the file from disk (pack drops it from the page cache). None if it failed."""
    cnn = model_paths(arch)["cnn"]
    packed = cnn[:-len(".cnn")] + ".packed.cnn"
    try:
        run([CNNSCOPE, "pack", cnn, "-o", packed], what="pack %s" % arch)
        loads, convs = [], None
        for k in range(LOAD_RUNS):
            out = run([CNNSCOPE, "bench", packed, "--threads", str(threads), "--iters", "1",
                       "--warmup", "0"], what="load %s" % packed)
            with open(os.path.join(RESULTS_DIR, "cnnscope-%s-packed-load-r%d.txt" % (arch, k + 1)),
                      "w") as f:
                f.write(out)
            load_ms = load_ms_of(out)
            c = re.search(r"^prepared weights: (\d+) convs", out, re.M)
            if load_ms is None or not c:
                raise BenchError("%s: no 'load:' or 'prepared weights:' line in:\n%s" % (packed, out[-2000:]))
            loads.append(load_ms)
            convs = int(c.group(1))
    except BenchError as e:
        log("  %s" % str(e).replace("\n", "\n    "))
        return None
    return {"ms": median(loads), "first_ms": loads[0], "convs": convs}


def auto_iterations(macs, batch):
    gmac = macs * batch / 1e9
    return max(MIN_ITERS, min(MAX_ITERS, int(round(TIMED_GMAC / gmac)))), 2


# ---------------------------------------------------------------------------------------------
# 6. report

def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table(rows, fma_peak):
    head = ("| model | batch | threads | cnnscope ms | ORT ms | PyTorch ms | cnnscope/ORT "
            "| cnnscope/PyTorch | cnnscope GFLOP/s | % of peak | RSS MB cnnscope | RSS MB ORT "
            "| RSS MB PyTorch |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        e = r["engines"]
        ms = {k: e.get(k, {}).get("ms") for k in ("cnnscope", "ort", "torch")}
        rss = {k: e.get(k, {}).get("rss") for k in ("cnnscope", "ort", "torch")}
        ratio_ort = ms["cnnscope"] / ms["ort"] if ms["cnnscope"] and ms["ort"] else None
        ratio_torch = ms["cnnscope"] / ms["torch"] if ms["cnnscope"] and ms["torch"] else None
        gflops = 2e-6 * r["macs"] * r["batch"] / ms["cnnscope"] if ms["cnnscope"] else None
        peak = fma_peak.get((e.get("cnnscope", {}).get("isa"), r["threads"]))
        share = 100 * gflops / peak if gflops and peak else None
        r.update(ratio_ort=ratio_ort, gflops=gflops)
        lines.append("| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            NAMES.get(r["arch"], r["arch"]), r["batch"], r["threads"], fmt(ms["cnnscope"], ".2f"),
            fmt(ms["ort"], ".2f"), fmt(ms["torch"], ".2f"), fmt(ratio_ort, ".2f"),
            fmt(ratio_torch, ".2f"), fmt(gflops, ".1f"), fmt(share, ".0f"),
            fmt(rss["cnnscope"], ".0f"), fmt(rss["ort"], ".0f"), fmt(rss["torch"], ".0f")))
    return lines


def target_lines(rows, packed):
    lines = []
    for r in rows:
        goal = TARGETS.get(r["arch"], {}).get(r["batch"])
        if goal is None or r["threads"] != TARGET_THREADS:
            continue
        ratio = r.get("ratio_ort")
        verdict = "-" if ratio is None else "met" if ratio <= goal else "MISSED"
        lines.append("- %s batch %d, %d threads: cnnscope/ORT %s (target <= %.2f): %s" % (
            NAMES[r["arch"]], r["batch"], TARGET_THREADS, fmt(ratio, ".2f"), goal, verdict))
    for r in rows:
        if r["arch"] != LOAD_TARGET[0] or r["batch"] != 1:
            continue
        c, o = r["engines"].get("cnnscope", {}), r["engines"].get("ort", {})
        pk = packed.get(r["threads"]) if r["threads"] == TARGET_THREADS else None
        if pk is not None:
            lines.append("- %s load of the file from `cnnscope pack` (mmap, validation, planning; "
                         "%d convs' weights prepared in the file), %d thread(s): %.1f ms, median "
                         "of %d (target <= %.0f): %s; the first, from disk: %.1f ms" % (
                             NAMES[r["arch"]], pk["convs"], r["threads"], pk["ms"], LOAD_RUNS,
                             LOAD_TARGET[1], "met" if pk["ms"] <= LOAD_TARGET[1] else "MISSED",
                             pk["first_ms"]))
        if c.get("load_ms") is not None:
            lines.append("- %s load of the plain file (mmap, validation, planning, preparing the "
                         "weights), %d thread(s): %.1f ms" % (NAMES[r["arch"]], r["threads"],
                                                             c["load_ms"]))
        if c.get("rss") is not None and o.get("rss") is not None:
            lines.append("- %s batch 1, %d thread(s): peak RSS cnnscope %.0f MB, ORT %.0f MB "
                         "(target: below ORT): %s" % (NAMES[r["arch"]], r["threads"], c["rss"], o["rss"],
                                                      "met" if c["rss"] < o["rss"] else "MISSED"))
    return lines


def first_line(cmd):
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
        return out.strip().splitlines()[0] if out.strip() else "?"
    except OSError:
        return "not found"


def machine_lines(ort_version, torch_version, isas):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            cpu = m.group(1) if m else platform.machine()
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.0f GiB" % (int(re.search(r"MemTotal:\s*(\d+)", f.read()).group(1)) / 1048576)
    except (OSError, AttributeError):
        pass
    os_name = "?"
    try:
        with open("/etc/os-release") as f:
            m = re.search(r'^PRETTY_NAME="?([^"\n]*)', f.read(), re.M)
            os_name = m.group(1) if m else "?"
    except OSError:
        pass
    blas = os.path.realpath("/lib/%s-linux-gnu/libblas.so.3" % platform.machine())
    env = " ".join("%s=%s" % (k, v) for k, v in sorted(os.environ.items())
                   if re.match(r"(OMP|GOMP|KMP|MKL|OPENBLAS)_", k)) or "none"
    cc = os.environ.get("CC", "cc").split()
    commit = first_line(["git", "rev-parse", "--short", "HEAD"]) if os.path.isdir(".git") else "?"
    return [
        "- date: %s" % time.strftime("%Y-%m-%d"),
        "- machine: %s, %d logical CPUs, %s, %s, Linux %s" % (cpu, os.cpu_count() or 0, mem,
                                                          os_name, platform.release()),
        "- cnnscope: commit %s, kernels %s, compiler: %s" % (
            commit, "/".join(sorted(isas)) or "?", first_line(cc + ["--version"])),
        "- ONNX Runtime: onnxruntime-node %s (CPU execution provider), node %s"
        % (ort_version, first_line(["node", "--version"])),
        "- PyTorch: %s (Debian, %s), BLAS: libblas.so.3 -> %s" % (torch_version, TORCH_PYTHON, blas),
        "- threading environment: %s" % env,
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: ResNet-18, batch 1, 3 runs")
    p.add_argument("--models", type=lambda s: parse_list(s, str), default=None)
    p.add_argument("--batches", type=parse_list, default=None)
    p.add_argument("--threads", type=parse_list, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None,
                   help="cnnscope and ONNX Runtime take turns this many times (default 3; --quick 1)")
    args = p.parse_args()
    os.chdir(ROOT)
    models = args.models or (["resnet18"] if args.quick else ALL_MODELS)
    batches = args.batches or ([1] if args.quick else [1, 8])
    threads = args.threads or [1, 2]
    rounds = args.rounds if args.rounds is not None else 1 if args.quick else 3
    if rounds < 1:
        raise BenchError("--rounds must be at least 1")
    if args.quick:
        args.iters = args.iters or 3
        args.warmup = 1 if args.warmup is None else args.warmup
    started = time.time()
    os.makedirs(RESULTS_DIR, exist_ok=True)
    for name in os.listdir(RESULTS_DIR):         # the previous run's per-run output
        if name.endswith(".txt"):
            os.remove(os.path.join(RESULTS_DIR, name))
    for tool in (CNNSCOPE, PEAK):
        if not os.access(tool, os.X_OK):
            raise BenchError("%s is missing: run make first" % tool)

    ort_version = setup_ort()
    log("== peak (build/bench/peak%s)" % (" --quick" if args.quick else ""))
    fma_peak, dram, round_trip = measure_peak(args.quick, threads)

    log("\n== models (bench/make_models.py -> %s)" % MODELS_DIR)
    subprocess.run([TORCH_PYTHON, os.path.join("bench", "make_models.py"), MODELS_DIR] + models,
                   check=True)
    info = {}
    for arch in models:
        last, macs = cnnscope_info(model_paths(arch)["cnn"])
        with open(model_paths(arch)["done"]) as f:
            torch_macs = json.load(f)["macs_per_image"]
        if torch_macs != macs:
            log("warning: %s: cnnscope info counts %d MACs per image, PyTorch's conv/linear "
                "layers %d; GFLOP/s uses cnnscope's" % (arch, macs, torch_macs))
        info[arch] = (last, macs)

    log("\n== agreement of the logits (limit %g), threads=%d" % (AGREEMENT, max(threads)))
    failed = []
    for arch in models:
        for batch in batches:
            ok, message = check_agreement(arch, batch, max(threads), info[arch][0])
            log(message)
            if not ok:
                failed.append(arch)
    timed = [a for a in models if a not in failed]

    log("\n== timing (cnnscope, ONNX Runtime, PyTorch; median of the timed runs; cnnscope and "
        "ONNX Runtime: median of %d alternating rounds)" % rounds)
    rows = []
    torch_version = "?"
    configs = [(a, b, t) for a in timed for b in batches for t in threads]
    for i, (arch, batch, t) in enumerate(configs):
        iters, warmup = auto_iterations(info[arch][1], batch)
        iters = args.iters or iters
        warmup = warmup if args.warmup is None else args.warmup
        engines = time_engines(arch, batch, t, iters, warmup, rounds)
        rows.append({"arch": arch, "batch": batch, "threads": t, "macs": info[arch][1],
                     "engines": engines})
        try:
            with open(os.path.join(RESULTS_DIR, "torch-%s-b%d-t%d.txt" % (arch, batch, t))) as f:
                torch_version = re.search(r"^torch (\S+),", f.read(), re.M).group(1)
        except (OSError, AttributeError):
            pass
        log("[%d/%d] %s batch %d, %d thread(s), %d+%d runs: %s" % (
            i + 1, len(configs), arch, batch, t, warmup, iters, ", ".join(
                "%s %s ms%s" % (k, fmt(v.get("ms"), ".2f"), " (rounds %s)" % " ".join(
                    "%.2f" % x for x in v["rounds"]) if len(v.get("rounds", [])) > 1 else "")
                for k, v in engines.items())))

    packed = {}
    if LOAD_TARGET[0] in timed and TARGET_THREADS in threads:
        log("\n== load of %s packed for this machine (cnnscope pack), %d thread(s)"
            % (LOAD_TARGET[0], TARGET_THREADS))
        packed[TARGET_THREADS] = packed_load(LOAD_TARGET[0], TARGET_THREADS)
        if packed[TARGET_THREADS]:
            log("load %.1f ms (median of %d; first %.1f ms)" % (
                packed[TARGET_THREADS]["ms"], LOAD_RUNS, packed[TARGET_THREADS]["first_ms"]))

    isas = {r["engines"].get("cnnscope", {}).get("isa") for r in rows} - {None}
    lines = table(rows, fma_peak)
    peak_line = "- roofline (build/bench/peak): %s; DRAM read %s" % (
        ", ".join("%s %d thread(s) %.0f GFLOP/s" % (isa, t, v) for (isa, t), v in sorted(fma_peak.items())
                  if isa in isas or not isas),
        ", ".join("%d thread(s) %.1f GB/s" % (t, v) for t, v in sorted(dram.items())))
    if round_trip is not None:
        peak_line += "; core-to-core round trip %.0f ns" % round_trip
    summary = (["## cnnscope vs ONNX Runtime vs PyTorch (`make bench`%s)" % (
        ", --quick: not a measurement" if args.quick else ""), ""] + lines + ["", "Targets (issue 3):"]
        + target_lines(rows, packed) + ["", "Machine and versions:"]
        + machine_lines(ort_version, torch_version, isas) + [peak_line])
    log("")
    log("\n".join(summary))
    summary_path = os.path.join(RESULTS_DIR, "summary-quick.md" if args.quick else "summary.md")
    with open(summary_path, "w") as f:
        f.write("\n".join(summary) + "\n")
    log("\n(written to %s; each run's output in %s/; took %.0f s)" % (
        summary_path, RESULTS_DIR, time.time() - started))
    errors = [r for r in rows if any("error" in e for e in r["engines"].values())]
    if failed or errors:
        log("bench: %s%s" % ("outputs disagree for %s; " % ", ".join(failed) if failed else "",
                             "%d configuration(s) had a failing engine" % len(errors) if errors else ""))
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        sys.stderr.write("bench: %s\n" % e)
        sys.exit(1)
