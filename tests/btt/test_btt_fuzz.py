"""Corrupt images never crash or hang the reader: only pmemkit errors come out."""

import struct
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmemkit.btt import Btt
from pmemkit.btt import layout
from pmemkit.errors import BttCorruptError, BttError, BttIOError, BttReadOnlyError, PmemError

SIZE = 512 << 10
FIELDS = ("flags", "major", "external_lbasize", "external_nlba", "internal_lbasize",
          "internal_nlba", "nfree", "nextoff", "dataoff", "mapoff", "flogoff", "infooff")


def _base(arena_size=None):
    buf = bytearray(SIZE)
    kw = {"arena_size": arena_size} if arena_size else {}
    b = Btt.create(buf, lbasize=512, nfree=4, **kw)
    rng = np.random.default_rng(0)
    for lba in range(0, min(b.nlba, 40), 3):
        b.write(lba, rng.integers(0, 256, 512, dtype=np.uint8).tobytes())
    b.set_zero(3)
    b.set_error(6)
    meta = [(a.start, 4096), (a.mapoff, 4 * a.nlba), (a.flogoff, 64 * a.nfree),
            (a.infooff, 4096)] if (a := b.arenas[0]) else []
    for a in b.arenas[1:]:
        meta += [(a.start, 4096), (a.mapoff, 4 * a.nlba), (a.flogoff, 64 * a.nfree)]
    b.close()
    return bytes(buf), meta


IMAGES = [_base(), _base(arena_size=256 << 10)]       # one arena / two arenas


def exercise(buf):
    """Open, check, read and write a possibly corrupt image; return what happened."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            b = Btt.open(buf)
        except PmemError as exc:
            assert isinstance(exc, (BttError, PmemError))
            return "refused"
    try:
        assert isinstance(b.check(), list)
        n = min(b.nlba, 64)
        for lba in range(n):
            try:
                assert len(b.read(lba)) == b.lbasize
            except (BttIOError, BttCorruptError):
                pass
        try:
            b.read_many(np.arange(n))
        except (BttIOError, BttCorruptError):
            pass
        try:
            b.write(n // 2, bytes(b.lbasize))
            b.write_many(np.arange(min(n, 6)), np.zeros((min(n, 6), b.lbasize), np.uint8))
            b.set_error(0)
            b.set_zero(1)
        except (BttReadOnlyError, BttCorruptError):
            pass
        b.check()
    finally:
        b.close()
    return "opened"


settings_ = settings(max_examples=150, deadline=2000,
                     suppress_health_check=[HealthCheck.too_slow])


@settings_
@given(st.data())
def test_random_byte_damage_in_metadata(data):
    base, meta = IMAGES[data.draw(st.integers(0, 1), label="image")]
    buf = bytearray(base)
    for _ in range(data.draw(st.integers(1, 12))):
        start, length = data.draw(st.sampled_from(meta))
        off = start + data.draw(st.integers(0, length - 1))
        buf[off] = data.draw(st.integers(0, 255))
    exercise(buf)


@settings_
@given(st.data())
def test_info_fields_with_valid_checksums(data):
    """Checksummed nonsense: every geometry field set to hostile values."""
    base, meta = IMAGES[data.draw(st.integers(0, 1), label="image")]
    buf = bytearray(base)
    start = data.draw(st.sampled_from([m[0] for m in meta if m[1] == 4096]))
    info = layout.Info.unpack(buf[start:start + 4096])
    for _ in range(data.draw(st.integers(1, 4))):
        name = data.draw(st.sampled_from(FIELDS))
        bits = 16 if name == "major" else 64 if name.endswith("off") else 32
        value = data.draw(st.one_of(st.integers(0, 2 ** bits - 1),
                                    st.sampled_from([0, 1, 4096, 2 ** bits - 1, SIZE,
                                                     SIZE - 4096])))
        setattr(info, name, value & (2 ** bits - 1))
    raw = info.pack()
    buf[start:start + 4096] = raw
    exercise(buf)


@settings(max_examples=60, deadline=2000)
@given(st.binary(min_size=16, max_size=64), st.integers(0, SIZE - 8192))
def test_garbage_images(junk, where):
    buf = bytearray(SIZE)
    buf[:16] = layout.SIGNATURE
    buf[where:where + len(junk)] = junk
    assert exercise(buf) == "refused"


def test_flog_damage_is_reported_not_fatal():
    base, meta = IMAGES[0]
    buf = bytearray(base)
    a_flog = meta[2][0]
    struct.pack_into("<I", buf, a_flog + 12, 7)       # seq 7 is no sequence number
    assert exercise(buf) == "opened"
    b = Btt.open(buf)
    assert any("flog" in p for p in b.check())
    with pytest.raises(BttReadOnlyError):
        b.write(0, bytes(512))
