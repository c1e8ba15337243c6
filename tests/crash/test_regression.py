"""The classic persistent-memory bugs: every buggy variant is caught, every fix is clean."""

import struct

import numpy as np
import pytest

from pmemkit import crash

DATA, FLAG = 0, 256          # different cache lines
PAYLOAD = bytes(range(1, 49))
MODELS = ("x86", "x86-line", "eadr")


def u64(img, off):
    return struct.unpack_from("<Q", img, off)[0]


# 1. data not flushed before its commit flag ------------------------------------------

def unflushed_data_buggy(pm):
    pm.write(DATA, PAYLOAD)
    pm.write(FLAG, struct.pack("<Q", 1))
    pm.persist(FLAG, 8)
    pm.record("committed")


def unflushed_data_fixed(pm):
    pm.write(DATA, PAYLOAD)
    pm.persist(DATA, len(PAYLOAD))
    pm.write(FLAG, struct.pack("<Q", 1))
    pm.persist(FLAG, 8)
    pm.record("committed")


def check_flag_implies_data(img, point):
    if u64(img, FLAG) == 1:
        assert bytes(img[DATA:DATA + len(PAYLOAD)]) == PAYLOAD, (
            "commit flag set but the data is not there")
    if "committed" in point.state:
        assert u64(img, FLAG) == 1, "commit returned but the flag is not durable"


# 2. flush without a fence between data and flag --------------------------------------

def no_fence_buggy(pm):
    pm.write(DATA, PAYLOAD)
    pm.flush(DATA, len(PAYLOAD))
    pm.write(FLAG, struct.pack("<Q", 1))
    pm.flush(FLAG, 8)
    pm.drain()
    pm.record("committed")


def no_fence_fixed(pm):
    pm.write(DATA, PAYLOAD)
    pm.flush(DATA, len(PAYLOAD))
    pm.drain()
    pm.write(FLAG, struct.pack("<Q", 1))
    pm.flush(FLAG, 8)
    pm.drain()
    pm.record("committed")


# 3. a commit record wider than 8 bytes --------------------------------------------------
# record: (sequence, ~sequence); a torn record has halves that disagree.

def wide_record_buggy(pm):
    for seq in (1, 2, 3):
        pm.memcpy_persist(128, struct.pack("<QQ", seq, seq ^ 0xFFFFFFFFFFFFFFFF))


def check_wide(img):
    a, b = struct.unpack_from("<QQ", img, 128)
    assert (a, b) == (0, 0) or b == a ^ 0xFFFFFFFFFFFFFFFF, f"torn commit record {a:#x}/{b:#x}"


def wide_record_fixed(pm):  # the same information in one aligned 8-byte unit
    for seq in (1, 2, 3):
        pm.memcpy_persist(128, struct.pack("<II", seq, seq ^ 0xFFFFFFFF))


def check_narrow(img):
    a, b = struct.unpack_from("<II", img, 128)
    assert (a, b) == (0, 0) or b == a ^ 0xFFFFFFFF, f"torn commit record {a:#x}/{b:#x}"


# 4. a misaligned 8-byte commit ------------------------------------------------------------

VALUES = (0x1111111111111111, 0x2222222222222222)


def misaligned_buggy(pm):
    for v in VALUES:
        pm.memcpy_persist(60, struct.pack("<Q", v))   # crosses an 8-byte unit (and a cache line)


def misaligned_fixed(pm):
    for v in VALUES:
        pm.memcpy_persist(56, struct.pack("<Q", v))


def check_whole(offset):
    def check(img):
        v = u64(img, offset)
        assert v in (0,) + VALUES, f"torn 8-byte commit: {v:#018x}"
    return check


# 5. an undo log whose valid bit is persisted before the log -------------------------------

REC, LOG, VALID = 0, 512, 1024
OLD, NEW = b"o" * 64, b"N" * 64


def undo_setup():
    img = bytearray(2048)
    img[REC:REC + 64] = OLD
    return bytes(img)


def undo_buggy(pm):
    pm.write(VALID, struct.pack("<Q", 1))
    pm.persist(VALID, 8)                     # valid before the log is durable
    pm.memcpy_persist(LOG, pm.read(REC, 64))
    pm.memcpy_persist(REC, NEW)
    pm.write(VALID, struct.pack("<Q", 0))
    pm.persist(VALID, 8)


def undo_fixed(pm):
    pm.memcpy_persist(LOG, pm.read(REC, 64))
    pm.write(VALID, struct.pack("<Q", 1))
    pm.persist(VALID, 8)
    pm.memcpy_persist(REC, NEW)
    pm.write(VALID, struct.pack("<Q", 0))
    pm.persist(VALID, 8)


def check_undo(img):
    rec = bytearray(img[REC:REC + 64])
    if u64(img, VALID) == 1:             # recovery: roll back from the log
        rec[:] = img[LOG:LOG + 64]
    assert bytes(rec) in (OLD, NEW), f"record is neither old nor new after recovery: {bytes(rec)!r}"


# 6. a store through a numpy view never flushed --------------------------------------------

def view_buggy(pm):
    a = pm.array(np.uint64, 8, offset=64)
    a[:] = np.arange(1, 9)
    pm.record("saved")


def view_fixed(pm):
    a = pm.array(np.uint64, 8, offset=64)
    a[:] = np.arange(1, 9)
    pm.persist(64, 64)
    pm.record("saved")


def check_view(img, point):
    if "saved" in point.state:
        got = np.frombuffer(bytes(img[64:128]), dtype=np.uint64)
        assert (got == np.arange(1, 9)).all(), f"saved array lost: {got.tolist()}"


BUGS = {
    "unflushed-data": (unflushed_data_buggy, unflushed_data_fixed, check_flag_implies_data, None),
    "flush-without-fence": (no_fence_buggy, no_fence_fixed, check_flag_implies_data, None),
    "wide-commit-record": (wide_record_buggy, wide_record_fixed, (check_wide, check_narrow), None),
    "misaligned-commit": (misaligned_buggy, misaligned_fixed, (check_whole(60), check_whole(56)),
                          None),
    "undo-valid-before-log": (undo_buggy, undo_fixed, check_undo, undo_setup),
    "numpy-view-unflushed": (view_buggy, view_fixed, check_view, None),
}
# eadr persists every fenced store without flushes: bugs that are only missing flushes vanish there.
BUGGY_MODELS = {
    "unflushed-data": ("x86", "x86-line"),
    "flush-without-fence": ("x86", "x86-line"),
    "wide-commit-record": ("x86", "x86-line", "eadr"),
    "misaligned-commit": ("x86", "x86-line", "eadr"),
    "undo-valid-before-log": ("x86", "x86-line", "eadr"),
    "numpy-view-unflushed": ("x86", "x86-line", "eadr"),
}


def _checks(entry):
    check = entry[2]
    return check if isinstance(check, tuple) else (check, check)


def _initial(entry):
    return entry[3]() if entry[3] else None


@pytest.mark.parametrize("bug,model", [(b, m) for b in sorted(BUGS) for m in BUGGY_MODELS[b]])
def test_buggy_variant_is_caught(bug, model, crash_explore):
    entry = BUGS[bug]
    report = crash_explore(entry[0], _checks(entry)[0], size=2048, initial=_initial(entry),
                           model=model,
                           expect_violations=True)
    v = report.violations[0]
    assert v.message and v.image != v.persisted or "checker" in str(v)
    # the violation replays to exactly the rejected image
    assert crash.replay(entry[0], v, initial=_initial(entry)) == v.image


@pytest.mark.parametrize("bug", sorted(BUGS))
@pytest.mark.parametrize("model", MODELS)
def test_fixed_variant_is_clean(bug, model, crash_explore):
    entry = BUGS[bug]
    report = crash_explore(entry[1], _checks(entry)[1], size=2048, initial=_initial(entry),
                           model=model)
    assert report.violation_count == 0 and report.states_checked > 0


@pytest.mark.parametrize("bug", [b for b in sorted(BUGS) if "eadr" not in BUGGY_MODELS[b]])
def test_missing_flushes_are_harmless_under_eadr(bug, crash_explore):
    """eADR: caches are persistent, so a fence alone orders durability."""
    entry = BUGS[bug]
    crash_explore(entry[0], _checks(entry)[0], size=2048, initial=_initial(entry), model="eadr")


def test_unflushed_view_store_is_warned_about():
    report = crash.explore(view_buggy, check_view, size=2048, progress=None)
    assert any("never flushed" in w and "via view" in w for w in report.warnings), report.warnings
