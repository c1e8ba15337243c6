"""What this machine has for persistent memory, and the next step to real DAX.

:func:`discover` returns a :class:`Discovery`: nd regions and namespaces (mode
raw / fsdax / sector / devdax), ``/dev/pmem*`` and ``/dev/dax*`` devices, mounts
with their DAX option, every ``memmap=`` on the kernel command line, the CPU's
cache-flush instructions and eADR. :func:`diagnose` turns that into advice
(``pmemkit doctor`` prints it).

The package, along its seams:

* :mod:`.model` - the frozen dataclasses describing what was found;
* :mod:`.files` - the fixture-tree backend: a reader over a directory tree laid out
  like ``/sys`` and ``/proc`` (fixture trees, and the fallback when libudev is missing);
* :mod:`.udev` - the live backend: pyudev enumerates the ``nd``, ``block`` and ``dax``
  subsystems (its ``Device`` objects are kept) and psutil gives the RAM size;
* :mod:`.cmdline` - ``memmap=`` items of the kernel command line;
* :mod:`.doctor` - the advice;
* this module - :func:`discover`, which builds the model from either backend.

Both backends build the same model; the test suite checks they agree on the real
machine. The machine facts underneath (sysfs, the mount table, statx, /proc/cpuinfo)
are read by :mod:`pmemkit._linux`. The small helpers :func:`has_eadr`,
:func:`dax_mount_points` and :func:`is_dax` import neither pyudev nor numpy.
"""

from __future__ import annotations

import os
import re

from .. import cpu
from .._linux import join as _join
from .._linux.mounts import read_mounts as _read_mounts_file
from .._linux.statx import STATX_ATTR_DAX, is_dax
from .._linux.statx import statx_attributes as _statx_raw  # noqa: F401 - old name
from .._linux.sysfs import has_eadr
from ..errors import DiscoveryError, InvalidArgumentError
from .cmdline import parse_cmdline_memmaps, split_cmdline
from .doctor import Advice, approx_size, suggest_memmap
from .doctor import diagnose as _diagnose
from .files import FileBackend, read_text
from .model import (DAX_OPTIONS, NAMESPACE_MODES, CpuFeatures, CxlDevice, Device, Discovery,
                    MemmapArg, Mount, Namespace, NdRegion, Problem, dax_option)
from .udev import UdevBackend

__all__ = [
    "Advice", "CpuFeatures", "CxlDevice", "DAX_OPTIONS", "Device", "Discovery", "DiscoveryError",
    "MemmapArg", "Mount", "NAMESPACE_MODES", "Namespace", "NdRegion", "Problem",
    "STATX_ATTR_DAX", "approx_size", "dax_mount_points", "diagnose", "discover", "has_eadr",
    "is_dax", "native_flush_available", "parse_cmdline_memmaps", "split_cmdline",
    "suggest_memmap",
]


def dax_mount_points(root="/"):
    """Mount points of filesystems mounted with ``dax`` or ``dax=always``."""
    seen = []
    for _dev, mp, _fs, opts in _read_mounts_file(root):
        if dax_option(opts.split(",")) in ("dax", "dax=always") and mp not in seen:
            seen.append(mp)
    return seen


def native_flush_available():
    """True when pmemkit's C flush extension is importable (else mappings fall back to msync)."""
    return cpu.native() is not None


def _is_live_root(root):
    return os.path.realpath(root) == "/"


_NS_RE = re.compile(r"^namespace(\d+)\.(\d+)$")
#: pmem block devices: pmem0, pmem0.1 (more namespaces in a region), pmem0s (BTT), partitions.
_PMEM_BLOCK_RE = re.compile(r"^pmem\d+(\.\d+)?s?(p\d+)?$")


def _is_pmem_device(device):
    return device.startswith("/dev/") and bool(_PMEM_BLOCK_RE.match(os.path.basename(device)))


_CLAIM_RE = re.compile(r"^(pfn|btt|dax)(\d+)\.(\d+)$")


def _build(backend, root, problems):
    nd = backend.nd_devices()
    regions, namespaces = [], []
    claims = {}       # pfnX.Y / bttX.Y / daxX.Y -> namespace it claims
    ns_devs = {}
    for dev in nd:
        if dev.name.startswith("region"):
            where = f"/sys/bus/nd/devices/{dev.name}"
            ro = dev.text("read_only")
            bus = dev.parent()
            provider = None
            if bus is not None and bus.name.startswith("ndbus"):
                provider = bus.text("provider")
            regions.append(NdRegion(
                name=dev.name,
                size=dev.number("size", f"{where}/size"),
                persistence_domain=dev.text("persistence_domain") or None,
                deep_flush=os.path.exists(os.path.join(dev.sys_path, "deep_flush")),
                provider=provider,
                read_only=None if ro is None else ro == "1",
            ))
        elif _NS_RE.match(dev.name):
            ns_devs[dev.name] = dev
        elif _CLAIM_RE.match(dev.name):
            target = dev.text("namespace")
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
        size = dev.number("size", f"/sys/block/{dev.name}/size")
        dax = dev.text("queue/dax")
        if dax is None and dev.text("partition") is not None:
            dax = dev.parent().text("queue/dax")                  # the whole disk's
        devices.append(Device(dev.name, dev.device_node, "block",
                              None if size is None else size * 512,
                              None if dax is None else dax == "1", owner(dev.sys_path)))
    for dev in backend.dax_devices():
        size = dev.number("size", f"/sys/bus/dax/devices/{dev.name}/size")
        devices.append(Device(dev.name, dev.device_node, "dax", size, True, owner(dev.sys_path)))

    for name in sorted(ns_devs, key=lambda n: tuple(int(x) for x in _NS_RE.match(n).groups())):
        dev = ns_devs[name]
        where = f"/sys/bus/nd/devices/{name}"
        size = dev.number("size", f"{where}/size")
        if not size:
            continue  # an idle seed namespace (size 0): not provisioned
        raw_mode = dev.text("mode")
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
        namespaces.append(Namespace(name, region, mode, size, dev.text("devtype"),
                                    dev.text("holder") or None, node))

    mounts = []
    for device, mp, fstype, opts in backend.mounts():
        options = tuple(o for o in opts.split(",") if o)
        dax = dax_option(options)
        if dax is not None or _is_pmem_device(device):
            mounts.append(Mount(device, mp, fstype, options, dax))

    cmdline = read_text(_join(root, "/proc/cmdline"), problems)
    memmaps = parse_cmdline_memmaps(cmdline or "")   # invalid items carry their error

    cxl = []
    for dev in backend.cxl_devices():
        where = f"/sys/bus/cxl/devices/{dev.name}"
        if re.fullmatch(r"mem\d+", dev.name):
            cxl.append(CxlDevice(dev.name, "memdev", dev.number("pmem/size", where),
                                 dev.number("serial", where), None))
        elif re.fullmatch(r"region\d+", dev.name):
            commit = dev.text("commit")
            cxl.append(CxlDevice(dev.name, "region", dev.number("size", where), None,
                                 None if commit is None else commit == "1"))

    kernel = read_text(_join(root, "/proc/sys/kernel/osrelease"), problems)
    return dict(
        cxl=tuple(cxl), regions=tuple(regions), namespaces=tuple(namespaces),
        devices=tuple(devices),
        mounts=tuple(mounts), memmaps=tuple(memmaps), cpu=backend.cpu(),
        ram_bytes=backend.ram_bytes(), kernel=kernel.strip() if kernel else None,
        has_grub_defaults=os.path.exists(_join(root, "/etc/default/grub")),
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
                chosen = UdevBackend(problems)
            except (ImportError, OSError) as exc:
                if backend == "live":
                    raise DiscoveryError(
                        f"pyudev cannot read udev here ({exc}); install libudev1 "
                        f"or use backend='files'") from None
                problems.append(Problem("pyudev", f"unavailable ({exc}); read sysfs directly"))
    if chosen is None:
        chosen = FileBackend(root, problems)
    parts = _build(chosen, root, problems)
    return Discovery(root=root, backend=chosen.name, native_flush=native_flush_available(),
                     problems=tuple(problems), **parts)


def diagnose(info=None, *, root="/"):
    """Advice, most important first, for the next step to real DAX on this machine.

    ``info`` is a :class:`Discovery` (``discover(root)`` if omitted). The result
    is a list of :class:`Advice`; the CLI (``pmemkit doctor``) only prints it.
    """
    return _diagnose(discover(root) if info is None else info)
