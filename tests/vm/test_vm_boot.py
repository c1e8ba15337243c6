"""Real guests (QEMU, TCG here): emulated pmem, DAX mounts, the core suite on real DAX, NVDIMM
persistence, sector mode, exit statuses, timeouts, Ctrl-C. Few boots, each asserting many things.

The first test that boots builds the guest cache (~2 minutes, once per machine).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pmemkit import defaults, vm
from pmemkit.errors import GuestError

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parents[2]
CHECKS = "tests/vm/guest_checks.py"
TIMEOUT = 900


def _cli(*argv, timeout=TIMEOUT, **kw):
    return subprocess.run([sys.executable, "-m", "pmemkit", "vm", *argv], cwd=ROOT,
                          capture_output=True,
                          timeout=timeout, **kw)


def _small(**kw):
    kw.setdefault("share", ROOT)
    return vm.VmConfig(memmap=defaults.MEMMAP_SMALL, **kw)


def test_small_memmap_guest_has_dax_and_map_sync(monkeypatch):
    """memmap=512M!1G: /dev/pmem0, ext4 + xfs with dax=always, MAP_SYNC, map_file(sync="require")
    is pmem, pmemkit comes from this checkout, output streams back, the exit status comes back."""
    monkeypatch.chdir(ROOT)
    chunks = []
    res = vm.run(_small(), ["python3", CHECKS, "--exit", "7"], timeout=TIMEOUT,
                 stream=lambda name, data: chunks.append((name, data)))
    assert res.returncode == 7, res.error_output + res.setup_log
    report = json.loads(res.output.strip().splitlines()[-1])
    assert "pmem0" in report["devices"]
    assert report["pmem0_bytes"] == 512 << 20
    assert report["pmem0_dax"] == "1"
    expected = [defaults.MOUNT_POINTS[f] for f in defaults.FILESYSTEMS]
    assert report["dax_dirs"] == expected == res.dax_dirs
    for fs in defaults.FILESYSTEMS:
        m = report["mounts"][defaults.MOUNT_POINTS[fs]]
        assert m is not None and m["fstype"] == fs and "dax=always" in m["opts"], m
        assert m["dev"].startswith("/dev/pmem0p")
    assert set(report["map_sync"].values()) == {"ok"}, report["map_sync"]
    assert all(v["is_pmem"] for v in report["map_file"].values()), report["map_file"]
    assert report["pmemkit_file"] == str(ROOT / "pmemkit" / "__init__.py")
    assert report["cwd"] == str(ROOT)
    assert report["python"].startswith("3.11")
    assert report["require_dax"] is None            # only `vm test` sets it
    assert "stderr marker" in res.error_output
    assert b"".join(d for n, d in chunks if n == "stdout") == res.stdout
    assert b"".join(d for n, d in chunks if n == "stderr") == res.stderr
    assert res.accel in ("kvm", "tcg")


def _dax_test_ids():
    """Every `dax`-marked test of the suite (they are skipped on the host, so they run here)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "dax",
                          "-p", "no:cacheprovider", "tests"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    ids = [line.strip() for line in out.stdout.splitlines() if "::" in line]
    assert any(i.startswith("tests/mapping/") for i in ids), (
        f"no dax-marked tests collected in tests/mapping:\n{out.stdout}{out.stderr}")
    return ids


def test_vm_test_runs_the_mapping_suite_on_real_dax():
    """`pmemkit vm test` runs tests/mapping and every other dax-marked test in the guest:
    they all pass, none is skipped."""
    dax_ids = _dax_test_ids()
    others = [i for i in dax_ids if not i.startswith("tests/mapping/")]
    proc = _cli("test", "--memmap", defaults.MEMMAP_SMALL, "--", "tests/mapping", *others, "-q",
                "-rA")
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out[-4000:] + proc.stderr.decode(errors="replace")[-3000:]
    summary = out.strip().splitlines()[-1]
    assert re.search(r"\d+ passed",
                     summary) and "failed" not in summary and "skipped" not in summary, summary
    for test_id in dax_ids:
        assert f"PASSED {test_id}" in out, f"{test_id} did not pass in the guest"


def test_default_4g_memmap_via_cli_and_failing_status():
    """The real default (memmap=4G!12G, 17G guest RAM, ext4 + xfs): CLI exits with the command's
    status."""
    script = ("cat /sys/block/pmem0/size; grep -c 'dax=always' /proc/mounts; "
              "echo \"$PMEMKIT_DAX_DIRS\"; pmemkit info --json >/dev/null; echo cli=$?; "
              "echo to-stderr >&2; exit 3")
    proc = _cli("run", "--", "sh", "-c", script)
    out = proc.stdout.decode().split()
    assert proc.returncode == 3, proc.stderr.decode()[-3000:]
    assert int(out[0]) * 512 == 4 << 30
    assert out[1] == "2"
    assert out[2] == os.pathsep.join(defaults.MOUNT_POINTS[f] for f in defaults.FILESYSTEMS)
    assert out[3] == "cli=0"                        # `pmemkit` runs the shared checkout
    err = proc.stderr.decode()
    assert "to-stderr" in err and "memmap=4G!12G" in err and "memory 17G" in err


def test_nvdimm_with_labels_keeps_data_across_boots(tmp_path):
    """Write on a labelled NVDIMM's DAX mounts, stop, boot again: the data is there."""
    img = tmp_path / "pmem.img"
    cfg = vm.VmConfig(nvdimm="512M", nvdimm_file=img, labels=True, share=ROOT)
    write = ("set -e; for d in $(echo $PMEMKIT_DAX_DIRS | tr : ' '); do echo persisted-$(basename "
             "$d) > $d/data; done; sync; python3 -c 'import pmemkit; m = "
             "pmemkit.map_file(\"/mnt/pmem-xfs/pool\", 4096, create=True, sync=\"require\"); "
             "m.write(0, b\"pool-bytes\"); m.persist(0, 10); print(m.is_pmem)'")
    first = vm.run(cfg, ["sh", "-c", write], timeout=TIMEOUT)
    assert first.returncode == 0, first.error_output + first.setup_log
    assert first.output.strip() == "True"
    assert first.nvdimm_file == img and img.stat().st_size == 512 << 20
    read = ("cat /mnt/pmem-ext4/data /mnt/pmem-xfs/data; head -c 10 /mnt/pmem-xfs/pool; echo; "
            "ndctl list -N")
    second = vm.run(cfg, ["sh", "-c", read], timeout=TIMEOUT)
    assert second.returncode == 0, second.error_output + second.setup_log
    lines = second.output.splitlines()
    assert lines[:3] == ["persisted-pmem-ext4", "persisted-pmem-xfs", "pool-bytes"]
    assert '"mode":"fsdax"' in second.output.replace(" ", "")
    assert "mode fsdax" in second.setup_log          # the namespace was found, not re-made


def test_sector_mode_nvdimm_btt_device(tmp_path):
    """mode=sector: /dev/pmem0s (BTT, 4096-byte sectors, no DAX); a sector written through it
    is in the backing file after the guest stopped."""
    img = tmp_path / "btt.img"
    cfg = vm.VmConfig(nvdimm="64M", nvdimm_file=img, mode="sector", share=ROOT)
    assert cfg.fs == ()
    pattern = "pmemkit-sector-check-" * 195
    script = (f"set -e; ls /dev/pmem0s; cat /sys/block/pmem0s/queue/logical_block_size; "
              f"cat /sys/block/pmem0s/queue/dax; "
              f"printf '%s' '{pattern[:4096]}' | dd of=/dev/pmem0s bs=4096 seek=5 count=1 "
              f"conv=sync oflag=direct status=none; ndctl list -N")
    res = vm.run(cfg, ["sh", "-c", script], timeout=TIMEOUT)
    assert res.returncode == 0, res.error_output + res.setup_log
    lines = res.output.split()
    assert lines[0] == "/dev/pmem0s" and lines[1] == "4096" and lines[2] == "0"
    assert '"mode":"sector"' in res.output.replace(" ", "")
    assert res.dax_dirs == []
    data = img.read_bytes()
    assert pattern[:4096].encode() in data


def test_timeout_kills_the_guest():
    with pytest.raises(GuestError, match="did not finish within 3 s"):
        vm.run(_small(), ["sleep", "1000"], timeout=3)


def test_ctrl_c_ends_qemu():
    """SIGINT to `pmemkit vm run` while the guest boots: exit 130, QEMU gone (no_qemu_left)."""
    proc = subprocess.Popen([sys.executable, "-m", "pmemkit", "vm", "run", "--memmap",
                             defaults.MEMMAP_SMALL, "--", "sleep", "1000"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import psutil

    def guest_qemus():
        # the KVM probe's short-lived QEMU may exit between listing and naming it
        found = []
        for p in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "qemu" in p.name() and "pmemkit-kvm-probe" not in " ".join(p.cmdline()):
                    found.append(p)
            except psutil.NoSuchProcess:
                pass
        return found

    try:
        deadline = time.time() + 300
        qemus = []
        while time.time() < deadline and not qemus and proc.poll() is None:
            qemus = guest_qemus()
            time.sleep(0.2)
        assert qemus, "QEMU never started"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    psutil.wait_procs(qemus, timeout=10)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in qemus)
