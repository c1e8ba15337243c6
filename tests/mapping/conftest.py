"""Fixtures for the mapping tests: every persistence path, and file snapshots.

The tests run on the host (msync path, and the CPU flush path forced through
PMEMKIT_FORCE_PMEM/PMEMKIT_FLUSH on an ordinary file) and, unchanged, inside the
VM guest on real DAX (tests marked ``dax``).
"""

from __future__ import annotations

import pytest
from mapping_helpers import KINDS, Snapshot, disable_native

from pmemkit import mapping


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Tests start without the override variables (a developer's shell may set them)."""
    monkeypatch.delenv("PMEMKIT_FORCE_PMEM", raising=False)
    monkeypatch.delenv("PMEMKIT_FLUSH", raising=False)


@pytest.fixture(params=KINDS)
def kind(request, monkeypatch):
    """The persistence path under test: msync (C), msync (pure Python) or a CPU method."""
    k = request.param
    if k == "msync-python":
        disable_native(monkeypatch)
    elif k != "msync":
        monkeypatch.setenv("PMEMKIT_FORCE_PMEM", "1")
        monkeypatch.setenv("PMEMKIT_FLUSH", k)
    else:
        monkeypatch.setenv("PMEMKIT_FORCE_PMEM", "0")
    return k


@pytest.fixture
def pm(kind, tmp_path):
    """A 64 KiB mapping of a fresh file on the path ``kind``."""
    m = mapping.map_file(tmp_path / "pool", 64 * 1024, create=True)
    yield m
    m.close()


@pytest.fixture
def snapshot():
    return Snapshot
