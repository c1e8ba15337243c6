"""Flush paths: CPU feature detection, the msync range bookkeeping, and a model check."""

from __future__ import annotations

import mmap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mapping_helpers import CPU_METHODS, disable_native, file_bytes

from pmemkit import cpu, mapping
from pmemkit._linux import cpuinfo

PAGE = mmap.PAGESIZE


# --- CPU features ------------------------------------------------------------------------

def test_features_shape():
    feats = cpu.features()
    for name in ("clflush", "clflushopt", "clwb", "sse2", "avx", "avx2", "avx512f"):
        assert isinstance(feats[name], bool)


def test_cpuid_agrees_with_proc_cpuinfo():
    """The C extension's cpuid and the kernel's flags line tell the same story."""
    flags = cpuinfo.cpu_flags()
    if not flags:
        pytest.skip("/proc/cpuinfo has no flags line on this architecture")
    feats = cpu.features()
    for name in ("clflush", "clflushopt", "clwb", "sse2", "avx", "avx2", "avx512f"):
        assert feats[name] == (name in flags), name


def test_cpuinfo_fallback(monkeypatch):
    monkeypatch.setattr(cpu, "native", lambda: None)
    cpu.features.cache_clear()
    try:
        feats = cpu.features()
        assert cpu.feature_source() == "/proc/cpuinfo"
        assert feats["clflush"] == ("clflush" in cpuinfo.cpu_flags())
        assert cpu.best_flush_method() == "msync"  # nothing can be issued from Python
        assert cpu.available_methods() == ["msync"]
    finally:
        cpu.features.cache_clear()


def test_best_flush_method_prefers_clwb():
    have = cpu.flush_instructions()
    best = cpu.best_flush_method()
    if have:
        assert best == have[0]
        order = ["clwb", "clflushopt", "clflush"]
        assert have == [m for m in order if m in have]
    else:
        assert best == "msync"


def test_available_methods_match_features():
    methods = cpu.available_methods()
    assert "msync" in methods and "none" in methods
    for name in ("clwb", "clflushopt", "clflush"):
        assert (name in methods) == cpu.features()[name]


def test_the_cpu_path_is_exercised_here():
    """On x86-64 with the extension built, at least CLFLUSH is always available."""
    assert "clflush" in CPU_METHODS


# --- the msync path: exactly the asked ranges -------------------------------------------

@pytest.fixture(params=["native", "python"])
def ms(request, monkeypatch, tmp_path):
    monkeypatch.setenv("PMEMKIT_FORCE_PMEM", "0")
    if request.param == "python":
        disable_native(monkeypatch)
    m = mapping.map_file(tmp_path / "ms", 64 * PAGE + 100, create=True)
    yield m
    m.close()


def test_flush_records_page_aligned_ranges(ms):
    ms.flush(10, 1)
    assert ms.pending_msync() == [(0, PAGE)]
    ms.flush(3 * PAGE + 5, PAGE)  # spans two pages
    assert ms.pending_msync() == [(0, PAGE), (3 * PAGE, 2 * PAGE)]
    ms.flush(PAGE - 1, 2)  # touches pages 0 and 1: joins the first range
    assert ms.pending_msync() == [(0, 2 * PAGE), (3 * PAGE, 2 * PAGE)]
    ms.flush(2 * PAGE, 1)  # fills the gap: one range
    assert ms.pending_msync() == [(0, 5 * PAGE)]
    ms.flush(0, 0)  # empty: nothing
    assert ms.pending_msync() == [(0, 5 * PAGE)]
    calls, nbytes = ms.msync_stats
    ms.drain()
    assert ms.pending_msync() == []
    assert ms.msync_stats == (calls + 1, nbytes + 5 * PAGE)


def test_persist_syncs_only_the_asked_range(ms):
    calls, nbytes = ms.msync_stats
    ms.write(7 * PAGE + 100, b"x")
    ms.persist(7 * PAGE + 100, 1)
    assert ms.msync_stats == (calls + 1, nbytes + PAGE)
    ms.memcpy_persist(20 * PAGE - 2, b"abcd")  # straddles a page boundary: two pages
    assert ms.msync_stats == (calls + 2, nbytes + 3 * PAGE)


def test_disjoint_ranges_are_synced_separately(ms):
    calls, nbytes = ms.msync_stats
    ms.flush(0, 1)
    ms.flush(10 * PAGE, 1)
    ms.flush(30 * PAGE, 1)
    ms.drain()
    assert ms.msync_stats == (calls + 3, nbytes + 3 * PAGE)


def test_many_ranges_stay_bounded(ms):
    for i in range(0, 64, 2):  # 32 disjoint pages
        ms.write(i * PAGE, b"p")
        ms.flush(i * PAGE, 1)
    assert len(ms.pending_msync()) <= 32
    ms.drain()
    for i in range(0, 64, 2):
        assert file_bytes(ms.path, i * PAGE, 1) == b"p"
    calls, nbytes = ms.msync_stats
    assert nbytes == 32 * PAGE  # never more than was asked for


def test_last_partial_page(ms):
    ms.write(ms.size - 1, b"z")
    ms.persist(ms.size - 1, 1)
    assert file_bytes(ms.path, ms.size - 1, 1) == b"z"


def test_cpu_path_never_calls_msync(monkeypatch, tmp_path):
    monkeypatch.setenv("PMEMKIT_FORCE_PMEM", "1")
    with mapping.map_file(tmp_path / "c", 8 * PAGE, create=True) as m:
        assert m.flush_method in CPU_METHODS
        m.persist(0, 8 * PAGE)
        m.memcpy_persist(0, b"x" * 5000)
        assert m.msync_stats == (0, 0)
        assert m.pending_msync() == []


# --- a model check: any sequence of stores and persists on any path ----------------------

ops = st.lists(
    st.tuples(st.sampled_from(["write", "memcpy", "memset", "flush", "drain", "persist"]),
              st.integers(0, 8 * PAGE), st.integers(0, 3 * PAGE), st.integers(0, 255)),
    max_size=25)


@pytest.mark.parametrize("method", ["msync", "msync-python"] + CPU_METHODS)
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=ops)
def test_matches_a_bytearray_model(method, seq, tmp_path_factory, monkeypatch):
    with monkeypatch.context() as mp:
        if method == "msync-python":
            disable_native(mp)
            mp.setenv("PMEMKIT_FORCE_PMEM", "0")
        elif method == "msync":
            mp.setenv("PMEMKIT_FORCE_PMEM", "0")
        else:
            mp.setenv("PMEMKIT_FORCE_PMEM", "1")
            mp.setenv("PMEMKIT_FLUSH", method)
        size = 8 * PAGE + 33
        path = tmp_path_factory.mktemp("model") / "f"
        model = bytearray(size)
        with mapping.map_file(path, size, create=True) as m:
            for op, off, length, value in seq:
                off = min(off, size)
                length = min(length, size - off)
                data = bytes((value + i) % 256 for i in range(length))
                if op == "write":
                    m.write(off, data)
                    model[off:off + length] = data
                elif op == "memcpy":
                    m.memcpy_persist(off, data)
                    model[off:off + length] = data
                    assert file_bytes(path, off, length) == data
                elif op == "memset":
                    m.memset_persist(off, value, length)
                    model[off:off + length] = bytes([value]) * length
                    assert file_bytes(path, off, length) == bytes([value]) * length
                elif op == "flush":
                    m.flush(off, length)
                elif op == "drain":
                    m.drain()
                else:
                    m.persist(off, length)
                    assert file_bytes(path, off, length) == model[off:off + length]
                if m.flush_method == "msync":
                    for start, n in m.pending_msync():
                        assert start % PAGE == 0 and n % PAGE == 0
            m.persist(0, size)
            assert m.read(0, size) == model
        assert file_bytes(path, 0, size) == model
