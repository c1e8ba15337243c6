"""The live backend: the running system through pyudev (devices), the mount table and
psutil (RAM).

Devices stay pyudev ``Device`` objects (no re-resolving a device for every attribute);
attributes are read with ``attributes.asstring`` (numbers through
:func:`~.model.parse_number`, which also reads the 0x hex of CXL's sysfs).
"""

from __future__ import annotations

import os

from .. import cpu
from .._linux.mounts import read_mounts
from .model import CpuFeatures, Problem, parse_number


class UdevDevice:
    """A pyudev ``Device`` with the attribute readers the model builder uses."""

    __slots__ = ("device", "problems")

    def __init__(self, device, problems):
        self.device = device
        self.problems = problems

    @property
    def name(self):
        return self.device.sys_name

    @property
    def sys_path(self):
        return self.device.sys_path

    @property
    def device_node(self):
        return self.device.device_node

    def _where(self, name):
        return os.path.join(self.device.sys_path, name)

    def text(self, name):
        """Attribute ``name`` as stripped text, ``None`` when missing or unreadable."""
        try:
            value = self.device.attributes.asstring(name)
        except KeyError:
            return None
        except UnicodeDecodeError:
            self.problems.append(Problem(self._where(name), "not ASCII text"))
            return None
        except OSError as exc:
            self.problems.append(Problem(self._where(name), f"unreadable: {exc}"))
            return None
        return value.strip()

    def number(self, name, where):
        """Attribute ``name`` as a number: decimal, or 0x hex as CXL's sizes and serials are
        (``attributes.asint`` reads decimal only)."""
        return parse_number(self.text(name), where, self.problems)

    def parent(self):
        parent = self.device.parent
        return None if parent is None else UdevDevice(parent, self.problems)


class UdevBackend:
    """The running system through pyudev (devices), the mount table and psutil (RAM)."""

    name = "live"

    def __init__(self, problems):
        import pyudev

        self.context = pyudev.Context()
        self.problems = problems
        self.root = "/"

    def _list(self, subsystem, prefix):
        found = [UdevDevice(dev, self.problems)
                 for dev in self.context.list_devices(subsystem=subsystem)
                 if dev.sys_name.startswith(prefix)]
        return sorted(found, key=lambda d: d.name)

    def nd_devices(self):
        return self._list("nd", "")

    def cxl_devices(self):
        return self._list("cxl", "")

    def block_devices(self):
        return self._list("block", "pmem")

    def dax_devices(self):
        return self._list("dax", "dax")

    def mounts(self):
        return read_mounts("/")

    def ram_bytes(self):
        import psutil

        return psutil.virtual_memory().total

    def cpu(self):
        """CPU features from pmemkit.cpu (cpuid through the extension, else /proc/cpuinfo)."""
        features = cpu.features()
        return CpuFeatures(features["clflush"], features["clflushopt"], features["clwb"],
                           cpu.feature_source())
