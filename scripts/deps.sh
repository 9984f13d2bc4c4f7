#!/usr/bin/env bash
# Installs, with apt-get, the Debian 12 packages Ferry needs to build, test and
# benchmark. Idempotent: only what is missing is installed, and nothing is
# touched when everything is present.
set -euo pipefail

pkgs=(
  build-essential pkg-config meson ninja-build
  libzstd-dev libjansson-dev libxxhash-dev libcmocka-dev
  libgnutls28-dev  # TLS on migration connections (docs/architecture.md, "TLS")
  gnutls-bin       # certtool: tests make their certificates at run time
  linux-libc-dev python3 clang
  qemu-system-x86  # tests/qmp/test-conformance.py: Ferry's QMP against QEMU 7.2's
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: missing packages: ${missing[*]}; run as root (or install them)" >&2
  exit 1
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
