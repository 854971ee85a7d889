#!/usr/bin/env bash
# One classify and one dump under valgrind memcheck: no invalid read or write, no use of
# uninitialised memory, and no definite or indirect leak (--error-exitcode makes any of them
# fail the run). One thread: the OpenMP runtime keeps its thread pool alive on purpose, which
# memcheck would report as "possibly lost".
set -u
# Idle OpenMP workers sleep instead of spinning: the machine's cores are shared (spinning made
# a 3 s run take 40 s under load). Results do not depend on it.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
CNNSCOPE=${CNNSCOPE:-build/cnnscope}
PYTHON=${PYTHON:-/usr/bin/python3}
FIXTURES=${FIXTURES:-build/fixtures}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
model=$FIXTURES/tiny_resnet.cnn
[ -f "$model" ] || python3 tests/make_tiny_model.py "$FIXTURES"
command -v valgrind >/dev/null || { echo "FAIL: valgrind is not installed (scripts/setup.sh)"; exit 1; }
if nm "$CNNSCOPE" 2>/dev/null | grep -q __asan_init; then
  # memcheck cannot run an AddressSanitizer build; in `make test SANITIZE=1` ASan + UBSan watch
  # every test instead, and the plain `make test` runs this one.
  echo "ok   $CNNSCOPE is an ASan build: memcheck is the plain build's check"; exit 0
fi
"$PYTHON" -c "
import numpy as np
from PIL import Image
Image.new('RGB', (37, 23), (200, 10, 10)).save('$tmp/a.png')
np.save('$tmp/x.npy', np.random.RandomState(0).rand(2, 3, 16, 16).astype(np.float32))"
fails=0
# memcheck WHAT EXPECTED_EXIT command...
memcheck() {
  local what=$1 want=$2; shift 2
  OMP_NUM_THREADS=1 valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
    --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
    --track-origins=yes "$@" >"$tmp/out" 2>"$tmp/vg"
  local rc=$?
  local summary; summary=$(grep -E 'ERROR SUMMARY|definitely lost|indirectly lost' "$tmp/vg" | sed 's/^==[0-9]*== *//' | tr '\n' ' ')
  if [ $rc -ne "$want" ]; then
    echo "FAIL $what: exit $rc: $summary"; grep -A 12 -E 'Invalid|uninitialised|definitely lost in' "$tmp/vg" | head -n 60
    fails=$((fails + 1))
  elif ! grep -q 'ERROR SUMMARY: 0 errors' "$tmp/vg"; then
    echo "FAIL $what: memcheck did not report a clean run"; fails=$((fails + 1))
  else
    echo "ok   $what: $summary"
  fi
}
memcheck "classify" 0 "$CNNSCOPE" classify "$model" "$tmp/a.png" --threads 1
grep -q . "$tmp/out" || { echo "FAIL classify printed nothing"; fails=$((fails + 1)); }
memcheck "dump" 0 "$CNNSCOPE" dump "$model" --input "$tmp/x.npy" --layer all --threads 1 -o "$tmp/dump"
[ -f "$tmp/dump/fc.npy" ] || { echo "FAIL dump wrote no fc.npy"; fails=$((fails + 1)); }
head -c 1000 "$model" >"$tmp/bad.cnn"
memcheck "info on a truncated model (the error path)" 2 "$CNNSCOPE" info "$tmp/bad.cnn"
echo "$fails failure(s)"
[ $fails -eq 0 ]
