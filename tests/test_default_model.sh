#!/usr/bin/env bash
# The committed default models (weights/fashion_{resnet20,alexnet,vgg}.cnn, trained by
# scripts/train_fashion.py --arch resnet20|alexnet|vgg): each file is at most 2 MB, loads, has
# the metadata training used and the receptive fields its layers imply, and cnnscope's top-1 on
# the 10,000 Fashion-MNIST test images equals the PyTorch figure recorded at training time
# (weights/fashion_<arch>.json) within 0.1 points.
set -euo pipefail
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
CNNSCOPE=${CNNSCOPE:-$BUILD/cnnscope}
data=$BUILD/fashion-test
MAX_BYTES=2000000
[ -d "$data" ] || "$PYTHON" scripts/fashion_to_folder.py --split test -o "$data"

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
