"""Results of a crash exploration: :class:`Report`, :class:`Violation`, :class:`CrashPoint`."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ..ranges import index_runs

#: How many violations ``str(report)`` spells out in full.
SHOWN_VIOLATIONS = 3
#: How many differing byte ranges a violation shows.
SHOWN_DIFF_RANGES = 8
#: Bytes of an image compared with its base at a time, when where they differ is not known.
DIFF_CHUNK = 1 << 22
#: Differing units at most this many units apart are kept as one run (fewer, longer runs).
RUN_GAP_UNITS = 8


#: The warning of a report in which some crash point was sampled instead of explored completely.
SAMPLED_WARNING = ("some crash points were sampled, not explored completely (see engines: bounded, "
                   "random, or auto on a point with too many states), so an OK is not a proof; "
                   "engine='exhaustive' refuses points it cannot explore")


def skipped_warning(points):
    """The warning of a report in which ``points`` crash points were left unchecked by
    ``sections`` (their engine is "none")."""
    return (f"{points} crash point(s) left unchecked on purpose (their section's engine is "
            f"'none', pmreorder's NoReorderNoCheck)")


@dataclass(frozen=True)
class CrashPoint:
    """Where a crash happens: the checker's optional second argument.

    ``index`` counts crash points from 0; ``kind`` is ``"fence"`` (just before the
    fence that would have made flushed stores durable), ``"store"`` (just after a
    store, with ``store_points=True``) or ``"end"`` (the workload returned).
    ``records`` is everything the workload passed to ``pm.record(key, value)``
    before this point, in order; ``state`` maps each key to its latest value.

    ``changed_ranges`` is a tuple of byte ranges ``(start, end)``, sorted and disjoint,
    outside which every crash image of this point equals the initial image (the stores
    made durable so far and the ones pending here all fall inside), or ``None`` when not
    known. A checker that has checked the initial image once can check only these ranges
    (what :meth:`pmemkit.btt.Btt.check` does with ``since``/``changed``).
    """

    index: int
    kind: str
    marker: str | None
    records: tuple = ()
    fences: int = 0
    stores: int = 0
    #: ``(units, unit size, image size)``: the units that may differ from the initial image
    #: (what ``changed_ranges`` is made of, on first use)
    changed_units: tuple | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def changed_ranges(self):
        if self.changed_units is None:
            return None
        import numpy as np

        units, unit, size = self.changed_units
        starts, ends = index_runs(np.array(sorted(units), dtype=np.int64))
        return tuple((s * unit, min(e * unit, size))
                     for s, e in zip(starts, ends, strict=True) if s * unit < size)

    @property
    def state(self):
        return dict(self.records)

    def describe(self):
        where = {"fence": f"before fence #{self.fences + 1}",
                 "store": f"after store #{self.stores - 1}",
                 "end": "at the end of the workload"}.get(self.kind, self.kind)
        marker = f", last marker {self.marker!r}" if self.marker is not None else ", no marker yet"
        return f"crash point #{self.index} ({where}{marker}, {len(self.records)} record(s) so far)"


@dataclass
class StoreInfo:
    index: int
    offset: int
    size: int
    via: str
    marker: str | None

    def __str__(self):
        m = f", marker {self.marker!r}" if self.marker is not None else ""
        return (f"store #{self.index} [{self.offset:#x}, {self.offset + self.size:#x}) "
                f"via {self.via}{m}")


class SparseImage:
    """An image of ``size`` bytes kept as the runs of bytes where it differs from ``base``.

    ``base`` (bytes of ``size`` bytes, or None for zeros) is shared by many images, so each
    costs memory for its runs only. ``bytes(image)`` and slices (``image[a:b]``) give bytes;
    nothing made from it is kept.
    """

    __slots__ = ("base", "size", "starts", "ends", "offsets", "data")

    def __init__(self, base, size, starts, ends, data):
        """Runs ``[starts[k], ends[k])`` (numpy int64 arrays) hold ``data``, one after another."""
        import numpy as np

        self.base, self.size = base, size
        self.starts, self.ends, self.data = starts, ends, data
        lengths = ends - starts
        self.offsets = np.cumsum(lengths) - lengths      # where each run starts in data

    @classmethod
    def of(cls, image, base, size, units=None, unit=8):
        """``image`` (a buffer of at least ``size`` bytes) kept against ``base``. ``units``: the
        only ``unit``-byte units where it may differ from ``base`` (None: compare it all)."""
        import numpy as np

        if units is None:
            idx = _differing_units(image, base, size, unit)
        else:
            idx = np.fromiter(units, dtype=np.int64, count=len(units))
            idx.sort()
        first, last = index_runs(idx, gap=RUN_GAP_UNITS)
        starts = np.array(first, dtype=np.int64) * unit
        ends = np.minimum(np.array(last, dtype=np.int64) * unit, size)
        inside = starts < size
        starts, ends = starts[inside], ends[inside]
        mv = memoryview(image).cast("B")
        data = b"".join([mv[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)])
        return cls(base, size, starts, ends, data)

    def __len__(self):
        return self.size

    def __bytes__(self):
        return self[0:self.size]

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a sparse image is read by slices (image[start:stop]) or bytes(image)")
        import numpy as np

        start, stop, _ = key.indices(self.size)
        stop = max(start, stop)
        base = memoryview(self.base if self.base is not None else bytes(stop - start))
        shift = 0 if self.base is not None else start     # a zero base covers [start, stop) only
        data = memoryview(self.data)
        first = int(np.searchsorted(self.ends, start, side="right"))
        last = int(np.searchsorted(self.starts, stop, side="left"))
        parts, pos = [], start
        for k in range(first, last):
            s, e = max(int(self.starts[k]), start), min(int(self.ends[k]), stop)
            at = int(self.offsets[k]) + s - int(self.starts[k])
            parts += [base[pos - shift:s - shift], data[at:at + e - s]]
            pos = e
        parts.append(base[pos - shift:stop - shift])
        return b"".join(parts)

    def spans(self):
        """The ``(start, end)`` byte ranges outside which the image equals its base."""
        return zip(self.starts.tolist(), self.ends.tolist(), strict=True)


def _differing_units(image, base, size, unit):
    """Sorted indices (numpy int64) of the ``unit``-byte units of ``image`` that differ from
    ``base`` (None: zeros), compared :data:`DIFF_CHUNK` bytes at a time."""
    import numpy as np

    a = np.frombuffer(image, dtype=np.uint8, count=size)
    b = None if base is None else np.frombuffer(base, dtype=np.uint8, count=size)
    found = []
    for c0 in range(0, size, DIFF_CHUNK):
        x = a[c0:c0 + DIFF_CHUNK]
        ne = x != 0 if b is None else x != b[c0:c0 + DIFF_CHUNK]
        if not ne.any():
            continue
        pad = -len(ne) % unit
        if pad:
            ne = np.concatenate((ne, np.zeros(pad, dtype=bool)))
        found.append(np.flatnonzero(ne.reshape(-1, unit).any(axis=1)) + c0 // unit)
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)


class _Image:
    """A :class:`Violation` field holding an image as bytes or a :class:`SparseImage`: reading
    it gives bytes (a sparse image is made whole on each read, and the bytes are not kept)."""

    def __set_name__(self, owner, name):
        self.key = "_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            return b""          # the dataclass's default
        value = obj.__dict__[self.key]
        return bytes(value) if isinstance(value, SparseImage) else value

    def __set__(self, obj, value):
        obj.__dict__[self.key] = value


@dataclass
class Violation:
    """A crash image the checker rejected, with everything needed to understand and replay it.

    ``image`` and ``persisted`` are bytes of the region's size; the explorer keeps them as
    their differences from the run's initial image (:class:`SparseImage`) and makes them whole
    on each read, so a kept violation costs memory for the bytes that differ, not two images.
    Read them once into a variable when using them several times.
    """

    point: CrashPoint
    message: str
    choice: dict                 # {dimension: alternative}: replays exactly this image
    view: str                    # "x86", "x86-line", "eadr" or "prefix": how dimensions were built
    engine: str                  # the engine that visited it at this point
    seed: int
    # pending stores (partly) durable in the image
    durable_stores: list = field(default_factory=list)
    lost_stores: list = field(default_factory=list)      # pending stores not durable at all
    image: bytes = _Image()
    persisted: bytes = _Image()  # the image had every pending store become durable
    model: str = "x86"
    store_points: bool = False
    space: int = 0               # which space of the view (eadr/prefix with store groups)
    reordered_lines: tuple = ()  # x86 only: lines this image needs persisted out of program order
    state: int | None = None     # index in the run's enumeration: crash.replay_state() rebuilds it
    # how to replay it from a shell (set by the CLI), else the Python call
    command: str = ""

    @property
    def size(self):
        """The image's size in bytes (without making it whole)."""
        return len(self._image)

    def diff_ranges(self):
        """Byte ranges ``(start, end)`` where the image differs from the fully persisted image."""
        import numpy as np

        a, b = self._image, self._persisted
        if (isinstance(a, SparseImage) and isinstance(b, SparseImage) and a.base is b.base
                and a.size == b.size):   # they differ only where either differs from the base
            found = [np.flatnonzero(np.frombuffer(a[s:e], dtype=np.uint8)
                                    != np.frombuffer(b[s:e], dtype=np.uint8)) + s
                     for s, e in (*a.spans(), *b.spans())]
            differ = np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)
        else:
            differ = np.flatnonzero(np.frombuffer(a, dtype=np.uint8)
                                    != np.frombuffer(b, dtype=np.uint8))
        starts, ends = index_runs(differ, gap=8)
        return list(zip(starts, ends, strict=True))

    def __repr__(self):
        return (f"<Violation point={self.point.index} kind={self.point.kind} "
                f"marker={self.point.marker!r} "
                f"choice={self.choice!r} message={self.message!r}>")

    def replay_hint(self):
        if self.command:
            return self.command
        view = f", view={self.view!r}" if self.view != self.model else ""
        if self.space:
            view += f", space={self.space}"
        if self.store_points:
            view += ", store_points=True"
        return (f"crash.replay(workload, point={self.point.index}, choice={self.choice!r}, "
                f"model={self.model!r}{view}, size={self.size})  "
                f"# seed={self.seed}, engine {self.engine}")

    def __str__(self):
        lines = [f"{self.point.describe()}",
                 f"  checker: {self.message}"]
        if self.reordered_lines:
            shown = ", ".join(f"{li * 64:#x}" for li in self.reordered_lines[:4])
            lines.append(f"  NOTE: this image needs stores to one cache line (at {shown}) to "
                         f"persist out of program order, which x86 hardware does not do; the x86 "
                         f"model allows it to be conservative. model='x86-line' is the "
                         f"hardware-exact check.")
        if self.durable_stores:
            lines.append("  pending stores that WERE durable:")
            lines += [f"    {s}" for s in self.durable_stores[:8]]
            if len(self.durable_stores) > 8:
                lines.append(f"    ... and {len(self.durable_stores) - 8} more")
        if self.lost_stores:
            lines.append("  pending stores that were NOT durable:")
            lines += [f"    {s}" for s in self.lost_stores[:8]]
            if len(self.lost_stores) > 8:
                lines.append(f"    ... and {len(self.lost_stores) - 8} more")
        if not self.durable_stores and not self.lost_stores:
            lines.append("  no store was pending: this is the durable image itself")
        ranges = self.diff_ranges()
        if ranges:
            lines.append(f"  diff against the fully persisted image ({len(ranges)} range(s)):")
            for s, e in ranges[:SHOWN_DIFF_RANGES]:
                e2 = min(e, s + 32)
                more = " ..." if e2 < e else ""
                crash, full = self._image[s:e2].hex(" "), self._persisted[s:e2].hex(" ")
                lines.append(f"    [{s:#06x}, {e:#06x})  crash: {crash}{more}")
                lines.append(f"    {'':16}  full:  {full}{more}")
            if len(ranges) > SHOWN_DIFF_RANGES:
                lines.append(f"    ... and {len(ranges) - SHOWN_DIFF_RANGES} more range(s)")
        else:
            lines.append("  the image equals the fully persisted image")
        lines.append(f"  replay: {self.replay_hint()}")
        return "\n".join(lines)


@dataclass
class Report:
    """The verdict of :func:`pmemkit.crash.explore`.

    ``ok`` is true when no crash image was rejected. ``states_checked`` counts the
    crash states visited (duplicates included), ``unique_images`` the images the
    checker actually ran on. ``states_possible`` is the number of crash states the
    model allows, summed over the crash points, and ``states_covered`` how many
    distinct ones of them were visited. ``complete`` is true only when every one
    was: it is false when any crash point was sampled (engines ``bounded``,
    ``random``, or ``auto`` on a large point) or ``max_states`` stopped the run.
    ``engines`` maps the
    engine used to the number of crash points it explored.
    """

    violations: list
    states_checked: int
    unique_images: int
    crash_points: int
    warnings: list
    model: str
    engine: str
    engines: dict
    seed: int
    complete: bool
    violation_count: int
    elapsed: float
    states_possible: int = 0
    states_covered: int = 0
    stopped: bool = False        # max_states cut the run short
    stopped_by: str = "max_states"   # ...or what else did ("the first violation")

    def as_dict(self):
        """The verdict and its figures as plain data (what ``--json`` prints)."""
        return {"ok": self.ok, "violations": self.violation_count,
                "states_checked": self.states_checked, "unique_images": self.unique_images,
                "crash_points": self.crash_points, "complete": self.complete,
                "states_possible": self.states_possible, "states_covered": self.states_covered,
                "stopped": self.stopped, "coverage": self.coverage(), "engines": self.engines,
                "warnings": self.warnings, "elapsed": self.elapsed}

    def coverage(self):
        """A sentence saying how much of the crash-state space was visited."""
        if self.complete:
            return f"complete: all {self.states_possible:,} possible crash states"
        pct = 100.0 * self.states_covered / self.states_possible if self.states_possible else 0.0
        why = f"stopped by {self.stopped_by}" if self.stopped else "sampled"
        return (f"INCOMPLETE ({why}): {self.states_covered:,} of {_count(self.states_possible)} "
                f"possible crash states visited ({pct:.3g}%)")

    @property
    def ok(self):
        return self.violation_count == 0

    def __bool__(self):
        return self.ok

    def __repr__(self):
        return f"<Report {self.summary()}>"

    def summary(self):
        if not self.ok:
            verdict = f"FAILED - {self.violation_count} violation(s)"
        else:   # an OK only for a complete run: a sample or a cut-short run proves nothing
            verdict = "OK" if self.complete else "found no violation"
        used = ", ".join(f"{name} at {n} point(s)" for name, n in self.engines.items()) or "none"
        rate = self.states_checked / self.elapsed if self.elapsed > 0 else 0.0
        return (f"crash exploration {verdict}: {self.states_checked} crash state(s), "
                f"{self.unique_images} unique image(s) checked, "
                f"{self.crash_points} crash point(s); "
                f"model {self.model}, engine {self.engine} ({used}), seed {self.seed}; "
                f"{self.elapsed:.2f} s ({rate:,.0f} states/s); {self.coverage()}")

    def __str__(self):
        lines = [self.summary()]
        if self.warnings:
            lines.append(f"warnings ({len(self.warnings)}):")
            lines += [f"  - {w}" for w in self.warnings]
        for i, v in enumerate(self.violations[:SHOWN_VIOLATIONS]):
            lines.append(f"violation {i + 1} of {self.violation_count}: {v}")
        if self.violation_count > SHOWN_VIOLATIONS:
            lines.append(f"... {self.violation_count - SHOWN_VIOLATIONS} more violation(s) "
                         f"in report.violations")
        return "\n".join(lines)


def _count(n):
    return f"{n:,}" if n < 10 ** 15 else f"about 2^{n.bit_length() - 1}"
