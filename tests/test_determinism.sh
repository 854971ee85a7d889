#!/usr/bin/env bash
# Same inputs, same output bytes: eval --predictions, dump (every layer) and preprocess give
# byte-identical files with --threads 1 and --threads 2, and across two runs with 2 threads.
# On the CIFAR-10 ResNet-20 (converted from ../shared) and 100 real test images, and on the
# tiny fixture model (every op) with a random input.
set -u
# Idle OpenMP workers sleep instead of spinning: the machine's cores are shared (spinning made
# a 3 s run take 40 s under load). Results do not depend on it.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
CNNSCOPE=${CNNSCOPE:-build/cnnscope}
PYTHON=${PYTHON:-/usr/bin/python3}
FIXTURES=${FIXTURES:-build/fixtures}
SHARED=${SHARED:-../shared}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
checkpoint=$SHARED/data/cifar10/resnet20-12fca82f.th
images=$SHARED/data/cifar10/test
[ -f "$checkpoint" ] && [ -d "$images" ] || { echo "FAIL: $checkpoint or $images is missing"; exit 1; }
[ -f "$FIXTURES/tiny_resnet.cnn" ] || python3 tests/make_tiny_model.py "$FIXTURES"
python3 scripts/convert.py "$checkpoint" -o "$tmp/r20.cnn" >/dev/null || { echo "FAIL: convert"; exit 1; }
"$PYTHON" -c "
import numpy as np
np.save('$tmp/x_tiny.npy', np.random.RandomState(1).randn(3, 3, 16, 16).astype(np.float32))
np.save('$tmp/x_r20.npy', np.random.RandomState(2).randn(2, 3, 32, 32).astype(np.float32))"
# 100 images: 10 from each class, as their own ImageFolder.
for d in "$images"/*/; do
  c=$(basename "$d"); mkdir -p "$tmp/set/$c"
  ls "$d" | head -n 10 | while read -r f; do ln -s "$(cd "$d" && pwd)/$f" "$tmp/set/$c/$f"; done
done
fails=0

# Outputs are NAME.THREADS.RUN: threads 1 run 1, threads 2 runs 1 and 2.
for run in 1 2; do
  for t in 1 2; do
    [ $run = 2 ] && [ $t = 1 ] && continue
    tag=$t.$run
    "$CNNSCOPE" eval "$tmp/r20.cnn" "$tmp/set" --threads $t --batch 32 \
      --predictions "$tmp/pred.$tag.csv" >"$tmp/eval.$tag.txt" 2>/dev/null || { echo "FAIL eval t=$t"; fails=$((fails + 1)); }
    "$CNNSCOPE" dump "$tmp/r20.cnn" --input "$tmp/x_r20.npy" --layer all --threads $t \
      -o "$tmp/dump_r20.$tag" >/dev/null 2>&1 || { echo "FAIL dump r20 t=$t"; fails=$((fails + 1)); }
    "$CNNSCOPE" dump "$FIXTURES/tiny_resnet.cnn" --input "$tmp/x_tiny.npy" --layer all --threads $t \
      -o "$tmp/dump_tiny.$tag" >/dev/null 2>&1 || { echo "FAIL dump tiny t=$t"; fails=$((fails + 1)); }
    "$CNNSCOPE" preprocess "$tmp/r20.cnn" "$tmp/set" --threads $t -o "$tmp/pre.$tag.npy" \
      >/dev/null 2>&1 || { echo "FAIL preprocess t=$t"; fails=$((fails + 1)); }
  done
done

same() {   # same WHAT A B
  if cmp -s "$2" "$3"; then echo "ok   $1"; else echo "FAIL $1: $2 and $3 differ"; fails=$((fails + 1)); fi
}
same_dir() {   # same_dir WHAT A B: same file names, every file byte-identical
  local n; n=$(ls "$2" | wc -l)
  if [ "$n" -lt 10 ]; then echo "FAIL $1: only $n files in $2"; fails=$((fails + 1)); return; fi
  if diff -r -q "$2" "$3" >/dev/null; then echo "ok   $1 ($n files)"; else
    echo "FAIL $1:"; diff -r -q "$2" "$3" | head -n 5; fails=$((fails + 1)); fi
}
for f in "$tmp"/eval.*.txt; do sed -i 's/, [0-9.]* s$//' "$f"; done   # the wall time differs
rows=$(wc -l <"$tmp/pred.1.1.csv")
[ "$rows" -eq 101 ] || { echo "FAIL predictions have $rows lines, expected 101"; fails=$((fails + 1)); }
for a in 2.1 2.2; do
  same "eval predictions, threads 1 vs $a" "$tmp/pred.1.1.csv" "$tmp/pred.$a.csv"
  same "eval accuracy lines, threads 1 vs $a" "$tmp/eval.1.1.txt" "$tmp/eval.$a.txt"
  same "preprocess, threads 1 vs $a" "$tmp/pre.1.1.npy" "$tmp/pre.$a.npy"
  same_dir "dump r20, threads 1 vs $a" "$tmp/dump_r20.1.1" "$tmp/dump_r20.$a"
  same_dir "dump tiny, threads 1 vs $a" "$tmp/dump_tiny.1.1" "$tmp/dump_tiny.$a"
done
echo "$fails failure(s)"
[ $fails -eq 0 ]
