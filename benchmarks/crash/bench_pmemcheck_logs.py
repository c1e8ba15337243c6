"""Time to a verdict on real pmemcheck logs: `pmemkit crash` vs pmreorder (same log, same checker).

The logs are tests/crash/data/pmemcheck (written by pmemcheck for the C programs in its src/);
the checkers are those programs' check modes, built here with gcc. For each log this runs

* ``pmemkit crash LOG --check PROG c`` (the anchor: the engine pmreorder is asked for, mapped
  to pmemkit's: ReorderFull -> exhaustive), and
* pmreorder (if ``--pmreorder DIR`` or ``$PMREORDER_DIR`` points at PMDK's src/tools/pmreorder)
  with the same engine, on a copy of the pool restored before the run, within ``--budget``
  seconds (a run cut by the budget is reported as "> budget", never as a time),

and prints both verdicts, both times and their ratio, all measured in this run.

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

#: (log, program, pools {name: size or "objpool"}, pmreorder engine, pmreorder -x config)
CASES = (
    ("flag_g.log", "flag", {"pool": 4096}, "ReorderFull", None),
    ("flag_b.log", "flag", {"pool": 4096}, "ReorderFull", None),
    ("flag_m_libmarkers.log", "flag", {"pool": 4096}, "ReorderFull",
     '{"pmem_memset_persist": "NoReorderNoCheck", "CHANGE": "ReorderFull"}'),
    ("stack.log", "stack", {"pool": 4096}, "ReorderFull", None),
    ("objtx_tx.log", "objtx", {"objpool": "objpool"}, "ReorderAccumulative", None),
    ("objtx_bad.log", "objtx", {"objpool": "objpool"}, "ReorderAccumulative", None),
)
ENGINE = {"ReorderFull": "exhaustive", "ReorderAccumulative": "prefix"}


def build(tmp):
    progs = {}
    libs_of = {"flag": ["-lpmem"], "stack": ["-lpmem"], "objtx": ["-lpmemobj", "-lpmem"]}
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
        if size == "objpool":
            path.write_bytes(gzip.decompress((DATA / "objpool.initial.gz").read_bytes()))
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


def run_pmemkit(tmp, log, prog, pools, engine, config):
    mapping = make_pools(tmp, pools)
    path = local_log(tmp, log, mapping)
    argv = [sys.executable, "-m", "pmemkit", "crash", str(path), "--engine", ENGINE[engine]]
    if config:
        argv += ["-x", ",".join(f"{k}={v}" for k, v in json.loads(config).items())]
    argv += ["--check", prog, "c"]
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True)
    return r.returncode, time.perf_counter() - t0


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
    args = ap.parse_args()
    if shutil.which("gcc") is None:
        sys.exit("gcc is needed to build the checkers")
    with tempfile.TemporaryDirectory(prefix="pmemkit-bench-") as d:
        tmp = Path(d)
        progs = build(tmp)
        print(f"{'log':24} {'engine':20} {'pmemkit':>16} {'pmreorder':>22} {'ratio':>8}")
        for log, prog, pools, engine, config in CASES:
            work = tmp / log.replace(".", "_")
            work.mkdir()
            rc, t = run_pmemkit(work, log, progs[prog], pools, engine, config)
            mine = f"exit {rc} {t:6.2f} s"
            theirs, ratio = "not run", ""
            if args.pmreorder:
                (work / "pmr").mkdir()
                prc, pt = run_pmreorder(work / "pmr", args.pmreorder, log, progs[prog], pools,
                                        engine, config, args.budget)
                if prc is None:
                    theirs, ratio = f"> {pt:.0f} s (budget)", f"> {pt / t:.0f}x"
                else:
                    theirs, ratio = f"exit {prc} {pt:6.2f} s", f"{pt / t:.1f}x"
            print(f"{log:24} {engine:20} {mine:>16} {theirs:>22} {ratio:>8}", flush=True)


if __name__ == "__main__":
    main()
