"""``explore``: run a workload on a traced region and check every crash image it allows."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

from .. import defaults
from ..errors import CheckFailed, CrashError, InvalidArgumentError, StateLimitReached
from .checkers import as_checker, wants_info
from .engines import (EngineSpec, bounded_vectors, gray, plan, point_rng, random_vectors)
from .model import dimensions, state_count
from .report import CrashPoint, Report, StoreInfo, Violation
from .trace import MODELS, UNIT, TracedRegion, blank_image

#: Violations kept with their images (more are only counted).
MAX_KEPT_VIOLATIONS = 100


def _load_initial(initial):
    if initial is None:
        return None
    if isinstance(initial, (str, os.PathLike)):
        path = Path(initial)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InvalidArgumentError(
                f"cannot read the initial image {str(path)!r}: {exc.strerror or exc}; "
                f"pass bytes or a readable file") from None
    try:
        return bytes(memoryview(initial).cast("B"))
    except TypeError:
        raise InvalidArgumentError(
            f"initial must be bytes-like or a path, got {type(initial).__name__}") from None


class _PointMeta:
    """What the explorer keeps of one crash point (its own copies, never the tracer's buffers)."""

    __slots__ = ("info", "dims", "persisted", "label", "view", "stores", "_batch", "_flush")

    def __init__(self, info, dims, persisted, label, view, stores):
        self.info, self.dims, self.persisted = info, dims, persisted
        self.label, self.view, self.stores = label, view, stores
        self._batch = self._flush = None


# --- worker processes ----------------------------------------------------------------

# The checker of this worker process, installed by the pool's initializer from its arguments.
_worker = {}


def _worker_init(check, want):
    _worker["check"], _worker["want"] = check, want


def _worker_batch(items, info):
    out = []
    check, want = _worker["check"], _worker["want"]
    for i, image in items:
        ok, msg = _run_one(check, memoryview(image).toreadonly(), info, want)
        if not ok:
            out.append((i, msg))
    return out


def _run_one(check, view, info, want):
    try:
        r = check(view, info) if want else check(view)
    except CrashError:
        raise
    except Exception as exc:  # the checker's verdict: inconsistent
        return False, _message(exc)
    if r is False:
        return False, "checker returned False"
    return True, None


def _message(exc):
    if isinstance(exc, CheckFailed):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Scratch:
    """The explorer's own image buffer: the durable image, patched and restored per crash state."""

    def __init__(self, size):
        self.size = size
        self.img = None

    def sync(self, state):
        """Bring the buffer to ``state``'s durable image (only the units that changed)."""
        durable = state.durable
        if self.img is None:
            self.img = blank_image(len(durable))     # zeros; pages take memory once written
        img = self.img
        if state.changed is None:
            img[:] = durable
            return
        for u in state.changed:
            img[u * UNIT:u * UNIT + UNIT] = durable[u * UNIT:u * UNIT + UNIT]


class _Explorer:
    def __init__(self, check, size, model, spec, max_states, seed, workers, progress):
        self.check = as_checker(check)
        self.want = wants_info(self.check)
        self.size = size
        self.model = model
        self.spec = spec
        self.view = "prefix" if spec.name == "prefix" else model
        self.max_states = max_states
        self.seed = seed
        self.workers = workers
        self.store_points = False
        self.states = 0
        self.unique = 0
        self.possible = 0
        self.points = 0
        self.engines = Counter()
        self.seen = set()
        self.violations = []
        self.violation_count = 0
        self.complete = True
        self.pool = None
        self.inflight = []
        self.progress = progress
        self.bar = None
        self.last_progress = 0.0
        self.scratch = _Scratch(size)
        self.last_state = None

    # --- per crash point -----------------------------------------------------------

    def on_point(self, state):
        self.scratch.sync(state)
        self.last_state = state
        if not self.complete:
            return
        info = CrashPoint(self.points, state.kind, state.marker, state.records,
                          state.fences, state.stores)
        self.points += 1
        dims = dimensions(state, self.view)
        count = state_count(dims)
        self.possible += count
        how = plan(self.spec, dims, count)
        self.engines[how.label] += 1
        meta = _PointMeta(info, dims, state.working, how.label, self.view, state.store_log)
        orig = {}           # unit -> durable bytes, saved before the first write to it
        try:
            self._explore_point(state, orig, dims, how, meta)
        except StateLimitReached:
            self.complete = False
        finally:
            if meta._flush is not None:
                meta._flush()
            img = self.scratch.img
            for u, v in orig.items():
                img[u * UNIT:u * UNIT + UNIT] = v
            if not isinstance(meta.persisted, bytes):   # the tracer's buffer: never kept
                meta.persisted = None
        self._tick(force=False)

    def _explore_point(self, state, orig, dims, how, meta):
        img = self.scratch.img
        view = memoryview(img)[:self.size].toreadonly()
        info = meta.info
        want = self.want
        keyed = (len(info.records), info.marker) if want else None
        cur = {}
        hashes = {"h": state.durable_hash}

        def write(patch):
            for u, v in patch:
                if u not in orig:
                    orig[u] = bytes(img[u * UNIT:u * UNIT + UNIT])
                img[u * UNIT:u * UNIT + UNIT] = v

        def set_dim(j, a):
            old = cur.get(j, 0)
            if old == a:
                return
            d = dims[j]
            h = hashes["h"]
            if old:
                h ^= d[old - 1].delta
            if a:
                h ^= d[a - 1].delta
            hashes["h"] = h
            if a == old + 1 and d[a - 1].step is not None:
                write(d[a - 1].step)
            elif a == old - 1 and d[old - 1].unstep is not None:
                write(d[old - 1].unstep)
            else:
                if old:
                    for u, _ in d[old - 1].patch:
                        img[u * UNIT:u * UNIT + UNIT] = orig[u]
                if a:
                    write(d[a - 1].patch)
            if a:
                cur[j] = a
            else:
                cur.pop(j, None)

        def goto(vec):
            for j in [j for j, a in cur.items() if vec.get(j, 0) != a]:
                set_dim(j, 0)
            for j, a in vec.items():
                if cur.get(j, 0) != a:
                    set_dim(j, a)

        visit = self._visitor(view, info, keyed, meta, cur, hashes)
        if how.kind == "exhaustive":
            visit()
            radices = [len(d) + 1 for d in dims]
            for j, a in gray(radices):
                set_dim(j, a)
                visit()
        else:
            if how.kind == "bounded":
                for vec in bounded_vectors(dims, how.k):
                    goto(vec)
                    visit()
            if how.samples:
                rng = point_rng(self.seed, meta.info.index)
                for vec in random_vectors(dims, how.samples, rng):
                    goto(vec)
                    visit()
        goto({})

    def _visitor(self, view, info, keyed, meta, cur, hashes):
        seen = self.seen
        check = self.check
        want = self.want
        max_states = self.max_states
        pooled = self.workers > 1
        batch = []
        meta._batch = batch

        def visit():
            if max_states is not None and self.states >= max_states:
                raise StateLimitReached
            self.states += 1
            h = hashes["h"]
            key = h if keyed is None else (h, keyed)
            if key in seen:
                return
            seen.add(key)
            self.unique += 1
            if pooled:
                batch.append((dict(cur), bytes(view)))
                if len(batch) >= defaults.CRASH_BATCH:
                    self._submit(meta, batch[:])
                    batch.clear()
                return
            try:
                r = check(view, info) if want else check(view)
            except CrashError:
                raise
            except Exception as exc:
                self._violation(meta, dict(cur), bytes(view), _message(exc))
                return
            if r is False:
                self._violation(meta, dict(cur), bytes(view), "checker returned False")
            if self.bar is not None and self.unique % 512 == 0:
                self._tick(force=False)

        def flush_batch():
            if batch:
                self._submit(meta, batch[:])
                batch.clear()

        meta._flush = flush_batch
        return visit

    # --- violations --------------------------------------------------------------------

    def _violation(self, meta, choice, image, message):
        self.violation_count += 1
        if len(self.violations) >= MAX_KEPT_VIOLATIONS:
            return
        durable = set()
        for j, a in choice.items():
            durable.update(meta.dims[j][a - 1].stores)
        pending = set()
        for d in meta.dims:
            for alt in d:
                pending.update(alt.stores)

        def info(i):
            s = meta.stores[i]
            return StoreInfo(s.index, s.offset, len(s.data), s.via, s.marker)

        persisted = self._persisted(meta)
        self.violations.append(Violation(
            point=meta.info, message=message, choice=choice, view=meta.view, engine=meta.label,
            seed=self.seed, durable_stores=[info(i) for i in sorted(durable)],
            lost_stores=[info(i) for i in sorted(pending - durable)],
            image=image, persisted=persisted, model=self.model, store_points=self.store_points))

    # --- process pool ------------------------------------------------------------------

    def _persisted(self, meta):
        """The fully persisted image of ``meta``'s point, copied from the tracer on first need."""
        if not isinstance(meta.persisted, bytes):
            meta.persisted = bytes(meta.persisted[:self.size])
        return meta.persisted

    def _submit(self, meta, batch):
        if self.pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # fork: the checker (a closure, say) reaches the workers as the initializer's argument
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                            initializer=_worker_init, initargs=(self.check, self.want))
        self._persisted(meta)
        items = [(i, image) for i, (_, image) in enumerate(batch)]
        fut = self.pool.submit(_worker_batch, items, meta.info)
        self.inflight.append((fut, meta, batch))
        while len(self.inflight) > 2 * self.workers:
            self._collect(self.inflight.pop(0))

    def _collect(self, entry):
        fut, meta, batch = entry
        for i, msg in fut.result():
            choice, image = batch[i]
            self._violation(meta, choice, image, msg)
        self._tick(force=False)

    # --- progress ----------------------------------------------------------------------

    def _tick(self, force):
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self.last_progress < 0.1:
            return
        self.last_progress = now
        if callable(self.progress):
            self.progress(self.states, self.unique, self.points)
        elif self.bar is not None:
            self.bar.n = self.states
            self.bar.set_postfix(unique=self.unique, points=self.points, refresh=False)
            self.bar.refresh()

    def start_progress(self):
        if self.progress == "auto":
            if sys.stderr.isatty():
                try:
                    from tqdm import tqdm
                except ImportError:  # pragma: no cover - tqdm is a dependency
                    self.progress = None
                    return
                self.bar = tqdm(desc="crash states", unit=" states", file=sys.stderr, leave=False)
                self.progress = "bar"
            else:
                self.progress = None

    def close(self):
        try:
            if self.pool is not None:
                try:
                    while self.inflight:
                        self._collect(self.inflight.pop(0))
                finally:
                    self.pool.shutdown(cancel_futures=True)
                    self.pool = None
            self._tick(force=True)
        finally:    # a failing checker must not leak the bar or a persistent checker process
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            closer = getattr(self.check, "close", None)
            if callable(closer):
                closer()


def _warnings(state, clean_flushes):
    """Warnings about the end state of a workload (stores never made durable, redundant flushes)."""
    out = []
    if state is None:
        return out
    pending = state.pending_stores()
    unflushed = set(state.unflushed_stores())
    never = [i for i in pending if i in unflushed]
    flushed_unfenced = [i for i in pending if i not in unflushed]
    log = state.store_log

    def fmt(ids):
        shown = ", ".join(
            f"#{i} [{log[i].offset:#x}, +{len(log[i].data)}) via {log[i].via}"
            + (f" (marker {log[i].marker!r})" if log[i].marker else "")
            for i in ids[:5])
        return shown + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")

    if never:
        out.append(f"{len(never)} store(s) never flushed, so never made durable by the end: {fmt(never)}")
    if flushed_unfenced:
        out.append(f"{len(flushed_unfenced)} store(s) flushed with no later fence, so not durable by the end: "
                   f"{fmt(flushed_unfenced)}")
    if clean_flushes:
        n = len(clean_flushes)
        shown = ", ".join(f"[{o:#x}, +{ln})" + (f" (marker {m!r})" if m else "")
                          for o, ln, m in clean_flushes[:5])
        out.append(f"{n} flush(es) of ranges with nothing pending (redundant): {shown}"
                   + (f" and {n - 5} more" if n > 5 else ""))
    return out


def explore(workload, check, size=None, initial=None, model="x86", engine="auto",
            max_states=None, seed=0, workers=1, *, store_points=False, k=None, samples=None,
            progress="auto"):
    """Run ``workload(pm)`` on a traced region; check every crash image the model allows.

    ``check(image)`` or ``check(image, point)`` (a :class:`CrashPoint`) returns
    False or raises for an inconsistent image; an argv list runs a program with
    the image file's path appended (exit 0 = consistent); a
    :class:`PersistentChecker` checks many images in one process.

    ``size`` defaults to ``len(initial)`` or 4096. ``engine`` is ``"auto"``,
    ``"exhaustive"``, ``"bounded"`` (``k``), ``"random"`` (``samples``) or
    ``"prefix"``; ``"bounded:3"``/``"random:500"`` also work. ``store_points``
    adds a crash point after every store. ``progress`` is ``"auto"`` (a bar on a
    terminal), ``None``, or a callable ``(states, unique_images, crash_points)``.
    """
    if not callable(workload):
        raise InvalidArgumentError(f"workload must be callable (it receives the region), got {workload!r}")
    if model not in MODELS:
        raise InvalidArgumentError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    spec = EngineSpec.parse(engine, k, samples)
    if max_states is not None and (not isinstance(max_states, int) or max_states < 1):
        raise InvalidArgumentError(f"max_states must be a positive integer or None, got {max_states!r}")
    if not isinstance(workers, int) or workers < 1:
        raise InvalidArgumentError(f"workers must be a positive integer, got {workers!r}")
    if not isinstance(seed, int):
        raise InvalidArgumentError(f"seed must be an integer, got {seed!r}")
    initial = _load_initial(initial)
    if size is None:
        size = len(initial) if initial is not None else defaults.CRASH_DEFAULT_SIZE
    ex = _Explorer(check, size, model, spec, max_states, seed, workers, progress)
    ex.store_points = bool(store_points)
    t0 = time.perf_counter()
    region = TracedRegion(size, initial, model=model, on_crash_point=ex.on_point,
                          store_points=store_points, keep_trace=False)
    ex.start_progress()
    try:
        try:
            workload(region)
            region.finish()
        finally:
            ex.close()
        elapsed = time.perf_counter() - t0
        warnings = _warnings(ex.last_state, region.clean_flushes)
    finally:
        ex.last_state = None
        region.close()
    if not ex.complete:
        warnings.append(f"stopped after max_states={max_states} crash states: the verdict is incomplete")
    return Report(violations=ex.violations, states_checked=ex.states, unique_images=ex.unique,
                  crash_points=ex.points, warnings=warnings, model=model, engine=str(spec),
                  engines=dict(ex.engines), seed=seed, complete=ex.complete,
                  violation_count=ex.violation_count, elapsed=elapsed, states_possible=ex.possible)
