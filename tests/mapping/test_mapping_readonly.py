"""Read-only mappings: ``map_file(..., writable=False)`` on every persistence path."""

from __future__ import annotations

import os

import pytest

import pmemkit
from pmemkit import InvalidArgumentError, MappingError, ReadOnlyError, mapping

KIB = 1024


@pytest.fixture
def pool(tmp_path):
    """A 16 KiB file holding known bytes, made read-only (mode 0444)."""
    path = tmp_path / "pool"
    path.write_bytes(bytes(range(256)) * 64)
    path.chmod(0o444)
    return path


@pytest.fixture
def ro(kind, pool):
    m = mapping.map_file(pool, writable=False)
    yield m
    m.close()


STORES = {
    "write": lambda pm: pm.write(0, b"x"),
    "flush": lambda pm: pm.flush(0, 1),
    "persist": lambda pm: pm.persist(0, 64),
    "memcpy_persist": lambda pm: pm.memcpy_persist(0, b"x" * 300),
    "memset_persist": lambda pm: pm.memset_persist(0, 1, 300),
    "deep_flush": lambda pm: pm.deep_flush(0, 64),
}


def test_reads_work_on_a_read_only_file(ro, pool):
    assert ro.writable is False
    assert ro.size == 16 * KIB
    assert ro.read(250, 8) == bytes([250, 251, 252, 253, 254, 255, 0, 1])
    assert bytes(ro.buffer[1:4]) == b"\x01\x02\x03"
    assert ro.buffer.readonly
    ro.drain()  # nothing to wait for: harmless


@pytest.mark.parametrize("op", sorted(STORES))
def test_stores_and_flushes_raise_and_leave_the_file(ro, pool, op, snapshot):
    before = snapshot(pool)
    with pytest.raises(ReadOnlyError, match="read-only"):
        STORES[op](ro)
    assert isinstance(ReadOnlyError("x"), pmemkit.PmemError)
    ro.close()
    before.assert_untouched()


def test_arrays_are_read_only(ro):
    a = ro.array("u1", 4, offset=4)
    assert list(a) == [4, 5, 6, 7]
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0] = 9
    with pytest.raises(TypeError):
        ro.buffer[0] = 1


def test_the_file_is_opened_read_only(kind, pool):
    """O_RDONLY: works although the file has no write permission for anyone."""
    assert not os.access(pool, os.W_OK) or os.geteuid() == 0
    m = mapping.map_file(pool, 4 * KIB, writable=False)
    assert m.size == 4 * KIB and m.read(0, 2) == b"\x00\x01"
    m.close()


def test_sees_what_a_writer_persists(kind, tmp_path):
    path = tmp_path / "shared"
    w = mapping.map_file(path, 4 * KIB, create=True)
    r = mapping.map_file(path, writable=False)
    w.memcpy_persist(100, b"hello")
    assert r.read(100, 5) == b"hello"
    w.close()
    r.close()


def test_create_needs_writable(tmp_path, snapshot):
    path = tmp_path / "new"
    before = snapshot(path)
    with pytest.raises(InvalidArgumentError, match="create=True needs a writable"):
        mapping.map_file(path, 4 * KIB, create=True, writable=False)
    before.assert_untouched()


@pytest.mark.parametrize("value", [None, 0, 1, "no"])
def test_writable_must_be_a_bool(pool, value, snapshot):
    before = snapshot(pool)
    with pytest.raises(InvalidArgumentError, match="writable must be True or False"):
        mapping.map_file(pool, writable=value)
    before.assert_untouched()


def test_writable_mapping_of_a_read_only_file_says_how(pool, snapshot):
    before = snapshot(pool)
    with pytest.raises(MappingError, match="writable=False"):
        mapping.map_file(pool)
    before.assert_untouched()


def test_read_only_size_beyond_the_file(pool, snapshot):
    before = snapshot(pool)
    with pytest.raises(MappingError, match="fewer than"):
        mapping.map_file(pool, 64 * KIB, writable=False)
    before.assert_untouched()
