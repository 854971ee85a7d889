#!/usr/bin/env python3
"""test_report_sections.py - the report sections on neurons and explanations (filters, maps,
patches, explain: vis/report_neurons.c, vis/report_explain.c) against the commands that draw
the same pictures on their own.

A. The default model (weights/fashion_resnet20.cnn, 1x28x28) on 200 Fashion-MNIST test images
   (the first 20 of each class, scripts/fashion_to_folder.py --limit 20), the sections written
   by the driver mode of build/tests/test_report_sections (tests/c/test_report_sections.c):
   - img/filters.png is byte for byte `cnnscope filters MODEL`;
   - every feature-map picture is byte for byte `cnnscope maps MODEL IMAGE --layer L
     --channels LIST` (the layer, image and channels read from the page);
   - the layers are the ReLU after conv1, then the ends of the 28x28, 14x14 and 7x7 stages;
   - the left grid of every patch picture has the pixels of `cnnscope patches MODEL DIR --layer
     L --channels all --top 9 --scale S` for that channel (S = 64 / field size), and the page
     lists the same images, positions and activations as its index.json; the channels are the
     6 with the largest top activation (by index.json of all channels);
   - every explanation panel has the pixels of the matching panel of `cnnscope explain MODEL
     IMAGE --method M` (sampled at the figure's scale), for the predicted class.
B. A VGG-like random model without global average pooling: the page says why CAM does not
   apply and shows the other four methods; a model without convolutions: the page says there
   are no filters, maps or patches, and Grad-CAM and CAM do not apply.
"""
import html
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import cnnfile  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
CNNSCOPE = os.environ.get("CNNSCOPE", os.path.join(BUILD, "cnnscope"))
DRIVER = os.path.join(BUILD, "tests", "test_report_sections")
MODEL = os.path.join(REPO, "weights", "fashion_resnet20.cnn")
WORK = os.path.join(BUILD, "report-sections")
BATCH = 32
FIGURE_MIN_SIDE, FIGURE_GAP = 224, 8   # vis_explain_figure (vis/explain.c)
PANEL_SIDE = 112                       # report_explain.c
PATCH_CELL = 64                        # report_neurons.c: patches scaled to at least this

failures = []


def check(ok, message):
    print(("  ok    " if ok else "  FAIL  ") + message)
    if not ok:
        failures.append(message)
    return ok


def run(cmd):
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise RuntimeError("exit %d: %s\n%s" % (p.returncode, " ".join(map(str, cmd)), p.stdout[-3000:]))
    return p.stdout


def pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int32)


def section(page, name):
    m = re.search(r'<section id="%s">(.*?)</section>' % name, page, re.S)
    if not m:
        raise RuntimeError("no section %s on the page" % name)
    return m.group(1)


def fashion_subset():
    out = os.path.join(WORK, "fashion-200")
    if not os.path.isdir(out):
        run(["/usr/bin/python3", os.path.join(REPO, "scripts", "fashion_to_folder.py"), "--split", "test",
             "--limit", "20", "-o", out])
    return out


def test_default_model():
    data = fashion_subset()
    out = os.path.join(WORK, "fashion-out")
    shutil.rmtree(out, ignore_errors=True)
    print(run([DRIVER, MODEL, data, out, 2, BATCH]), end="")
    with open(os.path.join(out, "index.html")) as f:
        page = f.read()
    tmp = os.path.join(WORK, "cli")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)

    # filters
    run([CNNSCOPE, "filters", MODEL, "-o", os.path.join(tmp, "filters.png")])
    with open(os.path.join(tmp, "filters.png"), "rb") as a, open(os.path.join(out, "img", "filters.png"), "rb") as b:
        check(a.read() == b.read(), "img/filters.png is byte for byte `cnnscope filters`")

    # maps: per layer, the channel list, then one picture per sample image
    maps = section(page, "maps")
    layers = re.findall(r"<h3>([^ ]+) \(", maps)
    check(layers == ["relu", "layer1.2", "layer2.2", "layer3.2"],
          "maps at relu, layer1.2, layer2.2, layer3.2 (got %s)" % layers)
    compared = 0
    for block in maps.split("<h3>")[1:]:
        layer = block.split(" (")[0]
        channels = re.search(r"<p>Channels ([0-9, ]+)", block).group(1).replace(" ", "")
        for src, caption in re.findall(r'<img src="(img/maps-[0-9-]+\.png)"[^>]*><figcaption>([^,<]+)', block):
            name = html.unescape(caption)
            mine = os.path.join(out, src)
            theirs = os.path.join(tmp, "maps.png")
            run([CNNSCOPE, "maps", MODEL, os.path.join(data, name), "--layer", layer, "--channels", channels,
                 "-o", theirs])
            with open(mine, "rb") as a, open(theirs, "rb") as b:
                compared += check(a.read() == b.read(), "%s (%s, %s) is byte for byte `cnnscope maps`"
                                  % (src, layer, name))
    check(compared == 12, "12 feature-map pictures compared (4 layers x 3 images), got %d" % compared)

    # patches
    patches = section(page, "patches")
    blocks = patches.split("<h3>")[1:]
    check([b.split(" (")[0] for b in blocks] == layers, "patches at the same layers as the maps")
    for block in blocks:
        layer = block.split(" (")[0]
        channels = [int(c) for c in re.search(r"of \d+: ([0-9, ]+)\.", block).group(1).split(", ")]
        check(len(channels) == 6, "%s: 6 channels shown" % layer)
        cli_out = os.path.join(tmp, "patches-" + layer)
        field = int(re.search(r"Receptive field (\d+)x\d+ pixels", block).group(1))
        run([CNNSCOPE, "patches", MODEL, data, "--layer", layer, "--channels", "all", "--top", 9,
             "--batch", BATCH, "--scale", max(1, PATCH_CELL // field), "-o", cli_out])
        with open(os.path.join(cli_out, "index.json")) as f:
            index = json.load(f)
        top = {}
        for p in index["patches"]:
            top.setdefault(p["channel"], []).append(p)
        want = sorted(top, key=lambda c: (-top[c][0]["activation"], c))[:6]
        check(channels == want, "%s: channels %s are the 6 with the largest top activation %s"
              % (layer, channels, want))
        for src, title in re.findall(r'<img src="(img/patches-[0-9-]+\.png)"[^>]*title="([^"]*)"', block):
            channel = int(src.rsplit("-", 1)[1].split(".")[0])
            mine = pixels(os.path.join(out, src))
            theirs = pixels(os.path.join(cli_out, "channel_%04d.png" % channel))
            h, w = theirs.shape[:2]
            check(mine.shape[0] == h and np.array_equal(mine[:, :w], theirs),
                  "%s: the patch grid has the pixels of `cnnscope patches` channel %d" % (src, channel))
            rows = [re.match(r"(\d+): (.*) at \((\d+), (\d+)\): ([0-9.]+)$", line).groups()
                    for line in html.unescape(title).split("\n")]
            cli_rows = [(str(p["rank"] + 1), p["image"], str(p["y"]), str(p["x"]), "%.3f" % p["activation"])
                        for p in top[channel]]
            check(rows == [tuple(r) for r in cli_rows], "%s: the same images, positions and activations "
                  "as index.json" % src)

    # explain: each panel against the matching panel of `cnnscope explain`'s figure
    explain = section(page, "explain")
    images = re.findall(r'<img src="img/explain-(\d+)-image\.png"', explain)
    names = [html.unescape(n) for n in re.findall(r'class="caption">([^:<]+):', explain)]
    check(len(images) == 8 and len(names) == 8, "8 explained images (4 right, 4 wrong)")
    check("does not apply" not in explain, "every method applies to the ResNet")
    scale_fig = -(-FIGURE_MIN_SIDE // 28)
    scale_mine = -(-PANEL_SIDE // 28)
    pw = 28 * scale_fig
    panels = {"saliency": 1, "guided": 1, "gradcam": 2, "cam": 2, "guided-gradcam": 1}
    for method, panel in panels.items():
        fig_dir = os.path.join(tmp, "explain-" + method)
        run([CNNSCOPE, "explain", MODEL] + [os.path.join(data, n) for n in names] +
            ["--method", method, "-o", fig_dir])
        for image, name in zip(images, names):
            stem = os.path.splitext(os.path.basename(name))[0]
            fig = pixels(os.path.join(fig_dir, stem + ".png"))
            x0 = FIGURE_GAP + panel * (pw + FIGURE_GAP)
            theirs = fig[FIGURE_GAP:FIGURE_GAP + pw:scale_fig, x0:x0 + pw:scale_fig]
            mine = pixels(os.path.join(out, "img", "explain-%s-%s.png" % (image, method)))[::scale_mine, ::scale_mine]
            check(np.array_equal(mine, theirs), "explain-%s-%s.png has the pixels of `cnnscope explain %s "
                  "--method %s`" % (image, method, name, method))
            if method == "saliency":
                image_panel = fig[FIGURE_GAP:FIGURE_GAP + pw:scale_fig, FIGURE_GAP:FIGURE_GAP + pw:scale_fig]
                mine = pixels(os.path.join(out, "img", "explain-%s-image.png" % image))[::scale_mine, ::scale_mine]
                check(np.array_equal(mine, image_panel), "explain-%s-image.png is the input" % image)


# ---------------------------------------------------------------------------------------------
# Models the default one does not cover.

def write_model(path, c, size, nodes, tensors):
    rng = random.Random(7)
    w = cnnfile.ModelWriter({"name": os.path.basename(path)[:-4], "arch": "test", "input_shape": [c, size, size],
                             "resize": 0, "crop": [size, size], "mean": [0.5] * c, "std": [0.25] * c,
                             "class_names": ["a", "b", "c"]})
    for name, dims in tensors:
        n = 1
        for d in dims:
            n *= d
        w.add_tensor(name, dims, struct.pack("<%df" % n, *[rng.uniform(-0.5, 0.5) for _ in range(n)]))
    for op, name, inputs, attrs in nodes:
        w.add_node(op, name, inputs, attrs)
    w.write(path)


def write_images(folder, size):
    rng = random.Random(3)
    for c in "abc":
        os.makedirs(os.path.join(folder, c), exist_ok=True)
        for k in range(4):
            px = bytes(rng.randrange(256) for _ in range(size * size))
            Image.frombytes("L", (size, size), px).save(os.path.join(folder, c, "%d.png" % k))


def conv(name, k, c):
    return {"weight": name + ".weight", "bias": name + ".bias", "stride": [1, 1], "padding": [1, 1],
            "dilation": [1, 1], "groups": 1}


def test_other_models():
    folder = os.path.join(WORK, "gray12")
    shutil.rmtree(folder, ignore_errors=True)
    write_images(folder, 12)

    vgg = os.path.join(WORK, "vgglike.cnn")
    write_model(vgg, 1, 12, [
        ("input", "input", [], {}),
        ("conv2d", "features.0", ["input"], conv("features.0", 4, 1)),
        ("relu", "features.1", ["features.0"], {}),
        ("maxpool", "features.2", ["features.1"], {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0],
                                                   "dilation": [1, 1], "ceil_mode": 0}),
        ("conv2d", "features.3", ["features.2"], conv("features.3", 6, 4)),
        ("relu", "features.4", ["features.3"], {}),
        ("flatten", "flatten", ["features.4"], {}),
        ("linear", "classifier", ["flatten"], {"weight": "classifier.weight", "bias": "classifier.bias"}),
    ], [("features.0.weight", [4, 1, 3, 3]), ("features.0.bias", [4]), ("features.3.weight", [6, 4, 3, 3]),
        ("features.3.bias", [6]), ("classifier.weight", [3, 6 * 6 * 6]), ("classifier.bias", [3])])
    out = os.path.join(WORK, "vgglike-out")
    shutil.rmtree(out, ignore_errors=True)
    run([DRIVER, vgg, folder, out, 1, 5])
    with open(os.path.join(out, "index.html")) as f:
        page = f.read()
    explain = section(page, "explain")
    check("CAM does not apply to this model" in explain and "global average pool" in explain,
          "vgglike: the page says why CAM does not apply")
    check("<th>CAM</th>" not in explain and "<th>Grad-CAM</th>" in explain,
          "vgglike: no CAM column, a Grad-CAM column")
    files = os.listdir(os.path.join(out, "img"))
    check(not any(f.endswith("-cam.png") for f in files) and any(f.endswith("-gradcam.png") for f in files),
          "vgglike: Grad-CAM pictures, no CAM pictures")
    patches = section(page, "patches")
    check(re.findall(r"<h3>([^ ]+) \(", patches) == ["features.1", "features.4"],
          "vgglike: patches at both ReLUs (the ends of the 12x12 and 6x6 stages)")
    check(patches.count("No max pooling comes before this layer") == 1,
          "vgglike: only the first ReLU's projections are said to be image-independent")

    mlp = os.path.join(WORK, "mlp.cnn")
    write_model(mlp, 1, 12, [
        ("input", "input", [], {}),
        ("flatten", "flatten", ["input"], {}),
        ("linear", "fc", ["flatten"], {"weight": "fc.weight", "bias": "fc.bias"}),
    ], [("fc.weight", [3, 144]), ("fc.bias", [3])])
    out = os.path.join(WORK, "mlp-out")
    shutil.rmtree(out, ignore_errors=True)
    run([DRIVER, mlp, folder, out, 1, 5])
    with open(os.path.join(out, "index.html")) as f:
        page = f.read()
    check("has no convolution" in section(page, "filters"), "mlp: no filters, and the page says why")
    check("no maps to show" in section(page, "maps"), "mlp: no maps, and the page says why")
    check("no patches to show" in section(page, "patches"), "mlp: no patches, and the page says why")
    explain = section(page, "explain")
    check("Grad-CAM (and guided Grad-CAM) does not apply" in explain and "CAM does not apply" in explain,
          "mlp: the page says Grad-CAM and CAM do not apply")
    files = os.listdir(os.path.join(out, "img"))
    check(sum(f.endswith("-saliency.png") for f in files) > 0 and not any("gradcam" in f for f in files),
          "mlp: saliency pictures, no Grad-CAM pictures")


def main():
    os.makedirs(WORK, exist_ok=True)
    for test in (test_default_model, test_other_models):
        print(test.__name__)
        try:
            test()
        except Exception as e:   # a crash is a failure of this part, the others still run
            check(False, "%s: %s" % (test.__name__, e))
    if failures:
        print("\ntest_report_sections: %d failure(s)" % len(failures))
        for f in failures:
            print("  - " + f)
        sys.exit(1)
    print("\ntest_report_sections: all checks passed")


if __name__ == "__main__":
    main()
