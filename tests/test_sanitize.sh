#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer inside the ordinary `make test` (so in CI):
# builds build-san/ with `make SANITIZE=1` (the library, the CLI and the C unit tests only), then
# runs under the sanitizers
#   1. every C unit test (build-san/tests/test_*);
#   2. the CLI bad-input corpus (tests/test_cli_bad_inputs.sh: every subcommand, ~170 cases,
#      good paths included) and tests/test_cli_errors.sh, with build-san/cnnscope;
#   3. a short classify, eval --predictions and dump --layer all on the CIFAR-10 ResNet-20
#      (20 images from ../shared), whose outputs must equal the plain build's byte for byte.
# Any report fails: UBSan does not recover (-fno-sanitize-recover), ASan stops at the first
# error, and LeakSanitizer checks every process at exit. Prints the wall time of each step.
# `make test SANITIZE=1` runs the whole suite in build-san/; this file then has nothing to add.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
SAN_BUILD=${SAN_BUILD:-build-san}
SHARED=${SHARED:-../shared}
PYTHON=${PYTHON:-/usr/bin/python3}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
if [ "$BUILD" = "$SAN_BUILD" ]; then
  echo "the whole suite already runs in $SAN_BUILD (make test SANITIZE=1): nothing to add"
  exit 0
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
start=$(date +%s)
step_start=$start
step() {   # step NAME: prints the time the previous step took
  local now; now=$(date +%s)
  echo "     ($((now - step_start)) s)"; step_start=$now
  echo "== $1"
}

echo "== make SANITIZE=1 ($SAN_BUILD)"
# An independent make: not a sub-make of `make test` (its jobserver is not ours).
unset MAKEFLAGS MFLAGS MAKELEVEL
tests=()
for t in tests/c/test_*.c; do t=${t#tests/c/}; tests+=("$SAN_BUILD/tests/${t%.c}"); done
make -j2 SANITIZE=1 BUILD="$SAN_BUILD" "$SAN_BUILD/cnnscope" "${tests[@]}" >"$tmp/make.log" 2>&1 ||
  { tail -n 40 "$tmp/make.log"; echo "FAIL: make SANITIZE=1"; exit 1; }
CNNSCOPE=$SAN_BUILD/cnnscope
export FIXTURES=${FIXTURES:-$SAN_BUILD/fixtures}
python3 tests/make_tiny_model.py "$FIXTURES" >/dev/null || { echo "FAIL: test fixtures"; exit 1; }

step "C unit tests under ASan + UBSan"
for t in "${tests[@]}"; do
  "$t" >"$tmp/unit.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then
    fail "$t: exit $rc"; tail -n 30 "$tmp/unit.log" | sed 's/^/     | /'
  else
    echo "ok   $t: $(tail -n 1 "$tmp/unit.log")"
  fi
done

step "CLI bad-input corpus under ASan + UBSan"
for t in tests/test_cli_bad_inputs.sh tests/test_cli_errors.sh; do
  CNNSCOPE=$CNNSCOPE PYTHON=$PYTHON bash "$t" >"$tmp/cli.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then
    fail "$t with $CNNSCOPE: exit $rc"; grep -v '^ok ' "$tmp/cli.log" | head -n 40 | sed 's/^/     | /'
  else
    echo "ok   $t: $(tail -n 1 "$tmp/cli.log")"
  fi
done

step "ResNet-20: classify, eval, dump under ASan + UBSan, compared with the plain build"
checkpoint=$SHARED/data/cifar10/resnet20-12fca82f.th
images=$SHARED/data/cifar10/test
if [ ! -f "$checkpoint" ] || [ ! -d "$images" ]; then
  fail "$checkpoint or $images is missing"
else
  plain=$BUILD/cnnscope
  [ -x "$plain" ] || make -j2 BUILD="$BUILD" "$plain" >"$tmp/make-plain.log" 2>&1 ||
    fail "cannot build $plain"
  python3 scripts/convert.py "$checkpoint" -o "$tmp/r20.cnn" >/dev/null || fail "convert ResNet-20"
  for d in "$images"/*/; do
    c=$(basename "$d"); mkdir -p "$tmp/small/$c"
    ls "$d" | head -n 2 | while read -r f; do ln -s "$(cd "$d" && pwd)/$f" "$tmp/small/$c/$f"; done
  done
  mkdir -p "$tmp/san" "$tmp/plain"
  # same NAME command...: the sanitized and the plain binary, each with @OUT@ in the arguments
  # replaced by its own output folder; both must exit 0, print the same (timings aside) and
  # write the same bytes.
  same() {
    local name=$1 rc; shift
    "$CNNSCOPE" "${@//@OUT@/$tmp/san}" >"$tmp/san.out" 2>"$tmp/san.err"
    rc=$?
    if [ $rc -ne 0 ]; then
      fail "$name under the sanitizers: exit $rc"; head -n 40 "$tmp/san.err" | sed 's/^/     | /'
      return
    fi
    "$plain" "${@//@OUT@/$tmp/plain}" >"$tmp/plain.out" 2>&1 || { fail "$name (plain build)"; return; }
    if ! diff <(sed "s#$tmp/san#OUT#g; s/[0-9.]* s\b/T s/g" "$tmp/san.out") \
              <(sed "s#$tmp/plain#OUT#g; s/[0-9.]* s\b/T s/g" "$tmp/plain.out") >"$tmp/diff"; then
      fail "$name: the sanitized build prints something else than the plain build"
      head -n 10 "$tmp/diff" | sed 's/^/     | /'
    elif ! diff -r "$tmp/san" "$tmp/plain" >"$tmp/diff"; then
      fail "$name: the sanitized build wrote other bytes than the plain build"
      head -n 10 "$tmp/diff" | sed 's/^/     | /'
    else
      echo "ok   $name"
    fi
  }
  same "classify" classify "$tmp/r20.cnn" "$tmp/small/cat"/* "$tmp/small/ship"/*
  same "eval --predictions" eval "$tmp/r20.cnn" "$tmp/small" --threads 2 --predictions @OUT@/pred.csv
  same "preprocess" preprocess "$tmp/r20.cnn" "$tmp/small/cat"/* "$tmp/small/dog"/* -o @OUT@/x.npy
  same "dump --layer all" dump "$tmp/r20.cnn" --input "$tmp/plain/x.npy" --layer all --threads 2 -o @OUT@/dump
fi

step "done"
echo "sanitizer test: $(( $(date +%s) - start )) s wall time, $fails failure(s)"
[ $fails -eq 0 ]
