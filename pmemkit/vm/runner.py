"""Run a command in a guest with emulated pmem: the Python API behind ``pmemkit vm``.

:func:`run` validates the config, gets the cached kernel, root image and initramfs, writes the
job (argv, env, settings) into a temporary job directory shared with the guest over 9p, boots
QEMU, streams the command's stdout/stderr back while it runs (the guest writes them into the
job directory), and returns a :class:`VmResult` with the command's exit status. QEMU is always
gone when it returns or raises.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import defaults
from ..errors import GuestError, GuestLayerError, VmConfigError
from ..units import format_size, parse_size
from . import cache, guest, kernel as kernel_mod, qemu
from .config import VmConfig
from .project import Project, check_python


@dataclass
class VmResult:
    """What came back from the guest."""

    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""
    console: str = ""           # the kernel console (boot log)
    setup_log: str = ""         # the guest init's log (ndctl, mkfs, mount)
    dax_dirs: list = field(default_factory=list)
    accel: str = "tcg"
    duration: float = 0.0
    nvdimm_file: Path | None = None
    argv: list = field(default_factory=list)
    power_cut: bool = False     # QEMU was killed on purpose (``cut_when``): no exit status

    @property
    def output(self):
        """stdout as text."""
        return self.stdout.decode(errors="replace")

    @property
    def error_output(self):
        return self.stderr.decode(errors="replace")


@dataclass
class GuestImage:
    """The cached pieces a guest boots from (see :func:`prepare`)."""

    kernel: kernel_mod.Kernel
    initramfs: Path
    rootfs: guest.Rootfs


def _pmemkit_package():
    """The directory of the pmemkit running this code (checkout, editable or normal install)."""
    return Path(__file__).resolve().parent.parent


def guest_python(config=None):
    """The guest's Python version (``"3.11"``): read from the cached base image when there is one,
    else the known Python of :data:`pmemkit.defaults.VM_SUITE` (a boot test pins the two equal)."""
    config = config or VmConfig()
    inputs = guest.rootfs_inputs()
    image = cache.cache_dir(config.cache_dir) / "rootfs" / cache.key(inputs) / "root.ext4"
    found = guest.image_python(image) if image.exists() else None
    return found or defaults.VM_SUITE_PYTHON


def native_file(version, package=None):
    """pmemkit's extension file for CPython ``version`` in the package directory (may not exist)."""
    tag = version.replace(".", "")
    return (package or _pmemkit_package()) / f"_flush.cpython-{tag}-x86_64-linux-gnu.so"


def project_layer(config, project, version=None):
    """The :class:`~pmemkit.vm.guest.Layer` ``project`` needs on ``config``'s guest: its packages
    and pip requirements, and pmemkit's extension rebuilt when the host's does not fit the guest's
    Python (raises :class:`GuestLayerError` when it can be neither loaded nor rebuilt)."""
    project = project or Project()
    version = version or guest_python(config)
    package = _pmemkit_package()
    native = None
    if not native_file(version, package).exists():
        native = package / "_flush.c"
        if not native.exists():
            raise GuestLayerError(
                f"pmemkit's native extension for the guest's Python {version} is not in "
                f"{package} and its source (_flush.c) is not there to rebuild it: the guest would "
                "fall back to msync on DAX. Install pmemkit from a wheel or sdist of version "
                f">= {defaults.VERSION} (they carry the source), or run pmemkit with "
                f"Python {version}")
    guest_project = None
    if project.local_pip:
        guest_project = str(_guest_path(config, project.directory))
    return guest.Layer(packages=project.packages, pip=tuple(project.pip_argv),
                       project=project.directory if project.local_pip else None,
                       guest_project=guest_project,
                       project_digest=project.build_digest() if project.local_pip else None,
                       native_source=native, pmemkit_version=defaults.VERSION,
                       check_python=lambda v: check_python(project, v))


def _guest_path(config, host_path):
    return Path(config.guest_share) / Path(host_path).resolve().relative_to(config.share)


def prepare(config=None, progress=None, project=None):
    """Build (or find in the cache) kernel, root image and initramfs for ``config``; with a
    :class:`~pmemkit.vm.project.Project`, the root image is the project's guest layer."""
    config = config or VmConfig()
    from concurrent.futures import ThreadPoolExecutor

    k = kernel_mod.resolve(config.kernel, config.modules, config.cache_dir, progress,
                           package=config.kernel_package, features=config.kernel_features)
    if k.config() is None and progress:
        progress(f"kernel {k.release} comes without its config: its options were not checked")
    layer = project_layer(config, project)

    def kernel_and_initramfs():
        k.boot_image()
        return guest.build_initramfs(k, config.cache_dir, progress)

    # On a cold cache the initramfs build overlaps the (longer) root filesystem build.
    with ThreadPoolExecutor(max_workers=1) as pool:
        side = pool.submit(kernel_and_initramfs)
        rootfs = guest.build_rootfs(cache_root=config.cache_dir, progress=progress, layer=layer)
        initramfs = side.result()
    if project is not None and project.requires_python:
        check_python(project, guest.image_python(rootfs.image) or guest_python(config))
    return GuestImage(k, initramfs, rootfs)


def nvdimm_path(config):
    """The NVDIMM or CXL backing file ``config`` uses (created on first use, kept across runs)."""
    if config.cxl is not None:
        if config.cxl_file is not None:
            return Path(config.cxl_file)
        return cache.cache_dir(config.cache_dir) / "cxl" / f"cxl-{format_size(config.cxl)}.img"
    if config.nvdimm is None:
        return None
    if config.nvdimm_file is not None:
        return Path(config.nvdimm_file)
    suffix = "-labels" if config.labels else ""
    name = f"pmem-{format_size(config.nvdimm)}{suffix}.img"
    return cache.cache_dir(config.cache_dir) / "nvdimm" / name


def lsa_path(config):
    """The CXL device's label storage area: ``<backing file>.lsa``, beside it."""
    path = nvdimm_path(config)
    return path.with_name(path.name + ".lsa")


def _cxl_quirks(release):
    """How a kernel needs QEMU 7.2's CXL emulation: (root ports, kernel args, CPU options).

    6.1 never programs the host bridge's decoder behind a single root port (QEMU 7.2 then
    drops every access): it gets a second, empty port. Newer kernels find no memory device
    without ``pcie_ports=compat`` and make no region without ``hypervisor=off``; with those,
    one port works."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if m and (int(m.group(1)), int(m.group(2))) <= (6, 1):
        return 2, [], []
    return 1, ["pcie_ports=compat"], ["hypervisor=off"]


def argv_list(argv, what):
    """``argv`` as a list of strings; a string is refused (it would run letter by letter)."""
    if isinstance(argv, (str, bytes)):
        raise VmConfigError(f"{what} is an argv list such as ['python3', 'check.py'], not the "
                            f"string {argv!r}: no shell splits it (pass ['sh', '-c', text])")
    return [str(a) for a in argv]


def _create_backing(config):
    """Create the backing file(s) of an NVDIMM or CXL device (sparse) and the ``persist`` file
    (empty: QEMU sizes it) if missing; one that cannot be made is a :class:`VmConfigError`."""
    files = []
    if nvdimm_path(config) is not None:
        files.append((nvdimm_path(config), config.pmem_size))
    if config.cxl is not None:
        files.append((lsa_path(config), parse_size(defaults.VM_NVDIMM_LABEL_SIZE)))
    if config.persist is not None:
        files.append((config.persist, 0))
    for path, size in files:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.stat().st_size == 0:
                with open(path, "wb") as f:
                    f.truncate(size)
        except OSError as exc:
            raise VmConfigError(f"cannot create {path}: {exc.strerror or exc}; give a file in a "
                                f"writable directory") from None


def _write_cfg(job, config, action):
    cfg = job / "cfg"
    cfg.mkdir()
    values = {
        "action": action, "mode": config.mode, "fs": " ".join(config.fs),
        "labels": "1" if (config.labels and config.nvdimm is not None) else "0",
        "cxl": "1" if config.cxl is not None else "0",
        "ramdax": "1" if config.ramdax else "0",
        "namespaces": " ".join(config.namespaces or ()),
        "share": config.guest_share or "", "mount_options": defaults.MOUNT_OPTIONS,
        "pmemkit_lib": GUEST_LIB if _lib_share(config) else "",
    }
    for fs in defaults.FILESYSTEMS:
        values[f"mnt_{fs}"] = defaults.MOUNT_POINTS[fs]
        values[f"mkfs_{fs}"] = " ".join(defaults.MKFS_OPTIONS[fs])
    for name, value in values.items():
        (cfg / name).write_text(value + "\n")


#: Where the guest mounts the host's pmemkit package (read-only) when the share does not hold it.
GUEST_LIB = "/run/pmemkit-lib"
#: The job directory in the guest (guest_init.sh mounts it there).
GUEST_JOB = "/run/pmemkit-job"


def _lib_share(config):
    """The host's pmemkit package directory when it must be shared on its own (it is not the
    ``pmemkit`` directory at the top of the share, i.e. the share is not a pmemkit checkout)."""
    package = _pmemkit_package()
    if config.share is not None and package.parent == config.share:
        return None
    return package


def _guest_pythonpath(config):
    """The guest's PYTHONPATH: pmemkit (the host's, shared), its metadata, the share."""
    path = [GUEST_LIB] if _lib_share(config) else []
    path.append(f"{GUEST_JOB}/lib")
    if config.share is not None:
        path.append(config.guest_share)
    return path


def _native_check(config, image, version):
    """The guest path of the extension file the guest must be able to load."""
    if image.rootfs.native_dir:
        return f"{image.rootfs.native_dir}/{native_file(version).name}"
    if _lib_share(config):
        return f"{GUEST_LIB}/pmemkit/{native_file(version).name}"
    return f"{config.guest_share}/pmemkit/{native_file(version).name}"


def qemu_argv(config, image, job, accel, *, interactive=False):
    """The full QEMU command line for ``config`` (a list; nothing goes through a shell)."""
    append = ["console=ttyS0", "panic=-1", "rdinit=/init",
              "loglevel=4" if not interactive else "quiet",
              "nokaslr", "tsc=reliable", "no_timer_check", "mitigations=off"]
    machine, machine_opts, maxmem, slots, cpu_opts, bus, ports = "pc", (), None, 0, [], None, 0
    if config.memmap is not None:
        append.append(config.memmap.kernel_arg)
        if config.ramdax:
            append.append("pmemkit.ramdax=1")
        if config.persist is not None:
            machine_opts = ("memory-backend=guest-ram",)
    elif config.cxl is not None:
        machine, machine_opts, bus = "q35", ("cxl=on",), "pcie.0"
        ports, extra_append, cpu_opts = _cxl_quirks(image.kernel.release)
        append += [*extra_append, "pmemkit.cxl=1"]
    else:
        machine_opts = ("nvdimm=on",)
        slots = 2
        maxmem = format_size(config.memory + config.nvdimm + (1 << 30))
    argv = qemu.base_args(accel=accel, memory=format_size(config.memory), cpus=config.cpus,
                          machine=machine, machine_opts=machine_opts, maxmem=maxmem, slots=slots,
                          cpu_opts=cpu_opts)
    if config.persist is not None:
        argv += ["-object", f"memory-backend-file,id=guest-ram,size={config.memory},"
                            f"mem-path={config.persist},share=on"]
    argv += qemu.kernel_args(image.kernel.boot_image(), image.initramfs, append)
    argv += qemu.drive_args(image.rootfs.image, snapshot=True, bus=bus)
    argv += qemu.share_args(job, "pmemkit-job", bus=bus)
    if config.share is not None:
        argv += qemu.share_args(config.share, "pmemkit-share", bus=bus)
    if _lib_share(config):
        argv += qemu.share_args(_lib_share(config), "pmemkit-lib", readonly=True, bus=bus)
    if config.nvdimm is not None:
        label = defaults.VM_NVDIMM_LABEL_SIZE if config.labels else None
        argv += qemu.nvdimm_args(nvdimm_path(config), config.nvdimm, label_size=label)
    if config.cxl is not None:
        argv += qemu.cxl_args(nvdimm_path(config), config.cxl, lsa_path(config), root_ports=ports,
                              window=defaults.VM_CXL_WINDOW)
    argv += qemu.serial_args("mon:stdio" if interactive else job / "console.log")
    return [str(a) for a in argv]


class _Tail:
    """Reads what a file gained since the last call."""

    def __init__(self, path):
        self.path, self.pos, self.data = Path(path), 0, bytearray()

    def read_new(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                chunk = f.read()
        except FileNotFoundError:
            return b""
        self.pos += len(chunk)
        self.data += chunk
        return chunk


def _tail_text(text, n=30):
    return "\n".join(text.splitlines()[-n:])


def run(config=None, argv=("true",), *, timeout=None, stream=None, progress=None, action="run",
        env=None, cut_when=None, project=None):
    """Boot a guest for ``config``, run ``argv`` in it, return a :class:`VmResult`.

    ``stream(name, data)`` is called with ``"stdout"``/``"stderr"`` and bytes as the command
    writes them (live). ``progress(message)`` gets build/boot messages. ``timeout`` (seconds,
    default ``config.timeout``) kills the guest and raises :class:`GuestError`. A guest that
    cannot set up pmem raises :class:`GuestError` with its setup log. ``action="shell"`` gives an
    interactive shell on the terminal instead (see :func:`shell`). ``cut_when()``, polled while
    the guest runs, cuts the power when it returns true: QEMU is killed with SIGKILL and the
    result has ``power_cut`` set and no exit status (see :mod:`pmemkit.vm.powercut`).
    ``project`` (a :class:`~pmemkit.vm.project.Project`, see
    :func:`pmemkit.vm.project.load_project`) adds its packages and pip requirements to the guest
    (a cached layer) and runs its setup commands first.
    """
    config = config or VmConfig()
    argv = argv_list(argv, "the command")
    if action != "shell" and not argv:
        raise VmConfigError("no command given: e.g. pmemkit vm run -- python3 -c 'print(1)'")
    timeout = timeout or config.timeout
    cache.cache_dir(config.cache_dir)  # an unwritable cache and a missing QEMU are
    qemu.qemu_binary()                 # reported before anything is built
    _create_backing(config)            # ...and so is a backing file that cannot be created
    image = prepare(config, progress, project)
    version = guest.image_python(image.rootfs.image) or guest_python(config)
    accel = qemu.choose_accel(config.accel, image.kernel.vmlinuz, progress, config.cache_dir)
    nv = nvdimm_path(config)
    job_parent = Path(tempfile.gettempdir())
    job = Path(tempfile.mkdtemp(prefix="pmemkit-vm-", dir=job_parent))
    try:
        _write_cfg(job, config, action)
        job_env = dict(config.env)
        pp = _guest_pythonpath(config)
        if job_env.get("PYTHONPATH"):
            pp.append(job_env["PYTHONPATH"])
        job_env["PYTHONPATH"] = os.pathsep.join(pp)
        if image.rootfs.native_dir:
            job_env[defaults.NATIVE_DIR_ENV] = image.rootfs.native_dir
        job_env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        job_env.update(env or {})
        (job / "lib" / "pmemkit").mkdir(parents=True)
        guest.write_pmemkit_metadata(job / "lib" / f"pmemkit-{defaults.VERSION}.dist-info",
                                     defaults.VERSION)
        (job / "job.json").write_text(json.dumps({
            "argv": argv, "env": job_env, "cwd": config.guest_cwd(),
            "setup": list(project.setup) if project else [],
            "native": _native_check(config, image, version)}))
        interactive = action == "shell"
        cmd = qemu_argv(config, image, job, accel, interactive=interactive)
        if progress:
            pm = (f"memmap={config.memmap}" if config.memmap else
                  f"{config.backend.upper()} {format_size(config.pmem_size)} ({nv})")
            progress(f"booting guest ({accel}, {pm}, {config.mode}, "
                     f"fs={','.join(config.fs) or 'none'}, memory {format_size(config.memory)})")
        start = time.monotonic()
        out, err, setup = _Tail(job / "stdout"), _Tail(job / "stderr"), _Tail(job / "setup.log")
        # QEMU's own stderr goes to a file: a pipe read only at the end could fill and block it
        qerr = None if interactive else open(job / "qemu.err", "wb")
        kw = {"stdin": None, "stdout": None, "stderr": None} if interactive else {"stderr": qerr}
        guest_progress = None if interactive else progress  # the console shows it already
        try:
            cut = False
            with qemu.Qemu(cmd, new_session=not interactive, **kw) as vm:
                deadline = start + timeout
                while vm.poll() is None:
                    if time.monotonic() > deadline:
                        vm.kill()
                        raise GuestError(
                            f"the guest did not finish within {timeout:.0f} s; QEMU was killed.\n"
                            f"console tail:\n{_tail_text(_read(job / 'console.log'))}")
                    _pump(out, err, setup, stream, guest_progress)
                    if cut_when is not None and cut_when():
                        vm.kill()
                        cut = True
                        break
                    time.sleep(0.1)
                _pump(out, err, setup, stream, guest_progress)
                qemu_err = _read(job / "qemu.err") if qerr else ""
                qemu_status = vm.proc.returncode
        finally:
            if qerr:
                qerr.close()
        duration = time.monotonic() - start
        console = _read(job / "console.log")
        status = _read(job / "status").strip()
        setup_log = setup.data.decode(errors="replace")
        if cut and not status:          # (a guest that had finished keeps its result)
            return VmResult(None, bytes(out.data), bytes(err.data), console, setup_log,
                            accel=accel, duration=duration, nvdimm_file=nv, argv=argv,
                            power_cut=True)
        if status == "setup-failed":
            raise GuestError(f"the guest could not set up emulated pmem:\n{_tail_text(setup_log)}")
        native_failed = _read(job / "native-failed").strip()
        if native_failed:
            raise GuestError(native_failed)
        if not status.lstrip("-").isdigit():
            why = f"QEMU exited with status {qemu_status}"
            if qemu_err.strip():
                why += f": {qemu_err.strip()}"
            raise GuestError(f"the guest stopped without a result ({why}).\n"
                             f"setup log:\n{_tail_text(setup_log, 10)}\n"
                             f"console tail:\n{_tail_text(console)}")
        dax = [d for d in _read(job / "dax_dirs").strip().split(":") if d]
        return VmResult(int(status), bytes(out.data), bytes(err.data), console, setup_log, dax,
                        accel, duration, nv, argv)
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _read(path):
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _pump(out, err, setup, stream, progress):
    for name, tail in (("stdout", out), ("stderr", err)):
        chunk = tail.read_new()
        if chunk and stream:
            stream(name, chunk)
    chunk = setup.read_new()
    if chunk and progress:
        for line in chunk.decode(errors="replace").splitlines():
            progress(f"guest: {line}")


def pytest_argv(pytest_args=()):
    """The guest command ``pmemkit vm test`` runs: Debian's pytest. pmemkit's plugin loads once,
    through the entry point of the package metadata the job directory carries."""
    return ["python3", "-m", "pytest", "-p", "no:cacheprovider", *pytest_args]


def test(config=None, pytest_args=(), **kw):
    """Run pytest in the guest (``pytest_args``, default the share's ``tests``) with DAX required:
    ``dax``-marked tests fail instead of skipping when DAX is missing."""
    env = dict(kw.pop("env", None) or {})
    env[defaults.REQUIRE_DAX_ENV] = "1"
    return run(config, pytest_argv(pytest_args), env=env, **kw)


def shell(config=None, progress=None, project=None):
    """An interactive shell on the guest's serial console (this terminal). Returns its exit
    status."""
    result = run(config, (), action="shell", progress=progress, timeout=math.inf,  # no time limit
                 project=project)
    return result.returncode
