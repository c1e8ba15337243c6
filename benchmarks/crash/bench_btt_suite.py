"""The BTT atomic-sector crash suite on a large image against a small one.

Runs ``pmemkit.btt.crashsuite`` (BTT mode, every workload) on images of each
``--sizes`` and prints the time, states checked and the ratio to the first size
in the same run. The states are the same at every size; only the image grows.
``--simulator-only`` runs the same sector writes under ``crash.explore`` with a
checker that accepts every image: the cost of tracing and enumerating alone,
without the suite's checker (which opens each image read-only, with no copy, and checks
the BTT only where the image differs from the initial one).

    .venv/bin/python benchmarks/crash/bench_btt_suite.py --sizes 1M 64M
    .venv/bin/python benchmarks/crash/bench_btt_suite.py --sizes 1M 16M 64M --simulator-only
"""

from __future__ import annotations

import argparse
import time

from pmemkit import crash
from pmemkit.btt import crashsuite
from pmemkit.btt.device import Btt
from pmemkit.units import parse_size


def simulator_only(sizes, writes, workloads):
    first = None
    print(f"{'image':>8} {'seconds':>9} {'states':>8} {'ms/write':>9} {'ratio':>7}")
    for text in sizes:
        cfg = crashsuite.SuiteConfig(size=parse_size(text), writes=writes)
        took = states = nops = 0
        for name in workloads:
            initial, nlba, nlane, _ = crashsuite._initial_image("btt", cfg)
            ops = crashsuite.build_ops(name, cfg, nlba, nlane)
            run = crashsuite._workload_fn("btt", ops, cfg.lbasize, Btt)
            t = time.perf_counter()
            r = crash.explore(run, lambda image: True, initial=initial, model=cfg.model)
            took += time.perf_counter() - t
            states += r.states_checked
            nops += len(ops)
        first = first or took
        print(f"{text:>8} {took:9.2f} {states:8} {took / nops * 1e3:9.1f} {took / first:7.2f}",
              flush=True)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", nargs="+", default=["1M", "64M"])
    ap.add_argument("--writes", type=int, default=crashsuite.SuiteConfig.writes)
    ap.add_argument("--workload", action="append", choices=crashsuite.WORKLOADS)
    ap.add_argument("--simulator-only", action="store_true",
                    help="a checker that accepts every image: tracing and enumeration alone")
    args = ap.parse_args()
    if args.simulator_only:
        simulator_only(args.sizes, args.writes, args.workload or crashsuite.WORKLOADS)
        return
    first = None
    print(f"{'image':>8} {'seconds':>9} {'states':>8} {'points':>7} {'complete':>8} {'ratio':>7}")
    for text in args.sizes:
        cfg = crashsuite.SuiteConfig(size=parse_size(text), writes=args.writes)
        t = time.perf_counter()
        rows = crashsuite.run_suite(
            cfg, workloads=args.workload or crashsuite.WORKLOADS, modes=("btt",)
        )
        took = time.perf_counter() - t
        assert all(r.ok for r in rows), rows  # BTT never tears (complete: no point was sampled)
        first = first or took
        print(
            f"{text:>8} {took:9.2f} {sum(r.states for r in rows):8} "
            f"{sum(r.crash_points for r in rows):7} {str(all(r.complete for r in rows)):>8} "
            f"{took / first:7.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
