"""Every error of issue 2 section 2: a specific, typed error, and the file left untouched."""

from __future__ import annotations

import errno
import mmap
import os

import pytest

import pmemkit
from pmemkit import (
    ClosedMappingError,
    InvalidArgumentError,
    MappingError,
    NotPmemError,
    OutOfRangeError,
    PmemError,
    UnsupportedFlushError,
    cpu,
    mapping,
)

from pmemkit._linux import mounts

KIB = 1024


@pytest.fixture
def existing(tmp_path):
    """An 8 KiB file with known content and an old mtime."""
    path = tmp_path / "existing"
    path.write_bytes(bytes(range(256)) * 32)
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return path


def _not_dax(path):
    """True when MAP_SYNC is refused for files in ``path``'s directory (the usual host case)."""
    probe = path.parent / ".probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, 4096)
        try:
            mmap.mmap(fd, 4096, flags=mapping.MAP_SHARED_VALIDATE | mapping.MAP_SYNC).close()
            return False
        except OSError:
            return True
    finally:
        os.close(fd)
        os.unlink(probe)


# --- map_file arguments ---------------------------------------------------------------

def test_zero_size_existing(existing, snapshot):
    snap = snapshot(existing)
    with pytest.raises(InvalidArgumentError, match="0 bytes"):
        mapping.map_file(existing, 0, create=True)
    snap.assert_untouched()


def test_zero_size_new(tmp_path, snapshot):
    snap = snapshot(tmp_path / "new")
    with pytest.raises(InvalidArgumentError, match="0 bytes"):
        mapping.map_file(tmp_path / "new", 0, create=True)
    snap.assert_untouched()


def test_empty_file_without_size(tmp_path, snapshot):
    path = tmp_path / "empty"
    path.touch()
    snap = snapshot(path)
    with pytest.raises(MappingError, match="empty"):
        mapping.map_file(path)
    snap.assert_untouched()


@pytest.mark.parametrize("size", [-1, -4096, "-5", 1.5, "lots", True, [4096]])
def test_bad_size(existing, snapshot, size):
    snap = snapshot(existing)
    with pytest.raises(InvalidArgumentError):
        mapping.map_file(existing, size, create=True)
    snap.assert_untouched()


def test_directory(tmp_path, snapshot):
    d = tmp_path / "adir"
    d.mkdir()
    snap = snapshot(d)
    for create in (False, True):
        with pytest.raises(MappingError, match="is a directory") as info:
            mapping.map_file(d, 4096, create=create)
        assert info.value.errno == errno.EISDIR
    snap.assert_untouched()
    assert list(d.iterdir()) == []


def test_missing_without_create(tmp_path, snapshot):
    path = tmp_path / "missing"
    snap = snapshot(path)
    for size in (None, 4096):
        with pytest.raises(MappingError, match="create=True") as info:
            mapping.map_file(path, size)
        assert info.value.errno == errno.ENOENT
        assert isinstance(info.value, FileNotFoundError) or info.value.errno == errno.ENOENT
    snap.assert_untouched()


def test_missing_with_create_but_no_size(tmp_path, snapshot):
    path = tmp_path / "missing"
    snap = snapshot(path)
    with pytest.raises(InvalidArgumentError, match="give a size"):
        mapping.map_file(path, create=True)
    snap.assert_untouched()


def test_missing_parent_directory(tmp_path, snapshot):
    path = tmp_path / "no" / "such" / "dir" / "f"
    with pytest.raises(MappingError, match="does not exist"):
        mapping.map_file(path, 4096, create=True)
    assert not (tmp_path / "no").exists()


def test_read_only_file(existing, snapshot):
    os.chmod(existing, 0o444)
    snap = snapshot(existing)
    for create in (False, True):
        with pytest.raises(MappingError, match="read-only") as info:
            mapping.map_file(existing, 4096, create=create)
        assert info.value.errno == errno.EACCES
    snap.assert_untouched()


def test_size_beyond_file_without_create(existing, snapshot):
    snap = snapshot(existing)
    with pytest.raises(MappingError, match="create=True"):
        mapping.map_file(existing, 8 * KIB + 1)
    snap.assert_untouched()


@pytest.mark.parametrize("sync", ["always", "", "AUTO", None, 1, True])
def test_bad_sync_value(existing, snapshot, sync):
    snap = snapshot(existing)
    with pytest.raises(InvalidArgumentError, match="sync="):
        mapping.map_file(existing, sync=sync)
    snap.assert_untouched()


@pytest.mark.parametrize("path", [None, 42, ""])
def test_bad_path(path):
    with pytest.raises(InvalidArgumentError):
        mapping.map_file(path, 4096, create=True)


def test_bad_mode(tmp_path, snapshot):
    snap = snapshot(tmp_path / "m")
    with pytest.raises(InvalidArgumentError, match="mode"):
        mapping.map_file(tmp_path / "m", 4096, create=True, mode="rw")
    snap.assert_untouched()


def test_not_a_regular_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(MappingError, match="not a regular file"):
        mapping.map_file(fifo, 4096)


# --- sync="require" off DAX ------------------------------------------------------------

def test_require_off_dax_existing(existing, snapshot):
    if not _not_dax(existing):
        pytest.skip("this directory is on DAX: sync='require' succeeds here (see test_mapping_dax)")
    snap = snapshot(existing)
    with pytest.raises(NotPmemError) as info:
        mapping.map_file(existing, sync="require")
    msg = str(info.value)
    _device, mountpoint, fstype, opts = mounts.mount_of(existing)
    assert fstype in msg and mountpoint in msg and (opts or "(none)") in msg
    assert "mount -o dax" in msg and "pmemkit vm run" in msg
    assert "MAP_SYNC" in msg
    assert isinstance(info.value, MappingError) and isinstance(info.value, PmemError)
    snap.assert_untouched()


def test_require_off_dax_extending_restores_the_file(existing, snapshot):
    if not _not_dax(existing):
        pytest.skip("this directory is on DAX")
    snap = snapshot(existing)
    with pytest.raises(NotPmemError):
        mapping.map_file(existing, 64 * KIB, create=True, sync="require")
    snap.assert_untouched()


def test_require_off_dax_new_file_is_removed(tmp_path, snapshot):
    if not _not_dax(tmp_path / "x"):
        pytest.skip("this directory is on DAX")
    path = tmp_path / "new"
    with pytest.raises(NotPmemError):
        mapping.map_file(path, 64 * KIB, create=True, sync="require")
    assert not path.exists()


def test_mount_of_finds_the_longest_mountpoint(tmp_path):
    import psutil

    from pmemkit._linux.mounts import mount_of

    _device, mountpoint, fstype, _ = mount_of(tmp_path)
    real = os.path.realpath(tmp_path)
    assert real == mountpoint or real.startswith(mountpoint.rstrip("/") + "/")
    others = [p.mountpoint for p in psutil.disk_partitions(all=True)
              if real.startswith(p.mountpoint.rstrip("/") + "/") or real == p.mountpoint]
    assert len(mountpoint) == max(map(len, others))
    assert fstype


# --- environment overrides -------------------------------------------------------------

@pytest.mark.parametrize("value", ["2", "yes", "true"])
def test_bad_force_pmem(monkeypatch, existing, snapshot, value):
    monkeypatch.setenv("PMEMKIT_FORCE_PMEM", value)
    snap = snapshot(existing)
    with pytest.raises(InvalidArgumentError, match="PMEMKIT_FORCE_PMEM"):
        mapping.map_file(existing)
    snap.assert_untouched()


def test_bad_flush_method(monkeypatch, existing, snapshot):
    monkeypatch.setenv("PMEMKIT_FLUSH", "clflushoptimal")
    snap = snapshot(existing)
    with pytest.raises(InvalidArgumentError, match="PMEMKIT_FLUSH"):
        mapping.map_file(existing)
    snap.assert_untouched()


def test_flush_method_the_cpu_lacks(monkeypatch, existing, snapshot):
    # This CPU may have every instruction: pretend CLWB is missing from what the build can issue.
    monkeypatch.setattr(cpu, "available_methods", lambda: ["msync", "none", "clflush"])
    monkeypatch.setenv("PMEMKIT_FLUSH", "clwb")
    snap = snapshot(existing)
    with pytest.raises(UnsupportedFlushError, match="CLWB") as info:
        mapping.map_file(existing)
    assert "PMEMKIT_FLUSH" in str(info.value)
    snap.assert_untouched()


def test_flush_method_without_native(monkeypatch, existing, snapshot):
    from mapping_helpers import disable_native

    disable_native(monkeypatch)
    snap = snapshot(existing)
    for method in ("clwb", "clflushopt", "clflush", "none"):
        monkeypatch.setenv("PMEMKIT_FLUSH", method)
        with pytest.raises(UnsupportedFlushError, match="only msync is possible"):
            mapping.map_file(existing)
    monkeypatch.setenv("PMEMKIT_FLUSH", "msync")
    mapping.map_file(existing).close()
    snap.assert_untouched()


def test_native_refuses_unknown_method(existing):
    from pmemkit import _flush

    with open(existing, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 4096)
    with pytest.raises(InvalidArgumentError, match="unknown flush method"):
        _flush.Mapping()._attach(mm, "clzap", "pool")
    mm.close()


# --- operations on a mapping ----------------------------------------------------------------

BAD_RANGES = [(-1, 1), (0, -1), (-4096, 10), (64 * KIB, 1), (64 * KIB - 1, 2), (0, 64 * KIB + 1),
              (64 * KIB + 1, 0), (2**63, 1), (1, 2**64), (-(2**70), 1)]


def _ops_with_range(pm, offset, length):
    yield "flush", lambda: pm.flush(offset, length)
    yield "persist", lambda: pm.persist(offset, length)
    yield "read", lambda: pm.read(offset, length)
    yield "deep_flush", lambda: pm.deep_flush(offset, length)
    yield "memset_persist", lambda: pm.memset_persist(offset, 7, length)
    if length >= 0 and length < 2**20:
        yield "write", lambda: pm.write(offset, b"\x01" * length)
        yield "memcpy_persist", lambda: pm.memcpy_persist(offset, b"\x01" * length)


def test_out_of_range_operations(pm, snapshot):
    pm.persist(0, pm.size)
    snap = snapshot(pm.path)
    for offset, length in BAD_RANGES:
        for name, op in _ops_with_range(pm, offset, length):
            with pytest.raises(OutOfRangeError) as info:
                op()
            assert isinstance(info.value, IndexError) and isinstance(info.value, ValueError), name
            msg = str(info.value)
            assert "negative" in msg or "outside" in msg, (name, offset, length, msg)
    assert pm.read(0, pm.size) == bytes(pm.size)
    pm.drain()
    snap.assert_untouched()


def test_non_integer_offsets(pm):
    for bad in (1.0, "0", None, b"\0"):
        calls = (lambda b: pm.flush(b, 1), lambda b: pm.flush(0, b), lambda b: pm.persist(b, 1),
                 lambda b: pm.read(b, 1), lambda b: pm.write(b, b"x"),
                 lambda b: pm.memcpy_persist(b, b"x"), lambda b: pm.memset_persist(b, 0, 1),
                 lambda b: pm.deep_flush(0, b))
        for call in calls:
            with pytest.raises(InvalidArgumentError, match="integers"):
                call(bad)


def test_index_like_offsets_are_accepted(pm):
    import numpy as np

    pm.write(np.int64(3), b"np")
    pm.persist(np.uint16(3), np.int32(2))
    assert pm.read(np.int8(3), 2) == b"np"


def test_memset_value_not_a_byte(pm):
    for value in (-1, 256, 1000, 2**70):
        with pytest.raises(InvalidArgumentError, match="0-255"):
            pm.memset_persist(0, value, 10)
    assert pm.read(0, 10) == bytes(10)


def test_memset_value_wrong_type(pm):
    with pytest.raises(InvalidArgumentError, match="0-255"):
        pm.memset_persist(0, "a", 10)


def test_write_needs_bytes(pm):
    for data in ("text", 12, None, [1, 2], memoryview(bytes(8))[::2]):
        for op in (pm.write, pm.memcpy_persist):
            with pytest.raises(InvalidArgumentError, match="bytes-like"):
                op(0, data)
    assert pm.read(0, 8) == bytes(8)


def test_wrong_argument_count(pm):
    with pytest.raises(TypeError):
        pm.persist(0)
    with pytest.raises(TypeError):
        pm.drain(1)


# --- use after close ----------------------------------------------------------------------

def _every_use(m, bound):
    return {
        "flush": lambda: m.flush(0, 1),
        "drain": lambda: m.drain(),
        "persist": lambda: m.persist(0, 1),
        "memcpy_persist": lambda: m.memcpy_persist(0, b"x"),
        "memset_persist": lambda: m.memset_persist(0, 1, 1),
        "deep_flush": lambda: m.deep_flush(0, 1),
        "write": lambda: m.write(0, b"x"),
        "read": lambda: m.read(0, 1),
        "buffer": lambda: m.buffer,
        "array": lambda: m.array("u1"),
        "len": lambda: len(m),
        "with": lambda: m.__enter__(),
        "pending_msync": lambda: m.pending_msync(),
        # methods fetched before close() must not touch the unmapped memory either
        "bound persist": lambda: bound["persist"](0, 1),
        "bound memcpy_persist": lambda: bound["memcpy_persist"](0, b"abc"),
        "bound write": lambda: bound["write"](0, b"abc"),
        "bound read": lambda: bound["read"](0, 1),
        "bound flush": lambda: bound["flush"](0, 1),
        "bound drain": lambda: bound["drain"](),
        "bound memset_persist": lambda: bound["memset_persist"](0, 1, 1),
    }


def test_use_after_close(kind, tmp_path, snapshot):
    m = mapping.map_file(tmp_path / "c", 4096, create=True)
    bound = {name: getattr(m, name) for name in
             ("persist", "memcpy_persist", "write", "read", "flush", "drain", "memset_persist")}
    m.close()
    m.close()
    assert m.closed
    snap = snapshot(tmp_path / "c")
    for name, use in _every_use(m, bound).items():
        with pytest.raises(ClosedMappingError, match="closed") as info:
            use()
        assert isinstance(info.value, PmemError), name
    snap.assert_untouched()
    assert "closed" in repr(m)


def test_error_classes_are_exported():
    for cls in (ClosedMappingError, InvalidArgumentError, MappingError, NotPmemError,
                OutOfRangeError, UnsupportedFlushError):
        assert issubclass(cls, pmemkit.PmemError)


# --- arguments no file can satisfy: PmemError subclasses, nothing created ------------------

@pytest.mark.parametrize("mode", [-1, 0o4755, 0o2644, 0o1777, 0o10000, True, 6.0])
def test_mode_must_be_permission_bits(tmp_path, snapshot, mode):
    snap = snapshot(tmp_path / "m")
    with pytest.raises(InvalidArgumentError, match="mode"):
        mapping.map_file(tmp_path / "m", 4096, create=True, mode=mode)
    snap.assert_untouched()


@pytest.mark.parametrize("size", [2**62, 2**63 - 4096])
def test_huge_size_is_a_mapping_error_and_the_file_is_not_left(tmp_path, snapshot, size):
    snap = snapshot(tmp_path / "huge")
    with pytest.raises(MappingError, match="cannot"):
        mapping.map_file(tmp_path / "huge", size, create=True)
    snap.assert_untouched()


def test_huge_size_extending_an_existing_file_restores_it(existing, snapshot):
    snap = snapshot(existing)
    with pytest.raises(MappingError):
        mapping.map_file(existing, 2**62, create=True)
    snap.assert_untouched()


@pytest.mark.parametrize("size", [2**63, 2**70, "8388608T"])
def test_size_beyond_any_file_offset(tmp_path, snapshot, size):
    snap = snapshot(tmp_path / "huge")
    with pytest.raises(InvalidArgumentError, match="at most"):
        mapping.map_file(tmp_path / "huge", size, create=True)
    snap.assert_untouched()


@pytest.mark.parametrize("path", ["a\0b", b"a\0b"])
def test_nul_in_path(tmp_path, path):
    full = os.path.join(os.fsencode(tmp_path) if isinstance(path, bytes) else str(tmp_path), path)
    with pytest.raises(InvalidArgumentError, match="NUL"):
        mapping.map_file(full, 4096, create=True)
    assert os.listdir(tmp_path) == []
