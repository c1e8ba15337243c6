"""explore(): the API contract, the traced region, engines, dedup, reports, warnings, errors."""

import struct

import numpy as np
import pytest

from pmemkit import crash
from pmemkit.crash.engines import bounded_count, bounded_vectors, gray
from pmemkit.errors import ClosedMappingError, CrashError, InvalidArgumentError, OutOfRangeError
from pmemkit.region import Region


def n_pending(n, epochs=1):
    def workload(pm):
        for e in range(epochs):
            for i in range(n):
                pm.write(i * 64, struct.pack("<Q", e * 1000 + i + 1))
                pm.flush(i * 64, 8)
            pm.drain()
    return workload


def always_ok(img):
    return True


def test_traced_region_is_a_region():
    seen = {}

    def workload(pm):
        seen["region"] = pm
        assert isinstance(pm, Region) and pm.size == 4096 and len(pm) == 4096
        pm.write(0, b"abc")
        assert pm.read(0, 3) == b"abc" and bytes(pm.buffer[0:3]) == b"abc"
        pm.memcpy_persist(8, b"12345678")
        pm.memset_persist(16, 0xEE, 8)
        pm.deep_flush(0, 64)
        pm.mark("m")
        assert pm.array(np.uint8, 8, offset=16).tolist() == [0xEE] * 8
        with pytest.raises(OutOfRangeError):
            pm.write(4095, b"xy")
        with pytest.raises(InvalidArgumentError):
            pm.memset_persist(0, 256, 1)

    assert crash.explore(workload, always_ok, progress=None).ok
    with pytest.raises(ClosedMappingError):
        seen["region"].write(0, b"x")


def test_exhaustive_counts_and_dedup():
    r = crash.explore(n_pending(4), always_ok, engine="exhaustive", progress=None)
    # before the fence: 2^4 images; at the end: the durable image, already seen as the all-durable
    # subset
    assert r.crash_points == 2 and r.states_checked == 17 and r.unique_images == 16
    assert r.engines == {"exhaustive": 2} and r.complete


def test_identical_images_are_checked_once():
    calls = []

    def workload(pm):
        for _ in range(3):
            pm.write(0, b"\x00" * 8)     # stores that change nothing
            pm.persist(0, 8)

    crash.explore(workload, lambda img: calls.append(1), progress=None)
    assert len(calls) == 1


def test_auto_switches_to_bounded_plus_random():
    r = crash.explore(n_pending(40), always_ok, progress=None)
    (label, points), = [(k, v) for k, v in r.engines.items() if k != "exhaustive"]
    assert label.startswith("bounded(k=2)+random") and points == 1
    assert r.unique_images >= bounded_count([[0]] * 40, 2)


def test_random_engine_is_reproducible_and_seeded():
    def images(seed):
        out = []
        crash.explore(n_pending(30), lambda img: out.append(bytes(img[:30 * 64])),
                      engine="random:50",
                      seed=seed, progress=None)
        return out
    assert images(1) == images(1)
    assert images(1) != images(2)


def test_prefix_engine_is_program_order():
    out = []
    crash.explore(n_pending(5), lambda img: out.append(bytes(img)), engine="prefix", progress=None)
    lens = sorted(sum(1 for i in range(5) if img[i * 64] != 0) for img in out)
    assert lens == [0, 1, 2, 3, 4, 5]
    for img in out:            # store i durable implies store i-1 durable
        flags = [img[i * 64] != 0 for i in range(5)]
        assert flags == sorted(flags, reverse=True)


def test_max_states_stops_and_says_so():
    r = crash.explore(n_pending(10), always_ok, engine="exhaustive", max_states=100, progress=None)
    assert r.states_checked == 100 and not r.complete
    assert any("max_states" in w for w in r.warnings) and "INCOMPLETE" in str(r)


def test_gray_code_visits_every_vector_once():
    radices = [2, 3, 1 + 1, 4]
    vec = [0] * 4
    seen = {tuple(vec)}
    for j, a in gray(radices):
        assert abs(a - vec[j]) == 1
        vec[j] = a
        seen.add(tuple(vec))
    assert len(seen) == 2 * 3 * 2 * 4


def test_bounded_vectors_match_count():
    dims = [[0], [0, 0], [0], [0, 0, 0]]
    for k in range(4):
        assert len(list(bounded_vectors(dims, k))) == bounded_count(dims, k)


def test_checker_gets_crash_point_with_records_and_marker():
    seen = []

    def workload(pm):
        pm.mark("first")
        pm.memcpy_persist(0, b"a" * 8)
        pm.record("a", 1)
        pm.mark("second")
        pm.memcpy_persist(8, b"b" * 8)
        pm.record("b", 2)

    def check(img, point):
        seen.append((point.index, point.kind, point.marker, point.state))

    crash.explore(workload, check, progress=None)
    assert (0, "fence", "first", {}) in seen
    assert (1, "fence", "second", {"a": 1}) in seen
    assert (2, "end", "second", {"a": 1, "b": 2}) in seen


def test_store_points_add_a_crash_point_after_each_store():
    r1 = crash.explore(n_pending(3), always_ok, progress=None)
    r2 = crash.explore(n_pending(3), always_ok, store_points=True, progress=None)
    assert r2.crash_points == r1.crash_points + 3


def test_initial_image_is_durable_from_the_start(tmp_path):
    init = bytes(range(256)) * 4
    path = tmp_path / "img"
    path.write_bytes(init)
    images = []
    crash.explore(lambda pm: pm.write(0, b"zzzzzzzz"), lambda img: images.append(bytes(img)),
                  initial=path, progress=None)
    assert len(images) == 2 and all(len(i) == 1024 for i in images)
    assert init in images and b"zzzzzzzz" + init[8:] in images


def test_warnings_in_pmemcheck_style():
    def workload(pm):
        pm.write(0, b"never flushed")
        pm.write(128, b"x" * 8)
        pm.flush(128, 8)        # no fence follows
        pm.flush(512, 64)       # nothing there
    r = crash.explore(workload, always_ok, progress=None)
    text = "\n".join(r.warnings)
    assert "never flushed" in text and "#0 [0x0" in text
    assert "no later fence" in text and "#1 [0x80" in text
    assert "nothing pending" in text and "[0x200, +64)" in text


def test_report_text_names_point_marker_stores_diff_and_replay():
    def workload(pm):
        pm.mark("commit")
        pm.write(0, b"DATA" * 2)
        pm.write(64, b"\x01" + b"\x00" * 7)
        pm.persist(64, 8)
        pm.persist(0, 8)

    def check(img):
        assert img[64] == 0 or bytes(img[0:8]) == b"DATA" * 2, "flag without data"

    r = crash.explore(workload, check, progress=None)
    assert not r.ok and r.violation_count == 1
    text = str(r)
    for needle in ("FAILED", "crash point #0", "'commit'", "flag without data", "WERE durable",
                   "NOT durable", "[0x0000, 0x0008)", "44 41 54 41", "crash.replay(", "seed=0"):
        assert needle in text, needle
    assert crash.replay(workload, r.violations[0]) == r.violations[0].image


def test_checker_returning_false_or_raising_is_a_violation():
    assert not crash.explore(n_pending(1), lambda img: False, progress=None).ok
    r = crash.explore(n_pending(1), lambda img: 1 / 0, progress=None)
    assert "ZeroDivisionError" in r.violations[0].message
    assert crash.explore(n_pending(1), lambda img: None, progress=None).ok


@pytest.mark.parametrize("kwargs,match", [
    ({"model": "arm"}, "unknown model"),
    ({"engine": "magic"}, "unknown engine"),
    ({"engine": "prefix:3"}, "takes no number"),
    ({"max_states": 0}, "max_states"),
    ({"workers": 0}, "workers"),
    ({"initial": 42}, "initial"),
    ({"initial": "/nonexistent/image"}, "cannot read"),
    ({"size": 0}, "positive"),
])
def test_bad_arguments_raise_typed_errors(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        crash.explore(n_pending(1), always_ok, progress=None, **kwargs)


def test_bad_checker_and_workload():
    with pytest.raises(InvalidArgumentError, match="callable"):
        crash.explore(n_pending(1), 42)
    with pytest.raises(InvalidArgumentError, match="argv list"):
        crash.explore(n_pending(1), "./check.sh")
    with pytest.raises(CrashError, match="not found"):
        crash.explore(n_pending(1), ["/nonexistent/checker"])
    with pytest.raises(InvalidArgumentError, match="workload"):
        crash.explore(None, always_ok)


def test_workers_find_the_same_violations():
    def check(img):
        v = struct.unpack_from("<Q", img, 0)[0]
        assert v == 0 or img[64] != 0, "store 0 durable without store 1"

    one = crash.explore(n_pending(8), check, progress=None)
    two = crash.explore(n_pending(8), check, workers=2, progress=None)
    assert one.violation_count == two.violation_count > 0
    assert one.unique_images == two.unique_images
    assert sorted(v.image for v in one.violations) == sorted(v.image for v in two.violations)


def test_progress_callback():
    calls = []
    crash.explore(n_pending(6, epochs=3), always_ok, on_states=lambda *a: calls.append(a))
    assert calls and calls[-1][0] > 0


@pytest.mark.parametrize("kwargs",
                         [{"engine": "prefix"}, {"store_points": True}, {"model": "x86-line"},
                                    {"engine": "random:20", "seed": 7}, {"engine": "bounded:1"}])
def test_every_violation_replays_to_its_image(kwargs):
    def check(img):
        assert img[64] == 0 or img[128] != 0, "slot 1 durable without slot 2"

    r = crash.explore(n_pending(3, epochs=2), check, progress=None, **kwargs)
    assert not r.ok
    for v in r.violations:
        assert crash.replay(n_pending(3, epochs=2), v) == v.image


def test_an_executor_without_submit_is_refused_before_the_workload_runs():
    ran = []
    with pytest.raises(InvalidArgumentError, match="executor must be"):
        crash.explore(lambda pm: ran.append(pm), lambda image: True, executor=5)
    assert not ran
