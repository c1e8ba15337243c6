"""The BTT atomic-sector crash suite on a large image against a small one.

Runs ``pmemkit.btt.crashsuite`` (BTT mode, every workload) on images of each
``--sizes`` and prints the time, states checked and the ratio to the first size
in the same run. The states are the same at every size; only the image grows.

    .venv/bin/python benchmarks/crash/bench_btt_suite.py --sizes 1M 64M
"""

from __future__ import annotations

import argparse
import time

from pmemkit.btt import crashsuite
from pmemkit.units import parse_size


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", nargs="+", default=["1M", "64M"])
    ap.add_argument("--writes", type=int, default=crashsuite.SuiteConfig.writes)
    ap.add_argument("--workload", action="append", choices=crashsuite.WORKLOADS)
    args = ap.parse_args()
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
