"""A bootable Debian disk image (GRUB, kernel, systemd, sshd, python3), built without loop devices.

This is the "stock Debian VM" the Ansible role and the Vagrantfile are tested against: the
machine boots through BIOS and GRUB from its own disk, with the distribution's kernel and initrd,
exactly like a VM a user keeps. Nothing here needs a loop device, a mount or a helper guest:

1. ``debootstrap`` a root tree (Debian's packages, as root);
2. write an MBR partition table into a sparse image file with ``sfdisk``;
3. make the ext4 root file system straight from the tree *inside* the image file at the
   partition's offset (``mkfs.ext4 -d DIR -E offset=N``);
4. install GRUB (i386-pc) the way ``grub-install`` does it, by hand: ``boot.img`` into the
   MBR, ``core.img`` (made by the tree's own ``grub-mkimage``) into the gap after it; the
   modules go to ``/boot/grub/i386-pc`` and a first ``grub.cfg`` is written (the guest's own
   ``update-grub`` regenerates it later, e.g. when the Ansible role sets ``memmap=``).

Images are cached, keyed by every input; a finished image is never modified: boot it through
a copy-on-write overlay (:func:`make_overlay`).

SSH access: the image has no password and no key. At boot a one-shot unit copies the QEMU
``fw_cfg`` blob ``opt/pmemkit/authorized_keys`` (``-fw_cfg name=...,file=KEY.pub``, see
:func:`seed_args`) to ``/root/.ssh/authorized_keys``, so each test run can use a key of its
own. Images made with ``vagrant=True`` also have the ``vagrant`` user with Vagrant's public key
and password-less sudo, as Vagrant boxes do.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

from .. import defaults
from ..errors import GuestError, MissingToolError, VmConfigError, VmError
from ..units import format_size, parse_size
from ..vm import cache, qemu
from .ssh import SshTarget, generate_key

#: Bump when the build recipe changes, so cached images are rebuilt.
RECIPE_VERSION = 1

#: The sandbox's Debian is the harness guest's (one home: pmemkit.defaults).
DEFAULT_SUITE = defaults.VM_SUITE
DEFAULT_MIRROR = defaults.VM_MIRROR
DEFAULT_DISK_SIZE = "4G"

#: What the image gets on top of debootstrap's minbase. The pmem tools and python3-numpy
#: are there so the test guest need not download anything (the role still installs them
#: on a machine that lacks them).
BASE_PACKAGES = (
    "linux-image-amd64", "grub-pc", "initramfs-tools", "systemd-sysv", "udev", "kmod", "dbus",
    "openssh-server", "python3", "python3-apt", "python3-venv", "sudo", "iproute2",
    "fdisk", "ndctl", "xfsprogs", "e2fsprogs",
    "python3-numpy", "python3-psutil", "python3-pyudev",
)

#: The QEMU fw_cfg name the guest reads its authorized SSH key from.
FW_CFG_KEY_NAME = "opt/pmemkit/authorized_keys"

#: Where Debian's vagrant package keeps Vagrant's public "insecure" key.
_VAGRANT_PUBKEY_GLOBS = (
    "/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub",
    "/usr/share/vagrant/keys/vagrant.pub",
    "/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub",
)

_MBR_CODE_BYTES = 440          # boot.img's code; the partition table follows it
_PART_START = 1 << 20          # root partition at 1 MiB: leaves room for GRUB's core.img
_GRUB_MODULES = ("biosdisk", "part_msdos", "ext2")

_SEED_SCRIPT = """#!/bin/sh
# Copy an SSH public key handed over by the hypervisor (QEMU fw_cfg) to root's authorized_keys.
modprobe qemu_fw_cfg 2>/dev/null || true
src=/sys/firmware/qemu_fw_cfg/by_name/{name}/raw
[ -r "$src" ] || exit 0
install -d -m 700 /root/.ssh
cat "$src" > /root/.ssh/authorized_keys.new
chmod 600 /root/.ssh/authorized_keys.new
mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys
"""

_SEED_UNIT = """[Unit]
Description=Install the SSH key handed over through QEMU fw_cfg
Before=ssh.service
ConditionVirtualization=vm

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/pmemkit-seed-ssh-key

[Install]
WantedBy=multi-user.target
"""

_NETWORK = """[Match]
Name=en* eth*

[Network]
DHCP=yes
"""

_DEFAULT_GRUB = """# Written by pmemkit's disk-image builder (pmemkit.sandbox.disk); edit and run
# update-grub.
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="console=tty0 console=ttyS0,115200n8"
GRUB_CMDLINE_LINUX=""
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""

_GRUB_CFG = """# First boot entry, written by pmemkit.sandbox.disk; the guest's update-grub replaces
# this file.
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=1
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root {uuid}
menuentry 'Debian GNU/Linux' {{
    linux /vmlinuz root=UUID={uuid} ro console=tty0 console=ttyS0,115200n8
    initrd /initrd.img
}}
"""


@dataclass(frozen=True)
class DiskImageSpec:
    """Everything a disk image is built from; its hash is the cache key."""

    suite: str = DEFAULT_SUITE
    mirror: str = DEFAULT_MIRROR
    size: str = DEFAULT_DISK_SIZE
    packages: tuple = BASE_PACKAGES
    extra_packages: tuple = ()
    vagrant: bool = False
    hostname: str = "pmemkit-sandbox"
    recipe: int = field(default=RECIPE_VERSION)

    def key(self):
        return cache.key("disk-image", self.suite, self.mirror, parse_size(self.size),
                         list(self.packages) + list(self.extra_packages), self.vagrant,
                         self.hostname,
                         self.recipe)


@dataclass(frozen=True)
class DiskImage:
    """A finished, cached image: a raw disk with one ext4 root partition."""

    path: Path
    root_uuid: str
    spec: DiskImageSpec



def _run(argv, progress=None, what=None, **kw):
    if progress and what:
        progress(what)
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
        raise VmError(f"{argv[0]} failed (exit {proc.returncode}) while building the disk "
                      f"image:\n{tail}")
    return proc.stdout


def _write(path, text, mode=0o644):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def vagrant_public_key():
    """Vagrant's well-known public key, as shipped by the installed vagrant package."""
    import glob

    for pattern in _VAGRANT_PUBKEY_GLOBS:
        for hit in sorted(glob.glob(pattern)):
            return Path(hit).read_text()
    raise MissingToolError("Vagrant's public key (keys/vagrant.pub) was not found: install "
                           "Debian's vagrant package (scripts/bootstrap.sh does)")


def _configure_tree(root, spec, root_uuid):
    """Make the debootstrapped tree a bootable, reachable machine."""
    _write(root / "etc/hostname", spec.hostname + "\n")
    _write(root / "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{spec.hostname}\n")
    _write(root / "etc/fstab", f"UUID={root_uuid}\t/\text4\terrors=remount-ro\t0\t1\n")
    _write(root / "etc/default/grub", _DEFAULT_GRUB)
    _write(root / "etc/systemd/network/80-dhcp.network", _NETWORK)
    _write(root / "usr/local/sbin/pmemkit-seed-ssh-key", _SEED_SCRIPT.format(name=FW_CFG_KEY_NAME),
           0o755)
    _write(root / "etc/systemd/system/pmemkit-seed-ssh-key.service", _SEED_UNIT)
    _write(root / "etc/modules-load.d/qemu-fw-cfg.conf", "qemu_fw_cfg\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    links = {
        wants / "pmemkit-seed-ssh-key.service": "/etc/systemd/system/pmemkit-seed-ssh-key.service",
        wants / "systemd-networkd.service": "/lib/systemd/system/systemd-networkd.service",
    }
    # A getty on the serial console hangs it up and the boot log is lost; nothing here waits
    # for "network online", and the periodic apt jobs only cost time in a test guest.
    masked = ("serial-getty@ttyS0.service", "systemd-networkd-wait-online.service",
              "apt-daily.timer", "apt-daily-upgrade.timer")
    for unit in masked:
        links[root / "etc/systemd/system" / unit] = "/dev/null"
    for link, target in links.items():
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    # Root logs in with a key only.
    _write(root / "etc/ssh/sshd_config.d/pmemkit.conf",
           "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n")
    if spec.vagrant:
        _run(["chroot", str(root), "useradd", "-m", "-s", "/bin/bash", "vagrant"])
        _write(root / "etc/sudoers.d/vagrant", "vagrant ALL=(ALL) NOPASSWD: ALL\n", 0o440)
        ssh_dir = root / "home/vagrant/.ssh"
        _write(ssh_dir / "authorized_keys", vagrant_public_key(), 0o600)
        ssh_dir.chmod(0o700)
        _run(["chroot", str(root), "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh"])
    # GRUB's modules where core.img's prefix looks for them (grub-install would copy them).
    grub_lib = root / "usr/lib/grub/i386-pc"
    dest = root / "boot/grub/i386-pc"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(grub_lib, dest)
    _write(root / "boot/grub/grub.cfg", _GRUB_CFG.format(uuid=root_uuid))
    # Files that must differ per machine are created at first boot.
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    for cached in (root / "var/cache/apt/archives").glob("*.deb"):
        cached.unlink()


def _install_grub(root, image):
    """What ``grub-install --target=i386-pc`` does, on an image file instead of a device."""
    core = root / "tmp/core.img"
    _run(["chroot", str(root), "grub-mkimage", "-O", "i386-pc", "-o", "/tmp/core.img",
          "-p", "(hd0,msdos1)/boot/grub", *_GRUB_MODULES])
    core_bytes = core.read_bytes()
    core.unlink()
    if 512 + len(core_bytes) > _PART_START:
        raise VmError(f"GRUB core.img is {len(core_bytes)} bytes: it does not fit before the "
                      "partition")
    boot = (root / "usr/lib/grub/i386-pc/boot.img").read_bytes()
    with open(image, "r+b") as f:
        # boot.img's code only: the partition table (bytes 440..511) that sfdisk wrote stays.
        # Its default "kernel sector" is LBA 1, and grub-mkimage already put core.img's length
        # into core.img's own blocklist (which starts at LBA 2), so nothing needs patching.
        f.seek(0)
        f.write(boot[:_MBR_CODE_BYTES])
        f.seek(512)
        f.write(core_bytes)


def build_disk_image(spec=None, cache_dir=None, progress=None, rebuild=False):
    """Return the cached image for ``spec``, building it first if needed (as root; minutes).

    ``progress`` is called with one line of text per step.
    """
    spec = spec or DiskImageSpec()
    size = parse_size(spec.size, "disk size")
    if size < (2 << 30):
        raise VmConfigError(f"disk size {spec.size} is too small for a Debian image with a kernel: "
                            "use 2G or more")
    out_dir = cache.cache_dir(cache_dir) / "disk"
    image = out_dir / f"debian-{spec.suite}-{spec.key()}.raw"
    info = image.with_suffix(".json")
    if image.exists() and info.exists() and not rebuild:
        meta = json.loads(info.read_text())
        return DiskImage(image, meta["root_uuid"], spec)
    if os.geteuid() != 0:
        raise VmError("building the sandbox disk image needs root (debootstrap, chroot): run as "
                      "root, or build it once as root and reuse the cache")
    for tool in ("debootstrap", "sfdisk", "mkfs.ext4"):
        cache.need_tool(tool)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="disk-build-", dir=out_dir))
    try:
        root = work / "root"
        packages = ",".join(list(spec.packages) + list(spec.extra_packages))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C.UTF-8")
        _run(["debootstrap", "--variant=minbase", f"--include={packages}", spec.suite, str(root),
              spec.mirror],
             progress,
             f"debootstrap {spec.suite} ({len(packages.split(','))} extra packages; a few minutes)",
             env=env)
        root_uuid = str(uuidlib.uuid4())
        progress and progress("configuring the root tree (GRUB, sshd, network, SSH key seeding)")
        _configure_tree(root, spec, root_uuid)
        tmp_image = work / "disk.raw"
        with open(tmp_image, "wb") as f:
            f.truncate(size)
        _run([cache.need_tool("sfdisk"), "--no-reread", "--no-tell-kernel", "--wipe", "never",
              str(tmp_image)],
             progress, "partitioning (MBR, one bootable Linux partition at 1 MiB)",
             input=f"label: dos\nstart={_PART_START // 512}, type=83, bootable\n")
        fs_blocks = (size - _PART_START) // 4096
        _install_grub(root, tmp_image)
        _run([cache.need_tool("mkfs.ext4"), "-q", "-F", "-b", "4096", "-L", "root", "-U",
              root_uuid, "-d", str(root),
              "-E", f"offset={_PART_START}", str(tmp_image), str(fs_blocks)],
             progress, f"making the ext4 root file system in the image ({format_size(size)})")
        os.replace(tmp_image, image)
        info.write_text(json.dumps({"root_uuid": root_uuid, "suite": spec.suite,
                                    "key": spec.key()}))
        return DiskImage(image, root_uuid, spec)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_overlay(image, path):
    """A qcow2 copy-on-write overlay over ``image`` (the cached image stays untouched)."""
    qemu_img = cache.need_tool("qemu-img")
    src = image.path if isinstance(image, DiskImage) else Path(image)
    _run([qemu_img, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(Path(src).resolve()),
          str(path)])
    return Path(path)


def seed_args(public_key_file):
    """QEMU arguments that hand ``public_key_file`` to the guest as root's authorized key."""
    return ["-fw_cfg", f"name={FW_CFG_KEY_NAME},file={Path(public_key_file).resolve()}"]


@dataclass
class BootedDisk:
    """A guest running from a disk image: QEMU (:class:`pmemkit.vm.qemu.Qemu`) and SSH to it."""

    vm: qemu.Qemu
    ssh: SshTarget
    overlay: Path
    serial_log: Path


def boot_args(overlay, *, accel, memory, ssh_port, public_key, serial_log, cpus=None):
    """QEMU argv booting ``overlay`` (qcow2) through its own GRUB, sshd on 127.0.0.1:``ssh_port``.

    Unlike the harness's kernel boots, the guest may reboot (the Ansible role reboots it into the
    memmap argument): QEMU restarts the machine instead of exiting.
    """
    argv = qemu.base_args(accel=accel, memory=memory, cpus=cpus, exit_on_reboot=False)
    return (argv + qemu.drive_args(overlay, snapshot=False, fmt="qcow2")
            + qemu.net_args([(ssh_port, 22)])
            + seed_args(public_key) + qemu.serial_args(serial_log))


@contextlib.contextmanager
def boot(image, workdir, *, memory="2G", accel="tcg", cpus=None, ssh_timeout=600, progress=None):
    """Boot ``image`` (a :class:`DiskImage`) through a fresh overlay in ``workdir`` with a new SSH
    key and a free loopback port; yield a :class:`BootedDisk` once sshd answers. QEMU is killed
    when the block ends, however it ends."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    overlay = make_overlay(image, workdir / "disk.qcow2")
    key = generate_key(workdir)
    port = qemu.free_port()
    serial_log = workdir / "serial.log"
    argv = boot_args(overlay, accel=accel, memory=memory, ssh_port=port,
                     public_key=key.with_name(key.name + ".pub"), serial_log=serial_log, cpus=cpus)
    with qemu.Qemu(argv) as vm:
        if progress:
            progress(f"booting {Path(image.path).name} ({accel}, {memory}); sshd on "
                     f"127.0.0.1:{port}")
        target = SshTarget(port=port, key=key)
        try:
            target.wait(ssh_timeout, alive=lambda: vm.poll() is None, log=serial_log)
        except GuestError:
            if vm.poll() is not None and vm.proc.stderr:
                err = vm.proc.stderr.read().decode(errors="replace").strip()
                if err:
                    raise GuestError(f"QEMU exited: {err}") from None
            raise
        yield BootedDisk(vm=vm, ssh=target, overlay=overlay, serial_log=serial_log)


def package_libvirt_box(image, out_path, progress=None):
    """A vagrant-libvirt box file (tar of ``box.img`` + ``metadata.json``) made from ``image``
    (build it with ``DiskImageSpec(vagrant=True)`` so it has the ``vagrant`` user). Add it offline
    with ``vagrant box add --name NAME FILE``."""
    import tarfile

    if not image.spec.vagrant:
        raise VmConfigError("this image has no vagrant user: build it with "
                            "DiskImageSpec(vagrant=True)")
    out_path = Path(out_path)
    work = Path(tempfile.mkdtemp(prefix="box-", dir=out_path.parent))
    try:
        box_img = work / "box.img"
        cache.run([cache.need_tool("qemu-img"), "convert", "-O", "qcow2", image.path, box_img],
                  "qemu-img convert", progress=None)
        virtual_gb = -(-image.path.stat().st_size // (1 << 30))
        (work / "metadata.json").write_text(json.dumps(
            {"provider": "libvirt", "format": "qcow2", "virtual_size": virtual_gb}))
        (work / "Vagrantfile").write_text(
            'Vagrant.configure("2") do |config|\n'
            '  config.vm.provider :libvirt do |lv|\n    lv.disk_bus = "virtio"\n  end\nend\n')
        if progress:
            progress(f"packaging {out_path.name}")
        tmp_out = work / "box.tar"
        with tarfile.open(tmp_out, "w") as tar:
            for name in ("metadata.json", "Vagrantfile", "box.img"):
                tar.add(work / name, arcname=name)
        os.replace(tmp_out, out_path)
        return out_path
    finally:
        shutil.rmtree(work, ignore_errors=True)
