#!/usr/bin/env bash
# Atomic outputs under SIGKILL: a long `cnnscope preprocess` (10,000 CIFAR-10 images, a 123 MB
# .npy) and a long `cnnscope eval --predictions` are killed with SIGKILL at several points,
# including while the output is being written. The output path must then either not exist or
# hold the previous complete file, byte for byte; never a partial one.
#
# Decision (documented in tests/fuzz/README.md): a process killed while writing leaves its
# temporary file "<output>.tmp.<pid>" behind (nothing can clean up after SIGKILL). The test
# checks that every leftover has exactly that name, for the killed pid, and nothing else.
set -u
# Idle OpenMP workers sleep instead of spinning: the machine's cores are shared (spinning made
# a 3 s run take 40 s under load). Results do not depend on it.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
CNNSCOPE=${CNNSCOPE:-build/cnnscope}
SHARED=${SHARED:-../shared}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
checkpoint=$SHARED/data/cifar10/resnet20-12fca82f.th
images=$SHARED/data/cifar10/test
[ -f "$checkpoint" ] && [ -d "$images" ] || { echo "FAIL: $checkpoint or $images is missing"; exit 1; }
python3 scripts/convert.py "$checkpoint" -o "$tmp/r20.cnn" >/dev/null || { echo "FAIL: convert"; exit 1; }
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

# The previous, complete outputs: from 20 images (2 per class).
for d in "$images"/*/; do
  c=$(basename "$d"); mkdir -p "$tmp/small/$c"
  ls "$d" | head -n 2 | while read -r f; do ln -s "$(cd "$d" && pwd)/$f" "$tmp/small/$c/$f"; done
done
mkdir -p "$tmp/out" "$tmp/fresh"
"$CNNSCOPE" preprocess "$tmp/r20.cnn" "$tmp/small" -o "$tmp/out/x.npy" >/dev/null ||
  { echo "FAIL: the small preprocess run"; exit 1; }
cp "$tmp/out/x.npy" "$tmp/previous.npy"
"$CNNSCOPE" eval "$tmp/r20.cnn" "$tmp/small" --predictions "$tmp/out/pred.csv" >/dev/null 2>&1 ||
  { echo "FAIL: the small eval run"; exit 1; }
cp "$tmp/out/pred.csv" "$tmp/previous.csv"

# check_after_kill OUTPUT PREVIOUS PID: OUTPUT is PREVIOUS exactly (or absent when PREVIOUS is
# "none"); only "<OUTPUT>.tmp.<PID>" may remain beside it, and is removed.
check_after_kill() {
  local out=$1 previous=$2 pid=$3
  if [ "$previous" = none ]; then
    [ -e "$out" ] && fail "$out exists after the kill ($(stat -c %s "$out") bytes)"
  else
    cmp -s "$out" "$previous" || fail "$out is not the previous complete file after the kill"
  fi
  for f in "$(dirname "$out")"/*; do
    case "$f" in
      "$out"|"$(dirname "$out")/x.paths.txt"|"$(dirname "$out")/pred.csv"|"$(dirname "$out")/x.npy") ;;
      "$out.tmp.$pid") echo "     (left $(basename "$f"), $(stat -c %s "$f") bytes: the killed process's temporary file)"; rm -f "$f" ;;
      *) fail "unexpected file after the kill: $f" ;;
    esac
  done
}

# 1. preprocess killed at fixed delays (mostly while decoding), and 2. killed the moment its
# temporary file appears (while writing). Both over an existing complete output.
caught=0
for attempt in 0.2 1.0 write write write; do
  "$CNNSCOPE" preprocess "$tmp/r20.cnn" "$images" --threads 2 -o "$tmp/out/x.npy" >/dev/null 2>&1 &
  pid=$!
  if [ "$attempt" = write ]; then
    for _ in $(seq 1 6000); do   # up to 60 s
      compgen -G "$tmp/out/x.npy.tmp.$pid" >/dev/null && break
      kill -0 $pid 2>/dev/null || break
      sleep 0.01
    done
    compgen -G "$tmp/out/x.npy.tmp.$pid" >/dev/null && caught=$((caught + 1))
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
    [ "$size" -eq $((128 + 10000 * 3 * 32 * 32 * 4)) ] || fail "x.npy is neither the previous file nor complete ($size bytes)"
    echo "     (the run completed before the kill)"; cp "$tmp/previous.npy" "$tmp/out/x.npy"
  fi
done
[ $caught -ge 1 ] || fail "no kill landed while the .npy was being written (never saw x.npy.tmp.<pid>)"
echo "kills during the write: $caught"

# 3. eval --predictions killed at several points: the previous predictions stay.
for delay in 0.3 1.5 4; do
  "$CNNSCOPE" eval "$tmp/r20.cnn" "$images" --threads 2 --predictions "$tmp/out/pred.csv" >/dev/null 2>&1 &
  pid=$!
  sleep $delay; kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
  echo "eval killed after ${delay}s:"
  check_after_kill "$tmp/out/pred.csv" "$tmp/previous.csv" $pid
done

# 4. a fresh output path: nothing at all after a kill.
"$CNNSCOPE" preprocess "$tmp/r20.cnn" "$images" -o "$tmp/fresh/x.npy" >/dev/null 2>&1 &
pid=$!
sleep 0.5; kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
[ -e "$tmp/fresh/x.npy" ] && fail "a killed run created $tmp/fresh/x.npy"

echo "$fails failure(s)"
[ $fails -eq 0 ]
