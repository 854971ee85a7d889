#!/usr/bin/env python3
"""convert.py - PyTorch checkpoints to the cnnscope model file (weights/FORMAT.md).

Python 3 standard library only: it never imports torch or numpy, and it never runs code from
the checkpoint.

Usage:
    scripts/convert.py IN.(pth|th|pt|safetensors) [--arch A] -o OUT.cnn [--name NAME]
        [--classes a,b,c | --classes-file F] [--mean m1,m2,m3] [--std s1,s2,s3]
        [--input-size C,H,W] [--resize N]

    scripts/convert.py resnet18-f37072fd.pth -o weights/resnet18.cnn
    scripts/convert.py ../shared/data/cifar10/resnet20-12fca82f.th -o weights/resnet20.cnn
    scripts/convert.py fashion.pth -o fashion.cnn --name fashion_resnet --input-size 1,28,28 \\
        --mean 0.286 --std 0.353 --classes-file fashion_classes.txt
    scripts/convert.py build/fashion_vgg.pth --arch fashion_vgg -o weights/fashion_vgg.cnn \\
        --input-size 1,28,28 --mean 0.2860 --std 0.3530 --classes-file fashion_classes.txt

Input formats (detected from the bytes, not the file name):
  - zip: torch.save's default since PyTorch 1.6 (<dir>/data.pkl, <dir>/data/<key>, and an
    optional <dir>/byteorder);
  - legacy: torch.save(..., _use_new_zipfile_serialization=False) and every PyTorch before 1.6
    (magic-number pickle, protocol version, sys_info, the object pickle, the list of storage
    keys, then per storage a u64 element count and the raw bytes);
  - safetensors: u64 header length, JSON header, raw data.
  Tensors may be float32, float16, bfloat16 or float64 (converted to float32), may start at
  any offset into their storage and may have any strides (they are gathered). Integer tensors
  (num_batches_tracked) are read and ignored.

Safety: pickles are read with a restricted unpickler whose allow-list maps the few globals a
state dict needs (collections.OrderedDict, torch._utils._rebuild_tensor[_v2|_v3],
torch._utils._rebuild_parameter[_with_state], torch.*Storage, torch dtypes, torch.Size, set,
and inert placeholders for numpy scalars and argparse.Namespace that may sit beside the
weights) to stand-in functions defined here. Any other global is refused before anything
runs: "refusing to load global 'os.system' ...". A whole pickled nn.Module or a TorchScript
archive is therefore refused: save model.state_dict() instead.

The state dict is found at the top level or under 'state_dict', 'model_state_dict' or 'model'
(at any depth); other entries (best_prec1, optimizer, epoch ...) are ignored, and a
DataParallel 'module.' prefix is removed.

Architectures (detected from the keys and shapes, or named with --arch):
  alexnet; vgg11, vgg13, vgg16, vgg19 and their _bn variants; resnet18, resnet34 (BasicBlock),
  resnet50, resnet101, resnet152 (Bottleneck, stride on the 3x3 conv as in torchvision);
  cifar_resnet20/32/44/56/110 (He et al. 2016 sec. 4.2: 3 stages of n blocks, option-A
  shortcut, 'linear' head; any depth 6n+2 is accepted); fashion_alexnet and fashion_vgg, the
  small AlexNet- and VGG-style default models of scripts/train_fashion.py (torchvision's
  layout and names: features.N, avgpool = AdaptiveAvgPool2d(3), classifier.N; fashion_alexnet:
  convs 7x7/5x5/3x3/3x3 at features.0,3,6,8 with 2x2 max pools at features.2,5,10 and
  classifier as alexnet's; fashion_vgg: 3 stages of two 3x3 conv + batchnorm + relu and a 2x2
  max pool, classifier dropout, linear, relu, dropout, linear). Op attributes are torchvision
  0.14's.
  Node names are the module paths whose output the node computes (features.3, layer2.0.conv1,
  layer2.0.relu.1 for a module's second call); nodes without a module are 'input', 'flatten',
  'layerS.B.add' (the residual sum) and 'layerS.B' (the block's final relu, its output).

Checks: every key the architecture expects is present, floating point, and has exactly the
expected shape; no unexpected key remains (num_batches_tracked excepted). Channel counts are
read from the weights and checked for consistency from layer to layer, so a model with one
input channel, another class count or narrower layers converts, while kernel sizes, strides,
layer and block counts are fixed by the architecture. The input has 1 or 3 channels, mean
and std have one entry per channel, and there is one class name per output of the last layer.

Metadata: ImageNet models get resize 256, crop and input 224x224, the ImageNet mean/std and
torchvision's 1000 class names (scripts/imagenet_classes.txt); CIFAR ResNets get input 32x32,
no resize, the same mean/std (that is how the published CIFAR-10 checkpoints were trained) and
the ten CIFAR-10 class names (default names only for 3-channel models); fashion_alexnet and
fashion_vgg get input 28x28 and no resize (give --mean, --std and --classes). --name,
--classes/--classes-file, --mean, --std, --input-size and --resize override them. 'source'
records the input file's name.

The output is written atomically (temporary file, then rename). Every error prints one line,
"convert.py: FILE: problem", on stderr and exits with status 2.
"""
import argparse
import collections
import io
import itertools
import json
import os
import pickle
import pickletools
import struct
import sys
import zipfile
import zlib
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cnnfile import ModelWriter  # noqa: E402

PROG = "convert.py"
HERE = os.path.dirname(os.path.abspath(__file__))

LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL_VERSION = 1001

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]


class ConvertError(Exception):
    """A problem with the input or the options; main() prints it as one line and exits 2."""


# ----------------------------------------------------------------------------------------
# Element types

# dtype name -> bytes per element
ITEMSIZE = {
    "float32": 4, "float16": 2, "bfloat16": 2, "float64": 8,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
    "complex64": 8, "complex128": 16,
}
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")

# torch.<Name>Storage (legacy and typed storages) -> dtype
STORAGE_DTYPES = {
    "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "DoubleStorage": "float64", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}

# torch.<dtype> globals (torch >= 2.1 pickles the dtype beside an untyped storage) -> dtype
TORCH_DTYPES = {
    "float32": "float32", "float": "float32", "float16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "float64": "float64", "double": "float64",
    "int64": "int64", "long": "int64", "int32": "int32", "int": "int32",
    "int16": "int16", "short": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool",
    "complex64": "complex64", "complex128": "complex128",
}

SAFETENSORS_DTYPES = {
    "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
    "BOOL": "bool",
}

_CAST_CODE = {1: "B", 2: "H", 4: "I", 8: "Q"}   # memoryview formats for gathering raw elements
_CHUNK = 1 << 20                                 # elements converted per struct call


def to_float32_le(raw, dtype, big_endian):
    """Packed elements of a floating dtype (in the checkpoint's byte order) -> little-endian
    float32 bytes."""
    if dtype == "float32":
        if not big_endian:
            return bytes(raw)
        swapped = array("f")
        swapped.frombytes(raw)
        swapped.byteswap()      # a pure byte permutation, whatever the host's order
        return swapped.tobytes()
    if dtype == "bfloat16":
        # bfloat16 is the high half of a float32: put its two bytes above two zero bytes.
        low, high = (raw[1::2], raw[0::2]) if big_endian else (raw[0::2], raw[1::2])
        out = bytearray(2 * len(raw))
        out[2::4] = low
        out[3::4] = high
        return bytes(out)
    code = {"float16": "e", "float64": "d"}[dtype]
    size = ITEMSIZE[dtype]
    order = ">" if big_endian else "<"
    count = len(raw) // size
    out = bytearray()
    for first in range(0, count, _CHUNK):
        n = min(_CHUNK, count - first)
        values = struct.unpack("%s%d%s" % (order, n, code), raw[first * size:(first + n) * size])
        try:
            out += struct.pack("<%df" % n, *values)
        except (OverflowError, struct.error):
            raise ConvertError("a %s value is outside the float32 range" % dtype)
    return bytes(out)


# ----------------------------------------------------------------------------------------
# Stand-ins for the objects a checkpoint pickle builds

class StorageType:
    """Stands in for torch.FloatStorage & co.: only names an element type."""

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return "torch.%s" % self.name


class DType:
    """Stands in for a torch dtype object such as torch.float32."""

    def __init__(self, dtype):
        self.dtype = dtype


class Storage:
    """A run of bytes in the checkpoint: `nbytes` bytes at byte `base` of a root storage whose
    data is loaded on first use by `loader` (a view shares its root's data)."""

    def __init__(self, dtype, nbytes, label, loader=None, root=None, base=0):
        self.dtype, self.nbytes, self.label = dtype, nbytes, label
        self.loader, self.root, self.base = loader, root, base
        self._data = None

    def __setstate__(self, state):
        raise ConvertError("bad pickle: it sets state on a storage")

    def data(self):
        """The bytes of this storage (of its view window)."""
        if self.root is not None:
            whole = self.root.data()
            return whole[self.base:self.base + self.nbytes]
        if self._data is None:
            if self.loader is None:
                raise ConvertError("storage '%s' is referenced but its data is not in the file"
                                   % self.label)
            self._data = self.loader()
            if len(self._data) != self.nbytes:
                raise ConvertError("storage '%s' holds %d bytes, expected %d"
                                   % (self.label, len(self._data), self.nbytes))
        return self._data


def _ints(value, what):
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConvertError("bad tensor record: %s is %r, expected a tuple of ints" % (what, value))
    return tuple(value)


class Tensor:
    """A tensor as torch._utils._rebuild_tensor describes it: `size` elements of `dtype` laid
    out with `stride` (in elements) from element `offset` of `storage`. Data is read lazily."""

    def __init__(self, storage, offset, size, stride, dtype=None):
        if not isinstance(storage, Storage):
            raise ConvertError("bad tensor record: its storage is a %s" % type(storage).__name__)
        if not isinstance(offset, int) or offset < 0:
            raise ConvertError("bad tensor record: storage offset %r" % (offset,))
        self.storage = storage
        self.offset = offset
        self.shape = _ints(size, "size")
        self.stride = _ints(stride, "stride")
        self.dtype = dtype or storage.dtype
        if len(self.shape) != len(self.stride) or min(self.shape + self.stride + (0,)) < 0:
            raise ConvertError("bad tensor record: size %s with stride %s"
                               % (list(self.shape), list(self.stride)))

    def __setstate__(self, state):
        raise ConvertError("bad pickle: it sets state on a tensor")

    def numel(self):
        n = 1
        for d in self.shape:
            n *= d
        return n

    def raw_bytes(self, name):
        """The tensor's elements packed in row-major order, still in the checkpoint's dtype and
        byte order. Contiguous tensors are one slice; others are gathered row by row."""
        size = ITEMSIZE[self.dtype]
        count = self.numel()
        if count == 0:
            return b""
        span = 1 + sum((d - 1) * s for d, s in zip(self.shape, self.stride))
        data = self.storage.data()
        if (self.offset + span) * size > len(data):
            raise ConvertError("tensor '%s' (shape %s, stride %s, offset %d) reaches past the end "
                               "of its storage '%s' (%d bytes)"
                               % (name, list(self.shape), list(self.stride), self.offset,
                                  self.storage.label, len(data)))
        window = data[self.offset * size:(self.offset + span) * size]
        if self._is_contiguous():
            return window
        elements = memoryview(window).cast(_CAST_CODE[size])
        rows = []
        row_len, row_step = self.shape[-1], self.stride[-1]
        for index in itertools.product(*(range(d) for d in self.shape[:-1])):
            start = sum(i * s for i, s in zip(index, self.stride))
            if row_step == 0:   # an expanded (broadcast) axis
                rows.append(elements[start:start + 1].tobytes() * row_len)
            else:
                rows.append(elements[start:start + (row_len - 1) * row_step + 1:row_step].tobytes())
        return b"".join(rows)

    def _is_contiguous(self):
        expected = 1
        for d, s in zip(reversed(self.shape), reversed(self.stride)):
            if d != 1 and s != expected:
                return False
            expected *= d
        return True


def _rebuild_tensor(storage, storage_offset, size, stride):
    return Tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return Tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    if not isinstance(dtype, DType):
        raise ConvertError("bad tensor record: dtype %r" % (dtype,))
    return Tensor(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data


def _torch_size(dims=()):
    return tuple(dims)


def _codecs_encode(text, encoding="utf-8"):
    """Protocol-2 pickles of bytes objects call _codecs.encode(str, 'latin1')."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ConvertError("refusing _codecs.encode(%r, %r) in the pickle" % (type(text), encoding))
    return text.encode("latin1")


class Ignored:
    """An inert placeholder for harmless non-tensor extras (numpy scalars, argparse.Namespace
    of training options): accepts any arguments and state, runs nothing, holds nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return Ignored()


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): Ignored,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("argparse", "Namespace"): Ignored,
    ("numpy", "dtype"): Ignored,
    ("numpy", "ndarray"): Ignored,
    ("numpy.core.multiarray", "scalar"): Ignored,
    ("numpy.core.multiarray", "_reconstruct"): Ignored,
    ("numpy._core.multiarray", "scalar"): Ignored,
    ("numpy._core.multiarray", "_reconstruct"): Ignored,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals, to the stand-ins above; refuses everything else
    before it can be called. Storage records (persistent ids) go to `on_storage`."""

    def __init__(self, file, on_storage=None):
        super().__init__(file, encoding="utf-8")
        self.on_storage = on_storage

    def find_class(self, module, name):
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        if module in ("torch", "torch.storage", "torch.cuda") and name in STORAGE_DTYPES:
            return StorageType(name, STORAGE_DTYPES[name])
        if module == "torch" and name in TORCH_DTYPES:
            return DType(TORCH_DTYPES[name])
        raise ConvertError("refusing to load global '%s.%s' (not a tensor or container type); "
                           "this checkpoint may be malicious" % (module, name))

    def persistent_load(self, pid):
        if self.on_storage is None:
            raise ConvertError("unexpected persistent id %r in a header pickle" % (pid,))
        if not isinstance(pid, tuple) or not pid:
            raise ConvertError("bad persistent id %r" % (pid,))
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage" or len(pid) not in (5, 6):
            raise ConvertError("unsupported persistent id %r (only tensor storages can be loaded; "
                               "save model.state_dict(), not the model)" % (pid[:1],))
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, StorageType):
            raise ConvertError("bad storage record: type %r" % (storage_type,))
        if isinstance(key, bytes):
            key = key.decode("ascii")
        if not isinstance(numel, int) or numel < 0:
            raise ConvertError("bad storage record: element count %r" % (numel,))
        return self.on_storage(storage_type.dtype, str(key), numel, view)


def check_pickle_lengths(file, what):
    """Walks the pickle's opcodes once without running them, so that an argument that claims
    more bytes than the file holds (a string or bytes length of 4 GB in a 1 MB file) or a memo
    index far beyond the entries so far is refused here: the C unpickler would allocate the
    claimed size first, and a hostile checkpoint could make it take all the memory (found by
    tests/fuzz/fuzz_convert.py). Rewinds the file."""
    start = file.tell()
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(file)):
            # The C unpickler's memo is an array indexed by these numbers: a PUT to 2**30
            # would grow it to gigabytes. pickle numbers its memo entries 0, 1, 2, ... so an
            # index beyond the opcodes seen so far never comes from a real checkpoint.
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= int(arg) <= count:
                raise ConvertError("cannot read %s: memo index %s at opcode %d (a pickle numbers "
                                   "them from 0)" % (what, arg, count))
    except (ValueError, EOFError) as e:   # genops reads each argument with a bounded read()
        raise ConvertError("cannot read %s: %s" % (what, e))
    file.seek(start)


def unpickle(file, on_storage=None, what="the pickle"):
    try:
        check_pickle_lengths(file, what)
        return RestrictedUnpickler(file, on_storage).load()
    except ConvertError:
        raise
    except EOFError:
        raise ConvertError("truncated file: %s ends early" % what)
    except Exception as e:   # the pickle machinery raises many kinds on damaged input
        raise ConvertError("cannot read %s: %s: %s" % (what, type(e).__name__, e))


# ----------------------------------------------------------------------------------------
# Readers: each returns the unpickled checkpoint object (tensors are lazy Tensor objects)

# What zipfile raises on a damaged archive besides BadZipFile (found by fuzzing: a mutated
# "version needed to extract" gives NotImplementedError; bad headers give struct.error).
ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
              RuntimeError, OverflowError, struct.error, zlib.error)


def read_zip(path):
    try:
        archive = zipfile.ZipFile(path)
        names = archive.namelist()
    except ZIP_ERRORS as e:
        raise ConvertError("truncated or damaged zip archive (%s)" % e)
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        raise ConvertError("this is a TorchScript archive (torch.jit.save); "
                           "save model.state_dict() with torch.save instead")
    pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise ConvertError("zip archive without exactly one <dir>/data.pkl: not a torch.save "
                           "checkpoint")
    prefix = pickles[0][:-len("data.pkl")]

    def read_member(member):
        try:
            return archive.read(member)
        except KeyError:
            raise ConvertError("zip archive has no member '%s'" % member)
        except ZIP_ERRORS as e:
            raise ConvertError("damaged zip member '%s' (%s)" % (member, e))

    big_endian = False
    if prefix + "byteorder" in names:
        order = read_member(prefix + "byteorder").strip()
        if order not in (b"little", b"big"):
            raise ConvertError("unknown byteorder %r" % order)
        big_endian = order == b"big"

    storages = {}

    def on_storage(dtype, key, numel, view):
        if key not in storages:
            member = prefix + "data/" + key
            storages[key] = Storage(dtype, numel * ITEMSIZE[dtype], member,
                                    loader=lambda member=member: read_member(member))
        return storages[key]

    obj = unpickle(io.BytesIO(read_member(pickles[0])), on_storage, "the pickle " + pickles[0])
    return obj, big_endian


def read_legacy(path):
    """torch.save(..., _use_new_zipfile_serialization=False): a stream of pickles, then the
    storages' bytes in the order the key list gives (each: u64 element count, then the data,
    always little-endian)."""
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        magic = unpickle(f, None, "the magic number")
        if magic != LEGACY_MAGIC_NUMBER:
            raise ConvertError("a pickle, but not a torch.save checkpoint (no magic number)")
        version = unpickle(f, None, "the protocol version")
        if version != LEGACY_PROTOCOL_VERSION:
            raise ConvertError("unsupported legacy protocol version %r (expected %d)"
                               % (version, LEGACY_PROTOCOL_VERSION))
        sys_info = unpickle(f, None, "sys_info")
        if not isinstance(sys_info, dict):
            raise ConvertError("bad sys_info record")

        roots = {}      # key -> root Storage
        views = {}      # view key -> Storage

        def on_storage(dtype, key, numel, view):
            size = ITEMSIZE[dtype]
            if key not in roots:
                roots[key] = Storage(dtype, numel * size, key)
            if view is None:
                return roots[key]
            if not (isinstance(view, tuple) and len(view) == 3
                    and all(isinstance(v, int) for v in view[1:])):
                raise ConvertError("bad storage view record %r" % (view,))
            view_key, offset, view_numel = view
            if view_key not in views:
                views[view_key] = Storage(dtype, view_numel * size, str(view_key),
                                          root=roots[key], base=offset * size)
            return views[view_key]

        obj = unpickle(f, on_storage, "the object pickle")
        keys = unpickle(f, None, "the storage key list")
        if not isinstance(keys, (list, tuple)):
            raise ConvertError("bad storage key list")
        for key in keys:
            key = str(key)
            header = f.read(8)
            if len(header) < 8:
                raise ConvertError("truncated file: the data of storage '%s' is missing" % key)
            (numel,) = struct.unpack("<Q", header)
            if key not in roots:
                raise ConvertError("storage key list names '%s', which no tensor uses" % key)
            storage = roots[key]
            nbytes = numel * ITEMSIZE[storage.dtype]
            if nbytes != storage.nbytes:
                raise ConvertError("storage '%s' has %d elements in the data but %d in its record"
                                   % (key, numel, storage.nbytes // ITEMSIZE[storage.dtype]))
            if f.tell() + nbytes > file_size:
                raise ConvertError("truncated file: storage '%s' needs %d bytes, %d remain"
                                   % (key, nbytes, file_size - f.tell()))
            data = f.read(nbytes)
            if len(data) < nbytes:
                raise ConvertError("truncated file: storage '%s' needs %d bytes, %d remain"
                                   % (key, nbytes, len(data)))
            storage.loader = lambda data=data: data
        for view in views.values():
            if view.base + view.nbytes > view.root.nbytes:
                raise ConvertError("storage view '%s' reaches past its root storage" % view.label)
    return obj, False


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ConvertError("truncated file: no safetensors header")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > len(blob) - 8:
        raise ConvertError("truncated file: the safetensors header needs %d bytes, %d remain"
                           % (header_len, len(blob) - 8))
    try:
        header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConvertError("bad safetensors header (%s)" % e)
    if not isinstance(header, dict):
        raise ConvertError("bad safetensors header: not a JSON object")
    data = memoryview(blob)[8 + header_len:]
    tensors = collections.OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise ConvertError("safetensors entry '%s': needs dtype, shape, data_offsets" % name)
        if dtype_name not in SAFETENSORS_DTYPES:
            raise ConvertError("safetensors entry '%s': unsupported dtype %r" % (name, dtype_name))
        dtype = SAFETENSORS_DTYPES[dtype_name]
        shape = _ints(shape, "shape of '%s'" % name)
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            raise ConvertError("safetensors entry '%s': bad data_offsets" % name)
        if end > len(data):
            raise ConvertError("truncated file: tensor '%s' needs data up to byte %d, the file has "
                               "%d" % (name, end, len(data)))
        count = 1
        for d in shape:
            count *= d
        if (end - begin) != count * ITEMSIZE[dtype]:
            raise ConvertError("safetensors entry '%s': %d bytes for shape %s of %s"
                               % (name, end - begin, list(shape), dtype_name))
        stride, step = [], 1
        for d in reversed(shape):
            stride.insert(0, step)
            step *= d
        storage = Storage(dtype, end - begin, name,
                          loader=lambda b=begin, e=end: bytes(data[b:e]))
        tensors[name] = Tensor(storage, 0, shape, stride)
    return tensors, False


def read_checkpoint(path):
    """Returns (object, big_endian) after detecting the format from the file's first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise ConvertError("cannot read: %s" % (e.strerror or e))
    if not head:
        raise ConvertError("empty file: not a PyTorch checkpoint")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return read_zip(path)
    if head[8:9] == b"{":                   # u64 header length, then the JSON header
        return read_safetensors(path)
    if head[:1] == b"\x80":                 # pickle protocol >= 2
        return read_legacy(path)
    if path.endswith(".safetensors"):       # too short to tell: the reader names the problem
        return read_safetensors(path)
    if head[257:262] == b"ustar":
        raise ConvertError("tar-based torch.save format (PyTorch 0.1 to 0.3) is not supported; "
                           "re-save it with a newer PyTorch")
    raise ConvertError("not a PyTorch checkpoint (neither a torch.save zip archive, a legacy "
                       "torch.save pickle nor safetensors)")


# ----------------------------------------------------------------------------------------
# Finding the state dict

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def _tensor_items(d):
    return [(k, v) for k, v in d.items() if isinstance(k, str) and isinstance(v, Tensor)]


def find_state_dict(obj):
    """Returns {key: Tensor} with 'module.' prefixes removed."""
    for _depth in range(4):
        if not isinstance(obj, dict):
            raise ConvertError("the checkpoint holds a %s, not a state dict (a dict of tensors)"
                               % type(obj).__name__)
        if _tensor_items(obj):
            break
        inner = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)]
        if not inner:
            raise ConvertError("no tensors in the checkpoint (top-level keys: %s)"
                               % ", ".join(sorted(map(str, obj.keys()))[:12]))
        obj = obj[inner[0]]
    else:
        raise ConvertError("no state dict found within 4 levels of nesting")
    state = collections.OrderedDict()
    for key, tensor in _tensor_items(obj):
        if key.startswith("module."):
            key = key[len("module."):]
        if key in state:
            raise ConvertError("key '%s' appears twice once the 'module.' prefix is removed" % key)
        state[key] = tensor
    return state


# ----------------------------------------------------------------------------------------
# Architecture detection

VGG_STAGES = {"vgg11": [1, 1, 2, 2, 2], "vgg13": [2, 2, 2, 2, 2],
              "vgg16": [2, 2, 3, 3, 3], "vgg19": [2, 2, 4, 4, 4]}
RESNET_BLOCKS = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]),
                 "resnet50": ("bottleneck", [3, 4, 6, 3]),
                 "resnet101": ("bottleneck", [3, 4, 23, 3]),
                 "resnet152": ("bottleneck", [3, 8, 36, 3])}
FASHION_VGG_STAGES = [2, 2, 2]      # scripts/train_fashion.py --arch vgg
FASHION_ARCHS = ("fashion_alexnet", "fashion_vgg")
ARCH_NAMES = (["alexnet"] + [v + bn for v in VGG_STAGES for bn in ("", "_bn")]
              + list(RESNET_BLOCKS) + ["cifar_resnet%d" % (6 * n + 2) for n in (3, 5, 7, 9, 18)]
              + list(FASHION_ARCHS))
SUPPORTED = ("alexnet, vgg11/13/16/19 (and _bn), resnet18/34/50/101/152, "
             "cifar_resnet20/32/44/56/110 (any 6n+2), fashion_alexnet, fashion_vgg")


def cifar_blocks(arch):
    """cifar_resnetD -> n (blocks per stage) when D = 6n + 2, else None."""
    if not arch.startswith("cifar_resnet") or not arch[len("cifar_resnet"):].isdigit():
        return None
    depth = int(arch[len("cifar_resnet"):])
    return (depth - 2) // 6 if depth >= 8 and (depth - 2) % 6 == 0 else None


def _block_counts(keys, stages):
    counts = []
    for s in range(1, stages + 1):
        blocks = {k.split(".")[1] for k in keys if k.startswith("layer%d." % s)}
        counts.append(1 + max((int(b) for b in blocks if b.isdigit()), default=-1))
    return counts


def detect_arch(state):
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    top = sorted({k.split(".")[0] for k in keys})
    found = "top-level names: %s" % ", ".join(top[:16])
    if {"features", "classifier"} <= set(top):
        convs = sorted(int(k.split(".")[1]) for k in keys
                       if len(k.split(".")) == 3 and k.startswith("features.")
                       and k.endswith(".weight") and k.split(".")[1].isdigit()
                       and len(state[k].shape) == 4)
        if convs == [0, 3, 6, 8, 10] and "classifier.1.weight" in state:
            return "alexnet"
        # The small Fashion-MNIST models: a head that starts with dropout (classifier.1 is the
        # first linear) and conv counts no torchvision model has (4; 6 with batch norm).
        if convs == [0, 3, 6, 8] and "classifier.1.weight" in state:
            return "fashion_alexnet"
        if convs == [0, 3, 7, 10, 14, 17] and "classifier.1.weight" in state \
                and "features.1.running_mean" in state:
            return "fashion_vgg"
        by_count = {sum(stages): name for name, stages in VGG_STAGES.items()}
        if len(convs) in by_count and "classifier.0.weight" in state:
            bn = "_bn" if "features.1.running_mean" in state else ""
            return by_count[len(convs)] + bn
        raise ConvertError("unknown architecture: a features/classifier model with %d conv layers "
                           "(at features.%s) is neither alexnet (5 at features.0,3,6,8,10) nor a "
                           "VGG (8, 10, 13 or 16) nor fashion_alexnet (4 at features.0,3,6,8) "
                           "nor fashion_vgg (6 at features.0,3,7,10,14,17); supported: %s"
                           % (len(convs), ",".join(map(str, convs)), SUPPORTED))
    if {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"} <= set(top):
        kind = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
        counts = _block_counts(keys, 4)
        for name, (k, c) in RESNET_BLOCKS.items():
            if (k, c) == (kind, counts):
                return name
        known = ", ".join("%s %s" % (n, c) for n, (k, c) in RESNET_BLOCKS.items() if k == kind)
        raise ConvertError("unknown architecture: a torchvision-style ResNet with %s blocks %s "
                           "per stage matches none of %s" % (kind, counts, known))
    if {"conv1", "bn1", "layer1", "layer2", "layer3", "linear"} <= set(top) \
            and "layer4" not in top:
        counts = _block_counts(keys, 3)
        if counts[0] >= 1 and counts.count(counts[0]) == 3:
            return "cifar_resnet%d" % (6 * counts[0] + 2)
        raise ConvertError("unknown architecture: a CIFAR-style ResNet with blocks %s per stage "
                           "(all three stages need the same count)" % counts)
    raise ConvertError("unknown architecture (%s); supported: %s; --arch names one"
                       % (found, SUPPORTED))


# ----------------------------------------------------------------------------------------
# Graph building: nodes named as the module docstring says, weights checked as they are taken

class Act:
    """An activation: the node producing it and its channel (or, once flat, feature) count."""

    def __init__(self, node, c):
        self.node, self.c = node, c


def _shape_str(shape):
    return "[%s]" % ", ".join("*" if d is None else str(d) for d in shape)


class GraphBuilder:
    def __init__(self, arch, state):
        self.arch, self.state = arch, state
        self.used = set()
        self.nodes = []        # (op, name, inputs, attrs)
        self.tensors = []      # (key, shape)
        self.input_channels = None

    def param(self, key, expected):
        """Takes state[key], checking it against `expected` (None = read from the file).
        Returns its shape."""
        if key not in self.state:
            raise ConvertError("missing key '%s' (expected shape %s) for %s"
                               % (key, _shape_str(expected), self.arch))
        tensor = self.state[key]
        shape = list(tensor.shape)
        if len(shape) != len(expected) or any(e is not None and e != d
                                              for e, d in zip(expected, shape)):
            if len(shape) == len(expected):
                expected = [d if e is None else e for e, d in zip(expected, shape)]
            raise ConvertError("key '%s' has shape %s, expected %s for %s"
                               % (key, _shape_str(shape), _shape_str(expected), self.arch))
        if tensor.dtype not in FLOAT_DTYPES:
            raise ConvertError("key '%s' has dtype %s, expected a floating-point tensor"
                               % (key, tensor.dtype))
        if min(shape) < 1:
            raise ConvertError("key '%s' has an empty shape %s" % (key, _shape_str(shape)))
        self.used.add(key)
        self.tensors.append((key, shape))
        return shape

    def node(self, op, name, inputs, attrs, c):
        self.nodes.append((op, name, [a.node for a in inputs], attrs))
        return Act(name, c)

    def input(self):
        self.nodes.append(("input", "input", [], {}))
        return Act("input", None)

    def conv(self, name, x, kernel, stride, padding, bias, out=None):
        w = self.param(name + ".weight", [out, x.c, kernel, kernel])
        if x.c is None:   # the first conv fixes the input's channel count
            if w[1] not in (1, 3):
                raise ConvertError("key '%s.weight' has shape %s: %d input channels, but a model "
                                   "file takes 1 (grayscale) or 3 (RGB)"
                                   % (name, _shape_str(w), w[1]))
            self.input_channels = w[1]
        attrs = {"weight": name + ".weight", "stride": [stride, stride],
                 "padding": [padding, padding], "dilation": [1, 1], "groups": 1}
        if bias:
            self.param(name + ".bias", [w[0]])
            attrs["bias"] = name + ".bias"
        return self.node("conv2d", name, [x], attrs, w[0])

    def batchnorm(self, name, x):
        for field in ("weight", "bias", "running_mean", "running_var"):
            self.param("%s.%s" % (name, field), [x.c])
        attrs = {f: "%s.%s" % (name, f) for f in ("weight", "bias", "running_mean", "running_var")}
        attrs["eps"] = 1e-5
        return self.node("batchnorm", name, [x], attrs, x.c)

    def relu(self, name, x):
        return self.node("relu", name, [x], {}, x.c)

    def maxpool(self, name, x, kernel, stride, padding):
        return self.node("maxpool", name, [x], {
            "kernel": [kernel, kernel], "stride": [stride, stride],
            "padding": [padding, padding], "dilation": [1, 1], "ceil_mode": 0}, x.c)

    def adaptive_avgpool(self, name, x, size):
        act = self.node("adaptive_avgpool", name, [x], {"output": [size, size]}, x.c)
        act.c = x.c * size * size   # features once flattened
        return act

    def flatten(self, name, x):
        return self.node("flatten", name, [x], {}, x.c)

    def dropout(self, name, x):
        return self.node("dropout", name, [x], {"p": 0.5}, x.c)

    def linear(self, name, x, out=None):
        w = self.param(name + ".weight", [out, x.c])
        self.param(name + ".bias", [w[0]])
        return self.node("linear", name, [x], {"weight": name + ".weight",
                                               "bias": name + ".bias"}, w[0])

    def add(self, name, a, b):
        assert a.c == b.c, (name, a.c, b.c)
        return self.node("add", name, [a, b], {}, a.c)

    def check_all_used(self):
        left = [k for k in self.state
                if k not in self.used and not k.endswith("num_batches_tracked")]
        if left:
            more = " (and %d more)" % (len(left) - 1) if len(left) > 1 else ""
            raise ConvertError("unexpected key '%s' (shape %s)%s: not part of %s"
                               % (left[0], _shape_str(self.state[left[0]].shape), more, self.arch))


def build_alexnet(g):
    x = g.input()
    x = g.conv("features.0", x, 11, 4, 2, bias=True)
    x = g.relu("features.1", x)
    x = g.maxpool("features.2", x, 3, 2, 0)
    x = g.conv("features.3", x, 5, 1, 2, bias=True)
    x = g.relu("features.4", x)
    x = g.maxpool("features.5", x, 3, 2, 0)
    for i in (6, 8, 10):
        x = g.conv("features.%d" % i, x, 3, 1, 1, bias=True)
        x = g.relu("features.%d" % (i + 1), x)
    x = g.maxpool("features.12", x, 3, 2, 0)
    x = g.adaptive_avgpool("avgpool", x, 6)
    return alexnet_classifier(g, x)


def build_fashion_alexnet(g):
    """scripts/train_fashion.py --arch alexnet; 28x28 in: 28 -> 14 -> 7 -> 3."""
    x = g.input()
    x = g.conv("features.0", x, 7, 1, 3, bias=True)
    x = g.relu("features.1", x)
    x = g.maxpool("features.2", x, 2, 2, 0)
    x = g.conv("features.3", x, 5, 1, 2, bias=True)
    x = g.relu("features.4", x)
    x = g.maxpool("features.5", x, 2, 2, 0)
    for i in (6, 8):
        x = g.conv("features.%d" % i, x, 3, 1, 1, bias=True)
        x = g.relu("features.%d" % (i + 1), x)
    x = g.maxpool("features.10", x, 2, 2, 0)
    x = g.adaptive_avgpool("avgpool", x, 3)
    return alexnet_classifier(g, x)


def alexnet_classifier(g, x):
    """torchvision alexnet's head: flatten, then dropout, linear, relu, dropout, linear, relu,
    linear (classifier.0 to classifier.6)."""
    x = g.flatten("flatten", x)
    x = g.dropout("classifier.0", x)
    x = g.linear("classifier.1", x)
    x = g.relu("classifier.2", x)
    x = g.dropout("classifier.3", x)
    x = g.linear("classifier.4", x)
    x = g.relu("classifier.5", x)
    return g.linear("classifier.6", x)


def build_vgg(g, stages, batch_norm):
    x = vgg_features(g, g.input(), stages, batch_norm)
    x = g.adaptive_avgpool("avgpool", x, 7)
    x = g.flatten("flatten", x)
    x = g.linear("classifier.0", x)
    x = g.relu("classifier.1", x)
    x = g.dropout("classifier.2", x)
    x = g.linear("classifier.3", x)
    x = g.relu("classifier.4", x)
    x = g.dropout("classifier.5", x)
    return g.linear("classifier.6", x)


def build_fashion_vgg(g):
    """scripts/train_fashion.py --arch vgg; 28x28 in: 28 -> 14 -> 7 -> 3."""
    x = vgg_features(g, g.input(), FASHION_VGG_STAGES, batch_norm=True)
    x = g.adaptive_avgpool("avgpool", x, 3)
    x = g.flatten("flatten", x)
    x = g.dropout("classifier.0", x)
    x = g.linear("classifier.1", x)
    x = g.relu("classifier.2", x)
    x = g.dropout("classifier.3", x)
    return g.linear("classifier.4", x)


def vgg_features(g, x, stages, batch_norm):
    """torchvision's vgg `features`: per stage, `convs` x (3x3 conv [+ batchnorm] + relu), then a
    2x2 max pool; each module takes the next index."""
    i = 0
    for convs in stages:
        for _ in range(convs):
            x = g.conv("features.%d" % i, x, 3, 1, 1, bias=True)
            i += 1
            if batch_norm:
                x = g.batchnorm("features.%d" % i, x)
                i += 1
            x = g.relu("features.%d" % i, x)
            i += 1
        x = g.maxpool("features.%d" % i, x, 2, 2, 0)
        i += 1
    return x


def build_resnet(g, kind, blocks):
    x = g.input()
    x = g.conv("conv1", x, 7, 2, 3, bias=False)
    x = g.batchnorm("bn1", x)
    x = g.relu("relu", x)
    x = g.maxpool("maxpool", x, 3, 2, 1)
    for stage, count in enumerate(blocks, 1):
        for b in range(count):
            p = "layer%d.%d." % (stage, b)
            stride = 2 if stage > 1 and b == 0 else 1
            if kind == "basic":
                y = g.conv(p + "conv1", x, 3, stride, 1, bias=False)
                y = g.batchnorm(p + "bn1", y)
                y = g.relu(p + "relu", y)
                y = g.conv(p + "conv2", y, 3, 1, 1, bias=False)
                y = g.batchnorm(p + "bn2", y)
            else:   # Bottleneck, torchvision's v1.5: the stride sits on the 3x3 conv2
                y = g.conv(p + "conv1", x, 1, 1, 0, bias=False)
                y = g.batchnorm(p + "bn1", y)
                y = g.relu(p + "relu", y)
                y = g.conv(p + "conv2", y, 3, stride, 1, bias=False)
                y = g.batchnorm(p + "bn2", y)
                y = g.relu(p + "relu.1", y)
                y = g.conv(p + "conv3", y, 1, 1, 0, bias=False)
                y = g.batchnorm(p + "bn3", y)
            shortcut = x
            if stride != 1 or x.c != y.c:   # exactly where torchvision builds a downsample
                shortcut = g.conv(p + "downsample.0", x, 1, stride, 0, bias=False, out=y.c)
                shortcut = g.batchnorm(p + "downsample.1", shortcut)
            y = g.add(p + "add", y, shortcut)
            x = g.relu(p[:-1], y)
    x = g.adaptive_avgpool("avgpool", x, 1)
    x = g.flatten("flatten", x)
    return g.linear("fc", x)


def build_cifar_resnet(g, n):
    x = g.input()
    x = g.conv("conv1", x, 3, 1, 1, bias=False)
    x = g.batchnorm("bn1", x)
    x = g.relu("relu", x)
    for stage in (1, 2, 3):
        for b in range(n):
            p = "layer%d.%d." % (stage, b)
            stride = 2 if stage > 1 and b == 0 else 1
            # Where a stage starts, option A halves H and W and zero-pads the channels by
            # planes/4 on each side, so planes must be in + 2 * (planes // 4); elsewhere the
            # block keeps its input's channel count.
            planes = None if stride == 2 else x.c
            y = g.conv(p + "conv1", x, 3, stride, 1, bias=False, out=planes)
            if stride == 2 and x.c + 2 * (y.c // 4) != y.c:
                raise ConvertError("key '%sconv1.weight' has shape %s, expected [%d, %d, 3, 3] "
                                   "(the option-A shortcut pads %d channels to out/4 on each side)"
                                   % (p, _shape_str([y.c, x.c, 3, 3]), 2 * x.c, x.c, x.c))
            y = g.batchnorm(p + "bn1", y)
            y = g.relu(p + "relu", y)
            y = g.conv(p + "conv2", y, 3, 1, 1, bias=False, out=y.c)
            y = g.batchnorm(p + "bn2", y)
            shortcut = x
            if stride != 1:
                shortcut = g.node("shortcut_a", p + "shortcut", [x],
                                  {"stride": 2, "pad_channels": [y.c // 4, y.c // 4]}, y.c)
            y = g.add(p + "add", y, shortcut)
            x = g.relu(p[:-1], y)
    x = g.adaptive_avgpool("avgpool", x, 1)
    x = g.flatten("flatten", x)
    return g.linear("linear", x)


def build_graph(arch, state):
    g = GraphBuilder(arch, state)
    if arch == "alexnet":
        out = build_alexnet(g)
    elif arch == "fashion_alexnet":
        out = build_fashion_alexnet(g)
    elif arch == "fashion_vgg":
        out = build_fashion_vgg(g)
    elif arch.split("_")[0] in VGG_STAGES:
        out = build_vgg(g, VGG_STAGES[arch.split("_")[0]], arch.endswith("_bn"))
    elif arch in RESNET_BLOCKS:
        out = build_resnet(g, *RESNET_BLOCKS[arch])
    else:
        out = build_cifar_resnet(g, cifar_blocks(arch))
    g.check_all_used()
    return g, out.c


def valid_arch(arch):
    return (arch == "alexnet" or arch in FASHION_ARCHS or arch in RESNET_BLOCKS
            or cifar_blocks(arch) is not None
            or (arch.split("_")[0] in VGG_STAGES and arch.split("_", 1)[1:] in ([], ["bn"])))


# ----------------------------------------------------------------------------------------
# Metadata and the command line

def _number_list(text, kind, what):
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        raise ConvertError("%s: expected comma-separated %ss, got %r" % (what, kind.__name__, text))
    return values


def build_meta(args, arch, channels, num_classes):
    cifar = arch.startswith("cifar_")
    fashion = arch in FASHION_ARCHS
    meta = collections.OrderedDict()
    meta["name"] = args.name or arch
    meta["arch"] = arch
    if args.input_size:
        shape = _number_list(args.input_size, int, "--input-size")
        if len(shape) != 3 or not (1 <= shape[1] <= 4096 and 1 <= shape[2] <= 4096):
            raise ConvertError("--input-size: expected C,H,W with H and W in 1..4096, got %r"
                               % args.input_size)
        if shape[0] != channels:
            raise ConvertError("--input-size has %d channels but the first conv takes %d"
                               % (shape[0], channels))
    else:
        side = 32 if cifar else 28 if fashion else 224
        shape = [channels, side, side]
    meta["input_shape"] = shape
    resize = (0 if cifar or fashion else 256) if args.resize is None else args.resize
    if resize < 0:
        raise ConvertError("--resize must be >= 0 (0 = no resize)")
    meta["resize"] = resize
    meta["crop"] = shape[1:]
    for key, text, default in (("mean", args.mean, IMAGENET_MEAN), ("std", args.std, IMAGENET_STD)):
        values = _number_list(text, float, "--" + key) if text else default
        if len(values) != channels:
            raise ConvertError("the model takes %d input channel%s but %s has %d entr%s: give "
                               "--%s with %d value%s"
                               % (channels, "s" if channels != 1 else "", key, len(values),
                                  "ies" if len(values) != 1 else "y", key, channels,
                                  "s" if channels != 1 else ""))
        meta[key] = values
    if any(s == 0 for s in meta["std"]):
        raise ConvertError("--std must not contain zero")
    if args.classes is not None:
        names = args.classes.split(",")
    elif args.classes_file:
        try:
            with open(args.classes_file, encoding="utf-8") as f:
                names = [line.rstrip("\r\n") for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise ConvertError("--classes-file %s: %s" % (args.classes_file, e))
    elif channels != 3:
        raise ConvertError("the model takes %d input channel%s, so the default %s class names "
                           "(an RGB dataset) do not apply: give --classes or --classes-file"
                           % (channels, "s" if channels != 1 else "",
                              "CIFAR-10" if cifar else "ImageNet"))
    elif cifar:
        names = list(CIFAR10_CLASSES)
    else:
        path = os.path.join(HERE, "imagenet_classes.txt")
        try:
            with open(path, encoding="utf-8") as f:
                names = [line.rstrip("\n") for line in f if line.strip()]
        except OSError as e:
            raise ConvertError("cannot read the ImageNet class list %s: %s" % (path, e.strerror))
    if len(names) != num_classes:
        raise ConvertError("the last layer has %d outputs but there are %d class names; give "
                           "--classes or --classes-file with %d names"
                           % (num_classes, len(names), num_classes))
    for n in names:
        if not n or "\0" in n or len(n.encode("utf-8")) > 4096:
            raise ConvertError("bad class name %r (1..4096 bytes, no NUL)" % n)
    meta["class_names"] = names
    meta["source"] = os.path.basename(args.input)
    return meta


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, status 2, like every other error
        sys.stderr.write("%s: %s (see --help)\n" % (PROG, message))
        sys.exit(2)


def parse_args(argv):
    p = _Parser(prog=PROG, description=__doc__.split("\n", 1)[1],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="checkpoint: torch.save zip or legacy format, or safetensors")
    p.add_argument("-o", "--output", required=True, help="the .cnn file to write")
    p.add_argument("--arch", help="architecture (default: detected): " + ", ".join(ARCH_NAMES))
    p.add_argument("--name", help="model name in the metadata (default: the architecture)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--classes", help="comma-separated class names, in output order")
    group.add_argument("--classes-file", help="class names, one per line")
    p.add_argument("--mean", help="per-channel mean, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", help="per-channel std, e.g. 0.229,0.224,0.225")
    p.add_argument("--input-size", help="C,H,W of the network input")
    p.add_argument("--resize", type=int, help="shorter side resized to N before the crop; 0 = none")
    return p.parse_args(argv)


def convert(args):
    obj, big_endian = read_checkpoint(args.input)
    state = find_state_dict(obj)
    if args.arch:
        if not valid_arch(args.arch):
            raise ConvertError("unknown --arch %r; supported: %s" % (args.arch, SUPPORTED))
        arch = args.arch
    else:
        arch = detect_arch(state)
    graph, num_classes = build_graph(arch, state)
    meta = build_meta(args, arch, graph.input_channels, num_classes)
    writer = ModelWriter(meta)
    for key, shape in graph.tensors:
        tensor = state[key]
        writer.add_tensor(key, shape, to_float32_le(tensor.raw_bytes(key), tensor.dtype,
                                                    big_endian))
    for op, name, inputs, attrs in graph.nodes:
        writer.add_node(op, name, inputs, attrs)
    return writer, arch


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        writer, arch = convert(args)
    except ConvertError as e:
        sys.stderr.write("%s: %s: %s\n" % (PROG, args.input, e))
        return 2
    except MemoryError:
        sys.stderr.write("%s: %s: out of memory\n" % (PROG, args.input))
        return 2
    except Exception as e:   # a bug or an input case not foreseen: still one line, status 2
        sys.stderr.write("%s: %s: internal error: %s: %s\n"
                         % (PROG, args.input, type(e).__name__, e))
        return 2
    try:
        writer.write(args.output)
    except (OSError, ValueError) as e:
        sys.stderr.write("%s: %s: cannot write: %s\n"
                         % (PROG, args.output, getattr(e, "strerror", None) or e))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
