"""The data model of :mod:`pmemkit.discovery`: frozen dataclasses describing what was found.

Nothing here reads the machine; the backends (:mod:`.files`, :mod:`.udev`) and
:func:`pmemkit.discovery.discover` fill these in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .. import cpu
from ..units import Memmap

#: sysfs ``namespaceX.Y/mode`` spellings (the kernel's and ndctl's) -> ndctl's names.
NAMESPACE_MODES = {
    "raw": "raw",
    "safe": "sector", "sector": "sector",
    "memory": "fsdax", "fsdax": "fsdax",
    "dax": "devdax", "devdax": "devdax",
}

#: Mount-option spellings of DAX, as /proc/mounts shows them.
DAX_OPTIONS = ("dax", "dax=always", "dax=inode", "dax=never")


@dataclass(frozen=True)
class Problem:
    """Something that could not be read or made sense of (reported, not raised)."""

    where: str
    message: str


@dataclass(frozen=True)
class NdRegion:
    """An nd region (``/sys/bus/nd/devices/regionN``): a range of persistent memory."""

    name: str
    size: int | None
    persistence_domain: str | None   # "cpu_cache" (eADR), "memory_controller" (ADR) or None
    deep_flush: bool                    # the region has a deep_flush attribute (flush hints)
    provider: str | None             # the nd bus provider: "e820_pmem" (memmap) or "ACPI.NFIT"
    read_only: bool | None

    @property
    def eadr(self):
        return self.persistence_domain == "cpu_cache"

    @property
    def emulated(self):
        """True for memmap= (e820 type 12) regions."""
        return self.provider is not None and "e820" in self.provider


@dataclass(frozen=True)
class Namespace:
    """A namespace (``namespaceX.Y``) and the device it exposes."""

    name: str
    region: str | None
    mode: str                  # raw, fsdax, sector, devdax (ndctl's names)
    size: int | None
    devtype: str | None     # nd_namespace_io (label-less, memmap) or nd_namespace_pmem
    holder: str | None      # pfnX.Y / bttX.Y / daxX.Y claiming it, if any
    device: str | None      # /dev/pmem0, /dev/pmem0s, /dev/dax0.0 or None (disabled)


@dataclass(frozen=True)
class Device:
    """A ``/dev/pmem*`` block device or a ``/dev/dax*`` character device."""

    name: str
    path: str | None        # the device node, if it exists
    kind: str                  # "block" or "dax"
    size: int | None
    dax: bool | None        # block: /sys/block/NAME/queue/dax; dax: True
    namespace: str | None


@dataclass(frozen=True)
class CxlDevice:
    """A CXL memory device (``memN``) or region (``regionN``) in ``/sys/bus/cxl/devices``."""

    name: str
    kind: str                  # "memdev" or "region"
    size: int | None        # memdev: its persistent capacity (pmem/size); region: its size
    serial: int | None      # memdev only
    committed: bool | None  # region only: its decoders are committed (commit reads 1)


@dataclass(frozen=True)
class Mount:
    """A mount of a pmem device or a mount with a DAX option."""

    device: str
    mount_point: str
    fstype: str
    options: tuple
    dax: str | None         # "dax", "dax=always", "dax=inode", "dax=never" or None

    @property
    def dax_always(self):
        """Every file is DAX (``dax`` or ``dax=always``)."""
        return self.dax in ("dax", "dax=always")


@dataclass(frozen=True)
class MemmapArg:
    """One ``memmap=`` item from the kernel command line."""

    text: str                  # as written, e.g. "memmap=4G!12G"
    kind: str                  # "pmem" (SIZE!START) or "other" ($, #, @, exactmap: not pmem)
    memmap: Memmap | None   # parsed pmem range, None if invalid or not pmem
    error: str | None       # why a pmem item is invalid

    @property
    def valid(self):
        return self.kind == "pmem" and self.error is None


@dataclass(frozen=True)
class CpuFeatures:
    """Cache-line write-back instructions the CPU offers."""

    clflush: bool
    clflushopt: bool
    clwb: bool
    source: str                # "cpuid" (pmemkit.cpu, native) or "/proc/cpuinfo"

    @property
    def best_flush(self):
        for name in cpu.FLUSH_INSTRUCTIONS:
            if getattr(self, name):
                return name
        return None


@dataclass(frozen=True)
class Discovery:
    """Everything :func:`discover` found. ``to_dict()`` is what ``pmemkit info --json`` prints."""

    root: str
    backend: str
    regions: tuple
    namespaces: tuple
    devices: tuple
    mounts: tuple
    memmaps: tuple
    cpu: CpuFeatures | None
    ram_bytes: int | None
    kernel: str | None
    has_grub_defaults: bool    # /etc/default/grub exists: the kernel command line can be changed
    native_flush: bool         # pmemkit's C flush extension is importable
    problems: tuple = ()
    cxl: tuple = ()            # CxlDevice: CXL memory devices and regions

    @property
    def eadr(self):
        return bool(self.regions) and all(r.eadr for r in self.regions)

    @property
    def dax_mounts(self):
        return tuple(m for m in self.mounts if m.dax_always)

    def namespace(self, name):
        for ns in self.namespaces:
            if ns.name == name:
                return ns
        return None

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["eadr"] = self.eadr
        d["dax_mount_points"] = [m.mount_point for m in self.dax_mounts]
        for r, rd in zip(self.regions, d["regions"], strict=True):
            rd["eadr"] = r.eadr
            rd["emulated"] = r.emulated
        for m, md in zip(self.memmaps, d["memmaps"], strict=True):
            md["memmap"] = None if m.memmap is None else {
                "size": m.memmap.size, "start": m.memmap.start, "text": str(m.memmap)}
        for md in d["mounts"]:
            md["options"] = list(md["options"])
        if self.cpu is not None:
            d["cpu"]["best_flush"] = self.cpu.best_flush
        for key in ("regions", "namespaces", "devices", "mounts", "memmaps", "problems", "cxl"):
            d[key] = list(d[key])
        return d


def dax_option(options):
    """The last DAX spelling among mount ``options`` (``None`` when there is none)."""
    found = None
    for opt in options:
        if opt in DAX_OPTIONS:
            found = opt
    return found


def parse_number(text, where, problems):
    """A sysfs number (decimal or 0x hex); ``None`` when missing, a Problem when malformed."""
    if text is None or text == "":
        return None
    try:
        return int(text, 0)
    except ValueError:
        problems.append(Problem(where, f"not a number: {text!r}"))
        return None
