"""ramdax (Linux 7.x): memmap= as a labelled NVDIMM with several namespaces, and guest RAM kept
in a file (``--persist``) so namespaces and data survive the guest.

The boot test is opt-in (``PMEMKIT_TEST_RAMDAX=1``): it needs Debian's 7.3 kernel from
trixie-backports and two boots, beyond the CI budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pmemkit import defaults, vm
from pmemkit.errors import VmConfigError
from pmemkit.vm import VmConfig, runner

ROOT = Path(__file__).resolve().parents[2]


class _Image:
    kernel = type("K", (), {"release": "7.3.4+deb13-amd64", "boot_image": lambda self: "/k/x"})()
    initramfs = Path("/k/initrd")
    rootfs = type("R", (), {"image": Path("/k/root.ext4")})()


def test_ramdax_config_and_argv(tmp_path):
    cfg = VmConfig(memmap="1G!1G", ramdax=True, namespaces="fsdax,sector",
                   persist=tmp_path / "ram.img", share=False, kernel="debian-7.3")
    assert cfg.namespaces == ("fsdax", "sector") and cfg.mode == "fsdax"
    assert cfg.kernel_features == ["guest", "pmem", "memmap", "ramdax", "sector", "xfs"]
    argv = runner.qemu_argv(cfg, _Image, tmp_path / "job", "tcg")
    joined = " ".join(argv)
    assert "pmemkit.ramdax=1" in argv[argv.index("-append") + 1].split()
    assert "memory-backend=guest-ram" in argv[argv.index("-machine") + 1]
    assert (f"memory-backend-file,id=guest-ram,size={cfg.memory},mem-path={tmp_path / 'ram.img'},"
            "share=on") in joined


def test_ramdax_refusals(tmp_path):
    with pytest.raises(VmConfigError, match="need --ramdax"):
        VmConfig(share=False, namespaces="fsdax,fsdax")
    with pytest.raises(VmConfigError, match="modes"):
        VmConfig(share=False, ramdax=True, namespaces="fsdax,devdx")
    with pytest.raises(VmConfigError, match="do not combine"):
        VmConfig(share=False, ramdax=True, nvdimm="1G")
    with pytest.raises(VmConfigError, match="backing files already"):
        VmConfig(share=False, nvdimm="1G", persist=tmp_path / "ram.img")
    ram = tmp_path / "kept.img"
    ram.write_bytes(b"\0" * 4096)
    with pytest.raises(VmConfigError, match="--memory 4K"):
        VmConfig(share=False, memmap="512M!1G", persist=ram)
    assert ram.stat().st_size == 4096                  # the user's file is left as it was


@pytest.mark.vm
@pytest.mark.skipif(os.environ.get("PMEMKIT_TEST_RAMDAX") != "1",
                    reason="opt-in: PMEMKIT_TEST_RAMDAX=1 (Debian 7.3 kernel, two boots)")
def test_ramdax_two_namespaces_survive_a_reboot(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = VmConfig(memmap="1G!1G", ramdax=True, namespaces="fsdax,sector", kernel="debian-7.3",
                   persist=tmp_path / "ram.img", share=ROOT)
    probe = ("import json, os; from tests.vm.guest_checks import map_sync_works; "
             "print(json.dumps({'dev': sorted(n for n in os.listdir('/dev') if "
             "n.startswith('pmem')), 'sync': map_sync_works('/mnt/pmem-ext4')}))")
    first = vm.run(cfg, ["sh", "-c", f"python3 -c \"{probe}\" && echo kept > /mnt/pmem-xfs/m"],
                   timeout=900)
    assert first.returncode == 0, first.error_output + first.setup_log
    report = first.output.strip().splitlines()[-1]
    assert '"pmem0.1s"' in report and '"pmem0"' in report and '"sync": "ok"' in report, report
    assert "ramdax" in first.setup_log
    second = vm.run(cfg, ["cat", "/mnt/pmem-xfs/m"], timeout=900)
    assert second.returncode == 0, second.error_output + second.setup_log
    assert second.output.strip() == "kept"
    assert "init-labels" not in second.setup_log and "initialized" not in second.setup_log
    assert defaults.MOUNT_POINTS["xfs"] in second.dax_dirs
