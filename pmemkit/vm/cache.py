"""Where the VM harness keeps what it builds, and the small helpers every builder shares.

Everything built (kernel trees, initramfs images, root filesystems, NVDIMM backing files) lives
under :func:`cache_dir`, in a directory named after a hash of its inputs, written to a temporary
name first and renamed into place when complete: a half-built entry is never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .. import defaults
from ..errors import MissingToolError, VmError

#: Environment variable overriding the cache directory.
CACHE_ENV = defaults.CACHE_DIR_ENV

#: Debian package providing each host tool the harness runs (for MissingToolError messages).
TOOL_PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "debootstrap": "debootstrap",
    "busybox": "busybox-static",
    "depmod": "kmod",
    "modprobe": "kmod",
    "cpio": "cpio",
    "zstd": "zstd",
    "dpkg": "dpkg",
    "apt-get": "apt",
    "apt-cache": "apt",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "chroot": "coreutils",
    "sfdisk": "fdisk",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}


def cache_dir(path=None):
    """The cache root: ``path``, else ``$PMEMKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/pmemkit``,
    else ``~/.cache/pmemkit``. Created if missing; :class:`VmError` if it cannot be written."""
    if path is None:
        path = os.environ.get(CACHE_ENV)
    if not path:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = Path(xdg) / "pmemkit" if xdg else Path.home() / ".cache" / "pmemkit"
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe-")
        probe.close()
    except OSError as exc:
        raise VmError(
            f"cache directory {path} is not writable ({exc.strerror or exc}): set "
            f"{CACHE_ENV} or XDG_CACHE_HOME to a writable directory") from None
    return path


def need_tool(name):
    """Absolute path of host tool ``name``, or :class:`MissingToolError` naming the apt command."""
    found = shutil.which(name) or next(
        (str(Path(d) / name) for d in ("/usr/sbin", "/sbin") if (Path(d) / name).exists()), None)
    if not found:
        pkg = TOOL_PACKAGES.get(name, name)
        raise MissingToolError(
            f"{name} is not installed: install it with `sudo apt-get install {pkg}` "
            f"(all VM tools: sudo apt-get install qemu-system-x86 qemu-utils debootstrap "
            f"busybox-static kmod cpio zstd e2fsprogs)")
    return found


def key(*parts):
    """A short stable hash of JSON-able ``parts`` (the cache key of a build)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run(argv, what, retries=1, env=None, cwd=None, progress=None):
    """Run ``argv`` (a list, never a shell string); raise :class:`VmError` with its output on
    failure. Each output line goes to ``progress`` (prefixed by ``what``) as it comes. Retries
    ``retries`` times with a growing pause (mirror hiccups)."""
    for attempt in range(1, retries + 1):
        lines = []
        # Its own session: on Ctrl-C the whole tree (debootstrap's dpkg, pip's builds) goes.
        with subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                              errors="replace", env=env, cwd=cwd, start_new_session=True) as proc:
            try:
                for line in proc.stdout:
                    lines.append(line.rstrip("\n"))
                    if progress and line.strip():
                        progress(f"{what}: {line.strip()}")
            except BaseException:   # Ctrl-C or a failing progress callback: leave nothing behind
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        returncode = proc.returncode
        if returncode == 0:
            return "\n".join(lines)
        if attempt < retries:
            if progress:
                progress(f"{what} failed (attempt {attempt}/{retries}), retrying")
            time.sleep(5 * attempt)
    tail = "\n".join(lines[-25:])
    raise VmError(f"{what} failed (exit {returncode}): {' '.join(map(str, argv[:4]))} ...\n{tail}")


def unmount_under(path):
    """Unmount everything mounted at or below ``path``, deepest first (debootstrap mounts /proc
    and /sys in its target and leaves them there when it is killed)."""
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            points = [line.split()[1].replace("\\040", " ") for line in f]
    except OSError:
        return
    umount = shutil.which("umount") or "/bin/umount"
    for point in sorted((p for p in points if p == path or p.startswith(path + "/")),
                        key=len, reverse=True):
        subprocess.run([umount, "-l", point], capture_output=True, check=False)


def remove_tree(path):
    """Remove a build directory, unmounting what is mounted inside it first."""
    unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)


def publish(tmp, final):
    """Atomically move a finished build ``tmp`` to ``final`` (another process may have won)."""
    try:
        os.rename(tmp, final)
    except OSError:
        if Path(final).exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise
    return Path(final)
