"""Guest kernels: named Debian kernels (6.1, backports 6.12 and 7.3), a kernel given by path with
its modules, compressed images and modules, and the refusal of a kernel without pmem support.

The unit tests need no QEMU; the boot test (marked ``vm``) boots Debian's 6.12 by path.
"""

from __future__ import annotations

import gzip
import json
import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pmemkit import defaults, vm
from pmemkit.errors import VmConfigError
from pmemkit.vm import VmConfig, kernel

ROOT = Path(__file__).resolve().parents[2]
CHECKS = "tests/vm/guest_checks.py"


def _elf_with_pvh():
    """A minimal ELF64 whose one PT_NOTE segment has the Xen PVH entry note."""
    import struct

    n = b"Xen\0"
    blob = struct.pack("<III", len(n), 4, 18) + n + b"\0" * 4
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 0x20, 64)
    struct.pack_into("<HH", header, 0x36, 56, 1)
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(blob), len(blob), 4)
    return bytes(header) + phdr + blob


def _zstd(data):
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def test_extract_vmlinux_bad_gzip_payload_is_not_an_error():
    # A gzip magic followed by garbage used to escape as zlib.error from extract_vmlinux.
    assert kernel.extract_vmlinux(b"MZ-setup" + b"\x1f\x8b\x08" + b"\x00garbage" * 50) is None


def test_extract_vmlinux_zstd_payload_with_size_tail():
    elf = _elf_with_pvh()
    # the kernel build appends the 4-byte decompressed size after the zstd frame
    image = b"MZ-setup" + _zstd(elf) + len(elf).to_bytes(4, "little")
    assert kernel.extract_vmlinux(image) == elf
    assert kernel.extract_vmlinux(elf) == elf  # an ELF vmlinux is used as it is


@pytest.mark.parametrize(
    "suffix, pack",
    [
        (".ko", lambda b: b),
        (".ko.xz", lzma.compress),
        (".ko.gz", gzip.compress),
        (".ko.zst", _zstd),
    ],
)
def test_module_bytes_every_compression(tmp_path, suffix, pack):
    body = b"\x7fELF module body" * 100
    path = tmp_path / f"nd_pmem{suffix}"
    path.write_bytes(pack(body))
    assert kernel.module_bytes(path) == body
    assert kernel.module_name(path) == "nd_pmem.ko"


def test_parse_and_check_config():
    cfg = kernel.parse_config(
        "CONFIG_LIBNVDIMM=m\n# CONFIG_BLK_DEV_PMEM is not set\nCONFIG_FS_DAX=y\n"
    )
    assert cfg == {"LIBNVDIMM": "m", "FS_DAX": "y"}
    with pytest.raises(VmConfigError, match="CONFIG_BLK_DEV_PMEM"):
        kernel._check_config(cfg, "9.9.9", ["pmem"])
    assert kernel._check_config(None, "9.9.9", ["pmem"]) is False


def test_unknown_kernel_name_and_missing_path(tmp_path):
    with pytest.raises(VmConfigError, match="debian-6.12"):
        VmConfig(share=False, kernel="debian-5.10")
    with pytest.raises(VmConfigError, match="neither"):
        VmConfig(share=False, kernel=str(tmp_path / "bzImage"))
    with pytest.raises(VmConfigError, match="--modules goes with --kernel PATH"):
        VmConfig(share=False, kernel="debian-6.12", modules=str(tmp_path))


def test_kernel_features_follow_the_config():
    assert VmConfig(share=False, memmap=defaults.MEMMAP_SMALL).kernel_features == [
        "guest",
        "pmem",
        "memmap",
        "xfs",
    ]
    assert VmConfig(share=False, nvdimm="64M", mode="sector").kernel_features == [
        "guest",
        "pmem",
        "nvdimm",
        "sector",
    ]


@pytest.mark.vm
def test_debian_kernels_have_every_option():
    """Each named Debian kernel's own config has what every feature needs (downloads once);
    only 7.x has ramdax, and the others are refused for it with the option named."""
    for name in defaults.VM_KERNELS:
        k = kernel.get_kernel(name=name)
        assert k.vmlinuz.exists() and k.modules_dir.is_dir()
        features = [f for f in defaults.VM_KERNEL_OPTIONS if f != "ramdax"]
        assert kernel.check_options(k, features) is True, name
        if k.release.startswith("7."):
            assert kernel.check_options(k, ["ramdax"]) is True
        else:
            with pytest.raises(VmConfigError, match="without CONFIG_RAMDAX"):
                kernel.check_options(k, ["ramdax"])


@pytest.mark.vm
def test_kernel_without_pmem_support_is_refused_before_boot(tmp_path):
    """A real kernel image whose config (beside it, Debian's layout) lacks CONFIG_LIBNVDIMM:
    `pmemkit vm run --kernel PATH` exits 2 naming the option; nothing is copied or booted."""
    k = kernel.get_kernel()
    image = tmp_path / k.vmlinuz.name
    shutil.copyfile(k.vmlinuz, image)
    config = k.config_file.read_text().replace(
        "CONFIG_LIBNVDIMM=m", "# CONFIG_LIBNVDIMM is not set"
    )
    (tmp_path / k.config_file.name).write_text(config)
    cache_root = tmp_path / "cache"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pmemkit",
            "vm",
            "run",
            "--kernel",
            str(image),
            "--memmap",
            defaults.MEMMAP_SMALL,
            "--no-share",
            "--",
            "true",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PMEMKIT_CACHE_DIR": str(cache_root)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "CONFIG_LIBNVDIMM" in proc.stderr and k.release in proc.stderr
    assert not (cache_root / "kernel").exists() or not any((cache_root / "kernel").iterdir())
    assert "booting" not in proc.stderr


@pytest.mark.vm
def test_debian_6_12_by_path_with_its_modules_has_dax_and_map_sync(monkeypatch):
    """Debian's 6.12 (backports: zstd image, .ko.xz modules) fetched by name, then booted as a
    user's kernel from its path with --modules: memmap pmem, ext4 + xfs dax=always, MAP_SYNC."""
    k = kernel.get_kernel(name="debian-6.12")
    assert k.release.startswith("6.12.")
    monkeypatch.chdir(ROOT)
    cfg = VmConfig(
        memmap=defaults.MEMMAP_SMALL, share=ROOT, kernel=str(k.vmlinuz), modules=str(k.modules_dir)
    )
    res = vm.run(cfg, ["sh", "-c", f"uname -r >&2; exec python3 {CHECKS}"], timeout=900)
    assert res.returncode == 0, res.error_output + res.setup_log
    assert res.error_output.splitlines()[0] == k.release
    report = json.loads(res.output.strip().splitlines()[-1])
    assert report["pmem0_bytes"] == 512 << 20 and report["pmem0_dax"] == "1"
    for fs in defaults.FILESYSTEMS:
        assert "dax=always" in report["mounts"][defaults.MOUNT_POINTS[fs]]["opts"]
    assert set(report["map_sync"].values()) == {"ok"}, report["map_sync"]
    assert all(v["is_pmem"] for v in report["map_file"].values())
