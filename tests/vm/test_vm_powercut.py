"""Power cuts (``pmemkit vm powercut``): QEMU killed with SIGKILL while a workload appends
persisted records to a DAX file on an NVDIMM; after every reboot each committed record is there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pmemkit import defaults
from pmemkit.cli import main as cli_main
from pmemkit.errors import VmConfigError
from pmemkit.vm import VmConfig, powercut

ROOT = Path(__file__).resolve().parents[2]
LOG = "tests/vm/powercut_log.py"


def test_cut_moments_are_seeded_and_fixed_moments_repeat():
    a = powercut.cut_moments(3, seed=7, window="2:5")
    assert a == powercut.cut_moments(3, seed=7, window=(2, 5)) and all(2 <= x <= 5 for x in a)
    assert a != powercut.cut_moments(3, seed=8, window="2:5")
    assert powercut.cut_moments(2, cut_after=1.5) == [1.5, 1.5]
    with pytest.raises(VmConfigError, match="MIN:MAX"):
        powercut.cut_moments(1, window="soon")
    with pytest.raises(VmConfigError, match="at least 1"):
        powercut.cut_moments(0)


def test_memmap_has_nothing_to_survive_a_cut(tmp_path):
    with pytest.raises(VmConfigError, match="--nvdimm, --cxl or --persist"):
        powercut.run(VmConfig(memmap=defaults.MEMMAP_SMALL, share=False), ["true"], ["true"])


def test_cli_powercut_needs_a_workload(capsys):
    assert cli_main(["vm", "powercut", "--nvdimm", "512M", "--check", "true"]) == 2
    assert "no workload" in capsys.readouterr().err


def test_report_text_says_when_no_cut_happened():
    report = powercut.PowerCutReport(seed=1, backing_file="/x.img")
    report.cuts = [powercut.Cut(1, 2.0, cut_at=2.1, check_status=0),
                   powercut.Cut(2, 9.0, workload_status=0, check_status=0)]
    assert report.consistent and not report.complete
    text = "\n".join(powercut.format_report(report))
    assert "no cut: workload ended (exit 0)" in text and "not every cycle" in text


@pytest.mark.vm
def test_three_power_cuts_keep_every_committed_record(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = VmConfig(nvdimm="512M", nvdimm_file=tmp_path / "pmem.img", share=ROOT)
    target = f"{defaults.MOUNT_POINTS['ext4']}/log"
    report = powercut.run(cfg, ["python3", LOG, "append", target],
                          ["python3", LOG, "check", target], cuts=3, window=(3, 6), seed=2024,
                          timeout=900)
    assert report.complete and report.consistent, report.to_dict()
    assert [c.index for c in report.cuts] == [1, 2, 3]
    found_before = 0
    for cut in report.cuts:
        assert cut.happened and cut.cut_at >= cut.planned
        committed = [int(n) for n in re.findall(r"^committed (\d+)$", cut.workload_output, re.M)]
        found = int(re.search(r"^found (\d+)", cut.check_output, re.M).group(1))
        # every commit the host saw printed is on the media after the reboot
        assert found >= (committed[-1] if committed else found_before), (cut, committed[-3:])
        assert found >= found_before
        found_before = found
    assert found_before > 0, "no record was committed before any cut: widen the window"
