"""`pmemkit vm test` from a user's project: time to the first test result, and a cold layer build.

    python benchmarks/vm/bench_vm_project.py            # warm runs (the layer is built first,
                                                        # untimed, if missing)
    python benchmarks/vm/bench_vm_project.py --cold     # also a cold layer build (debootstrap
                                                        # with gcc make libpmemobj-dev + one pip
                                                        # package, in a scratch cache; ~2-4 min)

Figures (median of ``--repeat`` runs, memmap=512M!1G, TCG here):

* anchor (same run): ``pmemkit vm test -- tests/mapping -v`` from pmemkit's checkout, warm cache,
  wall time from the start of the command to the first ``PASSED``/``FAILED``/``SKIPPED`` line;
* the same for the fixture project tests/vm/project_fixture (copied to a temporary directory,
  its own guest layer: PyPI dependency, gcc, make, libpmemobj-dev), printed with its ratio;
* ``--cold``: wall time of building that project's layer from nothing (no kernel, no boot).

These machines have 2 cores shared with other work: expect noise, compare ratios.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pmemkit import defaults  # noqa: E402
from pmemkit.vm import guest  # noqa: E402
from pmemkit.vm.project import load_project  # noqa: E402
from pmemkit.vm.runner import project_layer  # noqa: E402
from pmemkit.vm.config import VmConfig  # noqa: E402

FIXTURE = ROOT / "tests" / "vm" / "project_fixture"
_RESULT = re.compile(r" (PASSED|FAILED|SKIPPED|ERROR)\b")


def to_first_result(cwd, pytest_args):
    """Seconds from starting `pmemkit vm test` to its first test result line, and the total."""
    start = time.monotonic()
    first = None
    with subprocess.Popen([sys.executable, "-m", "pmemkit", "vm", "test", "-q", "--memmap",
                           defaults.MEMMAP_SMALL, "--", *pytest_args], cwd=cwd, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        for line in proc.stdout:
            if first is None and _RESULT.search(line):
                first = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"pmemkit vm test failed in {cwd} (exit {proc.returncode})")
    return first, time.monotonic() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cold", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pmemkit-bench-project-") as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(FIXTURE, project)
        to_first_result(project, ["-v"])                        # build the layer, untimed
        rows = {"pmemkit tests/mapping (anchor)": [], "fixture project": []}
        for _ in range(args.repeat):
            anchor_run = to_first_result(ROOT, ["tests/mapping", "-v"])
            rows["pmemkit tests/mapping (anchor)"].append(anchor_run)
            rows["fixture project"].append(to_first_result(project, ["-v"]))
        anchor = statistics.median(first for first, _ in rows["pmemkit tests/mapping (anchor)"])
        print(f"{'run':34} {'first result':>13} {'ratio':>6} {'total':>8}")
        for name, runs in rows.items():
            first = statistics.median(f for f, _ in runs)
            total = statistics.median(t for _, t in runs)
            print(f"{name:34} {first:12.1f}s {first / anchor:6.2f} {total:7.1f}s")
        if args.cold:
            config = VmConfig(memmap=defaults.MEMMAP_SMALL, share=project)
            layer = project_layer(config, load_project(project, project))
            cache = Path(tmp) / "cache"
            start = time.monotonic()
            guest.build_rootfs(cache_root=cache, layer=layer)
            what = f"{' '.join(layer.all_packages())}; pip {' '.join(layer.pip)}"
            print(f"cold layer build ({what}): {time.monotonic() - start:.1f}s")


if __name__ == "__main__":
    main()
