#!/usr/bin/env bash
# The main job on the built-in default model (weights/fashion_resnet20.cnn): the 10,000
# Fashion-MNIST test images as an ImageFolder of PNGs, evaluated by cnnscope, whose accuracy must
# equal the PyTorch figure recorded at training time; then a few images classified.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
model=weights/fashion_resnet20.cnn
data=$BUILD/fashion-test

[ -d "$data" ] || "$PYTHON" scripts/fashion_to_folder.py --split test -o "$data"

echo "== cnnscope info $model (last rows)"
"$BUILD/cnnscope" info "$model" | tail -n 6
echo
echo "== cnnscope eval $model $data"
"$BUILD/cnnscope" eval "$model" "$data" --predictions "$BUILD/fashion-predictions.csv" | tee "$BUILD/demo-eval.txt"
ours=$(sed -n 's/^top-1 accuracy: \([0-9.]*\) %.*/\1/p' "$BUILD/demo-eval.txt")
torch=$("$PYTHON" -c "import json; print(json.load(open('weights/fashion_resnet20.json'))['test_top1'])")
echo "PyTorch at training time: $torch %; cnnscope: $ours %"
"$PYTHON" -c "import sys; d = abs($ours - $torch); sys.exit(0 if d <= 0.1 else 'accuracy differs from PyTorch by %.2f points' % d)"
echo
echo "== cnnscope classify (the first test image of three classes)"
images=()
for class in 0-tshirt-top 7-sneaker 8-bag; do
  first=("$data/$class"/*.png)
  images+=("${first[0]}")
done
"$BUILD/cnnscope" classify "$model" --top 3 "${images[@]}"
