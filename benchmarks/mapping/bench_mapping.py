#!/usr/bin/env python3
"""pmemkit mappings from Python vs libpmem from C, measured alternately in the same run.

Measures persist and flush+drain at 64 B, 4 KiB, 64 KiB and 1 MiB and memcpy_persist
(64 B, 4 KiB, 1 MiB) on the forced CPU flush path (PMEMKIT_FORCE_PMEM=1 for pmemkit,
PMEM_IS_PMEM_FORCE=1 for libpmem, on ordinary files), and the msync path (store one
byte, make it durable) against Python's mmap.flush() and libpmem's pmem_msync().

The anchor is bench_libpmem.c beside this file, compiled here into a shared library
against Debian's libpmem (apt-get install gcc libpmem-dev) and called through ctypes:
each call runs a whole timed loop in C, so ctypes adds nothing per operation.

    .venv/bin/python benchmarks/mapping/bench_mapping.py [--dir DIR] [--rounds N] [--min-time S]
    [--check]

Each figure (operations per second) is the best of N rounds; in every round each
operation runs for about S seconds on each side, pmemkit and anchor back to back, so
load from other processes on the machine hits both alike. Time is the measuring
thread's CPU time (--clock cpu, the default: preemption by other processes does not
count) or elapsed time (--clock wall). msync speed swings with the filesystem's state,
so the msync cases run in many small alternating batches (pmemkit, mmap.flush, libpmem,
pmemkit, ...) and the medians are compared; the dirty case, which waits for the
device, is always timed on the wall clock.
With --check the exit status is 1 when a ratio misses its target.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import repeat
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run from a checkout without installing

SIZES = (64, 4096, 65536, 1 << 20)
COPY_SIZES = (64, 4096, 1 << 20)
MAP_SIZE = 4 << 20
MSYNC_BATCH = 10
MSYNC_CLEAN_BATCH = 100
C_OPS = {"persist": 0, "flush+drain": 1, "memcpy_persist": 2, "msync": 3}
# (operation, size, anchor) -> minimum ratio pmemkit/anchor (issue 2, section 4)
TARGETS = {("persist", 4096, "libpmem"): 0.8, ("persist", 64, "libpmem"): 0.4,
           ("memcpy_persist", 1 << 20, "libpmem"): 0.95,
           ("msync", 4096, "mmap.flush"): 1.0, ("msync clean", 4096, "mmap.flush"): 1.0}


# --- the libpmem anchor -------------------------------------------------------------------

def build_anchor(workdir, cc):
    """Compile bench_libpmem.c into a shared library; ``(ctypes.CDLL, None)`` or ``(None, why)``."""
    lib = Path(workdir) / "libbench_libpmem.so"
    cmd = [cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(HERE / "bench_libpmem.c"), "-lpmem"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        return None, f"no C compiler {cc!r} (apt-get install gcc libpmem-dev)"
    if proc.returncode != 0:
        return None, ("could not build the libpmem driver "
                      f"({' '.join(cmd)}):\n{proc.stderr.strip()}\n(apt-get install libpmem-dev)")
    os.environ["PMEM_IS_PMEM_FORCE"] = "1"  # read by libpmem when it is loaded
    dll = ctypes.CDLL(str(lib))
    dll.bl_open.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    dll.bl_open.restype = ctypes.c_int
    dll.bl_run.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_long, ctypes.c_int]
    dll.bl_run.restype = ctypes.c_double
    dll.bl_close.argtypes = []
    dll.bl_close.restype = None
    return dll, None


def anchor_timer(dll, op, size, cpu_clock):
    code = C_OPS[op]

    def timed(n):
        t = dll.bl_run(code, size, n, int(cpu_clock))
        if t < 0:
            raise RuntimeError(f"libpmem driver failed on {op} {size}")
        return t
    return timed


# --- pmemkit ----------------------------------------------------------------------------

def _map(path, force_pmem):
    import pmemkit

    os.environ["PMEMKIT_FORCE_PMEM"] = force_pmem
    try:
        return pmemkit.map_file(path, MAP_SIZE, create=True)
    finally:
        del os.environ["PMEMKIT_FORCE_PMEM"]


def _timer(loop, cpu_clock):
    clock = time.thread_time if cpu_clock else time.perf_counter

    def timed(n):
        t = clock()
        loop(n)
        return clock() - t
    return timed


def pmemkit_timers(pm, cpu_clock):
    """Timed loops over the forced CPU path, keyed by (operation, size)."""
    if pm.flush_method == "msync":
        raise SystemExit("pmemkit did not take the CPU flush path "
                         f"(flush_method={pm.flush_method}); is the native extension built? (pip "
                         "install -e . with a C compiler)")
    pm.buffer[:] = b"\1" * MAP_SIZE  # fault every page in, like the C driver
    pm.persist(0, MAP_SIZE)
    src = b"\7" * (1 << 20)
    persist, flush, drain, memcpy_persist = pm.persist, pm.flush, pm.drain, pm.memcpy_persist
    timers = {}
    for size in SIZES:
        def loop(n, size=size):
            for _ in repeat(None, n):
                persist(0, size)
        timers[("persist", size)] = _timer(loop, cpu_clock)
    for size in SIZES:
        def loop(n, size=size):
            for _ in repeat(None, n):
                flush(0, size)
                drain()
        timers[("flush+drain", size)] = _timer(loop, cpu_clock)
    for size in COPY_SIZES:
        def loop(n, data=src[:size]):
            for _ in repeat(None, n):
                memcpy_persist(0, data)
        timers[("memcpy_persist", size)] = _timer(loop, cpu_clock)
    return timers


def msync_timers(pm, mm, cpu_clock):
    """The msync path vs Python's mmap.flush(), on two mappings of the same file page.

    "msync": a byte is stored, then made durable (the write-back dominates);
    "msync clean": nothing was stored, so only the cost of the call itself is measured.
    """
    assert pm.flush_method == "msync", pm.flush_method
    buf, persist, flush = pm.buffer, pm.persist, mm.flush

    def dirty_pmemkit(n):
        for i in repeat(1, n):
            buf[100] = i
            persist(100, 1)

    def dirty_mmap(n):
        for i in repeat(1, n):
            mm[100] = i
            flush(0, 4096)

    def clean_pmemkit(n):
        for _ in repeat(None, n):
            persist(100, 1)

    def clean_mmap(n):
        for _ in repeat(None, n):
            flush(0, 4096)

    # The dirty case waits for the device: always wall-clock time (median of small batches).
    return {("msync", 4096): (_timer(dirty_pmemkit, False), _timer(dirty_mmap, False)),
            ("msync clean", 4096): (_timer(clean_pmemkit, cpu_clock),
                                    _timer(clean_mmap, cpu_clock))}


def calibrate(timed, min_time):
    """Iterations that take about ``min_time`` seconds."""
    n = 1
    while True:
        t = timed(n)
        if t >= min_time / 4 or n >= 1 << 30:
            return max(1, int(n * min_time / max(t, 1e-9)))
        n *= 2


# --- report -----------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=None,
                    help="directory for the benchmark files (default: a temp dir)")
    ap.add_argument("--rounds", type=int, default=10, help="rounds, best kept (default 10)")
    ap.add_argument("--min-time", type=float, default=0.05,
                    help="seconds per operation per side per round (default 0.05)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="cpu (default): CPU time of the measuring thread, so that other processes "
                         "on a shared machine do not count; wall: elapsed time. The dirty msync "
                         "case, which waits for the device, is always timed on the wall clock")
    ap.add_argument("--msync-time", type=float, default=4.0,
                    help="seconds spent alternating batches of the msync cases (default 4)")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"),
                    help="C compiler for the libpmem driver")
    ap.add_argument("--check", action="store_true", help="exit 1 when a ratio misses its target")
    args = ap.parse_args(argv)

    from pmemkit import cpu

    workdir = Path(tempfile.mkdtemp(prefix="pmemkit-bench-", dir=args.dir))
    best = {}  # (op, size, who) -> ops/s

    def record(key, who, n, seconds):
        k = key + (who,)
        best[k] = max(best.get(k, 0.0), n / seconds)

    try:
        dll, problem = build_anchor(workdir, args.cc)
        if dll is None:
            print(f"note: {problem}\nnote: printing pmemkit figures without the libpmem anchor",
                  file=sys.stderr)
        elif dll.bl_open(str(workdir / "libpmem.bin").encode(), MAP_SIZE) < 0:
            raise SystemExit(f"libpmem could not map {workdir / 'libpmem.bin'}")
        pm = _map(workdir / "pmemkit.bin", "1")
        method = pm.flush_method
        cpu_clock = args.clock == "cpu"
        timers = pmemkit_timers(pm, cpu_clock)
        pm_ms = _map(workdir / "msync.bin", "0")
        fd = os.open(workdir / "msync.bin", os.O_RDWR)
        try:
            mm = mmap.mmap(fd, MAP_SIZE)  # a second mapping of the same file
        finally:
            os.close(fd)
        ms = msync_timers(pm_ms, mm, cpu_clock)
        calls0, bytes0 = pm_ms.msync_stats

        plan = []  # (key, who, timed, iterations)
        for key, timed in timers.items():
            plan.append((key, "pmemkit", timed, calibrate(timed, args.min_time)))
            if dll is not None:
                c = anchor_timer(dll, *key, cpu_clock)
                plan.append((key, "libpmem", c, calibrate(c, args.min_time)))
        for _ in range(args.rounds):
            for key, who, timed, n in plan:
                record(key, who, n, timed(n))
        # msync speed swings with the filesystem's state (journal, write-back) and, for a
        # dirty page, with the device: alternate many small batches and compare medians.
        for key, batch in ((("msync", 4096), MSYNC_BATCH),
                           (("msync clean", 4096), MSYNC_CLEAN_BATCH)):
            sides = {"pmemkit": ms[key][0], "mmap.flush": ms[key][1]}
            if dll is not None and key[0] == "msync":
                sides["libpmem"] = anchor_timer(dll, "msync", 4096, False)
            batches = {who: [] for who in sides}
            deadline = time.monotonic() + args.msync_time / 2
            order = list(sides)
            while time.monotonic() < deadline or len(batches["pmemkit"]) < 5:
                for who in order:
                    batches[who].append(sides[who](batch))
                order.append(order.pop(0))  # rotate: no side always follows the same one
            for who, times in batches.items():
                best[key + (who,)] = batch / statistics.median(times)
        calls, nbytes = (a - b for a, b in zip(pm_ms.msync_stats, (calls0, bytes0), strict=True))
        pm.close()
        pm_ms.close()
        mm.close()
        if dll is not None:
            dll.bl_close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    nt = cpu.native().nt_copy_kind() if cpu.native() else "none"
    print(f"pmemkit: flush method {method} (forced CPU path on an ordinary file), non-temporal "
          f"copies {nt}; libpmem {'from C, PMEM_IS_PMEM_FORCE=1' if dll else 'not available'}; "
          f"best of {args.rounds} alternating rounds of ~{args.min_time}s per side, "
          f"{args.clock} clock")
    header = (f"{'operation':<15} {'size':>8} {'pmemkit ops/s':>14} {'anchor':>11} "
              f"{'anchor ops/s':>13} {'ratio':>6}  target")
    print(header)
    print("-" * len(header))
    missed = []
    rows = [(op, s, "libpmem") for op in ("persist", "flush+drain") for s in SIZES]
    rows += [("memcpy_persist", s, "libpmem") for s in COPY_SIZES]
    rows += [("msync", 4096, "mmap.flush"), ("msync", 4096, "libpmem"),
             ("msync clean", 4096, "mmap.flush")]
    for op, size, who in rows:
        mine = best.get((op, size, "pmemkit"))
        theirs = best.get((op, size, who))
        if mine is None or (theirs is None and who != "libpmem"):
            continue
        ratio = mine / theirs if theirs else None
        target = TARGETS.get((op, size, who))
        verdict = ""
        if target is not None and ratio is not None:
            ok = ratio >= target
            verdict = f">= {target:.2f} {'ok' if ok else 'MISSED'}"
            if not ok:
                missed.append((op, size, who, ratio, target))
        extra = (f"  ({mine * size / 1e9:.1f} GB/s)" if op == "memcpy_persist" and size >= 65536
                 else "")
        anchor_name = ("mmap.flush()" if who == "mmap.flush"
                       else "pmem_msync" if op == "msync" else who)
        print(f"{op:<15} {size:>8} {mine:>14,.0f} {anchor_name:>11} "
              f"{theirs if theirs else float('nan'):>13,.0f} "
              f"{ratio if ratio is not None else float('nan'):>6.2f}  {verdict}{extra}")
    print(f"msync path: persist(100, 1) synced {nbytes / max(calls, 1):.0f} bytes per msync(2) "
          f"call (the one page asked for), {calls} calls")
    for op, size, who, ratio, target in missed:
        print(f"MISSED: {op} {size} B vs {who}: ratio {ratio:.2f} < {target}", file=sys.stderr)
    return 1 if (missed and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
