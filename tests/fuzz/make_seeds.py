#!/usr/bin/env python3
"""make_seeds.py - seed corpora for the libFuzzer harnesses, made from real files each time the
fuzzers run (nothing binary is committed).

    /usr/bin/python3 tests/fuzz/make_seeds.py OUT_DIR [SHARED_DIR]

Writes OUT_DIR/model (the loader's valid and damaged fixtures, tiny_resnet, and the CIFAR-10
ResNet-20 converted from SHARED_DIR/data/cifar10 by scripts/convert.py), OUT_DIR/image (real
CIFAR-10 JPEGs from SHARED_DIR, and PIL-made PNG, JPEG, BMP, GIF, TGA, PNM files in
several modes; each prefixed with the 4 bytes fuzz_image.c reads as the model's input) and
OUT_DIR/npy (numpy-written arrays of every header version and shape kind). Needs PIL and numpy
(python3-pil, python3-numpy); the model part needs only the standard library.
"""
import io
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def model_seeds(out, shared):
    os.makedirs(out, exist_ok=True)
    work = os.path.join(out, "..", "model-work")
    for script in ("make_model_fixtures.py", "make_tiny_model.py"):
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", script), work], check=True)
    n = 0
    for sub in ("good", "bad", "."):
        folder = os.path.join(work, sub)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".cnn"):
                shutil.copy(os.path.join(folder, name), os.path.join(out, "%s_%s" % (sub.strip("."), name)))
                n += 1
    checkpoint = os.path.join(shared, "data", "cifar10", "resnet20-12fca82f.th")
    if not os.path.exists(checkpoint):
        sys.exit("make_seeds: %s is missing (the CIFAR-10 seed model comes from it)" % checkpoint)
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "convert.py"), checkpoint,
                    "-o", os.path.join(out, "cifar_resnet20.cnn")], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.rmtree(work)
    return n + 1


# fuzz_image.c's 4-byte prefix: byte 0 bit 0 = 3 channels, bit 1 = resize (byte 1 & 0x7f + 1),
# bytes 2, 3: height - 1, width - 1 (6 bits).
PREFIXES = [bytes([1, 0, 31, 31]), bytes([3, 39, 27, 27]), bytes([0, 0, 27, 27]),
            bytes([2, 7, 5, 9])]


def image_seeds(out, shared):
    from PIL import Image
    os.makedirs(out, exist_ok=True)
    files = {}
    test = os.path.join(shared, "data", "cifar10", "test")
    if not os.path.isdir(test):
        sys.exit("make_seeds: %s is missing (real JPEG seeds come from it)" % test)
    for cls in sorted(os.listdir(test))[:5]:
        for name in sorted(os.listdir(os.path.join(test, cls)))[:2]:
            with open(os.path.join(test, cls, name), "rb") as f:
                files["cifar_%s_%s" % (cls, name)] = f.read()
    base = Image.open(os.path.join(test, sorted(os.listdir(test))[0],
                                   sorted(os.listdir(os.path.join(test, sorted(os.listdir(test))[0])))[0]))
    base = base.convert("RGB").resize((13, 9))
    variants = {
        "rgb.png": (base, "PNG", {}), "gray.png": (base.convert("L"), "PNG", {}),
        "rgba.png": (base.convert("RGBA"), "PNG", {}), "la.png": (base.convert("LA"), "PNG", {}),
        "palette.png": (base.convert("P"), "PNG", {}),
        "i16.png": (base.convert("L").convert("I").convert("I;16"), "PNG", {}),
        "interlaced.png": (base, "PNG", {"interlace": 1}),
        "rgb.bmp": (base, "BMP", {}), "gray.bmp": (base.convert("L"), "BMP", {}),
        "palette.bmp": (base.convert("P"), "BMP", {}),
        "rgb.gif": (base, "GIF", {}), "rgb.tga": (base, "TGA", {}),
        "rle.tga": (base, "TGA", {"compression": "tga_rle"}),
        "rgb.ppm": (base, "PPM", {}), "gray.pgm": (base.convert("L"), "PPM", {}),
        "baseline.jpg": (base, "JPEG", {"quality": 80}),
        "gray.jpg": (base.convert("L"), "JPEG", {}),
        "progressive.jpg": (base, "JPEG", {"progressive": True}),
        "subsampled.jpg": (base, "JPEG", {"subsampling": 2}),
        "cmyk.jpg": (base.convert("CMYK"), "JPEG", {}),
        "tall.png": (base.resize((2, 40)), "PNG", {}), "wide.png": (base.resize((40, 1)), "PNG", {}),
        "one.png": (base.resize((1, 1)), "PNG", {}),
    }
    for name, (img, fmt, kw) in variants.items():
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        files[name] = buf.getvalue()
    n = 0
    for name, data in sorted(files.items()):
        for k, prefix in enumerate(PREFIXES):
            with open(os.path.join(out, "%d_%s" % (k, name)), "wb") as f:
                f.write(prefix + data)
            n += 1
    return n


def npy_seeds(out):
    import numpy as np
    os.makedirs(out, exist_ok=True)
    arrays = {
        "scalar": np.float32(1.5), "vector": np.arange(5, dtype=np.float32),
        "matrix": np.arange(12, dtype=np.float32).reshape(3, 4),
        "nchw": np.linspace(-1, 1, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4),
        "empty": np.zeros((0, 3), np.float32), "eight_dims": np.ones((1,) * 8, np.float32),
        "big_endian": np.arange(4, dtype=">f4"), "float64": np.arange(3, dtype=np.float64),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
    }
    n = 0
    for name, a in arrays.items():
        for version in ((1, 0), (2, 0), (3, 0)):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(a), version=version)
            with open(os.path.join(out, "%s_v%d.npy" % (name, version[0])), "wb") as f:
                f.write(buf.getvalue())
            n += 1
    return n


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: make_seeds.py OUT_DIR [SHARED_DIR]")
    out = sys.argv[1]
    shared = sys.argv[2] if len(sys.argv) == 3 else os.path.join(ROOT, "..", "shared")
    counts = (model_seeds(os.path.join(out, "model"), shared),
              image_seeds(os.path.join(out, "image"), shared),
              npy_seeds(os.path.join(out, "npy")))
    print("seeds: %d model, %d image, %d npy files in %s" % (counts + (out,)))


if __name__ == "__main__":
    main()
