"""CXL memory devices and regions in ``pmemkit info`` (a tree laid out like a CXL guest's sysfs,
with the attribute spellings Linux 6.1 uses there; the real guest is checked by
tests/vm/test_vm_cxl.py)."""

from __future__ import annotations

import io
import os

from pmemkit.cli.core import cmd_info
from pmemkit.discovery import CxlDevice, discover


def _tree(root):
    dev = root / "sys/devices/platform/ACPI0017:00/root0/port1/endpoint2"
    files = {
        "sys/devices/pci0000:0c/0000:0c:00.0/0000:0d:00.0/mem0/serial": "0x5eed\n",
        "sys/devices/pci0000:0c/0000:0c:00.0/0000:0d:00.0/mem0/pmem/size": "0x20000000\n",
        "sys/devices/platform/ACPI0017:00/root0/decoder0.0/region0/size": "0x20000000\n",
        "sys/devices/platform/ACPI0017:00/root0/decoder0.0/region0/commit": "1\n",
        "proc/cmdline": "console=ttyS0\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    dev.mkdir(parents=True)
    bus = root / "sys/bus/cxl/devices"
    bus.mkdir(parents=True)
    os.symlink("../../../devices/pci0000:0c/0000:0c:00.0/0000:0d:00.0/mem0", bus / "mem0")
    os.symlink("../../../devices/platform/ACPI0017:00/root0/decoder0.0/region0", bus / "region0")
    os.symlink("../../../devices/platform/ACPI0017:00/root0/port1/endpoint2", bus / "endpoint2")


def test_cxl_memdev_and_region(tmp_path):
    _tree(tmp_path)
    info = discover(str(tmp_path))
    assert info.cxl == (CxlDevice("mem0", "memdev", 512 << 20, 0x5EED, None),
                        CxlDevice("region0", "region", 512 << 20, None, True))
    assert info.to_dict()["cxl"][0]["serial"] == 0x5EED

    class Args:
        root, json = str(tmp_path), False
    out = io.StringIO()
    assert cmd_info(Args, out) == 0
    text = out.getvalue()
    expected = "CXL:\n  mem0  memdev  512M  serial 0x5eed\n  region0  region  512M  committed"
    assert expected in text, text


def test_no_cxl_no_section(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("quiet\n")
    info = discover(str(tmp_path))
    assert info.cxl == ()
