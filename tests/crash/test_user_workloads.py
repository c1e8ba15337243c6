"""Persistent data structures written from the hardware's rules, not from pmemkit: each correct
version and a seeded bug, under every model, with the verdict the rules give.

x86 (ADR): a store is durable only after a flush of its line and a later fence. x86-line (Px86):
a line persists a program-order prefix of its pending stores. eadr: stores persist in program
order, no flush needed. So a missing flush is a bug under x86 and x86-line only; a publish before
the data is persisted is a bug under x86 and x86-line but not under eadr when the data was stored
first; data and flag in one line with one persist are safe under x86-line and eadr only.
"""

import struct

import pytest

from pmemkit import crash

U64 = struct.Struct("<Q")
BUG_UNLESS_EADR = {"x86": False, "x86-line": False, "eadr": True}
CORRECT = {"x86": True, "x86-line": True, "eadr": True}


def undo_log(correct, flush_data=True):
    """A 64-byte value at 0, its undo copy at 128, the valid flag at 192."""
    def workload(pm):
        pm.write(0, b"A" * 64)
        pm.persist(0, 64)
        pm.record("v", b"A")
        pm.write(128, bytes(pm.read(0, 64)))
        if correct:
            pm.persist(128, 64)             # the undo copy is durable before the flag says so
        pm.write(192, U64.pack(1))
        pm.persist(192, 8)
        if not correct:
            pm.persist(128, 64)
        pm.write(0, b"B" * 64)
        if flush_data:
            pm.persist(0, 64)
        pm.write(192, U64.pack(0))
        pm.persist(192, 8)
        pm.record("v", b"B")
    return workload


def undo_check(img, point):
    v = point.state.get("v")
    if v is None:
        return                              # initialisation not finished: nothing promised
    data = bytes(img[128:192]) if U64.unpack_from(img, 192)[0] == 1 else bytes(img[0:64])
    assert data in (b"A" * 64, b"B" * 64), f"torn value after recovery: {data[:16]!r}"
    if v == b"B":
        assert data == b"B" * 64, "a committed update was lost"


def ring(correct):
    """A ring of four 64-byte slots at 64 and a head counter at 0; three slots are readable."""
    def workload(pm):
        for i in range(6):
            head = U64.unpack(pm.read(0, 8))[0]
            slot = 64 + (head % 4) * 64
            pm.write(slot, U64.pack(0x1000 + i))
            if correct:
                pm.persist(slot, 8)
            pm.write(0, U64.pack(head + 1))
            pm.persist(0, 8)
            if not correct:
                pm.persist(slot, 8)
            pm.record(i, 0x1000 + i)
    return workload


def ring_check(img, point):
    head = U64.unpack_from(img, 0)[0]
    for i in range(max(0, head - 3), head):
        v = U64.unpack_from(img, 64 + (i % 4) * 64)[0]
        assert v == 0x1000 + i, f"entry {i} published but its slot holds {v:#x}"
    assert head >= len(point.records), "an appended entry was lost"


def cow(correct):
    """Two 64-byte copies at 0 and 256 and a pointer at 512 naming the current one."""
    def workload(pm):
        pm.write(0, b"a" * 64)
        pm.persist(0, 64)
        pm.write(512, U64.pack(0))
        pm.persist(512, 8)
        pm.record("v", b"a")
        for ch in (b"b", b"c"):
            other = 1 - U64.unpack(pm.read(512, 8))[0]
            pm.write(other * 256, ch * 64)
            if correct:
                pm.persist(other * 256, 64)
            pm.write(512, U64.pack(other))
            pm.persist(512, 8)
            if not correct:
                pm.persist(other * 256, 64)
            pm.record("v", ch)
    return workload


def cow_check(img, point):
    v = point.state.get("v")
    if v is None:
        return
    p = U64.unpack_from(img, 512)[0]
    assert p in (0, 1), f"bad pointer {p}"
    data = bytes(img[p * 256:p * 256 + 64])
    assert data in (b"a" * 64, b"b" * 64, b"c" * 64), f"torn copy {data[:8]!r}..{data[-8:]!r}"
    if point.kind == "end":
        assert data == v * 64, "the last committed copy was lost"


def same_line(pm):
    pm.write(0, b"D" * 8)
    pm.write(8, U64.pack(1))
    pm.persist(0, 64)


def flag_over_data(img):
    if U64.unpack_from(img, 8)[0] == 1:
        assert bytes(img[0:8]) == b"D" * 8


def fence_without_flush(pm):
    pm.write(0, b"D" * 8)
    pm.drain()
    pm.write(64, U64.pack(1))
    pm.persist(64, 8)


def flag_in_next_line(img):
    if U64.unpack_from(img, 64)[0] == 1:
        assert bytes(img[0:8]) == b"D" * 8


CASES = {
    "undo log": (undo_log(True), undo_check, CORRECT),
    "undo log, flag before its copy": (undo_log(False), undo_check, BUG_UNLESS_EADR),
    "undo log, update never flushed": (undo_log(True, flush_data=False), undo_check,
                                       BUG_UNLESS_EADR),
    "ring": (ring(True), ring_check, CORRECT),
    "ring, head before slot": (ring(False), ring_check, BUG_UNLESS_EADR),
    "copy-on-write": (cow(True), cow_check, CORRECT),
    "copy-on-write, pointer before copy": (cow(False), cow_check, BUG_UNLESS_EADR),
    "flag and data in one line": (same_line, flag_over_data,
                                  {"x86": False, "x86-line": True, "eadr": True}),
    "fence without flush": (fence_without_flush, flag_in_next_line, BUG_UNLESS_EADR),
}


@pytest.mark.parametrize("model", crash.MODELS)
@pytest.mark.parametrize("name", list(CASES))
def test_verdict_follows_the_hardware_rules(name, model):
    workload, check, expected = CASES[name]
    r = crash.explore(workload, check, size=1024, model=model)
    assert r.complete and r.states_covered == r.states_possible, r.summary()
    assert r.ok == expected[model], r.summary()
    if not r.ok:
        assert r.violations[0].message
