"""On-media structures: checksum, geometry, info block encoding - against real libpmemblk images."""

import struct

import numpy as np
import pytest

from pmemkit.btt import layout
from pmemkit.errors import InvalidArgumentError

from blkhelper import run_pmempool


def reference_fletcher64(data):
    lo = hi = 0
    for (w,) in struct.iter_unpack("<I", data):
        lo = (lo + w) & 0xFFFFFFFF
        hi = (hi + lo) & 0xFFFFFFFF
    return hi << 32 | lo


def test_fletcher64_matches_the_scalar_definition():
    rng = np.random.default_rng(0)
    for n in (4, 64, 4096):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert layout.fletcher64(data) == reference_fletcher64(data)
    data = b"\xff" * 4096
    assert layout.fletcher64(data) == reference_fletcher64(data)


def test_info_block_written_by_libpmemblk_validates(tmp_path, blkpool):
    path = tmp_path / "p.blk"
    assert run_pmempool("create", "blk", 4096, path).returncode == 0
    blkpool(path, 4096).write(0, b"x" * 4096)    # lays the BTT out
    raw = path.read_bytes()[0x2000:0x3000]
    assert layout.info_problem(raw) is None
    info = layout.Info.unpack(raw)
    assert info.pack() == raw                  # byte-identical re-encoding, checksum included
    corrupted = bytearray(raw)
    corrupted[100] ^= 1
    assert "checksum" in layout.info_problem(corrupted)
    assert "signature" in layout.info_problem(b"\0" * 4096)


def test_geometry_reproduces_libpmemblk(tmp_path, blkpool):
    # measured: pmempool create blk 4096 -> 16 MiB BTT, 3829 external / 4085 internal blocks
    for bsize in (512, 520, 4096):
        path = tmp_path / f"p{bsize}.blk"
        assert run_pmempool("create", "blk", bsize, path).returncode == 0
        blkpool(path, bsize).write(1, b"y" * bsize)
        data = path.read_bytes()
        real = layout.Info.unpack(data[0x2000:0x3000])
        ((off, planned),) = layout.plan_arenas(len(data) - 0x2000, bsize, style="pmemblk")
        for f in ("external_nlba", "internal_nlba", "internal_lbasize", "nfree", "dataoff",
                  "mapoff", "flogoff", "infooff", "nextoff"):
            assert getattr(planned, f) == getattr(real, f), (bsize, f)
    assert layout.plan_arenas(16 << 20, 4096)[0][1].external_nlba == 3829


def test_internal_lbasize_styles():
    linux = [layout.internal_lbasize(s, "linux") for s in layout.LINUX_LBASIZES]
    assert linux == [512, 576, 576, 4096, 4160, 4160, 4224]
    pmemblk = [layout.internal_lbasize(s, "pmemblk") for s in (1, 512, 520, 4096, 4104)]
    assert pmemblk == [512, 512, 768, 4096, 4352]


def test_several_arenas_and_limits():
    arenas = layout.plan_arenas(40 << 20, 512, max_arena=16 << 20)
    assert [off for off, _ in arenas] == [0, 16 << 20]      # the 8 MiB tail is too small
    assert arenas[0][1].nextoff == 16 << 20 and arenas[1][1].nextoff == 0
    with pytest.raises(InvalidArgumentError, match="too small"):
        layout.plan_arenas(1000, 512, min_arena=1 << 24)
    with pytest.raises(InvalidArgumentError, match="2\\*nfree"):
        layout.plan_arenas(64 << 10, 4096, nfree=256, min_arena=64 << 10)


def test_current_flog_picks_the_newer_sequence_number():
    pairs = np.zeros((5, 16), dtype=np.uint32)
    pairs[0, 3] = 1                           # only slot 0 used
    pairs[1, 3], pairs[1, 7] = 1, 2           # 2 follows 1: slot 1 current
    pairs[2, 3], pairs[2, 7] = 1, 3           # 1 follows 3: slot 0 current
    pairs[3, 3], pairs[3, 7] = 2, 2           # equal: corrupt
    pairs[4, 7] = 3                           # only slot 1 used
    entries, nxt, bad = layout.current_flog(pairs)
    assert list(bad) == [False, False, False, True, False]
    assert list(nxt[[0, 1, 2, 4]]) == [1, 0, 1, 0]
    assert list(entries[[0, 1, 2, 4], 3]) == [1, 2, 1, 3]
