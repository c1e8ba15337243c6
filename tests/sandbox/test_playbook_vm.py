"""The playbook for real, against a stock Debian 12 guest booted from its own disk through GRUB.

One guest (QEMU/TCG, no memmap at boot, sshd forwarded on 127.0.0.1 only, an SSH key made for
this run) serves the whole module, in order:

1. a range larger than the guest's RAM is refused before anything changes;
2. the playbook runs with memmap=512M!1G: it edits GRUB, reboots the guest, makes the fsdax
   namespace, partitions it, makes ext4 and xfs, mounts them with DAX, installs pmemkit;
3. the guest is checked from outside: /proc/cmdline, /dev/pmem0 in fsdax mode, both mounts with
   dax=always, a MAP_SYNC mapping, pmemkit importable;
4. a second run reports changed=0.

Two boots in all (the first and the role's reboot). The disk image is built once (debootstrap,
a few minutes) and cached, keyed by its inputs.
"""

from __future__ import annotations

import json

import psutil
import pytest

from pmemkit import defaults
from pmemkit.sandbox import disk
from sandbox_util import recap, run_playbook, source_snapshot, write_inventory

pytestmark = pytest.mark.vm

MEMMAP = defaults.MEMMAP_SMALL
GUEST_MEMORY = "2G"
HOST = "sandbox"


@pytest.fixture(scope="module")
def image():
    return disk.build_disk_image(progress=print)


@pytest.fixture(scope="module")
def guest(image, tmp_path_factory):
    work = tmp_path_factory.mktemp("sandbox-guest")
    booted = None
    try:
        with disk.boot(image, work, memory=GUEST_MEMORY, accel="tcg", progress=print) as booted:
            yield booted
    finally:
        # Whatever happened, QEMU is gone: no process still holds this run's overlay.
        if booted is not None:
            assert (not psutil.pid_exists(booted.vm.pid)
                    or psutil.Process(booted.vm.pid).status() == psutil.STATUS_ZOMBIE)
        leftovers = [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
                     if any(str(work) in a for a in (p.info["cmdline"] or []))]
        assert leftovers == [], f"QEMU processes left running: {leftovers}"


@pytest.fixture(scope="module")
def inventory(guest, tmp_path_factory):
    path = tmp_path_factory.mktemp("sandbox-inventory") / "inventory.yml"
    return write_inventory(path, {HOST: guest.ssh.ansible_host_vars()})


def sh(guest, *argv):
    return guest.ssh.run(*argv).stdout


def test_disk_image_boots_through_grub_without_memmap(guest):
    cmdline = sh(guest, "cat", "/proc/cmdline")
    assert "BOOT_IMAGE=" in cmdline          # GRUB booted it
    assert "memmap=" not in cmdline


def test_range_larger_than_ram_is_refused_before_any_change(guest, inventory, tmp_path):
    grub_before = sh(guest, "sha256sum", "/etc/default/grub")
    proc = run_playbook(tmp_path, inventory, {"pmem_memmap": defaults.MEMMAP})
    r = recap(proc.stdout, HOST)
    assert proc.returncode != 0
    assert r["failed"] == 1 and r["changed"] == 0
    assert f"memmap={defaults.MEMMAP} takes physical memory up to" in proc.stdout
    assert sh(guest, "sha256sum", "/etc/default/grub") == grub_before


@pytest.fixture(scope="module")
def run_vars(tmp_path_factory):
    src = source_snapshot(tmp_path_factory.mktemp("source") / "pmemkit")
    return {"pmem_memmap": MEMMAP, "pmem_pmemkit_source": str(src)}


@pytest.fixture(scope="module")
def first_run(guest, inventory, run_vars, tmp_path_factory):
    proc = run_playbook(tmp_path_factory.mktemp("run1"), inventory, run_vars)
    print(proc.stdout[-4000:])
    return proc


def test_first_run_succeeds_and_reboots(first_run):
    r = recap(first_run.stdout, HOST)
    assert first_run.returncode == 0, first_run.stdout[-6000:]
    assert r["failed"] == 0 and r["unreachable"] == 0
    assert r["changed"] > 0
    assert "Reboot into the memmap kernel argument" in first_run.stdout


def test_kernel_command_line_has_memmap(guest, first_run):
    assert f"memmap={MEMMAP}" in sh(guest, "cat", "/proc/cmdline").split()
    assert f'memmap={MEMMAP}' in sh(guest, "grep", "^GRUB_CMDLINE_LINUX=", "/etc/default/grub")


def test_pmem0_is_fsdax(guest, first_run):
    ns = json.loads(sh(guest, "ndctl", "list", "--namespaces"))
    ns = ns if isinstance(ns, list) else [ns]
    assert [(n["blockdev"], n["mode"]) for n in ns] == [("pmem0", defaults.NAMESPACE_MODE)]
    assert sh(guest, "cat", "/sys/block/pmem0/queue/dax").strip() == "1"


def test_both_dax_mounts_are_up(guest, first_run):
    mounts = {}
    for line in sh(guest, "cat", "/proc/mounts").splitlines():
        dev, mnt, fstype, opts = line.split()[:4]
        mounts[mnt] = (dev, fstype, opts.split(","))
    for i, fs in enumerate(defaults.FILESYSTEMS, start=1):
        dev, fstype, opts = mounts[defaults.MOUNT_POINTS[fs]]
        assert (dev, fstype) == (f"/dev/pmem0p{i}", fs)
        assert "dax=always" in opts
    fstab = sh(guest, "cat", "/etc/fstab")
    for fs in defaults.FILESYSTEMS:
        assert f" {defaults.MOUNT_POINTS[fs]} {fs} dax," in fstab


def test_map_sync_mapping_succeeds(guest, first_run):
    probe = ("import mmap, os, sys\n"
             "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
             "os.ftruncate(fd, 1 << 21)\n"
             "m = mmap.mmap(fd, 1 << 21, flags=0x03 | 0x80000)\n"
             "m[:5] = b'hello'; m.flush(); print(bytes(m[:5]).decode())\n")
    for fs in defaults.FILESYSTEMS:
        path = f"{defaults.MOUNT_POINTS[fs]}/map-sync-test"
        assert sh(guest, "python3", "-c", probe, path).strip() == "hello"
    # and the same on a non-DAX file system is refused: the probe can fail
    res = guest.ssh.run("python3", "-c", probe, "/root/map-sync-test", check=False)
    assert res.returncode != 0 and "Operation not supported" in res.stderr


def test_pmemkit_is_installed(guest, first_run):
    out = sh(guest, "/usr/local/bin/pmemkit", "--help")
    assert "usage: pmemkit" in out


def test_second_run_changes_nothing(guest, inventory, run_vars, first_run, tmp_path):
    proc = run_playbook(tmp_path, inventory, run_vars)
    r = recap(proc.stdout, HOST)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert r["changed"] == 0, proc.stdout[-6000:]
    assert r["failed"] == 0
    assert "Reboot into the memmap kernel argument" in proc.stdout  # shown, skipped
