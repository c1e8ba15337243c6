"""The Btt API: create/open on every target kind, I/O, batched I/O, recovery, errors."""

import struct
import warnings

import numpy as np
import pytest

import pmemkit
from pmemkit.btt import Btt, BttWarning, LINUX_LBASIZES, locate
from pmemkit.btt import layout
from pmemkit.errors import (BttCorruptError, BttIOError, BttReadOnlyError, ClosedMappingError,
                            InvalidArgumentError, OutOfRangeError, PmemError)

SMALL = 1 << 20


def block(lbasize, tag):
    rng = np.random.default_rng(tag)
    return rng.integers(0, 256, lbasize, dtype=np.uint8).tobytes()


def small(buf=None, **kw):
    kw.setdefault("lbasize", 512)
    kw.setdefault("nfree", 8)
    return Btt.create(bytearray(SMALL) if buf is None else buf, **kw)


def test_create_write_read_reopen_bytearray():
    buf = bytearray(SMALL)
    b = Btt.create(buf, lbasize=512, nfree=8)
    assert (b.lbasize, b.nlane) == (512, 8) and b.nlba > 100
    assert b.read(0) == bytes(512)                  # never written reads zeros
    data = {lba: block(512, lba) for lba in (0, 1, 7, b.nlba - 1)}
    for lba, d in data.items():
        b.write(lba, d)
    for lba, d in data.items():
        assert b.read(lba) == d
    assert b.check() == []
    b.close()
    b2 = Btt.open(buf)
    for lba, d in data.items():
        assert b2.read(lba) == d
    assert b2.check() == []


@pytest.mark.parametrize("lbasize", LINUX_LBASIZES)
@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_every_linux_lbasize_and_version(lbasize, version):
    arr = np.zeros(4 << 20, dtype=np.uint8)          # numpy target
    b = Btt.create(arr, lbasize=lbasize, nfree=16, version=version)
    assert b.version == version
    lbas = [0, 3, b.nlba - 1]
    for i, lba in enumerate(lbas):
        b.write(lba, block(lbasize, i))
    b.close()
    b = Btt.open(arr)
    assert b.version == version and b.lbasize == lbasize
    assert [b.read(lba) for lba in lbas] == [block(lbasize, i) for i in range(3)]
    info = layout.Info.unpack(bytes(arr[:4096]))
    assert (info.major, info.minor) == tuple(map(int, version.split(".")))
    assert info.internal_lbasize == layout.internal_lbasize(lbasize, "linux")


def test_offset_and_file_target(tmp_path):
    path = tmp_path / "ns.img"
    b = Btt.create(str(path), lbasize=4096, nfree=256, offset=4096, size=32 << 20)
    assert path.stat().st_size == 4096 + (32 << 20)
    b.write(5, b"a" * 4096)
    b.close()
    assert locate(str(path)) == [4096]
    with pytest.raises(BttCorruptError, match="no BTT found"):
        Btt.open(str(path))                          # offset 0 holds nothing
    b = Btt.open(str(path), offset=4096)
    assert b.read(5) == b"a" * 4096 and b.check() == []
    b.close()


def test_pmemmap_target(tmp_path):
    pm = pmemkit.map_file(str(tmp_path / "f"), 20 << 20, create=True)
    b = Btt.create(pm, lbasize=4096)
    b.write(1, b"q" * 4096)
    b.close()
    assert not pm.closed                             # a caller's mapping stays open
    assert Btt.open(pm).read(1) == b"q" * 4096


def test_several_arenas():
    buf = bytearray(3 * SMALL + 5000)
    b = Btt.create(buf, lbasize=512, nfree=4, arena_size=SMALL)
    assert len(b.arenas) == 3
    assert b.nlba == sum(a.nlba for a in b.arenas)
    edges = [0, b.arenas[1].lba_start - 1, b.arenas[1].lba_start, b.arenas[2].lba_start, b.nlba - 1]
    for lba in edges:
        b.write(lba, block(512, lba))
    got = b.read_many(edges)
    assert all(got[i].tobytes() == block(512, lba) for i, lba in enumerate(edges))
    b.close()
    b = Btt.open(buf)
    assert len(b.arenas) == 3
    assert [b.read(lba) for lba in edges] == [block(512, lba) for lba in edges]
    assert b.check() == []


def test_zero_and_error_blocks():
    b = small()
    b.write(3, block(512, 3))
    b.set_zero(3)
    assert b.read(3) == bytes(512)
    b.set_zero(4)                                    # never written: no-op, still zero
    b.set_error(5)
    with pytest.raises(BttIOError, match="lba 5"):
        b.read(5)
    with pytest.raises(BttIOError):
        b.read_many([1, 5])
    b.write(5, block(512, 5))                        # writing clears the error
    assert b.read(5) == block(512, 5)
    assert b.check() == []
    info = b.info()["arenas"][0]["map"]
    # set_zero of a never-written block stores a ZERO entry, as libpmemblk does
    assert info["zero"] == 2 and info["normal"] == 1


def test_read_many_write_many_match_single_blocks():
    b = small(nfree=8)
    rng = np.random.default_rng(7)
    lbas = rng.integers(0, b.nlba, 100)
    data = rng.integers(0, 256, (100, 512), dtype=np.uint8)
    b.write_many(lbas, data)
    last = {}
    for i, lba in enumerate(lbas.tolist()):
        last[lba] = i                                # later duplicates win
    keys = sorted(last)
    got = b.read_many(keys)
    assert got.shape == (len(keys), 512)
    for j, lba in enumerate(keys):
        assert got[j].tobytes() == data[last[lba]].tobytes() == b.read(lba)
    b.set_zero(keys[0])
    out = np.full((2, 512), 9, dtype=np.uint8)
    assert b.read_many([keys[0], keys[1]], out=out) is out
    assert not out[0].any() and out[1].tobytes() == data[last[keys[1]]].tobytes()
    assert b.check() == []
    b.write_many([], np.zeros((0, 512), np.uint8))  # nothing to do


def test_argument_errors():
    b = small()
    for bad in (-1, b.nlba, 10 ** 12):
        with pytest.raises(OutOfRangeError, match="out of range"):
            b.read(bad)
        with pytest.raises(OutOfRangeError):
            b.write(bad, bytes(512))
        with pytest.raises(OutOfRangeError):
            b.read_many([0, bad])
    with pytest.raises(InvalidArgumentError, match="exactly 512"):
        b.write(0, b"short")
    with pytest.raises(InvalidArgumentError, match="1024"):
        b.write_many([0, 1], bytes(512))
    with pytest.raises(InvalidArgumentError):
        b.read("zero")
    with pytest.raises(InvalidArgumentError, match="Linux"):
        Btt.create(bytearray(SMALL), lbasize=1000)
    with pytest.raises(InvalidArgumentError, match="version"):
        Btt.create(bytearray(SMALL), version="3.0")
    with pytest.raises(InvalidArgumentError, match="nfree"):
        Btt.create(bytearray(SMALL), lbasize=512, nfree=0)
    with pytest.raises(OutOfRangeError):
        Btt.create(bytearray(SMALL), lbasize=512, size=2 * SMALL)
    with pytest.raises(InvalidArgumentError):
        Btt.create(bytes(SMALL))                     # read-only buffer
    b.close()
    b.close()                                        # idempotent
    with pytest.raises(ClosedMappingError):
        b.read(0)
    with pytest.raises(ClosedMappingError):
        b.write(0, bytes(512))


def corrupt(buf, off, n=8):
    for i in range(n):
        buf[off + i] ^= 0x5A


def test_backup_info_block_fallback_says_so_and_restores():
    buf = bytearray(SMALL)
    b = small(buf)
    b.write(2, block(512, 2))
    infooff = b.arenas[0].infooff
    b.close()
    corrupt(buf, 200)
    with pytest.warns(BttWarning, match="backup"):
        b = Btt.open(buf)
    assert b.read(2) == block(512, 2)
    assert any("backup" in m for m in b.messages)
    b.close()
    assert buf[:4096] == buf[infooff:infooff + 4096]  # primary restored
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Btt.open(buf).close()                        # clean now
    corrupt(buf, 0)
    corrupt(buf, infooff)
    with pytest.raises(BttCorruptError, match="backup"):
        Btt.open(buf)


def test_readonly_open_changes_nothing():
    buf = bytearray(SMALL)
    small(buf).close()
    corrupt(buf, 300)
    before = bytes(buf)
    with pytest.warns(BttWarning):
        b = Btt.open(buf, readonly=True)
    with pytest.raises(BttReadOnlyError, match="read-only"):
        b.write(0, bytes(512))
    b.close()
    assert bytes(buf) == before


def test_corrupt_flog_opens_the_arena_read_only_with_the_reason():
    buf = bytearray(SMALL)
    b = small(buf)
    b.write(1, block(512, 1))
    a = b.arenas[0]
    flogoff = a.flogoff
    b.close()
    struct.pack_into("<I", buf, flogoff + 3 * 64 + 12, 2)       # lane 3: seq 2 in slot 0 ...
    struct.pack_into("<I", buf, flogoff + 3 * 64 + 16 + 12, 2)  # ... and 2 in slot 1
    b = Btt.open(buf)
    assert b.read(1) == block(512, 1)                # reads still work
    with pytest.raises(BttReadOnlyError, match="flog pair 3"):
        b.write(1, bytes(512))
    assert any("flog pair 3" in p for p in b.check())


def test_error_flag_in_info_block_makes_arena_read_only():
    buf = bytearray(SMALL)
    b = small(buf)
    start = b.arenas[0].start
    info = b.arenas[0].info.copy(flags=layout.FLAG_ERROR)
    b.close()
    raw = info.pack()
    buf[start:start + 4096] = raw
    b = Btt.open(buf)
    with pytest.raises(BttReadOnlyError, match="error flag"):
        b.set_zero(0)


def _half_written(buf, lba, data, steps):
    """Run the first ``steps`` of the four write steps by hand (a crash after them)."""
    b = Btt.open(buf)
    a = b.arenas[0]
    lane = 0
    free = a.free[lane] & layout.MAP_LBA_MASK
    old = a.map_mv[lba] or (lba | layout.MAP_NORMAL)
    seq = layout.NSEQ[a.seq[lane]]
    foff = a.flogoff + layout.flog_entry_offset(lane, a.slots[a.next[lane]])
    b.close()
    doff = a.dataoff + free * a.internal_lbasize
    buf[doff:doff + len(data)] = data
    if steps >= 2:
        buf[foff:foff + 8] = struct.pack("<II", lba, old)
    if steps >= 3:
        buf[foff + 8:foff + 16] = struct.pack("<II", free | layout.MAP_NORMAL, seq)


def test_recovery_rolls_a_committed_write_forward():
    buf = bytearray(SMALL)
    b = small(buf)
    b.write(4, block(512, 40))
    b.close()
    _half_written(buf, 4, block(512, 41), steps=3)   # flog committed, map not updated
    b = Btt.open(buf)
    assert b.read(4) == block(512, 41)
    assert b.check() == []
    b.write(4, block(512, 42))                       # and the lanes keep working
    b.write_many([4, 5], np.frombuffer(block(512, 43) + block(512, 44), np.uint8))
    assert b.read(4) == block(512, 43) and b.check() == []


def test_recovery_keeps_the_old_data_before_the_commit_point():
    buf = bytearray(SMALL)
    b = small(buf)
    b.write(4, block(512, 40))
    b.close()
    _half_written(buf, 4, block(512, 41), steps=2)   # first flog half only
    b = Btt.open(buf)
    assert b.read(4) == block(512, 40)
    assert b.check() == []


def test_readonly_recovery_reads_the_rolled_forward_block_without_writing():
    buf = bytearray(SMALL)
    b = small(buf)
    b.write(4, block(512, 40))
    b.close()
    _half_written(buf, 4, block(512, 41), steps=3)
    before = bytes(buf)
    b = Btt.open(buf, readonly=True)
    assert b.read(4) == block(512, 41)
    assert b.read_many([4])[0].tobytes() == block(512, 41)
    assert b.check() == []
    b.close()
    assert bytes(buf) == before


def test_check_finds_a_doubly_referenced_block():
    buf = bytearray(SMALL)
    b = small(buf)
    b.write(1, block(512, 1))
    b.write(2, block(512, 2))
    a = b.arenas[0]
    mapoff = a.mapoff
    b.close()
    buf[mapoff + 8:mapoff + 12] = buf[mapoff + 4:mapoff + 8]   # map[2] = map[1]
    problems = Btt.open(buf).check()
    assert any("more than once" in p for p in problems)
    assert any("unreferenced" in p for p in problems)


def test_map_entry_past_the_arena_is_an_error_not_a_crash():
    buf = bytearray(SMALL)
    b = small(buf)
    mapoff = b.arenas[0].mapoff
    b.close()
    buf[mapoff:mapoff + 4] = struct.pack("<I", layout.MAP_NORMAL | 0x3FFFFFF0)
    b = Btt.open(buf)
    with pytest.raises(BttCorruptError, match="past"):
        b.read(0)
    with pytest.raises(BttCorruptError):
        b.read_many([0])
    assert any("past" in p for p in b.check())
    assert isinstance(BttCorruptError("x"), PmemError)


def test_cpu_flush_path(tmp_path, monkeypatch):
    """The same BTT code on a mapping that flushes with CLWB/CLFLUSHOPT and fences."""
    monkeypatch.setenv("PMEMKIT_FORCE_PMEM", "1")
    pm = pmemkit.map_file(str(tmp_path / "f"), 20 << 20, create=True)
    assert pm.is_pmem and pm.flush_method not in ("msync",) and pm.nt_copies
    b = Btt.create(pm, lbasize=4096, nfree=32)
    b.write(3, block(4096, 3))
    rng = np.random.default_rng(3)
    lbas = rng.choice(b.nlba, 100, replace=False)
    data = rng.integers(0, 256, (100, 4096), dtype=np.uint8)
    b.write_many(lbas, data)
    assert (b.read_many(lbas) == data).all()
    b.close()
    b = Btt.open(pm)
    assert b.read(3) == block(4096, 3) and b.check() == []
    b.close()
    pm.close()


def test_write_many_copies_block_by_block_where_the_region_has_non_temporal_copies():
    """The BTT asks the Region contract (``nt_copies``), not a concrete mapping class."""
    from pmemkit.region import BufferRegion

    class NtRegion(BufferRegion):
        nt_copies = True
        copies = 0

        def memcpy_persist(self, offset, data):
            NtRegion.copies += 1
            super().memcpy_persist(offset, data)

    for nt in (False, True):
        NtRegion.nt_copies, NtRegion.copies = nt, 0
        b = Btt.create(NtRegion(bytearray(1 << 20)), lbasize=512, nfree=8)
        created = NtRegion.copies
        b.write_many([1, 2, 3], bytes(range(256)) * 6)
        assert NtRegion.copies - created == (3 if nt else 0)
        assert b.read(2) == bytes(range(256)) * 2
        b.close()


def test_methods_taken_before_close_fail_cleanly():
    b = small()
    read, write, read_many = b.read, b.write, b.read_many
    b.close()
    with pytest.raises(ClosedMappingError):
        read(0)
    with pytest.raises(ClosedMappingError):
        write(0, bytes(512))
    with pytest.raises(ClosedMappingError):
        read_many(np.arange(3))


@pytest.mark.parametrize("target", ["bytearray", "file"])
def test_fast_paths_keep_every_error_and_state(target, tmp_path):
    """read/read_many take fast paths for int / int64-array LBAs: they agree with the checked
    ones."""
    if target == "file":
        pm = pmemkit.map_file(str(tmp_path / "f"), SMALL, create=True)
        b = Btt.create(pm, lbasize=512, nfree=8)
    else:
        b = small()
    b.write_many(np.arange(4), np.stack([np.frombuffer(block(512, i), np.uint8) for i in range(4)]))
    b.set_zero(1)
    b.set_error(2)
    never = b.nlba - 1
    assert b.read(0) == block(512, 0) and b.read(np.int64(3)) == block(512, 3)
    assert b.read(1) == bytes(512) and b.read(never) == bytes(512)
    got = b.read_many(np.array([0, 1, 3, never], dtype=np.int64))
    assert got[0].tobytes() == block(512, 0) and not got[1].any()
    assert got[2].tobytes() == block(512, 3) and not got[3].any()
    with pytest.raises(BttIOError):
        b.read(2)
    with pytest.raises(BttIOError):
        b.read_many(np.array([0, 2], dtype=np.int64))
    for bad in (-1, b.nlba):
        with pytest.raises(OutOfRangeError):
            b.read(bad)
        with pytest.raises(OutOfRangeError):
            b.read_many(np.array([0, bad], dtype=np.int64))
    for bad in (1.0, "1", None):
        with pytest.raises(InvalidArgumentError):
            b.read(bad)
    with pytest.raises(InvalidArgumentError):
        b.read_many(np.array([0, 3], dtype=np.int64), out=np.zeros((3, 512), np.uint8))
    b.close()
    with pytest.raises(ClosedMappingError):
        b.read_many(np.array([0], dtype=np.int64))
    if target == "file":
        pm.close()
