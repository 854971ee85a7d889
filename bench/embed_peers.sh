#!/usr/bin/env bash
# embed_peers.sh - cnnscope embed against its peers, on the same features and machine:
# scikit-learn PCA and TSNE, umap-learn (cold and warm), Rtsne and uwot. For each: wall-clock
# seconds, trustworthiness at k = 10 (scikit-learn's definition, computed for all of them by
# tests/c/tool_vis_graphs, which test_neighbors.py checks against scikit-learn) and 10-NN
# accuracy in the embedding.
#
#   bash bench/embed_peers.sh [FEATS.npy] [THREADS]
#
# Default FEATS: the penultimate (flatten, 64) features of the CIFAR-10 ResNet-56 on the 10,000
# CIFAR-10 test images (../shared), made with `cnnscope features` into build/bench-embed/.
# Default THREADS: 2. Peers (not needed by the tests): `bash bench/embed_peers.sh --setup`
# installs python3-sklearn umap-learn r-cran-rtsne r-cran-uwot with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PYTHON=/usr/bin/python3
if [ "${1:-}" = "--setup" ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    python3-sklearn umap-learn r-cran-rtsne r-cran-uwot
  exit 0
fi
OUT=$BUILD/bench-embed
mkdir -p "$OUT"
FEATS=${1:-}
THREADS=${2:-2}
make -s BUILD="$BUILD" "$BUILD/cnnscope" "$BUILD/tests/tool_vis_graphs" >/dev/null
if [ -z "$FEATS" ]; then
  SHARED=${SHARED:-$(cd .. && pwd)/shared}
  FEATS=$OUT/cifar10-resnet56.npy
  if [ ! -f "$FEATS" ]; then
    [ -f "$OUT/resnet56.cnn" ] || $PYTHON scripts/convert.py "$SHARED/data/cifar10/resnet56-4bfd9763.th" \
      --arch cifar_resnet56 -o "$OUT/resnet56.cnn"
    "$BUILD/cnnscope" features "$OUT/resnet56.cnn" "$SHARED/data/cifar10/test" --layer flatten \
      -o "$FEATS" --threads "$THREADS"
  fi
fi
echo "features: $FEATS ($($PYTHON -c "import numpy as n,sys; print('x'.join(map(str,n.load(sys.argv[1]).shape)))" "$FEATS")), $THREADS threads"

now() { date +%s.%N; }
quality() {   # quality NAME EMB.npy SECONDS
  local t acc
  t=$("$BUILD/tests/tool_vis_graphs" trust "$FEATS" "$2" 10)
  acc=$($PYTHON - "$FEATS" "$2" <<'PY'
import sys, numpy as np
from sklearn.neighbors import KNeighborsClassifier
feats, emb = sys.argv[1], sys.argv[2]
base = feats[:-4] if feats.endswith(".npy") else feats
try:
    labels = np.array([int(l.split()[0]) for l in open(base + ".labels.txt")])
except OSError:
    print("-"); sys.exit()
y = np.load(emb)
from sklearn.neighbors import NearestNeighbors
nn = NearestNeighbors(n_neighbors=11).fit(y)
idx = nn.kneighbors(y, return_distance=False)[:, 1:]
votes = labels[idx]
pred = np.array([np.bincount(v, minlength=labels.max() + 1).argmax() for v in votes])
print("%.2f" % (100 * np.mean(pred == labels)))
PY
)
  printf '%-22s %8.2f s   trustworthiness %.4f   10-NN accuracy %s %%\n' "$1" "$3" "$t" "$acc"
}

echo
echo "== cnnscope"
for m in pca tsne umap; do
  start=$(now)
  "$BUILD/cnnscope" embed "$FEATS" --method $m --threads "$THREADS" -o "$OUT/cnnscope-$m.csv" > "$OUT/cnnscope-$m.log"
  end=$(now)
  $PYTHON -c "import numpy as n,sys; d=n.loadtxt(sys.argv[1],delimiter=',',skiprows=1,usecols=(1,2),dtype=n.float32); n.save(sys.argv[2],d)" \
    "$OUT/cnnscope-$m.csv" "$OUT/cnnscope-$m.npy"
  quality "cnnscope $m" "$OUT/cnnscope-$m.npy" "$(echo "$end - $start" | bc)"
done

echo
echo "== peers"
$PYTHON bench/embed_peers.py "$FEATS" "$OUT" "$THREADS" | while read -r _ name secs; do
  quality "$name" "$OUT/$name.npy" "$secs"
done
$PYTHON -c "import numpy as n,sys; n.savetxt(sys.argv[2], n.load(sys.argv[1]).reshape(len(n.load(sys.argv[1])),-1), delimiter=',', fmt='%.7g')" "$FEATS" "$OUT/feats.csv"
Rscript bench/embed_peers.R "$OUT/feats.csv" "$OUT" "$THREADS" | while read -r _ name secs; do
  $PYTHON -c "import numpy as n,sys; n.save(sys.argv[2], n.loadtxt(sys.argv[1], delimiter=',').astype(n.float32))" \
    "$OUT/$name.csv" "$OUT/$name.npy"
  quality "$name" "$OUT/$name.npy" "$secs"
done
