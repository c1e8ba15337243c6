"""Opt-in: the real default memmap=4G!12G (pmemkit.defaults.MEMMAP) in a 17 GiB guest.

Set PMEMKIT_SANDBOX_FULL=1. Guest RAM is allocated lazily, so the host needs far less than 17 GiB,
but the run takes as long as the small one (two boots under TCG).
"""

import json
import os

import pytest

from pmemkit import defaults
from pmemkit.units import format_size, parse_memmap, parse_size
from pmemkit.sandbox import disk
from sandbox_util import recap, run_playbook, write_inventory

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.environ.get("PMEMKIT_SANDBOX_FULL") != "1",
                       reason="opt-in: set PMEMKIT_SANDBOX_FULL=1 to run memmap=4G!12G in a 17 GiB "
                              "guest"),
]


def test_default_memmap_in_full_size_guest(tmp_path):
    memmap = parse_memmap(defaults.MEMMAP)
    memory = format_size(memmap.end + parse_size(defaults.VM_MEMORY_HEADROOM))
    image = disk.build_disk_image(progress=print)
    with disk.boot(image, tmp_path / "guest", memory=memory, accel="tcg", progress=print) as guest:
        inv = write_inventory(tmp_path / "inventory.yml",
                              {"sandbox": guest.ssh.ansible_host_vars()})
        first = run_playbook(tmp_path, inv, {"pmem_install_pmemkit": False})
        assert first.returncode == 0, first.stdout[-6000:]
        assert f"memmap={defaults.MEMMAP}" in guest.ssh.run("cat", "/proc/cmdline").stdout.split()
        ns = json.loads(guest.ssh.run("ndctl", "list", "--namespaces").stdout)
        ns = ns if isinstance(ns, list) else [ns]
        assert ns[0]["mode"] == defaults.NAMESPACE_MODE and ns[0]["size"] >= memmap.size * 0.98
        mounts = guest.ssh.run("cat", "/proc/mounts").stdout
        for fs in defaults.FILESYSTEMS:
            line = next(ln for ln in mounts.splitlines()
                        if ln.split()[1] == defaults.MOUNT_POINTS[fs])
            assert "dax=always" in line.split()[3].split(",")
        second = run_playbook(tmp_path, inv, {"pmem_install_pmemkit": False})
        assert second.returncode == 0 and recap(second.stdout,
                                                "sandbox")["changed"] == 0, second.stdout[-6000:]
