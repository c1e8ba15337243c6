"""Opt-in: `vagrant up --provider=libvirt` for real, with a box packaged here from Debian's
packages.

Set PMEMKIT_VAGRANT_UP=1. Needs root (debootstrap), libvirtd running (Debian's
libvirt-daemon-system) and vagrant-libvirt; the domain is plain QEMU/TCG
(PMEM_LIBVIRT_DRIVER=qemu) with memmap=512M!1G. The box is added under a test-only name; the VM,
the box and the box's image in libvirt's storage pool are removed afterwards, pass or fail.
docs/sandbox.md says what to install and how to run it in a network namespace of its own.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pmemkit import defaults
from pmemkit.sandbox import disk

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.environ.get("PMEMKIT_VAGRANT_UP") != "1",
                       reason="opt-in: set PMEMKIT_VAGRANT_UP=1 (needs libvirtd) to run "
                              "vagrant up"),
]

VM_DIR = Path(__file__).resolve().parents[2] / "vm"
BOX = "pmemkit-test/debian12"
POOL = "default"  # vagrant-libvirt's storage pool


def test_vagrant_up_libvirt(tmp_path):
    exe = shutil.which("vagrant")
    assert exe, "vagrant is not installed: sudo apt-get install vagrant vagrant-libvirt"
    image = disk.build_disk_image(disk.DiskImageSpec(vagrant=True), progress=print)
    box = disk.package_libvirt_box(image, tmp_path / "debian12.box", progress=print)
    # Vagrant's Ansible provisioner runs `ansible-playbook` from PATH: use the one installed
    # next to this interpreter (the project's .venv), not whatever the host may have.
    venv_bin = str(Path(sys.executable).parent)
    assert (Path(venv_bin) / "ansible-playbook").exists(), f"ansible-playbook is not in {venv_bin}"
    env = dict(os.environ, PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""),
               VAGRANT_CWD=str(VM_DIR), VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"),
               VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_NO_COLOR="1", PMEM_BOX=BOX,
               PMEM_MEMMAP=defaults.MEMMAP_SMALL, PMEM_LIBVIRT_DRIVER="qemu",
               PMEM_INSTALL_PMEMKIT="false")

    def vagrant(*args, timeout=3600):
        proc = subprocess.run([exe, *args], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        return proc

    add = vagrant("box", "add", "--force", "--name", BOX, str(box))
    assert add.returncode == 0, add.stderr
    try:
        started = time.monotonic()
        up = vagrant("up", "--provider=libvirt")
        print(f"vagrant up --provider=libvirt: exit {up.returncode} after "
              f"{time.monotonic() - started:.0f} s")
        assert up.returncode == 0, up.stdout[-5000:] + up.stderr[-3000:]
        cmdline = vagrant("ssh", "-c", "cat /proc/cmdline", timeout=600)
        assert cmdline.returncode == 0
        assert f"memmap={defaults.MEMMAP_SMALL}" in cmdline.stdout.split()
        mounts = vagrant("ssh", "-c", "cat /proc/mounts", timeout=600)
        assert mounts.returncode == 0
        for fs in defaults.FILESYSTEMS:
            line = next(ln for ln in mounts.stdout.splitlines()
                        if ln.split()[1:2] == [defaults.MOUNT_POINTS[fs]])
            assert "dax=always" in line.split()[3].split(",")
    finally:
        vagrant("destroy", "-f", timeout=600)
        vagrant("box", "remove", "--force", BOX, timeout=300)
        _remove_box_volumes()


def _remove_box_volumes():
    """`vagrant box remove` leaves the box's base image in libvirt's storage pool (vagrant-libvirt
    uploads it there as NAME-VAGRANTSLASH-..._vagrant_box_image_*): delete it too."""
    virsh = shutil.which("virsh")
    if not virsh:
        return
    prefix = BOX.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_"
    # A table "Name Path": libvirt 9's vol-list has no --name.
    vols = subprocess.run([virsh, "-c", "qemu:///system", "vol-list", "--pool", POOL],
                          capture_output=True, text=True, timeout=60)
    for name in (line.split()[0] for line in vols.stdout.splitlines() if line.strip()):
        if name.startswith(prefix):
            subprocess.run([virsh, "-c", "qemu:///system", "vol-delete", "--pool", POOL, name],
                           capture_output=True, timeout=60)
