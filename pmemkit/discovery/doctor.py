"""``pmemkit doctor``: advice, most important first, for the next step to real DAX.

:func:`diagnose` reads a :class:`~.model.Discovery` and returns :class:`Advice`
items; each section of the machine (kernel command line, regions, namespaces and
their mounts, the CPU and the extension) has its own function here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from .. import defaults
from ..units import format_size, parse_memmap

_RECONFIGURE = "ndctl create-namespace -f -e {name} --mode={mode} --map=mem"


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


def _memmap_advice(info, valid):
    """Invalid ``memmap=`` items, and ranges that end beyond the machine's RAM."""
    out = []
    for m in info.memmaps:
        if m.error:
            out.append(Advice("warning", f"Invalid kernel argument {m.text}", m.error,
                              key="memmap.invalid"))
    if not info.ram_bytes:
        return out
    # MemTotal does not count the reserved ranges; RAM above the below-4G PCI hole
    # sits higher than its size, so allow for a hole of up to _PCI_HOLE.
    reserved = sum(mm.size for mm in valid)
    top = info.ram_bytes + reserved + _PCI_HOLE
    for mm in valid:
        if mm.end > top:
            suggestion = suggest_memmap(info.ram_bytes) or defaults.MEMMAP_SMALL
            out.append(Advice(
                "warning", f"memmap={mm} ends beyond this machine's RAM",
                f"The range ends at {format_size(mm.end)} but the machine has about "
                f"{approx_size(info.ram_bytes + reserved)} of RAM; the kernel cannot reserve "
                f"memory that is not there. Choose a range that ends inside RAM, e.g. "
                f"memmap={suggestion}.",
                key="memmap.beyond_ram"))
    return out


def _no_region_advice(info, valid):
    """No nd region: load the driver, reserve pmem on the command line, or use a guest."""
    if valid:
        return [Advice(
            "action", "memmap= is set but the kernel made no pmem region",
            f"The command line reserves {', '.join('memmap=' + str(m) for m in valid)}, "
            "but /sys/bus/nd has no region: the legacy-pmem driver (nd_e820, "
            "CONFIG_X86_PMEM_LEGACY) is not loaded. Load it and check the kernel log.",
            ("modprobe nd_e820", "modprobe nd_pmem", "dmesg | grep -i -e e820 -e pmem"),
            "memmap.no_region")]
    if not info.has_grub_defaults:
        return [_vm_advice()]
    mm = suggest_memmap(info.ram_bytes)
    if mm is None:
        return [Advice("warning", "Too little RAM to reserve emulated pmem",
                       f"This machine has {approx_size(info.ram_bytes)} of RAM; even "
                       f"memmap={defaults.MEMMAP_SMALL} would leave too little.",
                       key="memmap.too_small"),
                _vm_advice()]
    small = str(mm) != defaults.MEMMAP
    why = (f" (RAM is {approx_size(info.ram_bytes)}, so the smaller range instead "
           f"of the default memmap={defaults.MEMMAP})" if small else "")
    return [
        Advice("action", "Reserve emulated pmem on the kernel command line",
               f"Add {mm.kernel_arg} to GRUB_CMDLINE_LINUX in /etc/default/grub{why}: "
               f"{format_size(mm.size)} of RAM starting at physical address "
               f"{format_size(mm.start)} becomes /dev/pmem0 after a reboot. Keep the "
               f"existing arguments in place of '...'.",
               (f'GRUB_CMDLINE_LINUX="... {mm.kernel_arg}"', "update-grub", "reboot"),
               "memmap.missing"),
        Advice("info", "Or, without rebooting: the VM harness",
               "pmemkit vm run boots a QEMU guest with emulated pmem and DAX mounts.",
               ("pmemkit vm run -- pmemkit info",), "vm.alternative"),
    ]


def _is_same_or_partition(name, disk):
    return name == disk or (name.startswith(disk + "p") and name[len(disk) + 1:].isdigit())


class _MountPoints:
    """Free mount points to suggest: the defaults in order (ext4 first...), then numbered."""

    def __init__(self, mounts):
        self.used = {m.mount_point for m in mounts}

    def take(self):
        n = 1
        while True:
            for fs in defaults.FILESYSTEMS:
                mp = defaults.MOUNT_POINTS[fs] + ("" if n == 1 else f"-{n}")
                if mp not in self.used:
                    self.used.add(mp)
                    return fs, mp
            n += 1


def _mount_advice(m):
    """What to do about one mount of an fsdax device."""
    if m.dax_always:
        return Advice(
            "ok", f"DAX ready: {m.mount_point} ({m.fstype}, {m.dax})",
            f"Files there map with MAP_SYNC; pmemkit's DAX tests find it through "
            f"{defaults.DAX_DIRS_ENV}.",
            (f"{defaults.DAX_DIRS_ENV}={m.mount_point} python -m pytest -m dax",),
            "mount.dax")
    if m.dax == "dax=inode":
        return Advice(
            "action", f"{m.mount_point} is mounted dax=inode",
            "Only files and directories with the DAX flag use DAX. Set it on a "
            "directory (new files inherit it) or remount with dax=always:",
            (f"xfs_io -c 'chattr +x' {m.mount_point}",
             f"umount {m.mount_point}",
             f"mount -o dax=always {m.device} {m.mount_point}"),
            "mount.inode")
    return Advice(
        "action", f"{m.mount_point} is mounted without DAX",
        f"{m.device} ({m.fstype}) supports DAX; unmount it and mount it again "
        f"with -o {defaults.MOUNT_OPTIONS} ('mount -o remount' cannot switch DAX on):",
        (f"umount {m.mount_point}",
         f"mount -o {defaults.MOUNT_OPTIONS} {m.device} {m.mount_point}"),
        "mount.nodax")


def _fsdax_advice(ns, mounted, mount_points):
    """An fsdax namespace: enable it, make and mount a filesystem, or check its mounts."""
    dev = ns.device
    if dev is None:
        return [Advice("action", f"{ns.name} is fsdax but has no block device",
                       "The namespace is disabled or its driver is not loaded.",
                       (f"ndctl enable-namespace {ns.name}", "modprobe nd_pmem"),
                       "namespace.disabled")]
    disk = os.path.basename(dev)
    mine = [m for name, ms in mounted.items() if _is_same_or_partition(name, disk) for m in ms]
    if mine:
        return [_mount_advice(m) for m in mine]
    fs, mp = mount_points.take()
    alt = next((f for f in defaults.FILESYSTEMS if f != fs), None)
    detail = (f"{dev} supports DAX but no filesystem on it is mounted. Make one "
              f"({fs}) and mount it with -o {defaults.MOUNT_OPTIONS}")
    if alt:
        detail += f" (or use {alt}: {_mount_commands(dev, alt, mp)[0]})"
    return [Advice("action", f"Mount {dev} with DAX", detail + ":", _mount_commands(dev, fs, mp),
                   "mount.missing")]


def _namespace_advice(info):
    """Each namespace by its mode: raw and sector have no DAX, devdax is ready, fsdax mounts."""
    mounted = {}
    for m in info.mounts:
        mounted.setdefault(os.path.basename(m.device), []).append(m)
    mount_points = _MountPoints(info.mounts)
    out = []
    for ns in info.namespaces:
        dev = ns.device
        to_fsdax = _RECONFIGURE.format(name=ns.name, mode=defaults.NAMESPACE_MODE)
        if ns.mode == "raw":
            out.append(Advice(
                "action", f"{ns.name} is in raw mode: no DAX",
                f"Raw mode ({dev or 'no device'}) has no struct pages, so filesystems cannot "
                f"use DAX on it. Reconfigure it to {defaults.NAMESPACE_MODE} (this erases it):",
                (to_fsdax,), "namespace.raw"))
        elif ns.mode == "sector":
            out.append(Advice(
                "info", f"{ns.name} is in sector mode (BTT): atomic sectors, no DAX",
                f"{dev or 'its device'} gives power-fail-atomic sectors but cannot be mounted "
                f"with -o dax and refuses MAP_SYNC. For DAX, reconfigure it (this erases it):",
                (to_fsdax,), "namespace.sector"))
        elif ns.mode == "devdax":
            out.append(Advice(
                "ok", f"{ns.name} is device DAX: {dev or 'no device node'}",
                "Map the character device directly (whole-device mappings, no filesystem). "
                "For a DAX filesystem instead, reconfigure it (this erases it):",
                (_RECONFIGURE.format(name=ns.name, mode="fsdax"),), "namespace.devdax"))
        elif ns.mode == "fsdax":
            out.extend(_fsdax_advice(ns, mounted, mount_points))
    return out


def _machine_advice(info):
    """eADR regions, the native extension, the CPU's flush instructions, unreadable entries."""
    out = [Advice("info", f"{r.name}: eADR (persistence domain cpu_cache)",
                  "CPU caches are in the persistence domain: flushes are skipped, fences stay "
                  "(granularity 'byte').", key="eadr")
           for r in info.regions if r.eadr]
    if not info.native_flush:
        out.append(Advice(
            "warning", "Native flush extension missing: mappings fall back to msync",
            "pmemkit was installed without its C extension (no compiler at install time), "
            "so flush/drain use msync even on real pmem. Install a compiler and reinstall:",
            ("apt-get install -y gcc python3-dev",
             "pip install --force-reinstall --no-deps pmemkit"),
            "native.missing"))
    if info.cpu is not None and info.cpu.best_flush is None:
        out.append(Advice("warning", "The CPU reports no CLFLUSH", "Mappings will use msync.",
                          key="cpu.noflush"))
    out.extend(Advice("warning", f"Unexpected sysfs/procfs entry {p.where}", p.message,
                      key="problem") for p in info.problems)
    return out


_LEVEL_ORDER = {"warning": 0, "action": 1, "ok": 2, "info": 3}


def diagnose(info):
    """Advice, most important first, for the next step to real DAX on the machine ``info``
    (a :class:`~.model.Discovery`) describes; a list of :class:`Advice`."""
    valid = [m.memmap for m in info.memmaps if m.valid]
    out = _memmap_advice(info, valid)
    if not info.regions:
        out += _no_region_advice(info, valid)
    out += _namespace_advice(info)
    out += _machine_advice(info)
    return sorted(out, key=lambda a: _LEVEL_ORDER.get(a.level, 9))
