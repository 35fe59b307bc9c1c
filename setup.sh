#!/usr/bin/env bash
# Set up everything fusion needs on a fresh Debian machine: system toolchains
# (C compiler, aarch64 cross toolchain, lld, qemu-user, PoCL) and a Python
# virtual environment in .venv with fusion installed (editable) + test tools.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
PKGS="gcc g++ libc6-dev make python3-venv python3-dev \
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu \
      clang lld qemu-user \
      pocl-opencl-icd ocl-icd-opencl-dev ocl-icd-libopencl1 clinfo"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends $missing
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
