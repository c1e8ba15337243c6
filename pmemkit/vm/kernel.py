"""The guest kernel: Debian's generic amd64 kernel package, unpacked (not installed) and cached.

``apt-get download linux-image-6.1.0-N-amd64`` + ``dpkg -x`` + ``depmod``: nothing is installed
on the host and nothing comes from anywhere but the Debian mirror apt already uses. The generic
flavour is required: the cloud kernel has no 9p (the host share).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import defaults
from ..errors import MissingToolError, VmError
from . import cache


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel: ``vmlinuz`` to boot and ``root`` holding ``lib/modules/<release>``."""

    release: str        # e.g. "6.1.0-56-amd64"
    root: Path

    @property
    def vmlinuz(self):
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules_dir(self):
        return self.root / "lib" / "modules" / self.release

    @property
    def vmlinux(self):
        """The uncompressed kernel (ELF), made once from ``vmlinuz`` (see :meth:`boot_image`)."""
        return self.root / "boot" / f"vmlinux-{self.release}"

    def boot_image(self):
        """What ``qemu -kernel`` gets: the uncompressed ELF ``vmlinux`` when its payload can be
        extracted (QEMU boots it through the PVH entry point, skipping the in-guest
        decompression of the xz bzImage, which takes 10-20 s under TCG), else ``vmlinuz``."""
        if not self.vmlinux.exists():
            data = extract_vmlinux(self.vmlinuz.read_bytes())
            if data is None:
                return self.vmlinuz
            tmp = self.vmlinux.with_name(self.vmlinux.name + f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, self.vmlinux)
        return self.vmlinux

    def module_chain(self, names):
        """Module files (``.ko``) to load, dependencies first, for ``names``, without duplicates.

        Built-in modules are skipped. Resolved by the host's ``modprobe --show-depends`` with
        ``-C /dev/null`` (the host ndctl package adds an ``install libnvdimm`` rule otherwise).
        """
        modprobe = cache.need_tool("modprobe")
        chain = []
        for name in names:
            proc = subprocess.run([modprobe, "-C", "/dev/null", "-d", str(self.root), "-S", self.release,
                                   "--show-depends", name], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise VmError(f"kernel {self.release} has no module {name}: {proc.stderr.strip()}")
            for line in proc.stdout.splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "insmod":
                    ko = Path(parts[1])
                    if ko not in chain:
                        chain.append(ko)
        return chain


#: XEN_ELFNOTE_PHYS32_ENTRY: the PVH entry point QEMU needs to boot an ELF kernel directly.
_PVH_NOTE = 18


def extract_vmlinux(bzimage):
    """The ELF kernel inside a bzImage (xz or gzip payload) if it has a PVH entry note, else None."""
    import gzip
    import lzma
    import struct
    for magic, decompress in ((b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor().decompress(b)),
                              (b"\x1f\x8b\x08", lambda b: gzip.decompress(b))):
        at = bzimage.find(magic)
        if at < 0:
            continue
        try:
            elf = decompress(bzimage[at:])
        except (lzma.LZMAError, OSError, EOFError):
            continue
        if elf[:4] != b"\x7fELF" or elf[4] != 2:
            continue
        # Look for the Xen PVH note in the program headers' PT_NOTE segments.
        phoff, = struct.unpack_from("<Q", elf, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
        for i in range(phnum):
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
            if p_type != 4:  # PT_NOTE
                continue
            off, end = p_offset, p_offset + p_filesz
            while off + 12 <= end:
                namesz, descsz, ntype = struct.unpack_from("<III", elf, off)
                name = elf[off + 12: off + 12 + namesz].rstrip(b"\0")
                if name == b"Xen" and ntype == _PVH_NOTE:
                    return elf
                off += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return None


def resolve_package(package=None):
    """The versioned kernel package name: ``package`` if given, else what Debian's
    ``linux-image-amd64`` metapackage currently depends on (``linux-image-6.1.0-N-amd64``)."""
    if package:
        return package
    apt_cache = cache.need_tool("apt-cache")
    proc = subprocess.run([apt_cache, "depends", defaults.VM_KERNEL_METAPACKAGE],
                          capture_output=True, text=True, check=False)
    m = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b", proc.stdout)
    if not m:
        raise MissingToolError(
            f"cannot find Debian's kernel package {defaults.VM_KERNEL_METAPACKAGE} in the apt lists: "
            f"run `sudo apt-get update` (and check /etc/apt/sources.list names a Debian bookworm mirror)")
    return m.group(1)


def _resolve_memo(root_dir):
    """:func:`resolve_package`, remembered until the apt lists change (apt-cache takes seconds)."""
    try:
        stamp = os.stat("/var/lib/apt/lists").st_mtime_ns
    except OSError:
        stamp = 0
    memo = root_dir / "resolved.json"
    try:
        seen = json.loads(memo.read_text())
        if seen.get("stamp") == stamp and seen.get("metapackage") == defaults.VM_KERNEL_METAPACKAGE:
            return seen["package"]
    except (OSError, ValueError, KeyError):
        pass
    package = resolve_package()
    root_dir.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"stamp": stamp, "metapackage": defaults.VM_KERNEL_METAPACKAGE,
                                "package": package}))
    return package


def get_kernel(package=None, cache_root=None, progress=None):
    """Return the cached :class:`Kernel` for ``package`` (default: Debian's current generic
    6.1 kernel), downloading and unpacking it first if needed (a few seconds)."""
    root_dir = cache.cache_dir(cache_root) / "kernel"
    package = package or _resolve_memo(root_dir)
    if "cloud" in package:
        raise VmError(f"{package}: the cloud kernel has no 9p (host share); use the generic "
                      "linux-image-6.1.0-N-amd64")
    final = root_dir / package
    if not (final / ".complete").exists():
        root_dir.mkdir(parents=True, exist_ok=True)
        for tool in ("apt-get", "dpkg", "depmod"):
            cache.need_tool(tool)
        if progress:
            progress(f"downloading kernel {package}")
        with tempfile.TemporaryDirectory(dir=root_dir, prefix=".dl-") as dl:
            cache.run(["apt-get", "download", package], f"apt-get download {package}",
                      retries=3, cwd=dl, progress=progress)
            debs = list(Path(dl).glob("*.deb"))
            if not debs:
                raise VmError(f"apt-get download {package} produced no .deb")
            tmp = Path(tempfile.mkdtemp(dir=root_dir, prefix=".tmp-"))
            cache.run(["dpkg", "-x", debs[0], tmp], f"dpkg -x {debs[0].name}")
        release = package.removeprefix("linux-image-")
        cache.run(["depmod", "-b", tmp, release], "depmod")
        (tmp / ".complete").write_text(release + "\n")
        cache.publish(tmp, final)
    release = (final / ".complete").read_text().strip()
    kernel = Kernel(release, final)
    if not kernel.vmlinuz.exists():
        raise VmError(f"{kernel.vmlinuz} is missing: remove {final} and retry")
    return kernel
