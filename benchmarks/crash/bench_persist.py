"""Per-persist cost of the crash simulator against the region's size.

The workload makes ``--ops`` writes of 8 bytes, each persisted (flush + fence),
``spread`` over the region (one page apart where the region allows: the pages
written grow with the region up to ``--ops``) or ``packed`` into the first
8 * ``--ops`` bytes (the same pages at every size), under
``crash.explore`` with a trivial checker; once with no view of the region held
and once with a numpy view (``pm.array``) held for the whole workload, as any
numpy user does. Printed: milliseconds per run and per persist, and each size's
cost as a ratio of the smallest size's in the same run.

    .venv/bin/python benchmarks/crash/bench_persist.py --sizes 64K 1M 16M 64M 1G
"""

from __future__ import annotations

import argparse
import resource
import time

from pmemkit import crash
from pmemkit.units import parse_size


def workload(ops, view, pattern):
    def run(pm):
        arr = pm.array("u8") if view else None
        step = max(8, (pm.size // ops) // 8 * 8) if pattern == "spread" else 8
        for i in range(ops):
            off = (i * step) % (pm.size - 8) // 8 * 8
            pm.write(off, (i + 1).to_bytes(8, "little"))
            pm.persist(off, 8)
        del arr

    return run


def measure(size, ops, view, pattern, repeat):
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        report = crash.explore(
            workload(ops, view, pattern), lambda img: True, size=size, progress=None
        )
        took = time.perf_counter() - t
        assert report.ok and report.complete, report
        best = took if best is None else min(best, took)
    return best


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", nargs="+", default=["64K", "1M", "16M", "64M", "1G"])
    ap.add_argument("--ops", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--views", choices=("both", "no", "yes"), default="both")
    ap.add_argument(
        "--patterns", nargs="+", choices=("spread", "packed"), default=["spread", "packed"]
    )
    args = ap.parse_args()
    views = {"both": (False, True), "no": (False,), "yes": (True,)}[args.views]
    base = {}
    print(
        f"{'region':>8} {'pattern':>8} {'view':>5} {'ms/run':>10} {'us/persist':>11} {'ratio':>7} "
        f"{'maxrss MiB':>11}"
    )
    for text in args.sizes:
        size = parse_size(text)
        for pattern in args.patterns:
            for view in views:
                took = measure(size, args.ops, view, pattern, args.repeat)
                base.setdefault((pattern, view), took)
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(
                    f"{text:>8} {pattern:>8} {'yes' if view else 'no':>5} {took * 1e3:10.1f} "
                    f"{took / args.ops * 1e6:11.1f} {took / base[pattern, view]:7.2f} {rss:11.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
