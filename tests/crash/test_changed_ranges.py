"""CrashPoint.changed_ranges: every crash image equals the initial image outside them."""

import random
import struct

import numpy as np
import pytest

from pmemkit import crash

SIZE = 16384


def _initial():
    return random.Random(5).randbytes(SIZE)


def _workload(pm):
    """Stores of every kind (write, view, memcpy/memset_persist), some never made durable."""
    for i in range(3):
        pm.write(64 * i + 8, struct.pack("<Q", i + 1))
        pm.write(4096 + 200 * i, bytes([i + 7]) * 40)
        pm.flush(64 * i + 8, 8)
        pm.flush(4096 + 200 * i, 40)
        pm.drain()
    pm.array(np.uint64, 4, offset=8192)[:] = [1, 2, 3, 4]
    pm.persist(8192, 32)
    pm.memcpy_persist(12000, b"x" * 300)
    pm.memset_persist(15000, 0x5A, 64)
    pm.write(16000, b"pending, never flushed")
    pm.write(256, struct.pack("<Q", 99))
    pm.flush(256, 8)       # flushed, never fenced


def _checker(initial, seen):
    base = np.frombuffer(initial, dtype=np.uint8)

    def check(image, point):
        ranges = point.changed_ranges
        assert ranges is not None
        outside = np.ones(SIZE, dtype=bool)
        for lo, hi in ranges:
            assert 0 <= lo < hi <= SIZE
            outside[lo:hi] = False
        got = np.frombuffer(image, dtype=np.uint8)
        assert np.array_equal(got[outside], base[outside]), point.describe()
        seen.append(sum(hi - lo for lo, hi in ranges))
    return check


@pytest.mark.parametrize("kwargs", [
    {"model": "x86"}, {"model": "x86-line"}, {"model": "eadr"}, {"engine": "in-order"},
    {"engine": "prefix"}, {"store_points": True}, {"engine": "random:40"},
])
def test_images_equal_the_initial_image_outside_the_changed_ranges(kwargs):
    initial, seen = _initial(), []
    report = crash.explore(_workload, _checker(initial, seen), initial=initial, **kwargs)
    assert report.ok and report.states_checked >= 7, report
    assert seen and max(seen) < SIZE // 2         # the ranges follow the writes


def test_changed_ranges_reach_the_checker_in_workers_too():
    initial, seen = _initial(), []
    report = crash.explore(_workload, _checker(initial, seen), initial=initial, workers=2)
    assert report.ok and report.states_checked > 10, report


def test_without_initial_contents_the_ranges_are_relative_to_zeros():
    seen = []

    def check(image, point):
        outside = bytearray(image)
        for lo, hi in point.changed_ranges:
            outside[lo:hi] = bytes(hi - lo)
        assert not any(outside)
        seen.append(point.changed_ranges)

    assert crash.explore(_workload, check, size=SIZE).ok
    assert seen[0] == ((8, 16), (4096, 4136))     # the first point: its two pending stores
