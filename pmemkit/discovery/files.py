"""The fixture-tree backend: reads a directory tree laid out like ``/`` (sys, proc, dev, etc).

Used for fixture trees (pyudev cannot be pointed at one) and as the fallback when
libudev is missing. Every unreadable or malformed entry becomes a
:class:`~.model.Problem`, never an exception.
"""

from __future__ import annotations

import os
import re

from .._linux import cpuinfo
from .._linux import join as _join
from .._linux.mounts import read_mounts
from .model import CpuFeatures, Problem, parse_number


def read_text(path, problems):
    """A whole text file (``None`` when missing; a Problem when unreadable)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        problems.append(Problem(path, f"unreadable: {exc.strerror}"))
        return None


class FileDevice:
    """A device directory of the tree: its attributes are the files in it."""

    __slots__ = ("backend", "name", "sys_path", "device_node")

    def __init__(self, backend, name, sys_path, device_node=None):
        self.backend = backend
        self.name = name
        self.sys_path = sys_path
        self.device_node = device_node

    def text(self, name):
        """Attribute ``name`` as stripped ASCII text, ``None`` when missing or unreadable."""
        return self.backend.read_attribute(self.sys_path, name)

    def number(self, name, where):
        return parse_number(self.text(name), where, self.backend.problems)

    def parent(self):
        return FileDevice(self.backend, os.path.basename(os.path.dirname(self.sys_path)),
                          os.path.dirname(self.sys_path))


class FileBackend:
    """Reads a tree laid out like / (sys, proc, dev, etc) under ``root``."""

    name = "files"

    def __init__(self, root, problems):
        self.root = root
        self.problems = problems

    def read_attribute(self, sys_path, name):
        path = os.path.join(sys_path, name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except (FileNotFoundError, IsADirectoryError):
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
            node = f"/dev/{name}" if os.path.exists(_join(self.root, f"/dev/{name}")) else None
            out.append(FileDevice(self, name, sys_path, node))
        return out

    def nd_devices(self):
        return self._list("/sys/bus/nd/devices", "")

    def cxl_devices(self):
        return self._list("/sys/bus/cxl/devices", "")

    def block_devices(self):
        return self._list("/sys/class/block", "pmem") or self._list("/sys/block", "pmem")

    def dax_devices(self):
        return self._list("/sys/bus/dax/devices", "dax")

    def mounts(self):
        return read_mounts(self.root)

    def ram_bytes(self):
        text = read_text(_join(self.root, "/proc/meminfo"), self.problems)
        if text is None:
            return None
        m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
        return int(m.group(1)) * 1024 if m else None

    def cpu(self):
        try:
            flags = cpuinfo.cpu_flags(self.root)
        except OSError as exc:
            self.problems.append(Problem(_join(self.root, "/proc/cpuinfo"),
                                         f"unreadable: {exc.strerror}"))
            return None
        if flags is None:
            return None
        return CpuFeatures("clflush" in flags, "clflushopt" in flags, "clwb" in flags,
                           "/proc/cpuinfo")
