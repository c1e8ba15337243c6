"""The mapping API on every persistence path (msync in C and in Python, each CPU method)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import pmemkit
from pmemkit import ClosedMappingError, Region, discovery, mapping
from pmemkit.region import NT_THRESHOLD

from mapping_helpers import disable_native, expected_method, file_bytes

KIB = 1024


def test_native_extension_is_built():
    """The C primitives must be importable wherever the tests run (host and guest)."""
    from pmemkit import _flush

    assert "msync" in _flush.methods()
    assert mapping._native is _flush


def test_attributes_follow_the_path(pm, kind, tmp_path):
    assert isinstance(pm, Region) and isinstance(pm, pmemkit.PmemMap)
    assert pm.path == str(tmp_path / "pool")
    assert pm.size == len(pm) == 64 * KIB
    assert pm.flush_method == expected_method(kind)
    if kind.startswith("msync"):
        assert pm.is_pmem is False and pm.granularity == "page"
    else:
        assert pm.is_pmem is True
        assert pm.granularity == ("byte" if discovery.has_eadr() else "cache_line")
    assert pm.native is (kind != "msync-python")
    assert "pool" in repr(pm)


def test_write_read_buffer(pm):
    pm.write(10, b"hello")
    pm.write(20, bytearray(b"abc"))
    pm.write(30, memoryview(b"xyz"))
    assert pm.read(10, 5) == b"hello"
    assert pm.read(20, 3) == b"abc"
    assert pm.read(30, 3) == b"xyz"
    assert pm.read(0, 0) == b""
    buf = pm.buffer
    assert isinstance(buf, memoryview) and not buf.readonly and buf.nbytes == pm.size
    buf[100:104] = b"\x01\x02\x03\x04"
    assert pm.read(100, 4) == b"\x01\x02\x03\x04"


PERSIST_RANGES = [(0, 1), (1, 63), (63, 2), (4000, 200), (100, 5000), (0, 64 * KIB),
                  (64 * KIB - 1, 1), (123, 0)]


def test_persist_then_file_has_the_data(pm):
    for offset, length in PERSIST_RANGES:
        data = bytes((i * 7 + offset) % 256 for i in range(length))
        pm.write(offset, data)
        pm.persist(offset, length)
        assert file_bytes(pm.path, offset, length) == data, (offset, length)


def test_flush_then_drain(pm):
    pm.write(5000, b"A" * 3000)
    pm.write(40000, b"B" * 10)
    pm.flush(5000, 3000)
    pm.flush(40000, 10)
    pm.drain()
    assert file_bytes(pm.path, 5000, 3000) == b"A" * 3000
    assert file_bytes(pm.path, 40000, 10) == b"B" * 10
    pm.drain()  # nothing pending: fine


COPY_OFFSETS = [0, 1, 63, 64, 4095]
COPY_LENGTHS = [1, 63, 64, NT_THRESHOLD - 1, NT_THRESHOLD, NT_THRESHOLD + 1, 4096, 10_000]


def test_memcpy_persist_every_alignment(pm):
    for offset in COPY_OFFSETS:
        for length in COPY_LENGTHS:
            pm.write(0, bytes(pm.size))
            data = os.urandom(length)
            pm.memcpy_persist(offset, data)
            where = (offset, length)
            assert pm.read(offset, length) == data, where
            assert file_bytes(pm.path, offset, length) == data, where
            # the bytes around it are untouched
            if offset:
                assert pm.read(offset - 1, 1) == b"\0", where
            assert pm.read(offset + length, 1) == b"\0", where


def test_memcpy_persist_overlapping_source(pm):
    pm.write(0, bytes(range(256)) * 8)
    pm.memcpy_persist(100, pm.buffer[0:1000])  # overlapping source, like memmove
    assert pm.read(100, 1000) == (bytes(range(256)) * 8)[:1000]


def test_memset_persist(pm):
    for offset, length in [(0, 1), (3, 100), (7, 300), (64, 4096), (1, 60000)]:
        pm.write(0, b"\xff" * pm.size)
        pm.memset_persist(offset, 0x5A, length)
        where = (offset, length)
        assert pm.read(offset, length) == b"\x5a" * length, where
        assert file_bytes(pm.path, offset, length) == b"\x5a" * length, where
        if offset:
            assert pm.read(offset - 1, 1) == b"\xff", where
        if offset + length < pm.size:
            assert pm.read(offset + length, 1) == b"\xff", where


def test_deep_flush(pm):
    pm.write(4090, b"deep")
    pm.deep_flush(4090, 4)
    assert file_bytes(pm.path, 4090, 4) == b"deep"
    pm.deep_flush(0, 0)


def test_mark_is_a_noop(pm):
    pm.mark("checkpoint")


def test_context_manager_closes(kind, tmp_path):
    with mapping.map_file(tmp_path / "f", 8192, create=True) as m:
        m.memcpy_persist(0, b"ctx")
    assert m.closed
    m.close()  # idempotent
    assert file_bytes(tmp_path / "f", 0, 3) == b"ctx"


def test_data_survives_remapping(kind, tmp_path):
    path = tmp_path / "again"
    with mapping.map_file(path, 3 * 4096 + 17, create=True) as m:
        m.memcpy_persist(3 * 4096, b"end of file")
    with mapping.map_file(path) as m:
        assert m.size == 3 * 4096 + 17
        assert m.read(3 * 4096, 11) == b"end of file"


def test_numpy_views(pm):
    import numpy as np

    a = pm.array("u8")
    assert a.shape == (pm.size // 8,)
    a[:4] = [1, 2, 3, 0xFFFFFFFFFFFFFFFF]
    pm.persist(0, 32)
    assert pm.read(0, 8) == (1).to_bytes(8, "little")
    assert file_bytes(pm.path, 24, 8) == b"\xff" * 8
    b = pm.array(np.int32, shape=(4, 4), offset=1024)
    b[1, 2] = -5
    assert pm.read(1024 + (4 + 2) * 4, 4) == (-5).to_bytes(4, "little", signed=True)
    c = pm.array("u1", 3, offset=10)
    assert c.shape == (3,) and np.shares_memory(c, a)
    with pytest.raises(pmemkit.OutOfRangeError):
        pm.array("u8", 10, offset=pm.size - 8)
    with pytest.raises(pmemkit.OutOfRangeError):
        pm.array("u1", offset=pm.size + 1)


def test_numpy_view_outlives_close(kind, tmp_path):
    m = mapping.map_file(tmp_path / "np", 4096, create=True)
    a = m.array("u1")
    sl = m.buffer[0:16]
    m.close()
    a[0] = 42  # still mapped: the array keeps the memory alive, never dangling
    assert a[0] == 42 and sl[0] == 42
    with pytest.raises(ClosedMappingError):
        m.array("u1")
    del a, sl


def test_the_methods_that_run_are_the_ones_the_class_shows(pm, kind):
    """With the extension, PmemMap's persistence and data methods are the C type's own."""
    from pmemkit import _flush

    hot = ("flush", "drain", "persist", "memcpy_persist", "memset_persist", "write", "read")
    assert isinstance(pm, mapping.PmemMap)
    for name in hot:
        assert name not in pm.__dict__  # nothing is bound per instance
        if kind == "msync-python":
            assert not isinstance(pm, _flush.Mapping)
        else:
            assert isinstance(pm, _flush.Mapping)
            assert getattr(type(pm), name) is getattr(_flush.Mapping, name), name
            assert type(getattr(pm, name)).__name__ == "builtin_function_or_method", name


def test_import_pmemkit_does_not_import_numpy(tmp_path):
    code = (
        "import sys, pmemkit\n"
        "assert 'numpy' not in sys.modules, 'import pmemkit pulled numpy'\n"
        f"m = pmemkit.map_file({str(tmp_path / 'f')!r}, 4096, create=True)\n"
        "m.memcpy_persist(0, b'x'); m.persist(0, 1); m.read(0, 1); m.close()\n"
        "assert 'numpy' not in sys.modules, 'map_file pulled numpy'\n"
        f"m = pmemkit.map_file({str(tmp_path / 'f')!r}); m.array('u1')\n"
        "assert 'numpy' in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMEMKIT_")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr


def test_size_forms_and_whole_file(tmp_path):
    path = tmp_path / "s"
    with mapping.map_file(path, "64K", create=True) as m:
        assert m.size == 64 * KIB
    assert os.path.getsize(path) == 64 * KIB
    with mapping.map_file(os.fsencode(path)) as m:  # bytes paths too
        assert m.size == 64 * KIB
    with mapping.map_file(str(path), 100) as m:  # a prefix of the file
        assert m.size == 100
    with mapping.map_file(path, 128 * KIB, create=True) as m:  # create extends
        assert m.size == 128 * KIB
    with mapping.map_file(path, 4 * KIB, create=True) as m:  # ...and never shrinks
        assert m.size == 4 * KIB
    assert os.path.getsize(path) == 128 * KIB


def test_create_uses_mode(tmp_path):
    path = tmp_path / "m"
    old = os.umask(0)
    try:
        mapping.map_file(path, 4096, create=True, mode=0o600).close()
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_sync_never_and_auto_off_dax(tmp_path):
    if discovery.is_dax(str(tmp_path)):
        pytest.skip("tmp_path is on DAX here; the off-DAX behaviour is tested elsewhere")
    for sync in ("auto", "never"):
        with mapping.map_file(tmp_path / sync, 4096, create=True, sync=sync) as m:
            assert m.map_sync is False and m.is_pmem is False and m.flush_method == "msync"


def test_force_pmem_zero_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("PMEMKIT_FORCE_PMEM", "0")
    with mapping.map_file(tmp_path / "z", 4096, create=True) as m:
        assert (m.is_pmem, m.granularity, m.flush_method) == (False, "page", "msync")


def test_force_pmem_picks_best_cpu_method(monkeypatch, tmp_path):
    from pmemkit import cpu

    monkeypatch.setenv("PMEMKIT_FORCE_PMEM", "1")
    with mapping.map_file(tmp_path / "f", 4096, create=True) as m:
        assert m.is_pmem is True
        if discovery.has_eadr():
            assert m.flush_method == "none" and m.granularity == "byte"
        else:
            assert m.flush_method == cpu.best_flush_method() and m.granularity == "cache_line"


def test_without_native_only_msync(monkeypatch, tmp_path):
    disable_native(monkeypatch)
    monkeypatch.setenv("PMEMKIT_FORCE_PMEM", "1")
    with mapping.map_file(tmp_path / "f", 4096, create=True) as m:
        # pmem, but no instruction can be issued from Python: msync keeps it durable
        assert m.is_pmem is True and m.flush_method == "msync" and m.native is False
        m.memcpy_persist(0, b"py")
        assert file_bytes(m.path, 0, 2) == b"py"


def test_bound_methods_keep_the_mapping_alive(kind, tmp_path):
    import gc

    path = tmp_path / "bound"
    m = mapping.map_file(path, 4096, create=True)
    memcpy_persist = m.memcpy_persist
    del m
    gc.collect()
    memcpy_persist(10, b"still mapped")
    assert file_bytes(path, 10, 12) == b"still mapped"


def test_c_constants_are_the_python_ones():
    """_flush.c cannot import Python: its cache-line size, NT threshold and env name are pinned."""
    from pmemkit import _flush, defaults, region

    assert _flush.CACHE_LINE == region.CACHE_LINE
    assert _flush.NT_THRESHOLD == region.NT_THRESHOLD
    assert _flush.AVX512F_ENV == defaults.AVX512F_ENV


def test_unattached_c_mapping_refuses_every_call():
    """The C type alone (never attached to memory) raises instead of touching address 0."""
    from pmemkit import _flush

    m = _flush.Mapping()
    for call in (lambda: m.flush(0, 0), lambda: m.drain(), lambda: m.persist(0, 0),
                 lambda: m.write(0, b""), lambda: m.read(0, 0), lambda: m.memcpy_persist(0, b""),
                 lambda: m.memset_persist(0, 0, 0)):
        with pytest.raises(ClosedMappingError):
            call()
    m._detach()
