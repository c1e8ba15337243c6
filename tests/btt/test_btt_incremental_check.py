"""Btt.check(since=baseline, changed=ranges): the incremental check the crash suite uses finds
exactly what the full check finds, on every crash image and on damaged images."""

import contextlib
import struct
import subprocess
import sys
import textwrap

import pytest

from pmemkit import crash
from pmemkit.btt import Btt, crashsuite as cs
from pmemkit.btt import layout
from pmemkit.btt.device import BttWarning
from pmemkit.errors import InvalidArgumentError
from pmemkit.region import BufferRegion

from test_btt_crashsuite import _MapFirstBtt

CFG = cs.SuiteConfig(writes=3, engine="random:150")


def _open(image):
    return Btt.open(BufferRegion(image, writable=False), readonly=True, close_region=True)


def _baseline(initial):
    with _open(initial) as dev:
        return dev.baseline()


def _agreement(workload, device_class=Btt, cfg=CFG):
    """Explore ``workload``; at every image compare the full and the incremental check (and
    the full check of a writable copy, what the suite did before). Returns the number of
    images the checks found inconsistent."""
    initial, nlba, nlane, _ = cs._initial_image("btt", cfg)
    base = _baseline(initial)
    assert base is not None
    ops = cs.build_ops(workload, cfg, nlba, nlane)
    bad = []

    def check(image, point):
        with _open(image) as dev:
            full = dev.check()
            quick = dev.check(since=base, changed=point.changed_ranges)
        assert quick == full, point.describe()
        with Btt.open(bytearray(image)) as copy:
            assert bool(copy.check()) == bool(full), point.describe()
        bad.append(bool(full))

    report = crash.explore(cs._workload_fn("btt", ops, cfg.lbasize, device_class), check,
                           initial=initial, model=cfg.model, engine=cfg.engine, seed=cfg.seed)
    assert report.ok, report
    assert report.states_checked > 50
    return sum(bad)


@pytest.mark.parametrize("workload", cs.WORKLOADS)
def test_incremental_and_full_check_agree_on_every_crash_image(workload):
    assert _agreement(workload) == 0


def test_they_agree_on_the_images_of_a_broken_protocol_too():
    """_MapFirstBtt publishes map entries before their flog commit: images with a block
    referenced twice, which both checks must report, word for word."""
    assert _agreement("random", _MapFirstBtt) > 0


def _damaged(initial, how):
    """``(image, changed ranges)``: ``initial`` with one kind of damage."""
    img = bytearray(initial)
    with Btt.open(bytearray(initial)) as dev:
        a = dev.arenas[0]
        mapoff, flogoff, nlba, nblocks = a.mapoff, a.flogoff, a.nlba, a.internal_nlba
        entry2 = a.map_mv[2]
    flog0 = flogoff + layout.flog_entry_offset(0, a.slots[0])
    if how == "map-duplicate":        # lba 3 points at lba 2's block
        off, data = mapoff + 12, struct.pack("<I", entry2)
    elif how == "map-past-end":
        off, data = mapoff + 4 * (nlba - 1), struct.pack("<I", layout.MAP_NORMAL | nblocks + 5)
    elif how == "flog-free-in-use":   # lane 0's free block is lba 2's block
        old = entry2 & layout.MAP_LBA_MASK
        off, data = flog0 + 4, struct.pack("<I", old | layout.MAP_NORMAL)
    elif how == "flog-free-past-end":
        off, data = flog0 + 4, struct.pack("<I", nblocks + 1)
    elif how == "flog-bad-seq":
        off, data = flog0 + 12, struct.pack("<I", 7)
    elif how == "backup-info":
        off, data = a.infooff + 100, b"\xff" * 8
    elif how == "primary-info":
        off, data = a.start + 100, b"\xff" * 8
    elif how == "map-zero-flag":      # harmless: the entry keeps its block
        off, data = mapoff + 8, struct.pack("<I", (entry2 & layout.MAP_LBA_MASK)
                                            | layout.MAP_ZERO)
    else:
        raise AssertionError(how)
    img[off:off + len(data)] = data
    return bytes(img), ((off, off + len(data)),)


DAMAGE = ["map-duplicate", "map-past-end", "flog-free-in-use", "flog-free-past-end",
          "flog-bad-seq", "backup-info", "primary-info", "map-zero-flag"]


@pytest.mark.parametrize("how", DAMAGE)
def test_incremental_check_catches_what_the_full_check_catches(how):
    initial, *_ = cs._initial_image("btt", CFG)
    base = _baseline(initial)
    image, changed = _damaged(initial, how)
    warned = pytest.warns(BttWarning) if how.endswith("-info") else contextlib.nullcontext()
    with warned, _open(image) as dev:
        full = dev.check()
        assert dev.check(since=base, changed=changed) == full
    assert bool(full) == (how != "map-zero-flag"), full
    # ...and the map damage is only seen through the changed ranges it is in
    if how.startswith("map-") and how != "map-zero-flag":
        with _open(image) as dev:
            assert dev.check(since=base, changed=()) == []


def test_a_baseline_of_another_geometry_means_the_full_check():
    small = cs.SuiteConfig(size=64 * 1024)
    other = _baseline(cs._initial_image("btt", cs.SuiteConfig(size=128 * 1024))[0])
    image, changed = _damaged(cs._initial_image("btt", small)[0], "map-duplicate")
    with _open(image) as dev:
        full = dev.check()
        assert full and dev.check(since=other, changed=()) == full


def test_baseline_of_an_inconsistent_btt_is_none_and_arguments_go_together():
    initial, *_ = cs._initial_image("btt", CFG)
    image, _ = _damaged(initial, "map-duplicate")
    with _open(image) as dev:
        assert dev.baseline() is None
        with pytest.raises(InvalidArgumentError, match="both"):
            dev.check(since=_baseline(initial))
        with pytest.raises(InvalidArgumentError, match="both"):
            dev.check(changed=())
        base = _baseline(initial)
        for bad in ([1, 2], [(1,)], [(5, 2)], [(-1, 4)], [(0.5, 8)], 7):
            with pytest.raises(InvalidArgumentError, match="byte ranges"):
                dev.check(since=base, changed=bad)
        with pytest.raises(InvalidArgumentError, match="baseline"):
            dev.check(since=("not", "a baseline"), changed=())


def test_suite_rows_are_the_same_with_the_full_check(monkeypatch):
    """The suite's verdicts, counts and examples do not depend on the incremental check."""
    def rows():
        return [cs.run_workload(w, "btt", CFG, device_class=d)
                for w, d in (("random", Btt), ("zero-error", Btt), ("random", _MapFirstBtt))]

    quick = rows()
    monkeypatch.setattr(Btt, "baseline", lambda self: None)
    full = rows()
    assert [vars(r) for r in quick] == [vars(r) for r in full]
    assert quick[2].inconsistent or quick[2].torn_states or quick[2].lost_writes


def test_a_btt_kept_after_the_checker_returns_stays_valid():
    """A checker that keeps its read-only Btt over the crash image past the call: later reads
    return data or raise, never crash the process (run in a subprocess)."""
    code = textwrap.dedent("""
        from pmemkit import crash
        from pmemkit.btt import Btt, crashsuite as cs
        from pmemkit.region import BufferRegion
        from pmemkit.errors import PmemError

        cfg = cs.SuiteConfig(writes=2, engine="random:20")
        initial, nlba, nlane, _ = cs._initial_image("btt", cfg)
        ops = cs.build_ops("random", cfg, nlba, nlane)
        kept = []

        def check(image):
            kept.append((Btt.open(BufferRegion(image, writable=False), readonly=True), image))

        crash.explore(cs._workload_fn("btt", ops, cfg.lbasize, Btt), check, initial=initial)
        n = 0
        for dev, image in kept:
            for lba in range(nlba):
                try:
                    n += len(dev.read(lba))
                except PmemError:
                    pass
            n += len(bytes(image))
        print("ok", n > 0)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok True"
