"""Exploration on executors: the in-process verdict, resumable, failures first, Dask clusters."""

import json
import multiprocessing
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
from test_regression import BUGS, MODELS, _checks, _initial

from pmemkit import crash, defaults
from pmemkit.errors import CheckpointError, CrashError, InvalidArgumentError


def _summary(r):
    # pytest's assertion rewriting adds explanations (with object addresses) after the first line,
    # and only where the test module was imported through pytest: compare the first lines
    return (
        r.states_checked,
        r.unique_images,
        r.crash_points,
        r.violation_count,
        r.complete,
        [
            (
                v.point.index,
                v.choice,
                re.sub(r"0x[0-9a-f]+", "0x", v.message.split("\n")[0]),
                v.image,
                v.persisted,
            )
            for v in r.violations
        ],
    )


CASES = [(name, which, model) for name in sorted(BUGS) for which in (0, 1) for model in MODELS]


@pytest.mark.parametrize("name,which,model", CASES)
def test_any_executor_gives_the_in_process_verdict(name, which, model):
    entry = BUGS[name]
    kw = dict(size=2048, initial=_initial(entry), model=model, progress=None)
    check = _checks(entry)[which]
    one = crash.explore(entry[which], check, **kw)
    with ThreadPoolExecutor(2) as pool:
        other = crash.explore(entry[which], check, executor=pool, **kw)
    assert _summary(one) == _summary(other)


@pytest.mark.parametrize("name", ["undo-valid-before-log", "numpy-view-unflushed"])
def test_worker_processes_give_the_in_process_verdict(name, monkeypatch, tmp_path):
    monkeypatch.setattr(defaults, "CRASH_TASK_STATES", 16)  # many small tasks
    entry = BUGS[name]
    kw = dict(size=2048, initial=_initial(entry), progress=None)
    one = crash.explore(entry[0], _checks(entry)[0], **kw)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        two = crash.explore(entry[0], _checks(entry)[0], executor=pool, **kw)
    assert _summary(one) == _summary(two) and one.violation_count
    # workers=N with a failure database: the same, on a process pool of its own
    three = crash.explore(entry[0], _checks(entry)[0], workers=2, failures=tmp_path / "db", **kw)
    assert _summary(one) == _summary(three)


@pytest.mark.parametrize("sections", [None, "_thirds"])
def test_every_violation_replays_from_its_state_index(sections):
    entry = BUGS["undo-valid-before-log"]
    sections = globals()[sections] if sections else None
    r = crash.explore(
        entry[0],
        _checks(entry)[0],
        size=2048,
        initial=_initial(entry),
        workers=2,
        stop_at_first=False,
        executor=ThreadPoolExecutor(2),
        progress=None,
        sections=sections,
    )
    assert r.violations and all(v.state is not None for v in r.violations)
    for v in r.violations[:20]:
        point, choice, image = crash.replay_state(
            entry[0],
            v.state,
            size=2048,
            initial=_initial(entry),
            model=v.model,
            engine=r.engine,
            seed=v.seed,
            sections=sections,
        )
        assert (point.index, choice, image) == (v.point.index, v.choice, v.image)


def n_slots(n):
    def workload(pm):
        for i in range(n):
            pm.write(i * 64, struct.pack("<Q", i + 1))
            pm.flush(i * 64, 8)
        pm.drain()
        pm.record("done")

    return workload


def slot_check(img):
    """Slot i durable requires slot i-1 durable (wrong for unordered flushes: violations)."""
    vals = [struct.unpack_from("<Q", img, i * 64)[0] for i in range(8)]
    for i in range(1, 8):
        assert not vals[i] or vals[i - 1], f"slot {i} without slot {i - 1}"


@pytest.mark.parametrize("resume_sizes", [("8", "8"), ("50", "3")])
def test_checkpoint_resumes_where_a_killed_run_stopped(tmp_path, resume_sizes):
    """A run killed after some tasks, resumed from its checkpoint: finished tasks are not redone,
    the others are checked once, and the report is the uninterrupted run's (also when the
    resumed run cuts its tasks differently)."""
    ck, log1, log2 = tmp_path / "run.ckpt", tmp_path / "one.log", tmp_path / "two.log"
    code = textwrap.dedent(f"""
        import os, signal, struct, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from pmemkit import crash, defaults
        from test_executors import n_slots, slot_check
        defaults.CRASH_TASK_STATES = int(sys.argv[3])
        defaults.CRASH_TASK_MIN_STATES = int(sys.argv[4])
        log = open(sys.argv[1], "a")
        def check(img):
            log.write(img[:512].hex() + "\\n"); log.flush()
            slot_check(img)
        def progress(states, unique, points):
            if sys.argv[2] == "kill" and states >= 40:
                os.kill(os.getpid(), signal.SIGKILL)
        r = crash.explore(n_slots(8), check, checkpoint={str(ck)!r}, on_states=progress,
                          executor=__import__("concurrent.futures").futures.ThreadPoolExecutor(1))
        print(r.states_checked, r.unique_images, r.violation_count, r.complete)
    """)
    first = subprocess.run(
        [sys.executable, "-c", code, str(log1), "kill", "8", "8"], capture_output=True, text=True,
        timeout=300,
    )
    assert first.returncode == -signal.SIGKILL, first.stderr
    lines = ck.read_text().splitlines()
    finished = [json.loads(x) for x in lines[1:] if x.strip()]
    done_states = sum(t["task"][2] for t in finished)
    assert 40 <= done_states < 256
    second = subprocess.run(
        [sys.executable, "-c", code, str(log2), "run", *resume_sizes], capture_output=True,
        text=True, timeout=300,
    )
    assert second.returncode == 0, second.stderr
    full = crash.explore(n_slots(8), slot_check, progress=None)
    assert second.stdout.split() == [
        str(full.states_checked),
        str(full.unique_images),
        str(full.violation_count),
        "True",
    ]
    # the resumed run checked exactly the states no finished task had checked
    checked_again = log2.read_text().split()
    assert len(checked_again) == len(set(checked_again)) == full.unique_images - done_states
    first_run = [
        x for x in log1.read_text().split() if len(x) == 1024
    ]  # not a line cut by the kill
    assert len(set(first_run) | set(checked_again)) == full.unique_images


class _CountingPool(ThreadPoolExecutor):
    """A one-thread pool that remembers how many images each task it ran had."""

    def __init__(self):
        super().__init__(1)
        self.sizes = []

    def submit(self, fn, *args, **kw):
        self.sizes.append(len(args[3]))
        return super().submit(fn, *args, **kw)


def _slow_check(img):
    import time

    time.sleep(0.01)


@pytest.mark.parametrize("check,smallest_most,largest_most", [
    (slot_check, 100, None),  # fast: tasks grow far beyond the first ones
    (_slow_check, None, 10),  # 10 ms an image, 0.05 s a task: about 5 images a task
])
def test_tasks_are_sized_by_the_checkers_speed(monkeypatch, check, smallest_most, largest_most):
    monkeypatch.setattr(defaults, "CRASH_TASK_SECONDS", 0.05)
    monkeypatch.setattr(defaults, "CRASH_TASK_MIN_STATES", 2)
    one = crash.explore(n_slots(8), check, progress=None)
    with _CountingPool() as pool:
        other = crash.explore(n_slots(8), check, executor=pool, progress=None)
    assert _summary(one) == _summary(other)
    assert sum(pool.sizes) == one.unique_images and pool.sizes[0] == 2
    if smallest_most is not None:
        assert max(pool.sizes) >= smallest_most, pool.sizes
    if largest_most is not None:
        assert max(pool.sizes) <= largest_most, pool.sizes


def _thirds(point):
    """An engine per crash point, as sections give them: every third point left unchecked."""
    return (None, "exhaustive", "prefix")[point.index % 3]


@pytest.mark.parametrize("name,which,model", CASES)
def test_sections_on_an_executor_give_the_in_process_verdict(name, which, model, tmp_path):
    """Per-point engines, some points left unchecked (their durable changes must still reach
    the later points' images), on an executor and with a checkpoint: the in-process report."""
    entry = BUGS[name]
    kw = dict(size=2048, initial=_initial(entry), model=model, progress=None, sections=_thirds)
    check = _checks(entry)[which]
    one = crash.explore(entry[which], check, **kw)
    with ThreadPoolExecutor(2) as pool:
        other = crash.explore(entry[which], check, executor=pool, **kw)
    resumed = crash.explore(entry[which], check, checkpoint=tmp_path / "c", **kw)
    assert _summary(one) == _summary(other) == _summary(resumed)
    assert sorted(one.warnings) == sorted(other.warnings)


def test_sections_leave_points_unchecked_but_not_their_durable_stores():
    """A point left unchecked still made stores durable: the images of later points (rebuilt
    on the workers from the point log) must hold them, image for image as in-process."""
    import hashlib
    import threading

    def workload(pm):
        for i in range(12):
            pm.write(i * 64, struct.pack("<Q", i + 1))
            pm.flush(i * 64, 8)
            pm.write(2048 + i * 64, struct.pack("<Q", i + 1))  # pending at the next fence
            pm.drain()

    def hashes_of(**kw):
        seen, lock = [], threading.Lock()

        def check(img, point):
            with lock:
                seen.append((point.index, hashlib.sha256(img).hexdigest()))

        crash.explore(workload, check, size=4096, sections=_thirds, progress=None, **kw)
        return sorted(seen)

    here = hashes_of()
    assert len({i for i, _ in here}) > 6
    with ThreadPoolExecutor(2) as pool:
        assert hashes_of(executor=pool) == here


def test_checkpoint_of_another_run_is_refused(tmp_path):
    ck = tmp_path / "c"
    crash.explore(n_slots(3), slot_check, checkpoint=ck, progress=None)
    with pytest.raises(CheckpointError, match=r"another run.*seed"):
        crash.explore(n_slots(3), slot_check, checkpoint=ck, seed=5, progress=None)
    ck.write_text("not json\n")
    with pytest.raises(CheckpointError, match="not a pmemkit checkpoint"):
        crash.explore(n_slots(3), slot_check, checkpoint=ck, progress=None)


def test_failure_database_reports_a_known_failure_first(tmp_path):
    db = tmp_path / "failures"
    first = crash.explore(n_slots(6), slot_check, failures=db, progress=None)
    assert first.violation_count and len(list(db.glob("*.json"))) == 1
    calls = []

    def counting(img):
        calls.append(1)
        slot_check(img)

    again = crash.explore(n_slots(6), counting, failures=db, stop_at_first=True, progress=None)
    assert not again.ok and not again.complete
    assert len(calls) == 1  # the first stored state ran, and failed: stop
    assert again.violations[0].image == first.violations[0].image
    stored = json.loads(next(db.glob("*.json")).read_text())["states"]
    assert len(stored) == first.violation_count  # the others are still stored
    # fixed: the stored states pass, the entry is dropped
    fixed = crash.explore(n_slots(6), lambda img: True, failures=db, progress=None)
    assert fixed.ok and not list(db.glob("*.json"))


def test_stop_at_first_stops_early(monkeypatch):
    monkeypatch.setattr(defaults, "CRASH_TASK_STATES", 16)
    calls = []

    def counting(img):
        calls.append(1)
        slot_check(img)

    full = crash.explore(n_slots(8), slot_check, progress=None)
    r = crash.explore(n_slots(8), counting, stop_at_first=True, workers=2, progress=None)
    assert not r.ok and not r.complete and any("first violation" in w for w in r.warnings)
    assert "stopped by the first violation" in r.summary()
    assert r.unique_images < full.unique_images


# --- Dask ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    distributed = pytest.importorskip("distributed")
    import dask

    # Dask's scratch directory in pytest's, not dask-scratch-space left in the temp dir
    with dask.config.set({"temporary-directory": str(tmp_path_factory.mktemp("dask"))}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        )
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


@pytest.mark.parametrize(
    "name", ["undo-valid-before-log", "unflushed-data", "numpy-view-unflushed"]
)
@pytest.mark.parametrize("which", [0, 1])
def test_dask_cluster_gives_the_in_process_verdict(dask_cluster, name, which, monkeypatch):
    monkeypatch.setattr(defaults, "CRASH_TASK_STATES", 32)
    entry = BUGS[name]
    kw = dict(size=2048, initial=_initial(entry), progress=None)
    one = crash.explore(entry[which], _checks(entry)[which], **kw)
    other = crash.explore(entry[which], _checks(entry)[which], executor=dask_cluster, **kw)
    assert _summary(one) == _summary(other)


def test_the_same_run_twice_on_one_client(dask_cluster, monkeypatch):
    """One client, the same exploration with an external checker three times in a row (a cluster
    is reused, as clusters are): a later run must not trip over the earlier run's scattered trace
    being released (it hung, or raised CancelledError) nor reuse its closed checkers."""
    from concurrent.futures import TimeoutError as FuturesTimeout

    monkeypatch.setattr(defaults, "CRASH_TASK_STATES", 32)
    kw = dict(size=4096, progress=None)
    one = crash.explore(n_slots(6), ["true"], **kw)
    with ThreadPoolExecutor(1) as guard:  # a hang fails the test instead of the whole run
        for _ in range(3):
            fut = guard.submit(crash.explore, n_slots(6), ["true"], executor=dask_cluster, **kw)
            try:
                other = fut.result(timeout=120)
            except FuturesTimeout:
                pytest.fail("a second exploration on the same Dask client hung")
            assert _summary(one) == _summary(other)


def test_a_killed_dask_worker_loses_nothing(dask_cluster, monkeypatch):
    """A worker killed (by pid) in the middle of the run: its ranges run again, same verdict."""
    monkeypatch.setattr(defaults, "CRASH_TASK_STATES", 4)
    pids = list(dask_cluster.run(os.getpid).values())
    killed = []

    def check(img):
        import time

        time.sleep(0.002)
        slot_check(img)

    def progress(states, unique, points):
        if not killed and states >= 20:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    full = crash.explore(n_slots(8), slot_check, progress=None)
    r = crash.explore(n_slots(8), check, executor=dask_cluster, on_states=progress)
    assert killed
    assert _summary(r)[:5] == _summary(full)[:5]
    assert [v.image for v in r.violations] == [v.image for v in full.violations]
    dask_cluster.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next test


@pytest.mark.parametrize("how", ["workers", "threads"])
def test_worker_checkers_leave_no_image_files(tmp_path, how):
    """Each worker's external checker has its image file in a temp dir, removed at the end."""
    log = tmp_path / "paths"
    argv = [sys.executable, "-c", f"import sys; open({str(log)!r}, 'a').write(sys.argv[1] + '\\n')"]
    kw = {"workers": 2} if how == "workers" else {"executor": ThreadPoolExecutor(2)}
    r = crash.explore(n_slots(3), argv, progress=None, **kw)
    assert r.ok
    dirs = {os.path.dirname(p) for p in log.read_text().split()}
    assert dirs and not [d for d in dirs if os.path.exists(d)]


def test_unpicklable_records_are_refused_clearly(tmp_path):
    def workload(pm):
        pm.write(0, b"\x01" * 8)
        pm.record("lock", __import__("threading").Lock())
        pm.persist(0, 8)

    with pytest.raises(InvalidArgumentError, match="picklable"):
        crash.explore(workload, lambda img: True, checkpoint=tmp_path / "c", progress=None)


def _die(img):
    os._exit(3)


def test_a_dead_worker_process_is_a_crash_error():
    with pytest.raises(CrashError, match="worker process died"):
        crash.explore(n_slots(3), _die, workers=2, stop_at_first=True, progress=None)


BIG_REGION = textwrap.dedent("""\
    import resource, subprocess, sys
    code = '''
    from pmemkit import crash
    def workload(pm):
        for i in range(40):
            pm.write(i * 4096 * 7, b"x" * 8)
            pm.persist(i * 4096 * 7, 8)
    r = crash.explore(workload, lambda img: True, size=64 << 20, workers=2)
    assert r.ok and r.complete and r.unique_images == 41, r.summary()
    '''
    subprocess.run([sys.executable, "-c", code], check=True)
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
""")


def test_workers_do_not_receive_whole_images():
    """workers=N rebuilds images in the workers from the trace: a 64 MiB region with 41 images
    stays far below one image per state in memory (the old pool pickled every image: 2.3 GB)."""
    out = subprocess.run([sys.executable, "-c", BIG_REGION], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    peak_kib = int(out.stdout.split()[-1])
    assert peak_kib < 640 * 1024, f"peak RSS {peak_kib} KiB"
