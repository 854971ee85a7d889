#!/usr/bin/env bash
# faithfulness.sh - do CAM and Grad-CAM point at what the network actually uses?
#
# The deletion test: for each image, delete the 20 % of its pixels that the method ranks highest
# and see how much the explained class score (the logit of the top-1 class on the intact image)
# drops; compare with deleting 20 % of the pixels at random (one seeded draw per image). A
# faithful map gives the larger drop. Ties in a map (Grad-CAM's zeros) are broken at random.
#
# "Deleting" a pixel replaces it (all channels) with the same pixel of a strongly blurred copy
# of the image (Gaussian, sigma = width / 16: 2 pixels at 32x32), which removes its detail
# without drawing anything new (the blur perturbation of Fong & Vedaldi 2017). The other usual
# choice, the training mean colour, is measured too and printed as fill=mean, but not asserted:
# 20 % of scattered pixels set to the mean cover a 32x32 image with isolated dots, a pattern
# unlike any training image that by itself nearly destroys the score (CIFAR ResNet-56: random
# deletion then drops the score more than CAM-ranked deletion, 10.3 vs 9.7, while CAM-ranked
# deletion beats deleting another image's CAM region of the same shape, 9.7 vs 8.0); that
# measures the network's sensitivity to the dots, not the map's faithfulness.
#
# Models: the CIFAR-10 ResNet-56 of ../shared (real trained weights; the first N/10 test images
# of each class in sorted order) and the default model weights/fashion_resnet20.cnn (the first
# N/10 Fashion-MNIST test images of each class).
#
#   bench/faithfulness.sh                           N=500 images per model
#   N=1000 bench/faithfulness.sh
#   MODELS=cifar_resnet56 bench/faithfulness.sh     one model only
#
# Prints one line per model, method and fill, e.g.
#   RESULT model=cifar_resnet56 method=cam fill=blur images=500 drop_top=8.0 drop_random=5.4 diff=2.6 diff_stderr=0.2 ratio=1.47
# (mean score drops; diff = drop_top - drop_random, with its standard error over images), which
# tests/test_faithfulness.py asserts for fill=blur. Env: BUILD (build), PYTHON
# (/usr/bin/python3, needs numpy), SHARED (../shared beside the repository), THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
THREADS=${THREADS:-2}
N=${N:-500}
FRACTION=0.2
CNNSCOPE=${CNNSCOPE:-$BUILD/cnnscope}
# OpenMP threads that sleep instead of spinning while they wait: on a shared machine spinning
# threads can make a run ten times slower.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
work=$BUILD/faithfulness
mkdir -p "$work"

fail() { echo "faithfulness.sh: $*" >&2; exit 2; }
[ -x "$CNNSCOPE" ] || fail "$CNNSCOPE is missing (make first)"

# --- models and images ---------------------------------------------------------------------
prepare_cifar() {
  local checkpoint=$SHARED/data/cifar10/resnet56-4bfd9763.th
  cifar_test=$SHARED/data/cifar10/test
  [ -f "$checkpoint" ] || fail "$checkpoint is missing (../shared/data/cifar10, see its README)"
  [ -d "$cifar_test" ] || fail "$cifar_test is missing (../shared/data/cifar10, see its README)"
  cifar_model=$work/cifar_resnet56.cnn
  if [ ! -f "$cifar_model" ] || [ "$cifar_model" -ot "$checkpoint" ] || [ "$cifar_model" -ot scripts/convert.py ]; then
    "$PYTHON" scripts/convert.py "$checkpoint" --arch cifar_resnet56 -o "$cifar_model" >/dev/null
  fi
}

prepare_fashion() {
  fashion_model=weights/fashion_resnet20.cnn
  fashion_test=$BUILD/fashion-test
  [ -f "$fashion_model" ] || fail "$fashion_model is missing (the default model, see scripts/train_fashion.py)"
  [ -d "$fashion_test" ] || "$PYTHON" scripts/fashion_to_folder.py --split test -o "$fashion_test" >/dev/null
}

# The first N/10 images of each class folder, in sorted order.
pick_images() {   # DIR OUT_LIST
  local per_class=$(( N / 10 ))
  : > "$2"
  for class in $(ls "$1" | LC_ALL=C sort); do
    # sed reads to the end (head would close the pipe early: SIGPIPE, and pipefail stops us)
    ls "$1/$class" | LC_ALL=C sort | sed -n "1,${per_class}s|^|$1/$class/|p" >> "$2"
  done
}

# Writes D/x_<mask>_<fill>.npy: x with the pixels of each mask (cam, gradcam: the top-ranked
# FRACTION; random) replaced from each fill (blur, mean).
make_deleted_inputs() {   # D
  "$PYTHON" - "$1" "$FRACTION" <<'PYTHON'
import sys
import numpy as np
d, fraction = sys.argv[1], float(sys.argv[2])
x = np.load(d + "/x.npy")                                   # [N,C,H,W]
n, c, h, w = x.shape
k = int(round(fraction * h * w))
rng = np.random.default_rng(20240611)


def blurred(x, sigma):
    """Separable Gaussian blur of [N,C,H,W], edges replicated."""
    r = int(3 * sigma + 0.5)
    g = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    p = np.pad(x, ((0, 0), (0, 0), (r, r), (0, 0)), mode="edge")
    y = sum(g[i] * p[:, :, i:i + h, :] for i in range(2 * r + 1))
    p = np.pad(y, ((0, 0), (0, 0), (0, 0), (r, r)), mode="edge")
    return sum(g[i] * p[:, :, :, i:i + w] for i in range(2 * r + 1)).astype(np.float32)


fills = {"blur": blurred(x, w / 16.0), "mean": np.zeros_like(x)}   # 0 is the training mean


def delete(pixels, fill):                                    # pixels: [N,k] flat indices
    out = x.copy().reshape(n, c, h * w)
    src = fill.reshape(n, c, h * w)
    for i in range(n):
        out[i, :, pixels[i]] = src[i, :, pixels[i]]
    return out.reshape(n, c, h, w)


masks = {}
for method in ("cam", "gradcam"):
    heat = np.load("%s/%s.npy" % (d, method)).reshape(n, h * w)
    # highest first; ties (Grad-CAM's zeros) in random order
    masks[method] = np.array([np.lexsort((rng.random(h * w), -heat[i]))[:k] for i in range(n)])
masks["random"] = np.array([rng.permutation(h * w)[:k] for _ in range(n)])
for mask, pixels in masks.items():
    for fill in fills:
        np.save("%s/x_%s_%s.npy" % (d, mask, fill), delete(pixels, fills[fill]))
PYTHON
}

# Prints the RESULT lines from the dumped logits of every variant.
report() {   # D NAME LAST_NODE VARIANTS...
  "$PYTHON" - "$@" <<'PYTHON'
import re
import sys
import numpy as np
d, name, last, variants = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
logits = {v: np.load("%s/dump_%s/%s.npy" % (d, v, last)) for v in variants}
top1 = logits["x"].argmax(axis=1)
rows = np.arange(len(top1))
score = logits["x"][rows, top1]
for method in ("cam", "gradcam"):
    explained = [int(m) for m in re.findall(r" of class (\d+) ", open("%s/%s.txt" % (d, method)).read())]
    if explained != top1.tolist():
        sys.exit("faithfulness.sh: %s %s explained other classes than the top-1" % (name, method))
for fill in ("blur", "mean"):
    random_drop = score - logits["x_random_" + fill][rows, top1]
    for method in ("cam", "gradcam"):
        top_drop = score - logits["x_%s_%s" % (method, fill)][rows, top1]
        diff = top_drop - random_drop
        print("RESULT model=%s method=%s fill=%s images=%d drop_top=%.4f drop_random=%.4f "
              "diff=%.4f diff_stderr=%.4f ratio=%.3f"
              % (name, method, fill, len(top1), top_drop.mean(), random_drop.mean(), diff.mean(),
                 diff.std(ddof=1) / np.sqrt(len(diff)), top_drop.mean() / random_drop.mean()))
PYTHON
}

# --- the test for one model ----------------------------------------------------------------
run_model() {   # NAME MODEL IMAGE_DIR
  local name=$1 model=$2 dir=$3 d=$work/$1 last variant method
  mkdir -p "$d"
  pick_images "$dir" "$d/images.txt"
  xargs -a "$d/images.txt" "$CNNSCOPE" preprocess "$model" --threads "$THREADS" -o "$d/x.npy" >/dev/null
  last=$("$CNNSCOPE" info "$model" | awk '$1 ~ /^[0-9]+$/ {name = $2} END {print name}')
  for method in cam gradcam; do
    "$CNNSCOPE" explain "$model" "$d/x.npy" --method "$method" --threads "$THREADS" \
      --save-raw "$d/$method.npy" > "$d/$method.txt"
  done
  make_deleted_inputs "$d"
  local variants="x x_cam_blur x_gradcam_blur x_random_blur x_cam_mean x_gradcam_mean x_random_mean"
  for variant in $variants; do
    rm -rf "$d/dump_$variant"
    "$CNNSCOPE" dump "$model" --input "$d/$variant.npy" --layer "$last" --threads "$THREADS" \
      -o "$d/dump_$variant" >/dev/null
  done
  report "$d" "$name" "$last" $variants
}

echo "faithfulness: deleting the top-ranked vs random $(awk "BEGIN {print $FRACTION * 100}") % of pixels, $N images per model"
for m in ${MODELS:-cifar_resnet56 fashion_resnet20}; do
  case $m in
    cifar_resnet56) prepare_cifar; run_model cifar_resnet56 "$cifar_model" "$cifar_test" ;;
    fashion_resnet20) prepare_fashion; run_model fashion_resnet20 "$fashion_model" "$fashion_test" ;;
    *) fail "unknown model '$m' in MODELS (cifar_resnet56, fashion_resnet20)" ;;
  esac
done
