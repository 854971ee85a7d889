#!/usr/bin/env bash
# The committed default model (weights/fashion_resnet20.cnn): cnnscope's top-1 on the 10,000
# Fashion-MNIST test images equals the PyTorch figure recorded by scripts/train_fashion.py
# (weights/fashion_resnet20.json) within 0.1 points, and the file's metadata is what training used.
set -euo pipefail
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
CNNSCOPE=${CNNSCOPE:-$BUILD/cnnscope}
model=weights/fashion_resnet20.cnn
data=$BUILD/fashion-test
[ -f "$model" ] || { echo "FAIL: $model is missing"; exit 1; }
[ -d "$data" ] || "$PYTHON" scripts/fashion_to_folder.py --split test -o "$data"

"$CNNSCOPE" info "$model" >"$BUILD/default-info.txt"; head -n 4 "$BUILD/default-info.txt"
grep -q "input:   1x28x28 (grayscale)" "$BUILD/default-info.txt"
grep -q "classes: 10 (T-shirt/top" "$BUILD/default-info.txt"

"$CNNSCOPE" eval "$model" "$data" --threads 2 | tee "$BUILD/default-eval.txt"
ours=$(sed -n 's/^top-1 accuracy: \([0-9.]*\) %.*/\1/p' "$BUILD/default-eval.txt")
count=$(sed -n 's/^images: \([0-9]*\) .*/\1/p' "$BUILD/default-eval.txt")
"$PYTHON" - "$ours" "$count" <<'PY'
import json, sys
ours, count = float(sys.argv[1]), int(sys.argv[2])
torch = json.load(open("weights/fashion_resnet20.json"))["test_top1"]
print("cnnscope %.2f %%, PyTorch at training time %.2f %% on %d images" % (ours, torch, count))
assert count == 10000, "expected the 10,000 test images, got %d" % count
assert abs(ours - torch) <= 0.1, "differs by %.2f points (limit 0.1)" % abs(ours - torch)
assert ours >= 90.0, "accuracy %.2f %% is below 90 %%" % ours
PY
