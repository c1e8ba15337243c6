"""Real DAX (MAP_SYNC): run inside the VM guest (`pmemkit vm test`); skipped off DAX.

The ``dax_dir`` fixture (pmemkit.pytest_plugin) gives a fresh directory on a DAX
mount; with ``--require-dax`` / PMEMKIT_REQUIRE_DAX=1 a missing mount fails instead.
"""

from __future__ import annotations

import os

import pytest
from mapping_helpers import file_bytes

from pmemkit import cpu, discovery, mapping

pytestmark = pytest.mark.dax


def test_map_sync_is_accepted_on_every_dax_mount(dax_dirs):
    import tempfile
    from pathlib import Path

    for mount in dax_dirs:  # ext4 and xfs in the guest
        d = Path(tempfile.mkdtemp(prefix="pmemkit-test-", dir=mount))
        try:
            _check_pmem_mapping(d / "pool")
        finally:
            for p in d.iterdir():
                p.unlink()
            d.rmdir()


def _check_pmem_mapping(path):
    with mapping.map_file(path, 1 << 20, create=True, sync="require") as pm:
        assert pm.map_sync is True
        assert pm.is_pmem is True
        if discovery.has_eadr():
            assert pm.granularity == "byte" and pm.flush_method == "none"
        else:
            assert pm.granularity == "cache_line"
            assert pm.flush_method in ("clwb", "clflushopt", "clflush")
            assert pm.flush_method == cpu.best_flush_method()
        assert pm.native is True


def test_auto_takes_map_sync(dax_dir):
    with mapping.map_file(dax_dir / "auto", 64 * 1024, create=True) as pm:
        assert pm.map_sync is True and pm.is_pmem is True


def test_never_is_not_pmem(dax_dir):
    with mapping.map_file(dax_dir / "never", 64 * 1024, create=True, sync="never") as pm:
        assert pm.map_sync is False and pm.is_pmem is False and pm.flush_method == "msync"


def test_persist_on_dax(dax_dir):
    path = dax_dir / "data"
    with mapping.map_file(path, 256 * 1024, create=True, sync="require") as pm:
        payload = os.urandom(100_000)
        pm.memcpy_persist(123, payload)
        pm.write(200_000, b"flushed")
        pm.flush(200_000, 7)
        pm.drain()
        pm.memset_persist(250_000, 0xAB, 300)
        pm.deep_flush(0, pm.size)
        assert pm.msync_stats == (0, 0)  # the CPU path, not msync
    assert file_bytes(path, 123, len(payload)) == payload
    with mapping.map_file(path, sync="require") as pm:
        assert pm.read(200_000, 7) == b"flushed"
        assert pm.read(250_000, 300) == b"\xab" * 300


def test_is_dax_reports_the_file(dax_dir):
    path = dax_dir / "statx"
    mapping.map_file(path, 4096, create=True, sync="require").close()
    assert discovery.is_dax(str(path)) in (True, None)  # None: kernel without STATX_ATTR_DAX
