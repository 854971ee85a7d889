#!/usr/bin/env bash
# Atomic outputs under SIGKILL: a long `cnnscope preprocess` (10,000 CIFAR-10 images, a 123 MB
# .npy), a long `cnnscope eval --predictions` and a long `cnnscope knn-eval --csv` (20,000
# feature rows) are killed with SIGKILL at several points, including while the output is being
# written. The output path must then either not exist or hold the previous complete file, byte
# for byte; never a partial one. preprocess's X.npy and X.paths.txt must still agree (same
# number of rows and lines), or a reader must refuse the pair. Then the same three commands fail
# in the middle of writing (a file size limit: write() returns EFBIG): exit status 2, one
# message, the previous outputs untouched and no file left at all.
#
# Decision (documented in tests/fuzz/README.md): a process killed while writing leaves its
# temporary file "<output>.tmp.<pid>" behind (nothing can clean up after SIGKILL; preprocess's
# staged .npy may also show as "<output>.tmp.<pid>.tmp.<pid>" while it is being written). The
# test checks that every leftover has exactly such a name, for the killed pid, and nothing else.
# Quick mode (CNNSCOPE_TEST_QUICK=1, the sanitized suite): the long runs use the first 200 CIFAR
# images of each class (2,000) and 8,000 feature rows instead of 10,000 and 20,000; same checks.
set -u
# Idle OpenMP workers sleep instead of spinning: the machine's cores are shared (spinning made
# a 3 s run take 40 s under load). Results do not depend on it.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
CNNSCOPE=${CNNSCOPE:-build/cnnscope}
SHARED=${SHARED:-../shared}
PYTHON=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
checkpoint=$SHARED/data/cifar10/resnet20-12fca82f.th
images=$SHARED/data/cifar10/test
[ -f "$checkpoint" ] && [ -d "$images" ] || { echo "FAIL: $checkpoint or $images is missing"; exit 1; }
python3 scripts/convert.py "$checkpoint" -o "$tmp/r20.cnn" >/dev/null || { echo "FAIL: convert"; exit 1; }
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
# The inputs of the long runs: all 10,000 test images and 20,000 feature rows, or in quick mode
# (the slower sanitized build) the first 200 images of each class and 8,000 rows.
long_images=$images n_images=10000 n_rows=20000
if [ "${CNNSCOPE_TEST_QUICK:-0}" = 1 ]; then
  long_images=$tmp/quick n_images=2000 n_rows=8000
  for d in "$images"/*/; do
    c=$(basename "$d"); mkdir -p "$long_images/$c"
    ls "$d" | LC_ALL=C sort | sed -n "1,200p" | while read -r f; do ln -s "$(cd "$d" && pwd)/$f" "$long_images/$c/$f"; done
  done
  echo "quick mode (CNNSCOPE_TEST_QUICK=1): long runs on $n_images images and $n_rows feature rows"
fi

# The previous, complete outputs: from 20 images (2 per class).
for d in "$images"/*/; do
  c=$(basename "$d"); mkdir -p "$tmp/small/$c"
  ls "$d" | head -n 2 | while read -r f; do ln -s "$(cd "$d" && pwd)/$f" "$tmp/small/$c/$f"; done
done
mkdir -p "$tmp/out" "$tmp/fresh"
"$CNNSCOPE" preprocess "$tmp/r20.cnn" "$tmp/small" -o "$tmp/out/x.npy" >/dev/null ||
  { echo "FAIL: the small preprocess run"; exit 1; }
cp "$tmp/out/x.npy" "$tmp/previous.npy"
cp "$tmp/out/x.paths.txt" "$tmp/previous.paths.txt"
"$CNNSCOPE" eval "$tmp/r20.cnn" "$tmp/small" --predictions "$tmp/out/pred.csv" >/dev/null 2>&1 ||
  { echo "FAIL: the small eval run"; exit 1; }
cp "$tmp/out/pred.csv" "$tmp/previous.csv"

# check_after_kill OUTPUT PREVIOUS PID: OUTPUT is PREVIOUS exactly (or absent when PREVIOUS is
# "none"); only the killed process's temporary files ("<an output>.tmp.<PID>", and
# "<X.npy>.tmp.<PID>.tmp.<PID>" for preprocess's staged .npy) may remain, and are removed.
check_after_kill() {
  local out=$1 previous=$2 pid=$3 dir; dir=$(dirname "$1")
  if [ "$previous" = none ]; then
    [ -e "$out" ] && fail "$out exists after the kill ($(stat -c %s "$out") bytes)"
  else
    cmp -s "$out" "$previous" || fail "$out is not the previous complete file after the kill"
  fi
  for f in "$dir"/*; do
    case "$f" in
      "$dir"/x.npy|"$dir"/x.paths.txt|"$dir"/pred.csv|"$dir"/knn.csv) ;;
      "$dir"/*.tmp."$pid"|"$dir"/x.npy.tmp."$pid".tmp."$pid")
        echo "     (left $(basename "$f"), $(stat -c %s "$f") bytes: the killed process's temporary file)"; rm -f "$f" ;;
      *) fail "unexpected file after the kill: $f" ;;
    esac
  done
}

# check_pair DIR: DIR/x.npy has as many rows as DIR/x.paths.txt has lines, or (the one state a
# kill between preprocess's two renames can leave) a reader refuses the pair.
check_pair() {
  local rows lines
  rows=$(head -c 128 "$1/x.npy" | tr -d '\0' | grep -ao "'shape': ([0-9]*" | grep -o '[0-9]*$')
  lines=$(wc -l <"$1/x.paths.txt")
  [ "$rows" = "$lines" ] && return
  echo "     (x.npy has $rows rows, x.paths.txt $lines lines: a reader must refuse the pair)"
  "$CNNSCOPE" neighbors "$1/x.npy" --query 0 -k 1 >/dev/null 2>"$tmp/pair.err"
  [ $? -eq 2 ] && grep -q "lines, but" "$tmp/pair.err" ||
    fail "a mismatched x.npy / x.paths.txt pair was not refused: $(cat "$tmp/pair.err")"
  cp "$tmp/previous.paths.txt" "$1/x.paths.txt"
}

# 1. preprocess killed at fixed delays (mostly while decoding), and 2. killed the moment its
# temporary file appears (while writing). Both over an existing complete output.
caught=0
for attempt in 0.2 1.0 write write write; do
  "$CNNSCOPE" preprocess "$tmp/r20.cnn" "$long_images" --threads 2 -o "$tmp/out/x.npy" >/dev/null 2>&1 &
  pid=$!
  if [ "$attempt" = write ]; then
    for _ in $(seq 1 6000); do   # up to 60 s
      compgen -G "$tmp/out/x.npy.tmp.$pid*" >/dev/null && break
      kill -0 $pid 2>/dev/null || break
      sleep 0.01
    done
    compgen -G "$tmp/out/x.npy.tmp.$pid*" >/dev/null && caught=$((caught + 1))
  else
    sleep "$attempt"
  fi
  kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
  echo "preprocess killed ($attempt):"
  if cmp -s "$tmp/out/x.npy" "$tmp/previous.npy"; then
    check_after_kill "$tmp/out/x.npy" "$tmp/previous.npy" $pid
  else
    # The run may have finished its rename just before the kill: then x.npy must be complete.
    size=$(stat -c %s "$tmp/out/x.npy" 2>/dev/null || echo 0)
    [ "$size" -eq $((128 + n_images * 3 * 32 * 32 * 4)) ] || fail "x.npy is neither the previous file nor complete ($size bytes)"
    echo "     (the run completed before the kill)"; cp "$tmp/previous.npy" "$tmp/out/x.npy"
  fi
  check_pair "$tmp/out"
done
[ $caught -ge 1 ] || fail "no kill landed while the .npy was being written (never saw x.npy.tmp.<pid>)"
echo "kills during the write: $caught"

# 3. eval --predictions killed at several points: the previous predictions stay.
for delay in 0.3 1.5 4; do
  "$CNNSCOPE" eval "$tmp/r20.cnn" "$long_images" --threads 2 --predictions "$tmp/out/pred.csv" >/dev/null 2>&1 &
  pid=$!
  sleep $delay; kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
  echo "eval killed after ${delay}s:"
  check_after_kill "$tmp/out/pred.csv" "$tmp/previous.csv" $pid
done

# 4. a fresh output path: nothing at all after a kill. Killed the moment its temporary file
# appears (a fixed delay is not enough: 10,000 CIFAR images can be done in well under a second).
"$CNNSCOPE" preprocess "$tmp/r20.cnn" "$long_images" -o "$tmp/fresh/x.npy" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 6000); do   # up to 60 s
  compgen -G "$tmp/fresh/x.npy.tmp.$pid*" >/dev/null && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.01
done
kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
rc=$?
if [ $rc -eq 0 ]; then
  echo "fresh output: the run completed before the kill (nothing to check)"
else
  [ -e "$tmp/fresh/x.npy" ] && fail "a killed run created $tmp/fresh/x.npy"
  [ -e "$tmp/fresh/x.paths.txt" ] && fail "a killed run created $tmp/fresh/x.paths.txt"
  echo "fresh output, killed while writing: neither x.npy nor x.paths.txt exists"
fi

# 5. knn-eval --csv killed over a previous CSV (from 200 rows): at fixed delays, and the moment
# its temporary file appears (the CSV is written last and quickly: catching it is not required).
"$PYTHON" - "$tmp" "$n_rows" <<'PY' || { echo "FAIL: cannot make the feature tables"; exit 1; }
import sys
import numpy as np
d, rng = sys.argv[1], np.random.default_rng(8)
for name, n in (("small", 200), ("big", int(sys.argv[2]))):
    np.save("%s/%s.npy" % (d, name), rng.standard_normal((n, 32)).astype(np.float32))
    with open("%s/%s.labels.txt" % (d, name), "w") as f:
        f.writelines("%d c%d\n" % (i % 10, i % 10) for i in range(n))
PY
"$CNNSCOPE" knn-eval "$tmp/small.npy" --csv "$tmp/out/knn.csv" >/dev/null ||
  { echo "FAIL: the small knn-eval run"; exit 1; }
cp "$tmp/out/knn.csv" "$tmp/previous-knn.csv"
for attempt in 0.3 1.0 write; do
  "$CNNSCOPE" knn-eval "$tmp/big.npy" --threads 2 --csv "$tmp/out/knn.csv" >/dev/null 2>&1 &
  pid=$!
  if [ "$attempt" = write ]; then
    for _ in $(seq 1 6000); do
      compgen -G "$tmp/out/knn.csv.tmp.$pid" >/dev/null && break
      kill -0 $pid 2>/dev/null || break
      sleep 0.005
    done
  else
    sleep "$attempt"
  fi
  kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
  echo "knn-eval killed ($attempt):"
  if cmp -s "$tmp/out/knn.csv" "$tmp/previous-knn.csv"; then
    check_after_kill "$tmp/out/knn.csv" "$tmp/previous-knn.csv" $pid
  else
    lines=$(wc -l <"$tmp/out/knn.csv")
    [ "$lines" -eq $((n_rows + 1)) ] || fail "knn.csv is neither the previous file nor complete ($lines lines)"
    echo "     (the run completed before the kill)"; cp "$tmp/previous-knn.csv" "$tmp/out/knn.csv"
  fi
done

# 6. a write that fails half-way (a file size limit of a few KB, SIGXFSZ ignored, so write()
# returns EFBIG): exit status 2, one message naming the output, the previous files untouched,
# and no temporary file left (the failing process removes its own).
mkdir -p "$tmp/four"
for d in "$images"/*/; do
  c=$(basename "$d"); mkdir -p "$tmp/four/$c"
  ls "$d" | head -n 4 | while read -r f; do ln -s "$(cd "$d" && pwd)/$f" "$tmp/four/$c/$f"; done
done
cp "$tmp/previous.npy" "$tmp/out/x.npy"; cp "$tmp/previous.paths.txt" "$tmp/out/x.paths.txt"
cp "$tmp/previous.csv" "$tmp/out/pred.csv"; cp "$tmp/previous-knn.csv" "$tmp/out/knn.csv"
write_fails() {   # write_fails WHAT OUTPUT KB command...
  local what=$1 output=$2 kb=$3; shift 3
  ( ulimit -f "$kb"; trap '' XFSZ; exec "$CNNSCOPE" "$@" ) >/dev/null 2>"$tmp/limit.err"
  local rc=$?
  if [ $rc -ne 2 ] || [ "$(wc -l <"$tmp/limit.err")" -ne 1 ] || ! grep -q "$output" "$tmp/limit.err"; then
    fail "$what with a failing write: exit $rc (expected 2 and one line naming $output):"
    sed 's/^/     | /' "$tmp/limit.err"
  else
    echo "$what, write fails: $(cat "$tmp/limit.err")"
  fi
}
# (491 KB of .npy, ~3 KB of predictions for 100 images, ~600 KB of CSV)
write_fails "preprocess" x.npy 16 preprocess "$tmp/r20.cnn" "$tmp/four" -o "$tmp/out/x.npy"
write_fails "eval --predictions" pred.csv 1 eval "$tmp/r20.cnn" "$images" --limit 100 --predictions "$tmp/out/pred.csv"
write_fails "knn-eval --csv" knn.csv 16 knn-eval "$tmp/big.npy" --csv "$tmp/out/knn.csv"
cmp -s "$tmp/out/x.npy" "$tmp/previous.npy" || fail "x.npy changed by a failed preprocess"
cmp -s "$tmp/out/x.paths.txt" "$tmp/previous.paths.txt" || fail "x.paths.txt changed by a failed preprocess"
cmp -s "$tmp/out/pred.csv" "$tmp/previous.csv" || fail "pred.csv changed by a failed eval"
cmp -s "$tmp/out/knn.csv" "$tmp/previous-knn.csv" || fail "knn.csv changed by a failed knn-eval"
left=$(find "$tmp/out" -mindepth 1 ! -name x.npy ! -name x.paths.txt ! -name pred.csv ! -name knn.csv)
[ -z "$left" ] || fail "failed writes left: $left"

# features writes three files: FEATS.npy (staged), then the side files, then the .npy's rename.
# A side file that cannot be written (here: a folder stands where feats.labels.txt goes) must
# leave the previous feats.npy byte for byte, and no staged .npy behind.
mkdir -p "$tmp/feats"
"$CNNSCOPE" features "$tmp/r20.cnn" "$tmp/four" --layer flatten -o "$tmp/feats/feats.npy" >/dev/null 2>&1 ||
  fail "features on 40 images failed"
cp "$tmp/feats/feats.npy" "$tmp/feats-previous.npy"
rm -f "$tmp/feats/feats.labels.txt"; mkdir "$tmp/feats/feats.labels.txt"
"$CNNSCOPE" features "$tmp/r20.cnn" "$tmp/four" --layer flatten --pool max -o "$tmp/feats/feats.npy" \
  >/dev/null 2>"$tmp/feats.err"
rc=$?
if [ $rc -ne 2 ] || ! grep -q "feats.labels.txt" "$tmp/feats.err"; then
  fail "features with an unwritable labels file: exit $rc (expected 2 naming it): $(cat "$tmp/feats.err")"
else
  echo "features, side file fails: $(head -n 1 "$tmp/feats.err")"
fi
cmp -s "$tmp/feats/feats.npy" "$tmp/feats-previous.npy" || fail "feats.npy changed by a failed features run"
left=$(find "$tmp/feats" -name "*.tmp.*")
[ -z "$left" ] || fail "a failed features run left: $left"

echo "$fails failure(s)"
[ $fails -eq 0 ]
