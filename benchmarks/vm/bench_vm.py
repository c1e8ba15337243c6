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
* the same two for a command that imports pmemkit (and numpy: the host-root guest only has
  what the host's /usr/bin/python3 has - on these machines, no numpy).

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
from pmemkit.vm import guest, qemu  # noqa: E402

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
        raise RuntimeError(f"exit {res.returncode}: {res.error_output.strip().splitlines()[-1:]}")
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
    true = ["true"]
    imports = ["python3", "-c", "import pmemkit.mapping"]
    with_numpy = ["python3", "-c", "import numpy, pmemkit.mapping"]
    print(f"pmemkit vm run, memmap={defaults.MEMMAP_SMALL}, accel={args.accel}, "
          f"median of {args.repeat} (wall seconds; ratio to the anchor)", flush=True)
    vm.prepare(cfg)  # make sure the default cache is warm
    warm = median_of(args.repeat, cfg, true)
    results = {"anchor": warm}

    def row(name, fn):
        try:
            secs = fn()
        except Exception as exc:  # report and go on: a failing variant is a finding
            print(f"  {name:52s} failed: {exc}", flush=True)
            return None
        print(f"  {name:52s} {secs:7.1f} s   x{secs / warm:5.2f}", flush=True)
        return secs

    print(f"  {'custom guest, warm cache: true (anchor)':52s} {warm:7.1f} s   x 1.00", flush=True)
    results["imp"] = row("custom guest, warm: import pmemkit.mapping",
                         lambda: median_of(args.repeat, cfg, imports))
    results["np"] = row("custom guest, warm: import numpy, pmemkit.mapping",
                        lambda: median_of(args.repeat, cfg, with_numpy))
    with hostroot_mode():
        row("host-root 9p: first run (builds its initramfs)", lambda: timed(cfg, true))
        results["h"] = row("host-root 9p alternative: true",
                           lambda: median_of(args.repeat, cfg, true))
        results["himp"] = row("host-root 9p: import pmemkit.mapping",
                              lambda: median_of(args.repeat, cfg, imports))
        row("host-root 9p: import numpy, pmemkit.mapping", lambda: timed(cfg, with_numpy))
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="pmemkit-bench-cache-") as tmp:
            row("custom guest, COLD cache (fresh cache dir): true",
                lambda: timed(cfg.replace(cache_dir=tmp), true))
    if results.get("h"):
        print(f"  host-root / custom, true:                 {results['h'] / warm:5.2f}")
    if results.get("himp") and results.get("imp"):
        print("  host-root / custom, import pmemkit.mapping: "
              f"{results['himp'] / results['imp']:5.2f}")


if __name__ == "__main__":
    main()
