"""vis_test_data.py - shared helpers of the representation-space tests (test_features,
test_neighbors, test_pca, test_tsne, test_umap): running the CLI, real features of the CIFAR-10
ResNet-56 (../shared), and a checker that collects failures.

Real features: `cnnscope features` at layer `flatten` (64 penultimate features) of the published
ResNet-56, on a class-balanced subset of the CIFAR-10 test images (the first PER_CLASS files of
each class folder, linked into $BUILD/vis-test/cifar-subset). They are computed once and reused
while the cnnscope binary is older than them.
"""
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", "build")
CNNSCOPE = os.environ.get("CNNSCOPE", os.path.join(BUILD, "cnnscope"))
SHARED = os.environ.get("SHARED") or os.path.join(REPO, "..", "shared")
PYTHON = "/usr/bin/python3"
TOOL = os.path.join(BUILD, "tests", "tool_vis_graphs")
WORK = os.path.join(BUILD, "vis-test")
PER_CLASS = 200


class Checker:
    """Collects failures; `done()` prints them and exits 1 if there was any."""

    def __init__(self, name):
        self.name = name
        self.failures = []

    def check(self, ok, message):
        print(("  ok    " if ok else "  FAIL  ") + message)
        if not ok:
            self.failures.append(message)
        return ok

    def done(self):
        if self.failures:
            print("\n%s: %d failure(s):" % (self.name, len(self.failures)))
            for f in self.failures:
                print("  - " + f)
            sys.exit(1)
        print("\n%s: all checks passed" % self.name)
        sys.exit(0)


def run(cmd, what=None, expect=0):
    """Runs cmd; returns (stdout+stderr, seconds). Raises if the exit status is not `expect`."""
    t0 = time.time()
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != expect:
        raise RuntimeError("%s: exit %d (expected %d): %s\n%s"
                           % (what or cmd[0], p.returncode, expect, " ".join(map(str, cmd)), p.stdout[-3000:]))
    return p.stdout, time.time() - t0


def need_shared():
    ckpt = os.path.join(SHARED, "data", "cifar10", "resnet56-4bfd9763.th")
    test_dir = os.path.join(SHARED, "data", "cifar10", "test")
    if not os.path.isfile(ckpt) or not os.path.isdir(test_dir):
        print("FAIL: the shared CIFAR-10 data is missing (%s, %s); see ../shared/README.md" % (ckpt, test_dir))
        sys.exit(1)
    return ckpt, test_dir


def model(name="resnet56"):
    """Converts the shared checkpoint to $BUILD/vis-test/<name>.cnn (once)."""
    need_shared()
    os.makedirs(WORK, exist_ok=True)
    ckpt = os.path.join(SHARED, "data", "cifar10", {"resnet56": "resnet56-4bfd9763.th",
                                                    "resnet20": "resnet20-12fca82f.th"}[name])
    out = os.path.join(WORK, name + ".cnn")
    if not os.path.isfile(out):
        run([PYTHON, os.path.join(REPO, "scripts", "convert.py"), ckpt, "--arch", "cifar_" + name, "-o", out],
            "convert " + name)
    return out


def subset_folder(per_class, name):
    """An ImageFolder of symlinks to the first `per_class` images of each CIFAR-10 test class."""
    _, test_dir = need_shared()
    root = os.path.join(WORK, name)
    classes = sorted(d for d in os.listdir(test_dir) if os.path.isdir(os.path.join(test_dir, d)))
    for cls in classes:
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        files = sorted(os.listdir(os.path.join(test_dir, cls)))[:per_class]
        for f in files:
            link = os.path.join(root, cls, f)
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(os.path.join(test_dir, cls, f)), link)
    return root, classes


def cifar_features(per_class=PER_CLASS):
    """Path of feats.npy ([10 * per_class, 64] penultimate ResNet-56 features), made if needed."""
    m = model("resnet56")
    folder, _ = subset_folder(per_class, "cifar-%d" % per_class)
    feats = os.path.join(WORK, "cifar-%d.feats.npy" % per_class)
    fresh = os.path.isfile(feats) and os.path.getmtime(feats) > os.path.getmtime(CNNSCOPE)
    if not fresh:
        out, dt = run([CNNSCOPE, "features", m, folder, "--layer", "flatten", "-o", feats, "--threads", "2"],
                      "cnnscope features")
        print("  features: %s (%.1f s)" % (out.strip(), dt))
    return feats
