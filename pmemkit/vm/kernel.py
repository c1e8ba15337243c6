"""The guest kernel: a Debian generic amd64 kernel package, unpacked (not installed) and cached,
or a kernel the user built.

``apt-get download`` + ``dpkg -x`` + ``depmod``: nothing is installed on the host. The default
(``debian``) is Debian 12's 6.1 from the host's own apt sources; ``debian-6.12`` and
``debian-7.3`` come from bookworm-backports and trixie-backports through an apt configuration of
pmemkit's own under the cache (its own sources list and package lists; the host's ``/etc/apt`` is
never touched). The generic flavour is required: the cloud kernel has no 9p (the host share).
A kernel given by path (``--kernel PATH --modules DIR``) is copied into the cache the same way.
Images compressed with gzip, xz or zstd and modules as ``.ko``, ``.ko.xz``, ``.ko.zst`` or
``.ko.gz`` are handled; the kernel's config, when it has one, is checked for the options the
guest needs before anything boots (:func:`check_options`).
"""

from __future__ import annotations

import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from .. import defaults
from ..errors import MissingToolError, VmConfigError, VmError
from . import cache


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel: ``vmlinuz`` to boot and ``root`` holding ``lib/modules/<release>``
    (and ``boot/config-<release>`` when the kernel's config is known)."""

    release: str  # e.g. "6.1.0-56-amd64"
    root: Path

    @property
    def vmlinuz(self):
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules_dir(self):
        return self.root / "lib" / "modules" / self.release

    @property
    def config_file(self):
        return self.root / "boot" / f"config-{self.release}"

    @property
    def vmlinux(self):
        """The uncompressed kernel (ELF), made once from ``vmlinuz`` (see :meth:`boot_image`)."""
        return self.root / "boot" / f"vmlinux-{self.release}"

    def boot_image(self):
        """What ``qemu -kernel`` gets: the uncompressed ELF ``vmlinux`` when its payload can be
        extracted (QEMU boots it through the PVH entry point, skipping the in-guest
        decompression of the bzImage, which takes 10-20 s under TCG), else ``vmlinuz``."""
        if not self.vmlinux.exists():
            data = extract_vmlinux(self.vmlinuz.read_bytes())
            if data is None:
                return self.vmlinuz
            tmp = self.vmlinux.with_name(self.vmlinux.name + f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, self.vmlinux)
        return self.vmlinux

    def config(self):
        """The kernel's options as ``{"LIBNVDIMM": "m", ...}``; None when its config is unknown."""
        if not self.config_file.exists():
            return None
        return parse_config(self.config_file.read_text(errors="replace"))

    def module_chain(self, names):
        """Module files to load, dependencies first, for ``names``, without duplicates.

        Built-in modules are skipped, and so are modules this kernel does not have (7.x has no
        ``crc32c_generic``; a kernel built with everything ``=y`` has none): the options the
        guest needs are checked from the config (:func:`check_options`). Resolved by the host's
        ``modprobe --show-depends`` with ``-C /dev/null`` (the host ndctl package adds an
        ``install libnvdimm`` rule otherwise).
        """
        modprobe = cache.need_tool("modprobe")
        chain = []
        for name in names:
            proc = subprocess.run(
                [
                    modprobe,
                    "-C",
                    "/dev/null",
                    "-d",
                    str(self.root),
                    "-S",
                    self.release,
                    "--show-depends",
                    name,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                continue
            for line in proc.stdout.splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "insmod":
                    ko = Path(parts[1])
                    if ko not in chain:
                        chain.append(ko)
        return chain


def parse_config(text):
    """``CONFIG_X=y|m|value`` lines of a kernel ``.config`` as ``{"X": value}``."""
    found = {}
    for line in text.splitlines():
        m = re.match(r"CONFIG_([A-Za-z0-9_]+)=(.*)$", line.strip())
        if m:
            found[m.group(1)] = m.group(2)
    return found


def check_options(kernel, features):
    """Raise :class:`VmConfigError` naming the first option ``kernel`` lacks for ``features``
    (keys of :data:`pmemkit.defaults.VM_KERNEL_OPTIONS`). Returns False when the kernel's config
    is unknown (nothing could be checked), True when every option is there."""
    return _check_config(kernel.config(), kernel.release, features)


def _check_config(config, release, features):
    if config is None:
        return False
    for feature in features:
        for option in defaults.VM_KERNEL_OPTIONS[feature]:
            if config.get(option) not in ("y", "m"):
                raise VmConfigError(
                    f"kernel {release} was built without CONFIG_{option} (needed for "
                    f"{feature}): rebuild it with CONFIG_{option}=y or =m, or pick another "
                    f"--kernel ({', '.join(defaults.VM_KERNELS)})"
                )
    return True


# --- compressed kernels and modules ---------------------------------------------------

#: XEN_ELFNOTE_PHYS32_ENTRY: the PVH entry point QEMU needs to boot an ELF kernel directly.
_PVH_NOTE = 18
_XZ, _GZIP, _ZSTD = b"\xfd7zXZ\x00", b"\x1f\x8b\x08", b"\x28\xb5\x2f\xfd"


def _zstd_decompress(data):
    """zstd-compressed ``data`` through the zstd tool; a trailing non-zstd tail (the bzImage's
    4-byte size) is ignored. None when it is not zstd."""
    proc = subprocess.run(
        [cache.need_tool("zstd"), "-dcq"], input=data, capture_output=True, check=False
    )
    return proc.stdout or None


def decompress(data, kind):
    """``data`` decompressed with ``kind`` in ``xz``/``gzip``/``zstd``; None if it is not."""
    try:
        if kind == "xz":
            return lzma.LZMADecompressor().decompress(data)
        if kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
        if kind == "zstd":
            return _zstd_decompress(data)
    except (lzma.LZMAError, zlib.error, OSError, EOFError):
        return None
    raise ValueError(kind)


def _payload(bzimage):
    """The compressed payload of a bzImage (exact, from its setup header), else the whole file."""
    if len(bzimage) > 0x250 and bzimage[0x202:0x206] == b"HdrS":
        setup_sects = bzimage[0x1F1] or 4
        offset, length = struct.unpack_from("<II", bzimage, 0x248)
        start = (setup_sects + 1) * 512 + offset
        if length and start + length <= len(bzimage):
            return bzimage[start : start + length]
    return bzimage


def _has_pvh_note(elf):
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        off, end = p_offset, p_offset + p_filesz
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, off)
            name = elf[off + 12 : off + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == _PVH_NOTE:
                return True
            off += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def extract_vmlinux(bzimage):
    """The ELF kernel inside a bzImage (xz, gzip or zstd payload) if it has a PVH entry note,
    else None. An uncompressed ELF ``vmlinux`` is returned as it is (if it has the note)."""
    if bzimage[:5] == b"\x7fELF\x02":
        return bzimage if _has_pvh_note(bzimage) else None
    payload = _payload(bzimage)
    for magic, kind in ((_XZ, "xz"), (_GZIP, "gzip"), (_ZSTD, "zstd")):
        at = payload.find(magic)
        if at < 0:
            continue
        elf = decompress(payload[at:], kind)
        if not elf or elf[:4] != b"\x7fELF" or elf[4] != 2:
            continue
        try:
            if _has_pvh_note(elf):
                return elf
        except struct.error:
            continue
    return None


def _kernel_release(image):
    """The release string (``uname -r``) of a kernel image: from a bzImage's setup header, or
    the ``Linux version`` banner of an ELF or decompressed image."""
    if len(image) > 0x210 and image[0x202:0x206] == b"HdrS":
        (ptr,) = struct.unpack_from("<H", image, 0x20E)
        text = image[ptr + 0x200 : ptr + 0x200 + 256].split(b"\0")[0].decode(errors="replace")
        if text.split():
            return text.split()[0]
    m = re.search(rb"Linux version (\S+) \(", image)
    return m.group(1).decode() if m else None


_IKCONFIG = b"IKCFG_ST"


def embedded_config(image):
    """The config built into a kernel (CONFIG_IKCONFIG), from a bzImage or vmlinux; else None."""
    elf = image if image[:4] == b"\x7fELF" else extract_vmlinux(image)
    if elf is None:
        payload = _payload(image)
        for magic, kind in ((_XZ, "xz"), (_GZIP, "gzip"), (_ZSTD, "zstd")):
            at = payload.find(magic)
            if at >= 0:
                elf = decompress(payload[at:], kind)
                if elf:
                    break
    if not elf:
        return None
    at = elf.find(_IKCONFIG)
    if at < 0:
        return None
    text = decompress(elf[at + len(_IKCONFIG) :], "gzip")
    return text.decode(errors="replace") if text else None


def module_bytes(path):
    """A module file's ELF content, decompressing ``.ko.xz``/``.ko.zst``/``.ko.gz``."""
    path = Path(path)
    data = path.read_bytes()
    kind = {".xz": "xz", ".zst": "zstd", ".gz": "gzip"}.get(path.suffix)
    if kind is None:
        return data
    out = decompress(data, kind)
    if not out:
        raise VmError(f"cannot decompress kernel module {path}")
    return out


def module_name(path):
    """``ext4.ko`` for ``.../ext4.ko.xz``."""
    name = Path(path).name
    for suffix in (".xz", ".zst", ".gz"):
        name = name.removesuffix(suffix)
    return name


# --- Debian kernels -------------------------------------------------------------------


def _apt_cache(*args):
    """apt-cache's standard output for ``args`` (empty when it finds nothing: callers say what is
    missing)."""
    proc = subprocess.run([cache.need_tool("apt-cache"), *args], capture_output=True, text=True,
                          check=False)
    return proc.stdout


def resolve_package(package=None):
    """The versioned kernel package name: ``package`` if given, else what Debian's
    ``linux-image-amd64`` metapackage currently depends on (``linux-image-6.1.0-N-amd64``)."""
    if package:
        return package
    m = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b",
                  _apt_cache("depends", defaults.VM_KERNEL_METAPACKAGE))
    if not m:
        raise MissingToolError(
            f"cannot find Debian's kernel package {defaults.VM_KERNEL_METAPACKAGE} in the apt "
            "lists: run `sudo apt-get update` (and check /etc/apt/sources.list names a Debian "
            "bookworm mirror)"
        )
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
    memo.write_text(
        json.dumps(
            {"stamp": stamp, "metapackage": defaults.VM_KERNEL_METAPACKAGE, "package": package}
        )
    )
    return package


class _Apt:
    """apt-get/apt-cache over pmemkit's own sources list and package lists for one suite."""

    KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

    def __init__(self, root_dir, suite):
        self.dir = root_dir / f"apt-{suite}"
        self.suite = suite

    def options(self):
        d = self.dir
        return [
            "-o",
            f"Dir::Etc::SourceList={d / 'sources.list'}",
            "-o",
            "Dir::Etc::SourceParts=/dev/null",
            "-o",
            f"Dir::State::Lists={d / 'lists'}",
            "-o",
            f"Dir::Cache={d / 'cache'}",
            "-o",
            "Dir::State::status=/dev/null",
            "-o",
            "Acquire::Languages=none",
            "-o",
            "APT::Architecture=amd64",
            "-o",
            "APT::Architectures::=amd64",
            "-o",
            "APT::Sandbox::User=root",
        ]

    def update(self, progress=None):
        """Read the suite's package list (again when older than a day)."""
        stamp = self.dir / "updated"
        try:
            if time.time() - stamp.stat().st_mtime < defaults.VM_KERNEL_LISTS_MAX_AGE:
                return
        except OSError:
            pass
        if not Path(self.KEYRING).exists():
            raise MissingToolError(
                f"{self.KEYRING} is missing: install it with "
                "`sudo apt-get install debian-archive-keyring`"
            )
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "sources.list").write_text(
            f"deb [signed-by={self.KEYRING}] {defaults.VM_MIRROR} {self.suite} main\n"
        )
        if progress:
            progress(f"reading the {self.suite} package list")
        cache.run(
            [cache.need_tool("apt-get"), *self.options(), "update"],
            f"apt-get update ({self.suite})",
            retries=3,
            progress=progress,
        )
        stamp.touch()

    def packages(self, prefix):
        return _apt_cache(*self.options(), "pkgnames", prefix).split()

    def depends(self, package):
        return re.findall(r"Depends:\s*(\S+)", _apt_cache(*self.options(), "depends", package))


def _version_key(package):
    return [int(x) for x in re.findall(r"\d+", package)]


def _backports_packages(root_dir, suite, series, progress):
    """The packages making up the newest generic ``series`` kernel of ``suite``: the image
    package and, on 7.x, the ``linux-binary-*``/``linux-modules-*``/``linux-base-*`` packages it
    depends on (image, modules, config)."""
    apt = _Apt(root_dir, suite)
    apt.update(progress)
    pattern = re.compile(rf"linux-image-{re.escape(series)}\.[0-9][^\s]*-amd64$")
    found = [
        p
        for p in apt.packages(f"linux-image-{series}.")
        if pattern.match(p) and not re.search(r"-(cloud|rt)-amd64$", p)
    ]
    if not found:
        raise VmError(
            f"no generic linux-image-{series}.* package in {suite}: the archive moved on; "
            f"pass --kernel PATH, or a newer pmemkit"
        )
    image = max(found, key=_version_key)
    extra = [
        d for d in apt.depends(image) if re.match(r"linux-(binary|modules|base)-\S+-amd64$", d)
    ]
    return apt, [image, *extra]


def _download(packages, root_dir, progress, apt=None):
    """``apt-get download`` + ``dpkg -x`` of ``packages`` into a fresh temporary tree."""
    for tool in ("apt-get", "dpkg", "depmod"):
        cache.need_tool(tool)
    tmp = Path(tempfile.mkdtemp(dir=root_dir, prefix=".tmp-"))
    try:
        with tempfile.TemporaryDirectory(dir=root_dir, prefix=".dl-") as dl:
            opts = apt.options() if apt else []
            for package in packages:
                if progress:
                    progress(f"downloading kernel {package}")
                cache.run(
                    ["apt-get", *opts, "download", package],
                    f"apt-get download {package}",
                    retries=3,
                    cwd=dl,
                    progress=progress,
                )
            debs = sorted(Path(dl).glob("*.deb"))
            if len(debs) < len(packages):
                raise VmError(
                    f"apt-get download {' '.join(packages)} produced {len(debs)} .deb files"
                )
            for deb in debs:
                cache.run(["dpkg", "-x", deb, tmp], f"dpkg -x {deb.name}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _finish(tmp, release, final):
    merged = tmp / "usr" / "lib" / "modules"  # Debian 13 packages install into /usr/lib
    if merged.is_dir() and not (tmp / "lib" / "modules").exists():
        (tmp / "lib").mkdir(exist_ok=True)
        os.rename(merged, tmp / "lib" / "modules")
    moddir = tmp / "lib" / "modules" / release
    (tmp / "boot").mkdir(exist_ok=True)
    for name, dest in (("vmlinuz", "vmlinuz"), ("config", "config")):  # the 7.x layout
        if (moddir / name).is_file() and not (tmp / "boot" / f"{dest}-{release}").exists():
            os.rename(moddir / name, tmp / "boot" / f"{dest}-{release}")
    cache.run(["depmod", "-b", tmp, release], "depmod")
    (tmp / ".complete").write_text(release + "\n")
    cache.publish(tmp, final)


def get_kernel(package=None, cache_root=None, progress=None, name=None):
    """Return the cached :class:`Kernel`, downloading and unpacking it first if needed.

    ``name`` is one of :data:`pmemkit.defaults.VM_KERNELS` (default ``debian``: Debian 12's
    current generic 6.1 kernel, or ``package`` when given)."""
    root_dir = cache.cache_dir(cache_root) / "kernel"
    root_dir.mkdir(parents=True, exist_ok=True)
    name = name or defaults.VM_KERNEL
    if name not in defaults.VM_KERNELS:
        raise VmConfigError(
            f"unknown kernel {name!r}: use one of {', '.join(defaults.VM_KERNELS)}, "
            "or the path of a kernel image"
        )
    suite, series = defaults.VM_KERNELS[name]
    apt = None
    if suite is None:
        package = package or _resolve_memo(root_dir)
        packages = [package]
    else:
        apt, packages = _backports_packages(root_dir, suite, series, progress)
        package = packages[0]
    if "cloud" in package:
        raise VmError(
            f"{package}: the cloud kernel has no 9p (host share); use the generic "
            "linux-image-6.1.0-N-amd64"
        )
    final = root_dir / package
    if not (final / ".complete").exists():
        tmp = _download(packages, root_dir, progress, apt)
        try:
            _finish(tmp, package.removeprefix("linux-image-"), final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    release = (final / ".complete").read_text().strip()
    kernel = Kernel(release, final)
    if not kernel.vmlinuz.exists():
        raise VmError(f"{kernel.vmlinuz} is missing: remove {final} and retry")
    return kernel


# --- a kernel the user built ------------------------------------------------------------


def _find_config(image_path, release, modules):
    """The config of a user's kernel: ``config-<release>``/``config`` beside the image, the
    build tree's ``.config`` (a few directories up from ``arch/x86/boot/bzImage``), the modules'
    ``build/.config``, else the one built into the image (CONFIG_IKCONFIG)."""
    here = Path(image_path).parent
    candidates = [here / f"config-{release}", here / "config"]
    candidates += [d / ".config" for d in [here, *list(here.parents)[:4]]]
    if modules is not None:
        candidates.append(modules / "build" / ".config")
    for c in candidates:
        if c.is_file():
            return c.read_text(errors="replace")
    return None


def _modules_release_dir(modules, release):
    """``DIR`` may be ``lib/modules/<release>`` itself or a root holding it."""
    modules = Path(modules).expanduser().resolve()
    for cand in (modules / "lib" / "modules" / release, modules / release, modules):
        if (cand / "modules.order").exists() or (cand / "kernel").is_dir():
            return cand
    raise VmConfigError(
        f"--modules {modules}: no modules of kernel {release} there (expected "
        f"modules.order or kernel/ in it, or in lib/modules/{release}): pass the "
        "directory `make modules_install INSTALL_MOD_PATH=DIR` filled"
    )


def user_kernel(image_path, modules=None, cache_root=None, progress=None, features=()):
    """A :class:`Kernel` for a bzImage/vmlinux the user built (``modules``: its modules, as
    installed by ``make modules_install``). Its config (when found) is checked for ``features``
    first (:func:`check_options`); then it is copied into the cache, keyed by path and mtime."""
    image_path = Path(image_path).expanduser().resolve()
    if not image_path.is_file():
        raise VmConfigError(
            f"--kernel {image_path}: no such file (pass a bzImage or vmlinux, or one "
            f"of {', '.join(defaults.VM_KERNELS)})"
        )
    data = image_path.read_bytes()
    if data[:4] != b"\x7fELF" and data[0x202:0x206] != b"HdrS":
        raise VmConfigError(f"--kernel {image_path} is neither a bzImage nor an ELF vmlinux")
    release = _kernel_release(data)
    if release is None:
        elf = extract_vmlinux(data)
        release = _kernel_release(elf) if elf else None
    if release is None:
        raise VmConfigError(f"--kernel {image_path}: cannot read its version string")
    mod_dir = _modules_release_dir(modules, release) if modules is not None else None
    config = _find_config(image_path, release, mod_dir) or embedded_config(data)
    _check_config(parse_config(config) if config else None, release, features)
    st = image_path.stat()
    ident = [str(image_path), st.st_size, st.st_mtime_ns]
    if mod_dir is not None:
        ident += [str(mod_dir), mod_dir.stat().st_mtime_ns]
    root_dir = cache.cache_dir(cache_root) / "kernel"
    root_dir.mkdir(parents=True, exist_ok=True)
    final = root_dir / f"user-{cache.key(ident)}"
    if not (final / ".complete").exists():
        if progress:
            progress(f"copying kernel {release} from {image_path}")
        tmp = Path(tempfile.mkdtemp(dir=root_dir, prefix=".tmp-"))
        try:
            (tmp / "boot").mkdir()
            shutil.copyfile(image_path, tmp / "boot" / f"vmlinuz-{release}")
            if config:
                (tmp / "boot" / f"config-{release}").write_text(config)
            dest = tmp / "lib" / "modules" / release
            if mod_dir is not None:
                shutil.copytree(
                    mod_dir, dest, symlinks=False, ignore=shutil.ignore_patterns("build", "source")
                )
            else:
                dest.mkdir(parents=True)
            _finish(tmp, release, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return Kernel((final / ".complete").read_text().strip(), final)


def resolve(spec=None, modules=None, cache_root=None, progress=None, package=None, features=()):
    """The kernel ``spec`` names: one of :data:`pmemkit.defaults.VM_KERNELS` or a path, checked
    for ``features`` (:func:`check_options`; a kernel without a config is not checked)."""
    spec = spec or defaults.VM_KERNEL
    if spec in defaults.VM_KERNELS:
        if modules is not None:
            raise VmConfigError(f"--modules goes with --kernel PATH, not with --kernel {spec}")
        kernel = get_kernel(package, cache_root, progress, name=spec)
        check_options(kernel, features)
        return kernel
    if "/" not in str(spec) and not Path(spec).exists():
        raise VmConfigError(
            f"unknown kernel {spec!r}: use one of {', '.join(defaults.VM_KERNELS)}, "
            "or the path of a kernel image (bzImage or vmlinux)"
        )
    return user_kernel(spec, modules, cache_root, progress, features)
