#!/usr/bin/env bash
# Runs the NEON micro-kernels for real on an x86 machine: builds the kernel test
# (tests/c/test_kernels.c with the gemm, conv2d and linear ops and engine/kernels/) as a static
# aarch64 binary with Debian's cross compiler and runs it under qemu-aarch64 (natively on an
# aarch64 host). Passes only if the NEON kernels ran and agreed with the references.
# Then checks the other side on the host: `cnnscope info` refuses an ISA this machine lacks
# (CNNSCOPE_ISA=neon on x86, avx512 on aarch64) with exit status 2 and a message naming it.
# Needs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user (scripts/setup.sh).
# Environment: BUILD (build folder, default build), CNNSCOPE (default $BUILD/cnnscope),
# FIXTURES (the tiny test model's folder, default $BUILD/fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
out=$BUILD/neon
mkdir -p "$out"

if [ "$(uname -m)" = aarch64 ]; then
  cross_cc=${CC:-cc}; run=()
else
  cross_cc=aarch64-linux-gnu-gcc; run=(qemu-aarch64)
  if ! command -v qemu-aarch64 >/dev/null; then
    echo "test_neon_qemu: qemu-aarch64 not found; run 'make setup' (installs qemu-user)"
    exit 1
  fi
fi
if ! command -v "$cross_cc" >/dev/null; then
  echo "test_neon_qemu: $cross_cc not found; run 'make setup' (installs gcc-aarch64-linux-gnu" \
       "and libc6-dev-arm64-cross)"
  exit 1
fi

sources=(tests/c/test_kernels.c engine/ops/gemm.c engine/ops/conv2d.c engine/ops/linear.c engine/ops/add.c engine/ops/relu.c
         engine/status.c engine/kernels/*.c)
binary=$out/test_kernels
# Rebuild when any source or header is newer than the binary.
if [ ! -x "$binary" ] || [ -n "$(find "${sources[@]}" engine/*.h engine/kernels/*.h \
                                     -newer "$binary" -print -quit)" ]; then
  # (the log is shown on failure only: a static libgomp always draws a linker warning
  # about dlopen in static binaries, which does not concern us)
  if ! "$cross_cc" -std=c11 -O2 -Wall -Wextra -Werror -Wno-unknown-pragmas -D_GNU_SOURCE \
       -fopenmp -static -Iengine -Itests/c -o "$binary" "${sources[@]}" -lm \
       >"$out/build.log" 2>&1; then
    cat "$out/build.log"
    echo "test_neon_qemu: the aarch64 build failed"
    exit 1
  fi
fi

echo "running $binary (aarch64) under ${run[*]:-the host CPU}"
status=0
log=$("${run[@]}" "$binary" 2>&1) || status=$?
echo "$log"
if [ $status -ne 0 ]; then
  echo "test_neon_qemu: the aarch64 kernel test failed (exit $status)"
  exit 1
fi
if ! grep -q '^ISA neon ran: all agree$' <<<"$log"; then
  echo "test_neon_qemu: the NEON kernels did not run (no 'ISA neon ran: all agree' line)"
  exit 1
fi
echo "ok   NEON kernels ran under ${run[*]:-the host CPU} and agree with the references"

CNNSCOPE=${CNNSCOPE:-$BUILD/cnnscope}
FIXTURES=${FIXTURES:-$BUILD/fixtures}
[ -f "$FIXTURES/tiny_resnet.cnn" ] || python3 tests/make_tiny_model.py "$FIXTURES" >/dev/null
missing_isa=neon
[ "$(uname -m)" = aarch64 ] && missing_isa=avx512
status=0
message=$(CNNSCOPE_ISA=$missing_isa "$CNNSCOPE" info "$FIXTURES/tiny_resnet.cnn" 2>&1 >/dev/null) \
  || status=$?
if [ $status -ne 2 ] || ! grep -q "CNNSCOPE_ISA=$missing_isa" <<<"$message"; then
  echo "test_neon_qemu: CNNSCOPE_ISA=$missing_isa cnnscope info gave exit $status and" \
       "'$message'; expected exit 2 and a message naming the ISA"
  exit 1
fi
echo "ok   CNNSCOPE_ISA=$missing_isa is refused here: $message"
echo "test_neon_qemu: all passed"
