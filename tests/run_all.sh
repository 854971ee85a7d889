#!/usr/bin/env bash
# Runs the whole suite: every C unit test (build/tests/test_*), then every script test
# (tests/test_*.sh, tests/test_*.py). Each test passes when it exits 0. Logs of failures are
# printed; the last line is "N passed, N failed".
# Environment: BUILD (build folder, default build), PYTHON (default /usr/bin/python3),
# TESTS (optional space-separated substrings: run only matching tests).
set -u
cd "$(dirname "$0")/.."
export BUILD=${BUILD:-build}
export PYTHON=${PYTHON:-/usr/bin/python3}
export CNNSCOPE=$BUILD/cnnscope
export SHARED=${SHARED:-$(cd .. && pwd)/shared}
# OpenMP threads sleep when idle instead of spinning: the suite runs Python and C side by side.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
mkdir -p "$BUILD/test-logs"
# Small generated models for the C tests (they read $FIXTURES).
export FIXTURES=$BUILD/fixtures
python3 tests/make_tiny_model.py "$FIXTURES" || { echo "cannot make test fixtures"; echo "0 passed, 1 failed"; exit 1; }

tests=()
for t in "$BUILD"/tests/test_*; do [ -x "$t" ] && tests+=("$t"); done
for t in tests/test_*.sh tests/test_*.py; do [ -f "$t" ] && tests+=("$t"); done

passed=0; failed=0; failures=()
for t in "${tests[@]}"; do
  name=$(basename "$t"); name=${name%.*}
  if [ -n "${TESTS:-}" ]; then
    match=0; for pat in $TESTS; do [[ "$name" == *"$pat"* ]] && match=1; done
    [ $match = 1 ] || continue
  fi
  log="$BUILD/test-logs/$name.log"
  start=$(date +%s)
  case "$t" in
    *.py) "$PYTHON" "$t" >"$log" 2>&1 ;;
    *.sh) bash "$t" >"$log" 2>&1 ;;
    *)    "$t" >"$log" 2>&1 ;;
  esac
  rc=$?
  secs=$(( $(date +%s) - start ))
  if [ $rc = 0 ]; then
    passed=$((passed + 1)); printf 'PASS  %-40s %4ds\n' "$name" "$secs"
  else
    failed=$((failed + 1)); failures+=("$name")
    printf 'FAIL  %-40s %4ds  (exit %d, log %s)\n' "$name" "$secs" "$rc" "$log"
    tail -n 30 "$log" | sed 's/^/      | /'
  fi
done
echo
[ $failed -gt 0 ] && echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ $failed = 0 ] && [ $passed -gt 0 ]
