#!/usr/bin/python3
"""test_convert.py - scripts/convert.py against PyTorch itself.

Run from the repository root with /usr/bin/python3 (needs torch + torchvision to CREATE the
checkpoints; convert.py runs in a subprocess where importing torch or numpy fails):

    SHARED=../shared /usr/bin/python3 tests/test_convert.py

For alexnet, vgg11_bn, resnet18, resnet50 (torchvision's own code; narrowed 8x except
resnet18) and a CIFAR ResNet-20 built here from the paper, each saved as a zip, a legacy and a
safetensors checkpoint, it checks: the detected arch and the metadata, every node's name, op,
inputs and attributes against the torchvision module it names (weights/FORMAT.md and the
node naming contract), every tensor's bytes against torch's, the CRC, and that running the
graph with torch.nn.functional reproduces each hooked module's output. Then: strided, offset,
expanded and shared-storage tensors; float16, bfloat16 and float64 checkpoints; wrappers and
'module.' prefixes; flags; the real ../shared CIFAR-10 checkpoints; and the error cases
(malicious pickles, missing/misshapen/extra keys, unknown architecture, truncated files,
non-checkpoints), each of which must exit 2 with one line on stderr and write nothing.
"""
import contextlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models._meta import _IMAGENET_CATEGORIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONVERT = os.path.join(ROOT, "scripts", "convert.py")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import cnnfile  # noqa: E402

SHARED = os.environ.get("SHARED", "../shared")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

torch.manual_seed(0)
torch.set_num_threads(1)
TMP = tempfile.mkdtemp(prefix="test_convert.")

# A directory whose torch/ and numpy/ refuse to import: convert.py runs with it on PYTHONPATH.
BLOCKER = os.path.join(TMP, "blocker")
for module in ("torch", "numpy"):
    os.makedirs(os.path.join(BLOCKER, module))
    with open(os.path.join(BLOCKER, module, "__init__.py"), "w") as f:
        f.write("raise ImportError('convert.py must not import %s')\n" % module)


def path(name):
    return os.path.join(TMP, name)


def run_convert(args):
    env = dict(os.environ, PYTHONPATH=BLOCKER)
    return subprocess.run([sys.executable, CONVERT] + list(args), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def convert_ok(src, out, *flags):
    r = run_convert([src, "-o", out] + list(flags))
    assert r.returncode == 0, "convert %s failed (%d): %s" % (src, r.returncode, r.stderr)
    assert r.stderr == "", "convert %s printed on stderr: %r" % (src, r.stderr)
    return read_checked(out)


def convert_fails(src, expected, *flags):
    """Must exit 2 with one stderr line 'convert.py: SRC: ...' containing `expected`."""
    out = path("must_not_exist.cnn")
    r = run_convert([src, "-o", out] + list(flags))
    lines = r.stderr.splitlines()
    assert r.returncode == 2, "%s: exit %d, expected 2 (stderr %r)" % (src, r.returncode, r.stderr)
    assert len(lines) == 1, "%s: expected one stderr line, got %r" % (src, r.stderr)
    assert lines[0].startswith("convert.py: %s: " % src), "%s: bad prefix: %r" % (src, lines[0])
    assert expected in lines[0], "%s: expected %r in %r" % (src, expected, lines[0])
    assert not os.path.exists(out), "%s: output written despite the error" % src
    assert not [n for n in os.listdir(TMP) if ".tmp." in n], "temporary file left behind"
    return lines[0]


def read_checked(out):
    with open(out, "rb") as f:
        blob = f.read()
    # The CRC and size, checked here independently of cnnfile.read_model.
    assert blob[:8] == b"CNNSCOPE" and struct.unpack("<I", blob[8:12])[0] == 1
    assert struct.unpack("<I", blob[12:16])[0] == zlib.crc32(blob[16:]) & 0xFFFFFFFF, "bad CRC"
    assert struct.unpack("<Q", blob[16:24])[0] == len(blob), "bad size field"
    return cnnfile.read_model(out)


# ------------------------------------------------------------------------------------------
# Checkpoint writers

def tensor_bytes(t):
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def f32_bytes(t):
    return t.detach().float().contiguous().reshape(-1).numpy().tobytes()


SAFETENSORS_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                     torch.float64: "F64", torch.int64: "I64"}


def save_safetensors(state, dst):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for key, t in state.items():
        raw = tensor_bytes(t)
        header[key] = {"dtype": SAFETENSORS_DTYPE[t.dtype], "shape": list(t.shape),
                       "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def save_all_formats(obj, stem):
    """obj (saved as is by torch.save) and its state dict (for safetensors) -> three paths."""
    zip_path, legacy_path = path(stem + ".pth"), path(stem + ".th")
    st_path = path(stem + ".safetensors")
    torch.save(obj, zip_path)
    torch.save(obj, legacy_path, _use_new_zipfile_serialization=False)
    state = obj
    while "state_dict" in state or "model" in state:
        state = state.get("state_dict", state.get("model"))
    save_safetensors(state, st_path)
    with open(zip_path, "rb") as f:
        assert f.read(2) == b"PK"
    with open(legacy_path, "rb") as f:
        assert f.read(1) == b"\x80"
    return [zip_path, legacy_path, st_path]


# ------------------------------------------------------------------------------------------
# Models

@contextlib.contextmanager
def narrow_layers(factor=8):
    """torchvision builders with every width >= 64 divided by `factor` (same module tree,
    same kernel sizes, strides and paddings; a fraction of the weights)."""
    real = nn.Conv2d, nn.BatchNorm2d, nn.Linear

    def narrow(c):
        return c // factor if c >= 64 else c

    class Conv(real[0]):
        def __init__(self, cin, cout, *a, **k):
            super().__init__(narrow(cin), narrow(cout), *a, **k)

    class BN(real[1]):
        def __init__(self, c, *a, **k):
            super().__init__(narrow(c), *a, **k)

    class Lin(real[2]):
        def __init__(self, fin, fout, *a, **k):
            super().__init__(narrow(fin), narrow(fout), *a, **k)

    nn.Conv2d, nn.BatchNorm2d, nn.Linear = Conv, BN, Lin
    try:
        yield
    finally:
        nn.Conv2d, nn.BatchNorm2d, nn.Linear = real


def randomize_bn(model):
    """Non-trivial batchnorm statistics, so a mix-up of the four tensors changes the output."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


class LambdaLayer(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class CifarBlock(nn.Module):
    """He et al. 2016 sec. 4.2 basic block, option A shortcut (akamaster's key names)."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            pad = planes // 4
            self.shortcut = LambdaLayer(
                lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad), "constant", 0))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, n, in_channels=3, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin, layers = 16, []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for b in range(n):
                blocks.append(CifarBlock(cin, planes, stride if b == 0 else 1))
                cin = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


# ------------------------------------------------------------------------------------------
# The expected graph, written from naming.md; attributes read off the torchvision modules

def op_of(module):
    for cls, op in ((nn.Conv2d, "conv2d"), (nn.BatchNorm2d, "batchnorm"), (nn.ReLU, "relu"),
                    (nn.MaxPool2d, "maxpool"), (nn.Dropout, "dropout"), (nn.Linear, "linear")):
        if isinstance(module, cls):
            return op
    raise AssertionError("no op for %s" % type(module).__name__)


def expected_nodes(family, model):
    """[(name, op, inputs)] per the naming contract: torchvision module paths, 'name.1' for a
    module's second call, plus input, flatten, layerS.B.add and layerS.B (the block's relu)."""
    nodes = [("input", "input", [])]

    def add(name, op, inputs=None):
        nodes.append((name, op, [nodes[-1][0]] if inputs is None else inputs))

    if family == "sequential":   # alexnet, vgg
        for i, m in enumerate(model.features):
            add("features.%d" % i, op_of(m))
        add("avgpool", "adaptive_avgpool")
        add("flatten", "flatten")
        for i, m in enumerate(model.classifier):
            add("classifier.%d" % i, op_of(m))
        return nodes
    add("conv1", "conv2d")
    add("bn1", "batchnorm")
    add("relu", "relu")
    if family == "resnet":
        add("maxpool", "maxpool")
    layers = ["layer1", "layer2", "layer3"] + (["layer4"] if family == "resnet" else [])
    for layer in layers:
        for b, block in enumerate(getattr(model, layer)):
            p = "%s.%d" % (layer, b)
            block_in = nodes[-1][0]
            add(p + ".conv1", "conv2d")
            add(p + ".bn1", "batchnorm")
            add(p + ".relu", "relu")
            add(p + ".conv2", "conv2d")
            add(p + ".bn2", "batchnorm")
            last = p + ".bn2"
            if hasattr(block, "conv3"):
                add(p + ".relu.1", "relu")
                add(p + ".conv3", "conv2d")
                add(p + ".bn3", "batchnorm")
                last = p + ".bn3"
            shortcut = block_in
            if getattr(block, "downsample", None) is not None:
                add(p + ".downsample.0", "conv2d", [block_in])
                add(p + ".downsample.1", "batchnorm")
                shortcut = p + ".downsample.1"
            if isinstance(getattr(block, "shortcut", None), LambdaLayer):
                add(p + ".shortcut", "shortcut_a", [block_in])
                shortcut = p + ".shortcut"
            add(p + ".add", "add", [last, shortcut])
            add(p, "relu")
    add("avgpool", "adaptive_avgpool")
    add("flatten", "flatten")
    add("fc" if family == "resnet" else "linear", "linear")
    return nodes


def pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def expected_attrs(name, op, model):
    modules = dict(model.named_modules())
    m = modules.get(name) or modules.get(name.rsplit(".", 1)[0])
    if op == "conv2d":
        a = {"weight": name + ".weight", "stride": pair(m.stride), "padding": pair(m.padding),
             "dilation": pair(m.dilation), "groups": m.groups}
        if m.bias is not None:
            a["bias"] = name + ".bias"
        return a
    if op == "batchnorm":
        a = {f: "%s.%s" % (name, f) for f in ("weight", "bias", "running_mean", "running_var")}
        a["eps"] = m.eps
        return a
    if op == "linear":
        return {"weight": name + ".weight", "bias": name + ".bias"}
    if op == "maxpool":
        return {"kernel": pair(m.kernel_size), "stride": pair(m.stride),
                "padding": pair(m.padding), "dilation": pair(m.dilation),
                "ceil_mode": int(m.ceil_mode)}
    if op == "adaptive_avgpool":
        if name in modules:
            return {"output": pair(m.output_size)}
        return {"output": [1, 1]}   # the CIFAR model pools with F.avg_pool2d over the whole map
    if op == "dropout":
        return {"p": m.p}
    if op == "shortcut_a":
        planes = modules[name.rsplit(".", 1)[0]].conv1.out_channels
        return {"stride": 2, "pad_channels": [planes // 4, planes // 4]}
    return {}


def check_graph(model_file, family, model, arch):
    got = model_file["nodes"]
    want = expected_nodes(family, model)
    names = [n[1] for n in got]
    assert names == [w[0] for w in want], "%s: node names differ:\n got  %s\n want %s" % (
        arch, names, [w[0] for w in want])
    for (op, name, inputs, attrs), (_, want_op, want_inputs) in zip(got, want):
        assert op == want_op, "%s: node %s: op %s, expected %s" % (arch, name, op, want_op)
        assert inputs == want_inputs, "%s: node %s: inputs %s, expected %s" % (
            arch, name, inputs, want_inputs)
        want_attrs = expected_attrs(name, op, model)
        assert attrs == want_attrs, "%s: node %s: attrs %s, expected %s" % (
            arch, name, attrs, want_attrs)
        for k in ("eps", "p"):
            if k in attrs:
                assert isinstance(attrs[k], float), "%s: %s.%s is not a float" % (arch, name, k)


def check_tensors(model_file, state, arch):
    """Every float tensor of the state dict, and nothing else, with torch's float32 bytes."""
    want = {k: v for k, v in state.items() if v.is_floating_point()}
    got = model_file["tensors"]
    assert set(got) == set(want), "%s: tensors differ: extra %s, missing %s" % (
        arch, sorted(set(got) - set(want))[:5], sorted(set(want) - set(got))[:5])
    for key, t in want.items():
        dims, raw = got[key]
        assert dims == list(t.shape), "%s: %s dims %s, expected %s" % (
            arch, key, dims, list(t.shape))
        if raw != f32_bytes(t):
            a = torch.frombuffer(bytearray(raw), dtype=torch.float32)
            b = t.detach().float().reshape(-1)
            i = int((a != b).nonzero()[0])
            raise AssertionError("%s: %s differs at flat index %d: %r vs torch %r"
                                 % (arch, key, i, float(a[i]), float(b[i])))


def run_graph(model_file, x):
    """Evaluates the converted graph with torch.nn.functional: {node name: output}."""
    T = {k: torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(dims)
         for k, (dims, raw) in model_file["tensors"].items()}
    out = {}
    for op, name, inputs, a in model_file["nodes"]:
        i = [out[n] for n in inputs]
        if op == "input":
            y = x
        elif op == "conv2d":
            y = F.conv2d(i[0], T[a["weight"]], T.get(a.get("bias")), a["stride"], a["padding"],
                         a["dilation"], a["groups"])
        elif op == "batchnorm":
            y = F.batch_norm(i[0], T[a["running_mean"]], T[a["running_var"]], T[a["weight"]],
                             T[a["bias"]], False, 0.0, a["eps"])
        elif op == "relu":
            y = F.relu(i[0])
        elif op == "maxpool":
            y = F.max_pool2d(i[0], a["kernel"], a["stride"], a["padding"], a["dilation"],
                             bool(a["ceil_mode"]))
        elif op == "adaptive_avgpool":
            y = F.adaptive_avg_pool2d(i[0], a["output"])
        elif op == "flatten":
            y = torch.flatten(i[0], 1)
        elif op == "dropout":
            y = i[0]
        elif op == "linear":
            y = F.linear(i[0], T[a["weight"]], T.get(a.get("bias")))
        elif op == "add":
            y = i[0] + i[1]
        elif op == "shortcut_a":
            s = a["stride"]
            y = F.pad(i[0][:, :, ::s, ::s], (0, 0, 0, 0) + tuple(a["pad_channels"]))
        else:
            raise AssertionError("unknown op %s" % op)
        out[name] = y
    return out


def hooked_outputs(model, x):
    """Each module's output, named as naming.md says: name, then name.1, name.2 on reuse."""
    seen, calls, handles = {}, {}, []

    def hook(name):
        def fn(_module, _inputs, output):
            n = calls.get(name, 0)
            calls[name] = n + 1
            seen[name if n == 0 else "%s.%d" % (name, n)] = output.detach().clone()
        return fn

    for name, m in model.named_modules():
        if name:
            handles.append(m.register_forward_hook(hook(name)))
    with torch.no_grad():
        final = model(x)
    for h in handles:
        h.remove()
    return seen, final


def check_forward(model_file, model, arch, x, unhooked_ok):
    """The graph, run with F.*, matches every hooked module output of the same name."""
    with torch.no_grad():
        ours = run_graph(model_file, x)
    theirs, final = hooked_outputs(model, x)
    compared = 0
    for name, y in ours.items():
        if name not in theirs:
            assert name == "input" or name == "flatten" or name.endswith(".add") or \
                unhooked_ok(name), "%s: node %s has no module output to compare with" % (arch, name)
            continue
        ref = theirs[name]
        assert y.shape == ref.shape, "%s: node %s shape %s, torch %s" % (
            arch, name, list(y.shape), list(ref.shape))
        err = float((y - ref).abs().max())
        tol = 1e-4 * max(1.0, float(ref.abs().max()))
        assert err <= tol, "%s: node %s differs from torch by %g (tolerance %g)" % (
            arch, name, err, tol)
        compared += 1
    last = model_file["nodes"][-1][1]
    err = float((ours[last] - final).abs().max())
    tol = 1e-4 * max(1.0, float(final.abs().max()))
    assert err <= tol, "%s: output differs by %g" % (arch, err)
    return compared


# ------------------------------------------------------------------------------------------
# Tests

def meta_expect(model_file, **want):
    meta = model_file["meta"]
    for k, v in want.items():
        assert meta.get(k) == v, "meta %s = %r, expected %r" % (k, meta.get(k), v)


def test_torchvision_models():
    cases = [  # arch, builder, narrowed, classes, input size
        ("alexnet", lambda: torchvision.models.alexnet(num_classes=7), True, 7, 224),
        ("vgg11_bn", lambda: torchvision.models.vgg11_bn(num_classes=5), True, 5, 64),
        ("resnet18", lambda: torchvision.models.resnet18(), False, 1000, 64),
        ("resnet50", lambda: torchvision.models.resnet50(num_classes=3), True, 3, 64),
    ]
    for arch, build, narrowed, classes, size in cases:
        with narrow_layers() if narrowed else contextlib.nullcontext():
            model = randomize_bn(build())
        state = model.state_dict()
        family = "resnet" if arch.startswith("resnet") else "sequential"
        names = ",".join("c%d" % i for i in range(classes))
        flags = [] if classes == 1000 else ["--classes", names]
        x = torch.randn(1, 3, size, size)
        for src in save_all_formats(state, arch):
            m = convert_ok(src, path(arch + ".cnn"), *flags)
            meta_expect(m, arch=arch, name=arch, input_shape=[3, 224, 224], resize=256,
                        crop=[224, 224], mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        source=os.path.basename(src))
            if classes == 1000:
                meta_expect(m, class_names=list(_IMAGENET_CATEGORIES))
            check_graph(m, family, model, arch)
            check_tensors(m, state, arch)
            compared = check_forward(m, model, arch, x, lambda n: False)
            print("ok: %s from %s: %d nodes, %d tensors, %d node outputs match torch"
                  % (arch, os.path.basename(src), len(m["nodes"]), len(m["tensors"]), compared))


def cifar_unhooked(name):   # the CIFAR model's relus are F.relu and its pool F.avg_pool2d
    return name in ("relu", "avgpool") or name.endswith(".relu")


def test_cifar_resnet20():
    model = randomize_bn(CifarResNet(3))
    state = model.state_dict()
    wrapped = {"best_prec1": 91.5, "state_dict": {"module." + k: v for k, v in state.items()}}
    x = torch.randn(2, 3, 32, 32)
    for src in save_all_formats(wrapped, "cifar20"):
        m = convert_ok(src, path("cifar20.cnn"))
        meta_expect(m, arch="cifar_resnet20", name="cifar_resnet20", input_shape=[3, 32, 32],
                    resize=0, crop=[32, 32], mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    class_names=CIFAR10)
        check_graph(m, "cifar", model, "cifar_resnet20")
        check_tensors(m, state, "cifar_resnet20")
        compared = check_forward(m, model, "cifar_resnet20", x, cifar_unhooked)
        shortcuts = [(n, a) for op, n, _, a in m["nodes"] if op == "shortcut_a"]
        assert shortcuts == [
            ("layer2.0.shortcut", {"stride": 2, "pad_channels": [8, 8]}),
            ("layer3.0.shortcut", {"stride": 2, "pad_channels": [16, 16]})], shortcuts
        print("ok: cifar_resnet20 from %s ({'state_dict': module.*}): %d node outputs match torch"
              % (os.path.basename(src), compared))


def test_odd_layouts():
    """Offset, transposed, channels-last, expanded and shared storages, in zip and legacy."""
    model = randomize_bn(torchvision.models.resnet18(num_classes=4))
    state = model.state_dict()
    odd = dict(state)
    w = state["fc.weight"]                                  # [4, 512]
    base = torch.randn(w.shape[1], w.shape[0] + 5)
    base[:, 2:2 + w.shape[0]] = w.t()
    odd["fc.weight"] = base[:, 2:2 + w.shape[0]].t()        # stride (1, 9), offset 2
    w = state["conv1.weight"]
    big = torch.randn(w.numel() + 7)
    big[7:] = w.reshape(-1)
    odd["conv1.weight"] = big[7:].view(w.shape)             # contiguous at offset 7
    w = state["layer1.0.conv1.weight"]
    odd["layer1.0.conv1.weight"] = w.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    odd["bn1.running_mean"] = torch.tensor([0.25]).expand(64)   # stride 0
    both = torch.cat([state["bn1.weight"], state["bn1.bias"]])
    odd["bn1.weight"], odd["bn1.bias"] = both[:64], both[64:]   # one storage, two tensors
    assert not odd["fc.weight"].is_contiguous() and odd["fc.weight"].storage_offset() == 2
    assert not odd["layer1.0.conv1.weight"].is_contiguous()
    assert odd["bn1.running_mean"].stride() == (0,)
    with torch.no_grad():
        model.bn1.running_mean.fill_(0.25)
    state = model.state_dict()
    for src in save_all_formats(odd, "odd")[:2]:
        loaded = torch.load(src)
        assert loaded["fc.weight"].stride() == (1, 9)
        assert loaded["conv1.weight"].storage_offset() == 7
        m = convert_ok(src, path("odd.cnn"), "--classes", "a,b,c,d")
        check_tensors(m, state, "resnet18/odd")
        check_forward(m, model, "resnet18/odd", torch.randn(1, 3, 64, 64), lambda n: False)
        print("ok: strided/offset/expanded/shared tensors from %s" % os.path.basename(src))


def test_dtypes():
    model = randomize_bn(CifarResNet(3))
    state = model.state_dict()
    for dtype, save in ((torch.float16, "zip"), (torch.bfloat16, "legacy"),
                        (torch.float64, "safetensors"), (torch.float16, "legacy"),
                        (torch.bfloat16, "safetensors")):
        typed = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
        src = path("cifar_%s.%s" % (str(dtype)[6:], save))
        if save == "zip":
            torch.save({"model": typed}, src)
        elif save == "legacy":
            torch.save(typed, src, _use_new_zipfile_serialization=False)
        else:
            save_safetensors(typed, src)
        m = convert_ok(src, path("typed.cnn"))
        check_tensors(m, typed, "cifar_resnet20/%s" % dtype)
        print("ok: %s checkpoint (%s) converts to float32 exactly as torch's .float()"
              % (dtype, save))


def test_flags_and_channels():
    """One input channel and 5 classes (a Fashion-MNIST-like model), every override flag."""
    model = randomize_bn(CifarResNet(5, in_channels=1, num_classes=5))
    src = path("fashion.pth")
    torch.save(model.state_dict(), src)
    names = path("names.txt")
    with open(names, "w") as f:
        f.write("tee\ntrouser\npullover\ndress\ncoat\n")
    m = convert_ok(src, path("fashion.cnn"), "--name", "fashion_resnet", "--input-size", "1,28,28",
                   "--mean", "0.286", "--std", "0.353", "--classes-file", names, "--resize", "30")
    meta_expect(m, name="fashion_resnet", arch="cifar_resnet32", input_shape=[1, 28, 28],
                crop=[28, 28], resize=30, mean=[0.286], std=[0.353],
                class_names=["tee", "trouser", "pullover", "dress", "coat"], source="fashion.pth")
    check_forward(m, model, "cifar_resnet32", torch.randn(1, 1, 28, 28), cifar_unhooked)
    convert_fails(src, "1 input channel but mean has 3 entries", "--classes", "a,b,c,d,e")
    convert_fails(src, "the default CIFAR-10 class names (an RGB dataset) do not apply",
                  "--mean", "0.5", "--std", "0.5")
    convert_fails(src, "5 outputs but there are 3 class names", "--mean", "0.5", "--std", "0.5",
                  "--classes", "a,b,c")
    convert_fails(src, "--input-size has 3 channels but the first conv takes 1", "--input-size",
                  "3,28,28", "--mean", "0.5", "--std", "0.5", "--classes", "a,b,c,d,e")
    m = convert_ok(src, path("fashion2.cnn"), "--arch", "cifar_resnet32", "--mean", "0.5",
                   "--std", "0.5", "--classes", "a,b,c,d,e")
    meta_expect(m, arch="cifar_resnet32", name="cifar_resnet32", input_shape=[1, 32, 32], resize=0)
    print("ok: 1-channel 5-class cifar_resnet32 and the override flags")


def test_shared_checkpoints():
    data = os.path.join(SHARED, "data", "cifar10")
    for stem, arch, n in (("resnet20-12fca82f", "cifar_resnet20", 3),
                          ("resnet56-4bfd9763", "cifar_resnet56", 9)):
        src = os.path.join(data, stem + ".th")
        assert os.path.isfile(src), ("%s is missing: the real CIFAR-10 checkpoints live in "
                                     "../shared (set SHARED to its location)" % src)
        m = convert_ok(src, path(stem + ".cnn"))
        meta_expect(m, arch=arch, name=arch, input_shape=[3, 32, 32], resize=0, crop=[32, 32],
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=CIFAR10,
                    source=stem + ".th")
        loaded = torch.load(src, map_location="cpu")
        state = {k[len("module."):]: v for k, v in loaded["state_dict"].items()}
        check_tensors(m, state, arch)
        model = CifarResNet(n)
        model.load_state_dict(state)
        model.eval()
        check_graph(m, "cifar", model, arch)
        check_forward(m, model, arch, torch.rand(2, 3, 32, 32), cifar_unhooked)
        print("ok: %s (legacy, {'best_prec1', 'state_dict': module.*}) -> %s, %d tensors equal"
              % (os.path.basename(src), arch, len(m["tensors"])))


MALICIOUS = "refusing to load global '%s' (not a tensor or container type); this checkpoint " \
            "may be malicious"


def reduce_pickle(module, name, arg):
    """A protocol-2 pickle that calls module.name(arg) when loaded by a plain unpickler."""
    a = arg.encode()
    return (b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
            + b"X" + struct.pack("<I", len(a)) + a + b"\x85R.")


def test_malicious():
    marker = path("pwned")
    shell = reduce_pickle("os", "system", "touch " + marker)
    evil = reduce_pickle("builtins", "eval", "open(%r, 'w').close()" % marker)
    # The payloads are live: a plain unpickler runs them.
    for payload in (shell, evil):
        pickle.loads(payload)
        assert os.path.exists(marker), "test payload did not run under pickle.loads"
        os.unlink(marker)

    zipped = path("evil.pth")
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("archive/data.pkl", shell)
        z.writestr("archive/version", "3\n")
    convert_fails(zipped, MALICIOUS % "os.system")
    assert not os.path.exists(marker), "os.system ran"

    legacy = path("evil.th")
    with open(legacy, "wb") as f:
        sys_info = {"protocol_version": 1001, "little_endian": True}
        for obj in (0x1950a86a20f9469cfc6c, 1001, sys_info):
            f.write(pickle.dumps(obj, protocol=2))
        f.write(evil + pickle.dumps([], protocol=2))
    convert_fails(legacy, MALICIOUS % "builtins.eval")
    assert not os.path.exists(marker), "builtins.eval ran"

    whole = path("whole_model.pth")   # a pickled nn.Module is refused the same way
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3)), whole)
    convert_fails(whole, "refusing to load global 'torch.nn.modules.container.Sequential'")
    print("ok: os.system / builtins.eval / whole-module pickles refused, nothing ran")


def test_errors():
    model = randomize_bn(CifarResNet(3))
    state = model.state_dict()

    def save(name, sd, fmt="zip"):
        dst = path(name)
        if fmt == "safetensors":
            save_safetensors(sd, dst)
        else:
            torch.save(sd, dst, _use_new_zipfile_serialization=(fmt == "zip"))
        return dst

    missing = dict(state)
    del missing["layer2.1.bn1.running_var"]
    convert_fails(save("missing.pth", missing),
                  "missing key 'layer2.1.bn1.running_var' (expected shape [32]) for cifar_resnet20")
    wrong = dict(state)
    wrong["layer1.0.conv2.weight"] = torch.zeros(16, 16, 5, 5)
    convert_fails(save("wrong.pth", wrong, "legacy"),
                  "key 'layer1.0.conv2.weight' has shape [16, 16, 5, 5], expected [16, 16, 3, 3]")
    wrong = dict(state)
    wrong["linear.weight"] = torch.zeros(10, 32)
    convert_fails(save("wrong2.safetensors", wrong, "safetensors"),
                  "key 'linear.weight' has shape [10, 32], expected [10, 64]")
    extra = dict(state, **{"layer1.0.conv1.bias": torch.zeros(16)})
    convert_fails(save("extra.pth", extra),
                  "unexpected key 'layer1.0.conv1.bias' (shape [16]): not part of cifar_resnet20")
    ints = dict(state, **{"linear.bias": torch.zeros(10, dtype=torch.int64)})
    convert_fails(save("ints.pth", ints), "key 'linear.bias' has dtype int64")
    convert_fails(save("unknown.pth", {"encoder.weight": torch.zeros(3, 3)}),
                  "unknown architecture (top-level names: encoder); supported: alexnet")
    uneven = {k: v for k, v in state.items() if not k.startswith("layer3.2.")}
    convert_fails(save("uneven.pth", uneven), "CIFAR-style ResNet with blocks [3, 3, 2]")
    convert_fails(save("state.pth", state), "missing key 'layer1.3.conv1.weight'",
                  "--arch", "cifar_resnet26")
    convert_fails(path("state.pth"), "unknown --arch 'resnet9'", "--arch", "resnet9")
    convert_fails(save("nostate.pth", {"epoch": 3, "lr": 0.1}), "no tensors in the checkpoint")

    for fmt, ext in (("zip", "pth"), ("legacy", "th"), ("safetensors", "safetensors")):
        whole = save("full." + ext, state, fmt)
        with open(whole, "rb") as f:
            blob = f.read()
        for cut in (len(blob) // 2, len(blob) - 100):
            short = path("short.%d.%s" % (cut, ext))
            with open(short, "wb") as f:
                f.write(blob[:cut])
            line = convert_fails(short, "")
            assert "truncated" in line, "truncated %s file: %r does not say so" % (fmt, line)

    text = path("notes.txt")
    with open(text, "w") as f:
        f.write("this is not a checkpoint\n")
    convert_fails(text, "not a PyTorch checkpoint")
    empty = path("empty.pth")
    open(empty, "wb").close()
    convert_fails(empty, "empty file")
    plain = path("plain.pkl")
    with open(plain, "wb") as f:
        pickle.dump({"a": 1}, f, protocol=2)
    convert_fails(plain, "not a torch.save checkpoint")
    convert_fails(path("does_not_exist.pth"), "cannot read")
    scripted = path("scripted.pt")
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3))), scripted)
    convert_fails(scripted, "TorchScript archive")
    r = run_convert([path("full.pth"), "-o", os.path.join(TMP, "no_dir", "x.cnn")])
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "cannot write" in r.stderr, r
    print("ok: missing/misshapen/extra/int keys, unknown arch, truncated zip/legacy/safetensors, "
          "non-checkpoints: exit 2, one line, no output")


def main():
    tests = [test_torchvision_models, test_cifar_resnet20, test_odd_layouts, test_dtypes,
             test_flags_and_channels, test_shared_checkpoints, test_malicious, test_errors]
    failed = 0
    for test in tests:
        try:
            test()
        except AssertionError as e:
            failed += 1
            print("FAIL: %s: %s" % (test.__name__, e))
    if failed:
        print("test_convert: %d of %d groups FAILED (files kept in %s)" % (failed, len(tests), TMP))
        return 1
    shutil.rmtree(TMP)
    print("test_convert: all %d groups passed" % len(tests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
