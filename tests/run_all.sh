#!/usr/bin/env bash
# Runs the whole suite: every C unit test (build/tests/test_*), then every script test
# (tests/test_*.sh, tests/test_*.py). Each test passes when it exits 0. Logs of failures are
# printed; the last line is "N passed, N failed".
# Environment: BUILD (build folder, default build), PYTHON (default /usr/bin/python3),
# TESTS (optional space-separated substrings: run only matching tests).
# Quick mode: when $BUILD is the sanitized build (its name ends in build-san, or SANITIZE=1), the
# suite exports CNNSCOPE_TEST_QUICK=1 (the long tests then run on smaller inputs, see each test's
# header) and the sanitizer options (UBSan and ASan halt on the first report, LeakSanitizer on),
# and skips the tests that do not exercise $BUILD's binaries or cannot run on a sanitized binary
# (SKIP lines). The lines before the last give the number of skipped tests and the wall time.
set -u
suite_start=$(date +%s)
cd "$(dirname "$0")/.."
export BUILD=${BUILD:-build}
export PYTHON=${PYTHON:-/usr/bin/python3}
export CNNSCOPE=$BUILD/cnnscope
export SHARED=${SHARED:-$(cd .. && pwd)/shared}
# PyTorch references and converted models do not depend on the C build: one cache for the plain
# and the sanitized pass (tests/vis_common.py).
export TEST_CACHE=${TEST_CACHE:-build/test-cache}
# OpenMP threads sleep when idle instead of spinning: the suite runs Python and C side by side.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# Quick mode (sanitized build): smaller inputs, sanitizer options, tests that cannot apply skipped.
declare -A skip_reason=()
if [[ "${BUILD%/}" == *build-san ]] || [ "${SANITIZE:-0}" = 1 ]; then
  export CNNSCOPE_TEST_QUICK=1
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  skip_reason=(
    [test_fuzz_smoke]="builds its own ASan harnesses"
    [test_neon_qemu]="a cross build for QEMU, not $BUILD's binaries"
    [test_build_matrix]="makes its own builds"
    [test_valgrind]="valgrind cannot run ASan binaries"
  )
  echo "quick mode (sanitized build $BUILD): CNNSCOPE_TEST_QUICK=1"
fi
mkdir -p "$BUILD/test-logs"
# The references and converted models take ~4 GB (TEST_CACHE): say so up front if the disk is
# short, since a full disk shows up later as some tool's obscure write error.
free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
if [ -n "$free_kb" ] && [ "$free_kb" -lt 5000000 ]; then
  echo "warning: only $((free_kb / 1024)) MB free on this disk; the suite writes about 4 GB"
fi
# Small generated models for the C tests (they read $FIXTURES).
export FIXTURES=$BUILD/fixtures
python3 tests/make_tiny_model.py "$FIXTURES" || { echo "cannot make test fixtures"; echo "0 passed, 1 failed"; exit 1; }

tests=()
for t in "$BUILD"/tests/test_*; do [ -x "$t" ] && tests+=("$t"); done
for t in tests/test_*.sh tests/test_*.py; do [ -f "$t" ] && tests+=("$t"); done

passed=0; failed=0; skipped=0; failures=()
for t in "${tests[@]}"; do
  name=$(basename "$t"); name=${name%.*}
  if [ -n "${TESTS:-}" ]; then
    match=0; for pat in $TESTS; do [[ "$name" == *"$pat"* ]] && match=1; done
    [ $match = 1 ] || continue
  fi
  if [ -n "${skip_reason[$name]:-}" ]; then
    skipped=$((skipped + 1)); printf 'SKIP  %-40s       (%s)\n' "$name" "${skip_reason[$name]}"
    continue
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
[ $skipped -gt 0 ] && echo "$skipped skipped"
echo "wall time: $(( $(date +%s) - suite_start )) s"
echo "$passed passed, $failed failed"
[ $failed = 0 ] && [ $passed -gt 0 ]
