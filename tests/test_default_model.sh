#!/usr/bin/env bash
# The committed default models (weights/fashion_{resnet20,alexnet,vgg}.cnn, trained by
# scripts/train_fashion.py --arch resnet20|alexnet|vgg): each file is at most 2 MB, loads, has
# the metadata training used and the receptive fields its layers imply, and cnnscope's top-1 on
# the 10,000 Fashion-MNIST test images equals the PyTorch figure recorded at training time
# (weights/fashion_<arch>.json) within 0.1 points.
# Quick mode (CNNSCOPE_TEST_QUICK=1, the sanitized suite): eval on the first 50 test images of
# each class (500, scripts/fashion_to_folder.py --limit 50) instead; cnnscope's prediction must equal PyTorch's (the file's weights loaded
# into scripts/train_fashion.py's network) on every image, probabilities within 1e-3.
set -euo pipefail
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
CNNSCOPE=${CNNSCOPE:-$BUILD/cnnscope}
data=$BUILD/fashion-test
MAX_BYTES=2000000
[ -d "$data" ] || "$PYTHON" scripts/fashion_to_folder.py --split test -o "$data"
QUICK=${CNNSCOPE_TEST_QUICK:-0}
QUICK_PER_CLASS=50
if [ "$QUICK" = 1 ]; then
  quick_data=$BUILD/fashion-quick$QUICK_PER_CLASS   # the first QUICK_PER_CLASS images of each class
  [ -d "$quick_data" ] ||
    "$PYTHON" scripts/fashion_to_folder.py --split test --limit "$QUICK_PER_CLASS" -o "$quick_data"
  echo "quick mode (CNNSCOPE_TEST_QUICK=1): eval on $QUICK_PER_CLASS images per class, compared image by image with PyTorch"
fi

# name, arch recorded in the file, then "node:rf" pairs that `cnnscope info` must show: the
# first conv sees its kernel, the last feature node what the kernels, pools and strides add up to.
check_model() {
  local name=$1 arch=$2; shift 2
  local model=weights/$name.cnn info=$BUILD/default-info-$name.txt eval=$BUILD/default-eval-$name.txt
  echo "== $model"
  [ -f "$model" ] || { echo "FAIL: $model is missing"; exit 1; }
  local bytes; bytes=$(stat -c %s "$model")
  [ "$bytes" -le $MAX_BYTES ] || { echo "FAIL: $model is $bytes bytes (limit $MAX_BYTES)"; exit 1; }
  echo "size: $bytes bytes"

  "$CNNSCOPE" info "$model" >"$info"; head -n 5 "$info"
  grep -q "^model:   $name (arch $arch)" "$info" || { echo "FAIL: $model: name/arch"; exit 1; }
  grep -q "input:   1x28x28 (grayscale)" "$info" || { echo "FAIL: $model: input"; exit 1; }
  grep -q "normalise: mean 0.286, std 0.353" "$info" || { echo "FAIL: $model: mean/std"; exit 1; }
  grep -q "classes: 10 (T-shirt/top" "$info" || { echo "FAIL: $model: classes"; exit 1; }
  local pair node want got
  for pair in "$@"; do
    node=${pair%%:*}; want=${pair#*:}
    got=$(awk -v n="$node" '$2 == n { print $7 }' "$info")
    [ "$got" = "$want" ] || { echo "FAIL: $model: node $node has rf '$got', expected $want"; exit 1; }
  done

  if [ "$QUICK" = 1 ]; then
    local pred=$BUILD/default-pred-$name.csv
    "$CNNSCOPE" eval "$model" "$quick_data" --threads 2 --predictions "$pred" | tee "$eval"
    "$PYTHON" - "$model" "$quick_data" "$pred" "$eval" $((10 * QUICK_PER_CLASS)) <<'PY'
import csv, re, sys
import numpy as np
import torch
from PIL import Image
sys.path.insert(0, "scripts")
import cnnfile, train_fashion
model, folder, pred_csv, eval_txt, want = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
m = cnnfile.read_model(model)
net = {"fashion_resnet20": train_fashion.resnet20, "fashion_alexnet": train_fashion.FashionAlexNet,
       "fashion_vgg": train_fashion.FashionVGG}[m["meta"]["name"]]()
state = {k: torch.from_numpy(np.frombuffer(b, dtype="<f4").reshape(dims).copy())
         for k, (dims, b) in m["tensors"].items()}
missing, unexpected = net.load_state_dict(state, strict=False)
assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
net.eval()
mean, std = m["meta"]["mean"][0], m["meta"]["std"][0]
with open(pred_csv, newline="") as f:
    rows = list(csv.DictReader(f))
assert len(rows) == want, "%d rows in %s, expected %d" % (len(rows), pred_csv, want)
x = np.stack([np.asarray(Image.open("%s/%s" % (folder, r["path"])).convert("L"), dtype=np.float32)
              for r in rows])[:, None] / 255.0
with torch.no_grad():
    p = torch.softmax(net(torch.from_numpy((x - mean) / std)), dim=1).numpy()
ours = np.array([int(r["pred"]) for r in rows])
prob = np.array([float(r["prob"]) for r in rows])
label = np.array([int(r["label"]) for r in rows])
theirs = p.argmax(axis=1)
differ = int((ours != theirs).sum())
diff = float(np.abs(prob - p[np.arange(len(rows)), ours]).max())
top1 = 100.0 * float((ours == label).mean())
printed = float(re.search(r"^top-1 accuracy: ([0-9.]+) %", open(eval_txt).read(), re.M).group(1))
print("%s: %d images, cnnscope top-1 %.2f %%, PyTorch differs on %d, max |prob diff| %.2g"
      % (m["meta"]["name"], len(rows), top1, differ, diff))
assert differ == 0, "cnnscope and PyTorch predict differently on %d of %d images" % (differ, len(rows))
assert diff <= 1e-3, "probabilities differ from PyTorch's softmax by %.3g (limit 1e-3)" % diff
assert abs(printed - top1) < 0.006, "eval printed %.2f %%, the CSV gives %.2f %%" % (printed, top1)
assert top1 >= 85.0, "accuracy %.2f %% on the subset is below 85 %%" % top1
PY
    return
  fi
  "$CNNSCOPE" eval "$model" "$data" --threads 2 | tee "$eval"
  local ours count
  ours=$(sed -n 's/^top-1 accuracy: \([0-9.]*\) %.*/\1/p' "$eval")
  count=$(sed -n 's/^images: \([0-9]*\) .*/\1/p' "$eval")
  "$PYTHON" - "$name" "$ours" "$count" <<'PY'
import json, sys
name, ours, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
torch = json.load(open("weights/%s.json" % name))["test_top1"]
print("%s: cnnscope %.2f %%, PyTorch at training time %.2f %% on %d images"
      % (name, ours, torch, count))
assert count == 10000, "expected the 10,000 test images, got %d" % count
assert abs(ours - torch) <= 0.1, "differs by %.2f points (limit 0.1)" % abs(ours - torch)
assert ours >= 90.0, "accuracy %.2f %% is below 90 %%" % ours
PY
}

# conv1 3; layer1: six 3x3 at jump 1 -> 15; layer2: its stride-2 conv -> 17, five more at
# jump 2 -> 37; layer3: 41, five more at jump 4 -> 81.
check_model fashion_resnet20 cifar_resnet20 conv1:3 layer3.2:81
# 7x7; pool 2/2 -> 8; 5x5 at jump 2 -> 16; pool -> 18; two 3x3 at jump 4 -> 26, 34; pool -> 38.
check_model fashion_alexnet fashion_alexnet features.0:7 features.3:16 features.8:34 features.10:38
# 3x3 stacks: 3, 5; pool 6; 10, 14 at jump 2; pool 16; 24, 32 at jump 4; pool 36.
check_model fashion_vgg fashion_vgg features.0:3 features.3:5 features.10:14 features.20:36
echo "ok: 3 default models"
