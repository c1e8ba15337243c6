"""`pmemkit crash run`: tracing overhead per libpmemobj transaction, and time to a verdict vs
pmreorder.

1. Overhead: tests/crash/native/obj_tx.c runs N small transactions (three 8-byte fields
   added and written) on a pool of each ``--sizes``, natively and under pmemkit's
   LD_PRELOAD interposer (PMEM_IS_PMEM_FORCE=1 for both, pools on /dev/shm). The program
   times its transaction loop itself (best of ``--repeat`` runs), so start-up (the
   interposer's shadow copy of the pool) is apart: the whole runs' seconds are printed too.
   Printed: native and traced microseconds per transaction, their ratio, and each size's
   traced cost against the first size's (the goal: 1 GiB within 2x of 8 MiB).
2. Verdict: the same program (``--verdict-tx`` transactions, correct) explored exhaustively
   under the x86 model by ``pmemkit crash run`` (checker ``obj_tx check``, one process per
   image), against PMDK's pmreorder (``--pmreorder DIR`` or $PMREORDER_DIR: src/tools/pmreorder)
   with ReorderFull on the pmemcheck log written by ``pmemkit crash record``, same checker
   (``obj_tx check-copy``: on a copy, since pmreorder replays onto the file it hands the
   checker and pmemobj_open's recovery writes to it), within ``--budget`` seconds.

    .venv/bin/python benchmarks/crash/bench_interpose.py --pmreorder
    /path/to/pmdk/src/tools/pmreorder
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pmemkit import defaults
from pmemkit.crash import native
from pmemkit.units import parse_size

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "tests" / "crash" / "native" / "obj_tx.c"


def build(out):
    exe = out / "obj_tx"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(SRC), "-lpmemobj"], check=True)
    return exe


def loop_seconds(argv, env):
    """Seconds the program's transaction loop took (it prints them), and the whole run's."""
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
    return float(r.stdout.split()[-1]), time.perf_counter() - t


def overhead(exe, out, sizes, n, repeat):
    base_env = dict(os.environ, PMEM_IS_PMEM_FORCE="1")
    trace = out / "trace.bin"
    traced_env = dict(base_env, LD_PRELOAD=str(native.interposer_path()))
    traced_env[defaults.INTERPOSE_TRACE_ENV] = str(trace)
    print(f"1. cost per libpmemobj transaction ({n} transactions timed inside the program, best of "
          f"{repeat})")
    print(f"{'pool':>6} {'native us/tx':>13} {'traced us/tx':>13} {'traced/native':>14} "
          f"{'vs first size':>14} {'run s native':>13} {'run s traced':>13}")
    first = None
    for text in sizes:
        pool = out / f"pool-{text}.obj"
        pristine = out / f"pool-{text}.pristine"
        subprocess.run([str(exe), "create", str(pristine), str(parse_size(text))], check=True,
                       env=base_env)
        per = {}
        whole = {}
        for kind, env in (("native", base_env), ("traced", traced_env)):
            runs = []
            for _ in range(repeat):
                shutil.copyfile(pristine, pool)
                trace.write_bytes(b"")
                runs.append(loop_seconds([str(exe), "run", "correct", str(pool), str(n), "timed"],
                                         env))
            per[kind] = min(r[0] for r in runs) / n * 1e6
            whole[kind] = min(r[1] for r in runs)
        first = first or per["traced"]
        print(f"{text:>6} {per['native']:13.2f} {per['traced']:13.2f} "
              f"{per['traced'] / per['native']:14.1f} {per['traced'] / first:14.2f} "
              f"{whole['native']:13.2f} {whole['traced']:13.2f}",
              flush=True)
        pool.unlink()
        pristine.unlink()
    trace.unlink(missing_ok=True)


def verdict(exe, out, n, pmreorder, budget):
    print(f"2. time to a complete verdict, {n} transaction(s), x86 model, checker one process per "
          "image")
    pristine = out / "verdict.pristine"
    pool = out / "verdict.obj"
    subprocess.run([str(exe), "create", str(pristine)], check=True)
    shutil.copyfile(pristine, pool)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pmemkit", "crash", "run", "--engine", "exhaustive",
                        "--check",
                        str(exe), "check", "--", str(exe), "run", "correct", str(pool), str(n)],
                       capture_output=True, text=True, check=False)
    took = time.perf_counter() - t
    summary = next((line for line in r.stdout.splitlines() if line.startswith("crash exploration")),
                   r.stdout)
    print(f"pmemkit crash run : {took:8.2f} s, exit {r.returncode}: {summary}")
    if r.returncode != 0:
        sys.exit(f"pmemkit crash run did not give an OK: {r.stdout}{r.stderr}")
    shutil.copyfile(pristine, pool)
    log = out / "verdict.log"
    initial = out / "verdict.initial"
    subprocess.run([sys.executable, "-m", "pmemkit", "crash", "record", "-o", str(log),
                    "--initial-out",
                    str(initial), "--", str(exe), "run", "correct", str(pool), str(n)],
                   check=True, stdout=subprocess.DEVNULL)
    if pmreorder is None:
        print("pmreorder          : NOT RUN (give --pmreorder DIR or $PMREORDER_DIR)")
        return
    shutil.copyfile(initial, pool)        # pmreorder replays onto the file the log names
    argv = [sys.executable, str(Path(pmreorder) / "pmreorder.py"), "-l", str(log), "-r",
            "ReorderFull",
            "-o", str(out / "pmreorder.txt"), "-e", "warning", "-c", "prog", "-p",
            f"{exe} check-copy"]
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=budget)
        took_p = time.perf_counter() - t
        text = err.decode(errors="replace").strip().splitlines()
        status = f"exit {proc.returncode}" + (f": {text[-1]}" if text else "")
        print(f"pmreorder (ReorderFull): {took_p:8.2f} s, {status}")
        print(f"ratio pmreorder / pmemkit: {took_p / took:.1f}")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        print(f"pmreorder (ReorderFull): did not finish within {budget:.0f} s (stopped); ratio > "
              f"{budget / took:.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["8M", "1G"])
    ap.add_argument("--transactions", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--verdict-tx", type=int, default=1)
    ap.add_argument("--pmreorder", default=os.environ.get("PMREORDER_DIR"))
    ap.add_argument("--budget", type=float, default=600.0)
    ap.add_argument("--skip-overhead", action="store_true")
    args = ap.parse_args()
    # SIGTERM (timeout, a cancelled job) unwinds like Ctrl-C, so the temp dir is removed
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    out = Path(tempfile.mkdtemp(prefix="pmemkit-bench-interpose-", dir=shm))
    try:
        exe = build(out)
        if not args.skip_overhead:
            overhead(exe, out, args.sizes, args.transactions, args.repeat)
        verdict(exe, out, args.verdict_tx, args.pmreorder, args.budget)
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
