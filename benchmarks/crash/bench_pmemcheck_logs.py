"""Time to a verdict on real pmemcheck logs: `pmemkit crash` vs pmreorder (same log, same checker).

The logs are tests/crash/data/pmemcheck (written by pmemcheck for the C programs in its src/);
the checkers are those programs' check modes, built here with gcc. For each log this runs

* ``pmemkit crash LOG --check PROG c`` (the anchor: the engine pmreorder is asked for, mapped
  to pmemkit's: ReorderFull -> exhaustive),
* for a program with a ``serve`` mode, ``pmemkit crash LOG --persistent --check PROG serve``
  (one checker process, line protocol) with the models x86 (the default) and x86-line (Px86:
  a cache line is written back as a snapshot, as real hardware does), each with 1 and 2
  ``--workers`` (one checker process per worker), and
* pmreorder (if ``--pmreorder DIR`` or ``$PMREORDER_DIR`` points at PMDK's src/tools/pmreorder)
  with the same engine, on a copy of the pool restored before the run, within ``--budget``
  seconds (a run cut by the budget is reported as "> budget", never as a time),

and prints both verdicts, both times, the distinct images pmemkit checked and the ratio, all
measured in this run (``--log NAME`` runs only the logs named).

    .venv/bin/python benchmarks/crash/bench_pmemcheck_logs.py --pmreorder /tmp/pmreorder
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "crash" / "data" / "pmemcheck"
RECORDED_IN = "/work/ext/logs/"

#: (log, program, pools {name: size or the gzipped initial pool in DATA}, pmreorder engine,
#: pmreorder -x config). objreorder.log is PMDK's obj_reorder_basic test on a 32 MiB pool, with
#: its settings (ReorderFull, PMREORDER_MARKER_WRITE=ReorderPartial).
CASES = (
    ("flag_g.log", "flag", {"pool": 4096}, "ReorderFull", None),
    ("flag_b.log", "flag", {"pool": 4096}, "ReorderFull", None),
    ("flag_m_libmarkers.log", "flag", {"pool": 4096}, "ReorderFull",
     '{"pmem_memset_persist": "NoReorderNoCheck", "CHANGE": "ReorderFull"}'),
    ("stack.log", "stack", {"pool": 4096}, "ReorderFull", None),
    ("objtx_tx.log", "objtx", {"objpool": "objpool.initial.gz"}, "ReorderAccumulative", None),
    ("objtx_bad.log", "objtx", {"objpool": "objpool.initial.gz"}, "ReorderAccumulative", None),
    ("objreorder.log", "objreorder", {"objreorder32": "objreorder32.initial.gz"}, "ReorderFull",
     '{"PMREORDER_MARKER_WRITE": "ReorderPartial"}'),
)
#: programs with a ``serve`` mode (persistent checker)
SERVES = ("objreorder",)
#: their extra rows: (label, model, workers)
SERVE_ROWS = (
    ("  --persistent", "x86", 1),
    ("  --persistent -w 2", "x86", 2),
    ("  --persistent x86-line", "x86-line", 1),
    ("  ... x86-line -w 2", "x86-line", 2),
)
ENGINE = {"ReorderFull": "exhaustive", "ReorderAccumulative": "prefix"}


def build(tmp):
    progs = {}
    libs_of = {"flag": ["-lpmem"], "stack": ["-lpmem"], "objtx": ["-lpmemobj", "-lpmem"],
               "objreorder": ["-lpmemobj", "-lpmem"]}
    for name, libs in libs_of.items():
        out = tmp / name
        subprocess.run(["gcc", "-O0", "-g", "-o", str(out), str(DATA / "src" / f"{name}.c"), *libs],
                       check=True)
        progs[name] = str(out)
    return progs


def make_pools(tmp, pools):
    """Pool files as they were before the logged run; returns {logged path: our path}."""
    out = {}
    for name, size in pools.items():
        path = tmp / name
        if isinstance(size, str):
            path.write_bytes(gzip.decompress((DATA / size).read_bytes()))
        else:
            path.write_bytes(bytes(size))
        out[RECORDED_IN + name] = path
    return out


def local_log(tmp, log, mapping):
    text = (DATA / log).read_text()
    for old, new in mapping.items():
        text = text.replace(old + ";", f"{new};")
    path = tmp / log
    path.write_text(text)
    return path


def run_pmemkit(tmp, log, prog, pools, engine, config, persistent=False, model=None,
                workers=1):
    """(exit status, seconds, distinct images checked or None)."""
    mapping = make_pools(tmp, pools)
    path = local_log(tmp, log, mapping)
    argv = [sys.executable, "-m", "pmemkit", "crash", str(path), "--engine", ENGINE[engine],
            "--json", "--workers", str(workers)]
    if model:
        argv += ["--model", model]
    if config:
        argv += ["-x", ",".join(f"{k}={v}" for k, v in json.loads(config).items())]
    argv += ["--persistent", "--check", prog, "serve"] if persistent else ["--check", prog, "c"]
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True)
    t = time.perf_counter() - t0
    try:
        images = json.loads(r.stdout)["unique_images"]
    except (ValueError, KeyError, TypeError):
        images = None
    return r.returncode, t, images


def run_pmreorder(tmp, pmreorder, log, prog, pools, engine, config, budget):
    mapping = make_pools(tmp, pools)
    path = local_log(tmp, log, mapping)
    argv = [sys.executable, str(Path(pmreorder) / "pmreorder.py"), "-l", str(path), "-r", engine,
            "-o", str(tmp / "pmreorder.out"), "-p", f"{prog} c"]
    if config:
        conf = tmp / "pmreorder.conf"
        conf.write_text(config)
        argv[-2:-2] = ["-x", str(conf)]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return None, budget
    return r.returncode, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pmreorder", default=os.environ.get("PMREORDER_DIR"),
                    help="PMDK's src/tools/pmreorder directory")
    ap.add_argument("--budget", type=float, default=300.0,
                    help="seconds pmreorder may take per log")
    ap.add_argument("--log", action="append", choices=[c[0] for c in CASES],
                    help="run only this log (repeat for more; default: all)")
    args = ap.parse_args()
    if shutil.which("gcc") is None:
        sys.exit("gcc is needed to build the checkers")
    with tempfile.TemporaryDirectory(prefix="pmemkit-bench-") as d:
        tmp = Path(d)
        progs = build(tmp)
        print(f"{'log':24} {'engine':20} {'pmemkit':>16} {'images':>7} {'pmreorder':>22} "
              f"{'ratio':>8}")
        for log, prog, pools, engine, config in CASES:
            if args.log and log not in args.log:
                continue
            work = tmp / log.replace(".", "_")
            work.mkdir()
            pmr = None
            if args.pmreorder:
                (work / "pmr").mkdir()
                pmr = run_pmreorder(work / "pmr", args.pmreorder, log, progs[prog], pools,
                                    engine, config, args.budget)
            runs = [(log, False, None, 1)]
            if prog in SERVES:
                runs += [(label, True, model, w) for label, model, w in SERVE_ROWS]
            for n, (label, persistent, model, workers) in enumerate(runs):
                mine_dir = work / f"run{n}"
                mine_dir.mkdir()
                rc, t, images = run_pmemkit(mine_dir, log, progs[prog], pools, engine, config,
                                            persistent, model, workers)
                print(f"{label:24} {engine:20} {f'exit {rc} {t:6.2f} s':>16} "
                      f"{'?' if images is None else images:>7} {_versus(pmr, t)}", flush=True)


def _versus(pmr, t):
    """pmreorder's column and the ratio pmreorder / pmemkit (> 1: pmemkit is faster)."""
    if pmr is None:
        return f"{'not run':>22} {'':>8}"
    prc, pt = pmr
    if prc is None:
        return f"{f'> {pt:.0f} s (budget)':>22} {f'> {pt / t:.0f}x':>8}"
    return f"{f'exit {prc} {pt:6.2f} s':>22} {f'{pt / t:.3g}x':>8}"

if __name__ == "__main__":
    main()
