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
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "setup: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
