"""Unmodified C/C++ programs under pmemkit's LD_PRELOAD interposer (``pmemkit/_interpose.c``).

:func:`run` starts a program with the interposer preloaded and returns a
:class:`ProgramRun`: the program's exit status and its binary trace, read into
:class:`NativeTrace`. :meth:`NativeTrace.workload` turns the trace of the pool
file into a replayable workload for :func:`pmemkit.crash.explore` (or for
:func:`pmemkit.crash.pmemcheck.format_log`), after :meth:`NativeTrace.verify`
has checked that the initial image plus every traced store gives the file the
program left behind.

The binary trace is a sequence of records, each a 24-byte header
``<HHIQQ`` (type, file id, thread id, offset, n) followed by ``n`` payload bytes
padded to 8 when the type carries a payload (see :data:`PAYLOAD_TYPES`).
"""

from __future__ import annotations

import importlib.machinery
import os
import signal
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import defaults
from ..errors import (InterposeError, InvalidArgumentError, ProgramTimeoutError, TraceFormatError,
                      TraceIncompleteError)
from ..region import CACHE_LINE
from ..ranges import index_runs
from .pmemcheck import Trace

HEADER = struct.Struct("<HHIQQ")

# record types (the enum at the top of _interpose.c; a test pins them equal)
T_HELLO, T_FILE, T_INIT, T_STORE, T_FLUSH, T_FENCE = 1, 2, 3, 4, 5, 6
T_MARK, T_RECORD, T_END, T_ERROR, T_WARN = 7, 8, 9, 10, 11
PAYLOAD_TYPES = frozenset({T_FILE, T_INIT, T_STORE, T_MARK, T_RECORD, T_ERROR, T_WARN})
#: How a traced process ended (T_END's offset field).
END_HOW = {0: "exit", 1: "_exit"}

#: libpmemobj's pool descriptor keeps a run-time area that every open rewrites (PMDK 1.x
#: layout: from ``offsetof(struct pmemobjpool, addr)`` to the lanes, whose offset is the
#: 64-bit field at LANES_OFFSET_FIELD). Its stores matter to no checker: they are ignored.
PMEMOBJ_SIGNATURE = b"PMEMOBJ\0"
PMEMOBJ_RUNTIME_START = 0x1A20
PMEMOBJ_LANES_OFFSET_FIELD = 0x1400
PMEMOBJ_DEFAULT_LANES_OFFSET = 0x2000

#: How many differing byte ranges a completeness error spells out.
SHOWN_DIFFS = 8


def interposer_path():
    """Path of the built interposer library; :class:`InterposeError` if it was not built."""
    here = Path(__file__).resolve().parent.parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = here / f"_interpose{suffix}"
        if p.is_file():
            return p
    raise InterposeError(
        "pmemkit's interposer (pmemkit/_interpose.c) was not built: install a C compiler and "
        "reinstall pmemkit (pip install -e . builds it)")


def check_dynamic(program):
    """Refuse a statically linked ELF executable (LD_PRELOAD cannot reach it)."""
    try:
        with open(program, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return      # a script or not a 64-bit little-endian ELF: let it run
            phoff, = struct.unpack_from("<Q", head, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return
    types = {struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum)}
    if 3 not in types:   # PT_INTERP: the dynamic loader
        raise InterposeError(
            f"{program} is statically linked: LD_PRELOAD cannot interpose its libpmem or mmap "
            f"calls, so its stores, flushes and fences cannot be traced. Link it dynamically "
            f"(the default: gcc ... -lpmem) to crash-test it with pmemkit")


@dataclass
class PoolFile:
    """A file the program mapped shared and writable."""

    fid: int
    path: str
    size: int = 0
    initial: bytearray = field(default_factory=bytearray)
    stores: int = 0
    flushes: int = 0


@dataclass
class NativeTrace:
    """A program's binary trace, read: files, operations, markers, records, how it ended."""

    files: dict = field(default_factory=dict)     # fid -> PoolFile
    ops: list = field(default_factory=list)       # (kind, fid, tid, ...) in trace order
    records: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    pids: list = field(default_factory=list)
    end: tuple | None = None                      # (how, status) when the program ended normally
    fences: int = 0
    flushes: int = 0

    @property
    def threads(self):
        return sorted({op[2] for op in self.ops})

    def pool(self):
        """The one file the program stored to; :class:`InterposeError` if none or several."""
        used = [f for f in self.files.values() if f.stores or f.flushes]
        if not used:
            names = ", ".join(f.path for f in self.files.values()) or "none"
            raise InterposeError(
                "the program stored nothing to a shared writable file mapping (files mapped: "
                f"{names}); nothing to crash-test. Did it fail before writing its pool?")
        if len(used) > 1:
            raise InterposeError(
                "the program wrote to several mapped files (" + ", ".join(f.path for f in used) +
                "); pmemkit crash run explores one pool file per run (pool sets are not supported)")
        return used[0]

    def refuse_untraceable(self):
        """Raise when the trace cannot be trusted: stores that never went through the interposer's
        flushes or fences (statically linked libpmem, inline clwb/sfence), a forked child's
        stores."""
        if self.errors:
            raise InterposeError("the interposer reported: " + "; ".join(self.errors))
        pool = self.pool()
        if self.warnings:
            raise InterposeError(
                "; ".join(self.warnings)
                + ": calls to it never reach pmemkit, so traced stores would look unflushed and "
                "every crash image would be a false violation. Link libpmem dynamically (-lpmem) "
                "to crash-test this program")
        if pool.stores and not self.flushes and not self.fences:
            raise InterposeError(
                f"the program stored to {pool.path} but no flush, fence or msync reached pmemkit: "
                "it persists with code pmemkit cannot see (a statically linked libpmem, or inline "
                "clwb/clflushopt/sfence), or it never persists anything. Refusing rather than "
                "reporting false violations; link libpmem dynamically (-lpmem)")

    def ignored_range(self, final=None):
        """The byte range of the pool whose stores are ignored (libpmemobj's run-time area)."""
        pool = self.pool()
        for image in (final, bytes(pool.initial)):
            if image is not None and image[:8] == PMEMOBJ_SIGNATURE:
                at = PMEMOBJ_LANES_OFFSET_FIELD
                end = int.from_bytes(image[at:at + 8], "little")
                if not PMEMOBJ_RUNTIME_START < end <= 1 << 20:
                    end = PMEMOBJ_DEFAULT_LANES_OFFSET
                return PMEMOBJ_RUNTIME_START, end
        return None

    def verify(self, final):
        """Check initial image + traced stores == ``final`` (the file after the run).

        Raises :class:`TraceIncompleteError` naming the differing byte ranges.
        """
        import numpy as np

        pool = self.pool()
        image = bytearray(pool.initial)
        for op in self.ops:
            if op[0] == "store" and op[1] == pool.fid:
                off, data = op[3], op[4]
                if off + len(data) > len(image):
                    image.extend(bytes(off + len(data) - len(image)))
                image[off:off + len(data)] = data
        final = bytes(final)
        n = min(len(image), len(final))
        a = np.frombuffer(bytes(image[:n]), dtype=np.uint8)
        b = np.frombuffer(final[:n], dtype=np.uint8)
        differ = a != b
        ign = self.ignored_range(final)
        if ign:
            differ[ign[0]:min(ign[1], n)] = False
        changed = np.flatnonzero(differ)
        problems = []
        if changed.size:
            starts, ends = index_runs(changed)
            shown = ", ".join(f"[{s:#x}, {e:#x})" for s, e in
                              zip(starts[:SHOWN_DIFFS], ends[:SHOWN_DIFFS], strict=True))
            more = f" and {len(starts) - SHOWN_DIFFS} more" if len(starts) > SHOWN_DIFFS else ""
            problems.append(f"{changed.size} byte(s) of {pool.path} differ from the initial image "
                            f"plus the traced stores: {shown}{more}")
        if any(final[len(image):]) or any(image[len(final):]):
            problems.append(f"{pool.path} is {len(final)} bytes after the run but the trace covers "
                            f"{len(image)}")
        if problems:
            if self.end is None:
                why = ("the program did not end through exit, _exit or a return from main (killed "
                       "by a signal?), so its last stores were never seen")
            else:
                why = ("something wrote the file without going through a traced mapping (write(2), "
                       "another process, a forked child) or the store went unseen")
            raise TraceIncompleteError("the trace is incomplete: " + "; ".join(problems)
                                       + f". Likely: {why}")

    def workload(self, final=None):
        """The pool's operations as a replayable :class:`ProgramTrace` (run-time area removed)."""
        pool = self.pool()
        ign = self.ignored_range(final)
        seq = []            # (operation, thread id)
        for op in self.ops:
            kind, tid = op[0], op[2]
            if kind == "store":
                if op[1] != pool.fid:
                    continue
                off, data = op[3], op[4]
                parts = _cut(off, data, ign) if ign else [(off, data)]
                seq.extend((("store", s, d), tid) for s, d in parts)
            elif kind == "flush":
                if op[1] == pool.fid:
                    seq.append((("flush", op[3], op[4]), tid))
            elif kind == "fence":
                seq.append((("fence",), tid))
            elif kind == "mark":
                seq.append((("mark", op[3]), tid))
            elif kind == "record":
                seq.append((("record", op[3], op[4]), tid))
        ops, moved, shared = _own_thread_fences(seq)
        size = max(pool.size, len(pool.initial), len(final or b""))
        work = ProgramTrace(size, ops, name=os.path.basename(pool.path) or "pool",
                            initial=bytes(pool.initial).ljust(size, b"\0"))
        work.flushes_kept_pending, work.flushes_shared = moved, shared
        return work


def _lines(offset, length):
    if not length:
        return range(0)
    return range(offset // CACHE_LINE, (offset + length - 1) // CACHE_LINE + 1)


def _own_thread_fences(seq):
    """Operations in which a fence makes only its own thread's flushes durable (x86's rule).

    A flush of thread U that U has not fenced yet when thread T fences is moved to just after
    T's fence, so it stays pending until U's own fence. It is moved only when no store to its
    cache lines came after it (a moved flush would cover those stores too); such a flush stays
    where it is and T's fence makes it durable. Returns (operations, moved, left in place).
    """
    out = []
    open_flushes = {}       # thread -> positions in out of its flushes since its last fence
    last_store = {}         # cache line -> position in out of the last store to it
    moved = shared = 0
    for op, tid in seq:
        kind = op[0]
        if kind == "store":
            out.append(op)
            for line in _lines(op[1], len(op[2])):
                last_store[line] = len(out) - 1
        elif kind == "flush":
            out.append(op)
            open_flushes.setdefault(tid, []).append(len(out) - 1)
        elif kind == "fence":
            later = []
            for other, positions in open_flushes.items():
                if other == tid:
                    continue
                for i in positions:
                    flush = out[i]
                    if all(last_store.get(line, -1) < i for line in _lines(flush[1], flush[2])):
                        out[i] = None
                        later.append((other, flush))
                        moved += 1
                    else:
                        shared += 1
            open_flushes = {}
            out.append(op)
            for other, flush in later:
                out.append(flush)
                open_flushes.setdefault(other, []).append(len(out) - 1)
        else:
            out.append(op)
    return [op for op in out if op is not None], moved, shared


def _cut(off, data, rng):
    """The parts of the store (off, data) outside [rng[0], rng[1])."""
    end = off + len(data)
    if end <= rng[0] or off >= rng[1]:
        return [(off, data)]
    out = []
    if off < rng[0]:
        out.append((off, data[:rng[0] - off]))
    if end > rng[1]:
        out.append((rng[1], data[rng[1] - off:]))
    return out


class ProgramTrace(Trace):
    """A :class:`~pmemkit.crash.pmemcheck.Trace` that also replays ``("record", key, value)``."""

    def __init__(self, size, ops, name="pool", initial=None):
        super().__init__(size, ops, name)
        self.initial = initial

    def __call__(self, pm):
        ops = self.ops
        seen = []
        i = 0
        while i < len(ops):
            op = ops[i]
            if op[0] == "store":
                # the stores one interposed call found: made since the previous call, in an
                # order nobody observed (written in address order): one store group
                j = i
                while j < len(ops) and ops[j][0] == "store":
                    j += 1
                with pm.unordered():
                    for _, off, data in ops[i:j]:
                        pm.write(off, data)
                i = j
                continue
            i += 1
            if op[0] == "record":
                pm.record(op[1], op[2])
            elif op[0] == "flush":
                pm.flush(op[1], op[2])
            elif op[0] == "fence":
                pm.drain()
            elif op[0] == "mark":
                self.mark(pm, op[1], seen)

    def exportable(self):
        """The same trace without records (the pmemcheck log format has no place for them)."""
        return Trace(self.size, [op for op in self.ops if op[0] != "record"], self.name)


def parse_trace(data):
    """Parse the interposer's binary trace (bytes) into a :class:`NativeTrace`."""
    data = memoryview(data)
    t = NativeTrace()
    pos = 0
    total = len(data)
    while pos < total:
        if pos + HEADER.size > total:
            raise TraceFormatError(f"the trace ends inside a record header at byte {pos}")
        rtype, fid, tid, off, n = HEADER.unpack_from(data, pos)
        pos += HEADER.size
        payload = b""
        if rtype in PAYLOAD_TYPES:
            padded = (n + 7) & ~7
            if pos + padded > total:
                raise TraceFormatError(f"the trace ends inside a record at byte {pos} (type "
                                       f"{rtype})")
            payload = bytes(data[pos:pos + n])
            pos += padded
        if rtype == T_HELLO:
            t.pids.append(n)
        elif rtype == T_FILE:
            f = t.files.get(fid)
            if f is None:
                f = t.files[fid] = PoolFile(fid, payload.decode(errors="replace"))
            f.size = max(f.size, off)
        elif rtype == T_INIT:
            f = _file(t, fid, pos)
            _put(f.initial, off, payload)
            f.size = max(f.size, off + n)
        elif rtype == T_STORE:
            f = _file(t, fid, pos)
            f.stores += 1
            f.size = max(f.size, off + n)
            t.ops.append(("store", fid, tid, off, payload))
        elif rtype == T_FLUSH:
            f = _file(t, fid, pos)
            f.flushes += 1
            t.flushes += 1
            t.ops.append(("flush", fid, tid, off, n))
        elif rtype == T_FENCE:
            t.fences += 1
            t.ops.append(("fence", 0, tid))
        elif rtype == T_MARK:
            t.ops.append(("mark", 0, tid, payload.decode(errors="replace")))
        elif rtype == T_RECORD:
            key, _, value = payload.partition(b"\0")
            item = (key.decode(errors="replace"), value.decode(errors="replace"))
            t.records.append(item)
            t.ops.append(("record", 0, tid, item[0], item[1]))
        elif rtype == T_END:
            t.end = (END_HOW.get(off, str(off)), n)
        elif rtype == T_ERROR:
            msg = payload.decode(errors="replace")
            if msg not in t.errors:
                t.errors.append(msg)
        elif rtype == T_WARN:
            t.warnings.append(payload.decode(errors="replace"))
        else:
            raise TraceFormatError(f"unknown record type {rtype} at byte {pos - HEADER.size}")
    for f in t.files.values():
        if len(f.initial) < f.size:
            f.initial.extend(bytes(f.size - len(f.initial)))
    return t


def _file(t, fid, pos):
    f = t.files.get(fid)
    if f is None:
        raise TraceFormatError(f"record at byte {pos} names file #{fid}, which the trace never "
                               "opened")
    return f


def _put(buf, off, data):
    if off + len(data) > len(buf):
        buf.extend(bytes(off + len(data) - len(buf)))
    buf[off:off + len(data)] = data


def read_trace(path):
    """Read a binary trace file into a :class:`NativeTrace`."""
    try:
        return parse_trace(Path(path).read_bytes())
    except OSError as exc:
        raise TraceFormatError(f"cannot read trace {str(path)!r}: {exc.strerror or exc}") from None


@dataclass
class ProgramRun:
    """A finished traced run: how the program exited and what it did."""

    argv: list
    returncode: int
    trace: NativeTrace
    final: bytes = b""

    @property
    def signal(self):
        return -self.returncode if self.returncode < 0 else None

    def describe_exit(self):
        if self.signal:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        return f"exit status {self.returncode}"

    def workload(self):
        """Verify the trace against the file left behind and return the pool's workload."""
        self.trace.refuse_untraceable()
        self.trace.verify(self.final)
        return self.trace.workload(self.final)


def run(argv, *, env=None, cwd=None, timeout=None, stdout=None, stderr=None):
    """Run ``argv`` under the interposer and return its :class:`ProgramRun`.

    The program's output goes to ``stdout``/``stderr`` (default: inherited). The
    trace is written to a temporary file, read, then removed.
    """
    if isinstance(argv, (str, bytes)):
        raise InvalidArgumentError(
            f"the program is an argv list such as ['./my_program', 'pool.obj'], not the string "
            f"{argv!r}: pmemkit never runs a shell")
    argv = [str(a) for a in argv]
    if not argv:
        raise InterposeError("give the program to run, e.g. -- ./my_program pool.obj")
    lib = interposer_path()
    check_dynamic(_which(argv[0], env))
    fd, trace_path = tempfile.mkstemp(prefix="pmemkit-trace-", suffix=".bin")
    os.close(fd)
    try:
        run_env = dict(os.environ if env is None else env)
        preload = run_env.get("LD_PRELOAD", "")
        run_env["LD_PRELOAD"] = f"{lib} {preload}".strip()
        run_env[defaults.INTERPOSE_TRACE_ENV] = trace_path
        run_env.pop(defaults.INTERPOSE_OWNER_ENV, None)
        try:
            proc = subprocess.run(argv, env=run_env, cwd=cwd, timeout=timeout, stdout=stdout,
                                  stderr=stderr, check=False)
        except FileNotFoundError:
            raise InterposeError(f"program not found: {argv[0]!r}") from None
        except PermissionError:
            raise InterposeError(f"program not executable: {argv[0]!r}") from None
        except subprocess.TimeoutExpired:
            raise ProgramTimeoutError(
                f"{argv[0]!r} did not finish within {timeout} s; it was killed") from None
        trace = read_trace(trace_path)
    finally:
        os.unlink(trace_path)
    if not trace.pids:
        raise InterposeError(
            f"{argv[0]!r} ran without loading pmemkit's interposer (statically linked, setuid, or "
            f"it cleared LD_PRELOAD): nothing was traced")
    final = b""
    used = [f for f in trace.files.values() if f.stores or f.flushes]
    if len(used) == 1:
        try:
            final = Path(used[0].path).read_bytes()
        except OSError as exc:
            raise InterposeError(f"cannot read the pool {used[0].path!r} after the run: "
                                 f"{exc.strerror or exc}") from None
    return ProgramRun(argv, proc.returncode, trace, final)


def _which(program, env):
    if os.sep in program:
        return program
    import shutil

    path = (env or os.environ).get("PATH")
    return shutil.which(program, path=path) or program
