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
from ..errors import GuestLayerError, VmError
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
#: Loaded instead of nd_e820 with ``pmemkit.ramdax=1`` (Linux 7.x): memmap= as a labelled NVDIMM.
GUEST_RAMDAX_MODULES = ("ramdax",)

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
ramdax=0
grep -q "pmemkit.ramdax=1" /proc/cmdline && ramdax=1
load() {
    while read -r ko; do
        [ $ramdax = 1 ] && [ "$ko" = nd_e820.ko ] && continue  # ramdax drives the range instead
        insmod "/modules/$ko" 2>/dev/null || echo "pmemkit-stage1: insmod $ko failed"
    done < "$1"
}
load /modules/order
for extra in cxl ramdax; do
    grep -q "pmemkit.$extra=1" /proc/cmdline && load "/modules/$extra-order"
done
if [ $ramdax = 1 ] && [ ! -e /sys/bus/platform/devices/e820_pmem/driver ]; then
    echo ramdax >/sys/bus/platform/devices/e820_pmem/driver_override
    echo e820_pmem >/sys/bus/platform/drivers/ramdax/bind
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
    """A cached root filesystem image (raw ext4) and the tree's package list. ``native_dir`` is
    the guest directory holding pmemkit's native extension rebuilt for the guest's Python (None
    when the layer has none)."""

    image: Path
    key: str
    native_dir: str | None = None


@dataclass(frozen=True)
class Layer:
    """What a project adds on top of the base guest (see :mod:`pmemkit.vm.project`).

    * ``packages``: Debian packages beyond :data:`pmemkit.defaults.VM_PACKAGES`;
    * ``pip``: pip arguments installed into the guest's Python (from the host side, with the
      guest's own pip in a chroot of the image tree: only the package registries need to be
      reachable, never the guest);
    * ``project``/``guest_project``: the project directory, copied into the image at its guest
      path for local requirements (``-e .``), keyed by ``project_digest`` (its build files);
    * ``native_source``: pmemkit's ``_flush.c``, compiled for the guest's Python when the host's
      extension does not fit it; ``pmemkit_version``: pmemkit is declared installed, so that a
      project depending on it does not fetch another one;
    * ``check_python``: called with the guest's Python version (``"3.11"``) before pip runs.
    """

    packages: tuple = ()
    pip: tuple = ()
    project: Path | None = None
    guest_project: str | None = None
    project_digest: str | None = None
    native_source: Path | None = None
    pmemkit_version: str = "0"
    check_python: object = None

    def inputs(self):
        """The parts of the layer that decide its content (its cache key)."""
        extra = {}
        if self.pip:
            extra["pip"] = list(self.pip)
            extra["pmemkit"] = self.pmemkit_version
        if self.project is not None:
            extra["project"] = [self.guest_project, self.project_digest]
        if self.native_source is not None:
            extra["native"] = cache.key(Path(self.native_source).read_bytes().hex())
        return extra

    def all_packages(self):
        extra = list(self.packages)
        for name in self.packages:
            extra += defaults.VM_COMPILER_COMPANIONS.get(name.split("=")[0], ())
        if self.pip:
            extra += defaults.VM_PIP_PACKAGES
        if self.native_source is not None:
            extra += defaults.VM_NATIVE_BUILD_PACKAGES
        return tuple(dict.fromkeys(extra))


#: What is not copied of a project installed from its directory (``-e .``) into a layer.
_NOT_COPIED = (".git", ".venv", "venv", ".tox", ".nox", "__pycache__", "build", "dist",
               "*.egg-info")
#: Where a layer keeps pmemkit's native extension built for the guest's Python.
GUEST_NATIVE_DIR = "/usr/local/lib/pmemkit-native"
_COULD_NOT_FIND = "Couldn't find these debs:"
#: Compiles pmemkit's extension with the guest's Python headers (argv: source, output dir).
_BUILD_NATIVE = (
    "import subprocess, sys, sysconfig; src, out = sys.argv[1:]; "
    "subprocess.run(['gcc', '-O2', '-shared', '-fPIC', '-I' + sysconfig.get_paths()['include'], "
    "src, '-o', out + '/_flush' + sysconfig.get_config_var('EXT_SUFFIX')], check=True)"
)


def rootfs_inputs(suite=None, mirror=None, packages=None):
    return {"recipe": ROOTFS_RECIPE, "suite": suite or defaults.VM_SUITE,
            "mirror": mirror or defaults.VM_MIRROR,
            "packages": sorted(packages if packages is not None else defaults.VM_PACKAGES)}


def tree_python(tree):
    """The Python version (``"3.11"``) of a root tree: its ``usr/bin/python3.N``."""
    found = sorted(p.name[6:] for p in (Path(tree) / "usr/bin").glob("python3.*")
                   if p.name[6:].replace(".", "").isdigit())
    return found[-1] if found else None


def image_python(image):
    """The Python version (``"3.11"``) of a root image, read with ``debugfs`` (no mount)."""
    out = subprocess.run([cache.need_tool("debugfs"), "-R", "ls -p /usr/bin", str(image)],
                         capture_output=True, text=True, check=False).stdout
    names = [line.split("/")[5] for line in out.splitlines() if line.count("/") >= 6]
    found = sorted(n[6:] for n in names if n.startswith("python3.") and n[7:].isdigit())
    return found[-1] if found else None


#: Host pip settings that mean the same inside the image tree (paths on the host would not).
_PIP_ENV = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT",
            "PIP_RETRIES")
#: Where the host's CA bundle is copied in the tree while pip runs.
_TREE_CA = "etc/pmemkit-host-ca.pem"


def _host_ca_bundle():
    """The CA bundle the host's pip trusts (a TLS-inspecting proxy's CA is often only there)."""
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(name) and Path(os.environ[name]).is_file():
            return Path(os.environ[name])
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return default if default.is_file() else None


def _chroot_env():
    """Environment for commands in the image tree: the host's proxy and pip index settings only."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    env.update({k: v for k, v in os.environ.items()
                if k in _PIP_ENV or k.lower().endswith("_proxy")})
    return env


def _debootstrap(debootstrap, inputs, tree, progress):
    for attempt in range(1, 4):  # a mirror hiccup should not cost the user the build
        cache.remove_tree(tree)
        try:
            include = "--include=" + ",".join(inputs["packages"])
            cache.run([debootstrap, "--variant=minbase", include, inputs["suite"], tree,
                       inputs["mirror"]],
                      "debootstrap", progress=progress,
                      env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            return
        except VmError as exc:
            text = str(exc)
            if _COULD_NOT_FIND in text:
                missing = text.split(_COULD_NOT_FIND, 1)[1].splitlines()[0].split()
                raise GuestLayerError(
                    f"Debian {inputs['suite']} has no package {', '.join(missing)}: fix the name "
                    "in [tool.pmemkit.vm] packages or --packages (search at "
                    f"https://packages.debian.org/{inputs['suite']}/)", packages=missing) from None
            if attempt == 3:
                raise
            if progress:
                progress(f"debootstrap failed (attempt {attempt}/3), retrying in {10 * attempt} s")
            time.sleep(10 * attempt)


def _apply_layer(layer, tree, progress):
    """Install ``layer``'s pip requirements and native extension into the ``tree``."""
    chroot = cache.need_tool("chroot")
    python = tree_python(tree)
    if layer.check_python and python:
        layer.check_python(python)
    env = _chroot_env()
    if layer.native_source is not None:
        out = tree / GUEST_NATIVE_DIR.lstrip("/")
        out.mkdir(parents=True)
        shutil.copy2(layer.native_source, out / "_flush.c")
        if progress:
            progress(f"building pmemkit's native extension for the guest's Python {python}")
        try:
            cache.run([chroot, tree, "python3", "-c", _BUILD_NATIVE, f"{GUEST_NATIVE_DIR}/_flush.c",
                       GUEST_NATIVE_DIR], "native extension", env=env, progress=progress)
        except VmError as exc:
            raise GuestLayerError(f"pmemkit's native extension does not build for the guest's "
                                  f"Python {python}: {exc}") from None
    if not layer.pip:
        return
    site = tree / f"usr/local/lib/python{python}/dist-packages"
    meta = site / f"pmemkit-{layer.pmemkit_version}.dist-info"
    meta.mkdir(parents=True, exist_ok=True)
    write_pmemkit_metadata(meta, layer.pmemkit_version)
    cwd = "/"
    if layer.project is not None:
        dest = tree / layer.guest_project.lstrip("/")
        shutil.copytree(layer.project, dest, symlinks=True, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(*_NOT_COPIED))
        cwd = layer.guest_project
    resolv = Path("/etc/resolv.conf")
    if resolv.exists():
        (tree / "etc/resolv.conf").unlink(missing_ok=True)
        shutil.copyfile(resolv, tree / "etc/resolv.conf")
    ca = _host_ca_bundle()
    if ca is not None:
        shutil.copyfile(ca, tree / _TREE_CA)
        env["PIP_CERT"] = "/" + _TREE_CA
    if progress:
        progress(f"pip install {' '.join(layer.pip)} (guest Python {python}, from the host side)")
    argv = [chroot, tree, "env", f"--chdir={cwd}", "python3", "-m", "pip", "install",
            "--break-system-packages", "--root-user-action=ignore", "--no-cache-dir",
            "--no-input", "--progress-bar", "off", *layer.pip]
    try:
        cache.run(argv, "pip", env=env, progress=progress)
    except VmError as exc:
        raise GuestLayerError(
            f"pip could not install {' '.join(layer.pip)} into the guest's Python {python}; "
            f"fix [tool.pmemkit.vm] pip or --pip. pip said:\n{str(exc).split(chr(10), 1)[-1]}",
            requirement=" ".join(layer.pip)) from None
    finally:
        (tree / _TREE_CA).unlink(missing_ok=True)


def write_pmemkit_metadata(directory, version):
    """A ``pmemkit-VERSION.dist-info`` in ``directory``: pip sees pmemkit installed, pytest finds
    its plugin through the entry point (and loads it once)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: pmemkit\nVersion: {version}\n")
    (directory / "entry_points.txt").write_text("[pytest11]\npmemkit = pmemkit.pytest_plugin\n")
    (directory / "INSTALLER").write_text("pmemkit-vm\n")
    (directory / "RECORD").write_text("")


def build_rootfs(suite=None, mirror=None, packages=None, cache_root=None, progress=None,
                 extra_packages=(), layer=None):
    """Return the cached :class:`Rootfs`, building it first if needed (root only; ~90 s).
    ``layer`` (a :class:`Layer`) adds a project's packages, pip requirements and native build."""
    layer = layer or Layer(packages=tuple(extra_packages))
    inputs = rootfs_inputs(suite, mirror, tuple(packages if packages is not None
                                                else defaults.VM_PACKAGES) + layer.all_packages())
    inputs.update(layer.inputs())
    k = cache.key(inputs)
    base = cache.cache_dir(cache_root) / "rootfs"
    final = base / k
    image = final / "root.ext4"
    native_dir = GUEST_NATIVE_DIR if layer.native_source is not None else None
    if image.exists():
        return Rootfs(image, k, native_dir)
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
            what = ("guest root filesystem" if not layer.inputs() and not layer.packages
                    else "guest layer for this project")
            progress(f"building {what} ({inputs['suite']}, {len(inputs['packages'])} packages"
                     f"{', pip: ' + ' '.join(layer.pip) if layer.pip else ''}; "
                     "about 2 minutes, once)")
        _debootstrap(debootstrap, inputs, tree, progress)
        _apply_layer(layer, tree, progress)
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
        cache.remove_tree(tmp)
        raise
    return Rootfs(image, k, native_dir)


_SIG_MAGIC = b"~Module signature appended~\n"


def strip_module_signature(ko):
    """``ko`` without its appended signature: the kernel then skips verifying it (Debian does
    not enforce signatures), which saves seconds per boot under TCG (RSA + SHA over each module)."""
    if not ko.endswith(_SIG_MAGIC):
        return ko
    # struct module_signature: 12 bytes, sig_len last (BE)
    trailer = len(_SIG_MAGIC) + 12
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
    ramdax_chain = [ko for ko in kernel.module_chain(GUEST_RAMDAX_MODULES) if ko not in chain]
    inputs = {"recipe": INITRAMFS_RECIPE, "kernel": kernel.release, "root": str(kernel.root),
              "stage1": _STAGE1,
              "modules": [str(p.relative_to(kernel.root)) for p in chain],
              "cxl_modules": [str(p.relative_to(kernel.root)) for p in cxl_chain],
              "ramdax_modules": [str(p.relative_to(kernel.root)) for p in ramdax_chain],
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
        for listing, modules in (("order", chain), ("cxl-order", cxl_chain),
                                 ("ramdax-order", ramdax_chain)):
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
