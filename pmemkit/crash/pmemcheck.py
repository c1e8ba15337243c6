"""pmemcheck store logs (the input of PMDK's pmreorder) <-> pmemkit traces.

The format: operations separated by ``|``, between ``START`` and ``STOP``::

    START|REGISTER_FILE;/mnt/pmem/pool;0x7f0000000000;0x1000;0x0|STORE;0x7f0000000040;0x2a;0x8|
    FLUSH;0x7f0000000040;0x40|FENCE|TX.BEGIN|...|TX.END|STOP

``STORE;addr;value;size`` (value: the little-endian bytes as one hex number),
``FLUSH;addr;size``, ``FENCE``, ``REGISTER_FILE;name;addr;size;offset`` and
user markers ``NAME.BEGIN``/``NAME.END``. Addresses are translated to offsets
in the registered file; pmreorder's engine markers pass through as markers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TraceFormatError
from .trace import UNIT, TracedRegion

#: The base address written into exported logs (a typical mmap address).
EXPORT_BASE = 0x7F0000000000
_IGNORED = {"START", "STOP", "NO_REORDER_FAULT", "FAULT_ONLY"}


@dataclass
class Trace:
    """A replayable sequence of operations on a region of ``size`` bytes.

    ``ops`` holds ``("store", offset, bytes)``, ``("flush", offset, length)``,
    ``("fence",)`` and ``("mark", name)``. A Trace is a workload: ``explore(trace, ...)``.
    """

    size: int
    ops: list = field(default_factory=list)
    name: str = "pmemkit.img"

    def __call__(self, pm):
        for op in self.ops:
            kind = op[0]
            if kind == "store":
                pm.write(op[1], op[2])
            elif kind == "flush":
                pm.flush(op[1], op[2])
            elif kind == "fence":
                pm.drain()
            elif kind == "mark":
                pm.mark(op[1])

    @property
    def stats(self):
        counts = {}
        for op in self.ops:
            counts[op[0]] = counts.get(op[0], 0) + 1
        return counts


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


def _int(text, what, pos):
    try:
        return int(text, 16)
    except ValueError:
        raise TraceFormatError(
            f"operation #{pos}: {what} {text!r} is not a hexadecimal number "
            f"(pmemcheck writes 0x-prefixed hex)") from None


def parse_log(text, size=None):
    """Parse pmemcheck log text into a :class:`Trace` (offsets inside the registered file)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    items = [t.strip() for t in text.split("|")]
    items = [t for t in items if t]
    if not items:
        raise TraceFormatError("the store log is empty; expected 'START|...|STOP' from valgrind --tool=pmemcheck "
                               "--log-stores=yes")
    if "START" in items:
        items = items[items.index("START") + 1:]
    if "STOP" in items:
        items = items[:items.index("STOP")]
    files = []
    raw = []
    for pos, item in enumerate(items):
        fields = item.split(";")
        op = fields[0]
        if op == "REGISTER_FILE":
            if len(fields) < 5:
                raise TraceFormatError(f"operation #{pos}: REGISTER_FILE needs name;addr;size;offset, got {item!r}")
            files.append((fields[1], _int(fields[2], "address", pos), _int(fields[3], "size", pos),
                          _int(fields[4], "offset", pos)))
        elif op == "STORE":
            if len(fields) < 4:
                raise TraceFormatError(f"operation #{pos}: STORE needs addr;value;size, got {item!r}")
            addr, value, n = (_int(fields[1], "address", pos), _int(fields[2], "value", pos),
                              _int(fields[3], "size", pos))
            if n <= 0:
                raise TraceFormatError(f"operation #{pos}: STORE of size {n}")
            try:
                data = value.to_bytes(n, "little")
            except OverflowError:
                raise TraceFormatError(f"operation #{pos}: value {fields[2]} does not fit in {n} byte(s)") from None
            raw.append(("store", addr, data))
        elif op == "FLUSH":
            if len(fields) < 3:
                raise TraceFormatError(f"operation #{pos}: FLUSH needs addr;size, got {item!r}")
            raw.append(("flush", _int(fields[1], "address", pos), _int(fields[2], "size", pos)))
        elif op == "FENCE":
            raw.append(("fence",))
        elif op.endswith(".BEGIN") or op.endswith(".END"):
            raw.append(("mark", op))
        elif op.upper() in _IGNORED:
            continue
        else:
            raise TraceFormatError(
                f"operation #{pos}: unknown entry {item!r}; expected STORE, FLUSH, FENCE, REGISTER_FILE "
                f"or a NAME.BEGIN/NAME.END marker")
    if files:
        name, base, fsize, foff = files[0]
        if len(files) > 1:
            # keep the file the stores go to
            def hits(f):
                return sum(1 for op in raw if op[0] == "store" and f[1] <= op[1] < f[1] + f[2])
            name, base, fsize, foff = max(files, key=hits)
        region_size = fsize + foff
    else:
        stores = [op for op in raw if op[0] == "store"]
        if not stores:
            raise TraceFormatError("the log has no REGISTER_FILE and no STORE; nothing to replay")
        name, foff = "pmemcheck.img", 0
        base = min(op[1] for op in stores) // 4096 * 4096
        region_size = max(op[1] + len(op[2]) for op in stores) - base
        fsize = region_size
    if size is not None:
        region_size = max(region_size, size)
    ops = []
    lo, hi = base, base + fsize
    for op in raw:
        if op[0] == "store":
            addr, data = op[1], op[2]
            if addr >= hi or addr + len(data) <= lo:
                continue            # outside the registered file (stack, heap...): not persistent
            s, e = max(addr, lo), min(addr + len(data), hi)
            ops.append(("store", s - base + foff, data[s - addr:e - addr]))
        elif op[0] == "flush":
            addr, n = op[1], op[2]
            s, e = max(addr, lo), min(addr + n, hi)
            if s < e:
                ops.append(("flush", s - base + foff, e - s))
        else:
            ops.append(op)
    return Trace(region_size, ops, name=os.path.basename(name) or name)


def read_log(path, size=None):
    """Read a pmemcheck store log file into a :class:`Trace`."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        raise TraceFormatError(f"cannot read store log {str(path)!r}: {exc.strerror or exc}") from None
    return parse_log(text, size)


def format_log(trace, base=EXPORT_BASE, name=None):
    """A pmemcheck log (text) for ``trace``; stores are split into aligned pieces of <= 8 bytes."""
    name = name or trace.name
    out = ["START", f"REGISTER_FILE;{name};{base:#x};{trace.size:#x};0x0"]
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
    Path(path).write_text(format_log(trace, base, name))
