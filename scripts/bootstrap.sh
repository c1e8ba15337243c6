#!/usr/bin/env bash
# Installs everything pmemkit's demo and test suite need on a Debian/Ubuntu machine:
# Debian packages (as root) and the Python package, editable, into ./.venv.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# One list, one place. Grouped by what needs them.
APT_PACKAGES=(
  # build and venv
  gcc python3-venv python3-dev
  # PMDK: libpmem/libpmemblk for the benchmarks' C drivers and as interop oracles, pmempool
  libpmem1 libpmem-dev libpmemblk1 libpmemblk-dev pmdk-tools
  # C programs the interposer tests build (`pmemkit crash run`); libpmem.a needs ndctl/daxctl,
  # -static needs libc.a (libc6-dev)
  libpmemobj1 libpmemobj-dev libpmem2 libpmem2-dev libndctl-dev libdaxctl-dev libc6-dev
  # emulated pmem in a QEMU guest (pmemkit.vm)
  qemu-system-x86 qemu-utils busybox-static kmod cpio zstd debootstrap debian-archive-keyring
  ndctl xfsprogs e2fsprogs
  # the developer VM sandbox (ansible/, vm/Vagrantfile): disk images, SSH, vagrant validate
  fdisk openssh-client vagrant vagrant-libvirt
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
    echo "bootstrap: run this script as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
.venv/bin/python -m pip install -q -e ".[test]"
