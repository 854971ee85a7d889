#!/usr/bin/env bash
# The main job: `cnnscope report` for each default model in weights/ (fashion_resnet20,
# fashion_alexnet, fashion_vgg) on the 10,000 Fashion-MNIST test images, as an ImageFolder of PNGs, into $BUILD/report/<model>/. Each model's accuracy
# in its report must equal the PyTorch figure recorded at training time (weights/<model>.json)
# within 0.1 points. With more than one report, $BUILD/report/index.html links them all.
# Ends with the path of the page to open.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
data=$BUILD/fashion-test
reports=$BUILD/report
start=$(date +%s)

[ -d "$data" ] || "$PYTHON" scripts/fashion_to_folder.py --split test -o "$data"
mkdir -p "$reports"

done_models=()
for model in fashion_resnet20 fashion_alexnet fashion_vgg; do
  [ -f "weights/$model.cnn" ] || { echo "demo: weights/$model.cnn is missing" >&2; exit 1; }
  echo "== cnnscope report weights/$model.cnn $data -o $reports/$model"
  "$BUILD/cnnscope" report "weights/$model.cnn" "$data" -o "$reports/$model" | tee "$reports/$model.txt"
  ours=$(sed -n 's/^top-1 accuracy: \([0-9.]*\) %.*/\1/p' "$reports/$model.txt")
  torch=$("$PYTHON" -c "import json; print(json.load(open('weights/$model.json'))['test_top1'])")
  echo "$model: PyTorch at training time $torch %, cnnscope $ours %"
  "$PYTHON" -c "import sys; d = abs($ours - $torch); sys.exit(0 if d <= 0.1 else '$model: accuracy differs from PyTorch by %.2f points' % d)"
  done_models+=("$model")
  echo
done
[ ${#done_models[@]} -gt 0 ] || { echo "demo: no default model in weights/" >&2; exit 1; }

# One page linking the reports (written whole, then renamed: never half a page).
page=$reports/index.html
if [ ${#done_models[@]} -gt 1 ]; then
  {
    printf '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    printf '<title>cnnscope reports</title>\n<link rel="stylesheet" href="%s/report.css">\n' "${done_models[0]}"
    printf '</head>\n<body>\n<main>\n<h1>cnnscope reports</h1>\n'
    images=$(sed -n 's/^images: \([0-9]*\).*/\1/p' "$reports/${done_models[0]}.txt")
    printf '<p>What each default model has learned on %s Fashion-MNIST test images.</p>\n<ul>\n' "$images"
    for model in "${done_models[@]}"; do
      acc=$(sed -n 's/^top-1 accuracy: \([0-9.]*\) %.*/\1/p' "$reports/$model.txt")
      printf '<li><a href="%s/index.html">%s</a>: top-1 accuracy %s %%</li>\n' "$model" "$model" "$acc"
    done
    printf '</ul>\n</main>\n</body>\n</html>\n'
  } >"$page.tmp"
  mv "$page.tmp" "$page"
else
  rm -f "$page"
fi

echo "demo: ${#done_models[@]} report(s) in $(( $(date +%s) - start )) s. Open:"
if [ ${#done_models[@]} -gt 1 ]; then
  echo "$(cd "$reports" && pwd)/index.html"
fi
for model in "${done_models[@]}"; do
  tail -n 1 "$reports/$model.txt"
done
