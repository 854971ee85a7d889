#!/usr/bin/env bash
# test_build_matrix.sh - the build is warning-free (-Wall -Wextra -Werror) with both compilers,
# with and without OpenMP, and each build computes the same numbers.
#
# `make test` itself builds with gcc and OpenMP (build/). This test builds everything `make`
# builds (the CLI, the static library, the C tests and tools, the bench programs) twice more:
#   gcc   OPENMP=0  (build-matrix/gcc-noomp)   - the build must work without OpenMP
#   clang OPENMP=1  (build-matrix/clang-omp)   - clang's warnings, and libomp
# A warning fails the build (-Werror), so a clean build is the check. Then each build runs the
# C unit tests that compare the fast kernels and ops with the references (test_kernels,
# test_ops, test_backward, test_session), and classifies 200 Fashion-MNIST test images with
# the default model: the predictions CSV must equal the one of build/cnnscope byte for byte.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
ROOT=build-matrix
fail() { echo "FAIL: $*"; exit 1; }
command -v clang >/dev/null || fail "clang not found (run 'make setup')"
[ -x "$BUILD/cnnscope" ] || fail "$BUILD/cnnscope missing: run make first"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 scripts/fashion_to_folder.py --split test --limit 20 -o "$tmp/fashion" >/dev/null ||
  fail "cannot make the Fashion-MNIST folder"
model=weights/fashion_resnet20.cnn
"$BUILD/cnnscope" eval "$model" "$tmp/fashion" --predictions "$tmp/want.csv" >/dev/null ||
  fail "$BUILD/cnnscope eval failed"

for variant in "gcc 0 gcc-noomp" "clang 1 clang-omp"; do
  set -- $variant
  cc=$1 omp=$2 dir=$ROOT/$3
  echo "== make CC=$cc OPENMP=$omp BUILD=$dir"
  start=$(date +%s)
  if ! make -j2 --no-print-directory CC="$cc" OPENMP="$omp" BUILD="$dir" all >"$tmp/make.log" 2>&1; then
    grep -E "error:|warning:" "$tmp/make.log" | head -n 20
    tail -n 5 "$tmp/make.log"
    fail "make CC=$cc OPENMP=$omp"
  fi
  echo "   built without a warning in $(( $(date +%s) - start )) s"
  if [ "$omp" = 0 ] && nm "$dir/cnnscope" | grep -q -i "gomp\|__kmpc"; then
    fail "the OPENMP=0 binary links OpenMP"
  fi
  for t in test_kernels test_ops test_backward test_session; do
    FIXTURES=$BUILD/fixtures "$dir/tests/$t" >"$tmp/$t.log" 2>&1 ||
      { tail -n 20 "$tmp/$t.log"; fail "$dir/tests/$t"; }
    echo "   $t: $(tail -n 1 "$tmp/$t.log")"
  done
  "$dir/cnnscope" eval "$model" "$tmp/fashion" --predictions "$tmp/got.csv" >/dev/null ||
    fail "$dir/cnnscope eval failed"
  cmp -s "$tmp/want.csv" "$tmp/got.csv" ||
    fail "$dir/cnnscope: predictions differ from $BUILD/cnnscope's ($(diff "$tmp/want.csv" "$tmp/got.csv" | head -n 4))"
  echo "   eval on 200 images: the same predictions and probabilities as $BUILD/cnnscope"
done
echo "PASS: gcc without OpenMP and clang with OpenMP build warning-free and agree"
