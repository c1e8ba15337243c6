"""Crash exploration on executors: 1 vs 2 Dask workers, and the cost of a task.

The workload of ``bench_crash.py`` (``--pending`` 8-byte stores per barrier, 3
barriers, x86 model, exhaustive) is checked by the benchmark's C checker
(``check_slots.c``) run as an external program, one process per image
(pmreorder's convention), in these configurations, in one run:

* ``in-process``: ``crash.explore`` with no executor (the anchor);
* ``dask 1`` / ``dask 2``: a ``distributed.LocalCluster`` (127.0.0.1) with 1 and 2
  worker processes of one thread each; scaling efficiency = rate(2) / (2 * rate(1)).

The per-task overhead is measured with an in-process checker that accepts every
image: ``(time on a one-thread executor - time in-process) / tasks``.

    .venv/bin/python benchmarks/crash/bench_executors.py --pending 10
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pmemkit import crash, defaults

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_crash import workload  # noqa: E402 - the same workload as the pmreorder comparison


def build_checker(out):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("bench_executors: a C compiler (cc/gcc) is needed to build the checker")
    exe = out / "check_slots"
    subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "check_slots.c")], check=True)
    return exe


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pending", type=int, default=10)
    ap.add_argument("--task-states", type=int, default=defaults.CRASH_TASK_STATES)
    args = ap.parse_args()
    import dask
    import distributed

    defaults.CRASH_TASK_STATES = args.task_states
    out = Path(tempfile.mkdtemp(prefix="pmemkit-bench-exec-"))
    try:
        exe = build_checker(out)
        wl = workload(args.pending)
        kw = dict(size=4096, model="x86", engine="exhaustive")
        ref, t_in = timed(lambda: crash.explore(wl, [str(exe)], **kw))
        rows = [("in-process", t_in, ref)]
        for n in (1, 2):
            with (
                dask.config.set({"temporary-directory": str(out)}),  # no dask-scratch-space left
                distributed.LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                ) as cluster,
                distributed.Client(cluster) as client,
            ):
                r, t = timed(lambda: crash.explore(wl, [str(exe)], executor=client, **kw))
            assert (r.unique_images, r.violation_count) == (ref.unique_images, ref.violation_count)
            rows.append((f"dask {n}", t, r))
        print(
            f"workload: {args.pending} pending stores x 3 barriers, {ref.unique_images} distinct "
            f"images, external C checker (one process per image), tasks of {args.task_states}"
        )
        for name, t, r in rows:
            print(f"  {name:<11} {t:8.2f} s  {r.unique_images / t:8.1f} images/s")
        r1, r2 = rows[1][2].unique_images / rows[1][1], rows[2][2].unique_images / rows[2][1]
        print(f"  scaling efficiency dask 2 vs dask 1: {100 * r2 / (2 * r1):.0f} %")
        print(f"  dask 1 vs in-process: {rows[1][1] / t_in:.2f}x the time")
        # per-task overhead, trivial in-process checker
        accept = lambda img: True  # noqa: E731
        _, t0 = timed(lambda: crash.explore(wl, accept, **kw))
        with ThreadPoolExecutor(1) as pool:
            r, t1 = timed(lambda: crash.explore(wl, accept, executor=pool, **kw))
        tasks = -(-r.unique_images // args.task_states)
        print(
            f"  trivial checker: in-process {t0:.3f} s, one-thread executor {t1:.3f} s, "
            f"{tasks} tasks: {1e3 * (t1 - t0) / tasks:.2f} ms overhead per task "
            f"({1e6 * (t1 - t0) / r.unique_images:.1f} us per image)"
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
