"""The engine's image preprocessing against torchvision + PIL, on the same files.

For lossless files (PNG, BMP, GIF, PPM, TGA) the decoded, converted, resized and cropped 8-bit
pixels must be IDENTICAL to what torchvision's transforms make from PIL (0 levels of
difference), and so must the normalised float32 tensor. For JPEG the two decoders (stb, libjpeg)
differ slightly; the difference is measured and bounded (numbers in docs/preprocessing.md).

The engine is driven through tests/c/tool_preprocess.c (build/tests/tool_preprocess), which
takes the model's preprocessing on the command line.

Run: /usr/bin/python3 tests/test_image_pil.py   (env BUILD=build, SHARED=../shared;
optional PHOTOS=DIR with real photographs, *.png / *.jpg, e.g. scikit-image's data folder).
"""
import glob
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import torchvision.transforms as T
from PIL import Image

BUILD = os.environ.get("BUILD", "build")
SHARED = os.environ.get("SHARED", "../shared")
TOOL = os.path.join(BUILD, "tests", "tool_preprocess")

IMAGENET = dict(name="imagenet", C=3, H=224, W=224, resize=256,
                mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
CIFAR = dict(name="cifar", C=3, H=32, W=32, resize=0,
             mean=[0.4914, 0.4822, 0.4465], std=[0.2470, 0.2435, 0.2616])
FASHION = dict(name="fashion", C=1, H=28, W=28, resize=0, mean=[0.2860], std=[0.3530])
# Resize smaller than the crop, non-square crop: exercises the zero padding and the
# round-half-to-even crop offsets.
PADDED = dict(name="padded", C=3, H=40, W=57, resize=37,
              mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
GRAY_RESIZE = dict(name="gray_resize", C=1, H=50, W=45, resize=64, mean=[0.5], std=[0.2])
CONFIGS = [IMAGENET, CIFAR, FASHION, PADDED, GRAY_RESIZE]

# JPEG bounds, at the measured level plus a margin (docs/preprocessing.md).
JPEG_BOUNDS = {
    # (max |diff| in levels, mean |diff| in levels, fraction of differing values).
    # Measured (docs/preprocessing.md): CIFAR 200 files 3 / 0.090 / 6.9 %; photo mosaic
    # 2 / 0.087 / 8.7 % (with scikit-image's photos added: 2 / 0.034 / 3.3 %).
    "cifar_jpeg": (4, 0.11, 0.085),
    "photo_jpeg": (3, 0.11, 0.105),
}

failures = []


def check(cond, msg):
    print(("ok    " if cond else "FAIL  ") + msg)
    if not cond:
        failures.append(msg)


def reference(path, cfg):
    """torchvision's eval transform on PIL: returns (8-bit [H,W,C] pixels, [C,H,W] tensor)."""
    img = Image.open(path).convert("RGB" if cfg["C"] == 3 else "L")
    if cfg["resize"] > 0:
        img = T.CenterCrop((cfg["H"], cfg["W"]))(T.Resize(cfg["resize"])(img))
    elif img.size != (cfg["W"], cfg["H"]):
        img = T.Resize((cfg["H"], cfg["W"]))(img)
    pixels = np.array(img, dtype=np.uint8).reshape(cfg["H"], cfg["W"], cfg["C"])
    tensor = T.Normalize(cfg["mean"], cfg["std"])(T.ToTensor()(img)).numpy()
    return pixels, tensor


def engine(paths, cfg, tmp):
    out, pix = os.path.join(tmp, "out.npy"), os.path.join(tmp, "pix.npy")
    cmd = [TOOL, "-c", str(cfg["C"]), "-s", "%dx%d" % (cfg["H"], cfg["W"]),
           "-r", str(cfg["resize"]), "-m", ",".join(repr(m) for m in cfg["mean"]),
           "-d", ",".join(repr(s) for s in cfg["std"]), "-p", pix, "-o", out] + list(paths)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("tool_preprocess failed: %s" % r.stderr.strip())
    return np.load(pix), np.load(out)


def compare(paths, cfg, tmp):
    """Per file: (max |pixel diff|, differing pixel values, max |tensor diff|, diffs array)."""
    pix, out = engine(paths, cfg, tmp)
    results = []
    for i, p in enumerate(paths):
        ref_pix, ref_t = reference(p, cfg)
        d = np.abs(pix[i].astype(np.int32) - ref_pix.astype(np.int32))
        results.append((int(d.max()), int((d > 0).sum()), float(np.abs(out[i] - ref_t).max()), d))
    return results


# ---------------------------------------------------------------------------------------------
# Lossless files: must be identical.

def make_lossless(tmp, rng):
    """Random images of many sizes and modes; noise (the hardest case for rounding) mixed
    with smooth gradients (where a systematic offset would show)."""
    sizes = [(1, 1), (1, 9), (9, 1), (2, 3), (5, 300), (300, 5), (17, 31), (31, 17), (28, 28),
             (32, 32), (33, 29), (80, 100), (224, 224), (256, 256), (255, 383), (383, 255),
             (257, 300), (1000, 37), (37, 1000), (480, 640)]
    modes = ["RGB", "L", "RGBA", "LA", "P", "P_trns", "1"]
    files = []
    for i, (h, w) in enumerate(sizes):
        mode = modes[i % len(modes)]
        yy, xx = np.mgrid[0:h, 0:w]
        smooth = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                           ((xx + yy) * 7) % 256, (xx * 3 + yy) % 256], -1)
        noise = rng.randint(0, 256, (h, w, 4))
        a = np.where(rng.rand(h, w, 1) < 0.5, smooth, noise).astype(np.uint8)
        if mode == "RGB":
            im = Image.fromarray(a[..., :3], "RGB")
        elif mode == "L":
            im = Image.fromarray(a[..., 0], "L")
        elif mode == "RGBA":
            im = Image.fromarray(a, "RGBA")
        elif mode == "LA":
            im = Image.fromarray(a[..., :3], "RGB").convert("L")
            im.putalpha(Image.fromarray(a[..., 3], "L"))
        elif mode in ("P", "P_trns"):
            im = Image.fromarray(a[..., :3], "RGB").quantize(colors=37)
            if mode == "P_trns":
                im.info["transparency"] = 3
        else:
            im = Image.fromarray(a[..., 0] > 127)
        path = os.path.join(tmp, "img%02d_%dx%d_%s.png" % (i, h, w, mode))
        im.save(path, **({"transparency": 3} if mode == "P_trns" else {}))
        files.append(path)
    # Other lossless formats stb reads.
    a = rng.randint(0, 256, (45, 61, 3)).astype(np.uint8)
    for ext in ("bmp", "ppm", "tga"):
        path = os.path.join(tmp, "other_45x61." + ext)
        Image.fromarray(a, "RGB").save(path)
        files.append(path)
    path = os.path.join(tmp, "other_45x61_gray.pgm")
    Image.fromarray(a[..., 1], "L").save(path)
    files.append(path)
    path = os.path.join(tmp, "other_45x61.gif")
    Image.fromarray(a, "RGB").quantize(colors=200).save(path)
    files.append(path)
    # 16-bit RGB PNG (PIL cannot write one): both sides keep the high byte.
    path = os.path.join(tmp, "rgb16_23x19.png")
    write_png16_rgb(path, rng.randint(0, 65536, (23, 19, 3)))
    files.append(path)
    return files


def write_png16_rgb(path, a):
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    h, w, _ = a.shape
    rows = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_lossless(tmp):
    files = make_lossless(tmp, np.random.RandomState(12345))
    photos = sorted(glob.glob(os.path.join(os.environ.get("PHOTOS", "/nonexistent"), "*.png")))
    for cfg in CONFIGS:
        results = compare(files + photos, cfg, tmp)
        worst_pix = max(r[0] for r in results)
        worst_t = max(r[2] for r in results)
        bad = [(os.path.basename(p), r[0], r[1]) for p, r in zip(files + photos, results) if r[0]]
        check(worst_pix == 0 and worst_t == 0.0,
              "%s: %d lossless files: max pixel diff %d levels, max tensor diff %g%s"
              % (cfg["name"], len(results), worst_pix, worst_t,
                 "" if not bad else "; differing (file, max, count): %s" % bad[:5]))


# ---------------------------------------------------------------------------------------------
# JPEG: decoder differences, bounded.

def jpeg_stats(name, paths, cfg, tmp):
    results = compare(paths, cfg, tmp)
    diffs = np.concatenate([r[3].ravel() for r in results])
    mx, mean, frac = int(diffs.max()), float(diffs.mean()), float((diffs > 0).mean())
    bmax, bmean, bfrac = JPEG_BOUNDS[name]
    check(mx <= bmax and mean <= bmean and frac <= bfrac,
          "%s (%s, %d files): max |diff| %d levels (bound %d), mean %.4f (bound %.2f), "
          "differing values %.2f%% (bound %.1f%%)"
          % (name, cfg["name"], len(paths), mx, bmax, mean, bmean, 100 * frac, 100 * bfrac))


def test_jpeg(tmp):
    cifar = os.path.join(SHARED, "data", "cifar10", "test")
    classes = sorted(glob.glob(os.path.join(cifar, "*")))
    if not classes:
        check(False, "CIFAR-10 test JPEGs not found under %s (set SHARED=path/to/shared)" % cifar)
        return
    # Real JPEG files, no resize: 20 per class.
    paths = [p for c in classes for p in sorted(glob.glob(os.path.join(c, "*.jpg")))[:20]]
    jpeg_stats("cifar_jpeg", paths, CIFAR, tmp)

    # Real photographs through Resize(256) + CenterCrop(224): JPEG files from PHOTOS if given,
    # plus a 12x10 mosaic of CIFAR photos (decoded by PIL, upscaled 1.5x) saved by PIL's libjpeg.
    photo_paths = []
    photos = os.environ.get("PHOTOS")
    if photos:
        for p in sorted(glob.glob(os.path.join(photos, "*.png")))[:8]:
            im = Image.open(p).convert("RGB")
            if min(im.size) < 224:
                continue
            out = os.path.join(tmp, "photo_" + os.path.basename(p)[:-4] + ".jpg")
            im.save(out, quality=90)
            photo_paths.append(out)
        photo_paths += [p for p in sorted(glob.glob(os.path.join(photos, "*.jpg")))
                        if _pil_opens(p)]
    tiles = [np.array(Image.open(p).convert("RGB")) for p in paths[:120]]
    rows = [np.concatenate(tiles[r * 12:(r + 1) * 12], 1) for r in range(10)]
    mosaic = Image.fromarray(np.concatenate(rows, 0)).resize((576, 480), Image.BILINEAR)
    for q in (75, 95):
        out = os.path.join(tmp, "mosaic_q%d.jpg" % q)
        mosaic.save(out, quality=q)
        photo_paths.append(out)
    jpeg_stats("photo_jpeg", photo_paths, IMAGENET, tmp)


def _pil_opens(path):
    try:
        Image.open(path).load()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------

def main():
    if not os.access(TOOL, os.X_OK):
        print("FAIL  %s not found: build it with `make %s`" % (TOOL, TOOL))
        return 1
    with tempfile.TemporaryDirectory(prefix="cnnscope_pil_") as tmp:
        test_lossless(tmp)
        test_jpeg(tmp)
    n_fail = len(failures)
    print("test_image_pil: %s" % ("FAILED" if n_fail else "all checks passed"))
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
