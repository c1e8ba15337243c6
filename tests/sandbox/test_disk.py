"""The disk-image builder's pieces that need no guest: cache keys, QEMU argv, refusals, and the
structure of the built image (MBR, GRUB boot code, root partition)."""

import struct

import pytest

from pmemkit.errors import VmConfigError
from pmemkit.sandbox import disk


def test_cache_key_follows_every_input():
    base = disk.DiskImageSpec()
    assert base.key() == disk.DiskImageSpec().key()
    others = [disk.DiskImageSpec(suite="trixie"), disk.DiskImageSpec(size="8G"),
              disk.DiskImageSpec(extra_packages=("vim",)), disk.DiskImageSpec(vagrant=True),
              disk.DiskImageSpec(mirror="http://example.invalid/debian")]
    keys = {base.key()} | {s.key() for s in others}
    assert len(keys) == 1 + len(others)


def test_too_small_disk_is_refused(tmp_path):
    with pytest.raises(VmConfigError, match="too small"):
        disk.build_disk_image(disk.DiskImageSpec(size="1G"), cache_dir=tmp_path)


def test_boot_args_forward_ssh_on_loopback_only_and_allow_reboot(tmp_path):
    argv = disk.boot_args(tmp_path / "d.qcow2", accel="tcg", memory="2G", ssh_port=2222,
                          public_key=tmp_path / "k.pub", serial_log=tmp_path / "s.log")
    assert "-no-reboot" not in argv
    netdev = argv[argv.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in netdev
    assert f"name={disk.FW_CFG_KEY_NAME},file={tmp_path / 'k.pub'}" in argv


def test_box_needs_a_vagrant_image(tmp_path):
    image = disk.DiskImage(tmp_path / "x.raw", "uuid", disk.DiskImageSpec())
    with pytest.raises(VmConfigError, match="vagrant"):
        disk.package_libvirt_box(image, tmp_path / "x.box")


@pytest.mark.vm
def test_built_image_has_mbr_grub_and_root_partition():
    image = disk.build_disk_image(progress=print)
    with open(image.path, "rb") as f:
        mbr = f.read(512)
        core = f.read(512)
    assert mbr[510:512] == b"\x55\xaa"
    assert b"GRUB" in mbr[:440]                       # GRUB's boot.img code
    status, ptype = mbr[446], mbr[446 + 4]
    start, sectors = struct.unpack_from("<II", mbr, 446 + 8)
    assert (status, ptype, start) == (0x80, 0x83, 2048)   # bootable Linux partition at 1 MiB
    assert (start + sectors) * 512 == image.path.stat().st_size
    assert core.strip(b"\0")                           # core.img follows the MBR
    with open(image.path, "rb") as f:                  # ext4 superblock magic, partition-relative
        f.seek(2048 * 512 + 1024 + 0x38)
        assert f.read(2) == b"\x53\xef"
