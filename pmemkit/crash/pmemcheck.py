"""pmemcheck store logs (the input of PMDK's pmreorder) <-> pmemkit traces.

The store log is what ``valgrind --tool=pmemcheck --log-stores=yes --log-file=LOG`` writes:
operations separated by ``|`` between ``START`` and ``STOP``, every line of the file starting
with ``==PID==`` (valgrind's prefix), after a preamble (without ``-q``) and before a summary
(with ``--print-summary=yes``)::

    ==31583== START|REGISTER_FILE;/mnt/pmem/pool;0x5200000;0x1000;0x0|STORE;0x5200040;0x2a;0x8;
    0x109516: write (prog.c:42);0x1095F0: main (prog.c:90)|FLUSH;0x5200040;0x40|FENCE|
    TX.BEGIN|...|TX.END
    ==31583== |STOP

``STORE;addr;value;size[;frame...]`` (value: the little-endian bytes as one hex number; the
frames with ``--log-stores-stacktraces=yes``), ``FLUSH;addr;size``, ``FENCE``,
``REGISTER_FILE;name;addr;size;offset`` (a mapping of ``size`` bytes of file ``name`` from file
offset ``offset`` at ``addr``) and markers ``NAME.BEGIN``/``NAME.END``.

Every registered file is kept: the files are laid side by side in one image (each at a
multiple of :data:`~pmemkit.defaults.CRASH_FILE_ALIGN`), every mapping's addresses are
translated to offsets in its file, and :meth:`Trace.split` cuts an image back into files.
"""

from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import defaults
from ..errors import InvalidArgumentError, TraceFormatError
from .trace import UNIT, TracedRegion

#: The base address written into exported logs (a typical mmap address).
EXPORT_BASE = 0x7F0000000000
#: Largest STORE pmemkit accepts (pmemcheck logs at most 8 bytes per STORE).
MAX_STORE = 64
#: Entries pmemcheck writes that change nothing pmemkit models.
_IGNORED = {"NO_REORDER_FAULT", "FAULT_ONLY", "DEEP_SYNC"}
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")
_PID = re.compile(r"==\d+==[ ]?")


@dataclass(frozen=True)
class PoolFile:
    """One registered file of a log: its ``name`` as logged, where it starts in the trace's
    image (``offset``) and how many of its bytes the log maps (``size``, from file offset 0)."""

    name: str
    offset: int
    size: int

    @property
    def basename(self):
        return os.path.basename(self.name) or self.name


@dataclass
class Trace:
    """A replayable sequence of operations on a region of ``size`` bytes.

    ``ops`` holds ``("store", offset, bytes)``, ``("flush", offset, length)``, ``("fence",)``,
    ``("mark", name)`` and ``("record", key, value)``. A Trace is a workload:
    ``explore(trace, ...)``. ``files`` lists the registered files laid out in the image (empty
    for a log without ``REGISTER_FILE``); ``stacks[i]`` is the call stack of the ``i``-th store
    as the log gave it (or None); ``notes`` are messages pmemcheck wrote inside the store log.
    """

    size: int
    ops: list = field(default_factory=list)
    name: str = "pmemkit.img"
    files: list = field(default_factory=list)
    stacks: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def __call__(self, pm):
        seen = []
        for op in self.ops:
            kind = op[0]
            if kind == "store":
                pm.write(op[1], op[2])
            elif kind == "flush":
                pm.flush(op[1], op[2])
            elif kind == "fence":
                pm.drain()
            elif kind == "mark":
                self.mark(pm, op[1], seen)
            elif kind == "record":
                pm.record(op[1], op[2])

    @staticmethod
    def mark(pm, name, seen):
        """Replay marker ``name``; ``seen`` (the markers so far, updated) is recorded under
        :data:`~pmemkit.defaults.MARKERS_ENV` for checkers and ``-x`` sections."""
        pm.mark(name)
        seen.append(name)
        pm.record(defaults.MARKERS_ENV, "|".join(seen))

    @property
    def stats(self):
        counts = {}
        for op in self.ops:
            counts[op[0]] = counts.get(op[0], 0) + 1
        return counts

    @property
    def markers(self):
        """Every marker of the trace, in order."""
        return [op[1] for op in self.ops if op[0] == "mark"]

    def layout(self):
        """The files as ``(name, offset, size)`` triples (one unnamed file if the log has none)."""
        if not self.files:
            return [(self.name, 0, self.size)]
        return [(f.name, f.offset, f.size) for f in self.files]

    def split(self, image):
        """``[(PoolFile, bytes)]``: ``image`` cut back into the registered files."""
        files = self.files or [PoolFile(self.name, 0, self.size)]
        return [(f, bytes(image[f.offset:f.offset + f.size])) for f in files]

    def locate(self, offset):
        """``(file name, offset in that file)`` of an image offset."""
        for f in self.files:
            if f.offset <= offset < f.offset + f.size:
                return f.basename, offset - f.offset
        return self.name, offset

    def initial_image(self, initial=None):
        """The image the log starts from, as bytes of :attr:`size`.

        ``initial`` is ``"zeros"``, bytes or a path (for a one-file log), a dict
        ``{name: bytes or path}`` (names as logged, or their base names; files not in it are read
        from their logged path), or None: every registered file is read from the path the log
        names, as pmreorder does (it must hold the pool as it was *before* the logged run). A file
        that cannot be read, or is shorter than the log maps, is refused with what to do.
        """
        if isinstance(initial, str) and initial == "zeros":
            return bytes(self.size)
        files = self.files or [PoolFile(self.name, 0, self.size)]
        if initial is not None and not isinstance(initial, dict):
            if len(files) > 1:
                raise InvalidArgumentError(
                    f"the log registers {len(files)} files ({', '.join(f.name for f in files)}): "
                    f"give one initial image per file (NAME=FILE), or 'zeros'")
            initial = {files[0].name: initial}
        initial = dict(initial or {})
        image = bytearray(self.size)
        implicit = []
        for f in files:
            src = initial.pop(f.name, None)
            if src is None:
                src = initial.pop(f.basename, None)
                implicit.append(f)
            image[f.offset:f.offset + f.size] = _initial_content(f, src, bool(self.files))
        if initial:
            raise InvalidArgumentError(
                f"initial image(s) given for {', '.join(sorted(map(str, initial)))}, which the log "
                f"does not register; its files: {', '.join(f.name for f in files)}")
        if implicit and self.files:
            self._refuse_final_state(image, implicit)
        return bytes(image)

    def _refuse_final_state(self, image, files):
        """A pool read from its logged path that already holds every value the log stores is the
        pool *after* the run (pmreorder's users copy it aside before recording): refuse it."""
        final = bytearray(image)
        for op in self.ops:
            if op[0] == "store":
                final[op[1]:op[1] + len(op[2])] = op[2]
        for f in files:
            lo, hi = f.offset, f.offset + f.size
            touched = any(op[0] == "store" and lo <= op[1] < hi for op in self.ops)
            if touched and final[lo:hi] == image[lo:hi]:
                raise InvalidArgumentError(
                    f"{f.name} already holds every value the log stores: it is the pool as the run "
                    f"left it, not as it was before; give the pool from before the run "
                    f"(--initial {f.basename}=FILE; copy it aside before recording, as pmreorder's "
                    f"users do), or --initial {f.basename}={f.name} if it really is unchanged")


def _initial_content(f, src, named):
    what = "the initial image"
    if src is None:
        if not named:
            raise InvalidArgumentError(
                "the log registers no file, so there is no pool to start from: give --initial FILE "
                "(the memory's contents before the run) or --initial zeros")
        src = f.name
        what = f"the pool file the log names ({f.name}), as it was before the logged run,"
        if not os.path.exists(src):
            raise InvalidArgumentError(
                f"the log names {f.name}, which does not exist here: give its contents before "
                f"the logged run (--initial {f.basename}=FILE), or --initial zeros if it was "
                f"created empty")
    if isinstance(src, (str, os.PathLike)):
        try:
            with open(src, "rb") as fh:
                data = fh.read(f.size)
        except OSError as exc:
            raise InvalidArgumentError(
                f"cannot read {what} {str(src)!r}: {exc.strerror or exc}") from None
    else:
        try:
            data = bytes(memoryview(src).cast("B"))[:f.size]
        except TypeError:
            raise InvalidArgumentError(
                f"an initial image must be bytes-like or a path, got {type(src).__name__}"
            ) from None
    if len(data) < f.size:
        raise InvalidArgumentError(
            f"{what} {str(src) if isinstance(src, (str, os.PathLike)) else ''} holds {len(data)} "
            f"bytes but the log maps {f.size} bytes of {f.name}: is it the pool the log was "
            f"recorded on? (--initial zeros starts from zeros)".replace("  ", " "))
    return data


def record(workload, size=4096, initial=None):
    """Run ``workload(pm)`` on a traced region (no exploration) and return its :class:`Trace`."""
    region = TracedRegion(size, initial, keep_trace=True)
    try:
        workload(region)
        region.finish()
        ops = []
        for op in region.trace:
            if op[0] == "store":
                ops.append(("store", op[1].offset, op[1].data))
            else:
                ops.append(op)
        return Trace(region.size, ops)
    finally:
        region.close()


# --- reading -------------------------------------------------------------------------------

def _int(text, what, pos):
    if not _HEX.fullmatch(text.strip()):
        raise TraceFormatError(
            f"operation #{pos}: {what} {text!r} is not a 0x-prefixed hexadecimal number "
            f"(pmemcheck writes every number as 0x...)")
    return int(text, 16)


def _body(text):
    """The operations between START and STOP, and pmemcheck's messages found among them."""
    if "\0" in text:
        raise TraceFormatError("not a pmemcheck store log: the file holds binary data (NUL bytes)")
    lines = [_PID.sub("", line, count=1) if line.startswith("==") else line
             for line in text.splitlines()]
    starts = [i for i, line in enumerate(lines)
              if line.strip() == "START" or line.startswith("START|")]
    if not starts:
        if not text.strip():
            raise TraceFormatError("the store log is empty; expected 'START|...|STOP' from "
                                   "valgrind --tool=pmemcheck --log-stores=yes")
        has_ops = any(tok in text for tok in ("STORE;", "REGISTER_FILE;", "|FENCE"))
        raise TraceFormatError(
            "the store log has no START: its beginning is missing" if has_ops else
            "not a pmemcheck store log (no START|...|STOP found); record one with valgrind "
            "--tool=pmemcheck --log-stores=yes --log-file=store.log PROGRAM")
    if len(starts) > 1:
        raise TraceFormatError(
            f"the file holds {len(starts)} store logs (START appears {len(starts)} times: one per "
            "process?); record each process to its own file (--log-file=store.%p.log) and give one")
    chunks, notes = [lines[starts[0]]], []
    for line in lines[starts[0] + 1:]:
        if chunks[-1].rstrip().endswith("|STOP") or chunks[-1].strip() == "START|STOP":
            break
        if line.startswith("|"):
            chunks.append(line)
        elif line.strip():
            notes.append(line.strip())
    items = [t.strip() for t in "".join(c.rstrip("\n") for c in chunks).split("|")]
    if not items or items[-1] != "STOP":
        raise TraceFormatError(
            "the store log ends without STOP: it is truncated (the program was killed or is "
            "still running, or the file was cut); pmemkit does not explore part of a run as if it "
            "were all")
    return items[1:-1], notes


def _frame(text):
    text = text.strip()
    m = re.match(r"0x[0-9A-Fa-f]+:\s*", text)
    if m:
        text = text[m.end():]
    return re.sub(r"\(in (?:.*/)?([^/)]+)\)", r"(in \1)", text)


class _Mappings:
    """The registered mappings alive at a point of the log, sorted by address."""

    def __init__(self):
        self.starts, self.maps = [], []      # maps: (addr, end, file index, file offset)

    def add(self, addr, size, fidx, foff):
        end = addr + size
        keep = [m for m in self.maps if m[1] <= addr or m[0] >= end]
        keep.append((addr, end, fidx, foff))
        keep.sort()
        self.maps = keep
        self.starts = [m[0] for m in keep]

    def find(self, addr):
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.maps[i][1]:
            return self.maps[i]
        return None

    def overlapping(self, addr, end):
        return [m for m in self.maps if m[0] < end and addr < m[1]]


def parse_log(text, size=None):
    """Parse a pmemcheck store log (text or bytes, as pmemcheck wrote it) into a :class:`Trace`."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        raw = bytes(text)
        if b"\0" in raw:
            raise TraceFormatError("not a pmemcheck store log: the file holds binary data (NUL "
                                   "bytes)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TraceFormatError(
                f"not a pmemcheck store log: byte {exc.start} is not text (pmemcheck writes "
                "ASCII)") from None
    items, notes = _body(text)
    names, extents = [], []                  # registered files, in registration order
    index = {}
    maps = _Mappings()
    raw, stacks, stack_any = [], [], False
    first_unmapped = None                    # a STORE before any REGISTER_FILE: (operation, addr)
    open_markers = []
    for pos, item in enumerate(items, start=1):
        if not item:
            continue
        fields = item.split(";")
        op = fields[0]
        if op == "STORE":
            if len(fields) < 4:
                raise TraceFormatError(f"operation #{pos}: STORE needs addr;value;size, got "
                                       f"{item!r}")
            addr, value, n = (_int(fields[1], "address", pos), _int(fields[2], "value", pos),
                              _int(fields[3], "size", pos))
            if not 0 < n <= MAX_STORE:
                raise TraceFormatError(f"operation #{pos}: STORE of size {n} (pmemcheck logs 1 to "
                                       "8 bytes)")
            try:
                data = value.to_bytes(n, "little")
            except OverflowError:
                raise TraceFormatError(f"operation #{pos}: value {fields[2]} does not fit in {n} "
                                       "byte(s)") from None
            frames = [_frame(f) for f in fields[4:] if f.strip()]
            stack_any = stack_any or bool(frames)
            m = maps.find(addr)
            if m is None:
                if names:
                    raise TraceFormatError(
                        f"operation #{pos}: STORE at {addr:#x} is outside every registered file "
                        f"({', '.join(names)}); pmemcheck logs only stores to registered memory, "
                        "so the log is damaged or incomplete")
                first_unmapped = first_unmapped or (pos, addr)
                raw.append(("store", None, addr, data))
            elif addr + n > m[1]:
                raise TraceFormatError(
                    f"operation #{pos}: STORE of {n} bytes at {addr:#x} runs past the end of the "
                    f"registered mapping of {names[m[2]]} ({m[0]:#x}-{m[1]:#x}); the log is "
                    f"damaged")
            else:
                raw.append(("store", m[2], m[3] + addr - m[0], data))
            stacks.append(" < ".join(frames) if frames else None)
        elif op == "FLUSH":
            if len(fields) < 3:
                raise TraceFormatError(f"operation #{pos}: FLUSH needs addr;size, got {item!r}")
            addr, n = _int(fields[1], "address", pos), _int(fields[2], "size", pos)
            if not names:
                raw.append(("flush", None, addr, n))
            for m in maps.overlapping(addr, addr + n):
                s, e = max(addr, m[0]), min(addr + n, m[1])
                raw.append(("flush", m[2], m[3] + s - m[0], e - s))
        elif op == "FENCE":
            raw.append(("fence",))
        elif op == "REGISTER_FILE":
            if len(fields) < 5:
                raise TraceFormatError(f"operation #{pos}: REGISTER_FILE needs "
                                       f"name;addr;size;offset, got {item!r}")
            name = fields[1]
            addr, n, off = (_int(fields[2], "address", pos), _int(fields[3], "size", pos),
                            _int(fields[4], "offset", pos))
            if n <= 0:
                raise TraceFormatError(f"operation #{pos}: REGISTER_FILE of {name} with size 0")
            if off + n > defaults.CRASH_MAX_LOG_IMAGE:
                raise TraceFormatError(
                    f"operation #{pos}: REGISTER_FILE maps {n:,} bytes of {name} at file offset "
                    f"{off:#x}; "
                    f"pmemkit explores images of up to {defaults.CRASH_MAX_LOG_IMAGE:,} bytes (it "
                    f"keeps three copies in memory): record the program on a smaller pool")
            key = os.path.normpath(name)
            if key not in index:
                index[key] = len(names)
                names.append(name)
                extents.append(0)
            fidx = index[key]
            extents[fidx] = max(extents[fidx], off + n)
            maps.add(addr, n, fidx, off)
        elif op.endswith(".BEGIN") or op.endswith(".END"):
            _check_marker(op, open_markers, pos)
            raw.append(("mark", op))
        elif op in _IGNORED:
            continue
        elif op in ("START", "STOP"):
            raise TraceFormatError(f"operation #{pos}: a second {op} inside the store log; the "
                                   "file is damaged")
        else:
            raise TraceFormatError(
                f"operation #{pos}: unknown entry {item[:80]!r}; expected STORE, FLUSH, FENCE, "
                f"REGISTER_FILE or a NAME.BEGIN/NAME.END marker")
    if names and first_unmapped:
        pos, addr = first_unmapped
        raise TraceFormatError(
            f"operation #{pos}: STORE at {addr:#x} comes before the REGISTER_FILE of its file (or "
            f"is outside every registered file: {', '.join(names)}); the log is damaged or "
            f"incomplete")
    flushes_ok = not names
    raw = [op for op in raw if flushes_ok or op[0] != "flush" or op[1] is not None]
    return _build(raw, names, extents, stacks if stack_any else [], notes, size)


def check_markers(markers):
    """Refuse crossed section markers (``A.BEGIN B.BEGIN A.END``) with a
    :class:`~pmemkit.errors.TraceFormatError`, as pmreorder does."""
    stack = []
    for pos, op in enumerate(markers):
        if op.endswith(".BEGIN") or op.endswith(".END"):
            _check_marker(op, stack, pos, "marker")


def _check_marker(op, stack, pos, what="operation"):
    """pmreorder's rule: a section ends only as the innermost open one (markers never cross)."""
    if op.endswith(".BEGIN"):
        stack.append(op[:-len(".BEGIN")])
        return
    name = op[:-len(".END")]
    if not stack:
        raise TraceFormatError(f"{what} #{pos}: {op} closes a section that was never opened")
    if stack[-1] != name:
        raise TraceFormatError(
            f"{what} #{pos}: crossed markers: {op} while {stack[-1]}.BEGIN is the innermost "
            f"open section (sections must nest, as pmreorder requires)")
    stack.pop()


def _build(raw, names, extents, stacks, notes, size):
    align = defaults.CRASH_FILE_ALIGN
    if names:
        files, at = [], 0
        for name, ext in zip(names, extents, strict=True):
            files.append(PoolFile(name, at, ext))
            at = -(-(at + ext) // align) * align
        region_size = files[-1].offset + files[-1].size
        total = sum(f.size for f in files)
        if total > defaults.CRASH_MAX_LOG_IMAGE:
            raise TraceFormatError(
                f"the log's files map {total:,} bytes together; pmemkit explores images of up to "
                f"{defaults.CRASH_MAX_LOG_IMAGE:,} bytes: record the program on smaller pools")
        base = [f.offset for f in files]
        lo = hi = 0
        name = files[0].basename if len(files) == 1 else "pmemcheck.img"
    else:
        stores = [op for op in raw if op[0] == "store"]
        if not stores:
            raise TraceFormatError("the log has no REGISTER_FILE and no STORE; nothing to replay")
        lo = min(op[2] for op in stores) // 4096 * 4096
        hi = max(op[2] + len(op[3]) for op in stores)
        if hi - lo > defaults.CRASH_MAX_LOG_IMAGE:
            raise TraceFormatError(
                f"the log's stores span {hi - lo:,} bytes and it registers no file; pmemkit "
                f"explores images of up to {defaults.CRASH_MAX_LOG_IMAGE:,} bytes")
        files, region_size, name, base = [], hi - lo, "pmemcheck.img", []
    if size is not None:
        region_size = max(region_size, size)
    ops = []
    for op in raw:
        kind = op[0]
        if kind == "store":
            ops.append(("store", (op[2] - lo) if op[1] is None else base[op[1]] + op[2], op[3]))
        elif kind == "flush" and op[1] is None:
            s, e = max(op[2], lo), min(op[2] + op[3], hi)
            if s < e:
                ops.append(("flush", s - lo, e - s))
        elif kind == "flush":
            ops.append(("flush", base[op[1]] + op[2], op[3]))
        else:
            ops.append(op)
    return Trace(region_size, ops, name=name, files=files, stacks=stacks, notes=notes)


def read_log(path, size=None):
    """Read a pmemcheck store log file into a :class:`Trace`."""
    try:
        raw = Path(path).read_bytes()
    except TypeError:
        raise InvalidArgumentError(
            f"the store log must be a path (str or os.PathLike), got {type(path).__name__}; "
            f"to parse a log's text, use parse_log()") from None
    except OSError as exc:
        raise TraceFormatError(
            f"cannot read store log {str(path)!r}: {exc.strerror or exc}") from None
    return parse_log(raw, size)


# --- reports -------------------------------------------------------------------------------

def describe_stores(report, trace):
    """Name each store of ``report``'s violations by file, file offset and call stack (in place)."""
    for v in report.violations:
        for s in (*v.durable_stores, *v.lost_stores):
            fname, off = trace.locate(s.offset)
            where = f"{fname}@{off:#x}"
            stack = trace.stacks[s.index] if s.index < len(trace.stacks) else None
            s.via = f"{where} from {stack}" if stack else where


# --- writing -------------------------------------------------------------------------------

def format_log(trace, base=EXPORT_BASE, name=None):
    """A pmemcheck log (text) for ``trace``; stores are split into aligned pieces of <= 8 bytes.

    Each registered file is mapped at ``base`` plus its offset in the image, so reading the
    log back gives the same layout.
    """
    out = ["START"]
    if trace.files:
        out += [f"REGISTER_FILE;{f.name};{base + f.offset:#x};{f.size:#x};0x0" for f in trace.files]
    else:
        out.append(f"REGISTER_FILE;{name or trace.name};{base:#x};{trace.size:#x};0x0")
    for op in trace.ops:
        kind = op[0]
        if kind == "store":
            off, data = op[1], op[2]
            pos = 0
            while pos < len(data):
                a = off + pos
                n = min(UNIT - a % UNIT, len(data) - pos)
                value = int.from_bytes(data[pos:pos + n], "little")
                out.append(f"STORE;{base + a:#x};{value:#x};{n:#x}")
                pos += n
        elif kind == "flush":
            out.append(f"FLUSH;{base + op[1]:#x};{op[2]:#x}")
        elif kind == "fence":
            out.append("FENCE")
        elif kind == "mark":
            m = op[1]
            if m.endswith(".BEGIN") or m.endswith(".END"):
                out.append(m)
            else:
                safe = m.replace("|", "_").replace(";", "_")
                out += [f"{safe}.BEGIN", f"{safe}.END"]
    out.append("STOP")
    return "|".join(out) + "\n"


def write_log(trace, path, base=EXPORT_BASE, name=None):
    """Write ``trace`` as a pmemcheck store log to ``path``."""
    text = format_log(trace, base, name)
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot write the store log {str(path)!r}: {exc.strerror or exc}; give a writable "
            f"path") from None


# --- pmreorder's engines per marker section ------------------------------------------------

#: pmreorder's engines and what pmemkit runs for each: None leaves the crash point unchecked.
#: ReorderReverseAccumulative (suffixes of the store order) has no exact twin: the exhaustive
#: engine explores a superset of its images.
PMREORDER_ENGINES = {
    "NoReorderNoCheck": None,
    "NoReorderDoCheck": "in-order",
    "ReorderFull": "exhaustive",
    "ReorderPartial": "random",
    "ReorderAccumulative": "prefix",
    "ReorderReverseAccumulative": "exhaustive",
}


def engine_name(text, default="auto"):
    """pmemkit's engine for ``text``: a pmemkit engine, ``none``, or one of pmreorder's engine
    names (``ReorderDefault``: ``default``). None means "leave unchecked"."""
    from .engines import EngineSpec

    text = str(text).strip()
    if text in PMREORDER_ENGINES:
        return PMREORDER_ENGINES[text]
    if text == "ReorderDefault":
        return default
    if text == "none":
        return None
    try:
        EngineSpec.parse(text)
    except InvalidArgumentError:
        raise InvalidArgumentError(
            f"unknown engine {text!r}: give a pmemkit engine (auto, exhaustive, bounded:K, "
            "random:N, prefix, "
            f"in-order, none) or a pmreorder engine ({', '.join(PMREORDER_ENGINES)}, "
            "ReorderDefault)") from None
    return text


def parse_sections(text):
    """pmreorder's ``-x``: ``MARKER=ENGINE[,MARKER=ENGINE...]`` or the path of a JSON file
    ``{"MARKER": "ENGINE", ...}``. Returns ``{marker: engine text}`` (engines not yet resolved)."""
    import json

    path = Path(text)
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidArgumentError(
                f"cannot read the section config {text!r}: {exc}; expected JSON like "
                f'{{"MARKER": "ReorderFull", "pmem_memset_persist": "NoReorderNoCheck"}}') from None
        if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
            raise InvalidArgumentError(f"the section config {text!r} must be one JSON object of "
                                       f"MARKER: ENGINE strings")
        return {str(k): v for k, v in config.items()}
    if "=" not in str(text) and (path.suffix == ".json" or "/" in str(text)):
        raise InvalidArgumentError(f"section config file {text!r} not found: give an existing "
                                   f"JSON file or MARKER=ENGINE pairs")
    config = {}
    for pair in filter(None, (p.strip() for p in str(text).split(","))):
        name, eq, engine = pair.partition("=")
        if not eq or not name.strip() or not engine.strip():
            raise InvalidArgumentError(
                f"bad section engine {pair!r} in {text!r}: use MARKER=ENGINE[,MARKER=ENGINE...] "
                f"(e.g. CHANGE=ReorderFull,pmem_memset_persist=NoReorderNoCheck) or a JSON file")
        config[name.strip()] = engine.strip()
    if not config:
        raise InvalidArgumentError(f"no MARKER=ENGINE pair in {text!r}")
    return config


class Sections:
    """Which engine explores a crash point, from the marker sections open there (pmreorder's rule):
    the engine of the innermost open section that ``config`` names, else ``default``.

    A callable for ``explore(..., sections=...)``: it reads the markers seen so far from the
    point's records (a :class:`Trace` records them under :data:`~pmemkit.defaults.MARKERS_ENV`).
    """

    def __init__(self, config, default="auto"):
        self.default = engine_name(default)
        self.config = {name: engine_name(engine, self.default) for name, engine in config.items()}
        self._cache = {}

    def __call__(self, point):
        markers = str(point.state.get(defaults.MARKERS_ENV, ""))
        if markers not in self._cache:
            stack = []
            for m in filter(None, markers.split("|")):
                if m.endswith(".BEGIN"):
                    stack.append(m[:-len(".BEGIN")])
                elif m.endswith(".END") and stack:
                    stack.pop()
            chosen = self.default
            for name in reversed(stack):
                if name in self.config:
                    chosen = self.config[name]
                    break
            self._cache[markers] = chosen
        return self._cache[markers]

    def unused(self, trace):
        """Configured markers that never open a section in ``trace`` (a typo is likely)."""
        opened = {m[:-len(".BEGIN")] for m in trace.markers if m.endswith(".BEGIN")}
        return sorted(set(self.config) - opened)
