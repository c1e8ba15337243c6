#!/usr/bin/env python3
"""Benchmark pmemkit.btt against libpmemblk (C) on the same pool file, in one run.

    .venv/bin/python benchmarks/btt/bench_btt.py [--ops N] [--rounds R] [--dir DIR]

For each block size (4096 and 512) it creates a pool with ``pmempool create blk``,
then alternates R rounds of: the C driver (blkdriver.c, compiled here against
Debian's libpmemblk, run with PMEM_IS_PMEM_FORCE=1) and pmemkit on the same file
(PMEMKIT_FORCE_PMEM=1, so both use the CPU flush path). Both first write every
LBA of a working set of min(nblock, 4096) blocks, then time N rewrites and N reads
of random LBAs from that set. pmemkit is timed for single ``write``/``read`` and
for ``write_many``/``read_many`` (batches of nlane = 256 distinct LBAs, as a
block layer submits them; ``read_many`` fills a reused output array the way the
C loop reuses its buffer). The best round of each side is compared and printed
as a ratio; targets: single >= 0.33x, batched >= 1.0x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = {"write": 0.33, "read": 0.33, "write_many": 1.0, "read_many": 1.0}


def build_driver(workdir):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        sys.exit("bench_btt: no C compiler (apt-get install gcc)")
    exe = Path(workdir) / "blkdriver"
    res = subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "blkdriver.c"), "-lpmemblk"],
                         capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"bench_btt: cannot build the C driver (apt-get install libpmemblk-dev):\n"
                 f"{res.stderr}")
    return exe


def run_c(exe, pool, bsize, ops, seed):
    env = dict(os.environ, PMEM_IS_PMEM_FORCE="1")
    out = subprocess.run([str(exe), str(pool), str(bsize), str(ops), str(seed)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return {"write": float(out[0]), "read": float(out[1])}


PY_WORKER = r"""
import sys, time, json
import numpy as np
from pmemkit.btt import Btt
pool, ops, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
b = Btt.open_pmemblk(pool)
assert b.region.is_pmem, "PMEMKIT_FORCE_PMEM=1 did not take effect"
n = min(b.nlba, 4096)
buf = bytearray(b"\x5a" * b.lbasize)
for i in range(n):
    b.write(i, buf)
rng = np.random.default_rng(seed)
lbas = rng.integers(0, n, ops).tolist()
res = {}
w, r = b.write, b.read
t0 = time.perf_counter()
for i, lba in enumerate(lbas):
    buf[0] = i & 0xFF
    w(lba, buf)
t1 = time.perf_counter()
for lba in lbas:
    r(lba)
t2 = time.perf_counter()
res["write"], res["read"] = ops / (t1 - t0), ops / (t2 - t1)
k = b.nlane
perm = np.concatenate([rng.permutation(n)[: n - n % k] for _ in range(-(-ops // (n - n % k)))])[:ops - ops % k]
data = np.full((k, b.lbasize), 0x5A, dtype=np.uint8)
t0 = time.perf_counter()
for s in range(0, perm.size, k):
    b.write_many(perm[s:s + k], data)
t1 = time.perf_counter()
out = np.empty((k, b.lbasize), dtype=np.uint8)
for s in range(0, perm.size, k):
    b.read_many(perm[s:s + k], out=out)
t2 = time.perf_counter()
res["write_many"], res["read_many"] = perm.size / (t1 - t0), perm.size / (t2 - t1)
problems = b.check()
b.close()
assert not problems, problems
print(json.dumps(res))
"""


def run_py(pool, ops, seed):
    env = dict(os.environ, PMEMKIT_FORCE_PMEM="1")
    out = subprocess.run([sys.executable, "-c", PY_WORKER, str(pool), str(ops), str(seed)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"bench_btt: pmemkit worker failed:\n{out.stderr}")
    import json
    return json.loads(out.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="directory for the pool files (default: a temp dir)")
    args = ap.parse_args(argv)
    if not shutil.which("pmempool"):
        sys.exit("bench_btt: pmempool not found (apt-get install pmdk-tools)")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        exe = build_driver(tmp)
        rows = []
        for bsize in (4096, 512):
            pool = Path(tmp) / f"bench-{bsize}.blk"
            subprocess.run(["pmempool", "create", "blk", str(bsize), str(pool)], check=True)
            best_c, best_py = {}, {}
            for rnd in range(args.rounds):
                c = run_c(exe, pool, bsize, args.ops, rnd + 1)
                p = run_py(pool, args.ops, rnd + 1)
                for key, v in c.items():
                    best_c[key] = max(best_c.get(key, 0), v)
                for key, v in p.items():
                    best_py[key] = max(best_py.get(key, 0), v)
            for op in ("write", "read", "write_many", "read_many"):
                anchor = best_c[op.split("_")[0]]
                rows.append((bsize, op, best_py[op], anchor, best_py[op] / anchor, TARGETS[op]))
    print(f"{'bsize':>6} {'operation':<11} {'pmemkit/s':>12} {'libpmemblk/s':>13} {'ratio':>7} "
          f"{'target':>7}")
    ok = True
    for bsize, op, py, c, ratio, target in rows:
        flag = "" if ratio >= target else "  BELOW TARGET"
        ok &= ratio >= target
        print(f"{bsize:>6} {op:<11} {py:>12,.0f} {c:>13,.0f} {ratio:>6.2f}x {target:>6.2f}x{flag}")
    print(f"(best of {args.rounds} interleaved rounds, {args.ops} ops each; machine load: "
          f"{os.getloadavg()[0]:.2f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
