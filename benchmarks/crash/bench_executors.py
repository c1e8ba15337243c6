"""Crash exploration on executors: 1 vs 2 Dask workers, and the cost of a task.

The workload of ``bench_crash.py`` (``--pending`` 8-byte stores per barrier, 3
barriers, x86 model, exhaustive) is checked by the benchmark's C checker
(``check_slots.c``) run as an external program, one process per image
(pmreorder's convention), in these configurations, in one run:

* ``in-process``: ``crash.explore`` with no executor (the anchor);
* ``dask 1`` / ``dask 2``: a ``distributed.LocalCluster`` (127.0.0.1) with 1 and 2
  worker processes of one thread each; scaling efficiency = rate(2) / (2 * rate(1)).

Each configuration runs ``--repeat`` times; the medians are printed and used.

The per-task overhead is measured with a checker that accepts every image, so that
only the distribution is timed: each executor runs the exploration with tasks of
``--task-states`` and of a quarter of that; the extra time divided by the extra
tasks is the cost of one task (the fixed cost of a run, such as sending the trace
to the workers once, cancels out). Executors: a one-thread pool, the fork process
pool of ``workers=N`` (``concurrent.futures.ProcessPoolExecutor``) and a one-worker
Dask cluster; ``crash.explore`` with no executor is the anchor.

    .venv/bin/python benchmarks/crash/bench_executors.py --pending 10 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
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


def accept(image):
    """A checker that accepts every image (module level: process pools pickle it)."""
    return True


def median_run(fn, repeat):
    """(result of the last run, median seconds) over ``repeat`` runs of ``fn``."""
    times = []
    for _ in range(repeat):
        r, t = timed(fn)
        times.append(t)
    return r, statistics.median(times)


def task_overhead(wl, kw, executor, task_states, repeat):
    """Seconds per task on ``executor`` (None: explore with no executor): the slope of the time
    against the number of tasks, between tasks of ``task_states`` and of a quarter of that."""
    points = []
    for n in (task_states, max(task_states // 4, 1)):
        defaults.CRASH_TASK_STATES = defaults.CRASH_TASK_MIN_STATES = n  # tasks of n, fixed
        r, t = median_run(lambda: crash.explore(wl, accept, executor=executor, **kw), repeat)
        points.append((-(-r.unique_images // n), t, r.unique_images))
    (n1, t1, images), (n2, t2, _) = points
    return (t2 - t1) / (n2 - n1), t1, n1, images


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pending", type=int, default=10)
    ap.add_argument("--task-states", type=int, default=256,
                    help="images per task of the per-task overhead measurement")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--overhead-pending", type=int, default=12,
                    help="pending stores of the workload the per-task overhead is measured on")
    args = ap.parse_args()
    import dask
    import distributed

    out = Path(tempfile.mkdtemp(prefix="pmemkit-bench-exec-"))
    try:
        exe = build_checker(out)
        wl = workload(args.pending)
        kw = dict(size=4096, model="x86", engine="exhaustive")
        most, least = defaults.CRASH_TASK_STATES, defaults.CRASH_TASK_MIN_STATES
        ref, t_in = median_run(lambda: crash.explore(wl, [str(exe)], **kw), args.repeat)
        rows = [("in-process", t_in, ref)]

        def cluster(n):
            return distributed.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            )

        with dask.config.set({"temporary-directory": str(out)}):  # no dask-scratch-space left
            for n in (1, 2):
                with cluster(n) as c, distributed.Client(c) as client:
                    r, t = median_run(
                        lambda client=client: crash.explore(wl, [str(exe)], executor=client, **kw),
                        args.repeat,
                    )
                assert (r.unique_images, r.violation_count) == (ref.unique_images,
                                                                ref.violation_count)
                rows.append((f"dask {n}", t, r))
            print(
                f"workload: {args.pending} pending stores x 3 barriers, {ref.unique_images} "
                f"distinct images, external C checker (one process per image), tasks sized "
                f"by the checker's speed, median of {args.repeat} runs"
            )
            for name, t, r in rows:
                print(f"  {name:<11} {t:8.2f} s  {r.unique_images / t:8.1f} images/s")
            r1, r2 = rows[1][2].unique_images / rows[1][1], rows[2][2].unique_images / rows[2][1]
            print(f"  scaling efficiency dask 2 vs dask 1: {100 * r2 / (2 * r1):.0f} %")
            print(f"  dask 1 vs in-process: {rows[1][1] / t_in:.2f}x the time")

            owl = workload(args.overhead_pending)
            print(f"per-task overhead, a checker that accepts every image, {args.overhead_pending} "
                  f"pending stores x 3 barriers, tasks of {args.task_states} and "
                  f"{max(args.task_states // 4, 1)}:")
            with (ThreadPoolExecutor(1) as threads, ProcessPoolExecutor(1) as procs,
                  cluster(1) as c, distributed.Client(c) as client):
                for name, ex in (("no executor", None), ("thread pool 1", threads),
                                 ("process pool 1", procs), ("dask 1", client)):
                    if ex is None:
                        r, t = median_run(lambda: crash.explore(owl, accept, **kw),
                                          args.repeat)
                        print(f"  {name:<15} {t:7.3f} s  {r.unique_images} images (anchor)")
                        continue
                    per, t1, n1, images = task_overhead(owl, kw, ex, args.task_states,
                                                        args.repeat)
                    print(f"  {name:<15} {t1:7.3f} s  {n1} tasks, {images} images: "
                          f"{1e3 * per:6.2f} ms per task")
                    defaults.CRASH_TASK_STATES, defaults.CRASH_TASK_MIN_STATES = most, least
                    r, t = median_run(lambda ex=ex: crash.explore(owl, accept, executor=ex, **kw),
                                      args.repeat)
                    print(f"  {'':<15} {t:7.3f} s  with tasks sized by the checker's speed")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
