#!/usr/bin/python3
"""test_faithfulness.py - CAM and Grad-CAM point at pixels the trained networks really use.

Runs bench/faithfulness.sh (N = 500 images per model) on the CIFAR-10 ResNet-56 of ../shared and
the default model weights/fashion_resnet20.cnn, and asserts its RESULT lines with fill=blur (the
deletion the bench explains; fill=mean lines are printed, not asserted): for each model and
method (cam, gradcam), over at least 500 images, deleting the 20 % of pixels the map ranks
highest must lower the explained class score more than deleting 20 % at random, with margin:
  - the mean extra drop (top minus random) is at least MIN_STDERRS = 3 standard errors above
    zero (one-sided p < 0.002 that the maps do no better than chance),
  - and the mean top-ranked drop is at least MIN_RATIO = 1.1 times the mean random drop.
A map that ignored the image (or was inverted) gives a ratio near 1 (or below), and fails.
Measured (the bench is deterministic: fixed images, seeded draws): CIFAR ResNet-56 CAM and
Grad-CAM 7.99 vs 5.40 (x1.48, 8.7 standard errors), Fashion ResNet-20 2.59 vs 2.17 (x1.20, 4.8).

Quick mode (CNNSCOPE_TEST_QUICK=1, the sanitized suite): N = 100 images per model; the ratio
(>= 1.1) and a positive extra drop are asserted, the 3-standard-error margin (which needs the
500 images: at 100, CIFAR x1.31 at 2.9 standard errors, Fashion x1.17 at 1.7) only printed.

Env: BUILD, CNNSCOPE, SHARED as in tests/run_all.sh (missing shared data is a failure, never a
skip). Exit status 0 only if every assertion holds.
"""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("cifar_resnet56", "fashion_resnet20")
METHODS = ("cam", "gradcam")
MIN_IMAGES = 500
MIN_STDERRS = 3.0
MIN_RATIO = 1.1
# Quick mode (tests/run_all.sh on the sanitized build): fewer images, the same assertions.
QUICK = os.environ.get("CNNSCOPE_TEST_QUICK") == "1"
if QUICK:
    MIN_IMAGES = 100     # ~45 s for ResNet-56 alone under ASan; 200 would double that


def main():
    env = dict(os.environ)
    env.setdefault("BUILD", "build")
    env.setdefault("PYTHON", sys.executable or "/usr/bin/python3")
    env.setdefault("SHARED", os.path.join(REPO, "..", "shared"))
    env["N"] = str(MIN_IMAGES)
    if QUICK:
        print("quick mode (CNNSCOPE_TEST_QUICK=1): %d images per model (500 in the full test); the "
              "%g-standard-error margin is printed, not asserted" % (MIN_IMAGES, MIN_STDERRS))
    p = subprocess.run(["bash", os.path.join(REPO, "bench", "faithfulness.sh")], cwd=REPO, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(p.stdout)
    if p.returncode != 0:
        print("test_faithfulness: FAIL: bench/faithfulness.sh exited with %d" % p.returncode)
        return 1
    results = {}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            fields = dict(kv.split("=", 1) for kv in line.split()[1:])
            if fields.get("fill") == "blur":
                results[(fields["model"], fields["method"])] = fields
    problems = []
    for model in MODELS:
        for method in METHODS:
            r = results.get((model, method))
            if r is None:
                problems.append("%s %s: no RESULT line" % (model, method))
                continue
            images = int(r["images"])
            top, rand = float(r["drop_top"]), float(r["drop_random"])
            diff, stderr = float(r["diff"]), float(r["diff_stderr"])
            verdict = []
            if images < MIN_IMAGES:
                verdict.append("only %d images (need %d)" % (images, MIN_IMAGES))
            if not diff > 0 or (not QUICK and not diff >= MIN_STDERRS * stderr):
                verdict.append("extra drop %.3f is not %g standard errors (%.3f) above 0"
                               % (diff, MIN_STDERRS, stderr))
            if not (rand > 0 and top >= MIN_RATIO * rand):
                verdict.append("top-ranked drop %.3f is not %g x the random drop %.3f" % (top, MIN_RATIO, rand))
            print("%-17s %-8s %d images: score drop %.3f (top-ranked 20%%) vs %.3f (random 20%%), "
                  "x%.2f, extra %.3f +- %.3f  %s" % (model, method, images, top, rand, top / rand if rand else 0,
                                                    diff, stderr, "FAIL: " + "; ".join(verdict) if verdict else "ok"))
            problems += ["%s %s: %s" % (model, method, v) for v in verdict]
    if problems:
        print("test_faithfulness: FAIL, %d problem(s):" % len(problems))
        for pr in problems:
            print("  " + pr)
        return 1
    print("test_faithfulness: PASS (CAM and Grad-CAM beat random deletion on %s)" % ", ".join(MODELS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
