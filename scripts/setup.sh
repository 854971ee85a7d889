#!/usr/bin/env bash
# Installs what cnnscope needs to build, test and run its demo on Debian (apt-get; as root or
# through sudo). Does nothing when everything is already installed.
set -euo pipefail
packages=(
  make gcc clang libomp-dev          # build: gcc and clang, OpenMP for both
  libclang-rt-14-dev valgrind        # tests: libFuzzer + sanitizer runtimes, memcheck
  libstb-dev                         # image decoding and PNG writing
  python3 python3-numpy python3-pil  # scripts and tests
  python3-torch python3-torchvision  # reference outputs and the default model's training
  python3-sklearn umap-learn         # references of the embedding tests (PCA, t-SNE, UMAP)
  dataset-fashion-mnist              # the default model's data
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user  # NEON kernels: cross-build, run in qemu
  chromium                           # the report checked in a real browser (headless)
)
# Node.js drives that browser (playwright-core); Debian's nodejs and npm unless a Node.js with
# npm is installed already (NodeSource's nodejs bundles npm and conflicts with Debian's npm).
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# playwright-core for tests/test_report_browser.sh, at the version package-lock.json pins, into
# tests/browser/node_modules (--ignore-scripts: it uses the system Chromium, downloads nothing).
# Reinstalled only when the lock file is newer than the installed copy.
cd "$(dirname "$0")/../tests/browser"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci in tests/browser (playwright-core)" >&2
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2
fi
