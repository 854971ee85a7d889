#!/usr/bin/python3
"""test_reference_torchvision.py - cnnscope against PyTorch, layer by layer, on torchvision models.

For alexnet, vgg16, vgg11_bn, resnet18 and resnet50 (random weights with non-trivial BatchNorm,
see scripts/make_reference.py):
  1. scripts/make_reference.py writes model.pth, input.npy [2,3,224,224] and the output of every
     named module (cached in $TEST_CACHE/reference/<arch>, see tests/vis_common.py);
  2. scripts/convert.py converts model.pth to $BUILD/reference-test/<arch>/model.cnn (the dumps go
     there too; both are removed when they pass);
  3. `cnnscope dump --layer all` (BN not folded: every conv is dumped) must match every reference
     output: rel = max|a - b| / max|b| <= 1e-4 per node, same shape, and the same top-1 class as
     PyTorch's logits for each image. Every conv2d/batchnorm/relu/maxpool/linear/pool/dropout node
     must have a reference counterpart (add and flatten are derived from their inputs'
     references), and every output of a leaf torchvision module must be a graph node (or the
     last call of a block's ReLU, which is the block's output);
  4. `cnnscope dump --layer <last node>` (the default, folded-BN path) must match the logits;
  5. for resnet18, `dump --layer all --reference` (the plain reference kernels) must match too.

Run from the repository root with /usr/bin/python3 (env BUILD, CNNSCOPE, TEST_CACHE as in
tests/run_all.sh).
Exit status 0 only if every comparison holds.
"""
import os
import shutil
import struct
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vis_common  # noqa: E402

ARCHS = ["alexnet", "vgg16", "vgg11_bn", "resnet18", "resnet50"]
REFERENCE_KERNELS_ARCH = "resnet18"
TOLERANCE = 1e-4
THREADS = "2"
SEED = "0"

BUILD = os.environ.get("BUILD", "build")
CNNSCOPE = os.environ.get("CNNSCOPE", os.path.join(BUILD, "cnnscope"))
PYTHON = sys.executable or "/usr/bin/python3"
# As in tests/run_all.sh: idle OpenMP threads sleep instead of spinning (this machine is shared,
# and spinning threads on a busy machine make a run many times slower).
ENV = dict(os.environ)
ENV.setdefault("OMP_WAIT_POLICY", "passive")

# Ops whose node has no torchvision module; their reference is computed from their inputs'.
DERIVED_OPS = {"add", "flatten"}
# Leaf torchvision modules whose every output must be a graph node.
LEAF_MODULES = {"Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
                "Linear", "Dropout", "Flatten"}


class Failure(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Reading a model file's graph (weights/FORMAT.md): only what the comparison needs.

class _Reader:
    def __init__(self, buf, pos, end):
        self.buf, self.pos, self.end = buf, pos, end

    def take(self, n):
        if self.pos + n > self.end:
            raise Failure("model file: graph section truncated at byte %d" % self.pos)
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def str(self):
        return self.take(self.u32()).decode("utf-8")

    def value(self):
        t = self.u8()
        if t in (1, 2):
            return struct.unpack("<q" if t == 1 else "<d", self.take(8))[0]
        if t == 3:
            return self.str()
        if t in (4, 5):
            n = self.u32()
            return list(struct.unpack("<%d%s" % (n, "q" if t == 4 else "d"), self.take(8 * n)))
        if t == 6:
            return [self.str() for _ in range(self.u32())]
        raise Failure("model file: unknown value type %d at byte %d" % (t, self.pos - 1))

    def dict(self):
        return {self.str(): self.value() for _ in range(self.u32())}


def read_graph(path):
    """[(op, name, [input names])] in file order."""
    with open(path, "rb") as f:
        head = f.read(128)
        if head[:8] != b"CNNSCOPE":
            raise Failure("%s: not a cnnscope model file" % path)
        graph_off, graph_size = struct.unpack("<QQ", head[40:56])
        f.seek(graph_off)
        buf = f.read(graph_size)
    r = _Reader(buf, 0, len(buf))
    nodes = []
    for _ in range(r.u32()):
        op, name = r.str(), r.str()
        inputs = [r.str() for _ in range(r.u32())]
        r.dict()
        nodes.append((op, name, inputs))
    return nodes


# ---------------------------------------------------------------------------------------------
# Steps

def run(cmd, what):
    t0 = time.time()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    except OSError as e:
        raise Failure("%s: cannot run %s: %s" % (what, cmd[0], e))
    dt = time.time() - t0
    if p.returncode != 0:
        raise Failure("%s failed (exit %d): %s\n%s" % (what, p.returncode, " ".join(cmd), p.stdout[-3000:]))
    return p.stdout, dt


def read_reference_index(ref_dir):
    """[(name, shape tuple, module class)] in call order, from outputs.txt."""
    index = []
    with open(os.path.join(ref_dir, "outputs.txt")) as f:
        for line in f:
            name, shape, kind = line.split()
            index.append((name, tuple(int(d) for d in shape.split("x")), kind))
    return index


def rel_error(ours, ref):
    if not np.isfinite(ours).all():
        return float("inf")
    diff = float(np.max(np.abs(ours.astype(np.float64) - ref)))
    scale = float(np.max(np.abs(ref)))
    return diff / scale if scale > 0 else diff


def fresh_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def compare_dump(arch, label, graph, ref_dir, dump_dir, names):
    """Compares the dumped nodes `names` with the reference; returns (rows, problems).

    rows: (name, op, shape, rel, how) per compared node, how = "module" (a PyTorch module's
    output) or "derived" (add, flatten: from their inputs' references); problems: one-line
    messages."""
    ops = {name: (op, inputs) for op, name, inputs in graph}
    ref_outputs = os.path.join(ref_dir, "outputs")
    problems = []

    def reference(name):
        """The PyTorch value of graph node `name`, or None if there is none. Not cached: all of
        VGG-16's activations in float64 would take 1.5 GB."""
        path = os.path.join(ref_outputs, name + ".npy")
        op, inputs = ops[name]
        value = None
        if os.path.exists(path):
            value = np.load(path).astype(np.float64)
        elif op == "add":
            a, b = reference(inputs[0]), reference(inputs[1])
            if a is not None and b is not None:
                value = a + b
        elif op == "flatten":
            a = reference(inputs[0])
            if a is not None:
                value = a.reshape(a.shape[0], -1)
        return value

    rows = []
    for name in names:
        op = ops[name][0]
        ref = reference(name)
        if ref is None:
            problems.append("%s: node %s (%s) has no PyTorch counterpart" % (label, name, op))
            continue
        how = "module" if os.path.exists(os.path.join(ref_outputs, name + ".npy")) else "derived"
        path = os.path.join(dump_dir, name + ".npy")
        if not os.path.exists(path):
            problems.append("%s: dump wrote no %s" % (label, path))
            continue
        ours = np.load(path)
        if ours.dtype != np.float32:
            problems.append("%s: %s: dtype %s, expected float32" % (label, name, ours.dtype))
        if ours.shape != ref.shape:
            problems.append("%s: %s (%s): shape %s, PyTorch %s" % (label, name, op, ours.shape, ref.shape))
            continue
        rel = rel_error(ours, ref)
        rows.append((name, op, ours.shape, rel, how))
        if not rel <= TOLERANCE:
            problems.append("%s: %s (%s) %s: rel err %.3g > %g" % (label, name, op, ours.shape, rel, TOLERANCE))
    return rows, problems


def print_table(label, rows):
    bad = [r for r in rows if not r[3] <= TOLERANCE]
    worst = sorted(rows, key=lambda r: -r[3])[:5]
    shown = bad + [r for r in worst if r not in bad]
    derived = sum(1 for r in rows if r[4] == "derived")
    print("  %s: %d nodes compared (%d against a PyTorch module output, %d add/flatten against "
          "their inputs' references), %d over %g; worst:"
          % (label, len(rows), len(rows) - derived, derived, len(bad), TOLERANCE))
    print("    %-26s %-17s %-20s %s" % ("layer", "op", "shape", "rel err"))
    for name, op, shape, rel, _ in shown:
        print("    %-26s %-17s %-20s %.3g%s" % (name, op, "x".join(map(str, shape)), rel,
                                                "  FAIL" if not rel <= TOLERANCE else ""))


def check_top1(label, ours, logits):
    """Same argmax per image; returns problems. Also prints the reference's top-1 margins."""
    ref_top1 = logits.argmax(axis=1)
    our_top1 = ours.reshape(ours.shape[0], -1).argmax(axis=1)
    s = np.sort(logits, axis=1)
    margins = s[:, -1] - s[:, -2]
    print("  %s: top-1 ours %s, PyTorch %s (PyTorch margin to 2nd: %s)"
          % (label, our_top1.tolist(), ref_top1.tolist(), ", ".join("%.4f" % m for m in margins)))
    if not np.array_equal(ref_top1, our_top1):
        return ["%s: top-1 %s differs from PyTorch's %s" % (label, our_top1.tolist(), ref_top1.tolist())]
    return []


def check_coverage(arch, graph, index):
    """Every leaf-module output of PyTorch is a graph node, or the last call of a block's ReLU
    (block `X` calls `X.relu` two or three times; its last call is the node `X`)."""
    graph_names = {name for _, name, _ in graph}
    names_in_index = {name for name, _, _ in index}
    problems = []
    matched = 0
    for name, _, kind in index:
        if kind not in LEAF_MODULES:
            continue
        if name in graph_names:
            matched += 1
            continue
        # `block.relu.k` for k >= 1, the last call, standing for the node `block`
        base, _, k = name.rpartition(".")
        if k.isdigit() and base.endswith(".relu") and "%s.%d" % (base, int(k) + 1) not in names_in_index:
            block = base[:-len(".relu")]
            if block in graph_names:
                matched += 1
                continue
        problems.append("%s: PyTorch module output %s (%s) is not a node of the converted graph"
                        % (arch, name, kind))
    print("  %s: %d PyTorch leaf-module outputs found in the graph" % (arch, matched))
    return problems


def test_arch(arch):
    t_start = time.time()
    problems = []
    ref_dir = os.path.join(vis_common.CACHE, "reference", arch)
    out, dt = run([PYTHON, "scripts/make_reference.py", "--arch", arch, "--seed", SEED, "-o", ref_dir],
                  "make_reference " + arch)
    print("  %s (%.1f s)" % (out.strip(), dt))

    # Our files go beside, not into, the reference folder: other tests share it, and
    # make_reference.py replaces it whole when it regenerates.
    work_dir = os.path.join(BUILD, "reference-test", arch)
    os.makedirs(work_dir, exist_ok=True)
    model = os.path.join(work_dir, "model.cnn")
    if os.path.exists(model):
        os.unlink(model)            # never test a stale conversion
    out, dt = run([PYTHON, "scripts/convert.py", os.path.join(ref_dir, "model.pth"), "--arch", arch,
                   "-o", model], "convert " + arch)
    print("  convert: %s (%.1f s)" % (model, dt))

    graph = read_graph(model)
    index = read_reference_index(ref_dir)
    logits = np.load(os.path.join(ref_dir, "outputs", "logits.npy")).astype(np.float64)
    input_path = os.path.join(ref_dir, "input.npy")
    if graph[0][0] != "input":
        problems.append("%s: node 0 is %s %s, expected input" % (arch, graph[0][0], graph[0][1]))
    by_op = {}
    for op, _, _ in graph:
        by_op[op] = by_op.get(op, 0) + 1
    print("  graph: %d nodes (%s)" % (len(graph), ", ".join("%d %s" % (n, op) for op, n in sorted(by_op.items()))))
    problems += check_coverage(arch, graph, index)

    all_names = [name for op, name, _ in graph if op != "input"]
    last = graph[-1][1]

    # 1. every node, BN not folded (every conv is dumped)
    runs = [("dump all", ["--layer", "all"], all_names)]
    # 2. the default path: folded BN, only the output dumped
    runs.append(("dump %s (folded)" % last, ["--layer", last], [last]))
    # 3. the plain reference kernels
    if arch == REFERENCE_KERNELS_ARCH:
        runs.append(("dump all --reference", ["--layer", "all", "--reference"], all_names))

    for i, (label, args, names) in enumerate(runs):
        dump_dir = fresh_dir(os.path.join(work_dir, "dump%d" % i))
        _, dt = run([CNNSCOPE, "dump", model, "--input", input_path, "-o", dump_dir, "--threads", THREADS]
                    + args, "%s %s" % (arch, label))
        label = "%s %s" % (arch, label)
        rows, p = compare_dump(arch, label, graph, ref_dir, dump_dir, names)
        print("  %s: %.1f s" % (label, dt))
        print_table(label, rows)
        problems += p
        last_path = os.path.join(dump_dir, last + ".npy")
        if os.path.exists(last_path):
            ours = np.load(last_path)
            if ours.shape != logits.shape:
                problems.append("%s: %s shape %s, PyTorch logits %s" % (label, last, ours.shape, logits.shape))
            else:
                rel = rel_error(ours, logits)
                print("  %s: %s vs PyTorch logits: rel err %.3g" % (label, last, rel))
                if not rel <= TOLERANCE:
                    problems.append("%s: %s vs logits: rel err %.3g > %g" % (label, last, rel, TOLERANCE))
                problems += check_top1(label, ours, logits)
        if not problems:
            shutil.rmtree(dump_dir)    # hundreds of MB for vgg16; kept on failure for a look
    if not problems:
        os.unlink(model)               # 550 MB for vgg16, and remade on every run
    print("  %s: %.1f s in all" % (arch, time.time() - t_start))
    return problems


def main():
    missing = [p for p in (CNNSCOPE, "scripts/convert.py", "scripts/make_reference.py") if not os.path.exists(p)]
    if missing:
        print("FAIL: missing %s (run from the repository root after make)" % ", ".join(missing))
        return 1
    problems = []
    for arch in ARCHS:
        print("== %s" % arch)
        try:
            problems += test_arch(arch)
        except Failure as e:
            problems.append(str(e))
            print("  FAIL: %s" % e)
    print()
    if problems:
        print("test_reference_torchvision: FAIL, %d problem(s):" % len(problems))
        for p in problems[:50]:
            print("  " + p)
        if len(problems) > 50:
            print("  ... and %d more" % (len(problems) - 50))
        return 1
    print("test_reference_torchvision: PASS (%s: every node within %g of PyTorch, same top-1)"
          % (", ".join(ARCHS), TOLERANCE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
