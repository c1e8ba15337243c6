"""Each pmem backend on each guest kernel: boot to the first command and MAP_SYNC throughput.

    python benchmarks/vm/bench_backends.py                 # every case below, warm cache
    python benchmarks/vm/bench_backends.py --only cxl      # cases whose name contains "cxl"

For each case, one ``pmemkit.vm.run`` of ``sh -c 'echo up; exec python3 -c BENCH'``:

* **boot**: wall seconds from the call until the guest's first output line (``up``): QEMU start,
  kernel, modules, pmem setup (ndctl / cxl / ramdax), the data-path check, mkfs or reuse, DAX
  mounts. The cache (kernel, initramfs, root image) is warm: run each case once before.
* **first write / write / read MiB/s**: inside the guest, a 16 MiB file on the ext4 DAX mount
  mapped with ``MAP_SHARED_VALIDATE | MAP_SYNC``, written in 1 MiB slices (the first pass pays
  the page faults: block allocation and zeroing), written again, then read back.

Anchor (same run): ``memmap`` on the default kernel (Debian 12's 6.1); every figure is also
printed as a ratio to it. These machines have 2 cores shared with other work and no usable KVM
(TCG): compare ratios, not absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pmemkit import vm  # noqa: E402
from pmemkit.errors import PmemError  # noqa: E402

BENCH = """
import json, mmap, os, time
n, chunk = 16 << 20, 1 << 20
path = "/mnt/pmem-ext4/bench-map-sync"
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, n)
m = mmap.mmap(fd, n, flags=0x03 | 0x80000, prot=mmap.PROT_READ | mmap.PROT_WRITE)
buf = os.urandom(chunk)
def write():
    t = time.perf_counter()
    for off in range(0, n, chunk):
        m[off:off + chunk] = buf
    return time.perf_counter() - t
first = write()
w = write()
t = time.perf_counter()
for off in range(0, n, chunk):
    m[off:off + chunk]
r = time.perf_counter() - t
m.close(); os.close(fd); os.unlink(path)
print(json.dumps({"first_write": 16 / first, "write": 16 / w, "read": 16 / r}))
"""

#: (name, VmConfig keywords); {tmp} is a temporary directory for backing files.
CASES = [
    ("memmap 6.1", {"memmap": "512M!1G"}),
    ("memmap 6.12", {"memmap": "512M!1G", "kernel": "debian-6.12"}),
    ("memmap 7.3", {"memmap": "512M!1G", "kernel": "debian-7.3"}),
    ("nvdimm 6.1", {"nvdimm": "512M", "nvdimm_file": "{tmp}/nvdimm.img"}),
    ("cxl 6.1", {"cxl": "512M", "cxl_file": "{tmp}/cxl61.img"}),
    ("cxl 6.12", {"cxl": "512M", "cxl_file": "{tmp}/cxl612.img", "kernel": "debian-6.12"}),
    ("cxl 7.3", {"cxl": "512M", "cxl_file": "{tmp}/cxl73.img", "kernel": "debian-7.3"}),
    ("ramdax 7.3", {"memmap": "1G!1G", "ramdax": True, "namespaces": "fsdax,sector",
                    "persist": "{tmp}/ram.img", "kernel": "debian-7.3"}),
]


def measure(kw, tmp):
    kw = {k: v.format(tmp=tmp) if isinstance(v, str) else v for k, v in kw.items()}
    cfg = vm.VmConfig(share=False, accel="tcg", **kw)
    vm.prepare(cfg)                       # warm cache: builds are not part of the figure
    first = {}
    start = time.monotonic()

    def stream(name, data):
        if name == "stdout" and "boot" not in first:
            first["boot"] = time.monotonic() - start

    res = vm.run(cfg, ["sh", "-c", 'echo up; exec python3 -c "$1"', "sh", BENCH], stream=stream,
                 timeout=900)
    if res.returncode != 0:
        raise RuntimeError(res.error_output[-500:] + res.setup_log[-500:])
    return {"boot": first["boot"], **json.loads(res.output.strip().splitlines()[-1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="run only cases whose name contains this")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pmemkit-bench-backends-")
    rows = {}
    try:
        for name, kw in CASES:
            if args.only and args.only not in name and name != CASES[0][0]:
                continue
            try:
                rows[name] = measure(kw, tmp)
            except (PmemError, RuntimeError) as exc:
                rows[name] = {"error": str(exc).splitlines()[-1][:200]}
            print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    anchor = rows.get(CASES[0][0], {})
    print(f"{'case':<12} {'boot s':>7} {'ratio':>6} {'1st write':>10} {'ratio':>6} "
          f"{'write MiB/s':>12} {'ratio':>6} {'read MiB/s':>11} {'ratio':>6}")
    for name, row in rows.items():
        if "error" in row:
            print(f"{name:<12} failed: {row['error']}")
            continue
        cells = [f"{name:<12}"]
        for key, width in (("boot", 7), ("first_write", 10), ("write", 12), ("read", 11)):
            ratio = row[key] / anchor[key] if key in anchor else float("nan")
            cells.append(f"{row[key]:>{width}.1f} {ratio:>6.2f}")
        print(" ".join(cells))


if __name__ == "__main__":
    main()
