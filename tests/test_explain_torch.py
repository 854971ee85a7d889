#!/usr/bin/python3
"""test_explain_torch.py - `cnnscope explain` against PyTorch on the torchvision reference models.

For alexnet, vgg16, vgg11_bn, resnet18 and resnet50 (random weights with non-trivial BatchNorm,
scripts/make_reference.py; the first image of its input.npy, [1,3,224,224], given to cnnscope as
an .npy used as is), every method's raw result (--save-raw) must equal a PyTorch computation
of the same definition, max|a - b| / max|b| <= 1e-4:
  - saliency: |d logit_k / d x| (torch.autograd), max over channels;
  - deconvnet and guided: torch.autograd with a full backward hook on every nn.ReLU that
    returns max(grad_output, 0) (DeconvNet) or max(grad_input, 0) (guided); max pools route
    through PyTorch's own argmax;
  - gradcam: alpha = spatial mean of d logit_k / d A over the layer's output A, ReLU(sum alpha A)
    upsampled with F.interpolate(bilinear, align_corners=False); guided-gradcam = guided * that;
  - cam (ResNets): sum_c fc.weight[k, c] * A_c over the global pool's input, upsampled likewise;
    for AlexNet and VGG, cam must fail with a message naming the missing global average pool.

Same forward decisions: a gradient through ReLUs and max pools depends on discrete decisions
of the forward pass (is this input > 0, which pixel is a window's maximum). cnnscope's and
PyTorch's forwards agree to ~1e-6, but among the millions of ReLU inputs and pool windows of
VGG-16 or ResNet-50 a few lie within that rounding noise of a kink, and one flipped decision
moves a piece of the gradient (measured: 5 flips on VGG-16 give rel err 3.6e-2). So the
strict comparison is against torch.autograd over cnnscope's decisions: forward hooks make each
ReLU keep the inputs cnnscope kept and each max pool take cnnscope's switches (from
`cnnscope dump --layer all` of the same input, switches found by PyTorch's own max_pool2d).
The comparison against unmodified autograd is printed too, and asserted as well whenever no
decision differs (the flips are counted and printed).

First, the command itself on the tiny fixture model (batches, file names, usage errors).
The class k is PyTorch's top-1 (cnnscope's default --top 1 must pick it and print it). The
default Grad-CAM layer must be the last convolutional block (printed by cnnscope). On
resnet18 also: gradcam at an inner conv (--layer), DeconvNet of a neuron (--neuron, its
strongest position and an explicit one), and the figure PNG's size.

Run from the repository root with /usr/bin/python3 (env BUILD, CNNSCOPE, TEST_CACHE as in tests/run_all.sh);
arguments: a subset of the architectures. Exit status 0 only if every comparison holds.
Quick mode (CNNSCOPE_TEST_QUICK=1, the sanitized suite): alexnet and resnet18 only
(vgg16, vgg11_bn and resnet50 left out), every comparison as above.
"""
import os
import re
import shutil
import struct
import subprocess
import sys
import time

# OpenMP threads that sleep while waiting (for cnnscope and torch): on a shared machine,
# spinning threads make runs many times slower. Set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vis_common  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
CNNSCOPE = os.environ.get("CNNSCOPE", os.path.join(BUILD, "cnnscope"))
PYTHON = sys.executable or "/usr/bin/python3"
TOLERANCE = 1e-4
THREADS = "2"

# arch -> the default Grad-CAM layer ("the last convolutional block", vis/explain.h)
ARCHS = {
    "alexnet": "features.11",
    "vgg16": "features.29",
    "vgg11_bn": "features.27",
    "resnet18": "layer4.1",
    "resnet50": "layer4.2",
}
RESNETS = {"resnet18", "resnet50"}
# Quick mode (tests/run_all.sh on the sanitized build): the two smallest architectures, which
# still cover max pools without BN, BN + residual, the cam refusal and resnet18's extra checks.
QUICK = os.environ.get("CNNSCOPE_TEST_QUICK") == "1"
QUICK_ARCHS = ["alexnet", "resnet18"]
METHODS = ["saliency", "deconvnet", "guided", "gradcam", "guided-gradcam"]


Failure = vis_common.Failure


def run(cmd, what, expect_fail=False):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if (p.returncode != 0) != expect_fail:
        raise Failure("%s: exit %d: %s\n%s" % (what, p.returncode, " ".join(cmd), p.stdout[-3000:]))
    return p.stdout


def rel_error(ours, ref):
    if ours.shape != ref.shape:
        return float("inf")
    if not np.isfinite(ours).all():
        return float("inf")
    scale = float(np.max(np.abs(ref)))
    diff = float(np.max(np.abs(ours.astype(np.float64) - ref.astype(np.float64))))
    return diff / scale if scale > 0 else diff


def prepare(arch, work):
    """Reference weights, input and converted model (vis_common's test cache)."""
    model, pth = vis_common.reference_model(arch)
    ref_dir = os.path.dirname(pth)
    x = np.load(os.path.join(ref_dir, "input.npy"))[:1].astype(np.float32)   # [1,3,224,224]
    x_path = os.path.join(work, arch + "_x.npy")
    np.save(x_path, np.ascontiguousarray(x))
    net = getattr(torchvision.models, arch)(weights=None)
    net.load_state_dict(torch.load(pth))
    net.eval()
    for m in net.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False     # backward hooks refuse in-place modules
    return model, x_path, torch.from_numpy(x), net


# ---------------------------------------------------------------------------------------------
# The PyTorch side

def relu_hooks(net, rule):
    """Backward hooks on every ReLU for rule 'deconvnet' or 'guided' (or none for 'plain')."""
    if rule == "plain":
        return []

    def hook(module, grad_input, grad_output):
        if rule == "deconvnet":
            return (grad_output[0].clamp(min=0),)
        return (grad_input[0].clamp(min=0),)
    return [m.register_full_backward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.ReLU)]


def capture(net, name):
    """A forward hook on module `name` keeping its output (and, in a backward, its gradient)."""
    box = {}
    module = dict(net.named_modules())[name]

    def hook(m, inputs, output):
        box["out"] = output
        if output.requires_grad:
            output.retain_grad()
    return module.register_forward_hook(hook), box


class Decisions:
    """cnnscope's forward decisions imposed on PyTorch's forward: every ReLU keeps the inputs
    whose cnnscope output is > 0, every max pool picks cnnscope's switches (found with
    PyTorch's own first-maximum rule in cnnscope's dumped pool input). Both forwards agree to
    ~1e-6, but among millions of ReLU inputs and pool windows a few lie within that rounding
    noise of a kink, and each flipped decision moves a piece of the gradient: a backward pass
    can only be compared exactly over the same forward decisions. `flips` counts the decisions
    PyTorch's own forward took differently in the last run (0: both comparisons are the same).

    `dump_dir` holds `cnnscope dump --layer all` of the same input: node names are module paths,
    a module's k-th call is `name.k`, and a block's last ReLU call is the block's node."""

    def __init__(self, net, dump_dir):
        self.dump_dir = dump_dir
        self.flips = 0
        self.calls = {}
        self.last_relu = None
        self.handles = [net.register_forward_pre_hook(self.reset)]
        for name, m in net.named_modules():
            if isinstance(m, torch.nn.ReLU):
                self.handles.append(m.register_forward_hook(self.relu_hook(name)))
            elif isinstance(m, torch.nn.MaxPool2d):
                self.handles.append(m.register_forward_hook(self.pool_hook(name)))

    def remove(self):
        for h in self.handles:
            h.remove()

    def reset(self, module, inputs):
        self.calls = {}
        self.flips = 0

    def ours(self, node):
        return torch.from_numpy(np.load(os.path.join(self.dump_dir, node + ".npy")))

    def node_of_call(self, name):
        k = self.calls.get(name, 0)
        self.calls[name] = k + 1
        node = name if k == 0 else "%s.%d" % (name, k)
        if not os.path.exists(os.path.join(self.dump_dir, node + ".npy")) and name.endswith(".relu"):
            node = name[:-len(".relu")]          # the block's last ReLU call is the block
        return node

    def relu_hook(self, name):
        def hook(module, inputs, output):
            node = self.node_of_call(name)
            mask = self.ours(node) > 0
            if mask.shape != output.shape:
                raise Failure("decisions: %s is %s, PyTorch %s" % (node, tuple(mask.shape), tuple(output.shape)))
            self.flips += int(((output > 0) != mask).sum())
            self.last_relu = node
            return inputs[0] * mask
        return hook

    def pool_hook(self, name):
        def hook(module, inputs, output):
            x = inputs[0]
            ours = self.ours(self.last_relu)         # every max pool here reads a ReLU's output
            if ours.shape != x.shape or not torch.allclose(ours, x.detach(), rtol=1e-3, atol=1e-3):
                raise Failure("decisions: max pool %s does not read %s" % (name, self.last_relu))
            args = (module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode)
            _, switches = F.max_pool2d(ours, *args, return_indices=True)
            _, theirs = F.max_pool2d(x.detach(), *args, return_indices=True)
            self.flips += int((switches != theirs).sum())
            return x.flatten(2).gather(2, switches.flatten(2)).view_as(output)
        return hook


def backward_run(net, x, k, rule, layer, decisions_dir=None):
    """One forward and backward of logit k with the ReLU rule (and cnnscope's decisions if
    decisions_dir is given); returns (d logit_k / d x, the output A of module `layer`,
    d logit_k / d A, the number of decisions PyTorch took differently)."""
    decisions = Decisions(net, decisions_dir) if decisions_dir else None
    handles = relu_hooks(net, rule)
    h, box = capture(net, layer)
    try:
        xx = x.clone().requires_grad_(True)
        net(xx)[0, k].backward()
        A = box["out"]
        return xx.grad.detach().numpy(), A.detach(), A.grad.detach(), decisions.flips if decisions else 0
    finally:
        h.remove()
        for hd in handles:
            hd.remove()
        if decisions:
            decisions.remove()


def upsample(maps, size):
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def gradcam_map(A, dA, size):
    alpha = dA.mean(dim=(2, 3), keepdim=True)
    return upsample(torch.relu((alpha * A).sum(dim=1)), size).numpy()


def torch_neuron_deconvnet(net, x, layer, channel, yx, decisions_dir):
    """DeconvNet projection of one activation of module `layer` (its strongest in the channel
    when yx is None): one-hot at that activation, DeconvNet rule on every ReLU."""
    decisions = Decisions(net, decisions_dir)
    h, box = capture(net, layer)
    handles = relu_hooks(net, "deconvnet")
    try:
        xx = x.clone().requires_grad_(True)
        net(xx)
        A = box["out"]
        plane = A[0, channel]
        if yx is None:
            flat = int(torch.argmax(plane.reshape(-1)))   # first maximum, row-major
            yx = (flat // plane.shape[1], flat % plane.shape[1])
        A[0, channel, yx[0], yx[1]].backward()
        return xx.grad.detach().numpy(), yx
    finally:
        h.remove()
        for hd in handles:
            hd.remove()
        decisions.remove()


def reference_results(net, x, k, layer, resnet, decisions_dir=None):
    """Every method's result by PyTorch from three backward passes (plain, deconvnet, guided),
    and the number of forward decisions PyTorch took differently from cnnscope's."""
    size = x.shape[2:]
    plain_dx, A, dA, flips = backward_run(net, x, k, "plain", layer, decisions_dir)
    deconv_dx, _, _, _ = backward_run(net, x, k, "deconvnet", layer, decisions_dir)
    guided_dx, _, _, _ = backward_run(net, x, k, "guided", layer, decisions_dir)
    grad_cam = gradcam_map(A, dA, size)
    ref = {
        "saliency": np.abs(plain_dx).max(axis=1),
        "deconvnet": deconv_dx,
        "guided": guided_dx,
        "gradcam": grad_cam,
        "guided-gradcam": guided_dx * grad_cam[:, None],
    }
    if resnet:   # the default layer of a ResNet is the global pool's input
        w = net.fc.weight.detach()[k]
        ref["cam"] = upsample((w[None, :, None, None] * A).sum(dim=1), size).numpy()
    return ref, flips


# ---------------------------------------------------------------------------------------------
# The cnnscope side

def explain(model, x_path, work, method, extra, tag):
    raw = os.path.join(work, "%s_%s.npy" % (tag, method))
    if os.path.exists(raw):
        os.unlink(raw)
    out = run([CNNSCOPE, "explain", model, x_path, "--method", method, "--save-raw", raw,
               "--threads", THREADS] + extra, "explain %s %s" % (tag, method))
    return np.load(raw), out


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise Failure("%s is not a PNG" % path)
    return struct.unpack(">II", head[16:24])


def test_arch(arch, work):
    problems = []
    t0 = time.time()
    model, x_path, x, net = prepare(arch, work)
    with torch.no_grad():
        k = int(net(x).argmax(dim=1)[0])
    layer = ARCHS[arch]
    methods = METHODS + (["cam"] if arch in RESNETS else [])
    print("== %s: class %d, default layer %s (setup %.1f s)" % (arch, k, layer, time.time() - t0))
    t1 = time.time()
    dump_dir = os.path.join(work, arch + "_dump")
    shutil.rmtree(dump_dir, ignore_errors=True)
    run([CNNSCOPE, "dump", model, "--input", x_path, "--layer", "all", "-o", dump_dir, "--threads", THREADS],
        "dump %s" % arch)
    pure, _ = reference_results(net, x, k, layer, arch in RESNETS)
    aligned, flips = reference_results(net, x, k, layer, arch in RESNETS, dump_dir)
    print("  PyTorch: %.1f s; forward decisions (ReLU signs, pool switches) PyTorch takes differently "
          "from cnnscope: %d" % (time.time() - t1, flips))

    for method in methods:
        t1 = time.time()
        ours, out = explain(model, x_path, work, method, [], arch)
        t_ours = time.time() - t1
        m = re.search(r"of class (\d+) ", out)
        if not m or int(m.group(1)) != k:
            problems.append("%s %s: cnnscope explained %s, PyTorch's top-1 is class %d: %s"
                            % (arch, method, m.group(1) if m else "?", k, out.strip()))
        if method in ("gradcam", "guided-gradcam") and " at %s of " % layer not in out:
            problems.append("%s %s: default layer should be %s: %s" % (arch, method, layer, out.strip()))
        if method == "cam" and " at %s of " % layer not in out:
            problems.append("%s cam: the maps should be %s's: %s" % (arch, layer, out.strip()))
        rel = rel_error(ours, aligned[method])
        rel_pure = rel_error(ours, pure[method])
        print("  %-15s shape %-16s rel err %.3g over the same decisions, %.3g against plain "
              "autograd   (cnnscope %.1f s)" % (method, "x".join(map(str, ours.shape)), rel, rel_pure, t_ours))
        if not rel <= TOLERANCE:
            problems.append("%s %s: shape %s vs %s, rel err %.3g > %g"
                            % (arch, method, ours.shape, aligned[method].shape, rel, TOLERANCE))
        if flips == 0 and not rel_pure <= TOLERANCE:
            problems.append("%s %s: rel err %.3g > %g against plain autograd (same decisions)"
                            % (arch, method, rel_pure, TOLERANCE))
        if float(np.max(np.abs(aligned[method]))) == 0:
            problems.append("%s %s: the PyTorch result is all zeros: nothing was tested" % (arch, method))

    if arch not in RESNETS:   # CAM needs global average pooling + linear
        out = run([CNNSCOPE, "explain", model, x_path, "--method", "cam", "--save-raw",
                   os.path.join(work, "never.npy")], "explain %s cam" % arch, expect_fail=True)
        print("  cam refused: %s" % out.strip().splitlines()[-1])
        if "global average pool" not in out or "gradcam" not in out:
            problems.append("%s cam: the error should name the missing global average pool and "
                            "suggest gradcam: %s" % (arch, out.strip()))

    if arch == "resnet18":
        # Grad-CAM at an inner conv node (BN not folded: the conv's own output)
        inner = "layer3.1.conv2"
        ours, out = explain(model, x_path, work, "gradcam", ["--layer", inner, "--class", str(k)],
                            arch + "_inner")
        _, A, dA, _ = backward_run(net, x, k, "plain", inner, dump_dir)
        rel = rel_error(ours, gradcam_map(A, dA, x.shape[2:]))
        print("  gradcam --layer %s: rel err %.3g" % (inner, rel))
        if not rel <= TOLERANCE:
            problems.append("resnet18 gradcam --layer %s: rel err %.3g" % (inner, rel))
        # DeconvNet of one neuron: its strongest position, then an explicit one
        for spec, yx in (("layer2.0.conv1:5", None), ("layer2.0.conv1:7:3:11", (3, 11))):
            ours, out = explain(model, x_path, work, "deconvnet", ["--neuron", spec],
                                arch + "_neuron")
            ref, where = torch_neuron_deconvnet(net, x, "layer2.0.conv1", int(spec.split(":")[1]), yx,
                                               dump_dir)
            rel = rel_error(ours, ref)
            m = re.search(r"channel (\d+) at \((\d+), (\d+)\)", out)
            print("  deconvnet --neuron %s: at %s (PyTorch %s), rel err %.3g"
                  % (spec, m.groups() if m else "?", where, rel))
            if not m or (int(m.group(2)), int(m.group(3))) != tuple(where):
                problems.append("resnet18 --neuron %s: position %s, PyTorch %s" % (spec, out.strip(), where))
            if not rel <= TOLERANCE:
                problems.append("resnet18 deconvnet --neuron %s: rel err %.3g" % (spec, rel))
        # the figures: [input | heatmap | overlay] and [input | gradient], 8-pixel gaps
        for method, size in (("gradcam", (3 * 224 + 4 * 8, 224 + 16)), ("guided", (2 * 224 + 3 * 8, 224 + 16))):
            png = os.path.join(work, "resnet18_%s.png" % method)
            if os.path.exists(png):
                os.unlink(png)
            run([CNNSCOPE, "explain", model, x_path, "--method", method, "-o", png, "--threads", THREADS],
                "explain resnet18 %s -o" % method)
            got = png_size(png)
            print("  %s figure: %s %dx%d" % (method, png, got[0], got[1]))
            if got != size:
                problems.append("%s figure is %dx%d, expected %dx%d" % (method, got[0], got[1], size[0], size[1]))
    if not problems:
        shutil.rmtree(dump_dir)        # kept on failure for a look
    print("  %s: %.1f s" % (arch, time.time() - t0))
    return problems


def test_cli(work):
    """The command on the tiny fixture model (every op of the engine, a softmax at the end):
    three images from one .npy in one batch and in batches of two (same results), their
    figures' names, --class by name, and the usage errors."""
    problems = []
    fixtures = os.environ.get("FIXTURES", os.path.join(BUILD, "fixtures"))
    model = os.path.join(fixtures, "tiny_resnet.cnn")
    if not os.path.exists(model):
        run([PYTHON, "tests/make_tiny_model.py", fixtures], "make_tiny_model")
    x = np.random.default_rng(5).standard_normal((3, 3, 16, 16)).astype(np.float32)
    x_path = os.path.join(work, "tiny.npy")
    np.save(x_path, x)
    figures = os.path.join(work, "tiny_figures")
    for method in ("saliency", "deconvnet", "guided", "cam", "gradcam", "guided-gradcam"):
        shutil.rmtree(figures, ignore_errors=True)
        whole, out = explain(model, x_path, work, method, ["-o", figures], "tiny")
        pairs, _ = explain(model, x_path, work, method, ["--batch", "2"], "tiny_batch2")
        shape = (3, 16, 16) if method in ("saliency", "cam", "gradcam") else (3, 3, 16, 16)
        names = sorted(os.listdir(figures))
        rel = rel_error(pairs, whole)
        print("  tiny %-15s raw %s, batches of 2 vs 3: rel %.2g, figures %s"
              % (method, "x".join(map(str, whole.shape)), rel, " ".join(names)))
        if whole.shape != shape:
            problems.append("tiny %s: raw shape %s, expected %s" % (method, whole.shape, shape))
        if not rel <= 1e-6:
            problems.append("tiny %s: batches of 2 differ from one batch of 3: rel %.3g" % (method, rel))
        if names != ["tiny_0.png", "tiny_1.png", "tiny_2.png"]:
            problems.append("tiny %s: figures %s, expected tiny_0.png, tiny_1.png, tiny_2.png" % (method, names))
        if not np.abs(whole).max() > 0:
            problems.append("tiny %s: all zeros" % method)
    by_name, _ = explain(model, x_path, work, "gradcam", ["--class", "two"], "tiny_name")
    by_index, _ = explain(model, x_path, work, "gradcam", ["--class", "2"], "tiny_index")
    if not np.array_equal(by_name, by_index):
        problems.append("tiny: --class two and --class 2 differ")
    # usage errors: exit status 2 and a message that says what is wrong
    cases = [
        (["--method", "gradcam", "-o", os.path.join(work, "one.png")], "names one picture"),
        (["--method", "saliency", "--layer", "avg", "--save-raw", "r.npy"], "--layer applies"),
        (["--method", "heat", "--save-raw", "r.npy"], "unknown method"),
        (["--method", "gradcam", "--class", "7", "--save-raw", "r.npy"], "not a class"),
        (["--method", "guided", "--neuron", "conv1", "--save-raw", "r.npy"], "LAYER:CHANNEL"),
        (["--method", "guided", "--neuron", "conv1:99", "--save-raw", "r.npy"], "channels 0..7"),
        (["--method", "gradcam", "--layer", "fc", "--save-raw", "r.npy"], "no spatial maps"),
        (["--method", "cam", "--neuron", "conv1:1", "--save-raw", "r.npy"], "cam explains class"),
        (["--method", "guided"], "-o or --save-raw"),
    ]
    for args, message in cases:
        out = run([CNNSCOPE, "explain", model, x_path] + args, "explain tiny " + " ".join(args), expect_fail=True)
        if message not in out:
            problems.append("tiny explain %s: the error should say '%s': %s" % (" ".join(args), message, out.strip()))
    print("  tiny: %d usage errors refused with their messages" % len(cases))
    return problems


def main():
    torch.set_num_threads(int(THREADS))
    missing = [p for p in (CNNSCOPE, "scripts/convert.py", "scripts/make_reference.py") if not os.path.exists(p)]
    if missing:
        print("FAIL: missing %s (run from the repository root after make)" % ", ".join(missing))
        return 1
    work = os.path.join(BUILD, "explain_torch")
    os.makedirs(work, exist_ok=True)
    problems = []
    archs = sys.argv[1:] or (QUICK_ARCHS if QUICK else list(ARCHS))   # arguments: a subset, for development
    if QUICK:
        print("quick mode (CNNSCOPE_TEST_QUICK=1): architectures %s only" % ", ".join(archs))
    print("== the command, on the tiny fixture model")
    try:
        problems += test_cli(work)
    except Failure as e:
        problems.append(str(e))
        print("  FAIL: %s" % e)
    for arch in archs:
        try:
            problems += test_arch(arch, work)
        except Failure as e:
            problems.append(str(e))
            print("  FAIL: %s" % e)
    print()
    if problems:
        print("test_explain_torch: FAIL, %d problem(s):" % len(problems))
        for p in problems:
            print("  " + p)
        return 1
    print("test_explain_torch: PASS (%s: every method within %g of PyTorch)" % (", ".join(archs), TOLERANCE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
