"""Wrong verdicts that must never come back: unordered stores, sampled spaces, dedup, x86 notes.

Each workload and checker here is written from the description of the defect and the
hardware's rules, not from pmemkit's implementation.
"""

import struct
import zlib

import numpy as np
import pytest

from pmemkit import crash
from pmemkit.errors import CrashError, StateSpaceTooLarge

MODELS = ("x86", "x86-line", "eadr")


# --- stores whose order was not observed --------------------------------------------

def _flag_then_value(dtype):
    def check(img):
        a = np.frombuffer(img, dtype, 8)
        if a[7] == 1:
            assert a[0] == 0xAA, "flag a[7] is durable but a[0] is not"
    return check


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("dtype", ["u8"])     # the example: two units of one line
def test_view_stores_are_explored_in_every_order(model, dtype):
    size = np.dtype(dtype).itemsize

    def through_view(pm):
        a = pm.array(dtype, 8)
        a[7] = 1
        a[0] = 0xAA
        pm.persist(0, 64)

    def through_write(pm):
        pm.write(7 * size, b"\x01")
        pm.write(0, b"\xaa")
        pm.persist(0, 64)

    for workload in (through_view, through_write):
        r = crash.explore(workload, _flag_then_value(dtype), model=model)
        assert not r.ok, (model, workload.__name__, r)
        assert r.complete


@pytest.mark.parametrize("model", MODELS)
def test_view_stores_in_either_address_order(model):
    # an append: entry, then the count; under eadr/x86-line the count may be at either side
    def append(count_at, entry_at):
        def workload(pm):
            a = pm.array("u1", 64)
            a[entry_at] = 0xEE
            a[count_at] = 1
            pm.persist(0, 64)
        return workload

    def check_for(count_at, entry_at):
        def check(img):
            if img[count_at] == 1:
                assert img[entry_at] == 0xEE
        return check

    # the order of the two view stores is unknown: both layouts may tear
    for count_at, entry_at in ((0, 40), (40, 0)):
        r = crash.explore(append(count_at, entry_at), check_for(count_at, entry_at), model=model)
        assert not r.ok, (model, count_at)


def test_a_flush_between_view_stores_orders_them():
    def workload(pm):
        a = pm.array("u1", 64)
        a[40] = 0xEE
        pm.flush(0, 64)
        a[0] = 1
        pm.persist(0, 64)

    def check(img):
        if img[0] == 1:
            assert img[40] == 0xEE

    for model in ("x86-line", "eadr"):
        assert crash.explore(workload, check, model=model).ok


def test_unordered_block_is_a_store_group():
    def workload(pm):
        with pm.unordered():
            pm.write(0, struct.pack("<Q", 5))      # entry
            pm.write(8, struct.pack("<Q", 1))      # count, same line
        pm.persist(0, 16)

    def check(img):
        entry, count = struct.unpack_from("<QQ", img)
        if count == 1:
            assert entry == 5

    r = crash.explore(workload, check, model="x86-line")
    assert not r.ok
    assert {s.via for v in r.violations for s in v.durable_stores} == {"unordered"}
    # replay rebuilds the image
    v = r.violations[0]
    assert crash.replay(workload, v) == v.image


def test_eadr_group_across_lines_replays():
    def workload(pm):
        pm.write(512, b"\x01" * 8)
        pm.persist(512, 8)
        a = pm.array("u1", 256)
        a[::64] = 7            # four stores, four lines, unknown order
        pm.write(300, b"\x02" * 8)
        pm.persist(0, 512)

    images = []

    def check(img):
        images.append(bytes(img[:320]))
        if img[300] == 2:       # the ordered store after the group: the whole group is durable
            assert all(img[i] == 7 for i in range(0, 256, 64))
        return True

    r = crash.explore(workload, check, model="eadr")
    assert r.ok and r.complete
    subsets = {tuple(img[i] == 7 for i in range(0, 256, 64)) for img in images}
    assert len(subsets) == 16


# --- a false OK labelled complete ----------------------------------------------------

RECORD_UNITS = 32           # a 256-byte record: 31 payload words, then the CRC word


def crc_record_workload(pm):
    payload = b"".join(struct.pack("<Q", 0x1000 + i) for i in range(RECORD_UNITS - 1))
    crc = struct.pack("<Q", zlib.crc32(payload) | 1 << 40)
    pm.write(0, payload + crc)      # bug: the CRC is written with the record, not after it
    pm.persist(0, 256)


def crc_record_check(img):
    """The reader trusts a record once more than half of it reads as written (no zero word
    among its first 18 words), and then needs its CRC to match."""
    words = struct.unpack_from("<32Q", img)
    written = 0
    while written < RECORD_UNITS and words[written]:
        written += 1
    if written >= 18:
        payload = bytes(img[:8 * (RECORD_UNITS - 1)])
        expected = zlib.crc32(payload) | 1 << 40
        assert words[-1] == expected, f"torn record ({written} words)"


def test_default_model_finds_what_x86_line_finds():
    line = crash.explore(crc_record_workload, crc_record_check, model="x86-line")
    assert not line.ok and line.complete
    x86 = crash.explore(crc_record_workload, crc_record_check, model="x86")
    assert not x86.ok, x86
    # 32 pending units: 2^32 states at the fence, far more than are explored
    assert not x86.complete and x86.states_possible > 2 ** 32 > x86.states_covered > 0
    assert "INCOMPLETE" in x86.summary() and "possible crash states" in x86.summary()


def test_sampled_exploration_is_never_complete():
    def workload(pm):
        for i in range(20):
            pm.write(i * 8, struct.pack("<Q", i + 1))
        pm.persist(0, 160)

    for engine in ("auto", "bounded:2", "random:50"):
        r = crash.explore(workload, lambda img: True, engine=engine)
        assert r.ok and not r.complete, engine
        assert r.states_covered < r.states_possible
        assert any("sampled" in w for w in r.warnings)
        assert "INCOMPLETE (sampled)" in str(r)
    small = crash.explore(lambda pm: pm.write(0, b"x") or pm.persist(0, 1), lambda img: True)
    assert small.complete and small.states_covered == small.states_possible
    assert "complete: all" in small.summary()


@pytest.mark.parametrize("model", crash.MODELS)
@pytest.mark.parametrize("workers", [1, 2])
def test_samples_that_reach_every_state_are_complete(model, workers):
    """A point sampled by the random engine whose samples happened to visit all of its states
    was explored completely: the report says complete (it used to say "INCOMPLETE: 5 of 5")."""
    def workload(pm):
        pm.write(0, b"a" * 8)
        pm.write(64, b"b" * 8)
        pm.persist(0, 128)

    r = crash.explore(workload, lambda img: True, engine="random:64", model=model,
                      workers=workers)
    assert r.complete and r.states_covered == r.states_possible, r.summary()
    assert not any("sampled" in w for w in r.warnings)
    few = crash.explore(workload, lambda img: True, engine="random:1", model=model)
    assert not few.complete and few.states_covered < few.states_possible


def test_exhaustive_refuses_an_unexplorable_space():
    calls = []

    def workload(pm):
        pm.write(0, bytes(range(256)) * 2)      # 64 units under x86: 2^64 states
        pm.persist(0, 512)

    with pytest.raises(StateSpaceTooLarge) as exc:
        crash.explore(workload, lambda img: calls.append(1), engine="exhaustive")
    assert exc.value.count == 2 ** 64 and "2^64" in str(exc.value) and not calls
    # with max_states it runs, cut short, and says so
    r = crash.explore(workload, lambda img: True, engine="exhaustive", max_states=100)
    assert not r.complete and r.stopped and r.states_checked == 100


def test_require_explorable_is_public():
    from pmemkit.crash import require_explorable

    require_explorable(10)
    with pytest.raises(StateSpaceTooLarge):
        require_explorable(2 ** 64)


# --- dedup covers everything the checker is given -----------------------------------

def test_checker_with_point_runs_at_every_point():
    def workload(pm):
        pm.write(0, b"\x01" * 8)            # the flag: never flushed (the bug)
        pm.write(64, b"\x02" * 8)
        pm.persist(64, 8)                    # a fence point where the flag is not durable either

    def check(img, point):
        if point.kind == "end":
            assert img[0] == 1, "at the end the flag must be durable"

    r = crash.explore(workload, check)
    assert not r.ok
    assert {v.point.kind for v in r.violations} == {"end"}


# --- x86 says when a violation needs what x86 hardware cannot do -------------------

def test_x86_violation_needing_same_line_reordering_says_so():
    def workload(pm):
        pm.write(0, struct.pack("<Q", 0xA))
        pm.write(8, struct.pack("<Q", 0xB))         # same line, after the first
        pm.persist(0, 16)

    def check(img):
        a, b = struct.unpack_from("<QQ", img)
        if b == 0xB:
            assert a == 0xA

    assert crash.explore(workload, check, model="x86-line").ok
    r = crash.explore(workload, check, model="x86")
    assert not r.ok
    v = r.violations[0]
    assert v.reordered_lines == (0,)
    assert "model='x86-line'" in str(v) and "out of program order" in str(v)


def test_x86_violation_hardware_can_produce_has_no_note():
    def workload(pm):
        pm.write(0, struct.pack("<Q", 0xA))
        pm.write(64, struct.pack("<Q", 0xB))        # another line: no order between them
        pm.persist(0, 128)

    def check(img):
        if img[64] == 0xB:
            assert img[0] == 0xA

    r = crash.explore(workload, check, model="x86")
    assert not r.ok and r.violations[0].reordered_lines == ()
    assert "out of program order" not in str(r.violations[0])


# --- checker contract ---------------------------------------------------------------

@pytest.mark.parametrize("value", [1, 0, "torn record", [], object()])
def test_checker_returning_something_else_is_an_error(value):
    with pytest.raises(CrashError, match="returns None or True"):
        crash.explore(lambda pm: pm.write(0, b"x") or pm.persist(0, 1), lambda img: value)


def test_btt_crash_suite_exhaustive_refuses_up_front(capsys):
    from pmemkit.cli import main

    assert main(["btt", "crash-suite", "--engine", "exhaustive", "--writes", "1"]) == 2
    err = capsys.readouterr().err
    assert "refuses about 2^64 crash states" in err


def test_cli_json_says_how_much_was_covered(tmp_path, capsys):
    from pmemkit.cli import main
    from pmemkit.crash import pmemcheck

    def workload(pm):
        for i in range(20):
            pm.write(i * 8, struct.pack("<Q", i + 1))
        pm.persist(0, 160)

    log = tmp_path / "store.log"
    pmemcheck.write_log(pmemcheck.record(workload, 4096), log)
    assert main(["crash", str(log), "--initial", "zeros", "--json", "--check", "true"]) == 3
    out = capsys.readouterr().out
    data = __import__("json").loads(out[out.index("{"):])
    assert data["complete"] is False and data["states_possible"] == 2 ** 20 + 1   # + the end
    assert 0 < data["states_covered"] < 2 ** 20 and "INCOMPLETE (sampled)" in data["coverage"]


def test_x86_extra_views_replay_and_state_space_counts():
    r = crash.explore(crc_record_workload, crc_record_check, model="x86")
    views = {v.view for v in r.violations}
    assert views & {"x86-line", "x86-end"}, views
    for v in r.violations[:5]:
        assert crash.replay(crc_record_workload, v) == v.image
    points, largest, total = crash.state_space(crc_record_workload, model="x86")
    assert points == 2 and largest == 2 ** 32 and total == 2 ** 32 + 1
    assert crash.state_space(crc_record_workload, model="x86-line")[1] == 9 ** 4


def test_an_incomplete_run_is_never_called_ok():
    def workload(pm):
        for i in range(4):
            pm.write(8 * i, b"A" * 8)
        pm.persist(0, 32)
    cut = crash.explore(workload, lambda image: True, max_states=2)
    assert cut.ok and not cut.complete
    assert "exploration OK" not in cut.summary()
    assert "found no violation" in cut.summary() and "INCOMPLETE" in cut.summary()
    full = crash.explore(workload, lambda image: True)
    assert full.complete and "crash exploration OK" in full.summary()
