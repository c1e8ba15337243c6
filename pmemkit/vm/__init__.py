"""Emulated persistent memory in a QEMU guest: ``pmemkit vm run|test|shell`` as a library.

The public API (documented in ``docs/vm.md``)::

    from pmemkit import vm
    cfg = vm.VmConfig(memmap="512M!1G")               # or nvdimm="1G", labels=True, mode="sector"
    res = vm.run(cfg, ["python3", "-c", "print(1)"], timeout=600,
                 stream=lambda name, data: ...)       # live stdout/stderr chunks
    res.returncode, res.output, res.dax_dirs, res.nvdimm_file

Lower level, reusable for other boots (e.g. a GRUB disk image): :mod:`pmemkit.vm.qemu`
(``Qemu`` launcher that always kills its process group, ``base_args``, ``choose_accel``...),
:func:`pmemkit.vm.kernel.get_kernel` (cached Debian kernel), :mod:`pmemkit.vm.guest`
(cached root image, project layers and initramfs), :mod:`pmemkit.vm.project`
(``[tool.pmemkit.vm]`` of a project's pyproject.toml), :mod:`pmemkit.vm.cache` (cache directory,
tool checks), :mod:`pmemkit.vm.powercut` (SIGKILL the guest during a workload, reboot, check; N
cycles).
"""

from .config import VmConfig  # noqa: F401
from .project import Project, load_project  # noqa: F401
from .runner import GuestImage, VmResult, nvdimm_path, prepare, pytest_argv, run, shell, test  # noqa: F401
from . import cache, guest, kernel, powercut, qemu  # noqa: F401

__all__ = ["VmConfig", "VmResult", "GuestImage", "Project", "load_project", "run", "test", "shell",
           "prepare", "nvdimm_path", "pytest_argv", "cache", "guest", "kernel", "powercut", "qemu"]
