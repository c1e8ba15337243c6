"""What the guest boots, built once and cached: a Debian root filesystem image and an initramfs.

* :func:`build_rootfs` - ``debootstrap --variant=minbase`` of Debian bookworm with python3, numpy,
  pytest, psutil, pyudev, hypothesis, ndctl, xfsprogs, e2fsprogs..., packed into an ext4 image with
  ``mkfs.ext4 -d`` (no loop device, no mount). QEMU boots it with ``snapshot=on``: the guest may
  write, the cached image never changes, and several guests can share it. ~90 s, once.
* :func:`build_initramfs` - busybox (static) plus the kernel modules the guest needs, loaded in
  order by a tiny first-stage ``/init`` that mounts the root image and ``switch_root``\\ s into
  the guest init (:data:`GUEST_INIT`, stage 2, a POSIX shell script run by Debian's dash).

Both are keyed by a hash of their inputs; a finished build is published by an atomic rename.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import defaults
from ..errors import VmError
from . import cache
from .kernel import Kernel, module_bytes, module_name

#: Bump when the root filesystem recipe changes (forces a rebuild).
ROOTFS_RECIPE = 1
#: Bump when the initramfs recipe changes.
INITRAMFS_RECIPE = 2

#: The guest's second-stage init (shipped in the package; ``vm/guest-init.sh`` links to it).
GUEST_INIT = Path(__file__).with_name("guest_init.sh")
#: Executes the user's command inside the guest (argv/env from a JSON file, no shell).
GUEST_LAUNCHER = Path(__file__).with_name("guest_launch.py")

#: Modules loaded by the first stage, in this order (dependencies are added automatically).
GUEST_MODULES = (
    "virtio_pci", "virtio_blk",
    "crc32c_generic", "crc16", "ext4", "libcrc32c", "xfs",
    "9pnet_virtio", "9p",
    "libnvdimm", "nd_btt", "nd_pmem", "nd_e820", "nfit",
)
#: Modules loaded only in a guest with a CXL device (``pmemkit.cxl=1`` on the kernel command line).
GUEST_CXL_MODULES = ("cxl_acpi", "cxl_pci", "cxl_mem", "cxl_pmem")

#: Directories dropped from the root filesystem (documentation, translations, apt caches).
_PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
          "var/cache/apt/archives", "var/lib/apt/lists")

_STAGE1 = """#!/bin/busybox sh
# pmemkit guest, stage 1 (initramfs): load modules, mount the root image, switch to stage 2.
/bin/busybox mkdir -p /proc /sys /dev /newroot /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "pmemkit-stage1: loading modules"
while read -r ko; do
    insmod "/modules/$ko" 2>/dev/null || echo "pmemkit-stage1: insmod $ko failed"
done < /modules/order
if grep -q "pmemkit.cxl=1" /proc/cmdline; then
    while read -r ko; do
        insmod "/modules/$ko" 2>/dev/null || echo "pmemkit-stage1: insmod $ko failed"
    done < /modules/cxl-order
fi
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
if ! mount -t ext4 -o rw,noatime /dev/vda /newroot; then
    echo "pmemkit-stage1: cannot mount the root image /dev/vda"
    poweroff -f
fi
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
cp /guest-init.sh /newroot/run/pmemkit-init
cp /guest-launch.py /newroot/run/pmemkit-launch.py
cp /bin/busybox /newroot/run/busybox
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /bin/sh /run/pmemkit-init
"""


@dataclass(frozen=True)
class Rootfs:
    """A cached root filesystem image (raw ext4) and the tree's package list."""

    image: Path
    key: str


def rootfs_inputs(suite=None, mirror=None, packages=None):
    return {"recipe": ROOTFS_RECIPE, "suite": suite or defaults.VM_SUITE,
            "mirror": mirror or defaults.VM_MIRROR,
            "packages": sorted(packages if packages is not None else defaults.VM_PACKAGES)}


def build_rootfs(suite=None, mirror=None, packages=None, cache_root=None, progress=None,
                 extra_packages=()):
    """Return the cached :class:`Rootfs`, building it first if needed (root only; ~90 s)."""
    inputs = rootfs_inputs(suite, mirror, tuple(packages if packages is not None
                                                else defaults.VM_PACKAGES) + tuple(extra_packages))
    k = cache.key(inputs)
    base = cache.cache_dir(cache_root) / "rootfs"
    final = base / k
    image = final / "root.ext4"
    if image.exists():
        return Rootfs(image, k)
    debootstrap = cache.need_tool("debootstrap")
    mkfs = cache.need_tool("mkfs.ext4")
    if os.geteuid() != 0:
        raise VmError("building the guest root filesystem needs root (debootstrap): run "
                      "`sudo pmemkit vm run -- true` once, or point PMEMKIT_CACHE_DIR at a cache "
                      "built by root")
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=".tmp-"))
    try:
        tree = tmp / "tree"
        if progress:
            progress(f"building guest root filesystem ({inputs['suite']}, "
                     f"{len(inputs['packages'])} packages; about 90 s, once)")
        for attempt in range(1, 4):  # a mirror hiccup should not cost the user the build
            shutil.rmtree(tree, ignore_errors=True)
            try:
                cache.run([debootstrap, "--variant=minbase", "--include=" + ",".join(inputs["packages"]),
                           inputs["suite"], tree, inputs["mirror"]],
                          "debootstrap", progress=progress,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
                break
            except VmError:
                if attempt == 3:
                    raise
                if progress:
                    progress(f"debootstrap failed (attempt {attempt}/3), retrying in {10 * attempt} s")
                time.sleep(10 * attempt)
        for rel in _PRUNE:
            shutil.rmtree(tree / rel, ignore_errors=True)
            (tree / rel).mkdir(parents=True, exist_ok=True)
        for mnt in defaults.MOUNT_POINTS.values():
            (tree / mnt.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (tree / "etc/hostname").write_text("pmemkit-guest\n")
        used = int(subprocess.run(["du", "-sm", str(tree)], capture_output=True, text=True,
                                  check=True).stdout.split()[0])
        size_mb = used + used // 3 + 256
        if progress:
            progress(f"packing root filesystem image ({used} MiB)")
        cache.run([mkfs, "-q", "-F", "-L", "pmemkit-root", "-O", "^has_journal", "-d", tree,
                   tmp / "root.ext4", f"{size_mb}M"], "mkfs.ext4 -d")
        shutil.rmtree(tree)
        cache.publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Rootfs(image, k)


_SIG_MAGIC = b"~Module signature appended~\n"


def strip_module_signature(ko):
    """``ko`` without its appended signature: the kernel then skips verifying it (Debian does
    not enforce signatures), which saves seconds per boot under TCG (RSA + SHA over each module)."""
    if not ko.endswith(_SIG_MAGIC):
        return ko
    trailer = len(_SIG_MAGIC) + 12             # struct module_signature: 12 bytes, sig_len last (BE)
    sig_len = int.from_bytes(ko[-len(_SIG_MAGIC) - 4:-len(_SIG_MAGIC)], "big")
    if sig_len + trailer > len(ko):
        return ko
    return ko[:len(ko) - trailer - sig_len]


def build_initramfs(kernel: Kernel, cache_root=None, progress=None):
    """Return the cached initramfs (``newc`` cpio, uncompressed) for ``kernel``: busybox, the
    modules of :data:`GUEST_MODULES` and the two init stages. Seconds to build."""
    busybox = cache.need_tool("busybox")
    with open(busybox, "rb") as f:
        head = f.read(4096)
    if b"/lib64/ld-linux" in head or b"/lib/ld-linux" in head:
        raise VmError(f"{busybox} is dynamically linked: install the static one with "
                      "`sudo apt-get install busybox-static`")
    chain = kernel.module_chain(GUEST_MODULES)
    cxl_chain = [ko for ko in kernel.module_chain(GUEST_CXL_MODULES) if ko not in chain]
    inputs = {"recipe": INITRAMFS_RECIPE, "kernel": kernel.release, "root": str(kernel.root),
              "stage1": _STAGE1,
              "modules": [str(p.relative_to(kernel.root)) for p in chain],
              "cxl_modules": [str(p.relative_to(kernel.root)) for p in cxl_chain],
              "init": GUEST_INIT.read_text(), "launcher": GUEST_LAUNCHER.read_text(),
              "busybox": os.path.getsize(busybox)}
    k = cache.key(inputs)
    base = cache.cache_dir(cache_root) / "initramfs"
    final = base / f"{k}.cpio"
    if final.exists():
        return final
    cpio = cache.need_tool("cpio")
    base.mkdir(parents=True, exist_ok=True)
    if progress:
        progress(f"building initramfs for {kernel.release} ({len(chain)} modules)")
    with tempfile.TemporaryDirectory(dir=base, prefix=".tmp-") as tmp:
        tree = Path(tmp) / "tree"
        (tree / "bin").mkdir(parents=True)
        (tree / "modules").mkdir()
        shutil.copy2(busybox, tree / "bin" / "busybox")
        for listing, modules in (("order", chain), ("cxl-order", cxl_chain)):
            order = []
            for ko in modules:
                src = ko if ko.is_absolute() else kernel.root / ko
                name = module_name(src)
                (tree / "modules" / name).write_bytes(strip_module_signature(module_bytes(src)))
                order.append(name)
            (tree / "modules" / listing).write_text("".join(f"{n}\n" for n in order))
        (tree / "init").write_text(_STAGE1)
        (tree / "init").chmod(0o755)
        shutil.copy2(GUEST_INIT, tree / "guest-init.sh")
        shutil.copy2(GUEST_LAUNCHER, tree / "guest-launch.py")
        files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
        out = Path(tmp) / "initramfs.cpio"
        with open(out, "wb") as fout:
            proc = subprocess.run([cpio, "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=tree,
                                  input="\n".join(files).encode(), stdout=fout,
                                  stderr=subprocess.PIPE, check=False)
        if proc.returncode != 0:
            raise VmError(f"cpio failed: {proc.stderr.decode(errors='replace')}")
        os.replace(out, final)
    return final
