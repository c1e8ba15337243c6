"""Bad requests fail before anything changes: run against this machine in check mode.

The role's validation only reads (facts, /proc/cmdline, stat), so ``--check`` with a local
connection exercises the real failure paths without touching the host. This machine has no
GRUB (the CI host boots without one): that is the "no GRUB" case for real.
"""

from pathlib import Path

import pytest

from sandbox_util import recap, run_playbook, write_inventory


@pytest.fixture
def local_inventory(tmp_path):
    return write_inventory(tmp_path / "inventory.yml", {
        "localhost": {"ansible_connection": "local", "ansible_become": False,
                      "ansible_python_interpreter": "/usr/bin/python3"}})


def run_check(tmp_path, inventory, **extra):
    proc = run_playbook(tmp_path, inventory, {"pmem_install_pmemkit": False, **extra},
                        args=["--check"], timeout=600)
    return proc, recap(proc.stdout, "localhost")


def test_unknown_filesystem_is_refused(tmp_path, local_inventory):
    proc, r = run_check(tmp_path, local_inventory, pmem_filesystems=["ext4", "btrfs"],
                        pmem_memmap="512M!1G")
    assert proc.returncode != 0
    assert r["failed"] == 1 and r["changed"] == 0
    assert "pmem_filesystems=ext4,btrfs is not supported" in proc.stdout
    assert "unknown: btrfs" in proc.stdout


def test_memmap_larger_than_ram_is_refused(tmp_path, local_inventory):
    proc, r = run_check(tmp_path, local_inventory, pmem_memmap="1T!1T")
    assert proc.returncode != 0
    assert r["failed"] == 1 and r["changed"] == 0
    assert "memmap=1T!1T takes physical memory up to 2097152 MiB" in proc.stdout
    assert "MiB of RAM" in proc.stdout


def test_bad_memmap_syntax_is_refused(tmp_path, local_inventory):
    proc, r = run_check(tmp_path, local_inventory, pmem_memmap="4G$12G")
    assert proc.returncode != 0
    assert r["failed"] == 1
    assert "is not a persistent-memory range" in proc.stdout


@pytest.mark.skipif(Path("/etc/default/grub").exists() or Path("/usr/sbin/grubby").exists(),
                    reason="this machine has GRUB: the no-GRUB case needs a host without it")
def test_host_without_grub_is_refused(tmp_path, local_inventory):
    proc, r = run_check(tmp_path, local_inventory, pmem_memmap="512M!1G")
    assert proc.returncode != 0
    assert r["failed"] == 1 and r["changed"] == 0
    assert "no GRUB on localhost" in proc.stdout
