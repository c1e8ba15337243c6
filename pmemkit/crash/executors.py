"""Crash exploration on any :class:`concurrent.futures.Executor`: ranges of states, not images.

:func:`explore` with ``workers=N``, an ``executor``, a ``checkpoint`` or a
failure database runs in two phases:

1. *plan*: the workload runs once here; at every crash point the explorer
   enumerates the states (choice vectors and fingerprints only, no checker) and
   keeps a compact *point log*: the durable units changed since the previous
   point, the point's dimensions and plan. Every state gets a global index in
   this deterministic enumeration; the first state of each distinct image is the
   one checked.
2. *check*: the indices of the distinct images are cut into tasks (ranges of
   consecutive states), sized from the checker's speed measured on the workers so
   that a task takes about :data:`~pmemkit.defaults.CRASH_TASK_SECONDS`
   (:class:`TaskSizer`). The point log goes to each worker once; a worker rebuilds
   the images of its ranges in its own memory by replaying the log, so no image
   crosses the network.

The verdict, the violations (in enumeration order) and the state counts are the
same as those of the in-process run. A violation is identified by
``(seed, model, engine, state index)`` and :func:`replay_state` rebuilds its image
on any machine.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import pickle
import threading
import time
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, wait
from multiprocessing.util import Finalize

from .. import defaults
from .._linux.process import die_with_parent
from ..errors import CrashError, InvalidArgumentError, RangeDone, StateLimitReached
from .checkers import as_checker, wants_info
from .checkpoint import Checkpoint, FailureDB
from .explore import (MAX_KEPT_VIOLATIONS, _Explorer, _new_region, _PointMeta, _run_one,
                      image_base, pickled_records)
from .report import SAMPLED_WARNING, Report, SparseImage, skipped_warning
from .trace import UNIT


def _accept(image):
    """The checker of the phases that only enumerate or rebuild images."""
    return True


class _Entry:
    """What a worker needs of one crash point."""

    __slots__ = (
        "changed",
        "count",
        "durable_hash",
        "final",
        "info",
        "lines",
        "offset",
        "olds",
        "passes",
        "stores",
    )

    def __getstate__(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state):
        for s, v in zip(self.__slots__, state, strict=True):
            setattr(self, s, v)


class _Planner(_Explorer):
    """Phase 1: enumerate every state (no checker) and keep the point log."""

    def __init__(self, size, model, spec, max_states, seed, want):
        super().__init__(_accept, size, model, spec, max_states, seed, False, None)
        self.want = want  # a checker given the crash point sees images per point
        self.log = []
        self.new = []  # global indices of the states whose image is seen first
        self.where = []  # ...and for each, (point, pass, choice vector): how to build it
        self._pass = None
        self._entry = None
        self._carry = set()  # durable units changed at points not logged (sections: "none")

    def on_point(self, state):
        entry = None
        if self.complete:
            entry = self._entry = _Entry()
            entry.offset = self.states
            # the durable units changed since the last logged point: those of this point and
            # of the points in between that were not logged (left unchecked by sections)
            changed = set(state.changed or ()) | self._carry
            entry.changed = tuple(
                (u, bytes(state.durable[u * UNIT : u * UNIT + UNIT])) for u in sorted(changed)
            )
            entry.durable_hash = state.durable_hash
            entry.lines = tuple((li, tuple(events), fl) for li, events, fl in state.lines)
            entry.final = tuple(
                {ev.unit: ev.value for _, events, _ in entry.lines for ev in events}.items()
            )
            entry.stores = dict(state.store_log)
            entry.passes = []
            entry.info = entry.olds = None
        try:
            super().on_point(state)
        finally:
            self._entry = None
            if entry is not None and entry.info is not None:
                entry.count = self.states - entry.offset
                self.log.append(entry)
                self._carry = set()
            elif entry is not None:
                self._carry = changed

    def _explore_space(self, state, orig, space, space_plan, meta, images):
        entry = self._entry
        entry.info, entry.olds = meta.info, meta.olds
        entry.passes.append((space, meta.index, space_plan, meta.label))
        self._pass = len(entry.passes) - 1
        super()._explore_space(state, orig, space, space_plan, meta, images)

    def _visitor(self, view, meta, cur, hashes, images):
        seen = self.seen
        max_states = self.max_states
        new = self.new
        where = self.where
        point, npass = len(self.log), self._pass
        keyed = meta.info.index if self.want else None

        def visit():
            if max_states is not None and self.states >= max_states:
                raise StateLimitReached
            h = hashes["h"]
            if images is not None:
                images.add(h)
            self.states += 1
            key = h if keyed is None else (h, keyed)
            if key not in seen:
                seen.add(key)
                self.unique += 1
                new.append(self.states - 1)
                where.append((point, npass, tuple(cur.items())))

        return visit


class _Hash:
    __slots__ = ("durable_hash",)

    def __init__(self, h):
        self.durable_hash = h


class _Runner(_Explorer):
    """Phase 2, in a worker: rebuild the images of some states from the point log and check them."""

    def __init__(self, check, payload):
        size, model, spec, seed, log, base, store_points = payload
        super().__init__(check, size, model, spec, None, seed, False, None)
        self.store_points = store_points
        self.log = log
        self.offsets = [e.offset for e in log]
        self.base = image_base(base, size)
        self.cursor = -1
        self._touched = (-1, set())  # (last point folded in, durable units written up to it)
        self._kept = None  # (point, its persisted image) of the last violation
        self._reset()

    def _reset(self):
        img = self.scratch.blank(-(-self.size // UNIT) * UNIT)
        if self.base:
            img[: len(self.base)] = self.base
        self.scratch.img = img
        self.cursor = -1

    def _goto_point(self, p):
        if p < self.cursor:
            self._reset()
        img = self.scratch.img
        for q in range(self.cursor + 1, p + 1):
            for u, v in self.log[q].changed:
                img[u * UNIT : u * UNIT + UNIT] = v
        self.cursor = p

    def _written(self):
        """The durable units written up to the current point (gathered from the log on demand:
        only violations need them)."""
        done, touched = self._touched
        if done > self.cursor:
            done, touched = -1, set()
        for q in range(done + 1, self.cursor + 1):
            touched.update(u for u, _ in self.log[q].changed)
        self._touched = (self.cursor, touched)
        return touched

    def run(self, wanted, on_state):
        """Enumerate the sorted states ``wanted``, ``on_state(index, view, meta, cur)`` each."""
        if not wanted:
            return
        p = bisect.bisect_right(self.offsets, wanted[0]) - 1
        w = 0
        while w < len(wanted):
            entry = self.log[p]
            end = entry.offset + entry.count
            mine = []
            while w < len(wanted) and wanted[w] < end:
                mine.append(wanted[w])
                w += 1
            if mine:
                self._run_point(p, entry, mine, on_state)
            p += 1

    def _run_point(self, p, entry, mine, on_state):
        self._goto_point(p)
        orig = {}
        self._task = ([entry.offset], set(mine), mine[-1], on_state)
        try:
            for space, index, space_plan, label in entry.passes:
                meta = _PointMeta(
                    entry.info, space, index, None, label, entry.stores, entry.lines, entry.olds
                )
                self._explore_space(_Hash(entry.durable_hash), orig, space, space_plan, meta, None)
        except RangeDone:
            pass
        finally:
            img = self.scratch.img
            for u, v in orig.items():
                img[u * UNIT : u * UNIT + UNIT] = v

    def _visitor(self, view, meta, cur, hashes, images):
        counter, mine, last, on_state = self._task

        def visit():
            i = counter[0]
            counter[0] = i + 1
            if i in mine:
                on_state(i, view, meta, cur)
                if i == last:
                    raise RangeDone

        return visit

    def check_states(self, items, stop_at_first=False):
        """Check the states ``items`` (``(index, point, pass, choice vector)``), each image laid
        directly over the point's durable image: ``(number checked, [(index, choice, message)])``.
        """
        out = []
        checked = 0
        check, want = self.check, self.want
        view = memoryview(self.scratch.img)[: self.size].toreadonly()
        orig = {}
        for i, p, k, vec in items:
            if p != self.cursor:
                self._goto_point(p)
                view = memoryview(self.scratch.img)[: self.size].toreadonly()
            entry = self.log[p]
            space = entry.passes[k][0]
            self._lay(space.base, orig)
            for j, a in vec:
                self._lay(space.dims[j][a - 1].patch, orig)
            checked += 1
            try:
                _, msg = _run_one(check, view, entry.info, want, self.scratch.changes())
            finally:
                img = self.scratch.img
                for u, v in orig.items():
                    img[u * UNIT : u * UNIT + UNIT] = v
                orig.clear()
            if msg is not None:
                out.append((i, dict(vec), msg))
                if stop_at_first:
                    break
        return checked, out

    def _lay(self, patch, orig):
        img = self.scratch.img
        for u, v in patch:
            if u not in orig:
                orig[u] = bytes(img[u * UNIT : u * UNIT + UNIT])
            img[u * UNIT : u * UNIT + UNIT] = v

    def violation(self, index, message, choice):
        """Append the :class:`Violation` of state ``index`` (its image rebuilt here, kept as its
        differences from the initial image)."""
        got = []

        def keep(i, view, meta, cur):
            units = self._may_differ(meta)
            got.append((meta, SparseImage.of(view, self.base, self.size, units, UNIT), units))

        self.run([index], keep)
        meta, image, units = got[0]
        p = bisect.bisect_right(self.offsets, index) - 1
        if self._kept is None or self._kept[0] != p:
            self._kept = (p, self.persisted_of(p, units))
        meta.persisted = self._kept[1]
        self._violation(meta, choice, image, message)
        self.violations[-1].state = index

    def image_of(self, index):
        """``(CrashPoint, choice, image bytes)`` of the state ``index``."""
        got = []
        self.run(
            [index], lambda i, view, meta, cur: got.append((meta.info, dict(cur), bytes(view)))
        )
        return got[0]

    def persisted_of(self, p, units=None):
        """The image at point ``p`` had every pending store become durable, as a
        :class:`SparseImage`; ``units``: the only units where it may differ from the initial
        image (None: compare it all)."""
        self._goto_point(p)
        orig = {}
        try:
            self._lay(self.log[p].final, orig)
            return SparseImage.of(self.scratch.img, self.base, self.size, units, UNIT)
        finally:
            img = self.scratch.img
            for u, v in orig.items():
                img[u * UNIT : u * UNIT + UNIT] = v


# --- the worker side -------------------------------------------------------------------

_local = threading.local()  # .runners: payload digest -> _Runner, one per worker thread
_shared = {}  # what the default pool's initializer hands its workers
_made = []  # every runner of this process, to close their checkers
_made_lock = threading.Lock()
_finalizer_pid = [None]
_closed = [0]  # how many times close_runners ran: a thread's runners made before are closed


def _runner_for(digest, check, payload):
    runners = getattr(_local, "runners", None)
    if runners is None or getattr(_local, "closed", None) != _closed[0]:
        # close_runners may have run in another thread (Dask runs it in the worker's event
        # loop, tasks run in its executor threads): runners made before it have closed checkers
        runners = _local.runners = {}
        _local.closed = _closed[0]
    runner = runners.get(digest)
    if runner is None:
        if payload is None:
            check, payload = _shared[digest]
        if isinstance(payload, bytes):
            payload = pickle.loads(payload)
        runners.clear()
        runner = runners[digest] = _Runner(check, payload)
        with _made_lock:
            _made.append(runner)
            if (
                _finalizer_pid[0] != os.getpid()
            ):  # worker processes skip atexit: close at their exit
                _finalizer_pid[0] = os.getpid()
                Finalize(None, close_runners, exitpriority=10)
    return runner


def close_runners():
    """Close the checkers of this process's runners (temp files, persistent checker processes)."""
    with _made_lock:
        made = _made[:]
        _made.clear()
        _closed[0] += 1
    for runner in made:
        closer = getattr(runner.check, "close", None)
        if callable(closer):
            closer()
    _local.runners = {}


def _pool_init(digest, check, payload):
    die_with_parent()  # a coordinator killed outright leaves no worker behind
    _shared.clear()
    _shared[digest] = (check, payload)


def check_task(digest, check, payload, wanted, stop_at_first):
    """A task: check the states ``wanted`` (sorted indices); the payload is cached per worker.
    Returns ``(checked, violations, seconds the checking took on the worker)``."""
    runner = _runner_for(digest, check, payload)
    t = time.perf_counter()
    n, results = runner.check_states(wanted, stop_at_first)
    return n, results, time.perf_counter() - t


class TaskSizer:
    """How many images the next task gets: about :data:`~pmemkit.defaults.CRASH_TASK_SECONDS`
    of checking at the speed measured so far on the workers (the first tasks, before any was
    timed, get :data:`~pmemkit.defaults.CRASH_TASK_MIN_STATES`), between that and
    :data:`~pmemkit.defaults.CRASH_TASK_STATES`, and never so many that fewer than two tasks per
    worker remain for the images left (so no worker idles at the end while one finishes)."""

    def __init__(self, parallelism):
        self.most = max(1, defaults.CRASH_TASK_STATES)
        self.least = max(1, min(defaults.CRASH_TASK_MIN_STATES, self.most))
        self.seconds = defaults.CRASH_TASK_SECONDS
        self.parallelism = parallelism
        self.timed_states = 0
        self.timed_seconds = 0.0

    def observe(self, states, seconds):
        if states > 0:
            self.timed_states += states
            self.timed_seconds += seconds

    def next_size(self, left):
        if not self.timed_states:
            n = self.least
        elif self.timed_seconds <= 0:
            n = self.most
        else:
            n = int(self.seconds * self.timed_states / self.timed_seconds)
        n = min(n, -(-left // (2 * self.parallelism)))
        return max(self.least, min(self.most, n))


# --- the coordinator ------------------------------------------------------------------------


def _is_dask_client(executor):
    return all(hasattr(executor, a) for a in ("scatter", "submit", "gather", "cancel"))


class Distributed:
    """Runs the check phase of one exploration on an executor; see the module's docstring."""

    def __init__(self, planner, check, want, payload, executor, workers):
        self.planner = planner
        self.check = check
        self.want = want
        self.payload = payload
        blob = pickled_records(payload, "on an executor, with a checkpoint or a failure database,",
                               "the run is fingerprinted and shipped to workers")
        self.blob = blob
        self.digest = hashlib.sha256(blob).hexdigest()
        self.executor = executor
        self.workers = workers
        self.owned = None  # an executor made here, shut down by close()
        self.forked = None  # ...a process pool whose workers got the payload at start

    def items(self, indices=None):
        """``(index, point, pass, choice vector)`` of the distinct images (or of ``indices``)."""
        pl = self.planner
        if indices is None:
            return [(i, *w) for i, w in zip(pl.new, pl.where, strict=True)]
        pos = {i: n for n, i in enumerate(pl.new)}
        return [(i, *pl.where[pos[i]]) for i in indices]

    def _executor(self):
        if self.executor is not None:
            return self.executor
        if self.workers == 1:  # a checkpoint or failure database without workers: one thread
            from concurrent.futures import ThreadPoolExecutor

            self.owned = ThreadPoolExecutor(1)
            return self.owned
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        prepare = getattr(self.check, "before_fork", None)
        if callable(prepare):  # e.g. the image files' directory, made by this process
            prepare()
        # fork: the checker (a closure, say) and the point log reach each worker once
        self.owned = self.forked = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_pool_init,
            initargs=(self.digest, self.check, self.payload),
        )
        return self.owned

    def run(self, runs, on_done, stop_at_first=False):
        """Check ``runs`` (lists of consecutive items, in order), cut into tasks by a
        :class:`TaskSizer`; ``on_done(task, checked, results)`` per task; False if stopped."""
        ex = self._executor()
        dask = _is_dask_client(ex)
        if ex is self.forked:

            def submit(t):
                return ex.submit(check_task, self.digest, None, None, t, stop_at_first)
        elif dask:
            # the point log and the checker go to every worker once; tasks name them
            payload = ex.scatter(self.blob, broadcast=True, hash=False)
            check = ex.scatter(self.check, broadcast=True, hash=False)
            cf = ex.get_executor(pure=False)  # concurrent.futures futures

            def submit(t):
                return cf.submit(check_task, self.digest, check, payload, t, stop_at_first)
        else:

            def submit(t):
                return ex.submit(check_task, self.digest, self.check, self.blob, t, stop_at_first)

        window = 2 * _parallelism(ex)
        sizer = TaskSizer(_parallelism(ex))
        pending = {}
        runs = [r for r in runs if r]
        left = sum(len(r) for r in runs)
        at = start = 0  # the next task starts at runs[at][start]
        stopped = False
        try:
            while left or pending:
                while left and len(pending) < window and not stopped:
                    run = runs[at]
                    t = run[start : start + sizer.next_size(left)]
                    start += len(t)
                    left -= len(t)
                    if start == len(run):
                        at, start = at + 1, 0
                    pending[submit(t)] = t
                if not pending:
                    break
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: pending[f][0]):
                    t = pending.pop(fut)
                    try:
                        n, results, seconds = fut.result()
                    except BrokenExecutor:
                        raise CrashError(
                            "a worker process died while checking crash states (killed, or the "
                            "checker exited the process); no verdict. Run without workers or "
                            "executor to see why"
                        ) from None
                    sizer.observe(n, seconds)
                    on_done(t, n, results)
                    if results and stop_at_first:
                        stopped = True
                if stopped:
                    for fut in pending:
                        fut.cancel()
                    pending.clear()
                    left = 0
        finally:
            for fut in pending:
                fut.cancel()
            if dask:
                ex.run(close_runners)
            elif ex is not self.forked:
                close_runners()  # threads of this process (a process pool closes at exit)
        return not stopped

    def close(self):
        if self.owned is not None:
            self.owned.shutdown(cancel_futures=True)
            self.owned = self.forked = None


def _parallelism(executor):
    n = getattr(executor, "_max_workers", None)
    if isinstance(n, int) and n > 0:
        return n
    if _is_dask_client(executor):
        try:
            return max(1, sum(executor.nthreads().values()))
        except Exception:
            return 2
    return 2


def plan_states(workload, size, initial, model, spec, max_states, seed, store_points, want=False,
                sections=None):
    """Phase 1: run ``workload``, enumerate its crash states; ``(planner, region warnings)``.
    ``sections(point)`` picks each crash point's engine (as for :func:`explore`)."""
    from .explore import _warnings

    planner = _Planner(size, model, spec, max_states, seed, want)
    planner.store_points = bool(store_points)
    planner.sections = sections
    region = _new_region(size, initial, model, planner.on_point, store_points)
    try:
        workload(region)
        region.finish()
        warnings = _warnings(planner.last_state, region.clean_flushes)
    finally:
        planner.last_state = None
        region.close()
    return planner, warnings


def replay_state(
    workload,
    state,
    *,
    size=None,
    initial=None,
    model="x86",
    engine="auto",
    seed=0,
    store_points=False,
    k=None,
    samples=None,
    sections=None,
):
    """Rebuild crash state number ``state`` of a run: ``(CrashPoint, choice, image bytes)``.

    Any violation found by :func:`~pmemkit.crash.explore` (on a cluster or not)
    replays on one machine from ``(seed, model, engine, state index)``, and the run's
    ``sections`` when it had them.
    """
    from .engines import EngineSpec
    from .explore import _load_initial

    spec = EngineSpec.parse(engine, k, samples)
    initial = _load_initial(initial)
    if size is None:
        size = len(initial) if initial is not None else defaults.CRASH_DEFAULT_SIZE
    if not isinstance(state, int) or state < 0:
        raise InvalidArgumentError(f"state must be a non-negative integer, got {state!r}")
    if sections is not None and not callable(sections):
        raise InvalidArgumentError(
            f"sections must be a callable (CrashPoint) -> engine name, got {sections!r}")
    planner, _ = plan_states(workload, size, initial, model, spec, state + 1, seed, store_points,
                             sections=sections)
    if planner.states <= state:
        raise InvalidArgumentError(
            f"this run has {planner.states} crash states; state {state} does not exist "
            f"(same workload, model, engine and seed as the run that reported it?)"
        )
    runner = _Runner(_accept, (size, model, spec, seed, planner.log, initial, store_points))
    return runner.image_of(state)


def explore_on_executor(
    workload,
    check,
    *,
    size,
    initial,
    model,
    spec,
    max_states,
    seed,
    store_points,
    workers,
    executor,
    checkpoint,
    failures,
    stop_at_first,
    on_states,
    sections=None,
):
    """:func:`~pmemkit.crash.explore` in two phases on an executor (see the module's docstring)."""
    t0 = time.perf_counter()
    check = as_checker(check)
    want = wants_info(check)
    planner, warnings = plan_states(
        workload, size, initial, model, spec, max_states, seed, store_points, want, sections
    )
    payload = (size, model, spec, seed, planner.log, initial, store_points)
    dist = Distributed(planner, check, want, payload, executor, workers)
    run = dist.digest
    about = {
        "model": model,
        "engine": str(spec),
        "seed": seed,
        "max_states": max_states,
    }
    found = {}  # state index -> (choice, message)
    checked = [0]
    ck = db = None
    finished = True
    try:
        stored = {}
        if failures is not None:
            db = FailureDB(failures)
            stored = db.load(run)
            new = set(planner.new)
            known = sorted(i for i in stored if i in new)
            if known:
                n, results = _Runner(check, payload).check_states(dist.items(known), stop_at_first)
                for i, choice, msg in results:
                    found[i] = (choice, msg)
                checked[0] += n
                for i in known[:n]:  # checked again: kept only if they still fail
                    stored.pop(i, None)
        else:
            known = []
        if checkpoint is not None:
            ck = Checkpoint(checkpoint, run, about)
            for results in ck.done.values():
                for i, choice, msg in results:
                    found[i] = (choice, msg)
        skip = set(known)
        finished_ranges = _merged(ck.done) if ck is not None else []
        # runs of consecutive images still to check: a task never spans a skipped image, so a
        # finished task's (first, last) in the checkpoint covers every image between them
        todo, last = [], None
        for n, it in enumerate(dist.items()):
            if it[0] in skip or _in_ranges(it[0], finished_ranges):
                continue
            if last != n - 1:
                todo.append([])
            todo[-1].append(it)
            last = n
        if ck is not None:
            checked[0] += sum(k[2] for k in ck.done)

        def on_done(task, n, results):
            for i, choice, msg in results:
                found[i] = (choice, msg)
            checked[0] += n
            if ck is not None and n == len(task):
                ck.record((task[0][0], task[-1][0], n), results)
            if on_states is not None:
                on_states(checked[0], checked[0], len(planner.log))

        if not (stop_at_first and found):
            finished = dist.run(todo, on_done, stop_at_first)
        else:
            finished = False
    finally:
        dist.close()
        if ck is not None:
            ck.close()
        closer = getattr(check, "close", None)
        if callable(closer):
            closer()
    if db is not None:
        if finished:
            stored = {}
        stored.update((i, msg) for i, (_, msg) in found.items())
        db.save(run, stored, about)
    violations = _violations(payload, found)
    stopped = not planner.complete or not finished
    if not planner.complete:
        warnings.append(
            f"stopped after max_states={max_states} crash states: the verdict is incomplete"
        )
    if not finished:
        warnings.append(
            f"stopped at the first violation after checking {checked[0]} of "
            f"{planner.unique} distinct images: the verdict is incomplete"
        )
    if planner.skipped:
        warnings.append(skipped_warning(planner.skipped))
    if planner.sampled and planner.complete:
        warnings.append(SAMPLED_WARNING)
    return Report(
        violations=violations,
        states_checked=planner.states if finished else checked[0],
        unique_images=planner.unique if finished else checked[0],
        crash_points=planner.points,
        warnings=warnings,
        model=model,
        engine=str(spec),
        engines=dict(planner.engines),
        seed=seed,
        complete=not stopped and not planner.sampled,
        violation_count=len(found),
        elapsed=time.perf_counter() - t0,
        states_possible=planner.possible,
        states_covered=planner.covered if finished else checked[0],
        stopped=stopped,
        stopped_by="max_states" if not planner.complete else "the first violation",
    )


def _merged(done):
    """The ``(first, last)`` ranges of finished tasks ``{(first, last, n): ...}``, merged."""
    out = []
    for a, b in sorted((a, b) for a, b, _ in done):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def _in_ranges(i, ranges):
    """Whether index ``i`` lies in one of the sorted, disjoint ``(first, last)`` ``ranges``."""
    k = bisect.bisect_right(ranges, (i, float("inf"))) - 1
    return k >= 0 and ranges[k][0] <= i <= ranges[k][1]


def _violations(payload, found):
    """Violations (images rebuilt here) of the first kept failing states, in enumeration order."""
    if not found:
        return []
    runner = _Runner(_accept, payload)
    for i in sorted(found)[:MAX_KEPT_VIOLATIONS]:
        choice, msg = found[i]
        runner.violation(i, msg, choice)
    return runner.violations
