"""Time to run a command in a pmemkit guest, cold and warm cache, and the design alternative.

    python benchmarks/vm/bench_vm.py            # warm runs + the host-root alternative
    python benchmarks/vm/bench_vm.py --cold     # also a cold cache (a fresh cache dir: kernel
                                                # download, debootstrap, initramfs; ~2-3 min)

Each figure is the wall time of ``pmemkit.vm.run(VmConfig(memmap=512M!1G), CMD)`` (boot, ndctl,
mkfs + DAX mount of ext4 and xfs, the command, power-off), median of ``--repeat`` runs.

Anchor (same run): the custom guest running ``true`` with a warm cache. Printed ratios:

* cold / warm;
* ``hostroot`` / custom: the virtme-ng-style alternative - the same kernel, initramfs stage and
  guest init, but the root filesystem is the *host's* ``/`` shared read-only over 9p instead of
  the cached Debian image on virtio-blk (so the guest runs the host's python3, ndctl, mkfs);
* the same two for a command that imports numpy and pmemkit (where a 9p root hurts most).

Targets (issue #3): warm <= 20 s, cold <= 2 min under TCG. These machines have 2 cores shared by
other work: expect noise, compare ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pmemkit import defaults, vm  # noqa: E402
from pmemkit.vm import guest, qemu, runner  # noqa: E402

_HOSTROOT_STAGE1 = guest._STAGE1.replace(
    "if ! mount -t ext4 -o rw,noatime /dev/vda /newroot; then",
    "if ! mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144 hostroot /newroot; then",
).replace(
    "mount -t tmpfs -o mode=0755 tmpfs /newroot/run\n",
    "mount -t tmpfs -o mode=0755 tmpfs /newroot/run\nmount -t tmpfs tmpfs /newroot/mnt\n",
)


@contextlib.contextmanager
def hostroot_mode():
    """Boot over the host's / (9p, read-only) instead of the cached Debian root image."""
    saved_stage1, saved_drive = guest._STAGE1, qemu.drive_args
    guest._STAGE1 = _HOSTROOT_STAGE1
    qemu.drive_args = lambda image, **kw: qemu.share_args("/", "hostroot", readonly=True)
    try:
        yield
    finally:
        guest._STAGE1, qemu.drive_args = saved_stage1, saved_drive


def timed(cfg, argv):
    t = time.monotonic()
    res = vm.run(cfg, argv, timeout=900)
    wall = time.monotonic() - t
    if res.returncode != 0:
        raise SystemExit(f"{argv} failed in the guest ({res.returncode}): {res.error_output}")
    return wall


def median_of(n, cfg, argv):
    return statistics.median(timed(cfg, argv) for _ in range(n))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true", help="also measure a cold cache")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--accel", default="tcg")
    args = ap.parse_args()
    cfg = vm.VmConfig(memmap=defaults.MEMMAP_SMALL, accel=args.accel, share=ROOT)
    true, imports = ["true"], ["python3", "-c", "import numpy, pmemkit, pmemkit.mapping"]
    rows = []
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="pmemkit-bench-cache-") as tmp:
            t = time.monotonic()
            vm.run(cfg.replace(cache_dir=tmp), true, timeout=1800)
            rows.append(("cold cache, true", time.monotonic() - t))
    vm.prepare(cfg)  # make sure the default cache is warm
    warm = median_of(args.repeat, cfg, true)
    rows.append(("warm cache, true (anchor)", warm))
    warm_imp = median_of(args.repeat, cfg, imports)
    rows.append(("warm cache, import numpy+pmemkit", warm_imp))
    with hostroot_mode():
        timed(cfg, true)  # builds its initramfs
        host = median_of(args.repeat, cfg, true)
        host_imp = median_of(args.repeat, cfg, imports)
    rows.append(("host-root 9p alternative, true", host))
    rows.append(("host-root 9p alternative, import numpy+pmemkit", host_imp))
    print(f"pmemkit vm run, memmap={defaults.MEMMAP_SMALL}, accel={args.accel}, "
          f"median of {args.repeat}")
    for name, secs in rows:
        print(f"  {name:50s} {secs:7.1f} s   ratio to anchor {secs / warm:5.2f}")
    print(f"  host-root / custom (true):    {host / warm:5.2f}")
    print(f"  host-root / custom (imports): {host_imp / warm_imp:5.2f}")


if __name__ == "__main__":
    main()
