"""cnnfile.py - writes cnnscope model files (weights/FORMAT.md, version 1).

Python standard library only. Used by convert.py and by tests that build small models.

    w = ModelWriter({"name": "tiny", "arch": "tiny", "input_shape": [1, 4, 4], "resize": 0,
                     "crop": [4, 4], "mean": [0.5], "std": [0.25], "class_names": ["a", "b"]})
    w.add_tensor("fc.weight", [2, 16], float_bytes)       # little-endian float32 bytes
    w.add_node("input", "input", [], {})
    w.add_node("flatten", "flatten", ["input"], {})
    w.add_node("linear", "fc", ["flatten"], {"weight": "fc.weight"})
    w.write("tiny.cnn")                                   # atomic: temporary name, then rename
"""
import os
import struct
import zlib

MAGIC = b"CNNSCOPE"
VERSION = 1
HEADER_SIZE = 128
ALIGN = 64
DTYPE_F32 = 1

T_INT, T_FLOAT, T_STR, T_INTS, T_FLOATS, T_STRS = 1, 2, 3, 4, 5, 6


def _str(s):
    b = s.encode("utf-8")
    return struct.pack("<I", len(b)) + b


def _value(v):
    """Encodes one attribute or meta value; its type follows from the Python type."""
    if isinstance(v, bool) or isinstance(v, int):
        return struct.pack("<Bq", T_INT, int(v))
    if isinstance(v, float):
        return struct.pack("<Bd", T_FLOAT, v)
    if isinstance(v, str):
        return struct.pack("<B", T_STR) + _str(v)
    if isinstance(v, (list, tuple)) and v:
        if all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return struct.pack("<BI", T_INTS, len(v)) + struct.pack("<%dq" % len(v), *v)
        if all(isinstance(x, (int, float)) for x in v):
            return struct.pack("<BI", T_FLOATS, len(v)) + struct.pack("<%dd" % len(v), *map(float, v))
        if all(isinstance(x, str) for x in v):
            return struct.pack("<BI", T_STRS, len(v)) + b"".join(_str(x) for x in v)
    raise ValueError("cannot encode value %r (int, float, str or a non-empty list of one of them)" % (v,))


def _dict(d):
    return struct.pack("<I", len(d)) + b"".join(_str(k) + _value(v) for k, v in d.items())


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


class ModelWriter:
    def __init__(self, meta):
        self.meta = dict(meta)
        self.nodes = []      # (op, name, inputs, attrs)
        self.tensors = []    # (name, dims, bytes)
        self._tensor_names = set()

    def add_tensor(self, name, dims, data):
        dims = [int(d) for d in dims]
        count = 1
        for d in dims:
            count *= d
        if len(data) != 4 * count:
            raise ValueError("tensor %s: %d bytes for shape %s (expected %d)" % (name, len(data), dims, 4 * count))
        if name in self._tensor_names:
            raise ValueError("tensor %s added twice" % name)
        self._tensor_names.add(name)
        self.tensors.append((name, dims, data))

    def add_node(self, op, name, inputs, attrs):
        self.nodes.append((op, name, list(inputs), dict(attrs)))

    def to_bytes(self):
        meta = _dict(self.meta)
        graph = struct.pack("<I", len(self.nodes))
        for op, name, inputs, attrs in self.nodes:
            graph += _str(op) + _str(name) + struct.pack("<I", len(inputs))
            graph += b"".join(_str(i) for i in inputs) + _dict(attrs)

        meta_off = HEADER_SIZE
        graph_off = meta_off + len(meta)
        table_off = graph_off + len(graph)
        # The table's size does not depend on the offsets it holds, so measure it first.
        table_size = 4 + sum(len(_str(n)) + 2 + 8 * len(d) + 16 for n, d, _ in self.tensors)
        data_off = _align(table_off + table_size)

        table = struct.pack("<I", len(self.tensors))
        data = bytearray()
        for name, dims, raw in self.tensors:
            data += b"\0" * (_align(len(data)) - len(data))
            table += _str(name) + struct.pack("<BB", DTYPE_F32, len(dims))
            table += struct.pack("<%dQ" % len(dims), *dims)
            table += struct.pack("<QQ", data_off + len(data), len(raw))
            data += raw
        assert len(table) == table_size

        body = bytearray()
        body += struct.pack("<Q", data_off + len(data))                    # file size
        body += struct.pack("<QQQQQQQQ", meta_off, len(meta), graph_off, len(graph),
                            table_off, len(table), data_off, len(data))
        body += b"\0" * (HEADER_SIZE - 16 - len(body))
        body += meta + graph + table
        body += b"\0" * (data_off - 16 - len(body))
        body += data
        crc = zlib.crc32(body) & 0xFFFFFFFF
        return MAGIC + struct.pack("<II", VERSION, crc) + bytes(body)

    def write(self, path):
        blob = self.to_bytes()
        tmp = "%s.tmp.%d" % (path, os.getpid())
        try:
            with open(tmp, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
