"""The traced region: a :class:`~pmemkit.region.Region` that records persistence.

:class:`TracedRegion` keeps:

* the *working* copy - what loads see, what ``buffer``/``array()`` views alias;
* the *durable* image - what is guaranteed to survive a crash;
* what is needed to discover stores made through ``buffer``/``array()`` views:
  with the native tracker (:mod:`pmemkit.crash._dirty`), once a view is handed
  out the working copy's pages are write-protected, the first write to a page
  saves its old contents, and each flush and fence compares only the pages
  written since the last look; without it, a *shadow* copy of the whole region
  is diffed at every flush and fence.

The working copy and the durable image are anonymous mappings: pages never
written take no memory, so the cost follows what the workload writes.

Every store becomes one *event* per aligned 8-byte unit it touches, filed under
its 64-byte cache line. A flush marks the events of its lines as flushed; a
fence makes flushed events durable (model ``x86``/``x86-line``) or every event
durable (``eadr``). Before each fence, and at the end, the region hands an
immutable :class:`PendingState` (durable bytes, pending events, records,
marker, counters) to a crash-point callback, which enumerates the crash images
in memory of its own; the callback never touches the region's buffers.
"""

from __future__ import annotations

import mmap
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ..defaults import CRASH_MODELS
from ..errors import InvalidArgumentError
from ..ranges import index_runs
from ..region import CACHE_LINE, Region, as_int, byte_value, bytes_view, check_range

try:
    from ._dirty import Tracker
except ImportError:  # pragma: no cover - built by setup.py; without it, whole-region diffs
    Tracker = None

UNIT = 8
UNITS_PER_LINE = CACHE_LINE // UNIT

MODELS = CRASH_MODELS

# Fingerprint of an image: XOR over its 8-byte units of a 64-bit mix of (unit
# index, unit value), twice with different keys (128 bits). Linear in the units,
# so a crash image's fingerprint is the durable image's plus per-unit deltas.
_M64 = (1 << 64) - 1
_KEYS = (0x9E3779B97F4A7C15, 0xD1B54A32D192ED03)


def _mix_py(x):
    x &= _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def unit_hash(u, value):
    """128-bit fingerprint contribution of unit ``u`` holding ``value`` (8 bytes)."""
    v = int.from_bytes(value, "little")
    a = _mix_py(v ^ _mix_py(u * 2 + 1 + _KEYS[0]))
    b = _mix_py(v ^ _mix_py(u * 2 + 1 + _KEYS[1]))
    return (a << 64) | b


def _mix_np(x):
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def image_hash(image):
    """Fingerprint of a whole image (length a multiple of 8), equal to XOR of unit_hash."""
    vals = np.frombuffer(image, dtype="<u8")
    idx = np.arange(len(vals), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    out = 0
    with np.errstate(over="ignore"):
        for key in _KEYS:
            h = _mix_np(vals ^ _mix_np(idx + np.uint64(key)))
            out = (out << 64) | int(np.bitwise_xor.reduce(h)) if len(h) else (out << 64)
    return out


def blank_image(size):
    """Zeroed private memory that takes space only where it is written."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)


class Event:
    """One store's effect on one 8-byte unit.

    ``value`` is the whole unit right after the store. Events of one ``group``
    (stores whose order was not observed) may have happened in any order; a
    group holds at most one event per unit.
    """

    __slots__ = ("seq", "unit", "value", "store", "group")

    def __init__(self, seq, unit, value, store, group=None):
        self.seq = seq          # global program order of the event (within a group: address order)
        self.unit = unit        # unit index (offset // 8)
        self.value = value      # 8 bytes: the whole unit after the store
        self.store = store      # index of the store operation in the trace
        self.group = group      # None, or the store group (unknown order inside it)

    def __repr__(self):
        g = "" if self.group is None else f", group={self.group}"
        return (f"Event(seq={self.seq}, unit={self.unit}, value={self.value.hex()}, "
                f"store={self.store}{g})")


class _Line:
    __slots__ = ("events", "flushed")

    def __init__(self):
        self.events = []    # pending events of this cache line, in program order
        self.flushed = 0    # events[:flushed] become durable at the next fence


class Store:
    """A recorded store operation.

    ``via`` is ``"write"`` (ordered), ``"view"`` (found changed in a
    ``buffer``/``array()`` view) or ``"unordered"`` (written inside
    :meth:`TracedRegion.unordered`); the last two carry the ``group`` of stores
    whose order was not observed.
    """

    __slots__ = ("index", "offset", "data", "via", "marker", "group")

    def __init__(self, index, offset, data, via, marker, group=None):
        self.index, self.offset, self.data, self.via, self.marker = index, offset, data, via, marker
        self.group = group

    def __repr__(self):
        return (f"Store(#{self.index}, offset={self.offset:#x}, size={len(self.data)}, "
                f"via={self.via})")


@dataclass(frozen=True, eq=False)
class PendingState:
    """What a crash at one point can leave: handed to the crash-point callback.

    ``durable`` and ``working`` are read-only views of the region's durable image
    and of what loads see (every pending store durable); like ``lines`` they
    describe this crash point and are valid only during the callback (copy what
    must outlive it). ``changed`` lists the units of ``durable`` that changed
    since the previous crash point (at the first: since an all-zero image, or
    ``None`` - all - when the region had initial contents), so a consumer can
    keep its own copy of the durable image up to date without re-reading it.
    ``touched`` is the set of every unit of ``durable`` written since the region
    was made (outside them ``durable`` still holds the initial contents; the
    region's own set, like the views valid only during the callback).
    ``lines`` holds ``(line index, pending events in program order, number of
    events a fence would make durable)`` for each line with pending events, by
    line index; ``store_log`` maps the index of every store with a pending event
    to its :class:`Store`.
    """

    index: int
    kind: str
    marker: str | None
    records: tuple
    fences: int
    stores: int
    durable: memoryview
    durable_hash: int
    changed: tuple | None
    touched: set
    lines: tuple
    store_log: MappingProxyType
    working: memoryview

    def pending_events(self):
        """Pending events in program order."""
        evs = [ev for _, events, _ in self.lines for ev in events]
        evs.sort(key=lambda ev: ev.seq)
        return evs

    def pending_stores(self):
        """Indices of the stores with a pending event, ascending."""
        return sorted(self.store_log)

    def unflushed_stores(self):
        """Stores with an event that no flush has covered yet (pmemcheck's 'not flushed')."""
        return sorted({ev.store for _, events, flushed in self.lines for ev in events[flushed:]})


class TracedRegion(Region):
    """A region whose stores, flushes and fences are recorded for crash exploration.

    ``size`` bytes (or the length of ``initial``), initially holding ``initial``
    (durable from the start). ``on_crash_point(state)`` receives a
    :class:`PendingState` before every fence (``kind="fence"``), after every
    store when ``store_points`` is true (``"store"``), and from :meth:`finish`
    (``"end"``).

    Besides the Region interface it offers :meth:`record` (a log the checker
    sees), :attr:`trace` (the operations, for export) and the pending state.
    """

    is_pmem = True
    granularity = "cache_line"
    flush_method = "traced"

    def __init__(self, size=None, initial=None, *, model="x86", on_crash_point=None,
                 store_points=False, keep_trace=True):
        if model not in MODELS:
            raise InvalidArgumentError(
                f"unknown crash model {model!r}; choose one of {', '.join(MODELS)}")
        if initial is not None:
            initial = bytes(memoryview(initial).cast("B"))
            if size is None:
                size = len(initial)
            elif len(initial) > size:
                raise InvalidArgumentError(
                    f"initial contents are {len(initial)} bytes but the region is {size}; "
                    f"pass size >= len(initial) or omit size")
        if size is None:
            raise InvalidArgumentError("give the region's size (bytes) or its initial contents")
        size = as_int(size, "size")
        if size <= 0:
            raise InvalidArgumentError(f"region size must be positive, got {size}")
        padded = -(-size // UNIT) * UNIT
        self._tracker = Tracker(padded) if Tracker is not None else None
        work = memoryview(self._tracker) if self._tracker is not None else blank_image(padded)
        self.durable = blank_image(padded)
        if initial:
            work[:len(initial)] = initial
            self.durable[:len(initial)] = initial
        self._work = work
        self._shadow = None if self._tracker is not None else bytearray(work)
        super().__init__(memoryview(work)[:size])
        self.model = model
        self.on_crash_point = on_crash_point
        self.store_points = store_points
        self.keep_trace = keep_trace
        self.lines = {}             # line index -> _Line (only lines with pending events)
        self._flushed_lines = set()
        self._seq = 0
        self._views_out = False
        self._unordered = 0         # depth of unordered() blocks
        self._groups = 0            # store groups recorded so far
        # fingerprint of the durable image relative to the initial one (image_hash(durable)
        # ^ image_hash(initial)): images of one region compare equal iff these do
        self.durable_hash = 0
        # durable units changed since the last crash point; None: all. With no initial
        # contents the first point's changes are relative to an all-zero image.
        self._changed = None if initial else set()
        # every durable unit written since the start (outside them: the initial contents)
        self._touched = set()
        # ("store", Store) / ("flush", off, len) / ("fence",) / ("mark", name)
        self.trace = []
        self.stores = []            # Store objects by index
        self.records = []           # (key, value) appended by record()
        self.marker = None
        self.markers = []
        self.fences = 0
        self.flushes = 0
        self.crash_points = 0
        # pmemcheck-style diagnostics
        self.clean_flushes = []     # (offset, length, marker)
        self.finished = False

    # --- data ------------------------------------------------------------------

    @property
    def buffer(self):
        view = super().buffer
        self._view_handed_out()
        return view

    def array(self, dtype, shape=None, offset=0):
        self._live_view()
        self._view_handed_out()
        return super().array(dtype, shape, offset)

    def _view_handed_out(self):
        if not self._views_out:
            if self._tracker is not None:
                self._tracker.start()
            self._views_out = True

    def write(self, offset, data):
        view = self._live_view()
        data = bytes_view(data)
        offset, length = check_range(offset, data.nbytes, self.size)
        if length == 0:
            return
        if self._unordered:
            view[offset:offset + length] = data    # found by the diff when the group closes
            return
        if self._views_out:
            self._collect_view_stores()
        view[offset:offset + length] = data
        if self._tracker is not None:
            self._tracker.resync(offset, length)
        else:
            self._shadow[offset:offset + length] = data
        self._record_store(offset, length, "write")

    def memset_persist(self, offset, value, length):
        self._live_view()
        offset, length = check_range(offset, length, self.size)
        value = byte_value(value)
        self.write(offset, bytes([value]) * length)
        self.persist(offset, length)

    def record(self, key, value=None):
        """Append ``(key, value)`` to the log the checker receives with each crash point.

        Call it after an operation has *returned* (e.g. ``pm.record(lba, data)``
        once a write is durable), so a checker knows what must survive a crash.
        """
        self.records.append((key, value))

    @contextmanager
    def unordered(self):
        """Stores inside this block form one group whose order was not observed.

        The crash models explore them in every order they allow (see
        docs/crash.md): use it for traces whose stores between two persistence
        points are known only as a set. A flush or fence inside the block closes
        the group there; several stores to one 8-byte unit collapse to the last value.
        """
        self._live_view()
        if self._views_out:
            self._collect_view_stores()
        self._view_handed_out()     # writes inside are found like stores through views
        self._unordered += 1
        try:
            yield self
        finally:
            self._unordered -= 1
            if not self.closed:
                self._collect_view_stores("unordered")

    def _collect(self):
        """Record the stores made since the last look that no write() recorded (views, groups)."""
        if self._views_out:
            self._collect_view_stores("unordered" if self._unordered else "view")

    def mark(self, name):
        self._live_view()
        name = str(name)
        self.marker = name
        self.markers.append(name)
        if self.keep_trace:
            self.trace.append(("mark", name))

    # --- persistence -------------------------------------------------------------

    def flush(self, offset, length):
        self._live_view()
        offset, length = check_range(offset, length, self.size)
        self._collect()
        self.flushes += 1
        if self.keep_trace:
            self.trace.append(("flush", offset, length))
        if length == 0:
            return
        first = offset // CACHE_LINE
        last = (offset + length - 1) // CACHE_LINE
        lines = self.lines
        dirty = False
        if last - first + 1 <= len(lines):
            for li in range(first, last + 1):
                st = lines.get(li)
                if st is not None and st.flushed < len(st.events):
                    st.flushed = len(st.events)
                    self._flushed_lines.add(li)
                    dirty = True
        else:
            for li, st in lines.items():
                if first <= li <= last and st.flushed < len(st.events):
                    st.flushed = len(st.events)
                    self._flushed_lines.add(li)
                    dirty = True
        if not dirty:
            self.clean_flushes.append((offset, length, self.marker))

    def drain(self):
        self._live_view()
        self._collect()
        self._crash_point("fence")
        self.fences += 1
        if self.keep_trace:
            self.trace.append(("fence",))
        if self.model == "eadr":
            for st in self.lines.values():
                st.flushed = len(st.events)
            self._flushed_lines = set(self.lines)
        durable = self.durable
        h = self.durable_hash
        lines = self.lines
        changed = self._changed
        touched = self._touched
        for li in self._flushed_lines:
            st = lines[li]
            done = st.events[:st.flushed]
            for ev in done:
                u = ev.unit
                old = bytes(durable[u * UNIT:u * UNIT + UNIT])
                if old != ev.value:
                    h ^= unit_hash(u, old) ^ unit_hash(u, ev.value)
                    durable[u * UNIT:u * UNIT + UNIT] = ev.value
                    touched.add(u)
                    if changed is not None:
                        changed.add(u)
            del st.events[:st.flushed]
            st.flushed = 0
            if not st.events:
                del lines[li]
        self.durable_hash = h
        self._flushed_lines = set()

    def finish(self):
        """End of the workload: collect view stores and offer the final crash point."""
        self._live_view()
        self._collect()
        self._crash_point("end")
        self.finished = True

    # --- internals -----------------------------------------------------------------

    def _crash_point(self, kind):
        if self.on_crash_point is None:
            return
        self.on_crash_point(self.pending_state(kind))
        self.crash_points += 1

    def pending_state(self, kind):
        """The :class:`PendingState` of a crash right now (``kind``: fence, store or end)."""
        lines = tuple((li, tuple(st.events), st.flushed) for li, st in sorted(self.lines.items()))
        stores = self.stores
        log = {ev.store: stores[ev.store] for _, events, _ in lines for ev in events}
        changed = self._changed
        self._changed = set()
        return PendingState(
            index=self.crash_points, kind=kind, marker=self.marker, records=tuple(self.records),
            fences=self.fences, stores=len(stores), durable=memoryview(self.durable).toreadonly(),
            durable_hash=self.durable_hash,
            changed=None if changed is None else tuple(sorted(changed)),
            touched=self._touched, lines=lines, store_log=MappingProxyType(log),
            working=memoryview(self._work).toreadonly())

    def _record_store(self, offset, length, via, group=None):
        index = len(self.stores)
        data = bytes(self._work[offset:offset + length])
        store = Store(index, offset, data, via, self.marker, group)
        self.stores.append(store)
        if self.keep_trace:
            self.trace.append(("store", store))
        work = self._work
        lines = self.lines
        seq = self._seq
        for u in range(offset // UNIT, (offset + length - 1) // UNIT + 1):
            li = u // UNITS_PER_LINE
            st = lines.get(li)
            if st is None:
                st = lines[li] = _Line()
            st.events.append(Event(seq, u, bytes(work[u * UNIT:u * UNIT + UNIT]), index, group))
            seq += 1
        self._seq = seq
        if self.store_points and group is None:
            self._crash_point("store")

    def _collect_view_stores(self, via="view"):
        """Record the stores made through views (or in an unordered block) since the last look.

        Runs of consecutive changed 8-byte units become one store each, and all
        of them one *group*: their order was not observed. Each changed unit is
        one event with its last value (several stores to one unit since the last
        look collapse to the last value). The tracker compares only the pages
        written since the last look; without it the whole region is diffed
        against the shadow copy.
        """
        if self._tracker is not None:
            runs = [(s, min(e, self.size)) for s, e in self._tracker.collect()]
        else:
            work = np.frombuffer(self._work, dtype=np.uint64)
            shadow = np.frombuffer(self._shadow, dtype=np.uint64)
            starts, ends = index_runs(np.flatnonzero(work != shadow))
            runs = [(s * UNIT, min(e * UNIT, self.size))
                    for s, e in zip(starts, ends, strict=True)]
            for s, e in runs:
                self._shadow[s:e] = self._work[s:e]
        if not runs:
            return
        group = self._groups
        self._groups += 1
        for s, e in runs:
            self._record_store(s, e - s, via, group)
        if self.store_points:
            self._crash_point("store")

    def close(self):
        if self._tracker is not None:
            self._tracker.close()   # the memory stays valid while a view of it lives
        super().close()

