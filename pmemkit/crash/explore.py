"""The in-process explorer: run a workload on a traced region and check every crash image it
allows (the public entry point, :func:`pmemkit.crash.explore`, is in :mod:`pmemkit.crash.api`)."""

from __future__ import annotations

import mmap
import os
import pickle
import sys
import time
from collections import Counter
from pathlib import Path

from .. import defaults
from ..errors import (CheckFailed, CrashError, InvalidArgumentError, StateLimitReached,
                      StateSpaceTooLarge)
from .checkers import PAGE, ImageChanges, as_checker, takes_changes, wants_info
from .engines import (EngineSpec, bounded_vectors, gray, plan, point_rng, random_vectors)
from .model import line_images, spaces, total_count
from .report import CrashPoint, SparseImage, StoreInfo, Violation
from .trace import MODELS, UNIT, TracedRegion, blank_image

#: Violations kept with their images (more are only counted).
MAX_KEPT_VIOLATIONS = 100
#: A violation's image is compared whole with the initial image, rather than on the units
#: written, once more than one unit in this many was written (comparing is then cheaper).
_LISTED_UNITS_AT_MOST = 32


def image_base(initial, size):
    """The image kept violations are kept against: the run's ``initial`` image padded with zeros
    to ``size`` bytes (the same object when it has that size; None for none)."""
    if initial is None or len(initial) == size:
        return initial
    return bytes(initial).ljust(size, b"\0")


def _pending_units(lines):
    """The units of a crash point's pending events (``lines`` as in its state)."""
    return {ev.unit for _, events, _ in lines for ev in events}


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
    """What the explorer keeps of one space of one crash point (its own copies, never the
    tracer's buffers)."""

    __slots__ = ("info", "space", "index", "persisted", "label", "stores", "lines", "olds")

    def __init__(self, info, space, index, persisted, label, stores, lines, olds):
        self.info, self.space, self.index, self.persisted = info, space, index, persisted
        self.label, self.stores, self.lines, self.olds = label, stores, lines, olds


def _run_one(check, view, info, want, changes=None):
    """``(ok, message)``: the checker's verdict on one image (an exception it raises, other than
    a :class:`CrashError`, is the verdict "inconsistent"). ``changes`` (an
    :class:`~pmemkit.crash.checkers.ImageChanges`) goes to checkers that take it."""
    try:
        if changes is not None:
            r = check(view, info, changes=changes) if want else check(view, changes=changes)
        else:
            r = check(view, info) if want else check(view)
    except CrashError:
        raise
    except Exception as exc:  # the checker's verdict: inconsistent
        return False, _message(exc)
    return _verdict(r)


def _verdict(r):
    """``(ok, message)`` for a checker's return value; anything but None/True/False is an error."""
    if r is None or r is True:
        return True, None
    if r is False:
        return False, "checker returned False"
    raise CrashError(
        f"the checker returned {r!r} ({type(r).__name__}); a checker returns None or True for "
        f"a consistent image and False (or raises) for an inconsistent one")


def _end_durable(meta, choice):
    """Stores durable in an ``x86-end`` image: every store of a unit left at its final value,
    and those that produced the value a unit was taken back to."""
    dims = meta.space.dims
    taken = {dims[j][a - 1].patch[0][0] for j, a in choice.items()}
    durable = {i for j, a in choice.items() for i in dims[j][a - 1].stores}
    durable.update(ev.store for _, events, _ in meta.lines for ev in events if ev.unit not in taken)
    return durable


def _reordered_lines(meta, image):
    """Cache lines (index) whose content in ``image`` real x86 hardware cannot leave:
    it needs stores to one line to persist out of program order (x86 model only)."""
    if meta.olds is None:
        return ()
    out = []
    for li, events, _ in meta.lines:
        units = {ev.unit for ev in events}
        olds = {u: meta.olds[u] for u in units}
        got = frozenset((u, bytes(image[u * UNIT:u * UNIT + UNIT])) for u in units
                        if image[u * UNIT:u * UNIT + UNIT] != olds[u])
        if got not in line_images(events, olds):
            out.append(li)
    return tuple(out)


def require_explorable(count, point=None):
    """Refuse an exhaustive exploration of ``count`` crash states that could not finish.

    Raises :class:`~pmemkit.errors.StateSpaceTooLarge` when ``count`` exceeds
    ``defaults.CRASH_EXHAUSTIVE_MAX_STATES``; callers that explore exhaustively
    (``explore(engine="exhaustive")``, the BTT crash suite) call it up front.
    """
    limit = defaults.CRASH_EXHAUSTIVE_MAX_STATES
    if count > limit:
        where = f" at {point.describe()}" if point is not None else ""
        raise StateSpaceTooLarge(
            f"engine 'exhaustive' refuses {_fmt_count(count)} crash states{where}: more than "
            f"{limit:,} cannot be checked in any reasonable time. Use engine='auto' (exhaustive "
            f"where it can be, sampled and reported incomplete elsewhere), 'bounded:K', or give "
            f"max_states to cut the run short (the report then says it is incomplete)",
            count=count, limit=limit)


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _new_region(size, initial, model, on_point, store_points):
    """A TracedRegion for exploration; a size this machine cannot map is an InvalidArgumentError."""
    try:
        return TracedRegion(size, initial, model=model, on_crash_point=on_point,
                            store_points=store_points, keep_trace=False)
    except (MemoryError, OverflowError, OSError) as exc:
        raise InvalidArgumentError(
            f"cannot allocate a traced region of {size:,} bytes ({type(exc).__name__}: {exc}); "
            f"the region, its durable image and the explorer's image are kept in memory: "
            f"explore a smaller region") from None


def state_space(workload, size=None, initial=None, model="x86", *, store_points=False,
                engine="auto"):
    """Run ``workload`` without checking anything: the crash states it has under ``model``.

    Returns ``(crash_points, largest, total)``: the number of crash points, the
    most states at one point and the sum over all points. A caller about to
    explore exhaustively can refuse up front with :func:`require_explorable`.
    """
    if model not in MODELS:
        raise InvalidArgumentError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    view = "prefix" if EngineSpec.parse(engine).name == "prefix" else model
    initial = _load_initial(initial)
    if size is None:
        size = len(initial) if initial is not None else defaults.CRASH_DEFAULT_SIZE
    counts = []
    region = _new_region(size, initial, model, lambda state: counts.append(
        total_count(spaces(state, view))), store_points)
    try:
        workload(region)
        region.finish()
    finally:
        region.close()
    return len(counts), max(counts, default=0), sum(counts)


def _fmt_count(n):
    return f"{n:,}" if n < 10 ** 15 else f"about 2^{n.bit_length() - 1}"


def _message(exc):
    if isinstance(exc, CheckFailed):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _NotedImage(mmap.mmap):
    """Zeroed private memory that notes which pages each item assignment (``img[a:b] = v``)
    changes; any other assignment counts as changing every page. Writes through a memoryview
    are not seen: the explorer writes its image by item assignment only."""

    def __new__(cls, size):
        self = super().__new__(cls, -1, size, flags=mmap.MAP_PRIVATE)
        self.pages = set()
        self.every = True
        return self

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        if self.every:
            return
        start, stop = getattr(key, "start", None), getattr(key, "stop", None)
        if (type(start) is not int or type(stop) is not int or key.step is not None
                or start < 0 or stop < 0):
            self.every = True
        elif stop > start:
            first, last = start // PAGE, (stop - 1) // PAGE
            if first == last:
                self.pages.add(first)
            else:
                self.pages.update(range(first, last + 1))

    def take(self):
        """The pages changed since the last take (None: every page may have)."""
        pages = None if self.every else frozenset(self.pages)
        self.pages = set()
        self.every = False
        return pages


class _Scratch:
    """The explorer's own image buffer: the durable image, patched and restored per crash state.

    With ``noted`` it notes the pages that change (in images of at least
    :data:`~pmemkit.defaults.CRASH_NOTED_IMAGE_BYTES`), so that a checker that takes
    :class:`~pmemkit.crash.checkers.ImageChanges` rewrites only those pages of its image file.
    """

    def __init__(self, size, noted=False):
        self.size = size
        self.img = None
        self.noted = noted
        self.seq = 0

    def blank(self, size):
        """A new zeroed buffer of ``size`` bytes (pages take memory once written)."""
        if self.noted and size >= defaults.CRASH_NOTED_IMAGE_BYTES:
            return _NotedImage(size)
        return blank_image(size)

    def changes(self):
        """The :class:`~pmemkit.crash.checkers.ImageChanges` of the image as it is now since the
        last call, or None when the buffer notes nothing."""
        img = self.img
        if not isinstance(img, _NotedImage):
            return None
        self.seq += 1
        return ImageChanges(self, self.seq, img.take())

    def sync(self, state):
        """Bring the buffer to ``state``'s durable image (only the units that changed)."""
        durable = state.durable
        if self.img is None:
            self.img = self.blank(len(durable))
        img = self.img
        if state.changed is None:
            img[:] = durable
            return
        for u in state.changed:
            img[u * UNIT:u * UNIT + UNIT] = durable[u * UNIT:u * UNIT + UNIT]


class _Explorer:
    def __init__(self, check, size, model, spec, max_states, seed, progress, on_states):
        self.check = as_checker(check)
        self.want = wants_info(self.check)
        self.size = size
        self.model = model
        self.spec = spec
        self.view = "prefix" if spec.name == "prefix" else model
        self.max_states = max_states
        self.seed = seed
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
        self.progress = progress
        self.on_states = on_states
        self.bar = None
        self.last_progress = 0.0
        # noted: for a checker that takes the pages changed between images
        self.scratch = _Scratch(size, noted=takes_changes(self.check))
        self.base = None            # the run's initial image (image_base): violations keep
        #                             their images as their differences from it
        self.last_state = None
        self.pickled_point = None   # the last crash point whose records were checked picklable
        self.covered = 0            # distinct crash states visited (of self.possible)
        self.sampled = False        # some point was sampled, not explored completely
        self.sections = None        # callable(CrashPoint) -> engine name, or None: leave unchecked
        self.skipped = 0            # crash points left unchecked on purpose (sections)

    # --- per crash point -----------------------------------------------------------

    def _point_engine(self, info):
        """(engine spec, view) for crash point ``info``; None to leave it unchecked ("none")."""
        if self.sections is None:
            return self.spec, self.view
        name = self.sections(info)
        if name is None:
            return None
        spec = EngineSpec.parse(name)
        return spec, ("prefix" if spec.name == "prefix" else self.model)

    def _changed_units(self, state):
        """``(units, UNIT, size)`` for the crash point's ``changed_ranges``, when the checker
        sees the point: the durable units written so far and the units of the pending stores."""
        if not self.want:
            return None
        return frozenset(state.touched | _pending_units(state.lines)), UNIT, self.size

    def on_point(self, state):
        self.scratch.sync(state)
        self.last_state = state
        if not self.complete:
            return
        info = CrashPoint(self.points, state.kind, state.marker, state.records,
                          state.fences, state.stores, self._changed_units(state))
        self.points += 1
        chosen = self._point_engine(info)
        if chosen is None:
            self.skipped += 1
            return
        spec, view = chosen
        main = spaces(state, "x86-end" if spec.name == "in-order" else view)
        count = total_count(main)
        self.possible += count
        passes = [(sp, i, plan(spec, sp.dims, sp.count())) for i, sp in enumerate(main)]
        if spec.name == "exhaustive" and self.max_states is None:
            require_explorable(count, info)
        point_complete = all(p.complete for _, _, p in passes)
        label = "+".join(dict.fromkeys(p.label for _, _, p in passes))
        if view == "x86" and spec.name != "in-order" and not point_complete:
            # x86's images include x86-line's and those "k units short of fully persisted":
            # explore both as well, so the default model never finds less than x86-line
            for extra in ("x86-line", "x86-end"):
                for i, sp in enumerate(spaces(state, extra)):
                    passes.append((sp, i, plan(spec, sp.dims, sp.count())))
            label += " + x86-line images + bounded from the persisted end"
        self.engines[label] += 1
        olds = None
        if self.model == "x86":     # kept to tell whether a violation needs same-line reordering
            olds = {ev.unit: bytes(state.durable[ev.unit * UNIT:ev.unit * UNIT + UNIT])
                    for _, events, _ in state.lines for ev in events}
        orig = {}           # unit -> durable bytes, saved before the first write to it
        images = None if point_complete else set()
        states_before = self.states
        metas = []
        try:
            for sp, index, space_plan in passes:
                meta = _PointMeta(info, sp, index, state.working, space_plan.label, state.store_log,
                                  state.lines, olds)
                metas.append(meta)
                self._explore_space(state, orig, sp, space_plan, meta, images)
        except StateLimitReached:
            self.complete = False
            if images is None:      # exhaustive passes visit distinct states
                images = range(self.states - states_before)
            point_complete = False
        finally:
            img = self.scratch.img
            for u, v in orig.items():
                img[u * UNIT:u * UNIT + UNIT] = v
            for meta in metas:
                if not isinstance(meta.persisted, SparseImage):
                    meta.persisted = None   # the tracer's buffer: never kept
        if not point_complete and self.complete and len(images) >= count:
            # as many distinct images as the point has states: the samples reached every state
            point_complete = True
        if point_complete:
            self.covered += count
        else:
            self.sampled |= self.complete
            self.covered += min(len(images), count)
        self._tick(force=False)

    def _explore_space(self, state, orig, space, space_plan, meta, images):
        img = self.scratch.img
        view = memoryview(img)[:self.size].toreadonly()
        dims = space.dims
        cur = {}
        floor = {}          # unit -> its value in the base (units not in it: orig)
        hashes = {"h": state.durable_hash ^ space.base_delta}

        def write(patch):
            for u, v in patch:
                if u not in orig:
                    orig[u] = bytes(img[u * UNIT:u * UNIT + UNIT])
                img[u * UNIT:u * UNIT + UNIT] = v

        def restore(patch):
            for u, _ in patch:
                v = floor.get(u)
                img[u * UNIT:u * UNIT + UNIT] = orig[u] if v is None else v

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
                    if floor:
                        restore(d[old - 1].patch)
                    else:
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

        write(space.base)
        floor.update(space.base)
        visit = self._visitor(view, meta, cur, hashes, images)
        if space_plan.kind == "exhaustive":
            visit()
            radices = [len(d) + 1 for d in dims]
            for j, a in gray(radices):
                set_dim(j, a)
                visit()
        else:
            if space_plan.kind == "bounded":
                for vec in bounded_vectors(dims, space_plan.k):
                    goto(vec)
                    visit()
            if space_plan.samples:
                rng = point_rng(self.seed, meta.info.index)
                for vec in random_vectors(dims, space_plan.samples, rng):
                    goto(vec)
                    visit()
        goto({})
        for u, _ in space.base:
            img[u * UNIT:u * UNIT + UNIT] = orig[u]

    def _visitor(self, view, meta, cur, hashes, images):
        seen = self.seen
        check = self.check
        want = self.want
        info = meta.info
        # a checker given the crash point sees which point it is: the point is part of the key
        keyed = info.index if want else None
        max_states = self.max_states
        note = self.scratch.changes if self.scratch.noted else None

        def visit():
            if max_states is not None and self.states >= max_states:
                raise StateLimitReached
            self.states += 1
            h = hashes["h"]
            if images is not None:
                images.add(h)
            key = h if keyed is None else (h, keyed)
            if key in seen:
                return
            seen.add(key)
            self.unique += 1
            ok, msg = _run_one(check, view, info, want, note and note())
            if not ok:
                self._violation(meta, dict(cur), view, msg)
            if self.bar is not None and self.unique % 512 == 0:
                self._tick(force=False)

        return visit

    # --- violations --------------------------------------------------------------------

    def _written(self):
        """The durable units written since the start, at the crash point being explored."""
        return self.last_state.touched

    def _may_differ(self, meta):
        """The units where an image of ``meta``'s point may differ from the initial image: the
        durable ones written so far and the pending ones (None when so many were written that
        comparing the whole image is cheaper)."""
        written = self._written()
        if len(written) * _LISTED_UNITS_AT_MOST > self.size // UNIT:
            return None
        return written | _pending_units(meta.lines)

    def _violation(self, meta, choice, image, message):
        """Keep a violation of ``image`` (a buffer, or a :class:`SparseImage`) of the crash point
        being explored (``meta``) as its differences from the initial image: only the units
        :meth:`_may_differ` names can differ (None: the image is compared whole)."""
        self.violation_count += 1
        if len(self.violations) >= MAX_KEPT_VIOLATIONS:
            return
        units = self._may_differ(meta)
        space = meta.space
        durable = set(space.base_stores)
        for j, a in choice.items():
            durable.update(space.dims[j][a - 1].stores)
        if space.view == "x86-end":     # the base made every store durable; the choice took some
            durable = _end_durable(meta, choice)
        pending = set(meta.stores)

        def info(i):
            s = meta.stores[i]
            return StoreInfo(s.index, s.offset, len(s.data), s.via, s.marker)

        reordered = _reordered_lines(meta, image)
        if not isinstance(image, SparseImage):
            image = SparseImage.of(image, self.base, self.size, units, UNIT)
        persisted = self._persisted(meta, units)
        self.violations.append(Violation(
            point=meta.info, message=message, choice=choice, view=space.view, engine=meta.label,
            seed=self.seed, durable_stores=[info(i) for i in sorted(durable)],
            lost_stores=[info(i) for i in sorted(pending - durable)],
            image=image, persisted=persisted, model=self.model, store_points=self.store_points,
            space=meta.index, reordered_lines=reordered))

    def _persisted(self, meta, units):
        """The fully persisted image of ``meta``'s point, kept (as a :class:`SparseImage`) from
        the tracer's on first need; ``units`` as for :meth:`_violation`."""
        persisted = meta.persisted
        if isinstance(persisted, SparseImage):
            return persisted
        meta.persisted = SparseImage.of(persisted, self.base, self.size, units, UNIT)
        return meta.persisted

    # --- progress ----------------------------------------------------------------------

    def _tick(self, force):
        if self.on_states is None and self.bar is None:
            return
        now = time.monotonic()
        if not force and now - self.last_progress < 0.1:
            return
        self.last_progress = now
        if self.on_states is not None:
            self.on_states(self.states, self.unique, self.points)
        if self.bar is not None:
            self.bar.n = self.states
            self.bar.set_postfix(unique=self.unique, points=self.points, refresh=False)
            self.bar.refresh()

    def start_progress(self):
        """Open the progress bar asked for (``progress=True``, or ``"auto"`` on a terminal)."""
        if not self.progress or (self.progress == "auto" and not sys.stderr.isatty()):
            return
        try:
            from tqdm import tqdm
        except ImportError:
            if self.progress == "auto":
                return
            raise InvalidArgumentError(
                "progress=True draws a bar with tqdm, which is not installed: "
                "pip install tqdm (or pmemkit[cli]), or pass progress=False") from None
        self.bar = tqdm(desc="crash states", unit=" states", file=sys.stderr, leave=False)

    def close(self):
        try:
            self._tick(force=True)
        finally:    # a failing checker must not leak the bar or a persistent checker process
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            closer = getattr(self.check, "close", None)
            if callable(closer):
                closer()


def pickled_records(value, when, why, instead=""):
    """``pickle.dumps(value)`` of a value holding what the workload gave ``pm.record()``: one that
    cannot be pickled is :class:`InvalidArgumentError` saying ``when`` it must be and ``why``."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - any pickling failure means the same
        raise InvalidArgumentError(
            f"{when} every value given to pm.record() must be picklable ({why}): "
            f"{type(exc).__name__}: {exc}; record plain data (bytes, numbers, strings, tuples)"
            f"{instead}") from None


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
        out.append(f"{len(never)} store(s) never flushed, so never made durable by the end: "
                   f"{fmt(never)}")
    if flushed_unfenced:
        out.append(f"{len(flushed_unfenced)} store(s) flushed with no later fence, "
                   f"so not durable by the end: "
                   f"{fmt(flushed_unfenced)}")
    if clean_flushes:
        n = len(clean_flushes)
        shown = ", ".join(f"[{o:#x}, +{ln})" + (f" (marker {m!r})" if m else "")
                          for o, ln, m in clean_flushes[:5])
        out.append(f"{n} flush(es) of ranges with nothing pending (redundant): {shown}"
                   + (f" and {n - 5} more" if n > 5 else ""))
    return out
