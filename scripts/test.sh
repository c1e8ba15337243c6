#!/usr/bin/env bash
# The whole test suite: installs what it needs (scripts/bootstrap.sh), builds the docs
# strictly, then runs pytest, including the tests that boot emulated pmem in QEMU.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not vm".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/mkdocs build --strict --quiet --site-dir build/site
exec .venv/bin/python -m pytest "$@"
