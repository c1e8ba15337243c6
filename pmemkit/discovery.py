"""What this machine has for persistent memory, and the next step to real DAX.

:func:`discover` returns a :class:`Discovery`: nd regions and namespaces (mode
raw / fsdax / sector / devdax), ``/dev/pmem*`` and ``/dev/dax*`` devices, mounts
with their DAX option, every ``memmap=`` on the kernel command line, the CPU's
cache-flush instructions and eADR. :func:`diagnose` turns that into advice
(``pmemkit doctor`` prints it).

Two backends read the machine, like psutil's per-platform split:

* ``"live"`` (the default for ``root="/"``): pyudev enumerates the ``nd``,
  ``block`` and ``dax`` subsystems and psutil gives the RAM size;
* ``"files"``: a reader over a directory tree laid out like ``/sys`` and
  ``/proc``, used for fixture trees (pyudev cannot be pointed at one) and as a
  fallback when libudev is missing.

Both build the same model; the test suite checks they agree on the real machine.
The machine facts underneath (sysfs, the mount table, statx, /proc/cpuinfo) are read
by :mod:`pmemkit._linux`.

The small helpers :func:`has_eadr`, :func:`dax_mount_points` and :func:`is_dax`
are called by the mapping code on hot-ish paths: they import neither pyudev nor
numpy and read only what they need.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Optional

from . import cpu, defaults
from ._linux import cpuinfo
from ._linux import join as _join
from ._linux.mounts import read_mounts as _read_mounts_file
from ._linux.statx import STATX_ATTR_DAX, is_dax  # noqa: F401 - re-exported
from ._linux.statx import statx_attributes as _statx_raw  # noqa: F401 - old name
from ._linux.sysfs import has_eadr
from .errors import DiscoveryError, InvalidArgumentError
from .units import Memmap, format_size, parse_memmap

__all__ = [
    "Advice", "CpuFeatures", "Device", "Discovery", "MemmapArg", "Mount", "Namespace",
    "NdRegion", "Problem", "dax_mount_points", "diagnose", "discover", "has_eadr",
    "is_dax", "native_flush_available", "suggest_memmap",
]

# --- the model -----------------------------------------------------------------

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
    size: Optional[int]
    persistence_domain: Optional[str]   # "cpu_cache" (eADR), "memory_controller" (ADR) or None
    deep_flush: bool                    # the region has a deep_flush attribute (flush hints)
    provider: Optional[str]             # the nd bus provider: "e820_pmem" (memmap) or "ACPI.NFIT"
    read_only: Optional[bool]

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
    region: Optional[str]
    mode: str                  # raw, fsdax, sector, devdax (ndctl's names)
    size: Optional[int]
    devtype: Optional[str]     # nd_namespace_io (label-less, memmap) or nd_namespace_pmem
    holder: Optional[str]      # pfnX.Y / bttX.Y / daxX.Y claiming it, if any
    device: Optional[str]      # /dev/pmem0, /dev/pmem0s, /dev/dax0.0 or None (disabled)


@dataclass(frozen=True)
class Device:
    """A ``/dev/pmem*`` block device or a ``/dev/dax*`` character device."""

    name: str
    path: Optional[str]        # the device node, if it exists
    kind: str                  # "block" or "dax"
    size: Optional[int]
    dax: Optional[bool]        # block: /sys/block/NAME/queue/dax; dax: True
    namespace: Optional[str]


@dataclass(frozen=True)
class CxlDevice:
    """A CXL memory device (``memN``) or region (``regionN``) in ``/sys/bus/cxl/devices``."""

    name: str
    kind: str                  # "memdev" or "region"
    size: Optional[int]        # memdev: its persistent capacity (pmem/size); region: its size
    serial: Optional[int]      # memdev only
    committed: Optional[bool]  # region only: its decoders are committed (commit reads 1)


@dataclass(frozen=True)
class Mount:
    """A mount of a pmem device or a mount with a DAX option."""

    device: str
    mount_point: str
    fstype: str
    options: tuple
    dax: Optional[str]         # "dax", "dax=always", "dax=inode", "dax=never" or None

    @property
    def dax_always(self):
        """Every file is DAX (``dax`` or ``dax=always``)."""
        return self.dax in ("dax", "dax=always")


@dataclass(frozen=True)
class MemmapArg:
    """One ``memmap=`` item from the kernel command line."""

    text: str                  # as written, e.g. "memmap=4G!12G"
    kind: str                  # "pmem" (SIZE!START) or "other" ($, #, @, exactmap: not pmem)
    memmap: Optional[Memmap]   # parsed pmem range, None if invalid or not pmem
    error: Optional[str]       # why a pmem item is invalid

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
    cpu: Optional[CpuFeatures]
    ram_bytes: Optional[int]
    kernel: Optional[str]
    grub: bool                 # /etc/default/grub exists: the kernel command line can be changed
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
        for r, rd in zip(self.regions, d["regions"]):
            rd["eadr"] = r.eadr
            rd["emulated"] = r.emulated
        for m, md in zip(self.memmaps, d["memmaps"]):
            md["memmap"] = None if m.memmap is None else {
                "size": m.memmap.size, "start": m.memmap.start, "text": str(m.memmap)}
        for md in d["mounts"]:
            md["options"] = list(md["options"])
        if self.cpu is not None:
            d["cpu"]["best_flush"] = self.cpu.best_flush
        for key in ("regions", "namespaces", "devices", "mounts", "memmaps", "problems", "cxl"):
            d[key] = list(d[key])
        return d


# --- cheap helpers other modules call -------------------------------------------

def _dax_option(options):
    found = None
    for opt in options:
        if opt in DAX_OPTIONS:
            found = opt
    return found


def dax_mount_points(root="/"):
    """Mount points of filesystems mounted with ``dax`` or ``dax=always``."""
    mounts = _read_mounts_file(root)
    seen = []
    for _dev, mp, _fs, opts in mounts:
        if _dax_option(opts.split(",")) in ("dax", "dax=always") and mp not in seen:
            seen.append(mp)
    return seen


def native_flush_available():
    """True when pmemkit's C flush extension is importable (else mappings fall back to msync)."""
    return cpu.native() is not None


# --- backends ------------------------------------------------------------------

def _is_live_root(root):
    return os.path.realpath(root) == "/"


class _Dev:
    """A device as both backends describe it."""

    __slots__ = ("name", "sys_path", "device_node", "_attr")

    def __init__(self, name, sys_path, device_node, attr):
        self.name = name
        self.sys_path = sys_path
        self.device_node = device_node
        self._attr = attr

    def attr(self, name):
        return self._attr(self.sys_path, name)


class _FileBackend:
    """Reads a tree laid out like / (sys, proc, dev, etc) under ``root``."""

    name = "files"

    def __init__(self, root, problems):
        self.root = root
        self.problems = problems

    def attr(self, sys_path, name):
        path = os.path.join(sys_path, name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            return None
        except OSError as exc:
            self.problems.append(Problem(self._display(path), f"unreadable: {exc.strerror}"))
            return None
        try:
            return data.decode("ascii").strip()
        except UnicodeDecodeError:
            self.problems.append(Problem(self._display(path), "not ASCII text"))
            return None

    def _display(self, path):
        if self.root in ("/", ""):
            return path
        rel = os.path.relpath(path, self.root)
        return "/" + rel if not rel.startswith("..") else path

    def _list(self, rel, prefix):
        directory = _join(self.root, rel)
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        except OSError as exc:
            self.problems.append(Problem(rel, f"cannot list: {exc.strerror}"))
            return []
        out = []
        for name in names:
            if name.startswith(".") or not name.startswith(prefix):
                continue
            sys_path = os.path.realpath(os.path.join(directory, name))
            node = None
            if os.path.exists(_join(self.root, f"/dev/{name}")):
                node = f"/dev/{name}"
            out.append(_Dev(name, sys_path, node, self.attr))
        return out

    def nd_devices(self):
        return self._list("/sys/bus/nd/devices", "")

    def cxl_devices(self):
        return self._list("/sys/bus/cxl/devices", "")

    def block_devices(self):
        devs = self._list("/sys/class/block", "pmem")
        return devs or self._list("/sys/block", "pmem")

    def dax_devices(self):
        return self._list("/sys/bus/dax/devices", "dax")

    def mounts(self):
        return _read_mounts_file(self.root)

    def ram_bytes(self):
        text = _read_text(_join(self.root, "/proc/meminfo"), self.problems)
        if text is None:
            return None
        m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
        return int(m.group(1)) * 1024 if m else None

    def cpu(self):
        return _cpu_from_cpuinfo(self.root, self.problems)


class _LiveBackend:
    """The running system through pyudev (devices), the mount table and psutil (RAM)."""

    name = "live"

    def __init__(self, problems):
        import pyudev
        self._pyudev = pyudev
        self.context = pyudev.Context()
        self.problems = problems
        self.root = "/"

    def attr(self, sys_path, name):
        try:
            dev = self._pyudev.Devices.from_sys_path(self.context, sys_path)
            value = dev.attributes.get(name)
        except (self._pyudev.DeviceNotFoundError, OSError) as exc:
            self.problems.append(Problem(os.path.join(sys_path, name), f"unreadable: {exc}"))
            return None
        if value is None:
            return None
        try:
            return value.decode("ascii").strip()
        except UnicodeDecodeError:
            self.problems.append(Problem(os.path.join(sys_path, name), "not ASCII text"))
            return None

    def _list(self, subsystem, prefix):
        out = []
        for dev in self.context.list_devices(subsystem=subsystem):
            if dev.sys_name.startswith(prefix):
                out.append(_Dev(dev.sys_name, dev.sys_path, dev.device_node, self.attr))
        return sorted(out, key=lambda d: d.name)

    def nd_devices(self):
        return self._list("nd", "")

    def cxl_devices(self):
        return self._list("cxl", "")

    def block_devices(self):
        return self._list("block", "pmem")

    def dax_devices(self):
        return self._list("dax", "dax")

    def mounts(self):
        return _read_mounts_file("/")

    def ram_bytes(self):
        import psutil
        return psutil.virtual_memory().total

    def cpu(self):
        return _cpu_live(self.problems)


def _read_text(path, problems):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        problems.append(Problem(path, f"unreadable: {exc.strerror}"))
        return None


def _cpu_from_cpuinfo(root, problems):
    try:
        flags = cpuinfo.cpu_flags(root)
    except OSError as exc:
        problems.append(Problem(_join(root, "/proc/cpuinfo"), f"unreadable: {exc.strerror}"))
        return None
    if flags is None:
        return None
    return CpuFeatures("clflush" in flags, "clflushopt" in flags, "clwb" in flags, "/proc/cpuinfo")


def _cpu_live(problems):
    """CPU features from pmemkit.cpu (cpuid through the extension, else /proc/cpuinfo)."""
    f = cpu.features()
    return CpuFeatures(f["clflush"], f["clflushopt"], f["clwb"], cpu.feature_source())


# --- parsing ---------------------------------------------------------------------

def _split_cmdline(text):
    """Split a kernel command line the way the kernel does (double quotes group)."""
    args, cur, quoted, has = [], [], False, False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            has = True
        elif ch.isspace() and not quoted:
            if has:
                args.append("".join(cur))
            cur, has = [], False
        else:
            cur.append(ch)
            has = True
    if has:
        args.append("".join(cur))
    return args


def parse_cmdline_memmaps(cmdline):
    """Every ``memmap=`` item on a kernel command line, parsed and validated.

    Arguments after ``--`` belong to init and are ignored. A ``memmap=`` value
    may hold several comma-separated items (the kernel accepts that); items
    without ``!`` reserve memory of other kinds and are listed as ``"other"``.
    Invalid pmem items and overlapping ranges are reported in ``error``.
    """
    out = []
    accepted = []
    for arg in _split_cmdline(cmdline):
        if arg == "--":
            break
        if not arg.startswith("memmap="):
            continue
        for item in arg[len("memmap="):].split(","):
            text = f"memmap={item}"
            if "!" not in item:
                out.append(MemmapArg(text, "other", None, None))
                continue
            try:
                mm = parse_memmap(item)
            except InvalidArgumentError as exc:
                out.append(MemmapArg(text, "pmem", None, str(exc)))
                continue
            clash = next((a for a in accepted if mm.start < a.end and a.start < mm.end), None)
            if clash is not None:
                out.append(MemmapArg(text, "pmem", mm,
                                     f"{text} overlaps memmap={clash}; pmem ranges must not overlap"))
                continue
            accepted.append(mm)
            out.append(MemmapArg(text, "pmem", mm, None))
    return out


def _int(text, where, problems):
    if text is None or text == "":
        return None
    try:
        return int(text, 0)
    except ValueError:
        problems.append(Problem(where, f"not a number: {text!r}"))
        return None


_NS_RE = re.compile(r"^namespace(\d+)\.(\d+)$")
#: pmem block devices: pmem0, pmem0.1 (more namespaces in a region), pmem0s (BTT), partitions.
_PMEM_BLOCK_RE = re.compile(r"^pmem\d+(\.\d+)?s?(p\d+)?$")


def _is_pmem_device(device):
    return device.startswith("/dev/") and bool(_PMEM_BLOCK_RE.match(os.path.basename(device)))


def _is_same_or_partition(name, disk):
    return name == disk or (name.startswith(disk + "p") and name[len(disk) + 1:].isdigit())


_CLAIM_RE = re.compile(r"^(pfn|btt|dax)(\d+)\.(\d+)$")


def _build(backend, root, problems):
    nd = backend.nd_devices()
    regions, namespaces = [], []
    claims = {}       # pfnX.Y / bttX.Y / daxX.Y -> namespace it claims
    ns_devs = {}
    for dev in nd:
        if dev.name.startswith("region"):
            where = f"/sys/bus/nd/devices/{dev.name}"
            ro = dev.attr("read_only")
            provider = None
            parent = os.path.dirname(dev.sys_path)
            if os.path.basename(parent).startswith("ndbus"):
                provider = backend.attr(parent, "provider")
            regions.append(NdRegion(
                name=dev.name,
                size=_int(dev.attr("size"), f"{where}/size", problems),
                persistence_domain=dev.attr("persistence_domain") or None,
                deep_flush=os.path.exists(os.path.join(dev.sys_path, "deep_flush")),
                provider=provider,
                read_only=None if ro is None else ro == "1",
            ))
        elif _NS_RE.match(dev.name):
            ns_devs[dev.name] = dev
        elif _CLAIM_RE.match(dev.name):
            target = dev.attr("namespace")
            if target:
                claims[dev.name] = target

    # Block and dax devices, each attributed to the namespace above it in sysfs.
    def owner(sys_path):
        for part in reversed(sys_path.split(os.sep)):
            if _NS_RE.match(part):
                return part
            if part in claims:
                return claims[part]
        return None

    devices = []
    for dev in backend.block_devices():
        if not _PMEM_BLOCK_RE.match(dev.name):
            continue
        size = _int(dev.attr("size"), f"/sys/block/{dev.name}/size", problems)
        dax = dev.attr("queue/dax")
        if dax is None and dev.attr("partition") is not None:
            dax = backend.attr(os.path.dirname(dev.sys_path), "queue/dax")   # the whole disk's
        devices.append(Device(dev.name, dev.device_node, "block",
                              None if size is None else size * 512,
                              None if dax is None else dax == "1", owner(dev.sys_path)))
    for dev in backend.dax_devices():
        size = _int(dev.attr("size"), f"/sys/bus/dax/devices/{dev.name}/size", problems)
        devices.append(Device(dev.name, dev.device_node, "dax", size, True, owner(dev.sys_path)))

    for name in sorted(ns_devs, key=lambda n: tuple(int(x) for x in _NS_RE.match(n).groups())):
        dev = ns_devs[name]
        where = f"/sys/bus/nd/devices/{name}"
        size = _int(dev.attr("size"), f"{where}/size", problems)
        if not size:
            continue  # an idle seed namespace (size 0): not provisioned
        raw_mode = dev.attr("mode")
        if raw_mode is None:
            problems.append(Problem(f"{where}/mode", "missing"))
            mode = "unknown"
        else:
            mode = NAMESPACE_MODES.get(raw_mode)
            if mode is None:
                problems.append(Problem(f"{where}/mode", f"unknown namespace mode {raw_mode!r}"))
                mode = raw_mode
        region = None
        parent = os.path.basename(os.path.dirname(dev.sys_path))
        if parent.startswith("region"):
            region = parent
        else:
            region = "region" + _NS_RE.match(name).group(1)
        mine = sorted((d for d in devices if d.namespace == name), key=lambda d: len(d.name))
        node = next((d.path or f"/dev/{d.name}" for d in mine), None)   # the disk, not a partition
        namespaces.append(Namespace(name, region, mode, size, dev.attr("devtype"),
                                    dev.attr("holder") or None, node))

    mounts = []
    for device, mp, fstype, opts in backend.mounts():
        options = tuple(o for o in opts.split(",") if o)
        dax = _dax_option(options)
        if dax is not None or _is_pmem_device(device):
            mounts.append(Mount(device, mp, fstype, options, dax))

    cmdline = _read_text(_join(root, "/proc/cmdline"), problems)
    memmaps = parse_cmdline_memmaps(cmdline or "")   # invalid items carry their error

    cxl = []
    for dev in backend.cxl_devices():
        where = f"/sys/bus/cxl/devices/{dev.name}"
        if re.fullmatch(r"mem\d+", dev.name):
            cxl.append(CxlDevice(dev.name, "memdev", _int(dev.attr("pmem/size"), where, problems),
                                 _int(dev.attr("serial"), where, problems), None))
        elif re.fullmatch(r"region\d+", dev.name):
            commit = dev.attr("commit")
            cxl.append(CxlDevice(dev.name, "region", _int(dev.attr("size"), where, problems), None,
                                 None if commit is None else commit == "1"))

    kernel = _read_text(_join(root, "/proc/sys/kernel/osrelease"), problems)
    return dict(cxl=tuple(cxl),
        regions=tuple(regions), namespaces=tuple(namespaces), devices=tuple(devices),
        mounts=tuple(mounts), memmaps=tuple(memmaps), cpu=backend.cpu(),
        ram_bytes=backend.ram_bytes(), kernel=kernel.strip() if kernel else None,
        grub=os.path.exists(_join(root, "/etc/default/grub")),
    )


def discover(root="/", *, backend="auto"):
    """Describe this machine's (or a fixture tree's) persistent memory.

    ``backend``: ``"auto"`` (pyudev + psutil for ``/``, the file reader for any
    other root), ``"live"`` or ``"files"``. Unreadable or malformed entries are
    listed in ``problems``; :class:`DiscoveryError` is raised only when the tree
    itself cannot be read at all.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DiscoveryError(f"discovery root {root!r} is not a directory")
    if not os.path.isdir(_join(root, "/sys")) and not os.path.isdir(_join(root, "/proc")):
        raise DiscoveryError(
            f"{root!r} has neither sys/ nor proc/: pass / or a tree laid out like it")
    if backend not in ("auto", "live", "files"):
        raise InvalidArgumentError(f"backend must be 'auto', 'live' or 'files', got {backend!r}")
    problems = []
    chosen = None
    if backend in ("auto", "live"):
        if not _is_live_root(root):
            if backend == "live":
                raise InvalidArgumentError(
                    f"the live backend reads the running system only; use root='/' "
                    f"or backend='files' for {root!r}")
        else:
            try:
                chosen = _LiveBackend(problems)
            except (ImportError, OSError) as exc:
                if backend == "live":
                    raise DiscoveryError(
                        f"pyudev cannot read udev here ({exc}); install libudev1 "
                        f"or use backend='files'") from None
                problems.append(Problem("pyudev", f"unavailable ({exc}); read sysfs directly"))
    if chosen is None:
        chosen = _FileBackend(root, problems)
    parts = _build(chosen, root, problems)
    return Discovery(root=root, backend=chosen.name, native_flush=native_flush_available(),
                     problems=tuple(problems), **parts)


# --- doctor ---------------------------------------------------------------------

def approx_size(n):
    """``24684084 kB`` -> ``"23.5 GiB"``: sizes for people (exact ones use format_size)."""
    if n is None:
        return "?"
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class Advice:
    """One finding of :func:`diagnose`.

    ``level``: ``"ok"`` (works), ``"action"`` (a step to take, in order),
    ``"warning"`` (something is wrong or degraded), ``"info"``.
    """

    level: str
    title: str
    detail: str = ""
    commands: tuple = ()
    key: str = ""              # stable identifier, e.g. "memmap.missing", "namespace.raw"

    def to_dict(self):
        return dataclasses.asdict(self) | {"commands": list(self.commands)}


#: Physical RAM above 4 GiB is shifted up by the PCI hole (at most this much, commonly).
_PCI_HOLE = 2 << 30

#: Leave at least this much RAM (or a quarter of it, if more) to the system.
_RAM_HEADROOM = 1 << 30


def suggest_memmap(ram_bytes):
    """The ``memmap=`` range to suggest for a machine with ``ram_bytes`` of RAM.

    :data:`pmemkit.defaults.MEMMAP` when it ends well inside RAM (a quarter of
    RAM, at least 1 GiB, stays above the range), else
    :data:`pmemkit.defaults.MEMMAP_SMALL`, else ``None`` (too little RAM).
    """
    if ram_bytes is None:
        return parse_memmap(defaults.MEMMAP)
    headroom = max(_RAM_HEADROOM, ram_bytes // 4)
    for text in (defaults.MEMMAP, defaults.MEMMAP_SMALL):
        mm = parse_memmap(text)
        if mm.end + headroom <= ram_bytes:
            return mm
    return None


def _vm_advice():
    return Advice(
        "action", "Use emulated pmem in a QEMU guest",
        "This machine cannot get a /dev/pmem of its own (no nd regions and no boot loader "
        "pmemkit can change). The VM harness boots a guest with "
        f"memmap={defaults.MEMMAP}, ext4 and xfs mounted -o {defaults.MOUNT_OPTIONS} at "
        f"{', '.join(defaults.MOUNT_POINTS[fs] for fs in defaults.FILESYSTEMS)}, "
        "and runs your command or test suite on real DAX.",
        ("pmemkit vm run -- pmemkit info", "pmemkit vm test"),
        "vm")


def _mount_commands(device, fs=None, mp=None):
    fs = fs or defaults.FILESYSTEMS[0]
    mp = mp or defaults.MOUNT_POINTS[fs]
    return (
        " ".join((f"mkfs.{fs}",) + tuple(defaults.MKFS_OPTIONS[fs]) + (device,)),
        f"mkdir -p {mp}",
        f"mount -o {defaults.MOUNT_OPTIONS} {device} {mp}",
    )


def diagnose(info=None, *, root="/"):
    """Advice, most important first, for the next step to real DAX on this machine.

    ``info`` is a :class:`Discovery` (``discover(root)`` if omitted). The result
    is a list of :class:`Advice`; the CLI (``pmemkit doctor``) only prints it.
    """
    if info is None:
        info = discover(root)
    out = []

    for m in info.memmaps:
        if m.error:
            out.append(Advice("warning", f"Invalid kernel argument {m.text}", m.error,
                              key="memmap.invalid"))
    valid = [m.memmap for m in info.memmaps if m.valid]
    if info.ram_bytes:
        # MemTotal does not count the reserved ranges; RAM above the below-4G PCI hole
        # sits higher than its size, so allow for a hole of up to _PCI_HOLE.
        top = info.ram_bytes + sum(mm.size for mm in valid) + _PCI_HOLE
        for mm in valid:
            if mm.end > top:
                out.append(Advice(
                    "warning", f"memmap={mm} ends beyond this machine's RAM",
                    f"The range ends at {format_size(mm.end)} but the machine has about "
                    f"{approx_size(info.ram_bytes + sum(m.size for m in valid))} of RAM; the "
                    f"kernel cannot reserve memory that is not there. Choose a range that ends "
                    f"inside RAM, e.g. memmap={suggest_memmap(info.ram_bytes) or defaults.MEMMAP_SMALL}.",
                    key="memmap.beyond_ram"))

    active = [ns for ns in info.namespaces]
    if not info.regions:
        if valid:
            out.append(Advice(
                "action", "memmap= is set but the kernel made no pmem region",
                f"The command line reserves {', '.join('memmap=' + str(m) for m in valid)}, "
                "but /sys/bus/nd has no region: the legacy-pmem driver (nd_e820, "
                "CONFIG_X86_PMEM_LEGACY) is not loaded. Load it and check the kernel log.",
                ("modprobe nd_e820", "modprobe nd_pmem", "dmesg | grep -i -e e820 -e pmem"),
                "memmap.no_region"))
        elif info.grub:
            mm = suggest_memmap(info.ram_bytes)
            if mm is None:
                out.append(Advice(
                    "warning", "Too little RAM to reserve emulated pmem",
                    f"This machine has {approx_size(info.ram_bytes)} of RAM; even "
                    f"memmap={defaults.MEMMAP_SMALL} would leave too little.",
                    key="memmap.too_small"))
                out.append(_vm_advice())
            else:
                small = str(mm) != defaults.MEMMAP
                why = (f" (RAM is {approx_size(info.ram_bytes)}, so the smaller range instead "
                       f"of the default memmap={defaults.MEMMAP})" if small else "")
                out.append(Advice(
                    "action", "Reserve emulated pmem on the kernel command line",
                    f"Add {mm.kernel_arg} to GRUB_CMDLINE_LINUX in /etc/default/grub{why}: "
                    f"{format_size(mm.size)} of RAM starting at physical address "
                    f"{format_size(mm.start)} becomes /dev/pmem0 after a reboot. Keep the "
                    f"existing arguments in place of '...'.",
                    (f'GRUB_CMDLINE_LINUX="... {mm.kernel_arg}"', "update-grub", "reboot"),
                    "memmap.missing"))
                out.append(Advice(
                    "info", "Or, without rebooting: the VM harness",
                    "pmemkit vm run boots a QEMU guest with emulated pmem and DAX mounts.",
                    ("pmemkit vm run -- pmemkit info",), "vm.alternative"))
        else:
            out.append(_vm_advice())

    mounted = {}
    for m in info.mounts:
        mounted.setdefault(os.path.basename(m.device), []).append(m)
    used_mps = {m.mount_point for m in info.mounts}

    def free_mount_point():
        # The defaults in order (ext4 first, then xfs...), then numbered ones.
        n = 1
        while True:
            for fs in defaults.FILESYSTEMS:
                mp = defaults.MOUNT_POINTS[fs] + ("" if n == 1 else f"-{n}")
                if mp not in used_mps:
                    used_mps.add(mp)
                    return fs, mp
            n += 1
    for ns in active:
        dev = ns.device
        if ns.mode == "raw":
            out.append(Advice(
                "action", f"{ns.name} is in raw mode: no DAX",
                f"Raw mode ({dev or 'no device'}) has no struct pages, so filesystems cannot "
                f"use DAX on it. Reconfigure it to {defaults.NAMESPACE_MODE} (this erases it):",
                (f"ndctl create-namespace -f -e {ns.name} --mode={defaults.NAMESPACE_MODE} --map=mem",),
                "namespace.raw"))
        elif ns.mode == "sector":
            out.append(Advice(
                "info", f"{ns.name} is in sector mode (BTT): atomic sectors, no DAX",
                f"{dev or 'its device'} gives power-fail-atomic sectors but cannot be mounted "
                f"with -o dax and refuses MAP_SYNC. For DAX, reconfigure it (this erases it):",
                (f"ndctl create-namespace -f -e {ns.name} --mode={defaults.NAMESPACE_MODE} --map=mem",),
                "namespace.sector"))
        elif ns.mode == "devdax":
            out.append(Advice(
                "ok", f"{ns.name} is device DAX: {dev or 'no device node'}",
                "Map the character device directly (whole-device mappings, no filesystem). "
                "For a DAX filesystem instead, reconfigure it (this erases it):",
                (f"ndctl create-namespace -f -e {ns.name} --mode=fsdax --map=mem",),
                "namespace.devdax"))
        elif ns.mode == "fsdax":
            if dev is None:
                out.append(Advice(
                    "action", f"{ns.name} is fsdax but has no block device",
                    "The namespace is disabled or its driver is not loaded.",
                    (f"ndctl enable-namespace {ns.name}", "modprobe nd_pmem"),
                    "namespace.disabled"))
                continue
            disk = os.path.basename(dev)
            mine = [m for name, ms in mounted.items() if _is_same_or_partition(name, disk)
                    for m in ms]
            if not mine:
                fs, mp = free_mount_point()
                cmds = _mount_commands(dev, fs, mp)
                alt = next((f for f in defaults.FILESYSTEMS if f != fs), None)
                detail = (f"{dev} supports DAX but no filesystem on it is mounted. Make one "
                          f"({fs}) and mount it with -o {defaults.MOUNT_OPTIONS}")
                if alt:
                    detail += f" (or use {alt}: {_mount_commands(dev, alt, mp)[0]})"
                out.append(Advice("action", f"Mount {dev} with DAX", detail + ":", cmds,
                                  "mount.missing"))
            for m in mine:
                if m.dax_always:
                    out.append(Advice(
                        "ok", f"DAX ready: {m.mount_point} ({m.fstype}, {m.dax})",
                        f"Files there map with MAP_SYNC; pmemkit's DAX tests find it through "
                        f"{defaults.DAX_DIRS_ENV}.",
                        (f"{defaults.DAX_DIRS_ENV}={m.mount_point} python -m pytest -m dax",),
                        "mount.dax"))
                elif m.dax == "dax=inode":
                    out.append(Advice(
                        "action", f"{m.mount_point} is mounted dax=inode",
                        "Only files and directories with the DAX flag use DAX. Set it on a "
                        "directory (new files inherit it) or remount with dax=always:",
                        (f"xfs_io -c 'chattr +x' {m.mount_point}",
                         f"umount {m.mount_point}",
                         f"mount -o dax=always {m.device} {m.mount_point}"),
                        "mount.inode"))
                else:
                    out.append(Advice(
                        "action", f"{m.mount_point} is mounted without DAX",
                        f"{m.device} ({m.fstype}) supports DAX; unmount it and mount it again "
                        f"with -o {defaults.MOUNT_OPTIONS} ('mount -o remount' cannot switch DAX on):",
                        (f"umount {m.mount_point}",
                         f"mount -o {defaults.MOUNT_OPTIONS} {m.device} {m.mount_point}"),
                        "mount.nodax"))

    for r in info.regions:
        if r.eadr:
            out.append(Advice(
                "info", f"{r.name}: eADR (persistence domain cpu_cache)",
                "CPU caches are in the persistence domain: flushes are skipped, fences stay "
                "(granularity 'byte').", key="eadr"))

    if not info.native_flush:
        out.append(Advice(
            "warning", "Native flush extension missing: mappings fall back to msync",
            "pmemkit was installed without its C extension (no compiler at install time), "
            "so flush/drain use msync even on real pmem. Install a compiler and reinstall:",
            ("apt-get install -y gcc python3-dev", "pip install --force-reinstall --no-deps pmemkit"),
            "native.missing"))
    if info.cpu is not None and info.cpu.best_flush is None:
        out.append(Advice(
            "warning", "The CPU reports no CLFLUSH", "Mappings will use msync.",
            key="cpu.noflush"))
    for p in info.problems:
        out.append(Advice("warning", f"Unexpected sysfs/procfs entry {p.where}", p.message,
                          key="problem"))

    order = {"warning": 0, "action": 1, "ok": 2, "info": 3}
    return sorted(out, key=lambda a: order.get(a.level, 9))
