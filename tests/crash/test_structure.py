"""The explorer's interfaces: the tracer's immutable pending state, engine plans, workers."""

import importlib
import struct

import pytest

from pmemkit import crash, defaults
from pmemkit.crash.engines import EngineSpec, Plan, plan
from pmemkit.crash.model import dimensions, state_count
from pmemkit.crash.trace import PendingState, TracedRegion


def test_crash_point_callback_gets_an_immutable_pending_state():
    states = []

    def on_point(state):
        assert isinstance(state, PendingState)
        assert state.durable.readonly and state.working.readonly
        with pytest.raises(TypeError):
            state.durable[0] = 1
        with pytest.raises(AttributeError):
            state.kind = "x"
        states.append((state.index, state.kind, state.marker, state.records, state.fences,
                       state.stores, bytes(state.durable[:16]), state.changed,
                       [(li, len(evs), fl) for li, evs, fl in state.lines],
                       sorted(state.store_log), state.unflushed_stores()))

    pm = TracedRegion(4096, on_crash_point=on_point)
    pm.mark("one")
    pm.write(0, struct.pack("<Q", 7))
    pm.write(64, struct.pack("<Q", 9))
    pm.flush(0, 8)
    pm.record("k", 1)
    pm.drain()
    pm.finish()
    first, end = states
    assert first[:6] == (0, "fence", "one", (("k", 1),), 0, 2)
    assert first[6] == bytes(16) and first[7] == ()   # no initial contents: changes since zeros
    assert first[8] == [(0, 1, 1), (1, 1, 0)] and first[9] == [0, 1] and first[10] == [1]
    # the fence made store 0 durable: unit 0 changed; store 1 is still pending, never flushed
    assert end[1] == "end" and end[6] == struct.pack("<Q", 7) + bytes(8) and end[7] == (0,)
    assert end[8] == [(1, 1, 0)] and end[9] == [1]


def test_the_explorer_builds_images_in_its_own_memory():
    durable_seen = []

    def workload(pm):
        pm.write(0, struct.pack("<Q", 1))
        pm.write(8, struct.pack("<Q", 2))
        pm.persist(0, 16)
        durable_seen.append(bytes(pm.durable[:16]))

    images = []
    crash.explore(workload, lambda img: images.append(bytes(img[:16])), engine="exhaustive")
    # the tracer's durable image went straight from empty to both stores: nothing patched into it
    assert durable_seen == [struct.pack("<QQ", 1, 2)]
    assert sorted(images) == sorted({bytes(16), struct.pack("<QQ", 1, 0), struct.pack("<QQ", 0, 2),
                                     struct.pack("<QQ", 1, 2)})


def test_plan_is_a_dataclass():
    pm = TracedRegion(4096)
    for i in range(20):
        pm.write(i * 8, struct.pack("<Q", i + 1))
    dims = dimensions(pm.pending_state("fence"), "x86")
    count = state_count(dims)
    assert count == 2 ** 20 > defaults.CRASH_AUTO_EXHAUSTIVE_STATES
    p = plan(EngineSpec.parse("auto"), dims, count)
    assert isinstance(p, Plan) and p.kind == "bounded" and p.k == 2 and not p.complete
    expected = Plan("bounded(k=1)", "bounded", 1, 0, True)
    assert plan(EngineSpec.parse("bounded:1"), dims[:1], 2) == expected
    assert plan(EngineSpec.parse("random:5"), dims, count).samples == 5


def test_workers_get_the_checker_without_module_globals():
    explore_module = importlib.import_module("pmemkit.crash.explore")

    seen = []

    def check(img):        # a closure: reaches the workers only through fork, as an argument
        seen.append(1)
        return img[0] != 0xFF

    r = crash.explore(lambda pm: pm.persist(0, 0) or pm.write(0, b"\xff" * 8) or pm.persist(0, 8),
                      check, workers=2)
    assert not r.ok and r.violation_count == 1
    assert not [n for n in vars(explore_module) if n.startswith("_WORKER")]
