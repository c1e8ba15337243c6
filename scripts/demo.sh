#!/usr/bin/env bash
# The main job on a fresh Debian/Ubuntu machine: install, tell what this machine has,
# show a mapping, then boot emulated pmem (memmap) in a QEMU guest and run the DAX
# and crash-consistency suites inside it on real DAX.
# Extra arguments are passed to `pmemkit vm test` (e.g. --memmap 4G!12G).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
PMEMKIT=.venv/bin/pmemkit
"$PMEMKIT" doctor
"$PMEMKIT" demo
exec "$PMEMKIT" vm test "$@" -- -q tests/mapping tests/crash/test_regression.py
