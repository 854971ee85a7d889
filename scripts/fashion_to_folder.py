#!/usr/bin/env python3
"""fashion_to_folder.py - writes Fashion-MNIST as an ImageFolder of 8-bit grayscale PNG files.

Python standard library only (gzip, struct, zlib); works with any Python 3.

    fashion_to_folder.py [--split test|train] [--limit N] [--data DIR] -o OUT

OUT/<class folder>/<NNNNN>.png, where the class folders sort in class-index order
(0-tshirt-top ... 9-ankle-boot) and NNNNN is the image's index in the IDX file. PNG is lossless,
so every file holds exactly the IDX pixels. --limit N keeps the first N images of each class in
file order. OUT is built under a temporary name beside it and renamed into place at the end.

The data comes from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist).
"""
import argparse
import gzip
import os
import shutil
import struct
import sys
import zlib

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"

# Index i = label i in the IDX files; the digit prefix makes sorted order = class order.
CLASS_FOLDERS = ["0-tshirt-top", "1-trouser", "2-pullover", "3-dress", "4-coat",
                 "5-sandal", "6-shirt", "7-sneaker", "8-bag", "9-ankle-boot"]

IDX_IMAGES_MAGIC = 0x00000803   # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801   # unsigned byte, 1 dimension


def fail(msg):
    sys.stderr.write("fashion_to_folder: %s\n" % msg)
    sys.exit(1)


def read_idx_gz(path, expected_magic):
    """Returns (dims, payload bytes) of a gzip'd IDX file, checking magic and size."""
    if not os.path.isfile(path):
        fail("%s: not found (install dataset-fashion-mnist: apt-get install dataset-fashion-mnist, "
             "or pass --data DIR)" % path)
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        fail("%s: %d bytes, too short for an IDX header" % (path, len(raw)))
    magic, = struct.unpack_from(">I", raw, 0)
    if magic != expected_magic:
        fail("%s: IDX magic 0x%08x, expected 0x%08x" % (path, magic, expected_magic))
    ndim = magic & 0xFF
    dims = struct.unpack_from(">%dI" % ndim, raw, 4)
    offset = 4 + 4 * ndim
    count = 1
    for d in dims:
        count *= d
    if len(raw) - offset != count:
        fail("%s: %d payload bytes, expected %d for dims %s" %
             (path, len(raw) - offset, count, dims))
    return dims, memoryview(raw)[offset:]


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_gray8(pixels, width, height):
    """Encodes row-major 8-bit grayscale pixels as a PNG file (filter 0 on every row)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # depth 8, gray, no interlace
    rows = b"".join(b"\x00" + bytes(pixels[y * width:(y + 1) * width]) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) +
            png_chunk(b"IDAT", zlib.compress(rows, 6)) + png_chunk(b"IEND", b""))


def looks_like_our_output(path):
    """True if path is a directory holding nothing but (some of) our class folders."""
    entries = os.listdir(path)
    return all(e in CLASS_FOLDERS and os.path.isdir(os.path.join(path, e)) for e in entries)


def main():
    ap = argparse.ArgumentParser(description="Fashion-MNIST (IDX) to an ImageFolder of PNG files")
    ap.add_argument("--split", choices=["test", "train"], default="test")
    ap.add_argument("--limit", type=int, default=0, help="first N images per class (0 = all)")
    ap.add_argument("--data", default=DEFAULT_DATA, help="directory of the *-ubyte.gz files")
    ap.add_argument("-o", "--output", required=True, help="output directory")
    args = ap.parse_args()
    if args.limit < 0:
        fail("--limit %d: expected N >= 0" % args.limit)

    prefix = "t10k" if args.split == "test" else "train"
    images_path = os.path.join(args.data, prefix + "-images-idx3-ubyte.gz")
    labels_path = os.path.join(args.data, prefix + "-labels-idx1-ubyte.gz")
    (n, height, width), pixels = read_idx_gz(images_path, IDX_IMAGES_MAGIC)
    (n_labels,), labels = read_idx_gz(labels_path, IDX_LABELS_MAGIC)
    if n != n_labels:
        fail("%s has %d images but %s has %d labels" % (images_path, n, labels_path, n_labels))

    out = os.path.abspath(args.output)
    if os.path.exists(out) and not (os.path.isdir(out) and looks_like_our_output(out)):
        fail("%s exists and is not a previous output of this script; remove it first" % out)
    tmp = "%s.tmp-%d" % (out, os.getpid())
    os.makedirs(tmp)
    try:
        for folder in CLASS_FOLDERS:
            os.mkdir(os.path.join(tmp, folder))
        written = [0] * len(CLASS_FOLDERS)
        image_size = height * width
        for i in range(n):
            label = labels[i]
            if label >= len(CLASS_FOLDERS):
                fail("%s: label %d at index %d, expected 0..9" % (labels_path, label, i))
            if args.limit and written[label] >= args.limit:
                continue
            png = png_gray8(pixels[i * image_size:(i + 1) * image_size], width, height)
            with open(os.path.join(tmp, CLASS_FOLDERS[label], "%05d.png" % i), "wb") as f:
                f.write(png)
            written[label] += 1
        # Swap in the new tree; a previous output is moved aside first and then deleted.
        old = None
        if os.path.exists(out):
            old = "%s.old-%d" % (out, os.getpid())
            os.rename(out, old)
        os.rename(tmp, out)
        if old:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print("%s: %d images (%s split, %s per class) in %d class folders" %
          (args.output, sum(written), args.split, args.limit or "all", len(CLASS_FOLDERS)))


if __name__ == "__main__":
    main()
