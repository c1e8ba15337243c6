"""VM options, validated before QEMU starts. Every default comes from :mod:`pmemkit.defaults`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import defaults
from ..errors import InvalidArgumentError, VmConfigError
from ..units import Memmap, format_size, parse_memmap, parse_size

_GIB = 1 << 30
#: QEMU "pc": RAM of 3.5 GiB or more is split into 3 GiB below the PCI hole and the rest at 4 GiB.
_PC_LOWMEM_LIMIT = 0xE0000000
_PC_LOWMEM = 3 * _GIB
_FOUR_GIB = 4 * _GIB
#: Guest paths the host share is never mounted over (it goes to SHARE_FALLBACK instead).
_RESERVED = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/mnt", "/proc", "/run", "/sbin",
             "/sys", "/usr", "/var")
SHARE_FALLBACK = "/mnt/host"


def _size(value, what):
    try:
        return parse_size(value, what)
    except InvalidArgumentError as exc:
        raise VmConfigError(str(exc)) from None


def _backing_file(path, size, what, option):
    """``path`` (absolute) after checking it can back a ``size``-byte device; None stays None."""
    if path is None:
        return None
    p = Path(path).expanduser().absolute()
    if p.exists() and not p.is_file():
        raise VmConfigError(f"{what} backing file {p} exists and is not a regular file")
    if p.exists() and p.stat().st_size not in (0, size):
        raise VmConfigError(
            f"{what} backing file {p} is {format_size(p.stat().st_size)}, not "
            f"{format_size(size)}: pass {option} {format_size(p.stat().st_size)} or another file")
    if not os.access(p.parent, os.W_OK):
        raise VmConfigError(f"cannot create the {what} backing file in {p.parent}: "
                            "directory missing or not writable")
    return p


def pc_ram_ranges(memory):
    """Guest-physical RAM ranges ``[(start, end), ...]`` of QEMU's ``pc`` machine with ``memory``
    bytes."""
    if memory >= _PC_LOWMEM_LIMIT:
        return [(0, _PC_LOWMEM), (_FOUR_GIB, _FOUR_GIB + memory - _PC_LOWMEM)]
    return [(0, memory)]


def default_memory(memmap):
    """Guest RAM that contains the memmap range plus headroom (``4G!12G`` -> 17G)."""
    headroom = parse_size(defaults.VM_MEMORY_HEADROOM)
    if memmap is None:
        return 2 * _GIB
    return memmap.end + headroom


@dataclass(frozen=True)
class VmConfig:
    """Everything that shapes a guest. Construct with strings or numbers; it validates and
    normalises itself (sizes to bytes) and raises :class:`~pmemkit.errors.VmConfigError` on bad
    input.

    * ``memmap``: ``"4G!12G"`` (default when no ``nvdimm``) - RAM the guest kernel turns into pmem.
    * ``nvdimm``: a size (``"1G"``) for a QEMU NVDIMM instead; ``nvdimm_file`` its backing file
      (default: one in the cache, kept across runs); ``labels``: give it a label area.
    * ``mode``: ``fsdax`` (default), ``sector`` (BTT, ``/dev/pmem0s``) or ``raw``.
    * ``fs``: filesystems to make and mount (default ext4 and xfs in fsdax mode, none otherwise);
      in fsdax mode they are mounted with ``-o dax`` at :data:`pmemkit.defaults.MOUNT_POINTS`.
    * ``memory``: guest RAM (default: enough to hold the memmap range plus headroom).
    * ``accel``: ``auto`` (try KVM, fall back to TCG), ``kvm`` or ``tcg``.
    * ``share``: host directory visible read-write in the guest at the same path (default: the
      current directory); ``False`` for none. ``cwd``: where the command starts (default: the
      host's current directory when inside the share, else the share).
    * ``env``: extra environment for the command. ``timeout``: seconds before QEMU is killed.
    * ``cxl``: a size (``"256M"``, a multiple of 256M) for a CXL type-3 persistent memory device
      instead (QEMU ``q35``); ``cxl_file`` its backing file (default: one in the cache, kept
      across runs; its label area is kept beside it in ``<file>.lsa``).
    * ``ramdax``: the memmap range becomes a *labelled* NVDIMM (the ramdax driver, Linux 7.x:
      ``kernel="debian-7.3"``) carved into ``namespaces``, a list of modes (default one
      ``fsdax``); the filesystems go on the first.
    * ``persist``: a file backing the guest's RAM, so memmap pmem (and ramdax labels) outlive
      the guest.
    * ``kernel``: a name of :data:`pmemkit.defaults.VM_KERNELS` (default ``debian``, Debian 12's
      6.1) or the path of a kernel image (bzImage/vmlinux); ``modules``: that kernel's modules
      directory (``make modules_install INSTALL_MOD_PATH=DIR``).
    """

    memmap: object = None
    nvdimm: object = None
    nvdimm_file: object = None
    labels: bool = False
    mode: str = defaults.NAMESPACE_MODE
    fs: object = None
    memory: object = None
    accel: str = defaults.VM_ACCEL
    cpus: int = defaults.VM_CPUS
    share: object = None
    cwd: object = None
    env: dict = field(default_factory=dict)
    timeout: float = defaults.VM_TIMEOUT
    cache_dir: object = None
    kernel_package: object = None
    kernel: object = None
    modules: object = None
    cxl: object = None
    cxl_file: object = None
    ramdax: bool = False
    namespaces: object = None
    persist: object = None

    def __post_init__(self):
        set_field = object.__setattr__
        if self.mode not in defaults.VM_MODES:
            raise VmConfigError(f"unknown namespace mode {self.mode!r}: use one of "
                                f"{', '.join(defaults.VM_MODES)}")
        if self.accel not in defaults.VM_ACCELS:
            raise VmConfigError(f"unknown accelerator {self.accel!r}: use "
                                f"{', '.join(defaults.VM_ACCELS)}")
        if not isinstance(self.cpus, int) or self.cpus < 1:
            raise VmConfigError(f"cpus must be a positive whole number, got {self.cpus!r}")
        # pmem: memmap, NVDIMM or CXL
        if self.cxl is None and self.cxl_file is not None:
            set_field(self, "cxl", defaults.VM_CXL_SIZE)
        if sum(x is not None for x in (self.memmap, self.nvdimm, self.cxl)) > 1:
            raise VmConfigError("choose either memmap or nvdimm or cxl, not several")
        if self.nvdimm is None and self.nvdimm_file is not None:
            set_field(self, "nvdimm", defaults.VM_NVDIMM_SIZE)
        if self.cxl is not None:
            pmem_size = self._device("cxl", "CXL", defaults.VM_CXL_GRANULARITY,
                                     "the CXL region granularity")
        elif self.nvdimm is None:
            mm = self.memmap if self.memmap is not None else defaults.MEMMAP
            if not isinstance(mm, Memmap):
                try:
                    mm = parse_memmap(mm)
                except InvalidArgumentError as exc:
                    raise VmConfigError(str(exc)) from None
            set_field(self, "memmap", mm)
            pmem_size = mm.size
        else:
            pmem_size = self._device("nvdimm", "NVDIMM", defaults.VM_NVDIMM_ALIGN,
                                     "the fsdax namespace alignment")
        self._check_ramdax()
        # filesystems
        if self.fs is None:
            fs = defaults.FILESYSTEMS if self.mode == "fsdax" else ()
        elif isinstance(self.fs, str):
            fs = tuple(x.strip() for x in self.fs.split(",") if x.strip() and x.strip() != "none")
        else:
            fs = tuple(self.fs)
        for name in fs:
            if name not in defaults.FILESYSTEMS:
                raise VmConfigError(f"unknown filesystem {name!r}: use "
                                    f"{', '.join(defaults.FILESYSTEMS)} or none")
        if len(set(fs)) != len(fs):
            raise VmConfigError(f"filesystem listed twice in {','.join(fs)}")
        need = sum(defaults.MIN_FS_MIB[name] for name in fs) + 8
        if fs and pmem_size < need << 20:
            raise VmConfigError(
                f"{format_size(pmem_size)} of pmem is too small for {' and '.join(fs)} (needs "
                f"{need}M; mkfs.xfs refuses less than {defaults.MIN_FS_MIB['xfs']}M): use a larger "
                "size or fewer filesystems")
        set_field(self, "fs", fs)
        # memory
        mem = (_size(self.memory, "guest memory") if self.memory is not None
               else default_memory(self.memmap))
        set_field(self, "memory", mem)
        if mem < 256 << 20:
            raise VmConfigError(f"guest memory {format_size(mem)} is too small: use at least 512M")
        if self.memmap is not None:
            mm = self.memmap
            ranges = pc_ram_ranges(mem)
            if mm.start < 64 << 20:
                raise VmConfigError(f"memmap={mm}: the range starts below 64M, where the guest's "
                                    "firmware and kernel live: start it at 1G or above")
            if not any(lo <= mm.start and mm.end <= hi for lo, hi in ranges):
                spans = ", ".join(f"{format_size(lo)}-{format_size(hi)}" for lo, hi in ranges)
                raise VmConfigError(
                    f"memmap={mm} (bytes {format_size(mm.start)}-{format_size(mm.end)}) does not "
                    f"fit in the guest's RAM ({format_size(mem)}: physical {spans}): use --memory "
                    f"{format_size(default_memory(mm))} or a range inside the RAM")
            free = mem - mm.size
            if free < parse_size(defaults.VM_MIN_FREE_MEMORY):
                raise VmConfigError(f"memmap={mm} leaves only {format_size(free)} of the guest's "
                                    f"{format_size(mem)} RAM: use --memory "
                                    f"{format_size(default_memory(mm))}")
        kept = self.persist.stat().st_size if self.persist and self.persist.exists() else 0
        if kept not in (0, mem):
            raise VmConfigError(
                f"--persist {self.persist} holds {format_size(kept)} of guest RAM, not "
                f"{format_size(mem)}: pass --memory {format_size(kept)} or another file")
        # share
        if self.share is False:
            set_field(self, "share", None)
        else:
            p = Path(self.share if self.share is not None else os.getcwd()).expanduser().resolve()
            if not p.is_dir():
                raise VmConfigError(f"share {p} is not a directory: pass an existing directory or "
                                    "share=False (--no-share)")
            if any(c in str(p) for c in ",\n"):
                raise VmConfigError(f"cannot share {p}: the path contains a comma or newline")
            set_field(self, "share", p)
        if self.cwd is not None:
            set_field(self, "cwd", str(self.cwd))
        self._check_kernel()
        set_field(self, "env", {str(k): str(v) for k, v in dict(self.env).items()})
        if not self.timeout or self.timeout <= 0:
            raise VmConfigError("timeout must be a positive number of seconds, got "
                                f"{self.timeout!r}")

    def _device(self, name, what, step, why):
        """Validate the size of the ``name`` device (``nvdimm`` or ``cxl``) and its backing
        file; returns the size in bytes."""
        value = getattr(self, name)
        size = _size(value, f"{what} size")
        if size < step or size % step:
            raise VmConfigError(f"{what} size {value!r} must be a multiple of {format_size(step)} "
                                f"({why}) and at least {format_size(step)}, e.g. 1G")
        object.__setattr__(self, name, size)      # a frozen dataclass, still being built
        object.__setattr__(self, f"{name}_file",
                           _backing_file(getattr(self, f"{name}_file"), size, what, f"--{name}"))
        return size

    def _check_ramdax(self):
        set_field = object.__setattr__
        if self.namespaces is not None and not self.ramdax:
            raise VmConfigError("several namespaces need --ramdax (a labelled NVDIMM)")
        if self.ramdax and self.memmap is None:
            raise VmConfigError("--ramdax carves the memmap= range: do not combine it with "
                                "--nvdimm or --cxl")
        if self.persist is not None and self.memmap is None:
            raise VmConfigError("--persist keeps the guest's RAM (and so its memmap= pmem) in a "
                                "file: --nvdimm and --cxl have backing files already")
        if self.ramdax:
            modes = self.namespaces if self.namespaces is not None else (self.mode,)
            if isinstance(modes, str):
                modes = tuple(m.strip() for m in modes.split(",") if m.strip())
            if not modes or any(m not in defaults.VM_MODES for m in modes):
                raise VmConfigError(f"--namespaces {','.join(modes)}: a comma list of modes "
                                    f"({', '.join(defaults.VM_MODES)}), e.g. fsdax,sector")
            set_field(self, "namespaces", tuple(modes))
            set_field(self, "mode", modes[0])
        if self.persist is not None:
            p = Path(self.persist).expanduser().absolute()
            if (p.exists() and not p.is_file()) or "," in str(p):
                raise VmConfigError(f"--persist {p}: must be a regular file path without commas")
            if not os.access(p.parent, os.W_OK):
                raise VmConfigError(f"cannot create {p}: directory missing or not writable")
            set_field(self, "persist", p)

    def _check_kernel(self):
        set_field = object.__setattr__
        spec = self.kernel if self.kernel is not None else defaults.VM_KERNEL
        if str(spec) in defaults.VM_KERNELS:
            if self.modules is not None:
                raise VmConfigError(f"--modules goes with --kernel PATH, not with --kernel {spec}")
            set_field(self, "kernel", str(spec))
            return
        p = Path(spec).expanduser().absolute()
        if not p.is_file():
            raise VmConfigError(f"kernel {spec!r} is neither one of "
                                f"{', '.join(defaults.VM_KERNELS)} nor an existing kernel image "
                                "(bzImage or vmlinux)")
        set_field(self, "kernel", p)
        if self.modules is not None:
            m = Path(self.modules).expanduser().absolute()
            if not m.is_dir():
                raise VmConfigError(f"modules directory {m} does not exist")
            set_field(self, "modules", m)

    @property
    def kernel_features(self):
        """What the guest kernel must support: keys of
        :data:`pmemkit.defaults.VM_KERNEL_OPTIONS`."""
        features = ["guest", "pmem", self.backend] + (["ramdax"] if self.ramdax else [])
        if "sector" in (self.namespaces or (self.mode,)):
            features.append("sector")
        if "xfs" in self.fs:
            features.append("xfs")
        return features

    # --- derived values ------------------------------------------------------
    @property
    def backend(self):
        """How pmem is emulated: ``memmap``, ``nvdimm`` or ``cxl``."""
        if self.cxl is not None:
            return "cxl"
        return "nvdimm" if self.nvdimm is not None else "memmap"

    @property
    def pmem_size(self):
        if self.cxl is not None:
            return self.cxl
        return self.nvdimm if self.nvdimm is not None else self.memmap.size

    @property
    def guest_share(self):
        """Where the share is mounted in the guest: its host path, unless that is a system path."""
        if self.share is None:
            return None
        text = str(self.share)
        if text == "/" or any(text == r or text.startswith(r + "/") for r in _RESERVED):
            return SHARE_FALLBACK
        return text

    def guest_cwd(self):
        """The command's working directory in the guest."""
        if self.cwd is not None:
            return self.cwd
        if self.share is None:
            return "/root"
        here = Path(os.getcwd()).resolve()
        try:
            rel = here.relative_to(self.share)
        except ValueError:
            return self.guest_share
        return str(Path(self.guest_share) / rel)

    @property
    def dax_dirs(self):
        """The DAX mount points the guest will have (fsdax mode only)."""
        if self.mode != "fsdax":
            return []
        return [defaults.MOUNT_POINTS[f] for f in self.fs]

    def replace(self, **changes):
        """A copy with ``changes`` (validated again)."""
        return replace(self, **changes)
