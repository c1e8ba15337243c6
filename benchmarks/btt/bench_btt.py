#!/usr/bin/env python3
"""Benchmark pmemkit.btt against libpmemblk (C) on the same pool file, in one run.

    .venv/bin/python benchmarks/btt/bench_btt.py [--ops N] [--rounds R] [--dir DIR]

For each block size (4096 and 512) it creates a pool with ``pmempool create blk``,
then alternates R rounds of: the C driver (blkdriver.c, compiled here against
Debian's libpmemblk, run with PMEM_IS_PMEM_FORCE=1) and pmemkit on the same file
(PMEMKIT_FORCE_PMEM=1, so both use the CPU flush path). Both first write every
LBA of a working set of min(nblock, 4096) blocks, then time N rewrites and N reads
of random LBAs from that set, each loop cut into slices of which the fastest counts
(timeit's rule: the least disturbed run on a shared machine). Both sides time with the
thread's CPU clock (CLOCK_THREAD_CPUTIME_ID / time.thread_time), so time spent waiting
for the other guests on a busy 2-core machine counts for neither. pmemkit is timed for single
``write``/``read`` and
for ``write_many``/``read_many`` (batches of nlane = 256 distinct LBAs, as a
block layer submits them). The best of each side is compared and printed
as a ratio; targets: single >= 0.33x, batched >= 1.0x.

Like with like: ``read`` is compared with the C loop reading every block into one
reused block buffer (hot in L1; pmemkit returns a new ``bytes`` each time).
``read_many`` fills a reused (256, bsize) output array, so its anchor is the C
driver reading the same kind of batches (256 distinct LBAs of the working set) each
block into its own slot of a reused 256-block buffer: both sides then write the same
amount of distinct destination memory. The ratio against the one-buffer C loop is
printed too (``read_many/1buf``, not a target: at 4 KiB that C loop never leaves L1
for its stores, which no batched reader can match). ``write_many`` is compared with
the C write loop (its source buffer is one hot block; pmemkit's is a 256-block array).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = {"write": 0.33, "read": 0.33, "write_many": 1.0, "read_many": 1.0}
BATCH = 256                     # LBAs per write_many/read_many call (libpmemblk's nlane)
# which C figure each pmemkit operation is compared with
ANCHORS = {"write": "write", "read": "read", "write_many": "write", "read_many": "read_batch",
           "read_many/1buf": "read"}


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


def run_c(exe, pool, bsize, ops, seed, slices):
    env = dict(os.environ, PMEM_IS_PMEM_FORCE="1")
    out = subprocess.run([str(exe), str(pool), str(bsize), str(ops), str(seed), str(slices),
                          str(BATCH)], env=env, capture_output=True, text=True,
                          check=True).stdout.split()
    return {"write": float(out[0]), "read": float(out[1]), "read_batch": float(out[2])}


PY_WORKER = r"""
import sys, time, json
import numpy as np
from pmemkit.btt import open_pmemblk
pool = sys.argv[1]
ops, seed, slices, k = (int(a) for a in sys.argv[2:6])
b = open_pmemblk(pool)
assert b.region.is_pmem, "PMEMKIT_FORCE_PMEM=1 did not take effect"
n = min(b.nlba, 4096)
buf = bytearray(b"\x5a" * b.lbasize)
for i in range(n):
    b.write(i, buf)
rng = np.random.default_rng(seed)
lbas = rng.integers(0, n, ops).tolist()
per = ops // slices
res = {"write": 0.0, "read": 0.0, "write_many": 0.0, "read_many": 0.0}
w, r = b.write, b.read
for s in range(slices):
    part = lbas[s * per:(s + 1) * per]
    t0 = time.thread_time()
    for i, lba in enumerate(part):
        buf[0] = i & 0xFF
        w(lba, buf)
    res["write"] = max(res["write"], per / (time.thread_time() - t0))
for s in range(slices):
    part = lbas[s * per:(s + 1) * per]
    t0 = time.thread_time()
    for lba in part:
        r(lba)
    res["read"] = max(res["read"], per / (time.thread_time() - t0))
assert k <= b.nlane, (k, b.nlane)
m = max(per // k, 1) * k                    # ops per slice, whole batches
perm = np.concatenate([rng.permutation(n)[: n - n % k] for _ in range(-(-ops // (n - n % k)) + 1)])
data = np.full((k, b.lbasize), 0x5A, dtype=np.uint8)
out = np.empty((k, b.lbasize), dtype=np.uint8)
for s in range(slices):
    part = perm[s * m:(s + 1) * m]
    t0 = time.thread_time()
    for j in range(0, m, k):
        b.write_many(part[j:j + k], data)
    res["write_many"] = max(res["write_many"], m / (time.thread_time() - t0))
for s in range(slices):
    part = perm[s * m:(s + 1) * m]
    t0 = time.thread_time()
    for j in range(0, m, k):
        b.read_many(part[j:j + k], out=out)
    res["read_many"] = max(res["read_many"], m / (time.thread_time() - t0))
problems = b.check()
b.close()
assert not problems, problems
print(json.dumps(res))
"""


def run_py(pool, ops, seed, slices):
    env = dict(os.environ, PMEMKIT_FORCE_PMEM="1")
    out = subprocess.run([sys.executable, "-c", PY_WORKER, str(pool), str(ops), str(seed),
                          str(slices),
                          str(BATCH)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"bench_btt: pmemkit worker failed:\n{out.stderr}")
    import json
    return json.loads(out.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slices", type=int, default=80,
                    help="each timed loop is cut into this many slices; the best slice counts")
    ap.add_argument("--dir", default=None,
                    help="directory for the pool files (default: a temp dir)")
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
                c = run_c(exe, pool, bsize, args.ops, rnd + 1, args.slices)
                p = run_py(pool, args.ops, rnd + 1, args.slices)
                for key, v in c.items():
                    best_c[key] = max(best_c.get(key, 0), v)
                for key, v in p.items():
                    best_py[key] = max(best_py.get(key, 0), v)
            for op, cop in ANCHORS.items():
                py = best_py[op.split("/")[0]]
                rows.append((bsize, op, py, best_c[cop], py / best_c[cop], TARGETS.get(op)))
    print(f"{'bsize':>6} {'operation':<14} {'pmemkit/s':>12} {'libpmemblk/s':>13} {'ratio':>7} "
          f"{'target':>7}")
    ok = True
    for bsize, op, py, c, ratio, target in rows:
        if target is None:
            print(f"{bsize:>6} {op:<14} {py:>12,.0f} {c:>13,.0f} {ratio:>6.2f}x {'-':>7}")
            continue
        flag = "" if ratio >= target else "  BELOW TARGET"
        ok &= ratio >= target
        print(f"{bsize:>6} {op:<14} {py:>12,.0f} {c:>13,.0f} {ratio:>6.2f}x {target:>6.2f}x{flag}")
    print(f"(best slice of {args.slices} in {args.rounds} interleaved rounds of {args.ops} ops; "
          f"load: {os.getloadavg()[0]:.2f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
