"""Crash exploration: pmemkit vs PMDK's pmreorder on the same pmemcheck traces.

For 4, 8, 12 and 16 pending 8-byte stores per barrier (3 barriers, each store
flushed, then one fence) this exports the trace as a pmemcheck store log, then:

* pmemkit reads that log back and explores it exhaustively (x86 model) with
  - the C checker called in-process (ctypes on the image buffer),
  - the C checker as an external program, one process per image (pmreorder's convention),
  - the C checker as a persistent process speaking pmemkit's line protocol;
* pmreorder (if ``--pmreorder DIR`` or ``$PMREORDER_DIR`` points at PMDK's
  src/tools/pmreorder) runs ReorderFull on the same log with the same checker as a
  ctypes library ("lib") and as a program ("prog"), within a time budget.

Printed: crash states visited, unique images checked, states/s, time to a complete
verdict and the ratios. Where pmreorder cannot finish, its time is projected from
its measured rate and labelled so; where it is absent, the issue's figures are used
and labelled so.

    .venv/bin/python benchmarks/crash/bench_crash.py --pmreorder /tmp/pmreorder
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pmemkit import crash
from pmemkit.crash import pmemcheck

HERE = Path(__file__).resolve().parent
SIZE = 4096
BARRIERS = 3
#: pmreorder is run (within --budget) on traces up to this many ReorderFull states, projected
#: beyond.
MAX_RUN_STATES = 1_000_000
#: pmreorder figures measured when the issue was written (used only without a pmreorder checkout).
ISSUE_FIGURES = {"inproc_rate": 20_000.0, "external_rate": 650.0}


def workload(n):
    def run(pm):
        for epoch in range(1, BARRIERS + 1):
            for i in range(n):
                pm.write(i * 64, ((epoch << 32) | (i + 1)).to_bytes(8, "little"))
                pm.flush(i * 64, 8)
            pm.drain()
    return run


def reorder_full_states(n):
    """States pmreorder's ReorderFull visits: every ordered subset at each barrier."""
    return BARRIERS * sum(math.perm(n, k) for k in range(n + 1))


def build_checker(out):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("bench_crash: a C compiler (cc/gcc) is needed to build the checker")
    exe, lib = out / "check_slots", out / "libcheck_slots.so"
    subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "check_slots.c")], check=True)
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-DCHECK_LIB", "-o", str(lib),
                    str(HERE / "check_slots.c")],
                   check=True)
    return exe, lib


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t


def run_pmreorder(pmreorder, log, pool, checker_args, budget):
    """Run pmreorder ReorderFull; return (seconds, finished)."""
    pool.write_bytes(bytes(SIZE))
    argv = [sys.executable, str(pmreorder / "pmreorder.py"), "-l", str(log), "-r", "ReorderFull",
            "-o", str(log.with_suffix(".pmreorder.txt")), "-e", "warning", *checker_args]
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        return budget, False
    took = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"pmreorder failed (status {proc.returncode}): "
                 f"{err.decode(errors='replace')[-2000:]}")
    return took, True


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pending", type=int, nargs="+", default=[4, 8, 12, 16])
    ap.add_argument("--out", type=Path, default=None,
                    help="where traces, images and checkers go, kept (default: a temp dir on "
                         "/dev/shm, removed at exit)")
    ap.add_argument("--pmreorder", type=Path, default=os.environ.get("PMREORDER_DIR"),
                    help="directory holding PMDK's pmreorder.py (default: $PMREORDER_DIR)")
    ap.add_argument("--budget", type=float, default=120.0,
                    help="seconds pmreorder may run per measurement before it is stopped (default "
                         "120)")
    ap.add_argument("--oneshot-max", type=int, default=12,
                    help="largest pending count for the one-process-per-image checker (default 12)")
    args = ap.parse_args()
    # SIGTERM (timeout, a cancelled job) unwinds like Ctrl-C, so the temp dir is removed
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # tmpfs: pmreorder msyncs its image after every store, which costs ~1 ms on a disk and ~1 us on
    # tmpfs
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    out = args.out
    if out is None:     # a directory of our own: removed at exit, pass or fail
        out = Path(tempfile.mkdtemp(prefix="pmemkit-bench-crash-", dir=shm))
        atexit.register(shutil.rmtree, out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    exe, lib = build_checker(out)
    clib = ctypes.CDLL(str(lib))
    clib.check_slots_buf.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    clib.check_slots_buf.restype = ctypes.c_int
    cbuf = clib.check_slots_buf

    def inproc_check(img):
        return cbuf(bytes(img), SIZE) == 0

    pmr = args.pmreorder
    if pmr is not None and not (pmr / "pmreorder.py").is_file():
        sys.exit(f"bench_crash: {pmr}/pmreorder.py not found")
    print(f"traces (pmemcheck format) and checkers in {out}")
    print("anchor: "
          f"{'pmreorder from ' + str(pmr) if pmr else 'NOT RUN here - figures from issue 4'}")
    rates = {"inproc": None, "external": None}
    startup = 0.0
    if pmr is not None:
        # pmreorder's own start-up (interpreter, imports, log parsing), subtracted from rates
        empty = out / "empty.log"
        pool = out / "pool-empty.img"
        empty.write_text(f"START|REGISTER_FILE;{pool};0x7f0000000000;{SIZE:#x};0x0|STOP")
        startup = min(run_pmreorder(pmr, empty, pool, ["-c", "prog", "-p", str(exe)],
                                    args.budget)[0]
                      for _ in range(3))
        print(f"pmreorder start-up (empty log): {startup:.2f} s - excluded from its rates, "
              "included in its times")
    rows = []
    for n in args.pending:
        log = out / f"pending-{n}.log"
        pool = out / f"pool-{n}.img"
        pool.write_bytes(bytes(SIZE))
        pmemcheck.write_log(pmemcheck.record(workload(n), SIZE), log, name=str(pool))
        trace = pmemcheck.read_log(log)
        row = {"n": n, "pmr_states": reorder_full_states(n)}
        r, t = timed(lambda trace=trace: crash.explore(
            trace, inproc_check, size=SIZE, engine="exhaustive", progress=None))
        assert r.ok, r
        row.update(states=r.states_checked, unique=r.unique_images, inproc=t)
        r, t = timed(lambda trace=trace: crash.explore(
            trace, crash.PersistentChecker([str(exe), "--persistent"]), size=SIZE,
            engine="exhaustive", progress=None))
        assert r.ok and r.unique_images == row["unique"], r
        row["persistent"] = t
        if n <= args.oneshot_max:
            r, t = timed(lambda trace=trace: crash.explore(
                trace, [str(exe)], size=SIZE, engine="exhaustive", progress=None))
            assert r.ok and r.unique_images == row["unique"], r
            row["oneshot"] = t
        else:
            row["oneshot"] = None
        # pmreorder, same log, same checker
        for kind, checker_args in (("inproc", ["-c", "lib", "-p", str(lib), "-n", "check_slots"]),
                                   ("external", ["-c", "prog", "-p", str(exe)])):
            key = f"pmr_{kind}"
            predicted = startup + row["pmr_states"] / rates[kind] if rates[kind] else 0.0
            if pmr is None:
                rate = ISSUE_FIGURES[f"{kind}_rate"]
                row[key] = (row["pmr_states"] / rate, "from the issue's rate")
            elif row["pmr_states"] > MAX_RUN_STATES:
                row[key] = (predicted, "projected from its rate measured here")
            else:
                took, finished = run_pmreorder(pmr, log, pool, checker_args, args.budget)
                if finished:
                    rates[kind] = row["pmr_states"] / max(took - startup, 1e-3)
                    row[key] = (took, "measured")
                else:
                    # did not finish: the budget is a measured lower bound; ratios use it
                    row[key] = (took, f"stopped unfinished after {took:.0f} s: a lower bound"
                                      + (f"; projected {predicted:,.0f} s" if predicted else ""))
            row[f"{key}_rate"] = rates[kind] or ISSUE_FIGURES[f"{kind}_rate"]
        rows.append(row)
        print_row(row)
    print()
    print("pmreorder rates measured here: "
          + ", ".join(f"{k} {v:,.0f} states/s" for k, v in rates.items() if v)
          if any(rates.values())
          else "pmreorder rates: issue figures (in-process 20,000 states/s, external 650 states/s)")


def fmt_t(t):
    return "-" if t is None else f"{t:,.2f} s" if t < 1e5 else f"{t:.2e} s"


def print_row(row):
    n = row["n"]
    print(f"\n== {n} pending 8-byte stores per barrier ({BARRIERS} barriers) ==")
    print(f"  crash states: pmemkit {row['states']:,} visited, {row['unique']:,} unique images "
          f"checked; pmreorder ReorderFull {row['pmr_states']:,} states")
    rate = row["states"] / row["inproc"]
    urate = row["unique"] / row["inproc"]
    pt, how = row["pmr_inproc"]
    prate = row["pmr_inproc_rate"]
    print(f"  in-process : pmemkit {fmt_t(row['inproc'])} ({rate:,.0f} states/s, {urate:,.0f} "
          f"images/s) | pmreorder {fmt_t(pt)} [{how}] ({prate:,.0f} states/s net of start-up)")
    print(f"               ratio: {rate / prate:,.1f}x states/s, {pt / row['inproc']:,.1f}x sooner "
          "to a verdict")
    et, ehow = row["pmr_external"]
    print(f"  external   : pmreorder {fmt_t(et)} [{ehow}]")
    if row["oneshot"] is not None:
        print(f"               pmemkit one process per image {fmt_t(row['oneshot'])}: "
              f"{et / row['oneshot']:,.0f}x sooner")
    print(f"               pmemkit persistent checker     {fmt_t(row['persistent'])}: "
          f"{et / row['persistent']:,.0f}x sooner")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
