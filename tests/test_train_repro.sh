#!/usr/bin/env bash
# scripts/train_fashion.py is reproducible from --seed: for --arch alexnet and vgg, two tiny runs
# (first 512 training images in batches of 32, 1 epoch, 1 thread) with the same seed give
# byte-identical weights, and another seed gives different ones. The saved checkpoints also
# convert without --arch (scripts/convert.py detects fashion_alexnet / fashion_vgg) and load.
# Quick mode (CNNSCOPE_TEST_QUICK=1, the sanitized suite): 256 training images and 100 test
# images per run instead of 512 and 200; the same assertions.
set -euo pipefail
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
CNNSCOPE=${CNNSCOPE:-$BUILD/cnnscope}
mkdir -p "$BUILD"
tmp=$(mktemp -d "$BUILD/train-repro.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
LIMIT=512 TEST_LIMIT=200
if [ "${CNNSCOPE_TEST_QUICK:-0}" = 1 ]; then
  LIMIT=256 TEST_LIMIT=100   # (fewer than 8 batches of 32: OneCycleLR divides by zero)
  echo "quick mode (CNNSCOPE_TEST_QUICK=1): $LIMIT training images, $TEST_LIMIT test images per run"
fi

train() {   # arch seed out
  "$PYTHON" scripts/train_fashion.py --arch "$1" --seed "$2" --out "$3" --limit "$LIMIT" --batch-size 32 \
    --test-limit "$TEST_LIMIT" --epochs 1 --threads 1 --log '' --json '' >"$3.txt" 2>&1 \
    || { cat "$3.txt"; echo "FAIL: train_fashion.py --arch $1 --seed $2"; exit 1; }
  grep "^epoch" "$3.txt"
}

for arch in alexnet vgg; do
  train "$arch" 1 "$tmp/$arch.a.pth"
  train "$arch" 1 "$tmp/$arch.b.pth"
  train "$arch" 2 "$tmp/$arch.c.pth"
  "$PYTHON" - "$arch" "$tmp/$arch".{a,b,c}.pth <<'PY'
import hashlib, sys
import torch
arch, paths = sys.argv[1], sys.argv[2:]

def digest(path):
    """sha256 over every (key, dtype, shape, bytes) of the saved state dict, in key order."""
    state = torch.load(path, map_location="cpu")["state_dict"]
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].contiguous()
        h.update(("%s %s %s\n" % (key, t.dtype, list(t.shape))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest(), len(state)

(a, n), (b, _), (c, _) = (digest(p) for p in paths)
print("%s: %d tensors; seed 1: %s, %s; seed 2: %s" % (arch, n, a[:16], b[:16], c[:16]))
assert n >= 8, "only %d tensors in %s" % (n, paths[0])
assert a == b, "%s: two runs with --seed 1 gave different weights" % arch
assert a != c, "%s: --seed 1 and --seed 2 gave identical weights" % arch
PY
  python3 scripts/convert.py "$tmp/$arch.a.pth" -o "$tmp/$arch.cnn" --input-size 1,28,28 \
    --mean 0.2860 --std 0.3530 \
    --classes "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
  "$CNNSCOPE" info "$tmp/$arch.cnn" >"$tmp/$arch.info"
  grep -q "(arch fashion_$arch)" "$tmp/$arch.info" \
    || { head -n 3 "$tmp/$arch.info"; echo "FAIL: convert.py did not detect fashion_$arch"; exit 1; }
done
echo "ok: alexnet and vgg training reproducible from --seed; checkpoints convert and load"
