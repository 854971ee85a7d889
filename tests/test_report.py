"""test_report.py - `cnnscope report MODEL DIR`: the folder it writes (vis/report.h).

On 300 Fashion-MNIST test images (a fixed sample, --images 300) with the default model:
- the folder holds index.html, data.js, timings.js, report.css, report.js; every <img> of the
  page and every thumbnail sheet of data.js exists; nothing else is left in it;
- data.js parses and describes the 300 images (labels from their folders, every class);
- the accuracy and the per-image predictions equal `cnnscope eval` on the same images; the
  confusion matrix sums to N and its diagonal to the correct count;
- the neighbours equal a brute-force search (numpy) over `cnnscope features` at the same layer;
- a second run with other --threads and --batch gives the same bytes (timings.js aside);
- a run with fewer images leaves nothing of the bigger one;
- a missing DIR, a corrupt model or an -o folder that is not a report fail with exit 2 and
  leave the previous folder as it was, with no temporary folder left;
- an unreadable image in a plain folder (no labels) is left out, and the page says so.
Quick mode (CNNSCOPE_TEST_QUICK=1, the sanitized suite): --images 150 instead of 300; same checks.
"""
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vis_common import (CNNSCOPE, BUILD, PYTHON, QUICK, Failure, main_wrapper, private_dir,  # noqa: E402
                        quick_note, run)

MODEL = "weights/fashion_resnet20.cnn"
DATA = os.path.join(BUILD, "fashion-test")
N = 150 if QUICK else 300   # quick mode (tests/run_all.sh, sanitized build): a smaller sample
FEW = 40
FIXED_FILES = {"index.html", "data.js", "timings.js", "report.css", "report.js"}

WORK = private_dir("report")
OUT = os.path.join(WORK, "out")
state = {}


def report(out, *extra, data=DATA, model=MODEL, check=True):
    cmd = [CNNSCOPE, "report", model, data, "-o", out] + list(extra)
    if check:
        return run(cmd, "cnnscope report")
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Page(html.parser.HTMLParser):
    """The parts of index.html the tests look at."""

    def __init__(self, text):
        super().__init__()
        self.imgs, self.sections, self.ids, self.scripts = [], [], {}, []
        self.scatters, self.section = [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.section = a.get("id")
            self.sections.append(self.section)
        if tag == "img":
            self.imgs.append(a.get("src"))
        if tag == "script" and "src" in a:
            self.scripts.append(a["src"])
        if "id" in a:
            if a["id"] in self.ids:
                raise Failure("index.html: id '%s' twice" % a["id"])
            self.ids[a["id"]] = self.section
        if tag == "div" and "scatter" in a.get("class", "").split():
            self.scatters.append((self.section, a.get("data-embedding")))


def read_tree(root):
    """{relative path: bytes} of every file under root."""
    files = {}
    for d, _, names in os.walk(root):
        for name in names:
            p = os.path.join(d, name)
            with open(p, "rb") as f:
                files[os.path.relpath(p, root)] = f.read()
    return files


def load_data(out):
    with open(os.path.join(out, "data.js")) as f:
        text = f.read()
    prefix = "window.CNNSCOPE_DATA ="
    if not text.startswith(prefix) or not text.rstrip().endswith(";"):
        raise Failure("data.js does not look like 'window.CNNSCOPE_DATA = {...};'")
    return json.loads(text[len(prefix):].rstrip().rstrip(";"))


def no_leftovers():
    left = [n for n in os.listdir(WORK) if ".tmp." in n or ".old." in n]
    if left:
        raise Failure("temporary folders left beside the report: %s" % left)


def check_folder(out, n):
    """The files, the page structure and data.js of a report of n images; returns (page, data)."""
    for name in FIXED_FILES:
        if not os.path.isfile(os.path.join(out, name)):
            raise Failure("%s: no %s" % (out, name))
    with open(os.path.join(out, "index.html")) as f:
        text = f.read()
    page = Page(text)
    expected = ["model", "classes", "filters", "maps", "patches", "space", "mistakes", "explain"]
    if page.sections != expected:
        raise Failure("sections %s, expected %s" % (page.sections, expected))
    if page.scripts[-3:] != ["data.js", "timings.js", "report.js"]:
        raise Failure("scripts at the end of the page: %s" % page.scripts)
    for hook in ("tooltip", "neighbors"):
        if page.ids.get(hook, "missing") != "space":
            raise Failure("#%s is not inside <section id=\"space\">" % hook)
    if "time-taken" not in page.ids:
        raise Failure("no <span id=\"time-taken\">")
    for src in page.imgs:
        if not src or src.startswith(("/", "http:", "https:", "file:")) or ".." in src:
            raise Failure("<img src=\"%s\">: not a relative path inside the folder" % src)
        if not os.path.isfile(os.path.join(out, src)):
            raise Failure("<img src=\"%s\"> does not exist" % src)

    d = load_data(out)
    if d["n"] != n:
        raise Failure("data.js: n = %d, expected %d" % (d["n"], n))
    for key in ("labels", "preds", "names", "probs"):
        if len(d[key]) != n:
            raise Failure("data.js: %d %s for %d images" % (len(d[key]), key, n))
    k = d["neighbors"]["k"]
    if k != 8 or len(d["neighbors"]["idx"]) != n * k:
        raise Failure("data.js: neighbours k = %d with %d entries" % (k, len(d["neighbors"]["idx"])))
    names = [e["name"] for e in d["embeddings"]]
    if names != ["PCA", "t-SNE", "UMAP"]:
        raise Failure("data.js: embeddings %s" % names)
    if sorted(page.scatters) != [("space", str(i)) for i in range(len(names))]:
        raise Failure("scatter boxes %s, expected one per embedding in #space" % page.scatters)
    for e in d["embeddings"]:
        xy = np.array(e["xy"])
        if xy.shape != (2 * n,) or xy.min() < 0 or xy.max() > 1 or xy.max() < 0.999:
            raise Failure("%s: xy has %s entries in [%g, %g], expected %d in [0, 1] reaching 1"
                          % (e["name"], xy.shape, xy.min(), xy.max(), 2 * n))
    # thumbnail sheets: every image has its cell
    from PIL import Image
    t = d["thumbs"]
    sheets = (n + t["per_sheet"] - 1) // t["per_sheet"]
    if len(t["sheets"]) != sheets:
        raise Failure("data.js: %d sheets for %d images" % (len(t["sheets"]), n))
    for s, src in enumerate(t["sheets"]):
        count = min(t["per_sheet"], n - s * t["per_sheet"])
        rows = (count + t["cols"] - 1) // t["cols"]
        with Image.open(os.path.join(out, src)) as im:
            if im.size != (t["cols"] * t["size"], rows * t["size"]):
                raise Failure("%s: %s, expected %dx%d" % (src, im.size, t["cols"] * t["size"],
                                                          rows * t["size"]))
    # nothing in the folder that the page or data.js does not use
    used = FIXED_FILES | set(page.imgs) | set(t["sheets"])
    extra = sorted(set(read_tree(out)) - used)
    if extra:
        raise Failure("files nobody refers to (stale?): %s" % extra[:10])
    return page, d, text


def test_report():
    if not os.path.isdir(DATA):
        run([PYTHON, "scripts/fashion_to_folder.py", "--split", "test", "-o", DATA], "fashion_to_folder")
    stdout, stderr = report(OUT, "--images", str(N), "--threads", "2")
    last = stdout.strip().splitlines()[-1]
    if last != os.path.join(os.path.abspath(OUT), "index.html"):
        raise Failure("last line of stdout is '%s', expected the absolute path of index.html" % last)
    for step in ("classify", "space", "t-SNE", "UMAP"):
        if not re.search(r"report: +%s +[0-9.]+ s" % re.escape(step), stderr):
            raise Failure("no timing of '%s' on stderr:\n%s" % (step, stderr))
    page, d, text = check_folder(OUT, N)
    no_leftovers()
    classes = d["dataset_classes"]
    if len(classes) != 10 or sorted(set(d["labels"])) != list(range(10)):
        raise Failure("the sample of %d images holds classes %s" % (N, sorted(set(d["labels"]))))
    if d["names"] != sorted(d["names"]) or len(set(d["names"])) != N:
        raise Failure("names are not distinct and in folder order")
    for name, label in zip(d["names"], d["labels"]):
        if name.split("/")[0] != classes[label]:
            raise Failure("%s has label %d (%s)" % (name, label, classes[label]))
        if not os.path.isfile(os.path.join(DATA, name)):
            raise Failure("%s is not an image of %s" % (name, DATA))
    state.update(page=page, data=d, html=text, stdout=stdout, tree=read_tree(OUT))


def subset_folder():
    """An ImageFolder of links to the report's images: the same images in the same order."""
    sub = os.path.join(WORK, "subset")
    if not os.path.isdir(sub):
        for c in state["data"]["dataset_classes"]:
            os.makedirs(os.path.join(sub, c))
        for name in state["data"]["names"]:
            os.symlink(os.path.abspath(os.path.join(DATA, name)), os.path.join(sub, name))
    return sub


def test_accuracy_equals_eval():
    d = state["data"]
    csv = os.path.join(WORK, "eval.csv")
    out, _ = run([CNNSCOPE, "eval", MODEL, subset_folder(), "--predictions", csv], "cnnscope eval")
    m = re.search(r"top-1 accuracy: ([0-9.]+) % \((\d+) / (\d+)\)", out)
    if not m or int(m.group(3)) != N:
        raise Failure("cnnscope eval printed: %s" % out)
    acc, correct = m.group(1), int(m.group(2))
    shown = re.search(r"Top-1 accuracy: <b>([0-9.]+) %</b>", state["html"])
    if not shown or shown.group(1) != acc:
        raise Failure("the page shows top-1 %s, cnnscope eval says %s" % (shown and shown.group(1), acc))
    if "top-1 accuracy: %s %% (%d / %d)" % (acc, correct, N) not in state["stdout"]:
        raise Failure("cnnscope report printed no 'top-1 accuracy: %s %% (%d / %d)'" % (acc, correct, N))
    with open(csv) as f:
        rows = [line.rstrip("\n").split(",") for line in f][1:]
    if [r[0] for r in rows] != d["names"]:
        raise Failure("cnnscope eval saw other images than the report")
    preds = [int(r[2]) for r in rows]
    diff = [i for i in range(N) if preds[i] != d["preds"][i]]
    if diff:
        raise Failure("%d predictions differ from cnnscope eval, first: %s" % (len(diff), d["names"][diff[0]]))
    probs = np.array([float(r[3]) for r in rows])
    if np.abs(probs - np.array(d["probs"])).max() > 1e-4:
        raise Failure("probabilities differ from cnnscope eval by %g" % np.abs(probs - d["probs"]).max())
    # the confusion matrix of the page
    table = re.search(r'<table class="confusion" id="confusion-matrix">(.*?)</table>', state["html"], re.S)
    if not table:
        raise Failure("no confusion matrix table")
    body = table.group(1).split("<tbody>")[1]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    cm = np.array([[int(v.replace(",", "")) for v in re.findall(r"<td[^>]*>([0-9,]+)</td>", r)][:10]
                   for r in rows])
    expected = np.zeros((10, 10), dtype=int)
    for label, pred in zip(d["labels"], d["preds"]):
        expected[label, pred] += 1
    if cm.shape != (10, 10) or cm.sum() != N or np.trace(cm) != correct or not (cm == expected).all():
        raise Failure("confusion matrix %s (sum %d, diagonal %d), expected sum %d, diagonal %d"
                      % (cm.shape, cm.sum(), np.trace(cm), N, correct))


def test_neighbors_brute_force():
    d = state["data"]
    feats = os.path.join(WORK, "feats.npy")
    run([CNNSCOPE, "features", MODEL, subset_folder(), "--layer", d["neighbors"]["layer"], "-o", feats],
        "cnnscope features")
    x = np.load(feats).astype(np.float64)
    if x.shape[0] != N:
        raise Failure("features: %s rows" % (x.shape,))
    dist = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0))
    np.fill_diagonal(dist, np.inf)
    k = d["neighbors"]["k"]
    idx = np.array(d["neighbors"]["idx"]).reshape(N, k)
    if (idx == np.arange(N)[:, None]).any():
        raise Failure("an image is its own neighbour")
    truth = np.argsort(dist, axis=1, kind="stable")[:, :k]
    got_d = np.take_along_axis(dist, idx, axis=1)
    true_d = np.take_along_axis(dist, truth, axis=1)
    worst = np.abs(got_d - true_d).max()
    if worst > 1e-4 * max(1.0, true_d.max()):
        raise Failure("neighbour distances differ from brute force by %g" % worst)
    same = (idx == truth).mean()
    if same < 0.99:
        raise Failure("only %.1f %% of the neighbours equal brute force" % (100 * same))


def test_same_bytes_other_threads():
    report(OUT, "--images", str(N), "--threads", "1", "--batch", "7")
    again = read_tree(OUT)
    first = state["tree"]
    if set(again) != set(first):
        raise Failure("other files: %s" % sorted(set(again) ^ set(first))[:10])
    differ = [p for p in sorted(first) if p != "timings.js" and first[p] != again[p]]
    if differ:
        raise Failure("files differ between --threads 2 and --threads 1: %s" % differ[:10])
    no_leftovers()


def test_fewer_images_nothing_stale():
    report(OUT, "--images", str(FEW))
    check_folder(OUT, FEW)   # fails on any file the page does not use
    state["small_tree"] = read_tree(OUT)
    no_leftovers()


def failing(what, out, *args, data=DATA, model=MODEL, expect=""):
    before = read_tree(out) if os.path.isdir(out) else None
    p = report(out, *args, data=data, model=model, check=False)
    if p.returncode != 2:
        raise Failure("%s: exit %d, expected 2\n%s" % (what, p.returncode, p.stderr))
    if expect not in p.stderr:
        raise Failure("%s: the message does not name '%s': %s" % (what, expect, p.stderr))
    after = read_tree(out) if os.path.isdir(out) else None
    if before != after:
        raise Failure("%s: the previous folder changed" % what)
    no_leftovers()


def test_failures_leave_previous_report():
    missing = os.path.join(WORK, "no-such-folder")
    failing("missing DIR", OUT, "--images", "10", data=missing, expect="no-such-folder")
    bad = os.path.join(WORK, "corrupt.cnn")
    with open(MODEL, "rb") as f:
        head = f.read(4096)
    with open(bad, "wb") as f:
        f.write(head)   # the header of a real model, then nothing
    failing("corrupt model", OUT, "--images", "10", model=bad, expect="corrupt.cnn")
    if read_tree(OUT) != state["small_tree"]:
        raise Failure("the report changed")
    # a folder that no report wrote is never replaced
    other = os.path.join(WORK, "not-a-report")
    os.makedirs(other)
    with open(os.path.join(other, "notes.txt"), "w") as f:
        f.write("mine\n")
    failing("-o on a foreign folder", other, "--images", "10", expect="not a cnnscope report")


def test_unreadable_image_unlabelled():
    plain = os.path.join(WORK, "plain")
    os.makedirs(plain)
    names = state["data"]["names"][:12]
    for i, name in enumerate(names):
        shutil.copy(os.path.join(DATA, name), os.path.join(plain, "img%02d.png" % i))
    with open(os.path.join(plain, "img05b.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nthis is not an image")
    out = os.path.join(WORK, "plain-report")
    stdout, stderr = report(out, data=plain)
    page, d, text = check_folder(out, 12)
    if d["skipped"] != 1 or "img05b.png" in d["names"]:
        raise Failure("data.js: skipped %d, names %s" % (d["skipped"], d["names"]))
    if "1 unreadable image was left out: img05b.png" not in text:
        raise Failure("the page does not say that img05b.png was left out")
    if "(1 unreadable, left out)" not in stdout:
        raise Failure("stdout does not say that one image was left out: %s" % stdout)
    if set(d["labels"]) != {-1} or "confusion-matrix" in text or "Top-1" in text:
        raise Failure("a plain folder got labels or an accuracy")
    no_leftovers()


if __name__ == "__main__":
    quick_note("--images %d" % N)
    sys.exit(main_wrapper([
        ("report folder", test_report),
        ("accuracy and predictions equal cnnscope eval", test_accuracy_equals_eval),
        ("neighbours equal brute force", test_neighbors_brute_force),
        ("same bytes with other --threads", test_same_bytes_other_threads),
        ("fewer images leave nothing stale", test_fewer_images_nothing_stale),
        ("failures leave the previous report", test_failures_leave_previous_report),
        ("unreadable image, unlabelled folder", test_unreadable_image_unlabelled),
    ], cleanup=WORK))
