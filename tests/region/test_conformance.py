"""One conformance suite for every Region implementation.

PmemMap on each flush method this machine has (msync in C, msync in pure Python, each
CPU instruction, eADR's ``none``), BufferRegion over a bytearray and over a numpy array,
and the crash simulator's TracedRegion: the same data semantics, the same persistence
calls, and the same error class for every bad argument (the tables are in
:mod:`pmemkit.conformance`, shared with the BTT's tests).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from pmemkit import cpu, mapping
from pmemkit.conformance import BAD_BYTE_VALUES, BAD_DTYPES, BAD_INTEGERS, bad_data
from pmemkit.crash.trace import TracedRegion
from pmemkit.errors import (ClosedMappingError, InvalidArgumentError, OutOfRangeError, PmemError,
                            ReadOnlyError)
from pmemkit.region import BufferRegion, Region, check_range

SIZE = 64 * 1024
CPU_METHODS = [m for m in cpu.available_methods() if m != "msync"]
KINDS = (["pmem-msync", "pmem-msync-python"] + [f"pmem-{m}" for m in CPU_METHODS]
         + ["buffer-bytearray", "buffer-numpy", "traced"])
READ_ONLY_KINDS = ["pmem-msync", "pmem-msync-python"] + [f"pmem-{m}" for m in CPU_METHODS] + [
    "buffer-bytes"]


def _pmem_env(kind, monkeypatch):
    method = kind.removeprefix("pmem-")
    monkeypatch.delenv("PMEMKIT_FLUSH", raising=False)
    if method == "msync-python":
        monkeypatch.setattr(mapping, "_native", None)
        monkeypatch.setattr(cpu, "native", lambda: None)
        monkeypatch.setenv("PMEMKIT_FORCE_PMEM", "0")
    elif method == "msync":
        monkeypatch.setenv("PMEMKIT_FORCE_PMEM", "0")
    else:
        monkeypatch.setenv("PMEMKIT_FORCE_PMEM", "1")
        monkeypatch.setenv("PMEMKIT_FLUSH", method)


def _file_bytes(path):
    def durable(offset, length):
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)
    return durable


def make_region(kind, monkeypatch, tmp_path, writable=True):
    """``(region, durable)``: ``durable(offset, length)`` reads what survives the process."""
    if kind.startswith("pmem-"):
        _pmem_env(kind, monkeypatch)
        path = tmp_path / "pool"
        if not writable:
            mapping.map_file(path, SIZE, create=True).close()
        region = mapping.map_file(path, SIZE, create=writable, writable=writable)
        return region, _file_bytes(path)
    if kind == "buffer-bytearray":
        buf = bytearray(SIZE)
    elif kind == "buffer-numpy":
        buf = np.zeros(SIZE, dtype="u1")
    elif kind == "buffer-bytes":
        buf = bytes(SIZE)
        return BufferRegion(buf, writable=False), lambda o, n: buf[o:o + n]
    else:
        region = TracedRegion(SIZE)
        return region, lambda o, n: bytes(region.durable[o:o + n])
    return BufferRegion(buf), lambda o, n: bytes(memoryview(buf).cast("B")[o:o + n])


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def region(kind, monkeypatch, tmp_path):
    r, durable = make_region(kind, monkeypatch, tmp_path)
    r.durable_bytes = durable
    yield r
    r.close()


@pytest.fixture(params=READ_ONLY_KINDS)
def ro_region(request, monkeypatch, tmp_path):
    r, _ = make_region(request.param, monkeypatch, tmp_path, writable=False)
    yield r
    r.close()


# --- data -----------------------------------------------------------------------------

def test_is_a_region_with_the_contract_attributes(region):
    assert isinstance(region, Region)
    assert region.size == len(region) == SIZE
    assert region.granularity in ("byte", "cache_line", "page")
    assert isinstance(region.flush_method, str) and isinstance(region.is_pmem, bool)
    assert region.writable is True and isinstance(region.nt_copies, bool)
    assert not region.closed


def test_write_read_buffer_array(region):
    region.write(10, b"hello")
    region.write(20, bytearray(b"abc"))
    region.write(30, np.frombuffer(b"xyz", dtype="u1"))
    region.write(SIZE - 2, memoryview(b"zz"))
    region.write(0, b"")
    assert region.read(10, 5) == b"hello"
    assert region.read(20, 3) == b"abc" and region.read(30, 3) == b"xyz"
    assert region.read(SIZE - 2, 2) == b"zz" and region.read(SIZE, 0) == b""
    buf = region.buffer
    assert isinstance(buf, memoryview) and buf.nbytes == SIZE and not buf.readonly
    buf[100:102] = b"\x01\x02"
    assert region.read(100, 2) == b"\x01\x02"
    a = region.array("<u4", 2, offset=100)
    assert a[0] == 0x0201
    a[1] = 0xDEADBEEF
    assert region.read(104, 4) == (0xDEADBEEF).to_bytes(4, "little")
    rec = region.array([("key", "<u8"), ("tag", "S4")], (2, 2), offset=256)
    assert rec.shape == (2, 2) and rec.dtype.itemsize == 12
    assert region.array("u1").shape == (SIZE,)
    assert region.array("u8", offset=SIZE).shape == (0,)


def test_memcpy_and_memset_persist(region):
    data = bytes(range(256)) * 5
    region.memcpy_persist(3, data)
    assert region.read(3, len(data)) == data
    assert region.durable_bytes(3, len(data)) == data
    region.memset_persist(5000, 0xAB, 700)
    assert region.read(5000, 700) == b"\xab" * 700
    assert region.durable_bytes(5000, 700) == b"\xab" * 700
    region.memset_persist(0, 0, 0)
    region.memcpy_persist(SIZE, b"")


@pytest.mark.parametrize("offset,length", [(0, 1), (63, 2), (4000, 200), (0, SIZE),
                                           (SIZE - 1, 1), (SIZE, 0), (123, 0)])
def test_persist_makes_stores_durable(region, offset, length):
    data = bytes((i * 7 + 1) % 256 or 1 for i in range(length))
    region.write(offset, data)
    region.flush(offset, length)
    region.drain()
    assert region.durable_bytes(offset, length) == data
    region.write(offset, bytes(length))
    region.persist(offset, length)
    assert region.durable_bytes(offset, length) == bytes(length)
    region.deep_flush(offset, length)


def test_mark_and_record_are_accepted(region):
    region.mark("step")
    region.record("key", 1)


# --- bad arguments ------------------------------------------------------------------------

def _range_calls(region, offset, length):
    """Every call taking an (offset, length) pair, with ``offset``/``length`` in place."""
    return {
        "flush": lambda: region.flush(offset, length),
        "persist": lambda: region.persist(offset, length),
        "deep_flush": lambda: region.deep_flush(offset, length),
        "read": lambda: region.read(offset, length),
        "memset_persist": lambda: region.memset_persist(offset, 1, length),
    }


def _offset_calls(region, offset):
    return {
        **_range_calls(region, offset, 1),
        "write": lambda: region.write(offset, b"x"),
        "memcpy_persist": lambda: region.memcpy_persist(offset, b"x"),
        "array-offset": lambda: region.array("u1", 1, offset=offset),
    }


@pytest.mark.parametrize("value,error", BAD_INTEGERS, ids=repr)
def test_bad_offsets(region, value, error):
    before = region.read(0, SIZE)
    for name, call in _offset_calls(region, value).items():
        with pytest.raises(error) as info:
            call()
        assert isinstance(info.value, PmemError), name
    assert region.read(0, SIZE) == before


@pytest.mark.parametrize("value,error", BAD_INTEGERS, ids=repr)
def test_bad_lengths(region, value, error):
    calls = _range_calls(region, 0, value)
    if value is not None:  # shape=None is "the whole region"
        calls["array-shape"] = lambda: region.array("u1", value)
    for name, call in calls.items():
        with pytest.raises(error) as info:
            call()
        assert isinstance(info.value, PmemError), name


@pytest.mark.parametrize("offset,length", [(SIZE, 1), (SIZE - 1, 2), (0, SIZE + 1), (-1, 1),
                                           (1, -1), (2**63, 1), (SIZE // 2, 2**63)])
def test_out_of_range_messages_are_the_same_everywhere(region, offset, length):
    with pytest.raises(OutOfRangeError) as expected:
        check_range(offset, length, SIZE)
    for name, call in _range_calls(region, offset, length).items():
        with pytest.raises(OutOfRangeError) as info:
            call()
        assert str(info.value) == str(expected.value), name
        assert isinstance(info.value, IndexError) and isinstance(info.value, ValueError)


def test_non_integer_messages_are_the_same_everywhere(region):
    with pytest.raises(InvalidArgumentError) as expected:
        check_range(1.5, 1, SIZE)
    for name, call in _range_calls(region, 1.5, 1).items():
        with pytest.raises(InvalidArgumentError) as info:
            call()
        assert str(info.value) == str(expected.value), name


@pytest.mark.parametrize("value,error", BAD_BYTE_VALUES, ids=repr)
def test_bad_memset_values(region, value, error):
    with pytest.raises(error, match="0-255"):
        region.memset_persist(0, value, 16)
    assert region.read(0, 16) == bytes(16)


@pytest.mark.parametrize("index", range(len(bad_data())))
def test_bad_data(region, index):
    value, error = bad_data()[index]
    for call in (region.write, region.memcpy_persist):
        with pytest.raises(error, match="bytes-like"):
            call(0, value)
    assert region.read(0, 16) == bytes(16)


@pytest.mark.parametrize("dtype,error", BAD_DTYPES, ids=repr)
def test_bad_dtypes(region, dtype, error):
    with pytest.raises(error):
        region.array(dtype, 1)


def test_wrong_argument_counts_are_type_errors(region):
    for call in (lambda: region.persist(0), lambda: region.flush(0), lambda: region.drain(1),
                 lambda: region.write(0), lambda: region.read(0)):
        with pytest.raises(TypeError):
            call()


def test_use_after_close(region):
    fetched = region.persist
    region.close()
    region.close()
    assert region.closed
    for call in (lambda: region.read(0, 1), lambda: region.write(0, b"x"), lambda: fetched(0, 1),
                 lambda: region.flush(0, 1), lambda: region.drain(), lambda: region.buffer,
                 lambda: region.array("u1"), lambda: region.memcpy_persist(0, b"x"),
                 lambda: region.memset_persist(0, 1, 1), lambda: len(region)):
        with pytest.raises(ClosedMappingError):
            call()


# --- read-only regions ---------------------------------------------------------------------

def test_read_only_regions_refuse_every_store(ro_region):
    assert ro_region.writable is False
    assert ro_region.read(0, 4) == bytes(4)
    assert ro_region.buffer.readonly and not ro_region.array("u1", 4).flags.writeable
    ro_region.drain()
    for call in (lambda: ro_region.write(0, b"x"), lambda: ro_region.flush(0, 1),
                 lambda: ro_region.persist(0, 1), lambda: ro_region.deep_flush(0, 1),
                 lambda: ro_region.memcpy_persist(0, b"x"),
                 lambda: ro_region.memset_persist(0, 1, 1)):
        with pytest.raises(ReadOnlyError, match="read-only"):
            call()
    assert ro_region.read(0, 4) == bytes(4)


def test_read_only_buffer_needs_writable_false():
    with pytest.raises(InvalidArgumentError, match="read-only"):
        BufferRegion(bytes(16))
