"""Writes small random-weight cnnscope models for the engine's unit tests (stdlib only).

    make_tiny_model.py OUT_DIR

tiny_resnet.cnn: input 3x16x16 -> conv+bn+relu -> conv+bn -> add (residual) -> relu -> maxpool
(ceil_mode) -> shortcut_a -> conv 1x1 (bias) -> batchnorm (stands alone: the conv before it is
also read by the add after it, so it cannot be folded) -> add -> avgpool -> adaptive pool ->
flatten -> dropout -> linear -> softmax. Every op of the engine appears at least once.

wide_linear.cnn: input 1x64x64 -> flatten -> linear 4096 -> 1100 (17.2 MiB of weights: large
enough to see in the mapping's resident size that a session's copy of them, made under
cnn_session_options.copy_linear, releases the file's pages) -> relu -> linear 10.
"""
import array
import os
import random
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import cnnfile  # noqa: E402


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(1234)
    w = cnnfile.ModelWriter({
        "name": "tiny_resnet", "arch": "tiny_resnet", "input_shape": [3, 16, 16], "resize": 0,
        "crop": [16, 16], "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3],
        "class_names": ["zero", "one", "two", "three", "four"]})

    def tensor(name, dims, lo=-0.5, hi=0.5):
        n = 1
        for d in dims:
            n *= d
        w.add_tensor(name, dims, struct.pack("<%df" % n, *[rng.uniform(lo, hi) for _ in range(n)]))
        return name

    def bn(name, c):
        tensor(name + ".weight", [c], 0.5, 1.5)
        tensor(name + ".bias", [c], -0.2, 0.2)
        tensor(name + ".running_mean", [c], -0.3, 0.3)
        tensor(name + ".running_var", [c], 0.5, 2.0)
        return {"weight": name + ".weight", "bias": name + ".bias", "eps": 1e-5,
                "running_mean": name + ".running_mean", "running_var": name + ".running_var"}

    def conv(name, k, c, r, stride=1, pad=0, bias=False, groups=1):
        attrs = {"weight": tensor(name + ".weight", [k, c // groups, r, r]), "stride": [stride, stride],
                 "padding": [pad, pad], "dilation": [1, 1], "groups": groups}
        if bias:
            attrs["bias"] = tensor(name + ".bias", [k])
        return attrs

    w.add_node("input", "input", [], {})
    w.add_node("conv2d", "conv1", ["input"], conv("conv1", 8, 3, 3, pad=1))
    w.add_node("batchnorm", "bn1", ["conv1"], bn("bn1", 8))
    w.add_node("relu", "relu", ["bn1"], {})
    w.add_node("conv2d", "block.conv", ["relu"], conv("block.conv", 8, 8, 3, pad=1))
    w.add_node("batchnorm", "block.bn", ["block.conv"], bn("block.bn", 8))
    w.add_node("add", "block.add", ["block.bn", "relu"], {})
    w.add_node("relu", "block", ["block.add"], {})
    w.add_node("maxpool", "pool", ["block"], {"kernel": [3, 3], "stride": [2, 2], "padding": [0, 0],
                                              "dilation": [1, 1], "ceil_mode": 1})
    w.add_node("shortcut_a", "shortcut", ["pool"], {"stride": 2, "pad_channels": [4, 4]})
    w.add_node("conv2d", "proj", ["shortcut"], conv("proj", 16, 16, 1, bias=True, groups=2))
    w.add_node("batchnorm", "proj_bn", ["proj"], bn("proj_bn", 16))
    w.add_node("add", "proj_add", ["proj_bn", "proj"], {})
    w.add_node("avgpool", "avg", ["proj_add"], {"kernel": [2, 2], "stride": [1, 1], "padding": [1, 1],
                                                "ceil_mode": 0, "count_include_pad": 0})
    w.add_node("adaptive_avgpool", "gap", ["avg"], {"output": [1, 1]})
    w.add_node("flatten", "flatten", ["gap"], {})
    w.add_node("dropout", "drop", ["flatten"], {"p": 0.5})
    fc = {"weight": tensor("fc.weight", [5, 16]), "bias": tensor("fc.bias", [5])}
    w.add_node("linear", "fc", ["drop"], fc)
    w.add_node("softmax", "prob", ["fc"], {})
    w.write(os.path.join(out_dir, "tiny_resnet.cnn"))
    write_wide_linear(out_dir)


def write_wide_linear(out_dir):
    w = cnnfile.ModelWriter({
        "name": "wide_linear", "arch": "wide_linear", "input_shape": [1, 64, 64], "resize": 0,
        "crop": [64, 64], "mean": [0.5], "std": [0.25], "class_names": [str(k) for k in range(10)]})

    def tensor(name, dims, seed):
        n = 1
        for d in dims:
            n *= d
        # A cheap deterministic pattern in [-0.5, 0.5) (random.uniform for 4.5M values is slow).
        values = array.array("f", ((i * 2654435761 + seed) % 4093 / 4093.0 - 0.5 for i in range(n)))
        if sys.byteorder != "little":
            values.byteswap()
        w.add_tensor(name, dims, values.tobytes())
        return name

    w.add_node("input", "input", [], {})
    w.add_node("flatten", "flatten", ["input"], {})
    w.add_node("linear", "fc1", ["flatten"], {"weight": tensor("fc1.weight", [1100, 4096], 1),
                                               "bias": tensor("fc1.bias", [1100], 2)})
    w.add_node("relu", "relu", ["fc1"], {})
    w.add_node("linear", "fc2", ["relu"], {"weight": tensor("fc2.weight", [10, 1100], 3)})
    w.write(os.path.join(out_dir, "wide_linear.cnn"))


if __name__ == "__main__":
    main(sys.argv[1])
