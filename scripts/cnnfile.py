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

    def _chunks(self):
        """The file from offset 16 (after magic, version and CRC) as a list of byte strings;
        tensor data is referenced, not copied, so large models are not held twice."""
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
        data = []            # alignment padding and tensor bytes, in file order
        data_size = 0
        for name, dims, raw in self.tensors:
            pad = _align(data_size) - data_size
            if pad:
                data.append(b"\0" * pad)
            data_size += pad
            table += _str(name) + struct.pack("<BB", DTYPE_F32, len(dims))
            table += struct.pack("<%dQ" % len(dims), *dims)
            table += struct.pack("<QQ", data_off + data_size, len(raw))
            data.append(raw)
            data_size += len(raw)
        assert len(table) == table_size

        head = bytearray()
        head += struct.pack("<Q", data_off + data_size)                    # file size
        head += struct.pack("<QQQQQQQQ", meta_off, len(meta), graph_off, len(graph),
                            table_off, len(table), data_off, data_size)
        head += b"\0" * (HEADER_SIZE - 16 - len(head))
        head += meta + graph + table
        head += b"\0" * (data_off - 16 - len(head))
        return [bytes(head)] + data

    def _crc_and_chunks(self):
        chunks = self._chunks()
        crc = 0
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
        return MAGIC + struct.pack("<II", VERSION, crc & 0xFFFFFFFF), chunks

    def to_bytes(self):
        start, chunks = self._crc_and_chunks()
        return start + b"".join(chunks)

    def write(self, path):
        start, chunks = self._crc_and_chunks()
        tmp = "%s.tmp.%d" % (path, os.getpid())
        try:
            with open(tmp, "wb") as f:
                f.write(start)
                for chunk in chunks:
                    f.write(chunk)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

class _Cursor:
    """Reads FORMAT.md primitives from one section, naming the section in every error."""

    def __init__(self, blob, start, size, path, section):
        self.blob, self.pos, self.end = blob, start, start + size
        self.path, self.section = path, section

    def fail(self, what):
        raise ValueError("%s: %s section at byte %d: %s"
                         % (self.path, self.section, self.pos, what))

    def take(self, n):
        if self.pos + n > self.end:
            self.fail("record runs past the end of the section")
        out = self.blob[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def str(self):
        (n,) = self.unpack("I")
        if n > 4096:
            self.fail("string of %d bytes (limit 4096)" % n)
        raw = self.take(n)
        if b"\0" in raw:
            self.fail("string with a NUL byte")
        return raw.decode("utf-8")

    def value(self):
        (kind,) = self.unpack("B")
        if kind == T_INT:
            return self.unpack("q")[0]
        if kind == T_FLOAT:
            return self.unpack("d")[0]
        if kind == T_STR:
            return self.str()
        if kind in (T_INTS, T_FLOATS, T_STRS):
            (count,) = self.unpack("I")
            if count > (100000 if kind == T_STRS else 64):
                self.fail("list of %d entries is too long" % count)
            if kind == T_INTS:
                return list(self.unpack("%dq" % count))
            if kind == T_FLOATS:
                return list(self.unpack("%dd" % count))
            return [self.str() for _ in range(count)]
        self.fail("unknown value type %d" % kind)

    def dict(self):
        (count,) = self.unpack("I")
        if count > 256:
            self.fail("dict of %d entries (limit 256)" % count)
        out = {}
        for _ in range(count):
            key = self.str()
            if key in out:
                self.fail("duplicate key '%s'" % key)
            out[key] = self.value()
        return out

    def done(self):
        if self.pos != self.end:
            self.fail("%d bytes left over after the last record" % (self.end - self.pos))


def read_model(path):
    """Parses a model file and checks its framing (magic, version, size, CRC, sections,
    tensor placement). Returns a dict:
        meta:    {key: value}
        nodes:   [(op, name, inputs, attrs)] in file order
        tensors: {name: (dims, little-endian float32 bytes)} in file order
    Raises ValueError naming the file and the problem. Graph semantics (ops, shapes) are the
    engine's loader's business; this reader is for tests and tools."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < HEADER_SIZE or blob[:8] != MAGIC:
        raise ValueError("%s: not a cnnscope model file (no magic)" % path)
    version, crc = struct.unpack("<II", blob[8:16])
    if version != VERSION:
        raise ValueError("%s: format version %d, expected %d" % (path, version, VERSION))
    fields = struct.unpack("<9Q", blob[16:88])
    if fields[0] != len(blob):
        raise ValueError("%s: size field %d, real size %d" % (path, fields[0], len(blob)))
    if zlib.crc32(blob[16:]) & 0xFFFFFFFF != crc:
        raise ValueError("%s: CRC-32 mismatch" % path)
    if any(blob[88:HEADER_SIZE]):
        raise ValueError("%s: reserved header bytes are not zero" % path)
    sections = {}
    previous_end = HEADER_SIZE
    for i, section in enumerate(("meta", "graph", "tensor table", "data")):
        off, size = fields[1 + 2 * i], fields[2 + 2 * i]
        if off < previous_end or off + size > len(blob):
            raise ValueError("%s: %s section [%d, +%d) out of order or out of bounds"
                             % (path, section, off, size))
        sections[section] = (off, size)
        previous_end = off + size
    data_off, data_size = sections["data"]
    if data_off % ALIGN:
        raise ValueError("%s: data section at %d is not %d-aligned" % (path, data_off, ALIGN))

    cur = _Cursor(blob, *sections["meta"], path=path, section="meta")
    meta = cur.dict()
    cur.done()

    cur = _Cursor(blob, *sections["graph"], path=path, section="graph")
    (count,) = cur.unpack("I")
    nodes = []
    for _ in range(count):
        op, name = cur.str(), cur.str()
        (n_inputs,) = cur.unpack("I")
        inputs = [cur.str() for _ in range(n_inputs)]
        nodes.append((op, name, inputs, cur.dict()))
    cur.done()

    cur = _Cursor(blob, *sections["tensor table"], path=path, section="tensor table")
    (count,) = cur.unpack("I")
    tensors = {}
    spans = []
    for _ in range(count):
        name = cur.str()
        dtype, ndim = cur.unpack("BB")
        if dtype != DTYPE_F32 or not 1 <= ndim <= 4:
            cur.fail("tensor '%s': dtype %d, ndim %d" % (name, dtype, ndim))
        dims = list(cur.unpack("%dQ" % ndim))
        offset, nbytes = cur.unpack("QQ")
        expected = 4
        for d in dims:
            expected *= d
        if (nbytes != expected or offset % ALIGN or offset < data_off
                or offset + nbytes > data_off + data_size or name in tensors):
            cur.fail("tensor '%s': dims %s at %d, %d bytes: misplaced, wrong size or duplicate"
                     % (name, dims, offset, nbytes))
        tensors[name] = (dims, blob[offset:offset + nbytes])
        spans.append((offset, offset + nbytes, name))
    cur.done()
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise ValueError("%s: tensors '%s' and '%s' overlap" % (path, a, b))
    return {"meta": meta, "nodes": nodes, "tensors": tensors}
