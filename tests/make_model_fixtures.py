#!/usr/bin/env python3
"""make_model_fixtures.py - writes the model files that tests/c/test_model_file.c loads.

    python3 tests/make_model_fixtures.py OUT_DIR

Standard library only (any Python 3). Writes

    OUT_DIR/good/*.cnn      small valid models (the C test knows their shapes, params and MACs)
    OUT_DIR/bad/*.cnn       one defect each
    OUT_DIR/bad/cases.tsv   file <TAB> status <TAB> words: loading the file must fail with that
                            status (FORMAT, IO or LIMIT) and a message containing every word
                            ('|'-separated) and the file's path.

Header defects keep the stored CRC (so the header checks fire); every structural defect
re-computes the CRC afterwards, so the checks behind the checksum are reached.
"""
import os
import random
import struct
import sys
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import cnnfile  # noqa: E402


# --- raw dicts: let a test write what ModelWriter would refuse (duplicate keys, empty lists,
# unknown value types) while ModelWriter still lays the file out.
class Raw(bytes):
    """Already-encoded bytes: a whole dict, or one value inside raw_dict()."""


_encode_dict = cnnfile._dict


def _dict_or_raw(d):
    return bytes(d) if isinstance(d, Raw) else _encode_dict(d)


cnnfile._dict = _dict_or_raw


def raw_dict(pairs):
    """A dict from (key, value) pairs; a value may be Raw bytes (type byte included)."""
    out = struct.pack("<I", len(pairs))
    for k, v in pairs:
        out += cnnfile._str(k) + (bytes(v) if isinstance(v, Raw) else cnnfile._value(v))
    return Raw(out)


def floats(n, seed):
    rng = random.Random(seed)
    return struct.pack("<%df" % n, *[rng.uniform(-1, 1) for _ in range(n)])


def positive_floats(n, seed):
    rng = random.Random(seed)
    return struct.pack("<%df" % n, *[rng.uniform(0.5, 1.5) for _ in range(n)])


def count(dims):
    n = 1
    for d in dims:
        n *= d
    return n


class Model:
    """A ModelWriter with helpers that add a layer and its tensors in one call."""

    def __init__(self, meta):
        self.w = cnnfile.ModelWriter(meta)
        self.seed = 0

    def tensor(self, name, dims, positive=False):
        self.seed += 1
        data = positive_floats(count(dims), self.seed) if positive else floats(count(dims), self.seed)
        self.w.add_tensor(name, dims, data)
        return name

    def node(self, op, name, inputs, attrs=None):
        if isinstance(attrs, Raw):   # ModelWriter.add_node would turn it into a dict
            self.w.nodes.append((op, name, list(inputs), attrs))
        else:
            self.w.add_node(op, name, inputs, attrs or {})
        return name

    def tensors(self, attrs, override, shapes):
        """Adds the tensor of each (attribute, name, dims) unless `override` replaces it."""
        for key, name, dims, positive in shapes:
            if key not in override:
                attrs[key] = self.tensor(name, dims, positive)
        attrs.update(override)
        return attrs

    def conv(self, name, inp, k, c, r, stride=1, pad=0, groups=1, with_bias=True, override=None):
        attrs = {"stride": [stride, stride], "padding": [pad, pad], "dilation": [1, 1],
                 "groups": groups}
        shapes = [("weight", name + ".weight", [k, c // groups, r, r], False)]
        if with_bias:
            shapes.append(("bias", name + ".bias", [k], False))
        return self.node("conv2d", name, [inp], self.tensors(attrs, override or {}, shapes))

    def bn(self, name, inp, c, override=None):
        shapes = [("weight", name + ".weight", [c], True), ("bias", name + ".bias", [c], False),
                  ("running_mean", name + ".running_mean", [c], False),
                  ("running_var", name + ".running_var", [c], True)]
        return self.node("batchnorm", name, [inp], self.tensors({"eps": 1e-5}, override or {}, shapes))

    def linear(self, name, inp, out_f, in_f, with_bias=True):
        shapes = [("weight", name + ".weight", [out_f, in_f], False)]
        if with_bias:
            shapes.append(("bias", name + ".bias", [out_f], False))
        return self.node("linear", name, [inp], self.tensors({}, {}, shapes))

    def maxpool(self, name, inp, k, s, p=0, ceil=0, override=None):
        attrs = {"kernel": [k, k], "stride": [s, s], "padding": [p, p], "dilation": [1, 1],
                 "ceil_mode": ceil}
        attrs.update(override or {})
        return self.node("maxpool", name, [inp], attrs)

    def to_bytes(self):
        return bytearray(self.w.to_bytes())


def meta(c, h, w, classes, **extra):
    m = {"name": "test", "arch": "test", "input_shape": [c, h, w], "resize": 0, "crop": [h, w],
         "mean": [0.5] * c, "std": [0.25] * c, "class_names": ["class%d" % i for i in range(classes)]}
    m.update(extra)
    return m


# --- the valid models (tests/c/test_model_file.c checks their numbers) ---------------------------

def tiny(meta_override=None, variant=None):
    """input [1,8,8] -> conv 4x3x3 pad 1 -> bn -> relu -> maxpool 2 -> flatten -> linear 3.
    `variant(m, name)` may return a replacement node spec for a layer, to make a bad model."""
    mt = meta(1, 8, 8, 3, source="unit test: unknown keys are ignored")
    mt.update(meta_override or {})
    m = Model(mt)
    variant = variant or (lambda m, name: None)

    def step(name, default):
        replaced = variant(m, name)
        return replaced if replaced is not None else default()

    step("input", lambda: m.node("input", "input", []))
    step("features.0", lambda: m.conv("features.0", "input", 4, 1, 3, pad=1))
    step("features.1", lambda: m.bn("features.1", "features.0", 4))
    step("features.2", lambda: m.node("relu", "features.2", ["features.1"]))
    step("features.3", lambda: m.maxpool("features.3", "features.2", 2, 2))
    step("flatten", lambda: m.node("flatten", "flatten", ["features.3"]))
    step("classifier", lambda: m.linear("classifier", "flatten", 3, 64))
    variant(m, "end")
    return m


def residual():
    """ResNet-style: stride-2 conv, ceil-mode maxpool, a grouped conv, a residual add, an
    avgpool in ceil mode, adaptive pool, dropout (p written as the int 0) and softmax."""
    m = Model(meta(3, 12, 12, 5, resize=14, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))
    m.node("input", "input", [])
    m.conv("conv1", "input", 8, 3, 3, stride=2, pad=1, with_bias=False)           # [8,6,6]
    m.bn("bn1", "conv1", 8)
    m.node("relu", "relu", ["bn1"])
    m.maxpool("maxpool", "relu", 3, 2, 1, ceil=1)                             # [8,4,4]
    m.conv("layer1.0.conv1", "maxpool", 8, 8, 3, pad=1, with_bias=False)
    m.bn("layer1.0.bn1", "layer1.0.conv1", 8)
    m.node("relu", "layer1.0.relu", ["layer1.0.bn1"])
    m.conv("layer1.0.conv2", "layer1.0.relu", 8, 8, 3, pad=1, groups=2)      # weight [8,4,3,3]
    m.bn("layer1.0.bn2", "layer1.0.conv2", 8)
    m.node("add", "layer1.0.add", ["layer1.0.bn2", "maxpool"])
    m.node("relu", "layer1.0", ["layer1.0.add"])
    m.node("avgpool", "extra.pool", ["layer1.0"], {"kernel": [3, 3], "stride": [2, 2],
                                                   "padding": [1, 1], "ceil_mode": 1,
                                                   "count_include_pad": 1})   # [8,3,3]
    m.node("adaptive_avgpool", "avgpool", ["extra.pool"], {"output": [1, 1]})
    m.node("flatten", "flatten", ["avgpool"])
    m.node("dropout", "dropout", ["flatten"], {"p": 0})
    m.linear("fc", "dropout", 5, 8)
    m.node("softmax", "prob", ["fc"])
    return m


def shortcut():
    """CIFAR ResNet option A on an odd size: 7x7 -> stride 2 -> 4x4 both ways."""
    m = Model(meta(3, 7, 7, 10))
    m.node("input", "input", [])
    m.conv("conv1", "input", 16, 3, 3, pad=1, with_bias=False)                    # [16,7,7]
    m.bn("bn1", "conv1", 16)
    m.node("relu", "relu", ["bn1"])
    m.conv("layer2.0.conv1", "relu", 32, 16, 3, stride=2, pad=1, with_bias=False)  # [32,4,4]
    m.bn("layer2.0.bn1", "layer2.0.conv1", 32)
    m.node("relu", "layer2.0.relu", ["layer2.0.bn1"])
    m.conv("layer2.0.conv2", "layer2.0.relu", 32, 32, 3, pad=1, with_bias=False)
    m.bn("layer2.0.bn2", "layer2.0.conv2", 32)
    m.node("shortcut_a", "layer2.0.shortcut", ["relu"], {"stride": 2, "pad_channels": [8, 8]})
    m.node("add", "layer2.0.add", ["layer2.0.bn2", "layer2.0.shortcut"])
    m.node("relu", "layer2.0", ["layer2.0.add"])
    m.node("adaptive_avgpool", "avgpool", ["layer2.0"], {"output": [1, 1]})
    m.node("flatten", "flatten", ["avgpool"])
    m.linear("linear", "flatten", 10, 32)
    return m


def names():
    """VGG-like names for find_node: features.0 .. features.20 (relu), flatten, classifier.0."""
    m = Model(meta(1, 2, 2, 2))
    prev = m.node("input", "input", [])
    for i in range(21):
        prev = m.node("relu", "features.%d" % i, [prev])
    m.node("flatten", "flatten", [prev])
    m.linear("classifier.0", "flatten", 2, 4)
    return m


def no_tensors():
    """No weights at all: an empty data section is fine."""
    m = Model(meta(1, 2, 2, 4))
    m.node("input", "input", [])
    m.node("flatten", "flatten", ["input"])
    return m


# --- byte-level editing ----------------------------------------------------------------------

def u32(b, off):
    return struct.unpack_from("<I", b, off)[0]


def u64(b, off):
    return struct.unpack_from("<Q", b, off)[0]


def put_u32(b, off, v):
    struct.pack_into("<I", b, off, v)


def put_u64(b, off, v):
    struct.pack_into("<Q", b, off, v)


SECTION = {"meta": 24, "graph": 40, "table": 56, "data": 72}   # header offset of (offset, size)


def section(b, name):
    off = SECTION[name]
    return u64(b, off), u64(b, off + 8)


def fix_crc(b):
    put_u32(b, 12, zlib.crc32(bytes(b[16:])) & 0xFFFFFFFF)
    return b


def table_entries(b):
    """Field offsets of every tensor table entry: name, dims (list), offset, nbytes."""
    pos, _ = section(b, "table")
    n = u32(b, pos)
    pos += 4
    entries = []
    for _ in range(n):
        name_len = u32(b, pos)
        name = bytes(b[pos + 4:pos + 4 + name_len]).decode()
        pos += 4 + name_len
        ndim = b[pos + 1]
        e = {"name": name, "dtype": pos, "ndim": pos + 1,
             "dims": [pos + 2 + 8 * k for k in range(ndim)]}
        pos += 2 + 8 * ndim
        e["offset"], e["nbytes"] = pos, pos + 8
        pos += 16
        entries.append(e)
    return entries


def tensor(b, name):
    return next(e for e in table_entries(b) if e["name"] == name)


def replace_in(b, sect, old, new):
    """Replaces the one occurrence of `old` inside a section with `new` (same length)."""
    assert len(old) == len(new)
    start, size = section(b, sect)
    at = bytes(b[start:start + size]).find(old)
    assert at >= 0, (sect, old)
    assert bytes(b[start:start + size]).find(old, at + 1) < 0, (sect, old)
    b[start + at:start + at + len(old)] = new
    return b


def s(x):
    """The encoding of a str, to find it in the file."""
    return cnnfile._str(x)


# --- the defects -----------------------------------------------------------------------------

def bad_cases():
    """Yields (file name, status, words, bytes)."""
    good = tiny().to_bytes()
    size = len(good)

    def copy():
        return bytearray(good)

    # 1. Header: magic, version, size, checksum (the stored CRC is left as it is).
    b = copy(); b[0:8] = b"CNNSCOPX"
    yield "magic.cnn", "FORMAT", ["bad magic", "CNNSCOPE"], b
    b = copy(); b[0:8] = b"\x89PNG\r\n\x1a\n"
    yield "png.cnn", "FORMAT", ["bad magic", "89 50 4e 47"], b
    b = copy(); put_u32(b, 8, 2)
    yield "version.cnn", "FORMAT", ["version 2", "version 1"], b
    b = copy(); put_u64(b, 16, size + 64)
    yield "size_field_big.cnn", "FORMAT", ["truncated", "header says %d bytes" % (size + 64),
                                           "file has %d" % size], b
    b = copy(); put_u64(b, 16, size - 1)
    yield "size_field_small.cnn", "FORMAT", ["size mismatch", "header says %d" % (size - 1)], b
    yield "truncated_half.cnn", "FORMAT", ["truncated", "header says %d" % size,
                                           "file has %d" % (size // 2)], copy()[:size // 2]
    yield "trailing.cnn", "FORMAT", ["size mismatch", "extra bytes"], copy() + b"\0" * 10
    yield "header_only.cnn", "FORMAT", ["truncated", "100 bytes", "128-byte header"], copy()[:100]
    yield "empty.cnn", "FORMAT", ["truncated", "has 0 bytes"], bytearray()
    b = copy(); b[-1] ^= 0x10
    yield "crc_data.cnn", "FORMAT", ["checksum mismatch", "stored 0x%08x" % u32(good, 12),
                                     "corrupt"], b
    b = copy(); b[130] ^= 0x01
    yield "crc_meta.cnn", "FORMAT", ["checksum mismatch"], b
    b = copy(); b[12] ^= 0x80
    yield "crc_field.cnn", "FORMAT", ["checksum mismatch", "computed 0x%08x" % u32(good, 12)], b

    # 2. Sections (CRC re-computed from here on).
    b = copy(); b[100] = 1
    yield "reserved.cnn", "FORMAT", ["header", "reserved byte 100"], fix_crc(b)
    b = copy(); put_u64(b, SECTION["meta"], 64)
    yield "meta_in_header.cnn", "FORMAT", ["header", "meta section offset 64", "before byte 128"], fix_crc(b)
    b = copy(); put_u64(b, SECTION["graph"], size + 64)
    yield "graph_out_of_bounds.cnn", "FORMAT", ["graph section", "out of bounds",
                                                "%d-byte file" % size], fix_crc(b)
    b = copy(); put_u64(b, SECTION["data"] + 8, 2**64 - 8)
    yield "data_size_overflow.cnn", "FORMAT", ["data section", "overflows 64 bits"], fix_crc(b)
    b = copy(); put_u64(b, SECTION["table"], 2**64 - 1); put_u64(b, SECTION["table"] + 8, 2)
    yield "table_offset_overflow.cnn", "FORMAT", ["tensor table section", "overflows"], fix_crc(b)
    b = copy(); put_u64(b, SECTION["meta"] + 8, section(good, "meta")[1] + 8)
    yield "meta_overlaps_graph.cnn", "FORMAT", ["graph section offset", "before byte",
                                                "overlapping"], fix_crc(b)
    b = copy(); put_u64(b, SECTION["data"], section(good, "data")[0] + 8)
    put_u64(b, SECTION["data"] + 8, section(good, "data")[1] - 8)
    yield "data_misaligned.cnn", "FORMAT", ["data section offset", "multiple of 64"], fix_crc(b)

    # 3. Records.
    meta_off, meta_size = section(good, "meta")
    graph_off, graph_size = section(good, "graph")
    b = copy(); put_u32(b, meta_off + 4, 0xFFFFFFFF)
    yield "string_length_huge.cnn", "FORMAT", ["meta", "string length 4294967295", "limit of 4096"], fix_crc(b)
    b = copy(); put_u32(b, meta_off + 4, 4000)
    yield "string_past_section.cnn", "FORMAT", ["meta", "needs 4000 bytes", "meta section"], fix_crc(b)
    b = copy(); put_u32(b, meta_off, 1000)
    yield "dict_count_huge.cnn", "FORMAT", ["meta dict has 1000 entries", "limit of 256"], fix_crc(b)
    b = copy(); put_u32(b, meta_off, u32(good, meta_off) - 1)
    yield "meta_leftover.cnn", "FORMAT", ["left over in the meta section"], fix_crc(b)
    b = copy(); replace_in(b, "meta", s("mean") + b"\x05\x01\x00\x00\x00", s("mean") + b"\x05\x41\x00\x00\x00")
    yield "list_count_huge.cnn", "FORMAT", ["meta key 'mean'", "list of 65 numbers", "limit of 64"], fix_crc(b)
    b = tiny({"source": "ab\x01c"}).to_bytes(); replace_in(b, "meta", b"ab\x01c", b"ab\x00c")
    yield "string_nul.cnn", "FORMAT", ["meta key 'source'", "NUL"], fix_crc(b)
    b = tiny({"zz": 7}).to_bytes(); replace_in(b, "meta", s("zz") + b"\x01", s("zz") + b"\x09")
    yield "value_type.cnn", "FORMAT", ["meta key 'zz'", "value type 9"], fix_crc(b)
    b = tiny({"namf": "x"}).to_bytes(); replace_in(b, "meta", s("namf"), s("name"))
    yield "meta_dup_key.cnn", "FORMAT", ["meta key 'name'", "appears twice"], fix_crc(b)
    b = copy(); put_u32(b, graph_off, 0xFFFFFFFF)
    yield "node_count_huge.cnn", "FORMAT", ["graph", "node count is 4294967295", "1..100000"], fix_crc(b)
    b = copy(); put_u32(b, graph_off, 100000)
    yield "node_count_section.cnn", "FORMAT", ["graph", "node count 100000 needs at least"], fix_crc(b)
    b = copy(); put_u32(b, graph_off, 0)
    yield "node_count_zero.cnn", "FORMAT", ["graph", "node count is 0"], fix_crc(b)
    b = copy(); put_u32(b, graph_off, 6)
    yield "graph_leftover.cnn", "FORMAT", ["left over in the graph section", "6 nodes"], fix_crc(b)
    b = copy(); replace_in(b, "graph", s("features.2") + b"\x01\x00\x00\x00",
                           s("features.2") + b"\x00\x00\x00\x10")
    yield "input_count_huge.cnn", "FORMAT", ["graph node 3 'features.2'", "input"], fix_crc(b)
    table_off, _ = section(good, "table")
    b = copy(); put_u32(b, table_off, 200000)
    yield "tensor_count_huge.cnn", "FORMAT", ["tensor table", "tensor count is 200000"], fix_crc(b)
    b = copy(); put_u32(b, table_off, 99999)
    yield "tensor_count_section.cnn", "FORMAT", ["tensor table", "tensor count 99999 needs at least"], fix_crc(b)
    b = copy(); b[tensor(b, "features.0.bias")["dtype"]] = 2
    yield "tensor_dtype.cnn", "FORMAT", ["tensor table entry 1 'features.0.bias'", "dtype is 2"], fix_crc(b)
    b = copy(); b[tensor(b, "features.0.bias")["ndim"]] = 5
    yield "tensor_ndim.cnn", "FORMAT", ["'features.0.bias'", "ndim is 5", "1..4"], fix_crc(b)
    b = copy(); put_u64(b, tensor(b, "features.0.weight")["dims"][1], 0)
    yield "tensor_dim_zero.cnn", "FORMAT", ["'features.0.weight'", "dims[1] is 0"], fix_crc(b)

    # 4. Tensors.
    w = tensor(good, "features.0.weight")
    b = copy()
    for k, d in enumerate([2**32, 2**32, 1, 1]):   # product 2^64: wraps to 0 without a check
        put_u64(b, w["dims"][k], d)
    yield "dims_overflow.cnn", "FORMAT", ["'features.0.weight'", "shape [4294967296,4294967296,1,1]",
                                          "too many elements"], fix_crc(b)
    b = copy()
    for k, d in enumerate([2**62, 1, 1, 1]):       # product fits, product * 4 wraps to 0
        put_u64(b, w["dims"][k], d)
    yield "nbytes_overflow.cnn", "FORMAT", ["'features.0.weight'", "too many elements"], fix_crc(b)
    b = copy()
    for k, d in enumerate([4, 1, 300, 300]):       # fits 64 bits, not the file
        put_u64(b, w["dims"][k], d)
    yield "dims_exceed_file.cnn", "FORMAT", ["'features.0.weight'", "too many elements",
                                             "data section"], fix_crc(b)
    b = copy(); put_u64(b, w["nbytes"], 4 * 36 + 4)
    yield "nbytes_wrong.cnn", "FORMAT", ["'features.0.weight'", "nbytes is 148", "needs 144"], fix_crc(b)
    b = copy(); put_u64(b, w["offset"], u64(good, w["offset"]) + 4)
    yield "tensor_misaligned.cnn", "FORMAT", ["'features.0.weight'", "multiple of 64", "misaligned"], fix_crc(b)
    bias = tensor(good, "features.0.bias")
    b = copy(); put_u64(b, bias["offset"], u64(good, w["offset"]))
    yield "tensor_overlap.cnn", "FORMAT", ["tensor table", "overlaps", "features.0.weight",
                                           "features.0.bias"], fix_crc(b)
    b = copy(); put_u64(b, bias["offset"], u64(good, w["offset"]) + 64)
    yield "tensor_overlap_partial.cnn", "FORMAT", ["overlaps"], fix_crc(b)
    b = copy(); put_u64(b, w["offset"], 128)
    yield "tensor_before_data.cnn", "FORMAT", ["'features.0.weight'", "out of bounds of the data section"], fix_crc(b)
    data_off, data_size = section(good, "data")
    b = copy(); put_u64(b, bias["offset"], (data_off + data_size + 63) // 64 * 64)
    yield "tensor_after_data.cnn", "FORMAT", ["'features.0.bias'", "out of bounds of the data section"], fix_crc(b)
    b = copy(); put_u64(b, bias["offset"], 2**64 - 64)
    yield "tensor_offset_overflow.cnn", "FORMAT", ["'features.0.bias'", "out of bounds"], fix_crc(b)
    b = copy(); replace_in(b, "table", s("features.0.bias"), s("features.1.bias"))
    yield "tensor_dup_name.cnn", "FORMAT", ["'features.1.bias'", "duplicate tensor name"], fix_crc(b)

    # 5. Nodes (ModelWriter writes these; the CRC is right by construction).
    def bad_tiny(fname, words, variant, meta_override=None):
        return fname, "FORMAT", words, tiny(meta_override, variant).to_bytes()

    def at(layer, make):
        return lambda m, name: make(m) if name == layer else None

    yield bad_tiny("unknown_op.cnn", ["graph node 3 'features.2'", "unknown op 'conv3d'"],
                   at("features.2", lambda m: m.node("conv3d", "features.2", ["features.1"])))
    yield bad_tiny("dup_node_name.cnn", ["graph node 3 'features.1' (relu)", "duplicate name", "node 2"],
                   at("features.2", lambda m: m.node("relu", "features.1", ["features.1"])))
    yield bad_tiny("empty_node_name.cnn", ["graph node 3", "name is empty"],
                   at("features.2", lambda m: m.node("relu", "", ["features.1"])))
    yield bad_tiny("input_later.cnn", ["graph node 3 'features.2' (relu)", "'flatten' is node 5",
                                       "comes later"],
                   at("features.2", lambda m: m.node("relu", "features.2", ["flatten"])))
    yield bad_tiny("input_self.cnn", ["graph node 3 'features.2'", "itself"],
                   at("features.2", lambda m: m.node("relu", "features.2", ["features.2"])))
    yield bad_tiny("input_unknown.cnn", ["graph node 3 'features.2'", "'features.9' names no node"],
                   at("features.2", lambda m: m.node("relu", "features.2", ["features.9"])))
    yield bad_tiny("input_count.cnn", ["graph node 3 'features.2' (relu)", "has 2 inputs, expected 1"],
                   at("features.2", lambda m: m.node("relu", "features.2", ["features.1", "features.0"])))
    yield bad_tiny("add_one_input.cnn", ["'features.2' (add)", "has 1 inputs, expected 2"],
                   at("features.2", lambda m: m.node("add", "features.2", ["features.1"])))
    yield bad_tiny("first_not_input.cnn", ["graph node 0 'input' (relu)", "first node must be op 'input'"],
                   at("input", lambda m: m.node("relu", "input", [])))
    yield bad_tiny("first_misnamed.cnn", ["graph node 0 'image' (input)", "named 'input'"],
                   at("input", lambda m: m.node("input", "image", [])))
    yield bad_tiny("second_input.cnn", ["graph node 3 'features.2' (input)", "only be node 0"],
                   at("features.2", lambda m: m.node("input", "features.2", [])))

    def conv(**override):
        return at("features.0", lambda m: m.conv("features.0", "input", 4, 1, 3, pad=1, override=override))

    def conv_without(key):
        def make(m):
            name = m.conv("features.0", "input", 4, 1, 3, pad=1)
            m.w.nodes[-1][3].pop(key)
            return name
        return at("features.0", make)

    yield bad_tiny("conv_missing_stride.cnn", ["graph node 1 'features.0' (conv2d)",
                                               "missing attribute 'stride'", "int list [h, w]"],
                   conv_without("stride"))
    yield bad_tiny("conv_missing_weight.cnn", ["missing attribute 'weight'"], conv_without("weight"))
    yield bad_tiny("conv_missing_groups.cnn", ["missing attribute 'groups'"], conv_without("groups"))
    yield bad_tiny("conv_stride_int.cnn", ["'features.0' (conv2d)", "attribute 'stride' is an int",
                                           "expected an int list [h, w]"], conv(stride=1))
    yield bad_tiny("conv_stride_float.cnn", ["attribute 'stride' is a float list"], conv(stride=[1.5, 1.0]))
    yield bad_tiny("conv_padding_len.cnn", ["attribute 'padding' has 3 entries"], conv(padding=[1, 1, 1]))
    yield bad_tiny("conv_stride_zero.cnn", ["attribute 'stride' entry 0 is 0", "[1, 1048576]"],
                   conv(stride=[0, 1]))
    yield bad_tiny("conv_weight_not_string.cnn", ["attribute 'weight' is an int", "string naming a tensor"],
                   conv(weight=3))
    yield bad_tiny("conv_weight_missing_tensor.cnn", ["'features.0' (conv2d)", "names tensor 'nope'",
                                                      "not in the tensor table"], conv(weight="nope"))
    yield bad_tiny("conv_groups.cnn", ["attribute 'groups' is 3", "does not divide", "1 channels"],
                   conv(groups=3))

    def conv_weight(dims):
        def make(m):
            m.tensor("features.0.weight", dims)
            m.tensor("features.0.bias", [4])
            return m.node("conv2d", "features.0", ["input"], {
                "weight": "features.0.weight", "bias": "features.0.bias", "stride": [1, 1],
                "padding": [1, 1], "dilation": [1, 1], "groups": 1})
        return at("features.0", make)

    yield bad_tiny("conv_weight_shape.cnn", ["graph node 1 'features.0' (conv2d)",
                                             "weight 'features.0.weight' has shape [4,2,3,3]",
                                             "input has 1 channels", "expected [K,1,R,S]"],
                   conv_weight([4, 2, 3, 3]))
    yield bad_tiny("conv_weight_ndim.cnn", ["has shape [4,9]", "4 dims [K,C/groups,R,S]"],
                   conv_weight([4, 9]))
    yield bad_tiny("conv_bias_shape.cnn", ["bias 'features.1.bias' has shape [4], expected [5]"],
                   at("features.0", lambda m: m.conv("features.0", "input", 5, 1, 3, pad=1, with_bias=False,
                                                      override={"bias": "features.1.bias"})))
    yield bad_tiny("conv_empty_output.cnn", ["'features.0' (conv2d)", "output is empty", "kernel 11x11"],
                   at("features.0", lambda m: m.conv("features.0", "input", 4, 1, 11)))
    yield bad_tiny("bn_shape.cnn", ["graph node 2 'features.1' (batchnorm)",
                                    "running_var 'features.1.running_var' has shape [5], expected [4]"],
                   at("features.1", lambda m: m.bn("features.1", "features.0", 4, override={
                       "running_var": m.tensor("features.1.running_var", [5])})))
    yield bad_tiny("bn_eps_zero.cnn", ["attribute 'eps' is 0", "positive"],
                   at("features.1", lambda m: m.bn("features.1", "features.0", 4, override={"eps": 0.0})))
    yield bad_tiny("bn_eps_string.cnn", ["attribute 'eps' is a string, expected a float"],
                   at("features.1", lambda m: m.bn("features.1", "features.0", 4, override={"eps": "1e-5"})))
    yield bad_tiny("pool_padding.cnn", ["graph node 4 'features.3' (maxpool)", "padding <= kernel / 2"],
                   at("features.3", lambda m: m.maxpool("features.3", "features.2", 2, 2, 2)))
    yield bad_tiny("pool_ceil_mode.cnn", ["attribute 'ceil_mode' is 2", "[0, 1]"],
                   at("features.3", lambda m: m.maxpool("features.3", "features.2", 2, 2, ceil=2)))
    yield bad_tiny("pool_empty_output.cnn", ["'features.3' (maxpool)", "output is empty"],
                   at("features.3", lambda m: m.maxpool("features.3", "features.2", 16, 1)))
    yield bad_tiny("pool_stride_empty_list.cnn", ["attribute 'stride' has 0 entries"],
                   at("features.3", lambda m: m.node("maxpool", "features.3", ["features.2"], raw_dict([
                       ("kernel", [2, 2]), ("stride", Raw(b"\x04\x00\x00\x00\x00")), ("padding", [0, 0]),
                       ("dilation", [1, 1]), ("ceil_mode", 0)]))))
    yield bad_tiny("attr_dup_key.cnn", ["graph node 4 'features.3'", "attribute 'kernel' appears twice"],
                   at("features.3", lambda m: m.node("maxpool", "features.3", ["features.2"], raw_dict([
                       ("kernel", [2, 2]), ("kernel", [2, 2]), ("stride", [2, 2]), ("padding", [0, 0]),
                       ("dilation", [1, 1]), ("ceil_mode", 0)]))))
    yield bad_tiny("linear_in.cnn", ["graph node 6 'classifier' (linear)",
                                     "weight 'classifier.weight' has shape [3,60]",
                                     "input has 64 features", "expected [OUT,64]"],
                   at("classifier", lambda m: m.linear("classifier", "flatten", 3, 60)))
    yield bad_tiny("linear_no_flatten.cnn", ["'classifier' (linear)", "input 'flatten' is [4,4,4]",
                                             "flatten"],
                   at("flatten", lambda m: m.node("relu", "flatten", ["features.3"])))
    yield bad_tiny("class_count.cnn", ["graph", "last node 6 'classifier' (linear) outputs [3]",
                                       "expected [4]"], None, meta_override={"class_names": list("abcd")})
    yield bad_tiny("last_ndim4.cnn", ["last node 7 'extra' (relu) outputs [4,4,4]"],
                   at("end", lambda m: m.node("relu", "extra", ["features.3"])))
    yield bad_tiny("add_shapes.cnn", ["'extra' (add)", "'features.3' [4,4,4] and 'features.2' [4,8,8]",
                                      "different shapes"],
                   at("end", lambda m: m.node("add", "extra", ["features.3", "features.2"])))
    yield bad_tiny("softmax_ndim4.cnn", ["'extra' (softmax)", "expected [F] features"],
                   at("end", lambda m: m.node("softmax", "extra", ["features.3"])))
    yield bad_tiny("dropout_p.cnn", ["'extra' (dropout)", "attribute 'p' is 1.5"],
                   at("end", lambda m: m.node("dropout", "extra", ["classifier"], {"p": 1.5})))
    yield bad_tiny("shortcut_stride.cnn", ["'extra' (shortcut_a)", "attribute 'stride' is 0"],
                   at("end", lambda m: m.node("shortcut_a", "extra", ["features.3"],
                                              {"stride": 0, "pad_channels": [1, 1]})))
    yield bad_tiny("shortcut_pad.cnn", ["'extra' (shortcut_a)", "'pad_channels' entry 1 is -1"],
                   at("end", lambda m: m.node("shortcut_a", "extra", ["features.3"],
                                              {"stride": 2, "pad_channels": [1, -1]})))
    yield bad_tiny("adaptive_output.cnn", ["'extra' (adaptive_avgpool)", "'output' entry 0 is 0"],
                   at("end", lambda m: m.node("adaptive_avgpool", "extra", ["features.3"],
                                              {"output": [0, 1]})))

    # 3 again: the meta's keys.
    def bad_meta(fname, words, **override):
        return fname, "FORMAT", words, tiny(override).to_bytes()

    def without(key):
        def make(m):
            m.w.meta.pop(key)
        return make

    for key in ["name", "input_shape", "class_names", "std"]:
        yield ("meta_missing_%s.cnn" % key, "FORMAT", ["meta", "missing meta key '%s'" % key],
               tiny(variant=lambda m, name, key=key: without(key)(m) if name == "input" else None).to_bytes())
    yield bad_meta("meta_shape_type.cnn", ["meta key 'input_shape' is a string", "int list [C, H, W]"],
                   input_shape="1,8,8")
    yield bad_meta("meta_channels.cnn", ["meta key 'input_shape' is [2, 8, 8]", "C is 2"],
                   input_shape=[2, 8, 8], mean=[0.5, 0.5], std=[0.5, 0.5])
    yield bad_meta("meta_height.cnn", ["'input_shape' entry 1 is 5000", "[1, 4096]"],
                   input_shape=[1, 5000, 8], crop=[5000, 8])
    yield bad_meta("meta_crop.cnn", ["meta key 'crop' is [7, 8]", "[1, 8, 8]"], crop=[7, 8])
    yield bad_meta("meta_mean_count.cnn", ["meta key 'mean' has 2 entries", "expected C = 1"], mean=[0.5, 0.5])
    yield bad_meta("meta_std_zero.cnn", ["meta key 'std' entry 0 is 0", "non-zero"], std=[0])
    yield bad_meta("meta_std_inf.cnn", ["meta key 'std' entry 0 is inf", "finite"], std=[float("inf")])
    yield bad_meta("meta_resize.cnn", ["meta key 'resize' is -1"], resize=-1)
    yield bad_meta("meta_classes_type.cnn", ["meta key 'class_names' is a string, expected a string list"],
                   class_names="cat")
    m = tiny()
    m.w.meta = raw_dict([(k, Raw(b"\x06\x00\x00\x00\x00") if k == "class_names" else v)
                         for k, v in m.w.meta.items()])
    yield "meta_classes_empty.cnn", "FORMAT", ["meta key 'class_names' is empty"], m.to_bytes()

def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_model_fixtures.py OUT_DIR")
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "good"), exist_ok=True)
    os.makedirs(os.path.join(out, "bad"), exist_ok=True)
    for name, model in [("tiny", tiny()), ("residual", residual()), ("shortcut", shortcut()),
                        ("names", names()), ("no_tensors", no_tensors())]:
        model.w.write(os.path.join(out, "good", name + ".cnn"))
    lines = []
    seen = set()
    for fname, status, words, blob in bad_cases():
        assert fname not in seen, fname
        seen.add(fname)
        with open(os.path.join(out, "bad", fname), "wb") as f:
            f.write(bytes(blob))
        assert all("|" not in w and "\t" not in w for w in words), words
        lines.append("%s\t%s\t%s\n" % (fname, status, "|".join(words)))
    with open(os.path.join(out, "bad", "cases.tsv"), "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()
