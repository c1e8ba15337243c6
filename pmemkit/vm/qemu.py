"""QEMU, short and readable: the command line, the accelerator probe, and a launcher that
always kills what it started.

:class:`Qemu` is a context manager around one ``qemu-system-x86_64`` process, started in its
own process group. Leaving the ``with`` block - normally, by exception, Ctrl-C, a timeout, or
SIGTERM turned into :class:`SystemExit` - kills the whole group, and an ``atexit`` hook kills
any group still registered when the interpreter exits. Reusable for any boot (the Ansible
sandbox boots a GRUB disk image with it)::

    argv = qemu.base_args(accel=qemu.choose_accel("auto"), memory="2G") + [...]
    with qemu.Qemu(argv, stdout=subprocess.DEVNULL) as vm:
        vm.wait(timeout=300)
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from .. import defaults
from ..errors import GuestError, VmConfigError
from . import cache

#: Process groups of QEMUs still running, killed at interpreter exit.
_LIVE: set[int] = set()
_LOCK = threading.Lock()


def qemu_binary():
    """``qemu-system-x86_64`` or :class:`~pmemkit.errors.MissingToolError` with the apt command."""
    return cache.need_tool("qemu-system-x86_64")


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@atexit.register
def _kill_all():
    with _LOCK:
        groups = list(_LIVE)
        _LIVE.clear()
    for key in groups:
        if key < 0:         # a QEMU sharing our session (vm shell): kill the process itself
            try:
                os.kill(-key, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        else:
            _kill_group(key)


def _sigterm_to_exit(signum, frame):
    raise SystemExit(128 + signum)


def _install_sigterm_handler():
    """Turn SIGTERM into SystemExit (so ``finally`` blocks kill QEMU), if nobody else handles it."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)):
        signal.signal(signal.SIGTERM, _sigterm_to_exit)


class Qemu:
    """One QEMU process in its own process group; killed (group-wide) on exit of the block."""

    def __init__(self, argv, *, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=subprocess.PIPE, new_session=True):
        self.argv = [str(a) for a in argv]
        self._popen_kw = {"stdin": stdin, "stdout": stdout, "stderr": stderr,
                          "start_new_session": new_session}
        self.proc = None
        self._pgid = None

    def start(self):
        _install_sigterm_handler()
        self.proc = subprocess.Popen(self.argv, **self._popen_kw)
        self._pgid = os.getpgid(self.proc.pid) if self._popen_kw["start_new_session"] else None
        with _LOCK:
            _LIVE.add(self._pgid if self._pgid is not None else -self.proc.pid)
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def poll(self):
        return self.proc.poll()

    def wait(self, timeout=None):
        """Wait for QEMU to exit; :class:`GuestError` (after killing it) on timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise GuestError(
                f"the guest did not finish within {timeout:.0f} s; QEMU was killed") from None

    def kill(self):
        """Kill QEMU's whole process group and reap it. Idempotent."""
        if self.proc is None:
            return
        if self._pgid is not None:
            _kill_group(self._pgid)
        elif self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
            pass
        with _LOCK:
            _LIVE.discard(self._pgid if self._pgid is not None else -self.proc.pid)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()
        return False


# --- the command line ----------------------------------------------------------

def base_args(*, accel, memory, cpus=None, machine="pc", machine_opts=(), maxmem=None, slots=0,
              exit_on_reboot=True, cpu_opts=()):
    """The machine: accelerator, CPU (with ``cpu_opts``), RAM, no display, no default devices;
    by default QEMU exits when the guest reboots (a guest that reboots on purpose passes False)."""
    cpu = ",".join(("host" if accel == "kvm" else "max", *cpu_opts))
    mem = str(memory) + (f",slots={slots},maxmem={maxmem}" if maxmem else "")
    return [qemu_binary(), "-machine", ",".join((machine, f"accel={accel}", *machine_opts)),
            "-cpu", cpu, "-smp", str(cpus or defaults.VM_CPUS), "-m", mem,
            "-display", "none", "-nodefaults", "-no-user-config",
            *(["-no-reboot"] if exit_on_reboot else [])]


def kernel_args(kernel, initrd, append):
    return ["-kernel", kernel, "-initrd", initrd, "-append", " ".join(append)]


def drive_args(image, *, snapshot=True, fmt="raw", readonly=False, bus=None):
    """A virtio disk; ``bus`` names the PCI bus explicitly (``pcie.0`` beside a CXL host bridge,
    where QEMU would otherwise plug it into the CXL bus and refuse to start)."""
    opts = [f"file={image}", "if=virtio" if bus is None else "if=none,id=disk0", f"format={fmt}",
            "cache=unsafe"]
    if snapshot:
        opts.append("snapshot=on")
    if readonly:
        opts.append("readonly=on")
    argv = ["-drive", ",".join(opts)]
    if bus is not None:
        argv += ["-device", f"virtio-blk-pci,drive=disk0,bus={bus}"]
    return argv


def share_args(path, tag, *, readonly=False, bus=None):
    """A 9p share (virtio-9p-pci) of host ``path`` under mount tag ``tag`` (on PCI bus ``bus``
    when given, see :func:`drive_args`)."""
    if "," in str(path):
        raise VmConfigError(f"cannot share {path}: QEMU option values may not contain a comma")
    opts = [f"path={path}", "security_model=none", "multidevs=remap"]
    if readonly:
        opts.append("readonly=on")
    if bus is None:
        return ["-virtfs", ",".join(["local", *opts[:1], f"mount_tag={tag}", *opts[1:]])]
    return ["-fsdev", ",".join(["local", f"id=fs-{tag}", *opts]),
            "-device", f"virtio-9p-pci,fsdev=fs-{tag},mount_tag={tag},bus={bus}"]


def nvdimm_args(path, size, *, label_size=None, index=0):
    """A QEMU NVDIMM backed by file ``path`` (needs ``machine_opts=("nvdimm=on",)`` and
    ``slots``/``maxmem`` in :func:`base_args`)."""
    if "," in str(path):
        raise VmConfigError(f"cannot use {path} as NVDIMM backing file: no commas, please")
    dev = f"nvdimm,id=nvdimm{index},memdev=pmem{index}"
    if label_size:
        dev += f",label-size={label_size}"
    return ["-object", f"memory-backend-file,id=pmem{index},share=on,mem-path={path},size={size}",
            "-device", dev]


def cxl_args(path, size, lsa_path, *, root_ports=2, window="4G"):
    """A CXL type-3 persistent memory device backed by file ``path`` (label area in
    ``lsa_path``) behind one CXL host bridge, for QEMU 7.2's ``q35`` with ``cxl=on``.

    Two QEMU 7.2 traps are avoided here: with a single root port Linux 6.1 never programs the
    host bridge's HDM decoder and QEMU drops every access (``root_ports=2`` adds an empty second
    port); and a zero serial number makes the kernel reject the labels on the next boot, so
    the device gets a fixed non-zero ``sn``. ``window`` is the fixed memory window's size."""
    for p in (path, lsa_path):
        if "," in str(p):
            raise VmConfigError(f"cannot use {p} as CXL backing file: no commas, please")
    argv = ["-object", f"memory-backend-file,id=cxl-mem0,share=on,mem-path={path},size={size}",
            "-object", f"memory-backend-file,id=cxl-lsa0,share=on,mem-path={lsa_path},"
                       f"size={defaults.VM_NVDIMM_LABEL_SIZE}",
            "-device", "pxb-cxl,bus_nr=12,bus=pcie.0,id=cxl.1",
            "-device", "cxl-rp,port=0,bus=cxl.1,id=rp0,chassis=0,slot=2",
            "-device", f"cxl-type3,bus=rp0,memdev=cxl-mem0,lsa=cxl-lsa0,id=cxl-pmem0,"
                       f"sn={defaults.VM_CXL_SERIAL}"]
    for port in range(1, root_ports):
        argv += ["-device", f"cxl-rp,port={port},bus=cxl.1,id=rp{port},chassis=0,slot={2 + port}"]
    return argv + ["-M", f"cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size={window}"]


def net_args(forwards=(), *, model="virtio-net-pci"):
    """User-mode networking; ``forwards`` is ``[(host_port, guest_port), ...]`` (TCP), bound to
    127.0.0.1 only (e.g. ``[(free_port(), 22)]`` for ssh into the guest)."""
    fwd = "".join(f",hostfwd=tcp:127.0.0.1:{int(h)}-:{int(g)}" for h, g in forwards)
    return ["-netdev", f"user,id=net0{fwd}", "-device", f"{model},netdev=net0"]


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (for :func:`net_args`)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serial_args(target):
    """``-serial file:PATH`` for a log, ``mon:stdio`` for an interactive console."""
    return ["-serial", target if target == "mon:stdio" else f"file:{target}"]


# --- the accelerator ------------------------------------------------------------

def _kvm_usable_quick():
    return os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)


def probe_kvm(kernel, timeout=None):
    """True when KVM really runs a guest: boots ``kernel`` with no root under ``-accel kvm`` and
    waits for its first console line (and its panic-reboot). Never hangs: killed after
    ``timeout``."""
    if not _kvm_usable_quick():
        return False
    timeout = timeout or defaults.VM_KVM_PROBE_TIMEOUT
    import tempfile
    with tempfile.TemporaryDirectory(prefix="pmemkit-kvm-probe-") as tmp:
        log = Path(tmp) / "console.log"
        argv = base_args(accel="kvm", memory="256M", cpus=1) + serial_args(log) + [
            "-kernel", kernel, "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"]
        with Qemu(argv) as vm:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if vm.poll() is not None:
                    break
                text = log.read_text(errors="replace") if log.exists() else ""
                if "Kernel panic" in text or "VFS:" in text:
                    return True
                time.sleep(0.2)
        text = log.read_text(errors="replace") if log.exists() else ""
        return "Linux version" in text and ("Kernel panic" in text or "VFS:" in text)


def choose_accel(requested, kernel=None, progress=None, cache_root=None):
    """``kvm`` or ``tcg`` for ``requested`` in auto/kvm/tcg.

    ``auto`` tries KVM (with a short timeout; the answer is cached per host boot) and falls back
    to TCG saying so through ``progress``. ``kvm`` is an error where KVM does not work.
    """
    if requested == "tcg":
        return "tcg"
    if requested not in ("auto", "kvm"):
        raise VmConfigError(f"unknown accelerator {requested!r}: use auto, kvm or tcg")
    ok = False
    if _kvm_usable_quick() and kernel is not None:
        try:
            boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            boot_id = "?"
        memo = cache.cache_dir(cache_root) / "kvm-probe.json"
        try:
            seen = json.loads(memo.read_text())
        except (OSError, ValueError):
            seen = {}
        if seen.get("boot_id") == boot_id and "ok" in seen:
            ok = seen["ok"]
        else:
            if progress:
                progress("probing KVM")
            ok = probe_kvm(kernel)
            memo.write_text(json.dumps({"boot_id": boot_id, "ok": ok}))
    if ok:
        return "kvm"
    if requested == "kvm":
        raise GuestError("KVM does not work here (/dev/kvm missing, not accessible, or it cannot "
                         "run a guest): use --accel tcg or --accel auto")
    if progress:
        progress("KVM is not usable here: using TCG (software emulation, slower)")
    return "tcg"
