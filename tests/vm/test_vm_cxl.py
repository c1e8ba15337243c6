"""Emulated CXL type-3 persistent memory (``--cxl``): the QEMU 7.2 recipe with its two
workarounds, validation, and a real boot pair keeping data in the backing file across runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pmemkit import defaults, vm
from pmemkit.cli import main as cli_main
from pmemkit.errors import VmConfigError
from pmemkit.vm import VmConfig, runner

ROOT = Path(__file__).resolve().parents[2]
CHECKS = "tests/vm/guest_checks.py"


class _Image:
    def __init__(self, release):
        self.kernel = type("K", (), {"release": release, "boot_image": lambda self: "/k/vmlinux"})()
        self.initramfs = Path("/k/initrd")
        self.rootfs = type("R", (), {"image": Path("/k/root.ext4")})()


def _argv(tmp_path, release):
    cfg = VmConfig(cxl="512M", cxl_file=tmp_path / "cxl.img", share=tmp_path)
    return runner.qemu_argv(cfg, _Image(release), tmp_path / "job", "tcg")


def test_cxl_argv_on_6_1_has_two_root_ports_and_a_serial(tmp_path):
    argv = _argv(tmp_path, "6.1.0-57-amd64")
    joined = " ".join(argv)
    assert argv[argv.index("-machine") + 1].startswith("q35,") and "cxl=on" in joined
    assert joined.count("-device cxl-rp,") == 2
    assert f"sn={defaults.VM_CXL_SERIAL}" in joined and int(defaults.VM_CXL_SERIAL, 16) != 0
    assert f"mem-path={tmp_path / 'cxl.img'},size={512 << 20}" in joined
    assert f"mem-path={tmp_path / 'cxl.img.lsa'}," in joined
    assert "cxl-fmw.0.targets.0=cxl.1" in joined
    # every other PCI device sits on pcie.0, or QEMU plugs it into the CXL bus and refuses
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    for dev in devices:
        if dev.startswith(("virtio-blk-pci", "virtio-9p-pci")):
            assert dev.endswith(",bus=pcie.0"), dev
    assert "-virtfs" not in argv and "if=virtio" not in joined
    append = argv[argv.index("-append") + 1].split()
    assert "pmemkit.cxl=1" in append and "pcie_ports=compat" not in append
    assert argv[argv.index("-cpu") + 1] == "max"


def test_cxl_argv_on_newer_kernels(tmp_path):
    argv = _argv(tmp_path, "6.12.95+deb12-amd64")
    assert " ".join(argv).count("-device cxl-rp,") == 1
    assert "pcie_ports=compat" in argv[argv.index("-append") + 1].split()
    assert argv[argv.index("-cpu") + 1] == "max,hypervisor=off"


def test_cxl_config_checks(tmp_path):
    with pytest.raises(VmConfigError, match="multiple of 256M"):
        VmConfig(cxl="100M", share=False)
    with pytest.raises(VmConfigError, match="not several"):
        VmConfig(cxl="256M", nvdimm="1G", share=False)
    (tmp_path / "small.img").write_bytes(b"x" * 4096)
    with pytest.raises(VmConfigError, match="--cxl 4K"):
        VmConfig(cxl="256M", cxl_file=tmp_path / "small.img", share=False)
    cfg = VmConfig(cxl_file=tmp_path / "c.img", share=False)
    assert cfg.cxl == 512 << 20 and cfg.backend == "cxl" and cfg.pmem_size == 512 << 20
    assert "cxl" in cfg.kernel_features


def test_cli_cxl_spec(tmp_path, capsys):
    assert cli_main(["vm", "run", "--cxl", "512M,bogus", "--", "true"]) == 2
    assert "cannot parse --cxl" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:      # argparse: mutually exclusive options
        cli_main(["vm", "run", "--cxl", "256M", "--nvdimm", "1G", "--", "true"])
    assert exc.value.code == 2


@pytest.mark.vm
def test_cxl_guest_dax_map_sync_and_data_across_runs(tmp_path, monkeypatch):
    """Two boots on one backing file: /dev/pmem0 on a CXL region, ext4 + xfs dax=always,
    MAP_SYNC, the data path verified before mkfs; data written in the first run is read in the
    second (region made again, namespace from the labels, filesystems kept)."""
    monkeypatch.chdir(ROOT)
    cfg = VmConfig(cxl="512M", cxl_file=tmp_path / "cxl.img", share=ROOT)
    first = vm.run(cfg, ["sh", "-c", f"python3 {CHECKS} && cxl list -M -R >&2 && "
                                     "echo cxl-run-1 > /mnt/pmem-ext4/marker && "
                                     "echo cxl-run-1 > /mnt/pmem-xfs/marker"], timeout=900)
    assert first.returncode == 0, first.error_output + first.setup_log
    assert "data path of /dev/pmem0 verified" in first.setup_log
    assert "CXL region:" in first.setup_log
    report = json.loads(first.output.strip().splitlines()[-1])
    assert report["pmem0_dax"] == "1"
    for fs in defaults.FILESYSTEMS:
        assert "dax=always" in report["mounts"][defaults.MOUNT_POINTS[fs]]["opts"]
    assert set(report["map_sync"].values()) == {"ok"}, report["map_sync"]
    assert '"memdev":"mem0"' in first.error_output.replace(" ", "")
    assert '"decode_state":"commit"' in first.error_output.replace(" ", "")
    second = vm.run(cfg, ["sh", "-c", "cat /mnt/pmem-ext4/marker /mnt/pmem-xfs/marker && "
                                      "pmemkit info"], timeout=900)
    assert second.returncode == 0, second.error_output + second.setup_log
    assert second.output.split()[:2] == ["cxl-run-1", "cxl-run-1"]
    info = second.output.split("CXL:\n", 1)[1]          # pmemkit info in the guest
    assert re.search(r"^  mem0  memdev  512M  serial 0x5eed$", info, re.M), info
    assert re.search(r"^  region\d+  region  512M  committed$", info, re.M), info
    assert "mkfs" not in second.setup_log
    assert (tmp_path / "cxl.img").stat().st_size == 512 << 20
    assert (tmp_path / "cxl.img.lsa").exists()
